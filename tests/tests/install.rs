//! The install paths: `manifests/` (kustomize) and `charts/cairn` (Helm) hold the same objects,
//! the kustomize tree passes a server-side dry run, and deleting it leaves nothing of cairn behind.
//!
//! Helm is `cairn_tests::binaries::helm_binary`.
//! Objects are compared as parsed JSON, keyed by kind, namespace and name, in any order.

use cairn_tests::binaries::{Binaries, helm};
use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// (kind, namespace, name) of an object; the namespace is empty for cluster-scoped ones.
type Key = (String, String, String);

/// The label every object of cairn carries.
const PART_OF: &str = "app.kubernetes.io/part-of=cairn";

fn chart_dir() -> PathBuf {
    repo_root().join("charts/cairn")
}

fn stdout_of(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 output")
}

/// `helm template cairn charts/cairn --include-crds ARGS...`, parsed.
fn render_chart(args: &[&str]) -> BTreeMap<Key, Value> {
    let chart = chart_dir().display().to_string();
    let mut all = vec!["template", "cairn", chart.as_str(), "--include-crds"];
    all.extend_from_slice(args);
    let text = stdout_of(&format!("helm {}", all.join(" ")), helm(&all));
    objects(&text)
}

/// `kubectl kustomize DIR` (the pinned kubectl), parsed.
fn kustomize(dir: &str) -> BTreeMap<Key, Value> {
    let binaries = Binaries::locate().unwrap_or_else(|e| panic!("{e:#}"));
    let path = repo_root().join(dir);
    let out = Command::new(&binaries.kubectl)
        .arg("kustomize")
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", binaries.kubectl.display()));
    objects(&stdout_of(&format!("kubectl kustomize {dir}"), out))
}

/// The objects of a multi-document YAML stream, keyed; panics on a duplicate key.
fn objects(yaml: &str) -> BTreeMap<Key, Value> {
    let mut map = BTreeMap::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).expect("valid YAML");
        if value.is_null() {
            continue;
        }
        let key = key_of(&value);
        assert!(
            map.insert(key.clone(), value).is_none(),
            "{key:?} is there twice"
        );
    }
    map
}

fn key_of(value: &Value) -> Key {
    let field = |pointer: &str| {
        value
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (
        field("/kind"),
        field("/metadata/namespace"),
        field("/metadata/name"),
    )
}

/// Asserts two object sets are equal, saying which objects differ and how.
fn assert_same_objects(what: &str, got: &BTreeMap<Key, Value>, want: &BTreeMap<Key, Value>) {
    let missing: Vec<&Key> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<&Key> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    let differing: Vec<String> = want
        .iter()
        .filter_map(|(key, w)| {
            let g = got.get(key)?;
            (g != w).then(|| {
                format!(
                    "{key:?}\n  got:  {}\n  want: {}",
                    serde_json::to_string(g).unwrap_or_default(),
                    serde_json::to_string(w).unwrap_or_default()
                )
            })
        })
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty() && differing.is_empty(),
        "{what}:\nmissing: {missing:?}\nextra: {extra:?}\ndiffering:\n{}",
        differing.join("\n")
    );
}

fn key(kind: &str, namespace: &str, name: &str) -> Key {
    (kind.to_string(), namespace.to_string(), name.to_string())
}

/// The pod template of a workload (a CronJob's inside its Job template).
fn pod_template(object: &Value) -> &Value {
    match object.pointer("/spec/jobTemplate/spec/template") {
        Some(template) => template,
        None => &object["spec"]["template"],
    }
}

/// Every container (and init container) of a workload's pod template.
fn containers(object: &Value) -> Vec<&Value> {
    let spec = &pod_template(object)["spec"];
    ["containers", "initContainers"]
        .iter()
        .filter_map(|field| spec.get(field))
        .filter_map(Value::as_array)
        .flatten()
        .collect()
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The YAML files of a directory (not its kustomization), by file name.
fn yaml_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .map(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy().into();
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (name, bytes)
        })
        .collect()
}

