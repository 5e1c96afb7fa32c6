//! `cairn-agent restore`: templates first, then each selected index (created with its settings
//! and mappings, loaded through parallel `_bulk` requests with refresh off and no replicas, its
//! own values put back after), aliases last; counts and checksums compared with the manifest.
//! Two indices are loaded at once, their requests sharing the `--workers` slots, so the server
//! keeps working while one index drains, is refreshed and counted; the first failure stops the
//! other load and fails the restore, and the indices it created are deleted again (or closed
//! with their settings back and labelled: `--on-failure`, see `cleanup`). While the documents
//! load, progress lines go to stdout (`output::Progress`, phase `restore`).
//!
//! Nothing is written when an index exists and `--existing=fail` (the default): all targets are
//! checked before the first write. Nor before the snapshot's metadata (templates, every index's
//! `index.json`) has been read and its names checked: a snapshot that cannot be restored whole
//! fails before `--existing=overwrite` deletes anything, and no name from it reaches a request
//! unless it is a plain name (no `*`, `_all` or `..`).

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_api::result::RestoreResult;
use reqwest::{Method, StatusCode};
use rustic_core::repofile::{Node, SnapshotFile};
use rustic_core::{IndexedFull, Repository};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::budget::Budget;
use crate::bulk::{BulkOutcome, action_prefix, bulk_line, bulk_outcome};
use crate::cleanup::Created;
use crate::client::ServerInfo;
use crate::client::{Body, Client, encode_path, server_error};
use crate::contents::{Contents, Templates};
use crate::error::{AgentError, Failed, InPhase, Result, short};
use crate::layout::{IndexEntry, IndexMeta};
use crate::location::{Location, RepoOptions};
use crate::preflight::{self, Candidate};
use crate::repo;
use crate::retry::Attempt;
use crate::select::{Rename, Selector};
use crate::settings;
use crate::translate::{Notes, Translator};

pub use cairn_api::task_params::{Existing, OnFailure};

/// Everything `restore` needs.
#[derive(Clone, Debug)]
pub struct RestorePlan {
    pub location: Location,
    pub repo: RepoOptions,
    pub snapshot: String,
    pub source_host: Option<String>,
    /// What this restore may read: its namespace's snapshots (any, for the Repository's own
    /// namespace). `None` from the CLI used by hand.
    pub scope: Option<crate::identity::RestoreScope>,
    pub selector: Selector,
    pub rename: Rename,
    pub existing: Existing,
    pub on_failure: OnFailure,
    pub wait_timeout: Duration,
    pub workers: usize,
    pub batch_docs: usize,
    /// Bytes of one `_bulk` request, at most, unless one document alone is larger.
    pub batch_bytes: usize,
    /// Bytes of `_bulk` requests in flight over all indices.
    pub inflight_bytes: u64,
}

/// One index to restore.
#[derive(Clone, Debug)]
struct Target {
    source: String,
    target: String,
    /// Its documents' path in the snapshot, if it has documents.
    documents: Option<String>,
    /// The manifest's counts and checksum (a Stash dump has none).
    expected: Option<IndexEntry>,
    /// Its metadata, read and checked before anything is written.
    meta: IndexMeta,
    exists: bool,
}

