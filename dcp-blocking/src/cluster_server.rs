//! [`ClusterServer`]: the core's [`LocalCluster`] served on consecutive
//! ports, one listener (and accept thread) per node.
//!
//! Threads as in [`Server`](crate::Server): each accepted socket gets a
//! reader that feeds received bytes to its node and a writer that owns
//! everything else for the connection. The cluster sits behind one mutex;
//! every thread that changes it hands each node's
//! [`take_wakeups`](dcp_proto::producer::Node::take_wakeups) to the
//! writers concerned through their condition variables.
//!
//! With TLS ([`ClusterServer::with_tls`]) each connection's TLS session
//! sits in its slot under the same mutex, as in [`Server`](crate::Server):
//! the reader decrypts, the writer encrypts, neither blocks the other.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use dcp_proto::bucket::MutationInfo;
use dcp_proto::msg::FailoverEntry;
use dcp_proto::producer::{
    AdminCommand, ClusterAdminRequest, ConnectionId, LocalCluster, NodeConfig, NodeId,
};

use crate::Error;
use crate::server_tls::{self, Session, TLS_ACCEPT_TIMEOUT};

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
}

struct State {
    cluster: LocalCluster,
    /// Reserved listeners for the next added nodes, in port order.
    spare: Vec<TcpListener>,
    conns: HashMap<Key, Slot>,
    workers: Vec<JoinHandle<()>>,
    /// The accept threads and the address that wakes each.
    acceptors: Vec<(SocketAddr, JoinHandle<()>)>,
    shutdown: bool,
    /// Connections accepted from now on speak TLS with this.
    tls: Option<server_tls::Config>,
}

/// What the threads of one connection share.
struct Slot {
    wake: Arc<Condvar>,
    woken: bool,
    reader_wake: Arc<Condvar>,
    rx: BytesMut,
    /// `rx` was not empty after the last feed: the writer feeds it again
    /// after each drain; the reader waits meanwhile.
    rx_stalled: bool,
    /// Set by the reader when its side ended.
    reader_end: bool,
    /// The TLS session, on a TLS cluster.
    tls: Option<Session>,
    socket: TcpStream,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Wakes the writers of the connections any node says may have output.
    fn dispatch_wakeups(&mut self) {
        let ids: Vec<NodeId> = self.cluster.node_ids().collect();
        for node in ids {
            let Some(n) = self.cluster.node_mut(node) else {
                continue;
            };
            for id in n.take_wakeups() {
                if let Some(slot) = self.conns.get_mut(&(node, id)) {
                    slot.woken = true;
                    slot.wake.notify_one();
                }
            }
        }
    }

    fn wake(&mut self, key: Key) {
        if let Some(slot) = self.conns.get_mut(&key) {
            slot.woken = true;
            slot.wake.notify_one();
        }
    }
}

