//! `cairn-controller`: watches and syncs its caches at once, waits for the leader lease, then
//! runs the BackupConfiguration, BackupSession, RestoreSession and Repository controllers, and
//! auto-backup's AppBinding controller, until SIGTERM or the lease is lost.

#![forbid(unsafe_code)]

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::naming::{LABEL_MANAGED_BY, LABEL_SESSION, MANAGED_BY};
use cairn_api::{
    AppBinding, BackupBlueprint, BackupConfiguration, BackupSession, Function, Repository,
    RestoreSession, Snapshot, Task,
};
use cairn_controller::context::{Context, controller_name, key};
use cairn_controller::error::{Error, error_policy};
use cairn_controller::health::Health;
use cairn_controller::leader::LeaderElector;
use cairn_controller::metrics::Metrics;
use cairn_controller::process::{self, InstallFlags, ProcessFlags, SessionLimitFlags};
use cairn_controller::session::{self, SessionKind};
use cairn_controller::stores::{SharedWatch, Stores, keep_all, pod_status_only};
use cairn_controller::{backup_configuration, blueprint, repository};
use cairn_process::{kube_client, shutdown_signal};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

#[derive(Parser, Debug)]
#[command(name = "cairn-controller", about = "cairn's controller", version)]
struct Args {
    #[command(flatten)]
    process: ProcessFlags,
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
    #[command(flatten)]
    install: InstallFlags,
    #[command(flatten)]
    limits: SessionLimitFlags,
}

impl Args {
    /// `--identity`, else the host name and process id.
    fn identity(&self) -> String {
        self.identity.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

/// Wraps a reconcile with the reconcile metrics, and forgets its backoff when it succeeds.
macro_rules! timed {
    ($f:expr) => {
        |obj, ctx: Arc<Context>| async move {
            let start = Instant::now();
            let key = key(obj.as_ref());
            let name = controller_name(obj.as_ref());
            // A reconcile that hangs (a request the API server never answers: the client's
            // read timeout is minutes, for watches) would hold its object's queue: abandon it
            // and retry, as for any failure. Reconciles are idempotent.
            let result = tokio::time::timeout(RECONCILE_DEADLINE, $f(obj, ctx.clone()))
                .await
                .unwrap_or(Err(Error::TimedOut(RECONCILE_DEADLINE)));
            if result.is_ok() {
                ctx.succeeded(&key);
            }
            ctx.metrics.reconciled(&name, start.elapsed());
            result
        }
    };
}

/// How long one reconcile may take (a few API requests).
const RECONCILE_DEADLINE: Duration = Duration::from_secs(60);

/// Reconciles in flight per controller.
const RECONCILES_IN_FLIGHT: u16 = 32;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    process::init(&args.process.log_format)?;
    let client = kube_client(args.process.kubeconfig.as_deref()).await?;
    let metrics = Arc::new(Metrics::default());
    let lease = Duration::from_secs(args.lease_duration_seconds.max(3));
    // The lease loop beats at least once per lease when healthy.
    let health = Arc::new(Health::new(lease * 2));
    let (leading_tx, leading_rx) = watch::channel(false);
    process::serve_admin(
        args.process.admin_listen,
        metrics.clone(),
        health.clone(),
        leading_rx.clone(),
    )
    .await?;

    let identity = args.identity();
    let elector = Arc::new(LeaderElector::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        lease,
    ));
    // Standby or leader, the watches run and the caches sync: a standby is ready to take over.
    let (stop_tx, stop) = watch::channel(false);
    let mut watches = Watches::new(&client);
    let ctx = Arc::new(Context::new(
        client,
        watches.stores(),
        args.install.settings(),
        args.limits.limits(),
        metrics,
        identity,
    ));
    let controllers = controllers(&mut watches, &ctx, &stop);
    watches.run(&ctx.metrics, &leading_rx);
    let stores = ctx.stores.clone();
    let synced = health.clone();
    tokio::spawn(async move {
        stores.synced().await;
        synced.set_synced();
        tracing::info!("caches synced");
    });
    tokio::select! {
        () = elector.acquire(&ctx.metrics, &health) => {},
        () = shutdown_signal() => return Ok(()),
    }
    let _ = leading_tx.send(true);
    ctx.metrics.leading.set(1);
    stop_on_signal_or_lost_lease(elector.clone(), health.clone(), stop_tx);
    run_controllers(controllers, &health, stop).await;
    elector.release().await;
    Ok(())
}

