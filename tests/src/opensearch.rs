//! A real OpenSearch (or Elasticsearch 7.17) node for tests: one JVM started by our launcher
//! (`testbed/opensearch`), on a free loopback port, with its data in a temp dir.
//!
//! The jars and the launcher come from `cargo xtask search-testbed`, at the versions pinned in
//! `testbed/search-versions.env`, in `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/`. The node is a
//! child process of the test (see [`crate::process`]): it dies with the test even when the test
//! process is killed. [`OpenSearch::kill`] stops it abruptly (for "server went away mid-backup"
//! tests) and [`OpenSearch::restart`] brings it back on the same port and data.
//!
//! ```no_run
//! # fn example() -> anyhow::Result<()> {
//! use cairn_tests::opensearch::OpenSearch;
//! let node = OpenSearch::shared(); // started once per test binary
//! let url = node.url(); // http://127.0.0.1:PORT
//! assert!(node.version().starts_with("2.19."));
//! let own = OpenSearch::start()?; // a node of this test's own (about 10-20 s, 300 MB)
//! let es7 = OpenSearch::start_with(cairn_tests::opensearch::Options::elasticsearch())?;
//! # let _ = (url, own, es7); Ok(()) }
//! ```
//!
//! [`Options::secured`] serves HTTPS (a throwaway CA, [`OpenSearch::ca_pem`]) and requires HTTP
//! basic auth ([`OpenSearch::basic_auth`]): our launcher plugs the HTTP module's own TLS support and
//! a REST wrapper in, no security plugin (OpenSearch only).
//!
//! Java is `$CAIRN_JAVA`, else `$JAVA_HOME/bin/java`, else `java` on the PATH (17 or newer).

use crate::binaries::testbed_cache;
use crate::pki::CertificateAuthority;
use crate::process::{OwnedProcess, free_port};
use anyhow::{Context, Result, anyhow, bail};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tempfile::TempDir;

/// The pinned versions of the search testbed, shared with `cargo xtask search-testbed`.
const SEARCH_VERSIONS_ENV: &str = include_str!("../../testbed/search-versions.env");

/// The sources the cached launchers must have been built from (see `source_stamp`).
const OPENSEARCH_SOURCES: [&str; 2] = [
    include_str!("../../testbed/opensearch/pom.xml"),
    include_str!("../../testbed/opensearch/src/main/java/cairn/testbed/Launcher.java"),
];
const ELASTICSEARCH_SOURCES: [&str; 2] = [
    include_str!("../../testbed/opensearch/es7/pom.xml"),
    include_str!("../../testbed/opensearch/es7/src/main/java/cairn/testbed/es7/Launcher.java"),
];

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(100);

/// The temp dirs of nodes are named `<temp dir>/cairn-opensearch-XXXXXX`.
const DIR_PREFIX: &str = "cairn-opensearch-";

/// A value of `testbed/search-versions.env`, e.g. `OPENSEARCH_VERSION` -> `2.19.6`.
pub fn search_pinned(key: &str) -> Option<&'static str> {
    SEARCH_VERSIONS_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

/// elasticdump's `multielasticdump` of the search testbed (Stash's backup tool, the baseline).
pub fn multielasticdump() -> Result<PathBuf> {
    multielasticdump_pinned("ELASTICDUMP_VERSION")
}

/// The `multielasticdump` Stash's Elasticsearch addon runs (`ELASTICDUMP_STASH_VERSION`).
pub fn stash_multielasticdump() -> Result<PathBuf> {
    multielasticdump_pinned("ELASTICDUMP_STASH_VERSION")
}

fn multielasticdump_pinned(key: &str) -> Result<PathBuf> {
    let version = search_pinned(key).unwrap_or("unknown");
    let bin = testbed_cache()?
        .join(format!("elasticdump-{version}"))
        .join("node_modules/.bin/multielasticdump");
    if !bin.exists() {
        return Err(not_built(&format!("elasticdump {version}"), &bin));
    }
    Ok(bin)
}

/// The message for a missing piece of the search testbed.
pub(crate) fn not_built(what: &str, missing: &Path) -> anyhow::Error {
    anyhow!(
        "{what} is not built/installed: missing {}.\nRun `cargo xtask search-testbed` first: it \
         builds OpenSearch, Elasticsearch, MinIO and the baseline tools into {} (the first run \
         takes several minutes; set CAIRN_CACHE to use another cache)",
        missing.display(),
        testbed_cache()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "the cache".into())
    )
}

