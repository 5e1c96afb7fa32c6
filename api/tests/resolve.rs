//! Task resolution on the shipped catalog and examples: the Job has the expected containers,
//! env, volumes and security context, and no Secret value appears anywhere in it.

mod common;

use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::resolve::{InstallSettings, ResolveError, resolve_backup_job, resolve_restore_job};
use cairn_api::{BackupSession, RestoreSession};
use common::{example_cluster, manifests, objects_in};
use k8s_openapi::api::batch::v1::JobTemplateSpec;
use k8s_openapi::api::core::v1::{Container, PodSpec};
use serde_json::json;

fn session(config: &str) -> BackupSession {
    serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupSession",
        "metadata": {"name": format!("{config}-1764000000"), "namespace": "demo"},
        "spec": {"invoker": {"apiGroup": "cairn.dev", "kind": "BackupConfiguration", "name": config}}
    }))
    .expect("valid session")
}

fn restore() -> RestoreSession {
    objects_in(&manifests().join("examples"))
        .into_iter()
        .find_map(|(_, o)| match o {
            Object::RestoreSession(r) => Some(r),
            _ => None,
        })
        .expect("an example RestoreSession")
}

fn install() -> InstallSettings {
    InstallSettings {
        agent_image: "registry.example/cairn:1.2.3".into(),
        ..Default::default()
    }
}

fn pod(job: &JobTemplateSpec) -> &PodSpec {
    job.spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("pod spec")
}

fn env<'a>(c: &'a Container, name: &str) -> Option<&'a str> {
    c.env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)
        .and_then(|e| e.value.as_deref())
}

fn arg<'a>(c: &'a Container, flag: &str) -> Option<&'a str> {
    c.args
        .as_ref()?
        .iter()
        .find_map(|a| a.strip_prefix(flag).and_then(|r| r.strip_prefix('=')))
}

#[test]
fn backup_job_from_the_catalog() {
    let cluster = example_cluster();
    let job = resolve_backup_job(&session("es-backup"), &cluster, &install()).expect("resolves");
    let spec = job.spec.as_ref().expect("job spec");
    assert_eq!(spec.backoff_limit, Some(0));
    let pod = pod(&job);
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert!(
        pod.init_containers.is_none(),
        "one step: no init containers"
    );
    assert_eq!(pod.containers.len(), 1);
    let c = &pod.containers[0];
    assert_eq!(c.name, "elasticsearch-backup");
    assert_eq!(c.image.as_deref(), Some("registry.example/cairn:1.2.3"));
    assert_eq!(c.command.as_deref(), Some(&["cairn-agent".to_string()][..]));
    let args = c.args.clone().unwrap_or_default();
    assert_eq!(args.first().map(String::as_str), Some("backup"));
    assert_eq!(
        arg(c, "--repository"),
        Some("s3:http://minio.storage.svc:9000/cairn-backups/demo/elasticsearch")
    );
    assert_eq!(arg(c, "--url"), Some("https://es.demo.svc:9200"));
    assert_eq!(arg(c, "--host"), Some("host-0"));
    assert_eq!(arg(c, "--keep-last"), Some("5"));
    assert_eq!(arg(c, "--prune"), Some("true"));
    assert_eq!(arg(c, "--interim-data-dir"), Some(""));
    assert_eq!(arg(c, "--tag"), Some("session=es-backup-1764000000"));
    // The snapshot's identity, which scopes retention to this configuration's own snapshots.
    assert_eq!(arg(c, "--namespace"), Some("demo"));
    assert_eq!(arg(c, "--configuration"), Some("es-backup"));
    // The configuration's Task param overrides the Function's default.
    assert_eq!(arg(c, "--exclude"), Some(".security*"));
    assert_eq!(arg(c, "--include"), Some("*"));
    assert_eq!(arg(c, "--credentials-dir"), Some("/cairn/secrets/target"));
    assert!(
        args.iter().all(|a| !a.contains("${")),
        "unresolved: {args:?}"
    );

    // Credentials by reference only.
    let env_from = c.env_from.clone().unwrap_or_default();
    assert_eq!(
        env_from[0].secret_ref.as_ref().map(|s| s.name.as_str()),
        Some("s3-secret")
    );
    assert_eq!(env(c, "HOME"), Some("/cairn/tmp"));

    // Restricted pod security.
    let sc = c.security_context.as_ref().expect("container security");
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(
        sc.capabilities.as_ref().and_then(|c| c.drop.clone()),
        Some(vec!["ALL".to_string()])
    );
    let psc = pod.security_context.as_ref().expect("pod security");
    assert_eq!(psc.run_as_user, Some(65534));
    assert_eq!(
        psc.seccomp_profile.as_ref().map(|s| s.type_.as_str()),
        Some("RuntimeDefault")
    );

    // Volumes: scratch, both secrets; no interim volume for a streaming backup.
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(volumes.contains(&"cairn-tmp"), "{volumes:?}");
    assert!(volumes.contains(&"cairn-repository-secret"), "{volumes:?}");
    assert!(volumes.contains(&"cairn-target-secret"), "{volumes:?}");
    assert!(!volumes.contains(&"cairn-interim"), "{volumes:?}");
    let mounts: Vec<(&str, &str)> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.as_str(), m.mount_path.as_str()))
        .collect();
    assert!(mounts.contains(&("cairn-tmp", "/cairn/tmp")), "{mounts:?}");

    // Labels.
    let labels = job
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("cairn")
    );
    assert_eq!(
        labels.get("cairn.dev/session").map(String::as_str),
        Some("es-backup-1764000000")
    );
}

