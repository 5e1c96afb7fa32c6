//! cairn's Jobs on the real node (see `cairn_tests::node`): the real controller and webhook
//! resolve a backup, the Job controller and scheduler place its Pod, the kubelet runs cairn's
//! image in containerd under the `restricted` Pod Security Standard. Checked from the host, not
//! from the agent's own words: the container's process (its PID from containerd) runs as 65534
//! with a read-only root, and the files it wrote in the interim volume (a local PV bound by the
//! PV binder) belong to 65534 and the fsGroup.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use cairn_tests::ControlPlane;
use cairn_tests::demo::{count, load_sample};
use cairn_tests::forward::Forward;
use cairn_tests::image::{CAIRN_IMAGE, NOBODY};
use cairn_tests::node::Node;
use cairn_tests::objects::{
    apply, configuration, failure, finished, fixture, interim_volume, ready, running_container,
    session,
};
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::S3Server;
use cairn_tests::system::{OnNode, on_node, restricted_namespace};
use cairn_tests::wait_for;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;
use tokio::sync::OnceCell;

const BUCKET: &str = "node-backups";
const INDEX: &str = "inventory";
const DOCS: usize = 300;
const PASSWORD: &str = "node-test-password";

/// `Uid:`/`Gid:` (real, effective, saved, fs) and `Groups:` of `/proc/<pid>/status`.
fn ids(pid: u32) -> (String, String, String) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// The mount options of the process's root (`/` in its `/proc/<pid>/mountinfo`).
fn root_mount_options(pid: u32) -> String {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/"))
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or_default()
        .to_string()
}

/// Every file under `dir` with its (uid, gid).
fn owners(dir: &Path, out: &mut Vec<(String, u32, u32)>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let meta = entry.metadata().expect("metadata");
        out.push((entry.path().display().to_string(), meta.uid(), meta.gid()));
        if meta.is_dir() {
            owners(&entry.path(), out);
        }
    }
}

/// What the tests share: cairn on the node (the controller fails a session whose Pod has not
/// started within 30 s), OpenSearch with sample data, MinIO with a bucket.
struct Env {
    cp: &'static ControlPlane,
    node: &'static Node,
    /// The image id (config digest) of the imported cairn image.
    image_id: String,
    search: OpenSearch,
    s3: S3Server,
    _cairn: OnNode,
}

async fn env() -> &'static Env {
    static ENV: OnceCell<Env> = OnceCell::const_new();
    ENV.get_or_init(|| async {
        let cp = ControlPlane::shared();
        let cairn = on_node(cp, "node", &["--pending-timeout=30s"]).await;
        let search = OpenSearch::start().expect("opensearch");
        let s3 = S3Server::start().expect("minio");
        s3.create_bucket(BUCKET).expect("bucket");
        load_sample(&reqwest::Client::new(), &search.url(), INDEX, DOCS)
            .await
            .expect("sample");
        Env {
            cp,
            node: cairn.node,
            image_id: cairn.image_id.clone(),
            search,
            s3,
            _cairn: cairn,
        }
    })
    .await
}

/// Forwarders from the bridge to OpenSearch (with its gate) and MinIO, for one test.
fn forwards(env: &Env) -> (Forward, Forward) {
    (
        Forward::start(env.node.host_ip(), env.search.port()).expect("forward"),
        Forward::start(env.node.host_ip(), env.s3.port()).expect("forward"),
    )
}

