//! The cairn CRDs (`manifests/crds/`) on a real API server, through the real kubectl: the examples
//! apply, short names and `kubectl explain` work, unknown fields are rejected, and the status
//! subresource keeps spec and status apart.
//!
//! Needs `cargo xtask testbed` to have been run.

use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;

/// The shared control plane of this test binary, with the CRDs installed (once).
async fn cluster() -> &'static ControlPlane {
    static CRDS: OnceCell<Vec<String>> = OnceCell::const_new();
    let cp = ControlPlane::shared();
    let names = CRDS
        .get_or_init(|| async {
            cp.apply_crds(appbinding_crd_dir())
                .await
                .expect("apply manifests/appbinding");
            let names = cp
                .apply_crds(crds_dir())
                .await
                .expect("apply manifests/crds");
            // The API server publishes a CRD's OpenAPI (what `kubectl explain` reads) some time
            // after the CRD is established.
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let out = cp.kubectl(["explain", "backupconfiguration.spec"]);
                if out.status.success() {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "kubectl explain never worked: {}",
                    text(&out.stderr)
                );
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            names
        })
        .await;
    assert!(!names.is_empty(), "manifests/crds holds no CRD");
    cp
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn assert_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn yaml_files(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

/// An example manifest as JSON, moved into `namespace`.
fn example_in(file: &str, namespace: &str) -> serde_json::Value {
    let path = repo_root().join("manifests/examples").join(file);
    let yaml =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut value: serde_json::Value =
        serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
    value["metadata"]["namespace"] = namespace.into();
    value
}

#[tokio::test]
async fn every_example_applies_cleanly() {
    let cp = cluster().await;
    let files = yaml_files(&repo_root().join("manifests/examples"));
    assert!(!files.is_empty(), "manifests/examples holds no example");
    // Namespaces first, then everything else (kubectl would apply a directory alphabetically).
    let (namespaces, others): (Vec<PathBuf>, Vec<PathBuf>) = files.into_iter().partition(|f| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .lines()
            .any(|l| l.trim() == "kind: Namespace")
    });
    for file in namespaces.iter().chain(&others) {
        let out = cp.kubectl(
            ["apply", "-f"]
                .iter()
                .map(|s| s.to_string())
                .chain([file.display().to_string()]),
        );
        assert_ok(&out, &format!("kubectl apply -f {}", file.display()));
    }
}

#[tokio::test]
async fn kubectl_get_works_with_the_short_names() {
    let cp = cluster().await;
    let ns = cp.new_namespace().await.expect("namespace");
    let out = cp.kubectl(["get", "bc,bs,restore,repo", "-n", &ns]);
    assert_ok(&out, "kubectl get bc,bs,restore,repo");
    assert!(
        text(&out.stderr).contains("No resources found"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn kubectl_explain_prints_field_descriptions() {
    let cp = cluster().await;
    let out = cp.kubectl(["explain", "backupconfiguration.spec.interimVolumeTemplate"]);
    let stdout = assert_ok(&out, "kubectl explain");
    assert!(
        stdout.contains("KIND:") && stdout.contains("BackupConfiguration"),
        "{stdout}"
    );
    assert!(stdout.contains("DESCRIPTION:"), "{stdout}");
    assert!(
        stdout.contains("PersistentVolumeClaim"),
        "the description of interimVolumeTemplate is missing:\n{stdout}"
    );
}

#[tokio::test]
async fn a_manifest_with_an_unknown_field_is_rejected_naming_the_field() {
    let cp = cluster().await;
    let ns = cp.new_namespace().await.expect("namespace");
    let mut bc = example_in("backupconfiguration.yaml", &ns);
    bc["spec"]["scheduel"] = "*/5 * * * *".into();
    let out = cp.kubectl_stdin(["apply", "-f", "-"], &bc.to_string());
    assert!(
        !out.status.success(),
        "a manifest with spec.scheduel was accepted: {}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("scheduel"),
        "the error does not name the field: {stderr}"
    );
}

#[tokio::test]
async fn a_status_patch_does_not_change_spec() {
    let cp = cluster().await;
    let ns = cp.new_namespace().await.expect("namespace");
    let bc = example_in("backupconfiguration.yaml", &ns);
    let name = bc["metadata"]["name"]
        .as_str()
        .expect("example has a name")
        .to_string();
    assert_ok(
        &cp.kubectl_stdin(["apply", "-f", "-"], &bc.to_string()),
        "apply the example BackupConfiguration",
    );
    let get = || -> serde_json::Value {
        let out = cp.kubectl(["get", "bc", &name, "-n", &ns, "-o", "json"]);
        serde_json::from_str(&assert_ok(&out, "kubectl get bc")).expect("JSON")
    };
    let before = get();

    let patch = serde_json::json!({
        "spec": {"schedule": "0 0 * * *", "paused": true},
        "status": {"observedGeneration": 42},
    });
    let out = cp.kubectl([
        "patch",
        "bc",
        &name,
        "-n",
        &ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
    assert_ok(&out, "kubectl patch --subresource=status");

    let after = get();
    assert_eq!(
        after["status"]["observedGeneration"], 42,
        "status was patched"
    );
    assert_eq!(
        after["spec"], before["spec"],
        "spec changed through the status subresource"
    );
    assert_eq!(
        after["metadata"]["generation"],
        before["metadata"]["generation"]
    );
}
