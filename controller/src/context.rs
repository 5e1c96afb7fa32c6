//! What every reconcile shares: the client, the watch caches, install settings, the event
//! recorder and the metrics.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_api::resolve::InstallSettings;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use crate::metrics::Metrics;
use crate::stores::Stores;

/// Field manager of every write the controller makes.
pub const MANAGER: &str = "cairn-controller";

/// How long a session may wait to start and to run, when nothing else says (install settings:
/// the controller's `--pending-timeout` and `--default-session-deadline`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// How long a session's Pod may take to exist and start its containers.
    pub start: Duration,
    /// The deadline of a session with no `timeOut`: long native snapshots must fit.
    pub deadline: Duration,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            start: Duration::from_secs(10 * 60),
            deadline: Duration::from_secs(24 * 3600),
        }
    }
}

pub struct Context {
    pub client: Client,
    /// Every object the controller reads, from its watches (also the lookups of validation).
    pub stores: Stores,
    pub install: InstallSettings,
    pub limits: SessionLimits,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Consecutive reconcile failures per object, for exponential backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// The newest schedule slot this process dealt with, per configuration UID. The watch
    /// cache can hand a reconcile the object from before our own `lastScheduleTime` write;
    /// without this, a missed slot would be counted (and evented) twice.
    slots: Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>,
    /// The next slot of each scheduled configuration, per UID: while a slot that just came
    /// still has sessions to create, work that can wait a moment waits (see `slot_in_progress`).
    upcoming: Mutex<HashMap<String, chrono::DateTime<chrono::Utc>>>,
}

/// A map's guard; a panic elsewhere while it was held leaves nothing half-written here.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// First and longest wait after a failed reconcile.
const BACKOFF_BASE: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

impl Context {
    pub fn new(
        client: Client,
        stores: Stores,
        install: InstallSettings,
        limits: SessionLimits,
        metrics: Arc<Metrics>,
        instance: String,
    ) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: Some(instance),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            stores,
            install,
            limits,
            metrics,
            failures: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            upcoming: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets a deleted configuration: its slots, its backoff, its metric series.
    pub fn forget_configuration(&self, config: &cairn_api::BackupConfiguration) {
        let uid = config.metadata.uid.clone().unwrap_or_default();
        lock(&self.slots).remove(&uid);
        lock(&self.upcoming).remove(&uid);
        lock(&self.failures).remove(&key(config));
        self.metrics
            .forget_configuration(&crate::metrics::ConfigLabels {
                namespace: config.namespace().unwrap_or_default(),
                configuration: config.name_any(),
            });
    }

    /// The newest slot dealt with for the configuration of `uid`, as far as this process knows.
    pub fn slot_dealt_with(&self, uid: &str) -> Option<chrono::DateTime<chrono::Utc>> {
        let map = lock(&self.slots);
        map.get(uid).copied()
    }

    /// Remembers that every slot up to `slot` of the configuration of `uid` was dealt with.
    pub fn remember_slot(&self, uid: &str, slot: chrono::DateTime<chrono::Utc>) {
        let mut map = lock(&self.slots);
        // Deleted configurations are not reported here; a bound keeps their entries from
        // piling up (losing the memory only falls back to the status).
        if map.len() > 100_000 {
            map.clear();
        }
        let entry = map.entry(uid.to_string()).or_insert(slot);
        *entry = (*entry).max(slot);
    }

    /// Records the next slot of the configuration of `uid` (`None`: none, or paused).
    pub fn expect_slot(&self, uid: &str, next: Option<chrono::DateTime<chrono::Utc>>) {
        let mut map = lock(&self.upcoming);
        match next {
            Some(next) => {
                map.insert(uid.to_string(), next);
            }
            None => {
                map.remove(uid);
            }
        }
    }

    /// Whether a slot that came less than 10 s ago still has sessions to create. Starting
    /// Jobs and writing status can wait for them: when many configurations share a slot,
    /// the creations are what the schedule promises, and they share the API server with
    /// everything else.
    pub fn slot_in_progress(&self, now: chrono::DateTime<chrono::Utc>) -> bool {
        let upcoming = lock(&self.upcoming);
        let slots = lock(&self.slots);
        crate::scheduling::slot_in_progress(&upcoming, &slots, now)
    }

    /// The wait before retrying `key` after one more failure: 1 s, 2 s, 4 s ... up to 5 min.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = lock(&self.failures);
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        BACKOFF_BASE
            .saturating_mul(1u32 << (*n - 1).min(16))
            .min(BACKOFF_MAX)
    }

    /// Forgets the failures of `key` after a successful reconcile.
    pub fn succeeded(&self, key: &str) {
        let mut failures = lock(&self.failures);
        failures.remove(key);
    }

    /// Publishes an event on `obj`. Events are best effort: a failure is logged, not returned.
    pub async fn event<K>(&self, obj: &K, warning: bool, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: reason.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &obj.object_ref(&())).await {
            tracing::warn!(error = %e, object = %obj.name_any(), reason, "event not published");
        }
    }
}

/// The backoff key of an object: kind, namespace and name.
pub fn key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// The name of the controller of `obj`'s kind in metrics: the kind in lower case
/// (`backupsession`).
pub fn controller_name<K: Resource<DynamicType = ()>>(_obj: &K) -> String {
    K::kind(&()).to_lowercase()
}
