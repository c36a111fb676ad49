//! Out-of-sequence-order (OSO) backfill (behavior.md §6.3, wire.md
//! OSO_SNAPSHOT).
//!
//! Shape: OSO_SNAPSHOT(start), the items the disk holds as of the backfill
//! end in key order (not seqno order; no snapshot marker), a
//! SEQNO_ADVANCED(end) when the client asked for
//! `true_with_seqno_advanced` and the largest seqno sent is below the end,
//! OSO_SNAPSHOT(end); normal snapshots continue above the end.
//!
//! # Eligibility
//!
//! [`eligible`] is the one rule. A stream gets an OSO backfill when the
//! connection enabled `enable_out_of_order_snapshots`, the stream starts
//! from 0 and its first read is a disk backfill (an initial backfill), the
//! connection has no sync writes (prepares are not sent out of order
//! here), and the stream is collection-filtered, as on the server, which
//! uses OSO only for filtered streams. A test server can also allow it for
//! unfiltered streams with
//! [`NodeConfig::oso_for_unfiltered_streams`](super::NodeConfig::oso_for_unfiltered_streams)
//! (default off), so a consumer's OSO handling can be exercised on the
//! default collection.
//!
//! The whole backfill is read and sorted at once: the stream holds it until
//! sent (memory proportional to the vbucket's size, fine for a test
//! server).

use std::sync::Arc;

use super::control::OsoMode;
use super::stream::Outgoing;
use crate::bucket::{Document, VBucket};

/// Which edge of an OSO snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OsoEdge {
    /// OSO_SNAPSHOT(start).
    Start,
    /// OSO_SNAPSHOT(end); the snapshot covered seqnos up to `end`.
    End { end: u64 },
}

/// What the eligibility rule looks at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct OsoQuery {
    /// The connection's `enable_out_of_order_snapshots` setting.
    pub(crate) mode: Option<OsoMode>,
    /// The stream request's start seqno.
    pub(crate) start: u64,
    /// What the stream read so far (0 before anything).
    pub(crate) last_read: u64,
    /// The stream is collection-filtered.
    pub(crate) filtered: bool,
    /// The connection enabled sync writes.
    pub(crate) sync_writes: bool,
    /// The node allows OSO for unfiltered streams.
    pub(crate) unfiltered_allowed: bool,
}

/// Whether a stream about to backfill from disk does it out of order.
pub(crate) fn eligible(q: &OsoQuery) -> bool {
    q.mode.is_some()
        && q.start == 0
        && q.last_read == 0
        && !q.sync_writes
        && (q.filtered || q.unfiltered_allowed)
}

/// The messages of an OSO backfill of `vb` as of `end`.
pub(crate) fn backfill(vb: &VBucket, end: u64, mode: OsoMode, skip_deletes: bool) -> Vec<Outgoing> {
    let mut docs: Vec<Arc<Document>> = vb
        .scan(0, end, usize::MAX)
        .items
        .into_iter()
        .filter(|d| !(skip_deletes && d.is_deleted()))
        .collect();
    docs.sort_by(|a, b| a.key.cmp(&b.key));
    let max_sent = docs.iter().map(|d| d.seqno).max().unwrap_or(0);
    let mut out = Vec::with_capacity(docs.len() + 3);
    out.push(Outgoing::Oso(OsoEdge::Start));
    out.extend(docs.into_iter().map(|doc| Outgoing::Item {
        doc,
        from_disk: true,
    }));
    if mode == OsoMode::WithSeqnoAdvanced && max_sent < end {
        out.push(Outgoing::SeqnoAdvanced(end));
    }
    out.push(Outgoing::Oso(OsoEdge::End { end }));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query() -> OsoQuery {
        OsoQuery {
            mode: Some(OsoMode::Enabled),
            start: 0,
            last_read: 0,
            filtered: true,
            sync_writes: false,
            unfiltered_allowed: false,
        }
    }

    #[test]
    fn eligibility() {
        assert!(eligible(&query()));
        assert!(!eligible(&OsoQuery {
            mode: None,
            ..query()
        }));
        assert!(!eligible(&OsoQuery {
            start: 5,
            ..query()
        }));
        assert!(!eligible(&OsoQuery {
            last_read: 5,
            ..query()
        }));
        assert!(!eligible(&OsoQuery {
            sync_writes: true,
            ..query()
        }));
        assert!(!eligible(&OsoQuery {
            filtered: false,
            ..query()
        }));
        assert!(eligible(&OsoQuery {
            filtered: false,
            unfiltered_allowed: true,
            ..query()
        }));
    }
}
