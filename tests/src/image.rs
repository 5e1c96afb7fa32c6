//! OCI images from host binaries, for the test node's containerd (nothing can be pulled there).
//!
//! An [`ImageSpec`] lists programs (copied to `/usr/local/bin`, each with the shared libraries
//! `ldd` finds, at the paths the dynamic loader looks them up), files and empty directories;
//! [`ImageSpec::write_archive`] writes an OCI image layout as a tar archive (one uncompressed
//! layer, owner root, fixed mtimes: the same input gives the same digest) that
//! `ctr -n k8s.io images import` takes.
//!
//! Three images use it: the node's pause image ([`pause_image`]), cairn's test image
//! ([`cairn_image`], `cargo xtask image`), which mirrors the Dockerfile's final stage: the four
//! binaries, the CA bundle, a passwd/group entry for 65534, `USER 65534:65534`, no shell; and
//! the fake agent's ([`fake_agent_image`]), for tests that need exact agent results.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The pause image's reference (containerd's `sandbox_image`).
pub const PAUSE_IMAGE: &str = "cairn.test/pause:1";

/// The test image's reference (`--agent-image` of the controller and webhook on the node).
pub const CAIRN_IMAGE: &str = "cairn.test/cairn:dev";

/// The fake agent's image reference (see [`fake_agent_image`]).
pub const FAKE_AGENT_IMAGE: &str = "cairn.test/fake-agent:dev";

/// The user (and group) cairn's image runs as, as the Dockerfile's `USER 65534:65534`.
pub const NOBODY: u32 = 65534;

/// Directories runc needs as mount points in the Pod sandbox's (pause) image, whose snapshot
/// containerd mounts read-only (runc cannot create them then; an application container's snapshot
/// is writable until runc remounts it, so cairn's image would not need them), `/etc` for the
/// passwd entry, `/tmp` for programs that expect one.
const BASE_DIRS: [&str; 5] = ["dev", "proc", "sys", "etc", "tmp"];

/// What goes into an image.
#[derive(Clone, Debug)]
pub struct ImageSpec {
    /// `name:tag`, e.g. [`CAIRN_IMAGE`].
    pub reference: String,
    /// Host programs, installed as `/usr/local/bin/<file name>` with their shared libraries.
    pub programs: Vec<PathBuf>,
    /// Host files copied to the same path in the image.
    pub host_files: Vec<PathBuf>,
    /// Files written with the given contents: (path in the image, contents).
    pub files: Vec<(String, String)>,
    /// `Entrypoint` of the image config.
    pub entrypoint: Vec<String>,
    /// `User` of the image config (`uid:gid`), none for root.
    pub user: Option<String>,
}

/// The digests of an image written by [`ImageSpec::write_archive`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageDigests {
    /// `sha256:...` of the manifest (what a Pod's `imageID` names).
    pub manifest: String,
    /// `sha256:...` of the config (containerd's image id).
    pub config: String,
}

impl ImageSpec {
    /// Writes the image as an OCI layout tar archive to `archive`.
    pub fn write_archive(&self, archive: &Path) -> Result<ImageDigests> {
        let work = tempfile::Builder::new()
            .prefix("cairn-image-")
            .tempdir()
            .context("creating the image's work dir")?;
        let rootfs = work.path().join("rootfs");
        self.fill_rootfs(&rootfs)?;
        let layout = work.path().join("layout");
        let blobs = layout.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).with_context(|| format!("creating {}", blobs.display()))?;

        let layer_tar = work.path().join("layer.tar");
        tar(&rootfs, &layer_tar, &["."])?;
        let layer = std::fs::read(&layer_tar).context("reading the layer")?;
        let layer_digest = put_blob(&blobs, &layer)?;

        let (_, tag) = self
            .reference
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("image reference {} has no tag", self.reference))?;
        let mut config = json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": self.entrypoint, "Env": ["PATH=/usr/local/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        });
        if let Some(user) = &self.user {
            config["config"]["User"] = json!(user);
        }
        let config = serde_json::to_vec(&config).context("serializing the config")?;
        let config_digest = put_blob(&blobs, &config)?;
        let manifest = serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": layer.len()}],
        }))
        .context("serializing the manifest")?;
        let manifest_digest = put_blob(&blobs, &manifest)?;
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest.len(),
                "platform": {"architecture": "amd64", "os": "linux"},
                "annotations": {"io.containerd.image.name": self.reference,
                                "org.opencontainers.image.ref.name": tag},
            }],
        });
        write(&layout.join("index.json"), &serde_json::to_vec(&index)?)?;
        write(
            &layout.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        if let Some(parent) = archive.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        tar(&layout, archive, &["oci-layout", "index.json", "blobs"])?;
        Ok(ImageDigests {
            manifest: manifest_digest,
            config: config_digest,
        })
    }

    /// The image's root file system, in `rootfs`.
    fn fill_rootfs(&self, rootfs: &Path) -> Result<()> {
        for dir in BASE_DIRS {
            std::fs::create_dir_all(rootfs.join(dir))
                .with_context(|| format!("creating {dir} in the image"))?;
        }
        let bin = rootfs.join("usr/local/bin");
        std::fs::create_dir_all(&bin).context("creating /usr/local/bin in the image")?;
        let mut libraries = Vec::new();
        for program in &self.programs {
            let file_name = program
                .file_name()
                .ok_or_else(|| anyhow!("{} names no file", program.display()))?;
            copy(program, &bin.join(file_name))?;
            for lib in shared_libraries(program)? {
                if !libraries.contains(&lib) {
                    libraries.push(lib);
                }
            }
        }
        for file in libraries.iter().chain(&self.host_files) {
            copy(file, &inside(rootfs, &file.display().to_string()))?;
        }
        for (path, contents) in &self.files {
            write(&inside(rootfs, path), contents.as_bytes())?;
        }
        // The temp dir gets mode 700; an image's root is 755.
        set_mode(rootfs, 0o755)?;
        set_mode(&rootfs.join("tmp"), 0o1777)
    }
}

