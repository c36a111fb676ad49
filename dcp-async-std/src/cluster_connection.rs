//! [`ClusterConnection`]: a whole bucket streamed from a cluster: the
//! core's [`ClusterClient`] driven in the caller's task, with one task per
//! socket.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_io::Timer;
use bytes::BytesMut;
use dcp_proto::cluster::{
    BootstrapError, ClusterClient, ClusterOrchestrator, ConnectionString, LinkId, NodeAddress,
    OrchestratorConfig, Output, StreamFailure,
};
use dcp_proto::consumer::{ConnectionStats, ConsumerConfig, Event, StreamStats};
use dcp_proto::session::Checkpoint;
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::{AsyncReadExt, AsyncWriteExt, future};

use crate::connection::{sasl_nonce, tcp_connect};
use crate::{Error, Task};

/// Socket reads buffered between the socket tasks and the owner: a slow
/// application stops the socket tasks; the consumers then stop
/// acknowledging and the producers pause.
const INPUT_QUEUE: usize = 256;

/// Bytes asked of a socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// The executor [`ClusterConnection`] spawns its tasks on.
type Spawn = Arc<dyn Fn(Task) + Send + Sync>;

/// How sockets are made: plain TCP, or TLS with a client configuration.
#[derive(Clone, Default)]
struct Dial {
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
}

impl Dial {
    fn is_tls(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_some();
        #[cfg(not(feature = "tls"))]
        return false;
    }
}

/// What a socket task reports.
#[derive(Debug)]
enum Input {
    Connected(LinkId),
    Bytes(LinkId, Vec<u8>),
    /// Connecting failed (with why), or the socket closed or failed.
    Lost(LinkId, Option<Error>),
}

/// A link's socket task, fed the bytes to send (dropping the sender
/// closes the socket), and the bytes received not yet taken by the client
/// (part of a frame).
#[derive(Debug)]
struct Link {
    outgoing: Sender<Vec<u8>>,
    rx: BytesMut,
}

/// Streams a bucket from a whole cluster as one event stream, across
/// rebalances, failovers, node additions and removals and lost
/// connections, with one cluster-wide [`Checkpoint`].
///
/// It runs the core's [`ClusterClient`] (bootstrap from the seeds of a
/// `couchbase://h1,h2/bucket` [`ConnectionString`], one consumer per data
/// node, the [`ClusterOrchestrator`]) in the caller's task: it opens the
/// sockets the client asks for, one task per socket (on the executor given
/// to [`connect_with`](Self::connect_with), async-std's by default)
/// connects, reads and writes it, and [`next_event`](Self::next_event)
/// feeds what they read to the client and hands out its events: those of
/// each vbucket's current stream (stale events of moved streams are
/// dropped), in the producer's order per vbucket, interleaved across
/// vbuckets.
///
/// Flow control is acknowledged as events are handed out: an application
/// that stops asking for events stops the producers (the bounded channel
/// between the socket tasks and [`next_event`](Self::next_event) fills,
/// and nothing more is acknowledged).
///
/// Persist [`checkpoint`](Self::checkpoint) with the data the events
/// produced and resume with it; after a reported [`Event::Rollback`]
/// discard that vbucket's changes above its seqno.
pub struct ClusterConnection {
    client: ClusterClient,
    links: HashMap<LinkId, Link>,
    inputs: Receiver<Input>,
    sender: Sender<Input>,
    spawn: Spawn,
    timer: Timer,
    timer_at: Option<Instant>,
    dial: Dial,
    /// Why the last socket could not be made (the bootstrap error when no
    /// seed could be reached).
    last_error: Option<Error>,
    tx: BytesMut,
}

