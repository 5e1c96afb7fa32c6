//! `cairn-agent snapshot-restore`: restores a native snapshot (`latest` of the namespace's, or
//! one by name) through the server's `_restore`, with include/exclude, renaming, aliases and
//! index settings overrides, and cairn's `existing` policy; then waits for the restored
//! primaries to be active and checks the document count of a whole restore.
//!
//! `existing=overwrite` deletes the existing index and restores it (delete-and-restore) rather
//! than closing it and restoring over it: the server restores over a closed index only when
//! it has the snapshot's number of shards, and overwriting its files loses the old data on a
//! failed restore just the same, so closing buys no safety and refuses re-sharded indices.

use std::time::{Duration, Instant};

use cairn_api::native::{META_CONFIGURATION, META_DOCUMENTS, META_NAMESPACE};
use cairn_api::result::RestoreResult;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::client::{Body, Client, encode_path, server_error};
use crate::error::{AgentError, Failed, InPhase, Result};
use crate::native_repo::{ServerRepo, SnapshotInfo, with_backoff};
use crate::restore::Existing;
use crate::select::{Rename, Selector};

/// Everything `snapshot-restore` needs.
#[derive(Clone, Debug)]
pub struct SnapshotRestorePlan {
    pub repo: ServerRepo,
    /// `latest` or a snapshot's name.
    pub snapshot: String,
    /// The RestoreSession's namespace: `latest` is the newest of its own snapshots.
    pub namespace: String,
    /// The Repository's namespace, whose restores may read any snapshot of it.
    pub repository_namespace: String,
    /// `latest` among this configuration's snapshots only (empty: any of the namespace's).
    pub source_configuration: String,
    pub selector: Selector,
    /// The server's `rename_pattern` / `rename_replacement`, and the same as a [`Rename`]
    /// to know the target names beforehand.
    pub rename_pattern: String,
    pub rename_replacement: String,
    pub rename: Rename,
    pub include_aliases: bool,
    pub index_settings: Map<String, Value>,
    pub existing: Existing,
    pub wait_timeout: Duration,
    pub snapshot_timeout: Duration,
}

/// One index or data stream of the snapshot and the name it is restored under.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    source: String,
    name: String,
    data_stream: bool,
    exists: bool,
}

/// Runs the restore.
pub fn run(plan: &SnapshotRestorePlan, client: &Client) -> Result<RestoreResult, Failed> {
    let started = Instant::now();
    let rt = crate::output::runtime().phase("connect")?;
    rt.block_on(client.wait_answering(plan.wait_timeout))
        .phase("connect")?;
    rt.block_on(plan.repo.register_for_restore(client))
        .phase("repository")?;
    let snap = rt.block_on(find(client, plan)).phase("repository")?;
    tracing::info!(snapshot = %snap.snapshot, repository = %plan.repo.name, "restoring");
    let mut targets = targets(&snap, plan).phase("restore")?;
    let whole =
        targets.len() == snap.indices.len() + snap.data_streams.len() - backing_count(&snap);
    rt.block_on(mark_existing(client, &mut targets))
        .phase("restore")?;
    let selected = targets.len();
    let todo = apply_existing(plan.existing, targets).phase("restore")?;
    if todo.is_empty() {
        tracing::info!("every selected index exists and existing=skip: nothing restored");
        return Ok(result(&snap, 0, 0, started));
    }
    rt.block_on(restore(client, plan, &snap, &todo))
        .phase("restore")?;
    let names: Vec<String> = todo.iter().map(|t| t.name.clone()).collect();
    rt.block_on(wait_active(client, &names, plan.snapshot_timeout))
        .phase("restore")?;
    let documents = rt.block_on(count(client, &names)).phase("verify")?;
    let expected = snap.metadata[META_DOCUMENTS].as_u64();
    if let (true, Some(expected)) = (whole && todo.len() == selected, expected)
        && expected != documents
    {
        return Err(AgentError::Verify(format!(
            "{} documents restored, but {expected} were counted when snapshot {} started \
             (writes during the backup make these differ)",
            documents, snap.snapshot
        )))
        .phase("verify");
    }
    Ok(result(&snap, todo.len() as u64, documents, started))
}

fn result(snap: &SnapshotInfo, indices: u64, documents: u64, started: Instant) -> RestoreResult {
    RestoreResult {
        snapshot: snap.snapshot.clone(),
        indices,
        documents,
        duration_seconds: started.elapsed().as_secs_f64(),
        not_carried: Vec::new(),
    }
}

