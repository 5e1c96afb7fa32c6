//! What every reconcile shares: the client, the watch caches, install settings, the event
//! recorder and the metrics.

use std::sync::Arc;

use cairn_api::BackupSession;
use cairn_api::resolve::InstallSettings;
use cairn_webhook::cache::Caches;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Resource, ResourceExt};

use crate::metrics::Metrics;

/// Field manager of every write the controller makes.
pub const MANAGER: &str = "cairn-controller";

pub struct Context {
    pub client: Client,
    /// Repositories, configurations, Tasks, Functions, AppBindings, Namespaces.
    pub lookups: Caches,
    /// Every BackupSession (the session controller's own cache).
    pub sessions: Store<BackupSession>,
    pub install: InstallSettings,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

impl Context {
    pub fn new(
        client: Client,
        lookups: Caches,
        sessions: Store<BackupSession>,
        install: InstallSettings,
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
            lookups,
            sessions,
            install,
            metrics,
        }
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
