//! The connection-level commands around DCP: HELLO, SELECT_BUCKET,
//! GET_ERROR_MAP, VERSION, NOOP and QUIT.

use bytes::Bytes;

use super::connection::{Connection, Features, SUPPORTED_FEATURES};
use super::context::Ctx;
use super::error::CloseReason;
use crate::codec::{Datatype, FrameHead, Opcode, Status};
use crate::msg::client::{
    GetErrorMap, GetErrorMapResponse, Hello, HelloFeature, HelloResponse, SelectBucket,
};

/// HELLO: grants the requested features this node supports, in the
/// client's order, each once; a new HELLO replaces the previous set.
pub(crate) fn hello(conn: &mut Connection, req: &Hello) -> Result<(), CloseReason> {
    if !super::cluster_config::hello_push_valid(&req.features) {
        // Cluster-map notifications without Duplex: the server refuses the
        // whole HELLO.
        return conn.status(Opcode::Hello, Status::Einval, req.opaque);
    }
    let mut granted: Vec<HelloFeature> = Vec::new();
    for feature in &req.features {
        if SUPPORTED_FEATURES.contains(feature) && !granted.contains(feature) {
            granted.push(*feature);
        }
    }
    super::cluster_config::brief_wins(&mut granted);
    let mut features = Features::default();
    for feature in &granted {
        features.grant(*feature);
    }
    conn.features = features;
    conn.agent = String::from_utf8_lossy(&req.agent).into_owned();
    let response = HelloResponse::success(req.opaque, granted);
    conn.respond(Status::Success, |buf| response.encode(buf))
}

/// SELECT_BUCKET: only the node's bucket exists; `@no bucket@` deselects.
pub(crate) fn select_bucket(
    conn: &mut Connection,
    req: &SelectBucket,
    ctx: &Ctx<'_>,
) -> Result<(), CloseReason> {
    if conn.user.is_none() {
        return conn.status(Opcode::SelectBucket, Status::Eaccess, req.opaque);
    }
    if &req.bucket[..] == SelectBucket::NO_BUCKET {
        conn.bucket_selected = false;
        return conn.status(Opcode::SelectBucket, Status::Success, req.opaque);
    }
    if conn.dcp.is_some() {
        return conn.status(Opcode::SelectBucket, Status::NotSupported, req.opaque);
    }
    if &req.bucket[..] == ctx.bucket.name().as_bytes() {
        conn.bucket_selected = true;
        conn.status(Opcode::SelectBucket, Status::Success, req.opaque)
    } else {
        conn.status(Opcode::SelectBucket, Status::KeyEnoent, req.opaque)
    }
}

/// One error-map entry: code, name, description, attributes.
type ErrorEntry = (u16, &'static str, &'static str, &'static [&'static str]);

/// The error map this node serves (the statuses it can send).
const ERRORS: &[ErrorEntry] = &[
    (0x00, "SUCCESS", "Success", &["success"]),
    (0x01, "KEY_ENOENT", "Not Found", &["item-only"]),
    (
        0x02,
        "KEY_EEXISTS",
        "key already exists, or CAS mismatch",
        &["item-only"],
    ),
    (
        0x03,
        "E2BIG",
        "Value is too big",
        &["item-only", "invalid-input"],
    ),
    (
        0x04,
        "EINVAL",
        "Invalid packet",
        &["internal", "invalid-input"],
    ),
    (0x05, "NOT_STORED", "Not Stored", &["item-only"]),
    (
        0x06,
        "DELTA_BADVAL",
        "Existing document not a number",
        &["item-only", "invalid-input"],
    ),
    (
        0x07,
        "NOT_MY_VBUCKET",
        "Server which received this command does not own the vBucket",
        &["fetch-config", "invalid-input"],
    ),
    (
        0x08,
        "NO_BUCKET",
        "Not connected to a bucket",
        &["conn-state-invalidated"],
    ),
    (
        0x0a,
        "DCP_STREAM_NOT_FOUND",
        "No stream for the vbucket",
        &["internal"],
    ),
    (
        0x0b,
        "OPAQUE_NO_MATCH",
        "Opaque does not match",
        &["internal"],
    ),
    (
        0x20,
        "AUTH_ERROR",
        "Authentication failed",
        &["auth", "conn-state-invalidated"],
    ),
    (
        0x21,
        "AUTH_CONTINUE",
        "Authentication continues",
        &["auth", "support"],
    ),
    (0x22, "ERANGE", "Range error", &["invalid-input"]),
    (0x23, "ROLLBACK", "Roll back to an earlier seqno", &["dcp"]),
    (0x24, "EACCESS", "No access", &["support"]),
    (0x81, "UNKNOWN_COMMAND", "Unknown command", &["support"]),
    (0x82, "ENOMEM", "Out of memory", &["temp", "retry-later"]),
    (0x83, "NOT_SUPPORTED", "Not supported", &["support"]),
    (0x84, "EINTERNAL", "Internal error", &["internal"]),
    (0x85, "EBUSY", "System is busy", &["temp", "retry-later"]),
    (
        0x86,
        "ETMPFAIL",
        "Temporary failure",
        &["temp", "retry-later"],
    ),
    (
        0x88,
        "UNKNOWN_COLLECTION",
        "Unknown collection",
        &["fetch-config", "item-only"],
    ),
    (0x8c, "UNKNOWN_SCOPE", "Unknown scope", &["fetch-config"]),
    (
        0x8d,
        "DCP_STREAMID_INVALID",
        "Invalid stream id",
        &["invalid-input", "dcp"],
    ),
];

/// The error map JSON for format `version` (1 or 2).
pub(crate) fn error_map_json(version: u16) -> Vec<u8> {
    let mut errors = serde_json::Map::new();
    for (code, name, desc, attrs) in ERRORS {
        errors.insert(
            format!("{code:x}"),
            serde_json::json!({ "name": name, "desc": desc, "attrs": attrs }),
        );
    }
    let map = serde_json::json!({ "version": version, "revision": 1, "errors": errors });
    serde_json::to_vec(&map).unwrap_or_default()
}

/// GET_ERROR_MAP: version 0 is EINVAL; newer than 2 gets version 2.
pub(crate) fn get_error_map(conn: &mut Connection, req: &GetErrorMap) -> Result<(), CloseReason> {
    if req.version == 0 {
        return conn.status(Opcode::GetErrorMap, Status::Einval, req.opaque);
    }
    let response = GetErrorMapResponse {
        status: Status::Success,
        opaque: req.opaque,
        map: Bytes::from(error_map_json(req.version.min(2))),
    };
    conn.respond(Status::Success, |buf| response.encode(buf))
}

/// VERSION (0x0b): the server version as the value.
pub(crate) fn version(
    conn: &mut Connection,
    opaque: u32,
    ctx: &Ctx<'_>,
) -> Result<(), CloseReason> {
    let version = ctx.config.version.clone();
    conn.respond(Status::Success, |buf| {
        FrameHead::response(Opcode::Version, Status::Success, opaque)
            .with_datatype(Datatype::RAW)
            .encode(buf, &[], &[], &[], version.as_bytes())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_map_is_json_with_hex_keys() {
        let map: serde_json::Value = serde_json::from_slice(&error_map_json(2)).unwrap();
        assert_eq!(map["version"], 2);
        assert_eq!(map["errors"]["8d"]["name"], "DCP_STREAMID_INVALID");
        assert_eq!(map["errors"]["86"]["attrs"][0], "temp");
    }
}