#[test]
fn chart_crds_are_copies_of_manifests_crds() {
    let manifests = yaml_files(&crds_dir());
    let chart = yaml_files(&chart_dir().join("crds"));
    assert!(!manifests.is_empty(), "no CRDs in manifests/crds");
    let names = |m: &BTreeMap<String, Vec<u8>>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(&chart),
        names(&manifests),
        "charts/cairn/crds must hold exactly the CRDs of manifests/crds: \
         rm charts/cairn/crds/*.yaml && cp manifests/crds/cairn.dev_*.yaml charts/cairn/crds/"
    );
    for (name, bytes) in &manifests {
        assert!(
            chart[name] == *bytes,
            "charts/cairn/crds/{name} differs from manifests/crds/{name}: \
             cp manifests/crds/cairn.dev_*.yaml charts/cairn/crds/"
        );
    }
}

/// (a) The chart's defaults are the kustomize tree, object for object.
#[test]
fn default_values_render_the_kustomize_tree() {
    let kustomized = kustomize("manifests");
    assert!(
        kustomized.contains_key(&key("Job", "cairn-system", "cairn-certs-bootstrap"))
            && kustomized.contains_key(&key("NetworkPolicy", "cairn-system", "cairn-webhook")),
        "manifests/ lost its bootstrap Job or NetworkPolicies: {:?}",
        kustomized.keys()
    );
    assert_same_objects(
        "helm template (default values) vs kubectl kustomize manifests/",
        &render_chart(&[]),
        &kustomized,
    );
    let lint = helm(&["lint", "--strict", &chart_dir().display().to_string()]);
    stdout_of("helm lint --strict charts/cairn", lint);
}

/// `kubectl kustomize` of `manifests/` with the component `manifests/components/<name>`.
fn with_component(name: &str) -> BTreeMap<Key, Value> {
    // kustomize takes only relative paths: an overlay beside manifests/, removed on drop.
    let dir = tempfile::Builder::new()
        .prefix(".overlay-")
        .tempdir_in(repo_root())
        .expect("tmp");
    std::fs::write(
        dir.path().join("kustomization.yaml"),
        format!(
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [../manifests]\ncomponents: [../manifests/components/{name}]\n"
        ),
    )
    .expect("kustomization");
    kustomize(&dir.path().display().to_string())
}

/// The kustomize components that opt Jobs in to more than `restricted` set the level on both the
/// webhook and the controller, and change nothing else.
#[test]
fn job_pod_security_components_set_both_deployments() {
    let plain = kustomize("manifests");
    for level in ["baseline", "privileged"] {
        let got = with_component(&format!("job-pod-security-{level}"));
        for name in ["cairn-webhook", "cairn-controller"] {
            let k = key("Deployment", "cairn-system", name);
            assert_eq!(
                env_value(containers(&got[&k])[0], "CAIRN_JOB_POD_SECURITY"),
                Some(level),
                "{name}"
            );
            assert_eq!(
                env_value(containers(&plain[&k])[0], "CAIRN_JOB_POD_SECURITY"),
                Some("restricted")
            );
        }
        assert_eq!(got.len(), plain.len(), "{level}");
    }
}

/// The webhook's port 8443 from the API server's range only: the kustomize component and the
/// Helm value render the same rule, and change nothing else.
#[test]
fn webhook_ingress_from_the_api_server_component_and_value_agree() {
    let kustomized = with_component("webhook-ingress-from-apiserver");
    let helm = render_chart(&[
        "--set",
        "networkPolicy.webhook.apiServerCIDRs={192.0.2.0/24}",
    ]);
    assert_same_objects(
        "helm --set networkPolicy.webhook.apiServerCIDRs vs the component",
        &helm,
        &kustomized,
    );
    let policy = &helm[&key("NetworkPolicy", "cairn-system", "cairn-webhook")]["spec"]["ingress"];
    assert_eq!(policy[0]["ports"][0]["port"], 8443);
    assert_eq!(
        policy[0]["from"],
        json!([{"ipBlock": {"cidr": "192.0.2.0/24"}}])
    );
    // Everything else as without it.
    let mut plain = kustomize("manifests");
    let k = key("NetworkPolicy", "cairn-system", "cairn-webhook");
    plain.insert(k.clone(), kustomized[&k].clone());
    assert_same_objects(
        "the component changes the webhook's policy only",
        &kustomized,
        &plain,
    );
}

