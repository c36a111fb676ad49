//! Admin commands over the wire: ns_server's SET_VBUCKET (0x3d), and this
//! crate's fault-injection command, so that another process (a test
//! harness, the `dcp` CLI) can fail over, purge, move vbuckets or stall
//! connections of a running node.
//!
//! # The admin command
//!
//! A request with opcode [`ADMIN_OPCODE`] (0xef, not a Couchbase opcode: a
//! real server answers UnknownCommand), the command name as the key and a
//! JSON object of arguments as the value (datatype JSON, or raw). Only
//! users in [`NodeConfig::admin_users`](super::NodeConfig::admin_users) may
//! send it (else EACCESS); no bucket needs to be selected. The response is
//! SUCCESS with a JSON object value, or EINVAL / NOT_MY_VBUCKET with an
//! error body `{"error":{"context":"..."}}`.
//!
//! | key | arguments | result |
//! |---|---|---|
//! | `failover` | `{"vb":5,"lose_last":2}` | `{"vbucket_uuid":"<decimal>","seqno":N}` |
//! | `purge` | `{"vb":5,"up_to":100}` | `{"purge_seqno":N}` |
//! | `set_vbucket_state` | `{"vb":5,"state":"active"\|"replica"\|"pending"\|"dead"}` | `{}` |
//! | `stall` | `{"name":"<dcp name>","on":true}` | `{}` |
//! | `freeze` | `{"name":"<dcp name>","on":true}` | `{}` |
//! | `drop` | `{"name":"<dcp name>"}` | `{}` |
//! | `warmup` | `{"vb":5,"on":true}` | `{}` |
//! | `memory_full` | `{"on":true}` | `{}` |
//! | `expire_due` | `{}` | `{"expired":N}` |
//! | `end_streams` | `{"vb":5,"reason":4}` | `{}` |
//! | `sync_write_mode` | `{"hold":true}` (prepares stay pending) | `{}` |
//! | `commit_pending` | `{"key":"k"}`, `{"vb":5}` or `{}` (all) | `{"completed":N}` |
//! | `abort_pending` | same as `commit_pending` | `{"completed":N}` |
//! | `create_scope` | `{"scope":"inventory"}` | `{"uid":"<hex>","id":"<hex>"}` |
//! | `drop_scope` | `{"scope":"inventory"}` | `{"uid":"<hex>","id":"<hex>"}` |
//! | `create_collection` | `{"scope":"inventory","collection":"hotels","max_ttl":60}` | `{"uid":"<hex>","id":"<hex>"}` |
//! | `drop_collection` | `{"scope":"inventory","collection":"hotels"}` | `{"uid":"<hex>","id":"<hex>"}` |
//! | `flush_collection` | `{"scope":"inventory","collection":"hotels"}` | `{"uid":"<hex>","id":"<hex>"}` |
//! | `modify_collection` | `{"scope":"inventory","collection":"hotels","max_ttl":30}`, `"no_max_ttl":true` or `"history":true` (absent: unchanged) | `{"uid":"<hex>","id":"<hex>"}` |
//! | `get_manifest` | `{}` | the manifest JSON |
//!
//! On a node of a [`LocalCluster`](super::LocalCluster), cluster-level
//! commands are held by the node and carried out by the cluster (see
//! [`LocalCluster::run_admin_requests`](super::LocalCluster::run_admin_requests));
//! a lone node answers them EINVAL:
//!
//! | key | arguments | result |
//! |---|---|---|
//! | `rebalance` | `{"moves":[[vb,node],...]}` (none: even out) | the map |
//! | `failover_node` | `{"node":1,"lose_last":0}` | `{"promoted":N,...}` and the map |
//! | `add_node` | `{}` | `{"node":3,...}` and the map |
//! | `remove_node` | `{"node":1}` | the map |
//! | `cluster_map` | `{}` | `{"rev":R,"nodes":[{"node":0,"port":P,"state":"member","active":N},...]}` |
//!
//! [`AdminCommand`] builds these frames.

