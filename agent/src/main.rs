//! cairn-agent: the program inside backup and restore Jobs (see the library's docs).

use std::process::ExitCode;

use cairn_agent::cli::{
    CheckArgs, Cli, Command, ForgetArgs, InventoryArgs, SnapshotsArgs, UnlockArgs, WipeArgs,
};
use cairn_agent::client::Client;
use cairn_agent::error::{AgentError, Failed, InPhase};
use cairn_agent::output::{apply_priority, emit, failure};
use cairn_agent::{files, location, repo, restore};
use cairn_api::result::{AgentResult, InventoryResult, RepositoryTotals};
use clap::Parser;

/// glibc gives every busy thread its own malloc arena, and each arena keeps the page and chunk
/// buffers freed in it: two arenas held a backup's peak at 149 MiB instead of 237, at no cost
/// in CPU (`cargo xtask bench agent`). musl, the image's libc, has no arenas.
fn limit_malloc_arenas() {
    #[cfg(target_env = "gnu")]
    // SAFETY: called first thing in `main`, before any other thread exists; mallopt only
    // changes the allocator's parameters.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(
            "info,rustic_core=warn,rustic_backend=warn,opendal=error",
        )
    });
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .init();

    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let _ = e.print();
            let reason = e.to_string();
            let reason = reason
                .lines()
                .next()
                .unwrap_or("bad command line")
                .to_string();
            emit(&failure(&Failed {
                phase: "config",
                error: AgentError::Usage(reason.trim_start_matches("error: ").to_string()),
            }));
            return ExitCode::from(2);
        }
    };
    apply_priority();
    let terminated = || {
        emit(&failure(&Failed {
            phase: "terminated",
            error: AgentError::Terminated,
        }));
        // 128 + SIGTERM, as a shell reports a process the signal ended.
        std::process::exit(143);
    };
    if let Err(e) = cairn_agent::terminate::listen(terminated) {
        tracing::warn!(error = %e, "SIGTERM is not handled: a terminated run leaves its lock");
    }
    // Before any thread exists: it may set SSL_CERT_FILE for the storage backend.
    let tmp = std::env::var("CAIRN_TMP_DIR")
        .ok()
        .filter(|s| !s.is_empty())
        .map_or_else(std::env::temp_dir, Into::into);
    if let Err(e) = location::install_repository_ca(&tmp) {
        emit(&failure(&Failed {
            phase: "config",
            error: e,
        }));
        return ExitCode::FAILURE;
    }
    // rustls has two providers in this binary (ring for us, aws-lc-rs for opendal's reqwest):
    // name a process default so nothing has to guess.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let outcome = run(cli.command);
    while cairn_agent::terminate::terminating() {
        // The SIGTERM thread reports and exits.
        std::thread::park();
    }
    match outcome {
        Ok(Some(result)) => {
            emit(&result);
            match result {
                // The check ran and found damage (1 is kept for a check that could not run).
                AgentResult::Check(c) if !c.ok => ExitCode::from(3),
                _ => ExitCode::SUCCESS,
            }
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(f) => {
            tracing::error!("{f}");
            emit(&failure(&f));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<Option<AgentResult>, Failed> {
    match command {
        Command::Backup(args) => {
            let plan = args.plan().phase("config")?;
            let client =
                Client::new(&args.target.client_options().phase("config")?).phase("config")?;
            cairn_agent::backup::run(&plan, &client).map(|r| Some(AgentResult::Backup(r)))
        }
        Command::Restore(args) => {
            let plan = args.plan().phase("config")?;
            let client =
                Client::new(&args.target.client_options().phase("config")?).phase("config")?;
            restore::run(&plan, &client).map(|r| Some(AgentResult::Restore(r)))
        }
        Command::Snapshots(args) => snapshots(&args),
        Command::Forget(args) => forget(&args),
        Command::Wipe(args) => wipe(&args),
        Command::Check(args) => check(&args),
        Command::Inventory(args) => inventory(&args),
        Command::Unlock(args) => unlock(&args),
        Command::Hook(args) => cairn_agent::hooks::run(&args).map(|()| None),
        Command::Snapshot(args) => {
            let plan = args.plan().phase("config")?;
            let client =
                Client::new(&args.target.client_options().phase("config")?).phase("config")?;
            cairn_agent::native_backup::run(&plan, &client).map(|r| Some(AgentResult::Backup(r)))
        }
        Command::SnapshotRestore(args) => {
            let plan = args.plan().phase("config")?;
            let client =
                Client::new(&args.target.client_options().phase("config")?).phase("config")?;
            cairn_agent::native_restore::run(&plan, &client).map(|r| Some(AgentResult::Restore(r)))
        }
    }
}

/// `snapshots`: the repository's snapshots (of one host, if given) as a JSON array.
fn snapshots(args: &SnapshotsArgs) -> Result<Option<AgentResult>, Failed> {
    let be = repo::backend(&args.repo.location().phase("config")?, &args.repo.options())
        .phase("repository")?;
    let r = repo::open(be, &args.repo.options(), false).phase("repository")?;
    let host = args.host.clone();
    let mut snaps = r
        .get_matching_snapshots(|s| host.is_empty() || s.hostname == host)
        .map_err(|e| AgentError::rustic("list snapshots", e))
        .phase("repository")?;
    snaps.sort_by(|a, b| a.time.cmp(&b.time));
    let list: Vec<serde_json::Value> = snaps
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id.to_hex().to_string(),
                "time": s.time.timestamp().to_string(),
                "host": s.hostname,
                "tags": s.tags.iter().collect::<Vec<_>>(),
                "paths": s.paths.iter().collect::<Vec<_>>(),
            })
        })
        .collect();
    println!("{}", serde_json::Value::Array(list));
    Ok(None)
}

