//! `kubectl cairn snapshots (<repo> | --from <config>)`: the Snapshot objects of a Repository,
//! newest first, with what each holds and which configuration made it.

use anyhow::Result;
use cairn_api::snapshot::{LABEL_CONFIGURATION, LABEL_REPOSITORY, LABEL_REPOSITORY_NAMESPACE};
use cairn_api::{BackupConfiguration, Snapshot};
use kube::api::ListParams;

use crate::cli::Format;
use crate::client::Cluster;
use crate::output;

/// Prints the snapshots of `repository`, or of `from`'s Repository made by `from`.
pub async fn run(
    cluster: &Cluster,
    repository: Option<String>,
    from: Option<String>,
    format: Option<Format>,
) -> Result<()> {
    let ns = cluster.namespace.clone();
    let mut selector = match (&repository, &from) {
        (Some(repo), _) => format!("{LABEL_REPOSITORY}={repo},{LABEL_REPOSITORY_NAMESPACE}={ns}"),
        (None, Some(config)) => {
            let cfg: BackupConfiguration = cluster.get(config).await?;
            let repo = &cfg.spec.repository;
            format!(
                "{LABEL_REPOSITORY}={},{LABEL_REPOSITORY_NAMESPACE}={}",
                repo.name,
                repo.namespace_or(&ns)
            )
        }
        (None, None) => anyhow::bail!("name a Repository or --from <configuration>"),
    };
    if let Some(config) = &from {
        selector.push_str(&format!(",{LABEL_CONFIGURATION}={config}"));
    }
    let list = cluster
        .api::<Snapshot>()
        .list(&ListParams::default().labels(&selector))
        .await?;
    let mut items = list.items;
    items.sort_by_key(|s| std::cmp::Reverse(s.spec.time.as_ref().map(output::utc)));
    match format {
        Some(f @ (Format::Yaml | Format::Json)) => print!("{}", output::objects(&items, f)?),
        Some(Format::Wide) => print!("{}", table(&items, true)),
        None if items.is_empty() => eprintln!("No snapshots found in namespace {ns}."),
        None => print!("{}", table(&items, false)),
    }
    Ok(())
}

fn table(items: &[Snapshot], wide: bool) -> String {
    let mut header = vec![
        "ID",
        "TIME",
        "AGE",
        "SIZE",
        "DOCUMENTS",
        "INDICES",
        "CONFIGURATION",
    ];
    if wide {
        header.extend(["SESSION", "HOST", "INTEGRITY", "SNAPSHOT-ID"]);
    }
    let rows: Vec<Vec<String>> = items.iter().map(|s| row(s, wide)).collect();
    output::table(&header, &rows)
}

fn row(s: &Snapshot, wide: bool) -> Vec<String> {
    let spec = &s.spec;
    let dash = || "-".to_string();
    let num = |n: Option<i64>| {
        n.map(|n| output::count(n.max(0) as u64))
            .unwrap_or_else(dash)
    };
    let mut row = vec![
        spec.short_id.clone(),
        spec.time
            .as_ref()
            .map(output::timestamp)
            .unwrap_or_else(dash),
        output::age(spec.time.as_ref()),
        spec.total_size.clone().unwrap_or_else(dash),
        num(spec.documents),
        num(spec.indices),
        spec.configuration.clone().unwrap_or_else(dash),
    ];
    if wide {
        let integrity = s.status.as_ref().and_then(|st| st.integrity);
        row.extend([
            spec.session.clone().unwrap_or_else(dash),
            spec.hostname.clone(),
            integrity.map(|i| i.to_string()).unwrap_or_else(dash),
            spec.snapshot_id.clone(),
        ]);
    }
    row
}
