//! The agent against a real OpenSearch node, a real S3 server (MinIO) and the standard `restic`:
//! backup, what restic sees, restore with renaming, and the failures that must not lose data.
//! Needs `cargo xtask search-testbed`.

use std::path::Path;
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};
use cairn_api::result::AgentResult;
use cairn_tests::http::call;
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use serde_json::{Value, json};

const PASSWORD: &str = "cairn-test-password";

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::new()
}

fn bulk(url: &str, lines: &[Value]) -> Result<()> {
    let mut body = String::new();
    for l in lines {
        body.push_str(&l.to_string());
        body.push('\n');
    }
    cairn_tests::http::bulk(url, body)
}

/// Tricky content: unicode, a large document, nested and object fields, routing, aliases with
/// filters, several primaries, composable and legacy templates, an empty index, a dot-index.
fn populate(url: &str) -> Result<()> {
    use reqwest::Method;
    call(
        Method::PUT,
        &format!("{url}/_component_template/comp-base"),
        Some(json!({
        "template": {"settings": {"index.number_of_shards": 2}}})),
    )?;
    call(
        Method::PUT,
        &format!("{url}/_index_template/tmpl-logs"),
        Some(json!({
        "index_patterns": ["logs-*"], "composed_of": ["comp-base"], "priority": 10,
        "template": {"mappings": {"properties": {"level": {"type": "keyword"}}}}})),
    )?;
    call(
        Method::PUT,
        &format!("{url}/_template/legacy-old"),
        Some(json!({
        "index_patterns": ["old-*"], "order": 1, "settings": {"number_of_shards": 1}})),
    )?;
    call(
        Method::PUT,
        &format!("{url}/orders"),
        Some(json!({
        "settings": {"number_of_shards": 3, "number_of_replicas": 0, "refresh_interval": "7s"},
        "mappings": {"properties": {
            "items": {"type": "nested", "properties": {"sku": {"type": "keyword"}, "qty": {"type": "integer"}}},
            "customer": {"properties": {"name": {"type": "text"}, "tier": {"type": "keyword"}}},
            "note": {"type": "text"}}}})),
    )?;
    let mut lines = Vec::new();
    for i in 0..3000u32 {
        let mut action = json!({"index": {"_index": "orders", "_id": format!("o-{i}")}});
        if i % 3 == 0 {
            action["index"]["routing"] = json!(format!("shard-key-{}", i % 7));
        }
        lines.push(action);
        lines.push(json!({
            "items": [{"sku": format!("s{i}"), "qty": i}, {"sku": "x", "qty": 1}],
            "customer": {"name": "Zoë Ünïcødé 東京 🚀", "tier": if i % 2 == 0 {"gold"} else {"std"}},
            "note": "line\nbreak \"quoted\" \\ back\tslash",
        }));
    }
    lines.push(json!({"index": {"_index": "orders", "_id": "big/ü id"}}));
    lines.push(json!({"note": "x".repeat(2_000_000), "customer": {"name": "big"}}));
    bulk(url, &lines)?;
    call(
        Method::PUT,
        &format!("{url}/empty"),
        Some(json!({"settings": {"number_of_replicas": 0}})),
    )?;
    call(
        Method::PUT,
        &format!("{url}/logs-1"),
        Some(json!({"settings": {"number_of_replicas": 0},
        "aliases": {"logs": {"filter": {"term": {"level": "error"}}, "routing": "r1"},
                    "all-logs": {"is_write_index": true}}})),
    )?;
    let mut lines = Vec::new();
    for i in 0..50 {
        lines.push(json!({"index": {"_index": "logs-1", "_id": i.to_string(), "routing": "r1"}}));
        lines.push(json!({"level": if i % 5 == 0 {"error"} else {"info"}, "msg": format!("m{i}")}));
    }
    bulk(url, &lines)?;
    call(
        Method::PUT,
        &format!("{url}/.internal"),
        Some(json!({"settings": {"number_of_replicas": 0}})),
    )?;
    call(
        Method::PUT,
        &format!("{url}/loose"),
        Some(json!({"settings": {"number_of_replicas": 0},
        "mappings": {"dynamic": false, "properties": {"name": {"type": "keyword"}}}})),
    )?;
    bulk(
        url,
        &[
            json!({"index": {"_index": "loose", "_id": "fine"}}),
            json!({"name": "a"}),
            json!({"index": {"_index": "loose", "_id": "bad-doc"}}),
            json!({"name": "b", "extra": "not a number"}),
        ],
    )?;
    Ok(())
}

