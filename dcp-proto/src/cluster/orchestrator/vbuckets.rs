//! Per-vbucket state: where its stream is, and the position the application
//! has reached, tracked from the events it was handed.

use std::time::Instant;

use super::settings::InitialStart;
use crate::cluster::NodeAddress;
use crate::consumer::{Event, StreamStart};
use crate::msg::SystemEvent;
use crate::session::{StreamCursor, StreamPosition};

/// Where a vbucket's stream stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VbucketStatus {
    /// No stream: waiting for its node, a config, or a retry delay.
    Waiting,
    /// Stream requested on `node`.
    Opening {
        /// The node.
        node: NodeAddress,
    },
    /// Streaming from `node`.
    Streaming {
        /// The node.
        node: NodeAddress,
    },
    /// Reached its end seqno.
    Done,
    /// Given up (see [`Action::Fail`](super::Action::Fail)).
    Failed,
}

/// The stream part of a vbucket's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Stream {
    Idle,
    Opening(NodeAddress),
    Open(NodeAddress),
    Done,
    Failed,
}

/// One selected vbucket.
#[derive(Debug, Clone)]
pub(crate) struct VbSlot {
    /// The position as of the events handed to the application.
    cursor: StreamCursor,
    /// Whether `cursor` is a resumable position (false for a stream started
    /// "now" until its first change or reported position).
    known: bool,
    pub(crate) end: Option<u64>,
    pub(crate) stream: Stream,
    /// Retries in a row (reset when a stream opens).
    pub(crate) attempts: u32,
    /// No stream request before this instant.
    pub(crate) not_before: Option<Instant>,
}

impl VbSlot {
    pub(crate) fn new(
        position: Option<StreamPosition>,
        start: InitialStart,
        end: Option<u64>,
    ) -> Self {
        let known = position.is_some() || start == InitialStart::Beginning;
        Self {
            cursor: StreamCursor::new(position.unwrap_or_default()),
            known,
            end,
            stream: Stream::Idle,
            attempts: 0,
            not_before: None,
        }
    }

    pub(crate) fn status(&self) -> VbucketStatus {
        match &self.stream {
            Stream::Idle => VbucketStatus::Waiting,
            Stream::Opening(node) => VbucketStatus::Opening { node: node.clone() },
            Stream::Open(node) => VbucketStatus::Streaming { node: node.clone() },
            Stream::Done => VbucketStatus::Done,
            Stream::Failed => VbucketStatus::Failed,
        }
    }

    /// The node of the current stream, if one is requested or open.
    pub(crate) fn node(&self) -> Option<&NodeAddress> {
        match &self.stream {
            Stream::Opening(node) | Stream::Open(node) => Some(node),
            _ => None,
        }
    }

    /// Whether the vbucket still needs streaming.
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self.stream, Stream::Done | Stream::Failed)
    }

    /// The resumable position, if known.
    pub(crate) fn position(&self) -> Option<StreamPosition> {
        self.known.then(|| self.cursor.position())
    }

    /// Whether the position already reached the end seqno.
    pub(crate) fn at_end(&self) -> bool {
        self.known && self.end.is_some_and(|end| self.cursor.last_seqno() >= end)
    }

    /// Where a new stream starts; the tracked position restarts from there
    /// (a new stream re-sends its first marker).
    pub(crate) fn begin(&mut self) -> StreamStart {
        if !self.known {
            self.cursor = StreamCursor::new(StreamPosition::default());
            return StreamStart::Now;
        }
        let position = self.cursor.position();
        self.cursor = StreamCursor::new(position.clone());
        if position.is_fresh() {
            StreamStart::Beginning
        } else {
            StreamStart::Position(position)
        }
    }

    /// Records a stream's accepted request.
    pub(crate) fn opened(&mut self, event_log: &crate::msg::FailoverLog) {
        self.cursor.set_failover_log(event_log.clone());
    }

    /// Obeys a rollback the application was told about.
    pub(crate) fn rollback(&mut self, seqno: u64) {
        self.cursor.rollback(seqno);
        if seqno == 0 && !self.known {
            // A "now" stream rolled back to nothing starts over from 0.
            self.known = true;
        }
    }

    /// Adopts a position reported by the node's consumer, keeping the
    /// snapshot the stream is in.
    pub(crate) fn adopt(&mut self, position: StreamPosition) {
        let marker = self.cursor.marker();
        let mut cursor = StreamCursor::new(position);
        if let Some((start, end)) = marker {
            let _ = cursor.on_marker(start, end, None);
        }
        self.cursor = cursor;
        self.known = true;
    }

    /// Moves the position past a data event handed to the application.
    /// The consumer checked the producer's order already, so a rule broken
    /// here (an adapter feeding events twice) leaves the position as is.
    pub(crate) fn track(&mut self, event: &Event) {
        let cursor = &mut self.cursor;
        let moved = match event {
            Event::SnapshotMarker(m, _) => {
                let _ = cursor.on_marker(m.start, m.end, m.format.purge_seqno());
                false
            }
            Event::SystemEvent(m, _) => {
                if let Some(uid) = manifest_uid(m) {
                    cursor.on_manifest_uid(uid);
                }
                cursor.on_seqno(m.by_seqno).is_ok()
            }
            Event::SeqnoAdvanced(m, _) => {
                let seqno = self.end.map_or(m.seqno, |end| m.seqno.min(end));
                cursor.on_seqno_advanced(seqno).is_ok()
            }
            Event::OsoSnapshot(m, _) => {
                if m.is_start() {
                    let _ = cursor.on_oso_start();
                }
                m.is_end() && cursor.on_oso_end().is_ok()
            }
            other => match other.seqno() {
                Some(seqno) => cursor.on_seqno(seqno).is_ok(),
                None => false,
            },
        };
        if moved {
            self.known = true;
        }
    }
}

fn manifest_uid(event: &SystemEvent) -> Option<u64> {
    event.data().ok().map(|data| data.manifest_uid())
}
