//! A small Elasticsearch/OpenSearch client: what backup and restore need and nothing more.
//!
//! reqwest with rustls (see [`crate::tls`]), basic auth or an API key read from the mounted
//! credentials, JSON in and out. Documents are read page by page with point-in-time +
//! `search_after` (Elasticsearch >= 7.12 with `_shard_doc`, OpenSearch >= 2.4 when the server
//! accepts `_shard_doc`) or sliced scroll elsewhere; each page becomes NDJSON lines
//! `{"_id":..,"_routing":..,"_source":..}` without re-encoding `_source`.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::error::{AgentError, Result, redact_url, short};

/// How the agent authenticates.
#[derive(Clone, Default)]
pub enum Auth {
    #[default]
    None,
    Basic {
        username: String,
        password: String,
    },
    ApiKey(String),
}

impl std::fmt::Debug for Auth {
    // Never print a secret, not even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Auth::None => write!(f, "None"),
            Auth::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Auth::ApiKey(_) => write!(f, "ApiKey(***)"),
        }
    }
}

impl Auth {
    /// Reads `username`/`password` (or `ADMIN_USERNAME`/`ADMIN_PASSWORD`), else `apiKey`, from
    /// the mounted Secret. No directory means no authentication.
    pub fn from_dir(dir: Option<&Path>) -> Result<Self> {
        let Some(dir) = dir else {
            return Ok(Auth::None);
        };
        let read = |name: &str| -> Result<Option<String>> {
            match std::fs::read_to_string(dir.join(name)) {
                Ok(s) => Ok(Some(s.trim_end_matches(['\n', '\r']).to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(AgentError::Credentials(format!(
                    "cannot read {}: {e}",
                    dir.join(name).display()
                ))),
            }
        };
        let user = match read("username")? {
            Some(u) => Some(u),
            None => read("ADMIN_USERNAME")?,
        };
        let pass = match read("password")? {
            Some(p) => Some(p),
            None => read("ADMIN_PASSWORD")?,
        };
        match (user, pass) {
            (Some(username), Some(password)) => Ok(Auth::Basic { username, password }),
            (Some(_), None) | (None, Some(_)) => Err(AgentError::Credentials(format!(
                "{} has a user name or a password but not both",
                dir.display()
            ))),
            (None, None) => match read("apiKey")? {
                Some(key) => Ok(Auth::ApiKey(key)),
                None => Err(AgentError::Credentials(format!(
                    "{} has neither username/password nor apiKey",
                    dir.display()
                ))),
            },
        }
    }
}

/// How to reach the server.
#[derive(Clone, Debug, Default)]
pub struct ClientOptions {
    pub url: String,
    pub auth: Auth,
    pub ca_pem: Option<String>,
    pub server_name: Option<String>,
    pub insecure: bool,
}

/// Elasticsearch or OpenSearch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    Elasticsearch,
    OpenSearch,
}

/// What `GET /` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerInfo {
    pub distribution: Distribution,
    pub version: String,
    pub major: u32,
    pub minor: u32,
}

impl ServerInfo {
    pub fn from_root(root: &Value) -> Result<Self> {
        let v = &root["version"];
        let number = v["number"]
            .as_str()
            .ok_or_else(|| AgentError::Dump("GET / has no version.number".into()))?;
        let distribution = match v["distribution"].as_str() {
            Some("opensearch") => Distribution::OpenSearch,
            _ => Distribution::Elasticsearch,
        };
        let mut parts = number.split(['.', '-']).map(|p| p.parse::<u32>().ok());
        let major = parts.next().flatten().unwrap_or(0);
        let minor = parts.next().flatten().unwrap_or(0);
        Ok(Self {
            distribution,
            version: number.to_string(),
            major,
            minor,
        })
    }

    /// Which point-in-time API the server has, if any.
    pub fn pit(&self) -> Option<Distribution> {
        let at_least = |maj: u32, min: u32| (self.major, self.minor) >= (maj, min);
        match self.distribution {
            Distribution::Elasticsearch if at_least(7, 12) => Some(Distribution::Elasticsearch),
            Distribution::OpenSearch if at_least(2, 4) => Some(Distribution::OpenSearch),
            _ => None,
        }
    }
}

/// A connection to one server.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    auth: Auth,
}

