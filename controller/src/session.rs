//! A session's life, one for every kind of session (`runtime.md`, "A session's life"):
//! start (prepare, resolve and launch the Job) → follow (deadline, the Job's outcome) → finish
//! (status, condition, event, metrics). What BackupSession and RestoreSession differ in is
//! their [`SessionKind`].

use std::fmt::Debug;
use std::future::Future;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use cairn_api::backup_session::BackupSessionStatus;
use cairn_api::common::{BackupTarget, PersistentVolumeClaimTemplate, SessionPhase};
use cairn_api::hooks::ExecHook;
use cairn_api::resolve::{PostHookRun, ResolveError, SessionEnd};
use cairn_api::restore_session::RestoreSessionStatus;
use cairn_api::result::AgentResult;
use chrono::{DateTime, Utc};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::instrument;

use crate::conditions::{self, now};
use crate::context::Context;
use crate::error::Result;
use crate::job::{
    Launch, RESOLVE_RETRY, delete_job, job_outcome, launch, owner_of, wait_for_resolution,
};
use crate::metrics::SessionLabels;
use crate::observe::JobObservation;
use crate::scheduling::{SLOT_WAIT, to_chrono, to_time};
use crate::status::{self, Manager};

/// How often a Running session is looked at when no watch event arrives.
const RECHECK: Duration = Duration::from_secs(60);

/// What a session's Job is made with besides its resolved template.
#[derive(Default)]
pub struct JobInputs {
    pub interim: Option<PersistentVolumeClaimTemplate>,
    /// A Go duration that sets the session's deadline.
    pub time_out: Option<String>,
}

/// What a Pending session comes to before its Job is resolved.
pub enum Prepared {
    /// Its Job is made with these.
    Run(Box<JobInputs>),
    /// It ends Skipped, for this reason.
    Skip(String),
    /// It ends Failed with this reason and message.
    Fail(&'static str, String),
    /// It looks again in a moment: what decides it may not have reached the caches yet.
    Wait,
}

/// What a kind of session has of its own; the life of [`reconcile`] is the same for all.
pub trait SessionKind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// `Backup` or `Restore`: the prefix of the session's outcome conditions and events
    /// (`BackupSucceeded`, `RestoreFailed`), and, in lower case, what its agent reports.
    const WORK: &'static str;
    /// Whether a failed session is looked at again at once (for [`SessionKind::retry`]).
    const RETRIES: bool = false;
    /// The agent's result of a successful Job.
    type Outcome: Send + Sync;
    /// The kind's status, with what every session's status has (see [`SessionStatus`]).
    type Status: SessionStatus;

    fn status(&self) -> Option<&Self::Status>;
    fn job_name(&self) -> String;
    /// The `invoker` label of the session metrics: bounded by the objects an admin keeps, never
    /// a session's own name (restores are made by the thousand).
    fn invoker_name(&self) -> String;
    /// The Job's template, resolved now from the current objects.
    fn resolve(&self, ctx: &Context) -> Result<JobTemplateSpec, ResolveError>;
    /// Looks up what the Job is made with (the invoker), and whether the session runs at all.
    fn prepare(&self, ctx: &Context) -> impl Future<Output = Result<Prepared>> + Send;
    /// The `timeOut` that sets the session's deadline, if any.
    fn time_out(&self, ctx: &Context) -> Option<String>;
    /// The agent's result, if it is of this kind.
    fn outcome(result: AgentResult) -> Option<Self::Outcome>;
    /// The message of a session that succeeded with `outcome`.
    fn succeeded_message(outcome: &Self::Outcome) -> String;
    /// The status fields of a session that succeeded with `outcome`.
    fn succeeded_status(outcome: &Self::Outcome, status: &mut Self::Status);

