//! The repository: restic's notation for where it lives, the rustic backend for it, opening
//! (and initialising on first use), snapshots, retention, totals and checks.
//!
//! rustic_core takes no locks (it is lock-free by design, with two-phase deletion that we turn
//! into restic's instant deletion for prune); backup and forget hold a restic lock of their own
//! (see [`crate::lock`]) so that restic's prune never deletes what they are writing, and ours
//! never runs next to another process's work.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use rustic_backend::{LocalBackend, OpenDALBackend, RestBackend};
use rustic_core::repofile::SnapshotFile;
use rustic_core::{
    CheckOptions, ConfigOptions, Credentials, ErrorKind, FileType, ForgetGroups, Grouped, Id,
    KeepOptions, KeyOptions, OpenStatus, PruneOptions, ReadBackend, Repository, RepositoryBackends,
    RepositoryOptions, RusticError, RusticResult, SnapshotGroupCriterion, StringList, WriteBackend,
};

use crate::error::{AgentError, Result};

/// Where the repository lives, parsed from restic's notation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// `local:/path` or `/path`.
    Local(PathBuf),
    /// `s3:https://host:port/bucket/prefix` (`s3:host/bucket` means https).
    S3 {
        endpoint: String,
        bucket: String,
        prefix: String,
    },
    /// `gs:bucket:/prefix`.
    Gcs { bucket: String, prefix: String },
    /// `azure:container:/prefix`.
    Azure { container: String, prefix: String },
    /// `b2:bucket:prefix`.
    B2 { bucket: String, prefix: String },
    /// `swift:container:/prefix`.
    Swift { container: String, prefix: String },
    /// `rest:http://host:8000/path`.
    Rest { url: String },
}

fn bucket_and_prefix(rest: &str, what: &str) -> Result<(String, String)> {
    let (bucket, prefix) = rest.split_once(':').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(AgentError::Usage(format!(
            "--repository {what}: no bucket/container"
        )));
    }
    Ok((bucket.to_string(), prefix.trim_matches('/').to_string()))
}

impl Location {
    pub fn parse(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.is_empty() {
            return Err(AgentError::Usage("--repository is empty".into()));
        }
        if s.starts_with('/') {
            return Ok(Location::Local(PathBuf::from(s)));
        }
        let Some((scheme, rest)) = s.split_once(':') else {
            return Err(AgentError::Usage(format!(
                "--repository {s:?}: expected local:, s3:, gs:, azure:, b2:, swift: or rest:"
            )));
        };
        match scheme {
            "local" => {
                if rest.is_empty() {
                    return Err(AgentError::Usage("--repository local: has no path".into()));
                }
                Ok(Location::Local(PathBuf::from(rest)))
            }
            "s3" => {
                let (scheme, tail) = if let Some(t) = rest.strip_prefix("https://") {
                    ("https", t)
                } else if let Some(t) = rest.strip_prefix("http://") {
                    ("http", t)
                } else {
                    ("https", rest)
                };
                let mut parts = tail.splitn(3, '/');
                let host = parts.next().unwrap_or_default();
                let bucket = parts.next().unwrap_or_default();
                let prefix = parts.next().unwrap_or_default().trim_matches('/');
                if host.is_empty() || bucket.is_empty() {
                    return Err(AgentError::Usage(format!(
                        "--repository {s:?}: expected s3:https://host/bucket[/prefix]"
                    )));
                }
                Ok(Location::S3 {
                    endpoint: format!("{scheme}://{host}"),
                    bucket: bucket.into(),
                    prefix: prefix.into(),
                })
            }
            "gs" => {
                bucket_and_prefix(rest, s).map(|(bucket, prefix)| Location::Gcs { bucket, prefix })
            }
            "azure" => bucket_and_prefix(rest, s)
                .map(|(container, prefix)| Location::Azure { container, prefix }),
            "b2" => {
                bucket_and_prefix(rest, s).map(|(bucket, prefix)| Location::B2 { bucket, prefix })
            }
            "swift" => bucket_and_prefix(rest, s)
                .map(|(container, prefix)| Location::Swift { container, prefix }),
            "rest" => {
                if !(rest.starts_with("http://") || rest.starts_with("https://")) {
                    return Err(AgentError::Usage(format!(
                        "--repository rest: needs an http(s) URL, got {:?}",
                        crate::search::redact_url(rest)
                    )));
                }
                Ok(Location::Rest { url: rest.into() })
            }
            other => Err(AgentError::Usage(format!(
                "--repository: unknown backend {other:?} (local, s3, gs, azure, b2, swift, rest)"
            ))),
        }
    }
}

