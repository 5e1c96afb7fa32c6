//! Admission rules for Repository (`admission.md`, "Repository").
//!
//! Rejects a backend that can never work (no or several provider blocks, a missing bucket,
//! container, mount path or URL, an S3 bucket name S3 refuses, a mount path that would hide the
//! agent's own files, an invalid namespace selector) and, on UPDATE, a move of the data's
//! location once the repository holds snapshots. Warns about risky settings (`insecureTLS`,
//! `wipeOut`). Whether the storage Secret exists is the controller's to report (the webhook
//! does not watch Secrets).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Lookups, Policy, Verdict};
use crate::Repository;
use crate::naming;
use crate::repository::{
    Backend, FromNamespaces, LOCAL_VOLUME_SOURCES, LocalSpec, PROVIDERS, RestServerSpec, S3Spec,
    UsagePolicy,
};

const BACKEND: &str = "spec.backend";

/// Every error and warning of a Repository (`old` is set on UPDATE). A Repository refers to
/// no other object admission looks up, so `_lookups` is unused (it keeps [`super::Validate`]'s shape).
pub fn validate_repository(
    new: &Repository,
    old: Option<&Repository>,
    _lookups: &dyn Lookups,
    policy: &Policy,
) -> Verdict {
    let mut v = Verdict::default();
    if let Some(old) = old {
        // Never block deletion or bookkeeping (finalizers, labels, status): only a spec change
        // of a live object goes through the spec rules.
        if new.metadata.deletion_timestamp.is_some() || old.spec == new.spec {
            return v;
        }
        check_backend_change(
            &old.spec.backend,
            &new.spec.backend,
            old,
            new.spec.driver(),
            &mut v,
        );
    }

    let backend = &new.spec.backend;
    check_providers(backend, &mut v);
    check_endpoint_userinfo(backend, &mut v);
    super::native::check_repository_driver(new, &mut v);
    let restic = new.spec.driver() == crate::native::StorageDriver::Restic;
    if restic {
        check_storage_secret(new, &mut v);
    }

    if let Some(s3) = &backend.s3 {
        check_s3(s3, &mut v);
    }
    check_bucket_or_container(backend, &mut v);
    if let Some(rest) = &backend.rest {
        check_rest_url(rest, &mut v);
    }
    // A native repository's local path is on the cluster's nodes: the Job mounts nothing.
    if let (Some(local), true) = (&backend.local, restic) {
        check_local(local, &mut v);
        check_local_volume(local, policy, &mut v);
    }
    if let Some(policy) = &new.spec.usage_policy {
        check_usage_policy(policy, &mut v);
    }
    if let Some(check) = &new.spec.integrity_check {
        check_integrity_check(check, &mut v);
    }

    if new.spec.wipe_out == Some(true) {
        v.warn(
            "spec.wipeOut",
            "the repository's data (every snapshot) will be deleted from the backend when this \
             Repository is deleted; set wipeOut: false to keep the data",
        );
    }
    v
}

/// An S3 endpoint or REST URL never carries credentials.
fn check_endpoint_userinfo(backend: &Backend, v: &mut Verdict) {
    if let Some((field, url)) = backend.endpoint_as_written()
        && crate::appbinding::url_has_userinfo(url)
    {
        let keys = if field == "rest.url" {
            "REST_SERVER_USERNAME, REST_SERVER_PASSWORD"
        } else {
            "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
        };
        v.error(
            format!("{BACKEND}.{field}"),
            format!(
                "holds a user name or password: credentials go in the storage Secret ({keys}), \
                 never in the Repository, whose spec any reader of the object and every Job's \
                 arguments would show"
            ),
        );
    }
}

