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
    /// Why the retention failed after the snapshot was saved (the snapshot stands; the next
    /// backup applies the retention again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_error: Option<String>,
    /// Why the repository's totals could not be read after the snapshot was saved (`repository`
    /// is then zero and says nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub totals_error: Option<String>,
}

/// The most a backup result's error reason takes as JSON in the termination message: two
/// of them and the rest of the result stay under [`MAX_TERMINATION_MESSAGE`].
const BACKUP_REASON_BUDGET: usize = 1500;

/// The most one line of a restore's `notCarried` takes in the termination message.
const NOT_CARRIED_LINE_BUDGET: usize = 400;

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
    /// What the target's distribution lacks and the restore left out, with the behaviour it
    /// set: one line per setting (or prefix), naming whose (indices, templates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_carried: Vec<String>,
}

/// A failed run: which phase failed and why, in one line (never a secret).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureResult {
    /// e.g. `connect`, `dump`, `upload`, `retention`, `restore`, `verify`.
    pub phase: String,
    pub reason: String,
}

/// `text` cut, with `...`, so that it takes at most `budget` bytes as JSON: what counts is
/// the text as JSON, where a quote takes two bytes and a control character six.
fn cut_json(text: &str, budget: usize) -> String {
    let size = |c: char| serde_json::to_string(&c).map_or(6, |t| t.len() - 2);
    if text.chars().map(size).sum::<usize>() <= budget {
        return text.to_string();
    }
    let budget = budget.saturating_sub("...".len());
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        used += size(c);
        if used > budget {
            break;
        }
        out.push(c);
    }
    out.push_str("...");
    out
}

impl AgentResult {
    /// The JSON text, cut to fit the termination log: a long failure reason (or a backup's
    /// retention or totals error) is shortened rather than the JSON broken.
    pub fn to_termination_message(&self) -> String {
        let text = serde_json::to_string(self).unwrap_or_default();
        if text.len() <= MAX_TERMINATION_MESSAGE {
            return text;
        }
        match self {
            AgentResult::Failure(f) => {
                let mut short = FailureResult {
                    phase: f.phase.clone(),
                    reason: String::new(),
                };
                let frame = serde_json::to_string(&AgentResult::Failure(short.clone()))
                    .map_or(0, |t| t.len());
                let budget = MAX_TERMINATION_MESSAGE.saturating_sub(frame);
                short.reason = cut_json(&f.reason, budget);
                serde_json::to_string(&AgentResult::Failure(short)).unwrap_or_default()
            }
            AgentResult::Backup(b) => {
                let mut short = b.clone();
                for e in [&mut short.retention_error, &mut short.totals_error]
                    .into_iter()
                    .flatten()
                {
                    *e = cut_json(e, BACKUP_REASON_BUDGET);
                }
                serde_json::to_string(&AgentResult::Backup(short)).unwrap_or_default()
            }
            AgentResult::Restore(r) => {
                let mut short = r.clone();
                for line in &mut short.not_carried {
                    *line = cut_json(line, NOT_CARRIED_LINE_BUDGET);
                }
                let all = short.not_carried.len();
                let fits = |s: &RestoreResult| {
                    serde_json::to_string(&AgentResult::Restore(s.clone())).map_or(0, |t| t.len())
                        + 64
                        <= MAX_TERMINATION_MESSAGE
                };
                while !short.not_carried.is_empty() && !fits(&short) {
                    short.not_carried.pop();
                }
                let left = all - short.not_carried.len();
                if left > 0 {
                    short
                        .not_carried
                        .push(format!("and {left} more (the agent's log lists them)"));
                }
                serde_json::to_string(&AgentResult::Restore(short)).unwrap_or_default()
            }
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
    fn a_restore_with_long_not_carried_lines_fits() {
        let r = AgentResult::Restore(RestoreResult {
            snapshot: "a".repeat(64),
            not_carried: (0..20)
                .map(|i| format!("rule {i}: {}", "x".repeat(900)))
                .collect(),
            ..Default::default()
        });
        let text = r.to_termination_message();
        assert!(text.len() <= MAX_TERMINATION_MESSAGE, "{}", text.len());
        let Some(AgentResult::Restore(back)) = AgentResult::from_termination_message(&text) else {
            panic!("{text}");
        };
        assert!(back.not_carried[0].starts_with("rule 0: xxx"));
        assert!(
            back.not_carried
                .last()
                .unwrap()
                .ends_with("(the agent's log lists them)")
        );
    }

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
        // Characters that JSON escapes count as escaped: quotes, backslashes, control bytes.
        for c in ["\"", "\\", "\n", "\u{1}", "a\u{1f}é\"🚀"] {
            let long = AgentResult::Failure(FailureResult {
                phase: "dump".into(),
                reason: c.repeat(5000),
            });
            let text = long.to_termination_message();
            assert!(
                text.len() <= MAX_TERMINATION_MESSAGE,
                "{c:?}: {}",
                text.len()
            );
            assert!(
                text.len() > MAX_TERMINATION_MESSAGE - 16,
                "{c:?}: {}",
                text.len()
            );
            let Some(AgentResult::Failure(f)) = AgentResult::from_termination_message(&text) else {
                panic!("{c:?}: {text}");
            };
            assert!(f.reason.starts_with(c) && f.reason.ends_with("..."));
        }
        assert_eq!(AgentResult::from_termination_message("panic: oops\n"), None);
    }

    #[test]
    fn a_backup_with_failed_retention_fits() {
        let reason = "\"é\u{1}".repeat(3000);
        let r = AgentResult::Backup(BackupResult {
            snapshot: "a".repeat(64),
            retention_error: Some(reason.clone()),
            totals_error: Some(reason),
            ..Default::default()
        });
        let text = r.to_termination_message();
        assert!(text.len() <= MAX_TERMINATION_MESSAGE, "{}", text.len());
        let Some(AgentResult::Backup(b)) = AgentResult::from_termination_message(&text) else {
            panic!("{text}");
        };
        let e = b.retention_error.expect("kept");
        assert!(e.starts_with("\"é\u{1}") && e.ends_with("..."), "{e}");
        let small = AgentResult::Backup(BackupResult {
            retention_error: Some("locked".into()),
            ..Default::default()
        });
        let text = small.to_termination_message();
        assert!(text.contains("\"retentionError\":\"locked\""), "{text}");
        assert_eq!(AgentResult::from_termination_message(&text), Some(small));
        let plain = AgentResult::Backup(BackupResult::default()).to_termination_message();
        assert!(!plain.contains("Error"), "{plain}");
    }
}
