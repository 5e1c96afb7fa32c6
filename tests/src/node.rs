//! A real node for the test control plane: containerd + runc + a CNI bridge, kubelet,
//! kube-controller-manager and kube-scheduler, so Jobs run as real Pods in real containers.
//!
//! One node per control plane ([`crate::ControlPlane::node`] starts it on first use and stops it
//! with the control plane). Everything lives in a temp dir of its own (`cairn-node-XXXXXX`):
//! containerd's root, state and socket, the CNI config and IPAM state, kubelet's root dir and pod
//! logs, the local PersistentVolumes. What lives outside it is named after it and removed on stop
//! (and by the next start's sweep when a test process was killed): the bridge device, the shims
//! containerd started (they outlive containerd by design), the mounts under the temp dir, the
//! containers' cgroups.
//!
//! What this machine needs (found the hard way, `shared/spec/testbed.md`):
//! - containerd CRI `restrict_oom_score_adj = true`: root lacks `CAP_SYS_RESOURCE` here, so a
//!   negative `oom_score_adj` fails and runc dies ("can't get final child's PID from pipe");
//! - a local pause image ([`crate::image::pause_image`]): nothing can be pulled;
//! - kubelet on cgroup v1 with the cgroupfs driver (`failCgroupV1: false`), without QoS cgroups
//!   or node-allocatable enforcement (no systemd, shared cgroups), without swap checks and
//!   eviction thresholds (a shared machine's disk and memory are not ours to guard);
//! - the node IP is the bridge's address (a loopback node IP leaves the Node without an address,
//!   and `kubectl logs` fails). Servers pods must reach listen on [`Node::host_ip`].
//!
//! Identities: the kubelet authenticates with a client certificate `system:node:<name>` in
//! `system:nodes` (the API server runs the Node authorizer and NodeRestriction); the controller
//! manager as `system:kube-controller-manager` with per-controller ServiceAccounts
//! (`--use-service-account-credentials`), the scheduler as `system:kube-scheduler`: the
//! bootstrap RBAC roles of a real cluster. The API server reaches the kubelet (logs) with the
//! admin certificate; the kubelet trusts the control plane's CA and allows what it authenticates.

use crate::binaries::NodeBinaries;
use crate::controlplane::ControlPlane;
use crate::forward::Forward;
use crate::image::{ImageSpec, pause_image};
use crate::process::{OwnedProcess, free_port};
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::{Node as NodeObject, PersistentVolume};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The temp dirs of nodes are named `<temp dir>/cairn-node-XXXXXX`.
const DIR_PREFIX: &str = "cairn-node-";

/// The Node's name (one node per control plane).
pub const NODE_NAME: &str = "cairn-node";

/// The StorageClass name of the harness's local PersistentVolumes (no StorageClass object: the
/// PV binder matches static volumes by name).
pub const LOCAL_STORAGE_CLASS: &str = "cairn-local";

/// The containerd namespace of the CRI plugin.
const K8S_NAMESPACE: &str = "k8s.io";

/// The node's processes, stopped in field order (scheduler first, containerd last).
struct Processes {
    scheduler: OwnedProcess,
    controller_manager: OwnedProcess,
    kubelet: OwnedProcess,
    containerd: OwnedProcess,
}

/// A running node; [`Node::stop`] (or drop) removes all of it.
pub struct Node {
    processes: Mutex<Option<Processes>>,
    bridge: Bridge,
    binaries: NodeBinaries,
    recycler_stop: Arc<AtomicBool>,
    recycler: Mutex<Option<std::thread::JoinHandle<()>>>,
    startup_time: Duration,
    dir: tempfile::TempDir,
}

/// The CNI bridge of a node: a /24 of 10.88.0.0/16 not in use on this machine.
#[derive(Clone, Debug)]
struct Bridge {
    /// Device name, `cairn<6 hex>` (at most 15 bytes).
    name: String,
    /// The third octet of the subnet 10.88.<n>.0/24.
    octet: u8,
}

