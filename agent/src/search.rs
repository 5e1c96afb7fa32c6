//! Reading every document of an index, page by page: point-in-time + `search_after`
//! (Elasticsearch >= 7.12 with `_shard_doc`, OpenSearch >= 2.4 when the server accepts
//! `_shard_doc`) or sliced scroll elsewhere, in parallel slices.

use reqwest::Method;
use serde_json::{Value, json};

use crate::client::{Body, Client, Distribution, encode_path, server_error};
use crate::error::{AgentError, Result};
use crate::skim::{Page, parse_page};

/// How documents of one index are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadMode {
    Pit(Distribution),
    Scroll,
}

const KEEP_ALIVE: &str = "10m";

/// Reads all documents of `index` with `slices` parallel readers; every page goes to `sink`.
/// Returns the number of documents read.
pub async fn read_index<F, Fut>(
    client: &Client,
    index: &str,
    mode: ReadMode,
    slices: u32,
    page_size: u32,
    sink: F,
) -> Result<u64>
where
    F: Fn(Page) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let enc = encode_path(index);
    match mode {
        ReadMode::Pit(dist) => {
            let pit_id = open_pit(client, &enc, dist).await?;
            let result = run_slices(slices, |slice| {
                let client = client.clone();
                let sink = sink.clone();
                let pit_id = pit_id.clone();
                let index = index.to_string();
                async move {
                    read_pit_slice(&client, &index, pit_id, slice, slices, page_size, sink).await
                }
            })
            .await;
            close_pit(client, &pit_id, dist).await;
            result
        }
        ReadMode::Scroll => {
            run_slices(slices, |slice| {
                let client = client.clone();
                let sink = sink.clone();
                let index = index.to_string();
                let enc = enc.clone();
                async move {
                    read_scroll_slice(&client, &index, &enc, slice, slices, page_size, sink).await
                }
            })
            .await
        }
    }
}

async fn run_slices<F, Fut>(slices: u32, start: F) -> Result<u64>
where
    F: Fn(u32) -> Fut,
    Fut: std::future::Future<Output = Result<u64>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for s in 0..slices.max(1) {
        set.spawn(start(s));
    }
    let mut total = 0;
    let mut first_err = None;
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => {
                if first_err.is_none() {
                    first_err = Some(e);
                    // One failed slice fails the index: stop the others now.
                    set.abort_all();
                }
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => {
                first_err.get_or_insert(AgentError::Dump(format!("reader task failed: {e}")));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(total),
    }
}

async fn open_pit(client: &Client, enc_index: &str, dist: Distribution) -> Result<String> {
    let what = format!("open point in time on {enc_index}");
    match dist {
        Distribution::Elasticsearch => {
            let v: Value = client
                .json(
                    Method::POST,
                    &format!("/{enc_index}/_pit?keep_alive={KEEP_ALIVE}"),
                    None,
                    &what,
                )
                .await?;
            v["id"].as_str().map(String::from)
        }
        Distribution::OpenSearch => {
            let v: Value = client
                .json(
                    Method::POST,
                    &format!("/{enc_index}/_search/point_in_time?keep_alive={KEEP_ALIVE}"),
                    None,
                    &what,
                )
                .await?;
            v["pit_id"].as_str().map(String::from)
        }
    }
    .ok_or_else(|| AgentError::Dump(format!("{what}: the answer has no id")))
}

async fn close_pit(client: &Client, pit_id: &str, dist: Distribution) {
    let (path, body) = match dist {
        Distribution::Elasticsearch => ("/_pit", json!({ "id": pit_id })),
        Distribution::OpenSearch => ("/_search/point_in_time", json!({ "pit_id": [pit_id] })),
    };
    // A PIT left open expires with its keep-alive: not worth failing a backup for.
    if let Err(e) = client
        .send(
            Method::DELETE,
            path,
            Some(Body::Json(body)),
            "close point in time",
        )
        .await
    {
        tracing::warn!(error = %e, "could not close a point in time");
    }
}

async fn read_pit_slice<F, Fut>(
    client: &Client,
    index: &str,
    mut pit_id: String,
    slice: u32,
    slices: u32,
    page_size: u32,
    sink: F,
) -> Result<u64>
where
    F: Fn(Page) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut after: Option<Value> = None;
    let mut total = 0;
    loop {
        let mut body = json!({
            "size": page_size,
            "pit": { "id": pit_id, "keep_alive": KEEP_ALIVE },
            "sort": [{ "_shard_doc": "asc" }],
            "track_total_hits": false,
            "_source": true,
        });
        if slices > 1 {
            body["slice"] = json!({ "id": slice, "max": slices });
        }
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let what = format!("read documents of {index}");
        let (status, bytes) = client
            .send(Method::POST, "/_search", Some(Body::Json(body)), &what)
            .await?;
        if !status.is_success() {
            return Err(server_error(&what, status, &bytes));
        }
        let page = parse_page(index, &bytes)?;
        let n = page.docs;
        if let Some(id) = &page.pit_id {
            pit_id.clone_from(id);
        }
        after = page.last_sort.clone();
        total += n;
        if n > 0 {
            sink(page).await?;
        }
        if n < u64::from(page_size) {
            return Ok(total);
        }
        if after.is_none() {
            return Err(AgentError::Dump(format!(
                "{what}: the server returned no sort values for search_after"
            )));
        }
    }
}

async fn read_scroll_slice<F, Fut>(
    client: &Client,
    index: &str,
    enc_index: &str,
    slice: u32,
    slices: u32,
    page_size: u32,
    sink: F,
) -> Result<u64>
where
    F: Fn(Page) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let what = format!("read documents of {index}");
    let mut body = json!({ "size": page_size, "sort": ["_doc"], "_source": true });
    if slices > 1 {
        body["slice"] = json!({ "id": slice, "max": slices });
    }
    let (status, bytes) = client
        .send(
            Method::POST,
            &format!("/{enc_index}/_search?scroll={KEEP_ALIVE}"),
            Some(Body::Json(body)),
            &what,
        )
        .await?;
    if !status.is_success() {
        return Err(server_error(&what, status, &bytes));
    }
    let mut page = parse_page(index, &bytes)?;
    let mut total = 0;
    let mut scroll_id = page.scroll_id.take();
    let result = loop {
        let n = page.docs;
        total += n;
        if n == 0 {
            break Ok(total);
        }
        if let Err(e) = sink(page).await {
            break Err(e);
        }
        let Some(id) = scroll_id.clone() else {
            break Err(AgentError::Dump(format!("{what}: no scroll id")));
        };
        let (status, bytes) = client
            .send(
                Method::POST,
                "/_search/scroll",
                Some(Body::Json(json!({ "scroll": KEEP_ALIVE, "scroll_id": id }))),
                &what,
            )
            .await?;
        if !status.is_success() {
            break Err(server_error(&what, status, &bytes));
        }
        page = match parse_page(index, &bytes) {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        if let Some(id) = page.scroll_id.take() {
            scroll_id = Some(id);
        }
    };
    if let Some(id) = scroll_id {
        let _ = client
            .send(
                Method::DELETE,
                "/_search/scroll",
                Some(Body::Json(json!({ "scroll_id": [id] }))),
                "clear scroll",
            )
            .await;
    }
    result
}
