//! [`ClusterConnection`]: a whole bucket streamed from a cluster, one
//! [`Connection`] per data node (each on its own thread), driven by the
//! core's [`ClusterOrchestrator`] on the caller's thread.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dcp_proto::cluster::{
    Action, ClusterOrchestrator, ConnectionString, KvNode, NodeAddress, OrchestratorConfig,
    StreamFailure,
};
use dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
use dcp_proto::session::{Checkpoint, StreamPosition};

use crate::pipe::Wake;
use crate::{Connection, Error};

/// Reports buffered between the node threads and the owner: a slow
/// application stops the node threads, whose connections then stop
/// acknowledging, and the producers pause.
const REPORT_QUEUE: usize = 256;

/// How node connections are made: plain TCP, or TLS with a client
/// configuration (to the nodes' `kvSSL` ports).
#[derive(Clone, Default)]
struct Dial {
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ClientConfig>>,
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

    /// Where to reach a data node: its `kvSSL` address over TLS (none if
    /// the config lists no TLS port: never plaintext instead).
    fn target(&self, kv: &KvNode) -> Option<NodeAddress> {
        if self.is_tls() {
            kv.tls_address()
        } else {
            Some(kv.address.clone())
        }
    }

    /// Connects to `host:port` (over TLS, verifying `host`, if configured)
    /// with a connection a [`Wake`] interrupts; also returns a clone of its
    /// socket.
    fn connect(
        &self,
        host: &str,
        port: u16,
        config: ConsumerConfig,
    ) -> Result<(Connection, Wake, TcpStream), Error> {
        Connection::connect_wakeable(
            host,
            port,
            #[cfg(feature = "tls")]
            self.tls.clone(),
            config,
        )
    }
}

/// What a node thread asks of its connection.
#[derive(Debug)]
enum Command {
    Open {
        vbucket: u16,
        start: StreamStart,
        end: Option<u64>,
    },
    Close(u16),
    RefreshConfig,
}

/// What a node thread reports.
#[derive(Debug)]
enum Reported {
    Connected,
    Event(Box<Event>, Option<StreamPosition>),
    Lost,
}

#[derive(Debug)]
struct Report {
    node: NodeAddress,
    /// Which connection to the node (0: a one-off seed config fetch).
    generation: u64,
    what: Reported,
}

/// One node's connection thread.
#[derive(Debug)]
struct Link {
    generation: u64,
    commands: Sender<Command>,
    /// Once connected: a clone of the node's socket, to end the thread, and
    /// the wake that interrupts its wait for the socket.
    control: Arc<Mutex<Option<(TcpStream, Wake)>>>,
}

impl Link {
    /// Queues a command and wakes the thread to carry it out.
    fn send(&self, command: Command) {
        let _ = self.commands.send(command);
        // Not connected yet: the thread looks at its commands first.
        if let Some((_, wake)) = &*self.control.lock().unwrap_or_else(PoisonError::into_inner) {
            wake.wake();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // The thread also stops once it sees the commands hang up.
        if let Some((socket, wake)) = &*self.control.lock().unwrap_or_else(PoisonError::into_inner)
        {
            let _ = socket.shutdown(Shutdown::Both);
            wake.wake();
        }
    }
}

/// Streams a bucket from a whole cluster as one event stream, across
/// rebalances, failovers, node additions and removals and lost
/// connections, with one cluster-wide [`Checkpoint`].
///
/// It bootstraps from seed nodes (a `couchbase://h1,h2/bucket`
/// [`ConnectionString`]), then runs the core's [`ClusterOrchestrator`] on
/// the caller's thread: one thread per data node owns that node's
/// [`Connection`] and reports its events through a bounded channel; this
/// value owns the orchestrator and hands out, in the order they arrive,
/// the events of each vbucket's current stream (stale events of moved
/// streams are dropped). Per vbucket the order is the producer's; across
/// vbuckets events interleave.
///
/// Connections acknowledge flow control by themselves (`auto_ack` is
/// forced on): the bounded channel between node threads and
/// [`next_event`](Self::next_event) is the back-pressure.
///
/// Persist [`checkpoint`](Self::checkpoint) with the data the events
/// produced and resume with it; after a reported [`Event::Rollback`]
/// discard that vbucket's changes above its seqno.
#[derive(Debug)]
pub struct ClusterConnection {
    orchestrator: ClusterOrchestrator,
    config: ConsumerConfig,
    seeds: Vec<(String, u16)>,
    links: HashMap<NodeAddress, Link>,
    reports: Receiver<Report>,
    sender: SyncSender<Report>,
    generation: u64,
    done: Vec<u16>,
    failed: Vec<(u16, StreamFailure)>,
    seed_fetch: Option<JoinHandle<()>>,
    dial: Dial,
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
        tls: Arc<rustls::ClientConfig>,
        config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let dial = Dial { tls: Some(tls) };
        Self::connect_via(connection_string, dial, config, settings, checkpoint)
    }

