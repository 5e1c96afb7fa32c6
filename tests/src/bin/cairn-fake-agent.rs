//! `cairn-fake-agent`: stands in for `cairn-agent` in the tests that feed the controller an
//! exact agent result (figures, a failure of a given phase) or a Job that runs until it is
//! stopped. It runs on the real node as a restricted Pod from the fake-agent image
//! (`cairn_tests::image::fake_agent_image`), which holds nothing else: no shell.
//!
//! `cairn-fake-agent [--say TEXT] [--allocate MIB] [--result JSON] [--exit CODE]
//! [--sleep SECONDS]`: prints TEXT (what an `exec` hook run in its pod shows), fills MIB MiB of
//! memory (so a container's memory limit kills it, as the kernel kills a real agent), writes
//! JSON to the termination log (`$CAIRN_TERMINATION_LOG`, else `/dev/termination-log`), sleeps,
//! exits.

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
    };
    if let Some(text) = value("--say") {
        println!("{text}");
    }
    if let Some(mib) = value("--allocate").and_then(|m| m.parse::<usize>().ok()) {
        // Written, not just reserved: only touched pages count against the cgroup.
        let filled = vec![1u8; mib << 20];
        std::hint::black_box(&filled);
    }
    if let Some(result) = value("--result") {
        let path = std::env::var("CAIRN_TERMINATION_LOG")
            .unwrap_or_else(|_| cairn_api::result::TERMINATION_LOG.to_string());
        if let Err(e) = std::fs::write(&path, result) {
            eprintln!("cairn-fake-agent: writing {path}: {e}");
            return ExitCode::from(3);
        }
    }
    if let Some(secs) = value("--sleep").and_then(|s| s.parse().ok()) {
        std::thread::sleep(Duration::from_secs(secs));
    }
    let code = value("--exit").and_then(|c| c.parse().ok()).unwrap_or(0);
    ExitCode::from(code)
}
