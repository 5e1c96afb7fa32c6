//! What a BackupSession has of its own in a session's life (`runtime.md`, "A session's life";
//! the life itself is [`crate::session`]): its BackupConfiguration, skipping, the snapshot it
//! reports and what that updates, retrying a failure, and the order of its history.

use std::sync::Arc;

use cairn_api::backup_configuration::BackupConfigurationStatus;
use cairn_api::backup_configuration::ConfigurationPhase;
use cairn_api::backup_session::{
    BackupSessionSpec, BackupSessionStatus, BackupTargetStatus, HostBackupStats, SnapshotStats,
    SnapshotSummary,
};
use cairn_api::common::BackupTarget;
use cairn_api::common::SessionPhase;
use cairn_api::hooks::ExecHook;
use cairn_api::naming::{
    LABEL_INVOKER_KIND, LABEL_INVOKER_NAME, backup_job_name, human_bytes, label_value,
};
use cairn_api::repository::RepositoryStatus;
use cairn_api::resolve::{
    JobSource, PostHookRun, ResolveError, SessionEnd, resolve_backup_job, resolve_post_hook,
};
use cairn_api::result::{AgentResult, BackupResult};
use cairn_api::validation::{Lookups, parse_go_duration};
use cairn_api::{BackupConfiguration, BackupSession, Repository};
use chrono::Utc;
use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};

use crate::conditions::{self, now};
use crate::context::Context;
use crate::error::{Error, Result};
use crate::job::young;

use crate::metrics::ConfigLabels;
use crate::scheduling::{to_chrono, to_time};
use crate::session::{JobInputs, Prepared, SessionKind, ns, update_status};
use crate::snapshots;
use crate::status::{self, Manager};

impl SessionKind for BackupSession {
    const WORK: &'static str = "Backup";
    const RETRIES: bool = true;
    type Outcome = BackupResult;

    type Status = BackupSessionStatus;

    fn status(&self) -> Option<&BackupSessionStatus> {
        self.status.as_ref()
    }
    fn job_name(&self) -> String {
        backup_job_name(&self.name_any())
    }
    fn invoker_name(&self) -> String {
        self.spec.invoker.name.clone()
    }
    fn resolve(&self, ctx: &Context) -> Result<JobTemplateSpec, ResolveError> {
        resolve_backup_job(self, &ctx.stores, &ctx.install)
    }
    fn post_hook(
        &self,
        ctx: &Context,
        ended: &SessionEnd<'_>,
    ) -> Result<Option<PostHookRun>, ResolveError> {
        let Some(config) = invoker(self, ctx) else {
            return Ok(None);
        };
        let source = JobSource::backup(self, &config);
        let target = ctx.stores.app_binding(&ns(self), &source.target_ref.name);
        resolve_post_hook(&source, ended, &ctx.install, target.as_deref())
    }
    fn pre_exec_hook(&self, ctx: &Context) -> Result<Option<ExecHook>, ResolveError> {
        let Some(config) = invoker(self, ctx) else {
            return Ok(None);
        };
        JobSource::backup(self, &config).pre_exec_hook()
    }
    fn retry_left(&self, ctx: &Context) -> bool {
        retries_left(self, ctx) > 0
    }

    /// The configuration makes the Job; the session is skipped while another of it runs, or
    /// while it is not Ready.
    async fn prepare(&self, ctx: &Context) -> Result<Prepared> {
        let young = young(self.meta().creation_timestamp.as_ref());
        let Some(config) = ready_invoker(self, ctx).await? else {
            if young {
                return Ok(Prepared::Wait);
            }
            let message = format!(
                "BackupConfiguration {:?} not found in namespace {:?}",
                self.spec.invoker.name,
                ns(self)
            );
            return Ok(Prepared::Fail("InvokerNotFound", message));
        };
        if young && config.status.as_ref().and_then(|s| s.phase).is_none() {
            // Applied together with the session: the configuration's first evaluation decides.
            return Ok(Prepared::Wait);
        }
        if let Some(why) = skip_reason(self, &config, ctx).await? {
            return Ok(Prepared::Skip(why));
        }
        Ok(Prepared::Run(Box::new(JobInputs {
            interim: config.spec.interim_volume_template.clone(),
            time_out: config.spec.time_out.clone(),
        })))
    }

