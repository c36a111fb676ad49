//! [`Piped`]: a socket whose bytes are read by a reader thread, so that a
//! thread blocked waiting for them can also be woken by [`Wake`] (std
//! cannot wait on a socket and on anything else at once).
//!
//! The reader thread blocks in `read` and queues what it gets (at most
//! [`AHEAD`] bytes ahead of the consumer, then it waits for room); the
//! connection's thread blocks on a condition variable until bytes, the end
//! of the stream, a wake or its deadline. Nobody polls.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};

/// Bytes the reader thread reads ahead of the connection at most.
const AHEAD: usize = 256 * 1024;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

#[derive(Debug, Default)]
struct State {
    bytes: BytesMut,
    /// The socket's end: `None` while open, then its last result.
    end: Option<Result<(), (io::ErrorKind, String)>>,
    /// A wake not taken yet.
    woken: bool,
    /// The connection is gone: the reader thread stops.
    dropped: bool,
}

#[derive(Debug, Default)]
struct Inbox {
    state: Mutex<State>,
    /// Signalled on bytes, the end, a wake, room, or the drop.
    changed: Condvar,
}

impl Inbox {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Wakes the thread blocked reading a [`Piped`] socket: its read returns
/// `WouldBlock` at once, and [`Piped::take_wake`] says why. A wake given
/// while nobody reads is kept for the next read.
#[derive(Clone)]
pub(crate) struct Wake(Arc<Inbox>);

impl fmt::Debug for Wake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Wake").finish_non_exhaustive()
    }
}

impl Wake {
    pub(crate) fn wake(&self) {
        self.0.lock().woken = true;
        self.0.changed.notify_all();
    }
}

/// A TCP socket read through a reader thread (see the module).
pub(crate) struct Piped {
    socket: TcpStream,
    inbox: Arc<Inbox>,
    read_timeout: Option<Duration>,
}

impl fmt::Debug for Piped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Piped")
            .field("socket", &self.socket)
            .finish_non_exhaustive()
    }
}

impl Piped {
    /// Starts the reader thread on a clone of `socket`.
    pub(crate) fn new(socket: TcpStream) -> io::Result<(Piped, Wake)> {
        let inbox = Arc::new(Inbox::default());
        let reader = socket.try_clone()?;
        {
            let inbox = Arc::clone(&inbox);
            thread::Builder::new()
                .name("dcp-node-read".into())
                .spawn(move || read_ahead(reader, &inbox))?;
        }
        let wake = Wake(Arc::clone(&inbox));
        Ok((
            Piped {
                socket,
                inbox,
                read_timeout: None,
            },
            wake,
        ))
    }

    /// The socket (for addresses, write timeouts, shutdown).
    pub(crate) fn socket(&self) -> &TcpStream {
        &self.socket
    }

    /// Bounds the next reads' waits (`None`: no bound).
    pub(crate) fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Whether a wake came since the last call (and forgets it).
    pub(crate) fn take_wake(&self) -> bool {
        std::mem::take(&mut self.inbox.lock().woken)
    }
}

impl Read for Piped {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let deadline = self.read_timeout.map(|t| Instant::now() + t);
        let mut state = self.inbox.lock();
        loop {
            if !state.bytes.is_empty() {
                let n = buf.len().min(state.bytes.len());
                if let (Some(to), Some(from)) = (buf.get_mut(..n), state.bytes.get(..n)) {
                    to.copy_from_slice(from);
                }
                state.bytes.advance(n);
                // Room for the reader thread.
                self.inbox.changed.notify_all();
                return Ok(n);
            }
            match &state.end {
                Some(Ok(())) => return Ok(0),
                Some(Err((kind, message))) => return Err(io::Error::new(*kind, message.clone())),
                None => {}
            }
            if state.woken {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            state = match deadline {
                None => self
                    .inbox
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(at) => {
                    let left = at.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(io::ErrorKind::TimedOut.into());
                    }
                    self.inbox
                        .changed
                        .wait_timeout(state, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
    }
}

impl Write for Piped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.socket.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        self.inbox.lock().dropped = true;
        self.inbox.changed.notify_all();
        // Ends the reader thread's read.
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

/// The reader thread: reads until the end of the stream, an error or the
/// connection's drop, at most [`AHEAD`] bytes ahead.
fn read_ahead(mut socket: TcpStream, inbox: &Inbox) {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let read = socket.read(&mut buf);
        let mut state = inbox.lock();
        match read {
            Ok(0) => {
                state.end = Some(Ok(()));
                inbox.changed.notify_all();
                return;
            }
            Ok(n) => state
                .bytes
                .extend_from_slice(buf.get(..n).unwrap_or_default()),
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                state.end = Some(Err((err.kind(), err.to_string())));
                inbox.changed.notify_all();
                return;
            }
        }
        inbox.changed.notify_all();
        while state.bytes.len() >= AHEAD && !state.dropped {
            state = inbox
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
        if state.dropped {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use std::net::TcpListener;
    use std::sync::mpsc;

    use super::*;

    /// A connected pair: (piped client side, its wake, the server side).
    fn pair() -> (Piped, Wake, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let (piped, wake) = Piped::new(client).unwrap();
        (piped, wake, server)
    }

    #[test]
    fn a_read_blocked_without_deadline_returns_on_a_wake() {
        let (mut piped, wake, _server) = pair();
        let (done, read) = mpsc::channel();
        let reader = thread::spawn(move || {
            let mut buf = [0u8; 8];
            let result = piped.read(&mut buf).map_err(|e| e.kind());
            let woken = piped.take_wake();
            done.send((result, woken)).unwrap();
        });
        wake.wake();
        let (result, woken) = read.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(result, Err(io::ErrorKind::WouldBlock));
        assert!(woken);
        reader.join().unwrap();
    }

    #[test]
    fn a_wake_given_before_the_read_is_kept_and_taken_once() {
        let (mut piped, wake, _server) = pair();
        wake.wake();
        let mut buf = [0u8; 8];
        assert_eq!(
            piped.read(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::WouldBlock)
        );
        assert!(piped.take_wake());
        assert!(!piped.take_wake());
        // No wake, no bytes: the read's deadline ends it.
        piped.set_read_timeout(Some(Duration::from_millis(1)));
        assert_eq!(
            piped.read(&mut buf).map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut)
        );
    }

    #[test]
    fn bytes_then_the_end_arrive_in_order() {
        let (mut piped, _wake, mut server) = pair();
        server.write_all(b"hello world").unwrap();
        server.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        piped.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"hello world");
        // Writes go straight to the socket.
        piped.write_all(b"back").unwrap();
        let mut back = [0u8; 4];
        server.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
    }
}