impl Client {
    pub fn new(opts: &ClientOptions) -> Result<Self> {
        let url = url::Url::parse(&opts.url)
            .map_err(|e| AgentError::Usage(format!("--url {:?}: {e}", redact_url(&opts.url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(AgentError::Usage(format!(
                "--url must be http:// or https://, not {}",
                url.scheme()
            )));
        }
        let tls = crate::tls::client_config(
            opts.ca_pem.as_deref(),
            opts.server_name.as_deref(),
            opts.insecure,
        )?;
        if opts.insecure && url.scheme() == "https" {
            tracing::warn!(
                url = %redact_url(&opts.url),
                "insecureSkipTLSVerify: the server's certificate is NOT verified"
            );
        }
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(600))
            .pool_max_idle_per_host(32)
            .build()
            .map_err(|e| AgentError::Usage(format!("HTTP client: {e}")))?;
        let mut clean = url.clone();
        // User info in the URL would end up in error messages; use the credentials dir.
        let auth = if !url.username().is_empty() {
            let a = Auth::Basic {
                username: url.username().to_string(),
                password: url.password().unwrap_or_default().to_string(),
            };
            let _ = clean.set_username("");
            let _ = clean.set_password(None);
            match opts.auth {
                Auth::None => a,
                _ => opts.auth.clone(),
            }
        } else {
            opts.auth.clone()
        };
        Ok(Self {
            http,
            base: clean.as_str().trim_end_matches('/').to_string(),
            auth,
        })
    }

    /// The server's URL without credentials, for messages.
    pub fn url(&self) -> &str {
        &self.base
    }

    fn builder(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let rb = self.http.request(method, format!("{}{}", self.base, path));
        match &self.auth {
            Auth::None => rb,
            Auth::Basic { username, password } => rb.basic_auth(username, Some(password)),
            Auth::ApiKey(key) => rb.header(header::AUTHORIZATION, format!("ApiKey {key}")),
        }
    }

    /// Sends a request; `body` is JSON or, for `_bulk`, NDJSON bytes.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        what: &str,
    ) -> Result<(StatusCode, Bytes)> {
        let mut rb = self.builder(method, path);
        match body {
            Some(Body::Json(v)) => rb = rb.json(&v),
            Some(Body::Ndjson(b)) => {
                rb = rb
                    .header(header::CONTENT_TYPE, "application/x-ndjson")
                    .body(b)
            }
            None => {}
        }
        let resp = rb.send().await.map_err(|e| AgentError::Http {
            what: what.to_string(),
            reason: http_reason(&e),
        })?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| AgentError::Http {
            what: what.to_string(),
            reason: http_reason(&e),
        })?;
        Ok((status, bytes))
    }

    /// A request whose answer must be a success; the JSON answer is decoded.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<T> {
        let (status, bytes) = self.send(method, path, body.map(Body::Json), what).await?;
        if !status.is_success() {
            return Err(server_error(what, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| AgentError::json(what, e))
    }

    /// Whether a path exists (`HEAD`).
    pub async fn exists(&self, path: &str, what: &str) -> Result<bool> {
        let (status, bytes) = self.send(Method::HEAD, path, None, what).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(server_error(what, s, &bytes)),
        }
    }

    /// `GET /`.
    pub async fn info(&self) -> Result<ServerInfo> {
        let root: Value = self.json(Method::GET, "/", None, "GET /").await?;
        ServerInfo::from_root(&root)
    }

