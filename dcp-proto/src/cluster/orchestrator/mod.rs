//! A sans-IO orchestrator over one consumer connection per data node.
//!
//! [`ClusterOrchestrator`] decides which nodes to connect to, which
//! vbucket streams to open where and from which position, when to fetch
//! the bucket config, and how to recover when the topology changes. The
//! adapter owns the sockets and the per-node
//! [`Consumer`](crate::consumer::Consumer)s, feeds it what happens and
//! carries out its [`Action`]s. See the [cluster module](crate::cluster)
//! for the driving contract.

mod action;
mod nodes;
mod plan;
mod reactions;
mod settings;
mod vbuckets;

use std::collections::{BTreeMap, VecDeque};
use std::time::Instant;

pub use action::{Action, ConfigOutcome, ConfigRejected, StreamFailure};
pub use nodes::NodeStatus;
pub use settings::{InitialStart, OrchestratorConfig, VbucketSelection};
pub use vbuckets::VbucketStatus;

use self::nodes::NodeSlot;
use self::settings::backoff;
use self::vbuckets::{Stream, VbSlot};
use super::{ClusterConfig, Network, NodeAddress};
use crate::consumer::Event;
use crate::session::{Checkpoint, StreamPosition};

/// When to fetch the config next.
#[derive(Debug, Clone, Default)]
struct Refresh {
    /// An event asked for a fetch.
    wanted: bool,
    /// The last fetch asked of the adapter.
    last: Option<Instant>,
    /// The periodic fetch.
    next_poll: Option<Instant>,
    /// Round-robin over connected nodes.
    rotation: usize,
}

/// Streams a bucket from a cluster through one consumer per node, across
/// rebalances, failovers and lost connections, without losing a position.
///
/// Methods fall in four groups (see the [module docs](crate::cluster) for
/// the driving loop):
/// - inputs: [`handle_config`](Self::handle_config),
///   [`handle_node_connected`](Self::handle_node_connected),
///   [`handle_node_lost`](Self::handle_node_lost),
///   [`handle_stream_event`](Self::handle_stream_event),
///   [`handle_position`](Self::handle_position),
///   [`handle_timeout`](Self::handle_timeout);
/// - commands: [`request_config_refresh`](Self::request_config_refresh);
/// - outputs: [`poll_action`](Self::poll_action),
///   [`poll_timeout`](Self::poll_timeout);
/// - getters: [`checkpoint`](Self::checkpoint), [`config`](Self::config),
///   [`vbucket_status`](Self::vbucket_status),
///   [`node_status`](Self::node_status), ...
#[derive(Debug, Clone)]
pub struct ClusterOrchestrator {
    settings: OrchestratorConfig,
    config: Option<ClusterConfig>,
    /// Positions to start from, until the first config creates the slots.
    initial: Checkpoint,
    vbuckets: BTreeMap<u16, VbSlot>,
    nodes: BTreeMap<NodeAddress, NodeSlot>,
    actions: VecDeque<Action>,
    refresh: Refresh,
    finished: bool,
    /// The network in use, once decided (from the first config's source
    /// when the settings say `Auto`).
    network: Option<Network>,
}

impl ClusterOrchestrator {
    /// An orchestrator resuming from `checkpoint` (positions of vbuckets
    /// outside the selection are ignored; pass `Checkpoint::new()` to
    /// start afresh). Nothing happens before the first config.
    pub fn new(settings: OrchestratorConfig, checkpoint: Checkpoint) -> Self {
        Self {
            settings,
            config: None,
            initial: checkpoint,
            vbuckets: BTreeMap::new(),
            nodes: BTreeMap::new(),
            actions: VecDeque::new(),
            refresh: Refresh::default(),
            finished: false,
            network: None,
        }
    }

    // ----- getters -------------------------------------------------------

    /// The settings.
    pub fn settings(&self) -> &OrchestratorConfig {
        &self.settings
    }

