//! Stash's hooks on the real node, against an HTTP endpoint this test serves on the node's
//! bridge (reachable from the Pods). `preBackup` runs `cairn-agent hook` from cairn's image as
//! the Job's first container: one that succeeds lets the backup run; one that fails fails the
//! session with the hook named, and the backup's container never starts (no snapshot).
//! `postBackup` runs in a Job of its own once the session ended, when its `executionPolicy`
//! says so, and receives the session's outcome through its template; its result is Stash's
//! condition, and a failed one fails the session. An `exec` hook runs in the first pod behind
//! the AppBinding's Service, and only for a user the API server lets exec (impersonated with
//! `kubectl --as`). The backup itself is the fake agent's (the hooks, Pods and kubelet are
//! real).
//!
//! Its own test binary, so its own control plane.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_api::naming::backup_job_name;
use cairn_api::{BackupSession, RestoreSession};
use cairn_tests::ControlPlane;
use cairn_tests::objects::{
    apply, failure, fake_fixture, fake_task, finished, phase, ready, session,
};
use cairn_tests::system::{OnNode, on_node, restricted_namespace};
use cairn_tests::wait_for;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

async fn env() -> &'static OnNode {
    static ENV: OnceCell<OnNode> = OnceCell::const_new();
    ENV.get_or_init(|| on_node(ControlPlane::shared(), "hooks", &[]))
        .await
}

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// How long a session on the node may take here (Pod start included).
const SESSION_TIME: Duration = Duration::from_secs(120);

const SNAPSHOT: &str = "4f2c1d0e9b8a7f6e5d4c3b2a190817263544536271809a8b7c6d5e4f3a2b1c0d";

/// One request the endpoint received: method, path, body.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// An HTTP endpoint on the node's bridge: `/fail...` answers 500, anything else 200; every
/// request is recorded.
async fn endpoint(env: &OnNode) -> (SocketAddr, Seen) {
    let listener = tokio::net::TcpListener::bind((env.node.host_ip(), 0))
        .await
        .expect("bind on the bridge");
    let addr = listener.local_addr().expect("address");
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let record = record.clone();
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let record = record.clone();
                async move {
                    let (parts, body) = req.into_parts();
                    let body = body
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let path = parts.uri.path().to_string();
                    let status = if path.starts_with("/fail") {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    };
                    record.lock().expect("lock").push((
                        parts.method.to_string(),
                        path,
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    let mut resp = Response::new(Full::new(Bytes::from("hook endpoint says no")));
                    *resp.status_mut() = status;
                    Ok::<_, hyper::Error>(resp)
                }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
            );
        }
    });
    (addr, seen)
}

fn backup_result() -> String {
    json!({"kind": "backup", "snapshot": SNAPSHOT, "time": "2026-11-25T10:00:00Z", "host": "host-0",
           "indices": 1, "documents": 10, "totalBytes": 1024, "addedBytes": 512,
           "durationSeconds": 1.0})
    .to_string()
}

/// A restricted namespace whose configuration `cfg` (the fake agent's backup) has `hooks`.
async fn namespace_with_hooks(hooks: Value) -> String {
    namespace_with(&["--result", &backup_result()], json!({"hooks": hooks})).await
}

/// A restricted namespace whose configuration `cfg` runs the fake agent with `args`, with
/// `extra` in its spec.
async fn namespace_with(args: &[&str], extra: Value) -> String {
    let ns = restricted_namespace(cp(), "hooks").await;
    let task = format!("fake-{ns}");
    let mut objects = fake_task(&task, args);
    objects.extend(fake_fixture(&ns, &task, extra));
    apply(cp(), &objects);
    ready(cp(), &ns, "cfg").await;
    ns
}

fn post_hook(addr: SocketAddr, path: &str) -> Value {
    json!({"preBackup": {"httpPost": {"host": addr.ip().to_string(), "port": addr.port(),
        "path": path, "httpHeaders": [{"name": "Content-Type", "value": "application/json"}],
        "body": "{\"text\": \"backup starts\"}"}}})
}

