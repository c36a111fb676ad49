//! A server: one [`Node`] served on a listener to many connections.
//!
//! Each accepted socket gets two threads, because std cannot wait on a
//! socket and a condition variable at once: a reader that feeds received
//! bytes to the node, and a writer that owns everything else for the
//! connection (what the node has to send, its timers, closing). The node
//! sits behind one mutex; every thread that changes it hands the node's
//! [`take_wakeups`](Node::take_wakeups) to the writers concerned through
//! their condition variables.
//!
//! With TLS ([`Server::with_tls`]) the connection's TLS session sits in
//! the same place, under the same mutex, and never touches the socket: the
//! reader decrypts what it read into the connection's input, the writer
//! encrypts the node's output (and the handshake's own records) before
//! writing it. Neither thread waits on the other's socket.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Buf, BytesMut};
use dcp_proto::producer::{CloseReason, ConnectionId, Node, NodeConfig};

use crate::Error;
use crate::server_tls::{self, Session, TLS_ACCEPT_TIMEOUT};

/// Bytes read from a socket at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes asked of the node per write.
const WRITE_CHUNK: usize = 64 * 1024;
/// Ended connections kept for [`ServerHandle::take_ended`].
const MAX_ENDED: usize = 1024;

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

/// A running server. Dropping it shuts it down, like
/// [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    handle: ServerHandle,
    accept: Option<JoinHandle<()>>,
}

/// A cheap, clonable handle to a running [`Server`]: reach its node to
/// write documents and inject faults, see its connections.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Signalled when a connection ends.
    ended: Condvar,
    local_addr: SocketAddr,
}

#[derive(Debug)]
struct State {
    node: Node,
    conns: HashMap<ConnectionId, Slot>,
    workers: Vec<JoinHandle<()>>,
    ended: VecDeque<ConnectionEnd>,
    shutdown: bool,
    /// Connections accepted from now on speak TLS with this.
    tls: Option<server_tls::Config>,
}

/// What the threads of one connection share.
#[derive(Debug)]
struct Slot {
    /// Wakes the connection's writer.
    wake: Arc<Condvar>,
    woken: bool,
    /// Wakes the connection's reader, waiting for `rx_stalled` to clear.
    reader_wake: Arc<Condvar>,
    /// Received bytes not taken by the node yet.
    rx: BytesMut,
    /// `rx` was not empty after the last feed: the node may have stopped
    /// early (too many responses waiting), so the writer feeds it again
    /// after each drain until it makes no progress, and the reader reads
    /// nothing more until then (a client that does not read its responses
    /// is not read either).
    rx_stalled: bool,
    /// Set by the reader when its side ended.
    reader_end: Option<EndReason>,
    /// The TLS session, on a TLS server.
    tls: Option<Session>,
    /// A clone of the socket, to shut it down.
    socket: TcpStream,
    peer: SocketAddr,
}