    fn time_out(&self, ctx: &Context) -> Option<String> {
        invoker(self, ctx).and_then(|c| c.spec.time_out.clone())
    }

    fn outcome(result: AgentResult) -> Option<BackupResult> {
        match result {
            AgentResult::Backup(b) => Some(b),
            _ => None,
        }
    }

    fn succeeded_message(b: &BackupResult) -> String {
        format!(
            "snapshot {} of {} indices, {} documents, {} ({} added)",
            short(&b.snapshot),
            b.indices,
            b.documents,
            human_bytes(b.total_bytes),
            human_bytes(b.added_bytes)
        )
    }

    fn target(&self, ctx: &Context) -> Option<BackupTarget> {
        invoker(self, ctx).map(|c| c.spec.target.clone())
    }

    /// Stash's `status.targets`: the one target, its one host.
    fn finished_status(
        &self,
        target: Option<&BackupTarget>,
        phase: SessionPhase,
        duration: &str,
        message: &str,
        status: &mut BackupSessionStatus,
    ) {
        let Some(target) = target else {
            return;
        };
        let ok = phase == SessionPhase::Succeeded;
        status.targets = vec![BackupTargetStatus {
            r#ref: target.r#ref.clone(),
            total_hosts: Some(1),
            phase: Some(phase),
            stats: vec![HostBackupStats {
                hostname: target.alias.as_deref().unwrap_or("host-0").into(),
                phase: Some(phase),
                duration: Some(duration.into()),
                error: (!ok).then(|| message.into()),
                snapshots: Vec::new(),
            }],
        }];
    }

    fn succeeded_status(b: &BackupResult, status: &mut BackupSessionStatus) {
        status.snapshot = Some(snapshot_summary(b));
        if let Some(host) = status.targets.first_mut().and_then(|t| t.stats.first_mut()) {
            host.snapshots = vec![snapshot_stats(b)];
        }
        if let Some((reason, message)) = after_snapshot_failure(b) {
            let conditions = &mut status.conditions;
            conditions::set(
                conditions,
                RETENTION_FAILED,
                true,
                reason,
                message,
                None,
                &now(),
            );
        }
    }

    /// The Repository's status, the configuration's metrics and its last successful session.
    async fn after_success(&self, ctx: &Context, b: BackupResult) -> Result<()> {
        if let Some((reason, message)) = after_snapshot_failure(&b) {
            ctx.event(self, true, reason, message).await;
        }
        let Some(config) = invoker(self, ctx) else {
            record_success(self, ctx, &b);
            return Ok(());
        };
        let repo = repository(self, ctx, &config).await?;
        if let Some(repo) = &repo {
            update_repository(ctx, repo, &b).await?;
        }
        record_success(self, ctx, &b);
        let configs: Api<BackupConfiguration> = Api::namespaced(ctx.client.clone(), &ns(self));
        let status = BackupConfigurationStatus {
            last_successful_session: Some(self.name_any()),
            ..Default::default()
        };
        status::apply(&configs, &*config, Manager::BackupResults, false, &status).await?;
        match &repo {
            Some(repo) => update_snapshots(self, ctx, repo, &b).await,
            None => Ok(()),
        }
    }

    /// `status.nextRetry` for a failed session that has retries left.
    fn failed_status(&self, ctx: &Context, status: &mut BackupSessionStatus) {
        if self.spec.retry_left.unwrap_or(0) <= 0 {
            return;
        }
        let delay = invoker(self, ctx)
            .and_then(|c| c.spec.retry_config.as_ref()?.delay.clone())
            .and_then(|d| parse_go_duration(&d).ok())
            .unwrap_or_else(chrono::Duration::zero);
        status.next_retry = to_time(Utc::now() + delay);
    }

