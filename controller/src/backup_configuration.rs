//! Reconciling a BackupConfiguration: create the session of a due slot → dereference what it
//! names → validate → decide the phase → the schedule's status → clean history → write the
//! status (when it changed) → requeue at the next slot.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::backup_configuration::{BackupConfigurationStatus, ConfigurationPhase};
use cairn_api::backup_session::{BackupSessionSpec, Invoker};
use cairn_api::dereference::{Dereferenced, References};
use cairn_api::naming::{
    LABEL_INVOKER_KIND, LABEL_INVOKER_NAME, label_value, session_name_for_slot,
};
use cairn_api::schedule::Schedule;
use cairn_api::validation::validate_backup_configuration;
use cairn_api::{BackupConfiguration, BackupSession, Repository};
use chrono::{DateTime, Utc};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::instrument;

use crate::backup_session::completed_newest_first;
use crate::conditions::Writer;
use crate::context::Context;
use crate::error::Result;
use crate::metrics::ConfigLabels;
use crate::scheduling::{Decision, SLOT_WAIT, decide, to_time};
use crate::status::Manager;

/// Longest wait between two looks at a configuration (a safety net; watches drive the rest).
const MAX_WAIT: Duration = Duration::from_secs(300);

/// Schedule → dereference → validate → decide the phase → the schedule's status → history →
/// write the status.
#[instrument(skip_all, fields(
    namespace = %config.namespace().unwrap_or_default(),
    name = %config.name_any(),
))]
pub async fn reconcile(config: Arc<BackupConfiguration>, ctx: Arc<Context>) -> Result<Action> {
    let decision = schedule(&config, &ctx).await?;
    if decision.as_ref().is_ok_and(|d| d.create.is_some()) {
        // The new session's watch event brings the rest (status, history) moments later;
        // returning now lets the other configurations due at this slot go first.
        return Ok(Action::requeue(Duration::from_secs(1)));
    }
    if ctx.slot_in_progress(Utc::now()) {
        return Ok(Action::requeue(SLOT_WAIT));
    }
    let current = owned(config.status.as_ref());
    let mut conds = Writer::new(current.conditions.clone(), config.metadata.generation);
    let found = dereference(&config, &ctx, &mut conds).await?;
    let valid = validate(&config, &ctx, &mut conds);
    let mut status = BackupConfigurationStatus {
        observed_generation: config.metadata.generation,
        phase: Some(decide_phase(valid, found)),
        ..current.clone()
    };
    let requeue = schedule_status(&config, &ctx, &decision, &mut conds, &mut status);
    status.conditions = conds.into_conditions();
    clean_history(&config, &ctx).await?;
    if status != current {
        let api: Api<BackupConfiguration> =
            Api::namespaced(ctx.client.clone(), &config.namespace().unwrap_or_default());
        crate::status::apply(&api, config.as_ref(), Manager::Schedule, false, &status).await?;
    }
    Ok(Action::requeue(requeue))
}

/// Schedule first: at a slot every due configuration reconciles at once, and the session's
/// creation is what is measured late when it waits behind the lookups below. (A session of
/// a configuration that is not Ready is created too, and skipped with the reason.)
async fn schedule(config: &BackupConfiguration, ctx: &Context) -> Result<Result<Decision, String>> {
    let uid = config.uid().unwrap_or_default();
    let decision = decide(config, ctx.slot_dealt_with(&uid), Utc::now());
    let Ok(d) = &decision else {
        return Ok(decision);
    };
    if let Some(slot) = d.create {
        create_session(config, ctx, slot).await?;
    }
    if d.skipped > 0 {
        count_missed(config, ctx, d.skipped).await;
    }
    if let Some(last) = d.last_schedule {
        ctx.remember_slot(&uid, last);
    }
    let paused = config.spec.paused.unwrap_or(false);
    ctx.expect_slot(&uid, d.next.filter(|_| !paused));
    Ok(decision)
}

