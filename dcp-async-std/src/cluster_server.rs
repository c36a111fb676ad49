//! [`ClusterServer`]: the core's [`LocalCluster`] served on consecutive
//! ports, one listener per node, one task per connection on an executor
//! of the caller's choice.
//!
//! As in [`Server`](crate::Server): the cluster sits behind one
//! (synchronous, never held across an await) mutex; each connection's task
//! owns its socket and runs one loop (write what its node has for it, read
//! and feed what the client sends, run its timers); whoever changes the
//! cluster hands every node's
//! [`take_wakeups`](dcp_proto::producer::Node::take_wakeups) to the tasks
//! concerned through their wakers.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Instant, SystemTime};

use async_io::Timer;
use async_net::{TcpListener, TcpStream};
use bytes::{Buf, Bytes, BytesMut};
use dcp_proto::bucket::MutationInfo;
use dcp_proto::msg::FailoverEntry;
use dcp_proto::producer::{
    AdminCommand, ClusterAdminRequest, ConnectionId, LocalCluster, NodeConfig, NodeId,
};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future;

use crate::server_tls::{self, Session, TLS_ACCEPT_TIMEOUT};
use crate::{Error, Task};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes asked of a node per write.
const WRITE_CHUNK: usize = 64 * 1024;
/// Attempts at finding `n` free consecutive ports.
const BIND_ATTEMPTS: usize = 20;
/// Ports reserved (bound, not served) after the nodes' for
/// [`ClusterServerHandle::add_node`]: the next port may otherwise be taken
/// by then (by any socket's ephemeral port).
const SPARE_PORTS: usize = 2;

/// A connection: its node and the node's id of it.
type Key = (NodeId, ConnectionId);

struct Shared {
    state: Mutex<State>,
    /// The host of the nodes' addresses (loopback for a wildcard listener).
    host: IpAddr,
    /// The address listeners bind.
    listen_ip: IpAddr,
    spawn: Box<dyn Fn(Task) + Send + Sync>,
}

struct State {
    cluster: LocalCluster,
    /// Reserved listeners for the next added nodes, in port order.
    spare: Vec<TcpListener>,
    conns: HashMap<Key, Slot>,
    shutdown: bool,
    /// Each accept loop's waker, by node.
    accept_wakers: HashMap<NodeId, Waker>,
    /// Tasks still running (the accept loops included).
    tasks: usize,
    /// [`ClusterServer::shutdown`] waiting for the tasks.
    idle_waker: Option<Waker>,
    /// Connections accepted from now on speak TLS with this.
    tls: Option<server_tls::Config>,
}

/// What other tasks know of one connection.
struct Slot {
    waker: Option<Waker>,
    woken: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the shutdown flag and wakes every task to notice it.
    fn stop(&self) {
        let mut state = self.lock();
        state.shutdown = true;
        for (_, waker) in std::mem::take(&mut state.accept_wakers) {
            waker.wake();
        }
        for slot in state.conns.values_mut() {
            if let Some(waker) = slot.waker.take() {
                waker.wake();
            }
        }
    }

    /// A task ended.
    fn task_done(&self) {
        let mut state = self.lock();
        state.tasks = state.tasks.saturating_sub(1);
        if state.tasks == 0
            && let Some(waker) = state.idle_waker.take()
        {
            waker.wake();
        }
    }

    /// Starts the accept loop of node `id`.
    fn serve_node(self: &Arc<Self>, id: NodeId, listener: TcpListener) {
        self.lock().tasks += 1;
        (self.spawn)(Box::pin(accept_loop(Arc::clone(self), id, listener)));
    }
}

impl State {
    /// Wakes the tasks of the connections any node says may have output.
    fn dispatch_wakeups(&mut self) {
        let ids: Vec<NodeId> = self.cluster.node_ids().collect();
        for node in ids {
            let Some(n) = self.cluster.node_mut(node) else {
                continue;
            };
            for id in n.take_wakeups() {
                if let Some(slot) = self.conns.get_mut(&(node, id)) {
                    slot.woken = true;
                    if let Some(waker) = slot.waker.take() {
                        waker.wake();
                    }
                }
            }
        }
    }
}

