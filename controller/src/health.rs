//! What `/livez` and `/readyz` report. Ready: every cache the reconcilers read holds its first
//! full list (a standby syncs too, so it is ready to take over). Live: the lease loop (a
//! standby's acquire attempts, a leader's renewals) completed an attempt within the bound. Each
//! attempt is time-bounded and the loop runs every third of the lease, so a healthy process
//! beats at least once per lease; a stale beat means the loop hangs, or the process hangs on its
//! way out after giving up the lease (graceful shutdown waiting on a frozen API server).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

pub struct Health {
    started: Instant,
    /// Milliseconds since `started` at the last beat.
    last_beat: AtomicU64,
    synced: watch::Sender<bool>,
    bound: Duration,
}

impl Health {
    /// Live while the last beat is at most `bound` old.
    pub fn new(bound: Duration) -> Self {
        Self {
            started: Instant::now(),
            last_beat: AtomicU64::new(0),
            synced: watch::Sender::new(false),
            bound,
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The lease loop completed an attempt, whatever its outcome.
    pub fn beat(&self) {
        self.last_beat.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Every cache has synced.
    pub fn set_synced(&self) {
        self.synced.send_replace(true);
    }

    pub fn ready(&self) -> bool {
        *self.synced.borrow()
    }

    /// Resolves once every cache has synced. (One task waits on the stores themselves: a
    /// store's readiness wakes only the last task that polled it.)
    pub async fn synced(&self) {
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }

    /// How long ago the last beat was, when that is beyond the bound.
    pub fn stalled(&self) -> Option<Duration> {
        let since = Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_beat.load(Ordering::Relaxed)),
        );
        (since > self.bound).then_some(since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_while_beating_ready_once_synced() {
        let h = Health::new(Duration::from_millis(30));
        assert!(h.stalled().is_none());
        assert!(!h.ready());
        h.set_synced();
        assert!(h.ready());
        std::thread::sleep(Duration::from_millis(50));
        assert!(h.stalled().is_some());
        h.beat();
        assert!(h.stalled().is_none());
    }
}
