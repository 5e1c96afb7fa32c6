//! Pure PKI functions: a CA, serving certificates, parsing, verification and the rotation plan.
//!
//! No I/O besides reading the clock and generating keys. Keys are ECDSA P-256 (accepted by the
//! Kubernetes API server's Go TLS stack and by rustls); the signature algorithm is ECDSA-SHA256.
//! Times cross the API as [`SystemTime`] and [`Duration`].

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{RootCertStore, crypto::ring};
use time::OffsetDateTime;
use x509_parser::extensions::GeneralName;

use crate::{Error, Result};

/// notBefore is back-dated by this much: the API server's clock may lag the issuer's.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// The longest validity accepted; beyond it dates leave the range X.509 tools handle well.
pub const MAX_VALIDITY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A certificate authority: its self-signed certificate and private key, both PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct Ca {
    pub cert_pem: String,
    pub key_pem: String,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .finish()
    }
}

impl Ca {
    /// Parse the certificate, and check that it is a CA and that the key belongs to it.
    pub fn check(&self) -> Result<CertInfo> {
        let info = cert_info(&self.cert_pem)?;
        if !info.is_ca {
            return Err(Error::Invalid(
                "the CA certificate lacks basicConstraints CA:true".into(),
            ));
        }
        let key = parse_key(&self.key_pem, "the CA key")?;
        if key.public_key_raw() != info.public_key.as_slice() {
            return Err(Error::Invalid(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        Ok(info)
    }
}

/// A serving certificate, its private key and the CA that issued it, all PEM: the three entries
/// `tls.crt`, `tls.key` and `ca.crt` of a `kubernetes.io/tls` Secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ServingCert {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

impl fmt::Debug for ServingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServingCert")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[elided]")
            .field("ca_pem", &self.ca_pem)
            .finish()
    }
}

/// What [`cert_info`] reads from a certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertInfo {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    /// DNS names of the subjectAltName extension, in certificate order.
    pub dns_names: Vec<String>,
    /// IP addresses of the subjectAltName extension, in certificate order.
    pub ip_addresses: Vec<IpAddr>,
    /// basicConstraints CA:true.
    pub is_ca: bool,
    /// The raw subjectPublicKey bits (for ECDSA: the uncompressed point), to match a key.
    pub public_key: Vec<u8>,
}

/// A new self-signed CA (ECDSA P-256, basicConstraints CA:true pathlen:0, keyCertSign), valid
/// from a few minutes ago ([`CLOCK_SKEW`]) for `validity`.
pub fn generate_ca(common_name: &str, validity: Duration) -> Result<Ca> {
    generate_ca_at(common_name, validity, SystemTime::now())
}

