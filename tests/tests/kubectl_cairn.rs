//! `kubectl cairn` end to end, through the testbed's real `kubectl` finding the plugin on
//! `PATH`, against cairn on the real node: the real agent backs up a real OpenSearch (reached
//! through a proxy that slows each search page, so a backup lasts several progress intervals)
//! into MinIO. Commands a person would watch run under `tmux` and are checked on the captured
//! pane (every capture is printed, so a failure shows what the person saw); piped runs are
//! checked for plain lines without escape codes.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use cairn_api::common::SessionPhase;
use cairn_api::{BackupConfiguration, BackupSession, RestoreSession, Snapshot};
use cairn_tests::ControlPlane;
use cairn_tests::demo::{count, load_sample};
use cairn_tests::faultproxy::{Fault, FaultProxy, Plan, Rule};
use cairn_tests::forward::Forward;
use cairn_tests::objects::{apply, configuration, finished, fixture, ready};
use cairn_tests::opensearch::OpenSearch;
use cairn_tests::s3::{S3Server, named_host};
use cairn_tests::system::{OnNode, on_node, restricted_namespace};
use cairn_tests::wait_for;
use cairn_tests::webhook::workspace_binary;
use kube::Api;
use kube::api::ListParams;
use serde_json::json;
use tokio::sync::OnceCell;

const BUCKET: &str = "kubectl-cairn";
const PASSWORD: &str = "kubectl-cairn-password";
/// Documents of the index the backup reads slowly, and of the one that is lost and restored.
const ORDERS: usize = 4_000;
const PRODUCTS: usize = 300;

fn cp() -> &'static ControlPlane {
    ControlPlane::shared()
}

/// cairn on the node, shared by this binary's tests.
async fn env() -> &'static OnNode {
    static ENV: OnceCell<OnNode> = OnceCell::const_new();
    ENV.get_or_init(|| on_node(cp(), "kubectl-cairn", &[]))
        .await
}

/// A directory for `PATH` holding `kubectl` (the testbed's) and `kubectl-cairn` (this
/// build's), and how to run them as a person would.
struct Plugin {
    dir: tempfile::TempDir,
    namespace: String,
}

impl Plugin {
    fn new(namespace: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let plugin = workspace_binary("kubectl-cairn").expect("kubectl-cairn");
        std::os::unix::fs::symlink(plugin, dir.path().join("kubectl-cairn")).expect("link");
        std::os::unix::fs::symlink(&cp().binaries().kubectl, dir.path().join("kubectl"))
            .expect("link");
        Self {
            dir,
            namespace: namespace.to_string(),
        }
    }

