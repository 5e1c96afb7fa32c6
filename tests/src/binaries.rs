//! Where the testbed binaries are: the versions pinned in `testbed/versions.env` and the cache that
//! `cargo xtask testbed` builds them into (`${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`).

use anyhow::{Result, anyhow, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use crate::controlplane::repo_root;

/// The pinned versions, shared with `cargo xtask testbed`.
const VERSIONS_ENV: &str = include_str!("../../testbed/versions.env");

/// A value of `testbed/versions.env`, e.g. `K8S_VERSION` -> `1.34.12`.
pub fn pinned(key: &str) -> Option<&'static str> {
    VERSIONS_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// The pinned Kubernetes version without the `v`, e.g. `1.34.12`.
pub fn k8s_version() -> &'static str {
    pinned("K8S_VERSION").unwrap_or("unknown")
}

/// The pinned etcd version without the `v`, e.g. `3.6.16`.
pub fn etcd_version() -> &'static str {
    pinned("ETCD_VERSION").unwrap_or("unknown")
}

/// `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`.
pub fn testbed_cache() -> Result<PathBuf> {
    let base = match std::env::var_os("CAIRN_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => {
            let home = std::env::var_os("HOME")
                .ok_or_else(|| anyhow!("neither CAIRN_CACHE nor HOME is set"))?;
            PathBuf::from(home).join(".cache/cairn")
        }
    };
    Ok(base.join("testbed"))
}

/// The pause program's source (`testbed/pause`): its hash names the cache entry.
const PAUSE_SOURCE: [&str; 2] = [
    include_str!("../../testbed/pause/go.mod"),
    include_str!("../../testbed/pause/main.go"),
];

/// `<testbed cache>/pause-<hash of its source>`: where `cargo xtask testbed` builds the pause
/// program (a changed source builds again).
pub fn pause_dir() -> Result<PathBuf> {
    // FNV-1a: a cache key, not a security measure.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in PAUSE_SOURCE.iter().flat_map(|s| s.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    Ok(testbed_cache()?.join(format!("pause-{hash:016x}")))
}

/// The node's binaries: kubelet, kube-controller-manager and kube-scheduler built by
/// `cargo xtask testbed`, the pause program, and Debian's containerd, runc and CNI plugins.
#[derive(Clone, Debug)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub pause: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    /// The CNI plugins' directory (`bridge`, `host-local`, `loopback`).
    pub cni_bin_dir: PathBuf,
}

impl NodeBinaries {
    /// Finds the binaries, or explains how to get them.
    pub fn locate() -> Result<Self> {
        let k8s = cache_k8s_dir()?;
        let bins = Self {
            kubelet: k8s.join("kubelet"),
            kube_controller_manager: k8s.join("kube-controller-manager"),
            kube_scheduler: k8s.join("kube-scheduler"),
            pause: pause_dir()?.join("pause"),
            containerd: PathBuf::from("/usr/bin/containerd"),
            ctr: PathBuf::from("/usr/bin/ctr"),
            cni_bin_dir: PathBuf::from("/usr/lib/cni"),
        };
        let missing: Vec<String> = [
            &bins.kubelet,
            &bins.kube_controller_manager,
            &bins.kube_scheduler,
            &bins.pause,
            &bins.containerd,
            &bins.ctr,
            &bins.cni_bin_dir.join("bridge"),
            &PathBuf::from("/usr/sbin/runc"),
        ]
        .into_iter()
        .filter(|p| !p.is_file())
        .map(|p| p.display().to_string())
        .collect();
        if !missing.is_empty() {
            bail!(
                "the test node is not set up: missing {}.\nRun `cargo xtask testbed` first: it \
                 builds kubelet, kube-controller-manager, kube-scheduler and the pause program, and \
                 installs Debian's containerd, runc and containernetworking-plugins",
                missing.join(", ")
            );
        }
        Ok(bins)
    }
}

/// `<testbed cache>/k8s-<version>`.
fn cache_k8s_dir() -> Result<PathBuf> {
    Ok(testbed_cache()?.join(format!("k8s-{}", k8s_version())))
}

/// The control-plane binaries built by `cargo xtask testbed`.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    /// The kubectl matching the server (not whatever `kubectl` is on the PATH).
    pub kubectl: PathBuf,
}

impl Binaries {
    /// Finds the binaries, or explains how to build them.
    pub fn locate() -> Result<Self> {
        let (Some(k8s), Some(etcd)) = (pinned("K8S_VERSION"), pinned("ETCD_VERSION")) else {
            bail!("testbed/versions.env must set K8S_VERSION and ETCD_VERSION");
        };
        let cache = testbed_cache()?;
        let bins = Self {
            etcd: cache.join(format!("etcd-{etcd}/etcd")),
            kube_apiserver: cache.join(format!("k8s-{k8s}/kube-apiserver")),
            kubectl: cache.join(format!("k8s-{k8s}/kubectl")),
        };
        let missing: Vec<String> = [&bins.etcd, &bins.kube_apiserver, &bins.kubectl]
            .into_iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "the test control plane (Kubernetes v{k8s}, etcd v{etcd}) is not built: missing {}.\n\
                 Run `cargo xtask testbed` first: it builds etcd, kube-apiserver and kubectl from \
                 source into {} (the first build takes several minutes; set CAIRN_CACHE to use \
                 another cache)",
                missing.join(", "),
                cache.display()
            );
        }
        Ok(bins)
    }
}

/// The helm binary: `$CAIRN_HELM`, else the one `cargo xtask helm` builds into
/// `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/helm-<ver>/helm` (the version is the one
/// `testbed/helm/go.mod` requires).
pub fn helm_binary() -> &'static Path {
    static HELM: OnceLock<PathBuf> = OnceLock::new();
    HELM.get_or_init(|| {
        if let Some(path) = std::env::var_os("CAIRN_HELM").filter(|p| !p.is_empty()) {
            return PathBuf::from(path);
        }
        let gomod = repo_root().join("testbed/helm/go.mod");
        let text = std::fs::read_to_string(&gomod)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", gomod.display()));
        let version = text
            .lines()
            .find_map(|line| {
                let line = line.trim();
                let line = line.strip_prefix("require ").unwrap_or(line);
                line.strip_prefix("helm.sh/helm/v3 ")
                    .and_then(|rest| rest.split_whitespace().next())
            })
            .unwrap_or_else(|| panic!("{} requires no helm.sh/helm/v3", gomod.display()));
        let cache = testbed_cache().unwrap_or_else(|e| panic!("no testbed cache: {e:#}"));
        let path = cache.join(format!("helm-{}/helm", version.trim_start_matches('v')));
        assert!(
            path.is_file(),
            "no helm at {}: run `cargo xtask helm` (builds helm {version} once, 2-3 minutes), or set \
             CAIRN_HELM",
            path.display()
        );
        path
    })
}

/// Runs helm with a private, empty configuration (no repositories, no plugins).
pub fn helm(args: &[&str]) -> Output {
    let home = tempfile::tempdir().expect("a temp dir for helm");
    Command::new(helm_binary())
        .args(args)
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env_remove("KUBECONFIG")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", helm_binary().display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_pinned() {
        assert!(k8s_version().starts_with("1."), "{}", k8s_version());
        assert!(etcd_version().starts_with("3."), "{}", etcd_version());
        assert_eq!(pinned("NO_SUCH_KEY"), None);
    }
}
