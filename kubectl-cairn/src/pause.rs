//! `kubectl cairn pause|resume <config>`: sets the configuration's `spec.paused` (a merge
//! patch, as `kubectl patch` would, with the user's rights).

use anyhow::Result;
use cairn_api::BackupConfiguration;
use kube::api::{Patch, PatchParams};

use crate::client::Cluster;

/// Sets `spec.paused` of `config` to `paused`.
pub async fn run(cluster: &Cluster, config: &str, paused: bool) -> Result<()> {
    let _: BackupConfiguration = cluster.get(config).await?;
    let patch = serde_json::json!({"spec": {"paused": paused}});
    cluster
        .api::<BackupConfiguration>()
        .patch(config, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let what = if paused {
        "paused: no new scheduled sessions (a running one goes on)"
    } else {
        "resumed: sessions at the next slot"
    };
    println!("backupconfiguration.cairn.dev/{config} {what}");
    Ok(())
}
