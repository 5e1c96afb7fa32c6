//! `--wait`: follows a session to its end. The agent's progress lines come from its pod's log
//! (`pods/log`, with the user's own rights, followed), the outcome from the session's status;
//! Ctrl-C and `--timeout` detach and say the session goes on.

use std::collections::VecDeque;
use std::future::Future;
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Result;
use cairn_api::common::SessionPhase;
use cairn_api::progress::ProgressLine;
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{ListParams, LogParams};
use tokio::sync::mpsc;

use crate::client::Cluster;
use crate::output::{self, Colour, Terminal};

/// Agent lines kept for a failure's report.
const LAST_LINES: usize = 10;
/// Exit code after Ctrl-C (128 + SIGINT, as shells report it).
const DETACHED: u8 = 130;

/// How a session ended: its phase, what to say, and the reason of a failure.
pub struct Outcome {
    pub phase: SessionPhase,
    pub summary: String,
    pub reason: Option<String>,
}

impl Outcome {
    /// The outcome of a session in `phase` with `conditions`: `None` until it is final. The
    /// reason is that of the outcome condition, named after the final phase (`BackupFailed`,
    /// ...; its status says whether the work succeeded, so it is not looked at).
    pub fn of(
        phase: Option<SessionPhase>,
        conditions: &[Condition],
        summary: String,
    ) -> Option<Self> {
        let phase = phase.filter(|p| p.is_final())?;
        let reason = conditions
            .iter()
            .find(|c| c.type_.ends_with(&phase.to_string()))
            .map(|c| format!("{}: {}", c.reason, c.message));
        Some(Self {
            phase,
            summary,
            reason,
        })
    }
}

/// What the log follower passes on.
enum LogEvent {
    Progress(ProgressLine),
    Text(String),
}

/// A session kind `--wait` follows.
pub trait Followed:
    kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + serde::de::DeserializeOwned
    + std::fmt::Debug
{
    /// How the session ended; `None` until it is final.
    fn outcome(self) -> Option<Outcome>;
}

/// Follows session `name` of kind `K` until it ends; 0 only when it succeeded.
pub async fn wait<K: Followed>(
    cluster: &Cluster,
    name: &str,
    timeout: Duration,
) -> Result<ExitCode> {
    let session = Session {
        cluster,
        kind: K::kind(&()).into_owned(),
        name: name.to_string(),
        timeout,
    };
    session
        .follow(|| async { Ok(cluster.get::<K>(name).await?.outcome()) })
        .await
}

/// A session being followed: `kind` and `name` for messages.
struct Session<'a> {
    cluster: &'a Cluster,
    kind: String,
    name: String,
    timeout: Duration,
}

impl Session<'_> {
    /// Follows the session until `poll` gives its outcome; 0 only when it succeeded.
    async fn follow<F, Fut>(&self, mut poll: F) -> Result<ExitCode>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<Outcome>>>,
    {
        let term = Terminal::detect();
        let (tx, mut rx) = mpsc::channel(64);
        let mut follower: Option<tokio::task::JoinHandle<()>> = None;
        let mut last = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let outcome = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => return Ok(self.detach(term, "interrupted")),
                () = &mut deadline => return Ok(self.detach(term, "--timeout reached")),
                Some(event) = rx.recv() => show(term, event, &mut last),
                _ = tick.tick() => {
                    if follower.is_none() {
                        follower = self.start_log(tx.clone()).await;
                    }
                    if let Some(outcome) = poll().await? {
                        break outcome;
                    }
                }
            }
        };
        drop(tx);
        // The log's end carries the phase's last progress line: let it arrive.
        if let Some(f) = follower {
            let _ = tokio::time::timeout(Duration::from_secs(5), f).await;
        }
        while let Ok(event) = rx.try_recv() {
            show(term, event, &mut last);
        }
        end_line(term);
        Ok(self.report(term, outcome, last))
    }

    fn detach(&self, term: Terminal, why: &str) -> ExitCode {
        end_line(term);
        eprintln!(
            "Detached ({why}): {} {}/{} goes on; `kubectl cairn status -n {}` or `kubectl cairn logs {} -n {}` follow it.",
            self.kind,
            self.cluster.namespace,
            self.name,
            self.cluster.namespace,
            self.name,
            self.cluster.namespace
        );
        if why == "interrupted" {
            ExitCode::from(DETACHED)
        } else {
            ExitCode::FAILURE
        }
    }

    fn report(&self, term: Terminal, outcome: Outcome, last: VecDeque<String>) -> ExitCode {
        let phase = outcome.phase.to_string();
        if outcome.phase == SessionPhase::Succeeded {
            println!(
                "{} {}: {}",
                self.kind,
                term.paint(Colour::Green, &phase),
                outcome.summary
            );
            return ExitCode::SUCCESS;
        }
        println!(
            "{} {} {}",
            self.kind,
            self.name,
            term.paint(Colour::Red, &phase)
        );
        if let Some(reason) = outcome.reason {
            println!("Reason: {}", output::plain(&reason));
        }
        if !last.is_empty() {
            println!("Last lines of the agent:");
            for line in last {
                println!("  {line}");
            }
        }
        ExitCode::FAILURE
    }

    /// Starts following the agent's log once the session's pod has a container that ran.
    async fn start_log(&self, tx: mpsc::Sender<LogEvent>) -> Option<tokio::task::JoinHandle<()>> {
        let (pod, container) = self.agent_container().await?;
        let pods = self.cluster.api::<Pod>();
        let params = LogParams {
            follow: true,
            container: Some(container),
            ..LogParams::default()
        };
        let stream = pods.log_stream(&pod, &params).await.ok()?;
        Some(tokio::spawn(async move {
            let mut lines = stream.lines();
            while let Some(Ok(line)) = lines.next().await {
                let event = match ProgressLine::parse(&line) {
                    Some(p) => LogEvent::Progress(p),
                    None => LogEvent::Text(output::plain(&line)),
                };
                if tx.send(event).await.is_err() {
                    return;
                }
            }
        }))
    }

    /// The session's pod and its agent container (the first that is no hook's), once that
    /// container runs or ran.
    async fn agent_container(&self) -> Option<(String, String)> {
        let selector = format!("{}={}", cairn_api::naming::LABEL_SESSION, self.name);
        let pods = self.cluster.api::<Pod>();
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .ok()?;
        list.items.into_iter().find_map(|pod| {
            let status = pod.status.as_ref()?.container_statuses.as_ref()?;
            let started = status.iter().find(|c| {
                !cairn_api::naming::is_hook_container(&c.name)
                    && c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
            })?;
            Some((pod.metadata.name.clone()?, started.name.clone()))
        })
    }
}

