//! `cairn-webhook`: starts the watch caches, the HTTPS admission server and the admin server,
//! and shuts down gracefully on SIGTERM.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use cairn_api::pod_security::PodSecurityLevel;
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::Policy;
use cairn_process::{init_logging, kube_client, shutdown_signal};
use cairn_webhook::access::ApiAccessReview;
use cairn_webhook::bounds::Limits;
use cairn_webhook::cache::Caches;
use cairn_webhook::metrics::Metrics;
use cairn_webhook::read_through::ApiFetch;
use cairn_webhook::server::{AppState, admin_router, admission_router, serve_admin, serve_tls};
use cairn_webhook::tls::{ReloadingCert, server_config};
use clap::Parser;
use tokio::net::TcpListener;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(name = "cairn-webhook", about = "cairn's admission webhook", version)]
struct Args {
    /// Address of the HTTPS admission server.
    #[arg(long, env = "CAIRN_LISTEN", default_value = "0.0.0.0:8443")]
    listen: SocketAddr,
    /// Address of the plain-HTTP admin server (/livez, /readyz, /metrics).
    #[arg(long, env = "CAIRN_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    /// PEM certificate chain of the serving certificate.
    #[arg(
        long,
        env = "CAIRN_TLS_CERT_FILE",
        default_value = "/cairn/tls/tls.crt"
    )]
    tls_cert_file: PathBuf,
    /// PEM private key of the serving certificate.
    #[arg(long, env = "CAIRN_TLS_KEY_FILE", default_value = "/cairn/tls/tls.key")]
    tls_key_file: PathBuf,
    /// How often to look for a new certificate, in seconds.
    #[arg(long, default_value_t = 2)]
    cert_reload_seconds: u64,
    /// Image offered to Functions as ${AGENT_IMAGE}.
    #[arg(
        long,
        env = "CAIRN_AGENT_IMAGE",
        default_value = "ghcr.io/cairn-dev/cairn:latest"
    )]
    agent_image: String,
    /// The Pod Security Standard every Job must meet: restricted (the default), baseline or
    /// privileged. Webhook and controller must agree (the install sets both).
    #[arg(long, env = "CAIRN_JOB_POD_SECURITY", default_value = "restricted")]
    job_pod_security: PodSecurityLevel,
    /// Pull policy of the Jobs' containers (default: the cluster's).
    #[arg(long, env = "CAIRN_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// The controller's user name: the only writer of Snapshot objects.
    #[arg(
        long,
        env = "CAIRN_CONTROLLER_USER",
        default_value = "system:serviceaccount:cairn-system:cairn-controller"
    )]
    controller_user: String,
    /// The server's bounds: connections, requests in flight, sizes and timeouts.
    #[command(flatten)]
    limits: Limits,
    /// On SIGTERM, how long requests in flight may still take, in seconds.
    #[arg(long, default_value_t = 20)]
    drain_seconds: u64,
    /// Kubeconfig to use instead of the in-cluster configuration or $KUBECONFIG.
    #[arg(long, env = "CAIRN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "CAIRN_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_logging(&args.log_format);
    args.limits.check().map_err(anyhow::Error::msg)?;
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;

    let cert = ReloadingCert::new(args.tls_cert_file.clone(), args.tls_key_file.clone())
        .context("loading the serving certificate")?;
    cert.watch(Duration::from_secs(args.cert_reload_seconds.max(1)));
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(
        server_config(Arc::clone(&cert)).context("TLS configuration")?,
    ));

    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let caches = Caches::start(client.clone());
    let ready_caches = caches.clone();
    let metrics = Metrics::with_certificate_expiry(cert.expiry());
    let state = Arc::new(AppState {
        lookups: Arc::new(caches),
        fetch: Some(Arc::new(ApiFetch::new(client.clone()))),
        access: Some(Arc::new(ApiAccessReview(client))),
        install: InstallSettings {
            agent_image: args.agent_image.clone(),
            policy: Policy {
                job_pod_security: args.job_pod_security,
            },
            image_pull_policy: args.image_pull_policy.clone(),
            controller_user: args.controller_user.clone(),
            ..Default::default()
        },
        metrics,
        ready: Box::new(move || ready_caches.is_ready()),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin = tokio::spawn(serve_admin(
        args.admin_listen,
        admin_router(Arc::clone(&state)),
        stopped(stop_rx.clone()),
    ));
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    tracing::info!(listen = %args.listen, admin = %args.admin_listen, "cairn-webhook serving");
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let metrics = state.metrics.clone();
    serve_tls(
        listener,
        acceptor,
        admission_router(state, &args.limits),
        args.limits.clone(),
        metrics,
        stopped(stop_rx),
        Duration::from_secs(args.drain_seconds),
    )
    .await;
    let _ = admin.await;
    Ok(())
}
