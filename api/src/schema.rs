//! Schema helpers for fields whose JSON schema schemars cannot derive the way Kubernetes wants.

use schemars::{Schema, SchemaGenerator, json_schema};

/// An object with any content, kept as is by the API server.
pub fn preserve_unknown_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Base64-encoded bytes (`k8s_openapi::ByteString`), as Kubernetes writes them.
pub fn base64_bytes(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "format": "byte",
    })
}

/// An optional enum of strings: the enum's own values, `nullable` (derived, `null` would be one
/// of the values, which kubectl's client-side validation refuses as an unknown object type).
pub fn optional_enum<T: schemars::JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    let mut schema = T::json_schema(generator);
    schema.insert("nullable".into(), true.into());
    schema
}