/// Serves a [`LocalCluster`] (N data nodes sharing one bucket, vbucket map
/// and config) on N consecutive ports of one host. Topology changes and
/// writes go through the [`ClusterServerHandle`]; a failed-over node
/// refuses new connections. Dropping the server stops it without waiting;
/// prefer [`shutdown`](Self::shutdown).
///
/// ```
/// use dcp_async_std::ClusterServer;
/// use dcp_proto::producer::NodeConfig;
///
/// # async_std::task::block_on(async {
/// let config = NodeConfig::new("default").with_vbuckets(8).with_user("app", "secret");
/// let server = ClusterServer::bind("127.0.0.1:0".parse()?, 3, 1, config).await?;
/// let handle = server.handle();
/// assert_eq!(handle.node_addrs().len(), 3);
/// assert!(handle.connection_string().starts_with("couchbase://127.0.0.1:"));
/// handle.set(b"k", "v")?;
/// server.shutdown().await;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct ClusterServer {
    handle: ClusterServerHandle,
}

impl std::fmt::Debug for ClusterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterServer").finish_non_exhaustive()
    }
}

impl ClusterServer {
    /// Binds `nodes` consecutive ports from `addr` and serves the cluster,
    /// each task spawned with `async_std::task::spawn` (see
    /// [`bind_with`](Self::bind_with)).
    #[cfg(feature = "async-std")]
    pub async fn bind(
        addr: SocketAddr,
        nodes: usize,
        replicas: usize,
        config: NodeConfig,
    ) -> Result<ClusterServer, Error> {
        Self::bind_with(addr, nodes, replicas, config, |task| {
            async_std::task::spawn(task);
        })
        .await
    }

    /// Binds `nodes` consecutive ports from `addr` (port 0: any free run of
    /// ports), builds the cluster (`nodes` nodes shaped by `config`, its
    /// host and ports replaced by the listeners', `replicas` replicas per
    /// vbucket, synchronous replication, wall clocks at the real time) and
    /// serves it, spawning the accept loops and each connection's task
    /// with `spawn` (e.g. `|t| smol::spawn(t).detach()`).
    pub async fn bind_with(
        addr: SocketAddr,
        nodes: usize,
        replicas: usize,
        config: NodeConfig,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> Result<ClusterServer, Error> {
        let nodes = nodes.max(1);
        let mut listeners = bind_consecutive(addr, nodes + SPARE_PORTS).await?;
        let spare = listeners.split_off(nodes);
        let base = listeners
            .first()
            .map(TcpListener::local_addr)
            .transpose()?
            .map_or(addr.port(), |a| a.port());
        let mut config = config.with_wall_clock_base(SystemTime::now());
        config.hostname = if addr.ip().is_unspecified() {
            "$HOST".to_owned()
        } else {
            addr.ip().to_string()
        };
        config.kv_port = base;
        let mut cluster = LocalCluster::new(config, nodes, replicas);
        let ids: Vec<NodeId> = cluster.node_ids().collect();
        for id in &ids {
            if let Some(node) = cluster.node_mut(*id) {
                node.wall_clock(Instant::now());
            }
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                cluster,
                conns: HashMap::new(),
                shutdown: false,
                spare,
                accept_wakers: HashMap::new(),
                tasks: 0,
                idle_waker: None,
                tls: None,
            }),
            host: if addr.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            },
            listen_ip: addr.ip(),
            spawn: Box::new(spawn),
        });
        for (id, listener) in ids.into_iter().zip(listeners) {
            shared.serve_node(id, listener);
        }
        Ok(ClusterServer {
            handle: ClusterServerHandle { shared },
        })
    }

    /// The nodes' addresses, in node order.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.handle.node_addrs()
    }

    /// Serves TLS only on every node's port (nodes added later too), with
    /// `config` (see
    /// [`tls::server_config_from_pem`](crate::tls::server_config_from_pem)),
    /// to every connection accepted from now on: call it right after
    /// binding. A client that does not complete the TLS handshake within
    /// [`TLS_ACCEPT_TIMEOUT`](crate::TLS_ACCEPT_TIMEOUT) is dropped. The
    /// bucket config lists every node's port as its `kvSSL` port too, so a
    /// [`ClusterConnection::connect_tls`](crate::ClusterConnection::connect_tls)
    /// (`couchbases://`) finds the nodes.
    #[cfg(feature = "tls")]
    pub fn with_tls(self, config: Arc<rustls::ServerConfig>) -> ClusterServer {
        {
            let mut state = self.handle.shared.lock();
            state.tls = Some(config);
            state.cluster.set_kv_tls(true);
            state.dispatch_wakeups();
        }
        self
    }

    /// A handle for other tasks.
    pub fn handle(&self) -> ClusterServerHandle {
        self.handle.clone()
    }

    /// Stops accepting, closes every connection and waits for their tasks.
    pub async fn shutdown(self) {
        self.handle.shared.stop();
        future::poll_fn(|cx| {
            let mut state = self.handle.shared.lock();
            if state.tasks == 0 {
                Poll::Ready(())
            } else {
                state.idle_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
    }
}

impl Drop for ClusterServer {
    fn drop(&mut self) {
        self.handle.shared.stop();
    }
}

/// Binds `n` listeners on consecutive ports.
async fn bind_consecutive(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS {
        let first = TcpListener::bind(addr).await?;
        let base = first.local_addr()?.port();
        let mut listeners = vec![first];
        for i in 1..n {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "port range"))?;
            match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                Ok(listener) => listeners.push(listener),
                Err(err) => {
                    last_err = Some(err);
                    break;
                }
            }
        }
        if listeners.len() == n {
            return Ok(listeners);
        }
        if addr.port() != 0 {
            break;
        }
    }
    Err(last_err.unwrap_or_else(|| io::Error::new(io::ErrorKind::AddrInUse, "no free ports")))
}

