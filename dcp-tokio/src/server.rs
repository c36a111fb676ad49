//! [`Server`]: the core's data node ([`Node`]) served on a TCP listener.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use bytes::{BufMut, Bytes, BytesMut};
use dcp_proto::bucket::{Bucket, MutationInfo, WriteOptions};
use dcp_proto::msg::{FailoverEntry, VbucketState};
use dcp_proto::producer::{ConnectionId, Node, NodeConfig};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, ToSocketAddrs};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::Error;
use crate::connection::now;

/// Bytes asked of a client socket per read.
const READ_SIZE: usize = 64 * 1024;

/// Bytes of output the node produces per turn of a connection's loop.
const WRITE_CHUNK: usize = 256 * 1024;

/// The node and who to wake when it has news for a connection.
struct State {
    node: Node,
    wakers: HashMap<ConnectionId, Arc<Notify>>,
}

impl State {
    /// Wakes the tasks of the connections the node says may have new
    /// output (`except`: the caller, which looks anyway).
    fn wake(&mut self, except: Option<ConnectionId>) {
        for id in self.node.take_wakeups() {
            if Some(id) != except
                && let Some(notify) = self.wakers.get(&id)
            {
                notify.notify_one();
            }
        }
    }
}

struct Shared {
    state: Mutex<State>,
    shutdown: watch::Sender<bool>,
    local_addr: SocketAddr,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the node half
        // changed in a way later calls trip over; keep serving.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves a [`Node`] (an in-memory bucket behind a faithful data node) on
/// a TCP listener, to any number of connections at once.
///
/// One task per connection moves bytes between its socket and the node;
/// the node sits behind a mutex that is never held across an `.await`.
/// After every node call, the connections the node names in
/// `take_wakeups()` are woken, so writes made by one client (or through a
/// [`ServerHandle`]) reach every stream at once.
///
/// ```
/// use dcp_tokio::{Connection, Server};
/// use dcp_tokio::dcp_proto::auth::Credentials;
/// use dcp_tokio::dcp_proto::consumer::{ConsumerConfig, Event, StreamStart};
/// use dcp_tokio::dcp_proto::producer::NodeConfig;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let config = NodeConfig::new("default").with_vbuckets(4).with_user("app", "secret");
/// let server = Server::bind("127.0.0.1:0", config).await?;
/// let handle = server.handle();
/// let task = tokio::spawn(server.run());
/// let written = handle.set(b"greeting", "hello")?;
///
/// let config = ConsumerConfig::new("doc:1", "default")
///     .with_credentials(Credentials::new("app", "secret"))
///     .with_auto_ack(true);
/// let mut conn = Connection::connect(handle.local_addr(), config).await?;
/// conn.open_stream(written.vbucket, StreamStart::Beginning, Some(written.seqno))?;
/// while let Some(event) = conn.next_event().await? {
///     match event {
///         Event::Mutation(m, _) => assert_eq!(&m.value[..], b"hello"),
///         Event::StreamEnded { .. } => break,
///         _ => {}
///     }
/// }
/// handle.shutdown();
/// task.await??;
/// # Ok(())
/// # }
/// ```
pub struct Server {
    listener: TcpListener,
    shared: Arc<Shared>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Binds `addr` and builds the node from `config`, its wall clock
    /// starting at the real time (CAS values, TTLs and delete times look
    /// like a live server's).
    pub async fn bind<A: ToSocketAddrs>(addr: A, config: NodeConfig) -> io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let config = config.with_wall_clock_base(SystemTime::now());
        let mut node = Node::new(config);
        node.wall_clock(now());
        Server::from_node(listener, node)
    }

