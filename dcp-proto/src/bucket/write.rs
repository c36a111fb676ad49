//! Document operations on one vbucket, with memcached's rules: CAS checks,
//! ADD/REPLACE existence checks, APPEND/PREPEND, counters, TTLs, touch,
//! expiry on access. Every successful change takes a new seqno.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};

use super::document::{Document, DocumentKind, tombstone_value};
use super::error::BucketError;
use super::vbucket::{VBucket, unix_secs};
use crate::codec::Datatype;
use crate::msg::{VbucketState, XattrValue};

/// The longest key memcached accepts.
pub const MAX_KEY_LEN: usize = 250;

/// Expiry values up to this many seconds are relative to now; larger ones
/// are absolute Unix times (memcached's rule).
pub const RELATIVE_EXPIRY_LIMIT: u32 = 30 * 24 * 3600;

/// Where a successful write landed: the token a client can wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MutationInfo {
    /// The vbucket.
    pub vbucket: u16,
    /// The vbucket's current uuid.
    pub vbucket_uuid: u64,
    /// The seqno the write took.
    pub seqno: u64,
    /// The new CAS.
    pub cas: u64,
}

/// How SET, ADD and REPLACE treat an existing document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreMode {
    /// Store whether or not the key exists (with a CAS: only over that
    /// version).
    Set,
    /// Store only if no live document has the key.
    Add,
    /// Store only if a live document has the key.
    Replace,
}

/// Options of a store. Build with [`WriteOptions::new`] and the setters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct WriteOptions {
    /// Expected CAS (0 = any).
    pub cas: u64,
    /// Client flags.
    pub flags: u32,
    /// Expiry: 0 none, up to 30 days relative seconds, else absolute Unix
    /// seconds.
    pub expiry: u32,
    /// Datatype of the value as sent; `None` lets the bucket detect JSON.
    /// XATTR means the value starts with an xattr section.
    pub datatype: Option<Datatype>,
}

impl WriteOptions {
    /// No CAS, flags 0, no expiry, datatype detected.
    pub const fn new() -> Self {
        Self {
            cas: 0,
            flags: 0,
            expiry: 0,
            datatype: None,
        }
    }

    /// Sets the expected CAS.
    pub const fn cas(mut self, cas: u64) -> Self {
        self.cas = cas;
        self
    }

    /// Sets the client flags.
    pub const fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }

    /// Sets the expiry (memcached encoding).
    pub const fn expiry(mut self, expiry: u32) -> Self {
        self.expiry = expiry;
        self
    }

    /// Sets the datatype of the value as sent.
    pub const fn datatype(mut self, datatype: Datatype) -> Self {
        self.datatype = Some(datatype);
        self
    }
}

/// Converts a memcached expiry to absolute Unix seconds (0 = never).
pub(crate) fn absolute_expiry(expiry: u32, now_unix: u64) -> u32 {
    if expiry == 0 {
        0
    } else if expiry <= RELATIVE_EXPIRY_LIMIT {
        u32::try_from(now_unix + u64::from(expiry)).unwrap_or(u32::MAX)
    } else {
        expiry
    }
}

/// The datatype to store `value` with: XATTR as sent (validated), JSON if
/// the body is JSON.
pub(super) fn stored_datatype(
    value: &Bytes,
    sent: Option<Datatype>,
) -> Result<Datatype, BucketError> {
    let sent = sent.unwrap_or(Datatype::RAW);
    if sent.is_snappy() || !sent.is_valid() {
        return Err(BucketError::Invalid("unsupported datatype"));
    }
    let (xattr, body) = if sent.is_xattr() {
        let x = XattrValue::split(value).map_err(|_| BucketError::Invalid("bad xattrs"))?;
        (Datatype::XATTR, x.body)
    } else {
        (Datatype::RAW, value.clone())
    };
    let json = if is_json(&body) {
        Datatype::JSON
    } else {
        Datatype::RAW
    };
    Ok(xattr | json)
}

fn is_json(body: &[u8]) -> bool {
    !body.is_empty() && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok()
}