#[test]
fn interim_volume_local_repository_and_runtime_settings() {
    let cluster = example_cluster();
    let job = resolve_backup_job(&session("es-nightly"), &cluster, &install()).expect("resolves");
    let pod = pod(&job);
    let c = &pod.containers[0];
    assert_eq!(arg(c, "--interim-data-dir"), Some("/cairn/interim/data"));
    assert_eq!(arg(c, "--repository"), Some("local:/backup/elasticsearch"));
    assert_eq!(arg(c, "--host"), Some("es-primary"));
    assert_eq!(arg(c, "--keep-daily"), Some("7"));
    assert_eq!(arg(c, "--keep-last"), Some(""));
    let claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cairn-interim")
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|p| p.claim_name.clone());
    assert_eq!(claim.as_deref(), Some("es-nightly-1764000000-dump"));
    let repo_claim = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "cairn-repository")
        .and_then(|v| v.persistent_volume_claim.as_ref())
        .map(|p| p.claim_name.clone());
    assert_eq!(repo_claim.as_deref(), Some("backup-pvc"));
    let mounts: Vec<&str> = c
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert!(mounts.contains(&"/cairn/interim"), "{mounts:?}");
    assert!(mounts.contains(&"/backup"), "{mounts:?}");
    let limits = c
        .resources
        .as_ref()
        .and_then(|r| r.limits.clone())
        .unwrap_or_default();
    assert_eq!(limits.get("memory").map(|q| q.0.as_str()), Some("512Mi"));
}

#[test]
fn restore_job_from_the_catalog() {
    let cluster = example_cluster();
    let job = resolve_restore_job(&restore(), &cluster, &install()).expect("resolves");
    let c = &pod(&job).containers[0];
    assert_eq!(c.name, "elasticsearch-restore");
    assert_eq!(
        c.args.as_ref().and_then(|a| a.first()).map(String::as_str),
        Some("restore")
    );
    assert_eq!(arg(c, "--snapshot"), Some("latest"));
    assert_eq!(arg(c, "--source-host"), Some("host-0"));
    assert_eq!(arg(c, "--existing"), Some("fail"));
    assert_eq!(arg(c, "--on-failure"), Some("delete"));
    // What the restore may read: its namespace's snapshots, any for the Repository's namespace.
    assert_eq!(arg(c, "--namespace"), Some("demo"));
    assert_eq!(arg(c, "--repository-namespace"), Some("demo"));
    assert_eq!(arg(c, "--source-configuration"), Some(""));
    let labels = job
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    assert_eq!(
        labels.get("cairn.dev/invoker-kind").map(String::as_str),
        Some("RestoreSession")
    );
}

