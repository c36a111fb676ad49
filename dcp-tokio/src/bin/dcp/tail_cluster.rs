//! `dcp tail couchbase://h1,h2/bucket` (or `couchbases://...`, TLS):
//! follow a whole cluster.

use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dcp_tokio::ClusterConnection;
use dcp_tokio::dcp_proto::auth::Credentials;
use dcp_tokio::dcp_proto::cluster::{
    ConnectionString, InitialStart, Network, OrchestratorConfig, VbucketSelection,
};
use dcp_tokio::dcp_proto::consumer::{
    ConfigPush, ConnectionStats, ConsumerConfig, Event, StreamFilter, StreamStats,
};
use dcp_tokio::dcp_proto::session::Checkpoint;
use dcp_tokio::rustls::ClientConfig;
use tokio::time::Instant;

use crate::args::{StartFrom, TailArgs, parse_vbuckets};
use crate::output::{bytes, change_size, json_line_in, thousands};
use crate::stats_report::{self, StatsReporter};
use crate::tail::write_record;
use crate::{Failure, checkpoint_file};

const TICK: Duration = Duration::from_secs(1);

/// Runs `dcp tail` against the cluster named by the connection string
/// `address`, over TLS with `tls` if given.
pub(crate) async fn run(
    args: TailArgs,
    address: &str,
    name: String,
    tls: Option<Arc<ClientConfig>>,
    filter: Option<StreamFilter>,
) -> Result<(), Failure> {
    let mut saved = match &args.checkpoint {
        Some(path) => checkpoint_file::load(path)?.unwrap_or_default(),
        None => Checkpoint::new(),
    };
    saved.version = Checkpoint::VERSION;
    let config = ConsumerConfig::new(name.as_str(), args.bucket.as_str())
        .with_credentials(Credentials::new(args.user.as_str(), args.password.as_str()))
        .with_auto_ack(true)
        .with_buffer_size(args.window)
        .with_sync_writes(args.sync_writes)
        // Topology changes arrive as pushes (brief: the version, then the
        // config is fetched), not only from the periodic poll.
        .with_config_push(ConfigPush::Brief)
        .with_dedupe_not_my_vbucket(true)
        .with_log_keys(args.log_keys)
        .with_collections(args.wants_collections())
        .with_flatbuffers_system_events(args.wants_collections());
    // Snapshots are handed out whole across nodes; the checkpoint covers
    // complete snapshots only.
    let config = match args.consistent_snapshots {
        Some(limit) => config.with_consistent_snapshots(limit),
        None => config,
    };
    let network = ConnectionString::parse(address).map_or(Network::Auto, |cs| cs.network);
    let mut settings = OrchestratorConfig::new()
        .with_network(network)
        .with_start(match args.from {
            StartFrom::Beginning => InitialStart::Beginning,
            StartFrom::Now => InitialStart::Now,
        })
        .with_end_seqno(args.end_seqno);
    if let Some(filter) = filter {
        settings = settings.with_filter(filter);
    }
    let collections = args.wants_collections();
    if args.vbuckets != "all" {
        let vbuckets = parse_vbuckets(&args.vbuckets, u16::MAX).map_err(Failure)?;
        settings = settings.with_vbuckets(VbucketSelection::only(vbuckets));
    }
    let connected = match tls {
        Some(tls) => {
            ClusterConnection::connect_tls(address, tls, config, settings, saved.clone()).await
        }
        None => ClusterConnection::connect(address, config, settings, saved.clone()).await,
    };
    let mut conn = connected.map_err(|err| {
        let hint = match err {
            dcp_tokio::Error::Tls { .. } => {
                " (are the seeds TLS ports, 11207 by default, and does --ca hold their CA?)"
            }
            _ => "",
        };
        Failure(format!("cannot bootstrap from {address}: {err}{hint}"))
    })?;
    let bucket = conn
        .orchestrator()
        .config()
        .map_or_else(String::new, |c| c.name().to_owned());
    eprintln!(
        "dcp tail: following bucket {bucket:?} on {} nodes from {address} as DCP connection {name:?}",
        conn.orchestrator()
            .config()
            .map_or(0, |c| c.servers().len())
    );

    let stdout_is_terminal = io::stdout().is_terminal();
    let stderr_is_terminal = io::stderr().is_terminal();
    let show_progress = !args.json || (stderr_is_terminal && !stdout_is_terminal);
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout());
    let mut ticker = tokio::time::interval_at(Instant::now() + TICK, TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stop = crate::tail::stop_signal();
    tokio::pin!(stop);
    let (mut items, mut item_bytes, mut rollbacks) = (0u64, 0u64, 0u64);
    let mut reporter = StatsReporter::new(args.stats);
    let mut failure = None;
    loop {
        if args.limit.is_some_and(|limit| items >= limit) {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            _ = ticker.tick() => {
                if show_progress {
                    let nodes = conn.connected_nodes().len();
                    eprint!(
                        "{}dcp tail: {} changes ({}), {rollbacks} rollbacks, {nodes} nodes{}",
                        if stderr_is_terminal { "\r\x1b[2K" } else { "" },
                        thousands(items),
                        bytes(item_bytes),
                        if stderr_is_terminal { "" } else { "\n" },
                    );
                }
                if reporter.due(std::time::Instant::now()) {
                    let (c, streams) = stats_of(&conn);
                    eprintln!("{}{}", if show_progress && stderr_is_terminal { "\r\x1b[2K" } else { "" }, reporter.line(&c, &streams));
                    if args.json && write_record(&mut out, &stats_report::record(&c, &streams, false)).is_err() {
                        break;
                    }
                }
                if out.flush().is_err() {
                    break;
                }
                if let Some(path) = &args.checkpoint {
                    save(&mut saved, &conn, path)?;
                }
            }
            event = conn.next_event() => match event {
                Ok(Some(event)) => {
                    if let Some(size) = change_size(&event) {
                        items += 1;
                        item_bytes += size as u64;
                    }
                    if let Event::Rollback { .. } = event {
                        rollbacks += 1;
                    }
                    if args.json && let Some(line) = json_line_in(&event, collections) {
                        let written = serde_json::to_writer(&mut out, &line)
                            .map_err(io::Error::from)
                            .and_then(|()| out.write_all(b"\n"));
                        if written.is_err() {
                            break;
                        }
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            },
        }
    }
    if args.stats.is_some() {
        let (c, streams) = stats_of(&conn);
        if args.json {
            let _ = write_record(&mut out, &stats_report::record(&c, &streams, true));
        }
        eprint!("{}", stats_report::summary(&c, &streams));
    }
    let flushed = out.flush().is_ok();
    if show_progress && stderr_is_terminal {
        eprint!("\r\x1b[2K");
    }
    if flushed && let Some(path) = &args.checkpoint {
        save(&mut saved, &conn, path)?;
    }
    for (vb, reason) in conn.failed() {
        eprintln!("dcp tail: vbucket {vb} given up: {reason:?}");
    }
    let totals = format!(
        "{} changes ({} of keys and values), {rollbacks} rollbacks",
        thousands(items),
        bytes(item_bytes)
    );
    match failure {
        Some(err) => Err(Failure(format!("dcp tail: {err} after {totals}"))),
        None => {
            eprintln!("dcp tail: stopped after {totals}");
            Ok(())
        }
    }
}

fn save(saved: &mut Checkpoint, conn: &ClusterConnection, path: &Path) -> Result<(), Failure> {
    let before = saved.clone();
    saved.vbuckets.extend(conn.checkpoint().vbuckets);
    if *saved == before && path.exists() {
        return Ok(());
    }
    checkpoint_file::save(path, saved)
}

/// The cluster's counters added up, and each selected vbucket's.
fn stats_of(conn: &ClusterConnection) -> (ConnectionStats, Vec<(u16, StreamStats)>) {
    let streams = conn
        .orchestrator()
        .vbuckets()
        .filter_map(|vb| conn.stream_stats(vb).map(|s| (vb, s)))
        .collect();
    (conn.stats(), streams)
}
