//! What `dcp tail` prints: a JSON line per change, and the progress line.

use base64::Engine;
use dcp_tokio::dcp_proto::consumer::Event;
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
}

impl<'a> Line<'a> {
    fn new(kind: &'static str, vbucket: u16, seqno: u64, key: &'a [u8], value: Text<'a>) -> Self {
        let key = Text::of_nonempty(key);
        Line {
            kind,
            vbucket,
            seqno,
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
        }
    }
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
        Event::Rollback { vbucket, seqno } => {
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
    fn binary_values_are_base64() {
        let line = Line::new("mutation", 3, 9, b"k", Text::of(&[0xff, 0x00]));
        assert_eq!(
            serde_json::to_string(&line).unwrap(),
            r#"{"type":"mutation","vbucket":3,"seqno":9,"key":"k","value_base64":"/wA="}"#
        );
    }
}
