//! SCRAM (RFC 5802) with SHA-1, SHA-256 or SHA-512, as memcached speaks it:
//! no channel binding, user names escaped (`=` as `=3D`, `,` as `=2C`),
//! passwords used as their UTF-8 bytes without SASLprep.
//!
//! The client always sends the GS2 header `n,,`. The server also accepts
//! `y,,` and an `a=` authorization identity (handed to the caller), and
//! refuses channel binding (`p=`).
//!
//! The exchange is four messages:
//!
//! | step | client ([`ScramClient`])                | server ([`ScramServer`])                  |
//! |------|-----------------------------------------|-------------------------------------------|
//! | 1    | [`client_first`] → `SASL_AUTH`          | [`handle_client_first`], look up the user |
//! | 2    |                                         | [`server_first`] → reply                  |
//! | 3    | [`handle_server_first`] → `SASL_STEP`   | [`handle_client_final`] → reply           |
//! | 4    | [`verify_server_final`]                 |                                           |
//!
//! [`client_first`]: ScramClient::client_first
//! [`handle_server_first`]: ScramClient::handle_server_first
//! [`verify_server_final`]: ScramClient::verify_server_final
//! [`handle_client_first`]: ScramServer::handle_client_first
//! [`server_first`]: ScramServer::server_first
//! [`handle_client_final`]: ScramServer::handle_client_final

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::digest::Digest;
use hmac::{EagerHash, Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;

use super::{AuthError, Credentials, Mechanism};

/// The largest iteration count either side accepts, to bound the work a peer
/// can make us do.
pub const MAX_ITERATIONS: u32 = 10_000_000;

/// The GS2 header a client without channel binding sends.
const GS2_HEADER: &str = "n,,";

const CLIENT_FIRST: &str = "client-first";
const SERVER_FIRST: &str = "server-first";
const CLIENT_FINAL: &str = "client-final";
const SERVER_FINAL: &str = "server-final";

// ---------------------------------------------------------------------------
// Hash plumbing
// ---------------------------------------------------------------------------

/// The hash behind a SCRAM mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algo {
    Sha1,
    Sha256,
    Sha512,
}

impl Algo {
    fn of(mechanism: Mechanism) -> Result<Algo, AuthError> {
        match mechanism {
            Mechanism::ScramSha512 => Ok(Algo::Sha512),
            Mechanism::ScramSha256 => Ok(Algo::Sha256),
            Mechanism::ScramSha1 => Ok(Algo::Sha1),
            Mechanism::Plain => Err(AuthError::UnsupportedMechanism { mechanism }),
        }
    }

    /// Output length in bytes.
    fn len(self) -> usize {
        match self {
            Algo::Sha1 => 20,
            Algo::Sha256 => 32,
            Algo::Sha512 => 64,
        }
    }

    /// `H(data)`.
    fn hash(self, data: &[u8]) -> Vec<u8> {
        match self {
            Algo::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Algo::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Algo::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }

    /// `HMAC(key, parts...)`.
    fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, AuthError> {
        match self {
            Algo::Sha1 => hmac_with::<sha1::Sha1>(key, parts),
            Algo::Sha256 => hmac_with::<sha2::Sha256>(key, parts),
            Algo::Sha512 => hmac_with::<sha2::Sha512>(key, parts),
        }
    }

    /// `Hi(password, salt, i)`: PBKDF2 with HMAC and one block of output.
    fn hi(self, password: &[u8], salt: &[u8], iterations: u32) -> Result<Vec<u8>, AuthError> {
        let mut out = vec![0u8; self.len()];
        let result = match self {
            Algo::Sha1 => pbkdf2::pbkdf2::<Hmac<sha1::Sha1>>(password, salt, iterations, &mut out),
            Algo::Sha256 => {
                pbkdf2::pbkdf2::<Hmac<sha2::Sha256>>(password, salt, iterations, &mut out)
            }
            Algo::Sha512 => {
                pbkdf2::pbkdf2::<Hmac<sha2::Sha512>>(password, salt, iterations, &mut out)
            }
        };
        result.map_err(|_| AuthError::Crypto)?;
        Ok(out)
    }
}

fn hmac_with<D: EagerHash>(key: &[u8], parts: &[&[u8]]) -> Result<Vec<u8>, AuthError> {
    let mut mac = <Hmac<D> as KeyInit>::new_from_slice(key).map_err(|_| AuthError::Crypto)?;
    for part in parts {
        Mac::update(&mut mac, part);
    }
    Ok(mac.finalize().into_bytes().to_vec())
}

/// The keys RFC 5802 derives from a salted password.
#[derive(Clone)]
struct Keys {
    client_key: Vec<u8>,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl Keys {
    fn derive(hash: Algo, salted_password: &[u8]) -> Result<Keys, AuthError> {
        let client_key = hash.hmac(salted_password, &[b"Client Key"])?;
        let stored_key = hash.hash(&client_key);
        let server_key = hash.hmac(salted_password, &[b"Server Key"])?;
        Ok(Keys {
            client_key,
            stored_key,
            server_key,
        })
    }
}

fn xor(a: &[u8], b: &[u8]) -> Vec<u8> {
    a.iter().zip(b).map(|(x, y)| x ^ y).collect()
}

fn check_iterations(iterations: u64) -> Result<u32, AuthError> {
    match u32::try_from(iterations) {
        Ok(i) if (1..=MAX_ITERATIONS).contains(&i) => Ok(i),
        _ => Err(AuthError::IterationCountOutOfRange {
            iterations,
            max: MAX_ITERATIONS,
        }),
    }
}

/// A nonce may hold printable ASCII except `,`.
fn valid_nonce(nonce: &str) -> bool {
    !nonce.is_empty()
        && nonce
            .bytes()
            .all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}

/// Escapes a user name for `n=`: `=` becomes `=3D`, `,` becomes `=2C`.
fn escape_username(username: &str) -> String {
    let mut out = String::with_capacity(username.len());
    for c in username.chars() {
        match c {
            '=' => out.push_str("=3D"),
            ',' => out.push_str("=2C"),
            c => out.push(c),
        }
    }
    out
}

/// Undoes [`escape_username`]; `None` if an `=` is not followed by `2C` or
/// `3D`.
fn unescape_username(escaped: &str) -> Option<String> {
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped;
    while let Some(at) = rest.find('=') {
        let (plain, tail) = rest.split_at(at);
        out.push_str(plain);
        if let Some(after) = tail.strip_prefix("=2C") {
            out.push(',');
            rest = after;
        } else if let Some(after) = tail.strip_prefix("=3D") {
            out.push('=');
            rest = after;
        } else {
            return None;
        }
    }
    out.push_str(rest);
    Some(out)
}

// ---------------------------------------------------------------------------
// Attribute parsing
// ---------------------------------------------------------------------------

/// One `name=value` attribute and where its value starts.
#[derive(Debug, Clone, Copy)]
struct Attr<'a> {
    /// Offset of the attribute (its name) in the message.
    start: usize,
    name: u8,
    value: &'a str,
    /// Offset of the value in the message.
    value_at: usize,
}

/// Walks the comma-separated attributes of a SCRAM message.
struct Attrs<'a> {
    message: &'static str,
    text: &'a str,
    /// Offset of the next attribute, or `None` at the end.
    pos: Option<usize>,
}

impl<'a> Attrs<'a> {
    fn new(message: &'static str, text: &'a str, start: usize) -> Self {
        Attrs {
            message,
            text,
            pos: Some(start),
        }
    }

    fn malformed(&self, offset: usize, reason: &'static str) -> AuthError {
        AuthError::Malformed {
            message: self.message,
            offset,
            reason,
        }
    }

