//! DCP messages: what a consumer sends (open, controls, stream requests,
//! acks) and what a producer streams back (markers, mutations, deletions,
//! system events, ...).

// -- producer → consumer stream messages --
mod mutation;
pub use mutation::{MUTATION_EXTRAS_LEN, Mutation};

// -- consumer → producer requests, and their responses --
