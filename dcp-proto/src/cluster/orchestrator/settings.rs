//! What a cluster orchestrator streams and how patiently it retries.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::cluster::Network;
use crate::consumer::StreamFilter;

/// Which vbuckets this process streams. Several processes can split a
/// bucket by each taking a disjoint selection (e.g. one
/// [`share`](Self::share) each).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum VbucketSelection {
    /// Every vbucket of the bucket.
    #[default]
    All,
    /// These vbuckets (ids beyond the bucket's count are ignored).
    Only(BTreeSet<u16>),
    /// Share `index` of `count` equal shares: the vbuckets with
    /// `vbucket % count == index`.
    Share {
        /// This process's share, `0..count`.
        index: u16,
        /// Number of shares (processes).
        count: u16,
    },
}

impl VbucketSelection {
    /// These vbuckets.
    pub fn only(vbuckets: impl IntoIterator<Item = u16>) -> Self {
        Self::Only(vbuckets.into_iter().collect())
    }

    /// Share `index` of `count` (a `count` of 0 is taken as 1).
    pub fn share(index: u16, count: u16) -> Self {
        Self::Share {
            index,
            count: count.max(1),
        }
    }

    /// Whether `vbucket` is selected.
    ///
    /// ```
    /// use dcp_proto::cluster::VbucketSelection;
    /// let second_of_three = VbucketSelection::share(1, 3);
    /// assert!(second_of_three.contains(4));
    /// assert!(!second_of_three.contains(5));
    /// assert!(VbucketSelection::All.contains(1023));
    /// ```
    pub fn contains(&self, vbucket: u16) -> bool {
        match self {
            Self::All => true,
            Self::Only(set) => set.contains(&vbucket),
            Self::Share { index, count } => vbucket % (*count).max(1) == *index,
        }
    }
}

/// Where a selected vbucket starts when the checkpoint has no position for
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum InitialStart {
    /// From seqno 0: everything the vbucket holds.
    #[default]
    Beginning,
    /// From the vbucket's high seqno when its stream opens.
    Now,
}

/// Settings of a [`ClusterOrchestrator`](super::ClusterOrchestrator).
///
/// ```
/// use std::time::Duration;
/// use dcp_proto::cluster::{OrchestratorConfig, VbucketSelection};
/// let config = OrchestratorConfig::new()
///     .with_vbuckets(VbucketSelection::share(0, 4))
///     .with_config_poll_interval(Duration::from_secs(5));
/// assert_eq!(config.reconnect_delay, Duration::from_millis(200));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrchestratorConfig {
    /// The vbuckets this process streams.
    pub vbuckets: VbucketSelection,
    /// Start of vbuckets without a checkpointed position.
    pub start: InitialStart,
    /// Last seqno to stream, for every vbucket (`None`: endless).
    pub end_seqno: Option<u64>,
    /// Per-vbucket last seqnos, overriding [`end_seqno`](Self::end_seqno).
    pub end_seqnos: BTreeMap<u16, u64>,
    /// How often the config is fetched when nothing else asked for it.
    pub config_poll_interval: Duration,
    /// Shortest gap between two config fetches asked for by events (a
    /// NOT_MY_VBUCKET burst over many vbuckets asks once).
    pub config_refresh_gap: Duration,
    /// Delay before the first reconnection to a lost node; doubles with
    /// each failed attempt.
    pub reconnect_delay: Duration,
    /// Longest delay between reconnection attempts.
    pub max_reconnect_delay: Duration,
    /// Delay before re-requesting a stream that was refused or ended early
    /// (NOT_MY_VBUCKET, state changed, backfill failed); doubles with each
    /// attempt in a row.
    pub retry_delay: Duration,
    /// Longest delay between stream attempts.
    pub max_retry_delay: Duration,
    /// Which node addresses to connect to (connection-string option
    /// `network`); [`Network::Auto`] decides from the host the first config
    /// came from.
    pub network: Network,
    /// The collections filter every stream is opened with (`None`: the
    /// whole bucket). A cluster client with a filter negotiates
    /// collections on every node.
    pub filter: Option<StreamFilter>,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self::new()
    }
}

impl OrchestratorConfig {
    /// Every vbucket from the beginning, endless, with default timings:
    /// config poll every 2.5 s, refreshes at most every 250 ms, reconnects
    /// from 200 ms up to 10 s, stream retries from 200 ms up to 5 s.
    pub fn new() -> Self {
        Self {
            vbuckets: VbucketSelection::All,
            start: InitialStart::Beginning,
            end_seqno: None,
            end_seqnos: BTreeMap::new(),
            config_poll_interval: Duration::from_millis(2500),
            config_refresh_gap: Duration::from_millis(250),
            reconnect_delay: Duration::from_millis(200),
            max_reconnect_delay: Duration::from_secs(10),
            retry_delay: Duration::from_millis(200),
            max_retry_delay: Duration::from_secs(5),
            network: Network::Auto,
            filter: None,
        }
    }

    /// Streams only `selection`.
    pub fn with_vbuckets(mut self, selection: VbucketSelection) -> Self {
        self.vbuckets = selection;
        self
    }

    /// Where vbuckets without a checkpointed position start.
    pub fn with_start(mut self, start: InitialStart) -> Self {
        self.start = start;
        self
    }

    /// Opens every stream with the collections filter `filter` (see
    /// [`filter`](Self::filter)).
    pub fn with_filter(mut self, filter: StreamFilter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// Stops every stream at `seqno`.
    pub fn with_end_seqno(mut self, seqno: Option<u64>) -> Self {
        self.end_seqno = seqno;
        self
    }

    /// Stops `vbucket`'s stream at `seqno`.
    pub fn with_vbucket_end_seqno(mut self, vbucket: u16, seqno: u64) -> Self {
        self.end_seqnos.insert(vbucket, seqno);
        self
    }

    /// Sets the periodic config poll.
    pub fn with_config_poll_interval(mut self, interval: Duration) -> Self {
        self.config_poll_interval = interval;
        self
    }

    /// Sets the reconnection backoff (first delay and cap).
    pub fn with_reconnect_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.reconnect_delay = first;
        self.max_reconnect_delay = max.max(first);
        self
    }

    /// Sets the stream retry backoff (first delay and cap).
    pub fn with_retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.retry_delay = first;
        self.max_retry_delay = max.max(first);
        self
    }

    /// Sets the network whose addresses are used.
    pub fn with_network(mut self, network: Network) -> Self {
        self.network = network;
        self
    }

    /// The end seqno of `vbucket` (`None`: endless).
    pub fn end_of(&self, vbucket: u16) -> Option<u64> {
        self.end_seqnos.get(&vbucket).copied().or(self.end_seqno)
    }
}

/// `first * 2^attempt`, at most `max`.
pub(crate) fn backoff(first: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max.max(first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        let delays: Vec<_> = (0..8).map(|a| backoff(ms(200), ms(3000), a)).collect();
        assert_eq!(
            delays,
            [
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3000),
                ms(3000),
                ms(3000),
                ms(3000)
            ]
        );
        assert_eq!(backoff(ms(1), ms(5), u32::MAX), ms(5));
    }

    #[test]
    fn selections() {
        assert!(VbucketSelection::only([1, 5]).contains(5));
        assert!(!VbucketSelection::only([1, 5]).contains(2));
        let shares: Vec<usize> = (0..4)
            .map(|i| {
                (0..1024u16)
                    .filter(|vb| VbucketSelection::share(i, 4).contains(*vb))
                    .count()
            })
            .collect();
        assert_eq!(shares, [256; 4]);
        assert!(VbucketSelection::share(0, 0).contains(7));
    }
}
