//! Native snapshots (`cairn-agent snapshot` / `snapshot-restore`) against real OpenSearch 2.19
//! and Elasticsearch 7.17 nodes started with `path.repo`: round trips with renaming and the
//! `existing` policies, retention over one configuration's snapshots only, and the failures
//! (a location outside `path.repo`, a missing repository plugin, a shard that cannot be
//! copied). Needs `cargo xtask search-testbed`.

mod common;

use std::sync::OnceLock;

use anyhow::{Result, ensure};
use cairn_api::inventory::SnapshotLine;
use cairn_api::result::AgentResult;
use cairn_tests::opensearch::{OpenSearch, Options};
use common::{Run, Search, agent};
use reqwest::Method;
use serde_json::json;

static ELASTICSEARCH: OnceLock<OpenSearch> = OnceLock::new();

extern "C" fn stop_elasticsearch() {
    if let Some(node) = ELASTICSEARCH.get() {
        node.kill();
    }
}

/// One Elasticsearch 7.17 node for this binary's tests, stopped at exit.
fn elasticsearch() -> &'static OpenSearch {
    ELASTICSEARCH.get_or_init(|| {
        let node = OpenSearch::start_with(Options::elasticsearch()).expect("Elasticsearch");
        // SAFETY: registers a plain extern "C" function.
        unsafe {
            libc::atexit(stop_elasticsearch);
        }
        node
    })
}

/// A repository (its own directory under the node's path.repo) and the agent's flags for it.
struct Repo<'n> {
    node: &'n OpenSearch,
    name: String,
    location: String,
}

impl<'n> Repo<'n> {
    fn new(node: &'n OpenSearch, name: &str) -> Self {
        Self {
            node,
            name: name.into(),
            location: node.repo_dir().join(name).display().to_string(),
        }
    }

    fn flags(&self) -> Vec<String> {
        vec![
            "--provider=local".into(),
            format!("--location={}", self.location),
            "--repository-namespace=repo-ns".into(),
            format!("--repository-name={}", self.name),
            format!("--url={}", self.node.url()),
            "--snapshot-timeout=120s".into(),
        ]
    }

    fn run(&self, cmd: &str, extra: &[String]) -> Result<Run> {
        let mut args = vec![cmd.to_string()];
        args.extend(self.flags());
        args.extend(extra.iter().cloned());
        let tmp = tempfile::tempdir()?;
        agent(&args, &[], tmp.path())
    }

