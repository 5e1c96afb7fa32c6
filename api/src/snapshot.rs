//! The Snapshot kind: one object per snapshot of a Repository, written by the controller from
//! what the agent reports (the controller never reads a repository). Users read and list them,
//! and may ask for one snapshot's data to be forgotten ([`FORGET_ANNOTATION`]); they never
//! create or edit them (admission).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::ObjectReference;
use crate::inventory::SnapshotLine;

/// Label on Snapshots: the Repository's name (`kubectl get snapshots.cairn.dev -l
/// cairn.dev/repository=<name>`).
pub const LABEL_REPOSITORY: &str = "cairn.dev/repository";
/// Label on Snapshots: the Repository's namespace (a tenant's Snapshot may sit elsewhere).
pub const LABEL_REPOSITORY_NAMESPACE: &str = "cairn.dev/repository-namespace";
/// Label on Snapshots: the configuration that made it, when it carries cairn's identity.
pub const LABEL_CONFIGURATION: &str = "cairn.dev/configuration";

/// Annotation a user sets (`"true"`) on a Snapshot to have that one snapshot's data forgotten
/// from the repository; the object goes when the data is gone. Deleting the object alone
/// deletes no data (the next inventory lists the snapshot again).
pub const FORGET_ANNOTATION: &str = "cairn.dev/forget";

/// The field manager of the controller's inventory writes.
pub const INVENTORY_MANAGER: &str = "cairn-inventory";

/// The driver of snapshots made by the agent into a restic-format repository.
pub const DRIVER_RESTIC: &str = "restic";
/// The driver of snapshots made by the server's snapshot API (a Repository with
/// `driver: Native`).
pub const DRIVER_NATIVE: &str = "native";

/// One snapshot in a Repository.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "cairn.dev",
    version = "v1alpha1",
    kind = "Snapshot",
    namespaced,
    status = "SnapshotStatus",
    category = "cairn",
    category = "backup",
    derive = "PartialEq",
    derive = "Default",
    doc = "Snapshot is one snapshot in a Repository, as the controller last saw it. Written by cairn only; delete it with the annotation cairn.dev/forget=true set first to forget its data.",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository.name"
    ),
    printcolumn(name = "Host", type_ = "string", json_path = ".spec.hostname"),
    printcolumn(name = "ID", type_ = "string", json_path = ".spec.shortId"),
    printcolumn(name = "Time", type_ = "date", json_path = ".spec.time"),
    printcolumn(name = "Size", type_ = "string", json_path = ".spec.totalSize"),
    printcolumn(name = "Documents", type_ = "integer", json_path = ".spec.documents"),
    printcolumn(name = "Driver", type_ = "string", json_path = ".spec.driver"),
    printcolumn(name = "Integrity", type_ = "boolean", json_path = ".status.integrity"),
    printcolumn(
        name = "Configuration",
        type_ = "string",
        json_path = ".spec.configuration",
        priority = 1
    ),
    printcolumn(
        name = "Session",
        type_ = "string",
        json_path = ".spec.session",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotSpec {
    /// The Repository that holds it.
    pub repository: ObjectReference,
    /// The snapshot's id in the repository (64 hex characters); a native snapshot's name.
    pub snapshot_id: String,
    /// Its first 8 characters, as restic shows it; a native snapshot's whole name.
    pub short_id: String,
    /// When the snapshot was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<Time>,
    /// The restic host (the target's alias).
    pub hostname: String,
    /// How it was made: `restic` (the agent's logical backup) or `native` (the server's
    /// snapshot API).
    pub driver: String,
    /// The paths saved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The configuration that made it (cairn's identity on the snapshot); none for snapshots
    /// made before cairn's identity, by Stash or by restic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    /// The BackupSession that made it, when the controller saw it finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// Bytes of data in the snapshot, human readable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_size: Option<String>,
    /// Bytes of data in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<i64>,
    /// Bytes the snapshot added to the repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_bytes: Option<i64>,
    /// Documents in the snapshot (the server's count when the backup began).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<i64>,
    /// Indices in the snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<i64>,
}

/// What a check of the repository found for this snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// Whether every blob it needs was found intact by the last check that read it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<bool>,
    /// When that check ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_check_time: Option<Time>,
}

