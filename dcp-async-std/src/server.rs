//! A server: one [`Node`] served on a listener to many connections, one
//! task per connection on an executor of the caller's choice.
//!
//! The node sits behind one (synchronous, never held across an await)
//! mutex. Each connection's task owns its socket and runs one loop: write
//! what the node has for it, read and feed what the client sends, run its
//! timers. Whoever changes the node hands the node's
//! [`take_wakeups`](Node::take_wakeups) to the tasks concerned through
//! their wakers.
//!
//! With TLS ([`Server::with_tls`]) each task also owns its connection's TLS
//! session: it decrypts what it reads before feeding the node and
//! encrypts the node's output (and the handshake's own records) before
//! writing it, on the same socket loop.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{Shutdown, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use async_io::Timer;
use async_net::{AsyncToSocketAddrs, TcpListener, TcpStream};
use bytes::{Buf, BytesMut};
use dcp_proto::producer::{CloseReason, ConnectionId, Node, NodeConfig};
use futures_io::{AsyncRead, AsyncWrite};
use futures_lite::future;

use crate::Error;
use crate::server_tls::{self, Session, TLS_ACCEPT_TIMEOUT};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes asked of the node per write.
const WRITE_CHUNK: usize = 64 * 1024;
/// Ended connections kept for [`ServerHandle::take_ended`].
const MAX_ENDED: usize = 1024;

/// A task the server asks its executor to run.
pub type Task = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Why a served connection ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndReason {
    /// The node closed it: unframeable input, a protocol rule broken,
    /// kicked by a newer connection of the same name, idle, fault
    /// injection, ...
    Node(CloseReason),
    /// The client closed its socket.
    PeerClosed,
    /// The socket failed.
    Io(io::Error),
    /// The server shut down.
    Shutdown,
}

/// A connection that ended, as reported by [`ServerHandle::take_ended`].
#[derive(Debug)]
#[non_exhaustive]
pub struct ConnectionEnd {
    /// The node's id of the connection.
    pub id: ConnectionId,
    /// The client's address.
    pub peer: SocketAddr,
    /// Why it ended.
    pub reason: EndReason,
}

/// A running server. Dropping it stops it without waiting; prefer
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    handle: ServerHandle,
}

/// A cheap, clonable handle to a running [`Server`]: reach its node to
/// write documents and inject faults, see its connections.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    local_addr: SocketAddr,
    spawn: Box<dyn Fn(Task) + Send + Sync>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

struct State {
    node: Node,
    conns: HashMap<ConnectionId, Slot>,
    ended: VecDeque<ConnectionEnd>,
    /// Tasks waiting in [`ServerHandle::next_ended`].
    ended_waiters: Vec<Waker>,
    shutdown: bool,
    accept_waker: Option<Waker>,
    /// Tasks still running (the accept loop included).
    tasks: usize,
    /// [`Server::shutdown`] waiting for the tasks.
    idle_waker: Option<Waker>,
    /// Connections accepted from now on speak TLS with this.
    tls: Option<server_tls::Config>,
}

/// What other tasks know of one connection.
struct Slot {
    waker: Option<Waker>,
    woken: bool,
}

impl Server {
    /// Binds `addr` and serves a node built from `config`, each connection
    /// in a task spawned with `async_std::task::spawn`. A `config` whose
    /// wall-clock base is the default gets the current time instead.
    #[cfg(feature = "async-std")]
    pub async fn bind(addr: impl AsyncToSocketAddrs, config: NodeConfig) -> Result<Server, Error> {
        Self::bind_with(addr, config, |task| {
            async_std::task::spawn(task);
        })
        .await
    }