#[tokio::test]
async fn a_pre_backup_hook_runs_before_the_backup() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let ns = namespace_with_hooks(post_hook(addr, "/pre")).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    assert_eq!(
        condition(&s, PRE_HOOK),
        Some(("True".into(), "SuccessfullyExecutedPreBackupHook".into()))
    );
    let got = seen.lock().expect("lock").clone();
    assert_eq!(
        got,
        [(
            "POST".to_string(),
            "/pre".to_string(),
            "{\"text\": \"backup starts\"}".to_string()
        )]
    );
}

#[tokio::test]
async fn a_failing_pre_backup_hook_fails_the_session_before_any_data_is_read() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let ns = namespace_with_hooks(post_hook(addr, "/fail")).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Failed");
    let (reason, message) = failure(&s);
    assert_eq!(reason, "ContainerFailed", "{message}");
    for words in ["pre-backup-hook", "preBackup hook", "HTTP 500"] {
        assert!(message.contains(words), "{words:?} not in {message}");
    }
    // The endpoint's path is not in the message (a webhook's path may be its credential).
    assert!(!message.contains("/fail"), "{message}");
    assert!(
        s.status
            .as_ref()
            .and_then(|st| st.snapshot.as_ref())
            .is_none()
    );
    assert_eq!(
        condition(&s, PRE_HOOK),
        Some(("False".into(), "FailedToExecutePreBackupHook".into()))
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);

    // The backup's container never started: no data was read. (The Repository's inventory
    // Job has a pod of its own.)
    let pods: Api<Pod> = Api::namespaced(cp().client(), &ns);
    let of_session = ListParams::default().labels(&format!("job-name={}", backup_job_name("now")));
    let list = pods.list(&of_session).await.expect("pods");
    assert_eq!(list.items.len(), 1, "one pod");
    let status = list.items[0].status.clone().expect("status");
    for c in status.container_statuses.unwrap_or_default() {
        let state = c.state.unwrap_or_default();
        assert!(
            state.running.is_none() && state.terminated.is_none(),
            "container {} ran: {state:?}",
            c.name
        );
    }
}

/// A post hook that sends the session's outcome through Stash's template fields, with
/// `executionPolicy` when given.
fn outcome_hook(addr: SocketAddr, path: &str, policy: Option<&str>) -> Value {
    let mut hook = json!({"postBackup": {"httpPost": {"host": addr.ip().to_string(),
        "port": addr.port(), "path": path,
        "body": "{{- .Name }}|{{ .Invoker.Kind }}/{{ .Invoker.Name }}|{{ .Target.Name }}|{{ .Status.Phase }}|{{ .Status.Error -}}"}}});
    if let Some(p) = policy {
        hook["postBackup"]["executionPolicy"] = p.into();
    }
    hook
}

const POST_HOOK: &str = "PostBackupHookExecutionSucceeded";

/// The session once its post hook's condition is `True` or `False`.
async fn hook_done(ns: &str, name: &str) -> BackupSession {
    let api: Api<BackupSession> = Api::namespaced(cp().client(), ns);
    wait_for(SESSION_TIME, &format!("{name}'s post hook"), || async {
        let s = api.get_opt(name).await.ok()??;
        let done = s
            .status
            .as_ref()?
            .conditions
            .iter()
            .any(|c| c.type_ == POST_HOOK && c.status != "Unknown");
        done.then_some(s)
    })
    .await
}

const PRE_HOOK: &str = "PreBackupHookExecutionSucceeded";

/// The session's condition `type_`.
fn find_condition<'a>(s: &'a BackupSession, type_: &str) -> Option<&'a Condition> {
    let conditions = &s.status.as_ref()?.conditions;
    conditions.iter().find(|c| c.type_ == type_)
}