    /// The next attribute, `None` at the end of the message.
    fn next(&mut self) -> Result<Option<Attr<'a>>, AuthError> {
        let Some(start) = self.pos else {
            return Ok(None);
        };
        let rest = self.text.get(start..).unwrap_or("");
        let (part, next) = match rest.find(',') {
            Some(comma) => (rest.get(..comma).unwrap_or(""), Some(start + comma + 1)),
            None => (rest, None),
        };
        self.pos = next;
        let bytes = part.as_bytes();
        match (bytes.first(), bytes.get(1)) {
            (Some(&name), Some(b'=')) if name.is_ascii_alphabetic() => Ok(Some(Attr {
                start,
                name,
                value: part.get(2..).unwrap_or(""),
                value_at: start + 2,
            })),
            _ => Err(self.malformed(start, "expected an attribute `x=value`")),
        }
    }

    /// The next attribute, which must be `name`.
    fn expect(&mut self, name: u8, missing: &'static str) -> Result<Attr<'a>, AuthError> {
        let at = self.pos.unwrap_or(self.text.len());
        match self.next()? {
            Some(attr) if attr.name == name => Ok(attr),
            _ => Err(self.malformed(at, missing)),
        }
    }

    fn base64(&self, attr: Attr<'_>, what: &'static str) -> Result<Vec<u8>, AuthError> {
        BASE64
            .decode(attr.value)
            .map_err(|_| self.malformed(attr.value_at, what))
    }
}

fn utf8<'a>(message: &'static str, bytes: &'a [u8]) -> Result<&'a str, AuthError> {
    std::str::from_utf8(bytes).map_err(|e| AuthError::Malformed {
        message,
        offset: e.valid_up_to(),
        reason: "not UTF-8",
    })
}

/// Parses an `i=` value: ASCII digits, in range.
fn parse_iterations(attrs: &Attrs<'_>, attr: Attr<'_>) -> Result<u32, AuthError> {
    if attr.value.is_empty() || !attr.value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(attrs.malformed(attr.value_at, "iteration count is not a decimal number"));
    }
    let value = attr.value.bytes().fold(0u64, |acc, digit| {
        acc.saturating_mul(10)
            .saturating_add(u64::from(digit - b'0'))
    });
    check_iterations(value)
}

// ---------------------------------------------------------------------------
// Server errors (`e=`)
// ---------------------------------------------------------------------------

/// The `e=` values of RFC 5802's server-final message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ScramServerError {
    /// `invalid-encoding`
    InvalidEncoding,
    /// `extensions-not-supported`
    ExtensionsNotSupported,
    /// `invalid-proof`
    InvalidProof,
    /// `channel-bindings-dont-match`
    ChannelBindingsDontMatch,
    /// `server-does-support-channel-binding`
    ServerDoesSupportChannelBinding,
    /// `channel-binding-not-supported`
    ChannelBindingNotSupported,
    /// `unsupported-channel-binding-type`
    UnsupportedChannelBindingType,
    /// `unknown-user`
    UnknownUser,
    /// `invalid-username-encoding`
    InvalidUsernameEncoding,
    /// `no-resources`
    NoResources,
    /// `other-error`
    OtherError,
    /// Any other value a server sent.
    Other(String),
}

impl ScramServerError {
    const KNOWN: [(ScramServerError, &'static str); 11] = [
        (ScramServerError::InvalidEncoding, "invalid-encoding"),
        (
            ScramServerError::ExtensionsNotSupported,
            "extensions-not-supported",
        ),
        (ScramServerError::InvalidProof, "invalid-proof"),
        (
            ScramServerError::ChannelBindingsDontMatch,
            "channel-bindings-dont-match",
        ),
        (
            ScramServerError::ServerDoesSupportChannelBinding,
            "server-does-support-channel-binding",
        ),
        (
            ScramServerError::ChannelBindingNotSupported,
            "channel-binding-not-supported",
        ),
        (
            ScramServerError::UnsupportedChannelBindingType,
            "unsupported-channel-binding-type",
        ),
        (ScramServerError::UnknownUser, "unknown-user"),
        (
            ScramServerError::InvalidUsernameEncoding,
            "invalid-username-encoding",
        ),
        (ScramServerError::NoResources, "no-resources"),
        (ScramServerError::OtherError, "other-error"),
    ];

    /// The error for an `e=` value.
    pub fn from_value(value: &str) -> ScramServerError {
        ScramServerError::KNOWN
            .into_iter()
            .find(|(_, name)| *name == value)
            .map_or_else(|| ScramServerError::Other(value.to_owned()), |(e, _)| e)
    }

    /// The `e=` value.
    pub fn as_str(&self) -> &str {
        match self {
            ScramServerError::Other(value) => value,
            known => ScramServerError::KNOWN
                .iter()
                .find(|(e, _)| e == known)
                .map_or("other-error", |(_, name)| name),
        }
    }

    /// The server-final message `e=<value>` carrying this error, for a
    /// server that reports failures in-band.
    pub fn message(&self) -> Vec<u8> {
        format!("e={}", self.as_str()).into_bytes()
    }

    /// The `e=` value a server would send for one of its own failures.
    pub fn for_error(error: &AuthError) -> ScramServerError {
        match error {
            AuthError::Malformed { .. } => ScramServerError::InvalidEncoding,
            AuthError::UnsupportedExtension => ScramServerError::ExtensionsNotSupported,
            AuthError::InvalidProof | AuthError::WrongPassword => ScramServerError::InvalidProof,
            AuthError::ChannelBindingMismatch => ScramServerError::ChannelBindingsDontMatch,
            AuthError::ChannelBindingNotSupported => ScramServerError::ChannelBindingNotSupported,
            AuthError::UnknownUser => ScramServerError::UnknownUser,
            AuthError::ServerRejected(e) => e.clone(),
            _ => ScramServerError::OtherError,
        }
    }
}

impl fmt::Display for ScramServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// ---------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------

#[derive(Clone)]
enum ClientState {
    AwaitServerFirst { password: String },
    AwaitServerFinal { server_signature: Vec<u8> },
    Failed,
}

impl ClientState {
    fn name(&self) -> &'static str {
        match self {
            ClientState::AwaitServerFirst { .. } => "awaiting server-first",
            ClientState::AwaitServerFinal { .. } => "awaiting server-final",
            ClientState::Failed => "failed",
        }
    }
}

/// The client side of a SCRAM exchange.
///
/// ```
/// use dcp_proto::auth::{Mechanism, ScramClient, ScramCredentials, ScramServer};
///
/// let mech = Mechanism::ScramSha256;
/// // A server that knows user "alice" (salt and nonces come from the caller).
/// let stored = ScramCredentials::derive(mech, "s3cret", b"some salt", 4096)?;
/// let mut server = ScramServer::new(mech, "server-nonce")?;
///
/// let mut client = ScramClient::new(mech, "alice", "s3cret", "client-nonce")?;
/// let client_first = client.client_first(); // -> SASL_AUTH
/// let hello = server.handle_client_first(&client_first)?;
/// assert_eq!(hello.username, "alice");
/// let server_first = server.server_first(&stored)?; // -> reply
/// let client_final = client.handle_server_first(&server_first)?; // -> SASL_STEP
/// let server_final = server.handle_client_final(&client_final)?; // -> reply
/// client.verify_server_final(&server_final)?; // both sides are authenticated
/// # Ok::<(), dcp_proto::auth::AuthError>(())
/// ```
#[derive(Clone)]
pub struct ScramClient {
    mechanism: Mechanism,
    hash: Algo,
    client_first_bare: String,
    nonce: String,
    state: ClientState,
}