/// Runs a restore.
#[tracing::instrument(name = "restore", skip_all, fields(snapshot = %plan.snapshot))]
pub fn run(plan: &RestorePlan, client: &Client) -> Result<RestoreResult, Failed> {
    let started = Instant::now();
    let rt = crate::output::runtime().phase("connect")?;
    let be = repo::backend(&plan.location, &plan.repo).phase("repository")?;
    let repository = repo::open(be, &plan.repo, false).phase("repository")?;
    // Shared, as restic's restore: a prune (which needs the repository alone) cannot delete
    // the packs being read.
    let store = crate::files::Store::new(&plan.location, &plan.repo).phase("repository")?;
    let lock = crate::lock::RepoLock::acquire(store, &repository, false).phase("repository")?;
    let snap = repo::find_snapshot(
        &repository,
        &plan.snapshot,
        plan.source_host.as_deref(),
        plan.scope.as_ref(),
    )
    .phase("repository")?;
    tracing::info!(snapshot = %snap.id, host = %snap.hostname, "restoring");
    let repository = repository
        .to_indexed()
        .map_err(|e| AgentError::rustic("read index", e))
        .phase("repository")?;
    // Everything the snapshot says is read and checked before the first request: a snapshot
    // that cannot be restored whole touches nothing (`existing=overwrite` deletes nothing).
    let contents = crate::contents::read(&repository, &snap).phase("repository")?;
    for note in &contents.notes {
        tracing::warn!(translated = %note, "an older server's shape");
    }
    let templates = checked_templates(contents.templates.clone())?;
    let mut targets = select_targets(&repository, &snap, plan, &contents)?;

    let info = rt
        .block_on(client.wait_ready(plan.wait_timeout))
        .phase("connect")?;
    tracing::info!(distribution = ?info.distribution, version = %info.version, "server ready");

    check_existing(&rt, client, plan, &mut targets)?;
    let (templates, notes) = fit_to_target(&rt, client, &info, plan, &mut targets, templates)?;
    // Templates first, so they are there when indices are created.
    let overwrite = plan.existing == Existing::Overwrite;
    put_templates(&rt, client, templates, overwrite)?;
    let todo: Vec<&Target> = targets
        .iter()
        .filter(|t| {
            let skip = t.exists && plan.existing == Existing::Skip;
            if skip {
                tracing::info!(index = %t.target, "exists: skipped");
            }
            !skip
        })
        .collect();
    let shared = Arc::new(Shared {
        slots: Arc::new(tokio::sync::Semaphore::new(plan.workers.max(1))),
        bytes: Budget::new(plan.inflight_bytes),
        stop: AtomicBool::new(false),
        created: Created::new(plan.on_failure, &snap.id.to_hex()),
        sent: Arc::new(Sent::default()),
    });
    let _on_terminate = shared.on_terminate(client, plan.workers.max(1));
    // A Stash dump has no counts: its total is 0, unknown.
    let progress = shared.progress(
        todo.iter()
            .filter_map(|t| t.expected.as_ref())
            .map(|e| e.documents)
            .sum(),
    );
    let loaded =
        load_indices(&rt, &repository, &snap, client, &todo, plan, &shared).and_then(|loaded| {
            let mut documents = 0;
            let mut restored = Vec::new();
            for (k, (docs, meta)) in loaded {
                documents += docs;
                restored.push((todo[k], meta));
            }
            put_aliases(&rt, client, plan, &restored)?;
            Ok((documents, restored))
        });
    progress.stop();
    let (documents, restored) = match loaded {
        Ok(l) => l,
        Err(f) => {
            shared.created.clean_up(&rt, client, &f.to_string());
            return Err(f);
        }
    };
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not remove the repository lock");
    }

    Ok(RestoreResult {
        snapshot: snap.id.to_hex().to_string(),
        indices: restored.len() as u64,
        documents,
        duration_seconds: started.elapsed().as_secs_f64(),
        not_carried: notes.not_carried(),
    })
}

/// The snapshot's settings made the target's (`translate`: what its distribution lacks left
/// out, said), then every body the restore will write checked by the target (`preflight`):
/// a snapshot the target cannot take fails here, before the first write.
fn fit_to_target(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    info: &ServerInfo,
    plan: &RestorePlan,
    targets: &mut [Target],
    mut templates: Templates,
) -> Result<(Templates, Notes), Failed> {
    let mut translator = Translator::new(info.distribution);
    for (kind, map) in &mut templates {
        for (name, body) in map.iter_mut() {
            translator.template(kind, name, body);
        }
    }
    let mut candidates = preflight::template_candidates(&templates);
    for t in targets.iter_mut() {
        translator.settings(&format!("index {}", t.source), &mut t.meta.settings);
        if !(t.exists && plan.existing == Existing::Skip) {
            candidates.push(Candidate {
                whose: format!("index {}", t.source),
                settings: Value::Object(t.meta.settings.clone()),
                mappings: t.meta.mappings.clone(),
            });
        }
    }
    for line in translator.notes.translated() {
        tracing::info!(translated = %line, "for {:?}", info.distribution);
    }
    for line in translator.notes.not_carried() {
        tracing::warn!(not_carried = %line, "for {:?}", info.distribution);
    }
    rt.block_on(preflight::check(client, &candidates))
        .phase("restore")?;
    Ok((templates, translator.notes))
}

