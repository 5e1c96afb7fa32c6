//! `cairn-agent check` against a repository damaged on purpose: two snapshots of the standard
//! `restic`, one pack file used by only one of them changed by a byte, then deleted; the check
//! must name that snapshot and no other, read the data it says it read, and agree with
//! `restic check`.
//! And a repository the agent's own backup made (from the shared OpenSearch node) is healthy to
//! both, read whole; the figures are the README's ("Integrity checks").

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use cairn_api::result::{AgentResult, CheckLogLine, CheckResult};
use cairn_tests::opensearch::OpenSearch;
use common::{Run, Search, agent, backup_args, restic, restic_ok};
use serde_json::Value;

/// `size` bytes nobody can compress or share with another seed's.
fn noise(seed: u64, size: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A backup of `dir` (made with a file of its own); the snapshot's full id.
fn backup(repo: &str, dir: &Path, seed: u64) -> Result<String> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("data.bin"), noise(seed, 3 << 20))?;
    let out = restic_ok(repo, &["backup", "--json", &dir.display().to_string()], &[])?;
    // restic 0.14's summary gives the short id.
    let short = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message_type"] == "summary")
        .and_then(|v| v["snapshot_id"].as_str().map(String::from))
        .context("no snapshot id in restic's summary")?;
    let all: Value = serde_json::from_str(&restic_ok(repo, &["snapshots", "--json"], &[])?)?;
    all.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["id"].as_str())
        .find(|id| id.starts_with(&short))
        .map(String::from)
        .context("the new snapshot is not listed")
}

/// The repository's data packs (those holding data blobs), from its index.
fn data_packs(repo: &str) -> Result<BTreeSet<String>> {
    let mut packs = BTreeSet::new();
    for index in restic_ok(repo, &["list", "index"], &[])?.split_whitespace() {
        let v: Value = serde_json::from_str(&restic_ok(repo, &["cat", "index", index], &[])?)?;
        for pack in v["packs"].as_array().context("index packs")? {
            if pack["blobs"][0]["type"] == "data" {
                packs.insert(pack["id"].as_str().context("pack id")?.to_string());
            }
        }
    }
    Ok(packs)
}

/// `cairn-agent check` of `repo` with `flags`; its result.
fn check(repo: &str, flags: &[&str], tmp: &Path) -> Result<(Run, CheckResult)> {
    let mut args = vec!["check".to_string(), format!("--repository={repo}")];
    args.extend(flags.iter().map(|f| f.to_string()));
    let run = agent(&args, &[], tmp)?;
    let Some(AgentResult::Check(c)) = run.result.clone() else {
        anyhow::bail!("no check result: {}\n{}", run.stdout(), run.stderr());
    };
    let code = run.output.status.code();
    ensure!(
        code == Some(if c.ok { 0 } else { 3 }),
        "exit {code:?} for ok={}",
        c.ok
    );
    Ok((run, c))
}

/// The snapshots the check's log lines name damaged.
fn logged_damaged(run: &Run) -> Vec<String> {
    run.stdout()
        .lines()
        .filter_map(CheckLogLine::from_line)
        .filter_map(|l| match l {
            CheckLogLine::Damaged { snapshot } => Some(snapshot),
            CheckLogLine::Error { .. } => None,
        })
        .collect()
}

