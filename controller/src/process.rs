//! The process around the controllers: its common flags, logging with the TLS provider, and
//! the admin server (the client and the shutdown signal are `cairn-process`'s, shared with the
//! webhook).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use cairn_api::duration::parse_std_duration;
use cairn_api::pod_security::PodSecurityLevel;
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::Policy;
use tokio::sync::watch;

use crate::context::SessionLimits;
use crate::health::Health;
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

/// How long a session may wait to start and to run (see [`SessionLimits`]).
#[derive(clap::Args, Debug)]
pub struct SessionLimitFlags {
    /// How long a session's Pod may stay without starting (not created, unschedulable,
    /// ContainerCreating) before the session fails with the Pod's reason: a Go duration.
    #[arg(long, env = "CAIRN_PENDING_TIMEOUT", default_value = "10m", value_parser = parse_std_duration)]
    pub pending_timeout: Duration,
    /// The deadline of a session whose configuration or restore sets no `timeOut`: a Go
    /// duration. Its Job also gets `activeDeadlineSeconds` a minute beyond the deadline, in
    /// case no controller is there to end it.
    #[arg(long, env = "CAIRN_DEFAULT_SESSION_DEADLINE", default_value = "24h", value_parser = parse_std_duration)]
    pub default_session_deadline: Duration,
}

impl SessionLimitFlags {
    pub fn limits(&self) -> SessionLimits {
        SessionLimits {
            start: self.pending_timeout,
            deadline: self.default_session_deadline,
        }
    }
}

/// Logs (see [`cairn_process::init_logging`]), and installs the TLS crypto provider.
pub fn init(format: &str) -> anyhow::Result<()> {
    cairn_process::init_logging(format);
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))
}

/// Serves /livez and /readyz (503 with the reason when not, see [`Health`]), /metrics and
/// /leader (`leader` or `standby`) on `listen`, in the background, for as long as the process
/// runs.
pub async fn serve_admin(
    listen: SocketAddr,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    leading: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let live = health.clone();
    let admin = Router::new()
        .route(
            "/livez",
            get(move || {
                let stalled = live.stalled();
                async move {
                    match stalled {
                        None => (StatusCode::OK, "ok".to_string()),
                        Some(d) => (
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("the lease loop has not completed an attempt for {d:.0?}"),
                        ),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = health.ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        )
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
