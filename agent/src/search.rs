//! Reading every document of an index, page by page: point-in-time + `search_after`
//! (Elasticsearch >= 7.12 with `_shard_doc`, OpenSearch >= 2.4 when the server accepts
//! `_shard_doc`) or sliced scroll elsewhere, in parallel slices.
//!
//! Pages are asked for under the client's retry policy. A point-in-time page may be asked for
//! twice (`search_after` makes it repeatable); a scroll page may not (the server's cursor moved
//! on if it answered the first time, and that page is gone), so a scroll slice counts what it
//! read against the exact total of its first answer and fails if a page went missing. The point
//! in time, or each slice's scroll, is a [`Context`] released however reading ends; a failed
//! slice stops the others, which release theirs on the way out.
//!
//! Pages are sized by bytes ([`crate::budget`]): each slice starts with a small page and asks
//! for as many documents as fit in its page bytes at the size of the ones it read last, and a
//! page is asked for only once its expected bytes fit in the budget all slices share. A
//! scroll's page size is fixed when it opens, so it comes from a sample of the index.

use std::future::Future;

use bytes::Bytes;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::budget::{Held, Paging};
use crate::client::{Body, Client, Distribution, encode_path, server_error};
use crate::error::{AgentError, Result};
use crate::retry::Retry;
use crate::skim::{Page, parse_page};

/// How documents of one index are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    Pit(Distribution),
    Scroll,
}

const KEEP_ALIVE: &str = "10m";

/// Documents sampled to size a scroll's pages.
const SCROLL_SAMPLE_DOCS: u32 = 4;

/// Reads all documents of `index` with `slices` parallel readers, in pages sized by `paging`;
/// every page goes to `sink`. Returns the number of documents read.
pub async fn read_index<F, Fut>(
    client: &Client,
    index: &str,
    mode: ReadMode,
    slices: u32,
    paging: &Paging,
    sink: F,
) -> Result<u64>
where
    F: Fn(Page) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<()>> + Send,
{
    let enc = encode_path(index);
    match mode {
        ReadMode::Pit(dist) => {
            let pit = open_pit(client, &enc, dist).await?;
            let pit_id = pit.id.clone().unwrap_or_default();
            let result = run_slices(slices, |slice, stop| {
                let client = client.clone();
                let sink = sink.clone();
                let pit_id = pit_id.clone();
                let index = index.to_string();
                let paging = paging.clone();
                async move {
                    let read = Slice {
                        client: &client,
                        index: &index,
                        slice,
                        slices,
                        paging: &paging,
                    };
                    read.pit(pit_id, sink, stop).await
                }
            })
            .await;
            pit.release().await;
            result
        }
        ReadMode::Scroll => {
            let sample = sample(client, index, &enc, paging).await?;
            run_slices(slices, |slice, stop| {
                let client = client.clone();
                let sink = sink.clone();
                let index = index.to_string();
                let enc = enc.clone();
                let paging = paging.clone();
                async move {
                    let read = Slice {
                        client: &client,
                        index: &index,
                        slice,
                        slices,
                        paging: &paging,
                    };
                    read.scroll(&enc, sample, sink, stop).await
                }
            })
            .await
        }
    }
}

/// A few documents of the index as (documents, NDJSON bytes): what a scroll's page size is
/// chosen from, since it cannot change once the scroll is open.
async fn sample(client: &Client, index: &str, enc: &str, paging: &Paging) -> Result<(u64, u64)> {
    let _held = paging.budget.take(paging.page_bytes).await;
    let what = format!("sample documents of {index}");
    let body = json!({ "size": SCROLL_SAMPLE_DOCS, "sort": ["_doc"], "_source": true });
    let (status, bytes) = client
        .send_retried(
            Method::POST,
            &format!("/{enc}/_search"),
            Some(Body::Json(body)),
            &what,
        )
        .await?;
    if !status.is_success() {
        return Err(server_error(&what, status, &bytes));
    }
    let page = parse_page(index, &bytes)?;
    Ok((page.docs, page.ndjson.len() as u64))
}

/// Set when one slice failed: the others stop at their next step.
type Stop = watch::Receiver<bool>;

