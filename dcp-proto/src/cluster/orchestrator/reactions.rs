//! How the orchestrator reacts to a stream's end or refusal (behavior.md
//! §2.4, §2.7).

use std::time::Instant;

use super::ConfigOutcome;
use super::settings::backoff;
use super::vbuckets::Stream;
use super::{Action, ClusterOrchestrator, StreamFailure};
use crate::cluster::{ClusterConfig, NodeAddress};
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

    /// A NOT_MY_VBUCKET refusal from `node` carried `body`: the node's own
    /// config, as a real server sends it. If it is newer than the config in
    /// force it is applied first, and if it names another owner the
    /// vbucket goes there at once, with no config fetch and no retry
    /// delay; if it still names `node`, it is kept and the vbucket waits
    /// and fetches as after any refusal. Returns whether the refusal was
    /// handled; if not (no body, not a config, not newer), it is handled as
    /// one without a config.
    pub(super) fn follow_not_my_vbucket_config(
        &mut self,
        vbucket: u16,
        node: &NodeAddress,
        body: &[u8],
        now: Instant,
    ) -> bool {
        if body.is_empty() {
            return false;
        }
        let Ok(config) = ClusterConfig::parse(body, node.host()) else {
            return false;
        };
        let config = self.adopt_network(config, Some(node.host()));
        let newer = self
            .config
            .as_ref()
            .is_none_or(|current| config.version() > current.version());
        if !newer {
            return false;
        }
        let moved = config
            .active_node(vbucket)
            .is_some_and(|owner| &owner.address != node);
        if !moved {
            // Still named the owner: wait and fetch as usual, but keep
            // the newer map meanwhile.
            self.on_stream_failed(vbucket, Status::NotMyVbucket, now);
            let _ = self.handle_cluster_config(config, now);
            self.pump(now);
            return true;
        }
        if let Some(slot) = self.vbuckets.get_mut(&vbucket) {
            slot.stream = Stream::Idle;
        }
        matches!(
            self.handle_cluster_config(config, now),
            Ok(ConfigOutcome::Applied(_))
        )
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
