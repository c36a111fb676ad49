//! `dcp tail --sync-writes --json` against `dcp serve` generating durable
//! writes: prepares and their commits as JSON lines; with
//! `--hold-sync-writes` the prepares stay pending until `dcp admin
//! commit-pending`.

use serde_json::Value;

mod cli_support;

use cli_support::*;

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
