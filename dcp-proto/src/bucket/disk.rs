//! The "disk" half of a vbucket: the by-seqno index of every key's latest
//! version (tombstones included until purged), which backfills scan, plus
//! the key index (the hash table).
//!
//! Older versions are kept while something may still need them (multi-
//! version): a running backfill reads the vbucket as it was at its snapshot
//! end, so it must still see a version that a later write superseded; and a
//! failover that loses unpersisted items must restore the versions those
//! items replaced. A superseded version is forgotten once its successor is
//! older than memory's oldest checkpoint and no backfill's snapshot needs
//! it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

use super::collections::index_key;
use super::document::Document;

/// A stored version and its links to the versions of the same key.
#[derive(Debug, Clone)]
struct Version {
    item: Arc<Document>,
    /// The seqno of the version that replaced this one.
    superseded_by: Option<u64>,
    /// The seqno of the version this one replaced (if still stored).
    supersedes: Option<u64>,
}

/// The by-seqno store of one vbucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    by_seqno: BTreeMap<u64, Version>,
    /// Collection -> key -> seqno of its latest version (system events are
    /// indexed by their identity in the system-event namespace).
    by_key: HashMap<u32, HashMap<Bytes, u64>>,
    /// Number of keys in `by_key`.
    keys: usize,
    /// Superseding seqno -> superseded seqno, for garbage collection.
    superseded: BTreeMap<u64, u64>,
    /// Highest seqno of a purged tombstone.
    purge_seqno: u64,
    /// Snapshot ends of running backfills (with counts).
    pins: BTreeMap<u64, usize>,
    /// Live (non-deleted) latest versions.
    live: usize,
}

/// One step of a backfill scan.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Versions visible at the snapshot end, ascending.
    pub(crate) items: Vec<Arc<Document>>,
    /// The last seqno examined (resume after it).
    pub(crate) cursor: u64,
}

impl Disk {
    /// The latest version of `key` in `collection` (possibly a tombstone).
    pub(crate) fn get(&self, collection: u32, key: &[u8]) -> Option<&Arc<Document>> {
        let seqno = self.by_key.get(&collection)?.get(key)?;
        self.by_seqno.get(seqno).map(|v| &v.item)
    }

    /// Indexes `item`'s key at `seqno`; returns the seqno it replaced.
    fn index_insert(&mut self, item: &Document, seqno: u64) -> Option<u64> {
        let (collection, key) = index_key(item);
        let previous = self
            .by_key
            .entry(collection)
            .or_default()
            .insert(key, seqno);
        if previous.is_none() {
            self.keys += 1;
        }
        previous
    }

    /// Removes `item`'s key from the index.
    fn index_remove(&mut self, item: &Document) {
        let (collection, key) = index_key(item);
        if let Some(keys) = self.by_key.get_mut(&collection) {
            if keys.remove(&key).is_some() {
                self.keys -= 1;
            }
            if keys.is_empty() {
                self.by_key.remove(&collection);
            }
        }
    }

    /// The purge seqno.
    pub(crate) fn purge_seqno(&self) -> u64 {
        self.purge_seqno
    }

    /// Number of live documents.
    pub(crate) fn live_count(&self) -> usize {
        self.live
    }

    /// Number of latest versions that are tombstones.
    pub(crate) fn tombstone_count(&self) -> usize {
        self.keys - self.live
    }

    /// Number of stored versions (latest and superseded).
    #[cfg(test)]
    pub(crate) fn version_count(&self) -> usize {
        self.by_seqno.len()
    }

    /// Iterates the latest versions (live and tombstones), by seqno.
    pub(crate) fn latest(&self) -> impl Iterator<Item = &Arc<Document>> {
        self.by_seqno
            .values()
            .filter(|v| v.superseded_by.is_none())
            .map(|v| &v.item)
    }

    /// Stores a new latest version of its key.
    pub(crate) fn insert(&mut self, item: Arc<Document>) {
        let seqno = item.seqno;
        let previous = self.index_insert(&item, seqno);
        if let Some(old) = previous.and_then(|s| self.by_seqno.get_mut(&s)) {
            old.superseded_by = Some(seqno);
            if old.item.is_live() {
                self.live -= 1;
            }
        }
        if let Some(old) = previous {
            self.superseded.insert(seqno, old);
        }
        if item.is_live() {
            self.live += 1;
        }
        self.by_seqno.insert(
            seqno,
            Version {
                item,
                superseded_by: None,
                supersedes: previous,
            },
        );
    }

    /// Up to `limit` versions with seqno in `(after, end]` as the vbucket
    /// was at seqno `end`.
    pub(crate) fn scan(&self, after: u64, end: u64, limit: usize) -> Scan {
        let mut items = Vec::new();
        let mut cursor = end;
        if after >= end {
            return Scan { items, cursor };
        }
        for (&seqno, version) in self.by_seqno.range(after + 1..=end) {
            if items.len() >= limit {
                cursor = seqno - 1;
                break;
            }
            if version.superseded_by.is_none_or(|s| s > end) {
                items.push(Arc::clone(&version.item));
            }
        }
        Scan { items, cursor }
    }