    /// Serves an existing node (as configured, e.g. with a fixed wall
    /// clock and pre-written documents) on a bound listener.
    pub fn from_node(listener: TcpListener, node: Node) -> io::Result<Server> {
        let local_addr = listener.local_addr()?;
        let (shutdown, _) = watch::channel(false);
        Ok(Server {
            listener,
            #[cfg(feature = "tls")]
            tls: None,
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    node,
                    wakers: HashMap::new(),
                }),
                shutdown,
                local_addr,
            }),
        })
    }

    /// Serves TLS only, with `config` (its certificate chain and key; see
    /// [`tls::server_config_from_pem`](crate::tls::server_config_from_pem)).
    /// A client that does not complete the TLS handshake within
    /// [`TLS_ACCEPT_TIMEOUT`] is dropped.
    #[cfg(feature = "tls")]
    pub fn with_tls(mut self, config: Arc<rustls::ServerConfig>) -> Server {
        self.tls = Some(tokio_rustls::TlsAcceptor::from(config));
        self
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// A handle to write documents, inject faults and shut down.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Accepts and serves connections until [`ServerHandle::shutdown`];
    /// then closes every connection and returns once their tasks ended.
    pub async fn run(self) -> io::Result<()> {
        let mut shutdown = self.shared.shutdown.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            if *shutdown.borrow_and_update() {
                break;
            }
            tokio::select! {
                _ = shutdown.changed() => {}
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, _)) => {
                        let shared = Arc::clone(&self.shared);
                        #[cfg(feature = "tls")]
                        if let Some(acceptor) = &self.tls {
                            tasks.spawn(serve_tls(socket, acceptor.clone(), shared));
                            continue;
                        }
                        tasks.spawn(serve(socket, shared));
                    }
                    Err(err) if is_per_connection(&err) => {}
                    Err(_) => {
                        // Out of file descriptors or the like: give the
                        // connections a moment to finish.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        drop(self.listener);
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

/// Accept errors that concern one connection only.
fn is_per_connection(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// How long a TLS server waits for a client's TLS handshake.
#[cfg(feature = "tls")]
pub const TLS_ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server side of the TLS handshake on an accepted socket, then
/// serves it. A failed or slow handshake drops the socket.
#[cfg(feature = "tls")]
async fn serve_tls(socket: TcpStream, acceptor: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    let mut shutdown = shared.shutdown.subscribe();
    let accepted = tokio::select! {
        _ = shutdown.wait_for(|down| *down) => return,
        accepted = tokio::time::timeout(TLS_ACCEPT_TIMEOUT, acceptor.accept(socket)) => accepted,
    };
    if let Ok(Ok(stream)) = accepted {
        serve_stream(stream, shared, true).await;
    }
}

/// Serves one accepted socket until it or the node closes it, or the
/// server shuts down.
async fn serve(socket: TcpStream, shared: Arc<Shared>) {
    let _ = socket.set_nodelay(true);
    serve_stream(socket, shared, false).await;
}

/// Serves one connected stream (plain or TLS). `tls`: writes may leave
/// records to flush.
async fn serve_stream<S>(mut socket: S, shared: Arc<Shared>, tls: bool)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut shutdown = shared.shutdown.subscribe();
    let notify = Arc::new(Notify::new());
    let (id, rx_cap) = {
        let mut state = shared.lock();
        let id = state.node.accept(now());
        state.wakers.insert(id, Arc::clone(&notify));
        (id, state.node.config().max_frame_len + READ_SIZE)
    };
    let (mut reader, mut writer) = tokio::io::split(&mut socket);
    let mut rx = BytesMut::with_capacity(READ_SIZE);
    let mut tx = BytesMut::new();
    // A TLS write may have left records unsent: flush before idling.
    let mut needs_flush = false;
    // Output was drained since the last input: requests the node left in
    // `rx` (while its responses were piling up) may go on.
    let mut drained = false;
    loop {
        if *shutdown.borrow_and_update() {
            break;
        }
        let (closed, deadline) = {
            let mut state = shared.lock();
            if tx.is_empty() {
                let produced = state.node.poll_transmit(id, &mut tx, WRITE_CHUNK);
                drained |= produced > 0;
                if drained && !rx.is_empty() {
                    drained = false;
                    let _ = state.node.handle_input(id, &mut rx, now());
                }
            }
            state.wake(Some(id));
            (state.node.is_closed(id), state.node.poll_timeout(id))
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
        match wake {
            Wake::Read => {
                let mut state = shared.lock();
                drained = false;
                // An error closes the connection in the node; the next
                // turn writes what it still has and ends.
                let _ = state.node.handle_input(id, &mut rx, now());
                state.wake(Some(id));
            }
            Wake::Timer => {
                let mut state = shared.lock();
                state.node.handle_timeout(id, now());
                state.wake(Some(id));
            }
            Wake::Written | Wake::Notified => {}
        }
    }
    {
        let mut state = shared.lock();
        state.node.remove(id);
        state.wakers.remove(&id);
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

/// A cloneable handle to a [`Server`]: write documents, inject faults,
/// look at the node, shut down. Every call wakes the connections it
/// concerns.
#[derive(Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("local_addr", &self.shared.local_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Runs `f` on the node under its lock, then wakes the connections
    /// that may have new output. Keep `f` short: every connection waits
    /// for it.
    pub fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut state = self.shared.lock();
        let result = f(&mut state.node);
        state.wake(None);
        result
    }

    /// Runs `f` on the bucket with the node's wall-clock time (for writes),
    /// then wakes the streams it touched.
    pub fn with_bucket<R>(&self, f: impl FnOnce(&mut Bucket, SystemTime) -> R) -> R {
        self.with_node(|node| {
            let wall = node.wall_clock(now());
            f(node.bucket_mut(), wall)
        })
    }

    /// Stores a document (SET).
    pub fn set(&self, key: &[u8], value: impl Into<Bytes>) -> Result<MutationInfo, Error> {
        self.set_with(key, value, WriteOptions::new())
    }

    /// Stores a document with options (CAS, flags, expiry, datatype).
    pub fn set_with(
        &self,
        key: &[u8],
        value: impl Into<Bytes>,
        options: WriteOptions,
    ) -> Result<MutationInfo, Error> {
        let value = value.into();
        Ok(self.with_bucket(|bucket, wall| bucket.set(key, value, options, wall))?)
    }

    /// Deletes a document.
    pub fn delete(&self, key: &[u8]) -> Result<MutationInfo, Error> {
        Ok(self.with_bucket(|bucket, wall| bucket.delete(key, 0, wall))?)
    }

    /// Fails vbucket `vb` over, losing its last `lose_last` seqnos; the
    /// connections streaming it are dropped.
    pub fn failover(&self, vb: u16, lose_last: u64) -> Result<FailoverEntry, Error> {
        Ok(self.with_node(|node| node.failover(vb, lose_last))?)
    }

    /// Purges vbucket `vb`'s tombstones up to `up_to`; returns the purge
    /// seqno.
    pub fn purge(&self, vb: u16, up_to: u64) -> Result<u64, Error> {
        Ok(self.with_node(|node| node.purge(vb, up_to))?)
    }

    /// Changes a vbucket's state; its streams end with StateChanged.
    pub fn set_vbucket_state(&self, vb: u16, state: VbucketState) -> Result<(), Error> {
        Ok(self.with_node(|node| node.set_vbucket_state(vb, state))?)
    }

    /// Stalls (or resumes) the stream messages of the DCP connection
    /// `name`; noops and responses still flow.
    pub fn stall(&self, name: &str, on: bool) -> Result<(), Error> {
        self.by_name(name, |node, id| node.stall(id, on))
    }

    /// Freezes (or thaws) the DCP connection `name`: nothing at all is
    /// sent, as from a hung node whose socket stays open.
    pub fn freeze(&self, name: &str, on: bool) -> Result<(), Error> {
        self.by_name(name, |node, id| node.freeze(id, on))
    }

    /// Drops the DCP connection `name` as a network failure would.
    pub fn drop_connection(&self, name: &str) -> Result<(), Error> {
        self.by_name(name, |node, id| node.drop_connection(id))
    }

    /// The open connections, with their DCP names once opened.
    pub fn connections(&self) -> Vec<(ConnectionId, Option<String>)> {
        self.with_node(|node| {
            let ids: Vec<ConnectionId> = node.connections().collect();
            ids.into_iter()
                .filter(|id| !node.is_closed(*id))
                .map(|id| (id, node.dcp_name(id).map(str::to_owned)))
                .collect()
        })
    }

    fn by_name(
        &self,
        name: &str,
        f: impl FnOnce(&mut Node, ConnectionId) -> Result<(), dcp_proto::producer::ProducerError>,
    ) -> Result<(), Error> {
        self.with_node(|node| {
            let ids: Vec<ConnectionId> = node.connections().collect();
            let id = ids
                .into_iter()
                .find(|id| !node.is_closed(*id) && node.dcp_name(*id) == Some(name))
                .ok_or_else(|| Error::NoSuchConnection(name.to_owned()))?;
            Ok(f(node, id)?)
        })
    }

    /// Stops accepting, closes every connection; [`Server::run`] returns
    /// once their tasks ended.
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shut_down(&self) -> bool {
        *self.shared.shutdown.borrow()
    }
}
