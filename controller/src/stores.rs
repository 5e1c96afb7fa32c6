//! The controller's watches: one per kind, shared by every controller that needs the kind, so
//! the API server serves one watch per kind and each object is held in memory once. Each
//! changed or deleted object is routed, after the store has it, to the controllers it concerns
//! (kube-runtime's own shared streams drop deletions, and a deleted Job must fail its session).
//! Objects are trimmed on arrival to what the controller reads: `managedFields` always, and the
//! spec of Pods (only their labels and status matter here). Each watch reads through
//! `DeserializeGuard`: an object that does not match its kind's schema is logged and left out,
//! and cannot stall the watch. The stores are also the lookups of validation and Job
//! resolution, so a reconcile always sees at least what triggered it. A standby runs the
//! watches too, its routes shut until it leads: its caches are synced when it takes over.

use std::future::Future;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher::Event;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};

use crate::metrics::{KindLabels, Metrics};

type Route<K> = Box<dyn Fn(&K) + Send + Sync>;

/// One watch of a kind: a store to read, routes that trigger controllers, and the watch
/// itself to run once every route is in place.
pub struct SharedWatch<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    pub store: Store<K>,
    writer: Writer<K>,
    api: Api<DeserializeGuard<K>>,
    config: watcher::Config,
    routes: Vec<Route<K>>,
    on_delete: Vec<Route<K>>,
}

impl<K> SharedWatch<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    /// A watch of every object of the kind that `config` selects.
    pub fn new(client: &Client, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        let api = Api::all(client.clone());
        Self {
            store,
            writer,
            api,
            config,
            routes: Vec::new(),
            on_delete: Vec::new(),
        }
    }

    /// Calls `forget` with each deleted object (a controller never reconciles an object that
    /// is gone): what was kept about it goes. A deletion missed while the watch was down and
    /// re-listed is not seen here.
    pub fn on_delete(&mut self, forget: impl Fn(&K) + Send + Sync + 'static) {
        self.on_delete.push(Box::new(forget));
    }

    /// The objects of kind `T` that each changed or deleted object concerns, as a stream for
    /// `Controller::reconcile_on`. (Unbounded: the controller's queue merges repeats of a key.)
    pub fn route<T, I>(
        &mut self,
        concerns: impl Fn(&K) -> I + Send + Sync + 'static,
    ) -> impl Stream<Item = ObjectRef<T>> + Send + 'static
    where
        T: Resource<DynamicType = ()> + 'static,
        I: IntoIterator<Item = ObjectRef<T>>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        self.routes.push(Box::new(move |obj| {
            for r in concerns(obj) {
                let _ = tx.send(r);
            }
        }));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|r| (r, rx)) })
    }

    /// Each object itself, for the controller of kind `K`.
    pub fn route_self(&mut self) -> impl Stream<Item = ObjectRef<K>> + Send + 'static {
        self.route(|obj: &K| Some(ObjectRef::from_obj(obj)))
    }

    /// Its controlling owner of kind `T`, for the controller of `T` (what `Controller::owns`
    /// does).
    pub fn route_owner<T>(&mut self) -> impl Stream<Item = ObjectRef<T>> + Send + 'static
    where
        T: Resource<DynamicType = ()> + 'static,
    {
        self.route(|obj: &K| owner::<T>(obj))
    }

    /// Runs the watch (until the process ends), trimming each object with `trim` as well, and
    /// counting its events in `metrics`. The store fills from the start; routes stay shut until
    /// `open` turns true (the lease is ours), and then see every object held, once more after a
    /// list in progress then: a new leader reconciles everything, as at a fresh start.
    pub fn run(
        self,
        trim: fn(&mut K),
        metrics: Arc<Metrics>,
        mut open: watch::Receiver<bool>,
    ) -> impl Future<Output = ()> + Send + 'static {
        let kind = K::kind(&()).to_string();
        let labels = KindLabels { kind: kind.clone() };
        let mut router = Router {
            events: metrics.watch_events.get_or_create(&labels).clone(),
            objects: metrics.watch_objects.get_or_create(&labels).clone(),
            store: self.store.clone(),
            writer: self.writer,
            routes: self.routes,
            on_delete: self.on_delete,
            open: false,
            listing: false,
            replay_after_list: false,
        };
        let opened = futures::stream::once(async move {
            if open.wait_for(|o| *o).await.is_err() {
                // Never leading: the routes stay shut.
                futures::future::pending::<()>().await;
            }
            Input::Open
        });
        let events = watcher(self.api, self.config)
            .default_backoff()
            .map(|e| Input::Event(Box::new(e)));
        futures::stream::select(events, opened).for_each(move |input| {
            match input {
                Input::Open => router.open(),
                Input::Event(event) => match *event {
                    Ok(event) => {
                        if let Some(event) = valid(event, &kind, trim) {
                            router.apply(event);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, kind = %kind, "watch error"),
                },
            }
            futures::future::ready(())
        })
    }
}

