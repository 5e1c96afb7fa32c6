//! A real Kubernetes control plane for tests: etcd and kube-apiserver as child processes.
//!
//! The binaries come from `cargo xtask testbed` (see [`crate::binaries`]). A start generates a CA,
//! a serving certificate for `127.0.0.1`/`localhost`, an admin client certificate in group
//! `system:masters` and a service-account signing key; starts etcd (`--unsafe-no-fsync`, data in a
//! temp dir) and kube-apiserver (RBAC, client-certificate auth) on free loopback ports; writes a
//! kubeconfig; and polls `/readyz` until the server is ready. Everything lives in one temp dir that
//! is removed, and every process killed, when the [`ControlPlane`] is dropped (see
//! [`crate::process`] for the guarantees when the test process dies instead).
//!
//! [`ControlPlane::stop_apiserver`] and [`ControlPlane::start_apiserver`] restart kube-apiserver
//! on the same etcd, port and certificates (a fault clients must live through).
//!
//! Until [`ControlPlane::node`] starts the control plane's node (kubelet, scheduler,
//! controller-manager: see [`crate::node`]), nothing runs Pods or Jobs. Nothing creates the
//! `default` ServiceAccount of a namespace ([`ControlPlane::new_namespace`] does).
//!
//! Tests in one test binary share one control plane through [`ControlPlane::shared`] (starting one
//! costs seconds), each in its own namespace; a test that needs a pristine cluster starts its own
//! with [`ControlPlane::start`].

use crate::binaries::Binaries;
use crate::pki::CertificateAuthority;
use crate::process::{OwnedProcess, free_port};
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde::Deserialize;
use std::future::Future;
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// How often readiness conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// The temp dirs of control planes are named `<temp dir>/cairn-controlplane-XXXXXX`.
const DIR_PREFIX: &str = "cairn-controlplane-";

/// The field manager of everything the harness applies.
pub const FIELD_MANAGER: &str = "cairn-tests";

/// The user of the admin kubeconfig (the controller's, when a test runs it as a process).
pub const ADMIN_USER: &str = "cairn-admin";

/// How to start a control plane.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long etcd and kube-apiserver together may take to become ready.
    pub start_timeout: Duration,
    /// Extra kube-apiserver flags (`--name=value`), e.g. feature gates or admission plugins.
    pub extra_apiserver_args: Vec<String>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            start_timeout: Duration::from_secs(120),
            extra_apiserver_args: Vec::new(),
        }
    }
}

/// The `kubernetes` Service's cluster IP: the first of the service range (in the serving
/// certificate; `Node::serve_kubernetes_service` answers it on the node's bridge).
pub const KUBERNETES_SERVICE_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 0, 0, 1);

/// A running etcd + kube-apiserver pair, stopped (and its files removed) on drop.
pub struct ControlPlane {
    // Fields drop in order: the node, the API server, then etcd, then the directory they use.
    node: OnceLock<Result<crate::node::Node, String>>,
    /// Replaced by [`ControlPlane::start_apiserver`] after a stop.
    apiserver: Mutex<OwnedProcess>,
    /// Its command line, to start it again on the same etcd and port.
    apiserver_args: Vec<String>,
    etcd: OwnedProcess,
    config: kube::Config,
    kubeconfig: PathBuf,
    server: String,
    ca: CertificateAuthority,
    binaries: Binaries,
    ports: Vec<u16>,
    startup_time: Duration,
    namespaces: AtomicUsize,
    dir: TempDir,
}

impl ControlPlane {
    /// Starts a control plane of its own (blocking; callable from sync and async tests).
    pub fn start() -> Result<Self> {
        Self::start_with(Options::default())
    }

    /// Starts a control plane with `options`. Retries with fresh ports if a port was taken
    /// between choosing it and binding it.
    pub fn start_with(options: Options) -> Result<Self> {
        crate::init_crypto();
        let binaries = Binaries::locate()?;
        crate::process::with_fresh_ports(|| Self::start_once(&binaries, &options))
    }

