//! Who is on the other end of the connection: the identity in the client
//! certificate that the TLS handshake verified against the mesh CA.
//!
//! A workload's SPIFFE ID is the certificate's one `spiffe://` URI SAN; its
//! thumbprint (`x5t#S256`, RFC 8705) is what certificate-bound tokens name.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
#[cfg(feature = "mtls")]
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
#[cfg(feature = "mtls")]
use x509_parser::{extensions::GeneralName, prelude::FromDer};

/// The verified client certificate of a connection. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerIdentity {
    spiffe_id: Option<Arc<str>>,
    thumbprint: Arc<str>,
}

/// Why a client certificate yields no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerError {
    /// The certificate could not be parsed.
    #[error("client certificate does not parse")]
    Unparsable,
    /// More than one `spiffe://` URI SAN (the SPIFFE spec allows exactly one).
    #[error("client certificate has more than one SPIFFE ID")]
    AmbiguousSpiffeId,
}

/// `x5t#S256`: the base64url SHA-256 of a certificate's DER.
pub fn thumbprint(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(der))
}

#[cfg(feature = "mtls")]
impl PeerIdentity {
    /// The identity in a (verified) leaf certificate.
    ///
    /// # Errors
    /// [`PeerError`] when it does not parse or names several SPIFFE IDs.
    pub fn from_certificate(der: &[u8]) -> Result<Self, PeerError> {
        Self::parse(der, Sha256::digest(der).into())
    }

    /// Parses `der`, whose SHA-256 is `digest`.
    fn parse(der: &[u8], digest: [u8; 32]) -> Result<Self, PeerError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der)
            .map_err(|_| PeerError::Unparsable)?;
        let mut ids = cert
            .subject_alternative_name()
            .map_err(|_| PeerError::Unparsable)?
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        GeneralName::URI(uri) if uri.starts_with("spiffe://") => {
                            Some((*uri).to_owned())
                        }
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if ids.len() > 1 {
            return Err(PeerError::AmbiguousSpiffeId);
        }
        Ok(Self {
            spiffe_id: ids.pop().map(Arc::from),
            thumbprint: URL_SAFE_NO_PAD.encode(digest).into(),
        })
    }

    /// The identity of a TLS connection, if the client sent a certificate.
    ///
    /// # Errors
    /// [`PeerError`] when the certificate has no usable identity.
    pub fn from_connect_info(
        info: &TlsConnectInfo<TcpConnectInfo>,
    ) -> Result<Option<Self>, PeerError> {
        match info.peer_certs() {
            Some(chain) => chain
                .first()
                .map(|leaf| Self::from_certificate(leaf))
                .transpose(),
            None => Ok(None),
        }
    }
}

impl PeerIdentity {
    /// The workload's SPIFFE ID, when its certificate carries one.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.spiffe_id.as_deref()
    }

    /// The certificate's `x5t#S256` thumbprint.
    pub fn thumbprint(&self) -> &str {
        &self.thumbprint
    }
}

/// Identities of recently seen client certificates, by the certificate's
/// SHA-256: a connection's certificate is the same on every call, so it is
/// parsed once rather than per call. Bounded; cheap to clone.
#[cfg(feature = "mtls")]
#[derive(Debug, Clone)]
pub struct PeerCache(Arc<quick_cache::sync::Cache<[u8; 32], PeerIdentity>>);

#[cfg(feature = "mtls")]
impl PeerCache {
    /// A cache remembering up to `capacity` certificates.
    pub fn new(capacity: usize) -> Self {
        Self(Arc::new(quick_cache::sync::Cache::new(capacity.max(1))))
    }

    /// The identity of the connection a request came on, if it is a TLS
    /// connection whose client sent a certificate: pass the request's
    /// `extensions().get()` (an `http` or a `tonic` request's).
    ///
    /// # Errors
    /// [`PeerError`] when the certificate has no usable identity (never cached).
    pub fn identify_connection(
        &self,
        info: Option<&TlsConnectInfo<TcpConnectInfo>>,
    ) -> Result<Option<PeerIdentity>, PeerError> {
        info.map(|info| self.identify(info))
            .transpose()
            .map(Option::flatten)
    }

    /// The identity of a TLS connection, if the client sent a certificate.
    ///
    /// # Errors
    /// [`PeerError`] when the certificate has no usable identity (never cached).
    pub fn identify(
        &self,
        info: &TlsConnectInfo<TcpConnectInfo>,
    ) -> Result<Option<PeerIdentity>, PeerError> {
        let Some(chain) = info.peer_certs() else {
            return Ok(None);
        };
        if let Some(known) = recent_connections::recall(&chain) {
            return Ok(Some(known));
        }
        let Some(leaf) = chain.first() else {
            return Ok(None);
        };
        let digest: [u8; 32] = Sha256::digest(leaf).into();
        let peer = match self.0.get(&digest) {
            Some(known) => known,
            None => {
                let peer = PeerIdentity::parse(leaf, digest)?;
                self.0.insert(digest, peer.clone());
                peer
            }
        };
        Ok(Some(recent_connections::keep(chain, &peer)))
    }
}

