//! Schedule slots in tests: schedules are minute-level (`* * * * *`), so a test waits for the
//! next minute, then counts the sessions made for a slot by their `cairn.dev/slot` annotation.

use std::time::Duration;

use cairn_api::BackupSession;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use crate::ControlPlane;
use crate::wait_for;

/// Time since the Unix epoch.
pub fn unix_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
}

/// Seconds until the next minute starts.
pub fn until_next_minute() -> Duration {
    Duration::from_secs(60) - Duration::from_nanos((unix_now().as_nanos() % 60_000_000_000) as u64)
}

/// The next minute's slot, as Unix seconds.
pub fn next_slot() -> i64 {
    (unix_now().as_secs() / 60 + 1) as i64 * 60
}

/// Every BackupSession in `ns` (none when the API server does not answer).
pub async fn sessions(cp: &ControlPlane, ns: &str) -> Vec<BackupSession> {
    let api: Api<BackupSession> = Api::namespaced(cp.client(), ns);
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}

/// Sessions of configuration `config` made for the schedule slot at `slot` (Unix seconds), by
/// their `cairn.dev/slot` annotation: a second run of a slot under another name counts too.
pub async fn runs_of_slot(cp: &ControlPlane, ns: &str, config: &str, slot: i64) -> usize {
    sessions(cp, ns)
        .await
        .iter()
        .filter(|s| s.spec.invoker.name == config)
        .filter_map(|s| {
            s.metadata
                .annotations
                .as_ref()?
                .get("cairn.dev/slot")
                .cloned()
        })
        .filter(|a| {
            a.parse::<k8s_openapi::jiff::Timestamp>()
                .is_ok_and(|t| t.as_second() == slot)
        })
        .count()
}

/// Waits (up to `timeout`) for session `name` in `ns`.
pub async fn wait_for_session(
    cp: &ControlPlane,
    ns: &str,
    name: &str,
    timeout: Duration,
) -> BackupSession {
    wait_for(timeout, name, || async {
        sessions(cp, ns)
            .await
            .into_iter()
            .find(|s| s.name_any() == name)
    })
    .await
}

/// Waits for the session of `config` for the slot after `slot`: by then the controller has put
/// `slot` behind it, so what it made for `slot` is final.
pub async fn wait_for_next_slot(cp: &ControlPlane, ns: &str, config: &str, slot: i64) {
    let next = format!("{config}-{}", slot + 60);
    wait_for_session(cp, ns, &next, Duration::from_secs(90)).await;
}
