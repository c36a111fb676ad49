//! How a [`Node`](super::Node) is set up: its bucket, users, seed and the
//! server settings DCP clients can observe.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bucket::BucketConfig;
use crate::codec::DEFAULT_MAX_FRAME_LEN;

/// Settings of one data node.
///
/// ```
/// use std::time::{Duration, SystemTime, UNIX_EPOCH};
/// use dcp_proto::producer::NodeConfig;
/// let config = NodeConfig::new("travel")
///     .with_vbuckets(64)
///     .with_user("Administrator", "password")
///     .with_admin("Administrator")
///     .with_seed(7)
///     .with_idle_timeout(Duration::from_secs(60));
/// assert_eq!(config.bucket.num_vbuckets, 64);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NodeConfig {
    /// The bucket the node serves.
    pub bucket: BucketConfig,
    /// Users and their passwords. SCRAM keys are derived from them on first
    /// use; PLAIN compares the password.
    pub users: BTreeMap<String, String>,
    /// Users allowed to run SET_VBUCKET and the admin command.
    pub admin_users: BTreeSet<String>,
    /// Seed of the generator for vbucket uuids, SASL nonces and salts.
    pub seed: u64,
    /// Receive silence after which a connection with noops enabled is
    /// closed (the server's `dcp_idle_timeout`, 360 s).
    pub idle_timeout: Duration,
    /// Noop interval until the client sets one (20 s).
    pub default_noop_interval: Duration,
    /// Smallest noop interval a client may set (the connection manager
    /// interval, 0.1 s).
    pub min_noop_interval: Duration,
    /// Largest frame accepted from a client.
    pub max_frame_len: usize,
    /// PBKDF2 iterations of the stored SCRAM keys.
    pub scram_iterations: u32,
    /// Queued responses beyond which the node stops reading requests from
    /// a client that does not read its replies.
    pub max_pending_output: usize,
    /// Items a backfill reads from disk per step (bounds stream memory).
    pub backfill_batch: usize,
    /// Host name in the cluster config (`$HOST`: the client substitutes the
    /// address it connected to, as with a real node).
    pub hostname: String,
    /// Memcached port in the cluster config.
    pub kv_port: u16,
    /// Management (REST) port in the cluster config.
    pub mgmt_port: u16,
    /// Server version reported by VERSION and the cluster config.
    pub version: String,
    /// The wall-clock time of the first instant the node sees; later
    /// instants map to wall-clock time from there (see
    /// [`Node::wall_clock`](super::Node::wall_clock)). Adapters set it to
    /// the real time at start; tests keep the fixed default.
    pub wall_clock_base: SystemTime,
    /// Allow out-of-order (OSO) backfills for streams without a collection
    /// filter too (default off: the server uses OSO only for filtered
    /// streams). See the eligibility rule in the producer's `oso` module:
    /// an initial backfill (start 0) on a connection that enabled
    /// `enable_out_of_order_snapshots` and not sync writes.
    pub oso_for_unfiltered_streams: bool,
}

impl NodeConfig {
    /// A node serving a bucket named `bucket` with default settings and no
    /// users (add some: nothing works before authentication).
    pub fn new(bucket: impl Into<String>) -> Self {
        Self {
            bucket: BucketConfig::new(bucket),
            users: BTreeMap::new(),
            admin_users: BTreeSet::new(),
            seed: 0,
            idle_timeout: Duration::from_secs(360),
            default_noop_interval: Duration::from_secs(20),
            min_noop_interval: Duration::from_millis(100),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            scram_iterations: 4096,
            max_pending_output: 4 * 1024 * 1024,
            backfill_batch: 256,
            hostname: "$HOST".to_owned(),
            kv_port: 11210,
            mgmt_port: 8091,
            version: "7.6.0-dcp-rs".to_owned(),
            wall_clock_base: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            oso_for_unfiltered_streams: false,
        }
    }

    /// Sets the number of vbuckets.
    pub fn with_vbuckets(mut self, n: u16) -> Self {
        self.bucket = self.bucket.with_vbuckets(n);
        self
    }

    /// Replaces the bucket configuration.
    pub fn with_bucket(mut self, bucket: BucketConfig) -> Self {
        self.bucket = bucket;
        self
    }

    /// Adds a user.
    pub fn with_user(mut self, name: impl Into<String>, password: impl Into<String>) -> Self {
        self.users.insert(name.into(), password.into());
        self
    }

    /// Lets `name` run SET_VBUCKET and the admin command.
    pub fn with_admin(mut self, name: impl Into<String>) -> Self {
        self.admin_users.insert(name.into());
        self
    }

    /// Sets the seed.
    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Sets the idle timeout.
    pub fn with_idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets the SCRAM iteration count (small values make tests fast).
    pub fn with_scram_iterations(mut self, iterations: u32) -> Self {
        self.scram_iterations = iterations.max(1);
        self
    }

    /// Sets the wall-clock time of the node's first instant.
    pub fn with_wall_clock_base(mut self, base: SystemTime) -> Self {
        self.wall_clock_base = base;
        self
    }

    /// Allows OSO backfills for unfiltered streams (a test-server switch).
    pub fn with_oso_for_unfiltered_streams(mut self, allow: bool) -> Self {
        self.oso_for_unfiltered_streams = allow;
        self
    }

    /// Sets the largest frame accepted from a client.
    pub fn with_max_frame_len(mut self, len: usize) -> Self {
        self.max_frame_len = len;
        self
    }
}
