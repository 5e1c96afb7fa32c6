//! The scheduling decision for a BackupConfiguration at a moment, as a pure function: which
//! slot to create a session for now (named by the slot, so a slot never runs twice), how many
//! missed slots to count as skipped, and when to look again.

use cairn_api::BackupConfiguration;
use cairn_api::defaults::DEFAULT_STARTING_DEADLINE_SECONDS;
use cairn_api::schedule::{MissedSlot, Schedule};
use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};

/// What the scheduler does for a configuration now.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// Create the session of this slot now.
    pub create: Option<DateTime<Utc>>,
    /// Slots that were missed beyond `startingDeadlineSeconds` (counted in a metric).
    pub skipped: u64,
    /// The newest slot dealt with (created or skipped): the new `status.lastScheduleTime`.
    pub last_schedule: Option<DateTime<Utc>>,
    /// The next slot after now: `status.nextScheduleTime`, and when to reconcile again.
    pub next: Option<DateTime<Utc>>,
}

/// Converts a Kubernetes timestamp to chrono.
pub fn to_chrono(t: &k8s_openapi::jiff::Timestamp) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().try_into().unwrap_or(0))
}

/// Converts chrono to a Kubernetes timestamp.
pub fn to_time(t: DateTime<Utc>) -> Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    k8s_openapi::jiff::Timestamp::from_second(t.timestamp())
        .ok()
        .map(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time)
}

