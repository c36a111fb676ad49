//! Server-initiated requests (magic 0x82, HELLO Duplex): the cluster-map
//! change notification a node pushes when its bucket config changes.
//!
//! Server opcodes are a namespace of their own: 0x01 here is
//! ClustermapChangeNotification, not SET. The client does not answer it.

use bytes::{BufMut, Bytes, BytesMut};

use super::cluster_config::KnownVersion;
use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Magic, Opcode,
};
use crate::msg::check::{be_u32, be_u64};

/// Server opcode 0x01: ClustermapChangeNotification.
pub const CLUSTERMAP_CHANGE_NOTIFICATION: u8 = 0x01;

/// A cluster-map change notification (server request 0x82/0x01), pushed to
/// connections that negotiated HELLO Duplex with
/// ClustermapChangeNotification (full form: the config JSON) or
/// ClustermapChangeNotificationBrief (brief form: only the version).
///
/// Extras: `i64 epoch, i64 revision` (16 bytes); servers before epochs sent
/// a `u32` revision (4 bytes), read here as epoch 0. Key: the bucket name
/// (may be empty in the brief form). Value: the config JSON (datatype JSON,
/// possibly Snappy), empty in the brief form. Opaque and CAS are 0; no
/// response is expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClustermapNotification {
    /// The version of the pushed config.
    pub version: KnownVersion,
    /// The bucket the config describes.
    pub bucket: Bytes,
    /// Datatype of `config`.
    pub datatype: Datatype,
    /// The config JSON; empty in the brief form.
    pub config: Bytes,
}

impl ClustermapNotification {
    /// A full notification carrying `config`.
    pub fn full(version: KnownVersion, bucket: impl Into<Bytes>, config: impl Into<Bytes>) -> Self {
        Self {
            version,
            bucket: bucket.into(),
            datatype: Datatype::JSON,
            config: config.into(),
        }
    }

    /// A brief notification: the version only.
    pub fn brief(version: KnownVersion) -> Self {
        Self {
            version,
            bucket: Bytes::new(),
            datatype: Datatype::RAW,
            config: Bytes::new(),
        }
    }

    /// Whether this is the brief form (no config attached).
    pub fn is_brief(&self) -> bool {
        self.config.is_empty()
    }

    /// Whether `frame` is a server request with this opcode.
    pub fn matches(frame: &Frame) -> bool {
        frame.magic() == Magic::ServerRequest
            && frame.opcode().raw() == CLUSTERMAP_CHANGE_NOTIFICATION
    }

    /// Decodes a notification frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        if frame.magic() != Magic::ServerRequest {
            return Err(frame.error(
                DecodeErrorKind::UnexpectedMagic {
                    expected: "server request",
                    got: frame.magic(),
                },
                0,
            ));
        }
        if frame.opcode().raw() != CLUSTERMAP_CHANGE_NOTIFICATION {
            return Err(frame.error(DecodeErrorKind::UnsupportedOpcode, 1));
        }
        let extras = frame.extras();
        let version = match extras.len() {
            16 => KnownVersion {
                epoch: be_u64(extras, 0).cast_signed(),
                revision: be_u64(extras, 8).cast_signed(),
            },
            4 => KnownVersion {
                epoch: 0,
                revision: i64::from(be_u32(extras, 0)),
            },
            _ => {
                return Err(frame.error(
                    DecodeErrorKind::ExtrasLength {
                        expected: "16 (or 4)",
                        got: frame.header().extras_len,
                    },
                    4,
                ));
            }
        };
        Ok(Self {
            version,
            bucket: frame.key(),
            datatype: frame.datatype(),
            config: frame.value(),
        })
    }

    /// Appends the frame (magic 0x82, opaque 0) to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; 16];
        let mut w = extras.as_mut_slice();
        w.put_i64(self.version.epoch);
        w.put_i64(self.version.revision);
        let mut head = FrameHead::request(Opcode::from_raw(CLUSTERMAP_CHANGE_NOTIFICATION), 0, 0)
            .with_datatype(self.datatype);
        head.magic = Magic::ServerRequest;
        head.encode(buf, &[], &extras, &self.bucket, &self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &ClustermapNotification) -> Frame {
        let mut buf = BytesMut::new();
        msg.encode(&mut buf).unwrap();
        Frame::parse(buf.freeze()).unwrap()
    }

    #[test]
    fn brief_form_matches_the_documented_bytes() {
        // The example drawn in the SDK RFC for the brief notification.
        let version = KnownVersion {
            epoch: 0x42,
            revision: 0x0102_0304_0506_0708,
        };
        let f = frame(&ClustermapNotification::brief(version));
        let mut expected = vec![0x82, 0x01, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0x10];
        expected.extend_from_slice(&[0; 12]);
        expected.extend_from_slice(&0x42u64.to_be_bytes());
        expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_be_bytes());
        assert_eq!(&f.as_bytes()[..], &expected[..]);
        let back = ClustermapNotification::decode(&f).unwrap();
        assert!(back.is_brief());
        assert_eq!(back.version, version);
        assert!(ClustermapNotification::matches(&f));
    }

    #[test]
    fn full_form_round_trips() {
        let msg = ClustermapNotification::full(
            KnownVersion {
                epoch: 1,
                revision: 9,
            },
            Bytes::from_static(b"default"),
            Bytes::from_static(br#"{"rev":9}"#),
        );
        let f = frame(&msg);
        assert_eq!(f.datatype(), Datatype::JSON);
        assert_eq!(f.key_slice(), b"default");
        assert_eq!(ClustermapNotification::decode(&f).unwrap(), msg);
        assert!(!msg.is_brief());
    }

    #[test]
    fn legacy_four_byte_revision() {
        let mut buf = BytesMut::new();
        let mut head = FrameHead::request(Opcode::from_raw(1), 0, 0).with_datatype(Datatype::JSON);
        head.magic = Magic::ServerRequest;
        head.encode(&mut buf, &[], &7u32.to_be_bytes(), b"b", b"{}")
            .unwrap();
        let f = Frame::parse(buf.freeze()).unwrap();
        let msg = ClustermapNotification::decode(&f).unwrap();
        assert_eq!(
            msg.version,
            KnownVersion {
                epoch: 0,
                revision: 7
            }
        );
    }

    #[test]
    fn rejects_other_magic_opcode_and_extras() {
        let mut buf = BytesMut::new();
        FrameHead::request(Opcode::from_raw(1), 0, 0)
            .encode(&mut buf, &[], &[0; 16], &[], &[])
            .unwrap();
        let client = Frame::parse(buf.split().freeze()).unwrap();
        assert!(ClustermapNotification::decode(&client).is_err());
        assert!(!ClustermapNotification::matches(&client));

        let mut head = FrameHead::request(Opcode::from_raw(2), 0, 0);
        head.magic = Magic::ServerRequest;
        head.encode(&mut buf, &[], &[0; 16], &[], &[]).unwrap();
        let other = Frame::parse(buf.split().freeze()).unwrap();
        assert!(ClustermapNotification::decode(&other).is_err());

        let mut head = FrameHead::request(Opcode::from_raw(1), 0, 0);
        head.magic = Magic::ServerRequest;
        head.encode(&mut buf, &[], &[0; 8], &[], &[]).unwrap();
        let short = Frame::parse(buf.split().freeze()).unwrap();
        assert!(matches!(
            ClustermapNotification::decode(&short).unwrap_err().kind,
            DecodeErrorKind::ExtrasLength { .. }
        ));
    }
}