/// The connections whose certificate this thread identified last. Every
/// call on a connection carries the same certificate chain (one `Arc` per
/// connection), so a call on one of them is answered by comparing
/// pointers: no SHA-256 of the certificate, no shared cache, and clones of
/// this thread's own copy of the identity (whose reference counts no other
/// core writes). Each entry holds its chain, so its address cannot be
/// reused by another connection while it is remembered.
#[cfg(feature = "mtls")]
mod recent_connections {
    use std::{cell::RefCell, sync::Arc};

    use tonic::transport::CertificateDer;

    use super::PeerIdentity;

    /// Connections remembered per thread.
    const RECENT: usize = 4;

    type Chain = Arc<Vec<CertificateDer<'static>>>;

    struct Recent {
        entries: [Option<(Chain, PeerIdentity)>; RECENT],
        /// The entry the next connection replaces (round robin).
        next: usize,
    }

    thread_local! {
        static RECENT_PEERS: RefCell<Recent> = const {
            RefCell::new(Recent {
                entries: [const { None }; RECENT],
                next: 0,
            })
        };
    }

    /// This thread's identity of the connection whose chain is `chain`, if
    /// it identified that connection before.
    pub(super) fn recall(chain: &Chain) -> Option<PeerIdentity> {
        RECENT_PEERS
            .try_with(|recent| {
                recent
                    .borrow()
                    .entries
                    .iter()
                    .flatten()
                    .find(|(known, _)| Arc::ptr_eq(known, chain))
                    .map(|(_, peer)| peer.clone())
            })
            .ok()
            .flatten()
    }

    /// Remembers `peer` as the identity of the connection whose chain is
    /// `chain`, as a copy of this thread's own, and returns that copy.
    pub(super) fn keep(chain: Chain, peer: &PeerIdentity) -> PeerIdentity {
        let own = PeerIdentity {
            spiffe_id: peer.spiffe_id.as_deref().map(Arc::from),
            thumbprint: Arc::from(&*peer.thumbprint),
        };
        let _ = RECENT_PEERS.try_with(|recent| {
            let mut recent = recent.borrow_mut();
            let slot = recent.next;
            recent.next = (slot + 1) % RECENT;
            recent.entries[slot] = Some((chain, own.clone()));
        });
        own
    }
}

#[cfg(test)]
#[cfg(feature = "mtls")]
mod tests {
    use super::*;

    fn cert(uris: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
        for uri in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*uri).try_into().expect("uri")));
        }
        let key = rcgen::KeyPair::generate().expect("key");
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn one_spiffe_uri_is_the_identity() {
        let der = cert(&["spiffe://authmesh.local/orders", "https://example.test/"]);
        let peer = PeerIdentity::from_certificate(&der).expect("identity");
        assert_eq!(peer.spiffe_id(), Some("spiffe://authmesh.local/orders"));
        assert_eq!(peer.thumbprint(), thumbprint(&der));
        assert_eq!(
            PeerIdentity::from_certificate(&cert(&[])).map(|p| p.spiffe_id),
            Ok(None)
        );
        assert_eq!(
            PeerIdentity::from_certificate(&cert(&["spiffe://a/x", "spiffe://a/y"])),
            Err(PeerError::AmbiguousSpiffeId)
        );
        assert_eq!(
            PeerIdentity::from_certificate(b"not a certificate"),
            Err(PeerError::Unparsable)
        );
    }

    #[test]
    fn a_connection_is_recalled_by_its_own_chain_only() {
        let der = cert(&["spiffe://authmesh.local/orders"]);
        let peer = PeerIdentity::from_certificate(&der).expect("identity");
        let chain = Arc::new(vec![tonic::transport::CertificateDer::from(der.clone())]);
        assert_eq!(recent_connections::recall(&chain), None);
        let own = recent_connections::keep(chain.clone(), &peer);
        assert_eq!(own, peer);
        assert!(
            !Arc::ptr_eq(&own.thumbprint, &peer.thumbprint),
            "this thread's own copy"
        );
        assert_eq!(recent_connections::recall(&chain), Some(peer.clone()));
        // Another connection with the same certificate is another chain:
        // identified again (through the shared cache), not recalled.
        let other = Arc::new(vec![tonic::transport::CertificateDer::from(der)]);
        assert_eq!(recent_connections::recall(&other), None);
    }
}
