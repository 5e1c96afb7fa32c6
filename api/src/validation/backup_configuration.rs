//! Admission rules for BackupConfiguration (`shared/spec/admission.md`).
//!
//! Rejected: a schedule that is not cron, an unknown time zone, a retention policy that would
//! prune nothing or has negative counts, negative limits, non-positive durations, a target
//! that is not an AppBinding in this namespace, a Repository that exists and refuses this
//! namespace, and the shared rules for runtime settings, tempDir, the interim volume and Task
//! params. Warned: missing referenced objects, very frequent schedules, `paused: true`, huge
//! retention, an AppBinding that skips TLS verification.

use chrono::{DateTime, Duration, Utc};

use super::job::JobRequest;
use super::shared::{
    check_interim_volume_template, check_positive_duration, check_repository,
    check_runtime_settings, check_target, check_task, check_temp_dir, skip_spec_rules,
};
use super::{Lookups, Policy, Verdict};
use crate::BackupConfiguration;
use crate::common::RetentionPolicy;
use crate::dereference::{Dereferenced, References};
use crate::schedule::{Schedule, parse_time_zone};

/// Schedules running more often than this get a warning.
const MIN_QUIET_INTERVAL_MINUTES: i64 = 5;
/// Retention keeping more snapshots than this gets a warning.
const MANY_SNAPSHOTS: i64 = 1000;

/// Every error and warning of a BackupConfiguration (`old` is set on UPDATE).
pub fn validate_backup_configuration(
    new: &BackupConfiguration,
    old: Option<&BackupConfiguration>,
    lookups: &dyn Lookups,
    policy: &Policy,
) -> Verdict {
    let mut v = Verdict::default();
    if skip_spec_rules(&new.metadata, &new.spec, old.map(|o| &o.spec)) {
        return v;
    }
    let ns = new.metadata.namespace.as_deref().unwrap_or_default();
    let spec = &new.spec;

    // An empty timeZone means UTC, as defaulting reads it.
    let time_zone = spec.time_zone.as_deref().filter(|z| !z.is_empty());
    check_schedule(&mut v, &spec.schedule, time_zone);
    if spec.paused == Some(true) {
        v.warn(
            "spec.paused",
            "the configuration is paused: no backups are made until paused is false",
        );
    }
    check_retention(&mut v, &spec.retention_policy);
    check_non_negative(
        &mut v,
        "spec.backupHistoryLimit",
        spec.backup_history_limit.map(i64::from),
        "completed sessions to keep (0 keeps only the newest completed one)",
    );
    check_positive_duration(&mut v, "spec.timeOut", spec.time_out.as_deref());
    if let Some(why) = spec.driver.and_then(|d| d.refusal()) {
        v.error("spec.driver", why);
    }
    if let Some(retry) = &spec.retry_config {
        check_non_negative(
            &mut v,
            "spec.retryConfig.maxRetry",
            retry.max_retry.map(i64::from),
            "retries of a failed session (0 turns retries off)",
        );
        check_positive_duration(&mut v, "spec.retryConfig.delay", retry.delay.as_deref());
    }
    check_non_negative(
        &mut v,
        "spec.startingDeadlineSeconds",
        spec.starting_deadline_seconds,
        "seconds a missed slot may still start late",
    );

    // The objects it names, looked up once (as resolution does).
    let found = Dereferenced::of(&References::from(new), lookups, None);
    check_target(&mut v, "spec.target", ns, &spec.target.r#ref, &found);
    check_repository(&mut v, "spec.repository", ns, &spec.repository, &found);
    check_task(&mut v, "spec.task", spec.task.as_ref(), &found);
    super::native::check_task_driver(
        &mut v,
        "spec.task.name",
        found.task.as_deref(),
        found.repository.as_deref(),
    );
    check_runtime_settings(
        &mut v,
        "spec.runtimeSettings",
        spec.runtime_settings.as_ref(),
    );
    check_temp_dir(&mut v, "spec.tempDir", spec.temp_dir.as_ref());
    super::hooks::check_backup_hooks(&mut v, spec.hooks.as_ref());
    JobRequest::from(new).check(&mut v, policy);
    check_interim_volume_template(
        &mut v,
        "spec.interimVolumeTemplate",
        spec.interim_volume_template.as_ref(),
    );
    v
}

/// `spec.schedule` and `spec.timeZone`, each reported at its own path; a warning when the
/// schedule runs more often than every five minutes.
fn check_schedule(v: &mut Verdict, expr: &str, time_zone: Option<&str>) {
    // Parse without the zone first so a bad zone is not reported as a bad schedule.
    let schedule_ok = match Schedule::parse(expr, None) {
        Ok(_) => true,
        Err(e) => {
            v.error("spec.schedule", e.to_string());
            false
        }
    };
    let zone_ok = match time_zone {
        None => true,
        Some(tz) => match parse_time_zone(tz) {
            Ok(_) => true,
            Err(e) => {
                v.error("spec.timeZone", e.to_string());
                false
            }
        },
    };
    if !(schedule_ok && zone_ok) {
        return;
    }
    let Ok(schedule) = Schedule::parse(expr, time_zone) else {
        return;
    };
    // A fixed starting point keeps admission a pure function of the object; the sample covers
    // up to a year, so the shortest gap of any five-field schedule shows up.
    if let Some(gap) = min_interval(&schedule)
        && gap < Duration::minutes(MIN_QUIET_INTERVAL_MINUTES)
    {
        v.warn(
            "spec.schedule",
            format!(
                "{expr:?} runs as often as every {}: more often than every \
                     {MIN_QUIET_INTERVAL_MINUTES} minutes, sessions may overlap and load the \
                     database; consider e.g. \"*/15 * * * *\" or \"@hourly\"",
                human(gap)
            ),
        );
    }
}

/// The shortest gap of a schedule, remembered per (expression, zone): finding it walks up to a
/// year of slots (most of an admission's time), and the answer never changes because the
/// starting point is fixed. The memo is bounded; it is cleared when full.
fn min_interval(schedule: &Schedule) -> Option<Duration> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    type Memo = Mutex<HashMap<(String, String), Option<Duration>>>;
    static MEMO: OnceLock<Memo> = OnceLock::new();
    const MAX_ENTRIES: usize = 4096;
    let key = (
        schedule.expression().to_string(),
        schedule.time_zone().name().to_string(),
    );
    let memo = MEMO.get_or_init(Default::default);
    if let Some(hit) = memo.lock().ok().and_then(|m| m.get(&key).copied()) {
        return hit;
    }
    let from = DateTime::<Utc>::from_timestamp(1_735_689_600, 0).unwrap_or_default();
    let gap = schedule.min_interval(from);
    if let Ok(mut m) = memo.lock() {
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(key, gap);
    }
    gap
}

