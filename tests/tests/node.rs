//! The real node: cairn's image runs as a real Pod on containerd, checked from the host.

use std::time::Duration;

use cairn_tests::ControlPlane;
use cairn_tests::image::cairn_image;
use cairn_tests::wait_for;
use cairn_tests::webhook::workspace_binary;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
async fn smoke() {
    let cp = ControlPlane::shared();
    let node = cp.node();
    let bin_dir = workspace_binary("cairn-agent").unwrap().parent().unwrap().to_path_buf();
    let digests = node.import_image(&cairn_image(&bin_dir)).unwrap();
    eprintln!("{digests:?}");
    let ns = cp.new_namespace().await.unwrap();
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "smoke"},
        "spec": {"restartPolicy": "Never", "automountServiceAccountToken": false,
          "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
          "containers": [{"name": "c", "image": cairn_tests::image::CAIRN_IMAGE, "imagePullPolicy": "Never",
            "command": ["cairn-agent", "--help"],
            "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": {"drop": ["ALL"]}}}]}
    })).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let mut p = pods.get("smoke").await.unwrap();
    for _ in 0..60 {
        p = pods.get("smoke").await.unwrap();
        let phase = p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" { break; }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    eprintln!("KUBELET\n{}\nCONTAINERD\n{}", node.kubelet_log_tail(60), node.containerd_log_tail(30));
    let out = cp.kubectl(["get", "events", "-A"]);
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("{}", serde_json::to_string_pretty(&p.status).unwrap());
}
