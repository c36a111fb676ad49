//! Encoding helper for the optional stream-id framing extras.

use crate::codec::{EncodeError, frame_info::stream_id_frame_info};

/// The framing-extras bytes for an optional stream id: empty, or `22 hi lo`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StreamIdFraming {
    bytes: [u8; 3],
    len: usize,
}

impl StreamIdFraming {
    pub(crate) fn new(stream_id: Option<u16>) -> Result<Self, EncodeError> {
        match stream_id {
            None => Ok(Self {
                bytes: [0; 3],
                len: 0,
            }),
            Some(0) => Err(EncodeError::InvalidStreamId),
            Some(sid) => Ok(Self {
                bytes: stream_id_frame_info(sid),
                len: 3,
            }),
        }
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }
}
