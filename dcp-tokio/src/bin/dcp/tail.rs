//! `dcp tail`: stream a bucket's changes, print them, keep a checkpoint.

use std::collections::BTreeSet;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use dcp_tokio::dcp_proto::auth::Credentials;
use dcp_tokio::dcp_proto::cluster::ConnectionString;
use dcp_tokio::dcp_proto::codec::Status;
use dcp_tokio::dcp_proto::consumer::{
    CommandError, ConnectionStats, ConsumerConfig, ConsumerError, Event, StreamFilter, StreamStart,
    StreamStats,
};
use dcp_tokio::dcp_proto::session::Checkpoint;
use dcp_tokio::{Connection, Error, ServerHandle};
use tokio::time::Instant;

use crate::args::{StartFrom, TailArgs, parse_vbuckets};
use crate::output::{bytes, change_size, json_line_in, thousands};
use crate::stats_report::{self, StatsReporter};
use crate::{Failure, admin, checkpoint_file, collections, serve};

/// The vbuckets "all" means: Couchbase's default count. Vbuckets a node
/// does not hold answer NOT_MY_VBUCKET and are skipped.
const ALL_VBUCKETS: u16 = 1024;

const TICK: Duration = Duration::from_secs(1);

/// Why the stream loop stopped.
enum End {
    AllEnded,
    Limit,
    Interrupted,
    OutputClosed,
    Failed(Error),
}

/// Counters and what is still streaming.
struct Progress {
    open: BTreeSet<u16>,
    items: u64,
    item_bytes: u64,
    rollbacks: u64,
    not_here: u64,
    failed: u64,
    /// At the last tick: items, bytes received, when.
    last: (u64, u64, Instant),
}

