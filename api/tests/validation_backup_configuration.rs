//! Admission rules of BackupConfiguration, table-driven: each case patches a valid object
//! (a JSON merge patch of `spec`), optionally changes what the lookups know, and expects the
//! object to be admitted cleanly, rejected at one exact path, or admitted with one warning at one
//! exact path. Messages are checked for the words that say what would be valid.

use cairn_api::validation::{LookupTable, Policy, Verdict, validate_backup_configuration};
use cairn_api::{AppBinding, BackupConfiguration, Repository, Task};
use proptest::prelude::*;
use serde_json::{Value, json};

/// A valid BackupConfiguration in namespace `demo` that uses every optional block.
fn base() -> Value {
    json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "BackupConfiguration",
        "metadata": {"name": "nightly", "namespace": "demo"},
        "spec": {
            "schedule": "0 2 * * *",
            "timeZone": "Europe/Berlin",
            "repository": {"name": "s3-repo"},
            "target": {"ref": {
                "apiVersion": "appcatalog.appscode.com/v1alpha1",
                "kind": "AppBinding",
                "name": "es"
            }},
            "task": {"name": "elasticsearch-backup", "params": [{"name": "ARGS", "value": "--x"}]},
            "retentionPolicy": {"name": "keep-week", "keepLast": 7, "prune": true},
            "runtimeSettings": {"container": {
                "resources": {
                    "requests": {"cpu": "100m", "memory": "256Mi"},
                    "limits": {"cpu": "1", "memory": "1Gi"}
                },
                "nice": {"adjustment": 5},
                "ionice": {"class": 2, "classData": 4}
            }},
            "tempDir": {"sizeLimit": "1Gi"},
            "interimVolumeTemplate": {
                "metadata": {"name": "scratch"},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "standard",
                    "resources": {"requests": {"storage": "10Gi"}}
                }
            },
            "backupHistoryLimit": 3,
            "timeOut": "1h30m",
            "retryConfig": {"maxRetry": 2, "delay": "5m"},
            "startingDeadlineSeconds": 300
        }
    })
}

fn repo(ns: &str, name: &str, secret: &str, policy: Value) -> Repository {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "backend": {"storageSecretName": secret, "s3": {"bucket": "backups"}},
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

/// Everything the base object refers to, plus Repositories in `backup` with each usage policy.
fn world() -> LookupTable {
    let selector = |team: &str| json!({"allowedNamespaces": {"from": "Selector", "selector": {"matchLabels": {"team": team}}}});
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
            "shared",
            "x",
            json!({"allowedNamespaces": {"from": "All"}}),
        ))
        .with_repository(repo("backup", "search-team", "x", selector("search")))
        .with_repository(repo("backup", "web-team", "x", selector("web")))
        .with_app_binding(app_binding("es", false))
        .with_app_binding(app_binding("es-insecure", true))
        .with_task(task("elasticsearch-backup"))
        .with_namespace("demo", &[("team", "search")])
        .with_namespace("backup", &[])
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

fn object(spec_patch: &Value) -> BackupConfiguration {
    let mut v = base();
    merge(&mut v["spec"], spec_patch);
    serde_json::from_value(v).expect("test object deserializes")
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
            validate_backup_configuration(&object(&case.spec), None, &lookups, &Policy::default());
        check(case, &verdict);
    }
}

#[test]
fn base_object_is_admitted_cleanly() {
    run(vec![c("base", json!({}), Ok)]);
}