impl ScramClient {
    /// A client for `mechanism` (one of the SCRAM ones) that will present
    /// `client_nonce`, which must be printable ASCII without `,` and should
    /// be fresh and random (at least 16 random bytes, encoded).
    pub fn new(
        mechanism: Mechanism,
        username: &str,
        password: &str,
        client_nonce: &str,
    ) -> Result<ScramClient, AuthError> {
        let hash = Algo::of(mechanism)?;
        if !valid_nonce(client_nonce) {
            return Err(AuthError::InvalidNonce);
        }
        Ok(ScramClient {
            mechanism,
            hash,
            client_first_bare: format!("n={},r={client_nonce}", escape_username(username)),
            nonce: client_nonce.to_owned(),
            state: ClientState::AwaitServerFirst {
                password: password.to_owned(),
            },
        })
    }

    /// [`ScramClient::new`] from a [`Credentials`].
    pub fn with_credentials(
        mechanism: Mechanism,
        credentials: &Credentials,
        client_nonce: &str,
    ) -> Result<ScramClient, AuthError> {
        ScramClient::new(
            mechanism,
            &credentials.username,
            &credentials.password,
            client_nonce,
        )
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// The client-first message (`n,,n=<user>,r=<nonce>`), the body of
    /// `SASL_AUTH`.
    pub fn client_first(&self) -> Vec<u8> {
        format!("{GS2_HEADER}{}", self.client_first_bare).into_bytes()
    }

    /// Reads the server-first message and returns the client-final message,
    /// the body of `SASL_STEP`.
    ///
    /// Checks that the server's nonce extends ours, that the salt is base64
    /// and that the iteration count is within `1..=`[`MAX_ITERATIONS`]. Any
    /// error ends the exchange.
    pub fn handle_server_first(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        let password = match std::mem::replace(&mut self.state, ClientState::Failed) {
            ClientState::AwaitServerFirst { password } => password,
            other => {
                let state = other.name();
                self.state = other;
                return Err(AuthError::OutOfOrder {
                    step: "handle_server_first",
                    state,
                });
            }
        };
        let (client_final, server_signature) = self.server_first_inner(message, &password)?;
        self.state = ClientState::AwaitServerFinal { server_signature };
        Ok(client_final)
    }

    fn server_first_inner(
        &self,
        message: &[u8],
        password: &str,
    ) -> Result<(Vec<u8>, Vec<u8>), AuthError> {
        let text = utf8(SERVER_FIRST, message)?;
        if let Some(value) = text.strip_prefix("e=") {
            return Err(AuthError::ServerRejected(ScramServerError::from_value(
                value,
            )));
        }
        let mut attrs = Attrs::new(SERVER_FIRST, text, 0);
        if text.starts_with("m=") {
            return Err(AuthError::UnsupportedExtension);
        }
        let nonce = attrs.expect(b'r', "expected r= (nonce)")?;
        if !valid_nonce(nonce.value) {
            return Err(attrs.malformed(nonce.value_at, "nonce has invalid characters"));
        }
        if nonce.value.len() <= self.nonce.len() || !nonce.value.starts_with(&self.nonce) {
            return Err(AuthError::NonceMismatch);
        }
        let salt = attrs.expect(b's', "expected s= (salt)")?;
        let salt = attrs.base64(salt, "salt is not valid base64")?;
        let iterations = attrs.expect(b'i', "expected i= (iteration count)")?;
        let iterations = parse_iterations(&attrs, iterations)?;
        // Any further attributes are extensions, which we ignore.
        while attrs.next()?.is_some() {}

        let salted = self.hash.hi(password.as_bytes(), &salt, iterations)?;
        let keys = Keys::derive(self.hash, &salted)?;
        let without_proof = format!("c={},r={}", BASE64.encode(GS2_HEADER), nonce.value);
        let auth_message: [&[u8]; 5] = [
            self.client_first_bare.as_bytes(),
            b",",
            message,
            b",",
            without_proof.as_bytes(),
        ];
        let client_signature = self.hash.hmac(&keys.stored_key, &auth_message)?;
        let proof = xor(&keys.client_key, &client_signature);
        let server_signature = self.hash.hmac(&keys.server_key, &auth_message)?;
        let client_final = format!("{without_proof},p={}", BASE64.encode(proof));
        Ok((client_final.into_bytes(), server_signature))
    }

    /// Checks the server-final message: `v=<signature>` must carry the
    /// signature only a server that knows the password can compute (compared
    /// in constant time); `e=<error>` becomes
    /// [`AuthError::ServerRejected`].
    pub fn verify_server_final(&self, message: &[u8]) -> Result<(), AuthError> {
        let ClientState::AwaitServerFinal { server_signature } = &self.state else {
            return Err(AuthError::OutOfOrder {
                step: "verify_server_final",
                state: self.state.name(),
            });
        };
        let text = utf8(SERVER_FINAL, message)?;
        let mut attrs = Attrs::new(SERVER_FINAL, text, 0);
        let first = attrs.next()?;
        match first {
            Some(Attr {
                name: b'e', value, ..
            }) => Err(AuthError::ServerRejected(ScramServerError::from_value(
                value,
            ))),
            Some(attr @ Attr { name: b'v', .. }) => {
                let signature = attrs.base64(attr, "server signature is not valid base64")?;
                while attrs.next()?.is_some() {}
                if bool::from(signature.ct_eq(server_signature)) {
                    Ok(())
                } else {
                    Err(AuthError::ServerSignatureMismatch)
                }
            }
            _ => Err(attrs.malformed(0, "expected v= (verifier) or e= (error)")),
        }
    }
}

impl fmt::Debug for ScramClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramClient")
            .field("mechanism", &self.mechanism)
            .field("client_first_bare", &self.client_first_bare)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// What a server stores for one SCRAM user and mechanism (RFC 5802 §3): the
/// password itself is not needed.
///
/// Its `Debug` output does not show the keys.
#[derive(Clone, PartialEq, Eq)]
pub struct ScramCredentials {
    /// The mechanism (hash) these keys were derived for.
    pub mechanism: Mechanism,
    /// The salt.
    pub salt: Vec<u8>,
    /// The PBKDF2 iteration count.
    pub iterations: u32,
    /// `H(HMAC(SaltedPassword, "Client Key"))`.
    pub stored_key: Vec<u8>,
    /// `HMAC(SaltedPassword, "Server Key")`.
    pub server_key: Vec<u8>,
}

impl ScramCredentials {
    /// Derives what a server stores for `password` with this salt and
    /// iteration count (which must be in `1..=`[`MAX_ITERATIONS`]).
    pub fn derive(
        mechanism: Mechanism,
        password: &str,
        salt: &[u8],
        iterations: u32,
    ) -> Result<ScramCredentials, AuthError> {
        let hash = Algo::of(mechanism)?;
        let iterations = check_iterations(u64::from(iterations))?;
        let salted = hash.hi(password.as_bytes(), salt, iterations)?;
        let keys = Keys::derive(hash, &salted)?;
        Ok(ScramCredentials {
            mechanism,
            salt: salt.to_vec(),
            iterations,
            stored_key: keys.stored_key,
            server_key: keys.server_key,
        })
    }
}

impl fmt::Debug for ScramCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramCredentials")
            .field("mechanism", &self.mechanism)
            .field("salt", &BASE64.encode(&self.salt))
            .field("iterations", &self.iterations)
            .field("stored_key", &"<redacted>")
            .field("server_key", &"<redacted>")
            .finish()
    }
}

/// What the server learned from the client-first message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFirst {
    /// The user name, unescaped.
    pub username: String,
    /// The authorization identity (`a=`), unescaped, if the client sent
    /// one; memcached's clients never do. The caller decides whether to
    /// accept it.
    pub authzid: Option<String>,
}

