//! The producer's in-memory data model: a bucket of vbuckets, each with seqno
//! assignment, a hash table, deduplicating memory checkpoints, a by-seqno
//! "disk" for backfills with tombstones and a purge seqno, and a failover
//! log; document writes with memcached's CAS rules; and the faults a test
//! wants to inject (failover with lost items, purge, vbucket state changes,
//! warm-up and memory pressure).
//!
//! A [`Bucket`] is usually owned by a [`Node`](crate::producer::Node), which
//! streams it over DCP; change it through
//! [`Node::bucket_mut`](crate::producer::Node::bucket_mut). The bucket
//! records which vbuckets changed and which state changes and failovers
//! happened; the node applies their effects on streams (new data, ends,
//! dropped connections) at its next call.
//!
//! Time is an argument: writes take the wall-clock time (`SystemTime`) for
//! CAS values (a hybrid logical clock of Unix nanoseconds), TTLs and delete
//! times. Randomness (vbucket uuids) comes from a seeded generator.
//!
//! ```
//! use std::time::{Duration, UNIX_EPOCH};
//! use dcp_proto::bucket::{Bucket, BucketConfig, WriteOptions};
//!
//! let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
//! let mut bucket = Bucket::new(BucketConfig::new("default").with_vbuckets(4), 42);
//! let written = bucket.set(b"hello", "world", WriteOptions::new(), now)?;
//! let vb = bucket.vbucket(written.vbucket).expect("in range");
//! assert_eq!(vb.high_seqno(), 1);
//! assert_eq!(&bucket.get(b"hello", now)?.value[..], b"world");
//! # Ok::<(), dcp_proto::bucket::BucketError>(())
//! ```

mod checkpoint;
mod collections;
mod disk;
mod document;
mod durability;
mod error;
mod hash;
mod manifest;
mod rng;
mod vbucket;
mod write;

use std::collections::BTreeSet;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

pub use collections::{SYSTEM_EVENT_COLLECTION, SystemEventItem};
pub use document::{Document, DocumentKind};
pub(crate) use durability::{Completion, PreparedItem, SyncRecord};
pub use durability::{SyncWriteInfo, SyncWriteMode, SyncWriteOutcome};
pub use error::BucketError;
pub use hash::vbucket_for_key;
pub use manifest::{
    CollectionEntry, DEFAULT_NAME, FIRST_USER_ID, MAX_NAME_LEN, Manifest, ScopeEntry,
};
pub(crate) use rng::Rng;
pub use vbucket::VBucket;
pub use write::{MAX_KEY_LEN, MutationInfo, RELATIVE_EXPIRY_LIMIT, StoreMode, WriteOptions};

use crate::msg::{FailoverEntry, VbucketState, XattrValue};

/// The default number of vbuckets.
pub const DEFAULT_VBUCKETS: u16 = 1024;

/// The largest value a bucket accepts by default (20 MiB, the server's).
pub const DEFAULT_MAX_VALUE_SIZE: usize = 20 * 1024 * 1024;

/// How a bucket is shaped.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BucketConfig {
    /// The bucket name.
    pub name: String,
    /// Number of vbuckets (default 1024).
    pub num_vbuckets: u16,
    /// Items after which a checkpoint closes (default 1000).
    pub checkpoint_max_items: usize,
    /// Checkpoints kept in memory per vbucket (default 4); older ones are
    /// dropped, and streams that still need them backfill from disk.
    pub max_checkpoints: usize,
    /// The largest value accepted.
    pub max_value_size: usize,
    /// The bucket's max TTL in seconds (0: none): documents of a
    /// collection without its own max TTL expire at most this long after
    /// they are written (see [`Bucket::modify_collection`]).
    pub max_ttl: u32,
}

