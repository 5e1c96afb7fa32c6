//! What a snapshot holds, and where:
//!
//! ```text
//! /elasticsearch/cluster/component_templates.json   {name: component_template}
//! /elasticsearch/cluster/index_templates.json       {name: index_template}   (composable)
//! /elasticsearch/cluster/legacy_templates.json      {name: template}         (_template)
//! /elasticsearch/indices/<index>/documents.ndjson   {"_id":..,"_routing":..,"_source":{..}} per line
//! /elasticsearch/indices/<index>/index.json         {"settings":{flat},"mappings":{..},"aliases":{..}}
//! /elasticsearch/manifest.json                      server, per index: documents, bytes, sha256
//! ```
//!
//! Paths are in byte order, as restic trees are; the manifest comes last because it is written
//! once every document stream has ended.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::client::Distribution;

/// The directory the snapshot holds (its `paths`).
pub const ROOT: &str = "/elasticsearch";
pub const COMPONENT_TEMPLATES: &str = "cluster/component_templates.json";
pub const INDEX_TEMPLATES: &str = "cluster/index_templates.json";
pub const LEGACY_TEMPLATES: &str = "cluster/legacy_templates.json";
pub const MANIFEST: &str = "manifest.json";
pub const DOCUMENTS: &str = "documents.ndjson";
pub const INDEX_META: &str = "index.json";

/// `/elasticsearch/<rel>`.
pub fn path(rel: &str) -> String {
    format!("{ROOT}/{rel}")
}

/// `/elasticsearch/indices/<index>/<file>`.
pub fn index_path(index: &str, file: &str) -> String {
    format!("{ROOT}/indices/{index}/{file}")
}

/// Version of this layout, in the manifest.
pub const FORMAT: u32 = 1;

/// `manifest.json`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub created_by: String,
    pub created: String,
    pub host: String,
    pub server: ServerMeta,
    pub indices: BTreeMap<String, IndexEntry>,
    pub templates: TemplateCounts,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServerMeta {
    pub distribution: Distribution,
    pub version: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndexEntry {
    pub documents: u64,
    /// Size and SHA-256 of `documents.ndjson`.
    pub bytes: u64,
    pub sha256: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub hidden: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TemplateCounts {
    pub component: u64,
    pub composable: u64,
    pub legacy: u64,
}

/// `index.json`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct IndexMeta {
    /// Restorable settings, flat (`index.number_of_shards`).
    pub settings: Map<String, Value>,
    pub mappings: Value,
    /// Alias name to its definition (filter, routing, is_write_index, ...).
    pub aliases: Map<String, Value>,
}
