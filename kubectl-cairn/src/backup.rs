//! `kubectl cairn backup <config> [--wait]`: an instant BackupSession of a configuration, its
//! name generated so that it never takes a schedule slot's; `--wait` follows it to its snapshot.

use std::process::ExitCode;

use anyhow::{Context as _, Result};
use cairn_api::backup_session::{BackupSessionSpec, BackupSessionStatus, Invoker};
use cairn_api::{BackupConfiguration, BackupSession};
use kube::Resource as _;
use kube::api::ObjectMeta;

use crate::client::Cluster;
use crate::follow::{Followed, Outcome};

/// Creates the session and, with `wait`, follows it; 0 only when it succeeded.
pub async fn run(
    cluster: &Cluster,
    config: &str,
    wait: bool,
    timeout: std::time::Duration,
) -> Result<ExitCode> {
    // A clear error for a configuration that is not there, before any session is made.
    let _: BackupConfiguration = cluster.get(config).await?;
    let session = BackupSession {
        metadata: ObjectMeta {
            generate_name: Some(cairn_api::naming::generate_name(&format!("{config}-now"))),
            namespace: Some(cluster.namespace.clone()),
            ..ObjectMeta::default()
        },
        spec: BackupSessionSpec {
            invoker: Invoker {
                api_group: Some(BackupConfiguration::group(&()).into_owned()),
                kind: BackupConfiguration::kind(&()).into_owned(),
                name: config.to_string(),
            },
            ..BackupSessionSpec::default()
        },
        status: None,
    };
    let (created, warnings) = crate::create::create(cluster, &session, false).await?;
    for w in &warnings {
        eprintln!("Warning: {w}");
    }
    let name = created
        .metadata
        .name
        .context("the server named no session")?;
    println!("backupsession.cairn.dev/{name} created");
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    crate::follow::wait::<BackupSession>(cluster, &name, timeout).await
}

impl Followed for BackupSession {
    fn outcome(self) -> Option<Outcome> {
        self.status.and_then(outcome)
    }
}

/// The outcome of a final session: its snapshot, or its reason.
fn outcome(status: BackupSessionStatus) -> Option<Outcome> {
    let summary = match &status.snapshot {
        Some(snap) => format!(
            "snapshot {} ({} documents, {} indices, {}) in {}",
            snap.id,
            crate::output::count(snap.documents.unwrap_or(0).max(0) as u64),
            snap.indices.unwrap_or(0),
            cairn_api::naming::human_bytes(snap.total_bytes.unwrap_or(0).max(0) as u64),
            status.session_duration.as_deref().unwrap_or("?")
        ),
        None => "no snapshot in the session's status".into(),
    };
    Outcome::of(status.phase, &status.conditions, summary)
}