/// What, besides the location, the backend needs.
#[derive(Clone, Debug, Default)]
pub struct RepoOptions {
    pub region: Option<String>,
    pub insecure_tls: bool,
    pub max_connections: Option<u32>,
    pub cache_dir: Option<PathBuf>,
    pub no_cache: bool,
}

/// Reads an environment variable; empty counts as unset.
pub fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

// Credentials come from the repository's storage Secret only: never the identity of the node
// or of a ServiceAccount (which a pod's writer may choose), which might reach other tenants'
// buckets.
const AMBIENT_S3: &str = "S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the storage Secret (cairn does not use the node's or a ServiceAccount's cloud identity)";
const AMBIENT_GCS: &str = "GCS: GOOGLE_SERVICE_ACCOUNT_JSON_KEY (or GOOGLE_APPLICATION_CREDENTIALS) in the storage Secret (cairn does not use the node's or a ServiceAccount's cloud identity)";
const AMBIENT_AZURE: &str = "Azure: AZURE_ACCOUNT_KEY or AZURE_ACCOUNT_SAS in the storage Secret (cairn does not use the node's or a ServiceAccount's cloud identity)";

/// The opendal options for a cloud location (service name and its settings). Secrets come from
/// the repository Secret's keys in the environment, as restic reads them.
pub fn opendal_options(
    loc: &Location,
    opts: &RepoOptions,
) -> Result<Option<(&'static str, BTreeMap<String, String>)>> {
    options_from(loc, opts, &env)
}

