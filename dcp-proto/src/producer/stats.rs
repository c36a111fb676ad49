//! STAT groups `` (default), `vbucket`, `vbucket-seqno [vb]`,
//! `failovers [vb]` and `dcp`, with the server's stat names for what this
//! node models; and GET_ALL_VB_SEQNOS.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::connection::Connection;
use super::context::Ctx;
use super::error::CloseReason;
use crate::bucket::VBucket;
use crate::codec::{Opcode, Status};
use crate::msg::VbucketState;
use crate::msg::client::{GetAllVbSeqnos, GetAllVbSeqnosResponse, Stat, StatResponse};

/// A vbucket state as the stats spell it.
pub(crate) fn state_name(state: VbucketState) -> &'static str {
    match state {
        VbucketState::Active => "active",
        VbucketState::Replica => "replica",
        VbucketState::Pending => "pending",
        VbucketState::Dead => "dead",
        _ => "unknown",
    }
}

fn vbucket_seqno_stats(vb: &VBucket, out: &mut Vec<(String, String)>) {
    let id = vb.id();
    let high = vb.high_seqno();
    let (snap_start, snap_end) = vb.snapshot_range(high).unwrap_or((high, high));
    let snap_end = snap_end.min(high);
    for (name, value) in [
        ("high_seqno", high),
        ("abs_high_seqno", high),
        ("last_persisted_seqno", vb.persisted_seqno()),
        ("uuid", vb.uuid()),
        ("purge_seqno", vb.purge_seqno()),
        ("last_persisted_snap_start", snap_start.min(high)),
        ("last_persisted_snap_end", snap_end),
        ("high_prepared_seqno", vb.high_prepared_seqno(high)),
        ("high_completed_seqno", vb.high_completed_seqno(high)),
        ("max_visible_seqno", vb.max_visible_seqno(high)),
    ] {
        out.push((format!("vb_{id}:{name}"), value.to_string()));
    }
}

fn failover_stats(vb: &VBucket, out: &mut Vec<(String, String)>) {
    let id = vb.id();
    let log = vb.failover_log();
    out.push((format!("vb_{id}:num_entries"), log.len().to_string()));
    out.push((
        format!("vb_{id}:num_erroneous_entries_erased"),
        "0".to_owned(),
    ));
    for (i, entry) in log.iter().enumerate() {
        out.push((format!("vb_{id}:{i}:id"), entry.vbucket_uuid.to_string()));
        out.push((format!("vb_{id}:{i}:seq"), entry.seqno.to_string()));
    }
}

