//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Try it in one command (an embedded server with sample data and a live writer):
  dcp tail

Against a running server or cluster node:
  dcp serve --load-rate 200/s                 # in one shell
  dcp tail 127.0.0.1:11210 --json --limit 10  # in another";

/// Stream a Couchbase bucket's changes over DCP (Database Change
/// Protocol), or run a local DCP server to develop and test against.
#[derive(Debug, Parser)]
#[command(name = "dcp", version, after_help = AFTER_HELP)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,

    /// Log the library's events on stderr at this level or with these
    /// directives (`info`, `debug`, `dcp_proto=trace,warn`, ...); overrides
    /// RUST_LOG. Off by default. Document keys are redacted (see `tail
    /// --log-keys`); values are never logged
    #[arg(long, global = true, value_name = "LEVEL")]
    pub(crate) log_level: Option<String>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run a local DCP server: an in-memory bucket behind a
    /// Couchbase-compatible data node, with optional generated load
    Serve(ServeArgs),
    /// Stream the changes of a bucket: JSON lines, or a live progress
    /// summary; with no address, from an embedded demo server
    Tail(TailArgs),
    /// Inject a fault into a running `dcp serve` (fail over a vbucket,
    /// stall or drop a connection, ...)
    Admin(AdminArgs),
}

/// `dcp serve`.
#[derive(Debug, Args)]
#[command(after_help = "\
Every user may also run `dcp admin` against the server. Standard
memcached-binary clients can write documents to it and read its STAT groups.

Example:
  dcp serve --listen 127.0.0.1:11210 --vbuckets 64 --preload 10000 --load-rate 500/s
  dcp serve --nodes 3 --listen 127.0.0.1:11210   (a local cluster on ports 11210-11212)")]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port)
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:11210")]
    pub(crate) listen: String,

    /// Name of the bucket to serve
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub(crate) bucket: String,

    /// A user who may connect, as NAME:PASSWORD (repeat for more users)
    #[arg(
        long = "user",
        value_name = "NAME:PASSWORD",
        default_value = "Administrator:password",
        value_parser = parse_user
    )]
    pub(crate) users: Vec<(String, String)>,

    /// Number of vbuckets (Couchbase uses 1024; 64 on macOS)
    #[arg(long, value_name = "N", default_value_t = 1024, value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) vbuckets: u16,

    /// Sample documents written before the server starts serving
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) preload: u64,

    /// Generated writes per second while serving, e.g. 500/s (0: none)
    #[arg(long, value_name = "N/s", default_value = "0", value_parser = parse_rate)]
    pub(crate) load_rate: f64,

    /// Data nodes of a local cluster, on consecutive ports from --listen
    /// (1: a single node)
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub(crate) nodes: u16,

    /// Replicas per vbucket in a local cluster (--nodes above 1)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub(crate) replicas: usize,

    /// Serve TLS only, presenting this PEM certificate chain (leaf first;
    /// needs --tls-key). A local cluster (--nodes) lists its ports as
    /// kvSSL: stream it with couchbases://
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,

    /// Create this collection at start, as SCOPE.COLLECTION (its scope
    /// too), with sample documents (repeat for more)
    #[arg(long = "collection", value_name = "SCOPE.COLLECTION")]
    pub(crate) collections: Vec<String>,

    #[command(flatten)]
    pub(crate) load: LoadArgs,
}

/// The shape of generated documents and writes.
#[derive(Debug, Clone, Args)]
pub(crate) struct LoadArgs {
    /// Size range of generated values in bytes, as MIN-MAX
    #[arg(long, value_name = "MIN-MAX", default_value = "64-512", value_parser = parse_size_range)]
    pub(crate) value_size: (usize, usize),

    /// Fraction of generated writes that delete a document
    #[arg(long, value_name = "F", default_value_t = 0.05, value_parser = parse_ratio)]
    pub(crate) delete_ratio: f64,

