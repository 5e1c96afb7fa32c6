//! Task resolution (`shared/spec/runtime.md`, "The Job"): a session, its invoker, the Task and
//! its Functions, the Repository and the AppBinding become the Job template the session runs.
//! Shared by the webhook (at admission) and the controller (when the webhook could not).
//! The referenced objects come from [`crate::dereference`]; [`resolve_job`] builds the Job in
//! named steps: the variables, one container per step, the pod, the Job around it.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::{JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvFromSource, EnvVar, PersistentVolumeClaimVolumeSource,
    PodSpec, PodTemplateSpec, SecretEnvSource, SecretVolumeSource, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::appbinding::AppBinding;
use crate::builtins::is_built_in_variable;
use crate::common::{
    BackupTarget, ContainerRuntimeSettings, EmptyDirSettings, ObjectReference,
    PersistentVolumeClaimTemplate, RetentionPolicy, Rule, RuntimeSettings, TargetRef, TaskRef,
};
use crate::defaults::{CatalogDefaults, DEFAULT_ALIAS, Direction};
use crate::dereference::{Dereferenced, References};
use crate::hooks::{ExecHook, Handler, PostHook};
use crate::naming::{
    LABEL_INVOKER_KIND, LABEL_INVOKER_NAME, LABEL_MANAGED_BY, LABEL_SESSION, MANAGED_BY,
    interim_pvc_name, label_value,
};
use crate::pod_security;
use crate::repository::{Backend, Provider};
use crate::task::{Function, Task};
use crate::validation::job::JobRequest;
use crate::validation::{Lookups, Policy, Verdict};
use crate::vars::{VarError, substitute_json};
use crate::{BackupConfiguration, BackupSession, Repository, RestoreSession};

/// Where the scratch emptyDir is mounted.
pub const TMP_DIR: &str = "/cairn/tmp";
/// Where the interim PVC is mounted.
pub const INTERIM_DIR: &str = "/cairn/interim";
/// `INTERIM_DATA_DIR` when there is an interim volume.
pub const INTERIM_DATA_DIR: &str = "/cairn/interim/data";
/// Where the AppBinding's credentials Secret is mounted (files `username`, `password`, ...).
pub const TARGET_SECRET_DIR: &str = "/cairn/secrets/target";
/// Where the repository Secret is mounted (the same keys are also in the environment).
pub const REPOSITORY_SECRET_DIR: &str = "/cairn/secrets/repository";

const VOL_TMP: &str = "cairn-tmp";
const VOL_INTERIM: &str = "cairn-interim";
const VOL_REPOSITORY: &str = "cairn-repository";
const VOL_REPOSITORY_SECRET: &str = "cairn-repository-secret";
const VOL_TARGET_SECRET: &str = "cairn-target-secret";

/// Settings of the installation that every Job uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSettings {
    /// Image with `cairn-agent`, offered to Functions as `${AGENT_IMAGE}`.
    pub agent_image: String,
    /// Pull policy of every container; the cluster default when `None`.
    pub image_pull_policy: Option<String>,
    /// The Tasks used when neither the object nor its AppBinding names one.
    pub catalog: CatalogDefaults,
    /// What admission and the resolver allow (the Pod Security Standard of every Job).
    pub policy: Policy,
    /// The controller's user name (`system:serviceaccount:<namespace>:<name>`): the only
    /// writer of Snapshot objects admission admits. Empty: nobody.
    pub controller_user: String,
}

impl Default for InstallSettings {
    fn default() -> Self {
        Self {
            agent_image: "ghcr.io/cairn-dev/cairn:latest".into(),
            image_pull_policy: None,
            catalog: CatalogDefaults::default(),
            policy: Policy::default(),
            controller_user: String::new(),
        }
    }
}

/// Why a Job could not be resolved. Messages name the object and what would fix it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    #[error("{kind} {name:?} not found{}", in_namespace(namespace))]
    Missing {
        kind: &'static str,
        namespace: Option<String>,
        name: String,
    },
    #[error("Task {task:?} step {step} names Function {function:?}, which does not exist")]
    MissingFunction {
        task: String,
        step: usize,
        function: String,
    },
    #[error("Task {task:?} has no steps: add at least one step naming a Function")]
    NoSteps { task: String },
    #[error(
        "Repository {name:?}: spec.backend must set exactly one provider block (local, s3, gcs, azure, swift, b2, rest)"
    )]
    NoProvider { name: String },
    #[error("{}", join_var_errors(.0))]
    Variables(Vec<(String, VarError)>),
    #[error("could not build the Job: {0}")]
    Encoding(String),
    /// What the object asks of its Job is not allowed (admission would have denied it).
    #[error("{invoker} asks for a Job cairn does not run: {}", .reasons.join("; "))]
    Refused {
        invoker: String,
        reasons: Vec<String>,
    },
}

impl ResolveError {
    /// Whether the error names an object that may still arrive (a watch cache behind the API
    /// server, objects applied together): worth another try before the session fails.
    pub fn may_resolve_later(&self) -> bool {
        matches!(self, Self::Missing { .. } | Self::MissingFunction { .. })
    }
}

fn in_namespace(ns: &Option<String>) -> String {
    ns.as_ref()
        .map(|n| format!(" in namespace {n:?}"))
        .unwrap_or_default()
}

