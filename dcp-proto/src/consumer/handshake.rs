//! The connection handshake: HELLO, SASL, SELECT_BUCKET, DCP_OPEN, then the
//! DCP_CONTROL settings one at a time, each awaiting its response.

use std::time::Duration;

use bytes::Bytes;

use super::config::{ConfigPush, ConsumerConfig, ControlSetting, SnappyMode};
use super::error::{ConsumerError, HandshakeStep, ProtocolError};
use super::outbox::Outbox;
use crate::auth::{Mechanism, ScramClient, plain_initial};
use crate::codec::{Frame, Opcode, Status};
use crate::msg::client::{
    Hello, HelloFeature, HelloResponse, SaslAuth, SaslListMechs, SaslListMechsResponse,
    SaslResponse, SaslStep, SelectBucket,
};
use crate::msg::{Control, Open, OpenFlags, StatusResponse};

/// What the producer agreed to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Negotiated {
    /// HELLO features the server accepted.
    pub features: Vec<HelloFeature>,
    /// Keys carry a collection-id prefix; system events and seqno-advanced
    /// may arrive.
    pub collections: bool,
    /// Values may carry xattrs.
    pub xattr: bool,
    /// Values may arrive Snappy-compressed (HELLO Snappy accepted).
    pub snappy: bool,
    /// The SASL mechanism used, if any.
    pub mechanism: Option<Mechanism>,
    /// The DCP_OPEN flags sent.
    pub open_flags: OpenFlags,
    /// Noop interval in force (`None`: noops off).
    pub noop_interval: Option<Duration>,
    /// Flow-control window in force (0: off).
    pub buffer_size: u32,
    /// The producer sends STREAM_END(Closed) after a close.
    pub stream_end_on_close: bool,
    /// Expiries arrive as DCP_EXPIRATION.
    pub expiry_opcode: bool,
    /// Synchronous writes are on (`enable_sync_writes` and
    /// `consumer_name` accepted).
    pub sync_writes: bool,
    /// Stream ids are on (`enable_stream_id` accepted).
    pub stream_ids: bool,
    /// System events arrive as FlatBuffers (version 2) values, and
    /// collection modifications as ModifyCollection events
    /// (`flatbuffers_system_events` accepted).
    pub flatbuffers_system_events: bool,
    /// Optional controls the producer refused.
    pub refused_controls: Vec<String>,
    /// Cluster-map change notifications the node agreed to push.
    pub config_push: ConfigPush,
    /// NOT_MY_VBUCKET replies omit a config this connection already saw.
    pub dedupe_not_my_vbucket: bool,
}

/// Why a built-in control is sent: its acceptance changes behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ControlRole {
    Noop,
    BufferSize,
    StreamEndOnClose,
    ExpiryOpcode,
    SyncWrites,
    ConsumerName,
    StreamIds,
    FlatBuffersSystemEvents,
    User,
}

#[derive(Debug, Clone)]
enum Step {
    Hello,
    ListMechanisms,
    Auth(Option<Box<ScramClient>>),
    SelectBucket,
    Open,
    Control(usize),
    Ready,
}

/// The handshake in progress.
#[derive(Debug, Clone)]
pub(crate) struct Handshake {
    step: Step,
    opaque: u32,
    controls: Vec<(ControlSetting, ControlRole)>,
    negotiated: Negotiated,
    sasl_nonce: String,
}

/// What a handled response led to.
pub(crate) enum Progress {
    Continue,
    Ready(Negotiated),
}

fn requested_features(config: &ConsumerConfig) -> Vec<HelloFeature> {
    let mut features = vec![
        HelloFeature::Xerror,
        HelloFeature::SelectBucket,
        HelloFeature::Json,
        HelloFeature::AltRequestSupport,
    ];
    if config.open_flags.contains(OpenFlags::INCLUDE_XATTRS) {
        features.push(HelloFeature::Xattr);
    }
    if config.collections {
        features.push(HelloFeature::Collections);
    }
    if config.snappy != SnappyMode::Off {
        features.push(HelloFeature::Snappy);
    }
    match config.config_push {
        ConfigPush::Off => {}
        ConfigPush::Full => features.extend([
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotification,
        ]),
        ConfigPush::Brief => features.extend([
            HelloFeature::Duplex,
            HelloFeature::ClustermapChangeNotificationBrief,
        ]),
    }
    if config.dedupe_not_my_vbucket {
        features.push(HelloFeature::DedupeNotMyVbucketClustermap);
    }
    features
}

