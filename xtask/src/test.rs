//! `cargo xtask test`: the README's test command, and what CI runs. Formatting, lints, the
//! testbed (built once, then cached outside the repository), and every test of the workspace.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::crds::repo_root;

/// One step: a name for the progress line and the command that performs it.
fn step(name: &str, f: impl FnOnce() -> anyhow::Result<()>) -> anyhow::Result<()> {
    println!("==> {name}");
    let start = Instant::now();
    f().with_context(|| format!("step failed: {name}"))?;
    println!("==> {name}: ok ({:.1}s)", start.elapsed().as_secs_f64());
    Ok(())
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(repo_root())
        .status()
        .with_context(|| format!("running {cargo} {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` exited with {status}", args.join(" "));
    }
    Ok(())
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let total = Instant::now();
    step("cargo fmt --check", || {
        cargo(&["fmt", "--all", "--", "--check"])
    })?;
    step("CRD YAML up to date", || {
        crate::crds::run(&["--check".into()])
    })?;
    step("cargo clippy -D warnings", || {
        cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--locked",
            "--",
            "-D",
            "warnings",
        ])
    })?;
    step("testbed: control plane (built once, then cached)", || {
        crate::testbed::run(&[])
    })?;
    step(
        "testbed: OpenSearch, S3, restic (built once, then cached)",
        || crate::search_testbed::run(&[]),
    )?;
    step("testbed: helm (built once, then cached)", || {
        crate::helm::run(&[])
    })?;
    // End-to-end tests start the workspace's binaries as processes.
    step("cargo build --workspace --bins", || {
        cargo(&["build", "--workspace", "--bins", "--locked"])
    })?;
    let mut test_args = vec!["test", "--workspace", "--locked"];
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    test_args.extend(extra);
    step("cargo test --workspace", || cargo(&test_args))?;
    println!("all checks passed in {:.0}s", total.elapsed().as_secs_f64());
    Ok(())
}
