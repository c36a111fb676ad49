//! `dcp admin`: one fault-injection command to a running `dcp serve`, over
//! the wire (SCRAM-SHA512 as an admin user, then the node's admin
//! command).
//!
//! A short request/response exchange of this tool, not part of the
//! library: the consumer connection has no use for it.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use dcp_tokio::dcp_proto::auth::{Mechanism, ScramClient};
use dcp_tokio::dcp_proto::codec::{Frame, FrameDecoder, Status};
use dcp_tokio::dcp_proto::msg::client::{Hello, HelloFeature, SaslAuth, SaslResponse, SaslStep};
use dcp_tokio::dcp_proto::producer::AdminCommand;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Failure;
use crate::args::{AdminAction, AdminArgs, State, split_collection_path};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `dcp admin`.
pub(crate) async fn run(args: AdminArgs) -> Result<(), Failure> {
    let commands: Vec<AdminCommand> = match &args.action {
        AdminAction::Failover {
            vbucket,
            node,
            lose_last,
        } => match (vbucket, node) {
            (_, Some(node)) => vec![AdminCommand::FailoverNode {
                node: *node,
                lose_last: *lose_last,
            }],
            (Some(vb), None) => vec![AdminCommand::Failover {
                vb: *vb,
                lose_last: *lose_last,
            }],
            (None, None) => return Err(Failure("failover needs a vbucket or --node".to_owned())),
        },
        AdminAction::Rebalance { moves } => vec![AdminCommand::Rebalance {
            moves: moves.clone(),
        }],
        AdminAction::AddNode => vec![AdminCommand::AddNode],
        AdminAction::RemoveNode { node } => vec![AdminCommand::RemoveNode { node: *node }],
        AdminAction::Map => vec![AdminCommand::ClusterMap],
        AdminAction::Purge { vbucket, up_to } => vec![AdminCommand::Purge {
            vb: *vbucket,
            up_to: *up_to,
        }],
        AdminAction::SetVbucketState { vbucket, state } => vec![AdminCommand::SetVbucketState {
            vb: *vbucket,
            state: match state {
                State::Active => "active",
                State::Replica => "replica",
                State::Pending => "pending",
                State::Dead => "dead",
            }
            .to_owned(),
        }],
        AdminAction::Stall { name, off } => vec![AdminCommand::Stall {
            name: name.clone(),
            on: !off,
        }],
        AdminAction::Freeze { name, off } => vec![AdminCommand::Freeze {
            name: name.clone(),
            on: !off,
        }],
        AdminAction::DropConnections { names } => names
            .iter()
            .map(|name| AdminCommand::Drop { name: name.clone() })
            .collect(),
        AdminAction::ExpireDue => vec![AdminCommand::ExpireDue],
        AdminAction::HoldSyncWrites { off } => vec![AdminCommand::SyncWriteMode { hold: !off }],
        AdminAction::CommitPending { key, vbucket } => vec![AdminCommand::CommitPending {
            key: key.clone(),
            vb: *vbucket,
        }],
        AdminAction::AbortPending { key, vbucket } => vec![AdminCommand::AbortPending {
            key: key.clone(),
            vb: *vbucket,
        }],
        AdminAction::CreateScope { scope } => vec![AdminCommand::CreateScope {
            scope: scope.clone(),
        }],
        AdminAction::DropScope { scope } => vec![AdminCommand::DropScope {
            scope: scope.clone(),
        }],
        AdminAction::CreateCollection {
            collection,
            max_ttl,
        } => {
            let (scope, collection) = split_collection_path(collection);
            vec![AdminCommand::CreateCollection {
                scope,
                collection,
                max_ttl: *max_ttl,
            }]
        }
        AdminAction::DropCollection { collection } => {
            let (scope, collection) = split_collection_path(collection);
            vec![AdminCommand::DropCollection { scope, collection }]
        }
        AdminAction::FlushCollection { collection } => {
            let (scope, collection) = split_collection_path(collection);
            vec![AdminCommand::FlushCollection { scope, collection }]
        }
        AdminAction::ModifyCollection {
            collection,
            max_ttl,
            no_max_ttl,
            history,
        } => {
            let (scope, collection) = split_collection_path(collection);
            vec![AdminCommand::ModifyCollection {
                scope,
                collection,
                max_ttl: *max_ttl,
                no_max_ttl: *no_max_ttl,
                history: *history,
            }]
        }
        AdminAction::Manifest => vec![AdminCommand::GetManifest],
    };
    let addr = &args.address;
    let exchange = async {
        let mut session = Session::connect(addr).await?;
        session.authenticate(&args.user, &args.password).await?;
        for command in &commands {
            let result = session.admin(command).await?;
            println!("{result}");
        }
        Ok::<(), Failure>(())
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| Failure(format!("{addr} did not answer within {TIMEOUT:?}")))?
}

/// Fetches the collections manifest of a `dcp serve` server (admin users
/// only) with the `get_manifest` admin command.
pub(crate) async fn fetch_manifest(
    addr: &str,
    user: &str,
    password: &str,
) -> Result<serde_json::Value, Failure> {
    let exchange = async {
        let mut session = Session::connect(addr).await?;
        session.authenticate(user, password).await?;
        let body = session.admin(&AdminCommand::GetManifest).await?;
        serde_json::from_str(&body).map_err(|e| Failure(format!("bad manifest from {addr}: {e}")))
    };
    tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| Failure(format!("{addr} did not answer within {TIMEOUT:?}")))?
}

