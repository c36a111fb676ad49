//! The console of `dcp serve --nodes N`: topology changes typed on stdin.

use std::io::BufRead;

use dcp_tokio::ClusterServerHandle;
use dcp_tokio::dcp_proto::producer::NodeId;
use tokio::sync::mpsc;

/// The commands, as the banner and `help` list them.
pub(crate) const HELP: &str = "\
  rebalance            spread active vbuckets evenly over the nodes
  move VB NODE         move vbucket VB's active copy to node NODE
  failover NODE        crash NODE: replicas take over (lag on: losing the tail)
  remove NODE          rebalance NODE out and remove it
  add                  start a node on the next port (then: rebalance)
  drop NODE            drop NODE's connections
  lag on|off           replicas lag behind (a failover loses what they lack)
  hold on|off          hold configs back (clients meet NOT_MY_VBUCKET)
  map                  the config revision and each node's active vbuckets
";

/// Reads commands from stdin until it closes; the server keeps running.
pub(crate) async fn run(handle: ClusterServerHandle) {
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = execute(&handle, &words).await;
        if !reply.is_empty() {
            println!("{reply}");
        }
    }
}

fn number<T: std::str::FromStr>(word: Option<&&str>) -> Result<T, String> {
    word.and_then(|w| w.parse().ok())
        .ok_or_else(|| "expected a number (see `help`)".to_owned())
}

fn on_off(word: Option<&&str>) -> Result<bool, String> {
    match word.copied() {
        Some("on") => Ok(true),
        Some("off") => Ok(false),
        _ => Err("expected on or off".to_owned()),
    }
}

async fn execute(handle: &ClusterServerHandle, words: &[&str]) -> String {
    let result: Result<String, String> = match words.first().copied() {
        None => Ok(String::new()),
        Some("help") => Ok(HELP.to_owned()),
        Some("rebalance") => handle
            .rebalance_evenly()
            .map(|()| map(handle))
            .map_err(|e| e.to_string()),
        Some("move") => match (number(words.get(1)), number(words.get(2))) {
            (Ok(vb), Ok(node)) => handle
                .rebalance(&[(vb, NodeId(node))])
                .map(|()| map(handle))
                .map_err(|e| e.to_string()),
            _ => Err("usage: move VB NODE".to_owned()),
        },
        Some("failover") => number(words.get(1)).and_then(|node| {
            handle
                .failover(NodeId(node))
                .map(|branches| format!("{} vbuckets promoted\n{}", branches.len(), map(handle)))
                .map_err(|e| e.to_string())
        }),
        Some("remove") => number(words.get(1)).and_then(|node| {
            handle
                .remove_node(NodeId(node))
                .map(|()| map(handle))
                .map_err(|e| e.to_string())
        }),
        Some("add") => match handle.add_node().await {
            Ok(id) => Ok(format!(
                "node {} added on {}; `rebalance` moves vbuckets onto it",
                id.0,
                handle
                    .node_addr(id)
                    .map_or_else(String::new, |a| a.to_string())
            )),
            Err(e) => Err(e.to_string()),
        },
        Some("drop") => number(words.get(1)).and_then(|node| {
            handle
                .drop_connections(NodeId(node))
                .map(|n| format!("{n} connections dropped"))
                .map_err(|e| e.to_string())
        }),
        Some("lag") => on_off(words.get(1)).map(|on| {
            handle.set_sync_replication(!on);
            format!("replication {}", if on { "lags" } else { "synchronous" })
        }),
        Some("hold") => on_off(words.get(1)).map(|on| {
            handle.hold_config(on);
            format!("configs {}", if on { "held back" } else { "served" })
        }),
        Some("map") => Ok(map(handle)),
        Some(other) => Err(format!("unknown command {other:?} (see `help`)")),
    };
    result.unwrap_or_else(|e| format!("error: {e}"))
}

/// The config revision and each node's active vbuckets.
fn map(handle: &ClusterServerHandle) -> String {
    let addrs = handle.node_addrs();
    handle.with_cluster(|cluster| {
        let mut out = format!("config rev {}\n", cluster.rev());
        let ids: Vec<NodeId> = cluster.node_ids().collect();
        for id in ids {
            let active = (0..cluster.num_vbuckets())
                .filter(|vb| cluster.active_node(*vb) == Some(id))
                .count();
            let state = if !cluster.is_running(id) {
                "down"
            } else if !cluster.is_member(id) {
                "removed"
            } else {
                "member"
            };
            let addr = addrs
                .get(id.0)
                .map_or_else(String::new, ToString::to_string);
            out += &format!(
                "  node {} {addr} ({state}): {active} active vbuckets\n",
                id.0
            );
        }
        out.trim_end().to_owned()
    })
}

#[cfg(test)]
mod tests {
    use dcp_tokio::ClusterServer;
    use dcp_tokio::dcp_proto::producer::NodeConfig;

    use super::*;

    #[tokio::test]
    async fn commands_change_the_topology() {
        let config = NodeConfig::new("default").with_vbuckets(6);
        let server = ClusterServer::bind("127.0.0.1:0".parse().unwrap(), 3, 1, config)
            .await
            .unwrap();
        let handle = server.handle();
        let task = tokio::spawn(server.run());
        let moved = execute(&handle, &["move", "0", "2"]).await;
        assert!(moved.starts_with("config rev 2"), "{moved}");
        assert_eq!(handle.with_cluster(|c| c.active_node(0)), Some(NodeId(2)));
        let failed = execute(&handle, &["failover", "1"]).await;
        assert!(failed.contains("(down)"), "{failed}");
        assert!(execute(&handle, &["add"]).await.starts_with("node 3 added"));
        assert!(execute(&handle, &["rebalance"]).await.contains("node 3"));
        assert!(
            execute(&handle, &["remove", "9"])
                .await
                .starts_with("error")
        );
        assert!(
            execute(&handle, &["lag", "maybe"])
                .await
                .starts_with("error")
        );
        assert!(execute(&handle, &["frobnicate"]).await.starts_with("error"));
        assert_eq!(execute(&handle, &["hold", "on"]).await, "configs held back");
        handle.shutdown();
        task.await.unwrap().unwrap();
    }
}
