//! `cairn-webhook` (the real binary, behind a real kube-apiserver) pushed beyond its bounds with
//! its shipped limits: every request slot held by a slow client, then more requests (each refused
//! with 503 at once, timed), the slow ones cut at the request timeout (below the API server's 5 s),
//! every connection slot taken and one more (closed at once, timed), a flood of the largest
//! bodies (its peak RSS stays under the shipped 256 MiB), idle and preface-only connections
//! (closed within the idle timeout), and then a real admission through the API server, served.
//!
//! Its own test binary, so its own control plane. Needs `cargo xtask testbed` and the workspace
//! binaries (`cargo xtask test` builds both).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cairn_tests::webhook::Webhook;
use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use cairn_webhook::bounds::Limits;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// The shipped memory limit of a webhook replica (manifests/webhook/deployment.yaml).
const MEMORY_LIMIT_KIB: u64 = 256 * 1024;
/// The idle timeout this test gives the webhook (shipped: 60 s), so it waits seconds, not minutes.
const IDLE: Duration = Duration::from_secs(2);
/// The API server's timeout for one call to the webhook (the webhook configurations').
const API_SERVER_TIMEOUT: Duration = Duration::from_secs(5);
/// The slowest refusal that still counts as "at once" (2 busy cores, other builds running):
/// far below the request timeout a queued request would wait.
const FAST: Duration = Duration::from_millis(1000);

type Tls = StreamOwned<ClientConnection, TcpStream>;

fn client_config(ca_pem: &str, alpn: &[u8]) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.expect("CA PEM")).expect("trust anchor");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    Arc::new(config)
}

/// A TLS connection to the webhook, handshake done.
fn connect(port: u16, config: &Arc<ClientConfig>) -> Result<Tls> {
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let mut conn = ClientConnection::new(Arc::clone(config), name)?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(20)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    Ok(StreamOwned::new(conn, tcp))
}

/// The head of an HTTP/1.1 POST of `len` bytes to /validate.
fn post_head(len: usize) -> String {
    format!(
        "POST /validate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {len}\r\n\r\n"
    )
}

/// Reads one HTTP/1.1 response (its body by Content-Length): (status, body).
fn read_response(tls: &mut Tls) -> Result<(u16, String)> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if tls.read(&mut byte)? == 0 {
            bail!(
                "connection closed in a response head: {:?}",
                String::from_utf8_lossy(&head)
            );
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .context("no content-length")?;
    let mut body = vec![0u8; len];
    tls.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).to_string()))
}

/// One POST on `tls`, timed from the last byte sent to the whole answer read.
fn post(tls: &mut Tls, body: &[u8]) -> Result<(u16, String, Duration)> {
    tls.write_all(post_head(body.len()).as_bytes())?;
    tls.write_all(body)?;
    tls.flush()?;
    let sent = Instant::now();
    let (status, text) = read_response(tls)?;
    Ok((status, text, sent.elapsed()))
}

/// How long until the server closes `tls` (EOF or reset), reading and dropping anything it
/// sends; an error if it is still open after `deadline`.
fn closed_within(tls: &mut Tls, deadline: Duration) -> Result<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline
            .checked_sub(start.elapsed())
            .context("still open at the deadline")?;
        tls.sock
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))?;
        match tls.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                bail!("still open after {:?}", start.elapsed())
            }
            // A reset, or a TLS close without close_notify: closed either way.
            Err(_) => return Ok(start.elapsed()),
        }
    }
}

/// A well-formed AdmissionReview (CREATE of the local Repository example) with `filler` as an
/// extra field of its spec: the webhook decodes all of it, then denies the unknown field.
fn review(filler: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/examples/repository-local.yaml"))
            .expect("example");
    let mut object: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    object["metadata"]["namespace"] = "load".into();
    let object = serde_json::to_string(&object).expect("JSON");
    let object = match filler {
        "" => object,
        _ => object.replacen("\"spec\":{", &format!("\"spec\":{{\"filler\":{filler},"), 1),
    };
    format!(
        r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{{"uid":"load","kind":{{"group":"cairn.dev","version":"v1alpha1","kind":"Repository"}},"resource":{{"group":"cairn.dev","version":"v1alpha1","resource":"repositories"}},"name":"local","namespace":"load","operation":"CREATE","userInfo":{{"username":"load"}},"object":{object},"dryRun":true}}}}"#
    )
    .into_bytes()
}

/// The largest review the webhook accepts, and the costliest to decode: an array of zeros
/// (one small JSON value every two bytes).
fn largest_review(max_body: usize) -> Vec<u8> {
    let overhead = review("[]").len();
    let zeros = (max_body - overhead - 16) / 2;
    let mut filler = String::with_capacity(zeros * 2 + 2);
    filler.push('[');
    for i in 0..zeros {
        filler.push_str(if i == 0 { "0" } else { ",0" });
    }
    filler.push(']');
    let body = review(&filler);
    assert!(body.len() <= max_body, "{} > {max_body}", body.len());
    body
}

/// `VmHWM` (peak resident set) of `pid`, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

