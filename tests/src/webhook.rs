//! `cairn-webhook` as a child process of the test, serving on `https://127.0.0.1:<port>` with a
//! generated CA, registered with the control plane through the shipped webhook configurations
//! (only `clientConfig` changes: `url` + `caBundle` instead of the in-cluster Service).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::controlplane::{ControlPlane, repo_root};
use crate::pki::CertificateAuthority;
use crate::process::{OwnedProcess, free_port, with_fresh_ports};

/// A running webhook and the files it serves from.
pub struct Webhook {
    process: OwnedProcess,
    port: u16,
    admin_port: u16,
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
}

/// A binary of this workspace, in the Cargo target directory of the running executable
/// (beside it, for a binary; one level up from `deps/`, for a test).
pub fn workspace_binary(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running executable")?;
    let beside = exe.parent().context("the executable has no directory")?;
    let dir = if beside.ends_with("deps") {
        beside.parent().unwrap_or(beside)
    } else {
        beside
    };
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (`cargo build --workspace --bins`; `cargo xtask test` does)",
            path.display()
        );
    }
    Ok(path)
}

impl Webhook {
    /// Starts the webhook against `cp` and waits until its caches have synced (`/readyz`).
    pub fn start(cp: &ControlPlane) -> Result<Self> {
        Self::start_with(cp, &[])
    }

    /// As [`Self::start`], with `extra` flags after the harness' own (e.g. `--idle-timeout=2s`).
    pub fn start_with(cp: &ControlPlane, extra: &[&str]) -> Result<Self> {
        with_fresh_ports(|| Self::start_once(cp, crate::controller::TEST_AGENT_IMAGE, extra))
    }

    /// [`Webhook::start`] offering `agent_image` as `${AGENT_IMAGE}`.
    pub fn start_with_image(cp: &ControlPlane, agent_image: &str) -> Result<Self> {
        with_fresh_ports(|| Self::start_once(cp, agent_image, &[]))
    }

    fn start_once(cp: &ControlPlane, agent_image: &str, extra: &[&str]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-webhook-")
            .tempdir()
            .context("temp dir")?;
        let ca = CertificateAuthority::new("cairn-webhook-test-ca")?;
        write_serving_cert(&ca, dir.path())?;
        let port = free_port()?;
        let admin_port = free_port()?;
        let mut args = vec![
            format!("--listen=127.0.0.1:{port}"),
            format!("--admin-listen=127.0.0.1:{admin_port}"),
            format!("--tls-cert-file={}", dir.path().join("tls.crt").display()),
            format!("--tls-key-file={}", dir.path().join("tls.key").display()),
            format!("--kubeconfig={}", cp.kubeconfig().display()),
            "--cert-reload-seconds=1".to_string(),
            format!("--agent-image={agent_image}"),
            // The tests' controller runs with the admin kubeconfig.
            format!("--controller-user={}", crate::controlplane::ADMIN_USER),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        let process = OwnedProcess::spawn(
            "cairn-webhook",
            &workspace_binary("cairn-webhook")?,
            &args,
            &dir.path().join("webhook.log"),
        )?;
        let webhook = Self {
            process,
            port,
            admin_port,
            dir,
            ca,
        };
        webhook.wait_ready(Duration::from_secs(60))?;
        Ok(webhook)
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.process.exited()? {
                bail!(
                    "cairn-webhook exited ({status}) before it was ready:\n{}",
                    self.process.log_tail(30)
                );
            }
            if self.admin_get("/readyz").is_ok_and(|(code, _)| code == 200) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "cairn-webhook not ready after {timeout:?}:\n{}",
                    self.process.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A GET on the plain-HTTP admin port: (status code, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String)> {
        crate::controller::admin_get(self.admin_port, path)
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory the webhook serves `tls.crt` and `tls.key` from (and reads `ca.crt` beside
    /// them for its expiry metric): where a Secret volume would be mounted.
    pub fn cert_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The webhook's process id (for `/proc/<pid>/status`).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The CA that signs the serving certificate (the webhook configurations' `caBundle`).
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }

    /// Writes a new serving certificate, from a new CA when `new_ca` is given, the way a
    /// Secret volume update does (new files moved into place).
    pub fn rotate_certificate(&self, new_ca: Option<&CertificateAuthority>) -> Result<()> {
        write_serving_cert(new_ca.unwrap_or(&self.ca), self.dir.path())
    }

    /// Registers the shipped webhook configurations with `url` and `caBundle` pointing here.
    pub fn register(&self, cp: &ControlPlane) -> Result<()> {
        self.register_with_ca(cp, &self.ca.cert_pem())
    }

    /// As [`Self::register`], trusting `ca_pem` (several CAs may be concatenated: rotation).
    pub fn register_with_ca(&self, cp: &ControlPlane, ca_pem: &str) -> Result<()> {
        let path = repo_root().join("manifests/webhook/webhookconfigurations.yaml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        // ByteString serializes as base64, the form `caBundle` takes.
        let bundle = serde_json::to_value(k8s_openapi::ByteString(ca_pem.as_bytes().to_vec()))
            .context("encoding the caBundle")?;
        let mut docs = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let mut v: Value = serde::Deserialize::deserialize(doc).context("webhook YAML")?;
            if v.is_null() {
                continue;
            }
            for hook in v["webhooks"].as_array_mut().into_iter().flatten() {
                let path = hook["clientConfig"]["service"]["path"]
                    .as_str()
                    .unwrap_or("/")
                    .to_string();
                hook["clientConfig"] = serde_json::json!({
                    "url": format!("{}{path}", self.url()),
                    "caBundle": bundle,
                });
            }
            docs.push(serde_yaml::to_string(&v).context("YAML")?);
        }
        let out = cp.kubectl_stdin(["apply", "-f", "-"], &docs.join("---\n"));
        if !out.status.success() {
            bail!(
                "registering the webhooks failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.wait_in_effect(cp, Duration::from_secs(30))
    }

    /// The API server learns of webhook configurations through its own watch: until then objects
    /// are admitted untouched. Waits until a server dry run of a broken Task (cairn's CRDs must
    /// be installed) is denied by our webhook.
    fn wait_in_effect(&self, cp: &ControlPlane, timeout: Duration) -> Result<()> {
        let probe = "apiVersion: cairn.dev/v1alpha1\nkind: Task\nmetadata:\n  name: cairn-registration-probe\nspec:\n  steps: []\n";
        let deadline = Instant::now() + timeout;
        loop {
            let out = cp.kubectl_stdin(["create", "--dry-run=server", "-f", "-"], probe);
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains("admission webhook \"validate.cairn.dev\" denied") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the webhook registration did not take effect within {timeout:?}: a broken Task got {}{stderr}\nwebhook log:\n{}",
                    String::from_utf8_lossy(&out.stdout),
                    self.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn write_serving_cert(ca: &CertificateAuthority, dir: &Path) -> Result<()> {
    let cert = ca.server_cert("cairn-webhook", &["127.0.0.1", "localhost"])?;
    // Written beside and renamed into place, key first: the reloader sees a consistent pair.
    for (name, body) in [("tls.key", &cert.key_pem), ("tls.crt", &cert.cert_pem)] {
        let tmp = dir.join(format!(".{name}.new"));
        std::fs::write(&tmp, body).with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, dir.join(name)).context("moving the certificate into place")?;
    }
    Ok(())
}
