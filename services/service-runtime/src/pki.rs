//! The dev PKI: a local CA, one server certificate per service, and workload
//! certificates whose URI SAN is the workload's SPIFFE ID
//! (`spiffe://<trust-domain>/<name>`), created under the state directory.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::{
    error::{ConfigProblem, RuntimeError},
    files::{read_to_string, write_private, write_public},
    tls::ServerTlsFiles,
};

/// The dev CA's common name.
const CA_NAME: &str = "AuthMesh dev CA";

/// The trust domain of workload identities unless configured otherwise.
pub const DEFAULT_TRUST_DOMAIN: &str = "authmesh.local";

/// The SPIFFE ID of workload `name` in `trust_domain`.
pub fn spiffe_id(trust_domain: &str, name: &str) -> String {
    format!("spiffe://{trust_domain}/{name}")
}

/// Whether `label` may be a trust domain or workload name: lowercase
/// letters, digits, `.`, `-` and `_`, 1 to 63 characters, no leading dot.
fn valid_label(label: &str) -> bool {
    (1..=63).contains(&label.len())
        && !label.starts_with('.')
        && label.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
        })
}

/// What a workload certificate says and how long it is valid.
#[derive(Debug, Clone)]
pub struct WorkloadCert<'a> {
    /// Workload name, the last segment of the SPIFFE ID.
    pub name: &'a str,
    /// Trust domain of the SPIFFE ID.
    pub trust_domain: &'a str,
    /// DNS names the workload also serves as (empty for clients only).
    pub dns_names: &'a [&'a str],
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

impl<'a> WorkloadCert<'a> {
    /// Valid from a minute ago for `lifetime`.
    pub fn new(
        name: &'a str,
        trust_domain: &'a str,
        dns_names: &'a [&'a str],
        lifetime: std::time::Duration,
    ) -> Self {
        let now = OffsetDateTime::now_utc();
        Self {
            name,
            trust_domain,
            dns_names,
            not_before: now - Duration::minutes(1),
            not_after: now + lifetime,
        }
    }
}

/// A CA and server certificates in one directory.
#[derive(Debug, Clone)]
pub struct DevPki {
    dir: PathBuf,
}

impl DevPki {
    /// Makes sure `dir` holds a CA and a server certificate for each of
    /// `services` (SANs: localhost, 127.0.0.1, ::1 and the service name),
    /// creating only what is missing.
    ///
    /// # Errors
    /// [`RuntimeError`] when files cannot be read or written or keys generated.
    pub fn ensure(dir: &Path, services: &[&str]) -> Result<Self, RuntimeError> {
        let pki = Self {
            dir: dir.to_path_buf(),
        };
        let ca_key = pki.ensure_ca()?;
        let issuer = Issuer::new(ca_params(), ca_key);
        for name in services {
            let files = pki.server_files(name);
            if files.cert.exists() && files.key.exists() {
                continue;
            }
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let cert = server_params(name)?.signed_by(&key, &issuer)?;
            write_private(&files.key, key.serialize_pem().as_bytes())?;
            write_public(&files.cert, cert.pem().as_bytes())?;
            tracing::info!(service = name, path = %files.cert.display(), "issued dev server certificate");
        }
        Ok(pki)
    }

    fn ensure_ca(&self) -> Result<KeyPair, RuntimeError> {
        let (cert_path, key_path) = (self.ca_cert(), self.dir.join("ca-key.pem"));
        if cert_path.exists() && key_path.exists() {
            let pem = read_to_string(&key_path)?;
            // rcgen's own error would print the file's bytes: name the file instead.
            return KeyPair::from_pem(&pem).map_err(|_| RuntimeError::Config {
                origin: key_path.display().to_string(),
                problem: ConfigProblem::CaKey,
            });
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_public(&cert_path, cert.pem().as_bytes())?;
        tracing::info!(path = %cert_path.display(), "created dev CA");
        Ok(key)
    }

    /// Issues a workload certificate from this CA into `out` as
    /// `<name>.pem` / `<name>-key.pem` (key 0600), replacing any previous one
    /// atomically so servers and clients watching the files pick it up.
    ///
    /// # Errors
    /// [`RuntimeError::Config`] for a bad name or trust domain; others when
    /// the CA or the files are unusable.
    pub fn issue_workload(
        &self,
        spec: &WorkloadCert<'_>,
        out: &Path,
    ) -> Result<ServerTlsFiles, RuntimeError> {
        if !valid_label(spec.name) || !valid_label(spec.trust_domain) {
            return Err(RuntimeError::Config {
                origin: "workload certificate".into(),
                problem: ConfigProblem::WorkloadName,
            });
        }
        let ca_key = self.ensure_ca()?;
        let issuer = Issuer::new(ca_params(), ca_key);
        let mut names: Vec<String> = spec.dns_names.iter().map(|n| (*n).to_owned()).collect();
        if names.is_empty() {
            // rcgen needs a SAN list to start from; the URI SAN is added below.
            names.push(spec.name.to_owned());
        }
        let mut params = CertificateParams::new(names)?;
        params.subject_alt_names.push(SanType::URI(
            spiffe_id(spec.trust_domain, spec.name).try_into()?,
        ));
        if !spec.dns_names.is_empty() {
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        params
            .distinguished_name
            .push(DnType::CommonName, spec.name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = spec.not_before;
        params.not_after = spec.not_after;
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = params.signed_by(&key, &issuer)?;
        let files = ServerTlsFiles {
            cert: out.join(format!("{}.pem", spec.name)),
            key: out.join(format!("{}-key.pem", spec.name)),
            client_ca: Some(self.ca_cert()),
            client_auth: crate::tls::ClientAuth::None,
        };
        // Key first: a watcher that sees the new certificate before the new
        // key fails the pair and retries, and never pairs an old key with it.
        write_private(&files.key, key.serialize_pem().as_bytes())?;
        write_public(&files.cert, cert.pem().as_bytes())?;
        tracing::info!(workload = %spiffe_id(spec.trust_domain, spec.name), not_after = %spec.not_after, path = %files.cert.display(), "issued workload certificate");
        Ok(files)
    }

    /// The CA certificate clients trust.
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A service's certificate and key files.
    pub fn server_files(&self, service: &str) -> ServerTlsFiles {
        ServerTlsFiles {
            cert: self.dir.join(format!("{service}.pem")),
            key: self.dir.join(format!("{service}-key.pem")),
            client_ca: None,
            client_auth: crate::tls::ClientAuth::None,
        }
    }
}

fn ca_params() -> CertificateParams {
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, CA_NAME);
    name.push(DnType::OrganizationName, "AuthMesh");
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::days(1);
    params.not_after = now + Duration::days(3650);
    params
}

fn server_params(service: &str) -> Result<CertificateParams, RuntimeError> {
    let mut params = CertificateParams::new(vec!["localhost".to_owned(), service.to_owned()])?;
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    params
        .subject_alt_names
        .push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    params.distinguished_name.push(DnType::CommonName, service);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365);
    Ok(params)
}