/// Every selected index with its target name and metadata, read from the snapshot and checked
/// before any request: valid names (its own and its aliases'), no two onto one name.
fn select_targets<S: IndexedFull>(
    repository: &Repository<S>,
    snap: &SnapshotFile,
    plan: &RestorePlan,
    contents: &Contents,
) -> Result<Vec<Target>, Failed> {
    let mut targets = Vec::new();
    let mut seen = BTreeSet::new();
    for listed in &contents.indices {
        let name = &listed.name;
        if !plan
            .selector
            .selects(name, &listed.aliases, listed.hidden)
            .phase("restore")?
        {
            continue;
        }
        checked_name("index", name).phase("restore")?;
        let target = plan.rename.apply(name).phase("restore")?;
        if !seen.insert(target.clone()) {
            return Err(AgentError::Usage(format!(
                "two indices would be restored as {target:?}: change the renaming"
            )))
            .phase("restore");
        }
        let meta = listed.meta(repository, snap).phase("restore")?;
        for alias in meta.aliases.keys() {
            checked_name("alias", alias).phase("restore")?;
        }
        targets.push(Target {
            source: name.clone(),
            target,
            documents: listed.documents.clone(),
            expected: listed.expected.clone(),
            meta,
            exists: false,
        });
    }
    Ok(targets)
}

/// Whether a name from the snapshot is one the server can only read as itself.
fn checked_name(kind: &str, name: &str) -> Result<()> {
    crate::select::validate_name(name).map_err(|why| {
        AgentError::Snapshot(format!(
            "{kind} name {:?} is not a valid name ({why}); nothing was restored",
            short(name, 100)
        ))
    })
}

/// Which targets exist; none may when `--existing=fail`.
fn check_existing(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    plan: &RestorePlan,
    targets: &mut [Target],
) -> Result<(), Failed> {
    for t in targets.iter_mut() {
        t.exists = rt
            .block_on(client.exists(&format!("/{}", encode_path(&t.target)), "check index"))
            .phase("restore")?;
    }
    let existing: Vec<&str> = targets
        .iter()
        .filter(|t| t.exists)
        .map(|t| t.target.as_str())
        .collect();
    if plan.existing == Existing::Fail && !existing.is_empty() {
        return Err(AgentError::Restore(format!(
            "{} already exist{}: {}; nothing was restored (set existing to skip or overwrite)",
            if existing.len() == 1 {
                "an index"
            } else {
                "indices"
            },
            if existing.len() == 1 { "s" } else { "" },
            short(&existing.join(", "), 1000)
        )))
        .phase("restore");
    }
    Ok(())
}

/// The snapshot's templates, their names checked.
fn checked_templates(templates: Templates) -> Result<Templates, Failed> {
    for (_, map) in &templates {
        for name in map.keys() {
            checked_name("template", name).phase("restore")?;
        }
    }
    Ok(templates)
}

/// Puts the templates, in their order (component, composable, legacy).
fn put_templates(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    templates: Templates,
    overwrite: bool,
) -> Result<(), Failed> {
    for (kind, map) in templates {
        for (name, body) in map {
            rt.block_on(put_template(client, kind, &name, body, overwrite))
                .phase("restore")?;
        }
    }
    Ok(())
}