use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::connection::Connection;
use super::context::{Ctx, Deferred};
use super::error::CloseReason;
use crate::bucket::BucketError;
use crate::codec::{Datatype, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::{StreamEndReason, VbucketState};

/// The opcode of the admin command.
pub const ADMIN_OPCODE: u8 = 0xef;

/// One fault injection or admin action, as sent with [`ADMIN_OPCODE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
#[non_exhaustive]
pub enum AdminCommand {
    /// [`Bucket::failover`](crate::bucket::Bucket::failover).
    Failover {
        /// The vbucket.
        vb: u16,
        /// Seqnos lost.
        #[serde(default)]
        lose_last: u64,
    },
    /// [`Bucket::purge`](crate::bucket::Bucket::purge).
    Purge {
        /// The vbucket.
        vb: u16,
        /// Purge tombstones up to this seqno.
        up_to: u64,
    },
    /// [`Bucket::set_vbucket_state`](crate::bucket::Bucket::set_vbucket_state).
    SetVbucketState {
        /// The vbucket.
        vb: u16,
        /// `active`, `replica`, `pending` or `dead`.
        state: String,
    },
    /// [`Node::stall`](super::Node::stall) the DCP connection `name`.
    Stall {
        /// DCP connection name.
        name: String,
        /// Stall (true) or resume.
        on: bool,
    },
    /// [`Node::freeze`](super::Node::freeze) the DCP connection `name`.
    Freeze {
        /// DCP connection name.
        name: String,
        /// Freeze (true) or thaw.
        on: bool,
    },
    /// [`Node::drop_connection`](super::Node::drop_connection) for `name`.
    Drop {
        /// DCP connection name.
        name: String,
    },
    /// [`Bucket::set_warming_up`](crate::bucket::Bucket::set_warming_up).
    Warmup {
        /// The vbucket.
        vb: u16,
        /// Warming up (true) or done.
        on: bool,
    },
    /// [`Bucket::set_memory_full`](crate::bucket::Bucket::set_memory_full).
    MemoryFull {
        /// Full (true) or not.
        on: bool,
    },
    /// [`Bucket::expire_due`](crate::bucket::Bucket::expire_due).
    ExpireDue,
    /// [`Node::end_streams`](super::Node::end_streams) with a STREAM_END
    /// reason code.
    EndStreams {
        /// The vbucket.
        vb: u16,
        /// The reason code (e.g. 4 Slow, 5 BackfillFailed, 7 FilterEmpty).
        reason: u32,
    },
    /// [`Bucket::set_sync_write_mode`](crate::bucket::Bucket::set_sync_write_mode):
    /// hold prepares pending (true) or commit them at once.
    SyncWriteMode {
        /// Hold (true) or commit at once.
        hold: bool,
    },
    /// Commits pending prepares: of `key`, of vbucket `vb`, or all.
    CommitPending {
        /// One key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// One vbucket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vb: Option<u16>,
    },
    /// Aborts pending prepares (as a durability timeout does): of `key`,
    /// of vbucket `vb`, or all.
    AbortPending {
        /// One key.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// One vbucket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vb: Option<u16>,
    },
    /// [`Bucket::create_scope`](crate::bucket::Bucket::create_scope).
    CreateScope {
        /// The scope name.
        scope: String,
    },
    /// [`Bucket::drop_scope`](crate::bucket::Bucket::drop_scope).
    DropScope {
        /// The scope name.
        scope: String,
    },
    /// [`Bucket::create_collection`](crate::bucket::Bucket::create_collection).
    CreateCollection {
        /// The scope name.
        scope: String,
        /// The collection name.
        collection: String,
        /// Max TTL in seconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_ttl: Option<u32>,
    },
    /// [`Bucket::drop_collection`](crate::bucket::Bucket::drop_collection).
    DropCollection {
        /// The scope name.
        scope: String,
        /// The collection name.
        collection: String,
    },
    /// [`Bucket::flush_collection`](crate::bucket::Bucket::flush_collection).
    FlushCollection {
        /// The scope name.
        scope: String,
        /// The collection name.
        collection: String,
    },
    /// [`Bucket::modify_collection`](crate::bucket::Bucket::modify_collection):
    /// settings left out stay as they are.
    ModifyCollection {
        /// The scope name.
        scope: String,
        /// The collection name.
        collection: String,
        /// The new max TTL in seconds (0: documents never expire).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_ttl: Option<u32>,
        /// Remove the max TTL (wins over `max_ttl`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        no_max_ttl: bool,
        /// Whether the collection keeps history.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        history: Option<bool>,
    },
    /// The collections manifest ([`Manifest::to_json`](crate::bucket::Manifest::to_json)).
    GetManifest,
    /// Cluster: [`LocalCluster::rebalance`](super::LocalCluster::rebalance)
    /// these moves, or [`rebalance_evenly`](super::LocalCluster::rebalance_evenly)
    /// when there are none.
    Rebalance {
        /// `(vbucket, node)` pairs.
        #[serde(default)]
        moves: Vec<(u16, usize)>,
    },
    /// Cluster: [`LocalCluster::failover_losing`](super::LocalCluster::failover_losing).
    FailoverNode {
        /// The node that crashes.
        node: usize,
        /// Seqnos the promoted replicas lack.
        #[serde(default)]
        lose_last: u64,
    },
    /// Cluster: [`LocalCluster::add_node`](super::LocalCluster::add_node).
    AddNode,
    /// Cluster: [`LocalCluster::remove_node`](super::LocalCluster::remove_node).
    RemoveNode {
        /// The node that leaves.
        node: usize,
    },
    /// Cluster: the config revision and each node's state.
    ClusterMap,
}

/// A cluster-level admin command a node received, waiting for its
/// [`LocalCluster`](super::LocalCluster) to carry it out; the requesting
/// connection gets the answer then.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterAdminRequest {
    /// The connection that sent it.
    pub conn: super::ConnectionId,
    /// Its opaque.
    pub opaque: u32,
    /// The command.
    pub command: AdminCommand,
    /// The node's wall-clock time when it arrived (for the system events a
    /// manifest change writes).
    pub received: std::time::SystemTime,
}