/// A cloneable handle to a [`ClusterServer`]: write documents, change the
/// topology. Every call wakes the connections it concerns.
#[derive(Clone)]
pub struct ClusterServerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ClusterServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterServerHandle")
            .finish_non_exhaustive()
    }
}

impl ClusterServerHandle {
    /// Runs `f` on the cluster under its lock, then wakes the connections
    /// that may have new output. Keep `f` short.
    pub fn with_cluster<R>(&self, f: impl FnOnce(&mut LocalCluster) -> R) -> R {
        let mut state = self.shared.lock();
        let result = f(&mut state.cluster);
        state.dispatch_wakeups();
        result
    }

    /// Every node's address (members or not), in node order.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        let host = self.shared.host;
        self.with_cluster(|cluster| {
            let ids: Vec<NodeId> = cluster.node_ids().collect();
            ids.into_iter()
                .filter_map(|id| cluster.node(id))
                .map(|n| SocketAddr::new(host, n.config().kv_port))
                .collect()
        })
    }

    /// The address of node `id`.
    pub fn node_addr(&self, id: NodeId) -> Option<SocketAddr> {
        let host = self.shared.host;
        self.with_cluster(|c| {
            c.node(id)
                .map(|n| SocketAddr::new(host, n.config().kv_port))
        })
    }

    /// `couchbase://host:port,host:port/bucket` over the member nodes
    /// (`couchbases://` when the cluster serves TLS).
    pub fn connection_string(&self) -> String {
        let host = self.shared.host;
        self.with_cluster(|cluster| {
            let seeds: Vec<String> = cluster
                .member_ids()
                .into_iter()
                .filter_map(|id| cluster.node(id))
                .map(|n| SocketAddr::new(host, n.config().kv_port).to_string())
                .collect();
            let bucket = cluster
                .node(NodeId(0))
                .map(|n| n.bucket().name().to_owned())
                .unwrap_or_default();
            let scheme = if cluster.kv_tls() {
                "couchbases"
            } else {
                "couchbase"
            };
            format!("{scheme}://{}/{bucket}", seeds.join(","))
        })
    }

    /// Stores a document on its active node (and replicas).
    pub fn set(&self, key: &[u8], value: impl Into<Bytes>) -> Result<MutationInfo, Error> {
        let value = value.into();
        Ok(self.with_cluster(|c| c.set(key, value, Instant::now()))?)
    }

    /// Deletes a document.
    pub fn delete(&self, key: &[u8]) -> Result<MutationInfo, Error> {
        Ok(self.with_cluster(|c| c.delete(key, Instant::now()))?)
    }

    /// Moves active vbuckets ([`LocalCluster::rebalance`]).
    pub fn rebalance(&self, moves: &[(u16, NodeId)]) -> Result<(), Error> {
        Ok(self.with_cluster(|c| c.rebalance(moves))?)
    }

    /// Spreads active vbuckets over the members
    /// ([`LocalCluster::rebalance_evenly`]).
    pub fn rebalance_evenly(&self) -> Result<(), Error> {
        Ok(self.with_cluster(LocalCluster::rebalance_evenly)?)
    }

    /// Fails a node over ([`LocalCluster::failover`]): its connections
    /// drop and it refuses new ones.
    pub fn failover(&self, id: NodeId) -> Result<Vec<(u16, FailoverEntry)>, Error> {
        Ok(self.with_cluster(|c| c.failover(id))?)
    }

    /// Removes a node gracefully ([`LocalCluster::remove_node`]).
    pub fn remove_node(&self, id: NodeId) -> Result<(), Error> {
        Ok(self.with_cluster(|c| c.remove_node(id))?)
    }

    /// Drops every connection of a node as a network failure would.
    pub fn drop_connections(&self, id: NodeId) -> Result<usize, Error> {
        Ok(self.with_cluster(|c| c.drop_connections(id))?)
    }

    /// Makes replication synchronous or lagging
    /// ([`LocalCluster::set_sync_replication`]).
    pub fn set_sync_replication(&self, sync: bool) {
        self.with_cluster(|c| c.set_sync_replication(sync));
    }

    /// Holds configs back or releases them
    /// ([`LocalCluster::hold_config`]): a stale config for clients.
    pub fn hold_config(&self, held: bool) {
        self.with_cluster(|c| c.hold_config(held));
    }

    /// Starts a new empty node on the next port (the first two added use
    /// ports reserved at bind time) and adds it to the config; move
    /// vbuckets onto it with a rebalance.
    pub async fn add_node(&self) -> Result<NodeId, Error> {
        let next = self.with_cluster(|c| {
            let count = c.node_ids().count();
            let base = c.node(NodeId(0)).map_or(0, |n| n.config().kv_port);
            u16::try_from(count).ok().and_then(|k| base.checked_add(k))
        });
        let port = next.ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "port"))?;
        let reserved = {
            let mut state = self.shared.lock();
            let at = state
                .spare
                .iter()
                .position(|l| l.local_addr().is_ok_and(|a| a.port() == port));
            at.map(|at| state.spare.remove(at))
        };
        let listener = match reserved {
            Some(listener) => listener,
            None => TcpListener::bind(SocketAddr::new(self.shared.listen_ip, port)).await?,
        };
        let id = self.with_cluster(|c| {
            let id = c.add_node()?;
            if let Some(node) = c.node_mut(id) {
                node.wall_clock(Instant::now());
            }
            Ok::<_, Error>(id)
        })?;
        self.shared.serve_node(id, listener);
        Ok(id)
    }
}

