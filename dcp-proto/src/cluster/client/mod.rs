//! [`ClusterClient`]: a whole bucket streamed from a cluster, sans-IO. It
//! owns the [`ClusterOrchestrator`] and one [`Consumer`] per data node and
//! carries out the orchestrator's driving contract itself; the adapter only
//! opens sockets when asked and moves bytes and time.

mod link;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::Bound;
use std::time::Instant;

use bytes::BytesMut;

pub use link::{BootstrapError, LinkId, Output};
use link::{Link, Role, State, stopped};

use crate::auth::Mechanism;
use crate::cluster::{
    Action, ClusterConfig, ClusterOrchestrator, ConfigOutcome, ConnectionString, NodeAddress,
    OrchestratorConfig, StreamFailure,
};
use crate::consumer::{ConnectionStats, Consumer, ConsumerConfig, Event, StreamStats};
use crate::session::{Checkpoint, StreamPosition};

/// Streams a bucket from a whole cluster as one event stream, across
/// rebalances, failovers, node additions and removals and lost
/// connections, with one cluster-wide [`Checkpoint`]. Sans-IO: every input
/// takes `now`, nothing reads a clock, nothing blocks.
///
/// It bootstraps from seed nodes (a one-off connection to each in turn
/// until one returns the bucket config), then runs the
/// [`ClusterOrchestrator`] over one [`Consumer`] per data node: it opens,
/// closes and moves streams, fetches configs (from a connected node, or
/// from the seeds when none is), drops the stale events of streams that
/// moved, reports positions of streams started "now" and adds up the
/// connections' counters.
///
/// # Driving contract
///
/// 1. After any input and after taking events, drain
///    [`poll_output`](Self::poll_output) (open or close sockets:
///    [`Output`]) and [`poll_transmit`](Self::poll_transmit) (bytes to send
///    on one link) until both return `None`: taking events queues
///    acknowledgements, config requests and new connections too.
/// 2. Report sockets with [`handle_connected`](Self::handle_connected)
///    (with a fresh SCRAM nonce), [`handle_input`](Self::handle_input) and
///    [`handle_lost`](Self::handle_lost) (connect failed, EOF, read or
///    write error).
/// 3. Take the application's events with [`poll_event`](Self::poll_event):
///    events of each vbucket's current stream, in the producer's order per
///    vbucket, interleaved across nodes. Flow control is acknowledged as
///    they are taken (`auto_ack` is forced on), so an application that
///    stops taking events stops the producers after a window's worth per
///    node: nothing here buffers more than that.
/// 4. Sleep until [`poll_timeout`](Self::poll_timeout) or socket input;
///    then call [`handle_timeout`](Self::handle_timeout).
/// 5. Persist [`checkpoint`](Self::checkpoint) with the data the events
///    produced; resume from it.
///
/// With [consistent snapshots](ConsumerConfig::with_consistent_snapshots)
/// each node's consumer holds a snapshot until it is complete, and a
/// released snapshot is handed out whole: the events of other nodes wait
/// until its [`Event::SnapshotComplete`].
///
/// Node connections, losses and config changes are logged with
/// [`tracing`] (target `dcp_proto::cluster::client`; no user data); each
/// consumer runs in a `dcp.node` span (`node`, `link`), a seed's config
/// fetch in a `dcp.seed` span.
///
/// ```
/// use std::time::Instant;
/// use dcp_proto::cluster::{ClusterClient, ConnectionString, OrchestratorConfig, Output};
/// use dcp_proto::consumer::ConsumerConfig;
/// use dcp_proto::session::Checkpoint;
///
/// let now = Instant::now();
/// let seeds = ConnectionString::parse("couchbase://10.0.0.1,10.0.0.2/travel")?;
/// let mut client = ClusterClient::new(
///     &seeds,
///     ConsumerConfig::new("my-app", "default"),
///     OrchestratorConfig::new(),
///     Checkpoint::new(),
///     now,
/// );
/// // First a connection to the first seed, to fetch the bucket config.
/// let Some(Output::Connect { link, target, tls, .. }) = client.poll_output() else {
///     unreachable!()
/// };
/// assert_eq!((target.to_string(), tls), ("10.0.0.1:11210".to_owned(), false));
/// // The socket is open: the consumer's handshake starts.
/// client.handle_connected(link, "c2NyYW0tbm9uY2U", now);
/// let mut buf = bytes::BytesMut::new();
/// assert_eq!(client.poll_transmit(&mut buf), Some(link)); // HELLO, ...
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ClusterClient {
    orchestrator: ClusterOrchestrator,
    /// The consumers' configuration (each gets its own connection name).
    config: ConsumerConfig,
    seeds: Vec<NodeAddress>,
    tls: bool,
    links: BTreeMap<LinkId, Link>,
    /// The link serving each node.
    by_node: BTreeMap<NodeAddress, LinkId>,
    next_link: u64,
    outputs: VecDeque<Output>,
    /// The seed fetch under way: the index of the next seed to try, and
    /// the link asking the current one.
    seed_round: Option<(usize, Option<LinkId>)>,
    bootstrap_error: Option<BootstrapError>,
    bootstrap_failed: bool,
    /// [`close`](Self::close) was called.
    closed: bool,
    /// Where the search for the next event starts (fairness across nodes).
    cursor: Option<LinkId>,
    /// With consistent snapshots: the link whose released snapshot is
    /// being handed out (its events come first, so that one vbucket's
    /// snapshot is handed out whole before another's).
    batch: Option<LinkId>,
    /// With consistent snapshots: the position of each vbucket whose
    /// snapshot is being handed out as it was before that snapshot (what
    /// the checkpoint says until its `SnapshotComplete`).
    before_snapshot: BTreeMap<u16, StreamPosition>,
    done: Vec<u16>,
    failed: Vec<(u16, StreamFailure)>,
    /// Counters of node connections no longer running.
    gone: ConnectionStats,
    /// Node connections that became ready, and the nodes they were to.
    connects: u64,
    nodes_seen: HashSet<NodeAddress>,
}

