//! GET_CLUSTER_CONFIG: a bucket config JSON in the shape a data node serves
//! (CCCP), with a one-node vbucket map.

use bytes::Bytes;

use super::connection::Connection;
use super::context::Ctx;
use super::error::CloseReason;
use crate::codec::{Datatype, Opcode, Status};
use crate::msg::VbucketState;
use crate::msg::client::{
    ClustermapNotification, GetClusterConfig, GetClusterConfigResponse, HelloFeature, KnownVersion,
};

use super::connection::PushMode;

/// The config's epoch (a node that never restarts keeps one epoch).
pub(crate) const REV_EPOCH: i64 = 1;

/// The bucket config JSON at revision `rev`.
pub(crate) fn config_json(ctx: &Ctx<'_>, rev: i64) -> Vec<u8> {
    own_config_json(ctx.config, ctx.bucket, rev)
}

/// A lone node's own config JSON at revision `rev`: itself as the only
/// server, owning its active vbuckets.
pub(crate) fn own_config_json(
    config: &super::NodeConfig,
    bucket: &crate::bucket::Bucket,
    rev: i64,
) -> Vec<u8> {
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
    let version = KnownVersion {
        epoch: REV_EPOCH,
        revision: rev,
    };
    let current = req.known.is_some_and(|k| k >= version);
    if !current {
        conn.config_sent = conn.config_sent.max(Some(version));
    }
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

/// The config JSON served at the revision in force: the shared cluster
/// config, else the node's own.
fn served_json(ctx: &Ctx<'_>) -> Bytes {
    match ctx.cluster_config {
        Some(shared) => Bytes::copy_from_slice(shared),
        None => Bytes::from(config_json(ctx, ctx.config_rev)),
    }
}

/// The body of a NOT_MY_VBUCKET reply to a stream request: the config in
/// force (what the server does), or nothing when the connection negotiated
/// DedupeNotMyVbucketClustermap and was already sent that revision.
pub(crate) fn not_my_vbucket_body(conn: &mut Connection, ctx: &Ctx<'_>) -> Bytes {
    let version = KnownVersion {
        epoch: REV_EPOCH,
        revision: ctx.config_rev,
    };
    if conn.features.dedupe_nmvb && conn.config_sent.is_some_and(|sent| sent >= version) {
        return Bytes::new();
    }
    conn.config_sent = conn.config_sent.max(Some(version));
    served_json(ctx)
}

/// HELLO: cluster-map notifications need Duplex in the same request (the
/// server refuses the whole HELLO with EINVAL otherwise).
pub(crate) fn hello_push_valid(requested: &[HelloFeature]) -> bool {
    let wants_push = requested.iter().any(|f| {
        matches!(
            f,
            HelloFeature::ClustermapChangeNotification
                | HelloFeature::ClustermapChangeNotificationBrief
        )
    });
    !wants_push || requested.contains(&HelloFeature::Duplex)
}

/// HELLO: asked for both forms, the client gets only the brief one.
pub(crate) fn brief_wins(granted: &mut Vec<HelloFeature>) {
    if granted.contains(&HelloFeature::ClustermapChangeNotificationBrief) {
        granted.retain(|f| *f != HelloFeature::ClustermapChangeNotification);
    }
}

/// Queues a cluster-map change notification for `rev` on `conn` if it
/// asked for them, selected the bucket and was not sent that revision yet.
/// Returns whether one was queued.
pub(crate) fn push(conn: &mut Connection, bucket: &str, rev: i64, json: &[u8]) -> bool {
    if conn.closed.is_some() || !conn.bucket_selected || !conn.features.duplex {
        return false;
    }
    let version = KnownVersion {
        epoch: REV_EPOCH,
        revision: rev,
    };
    if conn.config_sent.max(conn.config_announced) >= Some(version) {
        return false;
    }
    let notification = match conn.features.push {
        PushMode::None => return false,
        PushMode::Full => ClustermapNotification::full(
            version,
            Bytes::copy_from_slice(bucket.as_bytes()),
            Bytes::copy_from_slice(json),
        ),
        PushMode::Brief => ClustermapNotification::brief(version),
    };
    let mark = conn.out.len();
    if notification.encode(&mut conn.out).is_err() {
        conn.out.truncate(mark);
        return false;
    }
    if notification.is_brief() {
        conn.config_announced = Some(version);
    } else {
        conn.config_sent = Some(version);
    }
    true
}
