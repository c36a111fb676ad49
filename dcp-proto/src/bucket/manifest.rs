//! A bucket's collections manifest: its scopes and collections (ids, names,
//! max TTL) and the manifest uid every change bumps.
//!
//! Ids follow the server's rules: the `_default` scope and collection have
//! id 0, ids 1 to 7 are reserved, and new scopes and collections take the
//! next id of their own counter, starting at 8, never reused. Names are 1
//! to 251 characters of `A-Z a-z 0-9 _ - %`, and may not start with `_` or
//! `%` (only `_default` does).

use std::collections::BTreeMap;

use serde_json::json;

use super::error::BucketError;

/// The `_default` scope's and collection's name.
pub const DEFAULT_NAME: &str = "_default";

/// The first id a created scope or collection gets.
pub const FIRST_USER_ID: u32 = 8;

/// The longest scope or collection name.
pub const MAX_NAME_LEN: usize = 251;

/// One scope of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScopeEntry {
    /// The scope id.
    pub id: u32,
    /// The scope name.
    pub name: String,
}

/// One collection of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CollectionEntry {
    /// The collection id (the LEB128 key prefix on the wire).
    pub id: u32,
    /// The collection name (unique within its scope).
    pub name: String,
    /// The scope it belongs to.
    pub scope: u32,
    /// Max TTL in seconds, if the collection has one: it caps (or
    /// supplies) the expiry of every document written to the collection;
    /// `Some(0)` means none.
    pub max_ttl: Option<u32>,
    /// Whether the collection keeps history (change streams).
    pub history: bool,
    /// The manifest uid of its latest flush (0: never flushed).
    pub flush_uid: u64,
}

/// A bucket's collections manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    uid: u64,
    scopes: BTreeMap<u32, ScopeEntry>,
    collections: BTreeMap<u32, CollectionEntry>,
    next_scope: u32,
    next_collection: u32,
}

impl Default for Manifest {
    fn default() -> Self {
        Self::new()
    }
}

/// Checks a scope or collection name.
pub(crate) fn check_name(name: &str) -> Result<(), BucketError> {
    let valid_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '%');
    if name.is_empty()
        || name.len() > MAX_NAME_LEN
        || !name.chars().all(valid_char)
        || name.starts_with('_')
        || name.starts_with('%')
    {
        return Err(BucketError::InvalidName(name.to_owned()));
    }
    Ok(())
}

impl Manifest {
    /// The initial manifest (uid 0): the `_default` scope holding the
    /// `_default` collection.
    pub fn new() -> Self {
        let mut scopes = BTreeMap::new();
        scopes.insert(
            0,
            ScopeEntry {
                id: 0,
                name: DEFAULT_NAME.to_owned(),
            },
        );
        let mut collections = BTreeMap::new();
        collections.insert(
            0,
            CollectionEntry {
                id: 0,
                name: DEFAULT_NAME.to_owned(),
                scope: 0,
                max_ttl: None,
                history: false,
                flush_uid: 0,
            },
        );
        Self {
            uid: 0,
            scopes,
            collections,
            next_scope: FIRST_USER_ID,
            next_collection: FIRST_USER_ID,
        }
    }

    /// The manifest uid (bumped by every change).
    pub fn uid(&self) -> u64 {
        self.uid
    }

    /// Every scope, by id.
    pub fn scopes(&self) -> impl Iterator<Item = &ScopeEntry> {
        self.scopes.values()
    }

    /// Every collection, by id.
    pub fn collections(&self) -> impl Iterator<Item = &CollectionEntry> {
        self.collections.values()
    }

    /// The scope with id `id`.
    pub fn scope(&self, id: u32) -> Option<&ScopeEntry> {
        self.scopes.get(&id)
    }

    /// The collection with id `id`.
    pub fn collection(&self, id: u32) -> Option<&CollectionEntry> {
        self.collections.get(&id)
    }

    /// The scope named `name`.
    pub fn scope_by_name(&self, name: &str) -> Option<&ScopeEntry> {
        self.scopes.values().find(|s| s.name == name)
    }

    /// The collection `collection` of scope `scope` (by names).
    pub fn collection_by_name(&self, scope: &str, collection: &str) -> Option<&CollectionEntry> {
        let scope = self.scope_by_name(scope)?.id;
        self.collections
            .values()
            .find(|c| c.scope == scope && c.name == collection)
    }