/// What a watch task handles: an event, or the routes opening.
enum Input<K> {
    Event(Box<Result<Event<DeserializeGuard<K>>, watcher::Error>>),
    Open,
}

/// A watch's store writer and routes, in the watch's own task (so opening the routes cannot
/// race an event).
struct Router<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    events: Counter,
    objects: Gauge,
    store: Store<K>,
    writer: Writer<K>,
    routes: Vec<Route<K>>,
    on_delete: Vec<Route<K>>,
    open: bool,
    /// Between `Init` and `InitDone`: the store shows the previous list until the new one is
    /// complete.
    listing: bool,
    /// Routes opened during a list: what it brings is seen whole at its end.
    replay_after_list: bool,
}

impl<K> Router<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    fn apply(&mut self, event: Event<K>) {
        match &event {
            Event::Init => self.listing = true,
            Event::InitDone => self.listing = false,
            Event::Apply(_) | Event::InitApply(_) | Event::Delete(_) => {
                self.events.inc();
            }
        }
        self.writer.apply_watcher_event(&event);
        self.objects
            .set(i64::try_from(self.store.len()).unwrap_or(i64::MAX));
        match &event {
            Event::Apply(obj) | Event::InitApply(obj) if self.open => self.route(obj),
            Event::Delete(obj) => {
                if self.open {
                    self.route(obj);
                }
                self.on_delete.iter().for_each(|forget| forget(obj));
            }
            Event::InitDone if self.replay_after_list => {
                self.replay_after_list = false;
                self.replay();
            }
            _ => {}
        }
    }

    fn route(&self, obj: &K) {
        self.routes.iter().for_each(|route| route(obj));
    }

    /// Opens the routes: every object held goes through them.
    fn open(&mut self) {
        self.open = true;
        self.replay_after_list = self.listing;
        self.replay();
    }

    fn replay(&self) {
        for obj in self.store.state() {
            self.route(&obj);
        }
    }
}

/// The event with its object trimmed, or `None` for an object that does not deserialize.
fn valid<K: Resource>(
    event: Event<DeserializeGuard<K>>,
    kind: &str,
    trim: fn(&mut K),
) -> Option<Event<K>> {
    let object = |guard: DeserializeGuard<K>| match guard.0 {
        Ok(mut obj) => {
            obj.managed_fields_mut().clear();
            trim(&mut obj);
            Some(obj)
        }
        Err(invalid) => {
            tracing::warn!(
                kind,
                namespace = invalid.metadata.namespace.as_deref().unwrap_or_default(),
                name = invalid.metadata.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "object left out: it does not match its kind's schema"
            );
            None
        }
    };
    Some(match event {
        Event::Apply(g) => Event::Apply(object(g)?),
        Event::InitApply(g) => Event::InitApply(object(g)?),
        Event::Delete(g) => Event::Delete(object(g)?),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    })
}

