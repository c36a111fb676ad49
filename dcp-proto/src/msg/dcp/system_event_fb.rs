//! Version-2 system event values: the four FlatBuffers tables of
//! kv_engine's `collections/events.fbs` (Collection, DroppedCollection,
//! Scope, DroppedScope), read and built by hand on the `flatbuffers` crate.
//!
//! Reading is two passes over the value, both bounds-checked: the crate's
//! [`Verifier`] first (every offset, vtable, string and UTF-8 checked, at
//! most one table), then a small safe reader that only follows what the
//! verifier accepted and still checks every index. Hostile bytes end in a
//! [`DecodeErrorKind::FlatBuffers`] naming the table and what was wrong;
//! nothing allocates in proportion to values the input claims.
//!
//! Field slots follow the schema's declaration order (slot `n` sits at
//! vtable offset `4 + 2n`); fields added by later server versions are
//! optional with the schema's defaults, so older and newer values read the
//! same way.

use bytes::Bytes;
use flatbuffers::{
    FlatBufferBuilder, ForwardsUOffset, InvalidFlatbuffer, Verifiable, Verifier, VerifierOptions,
};

use super::system_event::{CollectionDetails, SystemEventData, SystemEventId};
use crate::codec::{DecodeErrorKind, EncodeError};

/// Vtable offset of the field declared `n`-th in a table.
const fn slot(n: u16) -> u16 {
    4 + 2 * n
}

/// `table Collection` (create, flush and modify collection).
mod collection {
    use super::slot;
    pub(super) const UID: u16 = slot(0);
    pub(super) const SCOPE_ID: u16 = slot(1);
    pub(super) const COLLECTION_ID: u16 = slot(2);
    pub(super) const TTL_VALID: u16 = slot(3);
    pub(super) const MAX_TTL: u16 = slot(4);
    pub(super) const NAME: u16 = slot(5);
    pub(super) const HISTORY: u16 = slot(6);
    pub(super) const DEFAULT_COLLECTION_MVS: u16 = slot(7);
    pub(super) const METERED: u16 = slot(8);
    pub(super) const FLUSH_UID: u16 = slot(9);
}

/// `table DroppedCollection`.
mod dropped_collection {
    use super::slot;
    pub(super) const UID: u16 = slot(0);
    pub(super) const SCOPE_ID: u16 = slot(1);
    pub(super) const COLLECTION_ID: u16 = slot(2);
    pub(super) const SYSTEM_COLLECTION: u16 = slot(3);
}

/// `table Scope`.
mod scope {
    use super::slot;
    pub(super) const UID: u16 = slot(0);
    pub(super) const SCOPE_ID: u16 = slot(1);
    pub(super) const NAME: u16 = slot(2);
}

/// `table DroppedScope`.
mod dropped_scope {
    use super::slot;
    pub(super) const UID: u16 = slot(0);
    pub(super) const SCOPE_ID: u16 = slot(1);
    pub(super) const SYSTEM_SCOPE: u16 = slot(2);
}

/// Verifier shapes of the four tables (the crate's `Verifiable`).
struct CollectionShape;
struct DroppedCollectionShape;
struct ScopeShape;
struct DroppedScopeShape;

type VerifyResult = Result<(), InvalidFlatbuffer>;

