//! `spec.hooks` (Stash's shapes): what admission admits and refuses, each at its field's path,
//! and the pre hook's place in the resolved Job (first, before every step). On the shipped
//! examples and catalog.

mod common;

use cairn_api::BackupSession;
use cairn_api::resolve::{InstallSettings, resolve_backup_job};
use cairn_api::validation::{Policy, Validate, Verdict};
use common::example_cluster;
use serde_json::{Value, json};

/// The example configuration `es-backup` with `spec.hooks` set to `hooks`.
fn config(hooks: Value) -> cairn_api::BackupConfiguration {
    let cluster = example_cluster();
    let mut config = (*cluster.backup_configurations[&("demo".into(), "es-backup".into())]).clone();
    config.spec.hooks = Some(serde_json::from_value(hooks).expect("Stash's hook shape"));
    config
}

/// A BackupSession `name` of the example configuration `es-backup`.
fn session(name: &str) -> BackupSession {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": name, "namespace": "demo"},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": "es-backup"}}
    }))
    .expect("session")
}

fn verdict(hooks: Value) -> Verdict {
    config(hooks).validate(None, &example_cluster(), &Policy::default())
}

/// The one error's path and message.
fn refused(hooks: Value) -> (String, String) {
    let v = verdict(hooks);
    assert_eq!(v.errors.len(), 1, "{v:#?}");
    (v.errors[0].path.clone(), v.errors[0].message.clone())
}

#[test]
fn http_tcp_and_exec_hooks_are_admitted() {
    for hook in [
        json!({"preBackup": {"httpGet": {"host": "es.demo.svc", "port": 9200, "path": "/_flush"}}}),
        json!({"preBackup": {"httpPost": {"host": "hooks.example", "port": 443, "scheme": "HTTPS",
            "path": "/x", "httpHeaders": [{"name": "Content-Type", "value": "application/json"}],
            "body": "{\"text\": \"backup starts\"}"}}}),
        json!({"preBackup": {"httpPost": {"host": "10.0.0.1", "port": "8080",
            "form": {"a": ["1", "2"]}}}}),
        json!({"preBackup": {"tcpSocket": {"host": "es.demo.svc", "port": 9300}}}),
        // No host: the target's (Stash's default), filled in when the Job is resolved.
        json!({"preBackup": {"httpGet": {"port": 9200, "path": "/_flush"}}}),
        // Whether the writer may exec is the webhook's SubjectAccessReview, not this check.
        json!({"preBackup": {"exec": {"command": ["sh", "-c", "sync"]}, "containerName": "es"}}),
        json!({"postBackup": {"exec": {"command": ["true"]}, "executionPolicy": "OnFailure"}}),
        json!({"postBackup": {"executionPolicy": "OnFinalRetryFailure", "httpPost": {"host": "h",
            "port": 80, "body": "{{- .Name }} {{ .Status.Phase }}: {{ .Status.Error -}}"}}}),
    ] {
        let v = verdict(hook.clone());
        assert!(v.errors.is_empty(), "{hook}: {v:#?}");
    }
}