fn controls(config: &ConsumerConfig) -> Vec<(ControlSetting, ControlRole)> {
    let mut out = Vec::new();
    if let Some(interval) = config.noop_interval {
        out.push((
            ControlSetting::required("enable_noop", "true"),
            ControlRole::Noop,
        ));
        let secs = sent_noop_interval(interval).as_secs();
        out.push((
            ControlSetting::required("set_noop_interval", secs.to_string()),
            ControlRole::Noop,
        ));
    }
    if config.buffer_size > 0 {
        out.push((
            ControlSetting::required("connection_buffer_size", config.buffer_size.to_string()),
            ControlRole::BufferSize,
        ));
    }
    if config.send_stream_end_on_close {
        out.push((
            ControlSetting::optional("send_stream_end_on_client_close_stream", "true"),
            ControlRole::StreamEndOnClose,
        ));
    }
    if config.enable_expiry_opcode {
        out.push((
            ControlSetting::optional("enable_expiry_opcode", "true"),
            ControlRole::ExpiryOpcode,
        ));
    }
    if config.sync_writes {
        out.push((
            ControlSetting::required("enable_sync_writes", "true"),
            ControlRole::SyncWrites,
        ));
        out.push((
            ControlSetting::required("consumer_name", config.connection_name.clone()),
            ControlRole::ConsumerName,
        ));
    }
    if config.stream_ids {
        out.push((
            ControlSetting::required("enable_stream_id", "true"),
            ControlRole::StreamIds,
        ));
    }
    if config.flatbuffers_system_events {
        out.push((
            ControlSetting::optional("flatbuffers_system_events", "true"),
            ControlRole::FlatBuffersSystemEvents,
        ));
    }
    out.extend(
        config
            .controls
            .iter()
            .cloned()
            .map(|c| (c, ControlRole::User)),
    );
    out
}

impl Handshake {
    /// Starts the handshake by queueing HELLO.
    pub(crate) fn start(
        config: &ConsumerConfig,
        sasl_nonce: String,
        out: &mut Outbox,
    ) -> Result<Self, ConsumerError> {
        let opaque = out.send(Hello {
            opaque: 0,
            agent: Bytes::from(config.agent.clone()),
            features: requested_features(config),
        })?;
        Ok(Self {
            step: Step::Hello,
            opaque,
            controls: controls(config),
            negotiated: Negotiated::default(),
            sasl_nonce,
        })
    }

    /// The opaque of the request in flight.
    pub(crate) fn opaque(&self) -> u32 {
        self.opaque
    }

    pub(crate) fn step_name(&self) -> HandshakeStep {
        match self.step {
            Step::Hello => HandshakeStep::Hello,
            Step::ListMechanisms => HandshakeStep::ListMechanisms,
            Step::Auth(_) => HandshakeStep::Authenticate,
            Step::SelectBucket => HandshakeStep::SelectBucket,
            Step::Open => HandshakeStep::Open,
            Step::Control(_) | Step::Ready => HandshakeStep::Control,
        }
    }

    fn expected_opcode(&self) -> Option<Opcode> {
        Some(match self.step {
            Step::Hello => Opcode::Hello,
            Step::ListMechanisms => Opcode::SaslListMechs,
            Step::Auth(_) => return None,
            Step::SelectBucket => Opcode::SelectBucket,
            Step::Open => Opcode::DcpOpen,
            Step::Control(_) => Opcode::DcpControl,
            Step::Ready => return None,
        })
    }