pub(super) fn check_key(key: &[u8]) -> Result<(), BucketError> {
    if key.is_empty() {
        Err(BucketError::Invalid("empty key"))
    } else if key.len() > MAX_KEY_LEN {
        Err(BucketError::Invalid("key longer than 250 bytes"))
    } else {
        Ok(())
    }
}

/// Parses a counter value: ASCII decimal digits fitting a u64.
fn parse_counter(body: &[u8]) -> Option<u64> {
    if body.is_empty() || body.len() > 20 || !body.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(body).ok()?.parse().ok()
}

impl VBucket {
    pub(super) fn require_active(&self) -> Result<(), BucketError> {
        if self.warming_up {
            return Err(BucketError::TemporaryFailure(self.id));
        }
        if self.state != VbucketState::Active {
            return Err(BucketError::NotMyVbucket {
                vbucket: self.id,
                state: self.state,
            });
        }
        Ok(())
    }

    fn info(&self, doc: &Document) -> MutationInfo {
        MutationInfo {
            vbucket: self.id,
            vbucket_uuid: self.uuid(),
            seqno: doc.seqno,
            cas: doc.cas,
        }
    }

    /// The live document under `key` at `now`; an expired one is expired
    /// first (a new seqno), as a read does on a data node.
    pub(super) fn live(&mut self, key: &[u8], now: SystemTime) -> Option<Arc<Document>> {
        let doc = Arc::clone(self.disk.get(self.write_collection, key)?);
        if doc.is_deleted() || self.collections.is_logically_deleted(&doc) {
            return None;
        }
        if doc.is_expired(unix_secs(now)) {
            // Not while a sync write of the key is pending (its commit
            // decides the next version).
            if !self.sync.is_pending(key) {
                self.tombstone(&doc, DocumentKind::Expiration, now);
            }
            return None;
        }
        Some(doc)
    }

    /// Writes a tombstone for `doc`.
    fn tombstone(&mut self, doc: &Document, kind: DocumentKind, now: SystemTime) -> Arc<Document> {
        let (value, datatype) = tombstone_value(doc);
        let delete_time = match kind {
            DocumentKind::Expiration => doc.expiry,
            _ => u32::try_from(unix_secs(now)).unwrap_or(u32::MAX),
        };
        self.commit(
            Document {
                key: doc.key.clone(),
                collection: doc.collection,
                value,
                datatype,
                flags: doc.flags,
                expiry: 0,
                cas: 0,
                rev_seqno: doc.rev_seqno + 1,
                seqno: 0,
                kind,
                delete_time,
            },
            now,
        )
    }

    /// Writes `xattrs` (a section as [`XattrValue::put`] builds it, empty
    /// body) onto a deleted or missing document, which stays deleted: what a
    /// sub-document mutation with AccessDeleted/CreateAsDeleted does. User
    /// xattrs can live on a tombstone only this way.
    pub(crate) fn set_deleted_xattrs(
        &mut self,
        key: &[u8],
        xattrs: Bytes,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_key(key)?;
        self.require_active()?;
        if self.live(key, now).is_some() {
            return Err(BucketError::KeyExists);
        }
        let doc = self.commit(
            Document {
                key: Bytes::copy_from_slice(key),
                collection: self.write_collection,
                value: xattrs,
                datatype: Datatype::XATTR,
                flags: 0,
                expiry: 0,
                cas: 0,
                rev_seqno: self.next_rev(key),
                seqno: 0,
                kind: DocumentKind::Deletion,
                delete_time: u32::try_from(unix_secs(now)).unwrap_or(u32::MAX),
            },
            now,
        );
        Ok(self.info(&doc))
    }

    /// The rev seqno a new version of `key` gets.
    pub(super) fn next_rev(&self, key: &[u8]) -> u64 {
        self.disk
            .get(self.write_collection, key)
            .map_or(1, |d| d.rev_seqno + 1)
    }

    pub(super) fn check_cas(existing: Option<&Arc<Document>>, cas: u64) -> Result<(), BucketError> {
        match (existing, cas) {
            (_, 0) => Ok(()),
            (None, _) => Err(BucketError::KeyNotFound),
            (Some(doc), cas) if doc.cas == cas => Ok(()),
            (Some(_), _) => Err(BucketError::KeyExists),
        }
    }