/// `inventory`: every snapshot's line, then the repository's totals as the result.
fn inventory(args: &InventoryArgs) -> Result<Option<AgentResult>, Failed> {
    let opts = args.repo.options();
    let loc = args.repo.location().phase("config")?;
    // A repository not made yet (a new Repository) holds no snapshot.
    if !files::Store::new(&loc, &opts)
        .phase("config")?
        .has_config()
        .phase("repository")?
    {
        return Ok(Some(AgentResult::Inventory(InventoryResult::default())));
    }
    let be = repo::backend(&loc, &opts).phase("repository")?;
    let r = repo::open(be, &opts, false).phase("repository")?;
    listed(&r).map(Some)
}

/// `unlock`: the locks whose holders are gone removed, the live ones described.
fn unlock(args: &UnlockArgs) -> Result<Option<AgentResult>, Failed> {
    let opts = args.repo.options();
    let loc = args.repo.location().phase("config")?;
    let store = files::Store::new(&loc, &opts).phase("config")?;
    let be = repo::backend(&loc, &opts).phase("repository")?;
    let r = repo::open(be, &opts, false).phase("repository")?;
    let result = cairn_agent::lock::remove_stale(store, &r).phase("repository")?;
    Ok(Some(AgentResult::Unlock(result)))
}

/// `forget`: retention under an exclusive lock (a shared one for a dry run).
fn forget(args: &ForgetArgs) -> Result<Option<AgentResult>, Failed> {
    let opts = args.repo.options();
    let be = repo::backend(&args.repo.location().phase("config")?, &opts).phase("repository")?;
    let r = repo::open(be, &opts, false).phase("repository")?;
    if !args.snapshot.is_empty() {
        return forget_one(&r, args);
    }
    let retention = args.retention.retention();
    let scope = args.scope().phase("config")?;
    // restic's forget and prune lock exclusively; so do we.
    let lock = cairn_agent::lock::RepoLock::acquire(
        files::Store::new(&args.repo.location().phase("config")?, &opts).phase("config")?,
        &r,
        !retention.dry_run,
    )
    .phase("repository")?;
    let out = repo::apply_retention(&r, &args.host(), &scope, &retention, Some(&lock))
        .phase("retention")?;
    lock.release().phase("retention")?;
    println!(
        "{}",
        serde_json::json!({ "kept": out.kept, "removed": out.removed })
    );
    Ok(None)
}

