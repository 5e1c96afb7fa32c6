//! Prometheus metrics of the webhook: request counts and latency by kind, operation and verdict,
//! the cache misses read through to the API server, and the expiry of the certificates it serves
//! (kept by [`crate::tls::ReloadingCert`]).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram>,
    read_through: Family<ReadThroughLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cairn_webhook");
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
        Self {
            registry,
            requests,
            latency,
            read_through,
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

    /// Exports `cairn_webhook_certificate_expiry_timestamp_seconds{certificate}`.
    pub fn register_certificate_expiry(&mut self, expiry: crate::tls::CertificateExpiry) {
        self.registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the certificate the webhook serves (serving) and of the CA in ca.crt beside it (ca), Unix seconds",
            expiry,
        );
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
