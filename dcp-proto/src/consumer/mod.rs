//! A sans-IO DCP consumer for one node connection.
//!
//! [`Consumer`] runs the handshake, opens and closes streams, checks that the
//! producer keeps DCP's ordering rules, obeys rollbacks, answers noops,
//! returns flow-control credit and detects a dead connection. It touches no
//! socket and no clock: the caller feeds it bytes and instants and takes out
//! bytes, events and a deadline.
//!
//! # Driving contract
//!
//! Methods fall in four groups:
//! - inputs: [`handle_input`](Consumer::handle_input) (received bytes),
//!   [`handle_timeout`](Consumer::handle_timeout) (a deadline passed),
//!   [`handle_eof`](Consumer::handle_eof) (the peer closed);
//! - commands: [`open_stream`](Consumer::open_stream),
//!   [`close_stream`](Consumer::close_stream), [`ack`](Consumer::ack),
//!   [`confirm_rollback`](Consumer::confirm_rollback),
//!   [`request_failover_log`](Consumer::request_failover_log),
//!   [`close`](Consumer::close);
//! - outputs: [`poll_transmit`](Consumer::poll_transmit),
//!   [`poll_event`](Consumer::poll_event), [`poll_timeout`](Consumer::poll_timeout);
//! - getters: [`checkpoint`](Consumer::checkpoint), [`stats`](Consumer::stats),
//!   [`stream_stats`](Consumer::stream_stats), ...
//!
//! After any input or command, drain in this order: write everything
//! `poll_transmit` gives, hand out events until `poll_event` returns `None`,
//! then wait for readable bytes or the `poll_timeout` deadline, whichever
//! comes first. An error from an input is fatal and sticky: close the
//! socket. Events received before it can still be polled.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use bytes::BytesMut;
//! use dcp_proto::consumer::{Consumer, ConsumerConfig, Event, StreamStart};
//!
//! let now = Instant::now();
//! let config = ConsumerConfig::new("example:1", "default").with_auto_ack(true);
//! let mut consumer = Consumer::new(config, "c2VjcmV0bm9uY2U", now)?;
//! consumer.open_stream(0, StreamStart::Beginning, None)?; // sent once ready
//!
//! let mut tx = BytesMut::new();
//! consumer.poll_transmit(&mut tx); // HELLO: write it to the socket
//! assert!(!tx.is_empty());
//!
//! // In the adapter's loop: read into `rx`, then
//! let mut rx = BytesMut::new();
//! consumer.handle_input(&mut rx, now)?;
//! while let Some(event) = consumer.poll_event() {
//!     if let Event::Mutation(m, _credit) = event {
//!         println!("{:?} = {:?}", m.key, m.value);
//!     }
//! }
//! let _wake_at: Option<Instant> = consumer.poll_timeout();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Consistent snapshots
//!
//! By default every change is handed out as it arrives, so between two
//! snapshot ends the application's view of a vbucket may be a state that
//! never existed on the producer (DCP deduplicates within a snapshot). With
//! [`ConsumerConfig::with_consistent_snapshots`] the consumer holds each
//! snapshot's changes until its last seqno has arrived and then queues them
//! together, followed by [`Event::SnapshotComplete`]:
//! - a stream that ends, is closed or dies mid-snapshot never delivers the
//!   held part; its position moves back to before the snapshot, so
//!   [`StreamStart::Resume`] (or the checkpoint) asks for all of it again;
//! - OSO brackets (no marker) are held from OSO start to OSO end; a stream
//!   with an end seqno completes its last snapshot at that seqno;
//! - held changes return their flow-control credit as they are held (a
//!   snapshot larger than the window must still arrive), and come out with
//!   [`Credit::NONE`]; memory is bounded by the configured byte limit
//!   instead. When holding a change would exceed the limit, the largest
//!   held snapshot is let through: [`Event::SnapshotTooLarge`], then what it
//!   held, then the rest of it as it arrives, with credit, and finally its
//!   `SnapshotComplete`;
//! - [`checkpoint`](Consumer::checkpoint) and
//!   [`position`](Consumer::position) never cover part of a snapshot: from
//!   a snapshot's marker to its `SnapshotComplete` they stay where they were
//!   before it.

mod collections;
mod config;
mod delivery;
mod error;
mod event;
mod handshake;
mod outbox;
mod server_request;
mod stats;
mod stream;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

pub use collections::{CollectionInfo, CollectionsChange, ManifestView, StreamFilter};
pub use config::{ConfigPush, ConsumerConfig, ControlSetting, RollbackMode, SnappyMode};
pub use error::{CommandError, ConsumerError, HandshakeStep, ProtocolError};
pub use event::{Credit, Event};
pub use handshake::Negotiated;
pub use stats::{ConnectionStats, EndReasonCounts, StreamStats, StreamStatus};
pub use stream::StreamStart;

use self::handshake::{Handshake, Progress};
use self::outbox::Outbox;
use self::stream::{Retired, RetiredOpaques, Stream, StreamState, Vbucket};
use crate::codec::{Frame, FrameDecoder, Opcode, Status};
use crate::flow::{ConsumerWindow, flow_control_size};
use crate::msg::client::{
    GetAllVbSeqnos, GetAllVbSeqnosResponse, GetClusterConfig, GetClusterConfigResponse,
};
use crate::msg::{
    BufferAck, CloseStream, FailoverLogResponse, GetFailoverLog, Message, StatusResponse,
    StreamEndReason, StreamRequest, StreamRequestFlags, StreamRequestOutcome,
    StreamRequestResponse,
};
use crate::session::{Checkpoint, StreamKey, StreamPosition};

/// Event-queue capacity kept once the queue drains.
const EVENT_QUEUE_KEEP: usize = 256;

