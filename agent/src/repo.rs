//! Repository operations: the rustic backend for a location (an object store's with a deadline
//! on every request), opening (and initialising on first use), retention, totals and finding a
//! snapshot.
//!
//! rustic_core takes no locks (it is lock-free by design, with two-phase deletion that we turn
//! into restic's instant deletion for prune); backup and forget hold a restic lock of their own
//! (see [`crate::lock`]) so that restic's prune never deletes what they are writing, and ours
//! never runs next to another process's work.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use rustic_backend::{LocalBackend, RestBackend};
use rustic_core::repofile::SnapshotFile;
use rustic_core::{
    ConfigOptions, Credentials, ErrorKind, FileType, ForgetGroups, Grouped, Id, KeepOptions,
    KeyOptions, OpenStatus, PruneOptions, ReadBackend, Repository, RepositoryBackends,
    RepositoryOptions, RusticError, RusticResult, SnapshotGroupCriterion, StringList, WriteBackend,
};

use crate::cloud::CloudBackend;
use crate::error::{AgentError, Result};
use crate::files::{PROBE_TIMEOUT, Store};
use crate::location::{Location, RepoOptions, check_insecure_tls, env, password};
use crate::lock::RepoLock;

/// The backend for a location, once the storage answered (within
/// [`PROBE_TIMEOUT`]: rustic's backends would retry for minutes, or wait forever
/// on a silent host).
pub fn backend(loc: &Location, opts: &RepoOptions) -> Result<Arc<dyn WriteBackend>> {
    check_insecure_tls(loc, opts)?;
    if !matches!(loc, Location::Local(_)) {
        Store::new(loc, opts)?.probe(PROBE_TIMEOUT)?;
    }
    let map = |e: Box<RusticError>| AgentError::rustic("backend", e);
    Ok(match loc {
        Location::Local(path) => Arc::new(
            LocalBackend::new(path.to_string_lossy(), BTreeMap::<String, String>::new())
                .map_err(map)?,
        ),
        Location::Rest { url } => {
            let mut url = url::Url::parse(url)
                .map_err(|e| AgentError::Usage(format!("--repository rest: {e}")))?;
            if let (Some(u), Some(p)) = (env("REST_SERVER_USERNAME"), env("REST_SERVER_PASSWORD")) {
                let _ = url.set_username(&u);
                let _ = url.set_password(Some(&p));
            }
            Arc::new(
                RestBackend::new(url.as_str(), BTreeMap::<String, String>::new()).map_err(map)?,
            )
        }
        _ => Arc::new(TimedBackend {
            inner: Arc::new(CloudBackend::new(loc, opts)?),
        }),
    })
}

/// The base deadline of one storage request.
const STORAGE_TIMEOUT: Duration = Duration::from_secs(120);

/// The deadline of a storage request carrying `bytes`: the base, and a second more per MiB
/// (a link of at least 1 MiB/s).
fn storage_deadline(bytes: usize) -> Duration {
    STORAGE_TIMEOUT + Duration::from_secs((bytes >> 20) as u64)
}

/// Gives every request to an object store a deadline. opendal has none that fits a pack of any
/// size: a storage server that stops answering (frozen, or a connection silently gone) would hang the
/// agent for ever. Each request runs on a thread of its own; past its deadline the call fails
/// and the thread is left to the process's exit.
#[derive(Debug)]
pub struct TimedBackend {
    inner: Arc<dyn WriteBackend>,
}

impl TimedBackend {
    fn timed<T: Send + 'static>(
        &self,
        what: &'static str,
        bytes: usize,
        op: impl FnOnce(&dyn WriteBackend) -> RusticResult<T> + Send + 'static,
    ) -> RusticResult<T> {
        let inner = self.inner.clone();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("storage-request".into())
            .spawn(move || {
                let _ = tx.send(op(inner.as_ref()));
            })
            .map_err(|e| {
                RusticError::with_source(ErrorKind::Backend, "cannot start a storage request", e)
            })?;
        let limit = storage_deadline(bytes);
        rx.recv_timeout(limit).unwrap_or_else(|_| {
            // rustic reads `{...}` in a message as a placeholder: none here.
            Err(RusticError::new(
                ErrorKind::Backend,
                format!(
                    "the storage did not answer a {what} request within {}s",
                    limit.as_secs()
                ),
            ))
        })
    }
}

impl ReadBackend for TimedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.timed("list", 0, move |b| b.list_with_size(tpe))
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.timed("list", 0, move |b| b.list(tpe))
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        let id = *id;
        self.timed("read", 0, move |b| b.read_full(tpe, &id))
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        let id = *id;
        self.timed("read", length as usize, move |b| {
            b.read_partial(tpe, &id, cacheable, offset, length)
        })
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }
    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        let id = *id;
        self.timed("warm-up", 0, move |b| b.warm_up(tpe, &id))
    }
}

