//! Synchronous (durable) writes: a write with a durability level first
//! takes a seqno as a PREPARE, which is pending (reads still see the
//! previous committed version, and other writes of the key fail with
//! SyncWriteInProgress), then is COMMITTED at a new seqno (the document
//! becomes visible) or ABORTED at a new seqno.
//!
//! # Where the items live
//!
//! As on a data node, prepares and aborts live in a separate key namespace
//! (the "prepared" namespace): in memory checkpoints they never deduplicate
//! committed items, and a prepare or abort of a key that already has one in
//! the open checkpoint closes the checkpoint (prepares are never
//! deduplicated). A commit is an ordinary committed item (a mutation or a
//! deletion) at its own seqno, remembered as the commit of its prepare, so
//! memory snapshots can send it as COMMIT; disk backfills send it as a plain
//! MUTATION/DELETION (behavior.md §7).
//!
//! On "disk" the prepared namespace holds, per key, the latest prepare or
//! abort. A backfill reading as of seqno `end` sends the prepares still
//! pending at `end` and the aborts (until purged, like tombstones); a
//! prepare completed at or before `end` is not sent (its commit is the
//! mutation).
//!
//! # Visible seqnos
//!
//! The max visible seqno (MVS) of a snapshot ending at `end` is the highest
//! committed seqno at or below `end`; the high completed seqno (HCS) is the
//! highest prepare seqno completed at or before `end`. Both go into v2.0
//! markers; a disk snapshot for a client without sync writes ends at the
//! MVS. The bucket keeps, per vbucket, the runs of prepared-namespace
//! seqnos and the completion history for this (a few bytes per sync write,
//! never collected).
//!
//! # Completion
//!
//! With no replicas a majority is the active alone, so by default
//! ([`SyncWriteMode::Immediate`]) a prepare commits at once. In
//! [`SyncWriteMode::Hold`] prepares stay pending until
//! [`Bucket::commit_sync_write`](super::Bucket::commit_sync_write) or
//! [`Bucket::abort_sync_write`](super::Bucket::abort_sync_write) (what a
//! durability timeout does).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;

use super::document::{Document, DocumentKind};
use super::error::BucketError;
use super::vbucket::{VBucket, unix_nanos, unix_secs};
use super::write::{MutationInfo, StoreMode, WriteOptions};
use crate::codec::DurabilityLevel;

/// When prepares complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SyncWriteMode {
    /// Commit at once (no replicas: the active alone is a majority).
    #[default]
    Immediate,
    /// Keep prepares pending until committed or aborted explicitly.
    Hold,
}

/// What a sync write in the prepared namespace is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SyncRecord {
    /// A prepare; `completed_at` is the seqno of its commit or abort.
    Prepare {
        level: DurabilityLevel,
        completed_at: Option<u64>,
        /// The seqno of the next prepared-namespace item of the key.
        superseded_by: Option<u64>,
    },
    /// The commit of the prepare at `prepared_seqno` (a committed item).
    Commit { prepared_seqno: u64 },
    /// The abort of the prepare at `prepared_seqno`.
    Abort {
        prepared_seqno: u64,
        superseded_by: Option<u64>,
    },
}

/// A record and, for prepares and aborts, their document.
#[derive(Debug, Clone)]
struct Entry {
    record: SyncRecord,
    /// Prepares and aborts (commits live on disk as committed items).
    doc: Option<Arc<Document>>,
}

/// The sync-write state of one vbucket.
#[derive(Debug, Clone, Default)]
pub(crate) struct Durability {
    /// Prepares, commits and aborts by seqno.
    entries: BTreeMap<u64, Entry>,
    /// Key -> seqno of its pending prepare.
    pending: HashMap<Bytes, u64>,
    /// Key -> seqno of its latest prepared-namespace item.
    latest: HashMap<Bytes, u64>,
    /// Runs `start -> end` of consecutive prepared-namespace seqnos.
    hidden: BTreeMap<u64, u64>,
    /// Completion seqno -> high completed seqno from then on.
    completions: BTreeMap<u64, u64>,
    /// Every prepare's seqno (kept when the prepare itself is collected):
    /// the high prepared seqno as of any point.
    prepares: BTreeSet<u64>,
    /// The bounds of the last garbage collection and the number of
    /// entries then: nothing new to collect while they are unchanged.
    last_gc: (u64, u64, usize),
}