/// Resolution reads no Secret (its lookups cannot return one), so a credential can reach a Job
/// only through a field that carries one inline: the userinfo of a URL. Each such field gets a
/// password of its own; none may appear in the Job (nor may the user names).
#[test]
fn no_credential_written_in_a_url_reaches_the_job() {
    use cairn_api::validation::Lookups as _;
    let base = example_cluster();
    let mut app = (*base.app_binding("demo", "es").expect("example AppBinding")).clone();
    app.spec.client_config.url = Some("https://app-user:app-pass-1@es.example:9200".into());
    app.spec.client_config.service = None;
    let mut s3 = (*base
        .repository("demo", "s3-repo")
        .expect("example Repository"))
    .clone();
    if let Some(s3) = s3.spec.backend.s3.as_mut() {
        s3.endpoint = Some("https://s3-user:s3-pass-2@minio.example:9000".into());
    }
    let rest: cairn_api::Repository = serde_json::from_value(json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": "s3-repo", "namespace": "demo"},
        "spec": {"backend": {"storageSecretName": "s3-secret",
                 "rest": {"url": "https://rest-user:rest-pass-3@rest.example:8000/repo"}}}
    }))
    .expect("rest Repository");
    for repository in [s3, rest] {
        let cluster = base
            .clone()
            .with_app_binding(app.clone())
            .with_repository(repository);
        let jobs = [
            resolve_backup_job(&session("es-backup"), &cluster, &install()),
            resolve_restore_job(&restore(), &cluster, &install()),
        ];
        for job in jobs {
            let text = serde_json::to_string(&job.expect("resolves")).expect("json");
            for secret in [
                "pass-1",
                "pass-2",
                "pass-3",
                "app-user",
                "s3-user",
                "rest-user",
            ] {
                assert!(!text.contains(secret), "{secret:?} reached the Job: {text}");
            }
        }
    }
}

#[test]
fn steps_become_init_containers_and_params_override() {
    let mut cluster = example_cluster();
    let extra = r#"
apiVersion: cairn.dev/v1alpha1
kind: Function
metadata: {name: pre-check}
spec:
  image: ${AGENT_IMAGE}
  args: ["check", "--mode=${mode:=quick}", "--ns=${NAMESPACE}"]
---
apiVersion: cairn.dev/v1alpha1
kind: Task
metadata: {name: checked-backup}
spec:
  steps:
    - name: pre-check
      params: [{name: mode, value: full}]
    - name: elasticsearch-backup
"#;
    for doc in parse_documents(extra).expect("yaml") {
        cluster = match typed(doc).expect("typed") {
            Object::Function(f) => cluster.with_function(f),
            Object::Task(t) => cluster.with_task(t),
            _ => cluster,
        };
    }
    let mut config = (*cluster.backup_configurations[&("demo".into(), "es-backup".into())]).clone();
    let task = config.spec.task.get_or_insert_with(Default::default);
    task.name = Some("checked-backup".into());
    let cluster = cluster.with_backup_configuration(config.clone());
    let job = resolve_backup_job(&session("es-backup"), &cluster, &install()).expect("resolves");
    let pod = pod(&job);
    let init = pod.init_containers.clone().unwrap_or_default();
    assert_eq!(init.len(), 1);
    assert_eq!(init[0].name, "pre-check");
    assert_eq!(arg(&init[0], "--mode"), Some("full"), "step param applies");
    assert_eq!(arg(&init[0], "--ns"), Some("demo"));
    assert_eq!(pod.containers[0].name, "elasticsearch-backup");

    // A Task param of the configuration overrides the step's param.
    config
        .spec
        .task
        .as_mut()
        .expect("task")
        .params
        .push(cairn_api::common::Param {
            name: "mode".into(),
            value: "deep".into(),
        });
    let cluster = cluster.with_backup_configuration(config);
    let job = resolve_backup_job(&session("es-backup"), &cluster, &install()).expect("resolves");
    let init = pod_init(&job);
    assert_eq!(arg(&init[0], "--mode"), Some("deep"));
}

