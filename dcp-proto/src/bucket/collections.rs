//! Collections in the bucket: documents live in a collection, and every
//! manifest change (create or drop a scope or collection, flush a
//! collection) is a seqno-bearing system event in every vbucket's history,
//! in memory checkpoints and on disk, as on a data node.
//!
//! A system event is stored as a [`Document`] of kind
//! [`DocumentKind::SystemEvent`]: `flags` holds the event id, `key` the key
//! a DCP connection receives (the name for creations and modifications,
//! empty for drops) and `value` the event's FlatBuffers table (as the
//! server stores it, and as connections that enabled
//! `flatbuffers_system_events` receive it; the others get the fixed struct
//! of wire.md §12 made from it). Its identity in the checkpoint and disk
//! indexes is the collection or scope it is about, so a later event of the
//! same collection replaces the earlier one (a drop replaces the create; a
//! flush moves the create to a new seqno); a collection's modify events
//! have an identity of their own (the latest one stays beside the create),
//! and backfills skip it once the collection is dropped or flushed after
//! it, as the server does.
//!
//! Modifying a collection (its max TTL or history setting) is a
//! ModifyCollection event, which only FlatBuffers connections receive;
//! other streams skip it (a SEQNO_ADVANCED covers it when it ends a
//! snapshot). A collection's max TTL caps the expiry of the documents
//! written to it, or gives one to those written without (see
//! [`limit_expiry`]).
//!
//! Dropping a collection is logical, as on the server: its documents stay
//! on disk but backfills skip them (and reads no longer see them); memory
//! checkpoints still stream what they hold, followed by the drop event. A
//! flush makes the documents below the new create event invisible the same
//! way.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{BufMut, Bytes, BytesMut};

use super::Bucket;
use super::document::{Document, DocumentKind};
use super::error::BucketError;
use super::manifest::{CollectionEntry, Manifest};
use super::vbucket::VBucket;
use super::write::{MutationInfo, StoreMode, WriteOptions};
use crate::codec::Datatype;
use crate::msg::{CollectionDetails, DEFAULT_COLLECTION, SystemEventData, SystemEventId};

/// The collection id of the system-event namespace (the server reserves
/// ids 1 to 7; 1 holds system events). System event items carry it.
pub const SYSTEM_EVENT_COLLECTION: u32 = 1;

/// A collections system event as the bucket records it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SystemEventItem {
    /// Which event (BeginCollection for a create or a flush).
    pub event: SystemEventId,
    /// The manifest uid the event is stamped with.
    pub manifest_uid: u64,
    /// The scope (of the collection, for collection events).
    pub scope: u32,
    /// The collection, for collection events.
    pub collection: Option<u32>,
    /// The name, for creations (empty for drops).
    pub name: Bytes,
    /// The collection's max TTL (create and modify events).
    pub max_ttl: Option<u32>,
    /// Whether the collection keeps history (create and modify events).
    pub history: bool,
    /// The manifest uid of the collection's latest flush (create events).
    pub flush_uid: u64,
}

impl SystemEventItem {
    /// An event with no collection settings (max TTL, history, flush uid
    /// at their defaults).
    pub fn new(
        event: SystemEventId,
        manifest_uid: u64,
        scope: u32,
        collection: Option<u32>,
        name: Bytes,
    ) -> Self {
        Self {
            event,
            manifest_uid,
            scope,
            collection,
            name,
            max_ttl: None,
            history: false,
            flush_uid: 0,
        }
    }

    /// Reads a system event back from its stored document (its
    /// FlatBuffers value); `None` if it is not one.
    pub fn from_document(doc: &Document) -> Option<Self> {
        if !doc.is_system_event() {
            return None;
        }
        let event = SystemEventId::from_raw(doc.flags);
        let data = SystemEventData::decode(event, 2, &doc.key, &doc.value).ok()?;
        let mut item = Self::new(
            event,
            data.manifest_uid(),
            data.scope_id(),
            data.collection_id(),
            doc.key.clone(),
        );
        if let Some(c) = data.collection() {
            (item.max_ttl, item.history, item.flush_uid) = (c.max_ttl, c.history, c.flush_uid);
        }
        Some(item)
    }

