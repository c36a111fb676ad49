//! GET_CLUSTER_CONFIG: a bucket config JSON in the shape a data node serves
//! (CCCP), with a one-node vbucket map.

use bytes::Bytes;

use super::connection::Connection;
use super::context::Ctx;
use super::error::CloseReason;
use crate::codec::{Datatype, Opcode, Status};
use crate::msg::VbucketState;
use crate::msg::client::{GetClusterConfig, GetClusterConfigResponse};

/// The config's epoch (a node that never restarts keeps one epoch).
pub(crate) const REV_EPOCH: i64 = 1;

/// The bucket config JSON at revision `rev`.
pub(crate) fn config_json(ctx: &Ctx<'_>, rev: i64) -> Vec<u8> {
    let config = ctx.config;
    let bucket = &*ctx.bucket;
    let host = &config.hostname;
    let map: Vec<[i32; 1]> = bucket
        .vbuckets()
        .map(|vb| {
            [if vb.state() == VbucketState::Active {
                0
            } else {
                -1
            }]
        })
        .collect();
    let name = bucket.name();
    let json = serde_json::json!({
        "rev": rev,
        "revEpoch": REV_EPOCH,
        "name": name,
        "uuid": format!("{:032x}", u128::from(config.seed) << 64 | 0xd0c0),
        "bucketType": "membase",
        "nodeLocator": "vbucket",
        "collectionsManifestUid": "0",
        "uri": format!("/pools/default/buckets/{name}?bucket_uuid={:032x}", u128::from(config.seed) << 64 | 0xd0c0),
        "bucketCapabilitiesVer": "",
        "bucketCapabilities": [
            "collections", "dcp", "cbhello", "touch", "cccp", "xattr", "nodesExt",
            "dcp.IgnorePurgedTombstones"
        ],
        "nodes": [{
            "hostname": format!("{host}:{}", config.mgmt_port),
            "ports": { "direct": config.kv_port }
        }],
        "nodesExt": [{
            "hostname": host,
            "thisNode": true,
            "services": { "kv": config.kv_port, "mgmt": config.mgmt_port }
        }],
        "clusterCapabilitiesVer": [1, 0],
        "clusterCapabilities": {},
        "vBucketServerMap": {
            "hashAlgorithm": "CRC",
            "numReplicas": 0,
            "serverList": [format!("{host}:{}", config.kv_port)],
            "vBucketMap": map
        }
    });
    serde_json::to_vec(&json).unwrap_or_default()
}

/// GET_CLUSTER_CONFIG: the config, or an empty success if the client's
/// known version is current.
pub(crate) fn get_cluster_config(
    conn: &mut Connection,
    req: &GetClusterConfig,
    ctx: &Ctx<'_>,
    rev: i64,
) -> Result<(), CloseReason> {
    if !conn.bucket_selected {
        return conn.status(Opcode::GetClusterConfig, Status::NoBucket, req.opaque);
    }
    let current = req
        .known
        .is_some_and(|k| (k.epoch, k.revision) >= (REV_EPOCH, rev));
    let (datatype, config) = if current {
        (Datatype::RAW, Bytes::new())
    } else {
        let json = match ctx.cluster_config {
            Some(shared) => Bytes::copy_from_slice(shared),
            None => Bytes::from(config_json(ctx, rev)),
        };
        (Datatype::JSON, json)
    };
    let response = GetClusterConfigResponse {
        status: Status::Success,
        opaque: req.opaque,
        datatype,
        config,
    };
    conn.respond(Status::Success, |buf| response.encode(buf))
}
