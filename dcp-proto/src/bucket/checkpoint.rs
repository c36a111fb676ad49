//! The in-memory half of a vbucket: a list of checkpoints, each a
//! deduplicated run of recent versions. Streams read memory snapshots from
//! here; a stream whose position fell below the oldest checkpoint must
//! backfill from disk first.
//!
//! A checkpoint covers the seqnos from its `start` up to the next
//! checkpoint's start (the open, newest checkpoint: up to the high seqno).
//! Inside a checkpoint a key appears at most once: writing a key again
//! removes its older version from the checkpoint (deduplication).

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

use super::collections::index_key;
use super::document::Document;

/// One checkpoint.
#[derive(Debug, Clone)]
struct Checkpoint {
    /// The first seqno the checkpoint covers (it may never hold an item at
    /// that seqno: dedup can move it).
    start: u64,
    /// The versions, by seqno.
    items: BTreeMap<u64, Arc<Document>>,
    /// (Collection, key) -> the seqno of its version in `items`.
    keys: HashMap<(u32, Bytes), u64>,
    /// Keys with a prepare or abort in `items` (the prepared namespace,
    /// never deduplicated).
    prepared_keys: HashSet<Bytes>,
}

impl Checkpoint {
    fn new(start: u64) -> Self {
        Self {
            start,
            items: BTreeMap::new(),
            keys: HashMap::new(),
            prepared_keys: HashSet::new(),
        }
    }
}

/// The items of one checkpoint after a position: what a memory snapshot
/// carries.
#[derive(Debug, Clone)]
pub(crate) struct Batch {
    /// The checkpoint's first seqno.
    pub(crate) checkpoint_start: u64,
    /// Whether the batch starts at the checkpoint's beginning (the marker
    /// then carries the Checkpoint flag and starts at `checkpoint_start`).
    pub(crate) at_checkpoint_start: bool,
    /// The items, ascending by seqno; never empty.
    pub(crate) items: Vec<Arc<Document>>,
}

/// The checkpoint list of one vbucket.
#[derive(Debug, Clone)]
pub(crate) struct Checkpoints {
    list: VecDeque<Checkpoint>,
    max_items: usize,
    max_checkpoints: usize,
}

impl Checkpoints {
    /// An empty list whose open checkpoint starts at `start`; a checkpoint
    /// closes at `max_items` items and at most `max_checkpoints` are kept
    /// (both at least 1).
    pub(crate) fn new(start: u64, max_items: usize, max_checkpoints: usize) -> Self {
        let mut list = VecDeque::new();
        list.push_back(Checkpoint::new(start));
        Self {
            list,
            max_items: max_items.max(1),
            max_checkpoints: max_checkpoints.max(1),
        }
    }

    /// The lowest seqno memory can serve: the oldest checkpoint's start.
    pub(crate) fn low_seqno(&self) -> u64 {
        self.list.front().map_or(1, |c| c.start)
    }

    /// Number of checkpoints (open one included).
    pub(crate) fn len(&self) -> usize {
        self.list.len()
    }

    /// Number of items held in memory.
    pub(crate) fn item_count(&self) -> usize {
        self.list.iter().map(|c| c.items.len()).sum()
    }

    /// Adds a new version to the open checkpoint (deduplicating its key),
    /// then closes the checkpoint if it is full and drops the oldest ones
    /// beyond the limit.
    pub(crate) fn queue(&mut self, item: Arc<Document>) {
        let seqno = item.seqno;
        let Some(open) = self.list.back_mut() else {
            return;
        };
        // System events are not deduplicated in memory: a stream sees a
        // collection's create before its drop (disk keeps the latest).
        if !item.is_system_event()
            && let Some(old) = open.keys.insert(index_key(&item), seqno)
        {
            open.items.remove(&old);
        }
        open.items.insert(seqno, item);
        if open.items.len() >= self.max_items {
            self.list.push_back(Checkpoint::new(seqno + 1));
        }
        self.trim();
    }

    /// Adds a prepare or an abort (the prepared namespace): it never
    /// deduplicates a committed item of its key, and a second prepared
    /// item of a key closes the open checkpoint first, as prepares are
    /// never deduplicated.
    pub(crate) fn queue_prepared(&mut self, item: Arc<Document>) {
        let seqno = item.seqno;
        if self
            .list
            .back()
            .is_some_and(|open| open.prepared_keys.contains(&item.key))
        {
            self.list.push_back(Checkpoint::new(seqno));
        }
        let Some(open) = self.list.back_mut() else {
            return;
        };
        open.prepared_keys.insert(item.key.clone());
        open.items.insert(seqno, item);
        if open.items.len() >= self.max_items {
            self.list.push_back(Checkpoint::new(seqno + 1));
        }
        self.trim();
    }

    /// Closes the open checkpoint (if it holds anything) and opens a new one
    /// at `next_seqno`, as a vbucket state change or a failover does.
    pub(crate) fn new_checkpoint(&mut self, next_seqno: u64) {
        match self.list.back_mut() {
            Some(open) if open.items.is_empty() => open.start = next_seqno,
            _ => self.list.push_back(Checkpoint::new(next_seqno)),
        }
        self.trim();
    }

