//! What the orchestrator asks of its adapter, and what it answers to a
//! config.

use crate::cluster::{ConfigError, ConfigVersion, KvNode, NodeAddress};
use crate::codec::Status;
use crate::consumer::StreamStart;
use crate::msg::StreamEndReason;

/// Something the adapter must do, in the order polled.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Open a consumer connection to this node (plain port, or
    /// [`KvNode::tls_port`] over TLS). Report the outcome with
    /// `handle_node_connected` once its handshake completed, or
    /// `handle_node_lost` if it failed.
    Connect(KvNode),
    /// Close the connection to this node (or abandon connecting): it has no
    /// work left. Events it still yields are stale.
    Disconnect(NodeAddress),
    /// Open a stream: `consumer.open_stream(vbucket, start, end)` on the
    /// node's consumer.
    OpenStream {
        /// The node whose consumer opens it.
        node: NodeAddress,
        /// The vbucket.
        vbucket: u16,
        /// Where it starts (never [`StreamStart::Resume`]).
        start: StreamStart,
        /// Last seqno wanted (`None`: endless).
        end: Option<u64>,
    },
    /// Close a stream that moved elsewhere: `consumer.close_stream(vbucket)`
    /// on that node's consumer (an error because it already ended is
    /// fine: its end event is on its way). Events of that stream are stale
    /// from now on.
    CloseStream {
        /// The node whose consumer closes it.
        node: NodeAddress,
        /// The vbucket.
        vbucket: u16,
    },
    /// Fetch the bucket config (GET_CLUSTER_CONFIG) and pass it to
    /// `handle_config`. `via` is a connected node; `None` when none is
    /// connected: ask a seed node.
    RefreshConfig {
        /// The node to ask.
        via: Option<NodeAddress>,
    },
    /// The vbucket's stream reached its end seqno; it is not reopened.
    StreamDone {
        /// The vbucket.
        vbucket: u16,
    },
    /// The vbucket cannot be streamed without the application's help (its
    /// filter is gone, privileges were lost, the request is invalid); it
    /// is not retried.
    Fail {
        /// The vbucket.
        vbucket: u16,
        /// Why.
        reason: StreamFailure,
    },
}

/// Why a vbucket's stream was given up.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StreamFailure {
    /// The producer ended the stream for a reason retrying cannot fix
    /// (FilterEmpty, LostPrivileges).
    Ended(StreamEndReason),
    /// The producer refused the stream request (EACCESS, ERANGE, EINVAL,
    /// unknown collection or scope, too many rollbacks, ...).
    Refused(Status),
}

/// What became of a config given to `handle_config`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigOutcome {
    /// It is newer than the one held and now in force.
    Applied(ConfigVersion),
    /// It is not newer than the one held and was ignored.
    Stale {
        /// Its version.
        received: ConfigVersion,
        /// The version in force.
        current: ConfigVersion,
    },
}

/// A config `handle_config` refused; the one in force stays.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigRejected {
    /// It does not parse.
    #[error(transparent)]
    Invalid(#[from] ConfigError),
    /// It describes another bucket (another name, or the same name with
    /// another uuid: the bucket was deleted and recreated, so saved
    /// positions mean nothing there).
    #[error(
        "config for bucket {got_name:?} (uuid {got_uuid:?}), expected {name:?} (uuid {uuid:?})"
    )]
    OtherBucket {
        /// The bucket streamed.
        name: String,
        /// Its uuid.
        uuid: String,
        /// The config's bucket name.
        got_name: String,
        /// The config's bucket uuid.
        got_uuid: String,
    },
    /// It has a different number of vbuckets than the config in force.
    #[error("config has {got} vbuckets, the bucket has {expected}")]
    VbucketCount {
        /// The count in force.
        expected: u16,
        /// The config's count.
        got: u16,
    },
}