    fn path(&self) -> String {
        format!(
            "{}:{}",
            self.dir.path().display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// `kubectl cairn <args> -n <ns>` with stdout a pipe.
    fn piped(&self, args: &[&str]) -> Output {
        let mut cmd = cp().kubectl_command();
        cmd.env("PATH", self.path())
            .arg("cairn")
            .args(args)
            .args(["-n", &self.namespace]);
        let out = cmd.output().expect("kubectl cairn");
        println!(
            "$ kubectl cairn {} | cat   (exit {:?})\n{}{}",
            args.join(" "),
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// A shell script running `kubectl cairn <args> -n <ns>` and printing its exit code.
    fn script(&self, args: &[&str], file: &Path) {
        let kubectl = cp().kubectl_command();
        let env: Vec<String> = kubectl
            .get_envs()
            .filter_map(|(k, v)| Some(format!("export {}='{}'", k.to_str()?, v?.to_str()?)))
            .collect();
        let text = format!(
            // The shell catches Ctrl-C (a non-interactive one would die of it) and goes on to
            // say how the command ended.
            "{}\nexport PATH='{}'\ntrap : INT\nkubectl cairn {} -n {}\necho \"exit=$?\"\nsleep 3600\n",
            env.join("\n"),
            self.path(),
            args.join(" "),
            self.namespace
        );
        std::fs::write(file, text).expect("script");
    }
}

/// A private tmux server: each command in a session of its own, on a 200x50 terminal.
struct Tmux {
    dir: tempfile::TempDir,
    runs: usize,
}

impl Tmux {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            runs: 0,
        }
    }

    fn tmux(&self, args: &[&str]) -> Output {
        Command::new("/usr/bin/tmux")
            .arg("-S")
            .arg(self.dir.path().join("sock"))
            .args(args)
            .output()
            .expect("tmux")
    }

    /// Runs `kubectl cairn <args>` in a terminal until it exits; `watch` sees each capture of
    /// the pane on the way, and presses Ctrl-C (once) by answering true. The last capture,
    /// with `exit=<code>` at its end.
    fn run(
        &mut self,
        plugin: &Plugin,
        args: &[&str],
        timeout: Duration,
        mut watch: impl FnMut(&str) -> bool,
    ) -> String {
        self.runs += 1;
        let name = format!("run{}", self.runs);
        let script = self.dir.path().join(format!("{name}.sh"));
        plugin.script(args, &script);
        let cmd = format!("sh {}", script.display());
        let out = self.tmux(&[
            "new-session",
            "-d",
            "-x",
            "200",
            "-y",
            "50",
            "-s",
            &name,
            &cmd,
        ]);
        assert!(out.status.success(), "tmux: {out:?}");
        let deadline = Instant::now() + timeout;
        let mut interrupted = false;
        let screen = loop {
            // The whole pane, with what scrolled off its top.
            let out = self.tmux(&["capture-pane", "-p", "-S", "-", "-t", &name]);
            let screen = String::from_utf8_lossy(&out.stdout).trim_end().to_string();
            if watch(&screen) && !interrupted {
                println!("--- terminal, when Ctrl-C is pressed ---\n{screen}\n---");
                self.tmux(&["send-keys", "-t", &name, "C-c"]);
                interrupted = true;
            }
            if screen.contains("exit=") {
                break screen;
            }
            assert!(
                Instant::now() < deadline,
                "kubectl cairn {args:?} did not end within {timeout:?}; the pane:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(250));
        };
        self.tmux(&["kill-session", "-t", &name]);
        println!(
            "--- terminal: kubectl cairn {} ---\n{screen}\n---",
            args.join(" ")
        );
        screen
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.tmux(&["kill-server"]);
    }
}

/// The document count of the first progress line on `screen` (`dump: 1,200/4,000 ...`).
fn progress_count(screen: &str) -> Option<u64> {
    let line = screen.lines().find(|l| l.starts_with("dump: "))?;
    let figure = line.strip_prefix("dump: ")?.split('/').next()?;
    figure.replace(',', "").parse().ok()
}

fn exit_code(screen: &str) -> &str {
    screen
        .rsplit("exit=")
        .next()
        .map(str::trim)
        .unwrap_or_default()
}

fn has_escapes(out: &Output) -> bool {
    out.stdout.iter().any(|&b| b == 0x1b || b == b'\r')
}

#[tokio::test(flavor = "multi_thread")]
async fn kubectl_cairn_backs_up_restores_and_tells_the_story() {
    let env = env().await;
    let search = OpenSearch::start().expect("opensearch");
    let http = reqwest::Client::new();
    load_sample(&http, &search.url(), "orders", ORDERS)
        .await
        .expect("orders");
    load_sample(&http, &search.url(), "products", PRODUCTS)
        .await
        .expect("products");
    // Every search page waits: the dump outlasts a progress interval (10 s).
    let slow = Rule::new(Fault::Slow(Duration::from_millis(600)), "_search").every(1, 1);
    let proxy = FaultProxy::start(&search.url(), Plan::new(vec![slow])).expect("proxy");
    let proxy_port: u16 = proxy
        .url()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let bridge = Forward::start(env.node.host_ip(), proxy_port).expect("forward");
    let s3 = S3Server::start().expect("minio");
    s3.create_bucket(BUCKET).expect("bucket");
    let storage = Forward::start(env.node.host_ip(), s3.port()).expect("forward");

    let ns = restricted_namespace(cp(), "kubectl").await;
    let mut objects = fixture(
        &ns,
        &bridge.http_url(),
        &s3,
        &storage.http_url(),
        BUCKET,
        PASSWORD,
    );
    objects.push(configuration(
        &ns,
        "nightly",
        json!({"target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1",
                                   "kind": "AppBinding", "name": "es"},
                          "args": ["--page-size=100"]}}),
    ));
    apply(cp(), &objects);
    ready(cp(), &ns, "nightly").await;
    let plugin = Plugin::new(&ns);
    let mut tmux = Tmux::new();

    let usage = plugin.piped(&["restore", "--snapshot", "latest"]);
    assert_eq!(usage.status.code(), Some(2), "a usage error exits 2");

    // 1. An instant backup, followed live: the progress line grows, the snapshot id ends it.
    let mut seen = Vec::new();
    let screen = tmux.run(
        &plugin,
        &["backup", "nightly", "--wait"],
        Duration::from_secs(150),
        |s| {
            if let Some(n) = progress_count(s)
                && seen.last() != Some(&n)
            {
                println!("--- terminal, while it runs ---\n{s}\n---");
                seen.push(n);
            }
            false
        },
    );
    assert_eq!(exit_code(&screen), "0", "{screen}");
    assert!(
        seen.len() >= 2 && seen.windows(2).all(|w| w[0] < w[1]),
        "the progress line grew: {seen:?}"
    );
    let sessions: Api<BackupSession> = Api::namespaced(cp().client(), &ns);
    let made = sessions
        .list(&ListParams::default())
        .await
        .expect("sessions")
        .items;
    assert_eq!(made.len(), 1, "one session: {made:?}");
    let status = made[0].status.clone().expect("status");
    assert_eq!(status.phase, Some(SessionPhase::Succeeded));
    let id = status.snapshot.expect("snapshot").id;
    assert!(
        screen.contains(&format!("snapshot {id}")),
        "the snapshot id the session holds: {screen}"
    );
    let name = made[0].metadata.name.clone().expect("name");
    assert!(name.starts_with("nightly-now-"), "{name}");

    // Ctrl-C detaches: the command says the session goes on, and it does.
    let screen = tmux.run(
        &plugin,
        &["backup", "nightly", "--wait"],
        Duration::from_secs(150),
        |s| progress_count(s).is_some(),
    );
    assert_eq!(exit_code(&screen), "130", "{screen}");
    assert!(
        screen.contains("Detached (interrupted)") && screen.contains("goes on"),
        "{screen}"
    );
    let detached = created(&screen);
    let s = finished(cp(), &ns, &detached, Duration::from_secs(120)).await;
    assert_eq!(
        s.status.and_then(|s| s.phase),
        Some(SessionPhase::Succeeded)
    );

    // 2. The snapshots the sessions made.
    let snapshots: Api<Snapshot> = Api::namespaced(cp().client(), &ns);
    wait_for(Duration::from_secs(60), "the Snapshot object", || async {
        let list = snapshots.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|s| s.spec.snapshot_id == id)
            .then_some(())
    })
    .await;
    let screen = tmux.run(
        &plugin,
        &["snapshots", "repo"],
        Duration::from_secs(30),
        |_| false,
    );
    let row = screen
        .lines()
        .find(|l| l.starts_with(&id[..8]))
        .unwrap_or_default();
    // Every document of both indices (ORDERS + PRODUCTS), as the table writes the figure.
    assert!(row.contains("nightly") && row.contains("4,300"), "{screen}");
    let from = plugin.piped(&["snapshots", "--from", "nightly"]);
    assert!(String::from_utf8_lossy(&from.stdout).contains(&id[..8]));

