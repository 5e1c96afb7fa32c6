//! Sessions from start to end: `cairn-webhook` + `cairn-controller` on a real kube-apiserver,
//! with the job runner (test infrastructure) playing the node. The Jobs' container is a small
//! shell program standing in for the agent: it writes an agent result to its termination log.
//!
//! Why the job runner and not the real node here: these tests feed the controller fabricated
//! agent results (exact figures, failures of a given phase) through a shell-script Task, and
//! cairn's image has no shell; the injected OOM, image-pull and eviction faults check the
//! controller's reading of the kubelet's statuses in the job runner's format. The same failure
//! modes, produced for real on the node (a memory limit, an image at `127.0.0.1:1`, the Eviction
//! API, a deadline, a deleted Job, a nodeSelector no node has), and a real backup as a restricted
//! Pod are in `tests/tests/node.rs`.

use std::time::Duration;

use cairn_api::{BackupConfiguration, BackupSession, Repository, RestoreSession};
use cairn_tests::ControlPlane;
use cairn_tests::controller::Controller;
use cairn_tests::jobrunner::{Fault, FaultTarget, JobRunner, Options};
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use cairn_tests::system::cairn_system;
use cairn_tests::wait_for;
use cairn_tests::webhook::{Webhook, workspace_binary};
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::Api;
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
        let (webhook, controller) = cairn_system(cp, "sessions").await;
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

const SNAPSHOT: &str = "4f2c1d0e9b8a7f6e5d4c3b2a190817263544536271809a8b7c6d5e4f3a2b1c0d";

fn backup_result() -> String {
    json!({"kind": "backup", "snapshot": SNAPSHOT, "time": "2026-11-25T10:00:00Z", "host": "host-0",
           "indices": 3, "documents": 1000, "totalBytes": 1_048_576, "addedBytes": 524_288,
           "durationSeconds": 1.5, "snapshotsKept": 1, "snapshotsRemoved": 2,
           "repository": {"snapshotCount": 4, "sizeBytes": 524_288, "integrity": true}})
    .to_string()
}

/// A Function and Task named `<name>` whose one step runs `script` with `sh -c`.
fn fake_task(name: &str, script: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
               "spec": {"image": "${AGENT_IMAGE}", "command": ["sh", "-c", script]}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
               "spec": {"steps": [{"name": name}]}}),
    ]
}

/// Secret, AppBinding, Repository and a configuration `cfg` using Task `task` (no slot soon:
/// the tests create sessions by hand).
fn fixture(ns: &str, task: &str, extra: Value) -> Vec<Value> {
    let mut spec = json!({
        "schedule": "0 0 1 1 *",
        "repository": {"name": "repo"},
        "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
        "task": {"name": task},
        "retentionPolicy": {"name": "keep", "keepLast": 3},
        "retryConfig": {"maxRetry": 0},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": "not-logged-anywhere"}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"url": "http://127.0.0.1:9"}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns},
               "spec": {"backend": {"storageSecretName": "repo-secret", "local": {"mountPath": "/backup", "emptyDir": {}}}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration", "metadata": {"name": "cfg", "namespace": ns},
               "spec": spec}),
    ]
}

fn session(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession", "metadata": {"name": name, "namespace": ns},
           "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "cfg"}}})
}

async fn ready(cp: &ControlPlane, ns: &str) {
    let api: Api<BackupConfiguration> = Api::namespaced(cp.client(), ns);
    wait_for(
        Duration::from_secs(30),
        "the configuration to be Ready",
        || async {
            let c = api.get_opt("cfg").await.ok()??;
            (format!("{:?}", c.status?.phase?) == "Ready").then_some(())
        },
    )
    .await;
}

async fn finished(cp: &ControlPlane, ns: &str, name: &str) -> BackupSession {
    let api: Api<BackupSession> = Api::namespaced(cp.client(), ns);
    wait_for(
        Duration::from_secs(60),
        &format!("session {name} to finish"),
        || async {
            let s = api.get_opt(name).await.ok()??;
            s.status.as_ref()?.phase?.is_final().then_some(s)
        },
    )
    .await
}

