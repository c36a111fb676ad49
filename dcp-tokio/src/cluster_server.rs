//! [`ClusterServer`]: the core's [`LocalCluster`] served on consecutive
//! ports, one listener per node.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use dcp_proto::bucket::MutationInfo;
use dcp_proto::msg::FailoverEntry;
use dcp_proto::producer::{
    AdminCommand, ClusterAdminRequest, ConnectionId, LocalCluster, NodeConfig, NodeId,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc, watch};
use tokio::task::JoinSet;

use crate::Error;
use crate::connection::now;

/// Bytes asked of a client socket per read.
const READ_SIZE: usize = 64 * 1024;

/// Bytes of output a node produces per turn of a connection's loop.
const WRITE_CHUNK: usize = 256 * 1024;

/// Ports reserved after the nodes' for nodes added later.
const SPARE_PORTS: usize = 2;

/// Attempts at finding `n` free consecutive ports.
const BIND_ATTEMPTS: usize = 20;

/// The cluster and who to wake when a node has news for a connection.
struct State {
    cluster: LocalCluster,
    wakers: HashMap<(NodeId, ConnectionId), Arc<Notify>>,
}

impl State {
    /// Wakes the tasks of every connection some node says may have new
    /// output (`except`: the caller, which looks anyway).
    fn wake(&mut self, except: Option<(NodeId, ConnectionId)>) {
        let ids: Vec<NodeId> = self.cluster.node_ids().collect();
        for node in ids {
            let Some(n) = self.cluster.node_mut(node) else {
                continue;
            };
            for id in n.take_wakeups() {
                if Some((node, id)) != except
                    && let Some(notify) = self.wakers.get(&(node, id))
                {
                    notify.notify_one();
                }
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
    /// The host of the nodes' addresses (loopback for a wildcard listener).
    host: std::net::IpAddr,
    /// The address listeners bind.
    listen_ip: std::net::IpAddr,
    /// Listeners of nodes added later, for `run` to serve.
    added: mpsc::UnboundedSender<(NodeId, TcpListener)>,
    /// Cluster admin commands received by any node, for `run` to carry out.
    admin: mpsc::UnboundedSender<(NodeId, ClusterAdminRequest)>,
    /// Ports after the nodes', bound at start (not served) so that
    /// `add_node` finds them free: otherwise a client socket's ephemeral
    /// port may take the next port meanwhile.
    spare: Mutex<Vec<TcpListener>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves a [`LocalCluster`] (N data nodes sharing one bucket, vbucket map
/// and config) on N consecutive ports of one host, one listener per node.
///
/// As [`Server`](crate::Server) does for one node: one task per
/// connection, the cluster behind a mutex never held across an `.await`,
/// and after every call the connections any node names in
/// `take_wakeups()` are woken. Topology changes go through the
/// [`ClusterServerHandle`]; a failed-over node refuses new connections.
///
/// ```
/// use dcp_tokio::ClusterServer;
/// use dcp_tokio::dcp_proto::producer::NodeConfig;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = NodeConfig::new("default").with_vbuckets(8).with_user("app", "secret");
/// let server = ClusterServer::bind("127.0.0.1:0".parse()?, 3, 1, config).await?;
/// let handle = server.handle();
/// let task = tokio::spawn(server.run());
/// assert_eq!(handle.node_addrs().len(), 3);
/// assert!(handle.connection_string().starts_with("couchbase://127.0.0.1:"));
/// handle.set(b"k", "v")?;
/// handle.shutdown();
/// task.await??;
/// # Ok(())
/// # }
/// ```
pub struct ClusterServer {
    listeners: Vec<(NodeId, TcpListener)>,
    added: mpsc::UnboundedReceiver<(NodeId, TcpListener)>,
    admin: mpsc::UnboundedReceiver<(NodeId, ClusterAdminRequest)>,
    shared: Arc<Shared>,
    tls: Acceptor,
}

/// The TLS acceptor of every node, if the cluster serves TLS.
#[cfg(feature = "tls")]
type Acceptor = Option<tokio_rustls::TlsAcceptor>;
/// No TLS without the `tls` feature.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone, Default)]
struct Acceptor {}

impl std::fmt::Debug for ClusterServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterServer")
            .field("nodes", &self.listeners.len())
            .finish_non_exhaustive()
    }
}

impl ClusterServer {
    /// Binds `nodes` consecutive ports from `addr` (port 0: any free run of
    /// ports) and builds the cluster: `nodes` nodes shaped by `config`
    /// (its host and ports replaced by the listeners'), `replicas` replicas
    /// per vbucket, synchronous replication, wall clocks at the real time.
    pub async fn bind(
        addr: SocketAddr,
        nodes: usize,
        replicas: usize,
        config: NodeConfig,
    ) -> io::Result<ClusterServer> {
        let nodes = nodes.max(1);
        let listeners = bind_consecutive(addr, nodes).await?;
        let base = listeners
            .first()
            .map(TcpListener::local_addr)
            .transpose()?
            .map_or(addr.port(), |a| a.port());
        // Best effort: a busy port here only means `add_node` binds later.
        let mut spare = Vec::new();
        for i in 0..SPARE_PORTS {
            let port = u16::try_from(nodes + i)
                .ok()
                .and_then(|k| base.checked_add(k));
            match port {
                Some(port) => match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
                    Ok(listener) => spare.push(listener),
                    Err(_) => break,
                },
                None => break,
            }
        }
        let mut config = config.with_wall_clock_base(SystemTime::now());
        // A wildcard listener advertises `$HOST`: clients put the address
        // they reached the seed at.
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
                node.wall_clock(now());
            }
        }
        let (shutdown, _) = watch::channel(false);
        let (added_tx, added) = mpsc::unbounded_channel();
        let (admin_tx, admin) = mpsc::unbounded_channel();
        Ok(ClusterServer {
            listeners: ids.into_iter().zip(listeners).collect(),
            added,
            admin,
            tls: Acceptor::default(),
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    cluster,
                    wakers: HashMap::new(),
                }),
                shutdown,
                host: if addr.ip().is_unspecified() {
                    std::net::IpAddr::from([127, 0, 0, 1])
                } else {
                    addr.ip()
                },
                listen_ip: addr.ip(),
                added: added_tx,
                admin: admin_tx,
                spare: Mutex::new(spare),
            }),
        })
    }

    /// The nodes' addresses, in node order.
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.handle().node_addrs()
    }

    /// Serves TLS only on every node's port (nodes added later too), with
    /// `config` (see
    /// [`tls::server_config_from_pem`](crate::tls::server_config_from_pem)).
    /// A client that does not complete the TLS handshake within
    /// [`TLS_ACCEPT_TIMEOUT`](crate::TLS_ACCEPT_TIMEOUT) is dropped. The
    /// bucket config lists every node's port as its `kvSSL` port too, so a
    /// [`ClusterConnection::connect_tls`](crate::ClusterConnection::connect_tls)
    /// (`couchbases://`) finds the nodes.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> ClusterServer {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self.shared.lock().cluster.set_kv_tls(true);
        self
    }

    /// A handle to write documents, change the topology and shut down.
    pub fn handle(&self) -> ClusterServerHandle {
        ClusterServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts and serves connections on every node until
    /// [`ClusterServerHandle::shutdown`]; then closes every connection and
    /// returns once their tasks ended.
    pub async fn run(mut self) -> io::Result<()> {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut tasks = JoinSet::new();
        for (id, listener) in self.listeners.drain(..) {
            tasks.spawn(accept_loop(
                id,
                listener,
                Arc::clone(&self.shared),
                self.tls.clone(),
            ));
        }
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                Some((id, listener)) = self.added.recv() => {
                    tasks.spawn(accept_loop(id, listener, Arc::clone(&self.shared), self.tls.clone()));
                }
                Some((from, request)) = self.admin.recv() => {
                    tasks.spawn(run_admin(self.handle(), from, request));
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
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

/// Accepts connections to one node until shutdown; serves each in a task.
async fn accept_loop(node: NodeId, listener: TcpListener, shared: Arc<Shared>, tls: Acceptor) {
    #[cfg(not(feature = "tls"))]
    let Acceptor {} = tls;
    let mut shutdown = shared.shutdown.subscribe();
    let mut tasks = JoinSet::new();
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        tokio::select! {
            _ = shutdown.changed() => {}
            accepted = listener.accept() => match accepted {
                Ok((socket, _)) => {
                    if shared.lock().cluster.is_running(node) {
                        #[cfg(feature = "tls")]
                        if let Some(acceptor) = &tls {
                            let accept = serve_tls(node, socket, acceptor.clone(), Arc::clone(&shared));
                            tasks.spawn(accept);
                            continue;
                        }
                        tasks.spawn(serve(node, socket, Arc::clone(&shared)));
                    }
                    // A node that is down: the socket closes at once.
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// Runs the server side of the TLS handshake on a socket accepted for
/// `node`, then serves it. A failed or slow handshake drops the socket.
#[cfg(feature = "tls")]
async fn serve_tls(
    node: NodeId,
    socket: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
) {
    let _ = socket.set_nodelay(true);
    let mut shutdown = shared.shutdown.subscribe();
    let accepted = tokio::select! {
        _ = shutdown.wait_for(|down| *down) => return,
        accepted = tokio::time::timeout(crate::TLS_ACCEPT_TIMEOUT, acceptor.accept(socket)) => accepted,
    };
    if let Ok(Ok(stream)) = accepted {
        serve_stream(node, stream, shared, true).await;
    }
}

/// Serves one accepted socket of `node` until it or the node closes it, or
/// the server shuts down.
async fn serve(node: NodeId, socket: TcpStream, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    serve_stream(node, socket, shared, false).await;
}

/// Serves one connected stream (plain or TLS) of `node`. `tls`: writes may
/// leave records to flush.
async fn serve_stream<S>(node: NodeId, mut socket: S, shared: Arc<Shared>, tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut shutdown = shared.shutdown.subscribe();
    let notify = Arc::new(Notify::new());
    let accepted = {
        let mut state = shared.lock();
        state.cluster.node_mut(node).map(|n| {
            let id = n.accept(now());
            (id, n.config().max_frame_len + READ_SIZE)
        })
    };
    let Some((id, rx_cap)) = accepted else {
        return;
    };
    shared.lock().wakers.insert((node, id), Arc::clone(&notify));
    let key = Some((node, id));
    let (mut reader, mut writer) = tokio::io::split(&mut socket);
    let mut rx = BytesMut::with_capacity(READ_SIZE);
    let mut tx = BytesMut::new();
    // A TLS write may have left records unsent: flush before idling.
    let mut needs_flush = false;
    let mut drained = false;
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let (closed, deadline) = {
            let mut state = shared.lock();
            let Some(n) = state.cluster.node_mut(node) else {
                break;
            };
            if tx.is_empty() {
                let produced = n.poll_transmit(id, &mut tx, WRITE_CHUNK);
                drained |= produced > 0;
                if drained && !rx.is_empty() {
                    drained = false;
                    let _ = n.handle_input(id, &mut rx, now());
                }
            }
            let result = (n.is_closed(id), n.poll_timeout(id));
            state.wake(key);
            result
        };
        if closed && tx.is_empty() {
            break;
        }
        let read_ok = !closed && rx.len() < rx_cap;
        let want_write = !tx.is_empty();
        let want_flush = needs_flush && !want_write;
        rx.reserve(READ_SIZE);
        let mut room = (&mut rx).limit(READ_SIZE);
        let sleep = deadline.map(|at| tokio::time::sleep_until(at.into()));
        let wake = tokio::select! {
            biased;
            _ = shutdown.changed() => break,
            written = async {
                if want_write {
                    writer.write_buf(&mut tx).await
                } else {
                    writer.flush().await.map(|()| 0)
                }
            }, if want_write || want_flush => match written {
                Ok(0) if want_write => break,
                Err(_) => break,
                Ok(_) => {
                    needs_flush = tls && want_write;
                    Wake::Written
                }
            },
            read = reader.read_buf(&mut room), if read_ok => match read {
                Ok(0) | Err(_) => break,
                Ok(_) => Wake::Read,
            },
            () = notify.notified() => Wake::Notified,
            () = async {
                match sleep {
                    Some(sleep) => sleep.await,
                    None => std::future::pending().await,
                }
            } => Wake::Timer,
        };
        let mut state = shared.lock();
        match wake {
            Wake::Read => {
                drained = false;
                if let Some(n) = state.cluster.node_mut(node) {
                    let _ = n.handle_input(id, &mut rx, now());
                }
                // Writes over the wire reach the replicas.
                let _ = state.cluster.replicate();
                for request in state.cluster.take_admin_requests() {
                    let _ = shared.admin.send(request);
                }
            }
            Wake::Timer => {
                if let Some(n) = state.cluster.node_mut(node) {
                    n.handle_timeout(id, now());
                }
            }
            Wake::Written | Wake::Notified => {}
        }
        state.wake(key);
    }
    {
        let mut state = shared.lock();
        if let Some(n) = state.cluster.node_mut(node) {
            n.remove(id);
        }
        state.wakers.remove(&(node, id));
        state.wake(None);
    }
    let _ = socket.shutdown().await;
}

/// What ended one wait of a connection task.
enum Wake {
    Read,
    Written,
    Notified,
    Timer,
}

/// A cloneable handle to a [`ClusterServer`]: write documents, change the
/// topology, shut down. Every call wakes the connections it concerns.
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
        state.wake(None);
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
        Ok(self.with_cluster(|c| c.set(key, value, now()))?)
    }

    /// Deletes a document.
    pub fn delete(&self, key: &[u8]) -> Result<MutationInfo, Error> {
        Ok(self.with_cluster(|c| c.delete(key, now()))?)
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
    /// ports reserved at bind time) and adds it to the config; move vbuckets
    /// onto it with a rebalance.
    pub async fn add_node(&self) -> Result<NodeId, Error> {
        let next = self.with_cluster(|c| {
            let count = c.node_ids().count();
            let base = c.node(NodeId(0)).map_or(0, |n| n.config().kv_port);
            u16::try_from(count).ok().and_then(|k| base.checked_add(k))
        });
        let port = next.ok_or_else(|| io::Error::new(io::ErrorKind::AddrNotAvailable, "port"))?;
        let reserved = {
            let mut spare = self
                .shared
                .spare
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let at = spare
                .iter()
                .position(|l| l.local_addr().is_ok_and(|a| a.port() == port));
            at.map(|at| spare.remove(at))
        };
        let listener = match reserved {
            Some(listener) => listener,
            None => TcpListener::bind(SocketAddr::new(self.shared.listen_ip, port)).await?,
        };
        let id = self.with_cluster(|c| {
            let id = c.add_node()?;
            if let Some(node) = c.node_mut(id) {
                node.wall_clock(now());
            }
            Ok::<_, Error>(id)
        })?;
        self.shared
            .added
            .send((id, listener))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "server stopped"))?;
        Ok(id)
    }

    /// Stops accepting, closes every connection; [`ClusterServer::run`]
    /// returns once their tasks ended.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }
}
