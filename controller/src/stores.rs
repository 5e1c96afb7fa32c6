//! The controller's watches: one per kind, shared by every controller that needs the kind, so
//! the API server serves one watch per kind and each object is held in memory once. Each
//! changed or deleted object is routed, after the store has it, to the controllers it concerns
//! (kube-runtime's own shared streams drop deletions, and a deleted Job must fail its session).
//! Objects are trimmed on arrival to what the controller reads: `managedFields` always, and the
//! spec of Pods (only their labels and status matter here).

use std::future::Future;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

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
    api: Api<K>,
    config: watcher::Config,
    routes: Vec<Route<K>>,
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
    pub fn new(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer,
            api,
            config,
            routes: Vec::new(),
        }
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

    /// Runs the watch (until the process ends), trimming each object with `trim` as well.
    pub fn run(self, trim: fn(&mut K)) -> impl Future<Output = ()> + Send + 'static {
        let kind = K::kind(&()).to_string();
        let routes = self.routes;
        watcher(self.api, self.config)
            .default_backoff()
            .modify(move |obj: &mut K| {
                obj.managed_fields_mut().clear();
                trim(obj);
            })
            .reflect(self.writer)
            .touched_objects()
            .for_each(move |event| {
                match event {
                    Ok(obj) => routes.iter().for_each(|route| route(&obj)),
                    Err(e) => tracing::warn!(error = %e, kind = %kind, "watch error"),
                }
                futures::future::ready(())
            })
    }
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

/// The stores reconciles read (besides the lookup caches).
#[derive(Clone)]
pub struct Stores {
    /// Every BackupSession.
    pub sessions: Store<cairn_api::BackupSession>,
    /// cairn's Jobs.
    pub jobs: Store<k8s_openapi::api::batch::v1::Job>,
    /// The Pods of cairn's Jobs.
    pub pods: Store<Pod>,
}
