//! A local cluster whose data ports serve TLS lists them as `kvSSL` in its
//! config, and the parsed config gives `couchbases://` clients their TLS
//! addresses; without TLS it lists none.

use dcp_proto::cluster::ClusterConfig;
use dcp_proto::producer::{LocalCluster, NodeConfig};

#[test]
fn kv_tls_ports_are_advertised_only_when_set() {
    let mut cluster = LocalCluster::new(NodeConfig::new("default").with_vbuckets(8), 3, 1);
    let plain = ClusterConfig::parse(&cluster.config_json(), "127.0.0.1").unwrap();
    assert!(plain.kv_nodes().iter().all(|n| n.tls_port.is_none()));

    let rev = cluster.rev();
    cluster.set_kv_tls(true);
    assert!(cluster.rev() > rev, "a new revision is published");
    let config = ClusterConfig::parse(&cluster.config_json(), "127.0.0.1").unwrap();
    assert_eq!(config.kv_nodes().len(), 3);
    for node in config.kv_nodes() {
        assert_eq!(node.tls_port, Some(node.address.port()));
        assert_eq!(node.tls_address(), Some(node.address.clone()));
    }
    // Still listed after topology changes.
    cluster.add_node().unwrap();
    let config = ClusterConfig::parse(&cluster.config_json(), "127.0.0.1").unwrap();
    assert!(config.kv_nodes().iter().all(|n| n.tls_port.is_some()));

    // Setting it again changes nothing; clearing it drops the ports.
    let rev = cluster.rev();
    cluster.set_kv_tls(true);
    assert_eq!(cluster.rev(), rev);
    cluster.set_kv_tls(false);
    let config = ClusterConfig::parse(&cluster.config_json(), "127.0.0.1").unwrap();
    assert!(config.kv_nodes().iter().all(|n| n.tls_port.is_none()));
}