fn generate_ca_at(common_name: &str, validity: Duration, now: SystemTime) -> Result<Ca> {
    check_validity(validity)?;
    if common_name.trim().is_empty() {
        return Err(Error::Invalid("the CA common name is empty".into()));
    }
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name);
    // pathlen 0: this CA only ever signs serving certificates, never another CA.
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.not_before = to_offset(now.checked_sub(CLOCK_SKEW).unwrap_or(now))?;
    params.not_after = to_offset(add(now, validity)?)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(rcgen_err("generating the CA key"))?;
    let cert = params
        .self_signed(&key)
        .map_err(rcgen_err("self-signing the CA certificate"))?;
    Ok(Ca {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A serving certificate signed by `ca` for `dns_names` and `ip_addresses` (the subjectAltName;
/// the common name is the first of them), with a fresh ECDSA P-256 key, extendedKeyUsage
/// serverAuth, valid for `validity` but never past the CA's own notAfter.
pub fn issue_serving_cert(
    ca: &Ca,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    validity: Duration,
) -> Result<ServingCert> {
    issue_serving_cert_at(ca, dns_names, ip_addresses, validity, SystemTime::now())
}

fn issue_serving_cert_at(
    ca: &Ca,
    dns_names: &[String],
    ip_addresses: &[IpAddr],
    validity: Duration,
    now: SystemTime,
) -> Result<ServingCert> {
    check_validity(validity)?;
    check_names(dns_names, ip_addresses)?;
    let ca_info = ca.check()?;
    if ca_info.not_after <= now {
        return Err(Error::Invalid("the CA certificate has expired".into()));
    }
    let ca_key = parse_key(&ca.key_pem, "the CA key")?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)
        .map_err(rcgen_err("reading the CA certificate"))?;

    let dns_names = dedup(dns_names);
    let ip_addresses = dedup(ip_addresses);
    let mut params = CertificateParams::default();
    let common_name = match dns_names.first() {
        Some(name) => name.clone(),
        None => ip_addresses
            .first()
            .map(IpAddr::to_string)
            .unwrap_or_default(),
    };
    params.distinguished_name = distinguished_name(&common_name);
    for name in &dns_names {
        let ia5 = name
            .as_str()
            .try_into()
            .map_err(rcgen_err(&format!("DNS name {name:?}")))?;
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    params
        .subject_alt_names
        .extend(ip_addresses.iter().copied().map(SanType::IpAddress));
    // ECDSA keys only sign; keyEncipherment is for RSA key transport.
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    // Inside the CA's own window: a chain verifier rejects a leaf that outlives its issuer.
    let not_before = now.checked_sub(CLOCK_SKEW).unwrap_or(now);
    params.not_before = to_offset(not_before.max(ca_info.not_before))?;
    params.not_after = to_offset(add(now, validity)?.min(ca_info.not_after))?;

    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(rcgen_err("generating the serving key"))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(rcgen_err("signing the serving certificate"))?;
    Ok(ServingCert {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
        ca_pem: ca.cert_pem.clone(),
    })
}

/// The names a client inside the cluster may use for `service` in `namespace`: `svc`, `svc.ns`,
/// `svc.ns.svc` (what the API server dials for a webhook `service` reference) and
/// `svc.ns.svc.cluster.local`.
pub fn service_dns_names(service: &str, namespace: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.cluster.local"),
    ]
}

/// Whether the certificate (first PEM block) expires within `renew_before` of `now`, or has
/// expired. Errors when the PEM is not a certificate.
pub fn needs_renewal(cert_pem: &str, now: SystemTime, renew_before: Duration) -> Result<bool> {
    let info = cert_info(cert_pem)?;
    Ok(match now.checked_add(renew_before) {
        Some(deadline) => deadline >= info.not_after,
        None => true,
    })
}

/// Read validity, subjectAltName, CA flag and public key of the first certificate in `cert_pem`.
pub fn cert_info(cert_pem: &str) -> Result<CertInfo> {
    let parse_err = |detail: String| Error::Parse {
        what: "a PEM certificate".into(),
        detail,
    };
    let (_, pem) = x509_parser::pem::parse_x509_pem(cert_pem.as_bytes())
        .map_err(|e| parse_err(e.to_string()))?;
    if pem.label != "CERTIFICATE" {
        return Err(parse_err(format!(
            "expected a CERTIFICATE block, found {}",
            pem.label
        )));
    }
    let cert = pem.parse_x509().map_err(|e| parse_err(e.to_string()))?;
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    let san = cert
        .subject_alternative_name()
        .map_err(|e| parse_err(e.to_string()))?;
    for name in san.iter().flat_map(|ext| ext.value.general_names.iter()) {
        match name {
            GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
            GeneralName::IPAddress(bytes) => {
                if let Some(ip) = ip_from_bytes(bytes) {
                    ip_addresses.push(ip);
                }
            }
            _ => {}
        }
    }
    let validity = cert.validity();
    Ok(CertInfo {
        not_before: from_unix(validity.not_before.timestamp()),
        not_after: from_unix(validity.not_after.timestamp()),
        dns_names,
        ip_addresses,
        is_ca: cert.is_ca(),
        public_key: cert.public_key().subject_public_key.data.to_vec(),
    })
}

/// Verify, as a TLS client would (webpki, serverAuth), that the certificate chain in `cert_pem`
/// (leaf first) is valid at `now` for `server_name` (a DNS name or an IP address) and chains to
/// one of the CAs in `ca_bundle_pem`.
pub fn verify_serving_cert(
    cert_pem: &str,
    ca_bundle_pem: &str,
    server_name: &str,
    now: SystemTime,
) -> Result<()> {
    let verify_err = |detail: String| Error::Verify {
        name: server_name.to_string(),
        detail,
    };
    let mut roots = RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_bundle_pem.as_bytes()) {
        let ca = ca.map_err(|e| verify_err(format!("reading the CA bundle: {e}")))?;
        roots
            .add(ca)
            .map_err(|e| verify_err(format!("adding a CA: {e}")))?;
    }
    if roots.is_empty() {
        return Err(verify_err("the CA bundle holds no certificate".into()));
    }
    let mut chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes());
    let leaf = chain
        .next()
        .ok_or_else(|| verify_err("no certificate".into()))?
        .map_err(|e| verify_err(format!("reading the certificate: {e}")))?;
    let intermediates = chain
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| verify_err(format!("reading the chain: {e}")))?;
    let name = ServerName::try_from(server_name.to_string())
        .map_err(|e| verify_err(format!("not a DNS name or IP address: {e}")))?;
    let since_epoch = now
        .duration_since(UNIX_EPOCH)
        .map_err(|_| verify_err("the time is before 1970".into()))?;
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(ring::default_provider()),
    )
    .build()
    .map_err(|e| verify_err(e.to_string()))?;
    verifier
        .verify_server_cert(
            &leaf,
            &intermediates,
            &name,
            &[],
            UnixTime::since_unix_epoch(since_epoch),
        )
        .map_err(|e| verify_err(e.to_string()))?;
    Ok(())
}

