//! `cargo xtask search-testbed`: builds and installs the search testbed: the search servers, the S3
//! server and the baseline tools the benchmarks compare against.
//!
//! The versions are pinned in `testbed/search-versions.env` (also read by the test harness in
//! `tests/src/opensearch.rs` and `tests/src/s3.rs`). Everything goes into a cache outside the
//! repository, keyed by version:
//!
//! ```text
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/opensearch-<ver>/{lib/*.jar,classes/}
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/elasticsearch-<ver>/{lib/*.jar,classes/}
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/minio-<ver>/minio
//! ${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/elasticdump-<ver>/node_modules/.bin/{elasticdump,multielasticdump}
//! restic: Debian's package (`apt-get install restic`), on the PATH
//! ```
//!
//! - OpenSearch and Elasticsearch: the server jars and the HTTP transport module from Maven Central
//!   (`mvn dependency:copy-dependencies` with `testbed/opensearch/pom.xml` and
//!   `testbed/opensearch/es7/pom.xml`; Maven keeps the jars in `~/.m2` too), and our launcher
//!   compiled with `javac`. Started by the harness as `java -cp 'lib/*:classes' <launcher> ...`.
//! - MinIO: `go build` of the scratch module `testbed/s3` (Go module proxy).
//! - elasticdump: `npm install` into the cache.
//! - restic: checked on the PATH, else installed with `apt-get` (as root).
//!
//! Commands:
//! - `cargo xtask search-testbed [COMPONENT...]` builds what is missing (does nothing when present);
//!   components: `opensearch`, `elasticsearch`, `minio`, `elasticdump`, `restic` (default: all);
//! - `cargo xtask search-testbed rebuild [COMPONENT...]` builds again even if present;
//! - `cargo xtask search-testbed pin` regenerates `testbed/s3/go.mod` and `go.sum` from
//!   `MINIO_VERSION`;
//! - `cargo xtask search-testbed paths` prints where everything is.
//!
//! Tools: `$CAIRN_MVN` (else `mvn`), `$CAIRN_JAVA` (else `$JAVA_HOME/bin/java`, else `java`; `javac`
//! next to it), `$CAIRN_GO` (else `/usr/local/go/bin/go`, else `go`), `npm`, `apt-get`.

use anyhow::{Context as _, Result, anyhow, bail};
use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const USAGE: &str = "usage: cargo xtask search-testbed [rebuild] [opensearch|elasticsearch|minio|elasticdump|restic]...\n\
                     \x20      cargo xtask search-testbed pin|paths";

/// How often a long step prints that it is still going.
const HEARTBEAT: Duration = Duration::from_secs(20);

const COMPONENTS: [&str; 5] = [
    "opensearch",
    "elasticsearch",
    "minio",
    "elasticdump",
    "restic",
];

pub fn run(args: &[String]) -> Result<()> {
    let tb = SearchTestbed::load()?;
    let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.first().copied() {
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            return Ok(());
        }
        Some("pin") => return tb.pin(),
        Some("paths") => {
            for (name, path) in tb.paths() {
                println!("{name}\t{}", path.display());
            }
            return Ok(());
        }
        _ => {}
    }
    let force = matches!(args.first(), Some(&("rebuild" | "--force")));
    if force {
        args.remove(0);
    }
    for arg in &args {
        if !COMPONENTS.contains(arg) {
            bail!("unknown search-testbed component or command `{arg}`\n{USAGE}");
        }
    }
    let selected: Vec<&str> = if args.is_empty() {
        COMPONENTS.to_vec()
    } else {
        args
    };
    tb.ensure(&selected, force)
}

/// The pinned versions, the repository and the cache.
struct SearchTestbed {
    /// The repository root.
    root: PathBuf,
    opensearch: String,
    elasticsearch: String,
    minio: String,
    /// The current elasticdump, and the one Stash's Elasticsearch addon ships.
    elasticdumps: [String; 2],
    restic: String,
    /// `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed`.
    cache: PathBuf,
}

/// A Java search server: where its pom and launcher are, and what it reports.
struct JavaServer {
    /// `opensearch` or `elasticsearch`.
    name: &'static str,
    /// `OpenSearch` or `Elasticsearch`, as the launcher's `--version` prints it.
    display: &'static str,
    version: String,
    /// The Maven property the pom reads the version from.
    version_property: &'static str,
    /// The pom's directory, relative to the repository.
    module: &'static str,
    /// The launcher source, relative to `module`.
    launcher_source: &'static str,
    launcher_class: &'static str,
}

impl SearchTestbed {
    fn load() -> Result<Self> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or_else(|| anyhow!("xtask has no parent directory"))?
            .to_path_buf();
        let versions_file = root.join("testbed/search-versions.env");
        let text = fs::read_to_string(&versions_file)
            .with_context(|| format!("reading {}", versions_file.display()))?;
        let versions = parse_env(&text);
        let get = |key: &str| {
            versions
                .get(key)
                .cloned()
                .ok_or_else(|| anyhow!("{} has no {key}=...", versions_file.display()))
        };
        let cache = cairn_tests::binaries::testbed_cache()?;
        Ok(Self {
            opensearch: get("OPENSEARCH_VERSION")?,
            elasticsearch: get("ELASTICSEARCH_VERSION")?,
            minio: get("MINIO_VERSION")?,
            elasticdumps: [
                get("ELASTICDUMP_VERSION")?,
                get("ELASTICDUMP_STASH_VERSION")?,
            ],
            restic: get("RESTIC_VERSION")?,
            root,
            cache,
        })
    }

    fn java_servers(&self) -> [JavaServer; 2] {
        [
            JavaServer {
                name: "opensearch",
                display: "OpenSearch",
                version: self.opensearch.clone(),
                version_property: "opensearch.version",
                module: "testbed/opensearch",
                launcher_source: "src/main/java/cairn/testbed/Launcher.java",
                launcher_class: "cairn.testbed.Launcher",
            },
            JavaServer {
                name: "elasticsearch",
                display: "Elasticsearch",
                version: self.elasticsearch.clone(),
                version_property: "elasticsearch.version",
                module: "testbed/opensearch/es7",
                launcher_source: "src/main/java/cairn/testbed/es7/Launcher.java",
                launcher_class: "cairn.testbed.es7.Launcher",
            },
        ]
    }

    fn java_dir(&self, server: &JavaServer) -> PathBuf {
        self.cache
            .join(format!("{}-{}", server.name, server.version))
    }
    fn minio_dir(&self) -> PathBuf {
        self.cache.join(format!("minio-{}", self.minio))
    }
    fn minio(&self) -> PathBuf {
        self.minio_dir().join("minio")
    }
    fn elasticdump_dir(&self, version: &str) -> PathBuf {
        self.cache.join(format!("elasticdump-{version}"))
    }
    fn elasticdump(&self, version: &str) -> PathBuf {
        self.elasticdump_dir(version)
            .join("node_modules/.bin/elasticdump")
    }
    fn s3_module(&self) -> PathBuf {
        self.root.join("testbed/s3")
    }

    fn paths(&self) -> Vec<(String, PathBuf)> {
        let mut paths: Vec<(String, PathBuf)> = self
            .java_servers()
            .iter()
            .map(|s| (s.name.to_string(), self.java_dir(s)))
            .collect();
        paths.push(("minio".into(), self.minio()));
        for version in &self.elasticdumps {
            paths.push((format!("elasticdump-{version}"), self.elasticdump(version)));
            paths.push((
                format!("multielasticdump-{version}"),
                self.elasticdump_dir(version)
                    .join("node_modules/.bin/multielasticdump"),
            ));
        }
        paths.push((
            "restic".into(),
            which("restic").unwrap_or_else(|| PathBuf::from("restic (not installed)")),
        ));
        paths
    }

    fn ensure(&self, selected: &[&str], force: bool) -> Result<()> {
        let started = Instant::now();
        fs::create_dir_all(&self.cache)
            .with_context(|| format!("creating the cache {}", self.cache.display()))?;
        // Two concurrent set-ups must not build into the same place (its own lock: building the
        // control plane at the same time is fine).
        let lock_path = self.cache.join(".search-lock");
        let lock = fs::File::create(&lock_path)
            .with_context(|| format!("creating {}", lock_path.display()))?;
        if lock.try_lock().is_err() {
            println!(
                "search-testbed: waiting for another `cargo xtask search-testbed` ({})",
                lock_path.display()
            );
            lock.lock()
                .with_context(|| format!("locking {}", lock_path.display()))?;
        }
        let mut built = Vec::new();
        for server in self.java_servers() {
            if selected.contains(&server.name) && self.ensure_java_server(&server, force)? {
                built.push(server.name);
            }
        }
        if selected.contains(&"minio") && self.ensure_minio(force)? {
            built.push("minio");
        }
        if selected.contains(&"elasticdump") {
            for version in &self.elasticdumps {
                if self.ensure_elasticdump(version, force)? {
                    built.push("elasticdump");
                }
            }
        }
        if selected.contains(&"restic") && self.ensure_restic()? {
            built.push("restic");
        }
        if built.is_empty() {
            println!(
                "search-testbed: {} already in {} (nothing to do, {:.1}s)",
                selected.join(", "),
                self.cache.display(),
                started.elapsed().as_secs_f64()
            );
        } else {
            println!(
                "search-testbed: ready in {} (built/installed: {})",
                human(started.elapsed()),
                built.join(", ")
            );
        }
        Ok(())
    }

    /// Fetches the jars with Maven and compiles the launcher. `Ok(true)` when it did something.
    fn ensure_java_server(&self, server: &JavaServer, force: bool) -> Result<bool> {
        let dir = self.java_dir(server);
        let module = self.root.join(server.module);
        let stamp = source_stamp(&module, server.launcher_source)?;
        let built_stamp = fs::read_to_string(dir.join(STAMP_FILE)).unwrap_or_default();
        let ready = dir.join("lib").is_dir() && dir.join("classes").is_dir();
        if ready && built_stamp.trim() != stamp {
            println!(
                "search-testbed: the {} pom or launcher changed since the last build: rebuilding",
                server.display
            );
        } else if ready && !force {
            println!(
                "search-testbed: {} {} is present ({})",
                server.display,
                server.version,
                dir.display()
            );
            return Ok(false);
        }
        let started = Instant::now();
        let partial = fresh_partial(&dir)?;

        let step = format!(
            "fetch {} {} jars from Maven Central",
            server.display, server.version
        );
        let mut mvn = Command::new(env_or("CAIRN_MVN", "mvn"));
        mvn.current_dir(&module)
            .args(["-B", "-q", "-f", "pom.xml"])
            .arg(format!("-D{}={}", server.version_property, server.version))
            .args(["dependency:copy-dependencies", "-DincludeScope=runtime"])
            .arg(format!(
                "-DoutputDirectory={}",
                partial.join("lib").display()
            ));
        run_step(&step, mvn)?;

        let (java, javac) = java_tools();
        let step = format!("compile the {} launcher", server.display);
        let mut cmd = Command::new(&javac);
        cmd.args(["--release", "17", "-encoding", "UTF-8", "-d"])
            .arg(partial.join("classes"))
            .arg("-cp")
            .arg(format!("{}/*", partial.join("lib").display()))
            .arg(module.join(server.launcher_source));
        run_step(&step, cmd)?;

        let step = format!("verify the {} launcher", server.display);
        let out = Command::new(&java)
            .arg("-cp")
            .arg(format!(
                "{}/*:{}",
                partial.join("lib").display(),
                partial.join("classes").display()
            ))
            .args([server.launcher_class, "--version"])
            .output()
            .with_context(|| format!("step `{step}`: running {}", java.display()))?;
        let expected = format!("{} {}", server.display, server.version);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(&expected) {
            bail!(
                "step `{step}`: the launcher did not report `{expected}`: {}{}",
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        fs::write(partial.join(STAMP_FILE), format!("{stamp}\n"))
            .with_context(|| format!("step `{step}`: writing {STAMP_FILE}"))?;
        replace_dir(&partial, &dir)?;
        println!(
            "search-testbed: {expected} ready in {} ({})",
            human(started.elapsed()),
            dir.display()
        );
        Ok(true)
    }

    fn ensure_minio(&self, force: bool) -> Result<bool> {
        if self.minio().is_file() && !force {
            println!(
                "search-testbed: MinIO {} is present ({})",
                self.minio,
                self.minio().display()
            );
            return Ok(false);
        }
        self.check_minio_pin()?;
        let started = Instant::now();
        let partial = fresh_partial(&self.minio_dir())?;
        let step = format!("build MinIO {}", self.minio);
        let mut cmd = go_command(&self.s3_module());
        cmd.args(["build", "-trimpath", "-ldflags", "-s -w", "-o"])
            .arg(partial.join("minio"))
            .arg("github.com/minio/minio");
        run_step(&format!("{step} (several minutes on a cold cache)"), cmd)?;
        let out = Command::new(partial.join("minio"))
            .arg("--version")
            .output()
            .with_context(|| format!("step `verify MinIO`: running {}", partial.display()))?;
        if !out.status.success() {
            bail!(
                "step `verify MinIO`: `minio --version` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        replace_dir(&partial, &self.minio_dir())?;
        println!(
            "search-testbed: MinIO {} ready in {} ({})",
            self.minio,
            human(started.elapsed()),
            self.minio().display()
        );
        Ok(true)
    }

    /// testbed/s3/go.mod must require the MinIO version of search-versions.env.
    fn check_minio_pin(&self) -> Result<()> {
        let gomod = self.s3_module().join("go.mod");
        let text = fs::read_to_string(&gomod)
            .with_context(|| format!("step `check pins`: reading {}", gomod.display()))?;
        let pinned = text.lines().any(|line| {
            let mut words = line.split_whitespace();
            let first = words.next();
            let (module, version) = if first == Some("require") {
                (words.next(), words.next())
            } else {
                (first, words.next())
            };
            module == Some("github.com/minio/minio") && version == Some(self.minio.as_str())
        });
        if !pinned {
            bail!(
                "step `check pins`: {} does not require github.com/minio/minio {} (the \
                 MINIO_VERSION of testbed/search-versions.env); run `cargo xtask search-testbed pin`",
                gomod.display(),
                self.minio
            );
        }
        Ok(())
    }

    fn ensure_elasticdump(&self, version: &str, force: bool) -> Result<bool> {
        if self.elasticdump(version).is_file() && !force {
            println!(
                "search-testbed: elasticdump {} is present ({})",
                version,
                self.elasticdump(version).display()
            );
            return Ok(false);
        }
        let started = Instant::now();
        let partial = fresh_partial(&self.elasticdump_dir(version))?;
        let step = format!("npm install elasticdump@{}", version);
        let mut cmd = Command::new("npm");
        cmd.current_dir(&partial)
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&partial)
            .arg(format!("elasticdump@{}", version));
        run_step(&step, cmd)?;
        replace_dir(&partial, &self.elasticdump_dir(version))?;
        // npm's .bin links are relative, so the moved tree still works.
        let out = Command::new(self.elasticdump(version))
            .arg("--version")
            .output()
            .with_context(|| format!("step `verify elasticdump`: running {}", step))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains(version) {
            bail!(
                "step `verify elasticdump`: `elasticdump --version` did not report {}: {}{}",
                version,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        println!(
            "search-testbed: elasticdump {} ready in {} ({})",
            version,
            human(started.elapsed()),
            self.elasticdump(version).display()
        );
        Ok(true)
    }

    /// restic comes from Debian's packages. `Ok(true)` when it was installed now.
    fn ensure_restic(&self) -> Result<bool> {
        if let Some(version) = restic_version() {
            if !version.contains(&format!("restic {} ", self.restic)) {
                println!(
                    "search-testbed: warning: `restic version` says `{version}`, \
                     testbed/search-versions.env pins {}",
                    self.restic
                );
            } else {
                println!("search-testbed: {version} is present");
            }
            return Ok(false);
        }
        let uid = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        if uid != "0" {
            bail!(
                "step `install restic`: restic is not on the PATH and this is not root; run \
                 `sudo apt-get install -y restic` (Debian's package, {} pinned)",
                self.restic
            );
        }
        let started = Instant::now();
        let mut update = Command::new("apt-get");
        update.args(["update", "-q"]);
        run_step("apt-get update", update)?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q", "--no-install-recommends", "restic"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_step("apt-get install restic", install)?;
        let version = restic_version().ok_or_else(|| {
            anyhow!("step `install restic`: apt-get installed restic but `restic version` fails")
        })?;
        println!(
            "search-testbed: {version} installed in {}",
            human(started.elapsed())
        );
        Ok(true)
    }

    /// Regenerates testbed/s3 (go.mod and go.sum) from MINIO_VERSION.
    fn pin(&self) -> Result<()> {
        let module = self.s3_module();
        // MinIO's own `go` directive, from the go.mod the proxy serves.
        let step = format!("pin: download github.com/minio/minio@{}", self.minio);
        println!("search-testbed: {step}");
        let out = go_command(&std::env::temp_dir())
            .args(["mod", "download", "-json"])
            .arg(format!("github.com/minio/minio@{}", self.minio))
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
        let upstream = json_string_field(&json, "GoMod")
            .ok_or_else(|| anyhow!("step `{step}`: no GoMod in the output: {json}"))?;
        let upstream = fs::read_to_string(&upstream)
            .with_context(|| format!("step `{step}`: reading {upstream}"))?;
        let go = upstream
            .lines()
            .find_map(|l| l.trim().strip_prefix("go "))
            .unwrap_or("1.24.0")
            .trim();
        let gomod = format!(
            "// Scratch module that builds MinIO, the S3-compatible server of the search testbed.\n\
             // Generated by `cargo xtask search-testbed pin` from testbed/search-versions.env\n\
             // (MINIO_VERSION); do not edit by hand.\n\
             module cairn.invalid/testbed/s3\n\n\
             go {go}\n\n\
             tool github.com/minio/minio\n\n\
             require github.com/minio/minio {}\n",
            self.minio
        );
        fs::create_dir_all(&module).with_context(|| format!("creating {}", module.display()))?;
        fs::write(module.join("go.mod"), gomod)
            .with_context(|| format!("writing {}/go.mod", module.display()))?;
        let gosum = module.join("go.sum");
        if gosum.exists() {
            fs::remove_file(&gosum).with_context(|| format!("removing {}", gosum.display()))?;
        }
        let mut tidy = go_command(&module);
        tidy.args(["mod", "tidy"]);
        run_step("pin: go mod tidy in testbed/s3", tidy)?;
        println!("search-testbed: pinned MinIO {}", self.minio);
        Ok(())
    }
}

/// The file in a Java server's cache dir recording which pom and launcher it was built from.
const STAMP_FILE: &str = "source.fnv";

/// FNV-1a (64 bit) of `pom.xml` and the launcher source, in hex: the test harness computes the
/// same from the sources it was compiled with, to notice a stale build.
fn source_stamp(module: &Path, launcher_source: &str) -> Result<String> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for file in [module.join("pom.xml"), module.join(launcher_source)] {
        let bytes = fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        for byte in bytes {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Ok(format!("{hash:016x}"))
}

/// Runs `cmd`, collecting its output; prints a heartbeat while it runs and, when it fails, an
/// error naming the step with the end of the output.
fn run_step(step: &str, mut cmd: Command) -> Result<()> {
    let started = Instant::now();
    println!("search-testbed: {step}...");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = format!("{:?}", cmd.get_program());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("step `{step}`: cannot start {program}"))?;
    let (tx, rx) = mpsc::channel::<String>();
    let mut readers = Vec::new();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for pipe in pipes.into_iter().flatten() {
        let tx = tx.clone();
        readers.push(std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        }));
    }
    drop(tx);
    let mut output: Vec<String> = Vec::new();
    let mut last_report = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) => output.push(line),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_report.elapsed() >= HEARTBEAT {
            last_report = Instant::now();
            println!(
                "search-testbed:   ... {step}: {} so far",
                human(started.elapsed())
            );
        }
    }
    for reader in readers {
        let _ = reader.join();
    }
    let status = child
        .wait()
        .with_context(|| format!("step `{step}`: waiting for {program}"))?;
    if !status.success() {
        let tail = &output[output.len().saturating_sub(60)..];
        bail!(
            "step `{step}` failed ({status}) after {}: {program}\n{}",
            human(started.elapsed()),
            tail.join("\n")
        );
    }
    println!(
        "search-testbed: {step}: done in {}",
        human(started.elapsed())
    );
    Ok(())
}

/// `<dir>.partial`, emptied: a step builds there and renames it to `dir` when it succeeded, so an
/// interrupted build never leaves a half-filled `dir`.
fn fresh_partial(dir: &Path) -> Result<PathBuf> {
    let partial = PathBuf::from(format!("{}.partial", dir.display()));
    if partial.exists() {
        fs::remove_dir_all(&partial).with_context(|| format!("removing {}", partial.display()))?;
    }
    fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    Ok(partial)
}

fn replace_dir(partial: &Path, dir: &Path) -> Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("removing old {}", dir.display()))?;
    }
    fs::rename(partial, dir)
        .with_context(|| format!("moving {} to {}", partial.display(), dir.display()))
}

/// A `go` command in `dir` with the environment the testbed builds use.
fn go_command(dir: &Path) -> Command {
    let go = match std::env::var_os("CAIRN_GO") {
        Some(go) if !go.is_empty() => PathBuf::from(go),
        _ if Path::new("/usr/local/go/bin/go").exists() => PathBuf::from("/usr/local/go/bin/go"),
        _ => PathBuf::from("go"),
    };
    let mut cmd = Command::new(go);
    cmd.current_dir(dir)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-mod=mod -buildvcs=false");
    cmd
}

/// `java` and `javac`: `$CAIRN_JAVA` (and javac next to it), else `$JAVA_HOME/bin`, else the PATH.
fn java_tools() -> (PathBuf, PathBuf) {
    let java = match std::env::var_os("CAIRN_JAVA") {
        Some(java) if !java.is_empty() => PathBuf::from(java),
        _ => match std::env::var_os("JAVA_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join("bin/java"),
            _ => PathBuf::from("java"),
        },
    };
    let javac = match java.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("javac"),
        _ => PathBuf::from("javac"),
    };
    (java, javac)
}

fn env_or(key: &str, default: &str) -> PathBuf {
    match std::env::var_os(key) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(default),
    }
}

/// The first line of `restic version`, if restic runs.
fn restic_version() -> Option<String> {
    let out = Command::new("restic").arg("version").output().ok()?;
    out.status.success().then(|| {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pinned_versions_are_complete() {
        let text = include_str!("../../testbed/search-versions.env");
        let env = parse_env(text);
        for key in [
            "OPENSEARCH_VERSION",
            "ELASTICSEARCH_VERSION",
            "MINIO_VERSION",
            "ELASTICDUMP_VERSION",
            "RESTIC_VERSION",
        ] {
            assert!(env.contains_key(key), "{key} is not pinned");
        }
        assert!(env["OPENSEARCH_VERSION"].starts_with("2.19."));
        assert!(env["ELASTICSEARCH_VERSION"].starts_with("7.17."));
    }

    #[test]
    fn the_s3_module_requires_the_pinned_minio() {
        let env = parse_env(include_str!("../../testbed/search-versions.env"));
        let gomod = include_str!("../../testbed/s3/go.mod");
        assert!(
            gomod.contains(&format!("github.com/minio/minio {}", env["MINIO_VERSION"])),
            "testbed/s3/go.mod does not require MINIO_VERSION; run `cargo xtask search-testbed pin`"
        );
    }
}
