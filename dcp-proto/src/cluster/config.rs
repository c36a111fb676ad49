//! A Couchbase bucket config: the JSON a data node returns for
//! GET_CLUSTER_CONFIG (or pushes as a clustermap change notification) and
//! the REST `/pools/default/b/<bucket>` endpoint serves.
//!
//! What a DCP client needs from it: its version (`revEpoch`, `rev`), the
//! bucket's identity (`name`, `uuid`), the data nodes (`nodesExt`, or the
//! older `nodes`) and the vbucket map (`vBucketServerMap`): for each
//! vbucket, the index in `serverList` of its active copy followed by its
//! replicas, `-1` where none is assigned. During a rebalance
//! `vBucketMapForward` holds the map the rebalance is heading to.
//!
//! A node that does not know its own name writes `$HOST`; it is replaced by
//! the address the config was fetched from.

use serde::Deserialize;

use super::network::{AlternateAddress, Network};
use super::node::{InvalidAddress, KvNode, NodeAddress, bracket, unbracket};

/// The `$HOST` placeholder of a config served by a node that does not know
/// its own name.
const HOST_PLACEHOLDER: &str = "$HOST";

/// A config's version. Configs are ordered by epoch first (a new epoch
/// starts when the cluster's config history is reset, e.g. after a quorum
/// loss), then by revision; a config not newer than the one held is
/// ignored.
///
/// ```
/// use dcp_proto::cluster::ConfigVersion;
/// let old = ConfigVersion { epoch: 1, rev: 900 };
/// assert!(ConfigVersion { epoch: 1, rev: 901 } > old);
/// assert!(ConfigVersion { epoch: 2, rev: 3 } > old);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ConfigVersion {
    /// `revEpoch` (0 when absent: servers before 7.0).
    pub epoch: i64,
    /// `rev`.
    pub rev: i64,
}

impl std::fmt::Display for ConfigVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.epoch, self.rev)
    }
}

/// Why a bucket config was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No bytes (GET_CLUSTER_CONFIG answers an empty body when the client
    /// already holds the newest version).
    #[error("empty cluster config")]
    Empty,
    /// Not JSON of the expected shape (missing `rev`, wrong types, ...).
    #[error("invalid cluster config JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Not a vbucket (Couchbase or ephemeral) bucket, e.g. a memcached
    /// bucket (`ketama`), which has no DCP.
    #[error("unsupported node locator {0:?} (DCP needs a vbucket bucket)")]
    UnsupportedNodeLocator(String),
    /// No `vBucketServerMap`.
    #[error("the config has no vBucketServerMap")]
    MissingVbucketMap,
    /// A key hashing other than CRC.
    #[error("unsupported hash algorithm {0:?}")]
    UnsupportedHashAlgorithm(String),
    /// A `serverList` entry that is not `host:port`.
    #[error("invalid serverList entry: {0}")]
    InvalidServer(#[from] InvalidAddress),
    /// An empty vbucket map (a bucket still being created reports one).
    #[error("the vbucket map is empty")]
    NoVbuckets,
    /// More vbuckets than vbucket ids exist.
    #[error("{0} vbuckets (at most 65535)")]
    TooManyVbuckets(usize),
    /// A vbucket with no entry at all (not even `-1`).
    #[error("vbucket {vbucket} has an empty chain (forward map: {forward})")]
    EmptyChain {
        /// The vbucket.
        vbucket: u16,
        /// Whether it is in `vBucketMapForward`.
        forward: bool,
    },
    /// A chain entry that is neither `-1` nor an index into `serverList`.
    #[error(
        "vbucket {vbucket} names server {index}, but serverList has {servers} (forward map: {forward})"
    )]
    BadServerIndex {
        /// The vbucket.
        vbucket: u16,
        /// The entry.
        index: i64,
        /// The length of `serverList`.
        servers: usize,
        /// Whether it is in `vBucketMapForward`.
        forward: bool,
    },
    /// A forward map with a different number of vbuckets.
    #[error("vBucketMapForward has {got} vbuckets, vBucketMap {expected}")]
    ForwardMapLength {
        /// Vbuckets in `vBucketMap`.
        expected: usize,
        /// Vbuckets in `vBucketMapForward`.
        got: usize,
    },
}

/// A vbucket map: per vbucket, server indices (active first), `None` for
/// `-1`.
type Chains = Vec<Box<[Option<u16>]>>;