/// A prepared-namespace item a backfill sends.
#[derive(Debug, Clone)]
pub(crate) struct PreparedItem {
    pub(crate) doc: Arc<Document>,
    pub(crate) record: SyncRecord,
}

impl Durability {
    /// The record at `seqno`, if it is a prepare, commit or abort.
    pub(crate) fn record(&self, seqno: u64) -> Option<SyncRecord> {
        if self.entries.is_empty() {
            return None;
        }
        self.entries.get(&seqno).map(|e| e.record)
    }

    /// Whether `key` has a pending prepare.
    pub(crate) fn is_pending(&self, key: &[u8]) -> bool {
        !self.pending.is_empty() && self.pending.contains_key(key)
    }

    fn hide(&mut self, seqno: u64) {
        if let Some(mut last) = self.hidden.last_entry()
            && *last.get() + 1 == seqno
        {
            *last.get_mut() = seqno;
            return;
        }
        self.hidden.insert(seqno, seqno);
    }

    /// The highest committed seqno at or below `end`.
    pub(crate) fn max_visible(&self, end: u64) -> u64 {
        match self.hidden.range(..=end).next_back() {
            Some((&start, &run_end)) if run_end >= end => start.saturating_sub(1),
            _ => end,
        }
    }

    /// The highest prepare seqno at or below `end` (completed or not): in
    /// this model every prepare is persisted as it is written.
    pub(crate) fn high_prepared(&self, end: u64) -> u64 {
        self.prepares
            .range(..=end)
            .next_back()
            .copied()
            .unwrap_or(0)
    }

    /// The highest prepare seqno completed at or before `end`.
    pub(crate) fn high_completed(&self, end: u64) -> u64 {
        self.completions
            .range(..=end)
            .next_back()
            .map_or(0, |(_, &hcs)| hcs)
    }

    /// The prepared-namespace items with seqno in `(after, upto]` as a
    /// backfill reading the vbucket as of `end` sends them.
    pub(crate) fn backfill_items(&self, after: u64, upto: u64, end: u64) -> Vec<PreparedItem> {
        if self.entries.is_empty() || after >= upto {
            return Vec::new();
        }
        let visible = |s: Option<u64>| s.is_none_or(|s| s > end);
        self.entries
            .range(after + 1..=upto)
            .filter_map(|(_, e)| {
                let keep = match e.record {
                    SyncRecord::Prepare {
                        completed_at,
                        superseded_by,
                        ..
                    } => visible(completed_at) && visible(superseded_by),
                    SyncRecord::Abort { superseded_by, .. } => visible(superseded_by),
                    SyncRecord::Commit { .. } => false,
                };
                let doc = e.doc.clone()?;
                keep.then_some(PreparedItem {
                    doc,
                    record: e.record,
                })
            })
            .collect()
    }

    /// Forgets what the vbucket no longer needs: commit records below
    /// memory (`memory_low`), and completed or superseded prepares and
    /// superseded aborts at or below `limit` (no memory checkpoint or
    /// running backfill reads below it).
    pub(crate) fn collect_garbage(&mut self, memory_low: u64, limit: u64) {
        if self.entries.is_empty() || self.last_gc == (memory_low, limit, self.entries.len()) {
            return;
        }
        let done = |s: Option<u64>| s.is_some_and(|s| s <= limit);
        let stale: Vec<u64> = self
            .entries
            .range(..memory_low)
            .filter(|(_, e)| match e.record {
                SyncRecord::Commit { .. } => true,
                SyncRecord::Prepare {
                    completed_at,
                    superseded_by,
                    ..
                } => done(completed_at) && (superseded_by.is_none() || done(superseded_by)),
                SyncRecord::Abort { superseded_by, .. } => done(superseded_by),
            })
            .map(|(&s, _)| s)
            .collect();
        for seqno in stale {
            if let Some(e) = self.entries.remove(&seqno)
                && let Some(doc) = e.doc
                && self.latest.get(&doc.key) == Some(&seqno)
            {
                self.latest.remove(&doc.key);
            }
        }
        self.last_gc = (memory_low, limit, self.entries.len());
    }

