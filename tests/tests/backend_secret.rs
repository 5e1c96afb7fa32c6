//! `BackendSecretFound` without the controller reading a Secret: `Unknown` before any session
//! ran, `False` while a session's pod waits in `CreateContainerConfigError` for the storage
//! Secret, `True` once its container started. `cairn-webhook` + `cairn-controller` on a real
//! kube-apiserver with the real node: the kubelet reports the missing `envFrom` Secret; the
//! session's container is the fake agent (`cairn-fake-agent`), as only its start matters.
//!
//! Its own test binary, so its own control plane.

use std::time::Duration;

use cairn_api::BackupConfiguration;
use cairn_tests::ControlPlane;
use cairn_tests::objects::{apply, fake_task};
use cairn_tests::system::{on_node, restricted_namespace};
use cairn_tests::wait_for;
use kube::Api;
use serde_json::json;

/// (status, reason) of the configuration's `BackendSecretFound`.
async fn condition(api: &Api<BackupConfiguration>) -> Option<(String, String)> {
    let config = api.get_opt("cfg").await.ok()??;
    let c = config
        .status?
        .conditions
        .into_iter()
        .find(|c| c.type_ == "BackendSecretFound")?;
    Some((c.status, c.reason))
}

async fn wait_condition(api: &Api<BackupConfiguration>, status: &str, reason: &str) {
    wait_for(
        Duration::from_secs(60),
        &format!("BackendSecretFound {status} ({reason})"),
        || async {
            condition(api)
                .await
                .filter(|(s, r)| s == status && r == reason)
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_secret_found_follows_what_the_session_pod_met() {
    let cp = ControlPlane::shared();
    let _cairn = on_node(cp, "backend-secret", &[]).await;
    let ns = restricted_namespace(cp, "backend-secret").await;
    let task = format!("fake-{ns}");
    let result = json!({"kind": "backup", "snapshot": "4f2c1d0e9b8a7f6e5d4c3b2a190817263544536271809a8b7c6d5e4f3a2b1c0d",
        "time": "2026-11-25T10:00:00Z", "host": "host-0", "indices": 1, "documents": 1,
        "totalBytes": 1, "addedBytes": 1, "durationSeconds": 0.1, "snapshotsKept": 1,
        "snapshotsRemoved": 0, "repository": {"snapshotCount": 1, "sizeBytes": 1, "integrity": true}});
    let mut objects = fake_task(&task, &["--result", &result.to_string()]);
    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "repo-secret", "namespace": ns},
        "stringData": {"RESTIC_PASSWORD": "p"}});
    objects.extend([
            json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
                   "metadata": {"name": "es", "namespace": ns},
                   "spec": {"clientConfig": {"url": "http://127.0.0.1:9"}}}),
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
                   "metadata": {"name": "repo", "namespace": ns},
                   "spec": {"backend": {"storageSecretName": "repo-secret",
                                        "local": {"mountPath": "/backup", "emptyDir": {}}}}}),
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
                   "metadata": {"name": "cfg", "namespace": ns},
                   "spec": {"schedule": "0 0 1 1 *", "repository": {"name": "repo"},
                            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1",
                                               "kind": "AppBinding", "name": "es"}},
                            "task": {"name": task}, "retentionPolicy": {"name": "keep", "keepLast": 1},
                            "retryConfig": {"maxRetry": 0}}}),
        ]);
    apply(cp, &objects);
    let configs: Api<BackupConfiguration> = Api::namespaced(cp.client(), &ns);
    // No session yet: nobody knows, and the configuration is Ready all the same.
    wait_condition(&configs, "Unknown", "NoSessionYet").await;
    wait_for(Duration::from_secs(30), "Ready", || async {
        let c = configs.get_opt("cfg").await.ok()??;
        (format!("{:?}", c.status?.phase?) == "Ready").then_some(())
    })
    .await;

    // A session's pod waits for the missing Secret.
    apply(
        cp,
        &[
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
                 "metadata": {"name": "now", "namespace": ns},
                 "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "cfg"}}}),
        ],
    );
    wait_condition(&configs, "False", "CreateContainerConfigError").await;

    // The Secret appears; the container starts.
    apply(cp, &[secret]);
    wait_condition(&configs, "True", "SessionStarted").await;
}
