//! The test harness: starts real components (etcd, kube-apiserver, ...) for end-to-end tests.
//!
//! - [`binaries`]: the pinned versions (`testbed/versions.env`) and the binaries that
//!   `cargo xtask testbed` builds into `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`;
//! - [`controlplane`]: a real control plane (etcd + kube-apiserver) with a ready `kube::Client`,
//!   a kubeconfig, the matching `kubectl`, per-test namespaces and CRD installation;
//! - [`pki`]: a throwaway CA issuing serving and client certificates;
//! - [`process`]: child processes that die with the test.

pub mod binaries;
pub mod controlplane;
pub mod pki;
pub mod process;

pub use controlplane::{ControlPlane, Options, crds_dir, repo_root};
