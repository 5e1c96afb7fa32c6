//! Admission rules for BackupSession: each rule with objects it admits and objects it refuses,
//! asserting the exact field path and that the message says what would be valid.

use cairn_api::validation::{LookupTable, Verdict, validate_backup_session};
use cairn_api::{BackupConfiguration, BackupSession};
use proptest::prelude::*;
use serde_json::{Value, json};

fn session(spec: Value) -> BackupSession {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "BackupSession",
        "metadata": {"name": "nightly-1700000000", "namespace": "demo"},
        "spec": spec,
    }))
    .expect("test object deserializes")
}

fn invoker(kind: &str, name: &str) -> Value {
    json!({"invoker": {"apiGroup": "cairn.dev", "kind": kind, "name": name}})
}

fn config(namespace: &str, name: &str) -> BackupConfiguration {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "BackupConfiguration",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "schedule": "0 2 * * *",
            "repository": {"name": "repo"},
            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
            "retentionPolicy": {"name": "keep", "keepLast": 5},
        },
    }))
    .expect("test object deserializes")
}

/// `nightly` exists in `demo`; `elsewhere` only in another namespace.
fn lookups() -> LookupTable {
    LookupTable::default()
        .with_backup_configuration(config("demo", "nightly"))
        .with_backup_configuration(config("other", "elsewhere"))
}

enum Expect {
    Ok,
    Err(&'static str, &'static [&'static str]),
}

fn assert_verdict(name: &str, v: &Verdict, expect: &Expect) {
    match expect {
        Expect::Ok => assert!(v.errors.is_empty(), "{name}: unexpected {:?}", v.errors),
        Expect::Err(path, fragments) => {
            let found = v
                .errors
                .iter()
                .any(|e| e.path == *path && fragments.iter().all(|f| e.message.contains(f)));
            assert!(
                found,
                "{name}: expected an error at {path} containing {fragments:?}, got {:?}",
                v.errors
            );
        }
    }
}

#[test]
fn create_rules() {
    let cases: &[(&str, Value, Expect)] = &[
        (
            "existing invoker",
            invoker("BackupConfiguration", "nightly"),
            Expect::Ok,
        ),
        (
            "no apiGroup, retryLeft set",
            json!({"invoker": {"kind": "BackupConfiguration", "name": "nightly"}, "retryLeft": 1}),
            Expect::Ok,
        ),
        (
            "other kind",
            invoker("RestoreSession", "nightly"),
            Expect::Err(
                "spec.invoker.kind",
                &[
                    "\"RestoreSession\" is not supported",
                    "the only supported invoker kind is BackupConfiguration",
                ],
            ),
        ),
        (
            "wrong case",
            invoker("backupconfiguration", "nightly"),
            Expect::Err(
                "spec.invoker.kind",
                &[
                    "is not supported",
                    "the only supported invoker kind is BackupConfiguration",
                ],
            ),
        ),
        (
            "empty kind",
            invoker("", "nightly"),
            Expect::Err(
                "spec.invoker.kind",
                &[
                    "is empty",
                    "the only supported invoker kind is BackupConfiguration",
                ],
            ),
        ),
        (
            "missing invoker",
            invoker("BackupConfiguration", "weekly"),
            Expect::Err(
                "spec.invoker.name",
                &[
                    "BackupConfiguration demo/weekly does not exist",
                    "create it first or name an existing one",
                ],
            ),
        ),
        (
            "invoker in another namespace",
            invoker("BackupConfiguration", "elsewhere"),
            Expect::Err(
                "spec.invoker.name",
                &[
                    "BackupConfiguration demo/elsewhere does not exist",
                    "of its own namespace",
                ],
            ),
        ),
        (
            "empty name",
            invoker("BackupConfiguration", ""),
            Expect::Err(
                "spec.invoker.name",
                &["is empty", "name the BackupConfiguration"],
            ),
        ),
    ];
    let lookups = lookups();
    for (name, spec, expect) in cases {
        let v = validate_backup_session(&session(spec.clone()), None, &lookups);
        assert_verdict(name, &v, expect);
    }
}

#[test]
fn a_valid_session_has_no_warnings() {
    let v = validate_backup_session(
        &session(invoker("BackupConfiguration", "nightly")),
        None,
        &lookups(),
    );
    assert_eq!(v, Verdict::default());
}

#[test]
fn a_foreign_api_group_is_a_warning() {
    let s = session(
        json!({"invoker": {"apiGroup": "stash.appscode.com", "kind": "BackupConfiguration", "name": "nightly"}}),
    );
    let v = validate_backup_session(&s, None, &lookups());
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.warnings[0].path, "spec.invoker.apiGroup");
    assert!(v.warnings[0].message.contains("set apiGroup: cairn.dev"));
}

#[test]
fn errors_come_back_together() {
    let v = validate_backup_session(&session(invoker("CronJob", "")), None, &lookups());
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, vec!["spec.invoker.kind", "spec.invoker.name"]);
}

