//! The S3 side of the search testbed: MinIO from `cargo xtask search-testbed`, used by the standard
//! `restic` program (Debian's package) as a repository backend.

use anyhow::{Context, Result, ensure};
use cairn_tests::s3::{S3Options, S3Server};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Runs `restic args` against `repo` on `s3`, returning stdout.
fn restic(s3: &S3Server, repo: &str, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("restic");
    cmd.arg("-r").arg(repo).args(args);
    if let Some(ca) = s3.ca_file()? {
        cmd.arg("--cacert").arg(ca);
    }
    cmd.envs(s3.env())
        .env("RESTIC_PASSWORD", "cairn-test-password")
        .env(
            "RESTIC_CACHE_DIR",
            std::env::temp_dir().join("cairn-restic-cache"),
        )
        .env_remove("RESTIC_REPOSITORY");
    let out = cmd.output().with_context(|| {
        "running `restic`: it is not installed? Run `cargo xtask search-testbed` (it installs \
         Debian's restic package)"
    })?;
    ensure!(
        out.status.success(),
        "restic {}: {}\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn backup_and_list(s3: &S3Server, bucket: &str) -> Result<()> {
    let repo = s3.restic_repository(bucket);
    restic(s3, &repo, &["init"])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("hello.txt");
    std::fs::write(&file, "hello from cairn\n")?;
    restic(
        s3,
        &repo,
        &[
            "backup",
            "--host",
            "cairn-test",
            &file.display().to_string(),
        ],
    )?;
    let snapshots: Value = serde_json::from_str(&restic(s3, &repo, &["snapshots", "--json"])?)?;
    let snapshots = snapshots
        .as_array()
        .context("snapshots --json is not a list")?;
    assert_eq!(snapshots.len(), 1, "{snapshots:?}");
    assert_eq!(snapshots[0]["hostname"], "cairn-test");
    assert_eq!(
        snapshots[0]["paths"][0].as_str().map(Path::new),
        Some(file.as_path())
    );
    restic(s3, &repo, &["check"])?;
    let dumped = restic(s3, &repo, &["dump", "latest", &file.display().to_string()])?;
    assert_eq!(dumped, "hello from cairn\n");
    // The repository is in the bucket.
    let keys = s3.list_objects(bucket)?;
    assert!(keys.iter().any(|k| k == "config"), "{keys:?}");
    assert!(keys.iter().any(|k| k.starts_with("snapshots/")), "{keys:?}");
    Ok(())
}

#[test]
fn restic_backs_up_to_minio() -> Result<()> {
    let s3 = S3Server::start()?;
    eprintln!(
        "MinIO ready on {} in {:.1?}",
        s3.endpoint(),
        s3.startup_time()
    );
    s3.create_bucket("cairn-restic")?;
    backup_and_list(&s3, "cairn-restic")
}

#[test]
fn restic_backs_up_to_minio_over_https() -> Result<()> {
    let s3 = S3Server::start_with(S3Options {
        tls: true,
        ..S3Options::default()
    })?;
    assert!(s3.endpoint().starts_with("https://127.0.0.1:"));
    s3.create_bucket("cairn-restic-tls")?;
    backup_and_list(&s3, "cairn-restic-tls")
}