fn pod_init(job: &JobTemplateSpec) -> Vec<Container> {
    pod(job).init_containers.clone().unwrap_or_default()
}

#[test]
fn unset_variables_and_missing_objects_are_errors() {
    let mut cluster = example_cluster();
    let bad = r#"
apiVersion: cairn.dev/v1alpha1
kind: Function
metadata: {name: elasticsearch-backup}
spec:
  image: ${AGENT_IMAGE}
  args: ["--x=${NOT_A_VARIABLE}"]
"#;
    for doc in parse_documents(bad).expect("yaml") {
        if let Object::Function(f) = typed(doc).expect("typed") {
            cluster = cluster.with_function(f);
        }
    }
    let err = resolve_backup_job(&session("es-backup"), &cluster, &install())
        .expect_err("unset variable");
    assert!(matches!(err, ResolveError::Variables(_)), "{err:?}");
    assert!(err.to_string().contains("NOT_A_VARIABLE"), "{err}");
    assert!(err.to_string().contains("spec.args[0]"), "{err}");

    let err = resolve_backup_job(&session("no-such-config"), &example_cluster(), &install())
        .expect_err("missing invoker");
    assert!(
        err.to_string()
            .contains("BackupConfiguration \"no-such-config\" not found"),
        "{err}"
    );
}

/// `es-backup` of the examples with `edit` applied to its spec.
fn cluster_with(
    edit: impl FnOnce(&mut cairn_api::BackupConfiguration),
) -> cairn_api::validation::LookupTable {
    let mut cluster = example_cluster();
    let key = ("demo".to_string(), "es-backup".to_string());
    let mut config = (*cluster.backup_configurations[&key]).clone();
    edit(&mut config);
    cluster
        .backup_configurations
        .insert(key, std::sync::Arc::new(config));
    cluster
}

/// `es-backup` of the examples with one more Task param.
fn cluster_with_param(name: &str, value: &str) -> cairn_api::validation::LookupTable {
    cluster_with(|c| {
        c.spec
            .task
            .get_or_insert_with(Default::default)
            .params
            .push(cairn_api::common::Param {
                name: name.into(),
                value: value.into(),
            })
    })
}

