//! What the consumer hands to the application.

use bytes::Bytes;

use super::handshake::Negotiated;
use crate::codec::Status;
use crate::msg::{
    Abort, Commit, Deletion, Expiration, FailoverLog, Mutation, OsoSnapshot, Prepare,
    SeqnoAdvanced, SnapshotMarker, StreamEndReason, SystemEvent,
};
use crate::session::StreamKey;

/// Flow-control credit of one received message. Give it back with
/// [`Consumer::ack`](super::Consumer::ack) once the application is done with
/// the message, so the producer may send more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[must_use = "credit not acknowledged keeps the producer's window closed"]
pub struct Credit(pub(crate) u32);

impl Credit {
    /// No credit (flow control off, or already released automatically).
    pub const NONE: Credit = Credit(0);

    /// Bytes this credit returns.
    pub fn bytes(self) -> u32 {
        self.0
    }
}

/// Something the application should know or act on.
///
/// Stream data comes with its [`Credit`]; everything the producer sent that
/// yields no event is released by the consumer itself, so forgetting a
/// message type cannot stall the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The handshake completed; streams may be opened.
    Ready(Negotiated),
    /// A stream request was accepted; its failover log is now the stream's.
    StreamOpened {
        /// The vbucket.
        vbucket: u16,
        /// The stream id, on a connection with stream ids.
        stream_id: Option<u16>,
        /// The producer's failover log.
        failover_log: FailoverLog,
    },
    /// The producer's history diverged from the stream's position: discard
    /// every change above `seqno` for this vbucket. In
    /// [`RollbackMode::Confirm`](super::RollbackMode::Confirm) the stream
    /// waits for [`Consumer::confirm_rollback`](super::Consumer::confirm_rollback).
    Rollback {
        /// The vbucket.
        vbucket: u16,
        /// The stream id, on a connection with stream ids.
        stream_id: Option<u16>,
        /// Keep changes up to and including this seqno.
        seqno: u64,
    },
    /// A stream request failed for a reason retrying will not fix (for
    /// temporary failures the consumer retries by itself).
    StreamFailed {
        /// The vbucket.
        vbucket: u16,
        /// The stream id, on a connection with stream ids.
        stream_id: Option<u16>,
        /// The producer's status (e.g. NotMyVbucket: ask the cluster map).
        status: Status,
        /// The response body (an error context or a cluster map), if any.
        body: Bytes,
    },
    /// The stream ended.
    StreamEnded {
        /// The vbucket.
        vbucket: u16,
        /// The stream id, on a connection with stream ids.
        stream_id: Option<u16>,
        /// Why.
        reason: StreamEndReason,
        /// Its flow-control credit.
        credit: Credit,
    },
    /// A snapshot begins; the changes up to its end form a consistent state.
    SnapshotMarker(SnapshotMarker, Credit),
    /// A document was created or changed.
    Mutation(Mutation, Credit),
    /// A document was deleted.
    Deletion(Deletion, Credit),
    /// A document expired.
    Expiration(Expiration, Credit),
    /// A collections change (scope or collection created, dropped, ...).
    SystemEvent(SystemEvent, Credit),
    /// The stream moved to a seqno through changes not sent to this
    /// consumer.
    SeqnoAdvanced(SeqnoAdvanced, Credit),
    /// Start or end of an out-of-sequence-order snapshot.
    OsoSnapshot(OsoSnapshot, Credit),
    /// A pending synchronous write.
    Prepare(Prepare, Credit),
    /// A pending synchronous write became visible.
    Commit(Commit, Credit),
    /// A pending synchronous write was abandoned.
    Abort(Abort, Credit),
    /// The reply to
    /// [`Consumer::request_cluster_config`](super::Consumer::request_cluster_config):
    /// the bucket config JSON (see `cluster::ClusterConfig::parse`), or an
    /// error status with its body.
    ClusterConfig {
        /// The node's status.
        status: Status,
        /// The config JSON (or the error body).
        config: Bytes,
    },
    /// Consistent-snapshot mode only (see
    /// [`ConsumerConfig::consistent_snapshots`](super::ConsumerConfig::consistent_snapshots)):
    /// every change of the snapshot `start..=end` has been handed out, so
    /// the vbucket's view is now a state that existed on the producer, and
    /// [`Consumer::checkpoint`](super::Consumer::checkpoint) covers it once
    /// this event is polled.
    SnapshotComplete {
        /// The vbucket.
        vbucket: u16,
        /// The stream id, on a connection with stream ids.
        stream_id: Option<u16>,
        /// The snapshot's start seqno.
        start: u64,
        /// The seqno the view is consistent at: the snapshot's end (or the
        /// stream's end seqno, when that is lower).
        end: u64,
    },
    /// Consistent-snapshot mode only: holding the snapshot `start..=end`
    /// would exceed the connection's hold limit. The changes held so far
    /// follow at once and the rest of this snapshot passes through as it
    /// arrives (with its flow-control credit), so the vbucket's view is not
    /// consistent until the snapshot's [`Event::SnapshotComplete`]; the
    /// checkpoint stays before the snapshot until then.
    SnapshotTooLarge {
        /// The vbucket.
        vbucket: u16,
        /// The stream id, on a connection with stream ids.
        stream_id: Option<u16>,
        /// The snapshot's start seqno.
        start: u64,
        /// The snapshot's end seqno.
        end: u64,
        /// Bytes the snapshot held when it was let through.
        held_bytes: u64,
    },
    /// The reply to [`Consumer::request_failover_log`](super::Consumer::request_failover_log).
    FailoverLog {
        /// The vbucket.
        vbucket: u16,
        /// Its failover log.
        failover_log: FailoverLog,
    },
}

