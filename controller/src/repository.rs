//! Reconciling a Repository: its references (`references`); its own Jobs while it lives (the
//! inventory, [`crate::inventory`]; scheduled checks, [`crate::integrity`]; forgetting a
//! snapshot, [`crate::forget`]; removing dead locks, [`crate::unlock`]); and with `wipeOut: true` a finalizer, whose deletion runs a
//! cleanup Job (`cairn-agent wipe`) that deletes the data from the backend and the Snapshot
//! objects before the object goes. Without `wipeOut` the data stays and no finalizer holds the
//! object.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::Repository;
use cairn_api::naming::label_value;
use cairn_api::resolve::RepositoryWork;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use tracing::instrument;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::observe::JobObservation;

/// Holds a Repository with `wipeOut: true` until its data is deleted.
pub const WIPE_FINALIZER: &str = "cairn.dev/wipe-out";

/// Name of the cleanup Job of a repository.
pub fn wipe_job_name(repo: &str) -> String {
    label_value(&format!("cairn-wipe-{repo}")).to_ascii_lowercase()
}

async fn set_finalizers(ctx: &Context, repo: &Repository, finalizers: Vec<String>) -> Result<()> {
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    // The resourceVersion makes this fail (and retry) rather than clobber a concurrent change.
    let patch =
        json!({"metadata": {"finalizers": finalizers, "resourceVersion": repo.resource_version()}});
    api.patch(
        &repo.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

#[instrument(skip_all, fields(
    namespace = %repo.namespace().unwrap_or_default(),
    name = %repo.name_any(),
))]
pub async fn reconcile(repo: Arc<Repository>, ctx: Arc<Context>) -> Result<Action> {
    // Native repositories' files are the server's (admission refuses wipeOut for them).
    let wipe = repo.spec.wipe_out == Some(true) && repo.restic_backend().is_some();
    let finalizers = repo.finalizers().to_vec();
    let held = finalizers.iter().any(|f| f == WIPE_FINALIZER);
    let without: Vec<String> = finalizers
        .iter()
        .filter(|f| *f != WIPE_FINALIZER)
        .cloned()
        .collect();

    if repo.metadata.deletion_timestamp.is_none() {
        crate::references::update(&repo, &ctx).await?;
        if wipe && !held {
            let mut with = finalizers.clone();
            with.push(WIPE_FINALIZER.into());
            set_finalizers(&ctx, &repo, with).await?;
        } else if !wipe && held {
            set_finalizers(&ctx, &repo, without).await?;
        }
        let inventory = crate::inventory::reconcile(&repo, &ctx).await?;
        let check = crate::integrity::reconcile(&repo, &ctx).await?;
        let forget = crate::forget::reconcile(&repo, &ctx).await?;
        let unlock = crate::unlock::reconcile(&repo, &ctx).await?;
        let waits = [inventory, check, forget, unlock];
        return Ok(match waits.into_iter().flatten().min() {
            Some(wait) => Action::requeue(wait),
            None => Action::await_change(),
        });
    }
    if !held {
        return Ok(Action::await_change());
    }
    if !wipe {
        // wipeOut was turned off before the deletion: keep the data, let the object go.
        set_finalizers(&ctx, &repo, without).await?;
        return Ok(Action::await_change());
    }
    let job_name = wipe_job_name(&repo.name_any());
    let observed = crate::repository_job::run(&ctx, &repo, &RepositoryWork::Wipe, &job_name)
        .await?
        .map_err(|e| Error::Invalid(e.to_string()))?;
    match observed {
        JobObservation::Running | JobObservation::Missing => {
            Ok(Action::requeue(Duration::from_secs(30)))
        }
        JobObservation::Succeeded { .. } => {
            crate::snapshots::remove_all(&ctx, &repo).await?;
            ctx.metrics.forget_repository(&repo);
            ctx.event(
                repo.as_ref(),
                false,
                "WipedOut",
                format!("the repository's data was deleted by Job {job_name}"),
            )
            .await;
            set_finalizers(&ctx, &repo, without).await?;
            Ok(Action::await_change())
        }
        JobObservation::Failed { reason, message } => {
            // Not retried by itself: deleting data again and again is not what anyone wants.
            ctx.event(repo.as_ref(), true, "WipeOutFailed", format!(
                "Job {job_name} failed ({reason}: {message}); the data is still there. Delete the Job to try again, or remove the finalizer {WIPE_FINALIZER} to keep the data and let the Repository go"
            )).await;
            Ok(Action::await_change())
        }
    }
}
