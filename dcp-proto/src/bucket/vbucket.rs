//! One vbucket: seqno assignment, its state, failover log, memory
//! (checkpoints) and disk (by-seqno index), and the operations the node and
//! streams need. Document writes are in [`super::write`].

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::checkpoint::{Batch, Checkpoints};
use super::collections::VbCollections;
use super::disk::{Disk, Scan};
use super::document::Document;
use super::durability::Durability;
use crate::failover::push_branch;
use crate::msg::{FailoverEntry, FailoverLog, VbucketState};

/// One vbucket of the bucket. Read it through
/// [`Bucket::vbucket`](super::Bucket::vbucket).
#[derive(Debug, Clone)]
pub struct VBucket {
    pub(super) id: u16,
    pub(super) state: VbucketState,
    pub(super) high_seqno: u64,
    pub(super) failover: FailoverLog,
    pub(super) checkpoints: Checkpoints,
    pub(super) disk: Disk,
    /// Highest CAS handed out (hybrid logical clock).
    pub(super) max_cas: u64,
    pub(super) warming_up: bool,
    /// Sync writes: prepares, commits, aborts (see [`super::durability`]).
    pub(super) sync: Durability,
    /// Which collections are live or dropped here (see `collections`).
    pub(super) collections: VbCollections,
    /// The collection the document operation in progress addresses.
    pub(super) write_collection: u32,
    /// That collection's max TTL (caps the expiry of what is written).
    pub(super) write_max_ttl: Option<u32>,
}