/// [`opendal_options`] with the repository Secret's keys read through `env`.
fn options_from(
    loc: &Location,
    opts: &RepoOptions,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(&'static str, BTreeMap<String, String>)>> {
    let need = |name: &str, what: &str| {
        env(name).ok_or_else(|| {
            AgentError::Credentials(format!(
                "{name} is not set: the repository Secret needs it for {what}"
            ))
        })
    };
    let mut o = BTreeMap::new();
    let root = |p: &str| format!("/{p}");
    let service = match loc {
        Location::Local(_) | Location::Rest { .. } => return Ok(None),
        Location::S3 {
            endpoint,
            bucket,
            prefix,
        } => {
            o.insert("bucket".into(), bucket.clone());
            o.insert("root".into(), root(prefix));
            o.insert("endpoint".into(), endpoint.clone());
            o.insert(
                "region".into(),
                opts.region
                    .clone()
                    .filter(|r| !r.is_empty())
                    .or_else(|| env("AWS_DEFAULT_REGION"))
                    .or_else(|| env("AWS_REGION"))
                    .unwrap_or_else(|| "us-east-1".into()),
            );
            // Only what the Secret says: no ~/.aws files, no instance metadata, no web identity
            // of the node or of a ServiceAccount someone chose for the pod.
            o.insert("disable_config_load".into(), "true".into());
            o.insert("disable_ec2_metadata".into(), "true".into());
            o.insert(
                "access_key_id".into(),
                need("AWS_ACCESS_KEY_ID", AMBIENT_S3)?,
            );
            o.insert(
                "secret_access_key".into(),
                need("AWS_SECRET_ACCESS_KEY", AMBIENT_S3)?,
            );
            if let Some(t) = env("AWS_SESSION_TOKEN") {
                o.insert("session_token".into(), t);
            }
            "s3"
        }
        Location::Gcs { bucket, prefix } => {
            o.insert("bucket".into(), bucket.clone());
            o.insert("root".into(), root(prefix));
            if let Some(key) = env("GOOGLE_SERVICE_ACCOUNT_JSON_KEY") {
                use base64::Engine;
                o.insert(
                    "credential".into(),
                    base64::engine::general_purpose::STANDARD.encode(key),
                );
            } else {
                o.insert(
                    "credential_path".into(),
                    need("GOOGLE_APPLICATION_CREDENTIALS", AMBIENT_GCS)?,
                );
            }
            o.insert("disable_config_load".into(), "true".into());
            o.insert("disable_vm_metadata".into(), "true".into());
            "gcs"
        }
        Location::Azure { container, prefix } => {
            let account = need("AZURE_ACCOUNT_NAME", "Azure")?;
            o.insert("container".into(), container.clone());
            o.insert("root".into(), root(prefix));
            let suffix = env("AZURE_ENDPOINT_SUFFIX").unwrap_or_else(|| "core.windows.net".into());
            o.insert(
                "endpoint".into(),
                format!("https://{account}.blob.{suffix}"),
            );
            o.insert("account_name".into(), account);
            if let Some(key) = env("AZURE_ACCOUNT_KEY") {
                o.insert("account_key".into(), key);
            } else {
                o.insert(
                    "sas_token".into(),
                    need("AZURE_ACCOUNT_SAS", AMBIENT_AZURE)?,
                );
            }
            "azblob"
        }
        Location::B2 { bucket, prefix } => {
            o.insert("bucket".into(), bucket.clone());
            o.insert("root".into(), root(prefix));
            o.insert("application_key_id".into(), need("B2_ACCOUNT_ID", "B2")?);
            o.insert("application_key".into(), need("B2_ACCOUNT_KEY", "B2")?);
            // opendal addresses a B2 bucket by id, which restic's notation does not carry.
            o.insert(
                "bucket_id".into(),
                need("B2_BUCKET_ID", "B2 (opendal needs the bucket id)")?,
            );
            "b2"
        }
        Location::Swift { container, prefix } => {
            o.insert("container".into(), container.clone());
            o.insert("root".into(), root(prefix));
            o.insert(
                "endpoint".into(),
                need("OS_STORAGE_URL", "Swift (pre-authenticated storage URL)")?,
            );
            o.insert("token".into(), need("OS_AUTH_TOKEN", "Swift")?);
            "swift"
        }
    };
    if let Some(n) = opts.max_connections.filter(|n| *n > 0) {
        o.insert("connections".into(), n.to_string());
    }
    Ok(Some((service, o)))
}

/// Refuses `--insecure-tls` where it cannot be honoured.
pub fn check_insecure_tls(loc: &Location, opts: &RepoOptions) -> Result<()> {
    if opts.insecure_tls && !matches!(loc, Location::Local(_)) {
        // opendal builds its own HTTP client from the option map: there is no switch for this.
        return Err(AgentError::Usage(
            "insecureTLS is not supported for this backend: give the CA certificate in the \
             repository Secret's CA_CERT_DATA instead"
                .into(),
        ));
    }
    Ok(())
}

/// The backend for a location, once the storage answered (within
/// [`crate::files::PROBE_TIMEOUT`]: rustic's backends would retry for minutes, or wait forever
/// on a silent host).
pub fn backend(loc: &Location, opts: &RepoOptions) -> Result<Arc<dyn WriteBackend>> {
    check_insecure_tls(loc, opts)?;
    if !matches!(loc, Location::Local(_)) {
        crate::files::Store::new(loc, opts)?.probe(crate::files::PROBE_TIMEOUT)?;
    }
    let map = |e: Box<RusticError>| AgentError::rustic("backend", e);
    Ok(match loc {
        Location::Local(path) => Arc::new(
            LocalBackend::new(path.to_string_lossy(), BTreeMap::<String, String>::new())
                .map_err(map)?,
        ),
        Location::Rest { url } => {
            let mut url = url::Url::parse(url)
                .map_err(|e| AgentError::Usage(format!("--repository rest: {e}")))?;
            if let (Some(u), Some(p)) = (env("REST_SERVER_USERNAME"), env("REST_SERVER_PASSWORD")) {
                let _ = url.set_username(&u);
                let _ = url.set_password(Some(&p));
            }
            Arc::new(
                RestBackend::new(url.as_str(), BTreeMap::<String, String>::new()).map_err(map)?,
            )
        }
        _ => {
            let Some((service, o)) = opendal_options(loc, opts)? else {
                return Err(AgentError::Usage("no backend".into()));
            };
            Arc::new(OpenDALBackend::new(service, o).map_err(map)?)
        }
    })
}

/// `CA_CERT_DATA` of the repository Secret: opendal's HTTP client trusts the platform roots,
/// which `SSL_CERT_FILE` replaces; we write the system bundle plus this CA there. Must run
/// before any thread starts (it sets an environment variable).
pub fn install_repository_ca(tmp_dir: &std::path::Path) -> Result<()> {
    let Some(ca) = env("CA_CERT_DATA") else {
        return Ok(());
    };
    crate::tls::parse_pem(&ca)?;
    let mut bundle = String::new();
    for sys in [
        "/etc/ssl/certs/ca-certificates.crt",
        "/etc/pki/tls/certs/ca-bundle.crt",
        "/etc/ssl/cert.pem",
    ] {
        if let Ok(text) = std::fs::read_to_string(sys) {
            bundle.push_str(&text);
            bundle.push('\n');
            break;
        }
    }
    bundle.push_str(&ca);
    bundle.push('\n');
    std::fs::create_dir_all(tmp_dir).map_err(|e| AgentError::io("CAIRN_TMP_DIR", e))?;
    let file = tmp_dir.join("repository-ca.pem");
    std::fs::write(&file, bundle).map_err(|e| AgentError::io("write repository CA", e))?;
    // SAFETY: called from main before the runtime or any other thread exists.
    unsafe {
        std::env::set_var("SSL_CERT_FILE", &file);
    }
    Ok(())
}

/// The repository password: `RESTIC_PASSWORD` or the file `RESTIC_PASSWORD_FILE` names.
pub fn password() -> Result<String> {
    if let Some(p) = std::env::var_os("RESTIC_PASSWORD") {
        return Ok(p.to_string_lossy().into_owned());
    }
    if let Some(f) = env("RESTIC_PASSWORD_FILE") {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| AgentError::Credentials(format!("RESTIC_PASSWORD_FILE {f}: {e}")))?;
        return Ok(text.trim_end_matches(['\n', '\r']).to_string());
    }
    Err(AgentError::Credentials(
        "RESTIC_PASSWORD is not set: the repository Secret must hold it".into(),
    ))
}

