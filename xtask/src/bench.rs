//! `cargo xtask bench webhook`: the admission server against a bare rustls + hyper server, side
//! by side in one run, on loopback, same certificate, same client.
//!
//! - Built and run in release mode: from a debug build the command re-runs itself with
//!   `cargo run --release -p xtask -- bench webhook` (the first time compiles the workspace in
//!   release, a few minutes).
//! - Each server runs in a child process of its own (`bench serve-webhook` / `bench serve-bare`,
//!   hidden subcommands), so servers and client never share a runtime or threads.
//! - The webhook child is the real `admission_router` + `serve_tls` with a `LookupTable` of the
//!   shipped examples and catalog: no API server (in production the lookups are reflector store
//!   reads, equally in memory). No tracing subscriber is installed (as with log level info: the
//!   per-request event is at debug).
//! - Requests: AdmissionReviews (CREATE) of `manifests/examples/backupconfiguration-interim.yaml`
//!   (runtime settings, an interim volume), alternating `/validate` and `/mutate` (which answers
//!   with a JSON patch of the defaults). The bare server reads the same bodies and answers a
//!   fixed 200 with a small JSON body.
//! - Transport: TLS 1.3, HTTP/1.1 keep-alive, one connection per client. (The kube-apiserver
//!   talks HTTP/2 to webhooks by default; this measures HTTP/1.1.)
//! - For each concurrency (1, 16, 64 clients, closed loop) the two servers alternate in ABBA
//!   order, each segment a warm-up then a measured window; latency is per request.

mod agent;
mod controller;
mod load;
mod serve;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cairn_api::manifest::{Object, parse_documents, typed};
use cairn_api::resolve::InstallSettings;
use cairn_api::validation::LookupTable;
use cairn_webhook::admission::{Endpoint, review};
use cairn_webhook::server::decode;
use hyper::body::Bytes;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde_json::{Value, json};

use crate::crds::repo_root;
use load::{Call, Sample};

const USAGE: &str =
    "usage: cargo xtask bench webhook [--seconds S] [--warmup S] [--clients 1,16,64]";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("webhook") => webhook(&args[1..]),
        Some("agent") => agent::run(&args[1..]),
        Some("controller") => controller::run(&args[1..]),
        Some("serve-webhook") => serve::webhook(&args[1..]),
        Some("serve-bare") => serve::bare(&args[1..]),
        _ => bail!(USAGE),
    }
}

struct Options {
    /// Measured seconds per (server, concurrency) point, split over two segments.
    seconds: f64,
    /// Warm-up seconds before each segment.
    warmup: f64,
    clients: Vec<usize>,
}

fn options(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        seconds: 5.0,
        warmup: 1.0,
        clients: vec![1, 16, 64],
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().context(USAGE);
        match a.as_str() {
            "--seconds" => o.seconds = value()?.parse().context("--seconds")?,
            "--warmup" => o.warmup = value()?.parse().context("--warmup")?,
            "--clients" => {
                o.clients = value()?
                    .split(',')
                    .map(|c| c.trim().parse().context("--clients"))
                    .collect::<anyhow::Result<_>>()?;
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    if o.clients.is_empty() || o.clients.contains(&0) || o.seconds <= 0.0 || o.warmup < 0.0 {
        bail!(USAGE);
    }
    Ok(o)
}

/// The shipped examples and catalog as lookups (what the watch caches hold in the demo).
pub fn example_lookups() -> anyhow::Result<LookupTable> {
    let root = repo_root().join("manifests");
    let mut table = LookupTable::default().with_namespace("demo", &[]);
    for dir in ["examples", "catalog"] {
        for entry in std::fs::read_dir(root.join(dir)).context("manifests")? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "yaml") {
                continue;
            }
            let text = std::fs::read_to_string(&path)?;
            for doc in parse_documents(&text)? {
                table = match typed(doc)? {
                    Object::Repository(o) => table.with_repository(o),
                    Object::BackupConfiguration(o) => table.with_backup_configuration(o),
                    Object::Task(o) => table.with_task(o),
                    Object::Function(o) => table.with_function(o),
                    Object::AppBinding(o) => table.with_app_binding(o),
                    _ => table,
                };
            }
        }
    }
    Ok(table)
}