/// The exec hooks' opt-in: the kustomize component and the Helm value add the same two objects
/// (the controller's `pods/exec` and `services` rights), and nothing else; without it the
/// controller has neither.
#[test]
fn exec_hooks_component_and_value_agree() {
    let kustomized = with_component("exec-hooks");
    let helm = render_chart(&["--set", "execHooks.enabled=true"]);
    assert_same_objects(
        "helm --set execHooks.enabled=true vs the component",
        &helm,
        &kustomized,
    );
    let plain = kustomize("manifests");
    let added: Vec<&Key> = kustomized
        .keys()
        .filter(|k| !plain.contains_key(*k))
        .collect();
    assert_eq!(
        added,
        [
            &key("ClusterRole", "", "cairn-controller-exec-hooks"),
            &key("ClusterRoleBinding", "", "cairn-controller-exec-hooks"),
        ]
    );
    let rules = &kustomized[added[0]]["rules"];
    assert_eq!(rules[0]["resources"], json!(["pods/exec"]));
    assert_eq!(rules[0]["verbs"], json!(["create"]));
    let exec = |objects: &BTreeMap<Key, Value>| {
        objects
            .values()
            .any(|o| o.to_string().contains("pods/exec"))
    };
    assert!(!exec(&plain) && !exec(&render_chart(&[])));
    assert_eq!(kustomized.len(), plain.len() + 2);
}

/// (b) certMode=certManager: manifests/certs' objects instead of the bootstrap Job and its RBAC,
/// and cert-manager's CA injection on both webhook configurations.
#[test]
fn cert_manager_mode_renders_cert_manager_objects() {
    let mut want = kustomize("manifests");
    want.retain(|_, object| {
        object.pointer("/metadata/labels/app.kubernetes.io~1name") != Some(&json!("cairn-certs"))
    });
    let cert_manager = kustomize("manifests/certs");
    assert_eq!(
        cert_manager
            .keys()
            .map(|k| k.0.as_str())
            .collect::<Vec<_>>(),
        ["Certificate", "Certificate", "Issuer", "Issuer"],
        "manifests/certs changed"
    );
    want.extend(cert_manager);
    for name in ["cairn-validating", "cairn-mutating"] {
        let kind = if name == "cairn-validating" {
            "ValidatingWebhookConfiguration"
        } else {
            "MutatingWebhookConfiguration"
        };
        let object = want
            .get_mut(&key(kind, "", name))
            .unwrap_or_else(|| panic!("no {kind} {name} in manifests/"));
        object["metadata"]["annotations"] =
            json!({"cert-manager.io/inject-ca-from": "cairn-system/cairn-webhook"});
    }
    let got = render_chart(&["--set", "certMode=certManager"]);
    assert!(
        !got.keys().any(|k| k.0 == "Job" || k.0 == "CronJob"),
        "certManager mode renders a Job"
    );
    assert_same_objects(
        "helm template --set certMode=certManager vs manifests/ with manifests/certs instead of \
         the bootstrap Job",
        &got,
        &want,
    );
    let lint = helm(&[
        "lint",
        "--strict",
        &chart_dir().display().to_string(),
        "--set",
        "certMode=certManager",
    ]);
    stdout_of("helm lint --strict (certManager)", lint);
}