#[test]
fn a_damaged_pack_marks_the_snapshot_using_it_and_no_other() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = format!("local:{}", tmp.path().join("repo").display());
    restic_ok(&repo, &["init"], &[])?;
    let first = backup(&repo, &tmp.path().join("one"), 1)?;
    let before = data_packs(&repo)?;
    let second = backup(&repo, &tmp.path().join("two"), 2)?;
    let only_second: Vec<String> = data_packs(&repo)?.difference(&before).cloned().collect();
    let pack = only_second
        .first()
        .context("the second backup made no data pack")?;

    // Healthy: structure only, then every pack read.
    let (_, c) = check(&repo, &[], tmp.path())?;
    ensure!(
        c.ok && c.packs_read == 0 && c.snapshots_checked == 2,
        "{c:?}"
    );
    assert_eq!(c.read_data_subset, "none");
    let (_, c) = check(&repo, &["--read-data"], tmp.path())?;
    ensure!(c.ok && c.damaged_snapshots.is_empty(), "{c:?}");
    ensure!(
        c.packs_read == c.packs_total && c.bytes_read > 6 << 20,
        "{c:?}"
    );

    // One byte of the second snapshot's data changed.
    let file = tmp.path().join("repo/data").join(&pack[..2]).join(pack);
    let mut bytes = std::fs::read(&file)?;
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    std::fs::write(&file, bytes)?;

    let (run, c) = check(&repo, &["--read-data"], tmp.path())?;
    ensure!(!c.ok, "{c:?}");
    assert_eq!(c.damaged_snapshots, [second.as_str()], "first: {first}");
    assert_eq!(logged_damaged(&run), [second.as_str()]);
    ensure!(
        c.errors
            .iter()
            .any(|e| e.starts_with(&format!("pack {pack}"))),
        "{:?}",
        c.errors
    );
    let restic_full = restic(&repo, &["check", "--read-data"], &[])?;
    ensure!(
        !restic_full.status.success(),
        "restic check --read-data passed"
    );
    let said = String::from_utf8_lossy(&restic_full.stdout).to_string()
        + &String::from_utf8_lossy(&restic_full.stderr);
    ensure!(
        said.contains(&pack[..8]),
        "restic names another pack: {said}"
    );

    // The structure alone does not see it, restic's check neither.
    let (_, c) = check(&repo, &[], tmp.path())?;
    ensure!(c.ok, "{c:?}");
    restic_ok(&repo, &["check"], &[])?;

    // Halves by restic's rule: the half holding the pack finds it, the other does not, and
    // restic reads the same halves.
    let first_byte = u8::from_str_radix(&pack[..2], 16)?;
    let ours = format!("{}/2", first_byte % 2 + 1);
    let other = format!("{}/2", 2 - first_byte % 2);
    let (_, c) = check(&repo, &[&format!("--read-data-subset={ours}")], tmp.path())?;
    ensure!(!c.ok && c.damaged_snapshots == [second.clone()], "{c:?}");
    // Exactly the packs of that half (pack ids are random: all may fall in one half).
    let mut in_half = 0;
    for dir in std::fs::read_dir(tmp.path().join("repo/data"))? {
        for f in std::fs::read_dir(dir?.path())? {
            let name = f?.file_name().to_string_lossy().to_string();
            if u8::from_str_radix(&name[..2], 16)? % 2 == first_byte % 2 {
                in_half += 1;
            }
        }
    }
    ensure!(c.packs_read == in_half, "{in_half} packs in {ours}: {c:?}");
    let (_, c) = check(&repo, &[&format!("--read-data-subset={other}")], tmp.path())?;
    ensure!(c.ok, "{other}: {c:?}");
    let subset = |part: &str| {
        restic(
            &repo,
            &["check", &format!("--read-data-subset={part}")],
            &[],
        )
    };
    ensure!(!subset(&ours)?.status.success(), "restic {ours} passed");
    ensure!(subset(&other)?.status.success(), "restic {other} failed");

    // The pack gone: the structure alone finds it, and names the same snapshot.
    std::fs::remove_file(&file)?;
    let (_, c) = check(&repo, &[], tmp.path())?;
    ensure!(!c.ok && c.damaged_snapshots == [second.as_str()], "{c:?}");
    ensure!(
        !restic(&repo, &["check"], &[])?.status.success(),
        "restic check passed"
    );
    Ok(())
}

#[test]
fn a_backup_of_thousands_of_documents_reads_healthy() -> Result<()> {
    let os = Search::of(OpenSearch::shared())?;
    let docs = 5000;
    os.index_with_docs("integrity-docs", 0)?;
    let mut body = String::new();
    for i in 0..docs {
        body.push_str(&format!(
            "{{\"index\":{{\"_index\":\"integrity-docs\",\"_id\":\"d{i}\"}}}}\n"
        ));
        let text: String = noise(i, 768)
            .iter()
            .map(|b| char::from(b'a' + b % 26))
            .collect();
        body.push_str(&serde_json::json!({ "n": i, "text": text }).to_string());
        body.push('\n');
    }
    os.bulk(&body)?;
    let tmp = tempfile::tempdir()?;
    let repo = format!("local:{}", tmp.path().join("repo").display());
    let b = agent(
        &backup_args(&repo, &os.url, "integrity-docs"),
        &[],
        tmp.path(),
    )?;
    ensure!(b.ok(), "backup: {}", b.stderr());

    let started = std::time::Instant::now();
    let (_, c) = check(&repo, &["--read-data"], tmp.path())?;
    let process = started.elapsed().as_secs_f64();
    ensure!(c.ok && c.packs_read == c.packs_total, "{c:?}");
    eprintln!(
        "full read of {docs} documents: {} packs, {} bytes, check {:.2}s, process {process:.2}s",
        c.packs_read, c.bytes_read, c.duration_seconds
    );
    let started = std::time::Instant::now();
    restic_ok(&repo, &["check", "--read-data"], &[])?;
    eprintln!(
        "restic check --read-data: {:.2}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[test]
fn a_bad_subset_is_a_usage_error_naming_the_flag() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let repo = format!("local:{}", tmp.path().join("repo").display());
    let run = agent(
        &[
            "check".into(),
            format!("--repository={repo}"),
            "--read-data-subset=9/4".into(),
        ],
        &[],
        tmp.path(),
    )?;
    let (phase, reason) = run.failure()?;
    assert_eq!(phase, "config");
    assert!(
        reason.starts_with("--read-data-subset: \"9/4\""),
        "{reason}"
    );
    Ok(())
}
