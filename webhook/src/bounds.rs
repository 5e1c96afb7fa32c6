//! The webhook's bounds: how many connections and admission requests it serves at once, how big
//! and how slow a request may be, and how long a connection may sit idle; and the per-connection
//! activity record that decides when a connection is idle. Past a bound the answer is a fast
//! refusal (a closed connection, or 503 at once), never a queue: the API server then applies the
//! webhook's `failurePolicy` instead of waiting out its own timeout.
//!
//! The defaults fit the shipped memory limit (256 MiB a replica). Decoding a request costs up to
//! ~35 times its body (measured: 100 MiB for a 3 MiB array of zeros, one small JSON value every
//! two bytes), so requests are bounded by count (16, for the usual reviews of a few KiB) and by
//! the body bytes they declare together (4 MiB: one review of the largest size at a time, about
//! 140 MiB decoded); 256 idle TLS connections cost tens of KiB each. The load test in
//! `tests/tests/webhook_load.rs` measures the peak.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cairn_api::duration::parse_std_duration;
use tokio::time::Instant;

/// Largest AdmissionReview body accepted by default (the API server's own limit is 3 MiB).
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;
/// Body bytes in flight by default: one review of the largest size at a time.
const MAX_BODY_BYTES_IN_FLIGHT: usize = 4 * 1024 * 1024;

/// The default of `--request-timeout`: below the API server's webhook timeout (the webhook
/// configurations' `timeoutSeconds: 5`), so the API server gets our answer, not its timeout.
const DEFAULT_REQUEST_TIMEOUT: &str = "4s";
const DEFAULT_IDLE_TIMEOUT: &str = "60s";
const DEFAULT_HANDSHAKE_TIMEOUT: &str = "10s";

/// The bounds of the admission server, one flag (and environment variable) each.
#[derive(Clone, Debug, PartialEq, Eq, clap::Args)]
pub struct Limits {
    /// Most TLS connections open at once; one more is closed as soon as it is accepted.
    #[arg(long, env = "CAIRN_MAX_CONNECTIONS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// Most admission requests answered at once, over all connections; one more gets 503 at
    /// once (the API server then applies the failurePolicy).
    #[arg(long, env = "CAIRN_MAX_REQUESTS_IN_FLIGHT", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_requests_in_flight: u32,
    /// Most concurrent streams (requests) on one HTTP/2 connection; one more is refused by
    /// HTTP/2 itself (REFUSED_STREAM).
    #[arg(long, env = "CAIRN_MAX_STREAMS_PER_CONNECTION", default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_streams_per_connection: u32,
    /// Largest request body, in bytes; a larger one gets 413.
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES", default_value_t = MAX_BODY_BYTES)]
    pub max_body_bytes: usize,
    /// Most body bytes of the requests answered at once (each counts its Content-Length, or
    /// --max-body-bytes without one); a request that does not fit gets 503 at once. At least
    /// --max-body-bytes. Decoding costs up to ~35 times these bytes in memory.
    #[arg(long, env = "CAIRN_MAX_BODY_BYTES_IN_FLIGHT", default_value_t = MAX_BODY_BYTES_IN_FLIGHT)]
    pub max_body_bytes_in_flight: usize,
    /// Longest time to answer one request, reading its body included (Go syntax, e.g. `4s`, or
    /// seconds); keep it below the webhook configurations' timeoutSeconds.
    #[arg(long, env = "CAIRN_REQUEST_TIMEOUT", default_value = DEFAULT_REQUEST_TIMEOUT, value_parser = parse_std_duration)]
    pub request_timeout: Duration,
    /// How long a connection may stay open without a request in flight (HTTP/1 keep-alive,
    /// HTTP/2 after its preface or its last stream) before it is closed.
    #[arg(long, env = "CAIRN_IDLE_TIMEOUT", default_value = DEFAULT_IDLE_TIMEOUT, value_parser = parse_std_duration)]
    pub idle_timeout: Duration,
    /// Longest time for the TLS handshake, and again for the first bytes of HTTP after it
    /// (a request's headers, or the HTTP/2 preface).
    #[arg(long, env = "CAIRN_HANDSHAKE_TIMEOUT", default_value = DEFAULT_HANDSHAKE_TIMEOUT, value_parser = parse_std_duration)]
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    /// The flags' defaults.
    fn default() -> Self {
        let duration = |s| parse_std_duration(s).unwrap_or(Duration::from_secs(4));
        Self {
            max_connections: 256,
            max_requests_in_flight: 16,
            max_streams_per_connection: 32,
            max_body_bytes: MAX_BODY_BYTES,
            max_body_bytes_in_flight: MAX_BODY_BYTES_IN_FLIGHT,
            request_timeout: duration(DEFAULT_REQUEST_TIMEOUT),
            idle_timeout: duration(DEFAULT_IDLE_TIMEOUT),
            handshake_timeout: duration(DEFAULT_HANDSHAKE_TIMEOUT),
        }
    }
}