    /// Handles the response to the request in flight.
    pub(crate) fn on_response(
        &mut self,
        frame: &Frame,
        config: &ConsumerConfig,
        out: &mut Outbox,
    ) -> Result<Progress, ConsumerError> {
        if let Some(expected) = self.expected_opcode()
            && frame.opcode() != expected
        {
            return Err(ProtocolError::MismatchedResponse {
                expected,
                got: frame.opcode(),
            }
            .into());
        }
        let step_name = self.step_name();
        let refused = |status: Status, detail: String| ConsumerError::Handshake {
            step: step_name,
            status,
            detail,
        };
        match std::mem::replace(&mut self.step, Step::Ready) {
            Step::Hello => {
                let response = HelloResponse::decode(frame)?;
                if !response.status.is_success() {
                    return Err(refused(response.status, String::new()));
                }
                self.negotiated.collections = response.has(HelloFeature::Collections);
                self.negotiated.xattr = response.has(HelloFeature::Xattr);
                self.negotiated.snappy = response.has(HelloFeature::Snappy);
                let duplex = response.has(HelloFeature::Duplex);
                self.negotiated.config_push = if !duplex {
                    ConfigPush::Off
                } else if response.has(HelloFeature::ClustermapChangeNotificationBrief) {
                    ConfigPush::Brief
                } else if response.has(HelloFeature::ClustermapChangeNotification) {
                    ConfigPush::Full
                } else {
                    ConfigPush::Off
                };
                self.negotiated.dedupe_not_my_vbucket =
                    response.has(HelloFeature::DedupeNotMyVbucketClustermap);
                self.negotiated.features = response.features;
                self.after_hello(config, out)
            }
            Step::ListMechanisms => {
                let response = SaslListMechsResponse::decode(frame)?;
                if !response.status.is_success() {
                    return Err(refused(response.status, String::new()));
                }
                let offered = response.mechanisms().collect::<Vec<_>>().join(" ");
                let mechanism = Mechanism::choose(&offered, &config.mechanisms)
                    .ok_or(ConsumerError::NoCommonMechanism { offered })?;
                self.authenticate(mechanism, config, out)
            }
            Step::Auth(mut client) => {
                let response = SaslResponse::decode(frame)?;
                match response.status {
                    Status::AuthContinue => {
                        let Some(scram) = client.as_mut() else {
                            return Err(refused(
                                Status::AuthContinue,
                                "PLAIN needs one step".into(),
                            ));
                        };
                        let reply = scram.handle_server_first(&response.data)?;
                        self.opaque = out.send(SaslStep {
                            opaque: 0,
                            mechanism: Bytes::from_static(scram.mechanism().name().as_bytes()),
                            data: Bytes::from(reply),
                        })?;
                        self.step = Step::Auth(client);
                        Ok(Progress::Continue)
                    }
                    Status::Success => {
                        // The server proves it knows the password too.
                        if let Some(scram) = &client {
                            scram.verify_server_final(&response.data)?;
                        }
                        self.select_bucket(config, out)
                    }
                    status @ (Status::AuthError | Status::AuthStale) => {
                        Err(ConsumerError::AuthFailed { status })
                    }
                    status => Err(refused(status, error_text(&response.data))),
                }
            }
            Step::SelectBucket => {
                let response = StatusResponse::decode(frame)?;
                if !response.status.is_success() {
                    return Err(ConsumerError::NoBucket {
                        bucket: config.bucket.clone(),
                        status: response.status,
                    });
                }
                self.open(config, out)
            }
            Step::Open => {
                let response = StatusResponse::decode(frame)?;
                if !response.status.is_success() {
                    return Err(refused(response.status, error_text(&response.value)));
                }
                self.next_control(0, out)
            }
            Step::Control(index) => {
                let response = StatusResponse::decode(frame)?;
                let Some((setting, role)) = self.controls.get(index).cloned() else {
                    return Ok(Progress::Ready(self.negotiated.clone()));
                };
                if response.status.is_success() {
                    self.apply_control(role, config);
                } else if setting.required {
                    return Err(refused(
                        response.status,
                        format!("{}={}", setting.key, setting.value),
                    ));
                } else {
                    self.negotiated.refused_controls.push(setting.key.clone());
                }
                self.next_control(index + 1, out)
            }
            Step::Ready => Err(ProtocolError::UnexpectedResponse {
                opcode: frame.opcode(),
                opaque: frame.opaque(),
            }
            .into()),
        }
    }

    fn after_hello(
        &mut self,
        config: &ConsumerConfig,
        out: &mut Outbox,
    ) -> Result<Progress, ConsumerError> {
        if config.credentials.is_some() {
            self.step = Step::ListMechanisms;
            self.opaque = out.send(SaslListMechs { opaque: 0 })?;
            Ok(Progress::Continue)
        } else {
            self.select_bucket(config, out)
        }
    }