/// Refuses to write a snapshot file until the dump says it is complete: rustic's archiver skips
/// files it failed to read (with a warning) and would otherwise save a partial snapshot.
#[derive(Debug)]
pub struct GatedBackend {
    inner: Arc<dyn WriteBackend>,
    open: Arc<AtomicBool>,
}

impl GatedBackend {
    pub fn new(inner: Arc<dyn WriteBackend>, open: Arc<AtomicBool>) -> Self {
        Self { inner, open }
    }
}

impl ReadBackend for GatedBackend {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.inner.list_with_size(tpe)
    }
    fn list(&self, tpe: FileType) -> RusticResult<Vec<Id>> {
        self.inner.list(tpe)
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.inner.read_full(tpe, id)
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.inner.read_partial(tpe, id, cacheable, offset, length)
    }
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        self.inner.warmup_path(tpe, id)
    }
    fn needs_warm_up(&self) -> bool {
        self.inner.needs_warm_up()
    }
    fn warm_up(&self, tpe: FileType, id: &Id) -> RusticResult<()> {
        self.inner.warm_up(tpe, id)
    }
}

impl WriteBackend for GatedBackend {
    fn create(&self) -> RusticResult<()> {
        self.inner.create()
    }
    fn write_bytes(&self, tpe: FileType, id: &Id, cacheable: bool, buf: Bytes) -> RusticResult<()> {
        if tpe == FileType::Snapshot && !self.open.load(Ordering::SeqCst) {
            return Err(RusticError::new(
                ErrorKind::Backend,
                "the dump did not complete: no snapshot is written",
            ));
        }
        self.inner.write_bytes(tpe, id, cacheable, buf)
    }
    fn remove(&self, tpe: FileType, id: &Id, cacheable: bool) -> RusticResult<()> {
        self.inner.remove(tpe, id, cacheable)
    }
}