/// The status and reason of the session's condition `type_`.
fn condition(s: &BackupSession, type_: &str) -> Option<(String, String)> {
    find_condition(s, type_).map(|c| (c.status.clone(), c.reason.clone()))
}

fn hook_condition(s: &BackupSession) -> Option<(String, String)> {
    condition(s, POST_HOOK)
}

#[tokio::test]
async fn a_post_backup_hook_receives_the_sessions_outcome() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let hooks = outcome_hook(addr, "/post", None);
    let ns = namespace_with_hooks(hooks.clone()).await;
    // Stored as written: `executionPolicy` is defaulted where used, never into the object
    // (a GitOps tool's re-apply stays `unchanged`).
    let configs: Api<cairn_api::BackupConfiguration> = Api::namespaced(cp().client(), &ns);
    let stored = configs.get("cfg").await.expect("cfg").spec.hooks;
    assert_eq!(serde_json::to_value(stored).expect("json"), hooks);
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    let s = hook_done(&ns, "now").await;
    assert_eq!(
        hook_condition(&s),
        Some(("True".into(), "SuccessfullyExecutedPostBackupHook".into()))
    );
    let got = seen.lock().expect("lock").clone();
    assert_eq!(
        got,
        [(
            "POST".to_string(),
            "/post".to_string(),
            "now|BackupConfiguration/cfg|es|Succeeded|".to_string()
        )]
    );
    // The session stays as it ended.
    assert_eq!(phase(&s), "Succeeded");
}

#[tokio::test]
async fn a_failing_post_hook_is_a_false_condition_and_on_failure_or_on_success_wait_for_theirs() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let ns = namespace_with_hooks(outcome_hook(addr, "/fail", Some("Always"))).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = hook_done(&ns, "now").await;
    // As Stash: a failed post hook fails the session, the hook named; no retry follows.
    assert_eq!(phase(&s), "Failed");
    let (reason, message) = failure(&s);
    assert_eq!(reason, "FailedToExecutePostBackupHook", "{message}");
    assert!(message.contains("postBackup hook failed"), "{message}");
    assert_eq!(
        hook_condition(&s),
        Some(("False".into(), "FailedToExecutePostBackupHook".into()))
    );
    assert_eq!(seen.lock().expect("lock").len(), 1);

    // OnFailure after a success: decided as the session ended, so its final status says so.
    let (addr, seen) = endpoint(env).await;
    let ns = namespace_with_hooks(outcome_hook(addr, "/post", Some("OnFailure"))).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    assert_eq!(hook_condition(&s), None, "{:?}", s.status);
    assert!(seen.lock().expect("lock").is_empty());

    // OnSuccess after a failure (the agent exits 1 with no result): nothing either.
    let (addr, seen) = endpoint(env).await;
    let hooks = outcome_hook(addr, "/post", Some("OnSuccess"));
    let ns = namespace_with(&["--exit", "1"], json!({"hooks": hooks})).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Failed");
    assert_eq!(hook_condition(&s), None, "{:?}", s.status);
    assert!(seen.lock().expect("lock").is_empty());
}

/// The session's deadline ends a backup that never finishes; the first failure has a retry
/// left, so `OnFinalRetryFailure` waits; the retry's failure is final and the hook runs then,
/// with the deadline's message.
#[tokio::test]
async fn an_on_final_retry_failure_hook_runs_after_the_last_retry_hit_its_deadline() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let extra = json!({"timeOut": "5s", "backupHistoryLimit": 5,
                       "retryConfig": {"maxRetry": 1, "delay": "1s"},
                       "hooks": outcome_hook(addr, "/final", Some("OnFinalRetryFailure"))});
    let ns = namespace_with(&["--sleep", "600"], extra).await;
    apply(cp(), &[session(&ns, "manual", "cfg")]);
    let first = finished(cp(), &ns, "manual", SESSION_TIME).await;
    assert_eq!(failure(&first).0, "DeadlineExceeded");
    assert_eq!(hook_condition(&first), None, "{:?}", first.status);

    let retry = hook_done(&ns, "manual-retry").await;
    assert_eq!(failure(&retry).0, "DeadlineExceeded");
    assert_eq!(
        hook_condition(&retry),
        Some(("True".into(), "SuccessfullyExecutedPostBackupHook".into()))
    );
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let body = &got[0].2;
    assert!(
        body.starts_with("manual-retry|BackupConfiguration/cfg|es|Failed|"),
        "{body}"
    );
    assert!(body.contains(&failure(&retry).1), "{body}");
}