    async fn retry(&self, ctx: &Context) -> Result<Action> {
        retry(self, ctx).await
    }
}

/// The snapshot in Stash's shape (its short id, as Stash names it).
fn snapshot_stats(b: &BackupResult) -> SnapshotStats {
    SnapshotStats {
        name: short(&b.snapshot).to_string(),
        path: Some("/elasticsearch".into()),
        total_size: Some(human_bytes(b.total_bytes)),
        uploaded: Some(human_bytes(b.added_bytes)),
        processing_time: Some(cairn_api::duration::format_seconds(
            b.duration_seconds.round() as i64,
        )),
        file_stats: None,
    }
}

/// The condition a Succeeded session carries when the retention or the repository's totals
/// failed after its snapshot was saved: the snapshot stands, the next backup retries them.
pub const RETENTION_FAILED: &str = "RetentionFailed";

/// The reason and message of [`RETENTION_FAILED`] (and of its Warning event), if the agent
/// reported such a failure.
fn after_snapshot_failure(b: &BackupResult) -> Option<(&'static str, String)> {
    let snapshot = short(&b.snapshot);
    if let Some(e) = &b.retention_error {
        let message = format!(
            "snapshot {snapshot} saved, but its retention failed (the next backup applies it again): {e}"
        );
        return Some(("RetentionFailed", message));
    }
    let e = b.totals_error.as_ref()?;
    let message = format!(
        "snapshot {snapshot} saved, but the repository's totals could not be read (the Repository's counts are not updated): {e}"
    );
    Some(("TotalsFailed", message))
}

fn invoker(session: &BackupSession, ctx: &Context) -> Option<Arc<BackupConfiguration>> {
    ctx.stores
        .backup_configuration(&ns(session), &session.spec.invoker.name)
}

/// The session's configuration: from the cache when it is Ready there, else read live (a cache
/// that lags behind the configuration's own Ready status must not skip the session).
async fn ready_invoker(
    session: &BackupSession,
    ctx: &Context,
) -> Result<Option<Arc<BackupConfiguration>>> {
    let cached = invoker(session, ctx);
    let ready = |c: &BackupConfiguration| {
        c.status.as_ref().and_then(|s| s.phase) == Some(ConfigurationPhase::Ready)
    };
    if cached.as_deref().is_some_and(ready) {
        return Ok(cached);
    }
    let api: Api<BackupConfiguration> = Api::namespaced(ctx.client.clone(), &ns(session));
    Ok(api.get_opt(&session.spec.invoker.name).await?.map(Arc::new))
}

/// Why the session is skipped, if it is: one running session per configuration, and only
/// Ready configurations run.
async fn skip_reason(
    session: &BackupSession,
    config: &BackupConfiguration,
    ctx: &Context,
) -> Result<Option<String>> {
    if another_running(session, ctx).await? {
        return Ok(Some(format!(
            "another session of BackupConfiguration {:?} is running",
            config.name_any()
        )));
    }
    let phase = config.status.as_ref().and_then(|s| s.phase);
    if phase == Some(ConfigurationPhase::Ready) {
        return Ok(None);
    }
    Ok(Some(format!(
        "BackupConfiguration {:?} is not Ready ({}); see its status conditions",
        config.name_any(),
        phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "not evaluated yet".into())
    )))
}

