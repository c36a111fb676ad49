//! Collections on the consumer: a stream's filter (sent as the stream
//! request's JSON value, kept for every re-request of the stream: resume,
//! rollback, retry), the collection and plain key of a document event, and
//! typed system events with a per-vbucket view of the manifest.
//!
//! System events read the same whichever value format the producer used:
//! the fixed structs, or FlatBuffers tables once
//! [`ConsumerConfig::flatbuffers_system_events`](super::ConsumerConfig::flatbuffers_system_events)
//! was accepted, which also brings ModifyCollection events
//! ([`CollectionsChange::CollectionModified`]: a new max TTL or history
//! setting). Every event's manifest uid is kept in the stream's position
//! and so in the checkpoint.
//!
//! A stream whose filtered collections (or scope) are all dropped ends with
//! [`StreamEndReason::FilterEmpty`](crate::msg::StreamEndReason::FilterEmpty):
//! a normal end, not to be re-requested with the same filter.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::event::Event;
use super::stream::StreamStart;
use super::{CommandError, Consumer};
use crate::codec::DecodeError;
use crate::msg::{
    CollectionDetails, CollectionKey, DEFAULT_COLLECTION, StreamRequestValue, SystemEvent,
    SystemEventData,
};
use crate::session::StreamKey;

/// Which collections a stream asks for (requires HELLO Collections; the
/// producer answers EINVAL otherwise, UnknownCollection / UnknownScope for
/// ids it does not know).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamFilter {
    /// Only these collections (ids).
    Collections(Vec<u32>),
    /// Every collection of this scope (id), those created later included.
    Scope(u32),
}

impl StreamFilter {
    /// The stream request value for this filter; `manifest_uid` (the last
    /// uid the stream saw, informational) is sent when not 0.
    pub fn request_value(&self, manifest_uid: u64) -> StreamRequestValue {
        let mut value = StreamRequestValue::default();
        match self {
            StreamFilter::Collections(ids) => value.collections = Some(ids.clone()),
            StreamFilter::Scope(id) => value.scope = Some(*id),
        }
        value.uid = (manifest_uid != 0).then_some(manifest_uid);
        value
    }
}

impl Consumer {
    /// Opens a stream like [`open_stream`](Self::open_stream), streaming
    /// only what `filter` selects. Every later request of this stream
    /// (after a rollback, a temporary failure, a resume) carries the same
    /// filter.
    pub fn open_filtered_stream(
        &mut self,
        stream: impl Into<StreamKey>,
        start: StreamStart,
        end_seqno: Option<u64>,
        filter: StreamFilter,
    ) -> Result<(), CommandError> {
        self.open_stream_with(stream.into(), start, end_seqno, Some(filter))
    }

    /// The filter of a stream, if it has one.
    pub fn stream_filter(&self, stream: impl Into<StreamKey>) -> Option<&StreamFilter> {
        self.vbuckets
            .get(&stream.into())?
            .stream
            .as_ref()?
            .filter
            .as_ref()
    }

    /// The collection and plain key of a document event (mutation,
    /// deletion, expiration, prepare), per what this connection
    /// negotiated; `None` for other events or a malformed prefix.
    pub fn document_key(&self, event: &Event) -> Option<CollectionKey> {
        let collections = self.negotiated().is_some_and(|n| n.collections);
        event.document_key(collections)
    }

    /// The value of the next stream request of `key`: its filter, with
    /// the last manifest uid seen.
    pub(crate) fn filter_for_request(&self, key: StreamKey) -> Option<StreamRequestValue> {
        let state = self.vbuckets.get(&key)?;
        let stream = state.stream.as_ref()?;
        let filter = stream.filter.as_ref()?;
        Some(filter.request_value(state.received.position().manifest_uid))
    }
}

impl Event {
    /// The collection and plain key of a document event (mutation,
    /// deletion, expiration, prepare): `collections` says whether the
    /// connection negotiated collections (keys then start with the
    /// collection id, LEB128); without it every key is in the default
    /// collection. `None` for other events or a malformed prefix.
    pub fn document_key(&self, collections: bool) -> Option<CollectionKey> {
        let key = match self {
            Event::Mutation(m, _) => &m.key,
            Event::Deletion(m, _) => &m.key,
            Event::Expiration(m, _) => &m.key,
            Event::Prepare(m, _) => &m.key,
            _ => return None,
        };
        if collections {
            CollectionKey::split(key).ok()
        } else {
            Some(CollectionKey {
                collection_id: DEFAULT_COLLECTION,
                key: key.clone(),
            })
        }
    }
}

