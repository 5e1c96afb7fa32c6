//! The command line: `cairn-agent backup|restore|snapshots|forget|check|wipe|hook`, with the flags of
//! `manifests/catalog/functions.yaml`. Jobs pass every flag, often empty (`--keep-last=`): an
//! empty value means "not set". An unknown flag is an error.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgAction, Args, Parser, Subcommand};

use crate::budget;
use crate::client::{Auth, ClientOptions};
use crate::error::{AgentError, Result};
use crate::identity::{Identity, RestoreScope, RetentionScope};
use crate::location::{Location, RepoOptions};
use crate::repo::Retention;
use crate::restore::{Existing, OnFailure};
use crate::select::{Rename, Selector, split_list};

#[derive(Parser, Debug)]
#[command(
    name = "cairn-agent",
    version,
    about = "Backs up Elasticsearch/OpenSearch into a restic-format repository and restores it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Dump the selected indices (and the templates) into one snapshot, then apply retention.
    Backup(BackupArgs),
    /// Load a snapshot into the server.
    Restore(RestoreArgs),
    /// List the repository's snapshots as JSON.
    Snapshots(SnapshotsArgs),
    /// Apply a retention policy to a host's snapshots.
    Forget(ForgetArgs),
    /// Check the repository's integrity.
    Check(CheckArgs),
    /// Delete every file of the repository from its backend (a Repository with `wipeOut`).
    Wipe(WipeArgs),
    /// Write one inventory line per snapshot (for the controller's Snapshot objects).
    Inventory(InventoryArgs),
    /// Remove the locks whose holders are gone (never a live one), as a run does before it
    /// locks.
    Unlock(UnlockArgs),
    /// Run a hook of `spec.hooks` (`preBackup`, `postRestore`, ...).
    Hook(crate::hooks::HookArgs),
    /// Take one native snapshot through the server's `_snapshot` API (driver Native), then
    /// apply retention to this configuration's snapshots.
    Snapshot(SnapshotArgs),
    /// Restore a native snapshot through the server's `_restore` API.
    SnapshotRestore(SnapshotRestoreArgs),
}

/// `true`/`false` (and 1/0, yes/no); empty is false.
pub fn parse_bool(s: &str) -> std::result::Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "" | "false" | "0" | "no" => Ok(false),
        "true" | "1" | "yes" => Ok(true),
        other => Err(format!("{other:?} is not true or false")),
    }
}

/// A number that may be empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaybeU32(pub Option<u32>);

pub fn parse_maybe_u32(s: &str) -> std::result::Result<MaybeU32, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(MaybeU32(None));
    }
    s.parse::<u32>()
        .map(|n| MaybeU32(Some(n)))
        .map_err(|_| format!("{s:?} is not a whole number"))
}

/// `300s`, `5m`, `1h30m`, `2h` (Go's syntax, as everywhere in cairn), or plain seconds, at
/// most 24h; empty means the default.
pub fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    cairn_api::task_params::parse_wait(s, Duration::from_secs(300))
}

/// `auto` (or empty) or a number of slices.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slices(pub Option<u32>);

pub fn parse_slices(s: &str) -> std::result::Result<Slices, String> {
    match s.trim() {
        "" | "auto" => Ok(Slices(None)),
        n => match n.parse::<u32>() {
            Ok(0) | Err(_) => Err(format!("{n:?}: expected auto or a number >= 1")),
            Ok(n) => Ok(Slices(Some(n.min(64)))),
        },
    }
}

/// Where the repository is.
#[derive(Args, Debug, Clone)]
pub struct RepoArgs {
    /// In restic's notation: local:/path, s3:https://host/bucket/prefix, gs:, azure:, b2:,
    /// swift:, rest:.
    #[arg(long)]
    pub repository: String,
    #[arg(long, default_value = "")]
    pub region: String,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub insecure_tls: bool,
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub max_connections: MaybeU32,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub enable_cache: bool,
    /// Interim volume: backup stages the documents there (one NDJSON file per index) before
    /// archiving them, and the repository cache lives there. Empty: documents are streamed.
    #[arg(long, default_value = "")]
    pub interim_data_dir: String,
}

