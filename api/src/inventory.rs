//! What the agent says about the snapshots of a repository, for the controller's Snapshot
//! objects. A list may not fit the 4096 bytes of a termination message, so it goes through
//! another channel: one JSON line per snapshot on the agent's stdout (`"kind": "snapshot"`,
//! beside the progress lines), which the controller reads through `pods/log`; the result in the
//! termination message says how many lines were written, so a log cut short is noticed.
//!
//! The documents and indices of a snapshot travel in the snapshot itself, as its restic
//! description ([`Description`]): an inventory reads snapshot files only, never their trees.

use k8s_openapi::jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::naming::{TAG_CONFIGURATION, TAG_NAMESPACE};

/// The `kind` of an inventory line.
pub const SNAPSHOT_LINE: &str = "snapshot";

/// One snapshot of an inventory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotLine {
    /// Always [`SNAPSHOT_LINE`].
    pub kind: String,
    /// Full id (64 hex characters); a native snapshot's name.
    pub id: String,
    pub time: Timestamp,
    pub host: String,
    #[serde(default)]
    pub paths: Vec<String>,
    /// cairn's identity on the snapshot: who made it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub configuration: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub documents: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indices: Option<u64>,
    /// How it was made: `native` (the server's snapshot API); none for the agent's restic
    /// snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
}

impl SnapshotLine {
    /// The line for a snapshot with these tags and description.
    pub fn new(id: String, time: Timestamp, host: String, tags: &[String]) -> Self {
        let tag = |key: &str| {
            tags.iter()
                .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
                .map(String::from)
        };
        Self {
            kind: SNAPSHOT_LINE.into(),
            id,
            time,
            host,
            paths: Vec::new(),
            namespace: tag(TAG_NAMESPACE),
            configuration: tag(TAG_CONFIGURATION),
            total_bytes: None,
            added_bytes: None,
            documents: None,
            indices: None,
            driver: None,
        }
    }

    /// How the snapshot was made: [`crate::snapshot::DRIVER_RESTIC`] unless the line says.
    pub fn driver(&self) -> &str {
        self.driver
            .as_deref()
            .unwrap_or(crate::snapshot::DRIVER_RESTIC)
    }

    /// The id people read: a restic id's first 8 characters, as restic shows it; a native
    /// snapshot's whole name (it has no shorter form).
    pub fn short_id(&self) -> &str {
        if self.driver.is_some() {
            return &self.id;
        }
        self.id.get(..8).unwrap_or(&self.id)
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Every snapshot line in an agent's log (other lines, and lines that do not parse, are
    /// not inventory lines).
    pub fn parse_log(log: &str) -> Vec<Self> {
        log.lines()
            .filter(|l| l.contains("\"kind\":\"snapshot\""))
            .filter_map(|l| serde_json::from_str::<Self>(l.trim()).ok())
            .filter(|s| s.kind == SNAPSHOT_LINE)
            .collect()
    }
}

/// What cairn writes in a snapshot's restic description.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq)]
pub struct Description {
    /// The documents of the indices the backup read, as the server counted them when it began.
    pub documents: u64,
    pub indices: u64,
}

/// The description's prefix: restic shows descriptions as text, and other tools write their own.
const DESCRIPTION_PREFIX: &str = "cairn ";

impl Description {
    pub fn to_text(self) -> String {
        format!(
            "{DESCRIPTION_PREFIX}{}",
            serde_json::to_string(&self).unwrap_or_default()
        )
    }

    /// `None` for a description cairn did not write.
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_str(text.strip_prefix(DESCRIPTION_PREFIX)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip_through_a_log() {
        let mut line = SnapshotLine::new(
            "ab".repeat(32),
            "2026-12-06T04:00:00Z".parse().unwrap(),
            "host-0".into(),
            &[
                "cairn.dev/namespace=team-a".into(),
                "cairn.dev/configuration=nightly".into(),
                "other".into(),
            ],
        );
        line.documents = Some(7);
        assert_eq!(line.namespace.as_deref(), Some("team-a"));
        assert_eq!(line.configuration.as_deref(), Some("nightly"));
        let log = format!(
            "{{\"kind\":\"progress\",\"documents\":1}}\n2026 INFO x\n{}\n{{\"kind\":\"snapshot\"\n",
            line.to_line()
        );
        assert_eq!(SnapshotLine::parse_log(&log), vec![line]);
    }

    #[test]
    fn descriptions_are_cairns_or_nothing() {
        let d = Description {
            documents: 12,
            indices: 3,
        };
        assert_eq!(Description::parse(&d.to_text()), Some(d));
        assert_eq!(Description::parse("nightly run"), None);
        assert_eq!(Description::parse("cairn {"), None);
    }
}
