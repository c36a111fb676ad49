//! TLS end to end over 127.0.0.1, with certificates made at test time
//! (rcgen): a bucket streamed over TLS equals the bucket; a client trusting
//! another CA is refused with a typed error; a plaintext client against the
//! TLS port fails cleanly; a TLS client against a plaintext port too; a
//! local cluster serves TLS on every node, advertises its `kvSSL` ports,
//! and a `couchbases://` cluster connection streams the whole bucket
//! through them across a rebalance.

use std::time::Duration;

use dcp_proto::auth::{Credentials, Mechanism};
use dcp_proto::consumer::{ConsumerConfig, StreamStart};
use dcp_proto::producer::NodeConfig;
use dcp_proto::testing::{MaterializedView, high_seqnos, live_documents, write_sample};
use dcp_tokio::{Connection, Error, Server, ServerHandle, tls};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tokio::task::JoinHandle;
use tokio::time::timeout;

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

/// A TLS server with a written bucket.
async fn tls_server(pki: &Pki) -> (ServerHandle, JoinHandle<std::io::Result<()>>) {
    let config = NodeConfig::new("default")
        .with_vbuckets(VBUCKETS)
        .with_user("app", "secret");
    let tls = tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let server = Server::bind("127.0.0.1:0", config)
        .await
        .unwrap()
        .with_tls(tls);
    let handle = server.handle();
    handle.with_bucket(|bucket, now| write_sample(bucket, 0, 500, now));
    (handle, tokio::spawn(server.run()))
}

fn consumer_config(name: &str) -> ConsumerConfig {
    let mut config = ConsumerConfig::new(name, "default")
        .with_credentials(Credentials::new("app", "secret"))
        .with_auto_ack(true);
    config.handshake_timeout = Duration::from_secs(5);
    config
}

