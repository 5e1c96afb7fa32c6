//! The agent and its repository's storage: `wipe` (local and S3, only the repository's prefix),
//! an unreachable S3 endpoint (S3 over HTTPS is `s3_tls.rs`'s), the
//! interim data directory, and restic-compatible locks. Against the shared OpenSearch node, MinIO
//! and the standard `restic` (`cargo xtask search-testbed`).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use cairn_agent::location::{Location, RepoOptions};
use cairn_agent::lock::{Crypto, LockFile};
use cairn_api::result::AgentResult;
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use common::{Search, agent, backup_args, restic, restic_ok, set_flag};

fn search() -> Result<Search> {
    Search::of(OpenSearch::shared())
}

#[test]
fn wipe_deletes_the_repository_and_nothing_else() -> Result<()> {
    let os = search()?;
    os.index_with_docs("wipe-docs", 120)?;
    let tmp = tempfile::tempdir()?;

    // A local repository: the directory is left empty.
    let dir = tmp.path().join("repo");
    let local = format!("local:{}", dir.display());
    let b = agent(&backup_args(&local, &os.url, "wipe-docs"), &[], tmp.path())?;
    ensure!(b.ok(), "local backup: {}", b.stderr());
    restic_ok(&local, &["snapshots"], &[])?;
    let w = agent(
        &["wipe".into(), format!("--repository={local}")],
        &[],
        tmp.path(),
    )?;
    ensure!(w.ok(), "wipe: {} {}", w.stdout(), w.stderr());
    assert!(w.stdout().contains("files removed"), "{}", w.stdout());
    let left: Vec<_> = std::fs::read_dir(&dir)?
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left after wipe: {left:?}");
    assert!(!restic(&local, &["snapshots"], &[])?.status.success());

    // Two repositories in one bucket: wiping one leaves the other whole.
    let s3 = S3Server::start()?;
    s3.create_bucket("backups")?;
    let env = s3.env();
    let one = format!("{}/wipe/one", s3.restic_repository("backups"));
    let two = format!("{}/wipe/two", s3.restic_repository("backups"));
    for repo in [&one, &two] {
        let b = agent(&backup_args(repo, &os.url, "wipe-docs"), &env, tmp.path())?;
        ensure!(b.ok(), "backup to {repo}: {}", b.stderr());
    }
    // restic's own lock files are part of the repository too: leave one behind.
    restic_ok(&one, &["snapshots"], &env)?;
    let before = s3.list_objects("backups")?;
    assert!(before.iter().any(|k| k.starts_with("wipe/one/data/")));
    let wipe = vec![
        "wipe".to_string(),
        format!("--repository={one}"),
        "--region=us-east-1".into(),
        "--insecure-tls=false".into(),
    ];
    let w = agent(&wipe, &env, tmp.path())?;
    ensure!(w.ok(), "wipe: {} {}", w.stdout(), w.stderr());
    let after = s3.list_objects("backups")?;
    let of_one: Vec<_> = after
        .iter()
        .filter(|k| k.starts_with("wipe/one/"))
        .collect();
    assert!(
        of_one.is_empty(),
        "left of the wiped repository: {of_one:?}"
    );
    let of_two = after.iter().filter(|k| k.starts_with("wipe/two/")).count();
    let two_before = before.iter().filter(|k| k.starts_with("wipe/two/")).count();
    assert_eq!(of_two, two_before, "the other repository changed");
    assert!(!restic(&one, &["snapshots"], &env)?.status.success());
    restic_ok(&two, &["check"], &env)?;

    // Again: nothing left to delete is fine (the cleanup Job may run more than once).
    let again = agent(&wipe, &env, tmp.path())?;
    ensure!(again.ok(), "second wipe: {}", again.stderr());
    // Without credentials it fails, saying so.
    let denied = agent(
        &wipe,
        &[("AWS_DEFAULT_REGION", "us-east-1".into())],
        tmp.path(),
    )?;
    assert!(!denied.ok());
    let (phase, reason) = denied.failure()?;
    assert_eq!(phase, "config", "{reason}");
    assert!(reason.contains("AWS_ACCESS_KEY_ID"), "{reason}");
    // Credentials to the bucket are not enough: the password must open the repository.
    let mut wrong = env.clone();
    wrong.push(("RESTIC_PASSWORD", "not-this-repositorys".into()));
    let mut wipe_two = wipe.clone();
    wipe_two[1] = format!("--repository={two}");
    let refused = agent(&wipe_two, &wrong, tmp.path())?;
    assert!(!refused.ok(), "wiped with a wrong password");
    assert_eq!(
        s3.list_objects("backups")?
            .iter()
            .filter(|k| k.starts_with("wipe/two/"))
            .count(),
        two_before,
        "a refused wipe deleted something"
    );
    Ok(())
}

