//! DCP_CACHE_TRANSFER (0x66) and DCP_CACHE_TRANSFER_END (0x67): resident
//! items the producer copies to warm the client's cache before streaming.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode};
use crate::msg::check::{self, be_u16, be_u32, be_u64};
use crate::msg::stream_id::StreamIdFraming;

/// Size of a record's fixed header.
const RECORD_HEADER_LEN: usize = 40;
/// Smallest value: one header plus the shortest (2-byte) key.
const MIN_VALUE_LEN: usize = RECORD_HEADER_LEN + MIN_KEY_LEN;
/// Keys are collection-prefixed: at least one prefix byte and one key byte.
const MIN_KEY_LEN: usize = 2;

/// One item of a [`CacheTransfer`]; key and value are zero-copy slices of
/// the message's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTransferItem {
    /// Document CAS.
    pub cas: u64,
    /// Sequence number (at most the stream's start seqno).
    pub by_seqno: u64,
    /// Revision sequence number.
    pub rev_seqno: u64,
    /// Client flags, verbatim as in DCP_MUTATION.
    pub flags: u32,
    /// Expiry time (absolute Unix seconds; 0 = none).
    pub expiration: u32,
    /// Datatype of `value`.
    pub datatype: Datatype,
    /// Cache hint byte.
    pub cache_hint: u8,
    /// Collection-prefixed document key (at least 2 bytes).
    pub key: Bytes,
    /// Document value (may be empty: key-only transfer).
    pub value: Bytes,
}

impl CacheTransferItem {
    /// Bytes this item's record takes in the message value.
    pub fn encoded_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key.len() + self.value.len()
    }

    /// Appends the record; lengths must already be checked.
    fn put(&self, buf: &mut BytesMut, key_len: u16, value_len: u32) {
        buf.put_u64(self.cas);
        buf.put_u64(self.by_seqno);
        buf.put_u64(self.rev_seqno);
        buf.put_u32(value_len);
        buf.put_u32(self.flags);
        buf.put_u32(self.expiration);
        buf.put_u16(key_len);
        buf.put_u8(self.datatype.0);
        buf.put_u8(self.cache_hint);
        buf.put_slice(&self.key);
        buf.put_slice(&self.value);
    }
}

/// A well-formed record at some position of the items: its header and the
/// lengths of its key and value.
struct Record<'a> {
    header: &'a [u8; RECORD_HEADER_LEN],
    key_len: usize,
    value_len: usize,
}

impl Record<'_> {
    fn len(&self) -> usize {
        RECORD_HEADER_LEN + self.key_len + self.value_len
    }
}

/// Reads the record at `pos` of `items`, or says what is wrong and where
/// (offset relative to `items`).
fn record_at(items: &[u8], pos: usize) -> Result<Record<'_>, (DecodeErrorKind, usize)> {
    let rest = items.get(pos..).unwrap_or_default();
    let Some(header) = rest.first_chunk::<RECORD_HEADER_LEN>() else {
        return Err((
            DecodeErrorKind::Truncated {
                needed: RECORD_HEADER_LEN,
                available: rest.len(),
            },
            pos,
        ));
    };
    let key_len = usize::from(be_u16(header, 36));
    if key_len < MIN_KEY_LEN {
        return Err((
            DecodeErrorKind::InvalidField {
                field: "key_len",
                value: key_len as u64,
            },
            pos + 36,
        ));
    }
    let datatype = header[38];
    if !Datatype(datatype).is_valid() {
        return Err((DecodeErrorKind::InvalidDatatype(datatype), pos + 38));
    }
    let value_len = be_u32(header, 24) as usize;
    let record = Record {
        header,
        key_len,
        value_len,
    };
    let needed = RECORD_HEADER_LEN
        .saturating_add(key_len)
        .saturating_add(value_len);
    if rest.len() < needed {
        return Err((
            DecodeErrorKind::Truncated {
                needed,
                available: rest.len(),
            },
            pos,
        ));
    }
    Ok(record)
}