    /// The control plane shared by the tests of this test binary: started on first use, stopped
    /// when the test process exits (an `atexit` hook, and `PR_SET_PDEATHSIG` if it is killed).
    ///
    /// # Panics
    /// If it cannot start, e.g. when `cargo xtask testbed` has not been run (the message says so).
    pub fn shared() -> &'static ControlPlane {
        match SHARED.get_or_init(|| {
            let started = ControlPlane::start().map_err(|e| format!("{e:#}"));
            if started.is_ok() {
                // SAFETY: registers a plain extern "C" function.
                unsafe {
                    libc::atexit(stop_shared);
                }
            }
            started
        }) {
            Ok(cp) => cp,
            Err(e) => panic!("the shared test control plane did not start: {e}"),
        }
    }

    fn start_once(binaries: &Binaries, options: &Options) -> Result<Self> {
        let started = Instant::now();
        let deadline = started + options.start_timeout;
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale_dirs);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .context("creating the control plane's temp dir")?;
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("owner.pid"), std::process::id().to_string())
            .with_context(|| format!("writing {}", path("owner.pid").display()))?;

        // PKI.
        let ca = CertificateAuthority::new("cairn-test-ca")?;
        let serving = ca.server_cert(
            "kube-apiserver",
            &[
                "localhost",
                "127.0.0.1",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                &KUBERNETES_SERVICE_IP.to_string(),
            ],
        )?;
        let admin = ca.client_cert(ADMIN_USER, &["system:masters"])?;
        let (sa_private, sa_public) = crate::pki::service_account_key()?;
        for (name, content) in [
            ("ca.crt", ca.cert_pem()),
            ("apiserver.crt", serving.cert_pem),
            ("apiserver.key", serving.key_pem),
            ("admin.crt", admin.cert_pem),
            ("admin.key", admin.key_pem),
            ("sa.key", sa_private),
            ("sa.pub", sa_public),
        ] {
            std::fs::write(path(name), content)
                .with_context(|| format!("writing {}", path(name).display()))?;
        }

        // etcd.
        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            "--name=default".to_string(),
            format!("--data-dir={}", path("etcd").display()),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=default={peer_url}"),
            "--unsafe-no-fsync".to_string(),
            "--log-level=warn".to_string(),
        ];
        let etcd = OwnedProcess::spawn("etcd", &binaries.etcd, &etcd_args, &path("etcd.log"))?;
        wait_for_port(&etcd, etcd_client, deadline)?;
        let etcd_ready = started.elapsed();

        // kube-apiserver.
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".to_string(),
            "--advertise-address=127.0.0.1".to_string(),
            format!("--secure-port={port}"),
            format!("--cert-dir={}", path("apiserver-certs").display()),
            format!("--tls-cert-file={}", path("apiserver.crt").display()),
            format!("--tls-private-key-file={}", path("apiserver.key").display()),
            format!("--client-ca-file={}", path("ca.crt").display()),
            // Its first address is KUBERNETES_SERVICE_IP.
            "--service-cluster-ip-range=10.0.0.0/24".to_string(),
            // Node: the kubelet of `node()` may read only what its Pods need.
            "--authorization-mode=Node,RBAC".to_string(),
            "--enable-admission-plugins=NodeRestriction".to_string(),
            // For logs and exec, the API server calls the kubelet as admin.
            format!(
                "--kubelet-client-certificate={}",
                path("admin.crt").display()
            ),
            format!("--kubelet-client-key={}", path("admin.key").display()),
            // The node's name resolves nowhere here: reach its kubelet at its InternalIP.
            "--kubelet-preferred-address-types=InternalIP,Hostname".to_string(),
            format!("--service-account-issuer={server}"),
            format!("--service-account-key-file={}", path("sa.pub").display()),
            format!(
                "--service-account-signing-key-file={}",
                path("sa.key").display()
            ),
            "--allow-privileged=true".to_string(),
        ];
        apiserver_args.extend(options.extra_apiserver_args.iter().cloned());
        let apiserver = OwnedProcess::spawn(
            "kube-apiserver",
            &binaries.kube_apiserver,
            &apiserver_args,
            &path("kube-apiserver.log"),
        )?;

        // kubeconfig: file paths, so both kubectl and kube-rs read the same files.
        let kubeconfig = path("kubeconfig");
        let doc = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cairn-test", "cluster": {
                "server": server,
                "certificate-authority": path("ca.crt"),
            }}],
            "users": [{"name": "cairn-admin", "user": {
                "client-certificate": path("admin.crt"),
                "client-key": path("admin.key"),
            }}],
            "contexts": [{"name": "cairn-test", "context": {
                "cluster": "cairn-test", "user": "cairn-admin", "namespace": "default",
            }}],
            "current-context": "cairn-test",
        });
        let yaml = serde_yaml::to_string(&doc).context("serializing the kubeconfig")?;
        std::fs::write(&kubeconfig, yaml)
            .with_context(|| format!("writing {}", kubeconfig.display()))?;
        let parsed = Kubeconfig::read_from(&kubeconfig)
            .with_context(|| format!("reading back {}", kubeconfig.display()))?;
        let config = block_on(async move {
            kube::Config::from_custom_kubeconfig(parsed, &KubeConfigOptions::default()).await
        })?
        .context("loading the kubeconfig")?;

        let ready_config = config.clone();
        block_on(wait_ready(ready_config, &apiserver, &etcd, deadline))?
            .context("waiting for kube-apiserver /readyz")?;
        let startup_time = started.elapsed();
        eprintln!(
            "cairn-tests: control plane ready at {server} in {:.1}s (etcd {:.1}s); kubeconfig {}",
            startup_time.as_secs_f64(),
            etcd_ready.as_secs_f64(),
            kubeconfig.display()
        );

        Ok(Self {
            node: OnceLock::new(),
            apiserver: Mutex::new(apiserver),
            apiserver_args,
            etcd,
            config,
            kubeconfig,
            server,
            ca,
            binaries: binaries.clone(),
            ports: vec![etcd_client, etcd_peer, port],
            startup_time,
            namespaces: AtomicUsize::new(0),
            dir,
        })
    }

    /// The node of this control plane (containerd, kubelet, kube-controller-manager,
    /// kube-scheduler; see [`crate::node`]): started on first use, stopped with the control plane.
    ///
    /// # Panics
    /// If it cannot start (the message says why, e.g. `cargo xtask testbed` has not been run).
    pub fn node(&self) -> &crate::node::Node {
        match self
            .node
            .get_or_init(|| crate::node::Node::start(self).map_err(|e| format!("{e:#}")))
        {
            Ok(node) => node,
            Err(e) => panic!("the test node did not start: {e}"),
        }
    }

    /// A client with admin rights (group `system:masters`).
    ///
    /// # Panics
    /// Outside a Tokio runtime (the client spawns a background task).
    pub fn client(&self) -> Client {
        Client::try_from(self.config.clone())
            .unwrap_or_else(|e| panic!("cannot build a client for {}: {e}", self.server))
    }

    /// The client configuration (e.g. to build clients with other credentials).
    pub fn config(&self) -> &kube::Config {
        &self.config
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.server
    }

    /// The CA the API server trusts for client certificates and serves with; it can issue
    /// certificates for webhooks under test.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The CA certificate as a webhook `clientConfig.caBundle` (the API server trusts webhooks
    /// whose serving certificate comes from [`ControlPlane::ca`]).
    pub fn ca_bundle(&self) -> k8s_openapi::ByteString {
        k8s_openapi::ByteString(self.ca.cert_pem().into_bytes())
    }

    /// The binaries in use (e.g. the matching kubectl).
    pub fn binaries(&self) -> &Binaries {
        &self.binaries
    }

    /// The control plane's private directory (certificates, kubeconfig, logs, etcd data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How long the start took, until `/readyz` said ok.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The process ids (= process group ids) of etcd and kube-apiserver.
    pub fn pids(&self) -> Vec<u32> {
        vec![self.etcd.pid(), self.apiserver().pid()]
    }

    /// The loopback ports in use: etcd client, etcd peer, kube-apiserver.
    pub fn ports(&self) -> Vec<u16> {
        self.ports.clone()
    }

    fn apiserver(&self) -> std::sync::MutexGuard<'_, OwnedProcess> {
        self.apiserver.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Kills kube-apiserver (etcd keeps the cluster's state): clients see connections refused
    /// until [`ControlPlane::start_apiserver`].
    pub fn stop_apiserver(&self) {
        self.apiserver().stop();
    }

    /// Starts kube-apiserver again, on the same etcd, port and certificates, and waits until it
    /// is ready; returns how long that took.
    pub fn start_apiserver(&self) -> Result<Duration> {
        let started = Instant::now();
        let restarts = RESTARTS.fetch_add(1, Ordering::Relaxed);
        let log = self
            .dir
            .path()
            .join(format!("kube-apiserver.{restarts}.log"));
        let process = OwnedProcess::spawn(
            "kube-apiserver",
            &self.binaries.kube_apiserver,
            &self.apiserver_args,
            &log,
        )?;
        let deadline = started + Duration::from_secs(60);
        block_on(wait_ready(
            self.config.clone(),
            &process,
            &self.etcd,
            deadline,
        ))?
        .context("waiting for the restarted kube-apiserver's /readyz")?;
        *self.apiserver() = process;
        Ok(started.elapsed())
    }

    /// The last lines of the kube-apiserver log (for diagnosing a failing test).
    pub fn apiserver_log_tail(&self, lines: usize) -> String {
        self.apiserver().log_tail(lines)
    }

    /// A `kubectl` command (the pinned one) configured for this control plane, with its own
    /// discovery cache. Use it for anything more than [`ControlPlane::kubectl`] offers.
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.kubectl);
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.path().join("kubectl-cache"))
            .stdin(Stdio::null());
        cmd
    }

    /// Runs `kubectl args...` and returns its output (whatever the exit status).
    ///
    /// # Panics
    /// If kubectl cannot be executed at all.
    pub fn kubectl<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.kubectl_command();
        cmd.args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binaries.kubectl.display()))
    }

    /// `kubectl apply` of `objects` as one YAML stream (through the webhook when one is
    /// registered); the error is kubectl's standard error.
    pub fn apply_objects(&self, objects: &[serde_json::Value]) -> Result<(), String> {
        let yaml: Vec<String> = objects
            .iter()
            .map(|o| serde_yaml::to_string(o).expect("a JSON value is YAML"))
            .collect();
        let out = self.kubectl_stdin(["apply", "-f", "-"], &yaml.join("---\n"));
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `kubectl args...` with `stdin` as its standard input (e.g. `apply -f -`).
    ///
    /// # Panics
    /// If kubectl cannot be executed at all.
    pub fn kubectl_stdin<I, S>(&self, args: I, stdin: &str) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let run = || -> std::io::Result<Output> {
            let mut cmd = self.kubectl_command();
            cmd.args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn()?;
            if let Some(mut input) = child.stdin.take() {
                input.write_all(stdin.as_bytes())?;
            }
            child.wait_with_output()
        };
        run().unwrap_or_else(|e| panic!("cannot run {}: {e}", self.binaries.kubectl.display()))
    }

    /// Creates a fresh namespace (`test-<n>-<random>`) with its `default` ServiceAccount (which
    /// kube-controller-manager makes where a node runs, and nothing makes without one).
    pub async fn new_namespace(&self) -> Result<String> {
        self.new_namespace_with_prefix("test").await
    }

    /// Like [`ControlPlane::new_namespace`], named `<prefix>-<n>-<random>`.
    pub async fn new_namespace_with_prefix(&self, prefix: &str) -> Result<String> {
        let n = self.namespaces.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!("{prefix}-{n}-{:05x}", nanos & 0xfffff);
        let client = self.client();
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([("cairn.dev/test-namespace".to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        let account = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("default".to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        // A node's serviceaccount-controller may have made it first.
        match Api::<ServiceAccount>::namespaced(client, &name)
            .create(&PostParams::default(), &account)
            .await
        {
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(name),
            created => created
                .map(|_| name.clone())
                .with_context(|| format!("creating the default ServiceAccount in {name}")),
        }
    }

    /// Applies (server-side) every CustomResourceDefinition in the `*.yaml`/`*.yml` files of `dir`
    /// (any number of files, each with any number of documents) and waits until each one is
    /// `Established`. Returns the CRD names.
    pub async fn apply_crds(&self, dir: impl AsRef<Path>) -> Result<Vec<String>> {
        let dir = dir.as_ref();
        let crds = read_crds(dir)?;
        let api = Api::<CustomResourceDefinition>::all(self.client());
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let mut names = Vec::new();
        for (file, crd) in crds {
            let name = crd
                .metadata
                .name
                .clone()
                .ok_or_else(|| anyhow!("a CRD in {} has no metadata.name", file.display()))?;
            api.patch(&name, &params, &Patch::Apply(&crd))
                .await
                .with_context(|| format!("applying CRD {name} from {}", file.display()))?;
            names.push(name);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        for name in &names {
            loop {
                let crd = api
                    .get(name)
                    .await
                    .with_context(|| format!("reading CRD {name}"))?;
                let conditions = crd
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .cloned()
                    .unwrap_or_default();
                let is_true = |kind: &str| {
                    conditions
                        .iter()
                        .any(|c| c.type_ == kind && c.status == "True")
                };
                if is_true("Established") && is_true("NamesAccepted") {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("CRD {name} is not Established after 60s: {conditions:?}");
                }
                tokio::time::sleep(POLL).await;
            }
        }
        Ok(names)
    }

    /// Stops both processes and removes the directory (what drop does; usable through `&self`).
    fn shutdown(&self) {
        if let Some(Ok(node)) = self.node.get() {
            node.stop();
        }
        self.apiserver().stop();
        self.etcd.stop();
        let _ = std::fs::remove_dir_all(self.dir.path());
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        if let Some(Ok(node)) = self.node.get() {
            node.stop();
        }
        self.apiserver().stop();
        self.etcd.stop();
    }
}

static SHARED: OnceLock<Result<ControlPlane, String>> = OnceLock::new();

/// Numbers the logs of restarted API servers.
static RESTARTS: AtomicUsize = AtomicUsize::new(0);

extern "C" fn stop_shared() {
    if let Some(Ok(cp)) = SHARED.get() {
        cp.shutdown();
    }
}

/// Removes the temp dirs of control planes whose test process died without cleaning up (killed:
/// its etcd and kube-apiserver died with it, but files stay).
fn sweep_stale_dirs() {
    for dir in crate::process::stale_dirs(DIR_PREFIX) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// `manifests/crds` of the repository: cairn's CRDs.
pub fn crds_dir() -> PathBuf {
    repo_root().join("manifests/crds")
}

/// `manifests/appbinding` of the repository: the AppBinding CRD, for clusters without KubeDB.
pub fn appbinding_crd_dir() -> PathBuf {
    repo_root().join("manifests/appbinding")
}

/// Every CRD document of the YAML files in `dir`, sorted by file name.
fn read_crds(dir: &Path) -> Result<Vec<(PathBuf, CustomResourceDefinition)>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| {
            // A kustomization beside the CRDs is for `kubectl apply -k`, not a CRD.
            p.is_file()
                && p.file_name().is_none_or(|n| n != "kustomization.yaml")
                && p.extension()
                    .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    let mut crds = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(doc)
                .with_context(|| format!("parsing {}", file.display()))?;
            if value.is_null() {
                continue;
            }
            let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or("");
            if kind != "CustomResourceDefinition" {
                bail!(
                    "{} holds a {kind:?}, not a CustomResourceDefinition",
                    file.display()
                );
            }
            let crd: CustomResourceDefinition = serde_json::from_value(value)
                .with_context(|| format!("reading the CRD in {}", file.display()))?;
            crds.push((file.clone(), crd));
        }
    }
    Ok(crds)
}

/// Waits until `port` accepts connections, or `process` exits, or the deadline passes.
fn wait_for_port(process: &OwnedProcess, port: u16, deadline: Instant) -> Result<()> {
    loop {
        if let Some(status) = process.exited()? {
            bail!(
                "{} exited ({status}) before listening on port {port}; log {}:\n{}",
                process.name(),
                process.log_path().display(),
                process.log_tail(30)
            );
        }
        if TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), POLL).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} does not listen on port {port} in time; log {}:\n{}",
                process.name(),
                process.log_path().display(),
                process.log_tail(30)
            );
        }
        std::thread::sleep(POLL);
    }
}

