//! Documents streamed into rustic's archiver without a copy on disk or in memory.
//!
//! rustic_core's `Repository::archive` takes any [`ReadSource`]: a list of file entries, each
//! opened lazily by the archiver's worker threads and read as a `std::io::Read`. Our entries are
//! the small JSON files (held in memory), one `documents.ndjson` per index whose reader is fed by
//! a bounded channel from the async readers (point-in-time/scroll slices), and the manifest,
//! whose reader waits until every document stream has ended and then reports their counts and
//! checksums. A file is opened when the archiver reaches it, so as many indices are read at once
//! as the archiver has workers, and at most `CHANNEL_PAGES` pages per slice wait in memory; the
//! pages of all indices are counted against one byte budget (see [`crate::budget`]) until the
//! archiver has read them.
//!
//! With `INTERIM_DATA_DIR` the documents are staged instead: every index is first read into
//! one NDJSON file there ([`DumpState::stage`], counts and checksum computed while writing), and
//! the archiver then reads those files ([`Content::Staged`]), checking each against its checksum
//! and deleting it once read. The snapshot's content is the same either way.
//!
//! The archiver skips files it cannot read (with a warning) and would save the rest as a
//! snapshot, so every failure is recorded here and the snapshot write is gated on a complete
//! dump (see [`crate::repo::GatedBackend`]).

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use bytes::{Buf, Bytes};
use rustic_core::repofile::{Metadata, Node, NodeType};
use rustic_core::{
    ErrorKind, ReadSource, ReadSourceEntry, ReadSourceOpen, RusticError, RusticResult,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use crate::budget::{Held, Paging};
use crate::client::Client;
use crate::error::AgentError;
use crate::layout::{IndexEntry, Manifest};
use crate::search::{ReadMode, read_index};
use crate::skim::Page;

/// Pages buffered per index between the readers and the archiver.
const CHANNEL_PAGES: usize = 2;

enum Msg {
    /// A page's documents and their share of the budget.
    Data(Bytes, Option<Held>),
    Done(u64),
    Failed(String),
}

/// What every stream shares: the server, progress, results and the first failure.
pub struct DumpState {
    pub rt: tokio::runtime::Handle,
    pub client: Client,
    pub mode: ReadMode,
    pub paging: Paging,
    failure: Mutex<Option<String>>,
    results: Mutex<BTreeMap<String, (u64, u64, String)>>,
    finished: Mutex<usize>,
    changed: Condvar,
    streams: usize,
    manifest: Mutex<Option<Manifest>>,
    gate: Arc<AtomicBool>,
    pub docs: AtomicU64,
    pub bytes: AtomicU64,
}

impl DumpState {
    pub fn new(
        rt: tokio::runtime::Handle,
        client: Client,
        mode: ReadMode,
        paging: Paging,
        streams: usize,
        manifest: Manifest,
        gate: Arc<AtomicBool>,
    ) -> Arc<Self> {
        Arc::new(Self {
            rt,
            client,
            mode,
            paging,
            failure: Mutex::new(None),
            results: Mutex::new(BTreeMap::new()),
            finished: Mutex::new(0),
            changed: Condvar::new(),
            streams,
            manifest: Mutex::new(Some(manifest)),
            gate,
            docs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        })
    }

    /// The first failure, if any.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// An error once the dump failed elsewhere: readers stop at their next page (and
    /// release their search contexts) rather than read what will not be saved.
    fn stop_if_failed(&self) -> Result<(), AgentError> {
        match self.failure() {
            Some(f) => Err(AgentError::Dump(format!("stopped: {f}"))),
            None => Ok(()),
        }
    }

    fn fail(&self, reason: String) {
        if let Ok(mut f) = self.failure.lock()
            && f.is_none()
        {
            tracing::error!(%reason, "dump failed");
            *f = Some(reason);
        }
        self.changed.notify_all();
    }

    /// Records a document stream's failure and end; the error for the archiver.
    fn stream_failed(&self, reason: String) -> std::io::Error {
        self.fail(reason.clone());
        self.stream_ended();
        std::io::Error::other(reason)
    }

    fn stream_ended(&self) {
        if let Ok(mut n) = self.finished.lock() {
            *n += 1;
        }
        self.changed.notify_all();
    }

    /// The manifest with every index's result, once all streams ended without a failure.
    fn final_manifest(&self) -> Result<Manifest, String> {
        let mut n = self
            .finished
            .lock()
            .map_err(|_| "lock poisoned".to_string())?;
        loop {
            if let Some(f) = self.failure() {
                return Err(f);
            }
            if *n >= self.streams {
                break;
            }
            n = self
                .changed
                .wait(n)
                .map_err(|_| "lock poisoned".to_string())?;
        }
        drop(n);
        let results = self
            .results
            .lock()
            .map_err(|_| "lock poisoned".to_string())?
            .clone();
        let mut m = self
            .manifest
            .lock()
            .map_err(|_| "lock poisoned".to_string())?
            .take()
            .ok_or("manifest requested twice")?;
        for (index, entry) in m.indices.iter_mut() {
            let Some((docs, bytes, sha)) = results.get(index) else {
                return Err(format!("no document stream ended for index {index}"));
            };
            entry.documents = *docs;
            entry.bytes = *bytes;
            entry.sha256.clone_from(sha);
        }
        Ok(m)
    }
}

/// One index's documents in a file of the interim directory.
#[derive(Clone, Debug)]
pub struct Staged {
    pub path: PathBuf,
    pub docs: u64,
    pub bytes: u64,
    pub sha256: String,
}

impl DumpState {
    /// Reads all documents of `index` into the file `path` (NDJSON, as the snapshot holds them)
    /// and records the index's result for the manifest.
    pub async fn stage(
        self: Arc<Self>,
        index: String,
        slices: u32,
        path: PathBuf,
    ) -> Result<Staged, AgentError> {
        let file = tokio::fs::File::create(&path)
            .await
            .map_err(|e| AgentError::io(format!("create {}", path.display()), e))?;
        let out = Arc::new(tokio::sync::Mutex::new((
            tokio::io::BufWriter::with_capacity(1 << 20, file),
            Sha256::new(),
            0u64,
        )));
        let sink = {
            let out = out.clone();
            let progress = self.clone();
            move |page: Page| {
                let out = out.clone();
                let progress = progress.clone();
                async move {
                    progress.stop_if_failed()?;
                    progress.docs.fetch_add(page.docs, Ordering::Relaxed);
                    progress
                        .bytes
                        .fetch_add(page.ndjson.len() as u64, Ordering::Relaxed);
                    let mut guard = out.lock().await;
                    let (writer, hasher, bytes) = &mut *guard;
                    hasher.update(&page.ndjson);
                    *bytes += page.ndjson.len() as u64;
                    writer
                        .write_all(&page.ndjson)
                        .await
                        .map_err(|e| AgentError::io("write to the interim directory", e))
                }
            }
        };
        let docs = read_index(&self.client, &index, self.mode, slices, &self.paging, sink)
            .await
            .map_err(|e| {
                let reason = format!("reading index {index}: {e}");
                // The indices staged meanwhile stop at their next page.
                self.fail(reason.clone());
                AgentError::Dump(reason)
            })?;
        let mut guard = out.lock().await;
        let (writer, hasher, bytes) = &mut *guard;
        writer
            .flush()
            .await
            .map_err(|e| AgentError::io("write to the interim directory", e))?;
        let staged = Staged {
            path,
            docs,
            bytes: *bytes,
            sha256: hex::encode(hasher.clone().finalize()),
        };
        if let Ok(mut r) = self.results.lock() {
            r.insert(
                index.clone(),
                (staged.docs, staged.bytes, staged.sha256.clone()),
            );
        }
        tracing::info!(index = %index, docs, bytes = staged.bytes, "index staged");
        Ok(staged)
    }
}

/// One file of the snapshot.
pub enum Content {
    Static(Bytes),
    Documents {
        index: String,
        slices: u32,
    },
    /// Documents already in a file of the interim directory (see [`DumpState::stage`]).
    Staged {
        index: String,
        staged: Staged,
    },
    Manifest,
}

pub struct Entry {
    pub path: PathBuf,
    pub content: Content,
}

/// The [`ReadSource`] of one backup.
pub struct DumpSource {
    entries: Vec<(PathBuf, Opener)>,
}

impl DumpSource {
    /// `entries` must be in path order.
    pub fn new(state: &Arc<DumpState>, entries: Vec<Entry>) -> Self {
        let entries = entries
            .into_iter()
            .map(|e| {
                let open = match e.content {
                    Content::Static(b) => Opener::Static(b),
                    Content::Documents { index, slices } => Opener::Documents {
                        state: state.clone(),
                        index,
                        slices,
                    },
                    Content::Staged { index, staged } => Opener::Staged {
                        state: state.clone(),
                        index,
                        staged,
                    },
                    Content::Manifest => Opener::Manifest(state.clone()),
                };
                (e.path, open)
            })
            .collect();
        Self { entries }
    }
}

/// Opens one file when the archiver gets to it.
#[derive(Clone)]
pub enum Opener {
    Static(Bytes),
    Documents {
        state: Arc<DumpState>,
        index: String,
        slices: u32,
    },
    Staged {
        state: Arc<DumpState>,
        index: String,
        staged: Staged,
    },
    Manifest(Arc<DumpState>),
}

fn io_error(text: String) -> Box<RusticError> {
    // rustic treats `{...}` in guidance as placeholders.
    RusticError::new(
        ErrorKind::InputOutput,
        text.replace('{', "(").replace('}', ")"),
    )
}

impl ReadSourceOpen for Opener {
    type Reader = Box<dyn Read + Send>;

    fn open(self) -> RusticResult<Self::Reader> {
        match self {
            Opener::Static(b) => Ok(Box::new(Cursor::new(b))),
            Opener::Documents {
                state,
                index,
                slices,
            } => {
                if let Some(f) = state.failure() {
                    // Not worth reading more: the snapshot will not be written.
                    state.stream_ended();
                    return Err(io_error(format!("skipped {index}: {f}")));
                }
                Ok(Box::new(start_documents(state, index, slices)))
            }
            Opener::Staged {
                state,
                index,
                staged,
            } => match std::fs::File::open(&staged.path) {
                Ok(file) => Ok(Box::new(StagedReader {
                    file,
                    hasher: Sha256::new(),
                    bytes: 0,
                    index,
                    staged,
                    state,
                    finished: false,
                })),
                Err(e) => {
                    let reason = format!("staged documents of {index}: {e}");
                    state.fail(reason.clone());
                    state.stream_ended();
                    Err(io_error(reason))
                }
            },
            Opener::Manifest(state) => match state.final_manifest() {
                Ok(m) => {
                    let text = serde_json::to_vec_pretty(&m)
                        .map_err(|e| io_error(format!("manifest: {e}")))?;
                    // Every document stream ended: now a snapshot may be written.
                    state.gate.store(true, Ordering::SeqCst);
                    Ok(Box::new(Cursor::new(text)))
                }
                Err(f) => Err(io_error(format!("no manifest: {f}"))),
            },
        }
    }
}

impl ReadSource for DumpSource {
    type Open = Opener;
    type Iter = std::vec::IntoIter<RusticResult<ReadSourceEntry<Opener>>>;

    fn size(&self) -> RusticResult<Option<u64>> {
        Ok(None)
    }

    fn entries(&self) -> Self::Iter {
        let now = rustic_core::jiff::Timestamp::now();
        self.entries
            .iter()
            .map(|(path, open)| {
                let name = path.file_name().unwrap_or_default();
                let meta = Metadata {
                    mode: Some(0o644),
                    mtime: Some(now),
                    ..Default::default()
                };
                Ok(ReadSourceEntry {
                    path: path.clone(),
                    node: Node::new_node(name, NodeType::File, meta),
                    open: Some(open.clone()),
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
    }
}

/// Starts the readers of one index and returns the archiver's end of the channel.
fn start_documents(state: Arc<DumpState>, index: String, slices: u32) -> DocReader {
    let (tx, rx) = mpsc::channel::<Msg>(CHANNEL_PAGES * slices.max(1) as usize);
    let st = state.clone();
    let idx = index.clone();
    state.rt.spawn(async move {
        let data_tx = tx.clone();
        let progress = st.clone();
        let sink = move |page: Page| {
            let tx = data_tx.clone();
            let progress = progress.clone();
            async move {
                progress.stop_if_failed()?;
                progress.docs.fetch_add(page.docs, Ordering::Relaxed);
                progress
                    .bytes
                    .fetch_add(page.ndjson.len() as u64, Ordering::Relaxed);
                tx.send(Msg::Data(Bytes::from(page.ndjson), page.held))
                    .await
                    .map_err(|_| AgentError::Dump("the archiver stopped reading".into()))
            }
        };
        let r = read_index(&st.client, &idx, st.mode, slices, &st.paging, sink).await;
        let last = match r {
            Ok(n) => Msg::Done(n),
            Err(e) => Msg::Failed(format!("reading index {idx}: {e}")),
        };
        let _ = tx.send(last).await;
    });
    DocReader {
        rx,
        buf: Bytes::new(),
        held: None,
        hasher: Sha256::new(),
        bytes: 0,
        index,
        state,
        finished: false,
    }
}

/// The archiver's reader of one index's documents.
pub struct DocReader {
    rx: mpsc::Receiver<Msg>,
    buf: Bytes,
    /// The budget `buf`'s page holds, released with the next page.
    held: Option<Held>,
    hasher: Sha256,
    bytes: u64,
    index: String,
    state: Arc<DumpState>,
    finished: bool,
}

impl DocReader {
    fn failed(&mut self, reason: String) -> std::io::Error {
        self.finished = true;
        self.state.stream_failed(reason)
    }
}

impl Read for DocReader {
    /// Fills `out` whole unless the stream ends: rustic's chunker shrinks its read buffer to the
    /// length of any short read and never grows it back, so short reads at page boundaries
    /// would leave it reading a few bytes per call.
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < out.len() {
            if !self.buf.is_empty() {
                let n = (out.len() - filled).min(self.buf.len());
                let part = &mut out[filled..filled + n];
                part.copy_from_slice(&self.buf[..n]);
                self.hasher.update(&*part);
                self.bytes += n as u64;
                self.buf.advance(n);
                filled += n;
                continue;
            }
            // The last page is read: its memory and its budget are free before waiting.
            (self.buf, self.held) = (Bytes::new(), None);
            if self.finished {
                break;
            }
            match self.rx.blocking_recv() {
                Some(Msg::Data(b, held)) => (self.buf, self.held) = (b, held),
                Some(Msg::Done(docs)) => {
                    self.finished = true;
                    let sha = hex::encode(self.hasher.clone().finalize());
                    if let Ok(mut r) = self.state.results.lock() {
                        r.insert(self.index.clone(), (docs, self.bytes, sha));
                    }
                    tracing::info!(index = %self.index, docs, bytes = self.bytes, "index dumped");
                    self.state.stream_ended();
                }
                Some(Msg::Failed(reason)) => return Err(self.failed(reason)),
                None => {
                    let reason = format!("the readers of index {} stopped", self.index);
                    return Err(self.failed(reason));
                }
            }
        }
        Ok(filled)
    }
}

impl Drop for DocReader {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.state.stream_failed(format!(
                "the archiver stopped reading index {} before its end",
                self.index
            ));
        }
    }
}

/// The archiver's reader of one staged index: the file, checked against what was written,
/// and deleted once read to the end.
pub struct StagedReader {
    file: std::fs::File,
    hasher: Sha256,
    bytes: u64,
    index: String,
    staged: Staged,
    state: Arc<DumpState>,
    finished: bool,
}

impl StagedReader {
    fn failed(&mut self, reason: String) -> std::io::Error {
        self.finished = true;
        self.state.stream_failed(reason)
    }
}

impl Read for StagedReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.finished || out.is_empty() {
            return Ok(0);
        }
        let n = match self.file.read(out) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return Err(e),
            Err(e) => {
                return Err(self.failed(format!(
                    "reading the staged documents of {}: {e}",
                    self.index
                )));
            }
        };
        if n > 0 {
            self.hasher.update(&out[..n]);
            self.bytes += n as u64;
            return Ok(n);
        }
        let sha = hex::encode(self.hasher.clone().finalize());
        if sha != self.staged.sha256 || self.bytes != self.staged.bytes {
            return Err(self.failed(format!(
                "the staged documents of {} changed on disk ({} bytes written, {} read)",
                self.index, self.staged.bytes, self.bytes
            )));
        }
        self.finished = true;
        if let Err(e) = std::fs::remove_file(&self.staged.path) {
            tracing::warn!(path = %self.staged.path.display(), error = %e, "could not remove a staged file");
        }
        self.state.stream_ended();
        Ok(0)
    }
}

impl Drop for StagedReader {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.state.stream_failed(format!(
                "the archiver stopped reading index {} before its end",
                self.index
            ));
        }
    }
}

/// Index entry placeholder for the manifest, filled when its stream ends.
pub fn pending_entry(aliases: Vec<String>, hidden: bool) -> IndexEntry {
    IndexEntry {
        aliases,
        hidden,
        ..Default::default()
    }
}
