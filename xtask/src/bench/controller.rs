//! `cargo xtask bench controller [--configs N]`: N BackupConfigurations (default 1,000) on the
//! testbed control plane, all due in the same minute, and one `cairn-controller` (release build)
//! scheduling them. It prints the scheduling lag over all N sessions (p50/p99/max: the time the
//! bench saw each session appear through a watch, minus its slot — an upper bound of the
//! controller's own lag), the controller's peak RSS, and the API requests the control plane
//! served per session while the sessions were created and started (kube-apiserver's
//! `apiserver_request_total`, everything counted, divided by N).
//!
//! The baseline for scale: Stash makes one CronJob per configuration; the CronJob controller
//! checks every 10 s and then starts a pod that creates the session.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_api::BackupSession;
use cairn_tests::controller::Controller;
use cairn_tests::{ControlPlane, appbinding_crd_dir, crds_dir};
use chrono::{Timelike, Utc};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use serde_json::json;
use session_watch::watch_sessions;

use crate::crds::repo_root;

const USAGE: &str = "usage: cargo xtask bench controller [--configs N]";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    if cfg!(debug_assertions) {
        // The bench starts the controller binary: build it in release first.
        println!("==> cargo build --release -p cairn-controller");
        let status = Command::new(super::cargo())
            .args(["build", "--release", "-p", "cairn-controller"])
            .current_dir(repo_root())
            .status()?;
        if !status.success() {
            bail!("building cairn-controller failed: {status}");
        }
    }
    if super::rerun_in_release("controller", args)? {
        return Ok(());
    }
    let mut configs = 1000usize;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--configs" => configs = it.next().context(USAGE)?.parse().context("--configs")?,
            _ => bail!(USAGE),
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(measure(configs))
}