/// Stash's Slack example: its `{{if eq .Status.Phase `Succeeded`}}...{{else}}...{{end}}` body.
const SLACK_BODY: &str = "{\"blocks\": [{\"type\": \"section\",\"text\": {\"type\": \"mrkdwn\",\"text\": \"{{if eq .Status.Phase `Succeeded`}}:white_check_mark: Backup succeeded for {{ .Namespace }}/{{.Target.Name}}{{else}}:x: Backup failed for {{ .Namespace }}/{{.Target.Name}} Reason: {{.Status.Error}}.{{end}}\"}}]}";

/// An agent the kernel kills for memory writes no result; the post hook still runs, in a Job of
/// its own (which the session's memory limit does not reach), and Stash's conditional template
/// takes its failure branch with the kill named.
#[tokio::test]
async fn a_post_hook_runs_after_an_oom_killed_session_with_stashs_slack_template() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let hooks = json!({"postBackup": {"executionPolicy": "OnFailure", "httpPost": {
        "host": addr.ip().to_string(), "port": addr.port(), "path": "/slack",
        "httpHeaders": [{"name": "Content-Type", "value": "application/json"}],
        "body": SLACK_BODY}}});
    // The agent fills more memory than its limit before it would write its result.
    let extra = json!({"hooks": hooks, "runtimeSettings": {"container": {"resources": {
        "requests": {"memory": "16Mi"}, "limits": {"memory": "16Mi"}}}}});
    let args = ["--allocate", "64", "--result", &backup_result()];
    let ns = namespace_with(&args, extra).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = hook_done(&ns, "now").await;
    let (reason, message) = failure(&s);
    // containerd names the kill OOMKilled when it saw the cgroup's OOM event first; under load
    // it may reap the SIGKILLed process first (exit code 137, seen once here).
    assert!(
        reason == "OOMKilled" || message.contains("exited with code 137"),
        "{reason}: {message}"
    );
    assert_eq!(
        hook_condition(&s),
        Some(("True".into(), "SuccessfullyExecutedPostBackupHook".into()))
    );
    let got = seen.lock().expect("lock").clone();
    assert_eq!(got.len(), 1, "{got:?}");
    let body: Value = serde_json::from_str(&got[0].2).expect("the rendered body is JSON");
    let text = body["blocks"][0]["text"]["text"].as_str().expect("text");
    let want = format!(":x: Backup failed for {ns}/es Reason: {message}.");
    assert_eq!(text, want);
}