    /// Keeps the versions a backfill reading the vbucket as of `end` needs.
    pub(crate) fn pin(&mut self, end: u64) {
        *self.pins.entry(end).or_default() += 1;
    }

    /// Releases a [`pin`](Self::pin).
    pub(crate) fn unpin(&mut self, end: u64) {
        if let Some(count) = self.pins.get_mut(&end) {
            *count -= 1;
            if *count == 0 {
                self.pins.remove(&end);
            }
        }
    }

    /// The lowest pinned snapshot end, if a backfill runs.
    pub(crate) fn lowest_pin(&self) -> Option<u64> {
        self.pins.first_key_value().map(|(&end, _)| end)
    }

    /// Raises the purge seqno to `seqno` (purged items outside this
    /// store: aborted sync writes).
    pub(crate) fn raise_purge_seqno(&mut self, seqno: u64) {
        self.purge_seqno = self.purge_seqno.max(seqno);
    }

    /// Releases every pin (a copy of the vbucket installed on another node
    /// carries none of this node's backfills).
    pub(crate) fn unpin_all(&mut self) {
        self.pins.clear();
    }

    /// Forgets superseded versions whose successor is at or below
    /// `memory_low - 1` and at or below every pinned snapshot end.
    pub(crate) fn collect_garbage(&mut self, memory_low: u64) {
        let mut limit = memory_low.saturating_sub(1);
        if let Some((&pin, _)) = self.pins.first_key_value() {
            limit = limit.min(pin);
        }
        while let Some(entry) = self.superseded.first_entry() {
            if *entry.key() > limit {
                break;
            }
            let (newer, old) = entry.remove_entry();
            self.by_seqno.remove(&old);
            if let Some(v) = self.by_seqno.get_mut(&newer) {
                v.supersedes = None;
            }
        }
    }

    /// Erases every stored version of the keys whose latest version
    /// `erase` selects (documents of a dropped collection, as compaction
    /// does); returns how many keys went. The purge seqno does not move:
    /// a stream behind learns of the drop from its system event.
    pub(crate) fn erase_where(&mut self, erase: impl Fn(&Document) -> bool) -> usize {
        let doomed: Vec<u64> = self
            .by_seqno
            .iter()
            .filter(|(_, v)| v.superseded_by.is_none() && !v.item.is_system_event())
            .filter(|(_, v)| erase(&v.item))
            .map(|(&s, _)| s)
            .collect();
        for &latest in &doomed {
            let mut next = Some(latest);
            while let Some(seqno) = next {
                let Some(v) = self.by_seqno.remove(&seqno) else {
                    break;
                };
                self.superseded.remove(&seqno);
                if seqno == latest {
                    if v.item.is_live() {
                        self.live -= 1;
                    }
                    self.index_remove(&v.item);
                }
                next = v.supersedes;
            }
        }
        doomed.len()
    }

    /// Purges the latest-version tombstones at or below `up_to`; returns the
    /// new purge seqno (the highest purged tombstone's seqno, never lower
    /// than before).
    pub(crate) fn purge(&mut self, up_to: u64) -> u64 {
        let purged: Vec<u64> = self
            .by_seqno
            .range(..=up_to)
            .filter(|(_, v)| v.superseded_by.is_none() && v.item.is_deleted())
            .map(|(&s, _)| s)
            .collect();
        for seqno in purged {
            if let Some(v) = self.by_seqno.remove(&seqno) {
                self.index_remove(&v.item);
                // The version the tombstone replaced stays, superseded, for
                // reads as of a seqno below the tombstone and for a
                // failover that loses it, until garbage collection.
                self.purge_seqno = self.purge_seqno.max(seqno);
            }
        }
        self.purge_seqno
    }