impl WriteBackend for TimedBackend {
    fn create(&self) -> RusticResult<()> {
        self.timed("create", 0, |b| b.create())
    }
    fn write_bytes(&self, tpe: FileType, id: &Id, cacheable: bool, buf: Bytes) -> RusticResult<()> {
        let id = *id;
        self.timed("write", buf.len(), move |b| {
            b.write_bytes(tpe, &id, cacheable, buf)
        })
    }
    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        let id = *id;
        self.timed("remove", 0, move |b| b.remove(tpe, &id, cacheable))
    }
}

/// Refuses to write a snapshot file until the dump says it is complete: rustic's archiver skips
/// files it failed to read (with a warning) and would otherwise save a partial snapshot.
#[derive(Debug)]
pub struct GatedBackend {
    inner: Arc<dyn WriteBackend>,
    open: Arc<AtomicBool>,
}

impl GatedBackend {
    pub fn new(inner: Arc<dyn WriteBackend>, open: Arc<AtomicBool>) -> Self {
        Self { inner, open }
    }
}

impl ReadBackend for GatedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }
    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        self.inner.warm_up(tpe, id)
    }
}

impl WriteBackend for GatedBackend {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }
    fn write_bytes(&self, tpe: FileType, id: &Id, cacheable: bool, buf: Bytes) -> RusticResult<()> {
        if tpe == FileType::Snapshot && !self.open.load(Ordering::SeqCst) {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "the dump did not complete: no snapshot is written",
            ));
        }
        self.inner.write_bytes(tpe, id, cacheable, buf)
    }
    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.inner.remove(tpe, id, cacheable)
    }
}

pub type OpenRepo = Repository<OpenStatus>;

/// Opens the repository, creating it when it does not exist yet.
pub fn open(be: Arc<dyn WriteBackend>, opts: &RepoOptions, init: bool) -> Result<OpenRepo> {
    let mut ropts = RepositoryOptions::default().no_cache(opts.no_cache);
    if let Some(dir) = &opts.cache_dir {
        ropts = ropts.cache_dir(dir.clone());
    }
    let backends = RepositoryBackends::new(be, None);
    let repo = Repository::new(&ropts, &backends).map_err(|e| AgentError::rustic("open", e))?;
    let creds = Credentials::password(password()?);
    let exists = repo
        .config_id()
        .map_err(|e| AgentError::rustic("read config", e))?
        .is_some();
    if exists {
        repo.open(&creds)
            .map_err(|e| AgentError::rustic("open (is RESTIC_PASSWORD right?)", e))
    } else if init {
        tracing::info!("initialising the repository");
        repo.init(&creds, &KeyOptions::default(), &new_repository_config())
            .map_err(|e| AgentError::rustic("init", e))
    } else {
        Err(AgentError::Repository(
            "there is no repository at this location".into(),
        ))
    }
}

/// The settings of a repository the agent creates. A pack is assembled in memory (one filling,
/// one being written) and rustic grows packs with the square root of the repository's size
/// unless limited: at its default size, 32 MiB, the agent's memory stays bounded whatever the
/// repository holds. restic ignores the setting.
fn new_repository_config() -> ConfigOptions {
    ConfigOptions::default().set_datapack_size_limit(bytesize::ByteSize::mib(32))
}

/// Retention: restic's `forget` keep rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_tags: Vec<String>,
    pub prune: bool,
    pub dry_run: bool,
}

impl Retention {
    /// No keep rule means no retention at all (restic refuses to forget without one).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || !self.keep_tags.is_empty()
    }

    pub fn keep_options(&self) -> Result<KeepOptions> {
        let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        let mut k = KeepOptions::default()
            .keep_last(n(self.keep_last))
            .keep_hourly(n(self.keep_hourly))
            .keep_daily(n(self.keep_daily))
            .keep_weekly(n(self.keep_weekly))
            .keep_monthly(n(self.keep_monthly))
            .keep_yearly(n(self.keep_yearly));
        if !self.keep_tags.is_empty() {
            let tags: StringList = self
                .keep_tags
                .join(",")
                .parse()
                .map_err(|_| AgentError::Usage("--keep-tags".into()))?;
            k = k.keep_tags(vec![tags]);
        }
        Ok(k)
    }
}

/// What retention did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub kept: u64,
    pub removed: u64,
}