/// The AdmissionReview the bench sends: a CREATE of the interim-volume example.
fn review_body() -> anyhow::Result<Vec<u8>> {
    let path = repo_root().join("manifests/examples/backupconfiguration-interim.yaml");
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let object = parse_documents(&text)?
        .into_iter()
        .next()
        .context("an empty example")?;
    let review = json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": "cairn.dev", "version": "v1alpha1", "kind": "BackupConfiguration"},
            "resource": {"group": "cairn.dev", "version": "v1alpha1", "resource": "backupconfigurations"},
            "requestKind": {"group": "cairn.dev", "version": "v1alpha1", "kind": "BackupConfiguration"},
            "requestResource": {"group": "cairn.dev", "version": "v1alpha1", "resource": "backupconfigurations"},
            "name": object["metadata"]["name"].clone(),
            "namespace": object["metadata"]["namespace"].clone(),
            "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
            "object": object,
            "oldObject": null,
            "dryRun": false,
            "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions", "fieldManager": "kubectl-client-side-apply", "fieldValidation": "Strict"}
        }
    });
    Ok(serde_json::to_vec(&review)?)
}

/// A child server process; stopped (stdin closed, then killed) when dropped.
struct ServerProcess {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl ServerProcess {
    fn start(name: &'static str, subcommand: &str, cert_dir: &Path) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating xtask")?;
        let mut child = Command::new(exe)
            .args(["bench", subcommand, "--port", "0", "--cert-dir"])
            .arg(cert_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {name} server"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let port: u16 = line
            .trim()
            .strip_prefix("listening ")
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("the {name} server did not start: {line:?}"))?;
        Ok(Self {
            name,
            child,
            addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
        })
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The machine, for the figures: CPU, cores, memory, kernel, compiler.
fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0.0, |k| k as f64 / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let rustc = Command::new("rustc")
        .arg("-V")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem:.0} GiB RAM, Linux {kernel}, {rustc}")
}

/// The cargo that runs us.
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

/// From a debug build, runs `cargo xtask bench <bench> <args>` again in release mode and
/// returns `true` (the caller is done); from a release build returns `false`.
fn rerun_in_release(bench: &str, args: &[String]) -> anyhow::Result<bool> {
    if !cfg!(debug_assertions) {
        return Ok(false);
    }
    println!("==> re-running in release mode: cargo run --release -p xtask -- bench {bench}");
    let status = Command::new(cargo())
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "xtask",
            "--",
            "bench",
            bench,
        ])
        .args(args)
        .current_dir(repo_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("the release-mode bench failed: {status}");
    }
    Ok(true)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Cheap profile of the handler, in this process, single-threaded: where a request's time goes
