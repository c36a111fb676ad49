//! [`ClusterConnection`]: a whole bucket streamed from a cluster, one
//! [`Connection`] per data node (each in its own task), driven by the
//! core's [`ClusterOrchestrator`] in the caller's task.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use async_io::Timer;
use dcp_proto::cluster::{
    Action, ClusterOrchestrator, ConnectionString, KvNode, NodeAddress, OrchestratorConfig,
    StreamFailure,
};
use dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
use dcp_proto::session::{Checkpoint, StreamPosition};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future;

use crate::{Connection, Error, Task};

/// Reports buffered between the node tasks and the owner: a slow
/// application stops the node tasks, whose connections then stop
/// acknowledging, and the producers pause.
const REPORT_QUEUE: usize = 256;

/// What a node task asks of its connection.
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

/// What a node task reports.
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

/// One node's connection task; dropping it hangs up its commands, and the
/// task closes its connection and ends.
#[derive(Debug)]
struct Link {
    generation: u64,
    commands: Sender<Command>,
}

/// The executor [`ClusterConnection`] spawns its tasks on.
type Spawn = Arc<dyn Fn(Task) + Send + Sync>;

/// Streams a bucket from a whole cluster as one event stream, across
/// rebalances, failovers, node additions and removals and lost
/// connections, with one cluster-wide [`Checkpoint`].
///
/// It bootstraps from seed nodes (a `couchbase://h1,h2/bucket`
/// [`ConnectionString`]), then runs the core's [`ClusterOrchestrator`]:
/// one task per data node (on the executor given to
/// [`connect_with`](Self::connect_with), async-std's by default) owns that
/// node's [`Connection`] and reports its events through a bounded channel;
/// this value owns the orchestrator and hands out, in the order they
/// arrive, the events of each vbucket's current stream (stale events of
/// moved streams are dropped). Per vbucket the order is the producer's;
/// across vbuckets events interleave.
///
/// Connections acknowledge flow control by themselves (`auto_ack` is
/// forced on): the bounded channel between node tasks and
/// [`next_event`](Self::next_event) is the back-pressure.
///
/// Persist [`checkpoint`](Self::checkpoint) with the data the events
/// produced and resume with it; after a reported [`Event::Rollback`]
/// discard that vbucket's changes above its seqno.
pub struct ClusterConnection {
    orchestrator: ClusterOrchestrator,
    config: ConsumerConfig,
    seeds: Vec<(String, u16)>,
    links: HashMap<NodeAddress, Link>,
    reports: Receiver<Report>,
    sender: Sender<Report>,
    generation: u64,
    done: Vec<u16>,
    failed: Vec<(u16, StreamFailure)>,
    /// A seed config fetch is running.
    seed_fetch: Option<Receiver<()>>,
    spawn: Spawn,
    timer: Timer,
    timer_at: Option<Instant>,
    dial: Dial,
}

/// How node connections are made: plain TCP, or TLS with a client
/// configuration (to the nodes' `kvSSL` ports).
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

    /// Where to reach a data node: its `kvSSL` address over TLS (none if
    /// the config lists no TLS port: never plaintext instead).
    fn target(&self, kv: &KvNode) -> Option<NodeAddress> {
        if self.is_tls() {
            kv.tls_address()
        } else {
            Some(kv.address.clone())
        }
    }
}

impl std::fmt::Debug for ClusterConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConnection")
            .field("orchestrator", &self.orchestrator)
            .field("nodes", &self.links.len())
            .finish_non_exhaustive()
    }
}

impl ClusterConnection {
    /// Bootstraps from `connection_string` (see
    /// [`connect_with`](Self::connect_with)), spawning node tasks with
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
    /// spawning node tasks with `async_std::task::spawn`.
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
    /// each, spawned with `spawn`, e.g. `|t| smol::spawn(t).detach()`) and
    /// opens the selected vbuckets from `checkpoint` (or as `settings`
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