#[test]
fn schedule_and_time_zone() {
    run(vec![
        c("every 15 minutes", json!({"schedule": "*/15 * * * *"}), Ok),
        c("macro", json!({"schedule": "@daily"}), Ok),
        c(
            "every 5 minutes is not too often",
            json!({"schedule": "*/5 * * * *"}),
            Ok,
        ),
        c(
            "three fields",
            json!({"schedule": "*/5 * *"}),
            Err(
                "spec.schedule",
                &[
                    "\"*/5 * *\" is not a valid cron expression",
                    "expected 5 fields",
                    "found 3",
                    "@hourly",
                ],
            ),
        ),
        c(
            "minute out of range",
            json!({"schedule": "61 * * * *"}),
            Err("spec.schedule", &["minute", "0-59"]),
        ),
        c(
            "empty",
            json!({"schedule": ""}),
            Err("spec.schedule", &["expected 5 fields"]),
        ),
        c(
            "every 2 minutes",
            json!({"schedule": "*/2 * * * *"}),
            Warn("spec.schedule", &["every 2 minutes", "5 minutes"]),
        ),
        c(
            "every minute",
            json!({"schedule": "* * * * *"}),
            Warn("spec.schedule", &["every minute", "5 minutes"]),
        ),
        c("IANA zone", json!({"timeZone": "America/New_York"}), Ok),
        c("no zone", json!({"timeZone": null}), Ok),
        c("empty zone means UTC", json!({"timeZone": ""}), Ok),
        c(
            "unknown zone",
            json!({"timeZone": "Mars/Olympus"}),
            Err(
                "spec.timeZone",
                &["\"Mars/Olympus\" is not an IANA time zone", "Europe/Berlin"],
            ),
        ),
        c("paused false", json!({"paused": false}), Ok),
        c(
            "paused",
            json!({"paused": true}),
            Warn("spec.paused", &["no backups"]),
        ),
    ]);
}

#[test]
fn retention_policy() {
    run(vec![
        c(
            "keepTags alone",
            json!({"retentionPolicy": {"keepLast": null, "keepTags": ["monthly"]}}),
            Ok,
        ),
        c(
            "keepHourly alone",
            json!({"retentionPolicy": {"keepLast": null, "keepHourly": 24}}),
            Ok,
        ),
        c(
            "zero next to a positive count",
            json!({"retentionPolicy": {"keepDaily": 0}}),
            Ok,
        ),
        c(
            "exactly 1000 kept",
            json!({"retentionPolicy": {"keepLast": 400, "keepDaily": 600}}),
            Ok,
        ),
        c(
            "empty name",
            json!({"retentionPolicy": {"name": ""}}),
            Err(
                "spec.retentionPolicy.name",
                &["must not be empty", "keep-last-7"],
            ),
        ),
        c(
            "negative keepLast",
            json!({"retentionPolicy": {"keepLast": -1, "keepDaily": 7}}),
            Err(
                "spec.retentionPolicy.keepLast",
                &["-1 is negative", "0 or more"],
            ),
        ),
        c(
            "negative keepYearly",
            json!({"retentionPolicy": {"keepYearly": -3}}),
            Err(
                "spec.retentionPolicy.keepYearly",
                &["negative", "0 or more"],
            ),
        ),
        c(
            "no keep rule",
            json!({"retentionPolicy": {"keepLast": null}}),
            Err(
                "spec.retentionPolicy",
                &[
                    "keep every snapshot",
                    "prune nothing",
                    "keepLast",
                    "keepHourly",
                    "keepDaily",
                    "keepWeekly",
                    "keepMonthly",
                    "keepYearly",
                    "keepTags",
                ],
            ),
        ),
        c(
            "only zeros",
            json!({"retentionPolicy": {"keepLast": 0, "keepWeekly": 0}}),
            Err("spec.retentionPolicy", &["prune nothing"]),
        ),
        c(
            "empty tag",
            json!({"retentionPolicy": {"keepTags": [""]}}),
            Err("spec.retentionPolicy.keepTags[0]", &["must not be empty"]),
        ),
        c(
            "more than 1000 kept",
            json!({"retentionPolicy": {"keepLast": 500, "keepDaily": 600}}),
            Warn("spec.retentionPolicy", &["1100", "1000"]),
        ),
        c(
            "huge counts do not overflow",
            json!({"retentionPolicy": {"keepLast": i64::MAX, "keepDaily": i64::MAX}}),
            Warn("spec.retentionPolicy", &["1000"]),
        ),
    ]);
}

