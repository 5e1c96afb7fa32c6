//! What the agent prints and leaves behind: log lines on stderr, progress lines on stdout, and
//! the result (termination log and the last line on stdout).

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_api::progress::ProgressLine;
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

/// How often a progress line is written.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Writes a [`ProgressLine`] every [`PROGRESS_EVERY`] while a phase lasts, and its last one
/// when it ends.
pub struct Progress {
    stop: Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Counts between two lines.
struct Ticker {
    phase: &'static str,
    total: u64,
    counter: Counter,
    started: Instant,
    last: (u64, u64, Instant),
}

impl Ticker {
    fn line(&mut self, done: bool) -> ProgressLine {
        let (docs, bytes) = (self.counter)();
        let secs = self.last.2.elapsed().as_secs_f64().max(0.001);
        let line = ProgressLine {
            kind: cairn_api::progress::KIND.into(),
            phase: self.phase.into(),
            documents: docs,
            documents_total: self.total,
            bytes,
            documents_per_second: (docs.saturating_sub(self.last.0)) as f64 / secs,
            bytes_per_second: (bytes.saturating_sub(self.last.1)) as f64 / secs,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
            done,
        };
        self.last = (docs, bytes, Instant::now());
        line
    }
}

fn print_line(line: &ProgressLine) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", line.to_line());
    let _ = out.flush();
}

impl Progress {
    /// `counter` gives the documents and bytes done; `total` the documents expected.
    pub fn start(phase: &'static str, total: u64, counter: Counter) -> Self {
        let stop = Arc::new((std::sync::Mutex::new(false), std::sync::Condvar::new()));
        let flag = stop.clone();
        let mut ticker = Ticker {
            phase,
            total,
            counter,
            started: Instant::now(),
            last: (0, 0, Instant::now()),
        };
        let thread = std::thread::spawn(move || {
            let (lock, wake) = &*flag;
            let Ok(mut stopped) = lock.lock() else {
                return;
            };
            while !*stopped {
                let Ok((guard, timeout)) = wake.wait_timeout(stopped, PROGRESS_EVERY) else {
                    return;
                };
                stopped = guard;
                if timeout.timed_out() && !*stopped {
                    print_line(&ticker.line(false));
                }
            }
            print_line(&ticker.line(true));
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Ends the phase: its last line is written.
    pub fn stop(mut self) {
        self.signal();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    fn signal(&self) {
        if let Ok(mut s) = self.stop.0.lock() {
            *s = true;
        }
        self.stop.1.notify_all();
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.signal();
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The worst error a run can end with (a server's answer of quotes, control characters and
    /// unicode) still fits the termination log once JSON-escaped, and stays a result.
    #[test]
    fn a_failure_of_the_worst_text_fits_the_termination_log() {
        let body = "\"\\\u{0}\u{1b}\n\té東🚀\u{2028}".repeat(2000);
        let f = Failed {
            phase: "restore",
            error: AgentError::Server {
                what: "bulk into r-\"logs\"".into(),
                status: 400,
                body,
            },
        };
        let text = failure(&f).to_termination_message();
        assert!(
            text.len() <= cairn_api::result::MAX_TERMINATION_MESSAGE,
            "{}",
            text.len()
        );
        let Some(AgentResult::Failure(r)) = AgentResult::from_termination_message(&text) else {
            panic!("{text}");
        };
        assert_eq!(r.phase, "restore");
        assert!(
            r.reason.starts_with("bulk into r-\"logs\": HTTP 400"),
            "{}",
            r.reason
        );
    }

    #[test]
    fn a_progress_line_is_one_json_object_of_the_contract() {
        let mut t = Ticker {
            phase: "dump",
            total: 1000,
            counter: Arc::new(|| (250, 1_000_000)),
            started: Instant::now(),
            last: (50, 0, Instant::now() - Duration::from_secs(10)),
        };
        let text = t.line(false).to_line();
        assert!(!text.contains('\n'), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "bytes",
                "bytesPerSecond",
                "documents",
                "documentsPerSecond",
                "documentsTotal",
                "done",
                "elapsedSeconds",
                "kind",
                "phase"
            ]
        );
        assert_eq!(
            (v["kind"].as_str(), v["phase"].as_str()),
            (Some("progress"), Some("dump"))
        );
        assert_eq!(
            (v["documents"].as_u64(), v["documentsTotal"].as_u64()),
            (Some(250), Some(1000))
        );
        let rate = v["documentsPerSecond"].as_f64().unwrap();
        assert!(
            (19.0..=20.1).contains(&rate),
            "200 documents in 10 s: {rate}"
        );
        assert!(t.line(true).done);
        // Not an agent result: a reader tells them apart by kind.
        assert!(cairn_api::result::AgentResult::from_termination_message(&text).is_none());
    }
}
