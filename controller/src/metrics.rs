//! Prometheus metrics of the controller: sessions, backups, restores, scheduling lag, missed
//! slots and reconciles.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConfigLabels {
    pub namespace: String,
    pub configuration: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepositoryLabels {
    pub namespace: String,
    pub repository: String,
}

impl RepositoryLabels {
    pub fn of(repo: &cairn_api::Repository) -> Self {
        use kube::ResourceExt;
        Self {
            namespace: repo.namespace().unwrap_or_default(),
            repository: repo.name_any(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SessionLabels {
    pub namespace: String,
    pub invoker: String,
    pub kind: String,
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    pub controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LeaseLabels {
    /// `acquired`, `held` (another instance holds it) or `error`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: String,
    pub error: String,
}

pub struct Metrics {
    registry: Registry,
    pub sessions: Family<SessionLabels, Counter>,
    pub session_duration: Family<SessionLabels, Histogram>,
    pub last_success: Family<ConfigLabels, Gauge<f64, AtomicU64>>,
    /// Seconds between a configuration's next two slots (absent while paused): with
    /// `last_success`, what the shipped alert "no successful backup for twice the interval" reads.
    pub schedule_interval: Family<ConfigLabels, Gauge<f64, AtomicU64>>,
    /// Watch events each watch delivered, by kind: a Pod the watch's selector leaves out is
    /// never counted (the test of the Pod watch's label selector reads it).
    pub watch_events: Family<KindLabels, Counter>,
    /// Objects in each watch's store, by kind.
    pub watch_objects: Family<KindLabels, Gauge>,
    pub last_backup_bytes: Family<ConfigLabels, Gauge>,
    pub last_backup_documents: Family<ConfigLabels, Gauge>,
    /// Snapshots of the configuration's own identity in its repository after its last backup.
    pub snapshots: Family<ConfigLabels, Gauge>,
    pub scheduling_lag: Histogram,
    pub missed_slots: Family<ConfigLabels, Counter>,
    /// A repository's snapshots, stored bytes and last integrity verdict (1 whole, 0 damaged).
    pub repository_snapshots: Family<RepositoryLabels, Gauge>,
    pub repository_size: Family<RepositoryLabels, Gauge>,
    pub repository_integrity: Family<RepositoryLabels, Gauge>,
    pub reconciles: Family<ReconcileLabels, Counter>,
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    pub reconcile_duration: Family<ReconcileLabels, Histogram>,
    /// Attempts to take the leader lease: a standby's are how one sees it alive and waiting.
    pub lease_attempts: Family<LeaseLabels, Counter>,
    /// 1 while this instance leads, 0 while it stands by.
    pub leading: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cairn");
        let m = Self::unregistered();
        m.register(&mut registry);
        Self { registry, ..m }
    }
}

impl Metrics {
    /// The metrics, not registered yet.
    fn unregistered() -> Self {
        Self {
            sessions: Family::default(),
            session_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(1.0, 2.0, 16))
            }),
            last_success: Family::default(),
            schedule_interval: Family::default(),
            watch_events: Family::default(),
            watch_objects: Family::default(),
            last_backup_bytes: Family::default(),
            last_backup_documents: Family::default(),
            snapshots: Family::default(),
            scheduling_lag: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            missed_slots: Family::default(),
            repository_snapshots: Family::default(),
            repository_size: Family::default(),
            repository_integrity: Family::default(),
            reconciles: Family::default(),
            reconcile_errors: Family::default(),
            reconcile_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.0005, 2.0, 14))
            }),
            lease_attempts: Family::default(),
            leading: Gauge::default(),
            registry: Registry::default(),
        }
    }

    /// Removes every series of a deleted configuration: a deleted object leaves no series (nor
    /// would the alert on its last success go on firing).
    pub fn forget_configuration(&self, labels: &ConfigLabels) {
        self.last_success.remove(labels);
        self.schedule_interval.remove(labels);
        self.last_backup_bytes.remove(labels);
        self.last_backup_documents.remove(labels);
        self.snapshots.remove(labels);
        self.missed_slots.remove(labels);
    }

    /// A repository's totals.
    pub fn repository_totals(&self, repo: &cairn_api::Repository, snapshots: u64, bytes: u64) {
        let l = RepositoryLabels::of(repo);
        self.repository_snapshots
            .get_or_create(&l)
            .set(i64::try_from(snapshots).unwrap_or(i64::MAX));
        self.repository_size
            .get_or_create(&l)
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// A repository's integrity verdict.
    pub fn repository_integrity(&self, repo: &cairn_api::Repository, whole: bool) {
        self.repository_integrity
            .get_or_create(&RepositoryLabels::of(repo))
            .set(i64::from(whole));
    }

    /// Removes every series of a deleted repository.
    pub fn forget_repository(&self, repo: &cairn_api::Repository) {
        let l = RepositoryLabels::of(repo);
        self.repository_snapshots.remove(&l);
        self.repository_size.remove(&l);
        self.repository_integrity.remove(&l);
    }

    /// Registers every metric (with its help text) in `registry`.
    fn register(&self, registry: &mut Registry) {
        let m = self;
        registry.register(
            "sessions",
            "Finished sessions by kind, invoker (the BackupConfiguration, or the Repository a restore reads) and phase",
            m.sessions.clone(),
        );
        registry.register(
            "session_duration_seconds",
            "Duration of finished sessions",
            m.session_duration.clone(),
        );
        registry.register(
            "backup_last_success_timestamp_seconds",
            "Time of the last successful backup per configuration",
            m.last_success.clone(),
        );
        registry.register(
            "backup_schedule_interval_seconds",
            "Seconds between the next two schedule slots per configuration (absent while paused)",
            m.schedule_interval.clone(),
        );
        registry.register(
            "watch_events",
            "Watch events received by kind (only cairn's Jobs and their Pods are watched)",
            m.watch_events.clone(),
        );
        registry.register(
            "watch_objects",
            "Objects in each watch's store by kind",
            m.watch_objects.clone(),
        );
        registry.register(
            "backup_last_bytes",
            "Bytes in the last backup's snapshot per configuration",
            m.last_backup_bytes.clone(),
        );
        registry.register(
            "backup_last_documents",
            "Documents in the last backup per configuration",
            m.last_backup_documents.clone(),
        );
        registry.register(
            "backup_snapshots",
            "Snapshots of the configuration's own in its repository after its last backup (a shared repository holds other configurations' too)",
            m.snapshots.clone(),
        );
        registry.register(
            "scheduling_lag_seconds",
            "Session creation time minus its schedule slot",
            m.scheduling_lag.clone(),
        );
        registry.register(
            "missed_slots",
            "Schedule slots skipped because they were missed beyond startingDeadlineSeconds",
            m.missed_slots.clone(),
        );
        registry.register(
            "repository_snapshots",
            "Snapshots in the repository, as its last backup counted them",
            m.repository_snapshots.clone(),
        );
        registry.register(
            "repository_size_bytes",
            "Bytes the repository stores, as its last backup counted them",
            m.repository_size.clone(),
        );
        registry.register(
            "repository_integrity",
            "1 when the repository's last integrity check found it whole, 0 when it found damage",
            m.repository_integrity.clone(),
        );
        registry.register(
            "reconciles",
            "Reconciles by controller",
            m.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors by controller and error",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration by controller",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "leader_lease_attempts",
            "Attempts to take the leader lease, by outcome (acquired, held by another, error)",
            m.lease_attempts.clone(),
        );
        registry.register(
            "leading",
            "1 while this instance leads (runs the controllers), 0 while it stands by",
            m.leading.clone(),
        );
    }

    pub fn reconciled(&self, controller: &str, elapsed: Duration) {
        let l = ReconcileLabels {
            controller: controller.into(),
        };
        self.reconciles.get_or_create(&l).inc();
        self.reconcile_duration
            .get_or_create(&l)
            .observe(elapsed.as_secs_f64());
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
