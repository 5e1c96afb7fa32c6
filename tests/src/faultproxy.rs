//! A fault-injecting HTTP proxy between a client under test (the agent) and a real server
//! (OpenSearch): it forwards every request and, by a [`Plan`] of [`Rule`]s, answers some with
//! 429 and `Retry-After`, 503, 400, closes the connection without an answer (before forwarding, or
//! after the server acted on the request), or forwards them late. It counts what it injected by
//! class, so that a test shows that each fault it names did happen.
//!
//! ```no_run
//! # fn example(target: &str) -> anyhow::Result<()> {
//! use cairn_tests::faultproxy::{Fault, FaultProxy, Plan, Rule};
//! let proxy = FaultProxy::start(target, Plan::new(vec![
//!     Rule::new(Fault::TooManyRequests { retry_after: 1 }, "/_search").every(7, 2),
//! ]))?;
//! // point the client at proxy.url(), then:
//! assert!(proxy.injected(Fault::TooManyRequests { retry_after: 1 }.class()) > 0);
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};

/// What the proxy does to one request instead of forwarding it plainly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answers 429 with `Retry-After: <seconds>`; the server never sees the request.
    TooManyRequests { retry_after: u64 },
    /// Answers 503; the server never sees the request.
    Unavailable,
    /// Answers 400, a failure no retry mends; the server never sees the request.
    Refused,
    /// Closes the connection without an answer; the server never sees the request.
    Reset,
    /// Forwards the request, then closes the connection without passing the answer on: the
    /// server acted, the client cannot know it.
    LostAnswer,
    /// Forwards the request after a delay.
    Slow(Duration),
}

impl Fault {
    /// The class the proxy counts this fault under.
    pub fn class(&self) -> &'static str {
        match self {
            Fault::TooManyRequests { .. } => "429",
            Fault::Unavailable => "503",
            Fault::Refused => "400",
            Fault::Reset => "reset",
            Fault::LostAnswer => "lost answer",
            Fault::Slow(_) => "slow",
        }
    }
}

/// When a fault is injected: on `burst` consecutive requests out of every `period` of those
/// that match (`path` a part of the request's path, and the method if one is given), from the
/// `offset`-th on.
#[derive(Clone, Debug)]
pub struct Rule {
    pub fault: Fault,
    pub path: String,
    pub method: Option<hyper::Method>,
    pub period: u64,
    pub burst: u64,
    pub offset: u64,
}

impl Rule {
    /// One request in five whose path contains `path`.
    pub fn new(fault: Fault, path: &str) -> Self {
        Self {
            fault,
            path: path.to_string(),
            method: None,
            period: 5,
            burst: 1,
            offset: 0,
        }
    }

    /// `burst` requests in a row out of every `period`.
    pub fn every(mut self, period: u64, burst: u64) -> Self {
        self.period = period.max(1);
        self.burst = burst;
        self
    }

    /// Leaves the first `n` matching requests alone.
    pub fn after(mut self, n: u64) -> Self {
        self.offset = n;
        self
    }

    /// Only requests with this method.
    pub fn method(mut self, method: hyper::Method) -> Self {
        self.method = Some(method);
        self
    }

    fn matches(&self, method: &hyper::Method, path: &str) -> bool {
        path.contains(&self.path) && self.method.as_ref().is_none_or(|m| m == method)
    }

    /// Whether the `n`-th matching request (from 0) gets the fault.
    fn fires(&self, n: u64) -> bool {
        n >= self.offset && (n - self.offset) % self.period < self.burst
    }
}

/// The rules of one proxy; the first that fires for a request decides it.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    rules: Vec<Rule>,
}

impl Plan {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self { rules }
    }
}

/// What the proxy saw: requests matched per rule, faults injected per class, requests
/// forwarded.
#[derive(Default)]
struct Tally {
    matched: Vec<u64>,
    injected: BTreeMap<&'static str, u64>,
    forwarded: u64,
}

struct Shared {
    plan: Plan,
    target: String,
    http: reqwest::Client,
    tally: Mutex<Tally>,
}

impl Shared {
    /// The fault for this request, if one fires; every matching rule counts it.
    fn decide(&self, method: &hyper::Method, path: &str) -> Option<Fault> {
        let mut tally = self.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.matched.resize(self.plan.rules.len(), 0);
        let mut chosen = None;
        for (i, rule) in self.plan.rules.iter().enumerate() {
            if !rule.matches(method, path) {
                continue;
            }
            let n = tally.matched[i];
            tally.matched[i] += 1;
            if chosen.is_none() && rule.fires(n) {
                chosen = Some(rule.fault);
            }
        }
        if let Some(f) = chosen {
            *tally.injected.entry(f.class()).or_default() += 1;
        }
        chosen
    }

