//! A small deterministic pseudo-random generator (SplitMix64) for vbucket
//! uuids, SASL nonces and salts: the same seed gives the same run.

/// SplitMix64: 64 bits of state, good statistical quality, no dependencies.
/// Not for cryptography; a test server only needs reproducibility.
#[derive(Debug, Clone)]
pub(crate) struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub(crate) const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A random non-zero value (a vbucket uuid is never 0).
    pub(crate) fn nonzero_u64(&mut self) -> u64 {
        loop {
            let v = self.next_u64();
            if v != 0 {
                return v;
            }
        }
    }

    /// `len` random lowercase hex characters (nonces, salts).
    pub(crate) fn hex(&mut self, len: usize) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(len);
        let mut bits = 0u64;
        for i in 0..len {
            if i % 16 == 0 {
                bits = self.next_u64();
            }
            let digit = DIGITS.get((bits & 0xf) as usize).copied().unwrap_or(b'0');
            out.push(char::from(digit));
            bits >>= 4;
        }
        out
    }

    /// A derived generator for an independent purpose (so that, say, nonces
    /// drawn for connections do not shift the uuids of vbuckets).
    pub(crate) fn fork(&mut self, salt: u64) -> Rng {
        Rng::new(self.next_u64() ^ salt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs[0], xs[1]);
        assert_ne!(Rng::new(8).next_u64(), xs[0]);
        let nonce = a.hex(24);
        assert_eq!(nonce.len(), 24);
        assert!(nonce.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a.nonzero_u64(), 0);
    }
}