/// The chart's values where they belong (and nowhere else changed them).
fn non_default_values() -> Vec<&'static str> {
    vec![
        "--set",
        "image.repository=registry.example/cairn,image.tag=v9.8.7,image.pullPolicy=IfNotPresent",
        "--set",
        "agent.image=registry.example/agent:v1",
        "--set",
        "jobPodSecurity=baseline",
        "--set",
        "execHooks.enabled=true",
        "--set",
        "imagePullSecrets[0]=regcred",
        "--set",
        "webhook.replicas=3,controller.replicas=1",
        "--set",
        "webhook.failurePolicy=Ignore,webhook.timeoutSeconds=12",
        "--set",
        "webhook.resources.limits.memory=1Gi,controller.resources.requests.cpu=200m",
        "--set",
        "metrics.serviceMonitor.enabled=true,metrics.serviceMonitor.labels.release=prom",
        "--set",
        "metrics.prometheusRule.enabled=true,metrics.prometheusRule.labels.release=prom",
        "--set",
        "bootstrap.schedule=5 1 * * *",
        "--set-json",
        r#"networkPolicy.metrics.from=[{"namespaceSelector":{"matchLabels":{"kubernetes.io/metadata.name":"monitoring"}}}]"#,
    ]
}

#[test]
fn values_reach_the_objects() {
    let defaults = render_chart(&[]);
    let got = render_chart(&non_default_values());
    let ns = "cairn-system";

    let webhook = &got[&key("Deployment", ns, "cairn-webhook")];
    let controller = &got[&key("Deployment", ns, "cairn-controller")];
    assert_eq!(webhook["spec"]["replicas"], 3);
    assert_eq!(controller["spec"]["replicas"], 1);
    for workload in [
        webhook,
        controller,
        &got[&key("Job", ns, "cairn-certs-bootstrap")],
        &got[&key("CronJob", ns, "cairn-certs-renewal")],
    ] {
        assert_eq!(
            pod_template(workload)["spec"]["imagePullSecrets"],
            json!([{"name": "regcred"}])
        );
        for container in containers(workload) {
            assert_eq!(container["image"], "registry.example/cairn:v9.8.7");
            assert_eq!(container["imagePullPolicy"], "IfNotPresent");
        }
    }
    assert_eq!(
        got[&key("CronJob", ns, "cairn-certs-renewal")]["spec"]["schedule"],
        "5 1 * * *"
    );
    for workload in [webhook, controller] {
        assert_eq!(
            env_value(containers(workload)[0], "CAIRN_AGENT_IMAGE"),
            Some("registry.example/agent:v1")
        );
        assert_eq!(
            env_value(containers(workload)[0], "CAIRN_JOB_POD_SECURITY"),
            Some("baseline")
        );
    }
    assert_eq!(
        containers(webhook)[0]["resources"],
        json!({"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "1Gi"}})
    );
    assert_eq!(
        containers(controller)[0]["resources"],
        json!({"requests": {"cpu": "200m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}})
    );
    for (kind, name) in [
        ("ValidatingWebhookConfiguration", "cairn-validating"),
        ("MutatingWebhookConfiguration", "cairn-mutating"),
    ] {
        let hooks = &got[&key(kind, "", name)]["webhooks"];
        assert_eq!(hooks[0]["failurePolicy"], "Ignore", "{name}");
        assert_eq!(hooks[0]["timeoutSeconds"], 12, "{name}");
    }
    // The webhook answers within the API server's timeout.
    assert_eq!(
        env_value(containers(webhook)[0], "CAIRN_REQUEST_TIMEOUT"),
        Some("11000ms")
    );

    // The ServiceMonitors and the PrometheusRule are manifests/monitoring/, plus the extra label.
    let mut monitoring = kustomize("manifests/monitoring");
    for object in monitoring.values_mut() {
        object["metadata"]["labels"]["release"] = json!("prom");
    }
    let got_monitoring: BTreeMap<Key, Value> = got
        .iter()
        .filter(|(k, _)| k.0 == "ServiceMonitor" || k.0 == "PrometheusRule")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    assert_same_objects(
        "the chart's monitoring objects vs manifests/monitoring",
        &got_monitoring,
        &monitoring,
    );
    assert!(!defaults.keys().any(|k| k.0 == "PrometheusRule"));
    assert!(!defaults.keys().any(|k| k.0 == "ServiceMonitor"));

    // The metrics ports admit the monitoring namespace only; 8443 still anyone.
    let from = json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]);
    let webhook_policy = &got[&key("NetworkPolicy", ns, "cairn-webhook")]["spec"]["ingress"];
    assert_eq!(webhook_policy[0]["ports"][0]["port"], 8443);
    assert!(webhook_policy[0].get("from").is_none());
    assert_eq!(webhook_policy[1]["ports"][0]["port"], 8080);
    assert_eq!(webhook_policy[1]["from"], from);
    let controller_policy = &got[&key("NetworkPolicy", ns, "cairn-controller")]["spec"]["ingress"];
    assert_eq!(controller_policy[0]["from"], from);

    // Nothing else changed: the objects the values do not touch are the defaults.
    let touched = [
        "Deployment",
        "Job",
        "CronJob",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "NetworkPolicy",
    ];
    for (k, object) in defaults
        .iter()
        .filter(|(k, _)| !touched.contains(&k.0.as_str()))
    {
        assert_eq!(got.get(k), Some(object), "{k:?} changed");
    }
    assert_eq!(
        got.len(),
        defaults.len() + 5,
        "the values add the two ServiceMonitors, the PrometheusRule and the exec hooks' \
         ClusterRole and binding, nothing else"
    );

    // NetworkPolicies off.
    let without = render_chart(&["--set", "networkPolicy.enabled=false"]);
    let mut want = defaults.clone();
    want.retain(|k, _| k.0 != "NetworkPolicy");
    assert_same_objects("networkPolicy.enabled=false", &without, &want);
}

#[test]
fn another_namespace_reaches_every_reference() {
    let got = render_chart(&["--set", "namespace.name=backup-ops,certMode=certManager"]);
    let text = serde_json::to_string(&got.values().collect::<Vec<_>>()).expect("JSON");
    assert!(
        !text.contains("cairn-system"),
        "cairn-system is still referenced with namespace.name=backup-ops"
    );
    assert!(got.contains_key(&key("Namespace", "", "backup-ops")));
    assert!(got.contains_key(&key("Certificate", "backup-ops", "cairn-webhook")));
    let hook = &got[&key("ValidatingWebhookConfiguration", "", "cairn-validating")];
    assert_eq!(
        hook["webhooks"][0]["clientConfig"]["service"]["namespace"],
        "backup-ops"
    );
    assert_eq!(
        hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        "backup-ops/cairn-webhook"
    );

    // An existing namespace: no Namespace object.
    let existing = render_chart(&["--set", "namespace.create=false"]);
    assert!(!existing.keys().any(|k| k.0 == "Namespace"));
}

#[test]
fn invalid_values_are_refused() {
    let chart = chart_dir().display().to_string();
    for (args, says) in [
        (vec!["--set", "certMode=selfSigned"], "certMode"),
        (
            vec!["--set", "webhook.failurePolicy=Sometimes"],
            "failurePolicy",
        ),
        (
            vec![
                "--set",
                "networkPolicy.webhook.apiServerCIDRs={not-a-range}",
            ],
            "apiServerCIDRs",
        ),
        // The chart creates the namespace, so the release record cannot be stored in it.
        (vec!["--namespace", "cairn-system"], "namespace.create"),
    ] {
        let mut all = vec!["template", "cairn", chart.as_str()];
        all.extend(args.iter().copied());
        let out = helm(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(says),
            "helm {} should fail mentioning {says}: {stderr}",
            all.join(" ")
        );
    }
}

fn assert_kubectl_ok(what: &str, out: &Output) {
    if let Err(e) = kubectl_ok(what, out) {
        panic!("{e}");
    }
}

fn kubectl_ok(what: &str, out: &Output) -> Result<(), String> {
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// (c) `kubectl apply -k manifests/ --dry-run=server` succeeds, and so does the chart rendered
/// with non-default values. A server dry run of custom objects (the catalog) needs their CRDs
/// established, and of namespaced objects an existing namespace: both are applied for real first.
/// The cert-manager kinds are not part of the default tree (nor of this check).
#[tokio::test]
async fn kustomize_tree_passes_a_server_dry_run() {
    let cp = ControlPlane::shared();
    cp.apply_crds(crds_dir()).await.expect("cairn's CRDs");
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("the AppBinding CRD");
    let namespace = repo_root().join("manifests/namespace.yaml");
    let out = cp.kubectl(["apply", "-f", &namespace.display().to_string()]);
    assert_kubectl_ok("kubectl apply -f manifests/namespace.yaml", &out);

    let manifests = repo_root().join("manifests");
    let out = cp.kubectl([
        "apply",
        "-k",
        &manifests.display().to_string(),
        "--dry-run=server",
    ]);
    assert_kubectl_ok("kubectl apply -k manifests/ --dry-run=server", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("deployment.apps/cairn-webhook") && stdout.contains("(server dry run)"),
        "unexpected dry-run output:\n{stdout}"
    );

    // The chart with other values (types and enums the API server checks: pull policy, peers,
    // failure policy, timeouts), without the monitoring objects whose CRDs are not installed.
    let mut args = non_default_values();
    args.extend([
        "--set",
        "metrics.serviceMonitor.enabled=false,metrics.prometheusRule.enabled=false",
    ]);
    let rendered: Vec<Value> = render_chart(&args).into_values().collect();
    let list = json!({"apiVersion": "v1", "kind": "List", "items": rendered});
    let out = cp.kubectl_stdin(
        ["apply", "--dry-run=server", "-f", "-"],
        &serde_json::to_string(&list).expect("JSON"),
    );
    assert_kubectl_ok("kubectl apply --dry-run=server (chart, other values)", &out);
}

/// (d) `kubectl delete -k manifests/` after a real `kubectl apply -k manifests/` leaves nothing of
/// cairn: no object labelled `app.kubernetes.io/part-of=cairn` of any listable kind, cluster-scoped
/// or in any namespace (ClusterRoles and bindings, webhook configurations, catalog, workloads,
/// policies...), and none of cairn's CRDs (generated without that label, so checked by name).
///
/// The test control plane has no kube-controller-manager, so the namespace controller never
/// finishes deleting `cairn-system`: the namespace stays `Terminating`. The check is on objects,
/// with the namespace itself only required to be terminating. Its own control plane: the CRDs go.
#[tokio::test]
async fn delete_leaves_no_cairn_objects() {
    let cp = ControlPlane::start().expect("a control plane");
    let manifests = repo_root().join("manifests").display().to_string();
    let kustomized = kustomize("manifests");
    // The CRDs first: a single `kubectl apply -k` cannot create objects of kinds it creates
    // (the catalog), and on its second try the validating webhook, configured by then, refuses
    // them until the webhook runs (it never does here).
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("the AppBinding CRD");
    cp.apply_crds(crds_dir()).await.expect("cairn's CRDs");
    let out = cp.kubectl(["apply", "-k", &manifests]);
    assert_kubectl_ok("kubectl apply -k manifests/", &out);
    let before = cairn_objects(&cp, &kustomized).unwrap_or_else(|e| panic!("{e}"));
    for key in kustomized.keys() {
        assert!(
            before.contains(key),
            "{key:?} was not created, or lacks the label {PART_OF}: {before:?}"
        );
    }

    // kubectl deletes in the tree's order, CRDs first, and the API server deletes their objects
    // (the catalog) with them: without --ignore-not-found the catalog's deletes fail as NotFound.
    let out = cp.kubectl([
        "delete",
        "-k",
        &manifests,
        "--wait=false",
        "--ignore-not-found",
    ]);
    assert_kubectl_ok("kubectl delete -k manifests/ --ignore-not-found", &out);

    // CRDs go through the API server's own finalizer (removing their objects first): wait for it.
    let left = left_after_delete(&cp, &kustomized, |k| k.0 != "Namespace");
    assert!(left.is_empty(), "left after kubectl delete -k: {left:?}");

    let out = cp.kubectl(["get", "namespace", "cairn-system", "-o", "json"]);
    assert_kubectl_ok("kubectl get namespace cairn-system", &out);
    let namespace: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        namespace["status"]["phase"], "Terminating",
        "cairn-system is not being deleted"
    );
    assert!(namespace["metadata"]["deletionTimestamp"].is_string());
}

/// A real `helm install` (CRDs from crds/ first, then the templates in Helm's kind order, which
/// creates the catalog before the ValidatingWebhookConfiguration) and `helm uninstall` leave
/// nothing of cairn but what Helm keeps on purpose: the CRDs (Helm never deletes those of crds/)
/// and, on this control plane without kube-controller-manager, the namespace, `Terminating`.
#[tokio::test]
async fn helm_install_and_uninstall_leave_no_cairn_objects() {
    let cp = ControlPlane::start().expect("a control plane");
    let kustomized = kustomize("manifests");
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("the AppBinding CRD");
    let kubeconfig = cp.kubeconfig().display().to_string();
    let chart = chart_dir().display().to_string();
    let out = helm(&[
        "install",
        "cairn",
        &chart,
        "--namespace",
        "default",
        "--kubeconfig",
        &kubeconfig,
        "--timeout",
        "2m",
    ]);
    stdout_of("helm install cairn charts/cairn --namespace default", out);
    let before = cairn_objects(&cp, &kustomized).unwrap_or_else(|e| panic!("{e}"));
    for key in kustomized.keys() {
        assert!(
            before.contains(key),
            "{key:?} was not installed by helm: {before:?}"
        );
    }

    let out = helm(&[
        "uninstall",
        "cairn",
        "--namespace",
        "default",
        "--kubeconfig",
        &kubeconfig,
    ]);
    stdout_of("helm uninstall cairn", out);
    let left = left_after_delete(&cp, &kustomized, |k| {
        k.0 != "Namespace" && k.0 != "CustomResourceDefinition"
    });
    assert!(left.is_empty(), "left after helm uninstall: {left:?}");
    let crds = kustomized
        .keys()
        .filter(|k| k.0 == "CustomResourceDefinition")
        .count();
    let kept = cairn_objects(&cp, &kustomized)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .filter(|k| k.0 == "CustomResourceDefinition")
        .count();
    assert_eq!(kept, crds, "Helm keeps the CRDs of crds/ on uninstall");
    let out = cp.kubectl(["get", "namespace", "cairn-system", "-o", "json"]);
    assert_kubectl_ok("kubectl get namespace cairn-system", &out);
    let namespace: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(namespace["status"]["phase"], "Terminating");
}

/// What of cairn is in the cluster: every object labelled `app.kubernetes.io/part-of=cairn`, of
/// every listable kind, cluster-scoped and in every namespace; and those of `kustomized`'s CRDs
/// that exist.
fn cairn_objects(cp: &ControlPlane, kustomized: &BTreeMap<Key, Value>) -> Result<Vec<Key>, String> {
    let out = cp.kubectl(["api-resources", "--verbs=list", "-o", "name"]);
    kubectl_ok("kubectl api-resources", &out)?;
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    let mut found = list_keys(
        cp,
        &[
            "get",
            &kinds.join(","),
            "--all-namespaces",
            "-l",
            PART_OF,
            "-o",
            "json",
        ],
    )?;
    found.extend(
        list_keys(cp, &["get", "customresourcedefinitions", "-o", "json"])?
            .into_iter()
            .filter(|k| kustomized.contains_key(k)),
    );
    Ok(found)
}

/// Polls [`cairn_objects`] until none that `counts` is left, or 60 s passed; what is left then.
/// While CRDs are being deleted, discovery and the lists race with them (a kind listed by
/// `api-resources` can be gone by the `get`): a failed listing is polled again.
fn left_after_delete(
    cp: &ControlPlane,
    kustomized: &BTreeMap<Key, Value>,
    counts: impl Fn(&Key) -> bool,
) -> Vec<Key> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let past = std::time::Instant::now() > deadline;
        match cairn_objects(cp, kustomized) {
            Ok(found) => {
                let left: Vec<Key> = found.into_iter().filter(|k| counts(k)).collect();
                if left.is_empty() || past {
                    return left;
                }
            }
            Err(e) if past => panic!("{e}"),
            Err(_) => {}
        }
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
}

/// The keys of the objects `kubectl ARGS -o json` lists.
fn list_keys(cp: &ControlPlane, args: &[&str]) -> Result<Vec<Key>, String> {
    let out = cp.kubectl(args);
    kubectl_ok(&format!("kubectl {}", args.join(" ")), &out)?;
    let list: Value = serde_json::from_slice(&out.stdout).map_err(|e| format!("not JSON: {e}"))?;
    Ok(list["items"]
        .as_array()
        .map(|items| items.iter().map(key_of).collect())
        .unwrap_or_default())
}

/// The metric names an expression reads: its identifiers starting with `cairn_`.
fn cairn_metrics_in(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("cairn_"))
        .map(str::to_string)
        .collect()
}

/// The series names an OpenMetrics text can hold: each `# TYPE` family with its type's suffixes.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#"), Some("TYPE"), Some(name), Some(kind)) =
            (words.next(), words.next(), words.next(), words.next())
        {
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        }
    }
    names
}

