//! A real S3-compatible server for tests: MinIO (built from the Go module proxy by
//! `cargo xtask search-testbed`, version `MINIO_VERSION` of `testbed/search-versions.env`) on a free
//! loopback port, with its data in a temp dir and known credentials.
//!
//! ```no_run
//! # fn example() -> anyhow::Result<()> {
//! use cairn_tests::s3::S3Server;
//! let s3 = S3Server::start()?;
//! s3.create_bucket("backups")?;
//! let endpoint = s3.endpoint(); // http://127.0.0.1:PORT
//! let restic_repo = s3.restic_repository("backups"); // s3:http://127.0.0.1:PORT/backups
//! let env = s3.env(); // AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION
//! # let _ = (endpoint, restic_repo, env); Ok(()) }
//! ```
//!
//! With [`S3Options::tls`] the server speaks HTTPS with a certificate of a throwaway CA
//! ([`S3Server::ca_pem`]).

use crate::binaries::testbed_cache;
use crate::opensearch::{
    http_request, not_built, owned_temp_dir, search_pinned, sweep_stale_dirs, tls_client_config,
};
use crate::pki::CertificateAuthority;
use crate::process::{OwnedProcess, free_port};
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The access key of every test server.
pub const ACCESS_KEY: &str = "cairn-test-access";
/// The secret key of every test server.
pub const SECRET_KEY: &str = "cairn-test-secret-key";
/// The region the server and the clients use.
pub const REGION: &str = "us-east-1";

const DIR_PREFIX: &str = "cairn-s3-";
const POLL: Duration = Duration::from_millis(50);

/// The MinIO binary built by `cargo xtask search-testbed`.
pub fn minio_binary() -> Result<PathBuf> {
    let version = search_pinned("MINIO_VERSION").unwrap_or("unknown");
    Ok(testbed_cache()?.join(format!("minio-{version}/minio")))
}

