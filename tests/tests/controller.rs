//! `cairn-controller` (with `cairn-webhook` in front) on a real kube-apiserver: configuration
//! status follows what it references, one session per schedule slot named by the slot, paused
//! configurations make none, deadlines delete the Job, a deleted Job fails its session, a
//! failed session is retried exactly once, and a standby takes over from a dead leader.
//!
//! Sessions here never run a container (that is `tests/tests/sessions.rs`, with the job
//! runner): these tests are about the controller's own decisions.

use std::time::{Duration, Instant};

use cairn_api::{BackupConfiguration, BackupSession};
use cairn_tests::ControlPlane;
use cairn_tests::controller::Controller;
use cairn_tests::slots::{runs_of_slot, sessions, unix_now, until_next_minute, wait_for_next_slot};
use cairn_tests::system::{cairn_system, install};
use cairn_tests::wait_for;
use cairn_tests::webhook::Webhook;
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

struct Env {
    cp: &'static ControlPlane,
    webhook: Webhook,
    controller: Controller,
}

async fn env() -> &'static Env {
    static ENV: OnceCell<Env> = OnceCell::const_new();
    ENV.get_or_init(|| async {
        let cp = ControlPlane::shared();
        let (webhook, controller) = cairn_system(cp, "test-controller").await;
        Env {
            cp,
            webhook,
            controller,
        }
    })
    .await
}

fn apply(cp: &ControlPlane, objects: &[Value]) {
    if let Err(e) = cp.apply_objects(objects) {
        panic!("apply: {e}");
    }
}

impl Env {
    /// `kubectl apply` through the webhook; a refusal shows the webhook's log too.
    fn apply(&self, objects: &[Value]) {
        if let Err(e) = self.cp.apply_objects(objects) {
            panic!("apply: {e}\nwebhook log:\n{}", self.webhook.log_tail(30));
        }
    }
}

fn secret_and_app(ns: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s3-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": "p", "AWS_ACCESS_KEY_ID": "a", "AWS_SECRET_ACCESS_KEY": "s"}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"url": "http://127.0.0.1:9"}}}),
    ]
}

/// The Secret, the AppBinding and the Repository every configuration here names.
fn storage(ns: &str) -> Vec<Value> {
    let mut objects = secret_and_app(ns);
    objects.push(repository(ns));
    objects
}

fn repository(ns: &str) -> Value {
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "s3-repo", "namespace": ns},
           "spec": {"backend": {"storageSecretName": "s3-secret", "s3": {"endpoint": "http://127.0.0.1:9", "bucket": "cairn-test"}}}})
}

fn configuration(ns: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "schedule": "* * * * *",
        "repository": {"name": "s3-repo"},
        "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
        "retentionPolicy": {"name": "keep", "keepLast": 3}
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

async fn config_phase(cp: &ControlPlane, ns: &str, name: &str) -> Option<(String, Value)> {
    let api: Api<BackupConfiguration> = Api::namespaced(cp.client(), ns);
    let c = api.get_opt(name).await.ok()??;
    let status = serde_json::to_value(c.status?).ok()?;
    Some((status["phase"].as_str()?.to_string(), status))
}

fn phase(s: &BackupSession) -> Option<String> {
    s.status.as_ref()?.phase.map(|p| p.to_string())
}

#[tokio::test]
async fn configuration_status_follows_what_it_references() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    env.apply(&[configuration(
        &ns,
        "nightly",
        json!({"schedule": "0 3 * * *"}),
    )]);
    let (_, status) = wait_for(Duration::from_secs(20), "NotReady", || async {
        config_phase(env.cp, &ns, "nightly")
            .await
            .filter(|(p, _)| p == "NotReady")
    })
    .await;
    let repo_found = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "RepositoryFound")
        .cloned()
        .unwrap_or_default();
    assert_eq!(repo_found["status"], "False", "{status}");
    assert!(
        status["nextScheduleTime"]
            .as_str()
            .is_some_and(|t| t.contains("T03:00:00")),
        "{status}"
    );

    // The Repository, its Secret and the AppBinding appear: Ready without any edit of the
    // configuration (watch-driven).
    let objects = storage(&ns);
    env.apply(&objects);
    let (_, status) = wait_for(Duration::from_secs(20), "Ready", || async {
        config_phase(env.cp, &ns, "nightly")
            .await
            .filter(|(p, _)| p == "Ready")
    })
    .await;
    for c in status["conditions"].as_array().into_iter().flatten() {
        assert!(
            c["observedGeneration"].is_number() && c["lastTransitionTime"].is_string(),
            "{c}"
        );
    }

    // Its series go with it: a deleted configuration leaves no metric behind.
    let series = |metrics: &str| {
        metrics
            .lines()
            .filter(|l| {
                l.contains(&format!("namespace=\"{ns}\""))
                    && l.contains("configuration=\"nightly\"")
            })
            .count()
    };
    wait_for(
        Duration::from_secs(20),
        "the schedule interval series",
        || async { (series(&env.controller.metrics().ok()?) > 0).then_some(()) },
    )
    .await;
    let out = env.cp.kubectl(["delete", "bc", "nightly", "-n", &ns]);
    assert!(out.status.success());
    wait_for(
        Duration::from_secs(20),
        "no series of the deleted configuration",
        || async { (series(&env.controller.metrics().ok()?) == 0).then_some(()) },
    )
    .await;
}

