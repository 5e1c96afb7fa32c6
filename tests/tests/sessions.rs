//! Sessions from start to end on the real node: `cairn-webhook` + `cairn-controller` on a real
//! kube-apiserver, the Job controller and scheduler placing each Job's Pod, the kubelet running
//! it in containerd, in namespaces that enforce the `restricted` Pod Security Standard.
//!
//! Where a test needs an exact agent result (figures, a failure of a given phase) or a Job that
//! runs until it is stopped, its Task runs `cairn-fake-agent` from the fake agent's image (the
//! only stand-in here: the Pod, the termination message and the kubelet are real). The wipe-out
//! and the secret-leak tests run the real agent from cairn's image against MinIO and OpenSearch
//! through the bridge. The failure modes the kubelet and the Job controller produce (OOM, image
//! pull, eviction, deadline, deleted Job, unschedulable) are in `tests/tests/node.rs`.

use std::time::Duration;

use cairn_api::{BackupConfiguration, BackupSession, Repository, RestoreSession};
use cairn_tests::ControlPlane;
use cairn_tests::forward::Forward;
use cairn_tests::objects::{
    apply, configuration, failure, fake_fixture, fake_task, finished, interim_volume, phase, ready,
    running_container, session,
};
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use cairn_tests::system::{OnNode, on_node, restricted_namespace};
use cairn_tests::wait_for;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

async fn env() -> &'static OnNode {
    static ENV: OnceCell<OnNode> = OnceCell::const_new();
    ENV.get_or_init(|| on_node(ControlPlane::shared(), "sessions", &[]))
        .await
}

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// How long a session on the node may take here (Pod start included).
const SESSION_TIME: Duration = Duration::from_secs(120);

const SNAPSHOT: &str = "4f2c1d0e9b8a7f6e5d4c3b2a190817263544536271809a8b7c6d5e4f3a2b1c0d";

fn backup_result() -> String {
    json!({"kind": "backup", "snapshot": SNAPSHOT, "time": "2026-11-25T10:00:00Z", "host": "host-0",
           "indices": 3, "documents": 1000, "totalBytes": 1_048_576, "addedBytes": 524_288,
           "durationSeconds": 1.5, "snapshotsKept": 1, "snapshotsRemoved": 2,
           "repository": {"snapshotCount": 4, "sizeBytes": 524_288, "integrity": true}})
    .to_string()
}

/// A restricted namespace with the fake agent's Task `fake-<ns>` run with `args`, and
/// [`fake_fixture`]'s objects, its configuration Ready.
async fn fake_namespace(args: &[&str], extra: Value) -> String {
    let ns = restricted_namespace(cp(), "sessions").await;
    let task = format!("fake-{ns}");
    let mut objects = fake_task(&task, args);
    objects.extend(fake_fixture(&ns, &task, extra));
    apply(cp(), &objects);
    ready(cp(), &ns, "cfg").await;
    ns
}

