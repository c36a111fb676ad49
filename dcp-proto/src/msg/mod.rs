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
mod stream_id;

pub use dcp::*;