    /// Fraction of generated writes that set a short expiry (5-60 s)
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_ratio)]
    pub(crate) expiry_ratio: f64,

    /// Number of distinct keys generated writes use
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) keys: u64,

    /// Seed for the generated data and the vbucket uuids
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) seed: u64,

    /// Fraction of generated writes that are durable (synchronous writes:
    /// a prepare, then its commit)
    #[arg(long, value_name = "F", default_value_t = 0.0, value_parser = parse_ratio)]
    pub(crate) durable_ratio: f64,

    /// Keep prepares of durable writes pending until `dcp admin
    /// commit-pending` / `abort-pending` (default: commit at once, as a
    /// bucket without replicas does)
    #[arg(long)]
    pub(crate) hold_sync_writes: bool,
}

/// Where `dcp tail` starts each stream without a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StartFrom {
    /// Every change the bucket holds, then new ones
    Beginning,
    /// Only changes made from now on
    Now,
}

/// `dcp tail`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  dcp tail                                              # embedded demo server
  dcp tail 127.0.0.1:11210 --json --limit 100
  dcp tail cb1.example.com --bucket travel-sample --user app --password secret \\
      --checkpoint travel.json --json > changes.jsonl   # resumable

Ctrl-C stops it with the checkpoint saved; the same command resumes from it.")]
pub(crate) struct TailArgs {
    /// Data node to stream from, as HOST or HOST:PORT (port 11210 by default);
    /// without it, an embedded server with sample data is started
    #[arg(value_name = "ADDRESS")]
    pub(crate) address: Option<String>,

    /// Bucket to stream
    #[arg(long, short, value_name = "NAME", default_value = "default")]
    pub(crate) bucket: String,

    /// User name
    #[arg(
        long,
        short,
        value_name = "NAME",
        env = "DCP_USER",
        default_value = "Administrator",
        hide_env_values = true
    )]
    pub(crate) user: String,

    /// Password
    #[arg(
        long,
        short,
        value_name = "PASSWORD",
        env = "DCP_PASSWORD",
        default_value = "password",
        hide_env_values = true
    )]
    pub(crate) password: String,

    /// Vbuckets to stream: "all", a range "0-1023", or a list "0,5,9-12"
    #[arg(long, value_name = "SPEC", default_value = "all")]
    pub(crate) vbuckets: String,

    /// Where streams start when the checkpoint has no position for them
    #[arg(long, value_enum, default_value_t = StartFrom::Beginning)]
    pub(crate) from: StartFrom,

    /// Checkpoint file: resumed from if it exists, kept up to date (every
    /// second and at exit)
    #[arg(long, value_name = "FILE")]
    pub(crate) checkpoint: Option<PathBuf>,

    /// End each stream at this seqno; exit when every stream ended
    #[arg(long, value_name = "N")]
    pub(crate) end_seqno: Option<u64>,

    /// Print each change as a JSON line on stdout
    #[arg(long)]
    pub(crate) json: bool,

    /// Ask for synchronous writes: prepares, commits and aborts are shown
    /// (JSON types "prepare", "commit", "abort") instead of commits as
    /// plain mutations
    #[arg(long)]
    pub(crate) sync_writes: bool,

    /// Exit after this many changes (mutations, deletions, expirations;
    /// with --sync-writes also prepares, commits and aborts)
    #[arg(long, value_name = "N")]
    pub(crate) limit: Option<u64>,

    /// Print the connection's and streams' counters to stderr every SECS
    /// seconds (10 if not given; 0: only at exit) and a summary at exit;
    /// with --json, also as {"type":"stats"} records on stdout
    #[arg(
        long,
        value_name = "SECS",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "10"
    )]
    pub(crate) stats: Option<u64>,

    /// Show document keys in log events (`--log-level trace`) instead of
    /// redacting them; values are never logged
    #[arg(long)]
    pub(crate) log_keys: bool,

    /// Hand each snapshot out only once it has arrived whole, holding at
    /// most BYTES (a larger snapshot passes through, reported)
    #[arg(long, value_name = "BYTES")]
    pub(crate) consistent_snapshots: Option<u64>,

    /// DCP connection name (unique per connection; `dcp admin` uses it)
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,

    /// Flow-control window in bytes (0: no flow control)
    #[arg(long, value_name = "BYTES", default_value_t = 10 * 1024 * 1024)]
    pub(crate) window: u32,

    /// Connect over TLS (port 11207 by default), verifying the server's
    /// certificate with --ca (a couchbases:// address always uses TLS)
    #[arg(long)]
    pub(crate) tls: bool,

    /// PEM file of the CA certificates to trust (implies --tls)
    #[arg(long, value_name = "FILE", conflicts_with = "tls_insecure")]
    pub(crate) ca: Option<PathBuf>,

    /// TLS without verifying the server's certificate: for local testing
    /// only (implies --tls)
    #[arg(long)]
    pub(crate) tls_insecure: bool,

    /// Stream every collection with its system events (keys without the
    /// collection prefix, a `collection` field in JSON lines)
    #[arg(long)]
    pub(crate) collections: bool,

    /// Stream only this collection: SCOPE.COLLECTION, a name in the
    /// _default scope, or a hex id like 0x8 (repeat for more; implies
    /// --collections)
    #[arg(
        long = "collection",
        value_name = "COLLECTION",
        conflicts_with = "scope"
    )]
    pub(crate) collection: Vec<String>,

    /// Stream only the collections of this scope: a name or a hex id
    /// (implies --collections)
    #[arg(long, value_name = "SCOPE")]
    pub(crate) scope: Option<String>,
}