impl AdminCommand {
    /// The command's name (the frame's key).
    pub fn name(&self) -> &'static str {
        match self {
            AdminCommand::Failover { .. } => "failover",
            AdminCommand::Purge { .. } => "purge",
            AdminCommand::SetVbucketState { .. } => "set_vbucket_state",
            AdminCommand::Stall { .. } => "stall",
            AdminCommand::Freeze { .. } => "freeze",
            AdminCommand::Drop { .. } => "drop",
            AdminCommand::Warmup { .. } => "warmup",
            AdminCommand::MemoryFull { .. } => "memory_full",
            AdminCommand::ExpireDue => "expire_due",
            AdminCommand::EndStreams { .. } => "end_streams",
            AdminCommand::SyncWriteMode { .. } => "sync_write_mode",
            AdminCommand::CommitPending { .. } => "commit_pending",
            AdminCommand::AbortPending { .. } => "abort_pending",
            AdminCommand::CreateScope { .. } => "create_scope",
            AdminCommand::DropScope { .. } => "drop_scope",
            AdminCommand::CreateCollection { .. } => "create_collection",
            AdminCommand::DropCollection { .. } => "drop_collection",
            AdminCommand::FlushCollection { .. } => "flush_collection",
            AdminCommand::ModifyCollection { .. } => "modify_collection",
            AdminCommand::GetManifest => "get_manifest",
            AdminCommand::Rebalance { .. } => "rebalance",
            AdminCommand::FailoverNode { .. } => "failover_node",
            AdminCommand::AddNode => "add_node",
            AdminCommand::RemoveNode { .. } => "remove_node",
            AdminCommand::ClusterMap => "cluster_map",
        }
    }

    /// Whether the command changes the collections manifest (a cluster
    /// applies it to every node).
    pub fn changes_manifest(&self) -> bool {
        matches!(
            self,
            AdminCommand::CreateScope { .. }
                | AdminCommand::DropScope { .. }
                | AdminCommand::CreateCollection { .. }
                | AdminCommand::DropCollection { .. }
                | AdminCommand::FlushCollection { .. }
                | AdminCommand::ModifyCollection { .. }
        )
    }

    /// Whether the command changes (or reads) a cluster's topology rather
    /// than one node.
    pub fn is_cluster(&self) -> bool {
        matches!(
            self,
            AdminCommand::Rebalance { .. }
                | AdminCommand::FailoverNode { .. }
                | AdminCommand::AddNode
                | AdminCommand::RemoveNode { .. }
                | AdminCommand::ClusterMap
        )
    }

    /// Appends the request frame to `buf`.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use dcp_proto::producer::AdminCommand;
    /// let mut buf = BytesMut::new();
    /// AdminCommand::Failover { vb: 3, lose_last: 2 }.encode(7, &mut buf)?;
    /// assert_eq!(buf[1], dcp_proto::producer::ADMIN_OPCODE);
    /// # Ok::<(), dcp_proto::codec::EncodeError>(())
    /// ```
    pub fn encode(&self, opaque: u32, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut args = serde_json::to_value(self).map_err(|_| EncodeError::InvalidField {
            field: "args",
            reason: "JSON serialization failed",
        })?;
        if let Some(object) = args.as_object_mut() {
            object.remove("command");
        }
        let value = serde_json::to_vec(&args).unwrap_or_default();
        FrameHead::request(Opcode::Unknown(ADMIN_OPCODE), 0, opaque)
            .with_datatype(Datatype::JSON)
            .encode(buf, &[], &[], self.name().as_bytes(), &value)
    }

    /// Reads an admin request frame.
    pub fn decode(frame: &Frame) -> Result<AdminCommand, String> {
        let name = core::str::from_utf8(frame.key_slice()).map_err(|_| "name is not UTF-8")?;
        let mut args: serde_json::Value = if frame.value_slice().is_empty() {
            serde_json::json!({})
        } else {
            serde_json::from_slice(frame.value_slice()).map_err(|e| e.to_string())?
        };
        let object = args
            .as_object_mut()
            .ok_or("arguments must be a JSON object")?;
        object.insert("command".to_owned(), serde_json::Value::from(name));
        serde_json::from_value(args).map_err(|e| e.to_string())
    }
}