    /// Drops the aborts at or below `up_to` that are the latest item of
    /// their key (compaction purges them like tombstones); returns the
    /// highest purged seqno. Aborts memory still holds (at or above
    /// `memory_low`) stay: memory snapshots send them as aborts.
    pub(crate) fn purge_aborts(&mut self, up_to: u64, memory_low: u64) -> u64 {
        let up_to = up_to.min(memory_low.saturating_sub(1));
        let purged: Vec<u64> = self
            .entries
            .range(..=up_to)
            .filter(|(_, e)| {
                matches!(
                    e.record,
                    SyncRecord::Abort {
                        superseded_by: None,
                        ..
                    }
                )
            })
            .map(|(&s, _)| s)
            .collect();
        let mut highest = 0;
        for seqno in purged {
            if let Some(e) = self.entries.remove(&seqno)
                && let Some(doc) = e.doc
                && self.latest.get(&doc.key) == Some(&seqno)
            {
                self.latest.remove(&doc.key);
            }
            highest = seqno;
        }
        highest
    }

    /// Forgets everything above `seqno` (a failover losing unpersisted
    /// items): prepares whose completion was lost are pending again.
    pub(crate) fn truncate(&mut self, seqno: u64) {
        let above = seqno.saturating_add(1);
        self.entries.split_off(&above);
        self.completions.split_off(&above);
        self.prepares.split_off(&above);
        self.hidden.split_off(&above);
        if let Some(mut last) = self.hidden.last_entry()
            && *last.get() > seqno
        {
            *last.get_mut() = seqno;
        }
        let lost = |s: &mut Option<u64>| {
            if s.is_some_and(|s| s > seqno) {
                *s = None;
            }
        };
        self.pending.clear();
        self.latest.clear();
        for (&s, e) in self.entries.iter_mut() {
            match &mut e.record {
                SyncRecord::Prepare {
                    completed_at,
                    superseded_by,
                    ..
                } => {
                    lost(completed_at);
                    lost(superseded_by);
                }
                SyncRecord::Abort { superseded_by, .. } => lost(superseded_by),
                SyncRecord::Commit { .. } => {}
            }
            if let Some(doc) = &e.doc {
                self.latest.insert(doc.key.clone(), s);
            }
        }
        for (key, &s) in &self.latest {
            if let Some(Entry {
                record:
                    SyncRecord::Prepare {
                        completed_at: None, ..
                    },
                ..
            }) = self.entries.get(&s)
            {
                self.pending.insert(key.clone(), s);
            }
        }
    }

    /// Number of pending prepares.
    pub(crate) fn pending_count(&self) -> usize {
        self.pending.len()
    }

    /// The pending prepares, by seqno.
    pub(crate) fn pending_documents(&self) -> Vec<Arc<Document>> {
        let mut seqnos: Vec<u64> = self.pending.values().copied().collect();
        seqnos.sort_unstable();
        seqnos
            .into_iter()
            .filter_map(|s| self.entries.get(&s).and_then(|e| e.doc.clone()))
            .collect()
    }

    /// The seqno of `key`'s pending prepare.
    pub(crate) fn pending_seqno(&self, key: &[u8]) -> Option<u64> {
        self.pending.get(key).copied()
    }
}

/// A sync write accepted by the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncWriteInfo {
    /// The prepare (its seqno and CAS).
    pub prepared: MutationInfo,
    /// How it completed, if it did already.
    pub outcome: Option<SyncWriteOutcome>,
}

/// How a sync write completed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SyncWriteOutcome {
    /// Committed: the document became visible at this seqno.
    Committed(MutationInfo),
    /// Aborted at this seqno.
    Aborted(MutationInfo),
}

/// A completion the node reports to a client waiting on a sync write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Completion {
    pub(crate) vbucket: u16,
    pub(crate) prepared_seqno: u64,
    pub(crate) outcome: SyncWriteOutcome,
}

