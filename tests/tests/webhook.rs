//! `cairn-webhook` through a real kube-apiserver and the real kubectl: broken examples are
//! rejected with our messages, valid ones defaulted without drift, warnings shown, sessions get
//! their Job at creation, finalizers can always be removed, and certificates rotate live.
//!
//! Needs `cargo xtask testbed` and the workspace binaries (`cargo xtask test` builds both).

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use cairn_tests::webhook::Webhook;
use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use tokio::sync::OnceCell;

struct Env {
    cp: &'static ControlPlane,
    webhook: Webhook,
}

/// One control plane and one webhook for this test binary, registered once, with the catalog.
async fn env() -> &'static Env {
    static ENV: OnceCell<Env> = OnceCell::const_new();
    ENV.get_or_init(|| async {
        let cp = ControlPlane::shared();
        cp.apply_crds(crds_dir()).await.expect("CRDs");
        cp.apply_crds(appbinding_crd_dir())
            .await
            .expect("AppBinding CRD");
        let webhook = Webhook::start(cp).expect("webhook starts");
        webhook.register(cp).expect("webhook registered");
        let out = cp.kubectl(["apply", "-f", &path("manifests/catalog/functions.yaml")]);
        assert_ok(&out, "catalog functions");
        let out = cp.kubectl(["apply", "-f", &path("manifests/catalog/tasks.yaml")]);
        assert_ok(&out, "catalog tasks");
        Env { cp, webhook }
    })
    .await
}

fn path(rel: &str) -> String {
    repo_root().join(rel).display().to_string()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// An example (all its documents) moved into `namespace`, as YAML for `kubectl -f -`.
fn example_in(file: &str, namespace: &str) -> String {
    let yaml = std::fs::read_to_string(repo_root().join(file)).expect("example");
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&yaml) {
        let mut v: serde_json::Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v.is_null() || v["kind"] == "Namespace" {
            continue;
        }
        if v["metadata"].get("namespace").is_some() {
            v["metadata"]["namespace"] = namespace.into();
        }
        docs.push(serde_yaml::to_string(&v).expect("yaml"));
    }
    docs.join("---\n")
}

/// Applies every example of `manifests/examples/` into `ns`.
fn apply_examples(cp: &ControlPlane, ns: &str) {
    for file in [
        "secret-s3.yaml",
        "secret-local.yaml",
        "appbinding.yaml",
        "repository-s3.yaml",
        "repository-local.yaml",
        "backupconfiguration.yaml",
        "backupconfiguration-interim.yaml",
    ] {
        let out = cp.kubectl_stdin(
            ["apply", "-f", "-"],
            &example_in(&format!("manifests/examples/{file}"), ns),
        );
        let stderr = text(&out.stderr);
        assert_ok(&out, file);
        assert!(
            !stderr.contains("Warning"),
            "{file}: unexpected warnings: {stderr}"
        );
    }
}

#[tokio::test]
async fn broken_examples_are_rejected_with_our_messages() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    apply_examples(env.cp, &ns);
    let dir = repo_root().join("manifests/examples/broken");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("broken examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    for file in files {
        let rel = file
            .strip_prefix(repo_root())
            .expect("in repo")
            .display()
            .to_string();
        let yaml = example_in(&rel, &ns);
        let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("yaml");
        let expected = value["metadata"]["annotations"]["cairn.dev/expect-errors"]
            .as_str()
            .expect("annotation")
            .to_string();
        let out = env.cp.kubectl_stdin(["apply", "-f", "-"], &yaml);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{rel} was admitted");
        assert!(
            stderr.contains("denied the request"),
            "{rel}: not our webhook: {stderr}"
        );
        for path in expected.split(',') {
            assert!(
                stderr.contains(path.trim()),
                "{rel}: {path} not named in: {stderr}"
            );
        }
    }
}