    /// The event's typed data.
    pub fn data(&self) -> SystemEventData {
        let collection_id = self.collection.unwrap_or(0);
        let (manifest_uid, scope_id) = (self.manifest_uid, self.scope);
        let collection = || CollectionDetails {
            history: self.history,
            flush_uid: self.flush_uid,
            ..CollectionDetails::new(
                manifest_uid,
                scope_id,
                collection_id,
                self.name.clone(),
                self.max_ttl,
            )
        };
        match self.event {
            SystemEventId::ModifyCollection => SystemEventData::ModifyCollection(collection()),
            SystemEventId::EndCollection => SystemEventData::EndCollection {
                manifest_uid,
                scope_id,
                collection_id,
                system: false,
            },
            SystemEventId::CreateScope => SystemEventData::CreateScope {
                manifest_uid,
                scope_id,
                name: self.name.clone(),
            },
            SystemEventId::DropScope => SystemEventData::DropScope {
                manifest_uid,
                scope_id,
                system: false,
            },
            _ => SystemEventData::BeginCollection(collection()),
        }
    }

    /// The value version a non-FlatBuffers connection receives: 1 for a
    /// BeginCollection with a max TTL, else 0 (a ModifyCollection is never
    /// sent to them).
    pub fn version(&self) -> u8 {
        self.data().fixed_version().unwrap_or(0)
    }

    /// The fixed-struct value (wire.md §12): manifest uid, scope id, then
    /// the collection id and max TTL where the event has them (empty for a
    /// ModifyCollection, which has none).
    pub fn value(&self) -> Bytes {
        self.data().encode_value(self.version()).unwrap_or_default()
    }

    /// The FlatBuffers value (version 2), as stored.
    pub fn flatbuffers_value(&self) -> Bytes {
        // Names come from the manifest's `&str`s: always UTF-8, so the
        // table always builds.
        self.data().encode_value(2).unwrap_or_default()
    }

    /// The document the bucket stores for the event (seqno and CAS are
    /// assigned when it is queued).
    pub(crate) fn to_document(&self) -> Document {
        Document {
            key: self.name.clone(),
            collection: SYSTEM_EVENT_COLLECTION,
            value: self.flatbuffers_value(),
            datatype: Datatype::RAW,
            flags: self.event.raw(),
            expiry: 0,
            cas: 0,
            rev_seqno: 1,
            seqno: 0,
            kind: DocumentKind::SystemEvent,
            delete_time: 0,
        }
    }
}

/// Whether a system event document is a drop (a deleted item).
pub(crate) fn is_drop_event(doc: &Document) -> bool {
    matches!(
        SystemEventId::from_raw(doc.flags),
        SystemEventId::EndCollection | SystemEventId::DropScope
    )
}

/// The key a document is indexed under in checkpoints and on disk: its
/// collection and key; for a system event, the collection or scope it is
/// about in the system-event namespace.
pub(crate) fn index_key(doc: &Document) -> (u32, Bytes) {
    if !doc.is_system_event() {
        return (doc.collection, doc.key.clone());
    }
    let mut key = BytesMut::with_capacity(5);
    match SystemEventItem::from_document(doc) {
        Some(SystemEventItem {
            event: SystemEventId::ModifyCollection,
            collection: Some(c),
            ..
        }) => {
            key.put_u8(b'm');
            key.put_u32(c);
        }
        Some(SystemEventItem {
            collection: Some(c),
            ..
        }) => {
            key.put_u8(b'c');
            key.put_u32(c);
        }
        Some(item) => {
            key.put_u8(b's');
            key.put_u32(item.scope);
        }
        None => key.put_slice(&doc.key),
    }
    (SYSTEM_EVENT_COLLECTION, key.freeze())
}

/// What one vbucket knows about collections: the live ones (with the seqno
/// their data starts at: 0, or their latest create event, which a flush
/// moves), the dropped ones (with their drop seqno), and the high seqno of
/// each collection.
#[derive(Debug, Clone)]
pub(crate) struct VbCollections {
    live: BTreeMap<u32, u64>,
    /// The scope of each live collection.
    scope_of: BTreeMap<u32, u32>,
    /// The live scopes.
    scopes: BTreeSet<u32>,
    high: BTreeMap<u32, u64>,
    /// The seqno of each scope's latest system event (its own, or one of
    /// its collections').
    scope_high: BTreeMap<u32, u64>,
    /// The settings (max TTL, history) of each live collection as its
    /// latest create or modify event here gave them.
    settings: BTreeMap<u32, (Option<u32>, bool)>,
}