fn join_var_errors(errors: &[(String, VarError)]) -> String {
    errors
        .iter()
        .map(|(path, e)| format!("{path}: {e}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The parts of a BackupConfiguration or a RestoreSession that shape the Job.
#[derive(Clone, Debug)]
pub struct JobSource<'a> {
    pub direction: Direction,
    /// The session's name and namespace.
    pub session: &'a str,
    pub namespace: &'a str,
    /// `BackupConfiguration` or `RestoreSession`, and its name.
    pub invoker_kind: &'a str,
    pub invoker_name: &'a str,
    /// The Repository the snapshots go to or come from.
    pub repository: &'a ObjectReference,
    pub target_ref: &'a TargetRef,
    pub alias: Option<&'a str>,
    pub target_args: &'a [String],
    pub task: Option<&'a TaskRef>,
    pub runtime_settings: Option<&'a RuntimeSettings>,
    pub temp_dir: Option<&'a EmptyDirSettings>,
    pub interim_volume_template: Option<&'a PersistentVolumeClaimTemplate>,
    pub retention: Option<&'a RetentionPolicy>,
    /// Restore only: its rules ([`RestoreSessionSpec::rules`](crate::restore_session::RestoreSessionSpec::rules)).
    pub restore_rules: Option<&'a [Rule]>,
    /// The pre hook (`preBackup` / `preRestore`): the Job's first container.
    pub pre_hook: Option<&'a Handler>,
    /// The post hook (`postBackup` / `postRestore`): a Job of its own after the session.
    pub post_hook: Option<&'a PostHook>,
}

impl<'a> JobSource<'a> {
    /// The source of a BackupSession's Job: its invoking configuration.
    pub fn backup(session: &'a BackupSession, config: &'a BackupConfiguration) -> Self {
        let BackupTarget { alias, r#ref, args } = &config.spec.target;
        Self {
            direction: Direction::Backup,
            session: session.meta().name.as_deref().unwrap_or_default(),
            namespace: session.meta().namespace.as_deref().unwrap_or_default(),
            invoker_kind: "BackupConfiguration",
            invoker_name: config.meta().name.as_deref().unwrap_or_default(),
            repository: &config.spec.repository,
            target_ref: r#ref,
            alias: alias.as_deref(),
            target_args: args,
            task: config.spec.task.as_ref(),
            runtime_settings: config.spec.runtime_settings.as_ref(),
            temp_dir: config.spec.temp_dir.as_ref(),
            interim_volume_template: config.spec.interim_volume_template.as_ref(),
            retention: Some(&config.spec.retention_policy),
            restore_rules: None,
            pre_hook: config
                .spec
                .hooks
                .as_ref()
                .and_then(|h| h.pre_backup.as_ref()),
            post_hook: config
                .spec
                .hooks
                .as_ref()
                .and_then(|h| h.post_backup.as_ref()),
        }
    }

    /// The source of a RestoreSession's Job: the RestoreSession itself.
    pub fn restore(restore: &'a RestoreSession) -> Self {
        let name = restore.meta().name.as_deref().unwrap_or_default();
        Self {
            direction: Direction::Restore,
            session: name,
            namespace: restore.meta().namespace.as_deref().unwrap_or_default(),
            invoker_kind: "RestoreSession",
            invoker_name: name,
            repository: &restore.spec.repository,
            target_ref: &restore.spec.target.r#ref,
            alias: restore.spec.target.alias.as_deref(),
            target_args: &restore.spec.target.args,
            task: restore.spec.task.as_ref(),
            runtime_settings: restore.spec.runtime_settings.as_ref(),
            temp_dir: restore.spec.temp_dir.as_ref(),
            interim_volume_template: restore.spec.interim_volume_template.as_ref(),
            retention: None,
            restore_rules: Some(restore.spec.rules()),
            pre_hook: restore
                .spec
                .hooks
                .as_ref()
                .and_then(|h| h.pre_restore.as_ref()),
            post_hook: restore
                .spec
                .hooks
                .as_ref()
                .and_then(|h| h.post_restore.as_ref()),
        }
    }

    /// Stash's session summary that hook templates read ([`crate::hook_template::FIELDS`]),
    /// with the session's outcome.
    pub fn hook_summary(&self, ended: &SessionEnd<'_>) -> BTreeMap<&'static str, String> {
        let target = self.target_ref;
        BTreeMap::from([
            ("Name", self.session.to_string()),
            ("Namespace", self.namespace.to_string()),
            ("Invoker.APIGroup", crate::common::GROUP.to_string()),
            ("Invoker.Kind", self.invoker_kind.to_string()),
            ("Invoker.Name", self.invoker_name.to_string()),
            ("Target.APIVersion", target.api_version.clone()),
            ("Target.Kind", target.kind.clone()),
            ("Target.Name", target.name.clone()),
            ("Target.Namespace", self.namespace.to_string()),
            ("Status.Phase", ended.phase.to_string()),
            ("Status.Duration", ended.duration.to_string()),
            ("Status.Error", ended.error.to_string()),
        ])
    }

    /// What the source names, for [`Dereferenced::of`].
    pub fn references(&self) -> References<'a> {
        References {
            direction: self.direction,
            namespace: self.namespace,
            repository: self.repository,
            target: &self.target_ref.name,
            task: self.task,
        }
    }

    /// (namespace, name) of the Repository; the namespace defaults to the session's.
    pub fn repository_key(&self) -> (String, String) {
        let ns = self.repository.namespace_or(self.namespace);
        (ns.to_string(), self.repository.name.clone())
    }

    /// What the invoker asks of the Job, for the rules of admission.
    pub fn request(&self) -> JobRequest<'a> {
        JobRequest {
            direction: self.direction,
            task: self.task,
            target_args: self.target_args,
            runtime_settings: self.runtime_settings,
        }
    }

    fn alias(&self) -> &str {
        self.alias
            .filter(|a| !a.is_empty())
            .unwrap_or(DEFAULT_ALIAS)
    }

    /// Stash's `args` Task param (the first, as for every param) translated for this
    /// direction. An untranslatable one was refused before (admission, and [`resolve_job`]
    /// again), so it translates to nothing here.
    fn stash_args(&self) -> crate::stash_args::Translated {
        (self.task.map(|t| t.params.as_slice()).unwrap_or_default())
            .iter()
            .find(|p| p.name == crate::stash_args::ARGS_PARAM)
            .and_then(|p| crate::stash_args::translate(&p.value, self.direction).ok())
            .unwrap_or_default()
    }

    /// Restore only: the rule that applies to this host.
    fn restore_rule(&self) -> Option<&'a Rule> {
        self.restore_rules
            .and_then(|rules| rule_for_host(rules, self.alias()))
    }

    /// The catalog params a restore rule sets for this host: its `include` and `exclude`
    /// (index patterns, comma-joined), which replace the Task's and the steps' values.
    fn rule_params(&self) -> Vec<(&'static str, String)> {
        let Some(rule) = self.restore_rule() else {
            return Vec::new();
        };
        [("include", &rule.include), ("exclude", &rule.exclude)]
            .into_iter()
            .filter(|(_, patterns)| !patterns.is_empty())
            .map(|(name, patterns)| (name, patterns.join(",")))
            .collect()
    }
}

/// Everything a Job is resolved from, besides its source.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    pub task: &'a Task,
    pub functions: BTreeMap<String, Arc<Function>>,
    pub repository: &'a Repository,
    pub app_binding: &'a AppBinding,
}

/// Resolves a BackupSession's Job from what `lookups` knows.
pub fn resolve_backup_job(
    session: &BackupSession,
    lookups: &dyn Lookups,
    install: &InstallSettings,
) -> Result<JobTemplateSpec, ResolveError> {
    let namespace = session.meta().namespace.clone().unwrap_or_default();
    let config_name = &session.spec.invoker.name;
    let config = lookups
        .backup_configuration(&namespace, config_name)
        .ok_or_else(|| ResolveError::Missing {
            kind: "BackupConfiguration",
            namespace: Some(namespace.clone()),
            name: config_name.clone(),
        })?;
    resolve_with_lookups(&JobSource::backup(session, &config), lookups, install)
}

/// Resolves a RestoreSession's Job from what `lookups` knows.
pub fn resolve_restore_job(
    restore: &RestoreSession,
    lookups: &dyn Lookups,
    install: &InstallSettings,
) -> Result<JobTemplateSpec, ResolveError> {
    resolve_with_lookups(&JobSource::restore(restore), lookups, install)
}

fn resolve_with_lookups(
    source: &JobSource<'_>,
    lookups: &dyn Lookups,
    install: &InstallSettings,
) -> Result<JobTemplateSpec, ResolveError> {
    let found = Dereferenced::of(&source.references(), lookups, Some(&install.catalog));
    resolve_dereferenced(source, &found, install)
}