    /// Like [`bind`](Self::bind), spawning the accept loop and each
    /// connection's task with `spawn` (e.g. `|t| smol::spawn(t).detach()`).
    pub async fn bind_with(
        addr: impl AsyncToSocketAddrs,
        config: NodeConfig,
        spawn: impl Fn(Task) + Send + Sync + 'static,
    ) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?;
        let config = if config.wall_clock_base == NodeConfig::new("").wall_clock_base {
            config.with_wall_clock_base(SystemTime::now())
        } else {
            config
        };
        let mut node = Node::new(config);
        node.wall_clock(Instant::now());
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                node,
                conns: HashMap::new(),
                ended: VecDeque::new(),
                ended_waiters: Vec::new(),
                shutdown: false,
                accept_waker: None,
                tasks: 1,
                idle_waker: None,
                tls: None,
            }),
            local_addr,
            spawn: Box::new(spawn),
        });
        (shared.spawn)(Box::pin(accept_loop(Arc::clone(&shared), listener)));
        Ok(Server {
            handle: ServerHandle { shared },
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Serves TLS only, with `config` (its certificate chain and key; see
    /// [`tls::server_config_from_pem`](crate::tls::server_config_from_pem)),
    /// to every connection accepted from now on: call it right after
    /// [`bind`](Self::bind), before handing the address out. A client that
    /// does not complete the TLS handshake within
    /// [`TLS_ACCEPT_TIMEOUT`](crate::TLS_ACCEPT_TIMEOUT) is dropped; one
    /// that does not speak TLS is dropped at its first bytes.
    #[cfg(feature = "tls")]
    pub fn with_tls(self, config: Arc<rustls::ServerConfig>) -> Server {
        self.handle.shared.lock().tls = Some(config);
        self
    }

    /// A handle for other tasks.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs `f` on the node (see [`ServerHandle::with_node`]).
    pub fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        self.handle.with_node(f)
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

impl Drop for Server {
    fn drop(&mut self) {
        self.handle.shared.stop();
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local_addr
    }

    /// Runs `f` on the node, under its lock, then wakes the connections
    /// its changes concern: write documents through
    /// [`bucket_mut`](Node::bucket_mut) (with
    /// `node.wall_clock(Instant::now())` as the time), inject faults
    /// ([`freeze`](Node::freeze), [`drop_connection`](Node::drop_connection),
    /// [`failover`](Node::failover), ...). Keep `f` short: every connection
    /// waits for it.
    pub fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        let mut state = self.shared.lock();
        let result = f(&mut state.node);
        state.dispatch_wakeups();
        result
    }

    /// The connections being served.
    pub fn connections(&self) -> Vec<ConnectionId> {
        self.shared.lock().conns.keys().copied().collect()
    }

    /// The served connection that opened DCP with `name`, if any.
    pub fn connection_named(&self, name: &str) -> Option<ConnectionId> {
        let state = self.shared.lock();
        state
            .conns
            .keys()
            .copied()
            .find(|&id| state.node.dcp_name(id) == Some(name))
    }

    /// Takes the record of connections that ended since the last call (the
    /// latest 1024 are kept).
    pub fn take_ended(&self) -> Vec<ConnectionEnd> {
        self.shared.lock().ended.drain(..).collect()
    }

    /// Waits up to `timeout` for a connection to end and takes its record.
    pub async fn next_ended(&self, timeout: Duration) -> Option<ConnectionEnd> {
        let next = future::poll_fn(|cx| {
            let mut state = self.shared.lock();
            match state.ended.pop_front() {
                Some(end) => Poll::Ready(Some(end)),
                None => {
                    state.ended_waiters.push(cx.waker().clone());
                    Poll::Pending
                }
            }
        });
        future::or(next, async {
            Timer::after(timeout).await;
            None
        })
        .await
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the shutdown flag and wakes every task to notice it.
    fn stop(&self) {
        let mut state = self.lock();
        state.shutdown = true;
        if let Some(waker) = state.accept_waker.take() {
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
        state.tasks -= 1;
        if state.tasks == 0
            && let Some(waker) = state.idle_waker.take()
        {
            waker.wake();
        }
    }
}

impl State {
    /// Wakes the tasks of the connections the node says may have output.
    fn dispatch_wakeups(&mut self) {
        for id in self.node.take_wakeups() {
            if let Some(slot) = self.conns.get_mut(&id) {
                slot.woken = true;
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let stopped = future::poll_fn(|cx| {
            let mut state = shared.lock();
            if state.shutdown {
                Poll::Ready(None)
            } else {
                state.accept_waker = Some(cx.waker().clone());
                Poll::Pending
            }
        });
        let accepted = future::or(stopped, async { Some(listener.accept().await) }).await;
        match accepted {
            None => break,
            // Failed accepts (a reset before accept, no file descriptors)
            // only lose that client.
            Some(Err(_)) => {}
            Some(Ok((stream, peer))) => {
                let _ = stream.set_nodelay(true);
                let (id, tls) = {
                    let mut state = shared.lock();
                    if state.shutdown {
                        break;
                    }
                    let Ok(tls) = state.tls.as_ref().map(Session::new).transpose() else {
                        continue;
                    };
                    let id = state.node.accept(Instant::now());
                    state.conns.insert(
                        id,
                        Slot {
                            waker: None,
                            woken: false,
                        },
                    );
                    state.tasks += 1;
                    (id, tls)
                };
                let task = serve(Arc::clone(&shared), id, stream, tls, peer);
                (shared.spawn)(Box::pin(task));
            }
        }
    }
    shared.task_done();
}

/// One connection's task.
async fn serve(
    shared: Arc<Shared>,
    id: ConnectionId,
    stream: TcpStream,
    tls: Option<Session>,
    peer: SocketAddr,
) {
    let mut served = Served {
        shared: &shared,
        id,
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
    let reason = future::poll_fn(|cx| served.poll(cx)).await;
    let _ = stream.shutdown(Shutdown::Both);
    {
        let mut state = shared.lock();
        state.node.remove(id);
        state.conns.remove(&id);
        if state.ended.len() >= MAX_ENDED {
            state.ended.pop_front();
        }
        state.ended.push_back(ConnectionEnd { id, peer, reason });
        for waker in std::mem::take(&mut state.ended_waiters) {
            waker.wake();
        }
        state.dispatch_wakeups();
    }
    shared.task_done();
}

/// The state of one connection's loop.
struct Served<'a> {
    shared: &'a Shared,
    id: ConnectionId,
    stream: TcpStream,
    /// The TLS session, on a TLS server.
    tls: Option<Session>,
    /// Bytes read and not decrypted yet (TLS only).
    raw: BytesMut,
    /// A TLS client must finish its handshake by then.
    handshake_deadline: Instant,
    /// Received bytes not taken by the node yet (plaintext).
    rx: BytesMut,
    /// `rx` was not empty after the last feed: the node may have stopped
    /// early (too many responses waiting). Nothing more is read until a
    /// feed after the next drain makes no progress.
    rx_stalled: bool,
    /// Bytes taken from the node, not written yet.
    tx: BytesMut,
    timer: Timer,
    timer_at: Option<Instant>,
}

impl Served<'_> {
    /// Runs until the connection ends.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<EndReason> {
        loop {
            let now = Instant::now();
            let mut state = self.shared.lock();
            if state.shutdown {
                return Poll::Ready(EndReason::Shutdown);
            }
            let State { node, conns, .. } = &mut *state;
            let Some(slot) = conns.get_mut(&self.id) else {
                return Poll::Ready(EndReason::Shutdown);
            };
            slot.woken = false;
            if slot.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                slot.waker = Some(cx.waker().clone());
            }
            let id = self.id;
            if node.poll_timeout(id).is_some_and(|at| at <= now) {
                node.handle_timeout(id, now);
            }
            let mut progress = false;
            if self.tx.is_empty() {
                node.poll_transmit(id, &mut self.tx, WRITE_CHUNK);
                if let Some(session) = &mut self.tls {
                    // The node's output encrypted, after the handshake's
                    // records.
                    if let Err(err) = session.seal(&mut self.tx) {
                        return Poll::Ready(EndReason::Io(err));
                    }
                }
                if self.rx_stalled {
                    // The responses are drained: the node may take more.
                    let before = self.rx.len();
                    let _ = node.handle_input(id, &mut self.rx, now);
                    if self.rx.is_empty() || self.rx.len() == before {
                        self.rx_stalled = false;
                    }
                    progress = true;
                }
            }
            let mut handshaking = false;
            if let Some(session) = &mut self.tls {
                handshaking = session.is_handshaking();
                if handshaking && self.handshake_deadline <= now {
                    return Poll::Ready(EndReason::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no TLS handshake in time",
                    )));
                }
            }
            let closed = node.is_closed(id).then(|| node.close_reason(id).cloned());
            let deadline = match node.poll_timeout(id) {
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
                    Poll::Ready(Ok(_)) => {
                        return Poll::Ready(EndReason::Io(io::ErrorKind::WriteZero.into()));
                    }
                    Poll::Ready(Err(err)) => return Poll::Ready(EndReason::Io(err)),
                    Poll::Pending => break,
                }
            }
            if let Some(reason) = closed
                && self.tx.is_empty()
            {
                return Poll::Ready(reason.map_or(EndReason::PeerClosed, EndReason::Node));
            }
            if !self.rx_stalled {
                match self.poll_read(cx) {
                    Poll::Ready(Ok(true)) => progress = true,
                    Poll::Ready(Ok(false)) => return Poll::Ready(EndReason::PeerClosed),
                    Poll::Ready(Err(err)) => return Poll::Ready(EndReason::Io(err)),
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
                    .get(&self.id)
                    .is_some_and(|s| s.woken)
            {
                return Poll::Pending;
            }
        }
    }

    /// Reads once and feeds the node: `Ok(true)` after bytes, `Ok(false)`
    /// at the end of the stream.
    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
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
                let mut peer_closed = false;
                if let Some(session) = &mut self.tls {
                    // Not TLS, or TLS refused: the connection ends.
                    peer_closed = match session.receive(&self.raw, &mut self.rx) {
                        Ok(closed) => closed,
                        Err(err) => return Poll::Ready(Err(err)),
                    };
                    self.raw.clear();
                }
                let mut state = self.shared.lock();
                // An error closes the connection: the loop sends what is
                // left and ends.
                let _ = state
                    .node
                    .handle_input(self.id, &mut self.rx, Instant::now());
                self.rx_stalled = !self.rx.is_empty();
                state.dispatch_wakeups();
                Poll::Ready(Ok(!peer_closed))
            }
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::Interrupted => {
                Poll::Ready(Ok(true))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => Poll::Pending,
        }
    }
}
