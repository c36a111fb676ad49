//! Helpers shared by the loopback tests: the node's config, a writer of
//! test documents, and the consumer's materialized view.
#![allow(dead_code, unreachable_pub)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use dcp_proto::auth::Credentials;
use dcp_proto::bucket::{DocumentKind, WriteOptions};
use dcp_proto::consumer::{ConsumerConfig, Event};
use dcp_proto::producer::{Node, NodeConfig};

pub const BUCKET: &str = "default";
pub const USER: &str = "app";
pub const PASSWORD: &str = "secret";

/// A small node: `vbuckets` vbuckets, one user, cheap SCRAM.
pub fn node_config(vbuckets: u16) -> NodeConfig {
    NodeConfig::new(BUCKET)
        .with_vbuckets(vbuckets)
        .with_user(USER, PASSWORD)
        .with_scram_iterations(16)
        .with_seed(7)
}

/// A consumer of the test bucket with a small window.
pub fn consumer_config(name: &str) -> ConsumerConfig {
    ConsumerConfig::new(name, BUCKET)
        .with_credentials(Credentials::new(USER, PASSWORD))
        .with_buffer_size(16 * 1024)
        .with_auto_ack(true)
}

/// Writes documents `from..from + n`: keys cycle over 997 names, every 11th
/// write deletes an earlier key instead.
pub fn write_docs(node: &mut Node, from: u64, n: u64) {
    let wall: SystemTime = node.wall_clock(Instant::now());
    for i in from..from + n {
        let key = format!("key-{}", i % 997);
        if i % 11 == 10 {
            let earlier = format!("key-{}", (i / 2) % 997);
            let _ = node.bucket_mut().delete(earlier.as_bytes(), 0, wall);
        } else {
            node.bucket_mut()
                .set(
                    key.as_bytes(),
                    format!("{{\"n\":{i}}}"),
                    WriteOptions::new(),
                    wall,
                )
                .unwrap();
        }
    }
}

/// The high seqno of every vbucket.
pub fn high_seqnos(node: &Node) -> Vec<u64> {
    node.bucket().vbuckets().map(|vb| vb.high_seqno()).collect()
}

/// The live documents of vbucket `vb`: key -> (seqno, value).
pub fn bucket_live(node: &Node, vb: u16) -> BTreeMap<Bytes, (u64, Bytes)> {
    node.bucket()
        .vbucket(vb)
        .unwrap()
        .documents()
        .filter(|d| d.kind == DocumentKind::Mutation)
        .map(|d| (d.key.clone(), (d.seqno, d.body())))
        .collect()
}

/// What the consumer applied: the latest version of every key, and the
/// last seqno per vbucket, checked to increase strictly (no duplicate, no
/// replay) except across a rollback.
#[derive(Default)]
pub struct View {
    docs: HashMap<(u16, Bytes), (u64, Option<Bytes>)>,
    last_seqno: HashMap<u16, u64>,
    pub changes: u64,
    pub rollbacks: Vec<(u16, u64)>,
}

impl View {
    pub fn apply(&mut self, event: &Event) {
        let (vb, key, seqno, value) = match event {
            Event::Mutation(m, _) => (m.vbucket, &m.key, m.by_seqno, Some(m.value.clone())),
            Event::Deletion(d, _) => (d.vbucket, &d.key, d.by_seqno, None),
            Event::Expiration(e, _) => (e.vbucket, &e.key, e.by_seqno, None),
            Event::Rollback { vbucket, seqno } => {
                self.rollbacks.push((*vbucket, *seqno));
                self.docs
                    .retain(|(vb, _), (s, _)| *vb != *vbucket || *s <= *seqno);
                self.last_seqno.insert(*vbucket, *seqno);
                return;
            }
            _ => return,
        };
        let last = self.last_seqno.entry(vb).or_default();
        assert!(
            seqno > *last,
            "vbucket {vb}: seqno {seqno} after {last} (duplicate or out of order)"
        );
        *last = seqno;
        self.changes += 1;
        self.docs.insert((vb, key.clone()), (seqno, value));
    }

    /// The last seqno applied for `vb`.
    pub fn last_seqno(&self, vb: u16) -> u64 {
        self.last_seqno.get(&vb).copied().unwrap_or(0)
    }

    /// Whether every vbucket reached `targets[vb]`.
    pub fn reached(&self, targets: &[u64]) -> bool {
        targets
            .iter()
            .enumerate()
            .all(|(vb, &t)| self.last_seqno(vb as u16) >= t)
    }

    /// Live documents of `vb`: key -> (seqno, value).
    pub fn live(&self, vb: u16) -> BTreeMap<Bytes, (u64, Bytes)> {
        self.docs
            .iter()
            .filter(|((v, _), _)| *v == vb)
            .filter_map(|((_, key), (seqno, value))| {
                value.clone().map(|v| (key.clone(), (*seqno, v)))
            })
            .collect()
    }

    /// Asserts the view equals the bucket, vbucket by vbucket.
    pub fn assert_matches(&self, node: &Node) {
        for vb in 0..node.bucket().num_vbuckets() {
            assert_eq!(self.live(vb), bucket_live(node, vb), "vbucket {vb}");
        }
    }
}

/// `n` pipelined NOOP requests (allowed before authentication), opaques
/// `0..n`.
pub fn noop_requests(n: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(n as usize * 24);
    for opaque in 0..n {
        let mut header = [0u8; 24];
        header[0] = 0x80; // request magic
        header[1] = 0x0a; // NOOP
        header[12..16].copy_from_slice(&opaque.to_be_bytes());
        out.extend_from_slice(&header);
    }
    out
}

/// Asserts `bytes` holds `n` successful responses with opaques `0..n`, in
/// order.
pub fn assert_noop_responses(bytes: &[u8], n: u32) {
    let mut rx = bytes::BytesMut::from(bytes);
    let mut decoder = dcp_proto::codec::FrameDecoder::new();
    let mut next = 0;
    while let Some(frame) = decoder.decode(&mut rx).unwrap() {
        assert!(frame.is_response() && frame.status().is_success());
        assert_eq!(frame.opaque(), next);
        next += 1;
    }
    assert_eq!(next, n);
    assert!(rx.is_empty());
}
