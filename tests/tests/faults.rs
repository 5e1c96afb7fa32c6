//! Faults lose nothing and hang nothing (issue 16), the agent-level rows of its table: the real
//! `cairn-agent` binary against a real OpenSearch node and a real MinIO, faults injected with
//! real means: the fault-injecting proxy (`cairn_tests::faultproxy`) between the agent and
//! OpenSearch, and MinIO frozen (SIGSTOP) under a running backup. Each case asserts what a user
//! would check (the agent's result, the snapshots as `restic` lists them, the indices and their
//! documents) and prints its row of the table.
//!
//! Needs `cargo xtask search-testbed` (OpenSearch, MinIO, restic) and the agent binary
//! (`cargo build --workspace --bins`; `cargo xtask test` does both).

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cairn_api::result::AgentResult;
use cairn_tests::faultproxy::{Fault, FaultProxy, Plan, Rule};
use cairn_tests::http::call;
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const PASSWORD: &str = "cairn-test-password";

/// A row of the issue's table: the fault, what must happen, what did.
fn row(fault: &str, expected: &str, observed: &str) {
    println!("| {fault} | {expected} | {observed} |");
}

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

/// `index` with two primaries and `docs` documents of mixed content.
fn populate(url: &str, index: &str, docs: u32) -> Result<()> {
    call(
        reqwest::Method::PUT,
        &format!("{url}/{index}"),
        Some(json!({"settings": {"number_of_shards": 2, "number_of_replicas": 0}})),
    )?;
    let mut body = String::new();
    for i in 0..docs {
        let action = json!({"index": {"_index": index, "_id": format!("d-{i}")}});
        let doc = json!({"n": i, "text": format!("doc {i} Zoë 東京 \"q\"\n"), "pad": "x".repeat((i % 7) as usize * 100)});
        body.push_str(&format!("{action}\n{doc}\n"));
    }
    cairn_tests::http::bulk(url, body)
}

/// The documents of `index` (ids and sources, in id order) as one checksum, and their count.
fn checksum(url: &str, index: &str) -> Result<(u64, String)> {
    call(
        reqwest::Method::POST,
        &format!("{url}/{index}/_refresh"),
        None,
    )?;
    let v = call(
        reqwest::Method::POST,
        &format!("{url}/{index}/_search"),
        Some(json!({"size": 10000, "sort": [{"n": "asc"}], "track_total_hits": true})),
    )?;
    let hits = v["hits"]["hits"].as_array().context("hits")?;
    let mut sha = Sha256::new();
    for h in hits {
        sha.update(h["_id"].to_string());
        sha.update(h["_source"].to_string());
    }
    Ok((hits.len() as u64, format!("{:x}", sha.finalize())))
}

