//! TLS end to end over 127.0.0.1 through the blocking adapter, with
//! certificates made at test time (rcgen): a bucket streamed over TLS
//! while it is written equals the bucket; a client trusting another CA (or
//! naming another host) is refused with a typed error; a plaintext client
//! against the TLS port, and a TLS client against a plaintext port, fail
//! cleanly; a TLS local cluster advertises its `kvSSL` ports and a
//! `couchbases://` cluster connection streams the whole bucket through
//! them across a rebalance.

use std::time::{Duration, Instant};

use dcp_blocking::{
    ClusterConnection, ClusterServer, ClusterServerHandle, Connection, Error, Server, rustls, tls,
};
use dcp_proto::auth::{Credentials, Mechanism};
use dcp_proto::cluster::{ClusterConfig, OrchestratorConfig};
use dcp_proto::consumer::{ConsumerConfig, StreamStart};
use dcp_proto::producer::{NodeConfig, NodeId};
use dcp_proto::session::Checkpoint;
use dcp_proto::testing::{MaterializedView, high_seqnos, live_documents, write_sample};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

const VBUCKETS: u16 = 8;
/// Bound on every step of a test.
const STEP: Duration = Duration::from_secs(20);

/// A CA and a server certificate it signed (for `localhost` and
/// 127.0.0.1), all PEM.
struct Pki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn make_pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn node_config() -> NodeConfig {
    NodeConfig::new("default")
        .with_vbuckets(VBUCKETS)
        .with_user("app", "secret")
        .with_scram_iterations(16)
}

fn server_tls(pki: &Pki) -> std::sync::Arc<rustls::ServerConfig> {
    tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()
}

/// A TLS server with a written bucket.
fn tls_server(pki: &Pki) -> Server {
    let server = Server::bind("127.0.0.1:0", node_config())
        .unwrap()
        .with_tls(server_tls(pki));
    server.with_node(|node| {
        let now = node.wall_clock(Instant::now());
        write_sample(node.bucket_mut(), 0, 500, now);
    });
    server
}

fn consumer_config(name: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, "default")
        .with_credentials(Credentials::new("app", "secret"))
        .with_auto_ack(true);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

fn client(pki: &Pki) -> std::sync::Arc<rustls::ClientConfig> {
    tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap()
}

#[test]
fn streams_a_bucket_over_tls() {
    let pki = make_pki();
    let server = tls_server(&pki);
    // PLAIN only: acceptable over TLS. A small window: many acks go back
    // while large batches come in, both ways through TLS.
    let mut config = consumer_config("tls:stream").with_buffer_size(16 * 1024);
    config.mechanisms = vec![Mechanism::Plain];
    let mut conn =
        Connection::connect_tls(server.local_addr(), "localhost", client(&pki), config).unwrap();
    assert!(conn.is_tls());
    for vb in 0..VBUCKETS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    // Writes while streaming go over TLS too.
    server.with_node(|node| {
        let now = node.wall_clock(Instant::now());
        write_sample(node.bucket_mut(), 500, 2000, now);
    });
    let targets = server.with_node(|node| high_seqnos(node.bucket()));
    let mut view = MaterializedView::default();
    let deadline = Instant::now() + STEP;
    while !view.reached(&targets) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = conn
            .next_event_timeout(left)
            .unwrap()
            .expect("caught up in time");
        view.apply(&event).unwrap();
    }
    server.with_node(|node| {
        for vb in 0..VBUCKETS {
            assert_eq!(
                view.live(vb),
                live_documents(node.bucket(), vb),
                "vbucket {vb}"
            );
        }
    });
    conn.close();
    server.shutdown();
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    let pki = make_pki();
    let other = make_pki();
    let server = tls_server(&pki);
    let err = Connection::connect_tls(
        server.local_addr(),
        "localhost",
        client(&other),
        consumer_config("tls:wrong-ca"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err.rustls_error(),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{err:?}"
    );
    // A wrong name with the right CA is refused as well.
    let err = Connection::connect_tls(
        server.local_addr(),
        "example.com",
        client(&pki),
        consumer_config("tls:wrong-name"),
    )
    .unwrap_err();
    assert!(
        matches!(
            err.rustls_error(),
            Some(rustls::Error::InvalidCertificate(_))
        ),
        "{err:?}"
    );
    // The insecure configuration (local testing only) accepts it, and the
    // IP address verifies with the right CA.
    let insecure = tls::insecure_client_config_for_testing().unwrap();
    Connection::connect_tls(
        server.local_addr(),
        "example.com",
        insecure,
        consumer_config("tls:insecure"),
    )
    .unwrap();
    let conn = Connection::connect_tls(
        server.local_addr(),
        "127.0.0.1",
        client(&pki),
        consumer_config("tls:ip"),
    )
    .unwrap();
    assert!(conn.negotiated().is_some());
    server.shutdown();
}