/// The webhook's `cairn_webhook_refusals_total` for `reason`.
fn refusals(webhook: &Webhook, reason: &str) -> u64 {
    let (_, text) = webhook.admin_get("/metrics").expect("metrics");
    let prefix = format!("cairn_webhook_refusals_total{{reason=\"{reason}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .map_or(0, |v| v.trim().parse().expect("a count"))
}

/// Every request slot held by a client that sent its headers and part of its body; then more
/// requests are refused with 503 at once, and the held ones end at the request timeout.
fn requests_beyond_the_cap(webhook: &Webhook, config: &Arc<ClientConfig>, limits: &Limits) {
    let body = review("");
    let mut held = Vec::new();
    for _ in 0..limits.max_requests_in_flight {
        let mut tls = connect(webhook.port(), config).expect("connect");
        tls.write_all(post_head(body.len()).as_bytes())
            .and_then(|()| tls.write_all(&body[..body.len() / 2]))
            .and_then(|()| tls.flush())
            .expect("a slow request");
        held.push((tls, Instant::now()));
    }
    // A refused request's body is never read, so the server closes its connection after the
    // 503 (HTTP/1.1): a connection a probe.
    let probe = || {
        let mut tls = connect(webhook.port(), config).expect("connect");
        post(&mut tls, &body).expect("an answer")
    };
    // The slots fill as the server reads the heads: wait for the first refusal.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let (status, text, _) = probe();
        if status == 503 {
            assert!(text.contains("--max-requests-in-flight"), "{text}");
            break;
        }
        assert_eq!(status, 200, "{text}");
        assert!(Instant::now() < deadline, "no refusal with every slot held");
    }
    let mut latencies = Vec::new();
    for _ in 0..40 {
        let (status, text, took) = probe();
        assert_eq!(status, 503, "a request beyond the cap: {text}");
        latencies.push(took);
    }
    latencies.sort();
    let (median, max) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    println!("refusals at the request cap: median {median:?}, max {max:?}");
    assert!(
        max < FAST,
        "refusals must be fast, the slowest took {max:?}"
    );

    // The slow requests end at the request timeout, before the API server's own.
    for (mut tls, started) in held {
        let (status, text) = read_response(&mut tls).expect("the slow request's answer");
        let took = started.elapsed();
        assert_eq!(status, 503, "{text}");
        assert!(text.contains("--request-timeout"), "{text}");
        assert!(
            took >= limits.request_timeout && took < API_SERVER_TIMEOUT,
            "a slow request was cut after {took:?}: not within [{:?}, {API_SERVER_TIMEOUT:?})",
            limits.request_timeout
        );
    }
    assert!(refusals(webhook, "requests") >= 40);
    assert!(refusals(webhook, "timeout") >= u64::from(limits.max_requests_in_flight));
}

/// Every connection slot taken (by this test and by whatever else is connected, e.g. the API
/// server): the next connection is closed at once; freed slots serve again.
fn connections_beyond_the_cap(webhook: &Webhook, config: &Arc<ClientConfig>, limits: &Limits) {
    let max = limits.max_connections as usize;
    let mut open = Vec::new();
    let (took, refused) = loop {
        let start = Instant::now();
        match connect(webhook.port(), config) {
            Ok(tls) => open.push(tls),
            Err(e) => break (start.elapsed(), e),
        }
        assert!(
            open.len() <= max,
            "more than --max-connections ({max}) accepted"
        );
    };
    println!(
        "refusal at the connection cap (after {} of ours): {took:?} ({refused})",
        open.len()
    );
    assert!(took < FAST, "the connection beyond the cap took {took:?}");
    let (_, text) = webhook.admin_get("/metrics").expect("metrics");
    assert!(
        text.lines()
            .any(|l| l == format!("cairn_webhook_open_connections {max}")),
        "not every slot was taken:\n{text}"
    );
    assert!(refusals(webhook, "connections") >= 1);
    drop(open);
    // The server sees the closes asynchronously: a new connection serves once one is counted.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let served = connect(webhook.port(), config)
            .and_then(|mut tls| post(&mut tls, &review("")))
            .is_ok_and(|(status, _, _)| status == 200);
        if served {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed after the connections closed"
        );
    }
}

