//! What `dcp tail` prints: a JSON line per change, and the progress line.

use base64::Engine;
use dcp_tokio::dcp_proto::consumer::{CollectionsChange, Event, ManifestView};
use dcp_tokio::dcp_proto::msg::read_leb128_u32;
use serde::Serialize;

/// Bytes as UTF-8 text when they are, else base64 (in a field named
/// `..._base64`).
#[derive(Default)]
struct Text<'a> {
    text: Option<&'a str>,
    base64: Option<String>,
}

impl<'a> Text<'a> {
    fn of(bytes: &'a [u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(text) => Text {
                text: Some(text),
                base64: None,
            },
            Err(_) => Text {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
            },
        }
    }

    fn of_nonempty(bytes: &'a [u8]) -> Self {
        if bytes.is_empty() {
            Text::default()
        } else {
            Text::of(bytes)
        }
    }
}

/// One JSON line, fields in this order.
#[derive(Serialize)]
pub(crate) struct Line<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    vbucket: u16,
    seqno: u64,
    /// The collection id (collections connections).
    #[serde(skip_serializing_if = "Option::is_none")]
    collection: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    key_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_base64: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cas: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rev_seqno: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expiry: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    delete_time: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    datatype: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    prepared_seqno: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    durability: Option<u8>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<bool>,
    /// System events: what happened.
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<&'static str>,
    /// System events: the scope.
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<u32>,
    /// System events: the manifest uid.
    #[serde(skip_serializing_if = "Option::is_none")]
    manifest_uid: Option<u64>,
    /// Collection create and modify events: the max TTL in seconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ttl: Option<u32>,
    /// Collection modify events (and creates that keep history): whether
    /// the collection keeps history.
    #[serde(skip_serializing_if = "Option::is_none")]
    history: Option<bool>,
}

impl<'a> Line<'a> {
    fn new(kind: &'static str, vbucket: u16, seqno: u64, key: &'a [u8], value: Text<'a>) -> Self {
        let key = Text::of_nonempty(key);
        Line {
            kind,
            vbucket,
            seqno,
            collection: None,
            key: key.text,
            key_base64: key.base64,
            value: value.text,
            value_base64: value.base64,
            cas: None,
            rev_seqno: None,
            flags: None,
            expiry: None,
            delete_time: None,
            datatype: None,
            prepared_seqno: None,
            durability: None,
            deleted: None,
            event: None,
            scope: None,
            manifest_uid: None,
            max_ttl: None,
            history: None,
        }
    }
}

/// The JSON line of an event on a connection that negotiated collections
/// (`collections`): keys without their collection prefix and a
/// `collection` field, and a line per system event (`begin_collection`: a
/// collection created or flushed, with its `max_ttl`; `modify_collection`
/// with its new `max_ttl` and `history`; `drop_collection`,
/// `create_scope`, `drop_scope`). Events read the same whichever value
/// version the server sent.
pub(crate) fn json_line_in(event: &Event, collections: bool) -> Option<Line<'_>> {
    if !collections {
        return json_line(event);
    }
    if let Event::SystemEvent(e, _) = event {
        let mut view = ManifestView::default();
        let change = view.apply(e).ok()?;
        let (mut max_ttl, mut history) = (None, None);
        let (name, collection, scope, uid) = match change {
            CollectionsChange::CollectionCreated {
                manifest_uid,
                scope,
                collection,
                max_ttl: ttl,
                history: keeps,
                ..
            } => {
                (max_ttl, history) = (ttl, keeps.then_some(true));
                ("begin_collection", Some(collection), scope, manifest_uid)
            }
            CollectionsChange::CollectionModified {
                manifest_uid,
                scope,
                collection,
                max_ttl: ttl,
                history: keeps,
                ..
            } => {
                (max_ttl, history) = (ttl, Some(keeps));
                ("modify_collection", Some(collection), scope, manifest_uid)
            }
            CollectionsChange::CollectionDropped {
                manifest_uid,
                scope,
                collection,
            } => ("drop_collection", Some(collection), scope, manifest_uid),
            CollectionsChange::ScopeCreated {
                manifest_uid,
                scope,
                ..
            } => ("create_scope", None, scope, manifest_uid),
            CollectionsChange::ScopeDropped {
                manifest_uid,
                scope,
            } => ("drop_scope", None, scope, manifest_uid),
            _ => return None,
        };
        return Some(Line {
            collection,
            event: Some(name),
            scope: Some(scope),
            manifest_uid: Some(uid),
            max_ttl,
            history,
            ..Line::new(
                "system_event",
                e.vbucket,
                e.by_seqno,
                &e.key,
                Text::default(),
            )
        });
    }
    let split = event.document_key(true)?;
    let mut line = json_line(event)?;
    let prefix = split_prefix_len(event)?;
    let key = Text::of_nonempty(key_of(event)?.get(prefix..)?);
    line.collection = Some(split.collection_id);
    line.key = key.text;
    line.key_base64 = key.base64;
    Some(line)
}

fn key_of(event: &Event) -> Option<&[u8]> {
    match event {
        Event::Mutation(m, _) => Some(&m.key),
        Event::Deletion(d, _) => Some(&d.key),
        Event::Expiration(e, _) => Some(&e.key),
        _ => None,
    }
}

/// Length of the LEB128 collection prefix of the event's key.
fn split_prefix_len(event: &Event) -> Option<usize> {
    let key = key_of(event)?;
    read_leb128_u32(key).ok().map(|(_, len)| len)
}

