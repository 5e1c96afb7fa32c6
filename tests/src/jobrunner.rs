//! The job runner: **test infrastructure** that plays the node for cairn's Jobs.
//!
//! A control plane without its node ([`crate::ControlPlane::node`], which runs Jobs as real
//! Pods) has no kubelet, scheduler or controller-manager, so nothing runs the Jobs the cairn
//! controller creates. Tests that need what a real node cannot give (fabricated agent results
//! from a shell-script Task, injected faults) use a [`JobRunner`], which stands in for the job
//! controller, the kubelet and the garbage collector, for Jobs labelled
//! `app.kubernetes.io/managed-by=cairn`:
//!
//! - **job controller**: for each new Job it creates a Pod through the API (named
//!   `<job>-<5 random chars>`, the Job's selector labels, a controller ownerReference, the
//!   template's spec with `nodeName: cairn-test-node`), and writes the Job's status subresource:
//!   `startTime`, `active`, `ready`, then `succeeded`/`failed` with the conditions the API server's
//!   validation demands (`SuccessCriteriaMet` before `Complete` plus `completionTime`;
//!   `FailureTarget` before `Failed`, reason `BackoffLimitExceeded`). `backoffLimit` is honoured
//!   (a failed Pod is replaced until it is exceeded, without the real controller's delay).
//! - **kubelet**: it "runs" the Pod: init containers one after the other, then the main
//!   containers together, each as a local process (the image is ignored), and writes the Pod's
//!   status subresource as the kubelet would: phase `Pending` → `Running` → `Succeeded`/`Failed`,
//!   container states (`waiting`/`running`/`terminated` with `exitCode`, `reason`
//!   `Completed`/`Error`/`OOMKilled`/`StartError`, the termination `message`), and conditions.
//!   A deleted Pod (it gets a `deletionTimestamp`, having a node) has its processes killed
//!   (SIGTERM, then SIGKILL after the grace period, capped by [`Options::max_grace_period`]), its
//!   final status written, and is then removed with grace period 0.
//! - **garbage collector**: a deleted Job's Pods are deleted (background and `foregroundDeletion`,
//!   whose finalizer it removes once the Pods are gone); with `orphan`, the Pods lose their
//!   ownerReference and run on.
//!
//! What a container gets:
//! - the command: `command` + `args` (`$(VAR)` expanded as Kubernetes does). `command[0]` may be
//!   mapped to a local program ([`Options::command`]); a container without `command` needs its
//!   image mapped to a local program ([`Options::image`]), its entrypoint. Otherwise `command[0]`
//!   is looked up in `PATH`. A program that is not found ends the container with reason
//!   `StartError`, exit code 128, like a missing binary in an image.
//! - the environment: a clean one with the machine's `PATH`, `HOSTNAME=<pod>`, [`Options::env`],
//!   `KUBECONFIG` when [`Options::service_account_credentials`] is set and the Pod mounts a token
//!   (see there), then the container's `envFrom` (Secrets, ConfigMaps) and `env` (`value`, `secretKeyRef`,
//!   `configMapKeyRef`, simple `fieldRef`s), read from the API. A missing Secret or key leaves the
//!   container waiting with `CreateContainerConfigError`, retried until it appears.
//!   `CAIRN_TERMINATION_LOG` names a file per container, read back as the termination message
//!   (first 4096 bytes); when it is empty, the container failed and its
//!   `terminationMessagePolicy` is `FallbackToLogsOnError`, the last lines of its output (at most
//!   80 lines and 4096 bytes) are used instead.
//! - volumes, as directories under the runner's temp dir: Secret and ConfigMap volumes are
//!   materialised as files (with their modes), `emptyDir` (and any unsupported kind) is a fresh
//!   dir per Pod, a `persistentVolumeClaim` is a dir per claim ([`JobRunner::claim_dir`]) and a
//!   `hostPath` or `nfs` volume a dir per path, kept across Pods for the runner's lifetime.
//!
//! **Mount paths are rewritten.** Without containers a process cannot see a volume at its
//! `mountPath` (`/cairn/tmp`, `/cairn/secrets/target`, `/backup`, ...). So every occurrence of a
//! mount path in the container's `command`, `args`, `workingDir` and literal `env` values is
//! replaced by the volume's local dir (with `subPath` applied), the termination message path
//! (`/dev/termination-log` unless the container says otherwise) by the per-container file. An
//! occurrence counts only at path-name boundaries: `/cairn/tmp` and `/cairn/tmp/x` and
//! `--dir=/cairn/tmp` are rewritten, `/cairn/tmpfoo` and `/x/cairn/tmp` are not; the longest mount
//! path wins. Values read from Secrets and ConfigMaps, file contents, and paths a program builds
//! at run time are *not* rewritten: a program that derives a path from something else than its
//! command line or environment will look in the real file system.
//!
//! Other limitations: no isolation, user, resource limits or probes; `restartPolicy` is treated as
//! `Never`; `activeDeadlineSeconds`, `completions`/`parallelism` other than 1, indexed Jobs,
//! sidecars, and the `batch.kubernetes.io/job-tracking` Pod finalizer are not implemented;
//! PersistentVolumeClaims need not exist or be bound.
//!
//! Failure injection ([`JobRunner::inject`]) makes the next Pod of a Job (or of a session) end
//! as [`Fault::OomKilled`], [`Fault::ImagePullBackOff`], [`Fault::Evicted`] or [`Fault::Hang`].
//!
//! Every process dies with the runner (and with the test process: they are
//! [`crate::process::OwnedProcess`]es). Several runners in one test process never run the same Job
//! twice, but a runner only runs Jobs while it lives: give each test's runner its namespace
//! ([`Options::namespace`]).
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use cairn_tests::jobrunner::{Fault, FaultTarget, JobRunner, Options};
//! let cp = cairn_tests::ControlPlane::shared();
//! let ns = cp.new_namespace().await?;
//! let agent = cairn_tests::repo_root().join("target/debug/cairn-agent");
//! let runner = JobRunner::start(cp, Options::namespace(&ns).command("cairn-agent", agent));
//! runner.inject(FaultTarget::session(&ns, "nightly-1700000000"), Fault::OomKilled);
//! // ... create sessions; the controller creates Jobs; the runner runs them ...
//! assert!(runner.errors().is_empty(), "{:?}", runner.errors());
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Component, Path, PathBuf};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, Pod, PodSpec, Secret, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ControlPlane;
use crate::process::{OwnedProcess, process_group_alive};

/// The node every Pod of the runner is bound to.
pub const NODE_NAME: &str = "cairn-test-node";
/// The field manager of the runner's writes.
pub const FIELD_MANAGER: &str = "cairn-test-job-runner";
/// The Jobs the runner runs.
pub const JOB_SELECTOR: &str = "app.kubernetes.io/managed-by=cairn";
/// Labels of the Pods, as the job controller sets them.
pub const LABEL_JOB_NAME: &str = "batch.kubernetes.io/job-name";
pub const LABEL_CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
const LEGACY_LABEL_JOB_NAME: &str = "job-name";
const LEGACY_LABEL_CONTROLLER_UID: &str = "controller-uid";
/// The session label the cairn controller puts on its Jobs.
const LABEL_SESSION: &str = "cairn.dev/session";
/// The node's (and every Pod's) IP.
const NODE_IP: &str = "127.0.0.1";
/// Where Kubernetes reads the termination message unless a container names another file.
const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";
/// Kubernetes keeps at most this many bytes of a termination message.
const MAX_MESSAGE: usize = cairn_api::result::MAX_TERMINATION_MESSAGE;
/// How many log lines `FallbackToLogsOnError` keeps.
const LOG_LINES: usize = 80;
/// How often running processes are checked for their exit.
const POLL: Duration = Duration::from_millis(20);
/// How often a container waiting for a Secret or ConfigMap tries again.
const CONFIG_RETRY: Duration = Duration::from_millis(250);
/// How long the garbage collector waits for a deleted Job's Pods to go.
const COLLECT_TIMEOUT: Duration = Duration::from_secs(60);
/// What an evicted Pod's status says.
const EVICTION_MESSAGE: &str = "The node was low on resource: memory. Threshold quantity: 100Mi, \
     available: 0Ki. (evicted by the cairn test job runner)";

/// How a [`JobRunner`] runs Jobs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Only Jobs of this namespace (default: all namespaces).
    pub namespace: Option<String>,
    /// The `nodeName` of the Pods.
    pub node_name: String,
    /// `command[0]` (the exact string, or its file name) → the local program that runs instead.
    pub commands: BTreeMap<String, PathBuf>,
    /// Image (exact, or without tag/digest) → its entrypoint, for containers without `command`.
    pub images: BTreeMap<String, PathBuf>,
    /// Extra environment of every process, before the container's own (which wins).
    pub env: BTreeMap<String, String>,
    /// The longest a deleted Pod's processes get between SIGTERM and SIGKILL (the Pod's own grace
    /// period, usually 30 s, is cut to this).
    pub max_grace_period: Duration,
    /// The label selector of the Jobs (and their Pods) this runner runs.
    pub job_selector: String,
    /// Where a Pod's service account token takes its process: the API server's URL and CA.
    pub api_access: Option<ApiAccess>,
}

