//! cairn-certs: serving certificates for the cairn admission webhook.
//!
//! Three layers, each usable on its own:
//!
//! - [`pki`]: pure functions (no I/O besides the clock and the key generator): a self-signed CA,
//!   a serving certificate it issues for the webhook Service's DNS names, parsing and verifying
//!   certificates, and the rotation decision ([`pki::plan`]).
//! - [`cluster`]: the Kubernetes glue: keep the CA and serving certificate in Secrets (rotating
//!   only when needed) and put the CA into the webhook configurations' `caBundle`.
//! - [`files`]: write a serving certificate to a directory (`ca.crt`, `tls.crt`, `tls.key`), the
//!   layout of a mounted `kubernetes.io/tls` Secret, for the test harness and the demo.
//!
//! The binary `cairn-certs` wraps them: `bootstrap` for the install Job and the renewal CronJob,
//! `generate` for local runs.
//! The cert-manager alternative lives in `manifests/certs/`.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod files;
pub mod pki;

pub use cluster::{
    FIELD_MANAGER, TLS_SECRET_TYPE, apply_tls_secret, ca_secret_name, current_bundles,
    ensure_secret, inject_ca_bundle,
};
pub use files::write_files;
pub use pki::{
    Ca, CaSet, CertInfo, CertRequest, Plan, ServingCert, cert_info, generate_ca,
    issue_serving_cert, needs_renewal, plan, service_dns_names, verify_serving_cert,
};

/// Everything that can go wrong here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// rcgen refused to build or sign a certificate.
    #[error("{what}: {source}")]
    Rcgen {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    /// A PEM certificate or key could not be read.
    #[error("parsing {what}: {detail}")]
    Parse { what: String, detail: String },
    /// A certificate does not verify against a CA for a name.
    #[error("verifying the certificate for {name}: {detail}")]
    Verify { name: String, detail: String },
    /// The caller asked for something that cannot work (no names, a validity shorter than the
    /// renewal window, ...).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// An object in the cluster is not what we expect (missing, wrong type, ...).
    #[error("{0}")]
    Cluster(String),
    /// The Kubernetes API server answered with an error.
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    /// Reading or writing a local file failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
