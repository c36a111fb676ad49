//! TLS end to end over 127.0.0.1 through the futures-io adapter, under
//! async-std and under smol, with certificates made at test time (rcgen):
//! a bucket streamed over TLS while it is written equals the bucket; a
//! client trusting another CA (or naming another host) is refused with a
//! typed error; a plaintext client against the TLS port, and a TLS client
//! against a plaintext port, fail cleanly; a TLS local cluster advertises
//! its `kvSSL` ports and a `couchbases://` cluster connection streams the
//! whole bucket through them across a rebalance.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_std::task::block_on;
use dcp_async_std::{
    ClusterConnection, ClusterServer, ClusterServerHandle, Connection, EndReason, Error, Server,
    rustls, tls,
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

fn server_tls(pki: &Pki) -> Arc<rustls::ServerConfig> {
    tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap()
}

fn client(pki: &Pki) -> Arc<rustls::ClientConfig> {
    tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap()
}

fn write(server: &Server, from: u64, n: u64) {
    server.with_node(|node| {
        let now = node.wall_clock(Instant::now());
        write_sample(node.bucket_mut(), from, n, now);
    });
}

fn consumer_config(name: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, "default")
        .with_credentials(Credentials::new("app", "secret"))
        .with_auto_ack(true);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

/// Streams every vbucket over TLS while writing, and compares the view
/// with the bucket.
async fn stream_over_tls(server: &Server, pki: &Pki) {
    // PLAIN only: acceptable over TLS. A small window: many acks go back
    // while large batches come in, both ways through TLS.
    let mut config = consumer_config("tls:stream").with_buffer_size(16 * 1024);
    config.mechanisms = vec![Mechanism::Plain];
    let mut conn = Connection::connect_tls(server.local_addr(), "localhost", client(pki), config)
        .await
        .unwrap();
    for vb in 0..VBUCKETS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    write(server, 500, 2000);
    let targets = server.with_node(|node| high_seqnos(node.bucket()));
    let mut view = MaterializedView::default();
    let deadline = Instant::now() + STEP;
    while !view.reached(&targets) {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = conn
            .next_event_timeout(left)
            .await
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
    conn.close().await;
}

#[test]
fn streams_a_bucket_over_tls_under_async_std() {
    block_on(async {
        let pki = make_pki();
        let server = Server::bind("127.0.0.1:0", node_config())
            .await
            .unwrap()
            .with_tls(server_tls(&pki));
        write(&server, 0, 500);
        stream_over_tls(&server, &pki).await;
        server.shutdown().await;
    });
}

#[test]
fn streams_a_bucket_over_tls_under_smol() {
    smol::block_on(async {
        let pki = make_pki();
        let server = Server::bind_with("127.0.0.1:0", node_config(), |task| {
            smol::spawn(task).detach();
        })
        .await
        .unwrap()
        .with_tls(server_tls(&pki));
        write(&server, 0, 500);
        stream_over_tls(&server, &pki).await;
        server.shutdown().await;
    });
}

#[test]
fn a_client_trusting_another_ca_is_refused() {
    block_on(async {
        let pki = make_pki();
        let other = make_pki();
        let server = Server::bind("127.0.0.1:0", node_config())
            .await
            .unwrap()
            .with_tls(server_tls(&pki));
        let addr = server.local_addr();
        let err = Connection::connect_tls(
            addr,
            "localhost",
            client(&other),
            consumer_config("tls:wrong-ca"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err.rustls_error(),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "{err:?}"
        );
        let err = Connection::connect_tls(
            addr,
            "example.com",
            client(&pki),
            consumer_config("tls:wrong-name"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                err.rustls_error(),
                Some(rustls::Error::InvalidCertificate(_))
            ),
            "{err:?}"
        );
        // The insecure configuration (local testing only) accepts it, and
        // the IP address verifies with the right CA.
        let insecure = tls::insecure_client_config_for_testing().unwrap();
        Connection::connect_tls(
            addr,
            "example.com",
            insecure,
            consumer_config("tls:insecure"),
        )
        .await
        .unwrap();
        let conn =
            Connection::connect_tls(addr, "127.0.0.1", client(&pki), consumer_config("tls:ip"))
                .await
                .unwrap();
        assert!(conn.negotiated().is_some());
        server.shutdown().await;
    });
}

#[test]
fn a_plaintext_client_against_the_tls_port_fails_cleanly() {
    block_on(async {
        let pki = make_pki();
        let server = Server::bind("127.0.0.1:0", node_config())
            .await
            .unwrap()
            .with_tls(server_tls(&pki));
        let started = Instant::now();
        let err = Connection::connect(server.local_addr(), consumer_config("tls:plain"))
            .await
            .unwrap_err();
        // The server drops a client whose first bytes are not TLS; the
        // client sees a typed error at once, not a hang or a panic.
        assert!(matches!(err, Error::Consumer(_) | Error::Io(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{err:?}");
        let end = server
            .handle()
            .next_ended(STEP)
            .await
            .expect("the server ends the connection");
        assert!(matches!(end.reason, EndReason::Io(_)), "{:?}", end.reason);
        server.shutdown().await;
    });
}

#[test]
fn a_tls_client_against_a_plaintext_port_fails_cleanly() {
    block_on(async {
        let pki = make_pki();
        let server = Server::bind("127.0.0.1:0", node_config()).await.unwrap();
        let err = Connection::connect_tls(
            server.local_addr(),
            "localhost",
            client(&pki),
            consumer_config("tls:to-plain"),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, Error::Tls { .. } | Error::TlsTimeout { .. }),
            "{err:?}"
        );
        server.shutdown().await;
    });
}

#[test]
fn bad_pem_is_a_typed_error() {
    assert!(matches!(
        tls::client_config_from_pem(b"not a certificate"),
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

/// A three-node TLS cluster on smol's executor, streamed whole through
/// `couchbases://` across a rebalance.
#[test]
fn a_couchbases_cluster_connection_streams_through_the_kv_ssl_ports_under_smol() {
    smol::block_on(async {
        const NODES: usize = 3;
        let pki = make_pki();
        let server = ClusterServer::bind_with(
            "127.0.0.1:0".parse().unwrap(),
            NODES,
            1,
            node_config(),
            |task| smol::spawn(task).detach(),
        )
        .await
        .unwrap()
        .with_tls(server_tls(&pki));
        let handle = server.handle();
        cluster_write(&handle, 0, 300);

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

        // couchbases:// without a TLS configuration is a typed error.
        let err = ClusterConnection::connect_with(
            &connection_string,
            consumer_config("tls:cluster-no-config"),
            OrchestratorConfig::new(),
            Checkpoint::new(),
            |task| smol::spawn(task).detach(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::TlsConfig(_)), "{err:?}");

        let settings =
            OrchestratorConfig::new().with_config_poll_interval(Duration::from_millis(200));
        let mut conn = ClusterConnection::connect_tls_with(
            &connection_string,
            client(&pki),
            consumer_config("tls:cluster").with_buffer_size(16 * 1024),
            settings,
            Checkpoint::new(),
            |task| smol::spawn(task).detach(),
        )
        .await
        .unwrap();
        let mut view = MaterializedView::default();
        cluster_write(&handle, 300, 300);
        handle.rebalance(&[(0, NodeId(1))]).unwrap();
        cluster_write(&handle, 600, 100);
        let deadline = Instant::now() + STEP;
        while !cluster_synced(&handle, &view) {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = conn
                .next_event_timeout(left)
                .await
                .unwrap()
                .expect("caught up in time");
            view.apply(&event).unwrap();
        }
        assert_eq!(conn.connected_nodes().len(), NODES);
        drop(conn);
        server.shutdown().await;
    });
}