/// The API server a Pod's process reaches with its service account's token.
#[derive(Clone, Debug)]
pub struct ApiAccess {
    pub server: String,
    pub ca_pem: String,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            namespace: None,
            node_name: NODE_NAME.to_string(),
            commands: BTreeMap::new(),
            images: BTreeMap::new(),
            env: BTreeMap::new(),
            max_grace_period: Duration::from_secs(2),
            job_selector: JOB_SELECTOR.to_string(),
            api_access: None,
        }
    }
}

impl Options {
    /// Options for the Jobs of one namespace.
    pub fn namespace(namespace: &str) -> Self {
        Self {
            namespace: Some(namespace.to_string()),
            ..Self::default()
        }
    }

    /// Runs `program` wherever a container's `command[0]` is `name` (or has file name `name`).
    pub fn command(mut self, name: &str, program: impl Into<PathBuf>) -> Self {
        self.commands.insert(name.to_string(), program.into());
        self
    }

    /// Runs `program` as the entrypoint of `image` (for containers without `command`).
    pub fn image(mut self, image: &str, program: impl Into<PathBuf>) -> Self {
        self.images.insert(image.to_string(), program.into());
        self
    }

    /// Runs the Jobs `selector` selects instead of cairn's.
    pub fn job_selector(mut self, selector: &str) -> Self {
        self.job_selector = selector.to_string();
        self
    }

    /// Gives each Pod that mounts a service account token (`automountServiceAccountToken` not
    /// false) its service account's credentials, as a kubelet does. **The one difference:** a
    /// kubelet mounts the token at `/var/run/secrets/kubernetes.io/serviceaccount/` and the
    /// program finds the API through `KUBERNETES_SERVICE_HOST`; kube's in-cluster configuration
    /// reads that fixed path, which a local process cannot be given. So the runner requests a
    /// token for the Pod's service account (TokenRequest, one hour) and names it, with `server`
    /// and its CA, in a kubeconfig file that `KUBECONFIG` points to. The process has exactly the
    /// service account's rights.
    pub fn service_account_credentials(mut self, server: &str, ca_pem: &str) -> Self {
        self.api_access = Some(ApiAccess {
            server: server.to_string(),
            ca_pem: ca_pem.to_string(),
        });
        self
    }

    /// Adds `name=value` to every process's environment (the container's own env wins).
    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_string(), value.to_string());
        self
    }
}

/// How the next Pod of a targeted Job ends instead of running normally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The (first) main container starts and is killed at once: exit code 137, reason
    /// `OOMKilled`, Pod `Failed`.
    OomKilled,
    /// The first container's image never arrives: the Pod stays `Pending` with
    /// `waiting.reason: ImagePullBackOff` until it is deleted.
    ImagePullBackOff,
    /// The Pod is evicted once its main containers started: processes killed, Pod `Failed` with
    /// reason `Evicted`, a `DisruptionTarget` condition, containers terminated with 137.
    Evicted,
    /// The main containers are reported running, no process runs, and nothing happens until the
    /// Pod (or its Job) is deleted.
    Hang,
}

/// Which Job a [`Fault`] is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultTarget {
    /// The Job of this name.
    Job { namespace: String, name: String },
    /// A Job labelled `cairn.dev/session: <session>` (the label's value).
    Session { namespace: String, session: String },
}

impl FaultTarget {
    pub fn job(namespace: &str, name: &str) -> Self {
        Self::Job {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub fn session(namespace: &str, session: &str) -> Self {
        Self::Session {
            namespace: namespace.to_string(),
            session: session.to_string(),
        }
    }

    fn matches(&self, job: &Job) -> bool {
        let ns = job.metadata.namespace.as_deref().unwrap_or_default();
        match self {
            Self::Job { namespace, name } => {
                namespace == ns && job.metadata.name.as_deref() == Some(name.as_str())
            }
            Self::Session { namespace, session } => {
                namespace == ns && job.labels().get(LABEL_SESSION) == Some(session)
            }
        }
    }
}

/// A container process the runner is running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningProcess {
    pub namespace: String,
    pub job: String,
    pub pod: String,
    pub container: String,
    /// Process id, also the id of its process group.
    pub pid: u32,
}

/// Runs cairn's Jobs as local processes; see the [module documentation](self). Stops (and kills
/// every process it started) when dropped.
pub struct JobRunner {
    ctx: Arc<Ctx>,
    watchers: Vec<JoinHandle<()>>,
    // Dropped last: processes are killed before their files go.
    root: tempfile::TempDir,
}

impl JobRunner {
    /// Starts a runner for the Jobs of `cp`.
    ///
    /// # Panics
    /// Outside a Tokio runtime, or if its temp dir cannot be created.
    pub fn start(cp: &ControlPlane, options: Options) -> JobRunner {
        Self::with_client(cp.client(), options)
            .unwrap_or_else(|e| panic!("cannot start the job runner: {e:#}"))
    }

    /// Starts a runner that uses `client` (any cluster without a kubelet).
    ///
    /// # Panics
    /// Outside a Tokio runtime.
    pub fn with_client(client: Client, options: Options) -> Result<JobRunner> {
        crate::init_crypto();
        let root = tempfile::Builder::new()
            .prefix("cairn-jobrunner-")
            .tempdir()
            .context("creating the job runner's temp dir")?;
        let (changed, _) = watch::channel(0u64);
        let ctx = Arc::new(Ctx {
            client,
            options,
            root: root.path().to_path_buf(),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/bin:/bin".to_string()),
            routes: Mutex::new(HashMap::new()),
            tasks: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            processes: Mutex::new(Processes::default()),
            errors: Mutex::new(Vec::new()),
            changed,
        });
        let watchers = vec![
            tokio::spawn(watch_jobs(ctx.clone())),
            tokio::spawn(watch_pods(ctx.clone())),
        ];
        Ok(JobRunner {
            ctx,
            watchers,
            root,
        })
    }

    /// Makes the next Pod of the Job `target` names end as `fault`. Faults queue: each Pod takes
    /// the oldest fault that matches its Job.
    pub fn inject(&self, target: FaultTarget, fault: Fault) {
        lock(&self.ctx.faults).push((target, fault));
    }

    /// The container processes running now.
    pub fn running(&self) -> Vec<RunningProcess> {
        lock(&self.ctx.processes)
            .running
            .iter()
            .map(|(p, _)| p.clone())
            .collect()
    }

    /// Waits until a process of the Job `namespace/job` runs, and returns it.
    pub async fn wait_for_process(
        &self,
        namespace: &str,
        job: &str,
        timeout: Duration,
    ) -> Result<RunningProcess> {
        let mut changes = self.ctx.changed.subscribe();
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .running()
                .into_iter()
                .find(|p| p.namespace == namespace && p.job == job);
            if let Some(process) = found {
                return Ok(process);
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the job runner stopped"),
                Err(_) => bail!(
                    "no process of Job {namespace}/{job} ran within {timeout:?}; runner errors: {:?}",
                    self.errors()
                ),
            }
        }
    }

    /// The output (stdout and stderr) of a container, if it ran.
    pub fn log(&self, namespace: &str, pod: &str, container: &str) -> Option<String> {
        let path = pod_dir(&self.ctx.root, namespace, pod)
            .join("logs")
            .join(format!("{container}.log"));
        std::fs::read(path)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }

    /// The local dir of the PersistentVolumeClaim `namespace/claim` (shared by the Pods that
    /// mount it, for the runner's lifetime).
    pub fn claim_dir(&self, namespace: &str, claim: &str) -> PathBuf {
        claim_dir(&self.ctx.root, namespace, claim)
    }

    /// The local dir of a `hostPath` volume with this path.
    pub fn host_path_dir(&self, path: &str) -> PathBuf {
        self.ctx.root.join("hostpath").join(relative(path))
    }

    /// The runner's temp dir (volumes, logs, termination messages).
    pub fn dir(&self) -> &Path {
        self.root.path()
    }

    /// What went wrong so far (API errors and the like; also printed to stderr).
    pub fn errors(&self) -> Vec<String> {
        lock(&self.ctx.errors).clone()
    }
}

impl Drop for JobRunner {
    fn drop(&mut self) {
        for task in &self.watchers {
            task.abort();
        }
        for task in lock(&self.ctx.tasks).iter() {
            task.abort();
        }
        let running = {
            let mut processes = lock(&self.ctx.processes);
            processes.stopped = true;
            std::mem::take(&mut processes.running)
        };
        for (_, process) in running {
            process.stop();
        }
    }
}

/// Jobs claimed by any runner of this process: one runner per Job.
fn claimed() -> &'static Mutex<HashSet<String>> {
    static CLAIMED: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    CLAIMED.get_or_init(|| Mutex::new(HashSet::new()))
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Default)]
struct Processes {
    running: Vec<(RunningProcess, Arc<OwnedProcess>)>,
    /// Set when the runner is dropped: no new process may start.
    stopped: bool,
}

/// What the runner's tasks share.
struct Ctx {
    client: Client,
    options: Options,
    root: PathBuf,
    /// `PATH` of the processes.
    path: String,
    /// Job uid → its task's signals.
    routes: Mutex<HashMap<String, mpsc::UnboundedSender<Signal>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    faults: Mutex<Vec<(FaultTarget, Fault)>>,
    processes: Mutex<Processes>,
    errors: Mutex<Vec<String>>,
    /// Bumped when the set of running processes changes.
    changed: watch::Sender<u64>,
}

