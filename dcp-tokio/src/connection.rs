//! [`Connection`]: one DCP consumer connection to one node over TCP.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::{BufMut, BytesMut};
use dcp_proto::consumer::{
    ConnectionStats, Consumer, ConsumerConfig, ConsumerError, Credit, Event, Negotiated,
    StreamFilter, StreamStart, StreamStats,
};
use dcp_proto::session::{Checkpoint, StreamKey, StreamPosition};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::Error;
use crate::stream::Stream;

/// Bytes asked of the socket per read. Bounds what one read can queue as
/// events (the flow-control window bounds the rest).
const READ_SIZE: usize = 128 * 1024;

/// The instant on tokio's clock (so that `tokio::time::pause` drives the
/// core's timers too).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// A fresh SCRAM client nonce from the operating system's random source:
/// 18 random bytes, hex-encoded.
pub(crate) fn random_nonce() -> Result<String, Error> {
    let mut bytes = [0u8; 18];
    getrandom::fill(&mut bytes).map_err(|e| Error::Io(io::Error::other(e.to_string())))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// A DCP consumer connection to one node: the socket and the core's
/// [`Consumer`], driven by [`next_event`](Self::next_event).
///
/// The value is the one owner of both, and `next_event` is the one loop:
/// write what the core has to send, hand out the next event if one is
/// queued, otherwise wait for readable bytes or the core's next deadline and
/// feed them in. Commands ([`open_stream`](Self::open_stream),
/// [`ack`](Self::ack), ...) only queue bytes; the next `next_event` (or
/// [`flush`](Self::flush)) sends them.
///
/// Back-pressure: bytes are read only while no event waits to be handed
/// out. An application that stops calling `next_event` stops the reads, so
/// its acknowledgements stop and the producer's flow-control window fills:
/// memory stays bounded by that window plus one read. (Noops are not
/// answered meanwhile; a pause longer than the producer's idle timeout ends
/// the connection.)
///
/// `next_event` is cancel-safe: dropping its future (in `tokio::select!`)
/// loses no bytes and no event.
///
/// ```no_run
/// use dcp_tokio::Connection;
/// use dcp_tokio::dcp_proto::auth::Credentials;
/// use dcp_tokio::dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
///
/// # async fn run() -> Result<(), dcp_tokio::Error> {
/// let config = ConsumerConfig::new("my-app:1", "travel-sample")
///     .with_credentials(Credentials::new("Administrator", "password"))
///     .with_auto_ack(true);
/// let mut conn = Connection::connect("127.0.0.1:11210", config).await?;
/// conn.open_stream(0, StreamStart::Beginning, None)?;
/// while let Some(event) = conn.next_event().await? {
///     if let Event::Mutation(m, _) = event {
///         println!("vb {} seqno {}: {:?}", m.vbucket, m.by_seqno, m.key);
///     }
/// }
/// # Ok(())
/// # }
/// ```
pub struct Connection {
    stream: Stream,
    /// A TLS write may have left records unsent: flush before idling.
    needs_flush: bool,
    consumer: Consumer,
    rx: BytesMut,
    tx: BytesMut,
    /// A socket error, reported after the events received before it.
    io_error: Option<io::Error>,
    /// The socket was shut down after a fatal error or a close.
    shut: bool,
    /// `dcp.connection` (name, peer): every event the core logs while this
    /// connection is driven is inside it.
    span: tracing::Span,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.stream.peer_addr().ok())
            .field("tls", &self.is_tls())
            .field("consumer", &self.consumer)
            .field("rx", &self.rx.len())
            .field("tx", &self.tx.len())
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects to `addr` (TCP, no Nagle delay), runs the handshake
    /// (HELLO, SASL, SELECT_BUCKET, DCP_OPEN, controls) and returns once the
    /// producer accepted it.
    ///
    /// The TCP connect and the handshake each must finish within
    /// `config.handshake_timeout`. Errors: [`Error::Connect`] /
    /// [`Error::ConnectTimeout`] when nothing answers, then the core's
    /// typed [`ConsumerError`]s: `AuthFailed` (wrong user or password),
    /// `NoBucket`, `Handshake { step, status, .. }`, `HandshakeTimeout`,
    /// `ClosedByPeer`.
    pub async fn connect<A>(addr: A, config: ConsumerConfig) -> Result<Self, Error>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        let stream = tcp_connect(&addr, config.handshake_timeout).await?;
        Self::handshake(stream, config).await
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
    /// not speak TLS), [`Error::TlsTimeout`] and [`Error::TlsConfig`] (a
    /// bad server name).
    #[cfg(feature = "tls")]
    pub async fn connect_tls<A>(
        addr: A,
        server_name: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        mut config: ConsumerConfig,
    ) -> Result<Self, Error>
    where
        A: ToSocketAddrs + fmt::Display,
    {
        use dcp_proto::auth::Mechanism;
        // A bad name is refused before connecting.
        crate::tls::server_name(server_name)?;
        let timeout = config.handshake_timeout;
        let tcp = tcp_connect(&addr, timeout).await?;
        let stream = tls_connect(tcp, &addr, server_name, tls, timeout).await?;
        if !config.mechanisms.contains(&Mechanism::Plain) {
            config.mechanisms.push(Mechanism::Plain);
        }
        Self::handshake_over(Stream::Tls(Box::new(stream)), config).await
    }

    /// Runs the handshake over a connected socket (see
    /// [`connect`](Self::connect)).
    pub async fn handshake(stream: TcpStream, config: ConsumerConfig) -> Result<Self, Error> {
        stream.set_nodelay(true)?;
        Self::handshake_over(Stream::Plain(stream), config).await
    }

    /// Runs the DCP handshake over a connected stream, plain or TLS.
    pub(crate) async fn handshake_over(
        stream: Stream,
        config: ConsumerConfig,
    ) -> Result<Self, Error> {
        let span = tracing::info_span!(
            "dcp.connection",
            name = %config.connection_name,
            peer = ?stream.peer_addr().ok(),
        );
        tracing::debug!(parent: &span, "connected; handshake starts");
        let consumer = Consumer::new(config, random_nonce()?, now())?;
        let mut conn = Connection {
            stream,
            needs_flush: false,
            consumer,
            rx: BytesMut::with_capacity(READ_SIZE),
            tx: BytesMut::new(),
            io_error: None,
            shut: false,
            span,
        };
        // No stream exists yet, so `Ready` is the first event;
        // `negotiated()` holds what it carries.
        loop {
            match conn.next_event().await? {
                Some(Event::Ready(_)) => return Ok(conn),
                Some(_) => {}
                None => return Err(Error::Consumer(ConsumerError::Closed)),
            }
        }
    }

    // ----- commands ------------------------------------------------------

    /// Opens a stream (a vbucket number, or a [`StreamKey`] with a stream
    /// id) from `start`, up to and including
    /// `end_seqno` (`None`: endless). Its events follow from
    /// [`next_event`](Self::next_event): `StreamOpened` (or `Rollback`, or
    /// `StreamFailed`), then snapshot markers and changes.
    pub fn open_stream(
        &mut self,
        stream: impl Into<StreamKey>,
        start: StreamStart,
        end_seqno: Option<u64>,
    ) -> Result<(), Error> {
        let _entered = self.span.enter();
        Ok(self.consumer.open_stream(stream, start, end_seqno)?)
    }

    /// Opens a stream streaming only what `filter` selects (collections
    /// connections: [`ConsumerConfig::with_collections`]); see
    /// [`Consumer::open_filtered_stream`].
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

    /// Opens a stream resuming from a saved position (see
    /// [`checkpoint`](Self::checkpoint)).
    pub fn resume_stream(
        &mut self,
        stream: impl Into<StreamKey>,
        position: StreamPosition,
        end_seqno: Option<u64>,
    ) -> Result<(), Error> {
        self.open_stream(stream, StreamStart::Position(position), end_seqno)
    }

    /// Closes a stream (a vbucket number or a [`StreamKey`]); its `StreamEnded` event follows.
    pub fn close_stream(&mut self, stream: impl Into<StreamKey>) -> Result<(), Error> {
        Ok(self.consumer.close_stream(stream)?)
    }

    /// Continues a stream waiting for a rollback confirmation
    /// ([`RollbackMode::Confirm`](dcp_proto::consumer::RollbackMode::Confirm)).
    pub fn confirm_rollback(&mut self, stream: impl Into<StreamKey>) -> Result<(), Error> {
        Ok(self.consumer.confirm_rollback(stream)?)
    }

    /// Asks for a vbucket's failover log; it arrives as
    /// [`Event::FailoverLog`].
    pub fn request_failover_log(&mut self, vbucket: u16) -> Result<(), Error> {
        Ok(self.consumer.request_failover_log(vbucket)?)
    }

    /// Asks the node for the bucket's cluster config (the vbucket map); it
    /// arrives as [`Event::ClusterConfig`].
    pub fn request_cluster_config(&mut self) -> Result<(), Error> {
        Ok(self.consumer.request_cluster_config()?)
    }

    /// Sends SEQNO_ACKNOWLEDGED for the open stream of `vbucket`: the
    /// highest prepare seqno held (needs `ConsumerConfig::sync_writes`).
    pub fn acknowledge_prepared(&mut self, vbucket: u16, prepared_seqno: u64) -> Result<(), Error> {
        Ok(self
            .consumer
            .acknowledge_prepared(vbucket, prepared_seqno)?)
    }

    /// Gives an event's flow-control credit back: the application is done
    /// with it. (Not needed with `ConsumerConfig::auto_ack`.)
    pub fn ack(&mut self, credit: Credit) {
        self.consumer.ack_at(credit, now());
    }

    /// Closes the connection: nothing more is sent; the events already
    /// received are still handed out, then `next_event` returns `None`.
    pub fn close(&mut self) {
        self.consumer.close();
    }

    /// Writes what the core has queued (stream requests, acks) now, instead
    /// of at the next [`next_event`](Self::next_event).
    pub async fn flush(&mut self) -> Result<(), Error> {
        self.consumer.poll_transmit(&mut self.tx);
        while !self.tx.is_empty() && !self.shut {
            if let Err(err) = self.stream.write_buf(&mut self.tx).await {
                self.on_io_error(err);
                return Err(self
                    .fatal_error()
                    .unwrap_or(Error::Consumer(ConsumerError::Closed)));
            }
        }
        Ok(())
    }

    // ----- the loop ------------------------------------------------------

    /// The next event, waiting for the network as needed.
    ///
    /// `Ok(None)` once the application [closed](Self::close) the connection
    /// and every event received before was handed out. A fatal error (the
    /// peer closed, sent garbage, broke the protocol, went silent, or the
    /// socket failed) is returned after the events received before it, and
    /// again on every later call. Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        use tracing::Instrument;
        let span = self.span.clone();
        self.drive().instrument(span).await
    }

    /// [`next_event`](Self::next_event), inside the connection's span.
    async fn drive(&mut self) -> Result<Option<Event>, Error> {
        loop {
            // 1. Move the core's output into `tx` and write what the socket
            // takes without waiting.
            if !self.shut {
                self.consumer.poll_transmit(&mut self.tx);
                if !self.tx.is_empty() {
                    self.try_write();
                }
            }
            // 2. Hand out a queued event.
            if let Some(event) = self.consumer.poll_event() {
                return Ok(Some(event));
            }
            // 3. A fatal error (after its events).
            if self.consumer.is_closed() || self.io_error.is_some() {
                self.shut_down().await;
                return match self.fatal_error() {
                    Some(err) => Err(err),
                    None => Ok(None),
                };
            }
            // 4. Wait for bytes, writability or the next deadline.
            self.wait().await;
        }
    }

    /// One wait: read, write or the core's timer, then feed the result in.
    async fn wait(&mut self) {
        let deadline = self.consumer.poll_timeout();
        let sleep = deadline.map(|at| tokio::time::sleep_until(at.into()));
        let want_write = !self.tx.is_empty();
        let want_flush = self.needs_flush && !want_write;
        let rx = &mut self.rx;
        let tx = &mut self.tx;
        rx.reserve(READ_SIZE);
        let room = rx.limit(READ_SIZE);
        let outcome = match &mut self.stream {
            Stream::Plain(stream) => {
                let (reader, writer) = stream.split();
                wait_once(reader, writer, room, tx, want_write, want_flush, sleep).await
            }
            #[cfg(feature = "tls")]
            Stream::Tls(stream) => {
                let (reader, writer) = tokio::io::split(&mut **stream);
                wait_once(reader, writer, room, tx, want_write, want_flush, sleep).await
            }
        };
        match outcome {
            Wake::Read(Ok(0)) => self.consumer.handle_eof(),
            Wake::Read(Ok(_)) => {
                // A fatal error is sticky in the core; `next_event` reports
                // it after the events decoded before it.
                let _ = self.consumer.handle_input(&mut self.rx, now());
            }
            Wake::Read(Err(err)) | Wake::Written(Err(err)) | Wake::Flushed(Err(err)) => {
                self.on_io_error(err)
            }
            Wake::Written(Ok(0)) => self.on_io_error(io::ErrorKind::WriteZero.into()),
            Wake::Written(Ok(_)) => {
                // TLS may keep records it could not send yet: flush them
                // once the plaintext is handed over.
                self.needs_flush = self.is_tls();
            }
            Wake::Flushed(Ok(())) => self.needs_flush = false,
            Wake::Timer => {
                let _ = self.consumer.handle_timeout(now());
            }
        }
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        match &self.stream {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(_) => true,
        }
    }

    fn try_write(&mut self) {
        // TLS has no non-blocking write: the wait writes.
        #[cfg_attr(not(feature = "tls"), allow(irrefutable_let_patterns))]
        let Stream::Plain(stream) = &self.stream else {
            return;
        };
        match stream.try_write(&self.tx) {
            Ok(n) => {
                let _ = self.tx.split_to(n);
            }
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => {}
            Err(err) => self.on_io_error(err),
        }
    }

    fn on_io_error(&mut self, err: io::Error) {
        if self.io_error.is_none() && !self.consumer.is_closed() {
            self.io_error = Some(err);
        }
        self.consumer.handle_eof();
    }

    /// The error to report, if the connection failed (not closed by the
    /// application).
    fn fatal_error(&self) -> Option<Error> {
        if let Some(err) = &self.io_error {
            return Some(Error::io_again(err));
        }
        match self.consumer.error() {
            None | Some(ConsumerError::Closed) => None,
            Some(err) => Some(Error::Consumer(err.clone())),
        }
    }

    async fn shut_down(&mut self) {
        if !self.shut {
            self.shut = true;
            self.tx.clear();
            let _ = self.stream.shutdown().await;
        }
    }

    // ----- getters -------------------------------------------------------

    /// Every stream's position as of the events handed out so far: save it
    /// with the data those events produced, resume from it with
    /// [`resume_stream`](Self::resume_stream).
    pub fn checkpoint(&self) -> Checkpoint {
        self.consumer.checkpoint()
    }

    /// One stream's position as of the events handed out so far.
    pub fn position(&self, stream: impl Into<StreamKey>) -> Option<StreamPosition> {
        self.consumer.position(stream)
    }

    /// Connection counters.
    pub fn stats(&self) -> ConnectionStats {
        self.consumer.stats()
    }

    /// One stream's counters.
    pub fn stream_stats(&self, stream: impl Into<StreamKey>) -> Option<StreamStats> {
        self.consumer.stream_stats(stream)
    }

    /// What the producer agreed to in the handshake.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.consumer.negotiated()
    }

    /// Events received and not yet handed out (they are handed out without
    /// waiting).
    pub fn pending_events(&self) -> usize {
        self.consumer.pending_events()
    }

    /// The core's consumer, for the getters not mirrored here.
    pub fn consumer(&self) -> &Consumer {
        &self.consumer
    }

    /// The producer's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The local address of the socket.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

