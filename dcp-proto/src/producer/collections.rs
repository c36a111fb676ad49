//! Collections on the producer: the per-stream filter (behavior.md §6.1)
//! and the SYSTEM_EVENT encoding (wire.md §12).
//!
//! A connection without HELLO Collections sees only the default
//! collection's documents and no system events. A collections connection
//! without a filter sees everything; with `{"collections":[...]}` it sees
//! those collections' documents and system events, with `{"scope":...}`
//! every collection of the scope (collections created in it later
//! included) and the scope's own events. The filter follows the stream's
//! own drop events: once every filtered collection (or the scope) is
//! dropped the stream ends with FilterEmpty.

use std::collections::BTreeSet;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::admin::AdminCommand;
use super::outgoing::StreamAddress;
use crate::bucket::{Bucket, BucketError, Document, Manifest, SystemEventItem, VBucket};
use crate::codec::{EncodeError, Opcode, Status};
use crate::msg::{DEFAULT_COLLECTION, StreamRequestValue, SystemEvent, SystemEventId};

/// Which items a stream sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StreamFilter {
    /// A connection without collections: default-collection documents only,
    /// no system events.
    Legacy,
    /// A collections connection without a filter: everything.
    PassThrough,
    /// These collections (ids), and their system events.
    Collections(BTreeSet<u32>),
    /// Every collection of a scope, and the scope's system events.
    Scope {
        scope: u32,
        collections: BTreeSet<u32>,
        dropped: bool,
    },
}