/// Polls `/readyz` until it says `ok`, failing early when a process exits.
async fn wait_ready(
    mut config: kube::Config,
    apiserver: &OwnedProcess,
    etcd: &OwnedProcess,
    deadline: Instant,
) -> Result<()> {
    config.connect_timeout = Some(Duration::from_secs(1));
    config.read_timeout = Some(Duration::from_secs(5));
    let client = Client::try_from(config).context("building the readiness client")?;
    loop {
        for process in [apiserver, etcd] {
            if let Some(status) = process.exited()? {
                bail!(
                    "{} exited ({status}); log {}:\n{}",
                    process.name(),
                    process.log_path().display(),
                    process.log_tail(40)
                );
            }
        }
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .context("building the /readyz request")?;
        let last = match client.request_text(request).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            Ok(body) => body,
            Err(e) => e.to_string(),
        };
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver is not ready in time (last /readyz: {last}); log {}:\n{}",
                apiserver.log_path().display(),
                apiserver.log_tail(40)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `future` to completion on a fresh runtime in a scoped thread, so it works whether or not
/// the caller is itself inside a Tokio runtime.
pub(crate) fn block_on<F>(future: F) -> Result<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a Tokio runtime")?;
                Ok(runtime.block_on(future))
            })
            .join()
            .map_err(|_| anyhow!("the helper thread panicked"))?
    })
}
