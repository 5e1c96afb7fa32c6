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
    Inventory(InventoryResult),
    Check(CheckResult),
    Unlock(UnlockResult),
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
    /// How many inventory lines (every snapshot of the repository after the retention,
    /// [`crate::inventory`]) the agent wrote to its log; `None` when it could not list them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inventory: Option<u64>,
    /// A native snapshot's own figures (driver Native): `snapshot` is then its name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<Box<NativeStats>>,
}

/// What the server reports of a native snapshot.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NativeStats {
    /// The server-side repository's name.
    pub repository: String,
    /// Shards copied, of how many.
    pub shards: u64,
    pub shards_total: u64,
    /// Files the snapshot references, and those it added to the repository.
    pub files: u64,
    pub added_files: u64,
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

/// An inventory of a repository (its lines are on stdout, [`crate::inventory`]).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InventoryResult {
    /// How many inventory lines were written.
    pub snapshots: u64,
    pub repository: RepositoryTotals,
}

/// What `cairn-agent unlock` did: the locks whose holders are gone removed (the rule the agent
/// applies before it locks, [`crate::naming::is_locking_pod_hostname`]), the live ones kept
/// and described (at most [`UnlockResult::MAX_HOLDERS`], each cut to fit).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct UnlockResult {
    pub removed: u64,
    pub kept: u64,
    /// The live locks: `a lock of <host> pid <pid> since <time>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holders: Vec<String>,
}

impl UnlockResult {
    /// The most holders the result describes (the log has them all).
    pub const MAX_HOLDERS: usize = 8;
    /// The most bytes one holder takes.
    const HOLDER_BUDGET: usize = 300;

    /// Counts `holders` as kept and describes the first of them, cut to fit.
    pub fn with_holders(removed: u64, holders: &[String]) -> Self {
        Self {
            removed,
            kept: holders.len() as u64,
            holders: holders
                .iter()
                .take(Self::MAX_HOLDERS)
                .map(|h| cut_json(h, Self::HOLDER_BUDGET))
                .collect(),
        }
    }
}

/// A failed run: which phase failed and why, in one line (never a secret).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FailureResult {
    /// e.g. `connect`, `dump`, `upload`, `retention`, `restore`, `verify`.
    pub phase: String,
    pub reason: String,
}

/// A finished integrity check (`cairn-agent check`), healthy or not: `ok` is false when it
/// found errors, and the agent then exits with status 3 (1 means the check could not run, and
/// the result is a failure). The lists may be cut to fit the termination message
/// (`*LeftOut` says how many were left out); the agent's log has them whole, as
/// [`CheckLogLine`]s.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub ok: bool,
    /// Which packs' data was read: `none` (structure only), `all`, or `n/m` (the packs whose
    /// id's first byte is `n-1` modulo `m`, restic's rule).
    pub read_data_subset: String,
    /// The snapshots whose trees were walked; those not in `damaged_snapshots` are healthy (as
    /// far as the data read shows).
    pub snapshots_checked: u64,
    /// Packs in the index, packs whose data was read, and their bytes.
    pub packs_total: u64,
    pub packs_read: u64,
    pub bytes_read: u64,
    /// One line per error found.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub errors_left_out: u64,
    /// Full ids of the snapshots that reference a damaged or missing blob.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub damaged_snapshots: Vec<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub damaged_snapshots_left_out: u64,
    pub duration_seconds: f64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One line of a check's log: a JSON object on a line of its own on stdout, among the agent's
/// other lines (which a reader skips). The contract the controller reads through `pods/log`:
/// `{"check":"damaged","snapshot":"<64 hex>"}` for each damaged snapshot and
/// `{"check":"error","error":"<one line>"}` for each error, every one of them whatever the
/// termination message had room for.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "check", rename_all = "camelCase")]
pub enum CheckLogLine {
    Damaged { snapshot: String },
    Error { error: String },
}

impl CheckLogLine {
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The check line a log line holds, if it is one.
    pub fn from_line(line: &str) -> Option<Self> {
        serde_json::from_str(line.trim()).ok()
    }
}

/// The most one error line of a check takes in the termination message.
const CHECK_ERROR_LINE_BUDGET: usize = 300;

