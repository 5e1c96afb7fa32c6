//! Checks shared by several kinds: targets, Repository references and usage policies, Task
//! references, runtime settings, scratch and interim volumes, durations and quantities.
//!
//! Every check takes the [`Verdict`] to add to and the path of the field it checks (e.g.
//! `spec.target`), so that BackupConfiguration and RestoreSession report the same rule with the
//! same words at their own paths. Nothing here panics on any input: all numbers from objects go
//! through checked or saturating arithmetic.

use std::collections::BTreeMap;

use chrono::Duration;
use k8s_openapi::api::core::v1::PersistentVolumeClaimSpec;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

use super::Verdict;
use crate::common::{
    EmptyDirSettings, ObjectReference, PersistentVolumeClaimTemplate, RuntimeSettings, TargetRef,
    TaskRef,
};
use crate::dereference::Dereferenced;
use crate::duration::parse_go_duration;
use crate::naming::{MAX_LABEL_LEN, MAX_TEMPLATE_NAME_LEN, is_dns_label, is_dns_subdomain};
use crate::repository::FromNamespaces;
use crate::{AppBinding, Repository};

/// The one supported target: KubeDB's (or a hand-written) AppBinding.
pub(crate) const TARGET_API_VERSION: &str = "appcatalog.appscode.com/v1alpha1";
/// Kind of the one supported target.
pub(crate) const TARGET_KIND: &str = "AppBinding";

/// How a valid duration looks, for messages.
const DURATION_EXAMPLES: &str =
    "a positive duration such as 30m, 1h30m, 90s or 1.5h (units ns, us, ms, s, m, h)";
/// How a valid quantity looks, for messages.
const QUANTITY_EXAMPLES: &str = "a number with an optional suffix, e.g. 10Gi, 500M, 250m, 1e3 \
     (suffixes Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent e<n>)";

/// True when an UPDATE must not run the spec rules: the object is being deleted, or its spec is
/// unchanged (only metadata or status changed). Admission never blocks deletion or bookkeeping.
pub(crate) fn skip_spec_rules<S: PartialEq>(
    new_meta: &ObjectMeta,
    new: &S,
    old: Option<&S>,
) -> bool {
    match old {
        None => false,
        Some(old) => new_meta.deletion_timestamp.is_some() || old == new,
    }
}

/// `<base>.<key>`, or `<base>[<key>]` when the key holds characters that would make the path
/// ambiguous (`nvidia.com/gpu`).
pub(crate) fn key_path(base: &str, key: &str) -> String {
    if !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        format!("{base}.{key}")
    } else {
        format!("{base}[{key}]")
    }
}

// ---------------------------------------------------------------------------------------------
// Targets

/// `target.ref` (at `path`, e.g. `spec.target`): an AppBinding in the object's own namespace.
/// Warns when the AppBinding is not there (yet) or skips TLS verification.
pub(crate) fn check_target(
    v: &mut Verdict,
    path: &str,
    own_namespace: &str,
    target: &TargetRef,
    found: &Dereferenced,
) {
    let ref_path = format!("{path}.ref");
    if check_target_ref(v, &ref_path, own_namespace, target) {
        warn_about_target(v, &ref_path, own_namespace, target, found);
    }
}