impl ClusterClient {
    /// A client for the bucket of `connection_string` (its bucket, if
    /// named, replaces `config.bucket`; see
    /// [`ConnectionString::configure`]), resuming from `checkpoint`. Its
    /// first output asks for a connection to the first seed.
    ///
    /// With `couchbases://` every connection is TLS (to the nodes'
    /// `kvSSL` ports; a node listed without one is not connected to) and
    /// SASL `PLAIN` is allowed inside it.
    pub fn new(
        connection_string: &ConnectionString,
        mut config: ConsumerConfig,
        mut settings: OrchestratorConfig,
        checkpoint: Checkpoint,
        now: Instant,
    ) -> Self {
        connection_string.configure(&mut config, &mut settings);
        config.auto_ack = true;
        if settings.filter.is_some() {
            // Filtered streams need collection-aware connections.
            config.collections = true;
        }
        if connection_string.tls && !config.mechanisms.contains(&Mechanism::Plain) {
            // Inside TLS the password may travel as PLAIN, as Couchbase's
            // own clients allow.
            config.mechanisms.push(Mechanism::Plain);
        }
        let seeds = connection_string
            .seeds
            .iter()
            .map(|(host, port)| NodeAddress::new(host.clone(), *port))
            .collect();
        let mut this = Self {
            orchestrator: ClusterOrchestrator::new(settings, checkpoint),
            config,
            seeds,
            tls: connection_string.tls,
            links: BTreeMap::new(),
            by_node: BTreeMap::new(),
            next_link: 0,
            outputs: VecDeque::new(),
            seed_round: None,
            bootstrap_error: None,
            bootstrap_failed: false,
            closed: false,
            cursor: None,
            batch: None,
            before_snapshot: BTreeMap::new(),
            done: Vec::new(),
            failed: Vec::new(),
            gone: ConnectionStats::default(),
            connects: 0,
            nodes_seen: HashSet::new(),
        };
        this.start_seed_round(now);
        this
    }

    // ----- getters -------------------------------------------------------

    /// The orchestrator (config in force, vbucket and node status).
    pub fn orchestrator(&self) -> &ClusterOrchestrator {
        &self.orchestrator
    }

    /// The bucket config in force (`None` until bootstrapped).
    pub fn config(&self) -> Option<&ClusterConfig> {
        self.orchestrator.config()
    }

