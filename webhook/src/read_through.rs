//! Admission that never denies on a cache that has not caught up. A review runs against the
//! watch caches; whatever it looked up and did not find is fetched from the API server, and the
//! review runs again with what was found. So a GitOps pipeline that applies a
//! BackupConfiguration and its first BackupSession in one go is admitted, although the
//! webhook's watch has not yet delivered the configuration.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::resolve::InstallSettings;
use cairn_api::validation::{LookupTable, Lookups};
use cairn_api::{AppBinding, BackupConfiguration, Function, Repository, Task};
use futures::future::BoxFuture;
use k8s_openapi::api::core::v1::Namespace;
use kube::core::admission::{AdmissionRequest, AdmissionResponse};
use kube::core::{DynamicObject, NamespaceResourceScope};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use crate::admission::{Endpoint, Outcome, review};

/// One object a review looked for and did not find.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Miss {
    Repository { namespace: String, name: String },
    AppBinding { namespace: String, name: String },
    BackupConfiguration { namespace: String, name: String },
    Task(String),
    Function(String),
    Namespace(String),
}

impl Miss {
    /// The kind, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Repository { .. } => "Repository",
            Self::AppBinding { .. } => "AppBinding",
            Self::BackupConfiguration { .. } => "BackupConfiguration",
            Self::Task(_) => "Task",
            Self::Function(_) => "Function",
            Self::Namespace(_) => "Namespace",
        }
    }
}

/// Fetches missed objects from where they really live; what it does not find, or cannot fetch,
/// is left out of the table.
pub trait Fetch: Send + Sync {
    fn fetch<'a>(&'a self, missed: &'a [Miss]) -> BoxFuture<'a, LookupTable>;
}

/// [`Lookups`] that answer from `found` first, then from `cache`, and remember every miss.
struct Recording<'a> {
    found: &'a LookupTable,
    cache: &'a (dyn Lookups + Sync),
    missed: Mutex<BTreeSet<Miss>>,
}

impl Recording<'_> {
    /// `lookup` in what was found, then in the caches; a miss is remembered.
    fn look<T>(
        &self,
        lookup: impl Fn(&dyn Lookups) -> Option<T>,
        miss: impl FnOnce() -> Miss,
    ) -> Option<T> {
        let hit = lookup(self.found).or_else(|| lookup(self.cache));
        if hit.is_none()
            && let Ok(mut missed) = self.missed.lock()
        {
            missed.insert(miss());
        }
        hit
    }

    fn take_missed(&self) -> BTreeSet<Miss> {
        self.missed
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default()
    }
}

impl Lookups for Recording<'_> {
    fn repository(&self, namespace: &str, name: &str) -> Option<Arc<Repository>> {
        self.look(
            |l| l.repository(namespace, name),
            || Miss::Repository {
                namespace: namespace.into(),
                name: name.into(),
            },
        )
    }
    fn app_binding(&self, namespace: &str, name: &str) -> Option<Arc<AppBinding>> {
        self.look(
            |l| l.app_binding(namespace, name),
            || Miss::AppBinding {
                namespace: namespace.into(),
                name: name.into(),
            },
        )
    }
    fn backup_configuration(
        &self,
        namespace: &str,
        name: &str,
    ) -> Option<Arc<BackupConfiguration>> {
        self.look(
            |l| l.backup_configuration(namespace, name),
            || Miss::BackupConfiguration {
                namespace: namespace.into(),
                name: name.into(),
            },
        )
    }
    fn task(&self, name: &str) -> Option<Arc<Task>> {
        self.look(|l| l.task(name), || Miss::Task(name.into()))
    }
    fn function(&self, name: &str) -> Option<Arc<Function>> {
        self.look(|l| l.function(name), || Miss::Function(name.into()))
    }
    fn namespace_labels(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.look(
            |l| l.namespace_labels(name),
            || Miss::Namespace(name.into()),
        )
    }
}

