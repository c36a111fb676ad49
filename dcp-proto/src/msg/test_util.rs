//! Helpers for the message modules' unit tests.

use bytes::BytesMut;

use crate::codec::{Frame, FrameHead};

/// Encodes a frame from raw sections and parses it back, so tests can build
/// frames a message's own encoder would never produce.
pub(crate) fn frame(
    head: FrameHead,
    framing: &[u8],
    extras: &[u8],
    key: &[u8],
    value: &[u8],
) -> Frame {
    let mut buf = BytesMut::new();
    head.encode(&mut buf, framing, extras, key, value)
        .expect("sections fit");
    Frame::parse(buf.freeze()).expect("one whole frame")
}