impl Bridge {
    /// Creates a bridge with the gateway address on a free subnet.
    fn create() -> Result<Self> {
        let used = command_output("ip", &["-4", "-o", "addr", "show"])?;
        let seed = std::process::id()
            ^ std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or_default();
        for attempt in 0..240u32 {
            let octet = (16 + (seed.wrapping_add(attempt * 97)) % 230) as u8;
            if used.contains(&format!("10.88.{octet}.")) {
                continue;
            }
            let bridge = Self {
                name: format!("cairn{:06x}", seed.wrapping_add(attempt) & 0xff_ffff),
                octet,
            };
            if run(
                "ip",
                &["link", "add", "name", &bridge.name, "type", "bridge"],
            )
            .is_err()
            {
                continue;
            }
            let cidr = format!("{}/24", bridge.gateway());
            let configured = run("ip", &["addr", "add", &cidr, "dev", &bridge.name])
                .and_then(|()| run("ip", &["link", "set", &bridge.name, "up"]));
            if let Err(e) = configured {
                let _ = run("ip", &["link", "del", &bridge.name]);
                return Err(e);
            }
            return Ok(bridge);
        }
        bail!("found no free 10.88.<n>.0/24 subnet for the node's bridge")
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.octet, 1)
    }

    /// The CNI network: our bridge, addresses from `host-local` with its state in `dir`, no
    /// masquerading (nothing leaves the machine).
    fn conflist(&self, dir: &Path) -> serde_json::Value {
        json!({
            "cniVersion": "1.0.0",
            "name": self.name,
            "plugins": [
                {"type": "bridge", "bridge": self.name, "isGateway": true, "ipMasq": false,
                 "ipam": {"type": "host-local", "dataDir": dir.join("cni-ipam"),
                          "ranges": [[{"subnet": format!("10.88.{}.0/24", self.octet),
                                       "gateway": self.gateway().to_string()}]],
                          "routes": [{"dst": "0.0.0.0/0"}]}},
                {"type": "loopback"}
            ]
        })
    }
}

impl Node {
    /// Starts a node registered with `cp` and waits until it is Ready.
    pub fn start(cp: &ControlPlane) -> Result<Self> {
        let started = Instant::now();
        let binaries = NodeBinaries::locate()?;
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(sweep_stale_nodes);
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .context("creating the node's temp dir")?;
        write_file(
            &dir.path().join("owner.pid"),
            &std::process::id().to_string(),
        )?;
        let bridge = Bridge::create()?;
        write_file(&dir.path().join("bridge"), &bridge.name)?;
        let mut node = Self {
            processes: Mutex::new(None),
            bridge,
            binaries,
            recycler_stop: Arc::new(AtomicBool::new(false)),
            recycler: Mutex::new(None),
            startup_time: Duration::ZERO,
            dir,
        };
        // From here on, a failure drops `node`, which removes what was made so far.
        let processes = node.start_processes(cp)?;
        *node.processes.lock().unwrap_or_else(|e| e.into_inner()) = Some(processes);
        node.wait_ready(cp, started + Duration::from_secs(120))?;
        node.start_recycler(cp);
        node.startup_time = started.elapsed();
        eprintln!(
            "cairn-tests: node {NODE_NAME} ready in {:.1}s (bridge {} {}); dir {}",
            node.startup_time.as_secs_f64(),
            node.bridge.name,
            node.host_ip(),
            node.dir().display()
        );
        Ok(node)
    }

    fn start_processes(&self, cp: &ControlPlane) -> Result<Processes> {
        let containerd = self.start_containerd()?;
        self.import_archive(&self.write_pause_archive()?)?;
        let kubelet = self.start_kubelet(cp)?;
        let controller_manager = self.start_controller_manager(cp)?;
        let scheduler = self.start_scheduler(cp)?;
        Ok(Processes {
            scheduler,
            controller_manager,
            kubelet,
            containerd,
        })
    }

    /// The node's directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The bridge's address: the node IP, and where servers listen that pods must reach.
    pub fn host_ip(&self) -> Ipv4Addr {
        self.bridge.gateway()
    }

    /// The bridge device's name.
    pub fn bridge_name(&self) -> &str {
        &self.bridge.name
    }

    /// The pids of containerd's shims of this node (they hold the containers).
    pub fn shim_pids(&self) -> Vec<u32> {
        processes_with_arg(&self.containerd_socket().display().to_string())
    }