fn bool_stat(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// An instant as the server writes times in stats: whole seconds since the
/// Unix epoch, by way of the wall clock at `clock.0`.
fn stat_time(at: Instant, clock: (Instant, SystemTime)) -> String {
    let (now, wall) = clock;
    let when = wall
        .checked_sub(now.saturating_duration_since(at))
        .unwrap_or(UNIX_EPOCH);
    when.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .to_string()
}

/// The `eq_dcpq:<name>:*` stats of one producer connection; `clock` is
/// now as an instant and as wall-clock time.
pub(crate) fn connection_stats(
    conn: &Connection,
    clock: (Instant, SystemTime),
    out: &mut Vec<(String, String)>,
) {
    let Some(dcp) = conn.dcp.as_ref() else {
        return;
    };
    let prefix = format!("eq_dcpq:{}:", dcp.name);
    let mut put = |name: &str, value: String| out.push((format!("{prefix}{name}"), value));
    let window = dcp.window.window();
    let paused = window > 0 && !dcp.window.can_send();
    let remaining: usize = dcp.streams.values().map(|s| s.ready_len()).sum();
    put("type", "producer".to_owned());
    put("flow_control", bool_stat(window > 0));
    put("max_buffer_bytes", window.to_string());
    put("unacked_bytes", dcp.window.outstanding().to_string());
    put("total_acked_bytes", dcp.window.total_acked().to_string());
    put("paused", bool_stat(paused));
    if paused {
        put("paused_reason", "BufferLogFull".to_owned());
    }
    put("items_sent", dcp.items_sent.to_string());
    put("items_remaining", remaining.to_string());
    put("total_bytes_sent", dcp.bytes_sent.to_string());
    put("last_receive_time", stat_time(conn.last_recv, clock));
    put("noops_sent", dcp.liveness.noops_sent.to_string());
    if dcp.liveness.noops_sent > 0 {
        put(
            "last_noop_sent_time",
            stat_time(dcp.liveness.last_sent, clock),
        );
    }
    put("noop_enabled", bool_stat(dcp.liveness.enabled));
    put(
        "noop_tx_interval",
        format!("{}s", dcp.liveness.interval.as_secs_f64()),
    );
    put("noop_wait", bool_stat(dcp.liveness.outstanding.is_some()));
    put("enable_stream_id", bool_stat(dcp.controls.stream_id));
    put(
        "force_value_compression",
        bool_stat(dcp.snappy && dcp.controls.force_value_compression),
    );
    put(
        "max_marker_version",
        if dcp.controls.max_marker_v2_2 {
            "2.2"
        } else {
            "2.0"
        }
        .to_owned(),
    );
    put(
        "synchronous_replication",
        bool_stat(dcp.controls.sync_replication()),
    );
    put(
        "send_stream_end_on_client_close_stream",
        bool_stat(dcp.controls.send_stream_end_on_close),
    );
    put(
        "enable_expiry_opcode",
        bool_stat(dcp.controls.expiry_opcode),
    );
    put(
        "supports_cursor_dropping",
        bool_stat(dcp.controls.cursor_dropping),
    );
    put("num_streams", dcp.streams.len().to_string());
    for ((vb, sid), s) in &dcp.streams {
        let stream = match sid {
            Some(sid) => format!("stream_{vb}_sid_{sid}_"),
            None => format!("stream_{vb}_"),
        };
        let p = &s.params;
        let (snap_start, snap_end) = s.last_sent_snapshot.unwrap_or((p.snap_start, p.snap_end));
        for (name, value) in [
            ("state", s.state_name().to_owned()),
            ("opaque", p.opaque.to_string()),
            ("flags", format!("{:#x}", p.flags.bits())),
            ("start_seqno", p.start.to_string()),
            ("end_seqno", p.end.to_string()),
            ("vb_uuid", p.vbucket_uuid.to_string()),
            ("snap_start_seqno", snap_start.to_string()),
            ("snap_end_seqno", snap_end.to_string()),
            ("last_sent_seqno", s.last_sent_seqno.to_string()),
            ("last_read_seqno", s.last_read.to_string()),
            ("last_sent_snap_end_seqno", snap_end.to_string()),
            ("items_ready", bool_stat(s.ready_len() > 0)),
            ("backfill_disk_items", s.backfill_items.to_string()),
            ("memory_items", s.memory_items.to_string()),
            ("items_sent", s.items_sent.to_string()),
            ("seqno_acknowledged", s.seqno_acknowledged.to_string()),
            // In memory, the stream reads from a checkpoint cursor.
            (
                "cursor_registered",
                bool_stat(s.state_name() == "in-memory"),
            ),
        ] {
            put(&format!("{stream}{name}"), value);
        }
    }
}

/// Which vbuckets a `group [vb]` argument selects.
fn selected<'b>(ctx: &'b Ctx<'_>, arg: Option<&str>) -> Result<Vec<&'b VBucket>, Status> {
    match arg {
        None => Ok(ctx.bucket.vbuckets().collect()),
        Some(arg) => {
            let vb: u16 = arg.parse().map_err(|_| Status::Einval)?;
            ctx.bucket
                .vbucket(vb)
                .map(|v| vec![v])
                .ok_or(Status::NotMyVbucket)
        }
    }
}

/// STAT.
pub(crate) fn stat(conn: &mut Connection, req: &Stat, ctx: &Ctx<'_>) -> Result<(), CloseReason> {
    let group = String::from_utf8_lossy(&req.group).into_owned();
    let mut words = group.split_ascii_whitespace();
    let name = words.next().unwrap_or("");
    let arg = words.next();
    let mut out: Vec<(String, String)> = Vec::new();
    let result = match name {
        "" => {
            let items: usize = ctx.bucket.vbuckets().map(VBucket::live_count).sum();
            out.push(("version".to_owned(), ctx.config.version.clone()));
            out.push((
                "curr_connections".to_owned(),
                (ctx.others.len() + 1).to_string(),
            ));
            out.push(("curr_items".to_owned(), items.to_string()));
            Ok(())
        }
        "vbucket" => selected(ctx, arg).map(|vbs| {
            for vb in vbs {
                out.push((format!("vb_{}", vb.id()), state_name(vb.state()).to_owned()));
            }
        }),
        "vbucket-seqno" => selected(ctx, arg).map(|vbs| {
            for vb in vbs {
                vbucket_seqno_stats(vb, &mut out);
            }
        }),
        "failovers" => selected(ctx, arg).map(|vbs| {
            for vb in vbs {
                failover_stats(vb, &mut out);
            }
        }),
        "dcp" => {
            let producers: Vec<&Connection> = ctx
                .others
                .values()
                .chain(core::iter::once(&*conn))
                .filter(|c| c.dcp.is_some() && c.closed.is_none())
                .collect();
            let remaining: usize = producers
                .iter()
                .filter_map(|c| c.dcp.as_ref())
                .flat_map(|d| d.streams.values())
                .map(|s| s.ready_len())
                .sum();
            let bytes: u64 = producers
                .iter()
                .filter_map(|c| c.dcp.as_ref())
                .map(|d| d.bytes_sent)
                .sum();
            let backfills = producers
                .iter()
                .filter_map(|c| c.dcp.as_ref())
                .flat_map(|d| d.streams.values())
                .filter(|s| s.state_name() == "backfilling")
                .count();
            out.push(("ep_dcp_count".to_owned(), producers.len().to_string()));
            out.push((
                "ep_dcp_producer_count".to_owned(),
                producers.len().to_string(),
            ));
            out.push(("ep_dcp_items_remaining".to_owned(), remaining.to_string()));
            out.push(("ep_dcp_total_bytes".to_owned(), bytes.to_string()));
            out.push((
                "ep_dcp_num_running_backfills".to_owned(),
                backfills.to_string(),
            ));
            let mut per_conn = Vec::new();
            for c in producers {
                connection_stats(c, (ctx.now, ctx.wall_clock), &mut per_conn);
            }
            out.extend(per_conn);
            Ok(())
        }
        "dcpagg" => {
            // Producer connections grouped by the part of their name before
            // the first ':' (the server's default separator).
            let mut groups: std::collections::BTreeMap<String, [u64; 4]> = Default::default();
            for c in ctx.others.values().chain(core::iter::once(&*conn)) {
                let Some(dcp) = c.dcp.as_ref().filter(|_| c.closed.is_none()) else {
                    continue;
                };
                let prefix = dcp.name.split(':').next().unwrap_or("").to_owned();
                let g = groups.entry(prefix).or_default();
                g[0] += 1;
                g[1] += dcp.items_sent;
                g[2] += dcp
                    .streams
                    .values()
                    .map(|s| s.ready_len() as u64)
                    .sum::<u64>();
                g[3] += dcp.bytes_sent;
            }
            for (prefix, [count, items, remaining, bytes]) in groups {
                for (name, value) in [
                    ("count", count),
                    ("producer_count", count),
                    ("items_sent", items),
                    ("items_remaining", remaining),
                    ("total_bytes", bytes),
                ] {
                    out.push((format!("connagg_{prefix}:{name}"), value.to_string()));
                }
            }
            Ok(())
        }
        _ => Err(Status::KeyEnoent),
    };
    if let Err(status) = result {
        return conn.status(Opcode::Stat, status, req.opaque);
    }
    let opaque = req.opaque;
    conn.respond(Status::Success, |buf| {
        for (key, value) in out {
            StatResponse::new(opaque, key, value).encode(buf)?;
        }
        StatResponse::terminator(opaque).encode(buf)
    })
}

/// GET_ALL_VB_SEQNOS: `(vb, high seqno)` for the vbuckets in the asked
/// state (0 or none: every vbucket that is not dead).
pub(crate) fn get_all_vb_seqnos(
    conn: &mut Connection,
    req: &GetAllVbSeqnos,
    ctx: &Ctx<'_>,
) -> Result<(), CloseReason> {
    let wanted = match req.state {
        None | Some(0) => None,
        Some(raw @ 1..=4) => Some(VbucketState::from_raw(raw as u8)),
        Some(_) => return conn.status(Opcode::GetAllVbSeqnos, Status::Einval, req.opaque),
    };
    if let Some(cid) = req.collection_id {
        if !conn.features.collections {
            return conn.status(Opcode::GetAllVbSeqnos, Status::Einval, req.opaque);
        }
        if ctx.bucket.manifest().collection(cid).is_none() {
            return conn.status(
                Opcode::GetAllVbSeqnos,
                Status::UnknownCollection,
                req.opaque,
            );
        }
    }
    // Per collection: the collection's high seqno in each vbucket.
    let seqno_of = |vb: &VBucket| match req.collection_id {
        Some(cid) => vb.collection_high_seqno(cid),
        None => vb.high_seqno(),
    };
    let entries = ctx
        .bucket
        .vbuckets()
        .filter(|vb| match wanted {
            None => vb.state() != VbucketState::Dead,
            Some(state) => vb.state() == state,
        })
        .map(|vb| (vb.id(), seqno_of(vb)))
        .collect();
    let response = GetAllVbSeqnosResponse::success(req.opaque, entries);
    conn.respond(Status::Success, |buf| response.encode(buf))
}