#[test]
fn limits_and_durations() {
    run(vec![
        c("history 0", json!({"backupHistoryLimit": 0}), Ok),
        c(
            "history negative",
            json!({"backupHistoryLimit": -1}),
            Err("spec.backupHistoryLimit", &["-1 is negative", "0 or more"]),
        ),
        c("timeOut 1.5h", json!({"timeOut": "1.5h"}), Ok),
        c("timeOut 90s", json!({"timeOut": "90s"}), Ok),
        c(
            "timeOut garbage",
            json!({"timeOut": "soon"}),
            Err(
                "spec.timeOut",
                &["\"soon\" is not a valid duration", "30m", "1h30m"],
            ),
        ),
        c(
            "timeOut with days",
            json!({"timeOut": "1d"}),
            Err(
                "spec.timeOut",
                &["\"d\" is not a unit", "ns, us, ms, s, m, h"],
            ),
        ),
        c(
            "timeOut zero",
            json!({"timeOut": "0s"}),
            Err("spec.timeOut", &["not above zero", "30m"]),
        ),
        c(
            "timeOut negative",
            json!({"timeOut": "-5m"}),
            Err("spec.timeOut", &["not above zero"]),
        ),
        c("delay 30s", json!({"retryConfig": {"delay": "30s"}}), Ok),
        c(
            "delay without unit",
            json!({"retryConfig": {"delay": "5"}}),
            Err("spec.retryConfig.delay", &["no unit", "30m"]),
        ),
        c(
            "delay zero",
            json!({"retryConfig": {"delay": "0"}}),
            Err("spec.retryConfig.delay", &["not above zero"]),
        ),
        c("maxRetry 0", json!({"retryConfig": {"maxRetry": 0}}), Ok),
        c(
            "maxRetry negative",
            json!({"retryConfig": {"maxRetry": -1}}),
            Err("spec.retryConfig.maxRetry", &["negative", "0 or more"]),
        ),
        c("deadline 0", json!({"startingDeadlineSeconds": 0}), Ok),
        c(
            "deadline negative",
            json!({"startingDeadlineSeconds": -10}),
            Err(
                "spec.startingDeadlineSeconds",
                &["-10 is negative", "0 or more"],
            ),
        ),
    ]);
}

#[test]
fn target_ref() {
    run(vec![
        c(
            "own namespace named",
            json!({"target": {"ref": {"namespace": "demo"}}}),
            Ok,
        ),
        c(
            "StatefulSet",
            json!({"target": {"ref": {"kind": "StatefulSet"}}}),
            Err(
                "spec.target.ref.kind",
                &[
                    "\"StatefulSet\" is not a supported target kind",
                    "AppBinding",
                    "appcatalog.appscode.com/v1alpha1",
                ],
            ),
        ),
        c(
            "wrong apiVersion",
            json!({"target": {"ref": {"apiVersion": "apps/v1"}}}),
            Err(
                "spec.target.ref.apiVersion",
                &["\"apps/v1\"", "appcatalog.appscode.com/v1alpha1"],
            ),
        ),
        c(
            "another namespace",
            json!({"target": {"ref": {"namespace": "prod"}}}),
            Err(
                "spec.target.ref.namespace",
                &["\"prod\" is another namespace", "\"demo\"", "credentials"],
            ),
        ),
        c(
            "empty name",
            json!({"target": {"ref": {"name": ""}}}),
            Err("spec.target.ref.name", &["must not be empty"]),
        ),
        c(
            "missing AppBinding",
            json!({"target": {"ref": {"name": "es-later"}}}),
            Warn(
                "spec.target.ref",
                &["AppBinding demo/es-later does not exist"],
            ),
        ),
        c(
            "AppBinding skips TLS verification",
            json!({"target": {"ref": {"name": "es-insecure"}}}),
            Warn("spec.target.ref", &["insecureSkipTLSVerify", "caBundle"]),
        ),
    ]);
}