/// Serves a [`LocalCluster`] (N data nodes sharing one bucket, vbucket map
/// and config) on N consecutive ports of one host, on threads. Topology
/// changes and writes go through the [`ClusterServerHandle`]; a
/// failed-over node refuses new connections. Dropping the server shuts it
/// down, like [`shutdown`](Self::shutdown).
///
/// ```
/// use dcp_blocking::ClusterServer;
/// use dcp_proto::producer::NodeConfig;
///
/// let config = NodeConfig::new("default").with_vbuckets(8).with_user("app", "secret");
/// let server = ClusterServer::bind("127.0.0.1:0".parse()?, 3, 1, config)?;
/// let handle = server.handle();
/// assert_eq!(handle.node_addrs().len(), 3);
/// assert!(handle.connection_string().starts_with("couchbase://127.0.0.1:"));
/// handle.set(b"k", "v")?;
/// server.shutdown();
/// # Ok::<(), Box<dyn std::error::Error>>(())
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
    /// Binds `nodes` consecutive ports from `addr` (port 0: any free run of
    /// ports), builds the cluster (`nodes` nodes shaped by `config`, its
    /// host and ports replaced by the listeners', `replicas` replicas per
    /// vbucket, synchronous replication, wall clocks at the real time) and
    /// serves it on threads.
    pub fn bind(
        addr: SocketAddr,
        nodes: usize,
        replicas: usize,
        config: NodeConfig,
    ) -> Result<ClusterServer, Error> {
        let nodes = nodes.max(1);
        let mut listeners = bind_consecutive(addr, nodes + SPARE_PORTS)?;
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
                workers: Vec::new(),
                acceptors: Vec::new(),
                shutdown: false,
                tls: None,
                spare,
            }),
            host: if addr.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                addr.ip()
            },
            listen_ip: addr.ip(),
        });
        let handle = ClusterServerHandle { shared };
        let server = ClusterServer {
            handle: handle.clone(),
        };
        for (id, listener) in ids.into_iter().zip(listeners) {
            handle.serve_node(id, listener)?;
        }
        Ok(server)
    }

    /// The nodes' addresses, in node order.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.handle.node_addrs()
    }

    /// Serves TLS only on every node's port (nodes added later too), with
    /// `config` (see
    /// [`tls::server_config_from_pem`](crate::tls::server_config_from_pem)),
    /// to every connection accepted from now on: call it right after
    /// [`bind`](Self::bind). A client that does not complete the TLS
    /// handshake within [`TLS_ACCEPT_TIMEOUT`](crate::TLS_ACCEPT_TIMEOUT)
    /// is dropped. The bucket config lists every node's port as its
    /// `kvSSL` port too, so a
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

    /// A handle for other threads.
    pub fn handle(&self) -> ClusterServerHandle {
        self.handle.clone()
    }

    /// Stops accepting, closes every connection and waits for their
    /// threads.
    pub fn shutdown(self) {
        // `Drop` does it.
    }
}

impl Drop for ClusterServer {
    fn drop(&mut self) {
        self.handle.stop();
    }
}

/// Binds `n` listeners on consecutive ports.
fn bind_consecutive(addr: SocketAddr, n: usize) -> io::Result<Vec<TcpListener>> {
    let mut last_err = None;
    for _ in 0..BIND_ATTEMPTS {
        let first = TcpListener::bind(addr)?;
        let base = first.local_addr()?.port();
        let mut listeners = vec![first];
        for i in 1..n {
            let port = u16::try_from(i)
                .ok()
                .and_then(|i| base.checked_add(i))
                .ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "port range"))?;
            match TcpListener::bind(SocketAddr::new(addr.ip(), port)) {
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
    pub fn add_node(&self) -> Result<NodeId, Error> {
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
            None => TcpListener::bind(SocketAddr::new(self.shared.listen_ip, port))?,
        };
        let id = self.with_cluster(|c| {
            let id = c.add_node()?;
            if let Some(node) = c.node_mut(id) {
                node.wall_clock(Instant::now());
            }
            Ok::<_, Error>(id)
        })?;
        self.serve_node(id, listener)?;
        Ok(id)
    }

    /// Starts the accept thread of node `id`.
    fn serve_node(&self, id: NodeId, listener: TcpListener) -> Result<(), Error> {
        let mut wake = listener.local_addr()?;
        if wake.ip().is_unspecified() {
            wake.set_ip(self.shared.host);
        }
        let shared = Arc::clone(&self.shared);
        let thread = thread::Builder::new()
            .name(format!("dcp-accept-{}", id.0))
            .spawn(move || accept_loop(id, &listener, &shared))?;
        self.shared.lock().acceptors.push((wake, thread));
        Ok(())
    }

    /// Stops accepting, closes every connection, joins every thread.
    fn stop(&self) {
        let (acceptors, workers) = {
            let mut state = self.shared.lock();
            state.shutdown = true;
            for slot in state.conns.values() {
                slot.wake.notify_one();
                slot.reader_wake.notify_one();
                let _ = slot.socket.shutdown(Shutdown::Both);
            }
            (
                std::mem::take(&mut state.acceptors),
                std::mem::take(&mut state.workers),
            )
        };
        for (wake, acceptor) in acceptors {
            // The accept thread notices the flag after one more accept.
            if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                let _ = acceptor.join();
            }
        }
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn accept_loop(node: NodeId, listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        let mut state = shared.lock();
        if state.shutdown {
            return;
        }
        // A node that is down: the socket closes at once. Failed accepts
        // only lose that client.
        if let Ok(stream) = incoming
            && state.cluster.is_running(node)
        {
            let _ = start_connection(shared, &mut state, node, stream);
        }
    }
}

