//! Sync writes on a producer stream (behavior.md §7).
//!
//! - Without `enable_sync_writes`, prepares and aborts are never sent and a
//!   commit is a plain MUTATION/DELETION at its commit seqno. The seqnos
//!   skipped that way end no snapshot the client could wait for: on a
//!   collections connection a SEQNO_ADVANCED closes the snapshot; otherwise
//!   the snapshot ends at its max visible seqno (disk snapshots, and memory
//!   snapshots alike here), and a snapshot with nothing visible is not sent.
//! - With it, PREPARE, COMMIT and ABORT are sent from memory; a disk
//!   backfill sends commits as full mutations, pending prepares as PREPARE
//!   and the aborts it still has as ABORT (behavior.md §7: prepares and
//!   aborts may be missing from disk snapshots).
//! - Markers carry the max visible seqno, and disk markers the high
//!   completed seqno (v2.0 with sync replication, v2.2 when opted in).

use std::sync::Arc;

use bytes::BytesMut;

use super::outgoing::{
    EncodeContext, StreamAddress, mutation_value, tombstone_value, wire_key, wire_value,
};
use super::stream::Outgoing;
use crate::bucket::{Document, PreparedItem, SyncRecord, VBucket};
use crate::codec::{DurabilityLevel, EncodeError, Opcode};
use crate::msg::{Abort, Commit, Prepare};

/// The visibility seqnos a marker carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct MarkerSeqnos {
    /// Highest committed seqno at or below the marker end.
    pub(crate) max_visible: u64,
    /// Highest completed prepare seqno (disk markers).
    pub(crate) high_completed: u64,
    /// Highest prepare seqno, completed or not (v2.2 disk markers).
    pub(crate) high_prepared: u64,
}

/// A sync-write message of a stream.
#[derive(Debug, Clone)]
pub(crate) enum SyncItem {
    /// A pending write.
    Prepare {
        doc: Arc<Document>,
        level: DurabilityLevel,
    },
    /// The prepare at `prepared_seqno` became visible as `doc`.
    Commit {
        doc: Arc<Document>,
        prepared_seqno: u64,
    },
    /// The prepare at `prepared_seqno` was abandoned (`doc` holds the key
    /// and the abort seqno).
    Abort {
        doc: Arc<Document>,
        prepared_seqno: u64,
    },
}

impl SyncItem {
    /// The seqno the message carries.
    pub(crate) fn seqno(&self) -> u64 {
        match self {
            SyncItem::Prepare { doc, .. }
            | SyncItem::Commit { doc, .. }
            | SyncItem::Abort { doc, .. } => doc.seqno,
        }
    }

    /// Whether it deletes (a prepared delete, a committed delete, an
    /// abort): skipped by SkipDeletesInInitialBackfill.
    pub(crate) fn is_deletion(&self) -> bool {
        match self {
            SyncItem::Prepare { doc, .. } | SyncItem::Commit { doc, .. } => doc.is_deleted(),
            SyncItem::Abort { .. } => true,
        }
    }
}

/// The seqno of a data message (items, sync writes), if it carries one.
pub(crate) fn data_seqno(message: &Outgoing) -> Option<u64> {
    match message {
        Outgoing::Item { doc, .. } => Some(doc.seqno),
        Outgoing::Sync(item) => Some(item.seqno()),
        _ => None,
    }
}

/// The document a data message carries (items, sync writes).
pub(crate) fn message_doc(message: &Outgoing) -> Option<&Arc<Document>> {
    match message {
        Outgoing::Item { doc, .. } => Some(doc),
        Outgoing::Sync(
            SyncItem::Prepare { doc, .. }
            | SyncItem::Commit { doc, .. }
            | SyncItem::Abort { doc, .. },
        ) => Some(doc),
        _ => None,
    }
}

/// Whether a data message is a deletion of some kind.
pub(crate) fn is_deletion(message: &Outgoing) -> bool {
    match message {
        Outgoing::Item { doc, .. } => doc.is_deleted(),
        Outgoing::Sync(item) => item.is_deletion(),
        _ => false,
    }
}

/// What a memory item becomes on this stream: the item, a sync-write
/// message, or nothing (a prepare or abort without sync writes).
fn memory_message(vb: &VBucket, doc: Arc<Document>, sync_writes: bool) -> Option<Outgoing> {
    match vb.sync_record(doc.seqno) {
        // A prepared-namespace seqno whose record is gone: never a change.
        None if vb.max_visible_seqno(doc.seqno) != doc.seqno => None,
        None => Some(Outgoing::Item {
            doc,
            from_disk: false,
        }),
        Some(SyncRecord::Commit { prepared_seqno }) if sync_writes => {
            Some(Outgoing::Sync(SyncItem::Commit {
                doc,
                prepared_seqno,
            }))
        }
        Some(SyncRecord::Commit { .. }) => Some(Outgoing::Item {
            doc,
            from_disk: false,
        }),
        Some(SyncRecord::Prepare { level, .. }) if sync_writes => {
            Some(Outgoing::Sync(SyncItem::Prepare { doc, level }))
        }
        Some(SyncRecord::Abort { prepared_seqno, .. }) if sync_writes => {
            Some(Outgoing::Sync(SyncItem::Abort {
                doc,
                prepared_seqno,
            }))
        }
        Some(SyncRecord::Prepare { .. } | SyncRecord::Abort { .. }) => None,
    }
}

