//! One active stream: where it is in the vbucket, and the next messages it
//! sends. Messages are produced on demand: a disk backfill reads the
//! vbucket as of its snapshot end in bounded steps, a memory snapshot takes
//! one checkpoint's items after the stream's position. Memory stays bounded
//! by one backfill step or one checkpoint per stream.

use std::collections::VecDeque;
use std::sync::Arc;

use super::collections::{StreamFilter, is_modify_event};
use super::control::OsoMode;
use super::oso::{self, OsoEdge, OsoQuery};
use super::sync_write::{self, MarkerSeqnos, SyncItem};
use crate::bucket::{Document, VBucket};
use crate::msg::{SnapshotFlags, StreamEndReason, StreamRequestFlags};

/// A stream's key in its connection: the vbucket and the stream id (when
/// the connection enabled stream ids).
pub(crate) type StreamKey = (u16, Option<u16>);

/// What the stream request settled on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamParams {
    pub(crate) vbucket: u16,
    pub(crate) opaque: u32,
    pub(crate) stream_id: Option<u16>,
    pub(crate) flags: StreamRequestFlags,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) vbucket_uuid: u64,
    pub(crate) snap_start: u64,
    pub(crate) snap_end: u64,
    /// The client's `purge_seqno` (0 if absent).
    pub(crate) remote_purge: u64,
    /// Which collections and system events the stream sends.
    pub(crate) filter: StreamFilter,
}

/// A message the stream will send.
#[derive(Debug, Clone)]
pub(crate) enum Outgoing {
    /// A snapshot marker.
    Marker {
        start: u64,
        end: u64,
        flags: SnapshotFlags,
        /// The vbucket's purge seqno when the marker was made (v2.2).
        purge_seqno: u64,
        /// Max visible and high completed seqnos (v2.0, v2.2).
        seqnos: MarkerSeqnos,
    },
    /// A sync write: PREPARE, COMMIT or ABORT.
    Sync(SyncItem),
    /// An OSO_SNAPSHOT edge.
    Oso(OsoEdge),
    /// A document version.
    Item {
        doc: Arc<Document>,
        /// Read by a backfill (deletions then carry their delete time).
        from_disk: bool,
    },
    /// The stream moved to this seqno through items it does not send.
    SeqnoAdvanced(u64),
    /// The last message.
    End(StreamEndReason),
}

/// Where the stream reads from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Reading disk as of `end`, after `cursor`.
    Backfill {
        end: u64,
        cursor: u64,
        marker_sent: bool,
        last_item: u64,
    },
    /// Reading memory checkpoints after `last_read`.
    Memory,
}

/// Where a backfill step stopped.
struct Scan {
    cursor: u64,
}

/// What a fill needs besides the vbucket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FillContext {
    pub(crate) collections: bool,
    pub(crate) backfill_batch: usize,
    pub(crate) skip_deletes_in_initial_backfill: bool,
    /// The connection enabled sync writes (prepares, commits, aborts).
    pub(crate) sync_writes: bool,
    /// The connection's `enable_out_of_order_snapshots`.
    pub(crate) oso: Option<OsoMode>,
    /// The node allows OSO for unfiltered streams.
    pub(crate) oso_unfiltered: bool,
    /// The connection enabled `flatbuffers_system_events`: it receives
    /// ModifyCollection events (others skip them).
    pub(crate) flatbuffers_events: bool,
}

/// One stream of a producer connection.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pub(crate) params: StreamParams,
    /// The highest seqno taken from the vbucket (queued or sent).
    pub(crate) last_read: u64,
    /// The highest seqno sent in a data message or SEQNO_ADVANCED.
    pub(crate) last_sent_seqno: u64,
    /// The last snapshot marker sent.
    pub(crate) last_sent_snapshot: Option<(u64, u64)>,
    first_marker_queued: bool,
    phase: Phase,
    ready: VecDeque<Outgoing>,
    /// A STREAM_END is queued: nothing more is read.
    ending: bool,
    pub(crate) items_sent: u64,
    pub(crate) backfill_items: u64,
    pub(crate) memory_items: u64,
    /// Inside an OSO snapshot (seqnos out of order).
    in_oso: bool,
    /// The latest SEQNO_ACKNOWLEDGED from the client (its high prepared
    /// seqno).
    pub(crate) seqno_acknowledged: u64,
}

