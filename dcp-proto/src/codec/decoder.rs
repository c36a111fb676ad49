//! Streaming frame decoder over a caller-owned `BytesMut`.

use bytes::BytesMut;

use super::error::{DecodeError, DecodeErrorKind};
use super::frame::Frame;
use super::header::{HEADER_LEN, Header};

/// The server's default maximum packet size: 30 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 30 * 1024 * 1024;

/// Splits a byte stream into whole [`Frame`]s.
///
/// Feed it the receive buffer after every read; each call to
/// [`decode`](Self::decode) takes at most one frame off the front. Any
/// chunking of the input yields the same frames. A frame whose declared
/// length exceeds the maximum is refused from its header alone, before any
/// memory is reserved for it. Frames are zero-copy: the returned frame shares
/// the buffer's allocation.
///
/// Errors are sticky: after one, every later call returns the same error, as
/// the stream can no longer be framed and the connection must be closed.
///
/// ```
/// use bytes::BytesMut;
/// use dcp_proto::codec::{FrameDecoder, Opcode};
/// let noop = [0x80, 0x5c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0];
/// let mut decoder = FrameDecoder::new();
/// let mut rx = BytesMut::new();
/// rx.extend_from_slice(&noop[..10]);
/// assert!(decoder.decode(&mut rx)?.is_none()); // needs more bytes
/// rx.extend_from_slice(&noop[10..]);
/// let frame = decoder.decode(&mut rx)?.expect("a whole frame");
/// assert_eq!(frame.opcode(), Opcode::DcpNoop);
/// assert!(rx.is_empty());
/// # Ok::<(), dcp_proto::codec::DecodeError>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    max_frame_len: usize,
    failed: Option<DecodeError>,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// A decoder with the default maximum frame length (30 MiB).
    pub const fn new() -> Self {
        Self::with_max_frame_len(DEFAULT_MAX_FRAME_LEN)
    }

    /// A decoder refusing frames longer than `max_frame_len` bytes
    /// (header included). Values below 24 are raised to 24.
    pub const fn with_max_frame_len(max_frame_len: usize) -> Self {
        Self {
            max_frame_len: if max_frame_len < HEADER_LEN {
                HEADER_LEN
            } else {
                max_frame_len
            },
            failed: None,
        }
    }

    /// The maximum frame length.
    pub const fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The sticky error, if decoding has failed.
    pub fn error(&self) -> Option<&DecodeError> {
        self.failed.as_ref()
    }

    /// Peeks the header of the next frame and checks it against the maximum.
    ///
    /// `Ok(None)` while fewer than 24 bytes are buffered.
    #[inline]
    pub fn peek_header(&mut self, buf: &[u8]) -> Result<Option<Header>, DecodeError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let header = Header::decode(buf).and_then(|header| {
            let frame_len = HEADER_LEN as u64 + u64::from(header.body_len);
            if frame_len > self.max_frame_len as u64 {
                Err(DecodeError::new(
                    DecodeErrorKind::FrameTooLarge {
                        frame_len,
                        max: self.max_frame_len,
                    },
                    Some(header.opcode),
                    8,
                ))
            } else {
                Ok(header)
            }
        });
        match header {
            Ok(header) => Ok(Some(header)),
            Err(err) => {
                self.failed = Some(err.clone());
                Err(err)
            }
        }
    }

    /// Takes the next whole frame off the front of `buf`.
    ///
    /// Returns `Ok(None)` if more bytes are needed; in that case, once the
    /// header is known, `buf` has been reserved to hold the rest of the frame.
    #[inline]
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
        let Some(header) = self.peek_header(buf)? else {
            return Ok(None);
        };
        let frame_len = header.frame_len();
        if buf.len() < frame_len {
            buf.reserve(frame_len - buf.len());
            return Ok(None);
        }
        let bytes = buf.split_to(frame_len).freeze();
        Ok(Some(Frame::from_parts(header, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{FrameHead, Opcode};

    #[test]
    fn refuses_oversized_frames_from_the_header() {
        let mut decoder = FrameDecoder::with_max_frame_len(100);
        let mut header = [0u8; 24];
        header[0] = 0x80;
        header[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
        let mut buf = BytesMut::from(&header[..]);
        let err = decoder.decode(&mut buf).unwrap_err();
        assert!(matches!(
            err.kind,
            DecodeErrorKind::FrameTooLarge {
                frame_len: 4_294_967_319,
                max: 100
            }
        ));
        assert!(buf.capacity() < 1024, "nothing reserved for the huge frame");
        // sticky
        assert_eq!(decoder.decode(&mut BytesMut::new()).unwrap_err(), err);
    }

    #[test]
    fn splits_back_to_back_frames() {
        let mut buf = BytesMut::new();
        for opaque in 0..3 {
            FrameHead::request(Opcode::DcpNoop, 0, opaque)
                .encode(&mut buf, &[], &[], &[], &[])
                .unwrap();
        }
        let mut decoder = FrameDecoder::new();
        for opaque in 0..3 {
            assert_eq!(decoder.decode(&mut buf).unwrap().unwrap().opaque(), opaque);
        }
        assert!(decoder.decode(&mut buf).unwrap().is_none());
    }
}
