//! HELLO (0x1f): names the client and negotiates protocol features.

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status, code_enum,
};
use crate::msg::check::{self, be_u16};
use crate::msg::status_response::{body_datatype, invalid};

code_enum! {
    /// A HELLO feature code.
    pub enum HelloFeature: u16 {
        /// 0x01: formerly Datatype; invalid, never granted.
        Invalid01 = 0x01,
        /// 0x02: TLS (never implemented).
        Tls = 0x02,
        /// 0x03: TCP_NODELAY (informational).
        TcpNoDelay = 0x03,
        /// 0x04: mutation responses carry vbucket uuid and seqno.
        MutationSeqno = 0x04,
        /// 0x05: TCP delay (unsupported).
        TcpDelay = 0x05,
        /// 0x06: extended attributes (datatype XATTR).
        Xattr = 0x06,
        /// 0x07: extended error codes and JSON error bodies; without it the
        /// server disconnects instead of sending newer status codes.
        Xerror = 0x07,
        /// 0x08: SELECT_BUCKET.
        SelectBucket = 0x08,
        /// 0x09: invalid, never granted.
        Invalid09 = 0x09,
        /// 0x0a: Snappy-compressed values (datatype SNAPPY).
        Snappy = 0x0a,
        /// 0x0b: datatype JSON.
        Json = 0x0b,
        /// 0x0c: server-initiated requests (magic 0x82/0x83).
        Duplex = 0x0c,
        /// 0x0d: the server pushes cluster-map change notifications.
        ClustermapChangeNotification = 0x0d,
        /// 0x0e: out-of-order responses (DCP refuses to run with it).
        UnorderedExecution = 0x0e,
        /// 0x0f: server durations in response framing extras.
        Tracing = 0x0f,
        /// 0x10: requests with framing extras (magic 0x08).
        AltRequestSupport = 0x10,
        /// 0x11: synchronous replication (durable writes).
        SyncReplication = 0x11,
        /// 0x12: collections (collection-id key prefixes, system events).
        Collections = 0x12,
        /// 0x13: Snappy everywhere.
        SnappyEverywhere = 0x13,
        /// 0x14: preserve TTL.
        PreserveTtl = 0x14,
        /// 0x15: virtual attributes.
        VAttr = 0x15,
        /// 0x16: invalid, never granted.
        Invalid16 = 0x16,
        /// 0x17: subdoc create-as-deleted.
        SubdocCreateAsDeleted = 0x17,
        /// 0x18: subdoc document macros.
        SubdocDocumentMacroSupport = 0x18,
        /// 0x19: subdoc replace body with xattr.
        SubdocReplaceBodyWithXattr = 0x19,
        /// 0x1a: read/write unit usage in response framing extras.
        ReportUnitUsage = 0x1a,
        /// 0x1b: non-blocking throttling.
        NonBlockingThrottlingMode = 0x1b,
        /// 0x1c: subdoc replica reads.
        SubdocReplicaRead = 0x1c,
        /// 0x1d: GET_CLUSTER_CONFIG with a known version.
        GetClusterConfigWithKnownVersion = 0x1d,
        /// 0x1e: NotMyVbucket bodies omit an already-sent cluster map.
        DedupeNotMyVbucketClustermap = 0x1e,
        /// 0x1f: brief cluster-map change notifications.
        ClustermapChangeNotificationBrief = 0x1f,
        /// 0x20: subdoc access to several xattr keys.
        SubdocAllowsAccessOnMultipleXattrKeys = 0x20,
        /// 0x21: subdoc binary xattrs.
        SubdocBinaryXattr = 0x21,
        /// 0x22: range scans include xattrs.
        RangeScanIncludeXattr = 0x22,
        /// 0x23: subdoc replica reads of deleted documents.
        SubdocAllowReplicaReadOnDeletedDocs = 0x23,
        /// 0x24: GET_RANDOM_KEY includes xattrs.
        GetRandomKeyIncludeXattr = 0x24,
        /// 0x25: mutations with metadata.
        MutateWithMeta = 0x25,
        /// 0x26: the server supports the DCP_OPEN flag
        /// SkipDeletesInInitialBackfill (informational).
        DcpSkipDeletesInInitialBackfill = 0x26,
    }
}