fn failure(s: &BackupSession) -> (String, String) {
    s.status
        .as_ref()
        .and_then(|st| {
            st.conditions
                .iter()
                .find(|c| c.type_ == "BackupFailed" || c.type_ == "BackupSkipped")
        })
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_backup_session_succeeds_with_the_agents_result() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let _runner = JobRunner::start(env.cp, Options::namespace(&ns));
    let task = format!("fake-{ns}");
    let script = format!(
        "printf '%s' '{}' > \"$CAIRN_TERMINATION_LOG\"",
        backup_result()
    );
    let mut objects = fake_task(&task, &script);
    objects.extend(fixture(&ns, &task, json!({})));
    apply(env.cp, &objects);
    ready(env.cp, &ns).await;
    apply(env.cp, &[session(&ns, "now")]);
    let s = finished(env.cp, &ns, "now").await;
    let status = s.status.clone().expect("status");
    assert_eq!(
        status.phase.map(|p| p.to_string()).as_deref(),
        Some("Succeeded"),
        "{:?}",
        failure(&s)
    );
    let snap = status.snapshot.expect("snapshot in status");
    assert_eq!(snap.id, SNAPSHOT);
    assert_eq!(snap.documents, Some(1000));
    assert_eq!(snap.added_bytes, Some(524_288));
    assert!(status.session_duration.is_some());

    let repos: Api<Repository> = Api::namespaced(env.cp.client(), &ns);
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
    let configs: Api<BackupConfiguration> = Api::namespaced(env.cp.client(), &ns);
    wait_for(Duration::from_secs(10), "lastSuccessfulSession", || async {
        let c = configs.get_opt("cfg").await.ok()??;
        c.status
            .and_then(|s| s.last_successful_session)
            .filter(|s| s == "now")
    })
    .await;

    let events = env.cp.kubectl(["get", "events", "-n", &ns, "-o", "json"]);
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
                && l.contains("configuration=\"cfg\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn every_failure_mode_fails_the_session_with_its_reason() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let runner = JobRunner::start(env.cp, Options::namespace(&ns));
    let task = format!("fake-{ns}");
    let failing = r#"printf '%s' '{"kind":"failure","phase":"connect","reason":"connection refused by 127.0.0.1:9"}' > "$CAIRN_TERMINATION_LOG"; exit 2"#;
    let mut objects = fake_task(&task, failing);
    // Keep every finished session: with the default history of one, each would be deleted as
    // soon as the next one ends.
    objects.extend(fixture(&ns, &task, json!({"backupHistoryLimit": 10})));
    apply(env.cp, &objects);
    ready(env.cp, &ns).await;

    apply(env.cp, &[session(&ns, "exit")]);
    let (reason, message) = failure(&finished(env.cp, &ns, "exit").await);
    assert_eq!(reason, "ContainerFailed");
    assert!(message.contains("connect: connection refused"), "{message}");

    for (name, fault, want) in [
        ("oom", Fault::OomKilled, "OOMKilled"),
        ("pull", Fault::ImagePullBackOff, "ImagePullBackOff"),
        ("evicted", Fault::Evicted, "Evicted"),
    ] {
        runner.inject(FaultTarget::session(&ns, name), fault);
        apply(env.cp, &[session(&ns, name)]);
        let s = finished(env.cp, &ns, name).await;
        let (reason, message) = failure(&s);
        assert_eq!(reason, want, "{name}: {message}");
        assert!(!message.is_empty());
    }
}

#[tokio::test]
async fn a_session_is_skipped_while_another_runs_and_gets_its_interim_volume() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let runner = JobRunner::start(env.cp, Options::namespace(&ns));
    let task = format!("fake-{ns}");
    let mut objects = fake_task(&task, "sleep 600");
    objects.extend(fixture(
        &ns,
        &task,
        json!({"interimVolumeTemplate": {
        "metadata": {"name": "dump"},
        "spec": {"resources": {"requests": {"storage": "1Gi"}}}}}),
    ));
    apply(env.cp, &objects);
    ready(env.cp, &ns).await;
    apply(env.cp, &[session(&ns, "first")]);
    runner
        .wait_for_process(&ns, "cairn-backup-first", Duration::from_secs(30))
        .await
        .expect("first runs");
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.cp.client(), &ns);
    let pvc = pvcs.get("first-dump").await.expect("interim PVC");
    let owner = pvc.metadata.owner_references.clone().unwrap_or_default();
    assert_eq!(
        owner.first().map(|o| o.name.as_str()),
        Some("first"),
        "owned by its session"
    );
    assert_eq!(
        pvc.spec.and_then(|s| s.access_modes),
        Some(vec!["ReadWriteOnce".to_string()])
    );

    apply(env.cp, &[session(&ns, "second")]);
    let s = finished(env.cp, &ns, "second").await;
    assert_eq!(
        s.status
            .as_ref()
            .and_then(|st| st.phase)
            .map(|p| p.to_string())
            .as_deref(),
        Some("Skipped")
    );
    let (reason, message) = failure(&s);
    assert_eq!(reason, "Skipped");
    assert!(message.contains("another session"), "{message}");
}

