//! Developer commands: `cargo xtask <command>`.

fn main() -> anyhow::Result<()> {
    let cmd = std::env::args().nth(1).unwrap_or_default();
    anyhow::bail!("unknown command {cmd:?}")
}
