//! The shipped examples and catalog pass validation; their broken variants fail, naming the
//! field paths their `cairn.dev/expect-errors` annotation lists.

mod common;

use cairn_api::manifest::Object;
use common::{example_cluster, manifests, objects_in};

#[test]
fn every_example_and_catalog_object_is_admitted() {
    let cluster = example_cluster();
    let mut checked = 0;
    for dir in ["examples", "catalog"] {
        for (file, obj) in objects_in(&manifests().join(dir)) {
            if let Some(verdict) = obj.validate_create(&cluster) {
                assert!(
                    verdict.allowed(),
                    "{dir}/{file} is rejected: {}",
                    verdict.error_message()
                );
                assert!(
                    verdict.warnings.is_empty(),
                    "{dir}/{file} has warnings: {:?}",
                    verdict.warnings
                );
                checked += 1;
            }
        }
    }
    // Two repositories, two configurations, a restore, two Tasks and two Functions.
    assert!(checked >= 9, "only {checked} objects checked");
}

#[test]
fn every_broken_example_is_rejected_with_the_expected_paths() {
    let cluster = example_cluster();
    let broken = objects_in(&manifests().join("examples/broken"));
    assert!(broken.len() >= 10, "only {} broken examples", broken.len());
    for (file, obj) in broken {
        let expected: Vec<String> = annotation(&obj)
            .unwrap_or_else(|| panic!("{file}: no cairn.dev/expect-errors annotation"))
            .split(',')
            .map(|s| s.trim().to_string())
            .collect();
        let verdict = obj
            .validate_create(&cluster)
            .unwrap_or_else(|| panic!("{file}: not a kind cairn admits"));
        let paths: Vec<&str> = verdict.errors.iter().map(|e| e.path.as_str()).collect();
        for want in &expected {
            assert!(
                paths.contains(&want.as_str()),
                "{file}: expected an error at {want}, got {:?}",
                verdict.errors
            );
        }
        for e in &verdict.errors {
            assert!(
                e.message.len() > 20,
                "{file}: message at {} says too little: {:?}",
                e.path,
                e.message
            );
        }
    }
}

fn annotation(obj: &Object) -> Option<String> {
    let meta = match obj {
        Object::Repository(o) => &o.metadata,
        Object::BackupConfiguration(o) => &o.metadata,
        Object::BackupSession(o) => &o.metadata,
        Object::RestoreSession(o) => &o.metadata,
        Object::Task(o) => &o.metadata,
        Object::Function(o) => &o.metadata,
        Object::AppBinding(o) => &o.metadata,
        Object::Other(_) => return None,
    };
    meta.annotations
        .as_ref()?
        .get("cairn.dev/expect-errors")
        .cloned()
}

/// The README's table of built-in variables is `cairn_api::builtins::BUILT_IN_VARIABLES`, row for
/// row (the table is the one place they are written; this keeps the README in step).
#[test]
fn readme_lists_the_built_in_variables() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"),
    )
    .expect("README.md");
    let rows: Vec<String> = cairn_api::builtins::BUILT_IN_VARIABLES
        .iter()
        .map(|b| format!("| `{}` | {} |", b.name, b.meaning))
        .collect();
    let block = rows.join("\n");
    assert!(
        readme.contains(&block),
        "README.md's table of built-in variables is stale; it must read:\n{block}"
    );
}
