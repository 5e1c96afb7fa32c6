//! The admission decision on real AdmissionReview JSON: every kind, both endpoints, the
//! never-in-the-way rules, and bad bodies without a panic (hostile and mutated input at large:
//! `fuzz.rs`).

use std::path::Path;

use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::pod_security::PodSecurityLevel;
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::LookupTable;
use cairn_webhook::admission::{Endpoint, Outcome, review};
use cairn_webhook::server::decode;
use serde_json::{Value, json};

fn example_cluster() -> LookupTable {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let mut table = LookupTable::default().with_namespace("demo", &[]);
    for dir in ["examples", "catalog"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("manifests") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("readable");
            for doc in parse_documents(&text).expect("yaml") {
                table = match typed(doc).expect("typed") {
                    Object::Repository(o) => table.with_repository(o),
                    Object::BackupConfiguration(o) => table.with_backup_configuration(o),
                    Object::Task(o) => table.with_task(o),
                    Object::Function(o) => table.with_function(o),
                    Object::AppBinding(o) => table.with_app_binding(o),
                    _ => table,
                };
            }
        }
    }
    table
}

fn review_json(operation: &str, kind: &str, object: Value, old: Option<Value>) -> Value {
    let ns = object["metadata"]["namespace"].clone();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "0f5c-uid-42",
            "kind": {"group": "cairn.dev", "version": "v1alpha1", "kind": kind},
            "resource": {"group": "cairn.dev", "version": "v1alpha1", "resource": format!("{}s", kind.to_lowercase())},
            "name": object["metadata"]["name"].clone(),
            "namespace": ns,
            "operation": operation,
            "userInfo": {"username": "alice"},
            "object": object,
            "oldObject": old,
            "dryRun": false
        }
    })
}

fn run(endpoint: Endpoint, review_body: &Value) -> (Value, Outcome) {
    let body = serde_json::to_vec(review_body).expect("json");
    let req = decode(&body).expect("decodes");
    let (resp, outcome) = review(
        endpoint,
        &req,
        &example_cluster(),
        &InstallSettings::default(),
    );
    (
        serde_json::to_value(resp.into_review()).expect("json"),
        outcome,
    )
}

fn bc() -> Value {
    json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
        "metadata": {"name": "nightly", "namespace": "demo"},
        "spec": {
            "schedule": "0 1 * * *",
            "repository": {"name": "s3-repo"},
            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
            "retentionPolicy": {"name": "keep", "keepLast": 3}
        }
    })
}

fn apply_patch(object: &Value, response: &Value) -> Value {
    let mut doc = object.clone();
    // kube encodes the patch bytes as a JSON array of numbers (Go's decoder accepts it).
    let Some(patch) = response["response"]["patch"].as_array() else {
        return doc;
    };
    let bytes: Vec<u8> = patch
        .iter()
        .map(|b| b.as_u64().and_then(|b| u8::try_from(b).ok()).expect("byte"))
        .collect();
    let p: json_patch::Patch = serde_json::from_slice(&bytes).expect("json patch");
    json_patch::patch(&mut doc, &p).expect("patch applies to the object as sent");
    doc
}

#[test]
fn valid_configuration_is_admitted_and_defaulted_once() {
    let (v, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupConfiguration", bc(), None),
    );
    assert_eq!(outcome, Outcome::Allowed);
    assert_eq!(v["response"]["uid"], "0f5c-uid-42");
    assert_eq!(v["response"]["allowed"], true);
    // The API server rejects a response without these.
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(v["kind"], "AdmissionReview");

    let (m, outcome) = run(
        Endpoint::Mutate,
        &review_json("CREATE", "BackupConfiguration", bc(), None),
    );
    assert_eq!(outcome, Outcome::Patched);
    let defaulted = apply_patch(&bc(), &m);
    assert_eq!(defaulted["spec"]["backupHistoryLimit"], 1);
    assert_eq!(defaulted["spec"]["timeZone"], "UTC");
    assert_eq!(defaulted["spec"]["task"]["name"], "elasticsearch-backup");

    // Defaulting the defaulted object changes nothing: no drift for GitOps tools.
    let (again, outcome) = run(
        Endpoint::Mutate,
        &review_json(
            "UPDATE",
            "BackupConfiguration",
            with_schedule(&defaulted, "0 2 * * *"),
            Some(defaulted.clone()),
        ),
    );
    assert_eq!(outcome, Outcome::Allowed, "{again}");
    assert!(again["response"]["patch"].is_null());
}

