//! A Repository's own Jobs (wipe, inventory, integrity check, forget): resolved from the
//! Repository, made if missing (owned by it, so they go with it), and observed.

use cairn_api::Repository;
use cairn_api::naming::{LABEL_MANAGED_BY, MANAGED_BY};
use cairn_api::resolve::{RepositoryWork, ResolveError, resolve_repository_job};
use kube::ResourceExt;

use crate::context::Context;
use crate::error::Result;
use crate::job::{add_lock_holders, ensure_job, job_outcome, lock_holders, owner_of};
use crate::observe::JobObservation;

/// The outcome of `repo`'s Job `job_name` doing `work`, made first if missing; the reason when
/// the Job cannot be resolved (e.g. a volume the install's Pod Security level refuses).
pub async fn run(
    ctx: &Context,
    repo: &Repository,
    work: &RepositoryWork,
    job_name: &str,
) -> Result<std::result::Result<JobObservation, ResolveError>> {
    let mut template = match resolve_repository_job(repo, work, &ctx.install) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    // The agent removes the locks of cairn's pods that are gone by these.
    add_lock_holders(&mut template, &lock_holders(ctx));
    let namespace = repo.namespace().unwrap_or_default();
    let labels = [(LABEL_MANAGED_BY.to_string(), MANAGED_BY.to_string())].into();
    ensure_job(
        &ctx.client,
        &namespace,
        job_name,
        labels,
        owner_of(repo),
        &template,
    )
    .await?;
    let uid = repo.metadata.uid.clone().unwrap_or_default();
    Ok(Ok(job_outcome(ctx, &namespace, job_name, &uid).await?))
}
