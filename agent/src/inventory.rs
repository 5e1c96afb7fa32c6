//! The inventory of a repository: one line per snapshot on stdout ([`cairn_api::inventory`]),
//! for the controller's Snapshot objects. Written after every backup (after its retention) and
//! by `cairn-agent inventory` for a repository cairn did not fill itself.

use std::io::Write;

use cairn_api::inventory::{Description, SnapshotLine};
use rustic_core::repofile::SnapshotFile;

use crate::error::{AgentError, Result};
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

/// Writes every snapshot's line, oldest first, and returns how many.
pub fn write(repo: &OpenRepo) -> Result<u64> {
    let mut snaps = repo
        .get_all_snapshots()
        .map_err(|e| AgentError::rustic("list snapshots", e))?;
    snaps.sort_by(|a, b| a.time.cmp(&b.time));
    let mut out = std::io::stdout().lock();
    for snap in &snaps {
        writeln!(out, "{}", line(snap).to_line())
            .map_err(|e| AgentError::io("write the inventory", e))?;
    }
    out.flush()
        .map_err(|e| AgentError::io("write the inventory", e))?;
    Ok(snaps.len() as u64)
}

/// [`write`] after a backup: a failure is logged and reported as no inventory (the snapshot
/// stands; the controller keeps its Snapshot objects until the next inventory).
pub fn write_after_backup(repo: &OpenRepo) -> Option<u64> {
    write(repo)
        .inspect_err(|e| tracing::warn!(error = %e, "the inventory could not be written"))
        .ok()
}
