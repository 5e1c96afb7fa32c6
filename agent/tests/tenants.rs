//! Tenants sharing one repository never touch each other's snapshots: the real agent, MinIO,
//! the shared OpenSearch node and the standard `restic`. Two configurations in namespace
//! `team-a` (the Repository's own) and one in `team-b` write the same host (`host-0`) with
//! `keepLast: 1`; each keeps exactly its own newest snapshot, a snapshot made with plain
//! `restic backup` survives every retention, `latest` in each namespace is that namespace's own,
//! and a restore naming another namespace's snapshot is refused.
//!
//! The agent is given the flags the catalog's Functions give it (`--namespace=${NAMESPACE}`,
//! `--configuration=${INVOKER_NAME}`, `--repository-namespace=${REPOSITORY_NAMESPACE}`); that
//! the resolver sets those from the session is tested in `api/tests/resolve.rs`.

mod common;

use anyhow::{Result, ensure};
use cairn_api::result::AgentResult;
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use common::{Search, agent, backup_args, restic_ok, set_flag};
use serde_json::Value;

struct Tenant {
    namespace: &'static str,
    configuration: &'static str,
    index: &'static str,
    docs: u32,
}

const TENANTS: [Tenant; 3] = [
    Tenant {
        namespace: "team-a",
        configuration: "orders",
        index: "tenant-a-orders",
        docs: 11,
    },
    Tenant {
        namespace: "team-a",
        configuration: "users",
        index: "tenant-a-users",
        docs: 22,
    },
    Tenant {
        namespace: "team-b",
        configuration: "orders",
        index: "tenant-b-orders",
        docs: 33,
    },
];

fn restore_args(
    repo: &str,
    url: &str,
    namespace: &str,
    snapshot: &str,
    prefix: &str,
) -> Vec<String> {
    [
        "restore".to_string(),
        format!("--repository={repo}"),
        "--host=host-0".into(),
        "--source-host=".into(),
        format!("--snapshot={snapshot}"),
        format!("--namespace={namespace}"),
        "--repository-namespace=team-a".into(),
        "--source-configuration=".into(),
        format!("--url={url}"),
        "--wait-timeout=30s".into(),
        "--include=tenant-*".into(),
        format!("--rename-prefix={prefix}"),
        "--existing=fail".into(),
    ]
    .to_vec()
}

/// The snapshots restic lists, as (id, tags).
fn snapshots(repo: &str, env: &[(&str, String)]) -> Result<Vec<(String, Vec<String>)>> {
    let list: Value = serde_json::from_str(&restic_ok(repo, &["snapshots", "--json"], env)?)?;
    Ok(list
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let tags = s["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_string))
                .collect();
            (s["id"].as_str().unwrap_or_default().to_string(), tags)
        })
        .collect())
}

