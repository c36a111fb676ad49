//! Key-value commands over the same port, so that any memcached-binary
//! client can write documents and watch them appear on DCP: GET, GAT,
//! SET/ADD/REPLACE, DELETE, APPEND/PREPEND, INCREMENT/DECREMENT, TOUCH.
//! The header's vbucket is used as sent (the server does not re-hash).

use bytes::Bytes;

use super::connection::Connection;
use super::context::Ctx;
use super::error::CloseReason;
use crate::bucket::{BucketError, MutationInfo, StoreMode, WriteOptions};
use crate::codec::{Datatype, Frame, Opcode, Status};
use crate::msg::client::{
    Concat, Counter, CounterResponse, Delete, Get, GetAndTouch, GetResponse, MutationResponse,
    MutationToken, Store, Touch,
};
use crate::msg::{CollectionKey, DEFAULT_COLLECTION, SnappyError, decompress_value};

/// Whether `opcode` is a KV command this node serves.
pub(crate) fn is_kv(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::Get
            | Opcode::Gat
            | Opcode::Touch
            | Opcode::Set
            | Opcode::Add
            | Opcode::Replace
            | Opcode::Delete
            | Opcode::Append
            | Opcode::Prepend
            | Opcode::Increment
            | Opcode::Decrement
    )
}

/// The collection and the key proper: on collections connections the key
/// starts with the collection id (LEB128); without collections, the
/// default collection.
fn document_key(conn: &Connection, key: &Bytes) -> Result<(u32, Bytes), Status> {
    if !conn.features.collections {
        return Ok((DEFAULT_COLLECTION, key.clone()));
    }
    match CollectionKey::split(key) {
        Ok(k) => Ok((k.collection_id, k.key)),
        Err(_) => Err(Status::Einval),
    }
}

fn token(conn: &Connection, info: &MutationInfo) -> Option<MutationToken> {
    conn.features.mutation_seqno.then_some(MutationToken {
        vbucket_uuid: info.vbucket_uuid,
        seqno: info.seqno,
    })
}

/// A compressed value that cannot be stored: E2BIG or EINVAL.
fn snappy_error(e: SnappyError) -> BucketError {
    match e {
        SnappyError::TooLarge { len, max } => BucketError::ValueTooLarge { len, max },
        _ => BucketError::Invalid("corrupt Snappy value"),
    }
}

fn mutation_reply(
    conn: &mut Connection,
    opcode: Opcode,
    opaque: u32,
    result: Result<MutationInfo, BucketError>,
) -> Result<(), CloseReason> {
    let response = match result {
        Ok(info) => MutationResponse {
            opcode,
            status: Status::Success,
            opaque,
            cas: info.cas,
            token: token(conn, &info),
            error_body: Bytes::new(),
        },
        Err(e) => MutationResponse {
            opcode,
            status: e.status(),
            opaque,
            cas: 0,
            token: None,
            error_body: Bytes::new(),
        },
    };
    conn.respond(response.status, |buf| response.encode(buf))
}

/// The value and datatype a GET returns: the body only, JSON flagged only
/// if the client negotiated JSON.
fn get_value(conn: &Connection, doc: &crate::bucket::Document) -> (Bytes, Datatype) {
    let json = conn.features.json && doc.datatype.is_json();
    (
        doc.body(),
        if json { Datatype::JSON } else { Datatype::RAW },
    )
}

