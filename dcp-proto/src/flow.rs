//! Connection-level flow control, both ends.
//!
//! The producer counts every stream message it sends (full frame size,
//! PREPARE + 2) against a window of `connection_buffer_size` bytes and pauses
//! once the window is full; the consumer returns credit with BUFFER_ACK as
//! the application finishes with messages. NOOPs and responses are never
//! counted.

use std::time::{Duration, Instant};

use crate::codec::Opcode;

/// The bytes a producer → consumer message counts for in flow control: its
/// full frame length, plus 2 for DCP_PREPARE (the server counts a prepare 2
/// bytes larger than it sends), and nothing for DCP_NOOP.
pub const fn flow_control_size(opcode: Opcode, wire_len: usize) -> u32 {
    let len = match opcode {
        Opcode::DcpNoop => 0,
        Opcode::DcpPrepare => wire_len + 2,
        _ => wire_len,
    };
    if len > u32::MAX as usize {
        u32::MAX
    } else {
        len as u32
    }
}

/// The consumer's side: bytes received, bytes the application is done with,
/// and when to send a BUFFER_ACK.
#[derive(Debug, Clone)]
pub struct ConsumerWindow {
    window: u32,
    threshold: u32,
    ack_interval: Duration,
    received: u64,
    released: u64,
    acked: u64,
    /// When released-but-unsent bytes first appeared.
    pending_since: Option<Instant>,
}

impl ConsumerWindow {
    /// A window of `window` bytes (0 = flow control off) that sends an ack
    /// once `threshold_percent` of it is ready to return, or `ack_interval`
    /// after the first byte became ready.
    pub fn new(window: u32, threshold_percent: u8, ack_interval: Duration) -> Self {
        let percent = u64::from(threshold_percent.clamp(1, 100));
        let threshold = (u64::from(window) * percent / 100).max(1);
        Self {
            window,
            threshold: u32::try_from(threshold).unwrap_or(u32::MAX),
            ack_interval,
            received: 0,
            released: 0,
            acked: 0,
            pending_since: None,
        }
    }

    /// Whether flow control is on.
    pub fn enabled(&self) -> bool {
        self.window > 0
    }

    /// The window size.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// The ack threshold in bytes.
    pub fn threshold(&self) -> u32 {
        self.threshold
    }

    /// Counts `bytes` received in a stream message.
    pub fn on_received(&mut self, bytes: u32) {
        self.received += u64::from(bytes);
    }

    /// The application is done with `bytes`. Never releases more than was
    /// received; returns the bytes actually released.
    pub fn release(&mut self, bytes: u32, now: Instant) -> u32 {
        let free = self.received - self.released;
        let bytes = u64::from(bytes).min(free);
        if bytes > 0 && self.pending_since.is_none() && self.enabled() {
            self.pending_since = Some(now);
        }
        self.released += bytes;
        debug_assert!(self.acked <= self.released && self.released <= self.received);
        bytes as u32
    }

    /// Bytes released but not yet acknowledged to the producer.
    pub fn pending(&self) -> u64 {
        self.released - self.acked
    }

    /// Bytes received and not yet released by the application.
    pub fn unreleased(&self) -> u64 {
        self.received - self.released
    }

    /// Bytes received and not yet acknowledged to the producer.
    pub fn unacked(&self) -> u64 {
        self.received - self.acked
    }

    /// Total bytes counted as received.
    pub fn total_received(&self) -> u64 {
        self.received
    }

    /// Total bytes acknowledged to the producer.
    pub fn total_acked(&self) -> u64 {
        self.acked
    }

    /// The BUFFER_ACK to send now, if the threshold is reached or the pending
    /// bytes have waited `ack_interval`.
    pub fn take_ack(&mut self, now: Instant) -> Option<u32> {
        if !self.enabled() {
            return None;
        }
        let pending = self.pending();
        let due = self
            .pending_since
            .is_some_and(|since| now.saturating_duration_since(since) >= self.ack_interval);
        if pending == 0 || (pending < u64::from(self.threshold) && !due) {
            return None;
        }
        let bytes = u32::try_from(pending).unwrap_or(u32::MAX);
        self.acked += u64::from(bytes);
        self.pending_since = (self.pending() > 0).then_some(now);
        Some(bytes)
    }

