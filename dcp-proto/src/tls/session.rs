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
    /// [`rustls_error`](crate::tls::rustls_error)). The session is then over;
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

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use rustls::ClientConnection;

    use super::*;

    /// A server session and a client trusting its certificate.
    fn pair() -> (ServerSession, ClientConnection) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let server_config = crate::tls::server_config_from_pem(
            cert.pem().as_bytes(),
            key.serialize_pem().as_bytes(),
        )
        .unwrap();
        let client_config = crate::tls::client_config_from_pem(cert.pem().as_bytes()).unwrap();
        let mut client =
            ClientConnection::new(client_config, crate::tls::server_name("localhost").unwrap())
                .unwrap();
        client.set_buffer_limit(None);
        (ServerSession::new(server_config).unwrap(), client)
    }

    /// Moves the client's records to the server; returns the plaintext.
    fn client_to_server(client: &mut ClientConnection, server: &mut ServerSession) -> BytesMut {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        let mut plain = BytesMut::new();
        assert!(!server.receive(&wire, &mut plain).unwrap());
        plain
    }

    /// Moves the server's records (after sealing `plain`) to the client;
    /// returns the plaintext the client reads.
    fn server_to_client(
        server: &mut ServerSession,
        client: &mut ClientConnection,
        plain: &[u8],
    ) -> Vec<u8> {
        let mut buf = BytesMut::from(plain);
        server.seal(&mut buf).unwrap();
        let mut wire = &buf[..];
        let mut got = Vec::new();
        while !wire.is_empty() {
            client.read_tls(&mut wire).unwrap();
            client.process_new_packets().unwrap();
            let mut chunk = [0u8; 4096];
            loop {
                match client.reader().read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&chunk[..n]),
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(err) => panic!("{err}"),
                }
            }
        }
        got
    }

    #[test]
    fn a_handshake_and_data_both_ways_through_byte_buffers() {
        let (mut server, mut client) = pair();
        assert!(server.is_handshaking());
        // Plaintext the server produces during the handshake waits for it.
        while client.is_handshaking() {
            client_to_server(&mut client, &mut server);
            server_to_client(&mut server, &mut client, b"");
        }
        // The client's finished message completes the server's side.
        client_to_server(&mut client, &mut server);
        assert!(!server.is_handshaking());

        // Large enough to span several records both ways.
        let request: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        client.writer().write_all(&request).unwrap();
        let got = client_to_server(&mut client, &mut server);
        assert_eq!(&got[..], &request[..]);

        let response: Vec<u8> = (0..70_000u32).map(|i| (i % 13) as u8).collect();
        let back = server_to_client(&mut server, &mut client, &response);
        assert_eq!(back, response);

        // A close_notify ends the session from either side.
        client.send_close_notify();
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).unwrap();
        }
        assert!(server.receive(&wire, &mut BytesMut::new()).unwrap());
        server.close();
        assert!(server.wants_write());
    }

    #[test]
    fn plaintext_instead_of_a_hello_is_an_error_with_an_alert_to_send() {
        let (mut server, _client) = pair();
        let err = server
            .receive(b"\x80\x1f\x00\x00 not TLS at all", &mut BytesMut::new())
            .unwrap_err();
        assert!(crate::tls::rustls_error(&err).is_some(), "{err:?}");
        let mut alert = BytesMut::new();
        server.seal(&mut alert).unwrap();
        assert!(!alert.is_empty());
    }
}