    /// Forgets every version above `seqno`, restoring the versions they
    /// replaced (unpersisted writes lost in a crash), purged tombstones
    /// included.
    pub(crate) fn truncate(&mut self, seqno: u64) {
        let lost: Vec<u64> = self
            .by_seqno
            .range(seqno.saturating_add(1)..)
            .map(|(&s, _)| s)
            .rev()
            .collect();
        for s in lost {
            let Some(v) = self.by_seqno.remove(&s) else {
                continue;
            };
            if v.superseded_by.is_some() {
                // Superseded by a newer lost version, which restored it
                // already; nothing refers to it any more.
                continue;
            }
            if v.item.is_live() {
                self.live -= 1;
            }
            self.superseded.remove(&s);
            match v
                .supersedes
                .and_then(|old| self.by_seqno.get_mut(&old).map(|o| (old, o)))
            {
                Some((old, restored)) => {
                    restored.superseded_by = None;
                    if restored.item.is_live() {
                        self.live += 1;
                    }
                    self.index_insert(&v.item, old);
                }
                None => {
                    self.index_remove(&v.item);
                }
            }
        }
        // Purged tombstones above `seqno` are lost as well: the versions
        // they replaced come back.
        let orphans: Vec<(u64, u64)> = self
            .superseded
            .range(seqno.saturating_add(1)..)
            .map(|(&newer, &old)| (newer, old))
            .collect();
        for (newer, old) in orphans {
            self.superseded.remove(&newer);
            if let Some(restored) = self.by_seqno.get_mut(&old) {
                restored.superseded_by = None;
                if restored.item.is_live() {
                    self.live += 1;
                }
                let item = Arc::clone(&restored.item);
                self.index_insert(&item, old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::document::DocumentKind;
    use crate::codec::Datatype;

    fn item(key: &str, seqno: u64, deleted: bool) -> Arc<Document> {
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
            kind: if deleted {
                DocumentKind::Deletion
            } else {
                DocumentKind::Mutation
            },
            delete_time: 0,
        })
    }

    fn seqnos(scan: &Scan) -> Vec<u64> {
        scan.items.iter().map(|i| i.seqno).collect()
    }

    #[test]
    fn scans_see_the_snapshot_they_started_with() {
        let mut d = Disk::default();
        d.insert(item("a", 1, false));
        d.insert(item("b", 2, false));
        d.insert(item("a", 3, false));
        // As of 2: a@1, b@2. As of 3: b@2, a@3.
        assert_eq!(seqnos(&d.scan(0, 2, 10)), vec![1, 2]);
        assert_eq!(seqnos(&d.scan(0, 3, 10)), vec![2, 3]);
        // Paging.
        let first = d.scan(0, 3, 1);
        assert_eq!((seqnos(&first), first.cursor), (vec![2], 2));
        assert_eq!(seqnos(&d.scan(first.cursor, 3, 1)), vec![3]);
        // GC keeps a@1 while a backfill pinned at 2 runs.
        d.pin(2);
        d.collect_garbage(100);
        assert_eq!(seqnos(&d.scan(0, 2, 10)), vec![1, 2]);
        d.unpin(2);
        d.collect_garbage(100);
        assert_eq!(seqnos(&d.scan(0, 2, 10)), vec![2]);
        assert_eq!(d.version_count(), 2);
        assert_eq!(d.live_count(), 2);
    }

    #[test]
    fn purge_drops_old_tombstones() {
        let mut d = Disk::default();
        d.insert(item("a", 1, false));
        d.insert(item("a", 2, true));
        d.insert(item("b", 3, true));
        d.insert(item("c", 4, false));
        assert_eq!(d.tombstone_count(), 2);
        assert_eq!(d.purge(2), 2);
        assert!(d.get(0, b"a").is_none());
        assert_eq!(d.purge(1), 2, "never goes down");
        assert_eq!(d.purge(10), 3);
        assert_eq!(seqnos(&d.scan(0, 4, 10)), vec![4]);
        assert_eq!(d.tombstone_count(), 0);
    }

    /// Regression (found by `tests/model.rs`): purging a tombstone also
    /// dropped the version it replaced, so a backfill reading as of a seqno
    /// below the tombstone (memory low - 1) sent a snapshot missing a key,
    /// a state the vbucket never had; and a failover that lost the
    /// tombstone lost the key with it.
    #[test]
    fn purged_tombstones_keep_older_reads_and_failovers_whole() {
        let mut d = Disk::default();
        d.insert(item("a", 1, false));
        d.insert(item("b", 2, false));
        d.insert(item("a", 3, true));
        d.insert(item("b", 4, false));
        assert_eq!(d.purge(4), 3);
        assert!(d.get(0, b"a").is_none());
        assert_eq!(d.tombstone_count(), 0);
        // As of 2 the vbucket held a@1 and b@2; as of 4 only b@4.
        assert_eq!(seqnos(&d.scan(0, 2, 10)), vec![1, 2]);
        assert_eq!(seqnos(&d.scan(0, 4, 10)), vec![4]);
        // Once nothing reads below the tombstone, a@1 goes.
        let mut collected = d.clone();
        collected.collect_garbage(5);
        assert_eq!(collected.version_count(), 1);
        // Losing 3 and 4 brings a@1 and b@2 back.
        d.truncate(2);
        assert_eq!(d.get(0, b"a").map(|i| i.seqno), Some(1));
        assert_eq!(seqnos(&d.scan(0, 10, 10)), vec![1, 2]);
        assert_eq!((d.live_count(), d.tombstone_count()), (2, 0));
        assert_eq!(d.version_count(), 2);
    }

    #[test]
    fn truncate_restores_replaced_versions() {
        let mut d = Disk::default();
        d.insert(item("a", 1, false));
        d.insert(item("b", 2, false));
        d.insert(item("a", 3, true));
        d.insert(item("a", 4, false));
        d.insert(item("c", 5, false));
        d.truncate(2);
        assert_eq!(d.get(0, b"a").map(|i| i.seqno), Some(1));
        assert!(d.get(0, b"c").is_none());
        assert_eq!(seqnos(&d.scan(0, 10, 10)), vec![1, 2]);
        assert_eq!((d.live_count(), d.tombstone_count()), (2, 0));
        d.insert(item("a", 3, false));
        assert_eq!(seqnos(&d.scan(0, 10, 10)), vec![2, 3]);
    }
}