/// A parsed bucket config: the JSON a data node returns for
/// GET_CLUSTER_CONFIG (or pushes as a clustermap change notification), or
/// the REST `/pools/default/b/<bucket>` endpoint serves.
///
/// Read from it: the version (`revEpoch`, `rev`), the bucket's identity
/// (`name`, `uuid`), the data nodes (`nodesExt` with `services.kv`,
/// `services.kvSSL` and `thisNode`, or the older `nodes` with
/// `ports.direct`) and the vbucket map (`vBucketServerMap`): per vbucket,
/// the `serverList` index of its active copy, then its replicas, `-1` where
/// none is assigned; during a rebalance `vBucketMapForward` holds the map
/// it is heading to. `$HOST` (written by a node that does not know its own
/// name) and empty host names become the address the config came from.
///
/// ```
/// use dcp_proto::cluster::ClusterConfig;
/// let json = br#"{"rev":7,"revEpoch":1,"name":"travel","uuid":"u1",
///   "nodeLocator":"vbucket",
///   "nodesExt":[{"hostname":"$HOST","thisNode":true,
///                "services":{"kv":11210,"kvSSL":11207,"mgmt":8091}}],
///   "vBucketServerMap":{"hashAlgorithm":"CRC","numReplicas":0,
///     "serverList":["$HOST:11210"],"vBucketMap":[[0],[0],[-1],[0]]}}"#;
/// let config = ClusterConfig::parse(json, "10.1.2.3")?;
/// assert_eq!(config.version().rev, 7);
/// let active = config.active_node(1).unwrap();
/// assert_eq!(active.address.to_string(), "10.1.2.3:11210");
/// assert_eq!(active.tls_port, Some(11207));
/// assert!(config.active_node(2).is_none());
/// assert_eq!(config.vbucket_for_key(b"hello"), 0);
/// # Ok::<(), dcp_proto::cluster::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    version: ConfigVersion,
    name: String,
    uuid: String,
    num_replicas: u32,
    servers: Vec<KvNode>,
    kv_nodes: Vec<KvNode>,
    map: Chains,
    forward: Option<Chains>,
}

impl ClusterConfig {
    /// Parses a config fetched from `source_host` (a host name or IP
    /// address, with or without IPv6 brackets, no port), which replaces
    /// `$HOST` and empty host names.
    pub fn parse(json: &[u8], source_host: &str) -> Result<Self, ConfigError> {
        if json.iter().all(u8::is_ascii_whitespace) {
            return Err(ConfigError::Empty);
        }
        let raw: RawConfig = serde_json::from_slice(json)?;
        Self::from_raw(raw, unbracket(source_host))
    }

    fn from_raw(raw: RawConfig, source: &str) -> Result<Self, ConfigError> {
        if let Some(locator) = &raw.node_locator
            && locator != "vbucket"
        {
            return Err(ConfigError::UnsupportedNodeLocator(locator.clone()));
        }
        let map = raw
            .vbucket_server_map
            .ok_or(ConfigError::MissingVbucketMap)?;
        if let Some(algorithm) = &map.hash_algorithm
            && !algorithm.eq_ignore_ascii_case("CRC")
        {
            return Err(ConfigError::UnsupportedHashAlgorithm(algorithm.clone()));
        }
        let hosts = Hosts { source };
        let mut servers = map
            .server_list
            .iter()
            .map(|entry| hosts.server(entry))
            .collect::<Result<Vec<_>, _>>()?;
        let kv_nodes = kv_nodes(&raw.nodes_ext, &raw.nodes, &hosts);
        for server in &mut servers {
            if let Some(node) = kv_nodes.iter().find(|n| n.address == server.address) {
                server.tls_port = node.tls_port;
                server.this_node = node.this_node;
                server.alternate.clone_from(&node.alternate);
            }
        }
        let kv_nodes = if kv_nodes.is_empty() {
            servers.clone()
        } else {
            kv_nodes
        };
        let chains = chains(&map.vbucket_map, servers.len(), false)?;
        let forward = match &map.vbucket_map_forward {
            Some(forward) if !forward.is_empty() => {
                if forward.len() != chains.len() {
                    return Err(ConfigError::ForwardMapLength {
                        expected: chains.len(),
                        got: forward.len(),
                    });
                }
                Some(self::chains(forward, servers.len(), true)?)
            }
            _ => None,
        };
        Ok(Self {
            version: ConfigVersion {
                epoch: raw.rev_epoch,
                rev: raw.rev,
            },
            name: raw.name,
            uuid: raw.uuid,
            num_replicas: map.num_replicas,
            servers,
            kv_nodes,
            map: chains,
            forward,
        })
    }

    /// The config's version.
    pub fn version(&self) -> ConfigVersion {
        self.version
    }

    /// Whether this config supersedes `other` (newer epoch, or same epoch
    /// and newer revision).
    pub fn is_newer_than(&self, other: &ClusterConfig) -> bool {
        self.version > other.version
    }