struct Session {
    addr: String,
    socket: TcpStream,
    rx: BytesMut,
    decoder: FrameDecoder,
    opaque: u32,
}

impl Session {
    async fn connect(addr: &str) -> Result<Session, Failure> {
        let socket = TcpStream::connect(addr).await.map_err(|err| {
            Failure(if err.kind() == io::ErrorKind::ConnectionRefused {
                format!(
                    "cannot connect to {addr}: connection refused (is `dcp serve` running there?)"
                )
            } else {
                format!("cannot connect to {addr}: {err}")
            })
        })?;
        let _ = socket.set_nodelay(true);
        Ok(Session {
            addr: addr.to_owned(),
            socket,
            rx: BytesMut::new(),
            decoder: FrameDecoder::new(),
            opaque: 0,
        })
    }

    fn next_opaque(&mut self) -> u32 {
        self.opaque += 1;
        self.opaque
    }

    async fn send(&mut self, buf: BytesMut) -> Result<(), Failure> {
        self.socket
            .write_all(&buf)
            .await
            .map_err(|e| Failure(format!("{}: {e}", self.addr)))
    }

    /// The response with `opaque` (others are skipped).
    async fn response(&mut self, opaque: u32) -> Result<Frame, Failure> {
        loop {
            while let Some(frame) = self.decoder.decode(&mut self.rx).map_err(|_| {
                Failure(format!(
                    "{} does not speak the memcached binary protocol",
                    self.addr
                ))
            })? {
                if frame.is_response() && frame.opaque() == opaque {
                    return Ok(frame);
                }
            }
            let n = self
                .socket
                .read_buf(&mut self.rx)
                .await
                .map_err(|e| Failure(format!("{}: {e}", self.addr)))?;
            if n == 0 {
                return Err(Failure(format!("{} closed the connection", self.addr)));
            }
        }
    }

    async fn authenticate(&mut self, user: &str, password: &str) -> Result<(), Failure> {
        let mut nonce = [0u8; 18];
        getrandom::fill(&mut nonce).map_err(|e| Failure(e.to_string()))?;
        let nonce: String = nonce.iter().map(|b| format!("{b:02x}")).collect();
        let mut scram = ScramClient::new(Mechanism::ScramSha512, user, password, &nonce)
            .map_err(|e| Failure(e.to_string()))?;
        let mechanism = Bytes::from_static(Mechanism::ScramSha512.name().as_bytes());
        let mut buf = BytesMut::new();
        let hello = self.next_opaque();
        let auth = self.next_opaque();
        let encoded = Hello {
            opaque: hello,
            agent: Bytes::from_static(b"dcp-admin"),
            features: vec![HelloFeature::Xerror, HelloFeature::Json],
        }
        .encode(&mut buf)
        .and_then(|()| {
            SaslAuth {
                opaque: auth,
                mechanism: mechanism.clone(),
                data: Bytes::from(scram.client_first()),
            }
            .encode(&mut buf)
        });
        encoded.map_err(|e| Failure(e.to_string()))?;
        self.send(buf).await?;
        self.response(hello).await?;
        let first = self.sasl_response(auth, user).await?;
        let step = self.next_opaque();
        let client_final = scram
            .handle_server_first(&first.data)
            .map_err(|e| Failure(format!("authentication failed: {e}")))?;
        let mut buf = BytesMut::new();
        SaslStep {
            opaque: step,
            mechanism,
            data: Bytes::from(client_final),
        }
        .encode(&mut buf)
        .map_err(|e| Failure(e.to_string()))?;
        self.send(buf).await?;
        let last = self.sasl_response(step, user).await?;
        scram
            .verify_server_final(&last.data)
            .map_err(|e| Failure(format!("the server's SCRAM proof is wrong: {e}")))
    }

    async fn sasl_response(&mut self, opaque: u32, user: &str) -> Result<SaslResponse, Failure> {
        let frame = self.response(opaque).await?;
        let response = SaslResponse::decode(&frame).map_err(|e| Failure(e.to_string()))?;
        match response.status {
            Status::Success | Status::AuthContinue => Ok(response),
            Status::AuthError => Err(Failure(format!(
                "authentication failed for user {user:?}: wrong user name or password"
            ))),
            other => Err(Failure(format!("authentication refused: {other}"))),
        }
    }

    /// Sends one admin command; returns its JSON result.
    async fn admin(&mut self, command: &AdminCommand) -> Result<String, Failure> {
        let opaque = self.next_opaque();
        let mut buf = BytesMut::new();
        command
            .encode(opaque, &mut buf)
            .map_err(|e| Failure(e.to_string()))?;
        self.send(buf).await?;
        let frame = self.response(opaque).await?;
        let body = String::from_utf8_lossy(frame.value_slice()).into_owned();
        match frame.status() {
            Status::Success => Ok(if body.is_empty() {
                "{}".to_owned()
            } else {
                body
            }),
            Status::Eaccess => Err(Failure(
                "this user may not run admin commands (every `dcp serve --user` may)".to_owned(),
            )),
            Status::UnknownCommand => Err(Failure(format!(
                "{} does not know the admin command: it works against `dcp serve` only",
                self.addr
            ))),
            status => {
                let context = serde_json::from_str::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["context"].as_str().map(str::to_owned))
                    .unwrap_or(body);
                Err(Failure(format!(
                    "{} refused: {status}: {context}",
                    command.name()
                )))
            }
        }
    }
}