    /// What else a successful session updates.
    fn after_success(
        &self,
        _ctx: &Context,
        _outcome: Self::Outcome,
    ) -> impl Future<Output = Result<()>> + Send {
        async { Ok(()) }
    }
    /// Status fields of a session whose Job was just created, besides the common ones.
    fn running_status(&self, _status: &mut Self::Status) {}
    /// What the session's configuration backs up, for a session that reports its target (a
    /// backup: Stash's `status.targets`).
    fn target(&self, _ctx: &Context) -> Option<BackupTarget> {
        None
    }
    /// Status fields of a session that ended in `phase`, besides the common ones (`target`:
    /// [`SessionKind::target`]).
    fn finished_status(
        &self,
        _target: Option<&BackupTarget>,
        _phase: SessionPhase,
        _duration: &str,
        _message: &str,
        _status: &mut Self::Status,
    ) {
    }
    /// Status fields of a session that failed, besides the common ones.
    fn failed_status(&self, _ctx: &Context, _status: &mut Self::Status) {}
    /// What becomes of a Failed session.
    fn retry(&self, _ctx: &Context) -> impl Future<Output = Result<Action>> + Send {
        async { Ok(Action::await_change()) }
    }
    /// Whether a retry of this session is still to come, were it to fail.
    fn retry_left(&self, _ctx: &Context) -> bool {
        false
    }
    /// How the session's post hook runs after it ended as `ended`, when it has one and its
    /// `executionPolicy` fires.
    fn post_hook(
        &self,
        ctx: &Context,
        ended: &SessionEnd<'_>,
    ) -> Result<Option<PostHookRun>, ResolveError>;
    /// The `exec` pre hook the controller runs before it creates the Job, if any.
    fn pre_exec_hook(&self, ctx: &Context) -> Result<Option<ExecHook>, ResolveError>;

    fn phase(&self) -> Option<SessionPhase> {
        self.status()?.phase()
    }
    fn conditions(&self) -> Vec<Condition> {
        self.status()
            .map(|s| s.conditions().to_vec())
            .unwrap_or_default()
    }
    /// `status.sessionDeadline`.
    fn deadline(&self) -> Option<DateTime<Utc>> {
        to_chrono(&self.status()?.deadline()?.0)
    }
}

/// What every kind of session's status has, and its life reads and writes.
pub trait SessionStatus: Clone + Default + Serialize + Send + Sync {
    fn phase(&self) -> Option<SessionPhase>;
    fn conditions(&self) -> &[Condition];
    fn deadline(&self) -> Option<&Time>;
    fn phase_mut(&mut self) -> &mut Option<SessionPhase>;
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
    fn deadline_mut(&mut self) -> &mut Option<Time>;
    fn duration_mut(&mut self) -> &mut Option<String>;
    fn duration(&self) -> Option<&str>;
}

/// The statuses of the session kinds name these fields alike.
macro_rules! session_status {
    ($($status:ty),*) => {$(
        impl SessionStatus for $status {
            fn phase(&self) -> Option<SessionPhase> {
                self.phase
            }
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn deadline(&self) -> Option<&Time> {
                self.session_deadline.as_ref()
            }
            fn phase_mut(&mut self) -> &mut Option<SessionPhase> {
                &mut self.phase
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
            fn deadline_mut(&mut self) -> &mut Option<Time> {
                &mut self.session_deadline
            }
            fn duration_mut(&mut self) -> &mut Option<String> {
                &mut self.session_duration
            }
            fn duration(&self) -> Option<&str> {
                self.session_duration.as_deref()
            }
        }
    )*};
}
session_status!(BackupSessionStatus, RestoreSessionStatus);

/// Reconciles a session of any kind through its life.
#[instrument(skip_all, fields(
    kind = %K::kind(&()),
    namespace = %session.namespace().unwrap_or_default(),
    name = %session.name_any(),
))]
pub async fn reconcile<K: SessionKind>(session: Arc<K>, ctx: Arc<Context>) -> Result<Action> {
    match session.phase() {
        None | Some(SessionPhase::Pending) => start(session.as_ref(), &ctx).await,
        Some(SessionPhase::Running) => follow(session.as_ref(), &ctx).await,
        Some(SessionPhase::Succeeded) => Ok(crate::post_hook::run(session.as_ref(), &ctx)
            .await?
            .unwrap_or_else(Action::await_change)),
        Some(SessionPhase::Failed) => {
            let hook = crate::post_hook::run(session.as_ref(), &ctx).await?;
            if crate::post_hook::failed_the_session(session.as_ref()) {
                return Ok(hook.unwrap_or_else(Action::await_change));
            }
            let retry = session.retry(&ctx).await?;
            Ok(hook.unwrap_or(retry))
        }
        Some(_) => Ok(Action::await_change()),
    }
}