/// Which server to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Distribution {
    /// OpenSearch `OPENSEARCH_VERSION` (2.19.x).
    OpenSearch,
    /// Elasticsearch `ELASTICSEARCH_VERSION` (7.17.x, the Apache-2.0 server without X-Pack).
    Elasticsearch,
}

impl Distribution {
    fn name(self) -> &'static str {
        match self {
            Distribution::OpenSearch => "opensearch",
            Distribution::Elasticsearch => "elasticsearch",
        }
    }

    /// The pinned version.
    pub fn pinned_version(self) -> &'static str {
        let key = match self {
            Distribution::OpenSearch => "OPENSEARCH_VERSION",
            Distribution::Elasticsearch => "ELASTICSEARCH_VERSION",
        };
        search_pinned(key).unwrap_or("unknown")
    }

    fn launcher_class(self) -> &'static str {
        match self {
            Distribution::OpenSearch => "cairn.testbed.Launcher",
            Distribution::Elasticsearch => "cairn.testbed.es7.Launcher",
        }
    }

    /// FNV-1a (64 bit, hex) of the pom and the launcher this harness was compiled with; `cargo xtask
    /// search-testbed` writes the same of the sources it built from into `source.fnv`.
    fn source_stamp(self) -> String {
        let sources = match self {
            Distribution::OpenSearch => OPENSEARCH_SOURCES,
            Distribution::Elasticsearch => ELASTICSEARCH_SOURCES,
        };
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in sources.iter().flat_map(|s| s.bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{hash:016x}")
    }

    /// `${CAIRN_CACHE:-$HOME/.cache/cairn}/testbed/<name>-<version>`: `lib/*.jar` and `classes/`.
    pub fn install_dir(self) -> Result<PathBuf> {
        Ok(testbed_cache()?.join(format!("{}-{}", self.name(), self.pinned_version())))
    }
}

/// How to start a node.
#[derive(Clone, Debug)]
pub struct Options {
    pub distribution: Distribution,
    /// The JVM heap (`-Xms` = `-Xmx`), in MiB.
    pub heap_mib: u32,
    /// How long the node may take to answer with a yellow or green cluster health.
    pub start_timeout: Duration,
    /// Extra node settings (`-Ekey=value`), e.g. `("indices.query.bool.max_clause_count", "2048")`.
    pub settings: Vec<(String, String)>,
    /// Serve HTTPS with a certificate for `127.0.0.1` and `localhost` from a throwaway CA
    /// ([`OpenSearch::ca_pem`]). OpenSearch only.
    pub tls: bool,
    /// Require HTTP basic auth with this user and password on every request. OpenSearch only.
    pub basic_auth: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            distribution: Distribution::OpenSearch,
            heap_mib: 512,
            // Tests start several JVMs at once on two cores.
            start_timeout: Duration::from_secs(300),
            settings: Vec::new(),
            tls: false,
            basic_auth: None,
        }
    }
}

impl Options {
    /// The defaults with HTTPS and basic auth (user `admin`, password `cairn-test-password`).
    pub fn secured() -> Self {
        Self {
            tls: true,
            basic_auth: Some(("admin".into(), "cairn-test-password".into())),
            ..Self::default()
        }
    }

    /// The defaults, with Elasticsearch 7.17 instead of OpenSearch.
    pub fn elasticsearch() -> Self {
        Self {
            distribution: Distribution::Elasticsearch,
            ..Self::default()
        }
    }
}

/// A running node, killed (and its files removed) on drop.
pub struct OpenSearch {
    // Fields drop in order: the process, then the directory it uses.
    process: Mutex<OwnedProcess>,
    options: Options,
    java: PathBuf,
    install: PathBuf,
    /// The launcher's TLS and basic-auth arguments.
    security: Vec<String>,
    ca_pem: Option<String>,
    /// The harness's TLS client settings, with TLS.
    tls: Option<Arc<rustls::ClientConfig>>,
    port: u16,
    version: String,
    startup_time: Duration,
    dir: TempDir,
}

static SHARED: OnceLock<std::result::Result<OpenSearch, String>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Ok(node)) = SHARED.get() {
        node.kill();
    }
}

impl OpenSearch {
    /// Starts an OpenSearch node with the default [`Options`].
    pub fn start() -> Result<Self> {
        Self::start_with(Options::default())
    }

