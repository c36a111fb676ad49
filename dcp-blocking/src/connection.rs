//! A consumer connection over a blocking [`TcpStream`].

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use dcp_proto::consumer::{
    ConnectionStats, Consumer, ConsumerConfig, ConsumerError, Credit, Event, Negotiated,
    StreamStart, StreamStats,
};
use dcp_proto::session::Checkpoint;

use crate::Error;

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
    stream: TcpStream,
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
        let mut last = None;
        for addr in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, config.handshake_timeout) {
                Ok(stream) => return Self::handshake(stream, config),
                Err(err) => last = Some(err),
            }
        }
        Err(last.map_or(Error::NoAddress, Error::Io))
    }

    /// Runs the handshake on a connected stream and returns once the
    /// connection is ready for streams.
    pub fn handshake(stream: TcpStream, config: ConsumerConfig) -> Result<Self, Error> {
        stream.set_nodelay(true)?;
        let span = tracing::info_span!(
            "dcp.connection",
            name = %config.connection_name,
            peer = ?stream.peer_addr().ok(),
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
    pub fn stream_stats(&self, vbucket: u16) -> Option<StreamStats> {
        self.consumer.stream_stats(vbucket)
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
        self.stream.peer_addr()
    }

    /// Whether the connection failed or was closed (queued events may
    /// still be taken).
    pub fn is_closed(&self) -> bool {
        self.consumer.is_closed()
    }

    // ----- commands ------------------------------------------------------

    /// Opens a stream for `vbucket` from `start`, up to and including
    /// `end_seqno` (`None`: endless).
    pub fn open_stream(
        &mut self,
        vbucket: u16,
        start: StreamStart,
        end_seqno: Option<u64>,
    ) -> Result<(), Error> {
        Ok(self.consumer.open_stream(vbucket, start, end_seqno)?)
    }

    /// Closes the stream of `vbucket`; an
    /// [`Event::StreamEnded`] follows.
    pub fn close_stream(&mut self, vbucket: u16) -> Result<(), Error> {
        Ok(self.consumer.close_stream(vbucket)?)
    }

    /// Continues a stream waiting for a rollback confirmation.
    pub fn confirm_rollback(&mut self, vbucket: u16) -> Result<(), Error> {
        Ok(self.consumer.confirm_rollback(vbucket)?)
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

/// Errors after which the same call may simply be made again (a timeout
/// set from a deadline, or a signal).
fn is_retry(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// A fresh SCRAM client nonce: 18 random bytes, hex-encoded.
fn sasl_nonce() -> io::Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