/// What to issue for the webhook, and when to renew it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertRequest {
    /// Common name of a CA made here.
    pub ca_common_name: String,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Lifetime of a new serving certificate.
    pub validity: Duration,
    /// Lifetime of a new CA.
    pub ca_validity: Duration,
    /// Renew the serving certificate this long before it expires.
    pub renew_before: Duration,
    /// Start rotating the CA this long before it expires. Wider than `renew_before`, so the
    /// rotation (three runs: publish, switch, drop) ends before a certificate the old CA
    /// signed falls due.
    pub ca_renew_before: Duration,
    /// How long a change must have been out before the next step builds on it: a new CA in
    /// the caBundle before it signs (the API servers' webhook clients pick the bundle up), a
    /// new serving certificate before the previous CA leaves the bundle (the kubelet refreshes a
    /// Secret volume after a minute or two).
    pub overlap: Duration,
}

impl CertRequest {
    /// The defaults for a Service: [`service_dns_names`], a one-year serving certificate, a
    /// ten-year CA, renewal 30 days before expiry, CA rotation from 60 days before its expiry,
    /// 10 minutes of overlap.
    pub fn for_service(service: &str, namespace: &str) -> Self {
        Self {
            ca_common_name: format!("{service}.{namespace} webhook CA"),
            dns_names: service_dns_names(service, namespace),
            ip_addresses: Vec::new(),
            validity: 365 * DAY,
            ca_validity: 3650 * DAY,
            renew_before: 30 * DAY,
            ca_renew_before: 60 * DAY,
            overlap: Duration::from_secs(600),
        }
    }

    fn check(&self) -> Result<()> {
        check_validity(self.validity)?;
        check_validity(self.ca_validity)?;
        check_names(&self.dns_names, &self.ip_addresses)?;
        // Otherwise every run would find the fresh certificate due and rotate it again.
        if self.validity <= self.renew_before || self.ca_validity <= self.ca_renew_before {
            return Err(Error::Invalid(format!(
                "the validity must exceed the renewal window: {}s serving against {}s, {}s CA against {}s",
                self.validity.as_secs(),
                self.renew_before.as_secs(),
                self.ca_validity.as_secs(),
                self.ca_renew_before.as_secs()
            )));
        }
        Ok(())
    }
}

/// The CA Secret's contents: the CA that signs (`active`), during a rotation the one that will
/// sign next (`next`, already in the caBundle), and the one that signed before (`previous`,
/// certificate only, kept in the caBundle while a certificate it signed may still be served).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaSet {
    pub active: Ca,
    pub next: Option<Ca>,
    pub previous: Option<String>,
}

/// The outcome of [`plan`]: what the Secrets and the caBundle should hold.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub cas: CaSet,
    /// Why the CA Secret changes; `None` when it is kept as it is.
    pub ca_rotation: Option<String>,
    pub serving: ServingCert,
    /// Why a new serving certificate was issued; `None` when the existing one is kept.
    pub serving_rotation: Option<String>,
    /// PEM for the webhook configurations' `caBundle`: the active CA, then the next one (during
    /// a rotation), then the previous one (while a certificate it signed may still be served).
    pub ca_bundle: String,
}

/// Decide what to keep and what to make new, from what the Secrets hold now and the caBundles
/// the webhook configurations hold now (`trusted`, one per webhook entry).
///
/// A CA rotation takes three runs, each only after `overlap` since the previous step, so no
/// client ever meets a certificate from a CA it does not trust:
/// 1. the active CA is within `ca_renew_before` of expiry: a next CA is made and added to the
///    caBundle; nothing signs with it yet;
/// 2. the next CA is in every caBundle and was made `overlap` ago: it becomes active and the
///    serving certificate is reissued by it; the old CA stays in the caBundle as `previous`;
/// 3. the serving certificate was issued by the active CA `overlap` ago: `previous` leaves.
///
/// A CA that is unusable (missing, unparsable, key mismatch) is replaced at once, as there is
/// nothing to overlap with. The serving certificate is kept when it parses, its key matches,
/// its subjectAltName is exactly the requested names, it is not within `renew_before` of
/// expiry, it verifies against the active CA, and `ca.crt` is that CA.
pub fn plan(
    existing_ca: Option<&CaSet>,
    existing_serving: Option<&ServingCert>,
    trusted: &[String],
    request: &CertRequest,
    now: SystemTime,
) -> Result<Plan> {
    request.check()?;
    let (mut cas, mut ca_rotation) = next_cas(existing_ca, trusted, request, now)?;

    let serving_problem = match existing_serving {
        None => Some("no serving certificate yet".to_string()),
        Some(serving) => usable_serving(serving, &cas.active, request, now).err(),
    };
    let serving = match (&serving_problem, existing_serving) {
        (None, Some(serving)) => serving.clone(),
        _ => issue_serving_cert_at(
            &cas.active,
            &request.dns_names,
            &request.ip_addresses,
            request.validity,
            now,
        )?,
    };

    // The CA of a replaced certificate stays trusted while that certificate may be served.
    let served_ca = existing_serving.map(|s| s.ca_pem.trim().to_string());
    if serving_problem.is_some()
        && let Some(old) = served_ca.as_deref().filter(|old| valid_ca_at(old, now))
        && old != cas.active.cert_pem.trim()
    {
        if cas.previous.as_deref().map(str::trim) != Some(old) {
            ca_rotation.get_or_insert_with(|| "the previous CA stays trusted".into());
        }
        cas.previous = Some(old.to_string());
    } else if let Some(previous) = &cas.previous {
        let switched_long_ago = existing_serving.is_some_and(|s| {
            s.ca_pem.trim() == cas.active.cert_pem.trim()
                && issued_at(&s.cert_pem).is_some_and(|at| at + request.overlap <= now)
        });
        if switched_long_ago || !valid_ca_at(previous, now) {
            cas.previous = None;
            ca_rotation.get_or_insert_with(|| "the previous CA leaves the caBundle".into());
        }
    }

    let mut bundle = vec![cas.active.cert_pem.trim().to_string()];
    let others = [
        cas.next.as_ref().map(|c| c.cert_pem.trim()),
        cas.previous.as_deref().map(str::trim),
    ];
    for pem in others.into_iter().flatten() {
        if !bundle.iter().any(|b| b == pem) {
            bundle.push(pem.to_string());
        }
    }
    Ok(Plan {
        cas,
        ca_rotation,
        serving,
        serving_rotation: serving_problem,
        ca_bundle: bundle.join("\n") + "\n",
    })
}

