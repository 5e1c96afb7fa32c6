//! A Stash-made snapshot takes the restore's options as cairn's own do: `--include`/`--exclude`
//! select indices (and their aliases), the rename prefix renames indices and aliases, and
//! `--existing` fails before writing, skips or overwrites. The snapshot is made as Stash's addon
//! makes it: elasticdump 6.84.1's `multielasticdump` (every type, so aliases are in the dump)
//! into an interim directory, `restic backup --host host-0` into a v1 repository. Both run on
//! the shared OpenSearch node; the test's indices are its own (`sr-*`).

mod common;

use std::collections::BTreeSet;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use cairn_tests::opensearch::{OpenSearch, stash_multielasticdump};
use common::{Search, agent, restic_ok, restore_args, set_flag};
use reqwest::Method;

/// The restored indices (`r-sr-*`).
fn restored(os: &Search) -> Result<BTreeSet<String>> {
    let listed = os.call(
        Method::GET,
        "/_cat/indices/r-sr-*?format=json&h=index",
        None,
    )?;
    Ok((listed.as_array().into_iter().flatten())
        .filter_map(|i| i["index"].as_str().map(String::from))
        .collect())
}

#[test]
fn a_stash_snapshot_takes_the_restore_options() -> Result<()> {
    let os = Search::of(OpenSearch::shared())?;
    for index in ["sr-orders", "sr-logs"] {
        os.index_with_docs(index, 30)?;
    }
    os.call(Method::PUT, "/sr-orders/_alias/sr-current", None)?;
    let tmp = tempfile::tempdir()?;
    let interim = tmp.path().join("stash-interim-volume/data");
    std::fs::create_dir_all(&interim)?;
    let run = Command::new(stash_multielasticdump()?)
        .arg(format!("--input={}", os.url))
        .arg(format!("--output={}", interim.display()))
        .args(["--match=^sr-", "--includeType=data,mapping,alias,settings"])
        .output()?;
    ensure!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let repo = format!("local:{}", tmp.path().join("repo").display());
    restic_ok(&repo, &["init", "--repository-version", "1"], &[])?;
    let path = interim.display().to_string();
    restic_ok(&repo, &["backup", "--host", "host-0", &path], &[])?;

    // One index by name, renamed with its alias.
    let mut args = restore_args(&repo, &os.url);
    set_flag(&mut args, "include", "sr-*");
    set_flag(&mut args, "exclude", "sr-logs");
    let run = agent(&args, &[], tmp.path())?;
    ensure!(run.ok(), "restore: {}", run.stderr());
    ensure!(restored(&os)? == BTreeSet::from(["r-sr-orders".to_string()]));
    ensure!(os.count("r-sr-orders")? == 30);
    let alias = os.call(Method::GET, "/r-sr-orders/_alias", None)?;
    ensure!(
        alias["r-sr-orders"]["aliases"]["r-sr-current"].is_object(),
        "{alias}"
    );

    // All of it: the existing index fails the restore before anything is written.
    set_flag(&mut args, "exclude", "");
    let run = agent(&args, &[], tmp.path())?;
    let (phase, reason) = run.failure()?;
    ensure!(
        phase == "restore" && reason.contains("r-sr-orders"),
        "{reason}"
    );
    ensure!(restored(&os)?.len() == 1, "nothing written");

    // Skipping it restores the other one.
    set_flag(&mut args, "existing", "skip");
    let run = agent(&args, &[], tmp.path())?;
    ensure!(run.ok(), "restore: {}", run.stderr());
    ensure!(restored(&os)?.len() == 2);
    ensure!(os.count("r-sr-logs")? == 30);
    let listed = os.call(Method::GET, "/_cat/indices/r-sr-*?format=json", None)?;
    eprintln!(
        "restored: {}",
        serde_json::to_string(&listed).context("json")?
    );
    Ok(())
}