    /// Whether bootstrapping failed: every seed was tried and none
    /// returned a usable config (the client does nothing more).
    pub fn bootstrap_failed(&self) -> bool {
        self.bootstrap_failed
    }

    /// Why bootstrapping failed (the last seed's failure), taken once.
    pub fn take_bootstrap_error(&mut self) -> Option<BootstrapError> {
        self.bootstrap_error.take()
    }

    /// The configuration each node's consumer starts from (as adjusted
    /// for the cluster: `auto_ack` on, config push, ...).
    pub fn consumer_config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Whether every selected vbucket reached its end seqno or failed (or
    /// bootstrapping failed, or the client was closed): nothing more will
    /// happen.
    pub fn is_finished(&self) -> bool {
        self.closed
            || self.bootstrap_failed
            || (self.orchestrator.config().is_some() && self.orchestrator.is_finished())
    }

    /// Every selected vbucket's position as of the events handed out
    /// (with consistent snapshots: as of the last complete snapshot handed
    /// out).
    pub fn checkpoint(&self) -> Checkpoint {
        let mut checkpoint = self.orchestrator.checkpoint();
        for (vb, position) in &self.before_snapshot {
            checkpoint.vbuckets.insert(*vb, position.clone());
        }
        checkpoint
    }

    /// Vbuckets that reached their end seqno.
    pub fn done(&self) -> &[u16] {
        &self.done
    }

    /// Vbuckets given up, and why.
    pub fn failed(&self) -> &[(u16, StreamFailure)] {
        &self.failed
    }

    /// The nodes with a link (connecting, connected, or handing out the
    /// last events of a lost connection).
    pub fn connected_nodes(&self) -> Vec<NodeAddress> {
        self.by_node.keys().cloned().collect()
    }

    /// The consumer of a node's link, once its socket is open.
    pub fn node_consumer(&self, node: &NodeAddress) -> Option<&Consumer> {
        self.links.get(self.by_node.get(node)?)?.consumer()
    }

    /// Counters of every node connection added up, including connections
    /// since closed or lost (their byte, frame, item and ack counts; not
    /// what they held): `connections` is the number of node connections
    /// that completed their handshake and run now, `reconnects` the
    /// connections made to a node that had been connected to before. Seed
    /// config fetches are not counted.
    pub fn stats(&self) -> ConnectionStats {
        let mut total = self.gone;
        for link in self.links.values() {
            if link.node().is_none() {
                continue;
            }
            if let Some(consumer) = link.consumer() {
                let mut stats = consumer.stats();
                if !matches!(link.state, State::Open(_)) || !link.ready || consumer.is_closed() {
                    stats = stopped(stats);
                }
                total.merge(&stats);
            }
        }
        total.reconnects = self.connects.saturating_sub(self.nodes_seen.len() as u64);
        total
    }

    /// A vbucket's stream counters, added up over the node connections
    /// that streamed it and still have a consumer (a stream that moved
    /// counts on its old node until that connection closes).
    pub fn stream_stats(&self, vbucket: u16) -> Option<StreamStats> {
        let mut found: Option<StreamStats> = None;
        for link in self.links.values().filter(|l| l.node().is_some()) {
            if let Some(stats) = link.consumer().and_then(|c| c.stream_stats(vbucket)) {
                found.get_or_insert_with(StreamStats::default).merge(&stats);
            }
        }
        found
    }

    // ----- outputs -------------------------------------------------------

    /// The next socket to open or close, if any.
    pub fn poll_output(&mut self) -> Option<Output> {
        self.outputs.pop_front()
    }

    /// Appends one link's bytes to send to `buf` and returns the link;
    /// `None` when no link has anything to send.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> Option<LinkId> {
        for (id, link) in &mut self.links {
            if let Some(consumer) = link.open_mut()
                && consumer.wants_transmit()
            {
                consumer.poll_transmit(buf);
                return Some(*id);
            }
        }
        None
    }

