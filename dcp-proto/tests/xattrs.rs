//! Extended attributes end to end, our consumer against our producer: what
//! each DCP_OPEN flag combination delivers, read back with
//! `Mutation::document` / `Deletion::document`.

mod in_memory;
mod producer_harness;

use std::collections::BTreeMap;

use bytes::Bytes;
use dcp_proto::bucket::{BucketConfig, BucketError, WriteOptions};
use dcp_proto::codec::Datatype;
use dcp_proto::consumer::{ConsumerConfig, Event, SnappyMode, StreamStart};
use dcp_proto::msg::{DocumentValue, OpenFlags, XattrValue};
use in_memory::InMemory;
use producer_harness::*;

const SYNC: &[u8] = b"{\"rev\":\"3-abc\"}";
const META: &[u8] = b"{\"owner\":\"ann\"}";

/// What the consumer saw of each key: the last change's kind and value.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Live(DocumentValue),
    Deleted(DocumentValue),
}

fn body(i: u32) -> String {
    format!("{{\"n\":{i},\"text\":\"{}\"}}", "lorem ipsum ".repeat(8))
}

/// doc-0..doc-9: even ones carry a system and a user xattr; doc-7 and
/// doc-8 are deleted afterwards (doc-8 had xattrs, so its tombstone keeps
/// the system one). doc-10 is a tombstone given both kinds of xattrs (as a
/// sub-document write to a deleted document does).
fn bucket() -> InMemory {
    let bucket = BucketConfig::new(BUCKET).with_vbuckets(1);
    let mut link = InMemory::new(config(1).with_bucket(bucket));
    let wall = link.node.wall_clock(link.now);
    for i in 0..10u32 {
        let key = format!("doc-{i}");
        let (value, options) = if i.is_multiple_of(2) {
            let mut raw = Vec::new();
            XattrValue::put(
                &mut raw,
                &[(b"_sync", SYNC), (b"meta", META)],
                body(i).as_bytes(),
            );
            (
                raw,
                WriteOptions::new().datatype(Datatype::XATTR | Datatype::JSON),
            )
        } else {
            (body(i).into_bytes(), WriteOptions::new())
        };
        link.node
            .bucket_mut()
            .set(key.as_bytes(), value, options, wall)
            .unwrap();
    }
    for key in ["doc-7", "doc-8"] {
        link.node
            .bucket_mut()
            .delete(key.as_bytes(), 0, wall)
            .unwrap();
    }
    link.node
        .bucket_mut()
        .set_deleted_xattrs(b"doc-10", &[(b"_sync", SYNC), (b"meta", META)], wall)
        .unwrap();
    // Only a deleted (or missing) document takes them.
    assert_eq!(
        link.node
            .bucket_mut()
            .set_deleted_xattrs(b"doc-1", &[(b"meta", META)], wall),
        Err(BucketError::KeyExists)
    );
    link
}

/// What arrived per key, and the bytes received.
fn stream(flags: OpenFlags, snappy: SnappyMode) -> (BTreeMap<String, Seen>, u64) {
    let mut link = bucket();
    let config = ConsumerConfig::new("xattrs", BUCKET)
        .with_open_flags(flags)
        .with_snappy(snappy)
        .with_auto_ack(true);
    let (mut consumer, conn) = link.connect(config, USER, PASSWORD);
    consumer
        .open_stream(0, StreamStart::Beginning, None)
        .unwrap();
    let mut seen = BTreeMap::new();
    link.pump(&mut consumer, conn, |_, event, _| {
        let (key, value) = match &event {
            Event::Mutation(m, _) => (&m.key, Seen::Live(m.document().unwrap())),
            Event::Deletion(d, _) => (&d.key, Seen::Deleted(d.document().unwrap())),
            _ => return,
        };
        seen.insert(String::from_utf8(key.to_vec()).unwrap(), value);
    });
    assert_eq!(seen.len(), 11, "every key streamed: {seen:?}");
    let negotiated = consumer.negotiated().unwrap();
    assert_eq!(negotiated.snappy, snappy != SnappyMode::Off);
    assert_eq!(negotiated.xattr, flags.contains(OpenFlags::INCLUDE_XATTRS));
    (seen, consumer.stats().bytes_received)
}

