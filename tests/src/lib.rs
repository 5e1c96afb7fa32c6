//! The test harness: starts real components (etcd, kube-apiserver, ...) for end-to-end tests.
//!
//! - [`binaries`]: the pinned versions (`testbed/versions.env`) and the binaries that
//!   `cargo xtask testbed` builds into `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`;
//! - [`controlplane`]: a real control plane (etcd + kube-apiserver) with a ready `kube::Client`,
//!   a kubeconfig, the matching `kubectl`, per-test namespaces and CRD installation;
//! - [`node`]: a real node (containerd, kubelet, kube-controller-manager, kube-scheduler) for a
//!   control plane, [`ControlPlane::node`], and local PersistentVolumes;
//! - [`image`]: OCI images from host binaries (the node's pause image, cairn's test image, the
//!   fake agent's);
//! - [`forward`]: forwarders from the node's bridge to loopback servers;
//! - [`objects`] and [`system`]: cairn installed for a test, the objects tests apply, the states
//!   they wait for;
//! - [`slots`]: minute schedule slots and the sessions made for them;
//! - [`pki`]: a throwaway CA issuing serving and client certificates;
//! - [`process`]: child processes that die with the test;
//! - [`faultproxy`]: an HTTP proxy that injects 429s, 503s, resets and delays, and counts them.
//!
//! Build the binaries once with `cargo xtask testbed`, then in a test:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let cp = cairn_tests::ControlPlane::shared(); // started once per test binary
//! cp.apply_crds(cairn_tests::crds_dir()).await?; // manifests/crds, waits for Established
//! let ns = cp.new_namespace().await?; // a namespace of this test's own
//! let client = cp.client(); // admin kube::Client
//! let out = cp.kubectl(["get", "bc", "-n", &ns]); // the pinned kubectl
//! assert!(out.status.success());
//! # let _ = client; Ok(()) }
//! ```

pub mod binaries;
pub mod controller;
pub mod controlplane;
pub mod demo;
pub mod faultproxy;
pub mod forward;
pub mod http;
pub mod image;
pub mod node;
pub mod objects;
pub mod opensearch;
pub mod pki;
pub mod process;
pub mod s3;
pub mod slots;
pub mod system;
pub mod webhook;

pub use controlplane::{ControlPlane, Options, appbinding_crd_dir, crds_dir, repo_root};

/// Installs ring as the process's rustls crypto provider (once). A workspace-wide build unifies
/// rustls features (the agent's storage client brings aws-lc-rs), and with two providers
/// compiled in, rustls cannot pick one by itself: every entry point of the harness calls this.
pub fn init_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Polls `f` every 200 ms until it gives `Some`, panicking after `timeout` with `what` (for
/// tests: a condition with a deadline, never a fixed sleep).
pub async fn wait_for<T, F, Fut>(timeout: std::time::Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
