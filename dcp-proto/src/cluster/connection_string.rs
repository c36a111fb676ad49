//! `couchbase://host1:port,host2/bucket` (and TLS `couchbases://...`)
//! connection strings: the seed nodes a cluster consumer bootstraps from
//! (sans-IO: parsing only).

use std::fmt;

use super::{Network, OrchestratorConfig};
use crate::consumer::{ConfigPush, ConsumerConfig};

/// The default data port of `couchbase://` seeds.
pub const DEFAULT_KV_PORT: u16 = 11210;

/// The default TLS data port of `couchbases://` seeds.
pub const DEFAULT_KV_TLS_PORT: u16 = 11207;

/// A parsed `couchbase://host[:port][,host[:port]...][/bucket]` string:
/// the seed nodes to bootstrap from and the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// The seed nodes, `(host, port)` (port 11210 when not given, 11207
    /// with `couchbases://`).
    pub seeds: Vec<(String, u16)>,
    /// The bucket, if the string names one.
    pub bucket: Option<String>,
    /// `couchbases://`: every connection (seeds and data nodes, on their
    /// `kvSSL` ports) uses TLS.
    pub tls: bool,
    /// The `network` option (`?network=external`; default `auto`): which
    /// node addresses to use (pass it on with
    /// [`OrchestratorConfig::with_network`](super::OrchestratorConfig::with_network)).
    pub network: Network,
}

/// Why a connection string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid connection string {input:?}: {reason}")]
pub struct InvalidConnectionString {
    /// The string.
    pub input: String,
    /// What is wrong.
    pub reason: &'static str,
}

impl ConnectionString {
    /// Parses `couchbase://h1[:p1],h2[:p2]/bucket` or, for TLS,
    /// `couchbases://...` (the scheme may be omitted: plain). IPv6 hosts go
    /// in brackets: `[::1]:11210`.
    pub fn parse(input: &str) -> Result<Self, InvalidConnectionString> {
        let bad = |reason| InvalidConnectionString {
            input: input.to_owned(),
            reason,
        };
        let (rest, tls) = if let Some(rest) = input.strip_prefix("couchbase://") {
            (rest, false)
        } else if let Some(rest) = input.strip_prefix("couchbases://") {
            (rest, true)
        } else if input.contains("://") {
            return Err(bad("the scheme must be couchbase:// or couchbases://"));
        } else {
            (input, false)
        };
        let default_port = if tls {
            DEFAULT_KV_TLS_PORT
        } else {
            DEFAULT_KV_PORT
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut network = Network::Auto;
        for option in query.split('&').filter(|o| !o.is_empty()) {
            let (key, value) = option.split_once('=').unwrap_or((option, ""));
            // Other SDK options are ignored: they tune what this crate does not do.
            if key == "network" {
                network = value
                    .parse()
                    .map_err(|_| bad("network must be auto, default or external"))?;
            }
        }
        let (hosts, bucket) = match rest.split_once('/') {
            Some((hosts, bucket)) => (hosts, Some(bucket.trim_end_matches('/'))),
            None => (rest, None),
        };
        let mut seeds = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            seeds.push(
                parse_host(host, default_port).ok_or_else(|| bad("a host has an invalid port"))?,
            );
        }
        if seeds.is_empty() {
            return Err(bad("no host"));
        }
        let bucket = bucket.filter(|b| !b.is_empty()).map(str::to_owned);
        Ok(ConnectionString {
            seeds,
            bucket,
            tls,
            network,
        })
    }
}

/// `host`, `host:port`, `[v6]` or `[v6]:port` (`default_port` when none).
fn parse_host(host: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(v6) = host.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((addr.to_owned(), port));
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') => Some((name.to_owned(), port.parse().ok()?)),
        Some(_) => Some((host.to_owned(), default_port)),
        None => Some((host.to_owned(), default_port)),
    }
}

impl ConnectionString {
    /// Sets up a cluster client's consumer and orchestrator configs from
    /// the string: its bucket (if it names one), its `network` option
    /// (unless the orchestrator config chose one), config pushes from the
    /// nodes (brief notifications, deduplicated NOT_MY_VBUCKET configs)
    /// unless the consumer config chose them, and automatic acks (the
    /// cluster client hands out events it has already taken).
    pub fn configure(&self, config: &mut ConsumerConfig, settings: &mut OrchestratorConfig) {
        if let Some(bucket) = &self.bucket {
            config.bucket.clone_from(bucket);
        }
        if settings.network == Network::Auto {
            settings.network = self.network;
        }
        if config.config_push == ConfigPush::Off {
            config.config_push = ConfigPush::Brief;
            config.dedupe_not_my_vbucket = true;
        }
        config.auto_ack = true;
    }
}

