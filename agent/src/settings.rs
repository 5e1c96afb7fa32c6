//! Index settings that can be restored, and the ones put back after loading.
//!
//! Settings are read with `flat_settings=true` (`"index.number_of_shards": "3"`). What the server
//! assigns (uuid, creation date, version, provided name), what ties the index to the old cluster's
//! nodes (shard allocation filters, resize and recovery sources) and what would block the load
//! (`index.blocks.*`) are not given at creation.

use serde_json::{Map, Value};

/// Settings that only the server sets or that name the old cluster.
const DROPPED_PREFIXES: &[&str] = &[
    "index.uuid",
    "index.creation_date",
    "index.version.",
    "index.provided_name",
    "index.routing.allocation.include.",
    "index.routing.allocation.exclude.",
    "index.routing.allocation.require.",
    "index.routing.allocation.initial_recovery.",
    "index.resize.",
    "index.shrink.",
    "index.history.uuid",
    "index.verified_before_close",
    "index.store.snapshot.",
    "index.frozen",
    "index.search.throttled",
    "index.replication.origin",
    "archived.",
];

/// Settings given after the documents are in: blocks would stop the load.
const AFTER_LOAD_PREFIXES: &[&str] = &["index.blocks."];

fn matches(key: &str, prefixes: &[&str]) -> bool {
    prefixes.iter().any(|p| {
        if let Some(stem) = p.strip_suffix('.') {
            key.starts_with(p) || key == stem
        } else {
            key == *p
        }
    })
}

/// Nested settings (`{"index":{"analysis":{..}}}`) flat, as cairn keeps them
/// (`index.analysis...`); arrays stay values, as the servers' `flat_settings` gives them.
pub fn flatten(nested: &Map<String, Value>) -> Map<String, Value> {
    fn walk(prefix: &str, value: &Value, out: &mut Map<String, Value>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    let mut out = Map::new();
    for (k, v) in nested {
        walk(k, v, &mut out);
    }
    out
}

/// The restorable subset of flat settings.
pub fn restorable(flat: &Map<String, Value>) -> Map<String, Value> {
    flat.iter()
        .filter(|(k, _)| !matches(k, DROPPED_PREFIXES))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// What an index is created with (fast loading: no refresh, no replicas), and what is set once
/// the documents are in (the original values; `null` resets a setting to the server default).
pub fn load_and_after(restorable: &Map<String, Value>) -> (Map<String, Value>, Map<String, Value>) {
    let mut create = Map::new();
    let mut after = Map::new();
    for (k, v) in restorable {
        if matches(k, AFTER_LOAD_PREFIXES) {
            after.insert(k.clone(), v.clone());
        } else {
            create.insert(k.clone(), v.clone());
        }
    }
    for key in ["index.refresh_interval", "index.number_of_replicas"] {
        after.insert(
            key.to_string(),
            restorable.get(key).cloned().unwrap_or(Value::Null),
        );
    }
    create.insert("index.refresh_interval".into(), Value::from("-1"));
    create.insert("index.number_of_replicas".into(), Value::from("0"));
    // Auto-expanding replicas would override number_of_replicas during the load.
    if let Some(v) = create.remove("index.auto_expand_replicas") {
        after.insert("index.auto_expand_replicas".into(), v);
    }
    (create, after)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn drops_server_assigned_and_node_bound_settings() {
        let flat = json!({
            "index.uuid": "x", "index.creation_date": "1", "index.version.created": "7",
            "index.version.upgraded": "7", "index.provided_name": "logs",
            "index.routing.allocation.include._tier_preference": "data_content",
            "index.routing.allocation.require._name": "node-1",
            "index.routing.allocation.initial_recovery._id": "abc",
            "index.routing.allocation.total_shards_per_node": "2",
            "index.resize.source.name": "big", "index.history.uuid": "h",
            "index.number_of_shards": "3", "index.number_of_replicas": "1",
            "index.analysis.analyzer.a.type": "custom", "index.hidden": "false",
            "index.versioned": "keep-me"
        });
        let out = restorable(flat.as_object().unwrap());
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "index.analysis.analyzer.a.type",
                "index.hidden",
                "index.number_of_replicas",
                "index.number_of_shards",
                "index.routing.allocation.total_shards_per_node",
                "index.versioned",
            ]
        );
    }

    #[test]
    fn load_settings_then_originals() {
        let flat = json!({
            "index.number_of_shards": "2", "index.number_of_replicas": "2",
            "index.blocks.write": "true", "index.auto_expand_replicas": "0-1"
        });
        let (create, after) = load_and_after(flat.as_object().unwrap());
        assert_eq!(create["index.refresh_interval"], "-1");
        assert_eq!(create["index.number_of_replicas"], "0");
        assert_eq!(create["index.number_of_shards"], "2");
        assert!(!create.contains_key("index.blocks.write"));
        assert!(!create.contains_key("index.auto_expand_replicas"));
        assert_eq!(after["index.blocks.write"], "true");
        assert_eq!(after["index.number_of_replicas"], "2");
        assert_eq!(after["index.refresh_interval"], Value::Null);
        assert_eq!(after["index.auto_expand_replicas"], "0-1");
    }
}