impl TailArgs {
    /// Whether the connection asks for collections.
    pub(crate) fn wants_collections(&self) -> bool {
        self.collections || !self.collection.is_empty() || self.scope.is_some()
    }
}

/// `dcp admin`.
#[derive(Debug, Args)]
#[command(after_help = "\
Works against `dcp serve` (a Couchbase server answers UnknownCommand).

Examples:
  dcp admin failover 5 --lose-last 3
  dcp admin stall dcp-tail:4242:1a2b3c4d   # the DCP name `dcp tail` prints
  dcp admin set-vbucket-state 7 replica

Against `dcp serve --nodes N` (any node's address will do):
  dcp admin rebalance                      # even out the active vbuckets
  dcp admin rebalance --move 3:2 --move 4:0
  dcp admin failover --node 1 --lose-last 2
  dcp admin add-node                       # then: dcp admin rebalance
  dcp admin remove-node 2
  dcp admin map")]
pub(crate) struct AdminArgs {
    /// Address of the `dcp serve` server
    #[arg(long, short, value_name = "ADDR", default_value = "127.0.0.1:11210")]
    pub(crate) address: String,

    /// Admin user name
    #[arg(
        long,
        short,
        value_name = "NAME",
        env = "DCP_USER",
        default_value = "Administrator",
        hide_env_values = true
    )]
    pub(crate) user: String,

    /// Password
    #[arg(
        long,
        short,
        value_name = "PASSWORD",
        env = "DCP_PASSWORD",
        default_value = "password",
        hide_env_values = true
    )]
    pub(crate) password: String,

    #[command(subcommand)]
    pub(crate) action: AdminAction,
}

/// A vbucket state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum State {
    /// Serves reads, writes and streams
    Active,
    /// Receives replication
    Replica,
    /// Moving in during a rebalance
    Pending,
    /// Out of service
    Dead,
}