/// The snapshot to restore: by name (refused when another namespace made it, unless this
/// is the Repository's namespace), or the newest finished one this namespace (and source
/// configuration) made.
async fn find(client: &Client, plan: &SnapshotRestorePlan) -> Result<SnapshotInfo> {
    let own = |s: &SnapshotInfo| {
        s.metadata[META_NAMESPACE].as_str() == Some(plan.namespace.as_str())
            && (plan.source_configuration.is_empty()
                || s.metadata[META_CONFIGURATION].as_str()
                    == Some(plan.source_configuration.as_str()))
    };
    if plan.snapshot == "latest" {
        let all = plan.repo.snapshots(client).await?;
        return all
            .into_iter()
            .rev()
            .find(|s| s.state == "SUCCESS" && own(s))
            .ok_or_else(|| {
                AgentError::Snapshot(format!(
                    "repository {} holds no finished snapshot of namespace {:?}{}: nothing to \
                     restore as latest",
                    plan.repo.name,
                    plan.namespace,
                    if plan.source_configuration.is_empty() {
                        String::new()
                    } else {
                        format!(" and configuration {:?}", plan.source_configuration)
                    }
                ))
            });
    }
    let snap = plan
        .repo
        .snapshot(client, &plan.snapshot)
        .await?
        .ok_or_else(|| {
            AgentError::Snapshot(format!(
                "repository {} has no snapshot {:?}",
                plan.repo.name, plan.snapshot
            ))
        })?;
    let owner = snap.metadata[META_NAMESPACE].as_str().unwrap_or_default();
    if owner != plan.namespace && plan.namespace != plan.repository_namespace {
        return Err(AgentError::Snapshot(format!(
            "snapshot {} belongs to namespace {owner:?}, not {:?}: only the Repository's own \
             namespace may restore another namespace's snapshots",
            snap.snapshot, plan.namespace
        )));
    }
    if snap.state != "SUCCESS" {
        return Err(AgentError::Snapshot(format!(
            "snapshot {} is {}, not SUCCESS: restore a finished one",
            snap.snapshot, snap.state
        )));
    }
    Ok(snap)
}

/// The backing indices of the snapshot's data streams (`.ds-<stream>-...`): they go with
/// their data stream, never on their own.
fn is_backing(snap: &SnapshotInfo, index: &str) -> bool {
    snap.data_streams
        .iter()
        .any(|ds| index.starts_with(&format!(".ds-{ds}-")))
}

fn backing_count(snap: &SnapshotInfo) -> usize {
    snap.indices.iter().filter(|i| is_backing(snap, i)).count()
}

/// The selected indices and data streams with their target names.
fn targets(snap: &SnapshotInfo, plan: &SnapshotRestorePlan) -> Result<Vec<Target>> {
    let mut out = Vec::new();
    let indices = snap.indices.iter().filter(|i| !is_backing(snap, i));
    let picked = indices
        .map(|i| (i, false))
        .chain(snap.data_streams.iter().map(|d| (d, true)));
    for (source, data_stream) in picked {
        if plan.selector.selects(source, &[], false)? {
            out.push(Target {
                source: source.clone(),
                name: plan.rename.apply(source)?,
                data_stream,
                exists: false,
            });
        }
    }
    if out.is_empty() {
        return Err(AgentError::Usage(format!(
            "no index or data stream of snapshot {} matches the include/exclude patterns (it \
             holds: {})",
            snap.snapshot,
            crate::error::short(&snap.indices.join(", "), 300)
        )));
    }
    Ok(out)
}

/// Which targets exist already (open or closed).
async fn mark_existing(client: &Client, targets: &mut [Target]) -> Result<()> {
    for t in targets {
        let path = format!("/{}?expand_wildcards=all", encode_path(&t.name));
        t.exists = client.exists(&path, &format!("look up {}", t.name)).await?;
    }
    Ok(())
}

/// cairn's `existing` policy, before anything is written: `fail` names every existing target,
/// `skip` leaves them out, `overwrite` keeps them (they are deleted just before the restore).
fn apply_existing(existing: Existing, targets: Vec<Target>) -> Result<Vec<Target>> {
    let mut present: Vec<&str> = targets
        .iter()
        .filter(|t| t.exists)
        .map(|t| t.name.as_str())
        .collect();
    present.sort_unstable();
    match existing {
        Existing::Fail if !present.is_empty() => Err(AgentError::Restore(format!(
            "{} already exist{} ({}): nothing was restored; set the param existing to skip or \
             overwrite, or restore under other names with renamePattern/renameReplacement",
            present.len(),
            if present.len() == 1 { "s" } else { "" },
            crate::error::short(&present.join(", "), 400)
        ))),
        Existing::Skip => Ok(targets.into_iter().filter(|t| !t.exists).collect()),
        _ => Ok(targets),
    }
}