    /// SET / ADD / REPLACE.
    pub(crate) fn store(
        &mut self,
        mode: StoreMode,
        key: Bytes,
        value: Bytes,
        opts: WriteOptions,
        max_value: usize,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_key(&key)?;
        self.require_active()?;
        self.check_no_sync_write(&key)?;
        if value.len() > max_value {
            return Err(BucketError::ValueTooLarge {
                len: value.len(),
                max: max_value,
            });
        }
        let datatype = stored_datatype(&value, opts.datatype)?;
        let existing = self.live(&key, now);
        match mode {
            StoreMode::Add if opts.cas != 0 => return Err(BucketError::Invalid("CAS on ADD")),
            StoreMode::Add if existing.is_some() => return Err(BucketError::KeyExists),
            StoreMode::Replace if existing.is_none() => return Err(BucketError::KeyNotFound),
            _ => Self::check_cas(existing.as_ref(), opts.cas)?,
        }
        let doc = self.commit(
            Document {
                rev_seqno: self.next_rev(&key),
                collection: self.write_collection,
                key,
                value,
                datatype,
                flags: opts.flags,
                expiry: self.expiry_for(opts.expiry, now),
                cas: 0,
                seqno: 0,
                kind: DocumentKind::Mutation,
                delete_time: 0,
            },
            now,
        );
        Ok(self.info(&doc))
    }

    /// DELETE.
    pub(crate) fn delete(
        &mut self,
        key: &[u8],
        cas: u64,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_key(key)?;
        self.require_active()?;
        self.check_no_sync_write(key)?;
        let existing = self.live(key, now).ok_or(BucketError::KeyNotFound)?;
        Self::check_cas(Some(&existing), cas)?;
        let doc = self.tombstone(&existing, DocumentKind::Deletion, now);
        Ok(self.info(&doc))
    }

    /// Expires `key` now (what the expiry pager does once a TTL passed),
    /// whatever its TTL.
    pub(crate) fn expire(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        check_key(key)?;
        self.require_active()?;
        self.check_no_sync_write(key)?;
        let existing = self.live(key, now).ok_or(BucketError::KeyNotFound)?;
        let doc = self.tombstone(&existing, DocumentKind::Expiration, now);
        Ok(self.info(&doc))
    }

    /// Expires every live document whose TTL has passed at `now` (the
    /// expiry pager); returns how many.
    pub(crate) fn expire_due(&mut self, now: SystemTime) -> usize {
        if self.require_active().is_err() {
            return 0;
        }
        let secs = unix_secs(now);
        let due: Vec<Arc<Document>> = self
            .disk
            .latest()
            .filter(|d| {
                d.is_expired(secs)
                    && !self.sync.is_pending(&d.key)
                    && !self.collections.is_logically_deleted(d)
            })
            .cloned()
            .collect();
        for doc in &due {
            self.tombstone(doc, DocumentKind::Expiration, now);
        }
        due.len()
    }

    /// APPEND (`append`) or PREPEND: the flags, expiry and xattrs stay.
    pub(crate) fn concat(
        &mut self,
        append: bool,
        key: Bytes,
        value: &[u8],
        cas: u64,
        max_value: usize,
        now: SystemTime,
    ) -> Result<MutationInfo, BucketError> {
        let doc = self.concatenated(append, key, value, cas, max_value, now)?;
        let doc = self.commit(doc, now);
        Ok(self.info(&doc))
    }