fn refusal(cluster: &cairn_api::validation::LookupTable, install: &InstallSettings) -> String {
    match resolve_backup_job(&session("es-backup"), cluster, install) {
        Err(e @ ResolveError::Refused { .. }) => e.to_string(),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn every_built_in_variable_is_set_and_nothing_else() {
    let cluster = example_cluster();
    let config = cluster.backup_configurations[&("demo".into(), "es-backup".into())].clone();
    let session = session("es-backup");
    let source = cairn_api::resolve::JobSource::backup(&session, &config);
    let task = cluster.tasks["elasticsearch-backup"].clone();
    let resolved = cairn_api::resolve::Resolved {
        task: &task,
        functions: cluster.functions.clone(),
        repository: &cluster.repositories[&("demo".into(), "s3-repo".into())],
        app_binding: &cluster.app_bindings[&("demo".into(), "es".into())],
    };
    let vars = cairn_api::resolve::variables(&source, &resolved, &install());
    let params: Vec<&str> = config
        .spec
        .task
        .iter()
        .flat_map(|t| t.params.iter().map(|p| p.name.as_str()))
        .collect();
    let set: std::collections::BTreeSet<&str> = vars
        .keys()
        .map(String::as_str)
        .filter(|k| !params.contains(k))
        .collect();
    let table: std::collections::BTreeSet<&str> = cairn_api::builtins::BUILT_IN_VARIABLES
        .iter()
        .map(|b| b.name)
        .collect();
    assert_eq!(set, table);
}

#[test]
fn a_param_never_replaces_a_built_in_variable() {
    let cluster = cluster_with_param("TARGET_URL", "http://attacker.invalid:9200");
    let message = refusal(&cluster, &install());
    assert!(message.contains("spec.task.params[1].name"), "{message}");
    assert!(
        message.contains("\"TARGET_URL\" is a built-in variable"),
        "{message}"
    );
}

#[test]
fn target_args_outside_the_flag_table_are_refused() {
    let cluster =
        cluster_with(|c| c.spec.target.args = vec!["--url=http://attacker.invalid".into()]);
    let message = refusal(&cluster, &install());
    assert!(
        message.contains("spec.target.args[0]: --url may not be set"),
        "{message}"
    );
    let tuned = cluster_with(|c| c.spec.target.args = vec!["--page-size=2000".into()]);
    let job = resolve_backup_job(&session("es-backup"), &tuned, &install()).expect("resolves");
    let c = &pod(&job).containers[0];
    assert_eq!(arg(c, "--page-size"), Some("2000"));
}

#[test]
fn runtime_settings_beyond_the_install_level_are_refused_and_allowed_when_opted_in() {
    let cluster = cluster_with(|c| {
        c.spec.runtime_settings = Some(
            serde_json::from_value(json!({"container": {"securityContext": {
                "privileged": true, "allowPrivilegeEscalation": true}}}))
            .expect("settings"),
        )
    });
    let message = refusal(&cluster, &install());
    assert!(
        message.contains("spec.runtimeSettings.container.securityContext.privileged"),
        "{message}"
    );
    assert!(message.contains("jobPodSecurity: privileged"), "{message}");
    let mut opted_in = install();
    opted_in.policy.job_pod_security = cairn_api::pod_security::PodSecurityLevel::Privileged;
    let job = resolve_backup_job(&session("es-backup"), &cluster, &opted_in).expect("resolves");
    let sc = pod(&job).containers[0]
        .security_context
        .clone()
        .expect("sc");
    assert_eq!(sc.privileged, Some(true));
    // The token stays unmounted whatever is asked.
    let token = cluster_with(|c| {
        c.spec.runtime_settings = Some(
            serde_json::from_value(json!({"pod": {"automountServiceAccountToken": true}}))
                .expect("settings"),
        )
    });
    let job = resolve_backup_job(&session("es-backup"), &token, &install()).expect("resolves");
    assert_eq!(pod(&job).automount_service_account_token, Some(false));
}

#[test]
fn what_a_task_adds_is_checked_too() {
    let mut cluster = example_cluster();
    let mut task = (*cluster.tasks["elasticsearch-backup"]).clone();
    task.spec.volumes = vec![
        serde_json::from_value(json!({"name": "node", "hostPath": {"path": "/"}})).expect("volume"),
    ];
    cluster
        .tasks
        .insert("elasticsearch-backup".into(), std::sync::Arc::new(task));
    let message = refusal(&cluster, &install());
    assert!(message.contains("the Job's pod spec.volumes["), "{message}");
    assert!(message.contains("hostPath"), "{message}");
}

#[test]
fn credentials_in_the_appbinding_url_never_reach_the_job() {
    let mut cluster = example_cluster();
    let key = ("demo".to_string(), "es".to_string());
    let mut app = (*cluster.app_bindings[&key]).clone();
    app.spec.client_config.url = Some("https://admin:s3cr3t-in-url@es.demo.svc:9200/".into());
    cluster.app_bindings.insert(key, std::sync::Arc::new(app));
    let job = resolve_backup_job(&session("es-backup"), &cluster, &install()).expect("resolves");
    let text = serde_json::to_string(&job).expect("json");
    assert!(!text.contains("s3cr3t-in-url"), "{text}");
    assert_eq!(
        arg(&pod(&job).containers[0], "--url"),
        Some("https://es.demo.svc:9200/")
    );
}

#[test]
fn a_value_cannot_make_the_kubelet_expand_a_variable() {
    let cluster = cluster_with_param("waitTimeout", "$(RESTIC_PASSWORD)");
    let job = resolve_backup_job(&session("es-backup"), &cluster, &install()).expect("resolves");
    assert_eq!(
        arg(&pod(&job).containers[0], "--wait-timeout"),
        Some("$$(RESTIC_PASSWORD)")
    );
}

#[test]
fn a_repository_that_refuses_the_namespace_lends_no_job_its_storage() {
    let mut cluster = example_cluster();
    let key = ("demo".to_string(), "s3-repo".to_string());
    let mut repo = (*cluster.repositories[&key]).clone();
    repo.metadata.namespace = Some("storage".into());
    cluster.repositories.remove(&key);
    cluster.repositories.insert(
        ("storage".into(), "s3-repo".into()),
        std::sync::Arc::new(repo),
    );
    let cluster = {
        let mut c = cluster;
        let k = ("demo".to_string(), "es-backup".to_string());
        let mut config = (*c.backup_configurations[&k]).clone();
        config.spec.repository.namespace = Some("storage".into());
        c.backup_configurations
            .insert(k, std::sync::Arc::new(config));
        c
    };
    // The Repository admits only its own namespace (the default usage policy).
    let message = refusal(&cluster, &install());
    assert!(
        message.contains("does not admit namespace \"demo\""),
        "{message}"
    );
}

/// Stash's versioned catalog names (in Stash manifests and KubeDB's AppBindings) run cairn's
/// catalog Task of the same direction: the same Job as the catalog name.
#[test]
fn stashs_versioned_task_names_resolve_to_the_catalog() {
    let named = |task: &str| {
        let cluster = cluster_with(|c| {
            c.spec.task.get_or_insert_with(Default::default).name = Some(task.to_string())
        });
        resolve_backup_job(&session("es-backup"), &cluster, &install())
    };
    let catalog = named("elasticsearch-backup").expect("the catalog name");
    for stash in [
        "elasticsearch-backup-7.3.2",
        "elasticsearch-backup-7.3.2-v6",
    ] {
        let job = named(stash).unwrap_or_else(|e| panic!("{stash}: {e}"));
        assert_eq!(job, catalog, "{stash}");
    }
    assert!(named("elasticsearch-backup-someday").is_err());
}

/// A restore rule's `include` and `exclude` (Stash's restore paths; index patterns here) reach
/// the agent for the hosts the rule applies to, over the Task's params; a rule without them
/// leaves the Task's.
#[test]
fn restore_rules_include_and_exclude_reach_the_agent() {
    let cluster = example_cluster();
    let with = |rule: serde_json::Value, params: serde_json::Value| {
        let mut r = restore();
        r.spec.target.rules = vec![serde_json::from_value(rule).expect("rule")];
        r.spec.task.get_or_insert_with(Default::default).params =
            serde_json::from_value(params).expect("params");
        let job = resolve_restore_job(&r, &cluster, &install()).expect("resolves");
        let c = pod(&job).containers[0].clone();
        (
            arg(&c, "--include").map(str::to_string),
            arg(&c, "--exclude").map(str::to_string),
        )
    };
    let task = serde_json::json!([{"name": "include", "value": "all-*"}]);
    assert_eq!(
        with(
            serde_json::json!({"include": ["logs-*", "metrics"], "exclude": ["logs-old"]}),
            task.clone()
        ),
        (Some("logs-*,metrics".into()), Some("logs-old".into()))
    );
    assert_eq!(
        with(serde_json::json!({"snapshots": ["latest"]}), task.clone()),
        (Some("all-*".into()), Some("".into()))
    );
    // A rule for another host leaves this one's alone.
    assert_eq!(
        with(
            serde_json::json!({"targetHosts": ["elsewhere"], "include": ["logs-*"]}),
            task
        ),
        (Some("all-*".into()), Some("".into()))
    );
}

/// Stash's `args` param reaches the agent translated: `--match` as written, the types
/// `--ignoreType` names as `--skip`; one cairn cannot read is refused, as admission refuses it.
#[test]
fn stashs_args_reach_the_agent_translated() {
    let args = "--match=^(?![.])(?!searchguard).+ --ignoreType=template,settings";
    let job = resolve_backup_job(
        &session("es-backup"),
        &cluster_with_param("args", args),
        &install(),
    )
    .expect("resolves");
    let c = &pod(&job).containers[0];
    assert_eq!(arg(c, "--match"), Some("^(?![.])(?!searchguard).+"));
    assert_eq!(arg(c, "--skip"), Some("settings,template"));
    let plain = resolve_backup_job(&session("es-backup"), &example_cluster(), &install())
        .expect("resolves");
    let c = &pod(&plain).containers[0];
    assert_eq!((arg(c, "--match"), arg(c, "--skip")), (Some(""), Some("")));

    let message = refusal(&cluster_with_param("args", "--match=(?<!x"), &install());
    assert!(
        message.contains("spec.task.params[1].value") && message.contains("--match"),
        "{message}"
    );
}

/// The restore's `onFailure` param reaches the agent as `--on-failure`.
#[test]
fn on_failure_param_reaches_the_agent() {
    let mut r = restore();
    r.spec.task.get_or_insert_with(Default::default).params =
        serde_json::from_value(serde_json::json!([{"name": "onFailure", "value": "close"}]))
            .expect("params");
    let job = resolve_restore_job(&r, &example_cluster(), &install()).expect("resolves");
    assert_eq!(arg(&pod(&job).containers[0], "--on-failure"), Some("close"));
}

/// A native Repository's Job runs the snapshot Function with the server's location and mounts
/// neither a storage Secret nor a volume; the restic Task on it is refused, naming the valid ones.
#[test]
fn a_native_repository_lends_its_location_and_no_secret() {
    let native = |task: &str| {
        let mut cluster = cluster_with(|c| {
            c.spec.task.get_or_insert_with(Default::default).name = Some(task.into());
        });
        let key = ("demo".to_string(), "s3-repo".to_string());
        let mut repo = (*cluster.repositories[&key]).clone();
        repo.spec.driver = Some(cairn_api::native::StorageDriver::Native);
        repo.spec.backend.storage_secret_name = String::new();
        cluster.repositories.insert(key, std::sync::Arc::new(repo));
        cluster
    };
    let job = resolve_backup_job(
        &session("es-backup"),
        &native("elasticsearch-snapshot"),
        &install(),
    )
    .expect("resolves");
    let pod = pod(&job);
    let main = &pod.containers[0];
    assert_eq!(main.args.as_ref().map(|a| a[0].as_str()), Some("snapshot"));
    assert_eq!(arg(main, "--provider"), Some("s3"));
    assert_eq!(arg(main, "--session"), Some("es-backup-1764000000"));
    assert!(
        main.env_from
            .as_ref()
            .is_none_or(|e| e.iter().all(|s| s.secret_ref.is_none()))
    );
    let volumes: Vec<&str> = pod
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.as_str())
        .collect();
    assert!(
        volumes.iter().all(|v| !v.contains("repository")),
        "{volumes:?}"
    );
    let message = refusal(&native("elasticsearch-backup"), &install());
    assert!(
        message.contains("spec.task.name")
            && message.contains("elasticsearch-snapshot / elasticsearch-snapshot-restore"),
        "{message}"
    );
}