#[tokio::test]
async fn a_backup_runs_as_a_restricted_pod_in_cairns_image() {
    let env = env().await;
    let (cp, node, search, s3) = (env.cp, env.node, &env.search, &env.s3);
    let image_id = env.image_id.clone();
    let http = reqwest::Client::new();
    let (search_gate, s3_forward) = forwards(env);

    let ns = restricted_namespace(cp, "node").await;
    let pvs = node
        .create_local_volumes(cp.client(), &format!("{ns}-pv"), 1, "2Gi")
        .await
        .expect("local PVs");

    // PodSecurity admission is on: a root Pod is refused in the namespace.
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    let root_pod: Pod = serde_json::from_value(json!({"metadata": {"name": "root"},
        "spec": {"containers": [{"name": "c", "image": CAIRN_IMAGE, "securityContext": {"runAsUser": 0}}]}}))
        .expect("pod");
    let refused = pods
        .create(&PostParams::default(), &root_pod)
        .await
        .expect_err("a root pod");
    assert!(
        format!("{refused}").contains("violates PodSecurity \"restricted"),
        "{refused}"
    );

    // The agent's first request to OpenSearch waits at the gate while we look at it.
    search_gate.hold();
    let mut objects = fixture(
        &ns,
        &search_gate.http_url(),
        s3,
        &s3_forward.http_url(),
        BUCKET,
        PASSWORD,
    );
    objects.push(configuration(&ns, "cfg", interim_volume()));
    apply(cp, &objects);
    ready(cp, &ns, "cfg").await;
    apply(cp, &[session(&ns, "now", "cfg")]);
    let (pod, container_id) = running_container(cp, &ns, "now").await;
    let container_id = container_id
        .strip_prefix("containerd://")
        .expect("a containerd:// id")
        .to_string();
    let pid = node.task_pid(&container_id).expect("the container's pid");
    let (uid, gid, groups) = ids(pid);
    assert_eq!(uid, "65534 65534 65534 65534", "the agent's uids");
    assert_eq!(gid, "65534 65534 65534 65534", "the agent's gids");
    assert!(
        groups.split(' ').any(|g| g == NOBODY.to_string()),
        "fsGroup in {groups}"
    );
    let root = root_mount_options(pid);
    assert!(root.split(',').any(|o| o == "ro"), "root mounted {root}");
    assert_eq!(
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        Some(node.name())
    );
    eprintln!("agent pid {pid}: Uid {uid}, Gid {gid}, Groups {groups}, root {root}");
    wait_for(
        Duration::from_secs(60),
        "the agent to call OpenSearch",
        || async { (search_gate.accepted() > 0).then_some(()) },
    )
    .await;
    search_gate.open();

    let session = finished(cp, &ns, "now", Duration::from_secs(180)).await;
    let status = session.status.clone().expect("status");
    assert_eq!(
        format!("{:?}", status.phase),
        "Some(Succeeded)",
        "{status:?}\n{}",
        node.kubelet_log_tail(30)
    );
    let snapshot = status.snapshot.expect("a snapshot");
    assert_eq!(snapshot.documents, Some(DOCS as i64));

    // The Pod's status, from the kubelet: containerd's container id, the imported image, the
    // agent's result as the termination message.
    let pod = pods
        .get(pod.metadata.name.as_deref().expect("name"))
        .await
        .expect("pod");
    let cs = pod
        .status
        .and_then(|s| s.container_statuses)
        .expect("container statuses");
    let cs = cs.first().expect("a container");
    assert_eq!(cs.image_id, image_id, "the imported image");
    let terminated = cs
        .state
        .as_ref()
        .and_then(|s| s.terminated.clone())
        .expect("terminated");
    assert_eq!(terminated.exit_code, 0);
    let message = terminated.message.unwrap_or_default();
    assert!(
        message.contains(&snapshot.id),
        "termination message {message}"
    );

    // The interim volume: the PV binder bound the session's claim to our local PV; the kubelet
    // gave its root to the fsGroup (setgid); the agent's files there are 65534's.
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cp.client(), &ns);
    let claim = claims
        .list(&ListParams::default())
        .await
        .expect("pvcs")
        .items
        .into_iter()
        .next()
        .expect("a claim");
    let pv = claim.spec.and_then(|s| s.volume_name).expect("bound");
    assert!(pvs.contains(&pv), "{pv} is one of {pvs:?}");
    let dir = node.volume_dir(&pv);
    let meta = std::fs::metadata(&dir).expect("volume dir");
    assert_eq!(meta.gid(), NOBODY, "the volume's group");
    assert_ne!(meta.mode() & 0o2000, 0, "setgid on the volume");
    let mut files = Vec::new();
    owners(&dir, &mut files);
    assert!(files.len() > 1, "the agent wrote files: {files:?}");
    eprintln!(
        "image {}; termination message {message}; {} files in {}",
        cs.image_id,
        files.len(),
        dir.display()
    );
    for (path, uid, gid) in &files {
        assert_eq!((*uid, *gid), (NOBODY, NOBODY), "{path}");
    }
    assert_eq!(
        count(&http, &search.url(), INDEX).await.expect("count"),
        DOCS
    );
}

