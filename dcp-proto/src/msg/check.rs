//! Shared layout checks for message decoders: each returns a typed error
//! naming the opcode and the offset of the offending section.

use crate::codec::{DecodeError, DecodeErrorKind, Frame, Opcode};

/// The frame must be a request with `opcode`.
#[inline]
pub(crate) fn request(frame: &Frame, opcode: Opcode) -> Result<(), DecodeError> {
    if frame.opcode() != opcode {
        return Err(frame.error(
            DecodeErrorKind::UnexpectedOpcode {
                expected: opcode,
                got: frame.opcode(),
            },
            1,
        ));
    }
    if !frame.is_request() {
        return Err(frame.error(
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: frame.magic(),
            },
            0,
        ));
    }
    Ok(())
}

/// The frame must be a response with `opcode`.
#[inline]
pub(crate) fn response(frame: &Frame, opcode: Opcode) -> Result<(), DecodeError> {
    if frame.opcode() != opcode {
        return Err(frame.error(
            DecodeErrorKind::UnexpectedOpcode {
                expected: opcode,
                got: frame.opcode(),
            },
            1,
        ));
    }
    if !frame.is_response() {
        return Err(frame.error(
            DecodeErrorKind::UnexpectedMagic {
                expected: "response",
                got: frame.magic(),
            },
            0,
        ));
    }
    Ok(())
}

/// The extras must be exactly `N` bytes.
#[inline]
pub(crate) fn extras<'f, const N: usize>(
    frame: &'f Frame,
    expected: &'static str,
) -> Result<&'f [u8; N], DecodeError> {
    frame
        .extras()
        .first_chunk::<N>()
        .filter(|_| frame.extras().len() == N)
        .ok_or_else(|| {
            frame.error(
                DecodeErrorKind::ExtrasLength {
                    expected,
                    got: frame.header().extras_len,
                },
                4,
            )
        })
}

/// The frame must have no extras.
#[inline]
pub(crate) fn no_extras(frame: &Frame) -> Result<(), DecodeError> {
    extras::<0>(frame, "0").map(|_| ())
}

/// The frame must have no key.
#[inline]
pub(crate) fn no_key(frame: &Frame) -> Result<(), DecodeError> {
    match frame.header().key_len {
        0 => Ok(()),
        len => Err(frame.error(
            DecodeErrorKind::KeyNotAllowed(usize::from(len)),
            frame.header().key_offset(),
        )),
    }
}

/// The frame must have a non-empty key.
#[inline]
pub(crate) fn some_key(frame: &Frame) -> Result<(), DecodeError> {
    match frame.header().key_len {
        0 => Err(frame.error(DecodeErrorKind::KeyRequired, frame.header().key_offset())),
        _ => Ok(()),
    }
}

/// The frame must have no value.
#[inline]
pub(crate) fn no_value(frame: &Frame) -> Result<(), DecodeError> {
    match frame.header().value_len() {
        0 => Ok(()),
        len => Err(frame.error(
            DecodeErrorKind::ValueNotAllowed(len),
            frame.header().value_offset(),
        )),
    }
}

/// The frame must have a non-empty value.
#[inline]
pub(crate) fn some_value(frame: &Frame) -> Result<(), DecodeError> {
    match frame.header().value_len() {
        0 => Err(frame.error(
            DecodeErrorKind::ValueRequired,
            frame.header().value_offset(),
        )),
        _ => Ok(()),
    }
}

/// The CAS must be zero.
#[inline]
pub(crate) fn zero_cas(frame: &Frame) -> Result<(), DecodeError> {
    match frame.cas() {
        0 => Ok(()),
        cas => Err(frame.error(DecodeErrorKind::NonZeroCas(cas), 16)),
    }
}

/// The datatype must only use defined bits.
#[inline]
pub(crate) fn valid_datatype(frame: &Frame) -> Result<(), DecodeError> {
    if frame.datatype().is_valid() {
        Ok(())
    } else {
        Err(frame.error(DecodeErrorKind::InvalidDatatype(frame.datatype().0), 5))
    }
}

/// The datatype must be raw (0).
#[inline]
pub(crate) fn raw_datatype(frame: &Frame) -> Result<(), DecodeError> {
    if frame.datatype().0 == 0 {
        Ok(())
    } else {
        Err(frame.error(DecodeErrorKind::InvalidDatatype(frame.datatype().0), 5))
    }
}

/// A seqno field must not be zero.
#[inline]
pub(crate) fn nonzero_seqno(
    frame: &Frame,
    field: &'static str,
    seqno: u64,
    offset: usize,
) -> Result<(), DecodeError> {
    if seqno == 0 {
        Err(frame.error(DecodeErrorKind::InvalidField { field, value: 0 }, offset))
    } else {
        Ok(())
    }
}

/// Splits a fixed-size array into big-endian integers.
#[inline]
pub(crate) fn be_u64(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .and_then(|b| b.first_chunk::<8>())
        .map_or(0, |b| u64::from_be_bytes(*b))
}

/// Reads a big-endian u32 at `at` (0 if out of range; callers check sizes).
#[inline]
pub(crate) fn be_u32(bytes: &[u8], at: usize) -> u32 {
    bytes
        .get(at..at + 4)
        .and_then(|b| b.first_chunk::<4>())
        .map_or(0, |b| u32::from_be_bytes(*b))
}

/// Reads a big-endian u16 at `at` (0 if out of range; callers check sizes).
#[inline]
pub(crate) fn be_u16(bytes: &[u8], at: usize) -> u16 {
    bytes
        .get(at..at + 2)
        .and_then(|b| b.first_chunk::<2>())
        .map_or(0, |b| u16::from_be_bytes(*b))
}

/// The DCP stream id of a stream message, if any, with framing errors typed.
#[inline]
pub(crate) fn stream_id(frame: &Frame) -> Result<Option<u16>, DecodeError> {
    frame.stream_id()
}

/// The frame must not carry a DCP stream id (messages that never have one,
/// e.g. PREPARE/COMMIT/ABORT, which are exclusive with stream ids).
#[inline]
pub(crate) fn no_stream_id(frame: &Frame) -> Result<(), DecodeError> {
    for info in frame.frame_infos() {
        let info = info?;
        if info.id == crate::codec::frame_info::request_id::DCP_STREAM_ID {
            return Err(frame.error(
                DecodeErrorKind::InvalidField {
                    field: "stream id",
                    value: u64::from(be_u16(info.data, 0)),
                },
                info.offset,
            ));
        }
    }
    Ok(())
}