/// Loads `todo`, `INDEX_PARALLEL` indices at a time, their `_bulk` requests sharing `workers`
/// slots: the server stays busy while one index drains, is refreshed and counted. Returns each
/// index's documents and metadata by its place in `todo`.
fn load_indices<S: IndexedFull + Sync>(
    rt: &tokio::runtime::Runtime,
    repository: &Repository<S>,
    snap: &SnapshotFile,
    client: &Client,
    todo: &[&Target],
    plan: &RestorePlan,
    shared: &Shared,
) -> Result<Loaded, Failed> {
    let next = AtomicUsize::new(0);
    let outcomes: Mutex<Vec<(usize, IndexOutcome)>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..INDEX_PARALLEL.min(todo.len()) {
            s.spawn(|| {
                loop {
                    if shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(t) = todo.get(k) else {
                        break;
                    };
                    let r = restore_index(rt, repository, snap, client, plan, t, shared);
                    if r.is_err() {
                        shared.stop.store(true, Ordering::SeqCst);
                    }
                    if let Ok(mut o) = outcomes.lock() {
                        o.push((k, r));
                    }
                }
            });
        }
    });
    let mut outcomes = outcomes
        .into_inner()
        .map_err(|_| AgentError::Restore("a loader panicked".into()))
        .phase("restore")?;
    outcomes.sort_by_key(|(k, _)| *k);
    let loaded = first_failure(outcomes)?;
    if loaded.len() != todo.len() {
        return Err(AgentError::Restore(format!(
            "{} of {} indices were loaded",
            loaded.len(),
            todo.len()
        )))
        .phase("restore");
    }
    Ok(loaded)
}

/// The loaded indices, or the first real failure ("stopped because another index failed"
/// only when there is none).
fn first_failure(outcomes: Vec<(usize, IndexOutcome)>) -> Result<Loaded, Failed> {
    let mut first_err: Option<Failed> = None;
    let mut loaded = Vec::new();
    for (k, r) in outcomes {
        match r {
            Ok(v) => loaded.push((k, v)),
            Err(f) => {
                let stopped = matches!(&f.error, AgentError::Restore(m) if m == STOPPED);
                if first_err.as_ref().is_none_or(|e| {
                    !stopped && matches!(&e.error, AgentError::Restore(m) if m == STOPPED)
                }) {
                    first_err = Some(f);
                }
            }
        }
    }
    match first_err {
        Some(f) => Err(f),
        None => Ok(loaded),
    }
}

/// Aliases last, when their indices are complete. Renamed indices get renamed aliases, so a
/// restored copy does not join the original's aliases.
fn put_aliases(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    plan: &RestorePlan,
    restored: &[(&Target, IndexMeta)],
) -> Result<(), Failed> {
    let mut actions = Vec::new();
    for (t, meta) in restored {
        for (alias, def) in &meta.aliases {
            let alias = if plan.rename.is_identity() {
                alias.clone()
            } else {
                plan.rename.apply(alias).phase("restore")?
            };
            let mut add = def.as_object().cloned().unwrap_or_default();
            add.insert("index".into(), Value::from(t.target.clone()));
            add.insert("alias".into(), Value::from(alias));
            actions.push(json!({ "add": add }));
        }
    }
    if !actions.is_empty() {
        let _: Value = rt
            .block_on(client.json(
                Method::POST,
                "/_aliases",
                Some(json!({ "actions": actions })),
                "add aliases",
            ))
            .phase("restore")?;
    }
    Ok(())
}

/// Documents sent and the index's metadata, or the failure.
type IndexOutcome = Result<(u64, IndexMeta), Failed>;

/// Each loaded index's documents and metadata, by its place in the list to load.
type Loaded = Vec<(usize, (u64, IndexMeta))>;

/// Indices loaded at once.
const INDEX_PARALLEL: usize = 2;

/// The reason of an index load stopped because another one failed.
const STOPPED: &str = "stopped: another index failed";

/// What the concurrent index loads share.
struct Shared {
    /// `_bulk` requests in flight, over all indices.
    slots: Arc<tokio::sync::Semaphore>,
    /// Their bytes.
    bytes: Arc<Budget>,
    /// Set by the first failure: the other loads stop sending.
    stop: AtomicBool,
    /// The indices this run created: deleted (or closed) if it does not finish.
    created: Created,
    /// What the server has taken, for the progress lines.
    sent: Arc<Sent>,
}

/// Documents and `_bulk` bytes the server has taken, over all indices.
#[derive(Default)]
struct Sent {
    docs: AtomicU64,
    bytes: AtomicU64,
}