/// The CA step of [`plan`]: the CA set after this run, and why it changed.
fn next_cas(
    existing: Option<&CaSet>,
    trusted: &[String],
    request: &CertRequest,
    now: SystemTime,
) -> Result<(CaSet, Option<String>)> {
    let fresh = |why: String| -> Result<(CaSet, Option<String>)> {
        let active = generate_ca_at(&request.ca_common_name, request.ca_validity, now)?;
        let previous = existing
            .map(|set| set.active.cert_pem.trim().to_string())
            .filter(|pem| valid_ca_at(pem, now));
        Ok((
            CaSet {
                active,
                next: None,
                previous,
            },
            Some(why),
        ))
    };
    let Some(set) = existing else {
        return fresh("no CA yet".into());
    };
    let info = match set.active.check() {
        Ok(info) => info,
        Err(e) => return fresh(format!("the CA is unusable: {e}")),
    };
    let mut cas = set.clone();
    // A next CA that cannot sign is useless: start over with another.
    let next_usable = |ca: &Ca| ca.check().is_ok_and(|i| i.not_after > now);
    if cas.next.as_ref().is_some_and(|ca| !next_usable(ca)) {
        cas.next = None;
    }
    if !due(&info, now, request.ca_renew_before) {
        let changed = (cas.next != set.next).then(|| "the next CA was unusable".to_string());
        return Ok((cas, changed));
    }
    match cas.next.take() {
        None => {
            cas.next = Some(generate_ca_at(
                &request.ca_common_name,
                request.ca_validity,
                now,
            )?);
            Ok((
                cas,
                Some("the CA expires soon: a next CA joins the caBundle".into()),
            ))
        }
        Some(next) if published(&next, trusted, request.overlap, now) => {
            cas.active = next;
            Ok((
                cas,
                Some("the next CA, trusted for long enough, now signs".into()),
            ))
        }
        Some(next) => {
            cas.next = Some(next);
            let changed = (cas.next != set.next).then(|| "the next CA was unusable".to_string());
            Ok((cas, changed))
        }
    }
}

/// Whether `next` was made at least `overlap` ago and every caBundle holds it.
fn published(next: &Ca, trusted: &[String], overlap: Duration, now: SystemTime) -> bool {
    let pem = next.cert_pem.trim();
    issued_at(&next.cert_pem).is_some_and(|at| at + overlap <= now)
        && trusted.iter().all(|bundle| bundle.contains(pem))
}

/// When a certificate made here was made: its notBefore is back-dated by [`CLOCK_SKEW`].
fn issued_at(cert_pem: &str) -> Option<SystemTime> {
    let info = cert_info(cert_pem).ok()?;
    info.not_before.checked_add(CLOCK_SKEW)
}

fn valid_ca_at(pem: &str, now: SystemTime) -> bool {
    cert_info(pem).is_ok_and(|info| info.is_ca && info.not_after > now)
}