#[tokio::test]
async fn a_backup_session_succeeds_with_the_agents_result() {
    let env = env().await;
    let ns = fake_namespace(&["--result", &backup_result()], json!({})).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    let status = s.status.clone().expect("status");
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    let snap = status.snapshot.expect("snapshot in status");
    assert_eq!(snap.id, SNAPSHOT);
    assert_eq!(snap.documents, Some(1000));
    assert_eq!(snap.added_bytes, Some(524_288));
    assert!(status.session_duration.is_some());
    // Stash's shape, which dashboards and scripts read.
    let host = &status.targets[0].stats[0];
    assert_eq!(host.hostname, "host-0");
    assert_eq!(host.snapshots[0].name, SNAPSHOT[..8]);
    assert_eq!(host.snapshots[0].uploaded.as_deref(), Some("512.0 KiB"));
    assert_eq!(status.targets[0].r#ref.name, "es");

    let repos: Api<Repository> = Api::namespaced(cp().client(), &ns);
    let repo = wait_for(Duration::from_secs(10), "repository status", || async {
        let r = repos.get_opt("repo").await.ok()??;
        r.status.filter(|st| st.snapshot_count.is_some())
    })
    .await;
    assert_eq!(repo.snapshot_count, Some(4));
    assert_eq!(repo.total_size.as_deref(), Some("512.0 KiB"));
    assert_eq!(repo.integrity, Some(true));
    assert_eq!(repo.snapshots_removed_on_last_cleanup, Some(2));
    assert!(repo.last_backup_time.is_some());

    // The configuration's status is the controller's last write for a success.
    let configs: Api<BackupConfiguration> = Api::namespaced(cp().client(), &ns);
    wait_for(Duration::from_secs(10), "lastSuccessfulSession", || async {
        let c = configs.get_opt("cfg").await.ok()??;
        c.status
            .and_then(|s| s.last_successful_session)
            .filter(|s| s == "now")
    })
    .await;

    let events = cp().kubectl(["get", "events", "-n", &ns, "-o", "json"]);
    let text = String::from_utf8_lossy(&events.stdout);
    assert!(
        text.contains("BackupSucceeded"),
        "no BackupSucceeded event: {text}"
    );
    assert!(
        !text.contains("not-logged-anywhere"),
        "a secret value reached an event"
    );
    let metrics = env.controller.metrics().expect("metrics");
    assert!(
        metrics.contains("cairn_backup_last_documents{"),
        "{metrics}"
    );
    // Per configuration, from the agent's count of the configuration's own snapshots.
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("cairn_backup_snapshots{")
                && l.contains(&format!("namespace=\"{ns}\""))
                && l.contains("configuration=\"cfg\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

/// A session applied together with its configuration (one `kubectl apply`, as GitOps does)
/// waits for the configuration's first evaluation instead of being skipped.
#[tokio::test]
async fn a_session_applied_with_its_configuration_runs() {
    env().await;
    let ns = restricted_namespace(cp(), "sessions").await;
    let task = format!("fake-{ns}");
    let mut objects = fake_task(&task, &["--result", &backup_result()]);
    objects.extend(fake_fixture(&ns, &task, json!({})));
    objects.push(session(&ns, "together", "cfg"));
    apply(cp(), &objects);
    let s = finished(cp(), &ns, "together", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
}

/// The agent's own failure (phase and reason in its termination message, a non-zero exit)
/// fails the session with its words.
#[tokio::test]
async fn an_agents_failure_fails_the_session_with_its_words() {
    env().await;
    let failing =
        r#"{"kind":"failure","phase":"connect","reason":"connection refused by 127.0.0.1:9"}"#;
    let ns = fake_namespace(&["--result", failing, "--exit", "2"], json!({})).await;
    apply(cp(), &[session(&ns, "exit", "cfg")]);
    let s = finished(cp(), &ns, "exit", SESSION_TIME).await;
    let (reason, message) = failure(&s);
    assert_eq!(reason, "ContainerFailed", "{message}");
    assert!(message.contains("connect: connection refused"), "{message}");
    assert!(message.contains("exited with code 2"), "{message}");
}

#[tokio::test]
async fn a_session_is_skipped_while_another_runs_and_gets_its_interim_volume() {
    let env = env().await;
    let ns = fake_namespace(&["--sleep", "600"], interim_volume()).await;
    env.node
        .create_local_volumes(cp().client(), &format!("{ns}-pv"), 1, "2Gi")
        .await
        .expect("local PVs");
    apply(cp(), &[session(&ns, "first", "cfg")]);
    running_container(cp(), &ns, "first").await;
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(cp().client(), &ns);
    let pvc = pvcs.get("first-dump").await.expect("interim PVC");
    let owner = pvc.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.name.as_str()),
        Some("first"),
        "owned by its session"
    );
    let spec = pvc.spec.expect("spec");
    assert_eq!(spec.access_modes, Some(vec!["ReadWriteOnce".to_string()]));
    assert!(spec.volume_name.is_some(), "bound by the PV binder");

    apply(cp(), &[session(&ns, "second", "cfg")]);
    let s = finished(cp(), &ns, "second", SESSION_TIME).await;
    assert_eq!(phase(&s), "Skipped");
    let (reason, message) = failure(&s);
    assert_eq!(reason, "Skipped");
    assert!(message.contains("another session"), "{message}");
    let sessions: Api<cairn_api::BackupSession> = Api::namespaced(cp().client(), &ns);
    let first = sessions.get("first").await.expect("first");
    assert_eq!(phase(&first), "Running", "the first goes on");
}

#[tokio::test]
async fn a_restore_session_succeeds_with_what_was_restored() {
    env().await;
    let result = json!({"kind": "restore", "snapshot": SNAPSHOT, "indices": 3, "documents": 1000,
                        "durationSeconds": 2.0})
    .to_string();
    let ns = fake_namespace(&["--result", &result], json!({})).await;
    let task = format!("fake-{ns}");
    apply(
        cp(),
        &[
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession", "metadata": {"name": "back", "namespace": ns},
        "spec": {"repository": {"name": "repo"}, "task": {"name": task},
                 "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                            "rules": [{"snapshots": ["latest"]}]}}}),
        ],
    );
    let api: Api<RestoreSession> = Api::namespaced(cp().client(), &ns);
    let r = wait_for(SESSION_TIME, "the restore to finish", || async {
        let r = api.get_opt("back").await.ok()??;
        r.status.as_ref()?.phase?.is_final().then_some(r)
    })
    .await;
    let status = r.status.expect("status");
    assert_eq!(
        status.phase.map(|p| p.to_string()).as_deref(),
        Some("Succeeded"),
        "{:?}",
        status.conditions
    );
    let restored = status.restored.expect("restored");
    assert_eq!(restored.documents, Some(1000));
    assert_eq!(restored.snapshot, SNAPSHOT);
    let jobs = cp().kubectl(["get", "jobs", "-n", &ns, "-o", "name"]);
    assert!(String::from_utf8_lossy(&jobs.stdout).contains("cairn-restore-back"));
}

/// A session past its `timeOut` fails `DeadlineExceeded` and its Job is deleted (its Pod on the
/// node with it); the failure is retried exactly once, and the retry's own decision not to
/// retry again is recorded.
#[tokio::test]
async fn a_deadline_deletes_the_job_and_a_failure_is_retried_once() {
    env().await;
    let extra = json!({"timeOut": "5s", "backupHistoryLimit": 5,
                       "retryConfig": {"maxRetry": 1, "delay": "1s"}});
    let ns = fake_namespace(&["--sleep", "600"], extra).await;
    apply(cp(), &[session(&ns, "manual", "cfg")]);
    let failed = finished(cp(), &ns, "manual", SESSION_TIME).await;
    assert_eq!(
        failure(&failed).0,
        "DeadlineExceeded",
        "{:?}",
        failed.status
    );
    // Foreground deletion: the Job is gone or going.
    let jobs: Api<Job> = Api::namespaced(cp().client(), &ns);
    let job = jobs.get_opt("cairn-backup-manual").await.expect("get");
    assert!(
        job.is_none_or(|j| j.metadata.deletion_timestamp.is_some()),
        "the Job was not deleted"
    );

    // Exactly one retry, which fails the same way and is not retried again.
    let retry = finished(cp(), &ns, "manual-retry", SESSION_TIME).await;
    assert_eq!(failure(&retry).0, "DeadlineExceeded");
    assert_eq!(retry.spec.retry_left, Some(0));
    let sessions: Api<BackupSession> = Api::namespaced(cp().client(), &ns);
    let retried = |name: &'static str, want: bool| {
        let sessions = sessions.clone();
        async move {
            let s = sessions.get_opt(name).await.ok()??;
            (s.status?.retried == Some(want)).then_some(())
        }
    };
    wait_for(Duration::from_secs(20), "retried=true on the first", || {
        retried("manual", true)
    })
    .await;
    // The retry's own decision: no retries left, recorded in its status (a positive signal; a
    // second retry would be made by the same reconcile that writes it).
    wait_for(Duration::from_secs(20), "the retry's decision", || {
        retried("manual-retry", false)
    })
    .await;
    let names: Vec<String> = sessions
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .map(|s| s.metadata.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
}

/// `restic init` (the host's restic) of a repository at `prefix` of MinIO's `bucket`.
fn restic_init(s3: &S3Server, bucket: &str, prefix: &str, password: &str) {
    let repository = match prefix {
        "" => s3.restic_repository(bucket),
        prefix => format!("{}/{prefix}", s3.restic_repository(bucket)),
    };
    if let Err(e) = s3.restic(&repository, password, &["init"]) {
        panic!("{e:#}");
    }
}

/// Deleting a Repository with `wipeOut` runs the real agent's `wipe` Job, which empties its
/// prefix in MinIO before the finalizer lets the Repository go; a Repository without it goes at
/// once and its data stays.
#[tokio::test]
async fn a_repository_with_wipe_out_is_wiped_before_it_goes() {
    let env = env().await;
    let ns = restricted_namespace(cp(), "sessions").await;
    let s3 = S3Server::start().expect("MinIO");
    s3.create_bucket("wipe").expect("bucket");
    let s3_forward = Forward::start(env.node.host_ip(), s3.port()).expect("forward");
    let (doomed, kept) = (format!("{ns}/a/b"), format!("{ns}/kept"));
    restic_init(&s3, "wipe", &doomed, "wipe-password");
    restic_init(&s3, "wipe", &kept, "wipe-password");
    let under = |prefix: &str| {
        let keys = s3.list_objects("wipe").expect("list");
        keys.iter()
            .filter(|k| k.starts_with(&format!("{prefix}/")))
            .count()
    };
    assert!(under(&doomed) > 0 && under(&kept) > 0, "both initialised");
    let repository = |name: &str, prefix: &str, wipe: bool| {
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": name, "namespace": ns},
            "spec": {"wipeOut": wipe, "backend": {"storageSecretName": "repo-secret",
                     "s3": {"endpoint": s3_forward.http_url(), "bucket": "wipe", "prefix": prefix, "region": s3.region()}}}})
    };
    apply(
        cp(),
        &[
            json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": "wipe-password", "AWS_ACCESS_KEY_ID": s3.access_key(),
                              "AWS_SECRET_ACCESS_KEY": s3.secret_key()}}),
            repository("doomed", &doomed, true),
            repository("kept", &kept, false),
        ],
    );
    let repos: Api<Repository> = Api::namespaced(cp().client(), &ns);
    wait_for(
        Duration::from_secs(20),
        "the wipe-out finalizer",
        || async {
            let r = repos.get_opt("doomed").await.ok()??;
            r.metadata
                .finalizers?
                .iter()
                .any(|f| f == "cairn.dev/wipe-out")
                .then_some(())
        },
    )
    .await;
    let out = cp().kubectl([
        "delete",
        "repo",
        "doomed",
        "kept",
        "-n",
        &ns,
        "--wait=false",
    ]);
    assert!(out.status.success());
    wait_for(
        SESSION_TIME,
        "the repository to go after its wipe",
        || async { repos.get_opt("doomed").await.ok()?.is_none().then_some(()) },
    )
    .await;
    assert_eq!(under(&doomed), 0, "the wiped prefix is empty");
    assert!(under(&kept) > 0, "the other repository's data stays");
    assert!(
        repos.get_opt("kept").await.expect("get").is_none(),
        "a repository without wipeOut goes at once"
    );
}