/// Whether another session of the same configuration is Running. Skipping is final, so a
/// cache that has not yet seen a session end (our own write of its end, even) decides nothing:
/// each seen Running in the cache is read live.
async fn another_running(session: &BackupSession, ctx: &Context) -> Result<bool> {
    let name = session.name_any();
    let seen_running = ctx.stores.sessions.state().into_iter().filter(|s| {
        s.name_any() != name
            && s.namespace() == session.namespace()
            && s.spec.invoker.name == session.spec.invoker.name
            && s.status.as_ref().and_then(|st| st.phase) == Some(SessionPhase::Running)
    });
    let api: Api<BackupSession> = Api::namespaced(ctx.client.clone(), &ns(session));
    for seen in seen_running {
        let live = api.get_opt(&seen.name_any()).await?;
        if live.and_then(|s| s.status?.phase) == Some(SessionPhase::Running) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn snapshot_summary(b: &BackupResult) -> SnapshotSummary {
    SnapshotSummary {
        id: b.snapshot.clone(),
        time: b
            .time
            .parse::<k8s_openapi::jiff::Timestamp>()
            .ok()
            .map(Time),
        total_bytes: i64::try_from(b.total_bytes).ok(),
        added_bytes: i64::try_from(b.added_bytes).ok(),
        documents: i64::try_from(b.documents).ok(),
        indices: i64::try_from(b.indices).ok(),
        driver: b.native.as_ref().map(|_| "native".into()),
        shards: (b.native.as_ref()).map(|n| format!("{}/{}", n.shards, n.shards_total)),
        files: (b.native.as_ref()).and_then(|n| i64::try_from(n.files).ok()),
        duration: b
            .native
            .as_ref()
            .map(|_| cairn_api::duration::format_seconds(b.duration_seconds.round() as i64)),
    }
}

/// The configuration's last-backup metrics.
fn record_success(session: &BackupSession, ctx: &Context, b: &BackupResult) {
    let labels = ConfigLabels {
        namespace: ns(session),
        configuration: session.spec.invoker.name.clone(),
    };
    let metrics = &ctx.metrics;
    let now = Utc::now().timestamp() as f64;
    metrics.last_success.get_or_create(&labels).set(now);
    let bytes = i64::try_from(b.total_bytes).unwrap_or(i64::MAX);
    metrics.last_backup_bytes.get_or_create(&labels).set(bytes);
    let documents = i64::try_from(b.documents).unwrap_or(i64::MAX);
    metrics
        .last_backup_documents
        .get_or_create(&labels)
        .set(documents);
    // The agent's retention counts only this configuration's own snapshots (and nothing when
    // it failed).
    if b.retention_error.is_none() {
        let own = i64::try_from(b.snapshots_kept).unwrap_or(i64::MAX);
        metrics.snapshots.get_or_create(&labels).set(own);
    }
}

/// A restic id's first 8 characters, as restic prints it; a native snapshot's name whole.
fn short(id: &str) -> &str {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        &id[..8]
    } else {
        id
    }
}

/// The Repository the configuration names, read from the server (its status is written next).
async fn repository(
    session: &BackupSession,
    ctx: &Context,
    config: &BackupConfiguration,
) -> Result<Option<Repository>> {
    let reference = &config.spec.repository;
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), reference.namespace_or(&ns(session)));
    Ok(api.get_opt(&reference.name).await?)
}

/// The Repository's Snapshot objects, from the inventory the agent wrote after the backup.
async fn update_snapshots(
    session: &BackupSession,
    ctx: &Context,
    repo: &Repository,
    b: &BackupResult,
) -> Result<()> {
    let Some(expected) = b.inventory else {
        return Ok(());
    };
    let namespace = ns(session);
    match snapshots::read_lines(ctx, &namespace, &session.job_name(), expected).await? {
        Ok(lines) => {
            let listed_at = b.time.parse().unwrap_or_else(|_| Timestamp::now());
            snapshots::sync(ctx, repo, &lines, listed_at).await?;
            let driver = match b.native {
                Some(_) => cairn_api::snapshot::DRIVER_NATIVE,
                None => cairn_api::snapshot::DRIVER_RESTIC,
            };
            let made = (b.snapshot.as_str(), driver);
            snapshots::set_session(ctx, repo, made, &namespace, &session.name_any()).await
        }
        Err(why) => {
            let note = format!(
                "the Snapshot objects of Repository {} were not updated: {why}; the next backup \
                 updates them",
                repo.name_any()
            );
            ctx.event(session, true, "InventoryIncomplete", note).await;
            Ok(())
        }
    }
}