async fn accept_loop(shared: Arc<Shared>, node: NodeId, listener: TcpListener) {
    loop {
        let stopped = future::poll_fn(|cx| {
            let mut state = shared.lock();
            if state.shutdown {
                Poll::Ready(None)
            } else {
                state.accept_wakers.insert(node, cx.waker().clone());
                Poll::Pending
            }
        });
        let accepted = future::or(stopped, async { Some(listener.accept().await) }).await;
        match accepted {
            None => break,
            // Failed accepts only lose that client.
            Some(Err(_)) => {}
            Some(Ok((stream, _))) => {
                let _ = stream.set_nodelay(true);
                let (key, tls) = {
                    let mut state = shared.lock();
                    if state.shutdown {
                        break;
                    }
                    // A node that is down: the socket closes at once.
                    if !state.cluster.is_running(node) {
                        continue;
                    }
                    let Ok(tls) = state.tls.as_ref().map(Session::new).transpose() else {
                        continue;
                    };
                    let Some(n) = state.cluster.node_mut(node) else {
                        continue;
                    };
                    let key = (node, n.accept(Instant::now()));
                    state.conns.insert(
                        key,
                        Slot {
                            waker: None,
                            woken: false,
                        },
                    );
                    state.tasks += 1;
                    (key, tls)
                };
                let task = serve(Arc::clone(&shared), key, stream, tls);
                (shared.spawn)(Box::pin(task));
            }
        }
    }
    shared.task_done();
}