#[test]
fn unreachable_s3_fails_in_bounded_time() -> Result<()> {
    let os = search()?;
    os.index_with_docs("unreachable-docs", 5)?;
    let tmp = tempfile::tempdir()?;
    // A port nobody listens on (from the harness, which never hands it to a server it starts).
    let port = cairn_tests::process::free_port()?;
    let repo = format!("s3:http://127.0.0.1:{port}/bucket/prefix");
    let env = vec![
        ("AWS_ACCESS_KEY_ID", "k".to_string()),
        ("AWS_SECRET_ACCESS_KEY", "s".to_string()),
    ];
    let started = Instant::now();
    let run = agent(
        &backup_args(&repo, &os.url, "unreachable-docs"),
        &env,
        tmp.path(),
    )?;
    let took = started.elapsed();
    assert!(!run.ok());
    let (phase, reason) = run.failure()?;
    assert_eq!(phase, "repository", "{reason}");
    assert!(
        reason.contains(&format!("127.0.0.1:{port}")),
        "the reason does not name the endpoint: {reason}"
    );
    assert!(
        reason.to_lowercase().contains("connect") || reason.to_lowercase().contains("refused"),
        "the reason does not say the connection failed: {reason}"
    );
    assert!(took < Duration::from_secs(60), "took {took:?}");
    // The other commands fail the same way.
    let snaps = agent(
        &["snapshots".into(), format!("--repository={repo}")],
        &env,
        tmp.path(),
    )?;
    assert_eq!(snaps.failure()?.0, "repository");
    Ok(())
}

/// `restic dump` of one snapshot's manifest.
fn manifest(repo: &str, snapshot: &str) -> Result<serde_json::Value> {
    let text = restic_ok(
        repo,
        &["dump", snapshot, "/elasticsearch/manifest.json"],
        &[],
    )?;
    Ok(serde_json::from_str(&text)?)
}

