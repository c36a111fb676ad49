//! `ClusterConnection` against a `ClusterServer` over loopback: stream a
//! three-node cluster while writing, rebalance half the vbuckets, fail a
//! node over (losing unreplicated writes), remove a node, add one back,
//! drop connections; the counters add up over the nodes. After each step
//! the view equals the bucket (the active copies), nothing is lost, and a
//! change is seen twice only after a reported rollback (`MaterializedView`
//! refuses any other replay).

use std::time::{Duration, Instant};

use dcp_async_std::{ClusterConnection, ClusterServer, ClusterServerHandle};
use dcp_proto::auth::Credentials;
use dcp_proto::cluster::OrchestratorConfig;
use dcp_proto::codec::Status;
use dcp_proto::consumer::{ConsumerConfig, Event};
use dcp_proto::producer::{LocalCluster, NodeConfig, NodeId};
use dcp_proto::session::Checkpoint;
use dcp_proto::testing::{MaterializedView, live_documents};

const VBUCKETS: u16 = 16;
/// Bound on every wait for the view to catch up.
const CATCH_UP: Duration = Duration::from_secs(10);

async fn start(nodes: usize) -> ClusterServer {
    let config = NodeConfig::new("default")
        .with_vbuckets(VBUCKETS)
        .with_user("app", "secret")
        .with_scram_iterations(16);
    ClusterServer::bind("127.0.0.1:0".parse().unwrap(), nodes, 1, config)
        .await
        .unwrap()
}

async fn client(
    handle: &ClusterServerHandle,
    name: &str,
    checkpoint: Checkpoint,
) -> ClusterConnection {
    let config = ConsumerConfig::new(name, "default")
        .with_credentials(Credentials::new("app", "secret"))
        .with_buffer_size(64 * 1024);
    let settings = OrchestratorConfig::new().with_config_poll_interval(Duration::from_millis(200));
    ClusterConnection::connect(&handle.connection_string(), config, settings, checkpoint)
        .await
        .unwrap()
}

