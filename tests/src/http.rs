//! A JSON call to a search server from a test (blocking: outside an async runtime's threads,
//! or inside `tokio::task::block_in_place`).

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// `method url` with `body`; the answer's JSON (`null` when it is not JSON), or an error with
/// the status and the answer when it is not a success.
pub fn call(method: reqwest::Method, url: &str, body: Option<Value>) -> Result<Value> {
    let mut rb = reqwest::blocking::Client::new().request(method.clone(), url);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().with_context(|| format!("{method} {url}"))?;
    let status = resp.status();
    let text = resp.text()?;
    ensure!(status.is_success(), "{method} {url}: {status}: {text}");
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A `_bulk` request to the server at `url` (refreshed), whose every document must be taken.
pub fn bulk(url: &str, ndjson: String) -> Result<()> {
    let resp: Value = reqwest::blocking::Client::new()
        .post(format!("{url}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(ndjson)
        .send()?
        .json()?;
    ensure!(resp["errors"] == Value::Bool(false), "bulk: {resp}");
    Ok(())
}
