//! The repository's files as plain files, for what rustic's backends do not reach: restic's
//! `locks/` directory (rustic_core has no lock file type), wiping a whole repository, and a
//! reachability probe with a bounded time (rustic's opendal backend retries for a long time and
//! has no timeout of its own).
//!
//! The same location and credentials as [`crate::repo::backend`]: a local directory, the same
//! opendal operator ([`crate::cloud::operator`]: `CA_CERT_DATA` and `insecureTLS` apply the same
//! way), or restic's REST protocol. Paths follow restic's layout: `config`, `keys/<id>`, `snapshots/<id>`,
//! `index/<id>`, `locks/<id>` and `data/<first two hex digits>/<id>`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use opendal::layers::{RetryLayer, TimeoutLayer};

use crate::cloud::{display_name, opendal_reason, operator};
use crate::error::{AgentError, Result, redact_url};
use crate::location::{Location, RepoOptions, check_insecure_tls, env};

/// The directories of a restic repository, besides the `config` file.
pub const DIRS: [&str; 5] = ["keys", "snapshots", "index", "locks", "data"];

/// How long a whole probe may take (retries included).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(60);

enum Kind {
    Local(PathBuf),
    OpenDal(opendal::Operator),
    Rest {
        client: reqwest::Client,
        /// Ends with `/`; may carry the REST server's user and password.
        base: url::Url,
    },
}

/// Raw access to one repository's files.
pub struct Store {
    kind: Kind,
    /// For messages: the location without credentials.
    name: String,
    rt: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.name)
    }
}

fn reqwest_reason(e: &reqwest::Error) -> String {
    let mut text = redact_url(&e.to_string());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Where a file lives, relative to the repository's root.
fn file_path(dir: &str, name: &str) -> String {
    if dir == "data" && name.len() >= 2 {
        format!("data/{}/{name}", &name[..2])
    } else {
        format!("{dir}/{name}")
    }
}

/// restic names its files by the hex of a SHA-256: anything else is not the repository's.
fn restic_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A directory restic makes: `<dir>/` itself, or `data/<two hex digits>/`.
fn restic_dir(dir: &str, path: &str) -> bool {
    let Some(rest) = path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) else {
        return false;
    };
    let rest = rest.trim_end_matches('/');
    rest.is_empty() || (dir == "data" && rest.len() == 2 && restic_name(&rest.repeat(32)))
}

impl Store {
    pub fn new(loc: &Location, opts: &RepoOptions) -> Result<Self> {
        check_insecure_tls(loc, opts)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("cairn-files")
            .enable_all()
            .build()
            .map_err(|e| AgentError::io("start the storage runtime", e))?;
        let (kind, name) = match loc {
            Location::Local(path) => (
                Kind::Local(path.clone()),
                format!("local:{}", path.display()),
            ),
            Location::Rest { url } => {
                let mut base = url::Url::parse(url)
                    .map_err(|e| AgentError::Usage(format!("--repository rest: {e}")))?;
                if !base.path().ends_with('/') {
                    let p = format!("{}/", base.path());
                    base.set_path(&p);
                }
                if let (Some(u), Some(p)) =
                    (env("REST_SERVER_USERNAME"), env("REST_SERVER_PASSWORD"))
                {
                    let _ = base.set_username(&u);
                    let _ = base.set_password(Some(&p));
                }
                let client = reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .timeout(Duration::from_secs(120))
                    .build()
                    .map_err(|e| AgentError::Usage(format!("HTTP client: {e}")))?;
                let name = format!("rest:{}", redact_url(url));
                (Kind::Rest { client, base }, name)
            }
            _ => {
                let _guard = rt.enter();
                let op = operator(loc, opts)?
                    .layer(
                        TimeoutLayer::new()
                            .with_timeout(Duration::from_secs(60))
                            .with_io_timeout(Duration::from_secs(30)),
                    )
                    .layer(RetryLayer::new().with_max_times(3).with_jitter());
                (Kind::OpenDal(op), display_name(loc))
            }
        };
        Ok(Self { kind, name, rt })
    }

