//! The command line: kubectl's conventions (`-n`, `--context`, `--kubeconfig`, `-o`,
//! `--timeout`) and one subcommand per task of a day-2 admin.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Back up now and watch it move, restore in one line, see the whole story.
#[derive(Parser, Debug)]
#[command(name = "kubectl-cairn", bin_name = "kubectl cairn", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// kubectl's own flags, taken by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct Global {
    /// The namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long, global = true)]
    pub namespace: Option<String>,
    /// The kubeconfig context to use.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum)]
    pub output: Option<Format>,
    /// Longest a `--wait` waits, e.g. 30s, 10m, 1h (the session goes on after it).
    #[arg(long, global = true, value_parser = parse_timeout, default_value = "1h")]
    pub timeout: Duration,
}

/// `-o`: the objects as YAML or JSON, or the table with more columns.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
    Wide,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    cairn_api::duration::parse_std_duration(s)
        .map_err(|e| format!("{e}: write it like 30s, 10m or 1h"))
}

fn parse_existing(s: &str) -> Result<String, String> {
    s.parse::<cairn_api::task_params::Existing>()?;
    Ok(s.trim().to_string())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The snapshots of a Repository, or of the one a configuration writes to.
    Snapshots {
        /// The Repository.
        #[arg(required_unless_present = "from", conflicts_with = "from")]
        repository: Option<String>,
        /// The BackupConfiguration: its Repository's snapshots that it made.
        #[arg(long)]
        from: Option<String>,
    },
    /// Backs up now: creates a BackupSession of the configuration.
    Backup {
        /// The BackupConfiguration.
        configuration: String,
        /// Follow the backup until it ends: progress, then the snapshot or the reason.
        #[arg(long)]
        wait: bool,
    },
    /// Restores a snapshot: creates a RestoreSession.
    Restore(RestoreArgs),
    /// A configuration's whole story: Repository, AppBinding, last sessions, what runs now.
    Status {
        /// The BackupConfiguration (default: every one of the namespace).
        configuration: Option<String>,
    },
    /// Stops a configuration's schedule (spec.paused=true).
    Pause {
        /// The BackupConfiguration.
        configuration: String,
    },
    /// Starts a paused configuration's schedule again (spec.paused=false).
    Resume {
        /// The BackupConfiguration.
        configuration: String,
    },
    /// Removes the Repository's locks whose holders are gone (never a live one), through a
    /// Job of the controller's; prints what was removed and who holds the live ones.
    Unlock {
        /// The Repository.
        repository: String,
    },
    /// A session's agent log and its events.
    Logs {
        /// The BackupSession or RestoreSession.
        session: String,
    },
    /// Turns Stash manifests into cairn's (the changes it made go to stderr).
    Migrate {
        /// Files of Stash YAML documents (`-`: standard input).
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Shell completion for bash, zsh or fish.
    Completion { shell: clap_complete::Shell },
}

/// `kubectl cairn restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// Restore what this BackupConfiguration backed up (its Repository and AppBinding).
    #[arg(
        long,
        required_unless_present = "repository",
        conflicts_with = "repository"
    )]
    pub from: Option<String>,
    /// Restore from this Repository (with --to).
    #[arg(long, requires = "to")]
    pub repository: Option<String>,
    /// The snapshot: `latest` or its id (8 to 64 hex characters).
    #[arg(long, default_value = "latest")]
    pub snapshot: String,
    /// The AppBinding to restore into (default: the configuration's).
    #[arg(long)]
    pub to: Option<String>,
    /// Index patterns to restore (default: every index).
    #[arg(long, value_delimiter = ',')]
    pub include: Vec<String>,
    /// Index patterns to leave out.
    #[arg(long, value_delimiter = ',')]
    pub exclude: Vec<String>,
    /// Prefix added to each restored index's name.
    #[arg(long)]
    pub rename_prefix: Option<String>,
    /// Regular expression over index names, with --rename-replacement.
    #[arg(long, requires = "rename_replacement")]
    pub rename_pattern: Option<String>,
    /// Replacement of --rename-pattern's matches (`$1` for groups).
    #[arg(long, requires = "rename_pattern")]
    pub rename_replacement: Option<String>,
    /// What to do with an index that exists: fail, skip or overwrite.
    #[arg(long, value_parser = parse_existing)]
    pub existing: Option<String>,
    /// Show the RestoreSession and the server's verdict and warnings; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the restore until it ends.
    #[arg(long)]
    pub wait: bool,
}