    /// The new version an APPEND or PREPEND makes (checked, not written).
    pub(super) fn concatenated(
        &mut self,
        append: bool,
        key: Bytes,
        value: &[u8],
        cas: u64,
        max_value: usize,
        now: SystemTime,
    ) -> Result<Document, BucketError> {
        check_key(&key)?;
        self.require_active()?;
        self.check_no_sync_write(&key)?;
        let existing = self.live(&key, now).ok_or(BucketError::NotStored)?;
        Self::check_cas(Some(&existing), cas)?;
        let xattrs = existing.xattrs();
        let body = existing.body();
        let len = existing.value.len() + value.len();
        if len > max_value {
            return Err(BucketError::ValueTooLarge {
                len,
                max: max_value,
            });
        }
        let mut joined = BytesMut::with_capacity(len);
        if let Some(x) = &xattrs {
            let section = existing.value.len() - x.body.len();
            joined.extend_from_slice(existing.value.get(..section).unwrap_or_default());
        }
        let (first, second) = if append {
            (&body[..], value)
        } else {
            (value, &body[..])
        };
        let new_body_start = joined.len();
        joined.extend_from_slice(first);
        joined.extend_from_slice(second);
        let json = is_json(joined.get(new_body_start..).unwrap_or_default());
        let mut datatype = if xattrs.is_some() {
            Datatype::XATTR
        } else {
            Datatype::RAW
        };
        if json {
            datatype = datatype | Datatype::JSON;
        }
        Ok(Document {
            key,
            collection: self.write_collection,
            value: joined.freeze(),
            datatype,
            flags: existing.flags,
            expiry: existing.expiry,
            cas: 0,
            rev_seqno: existing.rev_seqno + 1,
            seqno: 0,
            kind: DocumentKind::Mutation,
            delete_time: 0,
        })
    }

