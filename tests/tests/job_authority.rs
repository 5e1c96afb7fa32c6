//! Only cairn decides what a Job runs, proved through the real kube-apiserver and kubectl:
//! a session carrying its own Job is denied; the same session created while the webhook is
//! unregistered still runs cairn's own Job; a configuration asking for a built-in variable, an
//! agent flag outside the table or a root pod is denied. And the API server's own PodSecurity
//! admission is the judge of "restricted": what cairn admits, it admits; what cairn denies, it
//! refuses.
//!
//! No node here: the tests look at the Job objects the controller creates.

use std::time::Duration;

use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::pod_security::PodSecurityLevel;
use cairn_api::resolve::{InstallSettings, resolve_backup_job};
use cairn_api::validation::{LookupTable, Policy, validate_backup_configuration};
use cairn_api::{BackupConfiguration, BackupSession};
use cairn_tests::controller::Controller;
use cairn_tests::system::cairn_system;
use cairn_tests::webhook::Webhook;
use cairn_tests::{ControlPlane, repo_root, wait_for};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;
use proptest::prelude::*;
use serde_json::{Value, json};
use tokio::sync::OnceCell;

const AGENT_IMAGE: &str = "cairn-agent:test";

struct Env {
    cp: &'static ControlPlane,
    webhook: Webhook,
    _controller: Controller,
}

async fn env() -> &'static Env {
    static ENV: OnceCell<Env> = OnceCell::const_new();
    ENV.get_or_init(|| async {
        let cp = ControlPlane::shared();
        let (webhook, controller) = cairn_system(cp, "authority").await;
        Env {
            cp,
            webhook,
            _controller: controller,
        }
    })
    .await
}

fn apply(cp: &ControlPlane, objects: &[Value]) -> std::process::Output {
    let yaml: Vec<String> = objects
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("yaml"))
        .collect();
    cp.kubectl_stdin(["apply", "-f", "-"], &yaml.join("---\n"))
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Secret, AppBinding, Repository and the configuration `cfg` on the catalog's Task.
fn fixture(ns: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns},
               "stringData": {"RESTIC_PASSWORD": "never-in-a-job"}}),
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "es-auth", "namespace": ns},
               "stringData": {"username": "admin", "password": "never-in-a-job-either"}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns},
               "spec": {"clientConfig": {"url": "https://127.0.0.1:9200"}, "secret": {"name": "es-auth"}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns},
               "spec": {"backend": {"storageSecretName": "repo-secret", "local": {"mountPath": "/backup", "emptyDir": {}}}}}),
        configuration(ns, "cfg", json!({})),
    ]
}

fn configuration(ns: &str, name: &str, extra: Value) -> Value {
    let mut spec = json!({
        "schedule": "0 0 1 1 *",
        "repository": {"name": "repo"},
        "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
        "retentionPolicy": {"name": "keep", "keepLast": 3},
        "retryConfig": {"maxRetry": 0},
    });
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
           "metadata": {"name": name, "namespace": ns}, "spec": spec})
}

/// The session an attacker writes: their own privileged Job mounting the node's root.
fn hostile_session(ns: &str, name: &str, config: &str) -> Value {
    json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
           "metadata": {"name": name, "namespace": ns},
           "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": config},
                    "jobTemplate": {"spec": {"template": {"spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "pwn", "image": "busybox", "command": ["sh"],
                                        "securityContext": {"privileged": true},
                                        "volumeMounts": [{"name": "root", "mountPath": "/host"}]}],
                        "volumes": [{"name": "root", "hostPath": {"path": "/"}}]}}}}}})
}

/// The phase a session ended in, and its conditions as text.
async fn ended(cp: &ControlPlane, ns: &str, name: &str) -> (String, String) {
    let sessions: Api<BackupSession> = Api::namespaced(cp.client(), ns);
    wait_for(
        Duration::from_secs(60),
        &format!("session {name} to end"),
        || async {
            let status = sessions.get_opt(name).await.ok()??.status?;
            let phase = status.phase?;
            phase
                .is_final()
                .then(|| (phase.to_string(), format!("{:?}", status.conditions)))
        },
    )
    .await
}