impl RepoArgs {
    pub fn location(&self) -> Result<Location> {
        crate::location::parse_location(&self.repository)
    }

    pub fn options(&self) -> RepoOptions {
        let tmp = std::env::var("CAIRN_TMP_DIR")
            .ok()
            .filter(|s| !s.is_empty());
        let cache_dir = if !self.interim_data_dir.is_empty() {
            Some(PathBuf::from(&self.interim_data_dir).join("cache"))
        } else {
            tmp.map(|t| PathBuf::from(t).join("cache"))
        };
        RepoOptions {
            region: Some(self.region.clone()).filter(|r| !r.is_empty()),
            insecure_tls: self.insecure_tls,
            max_connections: self.max_connections.0,
            cache_dir,
            no_cache: !self.enable_cache,
        }
    }
}

/// The server.
#[derive(Args, Debug, Clone)]
pub struct TargetArgs {
    #[arg(long)]
    pub url: String,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub insecure_skip_tls_verify: bool,
    #[arg(long, default_value = "")]
    pub server_name: String,
    /// The AppBinding's Secret: `username`/`password` (or `ADMIN_USERNAME`/`ADMIN_PASSWORD`), or
    /// `apiKey`.
    #[arg(long, default_value = "")]
    pub credentials_dir: String,
    #[arg(long, default_value = "300s", value_parser = parse_duration)]
    pub wait_timeout: Duration,
    #[arg(long, default_value = "*")]
    pub include: String,
    #[arg(long, default_value = "")]
    pub exclude: String,
    /// Stash's `--match`: a JavaScript regular expression an index name must match.
    #[arg(long = "match", default_value = "")]
    pub matcher: String,
}

impl TargetArgs {
    pub fn client_options(&self) -> Result<ClientOptions> {
        let dir = (!self.credentials_dir.is_empty()).then(|| PathBuf::from(&self.credentials_dir));
        Ok(ClientOptions {
            url: self.url.clone(),
            auth: Auth::from_dir(dir.as_deref())?,
            ca_pem: std::env::var("CAIRN_TARGET_CA_CERT")
                .ok()
                .filter(|s| !s.trim().is_empty()),
            server_name: Some(self.server_name.clone()).filter(|s| !s.is_empty()),
            insecure: self.insecure_skip_tls_verify,
        })
    }

    pub fn selector(&self) -> Result<Selector> {
        Selector::new(&self.include, &self.exclude).with_match(&self.matcher)
    }
}

/// Retention flags (restic's `forget`).
#[derive(Args, Debug, Clone)]
pub struct RetentionArgs {
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub keep_last: MaybeU32,
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub keep_hourly: MaybeU32,
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub keep_daily: MaybeU32,
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub keep_weekly: MaybeU32,
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub keep_monthly: MaybeU32,
    #[arg(long, default_value = "", value_parser = parse_maybe_u32)]
    pub keep_yearly: MaybeU32,
    /// Comma-separated tags; snapshots with any of them are kept.
    #[arg(long, default_value = "")]
    pub keep_tags: String,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub prune: bool,
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub dry_run: bool,
}

impl RetentionArgs {
    pub fn retention(&self) -> Retention {
        Retention {
            keep_last: self.keep_last.0,
            keep_hourly: self.keep_hourly.0,
            keep_daily: self.keep_daily.0,
            keep_weekly: self.keep_weekly.0,
            keep_monthly: self.keep_monthly.0,
            keep_yearly: self.keep_yearly.0,
            keep_tags: split_list(&self.keep_tags),
            prune: self.prune,
            dry_run: self.dry_run,
        }
    }
}

/// The snapshot's host: the target alias (`host-0` when empty, as the API defaults it).
fn host_or_default(h: &str) -> String {
    if h.trim().is_empty() {
        cairn_api::defaults::DEFAULT_ALIAS.to_string()
    } else {
        h.trim().to_string()
    }
}