    fn authenticate(
        &mut self,
        mechanism: Mechanism,
        config: &ConsumerConfig,
        out: &mut Outbox,
    ) -> Result<Progress, ConsumerError> {
        let Some(credentials) = &config.credentials else {
            return self.select_bucket(config, out);
        };
        self.negotiated.mechanism = Some(mechanism);
        let (client, data) = if mechanism == Mechanism::Plain {
            let data = plain_initial("", &credentials.username, &credentials.password);
            (None, data)
        } else {
            let client = ScramClient::new(
                mechanism,
                &credentials.username,
                &credentials.password,
                &self.sasl_nonce,
            )?;
            let data = client.client_first();
            (Some(Box::new(client)), data)
        };
        self.opaque = out.send(SaslAuth {
            opaque: 0,
            mechanism: Bytes::from_static(mechanism.name().as_bytes()),
            data: Bytes::from(data),
        })?;
        self.step = Step::Auth(client);
        Ok(Progress::Continue)
    }

    fn select_bucket(
        &mut self,
        config: &ConsumerConfig,
        out: &mut Outbox,
    ) -> Result<Progress, ConsumerError> {
        // Without the SelectBucket feature, a bucket cannot be selected on
        // this connection (old servers bind it to the user).
        if self
            .negotiated
            .features
            .contains(&HelloFeature::SelectBucket)
        {
            self.step = Step::SelectBucket;
            self.opaque = out.send(SelectBucket {
                opaque: 0,
                bucket: Bytes::from(config.bucket.clone()),
            })?;
            Ok(Progress::Continue)
        } else {
            self.open(config, out)
        }
    }

    fn open(
        &mut self,
        config: &ConsumerConfig,
        out: &mut Outbox,
    ) -> Result<Progress, ConsumerError> {
        let mut flags = config.open_flags | OpenFlags::PRODUCER;
        if !self.negotiated.xattr {
            // The producer refuses xattr flags the connection cannot carry.
            flags.remove(OpenFlags::INCLUDE_XATTRS | OpenFlags::INCLUDE_DELETED_USER_XATTRS);
        }
        self.negotiated.open_flags = flags;
        self.step = Step::Open;
        self.opaque = out.send(Open {
            opaque: 0,
            flags,
            name: Bytes::from(config.connection_name.clone()),
            consumer_name: None,
        })?;
        Ok(Progress::Continue)
    }

    fn next_control(&mut self, index: usize, out: &mut Outbox) -> Result<Progress, ConsumerError> {
        match self.controls.get(index) {
            Some((setting, _)) => {
                self.step = Step::Control(index);
                self.opaque = out.send(Control::new(
                    0,
                    Bytes::from(setting.key.clone()),
                    Bytes::from(setting.value.clone()),
                ))?;
                Ok(Progress::Continue)
            }
            None => {
                self.step = Step::Ready;
                Ok(Progress::Ready(self.negotiated.clone()))
            }
        }
    }

    fn apply_control(&mut self, role: ControlRole, config: &ConsumerConfig) {
        match role {
            // The interval in force is what was sent: whole seconds, at
            // least one.
            ControlRole::Noop => {
                self.negotiated.noop_interval = config.noop_interval.map(sent_noop_interval)
            }
            ControlRole::BufferSize => self.negotiated.buffer_size = config.buffer_size,
            ControlRole::StreamEndOnClose => self.negotiated.stream_end_on_close = true,
            // Effective only with delete times in DCP_OPEN.
            ControlRole::ExpiryOpcode => {
                self.negotiated.expiry_opcode = self
                    .negotiated
                    .open_flags
                    .contains(OpenFlags::INCLUDE_DELETE_TIMES)
            }
            // Both must be accepted (both are required controls).
            ControlRole::SyncWrites => {}
            ControlRole::ConsumerName => self.negotiated.sync_writes = true,
            ControlRole::StreamIds => self.negotiated.stream_ids = true,
            ControlRole::FlatBuffersSystemEvents => {
                self.negotiated.flatbuffers_system_events = true
            }
            ControlRole::User => {}
        }
    }
}

/// The noop interval as sent: whole seconds (older servers refuse
/// fractions), at least one.
fn sent_noop_interval(interval: Duration) -> Duration {
    Duration::from_secs(interval.as_secs().max(1))
}

/// The server's error context (XERROR JSON) or text, for error messages.
fn error_text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).chars().take(200).collect()
}
