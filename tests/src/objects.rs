//! The objects the end-to-end tests on the node apply, and the states they wait for: a
//! repository in MinIO reached through the bridge, configurations and sessions, a session's
//! outcome and failure reason, its running container.

use std::time::{Duration, Instant};

use cairn_api::BackupSession;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use serde_json::{Value, json};

use crate::ControlPlane;
use crate::node::LOCAL_STORAGE_CLASS;
use crate::s3::S3Server;
use crate::wait_for;

/// The repository of [`fixture`]: `repo`, with its Secret `repo-secret`.
pub const REPOSITORY: &str = "repo";

/// `kubectl apply` of `objects`; panics with kubectl's words when refused.
pub fn apply(cp: &ControlPlane, objects: &[Value]) {
    if let Err(e) = cp.apply_objects(objects) {
        panic!("apply: {e}");
    }
}

/// Secret `repo-secret` (restic password `password`, MinIO's keys), AppBinding `es` (`url`
/// through the bridge), and Repository `repo` in `bucket` of MinIO at `s3_url`, under a prefix
/// named after the namespace.
pub fn fixture(
    ns: &str,
    search_url: &str,
    s3: &S3Server,
    s3_url: &str,
    bucket: &str,
    password: &str,
) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": password, "AWS_ACCESS_KEY_ID": s3.access_key(),
                              "AWS_SECRET_ACCESS_KEY": s3.secret_key()}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
               "metadata": {"name": "es", "namespace": ns}, "spec": {"clientConfig": {"url": search_url}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": REPOSITORY, "namespace": ns},
               "spec": {"backend": {"storageSecretName": "repo-secret",
                        "s3": {"endpoint": s3_url, "bucket": bucket, "prefix": ns, "region": s3.region()}}}}),
    ]
}

/// A configuration `name` of the catalog's backup Task backing up `es` into `repo` (no slot
/// soon: sessions are made by hand; no retry), with `extra` spec fields.
pub fn configuration(ns: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({"schedule": "0 0 1 1 *", "repository": {"name": REPOSITORY},
        "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
        "task": {"name": "elasticsearch-backup"},
        "retentionPolicy": {"name": "keep", "keepLast": 3},
        "retryConfig": {"maxRetry": 0}});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// A BackupSession `name` of configuration `cfg`.
pub fn session(ns: &str, name: &str, cfg: &str) -> Value {
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession", "metadata": {"name": name, "namespace": ns},
           "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": cfg}}})
}

/// An interim volume of the harness's local class (PVs from `Node::create_local_volumes`).
pub fn interim_volume() -> Value {
    json!({"interimVolumeTemplate": {"metadata": {"name": "dump"},
        "spec": {"storageClassName": LOCAL_STORAGE_CLASS, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}}}})
}

/// Secret, AppBinding, a local Repository `repo` and configuration `cfg` of Task `task` (the fake
/// agent: nothing is reached), with `extra` spec fields.
pub fn fake_fixture(ns: &str, task: &str, extra: Value) -> Vec<Value> {
    let mut cfg = configuration(ns, "cfg", extra);
    cfg["spec"]["task"] = json!({"name": task});
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": "not-logged-anywhere"}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"url": "http://127.0.0.1:9"}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns},
               "spec": {"backend": {"storageSecretName": "repo-secret", "local": {"mountPath": "/backup", "emptyDir": {}}}}}),
        cfg,
    ]
}

/// A Function and a Task named `name` whose one step runs the fake agent's image with `args`
/// (see `cairn-fake-agent`).
pub fn fake_task(name: &str, args: &[&str]) -> Vec<Value> {
    vec![
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Function", "metadata": {"name": name},
               "spec": {"image": crate::image::FAKE_AGENT_IMAGE, "command": ["cairn-fake-agent"], "args": args}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Task", "metadata": {"name": name},
               "spec": {"steps": [{"name": name}]}}),
    ]
}

/// Waits until configuration `name` is Ready (a session of a configuration not evaluated yet is
/// skipped).
pub async fn ready(cp: &ControlPlane, ns: &str, name: &str) {
    let api: Api<cairn_api::BackupConfiguration> = Api::namespaced(cp.client(), ns);
    wait_for(
        Duration::from_secs(60),
        &format!("configuration {name} to be Ready"),
        || async {
            let c = api.get_opt(name).await.ok()??;
            (format!("{:?}", c.status?.phase?) == "Ready").then_some(())
        },
    )
    .await;
}

/// Waits until session `name` is final.
pub async fn finished(cp: &ControlPlane, ns: &str, name: &str, timeout: Duration) -> BackupSession {
    let sessions: Api<BackupSession> = Api::namespaced(cp.client(), ns);
    wait_for(timeout, &format!("session {name} to finish"), || async {
        let s = sessions.get_opt(name).await.ok()??;
        s.status.as_ref()?.phase?.is_final().then_some(s)
    })
    .await
}

/// The phase of a session, as written (`Succeeded`, ...).
pub fn phase(s: &BackupSession) -> String {
    s.status
        .as_ref()
        .and_then(|st| st.phase)
        .map(|p| p.to_string())
        .unwrap_or_default()
}

/// The reason and message of the session's `BackupFailed` or `BackupSkipped` condition.
pub fn failure(s: &BackupSession) -> (String, String) {
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

/// The session's Pod once its container runs: (pod, container id with `containerd://`).
pub async fn running_container(cp: &ControlPlane, ns: &str, session: &str) -> (Pod, String) {
    let pods: Api<Pod> = Api::namespaced(cp.client(), ns);
    let selector = format!("{}={session}", cairn_api::naming::LABEL_SESSION);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let list = pods.list(&ListParams::default().labels(&selector)).await;
        let found = list
            .ok()
            .and_then(|l| l.items.into_iter().next())
            .and_then(|pod| {
                let status = pod
                    .status
                    .as_ref()?
                    .container_statuses
                    .as_ref()?
                    .first()?
                    .clone();
                status.state.as_ref()?.running.as_ref()?;
                Some((pod, status.container_id?))
            });
        if let Some(found) = found {
            return found;
        }
        if Instant::now() > deadline {
            let state = cp.kubectl(["get", "pods,pvc,pv,jobs", "-A", "-o", "wide"]);
            let events = cp.kubectl(["get", "events", "-n", ns]);
            panic!(
                "session {session}'s container does not run after 120s:\n{}\n{}\nkubelet:\n{}",
                String::from_utf8_lossy(&state.stdout),
                String::from_utf8_lossy(&events.stdout),
                cp.node().kubelet_log_tail(30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