    /// `snapshot` as the catalog Function runs it, for `ns`/`config`/`session`.
    fn backup(&self, ns: &str, config: &str, session: &str, extra: &[&str]) -> Result<Run> {
        let mut args: Vec<String> = vec![
            format!("--namespace={ns}"),
            format!("--configuration={config}"),
            format!("--session={session}"),
            "--host=host-0".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.run("snapshot", &args)
    }

    fn restore(&self, ns: &str, extra: &[&str]) -> Result<Run> {
        let mut args = vec![format!("--namespace={ns}")];
        args.extend(extra.iter().map(|s| s.to_string()));
        self.run("snapshot-restore", &args)
    }

    /// Names of the repository's snapshots, sorted.
    fn snapshots(&self) -> Result<Vec<String>> {
        let v = Search::of(self.node)?.call(
            Method::GET,
            &format!("/_snapshot/cairn_repo-ns_{}/_all", self.name),
            None,
        )?;
        let mut names: Vec<String> = v["snapshots"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["snapshot"].as_str().map(String::from))
            .collect();
        names.sort();
        Ok(names)
    }
}

fn backed_up(run: &Run) -> Result<cairn_api::result::BackupResult> {
    match &run.result {
        Some(AgentResult::Backup(b)) if run.ok() => Ok(b.clone()),
        other => anyhow::bail!("snapshot failed: {other:?}\n{}", run.stderr()),
    }
}

fn restored(run: &Run) -> Result<cairn_api::result::RestoreResult> {
    match &run.result {
        Some(AgentResult::Restore(r)) if run.ok() => Ok(r.clone()),
        other => anyhow::bail!("restore failed: {other:?}\n{}", run.stderr()),
    }
}

/// Backup, an unchanged second backup, then restores: renamed beside the originals, refused
/// over an existing open index (existing=fail), all back after deletion, skip and overwrite.
fn round_trip(node: &OpenSearch) -> Result<()> {
    let s = Search::of(node)?;
    s.index_with_docs("rt-a", 30)?;
    s.index_with_docs("rt-b", 50)?;
    s.call(
        Method::POST,
        "/_aliases",
        Some(json!({"actions": [{"add": {"index": "rt-a", "alias": "rt-current"}}]})),
    )?;
    let repo = Repo::new(node, "roundtrip");

    let first = backed_up(&repo.backup(
        "team-a",
        "cfg",
        "cfg-1",
        &["--include=rt-*", "--keep-last=5"],
    )?)?;
    ensure!(first.snapshot == "team-a_cfg_cfg-1", "{first:?}");
    ensure!((first.indices, first.documents) == (2, 80), "{first:?}");
    let stats = first.native.clone().expect("native stats");
    ensure!(
        stats.shards == 2 && stats.shards_total == 2 && stats.files > 0,
        "{stats:?}"
    );
    ensure!(first.total_bytes > 0 && first.added_bytes > 0, "{first:?}");
    let second_run = repo.backup(
        "team-a",
        "cfg",
        "cfg-2",
        &["--include=rt-*", "--keep-last=5"],
    )?;
    let second = backed_up(&second_run)?;
    // The inventory for the Snapshot objects: both snapshots, native, with cairn's identity.
    let lines = SnapshotLine::parse_log(&second_run.stdout());
    let ids: Vec<&str> = lines.iter().map(|l| l.id.as_str()).collect();
    ensure!(
        second.inventory == Some(2) && ids == ["team-a_cfg_cfg-1", "team-a_cfg_cfg-2"],
        "{lines:?}"
    );
    ensure!(
        lines.iter().all(|l| l.driver() == "native"
            && l.namespace.as_deref() == Some("team-a")
            && l.configuration.as_deref() == Some("cfg")
            && l.documents == Some(80)
            && l.indices == Some(2)),
        "{lines:?}"
    );
    let again = second.native.clone().expect("native stats");
    ensure!(
        again.added_files == 0 && second.added_bytes == 0,
        "unchanged data added files: {second:?}"
    );

    // The originals are there and open: existing=fail touches nothing and names them.
    let refused = repo.restore("team-a", &["--include=rt-*"])?;
    let (phase, reason) = refused.failure()?;
    ensure!(
        phase == "restore" && reason.contains("rt-a, rt-b") && reason.contains("existing"),
        "{reason}"
    );
    ensure!(s.count("rt-a")? == 30, "existing=fail changed rt-a");

    let renamed = restored(&repo.restore(
        "team-a",
        &[
            "--snapshot=team-a_cfg_cfg-1",
            "--rename-pattern=rt-(.+)",
            "--rename-replacement=copy-$1",
            "--include-aliases=false",
            "--index-settings={\"index.number_of_replicas\":0}",
        ],
    )?)?;
    ensure!(
        (renamed.indices, renamed.documents) == (2, 80),
        "{renamed:?}"
    );
    ensure!(
        s.count("copy-a")? == 30 && s.count("copy-b")? == 50,
        "renamed counts"
    );

    s.call(Method::DELETE, "/rt-a,rt-b", None)?;
    let back = restored(&repo.restore("team-a", &["--include=rt-*"])?)?;
    ensure!(
        back.snapshot == "team-a_cfg_cfg-2" && back.documents == 80,
        "{back:?}"
    );
    let alias = s.call(Method::GET, "/_alias/rt-current", None)?;
    ensure!(alias.get("rt-a").is_some(), "alias not restored: {alias}");

    // skip leaves an existing index alone; overwrite replaces it with the snapshot's.
    s.bulk(&format!(
        "{}\n{}\n",
        json!({"index": {"_index": "rt-a", "_id": "extra"}}),
        json!({"n": 1})
    ))?;
    let skipped = restored(&repo.restore("team-a", &["--include=rt-a", "--existing=skip"])?)?;
    ensure!(
        skipped.indices == 0 && s.count("rt-a")? == 31,
        "{skipped:?}"
    );
    let over = restored(&repo.restore("team-a", &["--include=rt-a", "--existing=overwrite"])?)?;
    ensure!(over.indices == 1 && s.count("rt-a")? == 30, "{over:?}");

    // Another namespace neither sees these as its latest nor restores them by name.
    let other = repo.restore(
        "team-b",
        &[
            "--include=rt-*",
            "--rename-pattern=rt-(.+)",
            "--rename-replacement=b-$1",
        ],
    )?;
    ensure!(
        other
            .failure()?
            .1
            .contains("no finished snapshot of namespace \"team-b\""),
        "{:?}",
        other.failure()
    );
    let named = repo.restore(
        "team-b",
        &[
            "--snapshot=team-a_cfg_cfg-1",
            "--rename-pattern=rt-(.+)",
            "--rename-replacement=b-$1",
        ],
    )?;
    ensure!(
        named
            .failure()?
            .1
            .contains("belongs to namespace \"team-a\""),
        "{:?}",
        named.failure()
    );

    // Registered elsewhere meanwhile: a restore neither reads there nor re-registers it.
    let server_name = "/_snapshot/cairn_repo-ns_roundtrip";
    let elsewhere = node.repo_dir().join("elsewhere").display().to_string();
    s.call(
        Method::PUT,
        server_name,
        Some(json!({"type": "fs", "settings": {"location": elsewhere}})),
    )?;
    let moved = repo.restore(
        "team-a",
        &[
            "--include=rt-*",
            "--rename-pattern=rt-(.+)",
            "--rename-replacement=moved-$1",
        ],
    )?;
    let why = moved.failure()?.1;
    ensure!(
        why.contains(&format!(
            "registered with location {elsewhere:?} instead of"
        )),
        "{why}"
    );
    let now = s.call(Method::GET, server_name, None)?;
    ensure!(
        now["cairn_repo-ns_roundtrip"]["settings"]["location"] == json!(elsewhere),
        "the restore changed the registration: {now}"
    );
    Ok(())
}

/// keepLast 2 over three backups leaves exactly the newest two of this configuration, and
/// another configuration's and another namespace's snapshots in the same repository.
fn retention(node: &OpenSearch) -> Result<()> {
    Search::of(node)?.index_with_docs("ret-x", 5)?;
    let repo = Repo::new(node, "retention");
    for (ns, config, session) in [("team-a", "other", "o-1"), ("team-b", "keep", "k-1")] {
        backed_up(&repo.backup(ns, config, session, &["--include=ret-x", "--keep-last=1"])?)?;
    }
    let mut last = None;
    for n in 1..=3 {
        let b = backed_up(&repo.backup(
            "team-a",
            "keep",
            &format!("k-{n}"),
            &["--include=ret-x", "--keep-last=2"],
        )?)?;
        last = Some(b);
    }
    let last = last.expect("three backups");
    ensure!(
        (last.snapshots_kept, last.snapshots_removed) == (2, 1),
        "{last:?}"
    );
    let want = [
        "team-a_keep_k-2",
        "team-a_keep_k-3",
        "team-a_other_o-1",
        "team-b_keep_k-1",
    ];
    ensure!(repo.snapshots()? == want, "{:?}", repo.snapshots()?);
    Ok(())
}

/// What the cluster lacks is the reason: a location outside path.repo, no S3 plugin.
fn unregistrable(node: &OpenSearch) -> Result<()> {
    let mut repo = Repo::new(node, "outside");
    repo.location = std::env::temp_dir()
        .join("cairn-not-in-path-repo")
        .display()
        .to_string();
    let run = repo.backup("team-a", "cfg", "x-1", &[])?;
    let (phase, reason) = run.failure()?;
    ensure!(
        phase == "repository" && reason.starts_with("the cluster's path.repo does not include"),
        "{phase}: {reason}"
    );

    let args: Vec<String> = vec![
        "snapshot".into(),
        "--provider=s3".into(),
        "--bucket=snaps".into(),
        "--endpoint=http://127.0.0.1:9".into(),
        "--repository-namespace=repo-ns".into(),
        "--repository-name=s3".into(),
        format!("--url={}", node.url()),
        "--namespace=team-a".into(),
        "--configuration=cfg".into(),
        "--session=s-1".into(),
    ];
    let tmp = tempfile::tempdir()?;
    let (phase, reason) = agent(&args, &[], tmp.path())?.failure()?;
    ensure!(
        phase == "repository" && reason.contains("repository-s3 plugin"),
        "{phase}: {reason}"
    );
    Ok(())
}

/// Another tenant's Repository naming the same directory lands under its own namespace: it
/// cannot restore, list or touch the first tenant's snapshots (the cluster's credentials write
/// both, so cairn's placement is the only wall between them).
fn tenants_naming_one_location_do_not_share_it(node: &OpenSearch) -> Result<()> {
    Search::of(node)?.index_with_docs("iso-a", 5)?;
    let owner = Repo::new(node, "shared");
    backed_up(&owner.backup("team-a", "cfg", "iso-1", &["--include=iso-*"])?)?;
    let args: Vec<String> = vec![
        "snapshot-restore".into(),
        "--provider=local".into(),
        format!("--location={}", owner.location),
        "--repository-namespace=intruder-ns".into(),
        "--repository-name=shared".into(),
        format!("--url={}", node.url()),
        "--snapshot-timeout=60s".into(),
        "--namespace=intruder-ns".into(),
        "--snapshot=team-a_cfg_iso-1".into(),
        "--rename-pattern=iso-(.+)".into(),
        "--rename-replacement=stolen-$1".into(),
    ];
    let tmp = tempfile::tempdir()?;
    let run = agent(&args, &[], tmp.path())?;
    ensure!(!run.ok(), "the intruder restored: {:?}", run.result);
    ensure!(
        Search::of(node)?.count("stolen-a").is_err(),
        "stolen-a exists"
    );
    ensure!(
        owner.snapshots()? == ["team-a_cfg_iso-1"],
        "{:?}",
        owner.snapshots()?
    );
    Ok(())
}

#[test]
fn opensearch_tenants_do_not_share_a_location() -> Result<()> {
    tenants_naming_one_location_do_not_share_it(OpenSearch::shared())
}

/// A shard that cannot be copied (its index may live on no node) fails the session, names the
/// shard, and leaves no snapshot behind.
fn partial(node: &OpenSearch) -> Result<()> {
    let s = Search::of(node)?;
    s.index_with_docs("part-ok", 3)?;
    // Created without waiting for its shard, which no node may hold.
    s.call(
        Method::PUT,
        "/part-red?wait_for_active_shards=0",
        Some(json!({"settings": {
        "number_of_shards": 1, "number_of_replicas": 0,
        "index.routing.allocation.require._name": "no-such-node"}})),
    )?;
    let repo = Repo::new(node, "partial");
    let run = repo.backup("team-a", "cfg", "p-1", &["--include=part-*"])?;
    let (phase, reason) = run.failure()?;
    ensure!(
        phase == "snapshot" && reason.contains("[part-red][0]") && reason.contains("removed"),
        "{phase}: {reason}"
    );
    ensure!(
        repo.snapshots()?.is_empty(),
        "the partial snapshot stayed: {:?}",
        repo.snapshots()?
    );
    Ok(())
}

#[test]
fn opensearch_round_trip() -> Result<()> {
    round_trip(OpenSearch::shared())
}

#[test]
fn elasticsearch_round_trip() -> Result<()> {
    round_trip(elasticsearch())
}

#[test]
fn opensearch_retention() -> Result<()> {
    retention(OpenSearch::shared())
}

#[test]
fn elasticsearch_retention() -> Result<()> {
    retention(elasticsearch())
}

#[test]
fn opensearch_unregistrable() -> Result<()> {
    unregistrable(OpenSearch::shared())
}

#[test]
fn elasticsearch_unregistrable() -> Result<()> {
    unregistrable(elasticsearch())
}

#[test]
fn opensearch_partial() -> Result<()> {
    partial(OpenSearch::shared())
}

#[test]
fn elasticsearch_partial() -> Result<()> {
    partial(elasticsearch())
}
