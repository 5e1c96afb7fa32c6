//! Before a restore writes anything, the target is asked whether it takes each index's settings
//! and mappings and each template's: `POST /_index_template/_simulate` validates a template body
//! as index creation would (settings the server does not know, field types and mapping features
//! it lacks) and creates nothing. A body it refuses fails the restore before the first write,
//! naming the index or template and the server's deepest reason. A composable template is
//! checked with its component templates' settings and mappings merged in, as the server composes
//! it. Servers without the API (Elasticsearch before 7.9) are not asked.

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::client::{Body, Client};
use crate::error::{AgentError, Result, short};

/// What is checked: whose body ("index logs", "template t"), its settings and mappings.
pub struct Candidate {
    pub whose: String,
    pub settings: Value,
    pub mappings: Value,
}

/// A pattern no index or template of the target uses, so the simulated template matches none.
fn pattern() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("cairn-preflight-{}-{nanos}-*", std::process::id())
}

/// The simulated template's priority: one no user template is likely to have, since the
/// servers refuse overlapping patterns (a user's `*`) of equal priority.
const PRIORITY: u64 = 987_654_321;

/// The deepest `caused_by` reason of an error answer (OpenSearch puts the real one there),
/// else the body, cut short.
fn deepest_reason(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return short(&String::from_utf8_lossy(body), 600);
    };
    let mut e = &v["error"];
    while e["caused_by"].is_object() {
        e = &e["caused_by"];
    }
    match e["reason"].as_str() {
        Some(r) => short(
            &format!("{}: {r}", e["type"].as_str().unwrap_or("error")),
            600,
        ),
        None => short(&v.to_string(), 600),
    }
}

/// Asks the target about every candidate; the refusals, all named, fail the restore.
pub async fn check(client: &Client, candidates: &[Candidate]) -> Result<()> {
    let pattern = pattern();
    let mut refused = Vec::new();
    for c in candidates {
        let mut template = Map::new();
        if c.settings.as_object().is_some_and(|s| !s.is_empty()) {
            template.insert("settings".into(), c.settings.clone());
        }
        if c.mappings.as_object().is_some_and(|m| !m.is_empty()) {
            template.insert("mappings".into(), c.mappings.clone());
        }
        let body = json!({"index_patterns": [pattern], "priority": PRIORITY, "template": template});
        let what = format!("pre-flight of {}", c.whose);
        let (status, bytes) = client
            .send(
                Method::POST,
                "/_index_template/_simulate",
                Some(Body::Json(body)),
                &what,
            )
            .await?;
        if status.is_success() {
            continue;
        }
        if matches!(
            status,
            StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
        ) {
            tracing::info!("the target cannot simulate templates: no pre-flight check");
            return Ok(());
        }
        refused.push(format!("{}: {}", c.whose, deepest_reason(&bytes)));
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(AgentError::Restore(format!(
        "the target refuses what the snapshot needs, so nothing was restored: {}",
        short(&refused.join("; "), 2000)
    )))
}

/// Objects merged: `over`'s values win, objects merged key by key.
pub fn merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

/// The candidates of a snapshot's templates (kind as its API path, name, body): legacy and
/// component templates as they are, composable ones composed with the components named.
pub fn template_candidates(templates: &[(&str, Map<String, Value>)]) -> Vec<Candidate> {
    let components = templates
        .iter()
        .find(|(k, _)| *k == "_component_template")
        .map(|(_, m)| m.clone())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (kind, map) in templates {
        for (name, body) in map {
            let own = if *kind == "_template" {
                body.clone()
            } else {
                body["template"].clone()
            };
            let mut composed = json!({});
            if *kind == "_index_template" {
                for c in body["composed_of"].as_array().into_iter().flatten() {
                    if let Some(part) = c.as_str().and_then(|c| components.get(c)) {
                        merge(&mut composed, &part["template"]);
                    }
                }
            }
            merge(&mut composed, &own);
            out.push(Candidate {
                whose: format!("template {name}"),
                settings: composed["settings"].clone(),
                mappings: composed["mappings"].clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_deepest_reason_is_named() {
        let body = br#"{"error":{"type":"illegal_argument_exception","reason":"template after composition is invalid","caused_by":{"type":"x","reason":"invalid","caused_by":{"type":"mapper_parsing_exception","reason":"No handler for type [flat_object] declared on field [fo]"}}}}"#;
        assert_eq!(
            deepest_reason(body),
            "mapper_parsing_exception: No handler for type [flat_object] declared on field [fo]"
        );
        assert_eq!(deepest_reason(b"not json"), "not json");
    }

    #[test]
    fn a_composable_template_is_checked_as_composed() {
        let components = serde_json::from_value::<Map<String, Value>>(json!({
            "ct": {"template": {"settings": {"index": {"analysis": {"analyzer": {"a": {"type": "custom", "tokenizer": "standard"}}}}}}}
        })).unwrap();
        let composable = serde_json::from_value::<Map<String, Value>>(json!({
            "it": {"composed_of": ["ct", "missing"], "template": {"mappings": {"properties": {"m": {"type": "text", "analyzer": "a"}}}}}
        })).unwrap();
        let c = template_candidates(&[
            ("_component_template", components),
            ("_index_template", composable),
        ]);
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].whose, "template it");
        assert!(
            c[1].settings["index"]["analysis"].is_object(),
            "{}",
            c[1].settings
        );
        assert!(c[1].mappings["properties"]["m"].is_object());
    }

    #[test]
    fn merging_keeps_both_sides() {
        let mut a = json!({"x": {"y": 1, "z": 2}, "k": [1]});
        merge(&mut a, &json!({"x": {"y": 3}, "k": [2]}));
        assert_eq!(a, json!({"x": {"y": 3, "z": 2}, "k": [2]}));
    }
}
