//! The 24-byte frame header, classic and flexible framing.

use super::datatype::Datatype;
use super::error::{DecodeError, DecodeErrorKind};
use super::opcode::Opcode;
use super::status::Status;

/// Length of every frame header.
pub const HEADER_LEN: usize = 24;

/// The first byte of a frame: who sent it and how it is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Magic {
    /// 0x80: a request from the connection initiator, and every DCP message a
    /// producer sends.
    ClientRequest,
    /// 0x81: a response to a 0x80/0x08 request.
    ClientResponse,
    /// 0x82: a server-initiated request (HELLO Duplex only).
    ServerRequest,
    /// 0x83: a client's response to a server request.
    ServerResponse,
    /// 0x08: a request with framing extras (flexible framing).
    AltClientRequest,
    /// 0x18: a response with framing extras (flexible framing).
    AltClientResponse,
}

impl Magic {
    /// Maps the wire byte; `None` for a byte that is not a magic.
    pub const fn from_u8(byte: u8) -> Option<Magic> {
        Some(match byte {
            0x80 => Magic::ClientRequest,
            0x81 => Magic::ClientResponse,
            0x82 => Magic::ServerRequest,
            0x83 => Magic::ServerResponse,
            0x08 => Magic::AltClientRequest,
            0x18 => Magic::AltClientResponse,
            _ => return None,
        })
    }

    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Magic::ClientRequest => 0x80,
            Magic::ClientResponse => 0x81,
            Magic::ServerRequest => 0x82,
            Magic::ServerResponse => 0x83,
            Magic::AltClientRequest => 0x08,
            Magic::AltClientResponse => 0x18,
        }
    }

    /// Whether bytes 2-3 are split into framing-extras length and key length.
    pub const fn is_flexible(self) -> bool {
        matches!(self, Magic::AltClientRequest | Magic::AltClientResponse)
    }

    /// Whether frames with this magic are requests (bytes 6-7 = vbucket).
    pub const fn is_request(self) -> bool {
        matches!(
            self,
            Magic::ClientRequest | Magic::ServerRequest | Magic::AltClientRequest
        )
    }

    /// Whether frames with this magic are responses (bytes 6-7 = status).
    pub const fn is_response(self) -> bool {
        !self.is_request()
    }

    /// The request magic for a frame with or without framing extras.
    pub const fn request(flexible: bool) -> Magic {
        if flexible {
            Magic::AltClientRequest
        } else {
            Magic::ClientRequest
        }
    }

    /// The response magic for a frame with or without framing extras.
    pub const fn response(flexible: bool) -> Magic {
        if flexible {
            Magic::AltClientResponse
        } else {
            Magic::ClientResponse
        }
    }
}

/// A decoded frame header.
///
/// [`Header::decode`] checks the magic and that framing extras, extras and
/// key fit in the body (the server's `isValid()` rule); it does not know which
/// opcode allows which sections, which is the message decoders' job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Byte 0.
    pub magic: Magic,
    /// Byte 1.
    pub opcode: Opcode,
    /// Byte 2 with flexible framing, else 0.
    pub framing_extras_len: u8,
    /// Bytes 2-3 (classic) or byte 3 (flexible).
    pub key_len: u16,
    /// Byte 4.
    pub extras_len: u8,
    /// Byte 5.
    pub datatype: Datatype,
    /// Bytes 6-7: the vbucket of a request, the status of a response.
    pub vbucket_or_status: u16,
    /// Bytes 8-11: everything after the header.
    pub body_len: u32,
    /// Bytes 12-15, echoed verbatim in responses.
    pub opaque: u32,
    /// Bytes 16-23.
    pub cas: u64,
}