/// Parses a HELLO value: a list of big-endian u16 feature codes.
fn decode_features(frame: &Frame) -> Result<Vec<HelloFeature>, DecodeError> {
    let value = frame.value_slice();
    if !value.len().is_multiple_of(2) {
        return Err(frame.error(
            DecodeErrorKind::ValueLength {
                expected: "an even number of bytes",
                got: value.len(),
            },
            frame.header().value_offset(),
        ));
    }
    Ok(value
        .chunks_exact(2)
        .map(|code| HelloFeature::from_raw(be_u16(code, 0)))
        .collect())
}

/// Appends a frame whose value is the feature list.
fn encode_features(
    head: FrameHead,
    buf: &mut BytesMut,
    key: &[u8],
    features: &[HelloFeature],
) -> Result<(), EncodeError> {
    head.encode_head(buf, &[], &[], key, features.len() * 2)?;
    for feature in features {
        buf.put_u16(feature.raw());
    }
    Ok(())
}

/// HELLO: the client's name and the features it asks for.
///
/// The key is the agent name, or JSON `{"a":"agent","i":"connection id"}`
/// (may be empty); the value is the list of u16 feature codes. No extras,
/// CAS 0, datatype raw; the vbucket is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Agent name or JSON agent/connection-id object.
    pub agent: Bytes,
    /// Requested features, in order.
    pub features: Vec<HelloFeature>,
}

impl Hello {
    /// Decodes a HELLO request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::Hello)?;
        check::zero_cas(frame)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
            agent: frame.key(),
            features: decode_features(frame)?,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_features(
            FrameHead::request(Opcode::Hello, 0, self.opaque),
            buf,
            &self.agent,
            &self.features,
        )
    }
}

/// The response to HELLO: the features the server granted.
///
/// On success the value is the granted feature list; on error the list is
/// empty and the body is kept in `error_body`. No extras, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelloResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// Granted features (a subset of those asked for).
    pub features: Vec<HelloFeature>,
    /// The body of an error response; always empty on success.
    pub error_body: Bytes,
}

impl HelloResponse {
    /// A success response granting `features`.
    pub fn success(opaque: u32, features: Vec<HelloFeature>) -> Self {
        Self {
            status: Status::Success,
            opaque,
            features,
            error_body: Bytes::new(),
        }
    }

    /// Whether `feature` was granted.
    pub fn has(&self, feature: HelloFeature) -> bool {
        self.features.contains(&feature)
    }

