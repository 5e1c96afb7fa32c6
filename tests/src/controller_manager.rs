//! kube-controller-manager as a child process of the test, running only the controllers a test
//! names (e.g. `cronjob-controller`: the real CronJob controller creates Jobs on schedule, and
//! the job runner plays the node for them).
//!
//! It uses the control plane's admin kubeconfig (`--use-service-account-credentials=false`), no
//! leader election and no serving port. The binary is the testbed's, built with kube-apiserver
//! from the same Kubernetes module.

use anyhow::{Result, bail};

use crate::binaries::{k8s_version, testbed_cache};
use crate::controlplane::ControlPlane;
use crate::process::OwnedProcess;

/// A running kube-controller-manager, stopped on drop.
pub struct ControllerManager {
    process: OwnedProcess,
    _dir: tempfile::TempDir,
}

impl ControllerManager {
    /// Starts kube-controller-manager against `cp` with `controllers` only (their names as in
    /// `--controllers`).
    pub fn start(cp: &ControlPlane, controllers: &[&str]) -> Result<Self> {
        let binary = testbed_cache()?
            .join(format!("k8s-{}", k8s_version()))
            .join("kube-controller-manager");
        if !binary.is_file() {
            bail!(
                "{} is missing: run `cargo xtask testbed` (it builds kube-controller-manager)",
                binary.display()
            );
        }
        let dir = tempfile::Builder::new().prefix("cairn-kcm-").tempdir()?;
        let args = vec![
            format!("--kubeconfig={}", cp.kubeconfig().display()),
            format!("--controllers={}", controllers.join(",")),
            "--leader-elect=false".to_string(),
            "--secure-port=0".to_string(),
            "--use-service-account-credentials=false".to_string(),
            "--v=2".to_string(),
        ];
        let process = OwnedProcess::spawn(
            "kube-controller-manager",
            &binary,
            &args,
            &dir.path().join("kube-controller-manager.log"),
        )?;
        Ok(Self { process, _dir: dir })
    }

    /// Fails when the process has exited.
    pub fn check_running(&self) -> Result<()> {
        if let Some(status) = self.process.exited()? {
            bail!(
                "kube-controller-manager exited ({status}):\n{}",
                self.process.log_tail(30)
            );
        }
        Ok(())
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}