impl fmt::Display for ConnectionString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seeds: Vec<String> = self
            .seeds
            .iter()
            .map(|(h, p)| {
                if h.contains(':') {
                    format!("[{h}]:{p}")
                } else {
                    format!("{h}:{p}")
                }
            })
            .collect();
        let scheme = if self.tls { "couchbases" } else { "couchbase" };
        write!(f, "{scheme}://{}", seeds.join(","))?;
        if let Some(bucket) = &self.bucket {
            write!(f, "/{bucket}")?;
        }
        if self.network != Network::Auto {
            write!(f, "?network={}", self.network)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_seeds_ports_and_bucket() {
        let cs = ConnectionString::parse("couchbase://a,b:11300,[::1]:9/travel").unwrap();
        assert_eq!(
            cs.seeds,
            [
                ("a".to_owned(), 11210),
                ("b".to_owned(), 11300),
                ("::1".to_owned(), 9)
            ]
        );
        assert_eq!(cs.bucket.as_deref(), Some("travel"));
        assert_eq!(cs.to_string(), "couchbase://a:11210,b:11300,[::1]:9/travel");
        let bare = ConnectionString::parse("10.0.0.1").unwrap();
        assert_eq!(bare.seeds, [("10.0.0.1".to_owned(), 11210)]);
        assert_eq!(bare.bucket, None);
        assert!(!bare.tls);
        assert!(ConnectionString::parse("http://a").is_err());
        assert!(ConnectionString::parse("couchbase:///b").is_err());
        assert!(ConnectionString::parse("couchbase://a:x/b").is_err());
    }

    #[test]
    fn couchbases_means_tls_on_port_11207_by_default() {
        let cs = ConnectionString::parse("couchbases://a,b:11300,[::1]/travel").unwrap();
        assert!(cs.tls);
        assert_eq!(
            cs.seeds,
            [
                ("a".to_owned(), 11207),
                ("b".to_owned(), 11300),
                ("::1".to_owned(), 11207)
            ]
        );
        assert_eq!(
            cs.to_string(),
            "couchbases://a:11207,b:11300,[::1]:11207/travel"
        );
        assert_eq!(ConnectionString::parse(&cs.to_string()).unwrap(), cs);
        assert!(ConnectionString::parse("couchbasess://a").is_err());
    }

    #[test]
    fn configures_a_cluster_client() {
        let cs = ConnectionString::parse("couchbase://a/travel?network=external").unwrap();
        let mut config = ConsumerConfig::new("app", "default");
        let mut settings = OrchestratorConfig::new();
        cs.configure(&mut config, &mut settings);
        assert_eq!(config.bucket, "travel");
        assert_eq!(settings.network, Network::External);
        assert_eq!(config.config_push, ConfigPush::Brief);
        assert!(config.dedupe_not_my_vbucket && config.auto_ack);
        // What the caller chose stays.
        let mut config = ConsumerConfig::new("app", "default").with_config_push(ConfigPush::Full);
        let mut settings = OrchestratorConfig::new().with_network(Network::Default);
        cs.configure(&mut config, &mut settings);
        assert_eq!(
            (config.config_push, settings.network),
            (ConfigPush::Full, Network::Default)
        );
    }

    #[test]
    fn network_option() {
        let cs = ConnectionString::parse("couchbase://a,b/travel?network=external").unwrap();
        assert_eq!(cs.network, Network::External);
        assert_eq!(cs.bucket.as_deref(), Some("travel"));
        assert_eq!(cs.seeds.len(), 2);
        assert_eq!(
            cs.to_string(),
            "couchbase://a:11210,b:11210/travel?network=external"
        );
        let other = ConnectionString::parse("couchbase://a?kv_timeout=5s&network=default").unwrap();
        assert_eq!(other.network, Network::Default);
        assert_eq!(other.bucket, None);
        assert_eq!(
            ConnectionString::parse("a/b").unwrap().network,
            Network::Auto
        );
        assert!(ConnectionString::parse("couchbase://a/b?network=lan").is_err());
    }
}
