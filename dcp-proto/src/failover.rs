//! History branches: the producer's rollback decision for a stream request,
//! and the consumer's side of obeying a rollback.
//!
//! A failover log lists `(vbucket_uuid, seqno)` entries newest first; entry
//! `(u, s)` means "branch `u` began after seqno `s`". A consumer resuming at
//! `start` on branch `uuid` may have seen changes that the producer's history
//! does not hold (they were lost in a failover); the producer then answers
//! ROLLBACK with the highest seqno both histories share.

use crate::msg::{FailoverEntry, FailoverLog};

/// The most entries a failover log keeps; older branches are forgotten, and a
/// consumer whose uuid aged out must roll back to 0.
pub const MAX_FAILOVER_ENTRIES: usize = 25;

/// What the producer knows about a stream request when it decides whether the
/// consumer must roll back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RollbackQuery {
    /// The request's start seqno: the last seqno the consumer has.
    pub start: u64,
    /// The request's vbucket uuid (0 = no history).
    pub vbucket_uuid: u64,
    /// The request's snapshot start.
    pub snap_start: u64,
    /// The request's snapshot end.
    pub snap_end: u64,
    /// The vbucket's current high seqno.
    pub high_seqno: u64,
    /// The vbucket's purge seqno (pass 0 for IgnorePurgedTombstones).
    pub purge_seqno: u64,
    /// The purge seqno the consumer last saw (stream-request JSON
    /// `purge_seqno`; 0 if absent).
    pub remote_purge_seqno: u64,
    /// StrictVbUuid: check the uuid even at start 0.
    pub strict: bool,
    /// Filtered-stream exemption from the purge rule: the start is at or past
    /// the filtered collections' high seqno, which is itself at or below the
    /// purge seqno.
    pub collection_exemption: bool,
}

/// Decides whether a stream request must roll back, and to which seqno.
///
/// Returns `None` when the consumer's history is a prefix of the producer's,
/// `Some(seqno)` when it must discard everything above `seqno` first. This is
/// the server's algorithm, including the purge rule (which looks at `start`,
/// not the snapshot), an unknown uuid meaning "back to 0", and the
/// adjustments for a snapshot that was seen but not yet entered
/// (`start == snap_start`) and one that was complete (`start == snap_end`).
///
/// ```
/// use dcp_proto::failover::{RollbackQuery, needs_rollback};
/// use dcp_proto::msg::{FailoverEntry, FailoverLog};
/// // Branch B began at 900 when a replica that had 900 was promoted.
/// let log = FailoverLog::new(vec![
///     FailoverEntry { vbucket_uuid: 0xB, seqno: 900 },
///     FailoverEntry { vbucket_uuid: 0xA, seqno: 0 },
/// ]);
/// let query = RollbackQuery {
///     start: 950, vbucket_uuid: 0xA, snap_start: 901, snap_end: 1000,
///     high_seqno: 1100, ..RollbackQuery::default()
/// };
/// assert_eq!(needs_rollback(&log, &query), Some(900));
/// ```
pub fn needs_rollback(log: &FailoverLog, q: &RollbackQuery) -> Option<u64> {
    if q.start == 0 && (!q.strict || q.vbucket_uuid == 0) {
        return None;
    }
    if q.start != 0
        && q.start < q.purge_seqno
        && q.remote_purge_seqno != q.purge_seqno
        && !q.collection_exemption
    {
        return Some(0);
    }
    // Entries are newest first: the branch is searched from the oldest, and
    // the next newer entry (if any) is where that branch ended.
    let Some(position) = log
        .entries
        .iter()
        .rposition(|e| e.vbucket_uuid == q.vbucket_uuid)
    else {
        return Some(0);
    };
    let upper = position
        .checked_sub(1)
        .and_then(|newer| log.entries.get(newer))
        .map_or(q.high_seqno, |e| e.seqno);
    let mut snap_start = q.snap_start;
    let mut snap_end = q.snap_end;
    if q.start == snap_start {
        snap_end = q.start;
    }
    if snap_end <= upper {
        return None;
    }
    if q.start == snap_end {
        snap_start = q.start;
    }
    Some(upper.min(snap_start))
}

/// Drops the entries a rollback to `seqno` makes void (those whose branch
/// began above it) and returns the uuid to request with next (0 if none is
/// left).
pub fn truncate_for_rollback(log: &mut FailoverLog, seqno: u64) -> u64 {
    log.entries.retain(|e| e.seqno <= seqno);
    log.entries.first().map_or(0, |e| e.vbucket_uuid)
}

