//! The memcached binary protocol framing that DCP uses: headers, framing
//! extras, opcodes, status codes, datatypes, whole frames and the streaming
//! frame decoder.
//!
//! Everything here is independent of what a message means; typed messages
//! live in [`crate::msg`].

mod datatype;
mod decoder;
mod error;
mod frame;
pub mod frame_info;
mod header;
mod opcode;
pub(crate) use opcode::code_enum;
mod status;

pub use datatype::Datatype;
pub use decoder::{DEFAULT_MAX_FRAME_LEN, FrameDecoder};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, Leb128Error};
pub use frame::{Frame, FrameHead};
pub use frame_info::{DurabilityLevel, FrameInfoIter, RawFrameInfo, RequestFrameInfo};
pub use header::{HEADER_LEN, Header, Magic};
pub use opcode::Opcode;
pub use status::Status;