async fn run_slices<F, Fut>(slices: u32, start: F) -> Result<u64>
where
    F: Fn(u32, Stop) -> Fut,
    Fut: Future<Output = Result<u64>> + Send + 'static,
{
    let (stop, stopped) = watch::channel(false);
    let mut set = tokio::task::JoinSet::new();
    for s in 0..slices.max(1) {
        set.spawn(start(s, stopped.clone()));
    }
    let mut total = 0;
    let mut first_err = None;
    // Every slice is waited for: each releases its own context on the way out.
    while let Some(r) = set.join_next().await {
        let err = match r {
            Ok(Ok(n)) => {
                total += n;
                continue;
            }
            Ok(Err(e)) => e,
            Err(e) => AgentError::Dump(format!("reader task failed: {e}")),
        };
        if first_err.is_none() {
            // One failed slice fails the index: stop the others now.
            let _ = stop.send(true);
            first_err = Some(err);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

/// `step`, unless reading is stopped first.
async fn unless_stopped<T>(stop: &mut Stop, step: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::select! {
        r = step => r,
        _ = stop.wait_for(|s| *s) => Err(AgentError::Dump("stopped: another slice failed".into())),
    }
}

/// A search context held on the server: a point in time, or one slice's scroll.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Pit(Distribution),
    Scroll,
}

/// A search context, released by [`Context::release`] on every path that returns, and from
/// `Drop` (in the background) when the future reading it is dropped half-way.
struct Context {
    client: Client,
    kind: Kind,
    id: Option<String>,
}

impl Context {
    fn new(client: &Client, kind: Kind, id: Option<String>) -> Self {
        // Releasing is retried briefly: an unreachable server frees it at its keep-alive.
        let retry = Retry {
            total: std::time::Duration::from_secs(10),
            ..Retry::default()
        };
        Self {
            client: client.clone().with_retry(retry),
            kind,
            id,
        }
    }

    async fn release(mut self) {
        if let Some(id) = self.id.take() {
            release(&self.client, self.kind, id).await;
        }
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Some(id) = self.id.take()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (client, kind) = (self.client.clone(), self.kind);
            rt.spawn(async move { release(&client, kind, id).await });
        }
    }
}

async fn release(client: &Client, kind: Kind, id: String) {
    let (path, body, what) = match kind {
        Kind::Pit(Distribution::Elasticsearch) => {
            ("/_pit", json!({ "id": id }), "close point in time")
        }
        Kind::Pit(Distribution::OpenSearch) => (
            "/_search/point_in_time",
            json!({ "pit_id": [id] }),
            "close point in time",
        ),
        Kind::Scroll => (
            "/_search/scroll",
            json!({ "scroll_id": [id] }),
            "clear scroll",
        ),
    };
    // A context left open expires with its keep-alive: not worth failing a backup for.
    match client
        .send_retried(Method::DELETE, path, Some(Body::Json(body)), what)
        .await
    {
        Ok((s, _)) if s.is_success() || s == StatusCode::NOT_FOUND => {}
        Ok((s, b)) => tracing::warn!(error = %server_error(what, s, &b), "could not {what}"),
        Err(e) => tracing::warn!(error = %e, "could not {what}"),
    }
}

async fn open_pit(client: &Client, enc_index: &str, dist: Distribution) -> Result<Context> {
    let what = format!("open point in time on {enc_index}");
    let (path, key) = match dist {
        Distribution::Elasticsearch => (format!("/{enc_index}/_pit"), "id"),
        Distribution::OpenSearch => (format!("/{enc_index}/_search/point_in_time"), "pit_id"),
    };
    // Opened again after a lost answer, the first one is only left to its keep-alive.
    let (status, bytes) = client
        .send_retried(
            Method::POST,
            &format!("{path}?keep_alive={KEEP_ALIVE}"),
            None,
            &what,
        )
        .await?;
    if !status.is_success() {
        return Err(server_error(&what, status, &bytes));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| AgentError::json(&what, e))?;
    let id = v[key]
        .as_str()
        .ok_or_else(|| AgentError::Dump(format!("{what}: the answer has no id")))?;
    Ok(Context::new(client, Kind::Pit(dist), Some(id.to_string())))
}

/// One slice of one index.
struct Slice<'a> {
    client: &'a Client,
    index: &'a str,
    slice: u32,
    slices: u32,
    paging: &'a Paging,
}

