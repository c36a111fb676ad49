//! The `ClusterClient`'s log: node connections, losses and config
//! changes, without user data. (Its own test binary: a subscriber set for
//! one thread sees every event only when no other test runs beside it.)

mod cluster_net;

use std::io;
use std::sync::{Arc, Mutex};

use dcp_proto::producer::NodeId;

use cluster_net::*;

#[test]
fn node_connections_and_losses_are_logged() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(captured.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let mut net = Net::streaming(2);
        net.cluster.drop_connections(NodeId(1)).unwrap();
        net.write(10);
        net.settle();
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(text.contains("cluster config applied"), "{text}");
    assert_eq!(text.matches("node connected").count(), 2, "{text}");
    assert!(text.contains("node connection lost"), "{text}");
    assert!(text.contains("node reconnected"), "{text}");
    assert!(!text.contains("key-"), "no keys logged: {text}");
    // The consumers' own events name their node.
    assert!(text.contains("dcp.seed{seed=127.0.0.1:"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.contains("dcp.node{node=127.0.0.1:") && l.contains("dcp_proto::consumer")),
        "{text}"
    );
}

/// Everything a subscriber wrote.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