/// Parses a vbucket state name.
pub(crate) fn parse_state(name: &str) -> Option<VbucketState> {
    match name {
        "active" => Some(VbucketState::Active),
        "replica" => Some(VbucketState::Replica),
        "pending" => Some(VbucketState::Pending),
        "dead" => Some(VbucketState::Dead),
        _ => None,
    }
}

fn error_body(context: &str) -> Bytes {
    Bytes::from(
        serde_json::to_vec(&serde_json::json!({ "error": { "context": context } }))
            .unwrap_or_default(),
    )
}

fn reply(
    conn: &mut Connection,
    opaque: u32,
    status: Status,
    body: Bytes,
) -> Result<(), CloseReason> {
    let datatype = if body.is_empty() {
        Datatype::RAW
    } else {
        Datatype::JSON
    };
    conn.respond(status, |buf| {
        FrameHead::response(Opcode::Unknown(ADMIN_OPCODE), status, opaque)
            .with_datatype(datatype)
            .encode(buf, &[], &[], &[], &body)
    })
}

fn is_admin(conn: &Connection, ctx: &Ctx<'_>) -> bool {
    conn.user.as_deref().is_some_and(|u| ctx.users.is_admin(u))
}

/// Commits or aborts the pending prepares of `key`, of `vb`, or all.
fn complete_pending(
    bucket: &mut crate::bucket::Bucket,
    key: Option<String>,
    vb: Option<u16>,
    commit: bool,
    now: std::time::SystemTime,
) -> Result<usize, BucketError> {
    match key {
        Some(key) if commit => bucket.commit_sync_write(key.as_bytes(), now).map(|_| 1),
        Some(key) => bucket.abort_sync_write(key.as_bytes(), now).map(|_| 1),
        None => bucket.complete_sync_writes(vb, commit, now),
    }
}

