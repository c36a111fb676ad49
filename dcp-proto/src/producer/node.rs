//! [`Node`]: one data node serving a bucket to any number of connections.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Instant, SystemTime};

use bytes::BytesMut;

use super::config::NodeConfig;
use super::connection::Connection;
use super::context::{Ctx, Deferred};
use super::dispatch::handle_frame;
use super::durable_kv::{self, SyncWaiter};
use super::error::{CloseReason, ConnectionId, ProducerError};
use super::transmit::transmit_streams;
use super::users::Users;
use crate::bucket::{Bucket, BucketEvent, Rng};
use crate::msg::{DcpNoop, FailoverEntry, StreamEndReason, VbucketState};

/// A sans-IO Couchbase data node: the [`Bucket`] and every accepted
/// connection, each speaking the memcached binary protocol with SASL, HELLO,
/// KV commands, STAT and a DCP producer.
///
/// See the [module docs](super) for the driving contract.
#[derive(Debug, Clone)]
pub struct Node {
    config: NodeConfig,
    bucket: Bucket,
    conns: BTreeMap<ConnectionId, Connection>,
    names: HashMap<String, ConnectionId>,
    users: Users,
    rng: Rng,
    next_id: u64,
    config_rev: i64,
    /// A cluster-wide config served instead of the node's own: (rev, JSON).
    cluster_config: Option<(i64, Vec<u8>)>,
    wakeups: BTreeSet<ConnectionId>,
    /// The first instant seen, paired with `config.wall_clock_base`.
    clock_anchor: Option<Instant>,
    /// Clients waiting for sync writes: (vbucket, prepared seqno).
    sync_waiters: HashMap<(u16, u64), SyncWaiter>,
    /// Cluster-level admin commands waiting for the cluster.
    admin_requests: Vec<super::ClusterAdminRequest>,
    /// Part of a [`LocalCluster`](super::LocalCluster): collections
    /// manifest changes go to the cluster, which applies them everywhere.
    cluster_member: bool,
}

impl Node {
    /// A node with a fresh bucket shaped by `config.bucket`.
    pub fn new(config: NodeConfig) -> Self {
        let mut seeds = Rng::new(config.seed);
        let bucket = Bucket::new(config.bucket.clone(), seeds.next_u64());
        let users = Users::new(
            config.users.clone(),
            config.admin_users.clone(),
            config.scram_iterations,
        );
        Self {
            bucket,
            conns: BTreeMap::new(),
            names: HashMap::new(),
            users,
            rng: seeds.fork(0x6e6f_6e63_6573),
            next_id: 1,
            config_rev: 1,
            cluster_config: None,
            wakeups: BTreeSet::new(),
            clock_anchor: None,
            sync_waiters: HashMap::new(),
            admin_requests: Vec::new(),
            cluster_member: false,
            config,
        }
    }

    /// Marks the node a member of a [`LocalCluster`](super::LocalCluster).
    pub(crate) fn set_cluster_member(&mut self) {
        self.cluster_member = true;
    }

    /// The configuration.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// The bucket.
    pub fn bucket(&self) -> &Bucket {
        &self.bucket
    }

    /// The bucket, to write documents or inject faults. The node applies
    /// the effects on its streams (new data to send, StateChanged ends,
    /// dropped connections after a failover) at its next call.
    pub fn bucket_mut(&mut self) -> &mut Bucket {
        &mut self.bucket
    }

    /// `now` as wall-clock time: `config.wall_clock_base` plus the time
    /// since the first instant the node saw. KV commands over the wire use
    /// it for CAS values, TTLs and delete times.
    pub fn wall_clock(&mut self, now: Instant) -> SystemTime {
        let anchor = *self.clock_anchor.get_or_insert(now);
        self.config.wall_clock_base + now.saturating_duration_since(anchor)
    }

    /// Accepts a new connection.
    pub fn accept(&mut self, now: Instant) -> ConnectionId {
        self.wall_clock(now);
        let id = ConnectionId(self.next_id);
        self.next_id += 1;
        self.conns
            .insert(id, Connection::new(id, self.config.max_frame_len, now));
        id
    }