/// The reference itself: an AppBinding's kind and apiVersion, a valid name, no other
/// namespace. True when it can be looked up.
fn check_target_ref(
    v: &mut Verdict,
    ref_path: &str,
    own_namespace: &str,
    target: &TargetRef,
) -> bool {
    let mut resolvable = true;
    if target.kind != TARGET_KIND {
        resolvable = false;
        v.error(
            format!("{ref_path}.kind"),
            format!(
                "{:?} is not a supported target kind: the supported kind is {TARGET_KIND} \
                 (apiVersion {TARGET_API_VERSION}), the object that tells cairn how to reach \
                 the database and with which credentials",
                target.kind
            ),
        );
    }
    if target.api_version != TARGET_API_VERSION {
        resolvable = false;
        v.error(
            format!("{ref_path}.apiVersion"),
            format!(
                "{:?} is not supported: a target is an {TARGET_KIND} of apiVersion \
                 {TARGET_API_VERSION:?}",
                target.api_version
            ),
        );
    }
    if target.name.is_empty() {
        resolvable = false;
        v.error(
            format!("{ref_path}.name"),
            "must not be empty: name the AppBinding of the database in this namespace",
        );
    } else if !is_dns_subdomain(&target.name) {
        resolvable = false;
        v.error(
            format!("{ref_path}.name"),
            format!(
                "{:?} is not a valid object name: expected a DNS subdomain (lowercase letters, \
                 digits, '-' and '.', at most 253 characters)",
                target.name
            ),
        );
    }
    if let Some(ns) = target.namespace.as_deref()
        && !ns.is_empty()
        && !own_namespace.is_empty()
        && ns != own_namespace
    {
        resolvable = false;
        v.error(
            format!("{ref_path}.namespace"),
            format!(
                "{ns:?} is another namespace: the target must be in this object's namespace \
                     {own_namespace:?} (omit namespace or set it to {own_namespace:?}); an object \
                     may not back up or restore another namespace's database with that \
                     database's credentials"
            ),
        );
    }
    resolvable
}

/// Warns when the AppBinding is not there (yet) or skips TLS verification.
fn warn_about_target(
    v: &mut Verdict,
    ref_path: &str,
    own_namespace: &str,
    target: &TargetRef,
    found: &Dereferenced,
) {
    match found.app_binding.as_deref() {
        None => v.warn(
            ref_path,
            format!(
                "AppBinding {own_namespace}/{} does not exist (yet): sessions cannot run until \
                 it is created",
                target.name
            ),
        ),
        Some(binding) => {
            warn_about_transport(v, ref_path, own_namespace, binding);
            if binding.spec.client_config.insecure_skip_tls_verify == Some(true) {
                v.warn(
                    ref_path,
                    format!(
                        "AppBinding {own_namespace}/{} sets clientConfig.insecureSkipTLSVerify: \
                         the agent will not verify the database's certificate; set \
                         clientConfig.caBundle instead",
                        target.name
                    ),
                );
            }
        }
    }
}