/// A request in flight, other than the handshake's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    StreamRequest {
        key: StreamKey,
        start: u64,
    },
    CloseStream {
        key: StreamKey,
    },
    /// `for_now`: the stream resolving [`StreamStart::Now`] the log is for
    /// (`None`: the application asked).
    FailoverLog {
        vbucket: u16,
        for_now: Option<StreamKey>,
    },
    HighSeqnos,
    ClusterConfig,
}

/// One DCP consumer connection to one node. See the [module docs](self) for
/// the driving contract.
#[derive(Debug, Clone)]
pub struct Consumer {
    config: ConsumerConfig,
    decoder: FrameDecoder,
    out: Outbox,
    handshake: Option<Handshake>,
    negotiated: Option<Negotiated>,
    // Boxed: a B-tree node then holds pointers, not 440-byte values, which
    // halves the memory an idle stream costs.
    vbuckets: BTreeMap<StreamKey, Box<Vbucket>>,
    streams_by_opaque: HashMap<u32, StreamKey>,
    retired: RetiredOpaques,
    pending: HashMap<u32, Pending>,
    high_seqnos_in_flight: bool,
    events: VecDeque<Event>,
    flow: ConsumerWindow,
    error: Option<ConsumerError>,
    started: Instant,
    last_rx: Instant,
    rx_len_seen: usize,
    stats: ConnectionStats,
    /// The newest cluster-config version seen on this connection.
    config_seen: Option<crate::msg::client::KnownVersion>,
    /// The version a brief notification announced and a fetch is under way for.
    config_fetch: Option<crate::msg::client::KnownVersion>,
    delivery: delivery::DeliveryTotals,
    flow_stalled: bool,
}

impl Consumer {
    /// A consumer that starts its handshake (HELLO is queued at once).
    ///
    /// `sasl_nonce` is the client nonce for SCRAM: fresh random printable
    /// ASCII (e.g. base64 of 18 random bytes), without `,`.
    pub fn new(
        config: ConsumerConfig,
        sasl_nonce: impl Into<String>,
        now: Instant,
    ) -> Result<Self, ConsumerError> {
        let mut out = Outbox::new();
        let handshake = Handshake::start(&config, sasl_nonce.into(), &mut out)?;
        Ok(Self {
            decoder: FrameDecoder::with_max_frame_len(config.max_frame_len),
            flow: ConsumerWindow::new(0, config.ack_threshold_percent, config.ack_interval),
            config,
            out,
            handshake: Some(handshake),
            negotiated: None,
            vbuckets: BTreeMap::new(),
            streams_by_opaque: HashMap::new(),
            retired: RetiredOpaques::default(),
            pending: HashMap::new(),
            high_seqnos_in_flight: false,
            events: VecDeque::new(),
            error: None,
            started: now,
            last_rx: now,
            rx_len_seen: 0,
            stats: ConnectionStats::default(),
            config_seen: None,
            config_fetch: None,
            delivery: delivery::DeliveryTotals::default(),
            flow_stalled: false,
        })
    }

    // ----- getters -------------------------------------------------------

    /// Whether the handshake completed.
    pub fn is_ready(&self) -> bool {
        self.negotiated.is_some() && self.error.is_none()
    }

    /// Whether the connection failed or was closed.
    pub fn is_closed(&self) -> bool {
        self.error.is_some()
    }

    /// The fatal error, if any.
    pub fn error(&self) -> Option<&ConsumerError> {
        self.error.as_ref()
    }

    /// What the producer agreed to, once ready.
    pub fn negotiated(&self) -> Option<&Negotiated> {
        self.negotiated.as_ref()
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// Every stream's position as of the events handed out so far: persist
    /// it with the data those events produced, and resume from it. With
    /// [consistent snapshots](ConsumerConfig::consistent_snapshots) it
    /// covers only complete snapshots.
    pub fn checkpoint(&self) -> Checkpoint {
        let mut checkpoint = Checkpoint::new();
        for (key, state) in &self.vbuckets {
            checkpoint.insert(*key, delivery::checkpoint_position(state));
        }
        checkpoint
    }

    /// One stream's position as of the events handed out so far (see
    /// [`checkpoint`](Self::checkpoint)).
    pub fn position(&self, stream: impl Into<StreamKey>) -> Option<StreamPosition> {
        self.vbuckets
            .get(&stream.into())
            .map(|v| delivery::checkpoint_position(v))
    }

    /// Connection counters.
    pub fn stats(&self) -> ConnectionStats {
        let mut stats = self.stats;
        stats.bytes_sent = self.out.bytes_sent;
        stats.flow_bytes_received = self.flow.total_received();
        stats.unacked_bytes = self.flow.unacked();
        stats.acked_bytes = self.flow.total_acked();
        stats.streams_open = self
            .vbuckets
            .values()
            .filter(|v| v.stream.as_ref().is_some_and(|s| s.is_open()))
            .count();
        for v in self.vbuckets.values() {
            stats.items += v.stats.items;
            stats.rollbacks += v.stats.rollbacks;
        }
        stats.held_bytes = self.delivery.held_bytes;
        stats.snapshots_completed = self.delivery.released;
        stats.snapshots_discarded = self.delivery.discarded;
        stats.snapshots_too_large = self.delivery.too_large;
        stats.connections = 1;
        stats
    }

    /// A stream's counters.
    pub fn stream_stats(&self, stream: impl Into<StreamKey>) -> Option<StreamStats> {
        self.vbuckets.get(&stream.into()).map(|v| v.stats())
    }

    /// Every stream's counters (streams this connection streamed or
    /// streams), in key order (vbucket, then stream id).
    pub fn all_stream_stats(&self) -> impl Iterator<Item = (StreamKey, StreamStats)> + '_ {
        self.vbuckets.iter().map(|(key, v)| (*key, v.stats()))
    }

