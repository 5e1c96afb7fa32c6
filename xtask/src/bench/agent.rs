//! `cargo xtask bench agent`: cairn-agent's backup and restore against the ways Stash does it
//! and against the server's own limits, on one OpenSearch node in one run.
//!
//! - One OpenSearch node of the test harness (`cairn_tests::opensearch`, the version pinned for
//!   `cargo xtask search-testbed`), with a 2 GiB heap by default (`--heap-mib`).
//! - Data: `--docs` (default 1,000,000; `--quick` = 50,000) generated documents of about 1 KB
//!   (log-like: keywords, numbers, a text message from a fixed vocabulary, so it compresses like
//!   real text), spread over `--indices` (5) indices `bench-N`, 1 primary, 0 replicas.
//! - **raw `_bulk`**: loading that data is the raw `_bulk` figure: fresh indices with
//!   `refresh_interval: -1` and no replicas (as the agent's restore creates them), explicit ids,
//!   5,000 documents per request, 4 requests in flight (the agent's defaults), then the refresh
//!   interval reset and a refresh. The request bodies are generated before the clock starts.
//!   A subset (`--baseline-docs`, default 100,000) in indices `sub-N` is loaded first, so the
//!   JVM is warm for the measured load.
//! - **raw export**: every `bench-*` document read with 10,000-document pages, all indices at
//!   once, one stream each, the bodies parsed only for the next page's cursor and thrown away:
//!   once with a point in time (`_shard_doc` order, `search_after`), once with a scroll
//!   (`_doc` order). The faster is the limit.
//! - **cairn-agent**: the release binary (`cargo build --release -p cairn-agent`), run as a child
//!   with its default flags (`--page-size 5000`, `--slices auto`; restore `--workers 4`,
//!   `--batch-docs 5000`), into a repository in a local directory. Time is the process's wall
//!   time; peak RSS is `ru_maxrss` from `wait4`. Backed up twice (the second of unchanged data),
//!   then the indices are deleted and restored from the latest snapshot.
//! - **Stash's way**: `multielasticdump --direction=dump --match=^bench-.*$ --input=URL
//!   --output=DIR --ignoreType=template` with its defaults (`--limit=100`, `--parallel=<CPUs>`),
//!   then `restic backup DIR` (the repository initialised beforehand, not timed), on all the
//!   documents; and the same with multielasticdump's fastest flags (`--limit=10000`, the largest
//!   page the server serves, `--parallel=<indices>`). Each also runs on the `sub-*` subset, whose
//!   dump is then restored the Stash way: `restic restore` (timed on its own), the indices
//!   deleted, `multielasticdump --direction=load` with the same flags. The load is slow, so it
//!   runs on the subset only: compare documents per second (multielasticdump's fixed costs, a
//!   node process per index and kind, weigh more on a subset). The target ratios compare with
//!   the load alone.
//! - **Stash as shipped**: elasticdump 6.84.1 (`ELASTICDUMP_STASH_VERSION`, the version Stash's
//!   Elasticsearch addon image runs) with only what the addon passes: `multielasticdump
//!   --direction=dump --input=URL --output=DIR`, plus `--match=^shipped-.*$` because the node
//!   holds other indices. Its defaults apply: `--limit=100`, `--parallel=<CPUs>`, a new index
//!   started at most every `--interval=1000` ms, and each child elasticdump's throttle,
//!   `--concurrency=1` with `--intervalCap=5` per `--concurrencyInterval=5000` ms: at most 5
//!   pages of 100 per 5 s per index. (6.125.1 still passes these flags but no longer reads
//!   them, hence its far faster rows above.) Templates are dumped (no `--ignoreType`): one
//!   legacy template is put in place first, as real clusters have them; with none, 6.84.1's
//!   template dump fails on a 404. Then `restic backup --host host-0` into a repository of
//!   format version 1 (`restic init --repository-version 1`, as Stash's restic 0.13 made them:
//!   uncompressed). It runs on a subset of its own (`--shipped-docs`, default 20,000, in
//!   indices `shipped-N`), restored the Stash way: `restic restore`, the indices deleted,
//!   `multielasticdump --direction=load` 6.84.1; its restore time is the two together. In the
//!   same run cairn-agent backs up the same indices (before the dump, into a repository of its
//!   own) and restores them (last), so the ratios cairn / Stash as shipped compare like with
//!   like.
//! - Repository bytes are the files' sizes under the repository directory.
//!
//! The last line is `RESULT key=value ...` with every figure printed.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use cairn_api::result::{AgentResult, BackupResult};
use cairn_tests::opensearch::{
    OpenSearch, Options as NodeOptions, multielasticdump, stash_multielasticdump,
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::crds::repo_root;

const USAGE: &str = "usage: cargo xtask bench agent [--docs N | --quick] [--baseline-docs N] \
                     [--shipped-docs N] [--indices N] [--shards N] [--heap-mib M] [--agent PATH] \
                     [--keep] [--no-baselines]";

const PASSWORD: &str = "cairn-bench-password";
const HOST: &str = "bench";
/// The restic host of Stash's snapshots (the target alias's, `host-0` by default).
const STASH_HOST: &str = "host-0";
/// Documents per `_bulk` request and requests in flight for the raw load (the agent's defaults).
const BULK_DOCS: usize = 5000;
const BULK_WORKERS: usize = 4;
/// Page size of the raw export (the server's default `index.max_result_window`).
const RAW_PAGE: u32 = 10_000;

struct Options {
    docs: u64,
    baseline_docs: u64,
    /// Documents of the Stash-as-shipped subset.
    shipped_docs: u64,
    indices: u32,
    shards: u32,
    heap_mib: u32,
    agent: Option<PathBuf>,
    keep: bool,
    baselines: bool,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        docs: 1_000_000,
        baseline_docs: 100_000,
        shipped_docs: 20_000,
        indices: 5,
        shards: 1,
        heap_mib: 2048,
        agent: None,
        keep: false,
        baselines: true,
    };
    let (mut baseline_given, mut shipped_given) = (false, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context(USAGE);
        match a.as_str() {
            "--docs" => o.docs = documents(value()?, a)?,
            "--quick" => o.docs = 50_000,
            "--baseline-docs" => {
                o.baseline_docs = documents(value()?, a)?;
                baseline_given = true;
            }
            "--shipped-docs" => {
                o.shipped_docs = documents(value()?, a)?;
                shipped_given = true;
            }
            "--indices" => o.indices = value()?.parse().context("--indices")?,
            "--shards" => o.shards = value()?.parse().context("--shards")?,
            "--heap-mib" => o.heap_mib = value()?.parse().context("--heap-mib")?,
            "--agent" => o.agent = Some(PathBuf::from(value()?)),
            "--keep" => o.keep = true,
            "--no-baselines" => o.baselines = false,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if !baseline_given {
        o.baseline_docs = o.baseline_docs.min(o.docs);
    }
    if !shipped_given {
        o.shipped_docs = o.shipped_docs.min(o.docs);
    }
    let per_index = u64::from(o.indices);
    if o.docs == 0
        || o.indices == 0
        || o.shards == 0
        || o.baseline_docs < per_index
        || o.shipped_docs < per_index
    {
        bail!(USAGE);
    }
    Ok(o)
}

/// A number of documents given to `flag` (`_` may group the digits).
fn documents(value: &str, flag: &str) -> anyhow::Result<u64> {
    value
        .replace('_', "")
        .parse()
        .with_context(|| format!("{flag}: {value:?} is not a number of documents"))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if super::rerun_in_release("agent", args)? {
        return Ok(());
    }
    let o = options(args)?;
    let agent = match &o.agent {
        Some(p) => p.clone(),
        None => build_agent()?,
    };
    let work = std::env::temp_dir().join(format!("cairn-bench-agent-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    let result = bench(&o, &agent, &work);
    if o.keep || result.is_err() {
        eprintln!("work directory kept: {}", work.display());
    } else {
        let _ = std::fs::remove_dir_all(&work);
    }
    result
}

fn build_agent() -> anyhow::Result<PathBuf> {
    println!("==> cargo build --release -p cairn-agent");
    let status = Command::new(super::cargo())
        .args(["build", "--quiet", "--release", "-p", "cairn-agent"])
        .current_dir(repo_root())
        .status()
        .context("running cargo build")?;
    ensure!(status.success(), "building cairn-agent failed: {status}");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin = target.join("release/cairn-agent");
    ensure!(bin.is_file(), "no {}", bin.display());
    Ok(bin)
}

// ---------------------------------------------------------------------------------------------
// Data

/// SplitMix64: cheap, deterministic pseudo-random numbers.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The message vocabulary (split once, see [`words`]).
const WORDS: &str = "request response timeout connection refused accepted user session token expired renewed \
     cache miss hit database query slow fast retry attempt failed succeeded payment order \
     cart checkout item inventory warehouse shipment delivered pending queued worker thread \
     pool exhausted memory pressure garbage collection pause latency spike upstream \
     downstream service gateway proxy route handler invalid argument missing field schema \
     version deployed rollback config reloaded certificate rotated disk usage above threshold \
     below normal metrics exported scraped alert fired resolved node joined left cluster \
     leader elected shard relocated replica index created deleted updated batch processed \
     records bytes written read from to with after before during the a of in on";

fn words() -> &'static [&'static str] {
    static W: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    W.get_or_init(|| WORDS.split_whitespace().collect())
}

const LEVELS: &[&str] = &["info", "info", "info", "info", "debug", "warn", "error"];
const TIERS: &[&str] = &["free", "standard", "gold", "platinum"];
const NAMES: &[&str] = &[
    "Ada", "Grace", "Linus", "Margaret", "Ken", "Barbara", "Dennis", "Frances", "Edsger", "Zoë",
];

/// Appends the bulk action and the source of document `i` (about 1 KB of source).
fn write_doc(out: &mut Vec<u8>, index: &str, i: u64) {
    let mut r = mix(i ^ 0x00C0_FFEE);
    let mut next = move || {
        r = mix(r);
        r
    };
    let words = words();
    let pick = |n: u64, list: &[&'static str]| list[(n % list.len() as u64) as usize];
    let _ = writeln!(
        VecWriter(out),
        r#"{{"index":{{"_index":"{index}","_id":"d-{i:08}"}}}}"#
    );
    let start = out.len();
    let (a, b, c, d, e) = (next(), next(), next(), next(), next());
    let _ = write!(
        VecWriter(out),
        r#"{{"@timestamp":{},"seq":{i},"level":"{}","service":"svc-{}","host":"node-{:03}","status":{},"latency_ms":{}.{:03},"user":{{"id":"u-{:06}","name":"{} {}","tier":"{}"}},"tags":["{}","{}"],"message":""#,
        1_700_000_000_000u64 + i * 250,
        pick(a, LEVELS),
        a % 23,
        b % 200,
        [200, 200, 200, 201, 204, 301, 404, 500, 503][(b % 9) as usize],
        c % 2000,
        c % 1000,
        d % 500_000,
        pick(d >> 20, NAMES),
        pick(d >> 30, NAMES),
        pick(e, TIERS),
        pick(e >> 8, words),
        pick(e >> 16, words),
    );
    let mut w = next();
    let mut left = 8;
    while out.len() - start < 985 {
        if left == 0 {
            w = next();
            left = 8;
        }
        out.extend_from_slice(pick(w & 0xff, words).as_bytes());
        out.push(b' ');
        w >>= 8;
        left -= 1;
    }
    out.pop();
    out.extend_from_slice(b"\"}\n");
}

/// `fmt::Write` into a byte vector.
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

/// The `_bulk` bodies of documents `first..first+count` of `index`, and their source bytes.
fn bodies(index: &str, first: u64, count: u64) -> (Vec<Vec<u8>>, u64) {
    let mut out = Vec::new();
    let mut source = 0u64;
    let mut i = first;
    while i < first + count {
        let n = (first + count - i).min(BULK_DOCS as u64);
        let mut body = Vec::with_capacity(n as usize * 1100);
        for k in i..i + n {
            let before = body.len();
            write_doc(&mut body, index, k);
            let action = body[before..].iter().position(|b| *b == b'\n').unwrap_or(0) + 1;
            source += (body.len() - before - action - 1) as u64;
        }
        out.push(body);
        i += n;
    }
    (out, source)
}

fn mapping() -> Value {
    json!({"properties": {
        "@timestamp": {"type": "date", "format": "epoch_millis"},
        "seq": {"type": "long"},
        "level": {"type": "keyword"},
        "service": {"type": "keyword"},
        "host": {"type": "keyword"},
        "status": {"type": "integer"},
        "latency_ms": {"type": "float"},
        "user": {"properties": {
            "id": {"type": "keyword"},
            "name": {"type": "text"},
            "tier": {"type": "keyword"}}},
        "tags": {"type": "keyword"},
        "message": {"type": "text"}}})
}

// ---------------------------------------------------------------------------------------------
// HTTP

#[derive(Clone)]
struct Http {
    client: reqwest::Client,
    url: String,
}

impl Http {
    fn new(url: String) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()?;
        Ok(Self { client, url })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut rb = self
            .client
            .request(method.clone(), format!("{}{path}", self.url));
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb
            .send()
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        ensure!(
            status.is_success(),
            "{method} {path}: {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
        Ok(serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    /// Reads a search answer; returns the page and the body's size.
    async fn search(&self, path: &str, body: Value) -> anyhow::Result<(SearchPage, usize)> {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = resp.status();
        let bytes = resp.bytes().await?;
        ensure!(
            status.is_success(),
            "POST {path}: {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
        let page: SearchPage =
            serde_json::from_slice(&bytes).with_context(|| format!("POST {path}: answer"))?;
        Ok((page, bytes.len()))
    }

    async fn count(&self, pattern: &str) -> anyhow::Result<u64> {
        self.call(reqwest::Method::POST, &format!("/{pattern}/_refresh"), None)
            .await?;
        let v = self
            .call(reqwest::Method::GET, &format!("/{pattern}/_count"), None)
            .await?;
        v["count"].as_u64().context("no count")
    }

    async fn delete_indices(&self, names: &[String]) -> anyhow::Result<()> {
        for n in names {
            self.call(reqwest::Method::DELETE, &format!("/{n}"), None)
                .await?;
        }
        Ok(())
    }
}

/// What the raw reader needs of a search answer (`_source` is skipped, not kept).
#[derive(Deserialize)]
struct SearchPage {
    #[serde(default)]
    pit_id: Option<String>,
    #[serde(default, rename = "_scroll_id")]
    scroll_id: Option<String>,
    hits: Hits,
}

#[derive(Deserialize)]
struct Hits {
    hits: Vec<Hit>,
}

#[derive(Deserialize)]
struct Hit {
    #[serde(default)]
    sort: Option<Value>,
}

#[derive(Deserialize)]
struct BulkAnswer {
    errors: bool,
}

/// Sends the bodies with `workers` requests in flight; fails on any rejected document.
async fn bulk(http: &Http, bodies: Vec<Vec<u8>>, workers: usize) -> anyhow::Result<()> {
    let queue = Arc::new(Mutex::new(VecDeque::from(bodies)));
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..workers {
        let queue = queue.clone();
        let http = http.clone();
        set.spawn(async move {
            loop {
                let Some(body) = queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("lock"))?
                    .pop_front()
                else {
                    return Ok::<_, anyhow::Error>(());
                };
                let resp = http
                    .client
                    .post(format!("{}/_bulk", http.url))
                    .header("content-type", "application/x-ndjson")
                    .body(body)
                    .send()
                    .await
                    .context("POST /_bulk")?;
                let status = resp.status();
                let bytes = resp.bytes().await?;
                ensure!(
                    status.is_success(),
                    "_bulk: {status}: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
                );
                let answer: BulkAnswer = serde_json::from_slice(&bytes)?;
                ensure!(
                    !answer.errors,
                    "_bulk rejected documents: {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(1000)])
                );
            }
        });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(())
}

/// The index names of a set.
fn names(prefix: &str, indices: u32) -> Vec<String> {
    (0..indices).map(|k| format!("{prefix}-{k}")).collect()
}

/// Documents of index `k` of `indices` when `total` are spread over them.
fn share(total: u64, indices: u32, k: u32) -> (u64, u64) {
    let per = total / u64::from(indices);
    let first = per * u64::from(k);
    let count = if k + 1 == indices { total - first } else { per };
    (first, count)
}

struct Loaded {
    secs: f64,
    source_bytes: u64,
    request_bytes: u64,
}

/// Creates the indices `prefix-N` and loads `total` documents; the clock runs over index
/// creation, the `_bulk` requests, the refresh interval's reset and the refresh, not over
/// generating the bodies.
async fn load_set(http: &Http, prefix: &str, total: u64, o: &Options) -> anyhow::Result<Loaded> {
    let mut secs = 0.0;
    let mut source_bytes = 0;
    let mut request_bytes = 0;
    let names = names(prefix, o.indices);
    for (k, name) in names.iter().enumerate() {
        let (first, count) = share(total, o.indices, k as u32);
        let (bodies, source) = bodies(name, first, count);
        source_bytes += source;
        request_bytes += bodies.iter().map(|b| b.len() as u64).sum::<u64>();
        let t = Instant::now();
        http.call(
            reqwest::Method::PUT,
            &format!("/{name}"),
            Some(json!({
                "settings": {
                    "index.number_of_shards": o.shards,
                    "index.number_of_replicas": 0,
                    "index.refresh_interval": "-1"},
                "mappings": mapping()})),
        )
        .await?;
        bulk(http, bodies, BULK_WORKERS).await?;
        secs += t.elapsed().as_secs_f64();
    }
    let t = Instant::now();
    let pattern = format!("{prefix}-*");
    http.call(
        reqwest::Method::PUT,
        &format!("/{pattern}/_settings"),
        Some(json!({"index.refresh_interval": null})),
    )
    .await?;
    http.call(reqwest::Method::POST, &format!("/{pattern}/_refresh"), None)
        .await?;
    secs += t.elapsed().as_secs_f64();
    let count = http.count(&pattern).await?;
    ensure!(count == total, "{pattern}: {count} documents, not {total}");
    Ok(Loaded {
        secs,
        source_bytes,
        request_bytes,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    Pit,
    Scroll,
}

/// Reads every document of `index` with `RAW_PAGE`-document pages; returns documents and bytes.
async fn read_raw(http: &Http, index: &str, reader: Reader) -> anyhow::Result<(u64, u64)> {
    let (mut docs, mut bytes) = (0u64, 0u64);
    match reader {
        Reader::Pit => {
            let open = http
                .call(
                    reqwest::Method::POST,
                    &format!("/{index}/_search/point_in_time?keep_alive=5m"),
                    None,
                )
                .await?;
            let mut pit = open["pit_id"].as_str().context("no pit_id")?.to_string();
            let mut after: Option<Value> = None;
            loop {
                let mut body = json!({
                    "size": RAW_PAGE,
                    "pit": {"id": pit, "keep_alive": "5m"},
                    "sort": [{"_shard_doc": "asc"}],
                    "track_total_hits": false});
                if let Some(a) = &after {
                    body["search_after"] = a.clone();
                }
                let (page, n) = http.search("/_search", body).await?;
                bytes += n as u64;
                docs += page.hits.hits.len() as u64;
                if let Some(id) = page.pit_id {
                    pit = id;
                }
                if page.hits.hits.len() < RAW_PAGE as usize {
                    break;
                }
                after = page.hits.hits.last().and_then(|h| h.sort.clone());
                ensure!(after.is_some(), "no sort values");
            }
            http.call(
                reqwest::Method::DELETE,
                "/_search/point_in_time",
                Some(json!({"pit_id": [pit]})),
            )
            .await?;
        }
        Reader::Scroll => {
            let (mut page, n) = http
                .search(
                    &format!("/{index}/_search?scroll=5m"),
                    json!({"size": RAW_PAGE, "sort": ["_doc"]}),
                )
                .await?;
            bytes += n as u64;
            let mut id = page.scroll_id.take().context("no scroll id")?;
            while !page.hits.hits.is_empty() {
                docs += page.hits.hits.len() as u64;
                let (next, n) = http
                    .search("/_search/scroll", json!({"scroll": "5m", "scroll_id": id}))
                    .await?;
                bytes += n as u64;
                page = next;
                if let Some(i) = page.scroll_id.take() {
                    id = i;
                }
            }
            http.call(
                reqwest::Method::DELETE,
                "/_search/scroll",
                Some(json!({"scroll_id": [id]})),
            )
            .await?;
        }
    }
    Ok((docs, bytes))
}

/// All indices at once, one stream each.
async fn export_raw(http: &Http, indices: &[String], reader: Reader) -> anyhow::Result<(u64, u64)> {
    let mut set = tokio::task::JoinSet::new();
    for i in indices {
        let (http, i) = (http.clone(), i.clone());
        set.spawn(async move { read_raw(&http, &i, reader).await });
    }
    let (mut docs, mut bytes) = (0, 0);
    while let Some(r) = set.join_next().await {
        let (d, b) = r??;
        docs += d;
        bytes += b;
    }
    Ok((docs, bytes))
}

// ---------------------------------------------------------------------------------------------
// Processes

/// A finished child: wall time, CPU time (from `wait4`) and peak RSS (sampled).
#[derive(Clone, Copy, Debug, Default)]
struct Measured {
    secs: f64,
    cpu_secs: f64,
    max_rss_kib: u64,
    /// CPU seconds the OpenSearch JVM used meanwhile.
    server_cpu_secs: f64,
}

impl Measured {
    fn plus(self, other: Measured) -> Measured {
        Measured {
            secs: self.secs + other.secs,
            cpu_secs: self.cpu_secs + other.cpu_secs,
            max_rss_kib: self.max_rss_kib.max(other.max_rss_kib),
            server_cpu_secs: self.server_cpu_secs + other.server_cpu_secs,
        }
    }
}

/// CPU seconds (user + system) of a process so far.
fn process_cpu(pid: Option<u32>) -> f64 {
    let Some(pid) = pid else { return 0.0 };
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which is in parentheses and may hold spaces).
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: a plain query.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// `pid` and its descendants.
fn process_tree(pid: u32, out: &mut Vec<u32>) {
    out.push(pid);
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return;
    };
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            process_tree(c, out);
        }
    }
}

/// Samples the peak memory of a process and its descendants every 20 ms: the larger of the
/// process's own high-water mark (`VmHWM`) and the sum of the tree's `VmRSS`. (`ru_maxrss` from
/// `wait4` cannot be used: Linux carries the parent's high-water mark over `fork` + `exec`.)
fn sample_peak(pid: u32, stop: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut peak = 0;
        let mut tree = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            tree.clear();
            process_tree(pid, &mut tree);
            let sum: u64 = tree.iter().map(|p| status_kib(*p, "VmRSS:")).sum();
            peak = peak.max(sum).max(status_kib(pid, "VmHWM:"));
            std::thread::sleep(Duration::from_millis(20));
        }
        peak
    })
}

/// Runs `cmd` to its end with stdout and stderr in `<log>.out` / `<log>.err`.
fn run_measured(cmd: &mut Command, log: &Path, server: Option<u32>) -> anyhow::Result<Measured> {
    let out = File::create(log.with_extension("out"))?;
    let err = File::create(log.with_extension("err"))?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    let server_before = process_cpu(server);
    let started = Instant::now();
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    let pid = child.id() as libc::pid_t;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(child.id(), stop.clone());
    let mut status: libc::c_int = 0;
    // SAFETY: zeroed rusage is a valid value; wait4 fills it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: waits for our own child; `child` is never waited on by std afterwards.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    let secs = started.elapsed().as_secs_f64();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak_kib = sampler.join().unwrap_or(0);
    drop(child);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    let m = Measured {
        secs,
        cpu_secs: tv(usage.ru_utime) + tv(usage.ru_stime),
        max_rss_kib: peak_kib,
        server_cpu_secs: process_cpu(server) - server_before,
    };
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    if !ok {
        let tail = std::fs::read_to_string(log.with_extension("err")).unwrap_or_default();
        let tail: Vec<&str> = tail.lines().rev().take(30).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "{:?} failed (wait status {status}); {}:\n{}",
            cmd.get_program(),
            log.with_extension("err").display(),
            tail.join("\n")
        );
    }
    Ok(m)
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

struct Agent<'a> {
    bin: &'a Path,
    work: &'a Path,
    /// The indices it backs up and restores: `<set>-*`.
    set: &'static str,
    repo: PathBuf,
    url: String,
    server: Option<u32>,
    runs: u32,
}

impl Agent<'_> {
    fn run(&mut self, args: &[String]) -> anyhow::Result<(Measured, Option<AgentResult>)> {
        self.runs += 1;
        let log = self.work.join(format!("agent-{}-{}", self.set, self.runs));
        let termination = log.with_extension("result");
        let tmp = self.work.join("agent-tmp");
        std::fs::create_dir_all(&tmp)?;
        let mut cmd = Command::new(self.bin);
        cmd.args(args)
            .env("RESTIC_PASSWORD", PASSWORD)
            .env("CAIRN_TERMINATION_LOG", &termination)
            .env("CAIRN_TMP_DIR", &tmp)
            .env_remove("RESTIC_REPOSITORY");
        let m = run_measured(&mut cmd, &log, self.server)?;
        let text = std::fs::read_to_string(&termination).unwrap_or_default();
        Ok((m, AgentResult::from_termination_message(&text)))
    }

    /// A backup of the set, which must have seen `docs` documents.
    fn backup(&mut self, docs: u64) -> anyhow::Result<(Measured, BackupResult)> {
        let args = self.common("backup");
        let (m, result) = self.run(&args)?;
        let Some(AgentResult::Backup(b)) = result else {
            bail!(
                "cairn-agent backup of {}-*: no backup result: {result:?}",
                self.set
            );
        };
        ensure!(
            b.documents == docs,
            "backup of {}-*: {} documents, not {docs}",
            self.set,
            b.documents
        );
        Ok((m, b))
    }

    /// A restore of the set's latest snapshot into deleted indices, counted on the server.
    fn restore(&mut self, docs: u64, c: &Ctx<'_>) -> anyhow::Result<Measured> {
        c.rt.block_on(c.http.delete_indices(&names(self.set, c.indices)))?;
        let args = self.common("restore");
        let (m, result) = self.run(&args)?;
        let Some(AgentResult::Restore(r)) = result else {
            bail!(
                "cairn-agent restore of {}-*: no restore result: {result:?}",
                self.set
            );
        };
        let count = c.rt.block_on(c.http.count(&format!("{}-*", self.set)))?;
        ensure!(
            r.documents == docs && count == docs,
            "restore of {}-*: {} documents restored, the server counts {count}, not {docs}",
            self.set,
            r.documents
        );
        Ok(m)
    }

    fn common(&self, cmd: &str) -> Vec<String> {
        vec![
            cmd.into(),
            format!("--repository=local:{}", self.repo.display()),
            format!("--host={HOST}"),
            format!("--url={}", self.url),
            format!("--include={}-*", self.set),
            "--wait-timeout=60s".into(),
        ]
    }
}

fn restic(repo: &Path, cache: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("restic");
    cmd.arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("RESTIC_CACHE_DIR", cache)
        .env_remove("RESTIC_REPOSITORY");
    cmd
}

/// How one of Stash's ways calls its tools.
struct StashTools {
    multi: PathBuf,
    /// Flags of every multielasticdump call besides direction, match, input, output and the
    /// run's own.
    fixed: &'static [&'static str],
    /// `restic init`'s arguments.
    init: &'static [&'static str],
    host: &'static str,
}