/// Decides for `config` at `now`. Slots are looked for after `status.lastScheduleTime` (or
/// `remembered`, the newest slot this process dealt with, when that is later: the status read
/// may predate our own write), or after the configuration's creation: a new configuration never
/// runs a slot from before it existed.
pub fn decide(
    config: &BackupConfiguration,
    remembered: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<Decision, String> {
    let spec = &config.spec;
    let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
        .map_err(|e| format!("spec.schedule: {e}"))?;
    let next = schedule.next_slot(now);
    let last_seen = config
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(config.metadata.creation_timestamp.as_ref())
        .and_then(|t| to_chrono(&t.0))
        .unwrap_or(now)
        .max(remembered.unwrap_or(DateTime::<Utc>::MIN_UTC));
    let mut decision = Decision {
        create: None,
        skipped: 0,
        last_schedule: None,
        next,
    };
    if spec.paused.unwrap_or(false) {
        return Ok(decision);
    }
    let deadline = Duration::seconds(
        spec.starting_deadline_seconds
            .unwrap_or(DEFAULT_STARTING_DEADLINE_SECONDS)
            .max(0),
    );
    match schedule.missed_slot(last_seen, now, deadline) {
        MissedSlot::None => {}
        MissedSlot::Run { slot, skipped } => {
            decision.create = Some(slot);
            decision.skipped = skipped;
            decision.last_schedule = Some(slot);
        }
        MissedSlot::Skip { latest, count } => {
            decision.skipped = count;
            decision.last_schedule = Some(latest);
        }
    }
    Ok(decision)
}

/// How soon work that gave way to a slot's creations looks again.
pub const SLOT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// How long after a slot its creations take precedence at most: past this, nothing waits for
/// them any more (a configuration deleted just before its slot cannot hold the rest up).
const SLOT_PRECEDENCE: Duration = Duration::seconds(10);

/// Whether a slot that came less than 10 s before `now` still has a session to create:
/// `upcoming` holds each configuration's next slot, `dealt` the newest slot dealt with.
pub fn slot_in_progress(
    upcoming: &HashMap<String, DateTime<Utc>>,
    dealt: &HashMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> bool {
    upcoming.iter().any(|(uid, next)| {
        *next <= now && now - *next < SLOT_PRECEDENCE && dealt.get(uid).is_none_or(|d| d < next)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(created: &str, last: Option<&str>, paused: bool) -> BackupConfiguration {
        let mut v = json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
            "metadata": {"name": "c", "namespace": "n", "creationTimestamp": created},
            "spec": {"schedule": "*/10 * * * *", "paused": paused, "startingDeadlineSeconds": 120,
                     "repository": {"name": "r"},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "a"}},
                     "retentionPolicy": {"name": "k", "keepLast": 1}}
        });
        if let Some(last) = last {
            v["status"] = json!({"lastScheduleTime": last});
        }
        serde_json::from_value(v).expect("config")
    }

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().expect("time")
    }

    #[test]
    fn due_slot_is_created_once() {
        let c = config("2026-11-25T10:01:00Z", None, false);
        let d = decide(&c, None, t("2026-11-25T10:10:05Z")).expect("decides");
        assert_eq!(d.create, Some(t("2026-11-25T10:10:00Z")));
        assert_eq!(d.next, Some(t("2026-11-25T10:20:00Z")));
        // After recording the slot, the same moment creates nothing.
        let c = config("2026-11-25T10:01:00Z", Some("2026-11-25T10:10:00Z"), false);
        let d = decide(&c, None, t("2026-11-25T10:10:06Z")).expect("decides");
        assert_eq!(d.create, None);
    }

    #[test]
    fn nothing_before_creation_and_nothing_when_paused() {
        let c = config("2026-11-25T10:05:00Z", None, false);
        assert_eq!(
            decide(&c, None, t("2026-11-25T10:06:00Z"))
                .expect("decides")
                .create,
            None
        );
        let c = config("2026-11-25T10:01:00Z", None, true);
        let d = decide(&c, None, t("2026-11-25T10:10:05Z")).expect("decides");
        assert_eq!(d.create, None);
        assert_eq!(d.next, Some(t("2026-11-25T10:20:00Z")));
    }

    #[test]
    fn missed_slots_within_the_deadline_run_once_older_are_skipped() {
        // Controller down from 10:05 to 10:31: 10:10 and 10:20 are too old, 10:30 runs.
        let c = config("2026-11-25T10:01:00Z", Some("2026-11-25T10:00:00Z"), false);
        let d = decide(&c, None, t("2026-11-25T10:31:00Z")).expect("decides");
        assert_eq!(d.create, Some(t("2026-11-25T10:30:00Z")));
        assert_eq!(d.skipped, 2);
        // Down until 10:33: 10:30 is beyond the 120 s deadline too.
        let d = decide(&c, None, t("2026-11-25T10:33:00Z")).expect("decides");
        assert_eq!(d.create, None);
        assert_eq!(d.skipped, 3);
        assert_eq!(d.last_schedule, Some(t("2026-11-25T10:30:00Z")));
    }

    #[test]
    fn a_stale_status_does_not_count_a_slot_dealt_with_again() {
        // The cache still shows 10:00 although this process skipped up to 10:30 already.
        let c = config("2026-11-25T10:01:00Z", Some("2026-11-25T10:00:00Z"), false);
        let d = decide(
            &c,
            Some(t("2026-11-25T10:30:00Z")),
            t("2026-11-25T10:33:00Z"),
        )
        .expect("decides");
        assert_eq!((d.create, d.skipped), (None, 0));
        // A later status than the memory wins as well.
        let d = decide(
            &c,
            Some(t("2026-11-25T09:00:00Z")),
            t("2026-11-25T10:05:00Z"),
        )
        .expect("decides");
        assert_eq!((d.create, d.skipped), (None, 0));
    }

    #[test]
    fn a_slot_is_in_progress_until_dealt_with_or_ten_seconds_old() {
        let slot = t("2026-11-25T10:10:00Z");
        let upcoming = HashMap::from([("a".to_string(), slot), ("b".to_string(), slot)]);
        let mut dealt = HashMap::from([("a".to_string(), slot)]);
        assert!(!slot_in_progress(
            &upcoming,
            &dealt,
            t("2026-11-25T10:09:59Z")
        ));
        assert!(slot_in_progress(
            &upcoming,
            &dealt,
            t("2026-11-25T10:10:01Z")
        ));
        // Nothing waits for a slot 10 s old, dealt with or not.
        assert!(!slot_in_progress(
            &upcoming,
            &dealt,
            t("2026-11-25T10:10:10Z")
        ));
        dealt.insert("b".to_string(), slot);
        assert!(!slot_in_progress(
            &upcoming,
            &dealt,
            t("2026-11-25T10:10:01Z")
        ));
    }
}