impl Ctx {
    fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as Resource>::DynamicType: Default,
    {
        match &self.options.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
        }
    }

    fn error(&self, message: String) {
        eprintln!("cairn-tests job runner: {message}");
        lock(&self.errors).push(message);
    }

    /// A watch error: the watcher lists and watches again by itself (a busy API server may drop
    /// a watch or answer 410 Gone), so it is shown but is not one of [`JobRunner::errors`].
    fn watch_error(&self, message: String) {
        eprintln!("cairn-tests job runner (retrying): {message}");
    }

    fn take_fault(&self, job: &Job) -> Option<Fault> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|(target, _)| target.matches(job))?;
        Some(faults.remove(i).1)
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    /// A new or changed Job: start running it, or tell its task.
    async fn job_seen(self: &Arc<Self>, job: Job) {
        let Some(uid) = job.metadata.uid.clone() else {
            return;
        };
        if let Some(route) = lock(&self.routes).get(&uid) {
            let _ = route.send(Signal::Job(Box::new(job)));
            return;
        }
        if job.metadata.deletion_timestamp.is_some() || job_finished(&job) {
            return;
        }
        if !lock(claimed()).insert(uid.clone()) {
            return;
        }
        // A Job that has Pods already was started by someone else (e.g. an earlier runner).
        let namespace = job.namespace().unwrap_or_default();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
        let selector = format!("{LABEL_CONTROLLER_UID}={uid}");
        match pods.list(&ListParams::default().labels(&selector)).await {
            Ok(list) if !list.items.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                self.error(format!(
                    "listing the Pods of Job {namespace}/{}: {e}",
                    job.name_any()
                ));
                return;
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.routes).insert(uid.clone(), tx);
        let ctx = self.clone();
        let task = tokio::spawn(async move {
            let label = format!("Job {}/{}", namespace, job.name_any());
            if let Err(e) = JobRun::new(ctx.clone(), job, rx).run().await {
                ctx.error(format!("{label}: {e:#}"));
            }
            lock(&ctx.routes).remove(&uid);
        });
        lock(&self.tasks).push(task);
    }

    fn job_gone(&self, job: &Job) {
        if let Some(uid) = &job.metadata.uid
            && let Some(route) = lock(&self.routes).get(uid)
        {
            let _ = route.send(Signal::JobGone);
        }
    }

    fn pod_seen(&self, pod: Pod, gone: bool) {
        let Some(job_uid) = pod
            .owner_references()
            .iter()
            .find(|o| o.kind == "Job" && o.controller == Some(true))
            .map(|o| o.uid.clone())
            .or_else(|| pod.labels().get(LABEL_CONTROLLER_UID).cloned())
        else {
            return;
        };
        if let Some(route) = lock(&self.routes).get(&job_uid) {
            let signal = if gone {
                Signal::PodGone(pod.name_any())
            } else {
                Signal::Pod(Box::new(pod))
            };
            let _ = route.send(signal);
        }
    }
}

async fn watch_jobs(ctx: Arc<Ctx>) {
    let config = watcher::Config::default().labels(&ctx.options.job_selector);
    let mut events = watcher(ctx.api::<Job>(), config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(job) | watcher::Event::InitApply(job)) => {
                ctx.job_seen(job).await
            }
            Ok(watcher::Event::Delete(job)) => ctx.job_gone(&job),
            Ok(_) => {}
            Err(e) => ctx.watch_error(format!("watching Jobs: {e}")),
        }
    }
}

async fn watch_pods(ctx: Arc<Ctx>) {
    // The Pods carry the template's labels, the Job's included.
    let config = watcher::Config::default().labels(&ctx.options.job_selector);
    let mut events = watcher(ctx.api::<Pod>(), config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod)) => {
                ctx.pod_seen(pod, false)
            }
            Ok(watcher::Event::Delete(pod)) => ctx.pod_seen(pod, true),
            Ok(_) => {}
            Err(e) => ctx.watch_error(format!("watching Pods: {e}")),
        }
    }
}

/// What a Job's task hears from the watchers.
enum Signal {
    Job(Box<Job>),
    JobGone,
    Pod(Box<Pod>),
    PodGone(String),
}

/// How a Pod ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Succeeded,
    Failed,
}

/// Why a Pod's run stopped early.
enum Stop {
    /// The Pod is being deleted (or is gone).
    Deleted,
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Stop {
    fn from(e: anyhow::Error) -> Self {
        Stop::Fatal(e)
    }
}

/// Why a container cannot start yet, or at all.
enum Setup {
    /// A Secret, ConfigMap or key is missing: wait for it (`CreateContainerConfigError`).
    Config(String),
    /// It cannot run (`StartError`), e.g. its program does not exist.
    Start(String),
    Fatal(anyhow::Error),
}

impl From<anyhow::Error> for Setup {
    fn from(e: anyhow::Error) -> Self {
        Setup::Fatal(e)
    }
}

/// One Job, from its first Pod until it is gone: the job controller's and the garbage
/// collector's part.
struct JobRun {
    ctx: Arc<Ctx>,
    job: Job,
    namespace: String,
    name: String,
    uid: String,
    rx: mpsc::UnboundedReceiver<Signal>,
    jobs: Api<Job>,
    pods: Api<Pod>,
    /// Its deletion has been seen (and handled).
    deleting: bool,
    /// The deletion waits for the Pods (`foregroundDeletion` finalizer).
    foreground: bool,
    gone: bool,
    started: bool,
    failed: i32,
}

impl JobRun {
    fn new(ctx: Arc<Ctx>, job: Job, rx: mpsc::UnboundedReceiver<Signal>) -> Self {
        let namespace = job.namespace().unwrap_or_default();
        let name = job.name_any();
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let jobs = Api::namespaced(ctx.client.clone(), &namespace);
        let pods = Api::namespaced(ctx.client.clone(), &namespace);
        Self {
            ctx,
            job,
            namespace,
            name,
            uid,
            rx,
            jobs,
            pods,
            deleting: false,
            foreground: false,
            gone: false,
            started: false,
            failed: 0,
        }
    }

    async fn run(mut self) -> Result<()> {
        let backoff_limit = self
            .job
            .spec
            .as_ref()
            .and_then(|s| s.backoff_limit)
            .unwrap_or(6);
        while !self.deleting {
            let outcome = self.run_pod().await?;
            if self.deleting {
                break;
            }
            match outcome {
                Outcome::Succeeded => {
                    self.finish(true).await?;
                    break;
                }
                Outcome::Failed => {
                    self.failed += 1;
                    if self.failed > backoff_limit {
                        self.finish(false).await?;
                        break;
                    }
                    let status = json!({"active": 0, "ready": 0, "failed": self.failed});
                    self.patch_status(status).await?;
                }
            }
        }
        // Until the Job is gone: collect its Pods when it is deleted.
        loop {
            if self.deleting && self.foreground {
                return self.finish_foreground_deletion().await;
            }
            if self.gone {
                return Ok(());
            }
            match self.rx.recv().await {
                Some(signal) => self.absorb(signal, None).await?,
                None => return Ok(()),
            }
        }
    }

    /// Takes in what the watchers saw; `pod` is the Pod being run, if any.
    async fn absorb(&mut self, signal: Signal, pod: Option<&mut PodState>) -> Result<()> {
        match signal {
            Signal::Job(job) => {
                let deleting = job.metadata.deletion_timestamp.is_some();
                self.job = *job;
                if deleting && !self.deleting {
                    self.on_deletion().await?;
                }
            }
            Signal::JobGone => {
                self.gone = true;
                if !self.deleting {
                    self.on_deletion().await?;
                }
            }
            Signal::Pod(seen) => {
                if let Some(pod) = pod
                    && seen.metadata.uid.as_deref() == Some(pod.uid.as_str())
                    && seen.metadata.deletion_timestamp.is_some()
                {
                    pod.deleting = Some(seen.metadata.deletion_grace_period_seconds.unwrap_or(0));
                }
            }
            Signal::PodGone(name) => {
                if let Some(pod) = pod
                    && pod.name == name
                {
                    pod.gone = true;
                }
            }
        }
        Ok(())
    }

    /// The garbage collector's part when the Job is deleted.
    async fn on_deletion(&mut self) -> Result<()> {
        self.deleting = true;
        let finalizers = self.job.finalizers().to_vec();
        let pods = self.own_pods().await?;
        if !self.gone && finalizers.iter().any(|f| f == "orphan") {
            for pod in pods {
                let owners: Vec<OwnerReference> = pod
                    .owner_references()
                    .iter()
                    .filter(|o| o.uid != self.uid)
                    .cloned()
                    .collect();
                let patch = json!({"metadata": {"ownerReferences": owners}});
                ignore_missing(
                    self.pods
                        .patch(&pod.name_any(), &patch_params(), &Patch::Merge(&patch))
                        .await,
                )
                .with_context(|| format!("orphaning Pod {}", pod.name_any()))?;
            }
            return self.remove_finalizer("orphan").await;
        }
        self.foreground = !self.gone && finalizers.iter().any(|f| f == "foregroundDeletion");
        for pod in pods {
            ignore_missing(
                self.pods
                    .delete(&pod.name_any(), &DeleteParams::default())
                    .await,
            )
            .with_context(|| format!("deleting Pod {}", pod.name_any()))?;
        }
        Ok(())
    }