/// The shared libraries `ldd` says `program` loads (with the dynamic loader); none for a static
/// program.
pub fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .with_context(|| format!("running ldd {}", program.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        // ldd fails on static programs ("not a dynamic executable").
        return Ok(Vec::new());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux-x86-64.so.2 (0x...)`;
        // `linux-vdso.so.1 (0x...)` is the kernel's.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line
                .split_whitespace()
                .next()
                .filter(|p| p.starts_with('/')),
        };
        match path {
            Some("not") => bail!("{}: a shared library is missing: {line}", program.display()),
            Some(p) if p.starts_with('/') => libs.push(PathBuf::from(p)),
            _ => {}
        }
    }
    Ok(libs)
}

/// The pause image from the static `pause` program of the testbed.
pub fn pause_image(pause: &Path) -> ImageSpec {
    ImageSpec {
        reference: PAUSE_IMAGE.to_string(),
        programs: vec![pause.to_path_buf()],
        host_files: Vec::new(),
        files: Vec::new(),
        entrypoint: vec!["/usr/local/bin/pause".to_string()],
        user: None,
    }
}

/// cairn's image from the binaries in `bin_dir` (the Dockerfile's final stage): `cairn-agent`,
/// `cairn-webhook`, `cairn-controller` and `cairn-certs` with their libraries, the host's CA
/// bundle, `nobody`/`nogroup` as 65534, `USER 65534:65534`, entrypoint `cairn-controller`.
pub fn cairn_image(bin_dir: &Path) -> ImageSpec {
    let programs = [
        "cairn-agent",
        "cairn-webhook",
        "cairn-controller",
        "cairn-certs",
    ]
    .iter()
    .map(|name| bin_dir.join(name))
    .collect();
    ImageSpec {
        reference: CAIRN_IMAGE.to_string(),
        programs,
        host_files: vec![PathBuf::from("/etc/ssl/certs/ca-certificates.crt")],
        files: nobody_files(),
        entrypoint: vec!["cairn-controller".to_string()],
        user: Some(format!("{NOBODY}:{NOBODY}")),
    }
}

/// The image of `cairn-fake-agent` (in `bin_dir`), for the tests that feed the controller exact
/// agent results: that program alone, as 65534, no shell.
pub fn fake_agent_image(bin_dir: &Path) -> ImageSpec {
    ImageSpec {
        reference: FAKE_AGENT_IMAGE.to_string(),
        programs: vec![bin_dir.join("cairn-fake-agent")],
        host_files: Vec::new(),
        files: nobody_files(),
        entrypoint: vec!["cairn-fake-agent".to_string()],
        user: Some(format!("{NOBODY}:{NOBODY}")),
    }
}

/// `/etc/passwd` and `/etc/group` with `nobody`/`nogroup` as 65534.
fn nobody_files() -> Vec<(String, String)> {
    vec![
        (
            "/etc/passwd".to_string(),
            format!("nobody:x:{NOBODY}:{NOBODY}:nobody:/nonexistent:/usr/sbin/nologin\n"),
        ),
        ("/etc/group".to_string(), format!("nogroup:x:{NOBODY}:\n")),
    ]
}

/// Where the test image archive of the binaries in `bin_dir` goes: `<bin_dir>/cairn-image.tar`.
pub fn cairn_image_archive(bin_dir: &Path) -> PathBuf {
    bin_dir.join("cairn-image.tar")
}

/// `path` (absolute, in the image) under `rootfs`.
fn inside(rootfs: &Path, path: &str) -> PathBuf {
    rootfs.join(path.trim_start_matches('/'))
}

/// Stores `data` as a blob named by its digest; returns `sha256:<hex>`.
fn put_blob(blobs: &Path, data: &[u8]) -> Result<String> {
    let hex: String = Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write(&blobs.join(&hex), data)?;
    Ok(format!("sha256:{hex}"))
}

fn write(path: &Path, data: &[u8]) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))
}

/// Copies the contents of `from` (following links) to `to`, keeping the mode.
fn copy(from: &Path, to: &Path) -> Result<()> {
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::copy(from, to)
        .map(|_| ())
        .with_context(|| format!("copying {} into the image", from.display()))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("setting the mode of {}", path.display()))
}

/// `tar` of `entries` in `dir` into `archive`, reproducibly: sorted, owner root, mtime 0.
fn tar(dir: &Path, archive: &Path, entries: &[&str]) -> Result<()> {
    let out = Command::new("tar")
        .args([
            "--create",
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
            "--format=posix",
            "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime",
            "--file",
        ])
        .arg(archive)
        .arg("-C")
        .arg(dir)
        .args(entries)
        .output()
        .context("running tar")?;
    if !out.status.success() {
        bail!(
            "tar of {} failed: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
