//! [`ServerSession`]: the server side of one connection's TLS session,
//! driven with byte buffers, for servers that keep their own socket loop.

use std::io::{self, Read, Write};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use rustls::{ServerConfig, ServerConnection};

/// Plaintext bytes taken out of the session per read.
const PLAIN_CHUNK: usize = 16 * 1024;

/// The server side of one TLS connection, without a socket: the server
/// reads raw bytes and hands them to [`receive`](Self::receive), which
/// appends the decrypted plaintext to its input buffer; it
/// [`seal`](Self::seal)s its output before writing it, which also yields
/// the handshake's own records.
///
/// No call blocks and no call touches a socket, so a server may keep the
/// session under the same lock as the rest of the connection's state, and
/// read and write the socket from different threads.
#[derive(Debug)]
pub struct ServerSession {
    conn: ServerConnection,
}

impl ServerSession {
    /// A session waiting for a client's hello.
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        let mut conn = ServerConnection::new(config)?;
        // `seal` drains every record at once into the caller's buffer, whose
        // size the caller bounds: no second limit here.
        conn.set_buffer_limit(None);
        Ok(Self { conn })
    }

    /// Whether the handshake is still going on (no plaintext yet).
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Whether records wait to be sent (take them with
    /// [`seal`](Self::seal)).
    pub fn wants_write(&self) -> bool {
        self.conn.wants_write()
    }

    /// Feeds raw bytes received from the client and appends the plaintext
    /// they carry to `plain`. `Ok(true)` once the client closed the
    /// session (`close_notify`).
    ///
    /// Errors: the client broke TLS (not TLS at all, a bad record, an
    /// alert); the error wraps the [`rustls::Error`] (see
    /// [`rustls_error`](crate::rustls_error)). The session is then over;
    /// [`seal`](Self::seal) still yields the alert to send.
    pub fn receive(&mut self, mut raw: &[u8], plain: &mut BytesMut) -> io::Result<bool> {
        loop {
            if !raw.is_empty() && self.conn.read_tls(&mut raw)? == 0 {
                return Err(io::Error::other("TLS input buffer full"));
            }
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let got = self.drain(plain)?;
            if raw.is_empty() && got == 0 {
                return Ok(state.peer_has_closed());
            }
        }
    }

    /// Moves the decrypted plaintext into `plain`; returns how much.
    fn drain(&mut self, plain: &mut BytesMut) -> io::Result<usize> {
        let mut total = 0;
        loop {
            let start = plain.len();
            plain.resize(start + PLAIN_CHUNK, 0);
            let read = self
                .conn
                .reader()
                .read(plain.get_mut(start..).unwrap_or_default());
            let n = *read.as_ref().unwrap_or(&0);
            plain.truncate(start + n);
            match read {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                Err(err) if err.kind() == io::ErrorKind::WouldBlock => return Ok(total),
                // The client ended without close_notify: what came before
                // is still good; the socket's end reports the rest.
                Err(err) if err.kind() == io::ErrorKind::UnexpectedEof => return Ok(total),
                Err(err) => return Err(err),
            }
        }
    }

    /// Encrypts the plaintext in `buf` and replaces it with the records to
    /// send, after any the session had queued (handshake messages,
    /// alerts, `close_notify`). With an empty `buf`, only those.
    ///
    /// Plaintext given during the handshake is held and sent once it
    /// completes.
    pub fn seal(&mut self, buf: &mut BytesMut) -> io::Result<()> {
        if !buf.is_empty() {
            self.conn.writer().write_all(buf)?;
            buf.clear();
        }
        let mut out = buf.writer();
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut out)? == 0 {
                break;
            }
        }
        Ok(())
    }

    /// Queues a `close_notify`: the next [`seal`](Self::seal) yields it.
    pub fn close(&mut self) {
        self.conn.send_close_notify();
    }
}