    /// The next event for the application, if any: changes, snapshot
    /// markers, rollbacks, stream opens and ends of each vbucket's current
    /// stream. Its position is now covered by
    /// [`checkpoint`](Self::checkpoint); its flow-control credit is
    /// acknowledged.
    pub fn poll_event(&mut self, now: Instant) -> Option<Event> {
        loop {
            let mut ids: Vec<LinkId> = match self.cursor {
                Some(cursor) => {
                    let after = self
                        .links
                        .range((Bound::Excluded(cursor), Bound::Unbounded))
                        .map(|(id, _)| *id);
                    let before = self.links.range(..=cursor).map(|(id, _)| *id);
                    after.chain(before).collect()
                }
                None => self.links.keys().copied().collect(),
            };
            if let Some(batch) = self.batch {
                ids.retain(|id| *id != batch);
                ids.insert(0, batch);
            }
            let mut progressed = false;
            for id in ids {
                let Some(link) = self.links.get_mut(&id) else {
                    continue;
                };
                let draining = matches!(link.state, State::Draining(_));
                let span = link.span.clone();
                let Some(consumer) = link.consumer_mut() else {
                    continue;
                };
                let Some(event) = span.in_scope(|| consumer.poll_event()) else {
                    if draining {
                        self.finish_lost(id, now);
                        progressed = true;
                    }
                    continue;
                };
                let position = match &event {
                    Event::StreamOpened { vbucket, .. } => consumer.position(*vbucket),
                    _ => None,
                };
                progressed = true;
                self.cursor = Some(id);
                let consistent = consumer.config().consistent_snapshots.is_some();
                let before = match &event {
                    Event::SnapshotMarker(marker, _) if consistent => {
                        self.batch = Some(id);
                        self.orchestrator
                            .position(marker.vbucket)
                            .map(|p| (marker.vbucket, p))
                    }
                    Event::SnapshotComplete { .. } => {
                        self.batch = None;
                        None
                    }
                    _ => None,
                };
                let handed = self.on_event(id, event, position, now);
                match &handed {
                    Some(Event::SnapshotMarker(..)) => {
                        if let Some((vb, position)) = before {
                            self.before_snapshot.entry(vb).or_insert(position);
                        }
                    }
                    Some(
                        Event::SnapshotComplete { vbucket, .. } | Event::Rollback { vbucket, .. },
                    ) => {
                        self.before_snapshot.remove(vbucket);
                    }
                    _ => {}
                }
                self.act(now);
                if handed.is_some() {
                    return handed;
                }
            }
            if !progressed {
                return None;
            }
        }
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closed {
            return None;
        }
        let links = self.links.values().filter_map(|link| match &link.state {
            State::Connecting { deadline } => Some(*deadline),
            State::Open(consumer) => consumer.poll_timeout(),
            State::Draining(_) => None,
        });
        links.chain(self.orchestrator.poll_timeout()).min()
    }

    // ----- inputs --------------------------------------------------------

    /// The adapter's socket for `link` is open (TCP and, if asked, TLS):
    /// its consumer starts the handshake. `sasl_nonce` is a fresh SCRAM
    /// client nonce (random printable ASCII without `,`).
    pub fn handle_connected(&mut self, link: LinkId, sasl_nonce: &str, now: Instant) {
        let Some(entry) = self.links.get_mut(&link) else {
            return;
        };
        if !matches!(entry.state, State::Connecting { .. }) {
            return;
        }
        let mut config = self.config.clone();
        config.connection_name = match &entry.role {
            Role::Node(_) => self.config.connection_name.clone(),
            Role::Seed(_) => format!("{}/config", self.config.connection_name),
        };
        match entry
            .span
            .in_scope(|| Consumer::new(config, sasl_nonce, now))
        {
            Ok(consumer) => entry.state = State::Open(Box::new(consumer)),
            Err(error) => {
                tracing::warn!(%link, %error, "cannot start a consumer");
                self.link_failed(link, Some(error), now);
            }
        }
        self.act(now);
    }

    /// Bytes received on `link`'s socket: whole frames are taken from
    /// `rx`, the rest stays for the next call. A protocol violation closes
    /// the link (a `Disconnect` follows).
    pub fn handle_input(&mut self, link: LinkId, rx: &mut BytesMut, now: Instant) {
        let Some(entry) = self.links.get_mut(&link) else {
            return;
        };
        let span = entry.span.clone();
        let Some(consumer) = entry.open_mut() else {
            return;
        };
        if let Err(error) = span.in_scope(|| consumer.handle_input(rx, now)) {
            self.link_failed(link, Some(error), now);
        }
        self.act(now);
    }

