//! Admission rules for Task and Function: each rule with objects it admits and objects it
//! refuses, asserting the exact field path and that the message says what would be valid.

use cairn_api::validation::{LookupTable, Verdict, validate_function, validate_task};
use cairn_api::{Function, Task};
use proptest::prelude::*;
use serde_json::{Value, json};

fn task(spec: Value) -> Task {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Task",
        "metadata": {"name": "elasticsearch-backup"},
        "spec": spec,
    }))
    .expect("test object deserializes")
}

fn function(spec: Value) -> Function {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1",
        "kind": "Function",
        "metadata": {"name": "elasticsearch-backup"},
        "spec": spec,
    }))
    .expect("test object deserializes")
}

/// The Functions every Task below may name.
fn catalog() -> LookupTable {
    LookupTable::default()
        .with_function(function(json!({"image": "agent"})))
        .with_function({
            let mut f = function(json!({"image": "agent"}));
            f.metadata.name = Some("update-status".into());
            f
        })
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

/// What a malformed reference's message must say is valid.
const VALID_REF: &str =
    "write ${NAME} or ${NAME:=default} with NAME matching [A-Za-z_][A-Za-z0-9_]*";

#[test]
fn task_rules() {
    let cases: &[(&str, Value, Expect)] = &[
        (
            "catalog task",
            json!({
                "steps": [
                    {"name": "elasticsearch-backup", "params": [
                        {"name": "args", "value": "--indices=${INDICES:=*}"},
                        {"name": "outputDir", "value": "/cairn/tmp/output"},
                    ]},
                    {"name": "update-status", "params": [{"name": "outputDir", "value": "x"}]},
                ],
                "volumes": [{"name": "scratch", "emptyDir": {}}],
            }),
            Expect::Ok,
        ),
        (
            "no steps",
            json!({"steps": []}),
            Expect::Err("spec.steps", &["is empty", "list at least one step"]),
        ),
        (
            "empty step name",
            json!({"steps": [{"name": "update-status"}, {"name": ""}]}),
            Expect::Err("spec.steps[1].name", &["is empty", "name the Function"]),
        ),
        (
            "same param name in two steps",
            json!({"steps": [
                {"name": "update-status", "params": [{"name": "A", "value": "1"}]},
                {"name": "update-status", "params": [{"name": "A", "value": "2"}]},
            ]}),
            Expect::Ok,
        ),
        (
            "duplicate params",
            json!({"steps": [{"name": "update-status", "params": [
                {"name": "A", "value": "1"},
                {"name": "B", "value": "2"},
                {"name": "A", "value": "3"},
            ]}]}),
            Expect::Err(
                "spec.steps[0].params[2].name",
                &[
                    "duplicate param \"A\"",
                    "spec.steps[0].params[0]",
                    "unique name",
                ],
            ),
        ),
        (
            "empty param name",
            json!({"steps": [{"name": "update-status", "params": [{"name": "", "value": "1"}]}]}),
            Expect::Err(
                "spec.steps[0].params[0].name",
                &["is empty", "[A-Za-z_][A-Za-z0-9_]*"],
            ),
        ),
        (
            "unterminated reference in a param",
            json!({"steps": [{"name": "update-status", "params": [
                {"name": "A", "value": "ok ${B}"},
                {"name": "C", "value": "--x=${D"},
            ]}]}),
            Expect::Err(
                "spec.steps[0].params[1].value",
                &["unterminated variable reference", VALID_REF],
            ),
        ),
        (
            "empty reference in a param",
            json!({"steps": [{"name": "update-status", "params": [{"name": "A", "value": "${}"}]}]}),
            Expect::Err(
                "spec.steps[0].params[0].value",
                &["empty variable name", VALID_REF],
            ),
        ),
        (
            "invalid name in a param",
            json!({"steps": [{"name": "update-status", "params": [{"name": "A", "value": "${my-var}"}]}]}),
            Expect::Err(
                "spec.steps[0].params[0].value",
                &["invalid variable name \"my-var\"", VALID_REF],
            ),
        ),
        (
            "shell variables are literal",
            json!({"steps": [{"name": "update-status", "params": [{"name": "A", "value": "$HOME $(date) $"}]}]}),
            Expect::Ok,
        ),
        (
            "malformed reference in a volume",
            json!({
                "steps": [{"name": "update-status"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "${CLAIM"}}],
            }),
            Expect::Err(
                "spec.volumes[0].persistentVolumeClaim.claimName",
                &["unterminated variable reference", VALID_REF],
            ),
        ),
        (
            "reference in a volume",
            json!({
                "steps": [{"name": "update-status"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "${CLAIM:=data}"}}],
            }),
            Expect::Ok,
        ),
    ];
    let lookups = catalog();
    for (name, spec, expect) in cases {
        let v = validate_task(&task(spec.clone()), None, &lookups);
        assert_verdict(name, &v, expect);
    }
}

#[test]
fn task_errors_come_back_together() {
    let t = task(json!({"steps": [
        {"name": "", "params": [{"name": "", "value": "${"}, {"name": "X", "value": "1"}, {"name": "X", "value": "2"}]},
    ]}));
    let v = validate_task(&t, None, &catalog());
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        vec![
            "spec.steps[0].name",
            "spec.steps[0].params[0].name",
            "spec.steps[0].params[0].value",
            "spec.steps[0].params[2].name",
        ]
    );
}