/// Applies retention to the snapshots of `host` that `scope` admits (one configuration's own:
/// never another tenant's, never one without cairn's identity), then prunes when asked.
/// Forgetting and pruning need the exclusive lock, as in restic: when `lock` cannot be made
/// exclusive (another process works on the repository) both wait for a later run, with a
/// warning.
pub fn apply_retention(
    repo: &OpenRepo,
    host: &str,
    scope: &crate::identity::RetentionScope,
    r: &Retention,
    lock: Option<&RepoLock>,
) -> Result<RetentionOutcome> {
    let snaps = repo
        .get_matching_snapshots(|s| s.hostname == host && scope.admits(s))
        .map_err(|e| AgentError::rustic("list snapshots", e))?;
    if !r.is_set() {
        return Ok(RetentionOutcome {
            kept: snaps.len() as u64,
            removed: 0,
        });
    }
    let grouped = Grouped::from_items(snaps, SnapshotGroupCriterion::default());
    let now = rustic_core::jiff::Zoned::now();
    let groups =
        ForgetGroups::from_grouped_snapshots_with_retention(grouped, &r.keep_options()?, &now)
            .map_err(|e| AgentError::rustic("retention", e))?;
    let total: u64 = groups.0.iter().map(|g| g.items.len() as u64).sum();
    let forget = groups.into_forget_ids();
    let outcome = RetentionOutcome {
        kept: total - forget.len() as u64,
        removed: forget.len() as u64,
    };
    if r.dry_run {
        tracing::info!(
            would_remove = outcome.removed,
            "retention dry run: nothing removed"
        );
        return Ok(outcome);
    }
    // Nothing to do: everything is kept.
    if forget.is_empty() && !r.prune {
        return Ok(RetentionOutcome {
            kept: total,
            removed: 0,
        });
    }
    // restic's rule: forget and prune hold the repository alone (the caller reports a
    // failure, and the next run applies the retention again).
    if let Some(lock) = lock {
        lock.upgrade().map_err(|e| match e {
            AgentError::Repository(why) => {
                AgentError::Repository(format!("retention not applied: {why}"))
            }
            e => e,
        })?;
    }
    if !forget.is_empty() {
        repo.delete_snapshots(&forget)
            .map_err(|e| AgentError::rustic("forget", e))?;
    }
    if r.prune {
        // restic's behaviour: delete unused packs now, not after rustic's grace period.
        let popts = PruneOptions::default().instant_delete(true);
        let plan = repo
            .prune_plan(&popts)
            .map_err(|e| AgentError::rustic("prune plan", e))?;
        repo.prune(&popts, plan)
            .map_err(|e| AgentError::rustic("prune", e))?;
    }
    Ok(outcome)
}

/// Snapshot count and stored bytes.
pub fn totals(repo: &OpenRepo) -> Result<(u64, u64)> {
    let infos = repo
        .infos_files()
        .map_err(|e| AgentError::rustic("repository info", e))?;
    let size = infos.repo.iter().map(|i| i.size).sum();
    let count = infos
        .repo
        .iter()
        .find(|i| i.tpe == FileType::Snapshot)
        .map_or(0, |i| i.count);
    Ok((count, size))
}

/// Finds the snapshot to restore: an id (prefix) or `latest`, among those of `host` when given,
/// within what `scope` lets this restore read.
pub fn find_snapshot(
    repo: &OpenRepo,
    spec: &str,
    host: Option<&str>,
    scope: Option<&crate::identity::RestoreScope>,
) -> Result<SnapshotFile> {
    let host = host.filter(|h| !h.is_empty()).map(String::from);
    let of_host = move |s: &SnapshotFile| host.as_ref().is_none_or(|h| &s.hostname == h);
    let spec = spec.trim();
    if spec.is_empty() || spec == "latest" {
        let mut snaps = repo
            .get_matching_snapshots(|s| of_host(s) && scope.is_none_or(|sc| sc.latest_candidate(s)))
            .map_err(|e| AgentError::rustic("list snapshots", e))?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        snaps.pop().ok_or_else(|| {
            AgentError::Snapshot(match scope {
                Some(sc) => format!(
                    "no snapshot of this host made in namespace {:?}{} in the repository",
                    sc.namespace,
                    sc.configuration
                        .as_deref()
                        .map(|c| format!(" by configuration {c:?}"))
                        .unwrap_or_default()
                ),
                None => "no snapshot of this host in the repository".into(),
            })
        })
    } else {
        let snap = repo
            .get_snapshot_from_str(spec, of_host)
            .map_err(|e| AgentError::rustic(&format!("snapshot {spec}"), e))?;
        if let Some(sc) = scope {
            sc.may_restore(&snap).map_err(AgentError::Snapshot)?;
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_needs_a_rule() {
        assert!(!Retention::default().is_set());
        let r = Retention {
            keep_tags: vec!["keep".into()],
            ..Default::default()
        };
        assert!(r.is_set());
        assert!(r.keep_options().is_ok());
    }
}
