//! cairn-agent: the program inside cairn's backup and restore Jobs.
//!
//! It dumps an Elasticsearch/OpenSearch cluster (templates, index settings, mappings, aliases and
//! every document) straight into one snapshot of a restic-format repository (through
//! `rustic_core`), and loads such a snapshot back. See `shared/spec/runtime.md`, "The agent's data
//! path", and `manifests/catalog/functions.yaml` for the command line the Jobs pass.
//!
//! Layers, each using only those below it (`tests/layers.rs` fails on a cycle):
//! - commands: `cli`, `backup`, `restore` (with `cleanup`, what a failed one leaves), over
//!   `stream` (the snapshot's files for the archiver), `contents` (what a restore reads, over
//!   `layout`, what cairn's snapshot holds, and `stash_dump`, what Stash's addon made),
//!   `translate` (what differs between Elasticsearch and OpenSearch) and `preflight` (the
//!   target's own checks before a restore writes);
//! - repository: `check` (integrity, and the snapshots damage reaches) over `repo` (open,
//!   retention, totals) over `lock` (restic locks) over
//!   `files` (raw repository files) over `location` (where, options, credentials);
//! - server: `search` (reading indices) over `skim` (search answers) and `client` (HTTP, with
//!   `retry`'s policy), and
//!   `bulk` (the `_bulk` wire format);
//! - native snapshots (driver Native): `native_backup`, `native_restore` over
//!   `native_retention` over `native_repo` (the server-side repository) over `client`;
//! - shared: `budget`, `select`, `settings`, `identity`, `output`, `terminate`, `tls`, `error`.

pub mod backup;
pub mod budget;
pub mod bulk;
pub mod check;
pub mod cleanup;
pub mod cli;
pub mod client;
pub mod cloud;
pub mod contents;
pub mod error;
pub mod files;
pub mod hooks;
pub mod identity;
pub mod inventory;
pub mod layout;
pub mod location;
pub mod lock;
pub mod native_backup;
pub mod native_repo;
pub mod native_restore;
pub mod native_retention;
pub mod output;
pub mod preflight;
pub mod repo;
pub mod restore;
pub mod retry;
pub mod search;
pub mod select;
pub mod settings;
pub mod skim;
pub mod stash_dump;
pub mod stream;
pub mod terminate;
pub mod tls;
pub mod translate;

pub use error::{AgentError, Failed};
