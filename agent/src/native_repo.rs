//! The server-side snapshot repository of a native Repository: registering it (`PUT
//! _snapshot/<name>`), verifying it (`_verify`), saying what the cluster lacks when either
//! fails, and reading its snapshots (`GET _snapshot/<name>/...`).

use std::time::Duration;

use cairn_api::native::{NativeLocation, server_repository_name};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::client::{Body, Client, encode_path, server_error};
use crate::error::{AgentError, Result};

/// One registered repository on one cluster.
#[derive(Clone, Debug)]
pub struct ServerRepo {
    /// Its name on the server (`cairn_<namespace>_<name>`).
    pub name: String,
    pub location: NativeLocation,
    /// The repository's own rate limits (`max_snapshot_bytes_per_sec`,
    /// `max_restore_bytes_per_sec`; the servers' default is 40 MB/s, `0` lifts it), when set.
    pub throttles: Vec<(&'static str, String)>,
}

/// One snapshot as `GET _snapshot/<repo>/<snapshot>` describes it.
#[derive(Clone, Debug, Deserialize, Default)]
pub struct SnapshotInfo {
    pub snapshot: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub indices: Vec<String>,
    #[serde(default)]
    pub data_streams: Vec<String>,
    #[serde(default)]
    pub start_time_in_millis: i64,
    #[serde(default)]
    pub duration_in_millis: i64,
    #[serde(default)]
    pub failures: Vec<ShardFailure>,
    #[serde(default)]
    pub shards: ShardCounts,
    #[serde(default)]
    pub metadata: Value,
}

/// A shard the snapshot could not copy.
#[derive(Clone, Debug, Deserialize, Default)]
pub struct ShardFailure {
    #[serde(default)]
    pub index: String,
    #[serde(default)]
    pub shard_id: i64,
    #[serde(default)]
    pub reason: String,
}

#[derive(Clone, Copy, Debug, Deserialize, Default)]
pub struct ShardCounts {
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub failed: u64,
    #[serde(default)]
    pub successful: u64,
}

#[derive(Deserialize)]
struct SnapshotList {
    #[serde(default)]
    snapshots: Vec<SnapshotInfo>,
}

impl ServerRepo {
    pub fn new(
        repository_namespace: &str,
        repository_name: &str,
        location: NativeLocation,
    ) -> Self {
        Self {
            name: server_repository_name(repository_namespace, repository_name),
            location,
            throttles: Vec::new(),
        }
    }

    /// Registers the repository (read-only for a cluster that only restores) and verifies it
    /// on every node; `Err` says what the cluster lacks.
    pub async fn register(&self, client: &Client, readonly: bool) -> Result<()> {
        let body = self
            .location
            .server_repository(readonly)
            .map_err(AgentError::Usage)?;
        let kind = body.kind;
        let mut body = body;
        for (key, value) in &self.throttles {
            body.settings
                .insert((*key).into(), Value::String(value.clone()));
        }
        let body = serde_json::to_value(&body).map_err(|e| AgentError::json("repository", e))?;
        let path = format!("/_snapshot/{}", encode_path(&self.name));
        let what = format!("register snapshot repository {}", self.name);
        let (status, bytes) = client
            .send(Method::PUT, &path, Some(Body::Json(body)), &what)
            .await?;
        if !status.is_success() {
            return Err(lacking(kind, server_error(&what, status, &bytes)));
        }
        self.verify(client, kind).await
    }

    /// Uses the repository as the cluster has it registered, or registers it read-only: a
    /// restore never changes how a backing-up cluster writes.
    pub async fn register_for_restore(&self, client: &Client) -> Result<()> {
        let path = format!("/_snapshot/{}", encode_path(&self.name));
        let (status, bytes) = client
            .send_retried(Method::GET, &path, None, "read snapshot repository")
            .await?;
        match status {
            StatusCode::NOT_FOUND => self.register(client, true).await,
            s if s.is_success() => {
                let ours = self
                    .location
                    .server_repository(true)
                    .map_err(AgentError::Usage)?;
                let registered: Value = serde_json::from_slice(&bytes)
                    .map_err(|e| AgentError::json("read snapshot repository", e))?;
                if let Some(diff) = ours.mismatch(&registered[&self.name]) {
                    return Err(AgentError::Usage(format!(
                        "the cluster has snapshot repository {} registered with {diff}: not \
                         where the Repository says its snapshots are. A restore does not change \
                         how the cluster writes: register it as the Repository says (a backup \
                         of this Repository does) or DELETE _snapshot/{} first",
                        self.name, self.name
                    )));
                }
                self.verify(client, ours.kind).await
            }
            s => Err(server_error("read snapshot repository", s, &bytes)),
        }
    }

    async fn verify(&self, client: &Client, kind: &str) -> Result<()> {
        let path = format!("/_snapshot/{}/_verify", encode_path(&self.name));
        let what = format!("verify snapshot repository {}", self.name);
        let (status, bytes) = client.send(Method::POST, &path, None, &what).await?;
        if !status.is_success() {
            return Err(lacking(kind, server_error(&what, status, &bytes)));
        }
        Ok(())
    }

