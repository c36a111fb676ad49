//! The `dcp` command over TLS with a local cluster: `dcp serve --nodes 3
//! --tls-cert/--tls-key` prints a `couchbases://` connection string, and
//! `dcp tail couchbases://...` with the right CA streams every document;
//! without a CA, or with another one, it fails with one line and a failing
//! exit code.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::io::BufReader;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

const DCP: &str = env!("CARGO_BIN_EXE_dcp");

/// A liveness bound for one command (nothing waits for it to pass).
const LIMIT: Duration = Duration::from_secs(60);

/// A `dcp serve` process, killed when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `dcp ARGS` to completion, failing the test after [`LIMIT`].
fn dcp(args: &[&str]) -> Output {
    let child = Command::new(DCP)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn dcp");
    let id = child.id();
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match finished.recv_timeout(LIMIT) {
        Ok(output) => output.expect("dcp ran"),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("dcp {args:?} did not finish within {LIMIT:?}");
        }
    }
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A self-signed certificate (its own CA) for `localhost` and 127.0.0.1,
/// written as PEM files in `dir`: (certificate path, key path).
fn self_signed_files(dir: &TempDir, name: &str) -> (String, String) {
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("a certificate");
    let cert = dir.0.join(format!("{name}-cert.pem"));
    let key = dir.0.join(format!("{name}-key.pem"));
    std::fs::write(&cert, certified.cert.pem()).expect("write the certificate");
    std::fs::write(&key, certified.signing_key.serialize_pem()).expect("write the key");
    (
        cert.to_str().expect("UTF-8").to_owned(),
        key.to_str().expect("UTF-8").to_owned(),
    )
}

#[test]
fn serve_a_tls_cluster_and_tail_it_through_couchbases() {
    let dir = TempDir(std::env::temp_dir().join(format!("dcp-cli-tls-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let (cert, key) = self_signed_files(&dir, "server");
    let mut child = Command::new(DCP)
        .args(["serve", "--listen", "127.0.0.1:0", "--user", "app:secret"])
        .args(["--nodes", "3", "--vbuckets", "8", "--preload", "120"])
        .args(["--tls-cert", &cert, "--tls-key", &key])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn dcp serve --nodes 3 --tls-cert");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let serve = Serve(child);
    let mut banner = Vec::new();
    let connection_string = loop {
        let mut line = String::new();
        if stdout.read_line(&mut line).expect("read the banner") == 0 {
            panic!("no connection string in {banner:?}");
        }
        if let Some(cs) = line.split_whitespace().find(|w| w.starts_with("couchbase")) {
            break cs.to_owned();
        }
        banner.push(line);
    };
    // Keep reading, as a terminal would.
    thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    assert!(
        connection_string.starts_with("couchbases://127.0.0.1:"),
        "{connection_string}"
    );
    assert!(banner.iter().any(|l| l.contains("TLS only")), "{banner:?}");

    let tail = |extra: &[&str]| {
        let mut args = vec![
            "tail",
            connection_string.as_str(),
            "--user",
            "app",
            "--password",
            "secret",
            "--json",
            "--limit",
            "120",
        ];
        args.extend_from_slice(extra);
        dcp(&args)
    };
    // The self-signed certificate is its own CA.
    let out = tail(&["--ca", &cert]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let keys: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .filter_map(|l| l.get("key").and_then(Value::as_str).map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), 120, "every document once: {stderr}");

    // couchbases:// without a CA says what is missing.
    let out = tail(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("--ca"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");

    // Another CA: refused at the bootstrap, one line.
    let (other, _) = self_signed_files(&dir, "other");
    let out = tail(&["--ca", &other]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(stderr.contains("TLS handshake"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    drop(serve);
}
