//! TLS with rustls (the `ring` provider), feature `tls`: building client and
//! server configurations from PEM (the configuration code is `dcp_proto::tls`'s,
//! shared by every adapter).
//!
//! A client trusts a CA ([`client_config_from_pem`],
//! [`client_config_from_pem_file`]) and connects with
//! [`Connection::connect_tls`](crate::Connection::connect_tls) (one node)
//! or [`ClusterConnection::connect_tls`](crate::ClusterConnection::connect_tls)
//! (a cluster, on its nodes' `kvSSL` ports); a
//! [`Server`](crate::Server) or a [`ClusterServer`](crate::ClusterServer)
//! serves TLS with [`Server::with_tls`](crate::Server::with_tls) or
//! [`ClusterServer::with_tls`](crate::ClusterServer::with_tls) and a
//! [`server_config_from_pem`] configuration.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};

use crate::Error;

impl From<dcp_proto::tls::ConfigError> for Error {
    fn from(err: dcp_proto::tls::ConfigError) -> Self {
        Error::TlsConfig(err.0)
    }
}

impl Error {
    /// The rustls error behind a failed TLS handshake, if TLS refused the
    /// peer (rather than the socket failing).
    pub fn rustls_error(&self) -> Option<&rustls::Error> {
        match self {
            Error::Tls { source, .. } => dcp_proto::tls::rustls_error(source),
            _ => None,
        }
    }
}

/// A client configuration trusting the CA certificates of a PEM document
/// (and only those).
///
/// Errors: [`Error::TlsConfig`] when the PEM holds no certificate or one
/// that is malformed.
pub fn client_config_from_pem(ca_pem: &[u8]) -> Result<Arc<ClientConfig>, Error> {
    Ok(dcp_proto::tls::client_config_from_pem(ca_pem)?)
}

/// A client configuration trusting the CA certificates of a PEM file
/// (see [`client_config_from_pem`]).
pub fn client_config_from_pem_file(path: impl AsRef<Path>) -> Result<Arc<ClientConfig>, Error> {
    client_config_from_pem(&read_pem(path.as_ref())?)
}

/// A client configuration that accepts **any** server certificate.
///
/// For local testing only: the connection is encrypted but the server is
/// not authenticated, so anyone in the path can read and change it.
pub fn insecure_client_config_for_testing() -> Result<Arc<ClientConfig>, Error> {
    Ok(dcp_proto::tls::insecure_client_config_for_testing()?)
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
    Ok(dcp_proto::tls::server_config_from_pem(
        cert_chain_pem,
        key_pem,
    )?)
}

/// A server configuration from PEM files (see [`server_config_from_pem`]).
pub fn server_config_from_pem_files(
    cert_chain: impl AsRef<Path>,
    key: impl AsRef<Path>,
) -> Result<Arc<ServerConfig>, Error> {
    server_config_from_pem(&read_pem(cert_chain.as_ref())?, &read_pem(key.as_ref())?)
}

/// Parses a server name (DNS name or IP address) for SNI and verification.
pub(crate) fn server_name(name: &str) -> Result<ServerName<'static>, Error> {
    Ok(dcp_proto::tls::server_name(name)?)
}

/// Reads a PEM file.
fn read_pem(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::TlsConfig(format!("{}: {e}", path.display())))
}