async fn apiserver_requests(cp: &ControlPlane) -> anyhow::Result<f64> {
    let req = http::Request::get("/metrics").body(Vec::new())?;
    let text = cp.client().request_text(req).await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(n: usize) -> anyhow::Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "cairn controller scheduling benchmark: {n} BackupConfigurations due in the same minute"
    );
    println!(
        "machine: {} cores; load average before: {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let cp = ControlPlane::start()?;
    cp.apply_crds(crds_dir()).await?;
    cp.apply_crds(appbinding_crd_dir()).await?;
    let ns = "bench";
    for name in ["cairn-system", ns] {
        let api: Api<Namespace> = Api::all(cp.client());
        api.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}}))?,
        )
        .await?;
        let sa: Api<ServiceAccount> = Api::namespaced(cp.client(), name);
        sa.create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "default"}}))?,
        )
        .await?;
    }
    for f in [
        "manifests/catalog/functions.yaml",
        "manifests/catalog/tasks.yaml",
    ] {
        let out = cp.kubectl(["apply", "-f", &repo_root().join(f).display().to_string()]);
        if !out.status.success() {
            bail!("{f}: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    let client = cp.client();
    let fixtures = [
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "repo-secret", "namespace": ns}, "stringData": {"RESTIC_PASSWORD": "p"}}),
        json!({"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "metadata": {"name": "es", "namespace": ns}, "spec": {"clientConfig": {"url": "http://127.0.0.1:9"}}}),
        json!({"apiVersion": "cairn.dev/v1alpha1", "kind": "Repository", "metadata": {"name": "repo", "namespace": ns}, "spec": {"backend": {"storageSecretName": "repo-secret", "s3": {"endpoint": "http://127.0.0.1:9", "bucket": "bench"}}}}),
    ];
    let yaml: Vec<String> = fixtures
        .iter()
        .map(serde_yaml::to_string)
        .collect::<Result<_, _>>()?;
    let out = cp.kubectl_stdin(["apply", "-f", "-"], &yaml.join("---\n"));
    if !out.status.success() {
        bail!("fixtures: {}", String::from_utf8_lossy(&out.stderr));
    }

    // A slot far enough ahead for N creations, on a minute boundary.
    let create_budget = Duration::from_secs(30 + (n as u64) / 20);
    let slot = (Utc::now() + chrono::Duration::from_std(create_budget)?)
        .with_second(0)
        .and_then(|t| t.with_nanosecond(0))
        .context("slot")?
        + chrono::Duration::minutes(1);
    let schedule = format!("{} {} * * *", slot.minute(), slot.hour());
    println!(
        "creating {n} configurations with schedule {schedule:?} (UTC), slot {}",
        slot.to_rfc3339()
    );
    let t = Instant::now();
    let dynamic: Api<kube::api::DynamicObject> = Api::namespaced_with(
        client.clone(),
        ns,
        &kube::discovery::ApiResource::erase::<cairn_api::BackupConfiguration>(&()),
    );
    for i in 0..n {
        let obj: kube::api::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cairn.dev/v1alpha1", "kind": "BackupConfiguration",
            "metadata": {"name": format!("cfg-{i:04}"), "namespace": ns},
            "spec": {"schedule": schedule, "repository": {"name": "repo"},
                     "target": {"ref": {"apiVersion": "appcatalog.appscode.com/v1alpha1", "kind": "AppBinding", "name": "es"}},
                     "retentionPolicy": {"name": "k", "keepLast": 1}, "retryConfig": {"maxRetry": 0}}
        }))?;
        dynamic.create(&PostParams::default(), &obj).await?;
    }
    println!("created in {:.1}s", t.elapsed().as_secs_f64());
    let controller = Controller::start(&cp, "cairn-system", "bench", 15)?;
    controller.wait_leader(Duration::from_secs(30))?;

    let seen = watch_sessions(client.clone(), ns.to_string());
    // Count requests from shortly before the slot until every session is Running.
    let until_slot = (slot - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(until_slot.saturating_sub(Duration::from_secs(2))).await;
    let requests_before = apiserver_requests(&cp).await?;
    let deadline = Instant::now() + Duration::from_secs(120) + Duration::from_millis(n as u64 * 50);
    let sessions: Api<BackupSession> = Api::namespaced(client.clone(), ns);
    loop {
        let seen_now = seen.lock().map(|m| m.len()).unwrap_or(0);
        if seen_now >= n {
            let list = sessions.list(&Default::default()).await?;
            let running = list
                .items
                .iter()
                .filter(|s| s.status.as_ref().and_then(|st| st.phase).is_some())
                .count();
            if running >= n {
                break;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "only {seen_now} of {n} sessions appeared:\n{}",
                controller.log_tail(20)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let requests = apiserver_requests(&cp).await? - requests_before;
    let slot_ms = slot.timestamp_millis() as f64;
    let mut lags: Vec<f64> = seen
        .lock()
        .map(|m| {
            m.values()
                .map(|at| (*at as f64 - slot_ms) / 1000.0)
                .collect()
        })
        .unwrap_or_default();
    lags.sort_by(|a, b| a.total_cmp(b));
    let status =
        std::fs::read_to_string(format!("/proc/{}/status", controller.pid())).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN);
    let (p50, p99, max) = (
        quantile(&lags, 0.5),
        quantile(&lags, 0.99),
        lags.last().copied().unwrap_or(f64::NAN),
    );
    let rss_mb = rss_kb / 1024.0;
    // The controller's own view: the lag it logged when each create returned.
    let log = strip_ansi(&std::fs::read_to_string(controller.log_path()).unwrap_or_default());
    let mut own: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("session created"))
        .filter_map(|l| {
            l.split("lag_seconds=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    own.sort_by(|a, b| a.total_cmp(b));
    let kept = std::env::temp_dir().join("cairn-bench-controller.log");
    let _ = std::fs::write(&kept, &log);
    let per_session = requests / n as f64;
    println!("\nsessions: {}", lags.len());
    println!(
        "scheduling lag (watch-observed creation - slot): p50 {p50:.3}s  p99 {p99:.3}s  max {max:.3}s   target p99 < 2s: {}",
        if p99 < 2.0 { "PASS" } else { "MISS" }
    );
    println!(
        "controller-logged lag (create returned - slot): p50 {:.3}s  p99 {:.3}s  max {:.3}s over {} sessions (log kept at {})",
        quantile(&own, 0.5),
        quantile(&own, 0.99),
        own.last().copied().unwrap_or(f64::NAN),
        own.len(),
        kept.display()
    );
    println!(
        "controller peak RSS: {rss_mb:.1} MB   target < 100 MB: {}",
        if rss_mb < 100.0 { "PASS" } else { "MISS" }
    );
    println!(
        "API requests served from slot-2s until all {n} sessions ran: {requests:.0} ({per_session:.2} per session; includes creating each session, its Job and the status writes)"
    );
    println!(
        "baseline for scale: Stash's CronJob controller checks every 10 s, then a pod starts to create the session"
    );
    println!(
        "RESULT configs={n} lag_p50_s={p50:.3} lag_p99_s={p99:.3} lag_max_s={max:.3} own_lag_p99_s={:.3} peak_rss_mb={rss_mb:.1} api_requests={requests:.0} api_requests_per_session={per_session:.2} target_lag_p99={} target_rss={}",
        quantile(&own, 0.99),
        if p99 < 2.0 { "PASS" } else { "MISS" },
        if rss_mb < 100.0 { "PASS" } else { "MISS" }
    );
    Ok(())
}

/// The text without terminal colour sequences (the controller's log has them).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// A watch on the sessions of a namespace, recording when each first appeared (Unix ms).
mod session_watch {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use cairn_api::BackupSession;
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    use kube::{Api, Client, ResourceExt};

    pub fn watch_sessions(client: Client, ns: String) -> Arc<Mutex<BTreeMap<String, i64>>> {
        let seen = Arc::new(Mutex::new(BTreeMap::new()));
        let out = seen.clone();
        tokio::spawn(async move {
            let api: Api<BackupSession> = Api::namespaced(client, &ns);
            let stream = watcher(api, watcher::Config::default()).applied_objects();
            futures::pin_mut!(stream);
            while let Some(item) = stream.next().await {
                if let Ok(s) = item {
                    let now = chrono::Utc::now().timestamp_millis();
                    if let Ok(mut m) = out.lock() {
                        m.entry(s.name_any()).or_insert(now);
                    }
                }
            }
        });
        seen
    }
}
