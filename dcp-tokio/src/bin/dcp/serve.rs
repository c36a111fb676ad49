//! `dcp serve`, and the embedded server `dcp tail` starts without an
//! address.

use std::io::{self, Write};

use dcp_tokio::dcp_proto::bucket::SyncWriteMode;
use dcp_tokio::dcp_proto::producer::NodeConfig;
use dcp_tokio::{Server, ServerHandle};

use crate::Failure;
use crate::args::{LoadArgs, ServeArgs};
use crate::load;

fn node_config(bucket: &str, vbuckets: u16, users: &[(String, String)], seed: u64) -> NodeConfig {
    let mut config = NodeConfig::new(bucket)
        .with_vbuckets(vbuckets)
        .with_seed(seed);
    for (name, password) in users {
        config = config.with_user(name, password).with_admin(name);
    }
    config
}

async fn bind(listen: &str, config: NodeConfig) -> Result<Server, Failure> {
    Server::bind(listen, config).await.map_err(|err| {
        Failure(match err.kind() {
            io::ErrorKind::AddrInUse => format!(
                "cannot listen on {listen}: the address is in use (another server?); pick another with --listen, e.g. --listen 127.0.0.1:0"
            ),
            io::ErrorKind::PermissionDenied => {
                format!("cannot listen on {listen}: permission denied (ports below 1024 need privileges)")
            }
            _ => format!("cannot listen on {listen}: {err}"),
        })
    })
}

/// The `dcp tail` line that streams this server.
fn tail_line(addr: &str, bucket: &str, user: &(String, String), vbuckets: u16) -> String {
    let mut line = format!("dcp tail {addr}");
    if bucket != "default" {
        line.push_str(&format!(" --bucket {bucket}"));
    }
    if user.0 != "Administrator" || user.1 != "password" {
        line.push_str(&format!(" --user {} --password {}", user.0, user.1));
    }
    if vbuckets != 1024 {
        line.push_str(&format!(" --vbuckets 0-{}", vbuckets - 1));
    }
    line
}

/// Runs `dcp serve` until Ctrl-C.
pub(crate) async fn run(args: ServeArgs) -> Result<(), Failure> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(
            dcp_tokio::tls::server_config_from_pem_files(cert, key)
                .map_err(|err| Failure(err.to_string()))?,
        ),
        _ => None,
    };
    if args.nodes > 1 {
        return crate::serve_cluster::run(args, node_config, tls).await;
    }
    let config = node_config(&args.bucket, args.vbuckets, &args.users, args.load.seed);
    let mut server = bind(&args.listen, config).await?;
    let tls_on = tls.is_some();
    if let Some(tls) = tls {
        server = server.with_tls(tls);
    }
    let handle = server.handle();
    let addr = handle.local_addr().to_string();
    if args.load.hold_sync_writes {
        handle.with_bucket(|bucket, _| bucket.set_sync_write_mode(SyncWriteMode::Hold));
    }
    if args.preload > 0 {
        load::preload(&handle, args.preload, &args.load);
    }
    for path in &args.collections {
        crate::collections::create_sample(&handle, path)?;
    }
    let default_user = ("Administrator".to_owned(), "password".to_owned());
    let first = args.users.first().unwrap_or(&default_user);
    let mut banner = format!(
        "dcp serve: listening on {addr}{} (bucket {:?}, {} vbuckets, {} documents)\n",
        if tls_on { " with TLS only" } else { "" },
        args.bucket,
        args.vbuckets,
        args.preload
    );
    let names: Vec<&str> = args.users.iter().map(|(n, _)| n.as_str()).collect();
    banner += &format!("  users (all may run `dcp admin`): {}\n", names.join(", "));
    if args.load_rate > 0.0 {
        let l = &args.load;
        banner += &format!(
            "  load: {} writes/s over {} keys, values {}-{} bytes, {}% deletes, {}% with a TTL\n",
            args.load_rate,
            l.keys,
            l.value_size.0,
            l.value_size.1,
            l.delete_ratio * 100.0,
            l.expiry_ratio * 100.0
        );
    }
    banner += "stream it from another shell:\n";
    banner += &format!(
        "  {}\n",
        tail_line(&addr, &args.bucket, first, args.vbuckets)
            + if tls_on { " --ca CA_FILE" } else { "" }
    );
    if !tls_on {
        banner += "inject a fault:\n";
        let mut admin = format!("dcp admin --address {addr}");
        if first.0 != "Administrator" || first.1 != "password" {
            admin.push_str(&format!(" --user {} --password {}", first.0, first.1));
        }
        banner += &format!("  {admin} failover 0 --lose-last 1\n");
    }
    if !args.collections.is_empty() {
        banner += &format!(
            "  collections: {} (stream one with dcp tail ... --collection {})\n",
            args.collections.join(", "),
            args.collections.first().map_or("", String::as_str)
        );
    }
    banner += "Ctrl-C stops the server.\n";
    // The server keeps running if nobody reads its output.
    let mut stdout = std::io::stdout();
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());

    let writer = tokio::spawn(load::run(handle.clone(), args.load_rate, args.load.clone()));
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
    let _ = writeln!(std::io::stderr(), "dcp serve: stopped");
    Ok(())
}

/// Documents of the embedded demo server.
pub(crate) const DEMO_DOCUMENTS: u64 = 5000;
/// The sample collection of the embedded demo server (with
/// [`SAMPLE_DOCUMENTS`](crate::collections::SAMPLE_DOCUMENTS) documents).
pub(crate) const DEMO_COLLECTION: &str = "inventory.hotels";

/// Writes per second of its live writer.
pub(crate) const DEMO_RATE: f64 = 20.0;

/// Starts the embedded demo server on an ephemeral loopback port: sample
/// documents and a live writer.
pub(crate) async fn embedded(
    bucket: &str,
    user: &str,
    password: &str,
) -> Result<ServerHandle, Failure> {
    let users = [(user.to_owned(), password.to_owned())];
    let config = node_config(bucket, 1024, &users, 0);
    let server = bind("127.0.0.1:0", config).await?;
    let handle = server.handle();
    let load = LoadArgs {
        value_size: (80, 400),
        delete_ratio: 0.05,
        expiry_ratio: 0.02,
        keys: DEMO_DOCUMENTS,
        seed: 0,
        // A few durable writes: `dcp tail --sync-writes` shows their
        // prepares and commits.
        durable_ratio: 0.05,
        hold_sync_writes: false,
    };
    load::preload(&handle, DEMO_DOCUMENTS, &load);
    crate::collections::create_sample(&handle, DEMO_COLLECTION)?;
    tokio::spawn(server.run());
    tokio::spawn(load::run(handle.clone(), DEMO_RATE, load));
    Ok(handle)
}
