//! The search testbed: a real OpenSearch 2.19 node (and Elasticsearch 7.17) from
//! `cargo xtask search-testbed`, serving the APIs the agent uses.

use anyhow::{Context, Result, ensure};
use cairn_tests::opensearch::{Distribution, OpenSearch, Options};
use serde_json::{Value, json};

async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> Result<Value> {
    let mut request = client.request(method.clone(), &url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("{method} {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    ensure!(status.is_success(), "{method} {url}: HTTP {status}: {text}");
    serde_json::from_str(&text).with_context(|| format!("{method} {url}: not JSON: {text}"))
}

/// Indexes `n` documents into `index` with `_bulk` (some with routing), refreshing.
async fn bulk_index(client: &reqwest::Client, url: &str, index: &str, n: usize) -> Result<()> {
    let mut body = String::new();
    for i in 0..n {
        let action = if i % 2 == 0 {
            json!({"index": {"_index": index, "_id": format!("doc-{i}"), "routing": "r1"}})
        } else {
            json!({"index": {"_index": index, "_id": format!("doc-{i}")}})
        };
        body.push_str(&format!("{action}\n{}\n", json!({"n": i, "text": "hello"})));
    }
    let response = client
        .post(format!("{url}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;
    let status = response.status();
    let result: Value = response.json().await?;
    ensure!(
        status.is_success() && result["errors"] == json!(false),
        "_bulk: HTTP {status}: {result}"
    );
    Ok(())
}

/// The documents a sliced scroll over `index` returns, all slices together.
async fn sliced_scroll_count(client: &reqwest::Client, url: &str, index: &str) -> Result<usize> {
    let mut seen = 0;
    for slice in 0..2 {
        let mut page = call(
            client,
            reqwest::Method::POST,
            format!("{url}/{index}/_search?scroll=1m"),
            Some(json!({"slice": {"id": slice, "max": 2}, "size": 2, "sort": ["_doc"]})),
        )
        .await?;
        loop {
            let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
            if hits.is_empty() {
                break;
            }
            seen += hits.len();
            let scroll_id = page["_scroll_id"].as_str().context("no _scroll_id")?;
            page = call(
                client,
                reqwest::Method::POST,
                format!("{url}/_search/scroll"),
                Some(json!({"scroll": "1m", "scroll_id": scroll_id})),
            )
            .await?;
        }
    }
    Ok(seen)
}

#[tokio::test]
async fn opensearch_node_serves_the_apis_the_agent_uses() -> Result<()> {
    let mut node = OpenSearch::start()?;
    eprintln!(
        "OpenSearch {} ready on {} in {:.1?}, RSS {} MiB",
        node.version(),
        node.url(),
        node.startup_time(),
        node.rss_bytes().unwrap_or(0) / (1024 * 1024)
    );
    assert_eq!(node.distribution(), Distribution::OpenSearch);
    assert!(
        node.version().starts_with("2.19."),
        "version {}",
        node.version()
    );
    let url = node.url();
    let client = reqwest::Client::new();
    use reqwest::Method;

    let root = call(&client, Method::GET, format!("{url}/"), None).await?;
    assert_eq!(root["version"]["distribution"], "opensearch", "{root}");
    assert_eq!(root["version"]["number"], node.version());

    // Templates (component, composable and legacy) and an alias with a filter and routing.
    call(
        &client,
        Method::PUT,
        format!("{url}/_component_template/cairn-settings"),
        Some(json!({"template": {"settings": {"number_of_shards": 2, "number_of_replicas": 0}}})),
    )
    .await?;
    call(
        &client,
        Method::PUT,
        format!("{url}/_index_template/cairn-logs"),
        Some(json!({
            "index_patterns": ["logs-*"],
            "composed_of": ["cairn-settings"],
            "template": {
                "mappings": {"properties": {"n": {"type": "long"}, "text": {"type": "text"}}},
                "aliases": {"all-logs": {}}
            }
        })),
    )
    .await?;
    call(
        &client,
        Method::PUT,
        format!("{url}/_template/cairn-legacy"),
        Some(json!({"index_patterns": ["legacy-*"], "settings": {"number_of_shards": 1}})),
    )
    .await?;
    bulk_index(&client, &url, "logs-1", 7).await?;
    call(
        &client,
        Method::POST,
        format!("{url}/_aliases"),
        Some(json!({"actions": [{"add": {
            "index": "logs-1", "alias": "even-logs",
            "filter": {"term": {"text": "hello"}}, "routing": "r1"
        }}]})),
    )
    .await?;
    let aliases = call(&client, Method::GET, format!("{url}/logs-1/_alias"), None).await?;
    assert!(
        aliases["logs-1"]["aliases"]["all-logs"].is_object(),
        "{aliases}"
    );
    assert_eq!(
        aliases["logs-1"]["aliases"]["even-logs"]["index_routing"], "r1",
        "{aliases}"
    );
    let count = call(&client, Method::GET, format!("{url}/logs-1/_count"), None).await?;
    assert_eq!(count["count"], 7, "{count}");

    // Point in time + search_after.
    let pit = call(
        &client,
        Method::POST,
        format!("{url}/logs-1/_search/point_in_time?keep_alive=1m"),
        None,
    )
    .await?;
    let pit_id = pit["pit_id"].as_str().context("no pit_id")?.to_string();
    let mut seen = 0;
    let mut search_after: Option<Value> = None;
    loop {
        let mut query = json!({
            "size": 3,
            "pit": {"id": pit_id, "keep_alive": "1m"},
            // OpenSearch 2.19 has no `_shard_doc` tiebreaker (Elasticsearch >= 7.12 has).
            "sort": [{"n": "asc"}],
        });
        if let Some(after) = &search_after {
            query["search_after"] = after.clone();
        }
        let page = call(&client, Method::POST, format!("{url}/_search"), Some(query)).await?;
        let hits = page["hits"]["hits"].as_array().cloned().unwrap_or_default();
        let Some(last) = hits.last() else { break };
        search_after = Some(last["sort"].clone());
        seen += hits.len();
    }
    assert_eq!(seen, 7, "point in time + search_after saw {seen} documents");
    call(
        &client,
        Method::DELETE,
        format!("{url}/_search/point_in_time"),
        Some(json!({"pit_id": [pit_id]})),
    )
    .await?;

    // Sliced scroll.
    assert_eq!(sliced_scroll_count(&client, &url, "logs-1").await?, 7);

    // Killed mid-flight: the port stops answering; restarted: the data is still there.
    node.kill();
    assert!(client.get(format!("{url}/")).send().await.is_err());
    node.restart()?;
    eprintln!("OpenSearch restarted in {:.1?}", node.startup_time());
    let count = call(&client, Method::GET, format!("{url}/logs-1/_count"), None).await?;
    assert_eq!(count["count"], 7, "{count}");
    Ok(())
}

#[tokio::test]
async fn elasticsearch_7_17_node_serves_pit_and_sliced_scroll() -> Result<()> {
    let node = OpenSearch::start_with(Options::elasticsearch())?;
    eprintln!(
        "Elasticsearch {} ready on {} in {:.1?}, RSS {} MiB",
        node.version(),
        node.url(),
        node.startup_time(),
        node.rss_bytes().unwrap_or(0) / (1024 * 1024)
    );
    assert_eq!(node.distribution(), Distribution::Elasticsearch);
    assert!(
        node.version().starts_with("7.17."),
        "version {}",
        node.version()
    );
    let url = node.url();
    let client = reqwest::Client::new();
    use reqwest::Method;
    let root = call(&client, Method::GET, format!("{url}/"), None).await?;
    assert!(root["version"]["distribution"].is_null(), "{root}");
    bulk_index(&client, &url, "metrics-1", 5).await?;
    let pit = call(
        &client,
        Method::POST,
        format!("{url}/metrics-1/_pit?keep_alive=1m"),
        None,
    )
    .await?;
    assert!(pit["id"].is_string(), "{pit}");
    assert_eq!(sliced_scroll_count(&client, &url, "metrics-1").await?, 5);
    Ok(())
}

#[tokio::test]
async fn opensearch_node_with_https_and_basic_auth() -> Result<()> {
    let node = OpenSearch::start_with(Options::secured())?;
    let url = node.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (user, password) = node.basic_auth().context("no credentials")?;
    let ca = reqwest::Certificate::from_pem(node.ca_pem().context("no CA")?.as_bytes())?;
    let client = reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()?;

    // No credentials, wrong credentials: 401 with a challenge.
    let anonymous = client.get(format!("{url}/")).send().await?;
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(anonymous.headers().contains_key("www-authenticate"));
    let wrong = client
        .get(format!("{url}/_cat/indices"))
        .basic_auth(user, Some("wrong"))
        .send()
        .await?;
    assert_eq!(wrong.status(), reqwest::StatusCode::UNAUTHORIZED);

    // The right ones: the API works.
    let root: Value = client
        .get(format!("{url}/"))
        .basic_auth(user, Some(password))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(root["version"]["number"], node.version());
    let created = client
        .put(format!("{url}/secured-1/_doc/1?refresh=true"))
        .basic_auth(user, Some(password))
        .json(&json!({"secret": false}))
        .send()
        .await?;
    assert!(created.status().is_success(), "{}", created.text().await?);

    // A client that does not trust the CA fails the handshake; plain HTTP gets nowhere.
    let untrusting = reqwest::Client::new();
    assert!(untrusting.get(format!("{url}/")).send().await.is_err());
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        reqwest::Client::new()
            .get(format!("{plain}/"))
            .basic_auth(user, Some(password))
            .send()
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
    );
    Ok(())
}
