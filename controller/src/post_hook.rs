//! A session's post hook (`postBackup` / `postRestore`), run once the session has ended in
//! whatever way (its agent's result, an OOM kill, an eviction, its deadline): a Job of its own,
//! `cairn-hook-...`, owned by the session, started when the hook's `executionPolicy` fires
//! (`OnFinalRetryFailure` only when no retry is left). Whether it runs is decided once, as the
//! session ends ([`mark_due`]: the condition `Post<Work>HookExecutionSucceeded` is `Unknown`),
//! so a hook added to a configuration later never runs for the sessions it kept. An `exec`
//! hook is run by the controller itself ([`crate::exec_hook`]). Its outcome turns that
//! condition True or False, with an event; a failed hook fails the session, as Stash's
//! `calculateBackupSessionPhase` does (a session that succeeded turns Failed, with the hook
//! named in its reason, and is not retried: its data was written; one that failed already
//! keeps its reason).

use std::time::Duration;

use cairn_api::common::SessionPhase;
use cairn_api::naming::hook_job_name;
use cairn_api::resolve::{PostHookRun, SessionEnd};
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::Context;
use crate::error::Result;
use crate::job::{ensure_job, job_outcome, owner_of, session_labels};
use crate::observe::JobObservation;
use crate::session::{SessionKind, SessionStatus, ns, outcome_name, update_status};

/// How often a running hook's Job is looked at.
const HOOK_RECHECK: Duration = Duration::from_secs(5);

/// Stash's condition of the post hook's outcome: `PostBackupHookExecutionSucceeded`, ...
pub fn condition_type<K: SessionKind>() -> String {
    format!("Post{}HookExecutionSucceeded", K::WORK)
}

/// In the status a session ends with (`ended`): its post hook is due, when it has one whose
/// `executionPolicy` fires (or one that cannot be made, which [`run`] then reports).
pub fn mark_due<K: SessionKind>(
    session: &K,
    ctx: &Context,
    ended: &SessionEnd<'_>,
    status: &mut K::Status,
) {
    if !matches!(ended.phase, SessionPhase::Succeeded | SessionPhase::Failed)
        || matches!(session.post_hook(ctx, ended), Ok(None))
    {
        return;
    }
    crate::conditions::set_status(
        status.conditions_mut(),
        &condition_type::<K>(),
        "Unknown",
        "Pending",
        "the post hook runs now that the session has ended",
        session.meta().generation,
        &crate::conditions::now(),
    );
}

/// Runs the ended session's post hook to its end: `Some(action)` while its Job runs, `None`
/// once there is nothing (more) to do.
pub async fn run<K: SessionKind>(session: &K, ctx: &Context) -> Result<Option<Action>> {
    let type_ = condition_type::<K>();
    let Some(phase) = session.phase() else {
        return Ok(None);
    };
    let conditions = session.conditions();
    if !conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "Unknown")
    {
        return Ok(None);
    }
    let error = match phase {
        SessionPhase::Failed => conditions
            .iter()
            .find(|c| c.type_ == outcome_name::<K>(phase))
            .map(|c| c.message.clone())
            .unwrap_or_default(),
        _ => String::new(),
    };
    let duration = session
        .status()
        .and_then(|s| s.duration().map(str::to_string))
        .unwrap_or_default();
    let ended = SessionEnd {
        phase,
        duration: &duration,
        error: &error,
        retry_left: session.retry_left(ctx),
    };
    let template = match session.post_hook(ctx, &ended) {
        Ok(Some(PostHookRun::Job(t))) => t,
        Ok(Some(PostHookRun::Exec(hook))) => {
            let (ok, message) = match crate::exec_hook::run(ctx, &ns(session), &hook).await {
                Ok(m) => (true, m),
                Err(m) => (false, m),
            };
            return record(session, ctx, &type_, ok, message).await;
        }
        Ok(None) => {
            // The configuration changed (or went) since the session ended.
            let gone = "the post hook no longer runs for this session: the configuration changed";
            return record(session, ctx, &type_, false, gone.into()).await;
        }
        Err(e) => return record(session, ctx, &type_, false, e.to_string()).await,
    };
    let name = session.name_any();
    let job_name = hook_job_name(&name);
    let namespace = ns(session);
    let labels = session_labels(&name);
    ensure_job(
        &ctx.client,
        &namespace,
        &job_name,
        labels,
        owner_of(session),
        &template,
    )
    .await?;
    let uid = session.uid().unwrap_or_default();
    match job_outcome(ctx, &namespace, &job_name, &uid).await? {
        JobObservation::Running => Ok(Some(Action::requeue(HOOK_RECHECK))),
        JobObservation::Succeeded { .. } => {
            record(
                session,
                ctx,
                &type_,
                true,
                format!("Job {job_name} succeeded"),
            )
            .await
        }
        JobObservation::Missing => Ok(Some(Action::requeue(HOOK_RECHECK))),
        JobObservation::Failed { message, .. } => {
            record(session, ctx, &type_, false, message).await
        }
    }
}

/// Stash's name of the post hook: `postBackup` or `postRestore`.
fn hook_name<K: SessionKind>() -> String {
    format!("post{}", K::WORK)
}

/// Whether the session failed because its post hook did (it is not retried: the backup's data
/// was written, and running it again would not make the hook succeed).
pub fn failed_the_session<K: SessionKind>(session: &K) -> bool {
    let reason = format!("FailedToExecutePost{}Hook", K::WORK);
    let failed = outcome_name::<K>(SessionPhase::Failed);
    session
        .conditions()
        .iter()
        .any(|c| c.type_ == failed && c.reason == reason)
}

/// The hook's outcome as Stash says it: its condition and an event.
async fn record<K: SessionKind>(
    session: &K,
    ctx: &Context,
    type_: &str,
    ok: bool,
    message: String,
) -> Result<Option<Action>> {
    let hook = format!("Post{}Hook", K::WORK);
    let reason = if ok {
        format!("SuccessfullyExecuted{hook}")
    } else {
        format!("FailedToExecute{hook}")
    };
    let generation = session.meta().generation;
    let failed = outcome_name::<K>(SessionPhase::Failed);
    update_status(ctx, session, |status| {
        let now = crate::conditions::now();
        // A session that failed already keeps its own reason.
        let fails = !ok && status.phase() == Some(SessionPhase::Succeeded);
        let conditions = status.conditions_mut();
        crate::conditions::set(
            conditions,
            type_,
            ok,
            &reason,
            message.clone(),
            generation,
            &now,
        );
        if fails {
            let why = format!("the {} hook failed: {message}", hook_name::<K>());
            // As `session::finish` writes a failed outcome.
            crate::conditions::set(conditions, &failed, false, &reason, why, generation, &now);
            *status.phase_mut() = Some(SessionPhase::Failed);
        }
    })
    .await?;
    ctx.event(session, !ok, &reason, message).await;
    Ok(None)
}
