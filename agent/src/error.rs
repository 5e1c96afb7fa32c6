//! The agent's errors. Every message is one line fit for a termination log: it names what failed
//! and never carries a secret (URLs are shown without user info, bodies are cut short).

use std::fmt;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// Bad command line or environment.
    #[error("{0}")]
    Usage(String),
    /// SIGTERM ended the run (the pod was deleted, evicted or reached its deadline).
    #[error(
        "terminated by SIGTERM (the pod was deleted, evicted or reached its deadline): the run stopped and removed its repository lock"
    )]
    Terminated,
    /// Credentials could not be read.
    #[error("credentials: {0}")]
    Credentials(String),
    /// The repository (rustic_core / the storage backend) failed.
    #[error("repository: {0}")]
    Repository(String),
    /// The server did not answer or the connection failed.
    #[error("{what}: {reason}")]
    Http { what: String, reason: String },
    /// The server answered with an error status.
    #[error("{what}: HTTP {status}: {body}")]
    Server {
        what: String,
        status: u16,
        body: String,
    },
    /// A request kept failing transiently until its retries were spent.
    #[error("{what}: gave up after {attempts} attempts in {seconds}s: {reason}")]
    GaveUp {
        what: String,
        attempts: u32,
        seconds: u64,
        reason: String,
    },
    /// The server was not ready within the wait timeout.
    #[error("server {url} not ready within {seconds}s: {last}")]
    NotReady {
        url: String,
        seconds: u64,
        last: String,
    },
    /// Reading documents failed.
    #[error("{0}")]
    Dump(String),
    /// Loading data into the server failed.
    #[error("{0}")]
    Restore(String),
    /// What was restored does not match what was backed up.
    #[error("{0}")]
    Verify(String),
    /// A snapshot's content is not what this agent writes.
    #[error("snapshot: {0}")]
    Snapshot(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
}

impl AgentError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    pub fn json(what: impl Into<String>, source: serde_json::Error) -> Self {
        Self::Json {
            what: what.into(),
            source,
        }
    }

    /// A rustic error in one line (rustic's `Display` is a multi-line report): its message and
    /// cause, without its plea to report a bug (the reason is for the user, not rustic's
    /// tracker), its links or, with RUST_BACKTRACE set, its backtrace.
    pub fn rustic(what: &str, err: impl fmt::Display) -> Self {
        let text = err.to_string();
        let mut skipping = false;
        let line = text
            .lines()
            .map(str::trim)
            .take_while(|l| !l.starts_with("Backtrace:"))
            .filter(|l| {
                if l.starts_with("We believe this is a bug") {
                    skipping = true;
                } else if l.starts_with("Thank you for helping") {
                    skipping = false;
                    return false;
                }
                !skipping
                    && !l.is_empty()
                    && !l.starts_with("Some additional details")
                    && !l.starts_with("For more information, see:")
            })
            .collect::<Vec<_>>()
            .join(" ");
        Self::Repository(format!("{what}: {line}"))
    }
}

pub type Result<T, E = AgentError> = std::result::Result<T, E>;

/// An error with the phase it happened in (`connect`, `dump`, `upload`, `retention`, `restore`,
/// `verify`, ...), as the result reports it.
#[derive(Debug)]
pub struct Failed {
    pub phase: &'static str,
    pub error: AgentError,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.phase, self.error)
    }
}

/// `result.phase("dump")?` attaches the phase to an error.
pub trait InPhase<T> {
    fn phase(self, phase: &'static str) -> Result<T, Failed>;
}

impl<T> InPhase<T> for Result<T, AgentError> {
    fn phase(self, phase: &'static str) -> Result<T, Failed> {
        self.map_err(|error| Failed { phase, error })
    }
}

/// Cuts a server's answer for an error message.
pub fn short(text: &str, max: usize) -> String {
    let t = text.trim();
    if t.len() <= max {
        return t.replace('\n', " ");
    }
    let mut cut = max;
    while !t.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}...", t[..cut].replace('\n', " "))
}

/// Drops `user:password@` from anything that looks like a URL.
pub fn redact_url(text: &str) -> String {
    let re = regex::Regex::new(r"(?i)(https?://)[^/@\s]+@").expect("static regex");
    re.replace_all(text, "$1").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rustic_error_is_one_line_without_its_backtrace() {
        let text = "`rustic_core` experienced an error.\n\n  Message: the storage did not answer\n\nBacktrace:\n 0: rustic_core::error::RusticError::new\n 1: x";
        let e = AgentError::rustic("save snapshot", text).to_string();
        assert_eq!(
            e,
            "repository: save snapshot: `rustic_core` experienced an error. Message: the storage did not answer"
        );
    }

    #[test]
    fn a_rustic_error_never_asks_to_report_a_bug() {
        let text = "`rustic_core` experienced an error related to internal operations.\n\nMessage:\nNode `elasticsearch` not found in tree.\n\nWe believe this is a bug, please report it by opening an issue at:\nhttps://github.com/rustic-rs/rustic_core/issues/new\n\nIf you can, please attach an anonymized debug log to the issue.\n\nThank you for helping us improve rustic!\n\n\nSome additional details ...\n\nContext:\n- node: elasticsearch\n";
        let e = AgentError::rustic("find x", text).to_string();
        assert_eq!(
            e,
            "repository: find x: `rustic_core` experienced an error related to internal operations. Message: Node `elasticsearch` not found in tree. Context: - node: elasticsearch"
        );
    }
}