    /// Resolves `scope.collection`, a bare collection name (in `_default`),
    /// or a hex collection id (`0x8` or `8`).
    pub fn resolve_collection(&self, path: &str) -> Option<&CollectionEntry> {
        if let Some((scope, name)) = path.split_once('.') {
            return self.collection_by_name(scope, name);
        }
        if let Some(c) = self.collection_by_name(DEFAULT_NAME, path) {
            return Some(c);
        }
        let hex = path.strip_prefix("0x").unwrap_or(path);
        u32::from_str_radix(hex, 16)
            .ok()
            .and_then(|id| self.collection(id))
    }

    /// The collections of scope `scope`, by id.
    pub fn collections_of(&self, scope: u32) -> impl Iterator<Item = &CollectionEntry> {
        self.collections.values().filter(move |c| c.scope == scope)
    }

    /// Adds scope `name`; returns it.
    pub(crate) fn add_scope(&mut self, name: &str) -> Result<ScopeEntry, BucketError> {
        check_name(name)?;
        if self.scope_by_name(name).is_some() {
            return Err(BucketError::ScopeExists(name.to_owned()));
        }
        let entry = ScopeEntry {
            id: self.next_scope,
            name: name.to_owned(),
        };
        self.next_scope += 1;
        self.scopes.insert(entry.id, entry.clone());
        self.uid += 1;
        Ok(entry)
    }

    /// Removes scope `name` and its collections; returns the scope and the
    /// collections removed. The `_default` scope cannot be dropped.
    pub(crate) fn remove_scope(
        &mut self,
        name: &str,
    ) -> Result<(ScopeEntry, Vec<CollectionEntry>), BucketError> {
        if name == DEFAULT_NAME {
            return Err(BucketError::Invalid("the _default scope cannot be dropped"));
        }
        let scope = self
            .scope_by_name(name)
            .cloned()
            .ok_or_else(|| BucketError::UnknownScope(name.to_owned()))?;
        let dropped: Vec<CollectionEntry> = self.collections_of(scope.id).cloned().collect();
        for c in &dropped {
            self.collections.remove(&c.id);
        }
        self.scopes.remove(&scope.id);
        self.uid += 1;
        Ok((scope, dropped))
    }

    /// Adds collection `name` to scope `scope`; returns it.
    pub(crate) fn add_collection(
        &mut self,
        scope: &str,
        name: &str,
        max_ttl: Option<u32>,
    ) -> Result<CollectionEntry, BucketError> {
        check_name(name)?;
        let scope_id = self
            .scope_by_name(scope)
            .ok_or_else(|| BucketError::UnknownScope(scope.to_owned()))?
            .id;
        if self.collection_by_name(scope, name).is_some() {
            return Err(BucketError::CollectionExists(format!("{scope}.{name}")));
        }
        let entry = CollectionEntry {
            id: self.next_collection,
            name: name.to_owned(),
            scope: scope_id,
            max_ttl,
            history: false,
            flush_uid: 0,
        };
        self.next_collection += 1;
        self.collections.insert(entry.id, entry.clone());
        self.uid += 1;
        Ok(entry)
    }

    /// Removes collection `scope.name`; returns it.
    pub(crate) fn remove_collection(
        &mut self,
        scope: &str,
        name: &str,
    ) -> Result<CollectionEntry, BucketError> {
        let entry = self.lookup(scope, name)?;
        self.collections.remove(&entry.id);
        self.uid += 1;
        Ok(entry)
    }

    /// Marks collection `scope.name` flushed (a new uid); returns it.
    pub(crate) fn flush_collection(
        &mut self,
        scope: &str,
        name: &str,
    ) -> Result<CollectionEntry, BucketError> {
        let mut entry = self.lookup(scope, name)?;
        self.uid += 1;
        entry.flush_uid = self.uid;
        self.collections.insert(entry.id, entry.clone());
        Ok(entry)
    }