/// The controlling owner of `obj` if it is a `T`.
fn owner<T: Resource<DynamicType = ()>>(obj: &impl Resource) -> Option<ObjectRef<T>> {
    let o = obj
        .meta()
        .owner_references
        .as_ref()?
        .iter()
        .find(|o| o.controller == Some(true))?;
    (o.kind == T::kind(&()) && o.api_version == T::api_version(&())).then(|| {
        let r = ObjectRef::new(&o.name);
        match obj.meta().namespace.as_deref() {
            Some(ns) => r.within(ns),
            None => r,
        }
    })
}

/// Keeps nothing more than `managedFields` away.
pub fn keep_all<K>(_: &mut K) {}

/// Pods: the controller reads their labels and status only.
pub fn pod_status_only(pod: &mut Pod) {
    pod.spec = None;
}

/// The stores reconciles read.
#[derive(Clone)]
pub struct Stores {
    pub sessions: Store<cairn_api::BackupSession>,
    pub restores: Store<cairn_api::RestoreSession>,
    pub configurations: Store<cairn_api::BackupConfiguration>,
    pub repositories: Store<cairn_api::Repository>,
    pub app_bindings: Store<cairn_api::AppBinding>,
    pub tasks: Store<cairn_api::Task>,
    pub functions: Store<cairn_api::Function>,
    pub namespaces: Store<k8s_openapi::api::core::v1::Namespace>,
    /// cairn's Jobs.
    pub jobs: Store<k8s_openapi::api::batch::v1::Job>,
    /// The Pods of cairn's Jobs.
    pub pods: Store<Pod>,
    /// cairn's Snapshot objects.
    pub snapshots: Store<cairn_api::Snapshot>,
    pub blueprints: Store<cairn_api::BackupBlueprint>,
}

impl Stores {
    /// The cluster's identity: the UID of its `kube-system` namespace (empty while unknown).
    pub fn cluster_id(&self) -> String {
        get(&self.namespaces, None, "kube-system")
            .and_then(|ns| ns.metadata.uid.clone())
            .unwrap_or_default()
    }

    /// Resolves once every store holds its first full list: before that, a reconcile could
    /// take an object not listed yet for one that is gone (after a failover, a session's
    /// configuration or Job).
    pub async fn synced(&self) {
        let _ = futures::join!(
            self.sessions.wait_until_ready(),
            self.restores.wait_until_ready(),
            self.configurations.wait_until_ready(),
            self.repositories.wait_until_ready(),
            self.app_bindings.wait_until_ready(),
            self.tasks.wait_until_ready(),
            self.functions.wait_until_ready(),
            self.namespaces.wait_until_ready(),
            self.jobs.wait_until_ready(),
            self.pods.wait_until_ready(),
            self.blueprints.wait_until_ready(),
            self.snapshots.wait_until_ready(),
        );
    }
}

fn get<K>(store: &Store<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let key = ObjectRef::new(name);
    store.get(&match namespace {
        Some(ns) => key.within(ns),
        None => key,
    })
}

impl cairn_api::validation::Lookups for Stores {
    fn repository(&self, namespace: &str, name: &str) -> Option<Arc<cairn_api::Repository>> {
        get(&self.repositories, Some(namespace), name)
    }
    fn app_binding(&self, namespace: &str, name: &str) -> Option<Arc<cairn_api::AppBinding>> {
        get(&self.app_bindings, Some(namespace), name)
    }
    fn backup_configuration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<cairn_api::BackupConfiguration>> {
        get(&self.configurations, Some(namespace), name)
    }
    fn task(&self, name: &str) -> Option<Arc<cairn_api::Task>> {
        get(&self.tasks, None, name)
    }
    fn function(&self, name: &str) -> Option<Arc<cairn_api::Function>> {
        get(&self.functions, None, name)
    }
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        get(&self.namespaces, None, name).map(|ns| ns.labels().clone())
    }
}
