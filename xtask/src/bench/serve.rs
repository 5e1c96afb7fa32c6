//! The two servers of `cargo xtask bench webhook`, each started by the bench as a child process
//! of its own (its own tokio runtime, its own threads): `bench serve-webhook` and
//! `bench serve-bare`. Both listen on 127.0.0.1, print `listening <port>` on stdout, serve the
//! certificate in `--cert-dir` (`tls.crt`, `tls.key`), and exit when stdin closes.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use cairn_api::resolve::InstallSettings;
use cairn_webhook::bounds::Limits;
use cairn_webhook::metrics::Metrics;
use cairn_webhook::server::{AppState, admission_router, serve_tls};
use cairn_webhook::tls::{ReloadingCert, server_config};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// What the bare server answers to every request.
pub const BARE_BODY: &[u8] =
    br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"bench","allowed":true}}"#;

struct Args {
    port: u16,
    cert_dir: PathBuf,
}

fn parse(args: &[String]) -> anyhow::Result<Args> {
    let mut port = 0;
    let mut cert_dir = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => port = it.next().context("--port N")?.parse().context("--port")?,
            "--cert-dir" => cert_dir = Some(PathBuf::from(it.next().context("--cert-dir DIR")?)),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args {
        port,
        cert_dir: cert_dir.context("--cert-dir DIR is required")?,
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

async fn bind(port: u16) -> anyhow::Result<TcpListener> {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .with_context(|| format!("binding 127.0.0.1:{port}"))?;
    let mut out = std::io::stdout();
    writeln!(out, "listening {}", listener.local_addr()?.port())?;
    out.flush()?;
    Ok(listener)
}

/// Resolves when the parent closes our stdin (or dies).
async fn stdin_closed() {
    let _ = tokio::task::spawn_blocking(|| {
        let mut buf = [0u8; 64];
        while matches!(std::io::stdin().read(&mut buf), Ok(n) if n > 0) {}
    })
    .await;
}

/// `bench serve-webhook`: the real admission router and `serve_tls`, with the shipped examples
/// as lookups (in production: reflector store reads, equally in memory). No API server.
pub fn webhook(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let rt = runtime()?;
    rt.block_on(async {
        let cert = ReloadingCert::new(args.cert_dir.join("tls.crt"), args.cert_dir.join("tls.key"))
            .context("serving certificate")?;
        let acceptor = TlsAcceptor::from(Arc::new(server_config(cert)?));
        let state = Arc::new(AppState {
            lookups: Arc::new(super::example_lookups()?),
            fetch: None,
            access: None,
            install: InstallSettings::default(),
            metrics: Metrics::default(),
            ready: Box::new(|| true),
        });
        let listener = bind(args.port).await?;
        // The bench measures admission, not refusals: no request cap below its 64 clients.
        let limits = Limits {
            max_requests_in_flight: 1024,
            ..Limits::default()
        };
        let metrics = state.metrics.clone();
        serve_tls(
            listener,
            acceptor,
            admission_router(state, &limits),
            limits,
            metrics,
            stdin_closed(),
            Duration::from_secs(1),
        )
        .await;
        anyhow::Ok(())
    })?;
    // The blocking stdin reader may still be parked; nothing else to wait for.
    std::process::exit(0)
}

/// `bench serve-bare`: rustls + hyper HTTP/1.1, reading the body and answering a fixed 200 with
/// a small JSON body. The baseline: everything the webhook does besides admission itself.
pub fn bare(args: &[String]) -> anyhow::Result<()> {
    let args = parse(args)?;
    let rt = runtime()?;
    rt.block_on(async {
        let certs = CertificateDer::pem_file_iter(args.cert_dir.join("tls.crt"))
            .context("tls.crt")?
            .collect::<Result<Vec<_>, _>>()
            .context("tls.crt")?;
        let key = PrivateKeyDer::from_pem_file(args.cert_dir.join("tls.key")).context("tls.key")?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = bind(args.port).await?;
        let stop = stdin_closed();
        tokio::pin!(stop);
        loop {
            let (tcp, _) = tokio::select! {
                accepted = listener.accept() => accepted?,
                () = &mut stop => break,
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(tls), hyper::service::service_fn(answer))
                    .await;
            });
        }
        anyhow::Ok(())
    })?;
    std::process::exit(0)
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let _body = req.into_body().collect().await?;
    let mut resp = Response::new(Full::new(Bytes::from_static(BARE_BODY)));
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}