fn with_schedule(v: &Value, schedule: &str) -> Value {
    let mut v = v.clone();
    v["spec"]["schedule"] = json!(schedule);
    v
}

#[test]
fn invalid_configuration_is_denied_with_every_field_path() {
    let mut bad = bc();
    bad["spec"]["schedule"] = json!("*/5 * *");
    bad["spec"]["timeZone"] = json!("Mars/Olympus");
    bad["spec"]["retentionPolicy"]["keepLast"] = json!(-1);
    let (v, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupConfiguration", bad, None),
    );
    assert_eq!(outcome, Outcome::Denied);
    assert_eq!(v["response"]["allowed"], false);
    assert_eq!(v["response"]["uid"], "0f5c-uid-42");
    let message = v["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default();
    for path in [
        "spec.schedule",
        "spec.timeZone",
        "spec.retentionPolicy.keepLast",
    ] {
        assert!(message.contains(path), "{path} missing from {message}");
    }
    assert!(message.contains("expected 5 fields"), "{message}");
}

#[test]
fn warnings_are_returned() {
    let mut paused = bc();
    paused["spec"]["paused"] = json!(true);
    paused["spec"]["repository"]["name"] = json!("not-there-yet");
    let (v, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupConfiguration", paused, None),
    );
    assert_eq!(outcome, Outcome::Allowed);
    let warnings = v["response"]["warnings"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(warnings.len() >= 2, "{warnings:?}");
}

#[test]
fn terminating_and_metadata_only_updates_are_never_blocked() {
    let mut bad = bc();
    bad["spec"]["schedule"] = json!("not cron");
    let mut terminating = bad.clone();
    terminating["metadata"]["deletionTimestamp"] = json!("2026-11-25T10:00:00Z");
    terminating["metadata"]["finalizers"] = json!([]);
    let (v, outcome) = run(
        Endpoint::Validate,
        &review_json(
            "UPDATE",
            "BackupConfiguration",
            terminating,
            Some(bad.clone()),
        ),
    );
    assert_eq!(outcome, Outcome::Allowed, "{v}");

    let mut relabelled = bad.clone();
    relabelled["metadata"]["labels"] = json!({"team": "search"});
    let (_, outcome) = run(
        Endpoint::Validate,
        &review_json(
            "UPDATE",
            "BackupConfiguration",
            relabelled,
            Some(bad.clone()),
        ),
    );
    assert_eq!(outcome, Outcome::Allowed);

    let (_, outcome) = run(
        Endpoint::Validate,
        &review_json("DELETE", "BackupConfiguration", bad, None),
    );
    assert_eq!(outcome, Outcome::Allowed);
}

#[test]
fn backup_session_gets_its_job_at_creation() {
    let session = json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": "es-backup-manual-1", "namespace": "demo"},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"}}
    });
    let (m, outcome) = run(
        Endpoint::Mutate,
        &review_json("CREATE", "BackupSession", session.clone(), None),
    );
    assert_eq!(outcome, Outcome::Patched);
    let s = apply_patch(&session, &m);
    assert_eq!(s["spec"]["retryLeft"], 1);
    assert_eq!(
        s["metadata"]["labels"]["cairn.dev/invoker-name"],
        "es-backup"
    );
    let container = &s["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "elasticsearch-backup");
    assert_eq!(
        s["spec"]["jobTemplate"]["spec"]["template"]["spec"]["automountServiceAccountToken"],
        false
    );

    // Without its Task the session is admitted with a warning, and no Job yet.
    let mut orphan = session.clone();
    orphan["spec"]["invoker"]["name"] = json!("es-nightly");
    let mut cluster = example_cluster();
    cluster.tasks.clear();
    let body =
        serde_json::to_vec(&review_json("CREATE", "BackupSession", orphan, None)).expect("json");
    let req = decode(&body).expect("decodes");
    let (resp, _) = review(
        Endpoint::Mutate,
        &req,
        &cluster,
        &InstallSettings::default(),
    );
    let warnings = resp.warnings.unwrap_or_default().join("\n");
    assert!(warnings.contains("spec.jobTemplate"), "{warnings}");
}