/// An S3 bucket name S3 accepts, an http(s) endpoint; a warning for `insecureTLS`.
fn check_s3(s3: &S3Spec, v: &mut Verdict) {
    let path = format!("{BACKEND}.s3");
    if s3.bucket.is_empty() {
        v.error(
            format!("{path}.bucket"),
            "is empty: set the name of the S3 bucket that holds the repository",
        );
    } else if let Err(broken) = check_s3_bucket_name(&s3.bucket) {
        v.error(
            format!("{path}.bucket"),
            format!(
                "{:?} is not a valid S3 bucket name: {}; a bucket name is 3 to 63 characters \
                 of lowercase letters, digits, dots and hyphens, starting and ending with a \
                 letter or digit",
                s3.bucket,
                broken.join("; ")
            ),
        );
    }
    // An empty endpoint means "not set" (AWS itself): templated manifests often render "".
    let endpoint = s3.endpoint.as_deref().unwrap_or_default();
    if let (false, Err(why)) = (endpoint.is_empty(), check_http_url(endpoint)) {
        v.error(
            format!("{path}.endpoint"),
            format!(
                "{endpoint:?} is not an http(s) URL: {why}; write e.g. \
                 https://s3.amazonaws.com or http://minio.storage:9000"
            ),
        );
    }
    if s3.insecure_tls == Some(true) {
        v.warn(
            format!("{path}.insecureTLS"),
            "the S3 server's TLS certificate will not be verified, so anyone on the path can \
             read or alter backups; put the server's CA certificate into the storage Secret's \
             CA_CERT_DATA key instead",
        );
    }
}

/// The bucket or container of GCS, B2, Azure and Swift is set.
fn check_bucket_or_container(backend: &Backend, v: &mut Verdict) {
    if let Some(gcs) = &backend.gcs {
        require(&gcs.bucket, "gcs.bucket", "the name of the GCS bucket", v);
    }
    if let Some(b2) = &backend.b2 {
        require(&b2.bucket, "b2.bucket", "the name of the B2 bucket", v);
    }
    if let Some(azure) = &backend.azure {
        require(
            &azure.container,
            "azure.container",
            "the name of the Azure blob container",
            v,
        );
    }
    if let Some(swift) = &backend.swift {
        require(
            &swift.container,
            "swift.container",
            "the name of the Swift container",
            v,
        );
    }
}

/// The REST server's URL is set and http(s).
fn check_rest_url(rest: &RestServerSpec, v: &mut Verdict) {
    let path = format!("{BACKEND}.rest.url");
    if rest.url.is_empty() {
        v.error(
            path,
            "is empty: set the URL of the restic REST server, e.g. https://rest.example.com:8000/repo",
        );
    } else if let Err(why) = check_http_url(&rest.url) {
        v.error(
            path,
            format!(
                "{:?} is not an http(s) URL: {why}; write e.g. https://rest.example.com:8000/repo",
                rest.url
            ),
        );
    }
}

/// The local volume goes into every Job using the Repository: the install's Pod Security
/// Standard holds for it too.
fn check_local_volume(local: &LocalSpec, policy: &Policy, v: &mut Verdict) {
    // The volume goes into every Job using the Repository: the install's Pod Security
    // Standard holds for it too.
    let volume = local.volume("repository");
    let one_source = local.volume_sources().len() == 1;
    for violation in crate::pod_security::check_volume_source(&format!("{BACKEND}.local"), &volume)
    {
        if one_source && violation.applies_at(policy.job_pod_security) {
            v.error(violation.path.clone(), violation.message());
        }
    }
}

/// Exactly one provider block.
fn check_providers(backend: &Backend, v: &mut Verdict) {
    let set = backend.providers();
    match set.len() {
        1 => {}
        0 => v.error(
            BACKEND,
            format!("no provider block is set; set exactly one of {PROVIDERS}"),
        ),
        n => {
            let names: Vec<&str> = set.iter().map(|p| p.as_str()).collect();
            v.error(
                BACKEND,
                format!(
                    "{n} provider blocks are set ({}); set exactly one of {PROVIDERS}",
                    names.join(", ")
                ),
            );
        }
    }
}

