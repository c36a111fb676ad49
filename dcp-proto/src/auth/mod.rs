//! SASL authentication as Couchbase's memcached speaks it, for both the client
//! and the server side.
//!
//! Everything here is a pure state machine over byte slices: the payloads go
//! into and come out of the `SASL_AUTH` / `SASL_STEP` frames of
//! [`msg`](crate::msg), and nonces and salts are passed in by the caller (this
//! crate has no random number generator).
//!
//! - [`Mechanism`]: the mechanism names memcached lists, and
//!   [`Mechanism::choose`] to pick the strongest one both sides accept.
//! - [`plain`]: `PLAIN` (RFC 4616).
//! - [`scram`]: `SCRAM-SHA512`, `SCRAM-SHA256` and `SCRAM-SHA1` (RFC 5802,
//!   without channel binding).
//!
//! Passwords are used as their UTF-8 bytes, without SASLprep, as memcached
//! does; for ASCII passwords this is the same as RFC 5802's normalization.

use std::fmt;

pub mod plain;
pub mod scram;

pub use plain::{PlainCredentials, parse_plain, plain_initial};
pub use scram::{ClientFirst, ScramClient, ScramCredentials, ScramServer, ScramServerError};

/// A SASL mechanism that memcached offers in its `SASL_LIST_MECHS` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// `SCRAM-SHA512`: SCRAM with SHA-512 (the strongest).
    ScramSha512,
    /// `SCRAM-SHA256`: SCRAM with SHA-256.
    ScramSha256,
    /// `SCRAM-SHA1`: SCRAM with SHA-1.
    ScramSha1,
    /// `PLAIN`: the password in clear text (only sensible over TLS).
    Plain,
}

impl Mechanism {
    /// Every mechanism, strongest first.
    pub const ALL: [Mechanism; 4] = [
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
        Mechanism::Plain,
    ];

    /// The name on the wire, exactly as memcached spells it (no dash between
    /// `SHA` and the number).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::ScramSha512 => "SCRAM-SHA512",
            Mechanism::ScramSha256 => "SCRAM-SHA256",
            Mechanism::ScramSha1 => "SCRAM-SHA1",
            Mechanism::Plain => "PLAIN",
        }
    }

    /// The mechanism with this exact wire name, if it is one of ours.
    pub fn from_name(name: &str) -> Option<Mechanism> {
        Mechanism::ALL.into_iter().find(|m| m.name() == name)
    }

    /// Whether this is one of the SCRAM mechanisms.
    pub fn is_scram(self) -> bool {
        !matches!(self, Mechanism::Plain)
    }

    /// Picks the strongest mechanism (SHA512 > SHA256 > SHA1 > PLAIN) that is
    /// both in the server's space-separated list and in `allowed`.
    ///
    /// Names the server lists that this crate does not know (such as
    /// `CRAM-MD5`) are skipped.
    ///
    /// ```
    /// use dcp_proto::auth::Mechanism;
    ///
    /// let offered = "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN";
    /// let picked = Mechanism::choose(offered, &[Mechanism::ScramSha1, Mechanism::ScramSha256]);
    /// assert_eq!(picked, Some(Mechanism::ScramSha256));
    /// ```
    pub fn choose(server_list: &str, allowed: &[Mechanism]) -> Option<Mechanism> {
        let offered: Vec<Mechanism> = server_list
            .split_ascii_whitespace()
            .filter_map(Mechanism::from_name)
            .collect();
        Mechanism::ALL
            .into_iter()
            .find(|m| offered.contains(m) && allowed.contains(m))
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A user name and password for a client to authenticate with.
///
/// Its `Debug` output never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password.
    pub password: String,
}

