//! Where the testbed binaries are: the versions pinned in `testbed/versions.env` and the cache that
//! `cargo xtask testbed` builds them into (`${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`).

use anyhow::{Result, anyhow, bail};
use std::path::PathBuf;

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