    // 3. An index is lost; the dry run shows the RestoreSession and the webhook's warnings.
    let gone = http
        .delete(format!("{}/products", search.url()))
        .send()
        .await
        .expect("delete");
    assert!(gone.status().is_success());
    let screen = tmux.run(
        &plugin,
        &[
            "restore",
            "--from",
            "nightly",
            "--include",
            "products",
            "--to",
            "es-staging",
            "--dry-run",
        ],
        Duration::from_secs(30),
        |_| false,
    );
    assert_eq!(exit_code(&screen), "0", "{screen}");
    // The webhook admits a restore into an AppBinding not there yet, with a warning.
    let warning =
        format!("Warning: spec.target.ref: AppBinding {ns}/es-staging does not exist (yet)");
    for words in [
        "kind: RestoreSession",
        "sourceConfiguration: nightly",
        "name: include",
        "name: es-staging",
        &warning,
    ] {
        assert!(
            screen.contains(words),
            "{words:?} in the dry run:\n{screen}"
        );
    }
    let restores: Api<RestoreSession> = Api::namespaced(cp().client(), &ns);
    assert!(
        restores
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .is_empty(),
        "a dry run creates nothing"
    );

    // 4. The restore, piped: plain lines, and the index is back.
    let out = plugin.piped(&[
        "restore",
        "--from",
        "nightly",
        "--include",
        "products",
        "--wait",
        "--timeout",
        "150s",
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(!has_escapes(&out), "no colour or rewritten line in a pipe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("restore: ")),
        "a plain progress line: {text}"
    );
    assert_eq!(
        count(&http, &search.url(), "products")
            .await
            .expect("count"),
        PRODUCTS
    );

    // 4b. Locks: unlock removes the one of this cluster's pod that is gone, and only it.
    unlocks_only_the_dead_lock(&plugin, &s3, &search, &ns, &mut tmux).await;

    // 5. S3 stopped: the backup fails, the command says why and exits non-zero.
    s3.kill();
    let out = plugin.piped(&["backup", "nightly", "--wait", "--timeout", "150s"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("Failed") && text.contains("Reason: "),
        "{text}"
    );
    assert!(!has_escapes(&out), "no colour in a pipe");
    let failed = created(&text);

    // 6. The AppBinding is deleted: status says so.
    let out = cp().kubectl(["delete", "appbinding", "es", "-n", &ns]);
    assert!(out.status.success(), "{out:?}");
    let screen = tmux.run(
        &plugin,
        &["status", "nightly"],
        Duration::from_secs(30),
        |_| false,
    );
    assert!(
        screen.contains(&format!("AppBinding {ns}/es: MISSING")),
        "{screen}"
    );
    assert!(
        screen.contains(&format!("WARNING: AppBinding {ns}/es is missing")),
        "{screen}"
    );
    // The history keeps the newest completed session: the failed one, with its reason.
    assert!(
        screen.contains("Failed  ") && screen.contains("ContainerFailed"),
        "{screen}"
    );
    let out = plugin.piped(&["status", "nightly"]);
    assert!(!has_escapes(&out), "no colour in a pipe");

    // 7. Pause and resume, a session's logs and events, migration, completion.
    let configs: Api<BackupConfiguration> = Api::namespaced(cp().client(), &ns);
    for (command, paused) in [("pause", true), ("resume", false)] {
        let out = plugin.piped(&[command, "nightly"]);
        assert!(out.status.success(), "{command}");
        let cfg = configs.get("nightly").await.expect("configuration");
        assert_eq!(cfg.spec.paused, Some(paused), "{command}");
    }
    let out = plugin.piped(&["logs", &failed]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(&format!("==> events of BackupSession {failed} <==")),
        "{text}"
    );
    assert!(
        text.contains("BackupFailed"),
        "the session's events: {text}"
    );
    assert!(!has_escapes(&out), "the agent's colours stay out of a pipe");
    let stash = cairn_tests::repo_root().join("manifests/examples/stash/backupconfiguration.yaml");
    let out = plugin.piped(&["migrate", "-f", &stash.display().to_string()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("apiVersion: cairn.dev/v1alpha1"),
        "{text}"
    );
    let out = plugin.piped(&["completion", "bash"]);
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kubectl-cairn"));
    drop(storage);
}

/// `kubectl cairn unlock repo` with three locks: one of this cluster's cairn left by a pod that
/// is gone (the real agent, in a UTS namespace named as a session's pod, killed mid-backup),
/// one under a cairn pod's name but of another cluster (restic, killed: nothing here can tell
/// whether its holder lives), and a live one (restic of this host, running). Only the first
/// goes; the others are named.
async fn unlocks_only_the_dead_lock(
    plugin: &Plugin,
    s3: &S3Server,
    search: &OpenSearch,
    ns: &str,
    tmux: &mut Tmux,
) {
    let repo = format!("{}/{ns}", s3.restic_repository(BUCKET));
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(cp().client());
    let cluster = namespaces.get("kube-system").await.expect("kube-system");
    let cluster_id = cluster.metadata.uid.expect("uid");
    let dead_lock = killed_agent_lock(s3, search, &repo, &cluster_id);
    let (mut elsewhere, other_cluster_lock) = s3
        .restic_holding_a_lock(&repo, PASSWORD, Some("cairn-backup-elsewhere-1-abcde"))
        .expect("another cluster's lock");
    elsewhere.kill().expect("kill restic");
    elsewhere.wait().expect("reap restic");
    let (mut live, live_lock) = s3
        .restic_holding_a_lock(&repo, PASSWORD, None)
        .expect("a live lock");
    let screen = tmux.run(
        plugin,
        &["unlock", "repo", "--timeout", "120s"],
        Duration::from_secs(150),
        |_| false,
    );
    assert_eq!(exit_code(&screen), "0", "{screen}");
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    for words in [
        "removed 1 lock(s) whose holders are gone; kept 2 live lock(s)".to_string(),
        format!("kept: a lock of {} pid {}", host.trim(), live.id()),
        "kept: a lock of cairn-backup-elsewhere-1-abcde".to_string(),
    ] {
        assert!(screen.contains(&words), "{words:?} in:\n{screen}");
    }
    let mut left = s3.restic_locks(&repo, PASSWORD).expect("locks");
    left.sort();
    let mut kept = vec![other_cluster_lock, live_lock];
    kept.sort();
    assert_eq!(left, kept, "the dead pod's lock {dead_lock} alone went");
    if let Some(mut input) = live.stdin.take() {
        use std::io::Write;
        input.write_all(b"a user's own backup\n").expect("write");
    }
    let done = live.wait_with_output().expect("restic");
    assert!(
        done.status.success(),
        "restic, its lock kept, finishes: {}",
        String::from_utf8_lossy(&done.stderr)
    );
}

/// The lock of this cluster's agent (`CAIRN_CLUSTER_ID`) run as a session's pod that is gone:
/// killed while its first search hangs, its lock left. Its id.
fn killed_agent_lock(s3: &S3Server, search: &OpenSearch, repo: &str, cluster_id: &str) -> String {
    let hang = Rule::new(Fault::Slow(Duration::from_secs(120)), "_search").every(1000, 1);
    let proxy = FaultProxy::start(&search.url(), Plan::new(vec![hang])).expect("proxy");
    let before = s3.restic_locks(repo, PASSWORD).expect("locks");
    let tmp = tempfile::tempdir().expect("tmp");
    let agent = workspace_binary("cairn-agent").expect("cairn-agent");
    let mut agent = named_host("cairn-backup-nightly-1700000000-gone1", agent)
        .args([
            "backup".to_string(),
            format!("--repository={repo}"),
            format!("--url={}", proxy.url()),
            "--host=host-0".into(),
            "--include=orders".into(),
        ])
        .envs(s3.env())
        .env("RESTIC_PASSWORD", PASSWORD)
        .env("CAIRN_CLUSTER_ID", cluster_id)
        .env("CAIRN_TMP_DIR", tmp.path())
        .env("CAIRN_TERMINATION_LOG", tmp.path().join("termination"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("cairn-agent");
    let deadline = Instant::now() + Duration::from_secs(60);
    let id = loop {
        let locks = s3.restic_locks(repo, PASSWORD).expect("locks");
        if let Some(id) = locks.into_iter().find(|l| !before.contains(l)) {
            break id;
        }
        assert!(Instant::now() < deadline, "the agent took no lock");
        std::thread::sleep(Duration::from_millis(200));
    };
    agent.kill().expect("kill the agent");
    agent.wait().expect("reap the agent");
    id
}

/// Native snapshots through the controller and the plugin: a Repository with `driver: Native`
/// (the server's `fs` repository under its `path.repo`) and a configuration naming no Task
/// (the snapshot Task is its default): two instant backups, the retention (keepLast 1) leaving
/// the second, whose Snapshot object says `native`; an index deleted and restored.
#[tokio::test(flavor = "multi_thread")]
async fn native_snapshots_back_up_and_restore_through_the_controller() {
    let env = env().await;
    let search = OpenSearch::start().expect("opensearch");
    let http = reqwest::Client::new();
    load_sample(&http, &search.url(), "events", PRODUCTS)
        .await
        .expect("events");
    let bridge = Forward::start(env.node.host_ip(), search.port()).expect("forward");
    let ns = restricted_namespace(cp(), "native").await;
    let app = "appcatalog.appscode.com/v1alpha1";
    apply(
        cp(),
        &[
            json!({"apiVersion": app, "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
                   "spec": {"clientConfig": {"url": bridge.http_url()}}}),
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
                   "metadata": {"name": "snaps", "namespace": ns},
                   "spec": {"driver": "Native",
                            "backend": {"local": {"mountPath": search.repo_dir().display().to_string()}}}}),
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
                   "metadata": {"name": "nightly", "namespace": ns},
                   "spec": {"schedule": "0 0 1 1 *", "repository": {"name": "snaps"},
                            "target": {"ref": {"apiVersion": app, "kind": "AppBinding", "name": "es"}},
                            "retentionPolicy": {"name": "last", "keepLast": 1},
                            "retryConfig": {"maxRetry": 0}}}),
        ],
    );
    ready(cp(), &ns, "nightly").await;
    let plugin = Plugin::new(&ns);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let out = plugin.piped(&["backup", "nightly", "--wait", "--timeout", "150s"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{text}");
        let session = created(&text);
        let s = finished(cp(), &ns, &session, Duration::from_secs(30)).await;
        let snapshot = s.status.and_then(|s| s.snapshot).expect("snapshot");
        assert_eq!(snapshot.id, format!("{ns}_nightly_{session}"));
        assert_eq!(snapshot.driver.as_deref(), Some("native"));
        assert!(text.contains(&snapshot.id), "{text}");
        ids.push(snapshot.id);
    }
    let snapshots: Api<Snapshot> = Api::namespaced(cp().client(), &ns);
    let listed = wait_for(
        Duration::from_secs(60),
        "the second snapshot alone",
        || async {
            let list = snapshots.list(&ListParams::default()).await.ok()?.items;
            (list.len() == 1 && list[0].spec.snapshot_id == ids[1]).then_some(list)
        },
    )
    .await;
    let spec = &listed[0].spec;
    assert_eq!(
        (
            spec.driver.as_str(),
            spec.documents,
            spec.configuration.as_deref()
        ),
        ("native", Some(PRODUCTS as i64), Some("nightly")),
        "{spec:?}"
    );
    let out = plugin.piped(&["snapshots", "snaps"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains(&ids[1]));
    let repos: Api<cairn_api::Repository> = Api::namespaced(cp().client(), &ns);
    let status = repos.get("snaps").await.expect("repository").status;
    let status = status.expect("status");
    assert_eq!(
        (status.snapshot_count, status.total_size.as_deref()),
        (Some(1), None),
        "one snapshot, its size unknown (not 0)"
    );

    let gone = http
        .delete(format!("{}/events", search.url()))
        .send()
        .await
        .expect("delete");
    assert!(gone.status().is_success());
    let out = plugin.piped(&[
        "restore",
        "--from",
        "nightly",
        "--wait",
        "--timeout",
        "150s",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains(&ids[1]), "the latest snapshot: {text}");
    assert_eq!(
        count(&http, &search.url(), "events").await.expect("count"),
        PRODUCTS
    );
    drop(bridge);
}

/// The session a `kubectl cairn backup` created, from its first line.
fn created(text: &str) -> String {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("backupsession.cairn.dev/")?
                .strip_suffix(" created")
        })
        .expect("the session's name")
        .to_string()
}

#[test]
fn progress_counts_are_read_from_the_pane() {
    let screen = "backupsession.cairn.dev/x created\ndump: 1,200/4,000 documents (30%)";
    assert_eq!(progress_count(screen), Some(1200));
    assert_eq!(exit_code("...\nexit=1"), "1");
}
