//! cairn's knowledge about its resources, as pure functions with no I/O; the webhook and the
//! controller are thin shells around this crate. The shape, in the order an object goes through:
//! - the CRD types ([`common`], [`repository`], [`backup_configuration`], ...), whose defaulting
//!   rules live as methods on them (e.g. [`common::ObjectReference::namespace_or`],
//!   [`common::TaskRef::name_or_default`]);
//! - [`defaults`] fills in what a user left out; [`validation`] gives every error and warning;
//! - [`dereference`] looks up, once, the objects a configuration or restore names
//!   ([`dereference::Dereferenced`]); [`resolve`] turns a session plus those into its Job;
//! - [`naming`], [`schedule`], [`vars`], [`pod_security`] are the arithmetic they share.

#![forbid(unsafe_code)]

pub mod agent_flags;
pub mod appbinding;
pub mod backup_blueprint;
pub mod backup_configuration;
pub mod backup_session;
pub mod builtins;
pub mod common;
pub mod crds;
pub mod defaults;
pub mod dereference;
pub mod duration;
pub mod hook_template;
pub mod hooks;
pub mod inventory;
pub mod location;
pub mod manifest;
pub mod naming;
pub mod native;
pub mod pod_security;
pub mod progress;
pub mod read_subset;
pub mod repository;
pub mod resolve;
pub mod restore_session;
pub mod result;
pub mod schedule;
mod schema;
pub mod snapshot;
pub mod stash_args;
pub mod task;
pub mod task_params;
pub mod validation;
pub mod vars;

pub use appbinding::AppBinding;
pub use backup_blueprint::BackupBlueprint;
pub use backup_configuration::BackupConfiguration;
pub use backup_session::BackupSession;
pub use repository::Repository;
pub use restore_session::RestoreSession;
pub use snapshot::Snapshot;
pub use task::{Function, Task};