fn pairs(value: &DocumentValue) -> Vec<(Vec<u8>, Vec<u8>)> {
    value
        .xattrs
        .iter()
        .flat_map(|x| x.pairs())
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

#[test]
fn without_include_xattrs_only_bodies_arrive() {
    for (key, seen) in stream(OpenFlags::empty(), SnappyMode::Off).0 {
        match seen {
            Seen::Live(doc) => {
                let i: u32 = key["doc-".len()..].parse().unwrap();
                assert_eq!(doc.xattrs, None, "{key}");
                assert_eq!(doc.body, Bytes::from(body(i)), "{key}");
                assert!(doc.is_json(), "{key}");
            }
            Seen::Deleted(doc) => {
                assert_eq!((doc.xattrs, doc.body.len()), (None, 0), "{key}");
            }
        }
    }
}

#[test]
fn include_xattrs_splits_xattrs_from_bodies() {
    // The same with values compressed on the wire and undone on arrival.
    let mut received = Vec::new();
    for snappy in [SnappyMode::Off, SnappyMode::Decompress] {
        let (seen, bytes) = stream(OpenFlags::INCLUDE_XATTRS, snappy);
        received.push(bytes);
        for (key, seen) in seen {
            let i: u32 = key["doc-".len()..].parse().unwrap();
            match seen {
                Seen::Live(doc) => {
                    let expected: Vec<(Vec<u8>, Vec<u8>)> = if i.is_multiple_of(2) {
                        vec![
                            (b"_sync".to_vec(), SYNC.to_vec()),
                            (b"meta".to_vec(), META.to_vec()),
                        ]
                    } else {
                        vec![]
                    };
                    assert_eq!(pairs(&doc), expected, "{key}");
                    assert_eq!(doc.xattrs.is_some(), i.is_multiple_of(2), "{key}");
                    assert_eq!(doc.body, Bytes::from(body(i)), "{key}");
                    assert!(doc.is_json(), "{key}");
                }
                Seen::Deleted(doc) if key == "doc-8" || key == "doc-10" => {
                    // System xattrs outlive the document; user ones are not
                    // sent without IncludeDeletedUserXattrs.
                    assert_eq!(pairs(&doc), [(b"_sync".to_vec(), SYNC.to_vec())]);
                    assert!(doc.body.is_empty());
                }
                Seen::Deleted(doc) => {
                    assert_eq!((doc.xattrs, doc.body.len()), (None, 0), "{key}");
                }
            }
        }
    }
    assert!(
        received[1] < received[0],
        "compressed on the wire: {received:?}"
    );
}

#[test]
fn no_value_keeps_the_xattrs_only() {
    let flags = OpenFlags::INCLUDE_XATTRS | OpenFlags::NO_VALUE;
    for (key, seen) in stream(flags, SnappyMode::Off).0 {
        let i: u32 = key["doc-".len()..].parse().unwrap();
        if let Seen::Live(doc) = seen {
            assert!(doc.body.is_empty(), "{key}");
            assert_eq!(doc.xattrs.is_some(), i.is_multiple_of(2), "{key}");
            if i.is_multiple_of(2) {
                assert_eq!(doc.xattr(b"meta"), Some(META), "{key}");
            }
        }
    }
}

#[test]
fn include_deleted_user_xattrs_sends_user_xattrs_of_tombstones() {
    let flags = OpenFlags::INCLUDE_XATTRS | OpenFlags::INCLUDE_DELETED_USER_XATTRS;
    let (seen, _) = stream(flags, SnappyMode::Off);
    let Seen::Deleted(doc) = &seen["doc-10"] else {
        panic!("doc-10 is deleted: {seen:?}");
    };
    assert_eq!(
        pairs(doc),
        [
            (b"_sync".to_vec(), SYNC.to_vec()),
            (b"meta".to_vec(), META.to_vec())
        ]
    );
    // A plain delete dropped doc-8's user xattrs for good.
    let Seen::Deleted(doc) = &seen["doc-8"] else {
        panic!("doc-8 is deleted: {seen:?}");
    };
    assert_eq!(pairs(doc), [(b"_sync".to_vec(), SYNC.to_vec())]);
}