#[derive(Clone)]
enum ServerState {
    AwaitClientFirst,
    AwaitCredentials {
        gs2_header: String,
        client_first_bare: String,
        nonce: String,
    },
    AwaitClientFinal {
        gs2_header: String,
        /// `client-first-bare "," server-first ","`.
        auth_prefix: String,
        nonce: String,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    },
    Done,
    Failed,
}

impl ServerState {
    fn name(&self) -> &'static str {
        match self {
            ServerState::AwaitClientFirst => "awaiting client-first",
            ServerState::AwaitCredentials { .. } => "awaiting credentials",
            ServerState::AwaitClientFinal { .. } => "awaiting client-final",
            ServerState::Done => "done",
            ServerState::Failed => "failed",
        }
    }
}

/// The server side of a SCRAM exchange (for test servers and mocks).
///
/// Steps: [`handle_client_first`](ScramServer::handle_client_first), look up
/// the user's [`ScramCredentials`], [`server_first`](ScramServer::server_first),
/// [`handle_client_final`](ScramServer::handle_client_final). Calling a step
/// out of order is an [`AuthError::OutOfOrder`] and changes nothing; any
/// other error ends the exchange.
#[derive(Clone)]
pub struct ScramServer {
    mechanism: Mechanism,
    hash: Algo,
    server_nonce: String,
    state: ServerState,
}

impl ScramServer {
    /// A server for `mechanism` (one of the SCRAM ones) that will append
    /// `server_nonce` (printable ASCII without `,`; fresh and random) to the
    /// client's nonce.
    pub fn new(mechanism: Mechanism, server_nonce: &str) -> Result<ScramServer, AuthError> {
        let hash = Algo::of(mechanism)?;
        if !valid_nonce(server_nonce) {
            return Err(AuthError::InvalidNonce);
        }
        Ok(ScramServer {
            mechanism,
            hash,
            server_nonce: server_nonce.to_owned(),
            state: ServerState::AwaitClientFirst,
        })
    }

    /// The mechanism in use.
    pub fn mechanism(&self) -> Mechanism {
        self.mechanism
    }

    /// Whether the client has been authenticated.
    pub fn is_authenticated(&self) -> bool {
        matches!(self.state, ServerState::Done)
    }

    fn out_of_order(&self, step: &'static str) -> AuthError {
        AuthError::OutOfOrder {
            step,
            state: self.state.name(),
        }
    }

    /// Reads the client-first message (the `SASL_AUTH` body) and returns who
    /// the client says it is; look up that user's [`ScramCredentials`] and
    /// pass them to [`server_first`](ScramServer::server_first).
    pub fn handle_client_first(&mut self, message: &[u8]) -> Result<ClientFirst, AuthError> {
        if !matches!(self.state, ServerState::AwaitClientFirst) {
            return Err(self.out_of_order("handle_client_first"));
        }
        match self.client_first_inner(message) {
            Ok((first, state)) => {
                self.state = state;
                Ok(first)
            }
            Err(e) => {
                self.state = ServerState::Failed;
                Err(e)
            }
        }
    }

    fn client_first_inner(&self, message: &[u8]) -> Result<(ClientFirst, ServerState), AuthError> {
        let text = utf8(CLIENT_FIRST, message)?;
        let malformed = |offset, reason| AuthError::Malformed {
            message: CLIENT_FIRST,
            offset,
            reason,
        };
        // gs2-header = gs2-cbind-flag "," [ authzid ] ","
        let Some(flag_end) = text.find(',') else {
            return Err(malformed(0, "expected a GS2 header"));
        };
        let flag = text.get(..flag_end).unwrap_or("");
        match flag {
            "n" | "y" => {}
            f if f.starts_with("p=") => return Err(AuthError::ChannelBindingNotSupported),
            _ => return Err(malformed(0, "expected GS2 channel binding flag n, y or p=")),
        }
        let authzid_at = flag_end + 1;
        let after_flag = text.get(authzid_at..).unwrap_or("");
        let Some(authzid_len) = after_flag.find(',') else {
            return Err(malformed(authzid_at, "expected a GS2 header"));
        };
        let authzid = match after_flag.get(..authzid_len).unwrap_or("") {
            "" => None,
            a => match a.strip_prefix("a=").map(unescape_username) {
                Some(Some(a)) if !a.is_empty() => Some(a),
                _ => return Err(malformed(authzid_at, "invalid authorization identity")),
            },
        };
        let bare_at = authzid_at + authzid_len + 1;
        let gs2_header = text.get(..bare_at).unwrap_or("");
        let client_first_bare = text.get(bare_at..).unwrap_or("");

        if client_first_bare.starts_with("m=") {
            return Err(AuthError::UnsupportedExtension);
        }
        let mut attrs = Attrs::new(CLIENT_FIRST, text, bare_at);
        let user = attrs.expect(b'n', "expected n= (user name)")?;
        let username = match unescape_username(user.value) {
            Some(u) if !u.is_empty() => u,
            Some(_) => return Err(malformed(user.value_at, "empty user name")),
            None => return Err(malformed(user.value_at, "invalid escape in user name")),
        };
        let nonce = attrs.expect(b'r', "expected r= (nonce)")?;
        if !valid_nonce(nonce.value) {
            return Err(malformed(
                nonce.value_at,
                "nonce is empty or has invalid characters",
            ));
        }
        // Any further attributes are extensions, which we ignore.
        while attrs.next()?.is_some() {}

        let state = ServerState::AwaitCredentials {
            gs2_header: gs2_header.to_owned(),
            client_first_bare: client_first_bare.to_owned(),
            nonce: format!("{}{}", nonce.value, self.server_nonce),
        };
        Ok((ClientFirst { username, authzid }, state))
    }

    /// The server-first message (`r=<nonce>,s=<salt>,i=<count>`) for the
    /// user's stored credentials, which must be for this mechanism.
    pub fn server_first(&mut self, credentials: &ScramCredentials) -> Result<Vec<u8>, AuthError> {
        if !matches!(self.state, ServerState::AwaitCredentials { .. }) {
            return Err(self.out_of_order("server_first"));
        }
        if credentials.mechanism != self.mechanism
            || credentials.stored_key.len() != self.hash.len()
            || credentials.server_key.len() != self.hash.len()
        {
            self.state = ServerState::Failed;
            return Err(AuthError::UnsupportedMechanism {
                mechanism: credentials.mechanism,
            });
        }
        if let Err(e) = check_iterations(u64::from(credentials.iterations)) {
            self.state = ServerState::Failed;
            return Err(e);
        }
        let (gs2_header, client_first_bare, nonce) =
            match std::mem::replace(&mut self.state, ServerState::Failed) {
                ServerState::AwaitCredentials {
                    gs2_header,
                    client_first_bare,
                    nonce,
                } => (gs2_header, client_first_bare, nonce),
                other => {
                    self.state = other;
                    return Err(self.out_of_order("server_first"));
                }
            };
        let server_first = format!(
            "r={nonce},s={},i={}",
            BASE64.encode(&credentials.salt),
            credentials.iterations
        );
        self.state = ServerState::AwaitClientFinal {
            gs2_header,
            auth_prefix: format!("{client_first_bare},{server_first},"),
            nonce,
            stored_key: credentials.stored_key.clone(),
            server_key: credentials.server_key.clone(),
        };
        Ok(server_first.into_bytes())
    }