    /// Bootstraps with node connections made by `dial`.
    fn connect_via(
        connection_string: &str,
        dial: Dial,
        mut config: ConsumerConfig,
        mut settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let parsed = ConnectionString::parse(connection_string)?;
        if parsed.tls && !dial.is_tls() {
            return Err(Error::TlsConfig(
                "couchbases:// needs a TLS client configuration (ClusterConnection::connect_tls)"
                    .to_owned(),
            ));
        }
        parsed.configure(&mut config, &mut settings);
        let (sender, reports) = mpsc::sync_channel(REPORT_QUEUE);
        let mut this = ClusterConnection {
            orchestrator: ClusterOrchestrator::new(settings, checkpoint),
            config,
            seeds: parsed.seeds,
            links: HashMap::new(),
            reports,
            sender,
            generation: 0,
            done: Vec::new(),
            failed: Vec::new(),
            seed_fetch: None,
            dial,
        };
        let mut last_err = Error::NoConfig;
        for (host, port) in this.seeds.clone() {
            match fetch_config(&this.dial, &host, port, &this.config) {
                Ok(json) => match this
                    .orchestrator
                    .handle_config(&json, &host, Instant::now())
                {
                    Ok(_) => break,
                    Err(err) => last_err = err.into(),
                },
                Err(err) => last_err = err,
            }
        }
        if this.orchestrator.config().is_none() {
            return Err(last_err);
        }
        this.act();
        Ok(this)
    }

    /// The next event of any vbucket's current stream, blocking until one
    /// arrives: changes, snapshot markers, rollbacks, stream opens and
    /// ends. `Ok(None)` once every selected vbucket reached its end seqno
    /// or failed (see [`done`](Self::done) and [`failed`](Self::failed)).
    pub fn next_event(&mut self) -> Result<Option<Event>, Error> {
        self.drive(None)
    }

    /// Like [`next_event`](Self::next_event), giving up after `timeout`:
    /// `Ok(None)` then too (see [`is_finished`](Self::is_finished)).
    pub fn next_event_timeout(&mut self, timeout: Duration) -> Result<Option<Event>, Error> {
        self.drive(Some(Instant::now() + timeout))
    }

    /// Whether every selected vbucket reached its end seqno or failed.
    pub fn is_finished(&self) -> bool {
        self.orchestrator.is_finished()
    }

    /// Every selected vbucket's position as of the events handed out.
    pub fn checkpoint(&self) -> Checkpoint {
        self.orchestrator.checkpoint()
    }

    /// The orchestrator (config in force, vbucket and node status).
    pub fn orchestrator(&self) -> &ClusterOrchestrator {
        &self.orchestrator
    }

    /// Vbuckets that reached their end seqno.
    pub fn done(&self) -> &[u16] {
        &self.done
    }

    /// Vbuckets given up, and why.
    pub fn failed(&self) -> &[(u16, StreamFailure)] {
        &self.failed
    }

    /// The nodes with a connection thread.
    pub fn connected_nodes(&self) -> Vec<NodeAddress> {
        self.links.keys().cloned().collect()
    }

    // ----- internals -----------------------------------------------------

