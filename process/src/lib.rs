//! The plumbing `cairn-webhook` and `cairn-controller` share as processes: logs to stderr, the
//! Kubernetes client, and the signal that stops them. Nothing here knows about cairn's objects.

#![forbid(unsafe_code)]

use std::path::Path;

use anyhow::Context as _;

/// Logs to stderr in `format` (`json`, or text), filtered by $RUST_LOG (default `info`).
pub fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        "json" => logs.json().init(),
        _ => logs.init(),
    }
}

/// A client from `kubeconfig`, or else the in-cluster configuration or $KUBECONFIG.
pub async fn kube_client(kubeconfig: Option<&Path>) -> anyhow::Result<kube::Client> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .with_context(|| format!("kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("finding the Kubernetes API configuration")?,
    };
    kube::Client::try_from(config).context("connecting to the Kubernetes API")
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