    /// One OpenSearch node shared by the tests of a test binary (started on first use, stopped at
    /// exit). Tests sharing it should use index names of their own. Panics if it cannot start.
    pub fn shared() -> &'static OpenSearch {
        match SHARED.get_or_init(|| {
            let started = OpenSearch::start().map_err(|e| format!("{e:#}"));
            if started.is_ok() {
                // SAFETY: registers a plain extern "C" function.
                unsafe {
                    libc::atexit(stop_shared);
                }
            }
            started
        }) {
            Ok(node) => node,
            Err(e) => panic!("the shared test OpenSearch node did not start: {e}"),
        }
    }

    /// Starts a node and waits until its cluster health is yellow or green (on fresh ports if
    /// one was taken meanwhile).
    pub fn start_with(options: Options) -> Result<Self> {
        crate::process::with_fresh_ports(|| Self::start_once(options.clone()))
    }

    fn start_once(options: Options) -> Result<Self> {
        crate::init_crypto();
        let started = Instant::now();
        let install = options.distribution.install_dir()?;
        for needed in [install.join("lib"), install.join("classes")] {
            if !needed.is_dir() {
                return Err(not_built(
                    &format!(
                        "{} {}",
                        options.distribution.name(),
                        options.distribution.pinned_version()
                    ),
                    &needed,
                ));
            }
        }
        let built_from = std::fs::read_to_string(install.join("source.fnv")).unwrap_or_default();
        if built_from.trim() != options.distribution.source_stamp() {
            bail!(
                "the {} launcher in {} was built from other sources than testbed/opensearch has \
                 now: run `cargo xtask search-testbed` to rebuild it",
                options.distribution.name(),
                install.display()
            );
        }
        if (options.tls || options.basic_auth.is_some())
            && options.distribution != Distribution::OpenSearch
        {
            bail!("TLS and basic auth are only implemented for OpenSearch (its launcher)");
        }
        static SWEEP: std::sync::Once = std::sync::Once::new();
        SWEEP.call_once(|| sweep_stale_dirs(DIR_PREFIX));
        let dir = owned_temp_dir(DIR_PREFIX)?;
        let port = free_port()?;
        let java = java()?;
        let mut security = Vec::new();
        let ca_pem = if options.tls {
            let ca = CertificateAuthority::new("cairn-test-opensearch-ca")?;
            let serving = ca.server_cert("opensearch", &["127.0.0.1", "localhost"])?;
            let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
            std::fs::write(&cert, &serving.cert_pem)?;
            std::fs::write(&key, &serving.key_pem)?;
            security.extend([
                "--tls-cert".to_string(),
                cert.display().to_string(),
                "--tls-key".to_string(),
                key.display().to_string(),
            ]);
            Some(ca.cert_pem())
        } else {
            None
        };
        if let Some((user, password)) = &options.basic_auth {
            let file = dir.path().join("basic-auth");
            std::fs::write(&file, format!("{user}:{password}"))?;
            security.extend(["--basic-auth-file".to_string(), file.display().to_string()]);
        }
        let tls = ca_pem.as_deref().map(tls_client_config).transpose()?;
        let process = spawn_node(&java, &install, &options, dir.path(), port, &security)?;
        let mut node = Self {
            process: Mutex::new(process),
            options,
            java,
            install,
            security,
            ca_pem,
            tls,
            port,
            version: String::new(),
            startup_time: Duration::ZERO,
            dir,
        };
        node.version = node.wait_ready(started + node.options.start_timeout)?;
        node.startup_time = started.elapsed();
        Ok(node)
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA certificate (PEM) that issued the node's certificate, with TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// The user and password every request needs, with basic auth.
    pub fn basic_auth(&self) -> Option<(&str, &str)> {
        self.options
            .basic_auth
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The version the server reports (`version.number` of `GET /`), e.g. `2.19.6`.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn distribution(&self) -> Distribution {
        self.options.distribution
    }

    /// How long the (last) start took, until the cluster health was yellow or green.
    pub fn startup_time(&self) -> Duration {
        self.startup_time
    }

    /// The node's `path.repo` (for snapshot repositories of type `fs`).
    pub fn repo_dir(&self) -> PathBuf {
        self.dir.path().join("repo")
    }

    /// The JVM's process id (None once killed).
    pub fn pid(&self) -> Option<u32> {
        let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        matches!(process.exited(), Ok(None)).then(|| process.pid())
    }

    /// The resident memory of the JVM, in bytes (None once killed).
    pub fn rss_bytes(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// The last `lines` lines of the node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        process.log_tail(lines)
    }

    /// Kills the node at once (SIGKILL, no clean shutdown). Idempotent.
    pub fn kill(&self) {
        let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        process.stop();
    }

    /// Stops the node cleanly (SIGTERM, waits up to 30 s, then SIGKILL).
    pub fn stop(&self) {
        let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
        if let Ok(None) = process.exited() {
            // SAFETY: plain syscall on our own, unreaped child.
            unsafe {
                libc::kill(process.pid() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while matches!(process.exited(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(POLL);
            }
        }
        process.stop();
    }

    /// Starts the node again (after [`kill`](Self::kill) or [`stop`](Self::stop), or kills it first)
    /// on the same port with the same data, and waits until it is ready.
    pub fn restart(&mut self) -> Result<()> {
        let started = Instant::now();
        self.kill();
        let process = spawn_node(
            &self.java,
            &self.install,
            &self.options,
            self.dir.path(),
            self.port,
            &self.security,
        )?;
        *self.process.lock().unwrap_or_else(|e| e.into_inner()) = process;
        self.version = self.wait_ready(started + self.options.start_timeout)?;
        self.startup_time = started.elapsed();
        Ok(())
    }

    /// A request with the harness's own minimal client (TLS and credentials as configured).
    fn get(&self, path: &str) -> Result<(u16, String)> {
        let mut headers = Vec::new();
        if let Some((user, password)) = &self.options.basic_auth {
            headers.push(("Authorization", basic_auth_header(user, password)));
        }
        http_request(self.port, self.tls.as_ref(), "GET", path, &headers, b"")
    }

    /// `GET /_cluster/health` -> `status` (`green`, `yellow` or `red`).
    pub fn health(&self) -> Result<String> {
        let (status, body) = self.get("/_cluster/health")?;
        if status != 200 {
            bail!("GET /_cluster/health: HTTP {status}: {body}");
        }
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("GET /_cluster/health: not JSON: {body}"))?;
        json["status"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("GET /_cluster/health: no status in {body}"))
    }

    /// Polls the cluster health until yellow or green; then returns the version from `GET /`.
    fn wait_ready(&self, deadline: Instant) -> Result<String> {
        let name = self.options.distribution.name();
        loop {
            {
                let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(status) = process.exited()? {
                    bail!(
                        "{name} exited ({status}) while starting; log {}:\n{}",
                        process.log_path().display(),
                        process.log_tail(40)
                    );
                }
            }
            if let Ok(health) = self.health()
                && (health == "yellow" || health == "green")
            {
                break;
            }
            if Instant::now() > deadline {
                let process = self.process.lock().unwrap_or_else(|e| e.into_inner());
                bail!(
                    "{name} was not ready (cluster health yellow or green) within {:?}; log {}:\n{}",
                    self.options.start_timeout,
                    process.log_path().display(),
                    process.log_tail(40)
                );
            }
            std::thread::sleep(POLL);
        }
        let (status, body) = self.get("/")?;
        let json: serde_json::Value = serde_json::from_str(&body)
            .with_context(|| format!("GET / (HTTP {status}): not JSON: {body}"))?;
        json["version"]["number"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("GET /: no version.number in {body}"))
    }
}

impl Drop for OpenSearch {
    fn drop(&mut self) {
        self.kill();
    }
}

fn spawn_node(
    java: &Path,
    install: &Path,
    options: &Options,
    dir: &Path,
    port: u16,
    security: &[String],
) -> Result<OwnedProcess> {
    let home = dir.join("home");
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let heap = options.heap_mib;
    let mut args: Vec<String> = vec![
        format!("-Xms{heap}m"),
        format!("-Xmx{heap}m"),
        // Fewer threads and less memory than G1 on a small test machine.
        "-XX:+UseSerialGC".into(),
        "-XX:-UsePerfData".into(),
        "-Djava.awt.headless=true".into(),
        "-Dfile.encoding=UTF-8".into(),
        "-Dlog4j2.disable.jmx=true".into(),
        "-Dlog4j.shutdownHookEnabled=false".into(),
        format!("-Djava.io.tmpdir={}", tmp.display()),
        "-cp".into(),
        format!(
            "{}/*:{}",
            install.join("lib").display(),
            install.join("classes").display()
        ),
        options.distribution.launcher_class().into(),
        "--home".into(),
        home.display().to_string(),
        "--repo".into(),
        dir.join("repo").display().to_string(),
        "--http-port".into(),
        port.to_string(),
    ];
    args.extend(security.iter().cloned());
    args.extend(options.settings.iter().map(|(k, v)| format!("-E{k}={v}")));
    OwnedProcess::spawn(
        options.distribution.name(),
        java,
        &args,
        &dir.join(format!("{}.log", options.distribution.name())),
    )
}

/// `$CAIRN_JAVA`, else `$JAVA_HOME/bin/java`, else `java` on the PATH.
fn java() -> Result<PathBuf> {
    let java = match std::env::var_os("CAIRN_JAVA") {
        Some(java) if !java.is_empty() => PathBuf::from(java),
        _ => match std::env::var_os("JAVA_HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join("bin/java"),
            _ => {
                let path = std::env::var_os("PATH").unwrap_or_default();
                std::env::split_paths(&path)
                    .map(|dir| dir.join("java"))
                    .find(|p| p.is_file())
                    .ok_or_else(|| {
                        anyhow!(
                            "no `java` on the PATH (and neither CAIRN_JAVA nor JAVA_HOME is set): \
                             the OpenSearch node needs Java 17 or newer"
                        )
                    })?
            }
        },
    };
    Ok(java)
}

/// A temp dir `<prefix>XXXXXX` with an `owner.pid` naming this process (see [`sweep_stale_dirs`]).
pub(crate) fn owned_temp_dir(prefix: &str) -> Result<TempDir> {
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .with_context(|| format!("creating a temp dir {prefix}..."))?;
    let owner = dir.path().join("owner.pid");
    std::fs::write(&owner, std::process::id().to_string())
        .with_context(|| format!("writing {}", owner.display()))?;
    Ok(dir)
}

/// Removes the temp dirs `<prefix>*` of test processes that died without cleaning up (their
/// servers died with them, but files stay). Dirs without an `owner.pid` are left alone.
pub(crate) fn sweep_stale_dirs(prefix: &str) {
    for dir in crate::process::stale_dirs(prefix) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `Basic base64(user:password)`.
pub(crate) fn basic_auth_header(user: &str, password: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let input = format!("{user}:{password}");
    let mut out = String::from("Basic ");
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The TLS client settings of the harness's own checks: trusts `ca_pem` (one or more PEM
/// certificates) only.
pub(crate) fn tls_client_config(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.context("parsing the CA certificate")?)
            .context("adding the CA certificate")?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A minimal HTTP/1.0 request to `127.0.0.1:port`, over TLS with `tls` (the harness's own checks;
/// tests use a real client). Returns the status and the body.
pub(crate) fn http_request(
    port: u16,
    tls: Option<&Arc<rustls::ClientConfig>>,
    method: &str,
    path_and_query: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> Result<(u16, String)> {
    let timeout = Duration::from_secs(10);
    let tcp = TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), timeout)
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    tcp.set_read_timeout(Some(timeout))?;
    tcp.set_write_timeout(Some(timeout))?;
    let mut stream: Box<dyn ReadWrite> = match tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = rustls::pki_types::ServerName::IpAddress(
                std::net::IpAddr::from([127, 0, 0, 1]).into(),
            );
            let conn = rustls::ClientConnection::new(config.clone(), name)
                .context("starting a TLS connection")?;
            Box::new(rustls::StreamOwned::new(conn, tcp))
        }
    };
    let mut request = format!(
        "{method} {path_and_query} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    stream.write_all(body)?;
    stream.flush()?;
    let mut response = Vec::new();
    match stream.read_to_end(&mut response) {
        Ok(_) => {}
        // A TLS peer that closes without close_notify, after the whole answer.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => {
            return Err(e)
                .with_context(|| format!("reading the answer to {method} {path_and_query}"));
        }
    }
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("{method} {path_and_query}: not an HTTP answer: {head}"))?;
    Ok((status, body.to_string()))
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_is_base64() {
        assert_eq!(basic_auth_header("a", "b"), "Basic YTpi");
        assert_eq!(
            basic_auth_header("admin", "s3cret"),
            "Basic YWRtaW46czNjcmV0"
        );
        assert_eq!(basic_auth_header("ab", "cd"), "Basic YWI6Y2Q=");
    }

    #[test]
    fn versions_are_pinned() {
        assert!(
            Distribution::OpenSearch
                .pinned_version()
                .starts_with("2.19.")
        );
        assert!(
            Distribution::Elasticsearch
                .pinned_version()
                .starts_with("7.17.")
        );
        assert!(search_pinned("MINIO_VERSION").is_some());
        assert_eq!(search_pinned("NO_SUCH_KEY"), None);
    }
}
