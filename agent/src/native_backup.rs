//! `cairn-agent snapshot`: one native snapshot per session. Registers and verifies the
//! server-side repository, snapshots the selected indices and data streams with the session's
//! identity in its metadata, polls until the server is done, fails (and removes the snapshot)
//! when a shard could not be copied, then applies the retention to this configuration's
//! snapshots.

use std::time::{Duration, Instant};

use cairn_api::native::{META_DOCUMENTS, SnapshotIdentity};
use cairn_api::result::{BackupResult, NativeStats, RepositoryTotals};
use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Body, Client, encode_path};
use crate::error::{AgentError, Failed, InPhase, Result};
use crate::native_repo::{ServerRepo, SnapshotInfo, with_backoff};
use crate::repo::Retention;
use crate::select::Selector;

/// Everything `snapshot` needs.
#[derive(Clone, Debug)]
pub struct SnapshotPlan {
    pub repo: ServerRepo,
    pub identity: SnapshotIdentity,
    pub selector: Selector,
    pub include_global_state: bool,
    pub retention: Retention,
    pub wait_timeout: Duration,
    /// How long the server may take over the snapshot (and over refusals to start it).
    pub snapshot_timeout: Duration,
}

/// What a snapshot covers: concrete indices and data streams (as data streams).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selection {
    pub indices: Vec<String>,
    pub data_streams: Vec<String>,
}

impl Selection {
    fn names(&self) -> impl Iterator<Item = &String> {
        self.indices.iter().chain(&self.data_streams)
    }
}

/// Takes the snapshot.
pub fn run(plan: &SnapshotPlan, client: &Client) -> Result<BackupResult, Failed> {
    let started = Instant::now();
    let rt = crate::output::runtime().phase("connect")?;
    rt.block_on(client.wait_answering(plan.wait_timeout))
        .phase("connect")?;
    rt.block_on(plan.repo.register(client, false))
        .phase("repository")?;
    let selection = rt
        .block_on(select(client, &plan.selector))
        .phase("snapshot")?;
    let documents = rt.block_on(count(client, &selection)).phase("snapshot")?;
    let name = plan.identity.snapshot_name();
    tracing::info!(snapshot = %name, repository = %plan.repo.name, indices = selection.indices.len(),
        data_streams = selection.data_streams.len(), "snapshotting");
    let info = rt
        .block_on(take(client, plan, &selection, documents))
        .phase("snapshot")?;
    if let Err(e) = finished_whole(&info) {
        // A partial snapshot is never recorded: `latest` must not pick it.
        if let Err(d) = rt.block_on(plan.repo.delete(client, &name, plan.snapshot_timeout)) {
            tracing::warn!(error = %d, "the failed snapshot could not be removed");
        }
        return Err(e).phase("snapshot");
    }
    let stats = rt
        .block_on(stats(client, &plan.repo, &name))
        .phase("snapshot")?;
    let mut result = BackupResult {
        snapshot: name,
        time: time_of(&info),
        host: plan.identity.host.clone(),
        indices: info.indices.len() as u64,
        documents: documents.unwrap_or(0),
        total_bytes: stats.total_bytes,
        added_bytes: stats.added_bytes,
        native: Some(Box::new(NativeStats {
            repository: plan.repo.name.clone(),
            shards: info.shards.successful,
            shards_total: info.shards.total,
            files: stats.files,
            added_files: stats.added_files,
        })),
        ..Default::default()
    };
    after_snapshot(&rt, plan, client, &mut result);
    result.duration_seconds = started.elapsed().as_secs_f64();
    Ok(result)
}

/// The retention and the repository's snapshot count: their failures leave the snapshot
/// standing and are reported beside it.
fn after_snapshot(
    rt: &tokio::runtime::Runtime,
    plan: &SnapshotPlan,
    client: &Client,
    result: &mut BackupResult,
) {
    let retention = crate::native_retention::apply(
        client,
        &plan.repo,
        &plan.identity,
        &plan.retention,
        plan.snapshot_timeout,
    );
    match rt.block_on(retention) {
        Ok(outcome) => {
            result.snapshots_kept = outcome.kept;
            result.snapshots_removed = outcome.removed;
        }
        Err(e) => result.retention_error = Some(e.to_string()),
    }
    match rt.block_on(plan.repo.snapshots(client)) {
        Ok(all) => {
            result.repository = RepositoryTotals {
                snapshot_count: all.len() as u64,
                size_bytes: 0,
                integrity: None,
            };
            result.inventory = inventory(&all, result);
        }
        Err(e) => result.totals_error = Some(e.to_string()),
    }
}

