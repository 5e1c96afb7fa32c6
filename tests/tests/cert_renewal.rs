//! The shipped certificate renewal, end to end: the install's bootstrap Job and its CronJob
//! `cairn-certs-renewal` (from `manifests/bootstrap/`), run by the real CronJob and Job
//! controllers, each run a real Pod on the test node from cairn's image, as the least-privilege
//! service account (its projected token, the in-cluster configuration), renew a serving
//! certificate of a few minutes and rotate a CA near expiry while admissions run through a real
//! kube-apiserver. None fails; the webhook reloads each certificate; the caBundle holds the next
//! CA before it signs and the old one until the new certificate is served, then drops it.
//!
//! What differs from a cluster, each forced by the testbed and named here:
//! - the durations (`--validity 3m ...`) and the schedule (every minute) are patched into the
//!   shipped objects, the image is the test image, and `--ip=127.0.0.1` is added: the API
//!   server dials the webhook (a process of the test) by URL on loopback, not through the
//!   Service;
//! - the pods reach the API server through the node's answer for the `kubernetes` Service
//!   (`Node::serve_kubernetes_service`: there is no kube-proxy);
//! - the test copies the Secret into the webhook's certificate directory as the kubelet's Secret
//!   volume would.
//!
//! Its own test binary, so its own control plane. Takes about four minutes (cron runs each
//! minute, a rotation takes three runs).

use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use cairn_api::Repository;
use cairn_certs::ServingCert;
use cairn_tests::image::CAIRN_IMAGE;
use cairn_tests::system::import_images;
use cairn_tests::webhook::Webhook;
use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use futures::StreamExt;
use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use serde_json::{Value, json};

const NS: &str = "cairn-system";
/// Short lives: the serving certificate is due a minute after issue, and so is the CA.
const FLAGS: &[&str] = &[
    "--ip=127.0.0.1",
    "--validity=3m",
    "--renew-before=2m",
    "--ca-validity=5m",
    "--ca-renew-before=4m",
    "--overlap=20s",
];

/// `manifests/bootstrap/` with the test's flags and schedule (see the module comment).
fn bootstrap_objects() -> Vec<Value> {
    let dir = repo_root().join("manifests/bootstrap");
    let out = ControlPlane::shared().kubectl(["kustomize", &dir.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    let mut objects = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let mut v: Value = serde::Deserialize::deserialize(doc).expect("YAML");
        let spec = match v["kind"].as_str() {
            Some("Job") => v.pointer_mut("/spec/template/spec"),
            Some("CronJob") => {
                v["spec"]["schedule"] = json!("* * * * *");
                v.pointer_mut("/spec/jobTemplate/spec/template/spec")
            }
            _ => None,
        };
        if let Some(spec) = spec {
            let container = &mut spec["containers"][0];
            container["image"] = json!(CAIRN_IMAGE);
            let args = container["args"].as_array_mut().expect("args");
            args.extend(FLAGS.iter().map(|f| json!(f)));
        }
        objects.push(v);
    }
    objects
}

/// The end-entity certificate the webhook presents to a client that trusts `bundle`.
fn served(port: u16, bundle: &str) -> Result<CertificateDer<'static>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(bundle.as_bytes()) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?.to_owned();
    let mut conn = ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let certs = conn.peer_certificates().context("no peer certificate")?;
    Ok(certs[0].clone().into_owned())
}

fn der(pem: &str) -> Option<Vec<u8>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

/// Each CA of a bundle, trimmed PEM.
fn cas(bundle: &str) -> BTreeSet<String> {
    bundle
        .split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("BEGIN CERTIFICATE"))
        .map(|b| b.trim().to_string())
        .collect()
}

fn text(secret: &Secret, key: &str) -> String {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .unwrap_or_default()
}

/// Plays the kubelet's Secret volume: every version of the serving Secret is written into
/// `dir` (files renamed into place), as the webhook's mounted `cairn-webhook-tls` would be.
fn mirror_secret(cp: &ControlPlane, dir: &Path) -> tokio::task::JoinHandle<()> {
    let api: Api<Secret> = Api::namespaced(cp.client(), NS);
    let dir = dir.to_path_buf();
    tokio::spawn(async move {
        let config = watcher::Config::default().fields("metadata.name=cairn-webhook-tls");
        let mut secrets = watcher(api, config)
            .applied_objects()
            .default_backoff()
            .boxed();
        while let Some(Ok(secret)) = secrets.next().await {
            let serving = ServingCert {
                cert_pem: text(&secret, "tls.crt"),
                key_pem: text(&secret, "tls.key"),
                ca_pem: text(&secret, "ca.crt"),
            };
            cairn_certs::write_files(&dir, &serving).expect("writing the certificate files");
        }
    })
}

