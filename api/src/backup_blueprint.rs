//! The BackupBlueprint kind (Stash's auto-backup): a cluster-scoped template of a Repository and a
//! BackupConfiguration. An AppBinding annotated with a blueprint's name gets both, in its own
//! namespace, made here from the blueprint by [`BackupBlueprint::generate`]; the controller
//! (`controller/src/blueprint.rs`) applies them and keeps them in step.
//!
//! Variables (`${TARGET_NAMESPACE}`, `${TARGET_NAME}`, ...) are resolved in the backend and the
//! Task's name, with the resolver's own table of an AppBinding's variables
//! ([`crate::resolve::app_variables`]) and [`crate::vars`]' substitution, plus Stash's blueprint
//! names ([`BLUEPRINT_VARIABLES`]).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, OwnerReference};
use kube::{CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::backup_configuration::{BackupConfigurationSpec, RetryConfig};
use crate::common::{
    BackupTarget, EmptyDirSettings, ObjectReference, PersistentVolumeClaimTemplate,
    RetentionPolicy, RuntimeSettings, TargetRef, TaskRef,
};
use crate::repository::{Backend, Provider, RepositorySpec, UsagePolicy};
use crate::{AppBinding, BackupConfiguration, Repository};

/// cairn's annotation on an AppBinding naming the blueprint to back it up with.
pub const ANNOTATION_BLUEPRINT: &str = "blueprint.cairn.dev/name";
/// Stash's annotation naming the blueprint, read as well (cairn's wins when both are set).
pub const STASH_ANNOTATION_BLUEPRINT: &str = "stash.appscode.com/backup-blueprint";
/// cairn's annotation overriding the blueprint's schedule for one AppBinding.
pub const ANNOTATION_SCHEDULE: &str = "blueprint.cairn.dev/schedule";
/// Stash's schedule annotation, read as well.
pub const STASH_ANNOTATION_SCHEDULE: &str = "stash.appscode.com/schedule";
/// Label on every generated object: the blueprint it was made from.
pub const LABEL_BLUEPRINT: &str = "cairn.dev/blueprint";
/// The variable a blueprint's storage location must use, so tenants never share a repository.
pub const NAMESPACE_VARIABLE: &str = "TARGET_NAMESPACE";

/// The variables only a blueprint has (Stash's), on top of an AppBinding's `TARGET_*`.
pub const BLUEPRINT_VARIABLES: &[&str] = &[
    "TARGET_API_VERSION",
    "TARGET_RESOURCE",
    "TARGET_APP_GROUP",
    "TARGET_APP_RESOURCE",
];

/// A template of the Repository and BackupConfiguration of every AppBinding that names it.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "BackupBlueprint",
    status = "BackupBlueprintStatus",
    shortname = "bb",
    category = "cairn",
    category = "backup",
    derive = "PartialEq",
    derive = "Default",
    doc = "BackupBlueprint is a template of a Repository and a BackupConfiguration: every AppBinding annotated with blueprint.cairn.dev/name (or stash.appscode.com/backup-blueprint) gets both, in its namespace, owned by it.",
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule of the generated configurations"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupBlueprintSpec {
    /// The generated Repository's backend. Its prefix (or `local.subPath`, or `rest.url`) must
    /// use `${TARGET_NAMESPACE}`; it may use `${TARGET_NAME}`, `${TARGET_KIND}`,
    /// `${TARGET_APP_RESOURCE}` and the other target variables. The storage Secret must exist
    /// in each AppBinding's namespace.
    pub backend: Backend,
    /// Ignored: a generated Repository never deletes data (`wipeOut: false`), so removing an
    /// annotation cannot delete a backup. Kept so Stash's blueprints apply unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe_out: Option<bool>,
    /// The generated Repository's usage policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_policy: Option<UsagePolicy>,
    /// Cron schedule of the generated BackupConfiguration; an AppBinding's
    /// `blueprint.cairn.dev/schedule` (or `stash.appscode.com/schedule`) annotation overrides it.
    pub schedule: String,
    /// The Task; its name may use `${TARGET_APP_VERSION}` and the other target variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// Which snapshots to keep after each successful backup.
    pub retention_policy: RetentionPolicy,
    /// Settings of the backup Job's pod and containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<RuntimeSettings>,
    /// The scratch directory of every Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<EmptyDirSettings>,
    /// A PersistentVolumeClaim template for each session's staging volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_volume_template: Option<PersistentVolumeClaimTemplate>,
    /// Completed sessions to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_history_limit: Option<i32>,
    /// Longest a session may run, e.g. `30m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    /// How failed sessions are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_config: Option<RetryConfig>,
}