/// Keeps the lease, and tells the controllers to stop on SIGTERM or when the lease is lost.
fn stop_on_signal_or_lost_lease(
    elector: Arc<LeaderElector>,
    health: Arc<Health>,
    stop: watch::Sender<bool>,
) {
    let mut lost = elector.keep(health);
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("shutting down"),
            _ = lost.wait_for(|leading| !*leading) => tracing::warn!("leadership lost; stopping"),
        }
        let _ = stop.send(true);
    });
}

/// Resolves when `stop` says so.
fn stopped(stop: &watch::Receiver<bool>) -> impl Future<Output = ()> + Send + 'static {
    let mut rx = stop.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// One watch per kind, shared by the controllers that need it.
struct Watches {
    sessions: SharedWatch<BackupSession>,
    restores: SharedWatch<RestoreSession>,
    configurations: SharedWatch<BackupConfiguration>,
    repositories: SharedWatch<Repository>,
    apps: SharedWatch<AppBinding>,
    tasks: SharedWatch<Task>,
    functions: SharedWatch<Function>,
    namespaces: SharedWatch<Namespace>,
    /// cairn's Jobs and their Pods only.
    jobs: SharedWatch<Job>,
    pods: SharedWatch<Pod>,
    blueprints: SharedWatch<BackupBlueprint>,
    /// cairn's Snapshot objects.
    snapshots: SharedWatch<Snapshot>,
}

impl Watches {
    fn new(client: &Client) -> Self {
        let managed = format!("{LABEL_MANAGED_BY}={MANAGED_BY}");
        let all = watcher::Config::default;
        Self {
            sessions: SharedWatch::new(client, all()),
            restores: SharedWatch::new(client, all()),
            configurations: SharedWatch::new(client, all()),
            repositories: SharedWatch::new(client, all()),
            apps: SharedWatch::new(client, all()),
            tasks: SharedWatch::new(client, all()),
            functions: SharedWatch::new(client, all()),
            namespaces: SharedWatch::new(client, all()),
            jobs: SharedWatch::new(client, all().labels(&managed)),
            pods: SharedWatch::new(client, all().labels(&managed)),
            blueprints: SharedWatch::new(client, all()),
            snapshots: SharedWatch::new(client, all().labels(&managed)),
        }
    }

    fn stores(&self) -> Stores {
        Stores {
            sessions: self.sessions.store.clone(),
            restores: self.restores.store.clone(),
            configurations: self.configurations.store.clone(),
            repositories: self.repositories.store.clone(),
            app_bindings: self.apps.store.clone(),
            tasks: self.tasks.store.clone(),
            functions: self.functions.store.clone(),
            namespaces: self.namespaces.store.clone(),
            jobs: self.jobs.store.clone(),
            pods: self.pods.store.clone(),
            blueprints: self.blueprints.store.clone(),
            snapshots: self.snapshots.store.clone(),
        }
    }

    /// Starts every watch; each route must be in place by then. Routes stay shut until
    /// `leading` (see [`SharedWatch::run`]).
    fn run(self, metrics: &Arc<Metrics>, leading: &watch::Receiver<bool>) {
        let m = || metrics.clone();
        let l = || leading.clone();
        tokio::spawn(self.sessions.run(keep_all, m(), l()));
        tokio::spawn(self.restores.run(keep_all, m(), l()));
        tokio::spawn(self.configurations.run(keep_all, m(), l()));
        tokio::spawn(self.repositories.run(keep_all, m(), l()));
        tokio::spawn(self.apps.run(keep_all, m(), l()));
        tokio::spawn(self.tasks.run(keep_all, m(), l()));
        tokio::spawn(self.functions.run(keep_all, m(), l()));
        tokio::spawn(self.namespaces.run(keep_all, m(), l()));
        tokio::spawn(self.jobs.run(keep_all, m(), l()));
        tokio::spawn(self.pods.run(pod_status_only, m(), l()));
        tokio::spawn(self.blueprints.run(keep_all, m(), l()));
        tokio::spawn(self.snapshots.run(keep_all, m(), l()));
    }
}