    /// Waits until `GET /` answers and the cluster is at least yellow. Wrong credentials and a
    /// certificate that does not verify fail at once: waiting would not fix them.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<ServerInfo> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.info().await {
                Ok(info) => {
                    let health: Result<Value> = self
                        .json(
                            Method::GET,
                            "/_cluster/health?wait_for_status=yellow&timeout=5s",
                            None,
                            "cluster health",
                        )
                        .await;
                    match health {
                        Ok(h) if h["status"] != "red" => return Ok(info),
                        Ok(h) => last = format!("cluster health is {}", h["status"]),
                        Err(e) => last = e.to_string(),
                    }
                }
                Err(AgentError::Server { status, .. }) if status == 401 || status == 403 => {
                    return Err(AgentError::Server {
                        what: format!("GET {}", self.base),
                        status,
                        body: "authentication failed: check the credentials Secret".into(),
                    });
                }
                // A certificate that does not verify will not verify later either.
                Err(AgentError::Http { reason, .. }) if is_certificate_error(&reason) => {
                    return Err(AgentError::Http {
                        what: format!(
                            "TLS certificate verification of {} failed (check the AppBinding's \
                             caBundle and the server name, or set insecureSkipTLSVerify)",
                            self.base
                        ),
                        reason,
                    });
                }
                Err(e) => last = e.to_string(),
            }
            if Instant::now() >= deadline {
                return Err(AgentError::NotReady {
                    url: self.base.clone(),
                    seconds: timeout.as_secs(),
                    last,
                });
            }
            tracing::info!(url = %self.base, reason = %last, "waiting for the server");
            tokio::time::sleep(Duration::from_secs(2).min(timeout)).await;
        }
    }
}

/// A request body.
pub enum Body {
    Json(Value),
    Ndjson(Bytes),
}

/// Whether a connection failed because the server's certificate was refused (rustls's
/// `InvalidCertificate`, or an unknown CA / name mismatch from the verifier).
pub fn is_certificate_error(reason: &str) -> bool {
    reason.contains("invalid peer certificate")
}

/// A reqwest error without the URL's user info, in one line.
fn http_reason(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    redact_url(&text)
}

/// An error answer: its reason, shortened.
pub fn server_error(what: &str, status: StatusCode, body: &[u8]) -> AgentError {
    let text = String::from_utf8_lossy(body);
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            let e = &v["error"];
            let root = &e["root_cause"][0];
            let pick = if root.is_object() { root } else { e };
            pick["reason"]
                .as_str()
                .map(|r| format!("{}: {r}", pick["type"].as_str().unwrap_or("error")))
                .or_else(|| e.as_str().map(String::from))
        })
        .unwrap_or_else(|| text.to_string());
    AgentError::Server {
        what: what.to_string(),
        status: status.as_u16(),
        body: short(&reason, 600),
    }
}

/// One page of documents as NDJSON.
#[derive(Debug, Default)]
pub struct Page {
    pub ndjson: Vec<u8>,
    pub docs: u64,
    /// Sort values of the last hit (for `search_after`).
    pub last_sort: Option<Value>,
    pub scroll_id: Option<String>,
    pub pit_id: Option<String>,
}

#[derive(Deserialize)]
struct SearchResponse<'a> {
    #[serde(default)]
    _scroll_id: Option<String>,
    #[serde(default)]
    pit_id: Option<String>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    _shards: Option<Shards>,
    #[serde(borrow)]
    hits: Hits<'a>,
}

#[derive(Deserialize)]
struct Shards {
    #[serde(default)]
    failed: u64,
}

#[derive(Deserialize)]
struct Hits<'a> {
    #[serde(borrow, default)]
    hits: Vec<Hit<'a>>,
}

#[derive(Deserialize)]
struct Hit<'a> {
    _id: String,
    #[serde(default)]
    _routing: Option<String>,
    #[serde(borrow, default)]
    _source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sort: Option<&'a RawValue>,
}

/// Turns a search answer into NDJSON lines. Shard failures and time-outs are errors: a page
/// that misses shards would lose documents silently.
///
/// The answer is skimmed (see [`Skim`]): the hits' `_id`, `_routing` and `_source` are copied
/// as the server wrote them, without decoding. An answer of another shape is read with serde.
pub fn parse_page(index: &str, body: &[u8]) -> Result<Page> {
    match skim_page(index, body) {
        Some(page) => page,
        None => parse_page_serde(index, body),
    }
}

fn shard_failures(index: &str, body: &[u8], failed: u64) -> AgentError {
    let reason = serde_json::from_slice::<Value>(body)
        .ok()
        .map(|v| v["_shards"]["failures"][0]["reason"].to_string())
        .unwrap_or_default();
    AgentError::Dump(format!(
        "search on {index}: {failed} shard(s) failed: {}",
        short(&reason, 300)
    ))
}

fn no_source(id: &str, index: &str) -> AgentError {
    AgentError::Dump(format!(
        "document {id:?} of index {index} has no _source (is _source disabled in the mapping?): \
         it cannot be backed up"
    ))
}

