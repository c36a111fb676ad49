//! Bucket configs: real-looking fixtures (one node with `$HOST`, three nodes
//! with replicas, a rebalance with a forward map, a pre-5.0 config), the
//! config our own producer serves, malformed configs, and key hashing
//! against values published by other Couchbase clients.

mod producer_harness;

use dcp_proto::cluster::{ClusterConfig, ConfigError, ConfigVersion, NodeAddress};
use dcp_proto::msg::client::{GetClusterConfig, GetClusterConfigResponse};
use producer_harness::{Harness, config};

const SINGLE: &[u8] = include_bytes!("cluster_fixtures/single_node.json");
const THREE: &[u8] = include_bytes!("cluster_fixtures/three_nodes.json");
const REBALANCE: &[u8] = include_bytes!("cluster_fixtures/rebalance.json");
const LEGACY: &[u8] = include_bytes!("cluster_fixtures/legacy.json");

fn addr(s: &str) -> NodeAddress {
    s.parse().unwrap()
}

#[test]
fn single_node_substitutes_host() {
    let c = ClusterConfig::parse(SINGLE, "192.168.1.20").unwrap();
    assert_eq!(
        c.version(),
        ConfigVersion {
            epoch: 1,
            rev: 1073
        }
    );
    assert_eq!(c.name(), "travel-sample");
    assert_eq!(c.uuid(), "3b2c4e3e8f5f1f0a2a0c0d5e6b7a8c9d");
    assert_eq!(c.num_vbuckets(), 1024);
    assert_eq!(c.num_replicas(), 1);
    assert!(!c.is_rebalancing());
    let node = &c.servers()[0];
    assert_eq!(node.address, addr("192.168.1.20:11210"));
    assert_eq!(node.tls_port, Some(11207));
    assert!(node.this_node);
    assert_eq!(c.kv_nodes(), c.servers());
    for vb in [0, 511, 1023] {
        assert_eq!(c.active_node(vb), Some(node));
        // The replica slot is -1: no replica node.
        assert!(c.replicas(vb).is_empty());
    }
    assert_eq!(c.active_node(1024), None);
    assert_eq!(c.active_vbuckets(&node.address).count(), 1024);

    // IPv6 source: bracketed in addresses, with or without brackets given.
    for source in ["fd00::20", "[fd00::20]"] {
        let c = ClusterConfig::parse(SINGLE, source).unwrap();
        let node = c.active_node(3).unwrap();
        assert_eq!(node.address.host(), "fd00::20");
        assert_eq!(node.address.to_string(), "[fd00::20]:11210");
        assert_eq!(node.tls_address().unwrap().to_string(), "[fd00::20]:11207");
    }
}

#[test]
fn three_nodes_with_replicas() {
    let c = ClusterConfig::parse(THREE, "cb2.example.com").unwrap();
    assert_eq!(
        c.version(),
        ConfigVersion {
            epoch: 3,
            rev: 2210
        }
    );
    let names: Vec<String> = c.servers().iter().map(|n| n.address.to_string()).collect();
    assert_eq!(
        names,
        [
            "cb1.example.com:11210",
            "cb2.example.com:11210",
            "cb3.example.com:11210"
        ]
    );
    // The query-only node is no data node.
    assert_eq!(c.kv_nodes().len(), 3);
    assert!(c.kv_nodes().iter().all(|n| n.tls_port == Some(11207)));
    assert_eq!(
        c.servers().iter().map(|n| n.this_node).collect::<Vec<_>>(),
        [false, true, false]
    );
    let active = |vb| c.active_node(vb).unwrap().address.to_string();
    let replica = |vb| c.replicas(vb)[0].address.to_string();
    assert_eq!(active(0), "cb1.example.com:11210");
    assert_eq!(replica(0), "cb2.example.com:11210");
    assert_eq!(active(341), "cb1.example.com:11210");
    assert_eq!(active(342), "cb2.example.com:11210");
    assert_eq!(active(1023), "cb3.example.com:11210");
    assert_eq!(replica(1023), "cb1.example.com:11210");
    let on = |s: &str| c.active_vbuckets(&addr(s)).count();
    assert_eq!(
        on("cb1.example.com:11210") + on("cb2.example.com:11210") + on("cb3.example.com:11210"),
        1024
    );
    assert_eq!(on("cb4.example.com:11210"), 0);
}

