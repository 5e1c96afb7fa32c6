//! The HTTPS admission server in-process: `serve_tls` on a loopback port with a certificate from
//! `cairn-certs`, the shipped examples as lookups, and a rustls + hyper client that trusts the CA.
//! TLS 1.3 and 1.2 (nothing older), bad bodies (413, 400), a client that trickles its headers,
//! graceful shutdown, and a certificate reload under load without a single failed request.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::LookupTable;
use cairn_certs::{Ca, ServingCert, generate_ca, issue_serving_cert, write_files};
use cairn_webhook::bounds::{Limits, MAX_BODY_BYTES};
use cairn_webhook::metrics::Metrics;
use cairn_webhook::server::{AppState, admission_router, serve_tls};
use cairn_webhook::tls::{ReloadingCert, server_config};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore, SupportedProtocolVersion};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// `serve_tls`'s HTTP/1 header read timeout.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Slack on top of a timeout before a test calls it a hang (2 cores, other builds running).
const SLACK: Duration = Duration::from_secs(5);

fn install_provider() {
    // Every test of this binary shares the process: the first one installs, the rest find it.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn manifests() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// The shipped examples and catalog as lookups (what the watch caches hold in a demo cluster).
fn example_cluster() -> LookupTable {
    let mut table = LookupTable::default().with_namespace("demo", &[]);
    for dir in ["examples", "catalog"] {
        for entry in std::fs::read_dir(manifests().join(dir)).expect("manifests") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for doc in parse_documents(&text).expect("yaml") {
                table = match typed(doc).expect("typed") {
                    Object::Repository(o) => table.with_repository(o),
                    Object::BackupConfiguration(o) => table.with_backup_configuration(o),
                    Object::Task(o) => table.with_task(o),
                    Object::Function(o) => table.with_function(o),
                    Object::AppBinding(o) => table.with_app_binding(o),
                    _ => table,
                };
            }
        }
    }
    table
}

/// An AdmissionReview (CREATE) of the interim-volume BackupConfiguration example.
fn interim_review(uid: &str) -> Vec<u8> {
    let text =
        std::fs::read_to_string(manifests().join("examples/backupconfiguration-interim.yaml"))
            .expect("example");
    let object = parse_documents(&text).expect("yaml").remove(0);
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": uid,
            "kind": {"group": "cairn.dev", "version": "v1alpha1", "kind": "BackupConfiguration"},
            "resource": {"group": "cairn.dev", "version": "v1alpha1", "resource": "backupconfigurations"},
            "name": object["metadata"]["name"].clone(),
            "namespace": object["metadata"]["namespace"].clone(),
            "operation": "CREATE",
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    });
    serde_json::to_vec(&review).expect("json")
}

fn new_ca(name: &str) -> Ca {
    generate_ca(name, Duration::from_secs(3600)).expect("CA")
}

/// Issues a serving certificate for localhost/127.0.0.1 and writes it the way a Secret volume
/// update does (`ca.crt`, `tls.key`, `tls.crt`, each renamed into place).
fn write_serving_cert(dir: &Path, ca: &Ca) -> ServingCert {
    let serving = issue_serving_cert(
        ca,
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Duration::from_secs(3600),
    )
    .expect("serving cert");
    write_files(dir, &serving).expect("written");
    serving
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("PEM certificate")
}

struct Server {
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    dir: std::path::PathBuf,
    cert: Arc<ReloadingCert>,
    ca: Ca,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start() -> Server {
        Self::start_with(Limits {
            request_timeout: Duration::from_secs(10),
            ..Limits::default()
        })
        .await
    }