    /// The location, for messages.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn op_err(&self, what: &str, e: &opendal::Error) -> AgentError {
        AgentError::Repository(format!("{what} on {}: {}", self.name, opendal_reason(e)))
    }

    fn http_err(&self, what: &str, e: &reqwest::Error) -> AgentError {
        AgentError::Repository(format!("{what} on {}: {}", self.name, reqwest_reason(e)))
    }

    fn rest_url(&self, base: &url::Url, path: &str) -> Result<url::Url> {
        base.join(path)
            .map_err(|e| AgentError::Usage(format!("{}: {path}: {e}", self.name)))
    }

    /// Whether the repository has a `config` file. Errors when the storage cannot be reached.
    pub fn has_config(&self) -> Result<bool> {
        self.config_within(None)
    }

    fn config_within(&self, timeout: Option<Duration>) -> Result<bool> {
        let (client, base, op) = match &self.kind {
            Kind::Local(root) => return Ok(root.join("config").is_file()),
            Kind::OpenDal(op) => (None, None, Some(op)),
            Kind::Rest { client, base } => (Some(client), Some(base), None),
        };
        let ask = async {
            if let Some(op) = op {
                return match op.stat("config").await {
                    Ok(_) => Ok(true),
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(false),
                    Err(e) => Err(self.op_err("read config", &e)),
                };
            }
            let (Some(client), Some(base)) = (client, base) else {
                return Err(AgentError::Usage("no backend".into()));
            };
            let resp = client
                .head(self.rest_url(base, "config")?)
                .send()
                .await
                .map_err(|e| self.http_err("read config", &e))?;
            match resp.status().as_u16() {
                200..=299 => Ok(true),
                404 => Ok(false),
                s => Err(AgentError::Repository(format!(
                    "read config on {}: HTTP {s}",
                    self.name
                ))),
            }
        };
        self.rt.block_on(async {
            match timeout {
                None => ask.await,
                Some(t) => tokio::time::timeout(t, ask).await.unwrap_or_else(|_| {
                    Err(AgentError::Repository(format!(
                        "{} did not answer within {}s",
                        self.name,
                        t.as_secs()
                    )))
                }),
            }
        })
    }

    /// Checks within `timeout` (retries included) that the storage answers; tells whether the
    /// `config` file is there.
    pub fn probe(&self, timeout: Duration) -> Result<bool> {
        if let Kind::Local(root) = &self.kind {
            // A missing directory is created by init; a missing parent is the volume's fault.
            if let Some(parent) = root.parent()
                && !parent.as_os_str().is_empty()
                && !parent.exists()
            {
                return Err(AgentError::Repository(format!(
                    "{}: the directory {} does not exist (is the volume mounted?)",
                    self.name,
                    parent.display()
                )));
            }
        }
        self.config_within(Some(timeout))
    }

    /// The names of the files in one of [`DIRS`] (all levels of `data/`); none when it does not
    /// exist.
    pub fn list(&self, dir: &str) -> Result<Vec<String>> {
        let mut names = match &self.kind {
            Kind::Local(root) => list_local(&root.join(dir))?,
            Kind::OpenDal(op) => self.rt.block_on(async {
                let entries = op
                    .list_with(&format!("{dir}/"))
                    .recursive(true)
                    .await
                    .or_else(|e| {
                        if e.kind() == opendal::ErrorKind::NotFound {
                            Ok(Vec::new())
                        } else {
                            Err(self.op_err(&format!("list {dir}"), &e))
                        }
                    })?;
                Ok::<_, AgentError>(
                    entries
                        .into_iter()
                        .filter(|e| e.metadata().is_file())
                        .map(|e| e.name().to_string())
                        .collect(),
                )
            })?,
            Kind::Rest { client, base } => self.list_rest(client, base, dir)?,
        };
        names.retain(|n| restic_name(n));
        names.sort();
        Ok(names)
    }

    /// The names under `dir/` of a REST server (its v2 listing).
    fn list_rest(
        &self,
        client: &reqwest::Client,
        base: &url::Url,
        dir: &str,
    ) -> Result<Vec<String>> {
        let url = self.rest_url(base, &format!("{dir}/"))?;
        self.rt.block_on(async {
            let resp = client
                .get(url)
                .header("Accept", "application/vnd.x.restic.rest.v2")
                .send()
                .await
                .map_err(|e| self.http_err(&format!("list {dir}"), &e))?;
            if resp.status().as_u16() == 404 {
                return Ok(Vec::new());
            }
            if !resp.status().is_success() {
                return Err(AgentError::Repository(format!(
                    "list {dir} on {}: HTTP {}",
                    self.name,
                    resp.status()
                )));
            }
            #[derive(serde::Deserialize)]
            struct Item {
                name: String,
            }
            let items: Vec<Item> = resp
                .json()
                .await
                .map_err(|e| self.http_err(&format!("list {dir}"), &e))?;
            Ok(items.into_iter().map(|i| i.name).collect())
        })
    }

    /// Reads one file of one of [`DIRS`].
    pub fn read(&self, dir: &str, name: &str) -> Result<Bytes> {
        let path = file_path(dir, name);
        match &self.kind {
            Kind::Local(root) => std::fs::read(root.join(&path))
                .map(Bytes::from)
                .map_err(|e| AgentError::io(format!("read {path}"), e)),
            Kind::OpenDal(op) => self.rt.block_on(async {
                op.read(&path)
                    .await
                    .map(|b| b.to_bytes())
                    .map_err(|e| self.op_err(&format!("read {path}"), &e))
            }),
            Kind::Rest { client, base } => {
                let url = self.rest_url(base, &format!("{dir}/{name}"))?;
                self.rt.block_on(async {
                    let resp = client
                        .get(url)
                        .send()
                        .await
                        .and_then(reqwest::Response::error_for_status)
                        .map_err(|e| self.http_err(&format!("read {path}"), &e))?;
                    resp.bytes()
                        .await
                        .map_err(|e| self.http_err(&format!("read {path}"), &e))
                })
            }
        }
    }

    /// Writes one file of one of [`DIRS`].
    pub fn write(&self, dir: &str, name: &str, data: Bytes) -> Result<()> {
        let path = file_path(dir, name);
        match &self.kind {
            Kind::Local(root) => {
                let file = root.join(&path);
                if let Some(parent) = file.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| AgentError::io(format!("create {}", parent.display()), e))?;
                }
                std::fs::write(&file, &data).map_err(|e| AgentError::io(format!("write {path}"), e))
            }
            Kind::OpenDal(op) => self.rt.block_on(async {
                op.write(&path, data)
                    .await
                    .map(|_| ())
                    .map_err(|e| self.op_err(&format!("write {path}"), &e))
            }),
            Kind::Rest { client, base } => {
                let url = self.rest_url(base, &format!("{dir}/{name}"))?;
                self.rt.block_on(async {
                    client
                        .post(url)
                        .body(data)
                        .send()
                        .await
                        .and_then(reqwest::Response::error_for_status)
                        .map(|_| ())
                        .map_err(|e| self.http_err(&format!("write {path}"), &e))
                })
            }
        }
    }

    /// Removes one file (of one of [`DIRS`], or `config` with `dir` empty). A missing file is
    /// not an error.
    pub fn remove(&self, dir: &str, name: &str) -> Result<()> {
        let path = if dir.is_empty() {
            name.to_string()
        } else {
            file_path(dir, name)
        };
        match &self.kind {
            Kind::Local(root) => match std::fs::remove_file(root.join(&path)) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(AgentError::io(format!("remove {path}"), e)),
            },
            Kind::OpenDal(op) => self.rt.block_on(async {
                match op.delete(&path).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self.op_err(&format!("remove {path}"), &e)),
                }
            }),
            Kind::Rest { client, base } => {
                let rel = if dir.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir}/{name}")
                };
                let url = self.rest_url(base, &rel)?;
                self.rt.block_on(async {
                    let resp = client
                        .delete(url)
                        .send()
                        .await
                        .map_err(|e| self.http_err(&format!("remove {path}"), &e))?;
                    match resp.status().as_u16() {
                        200..=299 | 404 => Ok(()),
                        s => Err(AgentError::Repository(format!(
                            "remove {path} on {}: HTTP {s}",
                            self.name
                        ))),
                    }
                })
            }
        }
    }

    /// Deletes every file of the repository (snapshots first, keys and `config` last, so an
    /// interrupted wipe leaves no half-readable snapshot and can simply run again) and, for a
    /// local directory, the directories restic made. Files that are not restic's are left.
    /// Returns how many files were removed.
    pub fn wipe(&self) -> Result<u64> {
        let mut removed = 0u64;
        for dir in ["locks", "snapshots", "index", "data", "keys"] {
            let names = self.list(dir)?;
            tracing::info!(dir, files = names.len(), "removing");
            for name in names {
                self.remove(dir, &name)?;
                removed += 1;
            }
        }
        if self.has_config()? {
            self.remove("", "config")?;
            removed += 1;
        }
        match &self.kind {
            Kind::Local(root) => {
                for dir in DIRS {
                    remove_empty_dirs(&root.join(dir))?;
                }
            }
            // rustic's `init` leaves directory markers (`data/00/`, ..., `keys/`) in object
            // stores: they are the repository's too.
            Kind::OpenDal(op) => self.rt.block_on(async {
                for dir in DIRS {
                    let top = format!("{dir}/");
                    let mut markers: Vec<String> = match op.list_with(&top).recursive(true).await {
                        Ok(entries) => entries
                            .into_iter()
                            .filter(|e| e.metadata().is_dir())
                            .map(|e| e.path().to_string())
                            .filter(|p| restic_dir(dir, p))
                            .collect(),
                        Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
                        Err(e) => return Err(self.op_err(&format!("list {dir}"), &e)),
                    };
                    markers.push(top);
                    markers.sort_by_key(|p| std::cmp::Reverse(p.len()));
                    markers.dedup();
                    for m in markers {
                        match op.delete(&m).await {
                            Ok(()) => {}
                            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                            Err(e) => return Err(self.op_err(&format!("remove {m}"), &e)),
                        }
                    }
                }
                Ok(())
            })?,
            Kind::Rest { .. } => {}
        }
        Ok(removed)
    }
}

