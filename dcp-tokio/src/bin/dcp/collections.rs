//! Collections for the `dcp` command: resolving `--collection` and
//! `--scope` to ids, and the sample collections `dcp serve` creates.

use dcp_tokio::ServerHandle;
use dcp_tokio::dcp_proto::bucket::{Manifest, WriteOptions};
use dcp_tokio::dcp_proto::consumer::StreamFilter;

use crate::Failure;
use crate::args::split_collection_path;

/// Documents written into each sample collection.
pub(crate) const SAMPLE_DOCUMENTS: u64 = 100;

/// A hex id (`8`, `0x8`).
fn hex_id(s: &str) -> Option<u32> {
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

/// The manifest as ids by names: (scope name, scope id, [(collection name,
/// id)]), from a `get_manifest` JSON or a bucket's manifest.
pub(crate) type Names = Vec<(String, u32, Vec<(String, u32)>)>;

/// The names of a bucket's manifest.
pub(crate) fn names_of(manifest: &Manifest) -> Names {
    manifest
        .scopes()
        .map(|s| {
            let collections = manifest
                .collections_of(s.id)
                .map(|c| (c.name.clone(), c.id))
                .collect();
            (s.name.clone(), s.id, collections)
        })
        .collect()
}

/// The names of a `get_manifest` JSON.
pub(crate) fn names_of_json(json: &serde_json::Value) -> Names {
    let id = |v: &serde_json::Value| v["uid"].as_str().and_then(hex_id);
    json["scopes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| {
            let collections = s["collections"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| Some((c["name"].as_str()?.to_owned(), id(c)?)))
                .collect();
            Some((s["name"].as_str()?.to_owned(), id(s)?, collections))
        })
        .collect()
}

/// Whether `--collection`/`--scope` name something (not only hex ids), so
/// that the manifest is needed.
pub(crate) fn needs_names(collections: &[String], scope: Option<&str>) -> bool {
    collections
        .iter()
        .any(|c| c.contains('.') || hex_id(c).is_none())
        || scope.is_some_and(|s| hex_id(s).is_none())
}

/// The stream filter of `--collection` (ids or names) or `--scope`.
pub(crate) fn filter(
    collections: &[String],
    scope: Option<&str>,
    names: &Names,
) -> Result<Option<StreamFilter>, Failure> {
    if let Some(scope) = scope {
        let id = names
            .iter()
            .find(|(name, _, _)| name == scope)
            .map(|(_, id, _)| *id)
            .or_else(|| hex_id(scope))
            .ok_or_else(|| Failure(format!("no scope {scope:?}")))?;
        return Ok(Some(StreamFilter::Scope(id)));
    }
    if collections.is_empty() {
        return Ok(None);
    }
    let mut ids = Vec::new();
    for spec in collections {
        let (scope, name) = split_collection_path(spec);
        let by_name = names
            .iter()
            .filter(|(s, _, _)| *s == scope)
            .flat_map(|(_, _, cs)| cs.iter())
            .find(|(n, _)| *n == name)
            .map(|(_, id)| *id);
        let id = by_name
            .or_else(|| {
                if spec.contains('.') {
                    None
                } else {
                    hex_id(spec)
                }
            })
            .ok_or_else(|| Failure(format!("no collection {spec:?}")))?;
        ids.push(id);
    }
    Ok(Some(StreamFilter::Collections(ids)))
}

/// Creates `scope.collection` (and its scope) on the served bucket, with
/// sample documents.
pub(crate) fn create_sample(handle: &ServerHandle, path: &str) -> Result<u32, Failure> {
    let (scope, name) = split_collection_path(path);
    handle.with_bucket(|bucket, wall| {
        if bucket.manifest().scope_by_name(&scope).is_none() {
            bucket
                .create_scope(&scope, wall)
                .map_err(|e| Failure(format!("cannot create scope {scope:?}: {e}")))?;
        }
        let id = bucket
            .create_collection(&scope, &name, None, wall)
            .map_err(|e| Failure(format!("cannot create collection {path:?}: {e}")))?
            .id;
        for i in 0..SAMPLE_DOCUMENTS {
            let key = format!("{name}-{i}");
            let _ = bucket.set_in(
                id,
                key.as_bytes(),
                format!("{{\"n\":{i},\"collection\":\"{scope}.{name}\"}}"),
                WriteOptions::new(),
                wall,
            );
        }
        Ok(id)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_names_and_ids() {
        let mut m = Manifest::new();
        let json = serde_json::json!({
            "uid": "2",
            "scopes": [
                {"name": "_default", "uid": "0", "collections": [{"name": "_default", "uid": "0"}]},
                {"name": "inventory", "uid": "8", "collections": [{"name": "hotels", "uid": "8"}, {"name": "b", "uid": "a"}]}
            ]
        });
        let names = names_of_json(&json);
        assert_eq!(names_of(&m).len(), 1);
        m = Manifest::default();
        assert_eq!(names_of(&m)[0].0, "_default");
        let f = |c: &[&str], s: Option<&str>| {
            let c: Vec<String> = c.iter().map(|s| s.to_string()).collect();
            filter(&c, s, &names)
        };
        assert_eq!(
            f(&["inventory.hotels", "0xa"], None).unwrap(),
            Some(StreamFilter::Collections(vec![8, 10]))
        );
        assert_eq!(
            f(&[], Some("inventory")).unwrap(),
            Some(StreamFilter::Scope(8))
        );
        assert_eq!(f(&[], None).unwrap(), None);
        assert!(f(&["inventory.nope"], None).is_err());
        assert!(needs_names(&["inventory.hotels".into()], None));
        assert!(!needs_names(&["8".into()], Some("0x9")));
    }
}