/// Each round can reveal objects that lead to more lookups, and Job resolution stops at its
/// first miss: a session's configuration, then its Repository and target, then its Task, then the
/// Task's Functions. Four rounds reach the end; one more for slack (the budget bounds them all).
const MAX_FETCH_ROUNDS: usize = 5;

/// How long all read-through GETs of one review may take together: the API server gives each
/// webhook call 5 s (`timeoutSeconds`), and past the budget the answer from the caches is sent.
const READ_THROUGH_BUDGET: Duration = Duration::from_secs(2);

/// What [`review_reading_through`] did besides answering.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadThrough {
    /// Objects fetched because the caches lacked them, and found.
    pub found: Vec<Miss>,
    /// Objects fetched and not found (absent, or the fetch failed).
    pub absent: Vec<Miss>,
}

/// [`review`] against the caches, reading missed objects through `fetch` (when given) and
/// reviewing again until nothing new turns up.
pub async fn review_reading_through(
    endpoint: Endpoint,
    req: &AdmissionRequest<DynamicObject>,
    cache: &(dyn Lookups + Sync),
    fetch: Option<&dyn Fetch>,
    install: &InstallSettings,
) -> (AdmissionResponse, Outcome, ReadThrough) {
    let mut found = LookupTable::default();
    let mut asked: BTreeSet<Miss> = BTreeSet::new();
    let mut report = ReadThrough::default();
    let mut round = 0;
    let deadline = tokio::time::Instant::now() + READ_THROUGH_BUDGET;
    loop {
        let lookups = Recording {
            found: &found,
            cache,
            missed: Mutex::new(BTreeSet::new()),
        };
        let (resp, outcome) = review(endpoint, req, &lookups, install);
        let new: Vec<Miss> = lookups
            .take_missed()
            .into_iter()
            .filter(|m| !asked.contains(m))
            .collect();
        drop(lookups);
        let Some(fetch) = fetch.filter(|_| !new.is_empty() && round < MAX_FETCH_ROUNDS) else {
            return (resp, outcome, report);
        };
        round += 1;
        let Ok(fetched) = tokio::time::timeout_at(deadline, fetch.fetch(&new)).await else {
            tracing::warn!(missed = ?new, "read-through ran out of time; answering from the caches");
            return (resp, outcome, report);
        };
        let before = found.len();
        found.extend(fetched);
        for miss in new {
            if holds(&found, &miss) {
                report.found.push(miss.clone());
            } else {
                report.absent.push(miss.clone());
            }
            asked.insert(miss);
        }
        // Nothing turned up: the answer stands.
        if found.len() == before {
            return (resp, outcome, report);
        }
    }
}

fn holds(table: &LookupTable, miss: &Miss) -> bool {
    match miss {
        Miss::Repository { namespace, name } => table.repository(namespace, name).is_some(),
        Miss::AppBinding { namespace, name } => table.app_binding(namespace, name).is_some(),
        Miss::BackupConfiguration { namespace, name } => {
            table.backup_configuration(namespace, name).is_some()
        }
        Miss::Task(name) => table.task(name).is_some(),
        Miss::Function(name) => table.function(name).is_some(),
        Miss::Namespace(name) => table.namespace_labels(name).is_some(),
    }
}

/// [`Fetch`] by GETs on the API server, all misses of a round at once.
pub struct ApiFetch {
    client: Client,
}