/// Runs `dcp tail`.
pub(crate) async fn run(args: TailArgs) -> Result<(), Failure> {
    if let Some(address) = args.address.clone()
        && (address.starts_with("couchbase://") || address.starts_with("couchbases://"))
    {
        // Names resolve with the first seed's manifest (`dcp serve`).
        let filter = match ConnectionString::parse(&address) {
            Ok(cs) if args.wants_collections() => {
                let seed = cs
                    .seeds
                    .first()
                    .map(|(host, port)| format!("{host}:{port}"))
                    .unwrap_or_default();
                stream_filter(&args, &seed, None).await?
            }
            _ => None,
        };
        // couchbases://, or couchbase:// with --ca/--tls: TLS to the seeds
        // and to every node's kvSSL port.
        let tls = if address.starts_with("couchbases://") || uses_tls(&args) {
            Some(client_tls(&args)?)
        } else {
            None
        };
        let name = args.name.clone().unwrap_or_else(default_name);
        return crate::tail_cluster::run(args, &address, name, tls, filter).await;
    }
    let mut embedded = None;
    let addr = match &args.address {
        Some(address) => normalize_address(address, uses_tls(&args))?,
        None => {
            let handle = serve::embedded(&args.bucket, &args.user, &args.password).await?;
            let addr = handle.local_addr().to_string();
            embedded = Some(handle.clone());
            eprintln!(
                "dcp tail: no address given, so an embedded server runs on {addr} with {} sample documents and a writer making {} changes/s.",
                serve::DEMO_DOCUMENTS,
                serve::DEMO_RATE
            );
            eprintln!(
                "          To stream a real node: dcp tail HOST --bucket NAME --user USER --password PASSWORD"
            );
            addr
        }
    };
    let vbuckets = parse_vbuckets(&args.vbuckets, ALL_VBUCKETS).map_err(Failure)?;
    let collections = args.wants_collections();
    let filter = stream_filter(&args, &addr, embedded.as_ref()).await?;
    let mut saved = match &args.checkpoint {
        Some(path) => checkpoint_file::load(path)?.unwrap_or_default(),
        None => Checkpoint::new(),
    };
    saved.version = Checkpoint::VERSION;
    let name = args.name.clone().unwrap_or_else(default_name);
    let config = ConsumerConfig::new(name.as_str(), args.bucket.as_str())
        .with_credentials(Credentials::new(args.user.as_str(), args.password.as_str()))
        .with_auto_ack(true)
        .with_buffer_size(args.window)
        .with_sync_writes(args.sync_writes)
        .with_collections(collections)
        // Typed ModifyCollection events and every collection setting; a
        // server that refuses the control sends fixed-struct events.
        .with_flatbuffers_system_events(collections)
        .with_log_keys(args.log_keys);
    let config = match args.consistent_snapshots {
        Some(limit) => config.with_consistent_snapshots(limit),
        None => config,
    };
    let connected = if uses_tls(&args) {
        let tls = client_tls(&args)?;
        let host = server_name(&addr);
        Connection::connect_tls(addr.as_str(), host, tls, config).await
    } else {
        Connection::connect(addr.as_str(), config).await
    };
    let mut conn = connected.map_err(|err| explain(err, &args, &addr))?;

    let mut progress = Progress {
        open: BTreeSet::new(),
        items: 0,
        item_bytes: 0,
        rollbacks: 0,
        not_here: 0,
        failed: 0,
        last: (0, 0, Instant::now()),
    };
    let mut resumed = 0;
    for vb in vbuckets.iter().copied() {
        let start = match saved.vbuckets.get(&vb) {
            Some(position) => {
                resumed += 1;
                StreamStart::Position(position.clone())
            }
            None => match args.from {
                StartFrom::Beginning => StreamStart::Beginning,
                StartFrom::Now => StreamStart::Now,
            },
        };
        let opened = match &filter {
            Some(filter) => conn.open_filtered_stream(vb, start, args.end_seqno, filter.clone()),
            None => conn.open_stream(vb, start, args.end_seqno),
        };
        match opened {
            Ok(()) => {
                progress.open.insert(vb);
            }
            // The checkpoint is already past the end seqno: nothing to do.
            Err(Error::Command(CommandError::InvalidPosition { .. })) => {}
            Err(err) => return Err(Failure(format!("cannot open vbucket {vb}: {err}"))),
        }
    }
    let from = match (resumed, args.from) {
        (0, StartFrom::Beginning) => "from the beginning".to_owned(),
        (0, StartFrom::Now) => "from now".to_owned(),
        (n, _) => format!(
            "resuming {n} from {}",
            display_path(args.checkpoint.as_deref())
        ),
    };
    eprintln!(
        "dcp tail: streaming {} vbuckets of bucket {:?} from {addr} ({from}) as DCP connection {name:?}",
        progress.open.len(),
        args.bucket
    );

    let stdout_is_terminal = io::stdout().is_terminal();
    let stderr_is_terminal = io::stderr().is_terminal();
    let show_progress = !args.json || (stderr_is_terminal && !stdout_is_terminal);
    let mut out = BufWriter::with_capacity(64 * 1024, io::stdout());

    let stop = stop_signal();
    tokio::pin!(stop);
    let mut ticker = tokio::time::interval_at(Instant::now() + TICK, TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut reporter = StatsReporter::new(args.stats);

    let end = loop {
        if progress.open.is_empty() {
            break End::AllEnded;
        }
        if args.limit.is_some_and(|limit| progress.items >= limit) {
            break End::Limit;
        }
        tokio::select! {
            biased;
            () = &mut stop => break End::Interrupted,
            _ = ticker.tick() => {
                if show_progress {
                    print_progress(&mut progress, &conn, stderr_is_terminal);
                }
                if reporter.due(std::time::Instant::now()) {
                    let (c, streams) = stats_of(&conn);
                    eprintln!("{}{}", if show_progress && stderr_is_terminal { "\r\x1b[2K" } else { "" }, reporter.line(&c, &streams));
                    if args.json && write_record(&mut out, &stats_report::record(&c, &streams, false)).is_err() {
                        break End::OutputClosed;
                    }
                }
                if out.flush().is_err() {
                    break End::OutputClosed;
                }
                if let Some(path) = &args.checkpoint {
                    save(&mut saved, &conn, path)?;
                }
            }
            event = conn.next_event() => match event {
                Ok(Some(event)) => {
                    if on_event(&event, &mut progress, args.json, collections, &mut out).is_err() {
                        break End::OutputClosed;
                    }
                }
                Ok(None) => break End::AllEnded,
                Err(err) => break End::Failed(err),
            },
        }
        // Nothing more to hand out without waiting: let the lines out.
        if conn.pending_events() == 0 && out.flush().is_err() {
            break End::OutputClosed;
        }
    };

    if args.stats.is_some() && args.json {
        let (c, streams) = stats_of(&conn);
        let _ = write_record(&mut out, &stats_report::record(&c, &streams, true));
    }
    let flushed = out.flush().is_ok();
    if show_progress && stderr_is_terminal {
        eprint!("\r\x1b[2K");
    }
    // A checkpoint covers only what reached stdout.
    let saved_note = match (&args.checkpoint, flushed) {
        (Some(path), true) => {
            save(&mut saved, &conn, path)?;
            format!("; checkpoint saved to {}", path.display())
        }
        (Some(_), false) => "; checkpoint not updated (output closed)".to_owned(),
        (None, _) => String::new(),
    };
    let totals = format!(
        "{} changes ({} of keys and values)",
        thousands(progress.items),
        bytes(progress.item_bytes)
    );
    let mut notes = String::new();
    if progress.not_here > 0 {
        notes.push_str(&format!(
            "; {} vbuckets not active on this node (skipped)",
            progress.not_here
        ));
    }
    if progress.rollbacks > 0 {
        notes.push_str(&format!("; {} rollbacks", progress.rollbacks));
    }
    if args.stats.is_some() {
        let (c, streams) = stats_of(&conn);
        eprint!("{}", stats_report::summary(&c, &streams));
    }
    match end {
        End::AllEnded => {
            eprintln!("dcp tail: every stream reached its end: {totals}{notes}{saved_note}")
        }
        End::Limit => eprintln!("dcp tail: stopped at the limit of {totals}{notes}{saved_note}"),
        End::Interrupted => eprintln!("dcp tail: interrupted after {totals}{notes}{saved_note}"),
        End::OutputClosed => eprintln!("dcp tail: output closed after {totals}{saved_note}"),
        End::Failed(err) => {
            let resume = if args.checkpoint.is_some() {
                "; run the same command to resume"
            } else {
                ""
            };
            return Err(Failure(format!(
                "{} after {totals}{saved_note}{resume}",
                explain(err, &args, &addr).0
            )));
        }
    }
    Ok(())
}

/// Handles one event: counts it, prints it, follows the streams' ends.
fn on_event(
    event: &Event,
    progress: &mut Progress,
    json: bool,
    collections: bool,
    out: &mut impl Write,
) -> io::Result<()> {
    if let Some(size) = change_size(event) {
        progress.items += 1;
        progress.item_bytes += size as u64;
    }
    match event {
        Event::Rollback { .. } => progress.rollbacks += 1,
        Event::StreamEnded { vbucket, .. } => {
            progress.open.remove(vbucket);
        }
        Event::StreamFailed {
            vbucket, status, ..
        } => {
            progress.open.remove(vbucket);
            if *status == Status::NotMyVbucket {
                progress.not_here += 1;
            } else {
                progress.failed += 1;
                eprintln!("dcp tail: vbucket {vbucket}: stream refused: {status}");
            }
        }
        _ => {}
    }
    if json && let Some(line) = json_line_in(event, collections) {
        serde_json::to_writer(&mut *out, &line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// The stream filter of `--collection` / `--scope`: names are resolved
/// with the embedded server's manifest, or a `dcp serve` server's (with
/// the `get_manifest` admin command, which needs an admin user); hex ids
/// need no look-up.
async fn stream_filter(
    args: &TailArgs,
    addr: &str,
    embedded: Option<&ServerHandle>,
) -> Result<Option<StreamFilter>, Failure> {
    let scope = args.scope.as_deref();
    let names = if !collections::needs_names(&args.collection, scope) {
        Vec::new()
    } else if let Some(handle) = embedded {
        handle.with_bucket(|bucket, _| collections::names_of(bucket.manifest()))
    } else {
        let json = admin::fetch_manifest(addr, &args.user, &args.password)
            .await
            .map_err(|e| {
                Failure(format!(
                    "cannot resolve collection names ({}); give hex collection ids instead, e.g. --collection 0x8",
                    e.0
                ))
            })?;
        collections::names_of_json(&json)
    };
    collections::filter(&args.collection, scope, &names)
}

fn save(saved: &mut Checkpoint, conn: &Connection, path: &Path) -> Result<(), Failure> {
    let before = saved.clone();
    // Keep positions of vbuckets this run did not stream.
    saved.vbuckets.extend(conn.checkpoint().vbuckets);
    if *saved == before && path.exists() {
        return Ok(());
    }
    checkpoint_file::save(path, saved)
}

/// Ctrl-C, or (on Unix) SIGTERM: both stop `dcp tail` with its checkpoint
/// saved. If no handler can be installed, never.
pub(crate) async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                result = tokio::signal::ctrl_c() => {
                    if result.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                _ = term.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn print_progress(progress: &mut Progress, conn: &Connection, terminal: bool) {
    let stats = conn.stats();
    let now = Instant::now();
    let (items, bytes, at) = progress.last;
    let secs = now.duration_since(at).as_secs_f64().max(1e-3);
    let rate = (progress.items - items) as f64 / secs;
    let mb = (stats.bytes_received - bytes) as f64 / secs / 1e6;
    progress.last = (progress.items, stats.bytes_received, now);
    let lag: u64 = progress
        .open
        .iter()
        .filter_map(|vb| conn.stream_stats(*vb).and_then(|s| s.lag))
        .sum();
    let mut line = format!(
        "{} changes  {}/s  {mb:.2} MB/s  {} streams open  lag {}",
        thousands(progress.items),
        thousands(rate.round() as u64),
        stats.streams_open,
        thousands(lag)
    );
    if progress.rollbacks > 0 {
        line.push_str(&format!("  {} rollbacks", progress.rollbacks));
    }
    if progress.failed > 0 {
        line.push_str(&format!("  {} streams refused", progress.failed));
    }
    if terminal {
        eprint!("\r\x1b[2K{line}");
    } else {
        eprintln!("{line}");
    }
}

/// The connection's counters and its streams'.
fn stats_of(conn: &Connection) -> (ConnectionStats, Vec<(u16, StreamStats)>) {
    // `dcp tail` opens no stream ids: one stream per vbucket.
    let streams = conn.consumer().all_stream_stats();
    let by_vbucket = streams.map(|(key, stats)| (key.vbucket(), stats));
    (conn.stats(), by_vbucket.collect())
}

/// One JSON record line.
pub(crate) fn write_record(out: &mut impl Write, record: &serde_json::Value) -> io::Result<()> {
    serde_json::to_writer(&mut *out, record)?;
    out.write_all(b"\n")
}

fn default_name() -> String {
    let mut bytes = [0u8; 4];
    let _ = getrandom::fill(&mut bytes);
    format!(
        "dcp-tail:{}:{:08x}",
        std::process::id(),
        u32::from_be_bytes(bytes)
    )
}

fn display_path(path: Option<&Path>) -> String {
    path.map_or_else(|| "the checkpoint".to_owned(), |p| p.display().to_string())
}

/// Whether `dcp tail` connects over TLS.
fn uses_tls(args: &TailArgs) -> bool {
    args.tls || args.ca.is_some() || args.tls_insecure
}

/// The TLS client configuration of `--ca` or `--tls-insecure`.
pub(crate) fn client_tls(
    args: &TailArgs,
) -> Result<std::sync::Arc<dcp_tokio::rustls::ClientConfig>, Failure> {
    let config = match (&args.ca, args.tls_insecure) {
        (_, true) => dcp_tokio::tls::insecure_client_config_for_testing(),
        (Some(ca), false) => dcp_tokio::tls::client_config_from_pem_file(ca),
        (None, false) => {
            return Err(Failure(
                "TLS (--tls, couchbases://) needs --ca FILE (the CA certificates to trust), or --tls-insecure for local testing".to_owned(),
            ));
        }
    };
    config.map_err(|err| Failure(err.to_string()))
}

/// The host of a `HOST:PORT` address, for TLS verification.
fn server_name(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// `HOST`, `HOST:PORT`, `couchbase://HOST` as `HOST:PORT` (11210 by
/// default, 11207 with TLS).
fn normalize_address(address: &str, tls: bool) -> Result<String, Failure> {
    let port = if tls { 11207 } else { 11210 };
    let mut rest = address.trim();
    if let Some(stripped) = rest.strip_prefix("couchbase://") {
        rest = stripped;
    }
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() {
        return Err(Failure("empty address".to_owned()));
    }
    if rest.parse::<SocketAddr>().is_ok() {
        return Ok(rest.to_owned());
    }
    if rest.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok(format!("[{rest}]:{port}"));
    }
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => {
            port.parse::<u16>()
                .map_err(|_| Failure(format!("invalid port in address {address:?}")))?;
            Ok(rest.to_owned())
        }
        Some(_) => Ok(rest.to_owned()),
        None => Ok(format!("{rest}:{port}")),
    }
}

/// One line a user understands.
fn explain(err: Error, args: &TailArgs, addr: &str) -> Failure {
    let user = &args.user;
    let bucket = &args.bucket;
    Failure(match err {
        Error::Connect { source, .. } if source.kind() == io::ErrorKind::ConnectionRefused => {
            format!(
                "cannot connect to {addr}: connection refused (is a server running there? `dcp serve` starts a local one)"
            )
        }
        Error::Connect { source, .. } => format!("cannot connect to {addr}: {source}"),
        Error::ConnectTimeout { timeout, .. } => {
            format!(
                "cannot connect to {addr}: no answer within {timeout:?} (host down or port filtered?)"
            )
        }
        Error::Consumer(ConsumerError::AuthFailed { .. }) => format!(
            "authentication failed for user {user:?}: wrong user name or password (set --user/--password or DCP_USER/DCP_PASSWORD)"
        ),
        Error::Consumer(ConsumerError::NoBucket { .. }) => format!(
            "bucket {bucket:?} does not exist on {addr}, or user {user:?} may not access it"
        ),
        Error::Consumer(ConsumerError::NoCommonMechanism { offered }) => format!(
            "{addr} offers no SCRAM authentication (it offers: {offered}); PLAIN would send the password in clear"
        ),
        Error::Consumer(ConsumerError::HandshakeTimeout(limit)) => format!(
            "{addr} did not complete the DCP handshake within {limit:?}: is it a Couchbase data port (11210)?"
        ),
        Error::Consumer(ConsumerError::Decode(_)) => format!(
            "{addr} sent bytes that are not the memcached binary protocol: is it a Couchbase data port (11210, not 8091)?"
        ),
        Error::Consumer(ConsumerError::ClosedByPeer) => {
            format!("{addr} closed the connection")
        }
        Error::Consumer(ConsumerError::DeadConnection(silence)) => format!(
            "connection to {addr} lost: nothing received for {}s",
            silence.as_secs()
        ),
        Error::Io(err) => format!("connection to {addr} failed: {err}"),
        Error::Tls { source, .. } => format!(
            "TLS handshake with {addr} failed: {source} (is it a TLS port, 11207, and does --ca hold its CA?)"
        ),
        other => format!("{addr}: {other}"),
    })
}