impl Snapshot {
    /// The object's name: the Repository's name and the short id, as Stash names snapshots;
    /// for a `native` snapshot, a hash of its name (a name may hold `_`, which no object name
    /// may, and may be any length).
    pub fn object_name(repository: &str, id: &str, driver: &str) -> String {
        let hashed;
        let short = if driver == DRIVER_NATIVE {
            hashed = crate::naming::long_hash(id);
            &hashed
        } else {
            id.get(..8).unwrap_or(id)
        };
        let max = crate::naming::MAX_SUBDOMAIN_LEN - short.len() - 1;
        let repo = repository
            .get(..max.min(repository.len()))
            .unwrap_or(repository);
        format!("{repo}-{short}")
    }

    /// Why its data cannot be forgotten through [`FORGET_ANNOTATION`]: a native snapshot is
    /// the server's, reached with the cluster's credentials, which a Repository's Job has not.
    pub fn forget_problem(&self) -> Option<String> {
        (self.spec.driver == DRIVER_NATIVE).then(|| {
            format!(
                "{FORGET_ANNOTATION} forgets restic snapshots only: a native snapshot is deleted \
                 by its configuration's retention policy (keepLast, keepDaily, ...) or on the \
                 server (DELETE _snapshot/<repository>/{})",
                self.spec.snapshot_id
            )
        })
    }

    /// Whether the user asked for its data to be forgotten.
    pub fn forget_requested(&self) -> bool {
        self.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(FORGET_ANNOTATION))
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }
}

impl SnapshotSpec {
    /// The spec of an agent's inventory line, in `repository`.
    pub fn from_line(repository: ObjectReference, line: &SnapshotLine) -> Self {
        let count = |n: Option<u64>| n.and_then(|n| i64::try_from(n).ok());
        Self {
            repository,
            snapshot_id: line.id.clone(),
            short_id: line.short_id().to_string(),
            time: Some(Time(line.time)),
            hostname: line.host.clone(),
            driver: line.driver().to_string(),
            paths: line.paths.clone(),
            configuration: line.configuration.clone(),
            session: None,
            total_size: line.total_bytes.map(crate::naming::human_bytes),
            total_bytes: count(line.total_bytes),
            added_bytes: count(line.added_bytes),
            documents: count(line.documents),
            indices: count(line.indices),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::naming::is_dns_subdomain;

    #[test]
    fn object_names_of_restic_ids_and_native_names() {
        assert_eq!(
            Snapshot::object_name("repo", &"ab".repeat(32), DRIVER_RESTIC),
            "repo-abababab"
        );
        let first = Snapshot::object_name("repo", "team-a_logs_logs-1733400000", DRIVER_NATIVE);
        let second = Snapshot::object_name("repo", "team-a_logs_logs-1733486400", DRIVER_NATIVE);
        assert_ne!(first, second);
        for name in [&first, &second] {
            assert!(is_dns_subdomain(name), "{name}");
        }
        let long = "r".repeat(253);
        assert!(is_dns_subdomain(&Snapshot::object_name(
            &long,
            "a_b_c",
            DRIVER_NATIVE
        )));
        // A native name of 64 hex characters is a name like any other.
        let hex = "ab".repeat(32);
        assert_ne!(
            Snapshot::object_name("repo", &hex, DRIVER_NATIVE),
            Snapshot::object_name("repo", &"ab".repeat(31), DRIVER_NATIVE)
        );
    }

    #[test]
    fn a_native_line_shows_its_whole_name_and_driver() {
        let mut line = SnapshotLine::new(
            "team-a_logs_logs-1".into(),
            "2026-12-06T04:00:00Z".parse().unwrap(),
            "host-0".into(),
            &[],
        );
        line.driver = Some(DRIVER_NATIVE.into());
        let spec = SnapshotSpec::from_line(ObjectReference::default(), &line);
        assert_eq!(spec.short_id, "team-a_logs_logs-1");
        assert_eq!(spec.driver, DRIVER_NATIVE);
        line.driver = None;
        line.id = "cd".repeat(32);
        let spec = SnapshotSpec::from_line(ObjectReference::default(), &line);
        assert_eq!(
            (spec.short_id.as_str(), spec.driver.as_str()),
            ("cdcdcdcd", DRIVER_RESTIC)
        );
    }
}
