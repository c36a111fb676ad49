//! `dcp tail --stats[=SECS]`: the library's connection and stream counters
//! as a periodic line on stderr, a final summary, and (with `--json`)
//! `{"type":"stats",...}` records on stdout.

use std::time::{Duration, Instant};

use dcp_tokio::dcp_proto::consumer::{ConnectionStats, StreamStats, StreamStatus};
use serde_json::{Value, json};

use crate::output::{bytes, thousands};

/// When to report.
pub(crate) struct StatsReporter {
    every: Option<Duration>,
    next: Instant,
    /// Bytes received and when, at the last report.
    last: (u64, Instant),
}

impl StatsReporter {
    /// `--stats=SECS` (`None`: no stats; 0: only the final summary).
    pub(crate) fn new(every_secs: Option<u64>) -> Self {
        let now = Instant::now();
        let every = every_secs.filter(|s| *s > 0).map(Duration::from_secs);
        Self {
            every,
            next: now + every.unwrap_or_default(),
            last: (0, now),
        }
    }

    /// Whether a periodic report is due now.
    pub(crate) fn due(&mut self, now: Instant) -> bool {
        let Some(every) = self.every else {
            return false;
        };
        if now < self.next {
            return false;
        }
        self.next = now + every;
        true
    }

    /// The periodic line: rates since the last one.
    pub(crate) fn line(&mut self, c: &ConnectionStats, streams: &[(u16, StreamStats)]) -> String {
        let now = Instant::now();
        let (bytes_before, at) = self.last;
        let secs = now.duration_since(at).as_secs_f64().max(1e-3);
        let rate = c.bytes_received.saturating_sub(bytes_before) as f64 / secs;
        self.last = (c.bytes_received, now);
        let sum = Summary::of(streams);
        let mut line = format!(
            "stats: {} items  {} received ({}/s)  {} acked  {} unacked  {} acks (last {})  last message {}  {} noops  {} streams open  lag {}  {} rollbacks",
            thousands(c.items),
            bytes(c.bytes_received),
            bytes(rate as u64),
            bytes(c.acked_bytes),
            bytes(c.unacked_bytes),
            thousands(c.buffer_acks_sent),
            ago(c.last_ack_at, now),
            ago(c.last_message_at, now),
            thousands(c.noops_answered),
            c.streams_open,
            thousands(sum.lag),
            c.rollbacks,
        );
        if c.reconnects > 0 {
            line.push_str(&format!("  {} reconnects", c.reconnects));
        }
        if sum.ends > 0 {
            line.push_str(&format!("  {} stream ends", sum.ends));
        }
        if c.held_bytes > 0 || c.snapshots_completed > 0 {
            line.push_str(&format!(
                "  held {} ({} snapshots complete, {} discarded, {} too large)",
                bytes(c.held_bytes),
                c.snapshots_completed,
                c.snapshots_discarded,
                c.snapshots_too_large
            ));
        }
        line
    }
}

/// Stream counters added up.
#[derive(Default)]
struct Summary {
    lag: u64,
    ends: u64,
    by_status: Vec<(StreamStatus, u64)>,
}

impl Summary {
    fn of(streams: &[(u16, StreamStats)]) -> Self {
        let mut sum = Summary::default();
        for (_, s) in streams {
            sum.lag += s.lag.unwrap_or(0);
            sum.ends += s.end_reasons.total();
            match sum.by_status.iter_mut().find(|(st, _)| *st == s.status) {
                Some((_, n)) => *n += 1,
                None => sum.by_status.push((s.status, 1)),
            }
        }
        sum
    }
}

fn ago(at: Option<Instant>, now: Instant) -> String {
    match at {
        Some(at) => format!(
            "{:.1}s ago",
            now.saturating_duration_since(at).as_secs_f64()
        ),
        None => "never".to_owned(),
    }
}

fn ago_ms(at: Option<Instant>, now: Instant) -> Value {
    at.map_or(Value::Null, |at| {
        json!(now.saturating_duration_since(at).as_millis() as u64)
    })
}

