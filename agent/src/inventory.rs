//! The inventory of a repository: one line per snapshot on stdout ([`cairn_api::inventory`]),
//! for the controller's Snapshot objects. Written after every backup (after its retention) and
//! by `cairn-agent inventory` for a repository cairn did not fill itself; and after every native
//! snapshot, from the server's listing.

use std::io::Write;

use cairn_api::inventory::{Description, SnapshotLine};
use cairn_api::native::{META_CONFIGURATION, META_DOCUMENTS, META_HOST, META_NAMESPACE};
use rustic_core::repofile::SnapshotFile;

use crate::error::{AgentError, Result};
use crate::native_repo::SnapshotInfo;
use crate::repo::OpenRepo;

/// The line of one snapshot.
pub fn line(snap: &SnapshotFile) -> SnapshotLine {
    let tags: Vec<String> = snap.tags.iter().map(ToString::to_string).collect();
    let mut line = SnapshotLine::new(
        snap.id.to_hex().to_string(),
        snap.time.timestamp(),
        snap.hostname.clone(),
        &tags,
    );
    line.paths = snap.paths.iter().map(ToString::to_string).collect();
    if let Some(summary) = &snap.summary {
        line.total_bytes = Some(summary.total_bytes_processed);
        line.added_bytes = Some(summary.data_added);
    }
    if let Some(d) = snap.description.as_deref().and_then(Description::parse) {
        line.documents = Some(d.documents);
        line.indices = Some(d.indices);
    }
    line
}

/// The line of one native snapshot that finished whole (`None` for a partial or failed one,
/// which no restore picks): its name, start time, and cairn's identity and document count
/// from its metadata.
pub fn native_line(info: &SnapshotInfo) -> Option<SnapshotLine> {
    if info.state != "SUCCESS" {
        return None;
    }
    let meta = |key: &str| info.metadata.get(key).and_then(|v| v.as_str());
    let time = rustic_core::jiff::Timestamp::from_millisecond(info.start_time_in_millis).ok()?;
    let mut line = SnapshotLine::new(
        info.snapshot.clone(),
        time,
        meta(META_HOST).unwrap_or_default().to_string(),
        &[],
    );
    line.namespace = meta(META_NAMESPACE).map(str::to_string);
    line.configuration = meta(META_CONFIGURATION).map(str::to_string);
    line.documents = info.metadata.get(META_DOCUMENTS).and_then(|v| v.as_u64());
    line.indices = Some((info.indices.len() + info.data_streams.len()) as u64);
    line.driver = Some(cairn_api::snapshot::DRIVER_NATIVE.to_string());
    Some(line)
}

/// Writes every snapshot's line, oldest first, and returns how many.
pub fn write(repo: &OpenRepo) -> Result<u64> {
    let mut snaps = repo
        .get_all_snapshots()
        .map_err(|e| AgentError::rustic("list snapshots", e))?;
    snaps.sort_by(|a, b| a.time.cmp(&b.time));
    print(snaps.iter().map(line))
}

/// Writes `lines` to stdout, one JSON object each; returns how many.
pub fn print(lines: impl Iterator<Item = SnapshotLine>) -> Result<u64> {
    let mut out = std::io::stdout().lock();
    let mut written = 0;
    for line in lines {
        writeln!(out, "{}", line.to_line())
            .map_err(|e| AgentError::io("write the inventory", e))?;
        written += 1;
    }
    out.flush()
        .map_err(|e| AgentError::io("write the inventory", e))?;
    Ok(written)
}

/// [`write`] after a backup: a failure is logged and reported as no inventory (the snapshot
/// stands; the controller keeps its Snapshot objects until the next inventory).
pub fn write_after_backup(repo: &OpenRepo) -> Option<u64> {
    write(repo)
        .inspect_err(|e| tracing::warn!(error = %e, "the inventory could not be written"))
        .ok()
}