impl Header {
    /// Decodes and validates the first [`HEADER_LEN`] bytes of `buf`.
    ///
    /// ```
    /// use dcp_proto::codec::{Header, Opcode};
    /// let bytes = [
    ///     0x80, 0x5c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0,
    /// ];
    /// let header = Header::decode(&bytes)?;
    /// assert_eq!(header.opcode, Opcode::DcpNoop);
    /// assert_eq!(header.opaque, 5);
    /// # Ok::<(), dcp_proto::codec::DecodeError>(())
    /// ```
    #[inline]
    pub fn decode(buf: &[u8]) -> Result<Header, DecodeError> {
        let Some(bytes) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(DecodeError::new(
                DecodeErrorKind::Truncated {
                    needed: HEADER_LEN,
                    available: buf.len(),
                },
                None,
                buf.len(),
            ));
        };
        let [
            magic,
            opcode,
            b2,
            b3,
            extras_len,
            datatype,
            v0,
            v1,
            l0,
            l1,
            l2,
            l3,
            o0,
            o1,
            o2,
            o3,
            c0,
            c1,
            c2,
            c3,
            c4,
            c5,
            c6,
            c7,
        ] = *bytes;
        let magic = Magic::from_u8(magic)
            .ok_or_else(|| DecodeError::new(DecodeErrorKind::InvalidMagic(magic), None, 0))?;
        let opcode = Opcode::from_raw(opcode);
        let (framing_extras_len, key_len) = if magic.is_flexible() {
            (b2, u16::from(b3))
        } else {
            (0, u16::from_be_bytes([b2, b3]))
        };
        let header = Header {
            magic,
            opcode,
            framing_extras_len,
            key_len,
            extras_len,
            datatype: Datatype(datatype),
            vbucket_or_status: u16::from_be_bytes([v0, v1]),
            body_len: u32::from_be_bytes([l0, l1, l2, l3]),
            opaque: u32::from_be_bytes([o0, o1, o2, o3]),
            cas: u64::from_be_bytes([c0, c1, c2, c3, c4, c5, c6, c7]),
        };
        let sections =
            u64::from(framing_extras_len) + u64::from(extras_len) + u64::from(header.key_len);
        if sections > u64::from(header.body_len) {
            return Err(DecodeError::new(
                DecodeErrorKind::SectionsExceedBody {
                    framing_extras: framing_extras_len,
                    extras: extras_len,
                    key: key_len,
                    body: header.body_len,
                },
                Some(opcode),
                2,
            ));
        }
        Ok(header)
    }

    /// Writes the header's 24 bytes.
    ///
    /// The caller guarantees that `key_len` fits the framing (255 with
    /// flexible framing); [`FrameHead`](crate::codec::FrameHead) checks that.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let (b2, b3) = if self.magic.is_flexible() {
            (self.framing_extras_len, self.key_len.to_be_bytes()[1])
        } else {
            let [hi, lo] = self.key_len.to_be_bytes();
            (hi, lo)
        };
        let [v0, v1] = self.vbucket_or_status.to_be_bytes();
        let [l0, l1, l2, l3] = self.body_len.to_be_bytes();
        let [o0, o1, o2, o3] = self.opaque.to_be_bytes();
        let [c0, c1, c2, c3, c4, c5, c6, c7] = self.cas.to_be_bytes();
        [
            self.magic.to_u8(),
            self.opcode.raw(),
            b2,
            b3,
            self.extras_len,
            self.datatype.0,
            v0,
            v1,
            l0,
            l1,
            l2,
            l3,
            o0,
            o1,
            o2,
            o3,
            c0,
            c1,
            c2,
            c3,
            c4,
            c5,
            c6,
            c7,
        ]
    }

    /// The vbucket id (meaningful for requests).
    pub const fn vbucket(&self) -> u16 {
        self.vbucket_or_status
    }

    /// The status (meaningful for responses).
    pub const fn status(&self) -> Status {
        Status::from_raw(self.vbucket_or_status)
    }

    /// Total frame length: header plus body.
    pub const fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }

    /// Length of the value section.
    pub const fn value_len(&self) -> usize {
        (self.body_len as usize).saturating_sub(
            self.framing_extras_len as usize + self.extras_len as usize + self.key_len as usize,
        )
    }

    /// Offset of the extras section from the frame start.
    pub const fn extras_offset(&self) -> usize {
        HEADER_LEN + self.framing_extras_len as usize
    }

    /// Offset of the key from the frame start.
    pub const fn key_offset(&self) -> usize {
        self.extras_offset() + self.extras_len as usize
    }

    /// Offset of the value from the frame start.
    pub const fn value_offset(&self) -> usize {
        self.key_offset() + self.key_len as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_bad_magic_and_short_input() {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = 0x42;
        let err = Header::decode(&bytes).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::InvalidMagic(0x42));
        let err = Header::decode(&bytes[..10]).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::Truncated {
                needed: 24,
                available: 10
            }
        ));
    }

    #[test]
    fn flexible_header_splits_key_length() {
        let header = Header {
            magic: Magic::AltClientRequest,
            opcode: Opcode::DcpMutation,
            framing_extras_len: 3,
            key_len: 5,
            extras_len: 31,
            datatype: Datatype::JSON,
            vbucket_or_status: 0x210,
            body_len: 3 + 31 + 5 + 7,
            opaque: 0xdead_beef,
            cas: 42,
        };
        let bytes = header.encode();
        assert_eq!(&bytes[..6], &[0x08, 0x57, 3, 5, 31, 1]);
        assert_eq!(Header::decode(&bytes).unwrap(), header);
        assert_eq!(header.value_len(), 7);
        assert_eq!(header.value_offset(), 24 + 3 + 31 + 5);
    }

    #[test]
    fn sections_must_fit_the_body() {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = 0x80;
        bytes[4] = 4; // extras 4, body 0
        let err = Header::decode(&bytes).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::SectionsExceedBody { .. }
        ));
    }
}
