//! `cairn-controller`: waits for the leader lease, then runs the BackupConfiguration,
//! BackupSession and RestoreSession controllers until SIGTERM or the lease is lost.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::Router;
use axum::routing::get;
use cairn_api::naming::{LABEL_MANAGED_BY, LABEL_SESSION, MANAGED_BY};
use cairn_api::pod_security::PodSecurityLevel;
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::Policy;
use cairn_api::{
    AppBinding, BackupConfiguration, BackupSession, Function, Repository, RestoreSession, Task,
};
use cairn_controller::context::Context;
use cairn_controller::error::error_policy;
use cairn_controller::leader::LeaderElector;
use cairn_controller::metrics::Metrics;
use cairn_controller::stores::{SharedWatch, Stores, keep_all, pod_status_only};
use cairn_controller::{backup_configuration, repository, session};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(name = "cairn-controller", about = "cairn's controller", version)]
struct Args {
    /// Address of the plain-HTTP admin server (/livez, /readyz, /metrics).
    #[arg(long, env = "CAIRN_ADMIN_LISTEN", default_value = "0.0.0.0:8080")]
    admin_listen: SocketAddr,
    /// Namespace of the leader Lease.
    #[arg(long, env = "CAIRN_LEASE_NAMESPACE", default_value = "cairn-system")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, default_value = "cairn-controller")]
    lease_name: String,
    /// This instance's identity in the Lease (default: the host name and process id).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Lease duration in seconds: a standby takes over within it when the leader dies.
    #[arg(long, default_value_t = 15)]
    lease_duration_seconds: u64,
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
    /// Kubeconfig to use instead of the in-cluster configuration or $KUBECONFIG.
    #[arg(long, env = "CAIRN_KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, env = "CAIRN_LOG_FORMAT", default_value = "text")]
    log_format: String,
}

