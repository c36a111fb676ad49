//! [`Stream`]: the socket under a connection, plain TCP or TLS.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

/// A connection's socket: plain, or TLS (feature `tls`).
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain bytes.
    Plain(TcpStream),
    /// TLS, client side.
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    /// The TCP socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(t) => t,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref(),
        }
    }

    /// Bounds the next read. Over TLS a read may first write records the
    /// session still holds, so the bound applies to writes too.
    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.is_tls() {
            self.tcp().set_write_timeout(timeout)?;
        }
        self.tcp().set_read_timeout(timeout)
    }

    /// Bounds the next write.
    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.tcp().set_write_timeout(timeout)
    }

    /// Shuts the TCP socket down (no `close_notify`: it could block).
    pub(crate) fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.tcp().shutdown(how)
    }

    /// Whether it is TLS.
    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self, Stream::Plain(_))
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.read(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => match s.read(buf) {
                // The peer closed the socket without `close_notify`: an end
                // like any other (the core says whether it was expected).
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
                other => other,
            },
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(t) => t.write(buf),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(t) => t.flush(),
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.flush(),
        }
    }
}