fn missing(kind: &'static str, namespace: Option<&str>, name: &str) -> ResolveError {
    ResolveError::Missing {
        kind,
        namespace: namespace.map(str::to_string),
        name: name.to_string(),
    }
}

/// Resolves the Job of `source` from the objects it names, refusing a missing one (in the
/// order Repository, AppBinding, Task, Functions) and a Repository that lends it no storage.
pub fn resolve_dereferenced(
    source: &JobSource<'_>,
    found: &Dereferenced,
    install: &InstallSettings,
) -> Result<JobTemplateSpec, ResolveError> {
    let (repo_ns, repo_name) = &found.repository_key;
    let repository = found
        .repository
        .as_deref()
        .ok_or_else(|| missing("Repository", Some(repo_ns), repo_name))?;
    check_repository_lends(source, found, repository)?;
    let app_binding = found.app_binding.as_deref().ok_or_else(|| {
        missing(
            "AppBinding",
            Some(source.namespace),
            &source.target_ref.name,
        )
    })?;
    let task_name = found.task_name.clone().unwrap_or_default();
    let task = found
        .task
        .as_deref()
        .ok_or_else(|| missing("Task", None, &task_name))?;
    if let Some(why) = crate::native::driver_mismatch(task, repository) {
        refuse(source, std::iter::once(format!("spec.task.name: {why}")))?;
    }
    if let Some((step, function)) = found.missing_functions.first() {
        return Err(ResolveError::MissingFunction {
            task: task_name,
            step: *step,
            function: function.clone(),
        });
    }
    let resolved = Resolved {
        task,
        functions: found.functions.clone(),
        repository,
        app_binding,
    };
    resolve_job(source, &resolved, install)
}

/// Refuses a Repository whose local mount path is unusable, or that does not admit the
/// source's namespace (admitted without the webhook, or its usage policy changed since).
fn check_repository_lends(
    source: &JobSource<'_>,
    found: &Dereferenced,
    repository: &Repository,
) -> Result<(), ResolveError> {
    let (repo_ns, repo_name) = &found.repository_key;
    if let Some(problem) = repository
        .restic_backend()
        .and_then(|b| b.local.as_ref())
        .and_then(|l| l.mount_path_problem())
    {
        refuse(
            source,
            std::iter::once(format!(
                "Repository {repo_ns}/{repo_name} spec.backend.local.mountPath: {problem}"
            )),
        )?;
    }
    // A Repository that does not admit this namespace (admitted without the webhook, or its
    // usage policy changed since) lends no Job its storage.
    if crate::validation::usage_policy_admits(
        repository,
        source.namespace,
        found.namespace_labels.as_ref(),
    ) == Some(false)
    {
        refuse(
            source,
            std::iter::once(format!(
                "spec.repository: Repository {repo_ns}/{repo_name} does not admit namespace {:?} \
                 (its spec.usagePolicy.allowedNamespaces)",
                source.namespace
            )),
        )?;
    }
    Ok(())
}

/// The built-in variables of a source ([`crate::builtins::BUILT_IN_VARIABLES`]: Stash's names
/// plus a few of ours) and the source's Task params. Every built-in is set (empty when it does
/// not apply), so a Function can reference any of them; a param never replaces one (admission
/// denies such a param and [`resolve_job`] refuses it).
pub fn variables(
    source: &JobSource<'_>,
    resolved: &Resolved<'_>,
    install: &InstallSettings,
) -> BTreeMap<String, String> {
    let mut v = BTreeMap::new();
    session_variables(&mut v, source, install);
    repository_variables(&mut v, source, resolved.repository);
    target_variables(&mut v, source, resolved.app_binding);
    host_variables(&mut v, source);
    runtime_variables(&mut v, source);
    let args = source.stash_args();
    set(&mut v, "ARGS_MATCH", args.matcher.unwrap_or_default());
    set(&mut v, "ARGS_SKIP", args.skip);
    for p in source.task.map(|t| t.params.as_slice()).unwrap_or_default() {
        v.entry(p.name.clone()).or_insert_with(|| p.value.clone());
    }
    v
}

type Vars = BTreeMap<String, String>;

fn set(v: &mut Vars, name: &str, value: String) {
    v.insert(name.to_string(), value);
}

/// The session, its invoker and the agent image.
fn session_variables(v: &mut Vars, source: &JobSource<'_>, install: &InstallSettings) {
    set(v, "NAMESPACE", source.namespace.into());
    match source.direction {
        Direction::Backup => {
            set(v, "BACKUP_SESSION", source.session.into());
            set(v, "RESTORE_SESSION", String::new());
        }
        Direction::Restore => {
            set(v, "BACKUP_SESSION", String::new());
            set(v, "RESTORE_SESSION", source.session.into());
        }
    }
    set(v, "INVOKER_KIND", source.invoker_kind.into());
    set(v, "INVOKER_NAME", source.invoker_name.into());
    set(v, "AGENT_IMAGE", install.agent_image.clone());
}

/// Where the snapshots go: the Repository's backend.
fn repository_variables(v: &mut Vars, source: &JobSource<'_>, repo: &Repository) {
    let backend = &repo.spec.backend;
    let (repo_ns, repo_name) = source.repository_key();
    set(v, "REPOSITORY_NAME", repo_name);
    set(v, "REPOSITORY_NAMESPACE", repo_ns);
    set(
        v,
        "REPOSITORY_PROVIDER",
        backend
            .provider()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default(),
    );
    set(
        v,
        "REPOSITORY_BUCKET",
        backend.bucket().unwrap_or_default().into(),
    );
    set(
        v,
        "REPOSITORY_PREFIX",
        backend.prefix().unwrap_or_default().into(),
    );
    set(v, "REPOSITORY_ENDPOINT", backend.endpoint());
    set(
        v,
        "REPOSITORY_REGION",
        backend
            .s3
            .as_ref()
            .and_then(|s| s.region.clone())
            .unwrap_or_default(),
    );
    set(
        v,
        "REPOSITORY_INSECURE_TLS",
        bool_str(backend.s3.as_ref().and_then(|s| s.insecure_tls)),
    );
    set(
        v,
        "REPOSITORY_SECRET_NAME",
        backend.storage_secret_name.clone(),
    );
    set(v, "REPOSITORY_URL", repository_url(backend));
    set(v, "REPOSITORY_PATH", backend.local_path());
    set(v, "REPOSITORY_SECRET_DIR", REPOSITORY_SECRET_DIR.into());
    set(
        v,
        "MAX_CONNECTIONS",
        backend
            .max_connections()
            .map(|n| n.to_string())
            .unwrap_or_default(),
    );
}

/// What is backed up or restored into: the AppBinding.
fn target_variables(v: &mut Vars, source: &JobSource<'_>, app: &AppBinding) {
    let target = &source.target_ref;
    app_variables(v, &target.kind, &target.name, source.namespace, app);
    set(v, "TARGET_ARGS", source.target_args.join(" "));
}

