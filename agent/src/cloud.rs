//! Object stores (S3, GCS, Azure, B2, Swift) through opendal, with the HTTP client under our
//! control: the one operator both the repository backend and [`crate::files::Store`] use, and
//! cairn's own rustic backend over it (rustic's `OpenDALBackend` builds its client inside, so
//! `insecureTLS` could not reach it).
//!
//! TLS: the platform's roots plus the repository Secret's `CA_CERT_DATA` (see
//! [`crate::location::install_repository_ca`]), or, with `--insecure-tls=true`, a client that
//! accepts any certificate.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use opendal::Operator;
use opendal::layers::{ConcurrentLimitLayer, HttpClientLayer, RetryLayer};
use opendal::options::{ListOptions, ReadOptions};
use opendal::raw::HttpClient;
use rustic_core::{
    ALL_FILE_TYPES, ErrorKind, FileType, Id, ReadBackend, RusticError, RusticResult, WriteBackend,
};

use crate::error::{AgentError, Result, redact_url};
use crate::location::{Location, RepoOptions, opendal_options};

/// How often a failed request is retried (with backoff and jitter), as rustic's backend did.
const RETRIES: usize = 5;

/// The operator for a cloud location, with cairn's HTTP client and the connection limit; the
/// caller adds its retry and timeout layers.
pub fn operator(loc: &Location, opts: &RepoOptions) -> Result<Operator> {
    let Some((service, map)) = opendal_options(loc, opts)? else {
        return Err(AgentError::Usage(format!(
            "{} is not an object store",
            display_name(loc)
        )));
    };
    let mut op = Operator::via_iter(service, map)
        .map_err(|e| {
            AgentError::Repository(format!(
                "backend {}: {}",
                display_name(loc),
                opendal_reason(&e)
            ))
        })?
        .layer(HttpClientLayer::new(http_client(opts.insecure_tls)?));
    if let Some(n) = opts.max_connections.filter(|n| *n > 0) {
        op = op.layer(ConcurrentLimitLayer::new(n as usize));
    }
    Ok(op)
}

/// opendal's own client (the platform's roots, which `CA_CERT_DATA` extends), or with
/// `insecure` one that accepts any certificate.
fn http_client(insecure: bool) -> Result<HttpClient> {
    if !insecure {
        return Ok(HttpClient::default());
    }
    tracing::warn!("insecureTLS: the storage server's certificate is NOT verified");
    let client = reqwest013::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .map_err(|e| AgentError::Usage(format!("storage HTTP client: {e}")))?;
    Ok(HttpClient::with(client))
}

/// The location for messages, without credentials.
pub fn display_name(loc: &Location) -> String {
    match loc {
        Location::S3 {
            endpoint,
            bucket,
            prefix,
        } => redact_url(&format!("s3:{endpoint}/{bucket}/{prefix}")),
        other => format!("{other:?}"),
    }
}

/// One line for an opendal error, with its causes (a TLS verification failure is a cause of a
/// cause), without user info; a certificate the client does not trust says how to fix it.
pub fn opendal_reason(e: &opendal::Error) -> String {
    let mut text = format!("{} ({})", e.kind(), e.message());
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    let mut text = redact_url(&text.replace('\n', " "));
    if let Some(hint) = certificate_hint(&text) {
        text.push_str(hint);
    }
    text
}

/// What fixes the TLS client's refusal of the server's certificate, when an error's text is one
/// (rustls says "invalid peer certificate: UnknownIssuer", "...: Expired", ...).
fn certificate_hint(text: &str) -> Option<&'static str> {
    if text.contains("CaUsedAsEndEntity") {
        Some(
            " (the storage server's certificate is a CA certificate (basicConstraints CA:TRUE), \
             which TLS refuses as a server's even when trusted: give the server a certificate \
             with CA:FALSE, or one a CA issued with the CA's certificate in the repository \
             Secret's CA_CERT_DATA, or set insecureTLS: true in the Repository's s3 backend)",
        )
    } else if text.contains("peer certificate") {
        Some(
            " (the storage server's TLS certificate is not trusted: put its CA certificate (or a \
             self-signed certificate itself) in the repository Secret's CA_CERT_DATA, or set \
             insecureTLS: true in the Repository's s3 backend to skip verification)",
        )
    } else {
        None
    }
}

/// restic's path of a repository file.
fn file_path(tpe: FileType, id: &Id) -> String {
    let hex = id.to_hex();
    match tpe {
        FileType::Config => "config".into(),
        FileType::Pack => format!("data/{}/{}", &hex[..2], &hex[..]),
        _ => format!("{}/{}", tpe.dirname(), &hex[..]),
    }
}

/// A rustic error for a failed request. rustic reads `{...}` in a message as a placeholder,
/// so the reason goes in as context.
fn failed(what: &str, path: &str, e: &opendal::Error) -> Box<RusticError> {
    RusticError::new(ErrorKind::Backend, "{what} {path}: {reason}")
        .attach_context("what", what.to_string())
        .attach_context("path", path.to_string())
        .attach_context("reason", opendal_reason(e))
}

/// rustic's backend for an object store. Synchronous, as rustic calls it: each call runs on
/// the backend's runtime. Deadlines are [`crate::repo::TimedBackend`]'s.
pub struct CloudBackend {
    op: Operator,
    rt: tokio::runtime::Runtime,
    name: String,
}

impl std::fmt::Debug for CloudBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CloudBackend({})", self.name)
    }
}

