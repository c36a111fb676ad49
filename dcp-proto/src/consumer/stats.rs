//! Counters a consumer exposes.

/// Per-connection counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ConnectionStats {
    /// Bytes taken from the receive buffer (whole frames).
    pub bytes_received: u64,
    /// Bytes queued for the producer.
    pub bytes_sent: u64,
    /// Frames received.
    pub frames_received: u64,
    /// Stream-message bytes counted for flow control.
    pub flow_bytes_received: u64,
    /// Counted bytes not yet acknowledged to the producer.
    pub unacked_bytes: u64,
    /// Bytes acknowledged with BUFFER_ACK.
    pub acked_bytes: u64,
    /// BUFFER_ACKs sent.
    pub buffer_acks_sent: u64,
    /// DCP_NOOPs answered.
    pub noops_answered: u64,
    /// Streams currently open.
    pub streams_open: usize,
    /// Cluster-map change notifications received (server requests).
    pub config_notifications: u64,
    /// Server requests ignored (unknown opcode or malformed).
    pub server_requests_ignored: u64,
}

/// Per-stream counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StreamStats {
    /// Seqno-bearing changes received.
    pub items: u64,
    /// Flow-control bytes received for the stream.
    pub bytes: u64,
    /// Last seqno received.
    pub last_seqno: u64,
    /// Current snapshot bounds, as received.
    pub snapshot: Option<(u64, u64)>,
    /// The vbucket's high seqno, when known (from GET_ALL_VB_SEQNOS).
    pub high_seqno: Option<u64>,
    /// Changes known to exist beyond `last_seqno` (high seqno or snapshot
    /// end), when known.
    pub lag: Option<u64>,
    /// Rollbacks obeyed.
    pub rollbacks: u64,
    /// Stream requests sent.
    pub requests: u64,
    /// Streams ended by the producer.
    pub stream_ends: u64,
}