    async fn own_pods(&self) -> Result<Vec<Pod>> {
        let selector = format!("{LABEL_CONTROLLER_UID}={}", self.uid);
        let list = self
            .pods
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing the Pods of Job {}", self.name))?;
        Ok(list.items)
    }

    /// Waits for the Job's Pods to go, then lets the Job go.
    async fn finish_foreground_deletion(&mut self) -> Result<()> {
        let deadline = Instant::now() + COLLECT_TIMEOUT;
        while !self.own_pods().await?.is_empty() {
            if Instant::now() > deadline {
                bail!("its Pods are still there {COLLECT_TIMEOUT:?} after its deletion");
            }
            tokio::time::sleep(POLL * 5).await;
        }
        self.remove_finalizer("foregroundDeletion").await
    }

    async fn remove_finalizer(&self, finalizer: &str) -> Result<()> {
        for _ in 0..10 {
            let Some(job) = self.jobs.get_opt(&self.name).await? else {
                return Ok(());
            };
            if job.metadata.uid.as_deref() != Some(self.uid.as_str())
                || !job.finalizers().iter().any(|f| f == finalizer)
            {
                return Ok(());
            }
            let rest: Vec<&String> = job
                .finalizers()
                .iter()
                .filter(|f| *f != finalizer)
                .collect();
            let patch = json!({"metadata": {
                "finalizers": rest,
                "resourceVersion": job.resource_version(),
            }});
            match self
                .jobs
                .patch(&self.name, &patch_params(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 404 => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) => {
                    return Err(e).with_context(|| format!("removing finalizer {finalizer}"));
                }
            }
        }
        bail!("could not remove finalizer {finalizer}: conflicts")
    }

    /// Writes the Job's status subresource (nothing once it is being deleted).
    async fn patch_status(&mut self, status: Value) -> Result<()> {
        if self.deleting {
            return Ok(());
        }
        let patch = json!({ "status": status });
        match self
            .jobs
            .patch_status(&self.name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(job) => {
                self.job = job;
                Ok(())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("writing the status of Job {}", self.name)),
        }
    }