/// Appends `raw` (one JSON value) to an NDJSON line: raw line breaks in JSON can only be
/// whitespace (strings escape them), so a source indexed pretty-printed becomes one line.
fn push_one_line(out: &mut Vec<u8>, raw: &[u8]) -> Option<()> {
    if memchr::memchr2(b'\n', b'\r', raw).is_none() {
        out.extend_from_slice(raw);
        return Some(());
    }
    // Checked as JSON first: a line break inside a string would be invalid JSON anyway.
    let v: &RawValue = serde_json::from_slice(raw).ok()?;
    out.extend_from_slice(v.get().replace(['\n', '\r'], " ").as_bytes());
    Some(())
}

/// A forward-only reader over a JSON text that finds the extent of values without decoding
/// them: strings are skipped to their closing quote, containers to their matching bracket.
/// Anything it does not expect makes it give up (`None`), never panic.
struct Skim<'a> {
    b: &'a [u8],
    i: usize,
    stack: Vec<u8>,
}

impl<'a> Skim<'a> {
    fn new(b: &'a [u8]) -> Self {
        Self {
            b,
            i: 0,
            stack: Vec::new(),
        }
    }

    fn peek(&mut self) -> Option<u8> {
        while let Some(&c) = self.b.get(self.i) {
            if matches!(c, b' ' | b'\n' | b'\r' | b'\t') {
                self.i += 1;
            } else {
                return Some(c);
            }
        }
        None
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A string token, quotes included.
    fn string(&mut self) -> Option<&'a [u8]> {
        if self.peek()? != b'"' {
            return None;
        }
        let start = self.i;
        let mut i = start + 1;
        loop {
            let j = i + memchr::memchr2(b'"', b'\\', self.b.get(i..)?)?;
            if self.b[j] == b'"' {
                self.i = j + 1;
                return Some(&self.b[start..self.i]);
            }
            i = j + 2;
        }
    }

