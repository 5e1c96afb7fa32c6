//! `kubectl-cairn`, the kubectl plugin of cairn (`kubectl cairn ...`): an instant backup
//! followed live, a restore in one line, snapshots, a configuration's whole story, pause and
//! resume, removing dead locks, a session's logs, Stash migration and shell completion. It talks to the API server
//! with the user's own kubeconfig and rights; the rules it applies are cairn-api's.
//!
//! Exit codes, as kubectl's: 0 success, 1 failure (a failed session too), 2 usage; 130 when
//! Ctrl-C detached from a session that goes on.

#![forbid(unsafe_code)]

mod backup;
mod cli;
mod client;
mod create;
mod follow;
mod krew;
mod logs;
mod output;
mod pause;
mod restore;
mod snapshots;
mod status;
mod unlock;

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{CommandFactory as _, Parser as _};

use crate::cli::{Cli, Command};
use crate::client::Cluster;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are no usage errors.
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let g = &cli.global;
    match cli.command {
        Command::Completion { shell } => {
            let mut cmd = Cli::command();
            clap_complete::generate(shell, &mut cmd, "kubectl-cairn", &mut std::io::stdout());
            return Ok(ExitCode::SUCCESS);
        }
        Command::Migrate { files } => return migrate(&files),
        _ => {}
    }
    let cluster = Cluster::connect(g).await?;
    let done = Ok(ExitCode::SUCCESS);
    match cli.command {
        Command::Snapshots { repository, from } => {
            snapshots::run(&cluster, repository, from, g.output).await?;
            done
        }
        Command::Backup {
            configuration,
            wait,
        } => backup::run(&cluster, &configuration, wait, g.timeout).await,
        Command::Restore(args) => restore::run(&cluster, &args, g.output, g.timeout).await,
        Command::Status { configuration } => {
            status::run(&cluster, configuration, g.output).await?;
            done
        }
        Command::Pause { configuration } => {
            pause::run(&cluster, &configuration, true).await?;
            done
        }
        Command::Resume { configuration } => {
            pause::run(&cluster, &configuration, false).await?;
            done
        }
        Command::Unlock { repository } => {
            unlock::run(&cluster, &repository, g.output, g.timeout).await
        }
        Command::Logs { session } => {
            logs::run(&cluster, &session).await?;
            done
        }
        Command::Migrate { .. } | Command::Completion { .. } => done,
    }
}

/// `migrate -f FILE...`: cairn-migrate's code; the manifests on stdout, its report on stderr.
fn migrate(files: &[std::path::PathBuf]) -> Result<ExitCode> {
    let mut input = String::new();
    for file in files {
        if file.as_os_str() == "-" {
            std::io::stdin()
                .read_to_string(&mut input)
                .context("reading standard input")?;
        } else {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("-f {}", file.display()))?;
            input.push_str(&text);
        }
        input.push_str("\n---\n");
    }
    let migration = cairn_migrate::migrate(&input)?;
    print!("{}", migration.yaml);
    for line in migration.report() {
        eprintln!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}