async fn stop(handle: ServerHandle, task: JoinHandle<std::io::Result<()>>) {
    handle.shutdown();
    timeout(STEP, task).await.unwrap().unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_bucket_over_tls() {
    let pki = make_pki();
    let (handle, task) = tls_server(&pki).await;
    let client = tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap();
    // PLAIN only: acceptable over TLS. A small window: many acks go back
    // while large batches come in, both ways through TLS.
    let mut config = consumer_config("tls:stream").with_buffer_size(16 * 1024);
    config.mechanisms = vec![Mechanism::Plain];
    let mut conn = timeout(
        STEP,
        Connection::connect_tls(handle.local_addr(), "localhost", client, config),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(conn.is_tls());
    for vb in 0..VBUCKETS {
        conn.open_stream(vb, StreamStart::Beginning, None).unwrap();
    }
    let mut view = MaterializedView::default();
    // Writes while streaming go over TLS too.
    handle.with_bucket(|bucket, now| write_sample(bucket, 500, 2000, now));
    let targets = handle.with_bucket(|bucket, _| high_seqnos(bucket));
    let deadline = tokio::time::Instant::now() + STEP;
    while !view.reached(&targets) {
        let event = tokio::time::timeout_at(deadline, conn.next_event())
            .await
            .expect("caught up in time")
            .unwrap()
            .expect("an endless stream");
        view.apply(&event).unwrap();
    }
    handle.with_bucket(|bucket, _| {
        for vb in 0..VBUCKETS {
            assert_eq!(view.live(vb), live_documents(bucket, vb), "vbucket {vb}");
        }
    });
    conn.close();
    stop(handle, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ip_address_server_name_verifies() {
    let pki = make_pki();
    let (handle, task) = tls_server(&pki).await;
    let client = tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap();
    let conn = timeout(
        STEP,
        Connection::connect_tls(
            handle.local_addr(),
            "127.0.0.1",
            client,
            consumer_config("tls:ip"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(conn.negotiated().is_some());
    stop(handle, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_trusting_another_ca_is_refused() {
    let pki = make_pki();
    let other = make_pki();
    let (handle, task) = tls_server(&pki).await;
    let client = tls::client_config_from_pem(other.ca_pem.as_bytes()).unwrap();
    let err = timeout(
        STEP,
        Connection::connect_tls(
            handle.local_addr(),
            "localhost",
            client,
            consumer_config("tls:wrong-ca"),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(
        matches!(
            err.rustls_error(),
            Some(dcp_tokio::rustls::Error::InvalidCertificate(_))
        ),
        "{err:?}"
    );
    // A wrong name with the right CA is refused as well.
    let client = tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap();
    let err = timeout(
        STEP,
        Connection::connect_tls(
            handle.local_addr(),
            "example.com",
            client,
            consumer_config("tls:wrong-name"),
        ),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    // The insecure configuration (local testing only) accepts it.
    let insecure = tls::insecure_client_config_for_testing().unwrap();
    timeout(
        STEP,
        Connection::connect_tls(
            handle.local_addr(),
            "example.com",
            insecure,
            consumer_config("tls:insecure"),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    stop(handle, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_client_against_the_tls_port_fails_cleanly() {
    let pki = make_pki();
    let (handle, task) = tls_server(&pki).await;
    let err = timeout(
        STEP,
        Connection::connect(handle.local_addr(), consumer_config("tls:plain")),
    )
    .await
    .expect("bounded by the handshake timeout")
    .unwrap_err();
    // The server drops a client that sends no TLS hello; the client sees a
    // typed error (a closed connection or a handshake timeout), not a
    // panic.
    assert!(matches!(err, Error::Consumer(_) | Error::Io(_)), "{err:?}");
    stop(handle, task).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_against_a_plaintext_port_fails_cleanly() {
    let pki = make_pki();
    let config = NodeConfig::new("default")
        .with_vbuckets(VBUCKETS)
        .with_user("app", "secret");
    let server = Server::bind("127.0.0.1:0", config).await.unwrap();
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    let client = tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap();
    let err = timeout(
        STEP,
        Connection::connect_tls(
            handle.local_addr(),
            "localhost",
            client,
            consumer_config("tls:to-plain"),
        ),
    )
    .await
    .expect("bounded by the handshake timeout")
    .unwrap_err();
    assert!(
        matches!(err, Error::Tls { .. } | Error::TlsTimeout { .. }),
        "{err:?}"
    );
    stop(handle, task).await;
}

#[test]
fn bad_pem_is_a_typed_error() {
    assert!(matches!(
        tls::client_config_from_pem(b"not a certificate"),
        Err(Error::TlsConfig(_))
    ));
    let pki = make_pki();
    let other = make_pki();
    // A key that does not match the certificate.
    assert!(matches!(
        tls::server_config_from_pem(pki.cert_pem.as_bytes(), other.key_pem.as_bytes()),
        Err(Error::TlsConfig(_))
    ));
    assert!(matches!(
        tls::client_config_from_pem_file("/nonexistent/ca.pem"),
        Err(Error::TlsConfig(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_every_node_over_tls() {
    let pki = make_pki();
    let config = NodeConfig::new("default")
        .with_vbuckets(VBUCKETS)
        .with_user("app", "secret");
    let tls = tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let server = dcp_tokio::ClusterServer::bind("127.0.0.1:0".parse().unwrap(), 2, 1, config)
        .await
        .unwrap()
        .with_tls(tls);
    let addrs = server.node_addrs();
    let handle = server.handle();
    let task = tokio::spawn(server.run());
    let client = tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap();
    for addr in addrs {
        let mut conn = timeout(
            STEP,
            Connection::connect_tls(
                addr,
                "localhost",
                client.clone(),
                consumer_config("tls:cluster"),
            ),
        )
        .await
        .unwrap()
        .unwrap();
        conn.request_cluster_config().unwrap();
        let config = timeout(STEP, async {
            loop {
                match conn.next_event().await.unwrap() {
                    Some(dcp_proto::consumer::Event::ClusterConfig { config, .. }) => {
                        break config;
                    }
                    Some(_) => {}
                    None => panic!("closed"),
                }
            }
        })
        .await
        .unwrap();
        assert!(!config.is_empty());
        // A plaintext client is refused here too.
        let err = timeout(
            STEP,
            Connection::connect(addr, consumer_config("tls:cluster-plain")),
        )
        .await
        .unwrap()
        .unwrap_err();
        assert!(matches!(err, Error::Consumer(_) | Error::Io(_)), "{err:?}");
    }
    handle.shutdown();
    timeout(STEP, task).await.unwrap().unwrap().unwrap();
}

/// Whether the view equals every vbucket's active copy in the cluster.
fn cluster_synced(
    handle: &dcp_tokio::ClusterServerHandle,
    view: &MaterializedView,
    vbuckets: u16,
) -> bool {
    handle.with_cluster(|cluster| {
        (0..vbuckets).all(|vb| {
            let Some(owner) = cluster.active_node(vb) else {
                return true;
            };
            let bucket = cluster.node(owner).unwrap().bucket();
            view.live(vb) == live_documents(bucket, vb)
                && view.last_seqno(vb) == bucket.vbucket(vb).unwrap().high_seqno()
        })
    })
}

fn cluster_write(handle: &dcp_tokio::ClusterServerHandle, from: u64, n: u64) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_couchbases_cluster_connection_streams_through_the_kv_ssl_ports() {
    use dcp_proto::cluster::{ClusterConfig, OrchestratorConfig};
    use dcp_proto::session::Checkpoint;
    use dcp_tokio::ClusterConnection;

    const NODES: usize = 3;
    let pki = make_pki();
    let config = NodeConfig::new("default")
        .with_vbuckets(VBUCKETS)
        .with_user("app", "secret");
    let tls = tls::server_config_from_pem(pki.cert_pem.as_bytes(), pki.key_pem.as_bytes()).unwrap();
    let server = dcp_tokio::ClusterServer::bind("127.0.0.1:0".parse().unwrap(), NODES, 1, config)
        .await
        .unwrap()
        .with_tls(tls);
    let handle = server.handle();
    let task = tokio::spawn(server.run());
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
    // plaintext attempt.
    let plain = ClusterConnection::connect(
        &connection_string,
        consumer_config("tls:cluster-no-config"),
        OrchestratorConfig::new(),
        Checkpoint::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(plain, Error::TlsConfig(_)), "{plain:?}");

    // A CA the nodes' certificate does not chain to: the bootstrap fails
    // on TLS.
    let other = make_pki();
    let refused = ClusterConnection::connect_tls(
        &connection_string,
        tls::client_config_from_pem(other.ca_pem.as_bytes()).unwrap(),
        consumer_config("tls:cluster-wrong-ca"),
        OrchestratorConfig::new(),
        Checkpoint::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(refused, Error::Tls { .. }), "{refused:?}");

    let client = tls::client_config_from_pem(pki.ca_pem.as_bytes()).unwrap();
    let settings = OrchestratorConfig::new().with_config_poll_interval(Duration::from_millis(200));
    let mut conn = timeout(
        STEP,
        ClusterConnection::connect_tls(
            &connection_string,
            client,
            consumer_config("tls:cluster").with_buffer_size(16 * 1024),
            settings,
            Checkpoint::new(),
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let mut view = MaterializedView::default();
    // Writes while streaming, and a rebalance: the moved streams reopen
    // over TLS on their new nodes.
    cluster_write(&handle, 300, 300);
    handle
        .rebalance(&[(0, dcp_proto::producer::NodeId(1))])
        .unwrap();
    cluster_write(&handle, 600, 100);
    let deadline = tokio::time::Instant::now() + STEP;
    while !cluster_synced(&handle, &view, VBUCKETS) {
        let event = tokio::time::timeout_at(deadline, conn.next_event())
            .await
            .expect("caught up in time")
            .unwrap()
            .expect("an endless stream");
        view.apply(&event).unwrap();
    }
    assert_eq!(conn.connected_nodes().len(), NODES);
    drop(conn);
    handle.shutdown();
    timeout(STEP, task).await.unwrap().unwrap().unwrap();
}
