//! `cairn-controller` as a child process of the test, against the test control plane, with its
//! leader Lease in a namespace of its own.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::controlplane::ControlPlane;
use crate::process::{OwnedProcess, free_port, with_fresh_ports};
use crate::webhook::workspace_binary;

/// A running controller.
pub struct Controller {
    process: OwnedProcess,
    admin_port: u16,
    _dir: tempfile::TempDir,
}

/// The agent image tests without a node name (nothing pulls it).
pub const TEST_AGENT_IMAGE: &str = "cairn-agent:test";

impl Controller {
    /// Starts a controller named `identity` using the Lease `cairn-controller` in `lease_ns`
    /// (which must exist), with a short lease so failover tests run quickly.
    pub fn start(
        cp: &ControlPlane,
        lease_ns: &str,
        identity: &str,
        lease_seconds: u64,
    ) -> Result<Self> {
        Self::start_with_image(cp, lease_ns, identity, lease_seconds, TEST_AGENT_IMAGE)
    }

    /// [`Controller::start`] offering `agent_image` as `${AGENT_IMAGE}` (e.g. the image imported
    /// into the test node, [`crate::image::CAIRN_IMAGE`]).
    pub fn start_with_image(
        cp: &ControlPlane,
        lease_ns: &str,
        identity: &str,
        lease_seconds: u64,
        agent_image: &str,
    ) -> Result<Self> {
        Self::start_with(cp, lease_ns, identity, lease_seconds, agent_image, &[])
    }

    /// [`Controller::start_with_image`] with `extra` flags after the harness' own (e.g.
    /// `--pending-timeout=20s`).
    pub fn start_with(
        cp: &ControlPlane,
        lease_ns: &str,
        identity: &str,
        lease_seconds: u64,
        agent_image: &str,
        extra: &[&str],
    ) -> Result<Self> {
        with_fresh_ports(|| {
            Self::start_once(cp, lease_ns, identity, lease_seconds, agent_image, extra)
        })
    }

    fn start_once(
        cp: &ControlPlane,
        lease_ns: &str,
        identity: &str,
        lease_seconds: u64,
        agent_image: &str,
        extra: &[&str],
    ) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("cairn-controller-")
            .tempdir()
            .context("temp dir")?;
        let admin_port = free_port()?;
        let mut args = vec![
            format!("--admin-listen=127.0.0.1:{admin_port}"),
            format!("--kubeconfig={}", cp.kubeconfig().display()),
            format!("--lease-namespace={lease_ns}"),
            format!("--identity={identity}"),
            format!("--lease-duration-seconds={lease_seconds}"),
            format!("--agent-image={agent_image}"),
        ];
        args.extend(extra.iter().map(|f| f.to_string()));
        let process = OwnedProcess::spawn(
            &format!("cairn-controller {identity}"),
            &workspace_binary("cairn-controller")?,
            &args,
            &dir.path().join("controller.log"),
        )?;
        let c = Self {
            process,
            admin_port,
            _dir: dir,
        };
        c.wait_admin(Duration::from_secs(30))?;
        Ok(c)
    }

    fn wait_admin(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.process.exited()? {
                bail!(
                    "cairn-controller exited ({status}):\n{}",
                    self.process.log_tail(30)
                );
            }
            if self.get("/livez").is_ok() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "cairn-controller admin port never answered:\n{}",
            self.process.log_tail(30)
        )
    }

    /// A GET on the admin port: the body.
    pub fn get(&self, path: &str) -> Result<String> {
        admin_get(self.admin_port, path).map(|(_, body)| body)
    }

    /// The status code of a GET on the admin port (`/livez`, `/readyz`: 200 or 503).
    pub fn status(&self, path: &str) -> Result<u16> {
        admin_get(self.admin_port, path).map(|(code, _)| code)
    }

    /// Whether the process has exited.
    pub fn exited(&self) -> bool {
        !matches!(self.process.exited(), Ok(None))
    }

    /// Whether this instance holds the lease.
    pub fn is_leader(&self) -> bool {
        self.get("/leader").is_ok_and(|b| b.trim() == "leader")
    }

    /// Waits until this instance leads.
    pub fn wait_leader(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.is_leader() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "not leader after {timeout:?}:\n{}",
            self.process.log_tail(30)
        )
    }

    /// The metrics text.
    pub fn metrics(&self) -> Result<String> {
        self.get("/metrics")
    }

    /// Kills the process at once (a crash: the lease is not released).
    pub fn kill(&self) {
        self.process.stop();
    }

    /// Sends SIGTERM and waits for a clean exit (the lease is released).
    pub fn terminate(&self, timeout: Duration) -> Result<()> {
        // SAFETY: plain syscall on our own child's pid.
        unsafe {
            libc::kill(self.process.pid() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.process.exited()?.is_some() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!(
            "cairn-controller did not exit after SIGTERM:\n{}",
            self.process.log_tail(30)
        )
    }

    /// The process id (for resource measurements).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The controller's log file (removed with the controller).
    pub fn log_path(&self) -> &std::path::Path {
        self.process.log_path()
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.process.log_tail(lines)
    }
}

/// A plain-HTTP GET on `127.0.0.1:port` (an admin server): (status code, body).
pub fn admin_get(port: u16, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    stream.read_to_string(&mut text)?;
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Ok((code, body))
}