/// The inventory lines of the server repository's whole snapshots (the one just taken with
/// its sizes), for the Snapshot objects; `None` when they could not be written.
fn inventory(all: &[SnapshotInfo], result: &BackupResult) -> Option<u64> {
    let lines = all
        .iter()
        .filter_map(crate::inventory::native_line)
        .map(|mut line| {
            if line.id == result.snapshot {
                line.total_bytes = Some(result.total_bytes);
                line.added_bytes = Some(result.added_bytes);
            }
            line
        });
    crate::inventory::print(lines)
        .inspect_err(|e| tracing::warn!(error = %e, "the inventory could not be written"))
        .ok()
}

/// The indices and data streams the selector picks (hidden ones and names starting with `.`
/// only when named, as for the logical backup). A data stream's backing indices go with it.
pub async fn select(client: &Client, selector: &Selector) -> Result<Selection> {
    let all = crate::backup::open_indices(client).await?;
    let mut out = Selection::default();
    let mut backing = std::collections::BTreeSet::new();
    for ds in data_streams(client).await? {
        let (name, indices) = ds;
        if selector.selects(&name, &[], false)? {
            out.data_streams.push(name);
            backing.extend(indices);
        }
    }
    for (name, body) in all {
        let aliases: Vec<String> = body["aliases"]
            .as_object()
            .map(|a| a.keys().cloned().collect())
            .unwrap_or_default();
        let hidden = body["settings"]["index.hidden"].as_str() == Some("true");
        if !backing.contains(&name) && selector.selects(&name, &aliases, hidden)? {
            out.indices.push(name);
        }
    }
    out.indices.sort();
    out.data_streams.sort();
    if out.indices.is_empty() && out.data_streams.is_empty() {
        return Err(AgentError::Usage(
            "no open index or data stream matches the include/exclude patterns: nothing to \
             snapshot; check the params include and exclude"
                .into(),
        ));
    }
    Ok(out)
}

/// Every data stream with its backing indices; none on a server without them.
async fn data_streams(client: &Client) -> Result<Vec<(String, Vec<String>)>> {
    let (status, bytes) = client
        .send_retried(Method::GET, "/_data_stream", None, "list data streams")
        .await?;
    if !status.is_success() {
        return Ok(Vec::new());
    }
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| AgentError::json("list data streams", e))?;
    Ok(v["data_streams"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|ds| {
            let indices = ds["indices"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["index_name"].as_str().map(String::from))
                .collect();
            (ds["name"].as_str().unwrap_or_default().to_string(), indices)
        })
        .collect())
}

/// Documents in the selection now: what a whole restore of the snapshot must bring back.
/// `None` when an index cannot be counted (a red one: the snapshot then names its shards).
pub async fn count(client: &Client, selection: &Selection) -> Result<Option<u64>> {
    let mut total = 0;
    for name in selection.names() {
        let what = format!("count {name}");
        let path = format!("/{}/_count", encode_path(name));
        // Once: a red index answers 503, which waiting would not change.
        let (status, bytes) = client.send(Method::GET, &path, None, &what).await?;
        if !status.is_success() {
            tracing::warn!(index = %name, %status, "not counted: the snapshot records no document count");
            return Ok(None);
        }
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| AgentError::json(&what, e))?;
        total += v["count"].as_u64().unwrap_or(0);
    }
    Ok(Some(total))
}

/// Starts the snapshot (waiting out concurrent-snapshot refusals) and polls until the server
/// has finished it.
async fn take(
    client: &Client,
    plan: &SnapshotPlan,
    selection: &Selection,
    documents: Option<u64>,
) -> Result<SnapshotInfo> {
    let name = plan.identity.snapshot_name();
    let mut metadata = plan.identity.metadata();
    if let Some(documents) = documents {
        metadata[META_DOCUMENTS] = json!(documents);
    }
    let names: Vec<&str> = selection.names().map(String::as_str).collect();
    let body = json!({
        "indices": names.join(","),
        "ignore_unavailable": false,
        "include_global_state": plan.include_global_state,
        // The server copies what it can and names the shards it could not; the agent then
        // fails the session with them (an all-or-nothing refusal names no shard).
        "partial": true,
        "metadata": metadata,
    });
    let path = format!(
        "/_snapshot/{}/{}?wait_for_completion=false",
        encode_path(&plan.repo.name),
        encode_path(&name)
    );
    let what = format!("create snapshot {name}");
    with_backoff(plan.snapshot_timeout, &what, || {
        client.send(Method::PUT, &path, Some(Body::Json(body.clone())), &what)
    })
    .await?;
    poll(client, &plan.repo, &name, plan.snapshot_timeout).await
}

