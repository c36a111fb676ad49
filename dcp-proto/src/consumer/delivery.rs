//! Consistent-snapshot delivery: a vbucket's changes are held until the
//! whole snapshot has arrived, then handed out together.
//!
//! # What the application sees
//!
//! With [`ConsumerConfig::consistent_snapshots`](super::ConsumerConfig::consistent_snapshots)
//! set, every stream event between a snapshot marker and the snapshot's last
//! seqno (the marker, the changes, OSO brackets, seqno-advanced, and any
//! stream data event added later) is held per vbucket. When the snapshot is
//! complete its events are queued at once, in order and with no other
//! vbucket's events between them, followed by
//! [`Event::SnapshotComplete`]. A vbucket's view is therefore only ever
//! between a `SnapshotMarker` and its `SnapshotComplete` while the
//! application is applying a complete snapshot; after the
//! `SnapshotComplete` it equals the producer's state at the snapshot's end.
//!
//! A snapshot is complete when, outside an OSO bracket, the stream's last
//! seqno reaches the marker's end (or the stream's requested end seqno, if
//! lower), when the producer sends the next marker (it has moved on), or
//! when the stream ends with reason OK (it reached its end seqno).
//!
//! A snapshot never completes if its stream ends for any other reason
//! (closed, state changed, rollback, disconnected, ...), or the CLOSE_STREAM
//! reply ends it: its held part is discarded and never delivered, and the
//! stream's position moves back to before the snapshot, so a stream opened
//! again with [`StreamStart::Resume`](super::StreamStart::Resume) asks for
//! the whole snapshot again. A connection that dies simply never delivers
//! what it held; resume from [`Consumer::checkpoint`].
//!
//! # Memory and flow control
//!
//! A held event's flow-control credit is returned to the producer as soon
//! as it is held, and the event is handed out with [`Credit::NONE`]: a
//! snapshot larger than the flow-control window must be able to arrive
//! whole, so held bytes cannot be allowed to keep the producer's window
//! closed. The hold limit bounds memory instead: each held event counts its
//! wire size plus its value's size. When holding the next event would take
//! the connection's held bytes over the limit, the vbucket holding the
//! largest snapshot is let through (repeatedly, until the event fits):
//! [`Event::SnapshotTooLarge`] is queued, then what it held, and the rest of
//! that snapshot passes through as it arrives with its credit (so the window
//! bounds it again), until its `SnapshotComplete`. An application that must
//! never see partial state can treat `SnapshotTooLarge` as fatal for that
//! vbucket, or set a limit above its largest snapshot.
//!
//! # Checkpoints
//!
//! In this mode [`Consumer::checkpoint`] and [`Consumer::position`] cover
//! only delivered, complete snapshots: from the moment a `SnapshotMarker` is
//! polled until its `SnapshotComplete` is polled, a vbucket's position stays
//! where it was before the marker.

use std::time::Instant;

use super::event::{Credit, Event};
use super::stream::Vbucket;
use super::{Consumer, set_credit};
use crate::msg::Message;
use crate::session::{StreamCursor, StreamKey, StreamPosition};

/// Per-vbucket state of consistent delivery (boxed, created on first use,
/// so streams that never use it cost one pointer).
#[derive(Debug, Clone, Default)]
pub(crate) struct Consistent {
    /// Held events of the open snapshot.
    held: Vec<Event>,
    /// Their accounted size.
    held_bytes: u64,
    /// The open snapshot: (start, end).
    open: Option<(u64, u64)>,
    /// The open snapshot passes through (it exceeded the limit).
    passing: bool,
    /// The open snapshot is an OSO bracket (no marker): it completes at
    /// its OSO end.
    oso: bool,
    /// The received position before the latest marker: where a discarded
    /// snapshot resumes from.
    before_marker: Option<StreamPosition>,
    /// Delivered side: the position before the snapshot being handed out
    /// (set when its marker is polled, cleared by its `SnapshotComplete`).
    committed: Option<StreamPosition>,
}

/// Connection-wide counters of consistent delivery.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DeliveryTotals {
    /// Bytes held now, all vbuckets.
    pub(crate) held_bytes: u64,
    /// Snapshots completed.
    pub(crate) released: u64,
    /// Snapshots discarded (stream ended mid-snapshot).
    pub(crate) discarded: u64,
    /// Snapshots let through for exceeding the limit.
    pub(crate) too_large: u64,
}

/// The size a held event is accounted at: its wire size plus its value.
fn held_size(event: &Event) -> u64 {
    let value = match event {
        Event::Mutation(m, _) => m.value.len() + m.key.len(),
        Event::Deletion(m, _) => m.value.len() + m.key.len(),
        Event::Expiration(m, _) => m.key.len(),
        Event::Prepare(m, _) => m.value.len() + m.key.len(),
        _ => 0,
    };
    // A fixed overhead per event keeps tiny events from being free.
    u64::from(event.credit().bytes()) + value as u64 + 64
}

