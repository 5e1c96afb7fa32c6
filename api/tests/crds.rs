//! The committed CRD YAML must be what the types generate: fails when `manifests/crds/` or
//! `manifests/appbinding/` is stale.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests");
    let mut stale = Vec::new();
    for (file, yaml) in cairn_api::crds::render_all().expect("CRDs render") {
        let committed = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if committed != yaml {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "stale CRD files in manifests/: {stale:?}; run `cargo xtask crds` and commit"
    );
}

#[test]
fn every_cairn_kind_has_categories_and_descriptions() {
    for (file, crd) in cairn_api::crds::cairn_crds() {
        let cats = crd.spec.names.categories.clone().unwrap_or_default();
        assert!(
            cats.contains(&"cairn".to_string()),
            "{file}: category cairn"
        );
        assert!(
            cats.contains(&"backup".to_string()),
            "{file}: category backup"
        );
        let yaml = serde_yaml::to_string(&crd).expect("yaml");
        let value: serde_json::Value = serde_yaml::from_str(&yaml).expect("parse");
        let schema = &value["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
        let mut missing = Vec::new();
        find_undocumented(schema, "", &mut missing);
        assert!(
            missing.is_empty(),
            "{file}: properties without description: {missing:?}"
        );
    }
}

/// Collects the paths of properties that carry no description (what `kubectl explain` prints).
fn find_undocumented(schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
        for (name, sub) in props {
            let p = format!("{path}.{name}");
            // apiVersion, kind and metadata are described by the API server itself.
            if path.is_empty() && matches!(name.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if sub.get("description").is_none() {
                out.push(p.clone());
            }
            find_undocumented(sub, &p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        find_undocumented(items, &format!("{path}[]"), out);
    }
}