/// A system event, typed: the same whichever value version the producer
/// sent (fixed structs, or FlatBuffers with `flatbuffers_system_events`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CollectionsChange {
    /// A collection was created.
    CollectionCreated {
        /// Manifest uid stamped on the event.
        manifest_uid: u64,
        /// Its scope.
        scope: u32,
        /// The collection.
        collection: u32,
        /// Its name.
        name: Bytes,
        /// Its max TTL, if any (`Some(0)`: documents never expire).
        max_ttl: Option<u32>,
        /// Whether it keeps history (FlatBuffers only; else false).
        history: bool,
    },
    /// A known collection was flushed (its create event moved to a new
    /// seqno): drop the data held for it.
    CollectionFlushed {
        /// Manifest uid stamped on the event.
        manifest_uid: u64,
        /// Its scope.
        scope: u32,
        /// The collection.
        collection: u32,
    },
    /// A collection's settings changed (FlatBuffers connections only):
    /// the collection as it now is.
    CollectionModified {
        /// Manifest uid stamped on the event.
        manifest_uid: u64,
        /// Its scope.
        scope: u32,
        /// The collection.
        collection: u32,
        /// Its name.
        name: Bytes,
        /// Its new max TTL, if any (`Some(0)`: documents never expire).
        max_ttl: Option<u32>,
        /// Whether it now keeps history.
        history: bool,
    },
    /// A collection was dropped: drop the data held for it.
    CollectionDropped {
        /// Manifest uid stamped on the event.
        manifest_uid: u64,
        /// Its scope.
        scope: u32,
        /// The collection.
        collection: u32,
    },
    /// A scope was created.
    ScopeCreated {
        /// Manifest uid stamped on the event.
        manifest_uid: u64,
        /// The scope.
        scope: u32,
        /// Its name.
        name: Bytes,
    },
    /// A scope was dropped (its collections' drop events came first).
    ScopeDropped {
        /// Manifest uid stamped on the event.
        manifest_uid: u64,
        /// The scope.
        scope: u32,
    },
}

impl CollectionsChange {
    /// The manifest uid the event carries.
    pub fn manifest_uid(&self) -> u64 {
        match self {
            CollectionsChange::CollectionCreated { manifest_uid, .. }
            | CollectionsChange::CollectionFlushed { manifest_uid, .. }
            | CollectionsChange::CollectionModified { manifest_uid, .. }
            | CollectionsChange::CollectionDropped { manifest_uid, .. }
            | CollectionsChange::ScopeCreated { manifest_uid, .. }
            | CollectionsChange::ScopeDropped { manifest_uid, .. } => *manifest_uid,
        }
    }
}

/// What a [`ManifestView`] knows of one collection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectionInfo {
    /// Its scope.
    pub scope: u32,
    /// Its name.
    pub name: Bytes,
    /// Its max TTL, if any.
    pub max_ttl: Option<u32>,
    /// Whether it keeps history.
    pub history: bool,
}

impl From<&CollectionDetails> for CollectionInfo {
    fn from(c: &CollectionDetails) -> Self {
        Self {
            scope: c.scope_id,
            name: c.name.clone(),
            max_ttl: c.max_ttl,
            history: c.history,
        }
    }
}

/// One vbucket's view of the collections manifest, built from its system
/// events: tells a create from a flush, and what exists with which
/// settings (modify events update them).
///
/// ```
/// use bytes::Bytes;
/// use dcp_proto::consumer::{CollectionsChange, ManifestView};
/// use dcp_proto::msg::{SystemEvent, SystemEventData};
/// let mut view = ManifestView::default();
/// let create = SystemEventData::begin_collection(2, 0, 8, Bytes::from_static(b"c"), None);
/// let event = SystemEvent::from_data(0, 1, None, 1, &create, true).unwrap();
/// assert!(matches!(
///     view.apply(&event).unwrap(),
///     CollectionsChange::CollectionCreated { collection: 8, .. }
/// ));
/// assert_eq!(view.collection(8).unwrap().max_ttl, None);
/// assert_eq!(view.uid(), 2);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestView {
    uid: u64,
    scopes: BTreeMap<u32, Bytes>,
    collections: BTreeMap<u32, CollectionInfo>,
}

