//! Reading an index (`search::read_index`) against a real OpenSearch node, directly and through
//! the fault-injecting proxy: transient failures are retried, a scroll page lost with its
//! answer fails the read, and the point in time or scroll contexts are released on every way out (success, a
//! failed page, a failed sink), as the node's own search statistics show.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{Result, ensure};
use cairn_agent::budget::{MIB, Paging};
use cairn_agent::client::{Client, ClientOptions, Distribution};
use cairn_agent::search::{ReadMode, read_index};
use cairn_agent::skim::Page;
use cairn_agent::{AgentError, retry::Retry};
use cairn_tests::faultproxy::{Fault, FaultProxy, Plan, Rule};
use cairn_tests::opensearch::OpenSearch;
use common::Search;

const DOCS: u32 = 1_000;
const PAGE: u32 = 50;

/// Search contexts the node holds open: scrolls and points in time.
fn open_contexts(search: &Search) -> Result<u64> {
    let stats = search.call(reqwest::Method::GET, "/_nodes/stats/indices/search", None)?;
    let nodes = stats["nodes"].as_object().cloned().unwrap_or_default();
    let sum = |key: &str| -> u64 {
        nodes
            .values()
            .map(|n| n["indices"]["search"][key].as_u64().unwrap_or(0))
            .sum()
    };
    // OpenSearch lists its points in time; Elasticsearch counts them in `open_contexts`.
    let listed = search
        .call(reqwest::Method::GET, "/_search/point_in_time/_all", None)
        .map_or(0, |p| p["pits"].as_array().map_or(0, Vec::len) as u64);
    Ok(sum("open_contexts") + sum("scroll_current") + listed)
}

fn client(url: &str) -> Result<Client> {
    let c = Client::new(&ClientOptions {
        url: url.to_string(),
        ..Default::default()
    })?;
    // Short waits: the proxy asks for one second at most.
    Ok(c.with_retry(Retry {
        first: std::time::Duration::from_millis(50),
        cap: std::time::Duration::from_secs(1),
        total: std::time::Duration::from_secs(30),
    }))
}

/// Reads `index` in `mode` with two slices; the sink fails at its `fail_at`-th page.
fn read(
    client: &Client,
    index: &str,
    mode: ReadMode,
    fail_at: Option<u64>,
) -> (Result<u64, AgentError>, u64) {
    let pages = Arc::new(AtomicU64::new(0));
    let docs = Arc::new(AtomicU64::new(0));
    let (p, d) = (pages.clone(), docs.clone());
    let sink = move |page: Page| {
        let n = p.fetch_add(1, Ordering::SeqCst) + 1;
        d.fetch_add(page.docs, Ordering::SeqCst);
        async move {
            match fail_at {
                Some(at) if n >= at => Err(AgentError::Dump("the sink failed".into())),
                _ => Ok(()),
            }
        }
    };
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let paging = Paging::new(PAGE, 8 * MIB, 64 * MIB);
    let r = rt.block_on(read_index(client, index, mode, 2, &paging, sink));
    (r, docs.load(Ordering::SeqCst))
}

/// Reads `index` through a proxy with `rules`: the documents read and the proxy's counts.
fn read_through(
    node: &OpenSearch,
    index: &str,
    mode: ReadMode,
    rules: Vec<Rule>,
) -> Result<(Result<u64, AgentError>, u64, FaultProxy)> {
    let proxy = FaultProxy::start(&node.url(), Plan::new(rules))?;
    let (r, docs) = read(&client(&proxy.url())?, index, mode, None);
    Ok((r, docs, proxy))
}

