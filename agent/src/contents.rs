//! What a restore reads from a snapshot, whichever tool made it: cairn's own layout (`layout`,
//! recognised by its manifest) or a Stash addon's dump (`stash_dump`, recognised by its files),
//! as one list of templates and indices. Everything here is read before the restore's first
//! request; a snapshot that is neither fails with one line saying what it holds.

use std::path::{Path, PathBuf};

use rustic_core::repofile::SnapshotFile;
use rustic_core::{IndexedFull, LsOptions, Repository};
use serde_json::{Map, Value};

use crate::error::{AgentError, Result, short};
use crate::layout::{self, IndexEntry, IndexMeta, Manifest};
use crate::stash_dump::{self, Dump, Part};

/// The snapshot's templates of each kind (its API path).
pub type Templates = Vec<(&'static str, Map<String, Value>)>;

/// One index of the snapshot.
#[derive(Clone, Debug)]
pub struct Listed {
    pub name: String,
    pub aliases: Vec<String>,
    pub hidden: bool,
    /// Its documents' path in the snapshot (`None`: the dump left the documents out).
    pub documents: Option<String>,
    /// The manifest's counts and checksum; a Stash dump has none.
    pub expected: Option<IndexEntry>,
    /// Read with the listing (Stash), or when the index is selected (cairn: `index.json`).
    pub meta: Option<IndexMeta>,
}

/// Templates and indices of a snapshot.
#[derive(Clone, Debug)]
pub struct Contents {
    pub templates: Templates,
    pub indices: Vec<Listed>,
    /// What was translated from an older server's shapes, each named.
    pub notes: Vec<String>,
}

/// A small file of the snapshot, whole.
pub fn read_small<S: IndexedFull>(
    repo: &Repository<S>,
    snap: &SnapshotFile,
    path: &str,
) -> Result<Vec<u8>> {
    let node = repo
        .node_from_snapshot_and_path(snap, path)
        .map_err(|e| AgentError::rustic(&format!("find {path}"), e))?;
    let mut out = Vec::new();
    repo.dump(&node, &mut out)
        .map_err(|e| AgentError::rustic(&format!("read {path}"), e))?;
    Ok(out)
}

/// Every file of the snapshot, by its path from the root.
fn files<S: IndexedFull>(repo: &Repository<S>, snap: &SnapshotFile) -> Result<Vec<PathBuf>> {
    let root = repo
        .node_from_snapshot_and_path(snap, "/")
        .map_err(|e| AgentError::rustic("read the snapshot's tree", e))?;
    let mut out = Vec::new();
    for item in repo
        .ls(&root, &LsOptions::default())
        .map_err(|e| AgentError::rustic("list the snapshot", e))?
    {
        let (path, node) = item.map_err(|e| AgentError::rustic("list the snapshot", e))?;
        if !node.is_dir() {
            out.push(path);
        }
    }
    Ok(out)
}

/// Reads what the snapshot holds.
pub fn read<S: IndexedFull>(repo: &Repository<S>, snap: &SnapshotFile) -> Result<Contents> {
    let files = files(repo, snap)?;
    let manifest = Path::new(layout::ROOT).join(layout::MANIFEST);
    if files.iter().any(|f| Path::new("/").join(f) == manifest) {
        return read_cairn(repo, snap);
    }
    match Dump::find(files.iter().map(PathBuf::as_path)) {
        Ok(Some(dump)) => read_stash(repo, snap, dump),
        Ok(None) => Err(neither(snap, &files, None)),
        Err(e) => Err(neither(snap, &files, Some(e))),
    }
}

/// The one-line reason for a snapshot this agent cannot restore.
fn neither(snap: &SnapshotFile, files: &[PathBuf], why: Option<String>) -> AgentError {
    let id = snap.id.to_hex();
    if let Some(why) = why {
        return AgentError::Snapshot(format!("{} {why}", &id[..8]));
    }
    let mut tops: Vec<String> = files
        .iter()
        .filter_map(|p| p.components().next())
        .map(|c| format!("/{}", c.as_os_str().to_string_lossy()))
        .collect();
    tops.dedup();
    let holds = if files.is_empty() {
        "no files".to_string()
    } else {
        format!(
            "{} files under {}",
            files.len(),
            short(&tops.join(", "), 200)
        )
    };
    AgentError::Snapshot(format!(
        "{} holds neither a cairn manifest ({}) nor a Stash dump (a directory of \
         multielasticdump's <index>.json, .mapping.json and .settings.json files): it holds {holds}; \
         restore a snapshot made by cairn-agent backup or by Stash's Elasticsearch addon",
        &id[..8],
        layout::path(layout::MANIFEST)
    ))
}

fn read_cairn<S: IndexedFull>(repo: &Repository<S>, snap: &SnapshotFile) -> Result<Contents> {
    let manifest: Manifest =
        serde_json::from_slice(&read_small(repo, snap, &layout::path(layout::MANIFEST))?)
            .map_err(|e| AgentError::json("manifest.json", e))?;
    if manifest.format != layout::FORMAT {
        return Err(AgentError::Snapshot(format!(
            "layout format {} is not supported (this agent reads {})",
            manifest.format,
            layout::FORMAT
        )));
    }
    let mut templates = Vec::new();
    for (file, kind) in [
        (layout::COMPONENT_TEMPLATES, "_component_template"),
        (layout::INDEX_TEMPLATES, "_index_template"),
        (layout::LEGACY_TEMPLATES, "_template"),
    ] {
        let map: Map<String, Value> =
            serde_json::from_slice(&read_small(repo, snap, &layout::path(file))?)
                .map_err(|e| AgentError::json(file, e))?;
        templates.push((kind, map));
    }
    let indices = manifest
        .indices
        .iter()
        .map(|(name, entry)| Listed {
            name: name.clone(),
            aliases: entry.aliases.clone(),
            hidden: entry.hidden,
            documents: Some(layout::index_path(name, layout::DOCUMENTS)),
            expected: Some(entry.clone()),
            meta: None,
        })
        .collect();
    Ok(Contents {
        templates,
        indices,
        notes: Vec::new(),
    })
}

fn read_stash<S: IndexedFull>(
    repo: &Repository<S>,
    snap: &SnapshotFile,
    dump: Dump,
) -> Result<Contents> {
    let mut notes = Vec::new();
    let mut legacy = Map::new();
    let mut indices = Vec::new();
    for (name, parts) in &dump.indices {
        let mut files = std::collections::BTreeMap::new();
        for part in parts.iter().filter(|p| **p != Part::Data) {
            let path = dump.file(name, *part);
            let bytes = read_small(repo, snap, &path)?;
            files.insert(*part, stash_dump::decode(&bytes, &path)?);
        }
        // Each index's template file holds every legacy template of the cluster.
        if let Some(templates) = files.get(&Part::Template) {
            for (t, body) in templates {
                if !legacy.contains_key(t) {
                    let body = stash_dump::legacy_template(t, body, &mut notes);
                    legacy.insert(t.clone(), body);
                }
            }
        }
        let meta = stash_dump::index_meta(name, &files, &mut notes);
        indices.push(Listed {
            name: name.clone(),
            aliases: meta.aliases.keys().cloned().collect(),
            hidden: meta.settings.get("index.hidden").is_some_and(is_true),
            documents: parts
                .contains(&Part::Data)
                .then(|| dump.file(name, Part::Data)),
            expected: None,
            meta: Some(meta),
        });
    }
    tracing::info!(dir = %dump.dir, indices = indices.len(), "a Stash dump: no manifest to check the documents against");
    Ok(Contents {
        templates: vec![("_template", legacy)],
        indices,
        notes,
    })
}

fn is_true(v: &Value) -> bool {
    v == &Value::Bool(true) || v == "true"
}

impl Listed {
    /// Its metadata: read with the listing, or its `index.json` now.
    pub fn meta<S: IndexedFull>(
        &self,
        repo: &Repository<S>,
        snap: &SnapshotFile,
    ) -> Result<IndexMeta> {
        if let Some(meta) = &self.meta {
            return Ok(meta.clone());
        }
        serde_json::from_slice(&read_small(
            repo,
            snap,
            &layout::index_path(&self.name, layout::INDEX_META),
        )?)
        .map_err(|e| AgentError::json(format!("index.json of {}", self.name), e))
    }
}
