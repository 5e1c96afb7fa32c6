//! The RestoreSession kind: one restore of a snapshot into a database.

use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    EmptyDirSettings, ObjectReference, PersistentVolumeClaimTemplate, RestoreTarget, Rule,
    RuntimeSettings, SessionPhase, TaskRef,
};

/// One restore.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "RestoreSession",
    namespaced,
    status = "RestoreSessionStatus",
    shortname = "restore",
    category = "cairn",
    category = "backup",
    category = "all",
    derive = "PartialEq",
    derive = "Default",
    doc = "RestoreSession restores a snapshot from a Repository into a database (an AppBinding). It runs once, as a Job.",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository.name",
        description = "Repository restored from"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Phase of the restore"
    ),
    printcolumn(
        name = "Duration",
        type_ = "string",
        json_path = ".status.sessionDuration",
        description = "How long the restore took"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionSpec {
    /// Stash's driver: `Restic` (the default) is what cairn does; `VolumeSnapshotter` is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<crate::common::Driver>,
    /// The Repository to restore from. Its namespace defaults to this object's.
    pub repository: ObjectReference,
    /// The database to restore into, and the rules saying which snapshots to restore.
    pub target: RestoreTarget,
    /// The Task that performs the restore, and its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// Deprecated: rules belong in `target.rules`. Kept as written (re-applying must be a
    /// no-op) and read as `target.rules` where used ([`RestoreSessionSpec::rules`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Settings of the restore Job's pod and containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<RuntimeSettings>,
    /// The scratch directory mounted at `/cairn/tmp` in the Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<EmptyDirSettings>,
    /// When set, the restore gets its own PersistentVolumeClaim from this template, where the
    /// agent stages the download before loading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_volume_template: Option<PersistentVolumeClaimTemplate>,
    /// Longest the restore may run, e.g. `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    /// Actions before and after the restore (Stash's `spec.hooks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::hooks::RestoreHooks>,
    /// The Job this restore runs, resolved by the admission webhook. Do not set it by hand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub job_template: Option<JobTemplateSpec>,
}

/// What the controller last observed of a RestoreSession.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoreSessionStatus {
    /// `Pending`, `Running`, `Succeeded`, `Failed`, `Unknown` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// Number of hosts restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_hosts: Option<i32>,
    /// How long the restore took, e.g. `1m30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_duration: Option<String>,
    /// When the restore times out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_deadline: Option<Time>,
    /// Per-host results.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<HostRestoreStats>,
    /// Observations of the restore's progress.
    /// A map list keyed by `type`, so each condition can have its own field manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What was restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoredSummary>,
}

/// Result of the restore of one host.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostRestoreStats {
    /// Host name.
    pub hostname: String,
    /// Phase of this host's restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<SessionPhase>,
    /// How long this host's restore took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
    /// Why this host's restore failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What a restore restored.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RestoredSummary {
    /// Snapshot id restored.
    pub snapshot: String,
    /// Documents restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// Indices restored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<i64>,
    /// What the target's distribution lacks and the restore left out (settings of the other
    /// distribution), one line per setting naming whose.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<String>,
}

impl RestoreSessionSpec {
    /// The rules that apply: `target.rules`, or the deprecated `spec.rules` as written (setting
    /// both is refused by admission).
    pub fn rules(&self) -> &[Rule] {
        if self.target.rules.is_empty() {
            &self.rules
        } else {
            &self.target.rules
        }
    }
}
