//! Snapshots Stash's Elasticsearch addon made: the directory its `multielasticdump` wrote (per
//! index `<index>.json` documents, `.mapping.json`, `.settings.json`, and `.analyzer.json`,
//! `.alias.json`, `.template.json` when those types were dumped; Stash's `meta.txt` beside them),
//! backed up by restic from wherever the addon's interim volume was mounted.
//!
//! This module finds that directory among a snapshot's files and reads its metadata files into
//! cairn's shapes (`layout::IndexMeta`, legacy templates by name). elasticdump writes each
//! metadata file as one JSON document per line, most of them JSON strings holding the JSON
//! (`"{\"orders\":{\"settings\":...}}"`); settings come nested (`{"index":{"number_of_shards":..}}`)
//! where cairn keeps them flat. Older servers' shapes are translated, each one named in a note:
//! mapping types (Elasticsearch 6 and before) and a legacy template's `template` pattern
//! (Elasticsearch 5).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{AgentError, Result, short};
use crate::layout::IndexMeta;

/// One of the files multielasticdump writes for an index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    Data,
    Mapping,
    Settings,
    Analyzer,
    Alias,
    Template,
}

/// The file-name suffixes of the parts other than the documents (`<index>.json`).
const SUFFIXES: [(&str, Part); 5] = [
    (".mapping.json", Part::Mapping),
    (".settings.json", Part::Settings),
    (".analyzer.json", Part::Analyzer),
    (".alias.json", Part::Alias),
    (".template.json", Part::Template),
];

/// Stash's own file in the dump directory (the interim volume's size): not an index.
pub const META_TXT: &str = "meta.txt";

impl Part {
    /// The index and part a file name stands for, read as multielasticdump's own load reads
    /// it: a known suffix first, else `.json` is the documents.
    pub fn of_file(name: &str) -> Option<(&str, Part)> {
        for (suffix, part) in SUFFIXES {
            if let Some(index) = name.strip_suffix(suffix) {
                return Some((index, part));
            }
        }
        name.strip_suffix(".json").map(|index| (index, Part::Data))
    }

    fn suffix(self) -> &'static str {
        SUFFIXES
            .iter()
            .find(|(_, p)| *p == self)
            .map_or(".json", |(s, _)| s)
    }
}

/// A dump directory in a snapshot: where it is and which parts each index has.
#[derive(Clone, Debug, PartialEq)]
pub struct Dump {
    /// Its path in the snapshot (`/stash-interim-volume/data`).
    pub dir: String,
    pub indices: BTreeMap<String, BTreeSet<Part>>,
}

impl Dump {
    /// The dump among a snapshot's files (paths from its root): the one directory holding
    /// `.mapping.json` or `.settings.json` files. `None` when no directory does; the reason,
    /// said of the snapshot, when it holds a dump this agent cannot read.
    pub fn find<'a>(
        files: impl IntoIterator<Item = &'a Path>,
    ) -> std::result::Result<Option<Dump>, String> {
        let mut dirs: BTreeMap<String, BTreeMap<String, BTreeSet<Part>>> = BTreeMap::new();
        for path in files {
            let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
                continue;
            };
            let name = name.to_string_lossy();
            let dir = format!("/{}", parent.display()).replace("//", "/");
            unsupported_file(&dir, &name)?;
            if let Some((index, part)) = Part::of_file(&name) {
                let parts = dirs.entry(dir).or_default();
                parts.entry(index.to_string()).or_default().insert(part);
            }
        }
        dirs.retain(|_, indices| {
            indices
                .values()
                .any(|p| p.contains(&Part::Mapping) || p.contains(&Part::Settings))
        });
        let mut found = dirs.into_iter();
        let Some((dir, indices)) = found.next() else {
            return Ok(None);
        };
        if let Some((other, _)) = found.next() {
            return Err(format!(
                "holds more than one Stash dump ({dir} and {other}): restore it with restic and \
                 load the directory you want with multielasticdump"
            ));
        }
        Ok(Some(Dump { dir, indices }))
    }

    /// The path of one of an index's files.
    pub fn file(&self, index: &str, part: Part) -> String {
        format!(
            "{}/{index}{}",
            self.dir.trim_end_matches('/'),
            part.suffix()
        )
    }
}

