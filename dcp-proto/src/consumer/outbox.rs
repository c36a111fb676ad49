//! Frames queued for the producer, and the opaque counter.

use bytes::BytesMut;

use crate::codec::EncodeError;
use crate::msg::Message;

/// Outgoing bytes and request opaques.
#[derive(Debug, Clone)]
pub(crate) struct Outbox {
    tx: BytesMut,
    next_opaque: u32,
    /// Total bytes queued so far.
    pub(crate) bytes_sent: u64,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Self {
            tx: BytesMut::new(),
            next_opaque: 1,
            bytes_sent: 0,
        }
    }

    /// A fresh opaque (never 0, so a zeroed opaque is never ours).
    pub(crate) fn next_opaque(&mut self) -> u32 {
        let opaque = self.next_opaque;
        self.next_opaque = self.next_opaque.wrapping_add(1).max(1);
        opaque
    }

    /// Queues a request with a fresh opaque; returns the opaque.
    pub(crate) fn send(&mut self, message: impl Into<Message>) -> Result<u32, EncodeError> {
        let opaque = self.next_opaque();
        let mut message = message.into();
        set_opaque(&mut message, opaque);
        self.queue(&message)?;
        Ok(opaque)
    }

    /// Queues a message as it is (replies echo the request's opaque).
    pub(crate) fn queue(&mut self, message: &Message) -> Result<(), EncodeError> {
        let before = self.tx.len();
        message.encode(&mut self.tx)?;
        self.bytes_sent += (self.tx.len() - before) as u64;
        Ok(())
    }

    /// Whether bytes are waiting.
    pub(crate) fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// Moves the queued bytes to `buf`; returns how many.
    pub(crate) fn drain_into(&mut self, buf: &mut BytesMut) -> usize {
        let n = self.tx.len();
        if buf.is_empty() {
            // Hand over the allocation instead of copying.
            *buf = self.tx.split();
        } else {
            buf.extend_from_slice(&self.tx);
            self.tx.clear();
        }
        n
    }
}

/// Sets the opaque of a request the consumer sends.
fn set_opaque(message: &mut Message, opaque: u32) {
    match message {
        Message::Hello(m) => m.opaque = opaque,
        Message::SaslListMechs(m) => m.opaque = opaque,
        Message::SaslAuth(m) => m.opaque = opaque,
        Message::SaslStep(m) => m.opaque = opaque,
        Message::SelectBucket(m) => m.opaque = opaque,
        Message::Open(m) => m.opaque = opaque,
        Message::Control(m) => m.opaque = opaque,
        Message::StreamRequest(m) => m.opaque = opaque,
        Message::CloseStream(m) => m.opaque = opaque,
        Message::GetFailoverLog(m) => m.opaque = opaque,
        Message::GetAllVbSeqnos(m) => m.opaque = opaque,
        Message::GetClusterConfig(m) => m.opaque = opaque,
        Message::BufferAck(m) => m.opaque = opaque,
        Message::SeqnoAcknowledged(m) => m.opaque = opaque,
        _ => debug_assert!(false, "not a consumer request: {message:?}"),
    }
}