#[test]
fn what_cairn_does_not_run_is_refused_at_its_path() {
    let cases = [
        (
            json!({"preBackup": {"exec": {"command": []}, "containerName": "es"}}),
            "spec.hooks.preBackup.exec.command",
            "name the command",
        ),
        (
            json!({"postBackup": {"exec": {}, "executionPolicy": "OnFailure"}}),
            "spec.hooks.postBackup.exec.command",
            "name the command",
        ),
        (
            json!({"postBackup": {"httpPost": {"host": "h", "port": 80, "body": "{{ toJson .Name }}"}}}),
            "spec.hooks.postBackup",
            "function toJson not defined",
        ),
        (
            json!({"preBackup": {"tcpSocket": {"host": "h", "port": "http"}}}),
            "spec.hooks.preBackup.tcpSocket",
            "port number",
        ),
        (
            json!({"preBackup": {"httpGet": {"host": "h", "port": 70000}}}),
            "spec.hooks.preBackup.httpGet",
            "1 to 65535",
        ),
        (
            json!({"preBackup": {"httpGet": {"host": "h", "port": 80, "scheme": "FTP"}}}),
            "spec.hooks.preBackup.httpGet",
            "HTTP or HTTPS",
        ),
        (
            json!({"preBackup": {}}),
            "spec.hooks.preBackup",
            "exactly one of",
        ),
        (
            json!({"preBackup": {"httpGet": {"host": "h", "port": 80}, "tcpSocket": {"host": "h", "port": 80}}}),
            "spec.hooks.preBackup",
            "exactly one of",
        ),
        (
            json!({"preBackup": {"httpPost": {"host": "h", "port": 80, "body": "{{ .Name }}"}}}),
            "spec.hooks.preBackup",
            "templates in pre hooks",
        ),
    ];
    for (hook, path, words) in cases {
        let (p, message) = refused(hook.clone());
        assert_eq!(p, path, "{hook}: {message}");
        assert!(
            message.contains(words),
            "{hook}: {words:?} not in {message}"
        );
    }
}

#[test]
fn restore_hooks_are_checked_at_their_paths() {
    let cluster = example_cluster();
    let mut restore: cairn_api::RestoreSession =
        common::objects_in(&common::manifests().join("examples"))
            .into_iter()
            .find_map(|(_, o)| match o {
                cairn_api::manifest::Object::RestoreSession(r) => Some(r),
                _ => None,
            })
            .expect("an example RestoreSession");
    restore.spec.hooks = Some(
        serde_json::from_value(json!({
            "preRestore": {"exec": {}},
            "postRestore": {"tcpSocket": {"host": "h", "port": 1}}
        }))
        .expect("shape"),
    );
    let v = restore.validate(None, &cluster, &Policy::default());
    let paths: Vec<&str> = v.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["spec.hooks.preRestore.exec.command"], "{v:#?}");
}

#[test]
fn the_pre_hook_is_the_jobs_first_container() {
    let hook = json!({"preBackup": {"httpPost": {"host": "hooks.example", "port": 8080,
        "path": "/pre", "body": "$(RESTIC_PASSWORD)"}}});
    let mut cluster = example_cluster();
    let c = config(hook);
    cluster = cluster.with_backup_configuration(c);
    let session = session("es-backup-1764000000");
    let install = InstallSettings {
        agent_image: "registry.example/cairn:1.2.3".into(),
        ..Default::default()
    };
    let job = resolve_backup_job(&session, &cluster, &install).expect("resolves");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let first = &pod.init_containers.expect("init containers")[0];
    assert_eq!(first.name, "pre-backup-hook");
    assert_eq!(first.image.as_deref(), Some("registry.example/cairn:1.2.3"));
    let args = first.args.clone().unwrap_or_default();
    assert_eq!(args[..2], ["hook", "--name=preBackup"]);
    // The kubelet must not expand a variable written in the hook.
    assert!(args[2].contains("$$(RESTIC_PASSWORD)"), "{args:?}");
    assert!(first.env.is_none() && first.env_from.is_none() && first.volume_mounts.is_none());
    let sc = first.security_context.as_ref().expect("security context");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
}

