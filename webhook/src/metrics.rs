//! Prometheus metrics of the webhook: request counts and latency by kind, operation and verdict,
//! the cache misses read through to the API server, what the server's bounds refused, and the
//! expiry of the certificates it serves (kept by [`crate::tls::ReloadingCert`]).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::bounds::Refusal;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: String,
    pub kind: String,
    pub operation: String,
    pub verdict: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadThroughLabels {
    kind: &'static str,
    /// "found" (the cache was behind) or "absent" (the object does not exist).
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    reason: &'static str,
}

/// Cheap to clone: the clones count into the same metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    read_through: Family<ReadThroughLabels, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    open_connections: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::build(None)
    }
}

impl Metrics {
    /// The metrics, with `cairn_webhook_certificate_expiry_timestamp_seconds{certificate}`
    /// read from `expiry` (kept by [`crate::tls::ReloadingCert`]).
    pub fn with_certificate_expiry(expiry: crate::tls::CertificateExpiry) -> Self {
        Self::build(Some(expiry))
    }

    fn build(expiry: Option<crate::tls::CertificateExpiry>) -> Self {
        let mut registry = Registry::with_prefix("cairn_webhook");
        if let Some(expiry) = expiry {
            registry.register(
                "certificate_expiry_timestamp_seconds",
                "notAfter of the certificate the webhook serves (serving) and of the CA in ca.crt beside it (ca), Unix seconds",
                expiry,
            );
        }
        let requests = Family::<RequestLabels, Counter>::default();
        // 50 µs .. ~0.8 s: admission should sit in the lowest buckets.
        let latency = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00005, 2.0, 15))
        });
        registry.register(
            "admission_requests",
            "Admission requests by endpoint, kind, operation and verdict",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to decide an admission request",
            latency.clone(),
        );
        let read_through = Family::<ReadThroughLabels, Counter>::default();
        registry.register(
            "cache_read_through",
            "Objects admission looked up, did not find in its watch caches and fetched from the API server, by kind and whether they were found",
            read_through.clone(),
        );
        let refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "refusals",
            "Connections and requests refused or closed at a bound of the server, by reason: connections (--max-connections), requests (--max-requests-in-flight), bytes (--max-body-bytes-in-flight), timeout (--request-timeout), handshake (--handshake-timeout), idle (--idle-timeout)",
            refusals.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "TLS connections open to the admission server",
            open_connections.clone(),
        );
        Self {
            registry: Arc::new(registry),
            requests,
            latency,
            read_through,
            refusals,
            open_connections,
        }
    }
}

impl Metrics {
    pub fn observe(&self, labels: RequestLabels, elapsed: Duration) {
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&labels).inc();
    }

    pub fn read_through(&self, kind: &'static str, found: bool) {
        let result = if found { "found" } else { "absent" };
        self.read_through
            .get_or_create(&ReadThroughLabels { kind, result })
            .inc();
    }

    pub fn refused(&self, reason: Refusal) {
        self.refusals
            .get_or_create(&RefusalLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts a connection open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection {
        self.open_connections.inc();
        OpenConnection(self.open_connections.clone())
    }

    /// The OpenMetrics text of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One open connection in `cairn_webhook_open_connections`, until dropped.
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
