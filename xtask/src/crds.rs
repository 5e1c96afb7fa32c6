//! `cargo xtask crds [--check]`: write the CRD YAML generated from the `api` types into
//! `manifests/crds/` and `manifests/appbinding/`, or (with `--check`) fail when the committed files
//! are stale.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// The repository root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let check = args.iter().any(|a| a == "--check");
    let dir = repo_root().join("manifests");
    let mut stale = Vec::new();
    for (file, yaml) in cairn_api::crds::render_all().context("rendering CRDs")? {
        let path = dir.join(file);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            stale.push(file);
        } else {
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale CRD files in manifests/: {}; run `cargo xtask crds`",
            stale.join(", ")
        );
    }
    Ok(())
}