/// Seconds and nanoseconds since the Unix epoch (0 before it).
pub(crate) fn unix_nanos(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Whole seconds since the Unix epoch.
pub(crate) fn unix_secs(now: SystemTime) -> u64 {
    now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl VBucket {
    /// A fresh active vbucket with a one-entry failover log `(uuid, 0)`.
    pub(crate) fn new(id: u16, uuid: u64, max_items: usize, max_checkpoints: usize) -> Self {
        Self {
            id,
            state: VbucketState::Active,
            high_seqno: 0,
            failover: FailoverLog::new(vec![FailoverEntry {
                vbucket_uuid: uuid,
                seqno: 0,
            }]),
            checkpoints: Checkpoints::new(1, max_items, max_checkpoints),
            disk: Disk::default(),
            max_cas: 0,
            warming_up: false,
            sync: Durability::default(),
            collections: VbCollections::default(),
            write_collection: 0,
            write_max_ttl: None,
        }
    }

    /// The vbucket id.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The state (active, replica, pending, dead).
    pub fn state(&self) -> VbucketState {
        self.state
    }

    /// The highest seqno assigned.
    pub fn high_seqno(&self) -> u64 {
        self.high_seqno
    }

    /// The persisted seqno. Every write is persisted at once in this model,
    /// so it is the high seqno.
    pub fn persisted_seqno(&self) -> u64 {
        self.high_seqno
    }

    /// The highest seqno of a purged tombstone.
    pub fn purge_seqno(&self) -> u64 {
        self.disk.purge_seqno()
    }

    /// The failover log, newest entry first.
    pub fn failover_log(&self) -> &FailoverLog {
        &self.failover
    }

    /// The current branch's uuid.
    pub fn uuid(&self) -> u64 {
        self.failover.newest().map_or(0, |e| e.vbucket_uuid)
    }

    /// The lowest seqno memory can still stream; a stream starting below it
    /// backfills from disk first.
    pub fn memory_low_seqno(&self) -> u64 {
        self.checkpoints.low_seqno()
    }

    /// Number of checkpoints in memory.
    pub fn checkpoint_count(&self) -> usize {
        self.checkpoints.len()
    }

    /// Number of versions held in memory checkpoints.
    pub fn memory_item_count(&self) -> usize {
        self.checkpoints.item_count()
    }

    /// Number of live documents.
    pub fn live_count(&self) -> usize {
        self.disk.live_count()
    }

    /// Number of tombstones not yet purged.
    pub fn tombstone_count(&self) -> usize {
        self.disk.tombstone_count()
    }

    /// Whether the vbucket is warming up (stream requests get TMPFAIL).
    pub fn is_warming_up(&self) -> bool {
        self.warming_up
    }

    /// The latest version of `key` in the default collection, tombstones
    /// included, without expiring anything.
    pub fn peek(&self, key: &[u8]) -> Option<&Document> {
        self.disk.get(0, key).map(|d| &**d)
    }

    /// The latest versions (live documents and tombstones), by seqno.
    pub fn documents(&self) -> impl Iterator<Item = &Document> {
        self.disk.latest().map(|d| &**d)
    }

    /// The snapshot (checkpoint) range holding `seqno`, if in memory.
    pub(crate) fn snapshot_range(&self, seqno: u64) -> Option<(u64, u64)> {
        self.checkpoints.range_of(seqno, self.high_seqno)
    }

    /// Assigns the next seqno and a CAS to `doc`, stores it on disk and in
    /// memory, and returns it.
    pub(crate) fn commit(&mut self, mut doc: Document, now: SystemTime) -> Arc<Document> {
        self.high_seqno += 1;
        self.max_cas = (self.max_cas + 1).max(unix_nanos(now));
        doc.seqno = self.high_seqno;
        doc.cas = self.max_cas;
        let doc = Arc::new(doc);
        self.collections.on_commit(&doc);
        self.disk.insert(Arc::clone(&doc));
        self.checkpoints.queue(Arc::clone(&doc));
        self.disk.collect_garbage(self.checkpoints.low_seqno());
        self.collect_sync_garbage();
        doc
    }

    /// A memory snapshot after `after` (see [`Checkpoints::batch`]).
    pub(crate) fn batch(&self, after: u64) -> Option<Batch> {
        self.checkpoints.batch(after)
    }

    /// A step of a backfill reading the vbucket as of `end`.
    /// Documents of dropped (or flushed) collections are skipped.
    pub(crate) fn scan(&self, after: u64, end: u64, limit: usize) -> Scan {
        let mut scan = self.disk.scan(after, end, limit);
        scan.items
            .retain(|d| !self.collections.is_logically_deleted(d));
        scan
    }

    /// Pins the versions a backfill up to `end` needs.
    pub(crate) fn pin(&mut self, end: u64) {
        self.disk.pin(end);
    }

    /// Releases a pin.
    pub(crate) fn unpin(&mut self, end: u64) {
        self.disk.unpin(end);
        self.disk.collect_garbage(self.checkpoints.low_seqno());
        self.collect_sync_garbage();
    }

    /// Changes the state. Becoming active from another state starts a new
    /// failover branch `(new_uuid, high_seqno)`; any change starts a new
    /// checkpoint.
    pub(crate) fn set_state(&mut self, state: VbucketState, new_uuid: u64) {
        if state == VbucketState::Active && self.state != VbucketState::Active {
            push_branch(&mut self.failover, new_uuid, self.high_seqno);
        }
        self.state = state;
        self.checkpoints.new_checkpoint(self.high_seqno + 1);
    }

    /// Fails the vbucket over: forgets the last `lose_last` seqnos (never
    /// below what memory holds: older items are persisted), then adds the
    /// branch `(new_uuid, s)` where `s` is the end of the last complete
    /// snapshot (checkpoint) at or below the new high seqno. Memory comes
    /// back empty, as after a warm-up: everything up to the new high seqno
    /// streams from disk.
    pub(crate) fn failover(&mut self, lose_last: u64, new_uuid: u64) -> FailoverEntry {
        let floor = self.checkpoints.low_seqno().saturating_sub(1);
        let new_high = self.high_seqno.saturating_sub(lose_last).max(floor);
        let branch = match self.checkpoints.range_of(new_high, self.high_seqno) {
            Some((_, end)) if end == new_high => new_high,
            Some((start, _)) => start.saturating_sub(1),
            None => new_high,
        };
        self.promote(new_high, branch, new_uuid)
    }

    /// Fails the vbucket over to a lagging replica: one that completed a
    /// snapshot ending at `seqno` and holds nothing after it. The branch is
    /// exactly there, whatever this vbucket's own checkpoints were, so it can
    /// fall inside a snapshot a client was sent (never below what memory
    /// holds, as for [`Self::failover`]).
    pub(crate) fn failover_to(&mut self, seqno: u64, new_uuid: u64) -> FailoverEntry {
        let floor = self.checkpoints.low_seqno().saturating_sub(1);
        let new_high = seqno.min(self.high_seqno).max(floor);
        self.promote(new_high, new_high, new_uuid)
    }

    /// Keeps history up to `new_high`, starts the branch `(new_uuid,
    /// branch)` and becomes active with empty memory.
    fn promote(&mut self, new_high: u64, branch: u64, new_uuid: u64) -> FailoverEntry {
        self.disk.truncate(new_high);
        self.sync.truncate(new_high);
        self.checkpoints.reset(new_high);
        self.high_seqno = new_high;
        push_branch(&mut self.failover, new_uuid, branch);
        self.state = VbucketState::Active;
        FailoverEntry {
            vbucket_uuid: new_uuid,
            seqno: branch,
        }
    }

    /// Purges tombstones at or below `up_to`; returns the purge seqno.
    /// Compaction also erases the documents of dropped (and flushed)
    /// collections.
    pub(crate) fn purge(&mut self, up_to: u64) -> u64 {
        let aborts = self.sync.purge_aborts(up_to, self.checkpoints.low_seqno());
        self.disk.raise_purge_seqno(aborts);
        self.erase_dropped_collections();
        self.disk.purge(up_to)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::bucket::document::DocumentKind;
    use crate::codec::Datatype;

    pub(crate) fn doc(key: &str) -> Document {
        Document {
            key: Bytes::copy_from_slice(key.as_bytes()),
            collection: 0,
            value: Bytes::from_static(b"v"),
            datatype: Datatype::RAW,
            flags: 0,
            expiry: 0,
            cas: 0,
            rev_seqno: 1,
            seqno: 0,
            kind: DocumentKind::Mutation,
            delete_time: 0,
        }
    }

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_secs(secs)
    }

    #[test]
    fn seqnos_and_cas_increase() {
        let mut vb = VBucket::new(0, 0xaa, 100, 10);
        let a = vb.commit(doc("a"), t(100));
        let b = vb.commit(doc("b"), t(100));
        assert_eq!((a.seqno, b.seqno), (1, 2));
        assert!(b.cas > a.cas);
        assert_eq!(a.cas, 100_000_000_000);
        assert_eq!(vb.high_seqno(), 2);
        assert_eq!(vb.uuid(), 0xaa);
    }

    #[test]
    fn failover_branches_at_the_last_complete_snapshot() {
        // Checkpoints of 3 items: [1..3] [4..6] [7..].
        let mut vb = VBucket::new(0, 0xaa, 3, 10);
        for i in 1..=8 {
            vb.commit(doc(&format!("k{i}")), t(1));
        }
        // Lose 2: new high 6, which ends checkpoint [4..6].
        let entry = vb.failover(2, 0xbb);
        assert_eq!(entry.seqno, 6);
        assert_eq!(vb.high_seqno(), 6);
        assert!(vb.peek(b"k7").is_none());
        // Memory came back empty (warm-up): everything is persisted, so a
        // second failover loses nothing.
        let entry = vb.failover(5, 0xcc);
        assert_eq!((entry.seqno, vb.high_seqno()), (6, 6));
        // New checkpoints [7..9] [10..]; lose 1 of 11: new high 10,
        // mid-checkpoint -> branch at 9.
        for i in 7..=11 {
            vb.commit(doc(&format!("n{i}")), t(1));
        }
        let entry = vb.failover(1, 0xdd);
        assert_eq!((entry.seqno, vb.high_seqno()), (9, 10));
        let log: Vec<(u64, u64)> = vb
            .failover_log()
            .iter()
            .map(|e| (e.vbucket_uuid, e.seqno))
            .collect();
        assert_eq!(log, vec![(0xdd, 9), (0xcc, 6), (0xbb, 6), (0xaa, 0)]);
        assert_eq!(vb.commit(doc("n"), t(1)).seqno, 11);
    }

    /// Regression (found by `tests/model.rs`): checkpoints of 2 items, `k0`
    /// rewritten until its checkpoint held only `k0@7`; losing seqno 7
    /// restored `k0@6` on disk, but memory, merely truncated, claimed to
    /// serve seqnos 3..=6 and had nothing there: a stream at 2 never got
    /// `k0@6`.
    #[test]
    fn failover_streams_versions_that_dedup_hid_from_memory() {
        let mut vb = VBucket::new(0, 0xaa, 2, 2);
        vb.commit(doc("k1"), t(1));
        for _ in 2..=7 {
            vb.commit(doc("k0"), t(1));
        }
        let entry = vb.failover(1, 0xbb);
        assert_eq!((vb.high_seqno(), entry.seqno), (6, 2));
        // A stream at 2 cannot read memory: it backfills, and sees k0@6.
        assert!(vb.memory_low_seqno() > 3);
        assert!(vb.batch(2).is_none());
        let scan = vb.scan(2, 6, 10);
        let seqnos: Vec<u64> = scan.items.iter().map(|d| d.seqno).collect();
        assert_eq!(seqnos, vec![6]);
        assert_eq!(vb.commit(doc("n"), t(1)).seqno, 7);
        assert_eq!(vb.batch(6).map(|b| b.items.len()), Some(1));
    }

    #[test]
    fn becoming_active_again_branches() {
        let mut vb = VBucket::new(0, 0xaa, 3, 10);
        vb.commit(doc("a"), t(1));
        vb.set_state(VbucketState::Replica, 0xbb);
        assert_eq!(vb.failover_log().len(), 1);
        vb.set_state(VbucketState::Active, 0xcc);
        assert_eq!(
            vb.failover_log().newest(),
            Some(&FailoverEntry {
                vbucket_uuid: 0xcc,
                seqno: 1
            })
        );
    }
}