async fn kube_client(kubeconfig: Option<&std::path::Path>) -> anyhow::Result<Client> {
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

async fn shutdown_signal() {
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

/// Reconciles in flight per controller.
const RECONCILES_IN_FLIGHT: u16 = 32;

/// Wraps a reconcile with the reconcile metrics.
macro_rules! timed {
    ($name:literal, $f:path) => {
        |obj, ctx: Arc<Context>| async move {
            let start = Instant::now();
            let metrics = ctx.metrics.clone();
            let key = cairn_controller::context::key(obj.as_ref());
            let result = $f(obj, ctx.clone()).await;
            if result.is_ok() {
                ctx.succeeded(&key);
            }
            metrics.reconciled($name, start.elapsed());
            result
        }
    };
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if args.log_format == "json" {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let client = kube_client(args.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::default());

    let (leading_tx, leading_rx) = watch::channel(false);
    let admin = {
        let metrics = metrics.clone();
        let leading = leading_rx.clone();
        Router::new()
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
            )
    };
    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("binding {}", args.admin_listen))?;
    tokio::spawn(async move { axum::serve(listener, admin).await });

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    });
    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        Duration::from_secs(args.lease_duration_seconds.max(3)),
    ));
    tokio::select! {
        () = elector.acquire() => {},
        () = shutdown_signal() => return Ok(()),
    }
    let _ = leading_tx.send(true);
    let mut lost = elector.clone().keep();

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutting down"),
            _ = lost.wait_for(|leading| !*leading) => tracing::warn!("leadership lost; stopping"),
        }
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let install = InstallSettings {
        agent_image: args.agent_image.clone(),
        policy: Policy {
            job_pod_security: args.job_pod_security,
        },
        ..Default::default()
    };

    // One watch per kind, shared by the controllers that need it.
    let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
    let all = watcher::Config::default;
    let mut session_watch = SharedWatch::<BackupSession>::new(&client, all());
    let mut restore_watch = SharedWatch::<RestoreSession>::new(&client, all());
    let mut config_watch = SharedWatch::<BackupConfiguration>::new(&client, all());
    let mut repository_watch = SharedWatch::<Repository>::new(&client, all());
    let mut app_watch = SharedWatch::<AppBinding>::new(&client, all());
    let mut task_watch = SharedWatch::<Task>::new(&client, all());
    let function_watch = SharedWatch::<Function>::new(&client, all());
    let namespace_watch = SharedWatch::<Namespace>::new(&client, all());
    let mut job_watch = SharedWatch::<Job>::new(&client, all().labels(&managed));
    let mut pod_watch = SharedWatch::<Pod>::new(&client, all().labels(&managed));
    let ctx = Arc::new(Context::new(
        client.clone(),
        Stores {
            sessions: session_watch.store.clone(),
            configurations: config_watch.store.clone(),
            repositories: repository_watch.store.clone(),
            app_bindings: app_watch.store.clone(),
            tasks: task_watch.store.clone(),
            functions: function_watch.store.clone(),
            namespaces: namespace_watch.store.clone(),
            jobs: job_watch.store.clone(),
            pods: pod_watch.store.clone(),
        },
        install,
        metrics.clone(),
        identity,
    ));
    // At a slot every due configuration reconciles at once: a bounded number in flight keeps
    // the client on a few reused connections instead of one TLS handshake per reconcile.
    let limits = || controller::Config::default().concurrency(RECONCILES_IN_FLIGHT);
    fn session_of_pod<K: kube::Resource<DynamicType = ()>>(pod: &Pod) -> Option<ObjectRef<K>> {
        let ns = pod.namespace().unwrap_or_default();
        pod.labels()
            .get(LABEL_SESSION)
            .map(|s| ObjectRef::new(s).within(&ns))
    }

    // BackupSessions: own Jobs, and hear about their Pods through the session label.
    let backup_sessions =
        Controller::for_stream(futures::stream::pending(), session_watch.store.clone())
            .with_config(limits())
            .reconcile_on(session_watch.route_self())
            .reconcile_on(job_watch.route_owner())
            .reconcile_on(pod_watch.route(session_of_pod::<BackupSession>))
            .graceful_shutdown_on(stopped())
            .run(
                timed!("backupsession", session::reconcile::<BackupSession>),
                error_policy,
                ctx.clone(),
            )
            .for_each(log_result);

    let restores = Controller::for_stream(futures::stream::pending(), restore_watch.store.clone())
        .with_config(limits())
        .reconcile_on(restore_watch.route_self())
        .reconcile_on(job_watch.route_owner())
        .reconcile_on(pod_watch.route(session_of_pod::<RestoreSession>))
        .graceful_shutdown_on(stopped())
        .run(
            timed!("restoresession", session::reconcile::<RestoreSession>),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result);

    // BackupConfigurations: re-evaluated when what they reference appears or changes, and when
    // one of their sessions changes (skip rules, history).
    let configs = config_watch.store.clone();
    let referring = |configs: kube::runtime::reflector::Store<BackupConfiguration>,
                     pick: fn(&BackupConfiguration, &str, &str) -> bool| {
        move |ns: Option<String>, name: String| {
            configs
                .state()
                .into_iter()
                .filter(|c| pick(c, ns.as_deref().unwrap_or_default(), &name))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_repo = referring(configs.clone(), |c, ns, name| {
        c.spec.repository.name == name
            && c.spec
                .repository
                .namespace
                .as_deref()
                .or(c.namespace().as_deref())
                == Some(ns)
    });
    let by_app = referring(configs.clone(), |c, ns, name| {
        c.spec.target.r#ref.name == name && c.namespace().as_deref() == Some(ns)
    });
    let by_task = referring(configs.clone(), |c, _, name| {
        c.spec.task.as_ref().and_then(|t| t.name.as_deref()) == Some(name)
    });
    let configurations = Controller::for_stream(futures::stream::pending(), configs)
        .with_config(limits())
        .reconcile_on(config_watch.route_self())
        .reconcile_on(
            repository_watch.route(move |r: &Repository| by_repo(r.namespace(), r.name_any())),
        )
        .reconcile_on(app_watch.route(move |a: &AppBinding| by_app(a.namespace(), a.name_any())))
        .reconcile_on(task_watch.route(move |t: &Task| by_task(None, t.name_any())))
        .reconcile_on(session_watch.route(|s: &BackupSession| {
            let ns = s.namespace().unwrap_or_default();
            Some(ObjectRef::<BackupConfiguration>::new(&s.spec.invoker.name).within(&ns))
        }))
        .graceful_shutdown_on(stopped())
        .run(
            timed!("backupconfiguration", backup_configuration::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result);

    // Repositories: the wipe-out finalizer and its cleanup Job (a deleted Job wakes it too).
    let repositories =
        Controller::for_stream(futures::stream::pending(), repository_watch.store.clone())
            .with_config(limits())
            .reconcile_on(repository_watch.route_self())
            .reconcile_on(job_watch.route_owner())
            .graceful_shutdown_on(stopped())
            .run(
                timed!("repository", repository::reconcile),
                error_policy,
                ctx.clone(),
            )
            .for_each(log_result);

    // Every route in place: start the watches.
    tokio::spawn(session_watch.run(keep_all));
    tokio::spawn(restore_watch.run(keep_all));
    tokio::spawn(config_watch.run(keep_all));
    tokio::spawn(repository_watch.run(keep_all));
    tokio::spawn(app_watch.run(keep_all));
    tokio::spawn(task_watch.run(keep_all));
    tokio::spawn(function_watch.run(keep_all));
    tokio::spawn(namespace_watch.run(keep_all));
    tokio::spawn(job_watch.run(keep_all));
    tokio::spawn(pod_watch.run(pod_status_only));

    tracing::info!("cairn-controller running");
    futures::join!(backup_sessions, restores, configurations, repositories);
    elector.release().await;
    Ok(())
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "controller event");
    }
}