fn write(handle: &ClusterServerHandle, from: u64, n: u64) {
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

/// Whether the view equals every vbucket's active copy.
fn synced(handle: &ClusterServerHandle, view: &MaterializedView) -> bool {
    handle.with_cluster(|cluster: &mut LocalCluster| {
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

/// Applies events until the view equals the bucket.
async fn catch_up(
    handle: &ClusterServerHandle,
    conn: &mut ClusterConnection,
    view: &mut MaterializedView,
) {
    let deadline = Instant::now() + CATCH_UP;
    while !synced(handle, view) {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no catch-up within {CATCH_UP:?}; nodes {:?}",
            conn.connected_nodes()
        );
        if let Some(event) = conn.next_event_timeout(left).await.unwrap() {
            view.apply(&event).unwrap();
        } else {
            assert!(!conn.is_finished(), "an endless stream");
        }
    }
}

#[test]
fn streams_across_rebalance_failover_removal_and_addition() {
    async_std::task::block_on(streams_across_rebalance_failover_removal_and_addition_async());
}

async fn streams_across_rebalance_failover_removal_and_addition_async() {
    let server = start(3).await;
    let handle = server.handle();
    write(&handle, 0, 300);
    let mut conn = client(&handle, "cluster-test", Checkpoint::new()).await;
    let mut view = MaterializedView::default();
    catch_up(&handle, &mut conn, &mut view).await;
    assert_eq!(conn.connected_nodes().len(), 3);

    // Write while streaming.
    for round in 0..5 {
        write(&handle, 1000 + round * 20, 20);
        catch_up(&handle, &mut conn, &mut view).await;
    }

    // Rebalance half of the vbuckets to the next node.
    let moves: Vec<(u16, NodeId)> = handle.with_cluster(|c| {
        (0..VBUCKETS)
            .step_by(2)
            .map(|vb| (vb, NodeId((c.active_node(vb).unwrap().0 + 1) % 3)))
            .collect()
    });
    handle.rebalance(&moves).unwrap();
    write(&handle, 2000, 50);
    catch_up(&handle, &mut conn, &mut view).await;
    assert!(view.rollbacks.is_empty(), "a move keeps the history");

    // Fail node 1 over after writes its replicas never got.
    handle.set_sync_replication(false);
    write(&handle, 3000, 40);
    catch_up(&handle, &mut conn, &mut view).await;
    // The server copies writes to replicas whenever a client's bytes
    // arrive (acks, config polls), so some may have been replicated:
    // promoting replicas one seqno short makes the loss certain.
    handle
        .with_cluster(|c| c.failover_losing(NodeId(1), 1))
        .unwrap();
    handle.set_sync_replication(true);
    write(&handle, 4000, 40);
    catch_up(&handle, &mut conn, &mut view).await;
    assert!(
        !view.rollbacks.is_empty(),
        "the lost writes were rolled back"
    );

    // Remove node 2 gracefully: everything lands on node 0.
    handle.remove_node(NodeId(2)).unwrap();
    write(&handle, 5000, 40);
    catch_up(&handle, &mut conn, &mut view).await;

    // Add a node back and spread the vbuckets.
    let added = handle.add_node().await.unwrap();
    handle.rebalance_evenly().unwrap();
    write(&handle, 6000, 40);
    catch_up(&handle, &mut conn, &mut view).await;
    assert!(handle.with_cluster(|c| (0..VBUCKETS).any(|vb| c.active_node(vb) == Some(added))));

    // Kill the client's connections.
    for id in [NodeId(0), added] {
        handle.drop_connections(id).unwrap();
        write(&handle, 7000 + id.0 as u64 * 100, 30);
        catch_up(&handle, &mut conn, &mut view).await;
    }

    // The aggregate counters: every change handed out was received, and
    // the dropped connections came back.
    let stats = conn.stats();
    assert!(stats.reconnects >= 2, "{stats:?}");
    assert!(stats.items >= view.changes, "{stats:?} vs {}", view.changes);
    assert_eq!(stats.connections, conn.connected_nodes().len());
    assert_eq!(stats.streams_open, usize::from(VBUCKETS));
    let vb0 = conn.stream_stats(0).expect("vb 0 streamed");
    assert!(vb0.items > 0 && vb0.vb_uuid.is_some(), "{vb0:?}");

    let checkpoint = conn.checkpoint();
    assert_eq!(checkpoint.vbuckets.len(), usize::from(VBUCKETS));
    drop(conn);
    server.shutdown().await;
}

#[test]
fn resumes_from_a_cluster_checkpoint() {
    async_std::task::block_on(resumes_from_a_cluster_checkpoint_async());
}

async fn resumes_from_a_cluster_checkpoint_async() {
    let server = start(3).await;
    let handle = server.handle();
    write(&handle, 0, 200);
    let mut conn = client(&handle, "cluster-test", Checkpoint::new()).await;
    let mut view = MaterializedView::default();
    catch_up(&handle, &mut conn, &mut view).await;
    let checkpoint = conn.checkpoint();
    drop(conn);

    handle.rebalance_evenly().unwrap();
    write(&handle, 1000, 60);
    let mut conn = client(&handle, "cluster-test-2", checkpoint).await;
    // Only the new changes arrive: the view refuses replays.
    catch_up(&handle, &mut conn, &mut view).await;
    drop(conn);
    server.shutdown().await;
}

#[test]
fn a_stale_config_meets_not_my_vbucket_then_follows_the_new_one() {
    async_std::task::block_on(a_stale_config_meets_not_my_vbucket_then_follows_the_new_one_async());
}

async fn a_stale_config_meets_not_my_vbucket_then_follows_the_new_one_async() {
    let server = start(3).await;
    let handle = server.handle();
    write(&handle, 0, 200);
    let mut conn = client(&handle, "cluster-test", Checkpoint::new()).await;
    let mut view = MaterializedView::default();
    catch_up(&handle, &mut conn, &mut view).await;

    // The vbuckets move, but the nodes keep serving the old map.
    handle.hold_config(true);
    let moves: Vec<(u16, NodeId)> = handle.with_cluster(|c| {
        (0..VBUCKETS)
            .map(|vb| (vb, NodeId((c.active_node(vb).unwrap().0 + 1) % 3)))
            .collect()
    });
    handle.rebalance(&moves).unwrap();
    write(&handle, 1000, 50);
    let mut refused = 0;
    let mut ended = 0;
    let until = Instant::now() + Duration::from_millis(600);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let Some(event) = conn.next_event_timeout(left).await.unwrap() else {
            continue;
        };
        match &event {
            Event::StreamFailed { status, .. } if *status == Status::NotMyVbucket => refused += 1,
            Event::StreamEnded { .. } => ended += 1,
            _ => {}
        }
        view.apply(&event).unwrap();
    }
    assert!(ended > 0 && refused > 0, "ended {ended}, refused {refused}");
    handle.hold_config(false);
    catch_up(&handle, &mut conn, &mut view).await;
    assert!(view.rollbacks.is_empty());
    drop(conn);
    server.shutdown().await;
}

/// The same cluster consumer on smol's executor, through `bind_with` and
/// `connect_with`.
#[test]
fn follows_a_rebalance_on_smol() {
    smol::block_on(async {
        let config = NodeConfig::new("default")
            .with_vbuckets(VBUCKETS)
            .with_user("app", "secret")
            .with_scram_iterations(16);
        let server =
            ClusterServer::bind_with("127.0.0.1:0".parse().unwrap(), 3, 1, config, |task| {
                smol::spawn(task).detach();
            })
            .await
            .unwrap();
        let handle = server.handle();
        write(&handle, 0, 200);
        let config = ConsumerConfig::new("cluster-smol", "default")
            .with_credentials(Credentials::new("app", "secret"));
        let mut conn = ClusterConnection::connect_with(
            &handle.connection_string(),
            config,
            OrchestratorConfig::new().with_config_poll_interval(Duration::from_millis(200)),
            Checkpoint::new(),
            |task| smol::spawn(task).detach(),
        )
        .await
        .unwrap();
        let mut view = MaterializedView::default();
        catch_up(&handle, &mut conn, &mut view).await;
        handle.rebalance_evenly().unwrap();
        let moves: Vec<(u16, NodeId)> = handle.with_cluster(|c| {
            (0..VBUCKETS)
                .map(|vb| (vb, NodeId((c.active_node(vb).unwrap().0 + 1) % 3)))
                .collect()
        });
        handle.rebalance(&moves).unwrap();
        write(&handle, 1000, 60);
        catch_up(&handle, &mut conn, &mut view).await;
        assert!(view.rollbacks.is_empty());
        drop(conn);
        server.shutdown().await;
    });
}

/// Sends `command` to `addr` as admin `admin`/`adminpw`; returns the
/// answer's status and body.
async fn admin_command(
    addr: std::net::SocketAddr,
    command: dcp_proto::producer::AdminCommand,
) -> (Status, String) {
    use dcp_proto::testing::{admin_answer, admin_request};
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    let mut socket = async_net::TcpStream::connect(addr).await.unwrap();
    let request = admin_request("admin", "adminpw", &command).unwrap();
    socket.write_all(&request).await.unwrap();
    let (mut rx, mut decoder) = Default::default();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(answer) = admin_answer(&mut rx, &mut decoder).unwrap() {
            return answer;
        }
        let read = futures_lite::future::or(
            async { Some(socket.read(&mut buf).await.unwrap()) },
            async {
                async_io::Timer::after(CATCH_UP).await;
                None
            },
        )
        .await
        .expect("an answer in time");
        assert_ne!(read, 0, "closed before answering");
        rx.extend_from_slice(&buf[..read]);
    }
}

/// The server carries out cluster admin commands itself (what `dcp admin`
/// sends), adding a node with its listener included.
#[test]
fn the_server_answers_cluster_admin_commands() {
    async_std::task::block_on(async {
        use dcp_proto::producer::AdminCommand;
        let config = NodeConfig::new("default")
            .with_vbuckets(VBUCKETS)
            .with_user("admin", "adminpw")
            .with_admin("admin")
            .with_scram_iterations(16);
        let server = ClusterServer::bind("127.0.0.1:0".parse().unwrap(), 2, 1, config)
            .await
            .unwrap();
        let handle = server.handle();
        let first = handle.node_addrs()[0];

        let (status, body) = admin_command(first, AdminCommand::AddNode).await;
        assert!(status.is_success(), "{status:?}: {body}");
        let map: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(map["node"], 2, "{map}");
        // The new node listens: it answers a command too.
        let added = handle.node_addr(NodeId(2)).expect("added");
        let (status, body) =
            admin_command(added, AdminCommand::Rebalance { moves: Vec::new() }).await;
        assert!(status.is_success(), "{status:?}: {body}");
        let actives = handle.with_cluster(|c| {
            (0..VBUCKETS)
                .filter(|vb| c.active_node(*vb) == Some(NodeId(2)))
                .count()
        });
        assert!(actives > 0, "the rebalance gave the new node vbuckets");
        // A failure is answered as one.
        let (status, _) = admin_command(first, AdminCommand::RemoveNode { node: 9 }).await;
        assert!(!status.is_success());
        server.shutdown().await;
    });
}
