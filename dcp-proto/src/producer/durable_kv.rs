//! Durable KV writes: SET, ADD, REPLACE and DELETE with the durability
//! frame info (id 1: level, optional timeout) become sync writes in the
//! bucket (see [`crate::bucket`]'s durability rules).
//!
//! The response waits for the sync write to complete, as on a server: at
//! once when the bucket commits immediately (no replicas), or when it is
//! committed (SUCCESS with the commit's CAS and seqno) or aborted
//! (SyncWriteAmbiguous, what a durability timeout answers) in hold mode.
//! A level outside 1..=3 is DurabilityInvalidLevel; a write of a key whose
//! sync write is pending is SyncWriteInProgress. APPEND, PREPEND,
//! INCREMENT and DECREMENT are durable too (a counter's response carries
//! the value its prepare holds); any other command with a durability
//! level (TOUCH, GAT, ...) is DurabilityImpossible.

use bytes::Bytes;

use super::connection::Connection;
use super::context::{Ctx, Deferred};
use super::error::{CloseReason, ConnectionId};
use crate::bucket::{BucketError, MutationInfo, StoreMode, SyncWriteOutcome, WriteOptions};
use crate::codec::{Datatype, DurabilityLevel, Frame, Opcode, Status, frame_info};
use crate::msg::client::{
    Concat, Counter, CounterResponse, Delete, MutationResponse, MutationToken, Store,
};
use crate::msg::{CollectionKey, DEFAULT_COLLECTION, decompress_value};

/// The durability level a request asks for: `Ok(None)` without the frame
/// info, `Err` for a malformed one.
pub(crate) fn requested_level(frame: &Frame) -> Result<Option<DurabilityLevel>, Status> {
    let mut level = None;
    for info in frame.frame_infos() {
        let info = info.map_err(|_| Status::Einval)?;
        if info.id == frame_info::request_id::DURABILITY {
            match info.data {
                [b] | [b, _, _] => level = Some(DurabilityLevel::from_u8(*b)),
                _ => return Err(Status::Einval),
            }
        }
    }
    Ok(level)
}

/// A client waiting for a sync write to complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SyncWaiter {
    pub(crate) conn: ConnectionId,
    pub(crate) opcode: Opcode,
    pub(crate) opaque: u32,
    /// A counter's value once the write commits (INCREMENT, DECREMENT).
    pub(crate) counter: Option<u64>,
}

fn response(
    conn: &Connection,
    waiter: SyncWaiter,
    result: Result<MutationInfo, Status>,
) -> MutationResponse {
    match result {
        Ok(info) => MutationResponse {
            opcode: waiter.opcode,
            status: Status::Success,
            opaque: waiter.opaque,
            cas: info.cas,
            token: conn.features.mutation_seqno.then_some(MutationToken {
                vbucket_uuid: info.vbucket_uuid,
                seqno: info.seqno,
            }),
            error_body: Bytes::new(),
        },
        Err(status) => MutationResponse {
            opcode: waiter.opcode,
            status,
            opaque: waiter.opaque,
            cas: 0,
            token: None,
            error_body: Bytes::new(),
        },
    }
}

/// Answers a waiting client once its sync write completed.
pub(crate) fn complete(
    conn: &mut Connection,
    waiter: SyncWaiter,
    outcome: SyncWriteOutcome,
) -> Result<(), CloseReason> {
    let result = match outcome {
        SyncWriteOutcome::Committed(info) => Ok(info),
        SyncWriteOutcome::Aborted(_) => Err(Status::SyncWriteAmbiguous),
    };
    if let Some(value) = waiter.counter {
        let r = counter_response(conn, waiter, value, result);
        return conn.respond(r.status, |buf| r.encode(buf));
    }
    let r = response(conn, waiter, result);
    conn.respond(r.status, |buf| r.encode(buf))
}

fn counter_response(
    conn: &Connection,
    waiter: SyncWaiter,
    value: u64,
    result: Result<MutationInfo, Status>,
) -> CounterResponse {
    let r = response(conn, waiter, result);
    CounterResponse {
        opcode: r.opcode,
        status: r.status,
        opaque: r.opaque,
        cas: r.cas,
        value: if r.status.is_success() { value } else { 0 },
        token: r.token,
        error_body: r.error_body,
    }
}

fn key_of(conn: &Connection, key: &Bytes) -> Result<Bytes, Status> {
    if !conn.features.collections {
        return Ok(key.clone());
    }
    match CollectionKey::split(key) {
        Ok(k) if k.collection_id == DEFAULT_COLLECTION => Ok(k.key),
        Ok(_) => Err(Status::UnknownCollection),
        Err(_) => Err(Status::Einval),
    }
}

