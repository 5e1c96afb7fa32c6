//! Reconciling a BackupConfiguration: create the session of a due slot → dereference what it
//! names → validate → status conditions and phase → clean history → requeue at the next slot.

use std::sync::Arc;
use std::time::Duration;

use cairn_api::backup_configuration::{BackupConfigurationStatus, ConfigurationPhase};
use cairn_api::backup_session::{BackupSessionSpec, Invoker};
use cairn_api::defaults::{Direction, default_task_name};
use cairn_api::naming::{
    LABEL_INVOKER_KIND, LABEL_INVOKER_NAME, label_value, session_name_for_slot,
};
use cairn_api::validation::{Lookups, validate_backup_configuration};
use cairn_api::{BackupConfiguration, BackupSession};
use chrono::Utc;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use serde_json::{Value, json};

use crate::backup_session::completed_newest_first;
use crate::conditions::{self, now};
use crate::context::{Context, MANAGER};
use crate::error::{Error, Result};
use crate::metrics::ConfigLabels;
use crate::scheduling::{SLOT_WAIT, decide, to_time};

/// Longest wait between two looks at a configuration (a safety net; watches drive the rest).
const MAX_WAIT: Duration = Duration::from_secs(300);

pub async fn reconcile(config: Arc<BackupConfiguration>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = config.namespace().unwrap_or_default();
    let name = config.name_any();
    let generation = config.metadata.generation;
    let t = now();
    let mut status = config.status.clone().unwrap_or_default();
    let conds = &mut status.conditions;

    // Schedule first: at a slot every due configuration reconciles at once, and the session's
    // creation is what is measured late when it waits behind the lookups below. (A session of
    // a configuration that is not Ready is created too, and skipped with the reason.)
    let uid = config.uid().unwrap_or_default();
    let decision = decide(&config, ctx.slot_dealt_with(&uid), Utc::now()).map_err(Error::Invalid);
    if let Ok(d) = &decision {
        if let Some(slot) = d.create {
            create_session(&config, &ctx, slot).await?;
        }
        if d.skipped > 0 {
            let labels = ConfigLabels {
                namespace: namespace.clone(),
                configuration: name.clone(),
            };
            ctx.metrics
                .missed_slots
                .get_or_create(&labels)
                .inc_by(d.skipped);
            ctx.event(config.as_ref(), true, "SlotsMissed", format!(
                "{} schedule slot(s) were missed by more than startingDeadlineSeconds and skipped", d.skipped
            )).await;
        }
        if let Some(last) = d.last_schedule {
            ctx.remember_slot(&uid, last);
        }
        let paused = config.spec.paused.unwrap_or(false);
        ctx.expect_slot(&uid, d.next.filter(|_| !paused));
        if d.create.is_some() {
            // The new session's watch event brings the rest (status, history) moments later;
            // returning now lets the other configurations due at this slot go first.
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
    }
    if ctx.slot_in_progress(Utc::now()) {
        return Ok(Action::requeue(SLOT_WAIT));
    }

    // Dereference.
    let repo_ns = config
        .spec
        .repository
        .namespace
        .clone()
        .unwrap_or_else(|| namespace.clone());
    let repo = ctx
        .stores
        .repository(&repo_ns, &config.spec.repository.name);
    conditions::set(
        conds,
        "RepositoryFound",
        repo.is_some(),
        if repo.is_some() { "Found" } else { "NotFound" },
        format!("Repository {}/{}", repo_ns, config.spec.repository.name)
            + if repo.is_some() {
                " found"
            } else {
                " not found"
            },
        generation,
        &t,
    );
    let secret_found = match &repo {
        Some(r) => {
            let secret = &r.spec.backend.storage_secret_name;
            let found = match ctx.secret_known(&repo_ns, secret) {
                Some(found) => found,
                None => {
                    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &repo_ns);
                    let found = secrets.get_metadata_opt(secret).await?.is_some();
                    // Only a found Secret is remembered: a missing one is looked for again
                    // at once, so a Secret applied a moment later makes the configuration Ready.
                    if found {
                        ctx.remember_secret(&repo_ns, secret, found);
                    }
                    found
                }
            };
            conditions::set(
                conds,
                "BackendSecretFound",
                found,
                if found { "Found" } else { "NotFound" },
                format!(
                    "storage Secret {repo_ns}/{secret}{}",
                    if found { " found" } else { " not found" }
                ),
                generation,
                &t,
            );
            found
        }
        None => {
            conditions::set(
                conds,
                "BackendSecretFound",
                false,
                "RepositoryNotFound",
                "the Repository is missing",
                generation,
                &t,
            );
            false
        }
    };
    let app = ctx
        .stores
        .app_binding(&namespace, &config.spec.target.r#ref.name);
    conditions::set(
        conds,
        "TargetFound",
        app.is_some(),
        if app.is_some() { "Found" } else { "NotFound" },
        format!(
            "{} {}/{}{}",
            config.spec.target.r#ref.kind,
            namespace,
            config.spec.target.r#ref.name,
            if app.is_some() {
                " found"
            } else {
                " not found"
            }
        ),
        generation,
        &t,
    );
    let task_name = config
        .spec
        .task
        .as_ref()
        .and_then(|t| t.name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            default_task_name(app.as_deref(), Direction::Backup, &ctx.install.catalog)
        });
    let task = ctx.stores.task(&task_name);
    conditions::set(
        conds,
        "TaskFound",
        task.is_some(),
        if task.is_some() { "Found" } else { "NotFound" },
        format!(
            "Task {task_name}{}",
            if task.is_some() {
                " found"
            } else {
                " not found"
            }
        ),
        generation,
        &t,
    );

    // Validate: the same rules as admission, for objects admitted before a rule existed.
    let verdict = validate_backup_configuration(&config, None, &ctx.stores, &ctx.install.policy);
    conditions::set(
        conds,
        "ValidationPassed",
        verdict.allowed(),
        if verdict.allowed() {
            "Valid"
        } else {
            "Invalid"
        },
        if verdict.allowed() {
            "the configuration passed validation".to_string()
        } else {
            verdict.error_message()
        },
        generation,
        &t,
    );

    let phase = if !verdict.allowed() {
        ConfigurationPhase::Invalid
    } else if repo.is_some() && secret_found && app.is_some() && task.is_some() {
        ConfigurationPhase::Ready
    } else {
        ConfigurationPhase::NotReady
    };

    let mut body = json!({"observedGeneration": generation, "phase": phase});
    let mut requeue = MAX_WAIT;
    match &decision {
        Ok(d) => {
            // Every slot dealt with, by this reconcile or an earlier one whose status write
            // this object may not show yet.
            if let Some(last) = ctx.slot_dealt_with(&uid) {
                body["lastScheduleTime"] = json!(to_time(last));
            }
            body["nextScheduleTime"] = json!(d.next.and_then(to_time));
            let paused = config.spec.paused.unwrap_or(false);
            conditions::set(
                conds,
                "Scheduled",
                !paused,
                if paused { "Paused" } else { "Scheduled" },
                match (paused, d.next) {
                    (true, _) => "paused: no new sessions".to_string(),
                    (false, Some(n)) => format!("next session at {}", n.to_rfc3339()),
                    (false, None) => "the schedule has no further slot".to_string(),
                },
                generation,
                &t,
            );
            if let Some(next) = d.next {
                requeue = (next - Utc::now())
                    .to_std()
                    .unwrap_or(Duration::ZERO)
                    .min(MAX_WAIT);
            }
        }
        Err(e) => {
            conditions::set(
                conds,
                "Scheduled",
                false,
                "InvalidSchedule",
                e.to_string(),
                generation,
                &t,
            );
        }
    }
    body["conditions"] = json!(status.conditions);

    clean_history(&config, &ctx).await?;
    // An unchanged status is not written (the server would make nothing of it either). If
    // this object is older than our last write, that write's watch event brings another
    // reconcile, which compares with it.
    if status_changes(config.status.as_ref(), &body) {
        let api: Api<BackupConfiguration> = Api::namespaced(ctx.client.clone(), &namespace);
        api.patch_status(
            &name,
            &PatchParams::apply(MANAGER),
            &Patch::Merge(json!({ "status": body })),
        )
        .await?;
    }
    Ok(Action::requeue(requeue))
}

