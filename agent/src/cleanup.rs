//! What a failed or terminated restore leaves of the indices it created (`--on-failure`, the
//! Task param `onFailure`). By default nothing: they are deleted, and a rerun starts clean.
//! With `close`, each gets its own settings back (refresh, replicas, blocks: the load ran with
//! refresh off and no replicas), a label in its mapping's `_meta` saying which restore left it
//! and why, and is closed, for a person to inspect. Indices the restore did not create are
//! never changed: `existing=skip` leaves them alone, `overwrite` deletes and creates them.

use std::sync::Mutex;

use cairn_api::task_params::OnFailure;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::client::{Body, Client, encode_path, server_error};
use crate::error::{Result, short};

/// The `_meta` key of the label a closed index carries.
pub const LABEL: &str = "cairn.dev/restore";

/// The indices one restore created, and what to do with them if it does not finish.
pub struct Created {
    on_failure: OnFailure,
    /// The snapshot being restored, for the label.
    snapshot: String,
    indices: Mutex<Vec<CreatedIndex>>,
}

/// One index the restore created.
struct CreatedIndex {
    name: String,
    /// Its own settings, put back over the loading ones.
    after: Map<String, Value>,
    /// Its mapping's own `_meta`, kept beside the label (a `_meta` update replaces it whole).
    meta: Map<String, Value>,
}

impl Created {
    pub fn new(on_failure: OnFailure, snapshot: &str) -> Self {
        Self {
            on_failure,
            snapshot: snapshot.to_string(),
            indices: Mutex::new(Vec::new()),
        }
    }

    /// Records an index just created with `mappings`, and the settings it is to get back.
    pub fn record(&self, name: &str, after: &Map<String, Value>, mappings: &Value) {
        let meta = mappings["_meta"].as_object().cloned().unwrap_or_default();
        self.lock().push(CreatedIndex {
            name: name.to_string(),
            after: after.clone(),
            meta,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<CreatedIndex>> {
        self.indices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// After a failure (`reason`) or SIGTERM: every created index is deleted, or closed with its
    /// settings back and labelled. Each is tried whatever happened to the others; what fails is
    /// logged (the restore's own failure is what it reports).
    pub fn clean_up(&self, rt: &tokio::runtime::Runtime, client: &Client, reason: &str) {
        let created = std::mem::take(&mut *self.lock());
        for index in created {
            let done = match self.on_failure {
                OnFailure::Delete => rt.block_on(index.delete(client)),
                OnFailure::Close => rt.block_on(index.close(client, &self.label(reason))),
            };
            match done {
                Ok(()) => tracing::info!(index = %index.name, action = ?self.on_failure,
                    "cleaned up the partly restored index"),
                Err(e) => {
                    tracing::warn!(index = %index.name, error = %e, "could not clean up");
                    // An index left behind at least gets its own settings back.
                    if self.on_failure == OnFailure::Delete
                        && let Err(e) = rt.block_on(index.put_back(client))
                    {
                        tracing::warn!(index = %index.name, error = %e, "nor put its settings back");
                    }
                }
            }
        }
    }

    /// What a closed index says about the restore that left it.
    fn label(&self, reason: &str) -> Value {
        json!({
            "state": "failed",
            "snapshot": self.snapshot,
            "pod": crate::lock::hostname(),
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "reason": short(reason, 500),
            "note": "left closed by the restore's onFailure=close: open it to inspect; \
                     restore again with existing=overwrite, or delete it",
        })
    }
}

impl CreatedIndex {
    fn path(&self, tail: &str) -> String {
        format!("/{}{tail}", encode_path(&self.name))
    }

    async fn delete(&self, client: &Client) -> Result<()> {
        let what = format!("delete the partly restored index {}", self.name);
        let (s, b) = client
            .send_retried(Method::DELETE, &self.path(""), None, &what)
            .await?;
        if s.is_success() || s == StatusCode::NOT_FOUND {
            return Ok(());
        }
        Err(server_error(&what, s, &b))
    }

    /// Its own refresh interval, replicas and blocks.
    async fn put_back(&self, client: &Client) -> Result<()> {
        let body = json!({ "settings": self.after });
        send_ok(
            client,
            Method::PUT,
            &self.path("/_settings"),
            body,
            "put back settings",
        )
        .await
    }

    /// Labelled first (a `read_only` block among its own settings would refuse the label),
    /// then its settings back, then closed.
    async fn close(&self, client: &Client, label: &Value) -> Result<()> {
        let mut meta = self.meta.clone();
        meta.insert(LABEL.into(), label.clone());
        let body = json!({ "_meta": meta });
        send_ok(client, Method::PUT, &self.path("/_mapping"), body, "label").await?;
        self.put_back(client).await?;
        let (s, b) = client
            .send_retried(Method::POST, &self.path("/_close"), None, "close")
            .await?;
        if !s.is_success() {
            return Err(server_error(&format!("close {}", self.name), s, &b));
        }
        Ok(())
    }
}

/// A request that may be sent twice (it sets a value), whose answer must be a success.
async fn send_ok(
    client: &Client,
    method: Method,
    path: &str,
    body: Value,
    what: &str,
) -> Result<()> {
    let (s, b) = client
        .send_retried(method, path, Some(Body::Json(body)), what)
        .await?;
    if s.is_success() {
        return Ok(());
    }
    Err(server_error(what, s, &b))
}