    /// Drops the oldest checkpoints beyond the limit (the open one stays).
    fn trim(&mut self) {
        while self.list.len() > self.max_checkpoints {
            self.list.pop_front();
        }
    }

    /// The items of the checkpoint holding `after + 1` with seqno above
    /// `after`, or `None` if memory cannot serve `after + 1` (below the
    /// oldest checkpoint) or nothing new is there yet.
    pub(crate) fn batch(&self, after: u64) -> Option<Batch> {
        let next = after.checked_add(1)?;
        if next < self.low_seqno() {
            return None;
        }
        let index = self.list.iter().rposition(|c| c.start <= next)?;
        // A closed checkpoint always ends with an item at its last seqno
        // (the newest version of a key is never deduplicated away), so an
        // empty result can only be the open checkpoint.
        let checkpoint = self.list.get(index)?;
        let items: Vec<Arc<Document>> = checkpoint
            .items
            .range(next..)
            .map(|(_, item)| Arc::clone(item))
            .collect();
        if items.is_empty() {
            return None;
        }
        Some(Batch {
            checkpoint_start: checkpoint.start,
            at_checkpoint_start: next == checkpoint.start,
            items,
        })
    }

    /// The snapshot (checkpoint) range holding `seqno`: `(start, end)`,
    /// where `end` is the seqno before the next checkpoint's start (or
    /// `high` for the open one). `None` below memory.
    pub(crate) fn range_of(&self, seqno: u64, high: u64) -> Option<(u64, u64)> {
        let index = self.list.iter().rposition(|c| c.start <= seqno)?;
        let start = self.list.get(index)?.start;
        let end = self
            .list
            .get(index + 1)
            .map_or(high, |next| next.start.saturating_sub(1));
        Some((start, end))
    }

    /// Forgets everything in memory and opens a new checkpoint at
    /// `seqno + 1`, as a failover (a crash and warm-up) does. Memory cannot
    /// just drop the lost tail: a lost version may have deduplicated an
    /// older, surviving one out of its checkpoint, which only disk still
    /// has; streams below `seqno + 1` backfill from disk.
    pub(crate) fn reset(&mut self, seqno: u64) {
        self.list.clear();
        self.list.push_back(Checkpoint::new(seqno + 1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::document::DocumentKind;
    use crate::codec::Datatype;

    pub(crate) fn item(key: &str, seqno: u64) -> Arc<Document> {
        Arc::new(Document {
            key: Bytes::copy_from_slice(key.as_bytes()),
            collection: 0,
            value: Bytes::new(),
            datatype: Datatype::RAW,
            flags: 0,
            expiry: 0,
            cas: seqno,
            rev_seqno: 1,
            seqno,
            kind: DocumentKind::Mutation,
            delete_time: 0,
        })
    }

    fn seqnos(batch: &Batch) -> Vec<u64> {
        batch.items.iter().map(|i| i.seqno).collect()
    }

    #[test]
    fn dedup_within_the_open_checkpoint() {
        let mut c = Checkpoints::new(1, 10, 10);
        c.queue(item("a", 1));
        c.queue(item("b", 2));
        c.queue(item("a", 3));
        let batch = c.batch(0).unwrap();
        assert!(batch.at_checkpoint_start);
        assert_eq!(seqnos(&batch), vec![2, 3]);
        // A reader that already had 2 sees only 3.
        let batch = c.batch(2).unwrap();
        assert!(!batch.at_checkpoint_start);
        assert_eq!(seqnos(&batch), vec![3]);
        assert!(c.batch(3).is_none());
    }

    #[test]
    fn checkpoints_close_when_full_and_old_ones_go() {
        let mut c = Checkpoints::new(1, 2, 2);
        for s in 1..=5 {
            c.queue(item(&format!("k{s}"), s));
        }
        // [1,2] closed, [3,4] closed, [5..] open; limit 2 keeps [3,4],[5].
        assert_eq!(c.len(), 2);
        assert_eq!(c.low_seqno(), 3);
        assert!(c.batch(1).is_none(), "below memory");
        let batch = c.batch(2).unwrap();
        assert_eq!((batch.checkpoint_start, seqnos(&batch)), (3, vec![3, 4]));
        let batch = c.batch(4).unwrap();
        assert_eq!((batch.checkpoint_start, seqnos(&batch)), (5, vec![5]));
        assert_eq!(c.range_of(4, 5), Some((3, 4)));
        assert_eq!(c.range_of(5, 5), Some((5, 5)));
        assert_eq!(c.item_count(), 3);
    }

    #[test]
    fn reset_forgets_everything() {
        let mut c = Checkpoints::new(1, 3, 10);
        for s in 1..=7 {
            c.queue(item(&format!("k{s}"), s));
        }
        c.reset(5);
        assert_eq!((c.low_seqno(), c.len(), c.item_count()), (6, 1, 0));
        assert!(c.batch(3).is_none(), "below memory");
        c.queue(item("n", 6));
        let batch = c.batch(5).unwrap();
        assert!(batch.at_checkpoint_start);
        assert_eq!(seqnos(&batch), vec![6]);
    }
}
