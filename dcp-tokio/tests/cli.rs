//! The `dcp` command end to end: `dcp serve` in one process, `dcp tail`
//! and `dcp admin` in others, over 127.0.0.1 with an ephemeral port.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

use serde_json::Value;

mod cli_support;

use cli_support::*;

fn temp_file(name: &str) -> TempFile {
    static N: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "dcp-cli-test-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    TempFile(dir.join(name))
}

#[test]
fn serve_and_tail_json_resume_from_the_checkpoint_without_loss_or_duplicates() {
    let serve = Serve::start(&["--vbuckets", "4", "--preload", "300", "--seed", "3"]);
    let checkpoint = temp_file("tail.json");
    let cp = checkpoint.path();
    let tail = |limit: &str| {
        dcp(&[
            "tail",
            &serve.addr,
            "--user",
            "app",
            "--password",
            "secret",
            "--vbuckets",
            "0-3",
            "--json",
            "--checkpoint",
            cp,
            "--limit",
            limit,
        ])
    };
    let first = tail("120");
    assert_eq!(first.code, Some(0), "{}", first.stderr);
    let second = tail("180");
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    assert!(second.stderr.contains("resuming 4"), "{}", second.stderr);

    let (a, b) = (first.json_lines(), second.json_lines());
    assert_eq!((a.len(), b.len()), (120, 180));
    let mut keys = BTreeSet::new();
    let mut seqnos: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for line in a.iter().chain(&b) {
        assert_eq!(line["type"], "mutation", "{line}");
        let key = line["key"].as_str().expect("key").to_owned();
        assert!(keys.insert(key.clone()), "{key} printed twice");
        let value: Value =
            serde_json::from_str(line["value"].as_str().expect("value")).expect("a JSON value");
        assert_eq!(
            format!("user::{:06}", value["id"].as_u64().expect("id")),
            key
        );
        for field in ["cas", "rev_seqno", "flags", "expiry"] {
            assert!(line[field].is_u64(), "{field} in {line}");
        }
        let vb = line["vbucket"].as_u64().expect("vbucket");
        assert!(vb < 4);
        seqnos
            .entry(vb)
            .or_default()
            .push(line["seqno"].as_u64().expect("seqno"));
    }
    // Every preloaded document, once; per vbucket 1, 2, 3, ... in order.
    assert_eq!(keys.len(), 300);
    for (vb, seqnos) in seqnos {
        let expected: Vec<u64> = (1..=seqnos.len() as u64).collect();
        assert_eq!(seqnos, expected, "vbucket {vb}");
    }
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&checkpoint.0).expect("checkpoint file")).unwrap();
    assert_eq!(saved["version"], 1);
    assert_eq!(saved["vbuckets"].as_object().map(|o| o.len()), Some(4));
}