pub type OpenRepo = Repository<OpenStatus>;

/// Opens the repository, creating it when it does not exist yet.
pub fn open(be: Arc<dyn WriteBackend>, opts: &RepoOptions, init: bool) -> Result<OpenRepo> {
    let mut ropts = RepositoryOptions::default().no_cache(opts.no_cache);
    if let Some(dir) = &opts.cache_dir {
        ropts = ropts.cache_dir(dir.clone());
    }
    let backends = RepositoryBackends::new(be, None);
    let repo = Repository::new(&ropts, &backends).map_err(|e| AgentError::rustic("open", e))?;
    let creds = Credentials::password(password()?);
    let exists = repo
        .config_id()
        .map_err(|e| AgentError::rustic("read config", e))?
        .is_some();
    if exists {
        repo.open(&creds)
            .map_err(|e| AgentError::rustic("open (is RESTIC_PASSWORD right?)", e))
    } else if init {
        tracing::info!("initialising the repository");
        repo.init(&creds, &KeyOptions::default(), &new_repository_config())
            .map_err(|e| AgentError::rustic("init", e))
    } else {
        Err(AgentError::Repository(
            "there is no repository at this location".into(),
        ))
    }
}

/// The settings of a repository the agent creates. A pack is assembled in memory (one filling,
/// one being written) and rustic grows packs with the square root of the repository's size
/// unless limited: at its default size, 32 MiB, the agent's memory stays bounded whatever the
/// repository holds. restic ignores the setting.
fn new_repository_config() -> ConfigOptions {
    ConfigOptions::default().set_datapack_size_limit(bytesize::ByteSize::mib(32))
}

/// Retention: restic's `forget` keep rules.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retention {
    pub keep_last: Option<u32>,
    pub keep_hourly: Option<u32>,
    pub keep_daily: Option<u32>,
    pub keep_weekly: Option<u32>,
    pub keep_monthly: Option<u32>,
    pub keep_yearly: Option<u32>,
    pub keep_tags: Vec<String>,
    pub prune: bool,
    pub dry_run: bool,
}

impl Retention {
    /// No keep rule means no retention at all (restic refuses to forget without one).
    pub fn is_set(&self) -> bool {
        self.keep_last.is_some()
            || self.keep_hourly.is_some()
            || self.keep_daily.is_some()
            || self.keep_weekly.is_some()
            || self.keep_monthly.is_some()
            || self.keep_yearly.is_some()
            || !self.keep_tags.is_empty()
    }

    fn keep_options(&self) -> Result<KeepOptions> {
        let n = |v: Option<u32>| v.map(|v| i32::try_from(v).unwrap_or(i32::MAX));
        let mut k = KeepOptions::default()
            .keep_last(n(self.keep_last))
            .keep_hourly(n(self.keep_hourly))
            .keep_daily(n(self.keep_daily))
            .keep_weekly(n(self.keep_weekly))
            .keep_monthly(n(self.keep_monthly))
            .keep_yearly(n(self.keep_yearly));
        if !self.keep_tags.is_empty() {
            let tags: StringList = self
                .keep_tags
                .join(",")
                .parse()
                .map_err(|_| AgentError::Usage("--keep-tags".into()))?;
            k = k.keep_tags(vec![tags]);
        }
        Ok(k)
    }
}

/// What retention did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetentionOutcome {
    pub kept: u64,
    pub removed: u64,
}

