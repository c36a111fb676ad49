//! What a request handler may touch besides its own connection: the node's
//! settings, the bucket, the generator, the user store and the DCP name
//! registry.

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use super::config::NodeConfig;
use super::connection::Connection;
use super::error::ConnectionId;
use super::users::Users;
use crate::bucket::{Bucket, Rng};
use crate::msg::StreamEndReason;

/// An effect on another connection that a handler cannot apply itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Deferred {
    /// A DCP_OPEN took this connection's name.
    Kick(ConnectionId, String),
    /// Admin: stall or resume the streams of the DCP connection `name`.
    Stall(String, bool),
    /// Admin: freeze or thaw the DCP connection `name`.
    Freeze(String, bool),
    /// Admin: drop the DCP connection `name`.
    Drop(String),
    /// Admin: end the streams of a vbucket with a reason.
    EndStreams(u16, StreamEndReason),
    /// A durable write's response waits for its prepare to complete.
    AwaitSyncWrite {
        vbucket: u16,
        prepared_seqno: u64,
        waiter: super::durable_kv::SyncWaiter,
    },
    /// Admin: a cluster-level command for the node's cluster.
    ClusterAdmin(super::admin::ClusterAdminRequest),
}

/// Node state lent to a request handler.
pub(crate) struct Ctx<'a> {
    pub(crate) config: &'a NodeConfig,
    pub(crate) bucket: &'a mut Bucket,
    pub(crate) rng: &'a mut Rng,
    pub(crate) users: &'a mut Users,
    /// DCP connection names in use.
    pub(crate) names: &'a mut HashMap<String, ConnectionId>,
    /// Effects on other connections, applied after the input is handled.
    pub(crate) deferred: &'a mut Vec<Deferred>,
    /// Every other connection (for the `dcp` stats).
    pub(crate) others: &'a BTreeMap<ConnectionId, Connection>,
    pub(crate) now: Instant,
    /// The cluster-wide config JSON served instead of the node's own.
    pub(crate) cluster_config: Option<&'a [u8]>,
    /// The revision of the config served (shared or the node's own).
    pub(crate) config_rev: i64,
    /// The node is a member of a [`LocalCluster`](super::LocalCluster):
    /// manifest changes are the cluster's.
    pub(crate) cluster_member: bool,
    /// `now` as wall-clock time (for CAS values, TTLs, delete times).
    pub(crate) wall_clock: SystemTime,
}