    /// The job controller's two steps to a finished Job.
    async fn finish(&mut self, success: bool) -> Result<()> {
        let now = now();
        let mut conditions: Vec<Value> = self
            .job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .map(|c| {
                c.iter()
                    .filter_map(|c| serde_json::to_value(c).ok())
                    .collect()
            })
            .unwrap_or_default();
        let (first, last, reason, message) = if success {
            (
                "SuccessCriteriaMet",
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            )
        } else {
            (
                "FailureTarget",
                "Failed",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        };
        let condition = |kind: &str| {
            json!({
                "type": kind, "status": "True", "reason": reason, "message": message,
                "lastProbeTime": now, "lastTransitionTime": now,
            })
        };
        conditions.push(condition(first));
        let mut status = json!({
            "active": 0, "ready": 0, "terminating": 0, "conditions": conditions,
        });
        if success {
            status["succeeded"] = json!(1);
        } else {
            status["failed"] = json!(self.failed);
        }
        self.patch_status(status).await?;
        conditions.push(condition(last));
        let mut status = json!({ "conditions": conditions });
        if success {
            status["completionTime"] = json!(now);
        }
        self.patch_status(status).await
    }

    /// Creates the next Pod and runs it to its end; no process of it outlives this.
    async fn run_pod(&mut self) -> Result<Outcome> {
        let fault = self.ctx.take_fault(&self.job);
        let created = self.create_pod().await?;
        let status = if self.started {
            json!({"active": 1, "ready": 0})
        } else {
            json!({"startTime": now(), "active": 1, "ready": 0, "terminating": 0})
        };
        self.started = true;
        self.patch_status(status).await?;
        let mut pod = PodState::new(&self.ctx.root, &self.namespace, &created)?;
        let result = self.drive_pod(&mut pod, fault).await;
        let outcome = match result {
            Ok(outcome) => Ok(outcome),
            Err(Stop::Deleted) => self.terminate(&mut pod).await,
            Err(Stop::Fatal(e)) => Err(e),
        };
        for slot in &mut pod.slots {
            if let Some(process) = slot.process.take() {
                self.ctx.forget(process.pid());
                process.stop();
            }
        }
        outcome
    }

    /// The job controller's Pod for this Job.
    async fn create_pod(&self) -> Result<Pod> {
        let template = self
            .job
            .spec
            .as_ref()
            .map(|s| s.template.clone())
            .ok_or_else(|| anyhow!("the Job has no spec"))?;
        let mut spec = template
            .spec
            .ok_or_else(|| anyhow!("the Job's template has no Pod spec"))?;
        spec.node_name = Some(self.ctx.options.node_name.clone());
        let meta = template.metadata.unwrap_or_default();
        let mut labels = meta.labels.unwrap_or_default();
        for (key, value) in [
            (LEGACY_LABEL_CONTROLLER_UID, &self.uid),
            (LABEL_CONTROLLER_UID, &self.uid),
            (LEGACY_LABEL_JOB_NAME, &self.name),
            (LABEL_JOB_NAME, &self.name),
        ] {
            labels.insert(key.to_string(), value.clone());
        }
        let owner = OwnerReference {
            api_version: "batch/v1".to_string(),
            kind: "Job".to_string(),
            name: self.name.clone(),
            uid: self.uid.clone(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let mut last_error = None;
        // The name is ours to choose (the API server would pick the same form from
        // generateName), so a clash only means trying another.
        for _ in 0..5 {
            let pod = Pod {
                metadata: ObjectMeta {
                    name: Some(generate_name(&self.name)),
                    namespace: Some(self.namespace.clone()),
                    labels: Some(labels.clone()),
                    annotations: meta.annotations.clone(),
                    owner_references: Some(vec![owner.clone()]),
                    ..Default::default()
                },
                spec: Some(spec.clone()),
                status: None,
            };
            match self.pods.create(&PostParams::default(), &pod).await {
                Ok(created) => return Ok(created),
                Err(kube::Error::Api(e)) if e.code == 409 => last_error = Some(e.to_string()),
                Err(e) => return Err(e).context("creating the Pod"),
            }
        }
        bail!("creating the Pod: {}", last_error.unwrap_or_default())
    }

    /// The kubelet's part: runs the Pod until it ends.
    async fn drive_pod(
        &mut self,
        pod: &mut PodState,
        fault: Option<Fault>,
    ) -> Result<Outcome, Stop> {
        self.write_pod(pod).await?;
        // Volumes first: a missing Secret keeps every container from starting.
        loop {
            match self.prepare_volumes(pod).await {
                Ok(()) => break,
                Err(Setup::Config(message)) => {
                    for slot in &mut pod.slots {
                        slot.state = CState::waiting("ContainerCreating", Some(message.clone()));
                    }
                    self.write_pod(pod).await?;
                    self.pause(pod, CONFIG_RETRY).await?;
                }
                Err(Setup::Start(message)) => {
                    return Err(Stop::Fatal(anyhow!(message)));
                }
                Err(Setup::Fatal(e)) => return Err(Stop::Fatal(e)),
            }
        }
        pod.sandbox_ready = true;
        for slot in &mut pod.slots {
            if matches!(&slot.state, CState::Waiting { reason, .. } if reason == "ContainerCreating")
            {
                slot.state = CState::waiting(
                    if pod.has_init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    },
                    None,
                );
            }
        }
        if fault == Some(Fault::ImagePullBackOff) {
            if let Some(slot) = pod.slots.first_mut() {
                let message = format!(
                    "Back-off pulling image {:?}: injected by the cairn test job runner",
                    slot.image
                );
                slot.state = CState::waiting("ImagePullBackOff", Some(message));
            }
            self.write_pod(pod).await?;
            loop {
                self.pause(pod, Duration::from_secs(3600)).await?;
            }
        }

        // Init containers, one after the other; the first failure fails the Pod.
        let init: Vec<usize> = (0..pod.slots.len())
            .filter(|&i| pod.slots[i].init)
            .collect();
        for i in init {
            self.start_container(pod, i).await?;
            self.write_pod(pod).await?;
            self.wait_exits(pod, &[i]).await?;
            if !pod.slots[i].succeeded() {
                pod.phase = "Failed";
                self.write_pod(pod).await?;
                return Ok(Outcome::Failed);
            }
        }

        // Main containers, together.
        let main: Vec<usize> = (0..pod.slots.len())
            .filter(|&i| !pod.slots[i].init)
            .collect();
        for &i in &main {
            if fault == Some(Fault::Hang) {
                pod.slots[i].state = CState::Running { started: now() };
            } else {
                self.start_container(pod, i).await?;
            }
        }
        pod.phase = "Running";
        self.write_pod(pod).await?;
        if pod.ready() {
            self.patch_status(json!({"ready": 1})).await?;
        }
        match fault {
            Some(Fault::OomKilled) => {
                if let Some(&i) = main.first()
                    && let Some(process) = &pod.slots[i].process
                {
                    kill_group(process, libc::SIGKILL);
                    pod.slots[i].oom_killed = true;
                }
            }
            Some(Fault::Evicted) => {
                for &i in &main {
                    if let Some(process) = &pod.slots[i].process {
                        kill_group(process, libc::SIGKILL);
                    }
                }
                self.wait_exits(pod, &main).await?;
                for &i in &main {
                    if let CState::Running { started } = &pod.slots[i].state {
                        pod.slots[i].state = CState::Terminated {
                            exit_code: 137,
                            reason: "Error".into(),
                            message: String::new(),
                            started: started.clone(),
                            finished: now(),
                        };
                    }
                }
                pod.phase = "Failed";
                pod.reason = Some("Evicted".into());
                pod.message = Some(EVICTION_MESSAGE.into());
                pod.disruption = Some(EVICTION_MESSAGE.into());
                self.write_pod(pod).await?;
                return Ok(Outcome::Failed);
            }
            _ => {}
        }
        self.wait_exits(pod, &main).await?;
        let outcome = if main.iter().all(|&i| pod.slots[i].succeeded()) {
            pod.phase = "Succeeded";
            Outcome::Succeeded
        } else {
            pod.phase = "Failed";
            Outcome::Failed
        };
        self.write_pod(pod).await?;
        Ok(outcome)
    }

    /// Waits up to `duration`, taking in signals; stops when the Pod is being deleted.
    async fn pause(&mut self, pod: &mut PodState, duration: Duration) -> Result<(), Stop> {
        let deadline = Instant::now() + duration;
        loop {
            if pod.deleting.is_some() || pod.gone {
                return Err(Stop::Deleted);
            }
            tokio::select! {
                signal = self.rx.recv() => match signal {
                    Some(signal) => self.absorb(signal, Some(pod)).await?,
                    None => return Err(Stop::Fatal(anyhow!("the job runner stopped"))),
                },
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
            }
        }
    }

    /// Waits until the containers `slots` have ended (a container running without a process,
    /// under [`Fault::Hang`], never ends).
    async fn wait_exits(&mut self, pod: &mut PodState, slots: &[usize]) -> Result<(), Stop> {
        loop {
            self.reap(pod)?;
            if slots
                .iter()
                .all(|&i| matches!(pod.slots[i].state, CState::Terminated { .. }))
            {
                return Ok(());
            }
            self.pause(pod, POLL).await?;
        }
    }

    /// Records the end of every container process that has exited.
    fn reap(&self, pod: &mut PodState) -> Result<()> {
        for slot in &mut pod.slots {
            let Some(process) = &slot.process else {
                continue;
            };
            let Some(status) = process.exited()? else {
                continue;
            };
            let pid = process.pid();
            // The container is its whole process group: nothing of it outlives its main process.
            if process_group_alive(pid) {
                // SAFETY: plain syscall on the group our child led.
                unsafe {
                    libc::killpg(pid as libc::pid_t, libc::SIGKILL);
                }
            }
            slot.process = None;
            self.ctx.forget(pid);
            slot.finish(status);
        }
        Ok(())
    }

    /// The kubelet's part when the Pod is deleted: kill, report, remove.
    async fn terminate(&mut self, pod: &mut PodState) -> Result<Outcome> {
        let grace = Duration::from_secs(pod.deleting.unwrap_or(0).max(0) as u64)
            .min(self.ctx.options.max_grace_period);
        for slot in &pod.slots {
            if let Some(process) = &slot.process {
                kill_group(process, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + grace;
        loop {
            self.reap(pod)?;
            if pod.slots.iter().all(|s| s.process.is_none()) {
                break;
            }
            if Instant::now() >= deadline {
                for slot in &pod.slots {
                    if let Some(process) = &slot.process {
                        kill_group(process, libc::SIGKILL);
                    }
                }
            }
            if Instant::now() >= deadline + Duration::from_secs(10) {
                bail!("container processes of Pod {} survive SIGKILL", pod.name);
            }
            tokio::time::sleep(POLL).await;
        }
        // A container that "ran" without a process ends as if killed.
        for slot in &mut pod.slots {
            if let CState::Running { started } = &slot.state {
                slot.state = CState::Terminated {
                    exit_code: 137,
                    reason: "Error".into(),
                    message: String::new(),
                    started: started.clone(),
                    finished: now(),
                };
            }
        }
        let succeeded = pod.slots.iter().filter(|s| !s.init).all(Slot::succeeded);
        pod.phase = if succeeded { "Succeeded" } else { "Failed" };
        if !pod.gone {
            if let Err(Stop::Fatal(e)) = self.write_pod(pod).await {
                return Err(e);
            }
            let params = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(pod.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.pods.delete(&pod.name, &params).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e).with_context(|| format!("removing Pod {}", pod.name)),
            }
        }
        Ok(if succeeded {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        })
    }

    /// Writes the Pod's status subresource.
    async fn write_pod(&self, pod: &mut PodState) -> Result<(), Stop> {
        if pod.gone {
            return Err(Stop::Deleted);
        }
        let patch = json!({ "status": pod.status_json() });
        match self
            .pods
            .patch_status(&pod.name, &patch_params(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => {
                pod.gone = true;
                Err(Stop::Deleted)
            }
            Err(e) => Err(Stop::Fatal(
                anyhow!(e).context(format!("writing the status of Pod {}", pod.name)),
            )),
        }
    }

    /// Materialises the Pod's volumes as dirs.
    async fn prepare_volumes(&self, pod: &mut PodState) -> Result<(), Setup> {
        let volumes = pod.spec.volumes.clone().unwrap_or_default();
        for volume in volumes {
            let own = pod.dir.join("volumes").join(&volume.name);
            let dir = if let Some(secret) = &volume.secret {
                let name = secret.secret_name.clone().unwrap_or_default();
                let optional = secret.optional.unwrap_or(false);
                let data = self.secret_data(&name).await?;
                let Some(data) = data.or_else(|| optional.then(BTreeMap::new)) else {
                    return Err(Setup::Config(format!(
                        "MountVolume.SetUp failed for volume {:?}: secret {name:?} not found",
                        volume.name
                    )));
                };
                let items = secret.items.as_deref();
                write_files(&own, &data, items, secret.default_mode, optional)?;
                own
            } else if let Some(config_map) = &volume.config_map {
                let name = &config_map.name;
                let optional = config_map.optional.unwrap_or(false);
                let data = self.config_map_data(name).await?;
                let Some(data) = data.or_else(|| optional.then(BTreeMap::new)) else {
                    return Err(Setup::Config(format!(
                        "MountVolume.SetUp failed for volume {:?}: configmap {name:?} not found",
                        volume.name
                    )));
                };
                let items = config_map.items.as_deref();
                write_files(&own, &data, items, config_map.default_mode, optional)?;
                own
            } else if let Some(claim) = &volume.persistent_volume_claim {
                claim_dir(&self.ctx.root, &self.namespace, &claim.claim_name)
            } else if let Some(host) = &volume.host_path {
                self.ctx.root.join("hostpath").join(relative(&host.path))
            } else if let Some(nfs) = &volume.nfs {
                self.ctx
                    .root
                    .join("nfs")
                    .join(relative(&nfs.server))
                    .join(relative(&nfs.path))
            } else {
                // emptyDir, and whatever else: a fresh dir of the Pod's own.
                own
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            pod.volumes.insert(volume.name.clone(), dir);
        }
        Ok(())
    }

    async fn secret_data(&self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let secret = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading Secret {name}"))?;
        Ok(secret.map(|s| {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }

    async fn config_map_data(&self, name: &str) -> Result<Option<BTreeMap<String, Vec<u8>>>> {
        let api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        let config_map = api
            .get_opt(name)
            .await
            .with_context(|| format!("reading ConfigMap {name}"))?;
        Ok(config_map.map(|c| {
            let mut data: BTreeMap<String, Vec<u8>> = c
                .binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in c.data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        }))
    }

    /// Starts container `i`, waiting (as `CreateContainerConfigError`) while a Secret or
    /// ConfigMap it needs is missing. A container that cannot start ends as `StartError`.
    async fn start_container(&mut self, pod: &mut PodState, i: usize) -> Result<(), Stop> {
        let launch = loop {
            match self.setup_container(pod, i).await {
                Ok(launch) => break launch,
                Err(Setup::Config(message)) => {
                    pod.slots[i].state =
                        CState::waiting("CreateContainerConfigError", Some(message));
                    self.write_pod(pod).await?;
                    self.pause(pod, CONFIG_RETRY).await?;
                }
                Err(Setup::Start(message)) => {
                    pod.slots[i].start_error(message);
                    return Ok(());
                }
                Err(Setup::Fatal(e)) => return Err(Stop::Fatal(e)),
            }
        };
        let slot = &mut pod.slots[i];
        let _ = std::fs::remove_file(&slot.termination_file);
        if let Some(parent) = slot.log.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let name = format!("{}/{}", pod.name, slot.name);
        let mut processes = lock(&self.ctx.processes);
        if processes.stopped {
            return Err(Stop::Fatal(anyhow!("the job runner stopped")));
        }
        match OwnedProcess::spawn(&name, Path::new("env"), &launch.env_argv(), &slot.log) {
            Ok(process) => {
                let process = Arc::new(process);
                processes.running.push((
                    RunningProcess {
                        namespace: self.namespace.clone(),
                        job: self.name.clone(),
                        pod: pod.name.clone(),
                        container: slot.name.clone(),
                        pid: process.pid(),
                    },
                    process.clone(),
                ));
                drop(processes);
                self.ctx.notify();
                slot.container_id = Some(format!("cairn-test://{}", process.pid()));
                slot.process = Some(process);
                slot.state = CState::Running { started: now() };
            }
            Err(e) => {
                drop(processes);
                slot.start_error(format!("{e:#}"));
            }
        }
        Ok(())
    }

    /// A kubeconfig with a token of the Pod's service account (see
    /// [`Options::service_account_credentials`]), when the Pod mounts one.
    async fn service_account_kubeconfig(&self, pod: &PodState) -> Result<Option<String>, Setup> {
        let Some(access) = &self.ctx.options.api_access else {
            return Ok(None);
        };
        if pod.spec.automount_service_account_token == Some(false) {
            return Ok(None);
        }
        let account = pod
            .spec
            .service_account_name
            .as_deref()
            .unwrap_or("default");
        let api: Api<ServiceAccount> = Api::namespaced(self.ctx.client.clone(), &pod.namespace);
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: Vec::new(),
                expiration_seconds: Some(3600),
                ..TokenRequestSpec::default()
            },
            ..TokenRequest::default()
        };
        let token = api
            .create_token_request(account, &PostParams::default(), &request)
            .await
            .map_err(|e| Setup::Config(format!("service account {account:?}: {e}")))?
            .status
            .map(|s| s.token)
            .ok_or_else(|| Setup::Config(format!("no token for service account {account:?}")))?;
        let ca = k8s_openapi::ByteString(access.ca_pem.as_bytes().to_vec());
        let doc = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "in-cluster", "cluster": {
                "server": access.server, "certificate-authority-data": ca}}],
            "users": [{"name": account, "user": {"token": token}}],
            "contexts": [{"name": "in-cluster", "context": {
                "cluster": "in-cluster", "user": account, "namespace": pod.namespace}}],
            "current-context": "in-cluster",
        });
        let path = pod.dir.join("serviceaccount.kubeconfig");
        std::fs::write(&path, doc.to_string())
            .map_err(|e| Setup::Config(format!("writing {}: {e}", path.display())))?;
        Ok(Some(path.display().to_string()))
    }

    /// The program, arguments, environment and working dir of container `i`.
    async fn setup_container(&self, pod: &PodState, i: usize) -> Result<Launch, Setup> {
        let slot = &pod.slots[i];
        let c = &slot.container;
        let rewrites = self.rewrites(pod, slot)?;

        // Environment, in Kubernetes' order: envFrom, then env; `$(VAR)` refers to earlier ones.
        let mut env: Vec<(String, String)> = Vec::new();
        let set = |env: &mut Vec<(String, String)>, name: String, value: String| {
            if name.is_empty() || name.contains('=') {
                return;
            }
            env.retain(|(n, _)| *n != name);
            env.push((name, value));
        };
        set(&mut env, "PATH".into(), self.ctx.path.clone());
        set(&mut env, "HOSTNAME".into(), pod.name.clone());
        for (k, v) in &self.ctx.options.env {
            set(&mut env, k.clone(), v.clone());
        }
        if let Some(kubeconfig) = self.service_account_kubeconfig(pod).await? {
            set(&mut env, "KUBECONFIG".into(), kubeconfig);
        }
        for source in c.env_from.iter().flatten() {
            let prefix = source.prefix.clone().unwrap_or_default();
            let data = if let Some(secret) = &source.secret_ref {
                match self.secret_data(&secret.name).await? {
                    Some(data) => data,
                    None if secret.optional.unwrap_or(false) => BTreeMap::new(),
                    None => {
                        return Err(Setup::Config(format!("secret {:?} not found", secret.name)));
                    }
                }
            } else if let Some(config_map) = &source.config_map_ref {
                match self.config_map_data(&config_map.name).await? {
                    Some(data) => data,
                    None if config_map.optional.unwrap_or(false) => BTreeMap::new(),
                    None => {
                        return Err(Setup::Config(format!(
                            "configmap {:?} not found",
                            config_map.name
                        )));
                    }
                }
            } else {
                BTreeMap::new()
            };
            for (k, v) in data {
                set(
                    &mut env,
                    format!("{prefix}{k}"),
                    String::from_utf8_lossy(&v).into_owned(),
                );
            }
        }
        for var in c.env.iter().flatten() {
            let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
            let value = if let Some(value) = &var.value {
                Some(rewrites.apply(&expand(value, &lookup)))
            } else if let Some(from) = &var.value_from {
                if let Some(key) = &from.secret_key_ref {
                    let optional = key.optional.unwrap_or(false);
                    match self.secret_data(&key.name).await? {
                        Some(data) => match data.get(&key.key) {
                            Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                            None if optional => None,
                            None => {
                                return Err(Setup::Config(format!(
                                    "couldn't find key {} in Secret {}/{}",
                                    key.key, self.namespace, key.name
                                )));
                            }
                        },
                        None if optional => None,
                        None => {
                            return Err(Setup::Config(format!("secret {:?} not found", key.name)));
                        }
                    }
                } else if let Some(key) = &from.config_map_key_ref {
                    let optional = key.optional.unwrap_or(false);
                    match self.config_map_data(&key.name).await? {
                        Some(data) => match data.get(&key.key) {
                            Some(v) => Some(String::from_utf8_lossy(v).into_owned()),
                            None if optional => None,
                            None => {
                                return Err(Setup::Config(format!(
                                    "couldn't find key {} in ConfigMap {}/{}",
                                    key.key, self.namespace, key.name
                                )));
                            }
                        },
                        None if optional => None,
                        None => {
                            return Err(Setup::Config(format!(
                                "configmap {:?} not found",
                                key.name
                            )));
                        }
                    }
                } else if let Some(field) = &from.field_ref {
                    pod.field(&field.field_path, &self.ctx.options.node_name)
                } else {
                    // resourceFieldRef: no resources here.
                    None
                }
            } else {
                Some(String::new())
            };
            if let Some(value) = value {
                set(&mut env, var.name.clone(), value);
            }
        }
        set(
            &mut env,
            "CAIRN_TERMINATION_LOG".into(),
            slot.termination_file.display().to_string(),
        );

        // Command line.
        let lookup = |name: &str| env.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let words = |list: &Option<Vec<String>>| -> Vec<String> {
            list.iter()
                .flatten()
                .map(|w| rewrites.apply(&expand(w, &lookup)))
                .collect()
        };
        let command = words(&c.command);
        let mut args = words(&c.args);
        let image = c.image.clone().unwrap_or_default();
        let program = match command.split_first() {
            Some((first, rest)) => {
                let mut all = rest.to_vec();
                all.append(&mut args);
                args = all;
                self.ctx
                    .options
                    .commands
                    .get(first)
                    .or_else(|| {
                        let base = Path::new(first).file_name()?.to_str()?;
                        self.ctx.options.commands.get(base)
                    })
                    .cloned()
                    .unwrap_or_else(|| PathBuf::from(first))
            }
            None => self
                .ctx
                .options
                .images
                .get(&image)
                .or_else(|| self.ctx.options.images.get(image_repository(&image)))
                .cloned()
                .ok_or_else(|| {
                    Setup::Start(format!(
                        "container {:?} has no command and the job runner has no program for \
                         image {image:?} (Options::image)",
                        c.name
                    ))
                })?,
        };
        let search = lookup("PATH").unwrap_or_else(|| self.ctx.path.clone());
        let program = find_program(&program, &search).ok_or_else(|| {
            Setup::Start(format!(
                "exec: {:?}: executable file not found in $PATH",
                program.display().to_string()
            ))
        })?;
        if program.to_string_lossy().contains('=') {
            return Err(Setup::Start(format!(
                "the job runner cannot run a program whose path has '=': {}",
                program.display()
            )));
        }

        let workdir = match &c.working_dir {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(rewrites.apply(&expand(dir, &lookup)));
                if !dir.is_dir() {
                    if !dir.starts_with(&self.ctx.root) {
                        return Err(Setup::Start(format!(
                            "working directory {} does not exist on this machine",
                            dir.display()
                        )));
                    }
                    std::fs::create_dir_all(&dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                }
                dir
            }
            _ => {
                let dir = pod.dir.join("work");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                dir
            }
        };
        Ok(Launch {
            program,
            args,
            env,
            workdir,
        })
    }

    /// The container's mount paths (and termination message path) → local paths.
    fn rewrites(&self, pod: &PodState, slot: &Slot) -> Result<Rewrites, Setup> {
        let mut pairs = Vec::new();
        for mount in slot.container.volume_mounts.iter().flatten() {
            let Some(dir) = pod.volumes.get(&mount.name) else {
                return Err(Setup::Start(format!(
                    "volumeMount {:?} names no volume of the Pod",
                    mount.name
                )));
            };
            let mut local = dir.clone();
            if let Some(sub) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
                local = local.join(relative(sub));
                std::fs::create_dir_all(&local)
                    .with_context(|| format!("creating {}", local.display()))?;
            }
            pairs.push((mount.mount_path.clone(), local.display().to_string()));
        }
        let termination = slot
            .container
            .termination_message_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_TERMINATION_PATH.to_string());
        pairs.push((termination, slot.termination_file.display().to_string()));
        Ok(Rewrites::new(pairs))
    }
}

/// What a container process is started with.
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    workdir: PathBuf,
}

impl Launch {
    /// Arguments of `env -i -C <dir> -- NAME=value... program args...`: the harness's process
    /// helper starts a program with arguments only, `env` sets the rest up.
    fn env_argv(&self) -> Vec<String> {
        let mut argv = vec![
            "-i".to_string(),
            "-C".to_string(),
            self.workdir.display().to_string(),
            "--".to_string(),
        ];
        argv.extend(self.env.iter().map(|(k, v)| format!("{k}={v}")));
        argv.push(self.program.display().to_string());
        argv.extend(self.args.iter().cloned());
        argv
    }
}

/// A container's state, as the kubelet reports it.
#[derive(Clone, Debug)]
enum CState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started: String,
    },
    Terminated {
        exit_code: i32,
        reason: String,
        message: String,
        started: String,
        finished: String,
    },
}

