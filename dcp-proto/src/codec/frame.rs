//! Whole frames: a validated header plus the frame's bytes, and the encoder.

use core::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::datatype::Datatype;
use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::frame_info::{FrameInfoIter, find_stream_id};
use super::header::{HEADER_LEN, Header, Magic};
use super::opcode::Opcode;
use super::status::Status;

/// One complete frame: its decoded header and all its bytes (header
/// included). Sections are handed out as `&[u8]` or as zero-copy [`Bytes`]
/// slices of the input.
#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    header: Header,
    bytes: Bytes,
}

impl Frame {
    /// Parses exactly one frame from `bytes`.
    ///
    /// Fails if the header is invalid, if `bytes` is shorter than the frame,
    /// or if bytes are left over after it.
    ///
    /// ```
    /// use bytes::Bytes;
    /// use dcp_proto::codec::{Frame, Opcode};
    /// let noop_reply = Bytes::from_static(&[
    ///     0x81, 0x5c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0,
    /// ]);
    /// let frame = Frame::parse(noop_reply)?;
    /// assert_eq!(frame.opcode(), Opcode::DcpNoop);
    /// assert!(frame.status().is_success());
    /// # Ok::<(), dcp_proto::codec::DecodeError>(())
    /// ```
    pub fn parse(bytes: Bytes) -> Result<Frame, DecodeError> {
        let header = Header::decode(&bytes)?;
        let frame_len = header.frame_len();
        if bytes.len() < frame_len {
            return Err(DecodeError::new(
                DecodeErrorKind::Truncated {
                    needed: frame_len,
                    available: bytes.len(),
                },
                Some(header.opcode),
                bytes.len(),
            ));
        }
        if bytes.len() > frame_len {
            return Err(DecodeError::new(
                DecodeErrorKind::TrailingBytes {
                    frame_len,
                    extra: bytes.len() - frame_len,
                },
                Some(header.opcode),
                frame_len,
            ));
        }
        Ok(Frame { header, bytes })
    }

    /// Builds a frame from a header already validated against `bytes`
    /// (used by [`crate::codec::FrameDecoder`]).
    #[inline]
    pub(crate) fn from_parts(header: Header, bytes: Bytes) -> Frame {
        debug_assert_eq!(bytes.len(), header.frame_len());
        Frame { header, bytes }
    }

    /// The decoded header.
    #[inline]
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The magic.
    #[inline]
    pub fn magic(&self) -> Magic {
        self.header.magic
    }

    /// The opcode.
    #[inline]
    pub fn opcode(&self) -> Opcode {
        self.header.opcode
    }

    /// The opaque.
    #[inline]
    pub fn opaque(&self) -> u32 {
        self.header.opaque
    }

    /// The vbucket (requests).
    #[inline]
    pub fn vbucket(&self) -> u16 {
        self.header.vbucket()
    }

    /// The status (responses).
    pub fn status(&self) -> Status {
        self.header.status()
    }

    /// The CAS.
    #[inline]
    pub fn cas(&self) -> u64 {
        self.header.cas
    }

    /// The datatype.
    #[inline]
    pub fn datatype(&self) -> Datatype {
        self.header.datatype
    }

    /// Whether this is a request (0x80, 0x82, 0x08).
    #[inline]
    pub fn is_request(&self) -> bool {
        self.header.magic.is_request()
    }

    /// Whether this is a response (0x81, 0x83, 0x18).
    pub fn is_response(&self) -> bool {
        self.header.magic.is_response()
    }

    /// All bytes of the frame, header included.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Consumes the frame, returning its bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Frame length on the wire (24 + body length).
    pub fn wire_len(&self) -> usize {
        self.bytes.len()
    }

    #[inline]
    fn section(&self, start: usize, len: usize) -> &[u8] {
        self.bytes.get(start..start + len).unwrap_or_default()
    }

    /// The framing extras (empty for classic frames).
    pub fn framing_extras(&self) -> &[u8] {
        self.section(HEADER_LEN, usize::from(self.header.framing_extras_len))
    }

    /// The extras.
    #[inline]
    pub fn extras(&self) -> &[u8] {
        self.section(
            self.header.extras_offset(),
            usize::from(self.header.extras_len),
        )
    }

    /// The key, borrowed.
    pub fn key_slice(&self) -> &[u8] {
        self.section(self.header.key_offset(), usize::from(self.header.key_len))
    }