    /// The bucket name (empty if the config has none).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bucket uuid (empty if the config has none). A different uuid
    /// under the same name is a different bucket.
    pub fn uuid(&self) -> &str {
        &self.uuid
    }

    /// Replicas configured per vbucket.
    pub fn num_replicas(&self) -> u32 {
        self.num_replicas
    }

    /// Number of vbuckets (1024 on most clusters).
    pub fn num_vbuckets(&self) -> u16 {
        // At most u16::MAX by construction.
        u16::try_from(self.map.len()).unwrap_or(u16::MAX)
    }

    /// The bucket's servers in `serverList` order (the indices the vbucket
    /// map refers to).
    pub fn servers(&self) -> &[KvNode] {
        &self.servers
    }

    /// Every node running the data service (from `nodesExt`, else the
    /// older `nodes`, else `serverList`), with plain and TLS ports.
    pub fn kv_nodes(&self) -> &[KvNode] {
        &self.kv_nodes
    }

    /// The node holding the active copy of `vbucket`, if one is assigned.
    pub fn active_node(&self, vbucket: u16) -> Option<&KvNode> {
        self.node_at(&self.map, vbucket, 0)
    }

    /// The nodes holding replicas of `vbucket`, in replica order, skipping
    /// unassigned ones.
    pub fn replicas(&self, vbucket: u16) -> Vec<&KvNode> {
        self.map
            .get(usize::from(vbucket))
            .map(|chain| {
                chain
                    .iter()
                    .skip(1)
                    .filter_map(|i| i.and_then(|i| self.servers.get(usize::from(i))))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a rebalance is in progress (`vBucketMapForward` present).
    pub fn is_rebalancing(&self) -> bool {
        self.forward.is_some()
    }

    /// The node that will hold the active copy of `vbucket` once the
    /// rebalance in progress completes (`None` outside a rebalance).
    pub fn forward_active_node(&self, vbucket: u16) -> Option<&KvNode> {
        self.node_at(self.forward.as_ref()?, vbucket, 0)
    }

    /// The vbucket `key` belongs to (CRC32 hashing, as every Couchbase
    /// client does).
    pub fn vbucket_for_key(&self, key: &[u8]) -> u16 {
        crate::bucket::vbucket_for_key(key, self.num_vbuckets())
    }

    /// The vbuckets whose active copy is on `node`.
    pub fn active_vbuckets<'a>(&'a self, node: &'a NodeAddress) -> impl Iterator<Item = u16> + 'a {
        (0..self.num_vbuckets())
            .filter(move |vb| self.active_node(*vb).is_some_and(|n| &n.address == node))
    }

    /// The network to use with this config when bootstrapping from
    /// `seed_hosts`: `wanted` itself unless it is [`Network::Auto`], which
    /// becomes [`Network::External`] when a seed host is a node's external
    /// host name and no node's internal one, else [`Network::Default`].
    pub fn resolve_network<'a>(
        &self,
        wanted: Network,
        seed_hosts: impl IntoIterator<Item = &'a str>,
    ) -> Network {
        if wanted != Network::Auto {
            return wanted;
        }
        let nodes = || self.kv_nodes.iter().chain(&self.servers);
        for seed in seed_hosts {
            let seed = unbracket(seed);
            if nodes().any(|n| n.address.host().eq_ignore_ascii_case(seed)) {
                return Network::Default;
            }
            if nodes().any(|n| {
                n.alternate
                    .as_ref()
                    .is_some_and(|a| a.hostname.eq_ignore_ascii_case(seed))
            }) {
                return Network::External;
            }
        }
        Network::Default
    }

    /// This config with every node that has an external address addressed
    /// by it (host, `ports.kv` or the internal port, `ports.kvSSL` or the
    /// internal TLS port) when `network` is [`Network::External`];
    /// unchanged otherwise. Node identities (and so the vbucket map) then
    /// use the external addresses.
    pub fn for_network(mut self, network: Network) -> Self {
        if network != Network::External {
            return self;
        }
        for node in self.servers.iter_mut().chain(self.kv_nodes.iter_mut()) {
            if let Some(alt) = &node.alternate {
                let port = alt.kv_port.unwrap_or(node.address.port());
                node.tls_port = alt.kv_tls_port.or(node.tls_port);
                node.address = NodeAddress::new(alt.hostname.clone(), port);
            }
        }
        self
    }

    fn node_at(&self, chains: &Chains, vbucket: u16, position: usize) -> Option<&KvNode> {
        let index = (*chains.get(usize::from(vbucket))?.get(position)?)?;
        self.servers.get(usize::from(index))
    }
}

/// Placeholder substitution for one config.
struct Hosts<'a> {
    source: &'a str,
}

impl Hosts<'_> {
    /// A node host name: `$HOST` or empty means the source.
    fn host(&self, hostname: &str) -> String {
        let hostname = unbracket(hostname);
        if hostname.is_empty() || hostname == HOST_PLACEHOLDER {
            self.source.to_owned()
        } else {
            hostname.to_owned()
        }
    }

