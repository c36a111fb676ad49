//! Test support (feature `testing`): a consumer-side materialized view of a
//! DCP stream, to compare with what a bucket holds.
//!
//! Apply every polled event; rollbacks truncate the view as an application
//! must; sync writes are applied as a replica does (a PREPARE is pending,
//! invisible until its COMMIT makes it live at the commit seqno, or its
//! ABORT drops it; a committed change of the key completes a pending
//! prepare, as a disk snapshot sends commits as mutations); a change that does not advance its vbucket's seqno is reported
//! (a duplicate or a replay without a rollback). Compare the result with the
//! producer's bucket using [`live_documents`] (the default collection) or
//! [`live_documents_in`] (documents of every collection a filter selects).
//!
//! With collections ([`MaterializedView::with_collections`]) documents are
//! keyed by (collection, key), and the system events apply: a dropped or
//! flushed collection loses its documents (as versions, so that a rollback
//! behind the event brings them back).
//!
//! ```
//! use dcp_proto::bucket::{Bucket, BucketConfig, WriteOptions};
//! use dcp_proto::testing::{MaterializedView, live_documents};
//! let mut bucket = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 1);
//! bucket.set(b"k", "v", WriteOptions::new(), std::time::SystemTime::UNIX_EPOCH)?;
//! let view = MaterializedView::default(); // fed from a consumer's events
//! assert_ne!(view.live(0), live_documents(&bucket, 0));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use bytes::Bytes;

use crate::bucket::{Bucket, WriteOptions};
use crate::consumer::{Event, StreamFilter};
use crate::msg::{CollectionKey, DEFAULT_COLLECTION, SystemEventData};
use crate::session::StreamKey;

/// Live documents of one vbucket: key → (seqno, value).
pub type Live = BTreeMap<Bytes, (u64, Bytes)>;

/// Pending prepares of one vbucket: key → (prepare seqno, value, or
/// `None` for a prepared delete).
pub type Pending = BTreeMap<Bytes, (u64, Option<Bytes>)>;