impl Default for VbCollections {
    fn default() -> Self {
        let mut live = BTreeMap::new();
        live.insert(DEFAULT_COLLECTION, 0);
        let mut scope_of = BTreeMap::new();
        scope_of.insert(DEFAULT_COLLECTION, 0);
        Self {
            live,
            scope_of,
            scopes: BTreeSet::from([0]),
            high: BTreeMap::new(),
            scope_high: BTreeMap::new(),
            settings: BTreeMap::from([(DEFAULT_COLLECTION, (None, false))]),
        }
    }
}

impl VbCollections {
    /// Whether `doc` belongs to a dropped collection, or predates its
    /// collection's flush: backfills skip it and reads do not see it.
    /// System events stay visible (drop events too), except a
    /// collection's modify event once the collection is dropped or flushed
    /// after it (as on the server: the latest create carries the settings).
    pub(crate) fn is_logically_deleted(&self, doc: &Document) -> bool {
        if doc.is_system_event() {
            if SystemEventId::from_raw(doc.flags) != SystemEventId::ModifyCollection {
                return false;
            }
            let Some(c) = SystemEventItem::from_document(doc).and_then(|i| i.collection) else {
                return false;
            };
            return self.live.get(&c).is_none_or(|&start| doc.seqno < start);
        }
        self.live
            .get(&doc.collection)
            .is_none_or(|&start| doc.seqno < start)
    }

    /// Records a committed item.
    pub(crate) fn on_commit(&mut self, doc: &Document) {
        let collection = if doc.is_system_event() {
            let Some(item) = SystemEventItem::from_document(doc) else {
                return;
            };
            self.scope_high.insert(item.scope, doc.seqno);
            let Some(c) = item.collection else {
                match item.event {
                    SystemEventId::CreateScope => {
                        self.scopes.insert(item.scope);
                    }
                    SystemEventId::DropScope => {
                        self.scopes.remove(&item.scope);
                    }
                    _ => {}
                }
                return;
            };
            match item.event {
                SystemEventId::BeginCollection => {
                    self.live.insert(c, doc.seqno);
                    self.scope_of.insert(c, item.scope);
                    self.settings.insert(c, (item.max_ttl, item.history));
                }
                SystemEventId::ModifyCollection if self.live.contains_key(&c) => {
                    self.settings.insert(c, (item.max_ttl, item.history));
                }
                SystemEventId::EndCollection => {
                    self.live.remove(&c);
                    self.scope_of.remove(&c);
                    self.settings.remove(&c);
                }
                _ => {}
            }
            c
        } else {
            doc.collection
        };
        self.high.insert(collection, doc.seqno);
    }

    /// The highest seqno of `collection` (its documents and its system
    /// events), 0 if none.
    pub(crate) fn high_seqno(&self, collection: u32) -> u64 {
        self.high.get(&collection).copied().unwrap_or(0)
    }

    /// The state a vbucket's history gives: its latest versions, by seqno.
    pub(crate) fn rebuild<'a>(latest: impl Iterator<Item = &'a Document>) -> Self {
        let mut state = Self::default();
        for doc in latest {
            state.on_commit(doc);
        }
        state
    }

    /// The system events that bring this vbucket to `manifest`: creates
    /// of missing scopes and collections, modifies of collections whose
    /// settings differ, drops of extra ones (what a
    /// vbucket does when the manifest is applied to it again, e.g. after a
    /// failover lost some of its events).
    pub(crate) fn catch_up(&self, manifest: &Manifest) -> Vec<SystemEventItem> {
        let uid = manifest.uid();
        let mut events: Vec<SystemEventItem> = manifest
            .scopes()
            .filter(|s| !self.scopes.contains(&s.id))
            .map(|s| SystemEventItem {
                event: SystemEventId::CreateScope,
                manifest_uid: uid,
                scope: s.id,
                collection: None,
                name: Bytes::from(s.name.clone().into_bytes()),
                max_ttl: None,
                history: false,
                flush_uid: 0,
            })
            .collect();
        events.extend(
            manifest
                .collections()
                .filter(|c| !self.live.contains_key(&c.id))
                .map(|c| begin_event(c, uid)),
        );
        events.extend(
            manifest
                .collections()
                .filter(|c| {
                    self.live.contains_key(&c.id)
                        && self.settings.get(&c.id) != Some(&(c.max_ttl, c.history))
                })
                .map(|c| {
                    let mut event = begin_event(c, uid);
                    event.event = SystemEventId::ModifyCollection;
                    event
                }),
        );
        events.extend(
            self.scope_of
                .iter()
                .filter(|(c, _)| manifest.collection(**c).is_none())
                .map(|(&c, &scope)| SystemEventItem {
                    event: SystemEventId::EndCollection,
                    manifest_uid: uid,
                    scope,
                    collection: Some(c),
                    name: Bytes::new(),
                    max_ttl: None,
                    history: false,
                    flush_uid: 0,
                }),
        );
        events.extend(
            self.scopes
                .iter()
                .filter(|s| manifest.scope(**s).is_none())
                .map(|&scope| SystemEventItem {
                    event: SystemEventId::DropScope,
                    manifest_uid: uid,
                    scope,
                    collection: None,
                    name: Bytes::new(),
                    max_ttl: None,
                    history: false,
                    flush_uid: 0,
                }),
        );
        events
    }

    /// The seqno of the latest system event of `scope` or of one of its
    /// collections, 0 if none.
    pub(crate) fn scope_event_seqno(&self, scope: u32) -> u64 {
        self.scope_high.get(&scope).copied().unwrap_or(0)
    }
}