    /// Reads the client-final message (the `SASL_STEP` body), verifies the
    /// client's proof in constant time and returns the server-final message
    /// `v=<signature>`.
    ///
    /// A wrong password is [`AuthError::InvalidProof`].
    pub fn handle_client_final(&mut self, message: &[u8]) -> Result<Vec<u8>, AuthError> {
        let (gs2_header, auth_prefix, nonce, stored_key, server_key) =
            match std::mem::replace(&mut self.state, ServerState::Failed) {
                ServerState::AwaitClientFinal {
                    gs2_header,
                    auth_prefix,
                    nonce,
                    stored_key,
                    server_key,
                } => (gs2_header, auth_prefix, nonce, stored_key, server_key),
                other => {
                    self.state = other;
                    return Err(self.out_of_order("handle_client_final"));
                }
            };
        let text = utf8(CLIENT_FINAL, message)?;
        let mut attrs = Attrs::new(CLIENT_FINAL, text, 0);
        let binding = attrs.expect(b'c', "expected c= (channel binding)")?;
        let binding = attrs.base64(binding, "channel binding is not valid base64")?;
        if binding != gs2_header.as_bytes() {
            return Err(AuthError::ChannelBindingMismatch);
        }
        let client_nonce = attrs.expect(b'r', "expected r= (nonce)")?;
        if client_nonce.value != nonce {
            return Err(AuthError::NonceMismatch);
        }
        let proof = loop {
            match attrs.next()? {
                Some(attr) if attr.name == b'p' => break attr,
                Some(_) => {} // an extension
                None => return Err(attrs.malformed(text.len(), "expected p= (proof)")),
            }
        };
        if let Some(extra) = attrs.next()? {
            return Err(attrs.malformed(extra.start, "p= (proof) must be the last attribute"));
        }
        let without_proof = text.get(..proof.start.saturating_sub(1)).unwrap_or("");
        let proof_bytes = attrs.base64(proof, "proof is not valid base64")?;
        if proof_bytes.len() != self.hash.len() {
            return Err(attrs.malformed(proof.value_at, "proof has the wrong length"));
        }

        let auth_message: [&[u8]; 2] = [auth_prefix.as_bytes(), without_proof.as_bytes()];
        let client_signature = self.hash.hmac(&stored_key, &auth_message)?;
        let client_key = xor(&proof_bytes, &client_signature);
        if !bool::from(self.hash.hash(&client_key).ct_eq(&stored_key)) {
            return Err(AuthError::InvalidProof);
        }
        let server_signature = self.hash.hmac(&server_key, &auth_message)?;
        self.state = ServerState::Done;
        Ok(format!("v={}", BASE64.encode(server_signature)).into_bytes())
    }
}