impl ManifestView {
    /// The highest manifest uid seen.
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Whether collection `id` is known to exist (the default collection
    /// is assumed to, until dropped events say otherwise).
    pub fn has_collection(&self, id: u32) -> bool {
        self.collections.contains_key(&id)
    }

    /// The name of collection `id`, if created in this view.
    pub fn collection_name(&self, id: u32) -> Option<&Bytes> {
        self.collections.get(&id).map(|c| &c.name)
    }

    /// What the view knows of collection `id`.
    pub fn collection(&self, id: u32) -> Option<&CollectionInfo> {
        self.collections.get(&id)
    }

    /// The name of scope `id`, if created in this view.
    pub fn scope_name(&self, id: u32) -> Option<&Bytes> {
        self.scopes.get(&id)
    }

    /// Applies a system event; returns it typed.
    pub fn apply(&mut self, event: &SystemEvent) -> Result<CollectionsChange, DecodeError> {
        let change = match event.data()? {
            SystemEventData::BeginCollection(c) => {
                let info = CollectionInfo::from(&c);
                let known = self.collections.insert(c.collection_id, info).is_some();
                if known {
                    CollectionsChange::CollectionFlushed {
                        manifest_uid: c.manifest_uid,
                        scope: c.scope_id,
                        collection: c.collection_id,
                    }
                } else {
                    CollectionsChange::CollectionCreated {
                        manifest_uid: c.manifest_uid,
                        scope: c.scope_id,
                        collection: c.collection_id,
                        name: c.name,
                        max_ttl: c.max_ttl,
                        history: c.history,
                    }
                }
            }
            SystemEventData::ModifyCollection(c) => {
                let info = CollectionInfo::from(&c);
                self.collections.insert(c.collection_id, info);
                CollectionsChange::CollectionModified {
                    manifest_uid: c.manifest_uid,
                    scope: c.scope_id,
                    collection: c.collection_id,
                    name: c.name,
                    max_ttl: c.max_ttl,
                    history: c.history,
                }
            }
            SystemEventData::EndCollection {
                manifest_uid,
                scope_id,
                collection_id,
                ..
            } => {
                self.collections.remove(&collection_id);
                CollectionsChange::CollectionDropped {
                    manifest_uid,
                    scope: scope_id,
                    collection: collection_id,
                }
            }
            SystemEventData::CreateScope {
                manifest_uid,
                scope_id,
                name,
            } => {
                self.scopes.insert(scope_id, name.clone());
                CollectionsChange::ScopeCreated {
                    manifest_uid,
                    scope: scope_id,
                    name,
                }
            }
            SystemEventData::DropScope {
                manifest_uid,
                scope_id,
                ..
            } => {
                self.scopes.remove(&scope_id);
                self.collections.retain(|_, c| c.scope != scope_id);
                CollectionsChange::ScopeDropped {
                    manifest_uid,
                    scope: scope_id,
                }
            }
        };
        self.uid = self.uid.max(change.manifest_uid());
        Ok(change)
    }
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;
    use crate::msg::SystemEventId;

    fn event(id: SystemEventId, version: u8, key: &'static [u8], fields: &[u64]) -> SystemEvent {
        let mut value = BytesMut::new();
        value.put_u64(fields[0]);
        for f in &fields[1..] {
            value.put_u32(*f as u32);
        }
        SystemEvent {
            vbucket: 0,
            opaque: 1,
            stream_id: None,
            by_seqno: 1,
            event: id,
            version,
            key: Bytes::from_static(key),
            value: value.freeze(),
        }
    }

    #[test]
    fn the_view_tells_creates_from_flushes() {
        let mut view = ManifestView::default();
        let begin = event(SystemEventId::BeginCollection, 0, b"c", &[2, 8, 9]);
        assert!(matches!(
            view.apply(&begin).unwrap(),
            CollectionsChange::CollectionCreated { collection: 9, .. }
        ));
        assert_eq!(
            view.apply(&begin).unwrap(),
            CollectionsChange::CollectionFlushed {
                manifest_uid: 2,
                scope: 8,
                collection: 9
            }
        );
        let ttl = event(SystemEventId::BeginCollection, 1, b"t", &[3, 8, 10, 60]);
        assert!(matches!(
            view.apply(&ttl).unwrap(),
            CollectionsChange::CollectionCreated {
                max_ttl: Some(60),
                ..
            }
        ));
        let scope = event(SystemEventId::CreateScope, 0, b"s", &[4, 8]);
        assert!(matches!(
            view.apply(&scope).unwrap(),
            CollectionsChange::ScopeCreated { scope: 8, .. }
        ));
        let drop = event(SystemEventId::EndCollection, 0, b"", &[5, 8, 9]);
        assert!(matches!(
            view.apply(&drop).unwrap(),
            CollectionsChange::CollectionDropped { collection: 9, .. }
        ));
        assert!(!view.has_collection(9) && view.has_collection(10));
        let drop_scope = event(SystemEventId::DropScope, 0, b"", &[6, 8]);
        assert!(matches!(
            view.apply(&drop_scope).unwrap(),
            CollectionsChange::ScopeDropped { scope: 8, .. }
        ));
        assert!(!view.has_collection(10));
        assert_eq!(view.uid(), 6);
        // A value that does not fit its event is an error.
        let bad = event(SystemEventId::DropScope, 0, b"", &[6, 8, 9]);
        assert!(view.apply(&bad).is_err());
    }

    #[test]
    fn filters_become_request_values_and_keys_split() {
        let v = StreamFilter::Collections(vec![8, 0xa]).request_value(0);
        assert_eq!(v.to_json().unwrap(), br#"{"collections":["8","a"]}"#);
        let v = StreamFilter::Scope(9).request_value(0x1f);
        assert_eq!(v.to_json().unwrap(), br#"{"scope":"9","uid":"1f"}"#);
        let m = crate::msg::Mutation {
            vbucket: 0,
            opaque: 1,
            stream_id: None,
            cas: 1,
            datatype: crate::codec::Datatype::RAW,
            by_seqno: 1,
            rev_seqno: 1,
            flags: 0,
            expiration: 0,
            lock_time: 0,
            nru: 0,
            key: Bytes::from_static(b"\x88\x01k"),
            value: Bytes::new(),
        };
        let e = Event::Mutation(m, super::super::Credit::NONE);
        let k = e.document_key(true).unwrap();
        assert_eq!((k.collection_id, &k.key[..]), (0x88, &b"k"[..]));
        let k = e.document_key(false).unwrap();
        assert_eq!((k.collection_id, &k.key[..]), (0, &b"\x88\x01k"[..]));
    }
}
