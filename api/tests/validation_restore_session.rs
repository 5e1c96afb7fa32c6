//! Admission rules of RestoreSession, table-driven like the BackupConfiguration tests: each
//! case merge-patches the `spec` of a valid object, optionally changes what the lookups know,
//! and expects a clean admit, one error at an exact path, or one warning at an exact path.

use cairn_api::validation::{LookupTable, Policy, Verdict, validate_restore_session};
use cairn_api::{AppBinding, Repository, RestoreSession, Task};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A valid RestoreSession in namespace `demo` that uses every optional block.
fn base() -> Value {
    json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "RestoreSession",
        "metadata": {"name": "restore-1", "namespace": "demo"},
        "spec": {
            "repository": {"name": "s3-repo"},
            "target": {
                "ref": {
                    "apiVersion": "appcatalog.appscode.com/v1alpha1",
                    "kind": "AppBinding",
                    "name": "es"
                },
                "rules": [{"snapshots": ["latest"]}]
            },
            "task": {"name": "elasticsearch-restore"},
            "runtimeSettings": {"container": {
                "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "1Gi"}},
                "nice": {"adjustment": 10}
            }},
            "tempDir": {"sizeLimit": "2Gi"},
            "interimVolumeTemplate": {
                "metadata": {"name": "download"},
                "spec": {"resources": {"requests": {"storage": "20Gi"}}}
            },
            "timeOut": "2h"
        }
    })
}

fn repo(ns: &str, name: &str, secret: &str, policy: Value) -> Repository {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backend": {"storageSecretName": secret, "gcs": {"bucket": "backups"}},
            "usagePolicy": policy
        }
    }))
    .expect("repository")
}

fn app_binding(name: &str, insecure: bool) -> AppBinding {
    let mut binding: AppBinding = serde_json::from_value(json!({
        "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"clientConfig": {"url": "https://es.demo.svc:9200"}}
    }))
    .expect("appbinding");
    // Set on the struct: the check is about the field, whatever its JSON spelling.
    binding.spec.client_config.insecure_skip_tls_verify = Some(insecure);
    binding
}

fn task(name: &str) -> Task {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": name},
        "spec": {"steps": [{"name": name}]}
    }))
    .expect("task")
}

fn world() -> LookupTable {
    LookupTable::default()
        .with_repository(repo("demo", "s3-repo", "s3-secret", json!(null)))
        .with_repository(repo(
            "backup",
            "only-backup",
            "x",
            json!({"allowedNamespaces": {"from": "Same"}}),
        ))
        .with_repository(repo(
            "backup",
            "prod-only",
            "x",
            json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchExpressions": [
                {"key": "env", "operator": "In", "values": ["prod"]}
            ]}}}),
        ))
        .with_repository(repo(
            "backup",
            "shared",
            "x",
            json!({"allowedNamespaces": {"from": "All"}}),
        ))
        .with_app_binding(app_binding("es", false))
        .with_app_binding(app_binding("es-insecure", true))
        .with_task(task("elasticsearch-restore"))
        .with_namespace("demo", &[("env", "dev")])
}

/// RFC 7386 JSON merge patch: objects merge, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn object(spec_patch: &Value) -> RestoreSession {
    let mut v = base();
    merge(&mut v["spec"], spec_patch);
    serde_json::from_value(v).expect("test object deserializes")
}

/// `spec.target.rules` replaced by `rules`.
fn rules(rules: Value) -> Value {
    json!({"target": {"rules": rules}})
}