fn run(command: AdminCommand, ctx: &mut Ctx<'_>) -> Result<serde_json::Value, BucketError> {
    let bucket = &mut *ctx.bucket;
    Ok(match command {
        AdminCommand::Failover { vb, lose_last } => {
            let entry = bucket.failover(vb, lose_last)?;
            serde_json::json!({
                "vbucket_uuid": entry.vbucket_uuid.to_string(),
                "seqno": entry.seqno
            })
        }
        AdminCommand::Purge { vb, up_to } => {
            serde_json::json!({ "purge_seqno": bucket.purge(vb, up_to)? })
        }
        AdminCommand::SetVbucketState { vb, state } => {
            let state = parse_state(&state).ok_or(BucketError::Invalid("unknown vbucket state"))?;
            bucket.set_vbucket_state(vb, state)?;
            serde_json::json!({})
        }
        AdminCommand::Stall { name, on } => {
            ctx.deferred.push(Deferred::Stall(name, on));
            serde_json::json!({})
        }
        AdminCommand::Freeze { name, on } => {
            ctx.deferred.push(Deferred::Freeze(name, on));
            serde_json::json!({})
        }
        AdminCommand::Drop { name } => {
            ctx.deferred.push(Deferred::Drop(name));
            serde_json::json!({})
        }
        AdminCommand::Warmup { vb, on } => {
            bucket.set_warming_up(vb, on)?;
            serde_json::json!({})
        }
        AdminCommand::MemoryFull { on } => {
            bucket.set_memory_full(on);
            serde_json::json!({})
        }
        AdminCommand::ExpireDue => {
            let expired = bucket.expire_due(ctx.wall_clock);
            serde_json::json!({ "expired": expired })
        }
        AdminCommand::EndStreams { vb, reason } => {
            ctx.deferred
                .push(Deferred::EndStreams(vb, StreamEndReason::from_raw(reason)));
            serde_json::json!({})
        }
        AdminCommand::SyncWriteMode { hold } => {
            bucket.set_sync_write_mode(if hold {
                crate::bucket::SyncWriteMode::Hold
            } else {
                crate::bucket::SyncWriteMode::Immediate
            });
            serde_json::json!({})
        }
        AdminCommand::CommitPending { key, vb } => {
            let completed = complete_pending(bucket, key, vb, true, ctx.wall_clock)?;
            serde_json::json!({ "completed": completed })
        }
        AdminCommand::AbortPending { key, vb } => {
            let completed = complete_pending(bucket, key, vb, false, ctx.wall_clock)?;
            serde_json::json!({ "completed": completed })
        }
        command @ (AdminCommand::CreateScope { .. }
        | AdminCommand::DropScope { .. }
        | AdminCommand::CreateCollection { .. }
        | AdminCommand::DropCollection { .. }
        | AdminCommand::FlushCollection { .. }
        | AdminCommand::ModifyCollection { .. }
        | AdminCommand::GetManifest) => {
            super::collections::run_admin(command, bucket, ctx.wall_clock)?
        }
        AdminCommand::Rebalance { .. }
        | AdminCommand::FailoverNode { .. }
        | AdminCommand::AddNode
        | AdminCommand::RemoveNode { .. }
        | AdminCommand::ClusterMap => {
            return Err(BucketError::Invalid(
                "a cluster command: this node is not part of a local cluster",
            ));
        }
    })
}

/// Queues the answer to a cluster-level admin request on its connection:
/// SUCCESS with the JSON result, or EINVAL with the error.
pub(crate) fn answer(
    conn: &mut Connection,
    opaque: u32,
    result: Result<serde_json::Value, String>,
) -> Result<(), CloseReason> {
    match result {
        Ok(value) => reply(
            conn,
            opaque,
            Status::Success,
            Bytes::from(serde_json::to_vec(&value).unwrap_or_default()),
        ),
        Err(e) => reply(conn, opaque, Status::Einval, error_body(&e)),
    }
}