#[test]
fn missing_function_is_a_warning() {
    let t = task(json!({"steps": [{"name": "update-status"}, {"name": "not-yet"}]}));
    let v = validate_task(&t, None, &catalog());
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.warnings.len(), 1, "{:?}", v.warnings);
    assert_eq!(v.warnings[0].path, "spec.steps[1].name");
    assert!(
        v.warnings[0]
            .message
            .contains("Function \"not-yet\" does not exist")
    );

    let v = validate_task(&t, None, &LookupTable::default());
    assert_eq!(v.warnings.len(), 2, "{:?}", v.warnings);
}

#[test]
fn unreferenceable_param_name_is_a_warning() {
    let t = task(
        json!({"steps": [{"name": "update-status", "params": [{"name": "my-var", "value": "1"}]}]}),
    );
    let v = validate_task(&t, None, &catalog());
    assert!(v.errors.is_empty(), "{:?}", v.errors);
    assert_eq!(v.warnings[0].path, "spec.steps[0].params[0].name");
    assert!(v.warnings[0].message.contains("[A-Za-z_][A-Za-z0-9_]*"));
}

#[test]
fn task_updates_that_leave_the_spec_alone_pass() {
    let broken = task(json!({"steps": []}));
    let mut labelled = broken.clone();
    labelled
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert("a".into(), "b".into());
    assert_eq!(
        validate_task(&labelled, Some(&broken), &catalog()),
        Verdict::default()
    );
    let changed = task(json!({"steps": [{"name": ""}]}));
    assert!(!validate_task(&changed, Some(&broken), &catalog()).allowed());
}

#[test]
fn function_rules() {
    let cases: &[(&str, Value, Expect)] = &[
        (
            "catalog function",
            json!({
                "image": "ghcr.io/cairn/agent:${AGENT_VERSION:=1.0}",
                "command": ["/cairn-agent"],
                "args": ["backup", "--repository=${REPOSITORY_NAME}", "--indices=${INDICES:=*}", "$HOME"],
                "workingDir": "${WORKDIR:=/cairn/tmp}",
                "volumeMounts": [{"name": "scratch", "mountPath": "${TMP_DIR:=/cairn/tmp}"}],
                "runtimeSettings": {"env": [{"name": "NAMESPACE", "value": "${NAMESPACE}"}]},
            }),
            Expect::Ok,
        ),
        (
            "no image",
            json!({"image": ""}),
            Expect::Err("spec.image", &["is empty", "repository[:tag]"]),
        ),
        (
            "blank image",
            json!({"image": "  "}),
            Expect::Err("spec.image", &["is empty", "repository[:tag]"]),
        ),
        (
            "image",
            json!({"image": "agent:${TAG"}),
            Expect::Err("spec.image", &["unterminated", VALID_REF]),
        ),
        (
            "command",
            json!({"image": "a", "command": ["sh", "${}"]}),
            Expect::Err("spec.command[1]", &["empty variable name", VALID_REF]),
        ),
        (
            "args",
            json!({"image": "a", "args": ["a", "b", "--x=${1X}"]}),
            Expect::Err("spec.args[2]", &["invalid variable name \"1X\"", VALID_REF]),
        ),
        (
            "workingDir",
            json!({"image": "a", "workingDir": "/x/${DIR"}),
            Expect::Err("spec.workingDir", &["unterminated", VALID_REF]),
        ),
        (
            "env value",
            json!({"image": "a", "runtimeSettings": {"env": [
                {"name": "A", "value": "ok"},
                {"name": "B", "value": "${B C}"},
            ]}}),
            Expect::Err(
                "spec.runtimeSettings.env[1].value",
                &["invalid variable name \"B C\"", VALID_REF],
            ),
        ),
        (
            "volumeMount path",
            json!({"image": "a", "volumeMounts": [{"name": "v", "mountPath": "${:=/x}"}]}),
            Expect::Err(
                "spec.volumeMounts[0].mountPath",
                &["empty variable name", VALID_REF],
            ),
        ),
    ];
    let lookups = LookupTable::default();
    for (name, spec, expect) in cases {
        let v = validate_function(&function(spec.clone()), None, &lookups);
        assert_verdict(name, &v, expect);
        if let Expect::Ok = expect {
            assert!(v.warnings.is_empty(), "{name}: {:?}", v.warnings);
        }
    }
}

#[test]
fn function_errors_come_back_together() {
    let f = function(json!({
        "image": "",
        "args": ["${", "${}", "fine"],
        "workingDir": "${-}",
    }));
    let v = validate_function(&f, None, &LookupTable::default());
    let mut paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        vec![
            "spec.args[0]",
            "spec.args[1]",
            "spec.image",
            "spec.workingDir"
        ]
    );
}

proptest! {
    #[test]
    fn never_panics(s in any::<String>(), t in "[${}:=A-Z_0-9 ]{0,16}") {
        for value in [&s, &t] {
            let tk = task(json!({"steps": [{"name": value, "params": [
                {"name": value, "value": value}, {"name": value, "value": value},
            ]}], "volumes": [{"name": value, "hostPath": {"path": value}}]}));
            let _ = validate_task(&tk, None, &catalog()).error_message();
            let f = function(json!({"image": value, "command": [value], "args": [value],
                "workingDir": value, "volumeMounts": [{"name": value, "mountPath": value}]}));
            let _ = validate_function(&f, None, &LookupTable::default()).error_message();
        }
    }
}
