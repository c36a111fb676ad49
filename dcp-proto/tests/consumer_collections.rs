//! The consumer's collections behaviour against a scripted producer on a
//! virtual clock: the filter in every stream request (first, after a
//! rollback, after a temporary failure), system events typed and their
//! manifest uid in the checkpoint, document keys split, SEQNO_ADVANCED
//! completing a snapshot, and FilterEmpty as a normal end.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use dcp_proto::codec::{Datatype, FrameDecoder, Status};
use dcp_proto::consumer::{
    CollectionsChange, Consumer, ConsumerConfig, Event, ManifestView, StreamFilter, StreamStart,
};
use dcp_proto::msg::client::{HelloFeature, HelloResponse};
use dcp_proto::msg::{
    CollectionDetails, FailoverEntry, FailoverLog, MarkerFormat, Message, Mutation, SeqnoAdvanced,
    SnapshotFlags, SnapshotMarker, StatusResponse, StreamEnd, StreamEndReason, StreamRequest,
    StreamRequestResponse, SystemEvent, SystemEventData, SystemEventId,
};

const UUID: u64 = 0xfeed;

struct Script {
    consumer: Consumer,
    now: Instant,
    decoder: FrameDecoder,
    tx: BytesMut,
}

impl Script {
    fn new() -> Self {
        let config = ConsumerConfig::new("test:coll", "default").with_collections(true);
        let now = Instant::now();
        let mut s = Self {
            consumer: Consumer::new(config, "clientnonce0123456789", now).unwrap(),
            now,
            decoder: FrameDecoder::new(),
            tx: BytesMut::new(),
        };
        let Message::Hello(hello) = s.one() else {
            panic!("HELLO first")
        };
        assert!(hello.features.contains(&HelloFeature::Collections));
        s.feed(HelloResponse::success(hello.opaque, hello.features.clone()));
        while !s.consumer.is_ready() {
            let (opcode, opaque) = match s.one() {
                Message::SelectBucket(m) => (dcp_proto::codec::Opcode::SelectBucket, m.opaque),
                Message::Open(m) => (dcp_proto::codec::Opcode::DcpOpen, m.opaque),
                Message::Control(m) => (dcp_proto::codec::Opcode::DcpControl, m.opaque),
                other => panic!("unexpected {other:?}"),
            };
            s.feed(StatusResponse::success(opcode, opaque));
        }
        assert!(s.consumer.negotiated().unwrap().collections);
        s.events();
        s
    }

    fn sent(&mut self) -> Vec<Message> {
        self.consumer.poll_transmit(&mut self.tx);
        let mut out = Vec::new();
        while let Some(frame) = self.decoder.decode(&mut self.tx).unwrap() {
            out.push(Message::decode(&frame).unwrap());
        }
        out
    }

    fn one(&mut self) -> Message {
        let mut sent = self.sent();
        assert_eq!(sent.len(), 1, "{sent:#?}");
        sent.remove(0)
    }

    fn feed(&mut self, message: impl Into<Message>) {
        let mut rx = BytesMut::new();
        message.into().encode(&mut rx).unwrap();
        self.consumer.handle_input(&mut rx, self.now).unwrap();
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.consumer.poll_event()).collect()
    }

    fn stream_request(&mut self) -> StreamRequest {
        match self.one() {
            Message::StreamRequest(r) => r,
            other => panic!("expected STREAM_REQ, got {other:?}"),
        }
    }
}

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

fn marker(opaque: u32, start: u64, end: u64) -> SnapshotMarker {
    SnapshotMarker {
        vbucket: 0,
        opaque,
        stream_id: None,
        start,
        end,
        flags: SnapshotFlags::MEMORY,
        format: MarkerFormat::V1,
    }
}

fn mutation(opaque: u32, seqno: u64, key: &'static [u8]) -> Mutation {
    Mutation {
        vbucket: 0,
        opaque,
        stream_id: None,
        cas: seqno,
        datatype: Datatype::RAW,
        by_seqno: seqno,
        rev_seqno: 1,
        flags: 0,
        expiration: 0,
        lock_time: 0,
        nru: 0,
        key: Bytes::from_static(key),
        value: Bytes::from_static(b"v"),
    }
}