    /// Whether a stream with this key (a vbucket number, or a
    /// [`StreamKey`] with a stream id) is open or being opened.
    pub fn has_stream(&self, stream: impl Into<StreamKey>) -> bool {
        self.vbuckets
            .get(&stream.into())
            .is_some_and(|v| v.stream.is_some())
    }

    /// Events waiting to be polled.
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    // ----- outputs -------------------------------------------------------

    /// Appends the bytes to send to `buf`; returns how many.
    pub fn poll_transmit(&mut self, buf: &mut BytesMut) -> usize {
        self.out.drain_into(buf)
    }

    /// Whether bytes are waiting for [`poll_transmit`](Self::poll_transmit).
    pub fn wants_transmit(&self) -> bool {
        !self.out.is_empty()
    }

    /// The next event, if any. Its changes are now covered by
    /// [`checkpoint`](Self::checkpoint).
    pub fn poll_event(&mut self) -> Option<Event> {
        let mut event = self.events.pop_front()?;
        if self.events.is_empty() && self.events.capacity() > EVENT_QUEUE_KEEP {
            // A burst (e.g. opening 1024 streams) should not leave its
            // queue allocated on an idle connection.
            self.events.shrink_to(EVENT_QUEUE_KEEP);
        }
        if let Some(key) = event.stream_key()
            && let Some(state) = self.vbuckets.get_mut(&key)
        {
            delivery::before_deliver(state, &event);
            stream::deliver(&mut state.delivered, &event);
        }
        if self.config.auto_ack {
            let credit = event.credit();
            if credit.bytes() > 0 {
                self.flow.release(credit.bytes(), self.last_rx);
                set_credit(&mut event, Credit::NONE);
                self.flush_acks(self.last_rx);
            }
        }
        Some(event)
    }