/// The `TARGET_*` variables an AppBinding gives (all but `TARGET_ARGS`): a Job's, and those a
/// BackupBlueprint resolves when it makes a target's Repository and configuration.
pub fn app_variables(v: &mut Vars, kind: &str, name: &str, namespace: &str, app: &AppBinding) {
    set(v, "TARGET_KIND", kind.into());
    set(v, "TARGET_NAME", name.into());
    set(v, "TARGET_NAMESPACE", namespace.into());
    set(
        v,
        "TARGET_APP_VERSION",
        app.spec.version.clone().unwrap_or_default(),
    );
    set(
        v,
        "TARGET_APP_TYPE",
        app.spec.r#type.clone().unwrap_or_default(),
    );
    set(v, "TARGET_URL", app.url_without_credentials());
    set(
        v,
        "TARGET_INSECURE_SKIP_TLS_VERIFY",
        bool_str(app.spec.client_config.insecure_skip_tls_verify),
    );
    set(
        v,
        "TARGET_SERVER_NAME",
        app.spec
            .client_config
            .server_name
            .clone()
            .unwrap_or_default(),
    );
    set(
        v,
        "TARGET_SECRET_DIR",
        if app.spec.secret.is_some() {
            TARGET_SECRET_DIR.into()
        } else {
            String::new()
        },
    );
}

/// The host (alias) and, for a restore, the rule that applies to it.
fn host_variables(v: &mut Vars, source: &JobSource<'_>) {
    let alias = source.alias().to_string();
    let rule = source.restore_rule();
    for (name, value) in source.rule_params() {
        set(v, name, value);
    }
    set(
        v,
        "SOURCE_HOSTNAME",
        rule.and_then(|r| r.source_host.clone())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| alias.clone()),
    );
    set(
        v,
        "SOURCE_CONFIGURATION",
        rule.and_then(|r| r.source_configuration.clone())
            .unwrap_or_default(),
    );
    set(
        v,
        "RESTORE_SNAPSHOTS",
        rule.map(|r| r.snapshots.join(",")).unwrap_or_default(),
    );
    set(v, "HOSTNAME", alias);
}

/// The interim volume, the cache and the retention policy.
fn runtime_variables(v: &mut Vars, source: &JobSource<'_>) {
    set(
        v,
        "INTERIM_DATA_DIR",
        if source.interim_volume_template.is_some() {
            INTERIM_DATA_DIR.into()
        } else {
            String::new()
        },
    );
    let caching_disabled = source
        .temp_dir
        .and_then(|t| t.disable_caching)
        .unwrap_or(false);
    set(v, "ENABLE_CACHE", (!caching_disabled).to_string());

    let r = source.retention;
    for (var, count) in [
        ("RETENTION_KEEP_LAST", r.and_then(|r| r.keep_last)),
        ("RETENTION_KEEP_HOURLY", r.and_then(|r| r.keep_hourly)),
        ("RETENTION_KEEP_DAILY", r.and_then(|r| r.keep_daily)),
        ("RETENTION_KEEP_WEEKLY", r.and_then(|r| r.keep_weekly)),
        ("RETENTION_KEEP_MONTHLY", r.and_then(|r| r.keep_monthly)),
        ("RETENTION_KEEP_YEARLY", r.and_then(|r| r.keep_yearly)),
    ] {
        set(v, var, count.map(|c| c.to_string()).unwrap_or_default());
    }
    set(
        v,
        "RETENTION_KEEP_TAGS",
        r.map(|r| r.keep_tags.join(",")).unwrap_or_default(),
    );
    set(v, "RETENTION_PRUNE", bool_str(r.and_then(|r| r.prune)));
    set(v, "RETENTION_DRY_RUN", bool_str(r.and_then(|r| r.dry_run)));
}

fn bool_str(b: Option<bool>) -> String {
    b.unwrap_or(false).to_string()
}

/// The rule that applies to `host`: one naming it, else the one with no target hosts.
fn rule_for_host<'r>(rules: &'r [Rule], host: &str) -> Option<&'r Rule> {
    rules
        .iter()
        .find(|r| r.target_hosts.iter().any(|h| h == host))
        .or_else(|| rules.iter().find(|r| r.target_hosts.is_empty()))
}