/// The pending prepares of vbucket `vb` of `bucket`.
pub fn pending_prepares(bucket: &Bucket, vb: u16) -> Pending {
    bucket
        .vbucket(vb)
        .map(|v| {
            v.pending_documents()
                .iter()
                .map(|d| {
                    let value = (!d.is_deleted()).then(|| d.body());
                    (d.key.clone(), (d.seqno, value))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Live documents of one vbucket in every collection: (collection, key) →
/// (seqno, value).
pub type LiveByCollection = BTreeMap<(u32, Bytes), (u64, Bytes)>;

/// The live documents of vbucket `vb` of `bucket` (default collection).
pub fn live_documents(bucket: &Bucket, vb: u16) -> Live {
    live_documents_in(bucket, vb, |c| c == DEFAULT_COLLECTION)
        .into_iter()
        .map(|((_, key), doc)| (key, doc))
        .collect()
}

/// The live documents of vbucket `vb` of `bucket` in the collections
/// `wanted` selects (documents of dropped collections are not live).
pub fn live_documents_in(
    bucket: &Bucket,
    vb: u16,
    wanted: impl Fn(u32) -> bool,
) -> LiveByCollection {
    bucket
        .vbucket(vb)
        .map(|v| {
            v.documents()
                .filter(|d| d.is_live() && wanted(d.collection) && !v.is_logically_deleted(d))
                .map(|d| ((d.collection, d.key.clone()), (d.seqno, d.body())))
                .collect()
        })
        .unwrap_or_default()
}

/// The max visible seqno of every vbucket of `bucket` (its high seqno
/// without trailing prepares and aborts): what a stream without sync
/// writes reaches.
pub fn visible_high_seqnos(bucket: &Bucket) -> Vec<u64> {
    bucket
        .vbuckets()
        .map(|vb| vb.max_visible_seqno(vb.high_seqno()))
        .collect()
}

/// The high seqno of every vbucket of `bucket`, in vbucket order.
pub fn high_seqnos(bucket: &Bucket) -> Vec<u64> {
    bucket.vbuckets().map(|vb| vb.high_seqno()).collect()
}

/// Writes test documents `from..from + n` into `bucket` at wall-clock time
/// `now`: keys cycle over 997 names with JSON values `{"n":i}`, and every
/// 11th write deletes an earlier key instead, so streams carry both
/// mutations and deletions.
pub fn write_sample(bucket: &mut Bucket, from: u64, n: u64, now: SystemTime) {
    for i in from..from + n {
        if i % 11 == 10 {
            let earlier = format!("key-{}", (i / 2) % 997);
            // Deleting a key already deleted is fine here.
            let _ = bucket.delete(earlier.as_bytes(), 0, now);
        } else {
            let key = format!("key-{}", i % 997);
            let _ = bucket.set(
                key.as_bytes(),
                format!("{{\"n\":{i}}}"),
                WriteOptions::new(),
                now,
            );
        }
    }
}

/// Writes `n` documents `{"n":i}` (keys cycling over 31 names) into
/// `collection` of `bucket`, for `i` in `from..from + n`.
pub fn write_in(
    bucket: &mut Bucket,
    collection: u32,
    from: u64,
    n: u64,
    now: SystemTime,
) -> Result<(), crate::bucket::BucketError> {
    for i in from..from + n {
        let key = format!("key-{}", i % 31);
        bucket.set_in(
            collection,
            key.as_bytes(),
            format!("{{\"n\":{i}}}"),
            WriteOptions::new(),
            now,
        )?;
    }
    Ok(())
}

/// One [`MaterializedView`] (with collections) per stream id, for a
/// connection that runs several streams of a vbucket (stream ids enabled).
/// Events of a stream without an id count as stream id 0; events of no
/// stream are ignored.
#[derive(Debug, Clone, Default)]
pub struct ViewsByStreamId {
    views: BTreeMap<u16, MaterializedView>,
}

impl ViewsByStreamId {
    /// Applies one event to the view of its stream id.
    pub fn apply(&mut self, event: &Event) -> Result<(), OutOfOrder> {
        let Some(stream) = event.stream_key() else {
            return Ok(());
        };
        self.views
            .entry(stream.stream_id().unwrap_or(0))
            .or_insert_with(MaterializedView::with_collections)
            .apply(event)
    }

    /// The view of `stream_id`, if any of its events arrived.
    pub fn view(&self, stream_id: u16) -> Option<&MaterializedView> {
        self.views.get(&stream_id)
    }

    /// The live documents of `vb` as stream `stream_id` saw them.
    pub fn live_all(&self, stream_id: u16, vb: u16) -> LiveByCollection {
        self.view(stream_id)
            .map(|view| view.live_all(vb))
            .unwrap_or_default()
    }
}

/// The fixture of the stream-id loopback tests: a collection `hotels` in
/// scope `inventory` beside the default collection, and two streams per
/// vbucket on one connection, stream id [`TwoStreamsPerVbucket::HOTELS`]
/// following `hotels` and [`TwoStreamsPerVbucket::DEFAULT`] the default
/// collection.
#[derive(Debug, Clone, Copy)]
pub struct TwoStreamsPerVbucket {
    /// The id of the `hotels` collection.
    pub hotels: u32,
    vbuckets: u16,
}

impl TwoStreamsPerVbucket {
    /// The stream id of each vbucket's stream of `hotels`.
    pub const HOTELS: u16 = 1;
    /// The stream id of each vbucket's stream of the default collection.
    pub const DEFAULT: u16 = 2;

    /// Creates the scope and collection in `bucket`.
    pub fn create(
        bucket: &mut Bucket,
        now: SystemTime,
    ) -> Result<Self, crate::bucket::BucketError> {
        bucket.create_scope("inventory", now)?;
        let hotels = bucket
            .create_collection("inventory", "hotels", None, now)?
            .id;
        Ok(Self {
            hotels,
            vbuckets: bucket.vbuckets().count() as u16,
        })
    }

    /// Every stream: both stream ids of every vbucket.
    pub fn streams(&self) -> Vec<StreamKey> {
        (0..self.vbuckets)
            .flat_map(|vb| [Self::HOTELS, Self::DEFAULT].map(|sid| StreamKey::of(vb, Some(sid))))
            .collect()
    }

    /// The collection stream `key` follows.
    pub fn collection(&self, key: StreamKey) -> u32 {
        if key.stream_id() == Some(Self::HOTELS) {
            self.hotels
        } else {
            DEFAULT_COLLECTION
        }
    }

    /// The filter to open stream `key` with.
    pub fn filter(&self, key: StreamKey) -> StreamFilter {
        StreamFilter::Collections(vec![self.collection(key)])
    }

    /// Writes `n` documents into each collection (see [`write_in`]).
    pub fn write(
        &self,
        bucket: &mut Bucket,
        from: u64,
        n: u64,
        now: SystemTime,
    ) -> Result<(), crate::bucket::BucketError> {
        for collection in [self.hotels, DEFAULT_COLLECTION] {
            write_in(bucket, collection, from, n, now)?;
        }
        Ok(())
    }

    /// Whether stream `key` holds what `bucket` holds of its collection.
    pub fn caught_up(&self, bucket: &Bucket, views: &ViewsByStreamId, key: StreamKey) -> bool {
        let collection = self.collection(key);
        let sid = key.stream_id().unwrap_or(0);
        views.live_all(sid, key.vbucket())
            == live_documents_in(bucket, key.vbucket(), |c| c == collection)
    }
}

/// The opaque [`admin_request`] gives its command.
const ADMIN_OPAQUE: u32 = 2;

/// The bytes of a one-command admin session with a node of ours: SASL
/// PLAIN as `user`, then `command` (see
/// [`AdminCommand`](crate::producer::AdminCommand)). Read the answer with
/// [`admin_answer`].
pub fn admin_request(
    user: &str,
    password: &str,
    command: &crate::producer::AdminCommand,
) -> Result<bytes::BytesMut, crate::codec::EncodeError> {
    let mut out = bytes::BytesMut::new();
    crate::msg::client::SaslAuth::plain(1, user.as_bytes(), password.as_bytes())
        .encode(&mut out)?;
    command.encode(ADMIN_OPAQUE, &mut out)?;
    Ok(out)
}

/// The answer to [`admin_request`]'s command, once `rx` holds it: its
/// status and body. A refused login or an undecodable frame is an error.
pub fn admin_answer(
    rx: &mut bytes::BytesMut,
    decoder: &mut crate::codec::FrameDecoder,
) -> Result<Option<(crate::codec::Status, String)>, String> {
    while let Some(frame) = decoder.decode(rx).map_err(|e| e.to_string())? {
        if frame.opaque() == ADMIN_OPAQUE {
            let body = String::from_utf8_lossy(frame.value_slice()).into_owned();
            return Ok(Some((frame.status(), body)));
        }
        if !frame.status().is_success() {
            return Err(format!("login refused: {:?}", frame.status()));
        }
    }
    Ok(None)
}

/// A change that did not advance its vbucket's seqno.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("vbucket {vbucket}: seqno {seqno} after {last} (duplicate or out of order)")]
pub struct OutOfOrder {
    /// The vbucket.
    pub vbucket: u16,
    /// The change's seqno.
    pub seqno: u64,
    /// The last seqno applied.
    pub last: u64,
}

/// The versions of one key: (seqno, value or `None` for a delete).
type Versions = Vec<(u64, Option<Bytes>)>;

/// One prepare received: its seqno, value (`None`: a prepared delete) and
/// the seqno that completed it.
#[derive(Debug, Clone)]
struct Prepared {
    seqno: u64,
    value: Option<Bytes>,
    completed_at: Option<u64>,
}

/// What a consumer applied: the latest version of every key, per vbucket.
#[derive(Debug, Clone, Default)]
pub struct MaterializedView {
    /// Every version applied per (vbucket, collection, key), oldest first
    /// (a rollback must restore the version a lost change replaced).
    docs: HashMap<(u16, u32, Bytes), Versions>,
    /// Keys carry a collection prefix (the consumer negotiated
    /// collections).
    collections: bool,
    /// System events applied.
    pub system_events: u64,
    last_seqno: HashMap<u16, u64>,
    /// Changes applied.
    pub changes: u64,
    /// Rollbacks obeyed: (vbucket, seqno).
    pub rollbacks: Vec<(u16, u64)>,
    /// Prepares received per key, oldest first.
    prepared: HashMap<(u16, Bytes), Vec<Prepared>>,
    /// COMMITs whose prepare was never received (a producer bug in memory
    /// snapshots: the value is unknown).
    pub orphan_commits: u64,
    /// Sync-write messages applied (prepares, commits, aborts).
    pub sync_changes: u64,
    /// Vbuckets inside an OSO snapshot: (seqno before it, max seen).
    oso: HashMap<u16, (u64, u64)>,
}

impl MaterializedView {
    /// A view of a consumer that negotiated collections: keys carry the
    /// collection id.
    pub fn with_collections() -> Self {
        Self {
            collections: true,
            ..Self::default()
        }
    }

    /// Applies one event (changes, system events, seqno advances and
    /// rollbacks; other events are ignored).
    pub fn apply(&mut self, event: &Event) -> Result<(), OutOfOrder> {
        match event {
            Event::Prepare(p, _) => {
                self.advance(p.vbucket, p.by_seqno)?;
                self.sync_changes += 1;
                let value = (!p.deleted).then(|| p.value.clone());
                self.prepared
                    .entry((p.vbucket, p.key.clone()))
                    .or_default()
                    .push(Prepared {
                        seqno: p.by_seqno,
                        value,
                        completed_at: None,
                    });
                Ok(())
            }
            Event::Commit(c, _) => {
                self.advance(c.vbucket, c.commit_seqno)?;
                self.sync_changes += 1;
                let found = self
                    .prepared
                    .get_mut(&(c.vbucket, c.key.clone()))
                    .and_then(|v| {
                        v.iter_mut()
                            .find(|p| p.seqno == c.prepared_seqno && p.completed_at.is_none())
                    })
                    .map(|p| {
                        p.completed_at = Some(c.commit_seqno);
                        p.value.clone()
                    });
                match (found, self.split_key(&c.key)) {
                    (Some(value), Some((collection, key))) => {
                        self.changes += 1;
                        self.docs
                            .entry((c.vbucket, collection, key))
                            .or_default()
                            .push((c.commit_seqno, value));
                    }
                    _ => self.orphan_commits += 1,
                }
                Ok(())
            }
            Event::Abort(a, _) => {
                self.advance(a.vbucket, a.abort_seqno)?;
                self.sync_changes += 1;
                // An abort without its prepare is fine (disk snapshots).
                if let Some(p) = self
                    .prepared
                    .get_mut(&(a.vbucket, a.key.clone()))
                    .and_then(|v| v.iter_mut().find(|p| p.completed_at.is_none()))
                {
                    p.completed_at = Some(a.abort_seqno);
                }
                Ok(())
            }
            Event::OsoSnapshot(m, _) => {
                let last = self.last_seqno(m.vbucket);
                if m.is_start() {
                    self.oso.insert(m.vbucket, (last, last));
                }
                if m.is_end()
                    && let Some((_, max)) = self.oso.remove(&m.vbucket)
                {
                    self.last_seqno.insert(m.vbucket, max.max(last));
                }
                Ok(())
            }
            Event::SeqnoAdvanced(m, _) => {
                match self.oso.get_mut(&m.vbucket) {
                    Some((_, max)) => *max = (*max).max(m.seqno),
                    None => {
                        let last = self.last_seqno.entry(m.vbucket).or_default();
                        *last = (*last).max(m.seqno);
                    }
                }
                Ok(())
            }
            Event::Rollback { vbucket, seqno, .. } => {
                self.rollback(*vbucket, *seqno);
                Ok(())
            }
            Event::SystemEvent(e, _) => {
                self.advance(e.vbucket, e.by_seqno)?;
                self.system_events += 1;
                let cleared = match e.data() {
                    Ok(SystemEventData::BeginCollection(c)) => Some(c.collection_id),
                    Ok(SystemEventData::EndCollection { collection_id, .. }) => Some(collection_id),
                    _ => None,
                };
                // A create (of a flushed collection) or a drop: every
                // document of the collection is gone from here on.
                if let Some(collection) = cleared {
                    for ((vb, c, _), versions) in self.docs.iter_mut() {
                        if *vb == e.vbucket && *c == collection {
                            versions.push((e.by_seqno, None));
                        }
                    }
                }
                Ok(())
            }
            Event::Mutation(..) | Event::Deletion(..) | Event::Expiration(..) => {
                let (Some(vbucket), Some(seqno)) = (event.vbucket(), event.seqno()) else {
                    return Ok(());
                };
                self.advance(vbucket, seqno)?;
                let Some(key) = event.document_key(self.collections) else {
                    return Ok(());
                };
                let value = match event {
                    Event::Mutation(m, _) => Some(m.value.clone()),
                    _ => None,
                };
                self.changes += 1;
                // A committed change completes a pending prepare of the key
                // (a disk snapshot sends the commit as a mutation).
                let raw = match event {
                    Event::Mutation(m, _) => &m.key,
                    Event::Deletion(d, _) => &d.key,
                    Event::Expiration(e, _) => &e.key,
                    _ => return Ok(()),
                };
                if let Some(prepares) = self.prepared.get_mut(&(vbucket, raw.clone())) {
                    for p in prepares.iter_mut() {
                        if p.completed_at.is_none() && p.seqno < seqno {
                            p.completed_at = Some(seqno);
                        }
                    }
                }
                self.docs
                    .entry((vbucket, key.collection_id, key.key))
                    .or_default()
                    .push((seqno, value));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// The collection and plain key of a wire key.
    fn split_key(&self, raw: &Bytes) -> Option<(u32, Bytes)> {
        if self.collections {
            CollectionKey::split(raw)
                .ok()
                .map(|k| (k.collection_id, k.key))
        } else {
            Some((DEFAULT_COLLECTION, raw.clone()))
        }
    }

    /// Obeys a rollback: changes above `seqno` are undone.
    fn rollback(&mut self, vbucket: u16, seqno: u64) {
        self.rollbacks.push((vbucket, seqno));
        for ((vb, _, _), versions) in self.docs.iter_mut() {
            if *vb == vbucket {
                versions.retain(|(s, _)| *s <= seqno);
            }
        }
        self.docs.retain(|_, versions| !versions.is_empty());
        for ((vb, _), prepares) in self.prepared.iter_mut() {
            if *vb == vbucket {
                prepares.retain(|p| p.seqno <= seqno);
                for p in prepares.iter_mut() {
                    if p.completed_at.is_some_and(|c| c > seqno) {
                        p.completed_at = None;
                    }
                }
            }
        }
        self.prepared.retain(|_, prepares| !prepares.is_empty());
        self.oso.remove(&vbucket);
        self.last_seqno.insert(vbucket, seqno);
    }

    fn advance(&mut self, vbucket: u16, seqno: u64) -> Result<(), OutOfOrder> {
        if let Some((before, max)) = self.oso.get_mut(&vbucket) {
            // Inside an OSO snapshot: any order, above the pre-OSO seqno.
            if seqno <= *before {
                return Err(OutOfOrder {
                    vbucket,
                    seqno,
                    last: *before,
                });
            }
            *max = (*max).max(seqno);
            return Ok(());
        }
        let last = self.last_seqno.entry(vbucket).or_default();
        if seqno <= *last {
            return Err(OutOfOrder {
                vbucket,
                seqno,
                last: *last,
            });
        }
        *last = seqno;
        Ok(())
    }

    /// Pending prepares of `vb`: key → (prepare seqno, value).
    pub fn pending(&self, vb: u16) -> Pending {
        self.prepared
            .iter()
            .filter(|((v, _), _)| *v == vb)
            .filter_map(|((_, key), prepares)| {
                let p = prepares.iter().rev().find(|p| p.completed_at.is_none())?;
                Some((key.clone(), (p.seqno, p.value.clone())))
            })
            .collect()
    }

    /// The first vbucket whose pending prepares differ from `bucket`'s.
    pub fn first_pending_difference(&self, bucket: &Bucket) -> Option<u16> {
        (0..bucket.num_vbuckets()).find(|&vb| self.pending(vb) != pending_prepares(bucket, vb))
    }

    /// Forgets the documents of `vb` in the collections `which` selects:
    /// what an application does when a filtered stream is refused with
    /// UnknownCollection or UnknownScope (the collections were dropped and
    /// their drop events may have been purged).
    pub fn forget_collections(&mut self, vb: u16, which: impl Fn(u32) -> bool) {
        self.docs.retain(|(v, c, _), _| *v != vb || !which(*c));
    }

    /// The last seqno applied for `vb`.
    pub fn last_seqno(&self, vb: u16) -> u64 {
        self.last_seqno.get(&vb).copied().unwrap_or(0)
    }

    /// Whether every vbucket `i` reached `targets[i]`.
    pub fn reached(&self, targets: &[u64]) -> bool {
        (0u16..)
            .zip(targets)
            .all(|(vb, &target)| self.last_seqno(vb) >= target)
    }

    /// Live documents of `vb` in the default collection: key → (seqno,
    /// value).
    pub fn live(&self, vb: u16) -> Live {
        self.live_all(vb)
            .into_iter()
            .filter(|((c, _), _)| *c == DEFAULT_COLLECTION)
            .map(|((_, key), doc)| (key, doc))
            .collect()
    }

    /// Live documents of `vb` in every collection: (collection, key) →
    /// (seqno, value).
    pub fn live_all(&self, vb: u16) -> LiveByCollection {
        self.docs
            .iter()
            .filter(|((v, _, _), _)| *v == vb)
            .filter_map(|((_, c, key), versions)| {
                let (seqno, value) = versions.last()?;
                value.clone().map(|v| ((*c, key.clone()), (*seqno, v)))
            })
            .collect()
    }

    /// The first vbucket whose live documents differ from `bucket`'s.
    pub fn first_difference(&self, bucket: &Bucket) -> Option<u16> {
        (0..bucket.num_vbuckets()).find(|&vb| self.live(vb) != live_documents(bucket, vb))
    }

    /// The first vbucket whose live documents (every collection) differ
    /// from `bucket`'s in the collections `wanted` selects.
    pub fn first_difference_in(
        &self,
        bucket: &Bucket,
        wanted: impl Fn(u32) -> bool + Copy,
    ) -> Option<u16> {
        (0..bucket.num_vbuckets())
            .find(|&vb| self.live_all(vb) != live_documents_in(bucket, vb, wanted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::BucketConfig;
    use crate::codec::Datatype;
    use crate::consumer::Credit;
    use crate::msg::Mutation;

    fn mutation(seqno: u64, key: &'static [u8]) -> Event {
        Event::Mutation(
            Mutation {
                vbucket: 0,
                opaque: 1,
                stream_id: None,
                cas: 1,
                datatype: Datatype::RAW,
                by_seqno: seqno,
                rev_seqno: 1,
                flags: 0,
                expiration: 0,
                lock_time: 0,
                nru: 0,
                key: Bytes::from_static(key),
                value: Bytes::from_static(b"v"),
            },
            Credit::NONE,
        )
    }

    #[test]
    fn rollbacks_truncate_and_replays_are_caught() {
        let mut view = MaterializedView::default();
        view.apply(&mutation(1, b"a")).unwrap();
        view.apply(&mutation(2, b"b")).unwrap();
        assert_eq!(
            view.apply(&mutation(2, b"c")),
            Err(OutOfOrder {
                vbucket: 0,
                seqno: 2,
                last: 2
            })
        );
        view.apply(&Event::Rollback {
            stream_id: None,
            vbucket: 0,
            seqno: 1,
        })
        .unwrap();
        assert_eq!(view.live(0).len(), 1);
        view.apply(&mutation(2, b"c")).unwrap();
        assert!(view.reached(&[2]));

        let mut bucket = Bucket::new(BucketConfig::new("b").with_vbuckets(1), 1);
        write_sample(&mut bucket, 0, 12, SystemTime::UNIX_EPOCH);
        assert_eq!(high_seqnos(&bucket), [12]);
        assert_eq!(view.first_difference(&bucket), Some(0));
    }
}