    /// The key, as a zero-copy slice of the frame.
    #[inline]
    pub fn key(&self) -> Bytes {
        let start = self.header.key_offset();
        self.bytes
            .slice(start..start + usize::from(self.header.key_len))
    }

    /// The value, borrowed.
    pub fn value_slice(&self) -> &[u8] {
        self.bytes
            .get(self.header.value_offset()..)
            .unwrap_or_default()
    }

    /// The value, as a zero-copy slice of the frame.
    #[inline]
    pub fn value(&self) -> Bytes {
        self.bytes.slice(self.header.value_offset()..)
    }

    /// Consumes the frame, returning its key and value as zero-copy slices.
    ///
    /// Cheaper than [`key`](Self::key) plus [`value`](Self::value) when the
    /// frame is no longer needed: one reference-count update instead of two.
    #[inline]
    pub fn into_key_value(self) -> (Bytes, Bytes) {
        let key_at = self.header.key_offset();
        let value_at = self.header.value_offset();
        let mut key = self.bytes;
        if value_at > key.len() || key_at > value_at {
            // Unreachable for a validated header; stay panic-free anyway.
            return (Bytes::new(), Bytes::new());
        }
        let value = key.split_off(value_at);
        key.advance(key_at);
        (key, value)
    }

    /// Iterates the framing extras' frame infos.
    pub fn frame_infos(&self) -> FrameInfoIter<'_> {
        FrameInfoIter::new(self.framing_extras(), HEADER_LEN, Some(self.opcode()))
    }

    /// The DCP stream id carried in the framing extras, if any.
    #[inline]
    pub fn stream_id(&self) -> Result<Option<u16>, DecodeError> {
        if self.header.framing_extras_len == 0 {
            return Ok(None);
        }
        find_stream_id(self.framing_extras(), HEADER_LEN, Some(self.opcode()))
    }

    /// An error of `kind` at `offset` in this frame.
    pub fn error(&self, kind: DecodeErrorKind, offset: usize) -> DecodeError {
        DecodeError::new(kind, Some(self.opcode()), offset)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("header", &self.header)
            .field("len", &self.bytes.len())
            .finish()
    }
}

/// The header fields of a frame to encode; lengths are computed from the
/// sections passed to [`FrameHead::encode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    /// Magic. A classic magic is switched to its flexible form when framing
    /// extras are given.
    pub magic: Magic,
    /// Opcode.
    pub opcode: Opcode,
    /// Datatype.
    pub datatype: Datatype,
    /// Vbucket (request) or status (response).
    pub vbucket_or_status: u16,
    /// Opaque.
    pub opaque: u32,
    /// CAS.
    pub cas: u64,
}

impl FrameHead {
    /// A client request (magic 0x80) for `vbucket` with `opaque`.
    pub const fn request(opcode: Opcode, vbucket: u16, opaque: u32) -> Self {
        Self {
            magic: Magic::ClientRequest,
            opcode,
            datatype: Datatype::RAW,
            vbucket_or_status: vbucket,
            opaque,
            cas: 0,
        }
    }

    /// A response (magic 0x81) with `status` and `opaque`.
    pub const fn response(opcode: Opcode, status: Status, opaque: u32) -> Self {
        Self {
            magic: Magic::ClientResponse,
            opcode,
            datatype: Datatype::RAW,
            vbucket_or_status: status.raw(),
            opaque,
            cas: 0,
        }
    }