/// What the controller last observed of the AppBindings using a blueprint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupBlueprintStatus {
    /// `NameClash` (True when an object of a generated name exists that cairn did not make:
    /// it is left alone, and that AppBinding gets nothing) and `Resolved` (False when a
    /// target's variables do not resolve).
    /// A map list keyed by `type`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The AppBindings naming this blueprint, and what became of each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BlueprintTarget>,
}

/// One AppBinding naming a blueprint.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BlueprintTarget {
    /// Namespace of the AppBinding.
    pub namespace: String,
    /// Name of the AppBinding.
    pub name: String,
    /// True when its Repository and BackupConfiguration are made from this blueprint.
    pub generated: bool,
    /// Why they are not: `NameClash` or `Unresolved`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What is in the way, and what to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Why a blueprint makes nothing for a target.
pub const REASON_NAME_CLASH: &str = "NameClash";
/// A variable of the blueprint does not resolve for a target.
pub const REASON_UNRESOLVED: &str = "Unresolved";

/// The Repository and BackupConfiguration a blueprint makes for one AppBinding.
#[derive(Clone, Debug, PartialEq)]
pub struct Generated {
    pub repository: Repository,
    pub configuration: BackupConfiguration,
}

/// The blueprint an AppBinding names, if any: cairn's annotation, else Stash's.
pub fn blueprint_of(app: &AppBinding) -> Option<&str> {
    annotation(app, ANNOTATION_BLUEPRINT, STASH_ANNOTATION_BLUEPRINT)
}

fn annotation<'a>(app: &'a AppBinding, ours: &str, stash: &str) -> Option<&'a str> {
    let a = app.annotations();
    a.get(ours)
        .or_else(|| a.get(stash))
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

/// Name of both generated objects of an AppBinding (Stash's: `app-<name>`).
pub fn generated_name(app_name: &str) -> String {
    format!("app-{app_name}")
}

/// The AppBinding whose generated objects carry `name`, if it is such a name.
pub fn app_of_generated(name: &str) -> Option<&str> {
    name.strip_prefix("app-")
}