/// Warnings about how the agent will reach the database: credentials written into the URL (left
/// out of the Job), credentials over plain http, a `service` without a scheme. No message
/// quotes the URL: it may hold a password.
fn warn_about_transport(v: &mut Verdict, path: &str, namespace: &str, binding: &AppBinding) {
    let name = binding.metadata.name.as_deref().unwrap_or_default();
    let cc = &binding.spec.client_config;
    if binding.url_has_credentials() {
        v.warn(
            path,
            format!(
                "AppBinding {namespace}/{name}: clientConfig.url holds a user name or password; \
                 cairn leaves them out of the Job and reads credentials only from spec.secret: \
                 remove them from the URL"
            ),
        );
    }
    let url_set = cc.url.as_deref().is_some_and(|u| !u.is_empty());
    if let Some(svc) = cc.service.as_ref().filter(|_| !url_set)
        && svc.scheme.as_deref().is_none_or(str::is_empty)
    {
        v.warn(
            path,
            format!(
                "AppBinding {namespace}/{name}: clientConfig.service has no scheme, so the agent \
                 connects with http; set scheme: https (and clientConfig.caBundle)"
            ),
        );
    }
    if binding.uses_http() && (binding.spec.secret.is_some() || binding.url_has_credentials()) {
        v.warn(
            path,
            format!(
                "AppBinding {namespace}/{name} uses http: the database's credentials cross the \
                 network unencrypted; use https with clientConfig.caBundle"
            ),
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Repositories and usage policies

/// `repository` (at `path`, e.g. `spec.repository`): rejects a Repository that exists and does
/// not admit `own_namespace`; warns when it does not exist (yet).
pub(crate) fn check_repository(
    v: &mut Verdict,
    path: &str,
    own_namespace: &str,
    repo_ref: &ObjectReference,
    found: &Dereferenced,
) {
    if repo_ref.name.is_empty() {
        v.error(
            format!("{path}.name"),
            "must not be empty: name the Repository that holds the snapshots",
        );
        return;
    }
    let repo_ns = &found.repository_key.0;
    let Some(repo) = found.repository.as_deref() else {
        v.warn(
            path,
            format!(
                "Repository {repo_ns}/{} does not exist (yet): sessions cannot run until it is \
                 created",
                repo_ref.name
            ),
        );
        return;
    };
    match usage_policy_admits(repo, own_namespace, found.namespace_labels.as_ref()) {
        Some(true) => {}
        Some(false) => v.error(
            path,
            format!(
                "Repository {repo_ns}/{} does not admit namespace {own_namespace:?}: {}",
                repo_ref.name,
                describe_refusal(repo, own_namespace)
            ),
        ),
        None => v.warn(
            path,
            format!(
                "cannot tell yet whether Repository {repo_ns}/{} admits namespace \
                 {own_namespace:?}: the namespace's labels are not known; the controller checks \
                 again",
                repo_ref.name
            ),
        ),
    }
}

/// Whether Repository `repo` lets objects in `namespace` use it, by its
/// `spec.usagePolicy.allowedNamespaces` (`from` defaults to `Same`).
///
/// `Same` admits only the Repository's own namespace, `All` every namespace, `Selector` the
/// namespaces whose labels match `selector` (`matchLabels` and `matchExpressions` with `In`,
/// `NotIn`, `Exists`, `DoesNotExist`, as Kubernetes evaluates them). A `Selector` policy
/// without a selector, or with an invalid one, admits nothing. `None` when the answer needs
/// `namespace_labels` and they are not given, or the Repository has no namespace.
pub fn usage_policy_admits(
    repo: &Repository,
    namespace: &str,
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Option<bool> {
    let allowed = repo
        .spec
        .usage_policy
        .as_ref()
        .and_then(|p| p.allowed_namespaces.as_ref());
    let from = allowed.and_then(|a| a.from).unwrap_or_default();
    match from {
        FromNamespaces::All => Some(true),
        FromNamespaces::Same => repo
            .metadata
            .namespace
            .as_deref()
            .map(|own| own == namespace),
        FromNamespaces::Selector => {
            // Its own namespace is not special: a Selector policy admits what it selects.
            let Some(selector) = allowed.and_then(|a| a.selector.as_ref()) else {
                return Some(false);
            };
            let labels = namespace_labels?;
            Some(selector_matches(selector, labels).unwrap_or(false))
        }
    }
}

/// Whether `selector` matches `labels`; `None` when the selector is invalid (an unknown
/// operator, `In`/`NotIn` without values, `Exists`/`DoesNotExist` with values). An empty
/// selector matches everything, as in Kubernetes.
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> Option<bool> {
    let mut matches = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, want)| labels.get(k) == Some(want));
    for req in selector.match_expressions.iter().flatten() {
        let values = req.values.as_deref().unwrap_or_default();
        let have = labels.get(&req.key);
        let ok = match req.operator.as_str() {
            "In" if !values.is_empty() => have.is_some_and(|h| values.contains(h)),
            "NotIn" if !values.is_empty() => have.is_none_or(|h| !values.contains(h)),
            "Exists" if values.is_empty() => have.is_some(),
            "DoesNotExist" if values.is_empty() => have.is_none(),
            _ => return None,
        };
        matches &= ok;
    }
    Some(matches)
}

/// Why `repo`'s usage policy refuses `namespace`, and what would admit it.
fn describe_refusal(repo: &Repository, namespace: &str) -> String {
    let allowed = repo
        .spec
        .usage_policy
        .as_ref()
        .and_then(|p| p.allowed_namespaces.as_ref());
    let repo_ns = repo.metadata.namespace.as_deref().unwrap_or_default();
    let fix = format!(
        "use a Repository in namespace {namespace:?}, or have the Repository's owner set \
         spec.usagePolicy.allowedNamespaces.from to All, or to Selector with a selector that \
         matches namespace {namespace:?}"
    );
    match allowed.and_then(|a| a.from).unwrap_or_default() {
        FromNamespaces::Same | FromNamespaces::All => format!(
            "its spec.usagePolicy.allowedNamespaces.from is Same (the default), which admits \
             only its own namespace {repo_ns:?}; {fix}"
        ),
        FromNamespaces::Selector => match allowed.and_then(|a| a.selector.as_ref()) {
            None => format!(
                "its spec.usagePolicy.allowedNamespaces.from is Selector but it has no selector, \
                 which admits no namespace; {fix}"
            ),
            Some(_) => format!(
                "its spec.usagePolicy.allowedNamespaces.selector does not match the labels of \
                 namespace {namespace:?} (or is invalid); label the namespace so that it matches, \
                 or {fix}"
            ),
        },
    }
}

// ---------------------------------------------------------------------------------------------
// Tasks

/// `task` (at `path`, e.g. `spec.task`): params need unique, non-empty names; a named Task that
/// does not exist (yet) is a warning.
pub(crate) fn check_task(
    v: &mut Verdict,
    path: &str,
    task: Option<&TaskRef>,
    found: &Dereferenced,
) {
    let Some(task) = task else { return };
    if let Some(name) = task.given_name()
        && found.task.is_none()
    {
        v.warn(
            format!("{path}.name"),
            format!(
                "Task {name:?} does not exist (yet): sessions cannot run until it is created; \
                     leave task.name empty to use the AppBinding's or the catalog's default Task"
            ),
        );
    }
    if let (Some(name), Some(runs)) = (task.given_name(), found.task.as_ref())
        && runs.metadata.name.as_deref() != Some(name)
    {
        v.warn(
            format!("{path}.name"),
            format!(
                "{name:?} is Stash's versioned Task name: cairn runs its catalog Task {:?}, which \
                 reads every version",
                runs.metadata.name.as_deref().unwrap_or_default()
            ),
        );
    }
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, param) in task.params.iter().enumerate() {
        let p = format!("{path}.params[{i}].name");
        if param.name.is_empty() {
            v.error(
                p,
                "must not be empty: a param names the variable it sets, as used in ${NAME}",
            );
            continue;
        }
        if let Some(first) = seen.get(param.name.as_str()) {
            v.error(
                p,
                format!(
                    "{:?} is already set by {path}.params[{first}]: each param name may appear \
                     once; remove one of them",
                    param.name
                ),
            );
            continue;
        }
        seen.insert(&param.name, i);
        if !crate::vars::is_valid_name(&param.name) {
            // Only a warning: the Task may read params some other way than `${NAME}`.
            v.warn(
                p,
                format!(
                    "{:?} is not a variable name ({}), so no ${{...}} reference can use it",
                    param.name,
                    crate::vars::NAME_PATTERN
                ),
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Runtime settings

/// `runtimeSettings` (at `path`): container limits not below requests, quantities valid and not
/// negative, `nice.adjustment` in -20..19, `ionice.class` in 0..3 and `classData` in 0..7.
pub(crate) fn check_runtime_settings(
    v: &mut Verdict,
    path: &str,
    settings: Option<&RuntimeSettings>,
) {
    let Some(container) = settings.and_then(|s| s.container.as_ref()) else {
        return;
    };
    let cpath = format!("{path}.container");
    if let Some(resources) = &container.resources {
        check_limits(
            v,
            &format!("{cpath}.resources"),
            resources.requests.as_ref(),
            resources.limits.as_ref(),
        );
    }
    if let Some(adj) = container.nice.as_ref().and_then(|n| n.adjustment)
        && !(-20..=19).contains(&adj)
    {
        v.error(
            format!("{cpath}.nice.adjustment"),
            format!(
                "{adj} is out of range: a niceness adjustment is from -20 (most favourable) \
                     to 19 (least favourable)"
            ),
        );
    }
    if let Some(ionice) = &container.ionice {
        if let Some(class) = ionice.class
            && !(0..=3).contains(&class)
        {
            v.error(
                format!("{cpath}.ionice.class"),
                format!(
                    "{class} is not an I/O scheduling class: expected 0 (none), 1 (realtime), \
                         2 (best-effort) or 3 (idle)"
                ),
            );
        }
        if let Some(data) = ionice.class_data
            && !(0..=7).contains(&data)
        {
            v.error(
                format!("{cpath}.ionice.classData"),
                format!(
                    "{data} is out of range: the priority within a class is from 0 (highest) \
                         to 7 (lowest)"
                ),
            );
        }
    }
}

/// Every request and limit under `path` (`...resources`) is a valid, non-negative quantity, and
/// no limit is below the request of the same resource.
fn check_limits(
    v: &mut Verdict,
    path: &str,
    requests: Option<&BTreeMap<String, Quantity>>,
    limits: Option<&BTreeMap<String, Quantity>>,
) {
    let parsed = |v: &mut Verdict, which: &str, map: Option<&BTreeMap<String, Quantity>>| {
        let mut out = BTreeMap::new();
        for (name, q) in map.into_iter().flatten() {
            let p = key_path(&format!("{path}.{which}"), name);
            match parse_quantity(&q.0) {
                Err(why) => v.error(p, why),
                Ok(x) if x < 0.0 => v.error(
                    p,
                    format!("{:?} is negative: a resource amount must be 0 or more", q.0),
                ),
                Ok(x) => {
                    out.insert(name.clone(), (x, q.0.clone()));
                }
            }
        }
        out
    };
    let requests = parsed(v, "requests", requests);
    let limits = parsed(v, "limits", limits);
    for (name, (limit, limit_text)) in &limits {
        if let Some((request, request_text)) = requests.get(name)
            && limit < request
        {
            v.error(
                key_path(&format!("{path}.limits"), name),
                format!(
                    "{limit_text:?} is below the request {request_text:?} ({}): a limit must be \
                         at least the request; raise the limit to {request_text:?} or more, or \
                         lower the request",
                    key_path("requests", name)
                ),
            );
        }
    }
}

/// `tempDir` (at `path`): `sizeLimit` a quantity above 0; `medium` one Kubernetes knows.
pub(crate) fn check_temp_dir(v: &mut Verdict, path: &str, temp_dir: Option<&EmptyDirSettings>) {
    let Some(temp_dir) = temp_dir else { return };
    if let Some(q) = &temp_dir.size_limit {
        check_positive_quantity(v, &format!("{path}.sizeLimit"), &q.0);
    }
    if let Some(medium) = temp_dir.medium.as_deref() {
        let known = medium.is_empty()
            || medium == "Memory"
            || medium == "HugePages"
            || medium.starts_with("HugePages-");
        if !known {
            v.error(
                format!("{path}.medium"),
                format!(
                    "{medium:?} is not a storage medium: expected \"\" (the node's disk), \
                     \"Memory\" (tmpfs) or \"HugePages\""
                ),
            );
        }
    }
}

/// A quantity that must parse and be above zero.
fn check_positive_quantity(v: &mut Verdict, path: &str, text: &str) {
    match parse_quantity(text) {
        Err(why) => v.error(path, why),
        Ok(x) if x <= 0.0 => v.error(
            path,
            format!("{text:?} is not above zero: expected a size above 0, e.g. 1Gi or 500Mi"),
        ),
        Ok(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Interim volumes

/// `interimVolumeTemplate` (at `path`): a DNS-label name short enough for `<session>-<name>`, a
/// storage request above 0, a Filesystem volume that starts empty, a valid storage class and
/// access modes the agent can write through.
pub(crate) fn check_interim_volume_template(
    v: &mut Verdict,
    path: &str,
    template: Option<&PersistentVolumeClaimTemplate>,
) {
    let Some(template) = template else { return };
    check_template_name(v, path, template.metadata.name.as_deref());
    let spec = &template.spec;
    let spath = format!("{path}.spec");
    check_claim_size_and_mode(v, &spath, spec);
    check_claim_starts_empty(v, &spath, spec);
    check_claim_class_and_modes(v, &spath, spec);
}

/// The template's name: a short DNS label, so `<session>-<name>` fits a label.
fn check_template_name(v: &mut Verdict, path: &str, name: Option<&str>) {
    let name_path = format!("{path}.metadata.name");
    match name {
        None | Some("") => v.error(
            name_path,
            "must be set: each session's claim is named <session>-<name>; use a short DNS label \
             such as \"scratch\"",
        ),
        Some(name) if !is_dns_label(name) => v.error(
            name_path,
            format!(
                "{name:?} is not a DNS label: expected lowercase letters, digits and '-', starting \
                 and ending with a letter or digit, at most {MAX_TEMPLATE_NAME_LEN} characters"
            ),
        ),
        Some(name) if name.len() > MAX_TEMPLATE_NAME_LEN => v.error(
            name_path,
            format!(
                "{name:?} is {} characters long: at most {MAX_TEMPLATE_NAME_LEN} are allowed so \
                 that each session's claim <session>-<name> fits in {MAX_LABEL_LEN} characters \
                 and still shows the session",
                name.len()
            ),
        ),
        Some(_) => {}
    }
}

/// A storage request is set, the volume mode is Filesystem.
fn check_claim_size_and_mode(v: &mut Verdict, spath: &str, spec: &PersistentVolumeClaimSpec) {
    let storage_path = format!("{spath}.resources.requests.storage");
    match spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
    {
        None => v.error(
            storage_path,
            "must be set: the size of each session's claim, e.g. 10Gi (enough for one dump of \
             the database)",
        ),
        Some(q) => check_positive_quantity(v, &storage_path, &q.0),
    }
    if let Some(mode) = spec.volume_mode.as_deref()
        && mode != "Filesystem"
    {
        v.error(
            format!("{spath}.volumeMode"),
            format!(
                "{mode:?} is not supported: the agent stages files on the volume, so it must \
                     be \"Filesystem\" (or unset)"
            ),
        );
    }
}

/// Each session's claim starts empty on a new volume: no data source, no chosen volume.
fn check_claim_starts_empty(v: &mut Verdict, spath: &str, spec: &PersistentVolumeClaimSpec) {
    if spec.data_source.is_some() {
        v.error(
            format!("{spath}.dataSource"),
            "must not be set: each session's claim must start empty; remove dataSource",
        );
    }
    if spec.data_source_ref.is_some() {
        v.error(
            format!("{spath}.dataSourceRef"),
            "must not be set: each session's claim must start empty; remove dataSourceRef",
        );
    }
    for (field, set) in [
        ("volumeName", spec.volume_name.is_some()),
        ("selector", spec.selector.is_some()),
    ] {
        if set {
            v.error(
                format!("{spath}.{field}"),
                "must not be set: the claim would bind a PersistentVolume chosen by name or \
                 label, perhaps another tenant's; let the StorageClass provision a new one \
                 (storageClassName)",
            );
        }
    }
}

/// A valid StorageClass name and access modes the agent can write through.
fn check_claim_class_and_modes(v: &mut Verdict, spath: &str, spec: &PersistentVolumeClaimSpec) {
    if let Some(class) = spec.storage_class_name.as_deref() {
        // "" is Kubernetes' way of asking for no class (a pre-provisioned volume).
        if !class.is_empty() && !is_dns_subdomain(class) {
            v.error(
                format!("{spath}.storageClassName"),
                format!(
                    "{class:?} is not a valid StorageClass name: expected a DNS subdomain \
                     (lowercase letters, digits, '-' and '.', at most 253 characters), or \"\" \
                     for no class, or unset for the default class"
                ),
            );
        }
    }
    const MODES: [&str; 4] = [
        "ReadWriteOnce",
        "ReadOnlyMany",
        "ReadWriteMany",
        "ReadWriteOncePod",
    ];
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    for (i, mode) in modes.iter().enumerate() {
        if !MODES.contains(&mode.as_str()) {
            v.error(
                format!("{spath}.accessModes[{i}]"),
                format!(
                    "{mode:?} is not an access mode: expected ReadWriteOnce (the default), \
                     ReadWriteOncePod or ReadWriteMany"
                ),
            );
        }
    }
    if !modes.is_empty() && modes.iter().all(|m| m == "ReadOnlyMany") {
        v.error(
            format!("{spath}.accessModes"),
            "ReadOnlyMany alone cannot work: the agent writes to the volume; use ReadWriteOnce \
             (the default), ReadWriteOncePod or ReadWriteMany",
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Durations

/// An optional duration field (`timeOut`, `retryConfig.delay`) that must be a positive Go
/// duration when set.
pub(crate) fn check_positive_duration(v: &mut Verdict, path: &str, value: Option<&str>) {
    let Some(text) = value else { return };
    match parse_go_duration(text) {
        Err(why) => v.error(
            path,
            format!("{text:?} is not a valid duration: {why}; expected {DURATION_EXAMPLES}"),
        ),
        Ok(d) if d <= Duration::zero() => v.error(
            path,
            format!("{text:?} is not above zero: expected {DURATION_EXAMPLES}"),
        ),
        Ok(_) => {}
    }
}

// ---------------------------------------------------------------------------------------------
// Quantities

/// Parses a Kubernetes resource quantity (`10Gi`, `500M`, `250m`, `1e3`, `0`, `-1Gi`) into its
/// value. Equal quantities give equal values whatever their spelling (`1Gi` and `1073741824`,
/// `0.1` and `100m`): the decimal part is rounded once, and binary suffixes scale exactly. The
/// error is a whole message that names the value and what is valid.
pub fn parse_quantity(s: &str) -> Result<f64, String> {
    let bad =
        |why: &str| format!("{s:?} is not a valid quantity: {why}; expected {QUANTITY_EXAMPLES}");
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        None => return Err(bad("it is empty")),
        _ => (false, s),
    };
    let num_len = body
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b'.')
        .count();
    let (number, suffix) = body.split_at(num_len);
    let (int_digits, frac_digits) = number.split_once('.').unwrap_or((number, ""));
    if frac_digits.contains('.') {
        return Err(bad("it has more than one decimal point"));
    }
    if int_digits.is_empty() && frac_digits.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    let (exp10, exp2): (i64, i32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" => (0, 10),
        "Mi" => (0, 20),
        "Gi" => (0, 30),
        "Ti" => (0, 40),
        "Pi" => (0, 50),
        "Ei" => (0, 60),
        _ => {
            let exp = suffix
                .strip_prefix(['e', 'E'])
                .filter(|e| {
                    let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
                })
                .ok_or_else(|| bad(&format!("{suffix:?} is not a suffix")))?;
            // Anything past a few hundred overflows or vanishes anyway.
            let exp: i64 = exp.parse().unwrap_or(if exp.starts_with('-') {
                -10_000
            } else {
                10_000
            });
            (exp.clamp(-10_000, 10_000), 0)
        }
    };
    let digits = format!("{int_digits}{frac_digits}");
    let exponent = exp10 - frac_digits.len() as i64;
    // Rust's float parsing rounds correctly, so one parse of the exact decimal is exact-ish.
    let value: f64 = format!("{digits}e{exponent}")
        .parse()
        .map_err(|_| bad("it is not a number"))?;
    let value = value * 2f64.powi(exp2);
    if !value.is_finite() {
        return Err(bad("it is too large"));
    }
    Ok(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn durations_parse_like_go() {
        let cases: &[(&str, i64)] = &[
            ("0", 0),
            ("30m", 30 * 60_000_000_000),
            ("1h30m", 90 * 60_000_000_000),
            ("90s", 90_000_000_000),
            ("1.5h", 90 * 60_000_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("300ms", 300_000_000),
            ("-2m", -120_000_000_000),
            ("+5s", 5_000_000_000),
            ("1µs", 1_000),
            ("1us2ns", 1_002),
            ("2562047h", 2_562_047 * 3_600_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_go_duration(text),
                Ok(Duration::nanoseconds(*nanos)),
                "{text}"
            );
        }
        for text in [
            "", "-", "m", "30", "1d", "1h 30m", ".s", "1..5s", "3000000h", "1e3s",
        ] {
            assert!(parse_go_duration(text).is_err(), "{text}");
        }
    }

    #[test]
    fn quantities_parse_like_kubernetes() {
        let cases: &[(&str, f64)] = &[
            ("0", 0.0),
            ("10Gi", 10.0 * 1024.0 * 1024.0 * 1024.0),
            ("500M", 500e6),
            ("1e3", 1000.0),
            ("1E3", 1000.0),
            ("-1Gi", -1073741824.0),
            ("100m", 0.1),
            ("0.1", 0.1),
            (".5", 0.5),
            ("1.5k", 1500.0),
            ("2E", 2e18),
            ("+3", 3.0),
        ];
        for (text, value) in cases {
            assert_eq!(parse_quantity(text), Ok(*value), "{text}");
        }
        assert_eq!(parse_quantity("1Gi"), parse_quantity("1073741824"));
        assert_eq!(parse_quantity("1Mi"), parse_quantity("1048576"));
        for text in [
            "", "Gi", "1 Gi", "1gi", "1.2.3", "1e", "abc", "1Gib", "-", "1e9999", "1KB",
        ] {
            let err = parse_quantity(text).unwrap_err();
            assert!(err.contains("10Gi"), "{text}: {err}");
        }
    }

    fn repo(value: serde_json::Value) -> Repository {
        let mut base = json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "r", "namespace": "backup"},
            "spec": {"backend": {"storageSecretName": "s", "s3": {"bucket": "b"}}}
        });
        base["spec"]["usagePolicy"] = value;
        serde_json::from_value(base).expect("test repository")
    }

    #[test]
    fn usage_policy() {
        let labels: BTreeMap<String, String> = [("team", "search"), ("env", "prod")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let sel = |s: serde_json::Value| json!({"allowedNamespaces": {"from": "Selector", "selector": s}});
        let cases = [
            (json!(null), "backup", Some(true)),
            (json!(null), "demo", Some(false)),
            (
                json!({"allowedNamespaces": {"from": "Same"}}),
                "demo",
                Some(false),
            ),
            (
                json!({"allowedNamespaces": {"from": "All"}}),
                "demo",
                Some(true),
            ),
            (
                json!({"allowedNamespaces": {"from": "Selector"}}),
                "demo",
                Some(false),
            ),
            (sel(json!({})), "demo", Some(true)),
            (
                sel(json!({"matchLabels": {"team": "search"}})),
                "demo",
                Some(true),
            ),
            (
                sel(json!({"matchLabels": {"team": "web"}})),
                "demo",
                Some(false),
            ),
            (
                sel(
                    json!({"matchExpressions": [{"key": "env", "operator": "In", "values": ["prod", "qa"]}]}),
                ),
                "demo",
                Some(true),
            ),
            (
                sel(
                    json!({"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}),
                ),
                "demo",
                Some(false),
            ),
            (
                sel(
                    json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["x"]}]}),
                ),
                "demo",
                Some(true),
            ),
            (
                sel(json!({"matchExpressions": [{"key": "team", "operator": "Exists"}]})),
                "demo",
                Some(true),
            ),
            (
                sel(json!({"matchExpressions": [{"key": "team", "operator": "DoesNotExist"}]})),
                "demo",
                Some(false),
            ),
            (
                sel(
                    json!({"matchLabels": {"team": "search"}, "matchExpressions": [{"key": "x", "operator": "Exists"}]}),
                ),
                "demo",
                Some(false),
            ),
            // Invalid selectors admit nothing.
            (
                sel(json!({"matchExpressions": [{"key": "team", "operator": "In"}]})),
                "demo",
                Some(false),
            ),
            (
                sel(
                    json!({"matchExpressions": [{"key": "team", "operator": "Like", "values": ["s"]}]}),
                ),
                "demo",
                Some(false),
            ),
        ];
        for (policy, ns, want) in cases {
            let r = repo(policy.clone());
            assert_eq!(
                usage_policy_admits(&r, ns, Some(&labels)),
                want,
                "{policy} {ns}"
            );
        }
        // Labels unknown: only Selector needs them.
        let r = repo(sel(json!({})));
        assert_eq!(usage_policy_admits(&r, "demo", None), None);
        let r = repo(json!(null));
        assert_eq!(usage_policy_admits(&r, "demo", None), Some(false));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(s in any::<String>()) {
            let _ = parse_go_duration(&s);
            let _ = parse_quantity(&s);
        }

        #[test]
        fn parsers_never_panic_on_near_misses(s in "[-+]?[0-9.]{0,40}(e|E|[-+]|[0-9]|[a-zµ]){0,8}") {
            let _ = parse_go_duration(&s);
            let _ = parse_quantity(&s);
        }
    }
}