#[tokio::test]
async fn valid_examples_are_defaulted_without_drift() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    apply_examples(env.cp, &ns);
    let out = env
        .cp
        .kubectl(["get", "bc", "es-backup", "-n", &ns, "-o", "json"]);
    let bc: serde_json::Value = serde_json::from_str(&assert_ok(&out, "get bc")).expect("json");
    assert_eq!(bc["spec"]["backupHistoryLimit"], 1);
    assert_eq!(bc["spec"]["timeZone"], "UTC");
    assert_eq!(bc["spec"]["startingDeadlineSeconds"], 300);
    assert_eq!(bc["spec"]["target"]["alias"], "host-0");
    assert_eq!(bc["spec"]["repository"]["namespace"], ns.as_str());
    let out = env
        .cp
        .kubectl(["get", "bc", "es-nightly", "-n", &ns, "-o", "json"]);
    let nightly: serde_json::Value =
        serde_json::from_str(&assert_ok(&out, "get bc")).expect("json");
    assert_eq!(
        nightly["spec"]["runtimeSettings"]["pod"]["securityContext"]["fsGroup"],
        65534
    );
    let out = env
        .cp
        .kubectl(["get", "repo", "s3-repo", "-n", &ns, "-o", "json"]);
    let repo: serde_json::Value = serde_json::from_str(&assert_ok(&out, "get repo")).expect("json");
    assert_eq!(
        repo["spec"]["usagePolicy"]["allowedNamespaces"]["from"],
        "Same"
    );

    // Applying the same manifests again changes nothing.
    let generation = bc["metadata"]["generation"].clone();
    let out = env.cp.kubectl_stdin(
        ["apply", "-f", "-"],
        &example_in("manifests/examples/backupconfiguration.yaml", &ns),
    );
    assert!(
        assert_ok(&out, "re-apply").contains("unchanged"),
        "drift on re-apply"
    );
    let out = env
        .cp
        .kubectl(["get", "bc", "es-backup", "-n", &ns, "-o", "json"]);
    let again: serde_json::Value = serde_json::from_str(&assert_ok(&out, "get bc")).expect("json");
    assert_eq!(again["metadata"]["generation"], generation);
    // Server-side dry run shows the defaults too.
    let out = env.cp.kubectl_stdin(
        ["apply", "--dry-run=server", "-o", "yaml", "-f", "-"],
        &example_in("manifests/examples/repository-local.yaml", &ns),
    );
    assert!(assert_ok(&out, "dry run").contains("from: Same"));
}

/// Manifests as Stash users write them (a prefix with slashes, the deprecated `spec.rules`,
/// `driver: Restic`, a versioned Task name) are admitted, and applying them again changes nothing: the webhook
/// rewrites nothing the user wrote (a GitOps tool would see drift on every sync).
#[tokio::test]
async fn stash_shaped_manifests_reapply_unchanged() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    let yaml = format!(
        r#"apiVersion: cairn.dev/v1alpha1
kind: Repository
metadata: {{name: slashes, namespace: {ns}}}
spec:
  backend:
    storageSecretName: s3-secret
    s3: {{endpoint: "https://s3.example.com", bucket: backups, prefix: /team/es/}}
---
apiVersion: cairn.dev/v1alpha1
kind: BackupConfiguration
metadata: {{name: restic-driver, namespace: {ns}}}
spec:
  driver: Restic
  task: {{name: elasticsearch-backup-7.3.2}}
  schedule: "0 3 * * *"
  repository: {{name: slashes}}
  target:
    ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: es}}
  retentionPolicy: {{name: keep-7, keepLast: 7}}
---
apiVersion: cairn.dev/v1alpha1
kind: RestoreSession
metadata: {{name: old-rules, namespace: {ns}}}
spec:
  driver: Restic
  repository: {{name: slashes}}
  target:
    ref: {{apiVersion: appcatalog.appscode.com/v1alpha1, kind: AppBinding, name: es}}
  rules:
    - snapshots: [latest]
"#
    );
    let first = env.cp.kubectl_stdin(["apply", "-f", "-"], &yaml);
    let text = assert_ok(&first, "first apply");
    assert_eq!(text.matches("created").count(), 3, "{text}");
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains("spec.rules"),
        "no deprecation warning: {stderr}"
    );
    let again = env.cp.kubectl_stdin(["apply", "-f", "-"], &yaml);
    let text = assert_ok(&again, "re-apply");
    assert_eq!(
        text.matches("unchanged").count(),
        3,
        "drift on re-apply: {text}"
    );
}