/// The names of the files under `top`, at any depth; none when it does not exist.
fn list_local(top: &std::path::Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![top.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = match std::fs::read_dir(&d) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(AgentError::io(format!("list {}", d.display()), e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| AgentError::io(format!("list {}", d.display()), e))?;
            let ft = entry
                .file_type()
                .map_err(|e| AgentError::io(format!("list {}", d.display()), e))?;
            if ft.is_dir() {
                stack.push(entry.path());
            } else {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    Ok(out)
}

/// Removes `dir` and the directories below it when they hold no file.
fn remove_empty_dirs(dir: &std::path::Path) -> Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(AgentError::io(format!("list {}", dir.display()), e)),
    };
    for entry in rd.flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_empty_dirs(&entry.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        // Not empty: something that is not restic's is in there; leave it.
        Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(AgentError::io(format!("remove {}", dir.display()), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_paths() {
        let id = "ab".repeat(32);
        assert_eq!(file_path("data", &id), format!("data/ab/{id}"));
        assert_eq!(file_path("locks", &id), format!("locks/{id}"));
        assert!(restic_name(&id));
        assert!(!restic_name("README"));
        assert!(restic_dir("data", "data/"));
        assert!(restic_dir("data", "data/0a/"));
        assert!(!restic_dir("data", "data/mine/"));
        assert!(!restic_dir("keys", "keys/x/"));
    }

    #[test]
    fn local_wipe_leaves_foreign_files() -> Result<()> {
        let tmp = std::env::temp_dir().join(format!("cairn-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let store = Store::new(&Location::Local(tmp.clone()), &RepoOptions::default())?;
        let id = "0f".repeat(32);
        store.write("data", &id, Bytes::from_static(b"x"))?;
        store.write("keys", &id, Bytes::from_static(b"k"))?;
        std::fs::write(tmp.join("config"), b"c").map_err(|e| AgentError::io("config", e))?;
        std::fs::write(tmp.join("keys/notes.txt"), b"n").map_err(|e| AgentError::io("n", e))?;
        assert_eq!(store.list("data")?, vec![id.clone()]);
        assert_eq!(store.wipe()?, 3);
        assert!(!tmp.join("config").exists());
        assert!(!tmp.join("data").exists());
        assert!(tmp.join("keys/notes.txt").exists());
        let _ = std::fs::remove_dir_all(&tmp);
        Ok(())
    }
}
