//! Framing extras: the frame infos of flexible-framing (0x08/0x18) frames.
//!
//! Each frame info starts with a byte whose high nibble is the id and low
//! nibble the data length; a nibble of 15 is an escape, and the real value is
//! 15 plus the next byte (the id's escape byte comes first).

use bytes::{BufMut, Bytes};

use super::error::{DecodeError, DecodeErrorKind, EncodeError};
use super::opcode::Opcode;

/// Request frame-info ids.
pub mod request_id {
    /// Barrier (no data).
    pub const BARRIER: u16 = 0;
    /// Durability requirement: level, optional u16 timeout.
    pub const DURABILITY: u16 = 1;
    /// DCP stream id: u16, 1..=65535.
    pub const DCP_STREAM_ID: u16 = 2;
    /// Impersonate a user.
    pub const IMPERSONATE: u16 = 4;
    /// Preserve the document's TTL (no data).
    pub const PRESERVE_TTL: u16 = 5;
}

/// Response frame-info ids (a namespace of their own).
pub mod response_id {
    /// Server receive-to-send duration (encoded u16).
    pub const SERVER_DURATION: u16 = 0;
    /// Read units used (u16).
    pub const READ_UNITS: u16 = 1;
    /// Write units used (u16).
    pub const WRITE_UNITS: u16 = 2;
    /// Throttle duration (encoded u16).
    pub const THROTTLE_DURATION: u16 = 3;
}

/// One frame info as it appears on the wire, borrowing the frame's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawFrameInfo<'a> {
    /// The id, escapes resolved.
    pub id: u16,
    /// The data.
    pub data: &'a [u8],
    /// Offset of this frame info's first byte from the frame start.
    pub offset: usize,
}

/// Iterates the frame infos of a framing-extras section.
///
/// Yields an error (and then stops) if a frame info overruns the section.
#[derive(Debug, Clone)]
pub struct FrameInfoIter<'a> {
    rest: &'a [u8],
    offset: usize,
    opcode: Option<Opcode>,
}

impl<'a> FrameInfoIter<'a> {
    /// Iterates `section`, whose first byte sits at `offset` in the frame.
    pub fn new(section: &'a [u8], offset: usize, opcode: Option<Opcode>) -> Self {
        Self {
            rest: section,
            offset,
            opcode,
        }
    }

    fn fail(&mut self, kind: DecodeErrorKind) -> Option<Result<RawFrameInfo<'a>, DecodeError>> {
        let offset = self.offset;
        self.rest = &[];
        Some(Err(DecodeError::new(kind, self.opcode, offset)))
    }
}

impl<'a> Iterator for FrameInfoIter<'a> {
    type Item = Result<RawFrameInfo<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (&first, mut rest) = self.rest.split_first()?;
        let mut id = u16::from(first >> 4);
        let mut len = u16::from(first & 0x0f);
        let mut consumed = 1usize;
        if id == 15 {
            let Some((&esc, tail)) = rest.split_first() else {
                return self.fail(DecodeErrorKind::FrameInfoOverrun { id, len });
            };
            id += u16::from(esc);
            rest = tail;
            consumed += 1;
        }
        if len == 15 {
            let Some((&esc, tail)) = rest.split_first() else {
                return self.fail(DecodeErrorKind::FrameInfoOverrun { id, len });
            };
            len += u16::from(esc);
            rest = tail;
            consumed += 1;
        }
        let Some((data, tail)) = rest.split_at_checked(usize::from(len)) else {
            return self.fail(DecodeErrorKind::FrameInfoOverrun { id, len });
        };
        let info = RawFrameInfo {
            id,
            data,
            offset: self.offset,
        };
        self.offset += consumed + data.len();
        self.rest = tail;
        Some(Ok(info))
    }
}

/// Durability level of a sync write (request frame info 1, and PREPARE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DurabilityLevel {
    /// 1: replicated to a majority.
    Majority,
    /// 2: majority, and persisted on the active.
    MajorityAndPersistOnMaster,
    /// 3: persisted on a majority.
    PersistToMajority,
    /// Any other byte, kept verbatim (0 is invalid on the wire).
    Unknown(u8),
}

impl DurabilityLevel {
    /// Maps the wire byte.
    pub const fn from_u8(b: u8) -> Self {
        match b {
            1 => Self::Majority,
            2 => Self::MajorityAndPersistOnMaster,
            3 => Self::PersistToMajority,
            other => Self::Unknown(other),
        }
    }