#[tokio::test]
async fn warnings_are_printed_by_kubectl() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    let yaml = example_in("manifests/examples/backupconfiguration.yaml", &ns).replace(
        "schedule: '*/30 * * * *'",
        "schedule: '* * * * *'\n  paused: true",
    );
    let out = env.cp.kubectl_stdin(["apply", "-f", "-"], &yaml);
    assert_ok(&out, "apply");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("Warning:"), "{stderr}");
    assert!(stderr.contains("spec.paused"), "{stderr}");
    assert!(
        stderr.contains("spec.repository"),
        "missing repository warns: {stderr}"
    );
    assert!(
        stderr.contains("spec.schedule"),
        "frequent schedule warns: {stderr}"
    );
}

#[tokio::test]
async fn a_backup_session_shows_its_job_on_a_server_dry_run() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    apply_examples(env.cp, &ns);
    let session = format!(
        "apiVersion: cairn.dev/v1alpha1\nkind: BackupSession\nmetadata:\n  name: manual-1\n  namespace: {ns}\nspec:\n  invoker:\n    apiGroup: cairn.dev\n    kind: BackupConfiguration\n    name: es-backup\n"
    );
    let out = env.cp.kubectl_stdin(
        ["create", "--dry-run=server", "-o", "json", "-f", "-"],
        &session,
    );
    let s: serde_json::Value = serde_json::from_str(&assert_ok(&out, "dry run")).expect("json");
    let pod = &s["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert_eq!(pod["containers"][0]["name"], "elasticsearch-backup");
    assert_eq!(pod["containers"][0]["image"], "cairn-agent:test");
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(s["spec"]["retryLeft"], 1);
    assert_eq!(
        s["metadata"]["labels"]["cairn.dev/invoker-name"],
        "es-backup"
    );

    // A session whose invoker does not exist is rejected.
    let orphan = session.replace("name: es-backup", "name: nowhere");
    let out = env.cp.kubectl_stdin(["create", "-f", "-"], &orphan);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("spec.invoker.name"),
        "{}",
        text(&out.stderr)
    );

    // Sessions are immutable.
    let out = env.cp.kubectl_stdin(["create", "-f", "-"], &session);
    assert_ok(&out, "create");
    let out = env.cp.kubectl([
        "patch",
        "bs",
        "manual-1",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"spec":{"retryLeft":5}}"#,
    ]);
    assert!(!out.status.success(), "spec change admitted");
    assert!(
        text(&out.stderr).contains("immutable"),
        "{}",
        text(&out.stderr)
    );
}

/// A GitOps pipeline applies a whole set at once: each object is reviewed a few milliseconds
/// after the ones it names were created, before the webhook's watch caches can have them. The
/// webhook reads such misses through to the API server, so nothing is denied or warned about.
#[tokio::test]
async fn objects_applied_together_with_what_they_name_are_admitted_without_warnings() {
    let env = env().await;
    for round in 0..3 {
        let ns = env.cp.new_namespace().await.expect("namespace");
        let mut docs: Vec<String> = [
            "secret-s3.yaml",
            "appbinding.yaml",
            "repository-s3.yaml",
            "backupconfiguration.yaml",
        ]
        .iter()
        .map(|f| example_in(&format!("manifests/examples/{f}"), &ns))
        .collect();
        docs.push(format!(
            "apiVersion: cairn.dev/v1alpha1\nkind: BackupSession\nmetadata:\n  name: first\n  namespace: {ns}\nspec:\n  invoker:\n    apiGroup: cairn.dev\n    kind: BackupConfiguration\n    name: es-backup\n"
        ));
        let out = env
            .cp
            .kubectl_stdin(["apply", "-f", "-"], &docs.join("---\n"));
        let stderr = text(&out.stderr);
        assert_ok(&out, &format!("round {round}: apply all at once"));
        assert!(
            !stderr.contains("Warning"),
            "round {round}: warnings: {stderr}\n{}",
            env.webhook.log_tail(20)
        );
        // The session's Job was resolved from the configuration at creation.
        let out = env.cp.kubectl([
            "get",
            "bs",
            "first",
            "-n",
            &ns,
            "-o",
            "jsonpath={.spec.jobTemplate.spec.template.spec.containers[0].name}",
        ]);
        assert_eq!(assert_ok(&out, "get session"), "elasticsearch-backup");
    }
}