impl CheckResult {
    /// Cut to fit the termination message: long error lines shortened, then errors (all but
    /// the first) and damaged snapshots left out, counted in `*LeftOut`.
    fn shortened(&self) -> Self {
        let mut short = self.clone();
        for line in &mut short.errors {
            *line = cut_json(line, CHECK_ERROR_LINE_BUDGET);
        }
        let fits = |c: &CheckResult| {
            serde_json::to_string(&AgentResult::Check(c.clone())).map_or(0, |t| t.len())
                // Room for the counts to grow by a few digits.
                + 32
                <= MAX_TERMINATION_MESSAGE
        };
        while !fits(&short) {
            if short.errors.len() > 1
                || (short.damaged_snapshots.is_empty() && !short.errors.is_empty())
            {
                short.errors.pop();
                short.errors_left_out += 1;
            } else if short.damaged_snapshots.pop().is_some() {
                short.damaged_snapshots_left_out += 1;
            } else {
                break;
            }
        }
        short
    }
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
            AgentResult::Inventory(_) | AgentResult::Unlock(_) => text,
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
            AgentResult::Check(c) => {
                serde_json::to_string(&AgentResult::Check(c.shortened())).unwrap_or_default()
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
        // The longest snapshot name (a native one: 255 bytes) and a native snapshot's figures.
        let r = AgentResult::Backup(BackupResult {
            snapshot: "a".repeat(255),
            native: Some(Box::new(NativeStats {
                repository: "r".repeat(120),
                shards: u64::MAX,
                shards_total: u64::MAX,
                files: u64::MAX,
                added_files: u64::MAX,
            })),
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

    #[test]
    fn a_check_with_long_lists_fits_and_counts_what_it_left_out() {
        let c = CheckResult {
            ok: false,
            read_data_subset: "all".into(),
            errors: (0..200)
                .map(|i| format!("pack {i}: \"{}\"", "x".repeat(600)))
                .collect(),
            damaged_snapshots: (0..300).map(|i| format!("{i:064x}")).collect(),
            ..Default::default()
        };
        let text = AgentResult::Check(c.clone()).to_termination_message();
        assert!(text.len() <= MAX_TERMINATION_MESSAGE, "{}", text.len());
        let Some(AgentResult::Check(back)) = AgentResult::from_termination_message(&text) else {
            panic!("{text}");
        };
        // The first error stays (cut), then as many snapshots as fit, in order.
        assert_eq!(back.errors.len(), 1);
        assert!(back.errors[0].starts_with("pack 0: \"xxx") && back.errors[0].ends_with("..."));
        assert_eq!(back.errors_left_out, 199);
        let kept = back.damaged_snapshots.len();
        assert!(kept > 30, "{kept}");
        assert_eq!(back.damaged_snapshots[..], c.damaged_snapshots[..kept]);
        assert_eq!(back.damaged_snapshots_left_out as usize, 300 - kept);
        // Few errors and no snapshot: the errors are what is cut.
        let errors_only = CheckResult {
            errors: (0..100)
                .map(|i| format!("error {i} {}", "y".repeat(100)))
                .collect(),
            ..Default::default()
        };
        let text = AgentResult::Check(errors_only).to_termination_message();
        let Some(AgentResult::Check(back)) = AgentResult::from_termination_message(&text) else {
            panic!("{text}");
        };
        assert!(text.len() <= MAX_TERMINATION_MESSAGE, "{}", text.len());
        assert_eq!(back.errors.len() as u64 + back.errors_left_out, 100);
        assert!(back.errors.len() > 20, "{}", back.errors.len());
        // A healthy check is sent whole, without the empty lists.
        let healthy = AgentResult::Check(CheckResult {
            ok: true,
            read_data_subset: "3/7".into(),
            ..Default::default()
        });
        let text = healthy.to_termination_message();
        assert!(
            text.contains("\"kind\":\"check\"") && !text.contains("LeftOut"),
            "{text}"
        );
        assert_eq!(AgentResult::from_termination_message(&text), Some(healthy));
    }

    #[test]
    fn check_log_lines_are_one_json_object_each() {
        let d = CheckLogLine::Damaged {
            snapshot: "ab".repeat(32),
        };
        assert_eq!(
            d.to_line(),
            format!(
                "{{\"check\":\"damaged\",\"snapshot\":\"{}\"}}",
                "ab".repeat(32)
            )
        );
        let e = CheckLogLine::Error {
            error: "pack 1\nline".into(),
        };
        assert!(!e.to_line().contains('\n'));
        assert_eq!(CheckLogLine::from_line(&e.to_line()), Some(e));
        assert_eq!(CheckLogLine::from_line("{\"kind\":\"progress\"}"), None);
        assert_eq!(
            CheckLogLine::from_line("2026-12-06 INFO repository locked"),
            None
        );
    }
}