/// The JSON line of an event worth printing (changes, and rollbacks:
/// "discard this vbucket's changes above seqno").
pub(crate) fn json_line(event: &Event) -> Option<Line<'_>> {
    Some(match event {
        Event::Mutation(m, _) => Line {
            cas: Some(m.cas),
            rev_seqno: Some(m.rev_seqno),
            flags: Some(m.flags),
            expiry: Some(m.expiration),
            datatype: Some(m.datatype.bits()),
            ..Line::new(
                "mutation",
                m.vbucket,
                m.by_seqno,
                &m.key,
                Text::of(&m.value),
            )
        },
        Event::Deletion(d, _) => Line {
            cas: Some(d.cas),
            rev_seqno: Some(d.rev_seqno),
            delete_time: d.delete_time,
            ..Line::new(
                "deletion",
                d.vbucket,
                d.by_seqno,
                &d.key,
                Text::of_nonempty(&d.value),
            )
        },
        Event::Expiration(e, _) => Line {
            cas: Some(e.cas),
            rev_seqno: Some(e.rev_seqno),
            delete_time: Some(e.delete_time),
            ..Line::new("expiration", e.vbucket, e.by_seqno, &e.key, Text::default())
        },
        Event::Rollback { vbucket, seqno, .. } => {
            Line::new("rollback", *vbucket, *seqno, &[], Text::default())
        }
        Event::Prepare(p, _) => Line {
            cas: Some(p.cas),
            rev_seqno: Some(p.rev_seqno),
            flags: Some(p.flags),
            expiry: Some(p.expiration),
            datatype: Some(p.datatype.bits()),
            durability: Some(p.durability.to_u8()),
            deleted: Some(p.deleted),
            ..Line::new(
                "prepare",
                p.vbucket,
                p.by_seqno,
                &p.key,
                Text::of_nonempty(&p.value),
            )
        },
        Event::Commit(c, _) => Line {
            prepared_seqno: Some(c.prepared_seqno),
            ..Line::new("commit", c.vbucket, c.commit_seqno, &c.key, Text::default())
        },
        Event::Abort(a, _) => Line {
            prepared_seqno: Some(a.prepared_seqno),
            ..Line::new("abort", a.vbucket, a.abort_seqno, &a.key, Text::default())
        },
        _ => return None,
    })
}

/// Wire bytes of a change (key + value + header), for MB/s.
pub(crate) fn change_size(event: &Event) -> Option<usize> {
    match event {
        Event::Mutation(m, _) => Some(m.key.len() + m.value.len()),
        Event::Deletion(d, _) => Some(d.key.len() + d.value.len()),
        Event::Expiration(e, _) => Some(e.key.len() + e.value.len()),
        Event::Prepare(p, _) => Some(p.key.len() + p.value.len()),
        Event::Commit(c, _) => Some(c.key.len()),
        Event::Abort(a, _) => Some(a.key.len()),
        _ => None,
    }
}

/// A byte count for people: `812 B`, `12.3 kB`, `4.5 MB`.
pub(crate) fn bytes(n: u64) -> String {
    let n = n as f64;
    if n < 1e3 {
        format!("{n} B")
    } else if n < 1e6 {
        format!("{:.1} kB", n / 1e3)
    } else if n < 1e9 {
        format!("{:.1} MB", n / 1e6)
    } else {
        format!("{:.2} GB", n / 1e9)
    }
}

/// `1234567` as `1,234,567`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
    }

    #[test]
    fn collections_lines_carry_the_collection() {
        use bytes::Bytes;
        use dcp_tokio::dcp_proto::codec::Datatype;
        use dcp_tokio::dcp_proto::consumer::Credit;
        use dcp_tokio::dcp_proto::msg::{
            CollectionDetails, Mutation, SystemEvent, SystemEventData, SystemEventId,
        };
        let m = Mutation {
            vbucket: 1,
            opaque: 1,
            stream_id: None,
            cas: 5,
            datatype: Datatype::RAW,
            by_seqno: 4,
            rev_seqno: 1,
            flags: 0,
            expiration: 0,
            lock_time: 0,
            nru: 0,
            key: Bytes::from_static(b"\x08k"),
            value: Bytes::from_static(b"v"),
        };
        let event = Event::Mutation(m, Credit::NONE);
        let line = serde_json::to_value(json_line_in(&event, true).unwrap()).unwrap();
        assert_eq!(
            (line["collection"].as_u64(), line["key"].as_str()),
            (Some(8), Some("k"))
        );
        let e = SystemEvent {
            vbucket: 1,
            opaque: 1,
            stream_id: None,
            by_seqno: 3,
            event: SystemEventId::BeginCollection,
            version: 0,
            key: Bytes::from_static(b"hotels"),
            value: Bytes::from_static(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 8, 0, 0, 0, 9]),
        };
        let event = Event::SystemEvent(e, Credit::NONE);
        let line = json_line_in(&event, true).unwrap();
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"type":"system_event","vbucket":1,"seqno":3,"collection":9,"key":"hotels","event":"begin_collection","scope":8,"manifest_uid":2}"#
        );
        // A FlatBuffers modify event.
        let modify = SystemEventData::ModifyCollection(CollectionDetails::new(
            3,
            8,
            9,
            Bytes::from_static(b"hotels"),
            Some(60),
        ));
        let e = SystemEvent::from_data(1, 1, None, 4, &modify, true).unwrap();
        let event = Event::SystemEvent(e, Credit::NONE);
        let line = json_line_in(&event, true).unwrap();
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"type":"system_event","vbucket":1,"seqno":4,"collection":9,"key":"hotels","event":"modify_collection","scope":8,"manifest_uid":3,"max_ttl":60,"history":false}"#
        );
    }

    #[test]
    fn binary_values_are_base64() {
        let line = Line::new("mutation", 3, 9, b"k", Text::of(&[0xff, 0x00]));
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"type":"mutation","vbucket":3,"seqno":9,"key":"k","value_base64":"/wA="}"#
        );
    }
}