    /// The config in force.
    pub fn config(&self) -> Option<&ClusterConfig> {
        self.config.as_ref()
    }

    /// Every selected vbucket's position as of the events accepted by
    /// [`handle_stream_event`](Self::handle_stream_event): persist it with
    /// the data those events produced, and resume from it with
    /// [`new`](Self::new). A vbucket started "now" appears once its
    /// position is known.
    pub fn checkpoint(&self) -> Checkpoint {
        if self.config.is_none() {
            return self.initial.clone();
        }
        let mut checkpoint = Checkpoint::new();
        for (vb, slot) in &self.vbuckets {
            if let Some(position) = slot.position() {
                checkpoint.vbuckets.insert(*vb, position);
            }
        }
        checkpoint
    }

    /// One vbucket's position, if it is selected and its position known.
    pub fn position(&self, vbucket: u16) -> Option<StreamPosition> {
        self.vbuckets.get(&vbucket).and_then(VbSlot::position)
    }

    /// Where a selected vbucket's stream stands (`None`: not selected, or
    /// no config yet).
    pub fn vbucket_status(&self, vbucket: u16) -> Option<VbucketStatus> {
        self.vbuckets.get(&vbucket).map(VbSlot::status)
    }

    /// The selected vbuckets (known once the first config arrived).
    pub fn vbuckets(&self) -> impl Iterator<Item = u16> + '_ {
        self.vbuckets.keys().copied()
    }

    /// A node connection's state (`None`: no connection wanted).
    pub fn node_status(&self, node: &NodeAddress) -> Option<NodeStatus> {
        self.nodes.get(node).map(|n| n.status)
    }

    /// The nodes a connection is wanted to.
    pub fn nodes(&self) -> impl Iterator<Item = (&NodeAddress, NodeStatus)> + '_ {
        self.nodes.iter().map(|(a, n)| (a, n.status))
    }

    /// Whether every selected vbucket is done or failed: nothing more will
    /// happen.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    // ----- outputs -------------------------------------------------------

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.finished || self.config.is_none() {
            return None;
        }
        let retries = self
            .vbuckets
            .values()
            .filter(|s| s.stream == Stream::Idle)
            .filter_map(|s| s.not_before);
        let reconnects = self.nodes.values().filter_map(NodeSlot::reconnect_at);
        let refresh = self
            .refresh
            .wanted
            .then(|| {
                self.refresh
                    .last
                    .map(|last| last + self.settings.config_refresh_gap)
            })
            .flatten();
        retries
            .chain(reconnects)
            .chain(refresh)
            .chain(self.refresh.next_poll)
            .min()
    }

    // ----- inputs --------------------------------------------------------

    /// A bucket config fetched from (or pushed by) the node at
    /// `source_host` (host only: it replaces `$HOST`). A config newer than
    /// the one in force replaces it; an older or equal one is ignored.
    pub fn handle_config(
        &mut self,
        json: &[u8],
        source_host: &str,
        now: Instant,
    ) -> Result<ConfigOutcome, ConfigRejected> {
        let config = ClusterConfig::parse(json, source_host)?;
        let config = self.adopt_network(config, Some(source_host));
        self.handle_cluster_config(config, now)
    }

    /// Like [`handle_config`](Self::handle_config), with a parsed config.
    pub fn handle_cluster_config(
        &mut self,
        config: ClusterConfig,
        now: Instant,
    ) -> Result<ConfigOutcome, ConfigRejected> {
        let config = self.adopt_network(config, None);
        if let Some(current) = &self.config {
            let other_name = !current.name().is_empty()
                && !config.name().is_empty()
                && current.name() != config.name();
            let other_uuid = !current.uuid().is_empty()
                && !config.uuid().is_empty()
                && current.uuid() != config.uuid();
            if other_name || other_uuid {
                return Err(ConfigRejected::OtherBucket {
                    name: current.name().to_owned(),
                    uuid: current.uuid().to_owned(),
                    got_name: config.name().to_owned(),
                    got_uuid: config.uuid().to_owned(),
                });
            }
            if current.num_vbuckets() != config.num_vbuckets() {
                return Err(ConfigRejected::VbucketCount {
                    expected: current.num_vbuckets(),
                    got: config.num_vbuckets(),
                });
            }
            if config.version() <= current.version() {
                return Ok(ConfigOutcome::Stale {
                    received: config.version(),
                    current: current.version(),
                });
            }
            // Vbuckets waiting out a retry delay go to a new owner at once.
            for (vb, slot) in &mut self.vbuckets {
                let before = current.active_node(*vb).map(|n| &n.address);
                let after = config.active_node(*vb).map(|n| &n.address);
                if slot.stream == Stream::Idle && before != after {
                    slot.not_before = None;
                    slot.attempts = 0;
                }
            }
        } else {
            self.create_slots(&config);
            self.refresh.next_poll = Some(now + self.settings.config_poll_interval);
        }
        for (address, slot) in &mut self.nodes {
            if let Some(node) = config.servers().iter().find(|n| &n.address == address) {
                slot.node = node.clone();
            }
        }
        let version = config.version();
        self.config = Some(config);
        self.pump(now);
        Ok(ConfigOutcome::Applied(version))
    }

    /// The connection to `node` completed its handshake (an
    /// [`Event::Ready`] from its consumer); streams can be opened on it.
    pub fn handle_node_connected(&mut self, node: &NodeAddress, now: Instant) {
        if let Some(slot) = self.nodes.get_mut(node)
            && !slot.is_connected()
        {
            slot.status = NodeStatus::Connected;
            slot.failures = 0;
            slot.closing.clear();
            self.pump(now);
        }
    }

    /// The connection to `node` failed, closed or could not be made. Its
    /// streams are reopened from their positions on whichever node owns
    /// them; the node is retried with backoff while a config still needs
    /// it, and a fresh config is fetched (a node loss may be a failover).
    ///
    /// Feed the connection's remaining events (and positions) first, then
    /// drop its consumer: never feed events of a connection reported lost
    /// (a later connection to the node has a fresh consumer).
    pub fn handle_node_lost(&mut self, node: &NodeAddress, now: Instant) {
        let Some(slot) = self.nodes.get_mut(node) else {
            return;
        };
        slot.closing.clear();
        let delay = backoff(
            self.settings.reconnect_delay,
            self.settings.max_reconnect_delay,
            slot.failures,
        );
        slot.failures = slot.failures.saturating_add(1);
        slot.status = NodeStatus::Reconnecting { at: now + delay };
        for vb in self.vbuckets.values_mut() {
            if vb.node() == Some(node) {
                vb.stream = Stream::Idle;
                vb.not_before = None;
            }
        }
        self.refresh.wanted = true;
        self.pump(now);
    }

    /// An event polled from `node`'s consumer. Returns whether it belongs
    /// to its vbucket's current stream: hand it to the application only
    /// then; otherwise it is stale (its stream was closed or moved, its
    /// node dropped), so drop it, still acknowledging its credit.
    ///
    /// Feed every event, data included: the checkpoint tracks the position
    /// of the events accepted here. Stream ends, failures and rollbacks
    /// are acted upon.
    pub fn handle_stream_event(&mut self, node: &NodeAddress, event: &Event, now: Instant) -> bool {
        if let Event::Ready(_) = event {
            self.handle_node_connected(node, now);
            return true;
        }
        let Some(vb) = event.vbucket() else {
            return true;
        };
        let ends = matches!(
            event,
            Event::StreamEnded { .. } | Event::StreamFailed { .. }
        );
        if ends
            && let Some(slot) = self.nodes.get_mut(node)
            && slot.closing.remove(&vb)
        {
            // The end of a stream we closed: the vbucket may open here again.
            self.pump(now);
            return false;
        }
        let Some(slot) = self.vbuckets.get_mut(&vb) else {
            return false;
        };
        if slot.node() != Some(node) {
            return false;
        }
        match event {
            Event::StreamOpened { failover_log, .. } => {
                slot.stream = Stream::Open(node.clone());
                slot.attempts = 0;
                slot.opened(failover_log);
            }
            Event::Rollback { seqno, .. } => slot.rollback(*seqno),
            Event::StreamFailed { status, body, .. } => {
                if *status == crate::codec::Status::NotMyVbucket
                    && self.follow_not_my_vbucket_config(vb, node, body, now)
                {
                    return true;
                }
                self.on_stream_failed(vb, *status, now);
                self.pump(now);
            }
            Event::StreamEnded { reason, .. } => {
                self.on_stream_ended(vb, *reason, now);
                self.pump(now);
            }
            Event::FailoverLog { .. } => {}
            data => slot.track(data),
        }
        true
    }

    /// The exact position of `vbucket` on `node`'s consumer
    /// (`consumer.position(vbucket)`), adopted if that is where its stream
    /// is. Needed once after [`Event::StreamOpened`] for a stream started
    /// "now" (the consumer resolves "now" itself); harmless otherwise.
    pub fn handle_position(&mut self, node: &NodeAddress, vbucket: u16, position: StreamPosition) {
        if let Some(slot) = self.vbuckets.get_mut(&vbucket)
            && slot.node() == Some(node)
        {
            slot.adopt(position);
        }
    }

    /// Everything a node's consumer produced, in one call: a config answer
    /// is applied, a stream event is tracked (with `position`, the
    /// consumer's `position(vbucket)` taken when the event was polled, for
    /// streams started "now"), and the event comes back if the application
    /// should see it (not stale, not the connection's `Ready`).
    pub fn handle_node_event(
        &mut self,
        node: &NodeAddress,
        event: Event,
        position: Option<StreamPosition>,
        now: Instant,
    ) -> Option<Event> {
        if let Event::ClusterConfig { config, .. } = &event {
            // A bad or stale config is ignored; polling goes on.
            let _ = self.handle_config(config, node.host(), now);
            return None;
        }
        let current = self.handle_stream_event(node, &event, now);
        if let (Event::StreamOpened { vbucket, .. }, Some(position)) = (&event, position) {
            self.handle_position(node, *vbucket, position);
        }
        (current && !matches!(event, Event::Ready(_))).then_some(event)
    }

    /// A deadline from [`poll_timeout`](Self::poll_timeout) passed:
    /// retries, reconnections and config polls fall due.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.pump(now);
    }

    // ----- commands ------------------------------------------------------

    /// Asks for a config fetch soon (e.g. the server signalled a change
    /// without sending the config).
    pub fn request_config_refresh(&mut self, now: Instant) {
        self.refresh.wanted = true;
        self.pump(now);
    }
    /// The network in use (`None` before the first config).
    pub fn network(&self) -> Option<Network> {
        self.network
    }

    // ----- internals -----------------------------------------------------

    /// `config` addressed on the network in use, deciding it first if
    /// needed (`Auto` looks at `source_host`, the host the first config
    /// came from: a seed).
    pub(super) fn adopt_network(
        &mut self,
        config: ClusterConfig,
        source_host: Option<&str>,
    ) -> ClusterConfig {
        let network = *self
            .network
            .get_or_insert_with(|| config.resolve_network(self.settings.network, source_host));
        config.for_network(network)
    }

    fn create_slots(&mut self, config: &ClusterConfig) {
        for vb in 0..config.num_vbuckets() {
            if self.settings.vbuckets.contains(vb) {
                let position = self.initial.vbuckets.get(&vb).cloned();
                let slot = VbSlot::new(position, self.settings.start, self.settings.end_of(vb));
                self.vbuckets.insert(vb, slot);
            }
        }
    }
}