impl Sent {
    fn add(&self, docs: u64, bytes: u64) {
        self.docs.fetch_add(docs, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

impl Shared {
    /// Progress lines while the documents load: of `total` documents, those the server took.
    fn progress(&self, total: u64) -> crate::output::Progress {
        let sent = self.sent.clone();
        crate::output::Progress::start(
            "restore",
            total,
            Arc::new(move || {
                (
                    sent.docs.load(Ordering::Relaxed),
                    sent.bytes.load(Ordering::Relaxed),
                )
            }),
        )
    }
}

impl Shared {
    /// On SIGTERM: the loads stop, and once no `_bulk` is in flight (one could create an index
    /// again) the indices this run created are cleaned up, as after a failure.
    fn on_terminate(
        self: &Arc<Self>,
        client: &Client,
        workers: usize,
    ) -> crate::terminate::Registered {
        let (client, shared) = (client.clone(), self.clone());
        crate::terminate::on_terminate(move || {
            shared.stop.store(true, Ordering::SeqCst);
            // A runtime of its own: the run's may be shutting down under it.
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return tracing::warn!(error = %e, "no runtime to delete the indices"),
            };
            let all = u32::try_from(workers).unwrap_or(u32::MAX);
            let drained = rt.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(10),
                    shared.slots.acquire_many(all),
                )
                .await
            });
            if drained.is_err() {
                tracing::warn!("bulk requests still in flight after 10 s: cleaning up anyway");
            }
            shared
                .created
                .clean_up(&rt, &client, &AgentError::Terminated.to_string());
        })
    }
}

/// Creates one index, loads its documents, puts its settings back and verifies it.
fn restore_index<S: IndexedFull + Sync>(
    rt: &tokio::runtime::Runtime,
    repository: &Repository<S>,
    snap: &SnapshotFile,
    client: &Client,
    plan: &RestorePlan,
    t: &Target,
    shared: &Shared,
) -> IndexOutcome {
    let enc = encode_path(&t.target);
    let (meta, after) = create_index(rt, client, t)?;
    shared.created.record(&t.target, &after, &meta.mappings);
    let (docs, sha) = match &t.documents {
        Some(path) => {
            let node = repository
                .node_from_snapshot_and_path(snap, path)
                .map_err(|e| AgentError::rustic("find documents", e))
                .phase("restore")?;
            load_index(rt, repository, &node, client, &t.target, plan, shared).phase("restore")?
        }
        None => (0, String::new()),
    };

    rt.block_on(async {
        let _: Value = client
            .json(
                Method::PUT,
                &format!("/{enc}/_settings"),
                Some(json!({ "settings": after })),
                "put back settings",
            )
            .await?;
        let _: Value = client
            .json(Method::POST, &format!("/{enc}/_refresh"), None, "refresh")
            .await?;
        Ok::<_, AgentError>(())
    })
    .phase("restore")?;

    verify_index(rt, client, t, docs, &sha)?;
    tracing::info!(index = %t.target, docs, "index restored");
    Ok((docs, meta))
}

/// Deletes the index when it is to be overwritten, then creates it with its settings for
/// loading and its mappings. Returns its metadata and the settings to put back after.
fn create_index(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    t: &Target,
) -> Result<(IndexMeta, Map<String, Value>), Failed> {
    let enc = encode_path(&t.target);
    if t.exists {
        tracing::info!(index = %t.target, "exists: deleting it to overwrite");
        let _: Value = rt
            .block_on(client.json(Method::DELETE, &format!("/{enc}"), None, "delete index"))
            .phase("restore")?;
    }
    let meta = t.meta.clone();
    let (create, after) = settings::load_and_after(&meta.settings);
    let mut body = json!({ "settings": create });
    if meta.mappings.as_object().is_some_and(|m| !m.is_empty()) {
        body["mappings"] = meta.mappings.clone();
    }
    let _: Value = rt
        .block_on(client.json(
            Method::PUT,
            &format!("/{enc}"),
            Some(body),
            &format!("create index {}", t.target),
        ))
        .phase("restore")?;
    Ok((meta, after))
}

