//! Reconciling a BackupSession through its life (`runtime.md`, "A session's life"):
//! skip → prepare the interim PVC → run the Job → finish from the Job and Pod → retry.

use std::sync::Arc;

use cairn_api::backup_session::SnapshotSummary;
use cairn_api::common::SessionPhase;
use cairn_api::naming::{LABEL_INVOKER_KIND, LABEL_INVOKER_NAME, backup_job_name, label_value};
use cairn_api::resolve::resolve_backup_job;
use cairn_api::result::{AgentResult, BackupResult};
use cairn_api::validation::{Lookups, parse_go_duration};
use cairn_api::{BackupConfiguration, BackupSession, Repository};
use chrono::Utc;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use serde_json::json;
use std::time::Duration;

use crate::conditions::{self, now};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};
use crate::job::{
    Launch, RESOLVE_RETRY, delete_job, human_bytes, human_duration, job_outcome, launch, owner_of,
    wait_for_resolution,
};
use crate::metrics::{ConfigLabels, SessionLabels};
use crate::observe::JobObservation;
use crate::scheduling::{to_chrono, to_time};

/// How often a Running session is looked at when no watch event arrives.
const RECHECK: Duration = Duration::from_secs(60);

pub async fn reconcile(session: Arc<BackupSession>, ctx: Arc<Context>) -> Result<Action> {
    let phase = session.status.as_ref().and_then(|s| s.phase);
    match phase {
        None | Some(SessionPhase::Pending) => start(&session, &ctx).await,
        Some(SessionPhase::Running) => follow(&session, &ctx).await,
        Some(SessionPhase::Failed) => retry(&session, &ctx).await,
        Some(_) => Ok(Action::await_change()),
    }
}

fn ns(session: &BackupSession) -> String {
    session.namespace().unwrap_or_default()
}

fn invoker(session: &BackupSession, ctx: &Context) -> Option<Arc<BackupConfiguration>> {
    ctx.stores
        .backup_configuration(&ns(session), &session.spec.invoker.name)
}

