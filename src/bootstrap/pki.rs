//! Keys and certificates: issue CAs and leaves with rcgen, read and check existing ones with
//! x509-parser. Every key is ECDSA P-256 (fast to generate, accepted by Go, Python and rustls).
//!
//! Knows nothing of file layout; callers pass PEM text and the file names to use in errors.

use std::net::IpAddr;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::X509Certificate;

/// A leaf is re-issued by `bootstrap` when it has less than this left.
pub const RENEW_BEFORE_DAYS: i64 = 30;
/// Tolerance for clocks slightly behind ours.
const BACKDATE: Duration = Duration::hours(1);

/// A key or certificate that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{file}: not a valid private key ({detail})")]
    BadKey { file: String, detail: String },
    #[error("{file}: not a valid PEM certificate ({detail})")]
    BadCert { file: String, detail: String },
    #[error("{key} does not match {cert}")]
    KeyMismatch { key: String, cert: String },
    #[error("cannot issue {what}: {cause}")]
    Issue { what: String, cause: rcgen::Error },
}

/// A certificate and its key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
}

/// A CA able to sign: its certificate and key.
pub struct Authority {
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

/// What a leaf certificate must say.
#[derive(Debug, Clone)]
pub struct LeafRequest {
    /// Name used in errors, e.g. `server.crt`.
    pub what: String,
    pub subject: Vec<(DnType, String)>,
    pub sans: Vec<SanType>,
    pub key_usages: Vec<KeyUsagePurpose>,
    pub ext_key_usages: Vec<ExtendedKeyUsagePurpose>,
    pub days: i64,
}

impl LeafRequest {
    /// A client certificate: `CN=cn`, one `O` per group.
    pub fn client(what: &str, cn: &str, groups: &[&str], days: i64) -> Self {
        let mut subject = Vec::new();
        for g in groups {
            subject.push((DnType::OrganizationName, g.to_string()));
        }
        subject.push((DnType::CommonName, cn.to_string()));
        Self {
            what: what.to_string(),
            subject,
            sans: Vec::new(),
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            ext_key_usages: vec![ExtendedKeyUsagePurpose::ClientAuth],
            days,
        }
    }

    /// A serving certificate for `names` and `ips`; `also_client` adds clientAuth (for peers).
    pub fn server(
        what: &str,
        cn: &str,
        names: &[String],
        ips: &[IpAddr],
        also_client: bool,
        days: i64,
    ) -> Self {
        let mut sans = Vec::new();
        for n in names {
            if let Ok(s) = n.clone().try_into() {
                sans.push(SanType::DnsName(s));
            }
        }
        sans.extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        let mut ext_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if also_client {
            ext_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        Self {
            what: what.to_string(),
            subject: vec![(DnType::CommonName, cn.to_string())],
            sans,
            key_usages: vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ],
            ext_key_usages,
            days,
        }
    }
}

fn new_key(what: &str) -> Result<KeyPair, PkiError> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|cause| PkiError::Issue {
        what: what.to_string(),
        cause,
    })
}

/// A fresh private key in PKCS#8 PEM (for `serviceaccount.key`).
pub fn new_private_key_pem(what: &str) -> Result<String, PkiError> {
    Ok(new_key(what)?.serialize_pem())
}

/// Parses a PEM private key, naming `file` on failure.
pub fn parse_key(pem: &[u8], file: &str) -> Result<KeyPair, PkiError> {
    let bad = |detail: String| PkiError::BadKey {
        file: file.to_string(),
        detail,
    };
    let text = std::str::from_utf8(pem).map_err(|_| bad("not text".into()))?;
    KeyPair::from_pem(text).map_err(|e| bad(e.to_string()))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    // Positive and with no leading zero byte, so the DER integer keeps all 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn base_params(subject: &[(DnType, String)], days: i64, now: OffsetDateTime) -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    for (t, v) in subject {
        dn.push(t.clone(), v.as_str());
    }
    p.distinguished_name = dn;
    p.not_before = now - BACKDATE;
    p.not_after = now + Duration::days(days);
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p
}

/// Issues a self-signed CA named `cn`, valid for `days`.
pub fn new_ca(cn: &str, days: i64, now: OffsetDateTime) -> Result<(Issued, Authority), PkiError> {
    let what = format!("CA '{cn}'");
    let issue_err = |cause| PkiError::Issue {
        what: what.clone(),
        cause,
    };
    let key = new_key(&what)?;
    let mut params = base_params(&[(DnType::CommonName, cn.to_string())], days, now);
    params.use_authority_key_identifier_extension = false;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let cert = params.self_signed(&key).map_err(issue_err)?;
    let issued = Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    };
    let authority = Authority {
        cert_der: cert.der().to_vec(),
        issuer: Issuer::new(params, key),
    };
    Ok((issued, authority))
}