impl CState {
    fn waiting(reason: &str, message: Option<String>) -> Self {
        CState::Waiting {
            reason: reason.to_string(),
            message,
        }
    }

    fn json(&self, container_id: Option<&str>) -> Value {
        match self {
            CState::Waiting { reason, message } => {
                let mut w = json!({ "reason": reason });
                if let Some(m) = message {
                    w["message"] = json!(m);
                }
                json!({ "waiting": w })
            }
            CState::Running { started } => json!({"running": {"startedAt": started}}),
            CState::Terminated {
                exit_code,
                reason,
                message,
                started,
                finished,
            } => {
                let mut t = json!({
                    "exitCode": exit_code, "reason": reason,
                    "startedAt": started, "finishedAt": finished,
                });
                if !message.is_empty() {
                    t["message"] = json!(message);
                }
                if let Some(id) = container_id {
                    t["containerID"] = json!(id);
                }
                json!({ "terminated": t })
            }
        }
    }
}

/// One container of the Pod being run.
struct Slot {
    name: String,
    image: String,
    init: bool,
    container: Container,
    state: CState,
    process: Option<Arc<OwnedProcess>>,
    container_id: Option<String>,
    log: PathBuf,
    termination_file: PathBuf,
    fallback_to_logs: bool,
    oom_killed: bool,
}