fn require(value: &str, field: &str, what: &str, v: &mut Verdict) {
    if value.is_empty() {
        v.error(
            format!("{BACKEND}.{field}"),
            format!("is empty: set {what} that holds the repository"),
        );
    }
}

/// Every repository needs its password, so the Secret name is required; the Secret itself may
/// be created after the Repository (GitOps order), hence only a warning when it is missing.
fn check_storage_secret(repo: &Repository, v: &mut Verdict) {
    let path = format!("{BACKEND}.storageSecretName");
    let name = &repo.spec.backend.storage_secret_name;
    if name.is_empty() {
        v.error(
            path,
            "is empty: name the Secret (in the Repository's namespace) that holds RESTIC_PASSWORD \
             and the provider's credentials",
        );
        return;
    }
    if !naming::is_dns_subdomain(name) {
        v.error(
            path,
            format!(
                "{name:?} is not a valid Secret name: use at most 253 lowercase letters, digits, \
                 '-' and '.', starting and ending with a letter or digit"
            ),
        );
    }
}

/// The S3 naming rules a bucket name breaks, each said in words; `Ok` when it breaks none.
fn check_s3_bucket_name(name: &str) -> Result<(), Vec<String>> {
    let mut broken = Vec::new();
    let len = name.chars().count();
    if !(3..=63).contains(&len) {
        broken.push(format!("it is {len} characters long"));
    }
    let mut bad: Vec<char> = name
        .chars()
        .filter(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
        .collect();
    bad.dedup();
    if !bad.is_empty() {
        let shown: Vec<String> = bad.iter().take(5).map(|c| format!("{c:?}")).collect();
        broken.push(format!("it contains {}", shown.join(", ")));
    }
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !alnum(name.chars().next()) {
        broken.push("it does not start with a lowercase letter or digit".to_string());
    }
    if !alnum(name.chars().last()) {
        broken.push("it does not end with a lowercase letter or digit".to_string());
    }
    if name.contains("..") {
        broken.push("it contains two adjacent dots".to_string());
    }
    if looks_like_ipv4(name) {
        broken.push("it is formatted as an IP address".to_string());
    }
    if name.starts_with("xn--") {
        broken.push("it starts with the reserved prefix \"xn--\"".to_string());
    }
    if name.ends_with("-s3alias") {
        broken.push("it ends with the reserved suffix \"-s3alias\"".to_string());
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(broken)
    }
}

/// `a.b.c.d` with 1 to 3 digits each: what S3 calls "formatted as an IP address".
fn looks_like_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
}