/// A RestoreSession's `preRestore` and `postRestore`: the pre hook before the restore's
/// container, the post hook after it with the restore's outcome; both conditions True.
#[tokio::test]
async fn restore_hooks_run_around_the_restore() {
    let env = env().await;
    let (addr, seen) = endpoint(env).await;
    let result = json!({"kind": "restore", "snapshot": SNAPSHOT, "indices": 1, "documents": 10,
                        "durationSeconds": 1.0})
    .to_string();
    let ns = namespace_with(&["--result", &result], json!({})).await;
    let host = addr.ip().to_string();
    let hooks = json!({
        "preRestore": {"httpGet": {"host": host, "port": addr.port(), "path": "/pre-restore"}},
        "postRestore": {"httpPost": {"host": host, "port": addr.port(), "path": "/post-restore",
            "body": "{{ .Invoker.Kind }}/{{ .Name }} {{ .Status.Phase }}"}}
    });
    apply(
        cp(),
        &[
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession",
            "metadata": {"name": "back", "namespace": ns},
            "spec": {"repository": {"name": "repo"}, "task": {"name": format!("fake-{ns}")},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1",
                                        "kind": "AppBinding", "name": "es"},
                                "rules": [{"snapshots": ["latest"]}]},
                     "hooks": hooks}}),
        ],
    );
    let api: Api<RestoreSession> = Api::namespaced(cp().client(), &ns);
    let r = wait_for(SESSION_TIME, "the restore's post hook", || async {
        let r = api.get_opt("back").await.ok()??;
        let conditions = &r.status.as_ref()?.conditions;
        conditions
            .iter()
            .any(|c| c.type_ == "PostRestoreHookExecutionSucceeded" && c.status != "Unknown")
            .then_some(r)
    })
    .await;
    let status = r.status.expect("status");
    assert_eq!(
        status.phase.map(|p| p.to_string()).as_deref(),
        Some("Succeeded")
    );
    for type_ in [
        "PreRestoreHookExecutionSucceeded",
        "PostRestoreHookExecutionSucceeded",
    ] {
        let c = status.conditions.iter().find(|c| c.type_ == type_);
        assert_eq!(
            c.map(|c| c.status.as_str()),
            Some("True"),
            "{type_}: {:?}",
            status.conditions
        );
    }
    let got = seen.lock().expect("lock").clone();
    assert_eq!(
        got,
        [
            ("GET".to_string(), "/pre-restore".to_string(), String::new()),
            (
                "POST".to_string(),
                "/post-restore".to_string(),
                "RestoreSession/back Succeeded".to_string()
            )
        ]
    );
}

/// Two pods behind the Service `es` (label `app=es`), running the fake agent's image (no
/// shell: the hooks run `cairn-fake-agent --say`), and the AppBinding `es` naming the Service.
fn workload(ns: &str) -> Vec<Value> {
    let pod = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "es"}},
            "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 65534,
                                         "seccompProfile": {"type": "RuntimeDefault"}},
                     "terminationGracePeriodSeconds": 0,
                     "containers": [{"name": "es", "image": cairn_tests::image::FAKE_AGENT_IMAGE,
                                     "imagePullPolicy": "Never", "command": ["cairn-fake-agent"],
                                     "args": ["--sleep", "3600"],
                                     "securityContext": {"allowPrivilegeEscalation": false,
                                                         "capabilities": {"drop": ["ALL"]}}}]}})
    };
    vec![
        pod("es-1"),
        pod("es-0"),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "es", "namespace": ns},
               "spec": {"selector": {"app": "es"}, "ports": [{"port": 9200}]}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
               "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"service": {"name": "es", "port": 9200}}}}),
    ]
}

/// Waits until both pods of [`workload`] run.
async fn workload_running(ns: &str) {
    let pods: Api<Pod> = Api::namespaced(cp().client(), ns);
    wait_for(SESSION_TIME, "the workload's pods to run", || async {
        let list = pods
            .list(&ListParams::default().labels("app=es"))
            .await
            .ok()?;
        let running = list
            .items
            .iter()
            .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"));
        (running.count() == 2).then_some(())
    })
    .await;
}

