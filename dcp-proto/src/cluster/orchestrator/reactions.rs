//! How the orchestrator reacts to a stream's end or refusal (behavior.md
//! §2.4, §2.7).

use std::time::Instant;

use super::settings::backoff;
use super::vbuckets::Stream;
use super::{Action, ClusterOrchestrator, StreamFailure};
use crate::codec::Status;
use crate::msg::StreamEndReason;

impl ClusterOrchestrator {
    /// Schedules the vbucket's next request after a growing delay.
    pub(super) fn retry_later(&mut self, vbucket: u16, now: Instant) {
        let (first, max) = (self.settings.retry_delay, self.settings.max_retry_delay);
        if let Some(slot) = self.vbuckets.get_mut(&vbucket) {
            slot.not_before = Some(now + backoff(first, max, slot.attempts));
            slot.attempts = slot.attempts.saturating_add(1);
        }
    }

    /// Stops streaming the vbucket and tells the adapter why.
    pub(super) fn give_up(&mut self, vbucket: u16, reason: StreamFailure) {
        if let Some(slot) = self.vbuckets.get_mut(&vbucket) {
            slot.stream = Stream::Failed;
            self.actions.push_back(Action::Fail { vbucket, reason });
        }
    }

    /// A stream request was refused (temporary failures were retried by
    /// the consumer already).
    pub(super) fn on_stream_failed(&mut self, vbucket: u16, status: Status, now: Instant) {
        if let Some(slot) = self.vbuckets.get_mut(&vbucket) {
            slot.stream = Stream::Idle;
        }
        match status {
            Status::NotMyVbucket => {
                // The config is stale: fetch one, retry on the owner then.
                self.refresh.wanted = true;
                self.retry_later(vbucket, now);
            }
            Status::Eaccess
            | Status::Erange
            | Status::Einval
            | Status::NotSupported
            | Status::DcpStreamIdInvalid
            | Status::UnknownCollection
            | Status::UnknownScope
            | Status::Rollback
            | Status::NoBucket => self.give_up(vbucket, StreamFailure::Refused(status)),
            _ => self.retry_later(vbucket, now),
        }
    }

    /// The producer ended a stream (behavior.md §2.7).
    pub(super) fn on_stream_ended(&mut self, vbucket: u16, reason: StreamEndReason, now: Instant) {
        let Some(slot) = self.vbuckets.get_mut(&vbucket) else {
            return;
        };
        slot.stream = Stream::Idle;
        match reason {
            StreamEndReason::Ok if slot.end.is_some() => {
                slot.stream = Stream::Done;
                self.actions.push_back(Action::StreamDone { vbucket });
            }
            StreamEndReason::Slow => slot.not_before = None,
            StreamEndReason::FilterEmpty | StreamEndReason::LostPrivileges => {
                self.give_up(vbucket, StreamFailure::Ended(reason));
            }
            StreamEndReason::Ok | StreamEndReason::Closed | StreamEndReason::BackfillFailed => {
                self.retry_later(vbucket, now);
            }
            // StateChanged, Disconnected, Rollback and unknown reasons: the
            // vbucket probably moved; ask where to.
            _ => {
                self.refresh.wanted = true;
                self.retry_later(vbucket, now);
            }
        }
    }
}