/// A hand-written check (no URL crate in the dependency tree): scheme http or https, a
/// non-empty host, a numeric port if any, no whitespace or control characters.
fn check_http_url(url: &str) -> Result<(), String> {
    if let Some(c) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains {c:?}"));
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err("it has no scheme (http:// or https://)".to_string());
    };
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "the scheme is {scheme:?}, expected \"http\" or \"https\""
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Userinfo (`user:pass@`) is legal in a URL; the host is what follows the last `@`.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        // IPv6 literal: `[::1]:9000`.
        match bracketed.split_once(']') {
            Some((host, after)) => match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err("unexpected text after the IPv6 address".to_string()),
                },
            },
            None => return Err("the IPv6 address has no closing \"]\"".to_string()),
        }
    } else {
        match host_port.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err("it has no host".to_string());
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(format!("the port {port:?} is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

fn check_local(local: &LocalSpec, v: &mut Verdict) {
    let path = format!("{BACKEND}.local");
    if let Some(problem) = local.mount_path_problem() {
        v.error(format!("{path}.mountPath"), problem);
    }

    let sources = local.volume_sources();
    match sources.len() {
        1 => {}
        0 => v.error(
            path,
            format!("no volume source is set; set exactly one of {LOCAL_VOLUME_SOURCES}"),
        ),
        n => v.error(
            path,
            format!(
                "{n} volume sources are set ({}); set exactly one of {LOCAL_VOLUME_SOURCES}",
                sources.join(", ")
            ),
        ),
    }
}

fn check_usage_policy(policy: &UsagePolicy, v: &mut Verdict) {
    let Some(allowed) = &policy.allowed_namespaces else {
        return;
    };
    let path = "spec.usagePolicy.allowedNamespaces";
    let from = allowed.from.unwrap_or_default();
    match (&allowed.selector, from) {
        (None, FromNamespaces::Selector) => v.error(
            format!("{path}.selector"),
            "is missing, but from is Selector: set a label selector on Namespaces (matchLabels \
             and/or matchExpressions), or use from: Same or from: All",
        ),
        (Some(selector), _) => {
            check_label_selector(selector, &format!("{path}.selector"), v);
            if from != FromNamespaces::Selector {
                v.warn(
                    format!("{path}.selector"),
                    format!("is ignored because from is {from:?}; set from: Selector to use it"),
                );
            } else if is_empty_selector(selector) {
                v.warn(
                    format!("{path}.selector"),
                    "is empty and so matches every namespace; write from: All to say so",
                );
            }
        }
        (None, _) => {}
    }
}

fn is_empty_selector(s: &LabelSelector) -> bool {
    s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|e| e.is_empty())
}

const LABEL_KEY_RULE: &str = "a label key is an optional DNS subdomain prefix and '/', then at \
     most 63 letters, digits, '-', '_' and '.', starting and ending with a letter or digit";
const LABEL_VALUE_RULE: &str = "a label value is empty or at most 63 letters, digits, '-', '_' \
     and '.', starting and ending with a letter or digit";

/// The rules Kubernetes applies to a label selector, so a bad one is refused here instead of
/// making every namespace lookup fail later.
fn check_label_selector(selector: &LabelSelector, path: &str, v: &mut Verdict) {
    if let Some(labels) = &selector.match_labels {
        for (key, value) in labels {
            if !is_label_key(key) {
                v.error(
                    format!("{path}.matchLabels"),
                    format!("{key:?} is not a valid label key; {LABEL_KEY_RULE}"),
                );
            }
            if !naming::is_label_value(value) {
                v.error(
                    format!("{path}.matchLabels"),
                    format!(
                        "the value {value:?} of {key:?} is not a valid label value; \
                         {LABEL_VALUE_RULE}"
                    ),
                );
            }
        }
    }
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let p = format!("{path}.matchExpressions[{i}]");
        if !is_label_key(&expr.key) {
            v.error(
                format!("{p}.key"),
                format!("{:?} is not a valid label key; {LABEL_KEY_RULE}", expr.key),
            );
        }
        let values = expr.values.as_deref().unwrap_or_default();
        match expr.operator.as_str() {
            "In" | "NotIn" => {
                if values.is_empty() {
                    v.error(
                        format!("{p}.values"),
                        format!(
                            "is empty, but operator {} needs at least one value",
                            expr.operator
                        ),
                    );
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    v.error(
                        format!("{p}.values"),
                        format!(
                            "has {} value(s), but operator {} takes none; remove values or use \
                             In or NotIn",
                            values.len(),
                            expr.operator
                        ),
                    );
                }
            }
            other => v.error(
                format!("{p}.operator"),
                format!(
                    "{other:?} is not a selector operator; use one of In, NotIn, Exists, \
                     DoesNotExist"
                ),
            ),
        }
        for (j, value) in values.iter().enumerate() {
            if !naming::is_label_value(value) {
                v.error(
                    format!("{p}.values[{j}]"),
                    format!("{value:?} is not a valid label value; {LABEL_VALUE_RULE}"),
                );
            }
        }
    }
}

/// A qualified name, as label keys are: `[prefix/]name`.
fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if prefix.is_some_and(|p| !naming::is_dns_subdomain(p)) {
        return false;
    }
    let b = name.as_bytes();
    match (b.first(), b.last()) {
        (Some(first), Some(last)) => {
            b.len() <= naming::MAX_LABEL_LEN
                && first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

/// Where the data lives, as far as it decides which snapshots the repository sees. Credentials
/// (`storageSecretName`), region, TLS and connection settings, and the local mount point can
/// change without losing anything, so they are left out.
#[derive(PartialEq, Debug)]
struct Location {
    provider: Vec<&'static str>,
    bucket: Option<String>,
    prefix: String,
    endpoint: Option<String>,
    rest_url: Option<String>,
    local_source: Option<serde_json::Value>,
    local_sub_path: Option<String>,
}

fn location(b: &Backend) -> Location {
    let local_source = b.local.as_ref().map(|l| {
        // The volume source decides the data; mountPath and subPath are compared apart.
        let mut l = l.clone();
        l.mount_path.clear();
        l.sub_path = None;
        serde_json::to_value(&l).unwrap_or(serde_json::Value::Null)
    });
    Location {
        provider: b.providers().iter().map(|p| p.as_str()).collect(),
        bucket: b.bucket().map(str::to_string),
        // Defaulting trims slashes; trim here too so `a/` and `a` compare alike either way.
        prefix: b.prefix().unwrap_or_default().trim_matches('/').to_string(),
        endpoint: b
            .s3
            .as_ref()
            .and_then(|s| s.endpoint.clone())
            .filter(|e| !e.is_empty()),
        rest_url: b.rest.as_ref().map(|r| r.url.clone()),
        local_source,
        local_sub_path: b
            .local
            .as_ref()
            .and_then(|l| l.sub_path.as_deref())
            .map(|s| s.trim_matches('/').to_string()),
    }
}

/// On UPDATE, moving a repository that holds snapshots would leave them behind: the object
/// would then point at an empty (or another) repository.
fn check_backend_change(
    old_b: &Backend,
    new_b: &Backend,
    old: &Repository,
    new_driver: crate::native::StorageDriver,
    v: &mut Verdict,
) {
    let snapshots = old
        .status
        .as_ref()
        .and_then(|s| s.snapshot_count)
        .unwrap_or(0);
    if snapshots <= 0 {
        return;
    }
    let (before, after) = (location(old_b), location(new_b));
    if old.spec.driver() != new_driver {
        v.error(
            "spec.driver",
            format!(
                "changed, but the repository holds {snapshots} snapshot(s) of driver {:?} that                  the change would orphan; keep the driver and create a new Repository",
                old.spec.driver()
            ),
        );
    }
    if before == after {
        return;
    }
    let mut changed = Vec::new();
    if before.provider != after.provider {
        changed.push("the provider");
    }
    if before.bucket != after.bucket {
        changed.push("the bucket or container");
    }
    if before.prefix != after.prefix {
        changed.push("the prefix");
    }
    if before.endpoint != after.endpoint {
        changed.push("the endpoint");
    }
    if before.rest_url != after.rest_url {
        changed.push("the URL");
    }
    if before.local_source != after.local_source || before.local_sub_path != after.local_sub_path {
        changed.push("the volume or subPath");
    }
    v.error(
        BACKEND,
        format!(
            "{} changed, but the repository holds {snapshots} snapshot(s) that the change would \
             orphan; keep the backend as it was and create a new Repository for the new location \
             (changing storageSecretName, region, insecureTLS, maxConnections or mountPath is \
             allowed)",
            changed.join(", ")
        ),
    );
}

/// A scheduled check's cron expression and subset.
fn check_integrity_check(check: &crate::repository::IntegrityCheck, v: &mut Verdict) {
    if let Err(e) = crate::schedule::Schedule::parse(&check.schedule, None) {
        v.error("spec.integrityCheck.schedule", e.to_string());
    }
    if let Err(e) = crate::read_subset::ReadSubset::parse(check.read_data_subset(), false, 0) {
        v.error("spec.integrityCheck.readDataSubset", e);
    }
}
