//! Stash's `args` Task param, translated by `cairn_api::stash_args` (as the resolver does) into
//! the agent's `--match` and `--skip`, backs up exactly the indices and types Stash's own
//! `multielasticdump` takes from the same cluster with the same flags: both run side by side on
//! the shared OpenSearch node (`cargo xtask search-testbed` installs elasticdump from npm). A
//! restore rule's `include` and `exclude` (the agent's flags of the same names, as the resolver
//! passes them) then restore exactly the indices they name.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use cairn_api::defaults::Direction;
use cairn_api::stash_args::translate;
use cairn_tests::opensearch::{OpenSearch, multielasticdump};
use common::{Search, agent, backup_args, restic_ok, restore_args, set_flag};
use reqwest::Method;
use serde_json::{Value, json};

/// The indices of this test: two the regex takes, one its lookahead leaves out.
const TAKEN: [&str; 2] = ["sa-logs", "sa-orders"];
const LEFT_OUT: &str = "sa-skip-audit";
/// Stash's documentation shape: a lookahead, then a type left out.
const ARGS: &str = "--match=^(?!sa-skip)sa-.+ --ignoreType=template,settings";

fn populate(os: &Search) -> Result<()> {
    for index in TAKEN.iter().chain([&LEFT_OUT]) {
        os.index_with_docs(index, 40)?;
    }
    // An analyzer, an alias and a template, so that leaving types out shows.
    os.call(Method::POST, "/sa-logs/_close", None)?;
    let analysis = json!({"analysis": {"analyzer": {"sa_lower": {"type": "custom",
        "tokenizer": "standard", "filter": ["lowercase"]}}}});
    os.call(Method::PUT, "/sa-logs/_settings", Some(analysis))?;
    os.call(Method::POST, "/sa-logs/_open", None)?;
    os.call(Method::PUT, "/sa-logs/_alias/sa-current", None)?;
    let template = json!({"index_patterns": ["sa-none-*"], "template": {"settings": {}}});
    os.call(Method::PUT, "/_index_template/sa-template", Some(template))?;
    Ok(())
}

/// What multielasticdump wrote: index -> the types of its files (`<index>.json` is `data`,
/// `<index>.<type>.json` the others).
fn elasticdump(url: &str, args: &str, out: &Path) -> Result<BTreeMap<String, BTreeSet<String>>> {
    std::fs::create_dir_all(out)?;
    let run = Command::new(multielasticdump()?)
        .arg("--direction=dump")
        .arg(format!("--input={url}"))
        .arg(format!("--output={}", out.display()))
        .args(args.split_whitespace())
        .output()
        .context("multielasticdump")?;
    ensure!(
        run.status.success(),
        "multielasticdump: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let mut found: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for entry in std::fs::read_dir(out)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".json") else {
            continue;
        };
        let (index, kind) = match stem.rsplit_once('.') {
            Some((i, k)) => (i.to_string(), k.to_string()),
            None => (stem.to_string(), "data".to_string()),
        };
        found.entry(index).or_default().insert(kind);
    }
    Ok(found)
}

fn dump_json(repo: &str, path: &str) -> Result<Value> {
    let text = restic_ok(repo, &["dump", "latest", path], &[])?;
    serde_json::from_str(&text).with_context(|| format!("{path}: {text}"))
}

#[test]
fn translated_args_back_up_what_multielasticdump_takes() -> Result<()> {
    let os = Search::of(OpenSearch::shared())?;
    populate(&os)?;
    let tmp = tempfile::tempdir()?;

    let stash = elasticdump(&os.url, ARGS, &tmp.path().join("elasticdump"))?;
    let stash_indices: BTreeSet<String> = stash.keys().cloned().collect();
    let taken: BTreeSet<String> = TAKEN.map(String::from).into();
    ensure!(stash_indices == taken, "multielasticdump took {stash:?}");

    let t = translate(ARGS, Direction::Backup).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let repo = format!("local:{}", tmp.path().join("repo").display());
    let mut args = backup_args(&repo, &os.url, "*");
    set_flag(&mut args, "match", t.matcher.as_deref().unwrap_or_default());
    set_flag(&mut args, "skip", &t.skip);
    let run = agent(&args, &[], tmp.path())?;
    ensure!(run.ok(), "backup: {}", run.stderr());

    let manifest = dump_json(&repo, "/elasticsearch/manifest.json")?;
    let indices = manifest["indices"].as_object().context("indices")?;
    let cairn: BTreeSet<String> = indices.keys().cloned().collect();
    assert_eq!(cairn, stash_indices, "the indices differ");
    assert_eq!(manifest["templates"]["composable"], 0, "{manifest}");
    for index in TAKEN {
        let types = &stash[index];
        assert!(
            types.contains("data") && types.contains("mapping"),
            "{types:?}"
        );
        assert!(
            !types.contains("settings") && !types.contains("template"),
            "{types:?}"
        );
        assert_eq!(indices[index]["documents"], 40, "{manifest}");
        let meta = dump_json(&repo, &format!("/elasticsearch/indices/{index}/index.json"))?;
        assert!(meta["mappings"]["properties"]["n"].is_object(), "{meta}");
        // Settings left out; the analyzers kept (cairn keeps what elasticdump's defaults drop).
        let settings = meta["settings"].as_object().context("settings")?;
        assert!(
            settings.keys().all(|k| k.starts_with("index.analysis.")),
            "{settings:?}"
        );
    }
    let logs = dump_json(&repo, "/elasticsearch/indices/sa-logs/index.json")?;
    assert!(logs["aliases"]["sa-current"].is_object(), "{logs}");
    assert!(
        logs["settings"]["index.analysis.analyzer.sa_lower.tokenizer"] == "standard",
        "{logs}"
    );
    eprintln!(
        "args {ARGS:?}: multielasticdump and cairn both took {stash_indices:?}; \
         neither kept settings or templates"
    );

    // A restore rule `include: [sa-*]`, `exclude: [sa-orders]`.
    let mut restore = restore_args(&repo, &os.url);
    set_flag(&mut restore, "include", "sa-*");
    set_flag(&mut restore, "exclude", "sa-orders");
    let run = agent(&restore, &[], tmp.path())?;
    ensure!(run.ok(), "restore: {}", run.stderr());
    let listed = os.call(Method::GET, "/_cat/indices/r-*?format=json&h=index", None)?;
    let restored: BTreeSet<&str> = (listed.as_array().into_iter().flatten())
        .filter_map(|i| i["index"].as_str())
        .collect();
    assert_eq!(restored, BTreeSet::from(["r-sa-logs"]));
    assert_eq!(os.count("r-sa-logs")?, 40);
    Ok(())
}