#[test]
fn repository_ref() {
    run(vec![
        c(
            "from All",
            json!({"repository": {"name": "shared", "namespace": "backup"}}),
            Ok,
        ),
        c(
            "selector matches the namespace",
            json!({"repository": {"name": "search-team", "namespace": "backup"}}),
            Ok,
        ),
        c(
            "Same, other namespace",
            json!({"repository": {"name": "only-backup", "namespace": "backup"}}),
            Err(
                "spec.repository",
                &[
                    "backup/only-backup does not admit namespace \"demo\"",
                    "from is Same",
                    "All",
                    "Selector",
                ],
            ),
        ),
        c(
            "selector does not match",
            json!({"repository": {"name": "web-team", "namespace": "backup"}}),
            Err(
                "spec.repository",
                &[
                    "does not admit namespace \"demo\"",
                    "selector does not match",
                ],
            ),
        ),
        c(
            "empty name",
            json!({"repository": {"name": ""}}),
            Err("spec.repository.name", &["must not be empty"]),
        ),
        c(
            "missing Repository",
            json!({"repository": {"name": "later"}}),
            Warn("spec.repository", &["Repository demo/later does not exist"]),
        ),
        Case {
            name: "namespace labels unknown",
            spec: json!({"repository": {"name": "search-team", "namespace": "backup"}}),
            world: |t| t.namespaces.clear(),
            expect: Warn("spec.repository", &["cannot tell yet"]),
        },
    ]);
}

#[test]
fn task_ref() {
    run(vec![
        c("no task", json!({"task": null}), Ok),
        c("empty task name", json!({"task": {"name": ""}}), Ok),
        c(
            "missing Task",
            json!({"task": {"name": "es-custom"}}),
            Warn("spec.task.name", &["Task \"es-custom\" does not exist"]),
        ),
        c(
            "duplicate param",
            json!({"task": {"params": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}}),
            Err(
                "spec.task.params[1].name",
                &["\"A\" is already set by spec.task.params[0]", "once"],
            ),
        ),
        c(
            "empty param name",
            json!({"task": {"params": [{"name": "", "value": "1"}]}}),
            Err("spec.task.params[0].name", &["must not be empty"]),
        ),
        c(
            "Stash's elasticdump args, translated",
            json!({"task": {"params": [{"name": "args",
                "value": "--match=^(?![.])(?!searchguard).+ --ignoreType=template"}]}}),
            Ok,
        ),
        c(
            "an elasticdump flag cairn does not read",
            json!({"task": {"params": [{"name": "args", "value": "--match=^a --limit=500"}]}}),
            Warn(
                "spec.task.params[0].value",
                &["--limit is not read by cairn", "--page-size"],
            ),
        ),
        c(
            "a --match JavaScript would take and cairn cannot",
            json!({"task": {"params": [{"name": "args", "value": "--match=(?<!a"}]}}),
            Err(
                "spec.task.params[0].value",
                &["not a regular expression", "lookaheads"],
            ),
        ),
        c(
            "an elasticdump type that does not exist",
            json!({"task": {"params": [{"name": "args", "value": "--ignoreType=index"}]}}),
            Err(
                "spec.task.params[0].value",
                &[
                    "\"index\" is not a type",
                    "data, mapping, analyzer, alias, settings, template",
                ],
            ),
        ),
        c(
            "param that no ${} can reach",
            json!({"task": {"params": [{"name": "not-a-var", "value": "1"}]}}),
            Warn(
                "spec.task.params[0].name",
                &["not a variable name", "[A-Za-z_]"],
            ),
        ),
    ]);
}