impl BucketConfig {
    /// Defaults for a bucket named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            num_vbuckets: DEFAULT_VBUCKETS,
            checkpoint_max_items: 1000,
            max_checkpoints: 4,
            max_value_size: DEFAULT_MAX_VALUE_SIZE,
            max_ttl: 0,
        }
    }

    /// Sets the number of vbuckets (at least 1).
    pub fn with_vbuckets(mut self, n: u16) -> Self {
        self.num_vbuckets = n.max(1);
        self
    }

    /// Sets the checkpoint size and how many checkpoints memory keeps.
    pub fn with_checkpoints(mut self, max_items: usize, max_checkpoints: usize) -> Self {
        self.checkpoint_max_items = max_items.max(1);
        self.max_checkpoints = max_checkpoints.max(1);
        self
    }

    /// Sets the largest accepted value.
    pub fn with_max_value_size(mut self, bytes: usize) -> Self {
        self.max_value_size = bytes;
        self
    }

    /// Sets the bucket's max TTL in seconds (0: none). A collection's own
    /// max TTL, when set, wins (even 0, which then means none).
    pub fn with_max_ttl(mut self, seconds: u32) -> Self {
        self.max_ttl = seconds;
        self
    }
}

/// A structural change the node must apply to its streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BucketEvent {
    /// A vbucket changed state.
    StateChanged {
        vbucket: u16,
        from: VbucketState,
        to: VbucketState,
    },
    /// A vbucket failed over (its history branched; items may be lost).
    FailedOver { vbucket: u16 },
}

/// A bucket: named, with `num_vbuckets` vbuckets, all active at first.
#[derive(Debug, Clone)]
pub struct Bucket {
    config: BucketConfig,
    vbuckets: Vec<VBucket>,
    rng: Rng,
    memory_full: bool,
    /// Vbuckets written since the node last looked.
    touched: BTreeSet<u16>,
    /// State changes and failovers since the node last looked.
    events: Vec<BucketEvent>,
    /// When prepares complete.
    sync_mode: SyncWriteMode,
    /// Sync writes completed since the node last looked.
    completions: Vec<Completion>,
    /// The collections manifest.
    manifest: Manifest,
}

