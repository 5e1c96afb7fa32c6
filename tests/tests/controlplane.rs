//! The test control plane itself: it starts, serves the pinned version, works with kube-rs and
//! kubectl, and leaves no process, port or file behind, even when the test process is killed.
//!
//! Needs `cargo xtask testbed` to have been run.

use cairn_tests::ControlPlane;
use cairn_tests::binaries;
use cairn_tests::process::process_group_alive;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::Api;
use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn kubectl_version_reports_the_pinned_server_version() {
    let cp = ControlPlane::shared();
    let out = cp.kubectl(["version", "-o", "json"]);
    assert!(
        out.status.success(),
        "kubectl version failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("kubectl version prints JSON");
    let expected = format!("v{}", binaries::k8s_version());
    assert_eq!(version["serverVersion"]["gitVersion"], expected.as_str());
    assert_eq!(version["clientVersion"]["gitVersion"], expected.as_str());
    assert_eq!(version["serverVersion"]["major"], "1");
}

#[tokio::test]
async fn the_kube_client_creates_a_namespace() {
    let cp = ControlPlane::shared();
    let client = cp.client();
    let ns = cp.new_namespace().await.expect("new namespace");
    let got = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .expect("the namespace exists");
    assert_eq!(got.metadata.name.as_deref(), Some(ns.as_str()));
    Api::<ServiceAccount>::namespaced(client, &ns)
        .get("default")
        .await
        .expect("the namespace has its default ServiceAccount");

    // kubectl sees it too, through the same kubeconfig.
    let out = cp.kubectl(["get", "namespace", &ns, "-o", "name"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("namespace/{ns}")
    );
}

#[tokio::test]
async fn namespaces_are_distinct_and_rbac_is_enforced() {
    let cp = ControlPlane::shared();
    let a = cp.new_namespace().await.expect("namespace a");
    let b = cp.new_namespace().await.expect("namespace b");
    assert_ne!(a, b);
    // RBAC is on: an unknown user may not list namespaces, the admin may.
    let out = cp.kubectl(["auth", "can-i", "list", "namespaces", "--as=nobody"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "no");
    let out = cp.kubectl(["auth", "can-i", "list", "namespaces"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
}

#[tokio::test]
async fn apply_crds_handles_an_empty_directory() {
    let cp = ControlPlane::shared();
    let empty = tempfile::tempdir().expect("temp dir");
    let names = cp.apply_crds(empty.path()).await.expect("apply nothing");
    assert!(names.is_empty());
}

/// Whether any process's command line mentions `dir` (every argument of ours does).
fn processes_mentioning(dir: &Path) -> Vec<String> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("read /proc").flatten() {
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(&needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

fn assert_nothing_left(pids: &[u32], ports: &[u16], dir: &Path) {
    for pid in pids {
        assert!(
            !process_group_alive(*pid),
            "process group {pid} still alive"
        );
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still exists"
        );
    }
    assert_eq!(processes_mentioning(dir), Vec::<String>::new());
    for port in ports {
        assert!(
            TcpStream::connect(("127.0.0.1", *port)).is_err(),
            "something still listens on port {port}"
        );
        TcpListener::bind(("127.0.0.1", *port))
            .unwrap_or_else(|e| panic!("port {port} is not free: {e}"));
    }
    assert!(!dir.exists(), "{} was not removed", dir.display());
}

#[test]
fn dropping_a_control_plane_leaves_nothing_behind() {
    let cp = ControlPlane::start().expect("start a control plane");
    eprintln!("own control plane started in {:?}", cp.startup_time());
    let pids = cp.pids();
    let ports = cp.ports();
    let dir = cp.dir().to_path_buf();
    for pid in &pids {
        assert!(
            process_group_alive(*pid),
            "process group {pid} should be running"
        );
    }
    assert_eq!(
        processes_mentioning(&dir).len(),
        2,
        "etcd and kube-apiserver"
    );
    drop(cp);
    assert_nothing_left(&pids, &ports, &dir);
}

#[test]
fn a_panicking_test_leaves_nothing_behind() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let cp = ControlPlane::start().expect("start a control plane");
        tx.send((cp.pids(), cp.ports(), cp.dir().to_path_buf()))
            .expect("send");
        panic!("deliberate panic with a running control plane");
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let (pids, ports, dir) = rx.recv().expect("the thread reported its control plane");
    assert_nothing_left(&pids, &ports, &dir);
}

/// Not a test by itself: the child process of `a_killed_test_process_leaves_no_process_behind`.
#[test]
#[ignore = "helper, run by a_killed_test_process_leaves_no_process_behind"]
fn helper_start_then_wait_to_be_killed() {
    if std::env::var_os("CAIRN_TESTS_HELPER").is_none() {
        return;
    }
    let cp = ControlPlane::shared();
    let pids: Vec<String> = cp.pids().iter().map(u32::to_string).collect();
    println!("PIDS {} DIR {}", pids.join(","), cp.dir().display());
    // Block until the parent kills us (stdin stays open until then).
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn a_killed_test_process_leaves_no_process_behind() {
    let exe = std::env::current_exe().expect("current test binary");
    let mut child = Command::new(exe)
        .args([
            "--ignored",
            "--exact",
            "helper_start_then_wait_to_be_killed",
            "--nocapture",
        ])
        .env("CAIRN_TESTS_HELPER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the helper test process");
    let stdout = child.stdout.take().expect("stdout");
    let mut pids: Vec<u32> = Vec::new();
    let mut dir = PathBuf::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("helper output");
        if let Some(rest) = line.strip_prefix("PIDS ") {
            let (list, path) = rest.split_once(" DIR ").expect("PIDS <pids> DIR <dir>");
            pids = list.split(',').map(|p| p.parse().expect("pid")).collect();
            dir = PathBuf::from(path);
            break;
        }
    }
    assert_eq!(pids.len(), 2, "the helper reported etcd and kube-apiserver");
    for pid in &pids {
        assert!(process_group_alive(*pid), "{pid} should be running");
    }
    // SIGKILL: no unwinding, no atexit, only the kernel's PR_SET_PDEATHSIG.
    child.kill().expect("kill the helper");
    child.wait().expect("reap the helper");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
    {
        assert!(
            Instant::now() < deadline,
            "etcd/kube-apiserver {pids:?} outlived the killed test process"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(processes_mentioning(&dir), Vec::<String>::new());
    // Files cannot die with a process; the next control plane start sweeps them, and so do we.
    match std::fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("cannot remove the killed helper's {}: {e}", dir.display())
        }
        _ => {}
    }
}