impl StashTools {
    /// The current elasticdump (`ELASTICDUMP_VERSION`), templates left out, restic's defaults.
    fn current() -> anyhow::Result<Self> {
        Ok(Self {
            multi: multielasticdump()?,
            fixed: &["--ignoreType=template"],
            init: &["init"],
            host: HOST,
        })
    }

    /// What Stash's addon image ran: elasticdump 6.84.1 with nothing but the addon's flags, into
    /// a repository of format version 1 (restic 0.13's), host `host-0`.
    fn shipped() -> anyhow::Result<Self> {
        Ok(Self {
            multi: stash_multielasticdump()?,
            fixed: &[],
            init: &["init", "--repository-version", "1"],
            host: STASH_HOST,
        })
    }
}

/// One of Stash's ways on one set of indices: dump, `restic backup`, and with `load`, `restic
/// restore` and the load into deleted indices.
struct StashRun {
    label: &'static str,
    flags: Vec<String>,
    docs: u64,
    dump: Measured,
    restic_backup: Measured,
    restic_restore: Option<Measured>,
    load: Option<Measured>,
    dump_bytes: u64,
    repo_bytes: u64,
}

/// What the baseline runs share.
struct Ctx<'a> {
    work: &'a Path,
    url: &'a str,
    server: Option<u32>,
    rt: &'a tokio::runtime::Runtime,
    http: &'a Http,
    indices: u32,
}