/// Applies retention to the snapshots of `host` that `scope` admits (one configuration's own:
/// never another tenant's, never one without cairn's identity), then prunes when asked.
/// Forgetting and pruning need the exclusive lock, as in restic: when `lock` cannot be made
/// exclusive (another process works on the repository) both wait for a later run, with a
/// warning.
pub fn apply_retention(
    repo: &OpenRepo,
    host: &str,
    scope: &crate::identity::RetentionScope,
    r: &Retention,
    lock: Option<&crate::lock::RepoLock>,
) -> Result<RetentionOutcome> {
    let snaps = repo
        .get_matching_snapshots(|s| s.hostname == host && scope.admits(s))
        .map_err(|e| AgentError::rustic("list snapshots", e))?;
    if !r.is_set() {
        return Ok(RetentionOutcome {
            kept: snaps.len() as u64,
            removed: 0,
        });
    }
    let grouped = Grouped::from_items(snaps, SnapshotGroupCriterion::default());
    let now = rustic_core::jiff::Zoned::now();
    let groups =
        ForgetGroups::from_grouped_snapshots_with_retention(grouped, &r.keep_options()?, &now)
            .map_err(|e| AgentError::rustic("retention", e))?;
    let total: u64 = groups.0.iter().map(|g| g.items.len() as u64).sum();
    let forget = groups.into_forget_ids();
    let outcome = RetentionOutcome {
        kept: total - forget.len() as u64,
        removed: forget.len() as u64,
    };
    if r.dry_run {
        tracing::info!(
            would_remove = outcome.removed,
            "retention dry run: nothing removed"
        );
        return Ok(outcome);
    }
    // Nothing to do, or not now: everything is kept.
    if (forget.is_empty() && !r.prune) || !exclusive(lock) {
        return Ok(RetentionOutcome {
            kept: total,
            removed: 0,
        });
    }
    if !forget.is_empty() {
        repo.delete_snapshots(&forget)
            .map_err(|e| AgentError::rustic("forget", e))?;
    }
    if r.prune {
        // restic's behaviour: delete unused packs now, not after rustic's grace period.
        let popts = PruneOptions::default().instant_delete(true);
        let plan = repo
            .prune_plan(&popts)
            .map_err(|e| AgentError::rustic("prune plan", e))?;
        repo.prune(&popts, plan)
            .map_err(|e| AgentError::rustic("prune", e))?;
    }
    Ok(outcome)
}

/// Makes `lock` exclusive; `false` (with a warning) when another process holds the repository.
fn exclusive(lock: Option<&crate::lock::RepoLock>) -> bool {
    match lock.map(crate::lock::RepoLock::upgrade) {
        None | Some(Ok(())) => true,
        Some(Err(e)) => {
            tracing::warn!(error = %e, "retention postponed to a later run");
            false
        }
    }
}

/// Snapshot count and stored bytes.
pub fn totals(repo: &OpenRepo) -> Result<(u64, u64)> {
    let infos = repo
        .infos_files()
        .map_err(|e| AgentError::rustic("repository info", e))?;
    let size = infos.repo.iter().map(|i| i.size).sum();
    let count = infos
        .repo
        .iter()
        .find(|i| i.tpe == FileType::Snapshot)
        .map_or(0, |i| i.count);
    Ok((count, size))
}

/// A structural check (and reading all data when asked). `Ok(false)` when errors were found.
pub fn check(repo: &OpenRepo, read_data: bool) -> Result<bool> {
    let results = repo
        .check(CheckOptions::default().read_data(read_data))
        .map_err(|e| AgentError::rustic("check", e))?;
    for (level, err) in &results.0 {
        tracing::warn!(?level, error = %err, "check finding");
    }
    Ok(results.is_ok().is_ok())
}