    /// `link`'s socket could not be made, was closed by the peer or
    /// failed. Events its consumer already holds are still handed out; the
    /// node is then reported lost and reconnected with backoff while a
    /// config still needs it.
    pub fn handle_lost(&mut self, link: LinkId, now: Instant) {
        self.link_failed(link, None, now);
        self.act(now);
    }

    /// A deadline from [`poll_timeout`](Self::poll_timeout) passed:
    /// consumers' timers (noops, dead connections, handshakes, acks),
    /// connections not made in time, the orchestrator's retries,
    /// reconnections and config polls.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<LinkId> = self
            .links
            .iter()
            .filter(|(_, link)| match &link.state {
                State::Connecting { deadline } => *deadline <= now,
                State::Open(consumer) => consumer.poll_timeout().is_some_and(|at| at <= now),
                State::Draining(_) => false,
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(link) = self.links.get_mut(&id) else {
                continue;
            };
            let span = link.span.clone();
            let failed = match &mut link.state {
                State::Connecting { .. } => {
                    let target = link.role.address();
                    tracing::warn!(link = %id, %target, "connection not made in time");
                    Some(None)
                }
                State::Open(consumer) => span
                    .in_scope(|| consumer.handle_timeout(now))
                    .err()
                    .map(Some),
                State::Draining(_) => None,
            };
            if let Some(error) = failed {
                self.link_failed(id, error, now);
            }
        }
        if self.orchestrator.poll_timeout().is_some_and(|at| at <= now) {
            self.orchestrator.handle_timeout(now);
        }
        self.act(now);
    }

    /// Closes every connection (a `Disconnect` for each, events not yet
    /// taken are dropped); the client does nothing more.
    pub fn close(&mut self) {
        self.closed = true;
        let ids: Vec<LinkId> = self.links.keys().copied().collect();
        for id in ids {
            self.drop_link(id);
        }
        self.seed_round = None;
    }

    // ----- internals -----------------------------------------------------

    fn new_link(&mut self, role: Role, target: Option<NodeAddress>, now: Instant) -> LinkId {
        self.next_link += 1;
        let id = LinkId(self.next_link);
        let deadline = now + self.config.handshake_timeout;
        let node = role.address().clone();
        let span = match &role {
            Role::Node(address) => {
                self.by_node.insert(address.clone(), id);
                tracing::info_span!("dcp.node", node = %address, link = %id)
            }
            Role::Seed(address) => tracing::info_span!("dcp.seed", seed = %address, link = %id),
        };
        self.links.insert(
            id,
            Link {
                role,
                state: State::Connecting { deadline },
                ready: false,
                span,
            },
        );
        match target {
            Some(target) => {
                tracing::debug!(link = %id, %node, %target, tls = self.tls, "connecting");
                self.outputs.push_back(Output::Connect {
                    link: id,
                    node,
                    target,
                    tls: self.tls,
                });
            }
            None => {
                tracing::warn!(%node, "the config lists no kvSSL port for a TLS connection");
                self.link_failed(id, None, now);
            }
        }
        id
    }

    /// Forgets a link, keeping its counters, and asks for its socket to
    /// be closed.
    fn drop_link(&mut self, id: LinkId) {
        let Some(link) = self.links.remove(&id) else {
            return;
        };
        if self.batch == Some(id) {
            self.batch = None;
        }
        if let Role::Node(node) = &link.role
            && self.by_node.get(node) == Some(&id)
        {
            self.by_node.remove(node);
        }
        if link.node().is_some()
            && let Some(consumer) = link.consumer()
        {
            self.gone.merge(&stopped(consumer.stats()));
        }
        self.outputs.push_back(Output::Disconnect { link: id });
    }

