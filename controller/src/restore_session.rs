//! Reconciling a RestoreSession: prepare the interim PVC → run the Job → finish from the Job
//! and Pod. No schedule, skip, retry or history.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::RestoreSession;
use cairn_api::common::SessionPhase;
use cairn_api::naming::restore_job_name;
use cairn_api::resolve::resolve_restore_job;
use cairn_api::restore_session::RestoredSummary;
use cairn_api::result::AgentResult;
use chrono::Utc;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;

use crate::conditions::{self, now};
use crate::context::{Context, MANAGER};
use crate::error::Result;
use crate::job::{
    Launch, RESOLVE_RETRY, delete_job, human_duration, job_outcome, launch, owner_of,
    wait_for_resolution,
};
use crate::metrics::SessionLabels;
use crate::observe::JobObservation;
use crate::scheduling::to_chrono;

const RECHECK: Duration = Duration::from_secs(60);

pub async fn reconcile(restore: Arc<RestoreSession>, ctx: Arc<Context>) -> Result<Action> {
    match restore.status.as_ref().and_then(|s| s.phase) {
        None | Some(SessionPhase::Pending) => start(&restore, &ctx).await,
        Some(SessionPhase::Running) => follow(&restore, &ctx).await,
        Some(_) => Ok(Action::await_change()),
    }
}

fn ns(r: &RestoreSession) -> String {
    r.namespace().unwrap_or_default()
}

async fn patch_status(ctx: &Context, r: &RestoreSession, status: serde_json::Value) -> Result<()> {
    let api: Api<RestoreSession> = Api::namespaced(ctx.client.clone(), &ns(r));
    api.patch_status(
        &r.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

async fn finish(
    ctx: &Context,
    r: &RestoreSession,
    phase: SessionPhase,
    reason: &str,
    message: String,
    extra: serde_json::Value,
) -> Result<Action> {
    let ok = phase == SessionPhase::Succeeded;
    let mut status = r.status.clone().unwrap_or_default();
    let condition = if ok {
        "RestoreSucceeded"
    } else {
        "RestoreFailed"
    };
    conditions::set(
        &mut status.conditions,
        condition,
        ok,
        reason,
        message.clone(),
        r.metadata.generation,
        &now(),
    );
    let started = r
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|c| to_chrono(&c.0));
    let duration = started.map(|s| (Utc::now() - s).num_seconds()).unwrap_or(0);
    let host = r
        .spec
        .target
        .alias
        .clone()
        .unwrap_or_else(|| "host-0".into());
    let mut body = json!({
        "phase": phase,
        "conditions": status.conditions,
        "sessionDuration": human_duration(duration),
        "totalHosts": 1,
        "stats": [{"hostname": host, "phase": phase, "duration": human_duration(duration),
                   "error": if ok { serde_json::Value::Null } else { json!(message) }}],
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    patch_status(ctx, r, body).await?;
    ctx.event(r, !ok, condition, message).await;
    let labels = SessionLabels {
        namespace: ns(r),
        invoker: r.name_any(),
        kind: "RestoreSession".into(),
        phase: phase.to_string(),
    };
    ctx.metrics.sessions.get_or_create(&labels).inc();
    ctx.metrics
        .session_duration
        .get_or_create(&labels)
        .observe(duration as f64);
    Ok(Action::await_change())
}

async fn start(r: &RestoreSession, ctx: &Context) -> Result<Action> {
    if ctx.slot_in_progress(chrono::Utc::now()) {
        // Starting the Job can wait a moment for the sessions of a slot that just came.
        return Ok(Action::requeue(crate::scheduling::SLOT_WAIT));
    }
    let name = r.name_any();
    let namespace = ns(r);
    // Resolved now, never taken from the stored preview (see backup_session::start).
    let template = match resolve_restore_job(r, &ctx.stores, &ctx.install) {
        Ok(t) => t,
        Err(e) if wait_for_resolution(&e, r.metadata.creation_timestamp.as_ref()) => {
            return Ok(Action::requeue(RESOLVE_RETRY));
        }
        Err(e) => {
            return finish(
                ctx,
                r,
                SessionPhase::Failed,
                "ResolutionFailed",
                format!("cannot resolve the Job: {e}"),
                json!({}),
            )
            .await;
        }
    };
    let (mut body, _) = launch(
        &ctx.client,
        Launch {
            namespace: &namespace,
            session: &name,
            owner: owner_of(r),
            interim: r.spec.interim_volume_template.as_ref(),
            job_name: &restore_job_name(&name),
            template: &template,
            time_out: r.spec.time_out.as_deref(),
            conditions: r.status.clone().unwrap_or_default().conditions,
            generation: r.metadata.generation,
        },
    )
    .await?;
    body["totalHosts"] = json!(1);
    patch_status(ctx, r, body).await?;
    Ok(Action::requeue(RECHECK))
}

async fn follow(r: &RestoreSession, ctx: &Context) -> Result<Action> {
    let namespace = ns(r);
    let job_name = restore_job_name(&r.name_any());
    let deadline = r
        .status
        .as_ref()
        .and_then(|s| s.session_deadline.as_ref())
        .and_then(|d| to_chrono(&d.0));
    if let Some(d) = deadline
        && Utc::now() >= d
    {
        delete_job(&ctx.client, &namespace, &job_name).await?;
        return finish(
            ctx,
            r,
            SessionPhase::Failed,
            "DeadlineExceeded",
            "the restore ran past its timeOut; its Job was deleted".into(),
            json!({}),
        )
        .await;
    }
    match job_outcome(ctx, &namespace, &job_name).await? {
        JobObservation::Running => Ok(Action::requeue(
            deadline
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .unwrap_or(RECHECK)
                .min(RECHECK),
        )),
        JobObservation::Missing => {
            finish(
                ctx,
                r,
                SessionPhase::Failed,
                "JobDeleted",
                format!("Job {job_name} was deleted before it finished"),
                json!({}),
            )
            .await
        }
        JobObservation::Failed { reason, message } => {
            finish(ctx, r, SessionPhase::Failed, &reason, message, json!({})).await
        }
        JobObservation::Succeeded {
            result: Some(AgentResult::Restore(res)),
        } => {
            let restored = RestoredSummary {
                snapshot: res.snapshot.clone(),
                documents: i64::try_from(res.documents).ok(),
                indices: i64::try_from(res.indices).ok(),
            };
            let message = format!(
                "restored snapshot {} ({} indices, {} documents)",
                res.snapshot.get(..8).unwrap_or(&res.snapshot),
                res.indices,
                res.documents
            );
            finish(
                ctx,
                r,
                SessionPhase::Succeeded,
                "RestoreSucceeded",
                message,
                json!({"restored": restored}),
            )
            .await
        }
        JobObservation::Succeeded { .. } => {
            finish(
                ctx,
                r,
                SessionPhase::Failed,
                "NoResult",
                "the Job succeeded but the agent left no restore result in its termination message"
                    .into(),
                json!({}),
            )
            .await
        }
    }
}