impl VBucket {
    /// Queues a system event: a new seqno, in memory and on disk.
    pub(crate) fn queue_system_event(
        &mut self,
        item: &SystemEventItem,
        now: SystemTime,
    ) -> Arc<Document> {
        self.commit(item.to_document(), now)
    }

    /// The absolute expiry of a document written now with memcached expiry
    /// `expiry` to the collection being written: within its max TTL.
    pub(crate) fn expiry_for(&self, expiry: u32, now: SystemTime) -> u32 {
        let now_unix = super::vbucket::unix_secs(now);
        limit_expiry(
            super::write::absolute_expiry(expiry, now_unix),
            self.write_max_ttl,
            now_unix,
        )
    }

    /// Erases the documents of dropped and flushed collections from disk
    /// (compaction); returns how many keys went.
    pub(crate) fn erase_dropped_collections(&mut self) -> usize {
        let collections = &self.collections;
        self.disk
            .erase_where(|d| collections.is_logically_deleted(d))
    }

    /// The highest seqno of `collection` in this vbucket (documents and its
    /// system events), at most the high seqno (0 if it has none).
    pub fn collection_high_seqno(&self, collection: u32) -> u64 {
        self.collections
            .high_seqno(collection)
            .min(self.high_seqno())
    }

    /// The seqno of the latest system event of `scope` or of one of its
    /// collections in this vbucket (0 if none).
    pub fn scope_event_seqno(&self, scope: u32) -> u64 {
        self.collections
            .scope_event_seqno(scope)
            .min(self.high_seqno())
    }

    /// Whether `doc` is invisible because its collection was dropped (or
    /// flushed after it was written).
    pub fn is_logically_deleted(&self, doc: &Document) -> bool {
        self.collections.is_logically_deleted(doc)
    }

    /// The latest version of `key` in `collection`, tombstones included.
    pub fn peek_in(&self, collection: u32, key: &[u8]) -> Option<&Document> {
        self.disk.get(collection, key).map(|d| &**d)
    }

    /// The latest live documents of `collection`, by seqno.
    pub fn documents_in(&self, collection: u32) -> impl Iterator<Item = &Document> {
        self.documents().filter(move |d| {
            d.collection == collection && d.is_live() && !self.is_logically_deleted(d)
        })
    }
}

impl Bucket {
    /// The collections manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    /// Takes `manifest` as this bucket's (a node joining a cluster whose
    /// vbuckets already hold the system events that built it).
    pub(crate) fn adopt_manifest(&mut self, manifest: Manifest) {
        self.manifest = manifest;
    }

    /// Queues `events` in every vbucket, in order.
    fn broadcast(&mut self, events: &[SystemEventItem], now: SystemTime) {
        for vb in 0..self.num_vbuckets() {
            for event in events {
                // Every vbucket in 0..num_vbuckets exists.
                let _ = self.write_vb(vb, |v, _| Ok(v.queue_system_event(event, now)));
            }
        }
    }

    /// Creates scope `name`; returns its id.
    pub fn create_scope(&mut self, name: &str, now: SystemTime) -> Result<u32, BucketError> {
        let scope = self.manifest.add_scope(name)?;
        let event = SystemEventItem {
            event: SystemEventId::CreateScope,
            manifest_uid: self.manifest.uid(),
            scope: scope.id,
            collection: None,
            name: Bytes::from(scope.name.into_bytes()),
            max_ttl: None,
            history: false,
            flush_uid: 0,
        };
        self.broadcast(&[event], now);
        Ok(scope.id)
    }