/// Shows a progress line (rewritten in place on a terminal, one line each otherwise), and
/// keeps the agent's other lines for a failure's report.
fn show(term: Terminal, event: LogEvent, last: &mut VecDeque<String>) {
    match event {
        LogEvent::Progress(p) => {
            let text = progress_text(&p);
            if term.tty {
                print!("\r\x1b[K{text}");
                if p.done {
                    println!();
                }
                let _ = std::io::stdout().flush();
            } else {
                println!("{text}");
            }
        }
        LogEvent::Text(line) => {
            if last.len() == LAST_LINES {
                last.pop_front();
            }
            last.push_back(line);
        }
    }
}

/// Ends a progress line left open on a terminal.
fn end_line(term: Terminal) {
    if term.tty {
        print!("\r\x1b[K");
        let _ = std::io::stdout().flush();
    }
}

/// `dump: 1,200/2,000 documents (60%), 1.2 MiB, 120 docs/s, 117.2 KiB/s, ETA 7s`.
pub fn progress_text(p: &ProgressLine) -> String {
    let mut text = format!("{}: {}", p.phase, output::count(p.documents));
    if p.documents_total > 0 {
        let pct = (p.documents as f64 * 100.0 / p.documents_total as f64).min(100.0);
        text.push_str(&format!(
            "/{} documents ({pct:.0}%)",
            output::count(p.documents_total)
        ));
    } else {
        text.push_str(" documents");
    }
    // The last line's rates are over its last moments: the phase's average says more.
    let (docs_rate, bytes_rate) = if p.done && p.elapsed_seconds > 0.0 {
        let secs = p.elapsed_seconds;
        (p.documents as f64 / secs, p.bytes as f64 / secs)
    } else {
        (p.documents_per_second, p.bytes_per_second)
    };
    text.push_str(&format!(
        ", {}, {docs_rate:.0} docs/s, {}/s",
        cairn_api::naming::human_bytes(p.bytes),
        cairn_api::naming::human_bytes(bytes_rate as u64)
    ));
    if p.done {
        text.push_str(&format!(", done in {:.0}s", p.elapsed_seconds));
    } else if let Some(eta) = p.eta_seconds() {
        text.push_str(&format!(
            ", ETA {}",
            output::short_duration(eta.round() as i64)
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_progress_line_reads_as_figures() {
        let p = ProgressLine::parse(r#"{"kind":"progress","phase":"dump","documents":1200,"documentsTotal":2000,"bytes":1258291,"documentsPerSecond":120.0,"bytesPerSecond":120000.0,"elapsedSeconds":10.0,"done":false}"#).unwrap();
        assert_eq!(
            progress_text(&p),
            "dump: 1,200/2,000 documents (60%), 1.2 MiB, 120 docs/s, 117.2 KiB/s, ETA 7s"
        );
    }
}
