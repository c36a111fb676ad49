//! [`ClusterConnection`]: a whole bucket streamed from a cluster, one
//! [`Connection`] per data node, driven by the core's
//! [`ClusterOrchestrator`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcp_proto::cluster::{
    Action, ClusterOrchestrator, KvNode, NodeAddress, OrchestratorConfig, StreamFailure,
};
use dcp_proto::consumer::{ConnectionStats, ConsumerConfig, Event, StreamStart, StreamStats};
use dcp_proto::session::{Checkpoint, StreamPosition};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::connection::now;
use crate::{Connection, Error};
use dcp_proto::cluster::ConnectionString;

/// How node connections are made: plain TCP, or TLS with a client
/// configuration (to the nodes' `kvSSL` ports).
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

    /// Where to reach a data node: its `kvSSL` address over TLS (none if
    /// the config lists no TLS port: never plaintext instead).
    fn target(&self, kv: &KvNode) -> Option<NodeAddress> {
        if self.is_tls() {
            kv.tls_address()
        } else {
            Some(kv.address.clone())
        }
    }

    /// Connects to `host:port`, over TLS (verifying `host`) if configured.
    async fn connect(
        &self,
        host: &str,
        port: u16,
        config: ConsumerConfig,
    ) -> Result<Connection, Error> {
        let addr = socket_string(host, port);
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return Connection::connect_tls(addr, host, std::sync::Arc::clone(tls), config).await;
        }
        Connection::connect(addr, config).await
    }
}

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

/// How often a node task publishes its connection's counters.
const STATS_EVERY: Duration = Duration::from_millis(250);

/// A node connection's counters, as its task last published them.
#[derive(Debug, Default)]
struct NodeStats {
    connection: ConnectionStats,
    streams: Vec<(u16, StreamStats)>,
}

type StatsSlot = Arc<Mutex<NodeStats>>;

/// One node's connection task.
#[derive(Debug)]
struct Link {
    generation: u64,
    commands: mpsc::UnboundedSender<Command>,
    task: JoinHandle<()>,
    stats: StatsSlot,
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
/// It bootstraps from seed nodes (a `couchbase://h1,h2/bucket`
/// [`ConnectionString`]), then runs the core's [`ClusterOrchestrator`]: one
/// task per data node owns that node's [`Connection`] and reports its
/// events; this value owns the orchestrator and hands out, in the order
/// they arrive, the events of each vbucket's current stream (stale events
/// of moved streams are dropped). Per vbucket the order is the producer's;
/// across vbuckets events interleave.
///
/// Connections acknowledge flow control by themselves (`auto_ack` is
/// forced on): the bounded queue between node tasks and
/// [`next_event`](Self::next_event) is the back-pressure.
///
/// Persist [`checkpoint`](Self::checkpoint) with the data the events
/// produced and resume with it; after a reported
/// [`Event::Rollback`] discard that vbucket's changes above its seqno.
#[derive(Debug)]
pub struct ClusterConnection {
    orchestrator: ClusterOrchestrator,
    config: ConsumerConfig,
    seeds: Vec<(String, u16)>,
    links: HashMap<NodeAddress, Link>,
    reports: mpsc::Receiver<Report>,
    sender: mpsc::Sender<Report>,
    generation: u64,
    done: Vec<u16>,
    failed: Vec<(u16, StreamFailure)>,
    seed_fetch: Option<JoinHandle<()>>,
    dial: Dial,
    /// Counters of connections no longer running.
    gone: ConnectionStats,
    /// Links told to stop whose tasks may still publish their last
    /// counters; folded into `gone` once finished.
    retiring: Vec<Link>,
    /// Node connections established, and the nodes they were to.
    connects: u64,
    nodes_seen: HashSet<NodeAddress>,
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