async fn ready(cp: &ControlPlane, ns: &str, name: &str) {
    let api: Api<BackupConfiguration> = Api::namespaced(cp.client(), ns);
    wait_for(
        Duration::from_secs(30),
        "the configuration to be Ready",
        || async {
            let c = api.get_opt(name).await.ok()??;
            (format!("{:?}", c.status?.phase?) == "Ready").then_some(())
        },
    )
    .await;
}

/// Waits until the API server no longer calls the webhook (it learns of the deletion of the
/// webhook configurations through its own watch).
async fn unregister_webhook(cp: &ControlPlane) {
    let out = cp.kubectl([
        "delete",
        "validatingwebhookconfiguration/cairn-validating",
        "mutatingwebhookconfiguration/cairn-mutating",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let probe = "apiVersion: cairn.dev/v1alpha1\nkind: Task\nmetadata:\n  name: unregistration-probe\nspec:\n  steps: []\n";
    wait_for(
        Duration::from_secs(30),
        "the webhook to be out of the path",
        || async {
            let out = cp.kubectl_stdin(["create", "--dry-run=server", "-f", "-"], probe);
            out.status.success().then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn only_cairn_decides_what_a_job_runs() {
    let env = env().await;
    let cp = env.cp;
    let ns = cp.new_namespace().await.expect("ns");
    let out = apply(cp, &fixture(&ns));
    assert!(out.status.success(), "{}", stderr(&out));
    ready(cp, &ns, "cfg").await;

    // With the webhook: the hand-written Job is denied, naming the field.
    let out = apply(cp, &[hostile_session(&ns, "mine", "cfg")]);
    assert!(!out.status.success(), "a hand-written Job was admitted");
    assert!(
        stderr(&out).contains("spec.jobTemplate: only cairn writes it"),
        "{}\nwebhook log:\n{}",
        stderr(&out),
        env.webhook.log_tail(20)
    );

    // What a configuration asks of its Job is denied, each naming its field.
    for (extra, want) in [
        (
            json!({"task": {"params": [{"name": "TARGET_URL", "value": "http://attacker.invalid:9200"}]}}),
            "spec.task.params[0].name: \"TARGET_URL\" is a built-in variable",
        ),
        (
            json!({"target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                              "args": ["--exfiltrate=yes"]}}),
            "spec.target.args[0]: --exfiltrate is not a flag of cairn-agent",
        ),
        (
            json!({"runtimeSettings": {"pod": {"securityContext": {"runAsUser": 0}}}}),
            "spec.runtimeSettings.pod.securityContext.runAsUser: the restricted Pod Security Standard forbids this: 0 runs as root",
        ),
    ] {
        let out = apply(cp, &[configuration(&ns, "asks", extra)]);
        assert!(!out.status.success(), "admitted: {want}");
        assert!(stderr(&out).contains(want), "{want}\n{}", stderr(&out));
        assert!(!stderr(&out).contains("attacker"), "{}", stderr(&out));
    }
    let out = apply(
        cp,
        &[configuration(
            &ns,
            "root",
            json!({"runtimeSettings": {"pod": {"securityContext": {"runAsUser": 0}}}}),
        )],
    );
    assert!(
        stderr(&out).contains("jobPodSecurity: baseline"),
        "{}",
        stderr(&out)
    );

    // Without the webhook the same objects get in; nothing they ask for runs.
    unregister_webhook(cp).await;
    let out = apply(cp, &[hostile_session(&ns, "mine", "cfg")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: Api<Job> = Api::namespaced(cp.client(), &ns);
    let job = wait_for(
        Duration::from_secs(60),
        "cairn's Job for the session",
        || async { jobs.get_opt("cairn-backup-mine").await.ok()? },
    )
    .await;
    let pod = job
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone())
        .expect("pod spec");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.image.as_deref(), Some(AGENT_IMAGE), "cairn's image");
    assert_eq!(c.command.as_deref(), Some(&["cairn-agent".to_string()][..]));
    let sc = c
        .security_context
        .clone()
        .expect("container securityContext");
    assert_eq!(sc.privileged, None);
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    let volumes: Vec<String> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| {
            assert!(v.host_path.is_none(), "a hostPath volume: {v:?}");
            v.name.clone()
        })
        .collect();
    assert_eq!(
        volumes,
        [
            "cairn-tmp",
            "cairn-repository-secret",
            "cairn-target-secret",
            "cairn-repository"
        ]
    );
    assert_eq!(pod.automount_service_account_token, Some(false));
    let text = serde_json::to_string(&job).expect("json");
    assert!(
        !text.contains("busybox") && !text.contains("never-in-a-job"),
        "{text}"
    );

    // A configuration admitted without the webhook that names a built-in variable is Invalid
    // in its status (the controller runs admission's rules too), and its session runs nothing.
    let session_of = |name: &str, config: &str| {
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
               "metadata": {"name": name, "namespace": ns},
               "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": config}}})
    };
    let out = apply(
        cp,
        &[configuration(
            &ns,
            "asks",
            json!({"task": {"params": [{"name": "TARGET_URL", "value": "http://attacker.invalid:9200"}]}}),
        )],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let configs: Api<BackupConfiguration> = Api::namespaced(cp.client(), &ns);
    wait_for(
        Duration::from_secs(30),
        "the configuration to be Invalid",
        || async {
            let c = configs.get_opt("asks").await.ok()??;
            let status = c.status?;
            (format!("{:?}", status.phase?) == "Invalid"
                && format!("{:?}", status.conditions).contains("TARGET_URL"))
            .then_some(())
        },
    )
    .await;
    let out = apply(cp, &[session_of("asks-now", "asks")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (phase, said) = ended(cp, &ns, "asks-now").await;
    assert_eq!(phase, "Skipped", "{said}");

    // A Repository admitted without the webhook that mounts the node's files: the configuration
    // is Ready (the Repository's volume is not its own field), and the controller's resolution
    // refuses the Job.
    let out = apply(
        cp,
        &[
            json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "node", "namespace": ns},
                   "spec": {"backend": {"storageSecretName": "repo-secret", "local": {"mountPath": "/backup", "hostPath": {"path": "/"}}}}}),
            configuration(&ns, "on-node", json!({"repository": {"name": "node"}})),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    ready(cp, &ns, "on-node").await;
    let out = apply(cp, &[session_of("on-node-now", "on-node")]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (phase, said) = ended(cp, &ns, "on-node-now").await;
    assert_eq!(phase, "Failed", "{said}");
    assert!(
        said.contains("ResolutionFailed") && said.contains("hostPath"),
        "{said}"
    );
    for job in ["cairn-backup-asks-now", "cairn-backup-on-node-now"] {
        assert!(
            jobs.get_opt(job).await.expect("get").is_none(),
            "{job} was created"
        );
    }
    // Put the webhook back for whatever runs after.
    env.webhook.register(cp).expect("register again");
}

// ---------------------------------------------------------------------------------------------
// The API server judges "restricted".

/// The catalog, the fixture's objects and `cfg` with `settings`, as lookups.
fn world(ns: &str, settings: &Value) -> (LookupTable, BackupConfiguration) {
    let mut table = LookupTable::default().with_namespace(ns, &[]);
    for file in ["functions.yaml", "tasks.yaml"] {
        let text = std::fs::read_to_string(repo_root().join("manifests/catalog").join(file))
            .expect("catalog");
        for doc in parse_documents(&text).expect("yaml") {
            table = match typed(doc).expect("typed") {
                Object::Task(t) => table.with_task(t),
                Object::Function(f) => table.with_function(f),
                _ => table,
            };
        }
    }
    let mut config = configuration(ns, "cfg", json!({}));
    config["spec"]["runtimeSettings"] = settings.clone();
    let config: BackupConfiguration = serde_json::from_value(config).expect("configuration");
    for o in fixture(ns) {
        table = match typed(o).expect("typed") {
            Object::Repository(r) => table.with_repository(r),
            Object::AppBinding(a) => table.with_app_binding(a),
            _ => table,
        };
    }
    let table = table.with_backup_configuration(config.clone());
    (table, config)
}

/// cairn's verdict on `settings` under the default install: the errors at runtimeSettings.
fn cairn_denies(ns: &str, settings: &Value) -> Vec<String> {
    let (table, config) = world(ns, settings);
    let verdict = validate_backup_configuration(&config, None, &table, &Policy::default());
    verdict.errors.iter().map(ToString::to_string).collect()
}

/// The pod cairn builds for `settings` when nothing stops it (an install opted in to
/// `privileged`), dry-run created in a namespace enforcing `restricted`: the API server's answer.
async fn server_admits(
    cp: &ControlPlane,
    ns: &str,
    settings: &Value,
    n: usize,
) -> Result<(), String> {
    let (table, _) = world(ns, settings);
    let session: BackupSession = serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": format!("probe-{n}"), "namespace": ns},
        "spec": {"invoker": {"kind": "BackupConfiguration", "name": "cfg"}}}))
    .expect("session");
    let install = InstallSettings {
        agent_image: AGENT_IMAGE.into(),
        policy: Policy {
            job_pod_security: PodSecurityLevel::Privileged,
        },
        ..Default::default()
    };
    let job = resolve_backup_job(&session, &table, &install).map_err(|e| e.to_string())?;
    let template = job.spec.expect("job spec").template;
    let mut meta = template.metadata.unwrap_or_default();
    meta.name = Some(format!("probe-{n}"));
    let pod = Pod {
        metadata: meta,
        spec: template.spec,
        status: None,
    };
    let api: Api<Pod> = Api::namespaced(cp.client(), ns);
    let params = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&params, &pod)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A namespace whose pods must meet `restricted` (the API server's PodSecurity admission).
async fn restricted_namespace(cp: &ControlPlane) -> String {
    let ns = cp.new_namespace_with_prefix("pss").await.expect("ns");
    let out = cp.kubectl([
        "label",
        "namespace",
        &ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    ns
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// One case of each kind of violation: cairn denies it at admission, and the API server refuses
/// the pod it would make.
#[test]
fn each_violation_cairn_denies_the_api_server_refuses() {
    let rt = runtime();
    let cp = ControlPlane::shared();
    let ns = rt.block_on(restricted_namespace(cp));
    let cases = [
        json!({"pod": {"securityContext": {"runAsUser": 0}}}),
        json!({"pod": {"securityContext": {"runAsNonRoot": false}}}),
        json!({"pod": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
        json!({"pod": {"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "65536"}]}}}),
        json!({"pod": {"securityContext": {"seLinuxOptions": {"type": "spc_t"}}}}),
        json!({"pod": {"securityContext": {"appArmorProfile": {"type": "Unconfined"}}}}),
        json!({"pod": {"podAnnotations": {"container.apparmor.security.beta.kubernetes.io/elasticsearch-backup": "unconfined"}}}),
        json!({"container": {"securityContext": {"privileged": true, "allowPrivilegeEscalation": true}}}),
        json!({"container": {"securityContext": {"allowPrivilegeEscalation": true}}}),
        json!({"container": {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}}}),
        json!({"container": {"securityContext": {"capabilities": {"drop": ["ALL"], "add": ["CHOWN"]}}}}),
        json!({"container": {"securityContext": {"capabilities": {"drop": ["NET_RAW"]}}}}),
        json!({"container": {"securityContext": {"runAsUser": 0}}}),
        json!({"container": {"securityContext": {"runAsNonRoot": false}}}),
        json!({"container": {"securityContext": {"seccompProfile": {"type": "Unconfined"}}}}),
    ];
    for (n, settings) in cases.iter().enumerate() {
        let denied = cairn_denies(&ns, settings);
        assert!(!denied.is_empty(), "cairn admits {settings}");
        let answer = rt.block_on(server_admits(cp, &ns, settings, n));
        assert!(
            answer.is_err(),
            "the API server admits {settings}, which cairn denies: {denied:?}"
        );
    }
    // And the defaults pass both.
    assert_eq!(cairn_denies(&ns, &json!({})), Vec::<String>::new());
    rt.block_on(server_admits(cp, &ns, &json!({}), 99))
        .expect("the API server admits cairn's own Job");
}

fn maybe(values: Vec<Value>) -> impl Strategy<Value = Option<Value>> {
    prop::option::of(prop::sample::select(values))
}

/// Runtime settings built from the values users write, good and bad.
fn settings() -> impl Strategy<Value = Value> {
    let pod = (
        maybe(vec![json!(0), json!(1000)]),
        maybe(vec![json!(true), json!(false)]),
        maybe(vec![
            json!({"type": "RuntimeDefault"}),
            json!({"type": "Unconfined"}),
            json!({"type": "Localhost", "localhostProfile": "profiles/agent.json"}),
        ]),
        maybe(vec![
            json!([{"name": "net.ipv4.tcp_syncookies", "value": "1"}]),
            json!([{"name": "kernel.msgmax", "value": "65536"}]),
        ]),
        maybe(vec![
            json!({"type": "container_t"}),
            json!({"type": "spc_t"}),
            json!({"user": "system_u"}),
        ]),
        maybe(vec![json!(2000)]),
        maybe(vec![
            json!({"type": "RuntimeDefault"}),
            json!({"type": "Unconfined"}),
        ]),
    );
    let container = (
        maybe(vec![json!(true), json!(false)]),
        maybe(vec![json!(true), json!(false)]),
        maybe(vec![
            json!({"drop": ["ALL"]}),
            json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
            json!({"drop": ["ALL"], "add": ["CHOWN"]}),
            json!({"drop": ["NET_RAW"]}),
        ]),
        maybe(vec![json!(0), json!(2000)]),
        maybe(vec![json!(true), json!(false)]),
        maybe(vec![json!(false)]),
        maybe(vec![
            json!({"type": "RuntimeDefault"}),
            json!({"type": "Unconfined"}),
        ]),
    );
    let annotation = maybe(vec![json!("runtime/default"), json!("unconfined")]);
    (pod, container, annotation).prop_map(|(p, c, a)| {
        let mut psc = serde_json::Map::new();
        for (k, v) in [
            ("runAsUser", p.0),
            ("runAsNonRoot", p.1),
            ("seccompProfile", p.2),
            ("sysctls", p.3),
            ("seLinuxOptions", p.4),
            ("fsGroup", p.5),
            ("appArmorProfile", p.6),
        ] {
            if let Some(v) = v {
                psc.insert(k.into(), v);
            }
        }
        let mut csc = serde_json::Map::new();
        for (k, v) in [
            ("privileged", c.0),
            ("allowPrivilegeEscalation", c.1),
            ("capabilities", c.2),
            ("runAsUser", c.3),
            ("runAsNonRoot", c.4),
            ("readOnlyRootFilesystem", c.5),
            ("seccompProfile", c.6),
        ] {
            if let Some(v) = v {
                csc.insert(k.into(), v);
            }
        }
        let mut pod = json!({"securityContext": psc});
        if let Some(a) = a {
            pod["podAnnotations"] =
                json!({"container.apparmor.security.beta.kubernetes.io/elasticsearch-backup": a});
        }
        json!({"pod": pod, "container": {"securityContext": csc}})
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 160, failure_persistence: None, ..ProptestConfig::default() })]

    /// For any generated settings, cairn's verdict and the API server's agree: admitted by cairn
    /// means the pod is admitted into a `restricted` namespace, denied means it is refused.
    #[test]
    fn cairn_and_the_api_server_agree_on_restricted(settings in settings()) {
        static NS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1000);
        let rt = runtime();
        let cp = ControlPlane::shared();
        let ns = NS.get_or_init(|| rt.block_on(restricted_namespace(cp)));
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let denied = cairn_denies(ns, &settings);
        let answer = rt.block_on(server_admits(cp, ns, &settings, n));
        prop_assert_eq!(
            denied.is_empty(),
            answer.is_ok(),
            "settings {} — cairn: {:?} — API server: {:?}",
            settings, denied, answer
        );
    }
}