    /// Decodes a HELLO response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::Hello)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        let status = frame.status();
        let (features, error_body) = if status.is_success() {
            (decode_features(frame)?, Bytes::new())
        } else {
            (Vec::new(), frame.value())
        };
        Ok(Self {
            status,
            opaque: frame.opaque(),
            features,
            error_body,
        })
    }

    /// Appends the frame to `buf`.
    ///
    /// Fails for an error response with features or a success with an
    /// error body.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let head = FrameHead::response(Opcode::Hello, self.status, self.opaque);
        if self.status.is_success() {
            if !self.error_body.is_empty() {
                return Err(invalid("error_body", "a success response has no body"));
            }
            encode_features(head, buf, &[], &self.features)
        } else {
            if !self.features.is_empty() {
                return Err(invalid("features", "an error response grants no features"));
            }
            head.with_datatype(body_datatype(&self.error_body)).encode(
                buf,
                &[],
                &[],
                &[],
                &self.error_body,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, Magic};
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    #[test]
    fn feature_codes() {
        assert_eq!(HelloFeature::from_raw(0x12), HelloFeature::Collections);
        assert_eq!(HelloFeature::Xerror.raw(), 0x07);
        assert_eq!(
            HelloFeature::from_raw(0x26),
            HelloFeature::DcpSkipDeletesInInitialBackfill
        );
        assert_eq!(HelloFeature::from_raw(0x27), HelloFeature::Unknown(0x27));
        for raw in 0x01..=0x26 {
            assert!(HelloFeature::from_raw(raw).name().is_some(), "{raw:#x}");
        }
        assert_eq!(
            HelloFeature::AltRequestSupport.to_string(),
            "AltRequestSupport(0x10)"
        );
    }

    #[test]
    fn round_trip() {
        for msg in [
            Hello {
                opaque: 1,
                agent: Bytes::from_static(br#"{"a":"dcp-rs/0.1","i":"00000000/00000001"}"#),
                features: vec![
                    HelloFeature::Xerror,
                    HelloFeature::SelectBucket,
                    HelloFeature::Collections,
                    HelloFeature::Unknown(0xbeef),
                ],
            },
            Hello {
                opaque: 2,
                agent: Bytes::new(),
                features: Vec::new(),
            },
        ] {
            assert_eq!(Hello::decode(&encoded(|buf| msg.encode(buf))).unwrap(), msg);
        }
        for msg in [
            HelloResponse::success(1, vec![HelloFeature::Json, HelloFeature::Unknown(0x7777)]),
            HelloResponse {
                status: Status::Einval,
                opaque: 2,
                features: Vec::new(),
                error_body: Bytes::from_static(br#"{"error":{"context":"bad"}}"#),
            },
        ] {
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.datatype().is_json(), !msg.error_body.is_empty());
            assert_eq!(HelloResponse::decode(&frame).unwrap(), msg);
        }
    }

    #[test]
    fn doc_vectors() {
        // BinaryProtocol-18: "mchello v1.0" asking for 0x01..=0x05.
        let hex = "801f000c00000000000000160000000000000000000000006d6368656c6c6f2076312e30\
                   00010002000300040005";
        let msg = Hello::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            Hello {
                opaque: 0,
                agent: Bytes::from_static(b"mchello v1.0"),
                features: vec![
                    HelloFeature::Invalid01,
                    HelloFeature::Tls,
                    HelloFeature::TcpNoDelay,
                    HelloFeature::MutationSeqno,
                    HelloFeature::TcpDelay,
                ],
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);

        // BinaryProtocol-19: TcpNoDelay and MutationSeqno granted.
        let hex = "811f0000000000000000000400000000000000000000000000030004";
        let msg = HelloResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            HelloResponse::success(
                0,
                vec![HelloFeature::TcpNoDelay, HelloFeature::MutationSeqno]
            )
        );
        assert!(msg.has(HelloFeature::MutationSeqno));
        assert!(!msg.has(HelloFeature::Xerror));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::Hello, 0, 1);
        rejects(
            Hello::decode(&raw(
                FrameHead::response(Opcode::Hello, Status::Success, 1),
                &[],
                &[],
                b"a",
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            Hello::decode(&raw(
                FrameHead::request(Opcode::SaslAuth, 0, 1),
                &[],
                &[],
                b"a",
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::Hello,
                got: Opcode::SaslAuth,
            },
            1,
        );
        rejects(
            Hello::decode(&raw(head.with_cas(1), &[], &[], b"a", &[])),
            DecodeErrorKind::NonZeroCas(1),
            16,
        );
        rejects(
            Hello::decode(&raw(
                head.with_datatype(Datatype::JSON),
                &[],
                &[],
                b"a",
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            Hello::decode(&raw(head, &[], &[0; 2], b"a", &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 2,
            },
            4,
        );
        rejects(
            Hello::decode(&raw(head, &[], &[], b"agent", &[0, 7, 0])),
            DecodeErrorKind::ValueLength {
                expected: "an even number of bytes",
                got: 3,
            },
            29,
        );
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::Hello, Status::Success, 1);
        rejects(
            HelloResponse::decode(&raw(
                FrameHead::request(Opcode::Hello, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "response",
                got: Magic::ClientRequest,
            },
            0,
        );
        rejects(
            HelloResponse::decode(&raw(ok.with_datatype(Datatype(0x20)), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(0x20),
            5,
        );
        rejects(
            HelloResponse::decode(&raw(ok, &[], &[0; 2], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 2,
            },
            4,
        );
        rejects(
            HelloResponse::decode(&raw(ok, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            HelloResponse::decode(&raw(ok, &[], &[], &[], &[0])),
            DecodeErrorKind::ValueLength {
                expected: "an even number of bytes",
                got: 1,
            },
            24,
        );
    }

    #[test]
    fn response_encode_rejects_inconsistent_fields() {
        let mut buf = BytesMut::new();
        let mut msg = HelloResponse::success(1, vec![HelloFeature::Json]);
        msg.status = Status::Einval;
        assert!(msg.encode(&mut buf).is_err());
        let mut msg = HelloResponse::success(1, Vec::new());
        msg.error_body = Bytes::from_static(b"x");
        assert!(msg.encode(&mut buf).is_err());
        assert!(buf.is_empty());
    }
}
