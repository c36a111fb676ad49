//! SASL authentication: SASL_LIST_MECHS (0x20), SASL_AUTH (0x21) and
//! SASL_STEP (0x22).

use core::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::codec::{DecodeError, EncodeError, Frame, FrameHead, Opcode, Status};
use crate::msg::check;
use crate::msg::status_response::{body_datatype, invalid, response_either};

/// SASL_LIST_MECHS: asks which mechanisms the server offers (no extras, key
/// or value; CAS 0).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslListMechs {
    /// Opaque, echoed in the response.
    pub opaque: u32,
}

impl SaslListMechs {
    /// Decodes a SASL_LIST_MECHS request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::request(frame, Opcode::SaslListMechs)?;
        check::zero_cas(frame)?;
        check::raw_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        check::no_value(frame)?;
        Ok(Self {
            opaque: frame.opaque(),
        })
    }

    /// Appends the frame to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        FrameHead::request(Opcode::SaslListMechs, 0, self.opaque).encode(buf, &[], &[], &[], &[])
    }
}

/// The response to SASL_LIST_MECHS: space-separated mechanism names (or an
/// error body). No extras, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslListMechsResponse {
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The value: mechanism names separated by spaces, e.g.
    /// `SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN`.
    pub mechanisms: Bytes,
}

impl SaslListMechsResponse {
    /// The mechanism names, in the server's order; names that are not UTF-8
    /// are skipped.
    pub fn mechanisms(&self) -> impl Iterator<Item = &str> {
        self.mechanisms
            .split(|&b| b == b' ')
            .filter(|name| !name.is_empty())
            .filter_map(|name| core::str::from_utf8(name).ok())
    }

    /// Decodes a SASL_LIST_MECHS response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        check::response(frame, Opcode::SaslListMechs)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        Ok(Self {
            status: frame.status(),
            opaque: frame.opaque(),
            mechanisms: frame.value(),
        })
    }

    /// Appends the frame to `buf` (an error body starting with `{` is sent
    /// as JSON).
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let head = FrameHead::response(Opcode::SaslListMechs, self.status, self.opaque);
        let head = if self.status.is_success() {
            head
        } else {
            head.with_datatype(body_datatype(&self.mechanisms))
        };
        head.encode(buf, &[], &[], &[], &self.mechanisms)
    }
}

/// Decodes SASL_AUTH or SASL_STEP: (opaque, mechanism, data).
fn decode_auth(frame: &Frame, opcode: Opcode) -> Result<(u32, Bytes, Bytes), DecodeError> {
    check::request(frame, opcode)?;
    check::zero_cas(frame)?;
    check::raw_datatype(frame)?;
    check::no_extras(frame)?;
    check::some_key(frame)?;
    Ok((frame.opaque(), frame.key(), frame.value()))
}

/// Encodes SASL_AUTH or SASL_STEP.
fn encode_auth(
    buf: &mut BytesMut,
    opcode: Opcode,
    opaque: u32,
    mechanism: &[u8],
    data: &[u8],
) -> Result<(), EncodeError> {
    if mechanism.is_empty() {
        return Err(invalid("mechanism", "a SASL mechanism is required"));
    }
    FrameHead::request(opcode, 0, opaque).encode(buf, &[], &[], mechanism, data)
}

/// Debug output that shows the length of the client data, not the data
/// (PLAIN carries the password in clear).
fn debug_auth(
    f: &mut fmt::Formatter<'_>,
    name: &str,
    opaque: u32,
    mechanism: &Bytes,
    data: &Bytes,
) -> fmt::Result {
    f.debug_struct(name)
        .field("opaque", &opaque)
        .field("mechanism", mechanism)
        .field("data", &format_args!("<{} bytes>", data.len()))
        .finish()
}

/// SASL_AUTH: starts authentication with `mechanism` (the key, required)
/// and the client's first message (the value). No extras; CAS 0.
///
/// `Debug` does not print `data`.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslAuth {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Mechanism name, e.g. `SCRAM-SHA512` or `PLAIN`.
    pub mechanism: Bytes,
    /// The client's first message.
    pub data: Bytes,
}

impl SaslAuth {
    /// PLAIN authentication: data `\0user\0password` (no authzid).
    pub fn plain(opaque: u32, user: &[u8], password: &[u8]) -> Self {
        let mut data = BytesMut::with_capacity(2 + user.len() + password.len());
        data.put_u8(0);
        data.put_slice(user);
        data.put_u8(0);
        data.put_slice(password);
        Self {
            opaque,
            mechanism: Bytes::from_static(b"PLAIN"),
            data: data.freeze(),
        }
    }