#[derive(Args, Debug, Clone)]
pub struct BackupArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long, default_value = "")]
    pub host: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// `key=value` tags of the snapshot; repeatable.
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// The session's namespace: with --configuration, the snapshot's identity (restic tags
    /// `cairn.dev/namespace=`, `cairn.dev/configuration=`) and the scope of its retention.
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// The BackupConfiguration that makes the snapshot.
    #[arg(long, default_value = "")]
    pub configuration: String,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[arg(long, default_value = "auto", value_parser = parse_slices)]
    pub slices: Slices,
    /// Documents per page when reading, at most (pages of large documents hold fewer: see
    /// `budget`).
    #[arg(long, default_value = "5000")]
    pub page_size: u32,
    /// What the snapshot leaves out, in elasticdump's words (`template,settings`): Stash's
    /// `--ignoreType`/`--includeType`, translated.
    #[arg(long, default_value = "")]
    pub skip: String,
}

impl BackupArgs {
    pub fn plan(&self) -> Result<crate::backup::BackupPlan> {
        if self.page_size == 0 || self.page_size > 10_000 {
            return Err(AgentError::Usage("--page-size must be 1..=10000".into()));
        }
        Ok(crate::backup::BackupPlan {
            location: self.repo.location()?,
            repo: self.repo.options(),
            host: host_or_default(&self.host),
            tags: self
                .tags
                .iter()
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty() && !t.ends_with('='))
                .collect(),
            identity: Identity::new(&self.namespace, &self.configuration),
            retention: self.retention.retention(),
            selector: self.target.selector()?,
            skip: cairn_api::stash_args::parse_types(&self.skip)
                .map_err(|e| AgentError::Usage(format!("--skip: {e}")))?,
            wait_timeout: self.target.wait_timeout,
            slices: self.slices.0,
            page_size: self.page_size,
            page_bytes: budget::PAGE_BYTES,
            inflight_bytes: budget::INFLIGHT_BYTES,
            interim_dir: Some(self.repo.interim_data_dir.trim())
                .filter(|d| !d.is_empty())
                .map(PathBuf::from),
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long, default_value = "")]
    pub host: String,
    /// Whose snapshots to restore (defaults to --host).
    #[arg(long, default_value = "")]
    pub source_host: String,
    /// A snapshot id (or its prefix), or `latest`.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// The RestoreSession's namespace: `latest` is the newest of its own snapshots, and a
    /// snapshot id of another namespace is refused (unless it is the Repository's namespace).
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// The Repository's namespace (defaults to --namespace).
    #[arg(long, default_value = "")]
    pub repository_namespace: String,
    /// `latest` among this configuration's snapshots only.
    #[arg(long, default_value = "")]
    pub source_configuration: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, default_value = "")]
    pub rename_prefix: String,
    #[arg(long, default_value = "")]
    pub rename_suffix: String,
    #[arg(long, default_value = "")]
    pub rename_pattern: String,
    #[arg(long, default_value = "")]
    pub rename_replacement: String,
    #[arg(long, default_value = "fail")]
    pub existing: Existing,
    /// What a failed or terminated restore leaves of the indices it created: `delete` them,
    /// or `close` them, their settings put back and labelled, for a person to inspect.
    #[arg(long, default_value = "delete")]
    pub on_failure: OnFailure,
    /// Parallel `_bulk` requests.
    #[arg(long, default_value = "4")]
    pub workers: usize,
    /// Documents per `_bulk` request, at most (and bytes: see `budget`).
    #[arg(long, default_value = "5000")]
    pub batch_docs: usize,
}