#[test]
fn rebalance_has_a_forward_map() {
    let c = ClusterConfig::parse(REBALANCE, "cb2.example.com").unwrap();
    let old = ClusterConfig::parse(THREE, "cb2.example.com").unwrap();
    assert!(c.is_newer_than(&old));
    assert!(!old.is_newer_than(&c));
    assert!(c.is_rebalancing());
    assert_eq!(c.servers().len(), 4);
    let cb4 = addr("cb4.example.com:11210");
    // Moved already: active on the new node.
    assert_eq!(c.active_node(800).unwrap().address, cb4);
    // Not moved yet: still on cb3, heading for cb4.
    assert_eq!(
        c.active_node(900).unwrap().address,
        addr("cb3.example.com:11210")
    );
    assert_eq!(c.forward_active_node(900).unwrap().address, cb4);
    assert_eq!(c.active_vbuckets(&cb4).count(), 100);
    assert_eq!(old.forward_active_node(900), None);
}

#[test]
fn legacy_config_uses_nodes() {
    let c = ClusterConfig::parse(LEGACY, "10.0.0.11").unwrap();
    // No revEpoch: epoch 0, older than any epoch-1 config.
    assert_eq!(c.version(), ConfigVersion { epoch: 0, rev: 88 });
    assert!(ClusterConfig::parse(SINGLE, "h").unwrap().is_newer_than(&c));
    assert_eq!(c.num_vbuckets(), 64);
    assert_eq!(c.num_replicas(), 2);
    let kv: Vec<String> = c.kv_nodes().iter().map(|n| n.address.to_string()).collect();
    assert_eq!(kv, ["10.0.0.11:11210", "10.0.0.12:11210"]);
    assert!(c.kv_nodes().iter().all(|n| n.tls_port.is_none()));
    assert!(c.servers()[1].this_node);
    assert_eq!(c.active_node(1).unwrap().address, addr("10.0.0.12:11210"));
    // Two replica slots, the second unassigned.
    assert_eq!(c.replicas(1).len(), 1);
    assert_eq!(c.replicas(1)[0].address, addr("10.0.0.11:11210"));
}

#[test]
fn our_producer_config_parses() {
    let mut h = Harness::new(config(8));
    let mut client = h.connect();
    h.login(&mut client);
    let frame = h.request(&mut client, |b| {
        GetClusterConfig {
            opaque: 7,
            known: None,
        }
        .encode(b)
    });
    let response = GetClusterConfigResponse::decode(&frame).unwrap();
    let c = ClusterConfig::parse(&response.config, "127.0.0.1").unwrap();
    assert_eq!(c.name(), "default");
    assert_eq!(c.num_vbuckets(), 8);
    assert!(c.version().epoch >= 1);
    let node = c.active_node(5).unwrap();
    assert_eq!(node.address, addr("127.0.0.1:11210"));
    assert!(node.this_node);
    assert_eq!(c.kv_nodes(), c.servers());
}

#[test]
fn empty_host_names_mean_the_source() {
    let json = br#"{"rev":1,"nodesExt":[{"services":{"kv":12000}}],
        "vBucketServerMap":{"serverList":["$HOST:12000"],"vBucketMap":[[0]]}}"#;
    let c = ClusterConfig::parse(json, "localhost").unwrap();
    assert_eq!(c.kv_nodes()[0].address, addr("localhost:12000"));
    assert_eq!(c.servers()[0].address, addr("localhost:12000"));
    // No hash algorithm and no locator: CRC and vbucket assumed.
    assert_eq!(c.vbucket_for_key(b"x"), 0);
}