/// Connects TCP to `addr` within `timeout`.
pub(crate) async fn tcp_connect<A>(
    addr: &A,
    timeout: std::time::Duration,
) -> Result<TcpStream, Error>
where
    A: ToSocketAddrs + fmt::Display,
{
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(Error::Connect {
            addr: addr.to_string(),
            source,
        }),
        Err(_) => Err(Error::ConnectTimeout {
            addr: addr.to_string(),
            timeout,
        }),
    }
}

/// Runs the client side of the TLS handshake on `tcp` (connected to
/// `addr`) within `timeout`, verifying the certificate for `server_name`.
#[cfg(feature = "tls")]
pub(crate) async fn tls_connect(
    tcp: TcpStream,
    addr: &impl fmt::Display,
    server_name: &str,
    tls: std::sync::Arc<rustls::ClientConfig>,
    timeout: std::time::Duration,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, Error> {
    let name = crate::tls::server_name(server_name)?;
    tcp.set_nodelay(true)?;
    let connector = tokio_rustls::TlsConnector::from(tls);
    match tokio::time::timeout(timeout, connector.connect(name, tcp)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(Error::Tls {
            addr: addr.to_string(),
            source,
        }),
        Err(_) => Err(Error::TlsTimeout {
            addr: addr.to_string(),
            timeout,
        }),
    }
}

/// What ended one wait.
enum Wake {
    Read(io::Result<usize>),
    Written(io::Result<usize>),
    Flushed(io::Result<()>),
    Timer,
}

/// Waits once for bytes to read, room to write, a pending flush or the
/// deadline. Cancel-safe: each branch is.
async fn wait_once<R, W, B>(
    mut reader: R,
    mut writer: W,
    mut room: B,
    tx: &mut BytesMut,
    want_write: bool,
    want_flush: bool,
    sleep: Option<tokio::time::Sleep>,
) -> Wake
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
    B: BufMut,
{
    tokio::select! {
        biased;
        read = reader.read_buf(&mut room) => Wake::Read(read),
        wake = async {
            if want_write {
                Wake::Written(writer.write_buf(tx).await)
            } else {
                Wake::Flushed(writer.flush().await)
            }
        }, if want_write || want_flush => wake,
        () = async {
            match sleep {
                Some(sleep) => sleep.await,
                None => std::future::pending().await,
            }
        } => Wake::Timer,
    }
}
