//! Typed decode and encode errors.

use core::fmt;

use super::header::Magic;
use super::opcode::Opcode;

/// Why a frame or message could not be decoded: what was wrong ([`kind`]),
/// at which byte offset from the start of the frame, and for which opcode.
///
/// [`kind`]: DecodeError::kind
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// What was wrong.
    pub kind: DecodeErrorKind,
    /// The frame's opcode, when the header got that far.
    pub opcode: Option<Opcode>,
    /// Byte offset from the start of the frame where the problem lies.
    pub offset: usize,
}

impl DecodeError {
    /// An error of `kind` at `offset` in a frame with `opcode`.
    pub fn new(kind: DecodeErrorKind, opcode: Option<Opcode>, offset: usize) -> Self {
        Self {
            kind,
            opcode,
            offset,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.kind)?;
        if let Some(op) = self.opcode {
            write!(f, " in {op}")?;
        }
        write!(f, " at byte {}", self.offset)
    }
}

/// The kinds of [`DecodeError`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The first byte is not a known magic.
    #[error("invalid magic byte {0:#04x}")]
    InvalidMagic(u8),
    /// Fewer bytes than the layout needs.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the layout needs.
        needed: usize,
        /// Bytes present.
        available: usize,
    },
    /// More bytes than the header's body length accounts for.
    #[error("{extra} bytes after the end of a {frame_len}-byte frame")]
    TrailingBytes {
        /// Frame length per its header.
        frame_len: usize,
        /// Bytes beyond it.
        extra: usize,
    },
    /// The declared frame length exceeds the configured maximum.
    #[error("frame of {frame_len} bytes exceeds the maximum of {max} bytes")]
    FrameTooLarge {
        /// 24 + declared body length.
        frame_len: u64,
        /// The configured maximum frame length.
        max: usize,
    },
    /// framing extras + extras + key exceed the body length.
    #[error(
        "framing extras ({framing_extras}) + extras ({extras}) + key ({key}) exceed body length {body}"
    )]
    SectionsExceedBody {
        /// Framing extras length.
        framing_extras: u8,
        /// Extras length.
        extras: u8,
        /// Key length.
        key: u16,
        /// Body length.
        body: u32,
    },
    /// A frame info runs past the framing extras section.
    #[error("frame info {id} of length {len} overruns the framing extras")]
    FrameInfoOverrun {
        /// Frame info id (after escapes).
        id: u16,
        /// Declared length (after escapes).
        len: u16,
    },
    /// A known frame info has a length its definition does not allow.
    #[error("frame info {id} has invalid length {len}")]
    FrameInfoLength {
        /// Frame info id.
        id: u16,
        /// Its length.
        len: u16,
    },
    /// The magic is not what this message allows (e.g. a response where a
    /// request is expected).
    #[error("unexpected magic {got:?}, expected a {expected}")]
    UnexpectedMagic {
        /// What the decoder wanted.
        expected: &'static str,
        /// What the frame has.
        got: Magic,
    },
    /// The opcode is not the one this decoder handles.
    #[error("unexpected opcode {got}, expected {expected}")]
    UnexpectedOpcode {
        /// What the decoder wanted.
        expected: Opcode,
        /// What the frame has.
        got: Opcode,
    },
    /// An opcode that no typed message covers.
    #[error("unsupported opcode")]
    UnsupportedOpcode,
    /// The extras length is not one the opcode allows.
    #[error("extras length {got}, expected {expected}")]
    ExtrasLength {
        /// Allowed lengths, as text (e.g. "18 or 21").
        expected: &'static str,
        /// Actual length.
        got: u8,
    },
    /// A key where the message has none.
    #[error("unexpected key of {0} bytes")]
    KeyNotAllowed(usize),
    /// A missing required key.
    #[error("missing key")]
    KeyRequired,
    /// A value where the message has none.
    #[error("unexpected value of {0} bytes")]
    ValueNotAllowed(usize),
    /// A missing required value.
    #[error("missing value")]
    ValueRequired,
    /// The value length does not fit the layout.
    #[error("value of {got} bytes, expected {expected}")]
    ValueLength {
        /// Expected length, as text (e.g. "a multiple of 16").
        expected: &'static str,
        /// Actual length.
        got: usize,
    },
    /// Datatype bits that are undefined or not allowed here.
    #[error("invalid datatype {0:#04x}")]
    InvalidDatatype(u8),
    /// A field holds a value the protocol does not allow.
    #[error("invalid {field}: {value:#x}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The CAS must be zero for this message.
    #[error("non-zero cas {0:#x}")]
    NonZeroCas(u64),
    /// A text field is not valid UTF-8.
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    /// A JSON field does not parse or has the wrong shape.
    #[error("invalid JSON in {field}: {reason}")]
    InvalidJson {
        /// The field's name.
        field: &'static str,
        /// What the parser said.
        reason: String,
    },
    /// The collection-id prefix of a key is malformed.
    #[error("invalid collection-id prefix: {0}")]
    Leb128(Leb128Error),
    /// The xattr section of a value is malformed.
    #[error("invalid xattr section: {0}")]
    Xattr(&'static str),
    /// A FlatBuffers value (version-2 system event) failed verification:
    /// an offset, vtable or string out of bounds, a string that is not
    /// UTF-8 or not terminated, a required field absent, too many tables.
    #[error("invalid FlatBuffers {table} table: {reason}")]
    FlatBuffers {
        /// The schema table expected (e.g. "Collection").
        table: &'static str,
        /// What the verifier found, naming the field where it can.
        reason: String,
    },
}

/// Why an unsigned LEB128 collection id could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Leb128Error {
    /// The input ended before the last byte (high bit clear).
    #[error("unterminated")]
    Unterminated,
    /// More than 5 bytes, or a value above `u32::MAX`.
    #[error("longer than 5 bytes or above u32::MAX")]
    Overlong,
    /// Not the shortest encoding of its value.
    #[error("not the canonical (shortest) encoding")]
    NonCanonical,
}

/// Why a message could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The key does not fit the header's key-length field (65535 bytes,
    /// or 255 with flexible framing).
    #[error("key of {len} bytes exceeds the maximum of {max}")]
    KeyTooLong {
        /// Key length.
        len: usize,
        /// Maximum for this framing.
        max: usize,
    },
    /// Framing extras longer than 255 bytes.
    #[error("framing extras of {0} bytes exceed 255")]
    FramingExtrasTooLong(usize),
    /// A frame info whose data exceeds what its length field can hold.
    #[error("frame info data of {0} bytes is too long")]
    FrameInfoTooLong(usize),
    /// The body does not fit in the 32-bit body length.
    #[error("body of {0} bytes exceeds u32::MAX")]
    BodyTooLong(usize),
    /// Stream id 0 is not a stream id.
    #[error("stream id 0 is invalid (valid ids are 1..=65535)")]
    InvalidStreamId,
    /// A field value the wire format cannot carry.
    #[error("invalid {field}: {reason}")]
    InvalidField {
        /// The field's name.
        field: &'static str,
        /// Why.
        reason: &'static str,
    },
}