impl Slice<'_> {
    fn what(&self) -> String {
        format!("read documents of {}", self.index)
    }

    /// `bytes` of the budget, once they fit (or reading stopped).
    async fn take(&self, bytes: u64, stop: &mut Stop) -> Result<Held> {
        unless_stopped(stop, async { Ok(self.paging.budget.take(bytes).await) }).await
    }

    /// The page of a search answer, its bytes counted in `held`: the answer's while it is
    /// parsed, then the page's.
    fn page(&self, (status, bytes): (StatusCode, Bytes), mut held: Held) -> Result<Page> {
        if !status.is_success() {
            return Err(server_error(&self.what(), status, &bytes));
        }
        held.resize(bytes.len() as u64);
        let mut page = parse_page(self.index, &bytes)?;
        drop(bytes);
        held.resize(page.ndjson.len() as u64);
        page.held = Some(held);
        Ok(page)
    }

    /// The slice's pages of a point in time.
    async fn pit<F, Fut>(&self, mut pit_id: String, sink: F, mut stop: Stop) -> Result<u64>
    where
        F: Fn(Page) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let what = self.what();
        let mut after: Option<Value> = None;
        let mut total = 0;
        let mut sizer = self.paging.sizer();
        loop {
            let size = sizer.docs();
            let held = self.take(sizer.expected_bytes(), &mut stop).await?;
            let mut body = json!({
                "size": size,
                "pit": { "id": pit_id, "keep_alive": KEEP_ALIVE },
                "sort": [{ "_shard_doc": "asc" }],
                "track_total_hits": false,
                "_source": true,
            });
            if self.slices > 1 {
                body["slice"] = json!({ "id": self.slice, "max": self.slices });
            }
            if let Some(a) = &after {
                body["search_after"] = a.clone();
            }
            let request =
                self.client
                    .send_retried(Method::POST, "/_search", Some(Body::Json(body)), &what);
            let page = self.page(unless_stopped(&mut stop, request).await?, held)?;
            let n = page.docs;
            sizer.observe(n, page.ndjson.len() as u64);
            if let Some(id) = &page.pit_id {
                pit_id.clone_from(id);
            }
            after = page.last_sort.clone();
            total += n;
            if n > 0 {
                unless_stopped(&mut stop, sink(page)).await?;
            }
            if n < u64::from(size) {
                return Ok(total);
            }
            if after.is_none() {
                return Err(AgentError::Dump(format!(
                    "{what}: the server returned no sort values for search_after"
                )));
            }
        }
    }

    /// The slice's pages of a scroll of its own, cleared however they end, sized from the
    /// index's `sample` (documents, bytes).
    async fn scroll<F, Fut>(
        &self,
        enc_index: &str,
        sample: (u64, u64),
        sink: F,
        mut stop: Stop,
    ) -> Result<u64>
    where
        F: Fn(Page) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let what = self.what();
        let mut sizer = self.paging.sizer();
        sizer.settle(sample.0, sample.1);
        let expected = sizer.expected_bytes();
        let held = self.take(expected, &mut stop).await?;
        let mut body = json!({
            "size": sizer.docs(),
            "sort": ["_doc"],
            "_source": true,
            "track_total_hits": true,
        });
        if self.slices > 1 {
            body["slice"] = json!({ "id": self.slice, "max": self.slices });
        }
        // Opened again after a lost answer, the first scroll is only left to its keep-alive.
        // Never given up half-way when another slice fails: the server may have opened the
        // scroll already, and only its answer names it for release (scroll_pages then stops
        // at its first step and releases it).
        let path = format!("/{enc_index}/_search?scroll={KEEP_ALIVE}");
        let answer = self
            .client
            .send_retried(Method::POST, &path, Some(Body::Json(body)), &what)
            .await?;
        let mut page = self.page(answer, held)?;
        let mut context = Context::new(self.client, Kind::Scroll, page.scroll_id.take());
        let pages = self.scroll_pages(&mut context, page, expected, sink, &mut stop);
        let result = pages.await;
        context.release().await;
        result
    }

    async fn scroll_pages<F, Fut>(
        &self,
        context: &mut Context,
        mut page: Page,
        page_bytes: u64,
        sink: F,
        stop: &mut Stop,
    ) -> Result<u64>
    where
        F: Fn(Page) -> Fut,
        Fut: Future<Output = Result<()>>,
    {
        let what = self.what();
        // A scroll is a snapshot: its first answer counts every document it will return.
        let expected = page.total;
        let mut total = 0;
        loop {
            let n = page.docs;
            total += n;
            if n == 0 {
                return match expected {
                    Some(e) if e != total => Err(AgentError::Dump(format!(
                        "{what}: slice {} read {total} of its {e} documents: a page was lost \
                         with an answer that did not arrive (a scroll page cannot be asked for \
                         twice); run the backup again",
                        self.slice
                    ))),
                    _ => Ok(total),
                };
            }
            unless_stopped(stop, sink(page)).await?;
            let Some(id) = context.id.clone() else {
                return Err(AgentError::Dump(format!("{what}: no scroll id")));
            };
            let held = self.take(page_bytes, stop).await?;
            let body = json!({ "scroll": KEEP_ALIVE, "scroll_id": id });
            // Asked for again after a transient failure: a page lost that way is counted above.
            let request = self.client.send_retried(
                Method::POST,
                "/_search/scroll",
                Some(Body::Json(body)),
                &what,
            );
            page = self.page(unless_stopped(stop, request).await?, held)?;
            if let Some(id) = page.scroll_id.take() {
                context.id = Some(id);
            }
        }
    }
}
