//! A consumer connection over a blocking [`TcpStream`], plain or TLS.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use dcp_proto::consumer::{
    ConnectionStats, Consumer, ConsumerConfig, ConsumerError, Credit, Event, Negotiated,
    StreamFilter, StreamStart, StreamStats,
};
use dcp_proto::session::{Checkpoint, StreamKey};

use crate::Error;
use crate::stream::Stream;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// One DCP consumer connection to one node, driven on the calling thread.
///
/// Commands ([`open_stream`](Self::open_stream), [`ack`](Self::ack), ...)
/// only queue requests; [`next_event`](Self::next_event) sends them, then
/// hands out events, reading the socket only when none is queued. Nothing
/// is read while the application does not ask for events, so an
/// application that falls behind stops acknowledging and the producer stops
/// sending: memory stays bounded by the flow-control window.
#[derive(Debug)]
pub struct Connection {
    stream: Stream,
    consumer: Consumer,
    rx: BytesMut,
    tx: BytesMut,
    /// Writing failed: the peer is gone. What it sent before is still read
    /// (and its end reported) before the connection counts as closed.
    write_failed: bool,
    /// `dcp.connection` (name, peer), entered while the connection is
    /// driven.
    span: tracing::Span,
}

/// What the driving loop should do next.
enum Wait {
    /// The consumer's deadline passed: call `handle_timeout`.
    Consumer,
    /// The caller's deadline passed.
    Caller,
    /// Block at most this long (`None`: no deadline).
    For(Option<Duration>),
}

impl Connection {
    /// Connects to `addr` (each resolved address in turn, each attempt
    /// bounded by the handshake timeout), runs the handshake and returns
    /// once the connection is ready for streams.
    pub fn connect(addr: impl ToSocketAddrs, config: ConsumerConfig) -> Result<Self, Error> {
        let stream = tcp_connect(addr, config.handshake_timeout)?;
        Self::handshake(stream, config)
    }