/// The error body of an unknown collection or scope: the manifest uid the
/// server checked against.
fn manifest_body(manifest: &Manifest) -> Bytes {
    Bytes::from(format!(r#"{{"manifest_uid":"{:x}"}}"#, manifest.uid()))
}

impl StreamFilter {
    /// The filter of a stream request; an unknown collection or scope is
    /// UnknownCollection / UnknownScope with the manifest uid as body.
    pub(crate) fn from_request(
        value: Option<&StreamRequestValue>,
        collections: bool,
        manifest: &Manifest,
    ) -> Result<Self, (Status, Bytes)> {
        if !collections {
            return Ok(StreamFilter::Legacy);
        }
        let Some(value) = value else {
            return Ok(StreamFilter::PassThrough);
        };
        if let Some(ids) = &value.collections {
            if ids.iter().any(|&id| manifest.collection(id).is_none()) {
                return Err((Status::UnknownCollection, manifest_body(manifest)));
            }
            return Ok(StreamFilter::Collections(ids.iter().copied().collect()));
        }
        if let Some(scope) = value.scope {
            if manifest.scope(scope).is_none() {
                return Err((Status::UnknownScope, manifest_body(manifest)));
            }
            return Ok(StreamFilter::Scope {
                scope,
                collections: manifest.collections_of(scope).map(|c| c.id).collect(),
                dropped: false,
            });
        }
        Ok(StreamFilter::PassThrough)
    }

    /// Whether the stream filters collections (a `collections` or `scope`
    /// filter).
    pub(crate) fn is_filtered(&self) -> bool {
        matches!(
            self,
            StreamFilter::Collections(_) | StreamFilter::Scope { .. }
        )
    }

    /// Whether nothing is left to stream: every filtered collection, or the
    /// scope, was dropped.
    pub(crate) fn is_empty(&self) -> bool {
        match self {
            StreamFilter::Collections(ids) => ids.is_empty(),
            StreamFilter::Scope { dropped, .. } => *dropped,
            StreamFilter::Legacy | StreamFilter::PassThrough => false,
        }
    }

    /// Whether the stream sends `doc`; system events of the filter update
    /// it (a create in the scope joins it, a drop leaves it).
    pub(crate) fn admits(&mut self, doc: &Document) -> bool {
        if !doc.is_system_event() {
            return match self {
                StreamFilter::Legacy => doc.collection == DEFAULT_COLLECTION,
                StreamFilter::PassThrough => true,
                StreamFilter::Collections(ids) => ids.contains(&doc.collection),
                StreamFilter::Scope { collections, .. } => collections.contains(&doc.collection),
            };
        }
        let Some(event) = SystemEventItem::from_document(doc) else {
            return false;
        };
        match self {
            StreamFilter::Legacy => false,
            StreamFilter::PassThrough => true,
            StreamFilter::Collections(ids) => match event.collection {
                Some(c) if ids.contains(&c) => {
                    if event.event == SystemEventId::EndCollection {
                        ids.remove(&c);
                    }
                    true
                }
                _ => false,
            },
            StreamFilter::Scope {
                scope,
                collections,
                dropped,
            } => {
                if event.scope != *scope {
                    return false;
                }
                match (event.event, event.collection) {
                    (SystemEventId::BeginCollection, Some(c)) => {
                        collections.insert(c);
                    }
                    (SystemEventId::EndCollection, Some(c)) => {
                        collections.remove(&c);
                    }
                    (SystemEventId::DropScope, _) => *dropped = true,
                    _ => {}
                }
                true
            }
        }
    }

    /// The highest seqno of what the filter streams in `vb` (the end a
    /// ToLatest request gets), or `None` when not filtered: its
    /// collections' documents and system events, and for a scope the
    /// scope's events (a dropped collection's drop event included).
    pub(crate) fn high_seqno(&self, vb: &VBucket) -> Option<u64> {
        let (ids, scope): (Vec<u32>, Option<u32>) = match self {
            StreamFilter::Collections(ids) => (ids.iter().copied().collect(), None),
            StreamFilter::Scope {
                scope, collections, ..
            } => (collections.iter().copied().collect(), Some(*scope)),
            StreamFilter::Legacy | StreamFilter::PassThrough => return None,
        };
        let collections = ids.into_iter().map(|c| vb.collection_high_seqno(c));
        Some(
            collections
                .chain(scope.map(|s| vb.scope_event_seqno(s)))
                .max()
                .unwrap_or(0),
        )
    }

    /// Whether a purge above `from` cannot have removed anything this
    /// filter streams: nothing of it lies above `from` (the server's
    /// exemption for filtered streams).
    pub(crate) fn purge_exempt(&self, from: u64, vb: &VBucket) -> bool {
        self.high_seqno(vb).is_some_and(|high| high <= from)
    }
}

/// Whether `doc` is a ModifyCollection event (only connections that
/// enabled `flatbuffers_system_events` receive those).
pub(crate) fn is_modify_event(doc: &Document) -> bool {
    doc.is_system_event() && SystemEventId::from_raw(doc.flags) == SystemEventId::ModifyCollection
}

/// Appends the SYSTEM_EVENT for a stored system event: its stored
/// FlatBuffers value (version 2) when the connection enabled
/// `flatbuffers_system_events`, else the fixed struct (version 0, or 1 for
/// a create with a max TTL).
pub(crate) fn encode_system_event(
    doc: &Document,
    to: StreamAddress,
    flatbuffers: bool,
    buf: &mut BytesMut,
) -> Result<Opcode, EncodeError> {
    let (version, value) = if flatbuffers {
        (2, doc.value.clone())
    } else {
        let item = SystemEventItem::from_document(doc).ok_or(EncodeError::InvalidField {
            field: "value",
            reason: "a stored system event that does not parse",
        })?;
        (item.version(), item.value())
    };
    SystemEvent {
        vbucket: to.vbucket,
        opaque: to.opaque,
        stream_id: to.stream_id,
        by_seqno: doc.seqno,
        event: SystemEventId::from_raw(doc.flags),
        version,
        key: doc.key.clone(),
        value,
    }
    .encode(buf)?;
    Ok(Opcode::DcpSystemEvent)
}

/// Runs a collections admin command: the result is the new manifest uid
/// and the id of the scope or collection concerned (hex strings), or the
/// manifest for `get_manifest`.
pub(crate) fn run_admin(
    command: AdminCommand,
    bucket: &mut Bucket,
    now: SystemTime,
) -> Result<serde_json::Value, BucketError> {
    let id = match command {
        AdminCommand::CreateScope { scope } => bucket.create_scope(&scope, now)?,
        AdminCommand::DropScope { scope } => bucket.drop_scope(&scope, now)?,
        AdminCommand::CreateCollection {
            scope,
            collection,
            max_ttl,
        } => {
            bucket
                .create_collection(&scope, &collection, max_ttl, now)?
                .id
        }
        AdminCommand::DropCollection { scope, collection } => {
            bucket.drop_collection(&scope, &collection, now)?.id
        }
        AdminCommand::FlushCollection { scope, collection } => {
            bucket.flush_collection(&scope, &collection, now)?.id
        }
        AdminCommand::ModifyCollection {
            scope,
            collection,
            max_ttl,
            no_max_ttl,
            history,
        } => {
            let max_ttl = if no_max_ttl {
                Some(None)
            } else {
                max_ttl.map(Some)
            };
            bucket
                .modify_collection(&scope, &collection, max_ttl, history, now)?
                .id
        }
        _ => return Ok(bucket.manifest().to_json()),
    };
    Ok(serde_json::json!({
        "uid": format!("{:x}", bucket.manifest().uid()),
        "id": format!("{id:x}"),
    }))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::bucket::{BucketConfig, WriteOptions};

    #[test]
    fn filters_follow_their_drop_events() {
        let now = UNIX_EPOCH + Duration::from_secs(1);
        let mut b = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 1);
        let s = b.create_scope("s", now).unwrap();
        let c = b.create_collection("s", "c", None, now).unwrap().id;
        let d = b.create_collection("_default", "d", None, now).unwrap().id;
        b.set(b"k", "v", WriteOptions::new(), now).unwrap();
        b.set_in(c, b"k", "v", WriteOptions::new(), now).unwrap();
        b.drop_scope("s", now).unwrap();
        let docs: Vec<Document> = {
            let vb = b.vbucket(0).unwrap();
            vb.scan(0, vb.high_seqno(), 100)
                .items
                .iter()
                .map(|d| (**d).clone())
                .collect()
        };
        let run = |mut f: StreamFilter| {
            let admitted: Vec<u64> = docs
                .iter()
                .filter(|d| f.admits(d))
                .map(|d| d.seqno)
                .collect();
            (admitted, f.is_empty())
        };
        // Seqnos: 1 create scope, 2 create c, 3 create d, 4 k, 5 k in c
        // (dropped: skipped by the scan), 6 drop c, 7 drop scope. On disk
        // the drops replaced the creates of c and s.
        assert_eq!(run(StreamFilter::Legacy), (vec![4], false));
        assert_eq!(run(StreamFilter::PassThrough), (vec![3, 4, 6, 7], false));
        let m = b.manifest();
        let only_c = StreamFilter::Collections([c].into());
        assert_eq!(run(only_c), (vec![6], true));
        assert_eq!(run(StreamFilter::Collections([d].into())), (vec![3], false));
        let scope = StreamFilter::Scope {
            scope: s,
            collections: [c].into(),
            dropped: false,
        };
        assert_eq!(run(scope), (vec![6, 7], true));
        let value = |json: &str| StreamRequestValue::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            StreamFilter::from_request(Some(&value(r#"{"collections":["8"]}"#)), true, m),
            Err((
                Status::UnknownCollection,
                Bytes::from(format!(r#"{{"manifest_uid":"{:x}"}}"#, m.uid()))
            ))
        );
        assert_eq!(
            StreamFilter::from_request(Some(&value(r#"{"scope":"8"}"#)), true, m).map_err(|e| e.0),
            Err(Status::UnknownScope)
        );
        assert_eq!(
            StreamFilter::from_request(Some(&value(r#"{"collections":["9","0"]}"#)), true, m),
            Ok(StreamFilter::Collections([0, 9].into()))
        );
        assert_eq!(
            StreamFilter::from_request(Some(&value(r#"{"uid":"3"}"#)), true, m),
            Ok(StreamFilter::PassThrough)
        );
        assert_eq!(
            StreamFilter::from_request(None, false, m),
            Ok(StreamFilter::Legacy)
        );
    }
}
