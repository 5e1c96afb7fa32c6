//! Removing a Repository's dead locks at a user's request: a new value of its `cairn.dev/unlock`
//! annotation (`kubectl cairn unlock` sets one) gets a Job (`cairn-agent unlock`) that removes
//! the locks whose holders are gone, by the rule a run applies before it locks, and keeps the
//! live ones. The outcome is recorded in `status.unlock`, so one request runs once.

use std::time::Duration;

use cairn_api::Repository;
use cairn_api::naming::unlock_job_name;
use cairn_api::repository::{RepositoryStatus, RepositoryUnlock};
use cairn_api::resolve::RepositoryWork;
use cairn_api::result::{AgentResult, UnlockResult};
use kube::{Api, ResourceExt};

use crate::conditions::now;
use crate::context::Context;
use crate::error::Result;
use crate::observe::JobObservation;
use crate::repository_job;
use crate::status::{self, Manager};

/// Runs the unlock the Repository asks for, if any: `Some(wait)` while it runs.
pub async fn reconcile(repo: &Repository, ctx: &Context) -> Result<Option<Duration>> {
    if !repo.needs_unlock() {
        return Ok(None);
    }
    let job_name = unlock_job_name(&repo.name_any(), &repo.unlock_request());
    let outcome = match repository_job::run(ctx, repo, &RepositoryWork::Unlock, &job_name).await? {
        Err(e) => Err(e.to_string()),
        Ok(JobObservation::Running | JobObservation::Missing) => {
            return Ok(Some(Duration::from_secs(3)));
        }
        Ok(JobObservation::Succeeded {
            result: Some(AgentResult::Unlock(r)),
        }) => Ok(r),
        Ok(JobObservation::Succeeded { .. }) => Err(format!("Job {job_name} left no result")),
        Ok(JobObservation::Failed { reason, message }) => {
            Err(format!("Job {job_name} failed ({reason}): {message}"))
        }
    };
    record(ctx, repo, outcome).await.map(|()| None)
}

/// `status.unlock`, and an event.
async fn record(
    ctx: &Context,
    repo: &Repository,
    outcome: std::result::Result<UnlockResult, String>,
) -> Result<()> {
    let mut unlock = RepositoryUnlock {
        request: repo.unlock_request(),
        time: Some(now()),
        ..Default::default()
    };
    match outcome {
        Ok(r) => {
            let note = format!(
                "{} lock(s) whose holders are gone removed; {} live lock(s) kept",
                r.removed, r.kept
            );
            ctx.event(repo, false, "Unlocked", note).await;
            unlock.removed = i64::try_from(r.removed).ok();
            unlock.kept = i64::try_from(r.kept).ok();
            unlock.holders = r.holders;
        }
        Err(why) => {
            let note = format!(
                "removing the repository's dead locks failed: {why}; set a new value on the \
                 annotation {} to try again",
                cairn_api::repository::UNLOCK_ANNOTATION
            );
            ctx.event(repo, true, "UnlockFailed", note).await;
            unlock.error = Some(why);
        }
    }
    let status = RepositoryStatus {
        unlock: Some(unlock),
        ..Default::default()
    };
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    status::apply(&api, repo, Manager::Unlock, false, &status).await
}