/// Registers an accepted socket with its node and starts its threads.
fn start_connection(
    shared: &Arc<Shared>,
    state: &mut State,
    node: NodeId,
    stream: TcpStream,
) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let reader = stream.try_clone()?;
    let control = stream.try_clone()?;
    let tls = state.tls.as_ref().map(Session::new).transpose()?;
    let Some(n) = state.cluster.node_mut(node) else {
        return Ok(());
    };
    let key = (node, n.accept(Instant::now()));
    state.conns.insert(
        key,
        Slot {
            wake: Arc::new(Condvar::new()),
            woken: false,
            reader_wake: Arc::new(Condvar::new()),
            rx: BytesMut::new(),
            rx_stalled: false,
            reader_end: false,
            tls,
            socket: control,
        },
    );
    let spawned = {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("dcp-read-{}-{}", node.0, key.1.0))
            .spawn(move || read_loop(&shared, key, reader))
    }
    .and_then(|reader| {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("dcp-write-{}-{}", node.0, key.1.0))
            .spawn(move || write_loop(&shared, key, stream, reader))
    });
    match spawned {
        Ok(worker) => {
            state.workers.retain(|w| !w.is_finished());
            state.workers.push(worker);
            Ok(())
        }
        Err(err) => {
            if let Some(slot) = state.conns.remove(&key) {
                let _ = slot.socket.shutdown(Shutdown::Both);
            }
            if let Some(n) = state.cluster.node_mut(node) {
                n.remove(key.1);
            }
            Err(err)
        }
    }
}

/// Feeds what the client sends to its node.
/// Carries out one cluster admin command (`dcp admin`: rebalance,
/// failover, add or remove a node, map) and answers it on the connection
/// it came from. Adding a node needs a listener, so it runs here rather
/// than in the core.
fn run_admin(handle: &ClusterServerHandle, from: NodeId, request: &ClusterAdminRequest) {
    let result = match &request.command {
        AdminCommand::AddNode => match handle.add_node() {
            Ok(id) => Ok(handle.with_cluster(|c| c.added_node_map(id))),
            Err(e) => Err(e.to_string()),
        },
        _ => handle.with_cluster(|c| c.run_admin(request)),
    };
    handle.with_cluster(|c| c.answer_admin(from, request, result));
}

