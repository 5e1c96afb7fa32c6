//! Types shared by several kinds: references, targets, Task references, retention, runtime
//! settings, scratch and interim volumes. Field names follow Stash's so its manifests keep working.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvFromSource, EnvVar, LocalObjectReference, PersistentVolumeClaimSpec,
    PodSecurityContext, ResourceRequirements, SecurityContext, Toleration,
    TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// API group of every cairn kind.
pub const GROUP: &str = "cairn.dev";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of every cairn kind.
pub const API_VERSION: &str = "cairn.dev/v1alpha1";

/// A reference to a namespaced object by name.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectReference {
    /// Name of the referenced object.
    pub name: String,
    /// Namespace of the referenced object. Defaults to the namespace of the referring object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

impl ObjectReference {
    /// The referenced object's namespace: `namespace`, or `default` (the referring object's
    /// namespace) when it is missing or empty.
    pub fn namespace_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.namespace
            .as_deref()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(default)
    }
}

/// A reference to the object to back up or restore into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// API version of the target, e.g. `appcatalog.appscode.com/v1alpha1`.
    pub api_version: String,
    /// Kind of the target. The supported kind is `AppBinding`.
    pub kind: String,
    /// Name of the target.
    pub name: String,
    /// Namespace of the target. Must be the namespace of the referring object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// What a BackupConfiguration backs up.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTarget {
    /// Name of the host in the repository's snapshots (restic `--host`). Defaults to `host-0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The database to back up: an AppBinding in the same namespace.
    #[serde(rename = "ref")]
    pub r#ref: TargetRef,
    /// Extra arguments passed to the agent (for example index include/exclude patterns).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
}

/// Where a RestoreSession restores into.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreTarget {
    /// Name of this host among the restore's target hosts. Defaults to `host-0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// The database to restore into: an AppBinding in the same namespace.
    #[serde(rename = "ref")]
    pub r#ref: TargetRef,
    /// Extra arguments passed to the agent (for example index selection and renaming).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Which snapshots, or which parts of them, each target host restores.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
}

/// One restore rule: which snapshots (or paths) to restore onto which hosts.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// Hosts this rule applies to. Empty means every host not named in another rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub target_hosts: Vec<String>,
    /// Host whose snapshots are restored. Defaults to the target host itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_host: Option<String>,
    /// The BackupConfiguration (of this namespace) whose snapshots are restored: `latest` is its
    /// newest snapshot. Needed after a disaster, when the configuration may be gone and several
    /// configurations of the namespace write the same host. Empty: any of this namespace's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_configuration: Option<String>,
    /// Snapshot ids (8 to 64 hex characters) or `latest`. Excludes `include`/`exclude`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<String>,
    /// Paths (or index patterns) to restore from the latest snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// Paths (or index patterns) to leave out of the restore.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// The Task that performs a backup or restore, with parameters for it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskRef {
    /// Name of the Task. Empty means: the AppBinding's default Task, else the catalog default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Parameters for the Task's variables; they override every other value of the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

impl TaskRef {
    /// The Task named by the user; `None` when `name` is missing or empty.
    pub fn given_name(&self) -> Option<&str> {
        self.name.as_deref().filter(|n| !n.is_empty())
    }

    /// The Task to run: the one `task` names, else the default for the Repository, the
    /// AppBinding and `direction` ([`crate::defaults::default_task_name`]).
    pub fn name_or_default(
        task: Option<&TaskRef>,
        app: Option<&crate::AppBinding>,
        repository: Option<&crate::Repository>,
        direction: crate::defaults::Direction,
        catalog: &crate::defaults::CatalogDefaults,
    ) -> String {
        task.and_then(TaskRef::given_name)
            .map(str::to_string)
            .unwrap_or_else(|| {
                crate::defaults::default_task_name(app, repository, direction, catalog)
            })
    }
}

/// A named value for a Task or Function variable.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Param {
    /// Name of the variable, as used in `${NAME}`.
    pub name: String,
    /// Value of the variable.
    pub value: String,
}

/// Which snapshots to keep after each successful backup (restic `forget` semantics).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicy {
    /// Name of the policy (used in logs and tags).
    pub name: String,
    /// Keep the last n snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<i64>,
    /// Keep the last snapshot of each of the last n hours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<i64>,
    /// Keep the last snapshot of each of the last n days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<i64>,
    /// Keep the last snapshot of each of the last n weeks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<i64>,
    /// Keep the last snapshot of each of the last n months.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<i64>,
    /// Keep the last snapshot of each of the last n years.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot that has one of these tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep_tags: Vec<String>,
    /// Remove the data no kept snapshot refers to (restic `prune`) after forgetting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<bool>,
    /// Only report what would be removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

impl RetentionPolicy {
    /// The `keep*` counts with their field names, in restic's order.
    pub fn keep_counts(&self) -> [(&'static str, Option<i64>); 6] {
        [
            ("keepLast", self.keep_last),
            ("keepHourly", self.keep_hourly),
            ("keepDaily", self.keep_daily),
            ("keepWeekly", self.keep_weekly),
            ("keepMonthly", self.keep_monthly),
            ("keepYearly", self.keep_yearly),
        ]
    }
}

/// Settings for the pod and the container of each backup or restore Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeSettings {
    /// Settings of the Job's pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRuntimeSettings>,
    /// Settings of the Job's containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerRuntimeSettings>,
}