impl RestoreArgs {
    pub fn plan(&self) -> Result<crate::restore::RestorePlan> {
        let snapshots = split_list(&self.snapshot);
        if snapshots.len() > 1 {
            return Err(AgentError::Usage(format!(
                "--snapshot names {} snapshots; one restore loads one",
                snapshots.len()
            )));
        }
        let source_host = if self.source_host.trim().is_empty() {
            host_or_default(&self.host)
        } else {
            self.source_host.trim().to_string()
        };
        Ok(crate::restore::RestorePlan {
            location: self.repo.location()?,
            repo: self.repo.options(),
            snapshot: snapshots
                .into_iter()
                .next()
                .unwrap_or_else(|| "latest".into()),
            source_host: Some(source_host),
            scope: RestoreScope::new(
                &self.namespace,
                &self.repository_namespace,
                &self.source_configuration,
            ),
            selector: self.target.selector()?,
            rename: Rename::new(
                &self.rename_prefix,
                &self.rename_suffix,
                &self.rename_pattern,
                &self.rename_replacement,
            )?,
            existing: self.existing,
            on_failure: self.on_failure,
            wait_timeout: self.target.wait_timeout,
            workers: self.workers.clamp(1, 64),
            batch_docs: self.batch_docs.clamp(1, 100_000),
            batch_bytes: budget::BATCH_BYTES,
            inflight_bytes: budget::INFLIGHT_BYTES,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotsArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Only this host's snapshots.
    #[arg(long, default_value = "")]
    pub host: String,
}

#[derive(Args, Debug, Clone)]
pub struct ForgetArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[arg(long, default_value = "")]
    pub host: String,
    /// With --configuration: forget among this configuration's snapshots only.
    #[arg(long, default_value = "")]
    pub namespace: String,
    #[arg(long, default_value = "")]
    pub configuration: String,
    /// Forget among the snapshots without cairn's identity instead (made before cairn tagged
    /// snapshots, or by Stash or restic): no configuration's retention ever touches them.
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub without_identity: bool,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Forget exactly this snapshot (its full id) instead of applying a retention, then write
    /// the inventory (a Snapshot object annotated `cairn.dev/forget`).
    #[arg(long, default_value = "")]
    pub snapshot: String,
}

impl ForgetArgs {
    pub fn host(&self) -> String {
        host_or_default(&self.host)
    }

    /// Whose snapshots to forget: one identity, or (asked for by name) those without one.
    pub fn scope(&self) -> Result<RetentionScope> {
        match (
            Identity::new(&self.namespace, &self.configuration),
            self.without_identity,
        ) {
            (Some(identity), false) => Ok(RetentionScope::Own(identity)),
            (None, true) => Ok(RetentionScope::WithoutIdentity),
            _ => Err(AgentError::Usage(
                "name whose snapshots to forget: --namespace and --configuration, or \
                 --without-identity for the snapshots cairn did not tag (no configuration's \
                 retention forgets those)"
                    .into(),
            )),
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct InventoryArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Args, Debug, Clone)]
pub struct UnlockArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Also read and verify every pack's data (unless --read-data-subset names a part).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub read_data: bool,
    /// Read the data of these packs only: `all`, `n/m` or `day/m` (see `check::ReadSubset`).
    #[arg(long, default_value = "")]
    pub read_data_subset: String,
}

impl CheckArgs {
    /// The packs whose data the check reads, today.
    pub fn subset(&self) -> Result<crate::check::ReadSubset> {
        crate::check::ReadSubset::parse(
            &self.read_data_subset,
            self.read_data,
            crate::check::today(),
        )
        .map_err(|e| AgentError::Usage(format!("--read-data-subset: {e}")))
    }
}

/// `wipe`: only where the repository is (`api::resolve::resolve_wipe_job` passes
/// `--repository`, `--region` and `--insecure-tls`). No password is needed: nothing is decrypted.
#[derive(Args, Debug, Clone)]
pub struct WipeArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// Where a native repository lives: the Repository's backend as the Job passes it.
#[derive(Args, Debug, Clone)]
pub struct NativeRepoArgs {
    /// local, s3, gcs or azure.
    #[arg(long)]
    pub provider: String,
    #[arg(long, default_value = "")]
    pub bucket: String,
    #[arg(long, default_value = "")]
    pub prefix: String,
    #[arg(long, default_value = "")]
    pub endpoint: String,
    #[arg(long, default_value = "")]
    pub region: String,
    /// `local`: the directory on the cluster's nodes (under their `path.repo`).
    #[arg(long, default_value = "")]
    pub location: String,
    /// The Repository's namespace and name: the server-side repository's name.
    #[arg(long)]
    pub repository_namespace: String,
    #[arg(long)]
    pub repository_name: String,
    /// How long the server may take over a snapshot or a restore.
    #[arg(long, default_value = "6h", value_parser = parse_long_duration)]
    pub snapshot_timeout: Duration,
    /// The repository's rate limits (`40mb`, `1gb`; `0` lifts them); empty: the server's
    /// default, 40 MB/s per node.
    #[arg(long, default_value = "")]
    pub max_snapshot_bytes_per_sec: String,
    #[arg(long, default_value = "")]
    pub max_restore_bytes_per_sec: String,
}

/// A duration up to a week (`6h`, `90m`); empty means 6 hours.
pub fn parse_long_duration(s: &str) -> std::result::Result<Duration, String> {
    match s.trim() {
        "" => Ok(Duration::from_secs(6 * 3600)),
        t => cairn_api::duration::parse_go_duration(t)
            .ok()
            .and_then(|d| d.to_std().ok())
            .filter(|d| !d.is_zero() && *d <= Duration::from_secs(7 * 24 * 3600))
            .ok_or_else(|| format!("{t:?} is not a duration from 1s to 168h, e.g. 6h or 90m")),
    }
}

impl NativeRepoArgs {
    pub fn server_repo(&self) -> crate::native_repo::ServerRepo {
        let mut repo = crate::native_repo::ServerRepo::new(
            &self.repository_namespace,
            &self.repository_name,
            cairn_api::native::NativeLocation {
                provider: self.provider.trim().to_string(),
                bucket: self.bucket.trim().to_string(),
                prefix: self.prefix.trim().to_string(),
                endpoint: self.endpoint.trim().to_string(),
                region: self.region.trim().to_string(),
                path: self.location.trim().to_string(),
                namespace: self.repository_namespace.trim().to_string(),
            },
        );
        let throttles = [
            (
                "max_snapshot_bytes_per_sec",
                &self.max_snapshot_bytes_per_sec,
            ),
            ("max_restore_bytes_per_sec", &self.max_restore_bytes_per_sec),
        ];
        repo.throttles = throttles
            .into_iter()
            .filter(|(_, v)| !v.trim().is_empty())
            .map(|(k, v)| (k, v.trim().to_string()))
            .collect();
        repo
    }
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub repo: NativeRepoArgs,
    #[arg(long, default_value = "")]
    pub host: String,
    #[command(flatten)]
    pub target: TargetArgs,
    /// The session's namespace, configuration and name: the snapshot's name and metadata.
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub configuration: String,
    #[arg(long)]
    pub session: String,
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Also snapshot the cluster's global state (templates, persistent settings, ...).
    #[arg(long, default_value = "false", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub include_global_state: bool,
}

impl SnapshotArgs {
    pub fn plan(&self) -> Result<crate::native_backup::SnapshotPlan> {
        let identity = cairn_api::native::SnapshotIdentity {
            namespace: self.namespace.trim().to_string(),
            configuration: self.configuration.trim().to_string(),
            session: self.session.trim().to_string(),
            host: host_or_default(&self.host),
        };
        if let Some(why) = cairn_api::native::snapshot_name_problem(&identity.snapshot_name()) {
            return Err(AgentError::Usage(format!(
                "--namespace, --configuration, --session: {why}"
            )));
        }
        Ok(crate::native_backup::SnapshotPlan {
            repo: self.repo.server_repo(),
            identity,
            selector: self.target.selector()?,
            include_global_state: self.include_global_state,
            retention: self.retention.retention(),
            wait_timeout: self.target.wait_timeout,
            snapshot_timeout: self.repo.snapshot_timeout,
        })
    }
}

#[derive(Args, Debug, Clone)]
pub struct SnapshotRestoreArgs {
    #[command(flatten)]
    pub repo: NativeRepoArgs,
    /// A snapshot's name, or `latest`.
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// The RestoreSession's namespace.
    #[arg(long)]
    pub namespace: String,
    #[arg(long, default_value = "")]
    pub source_configuration: String,
    #[command(flatten)]
    pub target: TargetArgs,
    #[arg(long, default_value = "")]
    pub rename_pattern: String,
    #[arg(long, default_value = "")]
    pub rename_replacement: String,
    #[arg(long, default_value = "true", value_parser = parse_bool, action = ArgAction::Set,
          num_args = 0..=1, default_missing_value = "true")]
    pub include_aliases: bool,
    /// Index settings the restored indices get, as a JSON object
    /// (`{"index.number_of_replicas":0}`).
    #[arg(long, default_value = "")]
    pub index_settings: String,
    #[arg(long, default_value = "fail")]
    pub existing: Existing,
}

