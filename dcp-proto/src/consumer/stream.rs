//! Per-vbucket stream state and the rules applied to each stream message.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::event::{Credit, Event};
use super::outbox::Outbox;
use super::stats::{StreamCounters, StreamStats, StreamStatus};
use crate::codec::Opcode;
use crate::msg::{Message, SnapshotFlags, StatusResponse, SystemEventData};
use crate::session::{StreamCursor, StreamPosition, Violation};

/// Where a new stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamStart {
    /// From seqno 0: every change the vbucket holds.
    Beginning,
    /// From the vbucket's current high seqno: only changes from now on.
    Now,
    /// From a saved position (e.g. from a checkpoint).
    Position(StreamPosition),
    /// From where this connection's previous stream of the vbucket stopped.
    Resume,
}

/// The lifecycle of one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamState {
    /// Waiting for the handshake.
    Queued,
    /// Looking up the failover log and high seqno to start from now.
    ResolvingNow {
        /// Boxed: keeps every idle stream's state small.
        failover_log: Option<Box<crate::msg::FailoverLog>>,
        high_seqno: Option<u64>,
    },
    /// STREAM_REQ in flight.
    Requested { opaque: u32 },
    /// Retrying after a temporary failure.
    RetryAt(Instant),
    /// Waiting for the application to confirm a rollback.
    AwaitingRollbackConfirm,
    /// Streaming.
    Open { opaque: u32 },
    /// CLOSE_STREAM sent.
    Closing { opaque: u32 },
}

/// A stream of one vbucket.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pub(crate) end_seqno: u64,
    pub(crate) state: StreamState,
    pub(crate) rollbacks_in_a_row: u32,
    pub(crate) retry_delay: Option<Duration>,
    pub(crate) close_when_open: bool,
    /// A marker with the Ack flag: reply once its end seqno is received.
    ack_marker: Option<(u64, u32)>,
    /// The collections filter every request of this stream carries.
    pub(crate) filter: Option<super::collections::StreamFilter>,
}

impl Stream {
    pub(crate) fn new(end_seqno: u64, state: StreamState) -> Self {
        Self {
            end_seqno,
            state,
            rollbacks_in_a_row: 0,
            retry_delay: None,
            close_when_open: false,
            ack_marker: None,
            filter: None,
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        matches!(self.state, StreamState::Open { .. })
    }

    /// Doubles the retry delay, from `first` up to `max`.
    pub(crate) fn next_retry_delay(&mut self, first: Duration, max: Duration) -> Duration {
        let delay = self.retry_delay.map_or(first, |d| (d * 2).min(max));
        self.retry_delay = Some(delay);
        delay
    }
}

/// Everything the consumer keeps per vbucket: the stream (if any) and the
/// position as received and as delivered.
#[derive(Debug, Clone)]
pub(crate) struct Vbucket {
    pub(crate) stream: Option<Stream>,
    /// Moved as frames arrive; validates the producer.
    pub(crate) received: StreamCursor,
    /// Moved as events are polled; what a checkpoint holds.
    pub(crate) delivered: StreamCursor,
    pub(crate) stats: StreamCounters,
    /// Consistent-snapshot delivery state, once used.
    pub(crate) consistent: Option<Box<super::delivery::Consistent>>,
}

impl Vbucket {
    pub(crate) fn new() -> Self {
        Self {
            stream: None,
            received: StreamCursor::new(StreamPosition::default()),
            delivered: StreamCursor::new(StreamPosition::default()),
            stats: StreamCounters::default(),
            consistent: None,
        }
    }

    /// Starts over from `position`.
    pub(crate) fn reset(&mut self, position: StreamPosition) {
        self.received = StreamCursor::new(position.clone());
        self.delivered = StreamCursor::new(position);
        self.consistent = None;
    }