/// Loads a CA from its PEM files, checking the key belongs to the certificate.
pub fn load_ca(
    cert_pem: &[u8],
    key_pem: &[u8],
    cert_file: &str,
    key_file: &str,
) -> Result<Authority, PkiError> {
    let key = parse_key(key_pem, key_file)?;
    let cert_der = pem_to_der(cert_pem, cert_file)?;
    let (_, x509) =
        x509_parser::parse_x509_certificate(&cert_der).map_err(|e| PkiError::BadCert {
            file: cert_file.to_string(),
            detail: e.to_string(),
        })?;
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
        return Err(PkiError::KeyMismatch {
            key: key_file.to_string(),
            cert: cert_file.to_string(),
        });
    }
    let issuer = Issuer::from_ca_cert_der(&cert_der.clone().into(), key).map_err(|cause| {
        PkiError::Issue {
            what: cert_file.to_string(),
            cause,
        }
    })?;
    Ok(Authority { cert_der, issuer })
}

/// Issues a leaf certificate with a new key, signed by `ca`.
pub fn issue(req: &LeafRequest, ca: &Authority, now: OffsetDateTime) -> Result<Issued, PkiError> {
    let key = new_key(&req.what)?;
    let mut params = base_params(&req.subject, req.days, now);
    params.subject_alt_names = req.sans.clone();
    params.key_usages = req.key_usages.clone();
    params.extended_key_usages = req.ext_key_usages.clone();
    params.is_ca = IsCa::ExplicitNoCa;
    let cert = params
        .signed_by(&key, &ca.issuer)
        .map_err(|cause| PkiError::Issue {
            what: req.what.clone(),
            cause,
        })?;
    Ok(Issued {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn pem_to_der(pem: &[u8], file: &str) -> Result<Vec<u8>, PkiError> {
    let (_, p) = parse_x509_pem(pem).map_err(|e| PkiError::BadCert {
        file: file.to_string(),
        detail: e.to_string(),
    })?;
    if p.label != "CERTIFICATE" {
        return Err(PkiError::BadCert {
            file: file.to_string(),
            detail: format!("PEM block is '{}'", p.label),
        });
    }
    Ok(p.contents)
}

/// A subject alternative name as read back from a certificate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum San {
    Dns(String),
    Ip(IpAddr),
    Uri(String),
    Email(String),
}

impl San {
    fn from_rcgen(s: &SanType) -> Option<Self> {
        Some(match s {
            SanType::DnsName(n) => San::Dns(n.as_str().to_ascii_lowercase()),
            SanType::IpAddress(ip) => San::Ip(*ip),
            SanType::URI(u) => San::Uri(u.as_str().to_string()),
            SanType::Rfc822Name(e) => San::Email(e.as_str().to_string()),
            _ => return None,
        })
    }
}

/// What `refresh-certs --check` and the freshness checks read from a certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub not_after: OffsetDateTime,
    pub common_name: Option<String>,
    pub organizations: Vec<String>,
    pub sans: Vec<San>,
}

fn info_of(x509: &X509Certificate<'_>) -> CertInfo {
    let subject = x509.subject();
    let common_name = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let organizations = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok().map(str::to_string))
        .collect();
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = x509.subject_alternative_name() {
        for name in &ext.value.general_names {
            match name {
                GeneralName::DNSName(d) => sans.push(San::Dns(d.to_ascii_lowercase())),
                GeneralName::IPAddress(b) => {
                    if let Ok(a) = <[u8; 4]>::try_from(*b) {
                        sans.push(San::Ip(IpAddr::from(a)));
                    } else if let Ok(a) = <[u8; 16]>::try_from(*b) {
                        sans.push(San::Ip(IpAddr::from(a)));
                    }
                }
                GeneralName::URI(u) => sans.push(San::Uri(u.to_string())),
                GeneralName::RFC822Name(e) => sans.push(San::Email(e.to_string())),
                _ => {}
            }
        }
    }
    CertInfo {
        not_after: x509.validity().not_after.to_datetime(),
        common_name,
        organizations,
        sans,
    }
}

/// Reads the facts of a PEM certificate.
pub fn inspect(pem: &[u8], file: &str) -> Result<CertInfo, PkiError> {
    let der = pem_to_der(pem, file)?;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).map_err(|e| PkiError::BadCert {
        file: file.to_string(),
        detail: e.to_string(),
    })?;
    Ok(info_of(&x509))
}