    /// Decodes a SASL_AUTH request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let (opaque, mechanism, data) = decode_auth(frame, Opcode::SaslAuth)?;
        Ok(Self {
            opaque,
            mechanism,
            data,
        })
    }

    /// Appends the frame to `buf`. Fails if the mechanism is empty.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_auth(
            buf,
            Opcode::SaslAuth,
            self.opaque,
            &self.mechanism,
            &self.data,
        )
    }
}

impl fmt::Debug for SaslAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_auth(f, "SaslAuth", self.opaque, &self.mechanism, &self.data)
    }
}

/// SASL_STEP: the client's next message for `mechanism` (the key,
/// required). No extras; CAS 0.
///
/// `Debug` does not print `data`.
#[derive(Clone, PartialEq, Eq)]
pub struct SaslStep {
    /// Opaque, echoed in the response.
    pub opaque: u32,
    /// Mechanism name, as in the SASL_AUTH.
    pub mechanism: Bytes,
    /// The client's next message.
    pub data: Bytes,
}

impl SaslStep {
    /// Decodes a SASL_STEP request frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        let (opaque, mechanism, data) = decode_auth(frame, Opcode::SaslStep)?;
        Ok(Self {
            opaque,
            mechanism,
            data,
        })
    }

    /// Appends the frame to `buf`. Fails if the mechanism is empty.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        encode_auth(
            buf,
            Opcode::SaslStep,
            self.opaque,
            &self.mechanism,
            &self.data,
        )
    }
}

impl fmt::Debug for SaslStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        debug_auth(f, "SaslStep", self.opaque, &self.mechanism, &self.data)
    }
}

/// The response to SASL_AUTH or SASL_STEP: Success (done, possibly with the
/// server's final message), AuthContinue (0x21, send a SASL_STEP with the
/// reply to `data`), or an error such as AuthError. No extras, no key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslResponse {
    /// [`Opcode::SaslAuth`] or [`Opcode::SaslStep`].
    pub opcode: Opcode,
    /// The status.
    pub status: Status,
    /// The request's opaque, echoed.
    pub opaque: u32,
    /// The server's message (or an error body).
    pub data: Bytes,
}

impl SaslResponse {
    /// Whether the server wants another step.
    pub fn is_continue(&self) -> bool {
        self.status == Status::AuthContinue
    }

    /// Decodes a SASL_AUTH or SASL_STEP response frame.
    pub fn decode(frame: &Frame) -> Result<Self, DecodeError> {
        response_either(frame, Opcode::SaslAuth, Opcode::SaslStep)?;
        check::valid_datatype(frame)?;
        check::no_extras(frame)?;
        check::no_key(frame)?;
        Ok(Self {
            opcode: frame.opcode(),
            status: frame.status(),
            opaque: frame.opaque(),
            data: frame.value(),
        })
    }