    pub(crate) fn stats(&self) -> StreamStats {
        let mut stats = self.stats.snapshot();
        (stats.status, stats.opaque) = match self.stream.as_ref().map(|s| &s.state) {
            None => (StreamStatus::None, None),
            Some(StreamState::Queued) => (StreamStatus::Queued, None),
            Some(StreamState::ResolvingNow { .. }) => (StreamStatus::Resolving, None),
            Some(StreamState::Requested { opaque }) => (StreamStatus::Requested, Some(*opaque)),
            Some(StreamState::RetryAt(_)) => (StreamStatus::Retrying, None),
            Some(StreamState::AwaitingRollbackConfirm) => {
                (StreamStatus::AwaitingRollbackConfirm, None)
            }
            Some(StreamState::Open { opaque }) => (StreamStatus::Open, Some(*opaque)),
            Some(StreamState::Closing { opaque }) => (StreamStatus::Closing, Some(*opaque)),
        };
        stats.vb_uuid = self
            .received
            .position()
            .failover_log
            .entries
            .first()
            .map(|e| e.vbucket_uuid);
        (stats.held_bytes, stats.held_events) = super::delivery::held(self);
        stats.last_seqno = self.received.last_seqno();
        stats.snapshot = self.received.marker();
        let horizon = match (stats.high_seqno, stats.snapshot) {
            (Some(high), Some((_, end))) => Some(high.max(end)),
            (high, snapshot) => high.or(snapshot.map(|(_, end)| end)),
        };
        stats.lag = horizon.map(|h| h.saturating_sub(stats.last_seqno));
        stats
    }
}

/// Why an opaque is no longer a stream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retired {
    /// Closed without STREAM_END: stragglers are expected and ignored.
    Closed,
    /// Ended by STREAM_END: nothing may follow.
    Ended,
}

/// Recently retired stream opaques (bounded).
#[derive(Debug, Clone, Default)]
pub(crate) struct RetiredOpaques {
    map: HashMap<u32, Retired>,
    order: VecDeque<u32>,
}

impl RetiredOpaques {
    const CAPACITY: usize = 4096;

    pub(crate) fn retire(&mut self, opaque: u32, how: Retired) {
        if self.map.insert(opaque, how).is_none() {
            self.order.push_back(opaque);
        }
        while self.order.len() > Self::CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.map.remove(&old);
            }
        }
    }

    pub(crate) fn get(&self, opaque: u32) -> Option<Retired> {
        self.map.get(&opaque).copied()
    }
}

/// What a received stream message led to.
pub(crate) enum Received {
    /// An event for the application.
    Event(Event),
    /// Nothing for the application (its credit is released at once).
    Dropped,
    /// The stream ended.
    Ended(Event),
    /// A message a consumer stream never carries.
    Unexpected,
}

