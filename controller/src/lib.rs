//! cairn-controller: schedules BackupSessions in-process, runs each session as a Job, reads the
//! agent's result from the Pod, and writes status, events and metrics. Pure decisions live in
//! [`scheduling`] and [`observe`]; the reconcilers are the I/O shell around them. Both kinds of
//! session live one life, [`session`]; each kind adds only what is its own. Status is written
//! from the `api` crate's typed structs by server-side apply, one field manager per writer
//! ([`status`]).

#![forbid(unsafe_code)]

pub mod backup_configuration;
pub mod backup_session;
pub mod blueprint;
pub mod conditions;
pub mod context;
pub mod error;
pub mod exec_hook;
pub mod forget;
pub mod health;
pub mod integrity;
pub mod inventory;
pub mod job;
pub mod leader;
pub mod metrics;
pub mod observe;
pub mod post_hook;
pub mod pre_hook;
pub mod process;
pub mod references;
pub mod repository;
pub mod repository_job;
pub mod restore_session;
pub mod scheduling;
pub mod session;
pub mod snapshots;
pub mod status;
pub mod stores;
pub mod unlock;