#[test]
fn runtime_settings() {
    let res = |requests: Value, limits: Value| json!({"runtimeSettings": {"container": {"resources": {"requests": requests, "limits": limits}}}});
    run(vec![
        c(
            "limit equals request in other units",
            res(
                json!({"memory": "268435456", "cpu": "0.5"}),
                json!({"memory": "256Mi", "cpu": "500m"}),
            ),
            Ok,
        ),
        c("limits only", res(json!(null), json!({"cpu": "2"})), Ok),
        c(
            "cpu limit below request",
            res(json!({"cpu": "100m"}), json!({"cpu": "50m"})),
            Err(
                "spec.runtimeSettings.container.resources.limits.cpu",
                &[
                    "\"50m\" is below the request \"100m\"",
                    "at least the request",
                ],
            ),
        ),
        c(
            "memory limit below request",
            res(json!({"memory": "1Gi"}), json!({"memory": "512Mi"})),
            Err(
                "spec.runtimeSettings.container.resources.limits.memory",
                &["below the request \"1Gi\""],
            ),
        ),
        c(
            "bad quantity",
            res(json!({"cpu": "lots"}), json!(null)),
            Err(
                "spec.runtimeSettings.container.resources.requests.cpu",
                &["\"lots\" is not a valid quantity", "10Gi", "500M"],
            ),
        ),
        c(
            "negative request",
            res(json!({"memory": "-1Gi"}), json!(null)),
            Err(
                "spec.runtimeSettings.container.resources.requests.memory",
                &["negative", "0 or more"],
            ),
        ),
        c(
            "extended resource path",
            res(
                json!({"nvidia.com/gpu": "2"}),
                json!({"nvidia.com/gpu": "1"}),
            ),
            Err(
                "spec.runtimeSettings.container.resources.limits[nvidia.com/gpu]",
                &["below the request"],
            ),
        ),
        c(
            "nice -20",
            json!({"runtimeSettings": {"container": {"nice": {"adjustment": -20}}}}),
            Ok,
        ),
        c(
            "nice 19",
            json!({"runtimeSettings": {"container": {"nice": {"adjustment": 19}}}}),
            Ok,
        ),
        c(
            "nice 20",
            json!({"runtimeSettings": {"container": {"nice": {"adjustment": 20}}}}),
            Err(
                "spec.runtimeSettings.container.nice.adjustment",
                &["20 is out of range", "-20", "19"],
            ),
        ),
        c(
            "nice -21",
            json!({"runtimeSettings": {"container": {"nice": {"adjustment": -21}}}}),
            Err("spec.runtimeSettings.container.nice.adjustment", &["-21"]),
        ),
        c(
            "ionice idle",
            json!({"runtimeSettings": {"container": {"ionice": {"class": 3, "classData": 7}}}}),
            Ok,
        ),
        c(
            "ionice class 4",
            json!({"runtimeSettings": {"container": {"ionice": {"class": 4}}}}),
            Err(
                "spec.runtimeSettings.container.ionice.class",
                &["4 is not an I/O scheduling class", "0 (none)", "3 (idle)"],
            ),
        ),
        c(
            "ionice class -1",
            json!({"runtimeSettings": {"container": {"ionice": {"class": -1}}}}),
            Err("spec.runtimeSettings.container.ionice.class", &["-1"]),
        ),
        c(
            "ionice classData 8",
            json!({"runtimeSettings": {"container": {"ionice": {"classData": 8}}}}),
            Err(
                "spec.runtimeSettings.container.ionice.classData",
                &["8 is out of range", "0", "7"],
            ),
        ),
    ]);
}

#[test]
fn temp_dir() {
    run(vec![
        c("500Mi", json!({"tempDir": {"sizeLimit": "500Mi"}}), Ok),
        c(
            "memory medium",
            json!({"tempDir": {"medium": "Memory"}}),
            Ok,
        ),
        c("no tempDir", json!({"tempDir": null}), Ok),
        c(
            "zero",
            json!({"tempDir": {"sizeLimit": "0"}}),
            Err(
                "spec.tempDir.sizeLimit",
                &["\"0\" is not above zero", "1Gi"],
            ),
        ),
        c(
            "negative",
            json!({"tempDir": {"sizeLimit": "-1Gi"}}),
            Err("spec.tempDir.sizeLimit", &["not above zero"]),
        ),
        c(
            "garbage",
            json!({"tempDir": {"sizeLimit": "big"}}),
            Err("spec.tempDir.sizeLimit", &["not a valid quantity", "10Gi"]),
        ),
        c(
            "unknown medium",
            json!({"tempDir": {"medium": "Disk"}}),
            Err("spec.tempDir.medium", &["\"Disk\"", "\"Memory\""]),
        ),
    ]);
}