/// The four controllers, their routes in place, not started.
type Controllers = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

/// Builds the four controllers over `w` (registering their routes), to run until `stop`.
fn controllers(w: &mut Watches, ctx: &Arc<Context>, stop: &watch::Receiver<bool>) -> Controllers {
    let backups = sessions(&mut w.sessions, &mut w.jobs, &mut w.pods, ctx, stop);
    let restores = sessions(&mut w.restores, &mut w.jobs, &mut w.pods, ctx, stop);
    let configurations = configurations(w, ctx, stop);
    // Repositories: the wipe-out finalizer and its cleanup Job (a deleted Job wakes it too),
    // and the references of the configurations and restores using each.
    let repo_of = |own: Option<String>, r: &cairn_api::common::ObjectReference| {
        let own = own.unwrap_or_default();
        Some(ObjectRef::<Repository>::new(&r.name).within(r.namespace_or(&own)))
    };
    let repositories = controller(w.repositories.store.clone(), stop)
        .reconcile_on(w.repositories.route_self())
        .reconcile_on(w.jobs.route_owner())
        .reconcile_on(
            w.configurations
                .route(move |c: &BackupConfiguration| repo_of(c.namespace(), &c.spec.repository)),
        )
        .reconcile_on(
            w.restores
                .route(move |r: &RestoreSession| repo_of(r.namespace(), &r.spec.repository)),
        )
        .reconcile_on(
            w.snapshots
                .route(move |s: &Snapshot| repo_of(s.namespace(), &s.spec.repository)),
        )
        .run(timed!(repository::reconcile), error_policy, ctx.clone())
        .for_each(log_result);
    let blueprints = blueprints(w, ctx, stop);
    Box::pin(async move {
        futures::join!(backups, restores, configurations, repositories, blueprints);
    })
}

/// Runs the controllers until `stop`, once every cache they read is complete (what triggers
/// them meanwhile waits in the routes).
async fn run_controllers(controllers: Controllers, health: &Health, stop: watch::Receiver<bool>) {
    tokio::select! {
        () = health.synced() => {},
        () = stopped(&stop) => return,
    }
    tracing::info!("cairn-controller running");
    controllers.await;
}

/// A controller of `K` over its store, stopping gracefully on `stop`. At a slot every due
/// configuration reconciles at once: a bounded number in flight keeps the client on a few
/// reused connections instead of one TLS handshake per reconcile.
fn controller<K>(store: Store<K>, stop: &watch::Receiver<bool>) -> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync,
    K: 'static,
{
    Controller::for_stream(futures::stream::pending(), store)
        .with_config(controller::Config::default().concurrency(RECONCILES_IN_FLIGHT))
        .graceful_shutdown_on(stopped(stop))
}

