//! Admission rules for BackupBlueprint.
//!
//! Rejected: a storage location (prefix, local `subPath`, REST URL) without
//! `${TARGET_NAMESPACE}` (two namespaces' targets would share one repository, each reading the
//! other's snapshots), a variable that does not resolve, and whatever the Repository and
//! BackupConfiguration rules reject in the objects the blueprint makes: they are generated for
//! an example AppBinding and judged by those rules, so a blueprint is held to exactly what its
//! objects will be (their field names are the blueprint's). Warned: `wipeOut: true`, ignored.

use serde_json::json;

use super::{LookupTable, Lookups, Policy, Validate, Verdict, shared::skip_spec_rules};
use crate::AppBinding;
use crate::backup_blueprint::{BackupBlueprint, NAMESPACE_VARIABLE};

/// Every error and warning of a BackupBlueprint (`old` is set on UPDATE).
pub fn validate_backup_blueprint(
    new: &BackupBlueprint,
    old: Option<&BackupBlueprint>,
    _lookups: &dyn Lookups,
    policy: &Policy,
) -> Verdict {
    let mut v = Verdict::default();
    if skip_spec_rules(&new.metadata, &new.spec, old.map(|o| &o.spec)) {
        return v;
    }
    if !new.location_has_namespace() {
        let (field, written) = new.location();
        v.error(
            field,
            format!(
                "{written:?} does not use ${{{NAMESPACE_VARIABLE}}}: every namespace's targets \
                 would share one repository and read each other's snapshots; include it, e.g. \
                 \"backups/${{{NAMESPACE_VARIABLE}}}/${{TARGET_NAME}}\""
            ),
        );
    }
    if new.spec.wipe_out == Some(true) {
        v.warn(
            "spec.wipeOut",
            "ignored: a generated Repository never deletes its data (wipeOut: false), so \
             removing an annotation cannot delete backups",
        );
    }
    match new.generate(&example_app()) {
        Err(errors) => {
            for e in errors {
                let (path, message) = e.split_once(": ").unwrap_or(("spec", &e));
                v.error(path, message);
            }
        }
        // The generated objects' other references (Repository, Task, AppBinding) do not
        // exist yet by design: only their errors count.
        Ok(g) => {
            let lookups = LookupTable::default();
            for found in [
                g.repository.validate(None, &lookups, policy),
                g.configuration.validate(None, &lookups, policy),
            ] {
                v.errors.extend(found.errors);
            }
        }
    }
    v
}

/// The AppBinding a blueprint is tried on at admission.
fn example_app() -> AppBinding {
    serde_json::from_value(json!({
        "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
        "metadata": {"name": "example", "namespace": "example", "uid": "example"},
        "spec": {"type": "kubedb.com/elasticsearch", "version": "8.0.0",
                 "clientConfig": {"url": "http://example:9200"}}
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blueprint(prefix: &str, extra: serde_json::Value) -> BackupBlueprint {
        let mut spec = json!({
            "backend": {"storageSecretName": "s", "s3": {"bucket": "backups", "prefix": prefix}},
            "schedule": "0 3 * * *",
            "retentionPolicy": {"name": "keep", "keepLast": 5}
        });
        if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
            s.extend(e.clone());
        }
        serde_json::from_value(
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupBlueprint",
            "metadata": {"name": "bp"}, "spec": spec}),
        )
        .unwrap()
    }

    fn check(b: &BackupBlueprint) -> Verdict {
        validate_backup_blueprint(b, None, &LookupTable::default(), &Policy::default())
    }

    #[test]
    fn a_location_without_the_namespace_is_denied() {
        let v = check(&blueprint("backups/${TARGET_NAME}", json!({})));
        assert_eq!(v.errors.len(), 1, "{v:?}");
        assert_eq!(v.errors[0].path, "spec.backend.s3.prefix");
        assert!(v.errors[0].message.contains("${TARGET_NAMESPACE}"), "{v:?}");
        assert!(
            check(&blueprint(
                "b/${TARGET_NAMESPACE}/${TARGET_NAME}",
                json!({})
            ))
            .allowed()
        );
    }

    #[test]
    fn the_generated_objects_rules_apply_with_the_blueprints_paths() {
        let v = check(&blueprint(
            "${TARGET_NAMESPACE}/${NOPE}",
            json!({"schedule": "*/5 * *", "retentionPolicy": {"name": "keep"}, "wipeOut": true}),
        ));
        let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["spec.backend.s3.prefix"], "{v:?}");
        let v = check(&blueprint(
            "${TARGET_NAMESPACE}",
            json!({"schedule": "*/5 * *", "retentionPolicy": {"name": "keep"}, "wipeOut": true}),
        ));
        let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.contains(&"spec.schedule"), "{v:?}");
        assert!(paths.contains(&"spec.retentionPolicy"), "{v:?}");
        assert_eq!(v.warnings[0].path, "spec.wipeOut");
    }
}