    /// Drops scope `name` and its collections: a drop event per collection
    /// (stamped with the previous manifest uid), then the scope's drop
    /// event (stamped with the new one).
    pub fn drop_scope(&mut self, name: &str, now: SystemTime) -> Result<u32, BucketError> {
        let previous_uid = self.manifest.uid();
        let (scope, collections) = self.manifest.remove_scope(name)?;
        let mut events: Vec<SystemEventItem> = collections
            .iter()
            .map(|c| SystemEventItem {
                event: SystemEventId::EndCollection,
                manifest_uid: previous_uid,
                scope: scope.id,
                collection: Some(c.id),
                name: Bytes::new(),
                max_ttl: None,
                history: false,
                flush_uid: 0,
            })
            .collect();
        events.push(SystemEventItem {
            event: SystemEventId::DropScope,
            manifest_uid: self.manifest.uid(),
            scope: scope.id,
            collection: None,
            name: Bytes::new(),
            max_ttl: None,
            history: false,
            flush_uid: 0,
        });
        self.broadcast(&events, now);
        Ok(scope.id)
    }

    /// Creates collection `name` in scope `scope` (with an optional max
    /// TTL in seconds); returns it.
    pub fn create_collection(
        &mut self,
        scope: &str,
        name: &str,
        max_ttl: Option<u32>,
        now: SystemTime,
    ) -> Result<CollectionEntry, BucketError> {
        let entry = self.manifest.add_collection(scope, name, max_ttl)?;
        let event = begin_event(&entry, self.manifest.uid());
        self.broadcast(&[event], now);
        Ok(entry)
    }