impl fmt::Debug for ScramServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScramServer")
            .field("mechanism", &self.mechanism)
            .field("state", &self.state.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// One published exchange: what each side sends, and what both hold.
    struct Vector {
        mechanism: Mechanism,
        password: &'static str,
        client_nonce: &'static str,
        server_nonce: &'static str,
        salt_b64: &'static str,
        iterations: u32,
        client_first: &'static str,
        server_first: &'static str,
        client_final: &'static str,
        server_final: &'static str,
    }

    /// RFC 5802 section 5.
    const RFC5802: Vector = Vector {
        mechanism: Mechanism::ScramSha1,
        password: "pencil",
        client_nonce: "fyko+d2lbbFgONRv9qkxdawL",
        server_nonce: "3rfcNHYJY1ZVvWVs7j",
        salt_b64: "QSXCR+Q6sek8bf92",
        iterations: 4096,
        client_first: "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
        server_first: "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
        client_final: "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
        server_final: "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
    };

    /// RFC 7677 section 3.
    const RFC7677: Vector = Vector {
        mechanism: Mechanism::ScramSha256,
        password: "pencil",
        client_nonce: "rOprNGfwEbeRWgbNEkqO",
        server_nonce: "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
        salt_b64: "W22ZaJ0SNY7soEsUEjb6gQ==",
        iterations: 4096,
        client_first: "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
        server_first: "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                       s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
        client_final: "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
                       p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
        server_final: "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
    };

    /// The SCRAM-SHA1 exchange drawn in Couchbase's docs/sasl.md (shared
    /// vectors `sasl-5` to `sasl-8`). The docs do not give the password;
    /// "pencil" (RFC 5802's) reproduces both the proof and the server
    /// signature, so the whole exchange is checked.
    const COUCHBASE_DOC: Vector = Vector {
        mechanism: Mechanism::ScramSha1,
        password: "pencil",
        client_nonce: "d40a02e348040590",
        server_nonce: "ec8ac784d46faf9d",
        salt_b64: "fw3GRQYlFy6QEqT5y7Of4XbGaGg=",
        iterations: 10,
        client_first: "n,,n=user,r=d40a02e348040590",
        server_first: "r=d40a02e348040590ec8ac784d46faf9d,s=fw3GRQYlFy6QEqT5y7Of4XbGaGg=,i=10",
        client_final: "c=biws,r=d40a02e348040590ec8ac784d46faf9d,p=co6kWwNhpVYuuFHWQv5VVcWrPJM=",
        server_final: "v=inZJ2d0Ms4dnENnHwPaqVfNn7DY=",
    };

    fn client_side(v: &Vector) {
        let mut client = ScramClient::new(v.mechanism, "user", v.password, v.client_nonce).unwrap();
        assert_eq!(client.client_first(), v.client_first.as_bytes());
        let client_final = client
            .handle_server_first(v.server_first.as_bytes())
            .unwrap();
        assert_eq!(String::from_utf8(client_final).unwrap(), v.client_final);
        client
            .verify_server_final(v.server_final.as_bytes())
            .unwrap();
    }

    fn server_side(v: &Vector) {
        let salt = BASE64.decode(v.salt_b64).unwrap();
        let stored =
            ScramCredentials::derive(v.mechanism, v.password, &salt, v.iterations).unwrap();
        let mut server = ScramServer::new(v.mechanism, v.server_nonce).unwrap();
        let first = server
            .handle_client_first(v.client_first.as_bytes())
            .unwrap();
        assert_eq!(
            first,
            ClientFirst {
                username: "user".into(),
                authzid: None
            }
        );
        let server_first = server.server_first(&stored).unwrap();
        assert_eq!(String::from_utf8(server_first).unwrap(), v.server_first);
        assert!(!server.is_authenticated());
        let server_final = server
            .handle_client_final(v.client_final.as_bytes())
            .unwrap();
        assert_eq!(String::from_utf8(server_final).unwrap(), v.server_final);
        assert!(server.is_authenticated());
    }

    #[test]
    fn rfc5802_sha1_client() {
        client_side(&RFC5802);
    }

    #[test]
    fn rfc5802_sha1_server() {
        server_side(&RFC5802);
    }

    #[test]
    fn rfc7677_sha256_client() {
        client_side(&RFC7677);
    }

    #[test]
    fn rfc7677_sha256_server() {
        server_side(&RFC7677);
    }

    #[test]
    fn couchbase_doc_sha1_client() {
        client_side(&COUCHBASE_DOC);
    }

    #[test]
    fn couchbase_doc_sha1_server() {
        server_side(&COUCHBASE_DOC);
    }

    #[test]
    fn couchbase_doc_wrong_password_does_not_reproduce() {
        let mut client =
            ScramClient::new(Mechanism::ScramSha1, "user", "password", "d40a02e348040590").unwrap();
        let client_final = client
            .handle_server_first(COUCHBASE_DOC.server_first.as_bytes())
            .unwrap();
        assert_ne!(client_final, COUCHBASE_DOC.client_final.as_bytes());
        assert_eq!(
            client.verify_server_final(COUCHBASE_DOC.server_final.as_bytes()),
            Err(AuthError::ServerSignatureMismatch)
        );
    }

    const MECHS: [Mechanism; 3] = [
        Mechanism::ScramSha512,
        Mechanism::ScramSha256,
        Mechanism::ScramSha1,
    ];

    /// A client and a server that has stored `stored_password` for the user,
    /// run up to the client-final message.
    fn exchange(
        mech: Mechanism,
        username: &str,
        password: &str,
        stored_password: &str,
    ) -> (ScramClient, ScramServer, Vec<u8>) {
        let stored = ScramCredentials::derive(mech, stored_password, b"salt!", 64).unwrap();
        let mut server = ScramServer::new(mech, "S3rv3rN0nc3").unwrap();
        let mut client = ScramClient::new(mech, username, password, "cl13ntN0nc3").unwrap();
        let first = server.handle_client_first(&client.client_first()).unwrap();
        assert_eq!(first.username, username);
        let server_first = server.server_first(&stored).unwrap();
        let client_final = client.handle_server_first(&server_first).unwrap();
        (client, server, client_final)
    }

    #[test]
    fn client_against_server() {
        for mech in MECHS {
            for user in ["user", "us,er=x", "=2C", "ü 東京"] {
                let (client, mut server, client_final) =
                    exchange(mech, user, "pässword", "pässword");
                let server_final = server.handle_client_final(&client_final).unwrap();
                assert!(server.is_authenticated());
                assert_eq!(client.verify_server_final(&server_final), Ok(()), "{mech}");
                // Verifying again is harmless.
                assert_eq!(client.verify_server_final(&server_final), Ok(()));
            }
        }
    }

    #[test]
    fn username_is_escaped() {
        let client = ScramClient::new(Mechanism::ScramSha1, "a=b,c", "pw", "nonce").unwrap();
        assert_eq!(client.client_first(), b"n,,n=a=3Db=2Cc,r=nonce");
    }

    #[test]
    fn wrong_password_is_rejected_by_server() {
        for mech in MECHS {
            let (client, mut server, client_final) = exchange(mech, "user", "wrong", "right");
            assert_eq!(
                server.handle_client_final(&client_final),
                Err(AuthError::InvalidProof),
                "{mech}"
            );
            assert!(!server.is_authenticated());
            // The exchange is over.
            assert!(matches!(
                server.handle_client_final(&client_final),
                Err(AuthError::OutOfOrder {
                    state: "failed",
                    ..
                })
            ));
            // The server's in-band error reaches the client as a typed error.
            let e = ScramServerError::for_error(&AuthError::InvalidProof).message();
            assert_eq!(e, b"e=invalid-proof");
            assert_eq!(
                client.verify_server_final(&e),
                Err(AuthError::ServerRejected(ScramServerError::InvalidProof))
            );
        }
    }

    #[test]
    fn tampered_server_signature_is_rejected_by_client() {
        for mech in MECHS {
            let (client, mut server, client_final) = exchange(mech, "user", "pw", "pw");
            let server_final = server.handle_client_final(&client_final).unwrap();
            let mut signature = BASE64.decode(&server_final[2..]).unwrap();
            signature[0] ^= 1;
            let tampered = format!("v={}", BASE64.encode(&signature));
            assert_eq!(
                client.verify_server_final(tampered.as_bytes()),
                Err(AuthError::ServerSignatureMismatch)
            );
            // Truncated and empty signatures too.
            let short = format!("v={}", BASE64.encode(&signature[1..]));
            assert_eq!(
                client.verify_server_final(short.as_bytes()),
                Err(AuthError::ServerSignatureMismatch)
            );
            assert_eq!(
                client.verify_server_final(b"v="),
                Err(AuthError::ServerSignatureMismatch)
            );
        }
    }

    #[test]
    fn server_errors_are_typed() {
        let (client, _, _) = exchange(Mechanism::ScramSha1, "user", "pw", "pw");
        for (wire, want) in [
            ("e=unknown-user", ScramServerError::UnknownUser),
            ("e=invalid-proof", ScramServerError::InvalidProof),
            ("e=other-error", ScramServerError::OtherError),
            ("e=no-resources", ScramServerError::NoResources),
            (
                "e=something-new",
                ScramServerError::Other("something-new".into()),
            ),
        ] {
            assert_eq!(
                client.verify_server_final(wire.as_bytes()),
                Err(AuthError::ServerRejected(want.clone()))
            );
            assert_eq!(want.message(), wire.as_bytes());
        }
        // An error instead of server-first.
        let mut client = ScramClient::new(Mechanism::ScramSha1, "user", "pw", "abc").unwrap();
        assert_eq!(
            client.handle_server_first(b"e=unknown-user"),
            Err(AuthError::ServerRejected(ScramServerError::UnknownUser))
        );
    }

    fn client_for_server_first(server_first: &str) -> Result<Vec<u8>, AuthError> {
        let mut client = ScramClient::new(Mechanism::ScramSha256, "user", "pw", "abc").unwrap();
        client.handle_server_first(server_first.as_bytes())
    }

    fn malformed(
        result: Result<impl fmt::Debug, AuthError>,
    ) -> (&'static str, usize, &'static str) {
        match result {
            Err(AuthError::Malformed {
                message,
                offset,
                reason,
            }) => (message, offset, reason),
            other => panic!("expected Malformed, got {other:?}"),
        }
    }

    #[test]
    fn nonce_mismatch() {
        // The server's nonce does not start with ours.
        assert_eq!(
            client_for_server_first("r=abXdef,s=c2FsdA==,i=1"),
            Err(AuthError::NonceMismatch)
        );
        // The server added nothing.
        assert_eq!(
            client_for_server_first("r=abc,s=c2FsdA==,i=1"),
            Err(AuthError::NonceMismatch)
        );
        // A prefix of ours is not enough.
        assert_eq!(
            client_for_server_first("r=ab,s=c2FsdA==,i=1"),
            Err(AuthError::NonceMismatch)
        );
        assert!(client_for_server_first("r=abcdef,s=c2FsdA==,i=1").is_ok());

        // The server sees a client-final with another nonce.
        let (_, mut server, client_final) = exchange(Mechanism::ScramSha1, "user", "pw", "pw");
        let text = String::from_utf8(client_final).unwrap();
        let forged = text.replace("S3rv3rN0nc3", "S3rv3rN0nc4");
        assert_eq!(
            server.handle_client_final(forged.as_bytes()),
            Err(AuthError::NonceMismatch)
        );
    }

    #[test]
    fn malformed_server_first() {
        let ok = "r=abcdef,s=c2FsdA==,i=1";
        assert!(client_for_server_first(ok).is_ok());
        assert_eq!(
            malformed(client_for_server_first("")),
            ("server-first", 0, "expected an attribute `x=value`")
        );
        assert_eq!(
            malformed(client_for_server_first("s=c2FsdA==,r=abcdef,i=1")),
            ("server-first", 0, "expected r= (nonce)")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,i=1")),
            ("server-first", 9, "expected s= (salt)")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2FsdA==")),
            ("server-first", 19, "expected i= (iteration count)")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2FsdA==,")),
            ("server-first", 20, "expected an attribute `x=value`")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2Fs!A==,i=1")),
            ("server-first", 11, "salt is not valid base64")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2FsdA=,i=1")),
            ("server-first", 11, "salt is not valid base64")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2FsdA==,i=")),
            (
                "server-first",
                22,
                "iteration count is not a decimal number"
            )
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2FsdA==,i=-1")),
            (
                "server-first",
                22,
                "iteration count is not a decimal number"
            )
        );
        assert_eq!(
            malformed(client_for_server_first("r=abcdef,s=c2FsdA==,i= 1")),
            (
                "server-first",
                22,
                "iteration count is not a decimal number"
            )
        );
        assert_eq!(
            malformed(client_for_server_first("r=abc\u{7f}def,s=c2FsdA==,i=1")),
            ("server-first", 2, "nonce has invalid characters")
        );
        assert_eq!(
            malformed(client_for_server_first("r=abc\u{e9}def,s=c2FsdA==,i=1")),
            ("server-first", 2, "nonce has invalid characters")
        );
        let mut client = ScramClient::new(Mechanism::ScramSha1, "user", "pw", "abc").unwrap();
        assert_eq!(
            malformed(client.handle_server_first(b"r=abcdef,s=\xff")),
            ("server-first", 11, "not UTF-8")
        );
        assert_eq!(
            client_for_server_first("m=must,r=abcdef,s=c2FsdA==,i=1"),
            Err(AuthError::UnsupportedExtension)
        );
        // Trailing extensions are ignored.
        assert!(client_for_server_first("r=abcdef,s=c2FsdA==,i=1,x=ext").is_ok());
    }

    #[test]
    fn iteration_count_bounds() {
        fn out_of_range<T>(iterations: u64) -> Result<T, AuthError> {
            Err(AuthError::IterationCountOutOfRange {
                iterations,
                max: MAX_ITERATIONS,
            })
        }
        assert_eq!(
            client_for_server_first("r=abcdef,s=c2FsdA==,i=0"),
            out_of_range(0)
        );
        assert_eq!(
            client_for_server_first("r=abcdef,s=c2FsdA==,i=000"),
            out_of_range(0)
        );
        assert_eq!(
            client_for_server_first("r=abcdef,s=c2FsdA==,i=10000001"),
            out_of_range(10_000_001)
        );
        assert_eq!(
            client_for_server_first("r=abcdef,s=c2FsdA==,i=4294967297"),
            out_of_range(4_294_967_297)
        );
        assert_eq!(
            client_for_server_first("r=abcdef,s=c2FsdA==,i=99999999999999999999999999"),
            out_of_range(u64::MAX)
        );
        assert_eq!(
            ScramCredentials::derive(Mechanism::ScramSha1, "pw", b"salt", 0),
            out_of_range(0)
        );
        assert_eq!(
            ScramCredentials::derive(Mechanism::ScramSha1, "pw", b"salt", MAX_ITERATIONS + 1),
            out_of_range(u64::from(MAX_ITERATIONS) + 1)
        );
    }

    fn server_for_client_first(client_first: &[u8]) -> Result<ClientFirst, AuthError> {
        ScramServer::new(Mechanism::ScramSha1, "srv")
            .unwrap()
            .handle_client_first(client_first)
    }

    #[test]
    fn client_first_variants() {
        // "y": the client could bind but thinks we cannot; that is fine.
        assert_eq!(
            server_for_client_first(b"y,,n=user,r=abc")
                .unwrap()
                .username,
            "user"
        );
        let first = server_for_client_first(b"n,a=ad=2Cmin,n=us=3Der,r=abc,x=ext").unwrap();
        assert_eq!(first.username, "us=er");
        assert_eq!(first.authzid.as_deref(), Some("ad,min"));
        assert_eq!(
            server_for_client_first(b"p=tls-unique,,n=user,r=abc"),
            Err(AuthError::ChannelBindingNotSupported)
        );
        assert_eq!(
            server_for_client_first(b"n,,m=ext,n=user,r=abc"),
            Err(AuthError::UnsupportedExtension)
        );
    }

    #[test]
    fn malformed_client_first() {
        let cases: [(&[u8], usize, &str); 13] = [
            (b"", 0, "expected a GS2 header"),
            (b"n", 0, "expected a GS2 header"),
            (b"n,", 2, "expected a GS2 header"),
            (
                b"x,,n=user,r=abc",
                0,
                "expected GS2 channel binding flag n, y or p=",
            ),
            (b"n,b=x,n=user,r=abc", 2, "invalid authorization identity"),
            (b"n,a=,n=user,r=abc", 2, "invalid authorization identity"),
            (b"n,,", 3, "expected an attribute `x=value`"),
            (b"n,,r=abc,n=user", 3, "expected n= (user name)"),
            (b"n,,n=user", 9, "expected r= (nonce)"),
            (b"n,,n=,r=abc", 5, "empty user name"),
            (b"n,,n=us=er,r=abc", 5, "invalid escape in user name"),
            (
                b"n,,n=user,r=",
                12,
                "nonce is empty or has invalid characters",
            ),
            (b"n,,n=us\xc3,r=abc", 7, "not UTF-8"),
        ];
        for (input, offset, reason) in cases {
            assert_eq!(
                malformed(server_for_client_first(input)),
                ("client-first", offset, reason),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// A server that has sent its server-first to a client with nonce `abc`
    /// (combined nonce `abcsrv`), and the client-final prefix it expects.
    fn server_awaiting_final() -> ScramServer {
        let stored = ScramCredentials::derive(Mechanism::ScramSha1, "pw", b"salt", 1).unwrap();
        let mut server = ScramServer::new(Mechanism::ScramSha1, "srv").unwrap();
        server.handle_client_first(b"n,,n=user,r=abc").unwrap();
        server.server_first(&stored).unwrap();
        server
    }

    #[test]
    fn malformed_client_final() {
        let proof = BASE64.encode([0u8; 20]);
        let with = |s: &str| server_awaiting_final().handle_client_final(s.as_bytes());
        assert_eq!(
            with(&format!("c=biws,r=abcsrv,p={proof}")),
            Err(AuthError::InvalidProof)
        );
        assert_eq!(
            with(&format!("c=biws,r=abcsrv,x=ext,p={proof}")),
            Err(AuthError::InvalidProof)
        );
        // c= must repeat the GS2 header (here "n,,"); "y,," is eSws.
        assert_eq!(
            with(&format!("c=eSws,r=abcsrv,p={proof}")),
            Err(AuthError::ChannelBindingMismatch)
        );
        assert_eq!(
            malformed(with("")),
            ("client-final", 0, "expected an attribute `x=value`")
        );
        assert_eq!(
            malformed(with(&format!("r=abcsrv,c=biws,p={proof}"))),
            ("client-final", 0, "expected c= (channel binding)")
        );
        assert_eq!(
            malformed(with(&format!("c=bi*s,r=abcsrv,p={proof}"))),
            ("client-final", 2, "channel binding is not valid base64")
        );
        assert_eq!(
            malformed(with(&format!("c=biws,p={proof}"))),
            ("client-final", 7, "expected r= (nonce)")
        );
        assert_eq!(
            malformed(with("c=biws,r=abcsrv")),
            ("client-final", 15, "expected p= (proof)")
        );
        assert_eq!(
            malformed(with(&format!("c=biws,r=abcsrv,p={proof},x=1"))),
            ("client-final", 47, "p= (proof) must be the last attribute")
        );
        assert_eq!(
            malformed(with("c=biws,r=abcsrv,p=!!!!")),
            ("client-final", 18, "proof is not valid base64")
        );
        assert_eq!(
            malformed(with("c=biws,r=abcsrv,p=AAAA")),
            ("client-final", 18, "proof has the wrong length")
        );
        assert_eq!(
            malformed(server_awaiting_final().handle_client_final(b"c=biws,r=abc\xffsrv")),
            ("client-final", 12, "not UTF-8")
        );
    }

    #[test]
    fn malformed_server_final() {
        let (client, _, _) = exchange(Mechanism::ScramSha1, "user", "pw", "pw");
        assert_eq!(
            malformed(client.verify_server_final(b"")),
            ("server-final", 0, "expected an attribute `x=value`")
        );
        assert_eq!(
            malformed(client.verify_server_final(b"x=abc")),
            ("server-final", 0, "expected v= (verifier) or e= (error)")
        );
        assert_eq!(
            malformed(client.verify_server_final(b"v=***")),
            ("server-final", 2, "server signature is not valid base64")
        );
        assert_eq!(
            malformed(client.verify_server_final(b"v=\xff")),
            ("server-final", 2, "not UTF-8")
        );
    }

    #[test]
    fn wrong_step_order() {
        let mech = Mechanism::ScramSha256;
        let stored = ScramCredentials::derive(mech, "pw", b"salt", 1).unwrap();

        // Client: server-final before server-first.
        let mut client = ScramClient::new(mech, "user", "pw", "abc").unwrap();
        assert_eq!(
            client.verify_server_final(b"v=AAAA"),
            Err(AuthError::OutOfOrder {
                step: "verify_server_final",
                state: "awaiting server-first"
            })
        );
        // Client: server-first twice.
        let mut server = ScramServer::new(mech, "srv").unwrap();
        server.handle_client_first(&client.client_first()).unwrap();
        let server_first = server.server_first(&stored).unwrap();
        let client_final = client.handle_server_first(&server_first).unwrap();
        assert_eq!(
            client.handle_server_first(&server_first),
            Err(AuthError::OutOfOrder {
                step: "handle_server_first",
                state: "awaiting server-final"
            })
        );
        // Which did not break the exchange.
        let server_final = server.handle_client_final(&client_final).unwrap();
        client.verify_server_final(&server_final).unwrap();
        // Server: everything after done.
        assert!(matches!(
            server.handle_client_first(b"n,,n=user,r=abc"),
            Err(AuthError::OutOfOrder { state: "done", .. })
        ));
        assert!(matches!(
            server.server_first(&stored),
            Err(AuthError::OutOfOrder { state: "done", .. })
        ));
        assert!(matches!(
            server.handle_client_final(&client_final),
            Err(AuthError::OutOfOrder { state: "done", .. })
        ));
        assert!(server.is_authenticated());

        // Client after a failed server-first.
        let mut client = ScramClient::new(mech, "user", "pw", "abc").unwrap();
        assert!(client.handle_server_first(b"garbage").is_err());
        assert!(matches!(
            client.handle_server_first(&server_first),
            Err(AuthError::OutOfOrder {
                state: "failed",
                ..
            })
        ));

        // Server: server-first and client-final before client-first.
        let mut server = ScramServer::new(mech, "srv").unwrap();
        assert_eq!(
            server.server_first(&stored),
            Err(AuthError::OutOfOrder {
                step: "server_first",
                state: "awaiting client-first"
            })
        );
        assert_eq!(
            server.handle_client_final(&client_final),
            Err(AuthError::OutOfOrder {
                step: "handle_client_final",
                state: "awaiting client-first"
            })
        );
        // Server: client-final before server-first, client-first twice.
        server.handle_client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(
            server.handle_client_final(&client_final),
            Err(AuthError::OutOfOrder {
                step: "handle_client_final",
                state: "awaiting credentials"
            })
        );
        assert!(matches!(
            server.handle_client_first(b"n,,n=user,r=abc"),
            Err(AuthError::OutOfOrder { .. })
        ));
        // None of which broke the exchange.
        assert!(server.server_first(&stored).is_ok());
    }

    #[test]
    fn credentials_must_match_the_mechanism() {
        let sha1 = ScramCredentials::derive(Mechanism::ScramSha1, "pw", b"salt", 1).unwrap();
        let mut server = ScramServer::new(Mechanism::ScramSha256, "srv").unwrap();
        server.handle_client_first(b"n,,n=user,r=abc").unwrap();
        assert_eq!(
            server.server_first(&sha1),
            Err(AuthError::UnsupportedMechanism {
                mechanism: Mechanism::ScramSha1
            })
        );
        let mut bad = ScramCredentials::derive(Mechanism::ScramSha1, "pw", b"salt", 1).unwrap();
        bad.stored_key.pop();
        let mut server = ScramServer::new(Mechanism::ScramSha1, "srv").unwrap();
        server.handle_client_first(b"n,,n=user,r=abc").unwrap();
        assert!(server.server_first(&bad).is_err());
        let mut bad = ScramCredentials::derive(Mechanism::ScramSha1, "pw", b"salt", 1).unwrap();
        bad.iterations = 0;
        let mut server = ScramServer::new(Mechanism::ScramSha1, "srv").unwrap();
        server.handle_client_first(b"n,,n=user,r=abc").unwrap();
        assert!(matches!(
            server.server_first(&bad),
            Err(AuthError::IterationCountOutOfRange { iterations: 0, .. })
        ));
    }

    #[test]
    fn constructors_validate() {
        let plain = Err(AuthError::UnsupportedMechanism {
            mechanism: Mechanism::Plain,
        });
        assert_eq!(
            ScramClient::new(Mechanism::Plain, "u", "p", "abc").map(|_| ()),
            plain
        );
        assert_eq!(ScramServer::new(Mechanism::Plain, "abc").map(|_| ()), plain);
        assert_eq!(
            ScramCredentials::derive(Mechanism::Plain, "p", b"s", 1).map(|_| ()),
            plain
        );
        for nonce in ["", "a,b", "a b", "caf\u{e9}", "a\nb"] {
            assert_eq!(
                ScramClient::new(Mechanism::ScramSha1, "u", "p", nonce).map(|_| ()),
                Err(AuthError::InvalidNonce)
            );
            assert_eq!(
                ScramServer::new(Mechanism::ScramSha1, nonce).map(|_| ()),
                Err(AuthError::InvalidNonce)
            );
        }
        let creds = Credentials::new("user", "pw");
        let client = ScramClient::with_credentials(Mechanism::ScramSha512, &creds, "abc").unwrap();
        assert_eq!(client.mechanism(), Mechanism::ScramSha512);
    }

    #[test]
    fn debug_hides_secrets() {
        let stored = ScramCredentials::derive(Mechanism::ScramSha1, "hunter2", b"salt", 1).unwrap();
        let shown = format!("{stored:?}");
        assert!(!shown.contains(&BASE64.encode(&stored.stored_key)));
        assert!(!shown.contains(&format!("{:?}", stored.server_key)));
        let client = ScramClient::new(Mechanism::ScramSha1, "user", "hunter2", "abc").unwrap();
        assert!(!format!("{client:?}").contains("hunter2"));
    }

    #[test]
    fn server_error_values_round_trip() {
        for (error, name) in ScramServerError::KNOWN {
            assert_eq!(ScramServerError::from_value(name), error);
            assert_eq!(error.as_str(), name);
        }
        assert_eq!(
            ScramServerError::for_error(&AuthError::UnknownUser),
            ScramServerError::UnknownUser
        );
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..96),
            "[a-z=,0-9A-Z+/ ]{0,64}".prop_map(String::into_bytes),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn handle_server_first_never_panics(tail in bytes(), i in 0u32..40) {
            let mut client = ScramClient::new(Mechanism::ScramSha1, "user", "pw", "abc").unwrap();
            let _ = client.handle_server_first(&tail);
            let mut client = ScramClient::new(Mechanism::ScramSha1, "user", "pw", "abc").unwrap();
            let mut message = format!("r=abcX,s=c2FsdA==,i={i}").into_bytes();
            message.extend_from_slice(&tail);
            if client.handle_server_first(&message).is_ok() {
                let _ = client.verify_server_final(&tail);
            }
        }

        #[test]
        fn handle_client_first_never_panics(tail in bytes()) {
            let _ = server_for_client_first(&tail);
            let _ = server_for_client_first(&[b"n,,n=user,".as_slice(), &tail].concat());
            let _ = server_for_client_first(&[b"n,,".as_slice(), &tail].concat());
        }

        #[test]
        fn handle_client_final_never_panics(tail in bytes()) {
            let _ = server_awaiting_final().handle_client_final(&tail);
            let message = [b"c=biws,r=abcsrv,".as_slice(), &tail].concat();
            let _ = server_awaiting_final().handle_client_final(&message);
        }
    }
}