/// Reads whole, then with a sink that fails: no context is left either way.
fn released_on_success_and_failed_sink(node: &OpenSearch, mode: ReadMode) -> Result<()> {
    let search = Search::of(node)?;
    search.index_with_docs("ctx", DOCS)?;
    let client = client(&node.url())?;
    let (r, docs) = read(&client, "ctx", mode, None);
    ensure!(r? == u64::from(DOCS) && docs == u64::from(DOCS), "{mode:?}");
    ensure!(open_contexts(&search)? == 0, "{mode:?}: a context is left");
    let (r, _) = read(&client, "ctx", mode, Some(3));
    let e = r.expect_err("the sink failed");
    ensure!(e.to_string() == "the sink failed", "{mode:?}: {e}");
    let left = open_contexts(&search)?;
    ensure!(
        left == 0,
        "{mode:?}: {left} contexts left after a failed sink"
    );
    Ok(())
}

const FAULTS: [Fault; 3] = [
    Fault::TooManyRequests { retry_after: 1 },
    Fault::Unavailable,
    Fault::Reset,
];

/// Each fault in bursts of two on the requests whose path has `path`, `method` if given.
fn bursts(faults: &[Fault], path: &str, method: Option<reqwest::Method>) -> Vec<Rule> {
    faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let r = Rule::new(*f, path).every(11, 2).after(3 * i as u64 + 1);
            match &method {
                Some(m) => r.method(m.clone()),
                None => r,
            }
        })
        .collect()
}

/// Every named fault was injected.
fn injected_each(proxy: &FaultProxy, faults: &[Fault]) -> Result<()> {
    for f in faults {
        ensure!(
            proxy.injected(f.class()) > 0,
            "no {}: {:?}",
            f.class(),
            proxy.injected_all()
        );
    }
    Ok(())
}

#[test]
fn opensearch_scroll_retries_and_releases_its_contexts() -> Result<()> {
    cairn_tests::init_crypto();
    let node = OpenSearch::start()?;
    released_on_success_and_failed_sink(&node, ReadMode::Scroll)?;
    let search = Search::of(&node)?;
    search.index_with_docs("faulty", DOCS)?;

    // Rejections and resets before the server saw the request: asked for again, all read.
    let rules = bursts(&FAULTS, "/_search", Some(reqwest::Method::POST));
    let (r, docs, proxy) = read_through(&node, "faulty", ReadMode::Scroll, rules)?;
    ensure!(r? == u64::from(DOCS) && docs == u64::from(DOCS));
    injected_each(&proxy, &FAULTS)?;
    ensure!(open_contexts(&search)? == 0, "a scroll is left");

    // A page whose answer was lost cannot be asked for again (the server's cursor moved on):
    // the read fails, and every slice's scroll is cleared all the same.
    let lost = Rule::new(Fault::LostAnswer, "/_search/scroll")
        .method(reqwest::Method::POST)
        .every(1_000, 1)
        .after(4);
    let (r, _, proxy) = read_through(&node, "faulty", ReadMode::Scroll, vec![lost])?;
    let e = r.expect_err("a lost scroll page must fail the read");
    ensure!(e.to_string().contains("a page was lost"), "{e}");
    injected_each(&proxy, &[Fault::LostAnswer])?;
    let left = open_contexts(&search)?;
    ensure!(left == 0, "{left} contexts left after a failed scroll");
    Ok(())
}

#[test]
fn elasticsearch_point_in_time_retries_and_releases_its_context() -> Result<()> {
    cairn_tests::init_crypto();
    let node = OpenSearch::start_with(cairn_tests::opensearch::Options::elasticsearch())?;
    let mode = ReadMode::Pit(Distribution::Elasticsearch);
    released_on_success_and_failed_sink(&node, mode)?;
    let search = Search::of(&node)?;
    search.index_with_docs("faulty", DOCS)?;
    // A point-in-time page may be asked for again, even after the server answered it.
    let mut faults = FAULTS.to_vec();
    faults.push(Fault::LostAnswer);
    let (r, docs, proxy) = read_through(&node, "faulty", mode, bursts(&faults, "/_search", None))?;
    ensure!(r? == u64::from(DOCS) && docs == u64::from(DOCS));
    injected_each(&proxy, &faults)?;
    ensure!(open_contexts(&search)? == 0, "a point in time is left");
    Ok(())
}
