//! Developer commands: `cargo xtask <command>`. Each command lives in its own module.

mod bench;
mod crds;
mod demo;
mod helm;
mod image;
mod search_testbed;
mod test;
mod testbed;

fn usage() -> anyhow::Error {
    anyhow::anyhow!(
        "usage: cargo xtask <demo|test|crds|testbed|search-testbed|helm|bench|image> [args...]"
    )
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let cmd = args.next().ok_or_else(usage)?;
    let rest: Vec<String> = args.collect();
    match cmd.as_str() {
        "crds" => crds::run(&rest),
        "demo" => demo::run(&rest),
        "testbed" => testbed::run(&rest),
        "search-testbed" => search_testbed::run(&rest),
        "helm" => helm::run(&rest),
        "test" => test::run(&rest),
        "image" => image::run(&rest),
        "bench" => bench::run(&rest),
        _ => {
            let _ = rest;
            Err(usage())
        }
    }
}