/// besides TLS and HTTP.
fn handler_profile(body: &[u8]) -> anyhow::Result<Vec<(&'static str, f64)>> {
    let lookups = example_lookups()?;
    let install = InstallSettings::default();
    let n = 3000;
    let time = |f: &mut dyn FnMut()| {
        for _ in 0..200 {
            f();
        }
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let req = decode(body).map_err(anyhow::Error::msg)?;
    // The schedule check of validation: the shortest gap between slots over a year.
    let spec = req
        .object
        .as_ref()
        .map(|o| o.data["spec"].clone())
        .unwrap_or_default();
    let expr = spec["schedule"].as_str().unwrap_or_default().to_string();
    let zone = spec["timeZone"].as_str().map(str::to_string);
    let from =
        chrono::DateTime::<chrono::Utc>::from_timestamp(1_735_689_600, 0).unwrap_or_default();
    let (validated, _) = review(Endpoint::Validate, &req, &lookups, &install);
    let (mutated, _) = review(Endpoint::Mutate, &req, &lookups, &install);
    let validated = validated.into_review();
    let mutated = mutated.into_review();
    Ok(vec![
        (
            "decode (JSON -> AdmissionRequest)",
            time(&mut || {
                std::hint::black_box(decode(std::hint::black_box(body)).ok());
            }),
        ),
        (
            "review validate",
            time(&mut || {
                std::hint::black_box(review(Endpoint::Validate, &req, &lookups, &install));
            }),
        ),
        (
            "  of which Schedule::min_interval (cairn-api)",
            time(&mut || {
                let s = cairn_api::schedule::Schedule::parse(&expr, zone.as_deref()).ok();
                std::hint::black_box(s.and_then(|s| s.min_interval(from)));
            }),
        ),
        (
            "review mutate (defaults + JSON patch)",
            time(&mut || {
                std::hint::black_box(review(Endpoint::Mutate, &req, &lookups, &install));
            }),
        ),
        (
            "encode validate answer",
            time(&mut || {
                std::hint::black_box(serde_json::to_vec(&validated).ok());
            }),
        ),
        (
            "encode mutate answer",
            time(&mut || {
                std::hint::black_box(serde_json::to_vec(&mutated).ok());
            }),
        ),
    ])
}

/// Checks the webhook's answers before measuring: validate allows, mutate patches.
async fn check_answers(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    calls: &[Call],
) -> anyhow::Result<()> {
    let mut sender = load::connect(addr, tls).await?;
    for c in calls {
        let (status, body) = load::call(&mut sender, c).await?;
        let v: Value = serde_json::from_slice(&body)
            .with_context(|| format!("{}: {status}: not JSON", c.path))?;
        if status != 200 || v["response"]["allowed"] != true {
            bail!("{}: unexpected answer {status}: {v}", c.path);
        }
        if c.path.starts_with("/mutate") && v["response"]["patchType"] != "JSONPatch" {
            bail!("{}: no patch in {v}", c.path);
        }
    }
    Ok(())
}

struct Point {
    clients: usize,
    webhook: Sample,
    bare: Sample,
}

fn webhook(args: &[String]) -> anyhow::Result<()> {
    if rerun_in_release("webhook", args)? {
        return Ok(());
    }
    let o = options(args)?;
    let _ = rustls::crypto::ring::default_provider().install_default();

    let dir = std::env::temp_dir().join(format!("cairn-bench-{}", std::process::id()));
    let ca = cairn_certs::generate_ca("cairn-bench-ca", Duration::from_secs(24 * 3600))?;
    let serving = cairn_certs::issue_serving_cert(
        &ca,
        &["localhost".to_string()],
        &[IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Duration::from_secs(24 * 3600),
    )?;
    cairn_certs::write_files(&dir, &serving)?;
    let result = measure(&o, &dir, &ca.cert_pem);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(o: &Options, cert_dir: &Path, ca_pem: &str) -> anyhow::Result<()> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(ca_pem.as_bytes())?)?;
    let mut client = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let client = Arc::new(client);

    let body = Bytes::from(review_body()?);
    let calls = Arc::new(vec![
        Call {
            path: "/validate/backupconfigurations",
            body: body.clone(),
        },
        Call {
            path: "/mutate/backupconfigurations",
            body: body.clone(),
        },
    ]);

    println!("cairn webhook benchmark (release build)");
    println!("machine: {}", machine_info());
    println!("load average before: {}", loadavg());
    println!(
        "request: AdmissionReview CREATE of examples/backupconfiguration-interim.yaml, {} bytes, alternating /validate and /mutate",
        body.len()
    );
    println!(
        "transport: TLS 1.3 (rustls, ring), HTTP/1.1 keep-alive, one connection per client, loopback; \
         the kube-apiserver uses HTTP/2 to webhooks by default"
    );
    println!(
        "webhook: real admission_router + serve_tls in its own process, lookups from a LookupTable of the \
         shipped examples (no API server; in production they are reflector store reads, also in memory)"
    );
    println!(
        "bare: rustls + hyper HTTP/1.1 in its own process, reads the body, answers 200 with {} bytes of JSON",
        serve::BARE_BODY.len()
    );
    println!(
        "per point: {:.1} s measured ({}x {:.1} s, ABBA order), each segment after {:.1} s warm-up",
        o.seconds,
        2,
        o.seconds / 2.0,
        o.warmup
    );
    println!();
    println!("handler cost in-process (1 thread, µs per call):");
    for (what, us) in handler_profile(&body)? {
        println!("  {what:<40} {us:>8.1}");
    }
    println!();
    std::io::stdout().flush()?;

    let webhook = ServerProcess::start("webhook", "serve-webhook", cert_dir)?;
    let bare = ServerProcess::start("bare", "serve-bare", cert_dir)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(check_answers(webhook.addr, Arc::clone(&client), &calls))?;

    let warmup = Duration::from_secs_f64(o.warmup);
    let half = Duration::from_secs_f64(o.seconds / 2.0);
    let mut points = Vec::new();
    let total = Instant::now();
    for &clients in &o.clients {
        let mut point = Point {
            clients,
            webhook: Sample::default(),
            bare: Sample::default(),
        };
        for server in [&webhook, &bare, &bare, &webhook] {
            let sample = rt.block_on(load::run(
                server.addr,
                Arc::clone(&client),
                clients,
                Arc::clone(&calls),
                warmup,
                half,
            ))?;
            eprintln!(
                "  {} x{clients}: {:.0} req/s ({} errors)",
                server.name,
                sample.rps(),
                sample.errors
            );
            if server.name == "webhook" {
                point.webhook.merge(sample);
            } else {
                point.bare.merge(sample);
            }
        }
        points.push(point);
    }
    drop(rt);
    drop(webhook);
    drop(bare);
    println!();
    report(&mut points, total.elapsed())
}

fn report(points: &mut [Point], took: Duration) -> anyhow::Result<()> {
    println!(
        "{:<8} {:>7} {:>10} {:>9} {:>9} {:>7}",
        "server", "clients", "req/s", "p50 µs", "p99 µs", "errors"
    );
    let mut kv: Vec<(String, String)> = Vec::new();
    let mut rows = Vec::new();
    for p in points.iter_mut() {
        let c = p.clients;
        let mut figures = |name: &str, s: &mut Sample| {
            let (rps, p50, p99) = (s.rps(), s.quantile_us(0.50), s.quantile_us(0.99));
            println!(
                "{name:<8} {c:>7} {rps:>10.0} {p50:>9.0} {p99:>9.0} {:>7}",
                s.errors
            );
            kv.push((format!("{name}_c{c}_rps"), format!("{rps:.0}")));
            kv.push((format!("{name}_c{c}_p50_us"), format!("{p50:.0}")));
            kv.push((format!("{name}_c{c}_p99_us"), format!("{p99:.0}")));
            kv.push((format!("{name}_c{c}_errors"), s.errors.to_string()));
            (rps, p99)
        };
        let (w_rps, w_p99) = figures("webhook", &mut p.webhook);
        let (b_rps, b_p99) = figures("bare", &mut p.bare);
        rows.push((c, w_rps / b_rps, w_p99 / b_p99, w_p99));
    }
    println!();
    println!("webhook / bare:");
    for &(c, rps_ratio, p99_ratio, _) in &rows {
        println!("  {c:>3} clients: throughput {rps_ratio:.2}, p99 {p99_ratio:.2}");
        kv.push((format!("ratio_c{c}_rps"), format!("{rps_ratio:.2}")));
        kv.push((format!("ratio_c{c}_p99"), format!("{p99_ratio:.2}")));
    }
    println!();
    println!("targets:");
    let verdict = |ok: bool| if ok { "PASS" } else { "MISS" };
    let mut all = true;
    for &(c, rps_ratio, p99_ratio, w_p99) in &rows {
        let ok = rps_ratio >= 0.8;
        all &= ok;
        println!(
            "  {} throughput ratio >= 0.80 at {c} clients: {rps_ratio:.2}",
            verdict(ok)
        );
        kv.push((format!("target_c{c}_rps_ratio"), verdict(ok).into()));
        if c == 1 {
            let ok = w_p99 <= 1000.0;
            all &= ok;
            println!(
                "  {} webhook p99 <= 1000 µs at 1 client: {w_p99:.0} µs",
                verdict(ok)
            );
            kv.push(("target_c1_p99".into(), verdict(ok).into()));
        }
        if c == 64 {
            let ok = p99_ratio <= 1.5;
            all &= ok;
            println!(
                "  {} p99 ratio <= 1.50 at 64 clients: {p99_ratio:.2}",
                verdict(ok)
            );
            kv.push(("target_c64_p99_ratio".into(), verdict(ok).into()));
        }
    }
    println!("load average after: {}", loadavg());
    println!("took {:.0} s", took.as_secs_f64());
    kv.push(("all_targets".into(), verdict(all).into()));
    let line: Vec<String> = kv.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("RESULT {}", line.join(" "));
    Ok(())
}
