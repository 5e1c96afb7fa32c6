//! The `cairn-certs` binary without a cluster: `generate`, `help` and argument errors.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::SystemTime;

use cairn_certs::{cert_info, verify_serving_cert};

fn cairn_certs(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-certs"))
        .args(args)
        .output()
        .expect("run cairn-certs")
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn mode(dir: &Path, name: &str) -> u32 {
    fs::metadata(dir.join(name))
        .expect("metadata")
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn generate_writes_a_verifiable_certificate_and_a_private_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("certs"); // created by the command
    let dir_arg = dir.to_str().expect("utf-8 path");
    let out = cairn_certs(&[
        "generate",
        "--dns",
        "localhost",
        "--dns=cairn-webhook.cairn-system.svc",
        "--ip",
        "127.0.0.1",
        "--out-dir",
        dir_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    assert_eq!(mode(&dir, "tls.key"), 0o600);
    assert_eq!(mode(&dir, "tls.crt"), 0o644);
    assert_eq!(mode(&dir, "ca.crt"), 0o644);
    assert!(read(&dir, "tls.key").contains("PRIVATE KEY"));

    let cert = read(&dir, "tls.crt");
    let ca = read(&dir, "ca.crt");
    let info = cert_info(&cert).expect("tls.crt parses");
    assert_eq!(
        info.dns_names,
        ["localhost", "cairn-webhook.cairn-system.svc"]
    );
    assert_eq!(
        info.ip_addresses,
        ["127.0.0.1".parse::<std::net::IpAddr>().expect("ip")]
    );
    let now = SystemTime::now();
    for name in ["127.0.0.1", "localhost", "cairn-webhook.cairn-system.svc"] {
        verify_serving_cert(&cert, &ca, name, now).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    assert!(verify_serving_cert(&cert, &ca, "127.0.0.2", now).is_err());

    // Running again replaces everything, and the key stays private.
    fs::set_permissions(dir.join("tls.key"), fs::Permissions::from_mode(0o644)).expect("chmod");
    let again = cairn_certs(&["generate", "--ip", "127.0.0.1", "--out-dir", dir_arg]);
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(mode(&dir, "tls.key"), 0o600);
    assert_ne!(read(&dir, "tls.crt"), cert);
    assert_ne!(read(&dir, "ca.crt"), ca);
    let leftovers: Vec<_> = fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn generate_refuses_bad_input() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().to_str().expect("utf-8 path");
    for args in [
        vec!["generate", "--out-dir", dir],                      // no name
        vec!["generate", "--dns", "localhost"],                  // no --out-dir
        vec!["generate", "--ip", "not-an-ip", "--out-dir", dir], // bad IP
        vec!["generate", "--dns", "a b", "--out-dir", dir],      // bad DNS name
        vec![
            "generate",
            "--dns",
            "x",
            "--out-dir",
            dir,
            "--validity-days",
            "0",
        ],
        vec!["generate", "--bogus", "x"],
        vec!["frobnicate"],
        vec![],
    ] {
        let out = cairn_certs(&args);
        assert!(!out.status.success(), "{args:?} should fail");
        assert!(!out.stderr.is_empty(), "{args:?} should say why");
    }
    assert!(
        fs::read_dir(dir).expect("list").next().is_none(),
        "nothing written"
    );
}

#[test]
fn help_prints_usage() {
    let out = cairn_certs(&["help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("cairn-certs bootstrap"));
    assert!(text.contains("cairn-certs generate"));
}