/// A session of the slot's name that cairn did not make for the slot (a user's, made ahead)
/// does not pass for the slot's own run: the configuration gets a `SlotTaken` warning.
#[tokio::test]
async fn a_slot_whose_name_is_taken_is_reported() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let mut objects = storage(&ns);
    objects.push(configuration(
        &ns,
        "squatted",
        json!({"backupHistoryLimit": 10}),
    ));
    env.apply(&objects);
    // The slot after the next one: created well before the controller gets there.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let slot = (now / 60 + 2) * 60;
    let name = cairn_api::naming::session_name_for_slot("squatted", slot);
    env.apply(&[json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "squatted"}}})]);
    wait_for(Duration::from_secs(200), "a SlotTaken event", || async {
        let out = env.cp.kubectl([
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=SlotTaken",
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.contains(&name).then_some(text)
    })
    .await;
}

#[tokio::test]
async fn one_session_per_slot_named_by_the_slot_and_none_when_paused() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let mut objects = storage(&ns);
    // History kept: every session made for a slot is still there to count.
    objects.push(configuration(
        &ns,
        "every-minute",
        json!({"backupHistoryLimit": 10}),
    ));
    objects.push(configuration(&ns, "paused", json!({"paused": true})));
    env.apply(&objects);
    let session = wait_for(Duration::from_secs(80), "a scheduled session", || async {
        sessions(env.cp, &ns)
            .await
            .into_iter()
            .find(|s| s.spec.invoker.name == "every-minute")
    })
    .await;
    let name = session.name_any();
    let slot: i64 = name
        .trim_start_matches("every-minute-")
        .parse()
        .expect("slot in the name");
    assert_eq!(slot % 60, 0, "{name} is not a minute slot");
    let created = session
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("created")
        .0
        .as_second();
    // On time, with room for a loaded machine (the scheduling bench measures the real lag).
    assert!(
        created - slot < 15,
        "session created {}s after its slot",
        created - slot
    );
    assert_eq!(session.spec.retry_left, Some(1));
    assert!(
        session.spec.job_template.is_some(),
        "the webhook resolved the Job"
    );
    let owner = session
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.name.as_str()),
        Some("every-minute"),
        "owned by its configuration"
    );

    let (_, status) = wait_for(Duration::from_secs(10), "lastScheduleTime", || async {
        config_phase(env.cp, &ns, "every-minute")
            .await
            .filter(|(_, s)| s["lastScheduleTime"].is_string())
    })
    .await;
    let next = status["nextScheduleTime"].as_str().unwrap_or_default();
    assert!(next.ends_with(":00Z"), "{status}");

    // Once the next slot has run: the slot ran once, and the paused configuration made nothing.
    wait_for_next_slot(env.cp, &ns, "every-minute", slot).await;
    assert_eq!(runs_of_slot(env.cp, &ns, "every-minute", slot).await, 1);
    let all = sessions(env.cp, &ns).await;
    assert!(
        all.iter().all(|s| s.spec.invoker.name != "paused"),
        "a paused configuration made a session"
    );
    let metrics = env.controller.metrics().expect("metrics");
    assert!(
        metrics.contains("cairn_scheduling_lag_seconds_count"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_standby_takes_over_from_a_dead_leader() {
    // Its own control plane: two controllers of their own, fighting over one lease.
    let cp = Box::leak(Box::new(ControlPlane::start().expect("control plane")));
    install(cp).await;
    // Long enough that a renewal delayed by a loaded machine does not hand the lease over.
    let lease = Duration::from_secs(8);
    let a = Controller::start(cp, "cairn-system", "a", lease.as_secs()).expect("a");
    a.wait_leader(Duration::from_secs(20)).expect("a leads");
    let b = Controller::start(cp, "cairn-system", "b", lease.as_secs()).expect("b");
    // b has tried the lease and found it held (its own count), and a still leads.
    wait_for(
        Duration::from_secs(20),
        "b to find the lease held",
        || async {
            b.metrics()
                .ok()?
                .lines()
                .any(|l| l.starts_with("cairn_leader_lease_attempts_total{outcome=\"held\"}"))
                .then_some(())
        },
    )
    .await;
    assert!(!b.is_leader(), "two leaders");
    assert!(a.is_leader(), "a lost the lease to nobody");
    let leading = |c: &Controller| {
        c.metrics()
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("cairn_leading ").map(str::to_string))
    };
    assert_eq!(leading(&a).as_deref(), Some("1"), "a's metric");
    assert_eq!(leading(&b).as_deref(), Some("0"), "b's metric");
    let killed = Instant::now();
    a.kill();
    b.wait_leader(lease * 3).expect("b takes over");
    assert_eq!(leading(&b).as_deref(), Some("1"), "b's metric");
    assert!(
        killed.elapsed() <= lease * 3,
        "takeover took {:?}",
        killed.elapsed()
    );

    // A graceful stop releases the lease. c tries at once when it starts, then every 20 s (a
    // third of its 60 s lease): it leads at its first try only if b gave the lease up (b renewed
    // it less than 8 s before stopping).
    b.terminate(Duration::from_secs(20)).expect("b stops");
    let started = Instant::now();
    let c = Controller::start(cp, "cairn-system", "c", 60).expect("c");
    c.wait_leader(Duration::from_secs(30))
        .expect("c takes over");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "c led only after {:?}: the lease was not released",
        started.elapsed()
    );
}