/// What `dcp admin` does.
#[derive(Debug, Subcommand)]
pub(crate) enum AdminAction {
    /// Fail a vbucket over: new history branch, connections streaming it
    /// dropped (consumers behind it must roll back); with --node, crash a
    /// node of a cluster: its replicas take over
    Failover {
        /// The vbucket
        #[arg(required_unless_present = "node", conflicts_with = "node")]
        vbucket: Option<u16>,
        /// Crash this node of a `dcp serve --nodes N` cluster instead
        #[arg(long, value_name = "NODE")]
        node: Option<usize>,
        /// Seqnos lost in the failover (not yet replicated)
        #[arg(long, value_name = "N", default_value_t = 0)]
        lose_last: u64,
    },
    /// Cluster: move active vbuckets (none given: even them out over the
    /// nodes)
    Rebalance {
        /// Move vbucket VB to node NODE
        #[arg(long = "move", value_name = "VB:NODE", value_parser = parse_move)]
        moves: Vec<(u16, usize)>,
    },
    /// Cluster: start a node on the next port (then rebalance onto it)
    AddNode,
    /// Cluster: rebalance a node out and remove it
    RemoveNode {
        /// The node
        node: usize,
    },
    /// Cluster: the config revision and each node's active vbuckets
    Map,
    /// Purge a vbucket's tombstones up to a seqno
    Purge {
        /// The vbucket
        vbucket: u16,
        /// Purge tombstones up to this seqno
        #[arg(long, value_name = "SEQNO")]
        up_to: u64,
    },
    /// Change a vbucket's state (its streams end with StateChanged)
    SetVbucketState {
        /// The vbucket
        vbucket: u16,
        /// The new state
        #[arg(value_enum)]
        state: State,
    },
    /// Stall a DCP connection's stream messages (noops still flow)
    Stall {
        /// DCP connection name
        name: String,
        /// Resume instead
        #[arg(long)]
        off: bool,
    },
    /// Freeze a DCP connection: nothing at all is sent, as from a hung node
    Freeze {
        /// DCP connection name
        name: String,
        /// Thaw instead
        #[arg(long)]
        off: bool,
    },
    /// Drop DCP connections as a network failure would
    DropConnections {
        /// DCP connection names
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Run the expiry pager: documents whose TTL passed expire now
    ExpireDue,
    /// Keep prepares of durable writes pending (until commit-pending or
    /// abort-pending), or commit them at once again with --off
    HoldSyncWrites {
        /// Commit at once again
        #[arg(long)]
        off: bool,
    },
    /// Commit pending prepares: of one key, of one vbucket, or all
    CommitPending {
        /// Only this key
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Only this vbucket
        #[arg(long, value_name = "VB")]
        vbucket: Option<u16>,
    },
    /// Abort pending prepares (as a durability timeout does): of one key,
    /// of one vbucket, or all
    AbortPending {
        /// Only this key
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// Only this vbucket
        #[arg(long, value_name = "VB")]
        vbucket: Option<u16>,
    },
    /// Create a scope
    CreateScope {
        /// The scope name
        scope: String,
    },
    /// Drop a scope and its collections
    DropScope {
        /// The scope name
        scope: String,
    },
    /// Create a collection, named SCOPE.COLLECTION (or COLLECTION in
    /// the _default scope)
    CreateCollection {
        /// SCOPE.COLLECTION
        collection: String,
        /// Max TTL of its documents in seconds
        #[arg(long, value_name = "SECONDS")]
        max_ttl: Option<u32>,
    },
    /// Drop a collection (SCOPE.COLLECTION): its documents go
    DropCollection {
        /// SCOPE.COLLECTION
        collection: String,
    },
    /// Flush a collection (SCOPE.COLLECTION): its documents go, it stays
    FlushCollection {
        /// SCOPE.COLLECTION
        collection: String,
    },
    /// Change a collection's settings (SCOPE.COLLECTION): its max TTL
    /// (capping the expiry of documents written from then on) or whether
    /// it keeps history; what is not given stays as it is
    ModifyCollection {
        /// SCOPE.COLLECTION
        collection: String,
        /// New max TTL in seconds (0: its documents never expire)
        #[arg(long, value_name = "SECONDS", conflicts_with = "no_max_ttl")]
        max_ttl: Option<u32>,
        /// Remove the max TTL
        #[arg(long)]
        no_max_ttl: bool,
        /// Whether the collection keeps history
        #[arg(long, value_name = "BOOL")]
        history: Option<bool>,
    },
    /// Print the collections manifest (JSON)
    Manifest,
}

/// Splits `scope.collection` (a bare name is in `_default`).
pub(crate) fn split_collection_path(path: &str) -> (String, String) {
    match path.split_once('.') {
        Some((scope, collection)) => (scope.to_owned(), collection.to_owned()),
        None => ("_default".to_owned(), path.to_owned()),
    }
}

fn parse_move(s: &str) -> Result<(u16, usize), String> {
    s.split_once(':')
        .and_then(|(vb, node)| Some((vb.parse().ok()?, node.parse().ok()?)))
        .ok_or_else(|| format!("expected VB:NODE, got {s:?}"))
}

fn parse_user(s: &str) -> Result<(String, String), String> {
    match s.split_once(':') {
        Some((name, password)) if !name.is_empty() => Ok((name.to_owned(), password.to_owned())),
        _ => Err(format!("expected NAME:PASSWORD, got {s:?}")),
    }
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let number = s.strip_suffix("/s").unwrap_or(s);
    match number.trim().parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate >= 0.0 => Ok(rate),
        _ => Err(format!("expected a rate like 500/s, got {s:?}")),
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a fraction between 0 and 1, got {s:?}")),
    }
}

