//! `cargo xtask demo [--once]`: sets up what the demo needs (the testbeds, the workspace's
//! binaries), then runs `cairn-demo`: the whole system end to end on the local testbed.

use std::process::Command;

use anyhow::{Context, bail};

use crate::crds::repo_root;

pub fn run(args: &[String]) -> anyhow::Result<()> {
    println!("==> setting up the testbed (built once, then cached)");
    crate::testbed::run(&[])?;
    crate::search_testbed::run(&[])?;
    println!("==> building cairn (webhook, controller, agent, demo)");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args(["build", "--workspace", "--bins"])
        .current_dir(repo_root())
        .status()
        .context("running cargo build")?;
    if !status.success() {
        bail!("building the workspace failed ({status})");
    }
    println!("==> running the demo");
    let status = Command::new(&cargo)
        .args([
            "run",
            "--quiet",
            "-p",
            "cairn-tests",
            "--bin",
            "cairn-demo",
            "--",
        ])
        .args(args)
        .current_dir(repo_root())
        .status()
        .context("running cairn-demo")?;
    if !status.success() {
        bail!("the demo failed ({status}); the step and the components' logs are printed above");
    }
    Ok(())
}
