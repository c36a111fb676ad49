//! The node's users: passwords for PLAIN, SCRAM keys derived on first use
//! (with a seeded salt), and who may run admin commands.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::auth::{Mechanism, ScramCredentials};
use crate::bucket::Rng;

/// The user store.
#[derive(Debug, Clone)]
pub(crate) struct Users {
    passwords: BTreeMap<String, String>,
    admins: BTreeSet<String>,
    iterations: u32,
    scram: HashMap<(String, Mechanism), ScramCredentials>,
}

impl Users {
    pub(crate) fn new(
        passwords: BTreeMap<String, String>,
        admins: BTreeSet<String>,
        iterations: u32,
    ) -> Self {
        Self {
            passwords,
            admins,
            iterations,
            scram: HashMap::new(),
        }
    }

    /// Whether `user` exists and `password` is theirs (PLAIN).
    pub(crate) fn password(&self, user: &str) -> Option<&str> {
        self.passwords.get(user).map(String::as_str)
    }

    /// Whether `user` may run admin commands.
    pub(crate) fn is_admin(&self, user: &str) -> bool {
        self.admins.contains(user)
    }

    /// The stored SCRAM keys of `user` for `mechanism`, derived once.
    pub(crate) fn scram(
        &mut self,
        user: &str,
        mechanism: Mechanism,
        rng: &mut Rng,
    ) -> Option<ScramCredentials> {
        let key = (user.to_owned(), mechanism);
        if let Some(found) = self.scram.get(&key) {
            return Some(found.clone());
        }
        let password = self.passwords.get(user)?;
        let salt = rng.hex(32);
        let derived =
            ScramCredentials::derive(mechanism, password, salt.as_bytes(), self.iterations).ok()?;
        self.scram.insert(key, derived.clone());
        Some(derived)
    }
}
