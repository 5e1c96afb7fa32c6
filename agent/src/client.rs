//! A small Elasticsearch/OpenSearch HTTP client: what backup and restore need and nothing more.
//!
//! reqwest with rustls (see [`crate::tls`]), basic auth or an API key read from the mounted
//! credentials, JSON in and out, error answers shortened and without credentials; transient
//! failures retried under one policy ([`Retry`]).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{AgentError, Result, redact_url, short};
use crate::retry::{Attempt, Retry};

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
    retry: Retry,
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
            retry: Retry::default(),
        })
    }

    /// The same connection with another retry policy.
    pub fn with_retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
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

    fn request(&self, method: Method, path: &str, body: Option<Body>) -> reqwest::RequestBuilder {
        let rb = self.builder(method, path);
        match body {
            Some(Body::Json(v)) => rb.json(&v),
            Some(Body::Ndjson(b)) => rb
                .header(header::CONTENT_TYPE, "application/x-ndjson")
                .body(b),
            None => rb,
        }
    }

    /// Sends a request once; `body` is JSON or, for `_bulk`, NDJSON bytes.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        what: &str,
    ) -> Result<(StatusCode, Bytes)> {
        let resp = self
            .request(method, path, body)
            .send()
            .await
            .map_err(|e| AgentError::Http {
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

    /// Sends a request under the [`Retry`] policy: on 429, 502, 503, 504 and failed connections
    /// it is sent again, so it must be one that may reach the server twice (a read, a bulk of
    /// documents with their ids), or one whose repetition the caller checks (a scroll page).
    /// The answer is any other status.
    pub async fn send_retried(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        what: &str,
    ) -> Result<(StatusCode, Bytes)> {
        self.retry
            .run(what, || {
                self.attempt(method.clone(), path, body.clone(), what)
            })
            .await
    }

    /// One attempt of a request that [`Retry::run`] may repeat: a transient failure is an
    /// [`Attempt::Transient`], any other answer the status and body.
    pub async fn attempt(
        &self,
        method: Method,
        path: &str,
        body: Option<Body>,
        what: &str,
    ) -> Result<(StatusCode, Bytes), Attempt> {
        let resp = self
            .request(method, path, body)
            .send()
            .await
            .map_err(|e| failed_attempt(what, &e))?;
        let status = resp.status();
        let retry_after = crate::retry::retry_after(resp.headers());
        let bytes = resp.bytes().await.map_err(|e| failed_attempt(what, &e))?;
        if transient_status(status) {
            return Err(Attempt::Transient {
                reason: format!(
                    "HTTP {status}: {}",
                    short(&String::from_utf8_lossy(&bytes), 200)
                ),
                retry_after,
            });
        }
        Ok((status, bytes))
    }

    /// The policy [`Client::send_retried`] follows.
    pub fn retry(&self) -> &Retry {
        &self.retry
    }

    /// A request whose answer must be a success; the JSON answer is decoded.
    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        what: &str,
    ) -> Result<T> {
        let body = body.map(Body::Json);
        // Reads are sent again on transient failures; writes once, as their callers decide.
        let (status, bytes) = if matches!(method, Method::GET | Method::HEAD) {
            self.send_retried(method, path, body, what).await?
        } else {
            self.send(method, path, body, what).await?
        };
        if !status.is_success() {
            return Err(server_error(what, status, &bytes));
        }
        serde_json::from_slice(&bytes).map_err(|e| AgentError::json(what, e))
    }

    /// Whether a path exists (`HEAD`).
    pub async fn exists(&self, path: &str, what: &str) -> Result<bool> {
        let (status, bytes) = self.send_retried(Method::HEAD, path, None, what).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(server_error(what, s, &bytes)),
        }
    }

    /// `GET /`, once: [`Client::wait_ready`] has its own patience.
    pub async fn info(&self) -> Result<ServerInfo> {
        let (status, bytes) = self.send(Method::GET, "/", None, "GET /").await?;
        if !status.is_success() {
            return Err(server_error("GET /", status, &bytes));
        }
        let root: Value =
            serde_json::from_slice(&bytes).map_err(|e| AgentError::json("GET /", e))?;
        ServerInfo::from_root(&root)
    }

    /// Waits until `GET /` answers and the cluster is at least yellow. Wrong credentials and a
    /// certificate that does not verify fail at once: waiting would not fix them.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<ServerInfo> {
        self.wait(timeout, true).await
    }

    /// Waits until `GET /` answers, whatever the cluster's health: a native snapshot or
    /// restore reports the shards it concerns itself (one red index elsewhere must not stop it).
    pub async fn wait_answering(&self, timeout: Duration) -> Result<ServerInfo> {
        self.wait(timeout, false).await
    }

    async fn wait(&self, timeout: Duration, yellow: bool) -> Result<ServerInfo> {
        let deadline = Instant::now() + timeout;
        let mut last;
        loop {
            match self.info().await {
                Ok(info) if !yellow => return Ok(info),
                Ok(info) => {
                    let health = self
                        .send(
                            Method::GET,
                            "/_cluster/health?wait_for_status=yellow&timeout=5s",
                            None,
                            "cluster health",
                        )
                        .await;
                    match health {
                        Ok((status, b)) if !status.is_success() => {
                            last = server_error("cluster health", status, &b).to_string()
                        }
                        Ok((_, b)) => {
                            let h: Value = serde_json::from_slice(&b).unwrap_or_default();
                            if h["status"].is_string() && h["status"] != "red" {
                                return Ok(info);
                            }
                            last = format!("cluster health is {}", h["status"]);
                        }
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
#[derive(Clone)]
pub enum Body {
    Json(Value),
    Ndjson(Bytes),
}

/// Whether an answer with `status` is a transient failure worth trying again: a rejection for
/// load or a gateway's error.
fn transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 429 | 502 | 503 | 504)
}

/// A failed connection or exchange as an attempt: transient, unless a certificate was refused.
fn failed_attempt(what: &str, e: &reqwest::Error) -> Attempt {
    let reason = http_reason(e);
    if is_certificate_error(&reason) {
        return Attempt::Fatal(AgentError::Http {
            what: what.to_string(),
            reason,
        });
    }
    Attempt::Transient {
        reason,
        retry_after: None,
    }
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
    use serde_json::json;

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
