//! A live certificate rotation of `cairn-webhook` behind a real kube-apiserver: the webhook
//! configurations trust the old and the new CA, objects are created, updated and deleted in a
//! loop while the serving certificate is replaced by one from the new CA and then the old CA is
//! dropped from the caBundle, and not one admission fails. The webhook serves the new certificate.
//!
//! Its own test binary, so its own control plane. Needs `cargo xtask testbed` and the workspace
//! binaries (`cargo xtask test` builds both).

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use cairn_api::Repository;
use cairn_tests::pki::CertificateAuthority;
use cairn_tests::webhook::Webhook;
use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir, repo_root};
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};

/// The end-entity certificate the webhook presents to a client that trusts only `ca_pem`.
fn served_certificate(port: u16, ca_pem: &str) -> Result<CertificateDer<'static>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.context("CA PEM")?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1")?.to_owned();
    let mut conn = ClientConnection::new(Arc::new(config), name)?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp)?;
    }
    let certs = conn.peer_certificates().context("no peer certificate")?;
    Ok(certs[0].clone().into_owned())
}

/// The local-repository example, renamed into `namespace`.
fn repository(namespace: &str, name: &str) -> Repository {
    let text =
        std::fs::read_to_string(repo_root().join("manifests/examples/repository-local.yaml"))
            .expect("example");
    let mut repo: Repository = serde_yaml::from_str(&text).expect("a Repository");
    repo.metadata.namespace = Some(namespace.to_string());
    repo.metadata.name = Some(name.to_string());
    repo
}

/// Create (mutated + validated), update (both again), delete: one round of admissions. Checks
/// that the mutating webhook really ran (its default is on the created object).
async fn round(api: &Api<Repository>, namespace: &str, name: &str) -> Result<()> {
    let created = api
        .create(&PostParams::default(), &repository(namespace, name))
        .await
        .with_context(|| format!("creating {name}"))?;
    let from = created
        .spec
        .usage_policy
        .as_ref()
        .and_then(|p| p.allowed_namespaces.as_ref())
        .and_then(|a| a.from.as_ref());
    anyhow::ensure!(
        from.is_some(),
        "{name} was not defaulted by the webhook: {:?}",
        created.spec
    );
    let patch =
        serde_json::json!({"spec": {"backend": {"local": {"subPath": format!("{name}-moved")}}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .with_context(|| format!("updating {name}"))?;
    api.delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {name}"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_loses_no_admission() {
    let cp: &'static ControlPlane = ControlPlane::shared();
    cp.apply_crds(crds_dir()).await.expect("CRDs");
    // The webhook's caches watch AppBindings too (KubeDB's CRD; ours stands in).
    cp.apply_crds(appbinding_crd_dir())
        .await
        .expect("AppBinding CRD");
    let webhook = Webhook::start(cp).expect("webhook starts");
    let old_ca_pem = webhook.ca().cert_pem();
    let new_ca = CertificateAuthority::new("cairn-webhook-test-ca-next").expect("new CA");
    let new_ca_pem = new_ca.cert_pem();
    // The rotation's first step: trust both CAs, before the serving certificate changes.
    webhook
        .register_with_ca(cp, &format!("{old_ca_pem}{new_ca_pem}"))
        .expect("webhook registered with both CAs");
    let before = served_certificate(webhook.port(), &old_ca_pem).expect("old certificate served");
    assert!(served_certificate(webhook.port(), &new_ca_pem).is_err());

    let ns = cp.new_namespace().await.expect("namespace");
    let api: Api<Repository> = Api::namespaced(cp.client(), &ns);
    // The registration may take a moment to reach the admission chain: wait for one round.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match round(&api, &ns, "warm-up").await {
            Ok(()) => break,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "webhook never took effect: {e:#}"
                );
                let _ = api.delete("warm-up", &DeleteParams::default()).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut workers = Vec::new();
    for w in 0..3 {
        let (api, ns, stop, ok, failures) = (
            api.clone(),
            ns.clone(),
            Arc::clone(&stop),
            Arc::clone(&ok),
            Arc::clone(&failures),
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
    let wait_for = |n: usize| {
        let ok = Arc::clone(&ok);
        let failures = Arc::clone(&failures);
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            while ok.load(Ordering::SeqCst) < n {
                assert!(
                    Instant::now() < deadline,
                    "rounds are not making progress; failures: {:?}",
                    failures.lock().expect("lock")
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    wait_for(20).await;
    let rotated_at = ok.load(Ordering::SeqCst);
    webhook
        .rotate_certificate(Some(&new_ca))
        .expect("new certificate written");
    // The webhook polls its files every second: the new certificate is served soon after.
    let deadline = Instant::now() + Duration::from_secs(15);
    let after = loop {
        match served_certificate(webhook.port(), &new_ca_pem) {
            Ok(cert) => break cert,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "the new certificate is not served: {e:#}\n{}",
                    webhook.log_tail(20)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let served_at = ok.load(Ordering::SeqCst);
    assert_ne!(before, after);
    assert!(
        served_certificate(webhook.port(), &old_ca_pem).is_err(),
        "the old CA's certificate is still served"
    );
    // Keep going on the new certificate, then finish the rotation: the caBundle drops the old
    // CA, so the API server builds a new client whose connections can only verify the new
    // certificate.
    wait_for(served_at + 10).await;
    webhook
        .register_with_ca(cp, &new_ca_pem)
        .expect("webhook registered with the new CA only");
    let dropped_at = ok.load(Ordering::SeqCst);
    wait_for(dropped_at + 20).await;
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        w.await.expect("worker");
    }
    let total = ok.load(Ordering::SeqCst);
    let failures = failures.lock().expect("lock");
    assert!(
        failures.is_empty(),
        "{} of {} rounds failed:\n{}\nwebhook log:\n{}",
        failures.len(),
        total + failures.len(),
        failures.join("\n"),
        webhook.log_tail(30)
    );
    eprintln!(
        "rotation: {total} rounds (create+update+delete), {rotated_at} before the rotation, {} while it propagated, {} on the new certificate, {} after the old CA was dropped; none failed",
        served_at - rotated_at,
        dropped_at - served_at,
        total - dropped_at
    );
    assert!(
        webhook
            .log_tail(200)
            .contains("serving certificate reloaded"),
        "{}",
        webhook.log_tail(30)
    );
}
