//! Our consumer wired to our producer in memory, on a virtual clock.
#![allow(dead_code, unreachable_pub)]

use std::time::{Duration, Instant};

use bytes::BytesMut;
use dcp_proto::auth::Credentials;
use dcp_proto::consumer::{Consumer, ConsumerConfig, Event};
use dcp_proto::producer::{ConnectionId, Node, NodeConfig};

/// A node, a virtual clock, and the bytes moved between them and consumers.
pub struct InMemory {
    pub node: Node,
    pub now: Instant,
    /// When set, every write either side made, in order: `true` for
    /// consumer to producer.
    pub recording: Option<Vec<(bool, BytesMut)>>,
}

impl InMemory {
    pub fn new(config: NodeConfig) -> Self {
        let now = Instant::now();
        let mut node = Node::new(config);
        node.wall_clock(now);
        Self {
            node,
            now,
            recording: None,
        }
    }

    /// A consumer logged in as `user` and a connection for it.
    pub fn connect(
        &mut self,
        config: ConsumerConfig,
        user: &str,
        password: &str,
    ) -> (Consumer, ConnectionId) {
        let config = config.with_credentials(Credentials::new(user, password));
        let consumer = Consumer::new(config, "bm9uY2U", self.now).unwrap();
        (consumer, self.node.accept(self.now))
    }

    /// Moves bytes both ways and hands every event to `on_event` until a
    /// few rounds of virtual time (in which time-based acks and noops get
    /// their turn) bring no event, or the connection closes.
    pub fn pump(
        &mut self,
        consumer: &mut Consumer,
        conn: ConnectionId,
        mut on_event: impl FnMut(&mut Consumer, Event, Instant),
    ) {
        let mut quiet_rounds = 0;
        for _ in 0..100_000 {
            let mut events = false;
            loop {
                let mut moved = false;
                let mut up = BytesMut::new();
                if consumer.poll_transmit(&mut up) > 0 {
                    moved = true;
                    if let Some(recording) = &mut self.recording {
                        recording.push((true, up.clone()));
                    }
                    if self.node.handle_input(conn, &mut up, self.now).is_err() {
                        consumer.handle_eof();
                        return;
                    }
                }
                let mut down = BytesMut::new();
                if self.node.poll_transmit(conn, &mut down, 4096) > 0 {
                    moved = true;
                    if let Some(recording) = &mut self.recording {
                        recording.push((false, down.clone()));
                    }
                    consumer.handle_input(&mut down, self.now).unwrap();
                }
                while let Some(event) = consumer.poll_event() {
                    moved = true;
                    events = true;
                    on_event(consumer, event, self.now);
                }
                if self.node.is_closed(conn) {
                    consumer.handle_eof();
                    return;
                }
                if !moved {
                    break;
                }
            }
            quiet_rounds = if events { 0 } else { quiet_rounds + 1 };
            if quiet_rounds > 3 {
                return;
            }
            self.now += Duration::from_millis(1100);
            consumer.handle_timeout(self.now).unwrap();
            self.node.handle_timeout(conn, self.now);
        }
        panic!("did not settle");
    }
}
