//! [`ClusterConnection`]: a whole bucket streamed from a cluster: the
//! core's [`ClusterClient`] driven in the caller's task, with one task per
//! socket.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BytesMut;
use dcp_proto::cluster::{
    BootstrapError, ClusterClient, ClusterOrchestrator, ConnectionString, LinkId, NodeAddress,
    OrchestratorConfig, Output, StreamFailure,
};
use dcp_proto::consumer::{ConnectionStats, ConsumerConfig, Event, StreamStats};
use dcp_proto::session::Checkpoint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::Error;
use crate::connection::{now, random_nonce, tcp_connect};

/// Socket reads buffered between the socket tasks and the owner: a slow
/// application stops the socket tasks; the consumers then stop
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
}

/// What a socket task reports.
#[derive(Debug)]
enum Input {
    Connected(LinkId),
    Bytes(LinkId, Vec<u8>),
    /// Connecting failed (with why), or the socket closed or failed.
    Lost(LinkId, Option<Error>),
}

/// A link's socket task, fed the bytes to send, and the bytes received not
/// yet taken by the client (part of a frame). Dropping it ends the task
/// and closes the socket.
#[derive(Debug)]
struct Link {
    outgoing: mpsc::UnboundedSender<Vec<u8>>,
    task: JoinHandle<()>,
    rx: BytesMut,
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Streams a bucket from a whole cluster as one event stream, across
/// rebalances, failovers, node additions and removals and lost
/// connections, with one cluster-wide [`Checkpoint`].
///
/// It runs the core's [`ClusterClient`] (bootstrap from the seeds of a
/// `couchbase://h1,h2/bucket` [`ConnectionString`], one consumer per data
/// node, the [`ClusterOrchestrator`]) in the caller's task: it opens the
/// sockets the client asks for, one task per socket connects, reads and
/// writes it, and [`next_event`](Self::next_event) feeds what they read to
/// the client and hands out its events: those of each vbucket's current
/// stream (stale events of moved streams are dropped), in the producer's
/// order per vbucket, interleaved across vbuckets.
///
/// Flow control is acknowledged as events are handed out: an application
/// that stops asking for events stops the producers (the bounded queue
/// between the socket tasks and [`next_event`](Self::next_event) fills,
/// and nothing more is acknowledged).
///
/// Persist [`checkpoint`](Self::checkpoint) with the data the events
/// produced and resume with it; after a reported
/// [`Event::Rollback`] discard that vbucket's changes above its seqno.
///
/// Each socket task runs in a `dcp.node` span (`target`, `link`); the
/// client logs node connections, losses and config changes.
#[derive(Debug)]
pub struct ClusterConnection {
    client: ClusterClient,
    links: HashMap<LinkId, Link>,
    inputs: mpsc::Receiver<Input>,
    sender: mpsc::Sender<Input>,
    dial: Dial,
    /// Why the last socket could not be made (the bootstrap error when no
    /// seed could be reached).
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
    pub async fn connect(
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
        .await
    }

    /// Bootstraps as [`connect`](Self::connect) does, over TLS with `tls`:
    /// to the seeds (their ports are TLS ports: 11207 by default with
    /// `couchbases://`), then to every data node's `kvSSL` port from the
    /// bucket config, each certificate verified for the node's host name
    /// as the config lists it. A node the config lists without a `kvSSL`
    /// port is not connected to (never plaintext instead); the
    /// orchestrator retries it after its next config.
    #[cfg(feature = "tls")]
    pub async fn connect_tls(
        connection_string: &str,
        tls: std::sync::Arc<rustls::ClientConfig>,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let dial = Dial { tls: Some(tls) };
        Self::connect_via(connection_string, dial, config, settings, checkpoint).await
    }

    /// Bootstraps with sockets made by `dial`.
    async fn connect_via(
        connection_string: &str,
        dial: Dial,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let parsed = ConnectionString::parse(connection_string)
            .map_err(|e| Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
        if parsed.tls && !dial.is_tls() {
            return Err(Error::TlsConfig(
                "couchbases:// needs a TLS client configuration (ClusterConnection::connect_tls)"
                    .to_owned(),
            ));
        }
        let client = ClusterClient::new(&parsed, config, settings, checkpoint, now());
        let (sender, inputs) = mpsc::channel(INPUT_QUEUE);
        let mut this = ClusterConnection {
            client,
            links: HashMap::new(),
            inputs,
            sender,
            dial,
            last_error: None,
            tx: BytesMut::new(),
        };
        // Only seed connections run before the first config: they hand
        // out no events.
        while this.client.config().is_none() {
            let _ = this.client.poll_event(now());
            if this.client.bootstrap_failed() {
                return Err(this.bootstrap_error());
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
            if let Some(event) = self.client.poll_event(now()) {
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

    /// Counters of every node connection added up, as of now, including
    /// connections since lost (see [`ClusterClient::stats`]):
    /// `connections` is the number running now, `reconnects` the
    /// connections made again to a node already connected to.
    pub fn stats(&self) -> ConnectionStats {
        self.client.stats()
    }

    /// A vbucket's stream counters, added up over the node connections
    /// that streamed it and still run.
    pub fn stream_stats(&self, vbucket: u16) -> Option<StreamStats> {
        self.client.stream_stats(vbucket)
    }

    // ----- internals -----------------------------------------------------

    /// The error of a failed bootstrap.
    fn bootstrap_error(&mut self) -> Error {
        let invalid = |e| Error::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e));
        match self.client.take_bootstrap_error() {
            Some(BootstrapError::Rejected { error, .. }) => invalid(error.to_string()),
            Some(BootstrapError::Handshake { error, .. }) => Error::Consumer(error),
            Some(BootstrapError::NoConfig { seed, .. }) => {
                invalid(format!("seed {seed} returned no bucket config"))
            }
            _ => self.last_error.take().unwrap_or_else(|| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no seed node",
                ))
            }),
        }
    }