/// Called before a stream message is applied: remembers the position before
/// a marker.
pub(crate) fn before_receive(vb: &mut Vbucket, message: &Message, enabled: bool) {
    let opens = match message {
        Message::SnapshotMarker(_) => true,
        Message::OsoSnapshot(m) => m.is_start(),
        _ => false,
    };
    if enabled && opens {
        let state = vb.consistent.get_or_insert_with(Box::default);
        state.before_marker = Some(vb.received.position());
    }
}

/// Called before an event is applied to the delivered cursor.
pub(crate) fn before_deliver(vb: &mut Vbucket, event: &Event) {
    let Some(state) = vb.consistent.as_mut() else {
        return;
    };
    match event {
        Event::SnapshotMarker(..) if state.committed.is_none() => {
            state.committed = Some(vb.delivered.position());
        }
        Event::SnapshotComplete { .. } | Event::Rollback { .. } => state.committed = None,
        _ => {}
    }
}

/// The position a checkpoint may cover: in consistent mode, never inside a
/// snapshot being handed out.
pub(crate) fn checkpoint_position(vb: &Vbucket) -> StreamPosition {
    match vb.consistent.as_ref().and_then(|c| c.committed.as_ref()) {
        Some(committed) => committed.clone(),
        None => vb.delivered.position(),
    }
}

/// Held bytes and events of one vbucket.
pub(crate) fn held(vb: &Vbucket) -> (u64, u64) {
    vb.consistent
        .as_ref()
        .map_or((0, 0), |c| (c.held_bytes, c.held.len() as u64))
}

impl Consumer {
    /// Routes a received stream event: to the queue, or into its vbucket's
    /// hold in consistent mode.
    pub(super) fn route_stream_event(&mut self, key: StreamKey, mut event: Event, now: Instant) {
        let Some(limit) = self.config.consistent_snapshots else {
            self.events.push_back(event);
            return;
        };
        let mut oso_end = false;
        match &event {
            Event::SnapshotMarker(m, _) => {
                // The producer moved on: whatever was open is complete.
                self.complete_snapshot(key);
                self.open_snapshot(key, m.start, m.end, false);
            }
            Event::OsoSnapshot(m, _) if m.is_start() => {
                // OSO comes without a marker (behavior.md §6.3): the
                // bracket is the snapshot, unless it sits inside one.
                let inside = self
                    .vbuckets
                    .get(&key)
                    .and_then(|s| s.consistent.as_ref())
                    .is_some_and(|c| c.open.is_some() && !c.oso);
                if !inside {
                    let before = self
                        .vbuckets
                        .get(&key)
                        .map_or(0, |s| s.received.last_seqno());
                    self.open_snapshot(key, before.saturating_add(1), u64::MAX, true);
                }
            }
            Event::OsoSnapshot(m, _) => oso_end = m.is_end(),
            _ => {}
        }
        let Some(state) = self.vbuckets.get(&key) else {
            self.events.push_back(event);
            return;
        };
        let (open, passing) = state
            .consistent
            .as_ref()
            .map_or((None, false), |c| (c.open, c.passing));
        if open.is_none() || passing {
            // Outside any snapshot, or let through: as in normal mode.
            self.events.push_back(event);
            self.complete_if_reached(key, oso_end);
            return;
        }
        let size = held_size(&event);
        while self.delivery.held_bytes.saturating_add(size) > limit {
            if !self.let_largest_through(key, size) {
                break;
            }
            if self.passing(key) {
                // This vbucket was the one let through.
                self.events.push_back(event);
                self.complete_if_reached(key, oso_end);
                return;
            }
        }
        // Hold it: its credit goes back to the producer now.
        let credit = event.credit();
        if credit.bytes() > 0 {
            self.flow.release(credit.bytes(), now);
            set_credit(&mut event, Credit::NONE);
        }
        if let Some(c) = self
            .vbuckets
            .get_mut(&key)
            .and_then(|s| s.consistent.as_mut())
        {
            c.held.push(event);
            c.held_bytes += size;
            self.delivery.held_bytes += size;
        }
        self.complete_if_reached(key, oso_end);
    }

    fn open_snapshot(&mut self, key: StreamKey, start: u64, end: u64, oso: bool) {
        if let Some(state) = self.vbuckets.get_mut(&key) {
            let c = state.consistent.get_or_insert_with(Box::default);
            c.open = Some((start, end));
            c.passing = false;
            c.oso = oso;
        }
    }

    fn passing(&self, key: StreamKey) -> bool {
        self.vbuckets
            .get(&key)
            .and_then(|s| s.consistent.as_ref())
            .is_some_and(|c| c.passing)
    }