    async fn start_with(limits: Limits) -> Server {
        install_provider();
        let tmp = tempfile::Builder::new()
            .prefix("cairn-tls-server-")
            .tempdir()
            .expect("temp dir");
        let dir = tmp.path().to_path_buf();
        let ca = new_ca("cairn-test-ca-1");
        write_serving_cert(&dir, &ca);
        let cert = ReloadingCert::new(dir.join("tls.crt"), dir.join("tls.key")).expect("cert");
        let acceptor =
            TlsAcceptor::from(Arc::new(server_config(Arc::clone(&cert)).expect("config")));
        let state = Arc::new(AppState {
            lookups: Arc::new(example_cluster()),
            fetch: None,
            access: None,
            install: InstallSettings {
                agent_image: "cairn-agent:test".into(),
                ..Default::default()
            },
            metrics: Metrics::default(),
            ready: Box::new(|| true),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let metrics = state.metrics.clone();
        let task = tokio::spawn(serve_tls(
            listener,
            acceptor,
            admission_router(state, &limits),
            limits,
            metrics,
            async move {
                let _ = stopped.await;
            },
            Duration::from_secs(5),
        ));
        Server {
            addr,
            _dir: tmp,
            dir,
            cert,
            ca,
            stop: Some(stop),
            task,
        }
    }

    fn client(&self) -> Arc<ClientConfig> {
        client_config(&[&self.ca.cert_pem], rustls::DEFAULT_VERSIONS)
    }
}

fn client_config(
    cas: &[&str],
    versions: &[&'static SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for pem in cas {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("PEM")).expect("trust anchor");
        }
    }
    let mut config = ClientConfig::builder_with_protocol_versions(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    addr: SocketAddr,
    config: Arc<ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").expect("name");
    TlsConnector::from(config).connect(name, tcp).await
}

type Sender = SendRequest<Full<Bytes>>;

/// An HTTP/1.1 keep-alive connection: the sender, and the task driving the connection (it ends
/// when the server closes the connection).
async fn http1(tls: TlsStream<TcpStream>) -> (Sender, JoinHandle<hyper::Result<()>>) {
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("HTTP/1.1 handshake");
    (sender, tokio::spawn(conn))
}

async fn post(
    sender: &mut Sender,
    path: &str,
    body: Vec<u8>,
) -> Result<(StatusCode, Bytes), hyper::Error> {
    sender.ready().await?;
    let req = Request::post(path)
        .header("host", "localhost")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// One validate round trip on `sender`, checked: an error string on any failure.
async fn validate_once(sender: &mut Sender, uid: &str) -> Result<(), String> {
    let (status, body) = post(
        sender,
        "/validate/backupconfigurations",
        interim_review(uid),
    )
    .await
    .map_err(|e| format!("request failed: {e:?}"))?;
    let v: Value = serde_json::from_slice(&body).map_err(|e| format!("{status}: {e}"))?;
    if status != StatusCode::OK || v["response"]["uid"] != uid || v["response"]["allowed"] != true {
        return Err(format!("{status}: {v}"));
    }
    Ok(())
}

/// Reads until the peer closes (or errors), up to `deadline`; what arrived, or None on timeout.
async fn read_until_closed<R: AsyncReadExt + Unpin>(
    r: &mut R,
    deadline: Duration,
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let res = timeout(deadline, async {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    res.ok().map(|()| out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_review_over_tls13_and_tls12() {
    let server = Server::start().await;
    for (version, expected) in [
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
    ] {
        let config = client_config(&[&server.ca.cert_pem], &[version]);
        let tls = tls_connect(server.addr, config).await.expect("handshake");
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expected));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (mut sender, _conn) = http1(tls).await;

        let (status, body) = post(
            &mut sender,
            "/validate/backupconfigurations",
            interim_review("uid-validate"),
        )
        .await
        .expect("validate");
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
        assert_eq!(v["kind"], "AdmissionReview");
        assert_eq!(v["response"]["uid"], "uid-validate");
        assert_eq!(v["response"]["allowed"], true, "{v}");
        assert!(v["response"]["warnings"].is_null(), "{v}");

        // Same connection (keep-alive): the defaults come back as a JSON patch.
        let (status, body) = post(
            &mut sender,
            "/mutate/backupconfigurations",
            interim_review("uid-mutate"),
        )
        .await
        .expect("mutate");
        assert_eq!(status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(v["response"]["uid"], "uid-mutate");
        assert_eq!(v["response"]["allowed"], true, "{v}");
        assert_eq!(v["response"]["patchType"], "JSONPatch", "{v}");
        let patch: Vec<u8> = v["response"]["patch"]
            .as_array()
            .expect("patch bytes")
            .iter()
            .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("byte"))
            .collect();
        let patch: Value = serde_json::from_slice(&patch).expect("JSON patch");
        assert!(
            patch.as_array().is_some_and(|ops| !ops.is_empty()),
            "{patch}"
        );
    }
}

/// A TLS 1.1 ClientHello (record version 1.0, client_version 1.1, no supported_versions): what
/// an old client sends.
fn tls11_client_hello() -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0); // session id
    // TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
    // TLS_RSA_WITH_AES_128_CBC_SHA
    hello.extend_from_slice(&[0x00, 0x06, 0xc0, 0x09, 0xc0, 0x13, 0x00, 0x2f]);
    hello.extend_from_slice(&[0x01, 0x00]); // compression: null
    let extensions = [
        // supported_groups: secp256r1, x25519
        &[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d][..],
        // ec_point_formats: uncompressed
        &[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00][..],
    ]
    .concat();
    hello.extend_from_slice(&u16::try_from(extensions.len()).expect("len").to_be_bytes());
    hello.extend_from_slice(&extensions);
    let len = u32::try_from(hello.len()).expect("len").to_be_bytes();
    let mut handshake = vec![0x01, len[1], len[2], len[3]]; // ClientHello
    handshake.extend_from_slice(&hello);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).expect("len").to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_tls12_and_tls13_are_offered() {
    let server = Server::start().await;
    let config = server_config(Arc::clone(&server.cert)).expect("config");
    for suite in &config.crypto_provider().cipher_suites {
        let version = suite.version().version;
        assert!(
            matches!(version, ProtocolVersion::TLSv1_2 | ProtocolVersion::TLSv1_3),
            "{suite:?} is for {version:?}"
        );
    }
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("TLSv1_1") && !debug.contains("TLSv1_0"),
        "{debug}"
    );

    // On the wire: a TLS 1.1 ClientHello gets a fatal alert, never a ServerHello.
    let mut tcp = TcpStream::connect(server.addr).await.expect("connect");
    tcp.write_all(&tls11_client_hello()).await.expect("hello");
    let answer = read_until_closed(&mut tcp, SLACK)
        .await
        .expect("an answer, not a hang");
    assert!(answer.len() >= 7, "{answer:?}");
    assert_eq!(
        answer[0], 0x15,
        "an alert record, not a handshake: {answer:?}"
    );
    assert_eq!(answer[5], 2, "a fatal alert: {answer:?}");
    // rustls answers handshake_failure (40); protocol_version (70) would do as well.
    assert!(matches!(answer[6], 40 | 70), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_body_gets_413() {
    let server = Server::start().await;
    let tls = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    let (mut sender, _conn) = http1(tls).await;
    let mut body = interim_review("uid-big");
    body.resize(MAX_BODY_BYTES + 1, b' ');
    let (status, text) = timeout(HEADER_TIMEOUT, post(&mut sender, "/validate", body))
        .await
        .expect("an answer, not a hang")
        .expect("a response");
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{text:?}");

    // Exactly the limit is still read and judged.
    let tls = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    let (mut sender, _conn) = http1(tls).await;
    let mut body = interim_review("uid-limit");
    body.resize(MAX_BODY_BYTES, b' ');
    let (status, text) = timeout(HEADER_TIMEOUT, post(&mut sender, "/validate", body))
        .await
        .expect("an answer, not a hang")
        .expect("a response");
    assert_eq!(status, StatusCode::OK, "{text:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_bodies_get_400_with_a_clear_message() {
    let server = Server::start().await;
    let tls = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    let (mut sender, _conn) = http1(tls).await;

    let (status, text) = post(&mut sender, "/validate", b"this is not JSON".to_vec())
        .await
        .expect("response");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("the body is not JSON: "), "{text}");

    let (status, text) = post(
        &mut sender,
        "/mutate",
        br#"{"apiVersion":"v1","kind":"ConfigMap"}"#.to_vec(),
    )
    .await
    .expect("response");
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("expected an AdmissionReview of apiVersion admission.k8s.io/v1"),
        "{text}"
    );

    // The connection is still good for a valid review.
    validate_once(&mut sender, "uid-after-400")
        .await
        .expect("valid review after bad ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stalls_in_its_headers_is_cut_off_and_blocks_nobody() {
    let server = Server::start().await;
    let started = Instant::now();
    let mut slow = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    slow.write_all(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Ty")
        .await
        .expect("half the headers");
    slow.flush().await.expect("flush");
    // Clients that complete the handshake and then say nothing at all, on HTTP/1.1 and on h2
    // (ALPN): the first bytes are due within the header timeout too.
    let mut silent = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    let mut h2_config = (*server.client()).clone();
    h2_config.alpn_protocols = vec![b"h2".to_vec()];
    let mut silent_h2 = tls_connect(server.addr, Arc::new(h2_config))
        .await
        .expect("handshake");
    assert_eq!(silent_h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));

    // Meanwhile everyone else is served, each promptly.
    for i in 0..10 {
        let t = Instant::now();
        let tls = tls_connect(server.addr, server.client())
            .await
            .expect("handshake");
        let (mut sender, _conn) = http1(tls).await;
        validate_once(&mut sender, &format!("uid-{i}"))
            .await
            .expect("served while a slow client stalls");
        assert!(t.elapsed() < SLACK, "{:?}", t.elapsed());
    }

    let deadline = HEADER_TIMEOUT + SLACK;
    let (slow_answer, silent_answer, silent_h2_answer) = tokio::join!(
        read_until_closed(&mut slow, deadline),
        read_until_closed(&mut silent, deadline),
        read_until_closed(&mut silent_h2, deadline),
    );
    let answer = slow_answer.expect("the stalled client is cut off within the header timeout");
    let text = String::from_utf8_lossy(&answer);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408") || text.starts_with("HTTP/1.1 400"),
        "{text}"
    );
    silent_answer.expect("the silent client is cut off within the header timeout");
    silent_h2_answer.expect("the silent h2 client is cut off within the header timeout");
    let elapsed = started.elapsed();
    assert!(elapsed < deadline, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight_and_accepts_nothing_new() {
    let mut server = Server::start().await;

    // An idle keep-alive connection that has served a request.
    let tls = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    let (mut idle, idle_conn) = http1(tls).await;
    validate_once(&mut idle, "uid-idle").await.expect("served");

    // A request in flight: headers sent, the handler waiting for the body (the server's
    // `100 Continue` proves it got that far), then shutdown, then the body.
    let body = interim_review("uid-in-flight");
    let mut in_flight = tls_connect(server.addr, server.client())
        .await
        .expect("handshake");
    let head = format!(
        "POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.expect("head");
    in_flight.flush().await.expect("flush");
    let mut buf = vec![0u8; 256];
    let n = timeout(SLACK, in_flight.read(&mut buf))
        .await
        .expect("100 Continue, not a hang")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(text.starts_with("HTTP/1.1 100 Continue"), "{text}");

    server
        .stop
        .take()
        .expect("once")
        .send(())
        .expect("server running");

    // No new connection is accepted.
    let deadline = Instant::now() + SLACK;
    loop {
        match TcpStream::connect(server.addr).await {
            Err(_) => break,
            Ok(_) => {
                assert!(Instant::now() < deadline, "still accepting after shutdown");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    // The idle keep-alive connection is closed cleanly (no error on the client's side).
    let closed = timeout(SLACK, idle_conn)
        .await
        .expect("the idle connection is closed")
        .expect("task");
    assert!(closed.is_ok(), "{closed:?}");
    assert!(
        !server.task.is_finished(),
        "serve_tls waits for the request in flight"
    );

    // The request in flight completes, and the connection closes after it.
    in_flight.write_all(&body).await.expect("body");
    in_flight.flush().await.expect("flush");
    let rest = read_until_closed(&mut in_flight, SLACK)
        .await
        .expect("the response, then close");
    let text = String::from_utf8_lossy(&rest).to_string();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    assert!(text.contains("\"uid\":\"uid-in-flight\""), "{text}");
    assert!(text.contains("\"allowed\":true"), "{text}");

    timeout(SLACK, &mut server.task)
        .await
        .expect("serve_tls returns once the last connection is done")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_under_load_loses_no_request() {
    let server = Server::start().await;
    let old_ca = server.ca.clone();
    let new_ca = new_ca("cairn-test-ca-2");
    let both = client_config(
        &[&old_ca.cert_pem, &new_ca.cert_pem],
        rustls::DEFAULT_VERSIONS,
    );
    // The watcher polls often, so it also sees the moment the new key is in place but the
    // certificate is still the old one.
    server.cert.watch(Duration::from_millis(5));

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut clients = Vec::new();
    // Two clients with a new connection (a new handshake) per request, one on keep-alive.
    for id in 0..3 {
        let (stop, ok, failures, config) = (
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
            Arc::clone(&both),
        );
        let addr = server.addr;
        clients.push(tokio::spawn(async move {
            let mut kept: Option<Sender> = None;
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let uid = format!("uid-{id}-{i}");
                let mut sender = match kept.take() {
                    Some(s) => s,
                    None => match tls_connect(addr, Arc::clone(&config)).await {
                        Ok(tls) => http1(tls).await.0,
                        Err(e) => {
                            failures
                                .lock()
                                .expect("lock")
                                .push(format!("{uid}: handshake: {e}"));
                            continue;
                        }
                    },
                };
                let result = validate_once(&mut sender, &uid).await;
                if id == 2 && result.is_ok() {
                    kept = Some(sender);
                }
                match result {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures.lock().expect("lock").push(format!("{uid}: {e}")),
                }
            }
        }));
    }
    let wait_for = |n: usize| {
        let ok = Arc::clone(&ok);
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            while ok.load(Ordering::SeqCst) < n {
                assert!(Instant::now() < deadline, "clients are not making progress");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(30).await;

    let new_cert = write_serving_cert(&server.dir, &new_ca);
    // The watcher may have got there first; either way the new pair is loaded now.
    let _ = server.cert.reload_if_changed();
    let only_new = client_config(&[&new_ca.cert_pem], rustls::DEFAULT_VERSIONS);
    let deadline = Instant::now() + SLACK;
    let seen = loop {
        match tls_connect(server.addr, Arc::clone(&only_new)).await {
            Ok(tls) => break tls.get_ref().1.peer_certificates().expect("certs")[0].clone(),
            Err(e) => {
                assert!(Instant::now() < deadline, "new certificate not served: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(seen, der(&new_cert.cert_pem));
    let only_old = client_config(&[&old_ca.cert_pem], rustls::DEFAULT_VERSIONS);
    assert!(
        tls_connect(server.addr, only_old).await.is_err(),
        "the old certificate is still served"
    );

    // More rotations (same new CA, new keys) while the clients keep going.
    for _ in 0..5 {
        let before = ok.load(Ordering::SeqCst);
        wait_for(before + 10).await;
        write_serving_cert(&server.dir, &new_ca);
    }
    let before = ok.load(Ordering::SeqCst);
    wait_for(before + 30).await;
    stop.store(true, Ordering::SeqCst);
    for c in clients {
        c.await.expect("client");
    }
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {failures:?}",
        failures.len(),
        ok.load(Ordering::SeqCst) + failures.len()
    );
}

/// An HTTP/2 client that answers the server's pings (as the API server's does) and has no
/// request in flight: its connection is closed (GOAWAY) once idle for the idle timeout, not
/// before, and the request it made before was answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let idle = Duration::from_secs(1);
    let server = Server::start_with(Limits {
        idle_timeout: idle,
        ..Limits::default()
    })
    .await;
    let mut config = (*server.client()).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tls = tls_connect(server.addr, Arc::new(config))
        .await
        .expect("TLS");
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .expect("HTTP/2 handshake");
    let conn = tokio::spawn(conn);
    let req = Request::post("https://localhost/validate/backupconfigurations")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(interim_review("h2-idle"))))
        .expect("request");
    let resp = sender.send_request(req).await.expect("an answer");
    assert_eq!(resp.status(), StatusCode::OK);
    resp.into_body().collect().await.expect("the body");
    let answered = Instant::now();
    timeout(idle + SLACK, conn)
        .await
        .expect("the idle connection was closed")
        .expect("the connection task")
        .expect("closed cleanly (GOAWAY)");
    let took = answered.elapsed();
    assert!(
        took >= idle - Duration::from_millis(50),
        "closed after {took:?}, before the idle timeout"
    );
}