    /// Appends the frame to `buf`. Fails for an opcode other than SASL_AUTH
    /// and SASL_STEP.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        if !matches!(self.opcode, Opcode::SaslAuth | Opcode::SaslStep) {
            return Err(invalid("opcode", "must be SASL_AUTH or SASL_STEP"));
        }
        let head = FrameHead::response(self.opcode, self.status, self.opaque);
        let head = if matches!(self.status, Status::Success | Status::AuthContinue) {
            head
        } else {
            head.with_datatype(body_datatype(&self.data))
        };
        head.encode(buf, &[], &[], &[], &self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Datatype, DecodeErrorKind, Magic};
    use crate::msg::status_response::testing::{encoded, encoded_hex, from_hex, raw, rejects};

    #[test]
    fn list_mechs_doc_vectors() {
        // sasl-1
        let hex = "802000000000000000000000000000000000000000000000";
        let msg = SaslListMechs::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, SaslListMechs { opaque: 0 });
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);

        // sasl-2
        let hex = "812000000000000000000019000000000000000000000000534352414d2d53484131204352414d2d\
                   4d443520504c41494e";
        let msg = SaslListMechsResponse::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            SaslListMechsResponse {
                status: Status::Success,
                opaque: 0,
                mechanisms: Bytes::from_static(b"SCRAM-SHA1 CRAM-MD5 PLAIN"),
            }
        );
        assert_eq!(
            msg.mechanisms().collect::<Vec<_>>(),
            ["SCRAM-SHA1", "CRAM-MD5", "PLAIN"]
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
    }

    #[test]
    fn mechanisms_iterator_edge_cases() {
        let msg = SaslListMechsResponse {
            status: Status::Success,
            opaque: 0,
            mechanisms: Bytes::from_static(b" PLAIN  \xff SCRAM-SHA512 "),
        };
        assert_eq!(
            msg.mechanisms().collect::<Vec<_>>(),
            ["PLAIN", "SCRAM-SHA512"]
        );
    }

    #[test]
    fn auth_and_step_doc_vectors() {
        // sasl-3: PLAIN, "\0user\0pencil".
        let hex =
            "802100050000000000000011000000000000000000000000504c41494e00757365720070656e63696c";
        let msg = SaslAuth::decode(&from_hex(hex)).unwrap();
        assert_eq!(msg, SaslAuth::plain(0, b"user", b"pencil"));
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
        assert!(!format!("{msg:?}").contains("pencil"));

        // sasl-5: SCRAM-SHA1 client-first.
        let hex = "8021000a0000000000000026000000000000000000000000534352414d2d534841316e2c2c6e3d75\
                   7365722c723d64343061303265333438303430353930";
        let msg = SaslAuth::decode(&from_hex(hex)).unwrap();
        assert_eq!(&msg.mechanism[..], b"SCRAM-SHA1");
        assert_eq!(&msg.data[..], b"n,,n=user,r=d40a02e348040590");
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);

        // sasl-7: SCRAM-SHA1 client-final.
        let hex = "8022000a0000000000000052000000000000000000000000534352414d2d53484131633d62697773\
                   2c723d64343061303265333438303430353930656338616337383464343666616639642c703d636f\
                   366b57774e6870565975754648575176355656635772504a4d3d";
        let msg = SaslStep::decode(&from_hex(hex)).unwrap();
        assert_eq!(
            msg,
            SaslStep {
                opaque: 0,
                mechanism: Bytes::from_static(b"SCRAM-SHA1"),
                data: Bytes::from_static(
                    b"c=biws,r=d40a02e348040590ec8ac784d46faf9d,p=co6kWwNhpVYuuFHWQv5VVcWrPJM="
                ),
            }
        );
        assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
        assert!(!format!("{msg:?}").contains("biws"));
    }

    #[test]
    fn response_doc_vectors() {
        let cases: [(&str, Opcode, Status, &[u8]); 3] = [
            // sasl-4: PLAIN accepted.
            (
                "812100000000000000000000000000000000000000000000",
                Opcode::SaslAuth,
                Status::Success,
                b"",
            ),
            // sasl-6: AuthContinue with the server-first message.
            (
                "812100000000002100000046000000000000000000000000723d6434306130326533343830343035\
                 3930656338616337383464343666616639642c733d667733475251596c467936514571543579374f\
                 66345862476147673d2c693d3130",
                Opcode::SaslAuth,
                Status::AuthContinue,
                b"r=d40a02e348040590ec8ac784d46faf9d,s=fw3GRQYlFy6QEqT5y7Of4XbGaGg=,i=10",
            ),
            // sasl-8: SASL_STEP success with the server-final message.
            (
                "81220000000000000000001e000000000000000000000000763d696e5a4a3264304d7334646e454e\
                 6e487750617156664e6e3744593d",
                Opcode::SaslStep,
                Status::Success,
                b"v=inZJ2d0Ms4dnENnHwPaqVfNn7DY=",
            ),
        ];
        for (hex, opcode, status, data) in cases {
            let msg = SaslResponse::decode(&from_hex(hex)).unwrap();
            assert_eq!(
                msg,
                SaslResponse {
                    opcode,
                    status,
                    opaque: 0,
                    data: Bytes::copy_from_slice(data),
                }
            );
            assert_eq!(msg.is_continue(), status == Status::AuthContinue);
            assert_eq!(encoded_hex(|buf| msg.encode(buf)), hex);
        }
    }

    #[test]
    fn round_trips() {
        let list = SaslListMechsResponse {
            status: Status::Einval,
            opaque: 1,
            mechanisms: Bytes::from_static(br#"{"error":{}}"#),
        };
        let frame = encoded(|buf| list.encode(buf));
        assert!(frame.datatype().is_json());
        assert_eq!(SaslListMechsResponse::decode(&frame).unwrap(), list);

        let step = SaslStep {
            opaque: 5,
            mechanism: Bytes::from_static(b"SCRAM-SHA512"),
            data: Bytes::new(),
        };
        assert_eq!(
            SaslStep::decode(&encoded(|buf| step.encode(buf))).unwrap(),
            step
        );
        let resp = SaslResponse {
            opcode: Opcode::SaslStep,
            status: Status::AuthError,
            opaque: 5,
            data: Bytes::from_static(br#"{"error":{"context":"Authentication failed"}}"#),
        };
        assert_eq!(
            SaslResponse::decode(&encoded(|buf| resp.encode(buf))).unwrap(),
            resp
        );
    }

    #[test]
    fn encode_errors() {
        let mut buf = BytesMut::new();
        let auth = SaslAuth {
            mechanism: Bytes::new(),
            ..SaslAuth::plain(1, b"u", b"p")
        };
        assert!(auth.encode(&mut buf).is_err());
        let resp = SaslResponse {
            opcode: Opcode::Hello,
            status: Status::Success,
            opaque: 0,
            data: Bytes::new(),
        };
        assert!(resp.encode(&mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn request_rejections() {
        let list = FrameHead::request(Opcode::SaslListMechs, 0, 1);
        rejects(
            SaslListMechs::decode(&raw(list.with_cas(9), &[], &[], &[], &[])),
            DecodeErrorKind::NonZeroCas(9),
            16,
        );
        rejects(
            SaslListMechs::decode(&raw(list.with_datatype(Datatype::JSON), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(1),
            5,
        );
        rejects(
            SaslListMechs::decode(&raw(list, &[], &[0], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 1,
            },
            4,
        );
        rejects(
            SaslListMechs::decode(&raw(list, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
        rejects(
            SaslListMechs::decode(&raw(list, &[], &[], &[], b"v")),
            DecodeErrorKind::ValueNotAllowed(1),
            24,
        );
        rejects(
            SaslListMechs::decode(&raw(
                FrameHead::response(Opcode::SaslListMechs, Status::Success, 1),
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

        let auth = FrameHead::request(Opcode::SaslAuth, 0, 1);
        rejects(
            SaslAuth::decode(&raw(
                FrameHead::request(Opcode::SaslStep, 0, 1),
                &[],
                &[],
                b"PLAIN",
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::SaslAuth,
                got: Opcode::SaslStep,
            },
            1,
        );
        rejects(
            SaslStep::decode(&raw(auth, &[], &[], b"PLAIN", &[])),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::SaslStep,
                got: Opcode::SaslAuth,
            },
            1,
        );
        rejects(
            SaslAuth::decode(&raw(auth.with_cas(1), &[], &[], b"PLAIN", &[])),
            DecodeErrorKind::NonZeroCas(1),
            16,
        );
        rejects(
            SaslAuth::decode(&raw(
                auth.with_datatype(Datatype::SNAPPY),
                &[],
                &[],
                b"PLAIN",
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(2),
            5,
        );
        rejects(
            SaslAuth::decode(&raw(auth, &[], &[0; 4], b"PLAIN", &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 4,
            },
            4,
        );
        rejects(
            SaslAuth::decode(&raw(auth, &[], &[], b"", b"data")),
            DecodeErrorKind::KeyRequired,
            24,
        );
        rejects(
            SaslStep::decode(&raw(
                FrameHead::request(Opcode::SaslStep, 0, 1),
                &[],
                &[],
                b"",
                b"data",
            )),
            DecodeErrorKind::KeyRequired,
            24,
        );
    }

    #[test]
    fn response_rejections() {
        let ok = FrameHead::response(Opcode::SaslListMechs, Status::Success, 1);
        rejects(
            SaslListMechsResponse::decode(&raw(
                FrameHead::request(Opcode::SaslListMechs, 0, 1),
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
            SaslListMechsResponse::decode(&raw(
                ok.with_datatype(Datatype(0x40)),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::InvalidDatatype(0x40),
            5,
        );
        rejects(
            SaslListMechsResponse::decode(&raw(ok, &[], &[0], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 1,
            },
            4,
        );
        rejects(
            SaslListMechsResponse::decode(&raw(ok, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );

        let auth = FrameHead::response(Opcode::SaslAuth, Status::AuthContinue, 1);
        rejects(
            SaslResponse::decode(&raw(
                FrameHead::response(Opcode::SaslListMechs, Status::Success, 1),
                &[],
                &[],
                &[],
                &[],
            )),
            DecodeErrorKind::UnexpectedOpcode {
                expected: Opcode::SaslAuth,
                got: Opcode::SaslListMechs,
            },
            1,
        );
        rejects(
            SaslResponse::decode(&raw(
                FrameHead::request(Opcode::SaslStep, 0, 1),
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
            SaslResponse::decode(&raw(auth.with_datatype(Datatype(0x08)), &[], &[], &[], &[])),
            DecodeErrorKind::InvalidDatatype(0x08),
            5,
        );
        rejects(
            SaslResponse::decode(&raw(auth, &[], &[0; 2], &[], &[])),
            DecodeErrorKind::ExtrasLength {
                expected: "0",
                got: 2,
            },
            4,
        );
        rejects(
            SaslResponse::decode(&raw(auth, &[], &[], b"k", &[])),
            DecodeErrorKind::KeyNotAllowed(1),
            24,
        );
    }
}
