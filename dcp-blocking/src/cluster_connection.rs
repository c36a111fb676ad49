//! [`ClusterConnection`]: a whole bucket streamed from a cluster: the
//! core's [`ClusterClient`] driven over blocking sockets on the caller's
//! thread, with one reader thread per socket.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::thread;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::cluster::{
    BootstrapError, ClusterClient, ClusterOrchestrator, ConnectionString, LinkId, NodeAddress,
    OrchestratorConfig, Output, StreamFailure,
};
use dcp_proto::consumer::{ConnectionStats, ConsumerConfig, Event, StreamStats};
use dcp_proto::session::Checkpoint;

use crate::Error;
use crate::connection::{sasl_nonce, tcp_connect};

/// Socket reads buffered between the reader threads and the owner: a slow
/// application stops the reader threads; the consumers then stop
/// acknowledging and the producers pause.
const INPUT_QUEUE: usize = 256;

/// Bytes asked of a socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// How sockets are made: plain TCP, or TLS with a client configuration.
#[derive(Clone, Default)]
struct Dial {
    #[cfg(feature = "tls")]
    tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dial").field("tls", &self.is_tls()).finish()
    }
}

impl Dial {
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        return false;
    }

    /// Connects to `target` (TCP, then TLS verifying its host, if
    /// configured), each step within `timeout`.
    fn connect(&self, target: &NodeAddress, timeout: Duration) -> Result<Socket, Error> {
        let tcp = tcp_connect((target.host(), target.port()), timeout)?;
        tcp.set_nodelay(true)?;
        tcp.set_write_timeout(Some(timeout))?;
        #[cfg(feature = "tls")]
        let tls = match &self.tls {
            Some(tls) => Some(Box::new(crate::connection::tls_handshake(
                &tcp,
                target.host(),
                std::sync::Arc::clone(tls),
                timeout,
            )?)),
            None => None,
        };
        Ok(Socket {
            tcp,
            #[cfg(feature = "tls")]
            tls,
            rx: BytesMut::new(),
        })
    }
}

/// A connected socket, written by the owner; its TLS session (if any)
/// decrypts what the reader thread read and encrypts what is sent.
#[derive(Debug)]
struct Socket {
    tcp: TcpStream,
    #[cfg(feature = "tls")]
    tls: Option<Box<rustls::ClientConnection>>,
    /// Received bytes not yet taken by the client (part of a frame).
    rx: BytesMut,
}

impl Socket {
    /// Takes bytes read from the socket (TLS records over TLS) into `rx`.
    fn receive(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            let mut records = bytes;
            while !records.is_empty() {
                tls.read_tls(&mut records)?;
                let state = tls.process_new_packets().map_err(io::Error::other)?;
                let len = self.rx.len();
                self.rx.resize(len + state.plaintext_bytes_to_read(), 0);
                tls.reader()
                    .read_exact(self.rx.get_mut(len..).unwrap_or_default())?;
            }
            return self.flush_tls();
        }
        self.rx.extend_from_slice(bytes);
        Ok(())
    }

    /// Sends bytes (blocking at most the write timeout).
    fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &mut self.tls {
            tls.writer().write_all(bytes)?;
            return self.flush_tls();
        }
        self.tcp.write_all(bytes)
    }

    #[cfg(feature = "tls")]
    fn flush_tls(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            while tls.wants_write() {
                tls.write_tls(&mut self.tcp)?;
            }
        }
        Ok(())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // Ends the reader thread too.
        let _ = self.tcp.shutdown(Shutdown::Both);
    }
}

/// What a reader thread reports.
#[derive(Debug)]
enum Input {
    Connected(LinkId, Socket),
    Bytes(LinkId, Vec<u8>),
    /// Connecting failed (with why), or the socket closed or failed.
    Lost(LinkId, Option<Error>),
}

/// Streams a bucket from a whole cluster as one event stream, across
/// rebalances, failovers, node additions and removals and lost
/// connections, with one cluster-wide [`Checkpoint`].
///
/// It runs the core's [`ClusterClient`] (bootstrap from the seeds of a
/// `couchbase://h1,h2/bucket` [`ConnectionString`], one consumer per data
/// node, the [`ClusterOrchestrator`]) on the caller's thread: it opens the
/// sockets the client asks for, one thread per socket connects and reads
/// it, and [`next_event`](Self::next_event) feeds what they read to the
/// client and hands out its events: those of each vbucket's current
/// stream (stale events of moved streams are dropped), in the producer's
/// order per vbucket, interleaved across vbuckets.
///
/// Flow control is acknowledged as events are handed out: an application
/// that stops asking for events stops the producers (the bounded queue
/// between the reader threads and [`next_event`](Self::next_event) fills,
/// and nothing more is acknowledged).
///
/// Persist [`checkpoint`](Self::checkpoint) with the data the events
/// produced and resume with it; after a reported [`Event::Rollback`]
/// discard that vbucket's changes above its seqno.
#[derive(Debug)]
pub struct ClusterConnection {
    client: ClusterClient,
    sockets: HashMap<LinkId, Socket>,
    /// Links whose reader thread is connecting.
    connecting: HashSet<LinkId>,
    inputs: Receiver<Input>,
    sender: SyncSender<Input>,
    dial: Dial,
    /// Why the last socket could not be made (the bootstrap error when
    /// no seed could be reached).
    last_error: Option<Error>,
    tx: BytesMut,
}