    fn drive(&mut self, until: Option<Instant>) -> Result<Option<Event>, Error> {
        loop {
            self.act();
            if self.orchestrator.is_finished() {
                return Ok(None);
            }
            let now = Instant::now();
            let deadline = match (self.orchestrator.poll_timeout(), until) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let received = match deadline {
                Some(at) => self.reports.recv_timeout(at.saturating_duration_since(now)),
                // The owner holds a sender: the channel never hangs up.
                None => self
                    .reports
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
            };
            match received {
                Ok(report) => {
                    // Fed to the orchestrator only now, as it is handed
                    // out: the checkpoint never runs ahead of the
                    // application.
                    if let Some(event) = self.on_report(report) {
                        self.act();
                        return Ok(Some(event));
                    }
                }
                Err(_) => {
                    let now = Instant::now();
                    if self.orchestrator.poll_timeout().is_some_and(|at| at <= now) {
                        self.orchestrator.handle_timeout(now);
                    }
                    if until.is_some_and(|at| at <= now) {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// Feeds a report to the orchestrator; returns the event to hand out,
    /// if it is one of a current stream.
    fn on_report(&mut self, report: Report) -> Option<Event> {
        let Report {
            node,
            generation,
            what,
        } = report;
        let at = Instant::now();
        if generation == 0 {
            // A seed's answer to a config fetch.
            if let Reported::Event(event, _) = what
                && let Event::ClusterConfig { config, .. } = *event
            {
                let _ = self.orchestrator.handle_config(&config, node.host(), at);
            }
            return None;
        }
        if self.links.get(&node).map(|l| l.generation) != Some(generation) {
            return None; // a connection reported lost or closed
        }
        match what {
            Reported::Connected => self.orchestrator.handle_node_connected(&node, at),
            Reported::Lost => {
                self.links.remove(&node);
                self.orchestrator.handle_node_lost(&node, at);
            }
            Reported::Event(event, position) => {
                return self
                    .orchestrator
                    .handle_node_event(&node, *event, position, at);
            }
        }
        None
    }

    /// Carries out the orchestrator's actions.
    fn act(&mut self) {
        while let Some(action) = self.orchestrator.poll_action() {
            match action {
                Action::Connect(kv) => self.start_link(&kv),
                Action::Disconnect(node) => {
                    self.links.remove(&node);
                }
                Action::OpenStream {
                    node,
                    vbucket,
                    start,
                    end,
                } => self.command(
                    &node,
                    Command::Open {
                        vbucket,
                        start,
                        end,
                    },
                ),
                Action::CloseStream { node, vbucket } => {
                    self.command(&node, Command::Close(vbucket));
                }
                Action::RefreshConfig { via } => match via {
                    Some(node) if self.links.contains_key(&node) => {
                        self.command(&node, Command::RefreshConfig);
                    }
                    _ => self.fetch_from_seed(),
                },
                Action::StreamDone { vbucket } => self.done.push(vbucket),
                Action::Fail { vbucket, reason } => self.failed.push((vbucket, reason)),
                _ => {}
            }
        }
    }

    /// Starts a node thread; a thread that cannot start is a lost node.
    fn start_link(&mut self, kv: &KvNode) {
        self.generation += 1;
        let generation = self.generation;
        let node = kv.address.clone();
        let (commands, rx) = mpsc::channel();
        let control = Arc::new(Mutex::new(None));
        let spawned = {
            let link = NodeLink {
                node: node.clone(),
                target: self.dial.target(kv),
                dial: self.dial.clone(),
                generation,
                commands: rx,
                reports: self.sender.clone(),
                control: Arc::clone(&control),
            };
            let config = self.config.clone();
            thread::Builder::new()
                .name(format!("dcp-node-{node}"))
                .spawn(move || node_thread(link, config))
        };
        if spawned.is_err() {
            self.orchestrator.handle_node_lost(&node, Instant::now());
            return;
        }
        self.links.insert(
            node,
            Link {
                generation,
                commands,
                control,
            },
        );
    }

    fn command(&mut self, node: &NodeAddress, command: Command) {
        if let Some(link) = self.links.get(node) {
            link.send(command);
        }
    }

    /// Fetches a config from the seeds on a thread (no node is connected);
    /// the answer arrives as a generation-0 report.
    fn fetch_from_seed(&mut self) {
        if self.seed_fetch.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let seeds = self.seeds.clone();
        let config = self.config.clone();
        let sender = self.sender.clone();
        let dial = self.dial.clone();
        self.seed_fetch = thread::Builder::new()
            .name("dcp-seed-config".into())
            .spawn(move || {
                for (host, port) in seeds {
                    if let Ok(json) = fetch_config(&dial, &host, port, &config) {
                        let event = Event::ClusterConfig {
                            status: dcp_proto::codec::Status::Success,
                            config: json.into(),
                        };
                        let _ = sender.send(Report {
                            node: NodeAddress::new(host, port),
                            generation: 0,
                            what: Reported::Event(Box::new(event), None),
                        });
                        return;
                    }
                }
            })
            .ok();
    }
}

/// Connects to one node, asks for the bucket config and returns it.
fn fetch_config(
    dial: &Dial,
    host: &str,
    port: u16,
    config: &ConsumerConfig,
) -> Result<Vec<u8>, Error> {
    let mut config = config.clone();
    config.connection_name = format!("{}/config", config.connection_name);
    let deadline = Instant::now() + config.handshake_timeout.max(Duration::from_secs(1));
    #[cfg(feature = "tls")]
    let connected = match &dial.tls {
        Some(tls) => Connection::connect_tls((host, port), host, Arc::clone(tls), config),
        None => Connection::connect((host, port), config),
    };
    #[cfg(not(feature = "tls"))]
    let connected = {
        let _ = dial;
        Connection::connect((host, port), config)
    };
    let mut conn = connected?;
    conn.consumer_mut().request_cluster_config()?;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match conn.next_event_timeout(left)? {
            Some(Event::ClusterConfig { status, config }) => {
                if status.is_success() && !config.is_empty() {
                    break Ok(config.to_vec());
                }
                break Err(Error::NoConfig);
            }
            Some(_) => {}
            None => break Err(Error::NoConfig),
        }
    };
    conn.close();
    result
}

/// What a node thread is given.
struct NodeLink {
    /// The node (its identity in reports).
    node: NodeAddress,
    /// Where to connect (none: no address for this dial, a lost node).
    target: Option<NodeAddress>,
    dial: Dial,
    generation: u64,
    commands: Receiver<Command>,
    reports: SyncSender<Report>,
    control: Arc<Mutex<Option<(TcpStream, Wake)>>>,
}

/// Owns one node's connection: carries out commands, reports events.
///
/// It blocks in [`Connection::next_event`] only; a command wakes it (its
/// connection reads through a reader thread, see
/// [`pipe`](crate::pipe)), so commands are carried out at once without
/// polling.
fn node_thread(link: NodeLink, config: ConsumerConfig) {
    let NodeLink {
        node,
        target,
        dial,
        generation,
        commands,
        reports,
        control,
    } = link;
    let report = |what| Report {
        node: node.clone(),
        generation,
        what,
    };
    let connected = match &target {
        Some(target) => dial.connect(target.host(), target.port(), config),
        None => Err(Error::TlsConfig(format!(
            "node {node} lists no kvSSL port for a TLS connection"
        ))),
    };
    let Ok((mut conn, wake, socket)) = connected else {
        let _ = reports.send(report(Reported::Lost));
        return;
    };
    *control.lock().unwrap_or_else(PoisonError::into_inner) = Some((socket, wake));
    if reports.send(report(Reported::Connected)).is_err() {
        return;
    }
    loop {
        loop {
            let ok = match commands.try_recv() {
                Ok(Command::Open {
                    vbucket,
                    start,
                    end,
                }) => conn.open_stream(vbucket, start, end).is_ok(),
                // Already ended is fine: its end event is on its way.
                Ok(Command::Close(vbucket)) => {
                    let _ = conn.close_stream(vbucket);
                    true
                }
                Ok(Command::RefreshConfig) => {
                    let _ = conn.consumer_mut().request_cluster_config();
                    true
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    conn.close();
                    return;
                }
            };
            if !ok {
                let _ = reports.send(report(Reported::Lost));
                return;
            }
        }
        // Returns `Ok(None)`, still open, when a command woke it.
        match conn.next_event() {
            Ok(Some(event)) => {
                let position = match &event {
                    Event::StreamOpened { vbucket, .. } => conn.consumer().position(*vbucket),
                    _ => None,
                };
                if reports
                    .send(report(Reported::Event(Box::new(event), position)))
                    .is_err()
                {
                    return;
                }
            }
            Ok(None) if !conn.is_closed() => {}
            Ok(None) | Err(_) => {
                let _ = reports.send(report(Reported::Lost));
                return;
            }
        }
    }
}
