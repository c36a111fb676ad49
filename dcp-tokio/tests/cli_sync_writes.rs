//! `dcp tail --sync-writes --json` against `dcp serve` generating durable
//! writes: prepares and their commits as JSON lines; with
//! `--hold-sync-writes` the prepares stay pending until `dcp admin
//! commit-pending`.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

const DCP: &str = env!("CARGO_BIN_EXE_dcp");

/// A liveness bound for one command (nothing waits for it to pass).
const LIMIT: Duration = Duration::from_secs(60);

/// A `dcp serve` process, killed when dropped.
struct Serve {
    child: Child,
    addr: String,
}

impl Serve {
    fn start(args: &[&str]) -> Serve {
        let mut child = Command::new(DCP)
            .args(["serve", "--listen", "127.0.0.1:0", "--user", "app:secret"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn dcp serve");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read the banner");
        thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned();
        Serve { child, addr }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Output {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Output {
    fn json_lines(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect()
    }
}

/// Runs `dcp ARGS` to completion (killed after [`LIMIT`]).
fn dcp(args: &[&str]) -> Output {
    let mut child = Command::new(DCP)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dcp");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("dcp {args:?} did not finish within {LIMIT:?}");
        }
        thread::sleep(Duration::from_millis(10));
    };
    Output {
        code: status.code(),
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
    }
}

/// A checkpoint path in a fresh directory, removed when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn temp_file(name: &str) -> TempFile {
    let dir = std::env::temp_dir().join(format!("dcp-cli-sync-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempFile(dir.join(name))
}

fn tail(addr: &str, limit: &str, checkpoint: Option<&str>, extra: &[&str]) -> Output {
    let mut args = vec![
        "tail",
        addr,
        "-u",
        "app",
        "-p",
        "secret",
        "--vbuckets",
        "0",
        "--json",
        "--sync-writes",
        "--limit",
        limit,
    ];
    if let Some(cp) = checkpoint {
        args.extend(["--checkpoint", cp]);
    }
    args.extend(extra);
    dcp(&args)
}

#[test]
fn tail_shows_prepares_and_their_commits() {
    let serve = Serve::start(&[
        "--vbuckets",
        "1",
        "--load-rate",
        "400/s",
        "--durable-ratio",
        "1",
        "--delete-ratio",
        "0",
        "--keys",
        "50",
    ]);
    // From now: memory snapshots, where sync writes keep their shape (a
    // backfill from disk would send the commits as mutations).
    let out = tail(&serve.addr, "40", None, &["--from", "now"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = out.json_lines();
    assert_eq!(lines.len(), 40);
    // Committed at once: each prepare is followed by its commit.
    let mut pending: Option<(u64, String)> = None;
    for line in &lines {
        let seqno = line["seqno"].as_u64().expect("seqno");
        let key = line["key"].as_str().expect("key").to_owned();
        match line["type"].as_str() {
            Some("prepare") => {
                assert!(pending.is_none(), "{line}");
                assert_eq!(line["durability"], 1, "{line}");
                assert_eq!(line["deleted"], false, "{line}");
                assert!(line["value"].is_string(), "{line}");
                pending = Some((seqno, key));
            }
            Some("commit") => {
                let Some((prepared, prepared_key)) = pending.take() else {
                    // The stream may start between a prepare and its commit
                    // only if the prepare was read from disk: not here.
                    panic!("a commit without its prepare: {line}");
                };
                assert_eq!(line["prepared_seqno"].as_u64(), Some(prepared), "{line}");
                assert_eq!(seqno, prepared + 1);
                assert_eq!(key, prepared_key);
            }
            _ => panic!("unexpected line {line} in\n{}", out.stdout),
        }
    }
    // Without --sync-writes the same writes are plain mutations.
    let out = dcp(&[
        "tail",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
        "--vbuckets",
        "0",
        "--json",
        "--limit",
        "10",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for line in out.json_lines() {
        assert_eq!(line["type"], "mutation", "{line}");
        assert_eq!(line["seqno"].as_u64().map(|s| s % 2), Some(0), "{line}");
    }
}

#[test]
fn held_prepares_commit_through_dcp_admin() {
    let serve = Serve::start(&[
        "--vbuckets",
        "1",
        "--load-rate",
        "400/s",
        "--durable-ratio",
        "1",
        "--delete-ratio",
        "0",
        "--keys",
        "10",
        "--hold-sync-writes",
    ]);
    let checkpoint = temp_file("held.json");
    let cp = checkpoint.0.to_str().expect("UTF-8 path").to_owned();
    // Ten keys, each locked by its pending prepare: ten prepares.
    let first = tail(&serve.addr, "10", Some(&cp), &[]);
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let lines = first.json_lines();
    assert!(
        lines.iter().all(|l| l["type"] == "prepare"),
        "{}",
        first.stdout
    );
    let admin = dcp(&[
        "admin",
        "-a",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
        "commit-pending",
        "--vbucket",
        "0",
    ]);
    assert_eq!(admin.code, Some(0), "{}", admin.stderr);
    let result: Value = serde_json::from_str(admin.stdout.trim()).expect("JSON result");
    assert_eq!(result["completed"], 10, "{result}");
    // Resumed: the ten commits come next, in prepare order.
    let second = tail(&serve.addr, "10", Some(&cp), &[]);
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    let prepared: Vec<u64> = lines.iter().map(|l| l["seqno"].as_u64().unwrap()).collect();
    let committed: Vec<u64> = second
        .json_lines()
        .iter()
        .map(|l| {
            assert_eq!(l["type"], "commit", "{l}");
            l["prepared_seqno"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(committed, prepared);
}
