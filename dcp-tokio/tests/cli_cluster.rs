//! `dcp serve --nodes 3` in one process, `dcp tail couchbase://... --json`
//! in another, `dcp admin` changing the topology from a third (rebalance,
//! a node failover losing the replicas' tail, add-node, remove-node) while
//! this test writes documents through the memcached protocol; the tail's
//! view (rollbacks applied) ends equal to what the cluster holds.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use dcp_tokio::dcp_proto::cluster::ClusterConfig;
use dcp_tokio::dcp_proto::codec::{Datatype, Frame, FrameDecoder, Opcode, Status};
use dcp_tokio::dcp_proto::msg::client::{
    Delete, Get, GetClusterConfig, GetClusterConfigResponse, GetResponse, Hello, HelloFeature,
    SaslAuth, SelectBucket, Store,
};
use serde_json::Value;

const DCP: &str = env!("CARGO_BIN_EXE_dcp");
const VBUCKETS: u16 = 16;
const KEYS: usize = 40;
/// A liveness bound (nothing waits for it to pass).
const LIMIT: Duration = Duration::from_secs(90);

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `dcp admin -a ADDR ARGS`; returns its JSON answer.
fn admin(addr: &str, args: &[&str]) -> Value {
    let out = Command::new(DCP)
        .args(["admin", "-a", addr, "-u", "app", "-p", "secret"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run dcp admin");
    assert!(
        out.status.success(),
        "dcp admin {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON answer")
}

/// A memcached-protocol client writing through the cluster: routes each
/// key to its vbucket's owner, and on NOT_MY_VBUCKET (or a lost node)
/// takes the config from the refusal's body or fetches one.
struct Writer {
    host: String,
    ports: Vec<u16>,
    config: ClusterConfig,
    conns: BTreeMap<u16, (TcpStream, FrameDecoder, BytesMut)>,
}

impl Writer {
    fn new(host: &str, ports: Vec<u16>) -> Writer {
        let mut writer = Writer {
            host: host.to_owned(),
            ports,
            config: ClusterConfig::parse(
                b"{\"rev\":0,\"vBucketServerMap\":{\"serverList\":[],\"vBucketMap\":[[-1]]}}",
                host,
            )
            .unwrap(),
            conns: BTreeMap::new(),
        };
        writer.refresh();
        writer
    }

    fn connect(&mut self, port: u16) -> Option<()> {
        if self.conns.contains_key(&port) {
            return Some(());
        }
        let socket = TcpStream::connect((self.host.as_str(), port)).ok()?;
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .ok()?;
        self.conns
            .insert(port, (socket, FrameDecoder::new(), BytesMut::new()));
        let hello = Hello {
            opaque: 0,
            agent: Bytes::from_static(b"cli-cluster-test"),
            features: vec![HelloFeature::Xerror, HelloFeature::SelectBucket],
        };
        let mut buf = BytesMut::new();
        hello.encode(&mut buf).ok()?;
        SaslAuth::plain(0, b"app", b"secret")
            .encode(&mut buf)
            .ok()?;
        SelectBucket::new(0, "default").encode(&mut buf).ok()?;
        for status in self.exchange(port, &buf, 3)? {
            if status.status() != Status::Success {
                self.conns.remove(&port);
                return None;
            }
        }
        Some(())
    }

    /// Sends `buf` on `port`; returns the next `n` frames (None: the
    /// connection is gone).
    fn exchange(&mut self, port: u16, buf: &[u8], n: usize) -> Option<Vec<Frame>> {
        let result = (|| {
            let (socket, decoder, rx) = self.conns.get_mut(&port)?;
            socket.write_all(buf).ok()?;
            let mut frames = Vec::new();
            while frames.len() < n {
                match decoder.decode(rx).ok()? {
                    // Server requests (pushes) are not ours to answer.
                    Some(frame) if frame.is_response() => frames.push(frame),
                    Some(_) => {}
                    None => {
                        let mut chunk = [0u8; 64 * 1024];
                        let read = socket.read(&mut chunk).ok()?;
                        if read == 0 {
                            return None;
                        }
                        rx.extend_from_slice(&chunk[..read]);
                    }
                }
            }
            Some(frames)
        })();
        if result.is_none() {
            self.conns.remove(&port);
        }
        result
    }

    /// Takes a config if it is newer than the one held.
    fn adopt(&mut self, json: &[u8]) {
        if let Ok(config) = ClusterConfig::parse(json, &self.host)
            && config.version() > self.config.version()
        {
            self.config = config;
        }
    }

    /// Fetches the config from the first node that answers.
    fn refresh(&mut self) {
        for port in self.ports.clone() {
            if self.connect(port).is_none() {
                continue;
            }
            let mut buf = BytesMut::new();
            GetClusterConfig {
                opaque: 0,
                known: None,
            }
            .encode(&mut buf)
            .unwrap();
            if let Some(frames) = self.exchange(port, &buf, 1)
                && let Ok(response) = GetClusterConfigResponse::decode(&frames[0])
            {
                self.adopt(&response.config);
                return;
            }
        }
    }

    /// Sends one keyed request built by `encode` for `key`'s vbucket to
    /// its owner until it is not refused; returns the response.
    fn keyed(&mut self, key: &str, encode: impl Fn(u16, &mut BytesMut)) -> Frame {
        let started = Instant::now();
        loop {
            assert!(started.elapsed() < LIMIT, "no owner took {key:?}");
            let vb = self.config.vbucket_for_key(key.as_bytes());
            let Some(port) = self.config.active_node(vb).map(|n| n.address.port()) else {
                self.refresh();
                continue;
            };
            if self.connect(port).is_none() {
                self.refresh();
                continue;
            }
            let mut buf = BytesMut::new();
            encode(vb, &mut buf);
            match self.exchange(port, &buf, 1) {
                Some(frames) if frames[0].status() == Status::NotMyVbucket => {
                    let body = frames[0].value();
                    self.adopt(&body);
                    self.refresh();
                }
                Some(mut frames) => return frames.remove(0),
                None => self.refresh(),
            }
        }
    }

    fn set(&mut self, key: &str, value: &str) {
        let response = self.keyed(key, |vbucket, buf| {
            Store {
                opcode: Opcode::Set,
                vbucket,
                opaque: 0,
                cas: 0,
                datatype: Datatype::JSON,
                flags: 0,
                expiry: 0,
                key: Bytes::copy_from_slice(key.as_bytes()),
                value: Bytes::copy_from_slice(value.as_bytes()),
            }
            .encode(buf)
            .unwrap();
        });
        assert_eq!(response.status(), Status::Success, "SET {key}");
    }

    fn delete(&mut self, key: &str) {
        let response = self.keyed(key, |vbucket, buf| {
            Delete {
                vbucket,
                opaque: 0,
                cas: 0,
                key: Bytes::copy_from_slice(key.as_bytes()),
            }
            .encode(buf)
            .unwrap();
        });
        assert!(
            matches!(response.status(), Status::Success | Status::KeyEnoent),
            "DELETE {key}: {}",
            response.status()
        );
    }

    /// What the cluster holds for `key`.
    fn get(&mut self, key: &str) -> Option<String> {
        let frame = self.keyed(key, |vbucket, buf| {
            Get {
                vbucket,
                opaque: 0,
                key: Bytes::copy_from_slice(key.as_bytes()),
            }
            .encode(buf)
            .unwrap();
        });
        let response = GetResponse::decode(&frame).expect("a GET response");
        match response.status {
            Status::Success => Some(String::from_utf8_lossy(&response.value).into_owned()),
            Status::KeyEnoent => None,
            other => panic!("GET {key}: {other}"),
        }
    }

    fn writes(&mut self, round: usize) {
        for i in 0..KEYS {
            let key = format!("key-{i}");
            if (i + round).is_multiple_of(7) {
                self.delete(&key);
            } else {
                self.set(&key, &format!("{{\"round\":{round},\"i\":{i}}}"));
            }
        }
    }
}

/// The tail's view: per vbucket, every change in order (truncated by
/// rollbacks); the latest per key is the view.
#[derive(Default)]
struct View {
    changes: BTreeMap<u64, Vec<(u64, String, Option<String>)>>,
    rollbacks: usize,
}

impl View {
    fn apply(&mut self, line: &Value) {
        let vb = line["vbucket"].as_u64().expect("vbucket");
        let seqno = line["seqno"].as_u64().expect("seqno");
        let changes = self.changes.entry(vb).or_default();
        match line["type"].as_str() {
            Some("rollback") => {
                self.rollbacks += 1;
                changes.retain(|(s, _, _)| *s <= seqno);
            }
            Some(kind) => {
                let key = line["key"].as_str().expect("key").to_owned();
                let value =
                    (kind == "mutation").then(|| line["value"].as_str().expect("value").to_owned());
                changes.push((seqno, key, value));
            }
            None => panic!("no type in {line}"),
        }
    }

    fn live(&self) -> BTreeMap<String, String> {
        let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
        for changes in self.changes.values() {
            for (_, key, value) in changes {
                latest.insert(key.clone(), value.clone());
            }
        }
        latest
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }
}

/// What the cluster holds for every key written.
fn held(writer: &mut Writer) -> BTreeMap<String, String> {
    (0..KEYS)
        .filter_map(|i| {
            let key = format!("key-{i}");
            writer.get(&key).map(|v| (key, v))
        })
        .collect()
}

/// Waits until the tail's view equals `expected` (the tail flushes its
/// output every second); returns the rollbacks it saw.
fn caught_up(
    view: &Mutex<View>,
    expected: &BTreeMap<String, String>,
    reader: &thread::JoinHandle<()>,
) -> usize {
    let started = Instant::now();
    loop {
        let (live, rollbacks) = {
            let view = view.lock().unwrap();
            (view.live(), view.rollbacks)
        };
        if &live == expected {
            return rollbacks;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the tail's view never matched: {} keys viewed, {} held, {rollbacks} rollbacks",
            live.len(),
            expected.len()
        );
        assert!(!reader.is_finished(), "dcp tail stopped");
        thread::sleep(Duration::from_millis(100));
    }
}

/// Starts `dcp serve --nodes N` with `extra` arguments; returns it with
/// its nodes' addresses and the connection string it printed.
fn serve_cluster(nodes: usize, extra: &[&str]) -> (Proc, Vec<String>, String) {
    let mut serve = Command::new(DCP)
        .args(["serve", "--listen", "127.0.0.1:0", "--user", "app:secret"])
        .args([
            "--nodes",
            &nodes.to_string(),
            "--vbuckets",
            &VBUCKETS.to_string(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dcp serve --nodes");
    let mut stdout = BufReader::new(serve.stdout.take().expect("stdout"));
    let mut addrs = Vec::new();
    let connection_string = loop {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).expect("banner") > 0,
            "no connection string"
        );
        if let Some(addr) = line.trim().strip_prefix("node ")
            && let Some((_, addr)) = addr.split_once(": ")
        {
            addrs.push(addr.to_owned());
        }
        if let Some(cs) = line
            .split_whitespace()
            .find(|w| w.starts_with("couchbase://"))
        {
            break cs.to_owned();
        }
    };
    thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    (Proc(serve), addrs, connection_string)
}

#[test]
fn admin_topology_changes_while_tailing_and_writing_lose_nothing() {
    let (serve, addrs, connection_string) = serve_cluster(3, &["--preload", "0"]);
    let mut ports: Vec<u16> = addrs
        .iter()
        .map(|a| a.rsplit_once(':').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 3);
    let node0 = format!("127.0.0.1:{}", ports[0]);
    // Nodes added later take the next ports.
    ports.extend([ports[2] + 1, ports[2] + 2]);

    let mut writer = Writer::new("127.0.0.1", ports);
    writer.writes(0);

    let mut tail = Command::new(DCP)
        .args([
            "tail",
            &connection_string,
            "-u",
            "app",
            "-p",
            "secret",
            "--json",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dcp tail");
    let tail_out = BufReader::new(tail.stdout.take().expect("stdout"));
    let _tail = Proc(tail);
    let view = Arc::new(Mutex::new(View::default()));
    let reader = {
        let view = Arc::clone(&view);
        thread::spawn(move || {
            for line in tail_out.lines() {
                let Ok(line) = line else { break };
                let line: Value = serde_json::from_str(&line).expect("a JSON line");
                view.lock().unwrap().apply(&line);
            }
        })
    };

    // Topology changes from another "shell", with writes in between.
    let map = admin(&node0, &["rebalance", "--move", "0:2", "--move", "1:2"]);
    assert_eq!(map["nodes"][2]["active"], 7, "{map}");
    writer.writes(1);
    // The tail has everything before the failover, so the lost tail is
    // one it saw: it must roll back.
    let before = held(&mut writer);
    assert_eq!(caught_up(&view, &before, &reader), 0);
    let map = admin(&node0, &["failover", "--node", "1", "--lose-last", "1"]);
    assert_eq!(map["nodes"][1]["state"], "down", "{map}");
    assert!(map["promoted"].as_u64().unwrap() > 0, "{map}");
    writer.writes(2);
    let map = admin(&node0, &["add-node"]);
    assert_eq!(map["node"], 3, "{map}");
    let map = admin(&node0, &["rebalance"]);
    assert!(map["nodes"][3]["active"].as_u64().unwrap() > 0, "{map}");
    writer.writes(3);
    let map = admin(&node0, &["remove-node", "2"]);
    assert_eq!(map["nodes"][2]["state"], "removed", "{map}");
    writer.writes(4);
    let map = admin(&node0, &["map"]);
    let active: u64 = map["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["active"].as_u64().unwrap())
        .sum();
    assert_eq!(active, u64::from(VBUCKETS));

    // The tail ends with what the cluster holds.
    let expected = held(&mut writer);
    assert!(!expected.is_empty());
    assert!(
        caught_up(&view, &expected, &reader) > 0,
        "the failover lost the replicas' tail: a rollback"
    );
    drop(serve);
}

/// `dcp admin create-collection` sent to one node of `dcp serve --nodes`
/// changes every node's manifest, and `dcp tail couchbase://...
/// --collection` streams that collection alone from every node (names
/// resolved with the first seed's manifest).
#[test]
fn collections_on_a_cluster_change_every_node_and_filter_the_tail() {
    let (_serve, nodes, connection_string) = serve_cluster(2, &["--preload", "30"]);

    admin(&nodes[1], &["create-scope", "inventory"]);
    let created = admin(&nodes[1], &["create-collection", "inventory.hotels"]);
    // Every node took the change: the other node's manifest lists it.
    let manifest = admin(&nodes[0], &["manifest"]);
    assert_eq!(manifest["uid"], created["uid"], "{manifest}");
    assert!(manifest.to_string().contains("\"hotels\""), "{manifest}");

    let tail = |collection: &str| -> Vec<Value> {
        let out = Command::new(DCP)
            .args(["tail", &connection_string, "-u", "app", "-p", "secret"])
            .args(["--collection", collection, "--json", "--limit", "30"])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .expect("run dcp tail");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| serde_json::from_str(line).expect("a JSON line"))
            .collect()
    };
    // The default collection: the 30 preloaded documents, nothing of
    // hotels (not even its creation).
    let lines = tail("_default._default");
    let changes: Vec<&Value> = lines.iter().filter(|l| l["type"] == "mutation").collect();
    assert_eq!(changes.len(), 30, "{lines:?}");
    assert!(lines.iter().all(|l| l["collection"] == 0), "{lines:?}");
}