    /// The connections not yet removed, closed ones included.
    pub fn connections(&self) -> impl Iterator<Item = ConnectionId> + '_ {
        self.conns.keys().copied()
    }

    /// Whether the connection is closed (or unknown): close its socket once
    /// [`poll_transmit`](Self::poll_transmit) has nothing more.
    pub fn is_closed(&self, id: ConnectionId) -> bool {
        self.conns.get(&id).is_none_or(|c| c.closed.is_some())
    }

    /// Why the connection was closed.
    pub fn close_reason(&self, id: ConnectionId) -> Option<&CloseReason> {
        self.conns.get(&id).and_then(|c| c.closed.as_ref())
    }

    /// The DCP name of the connection, after DCP_OPEN.
    pub fn dcp_name(&self, id: ConnectionId) -> Option<&str> {
        self.conns
            .get(&id)
            .and_then(|c| c.dcp.as_ref())
            .map(|d| d.name.as_str())
    }

    /// Forgets a connection (after its socket closed). Its streams end
    /// without STREAM_END.
    pub fn remove(&mut self, id: ConnectionId) {
        self.close(id, CloseReason::Dropped);
        self.conns.remove(&id);
        self.wakeups.remove(&id);
    }

    /// Feeds received bytes. Whole frames are taken off the front of `rx`
    /// and handled in order; a partial frame stays. Stops early (leaving
    /// frames in `rx`) while more than `max_pending_output` bytes of
    /// responses wait to be sent: call again after
    /// [`poll_transmit`](Self::poll_transmit).
    ///
    /// An error means the connection is (now or already) closed.
    pub fn handle_input(
        &mut self,
        id: ConnectionId,
        rx: &mut BytesMut,
        now: Instant,
    ) -> Result<(), ProducerError> {
        self.sync();
        let wall_clock = self.wall_clock(now);
        let mut deferred = Vec::new();
        let mut conn = self
            .conns
            .remove(&id)
            .ok_or(ProducerError::UnknownConnection(id))?;
        if let Some(reason) = &conn.closed {
            let reason = reason.clone();
            self.conns.insert(id, conn);
            return Err(ProducerError::Closed(reason));
        }
        if !rx.is_empty() {
            conn.last_recv = now;
        }
        let mut ctx = Ctx {
            config: &self.config,
            bucket: &mut self.bucket,
            rng: &mut self.rng,
            users: &mut self.users,
            names: &mut self.names,
            deferred: &mut deferred,
            others: &self.conns,
            now,
            wall_clock,
            cluster_config: self
                .cluster_config
                .as_ref()
                .map(|(_, json)| json.as_slice()),
            config_rev: self
                .cluster_config
                .as_ref()
                .map_or(self.config_rev, |c| c.0),
            cluster_member: self.cluster_member,
        };
        let config_rev = ctx.config_rev;
        let mut outcome = Ok(());
        while conn.out.len() < ctx.config.max_pending_output {
            match conn.decoder.decode(rx) {
                Ok(Some(frame)) => {
                    if let Err(reason) = handle_frame(&mut conn, &frame, &mut ctx, config_rev) {
                        outcome = Err(reason);
                        break;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    outcome = Err(CloseReason::Framing(e));
                    break;
                }
            }
        }
        self.conns.insert(id, conn);
        for effect in deferred {
            self.apply(effect);
        }
        self.sync();
        match outcome {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.close(id, reason.clone());
                Err(ProducerError::Closed(reason))
            }
        }
    }

    /// Writes what the connection has to send into `tx`: first queued
    /// responses and noops (always whole), then stream messages generated
    /// from the bucket, round-robin over the streams, while the
    /// flow-control window allows and until at least `max_bytes` were
    /// written (the last message may overshoot). Returns the bytes written.
    pub fn poll_transmit(
        &mut self,
        id: ConnectionId,
        tx: &mut BytesMut,
        max_bytes: usize,
    ) -> usize {
        self.sync();
        let Node {
            config,
            bucket,
            conns,
            ..
        } = self;
        let Some(conn) = conns.get_mut(&id) else {
            return 0;
        };
        if conn.frozen {
            return 0;
        }
        let start = tx.len();
        tx.extend_from_slice(&conn.out);
        conn.out.clear();
        if conn.closed.is_some() || conn.stalled {
            return tx.len() - start;
        }
        let collections = conn.features.collections;
        if let Some(dcp) = conn.dcp.as_mut() {
            transmit_streams(
                dcp,
                collections,
                bucket,
                config.backfill_batch,
                config.oso_for_unfiltered_streams,
                tx,
                start,
                max_bytes,
            );
        }
        tx.len() - start
    }

    /// The next instant [`handle_timeout`](Self::handle_timeout) has work:
    /// a noop to send or the idle deadline.
    pub fn poll_timeout(&self, id: ConnectionId) -> Option<Instant> {
        let conn = self.conns.get(&id)?;
        if conn.closed.is_some() {
            return None;
        }
        let dcp = conn.dcp.as_ref()?;
        let noop = dcp.liveness.noop_deadline();
        let idle = dcp.liveness.idle_deadline(conn.last_recv);
        match (noop, idle) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Runs the timers due at `now`: closes an idle connection, queues a
    /// DCP_NOOP when one is due.
    pub fn handle_timeout(&mut self, id: ConnectionId, now: Instant) {
        self.sync();
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closed.is_some() {
            return;
        }
        let Some(dcp) = conn.dcp.as_mut() else {
            return;
        };
        if dcp
            .liveness
            .idle_deadline(conn.last_recv)
            .is_some_and(|deadline| now >= deadline)
        {
            self.close(id, CloseReason::IdleTimeout);
            return;
        }
        if let Some(opaque) = dcp.liveness.take_due_noop(now) {
            let _ = DcpNoop { opaque }.encode(&mut conn.out);
            self.wakeups.insert(id);
        }
    }

    /// Serves `json` (a bucket config at revision `rev`, e.g. one shared by
    /// every node of a [`LocalCluster`](super::LocalCluster)) from
    /// GET_CLUSTER_CONFIG instead of the node's own one-node config.
    ///
    /// Connections that negotiated cluster-map change notifications (HELLO
    /// Duplex with ClustermapChangeNotification or its brief form) and
    /// selected the bucket get the new config pushed (or, brief, its
    /// version) when `rev` is newer than what they were sent.
    pub fn set_cluster_config(&mut self, rev: i64, json: Vec<u8>) {
        let newer = self
            .cluster_config
            .as_ref()
            .is_none_or(|(old, _)| *old < rev);
        self.cluster_config = Some((rev, json));
        if newer {
            self.push_cluster_config();
        }
    }

    /// Queues the config in force (the shared cluster config, else the
    /// node's own) on every connection that asked for notifications and has
    /// not seen it; returns how many got it.
    pub fn push_cluster_config(&mut self) -> usize {
        let (rev, json) = match &self.cluster_config {
            Some((rev, json)) => (*rev, json.clone()),
            None => (
                self.config_rev,
                super::cluster_config::own_config_json(&self.config, &self.bucket, self.config_rev),
            ),
        };
        let bucket = self.bucket.name().to_owned();
        let mut pushed = 0;
        for conn in self.conns.values_mut() {
            if super::cluster_config::push(conn, &bucket, rev, &json) {
                self.wakeups.insert(conn.id);
                pushed += 1;
            }
        }
        pushed
    }

    /// Cluster-level admin commands received since the last call (see
    /// [`LocalCluster::run_admin_requests`](super::LocalCluster::run_admin_requests)).
    pub fn take_admin_requests(&mut self) -> Vec<super::ClusterAdminRequest> {
        core::mem::take(&mut self.admin_requests)
    }

    /// Answers a cluster-level admin request on its connection (SUCCESS
    /// with the JSON result, or EINVAL with the error); the connection
    /// is woken. A connection gone meanwhile is skipped.
    pub fn answer_admin_request(
        &mut self,
        request: &super::ClusterAdminRequest,
        result: Result<serde_json::Value, String>,
    ) {
        let Some(conn) = self.conns.get_mut(&request.conn) else {
            return;
        };
        if super::admin::answer(conn, request.opaque, result).is_ok() {
            self.wakeups.insert(request.conn);
        }
    }

    /// Installs a copy of another node's vbucket (same history, uuid and
    /// failover log) in `state`; a change of state ends its streams here
    /// with StateChanged.
    pub(crate) fn install_vbucket(
        &mut self,
        copy: crate::bucket::VBucket,
        state: VbucketState,
    ) -> Result<(), ProducerError> {
        self.bucket.install_vbucket(copy, state)?;
        self.sync();
        Ok(())
    }

    /// Connections that may have something new to send (bucket writes,
    /// stream ends, kicks) since the last call.
    pub fn take_wakeups(&mut self) -> Vec<ConnectionId> {
        self.sync();
        core::mem::take(&mut self.wakeups).into_iter().collect()
    }

    /// Stalls (or resumes) a connection's stream messages; responses and
    /// noops still flow, as from a producer whose backfills are stuck.
    pub fn stall(&mut self, id: ConnectionId, stalled: bool) -> Result<(), ProducerError> {
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or(ProducerError::UnknownConnection(id))?;
        conn.stalled = stalled;
        self.wakeups.insert(id);
        Ok(())
    }

    /// Freezes (or thaws) a connection: nothing at all is sent, noops
    /// included, as from a hung node whose socket stays open.
    pub fn freeze(&mut self, id: ConnectionId, frozen: bool) -> Result<(), ProducerError> {
        let conn = self
            .conns
            .get_mut(&id)
            .ok_or(ProducerError::UnknownConnection(id))?;
        conn.frozen = frozen;
        self.wakeups.insert(id);
        Ok(())
    }

    /// Drops a connection as a network failure would: no STREAM_END.
    pub fn drop_connection(&mut self, id: ConnectionId) -> Result<(), ProducerError> {
        if !self.conns.contains_key(&id) {
            return Err(ProducerError::UnknownConnection(id));
        }
        self.close(id, CloseReason::Dropped);
        Ok(())
    }

    /// Fails vbucket `vb` over ([`Bucket::failover`]) and drops the
    /// connections streaming it.
    pub fn failover(&mut self, vb: u16, lose_last: u64) -> Result<FailoverEntry, ProducerError> {
        let entry = self.bucket.failover(vb, lose_last)?;
        self.sync();
        Ok(entry)
    }

    /// Fails vbucket `vb` over to a lagging replica
    /// ([`Bucket::failover_to`]) and drops the connections streaming it.
    pub fn failover_to(&mut self, vb: u16, seqno: u64) -> Result<FailoverEntry, ProducerError> {
        let entry = self.bucket.failover_to(vb, seqno)?;
        self.sync();
        Ok(entry)
    }

    /// Purges tombstones ([`Bucket::purge`]); returns the purge seqno.
    pub fn purge(&mut self, vb: u16, up_to: u64) -> Result<u64, ProducerError> {
        Ok(self.bucket.purge(vb, up_to)?)
    }

    /// Changes a vbucket's state ([`Bucket::set_vbucket_state`]); its
    /// streams end with StateChanged.
    pub fn set_vbucket_state(&mut self, vb: u16, state: VbucketState) -> Result<(), ProducerError> {
        self.bucket.set_vbucket_state(vb, state)?;
        self.sync();
        Ok(())
    }

    /// Ends every live stream of vbucket `vb` on every connection with
    /// `reason`, as the server does after a backfill failure (BackfillFailed),
    /// a dropped slow cursor (Slow), a dropped filter collection
    /// (FilterEmpty) or lost privileges (LostPrivileges). The reason goes on
    /// the wire as the server maps it: FilterEmpty and LostPrivileges are
    /// OK on connections without collections; Disconnected and Rollback are
    /// never sent (StateChanged instead). Returns how many streams ended.
    pub fn end_streams(&mut self, vb: u16, reason: StreamEndReason) -> usize {
        self.sync();
        let mut ended = 0;
        for conn in self.conns.values_mut() {
            let collections = conn.features.collections;
            let Some(dcp) = conn.dcp.as_mut() else {
                continue;
            };
            let on_wire = match reason {
                StreamEndReason::FilterEmpty | StreamEndReason::LostPrivileges if !collections => {
                    StreamEndReason::Ok
                }
                StreamEndReason::Disconnected | StreamEndReason::Rollback => {
                    StreamEndReason::StateChanged
                }
                other => other,
            };
            for (key, stream) in dcp.streams.iter_mut() {
                if key.0 == vb && !stream.is_ending() {
                    stream.end(on_wire, self.bucket.vbucket_mut(vb).ok());
                    self.wakeups.insert(conn.id);
                    ended += 1;
                }
            }
        }
        ended
    }

    /// Closes a connection: its streams end silently, its DCP name is
    /// freed; queued responses can still be polled.
    pub(crate) fn close(&mut self, id: ConnectionId, reason: CloseReason) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        if conn.closed.is_some() {
            return;
        }
        conn.closed = Some(reason);
        if let Some(dcp) = conn.dcp.as_mut() {
            for ((vb, _), mut stream) in core::mem::take(&mut dcp.streams) {
                stream.release(self.bucket.vbucket_mut(vb).ok());
            }
            if self.names.get(&dcp.name) == Some(&id) {
                self.names.remove(&dcp.name);
            }
        }
        self.wakeups.insert(id);
    }

    /// Applies an effect a handler deferred.
    fn apply(&mut self, effect: Deferred) {
        let by_name = |node: &Node, name: &str| node.names.get(name).copied();
        match effect {
            Deferred::Kick(id, name) => self.close(id, CloseReason::Kicked { name }),
            Deferred::Stall(name, on) => {
                if let Some(id) = by_name(self, &name) {
                    let _ = self.stall(id, on);
                }
            }
            Deferred::Freeze(name, on) => {
                if let Some(id) = by_name(self, &name) {
                    let _ = self.freeze(id, on);
                }
            }
            Deferred::EndStreams(vb, reason) => {
                self.end_streams(vb, reason);
            }
            Deferred::ClusterAdmin(request) => self.admin_requests.push(request),
            Deferred::Drop(name) => {
                if let Some(id) = by_name(self, &name) {
                    self.close(id, CloseReason::Dropped);
                }
            }
            Deferred::AwaitSyncWrite {
                vbucket,
                prepared_seqno,
                waiter,
            } => {
                self.sync_waiters.insert((vbucket, prepared_seqno), waiter);
            }
        }
    }

    /// Applies what changed in the bucket to the streams.
    fn sync(&mut self) {
        if !self.bucket.has_news() {
            return;
        }
        let rev = self.config_rev;
        self.sync_events();
        if self.config_rev != rev && self.cluster_config.is_none() {
            // A lone node's own config changed (a vbucket changed state).
            self.push_cluster_config();
        }
    }

    fn sync_events(&mut self) {
        for event in self.bucket.take_events() {
            match event {
                BucketEvent::StateChanged { vbucket, .. } => {
                    self.config_rev += 1;
                    for conn in self.conns.values_mut() {
                        let Some(dcp) = conn.dcp.as_mut() else {
                            continue;
                        };
                        for (key, stream) in dcp.streams.iter_mut() {
                            if key.0 == vbucket {
                                stream.end(
                                    StreamEndReason::StateChanged,
                                    self.bucket.vbucket_mut(vbucket).ok(),
                                );
                                self.wakeups.insert(conn.id);
                            }
                        }
                    }
                }
                BucketEvent::FailedOver { vbucket } => {
                    let streaming: Vec<ConnectionId> = self
                        .conns
                        .values()
                        .filter(|c| {
                            c.dcp
                                .as_ref()
                                .is_some_and(|d| d.streams.keys().any(|k| k.0 == vbucket))
                        })
                        .map(|c| c.id)
                        .collect();
                    for id in streaming {
                        self.close(id, CloseReason::Failover(vbucket));
                    }
                }
            }
        }
        for done in self.bucket.take_completions() {
            let Some(waiter) = self
                .sync_waiters
                .remove(&(done.vbucket, done.prepared_seqno))
            else {
                continue;
            };
            if let Some(conn) = self.conns.get_mut(&waiter.conn)
                && conn.closed.is_none()
            {
                if let Err(reason) = durable_kv::complete(conn, waiter, done.outcome) {
                    self.close(waiter.conn, reason);
                }
                self.wakeups.insert(waiter.conn);
            }
        }
        for vb in self.bucket.take_touched() {
            for conn in self.conns.values() {
                if conn
                    .dcp
                    .as_ref()
                    .is_some_and(|d| d.streams.keys().any(|k| k.0 == vb))
                {
                    self.wakeups.insert(conn.id);
                }
            }
        }
    }
}