struct Run {
    output: Output,
    result: Option<AgentResult>,
}

fn agent(args: &[String], env: &[(&str, String)], tmp: &Path) -> Result<Run> {
    let log = tmp.join(format!("termination-{}", rand_suffix()));
    let output = Command::new(env!("CARGO_BIN_EXE_cairn-agent"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.clone())))
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("CAIRN_TERMINATION_LOG", &log)
        .env("CAIRN_TMP_DIR", tmp)
        .env_remove("RESTIC_REPOSITORY")
        .output()
        .context("run cairn-agent")?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let result = AgentResult::from_termination_message(&text);
    if let Some(r) = &result {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let last = stdout.lines().last().unwrap_or_default();
        ensure!(
            AgentResult::from_termination_message(last).as_ref() == Some(r),
            "stdout's last line is not the result: {stdout}"
        );
    }
    Ok(Run { output, result })
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

fn stderr(r: &Run) -> String {
    String::from_utf8_lossy(&r.output.stderr).into_owned()
}

fn restic(s3: &S3Server, repo: &str, args: &[&str]) -> Result<String> {
    let out = Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .envs(s3.env())
        .env("RESTIC_PASSWORD", PASSWORD)
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("cairn-agent-restic-cache"),
        )
        .output()
        .context("run restic (cargo xtask search-testbed installs it)")?;
    ensure!(
        out.status.success(),
        "restic {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn count(url: &str, index: &str) -> Result<u64> {
    let v = call(reqwest::Method::GET, &format!("{url}/{index}/_count"), None)?;
    v["count"].as_u64().context("count")
}