impl Verifiable for CollectionShape {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> VerifyResult {
        use collection::*;
        v.visit_table(pos)?
            .visit_field::<u64>("uid", UID, false)?
            .visit_field::<u32>("scopeId", SCOPE_ID, false)?
            .visit_field::<u32>("collectionId", COLLECTION_ID, false)?
            .visit_field::<bool>("ttlValid", TTL_VALID, false)?
            .visit_field::<u32>("maxTtl", MAX_TTL, false)?
            .visit_field::<ForwardsUOffset<&str>>("name", NAME, true)?
            .visit_field::<bool>("history", HISTORY, false)?
            .visit_field::<u64>("defaultCollectionMVS", DEFAULT_COLLECTION_MVS, false)?
            .visit_field::<bool>("metered", METERED, false)?
            .visit_field::<u64>("flushUid", FLUSH_UID, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for DroppedCollectionShape {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> VerifyResult {
        use dropped_collection::*;
        v.visit_table(pos)?
            .visit_field::<u64>("uid", UID, false)?
            .visit_field::<u32>("scopeId", SCOPE_ID, false)?
            .visit_field::<u32>("collectionId", COLLECTION_ID, false)?
            .visit_field::<bool>("systemCollection", SYSTEM_COLLECTION, false)?
            .finish();
        Ok(())
    }
}

impl Verifiable for ScopeShape {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> VerifyResult {
        use scope::*;
        v.visit_table(pos)?
            .visit_field::<u64>("uid", UID, false)?
            .visit_field::<u32>("scopeId", SCOPE_ID, false)?
            .visit_field::<ForwardsUOffset<&str>>("name", NAME, true)?
            .finish();
        Ok(())
    }
}

impl Verifiable for DroppedScopeShape {
    fn run_verifier(v: &mut Verifier<'_, '_>, pos: usize) -> VerifyResult {
        use dropped_scope::*;
        v.visit_table(pos)?
            .visit_field::<u64>("uid", UID, false)?
            .visit_field::<u32>("scopeId", SCOPE_ID, false)?
            .visit_field::<bool>("systemScope", SYSTEM_SCOPE, false)?
            .finish();
        Ok(())
    }
}

/// Runs the crate's verifier over a root table of shape `T`: one table,
/// no nesting (every range it accepts lies inside the value).
fn verify<T: Verifiable>(table: &'static str, value: &[u8]) -> Result<(), DecodeErrorKind> {
    let opts = VerifierOptions {
        max_depth: 1,
        max_tables: 1,
        ..VerifierOptions::default()
    };
    let mut verifier = Verifier::new(&opts, value);
    <ForwardsUOffset<T>>::run_verifier(&mut verifier, 0).map_err(|e| DecodeErrorKind::FlatBuffers {
        table,
        reason: e.to_string(),
    })
}

/// A verified table, read with bounds-checked little-endian loads.
struct Table<'a> {
    table: &'static str,
    buf: &'a Bytes,
    pos: usize,
    vtable: usize,
    vtable_len: usize,
}

impl<'a> Table<'a> {
    /// Verifies `buf` as a root table of shape `T`, then opens it.
    fn open<T: Verifiable>(table: &'static str, buf: &'a Bytes) -> Result<Self, DecodeErrorKind> {
        verify::<T>(table, buf)?;
        let corrupt = || corrupt(table, "root table");
        let pos = usize::try_from(
            le::<4>(buf, 0)
                .map(u32::from_le_bytes)
                .ok_or_else(corrupt)?,
        )
        .map_err(|_| corrupt())?;
        let soffset = le::<4>(buf, pos)
            .map(i32::from_le_bytes)
            .ok_or_else(corrupt)?;
        let vtable = isize::try_from(pos)
            .ok()
            .and_then(|p| p.checked_sub(isize::try_from(soffset).ok()?))
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(corrupt)?;
        let vtable_len = usize::from(
            le::<2>(buf, vtable)
                .map(u16::from_le_bytes)
                .ok_or_else(corrupt)?,
        );
        Ok(Self {
            table,
            buf,
            pos,
            vtable,
            vtable_len,
        })
    }

    /// Where field `slot` sits, or `None` when the value omits it.
    fn field(&self, slot: u16) -> Option<usize> {
        let slot = usize::from(slot);
        if slot + 2 > self.vtable_len {
            return None;
        }
        let offset = le::<2>(self.buf, self.vtable + slot).map(u16::from_le_bytes)?;
        (offset != 0).then(|| self.pos + usize::from(offset))
    }

    fn scalar<const N: usize>(
        &self,
        slot: u16,
        name: &'static str,
    ) -> Result<Option<[u8; N]>, DecodeErrorKind> {
        match self.field(slot) {
            None => Ok(None),
            Some(at) => le::<N>(self.buf, at)
                .map(Some)
                .ok_or_else(|| corrupt(self.table, name)),
        }
    }