fn event(opaque: u32, seqno: u64, id: SystemEventId, key: &'static [u8], v: &[u32]) -> SystemEvent {
    let mut value = BytesMut::new();
    value.put_u64(u64::from(v[0]));
    for x in &v[1..] {
        value.put_u32(*x);
    }
    SystemEvent {
        vbucket: 0,
        opaque,
        stream_id: None,
        by_seqno: seqno,
        event: id,
        version: 0,
        key: Bytes::from_static(key),
        value: value.freeze(),
    }
}

#[test]
fn the_filter_is_in_every_request_of_the_stream() {
    let mut s = Script::new();
    s.consumer
        .open_filtered_stream(
            0,
            StreamStart::Beginning,
            None,
            StreamFilter::Collections(vec![8, 0xa]),
        )
        .unwrap();
    let req = s.stream_request();
    let value = req.value.clone().expect("a filter");
    assert_eq!(value.collections, Some(vec![8, 0xa]));
    assert_eq!(value.uid, None);
    s.feed(StreamRequestResponse::accepted(
        req.opaque,
        log(&[(UUID, 0)]),
    ));
    let o = req.opaque;
    s.feed(marker(o, 1, 4));
    s.feed(event(
        o,
        2,
        SystemEventId::BeginCollection,
        b"c",
        &[5, 0, 8],
    ));
    s.feed(mutation(o, 3, b"\x08k"));
    // The snapshot's last item was another collection's: SEQNO_ADVANCED
    // completes it.
    s.feed(SeqnoAdvanced {
        vbucket: 0,
        opaque: o,
        stream_id: None,
        seqno: 4,
    });
    let events = s.events();
    let mut view = ManifestView::default();
    let mut keys = Vec::new();
    for e in &events {
        if let Event::SystemEvent(se, _) = e {
            assert!(matches!(
                view.apply(se).unwrap(),
                CollectionsChange::CollectionCreated { collection: 8, .. }
            ));
        }
        if let Some(k) = s.consumer.document_key(e) {
            keys.push((k.collection_id, k.key));
        }
    }
    assert_eq!(keys, vec![(8, Bytes::from_static(b"k"))]);
    let position = s.consumer.position(0).unwrap();
    assert_eq!(position.last_seqno, 4);
    assert_eq!(position.manifest_uid, 5);
    assert_eq!(s.consumer.checkpoint().vbuckets[&0].manifest_uid, 5);

    // The stream ends (the node's vbucket moved); reopening from the saved
    // position with the same filter asks with the uid seen.
    s.feed(StreamEnd {
        vbucket: 0,
        opaque: o,
        stream_id: None,
        reason: StreamEndReason::StateChanged,
    });
    s.events();
    s.consumer
        .open_filtered_stream(
            0,
            StreamStart::Position(position),
            None,
            StreamFilter::Collections(vec![8, 0xa]),
        )
        .unwrap();
    let again = s.stream_request();
    assert_eq!(again.start_seqno, 4);
    let value = again.value.clone().unwrap();
    assert_eq!(
        (value.collections, value.uid),
        (Some(vec![8, 0xa]), Some(5))
    );
    // A rollback: the next request keeps the filter. (Seqno 2 lies inside
    // the snapshot received, so the consumer cuts at its start.)
    s.feed(StreamRequestResponse::rollback(again.opaque, 2));
    let rolled = s.stream_request();
    assert_eq!(rolled.start_seqno, 0);
    assert_eq!(rolled.value.unwrap().collections, Some(vec![8, 0xa]));
    // A temporary failure: the retry keeps it too.
    s.feed(StreamRequestResponse::failed(
        rolled.opaque,
        Status::Etmpfail,
        Bytes::new(),
    ));
    assert!(s.sent().is_empty());
    s.now += Duration::from_secs(5);
    s.consumer.handle_timeout(s.now).unwrap();
    let retry = s.stream_request();
    assert_eq!(retry.value.unwrap().collections, Some(vec![8, 0xa]));
    assert_eq!(
        s.consumer.stream_filter(0),
        Some(&StreamFilter::Collections(vec![8, 0xa]))
    );
}

