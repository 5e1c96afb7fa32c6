//! The load generator: `concurrency` clients, each with its own TLS connection and HTTP/1.1
//! keep-alive, each sending its next request as soon as the previous answer is read (closed
//! loop). Every request's latency is recorded (send to last byte of the body).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One request a client sends: its path and body. Clients go round the list.
#[derive(Clone)]
pub struct Call {
    pub path: &'static str,
    pub body: Bytes,
}

/// What one measured segment produced.
#[derive(Default)]
pub struct Sample {
    /// Requests completed inside the measured window.
    pub requests: u64,
    /// Non-200 answers and transport errors inside the window.
    pub errors: u64,
    /// Length of the measured window.
    pub window: Duration,
    /// Latency of each request completed inside the window, in nanoseconds.
    pub latencies_ns: Vec<u64>,
}

impl Sample {
    pub fn merge(&mut self, other: Sample) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.window += other.window;
        self.latencies_ns.extend(other.latencies_ns);
    }

    pub fn rps(&self) -> f64 {
        self.requests as f64 / self.window.as_secs_f64().max(1e-9)
    }

    /// The `q` quantile (0..=1) in microseconds (nearest rank).
    pub fn quantile_us(&mut self, q: f64) -> f64 {
        if self.latencies_ns.is_empty() {
            return f64::NAN;
        }
        self.latencies_ns.sort_unstable();
        let n = self.latencies_ns.len();
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies_ns[rank - 1] as f64 / 1000.0
    }
}

type Sender = SendRequest<Full<Bytes>>;

/// A TLS connection with HTTP/1.1 keep-alive.
pub async fn connect(addr: SocketAddr, tls: Arc<ClientConfig>) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let name = ServerName::try_from("localhost")?;
    let stream = TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake")?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// One request; the status and body.
pub async fn call(sender: &mut Sender, call: &Call) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let req = Request::post(call.path)
        .header(hyper::header::HOST, "localhost")
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(call.body.clone()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// Runs `concurrency` clients against `addr` for `warmup` (not recorded) then `measure`.
pub async fn run(
    addr: SocketAddr,
    tls: Arc<ClientConfig>,
    concurrency: usize,
    calls: Arc<Vec<Call>>,
    warmup: Duration,
    measure: Duration,
) -> anyhow::Result<Sample> {
    // Connections first: handshakes are not what is measured.
    let mut senders = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        senders.push(connect(addr, Arc::clone(&tls)).await?);
    }
    let start = Instant::now();
    let from = start + warmup;
    let until = from + measure;
    let mut clients = Vec::with_capacity(concurrency);
    for (i, mut sender) in senders.into_iter().enumerate() {
        let calls = Arc::clone(&calls);
        clients.push(tokio::spawn(async move {
            let mut sample = Sample::default();
            let mut next = i % calls.len();
            loop {
                let t0 = Instant::now();
                if t0 >= until {
                    break;
                }
                let result = call(&mut sender, &calls[next]).await;
                next = (next + 1) % calls.len();
                let t1 = Instant::now();
                let counted = t1 >= from && t1 <= until;
                match result {
                    Ok((StatusCode::OK, _)) if counted => {
                        sample.requests += 1;
                        sample.latencies_ns.push((t1 - t0).as_nanos() as u64);
                    }
                    Ok(_) if counted => sample.errors += 1,
                    Ok(_) => {}
                    Err(e) => {
                        if counted {
                            sample.errors += 1;
                        }
                        eprintln!("bench client: {e:#}");
                        break;
                    }
                }
            }
            sample
        }));
    }
    let mut total = Sample {
        window: measure,
        ..Sample::default()
    };
    for c in clients {
        let s = c.await.context("client task")?;
        total.requests += s.requests;
        total.errors += s.errors;
        total.latencies_ns.extend(s.latencies_ns);
    }
    Ok(total)
}
