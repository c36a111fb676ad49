//! The bucket config JSON every node of a
//! [`LocalCluster`](super::LocalCluster) serves: all member nodes, the
//! vbucket map, one revision.

use super::NodeId;
use super::map::Owners;

/// A member as the config lists it.
pub(crate) struct Listed<'a> {
    pub(crate) id: NodeId,
    pub(crate) host: &'a str,
    pub(crate) kv_port: u16,
    /// The TLS data port (`kvSSL`), if the node serves one.
    pub(crate) kv_tls_port: Option<u16>,
    pub(crate) mgmt_port: u16,
}

/// The config at `rev` for `members` (in server-list order) and `map`.
pub(crate) fn cluster_json(
    bucket: &str,
    bucket_uuid: &str,
    rev: i64,
    replicas: usize,
    members: &[Listed<'_>],
    map: &[Owners],
) -> Vec<u8> {
    let index = |id: NodeId| -> i64 {
        members
            .iter()
            .position(|m| m.id == id)
            .and_then(|i| i64::try_from(i).ok())
            .unwrap_or(-1)
    };
    let rows: Vec<Vec<i64>> = map
        .iter()
        .map(|owners| {
            let mut row = vec![owners.active.map_or(-1, index)];
            row.extend(owners.replicas.iter().map(|r| index(*r)));
            row.resize(replicas + 1, -1);
            row
        })
        .collect();
    let json = serde_json::json!({
        "rev": rev,
        "revEpoch": super::super::cluster_config::REV_EPOCH,
        "name": bucket,
        "uuid": bucket_uuid,
        "bucketType": "membase",
        "nodeLocator": "vbucket",
        "collectionsManifestUid": "0",
        "uri": format!("/pools/default/buckets/{bucket}?bucket_uuid={bucket_uuid}"),
        "bucketCapabilitiesVer": "",
        "bucketCapabilities": [
            "collections", "dcp", "cbhello", "touch", "cccp", "xattr", "nodesExt",
            "dcp.IgnorePurgedTombstones"
        ],
        "nodes": members.iter().map(|m| serde_json::json!({
            "hostname": format!("{}:{}", m.host, m.mgmt_port),
            "ports": { "direct": m.kv_port }
        })).collect::<Vec<_>>(),
        "nodesExt": members.iter().map(|m| {
            let mut services = serde_json::json!({ "kv": m.kv_port, "mgmt": m.mgmt_port });
            if let (Some(port), Some(map)) = (m.kv_tls_port, services.as_object_mut()) {
                map.insert("kvSSL".to_owned(), port.into());
            }
            serde_json::json!({ "hostname": m.host, "services": services })
        }).collect::<Vec<_>>(),
        "clusterCapabilitiesVer": [1, 0],
        "clusterCapabilities": {},
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": replicas,
            "serverList": members.iter().map(|m| format!("{}:{}", m.host, m.kv_port)).collect::<Vec<_>>(),
            "vBucketMap": rows
        }
    });
    serde_json::to_vec(&json).unwrap_or_default()
}
