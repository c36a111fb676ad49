//! Where a data node listens: its KV address (the node's identity in a
//! cluster config) and the TLS port next to it.

use std::fmt;
use std::str::FromStr;

/// A data node's KV address: host and plain (non-TLS) memcached port, as
/// the config's `serverList` names it. It identifies a node across config
/// revisions.
///
/// The host is kept without IPv6 brackets; [`Display`](fmt::Display) adds
/// them back (`[::1]:11210`).
///
/// ```
/// use dcp_proto::cluster::NodeAddress;
/// let a: NodeAddress = "[::1]:11210".parse()?;
/// assert_eq!((a.host(), a.port()), ("::1", 11210));
/// assert_eq!(a.to_string(), "[::1]:11210");
/// assert_eq!(NodeAddress::new("10.0.0.1", 11210).to_string(), "10.0.0.1:11210");
/// # Ok::<(), dcp_proto::cluster::InvalidAddress>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddress {
    host: String,
    port: u16,
}

impl NodeAddress {
    /// The address `host:port`; brackets around an IPv6 host are removed.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        let host = host.into();
        Self {
            host: unbracket(&host).to_owned(),
            port,
        }
    }

    /// The host name or IP address, without brackets.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The plain memcached port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for NodeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A `host:port` string that is not one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host:port address {0:?}")]
pub struct InvalidAddress(pub String);

impl FromStr for NodeAddress {
    type Err = InvalidAddress;

    /// Parses `host:port`, `[v6]:port` (a bare IPv6 address has no port and
    /// is refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidAddress(s.to_owned());
        let (host, port) = s.rsplit_once(':').ok_or_else(invalid)?;
        let host = if let Some(inner) = host.strip_prefix('[') {
            inner.strip_suffix(']').ok_or_else(invalid)?
        } else if host.contains(':') || host.contains(']') {
            return Err(invalid());
        } else {
            host
        };
        let port: u16 = port.parse().map_err(|_| invalid())?;
        if host.is_empty() || port == 0 {
            return Err(invalid());
        }
        Ok(Self::new(host, port))
    }
}

/// A data node as a cluster config describes it: where to connect, with or
/// without TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvNode {
    /// The plain memcached address (the node's identity).
    pub address: NodeAddress,
    /// The TLS memcached port (`kvSSL`), if the config lists one.
    pub tls_port: Option<u16>,
    /// Whether the config says this is the node that served it.
    pub this_node: bool,
    /// The node's external address (`alternateAddresses.external`), if
    /// the config lists one. A config switched to the external network
    /// ([`ClusterConfig::for_network`](super::ClusterConfig::for_network))
    /// already uses it as `address`.
    pub alternate: Option<super::AlternateAddress>,
}

impl KvNode {
    /// A node at `address` with no TLS port known.
    pub fn new(address: NodeAddress) -> Self {
        Self {
            address,
            tls_port: None,
            this_node: false,
            alternate: None,
        }
    }

    /// The TLS address, if the node has a TLS port.
    pub fn tls_address(&self) -> Option<NodeAddress> {
        self.tls_port
            .map(|port| NodeAddress::new(self.address.host(), port))
    }
}

/// `host` without the brackets of an IPv6 literal.
pub(crate) fn unbracket(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

/// `host` ready to be followed by `:port` (IPv6 literals bracketed).
pub(crate) fn bracket(host: &str) -> String {
    let host = unbracket(host);
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let a: NodeAddress = "db1.example.com:11210".parse().unwrap();
        assert_eq!(a, NodeAddress::new("db1.example.com", 11210));
        assert_eq!(a.to_string(), "db1.example.com:11210");
        let v6: NodeAddress = "[fd00::1]:11207".parse().unwrap();
        assert_eq!(v6.host(), "fd00::1");
        assert_eq!(
            NodeAddress::new("[fd00::1]", 1),
            NodeAddress::new("fd00::1", 1)
        );
        for bad in [
            "",
            "host",
            "host:",
            ":11210",
            "host:0",
            "host:70000",
            "fd00::1",
            "[fd00::1",
            "[::1]x:1",
            "a]:1",
        ] {
            assert!(bad.parse::<NodeAddress>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn brackets() {
        assert_eq!(bracket("::1"), "[::1]");
        assert_eq!(bracket("[::1]"), "[::1]");
        assert_eq!(bracket("10.0.0.1"), "10.0.0.1");
        let node = KvNode {
            tls_port: Some(11207),
            ..KvNode::new(NodeAddress::new("::1", 11210))
        };
        assert_eq!(node.tls_address().unwrap().to_string(), "[::1]:11207");
    }
}
