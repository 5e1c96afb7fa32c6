//! The process around the controllers: its common flags, logging, the API client, the admin
//! server and the shutdown signal.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use cairn_api::pod_security::PodSecurityLevel;
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::Policy;
use kube::Client;
use tokio::sync::watch;

use crate::metrics::Metrics;

/// How the process logs, reaches the API server and is looked at.
#[derive(clap::Args, Debug)]
pub struct ProcessFlags {
    /// Address of the plain-HTTP admin server (/livez, /readyz, /metrics, /leader).
    #[arg(long, env = "CAIRN_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    pub admin_listen: SocketAddr,
    /// Kubeconfig to use instead of the in-cluster configuration or $KUBECONFIG.
    #[arg(long, env = "CAIRN_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "CAIRN_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// What the install decides about every Job (the webhook is given the same).
#[derive(clap::Args, Debug)]
pub struct InstallFlags {
    /// Image offered to Functions as ${AGENT_IMAGE}.
    #[arg(
        long,
        env = "CAIRN_AGENT_IMAGE",
        default_value = "ghcr.io/cairn-dev/cairn:latest"
    )]
    pub agent_image: String,
    /// The Pod Security Standard every Job must meet: restricted (the default), baseline or
    /// privileged. Webhook and controller must agree (the install sets both).
    #[arg(long, env = "CAIRN_JOB_POD_SECURITY", default_value = "restricted")]
    pub job_pod_security: PodSecurityLevel,
}

impl InstallFlags {
    pub fn settings(&self) -> InstallSettings {
        InstallSettings {
            agent_image: self.agent_image.clone(),
            policy: Policy {
                job_pod_security: self.job_pod_security,
            },
            ..Default::default()
        }
    }
}

/// Logs to stderr in `format` (`json`, or text), filtered by $RUST_LOG (default `info`), and
/// installs the TLS crypto provider.
pub fn init(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        "json" => logs.json().init(),
        _ => logs.init(),
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))
}

/// A client from `kubeconfig`, or else the in-cluster configuration or $KUBECONFIG.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("finding the Kubernetes API configuration")?,
    };
    Client::try_from(config).context("connecting to the Kubernetes API")
}

/// Serves /livez, /readyz, /metrics and /leader (`leader` or `standby`) on `listen`, in the
/// background, for as long as the process runs.
pub async fn serve_admin(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    leading: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let admin = Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.encode() }
            }),
        )
        .route(
            "/leader",
            get(move || {
                let l = *leading.borrow();
                async move { if l { "leader" } else { "standby" } }
            }),
        );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tokio::spawn(async move { axum::serve(listener, admin).await });
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
}
