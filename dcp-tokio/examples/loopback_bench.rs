//! Loopback streaming benchmark: our producer ([`Server`]) serves pre-written
//! items over one TCP connection on 127.0.0.1 to our consumer
//! ([`Connection`]), each on its own thread with its own single-threaded
//! runtime; then a raw TCP copy of the same number of bytes over loopback,
//! in the same run, as the baseline.
//!
//! ```text
//! cargo run --release -p dcp-tokio --example loopback_bench -- [--items 2000000] [--value-size 100] [--vbuckets 64]
//! ```
//!
//! CPU time per side is the thread's on-CPU time from
//! `/proc/thread-self/schedstat` (Linux; reported as n/a elsewhere).

use std::io::{Read, Write};
use std::net::{TcpListener as StdListener, TcpStream as StdStream};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use dcp_tokio::dcp_proto::auth::Credentials;
use dcp_tokio::dcp_proto::bucket::{BucketConfig, WriteOptions};
use dcp_tokio::dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
use dcp_tokio::dcp_proto::producer::{Node, NodeConfig};
use dcp_tokio::{Connection, Server};

struct Options {
    items: u64,
    value_size: usize,
    vbuckets: u16,
}

fn options() -> Options {
    let mut options = Options {
        items: 2_000_000,
        value_size: 100,
        vbuckets: 64,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<u64>().ok());
        match (args[i].as_str(), value) {
            ("--items", Some(v)) => options.items = v,
            ("--value-size", Some(v)) => options.value_size = v as usize,
            ("--vbuckets", Some(v)) => options.vbuckets = v.clamp(1, 1024) as u16,
            (other, _) => {
                eprintln!("unknown or incomplete argument {other:?}");
                eprintln!("usage: loopback_bench [--items N] [--value-size BYTES] [--vbuckets N]");
                std::process::exit(2);
            }
        }
        i += 2;
    }
    options
}

/// This thread's on-CPU time so far.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = stat.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}

fn cpu_since(start: Option<Duration>) -> Option<Duration> {
    Some(thread_cpu()?.saturating_sub(start?))
}

/// One side's figures.
struct Side {
    cpu: Option<Duration>,
}

struct Run {
    name: &'static str,
    items: Option<u64>,
    bytes: u64,
    elapsed: Duration,
    sender: Side,
    receiver: Side,
}

fn named<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .expect("a thread")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Pre-writes the items into a node's bucket.
fn build_node(options: &Options) -> (Node, Vec<u64>) {
    let bucket = BucketConfig::new("bench").with_vbuckets(options.vbuckets);
    let config = NodeConfig::new("bench")
        .with_bucket(bucket)
        .with_user("bench", "bench")
        .with_scram_iterations(16);
    let mut node = Node::new(config);
    let wall = node.wall_clock(tokio::time::Instant::now().into_std());
    let value = bytes::Bytes::from(vec![b'v'; options.value_size]);
    for i in 0..options.items {
        let key = format!("key-{i:012}");
        node.bucket_mut()
            .set(key.as_bytes(), value.clone(), WriteOptions::new(), wall)
            .expect("a write");
    }
    let highs = (0..options.vbuckets)
        .map(|vb| node.bucket().vbucket(vb).map_or(0, |v| v.high_seqno()))
        .collect();
    (node, highs)
}