    /// One value of any kind, as written.
    fn value(&mut self) -> Option<&'a [u8]> {
        let start = match self.peek()? {
            b'"' => return self.string(),
            b'{' | b'[' => self.i,
            _ => {
                // A number or a literal: up to the next delimiter.
                let start = self.i;
                while let Some(&c) = self.b.get(self.i) {
                    if matches!(c, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t') {
                        break;
                    }
                    self.i += 1;
                }
                return (self.i > start).then(|| &self.b[start..self.i]);
            }
        };
        self.stack.clear();
        loop {
            let c = *self.b.get(self.i)?;
            match c {
                b'"' => {
                    self.string()?;
                    continue;
                }
                b'{' => self.stack.push(b'}'),
                b'[' => self.stack.push(b']'),
                b'}' | b']' => {
                    if self.stack.pop()? != c {
                        return None;
                    }
                    if self.stack.is_empty() {
                        self.i += 1;
                        return Some(&self.b[start..self.i]);
                    }
                }
                _ => {}
            }
            self.i += 1;
        }
    }

    /// Calls `f` with each key (its string token) of the object that starts here; `f` reads the
    /// value.
    fn object(&mut self, mut f: impl FnMut(&mut Self, &'a [u8]) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            f(self, key)?;
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Calls `f` for each element of the array that starts here; `f` reads the element.
    fn array(&mut self, mut f: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            f(self)?;
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }
}

fn json_string(token: &[u8]) -> Option<String> {
    serde_json::from_slice(token).ok()
}

/// [`parse_page`] by skimming; `None` when the answer is not of the expected shape.
fn skim_page(index: &str, body: &[u8]) -> Option<Result<Page>> {
    let mut page = Page::default();
    let mut out = Vec::with_capacity(body.len());
    let mut timed_out = false;
    let mut failed = 0u64;
    let mut last_sort: Option<&[u8]> = None;
    let mut missing: Option<AgentError> = None;
    let mut sk = Skim::new(body);
    sk.object(|sk, key| {
        match key {
            b"\"_scroll_id\"" => page.scroll_id = Some(json_string(sk.string()?)?),
            b"\"pit_id\"" => page.pit_id = Some(json_string(sk.string()?)?),
            b"\"timed_out\"" => timed_out = sk.value()? == b"true",
            b"\"_shards\"" => {
                let shards: Shards = serde_json::from_slice(sk.value()?).ok()?;
                failed = shards.failed;
            }
            b"\"hits\"" => sk.object(|sk, key| {
                if key != b"\"hits\"" {
                    sk.value()?;
                    return Some(());
                }
                sk.array(|sk| {
                    let (mut id, mut routing, mut source, mut sort) = (None, None, None, None);
                    sk.object(|sk, key| {
                        match key {
                            b"\"_id\"" => id = Some(sk.string()?),
                            b"\"_routing\"" => routing = Some(sk.string()?),
                            b"\"_source\"" => source = Some(sk.value()?),
                            b"\"sort\"" => sort = Some(sk.value()?),
                            _ => {
                                sk.value()?;
                            }
                        }
                        Some(())
                    })?;
                    let id = id?;
                    let Some(source) = source else {
                        if missing.is_none() {
                            missing = Some(no_source(&json_string(id)?, index));
                        }
                        return Some(());
                    };
                    out.extend_from_slice(b"{\"_id\":");
                    out.extend_from_slice(id);
                    if let Some(r) = routing {
                        out.extend_from_slice(b",\"_routing\":");
                        out.extend_from_slice(r);
                    }
                    out.extend_from_slice(b",\"_source\":");
                    push_one_line(&mut out, source)?;
                    out.extend_from_slice(b"}\n");
                    page.docs += 1;
                    last_sort = sort;
                    Some(())
                })
            })?,
            _ => {
                sk.value()?;
            }
        }
        Some(())
    })?;
    if sk.peek().is_some() {
        return None;
    }
    if timed_out {
        return Some(Err(AgentError::Dump(format!(
            "search on {index} timed out"
        ))));
    }
    if failed > 0 {
        return Some(Err(shard_failures(index, body, failed)));
    }
    if let Some(e) = missing {
        return Some(Err(e));
    }
    if let Some(last) = last_sort {
        page.last_sort = Some(serde_json::from_slice(last).ok()?);
    }
    page.ndjson = out;
    Some(Ok(page))
}

fn parse_page_serde(index: &str, body: &[u8]) -> Result<Page> {
    let resp: SearchResponse<'_> = serde_json::from_slice(body)
        .map_err(|e| AgentError::json(format!("search answer for {index}"), e))?;
    if resp.timed_out {
        return Err(AgentError::Dump(format!("search on {index} timed out")));
    }
    if let Some(s) = &resp._shards
        && s.failed > 0
    {
        return Err(shard_failures(index, body, s.failed));
    }
    let mut page = Page {
        scroll_id: resp._scroll_id,
        pit_id: resp.pit_id,
        ..Default::default()
    };
    let mut out = Vec::with_capacity(body.len());
    for hit in &resp.hits.hits {
        let source = hit.source_or_err(index)?;
        out.extend_from_slice(b"{\"_id\":");
        serde_json::to_writer(&mut out, &hit._id).map_err(|e| AgentError::json("encode", e))?;
        if let Some(r) = &hit._routing {
            out.extend_from_slice(b",\"_routing\":");
            serde_json::to_writer(&mut out, r).map_err(|e| AgentError::json("encode", e))?;
        }
        out.extend_from_slice(b",\"_source\":");
        let raw = source.get();
        if raw.contains(['\n', '\r']) {
            // Raw line breaks in JSON can only be whitespace (strings escape them): a source
            // indexed pretty-printed must still be one NDJSON line.
            out.extend_from_slice(raw.replace(['\n', '\r'], " ").as_bytes());
        } else {
            out.extend_from_slice(raw.as_bytes());
        }
        out.extend_from_slice(b"}\n");
        page.docs += 1;
    }
    if let Some(last) = resp.hits.hits.last().and_then(|h| h.sort) {
        page.last_sort = serde_json::from_str(last.get()).ok();
    }
    page.ndjson = out;
    Ok(page)
}

impl Hit<'_> {
    fn source_or_err(&self, index: &str) -> Result<&RawValue> {
        self._source.ok_or_else(|| no_source(&self._id, index))
    }
}

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

