//! Retention of native snapshots: restic's `forget` rules (the same `KeepOptions` as the
//! restic driver's, so `keepDaily: 7` means the same thing) over the snapshots this
//! namespace and configuration made, by their metadata; another configuration's or tenant's
//! snapshots in the same server-side repository are never candidates.

use std::time::Duration;

use cairn_api::native::SnapshotIdentity;
use rustic_core::repofile::SnapshotFile;

use crate::client::Client;
use crate::error::{AgentError, Result};
use crate::native_repo::{ServerRepo, SnapshotInfo};
use crate::repo::{Retention, RetentionOutcome};

/// The names of the snapshots `retention` removes among `all`: only `identity`'s own,
/// finished ones (a PARTIAL or FAILED one is never kept by a rule, nor counted against one).
pub fn to_remove(
    all: &[SnapshotInfo],
    identity: &SnapshotIdentity,
    retention: &Retention,
    now: &rustic_core::jiff::Zoned,
) -> Result<(u64, Vec<String>)> {
    let own: Vec<&SnapshotInfo> = all
        .iter()
        .filter(|s| s.state == "SUCCESS" && identity.owns(&s.metadata))
        .collect();
    if !retention.is_set() {
        return Ok((own.len() as u64, Vec::new()));
    }
    let files: Vec<SnapshotFile> = own
        .iter()
        .map(|s| {
            let time = rustic_core::jiff::Timestamp::from_millisecond(s.start_time_in_millis)
                .map_err(|e| AgentError::Snapshot(format!("{}: start time: {e}", s.snapshot)))?;
            Ok(SnapshotFile {
                time: time.to_zoned(now.time_zone().clone()),
                description: Some(s.snapshot.clone()),
                ..SnapshotFile::default()
            })
        })
        .collect::<Result<_>>()?;
    let decided = retention
        .keep_options()?
        .apply(files, now)
        .map_err(|e| AgentError::rustic("retention", e))?;
    let kept = decided.iter().filter(|d| d.keep).count() as u64;
    let removed = decided
        .into_iter()
        .filter(|d| !d.keep)
        .filter_map(|d| d.snapshot.description)
        .collect();
    Ok((kept, removed))
}

/// Applies the retention on the server: deletes what [`to_remove`] names (nothing in a dry run).
pub async fn apply(
    client: &Client,
    repo: &ServerRepo,
    identity: &SnapshotIdentity,
    retention: &Retention,
    patience: Duration,
) -> Result<RetentionOutcome> {
    let all = repo.snapshots(client).await?;
    let now = rustic_core::jiff::Zoned::now();
    let (kept, remove) = to_remove(&all, identity, retention, &now)?;
    if retention.dry_run {
        tracing::info!(would_remove = ?remove, "retention dry run: nothing removed");
    } else {
        for name in &remove {
            repo.delete(client, name, patience).await?;
            tracing::info!(snapshot = %name, "removed by the retention policy");
        }
    }
    Ok(RetentionOutcome {
        kept,
        removed: remove.len() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(name: &str, ns: &str, config: &str, hours_ago: i64, state: &str) -> SnapshotInfo {
        let id = SnapshotIdentity {
            namespace: ns.into(),
            configuration: config.into(),
            ..Default::default()
        };
        SnapshotInfo {
            snapshot: name.into(),
            state: state.into(),
            start_time_in_millis: 1_765_000_000_000 - hours_ago * 3_600_000,
            metadata: id.metadata(),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_the_newest_of_its_own_and_never_touches_others() {
        let all = vec![
            snap("a.c.1", "a", "c", 3, "SUCCESS"),
            snap("a.c.2", "a", "c", 2, "SUCCESS"),
            snap("a.c.3", "a", "c", 1, "SUCCESS"),
            snap("a.c.4", "a", "c", 0, "PARTIAL"),
            snap("b.c.1", "b", "c", 5, "SUCCESS"),
            snap("a.d.1", "a", "d", 6, "SUCCESS"),
        ];
        let id = SnapshotIdentity {
            namespace: "a".into(),
            configuration: "c".into(),
            ..Default::default()
        };
        let keep_two = Retention {
            keep_last: Some(2),
            ..Default::default()
        };
        let now = rustic_core::jiff::Timestamp::from_millisecond(1_765_000_100_000)
            .unwrap()
            .to_zoned(rustic_core::jiff::tz::TimeZone::UTC);
        let (kept, removed) = to_remove(&all, &id, &keep_two, &now).unwrap();
        assert_eq!((kept, removed), (2, vec!["a.c.1".to_string()]));
    }
}
