//! [`ClusterConnection`]: a whole bucket streamed from a cluster, one
//! [`Connection`] per data node (each on its own thread), driven by the
//! core's [`ClusterOrchestrator`] on the caller's thread.

use std::collections::HashMap;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use dcp_proto::cluster::{
    Action, ClusterOrchestrator, ConnectionString, NodeAddress, OrchestratorConfig, StreamFailure,
};
use dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
use dcp_proto::session::{Checkpoint, StreamPosition};

use crate::{Connection, Error};

/// Reports buffered between the node threads and the owner: a slow
/// application stops the node threads, whose connections then stop
/// acknowledging, and the producers pause.
const REPORT_QUEUE: usize = 256;

/// How long a node thread waits for its socket before looking at its
/// commands again (std cannot wait on a socket and a channel at once): the
/// worst latency of opening or closing a stream.
const COMMAND_POLL: Duration = Duration::from_millis(5);

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
    /// A clone of the node's socket once connected, to end the thread.
    socket: Arc<Mutex<Option<TcpStream>>>,
}

impl Drop for Link {
    fn drop(&mut self) {
        // The thread also stops once it sees the commands hang up.
        if let Some(socket) = &*self.socket.lock().unwrap_or_else(PoisonError::into_inner) {
            let _ = socket.shutdown(Shutdown::Both);
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
}

impl ClusterConnection {
    /// Bootstraps from the seeds of `connection_string` (its bucket, if
    /// named, replaces `config.bucket`): fetches the bucket config from the
    /// first seed that answers, then connects to the data nodes and opens
    /// the selected vbuckets from `checkpoint` (or as `settings` says).
    pub fn connect(
        connection_string: &str,
        mut config: ConsumerConfig,
        settings: OrchestratorConfig,
        checkpoint: Checkpoint,
    ) -> Result<Self, Error> {
        let parsed = ConnectionString::parse(connection_string)?;
        if let Some(bucket) = parsed.bucket {
            config.bucket = bucket;
        }
        config.auto_ack = true;
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
        };
        let mut last_err = Error::NoConfig;
        for (host, port) in this.seeds.clone() {
            match fetch_config(&host, port, &this.config) {
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
                Action::Connect(kv) => self.start_link(kv.address),
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
    fn start_link(&mut self, node: NodeAddress) {
        self.generation += 1;
        let generation = self.generation;
        let (commands, rx) = mpsc::channel();
        let socket = Arc::new(Mutex::new(None));
        let spawned = {
            let node = node.clone();
            let config = self.config.clone();
            let reports = self.sender.clone();
            let socket = Arc::clone(&socket);
            thread::Builder::new()
                .name(format!("dcp-node-{node}"))
                .spawn(move || node_thread(node, generation, config, rx, reports, socket))
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
                socket,
            },
        );
    }

    fn command(&mut self, node: &NodeAddress, command: Command) {
        if let Some(link) = self.links.get(node) {
            let _ = link.commands.send(command);
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
        self.seed_fetch = thread::Builder::new()
            .name("dcp-seed-config".into())
            .spawn(move || {
                for (host, port) in seeds {
                    if let Ok(json) = fetch_config(&host, port, &config) {
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

/// Connects to `host:port` (each resolved address in turn, bounded by the
/// handshake timeout) without the handshake.
fn connect_socket(host: &str, port: u16, config: &ConsumerConfig) -> Result<TcpStream, Error> {
    let mut last = None;
    for addr in (host, port).to_socket_addrs()? {
        match TcpStream::connect_timeout(&addr, config.handshake_timeout) {
            Ok(stream) => return Ok(stream),
            Err(err) => last = Some(err),
        }
    }
    Err(last.map_or(Error::NoAddress, Error::Io))
}

/// Connects to one node, asks for the bucket config and returns it.
fn fetch_config(host: &str, port: u16, config: &ConsumerConfig) -> Result<Vec<u8>, Error> {
    let mut config = config.clone();
    config.connection_name = format!("{}/config", config.connection_name);
    let deadline = Instant::now() + config.handshake_timeout.max(Duration::from_secs(1));
    let stream = connect_socket(host, port, &config)?;
    let mut conn = Connection::handshake(stream, config)?;
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

/// Owns one node's connection: carries out commands, reports events.
fn node_thread(
    node: NodeAddress,
    generation: u64,
    config: ConsumerConfig,
    commands: Receiver<Command>,
    reports: SyncSender<Report>,
    socket: Arc<Mutex<Option<TcpStream>>>,
) {
    let report = |what| Report {
        node: node.clone(),
        generation,
        what,
    };
    let connected = connect_socket(node.host(), node.port(), &config).and_then(|stream| {
        *socket.lock().unwrap_or_else(PoisonError::into_inner) = Some(stream.try_clone()?);
        Connection::handshake(stream, config)
    });
    let Ok(mut conn) = connected else {
        let _ = reports.send(report(Reported::Lost));
        return;
    };
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
        match conn.next_event_timeout(COMMAND_POLL) {
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
