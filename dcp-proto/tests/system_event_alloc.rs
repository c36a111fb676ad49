//! Reading a FlatBuffers (version-2) system event allocates nothing: the
//! verifier and the reader work on the frame's bytes, and names come out
//! as slices of them. A hostile value costs one error message, whatever
//! lengths it claims. (One test in this binary: the allocator counts every
//! thread.)

use std::alloc::System;

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::Frame;
use dcp_proto::msg::{CollectionDetails, SystemEvent, SystemEventData};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

fn frame_of(data: &SystemEventData) -> Bytes {
    let event = SystemEvent::from_data(3, 7, Some(2), 11, data, true).unwrap();
    let mut buf = BytesMut::new();
    event.encode(&mut buf).unwrap();
    buf.freeze()
}

#[test]
fn flatbuffers_values_are_read_without_allocating() {
    let modify = SystemEventData::ModifyCollection(CollectionDetails {
        history: true,
        flush_uid: 4,
        ..CollectionDetails::new(12, 8, 9, Bytes::from_static(b"orders"), Some(60))
    });
    let good = frame_of(&modify);
    // The same frame with the value's string length claiming 4 GiB.
    let mut bad = good.to_vec();
    let at = bad.len() - 12;
    bad[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    let bad = Bytes::from(bad);

    // A Bytes made from a Vec allocates its shared header on the first
    // clone: take that one before counting.
    let frame_bytes = good.clone();
    let region = Region::new(GLOBAL);
    let frame = Frame::parse(frame_bytes).unwrap();
    let event = SystemEvent::decode(&frame).unwrap();
    let data = event.data().unwrap();
    let stats = region.change();
    assert_eq!(data, modify);
    assert_eq!(stats.allocations, 0, "{stats:?}");

    let region = Region::new(GLOBAL);
    let err = SystemEvent::decode(&Frame::parse(bad).unwrap()).unwrap_err();
    let stats = region.change();
    assert!(err.to_string().contains("FlatBuffers Collection"), "{err}");
    assert!(stats.bytes_allocated < 1024, "{stats:?}");
}