/// The real agent against a real OpenSearch (which takes the target's credentials without
/// checking them: it runs without its security plugin), failing where it uses each Secret:
/// storage keys the S3 server refuses, then a repository password that does not open the
/// repository. No value of either Secret may reach the session's status, the events, the Job, the
/// pods' termination messages, or the webhook's and controller's logs.
#[tokio::test]
async fn a_failing_agent_leaks_no_secret_value() {
    let env = env().await;
    let ns = restricted_namespace(cp(), "sessions").await;
    let s3 = S3Server::start().expect("MinIO");
    s3.create_bucket("leaks").expect("bucket");
    let search = OpenSearch::shared();
    let s3_forward = Forward::start(env.node.host_ip(), s3.port()).expect("forward");
    let search_forward = Forward::start(env.node.host_ip(), search.port()).expect("forward");
    let password = format!("pw-{ns}-repository");
    let bad_key = format!("AKIA{}", ns.to_uppercase().replace('-', ""));
    let bad_secret = format!("sk-{ns}-storage");
    let (user, es_password) = (format!("u-{ns}-target"), format!("pw-{ns}-target"));
    let repo_secret = |key: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": password, "AWS_ACCESS_KEY_ID": key,
                              "AWS_SECRET_ACCESS_KEY": secret}})
    };
    let objects = [
        repo_secret(&bad_key, &bad_secret),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "es-auth", "namespace": ns},
               "stringData": {"username": user, "password": es_password}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"url": search_forward.http_url()}, "secret": {"name": "es-auth"}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns},
               "spec": {"backend": {"storageSecretName": "repo-secret",
                        "s3": {"endpoint": s3_forward.http_url(), "bucket": "leaks", "region": s3.region()}}}}),
        configuration(&ns, "cfg", json!({"backupHistoryLimit": 10})),
    ];
    apply(cp(), &objects);
    ready(cp(), &ns, "cfg").await;
    apply(cp(), &[session(&ns, "refused-keys", "cfg")]);
    let refused = finished(cp(), &ns, "refused-keys", SESSION_TIME).await;
    assert_eq!(
        failure(&refused).0,
        "ContainerFailed",
        "{:?}",
        refused.status
    );

    // Right keys now, and a repository made with another password.
    restic_init(&s3, "leaks", "", "another-password");
    apply(cp(), &[repo_secret(s3.access_key(), s3.secret_key())]);
    apply(cp(), &[session(&ns, "wrong-password", "cfg")]);
    let wrong = finished(cp(), &ns, "wrong-password", SESSION_TIME).await;
    assert_eq!(failure(&wrong).0, "ContainerFailed", "{:?}", wrong.status);

    let mut seen = String::new();
    for kind in ["backupsessions", "events", "jobs", "pods"] {
        let out = cp().kubectl(["get", kind, "-n", &ns, "-o", "json"]);
        seen.push_str(&String::from_utf8_lossy(&out.stdout));
    }
    assert!(seen.contains("terminated"), "no pod ran: {seen}");
    seen.push_str(&env.controller.log_tail(10_000));
    seen.push_str(&env.webhook.log_tail(10_000));
    for value in [&password, &bad_key, &bad_secret, &user, &es_password] {
        assert!(!seen.contains(value.as_str()), "{value:?} leaked:\n{seen}");
    }
    assert!(!seen.contains(s3.secret_key()), "the S3 secret key leaked");
}

