//! Typed messages: one struct per DCP message and per handshake command, each
//! with `decode(&Frame)` and `encode(&mut BytesMut)`.
//!
//! Keys and values are zero-copy [`bytes::Bytes`] slices of the received
//! frame. Decoders check the layout the server's validators check (extras
//! size, key and value presence, CAS rules) and return a
//! [`DecodeError`](crate::codec::DecodeError) naming the opcode and offset.

mod check;
pub mod client;
pub mod dcp;
mod document_value;
mod failover_log;
mod key;
mod message;
mod snappy;
mod status_response;
mod stream_id;
#[cfg(test)]
mod test_util;
mod xattr;

pub use dcp::*;
pub use document_value::{DocumentValue, DocumentValueError};
pub use failover_log::{FAILOVER_ENTRY_LEN, FailoverEntry, FailoverLog};
pub use key::{
    CollectionKey, DEFAULT_COLLECTION, MAX_LEB128_LEN, leb128_len, put_leb128_u32, read_leb128_u32,
};
pub use message::Message;
pub use snappy::{SnappyError, compress_value, decompress_value};
pub use status_response::StatusResponse;
pub use xattr::{XattrPairs, XattrValue};