/// Percent-encodes an index name for a URL path.
pub fn encode_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_to_ndjson() {
        let body = br#"{"_scroll_id":"s1","timed_out":false,"_shards":{"total":1,"failed":0},
          "hits":{"hits":[
            {"_index":"a","_id":"1","_source":{"t":"\u00fc\n","n":[1,{"x":null}]},"sort":[0]},
            {"_index":"a","_id":"q\"2","_routing":"r","_source":{},"sort":[7]}]}}"#;
        let p = parse_page("a", body).unwrap();
        assert_eq!(p.docs, 2);
        assert_eq!(p.scroll_id.as_deref(), Some("s1"));
        assert_eq!(p.last_sort, Some(json!([7])));
        let text = String::from_utf8(p.ndjson).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["_source"]["t"], "ü\n");
        assert_eq!(lines[1]["_id"], "q\"2");
        assert_eq!(lines[1]["_routing"], "r");
        assert!(lines[0].get("_routing").is_none());
    }

    #[test]
    fn skimmed_pages() {
        let body = br#"{"_scroll_id":"s\"1","took":3,"timed_out":false,
          "_shards":{"total":1,"successful":1,"skipped":0,"failed":0},
          "hits":{"total":{"value":3,"relation":"eq"},"max_score":null,"hits":[
            {"_index":"a","_id":"1","_score":null,"_source":{"t":"a\"}]{\\","n":[1,{"x":null}],
              "e":{}, "l":[]},"sort":[0]},
            {"_index":"a","_id":"q\u00e92","_routing":"r","_source":{},"sort":[7, "x"]},
            {"_index":"a","_id":"3","_source":{"p":
              "x"}}]}}"#;
        let skimmed = skim_page("a", body).unwrap().unwrap();
        let serde = parse_page_serde("a", body).unwrap();
        assert_eq!(skimmed.docs, 3);
        assert_eq!(skimmed.scroll_id.as_deref(), Some("s\"1"));
        assert_eq!(skimmed.last_sort, None);
        let decode = |b: &[u8]| -> Vec<Value> {
            std::str::from_utf8(b)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect()
        };
        assert_eq!(decode(&skimmed.ndjson), decode(&serde.ndjson));
        assert_eq!(skimmed.ndjson.iter().filter(|b| **b == b'\n').count(), 3);
        // Not JSON, or cut short: never a page.
        for bad in [
            &br#"{"hits":{"hits":[{"_id":"1","_source":{"a":[}]}}"#[..],
            br#"{"hits":{"hits":[{"_id":"1","_source":{"a":"#,
            br#"{"hits":{"hits":[{"_id":"1","_source":{"a":1}}]}} x"#,
            br#"{"hits":{"hits":[{"_id":"1","_source":{"a":1}}]}"#,
            b"",
        ] {
            assert!(
                parse_page("a", bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let timed_out = br#"{"timed_out":true,"hits":{"hits":[]}}"#;
        assert!(parse_page("a", timed_out).is_err());
    }

    #[test]
    fn shard_failures_fail_the_page() {
        let body = br#"{"_shards":{"total":2,"failed":1,"failures":[{"reason":{"type":"x"}}]},"hits":{"hits":[]}}"#;
        assert!(parse_page("a", body).is_err());
        let no_source = br#"{"hits":{"hits":[{"_id":"1"}]}}"#;
        let e = parse_page("a", no_source).unwrap_err().to_string();
        assert!(e.contains("_source"), "{e}");
    }

    #[test]
    fn versions() {
        let es = ServerInfo::from_root(&json!({"version":{"number":"7.17.29"}})).unwrap();
        assert_eq!(es.pit(), Some(Distribution::Elasticsearch));
        let old = ServerInfo::from_root(&json!({"version":{"number":"7.10.2"}})).unwrap();
        assert_eq!(old.pit(), None);
        let os = ServerInfo::from_root(
            &json!({"version":{"number":"2.19.6","distribution":"opensearch"}}),
        )
        .unwrap();
        assert_eq!(os.pit(), Some(Distribution::OpenSearch));
        let os1 = ServerInfo::from_root(
            &json!({"version":{"number":"1.3.0","distribution":"opensearch"}}),
        )
        .unwrap();
        assert_eq!(os1.pit(), None);
    }

    #[test]
    fn redacts() {
        assert_eq!(
            redact_url("error sending request for url (https://u:p@h:9200/_search)"),
            "error sending request for url (https://h:9200/_search)"
        );
        assert_eq!(encode_path("a+b/c"), "a%2Bb%2Fc");
    }
}