async fn update_repository(ctx: &Context, repo: &Repository, b: &BackupResult) -> Result<()> {
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    let current = repo.status.clone().unwrap_or_default();
    let t = now();
    let count = |n: u64| i64::try_from(n).ok();
    // Every field this writer owns, each time (server-side apply drops what it stops sending);
    // totals the agent could not read keep their last values.
    let (snapshot_count, total_size_bytes, total_size) = if b.totals_error.is_some() {
        (
            current.snapshot_count,
            current.total_size_bytes,
            current.total_size.clone(),
        )
    } else if b.native.is_some() {
        // The server tells no repository size (its files are the nodes'): unknown, not 0.
        (count(b.repository.snapshot_count), None, None)
    } else {
        ctx.metrics
            .repository_totals(repo, b.repository.snapshot_count, b.repository.size_bytes);
        (
            count(b.repository.snapshot_count),
            count(b.repository.size_bytes),
            Some(human_bytes(b.repository.size_bytes)),
        )
    };
    let status = RepositoryStatus {
        observed_generation: repo.metadata.generation,
        first_backup_time: current.first_backup_time.or_else(|| Some(t.clone())),
        last_backup_time: Some(t),
        snapshot_count,
        total_size_bytes,
        total_size,
        snapshots_removed_on_last_cleanup: match b.retention_error {
            Some(_) => current.snapshots_removed_on_last_cleanup,
            None => count(b.snapshots_removed),
        },
        integrity: b.repository.integrity.or(current.integrity),
        ..Default::default()
    };
    status::apply(&api, repo, Manager::BackupResults, false, &status).await
}

/// The retries a failed session may still make: never more than the configuration allows now,
/// whatever the session says (one admitted without the webhook may say anything).
fn retries_left(session: &BackupSession, ctx: &Context) -> i32 {
    let allowed = invoker(session, ctx).map_or(0, |c| c.max_retry());
    session.spec.retry_left.unwrap_or(0).min(allowed)
}

/// A failed session with retries left makes one new session after `retryConfig.delay`.
async fn retry(session: &BackupSession, ctx: &Context) -> Result<Action> {
    let status = session.status.clone().unwrap_or_default();
    let left = retries_left(session, ctx);
    if status.retried.is_some() {
        return Ok(Action::await_change());
    }
    if left <= 0 {
        // Recorded, so a reader (and a test) sees the decision rather than an absence.
        update_status(ctx, session, |s| s.retried = Some(false)).await?;
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
    let new = retry_session(session, left - 1);
    let api: Api<BackupSession> = Api::namespaced(ctx.client.clone(), &ns(session));
    match api.create(&PostParams::default(), &new).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::Kube(e)),
    }
    update_status(ctx, session, |s| s.retried = Some(true)).await?;
    let message = format!(
        "retrying as BackupSession {} ({} retries left after it)",
        new.name_any(),
        left - 1
    );
    ctx.event(session, false, "BackupRetried", message).await;
    Ok(Action::await_change())
}