#[tokio::test]
async fn a_restore_session_succeeds_with_what_was_restored() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    let _runner = JobRunner::start(env.cp, Options::namespace(&ns));
    let task = format!("fake-restore-{ns}");
    let result = json!({"kind": "restore", "snapshot": SNAPSHOT, "indices": 3, "documents": 1000, "durationSeconds": 2.0});
    let script = format!("printf '%s' '{result}' > \"$CAIRN_TERMINATION_LOG\"");
    let mut objects = fake_task(&task, &script);
    objects.extend(fixture(&ns, &task, json!({})));
    objects.push(json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession", "metadata": {"name": "back", "namespace": ns},
        "spec": {"repository": {"name": "repo"}, "task": {"name": task},
                 "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                            "rules": [{"snapshots": ["latest"]}]}}}));
    apply(env.cp, &objects);
    let api: Api<RestoreSession> = Api::namespaced(env.cp.client(), &ns);
    let r = wait_for(Duration::from_secs(60), "the restore to finish", || async {
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
    let jobs = env.cp.kubectl(["get", "jobs", "-n", &ns, "-o", "name"]);
    assert!(String::from_utf8_lossy(&jobs.stdout).contains("cairn-restore-back"));
}

#[tokio::test]
async fn a_repository_with_wipe_out_is_wiped_before_it_goes() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("ns");
    // Stands in for `cairn-agent`: records its arguments.
    let dir = tempfile::tempdir().expect("tmp");
    let record = dir.path().join("args");
    let program = dir.path().join("fake-agent");
    std::fs::write(
        &program,
        format!("#!/bin/sh\necho \"$@\" > {}\n", record.display()),
    )
    .expect("script");
    std::fs::set_permissions(
        &program,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let _runner = JobRunner::start(
        env.cp,
        Options::namespace(&ns).command("cairn-agent", &program),
    );
    let mut objects = fixture(&ns, "unused", json!({}));
    objects.retain(|o| o["kind"] == "Secret");
    objects.push(json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "doomed", "namespace": ns},
        "spec": {"wipeOut": true, "backend": {"storageSecretName": "repo-secret", "s3": {"endpoint": "http://127.0.0.1:9", "bucket": "cairn-test", "prefix": "a/b"}}}}));
    objects.push(json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "kept", "namespace": ns},
        "spec": {"backend": {"storageSecretName": "repo-secret", "s3": {"endpoint": "http://127.0.0.1:9", "bucket": "cairn-test"}}}}));
    apply(env.cp, &objects);
    let repos: Api<Repository> = Api::namespaced(env.cp.client(), &ns);
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
    let out = env.cp.kubectl([
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
        Duration::from_secs(60),
        "the repository to go after its wipe",
        || async { repos.get_opt("doomed").await.ok()?.is_none().then_some(()) },
    )
    .await;
    let args = std::fs::read_to_string(&record).expect("the wipe Job ran");
    assert!(
        args.starts_with("wipe --repository=s3:http://127.0.0.1:9/cairn-test/a/b"),
        "{args}"
    );
    assert!(
        repos.get_opt("kept").await.expect("get").is_none(),
        "a repository without wipeOut is held"
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
    let ns = env.cp.new_namespace().await.expect("ns");
    let s3 = S3Server::start().expect("MinIO");
    s3.create_bucket("leaks").expect("bucket");
    let search = OpenSearch::shared();
    let agent = workspace_binary("cairn-agent").expect("cairn-agent");
    let _runner = JobRunner::start(
        env.cp,
        Options::namespace(&ns).command("cairn-agent", agent),
    );
    let password = format!("pw-{ns}-repository");
    let bad_key = format!("AKIA{}", ns.to_uppercase().replace('-', ""));
    let bad_secret = format!("sk-{ns}-storage");
    let (user, es_password) = (format!("u-{ns}-target"), format!("pw-{ns}-target"));
    let repo_secret = |key: &str, secret: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": password, "AWS_ACCESS_KEY_ID": key,
                              "AWS_SECRET_ACCESS_KEY": secret}})
    };
    let mut objects = fixture(
        &ns,
        "elasticsearch-backup",
        json!({"backupHistoryLimit": 10}),
    );
    objects.retain(|o| o["kind"] != "Secret" && o["kind"] != "Repository");
    objects.push(repo_secret(&bad_key, &bad_secret));
    objects.push(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "es-auth", "namespace": ns},
                        "stringData": {"username": user, "password": es_password}}));
    objects.push(json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns},
        "spec": {"backend": {"storageSecretName": "repo-secret",
                 "s3": {"endpoint": s3.endpoint(), "bucket": "leaks", "region": s3.region()}}}}));
    for o in &mut objects {
        if o["kind"] == "AppBinding" {
            o["spec"]["clientConfig"]["url"] = json!(search.url());
            o["spec"]["secret"] = json!({"name": "es-auth"});
        }
    }
    apply(env.cp, &objects);
    ready(env.cp, &ns).await;
    apply(env.cp, &[session(&ns, "refused-keys")]);
    let refused = finished(env.cp, &ns, "refused-keys").await;
    assert_eq!(
        failure(&refused).0,
        "ContainerFailed",
        "{:?}",
        refused.status
    );

    // Right keys now, and a repository made with another password.
    let repository = s3.restic_repository("leaks");
    let init = std::process::Command::new("restic")
        .args(["-r", &repository, "init"])
        .envs(s3.env())
        .env("RESTIC_PASSWORD", "another-password")
        .output()
        .expect("restic (cargo xtask search-testbed installs it)");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    apply(env.cp, &[repo_secret(s3.access_key(), s3.secret_key())]);
    apply(env.cp, &[session(&ns, "wrong-password")]);
    let wrong = finished(env.cp, &ns, "wrong-password").await;
    assert_eq!(failure(&wrong).0, "ContainerFailed", "{:?}", wrong.status);

    let mut seen = String::new();
    for kind in ["backupsessions", "events", "jobs", "pods"] {
        let out = env.cp.kubectl(["get", kind, "-n", &ns, "-o", "json"]);
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
