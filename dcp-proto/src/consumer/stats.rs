//! Counters a consumer exposes (what `behavior.md` §9 asks a client to show).
//!
//! [`Consumer::stats`](super::Consumer::stats) gives a [`ConnectionStats`]
//! and [`Consumer::stream_stats`](super::Consumer::stream_stats) a
//! [`StreamStats`]: plain copies, cheap to take at any time. Times are the
//! instants the caller fed in (the core reads no clock). Counts that only a
//! reconnecting client knows (reconnects) are zero from a bare consumer and
//! filled in by the cluster clients; [`ConnectionStats::merge`] and
//! [`StreamStats::merge`] add up several connections.

use std::time::Instant;

use crate::msg::{SnapshotFlags, StreamEndReason};

/// Per-connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Bytes taken from the receive buffer (whole frames).
    pub bytes_received: u64,
    /// Bytes queued for the producer.
    pub bytes_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Stream-message bytes counted for flow control.
    pub flow_bytes_received: u64,
    /// Counted bytes not yet acknowledged to the producer.
    pub unacked_bytes: u64,
    /// Bytes acknowledged with BUFFER_ACK.
    pub acked_bytes: u64,
    /// BUFFER_ACKs sent.
    pub buffer_acks_sent: u64,
    /// When the last BUFFER_ACK was sent.
    pub last_ack_at: Option<Instant>,
    /// When the last whole frame was received.
    pub last_message_at: Option<Instant>,
    /// DCP_NOOPs answered.
    pub noops_answered: u64,
    /// Streams currently open.
    pub streams_open: usize,
    /// Cluster-map change notifications received (server requests).
    pub config_notifications: u64,
    /// Server requests ignored (unknown opcode or malformed).
    pub server_requests_ignored: u64,
    /// Seqno-bearing changes received, all streams.
    pub items: u64,
    /// Rollbacks obeyed, all streams.
    pub rollbacks: u64,
    /// Times the connection was re-established (set by the clients that
    /// reconnect; 0 from a single consumer).
    pub reconnects: u64,
    /// Consistent-snapshot mode: bytes held now.
    pub held_bytes: u64,
    /// Consistent-snapshot mode: snapshots handed out complete.
    pub snapshots_completed: u64,
    /// Consistent-snapshot mode: snapshots discarded because their stream
    /// ended before they were complete.
    pub snapshots_discarded: u64,
    /// Consistent-snapshot mode: snapshots let through for exceeding the
    /// hold limit.
    pub snapshots_too_large: u64,
    /// Connections these counters add up (1 from a single consumer).
    pub connections: usize,
}

impl ConnectionStats {
    /// Adds `other`'s counters to these (a cluster's aggregate). Instants
    /// keep the latest of both.
    pub fn merge(&mut self, other: &ConnectionStats) {
        self.bytes_received += other.bytes_received;
        self.bytes_sent += other.bytes_sent;
        self.frames_received += other.frames_received;
        self.flow_bytes_received += other.flow_bytes_received;
        self.unacked_bytes += other.unacked_bytes;
        self.acked_bytes += other.acked_bytes;
        self.buffer_acks_sent += other.buffer_acks_sent;
        self.last_ack_at = later(self.last_ack_at, other.last_ack_at);
        self.last_message_at = later(self.last_message_at, other.last_message_at);
        self.noops_answered += other.noops_answered;
        self.streams_open += other.streams_open;
        self.items += other.items;
        self.rollbacks += other.rollbacks;
        self.reconnects += other.reconnects;
        self.held_bytes += other.held_bytes;
        self.snapshots_completed += other.snapshots_completed;
        self.snapshots_discarded += other.snapshots_discarded;
        self.snapshots_too_large += other.snapshots_too_large;
        self.connections += other.connections;
        self.config_notifications += other.config_notifications;
        self.server_requests_ignored += other.server_requests_ignored;
    }
}

fn later(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// Where a stream is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StreamStatus {
    /// No stream (never opened, or ended).
    #[default]
    None,
    /// Waiting for the handshake.
    Queued,
    /// Looking up the failover log and high seqno to start "from now".
    Resolving,
    /// STREAM_REQ sent, no answer yet.
    Requested,
    /// Waiting to retry after a temporary failure.
    Retrying,
    /// Waiting for the application to confirm a rollback.
    AwaitingRollbackConfirm,
    /// Streaming.
    Open,
    /// CLOSE_STREAM sent.
    Closing,
}

impl StreamStatus {
    /// A short lower-case name (`open`, `requested`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            StreamStatus::None => "none",
            StreamStatus::Queued => "queued",
            StreamStatus::Resolving => "resolving",
            StreamStatus::Requested => "requested",
            StreamStatus::Retrying => "retrying",
            StreamStatus::AwaitingRollbackConfirm => "awaiting-rollback-confirm",
            StreamStatus::Open => "open",
            StreamStatus::Closing => "closing",
        }
    }
}

/// How many streams ended for each STREAM_END reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EndReasonCounts {
    /// Reached the end seqno.
    pub ok: u64,
    /// Closed by the client.
    pub closed: u64,
    /// The vbucket changed state (e.g. moved in a rebalance).
    pub state_changed: u64,
    /// The connection is going away.
    pub disconnected: u64,
    /// Too slow: the producer dropped the cursor.
    pub slow: u64,
    /// Backfill failed.
    pub backfill_failed: u64,
    /// Must roll back.
    pub rollback: u64,
    /// The collections filter became empty.
    pub filter_empty: u64,
    /// Privileges lost.
    pub lost_privileges: u64,
    /// Any other reason code.
    pub other: u64,
}