/// Handles one KV request.
pub(crate) fn handle(
    conn: &mut Connection,
    frame: &Frame,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let opcode = frame.opcode();
    let opaque = frame.opaque();
    let vb = frame.vbucket();
    // The node maps its monotonic input time to wall-clock time.
    let now = ctx.wall_clock;
    macro_rules! decode {
        ($ty:ty) => {
            match <$ty>::decode(frame) {
                Ok(req) => req,
                Err(_) => return conn.status(opcode, Status::Einval, opaque),
            }
        };
    }
    macro_rules! key {
        ($key:expr) => {
            match document_key(conn, &$key) {
                Ok(key) => key,
                Err(status) => return conn.status(opcode, status, opaque),
            }
        };
    }
    // Durable writes are sync writes (see `durable_kv`).
    match super::durable_kv::requested_level(frame) {
        Ok(Some(level)) => return super::durable_kv::handle(conn, frame, level, ctx),
        Ok(None) => {}
        Err(status) => return conn.status(opcode, status, opaque),
    }
    match opcode {
        Opcode::Get | Opcode::Gat => {
            let (key, expiry) = if opcode == Opcode::Get {
                let req = decode!(Get);
                (req.key, None)
            } else {
                let req = decode!(GetAndTouch);
                (req.key, Some(req.expiry))
            };
            let (cid, key) = key!(key);
            let result = ctx.bucket.write_vb_in(vb, cid, |v, _| match expiry {
                None => v.get(&key, now),
                Some(expiry) => v.touch(&key, expiry, now),
            });
            let response = match result {
                Ok(doc) => {
                    let (value, datatype) = get_value(conn, &doc);
                    GetResponse {
                        opcode,
                        status: Status::Success,
                        opaque,
                        cas: doc.cas,
                        datatype,
                        flags: doc.flags,
                        value,
                    }
                }
                Err(e) => GetResponse {
                    opcode,
                    status: e.status(),
                    opaque,
                    cas: 0,
                    datatype: Datatype::RAW,
                    flags: 0,
                    value: Bytes::new(),
                },
            };
            conn.respond(response.status, |buf| response.encode(buf))
        }
        Opcode::Touch => {
            let req = decode!(Touch);
            let (cid, key) = key!(req.key);
            let result = ctx.bucket.write_vb_in(vb, cid, |v, _| {
                let doc = v.touch(&key, req.expiry, now)?;
                Ok(MutationInfo {
                    vbucket: vb,
                    vbucket_uuid: v.uuid(),
                    seqno: doc.seqno,
                    cas: doc.cas,
                })
            });
            // TOUCH answers with the CAS only.
            let response = match result {
                Ok(info) => MutationResponse {
                    opcode,
                    status: Status::Success,
                    opaque,
                    cas: info.cas,
                    token: None,
                    error_body: Bytes::new(),
                },
                Err(e) => MutationResponse {
                    opcode,
                    status: e.status(),
                    opaque,
                    cas: 0,
                    token: None,
                    error_body: Bytes::new(),
                },
            };
            conn.respond(response.status, |buf| response.encode(buf))
        }
        Opcode::Set | Opcode::Add | Opcode::Replace => {
            let req = decode!(Store);
            if (req.datatype.is_xattr() && !conn.features.xattr)
                || (req.datatype.is_snappy() && !conn.features.snappy)
            {
                return conn.status(opcode, Status::Einval, opaque);
            }
            let (cid, key) = key!(req.key);
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
            let (sent, value) = (req.datatype, req.value);
            let result = ctx.bucket.write_vb_in(vb, cid, |v, max| {
                // Stored uncompressed (as a server whose compression mode is
                // off): DCP then compresses per connection.
                let (_, value) = decompress_value(sent, &value, max).map_err(snappy_error)?;
                v.store(mode, key, value, opts, max, now)
            });
            mutation_reply(conn, opcode, opaque, result)
        }
        Opcode::Delete => {
            let req = decode!(Delete);
            let (cid, key) = key!(req.key);
            let result = ctx
                .bucket
                .write_vb_in(vb, cid, |v, _| v.delete(&key, req.cas, now));
            mutation_reply(conn, opcode, opaque, result)
        }
        Opcode::Append | Opcode::Prepend => {
            let req = decode!(Concat);
            let sent = frame.datatype();
            if sent.is_snappy() && !conn.features.snappy {
                return conn.status(opcode, Status::Einval, opaque);
            }
            let (cid, key) = key!(req.key);
            let append = opcode == Opcode::Append;
            let value = req.value;
            let result = ctx.bucket.write_vb_in(vb, cid, |v, max| {
                let (_, value) = decompress_value(sent, &value, max).map_err(snappy_error)?;
                v.concat(append, key, &value, req.cas, max, now)
            });
            mutation_reply(conn, opcode, opaque, result)
        }
        Opcode::Increment | Opcode::Decrement => {
            let req = decode!(Counter);
            let (cid, key) = key!(req.key);
            let incr = opcode == Opcode::Increment;
            let initial = (req.expiry != Counter::NO_CREATE).then_some(req.initial);
            let result = ctx.bucket.write_vb_in(vb, cid, |v, _| {
                v.counter(incr, key, req.delta, initial, req.expiry, req.cas, now)
            });
            let response = match result {
                Ok((value, info)) => CounterResponse {
                    opcode,
                    status: Status::Success,
                    opaque,
                    cas: info.cas,
                    value,
                    token: token(conn, &info),
                    error_body: Bytes::new(),
                },
                Err(e) => CounterResponse {
                    opcode,
                    status: e.status(),
                    opaque,
                    cas: 0,
                    value: 0,
                    token: None,
                    error_body: Bytes::new(),
                },
            };
            conn.respond(response.status, |buf| response.encode(buf))
        }
        _ => conn.status(opcode, Status::UnknownCommand, opaque),
    }
}
