//! SASL on the server side: SASL_LIST_MECHS, and SASL_AUTH/SASL_STEP with
//! PLAIN or SCRAM-SHA1/256/512 against the node's users.

use super::connection::Connection;
use super::context::Ctx;
use super::error::CloseReason;
use crate::auth::{Mechanism, ScramServer, parse_plain};
use crate::codec::{Opcode, Status};
use crate::msg::client::{SaslAuth, SaslListMechs, SaslListMechsResponse, SaslResponse, SaslStep};

/// Where a connection is in a SASL exchange.
#[derive(Clone)]
pub(crate) enum SaslState {
    /// No exchange in progress.
    Idle,
    /// A SCRAM exchange awaiting the client-final message.
    Scram {
        server: Box<ScramServer>,
        user: String,
    },
}

impl core::fmt::Debug for SaslState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            SaslState::Idle => f.write_str("Idle"),
            SaslState::Scram { user, .. } => write!(f, "Scram({user})"),
        }
    }
}

/// The mechanisms offered, strongest first.
pub(crate) const MECHANISMS: &str = "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN";

fn reply(
    conn: &mut Connection,
    opcode: Opcode,
    status: Status,
    opaque: u32,
    data: &[u8],
) -> Result<(), CloseReason> {
    let response = SaslResponse {
        opcode,
        status,
        opaque,
        data: bytes::Bytes::copy_from_slice(data),
    };
    conn.respond(status, |buf| response.encode(buf))
}

/// SASL_LIST_MECHS.
pub(crate) fn list_mechs(conn: &mut Connection, req: &SaslListMechs) -> Result<(), CloseReason> {
    let response = SaslListMechsResponse {
        status: Status::Success,
        opaque: req.opaque,
        mechanisms: bytes::Bytes::from_static(MECHANISMS.as_bytes()),
    };
    conn.respond(Status::Success, |buf| response.encode(buf))
}

/// Marks the connection authenticated as `user`; a bucket named like the
/// user is selected automatically, as memcached does.
fn authenticated(conn: &mut Connection, user: String, ctx: &Ctx<'_>) {
    if user == ctx.bucket.name() {
        conn.bucket_selected = true;
    }
    conn.user = Some(user);
}

/// SASL_AUTH.
pub(crate) fn auth(
    conn: &mut Connection,
    req: &SaslAuth,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    conn.sasl = SaslState::Idle;
    if conn.dcp.is_some() {
        // SASL is disabled once the connection is a DCP connection.
        return conn.status(Opcode::SaslAuth, Status::Einval, req.opaque);
    }
    let mechanism = core::str::from_utf8(&req.mechanism)
        .ok()
        .and_then(Mechanism::from_name);
    let fail =
        |conn: &mut Connection| reply(conn, Opcode::SaslAuth, Status::AuthError, req.opaque, &[]);
    match mechanism {
        None => fail(conn),
        Some(Mechanism::Plain) => {
            let Ok(plain) = parse_plain(&req.data) else {
                return fail(conn);
            };
            let ok = (plain.authzid.is_empty() || plain.authzid == plain.username)
                && ctx
                    .users
                    .password(plain.username)
                    .is_some_and(|expected| plain.verify_password(expected).is_ok());
            if !ok {
                return fail(conn);
            }
            authenticated(conn, plain.username.to_owned(), ctx);
            reply(conn, Opcode::SaslAuth, Status::Success, req.opaque, &[])
        }
        Some(mechanism) => {
            let nonce = ctx.rng.hex(24);
            let Ok(mut server) = ScramServer::new(mechanism, &nonce) else {
                return fail(conn);
            };
            let Ok(first) = server.handle_client_first(&req.data) else {
                return fail(conn);
            };
            if first.authzid.as_ref().is_some_and(|a| *a != first.username) {
                return fail(conn);
            }
            let Some(credentials) = ctx.users.scram(&first.username, mechanism, ctx.rng) else {
                return fail(conn);
            };
            let Ok(server_first) = server.server_first(&credentials) else {
                return fail(conn);
            };
            conn.sasl = SaslState::Scram {
                server: Box::new(server),
                user: first.username,
            };
            reply(
                conn,
                Opcode::SaslAuth,
                Status::AuthContinue,
                req.opaque,
                &server_first,
            )
        }
    }
}

/// SASL_STEP.
pub(crate) fn step(
    conn: &mut Connection,
    req: &SaslStep,
    ctx: &mut Ctx<'_>,
) -> Result<(), CloseReason> {
    let state = core::mem::replace(&mut conn.sasl, SaslState::Idle);
    let SaslState::Scram { mut server, user } = state else {
        return reply(conn, Opcode::SaslStep, Status::AuthError, req.opaque, &[]);
    };
    let same_mech = core::str::from_utf8(&req.mechanism)
        .ok()
        .and_then(Mechanism::from_name)
        == Some(server.mechanism());
    if !same_mech {
        return reply(conn, Opcode::SaslStep, Status::AuthError, req.opaque, &[]);
    }
    match server.handle_client_final(&req.data) {
        Ok(server_final) => {
            authenticated(conn, user, ctx);
            reply(
                conn,
                Opcode::SaslStep,
                Status::Success,
                req.opaque,
                &server_final,
            )
        }
        Err(_) => reply(conn, Opcode::SaslStep, Status::AuthError, req.opaque, &[]),
    }
}
