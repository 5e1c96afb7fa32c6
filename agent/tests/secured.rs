//! The agent against a secured OpenSearch (HTTPS with a throwaway CA, basic auth): the CA of the
//! AppBinding (`CAIRN_TARGET_CA_CERT`), a wrong CA, `--insecure-skip-tls-verify`, the
//! credentials Secret's keys (`username`/`password` and the `ADMIN_*` fallback), and that the
//! password never shows in what the agent prints or leaves behind.

mod common;

use std::path::Path;

use anyhow::{Result, ensure};
use cairn_api::result::AgentResult;
use cairn_tests::opensearch::{OpenSearch, Options};
use cairn_tests::pki::CertificateAuthority;
use common::{Run, Search, agent, set_flag};

fn credentials(dir: &Path, user_key: &str, pass_key: &str, user: &str, pass: &str) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(user_key), user)?;
    // As a Secret volume holds it: often with a trailing newline.
    std::fs::write(dir.join(pass_key), format!("{pass}\n"))?;
    Ok(())
}

/// Nothing the agent printed or wrote holds `secret`.
fn no_leak(run: &Run, secret: &str, what: &str) {
    assert!(
        !run.stdout().contains(secret),
        "{what}: stdout has the password"
    );
    assert!(
        !run.stderr().contains(secret),
        "{what}: stderr has the password"
    );
    let result = run
        .result
        .as_ref()
        .map(|r| r.to_termination_message())
        .unwrap_or_default();
    assert!(
        !result.contains(secret),
        "{what}: the result has the password"
    );
}

fn snapshot_files(repo: &Path) -> usize {
    std::fs::read_dir(repo.join("snapshots")).map_or(0, |d| d.count())
}

#[test]
fn tls_and_basic_auth_target() -> Result<()> {
    let node = OpenSearch::start_with(Options::secured())?;
    let os = Search::of(&node)?;
    assert!(os.url.starts_with("https://"), "{}", os.url);
    os.index_with_docs("secure-docs", 300)?;
    let (user, password) = node.basic_auth().unwrap_or_default();
    let (user, password) = (user.to_string(), password.to_string());
    let ca = node.ca_pem().unwrap_or_default().to_string();
    let tmp = tempfile::tempdir()?;
    let creds = tmp.path().join("creds");
    credentials(&creds, "username", "password", &user, &password)?;
    let repo_dir = tmp.path().join("repo");
    let repo = format!("local:{}", repo_dir.display());

    let mut backup = common::backup_args(&repo, &os.url, "secure-docs");
    set_flag(&mut backup, "credentials-dir", &creds.display().to_string());
    let with_ca = vec![("CAIRN_TARGET_CA_CERT", ca.clone())];

    // A CA that did not issue the server's certificate: refused at once, nothing written.
    let other_ca = CertificateAuthority::new("some-other-ca")?.cert_pem();
    let wrong = agent(
        &backup,
        &[("CAIRN_TARGET_CA_CERT", other_ca.clone())],
        tmp.path(),
    )?;
    assert!(
        !wrong.ok(),
        "a backup trusted a CA that did not sign the server"
    );
    let (phase, reason) = wrong.failure()?;
    assert_eq!(phase, "connect", "{reason}");
    assert!(
        reason.contains("certificate verification") && reason.contains("UnknownIssuer"),
        "{reason}"
    );
    assert_eq!(
        snapshot_files(&repo_dir),
        0,
        "a failed backup wrote a snapshot"
    );
    no_leak(&wrong, &password, "wrong CA");
    // No CA at all: the public roots do not know the throwaway CA either.
    let no_ca = agent(&backup, &[], tmp.path())?;
    assert_eq!(no_ca.failure()?.0, "connect");

    // The right CA and the credentials: backup and restore.
    let b = agent(&backup, &with_ca, tmp.path())?;
    ensure!(b.ok(), "backup: {}", b.stderr());
    let Some(AgentResult::Backup(res)) = &b.result else {
        anyhow::bail!("no backup result: {}", b.stderr());
    };
    assert_eq!(res.documents, 300);
    no_leak(&b, &password, "backup");
    let mut restore = vec![
        "restore".to_string(),
        format!("--repository={repo}"),
        format!("--url={}", os.url),
        format!("--credentials-dir={}", creds.display()),
        "--include=secure-docs".into(),
        "--rename-suffix=-restored".into(),
    ];
    let r = agent(&restore, &with_ca, tmp.path())?;
    ensure!(r.ok(), "restore: {}", r.stderr());
    assert_eq!(os.count("secure-docs-restored")?, 300);
    no_leak(&r, &password, "restore");

    // Verification off: works, and says so.
    let mut insecure = backup.clone();
    set_flag(&mut insecure, "insecure-skip-tls-verify", "true");
    let i = agent(&insecure, &[], tmp.path())?;
    ensure!(i.ok(), "insecure backup: {}", i.stderr());
    assert!(
        i.stderr().contains("WARN") && i.stderr().contains("NOT verified"),
        "no warning: {}",
        i.stderr()
    );
    no_leak(&i, &password, "insecure backup");

    // The Secret's ADMIN_USERNAME/ADMIN_PASSWORD keys; debug logs still hold no password.
    let admin = tmp.path().join("admin-creds");
    credentials(&admin, "ADMIN_USERNAME", "ADMIN_PASSWORD", &user, &password)?;
    let mut via_admin = backup.clone();
    set_flag(
        &mut via_admin,
        "credentials-dir",
        &admin.display().to_string(),
    );
    let mut debug_env = with_ca.clone();
    debug_env.push(("CAIRN_LOG", "debug".into()));
    let a = agent(&via_admin, &debug_env, tmp.path())?;
    ensure!(a.ok(), "backup with ADMIN_* keys: {}", a.stderr());
    no_leak(&a, &password, "ADMIN_* backup with debug logs");
    restore.retain(|f| !f.starts_with("--rename-suffix="));
    restore.push("--rename-suffix=-admin".into());
    set_flag(
        &mut restore,
        "credentials-dir",
        &admin.display().to_string(),
    );
    let r = agent(&restore, &with_ca, tmp.path())?;
    ensure!(r.ok(), "restore with ADMIN_* keys: {}", r.stderr());
    assert_eq!(os.count("secure-docs-admin")?, 300);

    // A wrong password: refused at once, and the wrong password is not shown either.
    let bad = tmp.path().join("bad-creds");
    let wrong_password = "not-the-password-7731";
    credentials(&bad, "username", "password", &user, wrong_password)?;
    let mut bad_args = backup.clone();
    set_flag(&mut bad_args, "credentials-dir", &bad.display().to_string());
    let denied = agent(&bad_args, &with_ca, tmp.path())?;
    let (phase, reason) = denied.failure()?;
    assert_eq!(phase, "connect", "{reason}");
    assert!(reason.contains("authentication failed"), "{reason}");
    no_leak(&denied, wrong_password, "wrong password");
    no_leak(&denied, &password, "wrong password");
    Ok(())
}
