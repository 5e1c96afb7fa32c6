//! The job runner (test infrastructure playing kubelet, job controller and garbage collector)
//! against the shared control plane, without the cairn controller: hand-made cairn Jobs run as
//! local processes and their Pods and Jobs end the way a real cluster would leave them.
//!
//! Needs `cargo xtask testbed` to have been run.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cairn_api::result::{AgentResult, FailureResult};
use cairn_tests::ControlPlane;
use cairn_tests::jobrunner::{Fault, FaultTarget, JobRunner, NODE_NAME, Options};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);
const IMAGE: &str = "ghcr.io/cairn-dev/cairn:test";

/// A cairn-like Job: `main` (and `init`, if any) as `sh -c` scripts, the Secret `creds` in the
/// environment (envFrom) and mounted at /cairn/secrets/target, an emptyDir at /cairn/tmp.
fn job(name: &str, init: Option<&str>, main: &str) -> Job {
    let labels = json!({"app.kubernetes.io/managed-by": "cairn", "cairn.dev/session": name});
    let container = |cname: &str, script: &str| {
        json!({
            "name": cname,
            "image": IMAGE,
            "command": ["sh", "-c", script],
            "envFrom": [{"secretRef": {"name": "creds"}}],
            "env": [
                {"name": "CAIRN_TMP_DIR", "value": "/cairn/tmp"},
                {"name": "MARKER", "value": "$(CAIRN_TMP_DIR)/marker"},
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
            ],
            "volumeMounts": [
                {"name": "cairn-tmp", "mountPath": "/cairn/tmp"},
                {"name": "target", "mountPath": "/cairn/secrets/target", "readOnly": true},
            ],
            "terminationMessagePath": "/dev/termination-log",
            "terminationMessagePolicy": "FallbackToLogsOnError",
        })
    };
    let mut spec = json!({
        "restartPolicy": "Never",
        "automountServiceAccountToken": false,
        "containers": [container("agent", main)],
        "volumes": [
            {"name": "cairn-tmp", "emptyDir": {}},
            {"name": "target", "secret": {"secretName": "creds", "defaultMode": 0o444}},
        ],
    });
    if let Some(script) = init {
        spec["initContainers"] = json!([container("prepare", script)]);
    }
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": labels}, "spec": spec},
        },
    }))
    .expect("a valid Job")
}