/// Reads the snapshot until it is no longer running, every 0.5 s at first, then every 5 s.
pub async fn poll(
    client: &Client,
    repo: &ServerRepo,
    name: &str,
    timeout: Duration,
) -> Result<SnapshotInfo> {
    let started = Instant::now();
    let mut wait = Duration::from_millis(500);
    loop {
        let info = repo.snapshot(client, name).await?;
        match info {
            Some(i) if !matches!(i.state.as_str(), "IN_PROGRESS" | "STARTED" | "INIT") => {
                return Ok(i);
            }
            _ if started.elapsed() >= timeout => {
                return Err(AgentError::Snapshot(format!(
                    "{name} not finished after {}s (snapshotTimeout); it may still be running \
                     on the server",
                    timeout.as_secs()
                )));
            }
            _ => {}
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(5));
    }
}

/// `Ok` for a SUCCESS snapshot; a PARTIAL or FAILED one names the failing shards (at most
/// five, then how many more: the reason must fit the termination message).
pub fn finished_whole(info: &SnapshotInfo) -> Result<()> {
    if info.state == "SUCCESS" {
        return Ok(());
    }
    let named: Vec<String> = info
        .failures
        .iter()
        .take(5)
        .map(|f| {
            format!(
                "[{}][{}]: {}",
                f.index,
                f.shard_id,
                crate::error::short(&f.reason, 160)
            )
        })
        .collect();
    let more = info.failures.len().saturating_sub(named.len());
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    Err(AgentError::Snapshot(format!(
        "{} is {}: {} of {} shards failed ({}{more}); the snapshot was removed. Unassigned or \
         closed shards cannot be copied: make the indices green, or exclude them",
        info.snapshot,
        info.state,
        info.shards.failed,
        info.shards.total,
        named.join("; ")
    )))
}

fn time_of(info: &SnapshotInfo) -> String {
    chrono::DateTime::from_timestamp_millis(info.start_time_in_millis)
        .unwrap_or_default()
        .to_rfc3339()
}

/// Sizes and file counts of a finished snapshot, from `_status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStats {
    pub total_bytes: u64,
    pub added_bytes: u64,
    pub files: u64,
    pub added_files: u64,
}

async fn stats(client: &Client, repo: &ServerRepo, name: &str) -> Result<SnapshotStats> {
    let path = format!(
        "/_snapshot/{}/{}/_status",
        encode_path(&repo.name),
        encode_path(name)
    );
    let v: Value = client
        .json(Method::GET, &path, None, "read snapshot status")
        .await?;
    let s = &v["snapshots"][0]["stats"];
    Ok(SnapshotStats {
        total_bytes: s["total"]["size_in_bytes"].as_u64().unwrap_or(0),
        added_bytes: s["incremental"]["size_in_bytes"].as_u64().unwrap_or(0),
        files: s["total"]["file_count"].as_u64().unwrap_or(0),
        added_files: s["incremental"]["file_count"].as_u64().unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native_repo::{ShardCounts, ShardFailure};

    #[test]
    fn a_partial_snapshot_names_its_failing_shards_briefly() {
        let info = SnapshotInfo {
            snapshot: "a.c.s".into(),
            state: "PARTIAL".into(),
            failures: (0..8)
                .map(|i| ShardFailure {
                    index: "red".into(),
                    shard_id: i,
                    reason: "primary shard is not allocated".repeat(20),
                })
                .collect(),
            shards: ShardCounts {
                total: 9,
                failed: 8,
                successful: 1,
            },
            ..Default::default()
        };
        let e = finished_whole(&info).unwrap_err().to_string();
        assert!(e.contains("[red][0]"), "{e}");
        assert!(e.contains("and 3 more"), "{e}");
        assert!(e.len() < 1500, "{}", e.len());
        let ok = SnapshotInfo {
            state: "SUCCESS".into(),
            ..info
        };
        assert!(finished_whole(&ok).is_ok());
    }
}