/// The session's namespace.
pub fn ns(session: &impl Resource) -> String {
    session.meta().namespace.clone().unwrap_or_default()
}

/// Writes the session's status: its current one with `edit` made (the whole status, so only if
/// the session has not changed since it was read).
pub async fn update_status<K: SessionKind>(
    ctx: &Context,
    session: &K,
    edit: impl FnOnce(&mut K::Status),
) -> Result<()> {
    let mut status = session.status().cloned().unwrap_or_default();
    edit(&mut status);
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &ns(session));
    status::apply(&api, session, Manager::Sessions, true, &status).await
}

/// `<Work><Phase>`: the condition type and event reason of a session that ended in `phase`.
pub fn outcome_name<K: SessionKind>(phase: SessionPhase) -> String {
    let ended = match phase {
        SessionPhase::Succeeded => "Succeeded",
        SessionPhase::Skipped => "Skipped",
        _ => "Failed",
    };
    format!("{}{ended}", K::WORK)
}

/// Ends the session in `phase`: its status (with `edit` made), the outcome condition and
/// event, and the session metrics.
pub async fn finish<K: SessionKind>(
    ctx: &Context,
    session: &K,
    phase: SessionPhase,
    reason: &str,
    message: String,
    edit: impl FnOnce(&mut K::Status),
) -> Result<()> {
    let ok = phase == SessionPhase::Succeeded;
    let outcome = outcome_name::<K>(phase);
    let generation = session.meta().generation;
    let started = session.meta().creation_timestamp.as_ref();
    let seconds = started
        .and_then(|c| to_chrono(&c.0))
        .map(|s| (Utc::now() - s).num_seconds())
        .unwrap_or(0);
    let duration = cairn_api::duration::format_seconds(seconds);
    let target = session.target(ctx);
    let ended = SessionEnd {
        phase,
        duration: &duration,
        error: if ok { "" } else { &message },
        retry_left: session.retry_left(ctx),
    };
    update_status(ctx, session, |status| {
        crate::pre_hook::record(session, ctx, status);
        crate::post_hook::mark_due(session, ctx, &ended, status);
        *status.phase_mut() = Some(phase);
        let conditions = status.conditions_mut();
        conditions::set(
            conditions,
            &outcome,
            ok,
            reason,
            message.clone(),
            generation,
            &now(),
        );
        *status.duration_mut() = Some(duration.clone());
        session.finished_status(target.as_ref(), phase, &duration, &message, status);
        edit(status);
    })
    .await?;
    ctx.event(session, !ok, &outcome, message).await;
    let labels = SessionLabels {
        namespace: ns(session),
        invoker: session.invoker_name(),
        kind: K::kind(&()).into(),
        phase: phase.to_string(),
    };
    ctx.metrics.sessions.get_or_create(&labels).inc();
    let histogram = ctx.metrics.session_duration.get_or_create(&labels);
    histogram.observe(seconds as f64);
    Ok(())
}

/// Ends the session Failed.
pub async fn fail<K: SessionKind>(
    ctx: &Context,
    session: &K,
    reason: &str,
    message: String,
) -> Result<Action> {
    fail_with(ctx, session, reason, message, |_| {}).await
}

/// Ends the session Failed, with `edit` made to its status.
pub async fn fail_with<K: SessionKind>(
    ctx: &Context,
    session: &K,
    reason: &str,
    message: String,
    edit: impl FnOnce(&mut K::Status),
) -> Result<Action> {
    let edit = |status: &mut K::Status| {
        session.failed_status(ctx, status);
        edit(status);
    };
    finish(ctx, session, SessionPhase::Failed, reason, message, edit).await?;
    Ok(if K::RETRIES {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::await_change()
    })
}

