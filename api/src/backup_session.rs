//! The BackupSession kind: one run of a backup, made at a schedule slot or by hand.

use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{SessionPhase, TargetRef};

/// One run of a backup.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "BackupSession",
    namespaced,
    status = "BackupSessionStatus",
    shortname = "bs",
    category = "cairn",
    category = "backup",
    category = "all",
    derive = "PartialEq",
    derive = "Default",
    doc = "BackupSession is one run of a backup. The controller creates one at each slot of a BackupConfiguration's schedule; create one by hand for an instant backup.",
    printcolumn(
        name = "Invoker",
        type_ = "string",
        json_path = ".spec.invoker.name",
        description = "BackupConfiguration that invoked the session"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Phase of the session"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.sessionDuration",
        description = "How long the session took"
    ),
    printcolumn(
        name = "Snapshot",
        type_ = "string",
        json_path = ".status.snapshot.id",
        description = "Snapshot the session made"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupSessionSpec {
    /// The BackupConfiguration this session runs. Immutable.
    pub invoker: Invoker,
    /// Retries left if this session fails. Defaults to the invoker's `retryConfig.maxRetry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_left: Option<i32>,
    /// The Job this session runs, resolved by the admission webhook from the invoker, its Task
    /// and Functions, the Repository and the AppBinding. Do not set it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub job_template: Option<JobTemplateSpec>,
}

/// The object that made a session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Invoker {
    /// API group of the invoker: `cairn.dev`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_group: Option<String>,
    /// Kind of the invoker: `BackupConfiguration`.
    pub kind: String,
    /// Name of the invoker, in the session's namespace.
    pub name: String,
}

/// What the controller last observed of a BackupSession.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupSessionStatus {
    /// `Pending`, `Skipped`, `Running`, `Succeeded`, `Failed` or `Unknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// How long the session took, e.g. `1m30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    /// When the session times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_deadline: Option<Time>,
    /// The controller's retry decision for a failed session: true once its retry session exists,
    /// false once it decided none is due (no retries left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retried: Option<bool>,
    /// When the retry session will be created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_retry: Option<Time>,
    /// Observations of the session's progress.
    /// A map list keyed by `type`, so each condition can have its own field manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Per-target results, in Stash's shape.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<BackupTargetStatus>,
    /// The snapshot this session made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<SnapshotSummary>,
}

/// Result of the backup of one target.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupTargetStatus {
    /// The target.
    #[serde(rename = "ref")]
    pub r#ref: TargetRef,
    /// Number of hosts backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    /// Phase of this target's backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// Per-host results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostBackupStats>,
}

/// Result of the backup of one host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostBackupStats {
    /// Host name in the repository.
    pub hostname: String,
    /// Phase of this host's backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// How long this host's backup took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Why this host's backup failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Snapshots made for this host.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snapshots: Vec<SnapshotStats>,
}

/// One snapshot made by a backup, in Stash's shape.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStats {
    /// Snapshot id.
    pub name: String,
    /// Path backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Total size of the backed up data, human readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// Data uploaded for this snapshot, human readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<String>,
    /// How long the backup took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processing_time: Option<String>,
    /// New, changed and unmodified files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_stats: Option<FileStats>,
}

/// File counts of a snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileStats {
    /// Files in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_files: Option<i64>,
    /// Files new in this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_files: Option<i64>,
    /// Files changed since the previous snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub modified_files: Option<i64>,
    /// Files unchanged since the previous snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unmodified_files: Option<i64>,
}

/// The snapshot a backup made, in cairn's own shape.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub id: String,
    /// Time of the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// Bytes of data in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Bytes added to the repository by this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_bytes: Option<i64>,
    /// Documents backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// Indices backed up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<i64>,
    /// `native` for the server's own snapshot (driver Native); absent for restic's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// A native snapshot's shards copied, of how many (`2/2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shards: Option<String>,
    /// A native snapshot's files in the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<i64>,
    /// How long the session took over a native snapshot (`1m5s`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}