#[test]
fn unknown_kinds_and_bad_bodies_get_clear_errors() {
    let mut v = review_json("CREATE", "BackupConfiguration", bc(), None);
    v["request"]["kind"] = json!({"group": "apps", "version": "v1", "kind": "Deployment"});
    let (resp, outcome) = run(Endpoint::Validate, &v);
    assert_eq!(outcome, Outcome::Denied);
    assert_eq!(resp["response"]["uid"], "0f5c-uid-42");
    assert!(
        resp["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("it serves Repository")
    );

    assert!(decode(b"{not json").unwrap_err().contains("not JSON"));
    let err = decode(br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview"}"#)
        .unwrap_err();
    assert!(err.contains("admission.k8s.io/v1"), "{err}");
    let err =
        decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#).unwrap_err();
    assert!(err.contains("no request"), "{err}");
}

#[test]
fn an_object_that_does_not_parse_is_denied_not_panicked() {
    let mut bad = bc();
    bad["spec"]["retentionPolicy"] = json!("keep everything");
    let (v, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupConfiguration", bad.clone(), None),
    );
    assert_eq!(outcome, Outcome::Denied);
    assert!(
        v["response"]["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match its schema at spec.retentionPolicy: invalid type"),
        "the denial names the field: {v}"
    );
    // The mutating endpoint leaves it to the API server's schema validation.
    let (_, outcome) = run(
        Endpoint::Mutate,
        &review_json("CREATE", "BackupConfiguration", bad, None),
    );
    assert_eq!(outcome, Outcome::Allowed);
}

fn denial(resp: &Value) -> String {
    resp["response"]["status"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn a_session_carrying_its_own_job_is_denied() {
    let hostile_job = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "x", "image": "busybox", "securityContext": {"privileged": true}}],
        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}});
    let backup = json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": "mine", "namespace": "demo"},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"},
                 "jobTemplate": hostile_job}
    });
    let (resp, outcome) = run(
        Endpoint::Mutate,
        &review_json("CREATE", "BackupSession", backup, None),
    );
    assert_eq!(outcome, Outcome::Denied);
    assert!(
        denial(&resp).contains("spec.jobTemplate: only cairn writes it"),
        "{resp}"
    );

    let mut restore = json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession",
        "metadata": {"name": "mine", "namespace": "demo"},
        "spec": {"repository": {"name": "s3-repo"},
                 "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                            "rules": [{"snapshots": ["latest"]}]}}
    });
    restore["spec"]["jobTemplate"] = hostile_job;
    let (resp, outcome) = run(
        Endpoint::Mutate,
        &review_json("CREATE", "RestoreSession", restore, None),
    );
    assert_eq!(outcome, Outcome::Denied);
    assert!(denial(&resp).contains("spec.jobTemplate"), "{resp}");
}

#[test]
fn a_session_label_naming_another_configuration_is_denied() {
    let session = json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": "mine", "namespace": "demo",
                     "labels": {"cairn.dev/invoker-name": "someone-else"}},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"}}
    });
    let (resp, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupSession", session.clone(), None),
    );
    assert_eq!(outcome, Outcome::Denied);
    assert!(
        denial(&resp).contains("metadata.labels[cairn.dev/invoker-name]"),
        "{resp}"
    );
    let mut right = session;
    right["metadata"]["labels"] = json!({"cairn.dev/invoker-name": "es-backup"});
    let (_, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupSession", right, None),
    );
    assert_eq!(outcome, Outcome::Allowed);
}