    /// INCREMENT (`incr`) or DECREMENT by `delta`. A missing key is created
    /// with `initial` if given (with `expiry`), else it is KeyNotFound.
    /// Increments wrap at 2^64; decrements stop at 0.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn counter(
        &mut self,
        incr: bool,
        key: Bytes,
        delta: u64,
        initial: Option<u64>,
        expiry: u32,
        cas: u64,
        now: SystemTime,
    ) -> Result<(u64, MutationInfo), BucketError> {
        let (value, doc) = self.counted(incr, key, delta, initial, expiry, cas, now)?;
        let doc = self.commit(doc, now);
        Ok((value, self.info(&doc)))
    }

    /// The new value and version an INCREMENT or DECREMENT makes (checked,
    /// not written).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn counted(
        &mut self,
        incr: bool,
        key: Bytes,
        delta: u64,
        initial: Option<u64>,
        expiry: u32,
        cas: u64,
        now: SystemTime,
    ) -> Result<(u64, Document), BucketError> {
        check_key(&key)?;
        self.require_active()?;
        self.check_no_sync_write(&key)?;
        let existing = self.live(&key, now);
        Self::check_cas(existing.as_ref(), cas)?;
        let (value, flags, expiry, xattr_section) = match &existing {
            Some(doc) => {
                let current = parse_counter(&doc.body()).ok_or(BucketError::DeltaBadValue)?;
                let next = if incr {
                    current.wrapping_add(delta)
                } else {
                    current.saturating_sub(delta)
                };
                let section = doc
                    .xattrs()
                    .map(|x| doc.value.slice(..doc.value.len() - x.body.len()));
                (next, doc.flags, doc.expiry, section)
            }
            None => {
                let initial = initial.ok_or(BucketError::KeyNotFound)?;
                (initial, 0, self.expiry_for(expiry, now), None)
            }
        };
        let text = value.to_string();
        let (stored, datatype) = match xattr_section {
            Some(section) => {
                let mut v = BytesMut::from(&section[..]);
                v.extend_from_slice(text.as_bytes());
                (v.freeze(), Datatype::XATTR | Datatype::JSON)
            }
            None => (Bytes::from(text), Datatype::JSON),
        };
        let doc = Document {
            rev_seqno: self.next_rev(&key),
            collection: self.write_collection,
            key,
            value: stored,
            datatype,
            flags,
            expiry,
            cas: 0,
            seqno: 0,
            kind: DocumentKind::Mutation,
            delete_time: 0,
        };
        Ok((value, doc))
    }

    /// TOUCH: sets a new expiry (a new version, as on a data node).
    pub(crate) fn touch(
        &mut self,
        key: &[u8],
        expiry: u32,
        now: SystemTime,
    ) -> Result<Arc<Document>, BucketError> {
        check_key(key)?;
        self.require_active()?;
        self.check_no_sync_write(key)?;
        let existing = self.live(key, now).ok_or(BucketError::KeyNotFound)?;
        Ok(self.commit(
            Document {
                expiry: self.expiry_for(expiry, now),
                cas: 0,
                seqno: 0,
                rev_seqno: existing.rev_seqno + 1,
                ..(*existing).clone()
            },
            now,
        ))
    }

    /// GET: the live document (an expired one is expired on access).
    pub(crate) fn get(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Arc<Document>, BucketError> {
        check_key(key)?;
        self.require_active()?;
        self.live(key, now).ok_or(BucketError::KeyNotFound)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    const MAX: usize = 1024;

    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn vb() -> VBucket {
        VBucket::new(3, 0xabc, 100, 10)
    }

    fn set(
        vb: &mut VBucket,
        mode: StoreMode,
        key: &str,
        value: &str,
        opts: WriteOptions,
    ) -> Result<MutationInfo, BucketError> {
        vb.store(
            mode,
            Bytes::copy_from_slice(key.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
            opts,
            MAX,
            t(1000),
        )
    }

    #[test]
    fn store_modes_and_cas() {
        let mut v = vb();
        let o = WriteOptions::new();
        assert_eq!(
            set(&mut v, StoreMode::Replace, "k", "1", o),
            Err(BucketError::KeyNotFound)
        );
        let a = set(&mut v, StoreMode::Add, "k", "1", o).unwrap();
        assert_eq!((a.vbucket, a.vbucket_uuid, a.seqno), (3, 0xabc, 1));
        assert_eq!(
            set(&mut v, StoreMode::Add, "k", "2", o),
            Err(BucketError::KeyExists)
        );
        assert_eq!(
            set(&mut v, StoreMode::Add, "z", "2", o.cas(5)),
            Err(BucketError::Invalid("CAS on ADD"))
        );
        assert_eq!(
            set(&mut v, StoreMode::Set, "k", "2", o.cas(a.cas + 1)),
            Err(BucketError::KeyExists)
        );
        assert_eq!(
            set(&mut v, StoreMode::Set, "nope", "2", o.cas(1)),
            Err(BucketError::KeyNotFound)
        );
        let b = set(
            &mut v,
            StoreMode::Replace,
            "k",
            "{\"a\":1}",
            o.cas(a.cas).flags(7),
        )
        .unwrap();
        assert_eq!(b.seqno, 2);
        let doc = v.get(b"k", t(1000)).unwrap();
        assert_eq!(
            (doc.flags, doc.rev_seqno, doc.datatype),
            (7, 2, Datatype::JSON)
        );
        assert_eq!(
            set(&mut v, StoreMode::Set, "", "x", o),
            Err(BucketError::Invalid("empty key"))
        );
        let big = "x".repeat(MAX + 1);
        assert!(matches!(
            set(&mut v, StoreMode::Set, "k", &big, o),
            Err(BucketError::ValueTooLarge { .. })
        ));
    }

    #[test]
    fn delete_expire_and_ttl() {
        let mut v = vb();
        let o = WriteOptions::new();
        set(&mut v, StoreMode::Set, "a", "1", o.expiry(10)).unwrap();
        assert_eq!(v.peek(b"a").unwrap().expiry, 1010);
        // Read after the TTL: expired on access at a new seqno.
        assert_eq!(v.get(b"a", t(1010)), Err(BucketError::KeyNotFound));
        let tomb = v.peek(b"a").unwrap();
        assert_eq!(
            (tomb.kind, tomb.seqno, tomb.delete_time),
            (DocumentKind::Expiration, 2, 1010)
        );
        assert_eq!(v.delete(b"a", 0, t(1011)), Err(BucketError::KeyNotFound));
        set(&mut v, StoreMode::Set, "b", "1", o).unwrap();
        let cas = v.peek(b"b").unwrap().cas;
        assert_eq!(
            v.delete(b"b", cas + 1, t(1011)),
            Err(BucketError::KeyExists)
        );
        let d = v.delete(b"b", cas, t(1011)).unwrap();
        assert_eq!(v.peek(b"b").unwrap().kind, DocumentKind::Deletion);
        assert_eq!(v.peek(b"b").unwrap().delete_time, 1011);
        assert_eq!(d.seqno, 4);
        set(&mut v, StoreMode::Add, "b", "again", o).unwrap();
        assert_eq!(v.peek(b"b").unwrap().rev_seqno, 3);
        set(&mut v, StoreMode::Set, "c", "1", o.expiry(5)).unwrap();
        set(&mut v, StoreMode::Set, "d", "1", o.expiry(500)).unwrap();
        assert_eq!(v.expire_due(t(1100)), 1);
        assert!(v.expire(b"d", t(1100)).is_ok());
        assert_eq!(v.live_count(), 1);
    }

    #[test]
    fn concat_counter_touch() {
        let mut v = vb();
        let o = WriteOptions::new();
        assert_eq!(
            v.concat(true, Bytes::from_static(b"a"), b"x", 0, MAX, t(1)),
            Err(BucketError::NotStored)
        );
        set(&mut v, StoreMode::Set, "a", "mid", o.flags(9)).unwrap();
        v.concat(true, Bytes::from_static(b"a"), b"-end", 0, MAX, t(1))
            .unwrap();
        v.concat(false, Bytes::from_static(b"a"), b"start-", 0, MAX, t(1))
            .unwrap();
        let doc = v.get(b"a", t(1)).unwrap();
        assert_eq!((&doc.value[..], doc.flags), (&b"start-mid-end"[..], 9));

        let key = || Bytes::from_static(b"n");
        assert_eq!(
            v.counter(true, key(), 1, None, 0, 0, t(1)),
            Err(BucketError::KeyNotFound)
        );
        assert_eq!(
            v.counter(true, key(), 1, Some(10), 0, 0, t(1)).unwrap().0,
            10
        );
        assert_eq!(
            v.counter(true, key(), 5, Some(0), 0, 0, t(1)).unwrap().0,
            15
        );
        assert_eq!(v.counter(false, key(), 50, None, 0, 0, t(1)).unwrap().0, 0);
        assert_eq!(
            v.counter(true, Bytes::from_static(b"a"), 1, None, 0, 0, t(1)),
            Err(BucketError::DeltaBadValue)
        );
        set(&mut v, StoreMode::Set, "m", "18446744073709551615", o).unwrap();
        assert_eq!(
            v.counter(true, Bytes::from_static(b"m"), 2, None, 0, 0, t(1))
                .unwrap()
                .0,
            1
        );

        let touched = v.touch(b"a", 100, t(50)).unwrap();
        assert_eq!((touched.expiry, touched.flags), (150, 9));
        assert_eq!(v.touch(b"zz", 1, t(50)), Err(BucketError::KeyNotFound));
    }

    #[test]
    fn xattrs_survive_appends_and_deletes_keep_system_ones() {
        let mut v = vb();
        let mut raw = BytesMut::new();
        XattrValue::put(&mut raw, &[(b"_sys", b"1"), (b"u", b"2")], b"ab");
        v.store(
            StoreMode::Set,
            Bytes::from_static(b"x"),
            raw.freeze(),
            WriteOptions::new().datatype(Datatype::XATTR),
            MAX,
            t(1),
        )
        .unwrap();
        v.concat(true, Bytes::from_static(b"x"), b"c", 0, MAX, t(1))
            .unwrap();
        let doc = v.get(b"x", t(1)).unwrap();
        assert_eq!(&doc.body()[..], b"abc");
        assert_eq!(doc.xattrs().unwrap().get(b"u"), Some(&b"2"[..]));
        v.delete(b"x", 0, t(1)).unwrap();
        let tomb = v.peek(b"x").unwrap();
        assert_eq!(tomb.datatype, Datatype::XATTR);
        assert_eq!(tomb.xattrs().unwrap().get(b"u"), None);
        assert!(
            v.store(
                StoreMode::Set,
                Bytes::from_static(b"bad"),
                Bytes::from_static(b"\0\0\0\x09zz"),
                WriteOptions::new().datatype(Datatype::XATTR),
                MAX,
                t(1),
            )
            .is_err()
        );
    }

    #[test]
    fn non_active_vbuckets_refuse() {
        let mut v = vb();
        v.set_state(VbucketState::Replica, 1);
        assert!(matches!(
            set(&mut v, StoreMode::Set, "k", "1", WriteOptions::new()),
            Err(BucketError::NotMyVbucket { .. })
        ));
        v.set_state(VbucketState::Active, 2);
        v.warming_up = true;
        assert_eq!(
            set(&mut v, StoreMode::Set, "k", "1", WriteOptions::new()),
            Err(BucketError::TemporaryFailure(3))
        );
    }
}