#[tokio::test]
async fn history_keeps_the_newest_completed_sessions() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let mut objects = storage(&ns);
    objects.push(configuration(
        &ns,
        "kept",
        json!({"schedule": "0 0 1 1 *", "timeOut": "1s",
        "backupHistoryLimit": 2, "retryConfig": {"maxRetry": 0}}),
    ));
    env.apply(&objects);
    wait_for(Duration::from_secs(20), "Ready", || async {
        config_phase(env.cp, &ns, "kept")
            .await
            .filter(|(p, _)| p == "Ready")
    })
    .await;
    for i in 1..=3 {
        let name = format!("run-{i}");
        env.apply(
            &[
                json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "kept"}}}),
            ],
        );
        wait_for(Duration::from_secs(20), "the session to fail", || async {
            sessions(env.cp, &ns)
                .await
                .into_iter()
                .find(|s| s.name_any() == name && phase(s).as_deref() == Some("Failed"))
        })
        .await;
        // Creation timestamps have a one-second resolution: keep the runs apart.
        let second = unix_now().as_secs();
        wait_for(Duration::from_secs(3), "the next second", || async {
            (unix_now().as_secs() > second).then_some(())
        })
        .await;
    }
    let names = wait_for(Duration::from_secs(20), "history cleaned to 2", || async {
        let names: Vec<String> = sessions(env.cp, &ns)
            .await
            .iter()
            .map(|s| s.name_any())
            .collect();
        (names.len() == 2).then_some(names)
    })
    .await;
    assert!(
        names.contains(&"run-3".to_string()) && names.contains(&"run-2".to_string()),
        "{names:?}"
    );
}