/// DCP_CACHE_TRANSFER: one or more resident items, sent before the stream's
/// mutations when the stream request set the CacheTransfer flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTransfer {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
    /// The raw records (40-byte header + key + value each); read them with
    /// [`CacheTransfer::items`].
    pub items: Bytes,
}

impl CacheTransfer {
    /// Decodes a DCP_CACHE_TRANSFER request frame, checking every record.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpCacheTransfer)?;
        check::raw_datatype(frame)?;
        // extras_len doubles as a format version; only 0 exists.
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::zero_cas(frame)?;
        let items = frame.value_slice();
        let at = frame.header().value_offset();
        if items.len() < MIN_VALUE_LEN {
            return Err(frame.error(
                DecodeErrorKind::ValueLength {
                    expected: "at least 42",
                    got: items.len(),
                },
                at,
            ));
        }
        let mut pos = 0;
        while pos < items.len() {
            match record_at(items, pos) {
                Ok(record) => pos += record.len(),
                Err((kind, offset)) => return Err(frame.error(kind, at + offset)),
            }
        }
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
            items: frame.value(),
        })
    }

    /// Builds a message whose value holds `items`, in order.
    ///
    /// Fails if `items` is empty, a key is shorter than 2 or longer than
    /// 65535 bytes, or a value exceeds `u32::MAX` bytes.
    pub fn from_items(
        vbucket: u16,
        opaque: u32,
        stream_id: Option<u16>,
        items: &[CacheTransferItem],
    ) -> Result<Self, EncodeError> {
        if items.is_empty() {
            return Err(EncodeError::InvalidField {
                field: "items",
                reason: "a cache transfer holds at least one item",
            });
        }
        let mut buf = BytesMut::with_capacity(items.iter().map(|i| i.encoded_len()).sum());
        for item in items {
            let key_len = u16::try_from(item.key.len())
                .ok()
                .filter(|&len| usize::from(len) >= MIN_KEY_LEN)
                .ok_or(EncodeError::InvalidField {
                    field: "key",
                    reason: "cache-transfer keys are 2..=65535 bytes (collection-prefixed)",
                })?;
            let value_len =
                u32::try_from(item.value.len()).map_err(|_| EncodeError::InvalidField {
                    field: "value",
                    reason: "longer than u32::MAX bytes",
                })?;
            item.put(&mut buf, key_len, value_len);
        }
        Ok(Self {
            vbucket,
            opaque,
            stream_id,
            items: buf.freeze(),
        })
    }

    /// Iterates the items (zero-copy).
    ///
    /// Stops at the first malformed record, which only a hand-built
    /// `items` can contain: [`CacheTransfer::decode`] checks them all.
    pub fn items(&self) -> CacheTransferItems<'_> {
        CacheTransferItems {
            items: &self.items,
            pos: 0,
        }
    }

    /// Appends the frame to `buf`; `items` is written as is.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpCacheTransfer, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &[],
            &[],
            &self.items,
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 } + self.items.len()
    }
}

impl<'a> IntoIterator for &'a CacheTransfer {
    type Item = CacheTransferItem;
    type IntoIter = CacheTransferItems<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.items()
    }
}

/// Iterator over the items of a [`CacheTransfer`].
#[derive(Debug, Clone)]
pub struct CacheTransferItems<'a> {
    items: &'a Bytes,
    pos: usize,
}

impl Iterator for CacheTransferItems<'_> {
    type Item = CacheTransferItem;

    fn next(&mut self) -> Option<CacheTransferItem> {
        if self.pos >= self.items.len() {
            return None;
        }
        let Ok(record) = record_at(self.items, self.pos) else {
            self.pos = self.items.len();
            return None;
        };
        let header = record.header;
        // record_at checked that key and value lie within `items`.
        let key_at = self.pos + RECORD_HEADER_LEN;
        let value_at = key_at + record.key_len;
        let end = value_at + record.value_len;
        self.pos = end;
        Some(CacheTransferItem {
            cas: be_u64(header, 0),
            by_seqno: be_u64(header, 8),
            rev_seqno: be_u64(header, 16),
            flags: be_u32(header, 28),
            expiration: be_u32(header, 32),
            datatype: Datatype(header[38]),
            cache_hint: header[39],
            key: self.items.slice(key_at..value_at),
            value: self.items.slice(value_at..end),
        })
    }
}