/// The repository in restic's own notation (`s3:https://host/bucket/prefix`, `local:/path`, ...),
/// so a Function running the standard `restic` can use it as `RESTIC_REPOSITORY`.
pub fn repository_url(backend: &Backend) -> String {
    repository_location(backend)
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// The repository's [`Location`](crate::location::Location); `None` without a provider.
pub fn repository_location(backend: &Backend) -> Option<crate::location::Location> {
    use crate::location::Location;
    let prefix = |p: &Option<String>| {
        p.as_deref()
            .unwrap_or_default()
            .trim_matches('/')
            .to_string()
    };
    Some(match backend.provider()? {
        Provider::S3 => {
            let s3 = backend.s3.as_ref()?;
            Location::S3 {
                endpoint: Some(backend.endpoint())
                    .filter(|e| !e.is_empty())
                    .unwrap_or_else(|| "https://s3.amazonaws.com".into())
                    .trim_end_matches('/')
                    .to_string(),
                bucket: s3.bucket.clone(),
                prefix: prefix(&s3.prefix),
            }
        }
        Provider::Gcs => backend.gcs.as_ref().map(|g| Location::Gcs {
            bucket: g.bucket.clone(),
            prefix: prefix(&g.prefix),
        })?,
        Provider::Azure => backend.azure.as_ref().map(|a| Location::Azure {
            container: a.container.clone(),
            prefix: prefix(&a.prefix),
        })?,
        Provider::Swift => backend.swift.as_ref().map(|s| Location::Swift {
            container: s.container.clone(),
            prefix: prefix(&s.prefix),
        })?,
        Provider::B2 => backend.b2.as_ref().map(|b| Location::B2 {
            bucket: b.bucket.clone(),
            prefix: prefix(&b.prefix),
        })?,
        Provider::Rest => Location::Rest {
            url: backend.endpoint(),
        },
        Provider::Local => Location::Local(backend.local_path().into()),
    })
}

/// The Job template for a source, from an already looked-up Task, Functions, Repository and
/// AppBinding. Every malformed or unset variable is reported, with its path in the Function.
pub fn resolve_job(
    source: &JobSource<'_>,
    resolved: &Resolved<'_>,
    install: &InstallSettings,
) -> Result<JobTemplateSpec, ResolveError> {
    let task_name = check_resolvable(source, resolved, install)?;
    let vars = variables(source, resolved, install);
    let mut var_errors = Vec::new();
    let mut containers = step_containers(source, resolved, install, &vars, &mut var_errors)?;
    let mut task_volumes = serde_json::to_value(&resolved.task.spec.volumes)
        .map_err(|e| ResolveError::Encoding(e.to_string()))?;
    if let Err(errs) = substitute_json(&mut task_volumes, &vars) {
        var_errors.extend(
            errs.into_iter()
                .map(|(path, e)| (format!("Task {task_name:?} spec.volumes{path}"), e)),
        );
    }
    if !var_errors.is_empty() {
        return Err(ResolveError::Variables(var_errors));
    }
    let task_volumes: Vec<Volume> =
        serde_json::from_value(task_volumes).map_err(|e| ResolveError::Encoding(e.to_string()))?;

    if let Some(hook) = pre_hook_container(source, resolved.app_binding, install)? {
        containers.insert(0, hook);
    }
    let main = containers.pop();
    let init_containers = (!containers.is_empty()).then_some(containers);
    let pod_spec = build_pod_spec(source, resolved, main, init_containers, task_volumes);
    let pod_annotations = source
        .runtime_settings
        .and_then(|r| r.pod.as_ref())
        .and_then(|p| p.pod_annotations.clone());
    // The last gate: the whole pod, with what the Task, its Functions and the Repository add.
    refuse(
        source,
        pod_security::check_pod(pod_annotations.as_ref(), &pod_spec)
            .into_iter()
            .filter(|v| v.applies_at(install.policy.job_pod_security))
            .map(|v| format!("the Job's pod {v}")),
    )?;
    Ok(job_template(source, pod_spec, pod_annotations))
}

/// Refuses a Task without steps, a Repository without a provider and what the source asks of
/// the Job against the rules of admission; the Task's name otherwise.
fn check_resolvable(
    source: &JobSource<'_>,
    resolved: &Resolved<'_>,
    install: &InstallSettings,
) -> Result<String, ResolveError> {
    let task_name = resolved.task.meta().name.clone().unwrap_or_default();
    if resolved.task.spec.steps.is_empty() {
        return Err(ResolveError::NoSteps { task: task_name });
    }
    let backend = &resolved.repository.spec.backend;
    if backend.provider().is_none() {
        return Err(ResolveError::NoProvider {
            name: resolved.repository.meta().name.clone().unwrap_or_default(),
        });
    }
    let mut asked = Verdict::default();
    source.request().check(&mut asked, &install.policy);
    refuse(source, asked.errors.iter().map(ToString::to_string))?;
    Ok(task_name)
}

/// Containers: one per step, from its Function, with the step's params as defaults that the
/// source's Task params still override. Variable errors are collected in `var_errors` (that
/// step then has no container).
fn step_containers(
    source: &JobSource<'_>,
    resolved: &Resolved<'_>,
    install: &InstallSettings,
    vars: &Vars,
    var_errors: &mut Vec<(String, VarError)>,
) -> Result<Vec<Container>, ResolveError> {
    let task_name = resolved.task.meta().name.clone().unwrap_or_default();
    let mut containers = Vec::new();
    let steps = &resolved.task.spec.steps;
    for (i, step) in steps.iter().enumerate() {
        let function =
            resolved
                .functions
                .get(&step.name)
                .ok_or_else(|| ResolveError::MissingFunction {
                    task: task_name.clone(),
                    step: i,
                    function: step.name.clone(),
                })?;
        let step_vars = step_variables(vars, step, source);
        let mut spec = serde_json::to_value(&function.spec)
            .map_err(|e| ResolveError::Encoding(e.to_string()))?;
        if let Err(errs) = substitute_json(&mut spec, &step_vars) {
            var_errors.extend(
                errs.into_iter()
                    .map(|(path, e)| (format!("Function {:?} spec.{path}", step.name), e)),
            );
            continue;
        }
        let spec: crate::task::FunctionSpec =
            serde_json::from_value(spec).map_err(|e| ResolveError::Encoding(e.to_string()))?;
        let name = container_name(&step.name, i, steps.iter().map(|s| s.name.as_str()));
        containers.push(build_container(
            name,
            i + 1 == steps.len(),
            spec,
            source,
            resolved,
            install,
        ));
    }
    Ok(containers)
}

/// The variables of one step: `vars` plus the step's params (unless the source's Task params,
/// a restore rule or a built-in set them), with `$(` escaped.
fn step_variables(vars: &Vars, step: &crate::task::FunctionRef, source: &JobSource<'_>) -> Vars {
    let mut step_vars = vars.clone();
    let rule_params = source.rule_params();
    let overriding: Vec<&str> = (source.task.map(|t| t.params.as_slice()))
        .unwrap_or_default()
        .iter()
        .map(|p| p.name.as_str())
        .chain(rule_params.iter().map(|(name, _)| *name))
        .collect();
    for p in &step.params {
        if !overriding.contains(&p.name.as_str()) && !is_built_in_variable(&p.name) {
            step_vars.insert(p.name.clone(), p.value.clone());
        }
    }
    // The kubelet expands `$(NAME)` in a container's command, args and env values: a value
    // (a param, a name) carrying one could read the Secret-backed environment into the
    // agent's arguments. `$$(` is Kubernetes' escape for a literal `$(`.
    for value in step_vars.values_mut() {
        if value.contains("$(") {
            *value = value.replace("$(", "$$(");
        }
    }
    step_vars
}

/// The pre hook's container, first of the Job; when it fails, no step runs and no data is
/// read. An `exec` pre hook has none: the controller runs it before it creates the Job
/// ([`JobSource::pre_exec_hook`]).
fn pre_hook_container(
    source: &JobSource<'_>,
    target: &AppBinding,
    install: &InstallSettings,
) -> Result<Option<Container>, ResolveError> {
    let Some(hook) = source.pre_hook.filter(|h| !h.is_exec()) else {
        return Ok(None);
    };
    let name = source.direction.pre_hook_name();
    let hook = with_target_host(source, name, hook, Some(target))?;
    hook_container(source, "pre", name, &hook, install).map(Some)
}

/// `handler` with the target's host where it names none (Stash's default); refused when the
/// target has no host either.
fn with_target_host(
    source: &JobSource<'_>,
    name: &str,
    handler: &Handler,
    target: Option<&AppBinding>,
) -> Result<Handler, ResolveError> {
    let handler = match target.and_then(AppBinding::host) {
        Some(host) => handler.with_default_host(&host),
        None => handler.clone(),
    };
    if let Err((path, why)) = handler.action() {
        return Err(ResolveError::Refused {
            invoker: source.invoker_name.to_string(),
            reasons: vec![format!("{name}.{path}: {why}")],
        });
    }
    Ok(handler)
}

/// How a session ended, for its post hook.
#[derive(Clone, Debug)]
pub struct SessionEnd<'a> {
    pub phase: crate::common::SessionPhase,
    /// e.g. `1m30s`.
    pub duration: &'a str,
    /// Why it failed; empty when it succeeded.
    pub error: &'a str,
    /// Whether a retry of the session is still to come.
    pub retry_left: bool,
}

/// How a post hook runs: a Job of its own, or an `exec` the controller makes.
#[derive(Clone, Debug, PartialEq)]
pub enum PostHookRun {
    Job(Box<JobTemplateSpec>),
    Exec(Box<ExecHook>),
}