fn read_loop(shared: &Arc<Shared>, key: Key, mut socket: TcpStream) {
    let (node, id) = key;
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        match socket.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let mut state = shared.lock();
                let State { cluster, conns, .. } = &mut *state;
                let (Some(slot), Some(n_ref)) = (conns.get_mut(&key), cluster.node_mut(node))
                else {
                    return;
                };
                let raw = buf.get(..n).unwrap_or_default();
                let peer_closed = match &mut slot.tls {
                    None => {
                        slot.rx.extend_from_slice(raw);
                        false
                    }
                    // Decrypted into `rx`; handshake records for the
                    // writer to send wait in the session (woken below).
                    // An error (not TLS, or TLS refused) ends it too.
                    Some(session) => session.receive(raw, &mut slot.rx).unwrap_or(true),
                };
                if peer_closed {
                    slot.reader_end = true;
                    state.wake(key);
                    return;
                }
                let fed = n_ref.handle_input(id, &mut slot.rx, Instant::now());
                slot.rx_stalled = !slot.rx.is_empty();
                let reader_wake = Arc::clone(&slot.reader_wake);
                // Writes over the wire reach the replicas.
                let _ = cluster.replicate();
                let admin = cluster.take_admin_requests();
                state.wake(key);
                state.dispatch_wakeups();
                if !admin.is_empty() {
                    drop(state);
                    let handle = ClusterServerHandle {
                        shared: Arc::clone(shared),
                    };
                    for (from, request) in admin {
                        run_admin(&handle, from, &request);
                    }
                    state = shared.lock();
                }
                if fed.is_err() {
                    return;
                }
                while !state.shutdown && state.conns.get(&key).is_some_and(|slot| slot.rx_stalled) {
                    state = reader_wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    let mut state = shared.lock();
    if let Some(slot) = state.conns.get_mut(&key) {
        slot.reader_end = true;
    }
    state.wake(key);
}

/// Owns one connection: writes what its node has for it, runs its timers,
/// then closes the socket and forgets the connection.
fn write_loop(shared: &Shared, key: Key, mut socket: TcpStream, reader: JoinHandle<()>) {
    serve(shared, key, &mut socket);
    if let Some(slot) = shared.lock().conns.get_mut(&key) {
        slot.rx_stalled = false;
        slot.reader_wake.notify_one();
    }
    let _ = socket.shutdown(Shutdown::Both);
    let _ = reader.join();
    let mut state = shared.lock();
    if let Some(n) = state.cluster.node_mut(key.0) {
        n.remove(key.1);
    }
    state.conns.remove(&key);
    state.dispatch_wakeups();
}

fn serve(shared: &Shared, key: Key, socket: &mut TcpStream) {
    let (node, id) = key;
    let mut tx = BytesMut::new();
    // A TLS client must finish its handshake by then.
    let handshake_deadline = Instant::now() + TLS_ACCEPT_TIMEOUT;
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return;
        }
        let now = Instant::now();
        let State { cluster, conns, .. } = &mut *state;
        let (Some(slot), Some(n)) = (conns.get_mut(&key), cluster.node_mut(node)) else {
            return;
        };
        slot.woken = false;
        if slot.reader_end {
            return;
        }
        if n.poll_timeout(id).is_some_and(|at| at <= now) {
            n.handle_timeout(id, now);
        }
        tx.clear();
        n.poll_transmit(id, &mut tx, WRITE_CHUNK);
        let mut handshaking = false;
        if let Some(session) = &mut slot.tls {
            // The node's output encrypted, after the handshake's records.
            if session.seal(&mut tx).is_err() {
                return;
            }
            handshaking = session.is_handshaking();
            if handshaking && handshake_deadline <= now {
                return;
            }
        }
        if slot.rx_stalled {
            let before = slot.rx.len();
            let _ = n.handle_input(id, &mut slot.rx, now);
            if slot.rx.is_empty() || slot.rx.len() == before {
                slot.rx_stalled = false;
                slot.reader_wake.notify_one();
            } else {
                slot.woken = true;
            }
        }
        let closed = n.is_closed(id);
        let deadline = match n.poll_timeout(id) {
            Some(at) if handshaking => Some(at.min(handshake_deadline)),
            None if handshaking => Some(handshake_deadline),
            other => other,
        };
        let woken = slot.woken;
        let wake = Arc::clone(&slot.wake);
        state.dispatch_wakeups();
        if !tx.is_empty() {
            drop(state);
            if write_out(shared, key, socket, &mut tx).is_err() {
                return;
            }
            state = shared.lock();
            continue;
        }
        if closed {
            return;
        }
        if woken {
            continue;
        }
        state = match deadline {
            Some(at) => {
                wake.wait_timeout(state, at.saturating_duration_since(now))
                    .unwrap_or_else(PoisonError::into_inner)
                    .0
            }
            None => wake.wait(state).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

/// Writes `tx` out, running the connection's timers while the client does
/// not read.
fn write_out(
    shared: &Shared,
    key: Key,
    socket: &mut TcpStream,
    tx: &mut BytesMut,
) -> io::Result<()> {
    let (node, id) = key;
    while !tx.is_empty() {
        let deadline = shared
            .lock()
            .cluster
            .node(node)
            .and_then(|n| n.poll_timeout(id));
        let timeout = deadline.map(|at| {
            at.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        });
        socket.set_write_timeout(timeout)?;
        match socket.write(tx) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => tx.advance(n),
            Err(err)
                if matches!(
                    err.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                let mut state = shared.lock();
                if state.shutdown {
                    return Ok(());
                }
                let now = Instant::now();
                let Some(n) = state.cluster.node_mut(node) else {
                    return Ok(());
                };
                if n.poll_timeout(id).is_some_and(|at| at <= now) {
                    n.handle_timeout(id, now);
                }
                let closed = n.is_closed(id);
                state.dispatch_wakeups();
                if closed {
                    return Ok(());
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