/// Sessions of kind `K`: they own their Jobs, and hear about their Pods through the session
/// label.
fn sessions<K: SessionKind>(
    watch: &mut SharedWatch<K>,
    jobs: &mut SharedWatch<Job>,
    pods: &mut SharedWatch<Pod>,
    ctx: &Arc<Context>,
    stop: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + use<K> {
    fn session_of_pod<K: Resource<DynamicType = ()>>(pod: &Pod) -> Option<ObjectRef<K>> {
        let ns = pod.namespace().unwrap_or_default();
        pod.labels()
            .get(LABEL_SESSION)
            .map(|s| ObjectRef::new(s).within(&ns))
    }
    controller(watch.store.clone(), stop)
        .reconcile_on(watch.route_self())
        .reconcile_on(jobs.route_owner())
        .reconcile_on(pods.route(session_of_pod::<K>))
        .run(timed!(session::reconcile::<K>), error_policy, ctx.clone())
        .for_each(log_result)
}

/// BackupConfigurations: re-evaluated when what they reference appears or changes, and when
/// one of their sessions changes (skip rules, history).
fn configurations(
    w: &mut Watches,
    ctx: &Arc<Context>,
    stop: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + use<> {
    let configs = w.configurations.store.clone();
    let referring = |pick: fn(&BackupConfiguration, &str, &str) -> bool| {
        let configs = configs.clone();
        move |ns: Option<String>, name: String| {
            configs
                .state()
                .into_iter()
                .filter(|c| pick(c, ns.as_deref().unwrap_or_default(), &name))
                .map(|c| ObjectRef::from_obj(c.as_ref()))
                .collect::<Vec<_>>()
        }
    };
    let by_repo = referring(|c, ns, name| {
        let repo = &c.spec.repository;
        let own = c.namespace().unwrap_or_default();
        repo.name == name && repo.namespace_or(&own) == ns
    });
    let by_app = referring(|c, ns, name| {
        c.spec.target.r#ref.name == name && c.namespace().as_deref() == Some(ns)
    });
    let by_task =
        referring(|c, _, name| c.spec.task.as_ref().and_then(|t| t.name.as_deref()) == Some(name));
    let of_session = |s: &BackupSession| {
        let ns = s.namespace().unwrap_or_default();
        Some(ObjectRef::<BackupConfiguration>::new(&s.spec.invoker.name).within(&ns))
    };
    // A session's pod tells whether the storage Secret exists (BackendSecretFound).
    let sessions = w.sessions.store.clone();
    let of_pod = move |p: &Pod| {
        let ns = p.namespace().unwrap_or_default();
        let session = sessions.get(&ObjectRef::new(p.labels().get(LABEL_SESSION)?).within(&ns))?;
        of_session(&session)
    };
    let forget = ctx.clone();
    w.configurations
        .on_delete(move |c| forget.forget_configuration(c));
    controller(configs.clone(), stop)
        .reconcile_on(w.configurations.route_self())
        .reconcile_on(w.pods.route(of_pod))
        .reconcile_on(
            w.repositories
                .route(move |r| by_repo(r.namespace(), r.name_any())),
        )
        .reconcile_on(w.apps.route(move |a| by_app(a.namespace(), a.name_any())))
        .reconcile_on(w.tasks.route(move |t| by_task(None, t.name_any())))
        .reconcile_on(w.sessions.route(of_session))
        .run(
            timed!(backup_configuration::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(log_result)
}

/// Auto-backup, one reconcile per AppBinding: again when its blueprint changes, and when an
/// object of its generated name changes (drift, or a clashing object going away).
fn blueprints(
    w: &mut Watches,
    ctx: &Arc<Context>,
    stop: &watch::Receiver<bool>,
) -> impl Future<Output = ()> + use<> {
    use cairn_api::backup_blueprint::{app_of_generated, blueprint_of};
    let apps = w.apps.store.clone();
    let naming = move |b: &BackupBlueprint| {
        let name = b.name_any();
        apps.state()
            .into_iter()
            .filter(|a| blueprint_of(a) == Some(name.as_str()))
            .map(|a| ObjectRef::from_obj(a.as_ref()))
            .collect::<Vec<_>>()
    };
    fn of_generated<K: Resource<DynamicType = ()>>(obj: &K) -> Option<ObjectRef<AppBinding>> {
        let app = app_of_generated(obj.meta().name.as_deref()?)?;
        Some(ObjectRef::new(app).within(obj.meta().namespace.as_deref()?))
    }
    controller(w.apps.store.clone(), stop)
        .reconcile_on(w.apps.route_self())
        .reconcile_on(w.blueprints.route(naming))
        .reconcile_on(w.repositories.route(of_generated::<Repository>))
        .reconcile_on(w.configurations.route(of_generated::<BackupConfiguration>))
        .run(timed!(blueprint::reconcile), error_policy, ctx.clone())
        .for_each(log_result)
}

async fn log_result<T: std::fmt::Debug, E: std::fmt::Display>(r: Result<T, E>) {
    if let Err(e) = r {
        tracing::debug!(error = %e, "controller event");
    }
}