/// Checks an index: the documents the server counts are those sent, and, with a manifest, the
/// stream read is the one backed up (its checksum and count).
fn verify_index(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    t: &Target,
    docs: u64,
    sha: &str,
) -> Result<(), Failed> {
    let enc = encode_path(&t.target);
    if t.expected.as_ref().is_some_and(|e| e.sha256 != sha) {
        return Err(AgentError::Verify(format!(
            "documents of {} do not match the manifest's checksum",
            t.source
        )))
        .phase("verify");
    }
    let count: Value = rt
        .block_on(client.json(Method::GET, &format!("/{enc}/_count"), None, "count"))
        .phase("verify")?;
    let count = count["count"].as_u64().unwrap_or(u64::MAX);
    let expected = t.expected.as_ref().map_or(docs, |e| e.documents);
    if docs != expected || count != expected {
        return Err(AgentError::Verify(format!(
            "index {}: the snapshot has {}, {docs} were sent, the server counts {count}",
            t.target,
            t.expected
                .as_ref()
                .map_or("no count".to_string(), |e| format!(
                    "{} documents",
                    e.documents
                )),
        )))
        .phase("verify");
    }
    Ok(())
}

async fn put_template(
    client: &Client,
    kind: &str,
    name: &str,
    body: Value,
    overwrite: bool,
) -> Result<()> {
    let path = format!(
        "/{kind}/{}{}",
        encode_path(name),
        if overwrite { "" } else { "?create=true" }
    );
    let what = format!("put {kind} {name}");
    let (status, bytes) = client
        .send(Method::PUT, &path, Some(Body::Json(body)), &what)
        .await?;
    if status.is_success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&bytes);
    if !overwrite && status == StatusCode::BAD_REQUEST && text.contains("already exists") {
        tracing::info!(template = name, kind, "exists: kept the server's");
        return Ok(());
    }
    Err(server_error(&what, status, &bytes))
}

/// Streams one `documents.ndjson` from the repository into the server. Returns the documents
/// sent and the SHA-256 of the stream.
fn load_index<S: IndexedFull + Sync>(
    rt: &tokio::runtime::Runtime,
    repo: &Repository<S>,
    node: &Node,
    client: &Client,
    target: &str,
    plan: &RestorePlan,
    shared: &Shared,
) -> Result<(u64, String)> {
    // Few blobs wait: two indices load at once, and a blob may be megabytes.
    let (tx, rx) = mpsc::channel::<Bytes>(2);
    std::thread::scope(|s| {
        let reader = s.spawn(move || {
            let mut w = ChannelWriter { tx };
            repo.dump(node, &mut w)
        });
        let loaded = rt.block_on(load_documents(client, target, rx, plan, shared));
        let dumped = reader
            .join()
            .map_err(|_| AgentError::Restore("the repository reader panicked".into()))?;
        let loaded = loaded?;
        dumped.map_err(|e| AgentError::rustic("read documents", e))?;
        Ok(loaded)
    })
}

/// `Write` into a channel, for rustic's `dump`.
struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::other("the loader stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One index's batches: built line by line, sent when full.
struct Loader<'a> {
    client: &'a Client,
    target: &'a str,
    prefix: Vec<u8>,
    plan: &'a RestorePlan,
    shared: &'a Shared,
    inflight: tokio::task::JoinSet<Result<u64>>,
    batch: Vec<u8>,
    batch_docs: usize,
    sent: u64,
}