/// Pending → prepare → resolve the Job → launch it → Running.
async fn start<K: SessionKind>(session: &K, ctx: &Context) -> Result<Action> {
    if ctx.slot_in_progress(Utc::now()) {
        // Starting the Job can wait a moment for the sessions of a slot that just came.
        return Ok(Action::requeue(SLOT_WAIT));
    }
    let inputs = match session.prepare(ctx).await? {
        Prepared::Run(inputs) => inputs,
        Prepared::Fail(reason, message) => return fail(ctx, session, reason, message).await,
        Prepared::Skip(why) => {
            finish(ctx, session, SessionPhase::Skipped, "Skipped", why, |_| {}).await?;
            return Ok(Action::await_change());
        }
        Prepared::Wait => return Ok(Action::requeue(RESOLVE_RETRY)),
    };
    let template = match resolve(session, ctx).await? {
        ControlFlow::Continue(template) => template,
        ControlFlow::Break(action) => return Ok(action),
    };
    let pre_hook = match crate::pre_hook::run_exec(session, ctx).await? {
        ControlFlow::Continue(done) => done,
        ControlFlow::Break(action) => return Ok(action),
    };
    let name = session.name_any();
    let launched = Launch {
        namespace: &ns(session),
        session: &name,
        owner: owner_of(session),
        interim: inputs.interim.as_ref(),
        job_name: &session.job_name(),
        template: &template,
        time_out: inputs.time_out.as_deref(),
        default_deadline: ctx.limits.deadline,
        holders: crate::job::lock_holders(ctx),
    };
    let timeout = match launch(&ctx.client, launched).await {
        Ok(timeout) => timeout,
        Err(e) => {
            // Retried with backoff; the session stays Pending, so say why where users look.
            let why = format!("Job {} not created yet: {e}", session.job_name());
            ctx.event(session, true, "JobCreateFailed", why).await;
            return Err(e);
        }
    };
    let generation = session.meta().generation;
    update_status(ctx, session, |status| {
        *status.phase_mut() = Some(SessionPhase::Running);
        let message = format!("Job {} created", session.job_name());
        let conditions = status.conditions_mut();
        conditions::set(
            conditions,
            "JobCreated",
            true,
            "JobCreated",
            message,
            generation,
            &now(),
        );
        *status.deadline_mut() = Utc::now().checked_add_signed(timeout).and_then(to_time);
        if let Some(done) = &pre_hook {
            done.set(session, status);
        }
        session.running_status(status);
    })
    .await?;
    Ok(Action::requeue(recheck(ctx, timeout.to_std().ok())))
}

/// The Job's template, or what to do instead: wait a little for an object that may yet come,
/// or fail the session.
///
/// The Job is resolved now from the current objects, never taken from the session: a stored
/// `spec.jobTemplate` is the webhook's preview, and a session admitted without the webhook may
/// carry anything there.
async fn resolve<K: SessionKind>(
    session: &K,
    ctx: &Context,
) -> Result<ControlFlow<Action, JobTemplateSpec>> {
    match session.resolve(ctx) {
        Ok(template) => Ok(ControlFlow::Continue(template)),
        Err(e) if wait_for_resolution(&e, session.meta().creation_timestamp.as_ref()) => {
            Ok(ControlFlow::Break(Action::requeue(RESOLVE_RETRY)))
        }
        Err(e) => {
            let message = format!("cannot resolve the Job: {e}");
            Ok(ControlFlow::Break(
                fail(ctx, session, "ResolutionFailed", message).await?,
            ))
        }
    }
}