/// Whether `obj` was generated for `app`: it has the generated label and `app` is its
/// controlling owner (same UID). cairn touches nothing else.
pub fn generated_for(obj: &impl Resource, app: &AppBinding) -> bool {
    let uid = app.metadata.uid.as_deref();
    obj.labels().contains_key(LABEL_BLUEPRINT)
        && obj
            .owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

impl BackupBlueprint {
    /// The variables of `app` for this blueprint: the resolver's `TARGET_*` of an AppBinding
    /// and Stash's blueprint-only ones.
    pub fn variables(app: &AppBinding) -> BTreeMap<String, String> {
        let namespace = app.namespace().unwrap_or_default();
        let mut v = BTreeMap::new();
        crate::resolve::app_variables(&mut v, "AppBinding", &app.name_any(), &namespace, app);
        let app_type = app.spec.r#type.clone().unwrap_or_default();
        let (group, resource) = app_type.split_once('/').unwrap_or(("", &app_type));
        for (name, value) in [
            (
                "TARGET_API_VERSION",
                AppBinding::api_version(&()).to_string(),
            ),
            ("TARGET_RESOURCE", AppBinding::plural(&()).to_string()),
            ("TARGET_APP_GROUP", group.to_string()),
            ("TARGET_APP_RESOURCE", resource.to_string()),
        ] {
            v.insert(name.to_string(), value);
        }
        v
    }

    /// The storage location as written, with its field: the provider's prefix, a local
    /// volume's `subPath`, or a REST server's URL.
    pub fn location(&self) -> (String, &str) {
        let b = &self.spec.backend;
        match b.provider() {
            Some(Provider::Local) => (
                "spec.backend.local.subPath".into(),
                b.local
                    .as_ref()
                    .and_then(|l| l.sub_path.as_deref())
                    .unwrap_or(""),
            ),
            Some(Provider::Rest) => (
                "spec.backend.rest.url".into(),
                b.rest.as_ref().map(|r| r.url.as_str()).unwrap_or(""),
            ),
            Some(p) => (
                format!("spec.backend.{}.prefix", p.as_str()),
                b.prefix().unwrap_or(""),
            ),
            None => ("spec.backend".into(), ""),
        }
    }

    /// Whether the storage location names the target's namespace, so no two namespaces'
    /// targets can share a repository.
    pub fn location_has_namespace(&self) -> bool {
        crate::vars::referenced(self.location().1)
            .is_ok_and(|names| names.contains(&NAMESPACE_VARIABLE))
    }

    /// The Repository and BackupConfiguration of `app`, named [`generated_name`], labelled
    /// and owned by `app`. Errors name the blueprint's field and the variable.
    pub fn generate(&self, app: &AppBinding) -> Result<Generated, Vec<String>> {
        let vars = Self::variables(app);
        let mut tree = serde_json::json!({
            "backend": self.spec.backend,
            "task": self.spec.task.as_ref().and_then(|t| t.name.clone()),
        });
        crate::vars::substitute_json(&mut tree, &vars).map_err(|errors| {
            errors
                .into_iter()
                .map(|(path, e)| format!("spec.{path}: {e}"))
                .collect::<Vec<_>>()
        })?;
        let backend: Backend = serde_json::from_value(tree["backend"].take())
            .map_err(|e| vec![format!("spec.backend: {e}")])?;
        let name = generated_name(&app.name_any());
        if !crate::naming::is_dns_subdomain(&name) {
            return Err(vec![format!(
                "the generated name {name:?} is longer than {} characters: use a shorter AppBinding name",
                crate::naming::MAX_SUBDOMAIN_LEN
            )]);
        }
        let repository = Repository {
            metadata: self.generated_metadata(app, &name),
            spec: RepositorySpec {
                driver: None,
                backend,
                // Removing an annotation (or the AppBinding) must never delete data.
                wipe_out: Some(false),
                usage_policy: self.spec.usage_policy.clone(),
                integrity_check: None,
            },
            status: None,
        };
        let configuration = BackupConfiguration {
            metadata: self.generated_metadata(app, &name),
            spec: self.configuration_spec(app, &name, tree["task"].as_str()),
            status: None,
        };
        Ok(Generated {
            repository,
            configuration,
        })
    }

    fn configuration_spec(
        &self,
        app: &AppBinding,
        name: &str,
        task_name: Option<&str>,
    ) -> BackupConfigurationSpec {
        let s = &self.spec;
        let schedule =
            annotation(app, ANNOTATION_SCHEDULE, STASH_ANNOTATION_SCHEDULE).unwrap_or(&s.schedule);
        let task = s.task.as_ref().map(|t| TaskRef {
            name: task_name.map(str::to_string),
            params: t.params.clone(),
        });
        BackupConfigurationSpec {
            schedule: schedule.to_string(),
            repository: ObjectReference {
                name: name.to_string(),
                namespace: app.namespace(),
            },
            target: BackupTarget {
                r#ref: TargetRef {
                    api_version: AppBinding::api_version(&()).to_string(),
                    kind: "AppBinding".into(),
                    name: app.name_any(),
                    namespace: None,
                },
                ..Default::default()
            },
            task,
            retention_policy: s.retention_policy.clone(),
            runtime_settings: s.runtime_settings.clone(),
            temp_dir: s.temp_dir.clone(),
            interim_volume_template: s.interim_volume_template.clone(),
            backup_history_limit: s.backup_history_limit,
            time_out: s.time_out.clone(),
            retry_config: s.retry_config.clone(),
            ..Default::default()
        }
    }

    /// Name, namespace, the generated labels and `app` as controlling owner (so deleting the
    /// AppBinding deletes them; no `blockOwnerDeletion`, which needs rights on AppBindings).
    fn generated_metadata(&self, app: &AppBinding, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_string()),
            namespace: app.namespace(),
            labels: Some(BTreeMap::from([
                (LABEL_BLUEPRINT.to_string(), self.name_any()),
                (
                    crate::naming::LABEL_MANAGED_BY.to_string(),
                    crate::naming::MANAGED_BY.to_string(),
                ),
            ])),
            owner_references: Some(vec![OwnerReference {
                api_version: AppBinding::api_version(&()).to_string(),
                kind: AppBinding::kind(&()).to_string(),
                name: app.name_any(),
                uid: app.metadata.uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: None,
            }]),
            ..Default::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn blueprint(prefix: &str) -> BackupBlueprint {
        serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupBlueprint",
            "metadata": {"name": "es-daily"},
            "spec": {
                "backend": {"storageSecretName": "s3-secret",
                            "s3": {"bucket": "backups", "prefix": prefix}},
                "wipeOut": true,
                "schedule": "0 3 * * *",
                "task": {"name": "elasticsearch-backup-${TARGET_APP_VERSION:=7}", "params": [{"name": "args", "value": "${KEEP}"}]},
                "retentionPolicy": {"name": "keep", "keepLast": 5}
            }
        }))
        .unwrap()
    }

    fn app(ns: &str, annotations: Value) -> AppBinding {
        serde_json::from_value(json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": "es", "namespace": ns, "uid": "u-1", "annotations": annotations},
            "spec": {"type": "kubedb.com/elasticsearch", "clientConfig": {"url": "http://es:9200"}}
        }))
        .unwrap()
    }

    #[test]
    fn generates_both_objects_in_the_apps_namespace() {
        let bp = blueprint("cairn/${TARGET_NAMESPACE}/${TARGET_APP_RESOURCE}/${TARGET_NAME}");
        let app = app("team-a", json!({STASH_ANNOTATION_BLUEPRINT: "es-daily"}));
        assert_eq!(blueprint_of(&app), Some("es-daily"));
        let g = bp.generate(&app).unwrap();
        let s3 = g.repository.spec.backend.s3.as_ref().unwrap();
        assert_eq!(s3.prefix.as_deref(), Some("cairn/team-a/elasticsearch/es"));
        assert_eq!(g.repository.spec.wipe_out, Some(false), "never wipes");
        assert_eq!(g.repository.name_any(), "app-es");
        assert_eq!(g.repository.namespace().as_deref(), Some("team-a"));
        let c = &g.configuration.spec;
        assert_eq!(c.repository.name, "app-es");
        assert_eq!(c.repository.namespace.as_deref(), Some("team-a"));
        assert_eq!(c.target.r#ref.name, "es");
        // Only the Task's name is a template; params are left for the Job's resolver.
        let task = c.task.as_ref().unwrap();
        assert_eq!(task.name.as_deref(), Some("elasticsearch-backup-7"));
        assert_eq!(task.params[0].value, "${KEEP}");
        assert!(generated_for(&g.configuration, &app));
        let mut other = app.clone();
        other.metadata.uid = Some("u-2".into());
        assert!(
            !generated_for(&g.configuration, &other),
            "another AppBinding's"
        );
    }

    #[test]
    fn annotations_choose_blueprint_and_schedule() {
        let bp = blueprint("${TARGET_NAMESPACE}");
        let app = app(
            "a",
            json!({ANNOTATION_BLUEPRINT: "ours", STASH_ANNOTATION_BLUEPRINT: "stash",
                   STASH_ANNOTATION_SCHEDULE: "*/5 * * * *"}),
        );
        assert_eq!(blueprint_of(&app), Some("ours"));
        let g = bp.generate(&app).unwrap();
        assert_eq!(g.configuration.spec.schedule, "*/5 * * * *");
        assert_eq!(blueprint_of(&self::app("a", json!({}))), None);
    }

    #[test]
    fn location_must_name_the_namespace() {
        assert!(blueprint("x/${TARGET_NAMESPACE}/${TARGET_NAME}").location_has_namespace());
        assert!(!blueprint("x/${TARGET_NAME}").location_has_namespace());
        assert!(!blueprint("x/TARGET_NAMESPACE").location_has_namespace());
        assert_eq!(blueprint("p").location().0, "spec.backend.s3.prefix");
    }

    #[test]
    fn an_unknown_variable_names_its_field() {
        let errors = blueprint("${TARGET_NAMESPACE}/${NOPE}")
            .generate(&app("a", json!({})))
            .unwrap_err();
        assert!(
            errors[0].starts_with("spec.backend.s3.prefix: "),
            "{errors:?}"
        );
        assert!(errors[0].contains("NOPE"), "{errors:?}");
    }
}
