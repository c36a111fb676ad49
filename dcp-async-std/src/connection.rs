//! A consumer connection over any `AsyncRead + AsyncWrite` stream.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use async_net::{AsyncToSocketAddrs, TcpStream};
use bytes::{Buf, BytesMut};
use dcp_proto::consumer::{
    ConnectionStats, Consumer, ConsumerConfig, ConsumerError, Credit, Event, Negotiated,
    StreamFilter, StreamStart, StreamStats,
};
use dcp_proto::session::{Checkpoint, StreamKey};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncWriteExt, future};

use crate::Error;

/// Bytes asked of the stream per read.
const READ_CHUNK: usize = 64 * 1024;

/// One DCP consumer connection to one node, over a TCP stream by default or
/// any `AsyncRead + AsyncWrite + Unpin` stream (a TLS stream, say).
///
/// Commands ([`open_stream`](Self::open_stream), [`ack`](Self::ack), ...)
/// only queue requests; [`next_event`](Self::next_event) sends them, then
/// hands out events, reading the stream only when none is queued. Nothing
/// is read while the application does not ask for events, so an
/// application that falls behind stops acknowledging and the producer stops
/// sending: memory stays bounded by the flow-control window.
///
/// `next_event` is cancel-safe: every byte read or still to write lives in
/// the connection, so dropping the future (in a `select`, after a timeout)
/// loses nothing.
#[derive(Debug)]
pub struct Connection<S = TcpStream> {
    stream: S,
    consumer: Consumer,
    rx: BytesMut,
    tx: BytesMut,
    /// Written bytes not flushed yet.
    unflushed: bool,
    /// Writing failed: the peer is gone. What it sent before is still read
    /// (and its end reported) before the connection counts as closed.
    write_failed: bool,
    timer: Timer,
    timer_at: Option<Instant>,
    /// `dcp.connection` (name, peer), entered while the connection is
    /// polled.
    span: tracing::Span,
}

impl Connection<TcpStream> {
    /// Connects to `addr` (bounded by the handshake timeout), runs the
    /// handshake and returns once the connection is ready for streams.
    pub async fn connect(
        addr: impl AsyncToSocketAddrs,
        config: ConsumerConfig,
    ) -> Result<Self, Error> {
        let stream = tcp_connect(addr, config.handshake_timeout).await?;
        let span = tracing::info_span!(
            "dcp.connection",
            name = %config.connection_name,
            peer = ?stream.peer_addr().ok(),
        );
        Self::handshake_in(stream, config, span).await
    }
}

/// The stream of a TLS connection: futures-rustls over TCP.
#[cfg(feature = "tls")]
pub type TlsStream = futures_rustls::client::TlsStream<TcpStream>;

