//! GET_CLUSTER_CONFIG (0xb5): the cluster map (bucket configuration JSON).

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{
    Datatype, DecodeError, DecodeErrorKind, EncodeError, Frame, FrameHead, Opcode, Status,
};
use crate::msg::check::{self, be_u64};

/// A cluster-map version: epoch, then revision (ordered that way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KnownVersion {
    /// The configuration epoch.
    pub epoch: i64,
    /// The revision within the epoch.
    pub revision: i64,
}

/// GET_CLUSTER_CONFIG: asks for the cluster map; with `known`, the server
/// sends a map only if it is newer (needs the HELLO feature
/// GetClusterConfigWithKnownVersion).
///
/// Extras are 0 bytes, or 16 (`i64 epoch, i64 revision`); no key, no value;
/// CAS 0; the vbucket is not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetClusterConfig {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// The version the client already has.
    pub known: Option<KnownVersion>,
}

impl GetClusterConfig {
    /// Decodes a GET_CLUSTER_CONFIG request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::GetClusterConfig)?;
        check::zero_cas(frame)?;
        check::raw_datatype(frame)?;
        let extras = frame.extras();
        let known = match extras.len() {
            0 => None,
            16 => Some(KnownVersion {
                epoch: be_u64(extras, 0).cast_signed(),
                revision: be_u64(extras, 8).cast_signed(),
            }),
            _ => {
                return Err(frame.error(
                    DecodeErrorKind::ExtrasLength {
                        expected: "0 or 16",
                        got: frame.header().extras_len,
                    },
                    4,
                ));
            }
        };
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
            known,
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let mut extras = [0u8; 16];
        let extras: &[u8] = match self.known {
            None => &[],
            Some(known) => {
                let mut w = extras.as_mut_slice();
                w.put_i64(known.epoch);
                w.put_i64(known.revision);
                &extras
            }
        };
        FrameHead::request(Opcode::GetClusterConfig, 0, self.opaque).encode(
            buf,
            &[],
            extras,
            &[],
            &[],
        )
    }
}

/// The response to GET_CLUSTER_CONFIG: the cluster map JSON (datatype JSON,
/// possibly Snappy), empty when the client's known version is current, or
/// an error body. No extras, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetClusterConfigResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// Datatype of `config`.
    pub datatype: Datatype,
    /// The cluster map (or the error body).
    pub config: Bytes,
}

impl GetClusterConfigResponse {
    /// Decodes a GET_CLUSTER_CONFIG response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::GetClusterConfig)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        Ok(Self {
            status: frame.status(),
            opaque: frame.opaque(),
            datatype: frame.datatype(),
            config: frame.value(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::response(Opcode::GetClusterConfig, self.status, self.opaque)
            .with_datatype(self.datatype)
            .encode(buf, &[], &[], &[], &self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Magic;
    use crate::msg::status_response::testing::{encoded, raw, rejects};

    #[test]
    fn round_trip() {
        for known in [
            None,
            Some(KnownVersion {
                epoch: -1,
                revision: i64::MAX,
            }),
        ] {
            let msg = GetClusterConfig { opaque: 4, known };
            let frame = encoded(|buf| msg.encode(buf));
            assert_eq!(frame.extras().len(), if known.is_some() { 16 } else { 0 });
            assert_eq!(GetClusterConfig::decode(&frame).unwrap(), msg);
        }
        let msg = GetClusterConfigResponse {
            status: Status::Success,
            opaque: 4,
            datatype: Datatype::JSON,
            config: Bytes::from_static(br#"{"rev":1}"#),
        };
        assert_eq!(
            GetClusterConfigResponse::decode(&encoded(|buf| msg.encode(buf))).unwrap(),
            msg
        );
        assert!(
            KnownVersion {
                epoch: 2,
                revision: 0
            } > KnownVersion {
                epoch: 1,
                revision: 9
            }
        );
    }

    #[test]
    fn request_rejections() {
        let head = FrameHead::request(Opcode::GetClusterConfig, 0, 1);
        rejects(
            GetClusterConfig::decode(&raw(
                FrameHead::response(Opcode::GetClusterConfig, Status::Success, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedMagic {
                expected: "request",
                got: Magic::ClientResponse,
            },
            0,
        );
        rejects(
            GetClusterConfig::decode(&raw(
                FrameHead::request(Opcode::GetRandomKey, 0, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::GetClusterConfig,
                got: Opcode::GetRandomKey,
            },
            1,
        );
        rejects(
            GetClusterConfig::decode(&raw(head.with_cas(1), &[], &[], &[], &[])),
            DecodeErrorKind::NonZeroCas(1),
            16,
        );
        rejects(
            GetClusterConfig::decode(&raw(head.with_datatype(Datatype::JSON), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            GetClusterConfig::decode(&raw(head, &[], &[0; 8], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0 or 16",
                got: 8,
            },
            4,
        );
        rejects(
            GetClusterConfig::decode(&raw(head, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            GetClusterConfig::decode(&raw(head, &[], &[0; 16], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            40,
        );
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::GetClusterConfig, Status::Success, 1);
        rejects(
            GetClusterConfigResponse::decode(&raw(
                FrameHead::request(Opcode::GetClusterConfig, 0, 1),
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
            GetClusterConfigResponse::decode(&raw(
                ok.with_datatype(Datatype(0x11)),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(0x11),
            5,
        );
        rejects(
            GetClusterConfigResponse::decode(&raw(ok, &[], &[0; 16], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 16,
            },
            4,
        );
        rejects(
            GetClusterConfigResponse::decode(&raw(ok, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
    }
}
