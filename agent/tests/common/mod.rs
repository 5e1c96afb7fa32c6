//! Helpers shared by the agent's integration tests: running `cairn-agent` and `restic` with a
//! given environment, and a small HTTP client for the search server (plain, or HTTPS with basic
//! auth for a secured node).

#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use cairn_api::result::AgentResult;
use cairn_tests::opensearch::OpenSearch;
use serde_json::{Value, json};

pub const PASSWORD: &str = "cairn-test-password";

/// A search server as the tests reach it.
#[derive(Clone)]
pub struct Search {
    pub url: String,
    http: reqwest::blocking::Client,
    auth: Option<(String, String)>,
}

impl Search {
    pub fn of(node: &OpenSearch) -> Result<Self> {
        let mut b = reqwest::blocking::Client::builder();
        if let Some(pem) = node.ca_pem() {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
        }
        Ok(Self {
            url: node.url(),
            http: b.build()?,
            auth: node
                .basic_auth()
                .map(|(u, p)| (u.to_string(), p.to_string())),
        })
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let rb = self.http.request(method, format!("{}{path}", self.url));
        match &self.auth {
            Some((u, p)) => rb.basic_auth(u, Some(p)),
            None => rb,
        }
    }

    pub fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value> {
        let mut rb = self.req(method.clone(), path);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().with_context(|| format!("{method} {path}"))?;
        let status = resp.status();
        let text = resp.text()?;
        ensure!(status.is_success(), "{method} {path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates `index` (one shard, no replica) with `docs` small documents.
    pub fn index_with_docs(&self, index: &str, docs: u32) -> Result<()> {
        self.call(
            reqwest::Method::PUT,
            &format!("/{index}"),
            Some(json!({"settings": {"number_of_shards": 1, "number_of_replicas": 0}})),
        )?;
        let mut body = String::new();
        for i in 0..docs {
            body.push_str(&json!({"index": {"_index": index, "_id": format!("d{i}")}}).to_string());
            body.push('\n');
            body.push_str(&json!({"n": i, "text": format!("doc {i} é")}).to_string());
            body.push('\n');
        }
        if docs > 0 {
            self.bulk(&body)?;
        }
        Ok(())
    }

    /// A `_bulk` request (refreshed) that must take every document.
    pub fn bulk(&self, body: &str) -> Result<()> {
        let v: Value = self
            .req(reqwest::Method::POST, "/_bulk?refresh=true")
            .header("content-type", "application/x-ndjson")
            .body(body.to_string())
            .send()?
            .json()?;
        ensure!(v["errors"] == json!(false), "bulk: {v}");
        Ok(())
    }

    pub fn count(&self, index: &str) -> Result<u64> {
        let v = self.call(reqwest::Method::GET, &format!("/{index}/_count"), None)?;
        v["count"].as_u64().context("count")
    }
}

/// One run of the agent.
pub struct Run {
    pub output: Output,
    pub result: Option<AgentResult>,
}

impl Run {
    pub fn ok(&self) -> bool {
        self.output.status.success()
    }

    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// The failure result: phase and reason.
    pub fn failure(&self) -> Result<(String, String)> {
        match &self.result {
            Some(AgentResult::Failure(f)) => Ok((f.phase.clone(), f.reason.clone())),
            other => anyhow::bail!("no failure result: {other:?}\n{}", self.stderr()),
        }
    }
}

fn suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Runs `cairn-agent` with `RESTIC_PASSWORD` and the given environment on top of a clean one
/// (no `AWS_*`/`CA_CERT_DATA` of whoever runs the tests).
pub fn agent(args: &[String], env: &[(&str, String)], tmp: &Path) -> Result<Run> {
    let log = tmp.join(format!("termination-{}", suffix()));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cairn-agent"));
    cmd.args(args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("CAIRN_TERMINATION_LOG", &log)
        .env("CAIRN_TMP_DIR", tmp)
        .env(
            "CAIRN_LOG",
            "info,rustic_core=warn,rustic_backend=warn,opendal=error",
        );
    for var in [
        "RESTIC_REPOSITORY",
        "CA_CERT_DATA",
        "CAIRN_TARGET_CA_CERT",
        "SSL_CERT_FILE",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().map(|(k, v)| (*k, v.clone())));
    let output = cmd.output().context("run cairn-agent")?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let result = AgentResult::from_termination_message(&text);
    Ok(Run { output, result })
}

/// Runs the standard `restic`; returns its output whatever the exit status.
pub fn restic(repo: &str, args: &[&str], env: &[(&str, String)]) -> Result<Output> {
    Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .env("RESTIC_PASSWORD", PASSWORD)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("cairn-agent-restic-cache"),
        )
        .output()
        .context("run restic (cargo xtask search-testbed installs it)")
}

/// Runs `restic`, which must succeed; returns its stdout.
pub fn restic_ok(repo: &str, args: &[&str], env: &[(&str, String)]) -> Result<String> {
    let out = restic(repo, args, env)?;
    ensure!(
        out.status.success(),
        "restic {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The flags every Job passes to `cmd` (`backup` or `restore`) of `repository` and `url`.
fn job_args(cmd: &str, repository: &str, url: &str) -> Vec<String> {
    vec![
        cmd.into(),
        format!("--repository={repository}"),
        "--region=".into(),
        "--insecure-tls=false".into(),
        "--host=host-0".into(),
        format!("--url={url}"),
        "--insecure-skip-tls-verify=false".into(),
        "--server-name=".into(),
        "--credentials-dir=".into(),
        "--interim-data-dir=".into(),
        "--wait-timeout=30s".into(),
    ]
}

/// `backup` of `include` from `url` into `repository`, with the flags a Job passes.
pub fn backup_args(repository: &str, url: &str, include: &str) -> Vec<String> {
    let mut args = job_args("backup", repository, url);
    args.extend([
        format!("--include={include}"),
        "--exclude=".into(),
        "--tag=session=t".into(),
        // As the catalog passes them: the snapshot's identity and its retention's scope.
        "--namespace=tests".into(),
        "--configuration=agent".into(),
    ]);
    args
}

/// `restore` of the latest snapshot of `host-0` in `repository` to `url`, every index under
/// the prefix `r-`, with the flags a Job passes.
pub fn restore_args(repository: &str, url: &str) -> Vec<String> {
    let mut args = job_args("restore", repository, url);
    args.extend(
        [
            "--include=*",
            "--exclude=",
            "--source-host=",
            "--snapshot=latest",
            "--rename-prefix=r-",
            "--rename-suffix=",
            "--rename-pattern=",
            "--rename-replacement=",
            "--existing=fail",
        ]
        .map(String::from),
    );
    args
}

/// Replaces the flag `--name=...` in `args` (or adds it).
pub fn set_flag(args: &mut Vec<String>, name: &str, value: &str) {
    let prefix = format!("--{name}=");
    args.retain(|a| !a.starts_with(&prefix));
    args.push(format!("{prefix}{value}"));
}
