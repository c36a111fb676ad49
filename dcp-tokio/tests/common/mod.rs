//! Helpers shared by the loopback tests: a server on an ephemeral port, a
//! consumer config, and a materialized view to compare with the bucket.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use dcp_tokio::dcp_proto::auth::Credentials;
use dcp_tokio::dcp_proto::bucket::{BucketConfig, DocumentKind};
use dcp_tokio::dcp_proto::consumer::{ConsumerConfig, Event};
use dcp_tokio::dcp_proto::producer::{Node, NodeConfig};
use dcp_tokio::{Server, ServerHandle};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub const BUCKET: &str = "default";
pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";

/// A node config with a user, an admin and cheap SCRAM.
pub fn node_config(vbuckets: u16) -> NodeConfig {
    NodeConfig::new(BUCKET)
        .with_bucket(
            BucketConfig::new(BUCKET)
                .with_vbuckets(vbuckets)
                .with_checkpoints(50, 3),
        )
        .with_user(USER, PASSWORD)
        .with_user("admin", "adminpw")
        .with_admin("admin")
        .with_scram_iterations(16)
        .with_seed(7)
}

/// A running server on 127.0.0.1:0.
pub struct TestServer {
    pub handle: ServerHandle,
    pub task: JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub async fn start(config: NodeConfig) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut node = Node::new(config);
        node.wall_clock(tokio::time::Instant::now().into_std());
        let server = Server::from_node(listener, node).unwrap();
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        TestServer { handle, task }
    }

    pub fn addr(&self) -> String {
        self.handle.local_addr().to_string()
    }

    pub async fn stop(self) {
        self.handle.shutdown();
        self.task.await.unwrap().unwrap();
    }

    /// Writes `n` documents `key-{i}` for i in `from..from + n`.
    pub fn write(&self, from: u64, n: u64) {
        for i in from..from + n {
            let value = format!(
                "{{\"n\":{i},\"pad\":\"{}\"}}",
                "x".repeat((i % 50) as usize)
            );
            self.handle
                .set(format!("key-{}", i % 173).as_bytes(), value)
                .unwrap();
            if i % 13 == 0 {
                let _ = self
                    .handle
                    .delete(format!("key-{}", (i * 7) % 173).as_bytes());
            }
        }
    }

    /// Live documents per vbucket: key -> (seqno, value).
    pub fn live(&self, vb: u16) -> BTreeMap<Bytes, (u64, Bytes)> {
        self.handle.with_node(|node| {
            node.bucket()
                .vbucket(vb)
                .unwrap()
                .documents()
                .filter(|d| d.kind == DocumentKind::Mutation)
                .map(|d| (d.key.clone(), (d.seqno, d.body())))
                .collect()
        })
    }

    pub fn high_seqno(&self, vb: u16) -> u64 {
        self.handle
            .with_node(|node| node.bucket().vbucket(vb).unwrap().high_seqno())
    }
}

pub fn consumer_config(name: &str) -> ConsumerConfig {
    ConsumerConfig::new(name, BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_noop_interval(Some(Duration::from_secs(10)))
}

/// The versions of one key: (seqno, value or `None` for a delete).
pub type Versions = Vec<(u64, Option<Bytes>)>;

/// What the consumer applied: every version per (vbucket, key), and the
/// seqnos seen per vbucket in order.
#[derive(Default)]
pub struct View {
    pub versions: HashMap<(u16, Bytes), Versions>,
    pub seqnos: HashMap<u16, Vec<u64>>,
    pub last: HashMap<u16, u64>,
}

impl View {
    /// Applies a change; returns whether the event was a change.
    pub fn apply(&mut self, event: &Event) -> bool {
        let (vb, key, seqno, value) = match event {
            Event::Mutation(m, _) => (m.vbucket, m.key.clone(), m.by_seqno, Some(m.value.clone())),
            Event::Deletion(d, _) => (d.vbucket, d.key.clone(), d.by_seqno, None),
            Event::Expiration(e, _) => (e.vbucket, e.key.clone(), e.by_seqno, None),
            Event::Rollback { vbucket, seqno, .. } => {
                for ((vb, _), versions) in self.versions.iter_mut() {
                    if vb == vbucket {
                        versions.retain(|(s, _)| s <= seqno);
                    }
                }
                if let Some(seqnos) = self.seqnos.get_mut(vbucket) {
                    seqnos.retain(|s| s <= seqno);
                }
                self.last.insert(*vbucket, *seqno);
                return false;
            }
            _ => return false,
        };
        self.versions
            .entry((vb, key))
            .or_default()
            .push((seqno, value));
        self.seqnos.entry(vb).or_default().push(seqno);
        self.last.insert(vb, seqno);
        true
    }

    pub fn live(&self, vb: u16) -> BTreeMap<Bytes, (u64, Bytes)> {
        self.versions
            .iter()
            .filter(|((v, _), _)| *v == vb)
            .filter_map(|((_, key), versions)| {
                let (seqno, value) = versions.iter().max_by_key(|(s, _)| *s)?;
                value.clone().map(|v| (key.clone(), (*seqno, v)))
            })
            .collect()
    }

    /// Whether each vbucket's seqnos strictly increase (nothing applied
    /// twice).
    pub fn assert_no_duplicates(&self) {
        for (vb, seqnos) in &self.seqnos {
            assert!(
                seqnos.windows(2).all(|w| w[0] < w[1]),
                "vbucket {vb}: seqnos not strictly increasing: {seqnos:?}"
            );
        }
    }
}
