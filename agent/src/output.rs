//! What the agent prints and leaves behind: log lines on stderr, progress lines on long runs,
//! and the result (termination log and the last line on stdout).

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cairn_api::result::{AgentResult, FailureResult, TERMINATION_LOG};

use crate::error::{AgentError, Failed, Result};

/// The async runtime for HTTP. rustic's blocking calls run outside it (on the calling thread
/// and the archiver's own threads).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .map_err(|e| AgentError::io("start the async runtime", e))
}

/// Writes the result to the termination log and prints it as the last line on stdout.
pub fn emit(result: &AgentResult) {
    let text = result.to_termination_message();
    let path = std::env::var("CAIRN_TERMINATION_LOG")
        .ok()
        .filter(|p| !p.is_empty());
    let explicit = path.is_some();
    let path = path.unwrap_or_else(|| TERMINATION_LOG.to_string());
    if let Err(e) = std::fs::write(&path, &text)
        && explicit
    {
        // Outside a pod /dev/termination-log does not exist: only a path we were given matters.
        tracing::warn!(path, error = %e, "could not write the termination log");
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// The failure result of an error.
pub fn failure(f: &Failed) -> AgentResult {
    AgentResult::Failure(FailureResult {
        phase: f.phase.to_string(),
        reason: f.error.to_string(),
    })
}

type Counter = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Logs documents/s and MB/s every 10 seconds while a run lasts.
pub struct Progress {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Progress {
    pub fn start(what: &'static str, counter: Counter) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let started = Instant::now();
            let mut last = (0u64, 0u64, Instant::now());
            let mut ticks = 0u32;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                ticks += 1;
                if !ticks.is_multiple_of(40) {
                    continue;
                }
                let (docs, bytes) = counter();
                let secs = last.2.elapsed().as_secs_f64().max(0.001);
                tracing::info!(
                    "{what}: {docs} documents, {:.1} MB, {:.0} docs/s, {:.1} MB/s, {:.0}s elapsed",
                    bytes as f64 / 1e6,
                    (docs - last.0) as f64 / secs,
                    (bytes - last.1) as f64 / 1e6 / secs,
                    started.elapsed().as_secs_f64()
                );
                last = (docs, bytes, Instant::now());
            }
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Applies `CAIRN_NICE` and `CAIRN_IONICE_CLASS`/`CAIRN_IONICE_CLASS_DATA` to this process
/// (the image has no `nice`/`ionice` wrapper).
pub fn apply_priority() {
    if let Some(n) = std::env::var("CAIRN_NICE")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    {
        // SAFETY: a plain syscall on our own process.
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, n) };
        if rc != 0 {
            tracing::warn!(nice = n, "could not set the nice value");
        }
    }
    let class = std::env::var("CAIRN_IONICE_CLASS")
        .ok()
        .and_then(|v| v.parse::<libc::c_long>().ok());
    if let Some(class) = class {
        let data = std::env::var("CAIRN_IONICE_CLASS_DATA")
            .ok()
            .and_then(|v| v.parse::<libc::c_long>().ok())
            .unwrap_or(4);
        // IOPRIO_WHO_PROCESS = 1, who = 0 (this process), priority = class << 13 | data.
        // SAFETY: a plain syscall on our own process.
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, (class << 13) | data) };
        if rc != 0 {
            tracing::warn!(class, data, "could not set the I/O priority");
        }
    }
}
