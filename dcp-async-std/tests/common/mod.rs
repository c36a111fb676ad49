//! Helpers shared by the loopback tests: the node's config, the consumer's
//! config, and the materialized view (from `dcp_proto::testing`).
#![allow(dead_code, unreachable_pub)]

use std::time::Instant;

use dcp_proto::auth::Credentials;
use dcp_proto::consumer::{ConsumerConfig, Event};
use dcp_proto::producer::{Node, NodeConfig};
use dcp_proto::testing::{MaterializedView, live_documents};

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

/// Writes test documents `from..from + n` (see `testing::write_sample`).
pub fn write_docs(node: &mut Node, from: u64, n: u64) {
    let wall = node.wall_clock(Instant::now());
    dcp_proto::testing::write_sample(node.bucket_mut(), from, n, wall);
}

/// The high seqno of every vbucket.
pub fn high_seqnos(node: &Node) -> Vec<u64> {
    dcp_proto::testing::high_seqnos(node.bucket())
}

/// What the consumer applied; a duplicate or a replay without a rollback
/// fails the test.
#[derive(Default)]
pub struct View(pub MaterializedView);

impl std::ops::Deref for View {
    type Target = MaterializedView;
    fn deref(&self) -> &MaterializedView {
        &self.0
    }
}

impl View {
    pub fn apply(&mut self, event: &Event) {
        if let Err(err) = self.0.apply(event) {
            panic!("{err}");
        }
    }

    /// Asserts the view equals the bucket, vbucket by vbucket.
    pub fn assert_matches(&self, node: &Node) {
        for vb in 0..node.bucket().num_vbuckets() {
            assert_eq!(
                self.live(vb),
                live_documents(node.bucket(), vb),
                "vbucket {vb}"
            );
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
