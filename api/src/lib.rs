//! cairn's knowledge about its resources, as pure functions with no I/O:
//! the CRD types, validation, defaulting, Task resolution, naming and schedule arithmetic.
//! The webhook and the controller are thin shells around this crate.

pub mod naming;
pub mod schedule;
pub mod vars;