/// Deletes the targets to overwrite, then asks the server to restore.
async fn restore(
    client: &Client,
    plan: &SnapshotRestorePlan,
    snap: &SnapshotInfo,
    todo: &[Target],
) -> Result<()> {
    for t in todo.iter().filter(|t| t.exists) {
        let path = if t.data_stream {
            format!("/_data_stream/{}", encode_path(&t.name))
        } else {
            format!("/{}", encode_path(&t.name))
        };
        let what = format!("delete {} to overwrite it", t.name);
        let (status, bytes) = client.send(Method::DELETE, &path, None, &what).await?;
        if !status.is_success() && status != StatusCode::NOT_FOUND {
            return Err(server_error(&what, status, &bytes));
        }
    }
    let sources: Vec<&str> = todo.iter().map(|t| t.source.as_str()).collect();
    let mut body = json!({
        "indices": sources.join(","),
        "ignore_unavailable": false,
        "include_global_state": false,
        "include_aliases": plan.include_aliases,
        "partial": false,
    });
    if !plan.rename_pattern.is_empty() {
        body["rename_pattern"] = json!(plan.rename_pattern);
        body["rename_replacement"] = json!(plan.rename_replacement);
    }
    if !plan.index_settings.is_empty() {
        body["index_settings"] = Value::Object(plan.index_settings.clone());
    }
    let path = format!(
        "/_snapshot/{}/{}/_restore?wait_for_completion=false",
        encode_path(&plan.repo.name),
        encode_path(&snap.snapshot)
    );
    let what = format!("restore snapshot {}", snap.snapshot);
    with_backoff(plan.snapshot_timeout, &what, || {
        client.send(Method::POST, &path, Some(Body::Json(body.clone())), &what)
    })
    .await?;
    Ok(())
}

/// The longest index list one health request carries in its path (servers refuse request
/// lines past 4 KB).
const HEALTH_PATH_BYTES: usize = 3000;

/// Waits until every restored index has its primaries active (health yellow or green), a
/// request per batch of names that fits a request line.
async fn wait_active(client: &Client, names: &[String], timeout: Duration) -> Result<()> {
    let started = Instant::now();
    for batch in batches(names, HEALTH_PATH_BYTES) {
        wait_batch(client, &batch, started, timeout).await?;
    }
    Ok(())
}

/// `names` path-encoded and joined by `,` in runs of at most `bytes` (a longer name alone).
fn batches(names: &[String], bytes: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for name in names.iter().map(|n| encode_path(n)) {
        match out.last_mut() {
            Some(last) if last.len() + 1 + name.len() <= bytes => {
                last.push(',');
                last.push_str(&name);
            }
            _ => out.push(name),
        }
    }
    out
}

async fn wait_batch(
    client: &Client,
    joined: &str,
    started: Instant,
    timeout: Duration,
) -> Result<()> {
    let path =
        format!("/_cluster/health/{joined}?wait_for_status=yellow&timeout=10s&level=indices");
    loop {
        let (status, bytes) = client
            .send_retried(Method::GET, &path, None, "restored shards' health")
            .await?;
        // 408 is the health API's own "not yet" (its `timeout` passed); any other refusal will
        // not change by asking again.
        if status.is_client_error() && status.as_u16() != 408 {
            return Err(AgentError::Restore(format!(
                "the server refused the restored indices' health check ({status}): {}",
                crate::error::short(&String::from_utf8_lossy(&bytes), 300)
            )));
        }
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::json("restored shards' health", e))?;
        if status.is_success() && v["timed_out"] == json!(false) {
            return Ok(());
        }
        if started.elapsed() >= timeout {
            let red: Vec<&str> = v["indices"]
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(_, i)| i["status"] == json!("red"))
                .map(|(n, _)| n.as_str())
                .collect();
            return Err(AgentError::Restore(format!(
                "the restored primaries of {} are not active after {}s (see GET \
                 _cat/recovery and _cluster/allocation/explain)",
                crate::error::short(&red.join(", "), 300),
                timeout.as_secs()
            )));
        }
        if status.is_server_error() {
            // The server's own wait did not happen: do not spin.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// Documents in the restored indices. Read with retries: right after its primaries turn
/// active a restored index may still answer a search with 503 (seen on both servers).
async fn count(client: &Client, names: &[String]) -> Result<u64> {
    let mut total = 0;
    for name in names {
        let v: Value = client
            .json(
                Method::GET,
                &format!("/{}/_count", encode_path(name)),
                None,
                &format!("count {name}"),
            )
            .await?;
        total += v["count"].as_u64().unwrap_or(0);
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(name: &str, exists: bool) -> Target {
        Target {
            source: name.into(),
            name: name.into(),
            data_stream: false,
            exists,
        }
    }

    #[test]
    fn health_requests_fit_a_request_line() {
        let names: Vec<String> = (0..500).map(|i| format!("restored-index-{i:04}")).collect();
        let batches = super::batches(&names, super::HEALTH_PATH_BYTES);
        assert!(batches.len() > 1);
        assert!(batches.iter().all(|b| b.len() <= super::HEALTH_PATH_BYTES));
        let rejoined: Vec<&str> = batches.iter().flat_map(|b| b.split(',')).collect();
        assert_eq!(rejoined, names);
    }

    #[test]
    fn existing_policy_decides_before_anything_is_written() {
        let all = || vec![target("a", true), target("b", false)];
        let e = apply_existing(Existing::Fail, all())
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 already exists (a)"), "{e}");
        assert_eq!(
            apply_existing(Existing::Skip, all()).unwrap(),
            vec![target("b", false)]
        );
        assert_eq!(apply_existing(Existing::Overwrite, all()).unwrap().len(), 2);
    }
}