/// Files of multielasticdump's options this agent does not read: refused by name rather than
/// restored in part.
fn unsupported_file(dir: &str, name: &str) -> std::result::Result<(), String> {
    let why = if name.ends_with(".json.gz") {
        "compressed with --fsCompress"
    } else if name.contains(".split-") {
        "split with --fileSize"
    } else {
        return Ok(());
    };
    Err(format!(
        "holds a Stash dump in {dir} with {name}, {why}, which this agent does not read: restore \
         the snapshot with restic and load it with multielasticdump"
    ))
}

/// A metadata file's JSON: each line one document, a string holding JSON read again; the
/// lines' objects merged.
pub fn decode(bytes: &[u8], what: &str) -> Result<Map<String, Value>> {
    let text = String::from_utf8_lossy(bytes);
    let mut out = Map::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut value: Value =
            serde_json::from_str(line).map_err(|e| AgentError::json(what.to_string(), e))?;
        if let Value::String(inner) = &value {
            value =
                serde_json::from_str(inner).map_err(|e| AgentError::json(what.to_string(), e))?;
        }
        match value {
            Value::Object(map) => out.extend(map),
            other => {
                return Err(AgentError::Snapshot(format!(
                    "{what} holds {}, not an object",
                    short(&other.to_string(), 80)
                )));
            }
        }
    }
    Ok(out)
}

/// The object under `key` of an index's entry (`{"<index>": {"<key>": {...}}}`): the entry of
/// that index, or the only one (the file was dumped through an alias).
fn entry<'a>(file: &'a Map<String, Value>, index: &str, key: &str) -> Option<&'a Value> {
    let entry = file
        .get(index)
        .or_else(|| (file.len() == 1).then(|| file.values().next()).flatten())?;
    entry.get(key)
}

/// Top-level keys of a mapping: anything else alone at the top is a mapping type.
const MAPPING_KEYS: &[&str] = &[
    "properties",
    "dynamic",
    "dynamic_templates",
    "date_detection",
    "numeric_detection",
    "dynamic_date_formats",
    "runtime",
    "enabled",
    "_source",
    "_routing",
    "_meta",
    "_all",
    "_field_names",
    "_size",
    "_data_stream_timestamp",
];

/// A mapping without its type (Elasticsearch 6 and before put one level, e.g. `_doc`, above
/// the properties); the type's name goes into `notes`.
pub fn untyped(mapping: Value, whose: &str, notes: &mut Vec<String>) -> Value {
    let Value::Object(map) = &mapping else {
        return mapping;
    };
    if map.len() != 1 {
        return mapping;
    }
    let Some((name, inner)) = map.iter().next() else {
        return mapping;
    };
    if MAPPING_KEYS.contains(&name.as_str()) || !inner.is_object() {
        return mapping;
    }
    notes.push(format!(
        "{whose}: mapping type {name:?} removed (types are gone since Elasticsearch 7)"
    ));
    inner.clone()
}

/// An index's metadata from its dump files (each already [`decode`]d; absent parts `None`).
pub fn index_meta(
    index: &str,
    files: &BTreeMap<Part, Map<String, Value>>,
    notes: &mut Vec<String>,
) -> IndexMeta {
    let mut settings = Map::new();
    // The analyzer file holds the index's settings again: the analysis is in both.
    for part in [Part::Analyzer, Part::Settings] {
        if let Some(Value::Object(nested)) =
            files.get(&part).and_then(|f| entry(f, index, "settings"))
        {
            settings.extend(crate::settings::flatten(nested));
        }
    }
    let mappings = files
        .get(&Part::Mapping)
        .and_then(|f| entry(f, index, "mappings"))
        .cloned()
        .map(|m| untyped(m, &format!("index {index}"), notes))
        .unwrap_or_else(|| Value::Object(Map::new()));
    let aliases = files
        .get(&Part::Alias)
        .and_then(|f| entry(f, index, "aliases"))
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    IndexMeta {
        settings: crate::settings::restorable(&settings),
        mappings,
        aliases,
    }
}

