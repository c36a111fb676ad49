//! DCP_STREAM_REQ: the server's checks in the server's order (behavior.md
//! §2.2), each with its status, then the rollback decision (§2.3).

use bytes::Bytes;

use super::collections::StreamFilter;
use super::connection::DcpConn;
use super::stream::StreamParams;
use crate::bucket::Bucket;
use crate::codec::Status;
use crate::failover::{RollbackQuery, needs_rollback};
use crate::msg::{OpenFlags, StreamRequest, StreamRequestFlags, VbucketState};

/// What the producer answers a stream request with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// SUCCESS with the failover log; the stream starts.
    Accept(StreamParams),
    /// ROLLBACK to this seqno (8-byte value, nothing else).
    Rollback(u64),
    /// An error status with its body.
    Reject(Status, Bytes),
}

fn reject(status: Status) -> Decision {
    Decision::Reject(status, Bytes::new())
}

/// The flags a server accepts (NO_VALUE and unknown bits are EINVAL).
fn valid_flags() -> StreamRequestFlags {
    StreamRequestFlags::all() - StreamRequestFlags::NO_VALUE
}

/// Decides a stream request on a producer connection.
pub(crate) fn decide(
    req: &StreamRequest,
    dcp: &DcpConn,
    collections: bool,
    bucket: &Bucket,
) -> Decision {
    let flags = req.flags;
    // Validator: flags, cache-transfer combinations, a value without
    // collections.
    if !valid_flags().contains(flags) {
        return reject(Status::Einval);
    }
    if flags.contains(StreamRequestFlags::CACHE_TRANSFER)
        && !(StreamRequestFlags::CACHE_TRANSFER
            | StreamRequestFlags::TAKEOVER
            | StreamRequestFlags::ACTIVE_VB_ONLY)
            .contains(flags)
    {
        return reject(Status::Einval);
    }
    if req.value.is_some() && !collections {
        return reject(Status::Einval);
    }

    // 2. The vbucket must exist and be streamable.
    let Some(vb) = bucket.vbucket(req.vbucket) else {
        return reject(Status::NotMyVbucket);
    };
    let streamable = match vb.state() {
        VbucketState::Active => true,
        VbucketState::Replica => !flags.contains(StreamRequestFlags::ACTIVE_VB_ONLY),
        _ => false,
    };
    if !streamable {
        return reject(Status::NotMyVbucket);
    }

    // 3. FromLatest.
    let high = vb.high_seqno();
    let (mut start, mut snap_start, mut snap_end, mut uuid) = (
        req.start_seqno,
        req.snap_start_seqno,
        req.snap_end_seqno,
        req.vbucket_uuid,
    );
    if flags.contains(StreamRequestFlags::FROM_LATEST) {
        start = high;
        snap_start = high;
        snap_end = high;
        if uuid == 0 {
            uuid = vb.uuid();
        }
    }
    let mut end = req.end_seqno;

    // 4. Noop is mandatory for xattrs and JSON values.
    if !dcp.controls.noop_enabled
        && (dcp.flags.contains(OpenFlags::INCLUDE_XATTRS) || req.value.is_some())
    {
        return reject(Status::NotSupported);
    }

    // 5, 6. Seqno ranges.
    if start > end || !(snap_start <= start && start <= snap_end) {
        return reject(Status::Erange);
    }

    // 7. The filter.
    let value = req.value.clone().unwrap_or_default();
    if req.value.is_some() {
        if value.collections.is_some() && value.scope.is_some() {
            return reject(Status::Einval);
        }
        if value.collections.is_none()
            && value.scope.is_none()
            && value.uid.is_none()
            && value.sid.is_none()
            && value.purge_seqno.is_none()
            && value.cts.is_none()
        {
            return reject(Status::Einval);
        }
        if value.cts.is_some() && !flags.contains(StreamRequestFlags::CACHE_TRANSFER) {
            return reject(Status::Einval);
        }
    }
    let filter =
        match StreamFilter::from_request(req.value.as_ref(), collections, bucket.manifest()) {
            Ok(filter) => filter,
            Err((status, body)) => return Decision::Reject(status, body),
        };
    if dcp.controls.stream_id != value.sid.is_some() {
        return reject(Status::DcpStreamIdInvalid);
    }
    let filtered = filter.is_filtered();
    if filtered && dcp.controls.sync_writes {
        return reject(Status::NotSupported);
    }

    // 8. One live stream per (vbucket, sid).
    if dcp
        .streams
        .get(&(req.vbucket, value.sid))
        .is_some_and(|s| !s.is_ending())
    {
        return reject(Status::KeyEexists);
    }

    // 9. Rollback.
    let ignore_purged = flags.contains(StreamRequestFlags::IGNORE_PURGED_TOMBSTONES);
    let purge = if ignore_purged { 0 } else { vb.purge_seqno() };
    // A filtered stream at or beyond its collections' high seqno needs no
    // rollback for a purge above it.
    let filtered_high = filter.high_seqno(vb).unwrap_or(high);
    let collection_exemption = filtered && start >= filtered_high && filtered_high <= purge;
    let query = RollbackQuery {
        start,
        vbucket_uuid: uuid,
        snap_start,
        snap_end,
        high_seqno: high,
        purge_seqno: purge,
        remote_purge_seqno: value.purge_seqno.unwrap_or(0),
        strict: flags.contains(StreamRequestFlags::STRICT_VB_UUID),
        collection_exemption,
    };
    if let Some(seqno) = needs_rollback(vb.failover_log(), &query) {
        return Decision::Rollback(seqno);
    }

    // 10. End rewrites, then the ranges again.
    if flags.contains(StreamRequestFlags::TO_LATEST) {
        // The filtered collections' high seqno (never below the start: the
        // stream then ends at once).
        end = if filtered {
            filtered_high.max(start)
        } else {
            high
        };
    }
    if flags.contains(StreamRequestFlags::DISK_ONLY) {
        end = vb.persisted_seqno();
    }
    if start > end || start > high {
        return reject(Status::Erange);
    }

    // 12, 13. Memory pressure and warm-up.
    if bucket.is_memory_full() {
        return reject(Status::Enomem);
    }
    if vb.is_warming_up() {
        return reject(Status::Etmpfail);
    }
    if flags.contains(StreamRequestFlags::CACHE_TRANSFER) {
        // Cache transfer is not enabled on this server.
        return reject(Status::NotSupported);
    }

    Decision::Accept(StreamParams {
        vbucket: req.vbucket,
        opaque: req.opaque,
        stream_id: value.sid,
        flags,
        start,
        end,
        vbucket_uuid: uuid,
        snap_start,
        snap_end,
        remote_purge: value.purge_seqno.unwrap_or(0),
        filter,
    })
}