/// `forget --snapshot <id>`: that snapshot alone, under an exclusive lock, then the inventory.
fn forget_one(r: &repo::OpenRepo, args: &ForgetArgs) -> Result<Option<AgentResult>, Failed> {
    let id = args.snapshot.trim();
    let snap = r
        .get_snapshot_from_str(id, |_| true)
        .map_err(|e| AgentError::rustic(&format!("snapshot {id}"), e))
        .phase("retention")?;
    if snap.id.to_hex().as_str() != id {
        return Err(AgentError::Usage(format!(
            "--snapshot {id:?}: give the snapshot's full id ({})",
            snap.id.to_hex().as_str()
        )))
        .phase("config");
    }
    let lock = cairn_agent::lock::RepoLock::acquire(
        files::Store::new(&args.repo.location().phase("config")?, &args.repo.options())
            .phase("config")?,
        r,
        true,
    )
    .phase("repository")?;
    r.delete_snapshots(&[snap.id])
        .map_err(|e| AgentError::rustic("forget", e))
        .phase("retention")?;
    lock.release().phase("retention")?;
    tracing::info!(snapshot = %snap.id, "forgotten");
    listed(r).map(Some)
}

/// Every snapshot's inventory line, and the result with the repository's totals.
fn listed(r: &repo::OpenRepo) -> Result<AgentResult, Failed> {
    let snapshots = cairn_agent::inventory::write(r).phase("repository")?;
    let (snapshot_count, size_bytes) = repo::totals(r).phase("repository")?;
    Ok(AgentResult::Inventory(InventoryResult {
        snapshots,
        repository: RepositoryTotals {
            snapshot_count,
            size_bytes,
            integrity: None,
        },
    }))
}

/// `wipe`: every file of the repository deleted, by someone who can open it.
fn wipe(args: &WipeArgs) -> Result<Option<AgentResult>, Failed> {
    let loc = args.repo.location().phase("config")?;
    let store = files::Store::new(&loc, &args.repo.options()).phase("config")?;
    store.probe(files::PROBE_TIMEOUT).phase("repository")?;
    // Only who can open the repository may delete it: the storage Secret's password
    // must decrypt one of its keys (credentials alone may reach other tenants' data).
    if store.has_config().phase("repository")? {
        let opts = args.repo.options();
        let be = repo::backend(&loc, &opts).phase("repository")?;
        repo::open(be, &opts, false).phase("repository")?;
    }
    let removed = store.wipe().phase("wipe")?;
    tracing::info!(removed, "repository wiped");
    println!("wiped {}: {removed} files removed", store.name());
    Ok(None)
}

/// `check`: the repository's integrity, and which snapshots its damage reaches.
fn check(args: &CheckArgs) -> Result<Option<AgentResult>, Failed> {
    let subset = args.subset().phase("config")?;
    let opts = args.repo.options();
    let loc = args.repo.location().phase("config")?;
    let be = repo::backend(&loc, &opts).phase("repository")?;
    let r = repo::open(be.clone(), &opts, false).phase("repository")?;
    // A shared lock, as backups take: restic's prune (exclusive) does not delete packs
    // under the check.
    let store = files::Store::new(&loc, &opts).phase("config")?;
    let lock = cairn_agent::lock::RepoLock::acquire(store, &r, false).phase("repository")?;
    let result = cairn_agent::check::run(r, be.as_ref(), subset).phase("check")?;
    lock.release().phase("check")?;
    Ok(Some(AgentResult::Check(result)))
}
