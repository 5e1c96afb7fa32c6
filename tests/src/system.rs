//! cairn on a test control plane, as the end-to-end tests need it: the CRDs (cairn's and the
//! AppBinding's), the catalog, the `cairn-system` namespace, a registered webhook and a
//! controller that leads; on the test node, with cairn's and the fake agent's images imported,
//! and namespaces that enforce the `restricted` Pod Security Standard.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use crate::controller::Controller;
use crate::controlplane::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use crate::image::{CAIRN_IMAGE, cairn_image, fake_agent_image};
use crate::node::Node;
use crate::webhook::{Webhook, workspace_binary};

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

/// cairn on the test node (see [`on_node`]).
pub struct OnNode {
    pub node: &'static Node,
    /// The image id (config digest) of the imported cairn image.
    pub image_id: String,
    pub webhook: Webhook,
    pub controller: Controller,
}

/// [`install`] on `cp` with its node: cairn's image and the fake agent's imported into the
/// node, a registered webhook and a leading controller named `identity` offering cairn's image
/// as `${AGENT_IMAGE}`, with `controller_flags`.
pub async fn on_node(
    cp: &'static ControlPlane,
    identity: &str,
    controller_flags: &[&str],
) -> OnNode {
    let node = cp.node();
    let image_id = import_images(node);
    install(cp).await;
    let webhook = Webhook::start_with_image(cp, CAIRN_IMAGE).expect("webhook");
    webhook.register(cp).expect("register");
    let controller = Controller::start_with(
        cp,
        "cairn-system",
        identity,
        15,
        CAIRN_IMAGE,
        controller_flags,
    )
    .expect("controller");
    controller
        .wait_leader(Duration::from_secs(30))
        .expect("leader");
    OnNode {
        node,
        image_id,
        webhook,
        controller,
    }
}

/// Imports cairn's image and the fake agent's, of the binaries under test, into `node`; returns
/// the image id (config digest) of cairn's.
pub fn import_images(node: &Node) -> String {
    let bin_dir = workspace_binary("cairn-agent")
        .expect("cairn-agent")
        .parent()
        .expect("bin dir")
        .to_path_buf();
    node.import_image(&fake_agent_image(&bin_dir))
        .expect("import the fake agent's image");
    node.import_image(&cairn_image(&bin_dir))
        .expect("import cairn's image")
        .config
}

/// A new namespace that enforces the `restricted` Pod Security Standard (the API server's
/// PodSecurity admission), as cairn's Jobs must meet it.
pub async fn restricted_namespace(cp: &ControlPlane, prefix: &str) -> String {
    let ns = cp.new_namespace_with_prefix(prefix).await.expect("ns");
    let api: Api<Namespace> = Api::all(cp.client());
    api.patch(
        &ns,
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest"}}})),
    )
    .await
    .expect("label the namespace");
    ns
}