#[test]
fn malformed_configs_are_refused() {
    fn err(json: &str) -> ConfigError {
        ClusterConfig::parse(json.as_bytes(), "h").unwrap_err()
    }
    let map = |m: &str| format!(r#"{{"rev":1,"vBucketServerMap":{m}}}"#);
    assert!(matches!(err(""), ConfigError::Empty));
    assert!(matches!(err("  \n"), ConfigError::Empty));
    assert!(matches!(err("{"), ConfigError::Json(_)));
    assert!(matches!(err("[]"), ConfigError::Json(_)));
    // `rev` is required.
    assert!(matches!(
        err(r#"{"vBucketServerMap":{"serverList":[],"vBucketMap":[[-1]]}}"#),
        ConfigError::Json(_)
    ));
    assert!(matches!(err(r#"{"rev":"x"}"#), ConfigError::Json(_)));
    // A port out of range.
    assert!(matches!(
        err(r#"{"rev":1,"nodesExt":[{"services":{"kv":70000}}]}"#),
        ConfigError::Json(_)
    ));
    assert!(matches!(
        err(r#"{"rev":1}"#),
        ConfigError::MissingVbucketMap
    ));
    assert!(matches!(
        err(r#"{"rev":1,"nodeLocator":"ketama","nodes":[]}"#),
        ConfigError::UnsupportedNodeLocator(l) if l == "ketama"
    ));
    assert!(matches!(
        err(&map(r#"{"hashAlgorithm":"MD5","serverList":[],"vBucketMap":[[-1]]}"#)),
        ConfigError::UnsupportedHashAlgorithm(a) if a == "MD5"
    ));
    assert!(matches!(
        err(&map(r#"{"serverList":["nohost"],"vBucketMap":[[0]]}"#)),
        ConfigError::InvalidServer(_)
    ));
    assert!(matches!(
        err(&map(r#"{"serverList":["h:1"],"vBucketMap":[]}"#)),
        ConfigError::NoVbuckets
    ));
    assert!(matches!(
        err(&map(r#"{"serverList":["h:1"],"vBucketMap":[[0],[]]}"#)),
        ConfigError::EmptyChain {
            vbucket: 1,
            forward: false
        }
    ));
    assert!(matches!(
        err(&map(r#"{"serverList":["h:1"],"vBucketMap":[[0],[1]]}"#)),
        ConfigError::BadServerIndex {
            vbucket: 1,
            index: 1,
            servers: 1,
            forward: false
        }
    ));
    assert!(matches!(
        err(&map(r#"{"serverList":["h:1"],"vBucketMap":[[-2]]}"#)),
        ConfigError::BadServerIndex { index: -2, .. }
    ));
    assert!(matches!(
        err(&map(
            r#"{"serverList":["h:1"],"vBucketMap":[[0],[0]],"vBucketMapForward":[[0]]}"#
        )),
        ConfigError::ForwardMapLength {
            expected: 2,
            got: 1
        }
    ));
    assert!(matches!(
        err(&map(
            r#"{"serverList":["h:1"],"vBucketMap":[[0]],"vBucketMapForward":[[5]]}"#
        )),
        ConfigError::BadServerIndex { forward: true, .. }
    ));
    let too_many = format!(
        r#"{{"rev":1,"vBucketServerMap":{{"serverList":[],"vBucketMap":[{}]}}}}"#,
        vec!["[-1]"; 65536].join(",")
    );
    assert!(matches!(
        err(&too_many),
        ConfigError::TooManyVbuckets(65536)
    ));
    // Errors say what is wrong.
    assert_eq!(
        err(&map(r#"{"serverList":["h:1"],"vBucketMap":[[0],[1]]}"#)).to_string(),
        "vbucket 1 names server 1, but serverList has 1 (forward map: false)"
    );
}

#[test]
fn versions_order_epoch_first() {
    let v = |epoch, rev| ConfigVersion { epoch, rev };
    assert!(v(1, 10) < v(1, 11));
    assert!(v(1, 999) < v(2, 1));
    assert!(v(0, 5000) < v(1, 1));
    assert_eq!(v(2, 7).to_string(), "2.7");
}

/// Key to vbucket, against values published with libvbucket's tests (4
/// vbuckets), go-couchbase's (256) and cbgb's (1024).
#[test]
fn keys_hash_like_couchbase() {
    let with_vbuckets = |n: usize| {
        let json = format!(
            r#"{{"rev":1,"vBucketServerMap":{{"hashAlgorithm":"CRC","serverList":["h:1"],"vBucketMap":[{}]}}}}"#,
            vec!["[0]"; n].join(",")
        );
        ClusterConfig::parse(json.as_bytes(), "h").unwrap()
    };
    let four = with_vbuckets(4);
    for (key, vb) in [
        ("hello", 0),
        ("doctor", 0),
        ("name", 3),
        ("continue", 3),
        ("yesterday", 0),
        ("tomorrow", 1),
        ("another key", 2),
    ] {
        assert_eq!(four.vbucket_for_key(key.as_bytes()), vb, "{key}");
    }
    let c256 = with_vbuckets(256);
    for (key, vb) in [
        ("k0", 9),
        ("k1", 14),
        ("k2", 7),
        ("k3", 0),
        ("k4", 100),
        ("k5", 99),
    ] {
        assert_eq!(c256.vbucket_for_key(key.as_bytes()), vb, "{key}");
    }
    assert_eq!(with_vbuckets(1024).vbucket_for_key(b"hello"), 528);
}

const ALTERNATE: &[u8] = include_bytes!("cluster_fixtures/alternate_addresses.json");

mod alternate_addresses {
    use dcp_proto::cluster::{
        AlternateAddress, ClusterConfig, ClusterOrchestrator, Network, OrchestratorConfig,
    };
    use dcp_proto::session::Checkpoint;

    use super::{ALTERNATE, THREE, addr};

    #[test]
    fn external_addresses_are_parsed() {
        let c = ClusterConfig::parse(ALTERNATE, "172.16.0.11").unwrap();
        let servers = c.servers();
        assert_eq!(servers[0].address, addr("172.16.0.11:11210"));
        assert_eq!(
            servers[0].alternate,
            Some(AlternateAddress::new(
                "node1.ext.example.com",
                Some(31210),
                Some(31207)
            ))
        );
        assert_eq!(
            servers[1].alternate,
            Some(AlternateAddress::new("node2.ext.example.com", None, None))
        );
        assert_eq!(servers[2].alternate, None);
        assert_eq!(c.kv_nodes()[0].alternate, servers[0].alternate);
    }

    #[test]
    fn the_external_network_addresses_every_node_by_its_external_name() {
        let c = ClusterConfig::parse(ALTERNATE, "172.16.0.11")
            .unwrap()
            .for_network(Network::External);
        let servers = c.servers();
        assert_eq!(servers[0].address, addr("node1.ext.example.com:31210"));
        assert_eq!(servers[0].tls_port, Some(31207));
        // No external ports: the internal ones.
        assert_eq!(servers[1].address, addr("node2.ext.example.com:11210"));
        assert_eq!(servers[1].tls_port, Some(11207));
        // No external address at all: the internal one.
        assert_eq!(servers[2].address, addr("172.16.0.13:11210"));
        // The map follows: vb 0 is on node 1, vb 1 on node 2.
        assert_eq!(
            c.active_node(0).unwrap().address,
            addr("node1.ext.example.com:31210")
        );
        assert_eq!(
            c.active_node(1).unwrap().address,
            addr("node2.ext.example.com:11210")
        );
        assert_eq!(c.kv_nodes()[0].address, servers[0].address);
        // Idempotent, and the default network changes nothing.
        assert_eq!(c.clone().for_network(Network::External), c);
        let internal = ClusterConfig::parse(ALTERNATE, "172.16.0.11").unwrap();
        assert_eq!(internal.clone().for_network(Network::Default), internal);
    }

    #[test]
    fn auto_picks_external_only_for_an_external_seed() {
        let c = ClusterConfig::parse(ALTERNATE, "172.16.0.11").unwrap();
        assert_eq!(
            c.resolve_network(Network::Auto, ["node2.ext.example.com"]),
            Network::External
        );
        assert_eq!(
            c.resolve_network(Network::Auto, ["NODE1.EXT.example.com"]),
            Network::External
        );
        assert_eq!(
            c.resolve_network(Network::Auto, ["172.16.0.12"]),
            Network::Default
        );
        assert_eq!(
            c.resolve_network(Network::Auto, ["somewhere.else"]),
            Network::Default
        );
        assert_eq!(
            c.resolve_network(Network::External, ["172.16.0.12"]),
            Network::External
        );
        assert_eq!(
            c.resolve_network(Network::Default, ["node1.ext.example.com"]),
            Network::Default
        );
        // A config without alternate addresses is always on the default one.
        let plain = ClusterConfig::parse(THREE, "cb1.example.com").unwrap();
        assert_eq!(
            plain.resolve_network(Network::Auto, ["cb1.example.com"]),
            Network::Default
        );
        assert_eq!(
            plain.clone().for_network(Network::External),
            plain,
            "nodes without external addresses keep theirs"
        );
    }

    fn connects(settings: OrchestratorConfig, seed: &str) -> Vec<String> {
        let mut orch = ClusterOrchestrator::new(settings, Checkpoint::new());
        orch.handle_config(ALTERNATE, seed, std::time::Instant::now())
            .unwrap();
        let mut out: Vec<String> = std::iter::from_fn(|| orch.poll_action())
            .filter_map(|a| match a {
                dcp_proto::cluster::Action::Connect(node) => Some(node.address.to_string()),
                _ => None,
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn the_orchestrator_connects_on_the_network_its_seed_implies() {
        assert_eq!(
            connects(OrchestratorConfig::new(), "node1.ext.example.com"),
            [
                "172.16.0.13:11210",
                "node1.ext.example.com:31210",
                "node2.ext.example.com:11210"
            ]
        );
        assert_eq!(
            connects(OrchestratorConfig::new(), "172.16.0.11"),
            [
                "172.16.0.11:11210",
                "172.16.0.12:11210",
                "172.16.0.13:11210"
            ]
        );
        assert_eq!(
            connects(
                OrchestratorConfig::new().with_network(Network::External),
                "172.16.0.11"
            ),
            [
                "172.16.0.13:11210",
                "node1.ext.example.com:31210",
                "node2.ext.example.com:11210"
            ]
        );
        assert_eq!(
            connects(
                OrchestratorConfig::new().with_network(Network::Default),
                "node1.ext.example.com"
            ),
            [
                "172.16.0.11:11210",
                "172.16.0.12:11210",
                "172.16.0.13:11210"
            ]
        );
    }

    #[test]
    fn later_configs_stay_on_the_chosen_network() {
        let mut orch = ClusterOrchestrator::new(OrchestratorConfig::new(), Checkpoint::new());
        let now = std::time::Instant::now();
        orch.handle_config(ALTERNATE, "node1.ext.example.com", now)
            .unwrap();
        assert_eq!(orch.network(), Some(Network::External));
        let newer = String::from_utf8(ALTERNATE.to_vec())
            .unwrap()
            .replace("\"rev\": 5120", "\"rev\": 5121");
        // Pushed by a node reached on its external address.
        orch.handle_config(newer.as_bytes(), "node2.ext.example.com", now)
            .unwrap();
        let config = orch.config().unwrap();
        assert_eq!(config.version().rev, 5121);
        assert_eq!(
            config.servers()[0].address,
            addr("node1.ext.example.com:31210")
        );
    }
}