/// A memory snapshot shaped for the stream.
#[derive(Debug)]
pub(crate) struct MemorySnapshot {
    /// The marker's end and seqnos; `None`: nothing to send.
    pub(crate) marker: Option<(u64, MarkerSeqnos)>,
    pub(crate) messages: Vec<Outgoing>,
    /// A SEQNO_ADVANCED to close the snapshot.
    pub(crate) advance: Option<u64>,
}

/// Shapes the items of a checkpoint (ascending, `end` the last one's
/// seqno) for a stream.
pub(crate) fn memory_snapshot(
    vb: &VBucket,
    items: Vec<Arc<Document>>,
    end: u64,
    sync_writes: bool,
    collections: bool,
) -> MemorySnapshot {
    let messages: Vec<Outgoing> = items
        .into_iter()
        .filter_map(|doc| memory_message(vb, doc, sync_writes))
        .collect();
    let seqnos = MarkerSeqnos {
        max_visible: vb.max_visible_seqno(end),
        high_completed: 0,
        high_prepared: 0,
    };
    let last_sent = messages.last().and_then(data_seqno);
    let (marker, advance) = match last_sent {
        _ if sync_writes => (Some((end, seqnos)), None),
        Some(last) if last == end => (Some((end, seqnos)), None),
        _ if collections => (Some((end, seqnos)), Some(end)),
        Some(last) => (Some((last, seqnos)), None),
        None => (None, None),
    };
    MemorySnapshot {
        marker,
        messages,
        advance,
    }
}

/// The end and seqnos of a disk snapshot reading `(cursor, end]`; `None`
/// when a client without sync writes nor collections would receive
/// nothing from it (the snapshot is skipped).
pub(crate) fn disk_marker(
    vb: &VBucket,
    cursor: u64,
    end: u64,
    sync_writes: bool,
    collections: bool,
) -> Option<(u64, MarkerSeqnos)> {
    let seqnos = MarkerSeqnos {
        max_visible: vb.max_visible_seqno(end),
        high_completed: vb.high_completed_seqno(end),
        high_prepared: vb.high_prepared_seqno(end),
    };
    if sync_writes || collections {
        return Some((end, seqnos));
    }
    // Truncated to the max visible seqno (behavior.md §7).
    (seqnos.max_visible > cursor).then_some((seqnos.max_visible, seqnos))
}

/// One backfill step: the committed items of `(cursor, end]` read as of
/// `end` (at most about `limit`), with the prepared-namespace items of the
/// same range when the stream has sync writes, by seqno.
pub(crate) fn backfill_step(
    vb: &VBucket,
    cursor: u64,
    end: u64,
    limit: usize,
    sync_writes: bool,
) -> (Vec<Outgoing>, u64) {
    let scan = vb.scan(cursor, end, limit);
    let mut messages: Vec<Outgoing> = scan
        .items
        .into_iter()
        .map(|doc| Outgoing::Item {
            doc,
            from_disk: true,
        })
        .collect();
    if sync_writes {
        let prepared = vb.prepared_items(cursor, scan.cursor, end);
        if !prepared.is_empty() {
            messages.extend(prepared.into_iter().filter_map(disk_message));
            messages.sort_by_key(|m| data_seqno(m).unwrap_or(0));
        }
    }
    (messages, scan.cursor)
}

fn disk_message(item: PreparedItem) -> Option<Outgoing> {
    let PreparedItem { doc, record } = item;
    match record {
        SyncRecord::Prepare { level, .. } => Some(Outgoing::Sync(SyncItem::Prepare { doc, level })),
        SyncRecord::Abort { prepared_seqno, .. } => Some(Outgoing::Sync(SyncItem::Abort {
            doc,
            prepared_seqno,
        })),
        SyncRecord::Commit { .. } => None,
    }
}

/// Appends a sync-write message; returns its opcode.
pub(crate) fn encode(
    item: &SyncItem,
    to: StreamAddress,
    ctx: &EncodeContext,
    buf: &mut BytesMut,
) -> Result<Opcode, EncodeError> {
    let StreamAddress {
        vbucket, opaque, ..
    } = to;
    match item {
        SyncItem::Prepare { doc, level } => {
            let deleted = doc.is_deleted();
            let (value, datatype) = if deleted {
                tombstone_value(doc, ctx.open_flags)
            } else {
                mutation_value(doc, ctx.open_flags)
            };
            let (value, datatype) = wire_value((value, datatype), ctx);
            Prepare {
                vbucket,
                opaque,
                cas: doc.cas,
                datatype,
                by_seqno: doc.seqno,
                rev_seqno: doc.rev_seqno,
                flags: doc.flags,
                expiration: doc.expiry,
                lock_time: 0,
                nru: 0,
                deleted,
                durability: *level,
                key: wire_key(doc, ctx.collections),
                value,
            }
            .encode(buf)?;
            Ok(Opcode::DcpPrepare)
        }
        SyncItem::Commit {
            doc,
            prepared_seqno,
        } => {
            Commit {
                vbucket,
                opaque,
                prepared_seqno: *prepared_seqno,
                commit_seqno: doc.seqno,
                key: wire_key(doc, ctx.collections),
            }
            .encode(buf)?;
            Ok(Opcode::DcpCommit)
        }
        SyncItem::Abort {
            doc,
            prepared_seqno,
        } => {
            Abort {
                vbucket,
                opaque,
                prepared_seqno: *prepared_seqno,
                abort_seqno: doc.seqno,
                key: wire_key(doc, ctx.collections),
            }
            .encode(buf)?;
            Ok(Opcode::DcpAbort)
        }
    }
}