#[test]
fn backup_restore_roundtrip_with_restic_and_failures() -> Result<()> {
    let os = OpenSearch::start()?;
    let s3 = S3Server::start()?;
    let url = os.url();
    populate(&url)?;
    s3.create_bucket("backups")?;
    let repo = format!("{}/cairn/es", s3.restic_repository("backups"));
    let tmp = tempfile::tempdir()?;
    let env: Vec<(&str, String)> = s3.env();

    let common = |cmd: &str| -> Vec<String> {
        vec![
            cmd.to_string(),
            format!("--repository={repo}"),
            "--region=".into(),
            "--insecure-tls=false".into(),
            "--max-connections=".into(),
            "--host=host-0".into(),
            format!("--url={url}"),
            "--insecure-skip-tls-verify=false".into(),
            "--server-name=".into(),
            "--credentials-dir=".into(),
            "--interim-data-dir=".into(),
            "--enable-cache=true".into(),
            "--wait-timeout=60s".into(),
            "--include=*".into(),
            "--exclude=".into(),
        ]
    };
    let mut backup = common("backup");
    backup.extend(
        [
            "--tag=session=s1",
            "--tag=BackupConfiguration=cfg",
            "--namespace=demo",
            "--configuration=cfg",
            "--keep-last=2",
            "--keep-hourly=",
            "--keep-daily=",
            "--keep-weekly=",
            "--keep-monthly=",
            "--keep-yearly=",
            "--keep-tags=",
            "--prune=true",
            "--dry-run=false",
            "--slices=auto",
        ]
        .map(String::from),
    );
    // Two slices on the big index, so the parallel path runs.
    let mut backup_sliced = backup.clone();
    backup_sliced.push("--page-size=500".into());
    backup_sliced.retain(|a| a != "--slices=auto");
    backup_sliced.push("--slices=2".into());

    let first = agent(&backup_sliced, &env, tmp.path())?;
    ensure!(
        first.output.status.success(),
        "backup failed: {}",
        stderr(&first)
    );
    let Some(AgentResult::Backup(b)) = &first.result else {
        anyhow::bail!("no backup result: {:?} {}", first.result, stderr(&first));
    };
    assert_eq!(
        b.indices, 4,
        "orders, empty, logs-1, loose (not .internal): {b:?}"
    );
    assert_eq!(b.documents, 3001 + 50 + 2);
    assert_eq!(b.host, "host-0");
    assert_eq!(b.snapshot.len(), 64);
    assert_eq!(b.repository.snapshot_count, 1);

    // The standard restic reads what we wrote.
    let snaps: Value = serde_json::from_str(&restic(&s3, &repo, &["snapshots", "--json"])?)?;
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");
    let tags = snaps[0]["tags"].to_string();
    assert!(
        tags.contains("session=s1") && tags.contains("BackupConfiguration=cfg"),
        "{tags}"
    );
    assert_eq!(snaps[0]["hostname"], "host-0");
    restic(&s3, &repo, &["check", "--read-data"])?;
    let docs = restic(
        &s3,
        &repo,
        &[
            "dump",
            "latest",
            "/elasticsearch/indices/orders/documents.ndjson",
        ],
    )?;
    assert_eq!(docs.lines().count(), 3001);
    let manifest: Value = serde_json::from_str(&restic(
        &s3,
        &repo,
        &["dump", "latest", "/elasticsearch/manifest.json"],
    )?)?;
    assert_eq!(manifest["indices"]["orders"]["documents"], 3001);
    assert_eq!(manifest["server"]["distribution"], "opensearch");
    assert!(manifest["indices"].get(".internal").is_none());

    // Restore everything under new names, next to the originals.
    let mut restore = common("restore");
    restore.extend(
        [
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
    let r = agent(&restore, &env, tmp.path())?;
    ensure!(r.output.status.success(), "restore failed: {}", stderr(&r));
    let Some(AgentResult::Restore(res)) = &r.result else {
        anyhow::bail!("no restore result: {}", stderr(&r));
    };
    assert_eq!(res.documents, 3053);
    assert_eq!(count(&url, "r-orders")?, 3001);
    assert_eq!(count(&url, "r-empty")?, 0);
    let doc = call(
        reqwest::Method::GET,
        &format!("{url}/r-orders/_doc/o-3?routing=shard-key-3"),
        None,
    )?;
    assert_eq!(doc["_source"]["customer"]["name"], "Zoë Ünïcødé 東京 🚀");
    assert_eq!(
        doc["_source"]["note"],
        "line\nbreak \"quoted\" \\ back\tslash"
    );
    let big = call(
        reqwest::Method::GET,
        &format!("{url}/r-orders/_doc/big%2F%C3%BC%20id"),
        None,
    )?;
    assert_eq!(
        big["_source"]["note"].as_str().map(str::len),
        Some(2_000_000)
    );
    let nested = call(
        reqwest::Method::POST,
        &format!("{url}/r-orders/_count"),
        Some(json!({
        "query": {"nested": {"path": "items", "query": {"term": {"items.sku": "s42"}}}}})),
    )?;
    assert_eq!(nested["count"], 1);
    let settings = call(
        reqwest::Method::GET,
        &format!("{url}/r-orders/_settings?flat_settings=true"),
        None,
    )?;
    assert_eq!(
        settings["r-orders"]["settings"]["index.refresh_interval"],
        "7s"
    );
    assert_eq!(
        settings["r-orders"]["settings"]["index.number_of_shards"],
        "3"
    );
    let aliases = call(
        reqwest::Method::GET,
        &format!("{url}/r-logs-1/_alias"),
        None,
    )?;
    let a = &aliases["r-logs-1"]["aliases"];
    assert_eq!(a["r-logs"]["filter"]["term"]["level"], "error", "{aliases}");
    assert_eq!(a["r-logs"]["index_routing"], "r1");
    assert_eq!(a["r-all-logs"]["is_write_index"], true);
    assert_eq!(count(&url, "r-logs")?, 10);

    // An existing index is refused and nothing is written.
    call(reqwest::Method::DELETE, &format!("{url}/r-empty"), None)?;
    let again = agent(&restore, &env, tmp.path())?;
    assert!(!again.output.status.success());
    let Some(AgentResult::Failure(f)) = &again.result else {
        anyhow::bail!("no failure result: {}", stderr(&again));
    };
    assert_eq!(f.phase, "restore");
    assert!(
        f.reason.contains("r-orders") && f.reason.contains("already exist"),
        "{f:?}"
    );
    let r_empty = http().head(format!("{url}/r-empty")).send()?.status();
    assert_eq!(r_empty.as_u16(), 404, "a refused restore wrote r-empty");

    // A document the target's mapping rejects fails the restore, naming the document.
    call(
        reqwest::Method::PUT,
        &format!("{url}/_index_template/bad"),
        Some(json!({
        "index_patterns": ["bad-*"], "priority": 100,
        "template": {"mappings": {"properties": {"extra": {"type": "integer"}}}}})),
    )?;
    let mut bad = common("restore");
    bad.retain(|a| a != "--include=*");
    bad.extend(
        [
            "--include=loose",
            "--rename-prefix=bad-",
            "--snapshot=latest",
        ]
        .map(String::from),
    );
    let rejected = agent(&bad, &env, tmp.path())?;
    assert!(!rejected.output.status.success());
    let Some(AgentResult::Failure(f)) = &rejected.result else {
        anyhow::bail!("no failure result: {}", stderr(&rejected));
    };
    assert!(
        f.reason.contains("bad-doc") && f.reason.contains("mapper_parsing_exception"),
        "{f:?}"
    );

    // A second backup, then retention keeps the last two.
    for _ in 0..2 {
        let run = agent(&backup, &env, tmp.path())?;
        ensure!(
            run.output.status.success(),
            "backup failed: {}",
            stderr(&run)
        );
    }
    let snaps: Value = serde_json::from_str(&restic(&s3, &repo, &["snapshots", "--json"])?)?;
    assert_eq!(
        snaps.as_array().map(Vec::len),
        Some(2),
        "keep-last=2: {snaps}"
    );
    restic(&s3, &repo, &["check"])?;

    // Unknown flags are a clear failure.
    let mut wrong = backup.clone();
    wrong.push("--no-such-flag=1".into());
    let w = agent(&wrong, &env, tmp.path())?;
    assert_eq!(w.output.status.code(), Some(2));
    assert!(
        matches!(&w.result, Some(AgentResult::Failure(f)) if f.reason.contains("no-such-flag"))
    );
    Ok(())
}

/// Scroll and point-in-time contexts open on the server (0 when it does not answer).
fn open_search_contexts(url: &str) -> u64 {
    let Ok(stats) = call(
        reqwest::Method::GET,
        &format!("{url}/_nodes/stats/indices/search"),
        None,
    ) else {
        return 0;
    };
    let Some(nodes) = stats["nodes"].as_object() else {
        return 0;
    };
    nodes
        .values()
        .map(|n| {
            n["indices"]["search"]["open_contexts"]
                .as_u64()
                .unwrap_or(0)
        })
        .sum()
}

fn signal(child: &std::process::Child, which: &str) -> Result<()> {
    let status = Command::new("kill")
        .args([which, &child.id().to_string()])
        .status()?;
    ensure!(status.success(), "kill {which} {}", child.id());
    Ok(())
}

#[test]
fn server_stopped_mid_backup_leaves_no_snapshot() -> Result<()> {
    let os = OpenSearch::start()?;
    let url = os.url();
    let mut lines = Vec::new();
    for i in 0..40_000u32 {
        lines.push(json!({"index": {"_index": "many", "_id": i.to_string()}}));
        lines.push(json!({"n": i, "pad": "p".repeat(200)}));
    }
    call(
        reqwest::Method::PUT,
        &format!("{url}/many"),
        Some(json!({"settings": {"number_of_replicas": 0}})),
    )?;
    for chunk in lines.chunks(10_000) {
        bulk(&url, chunk)?;
    }
    let tmp = tempfile::tempdir()?;
    let repo_dir = tmp.path().join("repo");
    let args: Vec<String> = [
        "backup".to_string(),
        format!("--repository=local:{}", repo_dir.display()),
        "--host=host-0".into(),
        format!("--url={url}"),
        "--page-size=50".into(),
        "--wait-timeout=5s".into(),
    ]
    .to_vec();
    let log = tmp.path().join("termination");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cairn-agent"))
        .args(&args)
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("CAIRN_TERMINATION_LOG", &log)
        .env("CAIRN_TMP_DIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    // Wait until documents are being read (the server holds the agent's search context),
    // freeze the agent so it cannot finish meanwhile, take the server away, let it go on.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while open_search_contexts(&url) == 0 {
        ensure!(
            child.try_wait()?.is_none(),
            "the backup ended before it was seen reading"
        );
        ensure!(
            std::time::Instant::now() < deadline,
            "the backup never started reading"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    signal(&child, "-STOP")?;
    os.kill();
    signal(&child, "-CONT")?;
    let status = child.wait()?;
    assert!(!status.success(), "the backup succeeded without its server");
    let result = AgentResult::from_termination_message(&std::fs::read_to_string(&log)?);
    let Some(AgentResult::Failure(f)) = result else {
        anyhow::bail!("no failure result: {result:?}");
    };
    assert_eq!(f.phase, "dump", "{f:?}");
    let snapshots = std::fs::read_dir(repo_dir.join("snapshots"))?.count();
    assert_eq!(snapshots, 0, "a partial dump became a snapshot");
    Ok(())
}

#[test]
fn elasticsearch_point_in_time_slices_round_trip() -> Result<()> {
    let es = OpenSearch::start_with(cairn_tests::opensearch::Options::elasticsearch())?;
    let url = es.url();
    call(
        reqwest::Method::PUT,
        &format!("{url}/pit"),
        Some(json!({"settings": {
        "number_of_shards": 2, "number_of_replicas": 0}})),
    )?;
    let mut lines = Vec::new();
    for i in 0..12_345u32 {
        lines.push(json!({"index": {"_index": "pit", "_id": i.to_string()}}));
        lines.push(json!({"n": i, "s": "é"}));
    }
    for chunk in lines.chunks(10_000) {
        bulk(&url, chunk)?;
    }
    let tmp = tempfile::tempdir()?;
    let repo = format!("--repository=local:{}", tmp.path().join("repo").display());
    let b = agent(
        &[
            "backup".into(),
            repo.clone(),
            format!("--url={url}"),
            "--slices=3".into(),
            "--page-size=1000".into(),
            "--tag=session=es".into(),
        ],
        &[],
        tmp.path(),
    )?;
    ensure!(b.output.status.success(), "backup: {}", stderr(&b));
    ensure!(
        stderr(&b).contains("Pit(Elasticsearch)"),
        "not read with a point in time: {}",
        stderr(&b)
    );
    let r = agent(
        &[
            "restore".into(),
            repo,
            format!("--url={url}"),
            "--rename-suffix=-copy".into(),
        ],
        &[],
        tmp.path(),
    )?;
    ensure!(r.output.status.success(), "restore: {}", stderr(&r));
    assert_eq!(count(&url, "pit-copy")?, 12_345);
    Ok(())
}
