//! What differs between Elasticsearch and OpenSearch, in one place: the index settings only one
//! of them has. A restore puts a snapshot's settings (of indices and of templates) through
//! [`Translator`] for its target: a setting the target's distribution lacks is left out, and
//! said so: **translated** when the target does the same without it, **not carried** when the
//! behaviour it set is lost (named in the restore's result). Everything else goes as it is;
//! what the target refuses then (a field type or a mapping feature it lacks) is found by the
//! restore's pre-flight check (`preflight`) before anything is written.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::client::Distribution;
use crate::settings::flatten;

/// A setting (or settings under a prefix) that only one distribution has.
struct OneSided {
    /// A key, or a prefix ending in `.`.
    key: &'static str,
    only: Distribution,
    /// Whether the target behaves the same without it.
    same_without: fn(&Value) -> bool,
    what: &'static str,
}

fn always(_: &Value) -> bool {
    true
}
fn never(_: &Value) -> bool {
    false
}
fn document_replication(v: &Value) -> bool {
    v.as_str()
        .is_some_and(|s| s.eq_ignore_ascii_case("DOCUMENT"))
}

const ONE_SIDED: &[OneSided] = &[
    OneSided {
        key: "index.replication.type",
        only: Distribution::OpenSearch,
        same_without: document_replication,
        what: "OpenSearch's replication mode (Elasticsearch replicates documents, OpenSearch's DOCUMENT)",
    },
    OneSided {
        key: "index.plugins.",
        only: Distribution::OpenSearch,
        same_without: never,
        what: "OpenSearch plugins' index settings (ISM policy, ...)",
    },
    OneSided {
        key: "index.opendistro.",
        only: Distribution::OpenSearch,
        same_without: never,
        what: "Open Distro plugins' index settings",
    },
    OneSided {
        key: "index.remote_store.",
        only: Distribution::OpenSearch,
        same_without: never,
        what: "OpenSearch's remote-backed storage",
    },
    OneSided {
        key: "index.search.concurrent_segment_search.",
        only: Distribution::OpenSearch,
        same_without: always,
        what: "OpenSearch's concurrent segment search (a search-time tuning)",
    },
    OneSided {
        key: "index.optimize_doc_id_lookup.",
        only: Distribution::OpenSearch,
        same_without: always,
        what: "OpenSearch's document id lookup tuning",
    },
    OneSided {
        key: "index.lifecycle.",
        only: Distribution::Elasticsearch,
        same_without: never,
        what: "Elasticsearch's index lifecycle (ILM; OpenSearch has ISM policies instead)",
    },
    OneSided {
        key: "index.xpack.",
        only: Distribution::Elasticsearch,
        same_without: never,
        what: "Elasticsearch X-Pack's index settings",
    },
];

impl OneSided {
    fn matches(&self, key: &str) -> bool {
        match self.key.strip_suffix('.') {
            Some(stem) => key.starts_with(self.key) || key == stem,
            None => key == self.key,
        }
    }
}

/// What was left out, by rule, with whose settings (an index, a template).
#[derive(Debug, Default)]
pub struct Notes {
    translated: BTreeMap<String, Vec<String>>,
    not_carried: BTreeMap<String, Vec<String>>,
}

/// Names listed per rule in a summary line, at most.
const NAMES_SHOWN: usize = 5;

fn summary(map: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    map.iter()
        .map(|(rule, whose)| {
            let shown: Vec<&str> = whose.iter().take(NAMES_SHOWN).map(String::as_str).collect();
            let more = whose.len().saturating_sub(NAMES_SHOWN);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            format!("{rule}: {}{more}", shown.join(", "))
        })
        .collect()
}

impl Notes {
    /// One line per rule that left something out whose behaviour is lost.
    pub fn not_carried(&self) -> Vec<String> {
        summary(&self.not_carried)
    }
    /// One line per rule that left out what the target does the same without.
    pub fn translated(&self) -> Vec<String> {
        summary(&self.translated)
    }
}

/// Settings for a target distribution.
#[derive(Debug)]
pub struct Translator {
    target: Distribution,
    pub notes: Notes,
}

impl Translator {
    pub fn new(target: Distribution) -> Self {
        Self {
            target,
            notes: Notes::default(),
        }
    }

