//! `cargo xtask helm`: builds the `helm` binary the tests render `charts/cairn` with.
//!
//! Helm comes from the Go module proxy, like the control plane: `go build` of
//! `helm.sh/helm/v3/cmd/helm` in the scratch module `testbed/helm` (its go.mod and go.sum pin every
//! dependency), into a cache outside the repository, keyed by version:
//!
//! ```text
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/helm-<ver>/helm
//! ```
//!
//! About 2–3 minutes on 2 cores with a cold build cache (most of it compiling client-go and
//! friends). `tests/tests/install.rs` finds the binary there (or at `$CAIRN_HELM`).
//!
//! Commands:
//! - `cargo xtask helm` builds helm if it is missing (does nothing when present);
//! - `cargo xtask helm rebuild` builds it again;
//! - `cargo xtask helm pin` regenerates `testbed/helm/go.mod` and `go.sum` from [`HELM_VERSION`];
//! - `cargo xtask helm paths` prints where the binary is.
//!
//! Tools: `$CAIRN_GO` (else `/usr/local/go/bin/go`, else `go`).

use anyhow::{Context as _, Result, anyhow, bail};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The pinned Helm release (a v3: `helm template` and `helm lint` are all the tests need).
pub const HELM_VERSION: &str = "3.19.5";

const USAGE: &str = "usage: cargo xtask helm [rebuild|pin|paths]";

/// How often the build prints that it is still going.
const HEARTBEAT: Duration = Duration::from_secs(20);

pub fn run(args: &[String]) -> Result<()> {
    let helm = Helm::load()?;
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] => helm.ensure(false),
        ["rebuild" | "--force"] => helm.ensure(true),
        ["pin"] => helm.pin(),
        ["paths"] => {
            println!("helm\t{}", helm.binary().display());
            println!("module\t{}", helm.module.display());
            Ok(())
        }
        ["-h" | "--help" | "help"] => {
            println!("{USAGE}");
            Ok(())
        }
        _ => bail!("unknown arguments {args:?}\n{USAGE}"),
    }
}

struct Helm {
    /// `testbed/helm` of the repository: the scratch module.
    module: PathBuf,
    /// `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`.
    cache: PathBuf,
    go: PathBuf,
}