impl Slot {
    fn succeeded(&self) -> bool {
        matches!(self.state, CState::Terminated { exit_code: 0, .. })
    }

    fn start_error(&mut self, message: String) {
        let now = now();
        self.state = CState::Terminated {
            exit_code: 128,
            reason: "StartError".into(),
            message,
            started: now.clone(),
            finished: now,
        };
    }

    /// Records the process's exit as the kubelet would.
    fn finish(&mut self, status: ExitStatus) {
        let exit_code = status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
        let mut message = read_prefix(&self.termination_file, MAX_MESSAGE);
        if message.is_empty() && exit_code != 0 && self.fallback_to_logs {
            message = log_tail(&self.log);
        }
        let reason = if self.oom_killed {
            "OOMKilled"
        } else if exit_code == 0 {
            "Completed"
        } else {
            "Error"
        };
        let started = match &self.state {
            CState::Running { started } => started.clone(),
            _ => now(),
        };
        self.state = CState::Terminated {
            exit_code,
            reason: reason.to_string(),
            message,
            started,
            finished: now(),
        };
    }

    fn status_json(&self) -> Value {
        let running = matches!(self.state, CState::Running { .. });
        let ready = if self.init { self.succeeded() } else { running };
        let mut status = json!({
            "name": self.name,
            "image": self.image,
            "imageID": "",
            "ready": ready,
            "restartCount": 0,
            "started": running,
            "state": self.state.json(self.container_id.as_deref()),
        });
        if let Some(id) = &self.container_id {
            status["containerID"] = json!(id);
        }
        status
    }
}

/// The Pod being run, and what the kubelet reports about it.
struct PodState {
    name: String,
    uid: String,
    namespace: String,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    spec: PodSpec,
    dir: PathBuf,
    slots: Vec<Slot>,
    has_init: bool,
    volumes: BTreeMap<String, PathBuf>,
    phase: &'static str,
    start_time: String,
    sandbox_ready: bool,
    reason: Option<String>,
    message: Option<String>,
    /// Message of a `DisruptionTarget` condition.
    disruption: Option<String>,
    /// Condition type → (status, lastTransitionTime).
    transitions: BTreeMap<String, (bool, String)>,
    /// Grace period of its deletion, once it has a `deletionTimestamp`.
    deleting: Option<i64>,
    gone: bool,
}

impl PodState {
    fn new(root: &Path, namespace: &str, pod: &Pod) -> Result<Self> {
        let name = pod.name_any();
        let uid = pod
            .metadata
            .uid
            .clone()
            .ok_or_else(|| anyhow!("the created Pod {name} has no uid"))?;
        let spec = pod
            .spec
            .clone()
            .ok_or_else(|| anyhow!("the created Pod {name} has no spec"))?;
        let dir = pod_dir(root, namespace, &name);
        let has_init = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let mut slots = Vec::new();
        let all = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| (true, c))
            .chain(spec.containers.iter().map(|c| (false, c)));
        for (init, c) in all {
            slots.push(Slot {
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                init,
                container: c.clone(),
                state: CState::waiting(
                    if has_init {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    },
                    None,
                ),
                process: None,
                container_id: None,
                log: dir.join("logs").join(format!("{}.log", c.name)),
                termination_file: dir.join("termination").join(&c.name),
                fallback_to_logs: c.termination_message_policy.as_deref()
                    == Some("FallbackToLogsOnError"),
                oom_killed: false,
            });
        }
        for sub in ["logs", "termination", "volumes"] {
            std::fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        Ok(Self {
            name,
            uid,
            namespace: namespace.to_string(),
            labels: pod.labels().clone(),
            annotations: pod.annotations().clone(),
            spec,
            dir,
            slots,
            has_init,
            volumes: BTreeMap::new(),
            phase: "Pending",
            start_time: now(),
            sandbox_ready: false,
            reason: None,
            message: None,
            disruption: None,
            transitions: BTreeMap::new(),
            deleting: None,
            gone: false,
        })
    }

    /// All main containers run.
    fn ready(&self) -> bool {
        self.slots
            .iter()
            .filter(|s| !s.init)
            .all(|s| matches!(s.state, CState::Running { .. }))
    }

    /// A `fieldRef` value.
    fn field(&self, path: &str, node: &str) -> Option<String> {
        let keyed = |prefix: &str, map: &BTreeMap<String, String>| {
            let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
            map.get(key).cloned()
        };
        match path {
            "metadata.name" => Some(self.name.clone()),
            "metadata.namespace" => Some(self.namespace.clone()),
            "metadata.uid" => Some(self.uid.clone()),
            "spec.nodeName" => Some(node.to_string()),
            "spec.serviceAccountName" => self.spec.service_account_name.clone(),
            "status.hostIP" | "status.podIP" | "status.hostIPs" | "status.podIPs" => {
                Some(NODE_IP.to_string())
            }
            _ => keyed("metadata.labels['", &self.labels)
                .or_else(|| keyed("metadata.annotations['", &self.annotations)),
        }
    }

    fn condition(
        &mut self,
        kind: &str,
        status: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> Value {
        let now = now();
        let entry = self
            .transitions
            .entry(kind.to_string())
            .or_insert((status, now.clone()));
        if entry.0 != status {
            *entry = (status, now);
        }
        let mut c = json!({
            "type": kind,
            "status": if status { "True" } else { "False" },
            "lastProbeTime": null,
            "lastTransitionTime": entry.1,
        });
        if let Some(r) = reason {
            c["reason"] = json!(r);
        }
        if let Some(m) = message {
            c["message"] = json!(m);
        }
        c
    }

    fn status_json(&mut self) -> Value {
        let finished = matches!(self.phase, "Succeeded" | "Failed");
        let names = |filter: &dyn Fn(&Slot) -> bool| {
            let list: Vec<&str> = self
                .slots
                .iter()
                .filter(|s| filter(s))
                .map(|s| s.name.as_str())
                .collect();
            format!("[{}]", list.join(" "))
        };
        let incomplete_init = names(&|s: &Slot| s.init && !s.succeeded());
        let unready = names(&|s: &Slot| !s.init && !matches!(s.state, CState::Running { .. }));
        let initialized = self.slots.iter().filter(|s| s.init).all(Slot::succeeded);
        let ready = self.ready() && !finished;
        let mut conditions = Vec::new();
        if let Some(message) = self.disruption.clone() {
            conditions.push(self.condition(
                "DisruptionTarget",
                true,
                Some("TerminationByKubelet"),
                Some(message),
            ));
        }
        let sandbox = self.sandbox_ready && !finished;
        conditions.push(self.condition("PodReadyToStartContainers", sandbox, None, None));
        conditions.push(if initialized {
            self.condition("Initialized", true, None, None)
        } else {
            self.condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: {incomplete_init}"
                )),
            )
        });
        let (reason, message) = match self.phase {
            "Succeeded" => (Some("PodCompleted"), None),
            "Failed" => (Some("PodFailed"), None),
            _ if ready => (None, None),
            _ => (
                Some("ContainersNotReady"),
                Some(format!("containers with unready status: {unready}")),
            ),
        };
        conditions.push(self.condition("Ready", ready, reason, message.clone()));
        conditions.push(self.condition("ContainersReady", ready, reason, message));
        conditions.push(self.condition("PodScheduled", true, None, None));

        let statuses = |init: bool| -> Vec<Value> {
            self.slots
                .iter()
                .filter(|s| s.init == init)
                .map(Slot::status_json)
                .collect()
        };
        let mut status = json!({
            "phase": self.phase,
            "conditions": conditions,
            "hostIP": NODE_IP,
            "hostIPs": [{"ip": NODE_IP}],
            "podIP": NODE_IP,
            "podIPs": [{"ip": NODE_IP}],
            "startTime": self.start_time,
            "containerStatuses": statuses(false),
        });
        if self.has_init {
            status["initContainerStatuses"] = json!(statuses(true));
        }
        if let Some(reason) = &self.reason {
            status["reason"] = json!(reason);
        }
        if let Some(message) = &self.message {
            status["message"] = json!(message);
        }
        status
    }
}