/// Slots missed beyond `startingDeadlineSeconds`: a metric and an event.
async fn count_missed(config: &BackupConfiguration, ctx: &Context, skipped: u64) {
    let labels = ConfigLabels {
        namespace: config.namespace().unwrap_or_default(),
        configuration: config.name_any(),
    };
    ctx.metrics
        .missed_slots
        .get_or_create(&labels)
        .inc_by(skipped);
    let message = format!(
        "{skipped} schedule slot(s) were missed by more than startingDeadlineSeconds and skipped"
    );
    ctx.event(config, true, "SlotsMissed", message).await;
}

/// Looks up what the configuration names, each with its `*Found` condition: whether all of it
/// was found.
async fn dereference(
    config: &BackupConfiguration,
    ctx: &Context,
    conds: &mut Writer,
) -> Result<bool> {
    // The same pure step resolution takes: the conditions say what it found.
    let found = Dereferenced::of(
        &References::from(config),
        &ctx.stores,
        Some(&ctx.install.catalog),
    );
    let (repo_ns, repo_name) = &found.repository_key;
    let what = format!("Repository {repo_ns}/{repo_name}");
    conds.found("RepositoryFound", found.repository.is_some(), what);
    backend_secret(config, found.repository.as_deref(), ctx, conds);
    let target = &config.spec.target.r#ref;
    let namespace = config.namespace().unwrap_or_default();
    let what = format!("{} {namespace}/{}", target.kind, target.name);
    conds.found("TargetFound", found.app_binding.is_some(), what);
    let task_name = found.task_name.clone().unwrap_or_default();
    conds.found(
        "TaskFound",
        found.task.is_some(),
        format!("Task {task_name}"),
    );
    Ok(found.repository.is_some() && found.app_binding.is_some() && found.task.is_some())
}

/// The `BackendSecretFound` condition, from what the configuration's own sessions met: the
/// controller reads no Secret (not even its metadata), so the kubelet is the witness. A pod of
/// the newest session that started a container had the storage Secret (its `envFrom`); one
/// waiting in `CreateContainerConfigError` for `secret "<name>"` did not; before any session ran,
/// `Unknown`. Informational: it does not hold the configuration back from Ready (which would
/// stop the sessions that bring it up to date).
fn backend_secret(
    config: &BackupConfiguration,
    repo: Option<&Repository>,
    ctx: &Context,
    conds: &mut Writer,
) {
    const TYPE: &str = "BackendSecretFound";
    let Some(repo) = repo else {
        let message = "the Repository is missing";
        conds.set(TYPE, false, "RepositoryNotFound", message);
        return;
    };
    let Some(backend) = repo.restic_backend() else {
        let message =
            "driver Native: the server reads its repository credentials from its keystore";
        conds.set(TYPE, true, "NotNeeded", message);
        return;
    };
    let secret = &backend.storage_secret_name;
    let pods = session_pods(config, ctx);
    let newest = pods
        .iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0));
    let (ok, reason, message) = match newest.map(|pod| secret_seen(pod, secret)) {
        Some(Some(true)) => (
            Some(true),
            "SessionStarted",
            format!("storage Secret {secret} was there when a session's pod started"),
        ),
        Some(Some(false)) => (
            Some(false),
            "CreateContainerConfigError",
            format!("a session's pod waits for storage Secret {secret}: not found"),
        ),
        _ => (
            None,
            "NoSessionYet",
            format!(
                "the controller reads no Secret; a session's pod tells whether storage Secret {secret} exists"
            ),
        ),
    };
    conds.set_known(TYPE, ok, reason, message);
}

/// The Pods of this configuration's sessions that count: labelled by cairn for it, and
/// controlled by a Job cairn made (one in the store of cairn's Jobs, same uid).
fn session_pods(config: &BackupConfiguration, ctx: &Context) -> Vec<Arc<Pod>> {
    let namespace = config.namespace().unwrap_or_default();
    let name = label_value(&config.name_any());
    let jobs = ctx.stores.jobs.state();
    ctx.stores
        .pods
        .state()
        .into_iter()
        .filter(|pod| {
            let labels = pod.labels();
            pod.namespace().as_deref() == Some(namespace.as_str())
                && labels.get(LABEL_INVOKER_KIND).map(String::as_str)
                    == Some(BackupConfiguration::kind(&()).as_ref())
                && labels.get(LABEL_INVOKER_NAME) == Some(&name)
                && jobs.iter().any(|job| controls(job, pod))
        })
        .collect()
}

