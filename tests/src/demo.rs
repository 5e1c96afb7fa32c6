//! The demo: the whole system end to end on the local testbed. A real control plane, a real
//! OpenSearch node with sample data, a real S3 server (MinIO), `cairn-webhook`,
//! `cairn-controller`, and a real node (containerd, kubelet, kube-scheduler,
//! kube-controller-manager; see [`crate::node`]) running cairn's Jobs as Pods of cairn's image
//! (built from the workspace's binaries, imported into the node) in the `demo` namespace, which
//! enforces the `restricted` Pod Security Standard. Pods reach OpenSearch and MinIO through
//! forwarders on the node's bridge address. It applies the catalog and the examples, waits for
//! the first scheduled backup, deletes an index, restores it with a RestoreSession, and checks
//! the documents are back.
//!
//! `cargo xtask demo` runs it (and keeps everything up until Ctrl-C); `--once` exits after the
//! check, which is what the demo test does.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use cairn_api::common::SessionPhase;
use cairn_api::{BackupSession, RestoreSession};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::{Value, json};

use crate::controller::Controller;
use crate::controlplane::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use crate::forward::Forward;
use crate::image::{CAIRN_IMAGE, cairn_image};
use crate::opensearch::OpenSearch;
use crate::s3::S3Server;
use crate::webhook::{Webhook, workspace_binary};

/// The demo's namespace (the examples' own).
pub const NAMESPACE: &str = "demo";
/// The sample indices and their document counts.
pub const SAMPLE: &[(&str, usize)] = &[
    ("products", 2_000),
    ("orders-2026.11", 5_000),
    ("customers", 500),
];
/// The index the demo deletes and restores.
pub const LOST_INDEX: &str = "products";
const BUCKET: &str = "cairn-backups";

/// Everything the demo started; dropping it stops all of it.
pub struct Demo {
    /// Pods reach OpenSearch and MinIO through these (bridge address -> loopback).
    pub search_forward: Forward,
    pub s3_forward: Forward,
    pub controller: Controller,
    pub webhook: Webhook,
    pub s3: S3Server,
    pub search: OpenSearch,
    pub cp: ControlPlane,
    /// What happened, step by step, for the summary.
    pub report: Vec<String>,
}

fn step(n: usize, what: &str) -> Instant {
    println!("[{n}/9] {what} ...");
    Instant::now()
}

fn done(start: Instant) {
    println!("      ok ({:.1}s)", start.elapsed().as_secs_f64());
}