/// Clients sending the largest, costliest bodies as fast as they can, more of them than the
/// request cap, for a few seconds: each gets an answer or a 503, and the webhook's peak RSS
/// stays under the shipped memory limit.
fn flood_of_the_largest_bodies(webhook: &Webhook, config: &Arc<ClientConfig>, limits: &Limits) {
    let body = Arc::new(largest_review(limits.max_body_bytes));
    let stop = Arc::new(AtomicBool::new(false));
    let clients = limits.max_requests_in_flight as usize + 8;
    let workers: Vec<_> = (0..clients)
        .map(|_| {
            let (body, stop, config) = (Arc::clone(&body), Arc::clone(&stop), Arc::clone(config));
            let port = webhook.port();
            std::thread::spawn(move || {
                let (mut ok, mut refused) = (0u32, 0u32);
                let mut tls = connect(port, &config).expect("connect");
                while !stop.load(Ordering::Relaxed) {
                    match post(&mut tls, &body) {
                        Ok((200, _, _)) => ok += 1,
                        Ok((other, text, _)) => {
                            assert_eq!(other, 503, "{text}");
                            refused += 1;
                            // Closed by the server: the body was never read.
                            tls = connect(port, &config).expect("connect");
                        }
                        // The 503 came (and the connection closed) while the body was still
                        // being sent: refused without reading it.
                        Err(_) => {
                            refused += 1;
                            tls = connect(port, &config).expect("connect");
                        }
                    }
                }
                (ok, refused)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut refused) = (0, 0);
    for w in workers {
        let (o, r) = w.join().expect("a client");
        ok += o;
        refused += r;
    }
    let peak = peak_rss_kib(webhook.pid());
    println!(
        "flood of {clients} clients with {} KiB bodies: {ok} answered, {refused} refused; peak RSS {} MiB",
        body.len() / 1024,
        peak / 1024
    );
    assert!(ok > 0, "the flood got no answer at all");
    assert!(
        peak < MEMORY_LIMIT_KIB,
        "peak RSS {} MiB is over the shipped limit of {} MiB",
        peak / 1024,
        MEMORY_LIMIT_KIB / 1024
    );
}

/// An HTTP/1.1 keep-alive connection after one request, and an HTTP/2 connection that sent its
/// preface and nothing more, are both closed once idle for the idle timeout.
fn idle_connections_are_closed(webhook: &Webhook, ca_pem: &str) {
    let before = refusals(webhook, "idle");
    let mut keep_alive = connect(webhook.port(), &client_config(ca_pem, b"http/1.1")).expect("h1");
    let (status, _, _) = post(&mut keep_alive, &review("")).expect("one request");
    assert_eq!(status, 200);
    let h1_idle = Instant::now();
    let mut preface = connect(webhook.port(), &client_config(ca_pem, b"h2")).expect("h2");
    assert_eq!(preface.conn.alpn_protocol(), Some(&b"h2"[..]));
    // The connection preface and an empty SETTINGS frame; then nothing.
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .and_then(|()| preface.flush())
        .expect("preface");
    let h2_idle = Instant::now();
    let limit = IDLE + Duration::from_secs(5);
    closed_within(&mut keep_alive, limit).expect("the idle HTTP/1.1 connection closed");
    let h1 = h1_idle.elapsed();
    closed_within(&mut preface, limit).expect("the preface-only HTTP/2 connection closed");
    let h2 = h2_idle.elapsed();
    println!("idle connections closed after {h1:?} (HTTP/1.1), {h2:?} (HTTP/2)");
    // Closed for idling, not at once.
    assert!(
        h1.min(h2) >= IDLE - Duration::from_millis(100),
        "{h1:?} {h2:?}"
    );
    assert!(refusals(webhook, "idle") >= before + 2);
}

/// After all of it, a real admission through the API server: a Repository is defaulted by the
/// mutating webhook and admitted by the validating one.
fn serves_normally(cp: &ControlPlane) {
    let ns = "default";
    let text =
        std::fs::read_to_string(repo_root().join("manifests/examples/repository-local.yaml"))
            .expect("example");
    let mut object: serde_json::Value = serde_yaml::from_str(&text).expect("YAML");
    object["metadata"]["namespace"] = ns.into();
    let out = cp.kubectl_stdin(
        ["create", "--dry-run=server", "-o", "json", "-f", "-"],
        &serde_json::to_string(&object).expect("JSON"),
    );
    assert!(
        out.status.success(),
        "admission failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let created: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(
        !created["spec"]["usagePolicy"]["allowedNamespaces"]["from"].is_null(),
        "not defaulted by the webhook: {created}"
    );
}

#[test]
fn beyond_its_bounds_the_webhook_refuses_fast_stays_small_and_recovers() {
    cairn_tests::init_crypto();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let cp: &'static ControlPlane = ControlPlane::shared();
    rt.block_on(async {
        cp.apply_crds(crds_dir()).await.expect("CRDs");
        cp.apply_crds(appbinding_crd_dir())
            .await
            .expect("AppBinding CRD");
    });
    let limits = Limits::default();
    let idle = format!("--idle-timeout={}ms", IDLE.as_millis());
    let webhook = Webhook::start_with(cp, &[&idle]).expect("webhook starts");
    webhook.register(cp).expect("webhook registered");
    let ca_pem = webhook.ca().cert_pem();
    let h1 = client_config(&ca_pem, b"http/1.1");

    requests_beyond_the_cap(&webhook, &h1, &limits);
    connections_beyond_the_cap(&webhook, &h1, &limits);
    flood_of_the_largest_bodies(&webhook, &h1, &limits);
    idle_connections_are_closed(&webhook, &ca_pem);
    serves_normally(cp);
    assert!(
        webhook
            .log_tail(200)
            .lines()
            .all(|l| !l.contains("panicked")),
        "{}",
        webhook.log_tail(50)
    );
}
