//! cairn-webhook: the admission server. Validation, defaulting and Job resolution are the pure
//! functions of `cairn-api`; this crate decodes AdmissionReviews, looks objects up in watch
//! caches (reading their misses through to the API server), serves TLS with a reloadable
//! certificate within bounds (connections, requests in flight, timeouts), and reports metrics.

#![forbid(unsafe_code)]

pub mod access;
pub mod admission;
pub mod bounds;
pub mod cache;
pub mod metrics;
pub mod read_through;
pub mod server;
pub mod tls;
