//! Stream scheduling for one connection: round-robin over its streams,
//! one message per stream per round, generated on demand from the bucket,
//! while the flow-control window allows and the byte budget lasts.

use bytes::BytesMut;

use super::connection::DcpConn;
use super::outgoing::{EncodeContext, StreamAddress, encode};
use super::stream::{FillContext, Outgoing, StreamKey};
use crate::bucket::Bucket;
use crate::flow::flow_control_size;
use crate::msg::OpenFlags;

/// Appends stream messages to `tx` until `tx` grew by `max_bytes` since
/// `start` (the last message may overshoot), the window is full, or no
/// stream has anything to send. A stream whose STREAM_END went out is
/// removed.
#[allow(clippy::too_many_arguments)]
pub(crate) fn transmit_streams(
    dcp: &mut DcpConn,
    collections: bool,
    bucket: &mut Bucket,
    backfill_batch: usize,
    oso_unfiltered: bool,
    tx: &mut BytesMut,
    start: usize,
    max_bytes: usize,
) {
    let fill = FillContext {
        collections,
        backfill_batch,
        skip_deletes_in_initial_backfill: dcp
            .flags
            .contains(OpenFlags::SKIP_DELETES_IN_INITIAL_BACKFILL),
        sync_writes: dcp.controls.sync_writes,
        oso: dcp.controls.oso,
        oso_unfiltered,
        flatbuffers_events: dcp.controls.flatbuffers_events,
    };
    let enc = EncodeContext {
        collections,
        open_flags: dcp.flags,
        expiry_opcode: dcp.controls.expiry_opcode,
        marker_v2_2: dcp.controls.max_marker_v2_2,
        sync_replication: dcp.controls.sync_replication(),
        snappy: dcp.snappy,
        force_compression: dcp.snappy && dcp.controls.force_value_compression,
        flatbuffers_events: dcp.controls.flatbuffers_events,
    };
    'rounds: loop {
        let mut progress = false;
        let first = dcp.next_stream;
        let keys: Vec<StreamKey> = match first {
            Some(first) => dcp
                .streams
                .range(first..)
                .chain(dcp.streams.range(..first))
                .map(|(k, _)| *k)
                .collect(),
            None => dcp.streams.keys().copied().collect(),
        };
        for (i, key) in keys.iter().enumerate() {
            if tx.len() - start >= max_bytes || !dcp.window.can_send() {
                break 'rounds;
            }
            let Some(stream) = dcp.streams.get_mut(key) else {
                continue;
            };
            let Ok(vb) = bucket.vbucket_mut(key.0) else {
                continue;
            };
            stream.fill(vb, &fill);
            let Some(message) = stream.pop() else {
                continue;
            };
            progress = true;
            dcp.next_stream = keys.get(i + 1).or(keys.first()).copied();
            let address = StreamAddress {
                vbucket: key.0,
                opaque: stream.params.opaque,
                stream_id: stream.params.stream_id,
            };
            let before = tx.len();
            if let Ok(opcode) = encode(&message, address, &enc, tx) {
                let len = tx.len() - before;
                dcp.window.on_sent(flow_control_size(opcode, len));
                dcp.bytes_sent += len as u64;
                if matches!(message, Outgoing::Item { .. } | Outgoing::Sync(_)) {
                    dcp.items_sent += 1;
                }
            } else {
                tx.truncate(before);
            }
            if matches!(message, Outgoing::End(_))
                && let Some(mut done) = dcp.streams.remove(key)
            {
                done.release(Some(vb));
            }
        }
        if !progress {
            break;
        }
    }
}
