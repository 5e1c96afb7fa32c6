//! A throwaway PKI for tests: a certificate authority and the certificates it issues.
//!
//! The control plane uses one CA for everything: the kube-apiserver serving certificate, the admin
//! client certificate (group `system:masters`), and later the serving certificates of webhooks under
//! test (registered with `clientConfig.url` and this CA as `caBundle`). Keys are ECDSA P-256.

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
};

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct IssuedCert {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A self-signed certificate authority that issues server and client certificates.
pub struct CertificateAuthority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// A new CA with a fresh key.
    pub fn new(common_name: &str) -> Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, &[]);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let issuer = CertifiedIssuer::self_signed(params, key).context("self-signing the CA")?;
        Ok(Self { issuer })
    }

    /// The CA certificate (PEM): the trust root for clients, and a webhook's `caBundle` (base64).
    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    /// A serving certificate for `names` (DNS names or IP addresses, e.g. `127.0.0.1`).
    pub fn server_cert(&self, common_name: &str, names: &[&str]) -> Result<IssuedCert> {
        let sans: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans)
            .with_context(|| format!("certificate parameters for {names:?}"))?;
        params.distinguished_name = name(common_name, &[]);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(params, common_name)
    }

    /// A client certificate: Kubernetes reads the user from CN and the groups from O.
    pub fn client_cert(&self, common_name: &str, groups: &[&str]) -> Result<IssuedCert> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, groups);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(params, common_name)
    }

    fn issue(&self, params: CertificateParams, what: &str) -> Result<IssuedCert> {
        let key = KeyPair::generate().with_context(|| format!("generating a key for {what}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing the certificate of {what}"))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// A key pair for signing service-account tokens: (private key PEM, public key PEM).
pub fn service_account_key() -> Result<(String, String)> {
    let key = KeyPair::generate().context("generating the service-account key")?;
    Ok((key.serialize_pem(), key.public_key_pem()))
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issues_pem_certificates() {
        let ca = CertificateAuthority::new("test-ca").expect("CA");
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
        let server = ca
            .server_cert("server", &["localhost", "127.0.0.1"])
            .expect("server cert");
        assert!(server.cert_pem.contains("BEGIN CERTIFICATE"));
        assert!(server.key_pem.contains("BEGIN PRIVATE KEY"));
        let client = ca
            .client_cert("admin", &["system:masters"])
            .expect("client cert");
        assert_ne!(client.cert_pem, server.cert_pem);
        let (private, public) = service_account_key().expect("sa key");
        assert!(private.contains("PRIVATE KEY") && public.contains("PUBLIC KEY"));
    }
}