/// The final summary: connection counters, then streams by state, end
/// reasons, and the vbuckets furthest behind.
pub(crate) fn summary(c: &ConnectionStats, streams: &[(u16, StreamStats)]) -> String {
    let now = Instant::now();
    let sum = Summary::of(streams);
    let mut out = format!(
        "connection: {} received in {} frames, {} sent; {} buffer acks ({} acked, {} unacked, last {}); last message {}; {} noops answered; {} reconnects\n",
        bytes(c.bytes_received),
        thousands(c.frames_received),
        bytes(c.bytes_sent),
        thousands(c.buffer_acks_sent),
        bytes(c.acked_bytes),
        bytes(c.unacked_bytes),
        ago(c.last_ack_at, now),
        ago(c.last_message_at, now),
        thousands(c.noops_answered),
        c.reconnects,
    );
    let states: Vec<String> = sum
        .by_status
        .iter()
        .map(|(st, n)| format!("{n} {}", st.as_str()))
        .collect();
    let (mut items, mut requests, mut rollbacks) = (0, 0, 0);
    let mut ends = dcp_tokio::dcp_proto::consumer::EndReasonCounts::default();
    for (_, s) in streams {
        items += s.items;
        requests += s.requests;
        rollbacks += s.rollbacks;
        ends.merge(&s.end_reasons);
    }
    out.push_str(&format!(
        "streams: {} vbuckets ({}), {} changes, {} stream requests, {} rollbacks, lag {}\n",
        streams.len(),
        states.join(", "),
        thousands(items),
        thousands(requests),
        rollbacks,
        thousands(sum.lag),
    ));
    if ends.total() > 0 {
        out.push_str(&format!(
            "stream ends: {} ok, {} closed, {} state changed, {} disconnected, {} too slow, {} backfill failed, {} rollback, {} other\n",
            ends.ok,
            ends.closed,
            ends.state_changed,
            ends.disconnected,
            ends.slow,
            ends.backfill_failed,
            ends.rollback,
            ends.filter_empty + ends.lost_privileges + ends.other,
        ));
    }
    let mut behind: Vec<&(u16, StreamStats)> =
        streams.iter().filter(|(_, s)| s.lag > Some(0)).collect();
    behind.sort_by_key(|(vb, s)| (std::cmp::Reverse(s.lag), *vb));
    for (vb, s) in behind.into_iter().take(5) {
        out.push_str(&format!(
            "  vb {vb:>4}: {} at seqno {} of {} (lag {}), uuid {:#x}\n",
            s.status.as_str(),
            s.last_seqno,
            s.high_seqno.unwrap_or(0),
            s.lag.unwrap_or(0),
            s.vb_uuid.unwrap_or(0),
        ));
    }
    out
}

/// A `{"type":"stats",...}` record; the final one lists every vbucket.
pub(crate) fn record(c: &ConnectionStats, streams: &[(u16, StreamStats)], last: bool) -> Value {
    let now = Instant::now();
    let sum = Summary::of(streams);
    let mut record = json!({
        "type": "stats",
        "final": last,
        "connection": {
            "connections": c.connections,
            "bytes_received": c.bytes_received,
            "bytes_sent": c.bytes_sent,
            "frames_received": c.frames_received,
            "items": c.items,
            "acked_bytes": c.acked_bytes,
            "unacked_bytes": c.unacked_bytes,
            "buffer_acks_sent": c.buffer_acks_sent,
            "last_ack_ms_ago": ago_ms(c.last_ack_at, now),
            "last_message_ms_ago": ago_ms(c.last_message_at, now),
            "noops_answered": c.noops_answered,
            "streams_open": c.streams_open,
            "rollbacks": c.rollbacks,
            "reconnects": c.reconnects,
            "held_bytes": c.held_bytes,
            "snapshots_completed": c.snapshots_completed,
            "snapshots_discarded": c.snapshots_discarded,
            "snapshots_too_large": c.snapshots_too_large,
        },
        "streams": {
            "count": streams.len(),
            "lag": sum.lag,
            "ends": sum.ends,
        },
    });
    if last {
        let vbuckets: Vec<Value> = streams.iter().map(|(vb, s)| stream_json(*vb, s)).collect();
        record["vbuckets"] = Value::Array(vbuckets);
    }
    record
}

fn stream_json(vb: u16, s: &StreamStats) -> Value {
    let e = &s.end_reasons;
    json!({
        "vbucket": vb,
        "state": s.status.as_str(),
        "opaque": s.opaque,
        "items": s.items,
        "bytes": s.bytes,
        "last_seqno": s.last_seqno,
        "snapshot": s.snapshot.map(|(start, end)| json!({
            "start": start,
            "end": end,
            "flags": s.snapshot_flags.map(|f| f.bits()),
        })),
        "vb_uuid": s.vb_uuid,
        "high_seqno": s.high_seqno,
        "lag": s.lag,
        "rollbacks": s.rollbacks,
        "requests": s.requests,
        "end_reasons": {
            "ok": e.ok, "closed": e.closed, "state_changed": e.state_changed,
            "disconnected": e.disconnected, "slow": e.slow,
            "backfill_failed": e.backfill_failed, "rollback": e.rollback,
            "filter_empty": e.filter_empty, "lost_privileges": e.lost_privileges,
            "other": e.other,
        },
        "held_bytes": s.held_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_zero_reports_only_at_the_end() {
        let mut r = StatsReporter::new(Some(0));
        assert!(!r.due(Instant::now() + Duration::from_secs(3600)));
        let mut r = StatsReporter::new(Some(2));
        let now = Instant::now();
        assert!(!r.due(now));
        assert!(r.due(now + Duration::from_secs(3)));
        assert!(!r.due(now + Duration::from_secs(4)));
    }

    #[test]
    fn the_final_record_lists_vbuckets() {
        let c = ConnectionStats::default();
        let streams = vec![(3, StreamStats::default())];
        let last = record(&c, &streams, true);
        assert_eq!(last["type"], "stats");
        assert_eq!(last["vbuckets"][0]["vbucket"], 3);
        assert_eq!(last["vbuckets"][0]["state"], "none");
        assert!(record(&c, &streams, false).get("vbuckets").is_none());
        assert!(summary(&c, &streams).contains("1 vbuckets (1 none)"));
    }
}
