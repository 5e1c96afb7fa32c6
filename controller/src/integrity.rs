//! A Repository's scheduled integrity check (`spec.integrityCheck`): for each due slot of its
//! schedule, a Job runs `cairn-agent check` with the read-data subset; its result becomes the
//! Repository's `integrity`, `lastCheck` and `IntegrityVerified` condition, an event, the
//! `cairn_repository_integrity` metric, and each Snapshot object's integrity. A check that
//! finds damage exits non-zero with its result in the termination message (the Job fails).
//!
//! A snapshot found damaged stays damaged, and so does the Repository, until a check that read
//! every pack finds it whole: a check of a subset says nothing of the packs it did not read.

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_api::Repository;
use cairn_api::naming::check_job_name;
use cairn_api::repository::{CheckStatus, RepositoryStatus};
use cairn_api::resolve::RepositoryWork;
use cairn_api::result::{AgentResult, CheckLogLine, CheckResult};
use cairn_api::schedule::Schedule;
use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, LogParams};
use kube::{Api, ResourceExt};

use crate::conditions::{self, now};
use crate::context::Context;
use crate::error::Result;
use crate::observe::{JobObservation, agent_result};
use crate::repository_job;
use crate::scheduling::to_time;
use crate::status::{self, Manager};

/// The condition a check sets on the Repository.
pub const INTEGRITY_VERIFIED: &str = "IntegrityVerified";

/// Runs the check of the due slot, if any; `Some(wait)` until the next thing to do.
pub async fn reconcile(repo: &Repository, ctx: &Context) -> Result<Option<Duration>> {
    let Some(check) = &repo.spec.integrity_check else {
        return Ok(None);
    };
    let Ok(schedule) = Schedule::parse(&check.schedule, None) else {
        return Ok(None);
    };
    let now = Utc::now();
    let since = last_slot(repo).or_else(|| created(repo)).unwrap_or(now);
    let Some(slot) = latest_due(&schedule, since, now) else {
        return Ok(until_next(&schedule, now));
    };
    let namespace = repo.namespace().unwrap_or_default();
    let job_name = check_job_name(&repo.name_any(), slot.timestamp());
    let work = RepositoryWork::Check {
        read_data_subset: check.read_data_subset().to_string(),
    };
    let observed = match repository_job::run(ctx, repo, &work, &job_name).await? {
        Ok(o) => o,
        Err(e) => {
            record(ctx, repo, slot, Err(e.to_string())).await?;
            return Ok(until_next(&schedule, now));
        }
    };
    let outcome = match observed {
        JobObservation::Running | JobObservation::Missing => {
            return Ok(Some(Duration::from_secs(5)));
        }
        JobObservation::Succeeded {
            result: Some(AgentResult::Check(r)),
        } => Ok(r),
        JobObservation::Succeeded { .. } => Err(format!("Job {job_name} left no check result")),
        JobObservation::Failed { reason, message } => {
            match failed_check(ctx, &namespace, &job_name).await? {
                Some(r) => Ok(r),
                None => Err(format!("Job {job_name} failed ({reason}): {message}")),
            }
        }
    };
    let outcome = match outcome {
        Ok(r) => Ok(with_all_damaged(ctx, &namespace, &job_name, r).await?),
        Err(why) => Err(why),
    };
    record(ctx, repo, slot, outcome).await?;
    Ok(until_next(&schedule, now))
}

fn last_slot(repo: &Repository) -> Option<DateTime<Utc>> {
    let slot = &repo.status.as_ref()?.last_check.as_ref()?.slot;
    DateTime::from_timestamp(slot.0.as_second(), 0)
}

fn created(repo: &Repository) -> Option<DateTime<Utc>> {
    let t = repo.metadata.creation_timestamp.as_ref()?;
    DateTime::from_timestamp(t.0.as_second(), 0)
}

/// The latest slot after `since` that is due by `now` (missed ones are not made up).
fn latest_due(
    schedule: &Schedule,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut due = None;
    let mut at = since;
    for _ in 0..100_000 {
        match schedule.next_slot(at) {
            Some(next) if next <= now => {
                due = Some(next);
                at = next;
            }
            _ => break,
        }
    }
    due
}

fn until_next(schedule: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
    let next = schedule.next_slot(now)?;
    Some((next - now).to_std().unwrap_or_default() + Duration::from_secs(1))
}