impl JobSource<'_> {
    /// The `exec` pre hook, which the controller runs before it creates the Job, if any.
    pub fn pre_exec_hook(&self) -> Result<Option<ExecHook>, ResolveError> {
        let Some(handler) = self.pre_hook.filter(|h| h.is_exec()) else {
            return Ok(None);
        };
        self.exec_hook(self.direction.pre_hook_name(), handler.clone())
            .map(Some)
    }

    /// An `exec` hook of this source: it runs in the pods of the target AppBinding.
    fn exec_hook(&self, name: &'static str, handler: Handler) -> Result<ExecHook, ResolveError> {
        if self.target_ref.kind != "AppBinding" {
            return Err(ResolveError::Refused {
                invoker: self.invoker_name.to_string(),
                reasons: vec![format!(
                    "{name}: exec hooks run in the pods behind an AppBinding's \
                     clientConfig.service; the target is a {}",
                    self.target_ref.kind
                )],
            });
        }
        Ok(ExecHook {
            name,
            handler,
            app_binding: self.target_ref.name.clone(),
        })
    }
}

/// How the source's post hook runs after a session that ended as `ended`, when its
/// `executionPolicy` fires: an `exec` the controller makes, or a Job of one container,
/// `cairn-agent hook` with the handler rendered from the session's summary; no credentials, no
/// volumes, no API access. `target`: the target AppBinding, whose host a hook without `host`
/// connects to.
pub fn resolve_post_hook(
    source: &JobSource<'_>,
    ended: &SessionEnd<'_>,
    install: &InstallSettings,
    target: Option<&AppBinding>,
) -> Result<Option<PostHookRun>, ResolveError> {
    let Some(hook) = source.post_hook else {
        return Ok(None);
    };
    let succeeded = ended.phase == crate::common::SessionPhase::Succeeded;
    if !hook.fires(succeeded, ended.retry_left) {
        return Ok(None);
    }
    let handler = hook
        .handler
        .rendered(&source.hook_summary(ended))
        .map_err(ResolveError::Encoding)?;
    let name = source.direction.post_hook_name();
    if handler.is_exec() {
        return source
            .exec_hook(name, handler)
            .map(|h| Some(PostHookRun::Exec(Box::new(h))));
    }
    let handler = with_target_host(source, name, &handler, target)?;
    let container = hook_container(source, "post", name, &handler, install)?;
    let pod = source.runtime_settings.and_then(|r| r.pod.as_ref());
    let pod_spec = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".to_string()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security::pod_context(
            pod.and_then(|p| p.security_context.as_ref()),
        )),
        node_selector: pod.and_then(|p| p.node_selector.clone()),
        tolerations: pod.and_then(|p| p.tolerations.clone()),
        ..Default::default()
    };
    let job = job_template(source, pod_spec, None);
    Ok(Some(PostHookRun::Job(Box::new(job))))
}

/// A hook's container (`pre-backup-hook`, `post-restore-hook`, ...): `cairn-agent hook` with
/// the handler, no credentials and no volumes.
fn hook_container(
    source: &JobSource<'_>,
    when: &str,
    name: &str,
    handler: &Handler,
    install: &InstallSettings,
) -> Result<Container, ResolveError> {
    // Stored as written; the kubelet would expand `$(NAME)` in it (`$$(` is the escape).
    let json = serde_json::to_string(handler)
        .map_err(|e| ResolveError::Encoding(e.to_string()))?
        .replace("$(", "$$(");
    let user = source.runtime_settings.and_then(|r| r.container.as_ref());
    Ok(Container {
        name: crate::naming::hook_container_name(when, source.direction.as_str()),
        image: Some(install.agent_image.clone()),
        image_pull_policy: install.image_pull_policy.clone(),
        command: Some(vec!["cairn-agent".into()]),
        args: Some(vec![
            "hook".into(),
            format!("--name={name}"),
            format!("--handler={json}"),
        ]),
        security_context: Some(pod_security::container_context([
            user.and_then(|c| c.security_context.as_ref())
        ])),
        termination_message_path: Some(crate::result::TERMINATION_LOG.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        ..Default::default()
    })
}

/// The Job around `pod_spec`, with cairn's labels (and the pod labels the source adds).
fn job_template(
    source: &JobSource<'_>,
    pod_spec: PodSpec,
    pod_annotations: Option<BTreeMap<String, String>>,
) -> JobTemplateSpec {
    let labels = job_labels(source);
    let mut pod_labels = labels.clone();
    let pod_settings = source.runtime_settings.and_then(|r| r.pod.as_ref());
    if let Some(extra) = pod_settings.and_then(|p| p.pod_labels.as_ref()) {
        for (k, v) in extra {
            pod_labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    JobTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels),
            ..Default::default()
        }),
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: pod_annotations,
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
    }
}

/// `Err(Refused)` with `reasons` when there are any.
fn refuse(
    source: &JobSource<'_>,
    reasons: impl Iterator<Item = String>,
) -> Result<(), ResolveError> {
    let reasons: Vec<String> = reasons.collect();
    if reasons.is_empty() {
        return Ok(());
    }
    Err(ResolveError::Refused {
        invoker: format!(
            "{} {}/{}",
            source.invoker_kind, source.namespace, source.invoker_name
        ),
        reasons,
    })
}

/// Labels of the Job and its pod.
fn job_labels(source: &JobSource<'_>) -> BTreeMap<String, String> {
    BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (LABEL_SESSION.to_string(), label_value(source.session)),
        (
            LABEL_INVOKER_KIND.to_string(),
            source.invoker_kind.to_string(),
        ),
        (
            LABEL_INVOKER_NAME.to_string(),
            label_value(source.invoker_name),
        ),
    ])
}

/// A container name for step `i`: the Function's name, made unique when a Task uses the same
/// Function twice.
fn container_name<'s>(function: &str, i: usize, all: impl Iterator<Item = &'s str>) -> String {
    let repeated = all.filter(|n| *n == function).count() > 1;
    let base = if repeated {
        format!("{function}-{i}")
    } else {
        function.to_string()
    };
    label_value(&base)
        .to_ascii_lowercase()
        .replace(['.', '_'], "-")
}

fn build_container(
    name: String,
    is_main: bool,
    f: crate::task::FunctionSpec,
    source: &JobSource<'_>,
    resolved: &Resolved<'_>,
    install: &InstallSettings,
) -> Container {
    let user = source.runtime_settings.and_then(|r| r.container.as_ref());
    let own = f.runtime_settings.as_ref();

    // Security: restricted defaults, then the Function's, then the user's.
    let security = pod_security::container_context([
        own.and_then(|c| c.security_context.as_ref()),
        user.and_then(|c| c.security_context.as_ref()),
    ]);
    let env = container_env(own, user, resolved);
    let env_from = container_env_from(own, user, resolved);
    let mut mounts = container_mounts(source, resolved);
    mounts.extend(f.volume_mounts);

    let mut args = f.args;
    if is_main {
        args.extend(source.target_args.iter().cloned());
    }

    Container {
        name,
        image: Some(f.image),
        image_pull_policy: install.image_pull_policy.clone(),
        command: (!f.command.is_empty()).then_some(f.command),
        args: (!args.is_empty()).then_some(args),
        working_dir: f.working_dir,
        ports: (!f.ports.is_empty()).then_some(f.ports),
        env: Some(env),
        env_from: Some(env_from),
        volume_mounts: Some(mounts),
        resources: user
            .and_then(|c| c.resources.clone())
            .or_else(|| own.and_then(|c| c.resources.clone())),
        security_context: Some(security),
        termination_message_path: Some(crate::result::TERMINATION_LOG.to_string()),
        // A container that dies without writing its result still leaves its last log lines.
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    }
}