/// Carries out one cluster admin command (`dcp admin`: rebalance,
/// failover, add or remove a node, map) and answers it on the connection
/// it came from. Adding a node needs a listener, so it runs here rather
/// than in the core.
async fn run_admin(handle: ClusterServerHandle, from: NodeId, request: ClusterAdminRequest) {
    let result = match &request.command {
        AdminCommand::AddNode => match handle.add_node().await {
            Ok(id) => Ok(handle.with_cluster(|c| c.added_node_map(id))),
            Err(e) => Err(e.to_string()),
        },
        _ => handle.with_cluster(|c| c.run_admin(&request)),
    };
    handle.with_cluster(|c| c.answer_admin(from, &request, result));
}

/// One connection's task.
async fn serve(shared: Arc<Shared>, key: Key, stream: TcpStream, tls: Option<Session>) {
    let mut served = Served {
        shared: &shared,
        key,
        stream: stream.clone(),
        tls,
        raw: BytesMut::new(),
        handshake_deadline: Instant::now() + TLS_ACCEPT_TIMEOUT,
        rx: BytesMut::new(),
        rx_stalled: false,
        tx: BytesMut::new(),
        timer: Timer::never(),
        timer_at: None,
    };
    future::poll_fn(|cx| served.poll(cx)).await;
    let _ = stream.shutdown(Shutdown::Both);
    {
        let mut state = shared.lock();
        if let Some(n) = state.cluster.node_mut(key.0) {
            n.remove(key.1);
        }
        state.conns.remove(&key);
        state.dispatch_wakeups();
    }
    shared.task_done();
}

/// The state of one connection's loop.
struct Served<'a> {
    shared: &'a Arc<Shared>,
    key: Key,
    stream: TcpStream,
    /// The TLS session, on a TLS cluster.
    tls: Option<Session>,
    /// Bytes read and not decrypted yet (TLS only).
    raw: BytesMut,
    /// A TLS client must finish its handshake by then.
    handshake_deadline: Instant,
    /// Received bytes not taken by the node yet (plaintext).
    rx: BytesMut,
    /// `rx` was not empty after the last feed: nothing more is read until
    /// a feed after the next drain makes no progress.
    rx_stalled: bool,
    /// Bytes taken from the node, not written yet.
    tx: BytesMut,
    timer: Timer,
    timer_at: Option<Instant>,
}