#[test]
fn interim_volume_template() {
    let t = |v: Value| json!({"interimVolumeTemplate": v});
    run(vec![
        c(
            "38 characters",
            t(json!({"metadata": {"name": "a".repeat(38)}})),
            Ok,
        ),
        c("no template", t(json!(null)), Ok),
        c("no class", t(json!({"spec": {"storageClassName": ""}})), Ok),
        c(
            "dotted class",
            t(json!({"spec": {"storageClassName": "fast.ssd-1"}})),
            Ok,
        ),
        c(
            "Filesystem",
            t(json!({"spec": {"volumeMode": "Filesystem"}})),
            Ok,
        ),
        c(
            "exponent size",
            t(json!({"spec": {"resources": {"requests": {"storage": "1e10"}}}})),
            Ok,
        ),
        c(
            "no access modes",
            t(json!({"spec": {"accessModes": null}})),
            Ok,
        ),
        c(
            "name not a DNS label",
            t(json!({"metadata": {"name": "Scratch_1"}})),
            Err(
                "spec.interimVolumeTemplate.metadata.name",
                &["\"Scratch_1\" is not a DNS label", "lowercase"],
            ),
        ),
        c(
            "name too long",
            t(json!({"metadata": {"name": "a".repeat(39)}})),
            Err(
                "spec.interimVolumeTemplate.metadata.name",
                &["39 characters", "at most 38", "<session>-<name>", "63"],
            ),
        ),
        c(
            "no name",
            t(json!({"metadata": {"name": null}})),
            Err(
                "spec.interimVolumeTemplate.metadata.name",
                &["must be set", "scratch"],
            ),
        ),
        c(
            "no storage request",
            t(json!({"spec": {"resources": null}})),
            Err(
                "spec.interimVolumeTemplate.spec.resources.requests.storage",
                &["must be set", "10Gi"],
            ),
        ),
        c(
            "zero storage",
            t(json!({"spec": {"resources": {"requests": {"storage": "0"}}}})),
            Err(
                "spec.interimVolumeTemplate.spec.resources.requests.storage",
                &["not above zero"],
            ),
        ),
        c(
            "negative storage",
            t(json!({"spec": {"resources": {"requests": {"storage": "-1Gi"}}}})),
            Err(
                "spec.interimVolumeTemplate.spec.resources.requests.storage",
                &["\"-1Gi\" is not above zero"],
            ),
        ),
        c(
            "unparsable storage",
            t(json!({"spec": {"resources": {"requests": {"storage": "10GB"}}}})),
            Err(
                "spec.interimVolumeTemplate.spec.resources.requests.storage",
                &["not a valid quantity", "Gi"],
            ),
        ),
        c(
            "block volume",
            t(json!({"spec": {"volumeMode": "Block"}})),
            Err(
                "spec.interimVolumeTemplate.spec.volumeMode",
                &["\"Block\"", "\"Filesystem\""],
            ),
        ),
        c(
            "dataSource",
            t(
                json!({"spec": {"dataSource": {"kind": "VolumeSnapshot", "name": "s", "apiGroup": "snapshot.storage.k8s.io"}}}),
            ),
            Err(
                "spec.interimVolumeTemplate.spec.dataSource",
                &["start empty", "remove dataSource"],
            ),
        ),
        c(
            "dataSourceRef",
            t(json!({"spec": {"dataSourceRef": {"kind": "PersistentVolumeClaim", "name": "old"}}})),
            Err(
                "spec.interimVolumeTemplate.spec.dataSourceRef",
                &["start empty"],
            ),
        ),
        c(
            "bad storage class",
            t(json!({"spec": {"storageClassName": "Fast_SSD"}})),
            Err(
                "spec.interimVolumeTemplate.spec.storageClassName",
                &["\"Fast_SSD\"", "DNS subdomain", "\"\" for no class"],
            ),
        ),
        c(
            "read-only volume",
            t(json!({"spec": {"accessModes": ["ReadOnlyMany"]}})),
            Err(
                "spec.interimVolumeTemplate.spec.accessModes",
                &["ReadWriteOnce"],
            ),
        ),
        c(
            "unknown access mode",
            t(json!({"spec": {"accessModes": ["Sideways"]}})),
            Err(
                "spec.interimVolumeTemplate.spec.accessModes[0]",
                &["\"Sideways\"", "ReadWriteOnce"],
            ),
        ),
    ]);
}

