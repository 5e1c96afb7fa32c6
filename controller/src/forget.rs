//! Forgetting one snapshot at a user's request: a Snapshot object annotated
//! `cairn.dev/forget: "true"` gets a Job of its Repository's (`cairn-agent forget --snapshot`),
//! which forgets exactly that snapshot and writes the inventory; the object then goes with the
//! snapshot. The id comes from the object's spec, which only the controller writes (admission),
//! and the object sits in the namespace whose snapshot it is.

use std::time::Duration;

use cairn_api::naming::forget_job_name;
use cairn_api::resolve::RepositoryWork;
use cairn_api::result::AgentResult;
use cairn_api::{Repository, Snapshot};
use kube::ResourceExt;

use crate::context::Context;
use crate::error::Result;
use crate::observe::JobObservation;
use crate::repository_job;

/// Runs the forget Job of each annotated Snapshot of `repo`; `Some(wait)` while one runs.
pub async fn reconcile(repo: &Repository, ctx: &Context) -> Result<Option<Duration>> {
    let asked: Vec<_> = ctx
        .stores
        .snapshots
        .state()
        .into_iter()
        .filter(|s| s.forget_requested() && of(repo, s))
        .collect();
    let mut wait = None;
    for snapshot in asked {
        if forget(repo, &snapshot, ctx).await? {
            wait = Some(Duration::from_secs(5));
        }
    }
    Ok(wait)
}

fn of(repo: &Repository, s: &Snapshot) -> bool {
    s.spec.repository.name == repo.name_any() && s.spec.repository.namespace == repo.namespace()
}

/// One snapshot's Job: `true` while it runs.
async fn forget(repo: &Repository, snapshot: &Snapshot, ctx: &Context) -> Result<bool> {
    if let Some(why) = snapshot.forget_problem() {
        // Admitted without the webhook: said, never tried.
        ctx.event(snapshot, true, "ForgetFailed", why).await;
        return Ok(false);
    }
    let id = snapshot.spec.snapshot_id.clone();
    let job_name = forget_job_name(&repo.name_any(), &id);
    let work = RepositoryWork::Forget { snapshot: id };
    let observed = match repository_job::run(ctx, repo, &work, &job_name).await? {
        Ok(o) => o,
        Err(e) => {
            ctx.event(snapshot, true, "ForgetFailed", e.to_string())
                .await;
            return Ok(false);
        }
    };
    let failed = match observed {
        JobObservation::Running | JobObservation::Missing => return Ok(true),
        JobObservation::Succeeded {
            result: Some(AgentResult::Inventory(r)),
        } => match crate::inventory::read(ctx, repo, &job_name, r).await? {
            Ok(_) => return Ok(false),
            Err(why) => why,
        },
        JobObservation::Succeeded { .. } => format!("Job {job_name} left no inventory"),
        JobObservation::Failed { reason, message } => {
            format!("Job {job_name} failed ({reason}): {message}")
        }
    };
    let note = format!(
        "the snapshot was not forgotten: {failed}; delete the Job to try again, or remove the \
         annotation {}",
        cairn_api::snapshot::FORGET_ANNOTATION
    );
    ctx.event(snapshot, true, "ForgetFailed", note).await;
    Ok(false)
}
