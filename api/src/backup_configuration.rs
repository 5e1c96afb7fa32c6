//! The BackupConfiguration kind: a schedule that makes BackupSessions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{
    BackupTarget, EmptyDirSettings, ObjectReference, PersistentVolumeClaimTemplate,
    RetentionPolicy, RuntimeSettings, TaskRef,
};

/// A schedule of backups of one database into one repository.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "BackupConfiguration",
    namespaced,
    status = "BackupConfigurationStatus",
    shortname = "bc",
    category = "cairn",
    category = "backup",
    derive = "PartialEq",
    derive = "Default",
    doc = "BackupConfiguration schedules backups of a database (an AppBinding) into a Repository: at each slot of spec.schedule the controller creates a BackupSession.",
    printcolumn(
        name = "Task",
        type_ = "string",
        json_path = ".spec.task.name",
        description = "Task that performs the backup"
    ),
    printcolumn(
        name = "Schedule",
        type_ = "string",
        json_path = ".spec.schedule",
        description = "Cron schedule"
    ),
    printcolumn(
        name = "Paused",
        type_ = "boolean",
        json_path = ".spec.paused",
        description = "No new sessions while true"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Ready, NotReady or Invalid"
    ),
    printcolumn(
        name = "Next",
        // A `date` column prints `<invalid>` for any time in the future.
        type_ = "string",
        json_path = ".status.nextScheduleTime",
        description = "Next scheduled backup"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationSpec {
    /// Cron schedule: five fields (minute hour day-of-month month day-of-week) or one of
    /// `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@annually`, `@midnight`.
    pub schedule: String,
    /// IANA time zone of the schedule, e.g. `Europe/Berlin`. Defaults to `UTC`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// No new sessions are created while true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Stash's driver: `Restic` (the default) is what cairn does; `VolumeSnapshotter` is
    /// refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<crate::common::Driver>,
    /// The Repository the snapshots go to. Its namespace defaults to this object's.
    pub repository: ObjectReference,
    /// The database to back up.
    pub target: BackupTarget,
    /// The Task that performs the backup, and its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskRef>,
    /// Which snapshots to keep after each successful backup.
    pub retention_policy: RetentionPolicy,
    /// Settings of the backup Job's pod and containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_settings: Option<RuntimeSettings>,
    /// The scratch directory mounted at `/cairn/tmp` in every Job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temp_dir: Option<EmptyDirSettings>,
    /// When set, each session gets its own PersistentVolumeClaim from this template, where the
    /// agent stages the dump before uploading it. When absent, the agent streams straight to the
    /// repository and needs no volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interim_volume_template: Option<PersistentVolumeClaimTemplate>,
    /// Completed sessions to keep; the newest completed one is always kept. Defaults to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_history_limit: Option<i32>,
    /// Longest a session may run, e.g. `30m` or `2h`; a session running longer is failed and its
    /// Job removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_out: Option<String>,
    /// How failed sessions are retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_config: Option<RetryConfig>,
    /// How late, in seconds, a missed schedule slot may still start (after a controller restart
    /// or failover). Defaults to 300.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starting_deadline_seconds: Option<i64>,
    /// Actions before and after each backup (Stash's `spec.hooks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hooks: Option<crate::hooks::BackupHooks>,
}

/// How failed sessions are retried: each retry is a new session.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryConfig {
    /// Retries of a failed session. Defaults to 1; 0 turns retries off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_retry: Option<i32>,
    /// Wait before a retry, e.g. `1m` or `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
}

/// Whether a BackupConfiguration can make sessions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigurationPhase {
    /// Everything it refers to exists and it is valid.
    Ready,
    /// Something it refers to is missing.
    NotReady,
    /// It failed validation.
    Invalid,
}

/// What the controller last observed of a BackupConfiguration.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupConfigurationStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// RepositoryFound, BackendSecretFound, TargetFound, TaskFound, ValidationPassed, Scheduled.
    /// BackendSecretFound comes from the newest session's pod, as the controller reads no
    /// Secret: `True` (SessionStarted) once a container started, `False`
    /// (CreateContainerConfigError) while one waits for the storage Secret, `Unknown`
    /// (NoSessionYet) before; it does not hold the configuration back from Ready.
    /// A map list keyed by `type`, so each condition can have its own field manager.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// `Ready`, `NotReady` or `Invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ConfigurationPhase>,
    /// Slot of the last session created by the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The next slot of the schedule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    /// Name of the last session that succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_session: Option<String>,
}
