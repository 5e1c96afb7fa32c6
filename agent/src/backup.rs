//! `cairn-agent backup`: the cluster's templates, the selected indices' settings, mappings,
//! aliases and documents, into one snapshot; then retention.
//!
//! Documents are streamed from the server into the archiver; with an interim directory
//! (`INTERIM_DATA_DIR`) they are first staged there, one NDJSON file per index, and the
//! directory is emptied again whatever happens (see [`crate::stream`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use cairn_api::inventory::Description;
use cairn_api::result::{BackupResult, RepositoryTotals};
use cairn_api::stash_args::DumpType;
use reqwest::Method;
use rustic_core::{BackupOptions, ParentOptions, SnapshotOptions};
use serde_json::{Map, Value, json};

use crate::budget::Paging;
use crate::client::{Body, Client, Distribution, ServerInfo, encode_path};
use crate::error::{AgentError, Failed, InPhase, Result};
use crate::layout::{self, IndexMeta, Manifest, ServerMeta, TemplateCounts};
use crate::location::{Location, RepoOptions};
use crate::repo::{self, GatedBackend, Retention};
use crate::search::ReadMode;
use crate::select::Selector;
use crate::settings;
use crate::stream::{Content, DumpSource, DumpState, Entry, Staged, pending_entry};

/// Everything `backup` needs.
#[derive(Clone, Debug)]
pub struct BackupPlan {
    pub location: Location,
    pub repo: RepoOptions,
    pub host: String,
    pub tags: Vec<String>,
    /// The namespace and configuration the snapshot belongs to (its tags), and the only
    /// snapshots its retention touches. Without one, retention is skipped.
    pub identity: Option<crate::identity::Identity>,
    pub retention: Retention,
    pub selector: Selector,
    /// What the snapshot leaves out ([`ClusterDump::leave_out`]).
    pub skip: BTreeSet<DumpType>,
    pub wait_timeout: Duration,
    /// `None` = auto.
    pub slices: Option<u32>,
    /// Documents per page at most.
    pub page_size: u32,
    /// Bytes per page of one slice, about (see [`crate::budget`]).
    pub page_bytes: u64,
    /// Bytes of pages in flight over all slices of all indices.
    pub inflight_bytes: u64,
    /// Stage the documents here before archiving them (`None`: stream them).
    pub interim_dir: Option<PathBuf>,
}

/// One index to dump.
#[derive(Clone, Debug)]
pub struct IndexPlan {
    pub name: String,
    pub meta: IndexMeta,
    pub hidden: bool,
    pub primaries: u32,
    pub slices: u32,
    /// Its documents when the backup started (`_count`).
    pub documents: u64,
}

/// What the cluster holds that we save.
#[derive(Clone, Debug, Default)]
pub struct ClusterDump {
    pub component_templates: Map<String, Value>,
    pub index_templates: Map<String, Value>,
    pub legacy_templates: Map<String, Value>,
    pub indices: Vec<IndexPlan>,
}

impl ClusterDump {
    /// Leaves out what `--skip` names, as elasticdump's `--ignoreType` would: templates, index
    /// settings (all but the analysis settings when analyzers are kept), mappings, aliases.
    /// Documents are always kept (admission says so).
    pub fn leave_out(&mut self, skip: &BTreeSet<DumpType>) {
        if skip.contains(&DumpType::Template) {
            self.component_templates.clear();
            self.index_templates.clear();
            self.legacy_templates.clear();
        }
        for index in &mut self.indices {
            let meta = &mut index.meta;
            if skip.contains(&DumpType::Settings) {
                let analysis = !skip.contains(&DumpType::Analyzer);
                meta.settings
                    .retain(|key, _| analysis && key.starts_with("index.analysis."));
            }
            if skip.contains(&DumpType::Mapping) {
                meta.mappings = Value::Object(Map::new());
            }
            if skip.contains(&DumpType::Alias) {
                meta.aliases.clear();
            }
        }
    }
}

/// Templates the server manages itself are not user data.
fn user_template(name: &str, body: &Value) -> bool {
    !name.starts_with('.') && body["_meta"]["managed"] != true
}

async fn templates(
    client: &Client,
    path: &str,
    list_key: &str,
    item_key: &str,
) -> Result<Map<String, Value>> {
    let (status, body) = client.send_retried(Method::GET, path, None, path).await?;
    if status == reqwest::StatusCode::NOT_FOUND {
        return Ok(Map::new());
    }
    if !status.is_success() {
        return Err(crate::client::server_error(path, status, &body));
    }
    let v: Value = serde_json::from_slice(&body).map_err(|e| AgentError::json(path, e))?;
    let mut out = Map::new();
    for t in v[list_key].as_array().into_iter().flatten() {
        if let Some(name) = t["name"].as_str()
            && user_template(name, &t[item_key])
        {
            out.insert(name.to_string(), t[item_key].clone());
        }
    }
    Ok(out)
}