    /// Bootstraps with node connections made by `dial`.
    async fn connect_via(
        connection_string: &str,
        dial: Dial,
        mut config: ConsumerConfig,
        mut settings: OrchestratorConfig,
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
        parsed.configure(&mut config, &mut settings);
        let (sender, reports) = async_channel::bounded(REPORT_QUEUE);
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
            spawn: Arc::new(spawn),
            timer: Timer::never(),
            timer_at: None,
            dial,
        };
        let mut last_err = Error::NoConfig;
        for (host, port) in this.seeds.clone() {
            match fetch_config(&this.dial, &host, port, &this.config).await {
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

    /// The next event of any vbucket's current stream: changes, snapshot
    /// markers, rollbacks, stream opens and ends. `Ok(None)` once every
    /// selected vbucket reached its end seqno or failed (see
    /// [`done`](Self::done) and [`failed`](Self::failed)). Cancel-safe.
    pub async fn next_event(&mut self) -> Result<Option<Event>, Error> {
        loop {
            self.act();
            if self.orchestrator.is_finished() {
                return Ok(None);
            }
            let deadline = self.orchestrator.poll_timeout();
            if self.timer_at != deadline {
                match deadline {
                    Some(at) => self.timer.set_at(at),
                    None => self.timer = Timer::never(),
                }
                self.timer_at = deadline;
            }
            let reports = &self.reports;
            let timer = &mut self.timer;
            let woke = future::or(async { reports.recv().await.ok() }, async {
                timer.await;
                None
            })
            .await;
            match woke {
                Some(report) => {
                    // Fed to the orchestrator only now, as it is handed
                    // out: the checkpoint never runs ahead of the
                    // application.
                    if let Some(event) = self.on_report(report) {
                        self.act();
                        return Ok(Some(event));
                    }
                }
                None => {
                    self.timer_at = None;
                    let now = Instant::now();
                    if self.orchestrator.poll_timeout().is_some_and(|at| at <= now) {
                        self.orchestrator.handle_timeout(now);
                    }
                }
            }
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

    /// The nodes with a connection task.
    pub fn connected_nodes(&self) -> Vec<NodeAddress> {
        self.links.keys().cloned().collect()
    }

    // ----- internals -----------------------------------------------------

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
                Action::Connect(kv) => {
                    self.generation += 1;
                    let (commands, rx) = async_channel::unbounded();
                    (self.spawn)(Box::pin(node_task(
                        kv.address.clone(),
                        self.dial.target(&kv),
                        self.dial.clone(),
                        self.generation,
                        self.config.clone(),
                        rx,
                        self.sender.clone(),
                    )));
                    self.links.insert(
                        kv.address,
                        Link {
                            generation: self.generation,
                            commands,
                        },
                    );
                }
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

    fn command(&mut self, node: &NodeAddress, command: Command) {
        if let Some(link) = self.links.get(node) {
            let _ = link.commands.try_send(command);
        }
    }

    /// Fetches a config from the seeds in a task (no node is connected);
    /// the answer arrives as a generation-0 report.
    fn fetch_from_seed(&mut self) {
        // The task holds the sender of `running` until it ends.
        if self.seed_fetch.as_ref().is_some_and(|r| !r.is_closed()) {
            return;
        }
        let (running, done) = async_channel::bounded::<()>(1);
        self.seed_fetch = Some(done);
        let seeds = self.seeds.clone();
        let config = self.config.clone();
        let sender = self.sender.clone();
        let dial = self.dial.clone();
        (self.spawn)(Box::pin(async move {
            let _running = running;
            for (host, port) in seeds {
                if let Ok(json) = fetch_config(&dial, &host, port, &config).await {
                    let event = Event::ClusterConfig {
                        status: dcp_proto::codec::Status::Success,
                        config: json.into(),
                    };
                    let _ = sender
                        .send(Report {
                            node: NodeAddress::new(host, port),
                            generation: 0,
                            what: Reported::Event(Box::new(event), None),
                        })
                        .await;
                    return;
                }
            }
        }));
    }
}

/// Connects to one node (over TLS if `dial` says so, verifying `host`),
/// asks for the bucket config and returns it.
async fn fetch_config(
    dial: &Dial,
    host: &str,
    port: u16,
    config: &ConsumerConfig,
) -> Result<Vec<u8>, Error> {
    let mut config = config.clone();
    config.connection_name = format!("{}/config", config.connection_name);
    let timeout = config.handshake_timeout.max(Duration::from_secs(1));
    #[cfg(feature = "tls")]
    if let Some(tls) = &dial.tls {
        let conn = Connection::connect_tls((host, port), host, Arc::clone(tls), config).await?;
        return config_from(conn, timeout).await;
    }
    let _ = dial;
    let conn = Connection::connect((host, port), config).await?;
    config_from(conn, timeout).await
}

/// Asks a connected node for the bucket config, within `timeout`.
async fn config_from<S: AsyncRead + AsyncWrite + Unpin>(
    mut conn: Connection<S>,
    timeout: Duration,
) -> Result<Vec<u8>, Error> {
    conn.consumer_mut().request_cluster_config()?;
    let wait = async {
        while let Some(event) = conn.next_event().await? {
            if let Event::ClusterConfig { status, config } = event {
                if status.is_success() && !config.is_empty() {
                    return Ok(config.to_vec());
                }
                break;
            }
        }
        Err(Error::NoConfig)
    };
    let result = future::or(wait, async {
        Timer::after(timeout).await;
        Err(Error::NoConfig)
    })
    .await;
    conn.close().await;
    result
}

/// What woke a node task.
enum Woke {
    Command(Option<Command>),
    Event(Result<Option<Event>, Error>),
}

/// Owns one node's connection (made by `dial` to `target`; none: no
/// address to reach it at): carries out commands, reports events.
async fn node_task(
    node: NodeAddress,
    target: Option<NodeAddress>,
    dial: Dial,
    generation: u64,
    config: ConsumerConfig,
    commands: Receiver<Command>,
    reports: Sender<Report>,
) {
    let link = NodeLink {
        node: node.clone(),
        generation,
        commands,
        reports,
    };
    let Some(target) = target else {
        // No kvSSL port for a TLS connection: lost until a config has one.
        let _ = link.reports.send(link.report(Reported::Lost)).await;
        return;
    };
    let (host, port) = (target.host(), target.port());
    #[cfg(feature = "tls")]
    if let Some(tls) = &dial.tls {
        let connect = Connection::connect_tls((host, port), host, Arc::clone(tls), config);
        return link.run(connect).await;
    }
    let _ = dial;
    link.run(Connection::connect((host, port), config)).await;
}

/// A node task's channels.
struct NodeLink {
    node: NodeAddress,
    generation: u64,
    commands: Receiver<Command>,
    reports: Sender<Report>,
}

impl NodeLink {
    fn report(&self, what: Reported) -> Report {
        Report {
            node: self.node.clone(),
            generation: self.generation,
            what,
        }
    }

    /// Connects with `connect`, then carries out commands and reports
    /// events until the connection ends or the owner hangs up.
    async fn run<S, F>(self, connect: F)
    where
        S: AsyncRead + AsyncWrite + Unpin,
        F: std::future::Future<Output = Result<Connection<S>, Error>>,
    {
        let commands = &self.commands;
        let reports = &self.reports;
        let report = |what| self.report(what);
        let connected = future::or(async { Some(connect.await) }, async {
            // Hung up while connecting: give up at once.
            while commands.recv().await.is_ok() {}
            None
        })
        .await;
        let mut conn = match connected {
            Some(Ok(conn)) => conn,
            Some(Err(_)) => {
                let _ = reports.send(report(Reported::Lost)).await;
                return;
            }
            None => return,
        };
        if reports.send(report(Reported::Connected)).await.is_err() {
            return;
        }
        Self::serve(&mut conn, commands, reports, report).await;
    }

    /// The loop of a connected node task.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        conn: &mut Connection<S>,
        commands: &Receiver<Command>,
        reports: &Sender<Report>,
        report: impl Fn(Reported) -> Report,
    ) {
        loop {
            let woke = future::or(async { Woke::Command(commands.recv().await.ok()) }, async {
                Woke::Event(conn.next_event().await)
            })
            .await;
            match woke {
                Woke::Command(None) => {
                    conn.close().await;
                    return;
                }
                Woke::Command(Some(command)) => {
                    let ok = match command {
                        Command::Open {
                            vbucket,
                            start,
                            end,
                        } => conn.open_stream(vbucket, start, end).is_ok(),
                        // Already ended is fine: its end event is on its way.
                        Command::Close(vbucket) => {
                            let _ = conn.close_stream(vbucket);
                            true
                        }
                        Command::RefreshConfig => {
                            let _ = conn.consumer_mut().request_cluster_config();
                            true
                        }
                    };
                    if !ok {
                        let _ = reports.send(report(Reported::Lost)).await;
                        return;
                    }
                }
                Woke::Event(Ok(Some(event))) => {
                    let position = match &event {
                        Event::StreamOpened { vbucket, .. } => conn.consumer().position(*vbucket),
                        _ => None,
                    };
                    let sent = reports
                        .send(report(Reported::Event(Box::new(event), position)))
                        .await;
                    if sent.is_err() {
                        return;
                    }
                }
                Woke::Event(Ok(None) | Err(_)) => {
                    let _ = reports.send(report(Reported::Lost)).await;
                    return;
                }
            }
        }
    }
}