impl ApiFetch {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    async fn namespaced<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<Scope = NamespaceResourceScope> + DeserializeOwned + Clone + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        get(api, name).await
    }

    async fn cluster<K>(&self, name: &str) -> Option<K>
    where
        K: Resource + DeserializeOwned + Clone + std::fmt::Debug,
        K::DynamicType: Default,
    {
        let api: Api<K> = Api::all(self.client.clone());
        get(api, name).await
    }

    async fn one(&self, miss: &Miss) -> LookupTable {
        let table = LookupTable::default();
        match miss {
            Miss::Repository { namespace, name } => {
                match self.namespaced::<Repository>(namespace, name).await {
                    Some(r) => table.with_repository(r),
                    None => table,
                }
            }
            Miss::AppBinding { namespace, name } => {
                match self.namespaced::<AppBinding>(namespace, name).await {
                    Some(a) => table.with_app_binding(a),
                    None => table,
                }
            }
            Miss::BackupConfiguration { namespace, name } => {
                match self
                    .namespaced::<BackupConfiguration>(namespace, name)
                    .await
                {
                    Some(c) => table.with_backup_configuration(c),
                    None => table,
                }
            }
            Miss::Task(name) => match self.cluster::<Task>(name).await {
                Some(t) => table.with_task(t),
                None => table,
            },
            Miss::Function(name) => match self.cluster::<Function>(name).await {
                Some(f) => table.with_function(f),
                None => table,
            },
            Miss::Namespace(name) => {
                let api: Api<Namespace> = Api::all(self.client.clone());
                let mut table = table;
                match api.get_metadata_opt(name).await {
                    Ok(Some(ns)) => {
                        table
                            .namespaces
                            .insert(name.clone(), ns.metadata.labels.unwrap_or_default());
                    }
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, namespace = %name, "read-through GET failed")
                    }
                }
                table
            }
        }
    }
}

/// A GET that counts a failure (or an object that does not parse) as absent, as the caches do.
async fn get<K>(api: Api<K>, name: &str) -> Option<K>
where
    K: Resource + DeserializeOwned + Clone + std::fmt::Debug,
    K::DynamicType: Default,
{
    match api.get_opt(name).await {
        Ok(found) => found,
        Err(e) => {
            let kind = K::kind(&K::DynamicType::default()).to_string();
            tracing::warn!(error = %e, %kind, %name, "read-through GET failed");
            None
        }
    }
}

impl Fetch for ApiFetch {
    fn fetch<'a>(&'a self, missed: &'a [Miss]) -> BoxFuture<'a, LookupTable> {
        Box::pin(async move {
            let tables = futures::future::join_all(missed.iter().map(|m| self.one(m))).await;
            let mut all = LookupTable::default();
            for t in tables {
                all.extend(t);
            }
            all
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::admission::AdmissionReview;
    use serde_json::json;

    /// A "server" that holds what the caches do not have yet, and counts its calls.
    struct Server {
        objects: LookupTable,
        calls: Mutex<Vec<Vec<Miss>>>,
    }

    impl Fetch for Server {
        fn fetch<'a>(&'a self, missed: &'a [Miss]) -> BoxFuture<'a, LookupTable> {
            if let Ok(mut calls) = self.calls.lock() {
                calls.push(missed.to_vec());
            }
            let mut out = LookupTable::default();
            for m in missed {
                let one = match m {
                    Miss::BackupConfiguration { namespace, name } => {
                        match self.objects.backup_configuration(namespace, name) {
                            Some(c) => {
                                LookupTable::default().with_backup_configuration((*c).clone())
                            }
                            None => LookupTable::default(),
                        }
                    }
                    Miss::Repository { namespace, name } => {
                        match self.objects.repository(namespace, name) {
                            Some(r) => LookupTable::default().with_repository((*r).clone()),
                            None => LookupTable::default(),
                        }
                    }
                    _ => LookupTable::default(),
                };
                out.extend(one);
            }
            Box::pin(async move { out })
        }
    }

    fn configuration() -> BackupConfiguration {
        serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
            "metadata": {"name": "nightly", "namespace": "shop"},
            "spec": {"schedule": "0 1 * * *", "repository": {"name": "repo"},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
                     "retentionPolicy": {"name": "keep", "keepLast": 3}}
        }))
        .expect("configuration")
    }