    /// Connects to `addr` over TLS, verifying the server's certificate for
    /// `server_name` (a DNS name or an IP address) with `tls`, then runs
    /// the handshake as [`connect`](Self::connect) does.
    ///
    /// Over TLS the password may travel in the clear inside the encrypted
    /// channel, so SASL `PLAIN` is added (last) to `config.mechanisms` if
    /// missing, as Couchbase's own clients do.
    ///
    /// The TCP connect, the TLS handshake and the DCP handshake each must
    /// finish within `config.handshake_timeout`. Errors as for `connect`,
    /// plus [`Error::Tls`] (the certificate was refused, or the peer does
    /// not speak TLS; [`Error::rustls_error`] says why TLS refused),
    /// [`Error::TlsTimeout`] and [`Error::TlsConfig`] (a bad server name).
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        server_name: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        mut config: ConsumerConfig,
    ) -> Result<Self, Error> {
        let tcp = tcp_connect(addr, config.handshake_timeout)?;
        let session = tls_handshake(&tcp, server_name, tls, config.handshake_timeout)?;
        allow_plain(&mut config);
        let stream = rustls::StreamOwned::new(session, tcp);
        Self::handshake_over(Stream::Tls(Box::new(stream)), config)
    }

    /// Runs the handshake on a connected stream and returns once the
    /// connection is ready for streams.
    pub fn handshake(stream: TcpStream, config: ConsumerConfig) -> Result<Self, Error> {
        stream.set_nodelay(true)?;
        Self::handshake_over(Stream::Plain(stream), config)
    }

    /// Runs the DCP handshake over a connected stream, plain or TLS.
    fn handshake_over(stream: Stream, config: ConsumerConfig) -> Result<Self, Error> {
        let span = tracing::info_span!(
            "dcp.connection",
            name = %config.connection_name,
            peer = ?stream.tcp().peer_addr().ok(),
            tls = stream.is_tls(),
        );
        tracing::debug!(parent: &span, "connected; handshake starts");
        let consumer = Consumer::new(config, sasl_nonce()?, Instant::now())?;
        let mut conn = Self {
            stream,
            consumer,
            rx: BytesMut::with_capacity(READ_CHUNK),
            tx: BytesMut::new(),
            write_failed: false,
            span,
        };
        while !conn.consumer.is_ready() {
            // Before ready the only event is `Ready` itself: no stream exists.
            if conn.drive(None)?.is_none() {
                return Err(ConsumerError::Closed.into());
            }
        }
        Ok(conn)
    }

    // ----- getters -------------------------------------------------------

    /// What the producer agreed to in the handshake.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.consumer.negotiated()
    }

    /// Every stream's position as of the events handed out so far: persist
    /// it with the data those events produced, and resume from it.
    pub fn checkpoint(&self) -> Checkpoint {
        self.consumer.checkpoint()
    }

    /// Connection counters.
    pub fn stats(&self) -> ConnectionStats {
        self.consumer.stats()
    }

    /// A stream's counters.
    pub fn stream_stats(&self, stream: impl Into<StreamKey>) -> Option<StreamStats> {
        self.consumer.stream_stats(stream)
    }

    /// The sans-IO consumer, for its other getters.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The sans-IO consumer, for commands this type does not wrap (what
    /// they queue is sent by the next [`next_event`](Self::next_event)).
    pub fn consumer_mut(&mut self) -> &mut Consumer {
        &mut self.consumer
    }

    /// The producer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.tcp().peer_addr()
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.stream.is_tls()
    }

    /// Whether the connection failed or was closed (queued events may
    /// still be taken).
    pub fn is_closed(&self) -> bool {
        self.consumer.is_closed()
    }

    // ----- commands ------------------------------------------------------

    /// Opens a stream (a vbucket number, or a [`StreamKey`] with a stream
    /// id) from `start`, up to and including
    /// `end_seqno` (`None`: endless).
    pub fn open_stream(
        &mut self,
        stream: impl Into<StreamKey>,
        start: StreamStart,
        end_seqno: Option<u64>,
    ) -> Result<(), Error> {
        Ok(self.consumer.open_stream(stream, start, end_seqno)?)
    }

    /// Opens a stream streaming only what `filter` selects (collections
    /// connections); see [`Consumer::open_filtered_stream`].
    pub fn open_filtered_stream(
        &mut self,
        stream: impl Into<StreamKey>,
        start: StreamStart,
        end_seqno: Option<u64>,
        filter: StreamFilter,
    ) -> Result<(), Error> {
        Ok(self
            .consumer
            .open_filtered_stream(stream, start, end_seqno, filter)?)
    }

    /// Closes a stream (a vbucket number or a [`StreamKey`]); an
    /// [`Event::StreamEnded`] follows.
    pub fn close_stream(&mut self, stream: impl Into<StreamKey>) -> Result<(), Error> {
        Ok(self.consumer.close_stream(stream)?)
    }

    /// Continues a stream waiting for a rollback confirmation.
    pub fn confirm_rollback(&mut self, stream: impl Into<StreamKey>) -> Result<(), Error> {
        Ok(self.consumer.confirm_rollback(stream)?)
    }

    /// Returns an event's flow-control credit once the application is done
    /// with it (not needed with `auto_ack`).
    pub fn ack(&mut self, credit: Credit) {
        self.consumer.ack_at(credit, Instant::now());
    }

    /// Writes every queued request now rather than at the next
    /// [`next_event`](Self::next_event).
    pub fn flush(&mut self) -> Result<(), Error> {
        self.consumer.poll_transmit(&mut self.tx);
        self.stream.set_write_timeout(None)?;
        while !self.tx.is_empty() && !self.write_failed {
            self.write_some();
        }
        if self.write_failed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        }
        // TLS may hold records back: send them too.
        self.stream.flush()?;
        Ok(())
    }

    /// Closes the connection. Queued events can still be taken; after them
    /// [`next_event`](Self::next_event) returns `Ok(None)`.
    pub fn close(&mut self) {
        self.consumer.close();
        let _ = self.stream.shutdown(Shutdown::Both);
    }

    // ----- the loop ------------------------------------------------------

    /// The next event, blocking until one arrives. `Ok(None)` once the
    /// application closed the connection and every queued event was taken;
    /// an error when the connection failed (after its queued events).
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        self.drive(None)
    }

    /// Like [`next_event`](Self::next_event), giving up after `timeout`:
    /// `Ok(None)` then too (see [`is_closed`](Self::is_closed)).
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        self.drive(Some(Instant::now() + timeout))
    }

    /// One pass of the driving contract: send, hand out an event, else
    /// wait for bytes or a deadline and feed them in.
    fn drive(&mut self, until: Option<Instant>) -> Result<Option<Event>, Error> {
        let _entered = self.span.clone().entered();
        loop {
            self.consumer.poll_transmit(&mut self.tx);
            if self.write_failed {
                self.tx.clear();
            }
            if !self.tx.is_empty() && !self.consumer.is_closed() {
                match self.wait(until) {
                    Wait::Consumer => {
                        self.on_timeout();
                        continue;
                    }
                    // Out of time: still hand out what is queued.
                    Wait::Caller => {}
                    Wait::For(timeout) => {
                        self.stream.set_write_timeout(timeout)?;
                        self.write_some();
                        continue;
                    }
                }
            }
            if let Some(event) = self.consumer.poll_event() {
                return Ok(Some(event));
            }
            if let Some(err) = self.consumer.error() {
                let _ = self.stream.shutdown(Shutdown::Both);
                return match err {
                    ConsumerError::Closed => Ok(None),
                    err => Err(err.clone().into()),
                };
            }
            match self.wait(until) {
                Wait::Consumer => self.on_timeout(),
                Wait::Caller => return Ok(None),
                Wait::For(timeout) => {
                    self.stream.set_read_timeout(timeout)?;
                    self.read_some()?;
                }
            }
        }
    }

    fn wait(&self, until: Option<Instant>) -> Wait {
        let now = Instant::now();
        let deadline = self.consumer.poll_timeout();
        if deadline.is_some_and(|at| at <= now) {
            return Wait::Consumer;
        }
        if until.is_some_and(|at| at <= now) {
            return Wait::Caller;
        }
        let next = match (deadline, until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Wait::For(next.map(|at| at - now))
    }

    fn on_timeout(&mut self) {
        // A failure is sticky: the loop reports it after queued events.
        let _ = self.consumer.handle_timeout(Instant::now());
    }

    /// Writes some of `tx`. A failure stops writing but not reading: the
    /// bytes the peer sent before it went away are still handed out, and
    /// the read side reports how the connection ended.
    fn write_some(&mut self) {
        match self.stream.write(&self.tx) {
            Ok(n) if n > 0 => self.tx.advance(n),
            Err(err) if is_retry(&err) => {}
            Ok(_) | Err(_) => {
                self.write_failed = true;
                self.tx.clear();
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
    }

    fn read_some(&mut self) -> Result<(), Error> {
        let len = self.rx.len();
        self.rx.resize(len + READ_CHUNK, 0);
        let result = self.stream.read(self.rx.get_mut(len..).unwrap_or_default());
        self.rx.truncate(len + *result.as_ref().unwrap_or(&0));
        match result {
            Ok(0) => {
                self.consumer.handle_eof();
                Ok(())
            }
            Ok(_) => {
                // A failure is sticky: the loop reports it after the events
                // decoded before it.
                let _ = self.consumer.handle_input(&mut self.rx, Instant::now());
                Ok(())
            }
            Err(err) if is_retry(&err) => Ok(()),
            Err(err) => self.fail(err),
        }
    }

    /// The socket failed: the consumer treats it as closed by the peer.
    fn fail(&mut self, err: io::Error) -> Result<(), Error> {
        self.consumer.handle_eof();
        let _ = self.stream.shutdown(Shutdown::Both);
        Err(err.into())
    }
}

/// Adds SASL `PLAIN` (last) to `config.mechanisms` if missing: over TLS
/// the password may travel in the clear inside the encrypted channel, as
/// Couchbase's own clients do.
#[cfg(feature = "tls")]
fn allow_plain(config: &mut ConsumerConfig) {
    use dcp_proto::auth::Mechanism;
    if !config.mechanisms.contains(&Mechanism::Plain) {
        config.mechanisms.push(Mechanism::Plain);
    }
}

/// Runs the client side of the TLS handshake on a connected socket within
/// `timeout`.
#[cfg(feature = "tls")]
pub(crate) fn tls_handshake(
    tcp: &TcpStream,
    server_name: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    timeout: Duration,
) -> Result<rustls::ClientConnection, Error> {
    let name = crate::tls::server_name(server_name)?;
    tcp.set_nodelay(true)?;
    let peer = tcp.peer_addr()?.to_string();
    let refused = |source| Error::Tls {
        addr: peer.clone(),
        source,
    };
    let mut session = rustls::ClientConnection::new(tls, name)
        .map_err(|e| refused(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let deadline = Instant::now() + timeout;
    let mut io = tcp;
    while session.is_handshaking() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Error::TlsTimeout {
                addr: peer,
                timeout,
            });
        }
        tcp.set_read_timeout(Some(left))?;
        tcp.set_write_timeout(Some(left))?;
        match session.complete_io(&mut io) {
            Ok(_) => {}
            Err(err) if is_retry(&err) => {}
            Err(err) => return Err(refused(err)),
        }
    }
    tcp.set_read_timeout(None)?;
    tcp.set_write_timeout(None)?;
    Ok(session)
}

/// Connects TCP to `addr` (each resolved address in turn, each attempt
/// bounded by `timeout`).
pub(crate) fn tcp_connect(addr: impl ToSocketAddrs, timeout: Duration) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.map_or(Error::NoAddress, Error::Io))
}

/// Errors after which the same call may simply be made again (a timeout
/// set from a deadline, or a signal).
fn is_retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A fresh SCRAM client nonce: 18 random bytes, hex-encoded.
pub(crate) fn sasl_nonce() -> io::Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