impl Event {
    /// The flow-control credit the event carries.
    pub fn credit(&self) -> Credit {
        match self {
            Event::SnapshotMarker(_, c)
            | Event::Mutation(_, c)
            | Event::Deletion(_, c)
            | Event::Expiration(_, c)
            | Event::SystemEvent(_, c)
            | Event::SeqnoAdvanced(_, c)
            | Event::OsoSnapshot(_, c)
            | Event::Prepare(_, c)
            | Event::Commit(_, c)
            | Event::Abort(_, c) => *c,
            Event::StreamEnded { credit, .. } => *credit,
            _ => Credit::NONE,
        }
    }

    /// The vbucket the event is about, if any.
    pub fn vbucket(&self) -> Option<u16> {
        Some(match self {
            Event::Ready(_) | Event::ClusterConfig { .. } => return None,
            Event::StreamOpened { vbucket, .. }
            | Event::Rollback { vbucket, .. }
            | Event::StreamFailed { vbucket, .. }
            | Event::StreamEnded { vbucket, .. }
            | Event::FailoverLog { vbucket, .. }
            | Event::SnapshotComplete { vbucket, .. }
            | Event::SnapshotTooLarge { vbucket, .. } => *vbucket,
            Event::SnapshotMarker(m, _) => m.vbucket,
            Event::Mutation(m, _) => m.vbucket,
            Event::Deletion(m, _) => m.vbucket,
            Event::Expiration(m, _) => m.vbucket,
            Event::SystemEvent(m, _) => m.vbucket,
            Event::SeqnoAdvanced(m, _) => m.vbucket,
            Event::OsoSnapshot(m, _) => m.vbucket,
            Event::Prepare(m, _) => m.vbucket,
            Event::Commit(m, _) => m.vbucket,
            Event::Abort(m, _) => m.vbucket,
        })
    }

    /// The stream id the event is about, on a connection with stream ids
    /// (sync-write messages never carry one: the producer refuses sync
    /// writes together with stream ids).
    pub fn stream_id(&self) -> Option<u16> {
        match self {
            Event::StreamOpened { stream_id, .. }
            | Event::Rollback { stream_id, .. }
            | Event::StreamFailed { stream_id, .. }
            | Event::StreamEnded { stream_id, .. }
            | Event::SnapshotComplete { stream_id, .. }
            | Event::SnapshotTooLarge { stream_id, .. } => *stream_id,
            Event::SnapshotMarker(m, _) => m.stream_id,
            Event::Mutation(m, _) => m.stream_id,
            Event::Deletion(m, _) => m.stream_id,
            Event::Expiration(m, _) => m.stream_id,
            Event::SystemEvent(m, _) => m.stream_id,
            Event::SeqnoAdvanced(m, _) => m.stream_id,
            Event::OsoSnapshot(m, _) => m.stream_id,
            _ => None,
        }
    }

    /// The stream the event is about ([`vbucket`](Self::vbucket) and
    /// [`stream_id`](Self::stream_id)); `None` for connection events and
    /// for [`Event::FailoverLog`], which answers for the vbucket.
    pub fn stream_key(&self) -> Option<StreamKey> {
        if matches!(self, Event::FailoverLog { .. }) {
            return None;
        }
        Some(StreamKey::of(self.vbucket()?, self.stream_id()))
    }

    /// The seqno the event carries, for seqno-bearing changes.
    pub fn seqno(&self) -> Option<u64> {
        match self {
            Event::Mutation(m, _) => Some(m.by_seqno),
            Event::Deletion(m, _) => Some(m.by_seqno),
            Event::Expiration(m, _) => Some(m.by_seqno),
            Event::SystemEvent(m, _) => Some(m.by_seqno),
            Event::SeqnoAdvanced(m, _) => Some(m.seqno),
            Event::Prepare(m, _) => Some(m.by_seqno),
            Event::Commit(m, _) => Some(m.commit_seqno),
            Event::Abort(m, _) => Some(m.abort_seqno),
            _ => None,
        }
    }
}