/// The container's environment: the agent's own variables (its temp dir, the target's CA, the
/// nice/ionice it applies to itself), then the Function's, then the user's.
fn container_env(
    own: Option<&ContainerRuntimeSettings>,
    user: Option<&ContainerRuntimeSettings>,
    resolved: &Resolved<'_>,
) -> Vec<EnvVar> {
    // The agent applies nice/ionice to itself: no wrapper binary needed in the image.
    let mut env: Vec<EnvVar> = Vec::new();
    let mut push_env = |name: &str, value: String| {
        env.push(EnvVar {
            name: name.to_string(),
            value: Some(value),
            value_from: None,
        });
    };
    push_env("CAIRN_TMP_DIR", TMP_DIR.to_string());
    push_env("HOME", TMP_DIR.to_string());
    if let Some(ca) = &resolved.app_binding.spec.client_config.ca_bundle {
        // A CA certificate is public; it travels in the pod spec.
        push_env(
            "CAIRN_TARGET_CA_CERT",
            String::from_utf8_lossy(&ca.0).into_owned(),
        );
    }
    let nice = user
        .and_then(|c| c.nice.as_ref())
        .or(own.and_then(|c| c.nice.as_ref()));
    if let Some(adj) = nice.and_then(|n| n.adjustment) {
        push_env("CAIRN_NICE", adj.to_string());
    }
    let ionice = user
        .and_then(|c| c.ionice.as_ref())
        .or(own.and_then(|c| c.ionice.as_ref()));
    if let Some(class) = ionice.and_then(|n| n.class) {
        push_env("CAIRN_IONICE_CLASS", class.to_string());
    }
    if let Some(data) = ionice.and_then(|n| n.class_data) {
        push_env("CAIRN_IONICE_CLASS_DATA", data.to_string());
    }
    env.extend(own.and_then(|c| c.env.clone()).unwrap_or_default());
    env.extend(user.and_then(|c| c.env.clone()).unwrap_or_default());
    env
}

fn container_env_from(
    own: Option<&ContainerRuntimeSettings>,
    user: Option<&ContainerRuntimeSettings>,
    resolved: &Resolved<'_>,
) -> Vec<EnvFromSource> {
    // The repository Secret's keys (RESTIC_PASSWORD, AWS_ACCESS_KEY_ID, ...) by reference, so a
    // Function running the standard restic works too. No value is copied into the Job.
    // The Secret comes last: of keys in several sources the last wins, so neither a Function's
    // nor a user's ConfigMap or Secret can replace the repository's password or credentials.
    let mut env_from = own.and_then(|c| c.env_from.clone()).unwrap_or_default();
    env_from.extend(user.and_then(|c| c.env_from.clone()).unwrap_or_default());
    if let Some(backend) = resolved.repository.restic_backend() {
        env_from.push(EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: backend.storage_secret_name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        });
    }
    env_from
}

/// cairn's mounts: the temp dir, the Secrets, the interim volume, a local repository.
fn container_mounts(source: &JobSource<'_>, resolved: &Resolved<'_>) -> Vec<VolumeMount> {
    let restic = resolved.repository.restic_backend();
    let mut mounts = vec![mount(VOL_TMP, TMP_DIR, false)];
    if restic.is_some() {
        mounts.push(mount(VOL_REPOSITORY_SECRET, REPOSITORY_SECRET_DIR, true));
    }
    if resolved.app_binding.spec.secret.is_some() {
        mounts.push(mount(VOL_TARGET_SECRET, TARGET_SECRET_DIR, true));
    }
    if source.interim_volume_template.is_some() {
        mounts.push(mount(VOL_INTERIM, INTERIM_DIR, false));
    }
    if let Some(local) = restic.and_then(|b| b.local.as_ref()) {
        mounts.push(mount(VOL_REPOSITORY, &local.mount_path, false));
    }
    mounts
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// The pod's own volumes: scratch, the Secrets, the interim claim, a local repository.
fn pod_volumes(source: &JobSource<'_>, resolved: &Resolved<'_>) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: VOL_TMP.to_string(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: source.temp_dir.and_then(|t| t.medium.clone()),
            size_limit: source.temp_dir.and_then(|t| t.size_limit.clone()),
        }),
        ..Default::default()
    }];
    // Secret files readable by the non-root agent (the pod has no fsGroup by default).
    let secret_volume = |volume: &str, secret: &str| Volume {
        name: volume.to_string(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.to_string()),
            default_mode: Some(0o444),
            ..Default::default()
        }),
        ..Default::default()
    };
    // Optional as a volume: a missing storage Secret then stops the pod at the `envFrom` (not
    // optional), which the kubelet reports on the container status as
    // `CreateContainerConfigError` naming the Secret; the controller reads that for
    // `BackendSecretFound` (a volume that cannot mount shows only in events). Either way the
    // container never starts without the Secret.
    if let Some(backend) = resolved.repository.restic_backend() {
        let mut repository_secret =
            secret_volume(VOL_REPOSITORY_SECRET, &backend.storage_secret_name);
        if let Some(source) = repository_secret.secret.as_mut() {
            source.optional = Some(true);
        }
        volumes.push(repository_secret);
    }
    if let Some(secret) = &resolved.app_binding.spec.secret {
        volumes.push(secret_volume(VOL_TARGET_SECRET, &secret.name));
    }
    if let Some(template) = source.interim_volume_template {
        let template_name = template.metadata.name.as_deref().unwrap_or("interim");
        volumes.push(Volume {
            name: VOL_INTERIM.to_string(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: interim_pvc_name(source.session, template_name),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    if let Some(local) = resolved
        .repository
        .restic_backend()
        .and_then(|b| b.local.as_ref())
    {
        volumes.push(local.volume(VOL_REPOSITORY));
    }
    volumes
}

fn build_pod_spec(
    source: &JobSource<'_>,
    resolved: &Resolved<'_>,
    main: Option<Container>,
    init_containers: Option<Vec<Container>>,
    task_volumes: Vec<Volume>,
) -> PodSpec {
    let pod = source.runtime_settings.and_then(|r| r.pod.as_ref());
    let mut volumes = pod_volumes(source, resolved);
    volumes.extend(task_volumes);

    let security = pod_security::pod_context(pod.and_then(|p| p.security_context.as_ref()));

    PodSpec {
        containers: main.into_iter().collect(),
        init_containers,
        volumes: Some(volumes),
        restart_policy: Some("Never".to_string()),
        // The agent needs no Kubernetes API access: its result goes to the termination log.
        // Whatever the settings say: admission warns that a `true` there is ignored.
        automount_service_account_token: Some(false),
        service_account_name: pod.and_then(|p| p.service_account_name.clone()),
        security_context: Some(security),
        node_selector: pod.and_then(|p| p.node_selector.clone()),
        node_name: pod.and_then(|p| p.node_name.clone()),
        image_pull_secrets: pod.and_then(|p| p.image_pull_secrets.clone()),
        affinity: pod.and_then(|p| p.affinity.clone()),
        scheduler_name: pod.and_then(|p| p.scheduler_name.clone()),
        tolerations: pod.and_then(|p| p.tolerations.clone()),
        priority_class_name: pod.and_then(|p| p.priority_class_name.clone()),
        priority: pod.and_then(|p| p.priority),
        runtime_class_name: pod.and_then(|p| p.runtime_class_name.clone()),
        enable_service_links: Some(pod.and_then(|p| p.enable_service_links).unwrap_or(false)),
        topology_spread_constraints: pod.and_then(|p| p.topology_spread_constraints.clone()),
        ..Default::default()
    }
}

/// What a Job of a Repository's own does: `cairn-agent <subcommand>` on the repository.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RepositoryWork {
    /// Delete its data from the backend (`spec.wipeOut: true`, when the Repository is deleted).
    Wipe,
    /// List its snapshots for the Snapshot objects (a Repository cairn did not fill itself).
    Inventory,
    /// Check its integrity, reading the data of this subset of packs.
    Check { read_data_subset: String },
    /// Forget one snapshot (full id), then list the others.
    Forget { snapshot: String },
    /// Remove the locks whose holders are gone.
    Unlock,
}

impl RepositoryWork {
    /// The agent's subcommand, also the container's name.
    pub fn subcommand(&self) -> &'static str {
        match self {
            Self::Wipe => "wipe",
            Self::Inventory => "inventory",
            Self::Check { .. } => "check",
            Self::Forget { .. } => "forget",
            Self::Unlock => "unlock",
        }
    }

    /// Retries of its pod: a check that finds damage exits non-zero with its result, which a
    /// retry would only read again.
    pub fn backoff_limit(&self) -> i32 {
        match self {
            Self::Check { .. } => 0,
            Self::Wipe | Self::Inventory | Self::Forget { .. } | Self::Unlock => 2,
        }
    }

    /// How long its finished Jobs stay: a request's (inventory, unlock) is recorded in the
    /// Repository's status once, and its Job is then garbage; the others stay, as their Jobs
    /// are what keeps them from running again (a failed wipe is not retried by itself).
    pub fn ttl_seconds_after_finished(&self) -> Option<i32> {
        match self {
            Self::Inventory | Self::Unlock => Some(3600),
            Self::Wipe | Self::Check { .. } | Self::Forget { .. } => None,
        }
    }

    /// The label its Jobs carry, with the Repository's name as value.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Wipe => "cairn.dev/wipe-out",
            Self::Inventory => "cairn.dev/inventory",
            Self::Check { .. } => "cairn.dev/check",
            Self::Forget { .. } => "cairn.dev/forget",
            Self::Unlock => "cairn.dev/unlock",
        }
    }
}