/// The admin command.
pub(crate) fn admin(
    conn: &mut Connection,
    frame: &Frame,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let opaque = frame.opaque();
    if !is_admin(conn, ctx) {
        return reply(conn, opaque, Status::Eaccess, Bytes::new());
    }
    let command = match AdminCommand::decode(frame) {
        Ok(command) => command,
        Err(e) => return reply(conn, opaque, Status::Einval, error_body(&e)),
    };
    let for_cluster = (command.is_cluster() && ctx.cluster_config.is_some())
        || (command.changes_manifest() && ctx.cluster_member);
    if for_cluster {
        // Answered once the cluster carried it out.
        ctx.deferred
            .push(Deferred::ClusterAdmin(ClusterAdminRequest {
                conn: conn.id,
                opaque,
                command,
                received: ctx.wall_clock,
            }));
        return Ok(());
    }
    match run(command, ctx) {
        Ok(result) => reply(
            conn,
            opaque,
            Status::Success,
            Bytes::from(serde_json::to_vec(&result).unwrap_or_default()),
        ),
        Err(e) => reply(conn, opaque, e.status(), error_body(&e.to_string())),
    }
}

/// SET_VBUCKET (0x3d), as ns_server sends it: the state in 1 or 4 bytes
/// of extras (a JSON topology value is ignored). Admin users only.
pub(crate) fn set_vbucket(
    conn: &mut Connection,
    frame: &Frame,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let opaque = frame.opaque();
    if !is_admin(conn, ctx) {
        return conn.status(Opcode::SetVbucket, Status::Eaccess, opaque);
    }
    let raw = match frame.extras() {
        [state] => u32::from(*state),
        [a, b, c, d] => u32::from_be_bytes([*a, *b, *c, *d]),
        _ => return conn.status(Opcode::SetVbucket, Status::Einval, opaque),
    };
    let state = match u8::try_from(raw).map(VbucketState::from_raw) {
        Ok(
            state @ (VbucketState::Active
            | VbucketState::Replica
            | VbucketState::Pending
            | VbucketState::Dead),
        ) => state,
        _ => return conn.status(Opcode::SetVbucket, Status::Einval, opaque),
    };
    let status = match ctx.bucket.set_vbucket_state(frame.vbucket(), state) {
        Ok(()) => Status::Success,
        Err(e) => e.status(),
    };
    conn.status(Opcode::SetVbucket, status, opaque)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_round_trip() {
        for command in [
            AdminCommand::Failover {
                vb: 3,
                lose_last: 2,
            },
            AdminCommand::Purge { vb: 1, up_to: 9 },
            AdminCommand::SetVbucketState {
                vb: 1,
                state: "dead".to_owned(),
            },
            AdminCommand::Stall {
                name: "n".to_owned(),
                on: true,
            },
            AdminCommand::Drop {
                name: "n".to_owned(),
            },
            AdminCommand::MemoryFull { on: true },
            AdminCommand::ExpireDue,
            AdminCommand::CreateCollection {
                scope: "s".to_owned(),
                collection: "c".to_owned(),
                max_ttl: Some(5),
            },
            AdminCommand::DropScope {
                scope: "s".to_owned(),
            },
            AdminCommand::GetManifest,
            AdminCommand::Rebalance { moves: vec![] },
            AdminCommand::Rebalance {
                moves: vec![(3, 1), (4, 0)],
            },
            AdminCommand::FailoverNode {
                node: 1,
                lose_last: 2,
            },
            AdminCommand::AddNode,
            AdminCommand::RemoveNode { node: 2 },
            AdminCommand::ClusterMap,
        ] {
            let mut buf = BytesMut::new();
            command.encode(1, &mut buf).unwrap();
            let frame = Frame::parse(buf.freeze()).unwrap();
            assert_eq!(frame.key_slice(), command.name().as_bytes());
            assert_eq!(AdminCommand::decode(&frame).unwrap(), command);
        }
        assert_eq!(parse_state("replica"), Some(VbucketState::Replica));
        assert_eq!(parse_state("x"), None);
    }
}