    /// Lets the largest held snapshot through (counting `extra` more bytes
    /// for `current`); false if nothing is held anywhere.
    fn let_largest_through(&mut self, current: StreamKey, extra: u64) -> bool {
        let largest = self
            .vbuckets
            .iter()
            .filter_map(|(key, s)| {
                let c = s.consistent.as_ref()?;
                if c.open.is_none() || c.passing {
                    return None;
                }
                let bytes = c.held_bytes + if *key == current { extra } else { 0 };
                Some((bytes, *key))
            })
            .max();
        let Some((_, key)) = largest else {
            return false;
        };
        let Some(c) = self
            .vbuckets
            .get_mut(&key)
            .and_then(|s| s.consistent.as_mut())
        else {
            return false;
        };
        let (start, end) = c.open.unwrap_or_default();
        c.passing = true;
        let held_bytes = std::mem::take(&mut c.held_bytes);
        self.delivery.held_bytes = self.delivery.held_bytes.saturating_sub(held_bytes);
        self.delivery.too_large += 1;
        tracing::warn!(
            vb = key.vbucket(),
            sid = key.stream_id(),
            start,
            end,
            held_bytes,
            "consistent delivery: snapshot exceeds the hold limit, passing it through"
        );
        self.events.push_back(Event::SnapshotTooLarge {
            vbucket: key.vbucket(),
            stream_id: key.stream_id(),
            start,
            end,
            held_bytes,
        });
        self.events.extend(c.held.drain(..));
        c.held.shrink_to(0);
        true
    }

    /// Completes the open snapshot of `vbucket` if its last seqno arrived
    /// (or, for an OSO bracket, at its end).
    fn complete_if_reached(&mut self, key: StreamKey, oso_end: bool) {
        let Some(state) = self.vbuckets.get(&key) else {
            return;
        };
        let Some(c) = state.consistent.as_ref() else {
            return;
        };
        let Some((_, end)) = c.open else {
            return;
        };
        let stream_end = state.stream.as_ref().map_or(u64::MAX, |s| s.end_seqno);
        let reached = if c.oso {
            oso_end
        } else {
            !state.received.in_oso() && state.received.last_seqno() >= end.min(stream_end)
        };
        if reached {
            self.complete_snapshot(key);
        }
    }

    /// Hands out the open snapshot of `vbucket` (if any) as complete.
    fn complete_snapshot(&mut self, key: StreamKey) {
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return;
        };
        let stream_end = state.stream.as_ref().map_or(u64::MAX, |s| s.end_seqno);
        let last = state.received.last_seqno();
        let Some(c) = state.consistent.as_mut() else {
            return;
        };
        let Some((start, end)) = c.open.take() else {
            return;
        };
        // An OSO bracket ends at the largest seqno it covered.
        let end = if std::mem::take(&mut c.oso) {
            last
        } else {
            end
        };
        c.passing = false;
        self.delivery.held_bytes = self.delivery.held_bytes.saturating_sub(c.held_bytes);
        c.held_bytes = 0;
        self.delivery.released += 1;
        tracing::trace!(
            vb = key.vbucket(),
            start,
            end,
            events = c.held.len(),
            "consistent delivery: snapshot complete"
        );
        self.events.extend(c.held.drain(..));
        if c.held.capacity() > 64 {
            c.held.shrink_to(0);
        }
        self.events.push_back(Event::SnapshotComplete {
            vbucket: key.vbucket(),
            stream_id: key.stream_id(),
            start,
            end: end.min(stream_end),
        });
    }

    /// The stream of `vbucket` ended: with `reached_end`, the open snapshot
    /// is complete; otherwise its held part is discarded and the stream's
    /// position moves back to before it.
    pub(super) fn end_snapshot(&mut self, key: StreamKey, reached_end: bool) {
        if reached_end {
            self.complete_snapshot(key);
            return;
        }
        let Some(state) = self.vbuckets.get_mut(&key) else {
            return;
        };
        let Some(c) = state.consistent.as_mut() else {
            return;
        };
        if c.open.take().is_none() {
            return;
        }
        c.oso = false;
        if std::mem::take(&mut c.passing) {
            // Already handed out in part: the stream resumes mid-snapshot
            // and the checkpoint still stands before the snapshot.
            return;
        }
        self.delivery.held_bytes = self.delivery.held_bytes.saturating_sub(c.held_bytes);
        self.delivery.discarded += 1;
        tracing::debug!(
            vb = key.vbucket(),
            held_events = c.held.len(),
            held_bytes = c.held_bytes,
            "consistent delivery: stream ended mid-snapshot, held part discarded"
        );
        c.held_bytes = 0;
        c.held = Vec::new();
        if let Some(before) = c.before_marker.take() {
            state.received = StreamCursor::new(before);
        }
    }
}