impl Loader<'_> {
    fn reaped(&mut self, r: Result<Result<u64>, tokio::task::JoinError>) -> Result<()> {
        match r {
            Ok(Ok(n)) => self.sent += n,
            Ok(Err(e)) => return Err(e),
            Err(e) => return Err(AgentError::Restore(format!("bulk worker failed: {e}"))),
        }
        Ok(())
    }

    async fn line(&mut self, line: &[u8]) -> Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        // Sent first when this document would make it too large: a batch exceeds its bytes
        // only with one document that alone does.
        if self.batch.len() + self.prefix.len() + line.len() > self.plan.batch_bytes {
            self.send().await?;
        }
        bulk_line(&mut self.batch, &self.prefix, self.target, line)?;
        self.batch_docs += 1;
        if self.batch_docs >= self.plan.batch_docs || self.batch.len() >= self.plan.batch_bytes {
            self.send().await?;
        }
        Ok(())
    }

    /// Sends the batch once a slot is free: the next one is built while the others are in
    /// flight.
    async fn send(&mut self) -> Result<()> {
        if self.batch_docs == 0 {
            return Ok(());
        }
        while let Some(r) = self.inflight.try_join_next() {
            self.reaped(r)?;
        }
        if self.shared.stop.load(Ordering::SeqCst) {
            return Err(AgentError::Restore(STOPPED.into()));
        }
        let permit = self
            .shared
            .slots
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| AgentError::Restore(STOPPED.into()))?;
        let cap = self.batch.len();
        let held = self.shared.bytes.take(cap as u64).await;
        let body = Bytes::from(std::mem::replace(&mut self.batch, Vec::with_capacity(cap)));
        let (c, t, n) = (
            self.client.clone(),
            self.target.to_string(),
            self.batch_docs as u64,
        );
        self.batch_docs = 0;
        let sent = self.shared.sent.clone();
        self.inflight.spawn(async move {
            let bytes = body.len() as u64;
            let r = send_bulk(&c, &t, body, n).await;
            drop((permit, held));
            if r.is_ok() {
                sent.add(n, bytes);
            }
            r
        });
        Ok(())
    }

    async fn finish(&mut self) -> Result<()> {
        self.send().await?;
        while let Some(r) = self.inflight.join_next().await {
            self.reaped(r)?;
        }
        Ok(())
    }
}

async fn load_documents(
    client: &Client,
    target: &str,
    mut rx: mpsc::Receiver<Bytes>,
    plan: &RestorePlan,
    shared: &Shared,
) -> Result<(u64, String)> {
    let mut hasher = Sha256::new();
    let mut loader = Loader {
        client,
        target,
        prefix: action_prefix(target),
        plan,
        shared,
        inflight: tokio::task::JoinSet::new(),
        batch: Vec::new(),
        batch_docs: 0,
        sent: 0,
    };
    // Lines are read in the blobs as they come; only a line cut by a blob's end is copied.
    let mut carry: Vec<u8> = Vec::new();
    let result = async {
        while let Some(chunk) = rx.recv().await {
            hasher.update(&chunk);
            let mut start = 0;
            if !carry.is_empty() {
                let Some(pos) = memchr::memchr(b'\n', &chunk) else {
                    carry.extend_from_slice(&chunk);
                    continue;
                };
                carry.extend_from_slice(&chunk[..pos]);
                let line = std::mem::take(&mut carry);
                loader.line(&line).await?;
                start = pos + 1;
            }
            while let Some(pos) = memchr::memchr(b'\n', &chunk[start..]) {
                loader.line(&chunk[start..start + pos]).await?;
                start += pos + 1;
            }
            carry.extend_from_slice(&chunk[start..]);
        }
        // A last line without its newline.
        let line = std::mem::take(&mut carry);
        loader.line(&line).await?;
        loader.finish().await
    }
    .await;
    if let Err(e) = result {
        loader.inflight.abort_all();
        return Err(e);
    }
    Ok((loader.sent, hex::encode(hasher.finalize())))
}

/// Sends one batch under the client's retry policy: also while the server rejects some of its
/// documents for load (each has its id, so sending a batch twice does no harm).
async fn send_bulk(client: &Client, target: &str, body: Bytes, docs: u64) -> Result<u64> {
    let what = format!("bulk into {target}");
    let what = what.as_str();
    client
        .retry()
        .run(what, || {
            let body = body.clone();
            async move {
                let (status, bytes) = client
                    .attempt(Method::POST, "/_bulk", Some(Body::Ndjson(body)), what)
                    .await?;
                if !status.is_success() {
                    return Err(Attempt::Fatal(server_error(what, status, &bytes)));
                }
                match bulk_outcome(target, &bytes).map_err(Attempt::Fatal)? {
                    BulkOutcome::Done => Ok(docs),
                    BulkOutcome::Failed(reason) => Err(Attempt::Fatal(AgentError::Restore(reason))),
                    BulkOutcome::Retry => Err(Attempt::Transient {
                        reason: "documents rejected with 429".into(),
                        retry_after: None,
                    }),
                }
            }
        })
        .await
}
