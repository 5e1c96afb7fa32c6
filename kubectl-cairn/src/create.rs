//! Creating an object as `kubectl create` does, keeping what kube's typed API drops: the
//! server's `Warning` headers (admission webhooks' warnings), and `dryRun=All`.

use anyhow::{Context as _, Result, bail};
use http_body_util::BodyExt as _;
use kube::api::PostParams;
use kube::core::{NamespaceResourceScope, Request, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::client::Cluster;

/// Creates `object` in the working namespace (only through admission with `dry_run`); the
/// object the server returned and its warnings.
pub async fn create<K>(cluster: &Cluster, object: &K, dry_run: bool) -> Result<(K, Vec<String>)>
where
    K: Resource<Scope = NamespaceResourceScope> + Serialize + DeserializeOwned,
    K::DynamicType: Default,
{
    let url = K::url_path(&K::DynamicType::default(), Some(&cluster.namespace));
    let params = PostParams {
        dry_run,
        field_manager: Some("kubectl-cairn".into()),
    };
    let request = Request::new(url).create(&params, serde_json::to_vec(object)?)?;
    let response = cluster
        .client
        .send(request.map(kube::client::Body::from))
        .await?;
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok().map(warning_text))
        .collect();
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|s| s["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
        bail!("the server refused it ({status}): {message}");
    }
    let mut created: K = serde_json::from_slice(&body).context("the server's answer")?;
    // As kubectl prints objects: without the field managers' bookkeeping.
    created.meta_mut().managed_fields = None;
    Ok((created, warnings))
}

/// The text of a `Warning` header: `299 - "text"` (RFC 7234) gives `text`.
fn warning_text(header: &str) -> String {
    let rest = header.splitn(3, ' ').nth(2).unwrap_or(header).trim();
    let text = rest.strip_prefix('"').unwrap_or(rest);
    // The closing quote, and a date after it if the server added one.
    match text.rfind('"') {
        Some(end) => text[..end].replace("\\\"", "\""),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_headers_give_their_text() {
        assert_eq!(
            warning_text(r#"299 - "spec.target.ref: AppBinding x uses http""#),
            "spec.target.ref: AppBinding x uses http"
        );
        assert_eq!(
            warning_text(r#"299 - "a \"quoted\" word""#),
            r#"a "quoted" word"#
        );
    }
}