impl CloudBackend {
    pub fn new(loc: &Location, opts: &RepoOptions) -> Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cairn-storage")
            .enable_all()
            .build()
            .map_err(|e| AgentError::io("start the storage runtime", e))?;
        let op = {
            let _guard = rt.enter();
            operator(loc, opts)?.layer(RetryLayer::new().with_max_times(RETRIES).with_jitter())
        };
        Ok(Self {
            op,
            rt,
            name: display_name(loc),
        })
    }

    /// The files of `tpe` with their sizes (`config` alone is a file, not a directory).
    async fn list_sized(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        if tpe == FileType::Config {
            return match self.op.stat("config").await {
                Ok(meta) => Ok(vec![(
                    Id::default(),
                    u32::try_from(meta.content_length()).unwrap_or(u32::MAX),
                )]),
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
                Err(e) => Err(failed("stat", "config", &e)),
            };
        }
        let dir = format!("{}/", tpe.dirname());
        let options = ListOptions {
            recursive: true,
            ..Default::default()
        };
        let entries = match self.op.list_options(&dir, options).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(failed("list", &dir, &e)),
        };
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            let meta = entry.metadata();
            let Some(id) = Id::parse_some(entry.name(), tpe).filter(|_| meta.is_file()) else {
                continue;
            };
            let size = u32::try_from(meta.content_length()).map_err(|_| {
                RusticError::new(ErrorKind::Backend, "{path} is larger than 4 GiB")
                    .attach_context("path", entry.path().to_string())
            })?;
            out.push((id, size));
        }
        Ok(out)
    }

    async fn read_range(
        &self,
        tpe: FileType,
        id: &Id,
        range: Option<(u32, u32)>,
    ) -> RusticResult<Bytes> {
        let path = file_path(tpe, id);
        let mut options = ReadOptions::default();
        if let Some((offset, length)) = range {
            options.range = (u64::from(offset)..u64::from(offset) + u64::from(length)).into();
        }
        self.op
            .read_options(&path, options)
            .await
            .map(|b| b.to_bytes())
            .map_err(|e| failed("read", &path, &e))
    }
}

impl ReadBackend for CloudBackend {
    fn location(&self) -> String {
        self.name.clone()
    }
    fn list_with_size(&self, tpe: FileType) -> RusticResult<Vec<(Id, u32)>> {
        self.rt.block_on(self.list_sized(tpe))
    }
    fn read_full(&self, tpe: FileType, id: &Id) -> RusticResult<Bytes> {
        self.rt.block_on(self.read_range(tpe, id, None))
    }
    /// The object's key in the bucket (cairn runs no warm-up command; rustic asks anyway).
    fn warmup_path(&self, tpe: FileType, id: &Id) -> String {
        let root = self.op.info().root();
        let root = root.trim_matches('/');
        let path = file_path(tpe, id);
        if root.is_empty() {
            path
        } else {
            format!("{root}/{path}")
        }
    }
    fn read_partial(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        offset: u32,
        length: u32,
    ) -> RusticResult<Bytes> {
        self.rt
            .block_on(self.read_range(tpe, id, Some((offset, length))))
    }
}

impl WriteBackend for CloudBackend {
    /// restic's directories, as restic makes them (object stores keep them as markers).
    fn create(&self) -> RusticResult<()> {
        let dirs = ALL_FILE_TYPES
            .iter()
            .filter(|t| **t != FileType::Config)
            .map(|t| format!("{}/", t.dirname()))
            .chain((0u8..=255).map(|i| format!("data/{i:02x}/")));
        self.rt.block_on(async {
            // 261 requests: a few at a time, as rustic's backend did.
            futures::stream::iter(dirs.map(|d| async move {
                self.op
                    .create_dir(&d)
                    .await
                    .map_err(|e| failed("create", &d, &e))
            }))
            .buffer_unordered(16)
            .try_collect::<Vec<()>>()
            .await
            .map(|_| ())
        })
    }
    fn write_bytes(
        &self,
        tpe: FileType,
        id: &Id,
        _cacheable: bool,
        buf: Bytes,
    ) -> RusticResult<()> {
        let path = file_path(tpe, id);
        self.rt.block_on(async {
            self.op
                .write(&path, buf)
                .await
                .map(|_| ())
                .map_err(|e| failed("write", &path, &e))
        })
    }
    fn remove(&self, tpe: FileType, id: &Id, _cacheable: bool) -> RusticResult<()> {
        let path = file_path(tpe, id);
        self.rt.block_on(async {
            self.op
                .delete(&path)
                .await
                .map_err(|e| failed("remove", &path, &e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restic_layout() {
        let id = Id::default();
        let hex = id.to_hex();
        assert_eq!(file_path(FileType::Config, &id), "config");
        assert_eq!(
            file_path(FileType::Pack, &id),
            format!("data/{}/{}", &hex[..2], &hex[..])
        );
        assert_eq!(
            file_path(FileType::Snapshot, &id),
            format!("snapshots/{}", &hex[..])
        );
    }

    #[test]
    fn an_untrusted_certificate_says_how_to_fix_it() {
        let hint = certificate_hint(
            "Unexpected (send http request): error sending request: client error (Connect): \
             invalid peer certificate: UnknownIssuer",
        )
        .unwrap_or_default();
        assert!(
            hint.contains("CA_CERT_DATA") && hint.contains("insecureTLS"),
            "{hint}"
        );
        let hint =
            certificate_hint("invalid peer certificate: Other(OtherError(CaUsedAsEndEntity))")
                .unwrap_or_default();
        assert!(
            hint.contains("CA:FALSE") && hint.contains("insecureTLS"),
            "{hint}"
        );
        assert_eq!(certificate_hint("PermissionDenied (403)"), None);
    }
}
