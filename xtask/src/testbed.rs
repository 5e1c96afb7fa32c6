//! `cargo xtask testbed`: builds the test control plane (etcd, kube-apiserver, kubectl) and the
//! node's Kubernetes binaries (kubelet, kube-controller-manager, kube-scheduler) from source.
//!
//! The versions are pinned in `testbed/versions.env` (also read by the test harness in `tests/src`).
//! The binaries are built with the Go toolchain from the Go module proxy, from two scratch Go modules
//! checked in under `testbed/k8s` and `testbed/etcd`, into a cache outside the repository keyed by
//! version:
//!
//! ```text
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/k8s-<ver>/{kube-apiserver,kubectl,kubelet,
//!     kube-controller-manager,kube-scheduler}
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/etcd-<ver>/etcd
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/pause-<go.mod+main.go hash>/pause
//! ```
//!
//! The node also needs Debian's `containerd`, `runc` and `containernetworking-plugins` (CNI
//! plugins in `/usr/lib/cni`): they are installed with `apt-get` when missing (as root, else with
//! `sudo -n`), and a static `pause` program (the Pod sandbox's process, `testbed/pause`) is built,
//! since nothing can be pulled.
//!
//! Commands:
//! - `cargo xtask testbed` builds what is missing (does nothing when the binaries exist);
//! - `cargo xtask testbed rebuild` builds again even if the binaries exist;
//! - `cargo xtask testbed pin` regenerates `testbed/*/go.mod` and `go.sum` from `versions.env`
//!   (the Kubernetes staging modules are read from the `replace` block of the `k8s.io/kubernetes`
//!   go.mod the proxy serves, and replaced with their published `v0.<minor>.<patch>`);
//! - `cargo xtask testbed paths` prints where the binaries are.
//!
//! The Go toolchain is `$CAIRN_GO`, else `/usr/local/go/bin/go`, else `go` on the `PATH`.

use anyhow::{Context as _, Result, anyhow, bail};
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binaries of the `k8s.io/kubernetes` module the testbed builds: (command package, binary).
const K8S_COMMANDS: [(&str, &str); 5] = [
    ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
    ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
    ("k8s.io/kubernetes/cmd/kubelet", "kubelet"),
    (
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "kube-controller-manager",
    ),
    ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
];

const USAGE: &str = "usage: cargo xtask testbed [rebuild|pin|paths]";

/// How often a long build prints that it is still going.
const HEARTBEAT: Duration = Duration::from_secs(20);

pub fn run(args: &[String]) -> Result<()> {
    let tb = Testbed::load()?;
    match args.first().map(String::as_str) {
        None => tb.ensure_built(false),
        Some("rebuild" | "--force") => tb.ensure_built(true),
        Some("pin") => tb.pin(),
        Some("paths") => {
            for (_, name) in K8S_COMMANDS {
                println!("{}", tb.k8s_dir().join(name).display());
            }
            println!("{}", tb.etcd().display());
            Ok(())
        }
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => bail!("unknown testbed command `{other}`\n{USAGE}"),
    }
}

/// The pinned versions, the repository and the cache.
struct Testbed {
    /// The repository root.
    root: PathBuf,
    /// Kubernetes version without the leading `v`, e.g. `1.34.12`.
    k8s: String,
    /// etcd version without the leading `v`, e.g. `3.6.16`.
    etcd: String,
    /// `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`.
    cache: PathBuf,
    go: PathBuf,
}

impl Testbed {
    fn load() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("xtask has no parent directory"))?
            .to_path_buf();
        let versions_file = root.join("testbed/versions.env");
        let text = fs::read_to_string(&versions_file)
            .with_context(|| format!("reading {}", versions_file.display()))?;
        let versions = parse_env(&text);
        let get = |key: &str| {
            versions
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow!("{} has no {key}=...", versions_file.display()))
        };
        let k8s = get("K8S_VERSION")?;
        let etcd = get("ETCD_VERSION")?;
        let cache = cairn_tests::binaries::testbed_cache()?;
        let go = crate::testbed::go();
        Ok(Self {
            root,
            k8s,
            etcd,
            cache,
            go,
        })
    }

    fn k8s_dir(&self) -> PathBuf {
        self.cache.join(format!("k8s-{}", self.k8s))
    }
    fn etcd_dir(&self) -> PathBuf {
        self.cache.join(format!("etcd-{}", self.etcd))
    }
    fn etcd(&self) -> PathBuf {
        self.etcd_dir().join("etcd")
    }
    fn k8s_module(&self) -> PathBuf {
        self.root.join("testbed/k8s")
    }
    fn etcd_module(&self) -> PathBuf {
        self.root.join("testbed/etcd")
    }

    /// Builds the binaries that are missing (all of them with `force`).
    fn ensure_built(&self, force: bool) -> Result<()> {
        let started = Instant::now();
        fs::create_dir_all(&self.cache)
            .with_context(|| format!("creating the cache {}", self.cache.display()))?;
        // Two concurrent set-ups (say, two test runs) must not build into the same place.
        let lock_path = self.cache.join(".lock");
        let lock = fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            println!(
                "testbed: waiting for another `cargo xtask testbed` ({})",
                lock_path.display()
            );
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
        }

        node_packages()?;
        self.ensure_pause(force)?;

        let k8s_ready = K8S_COMMANDS
            .iter()
            .all(|(_, name)| self.k8s_dir().join(name).is_file());
        let etcd_ready = self.etcd().is_file();
        if k8s_ready && etcd_ready && !force {
            println!(
                "testbed: Kubernetes v{} and etcd v{} are already built in {} (nothing to do, {:.1}s)",
                self.k8s,
                self.etcd,
                self.cache.display(),
                started.elapsed().as_secs_f64()
            );
            return Ok(());
        }

        let go_version = self.go_version()?;
        println!(
            "testbed: building with {go_version} into {}",
            self.cache.display()
        );
        self.check_pins()?;

        if force || !k8s_ready {
            self.build_k8s()?;
        }
        if force || !etcd_ready {
            self.build_etcd()?;
        }
        self.verify()?;
        println!(
            "testbed: ready in {} (Kubernetes v{}, etcd v{})",
            human(started.elapsed()),
            self.k8s,
            self.etcd
        );
        Ok(())
    }

    /// Builds the static pause program when its cache entry (keyed by the source's hash) is
    /// missing.
    fn ensure_pause(&self, force: bool) -> Result<()> {
        let out = cairn_tests::binaries::pause_dir()?;
        if out.join("pause").is_file() && !force {
            return Ok(());
        }
        self.go_build(
            "build the pause program",
            &self.root.join("testbed/pause"),
            &out,
            &[("cairn.invalid/testbed/pause", "pause")],
            "-s -w",
        )
    }

    fn go_version(&self) -> Result<String> {
        let out = Command::new(&self.go).arg("version").output().with_context(|| {
            format!(
                "step `find the Go toolchain`: cannot run `{} version`; install Go (1.25 or newer) \
                 in /usr/local/go or set CAIRN_GO to the go binary",
                self.go.display()
            )
        })?;
        if !out.status.success() {
            bail!(
                "step `find the Go toolchain`: `{} version` failed: {}",
                self.go.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// The checked-in go.mod files must require the versions in versions.env.
    fn check_pins(&self) -> Result<()> {
        let checks = [
            (
                self.k8s_module(),
                "k8s.io/kubernetes",
                format!("v{}", self.k8s),
            ),
            (
                self.etcd_module(),
                "go.etcd.io/etcd/server/v3",
                format!("v{}", self.etcd),
            ),
        ];
        for (dir, module, version) in checks {
            let gomod = dir.join("go.mod");
            let text = fs::read_to_string(&gomod)
                .with_context(|| format!("step `check pins`: reading {}", gomod.display()))?;
            let parsed = GoMod::parse(&text);
            match parsed.require.get(module) {
                Some(v) if *v == version => {}
                other => bail!(
                    "step `check pins`: {} requires {module} {}, but testbed/versions.env says \
                     {version}; run `cargo xtask testbed pin`",
                    gomod.display(),
                    other.map(String::as_str).unwrap_or("nothing")
                ),
            }
        }
        Ok(())
    }

    fn build_k8s(&self) -> Result<()> {
        let (major, minor) = major_minor(&self.k8s)?;
        let mut ldflags = String::from("-s -w");
        for pkg in [
            "k8s.io/component-base/version",
            "k8s.io/client-go/pkg/version",
        ] {
            ldflags.push_str(&format!(
                " -X {pkg}.gitVersion=v{v} -X {pkg}.gitMajor={major} -X {pkg}.gitMinor={minor} \
                 -X {pkg}.gitTreeState=clean",
                v = self.k8s
            ));
        }
        self.go_build(
            &format!("build Kubernetes v{} (control plane and node)", self.k8s),
            &self.k8s_module(),
            &self.k8s_dir(),
            &K8S_COMMANDS,
            &ldflags,
        )
    }

    fn build_etcd(&self) -> Result<()> {
        self.go_build(
            &format!("build etcd v{}", self.etcd),
            &self.etcd_module(),
            &self.etcd_dir(),
            &[("go.etcd.io/etcd/server/v3", "etcd")],
            "-s -w",
        )
    }

    /// Runs `go build` of `packages` (import path, binary name) in `module` into `out` (replaced
    /// as a whole, so a failed or interrupted build never leaves a half-filled `out`), printing
    /// progress.
    fn go_build(
        &self,
        step: &str,
        module: &Path,
        out: &Path,
        packages: &[(&str, &str)],
        ldflags: &str,
    ) -> Result<()> {
        let started = Instant::now();
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("step `{step}`: removing {}", partial.display()))?;
        }
        fs::create_dir_all(&partial)
            .with_context(|| format!("step `{step}`: creating {}", partial.display()))?;
        println!("testbed: {step} (this takes several minutes on a cold cache)...");

        // One package: `-o dir/name`. Several: `-o dir/`, which names each binary after the last
        // element of its import path (checked below).
        let output = match packages {
            [(_, name)] => partial.join(name).display().to_string(),
            _ => format!("{}/", partial.display()),
        };
        let import_paths: Vec<&str> = packages.iter().map(|(path, _)| *path).collect();
        let mut cmd = self.go_command(module);
        cmd.args(["build", "-v", "-trimpath", "-ldflags", ldflags, "-o"])
            .arg(output)
            .args(&import_paths)
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .with_context(|| format!("step `{step}`: starting {}", self.go.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("step `{step}`: no stderr pipe"))?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // `go build -v` prints each package it compiles; anything else is a message to keep.
        let mut compiled = 0usize;
        let mut downloaded = 0usize;
        let mut messages: Vec<String> = Vec::new();
        let mut last_report = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) => {
                    if line.starts_with("go: downloading ") {
                        downloaded += 1;
                    } else if is_package_line(&line) {
                        compiled += 1;
                    } else {
                        messages.push(line);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_report.elapsed() >= HEARTBEAT {
                last_report = Instant::now();
                println!(
                    "testbed:   ... {} so far: {compiled} packages compiled, {downloaded} modules \
                     downloaded",
                    human(started.elapsed())
                );
            }
        }
        let _ = reader.join();
        let status = child
            .wait()
            .with_context(|| format!("step `{step}`: waiting for go build"))?;
        if !status.success() {
            let tail: Vec<&str> = messages
                .iter()
                .rev()
                .take(60)
                .rev()
                .map(String::as_str)
                .collect();
            bail!(
                "step `{step}` failed ({status}) after {}: `go build {}` in {}\n{}",
                human(started.elapsed()),
                import_paths.join(" "),
                module.display(),
                tail.join("\n")
            );
        }
        for m in &messages {
            println!("testbed:   {m}");
        }
        for (path, name) in packages {
            if !partial.join(name).is_file() {
                bail!(
                    "step `{step}`: go build of {path} produced no {}",
                    partial.join(name).display()
                );
            }
        }
        if out.exists() {
            fs::remove_dir_all(out)
                .with_context(|| format!("step `{step}`: removing old {}", out.display()))?;
        }
        fs::rename(&partial, out).with_context(|| {
            format!(
                "step `{step}`: moving {} to {}",
                partial.display(),
                out.display()
            )
        })?;
        println!(
            "testbed: {step}: done in {} ({compiled} packages compiled)",
            human(started.elapsed())
        );
        Ok(())
    }

    /// A `go` command in `dir` with the environment every testbed step uses.
    fn go_command(&self, dir: &Path) -> Command {
        let mut cmd = Command::new(&self.go);
        cmd.current_dir(dir)
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod -buildvcs=false");
        cmd
    }

    /// Checks that the binaries run and report the pinned versions.
    fn verify(&self) -> Result<()> {
        let mut checks: Vec<_> = K8S_COMMANDS
            .iter()
            .map(|(_, name)| {
                let args = if *name == "kubectl" {
                    vec!["version", "--client"]
                } else {
                    vec!["--version"]
                };
                (self.k8s_dir().join(name), args, format!("v{}", self.k8s))
            })
            .collect();
        checks.push((
            self.etcd(),
            vec!["--version"],
            format!("etcd Version: {}", self.etcd),
        ));
        for (bin, args, expected) in checks {
            let out = Command::new(&bin)
                .args(&args)
                .output()
                .with_context(|| format!("step `verify`: running {}", bin.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() || !stdout.contains(&expected) {
                bail!(
                    "step `verify`: `{} {}` did not report `{expected}`: {}{}",
                    bin.display(),
                    args.join(" "),
                    stdout.trim(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            println!(
                "testbed: {} -> {}",
                bin.display(),
                stdout.lines().next().unwrap_or_default()
            );
        }
        Ok(())
    }

    /// Regenerates the scratch modules from versions.env and the go.mod files the proxy serves.
    fn pin(&self) -> Result<()> {
        let (_, minor) = major_minor(&self.k8s)?;
        let patch = self
            .k8s
            .rsplit('.')
            .next()
            .ok_or_else(|| anyhow!("bad K8S_VERSION {}", self.k8s))?;
        let staging_version = format!("v0.{minor}.{patch}");

        let upstream = self.download_gomod("k8s.io/kubernetes", &format!("v{}", self.k8s))?;
        // Every staging module k8s.io/kubernetes requires (at v0.0.0, replaced by ./staging/...)
        // gets its published v0.<minor>.<patch>.
        let staging: BTreeSet<&String> = upstream
            .replace
            .iter()
            .filter(|(module, target)| {
                target.starts_with("./staging/") && upstream.require.contains_key(*module)
            })
            .map(|(module, _)| module)
            .collect();
        if staging.is_empty() {
            bail!("step `pin`: found no staging modules in the k8s.io/kubernetes go.mod");
        }
        let mut gomod = String::new();
        gomod.push_str(
            "// Scratch module that builds the Kubernetes binaries of the testbed (control plane, node).\n\
             // Generated by `cargo xtask testbed pin` from testbed/versions.env; do not edit by hand.\n\
             module cairn.invalid/testbed/k8s\n\n",
        );
        gomod.push_str(&format!("go {}\n\n", upstream.go));
        for godebug in &upstream.godebug {
            gomod.push_str(&format!("godebug {godebug}\n"));
        }
        gomod.push_str("\ntool (\n");
        for (package, _) in K8S_COMMANDS {
            gomod.push_str(&format!("\t{package}\n"));
        }
        gomod.push_str(")\n\n");
        gomod.push_str(&format!(
            "require k8s.io/kubernetes v{}\n\nreplace (\n",
            self.k8s
        ));
        for module in &staging {
            gomod.push_str(&format!("\t{module} => {module} {staging_version}\n"));
        }
        gomod.push_str(")\n");
        self.write_module(&self.k8s_module(), &gomod)?;

        let upstream =
            self.download_gomod("go.etcd.io/etcd/server/v3", &format!("v{}", self.etcd))?;
        let gomod = format!(
            "// Scratch module that builds etcd for the test control plane.\n\
             // Generated by `cargo xtask testbed pin` from testbed/versions.env; do not edit by hand.\n\
             module cairn.invalid/testbed/etcd\n\n\
             go {}\n\n\
             tool go.etcd.io/etcd/server/v3\n\n\
             require go.etcd.io/etcd/server/v3 v{}\n",
            upstream.go, self.etcd
        );
        self.write_module(&self.etcd_module(), &gomod)?;
        println!(
            "testbed: pinned Kubernetes v{} ({} staging modules at {staging_version}) and etcd v{}",
            self.k8s,
            staging.len(),
            self.etcd
        );
        Ok(())
    }

    /// `go mod download -json module@version`, then parses the go.mod it downloaded.
    fn download_gomod(&self, module: &str, version: &str) -> Result<GoMod> {
        let step = format!("pin: download {module}@{version}");
        println!("testbed: {step}");
        let out = self
            .go_command(&std::env::temp_dir())
            .args(["mod", "download", "-json"])
            .arg(format!("{module}@{version}"))
            .output()
            .with_context(|| format!("step `{step}`: running go"))?;
        let json = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "step `{step}` failed: {}{}",
                json.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let path = json_string_field(&json, "GoMod").ok_or_else(|| {
            anyhow!("step `{step}`: no GoMod in `go mod download` output: {json}")
        })?;
        let text =
            fs::read_to_string(&path).with_context(|| format!("step `{step}`: reading {path}"))?;
        Ok(GoMod::parse(&text))
    }

    /// Writes go.mod into `dir`, then lets `go mod tidy` fill in the rest and go.sum.
    fn write_module(&self, dir: &Path, gomod: &str) -> Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        fs::write(dir.join("go.mod"), gomod)
            .with_context(|| format!("writing {}/go.mod", dir.display()))?;
        let gosum = dir.join("go.sum");
        if gosum.exists() {
            fs::remove_file(&gosum).with_context(|| format!("removing {}", gosum.display()))?;
        }
        let step = format!("pin: go mod tidy in {}", dir.display());
        println!("testbed: {step}");
        let status = self
            .go_command(dir)
            .args(["mod", "tidy"])
            .status()
            .with_context(|| format!("step `{step}`: running go"))?;
        if !status.success() {
            bail!("step `{step}` failed ({status})");
        }
        Ok(())
    }
}

/// Debian packages of the node: (package, a file it installs).
const NODE_PACKAGES: [(&str, &str); 3] = [
    ("containerd", "/usr/bin/containerd"),
    ("runc", "/usr/sbin/runc"),
    ("containernetworking-plugins", "/usr/lib/cni/bridge"),
];

/// Installs the node's Debian packages that are missing (`apt-get update` first when the
/// package lists are empty or stale enough that the install fails).
fn node_packages() -> Result<()> {
    let missing: Vec<&str> = NODE_PACKAGES
        .iter()
        .filter(|(_, file)| !Path::new(file).exists())
        .map(|(package, _)| *package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let step = format!("install the node's packages ({})", missing.join(" "));
    println!("testbed: {step} with apt-get");
    // SAFETY: plain syscall without arguments.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = |args: &[&str]| -> Result<bool> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut sudo = Command::new("sudo");
            sudo.args(["-n", "apt-get"]);
            sudo
        };
        cmd.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        let status = cmd
            .status()
            .with_context(|| format!("step `{step}`: running apt-get"))?;
        Ok(status.success())
    };
    let mut install = vec!["install", "-y", "--no-install-recommends"];
    install.extend(&missing);
    // A failed install is retried once after `apt-get update` (stale or empty package lists).
    let installed = apt(&install)? || (apt(&["update"])? && apt(&install)?);
    if !installed {
        bail!(
            "step `{step}` failed: run `apt-get install {}` as root (the node runs containers, \
             which needs root anyway)",
            missing.join(" ")
        );
    }
    Ok(())
}

/// The parts of a go.mod file the testbed needs.
#[derive(Debug, Default)]
struct GoMod {
    go: String,
    godebug: Vec<String>,
    require: BTreeMap<String, String>,
    replace: BTreeMap<String, String>,
}

impl GoMod {
    fn parse(text: &str) -> Self {
        let mut gomod = GoMod::default();
        let mut block: Option<String> = None;
        for raw in text.lines() {
            let line = raw.split("//").next().unwrap_or_default().trim();
            if line.is_empty() {
                continue;
            }
            let (directive, rest) = match &block {
                Some(_) if line == ")" => {
                    block = None;
                    continue;
                }
                Some(kind) => (kind.clone(), line.to_string()),
                None => {
                    let (directive, rest) =
                        line.split_once(char::is_whitespace).unwrap_or((line, ""));
                    let rest = rest.trim();
                    if rest == "(" {
                        block = Some(directive.to_string());
                        continue;
                    }
                    (directive.to_string(), rest.to_string())
                }
            };
            match directive.as_str() {
                "go" => gomod.go = rest,
                "godebug" => gomod.godebug.push(rest),
                "require" => {
                    let mut words = rest.split_whitespace();
                    if let (Some(module), Some(version)) = (words.next(), words.next()) {
                        gomod
                            .require
                            .insert(module.to_string(), version.to_string());
                    }
                }
                "replace" => {
                    if let Some((from, to)) = rest.split_once("=>") {
                        let module = from.split_whitespace().next().unwrap_or_default();
                        gomod
                            .replace
                            .insert(module.to_string(), to.trim().to_string());
                    }
                }
                _ => {}
            }
        }
        gomod
    }
}

/// KEY=VALUE lines; `#` starts a comment line.
fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `1.34.12` -> (`1`, `34`).
fn major_minor(version: &str) -> Result<(&str, &str)> {
    let mut parts = version.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(major), Some(minor), Some(_)) => Ok((major, minor)),
        _ => bail!("version `{version}` is not MAJOR.MINOR.PATCH"),
    }
}

/// A line of `go build -v` naming a package (an import path, no spaces).
fn is_package_line(line: &str) -> bool {
    !line.is_empty() && !line.contains(char::is_whitespace) && !line.contains(':')
}

/// The string value of `"key": "..."` in `go mod download -json` output (no escapes in paths).
fn json_string_field(json: &str, key: &str) -> Option<String> {
    let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let rest = json[start..].trim_start().strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(rest[..end].to_string())
}

fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// The Go toolchain: `$CAIRN_GO`, else `/usr/local/go/bin/go`, else `go` on the PATH.
pub fn go() -> PathBuf {
    match std::env::var_os("CAIRN_GO") {
        Some(go) if !go.is_empty() => PathBuf::from(go),
        _ if Path::new("/usr/local/go/bin/go").is_file() => PathBuf::from("/usr/local/go/bin/go"),
        _ => PathBuf::from("go"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gomod_blocks_and_single_lines() {
        let gomod = GoMod::parse(
            "module k8s.io/kubernetes\n\ngo 1.25.0\n\ngodebug default=go1.24\n\n\
             require (\n\tk8s.io/api v0.0.0\n\tgithub.com/x/y v1.2.3 // indirect\n)\n\
             require k8s.io/kubectl v0.0.0\n\
             replace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n\
             replace k8s.io/kubectl => ./staging/src/k8s.io/kubectl\n",
        );
        assert_eq!(gomod.go, "1.25.0");
        assert_eq!(gomod.godebug, vec!["default=go1.24"]);
        assert_eq!(gomod.require["k8s.io/api"], "v0.0.0");
        assert_eq!(gomod.require["github.com/x/y"], "v1.2.3");
        assert_eq!(gomod.require["k8s.io/kubectl"], "v0.0.0");
        assert_eq!(gomod.replace["k8s.io/api"], "./staging/src/k8s.io/api");
        assert_eq!(
            gomod.replace["k8s.io/kubectl"],
            "./staging/src/k8s.io/kubectl"
        );
    }

    #[test]
    fn reads_versions_and_json_fields() {
        let env = parse_env("# c\nK8S_VERSION=1.34.12\n\nETCD_VERSION = 3.6.16\n");
        assert_eq!(env["K8S_VERSION"], "1.34.12");
        assert_eq!(env["ETCD_VERSION"], "3.6.16");
        assert_eq!(major_minor("1.34.12").ok(), Some(("1", "34")));
        let json = "{\n\t\"Path\": \"k8s.io/kubernetes\",\n\t\"GoMod\": \"/x/v1.34.12.mod\",\n}";
        assert_eq!(
            json_string_field(json, "GoMod").as_deref(),
            Some("/x/v1.34.12.mod")
        );
        assert!(is_package_line("k8s.io/api/core/v1"));
        assert!(!is_package_line("main.go:1:2: undefined: x"));
    }
}
