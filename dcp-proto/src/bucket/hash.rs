//! Which vbucket a key lives in: the CRC32 hashing every Couchbase client
//! uses (`hashAlgorithm: "CRC"` in the bucket config).

/// The vbucket of `key` among `num_vbuckets`:
/// `((crc32(key) >> 16) & 0x7fff) % num_vbuckets`.
///
/// `num_vbuckets` of 0 is treated as 1.
///
/// ```
/// use dcp_proto::bucket::vbucket_for_key;
/// assert!(vbucket_for_key(b"hello", 1024) < 1024);
/// assert_eq!(vbucket_for_key(b"anything", 1), 0);
/// ```
pub fn vbucket_for_key(key: &[u8], num_vbuckets: u16) -> u16 {
    let crc = crc32fast::hash(key);
    let hashed = (crc >> 16) & 0x7fff;
    let n = u32::from(num_vbuckets.max(1));
    // Less than `num_vbuckets`, so it fits.
    u16::try_from(hashed % n).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        // crc32("hello") = 0x3610a686 -> 0x3610 & 0x7fff = 13840.
        assert_eq!(crc32fast::hash(b"hello"), 0x3610_a686);
        assert_eq!(vbucket_for_key(b"hello", 1024), 13840 % 1024);
        assert_eq!(vbucket_for_key(b"hello", 0), 0);
        // Spread: 64 vbuckets all get keys from 10k keys.
        let mut seen = [false; 64];
        for i in 0..10_000 {
            let vb = vbucket_for_key(format!("key-{i}").as_bytes(), 64);
            seen[usize::from(vb)] = true;
        }
        assert!(seen.iter().all(|&s| s));
    }
}
