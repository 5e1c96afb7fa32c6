//! Defaulting (`shared/spec/admission.md`, "Default"): pure functions that fill in what a user
//! left out, and the JSON patch the mutating webhook returns. Every default only fills an empty
//! field, so defaulting a defaulted object changes nothing and GitOps tools see no drift.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSecurityContext;
use kube::Resource;
use serde::Serialize;

use crate::appbinding::AppBinding;
use crate::backup_session::BackupSession;
use crate::common::{ObjectReference, PersistentVolumeClaimTemplate, RuntimeSettings, TaskRef};
use crate::dereference::References;
use crate::naming::{LABEL_INVOKER_KIND, LABEL_INVOKER_NAME};
use crate::repository::{AllowedNamespaces, FromNamespaces, UsagePolicy};
use crate::validation::Lookups;
use crate::{BackupConfiguration, Repository, RestoreSession};

/// The restic host name of a target when `alias` is empty.
pub const DEFAULT_ALIAS: &str = "host-0";
/// Completed sessions kept per configuration when `backupHistoryLimit` is unset.
pub const DEFAULT_BACKUP_HISTORY_LIMIT: i32 = 1;
/// Retries of a failed session when `retryConfig.maxRetry` is unset.
pub const DEFAULT_MAX_RETRY: i32 = 1;
/// Time zone of schedules when `timeZone` is unset.
pub const DEFAULT_TIME_ZONE: &str = "UTC";
/// How late a missed slot may still start, when `startingDeadlineSeconds` is unset.
pub const DEFAULT_STARTING_DEADLINE_SECONDS: i64 = 300;
/// The user the agent runs as; the interim volume must be writable by its group.
pub const AGENT_UID: i64 = 65534;

/// The Tasks of the installed catalog, used when neither the object nor its AppBinding names one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CatalogDefaults {
    pub backup_task: String,
    pub restore_task: String,
    /// The Tasks for a Repository with `driver: Native` (the server's snapshot API).
    pub snapshot_task: String,
    pub snapshot_restore_task: String,
}

impl CatalogDefaults {
    /// This catalog's Task for one of Stash's versioned catalog names, which Stash manifests
    /// and KubeDB's AppBindings (`stash.addon.*Task.name`) carry: `elasticsearch-backup-7.3.2`,
    /// `elasticsearch-restore-7.3.2-v6`, `opensearch-backup-2.5.0`, ... cairn's one agent reads
    /// every version, so each maps to the catalog's Task of its direction. `None` for any other
    /// name.
    pub fn stash_task(&self, name: &str) -> Option<&str> {
        let rest = name
            .strip_prefix("elasticsearch-")
            .or_else(|| name.strip_prefix("opensearch-"))?;
        let (task, version) = if let Some(v) = rest.strip_prefix("backup-") {
            (&self.backup_task, v)
        } else {
            (&self.restore_task, rest.strip_prefix("restore-")?)
        };
        let versioned = version.starts_with(|c: char| c.is_ascii_digit())
            && version
                .chars()
                .all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == 'v');
        versioned.then_some(task.as_str())
    }
}

impl Default for CatalogDefaults {
    fn default() -> Self {
        Self {
            backup_task: "elasticsearch-backup".into(),
            restore_task: "elasticsearch-restore".into(),
            snapshot_task: "elasticsearch-snapshot".into(),
            snapshot_restore_task: "elasticsearch-snapshot-restore".into(),
        }
    }
}

/// Whether a Task backs up or restores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    Backup,
    Restore,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Restore => "restore",
        }
    }

    /// Stash's name of the hook that runs before the work: `preBackup` or `preRestore`.
    pub fn pre_hook_name(self) -> &'static str {
        match self {
            Self::Backup => "preBackup",
            Self::Restore => "preRestore",
        }
    }

    /// Stash's name of the hook that runs after the work: `postBackup` or `postRestore`.
    pub fn post_hook_name(self) -> &'static str {
        match self {
            Self::Backup => "postBackup",
            Self::Restore => "postRestore",
        }
    }
}