    /// A `host:port` entry with `$HOST` substituted.
    fn address(&self, entry: &str) -> Result<NodeAddress, InvalidAddress> {
        if entry.contains(HOST_PLACEHOLDER) {
            entry
                .replace(HOST_PLACEHOLDER, &bracket(self.source))
                .parse()
        } else {
            entry.parse()
        }
    }

    fn server(&self, entry: &str) -> Result<KvNode, InvalidAddress> {
        self.address(entry).map(KvNode::new)
    }
}

/// The data nodes of `nodesExt` (or `nodes` when absent).
fn kv_nodes(ext: &Option<Vec<RawNodeExt>>, nodes: &[RawNode], hosts: &Hosts<'_>) -> Vec<KvNode> {
    if let Some(ext) = ext {
        return ext
            .iter()
            .filter_map(|n| {
                let port = n.services.kv?;
                Some(KvNode {
                    address: NodeAddress::new(hosts.host(&n.hostname), port),
                    tls_port: n.services.kv_ssl,
                    this_node: n.this_node,
                    alternate: n
                        .alternate_addresses
                        .as_ref()
                        .and_then(|a| a.external.as_ref())
                        .filter(|e| !e.hostname.is_empty())
                        .map(|e| {
                            AlternateAddress::new(
                                unbracket(&e.hostname),
                                e.ports.kv,
                                e.ports.kv_ssl,
                            )
                        }),
                })
            })
            .collect();
    }
    nodes
        .iter()
        .filter_map(|n| {
            let port = n.ports.direct?;
            // `hostname` is the management address, `host:8091`.
            let mgmt = hosts.address(&n.hostname).ok()?;
            Some(KvNode {
                tls_port: None,
                this_node: n.this_node,
                ..KvNode::new(NodeAddress::new(mgmt.host(), port))
            })
        })
        .collect()
}

/// Checks and converts a vbucket map.
fn chains(raw: &[Vec<i64>], servers: usize, forward: bool) -> Result<Chains, ConfigError> {
    if raw.is_empty() {
        return Err(ConfigError::NoVbuckets);
    }
    if raw.len() > usize::from(u16::MAX) {
        return Err(ConfigError::TooManyVbuckets(raw.len()));
    }
    raw.iter()
        .zip(0u16..)
        .map(|(chain, vbucket)| {
            if chain.is_empty() {
                return Err(ConfigError::EmptyChain { vbucket, forward });
            }
            chain
                .iter()
                .map(|&index| match index {
                    -1 => Ok(None),
                    i => u16::try_from(i)
                        .ok()
                        .filter(|i| usize::from(*i) < servers)
                        .map(Some)
                        .ok_or(ConfigError::BadServerIndex {
                            vbucket,
                            index,
                            servers,
                            forward,
                        }),
                })
                .collect()
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    rev: i64,
    #[serde(default)]
    rev_epoch: i64,
    #[serde(default)]
    name: String,
    #[serde(default)]
    uuid: String,
    #[serde(default)]
    node_locator: Option<String>,
    #[serde(default)]
    nodes_ext: Option<Vec<RawNodeExt>>,
    #[serde(default)]
    nodes: Vec<RawNode>,
    #[serde(default, rename = "vBucketServerMap")]
    vbucket_server_map: Option<RawServerMap>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNodeExt {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    services: RawServices,
    #[serde(default)]
    this_node: bool,
    #[serde(default)]
    alternate_addresses: Option<RawAlternates>,
}

#[derive(Deserialize)]
struct RawAlternates {
    #[serde(default)]
    external: Option<RawAlternate>,
}

#[derive(Deserialize)]
struct RawAlternate {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    ports: RawServices,
}

#[derive(Deserialize, Default)]
struct RawServices {
    #[serde(default)]
    kv: Option<u16>,
    #[serde(default, rename = "kvSSL")]
    kv_ssl: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNode {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    ports: RawPorts,
    #[serde(default)]
    this_node: bool,
}

#[derive(Deserialize, Default)]
struct RawPorts {
    #[serde(default)]
    direct: Option<u16>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawServerMap {
    #[serde(default)]
    hash_algorithm: Option<String>,
    #[serde(default)]
    num_replicas: u32,
    #[serde(default)]
    server_list: Vec<String>,
    #[serde(default, rename = "vBucketMap")]
    vbucket_map: Vec<Vec<i64>>,
    #[serde(default, rename = "vBucketMapForward")]
    vbucket_map_forward: Option<Vec<Vec<i64>>>,
}