    /// The next instant at which [`handle_timeout`](Self::handle_timeout)
    /// must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.error.is_some() {
            return None;
        }
        let liveness = if self.handshake.is_some() {
            Some(self.started + self.config.handshake_timeout)
        } else {
            self.dead_after().map(|d| self.last_rx + d)
        };
        let retries = self.vbuckets.values().filter_map(|v| match v.stream {
            Some(Stream {
                state: StreamState::RetryAt(at),
                ..
            }) => Some(at),
            _ => None,
        });
        liveness
            .into_iter()
            .chain(self.flow.deadline())
            .chain(retries)
            .min()
    }

    fn dead_after(&self) -> Option<Duration> {
        let interval = self.negotiated.as_ref()?.noop_interval?;
        Some(interval * self.config.dead_connection_factor.max(1))
    }

    // ----- inputs --------------------------------------------------------

    /// Takes whole frames from `rx` and processes them.
    pub fn handle_input(&mut self, rx: &mut BytesMut, now: Instant) -> Result<(), ConsumerError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        if rx.len() != self.rx_len_seen {
            self.last_rx = now;
        }
        let result = self.read_frames(rx, now);
        self.rx_len_seen = rx.len();
        self.note_flow_stall();
        match result {
            Ok(()) => {
                self.flush_acks(now);
                Ok(())
            }
            Err(err) => Err(self.fail(err)),
        }
    }

    fn read_frames(&mut self, rx: &mut BytesMut, now: Instant) -> Result<(), ConsumerError> {
        while let Some(frame) = self.decoder.decode(rx)? {
            self.last_rx = now;
            self.stats.last_message_at = Some(now);
            self.stats.frames_received += 1;
            self.stats.bytes_received += frame.wire_len() as u64;
            if frame.is_response() {
                self.on_response(&frame, now)?;
            } else {
                self.on_request(frame, now)?;
            }
        }
        Ok(())
    }

    /// Checks deadlines: dead connection, handshake timeout, stream-request
    /// retries and time-based acks.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ConsumerError> {
        if let Some(err) = &self.error {
            return Err(err.clone());
        }
        if self.handshake.is_some() {
            let limit = self.config.handshake_timeout;
            if now.saturating_duration_since(self.started) >= limit {
                return Err(self.fail(ConsumerError::HandshakeTimeout(limit)));
            }
        } else if let Some(dead) = self.dead_after() {
            let silent = now.saturating_duration_since(self.last_rx);
            if silent >= dead {
                return Err(self.fail(ConsumerError::DeadConnection(silent)));
            }
        }
        let due: Vec<StreamKey> = self
            .vbuckets
            .iter()
            .filter(|(_, v)| {
                matches!(v.stream, Some(Stream { state: StreamState::RetryAt(at), .. }) if at <= now)
            })
            .map(|(key, _)| *key)
            .collect();
        for key in due {
            if let Err(err) = self.send_stream_request(key) {
                return Err(self.fail(err));
            }
        }
        self.flush_acks(now);
        Ok(())
    }

    /// The producer closed the connection.
    pub fn handle_eof(&mut self) {
        if self.error.is_none() {
            tracing::info!("connection closed by the producer");
            self.error = Some(ConsumerError::ClosedByPeer);
        }
    }

    fn fail(&mut self, err: ConsumerError) -> ConsumerError {
        if self.error.is_none() {
            match &err {
                ConsumerError::Closed => tracing::debug!("connection closed by the application"),
                ConsumerError::DeadConnection(silence) => {
                    tracing::warn!(?silence, "dead connection: nothing received")
                }
                other => tracing::warn!(error = %other, "connection failed"),
            }
        }
        self.error.get_or_insert(err).clone()
    }

    // ----- commands ------------------------------------------------------

    /// Opens a stream from `start`, up to and including `end_seqno`
    /// (`None`: endless). `stream` is a vbucket number or, on a connection
    /// with [stream ids](ConsumerConfig::stream_ids), a [`StreamKey`] with
    /// its stream id. Before the handshake completes the request is queued.
    pub fn open_stream(
        &mut self,
        stream: impl Into<StreamKey>,
        start: StreamStart,
        end_seqno: Option<u64>,
    ) -> Result<(), CommandError> {
        self.open_stream_with(stream.into(), start, end_seqno, None)
    }

    /// Refuses a key that does not fit the connection's stream-id setting.
    fn check_key(&self, key: StreamKey) -> Result<(), CommandError> {
        match (self.config.stream_ids, key.stream_id()) {
            (true, None) => Err(CommandError::StreamIdRequired(key.vbucket())),
            (false, Some(_)) => Err(CommandError::StreamIdsOff(key)),
            _ => Ok(()),
        }
    }

    /// [`open_stream`](Self::open_stream) with an optional collections
    /// filter.
    fn open_stream_with(
        &mut self,
        key: StreamKey,
        start: StreamStart,
        end_seqno: Option<u64>,
        filter: Option<StreamFilter>,
    ) -> Result<(), CommandError> {
        if self.error.is_some() {
            return Err(CommandError::Closed);
        }
        self.check_key(key)?;
        if self.has_stream(key) {
            return Err(CommandError::StreamExists(key));
        }
        let end = end_seqno.unwrap_or(u64::MAX);
        let state = self
            .vbuckets
            .entry(key)
            .or_insert_with(|| Box::new(Vbucket::new()));
        let resolving_now = matches!(start, StreamStart::Now);
        match start {
            StreamStart::Beginning => state.reset(StreamPosition::default()),
            StreamStart::Position(position) => state.reset(position),
            StreamStart::Resume | StreamStart::Now => {}
        }
        if state.received.last_seqno() > end {
            return Err(CommandError::InvalidPosition {
                stream: key,
                reason: "start is beyond the end seqno",
            });
        }
        let mut stream = Stream::new(
            end,
            if resolving_now {
                StreamState::ResolvingNow {
                    failover_log: None,
                    high_seqno: None,
                }
            } else {
                StreamState::Queued
            },
        );
        stream.filter = filter;
        state.stream = Some(stream);
        if self.handshake.is_none() {
            self.start_stream(key).map_err(|err| {
                self.fail(err);
                CommandError::Closed
            })?;
        }
        Ok(())
    }

    /// Closes a stream (a vbucket number, or a [`StreamKey`] with its
    /// stream id). Its [`Event::StreamEnded`] (reason Closed) follows;
    /// changes already in flight may arrive before it.
    pub fn close_stream(&mut self, stream: impl Into<StreamKey>) -> Result<(), CommandError> {
        let key = stream.into();
        if self.error.is_some() {
            return Err(CommandError::Closed);
        }
        let state = self
            .vbuckets
            .get_mut(&key)
            .ok_or(CommandError::NoStream(key))?;
        let stream = state.stream.as_mut().ok_or(CommandError::NoStream(key))?;
        match stream.state {
            StreamState::Open { opaque } => {
                stream.state = StreamState::Closing { opaque };
                let close = self
                    .out
                    .send(CloseStream {
                        vbucket: key.vbucket(),
                        opaque: 0,
                        stream_id: key.stream_id(),
                    })
                    .map_err(|err| {
                        self.error = Some(err.into());
                        CommandError::Closed
                    })?;
                self.pending.insert(close, Pending::CloseStream { key });
            }
            StreamState::Requested { .. } => stream.close_when_open = true,
            StreamState::Closing { .. } => {}
            _ => {
                state.stream = None;
                self.events.push_back(Event::StreamEnded {
                    vbucket: key.vbucket(),
                    stream_id: key.stream_id(),
                    reason: StreamEndReason::Closed,
                    credit: Credit::NONE,
                });
            }
        }
        Ok(())
    }

    /// Continues a stream waiting in [`RollbackMode::Confirm`], once the
    /// application has discarded its changes above the rollback seqno.
    pub fn confirm_rollback(&mut self, stream: impl Into<StreamKey>) -> Result<(), CommandError> {
        let key = stream.into();
        if self.error.is_some() {
            return Err(CommandError::Closed);
        }
        let waiting = self.vbuckets.get(&key).is_some_and(|v| {
            matches!(
                v.stream,
                Some(Stream {
                    state: StreamState::AwaitingRollbackConfirm,
                    ..
                })
            )
        });
        if !waiting {
            return Err(CommandError::NoRollbackPending(key));
        }
        self.send_stream_request(key).map_err(|err| {
            self.fail(err);
            CommandError::Closed
        })
    }

    /// Returns an event's flow-control credit: the application is done with
    /// it. Credit beyond what was received is ignored.
    pub fn ack(&mut self, credit: Credit) {
        self.ack_at(credit, self.last_rx);
    }

    /// Like [`ack`](Self::ack), with the current time (for the ack timer).
    pub fn ack_at(&mut self, credit: Credit, now: Instant) {
        if credit.bytes() > 0 && self.error.is_none() {
            self.flow.release(credit.bytes(), now);
            self.flush_acks(now);
            self.note_flow_stall();
        }
    }

    /// Sends SEQNO_ACKNOWLEDGED for the open stream of `vbucket`: the
    /// highest prepare seqno this consumer holds (as a replica reports its
    /// high prepared seqno at snapshot ends). Needs
    /// [`ConsumerConfig::sync_writes`]; the producer sends no response on
    /// success.
    pub fn acknowledge_prepared(
        &mut self,
        vbucket: u16,
        prepared_seqno: u64,
    ) -> Result<(), CommandError> {
        let negotiated = self.negotiated().ok_or(CommandError::Closed)?;
        if !negotiated.sync_writes {
            return Err(CommandError::SyncWritesOff);
        }
        let opaque = match self
            .vbuckets
            .get(&StreamKey::new(vbucket))
            .and_then(|vb| vb.stream.as_ref())
            .map(|s| s.state.clone())
        {
            Some(StreamState::Open { opaque }) => opaque,
            _ => return Err(CommandError::NoStream(StreamKey::new(vbucket))),
        };
        let ack = crate::msg::SeqnoAcknowledged {
            vbucket,
            opaque,
            prepared_seqno,
        };
        self.out
            .queue(&Message::SeqnoAcknowledged(ack))
            .map_err(|_| CommandError::Closed)
    }

    /// Asks for a vbucket's failover log; the answer arrives as
    /// [`Event::FailoverLog`].
    pub fn request_failover_log(&mut self, vbucket: u16) -> Result<(), CommandError> {
        if !self.is_ready() {
            return Err(CommandError::Closed);
        }
        let opaque = self
            .out
            .send(GetFailoverLog { vbucket, opaque: 0 })
            .map_err(|_| CommandError::Closed)?;
        self.pending.insert(
            opaque,
            Pending::FailoverLog {
                vbucket,
                for_now: None,
            },
        );
        Ok(())
    }

    /// Asks the node for the bucket's cluster configuration (the vbucket
    /// map); the answer arrives as [`Event::ClusterConfig`].
    pub fn request_cluster_config(&mut self) -> Result<(), CommandError> {
        if !self.is_ready() {
            return Err(CommandError::Closed);
        }
        let opaque = self
            .out
            .send(GetClusterConfig {
                opaque: 0,
                known: None,
            })
            .map_err(|_| CommandError::Closed)?;
        self.pending.insert(opaque, Pending::ClusterConfig);
        Ok(())
    }

    /// Asks the node for every active vbucket's high seqno
    /// (GET_ALL_VB_SEQNOS), to refresh [`StreamStats::high_seqno`] and
    /// [`StreamStats::lag`]; nothing is sent if such a request is already in
    /// flight. No event follows.
    pub fn request_high_seqnos(&mut self) -> Result<(), CommandError> {
        if !self.is_ready() {
            return Err(CommandError::Closed);
        }
        if self.high_seqnos_in_flight {
            return Ok(());
        }
        let opaque = self
            .out
            .send(GetAllVbSeqnos {
                opaque: 0,
                state: Some(1),
                collection_id: None,
            })
            .map_err(|_| CommandError::Closed)?;
        self.pending.insert(opaque, Pending::HighSeqnos);
        self.high_seqnos_in_flight = true;
        Ok(())
    }

    /// Closes the connection: nothing more is sent or processed. Queued
    /// events can still be polled.
    pub fn close(&mut self) {
        self.fail(ConsumerError::Closed);
    }

    // ----- internals -----------------------------------------------------

    fn flush_acks(&mut self, now: Instant) {
        if let Some(bytes) = self.flow.take_ack(now) {
            // A BUFFER_ACK never fails to encode; on the off chance, the
            // bytes are simply acked with the next one.
            if self
                .out
                .send(BufferAck {
                    vbucket: 0,
                    opaque: 0,
                    bytes,
                })
                .is_ok()
            {
                self.stats.buffer_acks_sent += 1;
                self.stats.last_ack_at = Some(now);
            }
        }
    }

    /// Logs when the window fills up (the producer must wait for the
    /// application's acks) and when it opens again.
    fn note_flow_stall(&mut self) {
        let window = u64::from(self.flow.window());
        let full = window > 0 && self.flow.unreleased() >= window;
        if full != self.flow_stalled {
            self.flow_stalled = full;
            if full {
                tracing::debug!(
                    window,
                    unreleased = self.flow.unreleased(),
                    "flow control: window full, the producer waits for acks"
                );
            } else {
                tracing::debug!("flow control: window open again");
            }
        }
    }

    /// Releases the credit of a message that yields no event.
    fn release_now(&mut self, credit: u32, now: Instant) {
        self.flow.release(credit, now);
    }

    fn on_ready(&mut self, negotiated: Negotiated, now: Instant) -> Result<(), ConsumerError> {
        self.flow = ConsumerWindow::new(
            negotiated.buffer_size,
            self.config.ack_threshold_percent,
            self.config.ack_interval,
        );
        self.handshake = None;
        self.last_rx = now;
        self.negotiated = Some(negotiated.clone());
        self.events.push_back(Event::Ready(negotiated));
        let queued: Vec<StreamKey> = self
            .vbuckets
            .iter()
            .filter(|(_, v)| v.stream.is_some())
            .map(|(key, _)| *key)
            .collect();
        for key in queued {
            self.start_stream(key)?;
        }
        Ok(())
    }

    /// Sends what a new stream needs first: its request, or the look-ups of
    /// "now".
    fn start_stream(&mut self, key: StreamKey) -> Result<(), ConsumerError> {
        let resolving = self.vbuckets.get(&key).is_some_and(|v| {
            matches!(
                v.stream,
                Some(Stream {
                    state: StreamState::ResolvingNow { .. },
                    ..
                })
            )
        });
        if !resolving {
            return self.send_stream_request(key);
        }
        let vbucket = key.vbucket();
        let opaque = self.out.send(GetFailoverLog { vbucket, opaque: 0 })?;
        self.pending.insert(
            opaque,
            Pending::FailoverLog {
                vbucket,
                for_now: Some(key),
            },
        );
        if !self.high_seqnos_in_flight {
            let opaque = self.out.send(GetAllVbSeqnos {
                opaque: 0,
                state: Some(1),
                collection_id: None,
            })?;
            self.pending.insert(opaque, Pending::HighSeqnos);
            self.high_seqnos_in_flight = true;
        }
        Ok(())
    }

    fn send_stream_request(&mut self, key: StreamKey) -> Result<(), ConsumerError> {
        let mut value = self.filter_for_request(key);
        if let Some(sid) = key.stream_id() {
            value.get_or_insert_default().sid = Some(sid);
        }
        let vbucket = key.vbucket();
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return Ok(());
        };
        let Some(stream) = state.stream.as_mut() else {
            return Ok(());
        };
        let resume = state.received.position().resume();
        let request = StreamRequest {
            vbucket,
            opaque: 0,
            flags: StreamRequestFlags::empty(),
            start_seqno: resume.start_seqno,
            end_seqno: stream.end_seqno,
            vbucket_uuid: resume.vbucket_uuid,
            snap_start_seqno: resume.snap_start_seqno,
            snap_end_seqno: resume.snap_end_seqno,
            value,
        };
        tracing::debug!(
            vb = vbucket,
            sid = key.stream_id(),
            start = resume.start_seqno,
            end = stream.end_seqno,
            vb_uuid = resume.vbucket_uuid,
            snap_start = resume.snap_start_seqno,
            snap_end = resume.snap_end_seqno,
            "stream request"
        );
        let opaque = self.out.send(request)?;
        stream.state = StreamState::Requested { opaque };
        state.stats.requests += 1;
        self.pending.insert(
            opaque,
            Pending::StreamRequest {
                key,
                start: resume.start_seqno,
            },
        );
        Ok(())
    }

    fn on_response(&mut self, frame: &Frame, now: Instant) -> Result<(), ConsumerError> {
        if let Some(handshake) = &mut self.handshake {
            if frame.opaque() != handshake.opaque() {
                return Err(ProtocolError::UnexpectedResponse {
                    opcode: frame.opcode(),
                    opaque: frame.opaque(),
                }
                .into());
            }
            let step = handshake.step_name();
            tracing::debug!(%step, status = ?frame.status(), "handshake step answered");
            return match handshake.on_response(frame, &self.config, &mut self.out)? {
                Progress::Continue => Ok(()),
                Progress::Ready(negotiated) => {
                    tracing::info!(
                        buffer_size = negotiated.buffer_size,
                        noop_interval = ?negotiated.noop_interval,
                        "handshake complete"
                    );
                    self.on_ready(negotiated, now)
                }
            };
        }
        let Some(pending) = self.pending.remove(&frame.opaque()) else {
            // A reply to a BUFFER_ACK is an error report; the producer
            // disconnects on its own if it cares.
            if frame.opcode() == Opcode::DcpBufferAck {
                return Ok(());
            }
            return Err(ProtocolError::UnexpectedResponse {
                opcode: frame.opcode(),
                opaque: frame.opaque(),
            }
            .into());
        };
        let expected = match pending {
            Pending::StreamRequest { .. } => Opcode::DcpStreamReq,
            Pending::CloseStream { .. } => Opcode::DcpCloseStream,
            Pending::FailoverLog { .. } => Opcode::DcpGetFailoverLog,
            Pending::HighSeqnos => Opcode::GetAllVbSeqnos,
            Pending::ClusterConfig => Opcode::GetClusterConfig,
        };
        if frame.opcode() != expected {
            return Err(ProtocolError::MismatchedResponse {
                expected,
                got: frame.opcode(),
            }
            .into());
        }
        match pending {
            Pending::StreamRequest { key, start } => {
                let response = StreamRequestResponse::decode(frame)?;
                self.on_stream_response(key, start, response, now)
            }
            Pending::CloseStream { key } => {
                let response = StatusResponse::decode(frame)?;
                self.on_close_response(key, response.status);
                Ok(())
            }
            Pending::FailoverLog { vbucket, for_now } => {
                let response = FailoverLogResponse::decode(frame)?;
                self.on_failover_log(vbucket, for_now, response)
            }
            Pending::ClusterConfig => {
                let response = GetClusterConfigResponse::decode(frame)?;
                self.on_config_answer(response.status, &response.config);
                self.events.push_back(Event::ClusterConfig {
                    status: response.status,
                    config: response.config,
                });
                Ok(())
            }
            Pending::HighSeqnos => {
                self.high_seqnos_in_flight = false;
                let response = GetAllVbSeqnosResponse::decode(frame)?;
                self.on_high_seqnos(response)
            }
        }
    }

    fn on_stream_response(
        &mut self,
        key: StreamKey,
        start: u64,
        response: StreamRequestResponse,
        now: Instant,
    ) -> Result<(), ConsumerError> {
        let (vbucket, stream_id) = (key.vbucket(), key.stream_id());
        let _span = tracing::debug_span!("dcp.stream", vb = vbucket, sid = stream_id).entered();
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return Ok(());
        };
        let Some(stream) = state.stream.as_mut() else {
            return Ok(());
        };
        let opaque = response.opaque;
        match response.outcome {
            StreamRequestOutcome::Accepted(failover_log) => {
                tracing::info!(
                    vb = vbucket,
                    opaque,
                    vb_uuid = failover_log.entries.first().map(|e| e.vbucket_uuid),
                    "stream open"
                );
                stream.state = StreamState::Open { opaque };
                stream.rollbacks_in_a_row = 0;
                stream.retry_delay = None;
                let close = std::mem::take(&mut stream.close_when_open);
                state.received.set_failover_log(failover_log.clone());
                self.streams_by_opaque.insert(opaque, key);
                self.events.push_back(Event::StreamOpened {
                    vbucket,
                    stream_id,
                    failover_log,
                });
                if close {
                    self.close_stream(key).map_err(|_| ConsumerError::Closed)?;
                }
                Ok(())
            }
            StreamRequestOutcome::Rollback(seqno) => {
                if seqno > start || (seqno == start && seqno != 0) {
                    return Err(ProtocolError::RollbackAhead { seqno, start }.into());
                }
                stream.rollbacks_in_a_row += 1;
                state.stats.rollbacks += 1;
                tracing::info!(
                    vb = vbucket,
                    seqno,
                    start,
                    in_a_row = stream.rollbacks_in_a_row,
                    "rollback"
                );
                if stream.rollbacks_in_a_row > self.config.max_rollbacks {
                    state.stream = None;
                    self.events.push_back(Event::StreamFailed {
                        vbucket,
                        stream_id,
                        status: Status::Rollback,
                        body: Bytes::from_static(b"too many rollbacks in a row"),
                    });
                    return Ok(());
                }
                // Cut where this consumer's data was a real state (§2.5).
                let seqno = state.received.rollback_point(seqno);
                state.received.rollback(seqno);
                self.events.push_back(Event::Rollback {
                    vbucket,
                    stream_id,
                    seqno,
                });
                if stream.close_when_open {
                    state.stream = None;
                    self.events.push_back(Event::StreamEnded {
                        vbucket,
                        stream_id,
                        reason: StreamEndReason::Closed,
                        credit: Credit::NONE,
                    });
                    return Ok(());
                }
                match self.config.rollback {
                    RollbackMode::Automatic => self.send_stream_request(key),
                    RollbackMode::Confirm => {
                        stream.state = StreamState::AwaitingRollbackConfirm;
                        Ok(())
                    }
                }
            }
            StreamRequestOutcome::Failed { status, body } => {
                tracing::warn!(vb = vbucket, %status, "stream request refused");
                if matches!(status, Status::Etmpfail | Status::Enomem | Status::Ebusy) {
                    let delay = stream
                        .next_retry_delay(self.config.retry_delay, self.config.max_retry_delay);
                    stream.state = StreamState::RetryAt(now + delay);
                } else {
                    state.stream = None;
                    self.events.push_back(Event::StreamFailed {
                        vbucket,
                        stream_id,
                        status,
                        body,
                    });
                }
                Ok(())
            }
        }
    }

    fn on_close_response(&mut self, key: StreamKey, status: Status) {
        let stream_end_follows = self
            .negotiated
            .as_ref()
            .is_some_and(|n| n.stream_end_on_close);
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return;
        };
        let Some(Stream {
            state: StreamState::Closing { opaque },
            ..
        }) = state.stream
        else {
            // Already ended (its STREAM_END crossed our close).
            return;
        };
        // With the control on, the producer's STREAM_END(Closed) finishes
        // an accepted close. Anything else finishes it now: KEY_ENOENT means
        // the stream had already ended, and if its STREAM_END is still in
        // flight it arrives as a straggler of a closed opaque (ignored, its
        // credit returned) rather than leaving the stream closing forever.
        if stream_end_follows && status == Status::Success {
            return;
        }
        state.stream = None;
        self.streams_by_opaque.remove(&opaque);
        self.retired.retire(opaque, Retired::Closed);
        self.end_snapshot(key, false);
        self.events.push_back(Event::StreamEnded {
            vbucket: key.vbucket(),
            stream_id: key.stream_id(),
            reason: StreamEndReason::Closed,
            credit: Credit::NONE,
        });
    }

    fn on_failover_log(
        &mut self,
        vbucket: u16,
        for_now: Option<StreamKey>,
        response: FailoverLogResponse,
    ) -> Result<(), ConsumerError> {
        let Some(key) = for_now else {
            if response.status.is_success() {
                self.events.push_back(Event::FailoverLog {
                    vbucket,
                    failover_log: response.log,
                });
            }
            return Ok(());
        };
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return Ok(());
        };
        let Some(stream) = state.stream.as_mut() else {
            return Ok(());
        };
        if !response.status.is_success() {
            state.stream = None;
            self.events.push_back(Event::StreamFailed {
                vbucket,
                stream_id: key.stream_id(),
                status: response.status,
                body: response.error_body,
            });
            return Ok(());
        }
        if let StreamState::ResolvingNow { failover_log, .. } = &mut stream.state {
            *failover_log = Some(Box::new(response.log));
        }
        self.maybe_request_from_now(key)
    }

    fn on_high_seqnos(&mut self, response: GetAllVbSeqnosResponse) -> Result<(), ConsumerError> {
        if response.status.is_success() {
            for (vb, seqno) in &response.entries {
                for (_, state) in self.vbuckets.range_mut(StreamKey::all_of(*vb)) {
                    state.stats.high_seqno = state.stats.high_seqno.max(Some(*seqno));
                }
            }
        }
        let resolving: Vec<StreamKey> = self
            .vbuckets
            .iter()
            .filter(|(_, v)| {
                matches!(
                    v.stream,
                    Some(Stream {
                        state: StreamState::ResolvingNow {
                            high_seqno: None,
                            ..
                        },
                        ..
                    })
                )
            })
            .map(|(key, _)| *key)
            .collect();
        for key in resolving {
            let seqno = response
                .entries
                .iter()
                .find(|(v, _)| *v == key.vbucket())
                .map(|(_, s)| *s);
            let Some(state) = self.vbuckets.get_mut(&key) else {
                continue;
            };
            match (seqno, response.status.is_success()) {
                (Some(seqno), true) => {
                    state.stats.high_seqno = Some(seqno);
                    if let Some(Stream {
                        state: StreamState::ResolvingNow { high_seqno, .. },
                        ..
                    }) = &mut state.stream
                    {
                        *high_seqno = Some(seqno);
                    }
                    self.maybe_request_from_now(key)?;
                }
                _ => {
                    // Not an active vbucket here.
                    state.stream = None;
                    self.events.push_back(Event::StreamFailed {
                        vbucket: key.vbucket(),
                        stream_id: key.stream_id(),
                        status: if response.status.is_success() {
                            Status::NotMyVbucket
                        } else {
                            response.status
                        },
                        body: Bytes::new(),
                    });
                }
            }
        }
        Ok(())
    }

    fn maybe_request_from_now(&mut self, key: StreamKey) -> Result<(), ConsumerError> {
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return Ok(());
        };
        let Some(Stream {
            state:
                StreamState::ResolvingNow {
                    failover_log: Some(log),
                    high_seqno: Some(seqno),
                },
            ..
        }) = &state.stream
        else {
            return Ok(());
        };
        state.reset(StreamPosition::at(
            crate::msg::FailoverLog::clone(log),
            *seqno,
        ));
        self.send_stream_request(key)
    }

    fn on_request(&mut self, frame: Frame, now: Instant) -> Result<(), ConsumerError> {
        if frame.magic() == crate::codec::Magic::ServerRequest {
            self.on_server_request(&frame);
            return Ok(());
        }
        if frame.opcode() == Opcode::DcpNoop {
            // Answered at once, outside flow control and back-pressure; noops
            // may start as soon as enable_noop is accepted, mid-handshake.
            self.out
                .queue(&Message::StatusResponse(StatusResponse::success(
                    Opcode::DcpNoop,
                    frame.opaque(),
                )))?;
            self.stats.noops_answered += 1;
            return Ok(());
        }
        if self.handshake.is_some() {
            return Err(ProtocolError::UnexpectedRequest(frame.opcode()).into());
        }
        if !is_stream_message(frame.opcode()) {
            return Err(ProtocolError::UnexpectedRequest(frame.opcode()).into());
        }
        let credit = flow_control_size(frame.opcode(), frame.wire_len());
        self.flow.on_received(credit);
        let opaque = frame.opaque();
        let Some(&key) = self.streams_by_opaque.get(&opaque) else {
            return match self.retired.get(opaque) {
                // Stragglers of a stream closed without STREAM_END.
                Some(Retired::Closed) => {
                    self.release_now(credit, now);
                    Ok(())
                }
                _ => Err(ProtocolError::UnknownStream {
                    opcode: frame.opcode(),
                    opaque,
                }
                .into()),
            };
        };
        let vbucket = key.vbucket();
        if frame.vbucket() != vbucket {
            return Err(ProtocolError::WrongVbucket {
                opcode: frame.opcode(),
                expected: vbucket,
                got: frame.vbucket(),
            }
            .into());
        }
        let framed = frame.stream_id()?;
        if framed != key.stream_id() {
            return Err(ProtocolError::WrongStreamId {
                opcode: frame.opcode(),
                expected: key.stream_id(),
                got: framed,
            }
            .into());
        }
        let opcode = frame.opcode();
        let mut message = Message::from_frame(frame)?;
        if self.config.snappy == SnappyMode::Decompress {
            decompress_message(&mut message, self.config.max_frame_len)
                .map_err(|error| ProtocolError::BadSnappyValue { opcode, error })?;
        }
        let _span =
            tracing::debug_span!("dcp.stream", vb = vbucket, sid = key.stream_id()).entered();
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return Ok(());
        };
        delivery::before_receive(state, &message, self.config.consistent_snapshots.is_some());
        let outcome = stream::receive(state, message, Credit(credit), &mut self.out)
            .map_err(|violation| ConsumerError::Violation { vbucket, violation })?;
        match outcome {
            stream::Received::Event(event) => {
                if let Some(key) = crate::log::key_of(&event) {
                    let key = crate::log::UserData::new(key, self.config.log_keys);
                    tracing::trace!(seqno = event.seqno(), %key, "change");
                }
                self.route_stream_event(key, event, now)
            }
            stream::Received::Dropped => self.release_now(credit, now),
            stream::Received::Ended(event) => {
                let reached_end = matches!(
                    event,
                    Event::StreamEnded {
                        reason: StreamEndReason::Ok,
                        ..
                    }
                );
                if let Event::StreamEnded { reason, .. } = &event {
                    tracing::info!(vb = vbucket, ?reason, "stream ended");
                }
                self.end_snapshot(key, reached_end);
                if let Some(state) = self.vbuckets.get_mut(&key) {
                    state.stream = None;
                }
                self.streams_by_opaque.remove(&opaque);
                self.retired.retire(opaque, Retired::Ended);
                self.events.push_back(event);
            }
            stream::Received::Unexpected => {
                return Err(ProtocolError::UnexpectedRequest(opcode).into());
            }
        }
        Ok(())
    }
}