    /// A link failed (`error` from its consumer, or its socket): a seed
    /// fetch moves on to the next seed; a node link drains its events,
    /// then its node is reported lost.
    fn link_failed(
        &mut self,
        id: LinkId,
        error: Option<crate::consumer::ConsumerError>,
        now: Instant,
    ) {
        let Some(link) = self.links.get_mut(&id) else {
            return;
        };
        match link.role.clone() {
            Role::Seed(seed) => {
                self.drop_link(id);
                self.seed_failed(
                    id,
                    match error {
                        Some(error) => BootstrapError::Handshake { seed, error },
                        None => BootstrapError::Unreachable { seed },
                    },
                    now,
                );
            }
            Role::Node(node) => {
                match std::mem::replace(&mut link.state, State::Connecting { deadline: now }) {
                    State::Open(mut consumer) => {
                        consumer.handle_eof();
                        let pending = consumer.pending_events();
                        link.state = State::Draining(consumer);
                        match &error {
                            Some(error) => tracing::warn!(%node, %error, "node connection lost"),
                            None => tracing::warn!(%node, "node connection lost"),
                        }
                        if pending == 0 {
                            self.finish_lost(id, now);
                        } else {
                            // Its events are handed out first.
                            self.outputs.push_back(Output::Disconnect { link: id });
                        }
                    }
                    draining @ State::Draining(_) => link.state = draining,
                    State::Connecting { .. } => {
                        tracing::warn!(%node, "cannot connect to node");
                        self.finish_lost(id, now);
                    }
                }
            }
        }
    }

    /// A lost node link handed out its last event: forget it and report
    /// the node lost.
    fn finish_lost(&mut self, id: LinkId, now: Instant) {
        let Some(Role::Node(node)) = self.links.get(&id).map(|l| l.role.clone()) else {
            return;
        };
        let current = self.by_node.get(&node) == Some(&id);
        self.drop_link(id);
        if current {
            self.orchestrator.handle_node_lost(&node, now);
        }
    }

    /// Feeds one consumer event; returns it if the application should see
    /// it.
    fn on_event(
        &mut self,
        id: LinkId,
        event: Event,
        position: Option<StreamPosition>,
        now: Instant,
    ) -> Option<Event> {
        let link = self.links.get_mut(&id)?;
        let role = link.role.clone();
        match role {
            Role::Seed(seed) => {
                match event {
                    Event::Ready(_) => {
                        let refused = link
                            .open_mut()
                            .is_some_and(|c| c.request_cluster_config().is_err());
                        if refused {
                            self.drop_link(id);
                            self.seed_failed(id, BootstrapError::Unreachable { seed }, now);
                        }
                    }
                    Event::ClusterConfig { status, config } => {
                        self.drop_link(id);
                        if !status.is_success() || config.is_empty() {
                            self.seed_failed(id, BootstrapError::NoConfig { seed }, now);
                        } else {
                            match self.apply_config(&config, seed.host(), now) {
                                Ok(()) => self.seed_round = None,
                                Err(error) => {
                                    let error = BootstrapError::Rejected { seed, error };
                                    self.seed_failed(id, error, now);
                                }
                            }
                        }
                    }
                    _ => {}
                }
                None
            }
            Role::Node(node) => {
                if self.by_node.get(&node) != Some(&id) {
                    return None;
                }
                match event {
                    Event::Ready(_) => {
                        link.ready = true;
                        self.connects += 1;
                        if self.nodes_seen.insert(node.clone()) {
                            tracing::info!(%node, "node connected");
                        } else {
                            tracing::info!(%node, "node reconnected");
                        }
                        self.orchestrator.handle_node_connected(&node, now);
                        None
                    }
                    Event::ClusterConfig { status, config } => {
                        if status.is_success() && !config.is_empty() {
                            let _ = self.apply_config(&config, node.host(), now);
                        }
                        None
                    }
                    event => self
                        .orchestrator
                        .handle_node_event(&node, event, position, now),
                }
            }
        }
    }