/// RBAC in `ns`: `alice` may write BackupConfigurations; `bob` may too, and exec into pods.
fn users(ns: &str) -> Vec<Value> {
    let role = |name: &str, rules: Value| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
               "metadata": {"name": name, "namespace": ns}, "rules": rules})
    };
    let binding = |user: &str, role: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
               "metadata": {"name": format!("{user}-{role}"), "namespace": ns},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role},
               "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": user}]})
    };
    vec![
        role(
            "writer",
            json!([{"apiGroups": ["cairn.dev"], "resources": ["backupconfigurations"],
                    "verbs": ["get", "list", "create", "patch", "update"]}]),
        ),
        role(
            "exec",
            json!([{"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]}]),
        ),
        binding("alice", "writer"),
        binding("bob", "writer"),
        binding("bob", "exec"),
    ]
}

/// `kubectl --as=user apply` of `object`: its success, and kubectl's error.
fn apply_as(user: &str, object: &Value) -> (bool, String) {
    let out = cp().kubectl_stdin(
        [&format!("--as={user}"), "apply", "-f", "-"],
        &object.to_string(),
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The session's condition `type_`: status and message.
fn condition_message(s: &BackupSession, type_: &str) -> Option<(String, String)> {
    find_condition(s, type_).map(|c| (c.status.clone(), c.message.clone()))
}

/// An `exec` hook runs in the first Running pod behind the AppBinding's Service, in
/// `containerName`; whoever writes one must be allowed to exec there themselves (admission
/// asks the API server), so `alice` (no `pods/exec`) is denied and `bob` admitted.
#[tokio::test]
async fn exec_hooks_run_in_the_targets_pod_for_users_who_may_exec() {
    env().await;
    let ns = namespace_with(&["--result", &backup_result()], json!({})).await;
    let mut objects = workload(&ns);
    objects.extend(users(&ns));
    apply(cp(), &objects);
    let hooks = json!({
        "preBackup": {"exec": {"command": ["cairn-fake-agent", "--say", "flushed before"]},
                      "containerName": "es"},
        "postBackup": {"exec": {"command": ["cairn-fake-agent", "--say", "after {{ .Status.Phase }}"]}}
    });
    let mut cfg = cairn_tests::objects::configuration(&ns, "exec", json!({"hooks": hooks}));
    cfg["spec"]["task"] = json!({"name": format!("fake-{ns}")});

    let (ok, err) = apply_as("alice", &cfg);
    assert!(!ok, "alice may not exec, yet her exec hook was admitted");
    for words in [
        "spec.hooks.preBackup.exec",
        "spec.hooks.postBackup.exec",
        "pods/exec",
        "alice",
    ] {
        assert!(err.contains(words), "{words:?} not in {err}");
    }
    let (ok, err) = apply_as("bob", &cfg);
    assert!(ok, "bob may exec: {err}");
    // Re-applied unchanged: nothing to ask, nothing written.
    let out = cp().kubectl_stdin(["--as=bob", "apply", "-f", "-"], &cfg.to_string());
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("unchanged"), "{said}");

    workload_running(&ns).await;
    ready(cp(), &ns, "exec").await;
    apply(cp(), &[session(&ns, "now", "exec")]);
    let s = hook_done(&ns, "now").await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    let (status, message) = condition_message(&s, PRE_HOOK).expect("the pre hook's condition");
    assert_eq!(status, "True", "{message}");
    assert!(
        message.contains("pod es-0, container es") && message.ends_with("flushed before"),
        "{message}"
    );
    let (status, message) = condition_message(&s, POST_HOOK).expect("the post hook's condition");
    assert_eq!(status, "True", "{message}");
    assert!(message.ends_with("after Succeeded"), "{message}");
}

/// A failing `exec` pre hook fails the session before its Job exists: nothing is read.
#[tokio::test]
async fn a_failing_exec_pre_hook_fails_the_session_with_no_job() {
    env().await;
    let hooks = json!({"preBackup": {"exec": {"command": ["cairn-fake-agent", "--say", "frozen?", "--exit", "3"]}}});
    let ns = namespace_with(&["--result", &backup_result()], json!({"hooks": hooks})).await;
    apply(cp(), &workload(&ns));
    workload_running(&ns).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Failed");
    let (reason, message) = failure(&s);
    assert_eq!(reason, "FailedToExecutePreBackupHook", "{message}");
    for words in ["preBackup", "pod es-0", "frozen?", "no data was read"] {
        assert!(message.contains(words), "{words:?} not in {message}");
    }
    assert_eq!(
        condition(&s, PRE_HOOK),
        Some(("False".into(), "FailedToExecutePreBackupHook".into()))
    );
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(cp().client(), &ns);
    // The session's Jobs (the Repository's inventory Job is another).
    let of_session = ListParams::default().labels("cairn.dev/session=now");
    let list = jobs.list(&of_session).await.expect("jobs");
    assert!(
        list.items.is_empty(),
        "a Job was made: {:?}",
        list.items
            .iter()
            .map(|j| j.metadata.name.clone())
            .collect::<Vec<_>>()
    );
}

/// How many times events with `reason` were recorded for the object `name` (an event repeated
/// is one object with a count).
async fn event_count(ns: &str, name: &str, reason: &str) -> i32 {
    let events: Api<Event> = Api::namespaced(cp().client(), ns);
    let list = events.list(&Default::default()).await.expect("events");
    list.items
        .iter()
        .filter(|e| {
            e.reason.as_deref() == Some(reason)
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name)
        })
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// A pre `exec` hook's success is written before the Job is made: while an admission policy
/// refuses the Job and the controller retries its creation (each retry an event on the
/// session), the hook does not run again; once the policy goes, the session runs.
#[tokio::test]
async fn an_exec_pre_hook_runs_once_while_its_job_cannot_be_made() {
    env().await;
    let hooks =
        json!({"preBackup": {"exec": {"command": ["cairn-fake-agent", "--say", "frozen"]}}});
    let ns = namespace_with(&["--result", &backup_result()], json!({"hooks": hooks})).await;
    apply(cp(), &workload(&ns));
    // The API server's own CEL admission (no controller needed): no backup Job in `ns`.
    let policy = format!("no-backup-jobs-{ns}");
    apply(
        cp(),
        &[
            json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicy", "metadata": {"name": policy},
                "spec": {"failurePolicy": "Fail", "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["batch"], "apiVersions": ["v1"], "operations": ["CREATE"],
                    "resources": ["jobs"]}]},
                    "validations": [{"expression": "!object.metadata.name.startsWith('cairn-backup-')",
                                     "message": "no backup Jobs here for now"}]}}),
            json!({"apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": policy},
                "spec": {"policyName": policy, "validationActions": ["Deny"],
                    "matchResources": {"namespaceSelector": {"matchLabels": {
                        "kubernetes.io/metadata.name": ns}}}}}),
        ],
    );
    let probe = json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "cairn-backup-probe", "namespace": ns},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "none"}]}}}});
    wait_for(SESSION_TIME, "the policy to refuse backup Jobs", || async {
        let out = cp().kubectl_stdin(
            ["create", "--dry-run=server", "-f", "-"],
            &probe.to_string(),
        );
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        said.contains("no backup Jobs here").then_some(())
    })
    .await;
    workload_running(&ns).await;
    apply(cp(), &[session(&ns, "now", "cfg")]);
    wait_for(SESSION_TIME, "two refused Job creations", || async {
        (event_count(&ns, "now", "JobCreateFailed").await >= 2).then_some(())
    })
    .await;
    let ran = "SuccessfullyExecutedPreBackupHook";
    assert_eq!(event_count(&ns, "now", ran).await, 1);
    let sessions: Api<BackupSession> = Api::namespaced(cp().client(), &ns);
    let pending = sessions.get("now").await.expect("the session");
    assert!(
        ["", "Pending"].contains(&phase(&pending).as_str()),
        "{:?}",
        pending.status
    );
    assert_eq!(
        condition(&pending, PRE_HOOK).map(|c| c.0).as_deref(),
        Some("True")
    );

    let binding = format!("validatingadmissionpolicybinding/{policy}");
    let out = cp().kubectl([
        "delete",
        &binding,
        &format!("validatingadmissionpolicy/{policy}"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = finished(cp(), &ns, "now", SESSION_TIME).await;
    assert_eq!(phase(&s), "Succeeded", "{:?}", failure(&s));
    assert_eq!(event_count(&ns, "now", ran).await, 1);
}