#[test]
fn spec_is_immutable_on_update() {
    // As stored after the webhook's CREATE mutation: retryLeft and jobTemplate filled in.
    let stored = json!({
        "invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "nightly"},
        "retryLeft": 1,
        "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "backup", "image": "agent"}]}}}},
    });
    let old = session(stored.clone());
    let with = |pointer: &str, value: Value| {
        let mut spec = stored.clone();
        if let Some(slot) = spec.pointer_mut(pointer) {
            *slot = value;
        }
        spec
    };
    let cases: &[(&str, Value, Expect)] = &[
        ("identical spec", stored.clone(), Expect::Ok),
        (
            "invoker",
            with("/invoker/name", json!("weekly")),
            Expect::Err(
                "spec.invoker",
                &[
                    "spec is immutable once created",
                    "BackupConfiguration/nightly to BackupConfiguration/weekly",
                    "create a new BackupSession",
                ],
            ),
        ),
        (
            "retryLeft",
            with("/retryLeft", json!(0)),
            Expect::Err(
                "spec.retryLeft",
                &[
                    "spec is immutable once created",
                    "from 1 to 0",
                    "create a new BackupSession",
                ],
            ),
        ),
        (
            "jobTemplate",
            with(
                "/jobTemplate/spec/template/spec/containers/0/image",
                json!("evil"),
            ),
            Expect::Err(
                "spec.jobTemplate",
                &[
                    "spec is immutable once created",
                    "create a new BackupSession",
                ],
            ),
        ),
    ];
    // The invoker need not exist any more: updates (status, finalizers) must still pass.
    let lookups = LookupTable::default();
    for (name, spec, expect) in cases {
        let v = validate_backup_session(&session(spec.clone()), Some(&old), &lookups);
        assert_verdict(name, &v, expect);
    }

    let mut labelled = old.clone();
    labelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("cairn.dev/invoker-name".into(), "nightly".into());
    assert_eq!(
        validate_backup_session(&labelled, Some(&old), &lookups),
        Verdict::default()
    );

    let mut deleting = session(with("/retryLeft", json!(0)));
    deleting.metadata.deletion_timestamp =
        Some(serde_json::from_value(json!("2024-01-01T00:00:00Z")).expect("time deserializes"));
    assert!(validate_backup_session(&deleting, Some(&old), &lookups).allowed());
}

proptest! {
    #[test]
    fn never_panics(kind in any::<String>(), name in any::<String>(), retry in any::<Option<i32>>()) {
        let s = session(json!({"invoker": {"apiGroup": name, "kind": kind, "name": name}, "retryLeft": retry}));
        let old = session(invoker("BackupConfiguration", "nightly"));
        let _ = validate_backup_session(&s, None, &lookups()).error_message();
        let _ = validate_backup_session(&s, Some(&old), &lookups()).error_message();
    }
}
