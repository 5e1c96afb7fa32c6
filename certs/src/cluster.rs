//! Kubernetes glue: the certificate Secrets and the webhook configurations' `caBundle`.
//!
//! Two Secrets of type `kubernetes.io/tls` in the webhook's namespace:
//!
//! - `NAME` (e.g. `cairn-webhook-tls`): `tls.crt`, `tls.key`, `ca.crt`; mounted by the webhook.
//! - `NAME-ca` ([`ca_secret_name`]): the active CA's `tls.crt` and `tls.key`; during a rotation
//!   the next CA's `next.crt` and `next.key`, and the previous CA's `previous.crt` (see
//!   [`pki::plan`]). Kept apart so that the webhook pod never holds the key that can mint
//!   certificates its callers trust; only the bootstrap Job and the renewal CronJob read it.
//!
//! Writes are server-side apply with field manager [`FIELD_MANAGER`], carrying the
//! resourceVersion that was read so that two concurrent runs cannot interleave a CA with a
//! certificate of the other's CA (the loser gets a conflict and its Job retries).
//!
//! RBAC the caller needs: `get`, `create`, `patch` on `secrets` in the namespace; `get`, `patch`
//! on `validatingwebhookconfigurations` and `mutatingwebhookconfigurations`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::SystemTime;

use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::pki::{self, Ca, CaSet, CertRequest, Plan, ServingCert};
use crate::{Error, Result};

/// The server-side apply field manager of every write made here.
pub const FIELD_MANAGER: &str = "cairn-certs";

/// The Secret type that carries `tls.crt` and `tls.key`.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// The Secret that holds the CA next to the serving Secret `name`.
pub fn ca_secret_name(name: &str) -> String {
    format!("{name}-ca")
}

/// Make sure Secret `name` (and its CA Secret, [`ca_secret_name`]) in `namespace` hold a valid
/// serving certificate for `request`, rotating only what [`pki::plan`] finds missing,
/// unparsable, for other names, or within its renewal window; a CA near expiry is rotated in
/// steps with an overlap in the caBundle. `trusted` is what the webhook configurations' caBundles
/// hold now ([`current_bundles`]).
///
/// Returns the plan: what was kept or made (the `*_rotation` fields say which was written, and
/// why) and the `ca_bundle` to give [`inject_ca_bundle`].
pub async fn ensure_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    trusted: &[String],
    request: &CertRequest,
) -> Result<Plan> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let ca_name = ca_secret_name(name);
    let ca_secret = get_tls_secret(&secrets, namespace, &ca_name).await?;
    let serving_secret = get_tls_secret(&secrets, namespace, name).await?;

    let existing_ca = ca_secret.as_ref().and_then(|s| {
        let pair = |cert: &str, key: &str| {
            Some(Ca {
                cert_pem: entry(s, cert)?,
                key_pem: entry(s, key)?,
            })
        };
        Some(CaSet {
            active: pair("tls.crt", "tls.key")?,
            next: pair("next.crt", "next.key"),
            previous: entry(s, "previous.crt"),
        })
    });
    let existing_serving = serving_secret.as_ref().and_then(|s| {
        Some(ServingCert {
            cert_pem: entry(s, "tls.crt")?,
            key_pem: entry(s, "tls.key")?,
            // A missing ca.crt makes the plan reissue, which writes it.
            ca_pem: entry(s, "ca.crt").unwrap_or_default(),
        })
    });
    let plan = pki::plan(
        existing_ca.as_ref(),
        existing_serving.as_ref(),
        trusted,
        request,
        SystemTime::now(),
    )?;

    // The CA first: a crash between the two writes leaves a certificate that no longer verifies
    // against the stored CA, which the next run reissues.
    if plan.ca_rotation.is_some() {
        let cas = &plan.cas;
        let mut data = vec![
            ("tls.crt", &cas.active.cert_pem),
            ("tls.key", &cas.active.key_pem),
        ];
        if let Some(next) = &cas.next {
            data.extend([("next.crt", &next.cert_pem), ("next.key", &next.key_pem)]);
        }
        if let Some(previous) = &cas.previous {
            data.push(("previous.crt", previous));
        }
        // Server-side apply drops the entries this manager set before and leaves out now.
        apply(
            &secrets,
            namespace,
            &ca_name,
            &data,
            resource_version(&ca_secret),
        )
        .await?;
    }
    if plan.serving_rotation.is_some() {
        let s = &plan.serving;
        let data = [
            ("tls.crt", &s.cert_pem),
            ("tls.key", &s.key_pem),
            ("ca.crt", &s.ca_pem),
        ];
        apply(
            &secrets,
            namespace,
            name,
            &data,
            resource_version(&serving_secret),
        )
        .await?;
    }
    Ok(plan)
}

/// Write `serving` as the `kubernetes.io/tls` Secret `name` (`tls.crt`, `tls.key`, `ca.crt`),
/// unconditionally, by server-side apply.
pub async fn apply_tls_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    serving: &ServingCert,
) -> Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let data = [
        ("tls.crt", &serving.cert_pem),
        ("tls.key", &serving.key_pem),
        ("ca.crt", &serving.ca_pem),
    ];
    apply(&secrets, namespace, name, &data, None).await
}