impl VBucket {
    /// The highest committed seqno at or below `end`.
    pub fn max_visible_seqno(&self, end: u64) -> u64 {
        self.sync.max_visible(end)
    }

    /// The highest prepare seqno at or below `end`, completed or not (a
    /// v2.2 disk marker's high prepared seqno).
    pub fn high_prepared_seqno(&self, end: u64) -> u64 {
        self.sync.high_prepared(end)
    }

    /// The highest prepare seqno completed at or before `end`.
    pub fn high_completed_seqno(&self, end: u64) -> u64 {
        self.sync.high_completed(end)
    }

    /// Number of pending prepares.
    pub fn pending_sync_writes(&self) -> usize {
        self.sync.pending_count()
    }

    /// The pending prepares (a prepared delete has kind
    /// [`DocumentKind::Deletion`]), by seqno.
    pub fn pending_documents(&self) -> Vec<Arc<Document>> {
        self.sync.pending_documents()
    }

    /// The sync-write record at `seqno` (prepare, commit or abort).
    pub(crate) fn sync_record(&self, seqno: u64) -> Option<SyncRecord> {
        self.sync.record(seqno)
    }

    /// The prepared-namespace items in `(after, upto]` a backfill reading
    /// as of `end` sends.
    pub(crate) fn prepared_items(&self, after: u64, upto: u64, end: u64) -> Vec<PreparedItem> {
        self.sync.backfill_items(after, upto, end)
    }

    /// Refuses a write of `key` while a sync write of it is in progress.
    pub(crate) fn check_no_sync_write(&self, key: &[u8]) -> Result<(), BucketError> {
        if self.sync.is_pending(key) {
            Err(BucketError::SyncWriteInProgress)
        } else {
            Ok(())
        }
    }

    /// Stores `doc` in the prepared namespace at the next seqno.
    fn queue_prepared(
        &mut self,
        mut doc: Document,
        record: SyncRecord,
        now: SystemTime,
    ) -> Arc<Document> {
        self.high_seqno += 1;
        self.max_cas = (self.max_cas + 1).max(unix_nanos(now));
        doc.seqno = self.high_seqno;
        doc.cas = self.max_cas;
        let doc = Arc::new(doc);
        let seqno = doc.seqno;
        if let Some(previous) = self.sync.latest.insert(doc.key.clone(), seqno)
            && let Some(e) = self.sync.entries.get_mut(&previous)
        {
            match &mut e.record {
                SyncRecord::Prepare { superseded_by, .. }
                | SyncRecord::Abort { superseded_by, .. } => *superseded_by = Some(seqno),
                SyncRecord::Commit { .. } => {}
            }
        }
        self.sync.entries.insert(
            seqno,
            Entry {
                record,
                doc: Some(Arc::clone(&doc)),
            },
        );
        self.sync.hide(seqno);
        self.checkpoints.queue_prepared(Arc::clone(&doc));
        self.collect_sync_garbage();
        doc
    }

    pub(crate) fn collect_sync_garbage(&mut self) {
        let low = self.checkpoints.low_seqno();
        let mut limit = low.saturating_sub(1);
        if let Some(pin) = self.disk.lowest_pin() {
            limit = limit.min(pin);
        }
        self.sync.collect_garbage(low, limit);
    }

