//! Leader election on a `coordination.k8s.io` Lease, with compare-and-swap on
//! `resourceVersion`: only the holder schedules and reconciles; standbys poll and take over once
//! the lease expires; a graceful shutdown releases it so a standby takes over at once.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::health::Health;
use crate::metrics::{LeaseLabels, Metrics};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The other holder's record as last seen, and when, on this process's monotonic clock.
    observed: Mutex<Option<Observed>>,
}

/// Another holder's lease record and the local instant it was first seen unchanged since.
/// Expiry is judged by how long the record has stood still here, never by comparing the
/// holder's `renewTime` with this machine's clock (client-go judges it the same way): a skewed
/// clock on either side cannot hand the lease over early.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    record: (Option<String>, Option<MicroTime>, Option<MicroTime>),
    since: Instant,
}

/// Whether the lease can be taken by `identity` at `now`: free, ours, or another holder's
/// record unchanged here for longer than its duration. Updates `observed`.
pub fn can_take(
    spec: Option<&LeaseSpec>,
    identity: &str,
    observed: &mut Option<Observed>,
    now: Instant,
) -> bool {
    let Some(spec) = spec else { return true };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == identity {
        return true;
    }
    let record = (
        spec.holder_identity.clone(),
        spec.renew_time.clone(),
        spec.acquire_time.clone(),
    );
    let seen = observed.get_or_insert_with(|| Observed {
        record: record.clone(),
        since: now,
    });
    if seen.record != record {
        *seen = Observed { record, since: now };
        return false;
    }
    let secs = u64::try_from(spec.lease_duration_seconds.unwrap_or(15)).unwrap_or(15);
    now.duration_since(seen.since) > Duration::from_secs(secs)
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity: identity.into(),
            duration,
            observed: Mutex::new(None),
        }
    }

    fn spec(&self, previous: Option<&LeaseSpec>, now: Timestamp) -> LeaseSpec {
        let ours =
            previous.and_then(|p| p.holder_identity.as_deref()) == Some(self.identity.as_str());
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.duration.as_secs()).unwrap_or(15)),
            acquire_time: if ours {
                previous.and_then(|p| p.acquire_time.clone())
            } else {
                Some(MicroTime(now))
            },
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(if ours { transitions } else { transitions + 1 }),
            ..Default::default()
        }
    }

    /// One attempt to acquire or renew; `Ok(true)` when we hold the lease afterwards.
    pub async fn try_acquire(&self) -> Result<bool, kube::Error> {
        let now = Timestamp::now();
        match self.api.get_opt(&self.name).await? {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(self.spec(None, now)),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(mut lease) => {
                let free = {
                    let mut observed = self.observed.lock().unwrap_or_else(|e| e.into_inner());
                    can_take(
                        lease.spec.as_ref(),
                        &self.identity,
                        &mut observed,
                        Instant::now(),
                    )
                };
                if !free {
                    return Ok(false);
                }
                lease.spec = Some(self.spec(lease.spec.as_ref(), now));
                // The resourceVersion we read makes this a compare-and-swap.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Waits until we hold the lease, polling every third of its duration; counts each attempt
    /// and beats `health` after it. No attempt outlives two thirds of the lease (a hung
    /// connection counts as an error): the loop goes on while the API server does not answer.
    pub async fn acquire(&self, metrics: &Metrics, health: &Health) {
        loop {
            let outcome = tokio::time::timeout(self.renew_deadline(), self.try_acquire()).await;
            health.beat();
            let label = match &outcome {
                Ok(Ok(true)) => "acquired",
                Ok(Ok(false)) => "held",
                Ok(Err(_)) | Err(_) => "error",
            };
            metrics
                .lease_attempts
                .get_or_create(&LeaseLabels {
                    outcome: label.into(),
                })
                .inc();
            match outcome {
                Ok(Ok(true)) => {
                    tracing::info!(identity = %self.identity, lease = %self.name, "became leader");
                    return;
                }
                Ok(Ok(false)) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "lease: acquire failed"),
                Err(_) => tracing::warn!("lease: acquire timed out"),
            }
            tokio::time::sleep(self.duration / 3).await;
        }
    }

    /// How long a holder may go without renewing before it steps down, and the longest an
    /// attempt may take.
    fn renew_deadline(&self) -> Duration {
        self.duration * 2 / 3
    }

    /// Renews the lease until it is lost; the receiver turns `false` then. A holder that has not
    /// renewed for two thirds of the lease steps down before another may take over; no renewal
    /// request outlives that deadline (a hung connection counts as a failure). Each attempt
    /// beats `health`; the beats stop with the loop.
    pub fn keep(self: Arc<Self>, health: Arc<Health>) -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(true);
        tokio::spawn(async move {
            let renew_deadline = self.renew_deadline();
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(self.duration / 3).await;
                let left = renew_deadline.saturating_sub(last_ok.elapsed());
                let renewed = tokio::time::timeout(left, self.try_acquire()).await;
                health.beat();
                match renewed {
                    Ok(Ok(true)) => {
                        last_ok = tokio::time::Instant::now();
                        continue;
                    }
                    Ok(Ok(false)) => {
                        tracing::warn!("lease taken by another instance");
                        let _ = tx.send(false);
                        return;
                    }
                    Ok(Err(e)) => tracing::warn!(error = %e, "lease: renew failed"),
                    Err(_) => tracing::warn!("lease: renew timed out"),
                }
                if last_ok.elapsed() >= renew_deadline {
                    tracing::warn!("lease: not renewed within the renew deadline; stepping down");
                    let _ = tx.send(false);
                    return;
                }
            }
        });
        rx
    }

    /// Gives the lease up so a standby takes over without waiting for it to expire.
    pub async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.renew_time = None;
        spec.acquire_time = None;
        if let Err(e) = self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(error = %e, "lease: release failed");
        } else {
            tracing::info!("lease released");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_is_taken_when_free_ours_or_unchanged_for_its_duration() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        // The holder's clock says anything: only how long its record stands still here counts.
        let spec = |holder: &str, renewed: i64| LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::from_second(renewed).expect("t"))),
            ..Default::default()
        };
        let mut seen = None;
        assert!(can_take(None, "a", &mut seen, at(0)));
        assert!(can_take(Some(&spec("", 990)), "a", &mut seen, at(0)));
        assert!(can_take(Some(&spec("a", 990)), "a", &mut seen, at(0)));
        // A renewal dated long ago (a clock behind ours) is not expired when first seen.
        assert!(!can_take(Some(&spec("b", 10)), "a", &mut seen, at(0)));
        assert!(!can_take(Some(&spec("b", 10)), "a", &mut seen, at(15)));
        // Renewed (any time, even earlier by its clock): the wait starts again.
        assert!(!can_take(Some(&spec("b", 5)), "a", &mut seen, at(14)));
        assert!(!can_take(Some(&spec("b", 5)), "a", &mut seen, at(29)));
        assert!(can_take(Some(&spec("b", 5)), "a", &mut seen, at(30)));
    }
}