/// The Job of a Repository's own `work`: `cairn-agent <work>` with the storage Secret's keys,
/// and the local volume for a local backend. Same security defaults as every other Job; no API
/// access.
pub fn resolve_repository_job(
    repo: &Repository,
    work: &RepositoryWork,
    install: &InstallSettings,
) -> Result<JobTemplateSpec, ResolveError> {
    let backend = &repo.spec.backend;
    let name = repo.meta().name.clone().unwrap_or_default();
    if backend.provider().is_none() {
        return Err(ResolveError::NoProvider { name });
    }
    let pod_spec = repository_pod_spec(backend, work, install);
    // A Repository admitted without the webhook (or under a looser install) may name a volume
    // the install does not allow: the Job mounts it read-write, so it is refused like any Job.
    let reasons: Vec<String> = pod_security::check_pod(None, &pod_spec)
        .into_iter()
        .filter(|v| v.applies_at(install.policy.job_pod_security))
        .map(|v| format!("the {} Job's pod {v}", work.subcommand()))
        .collect();
    if !reasons.is_empty() {
        return Err(ResolveError::Refused {
            invoker: format!(
                "Repository {}/{name}",
                repo.meta().namespace.as_deref().unwrap_or_default()
            ),
            reasons,
        });
    }
    let labels = BTreeMap::from([
        (LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string()),
        (work.label().to_string(), label_value(&name)),
    ]);
    Ok(JobTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels.clone()),
            ..Default::default()
        }),
        spec: Some(JobSpec {
            backoff_limit: Some(work.backoff_limit()),
            ttl_seconds_after_finished: work.ttl_seconds_after_finished(),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(pod_spec),
            },
            ..Default::default()
        }),
    })
}

/// A Repository Job's pod: one `cairn-agent <work>` container, its temp dir and a local
/// backend's volume.
fn repository_pod_spec(
    backend: &Backend,
    work: &RepositoryWork,
    install: &InstallSettings,
) -> PodSpec {
    let mut mounts = vec![mount(VOL_TMP, TMP_DIR, false)];
    let mut volumes = vec![Volume {
        name: VOL_TMP.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }];
    if let Some(local) = &backend.local {
        mounts.push(mount(VOL_REPOSITORY, &local.mount_path, false));
        volumes.push(local.volume(VOL_REPOSITORY));
    }
    let container = Container {
        name: work.subcommand().to_string(),
        image: Some(install.agent_image.clone()),
        image_pull_policy: install.image_pull_policy.clone(),
        command: Some(vec!["cairn-agent".to_string()]),
        args: Some(repository_args(backend, work)),
        env: Some(vec![
            EnvVar {
                name: "CAIRN_TMP_DIR".into(),
                value: Some(TMP_DIR.into()),
                value_from: None,
            },
            EnvVar {
                name: "HOME".into(),
                value: Some(TMP_DIR.into()),
                value_from: None,
            },
        ]),
        env_from: Some(vec![EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: backend.storage_secret_name.clone(),
                optional: Some(false),
            }),
            ..Default::default()
        }]),
        volume_mounts: Some(mounts),
        security_context: Some(pod_security::container_context([])),
        termination_message_path: Some(crate::result::TERMINATION_LOG.to_string()),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    PodSpec {
        containers: vec![container],
        volumes: Some(volumes),
        restart_policy: Some("Never".to_string()),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        security_context: Some(pod_security::pod_context(None)),
        ..Default::default()
    }
}

/// `cairn-agent <work>` with the repository's URL (and an S3 backend's region and TLS setting).
fn repository_args(backend: &Backend, work: &RepositoryWork) -> Vec<String> {
    let mut args = vec![
        work.subcommand().to_string(),
        format!("--repository={}", repository_url(backend)),
    ];
    match work {
        RepositoryWork::Check { read_data_subset } => {
            args.push(format!("--read-data-subset={read_data_subset}"));
        }
        RepositoryWork::Forget { snapshot } => args.push(format!("--snapshot={snapshot}")),
        RepositoryWork::Wipe | RepositoryWork::Inventory | RepositoryWork::Unlock => {}
    }
    if let Some(s3) = &backend.s3 {
        if let Some(region) = s3.region.as_deref().filter(|r| !r.is_empty()) {
            args.push(format!("--region={region}"));
        }
        args.push(format!(
            "--insecure-tls={}",
            s3.insecure_tls.unwrap_or(false)
        ));
    }
    args
}