impl SnapshotRestoreArgs {
    pub fn plan(&self) -> Result<crate::native_restore::SnapshotRestorePlan> {
        let snapshots = split_list(&self.snapshot);
        let [snapshot] = snapshots.as_slice() else {
            return Err(AgentError::Usage(format!(
                "--snapshot names {} snapshots; one restore restores one",
                snapshots.len()
            )));
        };
        if let Some(why) = cairn_api::native::snapshot_name_problem(snapshot) {
            return Err(AgentError::Usage(format!("--snapshot: {why}")));
        }
        let index_settings = match self.index_settings.trim() {
            "" => serde_json::Map::new(),
            text => match serde_json::from_str(text) {
                Ok(serde_json::Value::Object(m)) => m,
                _ => {
                    return Err(AgentError::Usage(format!(
                        "--index-settings {text:?} is not a JSON object, e.g. \
                         {{\"index.number_of_replicas\":0}}"
                    )));
                }
            },
        };
        Ok(crate::native_restore::SnapshotRestorePlan {
            repo: self.repo.server_repo(),
            snapshot: snapshot.clone(),
            namespace: self.namespace.trim().to_string(),
            repository_namespace: self.repo.repository_namespace.trim().to_string(),
            source_configuration: self.source_configuration.trim().to_string(),
            selector: self.target.selector()?,
            rename: native_rename(&self.rename_pattern, &self.rename_replacement)?,
            rename_pattern: self.rename_pattern.clone(),
            rename_replacement: self.rename_replacement.clone(),
            include_aliases: self.include_aliases,
            index_settings,
            existing: self.existing,
            wait_timeout: self.target.wait_timeout,
            snapshot_timeout: self.repo.snapshot_timeout,
        })
    }
}

