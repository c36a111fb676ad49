//! DCP messages: what a consumer sends (open, controls, stream requests,
//! acks) and what a producer streams back (markers, mutations, deletions,
//! system events, ...).

// -- producer → consumer stream messages --
mod mutation;
pub use mutation::{MUTATION_EXTRAS_LEN, Mutation};
mod stream_end;
pub use stream_end::{StreamEnd, StreamEndReason};
mod snapshot_marker;
pub use snapshot_marker::{MarkerFormat, SnapshotFlags, SnapshotMarker};
mod deletion;
pub use deletion::Deletion;
mod expiration;
pub use expiration::Expiration;
mod flush;
pub use flush::Flush;
mod set_vbucket_state;
pub use set_vbucket_state::{SetVbucketState, VbucketState};
mod noop;
pub use noop::DcpNoop;
mod system_event;
pub use system_event::{CollectionDetails, SystemEvent, SystemEventData, SystemEventId};
mod prepare;
mod system_event_fb;
pub use prepare::Prepare;
mod commit;
pub use commit::Commit;
mod abort;
pub use abort::Abort;
mod seqno_advanced;
pub use seqno_advanced::SeqnoAdvanced;
mod oso_snapshot;
pub use oso_snapshot::{OsoFlags, OsoSnapshot};
mod cache_transfer;
pub use cache_transfer::{CacheTransfer, CacheTransferEnd, CacheTransferItem, CacheTransferItems};

// -- consumer → producer requests, and their responses --
mod open;
pub use open::{OPEN_EXTRAS_LEN, Open, OpenFlags};
mod add_stream;
pub use add_stream::{AddStream, AddStreamResponse};
mod close_stream;
pub use close_stream::CloseStream;
mod stream_request;
pub use stream_request::{
    CacheTransferSettings, STREAM_REQUEST_EXTRAS_LEN, StreamRequest, StreamRequestFlags,
    StreamRequestOutcome, StreamRequestResponse, StreamRequestValue,
};
mod get_failover_log;
pub use get_failover_log::{FailoverLogResponse, GetFailoverLog};
mod buffer_ack;
pub use buffer_ack::BufferAck;
mod control;
pub use control::Control;
mod seqno_acknowledged;
pub use seqno_acknowledged::SeqnoAcknowledged;