/// Legacy templates (`_template`) as the server takes them: Elasticsearch 5's `template`
/// pattern becomes `index_patterns`, typed mappings lose their type.
pub fn legacy_template(name: &str, body: &Value, notes: &mut Vec<String>) -> Value {
    let mut body = body.clone();
    let Some(map) = body.as_object_mut() else {
        return body;
    };
    if let Some(pattern) = map.remove("template")
        && !map.contains_key("index_patterns")
    {
        notes.push(format!(
            "template {name}: its `template` pattern became `index_patterns`"
        ));
        map.insert("index_patterns".into(), Value::Array(vec![pattern]));
    }
    if let Some(mappings) = map.remove("mappings") {
        let mappings = untyped(mappings, &format!("template {name}"), notes);
        map.insert("mappings".into(), mappings);
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn file_names_read_as_multielasticdump_loads_them() {
        assert_eq!(Part::of_file("orders.json"), Some(("orders", Part::Data)));
        assert_eq!(
            Part::of_file("logs-2024.01.01.mapping.json"),
            Some(("logs-2024.01.01", Part::Mapping))
        );
        assert_eq!(Part::of_file("a.alias.json"), Some(("a", Part::Alias)));
        assert_eq!(Part::of_file(META_TXT), None);
    }

    #[test]
    fn the_dump_is_found_wherever_it_sits() {
        let files = [
            "stash-interim-volume/data/orders.json",
            "stash-interim-volume/data/orders.mapping.json",
            "stash-interim-volume/data/orders.settings.json",
            "stash-interim-volume/data/meta.txt",
            "etc/other.json",
        ];
        let dump = Dump::find(files.iter().map(Path::new)).unwrap().unwrap();
        assert_eq!(dump.dir, "/stash-interim-volume/data");
        assert_eq!(dump.indices.len(), 1);
        assert_eq!(
            dump.file("orders", Part::Settings),
            "/stash-interim-volume/data/orders.settings.json"
        );
        assert_eq!(Dump::find([Path::new("a/b.txt")]).unwrap(), None);
        let two = ["a/x.mapping.json", "b/y.settings.json"];
        assert!(Dump::find(two.iter().map(Path::new)).is_err());
        let gz = ["a/x.mapping.json", "a/x.json.gz"];
        let err = Dump::find(gz.iter().map(Path::new)).unwrap_err();
        assert!(err.contains("--fsCompress"), "{err}");
    }

    #[test]
    fn metadata_is_read_as_elasticdump_writes_it() {
        let settings = br#""{\"orders\":{\"settings\":{\"index\":{\"number_of_shards\":\"2\",\"uuid\":\"u\",\"analysis\":{\"analyzer\":{\"lower\":{\"filter\":[\"lowercase\"],\"type\":\"custom\"}}}}}}}""#;
        let mapping =
            br#"{"orders":{"mappings":{"_doc":{"properties":{"n":{"type":"integer"}}}}}}"#;
        let alias = br#""{\"orders\":{\"aliases\":{\"cur\":{\"index_routing\":\"r1\"}}}}""#;
        let mut files = BTreeMap::new();
        files.insert(Part::Settings, decode(settings, "s").unwrap());
        files.insert(Part::Mapping, decode(mapping, "m").unwrap());
        files.insert(Part::Alias, decode(alias, "a").unwrap());
        let mut notes = Vec::new();
        let meta = index_meta("orders", &files, &mut notes);
        assert_eq!(meta.settings["index.number_of_shards"], "2");
        assert_eq!(
            meta.settings["index.analysis.analyzer.lower.filter"],
            json!(["lowercase"])
        );
        assert!(!meta.settings.contains_key("index.uuid"));
        assert_eq!(
            meta.mappings,
            json!({"properties": {"n": {"type": "integer"}}})
        );
        assert_eq!(meta.aliases["cur"], json!({"index_routing": "r1"}));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(decode(b"[1]", "x").is_err());
    }

    #[test]
    fn old_templates_are_translated() {
        let mut notes = Vec::new();
        let t = legacy_template(
            "t",
            &json!({"template": "x-*", "mappings": {"doc": {"properties": {}}}}),
            &mut notes,
        );
        assert_eq!(
            t,
            json!({"index_patterns": ["x-*"], "mappings": {"properties": {}}})
        );
        assert_eq!(notes.len(), 2);
        let plain = json!({"index_patterns": ["a"], "mappings": {"properties": {}}});
        assert_eq!(legacy_template("p", &plain, &mut notes), plain);
        assert_eq!(notes.len(), 2);
    }
}