fn controls(job: &Job, pod: &Pod) -> bool {
    let uid = job.metadata.uid.as_deref().unwrap_or_default();
    job.metadata.namespace == pod.metadata.namespace
        && !uid.is_empty()
        && pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.controller == Some(true) && o.kind == "Job" && o.uid == uid)
}

/// What a pod tells of the storage Secret `secret`: `Some(true)` once a container started (it
/// had its `envFrom`), `Some(false)` while one waits in `CreateContainerConfigError` naming it,
/// `None` otherwise.
fn secret_seen(pod: &Pod, secret: &str) -> Option<bool> {
    let status = pod.status.as_ref()?;
    let statuses = status
        .init_container_statuses
        .iter()
        .chain(status.container_statuses.iter())
        .flatten()
        // A hook's container starts without the Secret: it tells nothing of it.
        .filter(|s| !cairn_api::naming::is_hook_container(&s.name));
    let named = format!("secret {secret:?}");
    let mut seen = None;
    for s in statuses {
        let state = s.state.as_ref();
        if state.is_some_and(|st| st.running.is_some() || st.terminated.is_some()) {
            return Some(true);
        }
        let waiting = state.and_then(|st| st.waiting.as_ref());
        if waiting.is_some_and(|w| {
            w.reason.as_deref() == Some("CreateContainerConfigError")
                && w.message.as_deref().is_some_and(|m| m.contains(&named))
        }) {
            seen = Some(false);
        }
    }
    seen
}

/// The same rules as admission, for objects admitted before a rule existed: whether they
/// pass, with the `ValidationPassed` condition.
fn validate(config: &BackupConfiguration, ctx: &Context, conds: &mut Writer) -> bool {
    let verdict = validate_backup_configuration(config, None, &ctx.stores, &ctx.install.policy);
    if verdict.allowed() {
        let message = "the configuration passed validation";
        conds.set("ValidationPassed", true, "Valid", message);
    } else {
        conds.set(
            "ValidationPassed",
            false,
            "Invalid",
            verdict.error_message(),
        );
    }
    verdict.allowed()
}

fn decide_phase(valid: bool, found: bool) -> ConfigurationPhase {
    match (valid, found) {
        (false, _) => ConfigurationPhase::Invalid,
        (true, true) => ConfigurationPhase::Ready,
        (true, false) => ConfigurationPhase::NotReady,
    }
}

/// The schedule's status fields and `Scheduled` condition; returns when to look again.
fn schedule_status(
    config: &BackupConfiguration,
    ctx: &Context,
    decision: &Result<Decision, String>,
    conds: &mut Writer,
    status: &mut BackupConfigurationStatus,
) -> Duration {
    let d = match decision {
        Ok(d) => d,
        Err(e) => {
            conds.set("Scheduled", false, "InvalidSchedule", e.as_str());
            return MAX_WAIT;
        }
    };
    // Every slot dealt with, by this reconcile or an earlier one whose status write this
    // object may not show yet.
    if let Some(last) = ctx.slot_dealt_with(&config.uid().unwrap_or_default()) {
        status.last_schedule_time = to_time(last);
    }
    status.next_schedule_time = d.next.and_then(to_time);
    let paused = config.spec.paused.unwrap_or(false);
    let message = match (paused, d.next) {
        (true, _) => "paused: no new sessions".to_string(),
        (false, Some(n)) => format!("next session at {}", n.to_rfc3339()),
        (false, None) => "the schedule has no further slot".to_string(),
    };
    let reason = if paused { "Paused" } else { "Scheduled" };
    conds.set("Scheduled", !paused, reason, message);
    export_interval(config, ctx, if paused { None } else { d.next });
    d.next.map_or(MAX_WAIT, |next| {
        (next - Utc::now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_WAIT)
    })
}