impl ClusterConnection {
    /// Bootstraps from the seeds of `connection_string` (its bucket, if
    /// named, replaces `config.bucket`): fetches the bucket config from the
    /// first seed that answers, then connects to the data nodes and opens
    /// the selected vbuckets from `checkpoint` (or as `settings` says).
    ///
    /// A `couchbases://` string needs a TLS client configuration: use
    /// [`connect_tls`](Self::connect_tls) (here it is
    /// [`Error::TlsConfig`]).
    pub fn connect(
        connection_string: &str,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        Self::connect_via(
            connection_string,
            Dial::default(),
            config,
            settings,
            checkpoint,
        )
    }

    /// Bootstraps as [`connect`](Self::connect) does, over TLS with `tls`:
    /// to the seeds (their ports are TLS ports: 11207 by default with
    /// `couchbases://`), then to every data node's `kvSSL` port from the
    /// bucket config, each certificate verified for the node's host name
    /// as the config lists it. A node the config lists without a `kvSSL`
    /// port is not connected to (never plaintext instead); the
    /// orchestrator retries it after its next config.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        connection_string: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let dial = Dial { tls: Some(tls) };
        Self::connect_via(connection_string, dial, config, settings, checkpoint)
    }

    /// Bootstraps with sockets made by `dial`.
    fn connect_via(
        connection_string: &str,
        dial: Dial,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let parsed = ConnectionString::parse(connection_string)?;
        if parsed.tls && !dial.is_tls() {
            return Err(Error::TlsConfig(
                "couchbases:// needs a TLS client configuration (ClusterConnection::connect_tls)"
                    .to_owned(),
            ));
        }
        let client = ClusterClient::new(&parsed, config, settings, checkpoint, Instant::now());
        let (sender, inputs) = mpsc::sync_channel(INPUT_QUEUE);
        let mut this = ClusterConnection {
            client,
            sockets: HashMap::new(),
            connecting: HashSet::new(),
            inputs,
            sender,
            dial,
            last_error: None,
            tx: BytesMut::new(),
        };
        // Only seed connections run before the first config: they hand
        // out no events.
        while this.client.config().is_none() {
            this.flush();
            let _ = this.client.poll_event(Instant::now());
            if this.client.bootstrap_failed() {
                return Err(match this.client.take_bootstrap_error() {
                    Some(BootstrapError::Rejected { error, .. }) => Error::Config(error),
                    Some(BootstrapError::Handshake { error, .. }) => Error::Consumer(error),
                    _ => this.last_error.take().unwrap_or(Error::NoConfig),
                });
            }
            this.wait(None);
        }
        this.flush();
        Ok(this)
    }

    /// The next event of any vbucket's current stream, blocking until one
    /// arrives: changes, snapshot markers, rollbacks, stream opens and
    /// ends. `Ok(None)` once every selected vbucket reached its end seqno
    /// or failed (see [`done`](Self::done) and [`failed`](Self::failed)).
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        Ok(self.drive(None))
    }

    /// Like [`next_event`](Self::next_event), giving up after `timeout`:
    /// `Ok(None)` then too (see [`is_finished`](Self::is_finished)).
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        Ok(self.drive(Some(Instant::now() + timeout)))
    }

    /// Whether every selected vbucket reached its end seqno or failed.
    pub fn is_finished(&self) -> bool {
        self.client.is_finished()
    }

    /// Every selected vbucket's position as of the events handed out.
    pub fn checkpoint(&self) -> Checkpoint {
        self.client.checkpoint()
    }

    /// The orchestrator (config in force, vbucket and node status).
    pub fn orchestrator(&self) -> &ClusterOrchestrator {
        self.client.orchestrator()
    }

    /// The sans-IO client this drives (links, consumers, counters).
    pub fn client(&self) -> &ClusterClient {
        &self.client
    }

    /// Vbuckets that reached their end seqno.
    pub fn done(&self) -> &[u16] {
        self.client.done()
    }

    /// Vbuckets given up, and why.
    pub fn failed(&self) -> &[(u16, StreamFailure)] {
        self.client.failed()
    }

    /// The nodes with a connection (being made, or made).
    pub fn connected_nodes(&self) -> Vec<NodeAddress> {
        self.client.connected_nodes()
    }

    /// Counters of every node connection added up, including connections
    /// since lost (see [`ClusterClient::stats`]): `connections` is the
    /// number running now, `reconnects` those made again to a node.
    pub fn stats(&self) -> ConnectionStats {
        self.client.stats()
    }

    /// A vbucket's stream counters, added up over the node connections
    /// that streamed it and still run.
    pub fn stream_stats(&self, vbucket: u16) -> Option<StreamStats> {
        self.client.stream_stats(vbucket)
    }

    // ----- internals -----------------------------------------------------

    fn drive(&mut self, until: Option<Instant>) -> Option<Event> {
        loop {
            self.flush();
            if let Some(event) = self.client.poll_event(Instant::now()) {
                // Its acknowledgement goes out at once.
                self.flush();
                return Some(event);
            }
            if self.client.is_finished() || !self.wait(until) {
                return None;
            }
        }
    }

    /// Sends what the client has, waits for one input or deadline and
    /// feeds it to the client; `false` once `until` passed.
    fn wait(&mut self, until: Option<Instant>) -> bool {
        // Taking events may have queued requests and acknowledgements.
        self.flush();
        let now = Instant::now();
        let deadline = match (self.client.poll_timeout(), until) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let received = match deadline {
            Some(at) => self.inputs.recv_timeout(at.saturating_duration_since(now)),
            // This value holds a sender: the channel never hangs up.
            None => self
                .inputs
                .recv()
                .map_err(|_| RecvTimeoutError::Disconnected),
        };
        let now = Instant::now();
        match received {
            Ok(input) => self.on_input(input, now),
            Err(_) => {
                if self.client.poll_timeout().is_some_and(|at| at <= now) {
                    self.client.handle_timeout(now);
                }
            }
        }
        until.is_none_or(|at| at > now)
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Connected(link, socket) => {
                if !self.connecting.remove(&link) {
                    return; // abandoned: dropping it closes it
                }
                match sasl_nonce() {
                    Ok(nonce) => {
                        self.sockets.insert(link, socket);
                        self.client.handle_connected(link, &nonce, now);
                    }
                    Err(_) => self.client.handle_lost(link, now),
                }
            }
            Input::Bytes(link, bytes) => {
                let Some(socket) = self.sockets.get_mut(&link) else {
                    return;
                };
                match socket.receive(&bytes) {
                    Ok(()) => self.client.handle_input(link, &mut socket.rx, now),
                    Err(_) => self.lose(link, now),
                }
            }
            Input::Lost(link, error) => {
                if self.connecting.remove(&link) || self.sockets.contains_key(&link) {
                    if error.is_some() {
                        self.last_error = error;
                    }
                    self.lose(link, now);
                }
            }
        }
    }

    fn lose(&mut self, link: LinkId, now: Instant) {
        self.sockets.remove(&link);
        self.client.handle_lost(link, now);
    }

    /// Carries out the client's outputs and sends its bytes, until it has
    /// none.
    fn flush(&mut self) {
        loop {
            let mut idle = true;
            while let Some(output) = self.client.poll_output() {
                idle = false;
                match output {
                    Output::Connect { link, target, .. } => self.start_link(link, target),
                    Output::Disconnect { link } => {
                        self.connecting.remove(&link);
                        self.sockets.remove(&link);
                    }
                    _ => {}
                }
            }
            while let Some(link) = self.client.poll_transmit(&mut self.tx) {
                idle = false;
                let sent = self.sockets.get_mut(&link).map(|s| s.send(&self.tx));
                self.tx.clear();
                if let Some(Err(_)) = sent {
                    self.lose(link, Instant::now());
                }
            }
            if idle {
                return;
            }
        }
    }

    /// Starts the thread that connects `link` to `target` and reads it.
    fn start_link(&mut self, link: LinkId, target: NodeAddress) {
        let dial = self.dial.clone();
        let sender = self.sender.clone();
        let timeout = self.client_timeout();
        let spawned = thread::Builder::new()
            .name(format!("dcp-link-{target}"))
            .spawn(move || reader_thread(link, &target, &dial, timeout, &sender));
        if spawned.is_ok() {
            self.connecting.insert(link);
        } else {
            self.client.handle_lost(link, Instant::now());
        }
    }

    /// How long connecting may take (the consumers' handshake timeout).
    fn client_timeout(&self) -> Duration {
        self.client.consumer_config().handshake_timeout
    }
}

/// Connects a link's socket, hands it to the owner, then reads it until it
/// closes.
fn reader_thread(
    link: LinkId,
    target: &NodeAddress,
    dial: &Dial,
    timeout: Duration,
    inputs: &SyncSender<Input>,
) {
    let socket = match dial.connect(target, timeout) {
        Ok(socket) => socket,
        Err(error) => {
            let _ = inputs.send(Input::Lost(link, Some(error)));
            return;
        }
    };
    let mut reader = match socket.tcp.try_clone() {
        Ok(reader) => reader,
        Err(error) => {
            let _ = inputs.send(Input::Lost(link, Some(error.into())));
            return;
        }
    };
    if inputs.send(Input::Connected(link, socket)).is_err() {
        return;
    }
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let input = match reader.read(&mut buf) {
            Ok(0) => Input::Lost(link, None),
            Ok(n) => Input::Bytes(link, buf.get(..n).unwrap_or_default().to_vec()),
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => Input::Lost(link, Some(error.into())),
        };
        let last = matches!(input, Input::Lost(..));
        if inputs.send(input).is_err() || last {
            return;
        }
    }
}