async fn patch_status(
    ctx: &Context,
    session: &BackupSession,
    status: serde_json::Value,
) -> Result<()> {
    let api: Api<BackupSession> = Api::namespaced(ctx.client.clone(), &ns(session));
    api.patch_status(
        &session.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// Ends the session in `phase` with a condition, an event and metrics.
async fn finish(
    ctx: &Context,
    session: &BackupSession,
    phase: SessionPhase,
    condition: &str,
    reason: &str,
    message: String,
    extra: serde_json::Value,
) -> Result<()> {
    let mut status = session.status.clone().unwrap_or_default();
    let t = now();
    let ok = phase == SessionPhase::Succeeded;
    conditions::set(
        &mut status.conditions,
        condition,
        ok,
        reason,
        message.clone(),
        session.metadata.generation,
        &t,
    );
    let started = session
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|c| to_chrono(&c.0));
    let duration = started.map(|s| (Utc::now() - s).num_seconds()).unwrap_or(0);
    let mut body = json!({
        "phase": phase,
        "conditions": status.conditions,
        "sessionDuration": human_duration(duration),
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        b.extend(e.clone());
    }
    patch_status(ctx, session, body).await?;
    let event_reason = match phase {
        SessionPhase::Succeeded => "BackupSucceeded",
        SessionPhase::Skipped => "BackupSkipped",
        _ => "BackupFailed",
    };
    ctx.event(session, !ok, event_reason, message).await;
    let labels = SessionLabels {
        namespace: ns(session),
        invoker: session.spec.invoker.name.clone(),
        kind: "BackupSession".into(),
        phase: phase.to_string(),
    };
    ctx.metrics.sessions.get_or_create(&labels).inc();
    ctx.metrics
        .session_duration
        .get_or_create(&labels)
        .observe(duration as f64);
    Ok(())
}

async fn fail(
    ctx: &Context,
    session: &BackupSession,
    reason: &str,
    message: String,
) -> Result<Action> {
    let extra = next_retry(session, ctx);
    finish(
        ctx,
        session,
        SessionPhase::Failed,
        "BackupFailed",
        reason,
        message,
        extra,
    )
    .await?;
    Ok(Action::requeue(Duration::from_secs(1)))
}

/// `status.nextRetry` for a failed session that has retries left.
fn next_retry(session: &BackupSession, ctx: &Context) -> serde_json::Value {
    if session.spec.retry_left.unwrap_or(0) <= 0 {
        return json!({});
    }
    let delay = invoker(session, ctx)
        .and_then(|c| c.spec.retry_config.as_ref()?.delay.clone())
        .and_then(|d| parse_go_duration(&d).ok())
        .unwrap_or_else(chrono::Duration::zero);
    json!({ "nextRetry": to_time(Utc::now() + delay) })
}

/// Whether any of `names`, seen Running in the cache, is still Running. Skipping is final, so a
/// cache that has not yet seen a session end (our own write of its end, even) decides nothing:
/// each is read live.
async fn still_running(ctx: &Context, namespace: &str, names: &[String]) -> Result<bool> {
    let api: Api<BackupSession> = Api::namespaced(ctx.client.clone(), namespace);
    for name in names {
        let live = api.get_opt(name).await?;
        if live.and_then(|s| s.status?.phase) == Some(SessionPhase::Running) {
            return Ok(true);
        }
    }
    Ok(false)
}

async fn start(session: &BackupSession, ctx: &Context) -> Result<Action> {
    if ctx.slot_in_progress(chrono::Utc::now()) {
        // Starting the Job can wait a moment for the sessions of a slot that just came.
        return Ok(Action::requeue(crate::scheduling::SLOT_WAIT));
    }
    let name = session.name_any();
    let Some(config) = invoker(session, ctx) else {
        return fail(
            ctx,
            session,
            "InvokerNotFound",
            format!(
                "BackupConfiguration {:?} not found in namespace {:?}",
                session.spec.invoker.name,
                ns(session)
            ),
        )
        .await;
    };
    // Skip: one running session per configuration, and only Ready configurations run.
    let seen_running: Vec<String> = ctx
        .stores
        .sessions
        .state()
        .into_iter()
        .filter(|s| {
            s.name_any() != name
                && s.namespace() == session.namespace()
                && s.spec.invoker.name == session.spec.invoker.name
                && s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Running)
        })
        .map(|s| s.name_any())
        .collect();
    let running = still_running(ctx, &ns(session), &seen_running).await?;
    let config_phase = config.status.as_ref().and_then(|s| s.phase);
    let skip = if running {
        Some(format!(
            "another session of BackupConfiguration {:?} is running",
            config.name_any()
        ))
    } else if config_phase != Some(cairn_api::backup_configuration::ConfigurationPhase::Ready) {
        Some(format!(
            "BackupConfiguration {:?} is not Ready ({}); see its status conditions",
            config.name_any(),
            config_phase
                .map(|p| format!("{p:?}"))
                .unwrap_or_else(|| "not evaluated yet".into())
        ))
    } else {
        None
    };
    if let Some(why) = skip {
        finish(
            ctx,
            session,
            SessionPhase::Skipped,
            "BackupSkipped",
            "Skipped",
            why,
            json!({}),
        )
        .await?;
        return Ok(Action::await_change());
    }
    // The Job is resolved now from the current objects, never taken from the session: a stored
    // `spec.jobTemplate` is the webhook's preview, and a session admitted without the webhook
    // may carry anything there.
    let template = match resolve_backup_job(session, &ctx.stores, &ctx.install) {
        Ok(t) => t,
        Err(e) if wait_for_resolution(&e, session.metadata.creation_timestamp.as_ref()) => {
            return Ok(Action::requeue(RESOLVE_RETRY));
        }
        Err(e) => {
            return fail(
                ctx,
                session,
                "ResolutionFailed",
                format!("cannot resolve the Job: {e}"),
            )
            .await;
        }
    };
    let (body, timeout) = launch(
        &ctx.client,
        Launch {
            namespace: &ns(session),
            session: &name,
            owner: owner_of(session),
            interim: config.spec.interim_volume_template.as_ref(),
            job_name: &backup_job_name(&name),
            template: &template,
            time_out: config.spec.time_out.as_deref(),
            conditions: session.status.clone().unwrap_or_default().conditions,
            generation: session.metadata.generation,
        },
    )
    .await?;
    patch_status(ctx, session, body).await?;
    Ok(Action::requeue(
        timeout
            .and_then(|t| t.to_std().ok())
            .unwrap_or(RECHECK)
            .min(RECHECK),
    ))
}

async fn follow(session: &BackupSession, ctx: &Context) -> Result<Action> {
    let namespace = ns(session);
    let job_name = backup_job_name(&session.name_any());
    let deadline = session
        .status
        .as_ref()
        .and_then(|s| s.session_deadline.as_ref())
        .and_then(|d| to_chrono(&d.0));
    if let Some(d) = deadline
        && Utc::now() >= d
    {
        delete_job(&ctx.client, &namespace, &job_name).await?;
        return fail(
            ctx,
            session,
            "DeadlineExceeded",
            format!(
                "the session ran past its timeOut ({}); its Job was deleted",
                invoker(session, ctx)
                    .and_then(|c| c.spec.time_out.clone())
                    .unwrap_or_default()
            ),
        )
        .await;
    }
    match job_outcome(ctx, &namespace, &job_name).await? {
        JobObservation::Running => {
            let until = deadline
                .and_then(|d| (d - Utc::now()).to_std().ok())
                .unwrap_or(RECHECK)
                .min(RECHECK);
            Ok(Action::requeue(until))
        }
        JobObservation::Missing => {
            fail(
                ctx,
                session,
                "JobDeleted",
                format!("Job {job_name} was deleted before it finished"),
            )
            .await
        }
        JobObservation::Failed { reason, message } => fail(ctx, session, &reason, message).await,
        JobObservation::Succeeded { result } => succeed(session, ctx, result).await,
    }
}

async fn succeed(
    session: &BackupSession,
    ctx: &Context,
    result: Option<AgentResult>,
) -> Result<Action> {
    let Some(AgentResult::Backup(b)) = result else {
        return fail(
            ctx,
            session,
            "NoResult",
            "the Job succeeded but the agent left no backup result in its termination message"
                .into(),
        )
        .await;
    };
    let snapshot = SnapshotSummary {
        id: b.snapshot.clone(),
        time: b
            .time
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time),
        total_bytes: i64::try_from(b.total_bytes).ok(),
        added_bytes: i64::try_from(b.added_bytes).ok(),
        documents: i64::try_from(b.documents).ok(),
        indices: i64::try_from(b.indices).ok(),
    };
    let message = format!(
        "snapshot {} of {} indices, {} documents, {} ({} added)",
        short(&b.snapshot),
        b.indices,
        b.documents,
        human_bytes(b.total_bytes),
        human_bytes(b.added_bytes)
    );
    finish(
        ctx,
        session,
        SessionPhase::Succeeded,
        "BackupSucceeded",
        "BackupSucceeded",
        message,
        json!({"snapshot": snapshot}),
    )
    .await?;
    update_repository(session, ctx, &b).await?;
    let labels = ConfigLabels {
        namespace: ns(session),
        configuration: session.spec.invoker.name.clone(),
    };
    ctx.metrics
        .last_success
        .get_or_create(&labels)
        .set(Utc::now().timestamp() as f64);
    ctx.metrics
        .last_backup_bytes
        .get_or_create(&labels)
        .set(i64::try_from(b.total_bytes).unwrap_or(i64::MAX));
    ctx.metrics
        .last_backup_documents
        .get_or_create(&labels)
        .set(i64::try_from(b.documents).unwrap_or(i64::MAX));
    // The configuration's status names its last successful session.
    let configs: Api<BackupConfiguration> = Api::namespaced(ctx.client.clone(), &ns(session));
    configs
        .patch_status(
            &session.spec.invoker.name,
            &PatchParams::apply(MANAGER),
            &Patch::Merge(json!({"status": {"lastSuccessfulSession": session.name_any()}})),
        )
        .await?;
    Ok(Action::await_change())
}

