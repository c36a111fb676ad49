//! The blocking std::net adapter for [`dcp_proto`], the sans-IO Couchbase DCP core.
//!
//! The adapter will own one connection and run one loop: flush what the core
//! wants to transmit, hand out events, wait for readable bytes or the next
//! deadline, and feed them back in. Until its connection types land, it
//! re-exports the core so dependants can build against one crate name.
#![forbid(unsafe_code)]

pub use dcp_proto;
