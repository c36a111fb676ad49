//! Every frame drawn in Couchbase's documentation (tests/vectors/*.json):
//! the consistent, server-conformant ones decode to exactly the documented
//! fields and re-encode to the same bytes; each broken one is rejected with a
//! specific error, or decoded exactly as the server would read its bytes.

use bytes::{Bytes, BytesMut};
use dcp_proto::codec::{
    DecodeError, DecodeErrorKind, Frame, FrameDecoder, FrameHead, Magic, Opcode, Status,
};
use dcp_proto::msg::{Message, SnapshotMarker, StreamRequestOutcome, SystemEventData};
use serde_json::{Value, json};

const FILES: [(&str, usize); 2] = [
    ("doc-frames.json", 43),
    ("doc-frames-supplementary.json", 33),
];

fn load(file: &str) -> Vec<Value> {
    let path = format!("{}/tests/vectors/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("vector file");
    serde_json::from_str::<Vec<Value>>(&text).expect("vector JSON")
}

fn bytes_of(hex_str: &str) -> Bytes {
    Bytes::from(hex::decode(hex_str).expect("hex"))
}

fn s(v: impl ToString) -> Value {
    Value::String(v.to_string())
}

/// Lower-cased letters only, so "TakeOver", "TAKEOVER" and "take_over" match.
fn norm(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn flag_names(names: impl Iterator<Item = String>) -> Value {
    Value::Array(names.map(|n| s(norm(&n))).collect())
}

/// The fields of a typed message, in the vectors' `decoded` notation.
fn typed_fields(msg: &Message) -> serde_json::Map<String, Value> {
    let v = match msg {
        Message::Mutation(m) => json!({
            "by_seqno": s(m.by_seqno), "rev_seqno": s(m.rev_seqno),
            "flags": s(format!("{:#010x}", m.flags)), "expiration": s(m.expiration),
            "lock_time": s(m.lock_time), "nmeta": s(0), "nru": s(m.nru),
        }),
        Message::Commit(m) => json!({
            "prepared_seqno": s(m.prepared_seqno), "commit_seqno": s(m.commit_seqno),
        }),
        Message::Abort(m) => json!({
            "prepared_seqno": s(m.prepared_seqno), "abort_seqno": s(m.abort_seqno),
        }),
        Message::SeqnoAcknowledged(m) => json!({ "prepared_seqno": s(m.prepared_seqno) }),
        Message::SeqnoAdvanced(m) => json!({ "by_seqno": s(m.seqno) }),
        Message::AddStream(m) => json!({
            "flags": s(format!("{:#010x}", m.flags.bits())),
            "flag_names": flag_names(m.flags.iter_names().map(|(n, _)| n.to_string())),
        }),
        Message::AddStreamResponse(m) => json!({ "stream_opaque": s(m.stream_opaque) }),
        Message::BufferAck(m) => json!({ "buffer_bytes": s(m.bytes) }),
        Message::Open(m) => json!({
            "seqno": s(0),
            "flags": s(format!("{:#010x}", m.flags.bits())),
            "flag_names": if m.flags.contains(dcp_proto::msg::OpenFlags::PRODUCER) {
                flag_names(m.flags.iter_names().map(|(n, _)| n.to_string()))
            } else {
                // A DCP_OPEN without the Producer bit opens a consumer.
                flag_names(std::iter::once("Consumer".to_string())
                    .chain(m.flags.iter_names().map(|(n, _)| n.to_string())))
            },
        }),
        Message::OsoSnapshot(m) => json!({
            "flags": s(format!("{:#010x}", m.flags.bits())),
            "flag_names": flag_names(m.flags.iter_names().map(|(n, _)| n.to_string())),
        }),
        Message::SetVbucketState(m) => json!({
            "state": s(m.state.raw()),
            "state_name": s(norm(m.state.name().unwrap_or("unknown"))),
        }),
        Message::SnapshotMarker(m) => snapshot_fields(m),
        Message::StreamEnd(m) => json!({
            "status": s(m.reason.raw()),
            "status_name": s(norm(m.reason.name().unwrap_or("unknown"))),
        }),
        Message::StreamRequest(m) => json!({
            "flags": s(format!("{:#010x}", m.flags.bits())),
            "flag_names": flag_names(m.flags.iter_names().map(|(n, _)| n.to_string())),
            "reserved": s(0),
            "start_seqno": s(m.start_seqno), "end_seqno": s(m.end_seqno),
            "vbucket_uuid": s(m.vbucket_uuid),
            "snap_start_seqno": s(m.snap_start_seqno), "snap_end_seqno": s(m.snap_end_seqno),
        }),
        Message::StreamRequestResponse(m) => match &m.outcome {
            StreamRequestOutcome::Accepted(log) => json!({ "failover_log": log_json(log) }),
            StreamRequestOutcome::Rollback(seqno) => json!({ "rollback_seqno": s(seqno) }),
            other => panic!("no documented failure outcome: {other:?}"),
        },
        Message::FailoverLogResponse(m) => json!({ "failover_log": log_json(&m.log) }),
        Message::GetAllVbSeqnos(m) => {
            let mut v = json!({});
            if let Some(state) = m.state {
                v["vb_state"] = s(state);
                v["vb_state_name"] =
                    s(["alive", "active", "replica", "pending", "dead"][state as usize]);
            }
            if let Some(cid) = m.collection_id {
                v["collection_id"] = s(format!("{cid:#x}"));
            }
            v
        }
        Message::GetAllVbSeqnosResponse(m) => json!({
            "vbuckets": m.entries.iter()
                .map(|(vb, seqno)| json!({ "vb": s(vb), "seqno": s(seqno) }))
                .collect::<Vec<_>>(),
        }),
        Message::SystemEvent(m) => {
            let data = match m.data().expect("documented event data") {
                SystemEventData::BeginCollection(c) => {
                    let mut d = json!({
                        "manifest_uid": s(c.manifest_uid), "scope_id": s(c.scope_id),
                        "collection_id": s(c.collection_id),
                    });
                    if let Some(ttl) = c.max_ttl {
                        d["max_ttl"] = s(ttl);
                    }
                    d
                }
                other => panic!("undocumented event data {other:?}"),
            };
            json!({
                "by_seqno": s(m.by_seqno), "event": s(m.event.raw()),
                "event_name": s(norm(m.event.name().unwrap_or("unknown"))),
                "version": s(m.version), "event_data": data,
            })
        }
        Message::HelloResponse(m) => json!({
            "features": m.features.iter().map(|f| s(format!("{:#06x}", f.raw()))).collect::<Vec<_>>(),
        }),
        Message::Hello(m) => json!({
            "features": m.features.iter().map(|f| s(format!("{:#06x}", f.raw()))).collect::<Vec<_>>(),
        }),
        _ => json!({}),
    };
    match v {
        Value::Object(map) => map,
        _ => unreachable!(),
    }
}

fn snapshot_fields(m: &SnapshotMarker) -> Value {
    json!({
        "version": s(if matches!(m.format, dcp_proto::msg::MarkerFormat::V1) { "1" } else { "2" }),
        "start_seqno": s(m.start), "end_seqno": s(m.end),
        "flags": s(format!("{:#010x}", m.flags.bits())),
        "flag_names": flag_names(m.flags.iter_names().map(|(n, _)| n.to_string())),
    })
}

fn log_json(log: &dcp_proto::msg::FailoverLog) -> Value {
    log.entries
        .iter()
        .map(|e| json!({ "vb_uuid": s(e.vbucket_uuid), "seqno": s(e.seqno) }))
        .collect()
}

/// Normalises the documented side to the notation of `typed_fields`.
fn documented(key: &str, value: &Value) -> Value {
    match (key, value) {
        ("flag_names" | "state_name" | "status_name" | "event_name", Value::Array(names)) => {
            Value::Array(
                names
                    .iter()
                    .map(|n| s(norm(n.as_str().unwrap_or(""))))
                    .collect(),
            )
        }
        ("flag_names" | "state_name" | "status_name" | "event_name", Value::String(n)) => {
            s(norm(n))
        }
        // "0x0001 Invalid(was Datatype)" → "0x0001"
        ("features", Value::Array(codes)) => Value::Array(
            codes
                .iter()
                .map(|c| s(c.as_str().unwrap_or("").split(' ').next().unwrap_or("")))
                .collect(),
        ),
        _ => value.clone(),
    }
}

/// Header fields as the vectors list them.
fn check_header(id: &str, frame: &Frame, header: &Value) {
    let h = frame.header();
    let expect = json!({
        "magic": h.magic.to_u8(), "opcode": h.opcode.raw(), "key_len": h.key_len,
        "extras_len": h.extras_len, "datatype": h.datatype.0,
        "vbucket_or_status": h.vbucket_or_status, "body_len": h.body_len,
        "opaque": h.opaque, "cas": h.cas,
    });
    assert_eq!(&expect, header, "{id}: header");
}

/// Decodes `bytes` as one frame and checks it against every documented
/// field; typed messages must re-encode to the same bytes.
fn check_decodes_as_documented(id: &str, bytes: &Bytes, header: &Value, decoded: &Value) {
    let frame = Frame::parse(bytes.clone()).unwrap_or_else(|e| panic!("{id}: {e}"));
    check_header(id, &frame, header);
    let decoded = decoded.as_object().expect("decoded object");
    let typed = match Message::decode(&frame) {
        Ok(msg) => {
            let mut out = BytesMut::new();
            msg.encode(&mut out)
                .unwrap_or_else(|e| panic!("{id}: encode: {e}"));
            assert_eq!(hex::encode(&out), hex::encode(bytes), "{id}: re-encoding");
            Some(msg)
        }
        Err(DecodeError {
            kind: DecodeErrorKind::UnsupportedOpcode,
            ..
        }) => {
            // Not a DCP or handshake command: the frame layer still has to
            // rebuild the same bytes from its sections.
            let h = frame.header();
            let mut out = BytesMut::new();
            FrameHead {
                magic: h.magic,
                opcode: h.opcode,
                datatype: h.datatype,
                vbucket_or_status: h.vbucket_or_status,
                opaque: h.opaque,
                cas: h.cas,
            }
            .encode(
                &mut out,
                frame.framing_extras(),
                frame.extras(),
                frame.key_slice(),
                frame.value_slice(),
            )
            .expect("frame re-encodes");
            assert_eq!(out.freeze(), *bytes, "{id}: frame re-encoding");
            None
        }
        Err(e) => panic!("{id}: {e}"),
    };
    let fields = typed.as_ref().map(typed_fields).unwrap_or_default();
    for (key, value) in decoded {
        match key.as_str() {
            "key" => assert_eq!(
                hex::encode(frame.key_slice()),
                value["hex"].as_str().unwrap(),
                "{id}: key"
            ),
            "value" => assert_eq!(
                hex::encode(frame.value_slice()),
                value["hex"].as_str().unwrap(),
                "{id}: value"
            ),
            // A response status, "0x0023 Rollback".
            "status" if frame.is_response() => {
                let code = value.as_str().unwrap().split(' ').next().unwrap();
                let code = u16::from_str_radix(code.trim_start_matches("0x"), 16).unwrap();
                assert_eq!(frame.status(), Status::from_raw(code), "{id}: status");
            }
            _ => {
                let ours = fields
                    .get(key)
                    .unwrap_or_else(|| panic!("{id}: documented field {key} not checked"));
                assert_eq!(ours, &documented(key, value), "{id}: field {key}");
            }
        }
    }
    for key in fields.keys() {
        assert!(
            decoded.contains_key(key),
            "{id}: extra field {key} not documented"
        );
    }
}

fn parse_err(bytes: &Bytes) -> DecodeErrorKind {
    Frame::parse(bytes.clone())
        .expect_err("frame must be refused")
        .kind
}

/// The first frame a stream decoder cuts from `bytes`, and what is left.
fn first_frame(bytes: &Bytes) -> (Frame, usize) {
    let mut buf = BytesMut::from(&bytes[..]);
    let frame = FrameDecoder::new()
        .decode(&mut buf)
        .expect("valid header")
        .expect("a whole frame");
    (frame, buf.len())
}

/// Frames whose drawing is broken: what a decoder must do with them.
fn check_broken(id: &str, bytes: &Bytes, entry: &Value) {
    let repaired = || {
        let r = &entry["repaired"];
        (
            bytes_of(r["hex"].as_str().unwrap()),
            r["header"].clone(),
            r["decoded"].clone(),
        )
    };
    match id {
        // extras_len 0 where the server requires 4.
        "buffer-ack-1" => {
            let frame = Frame::parse(bytes.clone()).unwrap();
            let err = Message::decode(&frame).unwrap_err();
            assert_eq!(
                err.kind,
                DecodeErrorKind::ExtrasLength {
                    expected: "4",
                    got: 0
                }
            );
            assert_eq!((err.opcode, err.offset), (Some(Opcode::DcpBufferAck), 4));
            let (b, h, d) = repaired();
            check_decodes_as_documented(id, &b, &h, &d);
        }
        // Drawn shorter than the header's body length.
        "cache-transfer-1" | "control-2" | "random_key-2" | "stream-request-3" => {
            assert!(
                matches!(parse_err(bytes), DecodeErrorKind::Truncated { .. }),
                "{id}"
            );
            let mut buf = BytesMut::from(&bytes[..]);
            assert!(
                FrameDecoder::new().decode(&mut buf).unwrap().is_none(),
                "{id}: waits"
            );
            if id == "random_key-2" {
                let (b, h, d) = repaired();
                check_decodes_as_documented(id, &b, &h, &d);
            }
        }
        // Header describes 28 bytes (extras 4, no key/value); 11 stray bytes.
        "control-1" => {
            assert!(matches!(
                parse_err(bytes),
                DecodeErrorKind::TrailingBytes { extra: 11, .. }
            ));
            let (frame, left) = first_frame(bytes);
            assert_eq!(left, 11);
            let err = Message::decode(&frame).unwrap_err();
            assert_eq!(
                err.kind,
                DecodeErrorKind::ExtrasLength {
                    expected: "0",
                    got: 4
                }
            );
        }
        // A deletion whose 5-byte key is not "hello"; 4 stray bytes follow.
        "deletion-1" => {
            assert!(matches!(
                parse_err(bytes),
                DecodeErrorKind::TrailingBytes { extra: 4, .. }
            ));
            let (frame, left) = first_frame(bytes);
            assert_eq!(left, 4);
            let Message::Deletion(d) = Message::decode(&frame).unwrap() else {
                panic!("deletion-1 decodes as a deletion");
            };
            assert_eq!((d.by_seqno, d.rev_seqno, d.delete_time), (5, 1, None));
            assert_eq!(&d.key[..], &bytes[42..47]);
            assert_ne!(&d.key[..], b"hello");
        }
        // Expiration with the deletion-v1 extras length (18, not 20).
        "expiration-1" => {
            assert!(matches!(
                parse_err(bytes),
                DecodeErrorKind::TrailingBytes { extra: 2, .. }
            ));
            let (frame, _) = first_frame(bytes);
            let err = Message::decode(&frame).unwrap_err();
            assert_eq!(
                err.kind,
                DecodeErrorKind::ExtrasLength {
                    expected: "20",
                    got: 18
                }
            );
        }
        // Mistakes in the annotation only: the bytes are what the server uses.
        "get_seqno-2" | "get_seqno-4" | "stream-request-1" | "BinaryProtocol-2"
        | "BinaryProtocol-21" => {
            check_decodes_as_documented(id, bytes, &entry["header"], &entry["decoded"]);
        }
        // The server never sends DCP_FLUSH; we decode it so a consumer can
        // name the violation.
        "flush-1" => {
            check_decodes_as_documented(id, bytes, &entry["header"], &entry["decoded"]);
            let frame = Frame::parse(bytes.clone()).unwrap();
            assert!(matches!(
                Message::decode(&frame).unwrap(),
                Message::Flush(_)
            ));
        }
        // 4 stray zero bytes after an empty noop.
        "no-op-1" => {
            assert!(matches!(
                parse_err(bytes),
                DecodeErrorKind::TrailingBytes { extra: 4, .. }
            ));
            let (frame, left) = first_frame(bytes);
            assert_eq!(left, 4);
            assert!(
                matches!(Message::decode(&frame).unwrap(), Message::DcpNoop(n) if n.opaque == 0)
            );
        }
        // body_len 0 while extras_len > 0: refused from the header.
        "oso_snapshot-1" | "seqno-advanced-1" | "snapshot-marker-1" | "snapshot-marker-2" => {
            assert!(
                matches!(parse_err(bytes), DecodeErrorKind::SectionsExceedBody { .. }),
                "{id}"
            );
            let mut buf = BytesMut::from(&bytes[..]);
            let err = FrameDecoder::new().decode(&mut buf).unwrap_err();
            assert!(matches!(
                err.kind,
                DecodeErrorKind::SectionsExceedBody { .. }
            ));
            if id == "snapshot-marker-2" {
                // Even with the annotated lengths the marker is v2.1, which
                // the server dropped.
                let mut fixed = bytes.to_vec();
                fixed[4] = 1;
                fixed[8..12].copy_from_slice(&0x25u32.to_be_bytes());
                let frame = Frame::parse(Bytes::from(fixed)).unwrap();
                let err = SnapshotMarker::decode(&frame).unwrap_err();
                assert_eq!(err.offset, 24, "{err}");
                assert!(
                    matches!(err.kind, DecodeErrorKind::InvalidField { value: 1, .. }),
                    "{err}"
                );
            } else {
                let (b, h, d) = repaired();
                check_decodes_as_documented(id, &b, &h, &d);
            }
        }
        // An old 16-byte body with extras 8: a 32-byte frame then 8 stray bytes.
        "persist_seqno-1" => {
            assert!(matches!(
                parse_err(bytes),
                DecodeErrorKind::TrailingBytes { extra: 8, .. }
            ));
            let (frame, _) = first_frame(bytes);
            assert_eq!(frame.opcode(), Opcode::SeqnoPersistence);
            assert_eq!(frame.extras(), &bytes[24..32]);
        }
        // Drawn with opcode 0x57: the server reads a mutation.
        "prepare-1" => {
            check_decodes_as_documented(id, bytes, &entry["header"], &entry["decoded"]);
        }
        // Annotation swaps scope and collection; we read as the server does.
        "system_event-1" => {
            check_decodes_as_documented(id, bytes, &entry["header"], &entry["decoded"]);
        }
        // Stray bytes after a well-formed frame.
        "BinaryProtocol-4" | "Collections-1" => {
            assert!(
                matches!(parse_err(bytes), DecodeErrorKind::TrailingBytes { .. }),
                "{id}"
            );
            let (frame, left) = first_frame(bytes);
            assert_eq!(frame.wire_len() + left, bytes.len());
        }
        _ => panic!("{id}: broken vector without an expectation"),
    }
}

#[test]
fn every_documented_frame() {
    let mut golden = 0;
    let mut broken = 0;
    for (file, count) in FILES {
        let entries = load(file);
        assert_eq!(entries.len(), count, "{file}: frame count");
        for entry in entries {
            let id = entry["id"].as_str().unwrap();
            let bytes = bytes_of(entry["hex"].as_str().unwrap());
            assert_eq!(
                bytes.len() as u64,
                entry["length"].as_u64().unwrap(),
                "{id}"
            );
            let ok = entry["consistent"] == json!(true) && entry["code_conformant"] == json!(true);
            if ok {
                check_decodes_as_documented(id, &bytes, &entry["header"], &entry["decoded"]);
                golden += 1;
            } else {
                check_broken(id, &bytes, &entry);
                broken += 1;
            }
        }
    }
    assert_eq!((golden, broken), (52, 24), "every frame checked");
}

#[test]
fn magic_table_includes_flexible_framing() {
    // The binary-protocol doc's magic table omits 0x08; the server uses it.
    for (byte, magic) in [
        (0x08, Magic::AltClientRequest),
        (0x18, Magic::AltClientResponse),
    ] {
        assert_eq!(Magic::from_u8(byte), Some(magic));
    }
}