#[test]
fn tail_ends_by_itself_when_every_stream_reached_its_end_seqno() {
    let serve = Serve::start(&["--vbuckets", "2", "--preload", "100"]);
    let out = dcp(&[
        "tail",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
        "--vbuckets",
        "0,1",
        "--json",
        "--end-seqno",
        "10",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains("every stream reached its end"),
        "{}",
        out.stderr
    );
    let lines = out.json_lines();
    assert_eq!(lines.len(), 20);
    for vb in 0..2u64 {
        let seqnos: Vec<u64> = lines
            .iter()
            .filter(|l| l["vbucket"] == vb)
            .map(|l| l["seqno"].as_u64().expect("seqno"))
            .collect();
        assert_eq!(seqnos, (1..=10).collect::<Vec<_>>());
    }
}

#[test]
fn tail_stats_print_a_summary_and_a_final_json_record() {
    let serve = Serve::start(&["--vbuckets", "2", "--preload", "100"]);
    let out = dcp(&[
        "tail",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
        "--vbuckets",
        "0,1",
        "--json",
        "--end-seqno",
        "10",
        "--stats=0",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(out.stderr.contains("connection: "), "{}", out.stderr);
    assert!(out.stderr.contains("stream ends: 2 ok"), "{}", out.stderr);
    let lines = out.json_lines();
    let changes = lines.iter().filter(|l| l["type"] != "stats").count();
    assert_eq!(changes, 20);
    let stats: Vec<&Value> = lines.iter().filter(|l| l["type"] == "stats").collect();
    assert_eq!(stats.len(), 1, "only the final record with --stats=0");
    let last = stats[0];
    assert_eq!(last["final"], true);
    assert_eq!(last["connection"]["items"], 20);
    assert!(last["connection"]["bytes_received"].as_u64().unwrap() > 0);
    let vbuckets = last["vbuckets"].as_array().expect("per-vbucket stats");
    assert_eq!(vbuckets.len(), 2);
    for vb in vbuckets {
        assert_eq!(vb["items"], 10);
        assert_eq!(vb["last_seqno"], 10);
        assert_eq!(vb["end_reasons"]["ok"], 1);
        assert!(vb["vb_uuid"].as_u64().is_some());
    }
}

#[test]
fn user_errors_are_one_line_with_a_failing_exit_code() {
    let serve = Serve::start(&["--vbuckets", "1"]);
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "tail",
                &serve.addr,
                "-u",
                "app",
                "-p",
                "wrong",
                "--vbuckets",
                "0",
            ],
            "authentication failed for user \"app\": wrong user name or password",
        ),
        (
            &[
                "tail",
                &serve.addr,
                "-u",
                "app",
                "-p",
                "secret",
                "--bucket",
                "nope",
            ],
            "bucket \"nope\" does not exist",
        ),
        (
            &[
                "admin",
                "-a",
                &serve.addr,
                "-u",
                "app",
                "-p",
                "wrong",
                "failover",
                "0",
            ],
            "authentication failed",
        ),
    ];
    for (args, expected) in cases {
        let out = dcp(args);
        assert_eq!(out.code, Some(1), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        let errors: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| l.starts_with("error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{args:?}: {}", out.stderr);
        assert!(errors[0].contains(expected), "{args:?}: {}", out.stderr);
    }
    drop(serve);

    // Nothing listens there any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let out = dcp(&["tail", &addr]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains(&format!(
            "error: cannot connect to {addr}: connection refused"
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn admin_injects_a_failover_that_tail_obeys_as_a_rollback() {
    let serve = Serve::start(&["--vbuckets", "1", "--preload", "20"]);
    let checkpoint = temp_file("rollback.json");
    let cp = checkpoint.path();
    let tail = |limit: &str| {
        dcp(&[
            "tail",
            &serve.addr,
            "-u",
            "app",
            "-p",
            "secret",
            "--vbuckets",
            "0",
            "--json",
            "--checkpoint",
            cp,
            "--limit",
            limit,
        ])
    };
    let first = tail("20");
    assert_eq!(first.code, Some(0), "{}", first.stderr);

    // The failover loses the last 5 changes: a new branch starts below.
    let out = dcp(&[
        "admin",
        "-a",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
        "failover",
        "0",
        "--lose-last",
        "5",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let entry: Value = serde_json::from_str(out.stdout.trim()).expect("JSON result");
    let branch = entry["seqno"].as_u64().expect("seqno");
    assert!(entry["vbucket_uuid"].is_string(), "{entry}");

    // The resumed stream rolls back to the new branch and streams again
    // what lies above it.
    assert!(branch < 15, "{entry}");
    let second = tail(&(15 - branch).to_string());
    assert_eq!(second.code, Some(0), "{}", second.stderr);
    let lines = second.json_lines();
    assert_eq!(lines.len() as u64, 1 + 15 - branch, "{}", second.stdout);
    assert_eq!(lines[0]["type"], "rollback", "{}", second.stdout);
    assert_eq!(lines[0]["seqno"].as_u64(), Some(branch));
    let seqnos: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l["seqno"].as_u64().unwrap())
        .collect();
    assert_eq!(seqnos, (branch + 1..=15).collect::<Vec<_>>());
}

#[test]
fn tail_without_an_address_streams_the_embedded_demo() {
    let out = dcp(&["tail", "--json", "--limit", "25"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json_lines().len(), 25);
    assert!(out.stderr.contains("embedded server"), "{}", out.stderr);
}

#[test]
fn help_describes_every_command() {
    let out = dcp(&["--help"]);
    assert_eq!(out.code, Some(0));
    for word in ["serve", "tail", "admin", "dcp tail"] {
        assert!(out.stdout.contains(word), "{word}: {}", out.stdout);
    }
    for command in ["serve", "tail", "admin"] {
        let out = dcp(&[command, "--help"]);
        assert_eq!(out.code, Some(0), "{command}");
        assert!(out.stdout.contains("Usage: dcp"), "{command}");
    }
}

#[cfg(unix)]
#[test]
fn sigterm_stops_tail_with_its_checkpoint_saved() {
    let serve = Serve::start(&["--vbuckets", "2", "--preload", "100"]);
    let checkpoint = temp_file("term.json");
    let mut child = Command::new(DCP)
        .args([
            "tail",
            &serve.addr,
            "-u",
            "app",
            "-p",
            "secret",
            "--vbuckets",
            "0-1",
        ])
        .args(["--json", "--checkpoint", checkpoint.path()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dcp tail");
    // Every preloaded change printed: the tail now waits for more.
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    for _ in 0..100 {
        line.clear();
        stdout.read_line(&mut line).expect("a line");
        assert!(line.starts_with('{'), "{line:?}");
    }
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(killed.success());
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("the rest");
    assert!(rest.is_empty(), "{rest}");
    let saved: Value =
        serde_json::from_slice(&std::fs::read(&checkpoint.0).expect("checkpoint file")).unwrap();
    let streamed: u64 = saved["vbuckets"]
        .as_object()
        .expect("vbuckets")
        .values()
        .map(|p| p["last_seqno"].as_u64().expect("last_seqno"))
        .sum();
    assert_eq!(streamed, 100, "{saved}");
}

#[test]
fn serve_a_local_cluster_and_tail_it_through_a_connection_string() {
    let mut child = Command::new(DCP)
        .args(["serve", "--listen", "127.0.0.1:0", "--user", "app:secret"])
        .args(["--nodes", "3", "--vbuckets", "8", "--preload", "120"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dcp serve --nodes 3");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = Vec::new();
    let connection_string = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read the banner") == 0 {
            let _ = child.kill();
            panic!("no connection string in {banner:?}");
        }
        if let Some(cs) = line
            .split_whitespace()
            .find(|w| w.starts_with("couchbase://"))
        {
            break cs.to_owned();
        }
        banner.push(line);
    };
    thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let serve = Serve {
        child,
        addr: connection_string.clone(),
    };
    assert_eq!(
        banner
            .iter()
            .filter(|l| l.trim_start().starts_with("node "))
            .count(),
        3,
        "{banner:?}"
    );
    let out = dcp(&[
        "tail",
        &serve.addr,
        "--user",
        "app",
        "--password",
        "secret",
        "--json",
        "--limit",
        "120",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let keys: BTreeSet<String> = out
        .json_lines()
        .iter()
        .filter_map(|l| l.get("key").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), 120, "every document once: {}", out.stderr);
}

/// A self-signed certificate for `localhost` and 127.0.0.1, written as PEM
/// files: (certificate, key).
fn self_signed_files() -> (TempFile, TempFile) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a certificate");
    let cert = temp_file("cert.pem");
    let key = temp_file("key.pem");
    std::fs::write(&cert.0, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key.0, certified.signing_key.serialize_pem()).expect("write the key");
    (cert, key)
}

#[test]
fn serve_and_tail_over_tls_and_a_wrong_ca_is_refused() {
    let (cert, key) = self_signed_files();
    let serve = Serve::start(&[
        "--vbuckets",
        "2",
        "--preload",
        "100",
        "--tls-cert",
        cert.path(),
        "--tls-key",
        key.path(),
    ]);
    let tail = |extra: &[&str]| {
        let mut args = vec![
            "tail",
            serve.addr.as_str(),
            "-u",
            "app",
            "-p",
            "secret",
            "--vbuckets",
            "0,1",
            "--json",
            "--end-seqno",
            "10",
        ];
        args.extend_from_slice(extra);
        dcp(&args)
    };
    // The self-signed certificate is its own CA.
    let out = tail(&["--ca", cert.path()]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.json_lines().len(), 20);
    let out = tail(&["--tls-insecure"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    // Another CA: refused, one line, a failing exit code.
    let (other, _other_key) = self_signed_files();
    let out = tail(&["--ca", other.path()]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("TLS handshake"), "{}", out.stderr);
    // Plain TCP against the TLS port fails too.
    let out = tail(&[]);
    assert_ne!(out.code, Some(0));
    // --tls without a CA says what is missing.
    let out = tail(&["--tls"]);
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("--ca"), "{}", out.stderr);
}