    /// One snapshot, or `None` when the repository has none of that name.
    pub async fn snapshot(&self, client: &Client, name: &str) -> Result<Option<SnapshotInfo>> {
        let path = format!(
            "/_snapshot/{}/{}",
            encode_path(&self.name),
            encode_path(name)
        );
        let (status, bytes) = client
            .send_retried(Method::GET, &path, None, "read snapshot")
            .await?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(server_error("read snapshot", status, &bytes));
        }
        let list: SnapshotList =
            serde_json::from_slice(&bytes).map_err(|e| AgentError::json("read snapshot", e))?;
        Ok(list.snapshots.into_iter().next())
    }

    /// Every snapshot of the repository, oldest first.
    pub async fn snapshots(&self, client: &Client) -> Result<Vec<SnapshotInfo>> {
        let path = format!("/_snapshot/{}/_all", encode_path(&self.name));
        let mut list: SnapshotList = client
            .json(Method::GET, &path, None, "list snapshots")
            .await?;
        list.snapshots.sort_by_key(|s| s.start_time_in_millis);
        Ok(list.snapshots)
    }

    /// Deletes one snapshot, waiting out the server's one-operation-at-a-time refusals.
    pub async fn delete(&self, client: &Client, name: &str, patience: Duration) -> Result<()> {
        let path = format!(
            "/_snapshot/{}/{}",
            encode_path(&self.name),
            encode_path(name)
        );
        let what = format!("delete snapshot {name}");
        with_backoff(patience, &what, || {
            client.send(Method::DELETE, &path, None, &what)
        })
        .await?;
        Ok(())
    }
}

/// Sends a snapshot operation until the server stops refusing it as concurrent with another
/// (`concurrent_snapshot_execution_exception`, a running deletion or restore), with backoff
/// from 1 s to 30 s, for at most `patience`. Any other answer is returned or failed.
pub async fn with_backoff<F, Fut>(patience: Duration, what: &str, mut send: F) -> Result<Value>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(StatusCode, bytes::Bytes)>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    let mut wait = Duration::from_secs(1);
    loop {
        let (status, bytes) = send().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| AgentError::json(what, e));
        }
        let err = server_error(what, status, &bytes);
        if !is_concurrent_refusal(&err.to_string()) || tokio::time::Instant::now() >= deadline {
            return Err(err);
        }
        tracing::info!(wait = ?wait, "{what}: another snapshot operation runs; trying again");
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}

/// Whether the server refused because another snapshot operation runs.
fn is_concurrent_refusal(reason: &str) -> bool {
    reason.contains("concurrent_snapshot_execution_exception")
        || reason.contains("snapshot deletion is already in progress")
        || reason.contains("cannot delete snapshot while a restore")
        || reason.contains("cannot restore index")
            && reason.contains("because it's being snapshotted")
}

/// The server's refusal to register or verify a repository of `kind`, with what the cluster
/// lacks when the reason shows it: `path.repo`, the repository plugin, keystore credentials.
pub fn lacking(kind: &str, err: AgentError) -> AgentError {
    let reason = err.to_string();
    let lacks = if reason.contains("path.repo") {
        Some(
            "the cluster's path.repo does not include local.mountPath: add that directory (or \
             a parent) to path.repo in the configuration of every master and data node, mount \
             the same shared filesystem there, and restart the nodes"
                .to_string(),
        )
    } else if reason.contains("repository type") && reason.contains("does not exist") {
        Some(format!(
            "the cluster has no {kind} repository type: install the repository-{kind} plugin on \
             every node (elasticsearch-plugin / opensearch-plugin install repository-{kind}) \
             and restart them"
        ))
    } else if is_credentials_refusal(&reason) {
        Some(format!(
            "the cluster's keystore holds no usable {kind} credentials: add them to every \
             node's keystore (e.g. {kind}.client.default.access_key and secret_key for s3), \
             then POST _nodes/reload_secure_settings"
        ))
    } else {
        None
    };
    match lacks {
        Some(lacks) => AgentError::Usage(format!("{lacks} (the server said: {reason})")),
        None => err,
    }
}

fn is_credentials_refusal(reason: &str) -> bool {
    [
        "Access Key Id",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "Unable to load credentials",
        "Unable to load AWS credentials",
        "AccessDenied",
        "credentials",
    ]
    .iter()
    .any(|s| reason.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(reason: &str) -> AgentError {
        AgentError::Server {
            what: "register snapshot repository cairn_a_b".into(),
            status: 500,
            body: reason.into(),
        }
    }

    #[test]
    fn says_what_the_cluster_lacks() {
        let e = lacking(
            "fs",
            server(
                "repository_exception: [cairn_a_b] location [/x] doesn't match any of the locations specified by path.repo because this setting is empty",
            ),
        );
        assert!(e.to_string().starts_with("the cluster's path.repo"), "{e}");
        let e = lacking(
            "s3",
            server("repository_exception: [cairn_a_b] repository type [s3] does not exist"),
        );
        assert!(e.to_string().contains("repository-s3 plugin"), "{e}");
        let e = lacking(
            "s3",
            server("amazon_s3_exception: The AWS Access Key Id you provided does not exist"),
        );
        assert!(e.to_string().contains("keystore"), "{e}");
        let other = lacking("fs", server("something else"));
        assert!(matches!(other, AgentError::Server { .. }));
    }

    #[test]
    fn concurrent_refusals() {
        assert!(is_concurrent_refusal(
            "create snapshot: HTTP 503: concurrent_snapshot_execution_exception: [r:s] a snapshot is already running"
        ));
        assert!(!is_concurrent_refusal("invalid_snapshot_name_exception"));
    }
}
