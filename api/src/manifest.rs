//! Reading manifests: multi-document YAML into objects, and objects into cairn's kinds, so
//! examples, the catalog and admission requests all go through the same dispatch by kind.

use serde::Deserialize;
use serde_json::Value;

use crate::validation::{Lookups, Validate, Verdict};
use crate::{
    AppBinding, BackupConfiguration, BackupSession, Function, Repository, RestoreSession, Task,
};

/// One object of a kind cairn knows, or any other object as JSON.
// Objects are read one at a time and dispatched at once: boxing would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Repository(Repository),
    BackupConfiguration(BackupConfiguration),
    BackupSession(BackupSession),
    RestoreSession(RestoreSession),
    Task(Task),
    Function(Function),
    AppBinding(AppBinding),
    Other(Value),
}

/// Why an object could not be read as its kind.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("not valid YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("{kind} {name:?} does not match its schema: {source}")]
    Schema {
        kind: String,
        name: String,
        source: serde_json::Error,
    },
}

/// Every non-empty document of a multi-document YAML text, as JSON values.
pub fn parse_documents(yaml: &str) -> Result<Vec<Value>, ManifestError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = Value::deserialize(doc)?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// Reads a JSON object as one of cairn's kinds, by `apiVersion` group and `kind`.
pub fn typed(v: Value) -> Result<Object, ManifestError> {
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let api_version = v
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let group = api_version.split('/').next().unwrap_or_default();
    let name = v
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let err = |source| ManifestError::Schema {
        kind: kind.clone(),
        name: name.clone(),
        source,
    };
    let obj = match (group, kind.as_str()) {
        ("cairn.dev", "Repository") => Object::Repository(serde_json::from_value(v).map_err(err)?),
        ("cairn.dev", "BackupConfiguration") => {
            Object::BackupConfiguration(serde_json::from_value(v).map_err(err)?)
        }
        ("cairn.dev", "BackupSession") => {
            Object::BackupSession(serde_json::from_value(v).map_err(err)?)
        }
        ("cairn.dev", "RestoreSession") => {
            Object::RestoreSession(serde_json::from_value(v).map_err(err)?)
        }
        ("cairn.dev", "Task") => Object::Task(serde_json::from_value(v).map_err(err)?),
        ("cairn.dev", "Function") => Object::Function(serde_json::from_value(v).map_err(err)?),
        ("appcatalog.appscode.com", "AppBinding") => {
            Object::AppBinding(serde_json::from_value(v).map_err(err)?)
        }
        _ => Object::Other(v),
    };
    Ok(obj)
}

impl Object {
    /// The admission verdict of a cairn kind on CREATE under the default install; `None` for
    /// kinds cairn does not admit.
    pub fn validate_create(&self, lookups: &dyn Lookups) -> Option<Verdict> {
        let policy = &crate::validation::Policy::default();
        Some(match self {
            Object::Repository(o) => o.validate(None, lookups, policy),
            Object::BackupConfiguration(o) => o.validate(None, lookups, policy),
            Object::BackupSession(o) => o.validate(None, lookups, policy),
            Object::RestoreSession(o) => o.validate(None, lookups, policy),
            Object::Task(o) => o.validate(None, lookups, policy),
            Object::Function(o) => o.validate(None, lookups, policy),
            Object::AppBinding(_) | Object::Other(_) => return None,
        })
    }
}