/// The seconds between the slot `next` and the one after it, as a metric (removed when there is
/// none: paused, or a schedule without further slots).
fn export_interval(config: &BackupConfiguration, ctx: &Context, next: Option<DateTime<Utc>>) {
    let labels = ConfigLabels {
        namespace: config.namespace().unwrap_or_default(),
        configuration: config.name_any(),
    };
    let spec = &config.spec;
    let interval = next.and_then(|next| {
        let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref()).ok()?;
        Some(schedule.interval_at(next)?.num_milliseconds() as f64 / 1000.0)
    });
    // A counter that exists from zero: `increase()` sees the first missed slot.
    drop(ctx.metrics.missed_slots.get_or_create(&labels));
    match interval {
        Some(seconds) => {
            ctx.metrics
                .schedule_interval
                .get_or_create(&labels)
                .set(seconds);
        }
        None => {
            ctx.metrics.schedule_interval.remove(&labels);
        }
    }
}

/// The fields of a configuration's status that its own reconcile writes (the others are the
/// sessions', see [`crate::status`]). An unchanged set is not written; if this object is older
/// than our last write, that write's watch event brings another reconcile, which compares with
/// it.
fn owned(status: Option<&BackupConfigurationStatus>) -> BackupConfigurationStatus {
    let s = status.cloned().unwrap_or_default();
    BackupConfigurationStatus {
        observed_generation: s.observed_generation,
        conditions: s.conditions,
        phase: s.phase,
        last_schedule_time: s.last_schedule_time,
        next_schedule_time: s.next_schedule_time,
        last_successful_session: None,
    }
}