/// The check result a failed Job's pod left (damage found), if it left one.
async fn failed_check(
    ctx: &Context,
    namespace: &str,
    job_name: &str,
) -> Result<Option<CheckResult>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await?;
    Ok(listed.items.iter().find_map(|p| match agent_result(p)? {
        AgentResult::Check(r) => Some(r),
        _ => None,
    }))
}

/// The result with every damaged snapshot, from the log when the message had to leave some out.
async fn with_all_damaged(
    ctx: &Context,
    namespace: &str,
    job_name: &str,
    mut r: CheckResult,
) -> Result<CheckResult> {
    if r.damaged_snapshots_left_out == 0 {
        return Ok(r);
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let listed = pods
        .list(&ListParams::default().labels(&format!("job-name={job_name}")))
        .await?;
    if let Some(pod) = listed.items.first() {
        let log = pods.logs(&pod.name_any(), &LogParams::default()).await?;
        r.damaged_snapshots = log
            .lines()
            .filter_map(CheckLogLine::from_line)
            .filter_map(|l| match l {
                CheckLogLine::Damaged { snapshot } => Some(snapshot),
                CheckLogLine::Error { .. } => None,
            })
            .collect();
        r.damaged_snapshots_left_out = 0;
    }
    Ok(r)
}

/// The Repository's status, condition, event and metric, and the Snapshot objects' integrity.
async fn record(
    ctx: &Context,
    repo: &Repository,
    slot: DateTime<Utc>,
    outcome: std::result::Result<CheckResult, String>,
) -> Result<()> {
    let current = repo.status.clone().unwrap_or_default();
    let t = now();
    let mut last = CheckStatus {
        slot: to_time(slot).unwrap_or_else(now),
        time: Some(t.clone()),
        read_data_subset: None,
        damaged_snapshots: None,
        error: None,
    };
    let mut status = RepositoryStatus {
        integrity: current.integrity,
        ..Default::default()
    };
    match &outcome {
        Ok(r) => {
            let full = r.read_data_subset == "all";
            let whole = if !r.ok {
                false
            } else {
                full || current.integrity != Some(false)
            };
            status.integrity = Some(whole);
            last.read_data_subset = Some(r.read_data_subset.clone());
            last.damaged_snapshots = i64::try_from(r.damaged_snapshots.len()).ok();
            let message = summary(r);
            conditions::set(
                &mut status.conditions,
                INTEGRITY_VERIFIED,
                r.ok,
                if r.ok { "CheckPassed" } else { "DamageFound" },
                message.clone(),
                repo.metadata.generation,
                &t,
            );
            ctx.event(
                repo,
                !r.ok,
                if r.ok {
                    "IntegrityVerified"
                } else {
                    "IntegrityCheckFailed"
                },
                message,
            )
            .await;
            ctx.metrics.repository_integrity(repo, whole);
            crate::snapshots::set_integrity(ctx, repo, &r.damaged_snapshots, full, &t).await?;
        }
        Err(why) => {
            last.error = Some(why.clone());
            conditions::set_status(
                &mut status.conditions,
                INTEGRITY_VERIFIED,
                "Unknown",
                "CheckNotRun",
                why.clone(),
                repo.metadata.generation,
                &t,
            );
            ctx.event(repo, true, "IntegrityCheckNotRun", why.clone())
                .await;
        }
    }
    status.last_check = Some(last);
    let api: Api<Repository> =
        Api::namespaced(ctx.client.clone(), &repo.namespace().unwrap_or_default());
    status::apply(&api, repo, Manager::Integrity, false, &status).await
}

/// One line for the condition and the event: what was read and what was found.
fn summary(r: &CheckResult) -> String {
    let read = format!(
        "read the data of {} of {} packs ({}, subset {})",
        r.packs_read,
        r.packs_total,
        cairn_api::naming::human_bytes(r.bytes_read),
        r.read_data_subset
    );
    if r.ok {
        return format!(
            "the check {read} and found no damage in {} snapshots",
            r.snapshots_checked
        );
    }
    let shorts: BTreeSet<&str> = r
        .damaged_snapshots
        .iter()
        .map(|id| id.get(..8).unwrap_or(id))
        .take(10)
        .collect();
    let first = r
        .errors
        .first()
        .map(String::as_str)
        .unwrap_or("errors found");
    format!(
        "the check {read} and found damage: {} damaged snapshots ({}); {first}",
        r.damaged_snapshots.len(),
        shorts.into_iter().collect::<Vec<_>>().join(", ")
    )
}