    /// Leaves out of flat settings what the target's distribution lacks; `whose` names them
    /// in the notes ("index logs", "template t").
    pub fn settings(&mut self, whose: &str, flat: &mut Map<String, Value>) {
        let keys: Vec<String> = flat.keys().cloned().collect();
        for key in keys {
            let Some(rule) = ONE_SIDED
                .iter()
                .find(|r| r.only != self.target && r.matches(&key))
            else {
                continue;
            };
            let Some(value) = flat.remove(&key) else {
                continue;
            };
            let line = format!("{key} ({}) left out", rule.what);
            let notes = if (rule.same_without)(&value) {
                &mut self.notes.translated
            } else {
                &mut self.notes.not_carried
            };
            let names = notes.entry(line).or_default();
            if !names.iter().any(|n| n == whose) {
                names.push(whose.to_string());
            }
        }
    }

    /// A template body's settings (nested as the servers give them; written back flat, which
    /// both take): `body.settings` of a legacy template, `body.template.settings` of the others.
    pub fn template(&mut self, kind: &str, name: &str, body: &mut Value) {
        let holder = if kind == "_template" {
            Some(&mut *body)
        } else {
            body.get_mut("template")
        };
        let Some(settings) = holder.and_then(|h| h.get_mut("settings")) else {
            return;
        };
        let Some(nested) = settings.as_object() else {
            return;
        };
        let mut flat = flatten(nested);
        self.settings(&format!("template {name}"), &mut flat);
        *settings = Value::Object(flat);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn opensearch_settings_leave_for_elasticsearch() {
        let mut t = Translator::new(Distribution::Elasticsearch);
        let mut s = flat(
            json!({"index.replication.type": "DOCUMENT", "index.number_of_shards": "2",
            "index.plugins.index_state_management.policy_id": "hot"}),
        );
        t.settings("index a", &mut s);
        assert_eq!(s, flat(json!({"index.number_of_shards": "2"})));
        let mut s = flat(json!({"index.replication.type": "SEGMENT"}));
        t.settings("index b", &mut s);
        assert!(s.is_empty());
        assert_eq!(t.notes.translated().len(), 1, "{:?}", t.notes);
        assert!(t.notes.translated()[0].ends_with(": index a"));
        let lost = t.notes.not_carried();
        assert_eq!(lost.len(), 2, "{lost:?}");
        assert!(
            lost.iter()
                .any(|l| l.starts_with("index.replication.type") && l.ends_with(": index b"))
        );
    }

    #[test]
    fn a_distribution_keeps_its_own_settings() {
        let mut t = Translator::new(Distribution::OpenSearch);
        let mut s = flat(json!({"index.replication.type": "SEGMENT", "index.lifecycle.name": "p"}));
        t.settings("index a", &mut s);
        assert_eq!(s, flat(json!({"index.replication.type": "SEGMENT"})));
        assert_eq!(t.notes.not_carried().len(), 1);
    }

    #[test]
    fn template_settings_are_translated_where_each_kind_keeps_them() {
        let mut t = Translator::new(Distribution::Elasticsearch);
        let mut legacy = json!({"index_patterns": ["a"], "settings": {"index": {"replication": {"type": "DOCUMENT"}, "number_of_shards": "1"}}});
        t.template("_template", "l", &mut legacy);
        assert_eq!(legacy["settings"], json!({"index.number_of_shards": "1"}));
        let mut composable =
            json!({"template": {"settings": {"index.replication.type": "DOCUMENT"}}});
        t.template("_index_template", "c", &mut composable);
        assert_eq!(composable["template"]["settings"], json!({}));
        let mut none = json!({"template": {"mappings": {}}});
        t.template("_component_template", "n", &mut none);
        assert_eq!(none, json!({"template": {"mappings": {}}}));
    }

    #[test]
    fn many_names_are_cut_in_the_summary() {
        let mut t = Translator::new(Distribution::Elasticsearch);
        for i in 0..8 {
            let mut s = flat(json!({"index.replication.type": "DOCUMENT"}));
            t.settings(&format!("index i{i}"), &mut s);
        }
        assert!(
            t.notes.translated()[0].ends_with("index i4 and 3 more"),
            "{:?}",
            t.notes
        );
    }
}