impl std::fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("client", &self.client)
            .field("links", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl ClusterConnection {
    /// Bootstraps from `connection_string` (see
    /// [`connect_with`](Self::connect_with)), spawning socket tasks with
    /// `async_std::task::spawn`.
    #[cfg(feature = "async-std")]
    pub async fn connect(
        connection_string: &str,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        Self::connect_with(connection_string, config, settings, checkpoint, |task| {
            async_std::task::spawn(task);
        })
        .await
    }

    /// Bootstraps over TLS (see [`connect_tls_with`](Self::connect_tls_with)),
    /// spawning socket tasks with `async_std::task::spawn`.
    #[cfg(all(feature = "async-std", feature = "tls"))]
    pub async fn connect_tls(
        connection_string: &str,
        tls: Arc<rustls::ClientConfig>,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let spawn = |task| {
            async_std::task::spawn(task);
        };
        Self::connect_tls_with(connection_string, tls, config, settings, checkpoint, spawn).await
    }

    /// Bootstraps as [`connect_with`](Self::connect_with) does, over TLS
    /// with `tls`: to the seeds (their ports are TLS ports: 11207 by
    /// default with `couchbases://`), then to every data node's `kvSSL`
    /// port from the bucket config, each certificate verified for the
    /// node's host name as the config lists it. A node the config lists
    /// without a `kvSSL` port is not connected to (never plaintext
    /// instead); the orchestrator retries it after its next config.
    #[cfg(feature = "tls")]
    pub async fn connect_tls_with(
        connection_string: &str,
        tls: Arc<rustls::ClientConfig>,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let dial = Dial { tls: Some(tls) };
        Self::connect_via(connection_string, dial, config, settings, checkpoint, spawn).await
    }

    /// Bootstraps from the seeds of `connection_string` (its bucket, if
    /// named, replaces `config.bucket`): fetches the bucket config from the
    /// first seed that answers, then connects to the data nodes (one task
    /// per socket, spawned with `spawn`, e.g. `|t| smol::spawn(t).detach()`)
    /// and opens the selected vbuckets from `checkpoint` (or as `settings`
    /// says).
    ///
    /// A `couchbases://` string needs a TLS client configuration: use
    /// [`connect_tls_with`](Self::connect_tls_with) (here it is
    /// [`Error::TlsConfig`]).
    pub async fn connect_with(
        connection_string: &str,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let dial = Dial::default();
        Self::connect_via(connection_string, dial, config, settings, checkpoint, spawn).await
    }

    /// Bootstraps with sockets made by `dial`.
    async fn connect_via(
        connection_string: &str,
        dial: Dial,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> Result<Self, Error> {
        let parsed = ConnectionString::parse(connection_string)?;
        if parsed.tls && !dial.is_tls() {
            return Err(Error::TlsConfig(
                "couchbases:// needs a TLS client configuration (ClusterConnection::connect_tls)"
                    .to_owned(),
            ));
        }
        let client = ClusterClient::new(&parsed, config, settings, checkpoint, Instant::now());
        let (sender, inputs) = async_channel::bounded(INPUT_QUEUE);
        let mut this = ClusterConnection {
            client,
            links: HashMap::new(),
            inputs,
            sender,
            spawn: Arc::new(spawn),
            timer: Timer::never(),
            timer_at: None,
            dial,
            last_error: None,
            tx: BytesMut::new(),
        };
        // Only seed connections run before the first config: they hand
        // out no events.
        while this.client.config().is_none() {
            let _ = this.client.poll_event(Instant::now());
            if this.client.bootstrap_failed() {
                return Err(match this.client.take_bootstrap_error() {
                    Some(BootstrapError::Rejected { error, .. }) => Error::Config(error),
                    Some(BootstrapError::Handshake { error, .. }) => Error::Consumer(error),
                    _ => this.last_error.take().unwrap_or(Error::NoConfig),
                });
            }
            this.wait().await;
        }
        this.flush();
        Ok(this)
    }

    /// The next event of any vbucket's current stream: changes, snapshot
    /// markers, rollbacks, stream opens and ends. `Ok(None)` once every
    /// selected vbucket reached its end seqno or failed (see
    /// [`done`](Self::done) and [`failed`](Self::failed)). Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            if let Some(event) = self.client.poll_event(Instant::now()) {
                // Its acknowledgement goes out at once.
                self.flush();
                return Ok(Some(event));
            }
            if self.client.is_finished() {
                return Ok(None);
            }
            self.wait().await;
        }
    }

    /// Like [`next_event`](Self::next_event), giving up after `timeout`:
    /// `Ok(None)` then too (see [`is_finished`](Self::is_finished)).
    pub async fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        future::or(self.next_event(), async {
            Timer::after(timeout).await;
            Ok(None)
        })
        .await
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

    /// Sends what the client has, waits for one input or its deadline and
    /// feeds it to the client. Cancel-safe.
    async fn wait(&mut self) {
        // Taking events may have queued requests and acknowledgements.
        self.flush();
        let deadline = self.client.poll_timeout();
        if self.timer_at != deadline {
            match deadline {
                Some(at) => self.timer.set_at(at),
                None => self.timer = Timer::never(),
            }
            self.timer_at = deadline;
        }
        let inputs = &self.inputs;
        let timer = &mut self.timer;
        let woke = future::or(async { inputs.recv().await.ok() }, async {
            timer.await;
            None
        })
        .await;
        let now = Instant::now();
        match woke {
            Some(input) => self.on_input(input, now),
            None => {
                self.timer_at = None;
                if self.client.poll_timeout().is_some_and(|at| at <= now) {
                    self.client.handle_timeout(now);
                }
            }
        }
    }

    fn on_input(&mut self, input: Input, now: Instant) {
        match input {
            Input::Connected(link) => {
                if !self.links.contains_key(&link) {
                    return;
                }
                match sasl_nonce() {
                    Ok(nonce) => self.client.handle_connected(link, &nonce, now),
                    Err(_) => self.lose(link, now),
                }
            }
            Input::Bytes(link, bytes) => {
                if let Some(entry) = self.links.get_mut(&link) {
                    entry.rx.extend_from_slice(&bytes);
                    self.client.handle_input(link, &mut entry.rx, now);
                }
            }
            Input::Lost(link, error) => {
                if self.links.contains_key(&link) {
                    if error.is_some() {
                        self.last_error = error;
                    }
                    self.lose(link, now);
                }
            }
        }
    }

    fn lose(&mut self, link: LinkId, now: Instant) {
        self.links.remove(&link);
        self.client.handle_lost(link, now);
    }

    /// Carries out the client's outputs and hands its bytes to the socket
    /// tasks, until it has none.
    fn flush(&mut self) {
        loop {
            let mut idle = true;
            while let Some(output) = self.client.poll_output() {
                idle = false;
                match output {
                    Output::Connect { link, target, .. } => self.start_link(link, target),
                    Output::Disconnect { link } => {
                        self.links.remove(&link);
                    }
                    _ => {}
                }
            }
            while let Some(link) = self.client.poll_transmit(&mut self.tx) {
                idle = false;
                let bytes = self.tx.split().to_vec();
                let sent = self.links.get(&link).map(|l| l.outgoing.try_send(bytes));
                if let Some(Err(_)) = sent {
                    self.lose(link, Instant::now());
                }
            }
            if idle {
                return;
            }
        }
    }

    /// Spawns the task that connects `link` to `target`, then reads and
    /// writes it.
    fn start_link(&mut self, link: LinkId, target: NodeAddress) {
        let (outgoing, rx) = async_channel::unbounded();
        let timeout = self.client.consumer_config().handshake_timeout;
        (self.spawn)(Box::pin(socket_task(
            link,
            target,
            self.dial.clone(),
            timeout,
            rx,
            self.sender.clone(),
        )));
        let rx = BytesMut::new();
        self.links.insert(link, Link { outgoing, rx });
    }
}

