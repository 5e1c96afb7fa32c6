//! `cairn-agent hook`: runs one of Stash's hook handlers (`httpGet`, `httpPost`, `tcpSocket`):
//! a pre hook as the first container of a session's Job, a post hook as the one container of a
//! Job the controller starts after the session. It succeeds when an HTTP answer has a status from
//! 200 to 399 or the TCP port accepts a connection, as Stash's hooks do; otherwise it fails and
//! the Job's other containers never run.

use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use cairn_api::hooks::{Action, Handler, HttpRequest};
use clap::{Args, ValueEnum};

use crate::error::{AgentError, Failed, InPhase, Result, short};

/// How long one hook may take to answer.
const HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// Which hook this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum HookName {
    #[value(name = "preBackup")]
    PreBackup,
    #[value(name = "preRestore")]
    PreRestore,
    #[value(name = "postBackup")]
    PostBackup,
    #[value(name = "postRestore")]
    PostRestore,
}

impl HookName {
    /// The phase of its failure: names the hook in the session's reason.
    fn phase(self) -> &'static str {
        match self {
            Self::PreBackup => "preBackup hook",
            Self::PreRestore => "preRestore hook",
            Self::PostBackup => "postBackup hook",
            Self::PostRestore => "postRestore hook",
        }
    }
}

#[derive(Args, Debug)]
pub struct HookArgs {
    /// Which hook runs.
    #[arg(long, value_enum)]
    pub name: HookName,
    /// The handler, as JSON (Stash's `kmodules.xyz/prober` `Handler`).
    #[arg(long)]
    pub handler: String,
}

/// Runs the hook; the error names it.
pub fn run(args: &HookArgs) -> std::result::Result<(), Failed> {
    let phase = args.name.phase();
    let handler: Handler = serde_json::from_str(&args.handler)
        .map_err(|e| AgentError::Usage(format!("--handler: {e}")))
        .phase(phase)?;
    let action = handler
        .action()
        .map_err(|(path, why)| AgentError::Usage(format!("{path}: {why}")))
        .phase(phase)?;
    match action {
        Action::Http(req) => http(&req),
        Action::Tcp(addr) => tcp(&addr),
        Action::Exec(_) => Err(AgentError::Usage(
            "exec hooks are run by the controller, never in a Job".into(),
        )),
    }
    .phase(phase)?;
    tracing::info!(hook = phase, "hook succeeded");
    Ok(())
}

/// The HTTP request; a status from 200 to 399 is success.
fn http(req: &HttpRequest<'_>) -> Result<()> {
    // The path may be a credential (a Slack webhook's is): messages name the server only.
    let origin = url::Url::parse(&req.url)
        .map(|u| u.origin().ascii_serialization())
        .unwrap_or_default();
    let what = format!("{} {origin}", req.method);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AgentError::Usage(format!("runtime: {e}")))?;
    let tls = crate::tls::client_config(None, None, false)?;
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(HOOK_TIMEOUT)
        .build()
        .map_err(|e| AgentError::Usage(format!("HTTP client: {e}")))?;
    let method = reqwest::Method::from_bytes(req.method.as_bytes())
        .map_err(|e| AgentError::Usage(e.to_string()))?;
    let mut rb = client.request(method, &req.url);
    if let Some((body, content_type)) = &req.body {
        if !content_type.is_empty() {
            rb = rb.header(reqwest::header::CONTENT_TYPE, *content_type);
        }
        rb = rb.body(body.clone());
    }
    for h in req.headers {
        rb = rb.header(h.name.as_str(), h.value.as_str());
    }
    let (status, text) = rt
        .block_on(async {
            let resp = rb.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.text().await.unwrap_or_default()))
        })
        .map_err(|e| AgentError::Http {
            what: what.clone(),
            reason: e.without_url().to_string(),
        })?;
    if (200..400).contains(&status.as_u16()) {
        return Ok(());
    }
    Err(AgentError::Server {
        what,
        status: status.as_u16(),
        body: short(&text, 300),
    })
}

/// A TCP connection to `addr`; accepted is success.
fn tcp(addr: &str) -> Result<()> {
    let failed = |reason: String| AgentError::Http {
        what: format!("TCP {addr}"),
        reason,
    };
    let addrs: Vec<_> = addr
        .to_socket_addrs()
        .map_err(|e| failed(e.to_string()))?
        .collect();
    let mut last = String::from("the name has no address");
    for a in addrs {
        match TcpStream::connect_timeout(&a, HOOK_TIMEOUT) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(failed(last))
}