/// Applies a received stream message to its vbucket.
pub(crate) fn receive(
    vb: &mut Vbucket,
    message: Message,
    credit: Credit,
    out: &mut Outbox,
) -> Result<Received, Violation> {
    let Some(stream) = vb.stream.as_mut() else {
        return Ok(Received::Dropped);
    };
    vb.stats.bytes += u64::from(credit.0);
    let cursor = &mut vb.received;
    let end_seqno = stream.end_seqno;
    // Items past the requested end may arrive (memory batches are sent
    // whole) before STREAM_END: drop them.
    let beyond_end = |seqno: u64| seqno > end_seqno;
    let event = match message {
        Message::SnapshotMarker(m) => {
            cursor.on_marker(m.start, m.end, m.format.purge_seqno())?;
            vb.stats.snapshot_flags = Some(m.flags);
            vb.stats.high_seqno = vb.stats.high_seqno.max(Some(m.end));
            if m.flags.contains(SnapshotFlags::ACK) {
                stream.ack_marker = Some((m.end, m.opaque));
            }
            Event::SnapshotMarker(m, credit)
        }
        Message::Mutation(m) => {
            if beyond_end(m.by_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.by_seqno)?;
            vb.stats.items += 1;
            Event::Mutation(m, credit)
        }
        Message::Deletion(m) => {
            if beyond_end(m.by_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.by_seqno)?;
            vb.stats.items += 1;
            Event::Deletion(m, credit)
        }
        Message::Expiration(m) => {
            if beyond_end(m.by_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.by_seqno)?;
            vb.stats.items += 1;
            Event::Expiration(m, credit)
        }
        Message::Prepare(m) => {
            if beyond_end(m.by_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.by_seqno)?;
            vb.stats.items += 1;
            Event::Prepare(m, credit)
        }
        Message::Commit(m) => {
            if beyond_end(m.commit_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.commit_seqno)?;
            vb.stats.items += 1;
            Event::Commit(m, credit)
        }
        Message::Abort(m) => {
            if beyond_end(m.abort_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.abort_seqno)?;
            vb.stats.items += 1;
            Event::Abort(m, credit)
        }
        Message::SystemEvent(m) => {
            if beyond_end(m.by_seqno) {
                return Ok(Received::Dropped);
            }
            cursor.on_seqno(m.by_seqno)?;
            if let Some(uid) = manifest_uid(&m) {
                cursor.on_manifest_uid(uid);
            }
            vb.stats.items += 1;
            Event::SystemEvent(m, credit)
        }
        Message::SeqnoAdvanced(m) => {
            cursor.on_seqno_advanced(m.seqno.min(end_seqno))?;
            Event::SeqnoAdvanced(m, credit)
        }
        Message::OsoSnapshot(m) => {
            if m.is_start() {
                cursor.on_oso_start()?;
            }
            if m.is_end() {
                cursor.on_oso_end()?;
            }
            Event::OsoSnapshot(m, credit)
        }
        Message::StreamEnd(m) => {
            vb.stats.ended(m.reason);
            return Ok(Received::Ended(Event::StreamEnded {
                vbucket: m.vbucket,
                stream_id: m.stream_id,
                reason: m.reason,
                credit,
            }));
        }
        Message::SetVbucketState(m) => {
            // Takeover only: the producer waits for the reply.
            let reply = StatusResponse::success(Opcode::DcpSetVbucketState, m.opaque);
            let _ = out.queue(&Message::StatusResponse(reply));
            return Ok(Received::Dropped);
        }
        _ => return Ok(Received::Unexpected),
    };
    if let Some((end, opaque)) = stream.ack_marker
        && cursor.last_seqno() >= end
    {
        stream.ack_marker = None;
        let reply = StatusResponse::success(Opcode::DcpSnapshotMarker, opaque);
        let _ = out.queue(&Message::StatusResponse(reply));
    }
    Ok(Received::Event(event))
}

/// The manifest uid an event carries (any version, modify included).
fn manifest_uid(event: &crate::msg::SystemEvent) -> Option<u64> {
    event
        .data()
        .ok()
        .as_ref()
        .map(SystemEventData::manifest_uid)
}

/// Moves the delivered position as an event is handed out. The event passed
/// the same rules when it was received, so errors cannot occur here.
pub(crate) fn deliver(cursor: &mut StreamCursor, event: &Event) {
    let _ = match event {
        Event::StreamOpened { failover_log, .. } => {
            cursor.set_failover_log(failover_log.clone());
            Ok(())
        }
        Event::Rollback { seqno, .. } => {
            cursor.rollback(*seqno);
            Ok(())
        }
        Event::SnapshotMarker(m, _) => cursor.on_marker(m.start, m.end, m.format.purge_seqno()),
        Event::SystemEvent(m, _) => {
            if let Some(uid) = manifest_uid(m) {
                cursor.on_manifest_uid(uid);
            }
            cursor.on_seqno(m.by_seqno)
        }
        Event::SeqnoAdvanced(m, _) => cursor.on_seqno_advanced(m.seqno),
        Event::OsoSnapshot(m, _) => {
            let mut result = Ok(());
            if m.is_start() {
                result = cursor.on_oso_start();
            }
            if m.is_end() {
                result = result.and(cursor.on_oso_end());
            }
            result
        }
        other => match other.seqno() {
            Some(seqno) => cursor.on_seqno(seqno),
            None => Ok(()),
        },
    };
}