enum Expect {
    /// Admitted with no error and no warning.
    Ok,
    /// Rejected with exactly one error, at this path, whose message has all these words.
    Err(&'static str, &'static [&'static str]),
    /// Admitted with exactly one warning, at this path, whose message has all these words.
    Warn(&'static str, &'static [&'static str]),
}
use Expect::{Err, Ok, Warn};

struct Case {
    name: &'static str,
    spec: Value,
    world: fn(&mut LookupTable),
    expect: Expect,
}

fn same(_: &mut LookupTable) {}

fn c(name: &'static str, spec: Value, expect: Expect) -> Case {
    Case {
        name,
        spec,
        world: same,
        expect,
    }
}

fn check(case: &Case, verdict: &Verdict) {
    let name = case.name;
    match &case.expect {
        Ok => assert!(
            verdict.errors.is_empty() && verdict.warnings.is_empty(),
            "{name}: expected a clean admit, got {verdict:#?}"
        ),
        Err(path, words) => {
            assert_eq!(verdict.errors.len(), 1, "{name}: {verdict:#?}");
            let e = &verdict.errors[0];
            assert_eq!(e.path, *path, "{name}: {e}");
            for w in *words {
                assert!(e.message.contains(w), "{name}: {w:?} not in {e}");
            }
        }
        Warn(path, words) => {
            assert!(verdict.errors.is_empty(), "{name}: {verdict:#?}");
            assert_eq!(verdict.warnings.len(), 1, "{name}: {verdict:#?}");
            let w = &verdict.warnings[0];
            assert_eq!(w.path, *path, "{name}: {w}");
            for word in *words {
                assert!(w.message.contains(word), "{name}: {word:?} not in {w}");
            }
        }
    }
}

fn run(cases: Vec<Case>) {
    for case in &cases {
        let mut lookups = world();
        (case.world)(&mut lookups);
        let verdict =
            validate_restore_session(&object(&case.spec), None, &lookups, &Policy::default());
        check(case, &verdict);
    }
}

#[test]
fn base_object_is_admitted_cleanly() {
    run(vec![c("base", json!({}), Ok)]);
}

#[test]
fn target_repository_task() {
    run(vec![
        c(
            "Deployment",
            json!({"target": {"ref": {"kind": "Deployment"}}}),
            Err(
                "spec.target.ref.kind",
                &[
                    "\"Deployment\" is not a supported target kind",
                    "AppBinding",
                ],
            ),
        ),
        c(
            "wrong apiVersion",
            json!({"target": {"ref": {"apiVersion": "kubedb.com/v1"}}}),
            Err(
                "spec.target.ref.apiVersion",
                &["appcatalog.appscode.com/v1alpha1"],
            ),
        ),
        c(
            "another namespace",
            json!({"target": {"ref": {"namespace": "prod"}}}),
            Err(
                "spec.target.ref.namespace",
                &["another namespace", "\"demo\""],
            ),
        ),
        c(
            "missing AppBinding",
            json!({"target": {"ref": {"name": "es-new"}}}),
            Warn(
                "spec.target.ref",
                &["AppBinding demo/es-new does not exist"],
            ),
        ),
        c(
            "AppBinding skips TLS verification",
            json!({"target": {"ref": {"name": "es-insecure"}}}),
            Warn("spec.target.ref", &["insecureSkipTLSVerify"]),
        ),
        c(
            "Repository from All",
            json!({"repository": {"name": "shared", "namespace": "backup"}}),
            Ok,
        ),
        c(
            "Repository of another namespace",
            json!({"repository": {"name": "only-backup", "namespace": "backup"}}),
            Err(
                "spec.repository",
                &["does not admit namespace \"demo\"", "from is Same", "All"],
            ),
        ),
        c(
            "Repository selector excludes the namespace",
            json!({"repository": {"name": "prod-only", "namespace": "backup"}}),
            Err(
                "spec.repository",
                &[
                    "does not admit namespace \"demo\"",
                    "selector does not match",
                ],
            ),
        ),
        Case {
            name: "selector admits once the namespace is labelled",
            spec: json!({"repository": {"name": "prod-only", "namespace": "backup"}}),
            world: |t| {
                t.namespaces
                    .insert("demo".into(), [("env".into(), "prod".into())].into());
            },
            expect: Ok,
        },
        c(
            "missing Repository",
            json!({"repository": {"name": "later"}}),
            Warn("spec.repository", &["Repository demo/later does not exist"]),
        ),
        c(
            "missing Task",
            json!({"task": {"name": "custom-restore"}}),
            Warn(
                "spec.task.name",
                &["Task \"custom-restore\" does not exist"],
            ),
        ),
        c(
            "duplicate param",
            json!({"task": {"params": [{"name": "X", "value": "1"}, {"name": "X", "value": "1"}]}}),
            Err(
                "spec.task.params[1].name",
                &["already set by spec.task.params[0]"],
            ),
        ),
        c(
            "empty param name",
            json!({"task": {"params": [{"name": "", "value": "1"}]}}),
            Err("spec.task.params[0].name", &["must not be empty"]),
        ),
        c(
            "onFailure close",
            json!({"task": {"params": [{"name": "onFailure", "value": "close"}]}}),
            Ok,
        ),
        c(
            "onFailure of no meaning",
            json!({"task": {"params": [{"name": "onFailure", "value": "keep"}]}}),
            Err(
                "spec.task.params[0].value",
                &["param onFailure", "\"keep\"", "expected delete or close"],
            ),
        ),
        c(
            "existing of no meaning",
            json!({"task": {"params": [{"name": "existing", "value": "merge"}]}}),
            Err(
                "spec.task.params[0].value",
                &["param existing", "fail, skip or overwrite"],
            ),
        ),
        c(
            "huge waitTimeout",
            json!({"task": {"params": [{"name": "waitTimeout", "value": "99999999999999h"}]}}),
            Err(
                "spec.task.params[0].value",
                &["param waitTimeout", "too long"],
            ),
        ),
        c(
            "waitTimeout past a day",
            json!({"task": {"params": [{"name": "waitTimeout", "value": "18446744073709551615"}]}}),
            Err(
                "spec.task.params[0].value",
                &["param waitTimeout", "longer than 24h"],
            ),
        ),
    ]);
}

#[test]
fn settings_volumes_and_time_out() {
    run(vec![
        c(
            "no optional blocks",
            json!({"runtimeSettings": null, "tempDir": null, "interimVolumeTemplate": null, "timeOut": null, "task": null}),
            Ok,
        ),
        c(
            "memory limit below request",
            json!({"runtimeSettings": {"container": {"resources": {"limits": {"memory": "128Mi"}}}}}),
            Err(
                "spec.runtimeSettings.container.resources.limits.memory",
                &["below the request \"256Mi\""],
            ),
        ),
        c(
            "nice out of range",
            json!({"runtimeSettings": {"container": {"nice": {"adjustment": 100}}}}),
            Err(
                "spec.runtimeSettings.container.nice.adjustment",
                &["-20", "19"],
            ),
        ),
        c(
            "ionice class out of range",
            json!({"runtimeSettings": {"container": {"ionice": {"class": 9}}}}),
            Err("spec.runtimeSettings.container.ionice.class", &["3 (idle)"]),
        ),
        c(
            "tempDir zero",
            json!({"tempDir": {"sizeLimit": "0Gi"}}),
            Err("spec.tempDir.sizeLimit", &["not above zero"]),
        ),
        c(
            "interim block volume",
            json!({"interimVolumeTemplate": {"spec": {"volumeMode": "Block"}}}),
            Err(
                "spec.interimVolumeTemplate.spec.volumeMode",
                &["Filesystem"],
            ),
        ),
        c(
            "interim without storage",
            json!({"interimVolumeTemplate": {"spec": {"resources": {"requests": {"storage": null}}}}}),
            Err(
                "spec.interimVolumeTemplate.spec.resources.requests.storage",
                &["must be set"],
            ),
        ),
        c(
            "interim bad name",
            json!({"interimVolumeTemplate": {"metadata": {"name": "-x"}}}),
            Err(
                "spec.interimVolumeTemplate.metadata.name",
                &["not a DNS label"],
            ),
        ),
        c(
            "interim with dataSource",
            json!({"interimVolumeTemplate": {"spec": {"dataSource": {"kind": "PersistentVolumeClaim", "name": "x"}}}}),
            Err(
                "spec.interimVolumeTemplate.spec.dataSource",
                &["start empty"],
            ),
        ),
        c("timeOut 45m", json!({"timeOut": "45m"}), Ok),
        c(
            "timeOut bad",
            json!({"timeOut": "2 hours"}),
            Err("spec.timeOut", &["1h30m"]),
        ),
        c(
            "timeOut zero",
            json!({"timeOut": "0"}),
            Err("spec.timeOut", &["not above zero"]),
        ),
    ]);
}

#[test]
fn restore_rules() {
    let hex64 = "0123456789abcdef".repeat(4);
    run(vec![
        c("no rules", rules(json!(null)), Ok),
        c(
            "a snapshot id",
            rules(json!([{"snapshots": ["deadbeef"]}])),
            Ok,
        ),
        c(
            "a full snapshot id",
            rules(json!([{"snapshots": [hex64]}])),
            Ok,
        ),
        c(
            "paths only",
            rules(json!([{"include": ["logs-*"], "exclude": ["logs-debug"]}])),
            Ok,
        ),
        c(
            "one catch-all and host rules",
            rules(json!([
                {"targetHosts": ["host-1", "host-2"], "snapshots": ["latest"]},
                {"snapshots": ["latest"]},
                {"targetHosts": ["host-3"], "sourceHost": "host-0", "snapshots": ["latest"]}
            ])),
            Ok,
        ),
        c(
            "a host repeated within one rule",
            rules(json!([{"targetHosts": ["host-1", "host-1"]}])),
            Ok,
        ),
        c(
            "two catch-all rules",
            rules(json!([{"snapshots": ["latest"]}, {"include": ["a"]}])),
            Err(
                "spec.target.rules[1].targetHosts",
                &[
                    "like spec.target.rules[0].targetHosts",
                    "only one rule may leave it empty",
                ],
            ),
        ),
        c(
            "a host in two rules",
            rules(json!([
                {"targetHosts": ["host-1"], "snapshots": ["latest"]},
                {"targetHosts": ["host-2", "host-1"], "snapshots": ["latest"]}
            ])),
            Err(
                "spec.target.rules[1].targetHosts[1]",
                &[
                    "\"host-1\" is already listed in spec.target.rules[0].targetHosts",
                    "one rule only",
                ],
            ),
        ),
        c(
            "snapshots and include",
            rules(json!([{"snapshots": ["latest"], "include": ["logs-*"]}])),
            Err(
                "spec.target.rules[0].snapshots",
                &["include", "either whole snapshots", "include/exclude"],
            ),
        ),
        c(
            "snapshots and exclude",
            rules(json!([{"snapshots": ["latest"], "exclude": ["logs-*"]}])),
            Err(
                "spec.target.rules[0].snapshots",
                &["cannot be combined with exclude"],
            ),
        ),
        c(
            "short snapshot id",
            rules(json!([{"snapshots": ["latest", "abc123"]}])),
            Err(
                "spec.target.rules[0].snapshots[1]",
                &[
                    "\"abc123\" is not a snapshot id",
                    "\"latest\"",
                    "8 to 64",
                    "hex",
                ],
            ),
        ),
        c(
            "snapshot id too long",
            rules(json!([{"snapshots": ["a".repeat(65)]}])),
            Err("spec.target.rules[0].snapshots[0]", &["8 to 64"]),
        ),
        c(
            "not hex",
            rules(
                json!([{"targetHosts": ["host-0"], "snapshots": ["deadbeef"]}, {"snapshots": ["zzzzzzzz"]}]),
            ),
            Err(
                "spec.target.rules[1].snapshots[0]",
                &["\"zzzzzzzz\" is not a snapshot id"],
            ),
        ),
        c(
            "uppercase hex",
            rules(json!([{"snapshots": ["DEADBEEF"]}])),
            Err("spec.target.rules[0].snapshots[0]", &["lowercase"]),
        ),
        c(
            "empty host",
            rules(json!([{"targetHosts": [""]}])),
            Err(
                "spec.target.rules[0].targetHosts[0]",
                &["must not be empty", "host-0"],
            ),
        ),
    ]);
}

#[test]
fn deprecated_rules() {
    run(vec![
        c(
            "spec.rules alone",
            json!({"rules": [{"snapshots": ["latest"]}], "target": {"rules": null}}),
            Warn("spec.rules", &["deprecated", "spec.target.rules"]),
        ),
        c(
            "spec.rules checked at their own path",
            json!({"rules": [{"snapshots": ["nope"]}], "target": {"rules": null}}),
            Err(
                "spec.rules[0].snapshots[0]",
                &["\"nope\" is not a snapshot id", "latest"],
            ),
        ),
        c(
            "spec.rules with snapshots and include",
            json!({"rules": [{"snapshots": ["latest"], "include": ["a"]}], "target": {"rules": null}}),
            Err("spec.rules[0].snapshots", &["include"]),
        ),
        // Kept as written and read as spec.target.rules: both set is one error, said once.
        c(
            "rules in both places",
            json!({
                "target": {"rules": [{"targetHosts": ["host-0"], "snapshots": ["latest"]}]},
                "rules": [{"targetHosts": ["host-1"], "snapshots": ["latest"]}]
            }),
            Err("spec.rules", &["both set", "spec.target.rules"]),
        ),
    ]);
}

#[test]
fn all_errors_come_back_together() {
    let rs = object(&json!({
        "target": {
            "ref": {"kind": "Pod"},
            "rules": [{"snapshots": ["x"]}, {"snapshots": ["latest"], "include": ["a"]}]
        },
        "timeOut": "never",
        "tempDir": {"sizeLimit": "-1"}
    }));
    let verdict = validate_restore_session(&rs, None, &world(), &Policy::default());
    let paths: Vec<&str> = verdict.errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "spec.target.ref.kind",
        "spec.target.rules[0].snapshots[0]",
        "spec.target.rules[1].targetHosts",
        "spec.target.rules[1].snapshots",
        "spec.timeOut",
        "spec.tempDir.sizeLimit",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
}

#[test]
fn spec_is_immutable() {
    let lookups = world();
    let old = object(&json!({}));

    let changed = object(&json!({"timeOut": "3h"}));
    let v = validate_restore_session(&changed, Some(&old), &lookups, &Policy::default());
    assert_eq!(v.errors.len(), 1, "{v:#?}");
    assert_eq!(v.errors[0].path, "spec");
    assert!(v.errors[0].message.contains("immutable"), "{}", v.errors[0]);
    assert!(
        v.errors[0].message.contains("create a new RestoreSession"),
        "{}",
        v.errors[0]
    );

    // Metadata and status changes pass, even when the spec would not pass today.
    let mut relabelled = old.clone();
    relabelled.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    relabelled.status = Some(Default::default());
    assert_eq!(
        validate_restore_session(&relabelled, Some(&old), &lookups, &Policy::default()),
        Verdict::default()
    );
    let stale = object(&json!({"timeOut": "bad"}));
    let mut stale_relabelled = stale.clone();
    stale_relabelled.metadata.labels = Some(Default::default());
    assert!(
        validate_restore_session(
            &stale_relabelled,
            Some(&stale),
            &lookups,
            &Policy::default()
        )
        .allowed()
    );

    // Deletion is never blocked.
    let mut deleting = changed.clone();
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert!(
        validate_restore_session(&deleting, Some(&old), &lookups, &Policy::default()).allowed()
    );
}

proptest! {
    /// Whatever the rules hold, validation answers and never panics.
    #[test]
    fn never_panics(
        hosts in proptest::collection::vec("[a-z0-9-]{0,6}", 0..4),
        snapshots in proptest::collection::vec("latest|[0-9a-fA-Fxyz]{0,70}|\\PC*", 0..4),
        include in proptest::collection::vec("\\PC*", 0..2),
        n_rules in 0usize..5,
        text in any::<String>(),
    ) {
        let rule = json!({"targetHosts": hosts, "snapshots": snapshots, "include": include});
        let many: Vec<Value> = (0..n_rules).map(|_| rule.clone()).collect();
        let rs = object(&json!({
            "target": {"rules": many.clone(), "ref": {"name": text, "kind": text, "namespace": text}},
            "rules": many,
            "timeOut": text,
            "repository": {"name": text},
            "task": {"name": text},
            "tempDir": {"sizeLimit": text},
        }));
        let _ = validate_restore_session(&rs, None, &world(), &Policy::default());
    }
}

/// On a native Repository a restore names snapshots by their server name and runs the native
/// Task; the restic Task on it is refused at `spec.task.name`.
#[test]
fn native_restores_name_snapshots_and_need_the_native_task() {
    let native: Repository = serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": "native", "namespace": "demo"},
        "spec": {"driver": "Native", "backend": {"local": {"mountPath": "/snapshots"}}}
    }))
    .expect("repository");
    let mut snapshot_task = task("elasticsearch-snapshot-restore");
    snapshot_task.spec.driver = Some(cairn_api::native::StorageDriver::Native);
    let lookups = world().with_repository(native).with_task(snapshot_task);
    let check = |patch: Value| {
        validate_restore_session(&object(&patch), None, &lookups, &Policy::default())
    };
    let ok = check(json!({"repository": {"name": "native"},
        "task": {"name": "elasticsearch-snapshot-restore"},
        "target": {"rules": [{"snapshots": ["demo.nightly.nightly-1765000000"]}]}}));
    assert!(ok.errors.is_empty(), "{:?}", ok.errors);
    let bad = check(json!({"repository": {"name": "native"},
        "target": {"rules": [{"snapshots": ["Not A Name"]}]}}));
    let paths: Vec<&str> = bad.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        ["spec.target.rules[0].snapshots[0]", "spec.task.name"],
        "{:?}",
        bad.errors
    );
    assert!(
        bad.errors[1]
            .message
            .contains("elasticsearch-snapshot-restore")
    );
    // The same name on a restic Repository is not a restic id.
    let restic = check(json!({"target": {"rules": [{"snapshots": ["demo.nightly.nightly-1"]}]}}));
    assert_eq!(restic.errors[0].path, "spec.target.rules[0].snapshots[0]");
}
