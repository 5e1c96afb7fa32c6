//! Shared by the api integration tests: the shipped manifests, read into objects.

use std::path::{Path, PathBuf};

use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::validation::LookupTable;

pub fn manifests() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests")
}

/// Every object of every `.yaml` file directly in `dir`, with the file it came from.
pub fn objects_in(dir: &Path) -> Vec<(String, Object)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|x| x == "yaml") && !p.ends_with("kustomization.yaml")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable manifest");
        let file = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        for doc in parse_documents(&text).unwrap_or_else(|e| panic!("{file}: {e}")) {
            out.push((
                file.clone(),
                typed(doc).unwrap_or_else(|e| panic!("{file}: {e}")),
            ));
        }
    }
    out
}

/// Lookups that know every shipped example and the catalog, as a cluster with them applied would.
pub fn example_cluster() -> LookupTable {
    let mut table = LookupTable::default().with_namespace("demo", &[]);
    let mut all = objects_in(&manifests().join("examples"));
    all.extend(objects_in(&manifests().join("catalog")));
    for (_, obj) in all {
        table = match obj {
            Object::Repository(o) => table.with_repository(o),
            Object::BackupConfiguration(o) => table.with_backup_configuration(o),
            Object::Task(o) => table.with_task(o),
            Object::Function(o) => table.with_function(o),
            Object::AppBinding(o) => table.with_app_binding(o),
            _ => table,
        };
    }
    table
}