fn parse_size_range(s: &str) -> Result<(usize, usize), String> {
    let bad = || format!("expected MIN-MAX in bytes, e.g. 64-512, got {s:?}");
    let (min, max) = match s.split_once('-') {
        Some((a, b)) => (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        ),
        None => {
            let n = s.trim().parse().map_err(|_| bad())?;
            (n, n)
        }
    };
    if min > max || max > 20 * 1024 * 1024 {
        return Err(bad());
    }
    Ok((min, max))
}

/// Parses a vbucket selection: `all`, `N`, `A-B`, or a comma list of those.
/// `all` is `0..count`.
pub(crate) fn parse_vbuckets(spec: &str, count: u16) -> Result<Vec<u16>, String> {
    let bad = |part: &str| {
        format!("invalid vbucket selection {part:?}: use \"all\", \"0-1023\" or \"0,5,9-12\"")
    };
    if spec.trim() == "all" {
        return Ok((0..count).collect());
    }
    let mut out = std::collections::BTreeSet::new();
    for part in spec.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let a: u16 = a.parse().map_err(|_| bad(part))?;
        let b: u16 = b.parse().map_err(|_| bad(part))?;
        if a > b {
            return Err(bad(part));
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        return Err(bad(spec));
    }
    Ok(out.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vbucket_selections() {
        assert_eq!(parse_vbuckets("all", 4).unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(
            parse_vbuckets("0-2,7, 5", 1024).unwrap(),
            vec![0, 1, 2, 5, 7]
        );
        assert!(parse_vbuckets("3-1", 1024).is_err());
        assert!(parse_vbuckets("x", 1024).is_err());
    }

    #[test]
    fn parses_rates_sizes_and_users() {
        assert_eq!(parse_rate("500/s").unwrap(), 500.0);
        assert_eq!(parse_rate("2.5").unwrap(), 2.5);
        assert!(parse_rate("-1").is_err());
        assert_eq!(parse_size_range("64-512").unwrap(), (64, 512));
        assert_eq!(parse_size_range("100").unwrap(), (100, 100));
        assert!(parse_size_range("9-1").is_err());
        assert_eq!(
            parse_user("a:b:c").unwrap(),
            ("a".to_owned(), "b:c".to_owned())
        );
        assert!(parse_user(":x").is_err());
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