impl Credentials {
    /// Credentials from a user name and a password.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            username: username.into(),
            password: password.into(),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Why a SASL exchange failed, on either side.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// A message does not follow the grammar of its mechanism.
    #[error("malformed {message} at byte {offset}: {reason}")]
    Malformed {
        /// Which message: `"client-first"`, `"server-first"`,
        /// `"client-final"`, `"server-final"` or `"PLAIN"`.
        message: &'static str,
        /// Byte offset in the message where the problem was found.
        offset: usize,
        /// What is wrong there.
        reason: &'static str,
    },
    /// The nonce in a SCRAM message is not the one this exchange agreed on
    /// (or the server added nothing to the client's nonce).
    #[error("SCRAM nonce mismatch")]
    NonceMismatch,
    /// A nonce passed in by the caller is empty or has characters that SCRAM
    /// does not allow (only printable ASCII other than `,`).
    #[error("invalid SCRAM nonce: must be non-empty printable ASCII without ','")]
    InvalidNonce,
    /// The server's signature in the server-final message is not the
    /// expected one: the server does not know the password.
    #[error("SCRAM server signature does not verify")]
    ServerSignatureMismatch,
    /// The iteration count is zero or above [`scram::MAX_ITERATIONS`].
    #[error("SCRAM iteration count {iterations} out of range 1..={max}")]
    IterationCountOutOfRange {
        /// The count received (saturated at `u64::MAX` if even larger).
        iterations: u64,
        /// The largest count accepted.
        max: u32,
    },
    /// The user does not exist (raised by a server's user lookup, or
    /// reported by the server as `e=unknown-user`).
    #[error("unknown user")]
    UnknownUser,
    /// The client's SCRAM proof does not verify: wrong password.
    #[error("SCRAM client proof does not verify")]
    InvalidProof,
    /// The PLAIN password does not match.
    #[error("wrong password")]
    WrongPassword,
    /// The client asked for channel binding (`p=` in the GS2 header), which
    /// this implementation does not support.
    #[error("SCRAM channel binding is not supported")]
    ChannelBindingNotSupported,
    /// The client-final `c=` attribute does not repeat the GS2 header of the
    /// client-first message.
    #[error("SCRAM channel binding data does not match the GS2 header")]
    ChannelBindingMismatch,
    /// A message carries a mandatory extension (`m=`) that is not supported.
    #[error("unsupported mandatory SCRAM extension")]
    UnsupportedExtension,
    /// The server ended the SCRAM exchange with an `e=` error.
    #[error("server rejected SCRAM authentication: {0}")]
    ServerRejected(ScramServerError),
    /// The mechanism cannot be used here (for example `PLAIN` given to a
    /// SCRAM state machine, or credentials derived for another hash).
    #[error("mechanism {mechanism} is not usable here")]
    UnsupportedMechanism {
        /// The mechanism that was given.
        mechanism: Mechanism,
    },
    /// A step was called out of order (or after the exchange had already
    /// finished or failed).
    #[error("SASL step {step} called out of order (state: {state})")]
    OutOfOrder {
        /// The step that was called.
        step: &'static str,
        /// The state the exchange was in.
        state: &'static str,
    },
    /// A cryptographic primitive rejected its input. HMAC and PBKDF2 accept
    /// any key length, so this is not expected to happen; it exists so no
    /// path has to panic.
    #[error("cryptographic primitive rejected its input")]
    Crypto,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for m in Mechanism::ALL {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(m.to_string(), m.name());
        }
        assert_eq!(Mechanism::ScramSha512.name(), "SCRAM-SHA512");
        assert_eq!(Mechanism::ScramSha256.name(), "SCRAM-SHA256");
        assert_eq!(Mechanism::ScramSha1.name(), "SCRAM-SHA1");
        assert_eq!(Mechanism::Plain.name(), "PLAIN");
        assert_eq!(Mechanism::from_name("SCRAM-SHA-256"), None);
        assert_eq!(Mechanism::from_name("scram-sha1"), None);
        assert_eq!(Mechanism::from_name("CRAM-MD5"), None);
        assert!(!Mechanism::Plain.is_scram());
        assert!(Mechanism::ScramSha1.is_scram());
    }

    #[test]
    fn choose_picks_the_strongest() {
        let all = Mechanism::ALL;
        let full = "SCRAM-SHA512 SCRAM-SHA256 SCRAM-SHA1 PLAIN";
        assert_eq!(Mechanism::choose(full, &all), Some(Mechanism::ScramSha512));
        // Order in either list does not matter.
        assert_eq!(
            Mechanism::choose("PLAIN SCRAM-SHA1 SCRAM-SHA256", &all),
            Some(Mechanism::ScramSha256)
        );
        assert_eq!(
            Mechanism::choose(full, &[Mechanism::Plain, Mechanism::ScramSha1]),
            Some(Mechanism::ScramSha1)
        );
        // The list drawn in Couchbase's docs (vector sasl-2).
        assert_eq!(
            Mechanism::choose("SCRAM-SHA1 CRAM-MD5 PLAIN", &all),
            Some(Mechanism::ScramSha1)
        );
        assert_eq!(
            Mechanism::choose("  CRAM-MD5\tPLAIN\n", &all),
            Some(Mechanism::Plain)
        );
        assert_eq!(Mechanism::choose("PLAIN", &[Mechanism::ScramSha512]), None);
        assert_eq!(Mechanism::choose("", &all), None);
        assert_eq!(Mechanism::choose(full, &[]), None);
        assert_eq!(Mechanism::choose("SCRAM-SHA-512", &all), None);
    }

    #[test]
    fn credentials_debug_redacts_password() {
        let creds = Credentials::new("Administrator", "hunter2");
        let shown = format!("{creds:?}");
        assert!(shown.contains("Administrator"));
        assert!(!shown.contains("hunter2"));
    }
}