/// Connects a link's socket (TLS over it if configured, verifying the
/// target's host) within `timeout`, then reads it (reporting what it got)
/// and writes what the owner sends, until either side ends.
async fn socket_task(
    link: LinkId,
    target: NodeAddress,
    dial: Dial,
    timeout: Duration,
    outgoing: Receiver<Vec<u8>>,
    inputs: Sender<Input>,
) {
    let tcp = match tcp_connect((target.host(), target.port()), timeout).await {
        Ok(tcp) => tcp,
        Err(error) => {
            let _ = inputs.send(Input::Lost(link, Some(error))).await;
            return;
        }
    };
    #[cfg(feature = "tls")]
    if let Some(tls) = &dial.tls {
        match crate::connection::tls_connect(tcp, target.host(), Arc::clone(tls), timeout).await {
            Ok(stream) => serve(link, stream, outgoing, inputs).await,
            Err(error) => {
                let _ = inputs.send(Input::Lost(link, Some(error))).await;
            }
        }
        return;
    }
    let _ = dial;
    serve(link, tcp, outgoing, inputs).await;
}

/// What woke a socket task.
enum Woke {
    Read(std::io::Result<usize>),
    Send(Option<Vec<u8>>),
}

/// The loop of a connected socket task.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    link: LinkId,
    mut stream: S,
    outgoing: Receiver<Vec<u8>>,
    inputs: Sender<Input>,
) {
    if inputs.send(Input::Connected(link)).await.is_err() {
        return;
    }
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let woke = future::or(async { Woke::Send(outgoing.recv().await.ok()) }, async {
            Woke::Read(stream.read(&mut buf).await)
        })
        .await;
        let input = match woke {
            // The owner forgot the link: close it.
            Woke::Send(None) => {
                let _ = stream.close().await;
                return;
            }
            Woke::Send(Some(bytes)) => match stream.write_all(&bytes).await {
                Ok(()) => continue,
                Err(error) => Input::Lost(link, Some(error.into())),
            },
            Woke::Read(Ok(0)) => Input::Lost(link, None),
            Woke::Read(Ok(n)) => Input::Bytes(link, buf.get(..n).unwrap_or_default().to_vec()),
            Woke::Read(Err(error)) => Input::Lost(link, Some(error.into())),
        };
        let last = matches!(input, Input::Lost(..));
        if inputs.send(input).await.is_err() || last {
            return;
        }
    }
}