impl core::iter::FusedIterator for CacheTransferItems<'_> {}

/// DCP_CACHE_TRANSFER_END: the cache transfer is over; the stream's
/// mutations follow. Sent only when end_seqno > start_seqno (otherwise the
/// stream ends with STREAM_END).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTransferEnd {
    /// Vbucket of the stream.
    pub vbucket: u16,
    /// Opaque of the STREAM_REQ that opened the stream.
    pub opaque: u32,
    /// Stream id, when the connection enabled stream ids.
    pub stream_id: Option<u16>,
}

impl CacheTransferEnd {
    /// Decodes a DCP_CACHE_TRANSFER_END request frame (empty body, CAS 0).
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::DcpCacheTransferEnd)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        check::zero_cas(frame)?;
        Ok(Self {
            vbucket: frame.vbucket(),
            opaque: frame.opaque(),
            stream_id: check::stream_id(frame)?,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let framing = StreamIdFraming::new(self.stream_id)?;
        FrameHead::request(Opcode::DcpCacheTransferEnd, self.vbucket, self.opaque).encode(
            buf,
            framing.as_slice(),
            &[],
            &[],
            &[],
        )
    }

    /// Bytes this message occupies on the wire (its flow-control size).
    pub fn wire_len(&self) -> usize {
        24 + if self.stream_id.is_some() { 3 } else { 0 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Magic;
    use crate::msg::test_util::frame;

    fn rejects(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = CacheTransfer::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    fn rejects_end(frame: &Frame, kind: DecodeErrorKind, offset: usize) {
        let err = CacheTransferEnd::decode(frame).unwrap_err();
        assert_eq!((err.kind, err.offset), (kind, offset));
    }

    fn item(key: &'static [u8], value: &'static [u8]) -> CacheTransferItem {
        CacheTransferItem {
            cas: 0x1234,
            by_seqno: 1,
            rev_seqno: 5,
            flags: 0xcafe_f00d,
            expiration: 7,
            datatype: Datatype::JSON,
            cache_hint: 0x0a,
            key: Bytes::from_static(key),
            value: Bytes::from_static(value),
        }
    }

    /// One record header with the given key and value lengths and datatype.
    fn record(key_len: u16, value_len: u32, datatype: u8) -> Vec<u8> {
        let mut r = BytesMut::new();
        r.put_bytes(0, 24);
        r.put_u32(value_len);
        r.put_bytes(0, 8);
        r.put_u16(key_len);
        r.put_u8(datatype);
        r.put_u8(0);
        r.to_vec()
    }

    #[test]
    fn round_trip_items_with_and_without_stream_id() {
        let items = [
            item(b"\x00hello", b"{\"a\":1}"),
            item(b"\x08k", b""),
            CacheTransferItem {
                datatype: Datatype::SNAPPY | Datatype::XATTR,
                ..item(b"\x09key", b"zzz")
            },
        ];
        for sid in [None, Some(12)] {
            let m = CacheTransfer::from_items(0x210, 0x1210, sid, &items).unwrap();
            assert_eq!(
                m.items.len(),
                items
                    .iter()
                    .map(CacheTransferItem::encoded_len)
                    .sum::<usize>()
            );
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            let back = CacheTransfer::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap();
            assert_eq!(back, m);
            assert_eq!(back.items().collect::<Vec<_>>(), items);
            assert_eq!((&back).into_iter().count(), 3);
        }
    }

    #[test]
    fn record_layout() {
        let m = CacheTransfer::from_items(0, 0, None, &[item(b"\x00hello", b"world")]).unwrap();
        let expected = "00000000000012340000000000000001000000000000000500000005cafef00d\
                        000000070006010a0068656c6c6f776f726c64";
        assert_eq!(hex::encode(&m.items), expected);
    }

    #[test]
    fn from_items_rejects_what_the_decoder_would() {
        assert!(CacheTransfer::from_items(0, 0, None, &[]).is_err());
        assert!(CacheTransfer::from_items(0, 0, None, &[item(b"k", b"")]).is_err());
        let long = CacheTransferItem {
            key: Bytes::from(vec![0u8; 65536]),
            ..item(b"kk", b"")
        };
        assert!(CacheTransfer::from_items(0, 0, None, &[long]).is_err());
    }

    #[test]
    fn iterator_stops_on_hand_built_garbage() {
        let good = CacheTransfer::from_items(0, 0, None, &[item(b"\x00a", b"v")]).unwrap();
        let mut bytes = good.items.to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        let m = CacheTransfer {
            items: Bytes::from(bytes),
            ..good
        };
        let mut it = m.items();
        assert!(it.next().is_some());
        assert!(it.next().is_none());
        assert!(it.next().is_none());
    }

    #[test]
    fn rejections() {
        let head = FrameHead::request(Opcode::DcpCacheTransfer, 0, 1);
        let mut ok = record(2, 0, 0);
        ok.extend_from_slice(b"\x00k");
        rejects(
            &frame(
                FrameHead::request(Opcode::DcpCacheTransferEnd, 0, 1),
                &[],
                &[],
                b"",
                &ok,
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpCacheTransfer,
                got: Opcode::DcpCacheTransferEnd,
            },
            1,
        );
        rejects(
            &frame(
                FrameHead {
                    magic: Magic::ClientResponse,
                    ..head
                },
                &[],
                &[],
                b"",
                &ok,
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            &frame(head.with_datatype(Datatype::SNAPPY), &[], &[], b"", &ok),
            DecodeErrorKind::InvalidDatatype(2),
            5,
        );
        rejects(
            &frame(head, &[], &[1], b"", &ok),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 1,
            },
            4,
        );
        rejects(
            &frame(head, &[], &[], b"k", &ok),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            &frame(head.with_cas(3), &[], &[], b"", &ok),
            DecodeErrorKind::NonZeroCas(3),
            16,
        );
        rejects(
            &frame(head, &[], &[], b"", &ok[..41]),
            DecodeErrorKind::ValueLength {
                expected: "at least 42",
                got: 41,
            },
            24,
        );
        // First record claims a value that is not there.
        let mut short = record(2, 10, 0);
        short.extend_from_slice(b"\x00k12345");
        rejects(
            &frame(head, &[0x22, 0, 1], &[], b"", &short),
            DecodeErrorKind::Truncated {
                needed: 52,
                available: 47,
            },
            27,
        );
        // A well-formed record followed by a partial header.
        let mut tail = ok.clone();
        tail.extend_from_slice(&[0; 39]);
        rejects(
            &frame(head, &[], &[], b"", &tail),
            DecodeErrorKind::Truncated {
                needed: 40,
                available: 39,
            },
            24 + 42,
        );
        // Second record with a 1-byte key.
        let mut bad_key = ok.clone();
        bad_key.extend_from_slice(&record(1, 0, 0));
        bad_key.extend_from_slice(b"k");
        rejects(
            &frame(head, &[], &[], b"", &bad_key),
            DecodeErrorKind::InvalidField {
                field: "key_len",
                value: 1,
            },
            24 + 42 + 36,
        );
        let mut bad_dt = record(2, 0, 0x08);
        bad_dt.extend_from_slice(b"\x00k");
        rejects(
            &frame(head, &[], &[], b"", &bad_dt),
            DecodeErrorKind::InvalidDatatype(0x08),
            24 + 38,
        );
        rejects(
            &frame(head, &[0x22, 0, 0], &[], b"", &ok),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }

    proptest::proptest! {
        #[test]
        fn any_items_round_trip(
            items in proptest::collection::vec(
                (
                    proptest::prelude::any::<(u64, u64, u64, u32, u32, u8)>(),
                    0u8..8,
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 2..20),
                    proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
                ),
                1..5,
            )
        ) {
            let items: Vec<_> = items
                .into_iter()
                .map(|((cas, by_seqno, rev_seqno, flags, expiration, cache_hint), dt, key, value)| {
                    CacheTransferItem {
                        cas,
                        by_seqno,
                        rev_seqno,
                        flags,
                        expiration,
                        datatype: Datatype(dt),
                        cache_hint,
                        key: Bytes::from(key),
                        value: Bytes::from(value),
                    }
                })
                .collect();
            let m = CacheTransfer::from_items(1, 2, None, &items).unwrap();
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            let back = CacheTransfer::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap();
            proptest::prop_assert_eq!(back.items().collect::<Vec<_>>(), items);
        }

        #[test]
        fn arbitrary_values_never_panic(
            value in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)
        ) {
            let head = FrameHead::request(Opcode::DcpCacheTransfer, 0, 1);
            if let Ok(m) = CacheTransfer::decode(&frame(head, &[], &[], b"", &value)) {
                let walked: usize = m.items().map(|i| i.encoded_len()).sum();
                proptest::prop_assert_eq!(walked, value.len());
            }
        }
    }

    #[test]
    fn end_round_trip_with_and_without_stream_id() {
        for sid in [None, Some(65535)] {
            let m = CacheTransferEnd {
                vbucket: 3,
                opaque: 4,
                stream_id: sid,
            };
            let mut buf = BytesMut::new();
            m.encode(&mut buf).unwrap();
            assert_eq!(buf.len(), m.wire_len());
            assert_eq!(
                CacheTransferEnd::decode(&Frame::parse(buf.freeze()).unwrap()).unwrap(),
                m
            );
        }
    }

    #[test]
    fn doc_vector_cache_transfer_end_1() {
        let bytes = hex::decode("806700000000021000000000000012100000000000000000").unwrap();
        let m = CacheTransferEnd::decode(&Frame::parse(bytes.clone().into()).unwrap()).unwrap();
        assert_eq!(
            m,
            CacheTransferEnd {
                vbucket: 0x210,
                opaque: 0x1210,
                stream_id: None,
            }
        );
        let mut buf = BytesMut::new();
        m.encode(&mut buf).unwrap();
        assert_eq!(&buf[..], &bytes[..]);
    }

    #[test]
    fn end_rejections() {
        let head = FrameHead::request(Opcode::DcpCacheTransferEnd, 0, 1);
        rejects_end(
            &frame(
                FrameHead::request(Opcode::DcpStreamEnd, 0, 1),
                &[],
                &[],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::DcpCacheTransferEnd,
                got: Opcode::DcpStreamEnd,
            },
            1,
        );
        rejects_end(
            &frame(
                FrameHead {
                    magic: Magic::ClientResponse,
                    ..head
                },
                &[],
                &[],
                b"",
                b"",
            ),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects_end(
            &frame(head.with_datatype(Datatype::JSON), &[], &[], b"", b""),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects_end(
            &frame(head, &[], &[0; 4], b"", b""),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects_end(
            &frame(head, &[], &[], b"k", b""),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects_end(
            &frame(head, &[], &[], b"", b"v"),
            DecodeErrorKind::ValueNotAllowed(1),
            24,
        );
        rejects_end(
            &frame(head.with_cas(1), &[], &[], b"", b""),
            DecodeErrorKind::NonZeroCas(1),
            16,
        );
        rejects_end(
            &frame(head, &[0x22, 0, 0], &[], b"", b""),
            DecodeErrorKind::InvalidField {
                field: "stream id",
                value: 0,
            },
            24,
        );
    }
}
