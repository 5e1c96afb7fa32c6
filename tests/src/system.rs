//! cairn on a test control plane, as the end-to-end tests need it: the CRDs (cairn's and the
//! AppBinding's), the catalog, the `cairn-system` namespace, a registered webhook and a
//! controller that leads.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use crate::controller::Controller;
use crate::controlplane::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use crate::webhook::Webhook;

/// The CRDs, the catalog's Tasks and Functions, and the `cairn-system` namespace.
pub async fn install(cp: &ControlPlane) {
    cp.apply_crds(crds_dir()).await.expect("CRDs");
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("AppBinding CRD");
    for f in [
        "manifests/catalog/functions.yaml",
        "manifests/catalog/tasks.yaml",
    ] {
        let out = cp.kubectl(["apply", "-f", &repo_root().join(f).display().to_string()]);
        assert!(
            out.status.success(),
            "{f}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    create_namespace(cp, "cairn-system").await;
}

/// Creates namespace `name`; one that exists already is fine.
pub async fn create_namespace(cp: &ControlPlane, name: &str) {
    let api: Api<Namespace> = Api::all(cp.client());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).expect("ns");
    match api.create(&PostParams::default(), &ns).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("namespace {name}: {e}"),
    }
}

/// [`install`], then a registered webhook and a controller named `identity` (15 s lease) that
/// leads.
pub async fn cairn_system(cp: &ControlPlane, identity: &str) -> (Webhook, Controller) {
    install(cp).await;
    let webhook = Webhook::start(cp).expect("webhook");
    webhook.register(cp).expect("register");
    let controller = Controller::start(cp, "cairn-system", identity, 15).expect("controller");
    controller
        .wait_leader(Duration::from_secs(30))
        .expect("leader");
    (webhook, controller)
}