#[tokio::test]
async fn slots_missed_during_a_restart_run_once_within_the_deadline_and_are_counted_beyond() {
    let cp = Box::leak(Box::new(ControlPlane::start().expect("control plane")));
    install(cp).await;
    let ns = cp.new_namespace().await.expect("ns");
    let mut objects = storage(&ns);
    objects.push(configuration(
        &ns,
        "patient",
        json!({"startingDeadlineSeconds": 300}),
    ));
    objects.push(configuration(
        &ns,
        "strict",
        json!({"startingDeadlineSeconds": 5}),
    ));
    apply(cp, &objects);
    let first = Controller::start(cp, "cairn-system", "first", 4).expect("controller");
    first.wait_leader(Duration::from_secs(20)).expect("leads");
    // Let both configurations be seen (and their status written) before the outage.
    wait_for(Duration::from_secs(20), "status", || async {
        let a = config_phase(cp, &ns, "patient").await?;
        let b = config_phase(cp, &ns, "strict").await?;
        (a.0 == "Ready" && b.0 == "Ready").then_some(())
    })
    .await;
    // Stop cleanly shortly before a slot; come back 10 s after it.
    if until_next_minute() < Duration::from_secs(8) {
        tokio::time::sleep(until_next_minute() + Duration::from_secs(1)).await;
    }
    // The first controller has handled every slot so far; otherwise the second would count one
    // more missed slot than the outage made.
    let last_slot = unix_now().as_secs() as i64 / 60 * 60;
    wait_for(Duration::from_secs(20), "the last slot handled", || async {
        let api: Api<BackupConfiguration> = Api::namespaced(cp.client(), &ns);
        for name in ["patient", "strict"] {
            let c = api.get_opt(name).await.ok()??;
            let seen = c
                .status
                .as_ref()
                .and_then(|s| s.last_schedule_time.as_ref())
                .or(c.metadata.creation_timestamp.as_ref())?;
            if seen.0.as_second() < last_slot {
                return None;
            }
        }
        Some(())
    })
    .await;
    let before: Vec<String> = sessions(cp, &ns)
        .await
        .iter()
        .map(|s| s.name_any())
        .collect();
    first.terminate(Duration::from_secs(20)).expect("stops");
    let slot_wait = until_next_minute();
    let slot = (unix_now().as_secs() / 60 + 1) * 60;
    tokio::time::sleep(slot_wait + Duration::from_secs(10)).await;
    let second = Controller::start(cp, "cairn-system", "second", 4).expect("controller");
    second.wait_leader(Duration::from_secs(20)).expect("leads");
    let name = format!("patient-{slot}");
    wait_for(
        Duration::from_secs(20),
        "the missed slot to run",
        || async {
            sessions(cp, &ns)
                .await
                .into_iter()
                .find(|s| s.name_any() == name)
        },
    )
    .await;
    let missed = wait_for(
        Duration::from_secs(20),
        "the missed-slot metric",
        || async {
            let m = second.metrics().ok()?;
            m.lines()
                .find(|l| {
                    l.starts_with("cairn_missed_slots_total")
                        && l.contains("configuration=\"strict\"")
                })
                .map(str::to_string)
        },
    )
    .await;
    assert!(missed.trim_end().ends_with(" 1"), "{missed}");
    let strict: Vec<String> = sessions(cp, &ns)
        .await
        .iter()
        .map(|s| s.name_any())
        .filter(|n| n == &format!("strict-{slot}"))
        .collect();
    assert!(
        strict.is_empty(),
        "a slot beyond the deadline ran: {strict:?} (before: {before:?})"
    );
}

#[tokio::test]
async fn a_leader_killed_just_before_a_slot_leaves_exactly_one_session_for_it() {
    let cp = Box::leak(Box::new(ControlPlane::start().expect("control plane")));
    install(cp).await;
    let ns = cp.new_namespace().await.expect("ns");
    let mut objects = storage(&ns);
    objects.push(configuration(&ns, "ha", json!({"backupHistoryLimit": 10})));
    apply(cp, &objects);
    let lease = Duration::from_secs(4);
    let a = Controller::start(cp, "cairn-system", "a", lease.as_secs()).expect("a");
    a.wait_leader(Duration::from_secs(20)).expect("a leads");
    let b = Controller::start(cp, "cairn-system", "b", lease.as_secs()).expect("b");
    // Kill the leader 2 s before a slot.
    let wait = until_next_minute();
    if wait > Duration::from_secs(2) {
        tokio::time::sleep(wait - Duration::from_secs(2)).await;
    } else {
        tokio::time::sleep(wait + Duration::from_secs(58)).await;
    }
    let slot = (unix_now().as_secs() / 60 + 1) * 60;
    a.kill();
    let name = format!("ha-{slot}");
    let s = wait_for(
        lease * 3 + Duration::from_secs(20),
        "the new leader's session",
        || async {
            sessions(cp, &ns)
                .await
                .into_iter()
                .find(|s| s.name_any() == name)
        },
    )
    .await;
    assert!(b.is_leader());
    let created = s
        .metadata
        .creation_timestamp
        .as_ref()
        .expect("created")
        .0
        .as_second();
    // The lease runs out, b takes it within a third of it and schedules (its caches synced
    // while it stood by).
    assert!(
        created - slot as i64 <= (lease.as_secs() * 3 + 10) as i64,
        "created {}s after the slot",
        created - slot as i64
    );
    wait_for_next_slot(cp, &ns, "ha", slot as i64).await;
    assert_eq!(runs_of_slot(cp, &ns, "ha", slot as i64).await, 1);
}

