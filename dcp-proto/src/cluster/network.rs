//! Which of a node's addresses to connect to: the one the cluster uses
//! internally, or the `alternateAddresses.external` one a config lists for
//! clients outside the cluster's network (NAT, Kubernetes, cloud).

use std::fmt;
use std::str::FromStr;

/// The address set a client connects with (connection-string option
/// `network`).
///
/// ```
/// use dcp_proto::cluster::Network;
/// assert_eq!("external".parse::<Network>()?, Network::External);
/// assert_eq!(Network::default(), Network::Auto);
/// # Ok::<(), dcp_proto::cluster::InvalidNetwork>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Network {
    /// `external` when a seed host is one of the config's external host
    /// names (and none of its internal ones), else `default`: what
    /// Couchbase SDKs do.
    #[default]
    Auto,
    /// The internal addresses (`nodesExt[].hostname`, `services.kv`).
    Default,
    /// `nodesExt[].alternateAddresses.external` (`hostname`, `ports.kv`,
    /// `ports.kvSSL`); nodes without one keep their internal address.
    External,
}

/// A `network` option that is not `auto`, `default` or `external`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid network {0:?} (expected auto, default or external)")]
pub struct InvalidNetwork(pub String);

impl FromStr for Network {
    type Err = InvalidNetwork;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" | "" => Ok(Network::Auto),
            "default" => Ok(Network::Default),
            "external" => Ok(Network::External),
            _ => Err(InvalidNetwork(s.to_owned())),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Network::Auto => "auto",
            Network::Default => "default",
            Network::External => "external",
        })
    }
}

/// A node's address on the external network, as
/// `alternateAddresses.external` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlternateAddress {
    /// The external host name.
    pub hostname: String,
    /// The external plain memcached port (`ports.kv`); the internal port
    /// when absent.
    pub kv_port: Option<u16>,
    /// The external TLS memcached port (`ports.kvSSL`); the internal one
    /// when absent.
    pub kv_tls_port: Option<u16>,
}

impl AlternateAddress {
    /// An external address with explicit ports.
    pub fn new(
        hostname: impl Into<String>,
        kv_port: Option<u16>,
        kv_tls_port: Option<u16>,
    ) -> Self {
        Self {
            hostname: hostname.into(),
            kv_port,
            kv_tls_port,
        }
    }
}
