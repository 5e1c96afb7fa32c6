//! The one retry policy of the agent's requests to the search server: capped exponential backoff
//! with jitter (backon's), a bounded total time, and a server's `Retry-After` honoured.
//!
//! This module decides when and how often; whether a failure may be retried at all is the
//! caller's call, made by returning [`Attempt::Transient`] (see `Client::send_retried`).

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use crate::error::{AgentError, Result};

/// How one attempt failed.
#[derive(Debug)]
pub enum Attempt {
    /// Worth trying again (a rejection for load, a gateway error, a dropped connection).
    Transient {
        reason: String,
        /// What the server asked for in `Retry-After`.
        retry_after: Option<Duration>,
    },
    /// Not worth trying again.
    Fatal(AgentError),
}

/// Capped exponential backoff with jitter, within a total time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The first wait.
    pub first: Duration,
    /// The longest single wait (a `Retry-After` may ask for more, within `total`).
    pub cap: Duration,
    /// No attempt starts later than this after the first one.
    pub total: Duration,
}

impl Default for Retry {
    /// Two minutes of retries: a node restart or a burst of rejections passes within it, and a
    /// server that stays away fails the session while its deadline still has room.
    fn default() -> Self {
        Self {
            first: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            total: Duration::from_secs(120),
        }
    }
}

impl Retry {
    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::new()
            .with_min_delay(self.first)
            .with_max_delay(self.cap)
            .without_max_times()
            .with_jitter()
            .build()
    }

    /// The wait before the next attempt, `None` to give up: the backoff's next step, or the
    /// server's `Retry-After` when that is longer, as long as the next attempt still starts
    /// within the total time.
    pub fn next_wait(
        &self,
        step: Option<Duration>,
        retry_after: Option<Duration>,
        elapsed: Duration,
    ) -> Option<Duration> {
        let wait = step?.max(retry_after.unwrap_or_default());
        (elapsed + wait <= self.total).then_some(wait)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the total time is spent; `what`
    /// names the request in messages.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Attempt>>,
    {
        // tokio's clock: the same as std's, and a test's paused one.
        let started = tokio::time::Instant::now();
        let mut steps = self.backoff();
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let (reason, retry_after) = match attempt().await {
                Ok(v) => return Ok(v),
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Transient {
                    reason,
                    retry_after,
                }) => (reason, retry_after),
            };
            let Some(wait) = self.next_wait(steps.next(), retry_after, started.elapsed()) else {
                return Err(AgentError::GaveUp {
                    what: what.to_string(),
                    attempts,
                    seconds: started.elapsed().as_secs(),
                    reason,
                });
            };
            tracing::warn!(%what, attempts, %reason, "retrying after {wait:?}");
            tokio::time::sleep(wait).await;
        }
    }
}

/// The seconds of a `Retry-After` header (its HTTP-date form is not used by search servers).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_up_to_the_cap() {
        let r = Retry {
            first: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            total: Duration::from_secs(60),
        };
        let steps: Vec<Duration> = r.backoff().take(12).collect();
        assert!(steps[0] >= Duration::from_millis(100), "{steps:?}");
        // Jitter adds at most as much again as the step.
        assert!(
            steps.iter().all(|s| *s <= Duration::from_secs(2)),
            "{steps:?}"
        );
        assert!(steps[8] >= Duration::from_secs(1), "{steps:?}");
        let again: Vec<Duration> = r.backoff().take(12).collect();
        assert_ne!(steps, again, "no jitter");
    }

    #[test]
    fn retry_after_is_honoured_within_the_total() {
        let r = Retry::default();
        let step = Some(Duration::from_millis(500));
        let secs = Duration::from_secs;
        assert_eq!(r.next_wait(step, Some(secs(3)), secs(0)), Some(secs(3)));
        assert_eq!(
            r.next_wait(step, None, secs(0)),
            Some(Duration::from_millis(500))
        );
        // A shorter Retry-After does not shorten the backoff.
        assert_eq!(
            r.next_wait(Some(secs(4)), Some(secs(1)), secs(0)),
            Some(secs(4))
        );
        assert_eq!(r.next_wait(step, Some(secs(30)), secs(100)), None);
        assert_eq!(r.next_wait(step, None, secs(120)), None);
        assert_eq!(r.next_wait(None, None, secs(0)), None);
    }

    #[test]
    fn reads_retry_after_seconds() {
        let mut h = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert(reqwest::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(7)));
        h.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), None);
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_within_the_total_with_the_last_reason() {
        let r = Retry {
            first: Duration::from_secs(1),
            cap: Duration::from_secs(4),
            total: Duration::from_secs(20),
        };
        let started = tokio::time::Instant::now();
        let mut calls = 0;
        let out: Result<()> = r
            .run("read documents of x", || {
                calls += 1;
                let n = calls;
                async move {
                    Err(Attempt::Transient {
                        reason: format!("HTTP 503 (attempt {n})"),
                        retry_after: None,
                    })
                }
            })
            .await;
        let e = out.unwrap_err().to_string();
        assert!(started.elapsed() <= Duration::from_secs(20), "{e}");
        assert!(calls >= 4, "{calls} {e}");
        assert!(e.starts_with("read documents of x: gave up after"), "{e}");
        assert!(e.ends_with(&format!("HTTP 503 (attempt {calls})")), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_a_fatal_error_and_returns_a_success() {
        let r = Retry::default();
        let mut calls = 0;
        let out: Result<u32> = r
            .run("x", || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1 => Err(Attempt::Transient {
                            reason: "reset".into(),
                            retry_after: Some(Duration::from_secs(2)),
                        }),
                        _ => Ok(n),
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 2);
        let fatal: Result<()> = r
            .run("x", || async {
                Err(Attempt::Fatal(AgentError::Dump("bad".into())))
            })
            .await;
        assert_eq!(fatal.unwrap_err().to_string(), "bad");
    }
}