/// The Task an AppBinding's `spec.parameters` names for a direction, in Stash's shape
/// (`stash.addon.backupTask.name` / `stash.addon.restoreTask.name`).
pub fn app_binding_task(app: &AppBinding, direction: Direction) -> Option<String> {
    let key = match direction {
        Direction::Backup => "backupTask",
        Direction::Restore => "restoreTask",
    };
    app.spec
        .parameters
        .as_ref()?
        .pointer(&format!("/stash/addon/{key}/name"))?
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

/// The Task to use when `task.name` is empty: for a native Repository the catalog's snapshot
/// Task (an AppBinding's Task is Stash's logical one, which a native Repository cannot run);
/// otherwise the AppBinding's, else the catalog's.
pub fn default_task_name(
    app: Option<&AppBinding>,
    repository: Option<&Repository>,
    direction: Direction,
    catalog: &CatalogDefaults,
) -> String {
    let native =
        repository.is_some_and(|r| r.spec.driver() == crate::native::StorageDriver::Native);
    match direction {
        Direction::Backup if native => catalog.snapshot_task.clone(),
        Direction::Restore if native => catalog.snapshot_restore_task.clone(),
        _ => app
            .and_then(|a| app_binding_task(a, direction))
            .unwrap_or_else(|| match direction {
                Direction::Backup => catalog.backup_task.clone(),
                Direction::Restore => catalog.restore_task.clone(),
            }),
    }
}

/// Defaults of a Repository: `usagePolicy.allowedNamespaces.from: Same`. Prefixes are kept as
/// written (re-applying must be a no-op) and used without leading or trailing `/`
/// ([`Backend::prefix`](crate::repository::Backend::prefix)).
pub fn default_repository(repo: &mut Repository) {
    let policy = repo
        .spec
        .usage_policy
        .get_or_insert_with(UsagePolicy::default);
    let allowed = policy
        .allowed_namespaces
        .get_or_insert_with(AllowedNamespaces::default);
    allowed.from.get_or_insert(FromNamespaces::Same);
}

fn default_repository_ref(repo: &mut ObjectReference, own_namespace: Option<&str>) {
    let ns = repo.namespace_or(own_namespace.unwrap_or_default());
    repo.namespace = (!ns.is_empty()).then(|| ns.to_string());
}

fn default_alias(alias: &mut Option<String>) {
    if alias.as_deref().is_none_or(str::is_empty) {
        *alias = Some(DEFAULT_ALIAS.to_string());
    }
}

/// The Task's name `refs` gets, once the Repository it depends on is known: written while the
/// Repository is missing, a restic default would stay when a native Repository came after it
/// (a GitOps apply in any order), and every later update would be refused for a field the user
/// never wrote. Left unset, the name is taken where it is used ([`crate::dereference`]).
fn default_task(
    refs: &References<'_>,
    lookups: &dyn Lookups,
    catalog: &CatalogDefaults,
) -> Option<String> {
    let namespace = refs.repository.namespace_or(refs.namespace);
    let repository = lookups.repository(namespace, &refs.repository.name)?;
    let app = lookups.app_binding(refs.namespace, refs.target);
    Some(TaskRef::name_or_default(
        refs.task,
        app.as_deref(),
        Some(&repository),
        refs.direction,
        catalog,
    ))
}

/// Sets `task.name` to `name`, if any.
fn set_task(task: &mut Option<TaskRef>, name: Option<String>) {
    if let Some(name) = name {
        task.get_or_insert_with(TaskRef::default).name = Some(name);
    }
}

/// `accessModes: [ReadWriteOnce]` for an interim volume without access modes, and
/// `fsGroup: 65534` when no fsGroup is set: the agent runs as a non-root user and must be able
/// to write the volume (Stash users hit exactly this).
fn default_interim_volume(
    template: &mut Option<PersistentVolumeClaimTemplate>,
    runtime: &mut Option<RuntimeSettings>,
) {
    let Some(template) = template else { return };
    if template
        .spec
        .access_modes
        .as_ref()
        .is_none_or(|m| m.is_empty())
    {
        template.spec.access_modes = Some(vec!["ReadWriteOnce".to_string()]);
    }
    let pod = runtime
        .get_or_insert_with(RuntimeSettings::default)
        .pod
        .get_or_insert_with(Default::default);
    let sc = pod
        .security_context
        .get_or_insert_with(PodSecurityContext::default);
    sc.fs_group.get_or_insert(AGENT_UID);
}

/// Defaults of a BackupConfiguration. `lookups` gives the AppBinding, whose parameters may
/// name the backup Task.
pub fn default_backup_configuration(
    config: &mut BackupConfiguration,
    lookups: &dyn Lookups,
    catalog: &CatalogDefaults,
) {
    let task = default_task(&References::from(&*config), lookups, catalog);
    let namespace = config.meta().namespace.clone();
    let spec = &mut config.spec;
    if spec.time_zone.as_deref().is_none_or(str::is_empty) {
        spec.time_zone = Some(DEFAULT_TIME_ZONE.to_string());
    }
    spec.backup_history_limit
        .get_or_insert(DEFAULT_BACKUP_HISTORY_LIMIT);
    spec.retry_config
        .get_or_insert_with(Default::default)
        .max_retry
        .get_or_insert(DEFAULT_MAX_RETRY);
    spec.starting_deadline_seconds
        .get_or_insert(DEFAULT_STARTING_DEADLINE_SECONDS);
    default_repository_ref(&mut spec.repository, namespace.as_deref());
    default_alias(&mut spec.target.alias);
    set_task(&mut spec.task, task);
    default_interim_volume(
        &mut spec.interim_volume_template,
        &mut spec.runtime_settings,
    );
}

/// Defaults of a BackupSession at CREATE: the invoker labels, and `retryLeft` from the
/// invoker's `retryConfig.maxRetry`. (The Job template is resolved separately.)
pub fn default_backup_session(session: &mut BackupSession, lookups: &dyn Lookups) {
    let namespace = session.meta().namespace.clone().unwrap_or_default();
    let invoker = session.spec.invoker.clone();
    let labels = session.meta_mut().labels.get_or_insert_with(BTreeMap::new);
    labels
        .entry(LABEL_INVOKER_KIND.to_string())
        .or_insert_with(|| invoker.kind.clone());
    labels
        .entry(LABEL_INVOKER_NAME.to_string())
        .or_insert_with(|| crate::naming::label_value(&invoker.name));
    if session.spec.retry_left.is_none()
        && let Some(config) = lookups.backup_configuration(&namespace, &invoker.name)
    {
        session.spec.retry_left = Some(config.max_retry());
    }
}

impl BackupConfiguration {
    /// `retryConfig.maxRetry`, or its default: the most retries any of its sessions gets.
    pub fn max_retry(&self) -> i32 {
        self.spec
            .retry_config
            .as_ref()
            .and_then(|r| r.max_retry)
            .unwrap_or(DEFAULT_MAX_RETRY)
    }
}

/// Defaults of a RestoreSession at CREATE: the repository namespace, the alias and the Task
/// (deprecated `spec.rules` stays where it was written: see [`RestoreSessionSpec::rules`]).
pub fn default_restore_session(
    restore: &mut RestoreSession,
    lookups: &dyn Lookups,
    catalog: &CatalogDefaults,
) {
    let task = default_task(&References::from(&*restore), lookups, catalog);
    let namespace = restore.meta().namespace.clone();
    let spec = &mut restore.spec;
    default_repository_ref(&mut spec.repository, namespace.as_deref());
    default_alias(&mut spec.target.alias);
    set_task(&mut spec.task, task);
    default_interim_volume(
        &mut spec.interim_volume_template,
        &mut spec.runtime_settings,
    );
}

/// The JSON patch that turns `before` into `after`, as the mutating webhook returns it.
/// Both are serialized the same way, so fields the user wrote that the types drop on
/// serialization (such as an explicit `null`) are left alone rather than removed.
pub fn patch<T: Serialize>(before: &T, after: &T) -> Result<json_patch::Patch, serde_json::Error> {
    let before = serde_json::to_value(before)?;
    let after = serde_json::to_value(after)?;
    Ok(json_patch::diff(&before, &after))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validation::LookupTable;
    use serde_json::json;

    fn bc() -> BackupConfiguration {
        serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
            "metadata": {"name": "es", "namespace": "demo"},
            "spec": {
                "schedule": "*/30 * * * *",
                "repository": {"name": "s3-repo"},
                "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
                "retentionPolicy": {"name": "keep-5", "keepLast": 5, "prune": true},
                "interimVolumeTemplate": {"metadata": {"name": "stash-tmp"}, "spec": {"resources": {"requests": {"storage": "1Gi"}}}}
            }
        }))
        .expect("valid object")
    }

    /// The Repository `bc()` names (driver Restic).
    fn s3_repo() -> Repository {
        let mut repo = Repository::new("s3-repo", Default::default());
        repo.metadata.namespace = Some("demo".into());
        repo
    }

    fn with_repo(lookups: LookupTable) -> LookupTable {
        let mut lookups = lookups;
        lookups
            .repositories
            .insert(("demo".into(), "s3-repo".into()), s3_repo().into());
        lookups
    }

    #[test]
    fn backup_configuration_defaults() {
        let mut c = bc();
        let lookups = with_repo(LookupTable::default());
        default_backup_configuration(&mut c, &lookups, &CatalogDefaults::default());
        let s = &c.spec;
        assert_eq!(s.time_zone.as_deref(), Some("UTC"));
        assert_eq!(s.backup_history_limit, Some(1));
        assert_eq!(s.retry_config.as_ref().and_then(|r| r.max_retry), Some(1));
        assert_eq!(s.starting_deadline_seconds, Some(300));
        assert_eq!(s.repository.namespace.as_deref(), Some("demo"));
        assert_eq!(s.target.alias.as_deref(), Some("host-0"));
        assert_eq!(
            s.task.as_ref().and_then(|t| t.name.as_deref()),
            Some("elasticsearch-backup")
        );
        let tpl = s.interim_volume_template.as_ref().expect("template");
        assert_eq!(
            tpl.spec.access_modes,
            Some(vec!["ReadWriteOnce".to_string()])
        );
        let fs_group = s
            .runtime_settings
            .as_ref()
            .and_then(|r| r.pod.as_ref())
            .and_then(|p| p.security_context.as_ref())
            .and_then(|sc| sc.fs_group);
        assert_eq!(fs_group, Some(65534));
    }

    #[test]
    fn user_values_win_over_defaults() {
        let mut c = bc();
        c.spec.backup_history_limit = Some(5);
        c.spec.time_zone = Some("Europe/Berlin".into());
        c.spec.repository.namespace = Some("storage".into());
        c.spec.runtime_settings =
            serde_json::from_value(json!({"pod": {"securityContext": {"fsGroup": 1000}}})).ok();
        default_backup_configuration(&mut c, &LookupTable::default(), &CatalogDefaults::default());
        assert_eq!(c.spec.backup_history_limit, Some(5));
        assert_eq!(c.spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(c.spec.repository.namespace.as_deref(), Some("storage"));
        let fs_group = c
            .spec
            .runtime_settings
            .as_ref()
            .and_then(|r| r.pod.as_ref())
            .and_then(|p| p.security_context.as_ref())
            .and_then(|sc| sc.fs_group);
        assert_eq!(fs_group, Some(1000));
    }

    #[test]
    fn task_comes_from_the_app_binding_parameters() {
        let app: AppBinding = serde_json::from_value(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": "es", "namespace": "demo"},
            "spec": {"clientConfig": {"url": "http://es:9200"},
                     "parameters": {"stash": {"addon": {"backupTask": {"name": "es-backup-7"}, "restoreTask": {"name": "es-restore-7"}}}}}
        }))
        .expect("valid object");
        let lookups = with_repo(LookupTable::default().with_app_binding(app));
        let mut c = bc();
        default_backup_configuration(&mut c, &lookups, &CatalogDefaults::default());
        assert_eq!(
            c.spec.task.and_then(|t| t.name).as_deref(),
            Some("es-backup-7")
        );
    }

    #[test]
    fn stashs_versioned_task_names_map_to_the_catalog() {
        let c = CatalogDefaults::default();
        for (name, want) in [
            ("elasticsearch-backup-7.3.2", Some("elasticsearch-backup")),
            (
                "elasticsearch-backup-7.3.2-v6",
                Some("elasticsearch-backup"),
            ),
            ("elasticsearch-restore-8.2.0", Some("elasticsearch-restore")),
            ("opensearch-backup-2.5.0", Some("elasticsearch-backup")),
            ("elasticsearch-backup", None),
            ("elasticsearch-backup-latest", None),
            ("mongodb-backup-4.4.6", None),
            ("elasticsearch-backup-7.3.2;rm", None),
        ] {
            assert_eq!(c.stash_task(name), want, "{name}");
        }
    }

    #[test]
    fn defaulting_twice_gives_an_empty_patch_for_every_kind() {
        let lookups = with_repo(LookupTable::default().with_backup_configuration(bc()));
        let catalog = CatalogDefaults::default();

        let mut once = bc();
        default_backup_configuration(&mut once, &lookups, &catalog);
        let mut twice = once.clone();
        default_backup_configuration(&mut twice, &lookups, &catalog);
        assert!(patch(&once, &twice).expect("patch").0.is_empty());

        let mut repo: Repository = serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": "r", "namespace": "demo"},
            "spec": {"backend": {"storageSecretName": "s", "s3": {"bucket": "b", "prefix": "/a/b/"}}}
        }))
        .expect("valid object");
        let written = repo.clone();
        default_repository(&mut repo);
        // What the user wrote stays (a rewrite would show as drift on every apply); the prefix
        // is normalised where it is used.
        only_adds(&written, &repo);
        let s3 = |r: &Repository| r.spec.backend.s3.as_ref().and_then(|s| s.prefix.clone());
        assert_eq!(s3(&repo).as_deref(), Some("/a/b/"));
        assert_eq!(repo.spec.backend.prefix(), Some("a/b"));
        let mut again = repo.clone();
        default_repository(&mut again);
        assert!(patch(&repo, &again).expect("patch").0.is_empty());

        let mut bs: BackupSession = serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
            "metadata": {"name": "es-1", "namespace": "demo"},
            "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es"}}
        }))
        .expect("valid object");
        default_backup_session(&mut bs, &lookups);
        assert_eq!(bs.spec.retry_left, Some(1));
        let labels = bs.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(LABEL_INVOKER_NAME).map(String::as_str),
            Some("es")
        );
        let mut again = bs.clone();
        default_backup_session(&mut again, &lookups);
        assert!(patch(&bs, &again).expect("patch").0.is_empty());

        let mut rs: RestoreSession = serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession",
            "metadata": {"name": "r1", "namespace": "demo"},
            "spec": {"repository": {"name": "s3-repo"},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
                     "rules": [{"snapshots": ["latest"]}]}
        }))
        .expect("valid object");
        let written = rs.clone();
        default_restore_session(&mut rs, &lookups, &catalog);
        only_adds(&written, &rs);
        assert_eq!(
            rs.spec.rules.len(),
            1,
            "deprecated rules stay where written"
        );
        assert_eq!(rs.spec.rules().len(), 1, "and are the rules that apply");
        assert_eq!(
            rs.spec.task.as_ref().and_then(|t| t.name.as_deref()),
            Some("elasticsearch-restore")
        );
        let mut again = rs.clone();
        default_restore_session(&mut again, &lookups, &catalog);
        assert!(patch(&rs, &again).expect("patch").0.is_empty());
    }

    #[test]
    fn no_task_is_written_while_the_repository_is_missing() {
        let mut c = bc();
        default_backup_configuration(&mut c, &LookupTable::default(), &CatalogDefaults::default());
        assert_eq!(
            c.spec.task, None,
            "taken where it is used, once the driver is known"
        );
    }

    #[test]
    fn a_native_repository_defaults_to_the_snapshot_tasks() {
        let mut repo = Repository::new("s3-repo", Default::default());
        repo.metadata.namespace = Some("demo".into());
        repo.spec.driver = Some(crate::native::StorageDriver::Native);
        let mut lookups = LookupTable::default();
        lookups
            .repositories
            .insert(("demo".into(), "s3-repo".into()), repo.into());
        let catalog = CatalogDefaults::default();
        let mut c = bc();
        default_backup_configuration(&mut c, &lookups, &catalog);
        assert_eq!(
            c.spec.task.and_then(|t| t.name).as_deref(),
            Some("elasticsearch-snapshot")
        );
        let mut rs: RestoreSession = serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession",
            "metadata": {"name": "r1", "namespace": "demo"},
            "spec": {"repository": {"name": "s3-repo"},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}}}
        }))
        .expect("valid object");
        default_restore_session(&mut rs, &lookups, &catalog);
        assert_eq!(
            rs.spec.task.and_then(|t| t.name).as_deref(),
            Some("elasticsearch-snapshot-restore")
        );
    }

    /// Defaulting `written` into `defaulted` only adds fields.
    fn only_adds<T: Serialize>(written: &T, defaulted: &T) {
        let p = patch(written, defaulted).expect("patch");
        let text = serde_json::to_string(&p).expect("json");
        assert!(
            p.0.iter()
                .all(|op| matches!(op, json_patch::PatchOperation::Add(_))),
            "defaulting rewrote what was written: {text}"
        );
    }

    #[test]
    fn patch_adds_only_what_defaulting_filled() {
        let before = bc();
        let mut after = before.clone();
        default_backup_configuration(
            &mut after,
            &LookupTable::default(),
            &CatalogDefaults::default(),
        );
        let p = patch(&before, &after).expect("patch");
        let text = serde_json::to_string(&p).expect("json");
        assert!(text.contains("/spec/backupHistoryLimit"), "{text}");
        assert!(
            !text.contains("\"remove\""),
            "defaulting never removes: {text}"
        );
        // The patch applies to the object as the user sent it.
        let mut doc = serde_json::to_value(&before).expect("json");
        json_patch::patch(&mut doc, &p).expect("applies");
        assert_eq!(doc, serde_json::to_value(&after).expect("json"));
    }
}