    /// Sets the CAS.
    pub const fn with_cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }

    /// Sets the datatype.
    pub const fn with_datatype(mut self, datatype: Datatype) -> Self {
        self.datatype = datatype;
        self
    }

    fn header(
        &self,
        framing_extras: &[u8],
        extras: &[u8],
        key: &[u8],
        value_len: usize,
    ) -> Result<Header, EncodeError> {
        let flexible = !framing_extras.is_empty() || self.magic.is_flexible();
        let magic = match (self.magic, flexible) {
            (Magic::ClientRequest, true) => Magic::AltClientRequest,
            (Magic::ClientResponse, true) => Magic::AltClientResponse,
            (Magic::ServerRequest | Magic::ServerResponse, true) => {
                return Err(EncodeError::InvalidField {
                    field: "magic",
                    reason: "server request/response magics carry no framing extras",
                });
            }
            (m, _) => m,
        };
        let framing_extras_len = u8::try_from(framing_extras.len())
            .map_err(|_| EncodeError::FramingExtrasTooLong(framing_extras.len()))?;
        let extras_len = u8::try_from(extras.len()).map_err(|_| EncodeError::InvalidField {
            field: "extras",
            reason: "longer than 255 bytes",
        })?;
        let key_max = if flexible { 255 } else { 65535 };
        if key.len() > key_max {
            return Err(EncodeError::KeyTooLong {
                len: key.len(),
                max: key_max,
            });
        }
        let body = framing_extras.len() + extras.len() + key.len() + value_len;
        let body_len = u32::try_from(body).map_err(|_| EncodeError::BodyTooLong(body))?;
        Ok(Header {
            magic,
            opcode: self.opcode,
            framing_extras_len,
            key_len: key.len() as u16,
            extras_len,
            datatype: self.datatype,
            vbucket_or_status: self.vbucket_or_status,
            body_len,
            opaque: self.opaque,
            cas: self.cas,
        })
    }

    /// Appends a whole frame to `buf`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use dcp_proto::codec::{FrameHead, Opcode};
    /// let mut buf = BytesMut::new();
    /// FrameHead::request(Opcode::DcpControl, 0, 7).encode(&mut buf, &[], &[], b"enable_noop", b"true")?;
    /// assert_eq!(buf.len(), 24 + 15);
    /// # Ok::<(), dcp_proto::codec::EncodeError>(())
    /// ```
    pub fn encode(
        &self,
        buf: &mut BytesMut,
        framing_extras: &[u8],
        extras: &[u8],
        key: &[u8],
        value: &[u8],
    ) -> Result<(), EncodeError> {
        self.encode_head(buf, framing_extras, extras, key, value.len())?;
        buf.put_slice(value);
        Ok(())
    }

    /// Appends everything but the value; the caller then appends exactly
    /// `value_len` bytes. Used by messages whose value is built in place.
    pub fn encode_head(
        &self,
        buf: &mut BytesMut,
        framing_extras: &[u8],
        extras: &[u8],
        key: &[u8],
        value_len: usize,
    ) -> Result<(), EncodeError> {
        let header = self.header(framing_extras, extras, key, value_len)?;
        buf.reserve(header.frame_len());
        buf.put_slice(&header.encode());
        buf.put_slice(framing_extras);
        buf.put_slice(extras);
        buf.put_slice(key);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_then_parse() {
        let mut buf = BytesMut::new();
        FrameHead::request(Opcode::DcpMutation, 9, 0x1234)
            .with_cas(77)
            .with_datatype(Datatype::JSON)
            .encode(&mut buf, &[0x22, 0, 3], &[1, 2, 3], b"key", b"{}")
            .unwrap();
        let frame = Frame::parse(buf.freeze()).unwrap();
        assert_eq!(frame.magic(), Magic::AltClientRequest);
        assert_eq!(frame.vbucket(), 9);
        assert_eq!(frame.cas(), 77);
        assert_eq!(frame.framing_extras(), &[0x22, 0, 3]);
        assert_eq!(frame.extras(), &[1, 2, 3]);
        assert_eq!(frame.key(), Bytes::from_static(b"key"));
        assert_eq!(frame.value(), Bytes::from_static(b"{}"));
        assert_eq!(frame.stream_id().unwrap(), Some(3));
    }

    #[test]
    fn parse_rejects_short_and_long_input() {
        let mut buf = BytesMut::new();
        FrameHead::request(Opcode::DcpNoop, 0, 1)
            .encode(&mut buf, &[], &[], &[], b"xy")
            .unwrap();
        let bytes = buf.freeze();
        let short = Frame::parse(bytes.slice(..25)).unwrap_err();
        assert!(matches!(
            short.kind,
            DecodeErrorKind::Truncated { needed: 26, .. }
        ));
        let mut long = bytes.to_vec();
        long.push(0);
        let long = Frame::parse(Bytes::from(long)).unwrap_err();
        assert!(matches!(
            long.kind,
            DecodeErrorKind::TrailingBytes { extra: 1, .. }
        ));
    }

    #[test]
    fn flexible_key_limit() {
        let mut buf = BytesMut::new();
        let err = FrameHead::request(Opcode::DcpMutation, 0, 0)
            .encode(&mut buf, &[0x22, 0, 1], &[], &[0; 256], &[])
            .unwrap_err();
        assert_eq!(err, EncodeError::KeyTooLong { len: 256, max: 255 });
    }
}