/// Whether the merge patch `body` would change the status `current`.
fn status_changes(current: Option<&BackupConfigurationStatus>, body: &Value) -> bool {
    let current = current
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null);
    match body.as_object() {
        Some(fields) => fields
            .iter()
            .any(|(k, v)| current.get(k).unwrap_or(&Value::Null) != v),
        None => true,
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
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
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
    fn an_unchanged_status_is_not_written() {
        let current = status();
        let mut body = serde_json::to_value(&current).unwrap();
        // Fields the patch does not name (written by the sessions) do not count.
        body.as_object_mut()
            .unwrap()
            .remove("lastSuccessfulSession");
        assert!(!status_changes(Some(&current), &body));
        // A null for a field that is not there is no change either.
        body["lastScheduleTime"] = Value::Null;
        assert!(!status_changes(Some(&current), &body));
    }

    #[test]
    fn any_named_field_that_differs_is_written() {
        let current = status();
        let body = serde_json::to_value(&current).unwrap();
        for (field, value) in [
            ("phase", json!("NotReady")),
            ("observedGeneration", json!(3)),
            ("nextScheduleTime", json!("2026-11-25T22:01:00Z")),
            ("lastScheduleTime", json!("2026-11-25T21:59:00Z")),
            ("conditions", json!([])),
        ] {
            let mut changed = body.clone();
            changed[field] = value;
            assert!(status_changes(Some(&current), &changed), "{field}");
        }
        assert!(status_changes(None, &body));
    }
}