/// `cairn_<name>{kind="Pod"} <value>` from the controller's metrics.
fn pod_metric(env: &Env, name: &str) -> Option<i64> {
    let text = env.controller.metrics().ok()?;
    let prefix = format!("cairn_{name}{{kind=\"Pod\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

/// The controller's Pod watch selects cairn's label: a Pod without it never reaches the
/// controller. The proof is positive: a labelled Pod created after the stranger, and deleted,
/// is counted (two events) and brings the store back to its size before; a watch that saw the
/// stranger would hold it (and count it) before the labelled Pod's events, so its store would
/// stay one larger.
#[tokio::test]
async fn the_pod_watch_sees_only_pods_with_cairns_label() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let (events, objects) = wait_for(
        Duration::from_secs(30),
        "the Pod watch's metrics",
        || async {
            Some((
                pod_metric(env, "watch_events_total")?,
                pod_metric(env, "watch_objects")?,
            ))
        },
    )
    .await;
    let pod = |name: &str, labels: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": name, "namespace": ns, "labels": labels},
               "spec": {"containers": [{"name": "c", "image": "registry.example/none:1"}]}})
    };
    apply(env.cp, &[pod("stranger", json!({"app": "not-cairn"}))]);
    apply(
        env.cp,
        &[pod(
            "marker",
            json!({"app.kubernetes.io/managed-by": "cairn"}),
        )],
    );
    let out = env
        .cp
        .kubectl(["delete", "pod", "marker", "-n", &ns, "--wait=false"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The marker's creation and deletion were processed (the stranger's creation came first).
    wait_for(
        Duration::from_secs(30),
        "the marker's two events",
        || async {
            let now = (
                pod_metric(env, "watch_events_total")?,
                pod_metric(env, "watch_objects")?,
            );
            (now.0 >= events + 2 && now.1 == objects).then_some(())
        },
    )
    .await;
}

/// Whether `c`'s admin server answers `path` with `code`.
fn answers(c: &Controller, path: &str, code: u16) -> Option<()> {
    (c.status(path).ok()? == code).then_some(())
}

