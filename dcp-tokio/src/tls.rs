//! TLS with rustls (the `ring` provider), feature `tls`: building client and
//! server configurations from PEM.
//!
//! A client trusts a CA ([`client_config_from_pem`],
//! [`client_config_from_pem_file`]) and connects with
//! [`Connection::connect_tls`](crate::Connection::connect_tls); a
//! [`Server`](crate::Server) or a [`ClusterServer`](crate::ClusterServer)
//! serves TLS with [`Server::with_tls`](crate::Server::with_tls) or
//! [`ClusterServer::with_tls`](crate::ClusterServer::with_tls) and a
//! [`server_config_from_pem`] configuration.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::Error;

/// The crypto provider of every configuration built here: `ring`.
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn config_error(what: &str, err: impl std::fmt::Display) -> Error {
    Error::TlsConfig(format!("{what}: {err}"))
}

/// Parses every certificate of a PEM document.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| config_error("bad PEM certificate", e))?;
    if certs.is_empty() {
        return Err(Error::TlsConfig("no certificate in the PEM data".into()));
    }
    Ok(certs)
}

/// A client configuration trusting the CA certificates of a PEM document
/// (and only those).
///
/// Errors: [`Error::TlsConfig`] when the PEM holds no certificate or one
/// that is malformed.
pub fn client_config_from_pem(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, Error> {
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

/// A client configuration trusting the CA certificates of a PEM file
/// (see [`client_config_from_pem`]).
pub fn client_config_from_pem_file(path: impl AsRef<Path>) -> Result<Arc<ClientConfig>, Error> {
    let path = path.as_ref();
    let pem = std::fs::read(path).map_err(|e| config_error(&path.display().to_string(), e))?;
    client_config_from_pem(&pem)
}

/// A client configuration that accepts **any** server certificate.
///
/// For local testing only: the connection is encrypted but the server is
/// not authenticated, so anyone in the path can read and change it.
pub fn insecure_client_config_for_testing() -> Result<Arc<ClientConfig>, Error> {
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
/// Errors: [`Error::TlsConfig`] when either is missing or malformed, or the
/// key does not match the certificate.
pub fn server_config_from_pem(
    cert_chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, Error> {
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

/// A server configuration from PEM files (see [`server_config_from_pem`]).
pub fn server_config_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, Error> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|e| config_error(&path.display().to_string(), e));
    server_config_from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
}

/// Parses a server name (DNS name or IP address) for SNI and verification.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    ServerName::try_from(name.to_owned())
        .map_err(|e| config_error(&format!("bad server name {name:?}"), e))
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