/// The native restore's rename as cairn reads it, refused when the server would read the
/// replacement otherwise (its target names decide what `existing` checks and deletes).
fn native_rename(pattern: &str, replacement: &str) -> Result<Rename> {
    if let Some(why) = cairn_api::native::rename_replacement_problem(replacement) {
        return Err(AgentError::Usage(why));
    }
    Rename::new("", "", pattern, replacement)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> std::result::Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("cairn-agent").chain(args.iter().copied()))
    }

    /// The table `target.args` is judged by (in `cairn-api`) gives every flag of `backup` and
    /// `restore` a verdict, and names no flag the agent does not have.
    #[test]
    fn the_flag_table_covers_every_flag() {
        use cairn_api::agent_flags::{AGENT_FLAGS, FlagVerdict, agent_flag};
        use clap::CommandFactory;
        let cli = Cli::command();
        let mut ours = std::collections::BTreeSet::new();
        for sub in ["backup", "restore"] {
            let cmd = cli.find_subcommand(sub).expect("subcommand");
            for arg in cmd.get_arguments() {
                let Some(long) = arg.get_long() else { continue };
                if long == "help" || long == "version" {
                    continue;
                }
                assert!(
                    agent_flag(long).is_some(),
                    "--{long} of {sub} has no verdict"
                );
                ours.insert(long.to_string());
            }
        }
        let has = |sub: &str, flag: &str| {
            cli.find_subcommand(sub)
                .is_some_and(|c| c.get_arguments().any(|a| a.get_long() == Some(flag)))
        };
        for flag in AGENT_FLAGS {
            assert!(
                ours.contains(flag.name),
                "--{} is not a flag of the agent",
                flag.name
            );
            if let FlagVerdict::Tuning {
                backup, restore, ..
            } = flag.verdict
            {
                assert!(!backup || has("backup", flag.name), "--{}", flag.name);
                assert!(!restore || has("restore", flag.name), "--{}", flag.name);
            }
        }
        // The tuning flags are not set by the catalog's Functions: a second one would be an
        // error ("cannot be used multiple times").
        let catalog = include_str!("../../manifests/catalog/functions.yaml");
        for flag in AGENT_FLAGS {
            if matches!(flag.verdict, FlagVerdict::Tuning { .. }) {
                assert!(
                    !catalog.contains(&format!("--{}=", flag.name)),
                    "--{}",
                    flag.name
                );
            }
        }
    }

    #[test]
    fn catalog_backup_line_with_empty_values() {
        let cli = parse(&[
            "backup",
            "--repository=local:/r",
            "--region=",
            "--insecure-tls=false",
            "--max-connections=",
            "--host=host-0",
            "--url=http://es:9200",
            "--insecure-skip-tls-verify=false",
            "--server-name=",
            "--credentials-dir=",
            "--interim-data-dir=",
            "--enable-cache=true",
            "--tag=session=s1",
            "--tag=BackupConfiguration=c",
            "--keep-last=5",
            "--keep-hourly=",
            "--keep-daily=",
            "--keep-weekly=",
            "--keep-monthly=",
            "--keep-yearly=",
            "--keep-tags=",
            "--prune=true",
            "--dry-run=false",
            "--include=*",
            "--exclude=",
            "--wait-timeout=300s",
            "--slices=auto",
        ])
        .unwrap();
        let Command::Backup(b) = cli.command else {
            panic!("not backup")
        };
        let plan = b.plan().unwrap();
        assert_eq!(plan.retention.keep_last, Some(5));
        assert_eq!(plan.retention.keep_daily, None);
        assert!(plan.retention.prune);
        assert_eq!(plan.tags, ["session=s1", "BackupConfiguration=c"]);
        assert_eq!(plan.wait_timeout, Duration::from_secs(300));
        assert_eq!(plan.slices, None);
        assert_eq!(plan.repo.max_connections, None);
    }

    /// The catalog's native Functions, with the values a Job gives them (many empty), parse.
    #[test]
    fn catalog_native_lines_with_empty_values() {
        let repo = [
            "--provider=local",
            "--bucket=",
            "--prefix=",
            "--endpoint=",
            "--region=",
            "--location=/snapshots",
            "--repository-namespace=demo",
            "--repository-name=es",
            "--url=http://es:9200",
            "--insecure-skip-tls-verify=false",
            "--server-name=",
            "--credentials-dir=",
            "--include=*",
            "--exclude=",
            "--wait-timeout=300s",
            "--snapshot-timeout=6h",
        ];
        let mut backup = vec![
            "snapshot",
            "--host=host-0",
            "--namespace=demo",
            "--configuration=nightly",
            "--session=nightly-1",
            "--keep-last=3",
            "--keep-hourly=",
            "--keep-daily=",
            "--keep-weekly=",
            "--keep-monthly=",
            "--keep-yearly=",
            "--dry-run=false",
            "--include-global-state=false",
        ];
        backup.extend(repo);
        let Command::Snapshot(b) = parse(&backup).unwrap().command else {
            panic!("not snapshot")
        };
        let plan = b.plan().unwrap();
        assert_eq!(plan.identity.snapshot_name(), "demo_nightly_nightly-1");
        assert_eq!(plan.repo.name, "cairn_demo_es");
        assert_eq!(plan.retention.keep_last, Some(3));
        assert_eq!(plan.snapshot_timeout, Duration::from_secs(6 * 3600));
        let mut restore = vec![
            "snapshot-restore",
            "--snapshot=latest",
            "--namespace=demo",
            "--source-configuration=",
            "--rename-pattern=",
            "--rename-replacement=",
            "--include-aliases=true",
            "--index-settings=",
            "--existing=fail",
        ];
        restore.extend(repo);
        let Command::SnapshotRestore(r) = parse(&restore).unwrap().command else {
            panic!("not snapshot-restore")
        };
        assert_eq!(r.plan().unwrap().snapshot, "latest");
        let at = restore
            .iter()
            .position(|a| *a == "--index-settings=")
            .unwrap();
        restore[at] = "--index-settings=[1]";
        let Command::SnapshotRestore(r) = parse(&restore).unwrap().command else {
            panic!("not snapshot-restore")
        };
        let e = r.plan().unwrap_err().to_string();
        assert!(
            e.contains("--index-settings") && e.contains("JSON object"),
            "{e}"
        );
    }

    #[test]
    fn unknown_flags_and_bad_values_fail() {
        assert!(
            parse(&[
                "backup",
                "--repository=local:/r",
                "--url=http://x",
                "--bogus=1"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "backup",
                "--repository=local:/r",
                "--url=http://x",
                "--keep-last=x"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "backup",
                "--repository=local:/r",
                "--url=http://x",
                "--prune=maybe"
            ])
            .is_err()
        );
        assert!(
            parse(&[
                "restore",
                "--repository=local:/r",
                "--url=http://x",
                "--existing=merge"
            ])
            .is_err()
        );
        let e = parse(&[
            "restore",
            "--repository=local:/r",
            "--url=http://x",
            "--on-failure=keep",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--on-failure") && e.contains("expected delete or close"),
            "{e}"
        );
        // A huge wait is an error naming its flag, not a panic later.
        let e = parse(&[
            "backup",
            "--repository=local:/r",
            "--url=http://x",
            "--wait-timeout=18446744073709551615",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--wait-timeout") && e.contains("longer than 24h"),
            "{e}"
        );
    }

    #[test]
    fn restore_line() {
        let cli = parse(&[
            "restore",
            "--repository=local:/r",
            "--host=host-0",
            "--source-host=",
            "--snapshot=",
            "--url=http://es:9200",
            "--rename-prefix=r-",
            "--existing=skip",
            "--on-failure=close",
        ])
        .unwrap();
        let Command::Restore(r) = cli.command else {
            panic!("not restore")
        };
        let plan = r.plan().unwrap();
        assert_eq!(plan.snapshot, "latest");
        assert_eq!(plan.source_host.as_deref(), Some("host-0"));
        assert_eq!(plan.existing, Existing::Skip);
        assert_eq!(plan.on_failure, OnFailure::Close);
    }

    #[test]
    fn wipe_line() {
        let cli = parse(&[
            "wipe",
            "--repository=s3:http://h:9000/b/p",
            "--region=eu-west-1",
            "--insecure-tls=false",
        ])
        .unwrap();
        let Command::Wipe(w) = cli.command else {
            panic!("not wipe")
        };
        assert_eq!(w.repo.options().region.as_deref(), Some("eu-west-1"));
        assert!(parse(&["wipe"]).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert_eq!(parse_duration("").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("24h").unwrap(),
            cairn_api::task_params::MAX_WAIT
        );
        for huge in [
            "18446744073709551615",
            "2562047h",
            "24h1s",
            "99999999999999999999s",
        ] {
            let e = parse_duration(huge).unwrap_err();
            assert!(e.starts_with(&format!("{huge:?}")), "{e}");
        }
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
        // Huge values are an error, not a panic.
        assert!(parse_duration("99999999999999999999h").is_err());
    }
}
