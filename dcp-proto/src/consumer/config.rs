//! What a consumer connection asks of the producer.

use std::time::Duration;

use crate::auth::{Credentials, Mechanism};
use crate::codec::DEFAULT_MAX_FRAME_LEN;
use crate::msg::OpenFlags;

/// How a stream request answered with ROLLBACK is handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RollbackMode {
    /// Truncate the stream's position and re-request at once. The
    /// [`Event::Rollback`](super::Event::Rollback) still tells the
    /// application to discard its changes above the rollback seqno.
    #[default]
    Automatic,
    /// Wait for [`Consumer::confirm_rollback`](super::Consumer::confirm_rollback),
    /// called once the application has truncated its own data.
    Confirm,
}

/// Snappy value compression (HELLO Snappy, datatype bit 0x02).
///
/// With Snappy negotiated the producer may send values compressed; the
/// flow-control credit of an event is always the size received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SnappyMode {
    /// Not requested: values arrive uncompressed.
    #[default]
    Off,
    /// Requested; compressed values reach the application as sent, with
    /// the Snappy datatype bit (see [`crate::msg::decompress_value`]).
    Negotiate,
    /// Requested; compressed values are decompressed (at most
    /// [`ConsumerConfig::max_frame_len`] bytes each) before the event
    /// reaches the application, and the Snappy bit is cleared. A corrupt or
    /// oversized value is a fatal [`ProtocolError::BadSnappyValue`](super::ProtocolError::BadSnappyValue).
    Decompress,
}

/// Cluster-map change notifications asked of the node (HELLO Duplex with
/// ClustermapChangeNotification or ClustermapChangeNotificationBrief).
///
/// A pushed config (or, in the brief form, the config fetched at once
/// with GET_CLUSTER_CONFIG because the announced revision is newer than
/// any seen on the connection) arrives as
/// [`Event::ClusterConfig`](super::Event::ClusterConfig).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ConfigPush {
    /// Not asked: configs come only from GET_CLUSTER_CONFIG.
    #[default]
    Off,
    /// The full config in every notification.
    Full,
    /// Only the version in every notification (Couchbase 7.6 and later);
    /// the consumer fetches the config when the version is new.
    Brief,
}

/// One DCP_CONTROL setting sent during the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlSetting {
    /// The control key, e.g. `enable_out_of_order_snapshots`.
    pub key: String,
    /// Its value.
    pub value: String,
    /// Whether a refusal fails the handshake (otherwise it is recorded as
    /// not supported and the handshake goes on).
    pub required: bool,
}

impl ControlSetting {
    /// A control the handshake cannot do without.
    pub fn required(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            required: true,
        }
    }

    /// A control the connection uses if the producer supports it.
    pub fn optional(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            required: false,
        }
    }
}

