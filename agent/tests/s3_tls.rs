//! S3 over HTTPS with a self-signed certificate (MinIO's): refused with a message saying what
//! fixes it, then `insecureTLS` (`--insecure-tls=true`) for a backup and restore round trip that
//! the standard `restic` reads with its own `--insecure-tls`, and the certificate in the
//! repository Secret's `CA_CERT_DATA` without it. (A certificate of a CA: `tests/tests/s3.rs`
//! with restic; the agent trusts a CA's the same way.)
//! Against the shared OpenSearch node, MinIO and `restic` (`cargo xtask search-testbed`).

mod common;

use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use cairn_api::result::AgentResult;
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::{S3Options, S3Server};
use common::{Search, agent, backup_args, restic_ok, restore_args, set_flag};

#[test]
fn s3_over_https_with_insecure_tls_or_its_ca() -> Result<()> {
    let os = Search::of(OpenSearch::shared())?;
    os.index_with_docs("tls-insecure-docs", 50)?;
    let s3 = S3Server::start_with(S3Options {
        tls: true,
        self_signed: true,
        ..S3Options::default()
    })?;
    s3.create_bucket("secure")?;
    let tmp = tempfile::tempdir()?;
    let repo = format!("{}/r", s3.restic_repository("secure"));
    assert!(repo.starts_with("s3:https://"), "{repo}");
    let mut args = backup_args(&repo, &os.url, "tls-insecure-docs");

    // Neither: refused quickly, saying what is wrong and what fixes it, without the secret.
    let started = Instant::now();
    let refused = agent(&args, &s3.env(), tmp.path())?;
    assert!(!refused.ok(), "a backup to an unknown CA succeeded");
    let (phase, reason) = refused.failure()?;
    assert_eq!(phase, "repository", "{reason}");
    for word in ["certificate", "CA_CERT_DATA", "insecureTLS"] {
        assert!(
            reason.contains(word),
            "the reason does not say {word}: {reason}"
        );
    }
    assert!(!reason.contains(s3.secret_key()), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(90));
    assert!(s3.list_objects("secure")?.is_empty(), "written anyway");

    // insecureTLS: backup, then restore, both over the unverified connection.
    set_flag(&mut args, "insecure-tls", "true");
    let backup = agent(&args, &s3.env(), tmp.path())?;
    ensure!(backup.ok(), "backup with insecureTLS: {}", backup.stderr());
    let Some(AgentResult::Backup(b)) = &backup.result else {
        bail!("no backup result: {}", backup.stderr());
    };
    assert_eq!(b.documents, 50);
    let mut restore = restore_args(&repo, &os.url);
    set_flag(&mut restore, "insecure-tls", "true");
    let restore = agent(&restore, &s3.env(), tmp.path())?;
    ensure!(
        restore.ok(),
        "restore with insecureTLS: {}",
        restore.stderr()
    );
    assert_eq!(os.count("r-tls-insecure-docs")?, 50);
    // The standard restic reads it, with its own switch.
    let snaps = restic_ok(&repo, &["--insecure-tls", "snapshots", "--json"], &s3.env())?;
    let snaps: serde_json::Value = serde_json::from_str(&snaps)?;
    assert_eq!(snaps.as_array().map(Vec::len), Some(1), "{snaps}");

    // The certificate in CA_CERT_DATA: verified, without insecureTLS.
    set_flag(&mut args, "insecure-tls", "false");
    let mut env = s3.env();
    env.push(("CA_CERT_DATA", s3.ca_pem().unwrap_or_default().to_string()));
    let ok = agent(&args, &env, tmp.path())?;
    ensure!(ok.ok(), "backup with CA_CERT_DATA: {}", ok.stderr());
    let ca_file = s3.ca_file()?.unwrap_or_default();
    let snaps = restic_ok(
        &repo,
        &[
            "--cacert",
            &ca_file.display().to_string(),
            "snapshots",
            "--json",
        ],
        &s3.env(),
    )?;
    let snaps: serde_json::Value = serde_json::from_str(&snaps)?;
    assert_eq!(snaps.as_array().map(Vec::len), Some(2), "{snaps}");
    Ok(())
}
