//! The server side of TLS as the servers use it: a configuration and one
//! [`Session`] per connection, fed and drained with byte buffers (none of
//! it exists without the `tls` feature, so the servers need no `cfg`).

use std::io;

use bytes::BytesMut;

/// How long a TLS server waits for a client's TLS handshake.
#[cfg(feature = "tls")]
pub const TLS_ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
#[cfg(not(feature = "tls"))]
pub(crate) const TLS_ACCEPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A server's TLS configuration.
#[cfg(feature = "tls")]
pub(crate) type Config = std::sync::Arc<rustls::ServerConfig>;

/// One connection's TLS session.
#[cfg(feature = "tls")]
#[derive(Debug)]
pub(crate) struct Session(dcp_proto::tls::ServerSession);

#[cfg(feature = "tls")]
impl Session {
    pub(crate) fn new(config: &Config) -> io::Result<Session> {
        dcp_proto::tls::ServerSession::new(std::sync::Arc::clone(config))
            .map(Session)
            .map_err(io::Error::other)
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        self.0.is_handshaking()
    }

    pub(crate) fn receive(&mut self, raw: &[u8], plain: &mut BytesMut) -> io::Result<bool> {
        self.0.receive(raw, plain)
    }

    pub(crate) fn seal(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        self.0.seal(buf)
    }
}

/// No TLS without the `tls` feature: no configuration exists.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone)]
pub(crate) enum Config {}

/// No TLS without the `tls` feature: no session exists.
#[cfg(not(feature = "tls"))]
#[derive(Debug)]
pub(crate) enum Session {}

#[cfg(not(feature = "tls"))]
impl Session {
    pub(crate) fn new(config: &Config) -> io::Result<Session> {
        match *config {}
    }

    pub(crate) fn is_handshaking(&self) -> bool {
        match *self {}
    }

    pub(crate) fn receive(&mut self, _raw: &[u8], _plain: &mut BytesMut) -> io::Result<bool> {
        match *self {}
    }

    pub(crate) fn seal(&mut self, _buf: &mut BytesMut) -> io::Result<()> {
        match *self {}
    }
}
