//! Watch caches of the objects admission looks up (Repositories, BackupConfigurations, Tasks,
//! Functions, AppBindings, Namespaces), so admission answers from memory; only what they miss is
//! fetched ([`crate::read_through`]).
//! One bad object cannot stall a cache: each kind is read through `DeserializeGuard`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cairn_api::validation::Lookups;
use cairn_api::{AppBinding, BackupConfiguration, Function, Repository, Task};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::{DeserializeGuard, PartialObjectMeta};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

type Guarded<K> = Store<DeserializeGuard<K>>;

/// The caches, readable from any request handler.
#[derive(Clone)]
pub struct Caches {
    repositories: Guarded<Repository>,
    configurations: Guarded<BackupConfiguration>,
    tasks: Guarded<Task>,
    functions: Guarded<Function>,
    app_bindings: Guarded<AppBinding>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    ready: Arc<AtomicBool>,
}

impl Caches {
    /// Starts one reflector per kind on the tokio runtime. The caches report ready once every
    /// reflector has listed its kind.
    pub fn start(client: Client) -> Caches {
        let caches = Caches {
            repositories: guarded(Api::all(client.clone())),
            configurations: guarded(Api::all(client.clone())),
            tasks: guarded(Api::all(client.clone())),
            functions: guarded(Api::all(client.clone())),
            app_bindings: guarded(Api::all(client.clone())),
            namespaces: namespaces(Api::all(client)),
            ready: Arc::new(AtomicBool::new(false)),
        };
        let c = caches.clone();
        tokio::spawn(async move {
            let all = futures::future::join_all([
                boxed_ready(c.repositories.clone()),
                boxed_ready(c.configurations.clone()),
                boxed_ready(c.tasks.clone()),
                boxed_ready(c.functions.clone()),
                boxed_ready(c.app_bindings.clone()),
                boxed_ready(c.namespaces.clone()),
            ]);
            if all.await.iter().all(|ok| *ok) {
                c.ready.store(true, Ordering::SeqCst);
                tracing::info!("watch caches synced");
            }
        });
        caches
    }

    /// True once every cache has listed its kind (the webhook's `/readyz`).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }
}

fn boxed_ready<K>(store: Store<K>) -> futures::future::BoxFuture<'static, bool>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    Box::pin(async move { store.wait_until_ready().await.is_ok() })
}

fn guarded<K>(api: Api<DeserializeGuard<K>>) -> Guarded<K>
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug + Send + Sync + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, kind = %K::kind(&Default::default()), "watch error");
            }
        }
    });
    reader
}

fn namespaces(api: Api<PartialObjectMeta<Namespace>>) -> Store<PartialObjectMeta<Namespace>> {
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()))
        .default_backoff()
        .applied_objects();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if let Err(e) = item {
                tracing::warn!(error = %e, kind = "Namespace", "watch error");
            }
        }
    });
    reader
}

/// A valid object from a guarded cache (an invalid one counts as absent).
fn lookup<K>(store: &Guarded<K>, namespace: Option<&str>, name: &str) -> Option<Arc<K>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone + Default,
{
    let mut key = ObjectRef::<DeserializeGuard<K>>::new(name);
    if let Some(ns) = namespace {
        key = key.within(ns);
    }
    let guard = store.get(&key)?;
    guard.0.as_ref().ok().map(|k| Arc::new(k.clone()))
}

impl Lookups for Caches {
    fn repository(&self, namespace: &str, name: &str) -> Option<Arc<Repository>> {
        lookup(&self.repositories, Some(namespace), name)
    }
    fn app_binding(&self, namespace: &str, name: &str) -> Option<Arc<AppBinding>> {
        lookup(&self.app_bindings, Some(namespace), name)
    }
    fn backup_configuration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<BackupConfiguration>> {
        lookup(&self.configurations, Some(namespace), name)
    }
    fn task(&self, name: &str) -> Option<Arc<Task>> {
        lookup(&self.tasks, None, name)
    }
    fn function(&self, name: &str) -> Option<Arc<Function>> {
        lookup(&self.functions, None, name)
    }
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        let ns = self.namespaces.get(&ObjectRef::new(name))?;
        Some(ns.metadata.labels.clone().unwrap_or_default())
    }
}