/// `1 minute`, `3 minutes`, `30 seconds`.
fn human(d: Duration) -> String {
    let minutes = d.num_minutes();
    if minutes >= 1 && d == Duration::minutes(minutes) {
        if minutes == 1 {
            "minute".to_owned()
        } else {
            format!("{minutes} minutes")
        }
    } else {
        format!("{} seconds", d.num_seconds())
    }
}

/// `spec.retentionPolicy`: a name, no negative counts, at least one rule that keeps something,
/// and a warning when it keeps more than [`MANY_SNAPSHOTS`].
fn check_retention(v: &mut Verdict, policy: &RetentionPolicy) {
    let path = "spec.retentionPolicy";
    if policy.name.is_empty() {
        v.error(
            format!("{path}.name"),
            "must not be empty: name the policy, e.g. \"keep-last-7\" (it appears in logs and \
             snapshot tags)",
        );
    }
    let mut total: i64 = 0;
    let mut any_rule = !policy.keep_tags.is_empty();
    for (field, count) in policy.keep_counts() {
        let Some(count) = count else { continue };
        if count < 0 {
            v.error(
                format!("{path}.{field}"),
                format!(
                    "{count} is negative: must be 0 or more (the number of snapshots this rule \
                     keeps; 0 or unset means the rule keeps none)"
                ),
            );
        } else if count > 0 {
            any_rule = true;
            total = total.saturating_add(count);
        }
    }
    for (i, tag) in policy.keep_tags.iter().enumerate() {
        if tag.is_empty() {
            v.error(
                format!("{path}.keepTags[{i}]"),
                "must not be empty: name a snapshot tag whose snapshots are kept",
            );
        }
    }
    if !any_rule {
        v.error(
            path,
            "has no keep rule: restic would keep every snapshot and prune nothing; set at least \
             one of keepLast, keepHourly, keepDaily, keepWeekly, keepMonthly, keepYearly to a \
             number above 0, or list keepTags",
        );
    }
    if total > MANY_SNAPSHOTS {
        v.warn(
            path,
            format!(
                "keeps up to {total} snapshots (the sum of the keep counts), more than \
                 {MANY_SNAPSHOTS}: the repository and every forget/prune run grow with it"
            ),
        );
    }
}

/// An optional integer that must be 0 or more; `what` says what it counts.
fn check_non_negative(v: &mut Verdict, path: &str, value: Option<i64>, what: &str) {
    if let Some(n) = value.filter(|n| *n < 0) {
        v.error(
            path,
            format!("{n} is negative: must be 0 or more, the number of {what}"),
        );
    }
}