/// Mount paths → local paths, applied to strings at path-name boundaries, longest first.
#[derive(Clone, Debug, Default)]
pub struct Rewrites(Vec<(String, String)>);

impl Rewrites {
    /// `(container path, local path)` pairs; trailing slashes and `/` itself are ignored.
    pub fn new(pairs: Vec<(String, String)>) -> Self {
        let mut pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(from, to)| (from.trim_end_matches('/').to_string(), to))
            .filter(|(from, _)| from.starts_with('/'))
            .collect();
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        Self(pairs)
    }

    /// `text` with every mount path that stands as a path of its own (not inside a longer name,
    /// nor after another path component) replaced by its local path.
    pub fn apply(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let is_name = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        'scan: while i < text.len() {
            if bytes[i] == b'/' && (i == 0 || !is_name(bytes[i - 1])) {
                for (from, to) in &self.0 {
                    let end = i + from.len();
                    if text[i..].starts_with(from.as_str())
                        && (end == text.len() || bytes[end] == b'/' || !is_name(bytes[end]))
                    {
                        out.push_str(to);
                        i = end;
                        continue 'scan;
                    }
                }
            }
            // Mount paths start with '/', so `i` is always on a char boundary here.
            let Some(c) = text[i..].chars().next() else {
                break;
            };
            out.push(c);
            i += c.len_utf8();
        }
        out
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, an undefined reference kept
/// as is, `$$` is a literal `$`.
pub fn expand(text: &str, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(close) = inner.find(')')
        {
            let name = &inner[..close];
            match lookup(name) {
                Some(value) => out.push_str(&value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = &inner[close + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.to_string()),
        ..Default::default()
    }
}

fn ignore_missing<T>(result: kube::Result<T>) -> kube::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e),
    }
}

fn job_finished(job: &Job) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| {
            c.iter()
                .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
}

/// Now, as Kubernetes writes times (RFC 3339, seconds).
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// `<job>-<5 chars>`, as the API server completes a `generateName` (same alphabet, base cut to
/// 58 characters).
fn generate_name(base: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut cut = base.len().min(58);
    while !base.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    let mut bits = hasher.finish();
    let mut name = format!("{}-", &base[..cut]);
    for _ in 0..5 {
        name.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    name
}

/// `image` without its tag or digest.
fn image_repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        Some(colon) if !image[colon..].contains('/') => &image[..colon],
        _ => image,
    }
}

/// `program` if it has a slash and is a file, else the first match in `search` (a `PATH`).
fn find_program(program: &Path, search: &str) -> Option<PathBuf> {
    if program.components().count() > 1 || program.is_absolute() {
        return program.is_file().then(|| program.to_path_buf());
    }
    search
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A path made relative and harmless (no `..`, no root) for joining under a dir of ours.
fn relative(path: &str) -> PathBuf {
    Path::new(path)
        .components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part),
            _ => None,
        })
        .collect()
}

fn pod_dir(root: &Path, namespace: &str, pod: &str) -> PathBuf {
    root.join("pods")
        .join(relative(namespace))
        .join(relative(pod))
}

fn claim_dir(root: &Path, namespace: &str, claim: &str) -> PathBuf {
    root.join("claims")
        .join(relative(namespace))
        .join(relative(claim))
}

/// Writes a Secret's or ConfigMap's keys as files, as the kubelet projects them.
fn write_files(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    optional: bool,
) -> Result<(), Setup> {
    let mut files: Vec<(String, PathBuf, Option<i32>)> = Vec::new();
    match items {
        Some(items) => {
            for item in items {
                if !data.contains_key(&item.key) {
                    if optional {
                        continue;
                    }
                    return Err(Setup::Config(format!(
                        "references non-existent key: {}",
                        item.key
                    )));
                }
                files.push((item.key.clone(), relative(&item.path), item.mode));
            }
        }
        None => {
            for key in data.keys() {
                files.push((key.clone(), relative(key), None));
            }
        }
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    for (key, path, mode) in files {
        let Some(content) = data.get(&key) else {
            continue;
        };
        let file = dir.join(path);
        if let Some(parent) = file.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        // A read-only file from an earlier attempt must not stop the rewrite.
        let _ = std::fs::remove_file(&file);
        std::fs::write(&file, content).with_context(|| format!("writing {}", file.display()))?;
        let mode = mode.or(default_mode).unwrap_or(0o644) as u32 & 0o777;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("setting the mode of {}", file.display()))?;
    }
    Ok(())
}

/// The first `max` bytes of a file, as text (empty when it is missing).
fn read_prefix(path: &Path, max: usize) -> String {
    let mut buf = Vec::new();
    if let Ok(file) = std::fs::File::open(path) {
        let _ = file.take(max as u64).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// The end of a log, as `FallbackToLogsOnError` keeps it: the last lines, at most
/// [`MAX_MESSAGE`] bytes.
fn log_tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(LOG_LINES)..].join("\n");
    if tail.len() > MAX_MESSAGE {
        let mut cut = tail.len() - MAX_MESSAGE;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}

/// Signals a container's whole process group while its leader is unreaped (so the id is ours).
fn kill_group(process: &OwnedProcess, signal: libc::c_int) {
    if matches!(process.exited(), Ok(None)) {
        // SAFETY: plain syscall on the group our unreaped child leads.
        unsafe {
            libc::killpg(process.pid() as libc::pid_t, signal);
        }
    }
}

impl Ctx {
    /// Drops a process from the running set.
    fn forget(&self, pid: u32) {
        let mut processes = lock(&self.processes);
        let before = processes.running.len();
        processes.running.retain(|(p, _)| p.pid != pid);
        let changed = processes.running.len() != before;
        drop(processes);
        if changed {
            self.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites_mount_paths_at_path_boundaries() {
        let r = Rewrites::new(vec![
            ("/cairn/tmp".into(), "/T".into()),
            ("/cairn/interim/".into(), "/I".into()),
            ("/cairn/interim/data".into(), "/D".into()),
            ("/backup".into(), "/B".into()),
        ]);
        assert_eq!(r.apply("/cairn/tmp"), "/T");
        assert_eq!(r.apply("/cairn/tmp/x/y"), "/T/x/y");
        assert_eq!(r.apply("--dir=/cairn/tmp"), "--dir=/T");
        assert_eq!(r.apply("HOME=/cairn/tmp:/backup/es"), "HOME=/T:/B/es");
        assert_eq!(
            r.apply("local:/backup/elasticsearch"),
            "local:/B/elasticsearch"
        );
        assert_eq!(r.apply("/cairn/interim/data/x"), "/D/x");
        assert_eq!(r.apply("/cairn/interim/datax"), "/I/datax");
        assert_eq!(
            r.apply("/cairn/tmpfoo /x/cairn/tmp"),
            "/cairn/tmpfoo /x/cairn/tmp"
        );
        assert_eq!(r.apply("cat '/cairn/tmp/é' > /backup"), "cat '/T/é' > /B");
        assert_eq!(r.apply("héllo wörld"), "héllo wörld");
    }

    #[test]
    fn expands_like_kubernetes() {
        let vars = |name: &str| (name == "A").then(|| "1".to_string());
        assert_eq!(expand("$(A)/$(B)", &vars), "1/$(B)");
        assert_eq!(expand("$$(A) $$ $x $(", &vars), "$(A) $ $x $(");
    }

    #[test]
    fn names_look_generated() {
        let name = generate_name(&"j".repeat(70));
        assert_eq!(name.len(), 64);
        assert!(
            name[59..]
                .bytes()
                .all(|b| b"bcdfghjklmnpqrstvwxz2456789".contains(&b))
        );
        assert_ne!(generate_name("a"), generate_name("a"));
        assert_eq!(image_repository("reg:5000/cairn:1.2"), "reg:5000/cairn");
        assert_eq!(image_repository("cairn@sha256:ab"), "cairn");
        assert_eq!(image_repository("reg:5000/cairn"), "reg:5000/cairn");
    }
}