impl Helm {
    fn load() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("xtask has no parent directory"))?
            .to_path_buf();
        let cache = cairn_tests::binaries::testbed_cache()?;
        let go = crate::testbed::go();
        Ok(Self {
            module: root.join("testbed/helm"),
            cache,
            go,
        })
    }

    fn dir(&self) -> PathBuf {
        self.cache.join(format!("helm-{HELM_VERSION}"))
    }

    fn binary(&self) -> PathBuf {
        self.dir().join("helm")
    }

    /// Builds helm unless a binary reporting [`HELM_VERSION`] is already there (or `force`).
    fn ensure(&self, force: bool) -> Result<()> {
        let gomod = self.module.join("go.mod");
        let text =
            fs::read_to_string(&gomod).with_context(|| format!("reading {}", gomod.display()))?;
        match required_version(&text, "helm.sh/helm/v3") {
            Some(v) if v == format!("v{HELM_VERSION}") => {}
            other => bail!(
                "{} requires helm.sh/helm/v3 {other:?}, not v{HELM_VERSION}: run `cargo xtask helm pin`",
                gomod.display()
            ),
        }
        if !force && self.verify().is_ok() {
            println!(
                "helm: v{HELM_VERSION} present at {}",
                self.binary().display()
            );
            return Ok(());
        }
        // `helm template` renders for this Kubernetes version (.Capabilities.KubeVersion), which
        // helm's Makefile derives from client-go; without it helm says v1.20.
        let client_go = required_version(&text, "k8s.io/client-go")
            .ok_or_else(|| anyhow!("{} requires no k8s.io/client-go", gomod.display()))?;
        let minor = client_go
            .strip_prefix("v0.")
            .and_then(|rest| rest.split('.').next())
            .ok_or_else(|| anyhow!("unexpected k8s.io/client-go version {client_go}"))?;
        let mut ldflags =
            format!("-s -w -X helm.sh/helm/v3/internal/version.version=v{HELM_VERSION}");
        for package in ["pkg/chartutil", "pkg/lint/rules"] {
            ldflags.push_str(&format!(
                " -X helm.sh/helm/v3/{package}.k8sVersionMajor=1 -X helm.sh/helm/v3/{package}.k8sVersionMinor={minor}"
            ));
        }
        self.build(&ldflags)?;
        self.verify()
    }

    /// `go build` into `helm-<ver>.partial/`, renamed to `helm-<ver>/` when complete, so an
    /// interrupted build never leaves a half-written binary where the tests look.
    fn build(&self, ldflags: &str) -> Result<()> {
        let started = Instant::now();
        let out = self.dir();
        let partial = PathBuf::from(format!("{}.partial", out.display()));
        if partial.exists() {
            fs::remove_dir_all(&partial)
                .with_context(|| format!("removing {}", partial.display()))?;
        }
        fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
        println!("helm: building v{HELM_VERSION} (2-3 minutes on a cold build cache)...");
        let mut child = self
            .go_command()
            .args(["build", "-v", "-trimpath", "-ldflags", ldflags, "-o"])
            .arg(partial.join("helm"))
            .arg("helm.sh/helm/v3/cmd/helm")
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", self.go.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let (tx, rx) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // `go build -v` prints each package it compiles (an import path); keep anything else.
        let mut compiled = 0usize;
        let mut messages = Vec::new();
        let mut last_report = Instant::now();
        loop {
            match rx.recv_timeout(Duration::from_secs(1)) {
                Ok(line) if !line.is_empty() && !line.contains(' ') => compiled += 1,
                Ok(line) if line.starts_with("go: downloading ") => {}
                Ok(line) => messages.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
            if last_report.elapsed() >= HEARTBEAT {
                last_report = Instant::now();
                println!(
                    "helm:   ... {}s so far, {compiled} packages compiled",
                    started.elapsed().as_secs()
                );
            }
        }
        let _ = reader.join();
        let status = child.wait().context("waiting for go build")?;
        if !status.success() {
            let tail = messages[messages.len().saturating_sub(60)..].join("\n");
            bail!(
                "go build of helm v{HELM_VERSION} failed ({status}) after {}s in {}\n{tail}",
                started.elapsed().as_secs(),
                self.module.display()
            );
        }
        for m in &messages {
            println!("helm:   {m}");
        }
        if out.exists() {
            fs::remove_dir_all(&out).with_context(|| format!("removing old {}", out.display()))?;
        }
        fs::rename(&partial, &out)
            .with_context(|| format!("moving {} to {}", partial.display(), out.display()))?;
        println!(
            "helm: built v{HELM_VERSION} in {}s ({compiled} packages compiled): {}",
            started.elapsed().as_secs(),
            self.binary().display()
        );
        Ok(())
    }

    /// Checks that the binary runs and reports [`HELM_VERSION`].
    fn verify(&self) -> Result<()> {
        let output = Command::new(self.binary())
            .args(["version", "--short"])
            .env("HELM_CONFIG_HOME", std::env::temp_dir())
            .output()
            .with_context(|| format!("running {}", self.binary().display()))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() || !stdout.starts_with(&format!("v{HELM_VERSION}")) {
            bail!(
                "{} version --short says {:?} ({}), expected v{HELM_VERSION}",
                self.binary().display(),
                stdout.trim(),
                output.status
            );
        }
        Ok(())
    }

    /// Writes `testbed/helm/go.mod` for [`HELM_VERSION`] and lets `go mod tidy` pin the rest.
    fn pin(&self) -> Result<()> {
        let gomod = format!(
            "// Scratch module that builds helm, to check that charts/cairn renders what manifests/ holds.\n\
             // Generated by `cargo xtask helm pin` from HELM_VERSION in xtask/src/helm.rs; do not edit by hand.\n\
             module cairn.invalid/testbed/helm\n\n\
             go 1.24.0\n\n\
             tool helm.sh/helm/v3/cmd/helm\n\n\
             require helm.sh/helm/v3 v{HELM_VERSION}\n"
        );
        fs::create_dir_all(&self.module)
            .with_context(|| format!("creating {}", self.module.display()))?;
        let path = self.module.join("go.mod");
        fs::write(&path, gomod).with_context(|| format!("writing {}", path.display()))?;
        let _ = fs::remove_file(self.module.join("go.sum"));
        let status = self
            .go_command()
            .args(["mod", "tidy"])
            .status()
            .with_context(|| format!("running {} mod tidy", self.go.display()))?;
        if !status.success() {
            bail!("go mod tidy in {} failed ({status})", self.module.display());
        }
        println!("helm: pinned v{HELM_VERSION} in {}", path.display());
        Ok(())
    }

    /// A `go` command in the scratch module with the environment of every testbed build.
    fn go_command(&self) -> Command {
        let mut cmd = Command::new(&self.go);
        cmd.current_dir(&self.module)
            .env("CGO_ENABLED", "0")
            .env("GOTOOLCHAIN", "local")
            .env("GOFLAGS", "-mod=mod -buildvcs=false");
        cmd
    }
}

/// The version go.mod `text` requires of `module` (in a `require` line or block).
fn required_version(text: &str, module: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("require ").unwrap_or(line);
        let mut words = line.split_whitespace();
        (words.next()? == module).then(|| words.next().map(str::to_string))?
    })
}

#[cfg(test)]
mod tests {
    use super::required_version;

    #[test]
    fn reads_required_versions() {
        let gomod = "module x\n\nrequire helm.sh/helm/v3 v3.19.5\n\nrequire (\n\tk8s.io/client-go v0.34.2 // indirect\n)\n";
        assert_eq!(
            required_version(gomod, "helm.sh/helm/v3").as_deref(),
            Some("v3.19.5")
        );
        assert_eq!(
            required_version(gomod, "k8s.io/client-go").as_deref(),
            Some("v0.34.2")
        );
        assert_eq!(required_version(gomod, "k8s.io/api"), None);
    }
}
