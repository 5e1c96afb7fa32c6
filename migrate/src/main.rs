//! `cairn-migrate [FILE...]`: reads Stash manifests (files, or stdin without any or with `-`),
//! writes cairn's to stdout, and every change it made and everything it could not carry to
//! stderr. Exits 1 when the input is not YAML; what cannot be carried is reported, not fatal.

#![forbid(unsafe_code)]

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "cairn-migrate", version, about = "Stash manifests to cairn's")]
struct Args {
    /// Files of YAML documents (`-` or none: standard input).
    files: Vec<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut input = String::new();
    if args.files.is_empty() || args.files.iter().any(|f| f.as_os_str() == "-") {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading standard input")?;
    }
    for file in args.files.iter().filter(|f| f.as_os_str() != "-") {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        input.push_str("\n---\n");
        input.push_str(&text);
    }
    let migration = cairn_migrate::migrate(&input)?;
    print!("{}", migration.yaml);
    for line in migration.report() {
        eprintln!("{line}");
    }
    Ok(())
}