/// Every metric the shipped alerts read is one the controller or the webhook exports: the names
/// come from their own registries, so renaming a metric without its alert fails here.
#[test]
fn prometheus_rule_reads_metrics_the_code_exports() {
    // A family shows in the text once it has a series: one each, under the names the code gives.
    let expiry = cairn_webhook::tls::CertificateExpiry::default();
    let serving = cairn_webhook::tls::CertificateLabels {
        certificate: "serving",
    };
    expiry.get_or_create(&serving).set(1.0);
    let webhook = cairn_webhook::metrics::Metrics::with_certificate_expiry(expiry);
    let controller = cairn_controller::metrics::Metrics::default();
    let config = cairn_controller::metrics::ConfigLabels {
        namespace: "n".into(),
        configuration: "c".into(),
    };
    controller.last_success.get_or_create(&config).set(1.0);
    controller
        .schedule_interval
        .get_or_create(&config)
        .set(60.0);
    let mut repo = cairn_api::Repository::new("r", Default::default());
    repo.metadata.namespace = Some("n".into());
    controller.repository_integrity(&repo, true);
    let exported: BTreeSet<String> = exported_names(&webhook.encode())
        .into_iter()
        .chain(exported_names(&controller.encode()))
        .collect();
    assert!(
        exported.contains("cairn_backup_last_success_timestamp_seconds"),
        "{exported:?}"
    );
    let rules = kustomize("manifests/monitoring");
    let rule = &rules[&key("PrometheusRule", "cairn-system", "cairn")];
    let mut alerts = 0;
    for group in rule["spec"]["groups"].as_array().expect("groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let expr = rule["expr"].as_str().expect("an expr");
            let used = cairn_metrics_in(expr);
            assert!(!used.is_empty(), "{expr} reads no cairn metric");
            let unknown: Vec<_> = used.difference(&exported).collect();
            assert!(
                unknown.is_empty(),
                "alert {} reads {unknown:?}, which no cairn component exports (exported: {exported:?})",
                rule["alert"]
            );
            alerts += 1;
        }
    }
    assert_eq!(
        alerts, 4,
        "the certificate alerts, the overdue-backup alert and the damaged-repository alert"
    );
}