    /// Drops collection `scope.name`: its documents become invisible and
    /// every vbucket records the drop event.
    pub fn drop_collection(
        &mut self,
        scope: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<CollectionEntry, BucketError> {
        let entry = self.manifest.remove_collection(scope, name)?;
        let event = SystemEventItem {
            event: SystemEventId::EndCollection,
            manifest_uid: self.manifest.uid(),
            scope: entry.scope,
            collection: Some(entry.id),
            name: Bytes::new(),
            max_ttl: None,
            history: false,
            flush_uid: 0,
        };
        self.broadcast(&[event], now);
        Ok(entry)
    }

    /// Flushes collection `scope.name`: its create event moves to a new
    /// seqno in every vbucket and the documents written before it become
    /// invisible.
    pub fn flush_collection(
        &mut self,
        scope: &str,
        name: &str,
        now: SystemTime,
    ) -> Result<CollectionEntry, BucketError> {
        let entry = self.manifest.flush_collection(scope, name)?;
        let event = begin_event(&entry, self.manifest.uid());
        self.broadcast(&[event], now);
        Ok(entry)
    }

    /// Changes the settings of collection `scope.name`: its max TTL
    /// (`Some(None)` removes it, `Some(Some(0))` makes its documents never
    /// expire) and whether it keeps history; `None` leaves a setting as it
    /// is. A change takes a new manifest uid and is a ModifyCollection
    /// event in every vbucket (sent only to FlatBuffers connections);
    /// setting what is already set changes nothing. The new max TTL
    /// applies to documents written from then on.
    ///
    /// ```
    /// # use std::time::{Duration, UNIX_EPOCH};
    /// use dcp_proto::bucket::{Bucket, BucketConfig, WriteOptions};
    /// let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    /// let mut bucket = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 1);
    /// let c = bucket.create_collection("_default", "sessions", None, now).unwrap();
    /// let c = bucket
    ///     .modify_collection("_default", "sessions", Some(Some(60)), None, now)
    ///     .unwrap();
    /// assert_eq!(c.max_ttl, Some(60));
    /// // A document written without an expiry gets one within the max TTL.
    /// bucket.set_in(c.id, b"k", "v", WriteOptions::new(), now).unwrap();
    /// let doc = bucket.get_in(c.id, b"k", now).unwrap();
    /// assert_eq!(doc.expiry, 1_700_000_060);
    /// ```
    pub fn modify_collection(
        &mut self,
        scope: &str,
        name: &str,
        max_ttl: Option<Option<u32>>,
        history: Option<bool>,
        now: SystemTime,
    ) -> Result<CollectionEntry, BucketError> {
        let (entry, changed) = self
            .manifest
            .modify_collection(scope, name, max_ttl, history)?;
        if changed {
            let mut event = begin_event(&entry, self.manifest.uid());
            event.event = SystemEventId::ModifyCollection;
            self.broadcast(&[event], now);
        }
        Ok(entry)
    }

    /// After a failover truncated `vb`'s history: its collections state
    /// again follows what its history holds, and the system events it lost
    /// are generated anew from the manifest (at new seqnos).
    pub(crate) fn collections_after_failover(&mut self, vb: u16) -> Result<(), BucketError> {
        let manifest = self.manifest.clone();
        let vbucket = self.vbucket_mut(vb)?;
        vbucket.collections = VbCollections::rebuild(vbucket.documents());
        let events = vbucket.collections.catch_up(&manifest);
        for event in &events {
            // The CAS clock moves on from the vbucket's highest CAS.
            vbucket.queue_system_event(event, SystemTime::UNIX_EPOCH);
        }
        Ok(())
    }

    /// Runs a document operation on vbucket `vb` in `collection` (which
    /// must exist): [`write_vb`](Self::write_vb) for a collection.
    pub(crate) fn write_vb_in<T>(
        &mut self,
        vb: u16,
        collection: u32,
        op: impl FnOnce(&mut VBucket, usize) -> Result<T, BucketError>,
    ) -> Result<T, BucketError> {
        let Some(entry) = self.manifest.collection(collection) else {
            return Err(BucketError::UnknownCollection(collection));
        };
        let max_ttl = self.enforced_ttl(entry.max_ttl);
        self.write_vb(vb, |v, max| {
            v.write_collection = collection;
            v.write_max_ttl = max_ttl;
            let result = op(v, max);
            v.write_collection = DEFAULT_COLLECTION;
            result
        })
    }

    /// SET, ADD or REPLACE of `key` in `collection`.
    pub fn store_in(
        &mut self,
        mode: StoreMode,
        collection: u32,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let owned = Bytes::copy_from_slice(key);
        let value = value.into();
        let vb = self.vbucket_of(key);
        self.write_vb_in(vb, collection, |v, max| {
            v.store(mode, owned, value, opts, max, now)
        })
    }

    /// Stores `value` under `key` in `collection` (SET).
    pub fn set_in(
        &mut self,
        collection: u32,
        key: &[u8],
        value: impl Into<Bytes>,
        opts: WriteOptions,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        self.store_in(StoreMode::Set, collection, key, value, opts, now)
    }

    /// Deletes `key` of `collection` (with `cas` 0 = any version).
    pub fn delete_in(
        &mut self,
        collection: u32,
        key: &[u8],
        cas: u64,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let vb = self.vbucket_of(key);
        self.write_vb_in(vb, collection, |v, _| v.delete(key, cas, now))
    }

    /// Reads `key` of `collection`.
    pub fn get_in(
        &mut self,
        collection: u32,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Document, BucketError> {
        let vb = self.vbucket_of(key);
        self.write_vb_in(vb, collection, |v, _| v.get(key, now).map(|d| (*d).clone()))
    }
}

/// The expiry a document written to a collection with max TTL `max_ttl`
/// gets, from the absolute `expiry` asked for (0 = none) at `now_unix`: a
/// non-zero max TTL caps the expiry at now + max TTL, and gives that expiry
/// to a document written without one; no max TTL, or 0, leaves it as it
/// is (the server's rule; `max_ttl` is the collection's, or the bucket's
/// when the collection has none: see `Bucket::enforced_ttl`).
pub(crate) fn limit_expiry(expiry: u32, max_ttl: Option<u32>, now_unix: u64) -> u32 {
    match max_ttl {
        Some(ttl) if ttl > 0 => {
            let cap = u32::try_from(now_unix + u64::from(ttl)).unwrap_or(u32::MAX);
            if expiry == 0 || expiry > cap {
                cap
            } else {
                expiry
            }
        }
        _ => expiry,
    }
}

fn begin_event(entry: &CollectionEntry, uid: u64) -> SystemEventItem {
    SystemEventItem {
        event: SystemEventId::BeginCollection,
        manifest_uid: uid,
        scope: entry.scope,
        collection: Some(entry.id),
        name: Bytes::from(entry.name.clone().into_bytes()),
        max_ttl: entry.max_ttl,
        history: entry.history,
        flush_uid: entry.flush_uid,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::bucket::BucketConfig;

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    #[test]
    fn manifest_changes_are_system_events_in_every_vbucket() {
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(2), 7);
        let scope = b.create_scope("inv", now()).unwrap();
        let c = b
            .create_collection("inv", "hotels", Some(60), now())
            .unwrap();
        assert_eq!((scope, c.id, b.manifest().uid()), (8, 8, 2));
        for vb in b.vbuckets() {
            assert_eq!(vb.high_seqno(), 2);
            let events: Vec<SystemEventItem> = vb
                .documents()
                .filter_map(SystemEventItem::from_document)
                .collect();
            assert_eq!(events.len(), 2);
            assert_eq!(events[0].event, SystemEventId::CreateScope);
            assert_eq!(
                &events[0].value()[..],
                &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 8]
            );
            assert_eq!(events[1].event, SystemEventId::BeginCollection);
            assert_eq!((events[1].version(), events[1].value().len()), (1, 20));
            assert_eq!(&events[1].name[..], b"hotels");
        }
        let info = b
            .set_in(c.id, b"k", "v", WriteOptions::new(), now())
            .unwrap();
        assert_eq!(&b.get_in(c.id, b"k", now()).unwrap().value[..], b"v");
        // Same key, other collection: a different document.
        assert_eq!(b.get(b"k", now()), Err(BucketError::KeyNotFound));
        b.set(b"k", "d", WriteOptions::new(), now()).unwrap();
        assert_eq!(&b.get_in(c.id, b"k", now()).unwrap().value[..], b"v");
        assert_eq!(
            b.set_in(99, b"k", "v", WriteOptions::new(), now()),
            Err(BucketError::UnknownCollection(99))
        );

        // Drop: the drop event replaces the create on disk; the document
        // is invisible (reads and backfills), the default one stays.
        b.drop_collection("inv", "hotels", now()).unwrap();
        assert_eq!(
            b.get_in(c.id, b"k", now()),
            Err(BucketError::UnknownCollection(c.id))
        );
        let vb = b.vbucket(info.vbucket).unwrap();
        assert_eq!(vb.documents_in(c.id).count(), 0);
        let scan = vb.scan(0, vb.high_seqno(), 100);
        let kinds: Vec<(DocumentKind, u32)> =
            scan.items.iter().map(|d| (d.kind, d.collection)).collect();
        assert_eq!(
            kinds,
            vec![
                (DocumentKind::SystemEvent, SYSTEM_EVENT_COLLECTION),
                (DocumentKind::Mutation, 0),
                (DocumentKind::SystemEvent, SYSTEM_EVENT_COLLECTION),
            ]
        );
        let drop = SystemEventItem::from_document(scan.items.last().unwrap()).unwrap();
        assert_eq!(drop.event, SystemEventId::EndCollection);
        assert!(scan.items.last().unwrap().is_deleted());
        assert_eq!(vb.collection_high_seqno(c.id), vb.high_seqno());
    }

    #[test]
    fn a_failover_that_loses_system_events_regenerates_them() {
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 7);
        b.create_scope("s", now()).unwrap(); // 1
        let kept = b.create_collection("s", "kept", None, now()).unwrap().id; // 2
        b.set_in(kept, b"k", "v", WriteOptions::new(), now())
            .unwrap(); // 3
        let gone = b.create_collection("s", "gone", None, now()).unwrap().id; // 4
        let made = b.create_collection("s", "made", None, now()).unwrap().id; // 5
        b.drop_collection("s", "gone", now()).unwrap(); // 6
        // Lose 4..=6: the creates of gone and made and the drop of gone.
        b.failover(0, 3).unwrap();
        let vb = b.vbucket(0).unwrap();
        assert_eq!(vb.high_seqno(), 4);
        let events: Vec<(u64, SystemEventId, Option<u32>)> = vb
            .scan(3, vb.high_seqno(), 10)
            .items
            .iter()
            .filter_map(|d| {
                SystemEventItem::from_document(d).map(|e| (d.seqno, e.event, e.collection))
            })
            .collect();
        // Only made is created again (gone was dropped in the manifest).
        assert_eq!(
            events,
            vec![(4, SystemEventId::BeginCollection, Some(made))]
        );
        b.set_in(made, b"m", "v", WriteOptions::new(), now())
            .unwrap();
        assert_eq!(b.vbucket(0).unwrap().documents_in(made).count(), 1);
        assert_eq!(b.vbucket(0).unwrap().documents_in(kept).count(), 1);
        assert!(
            b.set_in(gone, b"x", "v", WriteOptions::new(), now())
                .is_err()
        );
        // A failover that loses a drop drops the collection again.
        b.drop_collection("s", "kept", now()).unwrap(); // 6
        b.failover(0, 1).unwrap();
        let vb = b.vbucket(0).unwrap();
        let last = vb.scan(vb.high_seqno() - 1, vb.high_seqno(), 1).items;
        let event = SystemEventItem::from_document(&last[0]).unwrap();
        assert_eq!(
            (event.event, event.collection),
            (SystemEventId::EndCollection, Some(kept))
        );
        assert_eq!(vb.documents_in(kept).count(), 0);
    }

