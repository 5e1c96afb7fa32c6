//! The AppBinding kind of `appcatalog.appscode.com/v1alpha1`: not ours (KubeDB creates them),
//! read as they are. We also ship its CRD for clusters without KubeDB.

use k8s_openapi::ByteString;
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// How to connect to an application, and with which credentials.
// kube-derive takes one `printcolumn(...)` per column, which clippy sees as duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "appcatalog.appscode.com",
    version = "v1alpha1",
    kind = "AppBinding",
    namespaced,
    category = "catalog",
    category = "appscode",
    derive = "PartialEq",
    derive = "Default",
    doc = "AppBinding describes how to connect to an application (here an Elasticsearch or OpenSearch cluster) and with which credentials.",
    printcolumn(name = "Type", type_ = "string", json_path = ".spec.type"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct AppBindingSpec {
    /// Type of the application, e.g. `kubedb.com/elasticsearch`.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub r#type: Option<String>,
    /// Version of the application, e.g. `7.17.0` or `opensearch-2.19.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How to reach the application.
    pub client_config: ClientConfig,
    /// Secret with the credentials: `username`/`password` (or `ADMIN_USERNAME`/`ADMIN_PASSWORD`),
    /// or `apiKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// Transformations applied to the Secret's keys before use.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_transforms: Vec<SecretTransform>,
    /// Application-specific parameters; may name the default backup and restore Tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::preserve_unknown_object")]
    pub parameters: Option<serde_json::Value>,
}

/// How to reach an application: a URL or a Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientConfig {
    /// URL of the application, e.g. `https://es.demo.svc:9200`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// A Service in front of the application.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceReference>,
    /// PEM-encoded CA bundle that signed the application's serving certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::base64_bytes")]
    pub ca_bundle: Option<ByteString>,
    /// Do not verify the application's TLS certificate.
    #[serde(
        default,
        rename = "insecureSkipTLSVerify",
        skip_serializing_if = "Option::is_none"
    )]
    pub insecure_skip_tls_verify: Option<bool>,
    /// Server name to verify the certificate against, when it differs from the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// A Service in front of an application.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceReference {
    /// `http` or `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// Name of the Service.
    pub name: String,
    /// Namespace of the Service; defaults to the AppBinding's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Port of the Service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
    /// URL path prefix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// URL query string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// A reference to a Secret in the AppBinding's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    pub name: String,
}

/// A transformation of the credentials Secret's keys.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretTransform {
    /// Rename a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rename_key: Option<RenameKeyTransform>,
}

/// Rename a key of the credentials Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RenameKeyTransform {
    /// The key in the Secret.
    pub from: String,
    /// The name it is read as.
    pub to: String,
}

impl AppBinding {
    /// The URL to reach an AppBinding's application: `clientConfig.url`, else built from
    /// `clientConfig.service` (scheme, `<name>.<namespace>.svc`, port, path, query).
    pub fn url(&self) -> String {
        let cc = &self.spec.client_config;
        if let Some(url) = cc.url.as_ref().filter(|u| !u.is_empty()) {
            return url.clone();
        }
        let Some(svc) = &cc.service else {
            return String::new();
        };
        let ns = svc
            .namespace
            .clone()
            .or_else(|| self.metadata.namespace.clone())
            .unwrap_or_default();
        let scheme = svc.scheme.as_deref().unwrap_or("http");
        let mut url = format!("{scheme}://{}.{ns}.svc", svc.name);
        if let Some(port) = svc.port {
            url.push_str(&format!(":{port}"));
        }
        if let Some(path) = svc.path.as_deref().filter(|p| !p.is_empty()) {
            if !path.starts_with('/') {
                url.push('/');
            }
            url.push_str(path);
        }
        if let Some(q) = svc.query.as_deref().filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q.trim_start_matches('?'));
        }
        url
    }

    /// The name of the Service whose pods an `exec` hook runs in, or why there is none. Only a
    /// Service in the AppBinding's own namespace: admission asked whether the hook's writer may
    /// exec there, never elsewhere, so `clientConfig.service.namespace` naming another namespace
    /// is refused rather than followed.
    pub fn exec_service(&self) -> Result<&str, String> {
        let name = self.name_any();
        let svc = self.spec.client_config.service.as_ref().ok_or_else(|| {
            format!("AppBinding {name:?} has no clientConfig.service: exec hooks run in the pods behind it")
        })?;
        let own = self.metadata.namespace.as_deref().unwrap_or_default();
        match svc.namespace.as_deref() {
            Some(other) if !other.is_empty() && other != own => Err(format!(
                "AppBinding {name:?}: clientConfig.service.namespace is {other:?}, and exec hooks \
                 run only in the session's namespace {own:?} (where the writer's right to exec \
                 was checked); point the AppBinding at a Service in {own:?}"
            )),
            _ => Ok(&svc.name),
        }
    }

    /// The host of [`Self::url`]: where a hook without `host` connects (Stash's default is the
    /// target's pod; this is the Service or URL in front of it).
    pub fn host(&self) -> Option<String> {
        let url = url::Url::parse(&self.url()).ok()?;
        url.host_str()
            .map(|h| h.trim_matches(['[', ']']).to_string())
    }

    /// [`Self::url`] without any `user:password@` written into it: credentials reach the agent
    /// only from the AppBinding's Secret, never through a Job's arguments or its preview.
    pub fn url_without_credentials(&self) -> String {
        without_userinfo(&self.url())
    }

    /// Whether `clientConfig.url` carries a `user:password@` part.
    pub fn url_has_credentials(&self) -> bool {
        url_has_userinfo(&self.url())
    }

    /// Whether the agent talks plain http to the database (a `service` without a scheme too).
    pub fn uses_http(&self) -> bool {
        self.url()
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("http://"))
    }
}

/// `url` without the `user:password@` a user may have written into it: credentials reach the
/// agent only from the AppBinding's Secret, never through the Job's arguments or its preview.
pub fn without_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Whether `url` carries a `user:password@` part.
pub fn url_has_userinfo(url: &str) -> bool {
    without_userinfo(url) != url
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(service: serde_json::Value) -> AppBinding {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": "es", "namespace": "shop"},
            "spec": {"clientConfig": {"service": service}}}))
        .expect("an AppBinding")
    }

    #[test]
    fn exec_hooks_follow_only_a_service_of_the_bindings_own_namespace() {
        assert_eq!(
            binding(serde_json::json!({"name": "es"})).exec_service(),
            Ok("es")
        );
        let same = binding(serde_json::json!({"name": "es", "namespace": "shop"}));
        assert_eq!(same.exec_service(), Ok("es"));
        let other = binding(serde_json::json!({"name": "es", "namespace": "kube-system"}));
        let why = other.exec_service().expect_err("another namespace");
        assert!(
            why.contains("clientConfig.service.namespace is \"kube-system\""),
            "{why}"
        );
        let none: AppBinding = serde_json::from_value(serde_json::json!({
            "apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding",
            "metadata": {"name": "es", "namespace": "shop"},
            "spec": {"clientConfig": {"url": "http://es:9200"}}}))
        .expect("an AppBinding");
        assert!(
            none.exec_service()
                .unwrap_err()
                .contains("no clientConfig.service")
        );
    }
}
