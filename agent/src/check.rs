//! `check`: the repository's integrity, and which snapshots its damage reaches.
//!
//! rustic's check verifies the structure (index against the packs in the storage, every
//! snapshot's trees, every blob they name in the index); its findings carry no ids we can
//! name (its error type is private), and its data read says neither what it read nor which
//! blobs failed. So the data is read here: the packs [`ReadSubset`] selects, each checked whole
//! (its hash is its id) and blob by blob (each decrypts, and hashes to its id), as restic's
//! `check --read-data` does. The blobs found damaged, with those of packs missing from the
//! storage, are then looked for in every snapshot's trees: a snapshot is damaged when it
//! reaches one of them, a blob the index lacks, or a tree that cannot be read.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

pub use cairn_api::read_subset::ReadSubset;
use cairn_api::result::{CheckLogLine, CheckResult};
use rustic_core::repofile::{IndexFile, IndexPack, Node, NodeType, SnapshotFile, Tree};
use rustic_core::{CheckOptions, FileType, Id, ReadBackend, TreeId};
use sha2::{Digest, Sha256};

use crate::error::{AgentError, Result, short};
use crate::lock::Crypto;
use crate::repo::OpenRepo;

/// The byte of a pack id restic's subset rule looks at.
fn first_byte(id: &Id) -> u8 {
    (id.as_u32() & 0xff) as u8
}

/// Today, as [`ReadSubset::parse`] counts days.
pub fn today() -> i64 {
    chrono::Utc::now().timestamp().div_euclid(86_400)
}

/// The most error lines a result carries (the log has them all).
const MAX_ERRORS: usize = 100;

/// Packs read at once: the storage's latency, not its bandwidth, bounds one reader.
const READERS: usize = 4;