/// Issue 16, item 5: the agent saved its snapshot, then its retention failed (a live lock of
/// another process): the session is Succeeded with the snapshot, says what failed in a
/// condition and a Warning event, and the Repository keeps its last cleanup figure.
#[tokio::test]
async fn a_failed_retention_keeps_the_snapshot_in_the_status() {
    env().await;
    let mut result: Value = serde_json::from_str(&backup_result()).expect("json");
    result["snapshotsRemoved"] = json!(0);
    result["retentionError"] = json!(
        "repository: retention not applied: repository: s3:... is locked: a lock of laptop pid 42"
    );
    let result = result.to_string();
    let ns = fake_namespace(&["--result", &result], json!({})).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    let status = s.status.clone().expect("status");
    assert_eq!(status.snapshot.expect("snapshot in status").id, SNAPSHOT);
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "RetentionFailed")
        .unwrap_or_else(|| panic!("no RetentionFailed condition: {:?}", status.conditions));
    assert_eq!(
        (c.status.as_str(), c.reason.as_str()),
        ("True", "RetentionFailed")
    );
    assert!(
        c.message.contains("4f2c1d0e") && c.message.contains("a lock of laptop"),
        "{c:?}"
    );
    let warned = wait_for(Duration::from_secs(20), "RetentionFailed event", || async {
        let events = cp().kubectl([
            "get",
            "events",
            "-n",
            &ns,
            "--field-selector",
            "reason=RetentionFailed,type=Warning",
            "-o",
            "json",
        ]);
        let text = String::from_utf8_lossy(&events.stdout).into_owned();
        text.contains("a lock of laptop").then_some(text)
    })
    .await;
    assert!(warned.contains("\"now\""), "{warned}");
    let repos: Api<Repository> = Api::namespaced(cp().client(), &ns);
    let repo = wait_for(Duration::from_secs(10), "repository status", || async {
        let r = repos.get_opt("repo").await.ok()??;
        r.status.filter(|st| st.snapshot_count.is_some())
    })
    .await;
    assert_eq!(repo.snapshot_count, Some(4));
    assert_eq!(repo.snapshots_removed_on_last_cleanup, None, "{repo:?}");
}