/// Finds the snapshot to restore: an id (prefix) or `latest`, among those of `host` when given,
/// within what `scope` lets this restore read.
pub fn find_snapshot(
    repo: &OpenRepo,
    spec: &str,
    host: Option<&str>,
    scope: Option<&crate::identity::RestoreScope>,
) -> Result<SnapshotFile> {
    let host = host.filter(|h| !h.is_empty()).map(String::from);
    let of_host = move |s: &SnapshotFile| host.as_ref().is_none_or(|h| &s.hostname == h);
    let spec = spec.trim();
    if spec.is_empty() || spec == "latest" {
        let mut snaps = repo
            .get_matching_snapshots(|s| of_host(s) && scope.is_none_or(|sc| sc.latest_candidate(s)))
            .map_err(|e| AgentError::rustic("list snapshots", e))?;
        snaps.sort_by(|a, b| a.time.cmp(&b.time));
        snaps.pop().ok_or_else(|| {
            AgentError::Snapshot(match scope {
                Some(sc) => format!(
                    "no snapshot of this host made in namespace {:?}{} in the repository",
                    sc.namespace,
                    sc.configuration
                        .as_deref()
                        .map(|c| format!(" by configuration {c:?}"))
                        .unwrap_or_default()
                ),
                None => "no snapshot of this host in the repository".into(),
            })
        })
    } else {
        let snap = repo
            .get_snapshot_from_str(spec, of_host)
            .map_err(|e| AgentError::rustic(&format!("snapshot {spec}"), e))?;
        if let Some(sc) = scope {
            sc.may_restore(&snap).map_err(AgentError::Snapshot)?;
        }
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_notation() {
        let cases = [
            ("local:/repo/x", Location::Local("/repo/x".into())),
            ("/data", Location::Local("/data".into())),
            (
                "s3:http://127.0.0.1:9000/bucket/some/prefix/",
                Location::S3 {
                    endpoint: "http://127.0.0.1:9000".into(),
                    bucket: "bucket".into(),
                    prefix: "some/prefix".into(),
                },
            ),
            (
                "s3:s3.amazonaws.com/b",
                Location::S3 {
                    endpoint: "https://s3.amazonaws.com".into(),
                    bucket: "b".into(),
                    prefix: String::new(),
                },
            ),
            (
                "gs:bkt:/p/q",
                Location::Gcs {
                    bucket: "bkt".into(),
                    prefix: "p/q".into(),
                },
            ),
            (
                "azure:cont:/p",
                Location::Azure {
                    container: "cont".into(),
                    prefix: "p".into(),
                },
            ),
            (
                "b2:bkt:pre",
                Location::B2 {
                    bucket: "bkt".into(),
                    prefix: "pre".into(),
                },
            ),
            (
                "swift:c:/",
                Location::Swift {
                    container: "c".into(),
                    prefix: String::new(),
                },
            ),
            (
                "rest:http://h:8000/r",
                Location::Rest {
                    url: "http://h:8000/r".into(),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(Location::parse(text).unwrap(), want, "{text}");
        }
        for bad in [
            "",
            "s3:",
            "s3:http://host",
            "ftp:x",
            "rest:host:1",
            "gs::/p",
            "local:",
        ] {
            assert!(Location::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn s3_options() {
        let loc = Location::parse("s3:http://127.0.0.1:9000/bucket/pre").unwrap();
        let opts = RepoOptions {
            region: Some("eu-west-1".into()),
            max_connections: Some(4),
            ..Default::default()
        };
        let keys = |k: &str| {
            Some(match k {
                "AWS_ACCESS_KEY_ID" => "id".to_string(),
                "AWS_SECRET_ACCESS_KEY" => "secret".to_string(),
                _ => return None,
            })
        };
        let (service, o) = options_from(&loc, &opts, &keys).unwrap().unwrap();
        assert_eq!(service, "s3");
        assert_eq!(o["disable_ec2_metadata"], "true");
        assert_eq!(o["access_key_id"], "id");
        // Without keys: refused, never the node's or a ServiceAccount's identity.
        let err = options_from(&loc, &opts, &|_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("AWS_ACCESS_KEY_ID"), "{err}");
        let gcs = Location::parse("gs:bucket:/p").unwrap();
        assert!(options_from(&gcs, &opts, &|_| None).is_err());
        assert_eq!(o["bucket"], "bucket");
        assert_eq!(o["root"], "/pre");
        assert_eq!(o["endpoint"], "http://127.0.0.1:9000");
        assert_eq!(o["region"], "eu-west-1");
        assert_eq!(o["connections"], "4");
    }

    #[test]
    fn retention_needs_a_rule() {
        assert!(!Retention::default().is_set());
        let r = Retention {
            keep_tags: vec!["keep".into()],
            ..Default::default()
        };
        assert!(r.is_set());
        assert!(r.keep_options().is_ok());
    }
}
