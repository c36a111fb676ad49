//! Routes one request from a client to its handler, enforcing what the
//! server enforces first: authentication, a selected bucket, DCP commands
//! only on DCP connections (and never with unordered execution).

use super::connection::Connection;
use super::context::Ctx;
use super::error::CloseReason;
use super::{admin, cluster_config, dcp, handshake, kv, sasl, stats};
use crate::codec::{Frame, Opcode, Status};
use crate::msg::client::{
    GetAllVbSeqnos, GetClusterConfig, GetErrorMap, GetFailoverLogRequest, Hello, SaslAuth,
    SaslListMechs, SaslStep, SelectBucket, Stat,
};
use crate::msg::{
    BufferAck, CloseStream, Control, GetFailoverLog, Open, SeqnoAcknowledged, StreamRequest,
};

/// Decodes the request as `$ty`, answering EINVAL if it is malformed.
macro_rules! decode {
    ($conn:expr, $frame:expr, $ty:ty) => {
        match <$ty>::decode($frame) {
            Ok(req) => req,
            Err(_) => return $conn.status($frame.opcode(), Status::Einval, $frame.opaque()),
        }
    };
}

/// A STREAM_REQ whose JSON names stream id 0 (the codec refuses it; the
/// server answers DCP_STREAMID_INVALID).
fn names_stream_id_zero(frame: &Frame) -> bool {
    serde_json::from_slice::<serde_json::Value>(frame.value_slice())
        .ok()
        .and_then(|v| v.get("sid").and_then(serde_json::Value::as_u64))
        == Some(0)
}

/// Handles one frame from the client. An error closes the connection.
pub(crate) fn handle_frame(
    conn: &mut Connection,
    frame: &Frame,
    ctx: &mut Ctx<'_>,
    config_rev: i64,
) -> Result<(), CloseReason> {
    if frame.magic() == crate::codec::Magic::ServerResponse {
        // A client's answer to a server request (e.g. a cluster-map
        // notification, which expects none): ignored, as the server does.
        return Ok(());
    }
    if frame.is_response() {
        return dcp::client_response(conn, frame);
    }
    let opcode = frame.opcode();
    let opaque = frame.opaque();

    // Available before authentication.
    match opcode {
        Opcode::Hello => return handshake::hello(conn, &decode!(conn, frame, Hello)),
        Opcode::SaslListMechs => {
            return sasl::list_mechs(conn, &decode!(conn, frame, SaslListMechs));
        }
        Opcode::SaslAuth => return sasl::auth(conn, &decode!(conn, frame, SaslAuth), ctx),
        Opcode::SaslStep => return sasl::step(conn, &decode!(conn, frame, SaslStep), ctx),
        Opcode::GetErrorMap => {
            return handshake::get_error_map(conn, &decode!(conn, frame, GetErrorMap));
        }
        Opcode::Noop => return conn.status(Opcode::Noop, Status::Success, opaque),
        Opcode::Version => return handshake::version(conn, opaque, ctx),
        Opcode::Quit => {
            conn.status(Opcode::Quit, Status::Success, opaque)?;
            return Err(CloseReason::Quit);
        }
        Opcode::QuitQ => return Err(CloseReason::Quit),
        _ => {}
    }

    if conn.user.is_none() {
        return conn.status(opcode, Status::Eaccess, opaque);
    }
    if opcode.is_dcp() && conn.features.unordered {
        return conn.status(opcode, Status::NotSupported, opaque);
    }
    if opcode == Opcode::SelectBucket {
        return handshake::select_bucket(conn, &decode!(conn, frame, SelectBucket), ctx);
    }
    if !conn.bucket_selected && opcode != Opcode::Unknown(admin::ADMIN_OPCODE) {
        return conn.status(opcode, Status::NoBucket, opaque);
    }

    match opcode {
        Opcode::DcpOpen => dcp::open(conn, &decode!(conn, frame, Open), ctx),
        Opcode::DcpControl => dcp::control(conn, &decode!(conn, frame, Control), ctx),
        Opcode::DcpStreamReq => {
            if conn.dcp.is_some() && names_stream_id_zero(frame) {
                return conn.status(opcode, Status::DcpStreamIdInvalid, opaque);
            }
            dcp::stream_request(conn, &decode!(conn, frame, StreamRequest), ctx)
        }
        Opcode::DcpCloseStream => dcp::close_stream(conn, &decode!(conn, frame, CloseStream), ctx),
        Opcode::DcpBufferAck => dcp::buffer_ack(conn, &decode!(conn, frame, BufferAck)),
        Opcode::DcpGetFailoverLog => {
            let req = decode!(conn, frame, GetFailoverLog);
            dcp::get_failover_log(conn, opcode, req.vbucket, req.opaque, ctx)
        }
        Opcode::DcpSeqnoAcknowledged => {
            let req = decode!(conn, frame, SeqnoAcknowledged);
            dcp::seqno_acknowledged(conn, &req)
        }
        Opcode::DcpNoop if conn.dcp.is_some() => Err(CloseReason::NoopFromClient),
        op if op.is_dcp() => conn.status(op, Status::Einval, opaque),
        Opcode::GetFailoverLog => {
            let req = decode!(conn, frame, GetFailoverLogRequest);
            dcp::get_failover_log(conn, opcode, req.vbucket, req.opaque, ctx)
        }
        Opcode::GetAllVbSeqnos => {
            stats::get_all_vb_seqnos(conn, &decode!(conn, frame, GetAllVbSeqnos), ctx)
        }
        Opcode::Stat => stats::stat(conn, &decode!(conn, frame, Stat), ctx),
        Opcode::GetClusterConfig => cluster_config::get_cluster_config(
            conn,
            &decode!(conn, frame, GetClusterConfig),
            ctx,
            config_rev,
        ),
        Opcode::SetVbucket => admin::set_vbucket(conn, frame, ctx),
        Opcode::Unknown(admin::ADMIN_OPCODE) => admin::admin(conn, frame, ctx),
        op if kv::is_kv(op) => kv::handle(conn, frame, ctx),
        op => conn.status(op, Status::UnknownCommand, opaque),
    }
}