#[test]
fn all_errors_come_back_together() {
    let bc = object(&json!({
        "schedule": "*/5 * *",
        "timeZone": "Nowhere",
        "retentionPolicy": {"keepLast": -1},
        "timeOut": "forever",
        "target": {"ref": {"kind": "Deployment"}},
        "interimVolumeTemplate": {"spec": {"volumeMode": "Block"}}
    }));
    let verdict = validate_backup_configuration(&bc, None, &world(), &Policy::default());
    let paths: Vec<&str> = verdict.errors.iter().map(|e| e.path.as_str()).collect();
    for want in [
        "spec.schedule",
        "spec.timeZone",
        "spec.retentionPolicy.keepLast",
        "spec.retentionPolicy",
        "spec.timeOut",
        "spec.target.ref.kind",
        "spec.interimVolumeTemplate.spec.volumeMode",
    ] {
        assert!(paths.contains(&want), "{want} missing from {paths:?}");
    }
    assert!(!verdict.allowed());
    // The message the webhook returns starts each error with its path.
    assert!(
        verdict.error_message().contains(
            "spec.schedule: \"*/5 * *\" is not a valid cron expression: expected 5 fields"
        ),
        "{}",
        verdict.error_message()
    );
}

#[test]
fn updates() {
    let lookups = world();
    let bad = object(&json!({"schedule": "bad"}));
    let good = object(&json!({}));

    // Spec unchanged (metadata or status edits): admitted without spec rules, even if invalid.
    let mut relabelled = bad.clone();
    relabelled.metadata.labels = Some([("a".to_owned(), "b".to_owned())].into());
    assert!(
        validate_backup_configuration(&relabelled, Some(&bad), &lookups, &Policy::default())
            .allowed()
    );

    // Being deleted: never blocked.
    let mut deleting = object(&json!({"schedule": "worse"}));
    deleting.metadata.deletion_timestamp =
        Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
    assert!(
        validate_backup_configuration(&deleting, Some(&bad), &lookups, &Policy::default())
            .allowed()
    );

    // A spec change runs every rule.
    let v = validate_backup_configuration(&bad, Some(&good), &lookups, &Policy::default());
    assert_eq!(v.errors.len(), 1);
    assert_eq!(v.errors[0].path, "spec.schedule");
    assert!(
        validate_backup_configuration(&good, Some(&bad), &lookups, &Policy::default()).allowed()
    );
}

proptest! {
    /// Whatever the strings and numbers, validation answers and never panics.
    #[test]
    fn never_panics(
        schedule in any::<String>(),
        zone in any::<String>(),
        duration in "[-+]?[0-9.]{0,25}[a-zµ]{0,3}([0-9.]{0,5}[a-z]{0,2}){0,3}|\\PC*",
        quantity in "[-+]?[0-9.]{0,30}([eE][-+]?[0-9]{0,6}|[KMGTPE]i?|[numk])?|\\PC*",
        keep in any::<i64>(),
        small in any::<i32>(),
        name in any::<String>(),
    ) {
        let bc = object(&json!({
            "schedule": schedule,
            "timeZone": zone,
            "timeOut": duration,
            "retryConfig": {"delay": duration, "maxRetry": small},
            "retentionPolicy": {"keepLast": keep, "keepDaily": keep, "name": name},
            "backupHistoryLimit": small,
            "startingDeadlineSeconds": keep,
            "tempDir": {"sizeLimit": quantity, "medium": name},
            "runtimeSettings": {"container": {
                "resources": {"requests": {"cpu": quantity, "memory": "1Gi"}, "limits": {"cpu": "1", "memory": quantity}},
                "nice": {"adjustment": small},
                "ionice": {"class": small, "classData": small}
            }},
            "interimVolumeTemplate": {"metadata": {"name": name}, "spec": {
                "storageClassName": name,
                "resources": {"requests": {"storage": quantity}}
            }},
            "task": {"name": name, "params": [{"name": name, "value": ""}, {"name": name, "value": ""}]},
            "target": {"ref": {"name": name, "namespace": name, "kind": name}},
            "repository": {"name": name, "namespace": name}
        }));
        let _ = validate_backup_configuration(&bc, None, &world(), &Policy::default());
    }
}