#[cfg(feature = "tls")]
impl Connection<TlsStream> {
    /// Connects to `addr` over TLS, verifying the server's certificate for
    /// `server_name` (a DNS name or an IP address) with `tls`, then runs
    /// the handshake as [`connect`](Connection::connect) does.
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
    pub async fn connect_tls(
        addr: impl AsyncToSocketAddrs,
        server_name: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        mut config: ConsumerConfig,
    ) -> Result<Self, Error> {
        use dcp_proto::auth::Mechanism;
        // A bad name is refused before connecting.
        crate::tls::server_name(server_name)?;
        let limit = config.handshake_timeout;
        let tcp = tcp_connect(addr, limit).await?;
        let stream = tls_connect(tcp, server_name, tls, limit).await?;
        if !config.mechanisms.contains(&Mechanism::Plain) {
            config.mechanisms.push(Mechanism::Plain);
        }
        Self::handshake(stream, config).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    /// Runs the handshake on a connected stream and returns once the
    /// connection is ready for streams.
    pub async fn handshake(stream: S, config: ConsumerConfig) -> Result<Self, Error> {
        let span = tracing::info_span!("dcp.connection", name = %config.connection_name);
        Self::handshake_in(stream, config, span).await
    }

    async fn handshake_in(
        stream: S,
        config: ConsumerConfig,
        span: tracing::Span,
    ) -> Result<Self, Error> {
        tracing::debug!(parent: &span, "connected; handshake starts");
        let consumer = Consumer::new(config, sasl_nonce()?, Instant::now())?;
        let mut conn = Self {
            stream,
            consumer,
            rx: BytesMut::with_capacity(READ_CHUNK),
            tx: BytesMut::new(),
            unflushed: false,
            write_failed: false,
            timer: Timer::never(),
            timer_at: None,
            span,
        };
        while !conn.consumer.is_ready() {
            // Before ready the only event is `Ready` itself: no stream exists.
            if conn.next_event().await?.is_none() {
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

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
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

    /// Closes a stream (a vbucket number or a [`StreamKey`]); an [`Event::StreamEnded`] follows.
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
    /// [`next_event`](Self::next_event). Cancel-safe.
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.consumer.poll_transmit(&mut self.tx);
        while !self.tx.is_empty() && !self.write_failed {
            future::poll_fn(|cx| self.poll_write_some(cx)).await;
        }
        if self.write_failed {
            return Err(io::Error::from(io::ErrorKind::BrokenPipe).into());
        }
        if self.unflushed {
            self.stream.flush().await?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Closes the connection. Queued events can still be taken; after them
    /// [`next_event`](Self::next_event) returns `Ok(None)`.
    pub async fn close(&mut self) {
        self.consumer.close();
        let _ = self.stream.close().await;
    }

    // ----- the loop ------------------------------------------------------

    /// The next event, waiting until one arrives. `Ok(None)` once the
    /// application closed the connection and every queued event was taken;
    /// an error when the connection failed (after its queued events).
    /// Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        future::poll_fn(|cx| self.poll_next_event(cx)).await
    }

    /// Like [`next_event`](Self::next_event), giving up after `timeout`:
    /// `Ok(None)` then too (see [`is_closed`](Self::is_closed)).
    pub async fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        future::or(self.next_event(), async {
            Timer::after(timeout).await;
            Ok(None)
        })
        .await
    }

    /// The poll form of [`next_event`](Self::next_event), for hand-written
    /// futures and streams.
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<Event>, Error>> {
        let span = self.span.clone();
        let _entered = span.enter();
        loop {
            self.consumer.poll_transmit(&mut self.tx);
            if !self.consumer.is_closed() && self.poll_write_some(cx).is_ready() {
                continue;
            }
            if let Some(event) = self.consumer.poll_event() {
                return Poll::Ready(Ok(Some(event)));
            }
            if let Some(err) = self.consumer.error() {
                // Best effort: tell the peer (a TCP stream closes at once).
                let _ = Pin::new(&mut self.stream).poll_close(cx);
                return Poll::Ready(match err {
                    ConsumerError::Closed => Ok(None),
                    err => Err(err.clone().into()),
                });
            }
            let now = Instant::now();
            if let Some(at) = self.consumer.poll_timeout() {
                if at <= now {
                    // A failure is sticky: reported after queued events.
                    let _ = self.consumer.handle_timeout(now);
                    continue;
                }
                if self.timer_at != Some(at) {
                    self.timer.set_at(at);
                    self.timer_at = Some(at);
                }
                if Pin::new(&mut self.timer).poll(cx).is_ready() {
                    self.timer_at = None;
                    continue;
                }
            }
            match self.poll_read_some(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Makes progress on writing `tx` (and flushing it): `Ready` when
    /// something changed, `Pending` when there is nothing to do or the
    /// stream is not writable. A failure stops writing but not reading:
    /// the bytes the peer sent before it went away are still handed out,
    /// and the read side reports how the connection ended.
    fn poll_write_some(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.write_failed {
            self.tx.clear();
            return Poll::Pending;
        }
        if !self.tx.is_empty() {
            return match Pin::new(&mut self.stream).poll_write(cx, &self.tx) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.tx.advance(n);
                    self.unflushed = true;
                    Poll::Ready(())
                }
                Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {
                    Poll::Ready(())
                }
                Poll::Ready(_) => {
                    self.write_failed = true;
                    self.tx.clear();
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            };
        }
        if self.unflushed {
            return match Pin::new(&mut self.stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    Poll::Ready(())
                }
                Poll::Ready(Err(_)) => {
                    self.write_failed = true;
                    self.unflushed = false;
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            };
        }
        Poll::Pending
    }

    /// Reads once into `rx` and feeds the consumer. The buffer is resized
    /// and truncated within one poll, so a dropped future leaves no trace.
    fn poll_read_some(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let len = self.rx.len();
        self.rx.resize(len + READ_CHUNK, 0);
        let polled =
            Pin::new(&mut self.stream).poll_read(cx, self.rx.get_mut(len..).unwrap_or_default());
        let n = match &polled {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        self.rx.truncate(len + n);
        match polled {
            Poll::Ready(Ok(0)) => self.consumer.handle_eof(),
            Poll::Ready(Ok(_)) => {
                // A failure is sticky: reported after the events decoded
                // before it.
                let _ = self.consumer.handle_input(&mut self.rx, Instant::now());
            }
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
            Poll::Ready(Err(err)) => {
                self.consumer.handle_eof();
                return Poll::Ready(Err(err));
            }
            Poll::Pending => return Poll::Pending,
        }
        Poll::Ready(Ok(()))
    }
}

/// Connects to `addr` within `limit`, with Nagle off.
pub(crate) async fn tcp_connect(
    addr: impl AsyncToSocketAddrs,
    limit: Duration,
) -> Result<TcpStream, Error> {
    let stream = future::or(TcpStream::connect(addr), async {
        Timer::after(limit).await;
        Err(io::ErrorKind::TimedOut.into())
    })
    .await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Runs the client side of the TLS handshake on `tcp` within `limit`,
/// verifying the certificate for `server_name`.
#[cfg(feature = "tls")]
pub(crate) async fn tls_connect(
    tcp: TcpStream,
    server_name: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    limit: Duration,
) -> Result<TlsStream, Error> {
    let name = crate::tls::server_name(server_name)?;
    let peer = tcp.peer_addr()?.to_string();
    let connector = futures_rustls::TlsConnector::from(tls);
    let stream = future::or(async { Some(connector.connect(name, tcp).await) }, async {
        Timer::after(limit).await;
        None
    })
    .await;
    match stream {
        Some(Ok(stream)) => Ok(stream),
        Some(Err(source)) => Err(Error::Tls { addr: peer, source }),
        None => Err(Error::TlsTimeout {
            addr: peer,
            timeout: limit,
        }),
    }
}

/// A fresh SCRAM client nonce: 18 random bytes, hex-encoded.
pub(crate) fn sasl_nonce() -> io::Result<String> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(io::Error::other)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
