//! The producer's liveness timers: DCP_NOOPs every interval counted from
//! the previous noop (not from other traffic), one outstanding at a time;
//! and the idle disconnect after a receive silence, both only while noops
//! are enabled.

use std::time::{Duration, Instant};

/// The first noop opaque a producer uses.
pub(crate) const FIRST_NOOP_OPAQUE: u32 = 10_000_001;

/// Noop and idle state of one DCP connection.
#[derive(Debug, Clone)]
pub(crate) struct Liveness {
    pub(crate) enabled: bool,
    pub(crate) interval: Duration,
    pub(crate) idle_timeout: Duration,
    /// When the last noop was sent (the DCP_OPEN time before the first).
    pub(crate) last_sent: Instant,
    /// The opaque of the noop awaiting its response.
    pub(crate) outstanding: Option<u32>,
    next_opaque: u32,
    pub(crate) noops_sent: u64,
}

impl Liveness {
    pub(crate) fn new(interval: Duration, idle_timeout: Duration, now: Instant) -> Self {
        Self {
            enabled: false,
            interval,
            idle_timeout,
            last_sent: now,
            outstanding: None,
            next_opaque: FIRST_NOOP_OPAQUE,
            noops_sent: 0,
        }
    }

    /// When the next noop is due, if one can be sent.
    pub(crate) fn noop_deadline(&self) -> Option<Instant> {
        (self.enabled && self.outstanding.is_none()).then(|| self.last_sent + self.interval)
    }

    /// When the connection counts as idle, given the last receive time.
    pub(crate) fn idle_deadline(&self, last_recv: Instant) -> Option<Instant> {
        self.enabled.then(|| last_recv + self.idle_timeout)
    }

    /// The opaque of a noop to send now, if one is due.
    pub(crate) fn take_due_noop(&mut self, now: Instant) -> Option<u32> {
        if self.noop_deadline().is_some_and(|due| now >= due) {
            let opaque = self.next_opaque;
            self.next_opaque = self.next_opaque.wrapping_add(1);
            self.outstanding = Some(opaque);
            self.last_sent = now;
            self.noops_sent += 1;
            Some(opaque)
        } else {
            None
        }
    }

    /// A noop response arrived; false if its opaque matches no outstanding
    /// noop (the producer then disconnects).
    pub(crate) fn on_response(&mut self, opaque: u32) -> bool {
        if self.outstanding == Some(opaque) {
            self.outstanding = None;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_noop_per_interval_from_the_last_noop() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut l = Liveness::new(20 * s, 360 * s, t0);
        assert_eq!(l.noop_deadline(), None, "disabled");
        l.enabled = true;
        assert_eq!(l.noop_deadline(), Some(t0 + 20 * s));
        assert_eq!(l.take_due_noop(t0 + 19 * s), None);
        assert_eq!(l.take_due_noop(t0 + 20 * s), Some(FIRST_NOOP_OPAQUE));
        // Outstanding: no second noop however long we wait.
        assert_eq!(l.noop_deadline(), None);
        assert_eq!(l.take_due_noop(t0 + 100 * s), None);
        assert!(!l.on_response(5));
        assert!(l.on_response(FIRST_NOOP_OPAQUE));
        assert_eq!(l.noop_deadline(), Some(t0 + 40 * s));
        assert_eq!(l.take_due_noop(t0 + 45 * s), Some(FIRST_NOOP_OPAQUE + 1));
        assert_eq!(l.idle_deadline(t0), Some(t0 + 360 * s));
    }
}