#[test]
fn interim_dir_stages_the_documents_and_is_emptied() -> Result<()> {
    let os = search()?;
    os.index_with_docs("interim-big", 2500)?;
    os.index_with_docs("interim-small", 7)?;
    os.index_with_docs("interim-none", 0)?;
    let tmp = tempfile::tempdir()?;
    let repo = format!("local:{}", tmp.path().join("repo").display());
    let mut args = backup_args(&repo, &os.url, "interim-*");
    // One slice: the same document order every run, so the same checksums.
    set_flag(&mut args, "slices", "1");
    set_flag(&mut args, "page-size", "300");

    let streamed = agent(&args, &[], tmp.path())?;
    ensure!(streamed.ok(), "streamed backup: {}", streamed.stderr());
    let interim = tmp.path().join("interim");
    let mut staged_args = args.clone();
    set_flag(
        &mut staged_args,
        "interim-data-dir",
        &interim.display().to_string(),
    );
    let staged = agent(&staged_args, &[], tmp.path())?;
    ensure!(staged.ok(), "staged backup: {}", staged.stderr());
    assert!(
        staged.stderr().contains("index staged"),
        "not staged: {}",
        staged.stderr()
    );
    // Only the repository cache (which lives on the interim volume) is left.
    let left: Vec<String> = std::fs::read_dir(&interim)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["cache"], "left in the interim directory");

    let (Some(AgentResult::Backup(a)), Some(AgentResult::Backup(b))) =
        (&streamed.result, &staged.result)
    else {
        anyhow::bail!("no backup results");
    };
    assert_eq!(a.documents, 2507);
    assert_eq!(b.documents, 2507);
    let (ma, mb) = (manifest(&repo, &a.snapshot)?, manifest(&repo, &b.snapshot)?);
    assert_eq!(ma["indices"], mb["indices"], "staged and streamed differ");
    assert_eq!(ma["indices"]["interim-big"]["documents"], 2500);
    assert_eq!(
        ma["indices"]["interim-big"]["sha256"]
            .as_str()
            .map(str::len),
        Some(64)
    );
    // Same content: the staged snapshot added no new data.
    assert!(b.added_bytes < a.added_bytes / 2, "{a:?} {b:?}");
    restic_ok(&repo, &["check", "--read-data"], &[])?;
    // Data packs of a repository the agent created do not grow with it (bounded memory).
    let (_, _, limit) = open_rustic(&tmp.path().join("repo"))?
        .config()
        .packsize(rustic_core::repofile::BlobType::Data);
    assert_eq!(limit, 32 << 20);

    // Without the cache, nothing at all is left.
    let mut no_cache = staged_args.clone();
    set_flag(&mut no_cache, "enable-cache", "false");
    std::fs::remove_dir_all(&interim)?;
    let c = agent(&no_cache, &[], tmp.path())?;
    ensure!(c.ok(), "staged backup without cache: {}", c.stderr());
    assert_eq!(std::fs::read_dir(&interim)?.count(), 0);

    // An interim directory that cannot be written fails the dump, and no snapshot is made.
    let blocked = tmp.path().join("a-file");
    std::fs::write(&blocked, "x")?;
    let mut bad = args.clone();
    set_flag(&mut bad, "interim-data-dir", &blocked.display().to_string());
    set_flag(&mut bad, "enable-cache", "false");
    let f = agent(&bad, &[], tmp.path())?;
    let (phase, reason) = f.failure()?;
    assert_eq!(phase, "dump", "{reason}");
    assert!(reason.contains("a-file"), "{reason}");
    let snaps: serde_json::Value =
        serde_json::from_str(&restic_ok(&repo, &["snapshots", "--json"], &[])?)?;
    assert_eq!(snaps.as_array().map(Vec::len), Some(3));
    Ok(())
}