    /// Passes a config to the orchestrator, logging what became of it.
    fn apply_config(
        &mut self,
        json: &[u8],
        source_host: &str,
        now: Instant,
    ) -> Result<(), crate::cluster::ConfigRejected> {
        match self.orchestrator.handle_config(json, source_host, now) {
            Ok(ConfigOutcome::Applied(version)) => {
                let nodes = self.orchestrator.config().map_or(0, |c| c.kv_nodes().len());
                tracing::info!(
                    ?version,
                    nodes,
                    from = source_host,
                    "cluster config applied"
                );
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(error) => {
                tracing::warn!(%error, from = source_host, "cluster config refused");
                Err(error)
            }
        }
    }

    /// Starts asking the seeds for a config, unless that is under way.
    fn start_seed_round(&mut self, now: Instant) {
        if self.seed_round.is_some() {
            return;
        }
        self.seed_round = Some((0, None));
        self.next_seed(None, now);
    }

    /// The seed asked on `link` failed.
    fn seed_failed(&mut self, link: LinkId, error: BootstrapError, now: Instant) {
        if self
            .seed_round
            .is_some_and(|(_, current)| current == Some(link))
        {
            tracing::warn!(%error, "config fetch from a seed failed");
            self.next_seed(Some(error), now);
        }
    }

    /// Asks the next seed; after the last one, the round ends (and with no
    /// config yet, bootstrapping failed with `last`).
    fn next_seed(&mut self, last: Option<BootstrapError>, now: Instant) {
        let Some((next, _)) = self.seed_round else {
            return;
        };
        let Some(seed) = self.seeds.get(next).cloned() else {
            self.seed_round = None;
            if self.orchestrator.config().is_none() {
                let error = last.unwrap_or(BootstrapError::NoSeeds);
                tracing::error!(%error, "bootstrap failed: no seed returned the bucket config");
                self.bootstrap_error = Some(error);
                self.bootstrap_failed = true;
            }
            return;
        };
        // A seed link is never refused synchronously: it has a target.
        let id = self.new_link(Role::Seed(seed.clone()), Some(seed), now);
        self.seed_round = Some((next + 1, Some(id)));
    }

    /// Carries out the orchestrator's actions.
    fn act(&mut self, now: Instant) {
        while let Some(action) = self.orchestrator.poll_action() {
            if self.closed {
                continue;
            }
            match action {
                Action::Connect(kv) => {
                    if let Some(old) = self.by_node.get(&kv.address).copied() {
                        self.drop_link(old);
                    }
                    let target = if self.tls {
                        kv.tls_address()
                    } else {
                        Some(kv.address.clone())
                    };
                    self.new_link(Role::Node(kv.address), target, now);
                }
                Action::Disconnect(node) => {
                    if let Some(id) = self.by_node.get(&node).copied() {
                        tracing::info!(%node, "node no longer needed: disconnecting");
                        self.drop_link(id);
                    }
                }
                Action::OpenStream {
                    node,
                    vbucket,
                    start,
                    end,
                } => {
                    let Some(id) = self.by_node.get(&node).copied() else {
                        continue;
                    };
                    let filter = self.orchestrator.settings().filter.clone();
                    let opened = self.links.get_mut(&id).and_then(|link| {
                        let span = link.span.clone();
                        let consumer = link.open_mut()?;
                        Some(span.in_scope(|| match filter {
                            Some(filter) => {
                                consumer.open_filtered_stream(vbucket, start, end, filter)
                            }
                            None => consumer.open_stream(vbucket, start, end),
                        }))
                    });
                    if let Some(Err(error)) = opened {
                        tracing::warn!(%node, vb = vbucket, %error, "cannot open a stream: dropping the connection");
                        self.link_failed(id, None, now);
                    }
                }
                Action::CloseStream { node, vbucket } => {
                    if let Some(consumer) = self
                        .by_node
                        .get(&node)
                        .and_then(|id| self.links.get_mut(id))
                        .and_then(Link::open_mut)
                    {
                        // Already ended is fine: its end event is on its way.
                        let _ = consumer.close_stream(vbucket);
                    }
                }
                Action::RefreshConfig { via } => {
                    let consumer = via
                        .as_ref()
                        .and_then(|node| self.by_node.get(node))
                        .and_then(|id| self.links.get_mut(id))
                        .and_then(Link::open_mut);
                    match consumer {
                        Some(consumer) => {
                            if consumer.request_cluster_config().is_err() {
                                self.start_seed_round(now);
                            }
                        }
                        None => self.start_seed_round(now),
                    }
                }
                Action::StreamDone { vbucket } => {
                    tracing::info!(vb = vbucket, "vbucket reached its end seqno");
                    self.done.push(vbucket);
                }
                Action::Fail { vbucket, reason } => {
                    tracing::warn!(vb = vbucket, ?reason, "vbucket given up");
                    self.failed.push((vbucket, reason));
                }
            }
        }
    }
}