/// `Ok` when the serving certificate can stay, else why not.
fn usable_serving(
    serving: &ServingCert,
    ca: &Ca,
    request: &CertRequest,
    now: SystemTime,
) -> Result<(), String> {
    let info = cert_info(&serving.cert_pem)
        .map_err(|e| format!("the serving certificate is unusable: {e}"))?;
    let key = parse_key(&serving.key_pem, "the serving key")
        .map_err(|e| format!("the serving key is unusable: {e}"))?;
    if key.public_key_raw() != info.public_key.as_slice() {
        return Err("the serving key does not belong to the certificate".into());
    }
    if sorted(&info.dns_names) != sorted(&request.dns_names)
        || sorted(&info.ip_addresses) != sorted(&request.ip_addresses)
    {
        return Err(format!(
            "the serving certificate is for {:?} {:?}, not {:?} {:?}",
            info.dns_names, info.ip_addresses, request.dns_names, request.ip_addresses
        ));
    }
    if due(&info, now, request.renew_before) {
        return Err("the serving certificate expires soon".into());
    }
    let name = match (request.dns_names.first(), request.ip_addresses.first()) {
        (Some(dns), _) => dns.clone(),
        (None, Some(ip)) => ip.to_string(),
        (None, None) => return Err("no name to verify".into()),
    };
    if serving.ca_pem.trim() != ca.cert_pem.trim() {
        return Err("ca.crt is not the active CA".into());
    }
    verify_serving_cert(&serving.cert_pem, &ca.cert_pem, &name, now)
        .map_err(|e| format!("the serving certificate does not verify against the CA: {e}"))?;
    Ok(())
}

fn due(info: &CertInfo, now: SystemTime, renew_before: Duration) -> bool {
    now.checked_add(renew_before)
        .is_none_or(|deadline| deadline >= info.not_after)
}

fn check_validity(validity: Duration) -> Result<()> {
    if validity.is_zero() || validity > MAX_VALIDITY {
        return Err(Error::Invalid(format!(
            "a validity of {}s is outside (0, 100 years]",
            validity.as_secs()
        )));
    }
    Ok(())
}

fn check_names(dns_names: &[String], ip_addresses: &[IpAddr]) -> Result<()> {
    if dns_names.is_empty() && ip_addresses.is_empty() {
        return Err(Error::Invalid(
            "a serving certificate needs at least one DNS name or IP address".into(),
        ));
    }
    for name in dns_names {
        // An IP belongs in the IP SANs: a DNS SAN "127.0.0.1" never matches an IP connection.
        match ServerName::try_from(name.as_str()) {
            Ok(ServerName::DnsName(_)) => {}
            _ => return Err(Error::Invalid(format!("{name:?} is not a DNS name"))),
        }
    }
    Ok(())
}

fn parse_key(key_pem: &str, what: &str) -> Result<KeyPair> {
    KeyPair::from_pem(key_pem).map_err(|e| Error::Parse {
        what: what.to_string(),
        detail: e.to_string(),
    })
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "cairn");
    dn.push(DnType::CommonName, common_name);
    dn
}

fn rcgen_err(what: &str) -> impl FnOnce(rcgen::Error) -> Error + '_ {
    move |source| Error::Rcgen {
        what: what.to_string(),
        source,
    }
}

fn add(now: SystemTime, validity: Duration) -> Result<SystemTime> {
    now.checked_add(validity)
        .ok_or_else(|| Error::Invalid("the validity overflows the clock".into()))
}

fn to_offset(t: SystemTime) -> Result<OffsetDateTime> {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    };
    OffsetDateTime::from_unix_timestamp(secs)
        .map_err(|e| Error::Invalid(format!("time out of range: {e}")))
}

fn from_unix(secs: i64) -> SystemTime {
    let magnitude = Duration::from_secs(secs.unsigned_abs());
    if secs >= 0 {
        UNIX_EPOCH + magnitude
    } else {
        UNIX_EPOCH - magnitude
    }
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

fn dedup<T: Clone + PartialEq>(items: &[T]) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(items.len());
    for item in items {
        if !out.contains(item) {
            out.push(item.clone());
        }
    }
    out
}