impl Bucket {
    /// A bucket whose vbucket uuids come from `seed`.
    pub fn new(config: BucketConfig, seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let vbuckets = (0..config.num_vbuckets)
            .map(|id| {
                VBucket::new(
                    id,
                    rng.nonzero_u64(),
                    config.checkpoint_max_items,
                    config.max_checkpoints,
                )
            })
            .collect();
        Self {
            config,
            vbuckets,
            rng,
            memory_full: false,
            touched: BTreeSet::new(),
            events: Vec::new(),
            sync_mode: SyncWriteMode::default(),
            completions: Vec::new(),
            manifest: Manifest::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BucketConfig {
        &self.config
    }

    /// The bucket name.
    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Number of vbuckets.
    pub fn num_vbuckets(&self) -> u16 {
        self.config.num_vbuckets
    }

    /// The vbucket `key` hashes to.
    pub fn vbucket_of(&self, key: &[u8]) -> u16 {
        vbucket_for_key(key, self.config.num_vbuckets)
    }

    /// A vbucket, if `vb` is in range.
    pub fn vbucket(&self, vb: u16) -> Option<&VBucket> {
        self.vbuckets.get(usize::from(vb))
    }

    /// Every vbucket, by id.
    pub fn vbuckets(&self) -> impl Iterator<Item = &VBucket> {
        self.vbuckets.iter()
    }

    pub(crate) fn vbucket_mut(&mut self, vb: u16) -> Result<&mut VBucket, BucketError> {
        self.vbuckets
            .get_mut(usize::from(vb))
            .ok_or(BucketError::NoSuchVbucket(vb))
    }

    /// Whether stream requests get ENOMEM (fault injection).
    pub fn is_memory_full(&self) -> bool {
        self.memory_full
    }

    /// Simulates memory above the backfill threshold: stream requests are
    /// refused with ENOMEM while set.
    pub fn set_memory_full(&mut self, full: bool) {
        self.memory_full = full;
    }

    /// Simulates a vbucket warming up: stream requests get TMPFAIL and
    /// writes ETMPFAIL while set.
    pub fn set_warming_up(&mut self, vb: u16, warming: bool) -> Result<(), BucketError> {
        self.vbucket_mut(vb)?.warming_up = warming;
        Ok(())
    }

    /// The max TTL writes to a collection with max TTL `collection` get:
    /// the collection's if it has one, else the bucket's (the server's
    /// rule; 0 means none).
    pub(crate) fn enforced_ttl(&self, collection: Option<u32>) -> Option<u32> {
        collection.or((self.config.max_ttl > 0).then_some(self.config.max_ttl))
    }

    /// Runs `op` on the vbucket `vb` and records that it may have changed.
    pub(crate) fn write_vb<T>(
        &mut self,
        vb: u16,
        op: impl FnOnce(&mut VBucket, usize) -> Result<T, BucketError>,
    ) -> Result<T, BucketError> {
        let max = self.config.max_value_size;
        let default_ttl = self.enforced_ttl(
            self.manifest
                .collection(crate::msg::DEFAULT_COLLECTION)
                .and_then(|c| c.max_ttl),
        );
        let vbucket = self.vbucket_mut(vb)?;
        vbucket.write_max_ttl = default_ttl;
        let before = vbucket.high_seqno;
        let result = op(vbucket, max);
        if vbucket.high_seqno != before {
            self.touched.insert(vb);
        }
        result
    }

    fn write<T>(
        &mut self,
        key: &[u8],
        op: impl FnOnce(&mut VBucket, usize) -> Result<T, BucketError>,
    ) -> Result<T, BucketError> {
        self.write_vb(self.vbucket_of(key), op)
    }

    /// Stores `value` under `key` (SET, or SET with a CAS).
    pub fn set(
        &mut self,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        self.store(StoreMode::Set, key, value, opts, now)
    }

    /// Stores `value` only if `key` has no live document (ADD).
    pub fn add(
        &mut self,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        self.store(StoreMode::Add, key, value, opts, now)
    }

    /// Stores `value` only if `key` has a live document (REPLACE).
    pub fn replace(
        &mut self,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        self.store(StoreMode::Replace, key, value, opts, now)
    }

    /// SET, ADD or REPLACE.
    pub fn store(
        &mut self,
        mode: StoreMode,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let key = Bytes::copy_from_slice(key);
        let value = value.into();
        self.write(&key.clone(), |vb, max| {
            vb.store(mode, key, value, opts, max, now)
        })
    }

    /// Deletes `key` (with `cas` 0 = any version), leaving a tombstone.
    pub fn delete(
        &mut self,
        key: &[u8],
        cas: u64,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        self.write(key, |vb, _| vb.delete(key, cas, now))
    }

    /// Writes xattrs (system and user) onto the deleted or missing document
    /// `key`, which stays deleted, as a sub-document mutation with
    /// AccessDeleted does: the tombstone gets a new seqno. `KeyExists` if
    /// the document is live.
    pub fn set_deleted_xattrs(
        &mut self,
        key: &[u8],
        xattrs: &[(&[u8], &[u8])],
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let mut section = BytesMut::new();
        XattrValue::put(&mut section, xattrs, &[]);
        let section = section.freeze();
        self.write(key, |vb, _| vb.set_deleted_xattrs(key, section, now))
    }

    /// Expires `key` now, whatever its TTL, as the expiry pager does once a
    /// TTL passed (an expiration tombstone).
    pub fn expire(&mut self, key: &[u8], now: SystemTime) -> Result<MutationInfo, BucketError> {
        self.write(key, |vb, _| vb.expire(key, now))
    }

    /// Runs the expiry pager over every active vbucket: documents whose TTL
    /// passed at `now` become expiration tombstones. Returns how many.
    pub fn expire_due(&mut self, now: SystemTime) -> usize {
        let mut total = 0;
        for vb in 0..self.num_vbuckets() {
            total += self.write_vb(vb, |v, _| Ok(v.expire_due(now))).unwrap_or(0);
        }
        total
    }

    /// Appends `value` to the document's body.
    pub fn append(
        &mut self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let owned = Bytes::copy_from_slice(key);
        self.write(key, |vb, max| vb.concat(true, owned, value, cas, max, now))
    }

    /// Prepends `value` to the document's body.
    pub fn prepend(
        &mut self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let owned = Bytes::copy_from_slice(key);
        self.write(key, |vb, max| vb.concat(false, owned, value, cas, max, now))
    }

    /// Adds `delta` to a decimal counter (wrapping), creating it with
    /// `initial` if missing and `initial` is given. Returns the new value.
    pub fn incr(
        &mut self,
        key: &[u8],
        delta: u64,
        initial: Option<u64>,
        now: SystemTime,
    ) -> Result<(u64, MutationInfo), BucketError> {
        let owned = Bytes::copy_from_slice(key);
        self.write(key, |vb, _| {
            vb.counter(true, owned, delta, initial, 0, 0, now)
        })
    }

    /// Subtracts `delta` from a decimal counter (stopping at 0), creating it
    /// with `initial` if missing and `initial` is given.
    pub fn decr(
        &mut self,
        key: &[u8],
        delta: u64,
        initial: Option<u64>,
        now: SystemTime,
    ) -> Result<(u64, MutationInfo), BucketError> {
        let owned = Bytes::copy_from_slice(key);
        self.write(key, |vb, _| {
            vb.counter(false, owned, delta, initial, 0, 0, now)
        })
    }

    /// Sets a new expiry on `key` (memcached encoding; a new version).
    pub fn touch(
        &mut self,
        key: &[u8],
        expiry: u32,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let vbucket = self.vbucket_of(key);
        self.write(key, |vb, _| {
            let doc = vb.touch(key, expiry, now)?;
            Ok(MutationInfo {
                vbucket,
                vbucket_uuid: vb.uuid(),
                seqno: doc.seqno,
                cas: doc.cas,
            })
        })
    }

    /// Reads `key`: its live document (one whose TTL passed is expired on
    /// access, taking a seqno, and reads as KeyNotFound).
    pub fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Document, BucketError> {
        self.write(key, |vb, _| vb.get(key, now).map(|d| (*d).clone()))
    }

    /// Fails vbucket `vb` over as after a crash: the last `lose_last` seqnos
    /// are lost (at most what memory holds: older items are persisted), and
    /// a new branch starts at the end of the last complete snapshot. The
    /// vbucket is active afterwards. Connections streaming it are dropped
    /// by the node (the failed node's sockets go away; no STREAM_END).
    pub fn failover(&mut self, vb: u16, lose_last: u64) -> Result<FailoverEntry, BucketError> {
        let uuid = self.rng.nonzero_u64();
        let entry = self.vbucket_mut(vb)?.failover(lose_last, uuid);
        self.collections_after_failover(vb)?;
        self.events.push(BucketEvent::FailedOver { vbucket: vb });
        self.touched.insert(vb);
        Ok(entry)
    }

    /// Fails `vb` over to a lagging replica that completed a snapshot ending
    /// at `seqno` and holds nothing after it: the new branch starts exactly
    /// there, possibly inside a snapshot clients were sent (clamped to what
    /// memory still holds, as for [`Self::failover`]).
    pub fn failover_to(&mut self, vb: u16, seqno: u64) -> Result<FailoverEntry, BucketError> {
        let uuid = self.rng.nonzero_u64();
        let entry = self.vbucket_mut(vb)?.failover_to(seqno, uuid);
        self.events.push(BucketEvent::FailedOver { vbucket: vb });
        self.touched.insert(vb);
        Ok(entry)
    }

    /// Purges the tombstones of `vb` at or below `up_to` (compaction);
    /// returns the new purge seqno.
    pub fn purge(&mut self, vb: u16, up_to: u64) -> Result<u64, BucketError> {
        Ok(self.vbucket_mut(vb)?.purge(up_to))
    }

    /// Sets the state of `vb`, as ns_server's SET_VBUCKET does. Streams of a
    /// vbucket leaving active end with StateChanged; a vbucket becoming
    /// active again starts a new failover branch at its high seqno.
    pub fn set_vbucket_state(&mut self, vb: u16, state: VbucketState) -> Result<(), BucketError> {
        if matches!(state, VbucketState::Unknown(_)) {
            return Err(BucketError::InvalidState(state));
        }
        let uuid = self.rng.nonzero_u64();
        let vbucket = self.vbucket_mut(vb)?;
        let from = vbucket.state;
        if from == state {
            return Ok(());
        }
        vbucket.set_state(state, uuid);
        self.events.push(BucketEvent::StateChanged {
            vbucket: vb,
            from,
            to: state,
        });
        Ok(())
    }

    /// Replaces vbucket `copy.id()` with a copy of another node's vbucket
    /// (same history, uuid and failover log), in `state`: a replica brought
    /// up to date, or a vbucket moved here by a rebalance (a transfer adds
    /// no failover entry). A change of state ends the streams of the
    /// vbucket being replaced (StateChanged).
    pub(crate) fn install_vbucket(
        &mut self,
        mut copy: VBucket,
        state: VbucketState,
    ) -> Result<(), BucketError> {
        let vb = copy.id;
        let slot = self.vbucket_mut(vb)?;
        let from = slot.state;
        copy.state = state;
        copy.disk.unpin_all();
        *slot = copy;
        if from != state {
            self.events.push(BucketEvent::StateChanged {
                vbucket: vb,
                from,
                to: state,
            });
        }
        self.touched.insert(vb);
        Ok(())
    }

    /// Takes the vbuckets written since the last call.
    pub(crate) fn take_touched(&mut self) -> BTreeSet<u16> {
        core::mem::take(&mut self.touched)
    }

    /// Takes the structural events since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<BucketEvent> {
        core::mem::take(&mut self.events)
    }

    /// Whether anything happened since the node last looked.
    pub(crate) fn has_news(&self) -> bool {
        !self.touched.is_empty() || !self.events.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn keys_land_in_their_vbucket_and_changes_are_recorded() {
        let now = UNIX_EPOCH + Duration::from_secs(1);
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(8), 1);
        let info = b.set(b"hello", "v", WriteOptions::new(), now).unwrap();
        assert_eq!(info.vbucket, vbucket_for_key(b"hello", 8));
        assert_eq!(info.vbucket_uuid, b.vbucket(info.vbucket).unwrap().uuid());
        assert!(b.has_news());
        assert_eq!(
            b.take_touched().into_iter().collect::<Vec<_>>(),
            vec![info.vbucket]
        );
        // A failed write touches nothing.
        assert!(b.add(b"hello", "v", WriteOptions::new(), now).is_err());
        assert!(!b.has_news());
        b.set_vbucket_state(1, VbucketState::Dead).unwrap();
        assert_eq!(
            b.take_events(),
            vec![BucketEvent::StateChanged {
                vbucket: 1,
                from: VbucketState::Active,
                to: VbucketState::Dead
            }]
        );
        assert_eq!(
            b.set_vbucket_state(99, VbucketState::Dead),
            Err(BucketError::NoSuchVbucket(99))
        );
        // Uuids are distinct and seeded.
        let again = Bucket::new(BucketConfig::new("b").with_vbuckets(8), 1);
        assert_eq!(
            again.vbucket(0).unwrap().uuid(),
            Bucket::new(BucketConfig::new("b").with_vbuckets(8), 1)
                .vbucket(0)
                .unwrap()
                .uuid()
        );
        assert_ne!(
            again.vbucket(0).unwrap().uuid(),
            again.vbucket(1).unwrap().uuid()
        );
    }
}