/// Every way a backup Pod fails, produced for real on the node: the session fails with the
/// reason the Pod (or the Job, or the clock) gives.
#[tokio::test]
async fn every_failure_mode_happens_for_real_and_fails_the_session_with_its_reason() {
    let env = env().await;
    let cp = env.cp;
    let (search_gate, s3_forward) = forwards(env);
    let ns = restricted_namespace(cp, "node").await;
    let mut objects = fixture(
        &ns,
        &search_gate.http_url(),
        &env.s3,
        &s3_forward.http_url(),
        BUCKET,
        PASSWORD,
    );
    // An image that fails to pull at once and locally: nothing listens on port 1.
    objects.push(
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Function",
        "metadata": {"name": format!("missing-image-{ns}")},
        "spec": {"image": "127.0.0.1:1/none:x", "command": ["cairn-agent"], "args": ["backup"]}}),
    );
    objects.push(json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Task",
        "metadata": {"name": format!("missing-image-{ns}")},
        "spec": {"steps": [{"name": format!("missing-image-{ns}")}]}}));
    objects.extend([
        configuration(
            &ns,
            "pull",
            json!({"task": {"name": format!("missing-image-{ns}")}}),
        ),
        // Less memory than the agent needs to start.
        configuration(
            &ns,
            "oom",
            json!({"runtimeSettings": {"container": {"resources": {
            "requests": {"memory": "4Mi"}, "limits": {"memory": "4Mi"}}}}}),
        ),
        // No node has the label: the scheduler finds none, and the session (with no timeOut)
        // fails once its Pod has been Pending for the controller's --pending-timeout.
        configuration(
            &ns,
            "unschedulable",
            json!({"runtimeSettings": {"pod": {"nodeSelector": {"cairn.dev/no-such-node": "true"}}}}),
        ),
        configuration(&ns, "evicted", json!({})),
        configuration(&ns, "deleted", json!({})),
    ]);
    apply(cp, &objects);
    // The agents wait at the gate: the evicted and deleted Jobs are still running then.
    search_gate.hold();
    for name in ["pull", "oom", "unschedulable", "evicted", "deleted"] {
        ready(cp, &ns, name).await;
        apply(cp, &[session(&ns, name, name)]);
    }
    let (evicted, _) = running_container(cp, &ns, "evicted").await;
    let evicted = evicted.metadata.name.expect("name");
    let eviction = json!({"apiVersion": "policy/v1", "kind": "Eviction",
        "metadata": {"name": evicted, "namespace": ns}});
    let path = format!("/api/v1/namespaces/{ns}/pods/{evicted}/eviction");
    let out = cp.kubectl_stdin(["create", "--raw", &path, "-f", "-"], &eviction.to_string());
    assert!(
        out.status.success(),
        "eviction: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    running_container(cp, &ns, "deleted").await;
    let out = cp.kubectl([
        "delete",
        "job",
        "-n",
        &ns,
        "cairn-backup-deleted",
        "--wait=false",
    ]);
    assert!(
        out.status.success(),
        "delete job: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The session with too little memory is not waited for: its agent may be killed before it
    // reaches the gate (its startup grows with the agent), and is OOM-killed either way.
    search_gate.open();

    for (name, want) in [
        ("pull", "ErrImagePull"),
        ("oom", "OOMKilled"),
        ("unschedulable", "Unschedulable"),
        ("evicted", "Evicted"),
        ("deleted", "JobDeleted"),
    ] {
        let s = finished(cp, &ns, name, Duration::from_secs(120)).await;
        let (reason, message) = failure(&s);
        eprintln!("{name}: {reason}: {message}");
        assert!(
            reason == want || (want == "ErrImagePull" && reason == "ImagePullBackOff"),
            "{name}: {reason}: {message}"
        );
        assert!(!message.is_empty(), "{name}");
    }
}

/// A stopped node leaves nothing behind on the machine: no shim or container process, no mount
/// under its dir (overlay roots, netns, the kubelet's volumes), no cgroup, no bridge, no dir.
#[tokio::test]
async fn a_stopped_node_leaves_nothing_behind() {
    let cp = ControlPlane::start().expect("a control plane of its own");
    let node = cp.node();
    let ns = cp.new_namespace().await.expect("ns");
    let pods: Api<Pod> = Api::namespaced(cp.client(), &ns);
    // The pause image: a process that runs until it is killed; with a tmpfs-backed volume.
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "idle"},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "c",
            "image": cairn_tests::image::PAUSE_IMAGE, "imagePullPolicy": "Never",
            "volumeMounts": [{"name": "mem", "mountPath": "/mem"}]}],
            "volumes": [{"name": "mem", "emptyDir": {"medium": "Memory"}}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("create");
    let id = wait_for(Duration::from_secs(60), "the pod to run", || async {
        let p = pods.get("idle").await.ok()?;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        cs.state?.running?;
        cs.container_id
    })
    .await;
    let id = id.trim_start_matches("containerd://").to_string();
    let pid = node.task_pid(&id).expect("pid");
    let shims = node.shim_pids();
    assert!(!shims.is_empty(), "the node's shims");
    let dir = node.dir().to_path_buf();
    let bridge = node.bridge_name().to_string();
    let mounts_under = |dir: &Path| {
        let prefix = format!("{}/", dir.display());
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.split(' ').nth(4).is_some_and(|p| p.starts_with(&prefix)))
            .count()
    };
    assert!(mounts_under(&dir) > 0, "the node's mounts");
    let cgroup = Path::new("/sys/fs/cgroup/memory/k8s.io").join(&id);
    assert!(cgroup.exists(), "{} exists while it runs", cgroup.display());

    drop(cp);
    for p in shims.iter().chain([&pid]) {
        assert!(
            !Path::new(&format!("/proc/{p}")).exists(),
            "process {p} is left"
        );
    }
    assert_eq!(mounts_under(&dir), 0, "mounts left under {}", dir.display());
    assert!(!dir.exists(), "{} is left", dir.display());
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
    let link = std::process::Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .expect("ip");
    assert!(!link.status.success(), "bridge {bridge} is left");
}