/// The session that retries `session`, with `left` retries after it.
fn retry_session(session: &BackupSession, left: i32) -> BackupSession {
    let mut labels = session.metadata.labels.clone().unwrap_or_default();
    labels.insert(LABEL_INVOKER_KIND.into(), "BackupConfiguration".into());
    labels.insert(
        LABEL_INVOKER_NAME.into(),
        label_value(&session.spec.invoker.name),
    );
    BackupSession {
        metadata: ObjectMeta {
            name: Some(retry_name(&session.name_any())),
            namespace: session.namespace(),
            labels: Some(labels),
            annotations: Some([("cairn.dev/retry-of".to_string(), session.name_any())].into()),
            owner_references: session.metadata.owner_references.clone(),
            ..Default::default()
        },
        spec: BackupSessionSpec {
            invoker: session.spec.invoker.clone(),
            retry_left: Some(left),
            job_template: None,
        },
        status: None,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_and_its_host_are_reported_in_stashs_shape() {
        let session = BackupSession::new("s", Default::default());
        let target: BackupTarget = serde_json::from_value(serde_json::json!({
            "alias": "es-0", "ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1",
            "kind": "AppBinding", "name": "es"}}))
        .expect("target");
        let mut failed = BackupSessionStatus::default();
        session.finished_status(
            Some(&target),
            SessionPhase::Failed,
            "5s",
            "broke",
            &mut failed,
        );
        let host = &failed.targets[0].stats[0];
        assert_eq!(
            (host.hostname.as_str(), host.error.as_deref()),
            ("es-0", Some("broke"))
        );
        assert_eq!(failed.targets[0].r#ref.name, "es");
        let b = BackupResult {
            snapshot: "0123456789abcdef".repeat(4),
            total_bytes: 2048,
            added_bytes: 1024,
            duration_seconds: 61.4,
            ..Default::default()
        };
        let mut ok = BackupSessionStatus::default();
        session.finished_status(Some(&target), SessionPhase::Succeeded, "1m2s", "", &mut ok);
        BackupSession::succeeded_status(&b, &mut ok);
        let host = &ok.targets[0].stats[0];
        assert_eq!(host.error, None);
        let snap = &host.snapshots[0];
        assert_eq!(snap.name, "01234567");
        assert_eq!(snap.total_size.as_deref(), Some(human_bytes(2048).as_str()));
        assert_eq!(snap.processing_time.as_deref(), Some("1m1s"));
        let mut none = BackupSessionStatus::default();
        session.finished_status(None, SessionPhase::Failed, "5s", "gone", &mut none);
        assert!(none.targets.is_empty());
    }

    #[test]
    fn a_failed_retention_keeps_the_snapshot_and_says_so() {
        let mut b = BackupResult {
            snapshot: "0123456789abcdef".repeat(4),
            ..Default::default()
        };
        let mut status = BackupSessionStatus::default();
        BackupSession::succeeded_status(&b, &mut status);
        assert!(status.conditions.is_empty(), "{status:?}");
        b.retention_error = Some("retention not applied: locked by restic".into());
        BackupSession::succeeded_status(&b, &mut status);
        assert_eq!(
            status.snapshot.as_ref().map(|s| s.id.as_str()),
            Some(b.snapshot.as_str())
        );
        let c = &status.conditions[0];
        assert_eq!(
            (c.type_.as_str(), c.status.as_str()),
            (RETENTION_FAILED, "True")
        );
        assert_eq!(c.reason, "RetentionFailed");
        assert!(c.message.contains("01234567") && c.message.contains("locked by restic"));
        b.retention_error = None;
        b.totals_error = Some("repository info: timed out".into());
        let mut status = BackupSessionStatus::default();
        BackupSession::succeeded_status(&b, &mut status);
        assert_eq!(status.conditions[0].reason, "TotalsFailed");
    }

    #[test]
    fn a_native_snapshot_reports_its_name_size_shards_and_duration() {
        let b = BackupResult {
            snapshot: "team-a.logs.logs-1765000000".into(),
            total_bytes: 4096,
            duration_seconds: 65.2,
            native: Some(Box::new(cairn_api::result::NativeStats {
                repository: "cairn_team-a_es".into(),
                shards: 3,
                shards_total: 3,
                files: 42,
                added_files: 7,
            })),
            ..Default::default()
        };
        let mut status = BackupSessionStatus::default();
        BackupSession::succeeded_status(&b, &mut status);
        let snap = status.snapshot.expect("snapshot");
        assert_eq!(snap.id, b.snapshot);
        assert_eq!(snap.driver.as_deref(), Some("native"));
        assert_eq!(snap.shards.as_deref(), Some("3/3"));
        assert_eq!((snap.files, snap.total_bytes), (Some(42), Some(4096)));
        assert_eq!(snap.duration.as_deref(), Some("1m5s"));
        assert!(
            BackupSession::succeeded_message(&b)
                .starts_with("snapshot team-a.logs.logs-1765000000 ")
        );
    }
}