fn dcp_run(options: &Options) -> Run {
    eprint!("writing {} items ... ", options.items);
    let started = Instant::now();
    let (node, highs) = build_node(options);
    eprintln!("{:.1} s", started.elapsed().as_secs_f64());

    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (handle_tx, handle_rx) = mpsc::channel();
    let server = named("producer", move || {
        runtime().block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let server = Server::from_node(listener, node).expect("server");
            handle_tx.send(server.handle()).expect("handle");
            let cpu = thread_cpu();
            server.run().await.expect("serve");
            cpu_since(cpu)
        })
    });
    let handle = handle_rx.recv().expect("server handle");

    let client = named("consumer", move || {
        runtime().block_on(async move {
            let cpu = thread_cpu();
            let started = Instant::now();
            let config = ConsumerConfig::new("bench:1", "bench")
                .with_credentials(Credentials::new("bench", "bench"))
                .with_auto_ack(true);
            let mut conn = Connection::connect(addr, config).await.expect("connect");
            let mut open = 0;
            for (vb, high) in highs.iter().enumerate() {
                if *high > 0 {
                    conn.open_stream(vb as u16, StreamStart::Beginning, Some(*high))
                        .expect("open");
                    open += 1;
                }
            }
            let mut items = 0u64;
            while open > 0 {
                match conn.next_event().await.expect("stream") {
                    Some(Event::Mutation(..)) => items += 1,
                    Some(Event::StreamEnded { .. }) => open -= 1,
                    Some(_) => {}
                    None => break,
                }
            }
            let elapsed = started.elapsed();
            (items, conn.stats().bytes_received, elapsed, cpu_since(cpu))
        })
    });
    let (items, bytes, elapsed, client_cpu) = client.join().expect("client thread");
    handle.shutdown();
    let server_cpu = server.join().expect("server thread");
    assert_eq!(items, options.items, "every item streamed");
    Run {
        name: "dcp producer -> consumer",
        items: Some(items),
        bytes,
        elapsed,
        sender: Side { cpu: server_cpu },
        receiver: Side { cpu: client_cpu },
    }
}

fn raw_tcp_run(bytes: u64) -> Run {
    const CHUNK: usize = 256 * 1024;
    let listener = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let reader = named("raw-reader", move || {
        let (mut socket, _) = listener.accept().expect("accept");
        let cpu = thread_cpu();
        let mut buf = vec![0u8; CHUNK];
        let mut left = bytes;
        while left > 0 {
            let n = socket.read(&mut buf).expect("read");
            assert!(n > 0, "early EOF");
            left = left.saturating_sub(n as u64);
        }
        cpu_since(cpu)
    });
    let cpu = thread_cpu();
    let started = Instant::now();
    let mut socket = StdStream::connect(addr).expect("connect");
    socket.set_nodelay(true).expect("nodelay");
    let buf = vec![b'x'; CHUNK];
    let mut left = bytes;
    while left > 0 {
        let n = (left as usize).min(CHUNK);
        socket.write_all(&buf[..n]).expect("write");
        left -= n as u64;
    }
    let sender_cpu = cpu_since(cpu);
    let receiver_cpu = reader.join().expect("reader");
    let elapsed = started.elapsed();
    Run {
        name: "raw TCP copy (same bytes)",
        items: None,
        bytes,
        elapsed,
        sender: Side { cpu: sender_cpu },
        receiver: Side { cpu: receiver_cpu },
    }
}

fn per_gb(cpu: Option<Duration>, bytes: u64) -> String {
    cpu.map_or_else(
        || "n/a".to_owned(),
        |cpu| format!("{:.2}", cpu.as_secs_f64() / (bytes as f64 / 1e9)),
    )
}

fn main() {
    let options = options();
    let dcp = dcp_run(&options);
    let raw = raw_tcp_run(dcp.bytes);
    println!(
        "\nloopback streaming: {} items, {}-byte values, {} vbuckets, one connection, {:.1} MB on the wire",
        dcp.items.unwrap_or(0),
        options.value_size,
        options.vbuckets,
        dcp.bytes as f64 / 1e6
    );
    println!(
        "{:<27} {:>12} {:>9} {:>9} {:>16} {:>18}",
        "", "items/s", "MB/s", "seconds", "sender CPU s/GB", "receiver CPU s/GB"
    );
    for run in [&dcp, &raw] {
        let secs = run.elapsed.as_secs_f64();
        let items = run
            .items
            .map_or_else(|| "-".to_owned(), |n| format!("{:.0}", n as f64 / secs));
        println!(
            "{:<27} {:>12} {:>9.1} {:>9.3} {:>16} {:>18}",
            run.name,
            items,
            run.bytes as f64 / secs / 1e6,
            secs,
            per_gb(run.sender.cpu, run.bytes),
            per_gb(run.receiver.cpu, run.bytes)
        );
    }
    println!(
        "dcp / raw TCP throughput: {:.2}",
        raw.elapsed.as_secs_f64() / dcp.elapsed.as_secs_f64()
    );
}
