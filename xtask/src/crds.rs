//! `cargo xtask crds [--check]`: write the CRD YAML generated from the `api` types into
//! `manifests/crds/` and `manifests/appbinding/`, and cairn's CRDs again into the chart's
//! `charts/cairn/crds/`, or (with `--check`) fail when the committed files are stale.

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
    let chart = repo_root().join("charts/cairn");
    let rendered = cairn_api::crds::render_all().context("rendering CRDs")?;
    // The chart holds a copy of cairn's own CRDs (not the AppBinding's, which KubeDB ships).
    let copies = rendered
        .iter()
        .filter(|(file, _)| file.starts_with("crds/"))
        .map(|(file, yaml)| (chart.join(file), yaml));
    let originals = rendered.iter().map(|(file, yaml)| (dir.join(file), yaml));
    for (path, yaml) in originals.chain(copies) {
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == *yaml {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
            println!("wrote {}", path.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "stale CRD files: {}; run `cargo xtask crds`",
            stale.join(", ")
        );
    }
    Ok(())
}