#[test]
fn tenants_of_one_repository_keep_and_restore_only_their_own() -> Result<()> {
    let os = Search::of(OpenSearch::shared())?;
    for t in &TENANTS {
        os.index_with_docs(t.index, t.docs)?;
    }
    let s3 = S3Server::start()?;
    s3.create_bucket("shared")?;
    let env = s3.env();
    let repo = format!("{}/tenants", s3.restic_repository("shared"));
    let tmp = tempfile::tempdir()?;

    // A snapshot cairn did not make (plain restic, same host).
    restic_ok(&repo, &["init"], &env)?;
    let foreign_file = tmp.path().join("stash-dump.json");
    std::fs::write(&foreign_file, "{}")?;
    restic_ok(
        &repo,
        &[
            "backup",
            "--host",
            "host-0",
            &foreign_file.display().to_string(),
        ],
        &env,
    )?;

    // Three backups each, interleaved, keepLast 1.
    for round in 0..3 {
        for t in &TENANTS {
            let mut args = backup_args(&repo, &os.url, t.index);
            set_flag(&mut args, "namespace", t.namespace);
            set_flag(&mut args, "configuration", t.configuration);
            set_flag(&mut args, "keep-last", "1");
            set_flag(&mut args, "prune", "true");
            let b = agent(&args, &env, tmp.path())?;
            ensure!(b.ok(), "backup {round} of {}: {}", t.index, b.stderr());
        }
    }

    let list = snapshots(&repo, &env)?;
    let mut identities: Vec<(String, String)> = list
        .iter()
        .filter_map(|(_, tags)| {
            let find = |k: &str| {
                tags.iter()
                    .find_map(|t| t.strip_prefix(k))
                    .map(str::to_string)
            };
            Some((
                find("cairn.dev/namespace=")?,
                find("cairn.dev/configuration=")?,
            ))
        })
        .collect();
    identities.sort();
    assert_eq!(
        identities,
        [
            ("team-a".to_string(), "orders".to_string()),
            ("team-a".into(), "users".into()),
            ("team-b".into(), "orders".into()),
        ],
        "one snapshot per configuration: {list:?}"
    );
    assert_eq!(list.len(), 4, "and the foreign one survived: {list:?}");
    let id_of = |ns: &str, cfg: &str| {
        list.iter()
            .find(|(_, tags)| {
                tags.contains(&format!("cairn.dev/namespace={ns}"))
                    && tags.contains(&format!("cairn.dev/configuration={cfg}"))
            })
            .map(|(id, _)| id.clone())
            .expect("snapshot")
    };

    // `latest` in team-b is team-b's own snapshot, though team-a's were made after it.
    let b = agent(
        &restore_args(&repo, &os.url, "team-b", "latest", "rb-"),
        &env,
        tmp.path(),
    )?;
    ensure!(b.ok(), "restore in team-b: {}", b.stderr());
    let Some(AgentResult::Restore(res)) = &b.result else {
        anyhow::bail!("no restore result: {}", b.stderr());
    };
    assert_eq!(res.snapshot, id_of("team-b", "orders"));
    assert_eq!(os.count("rb-tenant-b-orders")?, 33);

    // team-a's latest is the newest of its two; named by configuration, the other one.
    let a = agent(
        &restore_args(&repo, &os.url, "team-a", "latest", "ra-"),
        &env,
        tmp.path(),
    )?;
    ensure!(a.ok(), "restore in team-a: {}", a.stderr());
    assert_eq!(os.count("ra-tenant-a-users")?, 22);
    let mut named = restore_args(&repo, &os.url, "team-a", "latest", "rn-");
    set_flag(&mut named, "source-configuration", "orders");
    let n = agent(&named, &env, tmp.path())?;
    ensure!(n.ok(), "restore of team-a/orders: {}", n.stderr());
    assert_eq!(os.count("rn-tenant-a-orders")?, 11);

    // team-b naming team-a's snapshot, or the foreign one, is refused with the reason.
    let theirs = id_of("team-a", "orders");
    let refused = agent(
        &restore_args(&repo, &os.url, "team-b", &theirs[..8], "rx-"),
        &env,
        tmp.path(),
    )?;
    let (phase, reason) = refused.failure()?;
    assert_eq!(phase, "repository", "{reason}");
    assert!(
        reason.contains("was made in namespace \"team-a\""),
        "{reason}"
    );
    let foreign = list
        .iter()
        .find(|(_, tags)| !tags.iter().any(|t| t.starts_with("cairn.dev/")))
        .map(|(id, _)| id.clone())
        .expect("the foreign snapshot");
    let refused = agent(
        &restore_args(&repo, &os.url, "team-b", &foreign[..8], "rx-"),
        &env,
        tmp.path(),
    )?;
    assert!(refused.failure()?.1.contains("no cairn identity"));
    // The Repository's own namespace may restore team-b's snapshot.
    let owner = agent(
        &restore_args(
            &repo,
            &os.url,
            "team-a",
            &id_of("team-b", "orders")[..8],
            "ro-",
        ),
        &env,
        tmp.path(),
    )?;
    ensure!(owner.ok(), "the owner's restore: {}", owner.stderr());

    // Forgetting snapshots without identity is an explicit act, never a configuration's.
    let forget = |extra: &[&str]| {
        let mut args = vec![
            "forget".to_string(),
            format!("--repository={repo}"),
            "--host=host-0".into(),
            "--keep-last=1".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        agent(&args, &env, tmp.path())
    };
    let unscoped = forget(&[])?;
    assert!(!unscoped.ok(), "forget without a scope ran");
    let scoped = forget(&["--namespace=team-a", "--configuration=orders"])?;
    ensure!(scoped.ok(), "{}", scoped.stderr());
    assert_eq!(snapshots(&repo, &env)?.len(), 4);
    let foreign_only = forget(&["--without-identity"])?;
    ensure!(foreign_only.ok(), "{}", foreign_only.stderr());
    assert_eq!(snapshots(&repo, &env)?.len(), 4);
    Ok(())
}
