//! Stash's condition of a session's pre hook (`PreBackupHookExecutionSucceeded`, ...), written
//! with the session's end: read from the hook's container (`pre-backup-hook`, the Job's first)
//! in the Pod cache, which showed the container's end before the Job's outcome was decided.
//! A session whose pod never ran its hook (no hook, or ended before it) gets none.

use cairn_api::naming::hook_container_name;
use kube::ResourceExt;

use crate::context::Context;
use crate::session::{SessionKind, SessionStatus, ns};

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
    let ok = exit_code == 0;
    let hook = format!("Pre{}Hook", K::WORK);
    let (reason, message) = if ok {
        (
            format!("SuccessfullyExecuted{hook}"),
            "the hook succeeded".to_string(),
        )
    } else {
        (
            format!("FailedToExecute{hook}"),
            format!("container {container} exited with code {exit_code}: no data was read"),
        )
    };
    crate::conditions::set(
        status.conditions_mut(),
        &format!("{hook}ExecutionSucceeded"),
        ok,
        &reason,
        message,
        session.meta().generation,
        &crate::conditions::now(),
    );
}