/// The caBundle of every entry of the two webhook configurations (an empty name skips one), as
/// text: what the API servers trust now. A missing configuration is an error.
pub async fn current_bundles(
    client: &Client,
    validating_name: &str,
    mutating_name: &str,
) -> Result<Vec<String>> {
    let text = |b: &Option<ByteString>| {
        b.as_ref()
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .unwrap_or_default()
    };
    let mut bundles = Vec::new();
    if !validating_name.is_empty() {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        let config = get_configuration(&api, validating_name).await?;
        bundles.extend(
            config
                .webhooks
                .iter()
                .flatten()
                .map(|w| text(&w.client_config.ca_bundle)),
        );
    }
    if !mutating_name.is_empty() {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        let config = get_configuration(&api, mutating_name).await?;
        bundles.extend(
            config
                .webhooks
                .iter()
                .flatten()
                .map(|w| text(&w.client_config.ca_bundle)),
        );
    }
    Ok(bundles)
}

async fn get_configuration<K>(api: &Api<K>, name: &str) -> Result<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = K::kind(&());
    api.get_opt(name)
        .await
        .map_err(kube_err(format!("reading {kind} {name}")))?
        .ok_or_else(|| Error::Cluster(format!("{kind} {name} not found")))
}

/// Set `webhooks[*].clientConfig.caBundle` of the ValidatingWebhookConfiguration
/// `validating_name` and the MutatingWebhookConfiguration `mutating_name` to `ca_pem`.
///
/// One JSON patch per configuration, touching only the caBundle of entries that differ, each
/// guarded by a `test` of the entry's name (so a concurrent reorder fails instead of writing
/// the wrong entry). An empty name skips that configuration; a missing configuration is an
/// error (the install applies them before it runs the bootstrap Job). Returns how many entries
/// were changed.
pub async fn inject_ca_bundle(
    client: &Client,
    validating_name: &str,
    mutating_name: &str,
    ca_pem: &str,
) -> Result<usize> {
    let mut changed = 0;
    if !validating_name.is_empty() {
        let api: Api<ValidatingWebhookConfiguration> = Api::all(client.clone());
        changed += patch_configuration(&api, validating_name, ca_pem, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                .collect()
        })
        .await?;
    }
    if !mutating_name.is_empty() {
        let api: Api<MutatingWebhookConfiguration> = Api::all(client.clone());
        changed += patch_configuration(&api, mutating_name, ca_pem, |c| {
            c.webhooks
                .iter()
                .flatten()
                .map(|w| (w.name.clone(), w.client_config.ca_bundle.clone()))
                .collect()
        })
        .await?;
    }
    Ok(changed)
}

async fn patch_configuration<K>(
    api: &Api<K>,
    name: &str,
    ca_pem: &str,
    webhooks: impl Fn(&K) -> Vec<(String, Option<ByteString>)>,
) -> Result<usize>
where
    K: kube::Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let kind = K::kind(&());
    let config = get_configuration(api, name).await?;
    let entries = webhooks(&config);
    let Some((patch, count)) = ca_bundle_patch(&entries, ca_pem)? else {
        return Ok(0);
    };
    api.patch(name, &PatchParams::default(), &Patch::<()>::Json(patch))
        .await
        .map_err(kube_err(format!("patching the caBundle of {kind} {name}")))?;
    Ok(count)
}

/// The JSON patch that sets the caBundle of every entry in `webhooks` (name, current caBundle)
/// that differs from `ca_pem`, with the number of such entries; `None` when all match.
fn ca_bundle_patch(
    webhooks: &[(String, Option<ByteString>)],
    ca_pem: &str,
) -> Result<Option<(json_patch::Patch, usize)>> {
    let wanted = ByteString(ca_pem.as_bytes().to_vec());
    // ByteString serializes as base64, the wire form of caBundle.
    let encoded = serde_json::to_value(&wanted)
        .map_err(|e| Error::Invalid(format!("encoding the caBundle: {e}")))?;
    let mut ops = Vec::new();
    let mut count = 0;
    for (index, (name, current)) in webhooks.iter().enumerate() {
        if current.as_ref() == Some(&wanted) {
            continue;
        }
        count += 1;
        ops.push(json!({"op": "test", "path": format!("/webhooks/{index}/name"), "value": name}));
        // `add` sets the member whether or not it exists; clientConfig is a required field.
        ops.push(json!({
            "op": "add",
            "path": format!("/webhooks/{index}/clientConfig/caBundle"),
            "value": encoded,
        }));
    }
    if ops.is_empty() {
        return Ok(None);
    }
    let patch = serde_json::from_value(serde_json::Value::Array(ops))
        .map_err(|e| Error::Invalid(format!("building the caBundle patch: {e}")))?;
    Ok(Some((patch, count)))
}