#[test]
fn filter_empty_is_a_normal_end() {
    let mut s = Script::new();
    s.consumer
        .open_filtered_stream(0, StreamStart::Beginning, None, StreamFilter::Scope(9))
        .unwrap();
    let req = s.stream_request();
    assert_eq!(req.value.clone().unwrap().scope, Some(9));
    s.feed(StreamRequestResponse::accepted(
        req.opaque,
        log(&[(UUID, 0)]),
    ));
    let o = req.opaque;
    s.feed(marker(o, 1, 2));
    s.feed(event(o, 1, SystemEventId::EndCollection, b"", &[7, 9, 8]));
    s.feed(event(o, 2, SystemEventId::DropScope, b"", &[8, 9]));
    s.feed(StreamEnd {
        vbucket: 0,
        opaque: o,
        stream_id: None,
        reason: StreamEndReason::FilterEmpty,
    });
    let events = s.events();
    assert!(matches!(
        events.last(),
        Some(Event::StreamEnded {
            reason: StreamEndReason::FilterEmpty,
            ..
        })
    ));
    assert!(!s.consumer.has_stream(0));
    assert!(s.consumer.error().is_none());
    assert_eq!(s.consumer.position(0).unwrap().manifest_uid, 8);
    // Nothing is re-requested.
    assert!(s.sent().is_empty());
}

#[test]
fn unfiltered_streams_send_no_value() {
    let mut s = Script::new();
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    assert_eq!(s.stream_request().value, None);
    assert_eq!(s.consumer.stream_filter(0), None);
}

/// The same typed data whether the producer sent fixed structs or
/// FlatBuffers, a ModifyCollection included; every event's manifest uid
/// reaches the checkpoint.
#[test]
fn flatbuffers_events_are_typed_and_their_uid_is_checkpointed() {
    let mut s = Script::new();
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let req = s.stream_request();
    s.feed(StreamRequestResponse::accepted(
        req.opaque,
        log(&[(UUID, 0)]),
    ));
    let o = req.opaque;
    let create = SystemEventData::begin_collection(5, 0, 8, Bytes::from_static(b"c"), None);
    let modify = SystemEventData::ModifyCollection(CollectionDetails {
        history: true,
        ..CollectionDetails::new(6, 0, 8, Bytes::from_static(b"c"), Some(30))
    });
    let drop = SystemEventData::EndCollection {
        manifest_uid: 7,
        scope_id: 0,
        collection_id: 8,
        system: false,
    };
    s.feed(marker(o, 1, 3));
    // The create as a fixed struct (version 0), the others as FlatBuffers.
    s.feed(SystemEvent::from_data(0, o, None, 1, &create, false).unwrap());
    s.feed(SystemEvent::from_data(0, o, None, 2, &modify, true).unwrap());
    s.feed(SystemEvent::from_data(0, o, None, 3, &drop, true).unwrap());
    let mut view = ManifestView::default();
    let mut changes = Vec::new();
    for e in s.events() {
        if let Event::SystemEvent(se, _) = e {
            let change = view.apply(&se).unwrap();
            if matches!(change, CollectionsChange::CollectionModified { .. }) {
                assert_eq!(view.collection(8).unwrap().max_ttl, Some(30));
                assert!(view.collection(8).unwrap().history);
            }
            changes.push(change);
        }
    }
    assert_eq!(
        changes,
        [
            CollectionsChange::CollectionCreated {
                manifest_uid: 5,
                scope: 0,
                collection: 8,
                name: Bytes::from_static(b"c"),
                max_ttl: None,
                history: false,
            },
            CollectionsChange::CollectionModified {
                manifest_uid: 6,
                scope: 0,
                collection: 8,
                name: Bytes::from_static(b"c"),
                max_ttl: Some(30),
                history: true,
            },
            CollectionsChange::CollectionDropped {
                manifest_uid: 7,
                scope: 0,
                collection: 8,
            },
        ]
    );
    assert!(!view.has_collection(8));
    assert_eq!(view.uid(), 7);
    assert_eq!(s.consumer.checkpoint().vbuckets[&0].manifest_uid, 7);
}

/// A FlatBuffers value that fails verification is a protocol error of the
/// connection, not a panic.
#[test]
fn a_hostile_flatbuffers_value_fails_the_connection_with_a_typed_error() {
    let mut s = Script::new();
    s.consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let req = s.stream_request();
    s.feed(StreamRequestResponse::accepted(
        req.opaque,
        log(&[(UUID, 0)]),
    ));
    s.feed(marker(req.opaque, 1, 1));
    let mut bad = event(
        req.opaque,
        1,
        SystemEventId::ModifyCollection,
        b"c",
        &[1, 2, 3],
    );
    bad.version = 2;
    let mut wire = BytesMut::new();
    Message::SystemEvent(bad).encode(&mut wire).unwrap();
    let err = s.consumer.handle_input(&mut wire, s.now).unwrap_err();
    assert!(err.to_string().contains("FlatBuffers Collection"), "{err}");
}
