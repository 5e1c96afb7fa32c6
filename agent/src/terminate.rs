//! SIGTERM: the pod is being deleted, evicted or stopped at its deadline, and the agent has the
//! pod's grace period (30 s by default) before SIGKILL. What must not outlive the agent (its
//! repository lock) registers a clean-up here; on SIGTERM they run, newest first, and the
//! agent then reports that it was terminated and exits.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

type Hook = Box<dyn Fn() + Send + Sync>;

static HOOKS: Mutex<Vec<(u64, Hook)>> = Mutex::new(Vec::new());
static NEXT: AtomicU64 = AtomicU64::new(0);
static TERMINATING: AtomicBool = AtomicBool::new(false);

/// Whether SIGTERM came: the run's own outcome (often a failure the clean-ups caused) is then
/// not reported; the termination is, by [`listen`]'s thread.
pub fn terminating() -> bool {
    TERMINATING.load(Ordering::SeqCst)
}

/// A registered clean-up; dropping it unregisters it (the work it guards ended by itself).
pub struct Registered(u64);

impl Drop for Registered {
    fn drop(&mut self) {
        let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
        hooks.retain(|(id, _)| *id != self.0);
    }
}

/// Runs `hook` if the agent is terminated while the returned guard lives.
pub fn on_terminate(hook: impl Fn() + Send + Sync + 'static) -> Registered {
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut hooks = HOOKS.lock().unwrap_or_else(|p| p.into_inner());
    hooks.push((id, Box::new(hook)));
    Registered(id)
}

/// Runs and forgets every registered clean-up, newest first.
pub fn run_hooks() {
    let hooks = std::mem::take(&mut *HOOKS.lock().unwrap_or_else(|p| p.into_inner()));
    for (_, hook) in hooks.into_iter().rev() {
        // One clean-up failing must not keep the others, or the report, from running.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(hook)).is_err() {
            tracing::warn!("a clean-up on SIGTERM panicked");
        }
    }
}

/// Waits for SIGTERM on a thread of its own; then runs the clean-ups and `finish` (which
/// reports and exits). The work itself is not interrupted: the process ends under it.
pub fn listen(finish: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered before the thread starts: a SIGTERM from now on is ours, not the default kill.
    let mut term = rt.block_on(async {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    })?;
    std::thread::Builder::new()
        .name("sigterm".into())
        .spawn(move || {
            if rt.block_on(term.recv()).is_some() {
                TERMINATING.store(true, Ordering::SeqCst);
                tracing::warn!("SIGTERM: stopping");
                run_hooks();
                finish();
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn hooks_run_newest_first_and_only_while_registered() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hook = |n: u32| {
            let seen = seen.clone();
            move || seen.lock().unwrap().push(n)
        };
        let first = on_terminate(hook(1));
        let gone = on_terminate(hook(2));
        let _third = on_terminate(hook(3));
        drop(gone);
        run_hooks();
        assert_eq!(*seen.lock().unwrap(), [3, 1]);
        drop(first);
        run_hooks();
        assert_eq!(seen.lock().unwrap().len(), 2, "run once");
    }
}
