//! `cairn-migrate` on the Stash manifests of `manifests/examples/stash/` (the shapes of Stash's
//! documentation), and what it writes applied through the real API server with cairn's webhook
//! and controller: no error, the warnings a Stash user must read, the configuration Ready, and a
//! second apply `unchanged`.
//!
//! Its own test binary, so its own control plane.

use std::process::{Command, Stdio};
use std::time::Duration;

use cairn_api::BackupConfiguration;
use cairn_tests::system::cairn_system;
use cairn_tests::webhook::workspace_binary;
use cairn_tests::{ControlPlane, repo_root, wait_for};
use kube::Api;

/// `cairn-migrate` of every example: (stdout, stderr).
fn migrate_examples() -> (String, String) {
    let dir = repo_root().join("manifests/examples/stash");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the examples")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let out = Command::new(workspace_binary("cairn-migrate").expect("cairn-migrate"))
        .args(&files)
        .stdin(Stdio::null())
        .output()
        .expect("runs");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    assert!(out.status.success(), "{}", text(&out.stderr));
    (text(&out.stdout), text(&out.stderr))
}

#[tokio::test]
async fn stash_manifests_migrate_apply_and_reapply_unchanged() {
    let (yaml, report) = migrate_examples();
    eprintln!("{report}");
    for expected in [
        "apiVersion stash.appscode.com/v1beta1 → cairn.dev/v1alpha1",
        "runAsUser: 0 removed",
        "spec.task.params args",
        "target StatefulSet",
        "# admission would refuse: 0",
    ] {
        assert!(report.contains(expected), "no {expected:?} in:\n{report}");
    }
    // Its exec hook is kept: admission asks whether whoever applies it may exec.
    assert!(!report.contains("spec.hooks"), "{report}");
    assert!(yaml.contains("containerName: elasticsearch"), "{yaml}");

    let cp = ControlPlane::shared();
    let (webhook, _controller) = cairn_system(cp, "migrate").await;
    let ns = cp.new_namespace().await.expect("ns");
    let yaml = yaml.replace("namespace: demo", &format!("namespace: {ns}"));
    let first = cp.kubectl_stdin(["apply", "-f", "-"], &yaml);
    let (out, err) = (
        String::from_utf8_lossy(&first.stdout),
        String::from_utf8_lossy(&first.stderr),
    );
    assert!(
        first.status.success(),
        "{out}\n{err}\nwebhook:\n{}",
        webhook.log_tail(20)
    );
    assert_eq!(out.matches("created").count(), 5, "{out}");
    for warning in [
        "Stash's versioned Task name",
        "spec.rules: is deprecated",
        "TLS certificate will not be verified",
    ] {
        assert!(err.contains(warning), "no {warning:?} among:\n{err}");
    }

    let configs: Api<BackupConfiguration> = Api::namespaced(cp.client(), &ns);
    wait_for(
        Duration::from_secs(30),
        "the configuration Ready",
        || async {
            let c = configs
                .get_opt("sample-elasticsearch-backup")
                .await
                .ok()??;
            (format!("{:?}", c.status?.phase?) == "Ready").then_some(())
        },
    )
    .await;

    let again = cp.kubectl_stdin(["apply", "-f", "-"], &yaml);
    let out = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{out}");
    // cairn's objects (a Secret with `stringData` always reads `configured`: kubectl's own
    // diff, as for any Secret written so).
    let cairn: Vec<&str> = out.lines().filter(|l| l.contains(".cairn.dev/")).collect();
    assert_eq!(cairn.len(), 3, "{out}");
    assert!(
        cairn.iter().all(|l| l.ends_with(" unchanged")),
        "drift on re-apply:\n{out}"
    );
}
