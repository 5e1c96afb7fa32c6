//! The Snapshot objects of a Repository, kept in step with the agent's inventories
//! ([`cairn_api::inventory`]): the controller reads the lines from the agent's log through
//! `pods/log` (it never opens a repository), applies one object per snapshot and deletes the
//! objects whose snapshot the inventory no longer lists (retention, a forget, a wipe).
//!
//! A snapshot's object lives in the namespace its cairn identity names when the Repository's
//! usage policy admits that namespace (each tenant sees its own), and in the Repository's own
//! namespace otherwise (snapshots without identity: older ones, Stash's, restic's).

use std::collections::BTreeSet;

use cairn_api::common::ObjectReference;
use cairn_api::inventory::SnapshotLine;
use cairn_api::naming::{LABEL_MANAGED_BY, MANAGED_BY, label_value};
use cairn_api::snapshot::{
    INVENTORY_MANAGER, LABEL_CONFIGURATION, LABEL_REPOSITORY, LABEL_REPOSITORY_NAMESPACE,
    SnapshotSpec, SnapshotStatus,
};
use cairn_api::validation::{Lookups, usage_policy_admits};
use cairn_api::{Repository, Snapshot};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::context::Context;
use crate::error::Result;

/// The field manager of a Snapshot's `session` (written once, when its backup finishes: the
/// inventory's manager never sends it, so an inventory never removes it).
const SESSION_MANAGER: &str = "cairn-snapshot-session";

/// The inventory lines in the log of the Job's pod, when the log holds all `expected` of them.
pub async fn read_lines(
    ctx: &Context,
    namespace: &str,
    job_name: &str,
    expected: u64,
) -> Result<std::result::Result<Vec<SnapshotLine>, String>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await?;
    let Some((pod, container)) = listed.items.iter().find_map(succeeded) else {
        return Ok(Err(format!("the pod of Job {job_name} is gone")));
    };
    let params = LogParams {
        container: Some(container),
        ..Default::default()
    };
    let log = pods.logs(&pod, &params).await?;
    let lines = SnapshotLine::parse_log(&log);
    if lines.len() as u64 != expected {
        return Ok(Err(format!(
            "the log of pod {pod} holds {} of the {expected} inventory lines the agent wrote",
            lines.len()
        )));
    }
    Ok(Ok(lines))
}

/// A succeeded pod's name and its agent's container (the last one: hooks come first).
fn succeeded(pod: &Pod) -> Option<(String, String)> {
    let done = pod.status.as_ref()?.phase.as_deref() == Some("Succeeded");
    let container = pod.spec.as_ref()?.containers.last()?.name.clone();
    done.then(|| (pod.name_any(), container))
}

/// The namespace of a snapshot's object: its identity's, when the configuration it names lives
/// there and uses this Repository, and the Repository admits that namespace. Tags are only what
/// whoever holds the repository's password wrote: a tag alone never places an object in
/// another tenant's namespace.
fn home(ctx: &Context, repo: &Repository, line: &SnapshotLine) -> String {
    let own = repo.namespace().unwrap_or_default();
    let Some(ns) = line.namespace.as_deref().filter(|ns| *ns != own) else {
        return own;
    };
    let uses = line
        .configuration
        .as_deref()
        .and_then(|c| ctx.stores.backup_configuration(ns, c))
        .is_some_and(|c| crate::references::means(repo, c.namespace(), &c.spec.repository));
    let labels = ctx.stores.namespace_labels(ns);
    if uses && usage_policy_admits(repo, ns, labels.as_ref()) == Some(true) {
        ns.to_string()
    } else {
        own
    }
}