    /// The wire byte.
    pub const fn to_u8(self) -> u8 {
        match self {
            Self::Majority => 1,
            Self::MajorityAndPersistOnMaster => 2,
            Self::PersistToMajority => 3,
            Self::Unknown(b) => b,
        }
    }
}

/// A typed request frame info. Unknown ids are preserved as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestFrameInfo {
    /// Id 0, no data.
    Barrier,
    /// Id 1: level and optional timeout in milliseconds.
    Durability {
        /// The level.
        level: DurabilityLevel,
        /// Timeout in ms, if given.
        timeout_ms: Option<u16>,
    },
    /// Id 2: DCP stream id (1..=65535).
    DcpStreamId(u16),
    /// Id 4: impersonated user name.
    Impersonate(Bytes),
    /// Id 5, no data.
    PreserveTtl,
    /// Any other id, kept raw.
    Other {
        /// The id.
        id: u16,
        /// The data.
        data: Bytes,
    },
}

impl RequestFrameInfo {
    /// Types a raw request frame info; `frame` is the frame's bytes that
    /// `raw.data` borrows from, so data can be handed out without copying.
    pub fn from_raw(
        raw: &RawFrameInfo<'_>,
        frame: &Bytes,
        opcode: Option<Opcode>,
    ) -> Result<Self, DecodeError> {
        let bad_len = || {
            DecodeError::new(
                DecodeErrorKind::FrameInfoLength {
                    id: raw.id,
                    len: raw.data.len() as u16,
                },
                opcode,
                raw.offset,
            )
        };
        Ok(match raw.id {
            request_id::BARRIER if raw.data.is_empty() => Self::Barrier,
            request_id::DURABILITY => match *raw.data {
                [level] => Self::Durability {
                    level: DurabilityLevel::from_u8(level),
                    timeout_ms: None,
                },
                [level, hi, lo] => Self::Durability {
                    level: DurabilityLevel::from_u8(level),
                    timeout_ms: Some(u16::from_be_bytes([hi, lo])),
                },
                _ => return Err(bad_len()),
            },
            request_id::DCP_STREAM_ID => Self::DcpStreamId(parse_stream_id(raw, opcode)?),
            request_id::IMPERSONATE => Self::Impersonate(frame.slice_ref(raw.data)),
            request_id::PRESERVE_TTL if raw.data.is_empty() => Self::PreserveTtl,
            request_id::BARRIER | request_id::PRESERVE_TTL => return Err(bad_len()),
            id => Self::Other {
                id,
                data: frame.slice_ref(raw.data),
            },
        })
    }

    /// Appends this frame info's wire form.
    pub fn encode<B: BufMut>(&self, buf: &mut B) -> Result<(), EncodeError> {
        match self {
            Self::Barrier => put_frame_info(buf, request_id::BARRIER, &[]),
            Self::Durability { level, timeout_ms } => match timeout_ms {
                None => put_frame_info(buf, request_id::DURABILITY, &[level.to_u8()]),
                Some(t) => {
                    let [hi, lo] = t.to_be_bytes();
                    put_frame_info(buf, request_id::DURABILITY, &[level.to_u8(), hi, lo])
                }
            },
            Self::DcpStreamId(sid) => {
                if *sid == 0 {
                    return Err(EncodeError::InvalidStreamId);
                }
                put_frame_info(buf, request_id::DCP_STREAM_ID, &sid.to_be_bytes())
            }
            Self::Impersonate(user) => put_frame_info(buf, request_id::IMPERSONATE, user),
            Self::PreserveTtl => put_frame_info(buf, request_id::PRESERVE_TTL, &[]),
            Self::Other { id, data } => put_frame_info(buf, *id, data),
        }
    }
}

fn parse_stream_id(raw: &RawFrameInfo<'_>, opcode: Option<Opcode>) -> Result<u16, DecodeError> {
    match *raw.data {
        [hi, lo] => {
            let sid = u16::from_be_bytes([hi, lo]);
            if sid == 0 {
                Err(DecodeError::new(
                    DecodeErrorKind::InvalidField {
                        field: "stream id",
                        value: 0,
                    },
                    opcode,
                    raw.offset,
                ))
            } else {
                Ok(sid)
            }
        }
        _ => Err(DecodeError::new(
            DecodeErrorKind::FrameInfoLength {
                id: raw.id,
                len: raw.data.len() as u16,
            },
            opcode,
            raw.offset,
        )),
    }
}

