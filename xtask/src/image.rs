//! `cargo xtask image [--debug]`: cairn's test image, an OCI image from the workspace's binaries.
//!
//! Builds `cairn-agent`, `cairn-webhook`, `cairn-controller` and `cairn-certs` (release, or the
//! dev profile with `--debug`), assembles the Dockerfile's final stage from them with
//! [`cairn_tests::image::cairn_image`] (the binaries with the shared libraries `ldd` finds, the CA
//! bundle, `nobody`/`nogroup` as 65534, `USER 65534:65534`, no shell), writes it as an OCI
//! archive `<target>/<profile>/cairn-image.tar`, and imports it (`ctr -n k8s.io images import`)
//! into every test node's containerd that is running now. Test nodes import the image of the
//! binaries under test themselves when they need it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use cairn_tests::image::{CAIRN_IMAGE, cairn_image, cairn_image_archive};

use crate::crds::repo_root;

const PACKAGES: [&str; 4] = [
    "cairn-agent",
    "cairn-webhook",
    "cairn-controller",
    "cairn-certs",
];

pub fn run(args: &[String]) -> Result<()> {
    let debug = match args {
        [] => false,
        [flag] if flag == "--debug" => true,
        _ => bail!("usage: cargo xtask image [--debug]"),
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "--locked"]).current_dir(repo_root());
    if !debug {
        build.arg("--release");
    }
    for package in PACKAGES {
        build.args(["-p", package]);
    }
    println!("==> building {}", PACKAGES.join(", "));
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the binaries failed ({status})");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    let bin_dir = target.join(if debug { "debug" } else { "release" });
    let archive = cairn_image_archive(&bin_dir);
    let spec = cairn_image(&bin_dir);
    let digests = spec.write_archive(&archive)?;
    let size = std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0);
    println!(
        "==> {CAIRN_IMAGE}: {} ({:.1} MB), manifest {}, config (image id) {}",
        archive.display(),
        size as f64 / 1e6,
        digests.manifest,
        digests.config
    );
    for socket in running_node_sockets() {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "images", "import"])
            .arg(&archive)
            .output()
            .context("running ctr images import")?;
        if out.status.success() {
            println!("==> imported into {}", socket.display());
        } else {
            bail!(
                "ctr images import into {} failed: {}",
                socket.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    Ok(())
}

/// The containerd sockets of the test nodes running now (`<temp>/cairn-node-*/containerd`).
fn running_node_sockets() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("cairn-node-"))
        .map(|e| e.path().join("containerd/containerd.sock"))
        .filter(|socket| std::os::unix::net::UnixStream::connect(socket).is_ok())
        .collect()
}
