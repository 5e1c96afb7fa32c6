//! Admission rules for Task and Function (`admission.md`, "Task and Function").
//!
//! A Task needs steps, each naming a Function, with uniquely named params; a Function needs an
//! image. Every string of either that the resolver substitutes must have well-formed
//! `${NAME}` / `${NAME:=default}` references (checked with [`crate::vars::check`]), so a typo
//! is refused here and not found only when a Job is built. A step naming a Function that does
//! not exist yet is a warning: the catalog may be applied in any order.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{Lookups, Verdict};
use crate::{Function, Task, vars};

/// Every error and warning of a Task (`old` is set on UPDATE).
pub fn validate_task(new: &Task, old: Option<&Task>, lookups: &dyn Lookups) -> Verdict {
    let mut v = Verdict::default();
    // Never block deletion or bookkeeping: only spec changes go through the spec rules.
    if old.is_some_and(|old| new.metadata.deletion_timestamp.is_some() || old.spec == new.spec) {
        return v;
    }
    if new.spec.steps.is_empty() {
        v.error(
            "spec.steps",
            "is empty: list at least one step, each naming a Function (the last one is the \
             Job's main container)",
        );
    }
    for (i, step) in new.spec.steps.iter().enumerate() {
        let path = format!("spec.steps[{i}]");
        if step.name.is_empty() {
            v.error(
                format!("{path}.name"),
                "is empty: name the Function this step runs",
            );
        } else if lookups.function(&step.name).is_none() {
            v.warn(
                format!("{path}.name"),
                format!(
                    "Function {:?} does not exist (yet); Jobs using this Task cannot be built \
                     until it is created",
                    step.name
                ),
            );
        }

        super::job::check_params(&mut v, &format!("{path}.params"), &step.params);
        // First index of each name, to point duplicates at the earlier param.
        let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, param) in step.params.iter().enumerate() {
            let p = format!("{path}.params[{j}]");
            if param.name.is_empty() {
                v.error(
                    format!("{p}.name"),
                    format!(
                        "is empty: give the param the name of the variable it sets, matching {}",
                        vars::NAME_PATTERN
                    ),
                );
            } else if let Some(first) = seen.get(param.name.as_str()) {
                v.error(
                    format!("{p}.name"),
                    format!(
                        "duplicate param {:?} (also {path}.params[{first}]); give each param of \
                         a step a unique name",
                        param.name
                    ),
                );
            } else {
                seen.insert(&param.name, j);
                if !vars::is_valid_name(&param.name) {
                    // Admitted (it does no harm), but `${...}` can never refer to it.
                    v.warn(
                        format!("{p}.name"),
                        format!(
                            "{:?} can never be referenced as a variable: names match {}",
                            param.name,
                            vars::NAME_PATTERN
                        ),
                    );
                }
            }
            check_string(&param.value, &format!("{p}.value"), &mut v);
        }
    }
    for (i, volume) in new.spec.volumes.iter().enumerate() {
        // Volumes are substituted like every other string of the Task.
        if let Ok(json) = serde_json::to_value(volume) {
            check_json(&json, &format!("spec.volumes[{i}]"), &mut v);
        }
    }
    v
}

/// Every error and warning of a Function (`old` is set on UPDATE).
pub fn validate_function(new: &Function, old: Option<&Function>, lookups: &dyn Lookups) -> Verdict {
    let _ = lookups;
    let mut v = Verdict::default();
    if old.is_some_and(|old| new.metadata.deletion_timestamp.is_some() || old.spec == new.spec) {
        return v;
    }
    if new.spec.image.trim().is_empty() {
        v.error(
            "spec.image",
            "is empty: set the container image this Function runs, as `repository[:tag]` or \
             `repository@digest`",
        );
    }
    // Walk the serialized spec: every string the resolver substitutes is checked, with its
    // exact path (`spec.args[2]`, `spec.runtimeSettings.env[0].value`, ...), and a field added
    // to FunctionSpec later is covered without touching this code.
    if let Ok(json) = serde_json::to_value(&new.spec) {
        check_json(&json, "spec", &mut v);
    }
    v
}

/// An error at `path` when `s` holds a malformed variable reference.
fn check_string(s: &str, path: &str, v: &mut Verdict) {
    if let Err(e) = vars::check(s) {
        v.error(
            path,
            format!(
                "{e}; write ${{NAME}} or ${{NAME:=default}} with NAME matching {}",
                vars::NAME_PATTERN
            ),
        );
    }
}

/// [`check_string`] on every string leaf of `value`; paths are `path.field` and `path[i]`.
fn check_json(value: &Value, path: &str, v: &mut Verdict) {
    match value {
        Value::String(s) => check_string(s, path, v),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_json(item, &format!("{path}[{i}]"), v);
            }
        }
        Value::Object(map) => {
            for (key, item) in map {
                check_json(item, &format!("{path}.{key}"), v);
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}
