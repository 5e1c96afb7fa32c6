//! The serving certificate, reloaded when its files change (a Secret volume update or a
//! rotation) without a restart: each handshake takes the current key under a short read lock.
//! Each load also exports the expiry of what is served (`tls.crt`'s leaf) and of the CA beside it
//! (`ca.crt` in the same directory, as a mounted `kubernetes.io/tls` Secret has it), so an alert
//! fires before either runs out, whoever renews them.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::sync::atomic::AtomicU64;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: no PEM certificate found")]
    NoCertificate { path: String },
    #[error("{path}: no usable PEM private key: {reason}")]
    BadKey { path: String, reason: String },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The current certificate and key, swapped in place on reload.
#[derive(Debug)]
pub struct ReloadingCert {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    stamp: RwLock<Option<(SystemTime, SystemTime)>>,
    expiry: CertificateExpiry,
}

/// notAfter (Unix seconds) by `certificate`: `serving` (the leaf of `tls.crt`) and `ca` (the
/// soonest of `ca.crt`, when that file exists).
pub type CertificateExpiry = Family<CertificateLabels, Gauge<f64, AtomicU64>>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabels {
    pub certificate: &'static str,
}

/// The expiry of the first certificate of each PEM block list, in Unix seconds.
fn not_afters(pem: &str) -> Vec<f64> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|block| block.contains("-----BEGIN CERTIFICATE-----"))
        .filter_map(|block| cairn_certs::cert_info(block).ok())
        .filter_map(|info| info.not_after.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64())
        .collect()
}

impl ReloadingCert {
    /// Sets the expiry gauges from the files now on disk.
    fn export_expiry(&self) {
        let read = |p: &Path| std::fs::read_to_string(p).ok();
        let serving = read(&self.cert_path).and_then(|pem| not_afters(&pem).first().copied());
        let ca_path = self.cert_path.with_file_name("ca.crt");
        let ca = read(&ca_path).and_then(|pem| not_afters(&pem).into_iter().reduce(f64::min));
        for (certificate, at) in [("serving", serving), ("ca", ca)] {
            let labels = CertificateLabels { certificate };
            match at {
                Some(at) => {
                    self.expiry.get_or_create(&labels).set(at);
                }
                None => {
                    self.expiry.remove(&labels);
                }
            }
        }
    }

    /// The expiry gauges, to register with the metrics.
    pub fn expiry(&self) -> CertificateExpiry {
        self.expiry.clone()
    }
}

fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|source| TlsError::Read {
            path: p.display().to_string(),
            source,
        })
    };
    let cert_pem = read(cert_path)?;
    let key_pem = read(key_path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.display().to_string(),
        });
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::BadKey {
        path: key_path.display().to_string(),
        reason: e.to_string(),
    })?;
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let certified = CertifiedKey::from_der(certs, key, &provider)?;
    Ok(Arc::new(certified))
}

fn mtimes(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let c = std::fs::metadata(cert).and_then(|m| m.modified()).ok()?;
    let k = std::fs::metadata(key).and_then(|m| m.modified()).ok()?;
    Some((c, k))
}

impl ReloadingCert {
    /// Loads the certificate and key; fails when they are missing or do not match.
    pub fn new(cert_path: PathBuf, key_path: PathBuf) -> Result<Arc<Self>, TlsError> {
        let current = load(&cert_path, &key_path)?;
        let stamp = mtimes(&cert_path, &key_path);
        let me = Self {
            cert_path,
            key_path,
            current: RwLock::new(current),
            stamp: RwLock::new(stamp),
            expiry: CertificateExpiry::default(),
        };
        me.export_expiry();
        Ok(Arc::new(me))
    }

    /// Reloads when the files changed. A half-written pair (a key that does not match yet) is
    /// skipped and retried on the next tick; the old certificate keeps serving meanwhile.
    pub fn reload_if_changed(&self) -> bool {
        let now = mtimes(&self.cert_path, &self.key_path);
        let changed = self.stamp.read().map(|s| *s != now).unwrap_or(true);
        if !changed {
            return false;
        }
        match load(&self.cert_path, &self.key_path) {
            Ok(new) => {
                if let Ok(mut cur) = self.current.write() {
                    *cur = new;
                }
                if let Ok(mut s) = self.stamp.write() {
                    *s = now;
                }
                self.export_expiry();
                tracing::info!(cert = %self.cert_path.display(), "serving certificate reloaded");
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "serving certificate changed but cannot be loaded yet; keeping the old one");
                false
            }
        }
    }

    /// Polls the files every `interval` until the process ends.
    pub fn watch(self: &Arc<Self>, interval: Duration) {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            loop {
                tick.tick().await;
                me.reload_if_changed();
            }
        });
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| Arc::clone(&c))
    }
}

/// TLS 1.2 and 1.3 only, with the provider's modern cipher suites, HTTP/2 and HTTP/1.1.
pub fn server_config(cert: Arc<ReloadingCert>) -> Result<ServerConfig, TlsError> {
    let provider = CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()));
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(cert);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
