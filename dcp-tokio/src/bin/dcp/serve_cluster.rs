//! `dcp serve --nodes N`: a local cluster on consecutive ports.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use dcp_tokio::dcp_proto::producer::NodeConfig;
use dcp_tokio::{ClusterServer, ClusterServerHandle};

use crate::Failure;
use crate::args::{LoadArgs, ServeArgs};
use crate::load::{Rng, document, key};

/// Builds a node config from the bucket, vbuckets, users and seed.
type MakeConfig = fn(&str, u16, &[(String, String)], u64) -> NodeConfig;

/// Runs `dcp serve --nodes N` until Ctrl-C, TLS only with `tls` if given
/// (the config then lists every node's port as `kvSSL`).
pub(crate) async fn run(
    args: ServeArgs,
    make_config: MakeConfig,
    tls: Option<std::sync::Arc<dcp_tokio::rustls::ServerConfig>>,
) -> Result<(), Failure> {
    let config = make_config(&args.bucket, args.vbuckets, &args.users, args.load.seed);
    let listen: SocketAddr = tokio::net::lookup_host(&args.listen)
        .await
        .ok()
        .and_then(|mut addrs| addrs.next())
        .ok_or_else(|| Failure(format!("cannot resolve --listen {}", args.listen)))?;
    let nodes = usize::from(args.nodes);
    let mut server = ClusterServer::bind(listen, nodes, args.replicas, config)
        .await
        .map_err(|err| {
            Failure(format!(
                "cannot listen on {nodes} consecutive ports from {listen}: {err}; pick another with --listen, e.g. --listen 127.0.0.1:0"
            ))
        })?;
    let tls_on = tls.is_some();
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    let handle = server.handle();
    preload(&handle, args.preload, &args.load);
    let mut banner = format!(
        "dcp serve: a local cluster of {nodes} nodes (bucket {:?}, {} vbuckets, {} replica(s), {} documents){}\n",
        args.bucket,
        args.vbuckets,
        args.replicas,
        args.preload,
        if tls_on { ", TLS only" } else { "" }
    );
    for (i, addr) in handle.node_addrs().iter().enumerate() {
        banner += &format!("  node {i}: {addr}\n");
    }
    let connection_string = handle.connection_string();
    let default_user = ("Administrator".to_owned(), "password".to_owned());
    let user = args.users.first().unwrap_or(&default_user);
    banner += &format!("  {connection_string}\n");
    banner += "stream it from another shell:\n";
    banner += &format!(
        "  dcp tail {connection_string} --user {} --password {}{}\n",
        user.0,
        user.1,
        if tls_on { " --ca CA_FILE" } else { "" }
    );
    banner += "change the topology by typing here:\n";
    banner += crate::cluster_console::HELP;
    if let Some(first) = handle.node_addrs().first() {
        banner += &format!(
            "or from another shell: dcp admin -a {first} -u {} -p {} rebalance | failover --node N | add-node | remove-node N | map\n",
            user.0, user.1
        );
    }
    banner += "Ctrl-C stops the cluster.\n";
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());

    let writer = tokio::spawn(write_load(
        handle.clone(),
        args.load_rate,
        args.load.clone(),
    ));
    let console = tokio::spawn(crate::cluster_console::run(handle.clone()));
    let mut task = tokio::spawn(server.run());
    tokio::select! {
        signal = tokio::signal::ctrl_c() => {
            signal.map_err(|e| Failure(format!("cannot wait for Ctrl-C: {e}")))?;
            handle.shutdown();
            task.await
                .map_err(|e| Failure(e.to_string()))?
                .map_err(|e| Failure(e.to_string()))?;
        }
        ended = &mut task => {
            ended.map_err(|e| Failure(e.to_string()))?.map_err(|e| Failure(e.to_string()))?;
        }
    }
    writer.abort();
    console.abort();
    let _ = writeln!(std::io::stderr(), "dcp serve: stopped");
    Ok(())
}

/// A value size in the configured range.
fn size(load: &LoadArgs, rng: &mut Rng) -> usize {
    let (min, max) = load.value_size;
    min + usize::try_from(rng.below(u64::try_from(max - min + 1).unwrap_or(1))).unwrap_or(0)
}

/// Writes `count` sample documents (keys 0..count) through the cluster.
fn preload(handle: &ClusterServerHandle, count: u64, load: &LoadArgs) {
    let mut rng = Rng::new(load.seed);
    for i in 0..count {
        let doc = document(i, 1, size(load, &mut rng), &mut rng);
        let _ = handle.set(key(i).as_bytes(), doc);
    }
}

/// Writes about `rate` changes per second (updates and deletes).
async fn write_load(handle: ClusterServerHandle, rate: f64, load: LoadArgs) {
    if rate <= 0.0 {
        return;
    }
    const TICK: Duration = Duration::from_millis(50);
    let mut rng = Rng::new(load.seed.wrapping_add(1));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut owed = 0.0;
    let mut version = 1;
    loop {
        ticker.tick().await;
        owed += rate * TICK.as_secs_f64();
        let n = owed.floor();
        owed -= n;
        version += 1;
        for _ in 0..(n as u64) {
            let i = rng.below(load.keys.max(1));
            if rng.unit() < load.delete_ratio {
                let _ = handle.delete(key(i).as_bytes());
            } else {
                let doc = document(i, version, size(&load, &mut rng), &mut rng);
                let _ = handle.set(key(i).as_bytes(), doc);
            }
        }
    }
}