/// The lock files in a local repository.
fn lock_ids(repo_dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(repo_dir.join("locks"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A local repository opened with rustic_core, as another program would.
fn open_rustic(
    repo_dir: &std::path::Path,
) -> Result<rustic_core::Repository<rustic_core::OpenStatus>> {
    use rustic_core::{Credentials, Repository, RepositoryBackends, RepositoryOptions};
    let be = cairn_agent::repo::backend(
        &Location::Local(repo_dir.to_path_buf()),
        &RepoOptions::default(),
    )?;
    Ok(Repository::new(
        &RepositoryOptions::default().no_cache(true),
        &RepositoryBackends::new(be, None),
    )?
    .open(&Credentials::password(common::PASSWORD))?)
}

/// Writes a lock file as another process would (encrypted with the repository's key).
fn plant_lock(repo_dir: &std::path::Path, lock: &LockFile) -> Result<String> {
    let repo = open_rustic(repo_dir)?;
    let data = Crypto::of(&repo)?.encrypt(&serde_json::to_vec(lock)?)?;
    let id = sha256_hex(&data);
    std::fs::create_dir_all(repo_dir.join("locks"))?;
    std::fs::write(repo_dir.join("locks").join(&id), data)?;
    Ok(id)
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

#[test]
fn locks_are_restic_locks() -> Result<()> {
    let os = search()?;
    os.index_with_docs("lock-docs", 30_000)?;
    let tmp = tempfile::tempdir()?;
    let repo_dir = tmp.path().join("repo");
    let repo = format!("local:{}", repo_dir.display());
    let mut args = backup_args(&repo, &os.url, "lock-docs");
    set_flag(&mut args, "slices", "1");
    set_flag(&mut args, "page-size", "50");

    // While a backup runs, restic sees (and decrypts) its lock and will not prune.
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_cairn-agent"))
        .args(&args)
        .env("RESTIC_PASSWORD", common::PASSWORD)
        .env("CAIRN_TERMINATION_LOG", tmp.path().join("killed"))
        .env("CAIRN_TMP_DIR", tmp.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while lock_ids(&repo_dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    // Freeze the agent so the backup cannot finish before restic has looked: the
    // process stays alive (its lock is not stale) for as long as the test needs.
    let stopped = std::process::Command::new("kill")
        .args(["-STOP", &child.id().to_string()])
        .status()?;
    ensure!(stopped.success(), "kill -STOP {}", child.id());
    let ids = lock_ids(&repo_dir);
    ensure!(ids.len() == 1, "no lock while backing up: {ids:?}");
    let listed = restic_ok(&repo, &["list", "locks", "--no-lock"], &[])?;
    assert!(listed.contains(&ids[0]), "{listed}");
    let shown: serde_json::Value = serde_json::from_str(&restic_ok(
        &repo,
        &["cat", "lock", &ids[0], "--no-lock"],
        &[],
    )?)?;
    assert_eq!(shown["pid"], child.id());
    assert_eq!(shown["exclusive"], false);
    assert_eq!(shown["hostname"], cairn_agent::lock::hostname());
    let prune = restic(&repo, &["prune"], &[])?;
    assert!(
        !prune.status.success(),
        "restic pruned under a running backup"
    );
    assert!(
        String::from_utf8_lossy(&prune.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&prune.stderr)
    );
    // The agent dies: its lock stays behind...
    child.kill()?;
    child.wait()?;
    assert_eq!(lock_ids(&repo_dir), ids);

    // ...and the next run removes it (this host, no such process), prunes, and leaves no lock.
    let mut pruning = args.clone();
    set_flag(&mut pruning, "page-size", "5000");
    set_flag(&mut pruning, "keep-last", "1");
    set_flag(&mut pruning, "prune", "true");
    let next = agent(&pruning, &[], tmp.path())?;
    ensure!(next.ok(), "backup after a killed one: {}", next.stderr());
    assert!(
        next.stderr().contains("removing a stale lock"),
        "{}",
        next.stderr()
    );
    let Some(AgentResult::Backup(b)) = &next.result else {
        anyhow::bail!("no backup result: {}", next.stderr());
    };
    assert_eq!(b.retention_error, None, "{}", next.stderr());
    assert!(lock_ids(&repo_dir).is_empty());
    restic_ok(&repo, &["check"], &[])?;

    // A live exclusive lock of another host: the backup refuses to start, naming it.
    let mut other = LockFile::ours(true);
    other.hostname = "other-host".into();
    other.pid = 4242;
    let live = plant_lock(&repo_dir, &other)?;
    restic_ok(&repo, &["cat", "lock", &live, "--no-lock"], &[])?;
    let refused = agent(&pruning, &[], tmp.path())?;
    let (phase, reason) = refused.failure()?;
    assert_eq!(phase, "repository", "{reason}");
    assert!(
        reason.contains("locked") && reason.contains("other-host"),
        "{reason}"
    );
    // A live shared lock: the backup runs and reports its snapshot (exit 0), and that the
    // retention was not applied, naming the lock; a later run applies it.
    std::fs::remove_file(repo_dir.join("locks").join(&live))?;
    other.exclusive = false;
    let shared = plant_lock(&repo_dir, &other)?;
    let postponed = agent(&pruning, &[], tmp.path())?;
    ensure!(
        postponed.ok(),
        "backup next to a shared lock: {}",
        postponed.stderr()
    );
    let Some(AgentResult::Backup(b)) = &postponed.result else {
        anyhow::bail!("no backup result: {}", postponed.stderr());
    };
    assert_eq!(b.snapshot.len(), 64, "{b:?}");
    let why = b.retention_error.as_deref().unwrap_or_default();
    assert!(
        why.contains("retention not applied") && why.contains("other-host"),
        "{b:?}"
    );
    assert_eq!(b.totals_error, None, "{b:?}");
    assert_eq!(lock_ids(&repo_dir), std::slice::from_ref(&shared));
    // The same lock 31 minutes old is stale: removed, and the prune runs.
    std::fs::remove_file(repo_dir.join("locks").join(&shared))?;
    other.time = (chrono::Utc::now() - chrono::Duration::minutes(31)).to_rfc3339();
    plant_lock(&repo_dir, &other)?;
    let forget = agent(
        &[
            "forget".into(),
            format!("--repository={repo}"),
            "--host=host-0".into(),
            "--namespace=tests".into(),
            "--configuration=agent".into(),
            "--keep-last=1".into(),
            "--prune=true".into(),
        ],
        &[],
        tmp.path(),
    )?;
    ensure!(forget.ok(), "forget: {}", forget.stderr());
    assert!(
        forget.stderr().contains("removing a stale lock"),
        "{}",
        forget.stderr()
    );
    assert!(lock_ids(&repo_dir).is_empty());
    restic_ok(&repo, &["check", "--read-data"], &[])?;
    Ok(())
}

#[test]
fn a_lock_of_a_pod_that_no_longer_runs_is_removed() -> Result<()> {
    let os = search()?;
    os.index_with_docs("pod-lock-docs", 100)?;
    let tmp = tempfile::tempdir()?;
    let repo_dir = tmp.path().join("repo");
    let repo = format!("local:{}", repo_dir.display());
    let args = backup_args(&repo, &os.url, "pod-lock-docs");
    let first = agent(&args, &[], tmp.path())?;
    ensure!(first.ok(), "first backup: {}", first.stderr());

    // A session's pod of this cluster's cairn died holding an exclusive lock two minutes
    // before this launch.
    let mut dead = LockFile::ours(true);
    dead.username = cairn_api::naming::lock_user("cluster-a");
    dead.hostname = "cairn-backup-nightly-1700000000-x7k2p".into();
    dead.pid = 1;
    dead.time = (chrono::Utc::now() - chrono::Duration::minutes(2)).to_rfc3339();
    let planted = plant_lock(&repo_dir, &dead)?;
    let launched = chrono::Utc::now().to_rfc3339();
    // While the controller lists it as live, it blocks, as any live lock does.
    let listed = [
        ("CAIRN_LAUNCHED_AT", launched.clone()),
        (
            "CAIRN_LIVE_PODS",
            "cairn-restore-r-abcde,cairn-backup-nightly-1700000000-x7k2p".to_string(),
        ),
        ("CAIRN_CLUSTER_ID", "cluster-a".to_string()),
    ];
    let refused = agent(&args, &listed, tmp.path())?;
    let (phase, reason) = refused.failure()?;
    assert_eq!(phase, "repository", "{reason}");
    assert!(reason.contains("locked"), "{reason}");
    assert_eq!(lock_ids(&repo_dir), std::slice::from_ref(&planted));
    // Not listed, but judged by another cluster's cairn, which cannot see this one's pods: it
    // blocks.
    let elsewhere = [
        ("CAIRN_LAUNCHED_AT", launched.clone()),
        ("CAIRN_LIVE_PODS", "cairn-restore-r-abcde".to_string()),
        ("CAIRN_CLUSTER_ID", "cluster-b".to_string()),
    ];
    let refused = agent(&args, &elsewhere, tmp.path())?;
    assert!(refused.failure()?.1.contains("locked"));
    assert_eq!(lock_ids(&repo_dir), std::slice::from_ref(&planted));
    // Not listed, this cluster's: removed at the start, and the backup runs.
    let gone = [
        ("CAIRN_LAUNCHED_AT", launched),
        ("CAIRN_LIVE_PODS", "cairn-restore-r-abcde".to_string()),
        ("CAIRN_CLUSTER_ID", "cluster-a".to_string()),
    ];
    let next = agent(&args, &gone, tmp.path())?;
    ensure!(next.ok(), "backup after the pod died: {}", next.stderr());
    assert!(
        next.stderr().contains("no longer runs"),
        "{}",
        next.stderr()
    );
    assert!(lock_ids(&repo_dir).is_empty());
    Ok(())
}