async fn get_tls_secret(api: &Api<Secret>, namespace: &str, name: &str) -> Result<Option<Secret>> {
    let secret = api
        .get_opt(name)
        .await
        .map_err(kube_err(format!("reading Secret {namespace}/{name}")))?;
    if let Some(s) = &secret {
        let kind = s.type_.as_deref().unwrap_or("Opaque");
        if kind != TLS_SECRET_TYPE {
            // The type of a Secret is immutable: apply would fail, and less clearly.
            return Err(Error::Cluster(format!(
                "Secret {namespace}/{name} has type {kind}, not {TLS_SECRET_TYPE}; delete it to let cairn-certs recreate it"
            )));
        }
    }
    Ok(secret)
}

async fn apply(
    api: &Api<Secret>,
    namespace: &str,
    name: &str,
    data: &[(&str, &String)],
    resource_version: Option<String>,
) -> Result<()> {
    let labels = BTreeMap::from([
        (
            "app.kubernetes.io/managed-by".to_string(),
            FIELD_MANAGER.to_string(),
        ),
        ("app.kubernetes.io/part-of".to_string(), "cairn".to_string()),
    ]);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            resource_version,
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_string()),
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    };
    // force: take over fields another manager set (e.g. a Secret made by hand); the
    // resourceVersion, when given, still guards against a concurrent writer.
    let params = PatchParams::apply(FIELD_MANAGER).force();
    api.patch(name, &params, &Patch::Apply(&secret))
        .await
        .map_err(kube_err(format!("applying Secret {namespace}/{name}")))?;
    Ok(())
}

fn resource_version(secret: &Option<Secret>) -> Option<String> {
    secret
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone())
}

/// A text entry of a Secret; `None` when absent or not UTF-8 (the plan then rotates).
fn entry(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    String::from_utf8(bytes.0.clone()).ok()
}

fn kube_err(what: String) -> impl FnOnce(kube::Error) -> Error {
    move |source| Error::Kube { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(patch: &json_patch::Patch) -> serde_json::Value {
        serde_json::to_value(patch).expect("serialize")
    }

    #[test]
    fn patch_touches_only_entries_that_differ() {
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let entries = vec![
            ("a.cairn.dev".to_string(), None),
            (
                "b.cairn.dev".to_string(),
                Some(ByteString(pem.as_bytes().to_vec())),
            ),
            ("c.cairn.dev".to_string(), Some(ByteString(b"old".to_vec()))),
        ];
        let (patch, count) = ca_bundle_patch(&entries, pem)
            .expect("patch")
            .expect("some");
        assert_eq!(count, 2);
        let encoded = serde_json::to_value(ByteString(pem.as_bytes().to_vec())).expect("b64");
        assert_eq!(
            ops(&patch),
            json!([
                {"op": "test", "path": "/webhooks/0/name", "value": "a.cairn.dev"},
                {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": encoded},
                {"op": "test", "path": "/webhooks/2/name", "value": "c.cairn.dev"},
                {"op": "add", "path": "/webhooks/2/clientConfig/caBundle", "value": encoded},
            ])
        );
    }

    #[test]
    fn patch_applies_to_a_configuration_without_clobbering_it() {
        let pem = "PEM\n";
        let mut config = json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "cairn-validating"},
            "webhooks": [
                {"name": "a.cairn.dev", "clientConfig": {"service": {"name": "s", "namespace": "n"}},
                 "sideEffects": "None", "admissionReviewVersions": ["v1"]},
                {"name": "b.cairn.dev", "clientConfig": {"service": {"name": "s", "namespace": "n"}, "caBundle": "b2xk"},
                 "sideEffects": "None", "admissionReviewVersions": ["v1"]},
            ]
        });
        let entries = vec![
            ("a.cairn.dev".to_string(), None),
            ("b.cairn.dev".to_string(), Some(ByteString(b"old".to_vec()))),
        ];
        let (patch, _) = ca_bundle_patch(&entries, pem)
            .expect("patch")
            .expect("some");
        json_patch::patch(&mut config, &patch).expect("applies");
        for i in 0..2 {
            assert_eq!(
                config["webhooks"][i]["clientConfig"]["caBundle"],
                "UEVNCg=="
            );
            assert_eq!(
                config["webhooks"][i]["clientConfig"]["service"]["name"],
                "s"
            );
            assert_eq!(config["webhooks"][i]["sideEffects"], "None");
        }

        // Entries reordered since they were read: the test op refuses the patch.
        let mut reordered = config.clone();
        if let Some(list) = reordered["webhooks"].as_array_mut() {
            list.reverse();
        }
        let (patch, _) = ca_bundle_patch(&entries, "NEW\n")
            .expect("patch")
            .expect("some");
        assert!(json_patch::patch(&mut reordered, &patch).is_err());
    }

    #[test]
    fn nothing_to_patch_when_all_match() {
        let entries = vec![("a".to_string(), Some(ByteString(b"PEM".to_vec())))];
        assert!(ca_bundle_patch(&entries, "PEM").expect("patch").is_none());
        assert!(ca_bundle_patch(&[], "PEM").expect("patch").is_none());
    }

    #[test]
    fn ca_secret_sits_next_to_the_serving_secret() {
        assert_eq!(ca_secret_name("cairn-webhook-tls"), "cairn-webhook-tls-ca");
    }
}