    /// Changes the settings of collection `scope.name` (`None` leaves one
    /// as it is); returns it, and whether anything changed (only a change
    /// takes a new uid).
    pub(crate) fn modify_collection(
        &mut self,
        scope: &str,
        name: &str,
        max_ttl: Option<Option<u32>>,
        history: Option<bool>,
    ) -> Result<(CollectionEntry, bool), BucketError> {
        let before = self.lookup(scope, name)?;
        let mut entry = before.clone();
        if let Some(ttl) = max_ttl {
            entry.max_ttl = ttl;
        }
        if let Some(history) = history {
            entry.history = history;
        }
        if entry == before {
            return Ok((entry, false));
        }
        self.uid += 1;
        self.collections.insert(entry.id, entry.clone());
        Ok((entry, true))
    }

    fn lookup(&self, scope: &str, name: &str) -> Result<CollectionEntry, BucketError> {
        if self.scope_by_name(scope).is_none() {
            return Err(BucketError::UnknownScope(scope.to_owned()));
        }
        self.collection_by_name(scope, name)
            .cloned()
            .ok_or_else(|| BucketError::UnknownCollectionName(format!("{scope}.{name}")))
    }

    /// The manifest as the server's GET_COLLECTIONS_MANIFEST JSON (uids in
    /// hex strings).
    pub fn to_json(&self) -> serde_json::Value {
        let scopes: Vec<serde_json::Value> = self
            .scopes
            .values()
            .map(|s| {
                let collections: Vec<serde_json::Value> = self
                    .collections_of(s.id)
                    .map(|c| {
                        let mut v = json!({"name": c.name, "uid": format!("{:x}", c.id)});
                        if let (Some(ttl), Some(obj)) = (c.max_ttl, v.as_object_mut()) {
                            obj.insert("maxTTL".to_owned(), json!(ttl));
                        }
                        if let (true, Some(obj)) = (c.history, v.as_object_mut()) {
                            obj.insert("history".to_owned(), json!(true));
                        }
                        v
                    })
                    .collect();
                json!({"name": s.name, "uid": format!("{:x}", s.id), "collections": collections})
            })
            .collect();
        json!({"uid": format!("{:x}", self.uid), "scopes": scopes})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_uids_and_names() {
        let mut m = Manifest::new();
        assert_eq!(m.uid(), 0);
        assert_eq!(m.resolve_collection("_default.%5Fx"), None);
        let s = m.add_scope("inventory").unwrap();
        assert_eq!((s.id, m.uid()), (8, 1));
        let c = m.add_collection("inventory", "hotels", Some(60)).unwrap();
        assert_eq!((c.id, c.scope, m.uid()), (8, 8, 2));
        let d = m.add_collection("_default", "logs", None).unwrap();
        assert_eq!((d.id, d.scope), (9, 0));
        assert_eq!(
            m.resolve_collection("inventory.hotels").map(|c| c.id),
            Some(8)
        );
        assert_eq!(m.resolve_collection("logs").map(|c| c.id), Some(9));
        assert_eq!(m.resolve_collection("0x9").map(|c| c.id), Some(9));
        assert_eq!(m.resolve_collection("0").map(|c| c.id), Some(0));
        assert_eq!(
            m.add_collection("inventory", "hotels", None),
            Err(BucketError::CollectionExists("inventory.hotels".into()))
        );
        assert_eq!(
            m.add_collection("nope", "x", None),
            Err(BucketError::UnknownScope("nope".into()))
        );
        assert!(matches!(
            m.add_scope("_x"),
            Err(BucketError::InvalidName(_))
        ));
        assert!(matches!(m.add_scope(""), Err(BucketError::InvalidName(_))));
        assert!(matches!(
            m.add_scope("a b"),
            Err(BucketError::InvalidName(_))
        ));
        assert!(m.remove_scope(DEFAULT_NAME).is_err());
        let (scope, dropped) = m.remove_scope("inventory").unwrap();
        assert_eq!((scope.id, dropped.len()), (8, 1));
        assert!(m.collection(8).is_none());
        // Ids are never reused.
        assert_eq!(m.add_scope("inventory").unwrap().id, 9);
        assert_eq!(m.add_collection("_default", "c", None).unwrap().id, 10);
        let uid = m.uid();
        assert_eq!(m.flush_collection("_default", "c").unwrap().id, 10);
        assert_eq!(m.uid(), uid + 1);
        assert_eq!(m.to_json()["uid"], format!("{:x}", uid + 1));
    }
}