    /// The Node's name.
    pub fn name(&self) -> &str {
        NODE_NAME
    }

    /// How long the start took, until the Node was Ready.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// containerd's socket.
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir().join("containerd/containerd.sock")
    }

    /// A `ctr` command for the CRI namespace of this node's containerd.
    pub fn ctr(&self) -> Command {
        let mut cmd = Command::new(&self.binaries.ctr);
        cmd.arg("--address")
            .arg(self.containerd_socket())
            .args(["--namespace", K8S_NAMESPACE]);
        cmd
    }

    /// Imports an OCI image archive (`ctr images import`) for Pods to use with
    /// `imagePullPolicy: Never` or `IfNotPresent`.
    pub fn import_archive(&self, archive: &Path) -> Result<()> {
        let out = self
            .ctr()
            .args(["images", "import", "--no-unpack=false"])
            .arg(archive)
            .output()
            .context("running ctr images import")?;
        if !out.status.success() {
            bail!(
                "ctr images import {} failed: {}{}",
                archive.display(),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Writes `spec` as an archive in the node's dir and imports it.
    pub fn import_image(&self, spec: &ImageSpec) -> Result<crate::image::ImageDigests> {
        let archive = self.dir().join(format!(
            "image-{}.tar",
            spec.reference.replace(['/', ':'], "_")
        ));
        let digests = spec.write_archive(&archive)?;
        self.import_archive(&archive)?;
        let _ = std::fs::remove_file(&archive);
        Ok(digests)
    }

    /// The PID of the running task (container process) `container_id` (without `containerd://`).
    pub fn task_pid(&self, container_id: &str) -> Result<u32> {
        let out = self
            .ctr()
            .args(["tasks", "ls"])
            .output()
            .context("running ctr tasks ls")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                Some((words.next()?, words.next()?, words.next()?))
            })
            .find(|(id, _, status)| *id == container_id && *status == "RUNNING")
            .and_then(|(_, pid, _)| pid.parse().ok())
            .ok_or_else(|| anyhow!("no running task {container_id} in `ctr tasks ls`:\n{text}"))
    }

    /// The last lines of the kubelet's log (for diagnosing a failing test).
    pub fn kubelet_log_tail(&self, lines: usize) -> String {
        self.log_tail(|p| &p.kubelet, lines)
    }

    /// The last lines of containerd's log.
    pub fn containerd_log_tail(&self, lines: usize) -> String {
        self.log_tail(|p| &p.containerd, lines)
    }

    fn log_tail(&self, which: impl Fn(&Processes) -> &OwnedProcess, lines: usize) -> String {
        let guard = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|p| which(p).log_tail(lines))
            .unwrap_or_default()
    }

    /// Answers the `kubernetes` Service's cluster IP on the node's bridge, port 443, by a
    /// forwarder to the API server: what kube-proxy would do for this one Service, so that Pods
    /// using the in-cluster configuration (cairn's controller, webhook and certificate Jobs)
    /// reach the API server, which listens on loopback. The address goes with the bridge; the
    /// forwarder stops when the returned value is dropped.
    pub fn serve_kubernetes_service(&self, cp: &ControlPlane) -> Result<Forward> {
        let ip = crate::controlplane::KUBERNETES_SERVICE_IP;
        run(
            "ip",
            &[
                "addr",
                "replace",
                &format!("{ip}/32"),
                "dev",
                &self.bridge.name,
            ],
        )?;
        let port = cp
            .server_url()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("the API server's port")?;
        Forward::start_at((ip, 443).into(), port)
    }

    /// Stops everything and removes what the node made outside its dir. Idempotent.
    pub fn stop(&self) {
        self.recycler_stop.store(true, Ordering::Relaxed);
        if let Some(handle) = self
            .recycler
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            let _ = handle.join();
        }
        // Scheduler, controller manager and kubelet first (nothing restarts containers), then
        // containerd; its shims and their containers are killed by `clean_up`.
        if let Some(processes) = self
            .processes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            processes.scheduler.stop();
            processes.controller_manager.stop();
            processes.kubelet.stop();
            processes.containerd.stop();
        }
        clean_up(self.dir());
        // The shared control plane stops its node from an `atexit` hook, where nothing drops.
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Node start-up steps: configuration files and processes.
impl Node {
    fn start_containerd(&self) -> Result<OwnedProcess> {
        let base = self.dir().join("containerd");
        let net_d = self.dir().join("cni/net.d");
        std::fs::create_dir_all(&net_d).with_context(|| format!("creating {}", net_d.display()))?;
        write_file(
            &net_d.join("10-cairn.conflist"),
            &self.bridge.conflist(self.dir()).to_string(),
        )?;
        // Its own root, state and socket; no TCP listeners but the CRI stream server (a free
        // port on loopback); the CRI settings this machine needs (module comment).
        let config = format!(
            r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{socket}"
[ttrpc]
  address = ""
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin}"
    conf_dir = "{net_d}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
"#,
            root = base.join("root").display(),
            state = base.join("state").display(),
            socket = self.containerd_socket().display(),
            pause = crate::image::PAUSE_IMAGE,
            cni_bin = self.binaries.cni_bin_dir.display(),
            net_d = net_d.display(),
        );
        let config_path = base.join("config.toml");
        write_file(&config_path, &config)?;
        let containerd = OwnedProcess::spawn(
            "containerd",
            &self.binaries.containerd,
            &[format!("--config={}", config_path.display())],
            &self.dir().join("containerd.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.containerd_socket().exists() {
            if let Some(status) = containerd.exited()? {
                bail!("containerd exited ({status}):\n{}", containerd.log_tail(30));
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not create its socket in 30s:\n{}",
                    containerd.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(containerd)
    }

    fn write_pause_archive(&self) -> Result<PathBuf> {
        let archive = self.dir().join("pause.tar");
        pause_image(&self.binaries.pause).write_archive(&archive)?;
        Ok(archive)
    }

    /// A kubeconfig for `user` (a client certificate from the control plane's CA).
    fn kubeconfig(&self, cp: &ControlPlane, user: &str, groups: &[&str]) -> Result<PathBuf> {
        let cert = cp.ca().client_cert(user, groups)?;
        let name = user.replace(':', "-");
        let (crt, key) = (
            self.dir().join(format!("{name}.crt")),
            self.dir().join(format!("{name}.key")),
        );
        write_file(&crt, &cert.cert_pem)?;
        write_file(&key, &cert.key_pem)?;
        let doc = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "cairn-test", "cluster": {
                "server": cp.server_url(), "certificate-authority": cp.dir().join("ca.crt")}}],
            "users": [{"name": user, "user": {"client-certificate": crt, "client-key": key}}],
            "contexts": [{"name": "cairn-test", "context": {"cluster": "cairn-test", "user": user}}],
            "current-context": "cairn-test",
        });
        let path = self.dir().join(format!("{name}.kubeconfig"));
        write_file(&path, &doc.to_string())?;
        Ok(path)
    }

    fn start_kubelet(&self, cp: &ControlPlane) -> Result<OwnedProcess> {
        let kubeconfig =
            self.kubeconfig(cp, &format!("system:node:{NODE_NAME}"), &["system:nodes"])?;
        let ip = self.host_ip().to_string();
        let serving = cp.ca().server_cert(NODE_NAME, &[NODE_NAME, &ip])?;
        let (crt, key) = (
            self.dir().join("kubelet-serving.crt"),
            self.dir().join("kubelet-serving.key"),
        );
        write_file(&crt, &serving.cert_pem)?;
        write_file(&key, &serving.key_pem)?;
        let socket = format!("unix://{}", self.containerd_socket().display());
        // Why each setting: the module comment. Ports are free ones (other nodes may run on
        // this machine at the same time).
        let config = json!({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "address": ip,
            "port": free_port()?,
            "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1",
            "healthzPort": free_port()?,
            "tlsCertFile": crt,
            "tlsPrivateKeyFile": key,
            "authentication": {"anonymous": {"enabled": false}, "webhook": {"enabled": false},
                               "x509": {"clientCAFile": cp.dir().join("ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "containerRuntimeEndpoint": socket,
            "imageServiceEndpoint": socket,
            "cgroupDriver": "cgroupfs",
            "failCgroupV1": false,
            "cgroupsPerQOS": false,
            "enforceNodeAllocatable": [],
            "failSwapOn": false,
            "evictionHard": {},
            "evictionSoft": {},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podLogsDir": self.dir().join("pod-logs"),
            "volumePluginDir": self.dir().join("volume-plugins"),
            // No attach/detach controller runs: the kubelet attaches (local volumes need none).
            "enableControllerAttachDetach": false,
            "resolvConf": "",
            "registerNode": true,
            "nodeStatusUpdateFrequency": "2s",
            "syncFrequency": "5s",
            "fileCheckFrequency": "5s",
            "oomScoreAdj": 0,
            "makeIPTablesUtilChains": false,
            "serializeImagePulls": false,
        });
        let config_path = self.dir().join("kubelet.json");
        write_file(&config_path, &config.to_string())?;
        let root = self.dir().join("kubelet");
        let args = vec![
            format!("--config={}", config_path.display()),
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--root-dir={}", root.display()),
            format!("--cert-dir={}", root.join("pki").display()),
            format!("--hostname-override={NODE_NAME}"),
            format!("--node-ip={ip}"),
            "--v=2".to_string(),
        ];
        OwnedProcess::spawn(
            "kubelet",
            &self.binaries.kubelet,
            &args,
            &self.dir().join("kubelet.log"),
        )
    }

    fn start_controller_manager(&self, cp: &ControlPlane) -> Result<OwnedProcess> {
        let kubeconfig = self.kubeconfig(cp, "system:kube-controller-manager", &[])?;
        let controllers = [
            "job-controller",
            // cairn's install (tests/tests/install_on_node.rs): Deployments, the webhook's
            // Service endpoints (the API server routes to them), the certificate CronJob, the
            // CA bundle every projected service account volume needs, default accounts.
            "deployment-controller",
            "replicaset-controller",
            "endpoints-controller",
            "endpointslice-controller",
            "cronjob-controller",
            "root-ca-certificate-publisher-controller",
            "serviceaccount-controller",
            "garbage-collector-controller",
            "persistentvolume-binder-controller",
            // The StorageObjectInUseProtection admission plugin puts finalizers on PVs and
            // PVCs; these remove them once no Pod uses the claim.
            "persistentvolume-protection-controller",
            "persistentvolumeclaim-protection-controller",
            "serviceaccount-token-controller",
            "ttl-after-finished-controller",
            // Removes the `not-ready` taint the kubelet registers the Node with once it is
            // Ready (and taints it again if it stops reporting).
            "node-lifecycle-controller",
            // Aggregates cairn's user roles into `view`, `edit` and `admin`.
            "clusterrole-aggregation-controller",
        ];
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            format!("--controllers={}", controllers.join(",")),
            "--use-service-account-credentials=true".to_string(),
            format!(
                "--service-account-private-key-file={}",
                cp.dir().join("sa.key").display()
            ),
            format!("--root-ca-file={}", cp.dir().join("ca.crt").display()),
            "--leader-elect=false".to_string(),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", free_port()?),
            format!("--cert-dir={}", self.dir().join("kcm-certs").display()),
            "--v=1".to_string(),
        ];
        OwnedProcess::spawn(
            "kube-controller-manager",
            &self.binaries.kube_controller_manager,
            &args,
            &self.dir().join("kube-controller-manager.log"),
        )
    }

    fn start_scheduler(&self, cp: &ControlPlane) -> Result<OwnedProcess> {
        let kubeconfig = self.kubeconfig(cp, "system:kube-scheduler", &[])?;
        let args = vec![
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            "--leader-elect=false".to_string(),
            "--bind-address=127.0.0.1".to_string(),
            format!("--secure-port={}", free_port()?),
            format!(
                "--cert-dir={}",
                self.dir().join("scheduler-certs").display()
            ),
            "--v=1".to_string(),
        ];
        OwnedProcess::spawn(
            "kube-scheduler",
            &self.binaries.kube_scheduler,
            &args,
            &self.dir().join("kube-scheduler.log"),
        )
    }

    /// Waits until the Node reports Ready, failing early when a process exits.
    fn wait_ready(&self, cp: &ControlPlane, deadline: Instant) -> Result<()> {
        let config = cp.config().clone();
        crate::controlplane::block_on(async move {
            let client = kube::Client::try_from(config).context("building a client")?;
            let nodes: Api<NodeObject> = Api::all(client);
            loop {
                self.check_processes()?;
                // Ready, and without the `not-ready` taint: Pods can be scheduled.
                let ready = nodes
                    .get_opt(NODE_NAME)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| {
                        let untainted = n
                            .spec
                            .as_ref()
                            .and_then(|s| s.taints.as_ref())
                            .is_none_or(|t| t.is_empty());
                        untainted
                            && n.status
                                .and_then(|s| s.conditions)
                                .unwrap_or_default()
                                .iter()
                                .any(|c| c.type_ == "Ready" && c.status == "True")
                    });
                if ready {
                    return Ok(());
                }
                if Instant::now() > deadline {
                    bail!(
                        "node {NODE_NAME} is not Ready after 120s; kubelet log:\n{}",
                        self.kubelet_log_tail(40)
                    );
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })?
    }

    /// An error naming the first of the node's processes that exited, with its log.
    fn check_processes(&self) -> Result<()> {
        let guard = self.processes.lock().unwrap_or_else(|e| e.into_inner());
        let Some(p) = guard.as_ref() else {
            bail!("the node was stopped");
        };
        for process in [
            &p.containerd,
            &p.kubelet,
            &p.controller_manager,
            &p.scheduler,
        ] {
            if let Some(status) = process.exited()? {
                bail!(
                    "{} exited ({status}); log {}:\n{}",
                    process.name(),
                    process.log_path().display(),
                    process.log_tail(40)
                );
            }
        }
        Ok(())
    }
}

/// Local PersistentVolumes: directories in the node's dir, recycled when released.
impl Node {
    /// Creates `count` local PersistentVolumes of `capacity` (class [`LOCAL_STORAGE_CLASS`],
    /// `ReadWriteOnce`, reclaim policy `Retain`) named `<prefix>-<i>`, backed by directories
    /// under the node's `volumes/`; [`Node::volume_dir`] names them. A released volume is wiped
    /// and made Available again by the node's recycler.
    pub async fn create_local_volumes(
        &self,
        client: kube::Client,
        prefix: &str,
        count: usize,
        capacity: &str,
    ) -> Result<Vec<String>> {
        let api: Api<PersistentVolume> = Api::all(client);
        let mut names = Vec::new();
        for i in 0..count {
            let name = format!("{prefix}-{i}");
            let dir = self.volume_dir(&name);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let pv: PersistentVolume = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {"cairn.dev/test-volume": "true"}},
                "spec": {
                    "capacity": {"storage": capacity},
                    "accessModes": ["ReadWriteOnce"],
                    "persistentVolumeReclaimPolicy": "Retain",
                    "storageClassName": LOCAL_STORAGE_CLASS,
                    "volumeMode": "Filesystem",
                    "local": {"path": dir},
                    "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                        {"key": "kubernetes.io/hostname", "operator": "In", "values": [NODE_NAME]}]}]}},
                }
            }))
            .context("building a PersistentVolume")?;
            api.create(&PostParams::default(), &pv)
                .await
                .with_context(|| format!("creating PersistentVolume {name}"))?;
            names.push(name);
        }
        Ok(names)
    }

    /// The host directory behind local PersistentVolume `name`.
    pub fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir().join("volumes").join(name)
    }

    /// Every second: a Released local volume of the harness gets its directory emptied and its
    /// claim reference removed, so the binder can bind it again.
    fn start_recycler(&self, cp: &ControlPlane) {
        let stop = self.recycler_stop.clone();
        let config = cp.config().clone();
        let volumes = self.dir().join("volumes");
        let handle = std::thread::Builder::new()
            .name("cairn-node-recycler".into())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                runtime.block_on(async move {
                    let Ok(client) = kube::Client::try_from(config) else {
                        return;
                    };
                    let api: Api<PersistentVolume> = Api::all(client);
                    while !stop.load(Ordering::Relaxed) {
                        let _ = recycle_released(&api, &volumes).await;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                });
            })
            .ok();
        *self.recycler.lock().unwrap_or_else(|e| e.into_inner()) = handle;
    }
}

