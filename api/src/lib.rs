//! cairn's knowledge about its resources, as pure functions with no I/O:
//! the CRD types, validation, defaulting, Task resolution, naming and schedule arithmetic.
//! The webhook and the controller are thin shells around this crate.

#![forbid(unsafe_code)]

pub mod agent_flags;
pub mod appbinding;
pub mod backup_configuration;
pub mod backup_session;
pub mod builtins;
pub mod common;
pub mod crds;
pub mod defaults;
pub mod dereference;
pub mod manifest;
pub mod naming;
pub mod pod_security;
pub mod repository;
pub mod resolve;
pub mod restore_session;
pub mod result;
pub mod schedule;
mod schema;
pub mod task;
pub mod validation;
pub mod vars;

pub use appbinding::AppBinding;
pub use backup_configuration::BackupConfiguration;
pub use backup_session::BackupSession;
pub use repository::Repository;
pub use restore_session::RestoreSession;
pub use task::{Function, Task};