/// Producer requests that belong to a stream (and count for flow control).
fn is_stream_message(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::DcpStreamEnd
            | Opcode::DcpSnapshotMarker
            | Opcode::DcpMutation
            | Opcode::DcpDeletion
            | Opcode::DcpExpiration
            | Opcode::DcpSetVbucketState
            | Opcode::DcpSystemEvent
            | Opcode::DcpPrepare
            | Opcode::DcpCommit
            | Opcode::DcpAbort
            | Opcode::DcpSeqnoAdvanced
            | Opcode::DcpOsoSnapshot
            | Opcode::DcpCacheTransfer
            | Opcode::DcpCacheTransferEnd
    )
}

/// Replaces a Snappy-compressed value of a data message by the plain one.
fn decompress_message(message: &mut Message, max: usize) -> Result<(), crate::msg::SnappyError> {
    let (datatype, value) = match message {
        Message::Mutation(m) => (&mut m.datatype, &mut m.value),
        Message::Deletion(m) => (&mut m.datatype, &mut m.value),
        Message::Expiration(m) => (&mut m.datatype, &mut m.value),
        Message::Prepare(m) => (&mut m.datatype, &mut m.value),
        _ => return Ok(()),
    };
    if datatype.is_snappy() {
        (*datatype, *value) = crate::msg::decompress_value(*datatype, value, max)?;
    }
    Ok(())
}

fn set_credit(event: &mut Event, credit: Credit) {
    match event {
        Event::SnapshotMarker(_, c)
        | Event::Mutation(_, c)
        | Event::Deletion(_, c)
        | Event::Expiration(_, c)
        | Event::SystemEvent(_, c)
        | Event::SeqnoAdvanced(_, c)
        | Event::OsoSnapshot(_, c)
        | Event::Prepare(_, c)
        | Event::Commit(_, c)
        | Event::Abort(_, c) => *c = credit,
        Event::StreamEnded { credit: c, .. } => *c = credit,
        _ => {}
    }
}