/// Whether an existing leaf can be kept: it parses, its key matches, `ca` signed it, it says
/// what `req` asks for, and it is neither expired nor within [`RENEW_BEFORE_DAYS`] of expiry.
pub fn leaf_is_current(
    cert_pem: &[u8],
    key_pem: &[u8],
    ca: &Authority,
    req: &LeafRequest,
    now: OffsetDateTime,
) -> bool {
    let Ok(der) = pem_to_der(cert_pem, &req.what) else {
        return false;
    };
    let Ok((_, x509)) = x509_parser::parse_x509_certificate(&der) else {
        return false;
    };
    let Ok((_, ca_x509)) = x509_parser::parse_x509_certificate(&ca.cert_der) else {
        return false;
    };
    let Ok(key) = parse_key(key_pem, &req.what) else {
        return false;
    };
    if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw()
        || x509.issuer() != ca_x509.subject()
        || x509.verify_signature(Some(ca_x509.public_key())).is_err()
    {
        return false;
    }
    let info = info_of(&x509);
    let want_cn = req
        .subject
        .iter()
        .find(|(t, _)| *t == DnType::CommonName)
        .map(|(_, v)| v.clone());
    let mut want_orgs: Vec<String> = req
        .subject
        .iter()
        .filter(|(t, _)| *t == DnType::OrganizationName)
        .map(|(_, v)| v.clone())
        .collect();
    let mut have_orgs = info.organizations.clone();
    want_orgs.sort();
    have_orgs.sort();
    let mut want_sans: Vec<San> = req.sans.iter().filter_map(San::from_rcgen).collect();
    let mut have_sans = info.sans.clone();
    want_sans.sort();
    want_sans.dedup();
    have_sans.sort();
    have_sans.dedup();
    let not_before = x509.validity().not_before.to_datetime();
    info.common_name == want_cn
        && have_orgs == want_orgs
        && have_sans == want_sans
        && not_before <= now
        && info.not_after - now > Duration::days(RENEW_BEFORE_DAYS)
}

/// Whole days until `not_after`, rounded down as MicroK8s's `--check` prints them.
pub fn days_left(not_after: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (not_after - now).whole_seconds().div_euclid(86_400)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `cert_pem` was signed by the CA certificate `ca_pem`.
    fn is_signed_by(cert_pem: &[u8], ca_pem: &[u8]) -> bool {
        let (Ok(der), Ok(ca_der)) = (pem_to_der(cert_pem, ""), pem_to_der(ca_pem, "")) else {
            return false;
        };
        match (
            x509_parser::parse_x509_certificate(&der),
            x509_parser::parse_x509_certificate(&ca_der),
        ) {
            (Ok((_, c)), Ok((_, ca))) => {
                c.issuer() == ca.subject() && c.verify_signature(Some(ca.public_key())).is_ok()
            }
            _ => false,
        }
    }

    #[test]
    fn issued_leaf_is_current_and_signed_by_its_ca() {
        let now = OffsetDateTime::now_utc();
        let (ca_files, ca) = new_ca("test-ca", 3650, now).unwrap();
        let req = LeafRequest::client("admin.crt", "admin", &["system:masters"], 365);
        let leaf = issue(&req, &ca, now).unwrap();
        assert!(leaf_is_current(
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            &ca,
            &req,
            now
        ));
        assert!(is_signed_by(
            leaf.cert_pem.as_bytes(),
            ca_files.cert_pem.as_bytes()
        ));
        let info = inspect(leaf.cert_pem.as_bytes(), "admin.crt").unwrap();
        assert_eq!(info.common_name.as_deref(), Some("admin"));
        assert_eq!(info.organizations, ["system:masters"]);
        assert_eq!(days_left(info.not_after, now), 364);

        // Another CA's leaf, or a changed identity, is not current.
        let (_, other) = new_ca("other", 3650, now).unwrap();
        assert!(!leaf_is_current(
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            &other,
            &req,
            now
        ));
        let renamed = LeafRequest::client("admin.crt", "root", &["system:masters"], 365);
        assert!(!leaf_is_current(
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            &ca,
            &renamed,
            now
        ));
        // Near expiry it is renewed.
        let later = now + Duration::days(340);
        assert!(!leaf_is_current(
            leaf.cert_pem.as_bytes(),
            leaf.key_pem.as_bytes(),
            &ca,
            &req,
            later
        ));
    }

    #[test]
    fn loading_a_ca_checks_its_key() {
        let now = OffsetDateTime::now_utc();
        let (a, _) = new_ca("a", 10, now).unwrap();
        let (b, _) = new_ca("b", 10, now).unwrap();
        assert!(
            load_ca(
                a.cert_pem.as_bytes(),
                a.key_pem.as_bytes(),
                "ca.crt",
                "ca.key"
            )
            .is_ok()
        );
        let err = load_ca(
            a.cert_pem.as_bytes(),
            b.key_pem.as_bytes(),
            "ca.crt",
            "ca.key",
        );
        assert!(matches!(err, Err(PkiError::KeyMismatch { .. })));
        let err = load_ca(a.cert_pem.as_bytes(), b"garbage", "ca.crt", "ca.key");
        assert!(matches!(err, Err(PkiError::BadKey { .. })));
    }
}