impl Stream {
    /// A stream accepted at `params.start`; one with `start >= end` ends at
    /// once with OK.
    pub(crate) fn new(params: StreamParams) -> Self {
        let mut stream = Self {
            last_read: params.start,
            last_sent_seqno: params.start,
            last_sent_snapshot: None,
            first_marker_queued: false,
            phase: Phase::Memory,
            ready: VecDeque::new(),
            ending: false,
            items_sent: 0,
            backfill_items: 0,
            memory_items: 0,
            in_oso: false,
            seqno_acknowledged: 0,
            params,
        };
        if stream.params.start >= stream.params.end {
            stream.ready.push_back(Outgoing::End(StreamEndReason::Ok));
            stream.ending = true;
        }
        stream
    }

    /// Whether a STREAM_END is queued (a CLOSE_STREAM then finds no live
    /// stream).
    pub(crate) fn is_ending(&self) -> bool {
        self.ending
    }

    /// The state name the `dcp` stats use.
    pub(crate) fn state_name(&self) -> &'static str {
        match (self.ending, self.phase) {
            (true, _) => "dead",
            (false, Phase::Backfill { .. }) => "backfilling",
            (false, Phase::Memory) => "in-memory",
        }
    }

    /// Messages queued and not sent.
    pub(crate) fn ready_len(&self) -> usize {
        self.ready.len()
    }

    /// Takes the next message, if one is queued.
    pub(crate) fn pop(&mut self) -> Option<Outgoing> {
        let next = self.ready.pop_front()?;
        match &next {
            Outgoing::Item { doc, from_disk } if self.in_oso => {
                // Key order: seqnos above the start, in any order.
                debug_assert!(doc.seqno > self.params.start);
                self.items_sent += 1;
                if *from_disk {
                    self.backfill_items += 1;
                }
            }
            Outgoing::Item { doc, from_disk } => {
                // Seqnos strictly increase and lie in the latest marker.
                debug_assert!(doc.seqno > self.last_sent_seqno);
                debug_assert!(
                    self.last_sent_snapshot
                        .is_some_and(|(s, e)| s <= doc.seqno && doc.seqno <= e)
                );
                self.last_sent_seqno = doc.seqno;
                self.items_sent += 1;
                if *from_disk {
                    self.backfill_items += 1;
                } else {
                    self.memory_items += 1;
                }
            }
            Outgoing::Sync(item) => {
                let seqno = item.seqno();
                debug_assert!(seqno > self.last_sent_seqno);
                debug_assert!(
                    self.last_sent_snapshot
                        .is_some_and(|(s, e)| s <= seqno && seqno <= e)
                );
                self.last_sent_seqno = seqno;
                self.items_sent += 1;
                self.memory_items += 1;
            }
            Outgoing::Oso(OsoEdge::Start) => self.in_oso = true,
            Outgoing::Oso(OsoEdge::End { end }) => {
                self.in_oso = false;
                self.last_sent_seqno = self.last_sent_seqno.max(*end);
                self.last_sent_snapshot = Some((*end, *end));
            }
            Outgoing::SeqnoAdvanced(seqno) if self.in_oso => {
                debug_assert!(*seqno > self.params.start);
            }
            Outgoing::SeqnoAdvanced(seqno) => self.last_sent_seqno = *seqno,
            Outgoing::Marker { start, end, .. } => {
                // start <= end, and each later marker starts after the
                // previous one's end.
                debug_assert!(start <= end);
                debug_assert!(
                    self.last_sent_snapshot
                        .is_none_or(|(_, prev)| *start > prev)
                );
                self.last_sent_snapshot = Some((*start, *end));
            }
            Outgoing::End(_) => {}
        }
        Some(next)
    }

    /// Ends the stream with `reason` after the messages already queued from
    /// memory (a backfill's buffer is discarded).
    pub(crate) fn end(&mut self, reason: StreamEndReason, vb: Option<&mut VBucket>) {
        if self.ending {
            return;
        }
        // An OSO backfill is a backfill buffer too (queued whole).
        let oso_buffer = self.in_oso || self.ready.iter().any(|m| matches!(m, Outgoing::Oso(_)));
        if matches!(self.phase, Phase::Backfill { .. }) || oso_buffer {
            self.ready.clear();
        }
        self.release(vb);
        self.ready.push_back(Outgoing::End(reason));
        self.ending = true;
    }

    /// Releases what the stream holds in the vbucket (a backfill's pin).
    pub(crate) fn release(&mut self, vb: Option<&mut VBucket>) {
        if let Phase::Backfill { end, .. } = self.phase {
            if let Some(vb) = vb {
                vb.unpin(end);
            }
            self.phase = Phase::Memory;
        }
    }

    fn queue_marker(
        &mut self,
        natural_start: u64,
        end: u64,
        flags: SnapshotFlags,
        purge: u64,
        seqnos: MarkerSeqnos,
    ) {
        let start = if self.first_marker_queued {
            natural_start
        } else {
            self.first_marker_queued = true;
            natural_start.min(self.params.snap_start)
        };
        self.ready.push_back(Outgoing::Marker {
            start,
            end,
            flags,
            purge_seqno: purge,
            seqnos,
        });
    }

    /// Queues a whole OSO backfill read up to `end`; memory snapshots
    /// continue above it.
    fn queue_oso(&mut self, messages: Vec<Outgoing>, end: u64) {
        self.ready.extend(messages);
        self.first_marker_queued = true;
        self.last_read = end;
    }

    /// Whether a backfill starting after `from` would miss purged
    /// tombstones the client has not been told about.
    fn purge_overtook(&self, from: u64, vb: &VBucket) -> bool {
        let purge = vb.purge_seqno();
        from != 0
            && from < purge
            && self.params.remote_purge != purge
            && !self.params.filter.purge_exempt(from, vb)
            && !self
                .params
                .flags
                .contains(StreamRequestFlags::IGNORE_PURGED_TOMBSTONES)
    }

    /// A memory batch the filter emptied: skipped, except that a first
    /// snapshot resuming inside the client's snapshot still gets a marker
    /// and a SEQNO_ADVANCED to its end, so the client completes it (the
    /// server's rule on collections connections).
    fn filtered_batch(&mut self, batch_end: u64, ctx: &FillContext) {
        let end = self.params.snap_end.min(batch_end);
        if ctx.collections && !self.first_marker_queued && self.last_read < end {
            let seqnos = MarkerSeqnos {
                max_visible: end,
                high_completed: 0,
                high_prepared: 0,
            };
            self.queue_marker(
                self.params.snap_start,
                end,
                SnapshotFlags::MEMORY,
                0,
                seqnos,
            );
            self.ready.push_back(Outgoing::SeqnoAdvanced(end));
        }
        self.last_read = batch_end;
    }

    /// Ends the stream with `reason` after what is queued (a backfill's
    /// queued items included), releasing its backfill.
    fn end_after_queued(&mut self, reason: StreamEndReason, vb: &mut VBucket) {
        self.release(Some(vb));
        self.ready.push_back(Outgoing::End(reason));
        self.ending = true;
    }

    /// Queues the next messages if none are queued: a memory snapshot, a
    /// backfill step, or the STREAM_END once the end seqno is reached.
    pub(crate) fn fill(&mut self, vb: &mut VBucket, ctx: &FillContext) {
        while self.ready.is_empty() && !self.ending {
            match self.phase {
                Phase::Memory => {
                    if self.last_read >= self.params.end {
                        self.end(StreamEndReason::Ok, Some(vb));
                        return;
                    }
                    let low = vb.memory_low_seqno();
                    if self.last_read.saturating_add(1) < low {
                        if self.purge_overtook(self.last_read, vb) {
                            // Internal reason Rollback, sent as StateChanged.
                            self.end(StreamEndReason::StateChanged, Some(vb));
                            return;
                        }
                        let end = (low - 1).min(self.params.end);
                        let query = OsoQuery {
                            mode: ctx.oso,
                            start: self.params.start,
                            last_read: self.last_read,
                            filtered: self.params.filter.is_filtered(),
                            sync_writes: ctx.sync_writes,
                            unfiltered_allowed: ctx.oso_unfiltered,
                        };
                        if let Some(mode) = ctx.oso
                            && oso::eligible(&query)
                        {
                            let skip_deletes = ctx.skip_deletes_in_initial_backfill;
                            self.queue_oso(oso::backfill(vb, end, mode, skip_deletes), end);
                            continue;
                        }
                        vb.pin(end);
                        self.phase = Phase::Backfill {
                            end,
                            cursor: self.last_read,
                            marker_sent: false,
                            last_item: 0,
                        };
                        continue;
                    }
                    let Some(mut batch) = vb.batch(self.last_read) else {
                        return;
                    };
                    // Collections: the items the filter lets through, and
                    // how far the batch went (filtered seqnos included).
                    let Some(batch_end) = batch.items.last().map(|d| d.seqno) else {
                        return;
                    };
                    let filter = &mut self.params.filter;
                    let fb = ctx.flatbuffers_events;
                    batch
                        .items
                        .retain(|d| (fb || !is_modify_event(d)) && filter.admits(d));
                    let (Some(first), Some(last)) = (batch.items.first(), batch.items.last())
                    else {
                        self.filtered_batch(batch_end, ctx);
                        if self.params.filter.is_empty() {
                            self.end(StreamEndReason::FilterEmpty, Some(vb));
                        }
                        continue;
                    };
                    let (natural, flags) = if batch.at_checkpoint_start {
                        (
                            batch.checkpoint_start,
                            SnapshotFlags::MEMORY | SnapshotFlags::CHECKPOINT,
                        )
                    } else {
                        (first.seqno, SnapshotFlags::MEMORY)
                    };
                    // On collections connections a snapshot whose last
                    // items were filtered out ends at the batch's end and
                    // closes with SEQNO_ADVANCED.
                    let end = if ctx.collections {
                        batch_end
                    } else {
                        last.seqno
                    };
                    let shaped = sync_write::memory_snapshot(
                        vb,
                        batch.items,
                        end,
                        ctx.sync_writes,
                        ctx.collections,
                    );
                    if let Some((marker_end, seqnos)) = shaped.marker {
                        self.queue_marker(natural, marker_end, flags, vb.purge_seqno(), seqnos);
                        self.ready.extend(shaped.messages);
                        if let Some(seqno) = shaped.advance {
                            self.ready.push_back(Outgoing::SeqnoAdvanced(seqno));
                        }
                    }
                    self.last_read = batch_end;
                    if self.params.filter.is_empty() {
                        self.end(StreamEndReason::FilterEmpty, Some(vb));
                    }
                }
                Phase::Backfill {
                    end,
                    cursor,
                    marker_sent,
                    mut last_item,
                } => {
                    // Each step reads the disk as it is now: a purge since
                    // the backfill began (at `last_read`) may have removed
                    // tombstones it has yet to send. As at its start, the
                    // stream ends (internal reason Rollback, sent as
                    // StateChanged) and the re-request rolls back.
                    if self.purge_overtook(self.last_read, vb) {
                        self.end(StreamEndReason::StateChanged, Some(vb));
                        return;
                    }
                    if !marker_sent {
                        let Some((marker_end, seqnos)) = sync_write::disk_marker(
                            vb,
                            cursor,
                            end,
                            ctx.sync_writes,
                            ctx.collections,
                        ) else {
                            // Nothing visible to send in this backfill.
                            self.last_read = end;
                            vb.unpin(end);
                            self.phase = Phase::Memory;
                            continue;
                        };
                        self.queue_marker(
                            cursor + 1,
                            marker_end,
                            SnapshotFlags::DISK | SnapshotFlags::CHECKPOINT,
                            vb.purge_seqno(),
                            seqnos,
                        );
                    }
                    let skip_deletes =
                        ctx.skip_deletes_in_initial_backfill && self.params.start == 0;
                    let (messages, scan_cursor) = sync_write::backfill_step(
                        vb,
                        cursor,
                        end,
                        ctx.backfill_batch.max(1),
                        ctx.sync_writes,
                    );
                    for message in messages {
                        let Some(doc) = sync_write::message_doc(&message) else {
                            continue;
                        };
                        if skip_deletes
                            && sync_write::is_deletion(&message)
                            && !doc.is_system_event()
                        {
                            continue;
                        }
                        if (!ctx.flatbuffers_events && is_modify_event(doc))
                            || !self.params.filter.admits(doc)
                        {
                            continue;
                        }
                        last_item = sync_write::data_seqno(&message).unwrap_or(last_item);
                        self.ready.push_back(message);
                    }
                    if self.params.filter.is_empty() {
                        // The drop event just queued goes out first.
                        self.end_after_queued(StreamEndReason::FilterEmpty, vb);
                        return;
                    }
                    let scan = Scan {
                        cursor: scan_cursor,
                    };
                    if scan.cursor >= end {
                        if ctx.collections && last_item < end {
                            self.ready.push_back(Outgoing::SeqnoAdvanced(end));
                        }
                        self.last_read = end;
                        vb.unpin(end);
                        self.phase = Phase::Memory;
                    } else {
                        self.phase = Phase::Backfill {
                            end,
                            cursor: scan.cursor,
                            marker_sent: true,
                            last_item,
                        };
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;
    use crate::bucket::{DocumentKind, VBucket};
    use crate::codec::Datatype;

    fn doc(key: &str, kind: DocumentKind) -> Document {
        Document {
            key: Bytes::copy_from_slice(key.as_bytes()),
            collection: 0,
            value: Bytes::new(),
            datatype: Datatype::RAW,
            flags: 0,
            expiry: 0,
            cas: 0,
            rev_seqno: 1,
            seqno: 0,
            kind,
            delete_time: 0,
        }
    }

    fn params(start: u64) -> StreamParams {
        StreamParams {
            vbucket: 0,
            opaque: 1,
            stream_id: None,
            flags: StreamRequestFlags::empty(),
            start,
            end: u64::MAX,
            vbucket_uuid: 0,
            snap_start: start,
            snap_end: start,
            remote_purge: 0,
            filter: StreamFilter::Legacy,
        }
    }

    /// Regression (found by `tests/model.rs`): a purge during a backfill
    /// removed a tombstone the backfill had not read yet; the stream went
    /// on without it, and a client holding the deleted document kept it.
    #[test]
    fn a_purge_during_a_backfill_ends_the_stream_state_changed() {
        let now = UNIX_EPOCH + Duration::from_secs(1);
        // One checkpoint of 2 items in memory: seqnos 1..=4 are disk only.
        let mut vb = VBucket::new(0, 0xaa, 2, 1);
        vb.commit(doc("a", DocumentKind::Mutation), now); // 1
        vb.commit(doc("b", DocumentKind::Mutation), now); // 2
        vb.commit(doc("c", DocumentKind::Mutation), now); // 3
        vb.commit(doc("a", DocumentKind::Deletion), now); // 4
        vb.commit(doc("d", DocumentKind::Mutation), now); // 5
        assert_eq!(vb.memory_low_seqno(), 5);
        let ctx = FillContext {
            collections: false,
            backfill_batch: 1,
            skip_deletes_in_initial_backfill: false,
            sync_writes: false,
            oso: None,
            oso_unfiltered: false,
            flatbuffers_events: false,
        };
        // A client that has a@1 backfills (1, 4] one item per step.
        let mut stream = Stream::new(params(1));
        stream.fill(&mut vb, &ctx);
        assert!(matches!(
            stream.pop(),
            Some(Outgoing::Marker {
                start: 1,
                end: 4,
                ..
            })
        ));
        assert!(matches!(stream.pop(), Some(Outgoing::Item { doc, .. }) if doc.seqno == 2));
        // The tombstone of a@1 is purged before the backfill reaches it.
        assert_eq!(vb.purge(4), 4);
        stream.fill(&mut vb, &ctx);
        assert!(matches!(
            stream.pop(),
            Some(Outgoing::End(StreamEndReason::StateChanged))
        ));
        assert!(stream.pop().is_none());
    }
}
