//! The agent's result: the JSON the agent writes to its termination log (at most 4096 bytes,
//! Kubernetes' limit) and to stdout, and the controller reads from the Pod's terminated state.
//! Shared here so both sides agree on one shape.

use serde::{Deserialize, Serialize};

/// Kubernetes keeps at most this many bytes of a termination message.
pub const MAX_TERMINATION_MESSAGE: usize = 4096;

/// Where the agent writes its result unless `CAIRN_TERMINATION_LOG` names another file.
pub const TERMINATION_LOG: &str = "/dev/termination-log";

/// What one agent run reports.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AgentResult {
    Backup(BackupResult),
    Restore(RestoreResult),
    Failure(FailureResult),
}

/// A successful backup.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BackupResult {
    /// Snapshot id (64 hex characters).
    pub snapshot: String,
    /// Snapshot time, RFC 3339.
    pub time: String,
    /// Host of the snapshot in the repository (the target alias).
    pub host: String,
    pub indices: u64,
    pub documents: u64,
    /// Bytes of data in the snapshot, and bytes the snapshot added to the repository.
    pub total_bytes: u64,
    pub added_bytes: u64,
    pub duration_seconds: f64,
    /// Retention outcome, over the configuration's own snapshots (its identity tags).
    #[serde(default)]
    pub snapshots_kept: u64,
    #[serde(default)]
    pub snapshots_removed: u64,
    /// Repository totals after the backup and the retention.
    #[serde(default)]
    pub repository: RepositoryTotals,
}

/// Totals of a repository.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryTotals {
    pub snapshot_count: u64,
    pub size_bytes: u64,
    /// Result of the integrity check, when one ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub integrity: Option<bool>,
}

/// A successful restore.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RestoreResult {
    pub snapshot: String,
    pub indices: u64,
    pub documents: u64,
    pub duration_seconds: f64,
}

/// A failed run: which phase failed and why, in one line (never a secret).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureResult {
    /// e.g. `connect`, `dump`, `upload`, `retention`, `restore`, `verify`.
    pub phase: String,
    pub reason: String,
}

impl AgentResult {
    /// The JSON text, cut to fit the termination log: a long failure reason is shortened
    /// rather than the JSON broken.
    pub fn to_termination_message(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() <= MAX_TERMINATION_MESSAGE {
            return text;
        }
        match self {
            AgentResult::Failure(f) => {
                let mut short = f.clone();
                let budget = MAX_TERMINATION_MESSAGE.saturating_sub(200);
                let mut cut = budget.min(short.reason.len());
                while !short.reason.is_char_boundary(cut) {
                    cut -= 1;
                }
                short.reason.truncate(cut);
                short.reason.push_str("...");
                serde_json::to_string(&AgentResult::Failure(short)).unwrap_or_default()
            }
            _ => text,
        }
    }

    /// Reads a termination message; `None` when it is not an agent result (a container that
    /// died before writing one leaves its last log lines there instead).
    pub fn from_termination_message(text: &str) -> Option<Self> {
        serde_json::from_str(text.trim()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_fits() {
        let r = AgentResult::Backup(BackupResult {
            snapshot: "a".repeat(64),
            documents: 10,
            ..Default::default()
        });
        let text = r.to_termination_message();
        assert!(text.contains("\"kind\":\"backup\""), "{text}");
        assert_eq!(AgentResult::from_termination_message(&text), Some(r));

        let long = AgentResult::Failure(FailureResult {
            phase: "dump".into(),
            reason: "é".repeat(5000),
        });
        let text = long.to_termination_message();
        assert!(text.len() <= MAX_TERMINATION_MESSAGE);
        assert!(matches!(
            AgentResult::from_termination_message(&text),
            Some(AgentResult::Failure(_))
        ));
        assert_eq!(AgentResult::from_termination_message("panic: oops\n"), None);
    }
}