/// Pod-level settings of a backup or restore Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRuntimeSettings {
    /// Labels added to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<BTreeMap<String, String>>,
    /// Annotations added to the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<BTreeMap<String, String>>,
    /// Node labels the pod must be scheduled on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    /// ServiceAccount the pod runs as. Its token is not mounted unless
    /// `automountServiceAccountToken` is true: the agent needs no Kubernetes API access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Mount the ServiceAccount token into the pod. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub automount_service_account_token: Option<bool>,
    /// Name of the node to run on, bypassing the scheduler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    /// Pod security context. Defaults meet the `restricted` Pod Security Standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,
    /// Secrets for pulling the images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_secrets: Option<Vec<LocalObjectReference>>,
    /// Scheduling constraints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Scheduler that places the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    /// Tolerations of node taints.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    /// PriorityClass of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Priority of the pod (set by the PriorityClass admission when a class is named).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// RuntimeClass of the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_class_name: Option<String>,
    /// Inject Service environment variables into the pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_service_links: Option<bool>,
    /// How the pod spreads across topology domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
}

/// Container-level settings of a backup or restore Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRuntimeSettings {
    /// CPU and memory requests and limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Container security context. Defaults meet the `restricted` Pod Security Standard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// CPU scheduling priority of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nice: Option<NiceSettings>,
    /// I/O scheduling class and priority of the agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ionice: Option<IoNiceSettings>,
    /// Extra environment variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<EnvVar>>,
    /// Extra environment variables from ConfigMaps or Secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_from: Option<Vec<EnvFromSource>>,
}

/// CPU scheduling priority (`nice`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NiceSettings {
    /// Niceness adjustment, -20 (most favourable) to 19 (least).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adjustment: Option<i32>,
}

/// I/O scheduling (`ionice`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IoNiceSettings {
    /// Scheduling class: 0 none, 1 realtime, 2 best-effort, 3 idle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<i32>,
    /// Priority within the class, 0 (highest) to 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_data: Option<i32>,
}

/// The scratch emptyDir mounted at `/cairn/tmp` in every Job.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EmptyDirSettings {
    /// Storage medium: empty for the node's disk, `Memory` for tmpfs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub medium: Option<String>,
    /// Largest size the scratch directory may grow to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_limit: Option<Quantity>,
    /// Do not keep the repository cache in the scratch directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_caching: Option<bool>,
}

/// Metadata of the interim PersistentVolumeClaim.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartialObjectMeta {
    /// Name of the template; each session's claim is named `<session>-<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Labels added to each claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations added to each claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A PersistentVolumeClaim template: each session gets its own claim, owned by the session,
/// where the agent stages the dump (or the download, for a restore).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PersistentVolumeClaimTemplate {
    /// Name, labels and annotations of the claims.
    #[serde(default)]
    pub metadata: PartialObjectMeta,
    /// Spec of the claims. `resources.requests.storage` is required.
    pub spec: PersistentVolumeClaimSpec,
}

impl PersistentVolumeClaimTemplate {
    /// The spec of a session's claim: only what admission lets a user choose (access modes,
    /// size, StorageClass, volume mode). A name or selector binding someone else's volume, or a
    /// data source, never reaches the claim, even for a template admitted without the webhook.
    pub fn claim_spec(&self) -> k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
        k8s_openapi::api::core::v1::PersistentVolumeClaimSpec {
            access_modes: self.spec.access_modes.clone(),
            resources: self.spec.resources.clone(),
            storage_class_name: self.spec.storage_class_name.clone(),
            volume_mode: self.spec.volume_mode.clone(),
            ..Default::default()
        }
    }
}

/// Stash's `driver` of a backup or restore: how the data is taken.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Driver {
    /// Through a restic repository (the default, and what cairn does).
    Restic,
    /// Volume snapshots: refused; cairn reads the database through its API.
    VolumeSnapshotter,
}

impl Driver {
    /// Why a driver cairn does not run is refused, if it is.
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            Driver::Restic => None,
            Driver::VolumeSnapshotter => Some(
                "VolumeSnapshotter is not supported: cairn backs up Elasticsearch and OpenSearch \
                 through their API into a restic repository (driver: Restic, the default); for \
                 volume snapshots use your CSI driver's VolumeSnapshots or Velero",
            ),
        }
    }
}

/// Phase of a session or a host within it.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum SessionPhase {
    /// Created, not yet running.
    Pending,
    /// Not run: another session was running or the configuration was not ready.
    Skipped,
    /// The Job is running.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// The outcome could not be determined.
    Unknown,
    /// The session's spec cannot work (RestoreSession only).
    Invalid,
}

impl SessionPhase {
    /// True once the session can no longer change phase.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Skipped | Self::Succeeded | Self::Failed | Self::Invalid
        )
    }
}

impl std::fmt::Display for SessionPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}