fn sorted<T: Clone + Ord>(items: &[T]) -> Vec<T> {
    let mut out = items.to_vec();
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn names() -> Vec<String> {
        service_dns_names("cairn-webhook", "cairn-system")
    }

    fn loopback() -> Vec<IpAddr> {
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ]
    }

    fn request() -> CertRequest {
        CertRequest {
            ip_addresses: loopback(),
            ..CertRequest::for_service("cairn-webhook", "cairn-system")
        }
    }

    #[test]
    fn service_names_cover_every_form_a_client_uses() {
        assert_eq!(
            service_dns_names("svc", "ns"),
            ["svc", "svc.ns", "svc.ns.svc", "svc.ns.svc.cluster.local"]
        );
    }

    #[test]
    fn ca_is_a_ca_that_may_sign_certificates() {
        let ca = generate_ca("test CA", 10 * DAY).expect("CA");
        let info = ca.check().expect("the CA checks out");
        assert!(info.is_ca);
        assert!(info.dns_names.is_empty());

        let (_, pem) = x509_parser::pem::parse_x509_pem(ca.cert_pem.as_bytes()).expect("PEM");
        let cert = pem.parse_x509().expect("X.509");
        let bc = cert
            .basic_constraints()
            .expect("ext")
            .expect("basicConstraints");
        assert!(bc.value.ca);
        assert!(bc.critical);
        let ku = cert.key_usage().expect("ext").expect("keyUsage");
        assert!(ku.value.key_cert_sign());
        assert!(info.not_before < SystemTime::now());
        let remaining = info
            .not_after
            .duration_since(SystemTime::now())
            .expect("valid");
        assert!(remaining > 9 * DAY && remaining <= 10 * DAY);
    }

    #[test]
    fn ca_key_mismatch_is_detected() {
        let a = generate_ca("a", DAY).expect("CA");
        let b = generate_ca("b", DAY).expect("CA");
        let mixed = Ca {
            cert_pem: a.cert_pem,
            key_pem: b.key_pem,
        };
        assert!(mixed.check().is_err());
        assert!(issue_serving_cert(&mixed, &names(), &[], DAY).is_err());
    }

    #[test]
    fn serving_cert_verifies_for_its_names_and_addresses_only() {
        let ca = generate_ca("test CA", 10 * DAY).expect("CA");
        let serving = issue_serving_cert(&ca, &names(), &loopback(), 5 * DAY).expect("serving");
        assert_eq!(serving.ca_pem, ca.cert_pem);
        let now = SystemTime::now();
        for name in names()
            .into_iter()
            .chain(["127.0.0.1".to_string(), "::1".to_string()])
        {
            verify_serving_cert(&serving.cert_pem, &ca.cert_pem, &name, now)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        for other in ["evil.example", "cairn-webhook.other", "10.0.0.1"] {
            assert!(
                verify_serving_cert(&serving.cert_pem, &ca.cert_pem, other, now).is_err(),
                "{other} must not verify"
            );
        }
        // Another CA does not vouch for it; a bundle containing the right CA does.
        let other_ca = generate_ca("other CA", DAY).expect("CA");
        let name = "cairn-webhook.cairn-system.svc";
        assert!(verify_serving_cert(&serving.cert_pem, &other_ca.cert_pem, name, now).is_err());
        let bundle = format!("{}{}", other_ca.cert_pem, ca.cert_pem);
        verify_serving_cert(&serving.cert_pem, &bundle, name, now).expect("bundle");
        // Nor does it verify once expired.
        assert!(verify_serving_cert(&serving.cert_pem, &ca.cert_pem, name, now + 6 * DAY).is_err());
    }

    #[test]
    fn serving_cert_carries_the_requested_sans_and_server_auth() {
        let ca = generate_ca("test CA", 10 * DAY).expect("CA");
        let mut dns = names();
        dns.push("cairn-webhook".into()); // a duplicate is dropped
        let serving = issue_serving_cert(&ca, &dns, &loopback(), DAY).expect("serving");
        let info = cert_info(&serving.cert_pem).expect("parse");
        assert_eq!(info.dns_names, names());
        assert_eq!(info.ip_addresses, loopback());
        assert!(!info.is_ca);

        let (_, pem) = x509_parser::pem::parse_x509_pem(serving.cert_pem.as_bytes()).expect("PEM");
        let cert = pem.parse_x509().expect("X.509");
        let eku = cert.extended_key_usage().expect("ext").expect("EKU");
        assert!(eku.value.server_auth);
        assert_eq!(
            cert.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok()),
            Some("cairn-webhook")
        );
        // The key is ECDSA P-256 and belongs to the certificate.
        let key = KeyPair::from_pem(&serving.key_pem).expect("key");
        assert_eq!(key.algorithm(), &PKCS_ECDSA_P256_SHA256);
        assert_eq!(key.public_key_raw(), info.public_key.as_slice());
    }

    #[test]
    fn ip_only_certificate_works() {
        let ca = generate_ca("test CA", DAY).expect("CA");
        let ip = [IpAddr::V4(Ipv4Addr::LOCALHOST)];
        let serving = issue_serving_cert(&ca, &[], &ip, DAY).expect("serving");
        verify_serving_cert(
            &serving.cert_pem,
            &ca.cert_pem,
            "127.0.0.1",
            SystemTime::now(),
        )
        .expect("verifies for the IP");
    }

    #[test]
    fn bad_requests_are_refused() {
        let ca = generate_ca("test CA", DAY).expect("CA");
        assert!(matches!(
            issue_serving_cert(&ca, &[], &[], DAY),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            issue_serving_cert(&ca, &["not a name".into()], &[], DAY),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            issue_serving_cert(&ca, &["127.0.0.1".into()], &[], DAY),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            issue_serving_cert(&ca, &names(), &[], Duration::ZERO),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(generate_ca("", DAY), Err(Error::Invalid(_))));
    }

    #[test]
    fn serving_cert_never_outlives_its_ca() {
        let ca = generate_ca("short CA", 2 * DAY).expect("CA");
        let serving = issue_serving_cert(&ca, &names(), &[], 365 * DAY).expect("serving");
        let ca_info = cert_info(&ca.cert_pem).expect("CA");
        let info = cert_info(&serving.cert_pem).expect("serving");
        assert_eq!(info.not_after, ca_info.not_after);
    }

    #[test]
    fn renewal_is_due_near_expiry_not_when_fresh() {
        let ca = generate_ca("test CA", 100 * DAY).expect("CA");
        let serving = issue_serving_cert(&ca, &names(), &[], 10 * DAY).expect("serving");
        let now = SystemTime::now();
        assert!(!needs_renewal(&serving.cert_pem, now, DAY).expect("fresh"));
        assert!(!needs_renewal(&serving.cert_pem, now + 8 * DAY, DAY).expect("two days left"));
        assert!(
            needs_renewal(&serving.cert_pem, now + 9 * DAY + DAY / 2, DAY)
                .expect("half a day left")
        );
        assert!(needs_renewal(&serving.cert_pem, now + 11 * DAY, DAY).expect("expired"));
        assert!(needs_renewal(&serving.cert_pem, now, 30 * DAY).expect("window wider than life"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(needs_renewal("", SystemTime::now(), DAY).is_err());
        assert!(
            needs_renewal(
                "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                SystemTime::now(),
                DAY
            )
            .is_err()
        );
        let ca = generate_ca("test CA", DAY).expect("CA");
        assert!(needs_renewal(&ca.key_pem, SystemTime::now(), DAY).is_err());
        assert!(verify_serving_cert("junk", &ca.cert_pem, "a.b", SystemTime::now()).is_err());
        assert!(verify_serving_cert(&ca.cert_pem, "junk", "a.b", SystemTime::now()).is_err());
    }

    #[test]
    fn plan_from_nothing_makes_both() {
        let now = SystemTime::now();
        let plan = plan(None, None, &[], &request(), now).expect("plan");
        assert!(plan.ca_rotation.is_some());
        assert!(plan.serving_rotation.is_some());
        assert_eq!(plan.ca_bundle.trim(), plan.cas.active.cert_pem.trim());
        assert_eq!(plan.serving.ca_pem, plan.cas.active.cert_pem);
        verify_serving_cert(
            &plan.serving.cert_pem,
            &plan.ca_bundle,
            "cairn-webhook.cairn-system.svc",
            now,
        )
        .expect("verifies");
    }

    #[test]
    fn plan_keeps_what_is_still_good() {
        let now = SystemTime::now();
        let first = plan(None, None, &[], &request(), now).expect("plan");
        let second = plan(
            Some(&first.cas),
            Some(&first.serving),
            std::slice::from_ref(&first.ca_bundle),
            &request(),
            now + DAY,
        )
        .expect("plan");
        assert_eq!(second.ca_rotation, None);
        assert_eq!(second.serving_rotation, None);
        assert_eq!(second.cas, first.cas);
        assert_eq!(second.serving, first.serving);
        assert_eq!(second.ca_bundle, first.ca_bundle);
    }

    #[test]
    fn plan_reissues_for_other_names_under_the_same_ca() {
        let now = SystemTime::now();
        let first = plan(None, None, &[], &request(), now).expect("plan");
        let moved = CertRequest {
            ip_addresses: Vec::new(),
            ..CertRequest::for_service("cairn-webhook", "elsewhere")
        };
        let second = plan(Some(&first.cas), Some(&first.serving), &[], &moved, now).expect("plan");
        assert_eq!(second.ca_rotation, None);
        assert!(second.serving_rotation.is_some_and(|r| r.contains("not")));
        assert_eq!(second.cas, first.cas);
        let info = cert_info(&second.serving.cert_pem).expect("parse");
        assert_eq!(
            info.dns_names,
            service_dns_names("cairn-webhook", "elsewhere")
        );
    }

    #[test]
    fn plan_renews_the_serving_cert_near_expiry() {
        let now = SystemTime::now();
        let first = plan(None, None, &[], &request(), now).expect("plan");
        let later = now + 340 * DAY;
        let second = plan(
            Some(&first.cas),
            Some(&first.serving),
            &[],
            &request(),
            later,
        )
        .expect("plan");
        assert_eq!(second.ca_rotation, None);
        assert_eq!(
            second.serving_rotation.as_deref(),
            Some("the serving certificate expires soon")
        );
        assert_eq!(second.ca_bundle, first.ca_bundle);
        assert!(
            !needs_renewal(&second.serving.cert_pem, later, request().renew_before).expect("parse")
        );
    }

    /// The whole rotation, run by run: at every step the certificate a client may meet (the
    /// one stored before the run, and the one stored after it) verifies against the caBundle
    /// the run leaves, and the steps wait for `overlap` and for the caBundle to hold the next CA.
    #[test]
    fn ca_rotation_publishes_switches_then_drops_with_an_overlap() {
        let name = "cairn-webhook.cairn-system.svc";
        let start = SystemTime::now();
        let t1 = start + (3650 - 59) * DAY;
        let made = plan(None, None, &[], &request(), start).expect("plan");
        // Years later, a serving certificate issued shortly before the CA falls due.
        let first = plan(
            Some(&made.cas),
            Some(&made.serving),
            &[],
            &request(),
            t1 - 2 * DAY,
        )
        .expect("plan");
        assert_eq!(first.cas, made.cas);
        let old_ca = first.cas.active.cert_pem.clone();
        let overlap = request().overlap;
        let both_served_verify = |before: &Plan, after: &Plan, at: SystemTime| {
            for served in [&before.serving, &after.serving] {
                verify_serving_cert(&served.cert_pem, &after.ca_bundle, name, at)
                    .expect("a served certificate verifies against the new caBundle");
            }
        };

        // 1. Near the CA's expiry: a next CA joins the bundle; the old CA still signs.
        let publish = plan(
            Some(&first.cas),
            Some(&first.serving),
            std::slice::from_ref(&first.ca_bundle),
            &request(),
            t1,
        )
        .expect("plan");
        let next = publish.cas.next.clone().expect("a next CA");
        assert!(publish.ca_rotation.is_some());
        assert_eq!(publish.cas.active, first.cas.active);
        assert_eq!(publish.serving.ca_pem, old_ca);
        assert!(publish.ca_bundle.starts_with(old_ca.trim()));
        assert!(publish.ca_bundle.contains(next.cert_pem.trim()));
        both_served_verify(&first, &publish, t1);

        // Not yet: the bundle the API server holds lacks the next CA, or it is too fresh.
        for (bundle, at) in [
            (first.ca_bundle.clone(), t1 + DAY),
            (publish.ca_bundle.clone(), t1 + overlap / 2),
        ] {
            let wait = plan(
                Some(&publish.cas),
                Some(&publish.serving),
                &[bundle],
                &request(),
                at,
            )
            .expect("plan");
            assert_eq!(wait.cas, publish.cas, "promoted too early");
            assert_eq!(wait.ca_rotation, None);
        }

        // 2. Trusted for long enough: the next CA signs; the old one stays as previous.
        let t2 = t1 + overlap;
        let switch = plan(
            Some(&publish.cas),
            Some(&publish.serving),
            std::slice::from_ref(&publish.ca_bundle),
            &request(),
            t2,
        )
        .expect("plan");
        assert_eq!(switch.cas.active, next);
        assert_eq!(switch.cas.next, None);
        assert_eq!(switch.cas.previous.as_deref(), Some(old_ca.trim()));
        assert!(switch.serving_rotation.is_some());
        assert_eq!(switch.serving.ca_pem, next.cert_pem);
        assert!(switch.ca_bundle.starts_with(next.cert_pem.trim()));
        both_served_verify(&publish, &switch, t2);

        // The previous CA stays until the new certificate has been out for `overlap`.
        let early = plan(
            Some(&switch.cas),
            Some(&switch.serving),
            std::slice::from_ref(&switch.ca_bundle),
            &request(),
            t2 + overlap / 2,
        )
        .expect("plan");
        assert_eq!(early.cas, switch.cas);
        assert!(early.ca_bundle.contains(old_ca.trim()));

        // 3. Then it leaves.
        let t3 = t2 + overlap;
        let drop = plan(
            Some(&switch.cas),
            Some(&switch.serving),
            std::slice::from_ref(&switch.ca_bundle),
            &request(),
            t3,
        )
        .expect("plan");
        assert_eq!(drop.cas.previous, None);
        assert!(drop.ca_rotation.is_some());
        assert_eq!(drop.ca_bundle.trim(), next.cert_pem.trim());
        both_served_verify(&switch, &drop, t3);
    }

    #[test]
    fn plan_replaces_unparsable_or_mismatched_material() {
        let now = SystemTime::now();
        let first = plan(None, None, &[], &request(), now).expect("plan");
        let broken = CaSet {
            active: Ca {
                cert_pem: "junk".into(),
                key_pem: first.cas.active.key_pem.clone(),
            },
            next: None,
            previous: None,
        };
        let second = plan(Some(&broken), Some(&first.serving), &[], &request(), now).expect("plan");
        assert!(second.ca_rotation.is_some());
        assert!(second.serving_rotation.is_some());
        // The old serving certificate's CA stays trusted until the new one is served.
        assert!(second.ca_bundle.contains(first.cas.active.cert_pem.trim()));

        let other = issue_serving_cert(&first.cas.active, &request().dns_names, &loopback(), DAY)
            .expect("serving");
        let mismatched = ServingCert {
            key_pem: other.key_pem,
            ..first.serving.clone()
        };
        let third = plan(Some(&first.cas), Some(&mismatched), &[], &request(), now).expect("plan");
        assert_eq!(third.ca_rotation, None);
        assert!(third.serving_rotation.is_some_and(|r| r.contains("key")));
    }

    #[test]
    fn plan_refuses_a_window_as_long_as_the_validity() {
        for bad in [
            CertRequest {
                renew_before: 365 * DAY,
                ..request()
            },
            CertRequest {
                ca_renew_before: 3650 * DAY,
                ..request()
            },
        ] {
            assert!(matches!(
                plan(None, None, &[], &bad, SystemTime::now()),
                Err(Error::Invalid(_))
            ));
        }
    }
}