impl EndReasonCounts {
    /// Counts one end.
    pub fn record(&mut self, reason: StreamEndReason) {
        let slot = match reason {
            StreamEndReason::Ok => &mut self.ok,
            StreamEndReason::Closed => &mut self.closed,
            StreamEndReason::StateChanged => &mut self.state_changed,
            StreamEndReason::Disconnected => &mut self.disconnected,
            StreamEndReason::Slow => &mut self.slow,
            StreamEndReason::BackfillFailed => &mut self.backfill_failed,
            StreamEndReason::Rollback => &mut self.rollback,
            StreamEndReason::FilterEmpty => &mut self.filter_empty,
            StreamEndReason::LostPrivileges => &mut self.lost_privileges,
            _ => &mut self.other,
        };
        *slot += 1;
    }

    /// Ends of every reason.
    pub fn total(&self) -> u64 {
        self.ok
            + self.closed
            + self.state_changed
            + self.disconnected
            + self.slow
            + self.backfill_failed
            + self.rollback
            + self.filter_empty
            + self.lost_privileges
            + self.other
    }

    /// Adds `other`'s counts.
    pub fn merge(&mut self, other: &EndReasonCounts) {
        self.ok += other.ok;
        self.closed += other.closed;
        self.state_changed += other.state_changed;
        self.disconnected += other.disconnected;
        self.slow += other.slow;
        self.backfill_failed += other.backfill_failed;
        self.rollback += other.rollback;
        self.filter_empty += other.filter_empty;
        self.lost_privileges += other.lost_privileges;
        self.other += other.other;
    }
}

/// What a stream keeps between [`StreamStats`] snapshots: only the counts
/// (the rest is read from the stream's state when asked), so an idle stream
/// stays small.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamCounters {
    pub(crate) items: u64,
    pub(crate) bytes: u64,
    pub(crate) rollbacks: u64,
    pub(crate) requests: u64,
    pub(crate) stream_ends: u64,
    pub(crate) high_seqno: Option<u64>,
    pub(crate) snapshot_flags: Option<SnapshotFlags>,
    /// Boxed: most streams never end.
    pub(crate) end_reasons: Option<Box<EndReasonCounts>>,
}

impl StreamCounters {
    /// Counts a stream end.
    pub(crate) fn ended(&mut self, reason: StreamEndReason) {
        self.stream_ends += 1;
        self.end_reasons
            .get_or_insert_with(Box::default)
            .record(reason);
    }

    /// The public snapshot of these counts (positions filled in by the
    /// caller).
    pub(crate) fn snapshot(&self) -> StreamStats {
        StreamStats {
            items: self.items,
            bytes: self.bytes,
            rollbacks: self.rollbacks,
            requests: self.requests,
            stream_ends: self.stream_ends,
            high_seqno: self.high_seqno,
            snapshot_flags: self.snapshot_flags,
            end_reasons: self.end_reasons.as_deref().copied().unwrap_or_default(),
            ..StreamStats::default()
        }
    }
}

/// Per-stream counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// Where the stream is.
    pub status: StreamStatus,
    /// The stream's opaque, while requested, open or closing.
    pub opaque: Option<u32>,
    /// Seqno-bearing changes received.
    pub items: u64,
    /// Flow-control bytes received for the stream.
    pub bytes: u64,
    /// Last seqno received.
    pub last_seqno: u64,
    /// Current snapshot bounds, as received.
    pub snapshot: Option<(u64, u64)>,
    /// Flags of the latest snapshot marker (memory, disk, checkpoint, ...).
    pub snapshot_flags: Option<SnapshotFlags>,
    /// The vbucket uuid of the newest branch of the stream's failover log.
    pub vb_uuid: Option<u64>,
    /// The vbucket's high seqno, as last learned: from GET_ALL_VB_SEQNOS
    /// (opening "from now", or
    /// [`Consumer::request_high_seqnos`](super::Consumer::request_high_seqnos))
    /// and from every snapshot marker's end.
    pub high_seqno: Option<u64>,
    /// Changes known to exist beyond `last_seqno` (high seqno or snapshot
    /// end), when known.
    pub lag: Option<u64>,
    /// Rollbacks obeyed.
    pub rollbacks: u64,
    /// Stream requests sent.
    pub requests: u64,
    /// Streams ended by the producer.
    pub stream_ends: u64,
    /// Stream ends by reason.
    pub end_reasons: EndReasonCounts,
    /// Consistent-snapshot mode: bytes held for the current snapshot.
    pub held_bytes: u64,
    /// Consistent-snapshot mode: events held for the current snapshot.
    pub held_events: u64,
}

impl StreamStats {
    /// Adds `other`'s counters (the same vbucket over several connections,
    /// e.g. before and after a move). Positions keep the furthest.
    pub fn merge(&mut self, other: &StreamStats) {
        self.items += other.items;
        self.bytes += other.bytes;
        self.rollbacks += other.rollbacks;
        self.requests += other.requests;
        self.stream_ends += other.stream_ends;
        self.end_reasons.merge(&other.end_reasons);
        self.held_bytes += other.held_bytes;
        self.held_events += other.held_events;
        if other.last_seqno >= self.last_seqno || self.status == StreamStatus::None {
            self.status = other.status;
            self.opaque = other.opaque;
            self.last_seqno = other.last_seqno;
            self.snapshot = other.snapshot;
            self.snapshot_flags = other.snapshot_flags;
            self.vb_uuid = other.vb_uuid.or(self.vb_uuid);
            self.lag = other.lag;
        }
        self.high_seqno = self.high_seqno.max(other.high_seqno);
    }
}