/// Running → the deadline, or the Job's outcome.
async fn follow<K: SessionKind>(session: &K, ctx: &Context) -> Result<Action> {
    let namespace = ns(session);
    let job_name = session.job_name();
    let deadline = session.deadline();
    if deadline.is_some_and(|d| Utc::now() >= d) {
        delete_job(&ctx.client, &namespace, &job_name).await?;
        let message = deadline_message(session.time_out(ctx), ctx.limits.deadline);
        return fail(ctx, session, "DeadlineExceeded", message).await;
    }
    let uid = session.meta().uid.clone().unwrap_or_default();
    match job_outcome(ctx, &namespace, &job_name, &uid).await? {
        JobObservation::Running => {
            let until_deadline = deadline.and_then(|d| (d - Utc::now()).to_std().ok());
            Ok(Action::requeue(recheck(ctx, until_deadline)))
        }
        JobObservation::Missing => {
            let message = format!("Job {job_name} was deleted before it finished");
            fail(ctx, session, "JobDeleted", message).await
        }
        JobObservation::Failed { reason, message } => fail(ctx, session, &reason, message).await,
        JobObservation::Succeeded { result } => succeed(session, ctx, result).await,
    }
}

/// When a Running session is looked at next: at its deadline, within the start bound (a Pod
/// that stays Pending changes nothing a watch would see), and at least every [`RECHECK`].
fn recheck(ctx: &Context, until_deadline: Option<Duration>) -> Duration {
    let soonest = RECHECK.min(ctx.limits.start + Duration::from_secs(1));
    until_deadline.map_or(soonest, |d| d.min(soonest))
}

/// Why a session that ran past its deadline failed: its `timeOut`, or the install's default.
fn deadline_message(time_out: Option<String>, default: Duration) -> String {
    match time_out {
        Some(t) => format!("the session ran past its timeOut ({t}); its Job was deleted"),
        None => format!(
            "the session ran past the default deadline of {} (it sets no timeOut; set one for a \
             longer deadline); its Job was deleted",
            cairn_api::duration::format_seconds(default.as_secs().try_into().unwrap_or(i64::MAX))
        ),
    }
}

/// A succeeded Job: the session succeeds with the agent's result, or fails without one.
async fn succeed<K: SessionKind>(
    session: &K,
    ctx: &Context,
    result: Option<AgentResult>,
) -> Result<Action> {
    let Some(outcome) = result.and_then(K::outcome) else {
        let message = format!(
            "the Job succeeded but the agent left no {} result in its termination message",
            K::WORK.to_lowercase()
        );
        return fail(ctx, session, "NoResult", message).await;
    };
    let message = K::succeeded_message(&outcome);
    let reason = outcome_name::<K>(SessionPhase::Succeeded);
    let edit = |status: &mut K::Status| K::succeeded_status(&outcome, status);
    finish(
        ctx,
        session,
        SessionPhase::Succeeded,
        &reason,
        message,
        edit,
    )
    .await?;
    session.after_success(ctx, outcome).await?;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_api::{BackupSession, RestoreSession};

    #[test]
    fn outcomes_are_named_by_the_work_and_the_phase() {
        let backup = |p| outcome_name::<BackupSession>(p);
        assert_eq!(backup(SessionPhase::Succeeded), "BackupSucceeded");
        assert_eq!(backup(SessionPhase::Skipped), "BackupSkipped");
        assert_eq!(backup(SessionPhase::Failed), "BackupFailed");
        let restore = |p| outcome_name::<RestoreSession>(p);
        assert_eq!(restore(SessionPhase::Succeeded), "RestoreSucceeded");
        assert_eq!(restore(SessionPhase::Failed), "RestoreFailed");
    }

    #[test]
    fn a_restore_reports_its_one_host() {
        let restore = RestoreSession::new("r", Default::default());
        let mut failed = RestoreSessionStatus::default();
        restore.finished_status(None, SessionPhase::Failed, "5s", "it broke", &mut failed);
        assert_eq!(failed.total_hosts, Some(1));
        assert_eq!(failed.stats[0].hostname, "host-0");
        assert_eq!(failed.stats[0].error.as_deref(), Some("it broke"));
        let mut ok = RestoreSessionStatus::default();
        restore.finished_status(None, SessionPhase::Succeeded, "5s", "done", &mut ok);
        assert_eq!(ok.stats[0].error, None);
        let mut running = RestoreSessionStatus::default();
        restore.running_status(&mut running);
        assert_eq!(running.total_hosts, Some(1));
    }
}
