//! Logging conventions: the core emits [`tracing`] events (never prints),
//! and marks user data the way Couchbase Server does.
//!
//! # What is logged
//!
//! Targets are module paths (`dcp_proto::consumer`, ...). Levels:
//! - `error`/`warn`: a connection failed (dead connection, protocol
//!   violation, handshake failure), a stream request was refused, a
//!   snapshot exceeded the consistent-delivery limit;
//! - `info`: handshake complete, stream opened, rollback, stream ended;
//! - `debug`: each handshake step, stream requests and their positions,
//!   flow-control stalls (the window is full until the application acks),
//!   snapshots held, completed or discarded;
//! - `trace`: every change (vbucket, seqno, key as user data).
//!
//! Every stream event carries a `vb` field; the adapters wrap each
//! connection in a span (`dcp.connection` with `name` and `peer`).
//!
//! # User data
//!
//! Document keys are user data: they are logged through [`UserData`],
//! which writes `<ud>…</ud>`-tagged text (the tags let log-redaction tools
//! find them). By default the content is withheld (`<ud>[7 bytes]</ud>`);
//! [`ConsumerConfig::log_keys`](crate::consumer::ConsumerConfig::log_keys)
//! shows keys (`<ud>user::42</ud>`). Document values are never logged.

use core::fmt;

/// A document key (or other user data) for a log field: shown only when
/// allowed, always inside `<ud>` tags.
#[derive(Clone, Copy)]
pub struct UserData<'a> {
    bytes: &'a [u8],
    show: bool,
}

impl<'a> UserData<'a> {
    /// `bytes`, shown as text only if `show`.
    pub fn new(bytes: &'a [u8], show: bool) -> Self {
        Self { bytes, show }
    }

    /// Withheld: only the length is written.
    pub fn redacted(bytes: &'a [u8]) -> Self {
        Self::new(bytes, false)
    }
}

impl fmt::Display for UserData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.show {
            return write!(f, "<ud>[{} bytes]</ud>", self.bytes.len());
        }
        f.write_str("<ud>")?;
        for chunk in self.bytes.utf8_chunks() {
            for c in chunk.valid().chars() {
                // Keep one event on one line, and the tags unambiguous.
                if c.is_control() || c == '<' || c == '>' {
                    write!(f, "\\u{{{:x}}}", u32::from(c))?;
                } else {
                    write!(f, "{c}")?;
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        f.write_str("</ud>")
    }
}

impl fmt::Debug for UserData<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The key of a change event, if it has one.
pub(crate) fn key_of(event: &crate::consumer::Event) -> Option<&[u8]> {
    use crate::consumer::Event;
    Some(match event {
        Event::Mutation(m, _) => &m.key,
        Event::Deletion(m, _) => &m.key,
        Event::Expiration(m, _) => &m.key,
        Event::Prepare(m, _) => &m.key,
        Event::Commit(m, _) => &m.key,
        Event::Abort(m, _) => &m.key,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn withheld_unless_shown() {
        assert_eq!(
            UserData::redacted(b"secret-key").to_string(),
            "<ud>[10 bytes]</ud>"
        );
        assert_eq!(
            UserData::new(b"user::1", true).to_string(),
            "<ud>user::1</ud>"
        );
        assert_eq!(
            UserData::new(b"a\n<b>\xff", true).to_string(),
            "<ud>a\\u{a}\\u{3c}b\\u{3e}\\xff</ud>"
        );
    }
}
