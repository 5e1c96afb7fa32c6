//! A Repository's inventory Job: `cairn-agent inventory` lists the snapshots of a repository
//! cairn did not fill itself (adopted, Stash's) into Snapshot objects, when the Repository is
//! created and for each new value of its `cairn.dev/inventory` annotation. The outcome is
//! recorded in `status.inventory`, so one request runs once.

use std::time::Duration;

use cairn_api::Repository;
use cairn_api::naming::inventory_job_name;
use cairn_api::repository::{RepositoryInventory, RepositoryStatus};
use cairn_api::resolve::RepositoryWork;
use cairn_api::result::{AgentResult, InventoryResult};
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use crate::conditions::now;
use crate::context::Context;
use crate::error::Result;
use crate::observe::JobObservation;
use crate::repository_job;
use crate::snapshots;
use crate::status::{self, Manager};

/// Takes the inventory the Repository asks for, if any: `Some(wait)` while it runs, `None`
/// when there is nothing to do.
pub async fn reconcile(repo: &Repository, ctx: &Context) -> Result<Option<Duration>> {
    if !repo.needs_inventory() {
        return Ok(None);
    }
    let job_name = inventory_job_name(&repo.name_any(), &repo.inventory_request());
    let observed =
        match repository_job::run(ctx, repo, &RepositoryWork::Inventory, &job_name).await? {
            Ok(o) => o,
            Err(e) => return record(ctx, repo, Err(e.to_string())).await.map(|()| None),
        };
    let outcome = match observed {
        JobObservation::Running | JobObservation::Missing => {
            return Ok(Some(Duration::from_secs(5)));
        }
        JobObservation::Succeeded {
            result: Some(AgentResult::Inventory(r)),
        } => read(ctx, repo, &job_name, r).await?,
        JobObservation::Succeeded { .. } => Err(format!("Job {job_name} left no inventory result")),
        JobObservation::Failed { reason, message } => {
            Err(format!("Job {job_name} failed ({reason}): {message}"))
        }
    };
    record(ctx, repo, outcome).await.map(|()| None)
}

/// The Job's lines into Snapshot objects; the result, or why not.
pub async fn read(
    ctx: &Context,
    repo: &Repository,
    job_name: &str,
    r: InventoryResult,
) -> Result<std::result::Result<InventoryResult, String>> {
    let namespace = repo.namespace().unwrap_or_default();
    let lines = match snapshots::read_lines(ctx, &namespace, job_name, r.snapshots).await? {
        Ok(lines) => lines,
        Err(why) => return Ok(Err(why)),
    };
    let listed_at = ctx
        .stores
        .jobs
        .get(&ObjectRef::new(job_name).within(&namespace))
        .and_then(|j| j.metadata.creation_timestamp.clone())
        .map_or_else(Timestamp::now, |t| t.0);
    snapshots::sync(ctx, repo, &lines, listed_at).await?;
    Ok(Ok(r))
}

/// `status.inventory`, and an event.
async fn record(
    ctx: &Context,
    repo: &Repository,
    outcome: std::result::Result<InventoryResult, String>,
) -> Result<()> {
    let mut inventory = RepositoryInventory {
        request: repo.inventory_request(),
        time: Some(now()),
        ..Default::default()
    };
    match outcome {
        Ok(r) => {
            inventory.snapshots = i64::try_from(r.snapshots).ok();
            let note = format!("{} snapshots listed into Snapshot objects", r.snapshots);
            ctx.event(repo, false, "InventoryTaken", note).await;
        }
        Err(why) => {
            inventory.error = Some(why.clone());
            let note = format!(
                "the inventory of the repository failed: {why}; set a new value on the \
                 annotation {} to try again",
                cairn_api::repository::INVENTORY_ANNOTATION
            );
            ctx.event(repo, true, "InventoryFailed", note).await;
        }
    }
    // Only `inventory`: the totals are the backups' to write (an inventory may finish after a
    // backup that counted later).
    let status = RepositoryStatus {
        inventory: Some(inventory),
        ..Default::default()
    };
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    status::apply(&api, repo, Manager::Inventory, false, &status).await
}