/// The labels every Snapshot of `repo` carries (and is listed by).
fn repository_labels(repo: &Repository) -> [(String, String); 3] {
    [
        (LABEL_REPOSITORY.into(), label_value(&repo.name_any())),
        (
            LABEL_REPOSITORY_NAMESPACE.into(),
            repo.namespace().unwrap_or_default(),
        ),
        (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
    ]
}

fn selector(repo: &Repository) -> String {
    repository_labels(repo)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Applies one object per line and deletes `repo`'s objects whose snapshot is not listed and
/// is older than `listed_at` (a newer one may be another backup's, saved after the listing).
pub async fn sync(
    ctx: &Context,
    repo: &Repository,
    lines: &[SnapshotLine],
    listed_at: Timestamp,
) -> Result<()> {
    let reference = ObjectReference {
        name: repo.name_any(),
        namespace: repo.namespace(),
    };
    let mut listed = BTreeSet::new();
    for line in lines {
        let namespace = home(ctx, repo, line);
        let spec = SnapshotSpec::from_line(reference.clone(), line);
        let name = Snapshot::object_name(&reference.name, &line.id, line.driver());
        apply(ctx, repo, &namespace, &name, &spec, line).await?;
        listed.insert(line.id.clone());
    }
    for stale in list(ctx, repo).await? {
        let older = stale.spec.time.as_ref().is_none_or(|t| t.0 < listed_at);
        if older && !listed.contains(&stale.spec.snapshot_id) {
            delete(ctx, &stale).await?;
        }
    }
    Ok(())
}

async fn apply(
    ctx: &Context,
    repo: &Repository,
    namespace: &str,
    name: &str,
    spec: &SnapshotSpec,
    line: &SnapshotLine,
) -> Result<()> {
    let mut labels: serde_json::Map<String, serde_json::Value> = repository_labels(repo)
        .into_iter()
        .map(|(k, v)| (k, json!(v)))
        .collect();
    if let Some(c) = &line.configuration {
        labels.insert(LABEL_CONFIGURATION.into(), json!(label_value(c)));
    }
    let mut metadata = json!({"name": name, "namespace": namespace, "labels": labels});
    // In the Repository's namespace its objects go with it; a tenant's cannot name an owner
    // in another namespace (a wipe removes them, [`remove_all`]).
    if repo.namespace().as_deref() == Some(namespace) {
        let owner: Vec<_> = crate::job::owner_of(repo).into_iter().collect();
        metadata["ownerReferences"] = json!(owner);
    }
    let body = json!({
        "apiVersion": cairn_api::common::API_VERSION,
        "kind": "Snapshot",
        "metadata": metadata,
        "spec": spec,
    });
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), namespace);
    let params = PatchParams::apply(INVENTORY_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(body)).await?;
    Ok(())
}

/// Every Snapshot object of `repo`, in any namespace.
pub async fn list(ctx: &Context, repo: &Repository) -> Result<Vec<Snapshot>> {
    let api: Api<Snapshot> = Api::all(ctx.client.clone());
    let objects = api
        .list(&ListParams::default().labels(&selector(repo)))
        .await?;
    Ok(objects.items)
}

async fn delete(ctx: &Context, snapshot: &Snapshot) -> Result<()> {
    let api: Api<Snapshot> = Api::namespaced(
        ctx.client.clone(),
        &snapshot.namespace().unwrap_or_default(),
    );
    match api
        .delete(&snapshot.name_any(), &DeleteParams::default())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every Snapshot object of `repo` (the Repository is going).
pub async fn remove_all(ctx: &Context, repo: &Repository) -> Result<()> {
    for snapshot in list(ctx, repo).await? {
        delete(ctx, &snapshot).await?;
    }
    Ok(())
}

/// Records which session made the snapshot `id` (of `driver`) of `repo`, on its object in the
/// session's namespace (a tenant's session never names another namespace's object).
pub async fn set_session(
    ctx: &Context,
    repo: &Repository,
    (id, driver): (&str, &str),
    namespace: &str,
    session: &str,
) -> Result<()> {
    let name = Snapshot::object_name(&repo.name_any(), id, driver);
    let api: Api<Snapshot> = Api::namespaced(ctx.client.clone(), namespace);
    let ours = api.get_opt(&name).await?.is_some_and(|s| {
        s.spec.snapshot_id == id
            && s.spec.repository.name == repo.name_any()
            && s.spec.repository.namespace == repo.namespace()
    });
    if !ours {
        return Ok(());
    }
    let body = json!({
        "apiVersion": cairn_api::common::API_VERSION,
        "kind": "Snapshot",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"session": session},
    });
    let params = PatchParams::apply(SESSION_MANAGER).force();
    api.patch(&name, &params, &Patch::Apply(body)).await?;
    Ok(())
}

/// The field manager of Snapshots' integrity.
const INTEGRITY_MANAGER: &str = "cairn-integrity";

/// Each Snapshot object's integrity after a check: `damaged` ones are not whole; the others
/// are whole when the check read every pack (`full`), and keep what an earlier check found
/// otherwise (a subset says nothing of the packs it did not read).
pub async fn set_integrity(
    ctx: &Context,
    repo: &Repository,
    damaged: &[String],
    full: bool,
    time: &Time,
) -> Result<()> {
    for object in list(ctx, repo).await? {
        let known = object.status.as_ref().and_then(|s| s.integrity);
        let whole = if damaged.contains(&object.spec.snapshot_id) {
            false
        } else if full {
            true
        } else {
            known != Some(false)
        };
        let status = SnapshotStatus {
            integrity: Some(whole),
            last_check_time: Some(time.clone()),
        };
        let body = json!({
            "apiVersion": cairn_api::common::API_VERSION,
            "kind": "Snapshot",
            "metadata": {"name": object.name_any()},
            "status": status,
        });
        let api: Api<Snapshot> =
            Api::namespaced(ctx.client.clone(), &object.namespace().unwrap_or_default());
        let params = PatchParams::apply(INTEGRITY_MANAGER).force();
        api.patch_status(&object.name_any(), &params, &Patch::Apply(body))
            .await?;
    }
    Ok(())
}