/// Creates the session of `slot`. Its name is the slot's, so a slot already done (by us
/// before a restart, or by another leader) answers 409 and nothing runs twice.
async fn create_session(
    config: &BackupConfiguration,
    ctx: &Context,
    slot: chrono::DateTime<Utc>,
) -> Result<()> {
    let name = session_name_for_slot(&config.name_any(), slot.timestamp());
    let session = BackupSession {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: config.namespace(),
            labels: Some(
                [
                    (
                        LABEL_INVOKER_KIND.to_string(),
                        "BackupConfiguration".to_string(),
                    ),
                    (
                        LABEL_INVOKER_NAME.to_string(),
                        label_value(&config.name_any()),
                    ),
                ]
                .into(),
            ),
            annotations: Some([("cairn.dev/slot".to_string(), slot.to_rfc3339())].into()),
            owner_references: config.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: BackupSessionSpec {
            invoker: Invoker {
                api_group: Some(cairn_api::common::GROUP.into()),
                kind: "BackupConfiguration".into(),
                name: config.name_any(),
            },
            // Set here too, so retries work even without the webhook in front.
            retry_left: Some(
                config
                    .spec
                    .retry_config
                    .as_ref()
                    .and_then(|r| r.max_retry)
                    .unwrap_or(cairn_api::defaults::DEFAULT_MAX_RETRY),
            ),
            job_template: None,
        },
        status: None,
    };
    let api: Api<BackupSession> =
        Api::namespaced(ctx.client.clone(), &config.namespace().unwrap_or_default());
    match api.create(&PostParams::default(), &session).await {
        Ok(_) => {
            let lag = (Utc::now() - slot).num_milliseconds().max(0) as f64 / 1000.0;
            ctx.metrics.scheduling_lag.observe(lag);
            tracing::info!(configuration = %config.name_any(), session = %name, lag_seconds = lag, "session created");
            Ok(())
        }
        Err(kube::Error::Api(e)) if e.code == 409 => {
            let existing = api.get_opt(&name).await?;
            if !existing.is_some_and(|s| made_for_slot(&s, config, slot)) {
                let message = format!(
                    "a BackupSession named {name} exists that cairn did not make for this \
                     configuration's slot at {slot}: the slot did not run; delete that session \
                     (or give manual sessions other names)"
                );
                ctx.event(config, true, "SlotTaken", message).await;
            }
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Whether `session` is the one cairn made for `config`'s `slot`: its invoker, its controller
/// (the configuration, by uid) and its slot annotation. A 409 from another object of that name
/// (a user's manual session) must not count as the slot done without a word.
fn made_for_slot(
    session: &BackupSession,
    config: &BackupConfiguration,
    slot: chrono::DateTime<Utc>,
) -> bool {
    let owned = session.owner_references().iter().any(|o| {
        o.controller == Some(true) && Some(o.uid.as_str()) == config.metadata.uid.as_deref()
    });
    let same_slot = session
        .annotations()
        .get("cairn.dev/slot")
        .and_then(|a| chrono::DateTime::parse_from_rfc3339(a).ok())
        .is_some_and(|t| t.timestamp() == slot.timestamp());
    owned
        && same_slot
        && session.spec.invoker.kind == "BackupConfiguration"
        && session.spec.invoker.name == config.name_any()
}

/// Keeps `backupHistoryLimit` completed sessions (at least the newest), deleting older ones.
async fn clean_history(config: &BackupConfiguration, ctx: &Context) -> Result<()> {
    let keep = config.spec.backup_history_limit.unwrap_or(1).max(1) as usize;
    let ns = config.namespace();
    let mine: Vec<_> = ctx
        .stores
        .sessions
        .state()
        .into_iter()
        .filter(|s| s.namespace() == ns && s.spec.invoker.name == config.name_any())
        .collect();
    let api: Api<BackupSession> =
        Api::namespaced(ctx.client.clone(), ns.as_deref().unwrap_or_default());
    for old in completed_newest_first(&mine).into_iter().skip(keep) {
        match api
            .delete(&old.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => tracing::info!(session = %old.name_any(), "deleted by history limit"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(statuses: serde_json::Value) -> Pod {
        serde_json::from_value(
            json!({"metadata": {"name": "p"}, "status": {"containerStatuses": statuses}}),
        )
        .expect("a Pod")
    }

    #[test]
    fn a_pod_tells_of_the_storage_secret_only_by_what_its_containers_met() {
        let waiting = |reason: &str, message: &str| {
            pod(
                json!([{"name": "c", "image": "i", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": reason, "message": message}}}]),
            )
        };
        let missing = waiting(
            "CreateContainerConfigError",
            r#"secret "s3-creds" not found"#,
        );
        assert_eq!(secret_seen(&missing, "s3-creds"), Some(false));
        // Another Secret missing, or another reason: nothing said of this one.
        assert_eq!(secret_seen(&missing, "other"), None);
        let pulling = waiting("ImagePullBackOff", r#"secret "s3-creds" not found"#);
        assert_eq!(secret_seen(&pulling, "s3-creds"), None);
        let started = pod(
            json!([{"name": "c", "image": "i", "imageID": "", "ready": false,
            "restartCount": 0, "state": {"terminated": {"exitCode": 1}}}]),
        );
        assert_eq!(secret_seen(&started, "s3-creds"), Some(true));
        assert_eq!(secret_seen(&pod(json!([])), "s3-creds"), None);
    }

    fn status() -> BackupConfigurationStatus {
        serde_json::from_value(json!({
            "observedGeneration": 2, "phase": "Ready",
            "nextScheduleTime": "2026-11-25T22:00:00Z",
            "lastSuccessfulSession": "nightly-1",
            "conditions": [{"type": "TaskFound", "status": "True", "reason": "Found",
                "message": "Task t found", "lastTransitionTime": "2026-11-25T21:00:00Z"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_reconcile_owns_all_but_what_sessions_write() {
        let current = status();
        let mine = owned(Some(&current));
        assert_eq!(mine.last_successful_session, None);
        assert_eq!(
            BackupConfigurationStatus {
                last_successful_session: current.last_successful_session.clone(),
                ..mine
            },
            current,
            "a field of the reconcile's own was left out"
        );
        assert_eq!(owned(None), BackupConfigurationStatus::default());
    }
}