    async fn forward(&self, req: Request<Incoming>) -> Result<Response<Full<Bytes>>> {
        let (parts, body) = req.into_parts();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let body = body
            .collect()
            .await
            .context("reading the request")?
            .to_bytes();
        let mut rb = self
            .http
            .request(parts.method.clone(), format!("{}{path}", self.target))
            .body(body);
        for (name, value) in &parts.headers {
            if !is_hop_header(name) {
                rb = rb.header(name, value);
            }
        }
        let resp = rb.send().await.context("forwarding")?;
        let mut out = Response::builder().status(resp.status());
        for (name, value) in resp.headers() {
            if !is_hop_header(name) {
                out = out.header(name, value);
            }
        }
        let bytes = resp.bytes().await.context("reading the answer")?;
        self.tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forwarded += 1;
        Ok(out.body(Full::new(bytes))?)
    }

    /// One request: a fault, or the server's answer. An error closes the connection without
    /// an answer.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>> {
        let fault = self.decide(req.method(), req.uri().path());
        let answer = |status: StatusCode, extra: Option<(&str, String)>| {
            let mut b = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            if let Some((k, v)) = extra {
                b = b.header(k, v);
            }
            let body = format!(
                r#"{{"error":{{"type":"injected_fault","reason":"injected by the test proxy"}},"status":{}}}"#,
                status.as_u16()
            );
            Ok(b.body(Full::new(Bytes::from(body)))?)
        };
        match fault {
            None => self.forward(req).await,
            Some(Fault::TooManyRequests { retry_after }) => answer(
                StatusCode::TOO_MANY_REQUESTS,
                Some(("retry-after", retry_after.to_string())),
            ),
            Some(Fault::Unavailable) => answer(StatusCode::SERVICE_UNAVAILABLE, None),
            Some(Fault::Refused) => answer(StatusCode::BAD_REQUEST, None),
            Some(Fault::Reset) => anyhow::bail!("injected reset"),
            Some(Fault::LostAnswer) => {
                self.forward(req).await?;
                anyhow::bail!("injected lost answer")
            }
            Some(Fault::Slow(delay)) => {
                tokio::time::sleep(delay).await;
                self.forward(req).await
            }
        }
    }
}

/// Headers of one connection, not of the message.
fn is_hop_header(name: &hyper::header::HeaderName) -> bool {
    use hyper::header::{CONNECTION, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
    [HOST, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING].contains(name)
        || name.as_str() == "keep-alive"
}

/// A running proxy on `127.0.0.1`, stopped on drop.
pub struct FaultProxy {
    shared: Arc<Shared>,
    port: u16,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy to `target` (`http://host:port`) on a free port, on a thread of its own
    /// (for sync and async tests alike).
    pub fn start(target: &str, plan: Plan) -> Result<Self> {
        crate::init_crypto();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").context("binding the proxy")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared {
            plan,
            target: target.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(8)
                .build()?,
            tally: Mutex::new(Tally::default()),
        });
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let serving = shared.clone();
        let thread = std::thread::Builder::new()
            .name("fault-proxy".into())
            .spawn(move || {
                rt.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = accept(listener, serving) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            shared,
            port,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Where clients send their requests.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How many faults of `class` ([`Fault::class`]) were injected.
    pub fn injected(&self, class: &str) -> u64 {
        let tally = self.shared.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.injected.get(class).copied().unwrap_or(0)
    }

    /// Every class injected, with its count.
    pub fn injected_all(&self) -> BTreeMap<&'static str, u64> {
        let tally = self.shared.tally.lock().unwrap_or_else(|p| p.into_inner());
        tally.injected.clone()
    }

    /// How many requests reached the server.
    pub fn forwarded(&self) -> u64 {
        self.shared
            .tally
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forwarded
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| shared.clone().handle(req));
            // An error from the service closes the connection without an answer: the resets.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_fire_in_bursts_after_their_offset() {
        let r = Rule::new(Fault::Unavailable, "/_search")
            .every(5, 2)
            .after(3);
        let fired: Vec<u64> = (0..15).filter(|n| r.fires(*n)).collect();
        assert_eq!(fired, vec![3, 4, 8, 9, 13, 14]);
        assert!(r.matches(&hyper::Method::POST, "/idx/_search"));
        assert!(!r.matches(&hyper::Method::POST, "/_bulk"));
        let get = Rule::new(Fault::Reset, "/").method(hyper::Method::GET);
        assert!(!get.matches(&hyper::Method::DELETE, "/x"));
    }
}