#[test]
fn a_plaintext_client_against_the_tls_port_fails_cleanly() {
    let pki = make_pki();
    let server = tls_server(&pki);
    let started = Instant::now();
    let err = Connection::connect(server.local_addr(), consumer_config("tls:plain")).unwrap_err();
    // The server drops a client whose first bytes are not TLS; the client
    // sees a typed error at once, not a hang or a panic.
    assert!(matches!(err, Error::Consumer(_) | Error::Io(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "{err:?}");
    let end = server
        .handle()
        .next_ended(STEP)
        .expect("the server ends the connection");
    assert!(
        matches!(end.reason, dcp_blocking::EndReason::Io(_)),
        "{:?}",
        end.reason
    );
    server.shutdown();
}

#[test]
fn a_tls_client_against_a_plaintext_port_fails_cleanly() {
    let pki = make_pki();
    let server = Server::bind("127.0.0.1:0", node_config()).unwrap();
    let err = Connection::connect_tls(
        server.local_addr(),
        "localhost",
        client(&pki),
        consumer_config("tls:to-plain"),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::Tls { .. } | Error::TlsTimeout { .. }),
        "{err:?}"
    );
    server.shutdown();
}

#[test]
fn bad_pem_is_a_typed_error() {
    assert!(matches!(
        tls::client_config_from_pem(b"not a certificate"),
        Err(Error::TlsConfig(_))
    ));
    let pki = make_pki();
    let other = make_pki();
    assert!(matches!(
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), other.key_pem.as_bytes()),
        Err(Error::TlsConfig(_))
    ));
}

/// Whether the view equals every vbucket's active copy in the cluster.
fn cluster_synced(handle: &ClusterServerHandle, view: &MaterializedView) -> bool {
    handle.with_cluster(|cluster| {
        (0..VBUCKETS).all(|vb| {
            let Some(owner) = cluster.active_node(vb) else {
                return true;
            };
            let bucket = cluster.node(owner).unwrap().bucket();
            view.live(vb) == live_documents(bucket, vb)
                && view.last_seqno(vb) == bucket.vbucket(vb).unwrap().high_seqno()
        })
    })
}

fn cluster_write(handle: &ClusterServerHandle, from: u64, n: u64) {
    for i in from..from + n {
        let key = format!("key-{}", i % 113);
        if i % 13 == 0 {
            let _ = handle.delete(key.as_bytes());
        } else {
            handle
                .set(key.as_bytes(), format!("{{\"n\":{i}}}"))
                .unwrap();
        }
    }
}

#[test]
fn a_couchbases_cluster_connection_streams_through_the_kv_ssl_ports() {
    const NODES: usize = 3;
    let pki = make_pki();
    let server = ClusterServer::bind("127.0.0.1:0".parse().unwrap(), NODES, 1, node_config())
        .unwrap()
        .with_tls(server_tls(&pki));
    let handle = server.handle();
    cluster_write(&handle, 0, 300);

    // The config advertises every node's TLS port.
    let json = handle.with_cluster(|cluster| cluster.config_json());
    let parsed = ClusterConfig::parse(&json, "127.0.0.1").unwrap();
    assert_eq!(parsed.kv_nodes().len(), NODES);
    for node in parsed.kv_nodes() {
        assert_eq!(node.tls_port, Some(node.address.port()));
    }
    let connection_string = handle.connection_string();
    assert!(
        connection_string.starts_with("couchbases://127.0.0.1:"),
        "{connection_string}"
    );

    // couchbases:// without a TLS configuration is a typed error, not a
    // plaintext attempt; a plaintext client is refused by every node.
    let err = ClusterConnection::connect(
        &connection_string,
        consumer_config("tls:cluster-no-config"),
        OrchestratorConfig::new(),
        Checkpoint::new(),
    )
    .unwrap_err();
    assert!(matches!(err, Error::TlsConfig(_)), "{err:?}");
    for addr in handle.node_addrs() {
        let err = Connection::connect(addr, consumer_config("tls:cluster-plain")).unwrap_err();
        assert!(matches!(err, Error::Consumer(_) | Error::Io(_)), "{err:?}");
    }

    let settings = OrchestratorConfig::new().with_config_poll_interval(Duration::from_millis(200));
    let mut conn = ClusterConnection::connect_tls(
        &connection_string,
        client(&pki),
        consumer_config("tls:cluster").with_buffer_size(16 * 1024),
        settings,
        Checkpoint::new(),
    )
    .unwrap();
    let mut view = MaterializedView::default();
    // Writes while streaming, and a rebalance: the moved stream reopens
    // over TLS on its new node (a command carried out by a woken node
    // thread).
    cluster_write(&handle, 300, 300);
    handle.rebalance(&[(0, NodeId(1))]).unwrap();
    cluster_write(&handle, 600, 100);
    let deadline = Instant::now() + STEP;
    while !cluster_synced(&handle, &view) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = conn
            .next_event_timeout(left)
            .unwrap()
            .expect("caught up in time");
        view.apply(&event).unwrap();
    }
    assert_eq!(conn.connected_nodes().len(), NODES);
    drop(conn);
    server.shutdown();
}
