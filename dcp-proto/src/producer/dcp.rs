//! The DCP commands of a producer connection other than STREAM_REQ:
//! DCP_OPEN (with name kicks), DCP_CONTROL, CLOSE_STREAM, BUFFER_ACK,
//! GET_FAILOVER_LOG, SEQNO_ACKNOWLEDGED, and the client's responses to
//! what the producer sent.

use std::collections::BTreeMap;

use super::connection::{Connection, DcpConn};
use super::context::{Ctx, Deferred};
use super::control::{ControlContext, Controls};
use super::error::CloseReason;
use super::liveness::Liveness;
use super::stream::Stream;
use super::stream_request::{Decision, decide};
use crate::codec::{Frame, Opcode, Status};
use crate::flow::ProducerWindow;
use crate::msg::{
    BufferAck, CloseStream, Control, FailoverLogResponse, Open, OpenFlags, StreamEndReason,
    StreamRequest, StreamRequestResponse,
};

/// Flags a producer DCP_OPEN may carry.
fn valid_open_flags() -> OpenFlags {
    OpenFlags::PRODUCER
        | OpenFlags::INCLUDE_XATTRS
        | OpenFlags::NO_VALUE
        | OpenFlags::INCLUDE_DELETE_TIMES
        | OpenFlags::NO_VALUE_WITH_UNDERLYING_DATATYPE
        | OpenFlags::INCLUDE_DELETED_USER_XATTRS
        | OpenFlags::SKIP_DELETES_IN_INITIAL_BACKFILL
}

/// DCP_OPEN.
pub(crate) fn open(
    conn: &mut Connection,
    req: &Open,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let refuse = |conn: &mut Connection, status| conn.status(Opcode::DcpOpen, status, req.opaque);
    if conn.dcp.is_some() {
        return refuse(conn, Status::Einval);
    }
    let flags = req.flags;
    if !valid_open_flags().contains(flags)
        || flags.contains(OpenFlags::NO_VALUE | OpenFlags::NO_VALUE_WITH_UNDERLYING_DATATYPE)
        || (flags.contains(OpenFlags::INCLUDE_DELETED_USER_XATTRS)
            && !flags.contains(OpenFlags::INCLUDE_XATTRS))
    {
        return refuse(conn, Status::Einval);
    }
    if !flags.contains(OpenFlags::PRODUCER) {
        // Consumer connections (ns_server replication) are not modelled.
        return refuse(conn, Status::NotSupported);
    }
    if req.consumer_name.is_some() {
        // `consumer_name` belongs to consumer connections.
        return refuse(conn, Status::Einval);
    }
    let name = String::from_utf8_lossy(&req.name).into_owned();
    if let Some(previous) = ctx.names.insert(name.clone(), conn.id)
        && previous != conn.id
    {
        ctx.deferred.push(Deferred::Kick(previous, name.clone()));
    }
    conn.dcp = Some(DcpConn {
        name,
        flags,
        controls: Controls::default(),
        snappy: conn.features.snappy,
        window: ProducerWindow::default(),
        liveness: Liveness::new(
            ctx.config.default_noop_interval,
            ctx.config.idle_timeout,
            ctx.now,
        ),
        streams: BTreeMap::new(),
        next_stream: None,
        items_sent: 0,
        bytes_sent: 0,
    });
    refuse(conn, Status::Success)
}

/// DCP_CONTROL.
pub(crate) fn control(
    conn: &mut Connection,
    req: &Control,
    ctx: &Ctx<'_>,
) -> Result<(), CloseReason> {
    let features = conn.features;
    let Some(dcp) = conn.dcp.as_mut() else {
        return conn.status(Opcode::DcpControl, Status::Einval, req.opaque);
    };
    let (Ok(key), Ok(value)) = (req.key_str(), req.value_str()) else {
        return conn.status(Opcode::DcpControl, Status::Einval, req.opaque);
    };
    let context = ControlContext {
        snappy: features.snappy,
        collections: features.collections,
        open_flags: dcp.flags,
        min_noop_interval: ctx.config.min_noop_interval,
    };
    let status = dcp.controls.apply(key, value, context);
    if status.is_success() {
        if let Some(size) = dcp.controls.buffer_size.take() {
            dcp.window.set_window(size);
        }
        dcp.liveness.enabled = dcp.controls.noop_enabled;
        if let Some(interval) = dcp.controls.noop_interval {
            dcp.liveness.interval = interval;
        }
    }
    conn.status(Opcode::DcpControl, status, req.opaque)
}

/// DCP_STREAM_REQ.
pub(crate) fn stream_request(
    conn: &mut Connection,
    req: &StreamRequest,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let collections = conn.features.collections;
    let Some(dcp) = conn.dcp.as_mut() else {
        return conn.status(Opcode::DcpStreamReq, Status::Einval, req.opaque);
    };
    let response = match decide(req, dcp, collections, ctx.bucket) {
        Decision::Accept(params) => {
            let log = ctx
                .bucket
                .vbucket(params.vbucket)
                .map(|vb| vb.failover_log().clone())
                .unwrap_or_default();
            let key = (params.vbucket, params.stream_id);
            // A dead stream in the slot is replaced.
            if let Some(mut old) = dcp.streams.remove(&key) {
                old.release(ctx.bucket.vbucket_mut(key.0).ok());
            }
            dcp.streams.insert(key, Stream::new(params));
            StreamRequestResponse::accepted(req.opaque, log)
        }
        Decision::Rollback(seqno) => StreamRequestResponse::rollback(req.opaque, seqno),
        Decision::Reject(Status::NotMyVbucket, _) => {
            let body = super::cluster_config::not_my_vbucket_body(conn, ctx);
            StreamRequestResponse::failed(req.opaque, Status::NotMyVbucket, body)
        }
        Decision::Reject(status, body) => StreamRequestResponse::failed(req.opaque, status, body),
    };
    conn.respond(response.status, |buf| response.encode(buf))
}