fn stash(
    label: &'static str,
    flags: Vec<String>,
    set: &str,
    docs: u64,
    load: bool,
    tools: &StashTools,
    c: &Ctx<'_>,
) -> anyhow::Result<StashRun> {
    let dir = c.work.join(format!("stash-{label}-{set}"));
    let dump_dir = dir.join("dump");
    let repo = dir.join("repo");
    let cache = dir.join("cache");
    std::fs::create_dir_all(&dump_dir)?;
    run_measured(
        &mut restic(&repo, &cache, tools.init),
        &dir.join("restic-init"),
        None,
    )?;
    let mut cmd = Command::new(&tools.multi);
    cmd.args([
        "--direction=dump",
        &format!("--match=^{set}-.*$"),
        &format!("--input={}", c.url),
        &format!("--output={}", dump_dir.display()),
    ])
    .args(tools.fixed)
    .args(&flags);
    eprintln!("  {label} {set}-*: multielasticdump dump ...");
    let dump = run_measured(&mut cmd, &dir.join("dump"), c.server)?;
    let dump_bytes = dir_bytes(&dump_dir);
    eprintln!("  {label} {set}-*: restic backup ...");
    let restic_backup = run_measured(
        &mut restic(
            &repo,
            &cache,
            &[
                "backup",
                "--host",
                tools.host,
                dump_dir.to_str().context("path")?,
            ],
        ),
        &dir.join("restic-backup"),
        None,
    )?;
    let repo_bytes = dir_bytes(&repo);
    let mut run = StashRun {
        label,
        flags,
        docs,
        dump,
        restic_backup,
        restic_restore: None,
        load: None,
        dump_bytes,
        repo_bytes,
    };
    if load {
        stash_restore(&mut run, set, &dir, tools, c)?;
        // The disk space back for the next runs; the logs stay.
        let _ = std::fs::remove_dir_all(&dump_dir);
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(run)
}

/// Stash's restore of a [`stash`] run: the dump back from the repository (`restic restore`),
/// the indices deleted, and the dump loaded into the server.
fn stash_restore(
    run: &mut StashRun,
    set: &str,
    dir: &Path,
    tools: &StashTools,
    c: &Ctx<'_>,
) -> anyhow::Result<()> {
    let label = run.label;
    let restored = dir.join("restored");
    eprintln!("  {label} {set}-*: restic restore ...");
    run.restic_restore = Some(run_measured(
        &mut restic(
            &dir.join("repo"),
            &dir.join("cache"),
            &[
                "restore",
                "latest",
                "--target",
                restored.to_str().context("path")?,
            ],
        ),
        &dir.join("restic-restore"),
        None,
    )?);
    let dump_dir = dir.join("dump");
    let input = restored.join(dump_dir.strip_prefix("/").unwrap_or(&dump_dir));
    ensure!(input.is_dir(), "restic restore: no {}", input.display());
    c.rt.block_on(c.http.delete_indices(&names(set, c.indices)))?;
    let mut cmd = Command::new(&tools.multi);
    cmd.args([
        "--direction=load",
        &format!("--match=^{set}-.*$"),
        &format!("--input={}", input.display()),
        &format!("--output={}", c.url),
    ])
    .args(tools.fixed)
    .args(&run.flags);
    eprintln!("  {label} {set}-*: multielasticdump load ...");
    run.load = Some(run_measured(&mut cmd, &dir.join("load"), c.server)?);
    let count = c.rt.block_on(c.http.count(&format!("{set}-*")))?;
    ensure!(
        count == run.docs,
        "after multielasticdump load ({label}): {count} documents, not {}",
        run.docs
    );
    let _ = std::fs::remove_dir_all(&restored);
    Ok(())
}

/// Stash as shipped against cairn-agent on the `shipped-*` subset, in the table's order: cairn's
/// backup, Stash's, Stash's restore, cairn's. Both backups read the indices as loaded; cairn's
/// restore comes last, into indices deleted again.
fn stash_shipped(
    o: &Options,
    tools: &StashTools,
    agent_bin: &Path,
    c: &Ctx<'_>,
    kv: &mut Vec<(String, String)>,
) -> anyhow::Result<Vec<Row>> {
    let docs = o.shipped_docs;
    // A cluster with no legacy template fails 6.84.1's default dump (`GET /_template/*` answers
    // 404); real ones hold some (Elasticsearch's X-Pack installs several). One that matches no
    // index of the bench, so the dump and the load carry it as they would there.
    c.rt.block_on(c.http.call(
        reqwest::Method::PUT,
        "/_template/shipped-logs",
        Some(json!({"index_patterns": ["logs-shipped-*"], "settings": {"number_of_shards": 1}})),
    ))?;
    let mut agent = Agent {
        bin: agent_bin,
        work: c.work,
        set: "shipped",
        repo: c.work.join("repo-shipped"),
        url: c.url.to_string(),
        server: c.server,
        runs: 0,
    };
    eprintln!("Stash as shipped: cairn-agent backup of shipped-* ...");
    let (backup, b) = agent.backup(docs)?;
    eprintln!("Stash as shipped (elasticdump 6.84.1, its defaults) ...");
    let s = stash("shipped", Vec::new(), "shipped", docs, true, tools, c)?;
    eprintln!("Stash as shipped: cairn-agent restore of shipped-* ...");
    let restore = agent.restore(docs, c)?;
    Ok(shipped_rows(&s, (backup, b.total_bytes), restore, kv))
}

/// The rows of [`stash_shipped`], and its parts' figures for the `RESULT` line.
fn shipped_rows(
    s: &StashRun,
    (backup, snapshot_bytes): (Measured, u64),
    restore: Measured,
    kv: &mut Vec<(String, String)>,
) -> Vec<Row> {
    let docs = s.docs;
    let (rr, load) = (
        s.restic_restore.unwrap_or_default(),
        s.load.unwrap_or_default(),
    );
    kv.push(("stash_shipped_dump_s".into(), format!("{:.2}", s.dump.secs)));
    kv.push((
        "stash_shipped_restic_backup_s".into(),
        format!("{:.2}", s.restic_backup.secs),
    ));
    kv.push((
        "stash_shipped_restic_restore_s".into(),
        format!("{:.2}", rr.secs),
    ));
    kv.push(("stash_shipped_load_s".into(), format!("{:.2}", load.secs)));
    kv.push(("stash_shipped_repo_bytes".into(), s.repo_bytes.to_string()));
    let size = |bytes: u64| bytes as f64 / 1e6;
    vec![
        Row::measured(
            "cairn_subset_backup",
            "cairn-agent backup (defaults), the same indices",
            backup,
            docs,
            format!(
                "snapshot {:.1} MB, a repository of its own",
                size(snapshot_bytes)
            ),
        ),
        Row::measured(
            "stash_shipped_backup",
            "multielasticdump 6.84.1 (Stash's defaults) + restic v1",
            s.dump.plus(s.restic_backup),
            docs,
            format!(
                "dump {:.1} s + restic {:.1} s; dump dir {:.1} MB, restic repo {:.1} MB",
                s.dump.secs,
                s.restic_backup.secs,
                size(s.dump_bytes),
                size(s.repo_bytes)
            ),
        ),
        Row::measured(
            "stash_shipped_restore",
            "restic restore + multielasticdump 6.84.1 load",
            rr.plus(load),
            docs,
            format!("restic restore {:.1} s + load {:.1} s", rr.secs, load.secs),
        ),
        Row::measured(
            "cairn_subset_restore",
            "cairn-agent restore (defaults), the same indices",
            restore,
            docs,
            "into deleted indices, verified".into(),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The run

fn tool_version(program: &Path, arg: &str) -> String {
    Command::new(program)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn grouped(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A row of the table.
struct Row {
    key: String,
    what: String,
    docs: u64,
    secs: f64,
    rss_kib: Option<u64>,
    cpu_secs: Option<f64>,
    server_cpu_secs: Option<f64>,
    note: String,
}

impl Row {
    /// A row of a measured child process.
    fn measured(key: &str, what: &str, m: Measured, docs: u64, note: String) -> Row {
        Row {
            key: key.into(),
            what: what.into(),
            docs,
            secs: m.secs,
            rss_kib: Some(m.max_rss_kib),
            cpu_secs: Some(m.cpu_secs),
            server_cpu_secs: Some(m.server_cpu_secs),
            note,
        }
    }

    fn dps(&self) -> f64 {
        self.docs as f64 / self.secs.max(1e-9)
    }
}

/// Native snapshots (driver Native) of the same set into the node's `path.repo`: a backup, a
/// second of unchanged data, and a restore into deleted indices, counted on the server.
fn native_rows(
    agent: &mut Agent<'_>,
    path_repo: &Path,
    docs: u64,
    c: &Ctx<'_>,
) -> anyhow::Result<(Vec<Row>, Row)> {
    let (url, set) = (agent.url.clone(), agent.set);
    let flags = |cmd: &str| -> Vec<String> {
        vec![
            cmd.into(),
            "--provider=local".into(),
            format!("--location={}", path_repo.join("native").display()),
            "--repository-namespace=bench".into(),
            "--repository-name=native".into(),
            format!("--url={url}"),
            format!("--include={set}-*"),
            "--namespace=bench".into(),
            // The servers' 40 MB/s per node would measure the throttle, not the copy.
            "--max-snapshot-bytes-per-sec=0".into(),
            "--max-restore-bytes-per-sec=0".into(),
        ]
    };
    let mut backups = Vec::new();
    for n in 1..=2 {
        let mut args = flags("snapshot");
        args.extend([
            "--configuration=bench".into(),
            format!("--session=native-{n}"),
        ]);
        let (m, result) = agent.run(&args)?;
        let Some(AgentResult::Backup(b)) = result else {
            bail!("native snapshot #{n}: no backup result: {result:?}");
        };
        ensure!(
            b.documents == docs,
            "native snapshot #{n}: {} documents",
            b.documents
        );
        let native = b.native.clone().unwrap_or_default();
        backups.push(Row {
            key: format!("native_backup{n}"),
            what: if n == 1 {
                "native snapshot (driver Native, fs repository)".into()
            } else {
                "native snapshot #2, unchanged data".into()
            },
            docs,
            secs: m.secs,
            rss_kib: Some(m.max_rss_kib),
            cpu_secs: Some(m.cpu_secs),
            server_cpu_secs: Some(m.server_cpu_secs),
            note: format!(
                "{} files, {:.1} MB; added {} files, {:.1} MB",
                native.files,
                b.total_bytes as f64 / 1e6,
                native.added_files,
                b.added_bytes as f64 / 1e6
            ),
        });
    }
    c.rt.block_on(c.http.delete_indices(&names(set, c.indices)))?;
    // A restore is a recovery: the cluster's recovery throttle (40 MB/s by default) binds it
    // beside the repository's. An admin lifts it for a restore of this size; cairn leaves
    // cluster settings alone, so the bench does it here, and puts it back.
    let recovery = |value: Value| {
        let body = json!({"transient": {"indices.recovery.max_bytes_per_sec": value}});
        c.rt.block_on(
            c.http
                .call(reqwest::Method::PUT, "/_cluster/settings", Some(body)),
        )
    };
    recovery(json!("2gb"))?;
    let restored = agent.run(&flags("snapshot-restore"));
    recovery(Value::Null)?;
    let (m, result) = restored?;
    let Some(AgentResult::Restore(r)) = result else {
        bail!("native restore: no restore result: {result:?}");
    };
    let count = c.rt.block_on(c.http.count(&format!("{set}-*")))?;
    ensure!(
        r.documents == docs && count == docs,
        "native restore: {} restored, the server counts {count}, not {docs}",
        r.documents
    );
    let restore = Row {
        key: "native_restore".into(),
        what: "native restore (driver Native), latest".into(),
        docs,
        secs: m.secs,
        rss_kib: Some(m.max_rss_kib),
        cpu_secs: Some(m.cpu_secs),
        server_cpu_secs: Some(m.server_cpu_secs),
        note:
            "into deleted indices, primaries active, counted; indices.recovery.max_bytes_per_sec \
               2gb for it"
                .into(),
    };
    Ok((backups, restore))
}

fn bench(o: &Options, agent_bin: &Path, work: &Path) -> anyhow::Result<()> {
    let total_started = Instant::now();
    let current = StashTools::current()?;
    let shipped = o.baselines.then(StashTools::shipped).transpose()?;
    let load_before = super::loadavg();
    println!("cairn-agent benchmark (release build)");
    println!("machine: {}", super::machine_info());
    println!("load average before: {load_before}");
    std::io::Write::flush(&mut std::io::stdout())?;

    eprintln!("starting OpenSearch (heap {} MiB) ...", o.heap_mib);
    let node = OpenSearch::start_with(NodeOptions {
        heap_mib: o.heap_mib,
        ..NodeOptions::default()
    })?;
    let url = node.url();
    let server = node.pid();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let http = Http::new(url.clone())?;
    let bench_names = names("bench", o.indices);

    // The subset first: it warms the JVM up for the measured load.
    eprintln!("loading {} documents into sub-* ...", o.baseline_docs);
    let sub = rt.block_on(load_set(&http, "sub", o.baseline_docs, o))?;
    if shipped.is_some() {
        eprintln!("loading {} documents into shipped-* ...", o.shipped_docs);
        rt.block_on(load_set(&http, "shipped", o.shipped_docs, o))?;
    }
    eprintln!("loading {} documents into bench-* (raw _bulk) ...", o.docs);
    let cpu0 = process_cpu(server);
    let loaded = rt.block_on(load_set(&http, "bench", o.docs, o))?;
    let bulk_server_cpu = process_cpu(server) - cpu0;
    let avg_doc = loaded.source_bytes as f64 / o.docs as f64;

    println!(
        "server: OpenSearch {} (one node, heap {} MiB, harness launcher), {url}",
        node.version(),
        o.heap_mib
    );
    println!(
        "data: {} documents in {} indices bench-0..{} ({} primary, 0 replicas), average _source {avg_doc:.0} bytes, {:.1} MB of _source",
        grouped(o.docs),
        o.indices,
        o.indices - 1,
        o.shards,
        loaded.source_bytes as f64 / 1e6
    );
    println!(
        "subset for elasticdump's slow load: {} documents in {} indices sub-*, same generator: compare docs/s \
         (loaded first, untimed warm-up: {:.1} s, {:.0} docs/s)",
        grouped(o.baseline_docs),
        o.indices,
        sub.secs,
        o.baseline_docs as f64 / sub.secs
    );
    println!(
        "repository: a local directory ({}); agent {}, {}, {}",
        work.display(),
        agent_bin.display(),
        tool_version(Path::new("restic"), "version"),
        format_args!(
            "elasticdump {}",
            tool_version(&current.multi.with_file_name("elasticdump"), "--version")
        ),
    );
    if let Some(s) = &shipped {
        println!(
            "Stash as shipped: elasticdump {} on {} documents in {} indices shipped-*, restic \
             repository format version 1, host {STASH_HOST}",
            tool_version(&s.multi.with_file_name("elasticdump"), "--version"),
            grouped(o.shipped_docs),
            o.indices
        );
    }
    println!();
    std::io::Write::flush(&mut std::io::stdout())?;

    let mut backup_rows: Vec<Row> = Vec::new();
    let mut restore_rows: Vec<Row> = Vec::new();
    let mut kv: Vec<(String, String)> = vec![
        ("docs".into(), o.docs.to_string()),
        ("baseline_docs".into(), o.baseline_docs.to_string()),
        ("shipped_docs".into(), o.shipped_docs.to_string()),
        ("indices".into(), o.indices.to_string()),
        ("avg_doc_bytes".into(), format!("{avg_doc:.0}")),
        ("source_bytes".into(), loaded.source_bytes.to_string()),
        ("heap_mib".into(), o.heap_mib.to_string()),
        ("repo".into(), "local".into()),
    ];

    // Raw export.
    let mut raw_best = 0.0f64;
    for (reader, name) in [(Reader::Pit, "pit"), (Reader::Scroll, "scroll")] {
        eprintln!("raw export ({name}) ...");
        let cpu0 = process_cpu(server);
        let t = Instant::now();
        let (docs, bytes) = match rt.block_on(export_raw(&http, &bench_names, reader)) {
            Ok(v) => v,
            Err(e) => {
                let e = format!("{e:#}");
                let cut = e.char_indices().nth(240).map_or(e.len(), |(i, _)| i);
                println!("raw export ({name}) failed, left out: {}", &e[..cut]);
                continue;
            }
        };
        let secs = t.elapsed().as_secs_f64();
        ensure!(
            docs == o.docs,
            "raw export ({name}): {docs} documents, not {}",
            o.docs
        );
        let row = Row {
            key: format!("raw_export_{name}"),
            what: format!(
                "raw export, {} {RAW_PAGE}/page, {} streams -> /dev/null",
                if reader == Reader::Pit {
                    "PIT+search_after"
                } else {
                    "scroll"
                },
                o.indices
            ),
            docs,
            secs,
            rss_kib: None,
            cpu_secs: None,
            server_cpu_secs: Some(process_cpu(server) - cpu0),
            note: format!("{:.0} MB/s of answers", bytes as f64 / 1e6 / secs),
        };
        raw_best = raw_best.max(row.dps());
        backup_rows.push(row);
    }

    ensure!(raw_best > 0.0, "no raw export succeeded");

    // cairn-agent backups.
    let mut agent = Agent {
        bin: agent_bin,
        work,
        set: "bench",
        repo: work.join("repo"),
        url: url.clone(),
        server,
        runs: 0,
    };
    let mut agent_rows = Vec::new();
    let mut repo_sizes = Vec::new();
    let mut reported_added = Vec::new();
    for n in 1..=2 {
        eprintln!("cairn-agent backup #{n} ...");
        let (m, b) = agent
            .backup(o.docs)
            .with_context(|| format!("backup #{n}"))?;
        repo_sizes.push(dir_bytes(&agent.repo));
        reported_added.push(b.added_bytes);
        agent_rows.push(m);
        backup_rows.push(Row {
            key: format!("agent_backup{n}"),
            what: if n == 1 {
                "cairn-agent backup (defaults)".into()
            } else {
                "cairn-agent backup #2, unchanged data".into()
            },
            docs: b.documents,
            secs: m.secs,
            rss_kib: Some(m.max_rss_kib),
            cpu_secs: Some(m.cpu_secs),
            server_cpu_secs: Some(m.server_cpu_secs),
            note: format!(
                "snapshot {:.1} MB, added {:.1} MB",
                b.total_bytes as f64 / 1e6,
                b.added_bytes as f64 / 1e6
            ),
        });
    }

    // Stash's ways: backups of all the documents, and of the subset, which is then loaded back.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut stash_runs = Vec::new();
    let c = Ctx {
        work,
        url: &url,
        server,
        rt: &rt,
        http: &http,
        indices: o.indices,
    };
    if o.baselines {
        let fast = vec![
            "--limit=10000".to_string(),
            format!("--parallel={}", o.indices),
        ];
        for (label, flags) in [("default", Vec::new()), ("fast", fast)] {
            eprintln!("Stash's way ({label} flags) ...");
            let (bench, sub) = (o.docs, o.baseline_docs);
            stash_runs.push(stash(
                label,
                flags.clone(),
                "bench",
                bench,
                false,
                &current,
                &c,
            )?);
            stash_runs.push(stash(label, flags, "sub", sub, true, &current, &c)?);
        }
    }
    let shipped_rows = match &shipped {
        Some(tools) => stash_shipped(o, tools, agent_bin, &c, &mut kv)?,
        None => Vec::new(),
    };
    for s in &stash_runs {
        let flags = if s.flags.is_empty() {
            format!("defaults: --limit=100 --parallel={cpus}")
        } else {
            s.flags.join(" ")
        };
        let subset = s.load.is_some();
        let key = if subset {
            format!("stash_{}_subset", s.label)
        } else {
            format!("stash_{}", s.label)
        };
        let both = s.dump.plus(s.restic_backup);
        backup_rows.push(Row {
            key: format!("{key}_backup"),
            what: format!(
                "multielasticdump ({flags}) + restic backup{}",
                if subset { ", subset" } else { "" }
            ),
            docs: s.docs,
            secs: both.secs,
            rss_kib: Some(both.max_rss_kib),
            cpu_secs: Some(both.cpu_secs),
            server_cpu_secs: Some(both.server_cpu_secs),
            note: format!(
                "dump {:.1} s + restic {:.1} s; dump dir {:.1} MB, restic repo {:.1} MB",
                s.dump.secs,
                s.restic_backup.secs,
                s.dump_bytes as f64 / 1e6,
                s.repo_bytes as f64 / 1e6
            ),
        });
        kv.push((format!("{key}_dump_s"), format!("{:.2}", s.dump.secs)));
        kv.push((
            format!("{key}_restic_backup_s"),
            format!("{:.2}", s.restic_backup.secs),
        ));
        kv.push((format!("{key}_repo_bytes"), s.repo_bytes.to_string()));
        kv.push((format!("{key}_dump_bytes"), s.dump_bytes.to_string()));
        if let (Some(load), Some(rr)) = (s.load, s.restic_restore) {
            restore_rows.push(Row {
                key: format!("stash_{}_load", s.label),
                what: format!("multielasticdump --direction=load ({flags}), subset"),
                docs: s.docs,
                secs: load.secs,
                rss_kib: Some(load.max_rss_kib),
                cpu_secs: Some(load.cpu_secs),
                server_cpu_secs: Some(load.server_cpu_secs),
                note: format!(
                    "+ restic restore {:.1} s before it = {:.1} s, {:.0} docs/s",
                    rr.secs,
                    rr.secs + load.secs,
                    s.docs as f64 / (rr.secs + load.secs)
                ),
            });
            kv.push((
                format!("stash_{}_restic_restore_s", s.label),
                format!("{:.2}", rr.secs),
            ));
        }
    }

    // cairn-agent restore into deleted indices.
    eprintln!("cairn-agent restore ...");
    let restore_m = agent.restore(o.docs, &c)?;
    restore_rows.insert(
        0,
        Row {
            key: "agent_restore".into(),
            what: "cairn-agent restore (defaults: 4 workers, 5000 docs/bulk, 2 indices at once)"
                .into(),
            docs: o.docs,
            secs: restore_m.secs,
            rss_kib: Some(restore_m.max_rss_kib),
            cpu_secs: Some(restore_m.cpu_secs),
            server_cpu_secs: Some(restore_m.server_cpu_secs),
            note: "into deleted indices, verified".into(),
        },
    );
    restore_rows.push(Row {
        key: "raw_bulk".into(),
        what: format!("raw _bulk, {BULK_DOCS} docs/request, {BULK_WORKERS} in flight"),
        docs: o.docs,
        secs: loaded.secs,
        rss_kib: None,
        cpu_secs: None,
        server_cpu_secs: Some(bulk_server_cpu),
        note: format!(
            "refresh -1, 0 replicas, explicit ids; {:.0} MB of requests",
            loaded.request_bytes as f64 / 1e6
        ),
    });
    kv.push(("sub_load_s".into(), format!("{:.2}", sub.secs)));
    eprintln!("native snapshots (driver Native) ...");
    let (native_backups, native_restore) = native_rows(&mut agent, &node.repo_dir(), o.docs, &c)?;
    backup_rows.extend(native_backups);
    restore_rows.insert(1, native_restore);
    drop(node);

    // The table.
    let header = || {
        println!(
            "  {:<58} {:>9} {:>8} {:>9} {:>8} {:>7} {:>7}",
            "", "docs", "time s", "docs/s", "RSS MiB", "CPU s", "OS CPU"
        );
    };
    let print_row = |r: &Row, kv: &mut Vec<(String, String)>| {
        println!(
            "  {:<58} {:>9} {:>8.1} {:>9.0} {:>8} {:>7} {:>7}",
            r.what,
            r.docs,
            r.secs,
            r.dps(),
            r.rss_kib.map_or("-".into(), |k| format!("{:.0}", mib(k))),
            r.cpu_secs.map_or("-".into(), |c| format!("{c:.1}")),
            r.server_cpu_secs.map_or("-".into(), |c| format!("{c:.1}")),
        );
        if !r.note.is_empty() {
            println!("  {:<58} {}", "", r.note);
        }
        kv.push((format!("{}_s", r.key), format!("{:.2}", r.secs)));
        kv.push((format!("{}_dps", r.key), format!("{:.0}", r.dps())));
        if let Some(k) = r.rss_kib {
            kv.push((format!("{}_rss_mib", r.key), format!("{:.0}", mib(k))));
        }
        if let Some(c) = r.cpu_secs {
            kv.push((format!("{}_cpu_s", r.key), format!("{c:.1}")));
        }
        if let Some(c) = r.server_cpu_secs {
            kv.push((format!("{}_server_cpu_s", r.key), format!("{c:.1}")));
        }
    };
    println!(
        "BACKUP (RSS: peak of the process; CPU: its user+sys; OS CPU: the OpenSearch JVM's meanwhile)"
    );
    header();
    for r in &backup_rows {
        print_row(r, &mut kv);
    }
    println!();
    println!("RESTORE");
    header();
    for r in &restore_rows {
        print_row(r, &mut kv);
    }
    println!();
    if let [cairn_backup, stash_backup, stash_restore, cairn_restore] = &shipped_rows[..] {
        println!(
            "STASH AS SHIPPED (elasticdump 6.84.1, its defaults, restic v1) vs cairn-agent, \
             same run, {} documents in shipped-*",
            grouped(o.shipped_docs)
        );
        header();
        for r in &shipped_rows {
            print_row(r, &mut kv);
        }
        let backup = cairn_backup.dps() / stash_backup.dps();
        let restore = cairn_restore.dps() / stash_restore.dps();
        println!("  cairn / Stash as shipped, docs/s: backup {backup:.1}x, restore {restore:.1}x");
        kv.push((
            "ratio_backup_vs_stash_shipped".into(),
            format!("{backup:.1}"),
        ));
        kv.push((
            "ratio_restore_vs_stash_shipped".into(),
            format!("{restore:.1}"),
        ));
        println!();
    }

    let agent_backup = &backup_rows
        .iter()
        .find(|r| r.key == "agent_backup1")
        .context("no backup row")?;
    let agent_restore = &restore_rows[0];
    let raw_bulk = restore_rows
        .iter()
        .find(|r| r.key == "raw_bulk")
        .context("no raw bulk row")?;
    let first = repo_sizes[0];
    let added = repo_sizes[1].saturating_sub(repo_sizes[0]);
    let added_pct = 100.0 * added as f64 / first.max(1) as f64;
    println!("REPOSITORY (local directory)");
    println!(
        "  after the 1st backup:            {:>14} bytes ({:.1} % of the _source bytes)",
        grouped(first),
        100.0 * first as f64 / loaded.source_bytes as f64
    );
    println!(
        "  added by the 2nd (unchanged):    {:>14} bytes ({added_pct:.2} % of the first; the agent reports {} bytes of new data)",
        grouped(added),
        grouped(reported_added[1])
    );
    let peak_rss = agent_rows
        .iter()
        .map(|m| m.max_rss_kib)
        .chain([restore_m.max_rss_kib])
        .max()
        .unwrap_or(0);
    println!(
        "  cairn-agent peak RSS:            {:.0} MiB (backup {:.0} / {:.0}, restore {:.0})",
        mib(peak_rss),
        mib(agent_rows[0].max_rss_kib),
        mib(agent_rows[1].max_rss_kib),
        mib(restore_m.max_rss_kib)
    );
    kv.push(("repo_bytes_1".into(), first.to_string()));
    kv.push(("repo_bytes_added_2".into(), added.to_string()));
    kv.push(("repo_added_pct".into(), format!("{added_pct:.2}")));
    kv.push((
        "agent_reported_added_2".into(),
        reported_added[1].to_string(),
    ));
    kv.push(("agent_peak_rss_mib".into(), format!("{:.0}", mib(peak_rss))));
    println!();

    println!("TARGETS");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mut all = true;
    let mut target = |key: &str, text: String, ok: bool, kv: &mut Vec<(String, String)>| {
        all &= ok;
        println!("  {} {text}", verdict(ok));
        kv.push((format!("target_{key}"), verdict(ok).into()));
    };
    let stash_default = backup_rows.iter().find(|r| r.key == "stash_default_backup");
    let stash_fast = backup_rows.iter().find(|r| r.key == "stash_fast_backup");
    if let Some(s) = stash_default {
        let ratio = agent_backup.dps() / s.dps();
        kv.push(("ratio_backup_vs_stash".into(), format!("{ratio:.1}")));
        target(
            "backup_vs_stash",
            format!("backup >= 20x Stash's way (default flags), docs/s: {ratio:.1}x"),
            ratio >= 20.0,
            &mut kv,
        );
    }
    if let Some(s) = stash_fast {
        let ratio = agent_backup.dps() / s.dps();
        kv.push(("ratio_backup_vs_stash_fast".into(), format!("{ratio:.1}")));
        println!("  (info) backup vs multielasticdump fastest flags + restic: {ratio:.1}x");
    }
    let ratio = agent_backup.dps() / raw_best;
    kv.push(("ratio_backup_vs_raw".into(), format!("{ratio:.2}")));
    target(
        "backup_vs_raw",
        format!("backup >= 0.7 of the raw export (the faster reader): {ratio:.2}"),
        ratio >= 0.7,
        &mut kv,
    );
    if let (Some(agent_cpu), Some(server_cpu)) =
        (agent_backup.cpu_secs, agent_backup.server_cpu_secs)
    {
        // Agent and server share the machine's cores: with both fully busy the backup could not
        // be faster than this, however the work were overlapped.
        let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
        let ceiling = agent_backup.docs as f64 * cores / (agent_cpu + server_cpu);
        println!(
            "  (info) backup CPU ceiling on {cores} cores: {ceiling:.0} docs/s = {:.2} of the raw \
             export (agent {agent_cpu:.1} + server {server_cpu:.1} CPU-s); the backup ran at {:.0} % of it",
            ceiling / raw_best,
            100.0 * agent_backup.dps() / ceiling
        );
        kv.push(("backup_cpu_ceiling_dps".into(), format!("{ceiling:.0}")));
    }
    let load_default = restore_rows.iter().find(|r| r.key == "stash_default_load");
    let load_fast = restore_rows.iter().find(|r| r.key == "stash_fast_load");
    if let Some(l) = load_default {
        let ratio = agent_restore.dps() / l.dps();
        kv.push(("ratio_restore_vs_elasticdump".into(), format!("{ratio:.1}")));
        target(
            "restore_vs_elasticdump",
            format!("restore >= 10x elasticdump load (Stash's flags), docs/s: {ratio:.1}x"),
            ratio >= 10.0,
            &mut kv,
        );
    }
    if let Some(l) = load_fast {
        let ratio = agent_restore.dps() / l.dps();
        kv.push((
            "ratio_restore_vs_elasticdump_fast".into(),
            format!("{ratio:.1}"),
        ));
        println!("  (info) restore vs elasticdump load with its fastest flags: {ratio:.1}x");
    }
    let ratio = agent_restore.dps() / raw_bulk.dps();
    kv.push(("ratio_restore_vs_raw".into(), format!("{ratio:.2}")));
    target(
        "restore_vs_raw",
        format!("restore >= 0.7 of raw _bulk: {ratio:.2}"),
        ratio >= 0.7,
        &mut kv,
    );
    target(
        "rss",
        format!(
            "peak RSS <= 256 MiB: {:.0} MiB (at {} documents)",
            mib(peak_rss),
            grouped(o.docs)
        ),
        mib(peak_rss) <= 256.0,
        &mut kv,
    );
    target(
        "second_backup",
        format!("2nd backup adds <= 5 % of the 1st's bytes: {added_pct:.2} %"),
        added_pct <= 5.0,
        &mut kv,
    );
    if let Some(native) = restore_rows.iter().find(|r| r.key == "native_restore") {
        let ratio = native.dps() / agent_restore.dps();
        kv.push((
            "ratio_native_restore_vs_agent".into(),
            format!("{ratio:.1}"),
        ));
        target(
            "native_restore",
            format!("native restore >= 10x the logical restore, docs/s: {ratio:.1}x"),
            ratio >= 10.0,
            &mut kv,
        );
    }
    if let Some(native) = backup_rows.iter().find(|r| r.key == "native_backup1") {
        let ratio = native.dps() / agent_backup.dps();
        kv.push(("ratio_native_backup_vs_agent".into(), format!("{ratio:.1}")));
        println!("  (info) native snapshot vs the logical backup, docs/s: {ratio:.1}x");
    }
    if !o.baselines {
        println!("  (baselines skipped: --no-baselines)");
    }
    let load_after = super::loadavg();
    println!("load average before: {load_before}, after: {load_after}");
    println!("took {:.0} s", total_started.elapsed().as_secs_f64());
    kv.push(("all_targets".into(), verdict(all).into()));
    kv.push(("load_before".into(), load_before.replace(' ', "/")));
    kv.push(("load_after".into(), load_after.replace(' ', "/")));
    let line: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(" "));
    Ok(())
}
