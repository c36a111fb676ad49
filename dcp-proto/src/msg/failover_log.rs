//! The failover log: a vbucket's history branches as `(vbucket_uuid, seqno)`
//! pairs, newest first. It is the value of a successful DCP_STREAM_REQ
//! response and of GET_FAILOVER_LOG responses (0x54 and 0x96).

use bytes::BufMut;
use serde::{Deserialize, Serialize};

use crate::codec::DecodeErrorKind;
use crate::msg::check::be_u64;

/// Bytes per failover-log entry on the wire (`u64 vbucket_uuid, u64 seqno`).
pub const FAILOVER_ENTRY_LEN: usize = 16;

/// One failover-log entry: a vbucket uuid and the seqno its branch starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FailoverEntry {
    /// The vbucket uuid of this history branch.
    pub vbucket_uuid: u64,
    /// The seqno at which the branch was created.
    pub seqno: u64,
}

/// A failover log, newest entry first (the order the server sends).
///
/// Serializes transparently as the list of entries, e.g.
/// `[{"vbucket_uuid":1,"seqno":0}]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FailoverLog {
    /// The entries, newest first.
    pub entries: Vec<FailoverEntry>,
}

impl FailoverLog {
    /// A log of `entries` (newest first).
    pub fn new(entries: Vec<FailoverEntry>) -> Self {
        Self { entries }
    }

    /// Parses a failover-log value: repeated 16-byte entries.
    ///
    /// An empty value is an empty log. A length that is not a multiple of 16
    /// fails with [`DecodeErrorKind::ValueLength`]; message decoders wrap it
    /// with the frame's value offset.
    ///
    /// ```
    /// use dcp_proto::msg::FailoverLog;
    /// let value = [0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 100];
    /// let log = FailoverLog::decode_value(&value)?;
    /// assert_eq!(log.newest().map(|e| (e.vbucket_uuid, e.seqno)), Some((9, 100)));
    /// # Ok::<(), dcp_proto::codec::DecodeErrorKind>(())
    /// ```
    pub fn decode_value(value: &[u8]) -> Result<FailoverLog, DecodeErrorKind> {
        if !value.len().is_multiple_of(FAILOVER_ENTRY_LEN) {
            return Err(DecodeErrorKind::ValueLength {
                expected: "a multiple of 16",
                got: value.len(),
            });
        }
        let entries = value
            .chunks_exact(FAILOVER_ENTRY_LEN)
            .map(|entry| FailoverEntry {
                vbucket_uuid: be_u64(entry, 0),
                seqno: be_u64(entry, 8),
            })
            .collect();
        Ok(FailoverLog { entries })
    }

    /// Appends the wire form (16 bytes per entry, in order) to `buf`.
    pub fn put_value<B: BufMut>(&self, buf: &mut B) {
        for entry in &self.entries {
            buf.put_u64(entry.vbucket_uuid);
            buf.put_u64(entry.seqno);
        }
    }

    /// Length of the wire form in bytes.
    pub fn value_len(&self) -> usize {
        self.entries.len() * FAILOVER_ENTRY_LEN
    }

    /// The newest entry (the current branch), if any.
    pub fn newest(&self) -> Option<&FailoverEntry> {
        self.entries.first()
    }

    /// The oldest entry, if any.
    pub fn oldest(&self) -> Option<&FailoverEntry> {
        self.entries.last()
    }

    /// Iterates the entries, newest first.
    pub fn iter(&self) -> core::slice::Iter<'_, FailoverEntry> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl From<Vec<FailoverEntry>> for FailoverLog {
    fn from(entries: Vec<FailoverEntry>) -> Self {
        Self { entries }
    }
}

impl FromIterator<FailoverEntry> for FailoverLog {
    fn from_iter<I: IntoIterator<Item = FailoverEntry>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
        }
    }
}

impl<'a> IntoIterator for &'a FailoverLog {
    type Item = &'a FailoverEntry;
    type IntoIter = core::slice::Iter<'a, FailoverEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.iter()
    }
}

impl IntoIterator for FailoverLog {
    type Item = FailoverEntry;
    type IntoIter = std::vec::IntoIter<FailoverEntry>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The four entries of the docs' failover-log and stream-request examples.
    const DOC_LOG_HEX: &str = "00000000feeddeca00000000000054320000000000decafe0000000001343214\
                                          00000000feedface000000000000000400000000deadbeef0000000000006524";

    fn doc_log() -> FailoverLog {
        [
            (0xfeed_deca, 0x5432),
            (0x00de_cafe, 0x0134_3214),
            (0xfeed_face, 4),
            (0xdead_beef, 0x6524),
        ]
        .into_iter()
        .map(|(vbucket_uuid, seqno)| FailoverEntry {
            vbucket_uuid,
            seqno,
        })
        .collect()
    }

    #[test]
    fn decodes_and_encodes_the_doc_log() {
        let bytes = hex::decode(DOC_LOG_HEX).unwrap();
        let log = FailoverLog::decode_value(&bytes).unwrap();
        assert_eq!(log, doc_log());
        assert_eq!(log.len(), 4);
        assert_eq!(log.newest().unwrap().seqno, 0x5432);
        assert_eq!(log.oldest().unwrap().vbucket_uuid, 0xdead_beef);
        assert_eq!(
            log.iter().map(|e| e.seqno).sum::<u64>(),
            0x5432 + 0x0134_3214 + 4 + 0x6524
        );
        let mut out = Vec::new();
        log.put_value(&mut out);
        assert_eq!(out, bytes);
        assert_eq!(log.value_len(), bytes.len());
    }

    #[test]
    fn empty_value_is_an_empty_log() {
        let log = FailoverLog::decode_value(&[]).unwrap();
        assert!(log.is_empty());
        assert_eq!(log.newest(), None);
    }

    #[test]
    fn rejects_partial_entries() {
        for len in [1, 8, 15, 17, 31] {
            assert_eq!(
                FailoverLog::decode_value(&vec![0; len]).unwrap_err(),
                DecodeErrorKind::ValueLength {
                    expected: "a multiple of 16",
                    got: len
                }
            );
        }
    }

    #[test]
    fn serde_round_trip() {
        let log = doc_log();
        let json = serde_json::to_string(&log).unwrap();
        assert!(json.starts_with(r#"[{"vbucket_uuid":4277001930,"seqno":21554}"#));
        assert_eq!(serde_json::from_str::<FailoverLog>(&json).unwrap(), log);
        let entry: FailoverEntry =
            serde_json::from_str(r#"{"vbucket_uuid":18446744073709551615,"seqno":1}"#).unwrap();
        assert_eq!(entry.vbucket_uuid, u64::MAX);
    }
}
