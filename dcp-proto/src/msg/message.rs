//! [`Message`]: every typed message, decoded by magic and opcode.

use bytes::BytesMut;

use super::client::{
    GetAllVbSeqnos, GetAllVbSeqnosResponse, GetClusterConfig, GetClusterConfigResponse,
    GetErrorMap, GetErrorMapResponse, GetFailoverLogRequest, Hello, HelloResponse, SaslAuth,
    SaslListMechs, SaslListMechsResponse, SaslResponse, SaslStep, SelectBucket, Stat, StatResponse,
};
use super::dcp::{
    Abort, AddStream, AddStreamResponse, BufferAck, CacheTransfer, CacheTransferEnd, CloseStream,
    Commit, Control, DcpNoop, Deletion, Expiration, FailoverLogResponse, Flush, GetFailoverLog,
    Mutation, Open, OsoSnapshot, Prepare, SeqnoAcknowledged, SeqnoAdvanced, SetVbucketState,
    SnapshotMarker, StreamEnd, StreamRequest, StreamRequestResponse, SystemEvent,
};
use super::status_response::StatusResponse;
use crate::codec::{DecodeError, DecodeErrorKind, EncodeError, Frame, Opcode};

/// Declares [`Message`] with its variants, `decode` dispatch and `encode`.
macro_rules! messages {
    (
        requests { $( $req_op:ident => $req:ident, )* }
        responses { $( $($resp_op:ident)|+ => $resp:ident, )* }
    ) => {
        /// Any message this crate types, request or response.
        ///
        /// Responses whose body is only a status (DCP_OPEN, CONTROL, CLOSE_STREAM,
        /// the consumer's NOOP reply, SELECT_BUCKET, ...) decode as
        /// [`Message::StatusResponse`].
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        #[allow(missing_docs)]
        pub enum Message {
            $( $req($req), )*
            $( $resp($resp), )*
            StatusResponse(StatusResponse),
        }

        impl Message {
            /// Decodes a frame by its magic (request or response) and opcode.
            ///
            /// Opcodes no typed message covers fail with
            /// [`DecodeErrorKind::UnsupportedOpcode`]; the [`Frame`] itself is
            /// still usable.
            pub fn decode(frame: &Frame) -> Result<Message, DecodeError> {
                if frame.is_request() {
                    match frame.opcode() {
                        $( Opcode::$req_op => $req::decode(frame).map(Message::$req), )*
                        _ => Err(frame.error(DecodeErrorKind::UnsupportedOpcode, 1)),
                    }
                } else {
                    match frame.opcode() {
                        $( $(Opcode::$resp_op)|+ => $resp::decode(frame).map(Message::$resp), )*
                        // Status-only replies: DCP commands (including the
                        // consumer's replies to stream messages) and SELECT_BUCKET.
                        op if op.is_dcp() || op == Opcode::SelectBucket => {
                            StatusResponse::decode(frame).map(Message::StatusResponse)
                        }
                        _ => Err(frame.error(DecodeErrorKind::UnsupportedOpcode, 1)),
                    }
                }
            }

            /// Like [`decode`](Self::decode), taking ownership of the frame:
            /// data messages then keep its buffer without extra reference
            /// counting. This is the receive path's fast way.
            #[inline]
            pub fn from_frame(frame: Frame) -> Result<Message, DecodeError> {
                if frame.is_request() && frame.opcode() == Opcode::DcpMutation {
                    return Mutation::from_frame(frame).map(Message::Mutation);
                }
                Self::decode(&frame)
            }

            /// Appends the message's frame to `buf`.
            pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
                match self {
                    $( Message::$req(m) => m.encode(buf), )*
                    $( Message::$resp(m) => m.encode(buf), )*
                    Message::StatusResponse(m) => m.encode(buf),
                }
            }
        }

        $(
            impl From<$req> for Message {
                fn from(m: $req) -> Message {
                    Message::$req(m)
                }
            }
        )*
        $(
            impl From<$resp> for Message {
                fn from(m: $resp) -> Message {
                    Message::$resp(m)
                }
            }
        )*
    };
}

messages! {
    requests {
        DcpOpen => Open,
        DcpAddStream => AddStream,
        DcpCloseStream => CloseStream,
        DcpStreamReq => StreamRequest,
        DcpGetFailoverLog => GetFailoverLog,
        DcpStreamEnd => StreamEnd,
        DcpSnapshotMarker => SnapshotMarker,
        DcpMutation => Mutation,
        DcpDeletion => Deletion,
        DcpExpiration => Expiration,
        DcpFlush => Flush,
        DcpSetVbucketState => SetVbucketState,
        DcpNoop => DcpNoop,
        DcpBufferAck => BufferAck,
        DcpControl => Control,
        DcpSystemEvent => SystemEvent,
        DcpPrepare => Prepare,
        DcpSeqnoAcknowledged => SeqnoAcknowledged,
        DcpCommit => Commit,
        DcpAbort => Abort,
        DcpSeqnoAdvanced => SeqnoAdvanced,
        DcpOsoSnapshot => OsoSnapshot,
        DcpCacheTransfer => CacheTransfer,
        DcpCacheTransferEnd => CacheTransferEnd,
        Hello => Hello,
        SaslListMechs => SaslListMechs,
        SaslAuth => SaslAuth,
        SaslStep => SaslStep,
        SelectBucket => SelectBucket,
        GetErrorMap => GetErrorMap,
        GetClusterConfig => GetClusterConfig,
        GetAllVbSeqnos => GetAllVbSeqnos,
        Stat => Stat,
        GetFailoverLog => GetFailoverLogRequest,
    }
    responses {
        DcpAddStream => AddStreamResponse,
        DcpStreamReq => StreamRequestResponse,
        Hello => HelloResponse,
        SaslListMechs => SaslListMechsResponse,
        GetErrorMap => GetErrorMapResponse,
        GetClusterConfig => GetClusterConfigResponse,
        GetAllVbSeqnos => GetAllVbSeqnosResponse,
        Stat => StatResponse,
        DcpGetFailoverLog | GetFailoverLog => FailoverLogResponse,
        SaslAuth | SaslStep => SaslResponse,
    }
}

impl From<StatusResponse> for Message {
    fn from(m: StatusResponse) -> Message {
        Message::StatusResponse(m)
    }
}