/// A self-signed server certificate for `names` (not a CA certificate: TLS clients refuse a CA's
/// as a server's).
fn self_signed_cert(names: &[&str]) -> Result<crate::pki::IssuedCert> {
    let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    let params = rcgen::CertificateParams::new(sans).context("certificate parameters")?;
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let cert = params.self_signed(&key).context("self-signing")?;
    Ok(crate::pki::IssuedCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// How to start the server.
#[derive(Clone, Debug)]
pub struct S3Options {
    /// Serve HTTPS with a certificate for `127.0.0.1` and `localhost` from a throwaway CA.
    pub tls: bool,
    /// With `tls`, a self-signed server certificate instead (no CA: [`S3Server::ca_pem`] is the
    /// certificate itself), as `openssl req -x509` or MinIO's `certgen` make them.
    pub self_signed: bool,
    pub start_timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        Self {
            tls: false,
            self_signed: false,
            start_timeout: Duration::from_secs(60),
        }
    }
}

/// A running MinIO server, killed (and its data removed) on drop.
pub struct S3Server {
    // Fields drop in order: the process, then its directory.
    process: OwnedProcess,
    port: u16,
    ca_pem: Option<String>,
    /// The harness's TLS client settings, with TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    startup_time: Duration,
    dir: TempDir,
}

impl S3Server {
    /// Starts a plain-HTTP server.
    pub fn start() -> Result<Self> {
        Self::start_with(S3Options::default())
    }

    pub fn start_with(options: S3Options) -> Result<Self> {
        crate::init_crypto();
        let started = Instant::now();
        let minio = minio_binary()?;
        if !minio.is_file() {
            return Err(not_built("MinIO", &minio));
        }
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| sweep_stale_dirs(DIR_PREFIX));
        let dir = owned_temp_dir(DIR_PREFIX)?;
        let data = dir.path().join("data");
        let certs = dir.path().join("certs");
        std::fs::create_dir_all(&data).with_context(|| format!("creating {}", data.display()))?;
        std::fs::create_dir_all(&certs).with_context(|| format!("creating {}", certs.display()))?;
        let ca_pem = if options.tls {
            let (serving, trust) = if options.self_signed {
                let cert = self_signed_cert(&["127.0.0.1", "localhost"])?;
                let trust = cert.cert_pem.clone();
                (cert, trust)
            } else {
                let ca = CertificateAuthority::new("cairn-test-s3-ca")?;
                (
                    ca.server_cert("minio", &["127.0.0.1", "localhost"])?,
                    ca.cert_pem(),
                )
            };
            std::fs::write(certs.join("public.crt"), &serving.cert_pem)?;
            std::fs::write(certs.join("private.key"), &serving.key_pem)?;
            Some(trust)
        } else {
            None
        };
        let port = free_port()?;
        // MinIO reads its settings from the environment; the spawner inherits ours, so they are
        // passed with `env` (no process-wide set_var in a multi-threaded test).
        let args: Vec<String> = vec![
            format!("MINIO_ROOT_USER={ACCESS_KEY}"),
            format!("MINIO_ROOT_PASSWORD={SECRET_KEY}"),
            format!("MINIO_REGION={REGION}"),
            "MINIO_BROWSER=off".into(),
            "MINIO_UPDATE=off".into(),
            "MINIO_CI_CD=1".into(),
            minio.display().to_string(),
            "server".into(),
            "--quiet".into(),
            "--address".into(),
            format!("127.0.0.1:{port}"),
            "--certs-dir".into(),
            certs.display().to_string(),
            data.display().to_string(),
        ];
        let process = OwnedProcess::spawn(
            "minio",
            std::path::Path::new("/usr/bin/env"),
            &args,
            &dir.path().join("minio.log"),
        )?;
        let tls = ca_pem.as_deref().map(tls_client_config).transpose()?;
        let mut server = Self {
            process,
            port,
            ca_pem,
            tls,
            startup_time: Duration::ZERO,
            dir,
        };
        server.wait_ready(started + options.start_timeout, options.start_timeout)?;
        server.startup_time = started.elapsed();
        Ok(server)
    }

    /// `http://127.0.0.1:PORT` (or `https://` with TLS).
    pub fn endpoint(&self) -> String {
        let scheme = if self.ca_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn access_key(&self) -> &'static str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &'static str {
        SECRET_KEY
    }

    pub fn region(&self) -> &'static str {
        REGION
    }

    /// The CA certificate (PEM) of the server's certificate, with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The CA certificate written to a file (for `restic --cacert`), with TLS.
    pub fn ca_file(&self) -> Result<Option<PathBuf>> {
        let Some(pem) = &self.ca_pem else {
            return Ok(None);
        };
        let path = self.dir.path().join("ca.crt");
        std::fs::write(&path, pem).with_context(|| format!("writing {}", path.display()))?;
        Ok(Some(path))
    }

    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// restic's name of a repository in `bucket`: `s3:http://127.0.0.1:PORT/bucket`.
    pub fn restic_repository(&self, bucket: &str) -> String {
        format!("s3:{}/{bucket}", self.endpoint())
    }

    /// Runs the host's `restic` (Debian's, `cargo xtask search-testbed` installs it) on
    /// `repository` of this server with `password`, in directory `dir`: its stdout, or an error
    /// with what it said.
    pub fn restic_in(
        &self,
        repository: &str,
        password: &str,
        dir: &std::path::Path,
        args: &[&str],
    ) -> Result<String> {
        let out = std::process::Command::new("restic")
            .args(["-r", repository])
            .args(args)
            .current_dir(dir)
            .envs(self.env())
            .env("RESTIC_PASSWORD", password)
            .env(
                "RESTIC_CACHE_DIR",
                std::env::temp_dir().join("cairn-tests-restic-cache"),
            )
            .output()
            .context("run restic (cargo xtask search-testbed installs it)")?;
        if !out.status.success() {
            bail!(
                "restic {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// [`S3Server::restic_in`] the current directory.
    pub fn restic(&self, repository: &str, password: &str, args: &[&str]) -> Result<String> {
        self.restic_in(repository, password, std::path::Path::new("."), args)
    }

    /// The ids of `repository`'s lock files.
    pub fn restic_locks(&self, repository: &str, password: &str) -> Result<Vec<String>> {
        let out = self.restic(repository, password, &["list", "locks", "--no-lock"])?;
        Ok(out.split_whitespace().map(str::to_string).collect())
    }

    /// `restic backup --stdin` on `repository` (snapshot host `user-laptop`), holding its
    /// shared lock while its input stays open; returned once the lock is there. With
    /// `hostname`, restic runs in a UTS namespace of its own under that host name, the name
    /// its lock records (a pod's, say). Returns the process and its lock's id.
    pub fn restic_holding_a_lock(
        &self,
        repository: &str,
        password: &str,
        hostname: Option<&str>,
    ) -> Result<(std::process::Child, String)> {
        let before = self.restic_locks(repository, password)?;
        let restic = [
            "restic",
            "-r",
            repository,
            "backup",
            "--stdin",
            "--stdin-filename=held",
            "--host=user-laptop",
        ];
        let mut cmd = match hostname {
            None => std::process::Command::new("restic"),
            Some(name) => named_host(name, "restic"),
        };
        let child = cmd
            .args(&restic[1..])
            .envs(self.env())
            .env("RESTIC_PASSWORD", password)
            .env(
                "RESTIC_CACHE_DIR",
                std::env::temp_dir().join("cairn-tests-restic-cache"),
            )
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("run restic")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let locks = self.restic_locks(repository, password)?;
            if let Some(id) = locks.into_iter().find(|l| !before.contains(l)) {
                return Ok((child, id));
            }
            if Instant::now() > deadline {
                bail!("restic took no lock within 60 s");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The environment S3 clients (restic, the agent) read the credentials from.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
        ]
    }

    /// Where MinIO keeps its data (a bucket is a directory in there).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// The server's process id, also its process group's (to freeze it with SIGSTOP).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Kills the server at once (SIGKILL). Idempotent.
    pub fn kill(&self) {
        self.process.stop();
    }

    /// Creates `bucket` (S3 `PutBucket`, signed with the server's credentials).
    pub fn create_bucket(&self, bucket: &str) -> Result<()> {
        let (status, body) = self.signed_request("PUT", &format!("/{bucket}"), b"")?;
        if status != 200 {
            bail!("creating bucket {bucket}: HTTP {status}: {body}");
        }
        Ok(())
    }

    /// The object keys in `bucket` (S3 `ListObjectsV2`, first 1000).
    pub fn list_objects(&self, bucket: &str) -> Result<Vec<String>> {
        let (status, body) = self.signed_request("GET", &format!("/{bucket}?list-type=2"), b"")?;
        if status != 200 {
            bail!("listing bucket {bucket}: HTTP {status}: {body}");
        }
        Ok(body
            .split("<Key>")
            .skip(1)
            .filter_map(|s| s.split_once("</Key>").map(|(key, _)| key.to_string()))
            .collect())
    }

    /// An AWS SigV4-signed request (path-style; the query must be in canonical order). Returns
    /// the status and the body.
    pub fn signed_request(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Result<(u16, String)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?
            .as_secs();
        let headers = sigv4_headers(
            method,
            &format!("127.0.0.1:{}", self.port),
            path_and_query,
            body,
            now,
        );
        let headers: Vec<(&str, String)> = headers.iter().map(|(k, v)| (*k, v.clone())).collect();
        http_request(
            self.port,
            self.tls.as_ref(),
            method,
            path_and_query,
            &headers,
            body,
        )
    }

    fn wait_ready(&self, deadline: Instant, timeout: Duration) -> Result<()> {
        loop {
            if let Some(status) = self.process.exited()? {
                bail!(
                    "minio exited ({status}) while starting; log {}:\n{}",
                    self.process.log_path().display(),
                    self.process.log_tail(40)
                );
            }
            // A signed ListBuckets: `/minio/health/ready` answers 200 before the object layer
            // is initialised (buckets then get 503 XMinioServerNotInitialized).
            if matches!(self.signed_request("GET", "/", b""), Ok((200, _))) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "minio was not ready within {timeout:?}; log {}:\n{}",
                    self.process.log_path().display(),
                    self.process.log_tail(40)
                );
            }
            std::thread::sleep(POLL);
        }
    }
}

/// The headers of an AWS Signature Version 4 request at `unix_time` (`host`, `x-amz-date`,
/// `x-amz-content-sha256`, `authorization`), for this module's credentials and region.
fn sigv4_headers(
    method: &str,
    host: &str,
    path_and_query: &str,
    body: &[u8],
    unix_time: u64,
) -> Vec<(&'static str, String)> {
    use ring::{digest, hmac};
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    let sha256 = |data: &[u8]| hex(digest::digest(&digest::SHA256, data).as_ref());
    let sign = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
            .as_ref()
            .to_vec()
    };
    let (date, amz_date) = amz_dates(unix_time);
    let payload_hash = sha256(body);
    let (path, query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    // `list-type=2` and the like: every parameter needs a value in the canonical query.
    let query: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p.contains('=') {
                p.to_string()
            } else {
                format!("{p}=")
            }
        })
        .collect();
    let signed_headers = "host;x-amz-content-sha256;x-amz-date";
    let canonical_request = format!(
        "{method}\n{path}\n{}\nhost:{host}\nx-amz-content-sha256:{payload_hash}\n\
         x-amz-date:{amz_date}\n\n{signed_headers}\n{payload_hash}",
        query.join("&")
    );
    let scope = format!("{date}/{REGION}/s3/aws4_request");
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256(canonical_request.as_bytes())
    );
    let key = sign(format!("AWS4{SECRET_KEY}").as_bytes(), &date);
    let key = sign(&key, REGION);
    let key = sign(&key, "s3");
    let key = sign(&key, "aws4_request");
    let signature = hex(&sign(&key, &string_to_sign));
    vec![
        ("x-amz-date", amz_date),
        ("x-amz-content-sha256", payload_hash),
        (
            "authorization",
            format!(
                "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/{scope}, SignedHeaders={signed_headers}, \
                 Signature={signature}"
            ),
        ),
    ]
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) of a Unix time, in UTC.
fn amz_dates(unix_time: u64) -> (String, String) {
    let days = (unix_time / 86_400) as i64;
    let secs = unix_time % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let date = format!("{year:04}{month:02}{day:02}");
    let time = format!(
        "{date}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    );
    (date, time)
}

/// `program`, run in a UTS namespace of its own under host name `hostname` (the name a restic
/// lock records; the tests run as root): `sh` sets the name, then becomes `program`, so the
/// child's pid is the program's.
pub fn named_host(hostname: &str, program: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new("unshare");
    cmd.args([
        "--uts",
        "--",
        "sh",
        "-c",
        r#"hostname "$0" && exec "$@""#,
        hostname,
    ]);
    cmd.arg(program);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_utc_civil_dates() {
        assert_eq!(amz_dates(0), ("19700101".into(), "19700101T000000Z".into()));
        // 2024-02-29T12:34:56Z
        assert_eq!(
            amz_dates(1_709_210_096),
            ("20240229".into(), "20240229T123456Z".into())
        );
    }

    #[test]
    fn signature_matches_the_aws_example_shape() {
        let headers = sigv4_headers("PUT", "127.0.0.1:9000", "/bucket", b"", 0);
        let auth = &headers[2].1;
        assert!(auth.starts_with(&format!(
            "AWS4-HMAC-SHA256 Credential={ACCESS_KEY}/19700101/us-east-1/s3/aws4_request, \
             SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature="
        )));
        assert_eq!(
            headers[1].1,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