/// Handles a KV request that carries a durability level.
pub(crate) fn handle(
    conn: &mut Connection,
    frame: &Frame,
    level: DurabilityLevel,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let opcode = frame.opcode();
    let opaque = frame.opaque();
    let now = ctx.wall_clock;
    let mut waiter = SyncWaiter {
        conn: conn.id,
        opcode,
        opaque,
        counter: None,
    };
    let fail = |conn: &mut Connection, status| conn.status(opcode, status, opaque);
    let result: Result<crate::bucket::SyncWriteInfo, BucketError> = match opcode {
        Opcode::Set | Opcode::Add | Opcode::Replace => {
            let Ok(req) = Store::decode(frame) else {
                return fail(conn, Status::Einval);
            };
            if (req.datatype.is_xattr() && !conn.features.xattr)
                || (req.datatype.is_snappy() && !conn.features.snappy)
            {
                return fail(conn, Status::Einval);
            }
            let key = match key_of(conn, &req.key) {
                Ok(key) => key,
                Err(status) => return fail(conn, status),
            };
            if ctx.bucket.vbucket_of(&key) != frame.vbucket() {
                return fail(conn, Status::NotMyVbucket);
            }
            let mode = match opcode {
                Opcode::Add => StoreMode::Add,
                Opcode::Replace => StoreMode::Replace,
                _ => StoreMode::Set,
            };
            let opts = WriteOptions::new()
                .cas(req.cas)
                .flags(req.flags)
                .expiry(req.expiry)
                .datatype(Datatype(req.datatype.bits() & Datatype::XATTR.bits()));
            let max = ctx.bucket.config().max_value_size;
            match decompress_value(req.datatype, &req.value, max) {
                Ok((_, value)) => ctx
                    .bucket
                    .durable_store(mode, &key, value, opts, level, now),
                Err(_) => Err(BucketError::Invalid("corrupt Snappy value")),
            }
        }
        Opcode::Delete => {
            let Ok(req) = Delete::decode(frame) else {
                return fail(conn, Status::Einval);
            };
            let key = match key_of(conn, &req.key) {
                Ok(key) => key,
                Err(status) => return fail(conn, status),
            };
            if ctx.bucket.vbucket_of(&key) != frame.vbucket() {
                return fail(conn, Status::NotMyVbucket);
            }
            ctx.bucket.durable_delete(&key, req.cas, level, now)
        }
        Opcode::Append | Opcode::Prepend => {
            let Ok(req) = Concat::decode(frame) else {
                return fail(conn, Status::Einval);
            };
            let sent = frame.datatype();
            if sent.is_snappy() && !conn.features.snappy {
                return fail(conn, Status::Einval);
            }
            let key = match key_of(conn, &req.key) {
                Ok(key) => key,
                Err(status) => return fail(conn, status),
            };
            if ctx.bucket.vbucket_of(&key) != frame.vbucket() {
                return fail(conn, Status::NotMyVbucket);
            }
            let max = ctx.bucket.config().max_value_size;
            match decompress_value(sent, &req.value, max) {
                Ok((_, value)) => ctx.bucket.durable_concat(
                    opcode == Opcode::Append,
                    &key,
                    &value,
                    req.cas,
                    level,
                    now,
                ),
                Err(_) => Err(BucketError::Invalid("corrupt Snappy value")),
            }
        }
        Opcode::Increment | Opcode::Decrement => {
            let Ok(req) = Counter::decode(frame) else {
                return fail(conn, Status::Einval);
            };
            let key = match key_of(conn, &req.key) {
                Ok(key) => key,
                Err(status) => return fail(conn, status),
            };
            if ctx.bucket.vbucket_of(&key) != frame.vbucket() {
                return fail(conn, Status::NotMyVbucket);
            }
            let initial = (req.expiry != Counter::NO_CREATE).then_some(req.initial);
            let counted = ctx.bucket.durable_counter(
                opcode == Opcode::Increment,
                &key,
                req.delta,
                initial,
                req.expiry,
                req.cas,
                level,
                now,
            );
            // Errors answer as counters too (value 0).
            waiter.counter = Some(counted.as_ref().map_or(0, |(value, _)| *value));
            counted.map(|(_, info)| info)
        }
        _ => return fail(conn, Status::DurabilityImpossible),
    };
    match result {
        Ok(info) => match info.outcome {
            Some(outcome) => complete(conn, waiter, outcome),
            None => {
                ctx.deferred.push(Deferred::AwaitSyncWrite {
                    vbucket: info.prepared.vbucket,
                    prepared_seqno: info.prepared.seqno,
                    waiter,
                });
                Ok(())
            }
        },
        Err(e) if waiter.counter.is_some() => {
            let r = counter_response(conn, waiter, 0, Err(e.status()));
            conn.respond(r.status, |buf| r.encode(buf))
        }
        Err(e) => fail(conn, e.status()),
    }
}