/// The agent's flags for `cmd` against `url` and `repo`, as a Job passes them.
fn args(cmd: &str, repo: &str, url: &str, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = vec![
        cmd.into(),
        format!("--repository={repo}"),
        "--region=".into(),
        "--insecure-tls=false".into(),
        "--host=host-0".into(),
        format!("--url={url}"),
        "--insecure-skip-tls-verify=false".into(),
        "--credentials-dir=".into(),
        "--interim-data-dir=".into(),
        "--wait-timeout=60s".into(),
        "--exclude=".into(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

/// Runs a backup that must succeed.
fn backed_up(args: &[String], s3: &S3Server, tmp: &Path) -> Result<()> {
    let (out, result) = agent(args, s3, tmp)?;
    ensure!(
        matches!(result, Some(AgentResult::Backup(_))),
        "backup failed: {result:?}\n{}",
        stderr(&out)
    );
    Ok(())
}

/// A restore of the latest snapshot of every index, with `extra` flags.
fn restore_args(repo: &str, url: &str, extra: &[&str]) -> Vec<String> {
    let all = ["--include=*", "--source-host=", "--snapshot=latest"];
    args("restore", repo, url, &[&all, extra].concat())
}

fn agent_command(args: &[String], s3: &S3Server, tmp: &Path) -> Result<Command> {
    let mut cmd = Command::new(cairn_tests::webhook::workspace_binary("cairn-agent")?);
    cmd.args(args);
    agent_env(&mut cmd, s3, tmp);
    Ok(cmd)
}

/// The agent's environment: the S3 server's credentials, the repository's password, its
/// termination log and scratch directory in `tmp`.
fn agent_env(cmd: &mut Command, s3: &S3Server, tmp: &Path) {
    cmd.envs(s3.env())
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("CAIRN_TERMINATION_LOG", tmp.join("termination"))
        .env("CAIRN_TMP_DIR", tmp)
        .env(
            "CAIRN_LOG",
            "info,rustic_core=warn,rustic_backend=warn,opendal=error",
        )
        .env_remove("RESTIC_REPOSITORY");
}

/// Runs the agent to its end: its output and its result.
fn agent(args: &[String], s3: &S3Server, tmp: &Path) -> Result<(Output, Option<AgentResult>)> {
    let _ = std::fs::remove_file(tmp.join("termination"));
    let out = agent_command(args, s3, tmp)?
        .output()
        .context("run cairn-agent")?;
    let text = std::fs::read_to_string(tmp.join("termination")).unwrap_or_default();
    Ok((out, AgentResult::from_termination_message(&text)))
}

/// After a restore that did not finish: no partly restored `r-*` index is left, and a rerun
/// straight to the server restores `documents`, with the checksum of the source (`before`).
fn clean_then_rerun(
    os: &OpenSearch,
    s3: &S3Server,
    tmp: &Path,
    restore: &mut Vec<String>,
    documents: u64,
    before: &(u64, String),
) -> Result<cairn_api::result::RestoreResult> {
    let indices = call(
        reqwest::Method::GET,
        &format!("{}/_cat/indices?format=json", os.url()),
        None,
    )?;
    let names: Vec<&str> = indices
        .as_array()
        .context("_cat/indices")?
        .iter()
        .filter_map(|i| i["index"].as_str())
        .collect();
    ensure!(
        !names.iter().any(|n| n.starts_with("r-")),
        "partly restored indices are left: {names:?}"
    );
    restore.retain(|a| !a.starts_with("--url="));
    restore.push(format!("--url={}", os.url()));
    let (out, result) = agent(restore, s3, tmp)?;
    let Some(AgentResult::Restore(r)) = result else {
        bail!("the rerun failed: {result:?}\n{}", stderr(&out));
    };
    ensure!(r.documents == documents, "{r:?}");
    ensure!(
        checksum(&os.url(), "r-src")? == *before,
        "the rerun's documents differ"
    );
    Ok(r)
}

fn stderr(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The snapshots `restic` lists in `repo`.
fn restic_snapshots(s3: &S3Server, repo: &str) -> Result<Vec<Value>> {
    let out = Command::new("restic")
        .args(["-r", repo, "snapshots", "--json", "--no-lock"])
        .envs(s3.env())
        .env("RESTIC_PASSWORD", PASSWORD)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("cairn-faults-restic-cache"),
        )
        .output()
        .context("run restic (cargo xtask search-testbed installs it)")?;
    ensure!(
        out.status.success(),
        "restic snapshots: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn summary(proxy: &FaultProxy) -> String {
    proxy
        .injected_all()
        .iter()
        .map(|(class, n)| format!("{n} × {class}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[test]
fn bursts_and_resets_during_backup_reads_and_restore_bulk() -> Result<()> {
    let started = Instant::now();
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/reads", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    const DOCS: u32 = 3_000;
    populate(&os.url(), "src", DOCS)?;
    let before = checksum(&os.url(), "src")?;
    ensure!(before.0 == u64::from(DOCS), "{before:?}");

    // Backup reads: rejections (429 with Retry-After, 503) and resets in bursts on the pages,
    // and 503s on the reads around them (templates, index list, counts).
    let read_faults = [
        Fault::TooManyRequests { retry_after: 1 },
        Fault::Unavailable,
        Fault::Reset,
    ];
    let mut rules: Vec<Rule> = read_faults
        .iter()
        .enumerate()
        .map(|(i, f)| {
            // Two in a row out of every 16 for each class, the classes apart: 3 in 8 pages.
            Rule::new(*f, "/_search")
                .method(reqwest::Method::POST)
                .every(16, 2)
                .after(5 * i as u64 + 1)
        })
        .collect();
    rules.push(
        Rule::new(Fault::Unavailable, "/")
            .method(reqwest::Method::GET)
            .every(4, 1)
            .after(2),
    );
    let proxy = FaultProxy::start(&os.url(), Plan::new(rules))?;
    let backup = args(
        "backup",
        &repo,
        &proxy.url(),
        &["--include=src", "--page-size=100", "--slices=2"],
    );
    let (out, result) = agent(&backup, &s3, tmp.path())?;
    let Some(AgentResult::Backup(b)) = result else {
        bail!("backup failed: {result:?}\n{}", stderr(&out));
    };
    ensure!(b.documents == u64::from(DOCS), "{b:?}");
    for f in read_faults {
        ensure!(
            proxy.injected(f.class()) > 0,
            "no {}: {}",
            f.class(),
            summary(&proxy)
        );
    }
    let read_summary = summary(&proxy);
    let snaps = restic_snapshots(&s3, &repo)?;
    ensure!(snaps.len() == 1, "restic lists {} snapshots", snaps.len());
    ensure!(snaps[0]["id"] == json!(b.snapshot), "{snaps:?}");

    // Restore bulk: the same, and answers lost after the server indexed the batch.
    let bulk_faults = [
        Fault::TooManyRequests { retry_after: 1 },
        Fault::Unavailable,
        Fault::Reset,
        Fault::LostAnswer,
    ];
    let rules = bulk_faults
        .iter()
        .enumerate()
        .map(|(i, f)| Rule::new(*f, "/_bulk").every(20, 2).after(5 * i as u64))
        .collect();
    let proxy = FaultProxy::start(&os.url(), Plan::new(rules))?;
    let restore = restore_args(
        &repo,
        &proxy.url(),
        &["--rename-prefix=r-", "--existing=fail", "--batch-docs=100"],
    );
    let (out, result) = agent(&restore, &s3, tmp.path())?;
    let Some(AgentResult::Restore(r)) = result else {
        bail!("restore failed: {result:?}\n{}", stderr(&out));
    };
    ensure!(r.documents == u64::from(DOCS), "{r:?}");
    for f in bulk_faults {
        ensure!(
            proxy.injected(f.class()) > 0,
            "no {}: {}",
            f.class(),
            summary(&proxy)
        );
    }
    let after = checksum(&os.url(), "r-src")?;
    ensure!(after == before, "restored {after:?}, backed up {before:?}");
    row(
        "429/503 bursts and resets during backup reads and restore bulk",
        "both succeed, counts and checksums match",
        &format!(
            "backup read {} documents through {read_summary}; restore loaded {} through {}; \
             {} documents, checksums equal; {:.0}s",
            b.documents,
            r.documents,
            summary(&proxy),
            after.0,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Sends `signal` to MinIO's process group.
fn signal_minio(s3: &S3Server, signal: libc::c_int) {
    // SAFETY: a plain syscall on our own child's process group.
    unsafe {
        libc::killpg(s3.pid() as libc::pid_t, signal);
    }
}

#[test]
fn minio_stopped_mid_backup() -> Result<()> {
    let started = Instant::now();
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/frozen", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    populate(&os.url(), "src", 3_000)?;
    // Slow pages keep the backup going while MinIO is frozen under it.
    let slow = Rule::new(Fault::Slow(Duration::from_millis(300)), "/_search").every(1, 1);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![slow]))?;
    let backup = args(
        "backup",
        &repo,
        &proxy.url(),
        &["--include=src", "--page-size=50", "--slices=1"],
    );
    let mut child = agent_command(&backup, &s3, tmp.path())?
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Frozen once the agent is reading (its repository is open and locked by then).
    let reading = Instant::now() + Duration::from_secs(60);
    while proxy.forwarded() < 10 || proxy.injected("slow") < 3 {
        ensure!(
            child.try_wait()?.is_none(),
            "the backup ended before it was frozen"
        );
        ensure!(Instant::now() < reading, "the backup never started reading");
        std::thread::sleep(Duration::from_millis(20));
    }
    signal_minio(&s3, libc::SIGSTOP);
    let frozen = Instant::now();
    // The agent must give up by itself within a bound, with a reason.
    let bound = Duration::from_secs(600);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if frozen.elapsed() > bound {
            signal_minio(&s3, libc::SIGCONT);
            let _ = child.kill();
            bail!("the agent still runs {bound:?} after MinIO froze");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let failed_after = frozen.elapsed();
    signal_minio(&s3, libc::SIGCONT);
    // The storage's deadline (120 s for a write), then at most 20 s for the lock.
    ensure!(
        failed_after < Duration::from_secs(200),
        "the agent failed only {failed_after:?} after MinIO froze"
    );
    ensure!(!status.success(), "the backup succeeded with MinIO frozen");
    let text = std::fs::read_to_string(tmp.path().join("termination")).unwrap_or_default();
    let Some(AgentResult::Failure(f)) = AgentResult::from_termination_message(&text) else {
        bail!("no failure result: {text}");
    };
    ensure!(!f.reason.is_empty(), "{f:?}");
    ensure!(
        restic_snapshots(&s3, &repo)?.is_empty(),
        "a snapshot was saved"
    );

    // The next backup neither waits for the failed one's lock nor fails on it.
    drop(proxy);
    let next_started = Instant::now();
    let backup = args("backup", &repo, &os.url(), &["--include=src"]);
    let (out, result) = agent(&backup, &s3, tmp.path())?;
    let Some(AgentResult::Backup(b)) = result else {
        bail!("the next backup failed: {result:?}\n{}", stderr(&out));
    };
    let next = next_started.elapsed();
    ensure!(b.documents == 3_000, "{b:?}");
    ensure!(restic_snapshots(&s3, &repo)?.len() == 1);
    row(
        "MinIO stopped mid-backup",
        "agent fails with the reason; no snapshot; next backup succeeds without waiting for a lock",
        &format!(
            "failed {:.0}s after the freeze in phase {}: {}; no snapshot; next backup in {:.0}s; {:.0}s",
            failed_after.as_secs_f64(),
            f.phase,
            f.reason,
            next.as_secs_f64(),
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

/// Runs `restic` in `dir` with the repository's settings; its stdout.
fn restic(s3: &S3Server, repo: &str, dir: &Path, args: &[&str]) -> Result<String> {
    s3.restic_in(repo, PASSWORD, dir, args)
}

#[test]
fn overwrite_with_a_corrupt_snapshot_touches_nothing() -> Result<()> {
    let started = Instant::now();
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/corrupt", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    populate(&os.url(), "keep", 500)?;
    let before = checksum(&os.url(), "keep")?;
    let backup = args("backup", &repo, &os.url(), &["--include=keep"]);
    let (out, result) = agent(&backup, &s3, tmp.path())?;
    ensure!(
        matches!(result, Some(AgentResult::Backup(_))),
        "backup failed: {result:?}\n{}",
        stderr(&out)
    );
    // The same snapshot with the index's metadata broken, saved again by restic itself (file by
    // file with `restic dump`: `restic restore` cuts files to the sizes their nodes record).
    let files = tmp.path().join("files");
    let listed = restic(&s3, &repo, tmp.path(), &["ls", "latest"])?;
    for path in listed
        .lines()
        .filter(|l| l.ends_with(".json") || l.ends_with(".ndjson"))
    {
        let local = files.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(local.parent().context("a parent")?)?;
        std::fs::write(
            &local,
            restic(&s3, &repo, tmp.path(), &["dump", "latest", path])?,
        )?;
    }
    let meta = files.join("elasticsearch/indices/keep/index.json");
    ensure!(meta.is_file(), "no {}: {listed}", meta.display());
    let good_meta = std::fs::read(&meta)?;
    std::fs::write(&meta, "{\"settings\": ")?;
    restic(
        &s3,
        &repo,
        &files,
        &["backup", "--host", "host-0", "elasticsearch"],
    )?;
    let listed = restic(&s3, &repo, &files, &["ls", "latest"])?;
    ensure!(
        listed.lines().any(|l| l == "/elasticsearch/manifest.json"),
        "restic saved another layout: {listed}"
    );

    let restore = restore_args(&repo, &os.url(), &["--existing=overwrite"]);
    let (out, result) = agent(&restore, &s3, tmp.path())?;
    let Some(AgentResult::Failure(f)) = result else {
        bail!("the restore did not fail: {result:?}\n{}", stderr(&out));
    };
    ensure!(f.reason.contains("index.json"), "{f:?}");
    let after = checksum(&os.url(), "keep")?;
    ensure!(
        after == before,
        "the existing index changed: {after:?}, was {before:?}"
    );

    // Names from the snapshot that the server would read as more than themselves: refused
    // before the first request (none reaches the proxy).
    std::fs::write(&meta, &good_meta)?;
    let mut refused = Vec::new();
    for (file, bad, key) in [
        (
            "elasticsearch/cluster/index_templates.json",
            json!({"_all": {"index_patterns": ["x"]}}),
            "template name \"_all\"",
        ),
        (
            "elasticsearch/indices/keep/index.json",
            json!({"settings": {}, "mappings": {}, "aliases": {"*": {}}}),
            "alias name \"*\"",
        ),
    ] {
        let path = files.join(file);
        let good = std::fs::read(&path)?;
        std::fs::write(&path, bad.to_string())?;
        restic(
            &s3,
            &repo,
            &files,
            &["backup", "--host", "host-0", "elasticsearch"],
        )?;
        std::fs::write(&path, good)?;
        let proxy = FaultProxy::start(&os.url(), Plan::default())?;
        let restore = restore_args(&repo, &proxy.url(), &["--existing=overwrite"]);
        let (out, result) = agent(&restore, &s3, tmp.path())?;
        let Some(AgentResult::Failure(f)) = result else {
            bail!(
                "a restore with a bad name did not fail: {result:?}\n{}",
                stderr(&out)
            );
        };
        ensure!(f.reason.contains(key), "{f:?}");
        ensure!(
            proxy.forwarded() == 0,
            "{} requests reached the server",
            proxy.forwarded()
        );
        refused.push(key);
    }
    ensure!(
        checksum(&os.url(), "keep")? == before,
        "the existing index changed"
    );
    row(
        "a `*` or `_all` name in a snapshot",
        "refused before any request",
        &format!(
            "{} refused, no request sent, the index untouched",
            refused.join(" and ")
        ),
    );
    row(
        "`existing=overwrite` with a corrupt snapshot",
        "the existing index is untouched",
        &format!(
            "restore failed in phase {} ({}); index keeps its {} documents, checksum equal; {:.0}s",
            f.phase,
            f.reason,
            after.0,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

#[test]
fn a_restore_failing_half_way_removes_what_it_created() -> Result<()> {
    let started = Instant::now();
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/half", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    const DOCS: u32 = 2_000;
    populate(&os.url(), "src", DOCS)?;
    populate(&os.url(), "other", 300)?;
    let before = checksum(&os.url(), "src")?;
    let backup = args("backup", &repo, &os.url(), &["--include=src,other"]);
    let (out, result) = agent(&backup, &s3, tmp.path())?;
    ensure!(
        matches!(result, Some(AgentResult::Backup(_))),
        "backup failed: {result:?}\n{}",
        stderr(&out)
    );
    // The server refuses a batch half-way through: no retry mends a 400.
    let refuse = Rule::new(Fault::Refused, "/_bulk").every(1_000, 1).after(6);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![refuse]))?;
    let mut restore = restore_args(
        &repo,
        &proxy.url(),
        &["--rename-prefix=r-", "--existing=fail", "--batch-docs=100"],
    );
    let (out, result) = agent(&restore, &s3, tmp.path())?;
    let Some(AgentResult::Failure(f)) = result else {
        bail!("the restore did not fail: {result:?}\n{}", stderr(&out));
    };
    ensure!(proxy.injected("400") == 1, "{}", summary(&proxy));
    let r = clean_then_rerun(
        &os,
        &s3,
        tmp.path(),
        &mut restore,
        u64::from(DOCS) + 300,
        &before,
    )?;
    row(
        "a restore failing half-way (a batch refused with 400)",
        "the indices it created are deleted; a rerun restores everything",
        &format!(
            "failed in phase {} ({}); no r-* index left; the rerun restored {} documents, checksums equal; {:.0}s",
            f.phase,
            f.reason,
            r.documents,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

#[test]
fn retention_fails_after_the_snapshot_is_saved() -> Result<()> {
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/retention", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    populate(&os.url(), "src", 200)?;
    let backup = args(
        "backup",
        &repo,
        &os.url(),
        &[
            "--include=src",
            "--namespace=faults",
            "--configuration=retention",
            "--keep-last=1",
            "--prune=true",
        ],
    );
    let run = |what: &str| -> Result<cairn_api::result::BackupResult> {
        let (out, result) = agent(&backup, &s3, tmp.path())?;
        match result {
            Some(AgentResult::Backup(b)) if out.status.success() => Ok(b),
            other => bail!("{what}: {other:?}\n{}", stderr(&out)),
        }
    };
    // The first backup's stdout: progress lines (the phase's last one at least), then the
    // result.
    let (out, result) = agent(&backup, &s3, tmp.path())?;
    let Some(AgentResult::Backup(first)) = result else {
        bail!("first backup: {result:?}\n{}", stderr(&out));
    };
    ensure!(first.retention_error.is_none(), "{first:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("stdout is not JSON lines: {stdout}"))?;
    let (result, before) = lines.split_last().context("no stdout")?;
    ensure!(result["kind"] == "backup", "{stdout}");
    // Before the result: the progress lines, then the inventory (one line per snapshot).
    let (inventory, progress): (Vec<&Value>, Vec<&Value>) =
        before.iter().partition(|l| l["kind"] == "snapshot");
    ensure!(Some(inventory.len() as u64) == first.inventory, "{stdout}");
    let last = progress.last().context("no progress line")?;
    ensure!(
        progress
            .iter()
            .all(|l| l["kind"] == "progress" && l["phase"] == "dump")
            && last["done"] == true
            && last["documents"] == 200
            && last["documentsTotal"] == 200
            && last["bytes"].as_u64() > Some(0)
            && last["documentsPerSecond"].is_number()
            && last["bytesPerSecond"].is_number(),
        "{stdout}"
    );

    // The host's restic holds a live lock: the backup may share the repository with it, its
    // retention may not (forget and prune need it alone).
    let (mut held, _) = s3.restic_holding_a_lock(&repo, PASSWORD, None)?;
    let second = run("backup next to restic's lock");
    let second = second.and_then(|b| {
        let why = b.retention_error.clone().unwrap_or_default();
        ensure!(
            why.contains("retention not applied") && why.contains("locked"),
            "{b:?}"
        );
        ensure!(
            b.snapshots_removed == 0 && b.totals_error.is_none(),
            "{b:?}"
        );
        Ok(b)
    });
    if let Some(mut input) = held.stdin.take() {
        use std::io::Write;
        input.write_all(b"a user's own backup\n")?;
    }
    let restic_done = held.wait_with_output()?;
    let second = second?;
    ensure!(
        restic_done.status.success(),
        "restic backup --stdin: {}",
        String::from_utf8_lossy(&restic_done.stderr)
    );
    let ids = |snaps: &[Value]| -> Vec<String> {
        snaps
            .iter()
            .filter(|s| s["hostname"] == "host-0")
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect()
    };
    let listed = ids(&restic_snapshots(&s3, &repo)?);
    ensure!(
        listed.contains(&first.snapshot) && listed.contains(&second.snapshot),
        "restic lists {listed:?}"
    );

    // The next backup applies the retention again: only its own snapshot is left of ours,
    // restic's is untouched.
    let third = run("backup after restic's lock is gone")?;
    ensure!(
        third.retention_error.is_none() && third.snapshots_removed == 2,
        "{third:?}"
    );
    let after = restic_snapshots(&s3, &repo)?;
    ensure!(ids(&after) == [third.snapshot.clone()], "{after:?}");
    ensure!(
        after.iter().any(|s| s["hostname"] == "user-laptop"),
        "{after:?}"
    );
    row(
        "retention fails after the snapshot is saved (restic's live lock)",
        "the snapshot reported, the retention error with it; the next backup applies it",
        &format!(
            "exit 0, snapshot {} kept by restic; retention: {}; next backup removed {}",
            &second.snapshot[..8],
            second.retention_error.as_deref().unwrap_or_default(),
            third.snapshots_removed
        ),
    );
    Ok(())
}

/// The locks `restic` lists in `repo`.
fn restic_locks(s3: &S3Server, repo: &str) -> Result<Vec<String>> {
    let tmp = tempfile::tempdir()?;
    let out = restic(s3, repo, tmp.path(), &["list", "locks", "--no-lock"])?;
    Ok(out.lines().map(str::to_string).collect())
}

#[test]
fn sigterm_mid_backup_releases_the_lock() -> Result<()> {
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/terminated", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    populate(&os.url(), "src", 3_000)?;
    // Slow pages keep the backup reading when the signal comes.
    let slow = Rule::new(Fault::Slow(Duration::from_millis(300)), "/_search").every(1, 1);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![slow]))?;
    let backup = args(
        "backup",
        &repo,
        &proxy.url(),
        &["--include=src", "--page-size=50", "--slices=1"],
    );
    let _ = std::fs::remove_file(tmp.path().join("termination"));
    let mut child = agent_command(&backup, &s3, tmp.path())?
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let reading = Instant::now() + Duration::from_secs(60);
    while proxy.injected("slow") < 3 {
        ensure!(child.try_wait()?.is_none(), "the backup ended too early");
        ensure!(Instant::now() < reading, "the backup never started reading");
        std::thread::sleep(Duration::from_millis(20));
    }
    let locked = restic_locks(&s3, &repo)?;
    ensure!(locked.len() == 1, "locks while reading: {locked:?}");
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: a signal to our own child.
    ensure!(unsafe { libc::kill(pid, libc::SIGTERM) } == 0, "kill");
    let sent = Instant::now();
    // Within a pod's default grace period (30 s), or SIGKILL would end it.
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            bail!("the agent still runs 30 s after SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped = sent.elapsed();
    let out = child.wait_with_output()?;
    let text = std::fs::read_to_string(tmp.path().join("termination")).unwrap_or_default();
    let result = AgentResult::from_termination_message(&text);
    let Some(AgentResult::Failure(f)) = &result else {
        bail!("{result:?}\n{}", stderr(&out));
    };
    ensure!(
        f.phase == "terminated" && f.reason.contains("SIGTERM"),
        "{f:?}"
    );
    ensure!(status.code() == Some(143), "{status:?}");
    let left = restic_locks(&s3, &repo)?;
    ensure!(left.is_empty(), "locks after SIGTERM: {left:?}");
    ensure!(
        restic_snapshots(&s3, &repo)?.is_empty(),
        "a snapshot was saved"
    );
    row(
        "agent SIGTERM mid-backup",
        "stops within the grace period, lock released, result says terminated",
        &format!(
            "exit {:?} after {:.1} s, phase `{}`; locks left: 0; snapshots: 0",
            status.code(),
            stopped.as_secs_f64(),
            f.phase
        ),
    );
    Ok(())
}

/// The node, cairn installed on it (shared by the node cases of this file).
async fn node_env() -> &'static cairn_tests::system::OnNode {
    static ENV: tokio::sync::OnceCell<cairn_tests::system::OnNode> =
        tokio::sync::OnceCell::const_new();
    ENV.get_or_init(|| {
        cairn_tests::system::on_node(cairn_tests::ControlPlane::shared(), "faults", &[])
    })
    .await
}

/// The agent SIGKILLed mid-backup on the node leaves its lock; the next session's agent is told
/// the pod no longer runs, removes the lock and succeeds, its retention (which needs the
/// repository alone) applied.
#[tokio::test(flavor = "multi_thread")]
async fn agent_sigkill_mid_backup_the_next_session_removes_the_dead_lock() -> Result<()> {
    use cairn_tests::forward::Forward;
    use cairn_tests::objects::{
        apply, configuration, failure, finished, phase, running_container, session,
    };
    let env = node_env().await;
    let cp = cairn_tests::ControlPlane::shared();
    let ns = cairn_tests::system::restricted_namespace(cp, "faults").await;
    let s3 = S3Server::start()?;
    s3.create_bucket("killed")?;
    let repo = s3.restic_repository("killed");
    let os = OpenSearch::shared();
    // reqwest's blocking client runs a runtime of its own: not on this one's threads.
    tokio::task::block_in_place(|| populate(&os.url(), &format!("killed-{ns}"), 500))?;
    // The first read of the server is slow: the agent is mid-backup, its lock held, when killed.
    let slow = Rule::new(Fault::Slow(Duration::from_secs(30)), "/_search").every(1000, 1);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![slow]))?;
    let proxy_port: u16 = proxy.url().rsplit(':').next().context("port")?.parse()?;
    let search = Forward::start(env.node.host_ip(), proxy_port)?;
    let storage = Forward::start(env.node.host_ip(), s3.port())?;
    let objects = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": PASSWORD, "AWS_ACCESS_KEY_ID": s3.access_key(),
                              "AWS_SECRET_ACCESS_KEY": s3.secret_key()}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"url": search.http_url()}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns},
               "spec": {"backend": {"storageSecretName": "repo-secret",
                        "s3": {"endpoint": storage.http_url(), "bucket": "killed", "region": s3.region()}}}}),
        configuration(
            &ns,
            "cfg",
            json!({"backupHistoryLimit": 10,
            "retentionPolicy": {"name": "keep", "keepLast": 1, "prune": true}}),
        ),
    ];
    apply(cp, &objects);
    cairn_tests::objects::ready(cp, &ns, "cfg").await;

    apply(cp, &[session(&ns, "killed", "cfg")]);
    let (_, container_id) = running_container(cp, &ns, "killed").await;
    let container_id = container_id
        .strip_prefix("containerd://")
        .context("a containerd:// id")?
        .to_string();
    let reading = Instant::now() + Duration::from_secs(120);
    while proxy.injected("slow") < 1 || restic_locks(&s3, &repo)?.is_empty() {
        ensure!(Instant::now() < reading, "the agent never locked and read");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pid = env.node.task_pid(&container_id)?;
    // SAFETY: a signal to the agent's process, seen from the host.
    ensure!(
        unsafe { libc::kill(libc::pid_t::try_from(pid)?, libc::SIGKILL) } == 0,
        "kill"
    );
    let killed = finished(cp, &ns, "killed", Duration::from_secs(120)).await;
    ensure!(phase(&killed) == "Failed", "{:?}", killed.status);
    let dead = restic_locks(&s3, &repo)?;
    ensure!(dead.len() == 1, "the killed agent's lock: {dead:?}");

    apply(cp, &[session(&ns, "after", "cfg")]);
    let after = finished(cp, &ns, "after", Duration::from_secs(180)).await;
    let status = after.status.clone().unwrap_or_default();
    ensure!(phase(&after) == "Succeeded", "{:?}", failure(&after));
    ensure!(
        !status
            .conditions
            .iter()
            .any(|c| c.type_ == "RetentionFailed"),
        "{:?}",
        status.conditions
    );
    let left = restic_locks(&s3, &repo)?;
    ensure!(left.is_empty(), "locks after the next session: {left:?}");
    let snapshot = status.snapshot.context("snapshot")?.id;
    let listed = restic_snapshots(&s3, &repo)?;
    ensure!(
        listed.iter().any(|s| s["id"] == snapshot.as_str()),
        "{listed:?}"
    );
    row(
        "agent SIGKILL mid-backup (on the node)",
        "the next session removes the dead lock and succeeds",
        &format!(
            "killed: {}; next: Succeeded, snapshot {}, retention applied, locks left 0",
            failure(&killed).0,
            &snapshot[..8]
        ),
    );
    Ok(())
}

#[test]
fn sigterm_mid_restore_removes_what_it_created() -> Result<()> {
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/term-restore", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    const DOCS: u32 = 2_000;
    populate(&os.url(), "src", DOCS)?;
    let before = checksum(&os.url(), "src")?;
    backed_up(
        &args("backup", &repo, &os.url(), &["--include=src"]),
        &s3,
        tmp.path(),
    )?;
    // Slow batches: the restore is loading when the signal comes.
    let slow = Rule::new(Fault::Slow(Duration::from_millis(500)), "/_bulk").every(1, 1);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![slow]))?;
    let mut restore = restore_args(
        &repo,
        &proxy.url(),
        &["--rename-prefix=r-", "--existing=fail", "--batch-docs=100"],
    );
    let _ = std::fs::remove_file(tmp.path().join("termination"));
    let mut child = agent_command(&restore, &s3, tmp.path())?
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let loading = Instant::now() + Duration::from_secs(60);
    while proxy.injected("slow") < 3 {
        ensure!(child.try_wait()?.is_none(), "the restore ended too early");
        ensure!(
            Instant::now() < loading,
            "the restore never started loading"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    ensure!(
        restic_locks(&s3, &repo)?.len() == 1,
        "a restore holds a lock"
    );
    let pid = libc::pid_t::try_from(child.id())?;
    // SAFETY: a signal to our own child.
    ensure!(unsafe { libc::kill(pid, libc::SIGTERM) } == 0, "kill");
    let sent = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!("the agent still runs 30 s after SIGTERM: {}", stderr(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stopped = sent.elapsed();
    let out = child.wait_with_output()?;
    let text = std::fs::read_to_string(tmp.path().join("termination")).unwrap_or_default();
    let result = AgentResult::from_termination_message(&text);
    ensure!(
        matches!(&result, Some(AgentResult::Failure(f)) if f.phase == "terminated"),
        "{result:?}\n{}",
        stderr(&out)
    );
    ensure!(status.code() == Some(143), "{status:?}");
    ensure!(restic_locks(&s3, &repo)?.is_empty(), "the lock is left");
    let r = clean_then_rerun(&os, &s3, tmp.path(), &mut restore, u64::from(DOCS), &before)?;
    row(
        "agent SIGTERM mid-restore",
        "partial indices cleaned up, the lock released; a rerun restores everything",
        &format!(
            "exit 143 after {:.1} s; no r-* index, no lock left; the rerun restored {} documents, checksums equal",
            stopped.as_secs_f64(),
            r.documents
        ),
    );
    Ok(())
}

// ---- A failed restore's indices left closed and labelled (`--on-failure=close`), and a
// ---- restore's progress lines (issue 16, items 4 and 6).

/// The `r-*` indices and their state (`open` or `close`), as `_cat/indices` lists them.
fn restored_indices(url: &str) -> Result<Vec<(String, String)>> {
    let indices = call(
        reqwest::Method::GET,
        &format!("{url}/_cat/indices/r-*?format=json&expand_wildcards=all"),
        None,
    )?;
    let mut out: Vec<(String, String)> = indices
        .as_array()
        .context("_cat/indices")?
        .iter()
        .map(|i| {
            (
                i["index"].as_str().unwrap_or_default().to_string(),
                i["status"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    out.sort();
    Ok(out)
}

/// A flat setting of `index` (closed indices too).
fn setting(url: &str, index: &str, key: &str) -> Result<Value> {
    let v = call(
        reqwest::Method::GET,
        &format!("{url}/{index}/_settings?flat_settings=true&expand_wildcards=all"),
        None,
    )?;
    Ok(v[index]["settings"][key].clone())
}

#[test]
fn a_restore_failing_half_way_with_close_leaves_its_indices_closed_and_labelled() -> Result<()> {
    let started = Instant::now();
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/half-close", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    const DOCS: u32 = 2_000;
    populate(&os.url(), "src", DOCS)?;
    populate(&os.url(), "other", 300)?;
    // Settings and a `_meta` of its own, to see them back on the closed index.
    call(
        reqwest::Method::PUT,
        &format!("{}/src/_settings", os.url()),
        Some(json!({"index": {"refresh_interval": "7s"}})),
    )?;
    call(
        reqwest::Method::PUT,
        &format!("{}/src/_mapping", os.url()),
        Some(json!({"_meta": {"owner": "team-a"}})),
    )?;
    let before = checksum(&os.url(), "src")?;
    let (out, result) = agent(
        &args("backup", &repo, &os.url(), &["--include=src,other"]),
        &s3,
        tmp.path(),
    )?;
    let Some(AgentResult::Backup(b)) = result else {
        bail!("backup failed: {result:?}\n{}", stderr(&out));
    };
    // The server refuses a batch half-way through: no retry mends a 400.
    let refuse = Rule::new(Fault::Refused, "/_bulk").every(1_000, 1).after(6);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![refuse]))?;
    let mut restore = restore_args(
        &repo,
        &proxy.url(),
        &[
            "--rename-prefix=r-",
            "--existing=fail",
            "--batch-docs=100",
            "--on-failure=close",
        ],
    );
    let (out, result) = agent(&restore, &s3, tmp.path())?;
    let Some(AgentResult::Failure(f)) = result else {
        bail!("the restore did not fail: {result:?}\n{}", stderr(&out));
    };
    ensure!(proxy.injected("400") == 1, "{}", summary(&proxy));
    let left = restored_indices(&os.url())?;
    ensure!(
        left.iter().any(|(n, _)| n == "r-src") && left.iter().all(|(_, s)| s == "close"),
        "the created indices are not all left closed: {left:?}\n{}",
        stderr(&out)
    );
    for (index, _) in &left {
        let refresh = setting(&os.url(), index, "index.refresh_interval")?;
        ensure!(
            refresh != json!("-1"),
            "{index}: refresh_interval {refresh}"
        );
        let mapping = call(
            reqwest::Method::GET,
            &format!("{}/{index}/_mapping?expand_wildcards=all", os.url()),
            None,
        )?;
        let label = &mapping[index.as_str()]["mappings"]["_meta"]["cairn.dev/restore"];
        ensure!(
            label["snapshot"] == json!(b.snapshot) && label["state"] == json!("failed"),
            "{index}: no label naming the snapshot: {mapping}"
        );
    }
    let refresh = setting(&os.url(), "r-src", "index.refresh_interval")?;
    ensure!(refresh == json!("7s"), "r-src: refresh_interval {refresh}");
    let mapping = call(
        reqwest::Method::GET,
        &format!("{}/r-src/_mapping?expand_wildcards=all", os.url()),
        None,
    )?;
    ensure!(
        mapping["r-src"]["mappings"]["_meta"]["owner"] == json!("team-a"),
        "r-src lost its own _meta: {mapping}"
    );
    // A rerun with the default (delete) replaces what the failed one left.
    restore.retain(|a| !a.starts_with("--url=") && !a.starts_with("--on-failure="));
    restore.retain(|a| !a.starts_with("--existing="));
    restore.push(format!("--url={}", os.url()));
    restore.push("--existing=overwrite".into());
    let (out, result) = agent(&restore, &s3, tmp.path())?;
    let Some(AgentResult::Restore(r)) = result else {
        bail!("the rerun failed: {result:?}\n{}", stderr(&out));
    };
    ensure!(r.documents == u64::from(DOCS) + 300, "{r:?}");
    ensure!(
        checksum(&os.url(), "r-src")? == before,
        "the rerun's documents differ"
    );
    let open = restored_indices(&os.url())?;
    ensure!(open.iter().all(|(_, s)| s == "open"), "{open:?}");
    row(
        "a restore failing half-way with `onFailure=close` (a batch refused with 400)",
        "the indices it created are left closed, labelled, their settings back; a rerun restores everything",
        &format!(
            "failed in phase {}; {} left closed with the label naming the snapshot, refresh_interval 7s back, own _meta kept; the rerun (existing=overwrite) restored {} documents, checksums equal; {:.0}s",
            f.phase,
            left.iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            r.documents,
            started.elapsed().as_secs_f64()
        ),
    );
    Ok(())
}

#[test]
fn a_restore_writes_progress_lines() -> Result<()> {
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let repo = format!("{}/progress", s3.restic_repository("faults"));
    let tmp = tempfile::tempdir()?;
    const DOCS: u64 = 2_000;
    populate(&os.url(), "src", DOCS as u32)?;
    backed_up(
        &args("backup", &repo, &os.url(), &["--include=src"]),
        &s3,
        tmp.path(),
    )?;
    // Slow batches, one at a time: the load outlasts a progress interval (10 s).
    let slow = Rule::new(Fault::Slow(Duration::from_millis(400)), "/_bulk").every(1, 1);
    let proxy = FaultProxy::start(&os.url(), Plan::new(vec![slow]))?;
    let restore = restore_args(
        &repo,
        &proxy.url(),
        &["--rename-prefix=r-", "--batch-docs=50", "--workers=1"],
    );
    let (out, result) = agent(&restore, &s3, tmp.path())?;
    let Some(AgentResult::Restore(r)) = result else {
        bail!("the restore failed: {result:?}\n{}", stderr(&out));
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("stdout is not JSON lines: {stdout}"))?;
    let progress: Vec<&Value> = lines
        .iter()
        .filter(|l| l["kind"] == json!("progress"))
        .collect();
    ensure!(
        lines.last().is_some_and(|l| l["kind"] == json!("restore")),
        "the last line is not the result: {stdout}"
    );
    ensure!(
        progress
            .iter()
            .all(|p| p["phase"] == json!("restore") && p["documentsTotal"] == json!(DOCS)),
        "{stdout}"
    );
    let during = progress
        .iter()
        .find(|p| p["done"] == json!(false))
        .with_context(|| format!("no progress line while loading: {stdout}"))?;
    let docs = during["documents"].as_u64().unwrap_or(0);
    ensure!(
        docs > 0 && docs < DOCS && during["documentsPerSecond"].as_f64() > Some(0.0),
        "{during}"
    );
    let last = progress.last().context("no progress line")?;
    ensure!(
        last["done"] == json!(true)
            && last["documents"] == json!(DOCS)
            && last["bytes"].as_u64() > Some(0),
        "{last}"
    );
    row(
        "a restore's stdout (slow `_bulk`)",
        "progress lines: phase, documents done and total, bytes, rate; the result last",
        &format!(
            "{} progress lines, e.g. {} of {} documents at {:.0}/s while loading, the last `done` with {} documents and {} bytes; then the result ({} documents)",
            progress.len(),
            docs,
            DOCS,
            during["documentsPerSecond"].as_f64().unwrap_or(0.0),
            last["documents"],
            last["bytes"],
            r.documents
        ),
    );
    Ok(())
}

// Memory is bounded by bytes (issue 16, item 2): the agent's peak RSS, as the kernel counts it,
// for documents of 1 KB, 100 KB and 5 MB.

/// The agent's peak RSS may not exceed this, whatever the size of the documents.
const PEAK_RSS_BUDGET: u64 = 256 << 20;

/// An agent run as the kernel measured it.
struct Measured {
    result: Option<AgentResult>,
    /// `wait4`'s `ru_maxrss` of the agent, in bytes.
    peak: u64,
    log: std::path::PathBuf,
}

impl Measured {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Runs the agent to its end as [`agent`] does, from `cairn-peak-rss`: a small process of its
/// own as the agent's parent, since a child counts what its parent held at fork in its peak
/// and this process holds the other tests' memory too (the CI run saw 147 MiB).
fn agent_measured(args: &[String], s3: &S3Server, tmp: &Path) -> Result<Measured> {
    let _ = std::fs::remove_file(tmp.join("termination"));
    let log = tmp.join(format!("{}.log", args[0]));
    let peak_file = tmp.join("peak-rss");
    let _ = std::fs::remove_file(&peak_file);
    let mut cmd = Command::new(cairn_tests::webhook::workspace_binary("cairn-peak-rss")?);
    cmd.arg(&peak_file)
        .arg(cairn_tests::webhook::workspace_binary("cairn-agent")?)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    agent_env(&mut cmd, s3, tmp);
    cmd.status().context("run cairn-peak-rss")?;
    let peak = std::fs::read_to_string(&peak_file).context("cairn-peak-rss wrote no peak")?;
    let text = std::fs::read_to_string(tmp.join("termination")).unwrap_or_default();
    Ok(Measured {
        result: AgentResult::from_termination_message(&text),
        peak: peak.trim().parse()?,
        log,
    })
}

/// `docs` documents of `size` bytes of text in `index` (two primaries; `n` numbers them, the
/// text is not indexed), cut from a pseudo-random pool so that they differ, in `_bulk`
/// requests of about 16 MB (the server takes 100 MB at most).
fn populate_sized(url: &str, index: &str, docs: u32, size: usize) -> Result<()> {
    call(
        reqwest::Method::PUT,
        &format!("{url}/{index}"),
        Some(json!({
            "settings": {"number_of_shards": 2, "number_of_replicas": 0},
            "mappings": {"dynamic": false, "properties": {"n": {"type": "long"}}},
        })),
    )?;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .";
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let pool: Vec<u8> = (0..size + (1 << 20))
        .map(|_| {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ALPHABET[(seed >> 58) as usize]
        })
        .collect();
    let pool = std::str::from_utf8(&pool)?;
    let mut body = String::new();
    for i in 0..docs {
        let at = (i as usize * 7_919) % (1 << 20);
        let action = json!({"index": {"_index": index, "_id": format!("d-{i}")}});
        let doc = json!({"n": i, "text": &pool[at..at + size]});
        body.push_str(&format!("{action}\n{doc}\n"));
        if body.len() >= 16 << 20 || i + 1 == docs {
            let resp: Value = http()
                .post(format!("{url}/_bulk"))
                .timeout(Duration::from_secs(120))
                .header("content-type", "application/x-ndjson")
                .body(std::mem::take(&mut body))
                .send()?
                .json()?;
            ensure!(resp["errors"] == json!(false), "bulk into {index}: {resp}");
        }
    }
    Ok(())
}

/// Backs up `index` and restores it as `r-<index>` with the agent's `extra` backup flags:
/// the documents (the restored ones' count and checksum equal to the source's) and both runs.
fn round_trip_measured(
    os: &OpenSearch,
    s3: &S3Server,
    tmp: &Path,
    index: &str,
    extra: &[&str],
) -> Result<(u64, Measured, Measured)> {
    let repo = format!("{}/memory-{index}", s3.restic_repository("faults"));
    let before = checksum(&os.url(), index)?;
    let include = format!("--include={index}");
    let mut flags = vec![include.as_str()];
    flags.extend(extra);
    let backup = agent_measured(&args("backup", &repo, &os.url(), &flags), s3, tmp)?;
    let Some(AgentResult::Backup(b)) = &backup.result else {
        bail!("backup of {index} failed\n{}", backup.log_tail());
    };
    ensure!(b.documents == before.0, "{b:?}");
    let restore_flags = [include.as_str(), "--snapshot=latest", "--rename-prefix=r-"];
    let restore = agent_measured(&args("restore", &repo, &os.url(), &restore_flags), s3, tmp)?;
    let Some(AgentResult::Restore(r)) = &restore.result else {
        bail!("restore of {index} failed\n{}", restore.log_tail());
    };
    let after = checksum(&os.url(), &format!("r-{index}"))?;
    ensure!(
        after == before && r.documents == before.0,
        "{index}: restored {after:?}, backed up {before:?}"
    );
    for (run, m) in [("backup", &backup), ("restore", &restore)] {
        ensure!(
            m.peak <= PEAK_RSS_BUDGET,
            "{index}: the agent's {run} peaked at {} MiB (budget {} MiB)",
            m.peak >> 20,
            PEAK_RSS_BUDGET >> 20
        );
    }
    Ok((before.0, backup, restore))
}

#[test]
fn large_documents_round_trip_within_the_memory_budget() -> Result<()> {
    // Whole answers of 100 MB for `checksum`: more heap than the default.
    let os = OpenSearch::start_with(cairn_tests::opensearch::Options {
        heap_mib: 1536,
        ..Default::default()
    })?;
    let s3 = S3Server::start()?;
    s3.create_bucket("faults")?;
    let tmp = tempfile::tempdir()?;
    // The 100 KB documents read by 4 slices of 250-document pages; the others with the
    // defaults (one slice, 5,000-document pages at most).
    let cases: [(&str, &str, u32, usize, &[&str]); 3] = [
        ("1 KB", "m-1k", 10_000, 1_000, &[]),
        (
            "100 KB",
            "m-100k",
            1_000,
            100_000,
            &["--slices=4", "--page-size=250"],
        ),
        ("5 MB", "m-5m", 20, 5_000_000, &[]),
    ];
    for (label, index, docs, size, extra) in cases {
        let started = Instant::now();
        populate_sized(&os.url(), index, docs, size)?;
        let (count, backup, restore) = round_trip_measured(&os, &s3, tmp.path(), index, extra)?;
        row(
            &format!("{label} documents"),
            "round trip exact; agent peak RSS ≤ 256 MiB (the kernel's `wait4` maxrss)",
            &format!(
                "{count} documents ({} MB), checksums equal; peak RSS backup {} MiB, restore {} \
                 MiB; {:.0}s",
                count * size as u64 / 1_000_000,
                backup.peak >> 20,
                restore.peak >> 20,
                started.elapsed().as_secs_f64()
            ),
        );
        for i in [index.to_string(), format!("r-{index}")] {
            call(reqwest::Method::DELETE, &format!("{}/{i}", os.url()), None)?;
        }
    }
    Ok(())
}

// ---- The controller's rows: failover, an API server restart and a webhook outage. ----

/// A controller standing by for the node's sessions; once it leads, it leads for the rest of
/// this test binary (the node cases share the leader it replaces).
fn node_standby(
    cp: &'static cairn_tests::ControlPlane,
) -> Result<&'static cairn_tests::controller::Controller> {
    static STANDBY: std::sync::OnceLock<cairn_tests::controller::Controller> =
        std::sync::OnceLock::new();
    if let Some(c) = STANDBY.get() {
        return Ok(c);
    }
    let c = cairn_tests::controller::Controller::start_with(
        cp,
        "cairn-system",
        "faults-standby",
        15,
        cairn_tests::image::CAIRN_IMAGE,
        &[],
    )?;
    Ok(STANDBY.get_or_init(|| c))
}

/// The fake agent's Task (running `args`) and `fake_fixture`'s objects in `ns`, with `extra`
/// configuration fields; waits until the configuration is Ready.
async fn fake_configuration(cp: &cairn_tests::ControlPlane, ns: &str, args: &[&str], extra: Value) {
    use cairn_tests::objects::{apply, fake_fixture, fake_task, ready};
    let task = format!("fake-{ns}");
    let mut objects = fake_task(&task, args);
    objects.extend(fake_fixture(ns, &task, extra));
    apply(cp, &objects);
    ready(cp, ns, "cfg").await;
}

/// A configuration due every minute, its missed slots run within two minutes.
fn every_minute() -> Value {
    json!({"schedule": "* * * * *", "startingDeadlineSeconds": 120, "backupHistoryLimit": 10})
}

/// Waits until `at` (Unix seconds).
async fn sleep_until_unix(at: i64) {
    let now = cairn_tests::slots::unix_now().as_secs_f64();
    tokio::time::sleep(Duration::from_secs_f64((at as f64 - now).max(0.0))).await;
}

/// The next slot at least `lead` ahead.
async fn a_slot_at_least(lead: Duration) -> i64 {
    use cairn_tests::slots::{next_slot, until_next_minute};
    if until_next_minute() < lead {
        tokio::time::sleep(until_next_minute() + Duration::from_secs(1)).await;
    }
    next_slot()
}

/// Waits (up to `timeout`) for the session of `cfg` for `slot`, then for the next slot's: by
/// then the slot is behind the controller. Exactly one session was made for `slot`; returns
/// how long after the slot it was created, in seconds.
async fn one_session_for(
    cp: &cairn_tests::ControlPlane,
    ns: &str,
    slot: i64,
    timeout: Duration,
) -> Result<i64> {
    use cairn_tests::slots::{runs_of_slot, wait_for_next_slot, wait_for_session};
    let s = wait_for_session(cp, ns, &format!("cfg-{slot}"), timeout).await;
    let created = s.metadata.creation_timestamp.context("created")?.0;
    wait_for_next_slot(cp, ns, "cfg", slot).await;
    let runs = runs_of_slot(cp, ns, "cfg", slot).await;
    ensure!(runs == 1, "sessions for the slot: {runs}");
    Ok(created.as_second() - slot)
}

/// The leader killed while a session's Pod runs on the node: the standby takes the lease and
/// finishes the session from the Job it finds; no second Job is made.
#[tokio::test(flavor = "multi_thread")]
async fn controller_leader_killed_mid_session_the_new_leader_completes_it() -> Result<()> {
    use cairn_tests::objects::{apply, finished, phase, running_container, session};
    let env = node_env().await;
    let cp = cairn_tests::ControlPlane::shared();
    let ns = cairn_tests::system::restricted_namespace(cp, "faults").await;
    let snapshot = "5e".repeat(32);
    let result = json!({"kind": "backup", "snapshot": snapshot, "time": "2026-12-05T10:00:00Z",
        "host": "host-0", "indices": 1, "documents": 7, "totalBytes": 70, "addedBytes": 70,
        "durationSeconds": 1.0, "snapshotsKept": 1, "snapshotsRemoved": 0,
        "repository": {"snapshotCount": 1, "sizeBytes": 70, "integrity": true}})
    .to_string();
    fake_configuration(cp, &ns, &["--result", &result, "--sleep", "20"], json!({})).await;
    let standby = node_standby(cp)?;
    cairn_tests::wait_for(Duration::from_secs(60), "the standby ready", || async {
        (standby.status("/readyz").ok()? == 200).then_some(())
    })
    .await;
    ensure!(!standby.is_leader(), "the standby leads already");
    apply(cp, &[session(&ns, "mid", "cfg")]);
    running_container(cp, &ns, "mid").await;
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = kube::Api::namespaced(cp.client(), &ns);
    // The session's Jobs (the Repository's inventory Job is another).
    let of_session = kube::api::ListParams::default().labels("cairn.dev/session=mid");
    let before = jobs.list(&of_session).await?.items;
    ensure!(before.len() == 1, "jobs before: {}", before.len());
    env.controller.kill();
    let killed = Instant::now();
    standby.wait_leader(Duration::from_secs(60))?;
    let took_over = killed.elapsed();
    let s = finished(cp, &ns, "mid", Duration::from_secs(120)).await;
    let status = s.status.clone().unwrap_or_default();
    ensure!(phase(&s) == "Succeeded", "{:?}", status.conditions);
    ensure!(
        status.snapshot.map(|s| s.id) == Some(snapshot.clone()),
        "snapshot"
    );
    let after = jobs.list(&of_session).await?.items;
    ensure!(
        after.len() == 1 && after[0].metadata.uid == before[0].metadata.uid,
        "jobs after: {:?}",
        after.iter().map(|j| &j.metadata.uid).collect::<Vec<_>>()
    );
    row(
        "controller leader killed mid-session (on the node)",
        "the session completes under the new leader, one Job",
        &format!(
            "standby led {:.0} s after the kill (15 s lease); session Succeeded with its snapshot; 1 Job, the same",
            took_over.as_secs_f64()
        ),
    );
    Ok(())
}

/// kube-apiserver killed 3 s before a slot and started again on the same etcd after it, with two
/// controllers as the install runs them: the slot's session is made once, when the server is
/// back. The leader (a 30 s lease, renewed every 10 s, given up after 20 s without renewal) may
/// ride the restart out, or step down when a renew cannot complete within its deadline (as
/// client-go's leader election does; the process then exits and its Deployment restarts it),
/// and the standby leads the next slot: either way one session for the slot. A control plane of
/// its own: the restart would cut off every other case.
#[tokio::test(flavor = "multi_thread")]
async fn api_server_restarted_across_a_slot_leaves_one_session() -> Result<()> {
    let cp: &'static cairn_tests::ControlPlane =
        Box::leak(Box::new(cairn_tests::ControlPlane::start()?));
    cairn_tests::system::install(cp).await;
    let ns = cp.new_namespace().await?;
    use cairn_tests::controller::Controller;
    let controller = Controller::start(cp, "cairn-system", "restart-a", 30)?;
    let _dump = LogOnPanic(&controller);
    controller.wait_leader(Duration::from_secs(20))?;
    let standby = Controller::start(cp, "cairn-system", "restart-b", 30)?;
    let _dump_standby = LogOnPanic(&standby);
    fake_configuration(cp, &ns, &["--sleep", "600"], every_minute()).await;
    let slot = a_slot_at_least(Duration::from_secs(8)).await;
    sleep_until_unix(slot - 3).await;
    cp.stop_apiserver();
    sleep_until_unix(slot + 2).await;
    let restart = tokio::task::block_in_place(|| cp.start_apiserver())?;
    eprintln!("kube-apiserver ready again after {restart:?}");
    let created = one_session_for(cp, &ns, slot, Duration::from_secs(60)).await?;
    let leader = if controller.is_leader() {
        "the leader kept the lease"
    } else {
        "the leader stepped down (a renew could not complete in time) and the standby led the next slot"
    };
    row(
        "API server restarted across a slot (two controllers)",
        "exactly one session for the slot",
        &format!(
            "down from 3 s before the slot, ready again {:.0} s after it; its session created {created} s after the slot; 1 session for the slot; {leader}",
            2.0 + restart.as_secs_f64()
        ),
    );
    Ok(())
}

/// The webhook frozen (SIGSTOP) from 10 s before a slot to 20 s after it: a user's write is
/// refused, and so is the controller's create of the slot's session; thawed, the user's write
/// goes through and the session is made, within `startingDeadlineSeconds`, once. Thirty
/// seconds rather than a minute: it spans the slot and three of the controller's refused
/// attempts (each waits out the webhook's 5 s timeout, then backs off); a minute would only add
/// two more attempts and a minute to the suite. A control plane of its own: the outage would
/// refuse the other cases' writes.
#[tokio::test(flavor = "multi_thread")]
async fn webhook_unavailable_across_a_slot_refuses_writes_and_loses_nothing() -> Result<()> {
    use cairn_tests::objects::configuration;
    let cp: &'static cairn_tests::ControlPlane =
        Box::leak(Box::new(cairn_tests::ControlPlane::start()?));
    let (webhook, controller) = cairn_tests::system::cairn_system(cp, "webhook-outage").await;
    let ns = cp.new_namespace().await?;
    fake_configuration(cp, &ns, &["--sleep", "600"], every_minute()).await;
    let slot = a_slot_at_least(Duration::from_secs(15)).await;
    sleep_until_unix(slot - 10).await;
    let frozen = cairn_tests::process::Frozen::new(webhook.pid());
    let mut late = configuration(&ns, "late", json!({}));
    late["spec"]["task"] = json!({"name": format!("fake-{ns}")});
    let refused = cp.apply_objects(std::slice::from_ref(&late));
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.contains("failed calling webhook")),
        "a write while the webhook is down: {refused:?}"
    );
    sleep_until_unix(slot + 20).await;
    // The controller's create of the slot's session was refused too (its log says so).
    let log = std::fs::read_to_string(controller.log_path())?;
    ensure!(
        log.contains("reconcile failed") && log.contains("failed calling webhook"),
        "{}",
        controller.log_tail(20)
    );
    drop(frozen);
    cp.apply_objects(&[late])
        .map_err(|e| anyhow::anyhow!("the write after the outage: {e}"))?;
    let created = one_session_for(cp, &ns, slot, Duration::from_secs(120)).await?;
    ensure!(created <= 120, "created {created} s after the slot");
    row(
        "webhook unavailable (frozen 30 s across a slot)",
        "writes refused, nothing lost; the slot's session is created once it is back, within `startingDeadlineSeconds`",
        &format!(
            "a user's write and the controller's create refused; after the thaw the write went through and the slot's session was created {created} s after the slot (deadline 120 s), once"
        ),
    );
    Ok(())
}

/// Prints the controller's log tail when the case fails.
struct LogOnPanic<'a>(&'a cairn_tests::controller::Controller);

impl Drop for LogOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("controller log:\n{}", self.0.log_tail(80));
        }
    }
}
