//! `kubectl cairn logs <session>`: the agent's log of a BackupSession's or RestoreSession's
//! pod (every container, hooks included) and the session's events.

use anyhow::{Result, bail};
use cairn_api::{BackupSession, RestoreSession};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, LogParams};

use crate::client::Cluster;
use crate::output::{self, Terminal};

/// Prints the pods' logs, then the events of `session`.
pub async fn run(cluster: &Cluster, session: &str) -> Result<()> {
    let backup = cluster.api::<BackupSession>().get_opt(session).await?;
    let restore = cluster.api::<RestoreSession>().get_opt(session).await?;
    let kind = match (backup, restore) {
        (Some(_), _) => "BackupSession",
        (None, Some(_)) => "RestoreSession",
        (None, None) => bail!(
            "no BackupSession or RestoreSession {session:?} in namespace {}",
            cluster.namespace
        ),
    };
    let term = Terminal::detect();
    let selector = format!("{}={session}", cairn_api::naming::LABEL_SESSION);
    let pods = cluster.api::<Pod>();
    let list = pods.list(&ListParams::default().labels(&selector)).await?;
    if list.items.is_empty() {
        println!("No pod of {kind} {session} (not started, or its Job is gone).");
    }
    for pod in &list.items {
        let name = pod.metadata.name.clone().unwrap_or_default();
        let containers = pod.spec.iter().flat_map(|s| &s.containers);
        for container in containers {
            println!("==> pod {name}, container {} <==", container.name);
            let params = LogParams {
                container: Some(container.name.clone()),
                ..LogParams::default()
            };
            match pods.logs(&name, &params).await {
                // Colours only where a terminal shows them.
                Ok(text) => text
                    .lines()
                    .for_each(|l| println!("{}", output::safe(l, term.tty))),
                Err(e) => println!("(no log: {e})"),
            }
        }
    }
    let events = cluster.api::<Event>();
    let fields = format!("involvedObject.name={session},involvedObject.kind={kind}");
    let mut list = events
        .list(&ListParams::default().fields(&fields))
        .await?
        .items;
    list.sort_by_key(when);
    println!("==> events of {kind} {session} <==");
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                output::age(when(e).as_ref()),
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
                output::plain(e.message.as_deref().unwrap_or_default()),
            ]
        })
        .collect();
    print!(
        "{}",
        output::table(&["AGE", "TYPE", "REASON", "MESSAGE"], &rows)
    );
    Ok(())
}

/// When an event last happened (an `events.k8s.io` event has only its `eventTime`).
fn when(e: &Event) -> Option<Time> {
    e.last_timestamp
        .clone()
        .or_else(|| e.event_time.as_ref().map(|t| Time(t.0)))
        .or_else(|| e.first_timestamp.clone())
}
