//! TLS for the runtime adapters (feature `tls`): rustls with the `ring`
//! provider, client and server configurations built from PEM, and a
//! server-side session driven with byte buffers.
//!
//! Every adapter (`dcp-tokio`, `dcp-blocking`, `dcp-async-std`) re-exports
//! these through its own `tls` module, with errors in its own `Error` type
//! (and reads PEM files itself: nothing here touches the file system).
//!
//! - A client trusts the CA certificates of a PEM document
//!   ([`client_config_from_pem`]) and verifies the server's name
//!   ([`server_name`]); [`insecure_client_config_for_testing`] skips the
//!   verification (local testing only).
//! - A server presents a certificate chain and its key
//!   ([`server_config_from_pem`]); a server that runs its own socket loop
//!   (threads, or one task polling reads and writes) drives each
//!   connection's TLS with a [`ServerSession`], a session fed and drained
//!   with byte buffers.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

mod session;

pub use rustls;
pub use session::ServerSession;

/// A TLS configuration could not be built: a missing or malformed PEM
/// certificate or key, a key that does not match its certificate, or an
/// invalid server name. The text says which.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// The crypto provider of every configuration built here: `ring`.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, err: impl std::fmt::Display) -> ConfigError {
    ConfigError(format!("{what}: {err}"))
}

/// Parses every certificate of a PEM document.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error("bad PEM certificate", e))?;
    if certs.is_empty() {
        return Err(ConfigError("no certificate in the PEM data".into()));
    }
    Ok(certs)
}

/// A client configuration trusting the CA certificates of a PEM document
/// (and only those).
///
/// Errors when the PEM holds no certificate or one that is malformed.
pub fn client_config_from_pem(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, ConfigError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(ca_pem)? {
        roots
            .add(cert)
            .map_err(|e| config_error("bad CA certificate", e))?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("TLS versions", e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that accepts **any** server certificate.
///
/// For local testing only: the connection is encrypted but the server is
/// not authenticated, so anyone in the path can read and change it.
pub fn insecure_client_config_for_testing() -> Result<Arc<ClientConfig>, ConfigError> {
    let provider = provider();
    let verifier = Arc::new(NoVerification(provider.signature_verification_algorithms));
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("TLS versions", e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A server configuration presenting a certificate chain (leaf first) with
/// its private key, both PEM.
///
/// Errors when either is missing or malformed, or the key does not match
/// the certificate.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, ConfigError> {
    let chain = certificates(cert_chain_pem)?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| config_error("bad PEM key", e))?;
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| config_error("TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| config_error("certificate and key", e))?;
    Ok(Arc::new(config))
}

/// Parses a server name (a DNS name or an IP address, IPv6 with or without
/// brackets) for SNI and certificate verification.
pub fn server_name(name: &str) -> Result<ServerName<'static>, ConfigError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned())
        .map_err(|e| config_error(&format!("bad server name {name:?}"), e))
}

/// Whether an I/O error from a TLS handshake is TLS refusing the peer (a
/// certificate, a protocol alert), as opposed to the socket failing.
pub fn rustls_error(err: &std::io::Error) -> Option<&rustls::Error> {
    err.get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
}

/// Accepts every server certificate (but still checks the handshake
/// signatures, so the session keys are the server's).
#[derive(Debug)]
struct NoVerification(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_pem_and_names_are_errors() {
        assert!(client_config_from_pem(b"not a certificate").is_err());
        assert!(server_config_from_pem(b"", b"").is_err());
        assert!(server_name("localhost").is_ok());
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("[::1]").is_ok());
        assert!(server_name("not a name!").is_err());
    }

    #[test]
    fn a_generated_pair_builds_both_sides() {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        client_config_from_pem(cert.pem().as_bytes()).unwrap();
        insecure_client_config_for_testing().unwrap();
        let other = rcgen::KeyPair::generate().unwrap();
        assert!(
            server_config_from_pem(cert.pem().as_bytes(), other.serialize_pem().as_bytes())
                .is_err()
        );
    }
}
