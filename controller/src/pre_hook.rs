//! Stash's condition of a session's pre hook (`PreBackupHookExecutionSucceeded`, ...), written
//! with the session's end: read from the hook's container (`pre-backup-hook`, the Job's first)
//! in the Pod cache, which showed the container's end before the Job's outcome was decided.
//! A session whose pod never ran its hook (no hook, or ended before it) gets none. An `exec`
//! pre hook has no container: the controller runs it before it creates the Job
//! ([`run_exec`]), and a failure fails the session with no Job, so nothing is read.

use std::ops::ControlFlow;

use cairn_api::naming::hook_container_name;
use kube::ResourceExt;
use kube::runtime::controller::Action;

use crate::context::Context;
use crate::error::Result;
use crate::session::{SessionKind, SessionStatus, fail_with, ns, update_status};

/// An `exec` pre hook that succeeded: its condition goes into the status the session starts
/// Running with.
pub struct ExecDone(String);

impl ExecDone {
    pub fn set<K: SessionKind>(&self, session: &K, status: &mut K::Status) {
        set_condition(session, status, true, self.0.clone());
    }
}

/// Runs the session's `exec` pre hook, if it has one, before its Job exists:
/// `Continue(Some(_))` when it succeeded, `Continue(None)` without one (or when it succeeded
/// before), `Break` when it failed (the session is then Failed with the hook named, and no Job
/// is made).
///
/// Its success is written at once, before the Job is made, so a Job that cannot be created yet
/// or a controller restart before the session is Running never runs it again (a restart during
/// the command itself may: the hook runs at least once, as Kubernetes' lifecycle hooks do).
pub async fn run_exec<K: SessionKind>(
    session: &K,
    ctx: &Context,
) -> Result<ControlFlow<Action, Option<ExecDone>>> {
    if succeeded_before(session) {
        return Ok(ControlFlow::Continue(None));
    }
    let hook = match session.pre_exec_hook(ctx) {
        Ok(Some(hook)) => hook,
        Ok(None) => return Ok(ControlFlow::Continue(None)),
        Err(e) => {
            let message = format!("cannot resolve the pre hook: {e}");
            let failed = fail_with(ctx, session, "ResolutionFailed", message, |_| {});
            return Ok(ControlFlow::Break(failed.await?));
        }
    };
    match crate::exec_hook::run(ctx, &ns(session), &hook).await {
        Ok(message) => {
            let reason = format!("SuccessfullyExecutedPre{}Hook", K::WORK);
            ctx.event(session, false, &reason, message.clone()).await;
            let done = ExecDone(message);
            update_status(ctx, session, |status| done.set(session, status)).await?;
            Ok(ControlFlow::Continue(Some(done)))
        }
        Err(message) => {
            let reason = format!("FailedToExecutePre{}Hook", K::WORK);
            let why = format!("the {} hook failed: {message}: no data was read", hook.name);
            let edit = |status: &mut K::Status| set_condition(session, status, false, message);
            let failed = fail_with(ctx, session, &reason, why, edit);
            Ok(ControlFlow::Break(failed.await?))
        }
    }
}

/// Whether the session's pre hook succeeded already (only an `exec` hook's success is written
/// before the session ends).
fn succeeded_before<K: SessionKind>(session: &K) -> bool {
    let type_ = condition_type::<K>();
    session
        .conditions()
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Stash's `Pre<Work>HookExecutionSucceeded`.
fn condition_type<K: SessionKind>() -> String {
    format!("Pre{}HookExecutionSucceeded", K::WORK)
}

/// Sets the pre hook's condition in the status the session ends with, when its hook ran.
pub fn record<K: SessionKind>(session: &K, ctx: &Context, status: &mut K::Status) {
    let container = hook_container_name("pre", &K::WORK.to_ascii_lowercase());
    let namespace = ns(session);
    let job = session.job_name();
    let ended = ctx.stores.pods.state().iter().find_map(|p| {
        if p.namespace().as_deref() != Some(namespace.as_str())
            || p.labels().get("job-name") != Some(&job)
        {
            return None;
        }
        let statuses = p.status.as_ref()?.init_container_statuses.as_ref()?;
        let hook = statuses.iter().find(|c| c.name == container)?;
        hook.state
            .as_ref()?
            .terminated
            .as_ref()
            .map(|t| t.exit_code)
    });
    let Some(exit_code) = ended else {
        return;
    };
    let message = if exit_code == 0 {
        "the hook succeeded".to_string()
    } else {
        format!("container {container} exited with code {exit_code}: no data was read")
    };
    set_condition(session, status, exit_code == 0, message);
}

/// Stash's `Pre<Work>HookExecutionSucceeded` condition.
fn set_condition<K: SessionKind>(session: &K, status: &mut K::Status, ok: bool, message: String) {
    let hook = format!("Pre{}Hook", K::WORK);
    let reason = if ok {
        format!("SuccessfullyExecuted{hook}")
    } else {
        format!("FailedToExecute{hook}")
    };
    crate::conditions::set(
        status.conditions_mut(),
        &condition_type::<K>(),
        ok,
        &reason,
        message,
        session.meta().generation,
        &crate::conditions::now(),
    );
}
