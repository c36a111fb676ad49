//! The state of one accepted connection: framing, what HELLO negotiated,
//! authentication, the selected bucket, the DCP producer state after
//! DCP_OPEN, queued responses, and why it closed.

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::BytesMut;

use super::control::Controls;
use super::error::{CloseReason, ConnectionId};
use super::liveness::Liveness;
use super::sasl::SaslState;
use super::stream::{Stream, StreamKey};
use crate::codec::{EncodeError, FrameDecoder, Opcode, Status};
use crate::flow::ProducerWindow;
use crate::msg::client::HelloFeature;
use crate::msg::{OpenFlags, StatusResponse};

/// The HELLO features this node grants, in the order it answers them.
pub(crate) const SUPPORTED_FEATURES: [HelloFeature; 16] = [
    HelloFeature::TcpNoDelay,
    HelloFeature::MutationSeqno,
    HelloFeature::Xattr,
    HelloFeature::Xerror,
    HelloFeature::SelectBucket,
    HelloFeature::Json,
    HelloFeature::Snappy,
    HelloFeature::UnorderedExecution,
    HelloFeature::AltRequestSupport,
    HelloFeature::Collections,
    HelloFeature::GetClusterConfigWithKnownVersion,
    HelloFeature::DcpSkipDeletesInInitialBackfill,
    HelloFeature::Duplex,
    HelloFeature::ClustermapChangeNotification,
    HelloFeature::ClustermapChangeNotificationBrief,
    HelloFeature::DedupeNotMyVbucketClustermap,
];

/// Which cluster-map change notifications a connection gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum PushMode {
    #[default]
    None,
    Full,
    Brief,
}

/// What HELLO negotiated.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Features {
    pub(crate) xerror: bool,
    pub(crate) select_bucket: bool,
    pub(crate) collections: bool,
    pub(crate) xattr: bool,
    pub(crate) json: bool,
    pub(crate) snappy: bool,
    pub(crate) mutation_seqno: bool,
    pub(crate) unordered: bool,
    pub(crate) duplex: bool,
    pub(crate) push: PushMode,
    pub(crate) dedupe_nmvb: bool,
}

impl Features {
    /// Records one granted feature.
    pub(crate) fn grant(&mut self, feature: HelloFeature) {
        match feature {
            HelloFeature::Xerror => self.xerror = true,
            HelloFeature::SelectBucket => self.select_bucket = true,
            HelloFeature::Collections => self.collections = true,
            HelloFeature::Xattr => self.xattr = true,
            HelloFeature::Json => self.json = true,
            HelloFeature::Snappy => self.snappy = true,
            HelloFeature::MutationSeqno => self.mutation_seqno = true,
            HelloFeature::UnorderedExecution => self.unordered = true,
            HelloFeature::Duplex => self.duplex = true,
            HelloFeature::ClustermapChangeNotification => self.push = PushMode::Full,
            HelloFeature::ClustermapChangeNotificationBrief => self.push = PushMode::Brief,
            HelloFeature::DedupeNotMyVbucketClustermap => self.dedupe_nmvb = true,
            _ => {}
        }
    }
}

/// The producer side of a connection after DCP_OPEN.
#[derive(Debug, Clone)]
pub(crate) struct DcpConn {
    pub(crate) name: String,
    pub(crate) flags: OpenFlags,
    pub(crate) controls: Controls,
    /// HELLO Snappy was granted when DCP_OPEN ran: values may be sent
    /// compressed.
    pub(crate) snappy: bool,
    pub(crate) window: ProducerWindow,
    pub(crate) liveness: Liveness,
    pub(crate) streams: BTreeMap<StreamKey, Stream>,
    /// Where the next round-robin pass starts.
    pub(crate) next_stream: Option<StreamKey>,
    pub(crate) items_sent: u64,
    pub(crate) bytes_sent: u64,
}

/// Statuses every client understands; anything else needs HELLO XERROR
/// (without it the server closes the connection instead of answering).
pub(crate) fn is_legacy_status(status: Status) -> bool {
    matches!(
        status,
        Status::Success
            | Status::KeyEnoent
            | Status::KeyEexists
            | Status::E2big
            | Status::Einval
            | Status::NotStored
            | Status::DeltaBadval
            | Status::NotMyVbucket
            | Status::AuthError
            | Status::AuthContinue
            | Status::Erange
            | Status::Rollback
            | Status::UnknownCommand
            | Status::Enomem
            | Status::NotSupported
            | Status::Einternal
            | Status::Ebusy
            | Status::Etmpfail
    )
}

/// One accepted connection.
#[derive(Debug, Clone)]
pub(crate) struct Connection {
    pub(crate) id: ConnectionId,
    pub(crate) decoder: FrameDecoder,
    /// Responses and noops, whole frames, ready to send.
    pub(crate) out: BytesMut,
    pub(crate) last_recv: Instant,
    pub(crate) sasl: SaslState,
    /// The authenticated user.
    pub(crate) user: Option<String>,
    pub(crate) features: Features,
    pub(crate) agent: String,
    pub(crate) bucket_selected: bool,
    pub(crate) dcp: Option<DcpConn>,
    pub(crate) closed: Option<CloseReason>,
    /// Stream messages held back (fault injection).
    pub(crate) stalled: bool,
    /// Nothing at all sent (fault injection).
    pub(crate) frozen: bool,
    /// The newest config version sent on this connection (pushed, or in a
    /// GET_CLUSTER_CONFIG or NOT_MY_VBUCKET reply).
    pub(crate) config_sent: Option<crate::msg::client::KnownVersion>,
    /// The newest config version announced by a brief notification.
    pub(crate) config_announced: Option<crate::msg::client::KnownVersion>,
}

impl Connection {
    pub(crate) fn new(id: ConnectionId, max_frame_len: usize, now: Instant) -> Self {
        Self {
            id,
            decoder: FrameDecoder::with_max_frame_len(max_frame_len),
            out: BytesMut::new(),
            last_recv: now,
            sasl: SaslState::Idle,
            user: None,
            features: Features::default(),
            agent: String::new(),
            bucket_selected: false,
            dcp: None,
            closed: None,
            stalled: false,
            frozen: false,
            config_sent: None,
            config_announced: None,
        }
    }

    /// Queues a response built by `encode` with `status`, or closes the
    /// connection if the client cannot understand the status.
    pub(crate) fn respond(
        &mut self,
        status: Status,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
    ) -> Result<(), CloseReason> {
        if !self.features.xerror && !is_legacy_status(status) {
            return Err(CloseReason::XerrorRequired(status));
        }
        let mark = self.out.len();
        encode(&mut self.out).map_err(|e| {
            // Only over-long fields fail to encode; without a response the
            // client could not pair later ones, so the connection ends.
            self.out.truncate(mark);
            CloseReason::Encode(e)
        })
    }

    /// Queues a status-only response.
    pub(crate) fn status(
        &mut self,
        opcode: Opcode,
        status: Status,
        opaque: u32,
    ) -> Result<(), CloseReason> {
        self.respond(status, |buf| {
            StatusResponse::new(opcode, status, opaque).encode(buf)
        })
    }
}