impl Server {
    /// Binds `addr` and serves a node built from `config`, each accepted
    /// connection on its own threads. A `config` whose wall-clock base is
    /// the default gets the current time instead.
    pub fn bind(addr: impl ToSocketAddrs, config: NodeConfig) -> Result<Server, Error> {
        let listener = TcpListener::bind(addr)?;
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
                workers: Vec::new(),
                ended: VecDeque::new(),
                shutdown: false,
                tls: None,
            }),
            ended: Condvar::new(),
            local_addr,
        });
        let accept = {
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("dcp-accept".into())
                .spawn(move || accept_loop(&listener, &shared))?
        };
        Ok(Server {
            handle: ServerHandle { shared },
            accept: Some(accept),
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
    /// does not complete the TLS handshake within [`TLS_ACCEPT_TIMEOUT`] is
    /// dropped; one that does not speak TLS is dropped at its first bytes.
    #[cfg(feature = "tls")]
    pub fn with_tls(self, config: std::sync::Arc<rustls::ServerConfig>) -> Server {
        self.handle.shared.lock().tls = Some(config);
        self
    }

    /// A handle for other threads.
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Runs `f` on the node (see [`ServerHandle::with_node`]).
    pub fn with_node<R>(&self, f: impl FnOnce(&mut Node) -> R) -> R {
        self.handle.with_node(f)
    }

    /// Stops accepting, closes every connection and waits for their
    /// threads.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let workers = {
            let mut state = self.handle.shared.lock();
            state.shutdown = true;
            for slot in state.conns.values() {
                slot.wake.notify_one();
                slot.reader_wake.notify_one();
                let _ = slot.socket.shutdown(Shutdown::Both);
            }
            std::mem::take(&mut state.workers)
        };
        if let Some(accept) = self.accept.take() {
            // The accept thread notices the flag after one more accept.
            let wake = wake_addr(self.handle.local_addr());
            if TcpStream::connect_timeout(&wake, Duration::from_secs(1)).is_ok() {
                let _ = accept.join();
            }
        }
        for worker in workers {
            let _ = worker.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
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
    pub fn next_ended(&self, timeout: Duration) -> Option<ConnectionEnd> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.lock();
        loop {
            if let Some(end) = state.ended.pop_front() {
                return Some(end);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            state = self
                .shared
                .ended
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Wakes the writers of the connections the node says may have output.
    fn dispatch_wakeups(&mut self) {
        for id in self.node.take_wakeups() {
            self.wake(id);
        }
    }

    fn wake(&mut self, id: ConnectionId) {
        if let Some(slot) = self.conns.get_mut(&id) {
            slot.woken = true;
            slot.wake.notify_one();
        }
    }
}

/// An address that reaches a listener bound to `addr` (loopback for an
/// unspecified address).
fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let mut wake = addr;
    if addr.ip().is_unspecified() {
        wake.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    wake
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    for incoming in listener.incoming() {
        let mut state = shared.lock();
        if state.shutdown {
            return;
        }
        // Failed accepts (a reset before accept, no file descriptors) only
        // lose that client.
        if let Ok(stream) = incoming {
            let _ = start_connection(shared, &mut state, stream);
        }
    }
}

/// Registers an accepted socket with the node and starts its threads.
fn start_connection(shared: &Arc<Shared>, state: &mut State, stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let peer = stream.peer_addr()?;
    let reader = stream.try_clone()?;
    let control = stream.try_clone()?;
    let tls = state.tls.as_ref().map(Session::new).transpose()?;
    let id = state.node.accept(Instant::now());
    state.conns.insert(
        id,
        Slot {
            wake: Arc::new(Condvar::new()),
            woken: false,
            reader_wake: Arc::new(Condvar::new()),
            rx: BytesMut::new(),
            rx_stalled: false,
            reader_end: None,
            tls,
            socket: control,
            peer,
        },
    );
    let spawned = {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("dcp-read-{}", id.0))
            .spawn(move || read_loop(&shared, id, reader))
    }
    .and_then(|reader| {
        let shared = Arc::clone(shared);
        thread::Builder::new()
            .name(format!("dcp-write-{}", id.0))
            .spawn(move || write_loop(&shared, id, stream, reader))
    });
    match spawned {
        Ok(worker) => {
            state.workers.retain(|w| !w.is_finished());
            state.workers.push(worker);
            Ok(())
        }
        Err(err) => {
            if let Some(slot) = state.conns.remove(&id) {
                let _ = slot.socket.shutdown(Shutdown::Both);
            }
            state.node.remove(id);
            Err(err)
        }
    }
}

/// Feeds what the client sends to the node.
fn read_loop(shared: &Shared, id: ConnectionId, mut socket: TcpStream) {
    let mut buf = vec![0u8; READ_CHUNK];
    let end = loop {
        match socket.read(&mut buf) {
            Ok(0) => break EndReason::PeerClosed,
            Ok(n) => {
                let mut state = shared.lock();
                let State { node, conns, .. } = &mut *state;
                let Some(slot) = conns.get_mut(&id) else {
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
                    Some(session) => match session.receive(raw, &mut slot.rx) {
                        Ok(closed) => closed,
                        Err(err) => {
                            // Not TLS, or TLS refused: the connection ends.
                            slot.reader_end = Some(EndReason::Io(err));
                            state.wake(id);
                            return;
                        }
                    },
                };
                let fed = node.handle_input(id, &mut slot.rx, Instant::now());
                slot.rx_stalled = !slot.rx.is_empty();
                let reader_wake = Arc::clone(&slot.reader_wake);
                state.wake(id);
                state.dispatch_wakeups();
                if fed.is_err() {
                    // The node closed the connection: the writer sends what
                    // is left and closes the socket.
                    return;
                }
                if peer_closed {
                    drop(state);
                    break EndReason::PeerClosed;
                }
                while !state.shutdown && state.conns.get(&id).is_some_and(|slot| slot.rx_stalled) {
                    state = reader_wake
                        .wait(state)
                        .unwrap_or_else(PoisonError::into_inner);
                }
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => break EndReason::Io(err),
        }
    };
    let mut state = shared.lock();
    if let Some(slot) = state.conns.get_mut(&id) {
        slot.reader_end = Some(end);
    }
    state.wake(id);
}

/// Owns one connection: writes what the node has for it, runs its timers,
/// then closes the socket and forgets the connection.
fn write_loop(shared: &Shared, id: ConnectionId, mut socket: TcpStream, reader: JoinHandle<()>) {
    let reason = serve(shared, id, &mut socket);
    if let Some(slot) = shared.lock().conns.get_mut(&id) {
        // Let a reader waiting for input to drain go on to its end.
        slot.rx_stalled = false;
        slot.reader_wake.notify_one();
    }
    let _ = socket.shutdown(Shutdown::Both);
    let _ = reader.join();
    let mut state = shared.lock();
    state.node.remove(id);
    if let Some(slot) = state.conns.remove(&id) {
        if state.ended.len() >= MAX_ENDED {
            state.ended.pop_front();
        }
        state.ended.push_back(ConnectionEnd {
            id,
            peer: slot.peer,
            reason,
        });
    }
    state.dispatch_wakeups();
    shared.ended.notify_all();
}

fn serve(shared: &Shared, id: ConnectionId, socket: &mut TcpStream) -> EndReason {
    let mut tx = BytesMut::new();
    // A TLS client must finish its handshake by then.
    let handshake_deadline = Instant::now() + TLS_ACCEPT_TIMEOUT;
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return EndReason::Shutdown;
        }
        let now = Instant::now();
        let State { node, conns, .. } = &mut *state;
        let Some(slot) = conns.get_mut(&id) else {
            return EndReason::Shutdown;
        };
        slot.woken = false;
        if let Some(end) = slot.reader_end.take() {
            return end;
        }
        if node.poll_timeout(id).is_some_and(|at| at <= now) {
            node.handle_timeout(id, now);
        }
        tx.clear();
        node.poll_transmit(id, &mut tx, WRITE_CHUNK);
        let mut handshaking = false;
        if let Some(session) = &mut slot.tls {
            // The node's output encrypted, after the handshake's records.
            if let Err(err) = session.seal(&mut tx) {
                return EndReason::Io(err);
            }
            handshaking = session.is_handshaking();
            if handshaking && handshake_deadline <= now {
                return EndReason::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no TLS handshake in time",
                ));
            }
        }
        if slot.rx_stalled {
            // The responses are drained: the node may take more input.
            let before = slot.rx.len();
            let _ = node.handle_input(id, &mut slot.rx, now);
            if slot.rx.is_empty() || slot.rx.len() == before {
                slot.rx_stalled = false;
                slot.reader_wake.notify_one();
            } else {
                slot.woken = true;
            }
        }
        let closed = node.is_closed(id).then(|| node.close_reason(id).cloned());
        let woken = slot.woken;
        let wake = Arc::clone(&slot.wake);
        let deadline = match node.poll_timeout(id) {
            Some(at) if handshaking => Some(at.min(handshake_deadline)),
            None if handshaking => Some(handshake_deadline),
            other => other,
        };
        state.dispatch_wakeups();
        if !tx.is_empty() {
            drop(state);
            if let Err(err) = write_out(shared, id, socket, &mut tx) {
                return EndReason::Io(err);
            }
            state = shared.lock();
            continue;
        }
        if let Some(reason) = closed {
            return reason.map_or(EndReason::PeerClosed, EndReason::Node);
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
    id: ConnectionId,
    socket: &mut TcpStream,
    tx: &mut BytesMut,
) -> io::Result<()> {
    while !tx.is_empty() {
        let deadline = shared.lock().node.poll_timeout(id);
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
                if state.node.poll_timeout(id).is_some_and(|at| at <= now) {
                    state.node.handle_timeout(id, now);
                }
                state.dispatch_wakeups();
                if state.node.is_closed(id) {
                    // Idle while the client does not read: give up.
                    return Ok(());
                }
            }
            Err(err) => return Err(err),
        }
    }
    Ok(())
}
