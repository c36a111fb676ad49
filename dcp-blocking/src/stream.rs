//! [`Stream`]: the socket under a connection, plain TCP or TLS, read
//! directly or through a reader thread ([`Piped`], which can be woken).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use crate::pipe::Piped;

/// The bytes under a connection (TLS records over TLS).
#[derive(Debug)]
pub(crate) enum Transport {
    /// The socket, read directly.
    Tcp(TcpStream),
    /// The socket, read by a reader thread.
    Piped(Piped),
}

impl Transport {
    fn tcp(&self) -> &TcpStream {
        match self {
            Transport::Tcp(s) => s,
            Transport::Piped(p) => p.socket(),
        }
    }

    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.set_read_timeout(timeout),
            Transport::Piped(p) => {
                p.set_read_timeout(timeout);
                Ok(())
            }
        }
    }
}

impl Read for Transport {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.read(buf),
            Transport::Piped(p) => p.read(buf),
        }
    }
}

impl Write for Transport {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Transport::Tcp(s) => s.write(buf),
            Transport::Piped(p) => p.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Transport::Tcp(s) => s.flush(),
            Transport::Piped(p) => p.flush(),
        }
    }
}

/// A connection's socket: plain, or TLS (feature `tls`).
#[derive(Debug)]
pub(crate) enum Stream {
    /// Plain bytes.
    Plain(Transport),
    /// TLS, client side.
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, Transport>>),
}

impl Stream {
    fn transport(&self) -> &Transport {
        match self {
            Stream::Plain(t) => t,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_ref(),
        }
    }

    fn transport_mut(&mut self) -> &mut Transport {
        match self {
            Stream::Plain(t) => t,
            #[cfg(feature = "tls")]
            Stream::Tls(s) => s.get_mut(),
        }
    }

    /// The TCP socket under it.
    pub(crate) fn tcp(&self) -> &TcpStream {
        self.transport().tcp()
    }

    /// Bounds the next read. Over TLS a read may first write records the
    /// session still holds, so the bound applies to writes too.
    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        if self.is_tls() {
            self.tcp().set_write_timeout(timeout)?;
        }
        self.transport_mut().set_read_timeout(timeout)
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

    /// Whether a [`Wake`](crate::pipe::Wake) interrupted the last read
    /// (forgetting it).
    pub(crate) fn take_wake(&self) -> bool {
        match self.transport() {
            Transport::Tcp(_) => false,
            Transport::Piped(p) => p.take_wake(),
        }
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