    /// Sends what the client has, waits for one input or its deadline and
    /// feeds it to the client. Cancel-safe.
    async fn wait(&mut self) {
        // Taking events may have queued requests and acknowledgements.
        self.flush();
        let deadline = self.client.poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // This value holds a sender: the channel never closes.
            Some(input) = self.inputs.recv() => self.on_input(input),
            () = sleep => {
                let at = now();
                if self.client.poll_timeout().is_some_and(|t| t <= at) {
                    self.client.handle_timeout(at);
                }
            }
        }
    }

    fn on_input(&mut self, input: Input) {
        let at = now();
        match input {
            Input::Connected(link) => {
                if !self.links.contains_key(&link) {
                    return;
                }
                match random_nonce() {
                    Ok(nonce) => self.client.handle_connected(link, &nonce, at),
                    Err(_) => self.lose(link),
                }
            }
            Input::Bytes(link, bytes) => {
                if let Some(entry) = self.links.get_mut(&link) {
                    entry.rx.extend_from_slice(&bytes);
                    self.client.handle_input(link, &mut entry.rx, at);
                }
            }
            Input::Lost(link, error) => {
                if self.links.contains_key(&link) {
                    if error.is_some() {
                        self.last_error = error;
                    }
                    self.lose(link);
                }
            }
        }
    }

    fn lose(&mut self, link: LinkId) {
        self.links.remove(&link);
        self.client.handle_lost(link, now());
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
                let sent = self.links.get(&link).map(|l| l.outgoing.send(bytes));
                if let Some(Err(_)) = sent {
                    self.lose(link);
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
        let (outgoing, rx) = mpsc::unbounded_channel();
        let timeout = self.client.consumer_config().handshake_timeout;
        let span = tracing::info_span!("dcp.node", %target, %link);
        let task = tokio::spawn(tracing::Instrument::instrument(
            socket_task(
                link,
                target,
                self.dial.clone(),
                timeout,
                rx,
                self.sender.clone(),
            ),
            span,
        ));
        let rx = BytesMut::new();
        self.links.insert(link, Link { outgoing, task, rx });
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
    outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    inputs: mpsc::Sender<Input>,
) {
    let addr = socket_string(target.host(), target.port());
    let tcp = match tcp_connect(&addr, timeout).await {
        Ok(tcp) => tcp,
        Err(error) => {
            let _ = inputs.send(Input::Lost(link, Some(error))).await;
            return;
        }
    };
    #[cfg(feature = "tls")]
    if let Some(tls) = &dial.tls {
        let host = target.host();
        let tls = std::sync::Arc::clone(tls);
        match crate::connection::tls_connect(tcp, &addr, host, tls, timeout).await {
            Ok(stream) => serve(link, stream, outgoing, inputs).await,
            Err(error) => {
                let _ = inputs.send(Input::Lost(link, Some(error))).await;
            }
        }
        return;
    }
    let _ = dial;
    if let Err(error) = tcp.set_nodelay(true) {
        let _ = inputs.send(Input::Lost(link, Some(error.into()))).await;
        return;
    }
    serve(link, tcp, outgoing, inputs).await;
}

/// The loop of a connected socket task.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    link: LinkId,
    mut stream: S,
    mut outgoing: mpsc::UnboundedReceiver<Vec<u8>>,
    inputs: mpsc::Sender<Input>,
) {
    if inputs.send(Input::Connected(link)).await.is_err() {
        return;
    }
    let mut buf = vec![0; READ_CHUNK];
    loop {
        let input = tokio::select! {
            bytes = outgoing.recv() => match bytes {
                // The owner forgot the link: close it.
                None => {
                    let _ = stream.shutdown().await;
                    return;
                }
                Some(bytes) => match stream.write_all(&bytes).await {
                    Ok(()) => continue,
                    Err(error) => Input::Lost(link, Some(error.into())),
                },
            },
            read = stream.read(&mut buf) => match read {
                Ok(0) => Input::Lost(link, None),
                Ok(n) => Input::Bytes(link, buf.get(..n).unwrap_or_default().to_vec()),
                Err(error) => Input::Lost(link, Some(error.into())),
            },
        };
        let last = matches!(input, Input::Lost(..));
        if inputs.send(input).await.is_err() || last {
            return;
        }
    }
}

/// `host:port`, IPv6 hosts bracketed.
fn socket_string(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}