    fn session_request() -> AdmissionRequest<DynamicObject> {
        let review: AdmissionReview<DynamicObject> = serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {
                "uid": "u1", "operation": "CREATE", "name": "first", "namespace": "shop",
                "kind": {"group": "cairn.dev", "version": "v1alpha1", "kind": "BackupSession"},
                "resource": {"group": "cairn.dev", "version": "v1alpha1", "resource": "backupsessions"},
                "userInfo": {"username": "alice"},
                "object": {"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
                           "metadata": {"name": "first", "namespace": "shop"},
                           "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "nightly"}}}
            }
        }))
        .expect("review");
        review.try_into().expect("request")
    }

    impl Server {
        fn holding(objects: LookupTable) -> Self {
            Self {
                objects,
                calls: Mutex::new(Vec::new()),
            }
        }

        fn calls(&self) -> Vec<Vec<Miss>> {
            self.calls.lock().map(|c| c.clone()).unwrap_or_default()
        }
    }

    /// The review of [`session_request`] against `cache`, reading through `fetch`.
    async fn review_session(
        cache: &LookupTable,
        fetch: Option<&dyn Fetch>,
    ) -> (AdmissionResponse, Outcome, ReadThrough) {
        let req = session_request();
        let install = InstallSettings::default();
        review_reading_through(Endpoint::Validate, &req, cache, fetch, &install).await
    }

    #[tokio::test]
    async fn a_configuration_the_cache_lacks_is_read_through() {
        let cache = LookupTable::default();
        let server =
            Server::holding(LookupTable::default().with_backup_configuration(configuration()));

        let (_, without, _) = review_session(&cache, None).await;
        assert_eq!(without, Outcome::Denied, "the cache alone denies");

        let (resp, with, report) = review_session(&cache, Some(&server)).await;
        assert_ne!(with, Outcome::Denied, "{:?}", resp.result);
        assert!(report.found.contains(&Miss::BackupConfiguration {
            namespace: "shop".into(),
            name: "nightly".into()
        }));
        let rounds = server.calls().len();
        assert!(rounds <= MAX_FETCH_ROUNDS, "{rounds} rounds");
    }

    #[tokio::test]
    async fn an_object_absent_everywhere_still_denies_after_one_fetch() {
        let server = Server::holding(LookupTable::default());
        let (resp, outcome, report) = review_session(&LookupTable::default(), Some(&server)).await;
        assert_eq!(outcome, Outcome::Denied);
        assert!(
            resp.result.message.contains("spec.invoker.name"),
            "{}",
            resp.result.message
        );
        assert_eq!(server.calls().len(), 1);
        assert!(report.found.is_empty());
        assert!(!report.absent.is_empty());
    }

    /// An API server that never answers.
    struct Hung;

    impl Fetch for Hung {
        fn fetch<'a>(&'a self, _: &'a [Miss]) -> BoxFuture<'a, LookupTable> {
            Box::pin(futures::future::pending())
        }
    }

    #[tokio::test]
    async fn a_hung_api_server_gets_the_caches_answer_within_the_budget() {
        let cache = LookupTable::default();
        let review = review_session(&cache, Some(&Hung));
        let (_, outcome, report) = tokio::time::timeout(READ_THROUGH_BUDGET * 5, review)
            .await
            .expect("the budget bounds the review");
        assert_eq!(outcome, Outcome::Denied);
        assert_eq!(report, ReadThrough::default());
    }

    #[tokio::test]
    async fn a_cache_hit_fetches_nothing() {
        let cache = LookupTable::default()
            .with_backup_configuration(configuration())
            .with_namespace("shop", &[]);
        let server = Server::holding(LookupTable::default());
        let (_, outcome, _) = review_session(&cache, Some(&server)).await;
        assert_ne!(outcome, Outcome::Denied);
        let calls = server.calls();
        assert!(
            calls
                .iter()
                .flatten()
                .all(|m| !matches!(m, Miss::BackupConfiguration { .. })),
            "{calls:?}"
        );
    }
}
