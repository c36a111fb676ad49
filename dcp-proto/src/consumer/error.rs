//! Consumer errors: fatal connection errors and refused commands.

use std::time::Duration;

use crate::auth::AuthError;
use crate::codec::{DecodeError, EncodeError, Opcode, Status};
use crate::msg::SnappyError;
use crate::session::{StreamKey, Violation};

/// A handshake step, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeStep {
    /// HELLO feature negotiation.
    Hello,
    /// SASL_LIST_MECHS.
    ListMechanisms,
    /// SASL_AUTH / SASL_STEP.
    Authenticate,
    /// SELECT_BUCKET.
    SelectBucket,
    /// DCP_OPEN.
    Open,
    /// A required DCP_CONTROL.
    Control,
}

impl core::fmt::Display for HandshakeStep {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HandshakeStep::Hello => "HELLO",
            HandshakeStep::ListMechanisms => "SASL_LIST_MECHS",
            HandshakeStep::Authenticate => "SASL authentication",
            HandshakeStep::SelectBucket => "SELECT_BUCKET",
            HandshakeStep::Open => "DCP_OPEN",
            HandshakeStep::Control => "DCP_CONTROL",
        })
    }
}

/// A fatal error: the connection must be closed. Events decoded before it
/// can still be polled; the checkpoint stays valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsumerError {
    /// The producer's bytes could not be decoded.
    #[error("malformed frame from the producer: {0}")]
    Decode(#[from] DecodeError),
    /// A handshake step was refused.
    #[error("{step} refused with {status}{}", detail_suffix(.detail))]
    Handshake {
        /// The step.
        step: HandshakeStep,
        /// The server's status.
        status: Status,
        /// The control key, or the server's error text, if any.
        detail: String,
    },
    /// The credentials were refused.
    #[error("authentication failed: wrong user name or password ({status})")]
    AuthFailed {
        /// The server's status.
        status: Status,
    },
    /// SASL could not proceed.
    #[error("authentication error: {0}")]
    Auth(#[from] AuthError),
    /// The server offers no mechanism this consumer allows.
    #[error("no common SASL mechanism (server offers: {offered})")]
    NoCommonMechanism {
        /// The server's list.
        offered: String,
    },
    /// The bucket does not exist or the user may not access it.
    #[error("bucket {bucket:?} not found or not accessible ({status})")]
    NoBucket {
        /// The bucket name.
        bucket: String,
        /// The server's status.
        status: Status,
    },
    /// The producer broke a stream's ordering rules.
    #[error("vbucket {vbucket}: {violation}")]
    Violation {
        /// The vbucket.
        vbucket: u16,
        /// The rule broken.
        violation: Violation,
    },
    /// The producer sent something the protocol does not allow here.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// Nothing arrived for too long.
    #[error("connection dead: nothing received for {0:?}")]
    DeadConnection(Duration),
    /// The handshake did not complete in time.
    #[error("handshake not complete after {0:?}")]
    HandshakeTimeout(Duration),
    /// The producer closed the connection.
    #[error("connection closed by the producer")]
    ClosedByPeer,
    /// The application closed the connection.
    #[error("connection closed")]
    Closed,
    /// A frame could not be encoded (a bug or an oversized setting).
    #[error("could not encode a request: {0}")]
    Encode(#[from] EncodeError),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// A message the protocol does not allow at this point.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A response whose opaque matches no request in flight.
    #[error("response {opcode} with unknown opaque {opaque:#x}")]
    UnexpectedResponse {
        /// Its opcode.
        opcode: Opcode,
        /// Its opaque.
        opaque: u32,
    },
    /// A response whose opcode differs from the request's.
    #[error("response {got} to a {expected} request")]
    MismatchedResponse {
        /// The request's opcode.
        expected: Opcode,
        /// The response's opcode.
        got: Opcode,
    },
    /// A stream message whose opaque is no stream's.
    #[error("{opcode} for unknown stream opaque {opaque:#x}")]
    UnknownStream {
        /// Its opcode.
        opcode: Opcode,
        /// Its opaque.
        opaque: u32,
    },
    /// A stream message whose vbucket differs from its stream's.
    #[error("{opcode} for vbucket {got} on the stream of vbucket {expected}")]
    WrongVbucket {
        /// Its opcode.
        opcode: Opcode,
        /// The stream's vbucket.
        expected: u16,
        /// The message's vbucket.
        got: u16,
    },
    /// A stream message whose framed stream id differs from its stream's.
    #[error("{opcode} with stream id {got:?} on the stream with id {expected:?}")]
    WrongStreamId {
        /// Its opcode.
        opcode: Opcode,
        /// The stream's id.
        expected: Option<u16>,
        /// The message's.
        got: Option<u16>,
    },
    /// A request the producer never sends to a consumer.
    #[error("unexpected request {0} from the producer")]
    UnexpectedRequest(Opcode),
    /// A Snappy-compressed value that could not be decompressed (corrupt,
    /// or larger than the maximum frame length).
    #[error("{opcode} with a bad Snappy value: {error}")]
    BadSnappyValue {
        /// Its opcode.
        opcode: Opcode,
        /// What is wrong with the value.
        error: SnappyError,
    },
    /// A rollback seqno not below the requested start.
    #[error("rollback to {seqno} from start {start} would skip changes")]
    RollbackAhead {
        /// The rollback seqno.
        seqno: u64,
        /// The request's start.
        start: u64,
    },
}

/// Why a command was refused. The connection is unaffected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CommandError {
    /// The connection has failed or was closed.
    #[error("the connection is closed")]
    Closed,
    /// A stream with this key is already open or being opened.
    #[error("{0} already has a stream")]
    StreamExists(StreamKey),
    /// No stream with this key.
    #[error("{0} has no stream")]
    NoStream(StreamKey),
    /// Sync writes were not negotiated.
    #[error("synchronous writes are not enabled on this connection")]
    SyncWritesOff,
    /// The stream is not waiting for a rollback confirmation.
    #[error("{0} is not waiting for a rollback confirmation")]
    NoRollbackPending(StreamKey),
    /// The connection uses stream ids
    /// ([`ConsumerConfig::stream_ids`](super::ConsumerConfig::stream_ids)):
    /// every stream needs one.
    #[error("vbucket {0}: this connection uses stream ids, the stream needs one")]
    StreamIdRequired(u16),
    /// A stream id on a connection without stream ids.
    #[error("{0}: stream ids are not enabled on this connection")]
    StreamIdsOff(StreamKey),
    /// The start position does not satisfy `snap_start <= start <= snap_end`
    /// or `start <= end`.
    #[error("{stream}: invalid start position ({reason})")]
    InvalidPosition {
        /// The stream.
        stream: StreamKey,
        /// What is wrong.
        reason: &'static str,
    },
}