/// One pass of the recycler.
async fn recycle_released(api: &Api<PersistentVolume>, volumes: &Path) -> Result<()> {
    let list = api
        .list(&kube::api::ListParams::default().labels("cairn.dev/test-volume=true"))
        .await?;
    for pv in list {
        let phase = pv.status.as_ref().and_then(|s| s.phase.as_deref());
        let Some(name) = pv.metadata.name.as_deref() else {
            continue;
        };
        if phase != Some("Released") {
            continue;
        }
        let dir = volumes.join(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::create_dir_all(&dir)?;
        // A merge patch's null removes the field.
        api.patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"claimRef": null}})),
        )
        .await?;
    }
    Ok(())
}

/// Deletes the harness's local PersistentVolumes named `names` (e.g. at the end of a test).
pub async fn delete_volumes(client: kube::Client, names: &[String]) -> Result<()> {
    let api: Api<PersistentVolume> = Api::all(client);
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting PV {name}")),
        }
    }
    Ok(())
}

/// Removes what a node made outside its dir, then the dir's mounts: containerd's shims and the
/// containers they hold, the mounts under the dir (overlay root file systems, the netns mounts,
/// the kubelet's tmpfs volumes), the containers' cgroups, the bridge.
fn clean_up(dir: &Path) {
    let socket = dir.join("containerd/containerd.sock");
    let task_dir = dir
        .join("containerd/state/io.containerd.runtime.v2.task")
        .join(K8S_NAMESPACE);
    let container_ids: Vec<String> = std::fs::read_dir(&task_dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let shims = processes_with_arg(&socket.display().to_string());
    let mut doomed = Vec::new();
    for shim in &shims {
        // A container's init is the shim's child; killing it ends its PID namespace.
        doomed.extend(children_of(*shim));
        doomed.push(*shim);
    }
    for pid in &doomed {
        // SAFETY: plain syscall on pids we just found as our node's shims and their children.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while doomed
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    unmount_under(dir);
    remove_cgroups(&container_ids);
    if let Ok(bridge) = std::fs::read_to_string(dir.join("bridge")) {
        let _ = run("ip", &["link", "del", bridge.trim()]);
    }
}

/// Unmounts every mount point under `dir`, deepest first (lazily: a busy mount goes away once
/// its last user does).
fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    for _ in 0..3 {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut points: Vec<String> = mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .map(|p| p.replace("\\040", " "))
            .filter(|p| p.starts_with(&prefix))
            .collect();
        if points.is_empty() {
            return;
        }
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for point in points {
            if let Ok(c) = std::ffi::CString::new(point) {
                // SAFETY: a NUL-terminated path; MNT_DETACH never blocks.
                unsafe {
                    libc::umount2(c.as_ptr(), libc::MNT_DETACH);
                }
            }
        }
    }
}

/// Removes the cgroup directories runc made for `ids` (empty once their processes are gone).
fn remove_cgroups(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for controller in controllers.flatten() {
        let mut found = Vec::new();
        find_dirs_named(&controller.path(), ids, 4, &mut found);
        found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
        for dir in found {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

fn find_dirs_named(dir: &Path, names: &[String], depth: usize, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let path = entry.path();
        if names.iter().any(|n| entry.file_name() == n.as_str()) {
            found.push(path.clone());
        }
        if depth > 0 {
            find_dirs_named(&path, names, depth - 1, found);
        }
    }
}

/// The pids of processes that have `arg` as one of their arguments.
fn processes_with_arg(arg: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|a| a == arg.as_bytes()))
        })
        .collect()
}

/// The pids whose parent is `parent`.
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // `pid (comm) state ppid ...`: comm may hold spaces, so split after the `)`.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .and_then(|ppid| ppid.parse::<u32>().ok())
                    == Some(parent)
            })
        })
        .collect()
}

/// Cleans up the nodes of test processes that died without doing it (killed: kubelet and
/// containerd died with them, shims, mounts and the bridge did not).
fn sweep_stale_nodes() {
    for dir in crate::process::stale_dirs(DIR_PREFIX) {
        clean_up(&dir);
        let _ = std::fs::remove_dir_all(dir);
    }
}

fn write_file(path: &Path, contents: &str) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, contents).with_context(|| format!("writing {}", path.display()))
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<()> {
    command_output(program, args).map(|_| ())
}

fn command_output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
