//! The `dcp` command with collections: `dcp serve --collection` seeds a
//! sample collection, `dcp admin` changes the manifest, `dcp tail
//! --collection/--scope` streams only those collections (JSON lines with
//! the collection and the system events).

use serde_json::Value;

mod cli_support;

use cli_support::*;

fn admin(serve: &Serve, args: &[&str]) -> Output {
    let mut all = vec![
        "admin",
        "--address",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
    ];
    all.extend_from_slice(args);
    dcp(&all)
}

fn tail(serve: &Serve, args: &[&str]) -> Output {
    let mut all = vec![
        "tail",
        &serve.addr,
        "-u",
        "app",
        "-p",
        "secret",
        "--vbuckets",
        "0,1",
        "--json",
    ];
    all.extend_from_slice(args);
    dcp(&all)
}

#[test]
fn tail_streams_one_collection_and_admin_changes_the_manifest() {
    let serve = Serve::start(&[
        "--vbuckets",
        "2",
        "--preload",
        "50",
        "--collection",
        "inventory.hotels",
    ]);
    // By name: the 100 sample documents of inventory.hotels (id 8), and the
    // collection's create event on each vbucket; nothing of _default.
    let out = tail(
        &serve,
        &["--collection", "inventory.hotels", "--limit", "100"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = out.json_lines();
    let docs: Vec<&Value> = lines.iter().filter(|l| l["type"] == "mutation").collect();
    assert_eq!(docs.len(), 100);
    assert!(docs.iter().all(|l| l["collection"] == 8));
    assert!(
        docs.iter()
            .all(|l| l["key"].as_str().is_some_and(|k| k.starts_with("hotels-")))
    );
    let events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "system_event")
        .collect();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(
        events
            .iter()
            .all(|e| e["event"] == "begin_collection" && e["key"] == "hotels" && e["scope"] == 8)
    );

    // A new collection through `dcp admin`; a filter by id works too.
    let out = admin(
        &serve,
        &["create-collection", "inventory.rooms", "--max-ttl", "60"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let created: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(created["id"], "9");
    let out = tail(&serve, &["--collection", "0x8", "--limit", "100"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(
        out.json_lines()
            .iter()
            .filter(|l| l["collection"] == 8 && l["type"] == "mutation")
            .count(),
        100
    );
    let out = admin(&serve, &["manifest"]);
    let manifest: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(manifest["scopes"][1]["name"], "inventory");
    assert_eq!(manifest["scopes"][1]["collections"][1]["maxTTL"], 60);

    // Drop it: it leaves the manifest, and a filter on it is refused.
    let out = admin(&serve, &["drop-collection", "inventory.hotels"]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = admin(&serve, &["manifest"]);
    let manifest: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(manifest["scopes"][1]["collections"][0]["name"], "rooms");
    let out = tail(
        &serve,
        &["--collection", "inventory.hotels", "--limit", "1"],
    );
    assert_ne!(out.code, Some(0));
    assert!(out.stderr.contains("no collection"), "{}", out.stderr);
    let out = admin(&serve, &["drop-scope", "nope"]);
    assert_ne!(out.code, Some(0));
}

#[test]
fn tail_prints_modify_events_and_admin_modifies_a_collection() {
    // One vbucket: 1 create scope, 2 create hotels, 3..=102 its documents.
    let serve = Serve::start(&["--vbuckets", "1", "--collection", "inventory.hotels"]);
    let out = admin(
        &serve,
        &[
            "modify-collection",
            "inventory.hotels",
            "--max-ttl",
            "30",
            "--history",
            "true",
        ],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let modified: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    assert_eq!(modified["id"], "8");
    let out = admin(&serve, &["manifest"]);
    let manifest: Value = serde_json::from_str(out.stdout.trim()).unwrap();
    let hotels = &manifest["scopes"][1]["collections"][0];
    assert_eq!(
        (&hotels["maxTTL"], &hotels["history"]),
        (&Value::from(30), &Value::from(true))
    );

    // The modify is seqno 103: tail asks for FlatBuffers system events and
    // prints it typed.
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
        "--scope",
        "inventory",
        "--end-seqno",
        "103",
    ]);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let lines = out.json_lines();
    let events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["type"] == "system_event")
        .collect();
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["create_scope", "begin_collection", "modify_collection"],
        "{events:?}"
    );
    let modify = events[2];
    assert_eq!(
        (&modify["seqno"], &modify["collection"], &modify["key"]),
        (&Value::from(103), &Value::from(8), &Value::from("hotels"))
    );
    assert_eq!(
        (&modify["max_ttl"], &modify["history"]),
        (&Value::from(30), &Value::from(true))
    );

    // Removing the max TTL; an unknown collection is refused.
    let out = admin(
        &serve,
        &["modify-collection", "inventory.hotels", "--no-max-ttl"],
    );
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let out = admin(
        &serve,
        &["modify-collection", "inventory.nope", "--history", "false"],
    );
    assert_ne!(out.code, Some(0));
}