/// Settings of one consumer connection.
///
/// ```
/// use std::time::Duration;
/// use dcp_proto::auth::Credentials;
/// use dcp_proto::consumer::ConsumerConfig;
/// let config = ConsumerConfig::new("my-service:instance-1", "travel-sample")
///     .with_credentials(Credentials::new("dcp-user", "secret"))
///     .with_noop_interval(Some(Duration::from_secs(60)))
///     .with_buffer_size(16 * 1024 * 1024);
/// assert!(config.auto_ack == false);
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// DCP connection name; must be unique per connection (a second
    /// connection with the same name disconnects the first).
    pub connection_name: String,
    /// Bucket to select.
    pub bucket: String,
    /// SASL credentials; `None` skips authentication.
    pub credentials: Option<Credentials>,
    /// Mechanisms allowed, in any order; the strongest the server offers is
    /// used. PLAIN sends the password in clear: allow it only over TLS.
    pub mechanisms: Vec<Mechanism>,
    /// Agent name sent in HELLO.
    pub agent: String,
    /// Ask for collection-aware streams (HELLO Collections).
    pub collections: bool,
    /// Snappy compression of values (default off).
    pub snappy: SnappyMode,
    /// DCP_OPEN flags in addition to Producer (e.g. include xattrs, no
    /// value, include delete times).
    pub open_flags: OpenFlags,
    /// Noop interval; `None` disables noops (and dead-connection
    /// detection).
    pub noop_interval: Option<Duration>,
    /// The connection is dead after this many noop intervals of silence.
    pub dead_connection_factor: u32,
    /// Flow-control window in bytes (`connection_buffer_size`); 0 disables.
    pub buffer_size: u32,
    /// Percent of the window released by the application that triggers a
    /// BUFFER_ACK.
    pub ack_threshold_percent: u8,
    /// Released bytes are acknowledged at the latest after this long.
    pub ack_interval: Duration,
    /// Release each event's flow-control credit as soon as the application
    /// takes it from [`Consumer::poll_event`](super::Consumer::poll_event).
    pub auto_ack: bool,
    /// How rollbacks are handled.
    pub rollback: RollbackMode,
    /// Ask for DCP_EXPIRATION messages (needs include-delete-times in
    /// `open_flags`; otherwise expiries arrive as deletions).
    pub enable_expiry_opcode: bool,
    /// Ask for synchronous writes (`enable_sync_writes` and
    /// `consumer_name` = the connection name): PREPARE, COMMIT and ABORT
    /// then arrive as [`Event::Prepare`](super::Event::Prepare),
    /// [`Event::Commit`](super::Event::Commit) and
    /// [`Event::Abort`](super::Event::Abort), markers carry the max visible
    /// seqno, and [`Consumer::acknowledge_prepared`](super::Consumer::acknowledge_prepared)
    /// may report what was received. Without it prepares and aborts are
    /// never sent and commits arrive as mutations. The producer refuses it
    /// together with stream ids.
    pub sync_writes: bool,
    /// Ask for stream ids (`enable_stream_id`, a required control): every
    /// stream is then opened with a stream id
    /// ([`StreamKey::with_stream_id`](crate::session::StreamKey::with_stream_id)),
    /// and one vbucket can have several streams on the connection, each
    /// with its own id and filter. Events name their stream
    /// ([`Event::stream_key`](super::Event::stream_key)). The producer
    /// refuses it together with sync writes.
    pub stream_ids: bool,
    /// Ask for FlatBuffers system events (`flatbuffers_system_events`, an
    /// optional control; meaningful with `collections`): system event
    /// values then arrive as version 2, which carries every collection
    /// setting (history, metered, flush uid), and collection modifications
    /// (max TTL, history) arrive as ModifyCollection events instead of
    /// SEQNO_ADVANCED. Either way events decode to the same
    /// [`SystemEventData`](crate::msg::SystemEventData) and
    /// [`CollectionsChange`](super::CollectionsChange). A producer that
    /// refuses it (older servers answer EINVAL) keeps sending versions 0
    /// and 1; see [`Negotiated::flatbuffers_system_events`](super::Negotiated::flatbuffers_system_events).
    pub flatbuffers_system_events: bool,
    /// Ask the producer for STREAM_END(Closed) after a close (otherwise it
    /// is synthesized when the close is acknowledged).
    pub send_stream_end_on_close: bool,
    /// Further DCP_CONTROL settings, sent after the built-in ones.
    pub controls: Vec<ControlSetting>,
    /// Largest frame accepted from the producer.
    pub max_frame_len: usize,
    /// The handshake must complete within this long.
    pub handshake_timeout: Duration,
    /// First retry delay after a temporary stream-request failure; doubles
    /// up to `max_retry_delay`.
    pub retry_delay: Duration,
    /// Cap for the retry delay.
    pub max_retry_delay: Duration,
    /// A stream request answered with ROLLBACK more often than this in a row
    /// fails the stream.
    pub max_rollbacks: u32,
    /// Cluster-map change notifications to ask for (default off; the
    /// cluster client turns them on).
    pub config_push: ConfigPush,
    /// Ask for NOT_MY_VBUCKET replies without the config when this
    /// connection already saw that revision (HELLO
    /// DedupeNotMyVbucketClustermap; default off).
    pub dedupe_not_my_vbucket: bool,
    /// Consistent-snapshot delivery: `Some(max_held_bytes)` holds each
    /// snapshot's changes until the whole snapshot has arrived and hands
    /// them out together, followed by
    /// [`Event::SnapshotComplete`](super::Event::SnapshotComplete), so the
    /// application never sees a state that did not exist on the producer.
    /// Held changes have their flow-control credit returned as they are
    /// held (the hold, not the window, bounds them), so a snapshot larger
    /// than the window cannot stall the stream. When the connection's held
    /// bytes would exceed `max_held_bytes`, the largest held snapshot is let
    /// through early ([`Event::SnapshotTooLarge`](super::Event::SnapshotTooLarge)).
    /// `None` (the default) hands every change out as it arrives. See the
    /// `consumer` module docs, "Consistent snapshots".
    pub consistent_snapshots: Option<u64>,
    /// Show document keys in log events (default off: keys are logged as
    /// `<ud>…</ud>`-wrapped redacted placeholders). Values are never logged.
    pub log_keys: bool,
}

