//! The dev PKI: a local CA and one server certificate per service, created on
//! first start under the state directory and reused after.

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
    error::RuntimeError,
    files::{read_to_string, write_private, write_public},
    tls::ServerTlsFiles,
};

/// The dev CA's common name.
const CA_NAME: &str = "AuthMesh dev CA";

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
            return Ok(KeyPair::from_pem(&pem)?);
        }
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params().self_signed(&key)?;
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_public(&cert_path, cert.pem().as_bytes())?;
        tracing::info!(path = %cert_path.display(), "created dev CA");
        Ok(key)
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
