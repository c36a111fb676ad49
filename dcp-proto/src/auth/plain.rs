//! The `PLAIN` mechanism (RFC 4616): one message, `authzid NUL user NUL
//! password`, and no reply beyond the status.
//!
//! ```
//! use dcp_proto::auth::{parse_plain, plain_initial};
//!
//! let wire = plain_initial("", "user", "pencil");
//! assert_eq!(wire, b"\0user\0pencil");
//!
//! let seen = parse_plain(&wire)?;
//! assert_eq!(seen.username, "user");
//! seen.verify_password("pencil")?;
//! # Ok::<(), dcp_proto::auth::AuthError>(())
//! ```

use std::fmt;

use subtle::ConstantTimeEq;

use super::AuthError;

const MESSAGE: &str = "PLAIN";

/// The client's `PLAIN` message: `authzid NUL user NUL password`.
///
/// Pass `""` as `authzid` to act as `user` itself (memcached's clients always
/// do). The parts are copied as given; a NUL byte inside one of them makes a
/// message that [`parse_plain`] (and memcached) will reject.
pub fn plain_initial(authzid: &str, user: &str, password: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(authzid.len() + user.len() + password.len() + 2);
    out.extend_from_slice(authzid.as_bytes());
    out.push(0);
    out.extend_from_slice(user.as_bytes());
    out.push(0);
    out.extend_from_slice(password.as_bytes());
    out
}

/// The parts of a `PLAIN` message, as a server reads them.
///
/// Its `Debug` output never shows the password.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PlainCredentials<'a> {
    /// The identity to act as; empty means the user itself.
    pub authzid: &'a str,
    /// The user name (never empty).
    pub username: &'a str,
    /// The password (never empty).
    pub password: &'a str,
}

impl PlainCredentials<'_> {
    /// Checks the password against the expected one in constant time.
    pub fn verify_password(&self, expected: &str) -> Result<(), AuthError> {
        if bool::from(self.password.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(())
        } else {
            Err(AuthError::WrongPassword)
        }
    }
}

impl fmt::Debug for PlainCredentials<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PlainCredentials")
            .field("authzid", &self.authzid)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Reads a client's `PLAIN` message on the server side.
///
/// The message must have exactly two NUL separators, a non-empty user name
/// and password, and every part must be UTF-8.
pub fn parse_plain(message: &[u8]) -> Result<PlainCredentials<'_>, AuthError> {
    let malformed = |offset, reason| AuthError::Malformed {
        message: MESSAGE,
        offset,
        reason,
    };
    let mut parts = message.split(|&b| b == 0);
    let (Some(authzid), Some(username), Some(password), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        let nuls = message.iter().filter(|&&b| b == 0).count();
        let offset = if nuls < 2 {
            message.len()
        } else {
            // Point at the third NUL.
            message
                .iter()
                .enumerate()
                .filter(|&(_, &b)| b == 0)
                .nth(2)
                .map_or(message.len(), |(i, _)| i)
        };
        return Err(malformed(offset, "expected exactly two NUL separators"));
    };
    let user_at = authzid.len() + 1;
    let password_at = user_at + username.len() + 1;
    let text = |bytes, offset| {
        std::str::from_utf8(bytes).map_err(|e| malformed(offset + e.valid_up_to(), "not UTF-8"))
    };
    let authzid = text(authzid, 0)?;
    let username = text(username, user_at)?;
    let password = text(password, password_at)?;
    if username.is_empty() {
        return Err(malformed(user_at, "empty user name"));
    }
    if password.is_empty() {
        return Err(malformed(password_at, "empty password"));
    }
    Ok(PlainCredentials {
        authzid,
        username,
        password,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let wire = plain_initial("", "user", "pencil");
        // The SASL_AUTH PLAIN body drawn in Couchbase's docs (vector sasl-3).
        assert_eq!(wire, b"\0user\0pencil");
        let seen = parse_plain(&wire).unwrap();
        assert_eq!(seen.authzid, "");
        assert_eq!(seen.username, "user");
        assert_eq!(seen.password, "pencil");
        assert_eq!(seen.verify_password("pencil"), Ok(()));
        assert_eq!(
            seen.verify_password("pencil2"),
            Err(AuthError::WrongPassword)
        );
        assert_eq!(seen.verify_password(""), Err(AuthError::WrongPassword));

        let wire = plain_initial("admin", "ü", "p=,\u{1F511}");
        let seen = parse_plain(&wire).unwrap();
        assert_eq!(
            (seen.authzid, seen.username, seen.password),
            ("admin", "ü", "p=,\u{1F511}")
        );
    }

    #[test]
    fn debug_redacts_password() {
        let wire = plain_initial("", "user", "hunter2");
        let shown = format!("{:?}", parse_plain(&wire).unwrap());
        assert!(shown.contains("user"));
        assert!(!shown.contains("hunter2"));
    }

    fn malformed_at(input: &[u8]) -> (usize, &'static str) {
        match parse_plain(input) {
            Err(AuthError::Malformed {
                message: "PLAIN",
                offset,
                reason,
            }) => (offset, reason),
            other => panic!("{input:?}: expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn malformed() {
        assert_eq!(malformed_at(b"").0, 0);
        assert_eq!(malformed_at(b"user").0, 4);
        assert_eq!(malformed_at(b"\0user").0, 5);
        assert_eq!(malformed_at(b"\0user\0pass\0extra").0, 10);
        assert_eq!(malformed_at(b"\0\0pencil"), (1, "empty user name"));
        assert_eq!(malformed_at(b"\0user\0"), (6, "empty password"));
        assert_eq!(malformed_at(b"\0us\xffer\0pencil"), (3, "not UTF-8"));
        assert_eq!(malformed_at(b"\0user\0pen\xc3"), (9, "not UTF-8"));
        assert_eq!(malformed_at(b"\xc3\0user\0pencil"), (0, "not UTF-8"));
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_plain(&bytes);
        }

        #[test]
        fn round_trips(
            authzid in "[^\0]{0,8}",
            user in "[^\0]{1,8}",
            password in "[^\0]{1,8}",
        ) {
            let wire = plain_initial(&authzid, &user, &password);
            let seen = parse_plain(&wire).unwrap();
            proptest::prop_assert_eq!(seen.authzid, authzid.as_str());
            proptest::prop_assert_eq!(seen.username, user.as_str());
            proptest::prop_assert_eq!(seen.password, password.as_str());
        }
    }
}