/// DCP_CLOSE_STREAM.
pub(crate) fn close_stream(
    conn: &mut Connection,
    req: &CloseStream,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let Some(dcp) = conn.dcp.as_mut() else {
        return conn.status(Opcode::DcpCloseStream, Status::Einval, req.opaque);
    };
    if dcp.controls.stream_id != req.stream_id.is_some() {
        return conn.status(
            Opcode::DcpCloseStream,
            Status::DcpStreamIdInvalid,
            req.opaque,
        );
    }
    let key = (req.vbucket, req.stream_id);
    let live = dcp.streams.get(&key).is_some_and(|s| !s.is_ending());
    if !live {
        let status = if dcp.controls.v7_status_codes {
            Status::DcpStreamNotFound
        } else {
            Status::KeyEnoent
        };
        return conn.status(Opcode::DcpCloseStream, status, req.opaque);
    }
    let vb = ctx.bucket.vbucket_mut(req.vbucket).ok();
    if dcp.controls.send_stream_end_on_close {
        if let Some(stream) = dcp.streams.get_mut(&key) {
            stream.end(StreamEndReason::Closed, vb);
        }
    } else if let Some(mut stream) = dcp.streams.remove(&key) {
        stream.release(vb);
    }
    conn.status(Opcode::DcpCloseStream, Status::Success, req.opaque)
}

/// DCP_BUFFER_ACKNOWLEDGEMENT: no response on success.
pub(crate) fn buffer_ack(conn: &mut Connection, req: &BufferAck) -> Result<(), CloseReason> {
    match conn.dcp.as_mut() {
        Some(dcp) => {
            dcp.window.on_ack(req.bytes);
            Ok(())
        }
        None => conn.status(Opcode::DcpBufferAck, Status::Einval, req.opaque),
    }
}

/// DCP_GET_FAILOVER_LOG (0x54) or GET_FAILOVER_LOG (0x96).
pub(crate) fn get_failover_log(
    conn: &mut Connection,
    opcode: Opcode,
    vbucket: u16,
    opaque: u32,
    ctx: &Ctx<'_>,
) -> Result<(), CloseReason> {
    let response = match ctx.bucket.vbucket(vbucket) {
        Some(vb) => FailoverLogResponse::success(opcode, opaque, vb.failover_log().clone()),
        None => {
            FailoverLogResponse::error(opcode, Status::NotMyVbucket, opaque, bytes::Bytes::new())
        }
    };
    conn.respond(response.status, |buf| response.encode(buf))
}

/// DCP_SEQNO_ACKNOWLEDGED: EINVAL unless sync replication is on (sync
/// writes and a consumer name); else no response. The acknowledged seqno
/// is recorded on the stream with the same vbucket and opaque (shown in
/// the `dcp` stats); an unknown opaque is ignored. No replica is counted
/// towards durability: the bucket has none.
pub(crate) fn seqno_acknowledged(
    conn: &mut Connection,
    req: &crate::msg::SeqnoAcknowledged,
) -> Result<(), CloseReason> {
    let Some(dcp) = conn.dcp.as_mut().filter(|d| d.controls.sync_replication()) else {
        return conn.status(Opcode::DcpSeqnoAcknowledged, Status::Einval, req.opaque);
    };
    if let Some(stream) = dcp
        .streams
        .values_mut()
        .find(|s| s.params.vbucket == req.vbucket && s.params.opaque == req.opaque)
    {
        stream.seqno_acknowledged = stream.seqno_acknowledged.max(req.prepared_seqno);
    }
    Ok(())
}

/// A response from the client to something the producer sent.
pub(crate) fn client_response(conn: &mut Connection, frame: &Frame) -> Result<(), CloseReason> {
    let Some(dcp) = conn.dcp.as_mut() else {
        return Ok(());
    };
    let opcode = frame.opcode();
    let status = frame.status();
    let error = || CloseReason::ClientError { opcode, status };
    match opcode {
        Opcode::DcpNoop => {
            if !status.is_success() {
                return Err(error());
            }
            if dcp.liveness.on_response(frame.opaque()) {
                Ok(())
            } else {
                Err(CloseReason::NoopOpaqueMismatch(frame.opaque()))
            }
        }
        // The producer has no handler for these: a logic error.
        Opcode::DcpSeqnoAdvanced | Opcode::DcpOsoSnapshot => Err(error()),
        Opcode::DcpSnapshotMarker
        | Opcode::DcpSetVbucketState
        | Opcode::DcpStreamEnd
        | Opcode::DcpMutation
        | Opcode::DcpDeletion
        | Opcode::DcpExpiration
        | Opcode::DcpSystemEvent
        | Opcode::DcpPrepare
        | Opcode::DcpCommit
        | Opcode::DcpAbort => {
            let v7 = dcp.controls.v7_status_codes;
            let tolerated = match status {
                Status::Success | Status::NotMyVbucket => true,
                Status::DcpStreamNotFound | Status::OpaqueNoMatch => true,
                Status::KeyEexists | Status::KeyEnoent => {
                    !v7 && !matches!(opcode, Opcode::DcpCommit | Opcode::DcpAbort)
                }
                _ => false,
            };
            if tolerated { Ok(()) } else { Err(error()) }
        }
        _ => Ok(()),
    }
}