    /// A durable SET / ADD / REPLACE: checks as the plain store does, then
    /// prepares the new version.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_store(
        &mut self,
        mode: StoreMode,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
        level: DurabilityLevel,
        max_value: usize,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_level(level)?;
        // Validate with the plain store's rules on a scratch copy of the
        // checks (no write happens on failure).
        super::write::check_key(&key)?;
        self.require_active()?;
        self.check_no_sync_write(&key)?;
        if value.len() > max_value {
            return Err(BucketError::ValueTooLarge {
                len: value.len(),
                max: max_value,
            });
        }
        let datatype = super::write::stored_datatype(&value, opts.datatype)?;
        let existing = self.live(&key, now);
        match mode {
            StoreMode::Add if opts.cas != 0 => return Err(BucketError::Invalid("CAS on ADD")),
            StoreMode::Add if existing.is_some() => return Err(BucketError::KeyExists),
            StoreMode::Replace if existing.is_none() => return Err(BucketError::KeyNotFound),
            _ => Self::check_cas(existing.as_ref(), opts.cas)?,
        }
        let doc = Document {
            rev_seqno: self.next_rev(&key),
            collection: self.write_collection,
            key,
            value,
            datatype,
            flags: opts.flags,
            expiry: self.expiry_for(opts.expiry, now),
            cas: 0,
            seqno: 0,
            kind: DocumentKind::Mutation,
            delete_time: 0,
        };
        Ok(self.prepare(doc, level, now))
    }

    /// A durable APPEND (`append`) or PREPEND: checks as the plain one
    /// does, then prepares the joined version.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_concat(
        &mut self,
        append: bool,
        key: Bytes,
        value: &[u8],
        cas: u64,
        level: DurabilityLevel,
        max_value: usize,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_level(level)?;
        let doc = self.concatenated(append, key, value, cas, max_value, now)?;
        Ok(self.prepare(doc, level, now))
    }

    /// A durable INCREMENT or DECREMENT: checks and computes as the plain
    /// one does, then prepares the new value (returned with the prepare).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_counter(
        &mut self,
        incr: bool,
        key: Bytes,
        delta: u64,
        initial: Option<u64>,
        expiry: u32,
        cas: u64,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> Result<(u64, MutationInfo), BucketError> {
        check_level(level)?;
        let (value, doc) = self.counted(incr, key, delta, initial, expiry, cas, now)?;
        Ok((value, self.prepare(doc, level, now)))
    }

    /// A durable DELETE: prepares a deletion.
    pub(crate) fn prepare_delete(
        &mut self,
        key: &[u8],
        cas: u64,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_level(level)?;
        super::write::check_key(key)?;
        self.require_active()?;
        self.check_no_sync_write(key)?;
        let existing = self.live(key, now).ok_or(BucketError::KeyNotFound)?;
        Self::check_cas(Some(&existing), cas)?;
        let (value, datatype) = super::document::tombstone_value(&existing);
        let doc = Document {
            key: existing.key.clone(),
            collection: existing.collection,
            value,
            datatype,
            flags: existing.flags,
            expiry: 0,
            cas: 0,
            rev_seqno: existing.rev_seqno + 1,
            seqno: 0,
            kind: DocumentKind::Deletion,
            delete_time: u32::try_from(unix_secs(now)).unwrap_or(u32::MAX),
        };
        Ok(self.prepare(doc, level, now))
    }

    pub(super) fn prepare(
        &mut self,
        doc: Document,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> MutationInfo {
        let doc = self.queue_prepared(
            doc,
            SyncRecord::Prepare {
                level,
                completed_at: None,
                superseded_by: None,
            },
            now,
        );
        self.sync.pending.insert(doc.key.clone(), doc.seqno);
        self.sync.prepares.insert(doc.seqno);
        self.sync_info(&doc)
    }

    fn sync_info(&self, doc: &Document) -> MutationInfo {
        MutationInfo {
            vbucket: self.id,
            vbucket_uuid: self.uuid(),
            seqno: doc.seqno,
            cas: doc.cas,
        }
    }

    fn take_pending(&mut self, key: &[u8]) -> Result<(u64, Arc<Document>), BucketError> {
        let seqno = self
            .sync
            .pending_seqno(key)
            .ok_or(BucketError::KeyNotFound)?;
        let doc = self
            .sync
            .entries
            .get(&seqno)
            .and_then(|e| e.doc.clone())
            .ok_or(BucketError::KeyNotFound)?;
        self.sync.pending.remove(key);
        Ok((seqno, doc))
    }

    fn complete(&mut self, prepared: u64, at: u64) {
        if let Some(Entry {
            record: SyncRecord::Prepare { completed_at, .. },
            ..
        }) = self.sync.entries.get_mut(&prepared)
        {
            *completed_at = Some(at);
        }
        let hcs = self.sync.high_completed(at).max(prepared);
        self.sync.completions.insert(at, hcs);
    }

    /// Commits `key`'s pending prepare: its version becomes visible at a
    /// new seqno.
    pub(crate) fn commit_prepared(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<(u64, MutationInfo), BucketError> {
        self.require_active()?;
        let (prepared, doc) = self.take_pending(key)?;
        let committed = self.commit(
            Document {
                cas: 0,
                seqno: 0,
                ..(*doc).clone()
            },
            now,
        );
        let at = committed.seqno;
        self.sync.entries.insert(
            at,
            Entry {
                record: SyncRecord::Commit {
                    prepared_seqno: prepared,
                },
                doc: None,
            },
        );
        self.complete(prepared, at);
        self.collect_sync_garbage();
        Ok((prepared, self.sync_info(&committed)))
    }

    /// Aborts `key`'s pending prepare at a new seqno.
    pub(crate) fn abort_prepared(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<(u64, MutationInfo), BucketError> {
        self.require_active()?;
        let (prepared, doc) = self.take_pending(key)?;
        let abort = self.queue_prepared(
            Document {
                key: doc.key.clone(),
                collection: doc.collection,
                value: Bytes::new(),
                datatype: crate::codec::Datatype::RAW,
                flags: 0,
                expiry: 0,
                cas: 0,
                rev_seqno: doc.rev_seqno,
                seqno: 0,
                kind: DocumentKind::Deletion,
                delete_time: u32::try_from(unix_secs(now)).unwrap_or(u32::MAX),
            },
            SyncRecord::Abort {
                prepared_seqno: prepared,
                superseded_by: None,
            },
            now,
        );
        let at = abort.seqno;
        self.complete(prepared, at);
        Ok((prepared, self.sync_info(&abort)))
    }
}

impl super::Bucket {
    /// When prepares complete (default [`SyncWriteMode::Immediate`]).
    pub fn sync_write_mode(&self) -> SyncWriteMode {
        self.sync_mode
    }

    /// Sets when prepares complete. Switching to
    /// [`SyncWriteMode::Immediate`] leaves prepares already pending as
    /// they are.
    pub fn set_sync_write_mode(&mut self, mode: SyncWriteMode) {
        self.sync_mode = mode;
    }

    /// A durable SET / ADD / REPLACE with `level`: a prepare (pending,
    /// invisible to reads, the key locked against other writes), committed
    /// at once in [`SyncWriteMode::Immediate`].
    pub fn durable_store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> Result<SyncWriteInfo, BucketError> {
        let owned = Bytes::copy_from_slice(key);
        let value = value.into();
        let vb = self.vbucket_of(key);
        let prepared = self.write_vb(vb, |v, max| {
            v.prepare_store(mode, owned, value, opts, level, max, now)
        })?;
        self.after_prepare(key, prepared, now)
    }

    /// A durable DELETE with `level` (`cas` 0 = any version).
    pub fn durable_delete(
        &mut self,
        key: &[u8],
        cas: u64,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> Result<SyncWriteInfo, BucketError> {
        let vb = self.vbucket_of(key);
        let prepared = self.write_vb(vb, |v, _| v.prepare_delete(key, cas, level, now))?;
        self.after_prepare(key, prepared, now)
    }

    /// A durable APPEND (`append`) or PREPEND of `value` with `level`
    /// (`cas` 0 = any version): the joined version is prepared, then
    /// completes as [`durable_store`](Self::durable_store) does.
    pub fn durable_concat(
        &mut self,
        append: bool,
        key: &[u8],
        value: &[u8],
        cas: u64,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> Result<SyncWriteInfo, BucketError> {
        let owned = Bytes::copy_from_slice(key);
        let vb = self.vbucket_of(key);
        let prepared = self.write_vb(vb, |v, max| {
            v.prepare_concat(append, owned, value, cas, level, max, now)
        })?;
        self.after_prepare(key, prepared, now)
    }

    /// A durable INCREMENT (`incr`) or DECREMENT by `delta` with `level`,
    /// creating a missing counter with `initial` (and `expiry`) if given.
    /// Returns the value the prepare holds, which the key takes if it
    /// commits.
    #[allow(clippy::too_many_arguments)]
    pub fn durable_counter(
        &mut self,
        incr: bool,
        key: &[u8],
        delta: u64,
        initial: Option<u64>,
        expiry: u32,
        cas: u64,
        level: DurabilityLevel,
        now: SystemTime,
    ) -> Result<(u64, SyncWriteInfo), BucketError> {
        let owned = Bytes::copy_from_slice(key);
        let vb = self.vbucket_of(key);
        let (value, prepared) = self.write_vb(vb, |v, _| {
            v.prepare_counter(incr, owned, delta, initial, expiry, cas, level, now)
        })?;
        Ok((value, self.after_prepare(key, prepared, now)?))
    }

    fn after_prepare(
        &mut self,
        key: &[u8],
        prepared: MutationInfo,
        now: SystemTime,
    ) -> Result<SyncWriteInfo, BucketError> {
        let outcome = match self.sync_mode {
            SyncWriteMode::Immediate => Some(self.commit_sync_write(key, now)?),
            SyncWriteMode::Hold => None,
        };
        Ok(SyncWriteInfo { prepared, outcome })
    }

    /// Commits the pending prepare of `key`; KeyNotFound if none.
    pub fn commit_sync_write(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<SyncWriteOutcome, BucketError> {
        let vb = self.vbucket_of(key);
        let (prepared_seqno, info) = self.write_vb(vb, |v, _| v.commit_prepared(key, now))?;
        let outcome = SyncWriteOutcome::Committed(info);
        self.completions.push(Completion {
            vbucket: vb,
            prepared_seqno,
            outcome,
        });
        Ok(outcome)
    }

    /// Aborts the pending prepare of `key` (what a durability timeout
    /// does); KeyNotFound if none.
    pub fn abort_sync_write(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<SyncWriteOutcome, BucketError> {
        let vb = self.vbucket_of(key);
        let (prepared_seqno, info) = self.write_vb(vb, |v, _| v.abort_prepared(key, now))?;
        let outcome = SyncWriteOutcome::Aborted(info);
        self.completions.push(Completion {
            vbucket: vb,
            prepared_seqno,
            outcome,
        });
        Ok(outcome)
    }

    /// Commits (or, with `commit` false, aborts) every pending prepare of
    /// vbucket `vb` (every vbucket if `None`), oldest first; returns how
    /// many.
    pub fn complete_sync_writes(
        &mut self,
        vb: Option<u16>,
        commit: bool,
        now: SystemTime,
    ) -> Result<usize, BucketError> {
        let vbuckets: Vec<u16> = match vb {
            Some(vb) => vec![self.vbucket_mut(vb)?.id],
            None => (0..self.num_vbuckets()).collect(),
        };
        let mut done = 0;
        for vb in vbuckets {
            let keys: Vec<Bytes> = self
                .vbucket(vb)
                .map(|v| {
                    v.pending_documents()
                        .iter()
                        .map(|d| d.key.clone())
                        .collect()
                })
                .unwrap_or_default();
            for key in keys {
                if commit {
                    self.commit_sync_write(&key, now)?;
                } else {
                    self.abort_sync_write(&key, now)?;
                }
                done += 1;
            }
        }
        Ok(done)
    }

    /// Takes the sync writes completed since the last call.
    pub(crate) fn take_completions(&mut self) -> Vec<Completion> {
        core::mem::take(&mut self.completions)
    }
}

fn check_level(level: DurabilityLevel) -> Result<(), BucketError> {
    match level {
        DurabilityLevel::Unknown(_) => Err(BucketError::DurabilityInvalidLevel),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    fn t() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1000)
    }

    fn set(vb: &mut VBucket, key: &str, value: &str) -> MutationInfo {
        vb.store(
            StoreMode::Set,
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
            WriteOptions::new(),
            1024,
            t(),
        )
        .unwrap()
    }

    fn prepare(vb: &mut VBucket, key: &str, value: &str) -> MutationInfo {
        vb.prepare_store(
            StoreMode::Set,
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
            WriteOptions::new(),
            DurabilityLevel::Majority,
            1024,
            t(),
        )
        .unwrap()
    }

    #[test]
    fn prepares_are_pending_and_lock_their_key() {
        let mut vb = VBucket::new(0, 1, 100, 10);
        set(&mut vb, "k", "old");
        let p = prepare(&mut vb, "k", "new");
        assert_eq!(p.seqno, 2);
        assert_eq!(&vb.get(b"k", t()).unwrap().value[..], b"old");
        assert_eq!(
            vb.store(
                StoreMode::Set,
                Bytes::from_static(b"k"),
                Bytes::from_static(b"x"),
                WriteOptions::new(),
                1024,
                t()
            ),
            Err(BucketError::SyncWriteInProgress)
        );
        assert_eq!(
            vb.delete(b"k", 0, t()),
            Err(BucketError::SyncWriteInProgress)
        );
        assert_eq!(vb.pending_sync_writes(), 1);
        assert_eq!(vb.max_visible_seqno(2), 1);
        let (prepared, c) = vb.commit_prepared(b"k", t()).unwrap();
        assert_eq!((prepared, c.seqno), (2, 3));
        assert_eq!(&vb.get(b"k", t()).unwrap().value[..], b"new");
        assert_eq!(vb.high_completed_seqno(3), 2);
        assert_eq!(vb.high_completed_seqno(2), 0);
        assert_eq!(vb.high_prepared_seqno(1), 0);
        assert_eq!(vb.high_prepared_seqno(3), 2);
        assert_eq!(vb.max_visible_seqno(3), 3);
        // Abort: the old version stays.
        prepare(&mut vb, "k", "newer");
        let (prepared, a) = vb.abort_prepared(b"k", t()).unwrap();
        assert_eq!((prepared, a.seqno), (4, 5));
        assert_eq!(&vb.get(b"k", t()).unwrap().value[..], b"new");
        assert_eq!(vb.max_visible_seqno(5), 3);
        assert_eq!(vb.high_completed_seqno(5), 4);
        assert_eq!(vb.high_prepared_seqno(5), 4);
        assert_eq!(vb.pending_sync_writes(), 0);
        assert_eq!(vb.commit_prepared(b"k", t()), Err(BucketError::KeyNotFound));
    }

    #[test]
    fn backfills_send_pending_prepares_and_aborts_only() {
        let mut vb = VBucket::new(0, 1, 100, 10);
        prepare(&mut vb, "a", "1"); // 1
        vb.commit_prepared(b"a", t()).unwrap(); // 2
        prepare(&mut vb, "b", "1"); // 3
        vb.abort_prepared(b"b", t()).unwrap(); // 4
        prepare(&mut vb, "c", "1"); // 5
        let seqnos = |vb: &VBucket, end| -> Vec<u64> {
            vb.sync
                .backfill_items(0, end, end)
                .iter()
                .map(|i| i.doc.seqno)
                .collect()
        };
        // As of 1, a's prepare was pending; as of 2 it is committed.
        assert_eq!(seqnos(&vb, 1), vec![1]);
        assert_eq!(seqnos(&vb, 3), vec![3]);
        assert_eq!(seqnos(&vb, 5), vec![4, 5]);
        // Aborts are purged like tombstones.
        assert_eq!(
            vb.sync.purge_aborts(10, vb.memory_low_seqno()),
            0,
            "in memory"
        );
        assert_eq!(vb.sync.purge_aborts(10, 11), 4);
        assert_eq!(seqnos(&vb, 5), vec![5]);
    }

    #[test]
    fn failover_restores_pending_prepares() {
        let mut vb = VBucket::new(0, 1, 100, 10);
        prepare(&mut vb, "a", "1"); // 1
        vb.commit_prepared(b"a", t()).unwrap(); // 2
        vb.failover(1, 9);
        assert_eq!(vb.high_seqno(), 1);
        assert_eq!(vb.pending_sync_writes(), 1);
        assert!(vb.get(b"a", t()).is_err());
        assert_eq!(vb.high_completed_seqno(5), 0);
        assert_eq!(vb.high_prepared_seqno(5), 1);
        assert_eq!(vb.max_visible_seqno(1), 0);
        let (_, c) = vb.commit_prepared(b"a", t()).unwrap();
        assert_eq!(c.seqno, 2);
    }
}