/// Every open index (hidden ones too) with its flat settings, mappings and aliases.
pub async fn open_indices(client: &Client) -> Result<Map<String, Value>> {
    client
        .json(
            Method::GET,
            "/_all?expand_wildcards=open,hidden&flat_settings=true",
            None,
            "list indices",
        )
        .await
}

/// Reads templates and the selected indices' metadata.
pub async fn collect(
    client: &Client,
    selector: &Selector,
    slices: Option<u32>,
    page_size: u32,
) -> Result<ClusterDump> {
    let mut dump = ClusterDump {
        component_templates: templates(
            client,
            "/_component_template",
            "component_templates",
            "component_template",
        )
        .await?,
        index_templates: templates(
            client,
            "/_index_template",
            "index_templates",
            "index_template",
        )
        .await?,
        ..Default::default()
    };
    let legacy: Map<String, Value> = client
        .json(Method::GET, "/_template", None, "GET /_template")
        .await?;
    dump.legacy_templates = legacy
        .into_iter()
        .filter(|(name, body)| user_template(name, body))
        .collect();

    for (name, body) in open_indices(client).await? {
        if let Some(index) = index_plan(client, selector, slices, page_size, name, &body).await? {
            dump.indices.push(index);
        }
    }
    dump.indices.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(dump)
}

/// One index of `GET /_all` as a plan to dump it, if the selector picks it: its restorable
/// settings, mappings and aliases, its primaries and how many slices read it.
async fn index_plan(
    client: &Client,
    selector: &Selector,
    slices: Option<u32>,
    page_size: u32,
    name: String,
    body: &Value,
) -> Result<Option<IndexPlan>> {
    let aliases = body["aliases"].as_object().cloned().unwrap_or_default();
    let alias_names: Vec<String> = aliases.keys().cloned().collect();
    let flat = body["settings"].as_object().cloned().unwrap_or_default();
    let hidden = flat.get("index.hidden").and_then(Value::as_str) == Some("true");
    if !selector.selects(&name, &alias_names, hidden)? {
        return Ok(None);
    }
    let primaries = flat
        .get("index.number_of_shards")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<u32>().ok())
        .unwrap_or(1);
    let count: Value = client
        .json(
            Method::GET,
            &format!("/{}/_count", encode_path(&name)),
            None,
            &format!("count {name}"),
        )
        .await?;
    let docs = count["count"].as_u64().unwrap_or(0);
    let slices = if docs < 4 * u64::from(page_size) {
        // Slicing a small index costs more than it gains (and an empty one without
        // mappings cannot be sliced at all).
        1
    } else {
        slices.unwrap_or_else(|| primaries.clamp(2, 8)).max(1)
    };
    Ok(Some(IndexPlan {
        primaries,
        meta: IndexMeta {
            settings: settings::restorable(&flat),
            mappings: body["mappings"].clone(),
            aliases,
        },
        name,
        hidden,
        slices,
        documents: docs,
    }))
}

/// Point in time where the server has it and accepts `_shard_doc`, else scroll.
pub async fn read_mode(client: &Client, info: &ServerInfo, probe_index: Option<&str>) -> ReadMode {
    let Some(dist) = info.pit() else {
        return ReadMode::Scroll;
    };
    if dist == Distribution::Elasticsearch {
        return ReadMode::Pit(dist);
    }
    let Some(index) = probe_index else {
        return ReadMode::Pit(dist);
    };
    // OpenSearch's PIT sort support differs between releases: try it once (through transient
    // failures: a lost answer must not choose scroll, whose pages are less retriable).
    let enc = encode_path(index);
    let path = format!("/{enc}/_search/point_in_time?keep_alive=1m");
    let open = client
        .send_retried(Method::POST, &path, None, "probe point in time")
        .await;
    let Ok((status, bytes)) = open else {
        return ReadMode::Scroll;
    };
    let open: Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let Some(id) = open["pit_id"].as_str().filter(|_| status.is_success()) else {
        return ReadMode::Scroll;
    };
    let body =
        json!({"size": 1, "pit": {"id": id, "keep_alive": "1m"}, "sort": [{"_shard_doc": "asc"}]});
    let probe = client
        .send_retried(
            Method::POST,
            "/_search",
            Some(Body::Json(body)),
            "probe _shard_doc",
        )
        .await;
    let ok = matches!(probe, Ok((status, _)) if status.is_success());
    let _ = client
        .send_retried(
            Method::DELETE,
            "/_search/point_in_time",
            Some(Body::Json(json!({"pit_id": [id]}))),
            "close probe",
        )
        .await;
    if ok {
        ReadMode::Pit(dist)
    } else {
        tracing::info!(
            "the server does not sort a point in time by _shard_doc: using sliced scroll"
        );
        ReadMode::Scroll
    }
}