/// The read-through itself against the real API server: caches that hold nothing (a watch that
/// fell behind), every object only in the API server. The session's Job is resolved from what
/// the GETs found, with no warning; the caches alone could not.
#[tokio::test]
async fn a_review_reads_what_the_caches_lack_from_the_api_server() {
    use cairn_api::resolve::InstallSettings;
    use cairn_api::validation::LookupTable;
    use cairn_webhook::admission::{Endpoint, Outcome};
    use cairn_webhook::read_through::{ApiFetch, Miss, review_reading_through};
    use kube::core::DynamicObject;
    use kube::core::admission::{AdmissionRequest, AdmissionReview};

    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    apply_examples(env.cp, &ns);
    let review: AdmissionReview<DynamicObject> = serde_json::from_value(serde_json::json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "u1", "operation": "CREATE", "name": "first", "namespace": ns,
            "kind": {"group": "cairn.dev", "version": "v1alpha1", "kind": "BackupSession"},
            "resource": {"group": "cairn.dev", "version": "v1alpha1", "resource": "backupsessions"},
            "userInfo": {"username": "alice"},
            "object": {"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
                       "metadata": {"name": "first", "namespace": ns},
                       "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"}}}
        }
    }))
    .expect("review");
    let req: AdmissionRequest<DynamicObject> = review.try_into().expect("request");
    let install = InstallSettings {
        agent_image: "cairn-agent:test".into(),
        ..Default::default()
    };
    let empty = LookupTable::default();

    let (alone, _, _) =
        review_reading_through(Endpoint::Mutate, &req, &empty, None, &install).await;
    assert!(
        alone.warnings.as_ref().is_some_and(|w| !w.is_empty()),
        "the empty caches alone cannot resolve the Job: {:?}",
        alone.warnings
    );

    let fetch = ApiFetch::new(env.cp.client());
    let (resp, outcome, report) =
        review_reading_through(Endpoint::Mutate, &req, &empty, Some(&fetch), &install).await;
    assert_eq!(outcome, Outcome::Patched, "{:?}", resp.result);
    assert!(
        resp.warnings.as_ref().is_none_or(|w| w.is_empty()),
        "{:?}",
        resp.warnings
    );
    let patch = String::from_utf8_lossy(resp.patch.as_deref().unwrap_or_default()).into_owned();
    assert!(patch.contains("jobTemplate"), "{patch}");
    assert!(patch.contains("elasticsearch-backup"), "{patch}");
    let kinds: Vec<&str> = report.found.iter().map(Miss::kind).collect();
    for kind in [
        "BackupConfiguration",
        "Repository",
        "AppBinding",
        "Task",
        "Function",
    ] {
        assert!(
            kinds.contains(&kind),
            "{kind} not read through: {:?}",
            report
        );
    }
}

#[tokio::test]
async fn a_finalizer_can_always_be_removed() {
    let env = env().await;
    let ns = env.cp.new_namespace().await.expect("namespace");
    apply_examples(env.cp, &ns);
    let out = env.cp.kubectl([
        "patch",
        "repo",
        "s3-repo",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":["cairn.dev/test"]}}"#,
    ]);
    assert_ok(&out, "add finalizer");
    let out = env
        .cp
        .kubectl(["delete", "repo", "s3-repo", "-n", &ns, "--wait=false"]);
    assert_ok(&out, "delete");
    let out = env.cp.kubectl([
        "patch",
        "repo",
        "s3-repo",
        "-n",
        &ns,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    assert_ok(&out, "remove finalizer of a terminating object");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = env.cp.kubectl(["get", "repo", "s3-repo", "-n", &ns]);
        if !out.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "repository never went away");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn metrics_and_probes() {
    let env = env().await;
    let (code, _) = env.webhook.admin_get("/livez").expect("livez");
    assert_eq!(code, 200);
    let (code, _) = env.webhook.admin_get("/readyz").expect("readyz");
    assert_eq!(code, 200);
    let ns = env.cp.new_namespace().await.expect("namespace");
    apply_examples(env.cp, &ns);
    let (code, body) = env.webhook.admin_get("/metrics").expect("metrics");
    assert_eq!(code, 200);
    assert!(
        body.contains("cairn_webhook_admission_requests_total"),
        "{body}"
    );
    assert!(body.contains("kind=\"BackupConfiguration\""), "{body}");
    assert!(
        body.contains("cairn_webhook_admission_duration_seconds_bucket"),
        "{body}"
    );
}