    fn u64(&self, slot: u16, name: &'static str) -> Result<u64, DecodeErrorKind> {
        Ok(self.scalar::<8>(slot, name)?.map_or(0, u64::from_le_bytes))
    }

    fn u32(&self, slot: u16, name: &'static str) -> Result<u32, DecodeErrorKind> {
        Ok(self.scalar::<4>(slot, name)?.map_or(0, u32::from_le_bytes))
    }

    fn bool(&self, slot: u16, name: &'static str) -> Result<bool, DecodeErrorKind> {
        Ok(self.scalar::<1>(slot, name)?.is_some_and(|[b]| b != 0))
    }

    /// A string field as a slice of the value (no copy).
    fn string(&self, slot: u16, name: &'static str) -> Result<Bytes, DecodeErrorKind> {
        let corrupt = || corrupt(self.table, name);
        let at = self.field(slot).ok_or_else(corrupt)?;
        let offset = le::<4>(self.buf, at)
            .map(u32::from_le_bytes)
            .ok_or_else(corrupt)?;
        let start = at
            .checked_add(usize::try_from(offset).map_err(|_| corrupt())?)
            .ok_or_else(corrupt)?;
        let len = le::<4>(self.buf, start)
            .map(u32::from_le_bytes)
            .ok_or_else(corrupt)?;
        let begin = start + 4;
        let end = begin
            .checked_add(usize::try_from(len).map_err(|_| corrupt())?)
            .ok_or_else(corrupt)?;
        if end > self.buf.len() {
            return Err(corrupt());
        }
        Ok(self.buf.slice(begin..end))
    }
}

/// `N` bytes at `at`, if the buffer has them.
fn le<const N: usize>(buf: &[u8], at: usize) -> Option<[u8; N]> {
    buf.get(at..at.checked_add(N)?)?.try_into().ok()
}

fn corrupt(table: &'static str, what: &'static str) -> DecodeErrorKind {
    DecodeErrorKind::FlatBuffers {
        table,
        reason: format!("{what} out of bounds"),
    }
}

/// Reads the table `event` carries (verified first).
pub(super) fn read(
    event: SystemEventId,
    value: &Bytes,
) -> Result<SystemEventData, DecodeErrorKind> {
    match event {
        SystemEventId::BeginCollection | SystemEventId::ModifyCollection => {
            use collection::*;
            let t = Table::open::<CollectionShape>("Collection", value)?;
            let ttl_valid = t.bool(TTL_VALID, "ttlValid")?;
            let max_ttl = t.u32(MAX_TTL, "maxTtl")?;
            let collection = CollectionDetails {
                manifest_uid: t.u64(UID, "uid")?,
                scope_id: t.u32(SCOPE_ID, "scopeId")?,
                collection_id: t.u32(COLLECTION_ID, "collectionId")?,
                name: t.string(NAME, "name")?,
                max_ttl: ttl_valid.then_some(max_ttl),
                history: t.bool(HISTORY, "history")?,
                metered: t.bool(METERED, "metered")?,
                flush_uid: t.u64(FLUSH_UID, "flushUid")?,
                default_collection_mvs: t.u64(DEFAULT_COLLECTION_MVS, "defaultCollectionMVS")?,
            };
            Ok(if event == SystemEventId::ModifyCollection {
                SystemEventData::ModifyCollection(collection)
            } else {
                SystemEventData::BeginCollection(collection)
            })
        }
        SystemEventId::EndCollection => {
            use dropped_collection::*;
            let t = Table::open::<DroppedCollectionShape>("DroppedCollection", value)?;
            Ok(SystemEventData::EndCollection {
                manifest_uid: t.u64(UID, "uid")?,
                scope_id: t.u32(SCOPE_ID, "scopeId")?,
                collection_id: t.u32(COLLECTION_ID, "collectionId")?,
                system: t.bool(SYSTEM_COLLECTION, "systemCollection")?,
            })
        }
        SystemEventId::CreateScope => {
            use scope::*;
            let t = Table::open::<ScopeShape>("Scope", value)?;
            Ok(SystemEventData::CreateScope {
                manifest_uid: t.u64(UID, "uid")?,
                scope_id: t.u32(SCOPE_ID, "scopeId")?,
                name: t.string(NAME, "name")?,
            })
        }
        SystemEventId::DropScope => {
            use dropped_scope::*;
            let t = Table::open::<DroppedScopeShape>("DroppedScope", value)?;
            Ok(SystemEventData::DropScope {
                manifest_uid: t.u64(UID, "uid")?,
                scope_id: t.u32(SCOPE_ID, "scopeId")?,
                system: t.bool(SYSTEM_SCOPE, "systemScope")?,
            })
        }
        // The caller rejects unknown ids before it gets here.
        SystemEventId::Unknown(_) => Err(DecodeErrorKind::FlatBuffers {
            table: "none",
            reason: "no table for an unknown event".to_owned(),
        }),
    }
}

fn utf8_name(name: &[u8]) -> Result<&str, EncodeError> {
    core::str::from_utf8(name).map_err(|_| EncodeError::InvalidField {
        field: "name",
        reason: "a FlatBuffers name must be UTF-8",
    })
}

/// Builds the table of `data` (fields at their schema defaults are left
/// out, as the server's builder does).
pub(super) fn build(data: &SystemEventData) -> Result<Bytes, EncodeError> {
    let mut fbb = FlatBufferBuilder::with_capacity(96 + data.key().len());
    match data {
        SystemEventData::BeginCollection(c) | SystemEventData::ModifyCollection(c) => {
            use collection::*;
            let name = fbb.create_string(utf8_name(&c.name)?);
            let start = fbb.start_table();
            fbb.push_slot::<u64>(UID, c.manifest_uid, 0);
            fbb.push_slot::<u64>(DEFAULT_COLLECTION_MVS, c.default_collection_mvs, 0);
            fbb.push_slot::<u64>(FLUSH_UID, c.flush_uid, 0);
            fbb.push_slot_always(NAME, name);
            fbb.push_slot::<u32>(SCOPE_ID, c.scope_id, 0);
            fbb.push_slot::<u32>(COLLECTION_ID, c.collection_id, 0);
            fbb.push_slot::<u32>(MAX_TTL, c.max_ttl.unwrap_or(0), 0);
            fbb.push_slot::<bool>(TTL_VALID, c.max_ttl.is_some(), false);
            fbb.push_slot::<bool>(HISTORY, c.history, false);
            fbb.push_slot::<bool>(METERED, c.metered, false);
            let root = fbb.end_table(start);
            fbb.finish_minimal(root);
        }
        SystemEventData::EndCollection {
            manifest_uid,
            scope_id,
            collection_id,
            system,
        } => {
            use dropped_collection::*;
            let start = fbb.start_table();
            fbb.push_slot::<u64>(UID, *manifest_uid, 0);
            fbb.push_slot::<u32>(SCOPE_ID, *scope_id, 0);
            fbb.push_slot::<u32>(COLLECTION_ID, *collection_id, 0);
            fbb.push_slot::<bool>(SYSTEM_COLLECTION, *system, false);
            let root = fbb.end_table(start);
            fbb.finish_minimal(root);
        }
        SystemEventData::CreateScope {
            manifest_uid,
            scope_id,
            name,
        } => {
            use scope::*;
            let name = fbb.create_string(utf8_name(name)?);
            let start = fbb.start_table();
            fbb.push_slot::<u64>(UID, *manifest_uid, 0);
            fbb.push_slot_always(NAME, name);
            fbb.push_slot::<u32>(SCOPE_ID, *scope_id, 0);
            let root = fbb.end_table(start);
            fbb.finish_minimal(root);
        }
        SystemEventData::DropScope {
            manifest_uid,
            scope_id,
            system,
        } => {
            use dropped_scope::*;
            let start = fbb.start_table();
            fbb.push_slot::<u64>(UID, *manifest_uid, 0);
            fbb.push_slot::<u32>(SCOPE_ID, *scope_id, 0);
            fbb.push_slot::<bool>(SYSTEM_SCOPE, *system, false);
            let root = fbb.end_table(start);
            fbb.finish_minimal(root);
        }
    }
    Ok(Bytes::copy_from_slice(fbb.finished_data()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Values built by the Python FlatBuffers runtime (an independent
    /// builder) from the schema's field order.
    const PY_COLLECTION: &str = "1c00000018003000240020001c001b00140010000f00000000000400180000001e000000000000000000000120000000100e00000000000109000000080000001f0000000000000000000000060000006f72646572730000";
    /// Only the fields of the first collections release: later fields
    /// read as the schema's defaults.
    const PY_COLLECTION_EPOCH: &str = "14000000100014000c000000080000000000040010000000100000000800000002000000000000000100000063000000";
    const PY_DROPPED_COLLECTION: &str =
        "100000000c00180010000c00080007000c0000000000000109000000080000000500000000000000";
    const PY_SCOPE: &str = "140000000000000000000a0014000c00080004000a0000001000000008000000030000000000000009000000696e76656e746f7279000000";
    const PY_DROPPED_SCOPE: &str =
        "1000000000000000080010000800040008000000080000000600000000000000";

    fn bytes(hex: &str) -> Bytes {
        Bytes::from(hex::decode(hex).unwrap())
    }

    fn collection(modify: bool, uid: u64, name: &'static str, ttl: Option<u32>) -> SystemEventData {
        let name = Bytes::from_static(name.as_bytes());
        if modify {
            SystemEventData::ModifyCollection(CollectionDetails {
                history: true,
                flush_uid: 0x1e,
                ..CollectionDetails::new(uid, 8, 9, name, ttl)
            })
        } else {
            SystemEventData::begin_collection(uid, 0, 8, name, ttl)
        }
    }

    #[test]
    fn reads_values_of_an_independent_builder() {
        let v = bytes(PY_COLLECTION);
        assert_eq!(
            read(SystemEventId::ModifyCollection, &v).unwrap(),
            collection(true, 0x1f, "orders", Some(3600))
        );
        assert_eq!(
            read(SystemEventId::BeginCollection, &bytes(PY_COLLECTION_EPOCH)).unwrap(),
            collection(false, 2, "c", None)
        );
        assert_eq!(
            read(SystemEventId::EndCollection, &bytes(PY_DROPPED_COLLECTION)).unwrap(),
            SystemEventData::EndCollection {
                manifest_uid: 5,
                scope_id: 8,
                collection_id: 9,
                system: true
            }
        );
        assert_eq!(
            read(SystemEventId::CreateScope, &bytes(PY_SCOPE)).unwrap(),
            SystemEventData::CreateScope {
                manifest_uid: 3,
                scope_id: 8,
                name: Bytes::from_static(b"inventory")
            }
        );
        assert_eq!(
            read(SystemEventId::DropScope, &bytes(PY_DROPPED_SCOPE)).unwrap(),
            SystemEventData::DropScope {
                manifest_uid: 6,
                scope_id: 8,
                system: false
            }
        );
    }

    #[test]
    fn names_are_slices_of_the_value() {
        let v = bytes(PY_SCOPE);
        let SystemEventData::CreateScope { name, .. } =
            read(SystemEventId::CreateScope, &v).unwrap()
        else {
            panic!("a scope");
        };
        assert_eq!(name.as_ptr(), v[v.len() - 12..].as_ptr());
    }

    #[test]
    fn our_values_read_back_and_a_ttl_of_zero_stays_valid() {
        for data in [
            collection(false, 1, "c", None),
            collection(false, 1, "c", Some(0)),
            collection(true, u64::MAX, "with space é", Some(u32::MAX)),
        ] {
            let v = build(&data).unwrap();
            assert_eq!(read(data.event(), &v).unwrap(), data);
        }
    }

    #[test]
    fn hostile_values_are_named_errors() {
        let table_error = |event, v: &[u8]| match read(event, &Bytes::copy_from_slice(v)) {
            Err(DecodeErrorKind::FlatBuffers { table, reason }) => (table, reason),
            other => panic!("{other:?}"),
        };
        // Every prefix that cuts into the name's terminator or before
        // fails, in bounds (the last byte is padding).
        let v = bytes(PY_COLLECTION);
        for len in 0..v.len() - 1 {
            let (table, _) = table_error(SystemEventId::BeginCollection, &v[..len]);
            assert_eq!(table, "Collection");
        }
        // A scope without its name: the required field is named.
        let (table, reason) = table_error(SystemEventId::CreateScope, &bytes(PY_DROPPED_SCOPE));
        assert_eq!(table, "Scope");
        assert!(reason.contains("name"), "{reason}");
        // A root offset far outside the value.
        let mut far = v.to_vec();
        far[..4].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
        table_error(SystemEventId::BeginCollection, &far);
        // A name that is not UTF-8.
        let mut bad = v.to_vec();
        let at = bad.len() - 8;
        bad[at] = 0xff;
        let (_, reason) = table_error(SystemEventId::BeginCollection, &bad);
        assert!(
            reason.contains("name") || reason.contains("Utf8"),
            "{reason}"
        );
        // A string length past the end.
        let mut long = v.to_vec();
        let at = long.len() - 12;
        long[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        table_error(SystemEventId::BeginCollection, &long);
    }

    #[test]
    fn names_that_are_not_utf8_do_not_encode() {
        let data = SystemEventData::CreateScope {
            manifest_uid: 1,
            scope_id: 8,
            name: Bytes::from_static(b"\xff"),
        };
        assert!(matches!(
            build(&data),
            Err(EncodeError::InvalidField { field: "name", .. })
        ));
    }

    fn any_data() -> impl Strategy<Value = SystemEventData> {
        let name = "[a-zA-Z0-9_%-]{1,30}".prop_map(Bytes::from);
        let collection = (
            any::<u64>(),
            any::<u32>(),
            any::<u32>(),
            name.clone(),
            any::<Option<u32>>(),
            any::<[bool; 3]>(),
            any::<u64>(),
            any::<u64>(),
        )
            .prop_map(
                |(uid, scope, id, name, ttl, [history, metered, modify], flush, mvs)| {
                    let collection = CollectionDetails {
                        manifest_uid: uid,
                        scope_id: scope,
                        collection_id: id,
                        name,
                        max_ttl: ttl,
                        history,
                        metered,
                        flush_uid: flush,
                        default_collection_mvs: mvs,
                    };
                    if modify {
                        SystemEventData::ModifyCollection(collection)
                    } else {
                        SystemEventData::BeginCollection(collection)
                    }
                },
            );
        prop_oneof![
            collection,
            (any::<u64>(), any::<u32>(), any::<u32>(), any::<bool>()).prop_map(
                |(manifest_uid, scope_id, collection_id, system)| SystemEventData::EndCollection {
                    manifest_uid,
                    scope_id,
                    collection_id,
                    system
                }
            ),
            (any::<u64>(), any::<u32>(), name).prop_map(|(manifest_uid, scope_id, name)| {
                SystemEventData::CreateScope {
                    manifest_uid,
                    scope_id,
                    name,
                }
            }),
            (any::<u64>(), any::<u32>(), any::<bool>()).prop_map(
                |(manifest_uid, scope_id, system)| SystemEventData::DropScope {
                    manifest_uid,
                    scope_id,
                    system
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn every_event_round_trips_through_flatbuffers(data in any_data()) {
            let v = build(&data).unwrap();
            prop_assert_eq!(read(data.event(), &v).unwrap(), data);
        }

        #[test]
        fn arbitrary_bytes_never_panic(
            id in prop_oneof![Just(0u32), Just(1), Just(3), Just(4), Just(5)],
            v in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let _ = read(SystemEventId::from_raw(id), &Bytes::from(v));
        }

        #[test]
        fn mutated_valid_values_never_panic(
            data in any_data(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut v = build(&data).unwrap().to_vec();
            for (at, byte) in flips {
                let i = at.index(v.len());
                v[i] = byte;
            }
            let _ = read(data.event(), &Bytes::from(v));
        }
    }
}