/// Checks the repository, reading the data `subset` selects.
pub fn run(repo: OpenRepo, raw: &dyn ReadBackend, subset: ReadSubset) -> Result<CheckResult> {
    let started = Instant::now();
    let snapshots = repo
        .get_all_snapshots()
        .map_err(|e| AgentError::rustic("list snapshots", e))?;
    let mut errors = structure_errors(&repo)?;
    let index = Index::load(&repo)?;
    let mut damage = index.missing_packs(raw)?;
    let chosen: Vec<&IndexPack> = index
        .packs
        .iter()
        .filter(|p| !damage.packs.contains(&p.id.into_inner()) && subset.selects(first_byte(&p.id)))
        .collect();
    let read = read_packs(&chosen, raw, &Crypto::of(&repo)?);
    damage.blobs.extend(read.damaged);
    errors.extend(read.errors);
    let damaged = if errors.is_empty() && damage.blobs.is_empty() {
        Vec::new()
    } else {
        damaged_snapshots(repo, &snapshots, &index, &damage.blobs)?
    };
    let errors_total = errors.len();
    errors.truncate(MAX_ERRORS);
    Ok(CheckResult {
        ok: errors_total == 0 && damaged.is_empty(),
        read_data_subset: subset.describe(),
        snapshots_checked: snapshots.len() as u64,
        packs_total: index.packs.len() as u64,
        packs_read: chosen.len() as u64,
        bytes_read: read.bytes,
        errors,
        errors_left_out: (errors_total.saturating_sub(MAX_ERRORS)) as u64,
        damaged_snapshots: damaged,
        damaged_snapshots_left_out: 0,
        duration_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The snapshots that reach a blob of `damaged`, each logged as a [`CheckLogLine`].
fn damaged_snapshots(
    repo: OpenRepo,
    snapshots: &[SnapshotFile],
    index: &Index,
    damaged: &HashSet<Id>,
) -> Result<Vec<String>> {
    let repo = repo
        .to_indexed_ids()
        .map_err(|e| AgentError::rustic("read the index", e))?;
    let mut walk = Walk {
        get_tree: |id: &TreeId| repo.get_tree(id).ok(),
        index,
        damaged,
        trees: HashMap::new(),
    };
    let mut out = Vec::new();
    for snap in snapshots {
        if walk.tree_damaged(snap.tree) {
            let snapshot = snap.id.to_hex().to_string();
            println!(
                "{}",
                CheckLogLine::Damaged {
                    snapshot: snapshot.clone()
                }
                .to_line()
            );
            out.push(snapshot);
        }
    }
    Ok(out)
}

/// rustic's structural check (no data read): its errors, each logged as a [`CheckLogLine`];
/// its warnings (e.g. a pack not yet in the index, from a backup under way) only logged.
fn structure_errors(repo: &OpenRepo) -> Result<Vec<String>> {
    let found = repo
        .check(CheckOptions::default())
        .map_err(|e| AgentError::rustic("check", e))?;
    let mut errors = Vec::new();
    for (level, finding) in &found.0 {
        // The level's type is private to rustic: its name tells.
        if format!("{level:?}") == "Warn" {
            tracing::warn!(finding = %finding, "check warning");
        } else {
            errors.push(log_error(finding.to_string()));
        }
    }
    Ok(errors)
}

/// Logs an error line (whole) and returns it cut to one short line.
fn log_error(text: String) -> String {
    let line = short(&text, 2000);
    println!("{}", CheckLogLine::Error { error: line }.to_line());
    short(&text, 300)
}

/// The repository's index: every pack, and every blob it knows.
struct Index {
    packs: Vec<IndexPack>,
    blobs: HashSet<Id>,
}

/// Packs and blobs found damaged or missing.
#[derive(Default)]
struct Damage {
    packs: HashSet<Id>,
    blobs: HashSet<Id>,
}

impl Index {
    fn load(repo: &OpenRepo) -> Result<Self> {
        let files = repo
            .stream_files::<IndexFile>()
            .map_err(|e| AgentError::rustic("read the index", e))?;
        let mut packs = Vec::new();
        for file in files {
            let (_, file) = file.map_err(|e| AgentError::rustic("read the index", e))?;
            packs.extend(file.packs);
        }
        let blobs = packs
            .iter()
            .flat_map(|p| p.blobs.iter().map(|b| b.id.into_inner()))
            .collect();
        Ok(Self { packs, blobs })
    }

    /// The packs the storage lacks, or holds at another size than the index says, and their
    /// blobs (rustic's check reports them as errors).
    fn missing_packs(&self, raw: &dyn ReadBackend) -> Result<Damage> {
        let stored: HashMap<Id, u32> = raw
            .list_with_size(FileType::Pack)
            .map_err(|e| AgentError::rustic("list packs", e))?
            .into_iter()
            .collect();
        let mut damage = Damage::default();
        for pack in &self.packs {
            if stored.get(&pack.id.into_inner()) != Some(&pack.pack_size()) {
                damage.packs.insert(pack.id.into_inner());
                damage
                    .blobs
                    .extend(pack.blobs.iter().map(|b| b.id.into_inner()));
            }
        }
        Ok(damage)
    }
}

/// What reading packs found.
#[derive(Default)]
struct Read {
    bytes: u64,
    damaged: Vec<Id>,
    errors: Vec<String>,
}

/// Reads `packs` ([`READERS`] at a time) and checks each.
fn read_packs(packs: &[&IndexPack], raw: &dyn ReadBackend, crypto: &Crypto) -> Read {
    let next = Mutex::new(packs.iter());
    let out = Mutex::new(Read::default());
    std::thread::scope(|s| {
        for _ in 0..READERS {
            s.spawn(|| {
                loop {
                    let Some(pack) = next.lock().ok().and_then(|mut i| i.next()) else {
                        return;
                    };
                    let (bytes, found) = match raw.read_full(FileType::Pack, &pack.id) {
                        Ok(data) => (data.len() as u64, check_pack(pack, &data, crypto)),
                        Err(e) => (0, unreadable(pack, &AgentError::rustic("read", e))),
                    };
                    if let Ok(mut out) = out.lock() {
                        out.bytes += bytes;
                        out.damaged.extend(found.damaged);
                        out.errors.extend(found.errors.into_iter().map(log_error));
                    }
                }
            });
        }
    });
    out.into_inner().unwrap_or_default()
}

/// A pack that could not be read: all its blobs are lost to this check.
fn unreadable(pack: &IndexPack, why: &AgentError) -> Read {
    Read {
        bytes: 0,
        damaged: pack.blobs.iter().map(|b| b.id.into_inner()).collect(),
        errors: vec![format!(
            "pack {}: cannot be read: {why}",
            pack.id.to_hex().as_str()
        )],
    }
}

/// One pack's data against the index: the file hashes to its id, and each blob at its place
/// decrypts, decompresses to its length, and hashes to its id.
fn check_pack(pack: &IndexPack, data: &[u8], crypto: &Crypto) -> Read {
    let id = pack.id.to_hex().as_str().to_string();
    let mut found = Read::default();
    if hash(data) != pack.id.into_inner() {
        found
            .errors
            .push(format!("pack {id}: its content does not hash to its id"));
    }
    for blob in &pack.blobs {
        let at = blob.location.offset as usize;
        let bytes = data.get(at..at + blob.location.length as usize);
        let plain = bytes.ok_or("lies past the pack's end").and_then(|b| {
            let plain = crypto.decrypt(b).map_err(|_| "does not decrypt")?;
            match blob.location.uncompressed_length {
                None => Ok(plain),
                Some(len) => zstd::decode_all(plain.as_slice())
                    .ok()
                    .filter(|p| p.len() == len.get() as usize)
                    .ok_or("does not decompress to its length"),
            }
        });
        let why = match plain {
            Ok(p) if hash(&p) == blob.id.into_inner() => continue,
            Ok(_) => "does not hash to its id",
            Err(why) => why,
        };
        found.damaged.push(blob.id.into_inner());
        found.errors.push(format!(
            "pack {id}: blob {}: {why}",
            blob.id.to_hex().as_str()
        ));
    }
    found
}

/// restic's id of a content: its SHA-256.
fn hash(data: &[u8]) -> Id {
    Id::new(Sha256::digest(data).into())
}

/// The walk through snapshots' trees, each tree judged once.
struct Walk<'a, G> {
    get_tree: G,
    index: &'a Index,
    damaged: &'a HashSet<Id>,
    /// Trees judged so far: damaged or not.
    trees: HashMap<TreeId, bool>,
}

impl<G: Fn(&TreeId) -> Option<Tree>> Walk<'_, G> {
    /// Whether the tree, or anything under it, is damaged, missing or unreadable.
    fn tree_damaged(&mut self, id: TreeId) -> bool {
        if let Some(&known) = self.trees.get(&id) {
            return known;
        }
        let damaged = self.blob_damaged(&id.into_inner())
            || match (self.get_tree)(&id) {
                None => true,
                Some(tree) => tree.nodes.iter().any(|node| self.node_damaged(node)),
            };
        self.trees.insert(id, damaged);
        damaged
    }

    fn node_damaged(&mut self, node: &Node) -> bool {
        match node.node_type {
            NodeType::File => node
                .content
                .iter()
                .flatten()
                .any(|blob| self.blob_damaged(&blob.into_inner())),
            NodeType::Dir => node.subtree.is_none_or(|t| self.tree_damaged(t)),
            _ => false,
        }
    }

    fn blob_damaged(&self, id: &Id) -> bool {
        self.damaged.contains(id) || !self.index.blobs.contains(id)
    }
}