/// Finds the DCP stream id among a request's framing extras.
///
/// Returns `Ok(None)` when there is none; malformed framing extras or a
/// malformed stream-id frame info are errors.
pub fn find_stream_id(
    section: &[u8],
    offset: usize,
    opcode: Option<Opcode>,
) -> Result<Option<u16>, DecodeError> {
    let mut found = None;
    for info in FrameInfoIter::new(section, offset, opcode) {
        let info = info?;
        if info.id == request_id::DCP_STREAM_ID {
            found = Some(parse_stream_id(&info, opcode)?);
        }
    }
    Ok(found)
}

/// Appends one frame info, escaping id and length as needed.
pub fn put_frame_info<B: BufMut>(buf: &mut B, id: u16, data: &[u8]) -> Result<(), EncodeError> {
    let len = data.len();
    if len > 15 + 255 {
        return Err(EncodeError::FrameInfoTooLong(len));
    }
    if id > 15 + 255 {
        return Err(EncodeError::InvalidField {
            field: "frame info id",
            reason: "above 270",
        });
    }
    let id_nibble = id.min(15) as u8;
    let len_nibble = len.min(15) as u8;
    buf.put_u8(id_nibble << 4 | len_nibble);
    if id_nibble == 15 {
        buf.put_u8((id - 15) as u8);
    }
    if len_nibble == 15 {
        buf.put_u8((len - 15) as u8);
    }
    buf.put_slice(data);
    Ok(())
}

/// The 3-byte framing extras carrying a DCP stream id: `0x22 hi lo`.
pub const fn stream_id_frame_info(sid: u16) -> [u8; 3] {
    let [hi, lo] = sid.to_be_bytes();
    [0x22, hi, lo]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(section: &[u8]) -> Result<Vec<(u16, Vec<u8>)>, DecodeError> {
        FrameInfoIter::new(section, 24, None)
            .map(|r| r.map(|i| (i.id, i.data.to_vec())))
            .collect()
    }

    #[test]
    fn plain_and_escaped_frame_infos() {
        assert_eq!(collect(&[0x22, 0, 7]).unwrap(), vec![(2, vec![0, 7])]);
        // id 15+3 = 18, length 15+1 = 16
        let mut section = vec![0xff, 3, 1];
        section.extend_from_slice(&[9u8; 16]);
        section.extend_from_slice(&[0x00]);
        assert_eq!(
            collect(&section).unwrap(),
            vec![(18, vec![9u8; 16]), (0, vec![])]
        );
    }

    #[test]
    fn encode_round_trips_escapes() {
        for (id, len) in [
            (0u16, 0usize),
            (2, 2),
            (14, 14),
            (15, 15),
            (16, 200),
            (270, 270),
        ] {
            let data = vec![0xab; len];
            let mut buf = Vec::new();
            put_frame_info(&mut buf, id, &data).unwrap();
            assert_eq!(collect(&buf).unwrap(), vec![(id, data)]);
        }
        assert!(put_frame_info(&mut Vec::new(), 1, &[0; 271]).is_err());
    }

    #[test]
    fn overruns_are_errors() {
        for section in [
            &[0x23, 0, 1][..],
            &[0xf0][..],
            &[0x0f][..],
            &[0x2f, 10, 1][..],
        ] {
            let err = collect(section).unwrap_err();
            assert!(
                matches!(err.kind, DecodeErrorKind::FrameInfoOverrun { .. }),
                "{section:?}"
            );
        }
    }

    #[test]
    fn stream_id_lookup() {
        assert_eq!(
            find_stream_id(&[0x22, 1, 2], 24, None).unwrap(),
            Some(0x102)
        );
        assert_eq!(find_stream_id(&[0x00], 24, None).unwrap(), None);
        assert!(find_stream_id(&[0x22, 0, 0], 24, None).is_err());
        assert!(find_stream_id(&[0x21, 0], 24, None).is_err());
    }

    #[test]
    fn typed_request_infos() {
        let frame = Bytes::from_static(&[0x13, 1, 0, 100, 0x50, 0x42, b'a', b'b']);
        let infos: Vec<_> = FrameInfoIter::new(&frame, 0, None)
            .map(|r| RequestFrameInfo::from_raw(&r.unwrap(), &frame, None).unwrap())
            .collect();
        assert_eq!(
            infos,
            vec![
                RequestFrameInfo::Durability {
                    level: DurabilityLevel::Majority,
                    timeout_ms: Some(100)
                },
                RequestFrameInfo::PreserveTtl,
                RequestFrameInfo::Impersonate(Bytes::from_static(b"ab")),
            ]
        );
        let mut buf = Vec::new();
        for info in &infos {
            info.encode(&mut buf).unwrap();
        }
        assert_eq!(buf, frame.to_vec());
    }
}