fn json_bytes(v: &impl serde::Serialize) -> Result<Bytes> {
    serde_json::to_vec_pretty(v)
        .map(Bytes::from)
        .map_err(|e| AgentError::json("encode", e))
}

/// The staging directory in the interim directory, emptied on creation (a previous run may
/// have died) and removed on drop.
struct StagingDir(PathBuf);

impl StagingDir {
    fn create(interim: &std::path::Path) -> Result<Self> {
        let dir = interim.join("cairn-staging");
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed staged files of an earlier run")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(AgentError::io(format!("clear {}", dir.display()), e)),
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| AgentError::io(format!("INTERIM_DATA_DIR {}", interim.display()), e))?;
        tracing::info!(dir = %dir.display(), "staging the documents in the interim directory");
        Ok(Self(dir))
    }
}

impl Drop for StagingDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.0.display(), error = %e, "could not remove the staged files");
        }
    }
}

/// Indices staged at once (each with its own slices).
const STAGE_PARALLEL: usize = 2;

/// Stages every index's documents in `dir`.
async fn stage_all(
    state: &Arc<DumpState>,
    indices: &[IndexPlan],
    dir: &std::path::Path,
) -> Result<BTreeMap<String, Staged>> {
    use futures::StreamExt;
    let jobs = indices.iter().enumerate().map(|(n, i)| {
        let state = state.clone();
        // By position: index names may be long, and the file name only has to be unique.
        let path = dir.join(format!("{n:06}.ndjson"));
        let (name, slices) = (i.name.clone(), i.slices);
        async move {
            state
                .stage(name.clone(), slices, path)
                .await
                .map(|s| (name, s))
        }
    });
    let mut out = BTreeMap::new();
    let mut first_err = None;
    let mut results = futures::stream::iter(jobs).buffer_unordered(STAGE_PARALLEL);
    // Drained to the end: after a failure the others stop at their next page, releasing
    // their search contexts on the way (see `DumpState::stage`).
    while let Some(r) = results.next().await {
        match r {
            Ok((name, staged)) => {
                out.insert(name, staged);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(out),
    }
}

/// The plan's retention over its own snapshots; none without an identity, since a snapshot
/// without one may be anyone's.
fn retention(
    repository: &repo::OpenRepo,
    plan: &BackupPlan,
    lock: &crate::lock::RepoLock,
) -> crate::error::Result<repo::RetentionOutcome> {
    let Some(identity) = plan.identity.clone() else {
        if plan.retention.is_set() {
            tracing::warn!(
                "retention skipped: no --namespace and --configuration name the snapshots it may touch"
            );
        }
        return Ok(repo::RetentionOutcome::default());
    };
    let scope = crate::identity::RetentionScope::Own(identity);
    repo::apply_retention(repository, &plan.host, &scope, &plan.retention, Some(lock))
}

/// Runs a backup.
#[tracing::instrument(name = "backup", skip_all, fields(host = %plan.host))]
pub fn run(plan: &BackupPlan, client: &Client) -> Result<BackupResult, Failed> {
    let started = Instant::now();
    let rt = crate::output::runtime().phase("connect")?;
    let info = rt
        .block_on(client.wait_ready(plan.wait_timeout))
        .phase("connect")?;
    tracing::info!(distribution = ?info.distribution, version = %info.version, "server ready");

    let gate = Arc::new(AtomicBool::new(false));
    let (repository, lock) = open_locked(plan, &gate)?;

    let mut dump = rt
        .block_on(collect(client, &plan.selector, plan.slices, plan.page_size))
        .phase("dump")?;
    dump.leave_out(&plan.skip);
    let mode = rt.block_on(choose_mode(client, &info, &mut dump));
    tracing::info!(indices = dump.indices.len(), ?mode, "dumping");

    let manifest = manifest(plan, &info, &dump);
    let mut entries = entries(&dump).phase("dump")?;
    let state = DumpState::new(
        rt.handle().clone(),
        client.clone(),
        mode,
        Paging::new(plan.page_size, plan.page_bytes, plan.inflight_bytes),
        dump.indices.len(),
        manifest,
        gate,
    );
    let total = dump.indices.iter().map(|i| i.documents).sum();
    let progress = progress(&state, total);
    // Removes the staged files whatever happens below.
    let staging = match &plan.interim_dir {
        Some(dir) => Some(stage(&rt, &state, &dump, dir, &mut entries)?),
        None => None,
    };
    let source = DumpSource::new(&state, entries);
    let described = Description {
        documents: total,
        indices: dump.indices.len() as u64,
    };
    let snap = snapshot_file(plan, described)?;
    // No parent: our files' metadata says nothing about their content, and a "matched" parent
    // file would be reused without reading the server.
    let bopts = BackupOptions::default().parent_opts(ParentOptions::default().force(true));

    let indexed = repository
        .to_indexed_ids()
        .map_err(|e| AgentError::rustic("read index", e))
        .phase("upload")?;
    let archived = indexed.archive(&bopts, &source, snap, &[PathBuf::from(layout::ROOT)]);
    progress.stop();
    drop(staging);
    if let Some(f) = state.failure() {
        return Err(AgentError::Dump(f)).phase("dump");
    }
    let snap = archived
        .map_err(|e| AgentError::rustic("save snapshot", e))
        .phase("upload")?;
    let repository = indexed.drop_index();

    let summary = snap.summary.clone().unwrap_or_default();
    let documents = state.docs.load(Ordering::Relaxed);
    tracing::info!(snapshot = %snap.id, documents, "snapshot saved");

    let done = finish(&repository, plan, lock);
    Ok(BackupResult {
        snapshot: snap.id.to_hex().to_string(),
        time: snap.time.timestamp().to_string(),
        host: plan.host.clone(),
        indices: dump.indices.len() as u64,
        documents,
        total_bytes: summary.total_bytes_processed,
        added_bytes: summary.data_added,
        duration_seconds: started.elapsed().as_secs_f64(),
        snapshots_kept: done.outcome.kept,
        snapshots_removed: done.outcome.removed,
        repository: done.totals,
        retention_error: done.retention_error,
        totals_error: done.totals_error,
        inventory: done.inventory,
        native: None,
    })
}

/// What happened after the snapshot was saved.
struct Finished {
    outcome: repo::RetentionOutcome,
    totals: RepositoryTotals,
    retention_error: Option<String>,
    totals_error: Option<String>,
    inventory: Option<u64>,
}

/// After the snapshot: retention, the repository's totals, the lock released. The snapshot is
/// saved by then, so nothing here fails the backup: a failure is reported next to the snapshot
/// (a failed backup would hide it from the status, and its retry would save it again).
fn finish(repository: &repo::OpenRepo, plan: &BackupPlan, lock: crate::lock::RepoLock) -> Finished {
    let (outcome, retention_error) = match retention(repository, plan, &lock) {
        Ok(o) => (o, None),
        Err(e) => {
            tracing::warn!(error = %e, "retention failed after the snapshot was saved");
            (repo::RetentionOutcome::default(), Some(e.to_string()))
        }
    };
    let (totals, totals_error) = match repo::totals(repository) {
        Ok((snapshot_count, size_bytes)) => (
            RepositoryTotals {
                snapshot_count,
                size_bytes,
                integrity: None,
            },
            None,
        ),
        Err(e) => {
            tracing::warn!(error = %e, "the repository's totals could not be read");
            (RepositoryTotals::default(), Some(e.to_string()))
        }
    };
    let inventory = crate::inventory::write_after_backup(repository);
    if let Err(e) = lock.release() {
        tracing::warn!(error = %e, "could not remove the repository lock");
    }
    Finished {
        outcome,
        totals,
        retention_error,
        totals_error,
        inventory,
    }
}

/// The repository, initialised on first use, behind `gate` (see [`GatedBackend`]), and a
/// shared restic lock on it.
fn open_locked(
    plan: &BackupPlan,
    gate: &Arc<AtomicBool>,
) -> Result<(repo::OpenRepo, crate::lock::RepoLock), Failed> {
    let be = repo::backend(&plan.location, &plan.repo).phase("repository")?;
    let gated: Arc<dyn rustic_core::WriteBackend> = Arc::new(GatedBackend::new(be, gate.clone()));
    let repository = repo::open(gated, &plan.repo, true).phase("repository")?;
    let lock = crate::lock::RepoLock::acquire(
        crate::files::Store::new(&plan.location, &plan.repo).phase("repository")?,
        &repository,
        false,
    )
    .phase("repository")?;
    Ok((repository, lock))
}

/// How documents are read (see [`read_mode`]); with scroll, no more slices than shards.
async fn choose_mode(client: &Client, info: &ServerInfo, dump: &mut ClusterDump) -> ReadMode {
    let mode = read_mode(client, info, dump.indices.first().map(|i| i.name.as_str())).await;
    if mode == ReadMode::Scroll {
        // More scroll slices than shards make the server filter every document per slice.
        for i in &mut dump.indices {
            i.slices = i.slices.min(i.primaries.max(1));
        }
    }
    mode
}

/// The manifest as it starts: every index pending until its documents are read.
fn manifest(plan: &BackupPlan, info: &ServerInfo, dump: &ClusterDump) -> Manifest {
    Manifest {
        format: layout::FORMAT,
        created_by: format!("cairn-agent {}", env!("CARGO_PKG_VERSION")),
        created: chrono::Utc::now().to_rfc3339(),
        host: plan.host.clone(),
        server: ServerMeta {
            distribution: info.distribution,
            version: info.version.clone(),
        },
        indices: dump
            .indices
            .iter()
            .map(|i| {
                (
                    i.name.clone(),
                    pending_entry(i.meta.aliases.keys().cloned().collect(), i.hidden),
                )
            })
            .collect::<BTreeMap<_, _>>(),
        templates: TemplateCounts {
            component: dump.component_templates.len() as u64,
            composable: dump.index_templates.len() as u64,
            legacy: dump.legacy_templates.len() as u64,
        },
    }
}

/// The snapshot's files in order: templates, each index's documents and metadata, the
/// manifest last.
fn entries(dump: &ClusterDump) -> Result<Vec<Entry>> {
    let mut entries = vec![
        Entry {
            path: layout::path(layout::COMPONENT_TEMPLATES).into(),
            content: Content::Static(json_bytes(&dump.component_templates)?),
        },
        Entry {
            path: layout::path(layout::INDEX_TEMPLATES).into(),
            content: Content::Static(json_bytes(&dump.index_templates)?),
        },
        Entry {
            path: layout::path(layout::LEGACY_TEMPLATES).into(),
            content: Content::Static(json_bytes(&dump.legacy_templates)?),
        },
    ];
    for i in &dump.indices {
        entries.push(Entry {
            path: layout::index_path(&i.name, layout::DOCUMENTS).into(),
            content: Content::Documents {
                index: i.name.clone(),
                slices: i.slices,
            },
        });
        entries.push(Entry {
            path: layout::index_path(&i.name, layout::INDEX_META).into(),
            content: Content::Static(json_bytes(&i.meta)?),
        });
    }
    entries.push(Entry {
        path: layout::path(layout::MANIFEST).into(),
        content: Content::Manifest,
    });
    Ok(entries)
}

/// Reports documents and bytes read while the backup runs.
fn progress(state: &Arc<DumpState>, total: u64) -> crate::output::Progress {
    crate::output::Progress::start(
        "dump",
        total,
        Arc::new({
            let s = state.clone();
            move || {
                (
                    s.docs.load(Ordering::Relaxed),
                    s.bytes.load(Ordering::Relaxed),
                )
            }
        }),
    )
}

/// Reads every index's documents into files under `dir` first, and points their entries there.
fn stage(
    rt: &tokio::runtime::Runtime,
    state: &Arc<DumpState>,
    dump: &ClusterDump,
    dir: &std::path::Path,
    entries: &mut [Entry],
) -> Result<StagingDir, Failed> {
    let staging = StagingDir::create(dir).phase("dump")?;
    let staged = rt
        .block_on(stage_all(state, &dump.indices, &staging.0))
        .phase("dump")?;
    for e in entries {
        if let Content::Documents { index, .. } = &e.content
            && let Some(s) = staged.get(index)
        {
            e.content = Content::Staged {
                index: index.clone(),
                staged: s.clone(),
            };
        }
    }
    Ok(staging)
}

/// The new snapshot: its host, the plan's tags and the identity's, and what it holds.
fn snapshot_file(
    plan: &BackupPlan,
    described: Description,
) -> Result<rustic_core::repofile::SnapshotFile, Failed> {
    let mut sopts = SnapshotOptions::default()
        .host(plan.host.clone())
        .description(described.to_text());
    let identity_tags = plan.identity.iter().flat_map(|i| i.tags());
    for t in plan.tags.iter().cloned().chain(identity_tags) {
        sopts = sopts
            .add_tags(&t)
            .map_err(|e| AgentError::rustic("tag", e))
            .phase("upload")?;
    }
    sopts
        .to_snapshot()
        .map_err(|e| AgentError::rustic("snapshot", e))
        .phase("upload")
}