/// The validating configuration's caBundle (the mutating one gets the same in the same run).
async fn bundle(api: &Api<ValidatingWebhookConfiguration>) -> Result<String> {
    let config = api.get("cairn-validating").await?;
    let hook = config.webhooks.unwrap_or_default().into_iter().next();
    let bytes = hook.and_then(|h| h.client_config.ca_bundle).map(|b| b.0);
    Ok(String::from_utf8_lossy(&bytes.unwrap_or_default()).into_owned())
}

/// Create (mutated + validated), update, delete: one round of admissions.
async fn round(api: &Api<Repository>, namespace: &str, name: &str) -> Result<()> {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/examples/repository-local.yaml"))?;
    let mut repo: Repository = serde_yaml::from_str(&text)?;
    repo.metadata.namespace = Some(namespace.to_string());
    repo.metadata.name = Some(name.to_string());
    api.create(&PostParams::default(), &repo)
        .await
        .with_context(|| format!("creating {name}"))?;
    let patch = json!({"spec": {"backend": {"local": {"subPath": format!("{name}-moved")}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("updating {name}"))?;
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {name}"))?;
    Ok(())
}

/// What one look saw: the served certificate's CA (from the Secret versions seen so far) and
/// the caBundle.
#[derive(Debug)]
struct Look {
    leaf: Vec<u8>,
    ca: Option<String>,
    bundle: BTreeSet<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_shipped_cronjob_renews_and_rotates_while_admissions_run() {
    let cp: &'static ControlPlane = ControlPlane::shared();
    cp.apply_crds(crds_dir()).await.expect("CRDs");
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("AppBinding CRD");
    let namespace = repo_root().join("manifests/namespace.yaml");
    let out = cp.kubectl(["apply", "-f", &namespace.display().to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let node = cp.node();
    import_images(node);
    let _api = node
        .serve_kubernetes_service(cp)
        .expect("the kubernetes Service on the bridge");
    let webhook = Webhook::start(cp).expect("webhook starts");
    webhook.register(cp).expect("webhook registered");
    let _mirror = mirror_secret(cp, webhook.cert_dir());

    // The install: RBAC, the bootstrap Job and the CronJob, as shipped (plus the test's flags).
    let docs: Vec<String> = bootstrap_objects()
        .iter()
        .map(|o| serde_yaml::to_string(o).expect("YAML"))
        .collect();
    let out = cp.kubectl_stdin(["apply", "-f", "-"], &docs.join("---\n"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let configs: Api<ValidatingWebhookConfiguration> = Api::all(cp.client());
    let secrets: Api<Secret> = Api::namespaced(cp.client(), NS);

    // The bootstrap ran and the webhook serves its certificate, trusted by the caBundle.
    let first_ca = cairn_tests::wait_for(Duration::from_secs(90), "the bootstrap", || async {
        let secret = secrets.get_opt("cairn-webhook-tls").await.ok()??;
        let bundle = bundle(&configs).await.ok()?;
        let leaf = served(webhook.port(), &bundle).ok()?;
        (der(&text(&secret, "tls.crt")) == Some(leaf.to_vec())).then(|| text(&secret, "ca.crt"))
    })
    .await;

    let ns = cp.new_namespace().await.expect("namespace");
    let repos: Api<Repository> = Api::namespaced(cp.client(), &ns);
    // The API server learns of the bootstrap's caBundle through its own watch: one round first.
    cairn_tests::wait_for(
        Duration::from_secs(30),
        "a first admission round",
        || async {
            let done = round(&repos, &ns, "warm-up").await.is_ok();
            if !done {
                let _ = repos.delete("warm-up", &DeleteParams::default()).await;
            }
            done.then_some(())
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..2 {
        let (api, ns, stop, ok, failures) = (
            repos.clone(),
            ns.clone(),
            stop.clone(),
            ok.clone(),
            failures.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let name = format!("repo-{w}-{i}");
                match round(&api, &ns, &name).await {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => failures
                        .lock()
                        .expect("lock")
                        .push(format!("{name}: {e:#}")),
                }
            }
        }));
    }

    // Look four times a second until the first CA was replaced and then dropped.
    let mut ca_of: HashMap<Vec<u8>, String> = HashMap::new();
    let mut looks: Vec<Look> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(420);
    let first = first_ca.trim().to_string();
    loop {
        if let Ok(secret) = secrets.get("cairn-webhook-tls").await
            && let Some(leaf) = der(&text(&secret, "tls.crt"))
        {
            ca_of.insert(leaf, text(&secret, "ca.crt").trim().to_string());
        }
        // A look the API server does not answer (a busy machine) is skipped, not a failure.
        let bundle_pem = bundle(&configs).await.unwrap_or_default();
        if !bundle_pem.is_empty()
            && let Ok(leaf) = served(webhook.port(), &bundle_pem)
        {
            let leaf = leaf.to_vec();
            looks.push(Look {
                ca: ca_of.get(&leaf).cloned(),
                leaf,
                bundle: cas(&bundle_pem),
            });
        }
        let switched = looks
            .iter()
            .any(|l| l.ca.as_deref().is_some_and(|c| c != first));
        let dropped = switched && looks.last().is_some_and(|l| !l.bundle.contains(&first));
        if dropped {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no complete rotation within 7 minutes; looks: {:?}\n{}",
            looks
                .iter()
                .map(|l| (l.ca.is_some(), l.bundle.len()))
                .collect::<Vec<_>>(),
            String::from_utf8_lossy(
                &cp.kubectl(["get", "cronjobs,jobs,pods", "-n", NS, "-o", "wide"])
                    .stdout
            )
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let rounds_during = ok.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }

    // Not one admission failed while certificates and CAs changed under the API server.
    let failures = failures.lock().expect("lock").clone();
    assert!(
        failures.is_empty(),
        "{} of {} rounds failed:\n{}\nwebhook log:\n{}",
        failures.len(),
        rounds_during + failures.len(),
        failures.join("\n"),
        webhook.log_tail(30)
    );
    assert!(rounds_during > 50, "only {rounds_during} rounds ran");

    // A renewal under the same CA, then a switch to the next CA while the bundle held both.
    let leaves: Vec<(&Vec<u8>, Option<&String>)> =
        looks.iter().map(|l| (&l.leaf, l.ca.as_ref())).collect();
    let mut distinct: Vec<(&Vec<u8>, Option<&String>)> = Vec::new();
    for (leaf, ca) in leaves {
        if distinct.last().map(|(l, _)| *l) != Some(leaf) {
            distinct.push((leaf, ca));
        }
    }
    let under_first = distinct
        .iter()
        .filter(|(_, ca)| ca.map(String::as_str) == Some(first.as_str()))
        .count();
    assert!(
        under_first >= 2,
        "no renewal under the first CA was served: {} certificates",
        distinct.len()
    );
    let switch = looks
        .iter()
        .position(|l| l.ca.as_deref().is_some_and(|c| c != first))
        .expect("a certificate of the next CA was served");
    let next = looks[switch].ca.clone().expect("its CA");
    assert!(
        looks[switch].bundle.contains(&first) && looks[switch].bundle.contains(&next),
        "when the next CA's certificate was first served, the caBundle did not hold both CAs"
    );
    let published = looks
        .iter()
        .position(|l| l.bundle.contains(&next))
        .expect("published");
    assert!(
        published < switch,
        "the next CA signed before the caBundle held it"
    );
    for look in &looks {
        if let Some(ca) = &look.ca {
            assert!(
                look.bundle.contains(ca),
                "a served certificate's CA was missing from the caBundle"
            );
        }
    }

    // Every run was a Job of the CronJob, and none failed.
    let jobs: Api<Job> = Api::namespaced(cp.client(), NS);
    let jobs = jobs.list(&ListParams::default()).await.expect("Jobs");
    let failed: Vec<String> = jobs
        .items
        .iter()
        .filter(|j| j.status.as_ref().and_then(|s| s.failed).unwrap_or(0) > 0)
        .map(|j| j.name_any())
        .collect();
    let pods = cp.kubectl(["get", "pods", "-n", NS, "-o", "wide"]);
    assert!(
        failed.is_empty(),
        "failed runs {failed:?}:\n{}",
        String::from_utf8_lossy(&pods.stdout)
    );
    assert!(
        jobs.items.iter().any(|j| j
            .owner_references()
            .iter()
            .any(|o| o.kind == "CronJob" && o.name == "cairn-certs-renewal")),
        "no Job of the CronJob is left"
    );

    // The webhook exports the expiry of what it serves (the Secret's, once reloaded).
    cairn_tests::wait_for(Duration::from_secs(20), "the expiry metric", || async {
        let secret = secrets.get("cairn-webhook-tls").await.ok()?;
        let not_after = cairn_certs::cert_info(&text(&secret, "tls.crt")).ok()?.not_after;
        let seconds = not_after.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
        let metric = format!(
            "cairn_webhook_certificate_expiry_timestamp_seconds{{certificate=\"serving\"}} {seconds}"
        );
        let (_, body) = webhook.admin_get("/metrics").ok()?;
        body.lines().any(|l| l.starts_with(&metric)).then_some(())
    })
    .await;
    eprintln!(
        "renewal: {rounds_during} admission rounds, {} certificates served ({under_first} under the first CA), none failed",
        distinct.len()
    );
}