    #[test]
    fn a_failover_that_loses_a_modify_event_makes_it_again() {
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 7);
        let c = b
            .create_collection("_default", "c", None, now())
            .unwrap()
            .id; // 1
        b.set_in(c, b"k", "v", WriteOptions::new(), now()).unwrap(); // 2
        b.modify_collection("_default", "c", Some(Some(9)), Some(true), now())
            .unwrap(); // 3
        b.failover(0, 1).unwrap();
        let vb = b.vbucket(0).unwrap();
        let last = vb.scan(vb.high_seqno() - 1, vb.high_seqno(), 1).items;
        let event = SystemEventItem::from_document(&last[0]).unwrap();
        assert_eq!(
            (event.event, event.collection, event.max_ttl, event.history),
            (SystemEventId::ModifyCollection, Some(c), Some(9), true)
        );
        assert_eq!(event.manifest_uid, b.manifest().uid());
        // Nothing lost, nothing made: the vbucket already agrees.
        let high = b.vbucket(0).unwrap().high_seqno();
        b.failover(0, 0).unwrap();
        assert_eq!(b.vbucket(0).unwrap().high_seqno(), high);
    }

    #[test]
    fn a_modify_event_is_hidden_from_backfills_once_dropped_or_flushed_after() {
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 7);
        b.create_collection("_default", "c", None, now()).unwrap(); // 1
        b.create_collection("_default", "d", None, now()).unwrap(); // 2
        b.modify_collection("_default", "c", Some(Some(5)), None, now())
            .unwrap(); // 3
        b.modify_collection("_default", "d", Some(Some(5)), None, now())
            .unwrap(); // 4
        let modifies = |b: &Bucket| -> Vec<(u64, bool)> {
            let vb = b.vbucket(0).unwrap();
            vb.documents()
                .filter(|d| {
                    SystemEventId::from_raw(d.flags) == SystemEventId::ModifyCollection
                        && d.is_system_event()
                })
                .map(|d| (d.seqno, vb.is_logically_deleted(d)))
                .collect()
        };
        assert_eq!(modifies(&b), [(3, false), (4, false)]);
        b.drop_collection("_default", "c", now()).unwrap(); // 5
        b.flush_collection("_default", "d", now()).unwrap(); // 6
        assert_eq!(modifies(&b), [(3, true), (4, true)]);
    }

    #[test]
    fn flush_hides_older_documents_and_drop_scope_stamps_the_last_event() {
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 7);
        b.create_scope("s", now()).unwrap();
        let c = b.create_collection("s", "c", None, now()).unwrap();
        b.set_in(c.id, b"old", "1", WriteOptions::new(), now())
            .unwrap();
        b.flush_collection("s", "c", now()).unwrap();
        b.set_in(c.id, b"new", "2", WriteOptions::new(), now())
            .unwrap();
        assert_eq!(b.get_in(c.id, b"old", now()), Err(BucketError::KeyNotFound));
        let vb = b.vbucket(0).unwrap();
        let keys: Vec<&[u8]> = vb.documents_in(c.id).map(|d| &d.key[..]).collect();
        assert_eq!(keys, vec![&b"new"[..]]);
        let uid = b.manifest().uid();
        b.drop_scope("s", now()).unwrap();
        let vb = b.vbucket(0).unwrap();
        let tail: Vec<(SystemEventId, u64)> = vb
            .scan(vb.high_seqno() - 2, vb.high_seqno(), 10)
            .items
            .iter()
            .filter_map(|d| SystemEventItem::from_document(d))
            .map(|e| (e.event, e.manifest_uid))
            .collect();
        assert_eq!(
            tail,
            vec![
                (SystemEventId::EndCollection, uid),
                (SystemEventId::DropScope, uid + 1)
            ]
        );
        // Purging tombstones purges drop events too, never creates; the
        // compaction erases the dropped collection's documents.
        assert_eq!(b.vbucket(0).unwrap().live_count(), 2);
        let purge = b.purge(0, u64::MAX).unwrap();
        let vb = b.vbucket(0).unwrap();
        assert_eq!(purge, vb.high_seqno());
        assert_eq!((vb.live_count(), vb.tombstone_count()), (0, 0));
        assert_eq!(vb.documents().count(), 0);
    }
}