/// Waits until `c` answers `path` with `code`; its log tail when it does not.
async fn wait_answer(c: &Controller, path: &str, code: u16, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while answers(c, path, code).is_none() {
        assert!(
            Instant::now() < deadline,
            "{path} not {code} after {timeout:?}: {:?}\n{}",
            c.status(path),
            c.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `/readyz` says whether every cache the reconcilers read has synced, on a leader and on a
/// standby alike (a standby is ready to take over). Without cairn's CRDs the watches of its
/// kinds cannot list: both controllers run, one leads, and neither is ready until the CRDs come.
#[tokio::test]
async fn ready_once_every_cache_has_synced_on_leader_and_standby() {
    let cp = Box::leak(Box::new(ControlPlane::start().expect("control plane")));
    cairn_tests::system::create_namespace(cp, "cairn-system").await;
    let a = Controller::start(cp, "cairn-system", "a", 4).expect("a");
    a.wait_leader(Duration::from_secs(20)).expect("a leads");
    let b = Controller::start(cp, "cairn-system", "b", 4).expect("b");
    for c in [&a, &b] {
        // The watches have met the missing kinds.
        wait_for(Duration::from_secs(30), "a watch error", || async {
            let log = std::fs::read_to_string(c.log_path()).ok()?;
            log.contains("watch error").then_some(())
        })
        .await;
        assert_eq!(c.status("/readyz").ok(), Some(503), "{}", c.log_tail(20));
        assert_eq!(c.status("/livez").ok(), Some(200), "{}", c.log_tail(20));
    }
    assert!(a.is_leader() && !b.is_leader());
    install(cp).await;
    for c in [&a, &b] {
        // The watches retry with a backoff of at most 30 s.
        wait_answer(c, "/readyz", 200, Duration::from_secs(90)).await;
    }
    assert!(!b.is_leader(), "b took the lease");
    // The standby's caches hold what a leader reads: the catalog's Tasks, for one.
    let tasks = b.metrics().expect("metrics").lines().find_map(|l| {
        l.strip_prefix("cairn_watch_objects{kind=\"Task\"} ")
            .map(str::to_string)
    });
    assert!(
        tasks.as_deref().is_some_and(|n| n != "0"),
        "the standby's Task cache: {tasks:?}"
    );
}

/// `/livez` turns false when the lease loop stops making attempts. The API server frozen: the
/// leader's renewals time out, it steps down and its way out (graceful shutdown, releasing the
/// lease) waits on the frozen server, its loop over: not live after twice the lease. The
/// standby's attempts time out too, but its loop goes on: live. Thawed, the standby leads.
#[tokio::test]
async fn live_while_the_lease_loop_runs_not_when_it_is_stuck() {
    let cp = Box::leak(Box::new(ControlPlane::start().expect("control plane")));
    install(cp).await;
    let lease = Duration::from_secs(4);
    let a = Controller::start(cp, "cairn-system", "a", lease.as_secs()).expect("a");
    a.wait_leader(Duration::from_secs(20)).expect("a leads");
    let b = Controller::start(cp, "cairn-system", "b", lease.as_secs()).expect("b");
    for c in [&a, &b] {
        wait_answer(c, "/readyz", 200, Duration::from_secs(30)).await;
    }
    let apiserver = cp.pids()[1];
    let frozen = cairn_tests::process::Frozen::new(apiserver);
    let since = Instant::now();
    wait_answer(&a, "/livez", 503, lease * 5).await;
    let stuck = since.elapsed();
    assert_eq!(b.status("/livez").ok(), Some(200), "{}", b.log_tail(20));
    assert!(!a.exited(), "the leader exited: nothing was stuck");
    drop(frozen);
    b.wait_leader(lease * 5).expect("b takes over");
    eprintln!(
        "the leader's /livez said 503 {:.1} s after the API server froze",
        stuck.as_secs_f64()
    );
}

/// `Repository.status.references` lists the configurations and restore sessions that use the
/// Repository, and follows them: a deleted configuration leaves the list.
#[tokio::test]
async fn a_repository_lists_what_uses_it() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let mut objects = storage(&ns);
    for name in ["nightly", "weekly"] {
        objects.push(configuration(
            &ns,
            name,
            json!({"schedule": "0 3 * * 0", "paused": true}),
        ));
    }
    objects.push(json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession",
        "metadata": {"name": "back", "namespace": ns},
        "spec": {"repository": {"name": "s3-repo"}, "task": {"name": "elasticsearch-restore"},
                 "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                            "rules": [{"snapshots": ["latest"]}]}}}));
    env.apply(&objects);
    let repos: Api<cairn_api::Repository> = Api::namespaced(env.cp.client(), &ns);
    let listed = |want: Vec<(&'static str, &'static str)>| {
        let repos = repos.clone();
        let ns = ns.clone();
        async move {
            let r = repos.get_opt("s3-repo").await.ok()??;
            let got: Vec<(String, String, Option<String>)> = r
                .status?
                .references
                .into_iter()
                .map(|x| (x.kind, x.name, x.namespace))
                .collect();
            let want: Vec<(String, String, Option<String>)> = want
                .iter()
                .map(|(k, n)| (k.to_string(), n.to_string(), Some(ns.clone())))
                .collect();
            (got == want).then_some(())
        }
    };
    wait_for(
        Duration::from_secs(30),
        "the repository's references",
        || {
            listed(vec![
                ("BackupConfiguration", "nightly"),
                ("BackupConfiguration", "weekly"),
                ("RestoreSession", "back"),
            ])
        },
    )
    .await;
    let out = env
        .cp
        .kubectl(["delete", "backupconfiguration", "weekly", "-n", &ns]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        Duration::from_secs(30),
        "the deleted configuration to leave the references",
        || {
            listed(vec![
                ("BackupConfiguration", "nightly"),
                ("RestoreSession", "back"),
            ])
        },
    )
    .await;
}