#[test]
fn what_a_configuration_asks_of_its_job_is_bounded() {
    let cases = [
        (
            json!({"task": {"params": [{"name": "TARGET_URL", "value": "http://attacker.invalid:9200"}]}}),
            "spec.task.params[0].name",
        ),
        (
            json!({"target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                              "args": ["--url=http://attacker.invalid:9200"]}}),
            "spec.target.args[0]",
        ),
        (
            json!({"runtimeSettings": {"pod": {"securityContext": {"runAsUser": 0}}}}),
            "spec.runtimeSettings.pod.securityContext.runAsUser",
        ),
        (
            json!({"runtimeSettings": {"container": {"securityContext": {"privileged": true}}}}),
            "spec.runtimeSettings.container.securityContext.privileged",
        ),
        (
            json!({"runtimeSettings": {"container": {"env": [{"name": "CAIRN_TARGET_CA_CERT", "value": "x"}]}}}),
            "spec.runtimeSettings.container.env[0].name",
        ),
        (
            json!({"runtimeSettings": {"pod": {"podLabels": {"cairn.dev/session": "other"}}}}),
            "spec.runtimeSettings.pod.podLabels[cairn.dev/session]",
        ),
        (
            json!({"runtimeSettings": {"pod": {"podAnnotations": {"sidecar.istio.io/proxyImage": "evil/img"}}}}),
            "spec.runtimeSettings.pod.podAnnotations[sidecar.istio.io/proxyImage]",
        ),
        (
            json!({"runtimeSettings": {"pod": {"nodeName": "control-plane-0"}}}),
            "spec.runtimeSettings.pod.nodeName",
        ),
        (
            json!({"runtimeSettings": {"pod": {"priorityClassName": "system-node-critical"}}}),
            "spec.runtimeSettings.pod.priorityClassName",
        ),
        (
            json!({"runtimeSettings": {"container": {"env": [{"name": "HTTPS_PROXY", "value": "http://attacker.invalid:3128"}]}}}),
            "spec.runtimeSettings.container.env[0].name",
        ),
        (
            json!({"runtimeSettings": {"container": {"envFrom": [{"configMapRef": {"name": "mine"}}]}}}),
            "spec.runtimeSettings.container.envFrom[0].prefix",
        ),
        (
            json!({"interimVolumeTemplate": {"metadata": {"name": "dump"},
                   "spec": {"volumeName": "someone-elses-pv", "resources": {"requests": {"storage": "1Gi"}}}}}),
            "spec.interimVolumeTemplate.spec.volumeName",
        ),
    ];
    for (extra, path) in cases {
        let mut config = bc();
        config["spec"]
            .as_object_mut()
            .expect("spec")
            .extend(extra.as_object().expect("object").clone());
        let (resp, outcome) = run(
            Endpoint::Validate,
            &review_json("CREATE", "BackupConfiguration", config, None),
        );
        let message = denial(&resp);
        assert_eq!(outcome, Outcome::Denied, "{path}: {resp}");
        assert!(message.contains(path), "{path}: {message}");
        assert!(!message.contains("attacker"), "{message}");
    }
    // Stash's documentation shows runAsUser: 0; the reason names the install value.
    let mut root = bc();
    root["spec"]["runtimeSettings"] = json!({"pod": {"securityContext": {"runAsUser": 0}}});
    let (resp, _) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupConfiguration", root, None),
    );
    assert!(denial(&resp).contains("jobPodSecurity: baseline"), "{resp}");
}

#[test]
fn repositories_and_sessions_cannot_steer_jobs_either() {
    let repo = |backend: Value| {
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
               "metadata": {"name": "r", "namespace": "demo"},
               "spec": {"backend": backend}})
    };
    for (backend, path) in [
        (
            json!({"storageSecretName": "s", "rest": {"url": "https://user:hunter2@rest.example:8000/"}}),
            "spec.backend.rest.url",
        ),
        (
            json!({"storageSecretName": "s", "local": {"mountPath": "/usr/local/bin", "emptyDir": {}}}),
            "spec.backend.local.mountPath",
        ),
        (
            json!({"storageSecretName": "s", "local": {"mountPath": "/r", "hostPath": {"path": "/"}}}),
            "spec.backend.local.hostPath",
        ),
    ] {
        let (resp, outcome) = run(
            Endpoint::Validate,
            &review_json("CREATE", "Repository", repo(backend), None),
        );
        assert_eq!(outcome, Outcome::Denied, "{path}");
        assert!(denial(&resp).contains(path), "{path}: {resp}");
        assert!(!denial(&resp).contains("hunter2"), "{resp}");
    }
    let session = json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": "forever", "namespace": "demo"},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"},
                 "retryLeft": 2147483647}
    });
    let (resp, outcome) = run(
        Endpoint::Validate,
        &review_json("CREATE", "BackupSession", session, None),
    );
    assert_eq!(outcome, Outcome::Denied);
    assert!(denial(&resp).contains("spec.retryLeft"), "{resp}");
}

#[test]
fn an_install_that_opted_in_admits_more() {
    let mut config = bc();
    config["spec"]["runtimeSettings"] =
        json!({"container": {"securityContext": {"privileged": true}}});
    let body = serde_json::to_vec(&review_json("CREATE", "BackupConfiguration", config, None))
        .expect("json");
    let req = decode(&body).expect("decodes");
    let mut install = InstallSettings::default();
    for (level, allowed) in [
        (PodSecurityLevel::Restricted, false),
        (PodSecurityLevel::Baseline, false),
        (PodSecurityLevel::Privileged, true),
    ] {
        install.policy.job_pod_security = level;
        let (_, outcome) = review(Endpoint::Validate, &req, &example_cluster(), &install);
        assert_eq!(outcome == Outcome::Allowed, allowed, "{level}");
    }
}