/// Runs the demo's steps; the running system is returned for the caller to keep or drop.
pub async fn run() -> Result<Demo> {
    let t = step(1, "starting the control plane (etcd + kube-apiserver)");
    let cp = ControlPlane::start().context("step 1: control plane")?;
    cp.apply_crds(crds_dir()).await.context("step 1: CRDs")?;
    cp.apply_crds(appbinding_crd_dir())
        .await
        .context("step 1: AppBinding CRD")?;
    for ns in ["cairn-system", NAMESPACE] {
        let api: Api<Namespace> = Api::all(cp.client());
        // cairn's Jobs meet the `restricted` Pod Security Standard: the namespace enforces it.
        let obj: Namespace = serde_json::from_value(json!({"metadata": {"name": ns, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted"}}}))?;
        match api.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("step 1: namespaces"),
        }
        // The node's controller-manager runs no ServiceAccount controller: make the
        // `default` ServiceAccount it would.
        let sa: Api<ServiceAccount> = Api::namespaced(cp.client(), ns);
        let obj: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
        match sa.create(&PostParams::default(), &obj).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e).context("step 1: default ServiceAccount"),
        }
    }
    done(t);

    let t = step(2, "starting OpenSearch and loading sample data");
    let search = OpenSearch::start().context("step 2: OpenSearch")?;
    let http = reqwest::Client::new();
    for (index, docs) in SAMPLE {
        load_sample(&http, &search.url(), index, *docs)
            .await
            .with_context(|| format!("step 2: loading {index}"))?;
    }
    done(t);

    let t = step(3, "starting the S3 server (MinIO)");
    let s3 = S3Server::start().context("step 3: MinIO")?;
    s3.create_bucket(BUCKET).context("step 3: bucket")?;
    done(t);

    let t = step(
        4,
        "starting the node (containerd, kubelet, scheduler, controller-manager) with cairn's image, cairn-webhook and cairn-controller",
    );
    let node = cp.node();
    let bin_dir = workspace_binary("cairn-agent").context("step 4: cairn-agent")?;
    let bin_dir = bin_dir
        .parent()
        .context("step 4: the binaries' directory")?;
    node.import_image(&cairn_image(bin_dir))
        .context("step 4: cairn's image")?;
    let search_forward =
        Forward::start(node.host_ip(), search.port()).context("step 4: OpenSearch forward")?;
    let s3_forward = Forward::start(node.host_ip(), s3.port()).context("step 4: MinIO forward")?;
    let webhook = Webhook::start_with_image(&cp, CAIRN_IMAGE).context("step 4: cairn-webhook")?;
    webhook
        .register(&cp)
        .context("step 4: webhook registration")?;
    let controller = Controller::start_with_image(&cp, "cairn-system", "demo", 15, CAIRN_IMAGE)
        .context("step 4: cairn-controller")?;
    controller
        .wait_leader(Duration::from_secs(30))
        .context("step 4: controller leadership")?;
    done(t);

    let mut demo = Demo {
        search_forward,
        s3_forward,
        controller,
        webhook,
        s3,
        search,
        cp,
        report: Vec::new(),
    };

    if let Err(e) = steps_5_to_9(&mut demo, &http).await {
        eprintln!(
            "\nThe demo failed: {e:#}\n\nLogs of the components:\n{}",
            demo.logs()
        );
        return Err(e);
    }
    Ok(demo)
}

async fn steps_5_to_9(demo: &mut Demo, http: &reqwest::Client) -> Result<()> {
    let t = step(
        5,
        "applying the catalog and the examples (S3 repository, AppBinding, a BackupConfiguration every minute)",
    );
    for file in [
        "manifests/catalog/functions.yaml",
        "manifests/catalog/tasks.yaml",
    ] {
        kubectl_apply_file(&demo.cp, file).context("step 5: catalog")?;
    }
    let objects = examples(demo)?;
    kubectl_apply(&demo.cp, &objects).context("step 5: examples")?;
    done(t);

    let t = step(
        6,
        "waiting for the first scheduled backup (the next minute)",
    );
    let session = wait_backup(demo).await.context("step 6: first backup")?;
    let snap = session
        .status
        .as_ref()
        .and_then(|s| s.snapshot.clone())
        .context("step 6: the session has no snapshot in its status")?;
    demo.report.push(format!(
        "BackupSession {} made snapshot {} ({} indices, {} documents)",
        session.metadata.name.clone().unwrap_or_default(),
        snap.id.get(..8).unwrap_or(&snap.id),
        snap.indices.unwrap_or(0),
        snap.documents.unwrap_or(0)
    ));
    done(t);

    let t = step(7, &format!("deleting index {LOST_INDEX} (the accident)"));
    let resp = http
        .delete(format!("{}/{LOST_INDEX}", demo.search.url()))
        .send()
        .await
        .context("step 7: delete")?;
    if !resp.status().is_success() {
        bail!("step 7: deleting {LOST_INDEX}: HTTP {}", resp.status());
    }
    demo.report.push(format!("deleted index {LOST_INDEX}"));
    done(t);

    let t = step(8, "restoring it with a RestoreSession");
    let restore = restore_session(&snap.id);
    kubectl_apply(&demo.cp, &[restore]).context("step 8: RestoreSession")?;
    let r = wait_restore(demo).await.context("step 8: restore")?;
    let restored = r.status.and_then(|s| s.restored).unwrap_or_default();
    demo.report.push(format!(
        "RestoreSession es-restore restored {} documents of snapshot {}",
        restored.documents.unwrap_or(0),
        restored.snapshot.get(..8).unwrap_or(&restored.snapshot)
    ));
    done(t);

    let t = step(9, "checking the documents are back");
    let want = SAMPLE
        .iter()
        .find(|(i, _)| *i == LOST_INDEX)
        .map(|(_, n)| *n)
        .unwrap_or(0);
    let got = count(http, &demo.search.url(), LOST_INDEX)
        .await
        .context("step 9: count")?;
    if got != want {
        bail!("step 9: {LOST_INDEX} has {got} documents after the restore, expected {want}");
    }
    demo.report
        .push(format!("{LOST_INDEX} has all {got} documents again"));
    done(t);
    Ok(())
}

impl Demo {
    /// What happened, and how to look around.
    pub fn summary(&self) -> String {
        let kubectl = format!(
            "{} --kubeconfig {}",
            self.cp.binaries().kubectl.display(),
            self.cp.kubeconfig().display()
        );
        let mut out = String::from("\nWhat happened:\n");
        for line in &self.report {
            out.push_str(&format!("  - {line}\n"));
        }
        out.push_str(&format!(
            "\nLook around:\n  {kubectl} get bc,bs,restore,repo -n {NAMESPACE}\n  {kubectl} get jobs,pods -n {NAMESPACE} -o wide\n  {kubectl} describe bs -n {NAMESPACE}\n  {kubectl} get repo s3-repo -n {NAMESPACE} -o yaml\n  {kubectl} get events -n {NAMESPACE}\n  curl -s {}/_cat/indices\n",
            self.search.url()
        ));
        out.push_str(&format!(
            "  restic -r {} snapshots   (with AWS_ACCESS_KEY_ID={} AWS_SECRET_ACCESS_KEY=... RESTIC_PASSWORD from manifests/examples/secret-s3.yaml)\n",
            self.s3.restic_repository(&format!("{BUCKET}/demo/elasticsearch")),
            self.s3.access_key()
        ));
        out
    }

    /// The tail of every component's log, for a failure report.
    pub fn logs(&self) -> String {
        format!(
            "--- cairn-controller ---\n{}\n--- cairn-webhook ---\n{}\n--- kube-apiserver ---\n{}\n--- kubelet ---\n{}",
            self.controller.log_tail(30),
            self.webhook.log_tail(30),
            self.cp.apiserver_log_tail(15),
            self.cp.node().kubelet_log_tail(20)
        )
    }
}

/// Loads `docs` sample documents into `index` (refreshed).
pub async fn load_sample(
    http: &reqwest::Client,
    url: &str,
    index: &str,
    docs: usize,
) -> Result<()> {
    let mut body = String::new();
    for i in 0..docs {
        let doc = json!({
            "name": format!("{index} item {i}"),
            "price": (i % 997) as f64 / 10.0,
            "tags": ["demo", if i % 2 == 0 { "even" } else { "odd" }],
            "note": "déjà vu ☃",
        });
        body.push_str(&format!(
            "{{\"index\":{{\"_index\":\"{index}\",\"_id\":\"{i}\"}}}}\n{doc}\n"
        ));
    }
    let resp = http
        .post(format!("{url}/_bulk?refresh=true"))
        .header("content-type", "application/x-ndjson")
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let v: Value = resp.json().await?;
    if !status.is_success() || v["errors"] == true {
        bail!("bulk load into {index} failed: HTTP {status}");
    }
    Ok(())
}

/// The document count of `index`.
pub async fn count(http: &reqwest::Client, url: &str, index: &str) -> Result<usize> {
    let v: Value = http
        .get(format!("{url}/{index}/_count"))
        .send()
        .await?
        .json()
        .await?;
    v["count"]
        .as_u64()
        .map(|c| c as usize)
        .with_context(|| format!("no count in {v}"))
}

/// The examples, pointed at the demo's own servers.
fn examples(demo: &Demo) -> Result<Vec<Value>> {
    let dir = repo_root().join("manifests/examples");
    let mut out = Vec::new();
    for file in [
        "secret-s3.yaml",
        "appbinding.yaml",
        "repository-s3.yaml",
        "backupconfiguration.yaml",
    ] {
        let text =
            std::fs::read_to_string(dir.join(file)).with_context(|| format!("reading {file}"))?;
        for doc in cairn_api::manifest::parse_documents(&text)? {
            out.push(doc);
        }
    }
    for o in &mut out {
        match o["kind"].as_str() {
            Some("Secret") if o["metadata"]["name"] == "s3-secret" => {
                o["stringData"]["AWS_ACCESS_KEY_ID"] = json!(demo.s3.access_key());
                o["stringData"]["AWS_SECRET_ACCESS_KEY"] = json!(demo.s3.secret_key());
            }
            Some("AppBinding") => {
                o["spec"]["clientConfig"] = json!({"url": demo.search_forward.http_url()});
            }
            Some("Repository") => {
                o["spec"]["backend"]["s3"]["endpoint"] = json!(demo.s3_forward.http_url());
                o["spec"]["backend"]["s3"]["bucket"] = json!(BUCKET);
            }
            Some("BackupConfiguration") => {
                o["spec"]["schedule"] = json!("* * * * *");
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Restores `snapshot` (the one step 6 made, not `latest`: the schedule runs every minute, and
/// a backup taken after the accident would not hold the lost index).
fn restore_session(snapshot: &str) -> Value {
    json!({
        "apiVersion": "cairn.dev/v1alpha1", "kind": "RestoreSession",
        "metadata": {"name": "es-restore", "namespace": NAMESPACE},
        "spec": {
            "repository": {"name": "s3-repo"},
            "task": {"name": "elasticsearch-restore", "params": [{"name": "include", "value": LOST_INDEX}]},
            "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"},
                       "rules": [{"snapshots": [snapshot]}]}
        }
    })
}

fn kubectl_apply(cp: &ControlPlane, objects: &[Value]) -> Result<()> {
    let docs: Vec<String> = objects
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<_, _>>()?;
    let out = cp.kubectl_stdin(["apply", "-f", "-"], &docs.join("---\n"));
    if !out.status.success() {
        bail!("kubectl apply: {}", String::from_utf8_lossy(&out.stderr));
    }
    print!("{}", indent(&String::from_utf8_lossy(&out.stdout)));
    Ok(())
}

fn kubectl_apply_file(cp: &ControlPlane, file: &str) -> Result<()> {
    let path = repo_root().join(file);
    let out = cp.kubectl(["apply", "-f", &path.display().to_string()]);
    if !out.status.success() {
        bail!(
            "kubectl apply -f {file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    print!("{}", indent(&String::from_utf8_lossy(&out.stdout)));
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("      {l}\n")).collect()
}

async fn wait_backup(demo: &Demo) -> Result<BackupSession> {
    let api: Api<BackupSession> = Api::namespaced(demo.cp.client(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = String::new();
    loop {
        let list = api.list(&ListParams::default()).await?;
        for s in list.items {
            let phase = s.status.as_ref().and_then(|st| st.phase);
            let line = format!(
                "{} {}",
                s.metadata.name.clone().unwrap_or_default(),
                phase
                    .map(|p| p.to_string())
                    .unwrap_or_else(|| "Pending".into())
            );
            if !seen.contains(&line) {
                println!("      {line}");
                seen.push_str(&line);
                seen.push('\n');
            }
            match phase {
                Some(SessionPhase::Succeeded) => return Ok(s),
                Some(SessionPhase::Failed) => {
                    let why = s
                        .status
                        .as_ref()
                        .map(|st| {
                            st.conditions
                                .iter()
                                .map(|c| format!("{}: {}", c.reason, c.message))
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    bail!(
                        "BackupSession {} failed: {why}",
                        s.metadata.name.unwrap_or_default()
                    );
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!("no backup succeeded within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn wait_restore(demo: &Demo) -> Result<RestoreSession> {
    let api: Api<RestoreSession> = Api::namespaced(demo.cp.client(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        if let Some(r) = api.get_opt("es-restore").await? {
            match r.status.as_ref().and_then(|s| s.phase) {
                Some(SessionPhase::Succeeded) => return Ok(r),
                Some(SessionPhase::Failed) => {
                    let why = r
                        .status
                        .as_ref()
                        .map(|st| {
                            st.conditions
                                .iter()
                                .map(|c| format!("{}: {}", c.reason, c.message))
                                .collect::<Vec<_>>()
                                .join("; ")
                        })
                        .unwrap_or_default();
                    bail!("RestoreSession es-restore failed: {why}");
                }
                _ => {}
            }
        }
        if Instant::now() > deadline {
            bail!("the restore did not finish within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