impl ConsumerConfig {
    /// Defaults: SCRAM-SHA512/256/1, noop every 120 s (dead after 240 s of
    /// silence), a 10 MiB window acked at 20 % or after 1 s, automatic
    /// rollback, STREAM_END on close.
    pub fn new(connection_name: impl Into<String>, bucket: impl Into<String>) -> Self {
        Self {
            connection_name: connection_name.into(),
            bucket: bucket.into(),
            credentials: None,
            mechanisms: vec![
                Mechanism::ScramSha512,
                Mechanism::ScramSha256,
                Mechanism::ScramSha1,
            ],
            agent: concat!("dcp-rs/", env!("CARGO_PKG_VERSION")).to_string(),
            collections: false,
            snappy: SnappyMode::Off,
            open_flags: OpenFlags::empty(),
            noop_interval: Some(Duration::from_secs(120)),
            dead_connection_factor: 2,
            buffer_size: 10 * 1024 * 1024,
            ack_threshold_percent: 20,
            ack_interval: Duration::from_secs(1),
            auto_ack: false,
            rollback: RollbackMode::Automatic,
            enable_expiry_opcode: false,
            sync_writes: false,
            stream_ids: false,
            flatbuffers_system_events: false,
            send_stream_end_on_close: true,
            controls: Vec::new(),
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            handshake_timeout: Duration::from_secs(30),
            retry_delay: Duration::from_millis(100),
            max_retry_delay: Duration::from_secs(5),
            max_rollbacks: 64,
            config_push: ConfigPush::Off,
            dedupe_not_my_vbucket: false,
            consistent_snapshots: None,
            log_keys: false,
        }
    }

    /// Sets the SASL credentials.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.credentials = Some(credentials);
        self
    }

    /// Sets the noop interval (`None` disables noops).
    pub fn with_noop_interval(mut self, interval: Option<Duration>) -> Self {
        self.noop_interval = interval;
        self
    }

    /// Sets the flow-control window (0 disables flow control).
    pub fn with_buffer_size(mut self, bytes: u32) -> Self {
        self.buffer_size = bytes;
        self
    }

    /// Releases credit automatically when events are polled.
    pub fn with_auto_ack(mut self, auto_ack: bool) -> Self {
        self.auto_ack = auto_ack;
        self
    }

    /// Sets the rollback mode.
    pub fn with_rollback_mode(mut self, mode: RollbackMode) -> Self {
        self.rollback = mode;
        self
    }

    /// Asks for collection-aware streams.
    pub fn with_collections(mut self, collections: bool) -> Self {
        self.collections = collections;
        self
    }

    /// Sets the Snappy mode.
    pub fn with_snappy(mut self, snappy: SnappyMode) -> Self {
        self.snappy = snappy;
        self
    }

    /// Adds DCP_OPEN flags (Producer is always set).
    pub fn with_open_flags(mut self, flags: OpenFlags) -> Self {
        self.open_flags |= flags;
        self
    }

    /// Asks for synchronous writes (see [`sync_writes`](Self::sync_writes)).
    pub fn with_sync_writes(mut self, sync_writes: bool) -> Self {
        self.sync_writes = sync_writes;
        self
    }

    /// Asks for FlatBuffers system events and ModifyCollection events (see
    /// [`flatbuffers_system_events`](Self::flatbuffers_system_events)).
    ///
    /// ```
    /// use dcp_proto::consumer::ConsumerConfig;
    /// let config = ConsumerConfig::new("c", "b")
    ///     .with_collections(true)
    ///     .with_flatbuffers_system_events(true);
    /// assert!(config.flatbuffers_system_events);
    /// ```
    pub fn with_flatbuffers_system_events(mut self, on: bool) -> Self {
        self.flatbuffers_system_events = on;
        self
    }

    /// Asks for stream ids (see [`stream_ids`](Self::stream_ids)).
    pub fn with_stream_ids(mut self, stream_ids: bool) -> Self {
        self.stream_ids = stream_ids;
        self
    }

    /// Holds each snapshot until it is complete, with at most
    /// `max_held_bytes` held per connection (see
    /// [`consistent_snapshots`](Self::consistent_snapshots)).
    pub fn with_consistent_snapshots(mut self, max_held_bytes: u64) -> Self {
        self.consistent_snapshots = Some(max_held_bytes);
        self
    }

    /// Shows document keys in log events instead of redacting them.
    pub fn with_log_keys(mut self, show: bool) -> Self {
        self.log_keys = show;
        self
    }

    /// Adds a DCP_CONTROL setting.
    pub fn with_control(mut self, control: ControlSetting) -> Self {
        self.controls.push(control);
        self
    }

    /// Asks the node to push cluster-map changes.
    pub fn with_config_push(mut self, push: ConfigPush) -> Self {
        self.config_push = push;
        self
    }

    /// Asks for NOT_MY_VBUCKET replies without a config this connection
    /// already saw.
    pub fn with_dedupe_not_my_vbucket(mut self, dedupe: bool) -> Self {
        self.dedupe_not_my_vbucket = dedupe;
        self
    }
}