impl Served<'_> {
    /// Runs until the connection ends.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (node, id) = self.key;
        loop {
            let now = Instant::now();
            let mut state = self.shared.lock();
            if state.shutdown {
                return Poll::Ready(());
            }
            let State { cluster, conns, .. } = &mut *state;
            let (Some(slot), Some(n)) = (conns.get_mut(&self.key), cluster.node_mut(node)) else {
                return Poll::Ready(());
            };
            slot.woken = false;
            if slot.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
            if n.poll_timeout(id).is_some_and(|at| at <= now) {
                n.handle_timeout(id, now);
            }
            let mut progress = false;
            if self.tx.is_empty() {
                n.poll_transmit(id, &mut self.tx, WRITE_CHUNK);
                if let Some(session) = &mut self.tls {
                    // The node's output encrypted, after the handshake's
                    // records.
                    if session.seal(&mut self.tx).is_err() {
                        return Poll::Ready(());
                    }
                }
                if self.rx_stalled {
                    let before = self.rx.len();
                    let _ = n.handle_input(id, &mut self.rx, now);
                    if self.rx.is_empty() || self.rx.len() == before {
                        self.rx_stalled = false;
                    }
                    progress = true;
                }
            }
            let handshaking = self.tls.as_ref().is_some_and(Session::is_handshaking);
            if handshaking && self.handshake_deadline <= now {
                return Poll::Ready(());
            }
            let closed = n.is_closed(id);
            let deadline = match n.poll_timeout(id) {
                Some(at) if handshaking => Some(at.min(self.handshake_deadline)),
                None if handshaking => Some(self.handshake_deadline),
                other => other,
            };
            state.dispatch_wakeups();
            drop(state);

            while !self.tx.is_empty() {
                match Pin::new(&mut self.stream).poll_write(cx, &self.tx) {
                    Poll::Ready(Ok(n)) if n > 0 => {
                        self.tx.advance(n);
                        progress = true;
                    }
                    Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {}
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => break,
                }
            }
            if closed && self.tx.is_empty() {
                return Poll::Ready(());
            }
            if !self.rx_stalled {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(true)) => progress = true,
                    Poll::Ready(_) => return Poll::Ready(()),
                    Poll::Pending => {}
                }
            }
            if let Some(at) = deadline {
                if self.timer_at != Some(at) {
                    self.timer.set_at(at);
                    self.timer_at = Some(at);
                }
                if Pin::new(&mut self.timer).poll(cx).is_ready() {
                    self.timer_at = None;
                    progress = true;
                }
            }
            if !progress
                && !self
                    .shared
                    .lock()
                    .conns
                    .get(&self.key)
                    .is_some_and(|s| s.woken)
            {
                return Poll::Pending;
            }
        }
    }

    /// Reads once and feeds the node: `Ok(true)` after bytes, `Ok(false)`
    /// at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        let (node, id) = self.key;
        // Over TLS the bytes read are records, decrypted into `rx` below.
        let target = if self.tls.is_some() {
            &mut self.raw
        } else {
            &mut self.rx
        };
        let len = target.len();
        target.resize(len + READ_CHUNK, 0);
        let polled =
            Pin::new(&mut self.stream).poll_read(cx, target.get_mut(len..).unwrap_or_default());
        let n = match &polled {
            Poll::Ready(Ok(n)) => *n,
            _ => 0,
        };
        target.truncate(len + n);
        match polled {
            Poll::Ready(Ok(0)) => Poll::Ready(Ok(false)),
            Poll::Ready(Ok(_)) => {
                if let Some(session) = &mut self.tls {
                    // Not TLS, or TLS refused: the connection ends.
                    let peer_closed = match session.receive(&self.raw, &mut self.rx) {
                        Ok(closed) => closed,
                        Err(err) => return Poll::Ready(Err(err)),
                    };
                    self.raw.clear();
                    if peer_closed {
                        return Poll::Ready(Ok(false));
                    }
                }
                let mut state = self.shared.lock();
                if let Some(n) = state.cluster.node_mut(node) {
                    // An error closes the connection: the loop sends what
                    // is left and ends.
                    let _ = n.handle_input(id, &mut self.rx, Instant::now());
                }
                self.rx_stalled = !self.rx.is_empty();
                // Writes over the wire reach the replicas.
                let _ = state.cluster.replicate();
                let admin = state.cluster.take_admin_requests();
                state.dispatch_wakeups();
                drop(state);
                for (from, request) in admin {
                    let handle = ClusterServerHandle {
                        shared: Arc::clone(self.shared),
                    };
                    (self.shared.spawn)(Box::pin(run_admin(handle, from, request)));
                }
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}