    /// Bootstraps with node connections made by `dial`.
    async fn connect_via(
        connection_string: &str,
        dial: Dial,
        mut config: ConsumerConfig,
        mut settings: OrchestratorConfig,
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
        parsed.configure(&mut config, &mut settings);
        let (sender, reports) = mpsc::channel(REPORT_QUEUE);
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
            gone: ConnectionStats::default(),
            retiring: Vec::new(),
            connects: 0,
            nodes_seen: HashSet::new(),
        };
        let mut last_err = None;
        for (host, port) in this.seeds.clone() {
            match fetch_config(&this.dial, &host, port, &this.config).await {
                Ok(json) => match this.orchestrator.handle_config(&json, &host, now()) {
                    Ok(_) => {
                        last_err = None;
                        break;
                    }
                    Err(err) => {
                        last_err = Some(Error::Io(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            err,
                        )));
                    }
                },
                Err(err) => last_err = Some(err),
            }
        }
        if let Some(err) = last_err {
            return Err(err);
        }
        if this.orchestrator.config().is_none() {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "no seed node",
            )));
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
            let sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                report = self.reports.recv() => {
                    // Fed to the orchestrator only now, as it is handed
                    // out: the checkpoint never runs ahead of the
                    // application.
                    if let Some(event) = report.and_then(|r| self.on_report(r)) {
                        self.act();
                        return Ok(Some(event));
                    }
                }
                () = sleep => self.orchestrator.handle_timeout(now()),
            }
        }
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

    /// Counters of every node connection added up (as each node's task
    /// last published them, at most a quarter second old), including
    /// connections since lost; `reconnects` counts connections made to a
    /// node this value had already connected to, and `connections` the
    /// node connections running now.
    pub fn stats(&self) -> ConnectionStats {
        let mut total = self.gone;
        total.connections = 0;
        for link in self.links.values() {
            if let Ok(slot) = link.stats.lock() {
                total.merge(&slot.connection);
            }
        }
        for link in &self.retiring {
            if let Ok(slot) = link.stats.lock() {
                total.merge(&stopped(slot.connection));
            }
        }
        total.reconnects = self.connects.saturating_sub(self.nodes_seen.len() as u64);
        total
    }

    /// A vbucket's stream counters, added up over the node connections
    /// that streamed it and still run.
    pub fn stream_stats(&self, vbucket: u16) -> Option<StreamStats> {
        let mut found: Option<StreamStats> = None;
        for link in self.links.values() {
            let Ok(slot) = link.stats.lock() else {
                continue;
            };
            for (vb, stats) in &slot.streams {
                if *vb == vbucket {
                    found.get_or_insert_with(StreamStats::default).merge(stats);
                }
            }
        }
        found
    }

    fn retire_link(&mut self, node: &NodeAddress) {
        // Finished tasks published their last counters.
        let (finished, running): (Vec<Link>, Vec<Link>) = std::mem::take(&mut self.retiring)
            .into_iter()
            .partition(|link| link.task.is_finished());
        self.retiring = running;
        for link in finished {
            if let Ok(slot) = link.stats.lock() {
                self.gone.merge(&stopped(slot.connection));
            }
        }
        if let Some(mut link) = self.links.remove(node) {
            // Closing its command channel stops the task, which publishes
            // its counters once more on the way out.
            drop(std::mem::replace(
                &mut link.commands,
                mpsc::unbounded_channel().0,
            ));
            self.retiring.push(link);
        }
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
        if generation == 0 {
            // A seed's answer to a config fetch.
            if let Reported::Event(event, _) = what
                && let Event::ClusterConfig { config, .. } = *event
            {
                let _ = self.orchestrator.handle_config(&config, node.host(), now());
            }
            return None;
        }
        if self.links.get(&node).map(|l| l.generation) != Some(generation) {
            return None; // a connection reported lost or closed
        }
        let at = now();
        match what {
            Reported::Connected => {
                self.connects += 1;
                if self.nodes_seen.insert(node.clone()) {
                    tracing::info!(node = ?node, "node connected");
                } else {
                    tracing::info!(node = ?node, "node reconnected");
                }
                self.orchestrator.handle_node_connected(&node, at);
            }
            Reported::Lost => {
                tracing::warn!(node = ?node, "node connection lost");
                self.retire_link(&node);
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
                    let (commands, rx) = mpsc::unbounded_channel();
                    let stats = StatsSlot::default();
                    let span = tracing::info_span!("dcp.node", node = ?kv.address);
                    let task = tokio::spawn(tracing::Instrument::instrument(
                        node_task(
                            kv.address.clone(),
                            Route {
                                dial: self.dial.clone(),
                                target: self.dial.target(&kv),
                            },
                            self.generation,
                            self.config.clone(),
                            rx,
                            self.sender.clone(),
                            stats.clone(),
                        ),
                        span,
                    ));
                    self.retire_link(&kv.address);
                    self.links.insert(
                        kv.address,
                        Link {
                            generation: self.generation,
                            commands,
                            task,
                            stats,
                        },
                    );
                }
                Action::Disconnect(node) => {
                    self.retire_link(&node);
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
                    self.command(&node, Command::Close(vbucket))
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
            let _ = link.commands.send(command);
        }
    }

    /// Fetches a config from the seeds in the background (no node is
    /// connected); the answer arrives as a generation-0 report.
    fn fetch_from_seed(&mut self) {
        if self.seed_fetch.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let seeds = self.seeds.clone();
        let config = self.config.clone();
        let sender = self.sender.clone();
        let dial = self.dial.clone();
        self.seed_fetch = Some(tokio::spawn(async move {
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

impl Drop for ClusterConnection {
    fn drop(&mut self) {
        if let Some(task) = &self.seed_fetch {
            task.abort();
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

/// Connects to one node, asks for the bucket config and returns it.
async fn fetch_config(
    dial: &Dial,
    host: &str,
    port: u16,
    config: &ConsumerConfig,
) -> Result<Vec<u8>, Error> {
    let mut config = config.clone();
    config.connection_name = format!("{}/config", config.connection_name);
    let timeout = config.handshake_timeout.max(Duration::from_secs(1));
    let mut conn = dial.connect(host, port, config).await?;
    conn.request_cluster_config()?;
    let wait = async {
        while let Some(event) = conn.next_event().await? {
            if let Event::ClusterConfig { status, config } = event {
                if status.is_success() && !config.is_empty() {
                    return Ok(config.to_vec());
                }
                break;
            }
        }
        Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "the node returned no bucket config",
        )))
    };
    let result = tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or_else(|_| {
            Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no bucket config in time",
            )))
        });
    conn.close();
    result
}

/// How to reach a node: `dial` to `target` (none: no address to reach it
/// at).
struct Route {
    dial: Dial,
    target: Option<NodeAddress>,
}

/// Owns one node's connection (made along `route`): carries out commands,
/// reports events.
async fn node_task(
    node: NodeAddress,
    Route { dial, target }: Route,
    generation: u64,
    config: ConsumerConfig,
    mut commands: mpsc::UnboundedReceiver<Command>,
    reports: mpsc::Sender<Report>,
    stats: StatsSlot,
) {
    let report = |what| Report {
        node: node.clone(),
        generation,
        what,
    };
    let connected = match &target {
        Some(target) => dial.connect(target.host(), target.port(), config).await,
        None => Err(Error::TlsConfig(format!(
            "node {node} lists no kvSSL port for a TLS connection"
        ))),
    };
    let mut conn = match connected {
        Ok(conn) => conn,
        Err(_) => {
            let _ = reports.send(report(Reported::Lost)).await;
            return;
        }
    };
    if reports.send(report(Reported::Connected)).await.is_err() {
        return;
    }
    let publish = |conn: &Connection| {
        if let Ok(mut slot) = stats.lock() {
            slot.connection = conn.stats();
            slot.streams.clear();
            let streams = conn.consumer().all_stream_stats();
            slot.streams
                .extend(streams.map(|(key, stats)| (key.vbucket(), stats)));
        }
    };
    let mut published = tokio::time::Instant::now();
    let mut dirty = false;
    publish(&conn);
    loop {
        if dirty && published.elapsed() >= STATS_EVERY {
            publish(&conn);
            published = tokio::time::Instant::now();
            dirty = false;
        }
        tokio::select! {
            // Counters changed since the last publication: publish them
            // once they are due, even if nothing else happens.
            () = tokio::time::sleep_until(published + STATS_EVERY), if dirty => continue,
            command = commands.recv() => {
                let ok = match command {
                    None => {
                        conn.close();
                        publish(&conn);
                        return;
                    }
                    Some(Command::Open { vbucket, start, end }) => conn.open_stream(vbucket, start, end).is_ok(),
                    // Already ended is fine: its end event is on its way.
                    Some(Command::Close(vbucket)) => { let _ = conn.close_stream(vbucket); true }
                    Some(Command::RefreshConfig) => { let _ = conn.request_cluster_config(); true }
                };
                dirty = true;
                if !ok {
                    publish(&conn);
                    let _ = reports.send(report(Reported::Lost)).await;
                    return;
                }
            }
            event = conn.next_event() => match event {
                Ok(Some(event)) => {
                    dirty = true;
                    let position = match &event {
                        Event::StreamOpened { vbucket, .. } => conn.position(*vbucket),
                        _ => None,
                    };
                    if reports.send(report(Reported::Event(Box::new(event), position))).await.is_err() {
                        return;
                    }
                }
                Ok(None) | Err(_) => {
                    publish(&conn);
                    let _ = reports.send(report(Reported::Lost)).await;
                    return;
                }
            },
        }
    }
}

/// The counters of a connection that no longer runs: it holds nothing and
/// has nothing open.
fn stopped(mut last: ConnectionStats) -> ConnectionStats {
    last.streams_open = 0;
    last.unacked_bytes = 0;
    last.held_bytes = 0;
    last.connections = 0;
    last
}