fn short(id: &str) -> &str {
    id.get(..8).unwrap_or(id)
}

async fn update_repository(session: &BackupSession, ctx: &Context, b: &BackupResult) -> Result<()> {
    let Some(config) = invoker(session, ctx) else {
        return Ok(());
    };
    let repo_ns = config
        .spec
        .repository
        .namespace
        .clone()
        .unwrap_or_else(|| ns(session));
    let api: Api<Repository> = Api::namespaced(ctx.client.clone(), &repo_ns);
    let Some(repo) = api.get_opt(&config.spec.repository.name).await? else {
        return Ok(());
    };
    let t = now();
    let first = repo
        .status
        .as_ref()
        .and_then(|s| s.first_backup_time.clone())
        .unwrap_or_else(|| t.clone());
    let mut status = json!({
        "observedGeneration": repo.metadata.generation,
        "firstBackupTime": first,
        "lastBackupTime": t,
        "snapshotCount": b.repository.snapshot_count,
        "totalSizeBytes": b.repository.size_bytes,
        "totalSize": human_bytes(b.repository.size_bytes),
        "snapshotsRemovedOnLastCleanup": b.snapshots_removed,
    });
    if let Some(i) = b.repository.integrity {
        status["integrity"] = json!(i);
    }
    api.patch_status(
        &repo.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(())
}

/// A failed session with retries left makes one new session after `retryConfig.delay`.
async fn retry(session: &BackupSession, ctx: &Context) -> Result<Action> {
    let status = session.status.clone().unwrap_or_default();
    let left = session.spec.retry_left.unwrap_or(0);
    if left <= 0 || status.retried == Some(true) {
        return Ok(Action::await_change());
    }
    let at = status
        .next_retry
        .as_ref()
        .and_then(|t| to_chrono(&t.0))
        .unwrap_or_else(Utc::now);
    if let Ok(wait) = (at - Utc::now()).to_std()
        && !wait.is_zero()
    {
        return Ok(Action::requeue(wait));
    }
    let name = retry_name(&session.name_any());
    let mut labels = session.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_INVOKER_KIND.into(), "BackupConfiguration".into());
    labels.insert(
        LABEL_INVOKER_NAME.into(),
        label_value(&session.spec.invoker.name),
    );
    let new = BackupSession {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: session.namespace(),
            labels: Some(labels),
            annotations: Some([("cairn.dev/retry-of".to_string(), session.name_any())].into()),
            owner_references: session.metadata.owner_references.clone(),
            ..Default::default()
        },
        spec: cairn_api::backup_session::BackupSessionSpec {
            invoker: session.spec.invoker.clone(),
            retry_left: Some(left - 1),
            job_template: None,
        },
        status: None,
    };
    let api: Api<BackupSession> = Api::namespaced(ctx.client.clone(), &ns(session));
    match api.create(&PostParams::default(), &new).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::Kube(e)),
    }
    patch_status(ctx, session, json!({"retried": true})).await?;
    ctx.event(
        session,
        false,
        "BackupRetried",
        format!(
            "retrying as BackupSession {name} ({} retries left after it)",
            left - 1
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// `<session>-retry`, shortened to stay a valid name (a retry of a retry adds another).
fn retry_name(session: &str) -> String {
    label_value(&format!("{session}-retry")).to_ascii_lowercase()
}

/// Sessions of a configuration that finished, newest first.
pub fn completed_newest_first(sessions: &[Arc<BackupSession>]) -> Vec<Arc<BackupSession>> {
    let mut done: Vec<_> = sessions
        .iter()
        .filter(|s| {
            s.status
                .as_ref()
                .and_then(|st| st.phase)
                .is_some_and(|p| p.is_final())
        })
        .cloned()
        .collect();
    done.sort_by(|a, b| {
        b.metadata
            .creation_timestamp
            .cmp(&a.metadata.creation_timestamp)
            .then_with(|| b.name_any().cmp(&a.name_any()))
    });
    done
}