    /// When a time-based ack becomes due.
    pub fn deadline(&self) -> Option<Instant> {
        if !self.enabled() {
            return None;
        }
        self.pending_since.map(|since| since + self.ack_interval)
    }
}

/// The producer's side: bytes sent and not yet acknowledged, against the
/// consumer's window.
#[derive(Debug, Clone, Default)]
pub struct ProducerWindow {
    window: u32,
    outstanding: u64,
    total_acked: u64,
    over_acked: u64,
}

impl ProducerWindow {
    /// Sets the window (`connection_buffer_size`); 0 turns flow control off
    /// and resets the counters, as the server does.
    pub fn set_window(&mut self, window: u32) {
        self.window = window;
        if window == 0 {
            self.outstanding = 0;
        }
    }

    /// The window size (0 = off).
    pub fn window(&self) -> u32 {
        self.window
    }

    /// Whether another stream message may be sent: while outstanding bytes
    /// are below the window (so one message may overshoot it).
    pub fn can_send(&self) -> bool {
        self.window == 0 || self.outstanding < u64::from(self.window)
    }

    /// Counts a sent stream message.
    pub fn on_sent(&mut self, bytes: u32) {
        if self.window > 0 {
            self.outstanding += u64::from(bytes);
        }
    }

    /// Applies a BUFFER_ACK; acks beyond what is outstanding are clamped and
    /// counted.
    pub fn on_ack(&mut self, bytes: u32) {
        let bytes = u64::from(bytes);
        let applied = bytes.min(self.outstanding);
        self.over_acked += bytes - applied;
        self.outstanding -= applied;
        self.total_acked += bytes;
    }

    /// Bytes sent and not acknowledged.
    pub fn outstanding(&self) -> u64 {
        self.outstanding
    }

    /// Total bytes acknowledged by the consumer.
    pub fn total_acked(&self) -> u64 {
        self.total_acked
    }

    /// Bytes acknowledged beyond what was outstanding.
    pub fn over_acked(&self) -> u64 {
        self.over_acked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(flow_control_size(Opcode::DcpMutation, 60), 60);
        assert_eq!(flow_control_size(Opcode::DcpPrepare, 60), 62);
        assert_eq!(flow_control_size(Opcode::DcpNoop, 24), 0);
    }

    #[test]
    fn acks_at_threshold_or_after_interval() {
        let t0 = Instant::now();
        let mut w = ConsumerWindow::new(1000, 20, Duration::from_secs(1));
        w.on_received(500);
        assert_eq!(w.release(150, t0), 150);
        assert_eq!(w.take_ack(t0), None, "below 200");
        w.release(60, t0);
        assert_eq!(w.take_ack(t0), Some(210));
        w.release(10, t0);
        assert_eq!(w.take_ack(t0 + Duration::from_millis(999)), None);
        assert_eq!(w.deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(w.take_ack(t0 + Duration::from_secs(1)), Some(10));
        assert_eq!(w.deadline(), None);
        // Over-release is clamped to what was received.
        assert_eq!(w.release(10_000, t0), 280);
        assert_eq!(w.take_ack(t0), Some(280));
        assert_eq!((w.total_received(), w.total_acked()), (500, 500));
    }

    #[test]
    fn disabled_window_never_acks() {
        let t0 = Instant::now();
        let mut w = ConsumerWindow::new(0, 20, Duration::from_secs(1));
        w.on_received(100);
        w.release(100, t0);
        assert_eq!(w.take_ack(t0 + Duration::from_secs(10)), None);
        assert_eq!(w.deadline(), None);
    }

    #[test]
    fn producer_pauses_and_resumes() {
        let mut p = ProducerWindow::default();
        p.set_window(100);
        p.on_sent(60);
        assert!(p.can_send());
        p.on_sent(60); // overshoot allowed
        assert!(!p.can_send());
        p.on_ack(30);
        assert!(p.can_send());
        p.on_ack(500);
        assert_eq!((p.outstanding(), p.over_acked()), (0, 410));
    }
}
