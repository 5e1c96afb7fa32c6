//! `cairn-demo` (run by `cargo xtask demo`): the whole system end to end on the local testbed.
//! Keeps everything running until Ctrl-C, or exits after the check with `--once`.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let once = std::env::args().any(|a| a == "--once");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let demo = match cairn_tests::demo::run().await {
        Ok(d) => d,
        Err(e) => {
            eprintln!("\ncairn demo failed: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("{}", demo.summary());
    if once {
        println!("--once: stopping everything.");
    } else {
        println!("Everything keeps running; press Ctrl-C to stop and clean up.");
        let _ = tokio::signal::ctrl_c().await;
        println!("stopping ...");
    }
    drop(demo);
    std::process::ExitCode::SUCCESS
}