/// A namespace with the Secret `creds`, and a runner for it.
async fn setup() -> (&'static ControlPlane, String, JobRunner) {
    let cp = ControlPlane::shared();
    let ns = cp.new_namespace().await.expect("new namespace");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"},
        "stringData": {
            "REASON": "no route to host",
            "DOCUMENTS": "42",
            "password": "s3cret-snapshot",
        },
    }))
    .expect("a valid Secret");
    Api::<Secret>::namespaced(cp.client(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let runner = JobRunner::start(cp, Options::namespace(&ns));
    (cp, ns, runner)
}

async fn create_job(cp: &ControlPlane, ns: &str, job: &Job) -> Job {
    Api::<Job>::namespaced(cp.client(), ns)
        .create(&PostParams::default(), job)
        .await
        .expect("create the Job")
}

fn to_json<T: serde::Serialize>(object: &T) -> Value {
    serde_json::to_value(object).expect("serializable")
}

/// Polls `name` until `done` holds for its JSON form.
async fn wait_for<K>(api: &Api<K>, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let last = api.get_opt(name).await.expect("get").map(|o| to_json(&o));
        if let Some(v) = &last
            && done(v)
        {
            return v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not {what} after {TIMEOUT:?}: {:#}",
            last.unwrap_or(Value::Null)
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn wait_gone<K>(api: &Api<K>, name: &str)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let deadline = Instant::now() + TIMEOUT;
    while let Some(object) = api.get_opt(name).await.expect("get") {
        assert!(
            Instant::now() < deadline,
            "{name} is still there after {TIMEOUT:?}: {:#}",
            to_json(&object)
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The (first) Pod of a Job, once there is one.
async fn pod_of(cp: &ControlPlane, ns: &str, job: &str) -> String {
    let api = Api::<Pod>::namespaced(cp.client(), ns);
    let params = ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}"));
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let pods = api.list(&params).await.expect("list Pods");
        if let Some(pod) = pods.items.first() {
            return pod.metadata.name.clone().expect("a Pod has a name");
        }
        assert!(Instant::now() < deadline, "Job {job} has no Pod");
        tokio::time::sleep(POLL).await;
    }
}

fn phase_is(phase: &'static str) -> impl Fn(&Value) -> bool {
    move |v| v["status"]["phase"] == phase
}

fn job_condition(job: &Value, kind: &str) -> Value {
    job["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == kind))
        .cloned()
        .unwrap_or(Value::Null)
}

fn job_finished(v: &Value) -> bool {
    ["Complete", "Failed"]
        .iter()
        .any(|kind| job_condition(v, kind)["status"] == "True")
}

/// Whether a live (not zombie) process is in process group `pgid`.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold anything, so split after its ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
    })
}

async fn wait_group_gone(pgid: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while group_alive(pgid) {
        assert!(
            Instant::now() < deadline,
            "process group {pgid} still alive"
        );
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn a_successful_job_completes_with_its_result_as_termination_message() {
    let (cp, ns, runner) = setup().await;
    // Secret env (envFrom, secretKeyRef) and files, the emptyDir, `$(VAR)` expansion, and the
    // agent's result written to /dev/termination-log (rewritten to the runner's file).
    let script = r#"set -e
        echo hello > "$MARKER"; test "$(cat /cairn/tmp/marker)" = hello
        test "$PASSWORD" = "$(cat /cairn/secrets/target/password)"
        printf '{"kind":"restore","snapshot":"%s","indices":1,"documents":%s,"durationSeconds":0.5}' \
            "$(cat /cairn/secrets/target/password)" "$DOCUMENTS" > /dev/termination-log
        echo done"#;
    let created = create_job(cp, &ns, &job("ok", None, script)).await;
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);

    let job = wait_for(&jobs, "ok", "finished", job_finished).await;
    let pod_name = pod_of(cp, &ns, "ok").await;
    let pod = wait_for(&pods, &pod_name, "Succeeded", phase_is("Succeeded")).await;

    // The job controller's Pod.
    let uid = created
        .metadata
        .uid
        .clone()
        .expect("a created Job has a uid");
    assert!(
        pod_name.starts_with("ok-") && pod_name.len() == "ok-".len() + 5,
        "{pod_name}"
    );
    assert_eq!(pod["spec"]["nodeName"], NODE_NAME);
    assert_eq!(pod["metadata"]["labels"]["job-name"], "ok");
    assert_eq!(
        pod["metadata"]["labels"]["batch.kubernetes.io/job-name"],
        "ok"
    );
    assert_eq!(pod["metadata"]["labels"]["controller-uid"], uid.as_str());
    assert_eq!(pod["metadata"]["labels"]["cairn.dev/session"], "ok");
    let owner = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(owner["kind"], "Job");
    assert_eq!(owner["uid"], uid.as_str());
    assert_eq!(owner["controller"], true);

    // The kubelet's status.
    let container = &pod["status"]["containerStatuses"][0];
    let terminated = &container["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0, "{pod:#}");
    assert_eq!(terminated["reason"], "Completed");
    assert!(terminated["startedAt"].is_string() && terminated["finishedAt"].is_string());
    assert_eq!(container["ready"], false);
    let message = terminated["message"]
        .as_str()
        .expect("a termination message");
    match AgentResult::from_termination_message(message) {
        Some(AgentResult::Restore(r)) => {
            assert_eq!(r.snapshot, "s3cret-snapshot");
            assert_eq!(r.documents, 42);
        }
        other => panic!("not a restore result: {other:?} from {message:?}"),
    }
    let ready = pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(ready["status"], "False");
    assert_eq!(ready["reason"], "PodCompleted");
    assert_eq!(
        runner
            .log(&ns, &pod_name, "agent")
            .as_deref()
            .map(str::trim),
        Some("done")
    );

    // The job controller's status.
    let status = &job["status"];
    assert_eq!(status["succeeded"], 1, "{job:#}");
    // The API server drops zero counts.
    assert_eq!(status["active"].as_i64().unwrap_or(0), 0, "{job:#}");
    assert!(status["startTime"].is_string() && status["completionTime"].is_string());
    assert_eq!(job_condition(&job, "SuccessCriteriaMet")["status"], "True");
    assert_eq!(job_condition(&job, "Complete")["status"], "True");
    assert_eq!(job_condition(&job, "Failed"), Value::Null);
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}

#[tokio::test]
async fn a_failing_job_fails_with_the_agent_failure() {
    let (cp, ns, runner) = setup().await;
    let script = r#"echo "{\"kind\":\"failure\",\"phase\":\"x\",\"reason\":\"$REASON\"}" > $CAIRN_TERMINATION_LOG; exit 3"#;
    create_job(cp, &ns, &job("bad", None, script)).await;
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);

    let job = wait_for(&jobs, "bad", "finished", job_finished).await;
    let pod_name = pod_of(cp, &ns, "bad").await;
    let pod = wait_for(&pods, &pod_name, "Failed", phase_is("Failed")).await;

    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod:#}");
    assert_eq!(terminated["reason"], "Error");
    let message = terminated["message"]
        .as_str()
        .expect("a termination message");
    assert_eq!(
        AgentResult::from_termination_message(message),
        Some(AgentResult::Failure(FailureResult {
            phase: "x".into(),
            reason: "no route to host".into(),
        }))
    );

    let status = &job["status"];
    assert_eq!(status["failed"], 1, "{job:#}");
    // The API server drops zero counts.
    assert_eq!(status["active"].as_i64().unwrap_or(0), 0, "{job:#}");
    assert!(status.get("completionTime").is_none());
    for kind in ["FailureTarget", "Failed"] {
        let condition = job_condition(&job, kind);
        assert_eq!(condition["status"], "True", "{kind}: {job:#}");
        assert_eq!(condition["reason"], "BackoffLimitExceeded");
    }
    assert_eq!(job_condition(&job, "Complete"), Value::Null);
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}

#[tokio::test]
async fn a_failing_init_container_stops_the_pod() {
    let (cp, ns, runner) = setup().await;
    // No result file: the log's tail becomes the message (FallbackToLogsOnError).
    let init = "echo preparing; echo cannot reach the target >&2; exit 7";
    create_job(
        cp,
        &ns,
        &job("init", Some(init), "touch /cairn/tmp/main-ran"),
    )
    .await;
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);

    let job = wait_for(&jobs, "init", "finished", job_finished).await;
    let pod_name = pod_of(cp, &ns, "init").await;
    let pod = wait_for(&pods, &pod_name, "Failed", phase_is("Failed")).await;

    let terminated = &pod["status"]["initContainerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 7, "{pod:#}");
    assert_eq!(terminated["reason"], "Error");
    assert_eq!(terminated["message"], "preparing\ncannot reach the target");
    let main = &pod["status"]["containerStatuses"][0]["state"];
    assert_eq!(main["waiting"]["reason"], "PodInitializing", "{pod:#}");
    assert_eq!(
        runner.log(&ns, &pod_name, "agent"),
        None,
        "the main container ran"
    );
    assert_eq!(job_condition(&job, "Failed")["status"], "True", "{job:#}");
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}

#[tokio::test]
async fn an_injected_oom_kill_shows_as_such() {
    let (cp, ns, runner) = setup().await;
    runner.inject(FaultTarget::session(&ns, "oom"), Fault::OomKilled);
    create_job(cp, &ns, &job("oom", None, "echo working; exec sleep 300")).await;
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);

    let job = wait_for(&jobs, "oom", "finished", job_finished).await;
    let pod_name = pod_of(cp, &ns, "oom").await;
    let pod = wait_for(&pods, &pod_name, "Failed", phase_is("Failed")).await;
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 137, "{pod:#}");
    assert_eq!(terminated["reason"], "OOMKilled");
    assert_eq!(job_condition(&job, "Failed")["status"], "True", "{job:#}");
    assert!(runner.running().is_empty());
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}

#[tokio::test]
async fn injected_image_pull_failure_eviction_and_hang() {
    let (cp, ns, runner) = setup().await;
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    runner.inject(FaultTarget::job(&ns, "pull"), Fault::ImagePullBackOff);
    runner.inject(FaultTarget::job(&ns, "evict"), Fault::Evicted);
    runner.inject(FaultTarget::job(&ns, "hang"), Fault::Hang);
    for name in ["pull", "evict", "hang"] {
        create_job(cp, &ns, &job(name, None, "exec sleep 300")).await;
    }

    // ImagePullBackOff: Pending until someone deletes the Pod, which fails the Job.
    let pull = pod_of(cp, &ns, "pull").await;
    let pod = wait_for(&pods, &pull, "pulling", |v| {
        v["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff"
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Pending");
    let job = wait_for(&jobs, "pull", "active", |v| v["status"]["active"] == 1).await;
    assert!(!job_finished(&job));
    pods.delete(&pull, &DeleteParams::default())
        .await
        .expect("delete the Pod");
    wait_gone(&pods, &pull).await;
    let job = wait_for(&jobs, "pull", "finished", job_finished).await;
    assert_eq!(job_condition(&job, "Failed")["status"], "True", "{job:#}");

    // Evicted.
    let evict = pod_of(cp, &ns, "evict").await;
    let pod = wait_for(&pods, &evict, "Failed", phase_is("Failed")).await;
    assert_eq!(pod["status"]["reason"], "Evicted", "{pod:#}");
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"],
        137
    );
    let job = wait_for(&jobs, "evict", "finished", job_finished).await;
    assert_eq!(job_condition(&job, "Failed")["status"], "True", "{job:#}");

    // Hang: running without a process; an orphaning deletion of the Job leaves the Pod running.
    let hang = pod_of(cp, &ns, "hang").await;
    wait_for(&pods, &hang, "Running", phase_is("Running")).await;
    assert!(runner.running().iter().all(|p| p.job != "hang"));
    jobs.delete("hang", &DeleteParams::orphan())
        .await
        .expect("delete the Job");
    wait_gone(&jobs, "hang").await;
    let pod = wait_for(&pods, &hang, "orphaned", |v| {
        v["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|o| o.is_empty())
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Running");
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}

#[tokio::test]
async fn deleting_the_job_kills_its_process() {
    let (cp, ns, runner) = setup().await;
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    for (name, params) in [
        ("background", DeleteParams::background()),
        ("foreground", DeleteParams::foreground()),
    ] {
        create_job(cp, &ns, &job(name, None, "echo started; exec sleep 3600")).await;
        let process = runner
            .wait_for_process(&ns, name, TIMEOUT)
            .await
            .expect("the process runs");
        assert!(group_alive(process.pid), "{process:?}");
        let pod = wait_for(&pods, &process.pod, "Running", phase_is("Running")).await;
        assert!(
            pod["status"]["containerStatuses"][0]["state"]["running"]["startedAt"].is_string(),
            "{pod:#}"
        );
        wait_for(&jobs, name, "ready", |v| v["status"]["ready"] == 1).await;

        jobs.delete(name, &params).await.expect("delete the Job");
        wait_group_gone(process.pid).await;
        wait_gone(&pods, &process.pod).await;
        wait_gone(&jobs, name).await;
        assert!(runner.running().is_empty(), "{:?}", runner.running());
    }
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}

/// `job` with its container's `command`/`args` replaced and, if `claim` is set, the
/// PersistentVolumeClaim `claim` mounted at /cairn/interim.
fn with_command(job: &Job, command: Value, args: Value, claim: Option<&str>) -> Job {
    let mut v = to_json(job);
    let container = &mut v["spec"]["template"]["spec"]["containers"][0];
    container["command"] = command;
    container["args"] = args;
    if let Some(claim) = claim {
        if let Some(mounts) = container["volumeMounts"].as_array_mut() {
            mounts.push(json!({"name": "interim", "mountPath": "/cairn/interim"}));
        }
        if let Some(volumes) = v["spec"]["template"]["spec"]["volumes"].as_array_mut() {
            volumes.push(json!({"name": "interim", "persistentVolumeClaim": {"claimName": claim}}));
        }
    }
    serde_json::from_value(v).expect("a valid Job")
}

#[tokio::test]
async fn programs_are_mapped_claims_persist_and_missing_programs_fail_to_start() {
    let cp = ControlPlane::shared();
    let ns = cp.new_namespace().await.expect("new namespace");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "creds"}, "stringData": {"password": "p"},
    }))
    .expect("a valid Secret");
    Api::<Secret>::namespaced(cp.client(), &ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the Secret");
    let sh = PathBuf::from("/bin/sh");
    let options = Options::namespace(&ns)
        .command("cairn-agent", &sh)
        .image(IMAGE, &sh);
    let runner = JobRunner::start(cp, options);
    let jobs = Api::<Job>::namespaced(cp.client(), &ns);
    let pods = Api::<Pod>::namespaced(cp.client(), &ns);
    let base = job("base", None, "true");

    // `command[0]` mapped to a local program; the claim's dir outlives the Pod.
    let mut write = with_command(
        &base,
        json!(["/usr/local/bin/cairn-agent", "-c"]),
        json!(["mkdir -p /cairn/interim/data && echo kept > /cairn/interim/data/f"]),
        Some("interim"),
    );
    write.metadata.name = Some("write".into());
    create_job(cp, &ns, &write).await;
    let job = wait_for(&jobs, "write", "finished", job_finished).await;
    assert_eq!(job_condition(&job, "Complete")["status"], "True", "{job:#}");
    let kept = runner.claim_dir(&ns, "interim").join("data/f");
    assert_eq!(
        std::fs::read_to_string(&kept).ok().as_deref(),
        Some("kept\n")
    );

    // No command: the image's mapped entrypoint runs the args; it sees the same claim.
    let mut read = with_command(
        &base,
        Value::Null,
        json!(["-c", "cat /cairn/interim/data/f > /dev/termination-log"]),
        Some("interim"),
    );
    read.metadata.name = Some("read".into());
    create_job(cp, &ns, &read).await;
    wait_for(&jobs, "read", "finished", job_finished).await;
    let pod_name = pod_of(cp, &ns, "read").await;
    let pod = wait_for(&pods, &pod_name, "Succeeded", phase_is("Succeeded")).await;
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["terminated"]["message"], "kept\n",
        "{pod:#}"
    );

    // A program that does not exist: StartError, like a binary missing from an image.
    let mut missing = with_command(&base, json!(["no-such-program-here"]), Value::Null, None);
    missing.metadata.name = Some("missing".into());
    create_job(cp, &ns, &missing).await;
    let job = wait_for(&jobs, "missing", "finished", job_finished).await;
    assert_eq!(job_condition(&job, "Failed")["status"], "True", "{job:#}");
    let pod_name = pod_of(cp, &ns, "missing").await;
    let pod = wait_for(&pods, &pod_name, "Failed", phase_is("Failed")).await;
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 128, "{pod:#}");
    assert_eq!(terminated["reason"], "StartError");
    assert!(runner.errors().is_empty(), "{:?}", runner.errors());
}