/// Adds a new branch `(uuid, seqno)` as the newest entry, dropping entries
/// above `seqno` (history that the new branch does not have) and the oldest
/// beyond [`MAX_FAILOVER_ENTRIES`].
pub fn push_branch(log: &mut FailoverLog, vbucket_uuid: u64, seqno: u64) {
    log.entries.retain(|e| e.seqno <= seqno);
    log.entries.insert(
        0,
        FailoverEntry {
            vbucket_uuid,
            seqno,
        },
    );
    log.entries.truncate(MAX_FAILOVER_ENTRIES);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(entries: &[(u64, u64)]) -> FailoverLog {
        FailoverLog::new(
            entries
                .iter()
                .map(|&(vbucket_uuid, seqno)| FailoverEntry {
                    vbucket_uuid,
                    seqno,
                })
                .collect(),
        )
    }

    const A: u64 = 0xA;
    const B: u64 = 0xB;
    const C: u64 = 0xC;

    fn q(uuid: u64, start: u64, snap: (u64, u64), high: u64) -> RollbackQuery {
        RollbackQuery {
            start,
            vbucket_uuid: uuid,
            snap_start: snap.0,
            snap_end: snap.1,
            high_seqno: high,
            ..RollbackQuery::default()
        }
    }

    /// The worked examples of the behaviour spec (§8), one per row.
    #[test]
    fn worked_examples() {
        let promoted = log(&[(B, 900), (A, 0)]);
        let cases = [
            (&promoted, q(A, 1000, (901, 1000), 1100), Some(900)),
            (&promoted, q(A, 900, (900, 900), 1100), None),
            (&promoted, q(A, 950, (901, 1000), 1100), Some(900)),
            (&promoted, q(A, 850, (801, 900), 1100), None),
            (&promoted, q(A, 880, (851, 950), 1100), Some(851)),
            (&promoted, q(C, 500, (401, 500), 1100), Some(0)),
            (&promoted, q(B, 1050, (1001, 1080), 1100), None),
            (&promoted, q(B, 1150, (1101, 1200), 1100), Some(1100)),
        ];
        for (i, (l, query, expected)) in cases.into_iter().enumerate() {
            assert_eq!(needs_rollback(l, &query), expected, "row {i}: {query:?}");
        }

        let twice = log(&[(C, 1500), (B, 900), (A, 0)]);
        assert_eq!(
            needs_rollback(&twice, &q(B, 1600, (1501, 1600), 1700)),
            Some(1500)
        );
        assert_eq!(
            needs_rollback(&twice, &q(B, 1450, (1401, 1500), 1700)),
            None
        );

        let purged = log(&[(B, 0)]);
        let mut query = q(B, 500, (401, 500), 1100);
        query.purge_seqno = 600;
        assert_eq!(needs_rollback(&purged, &query), Some(0));
        query.remote_purge_seqno = 600;
        assert_eq!(needs_rollback(&purged, &query), None);

        let mut strict = q(C, 0, (0, 0), 1100);
        strict.strict = true;
        assert_eq!(needs_rollback(&promoted, &strict), Some(0));
        strict.vbucket_uuid = 0;
        assert_eq!(needs_rollback(&promoted, &strict), None);
    }

    #[test]
    fn each_branch_of_the_algorithm() {
        let l = log(&[(B, 100), (A, 0)]);
        // start 0, not strict: never.
        assert_eq!(needs_rollback(&l, &q(C, 0, (0, 0), 200)), None);
        // start > 0 with uuid 0: no history, back to 0.
        assert_eq!(needs_rollback(&l, &q(0, 5, (5, 5), 200)), Some(0));
        // Strict at 0 with a known uuid: fine.
        let mut s = q(A, 0, (0, 0), 200);
        s.strict = true;
        assert_eq!(needs_rollback(&l, &s), None);
        // Marker seen, no item of it yet (start == snap_start): E := start.
        assert_eq!(needs_rollback(&l, &q(A, 100, (100, 150), 200)), None);
        // Complete snapshot past the branch point (start == snap_end): S := start,
        // upper < S so roll back to upper.
        assert_eq!(needs_rollback(&l, &q(A, 150, (120, 150), 200)), Some(100));
        // Partial snapshot straddling the branch: back to its start.
        assert_eq!(needs_rollback(&l, &q(A, 90, (80, 120), 200)), Some(80));
        // Exemption from the purge rule for filtered streams.
        let mut e = q(B, 150, (150, 150), 200);
        e.purge_seqno = 180;
        assert_eq!(needs_rollback(&l, &e), Some(0));
        e.collection_exemption = true;
        assert_eq!(needs_rollback(&l, &e), None);
        // The purge rule looks at start, not snap_start.
        let mut p = q(B, 190, (150, 200), 200);
        p.purge_seqno = 180;
        assert_eq!(needs_rollback(&l, &p), None);
    }

    #[test]
    fn rollback_loop_terminates() {
        // Consumer on A at 1000 (complete snapshot); producer went A→B@900→C@500.
        let producer = log(&[(C, 500), (B, 900), (A, 0)]);
        let mut consumer = log(&[(A, 0)]);
        let (mut start, mut snap, mut uuid) = (1000, (1000, 1000), A);
        for _ in 0..4 {
            match needs_rollback(&producer, &q(uuid, start, snap, 1200)) {
                None => return,
                Some(r) => {
                    assert!(r < start || r == 0);
                    uuid = truncate_for_rollback(&mut consumer, r);
                    start = r;
                    snap = (r, r);
                }
            }
        }
        panic!("rollback loop did not terminate");
    }

    #[test]
    fn branches_are_capped_and_pruned() {
        let mut l = log(&[(A, 0)]);
        for i in 1..=30u64 {
            push_branch(&mut l, 100 + i, i * 10);
        }
        assert_eq!(l.entries.len(), MAX_FAILOVER_ENTRIES);
        assert_eq!(
            l.entries[0],
            FailoverEntry {
                vbucket_uuid: 130,
                seqno: 300
            }
        );
        // A branch below every entry replaces them all.
        push_branch(&mut l, 999, 55);
        assert_eq!(l, log(&[(999, 55)]));

        let mut l = log(&[(C, 1500), (B, 900), (A, 0)]);
        assert_eq!(truncate_for_rollback(&mut l, 1000), B);
        assert_eq!(l, log(&[(B, 900), (A, 0)]));
        assert_eq!(truncate_for_rollback(&mut l, 0), A);
        assert_eq!(truncate_for_rollback(&mut log(&[(B, 5)]), 0), 0);
    }
}