impl Limits {
    /// The limits that cannot work together, named by their flags.
    pub fn check(&self) -> Result<(), String> {
        if self.max_body_bytes_in_flight < self.max_body_bytes {
            return Err(format!(
                "--max-body-bytes-in-flight ({}) must be at least --max-body-bytes ({}): a request of the largest size would never be answered",
                self.max_body_bytes_in_flight, self.max_body_bytes
            ));
        }
        if self.request_timeout.is_zero()
            || self.idle_timeout.is_zero()
            || self.handshake_timeout.is_zero()
        {
            return Err(
                "--request-timeout, --idle-timeout and --handshake-timeout must be above 0".into(),
            );
        }
        Ok(())
    }

    /// The budget `bytes` of a request take from --max-body-bytes-in-flight, in KiB (at least 1:
    /// a request without a body still decodes something).
    pub fn budget_kib(&self, declared: Option<u64>) -> u32 {
        let bytes = declared.map_or(self.max_body_bytes, |d| {
            usize::try_from(d)
                .unwrap_or(usize::MAX)
                .min(self.max_body_bytes)
        });
        u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1)
    }

    /// The whole budget of --max-body-bytes-in-flight, in KiB.
    pub fn total_budget_kib(&self) -> u32 {
        u32::try_from(self.max_body_bytes_in_flight.div_ceil(1024)).unwrap_or(u32::MAX)
    }
}

/// Why a connection or a request was refused or cut short: the `reason` label of
/// `cairn_webhook_refusals`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// `--max-connections` open already: the connection was closed at once.
    Connections,
    /// `--max-requests-in-flight` answered already: 503 at once.
    Requests,
    /// The request's body does not fit in what is left of `--max-body-bytes-in-flight`: 503 at
    /// once.
    Bytes,
    /// The request took longer than `--request-timeout`: 503.
    Timeout,
    /// The TLS handshake or the first HTTP bytes did not come within `--handshake-timeout`.
    Handshake,
    /// No request for `--idle-timeout`: the connection was closed (gracefully).
    Idle,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Connections => "connections",
            Refusal::Requests => "requests",
            Refusal::Bytes => "bytes",
            Refusal::Timeout => "timeout",
            Refusal::Handshake => "handshake",
            Refusal::Idle => "idle",
        }
    }
}

/// What one connection is doing: requests in flight, and when the last one started or ended.
#[derive(Debug)]
pub struct Activity {
    in_flight: AtomicUsize,
    last: Mutex<Instant>,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            last: Mutex::new(Instant::now()),
        }
    }
}

/// A request in flight on a connection; its end (or cancellation) is recorded on drop.
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    /// Records the start of a request.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.touch();
        InFlight(Arc::clone(self))
    }

    fn touch(&self) {
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn last(&self) -> Instant {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Resolves once the connection has had no request in flight for `timeout`.
    pub async fn idle_for(&self, timeout: Duration) {
        loop {
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            // A request in flight is bounded by the request timeout: look again after `timeout`.
            let deadline = if busy {
                Instant::now() + timeout
            } else {
                self.last() + timeout
            };
            tokio::time::sleep_until(deadline).await;
            if self.in_flight.load(Ordering::Acquire) == 0
                && self.last() + timeout <= Instant::now()
            {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        limits: Limits,
    }

    #[test]
    fn the_defaults_are_the_flags_defaults_and_the_request_timeout_is_below_the_api_servers() {
        let parsed = Flags::try_parse_from(["cairn-webhook"]).expect("defaults parse");
        assert_eq!(parsed.limits, Limits::default());
        assert!(Limits::default().request_timeout < Duration::from_secs(5));
        assert_eq!(Limits::default().check(), Ok(()));
    }

    #[test]
    fn a_budget_below_the_largest_body_is_refused_by_name() {
        let limits = Limits {
            max_body_bytes_in_flight: 1024,
            ..Limits::default()
        };
        let err = limits.check().expect_err("refused");
        assert!(err.contains("--max-body-bytes-in-flight"), "{err}");
    }

    #[test]
    fn a_request_takes_its_declared_bytes_at_most_the_largest_body() {
        let limits = Limits::default();
        assert_eq!(limits.budget_kib(Some(0)), 1);
        assert_eq!(limits.budget_kib(Some(1025)), 2);
        assert_eq!(limits.budget_kib(None), 3 * 1024);
        assert_eq!(limits.budget_kib(Some(u64::MAX)), 3 * 1024);
        assert_eq!(limits.total_budget_kib(), 4 * 1024);
    }

    #[test]
    fn zero_caps_are_refused_by_name() {
        let err = Flags::try_parse_from(["cairn-webhook", "--max-requests-in-flight=0"])
            .err()
            .expect("0 is refused")
            .to_string();
        assert!(err.contains("--max-requests-in-flight"), "{err}");
    }

    #[tokio::test]
    async fn a_connection_is_idle_only_without_a_request_in_flight() {
        let timeout = Duration::from_millis(200);
        let activity = Arc::new(Activity::default());
        let request = activity.begin();
        let idle = activity.idle_for(timeout);
        tokio::pin!(idle);
        // Busy for three timeouts: not idle.
        assert!(tokio::time::timeout(3 * timeout, &mut idle).await.is_err());
        drop(request);
        let ended = Instant::now();
        // Idle one timeout after the request ended (slack for a busy machine).
        tokio::time::timeout(Duration::from_secs(5), idle)
            .await
            .expect("idle after the request ended");
        assert!(Instant::now() >= ended + timeout);
    }
}