#[test]
fn a_post_hook_fires_as_its_policy_says_with_the_outcome_rendered() {
    use cairn_api::common::SessionPhase::{Failed, Succeeded};
    use cairn_api::resolve::{JobSource, PostHookRun, SessionEnd, resolve_post_hook};
    let session = session("s-1");
    let install = InstallSettings::default();
    let ended = |phase, retry_left| SessionEnd {
        phase,
        duration: "5s",
        error: "it broke",
        retry_left,
    };
    let job = |policy: &str, end: SessionEnd<'_>| {
        let c = config(
            json!({"postBackup": {"executionPolicy": policy, "httpPost": {"host": "h",
            "port": 80, "body": "{{ .Name }} {{ .Status.Phase }} {{ .Status.Duration }}"}}}),
        );
        resolve_post_hook(&JobSource::backup(&session, &c), &end, &install, None)
            .expect("resolves")
            .map(|run| match run {
                PostHookRun::Job(job) => *job,
                PostHookRun::Exec(e) => panic!("not an exec hook: {e:?}"),
            })
    };
    assert!(job("Always", ended(Succeeded, false)).is_some());
    assert!(job("OnSuccess", ended(Failed, false)).is_none());
    assert!(job("OnFailure", ended(Succeeded, false)).is_none());
    assert!(job("OnFinalRetryFailure", ended(Failed, true)).is_none());
    let t = job("OnFinalRetryFailure", ended(Failed, false)).expect("fires");
    let pod = t.spec.and_then(|s| s.template.spec).expect("pod");
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "post-backup-hook");
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args[1], "--name=postBackup");
    assert!(args[2].contains("s-1 Failed 5s"), "{args:?}");
    assert_eq!(pod.automount_service_account_token, Some(false));

    // An exec hook is the controller's to run: no Job, its command rendered, in the target.
    let c = config(json!({
        "preBackup": {"exec": {"command": ["sync"]}},
        "postBackup": {"exec": {"command": ["say", "{{ .Status.Phase }}"]}, "containerName": "es"}
    }));
    let source = JobSource::backup(&session, &c);
    let pre = source
        .pre_exec_hook()
        .expect("resolves")
        .expect("an exec pre hook");
    assert_eq!(
        (pre.name, pre.command()),
        ("preBackup", &["sync".to_string()][..])
    );
    let run = resolve_post_hook(&source, &ended(Failed, false), &install, None).expect("resolves");
    let Some(PostHookRun::Exec(post)) = run else {
        panic!("an exec post hook: {run:?}");
    };
    assert_eq!(post.command(), ["say", "Failed"]);
    assert_eq!(post.app_binding, c.spec.target.r#ref.name);
}

/// Stash's default for a hook without `host` is the target's pod; here the host of the target
/// AppBinding's URL or Service, in the hook's container; with no target host, refused by name.
#[test]
fn a_hook_without_host_connects_to_the_targets_host() {
    use cairn_api::common::SessionPhase::Succeeded;
    use cairn_api::resolve::{JobSource, PostHookRun, SessionEnd, resolve_post_hook};
    use cairn_api::validation::Lookups;
    let c = config(json!({"preBackup": {"tcpSocket": {"port": 9200}},
                          "postBackup": {"httpGet": {"port": 9200, "path": "/done"}}}));
    let cluster = example_cluster().with_backup_configuration(c.clone());
    let target = cluster
        .app_binding("demo", &c.spec.target.r#ref.name)
        .expect("the example's AppBinding");
    let host = target.host().expect("the AppBinding's host");
    let session = session("s-2");
    let install = InstallSettings::default();
    let job = resolve_backup_job(&session, &cluster, &install).expect("resolves");
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let args = pod.init_containers.expect("init containers")[0]
        .args
        .clone()
        .unwrap_or_default();
    assert!(
        args[2].contains(&format!("\"host\":\"{host}\"")),
        "{host}: {args:?}"
    );

    let end = SessionEnd {
        phase: Succeeded,
        duration: "1s",
        error: "",
        retry_left: false,
    };
    let source = JobSource::backup(&session, &c);
    let run = resolve_post_hook(&source, &end, &install, Some(&target)).expect("resolves");
    let Some(PostHookRun::Job(job)) = run else {
        panic!("a hook Job: {run:?}");
    };
    let pod = job.spec.and_then(|s| s.template.spec).expect("pod");
    let args = pod.containers[0].args.clone().unwrap_or_default();
    assert!(
        args[2].contains(&format!("\"host\":\"{host}\"")),
        "{host}: {args:?}"
    );
    let err = resolve_post_hook(&source, &end, &install, None).expect_err("no host to use");
    assert!(
        err.to_string()
            .contains("postBackup.httpGet: host is required"),
        "{err}"
    );
}
