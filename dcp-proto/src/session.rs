//! Where each stream stands: the resume position a consumer persists with
//! its data, the rules that move it as messages arrive, and the checkpoint
//! that holds every stream's position.
//!
//! The same [`StreamCursor`] runs twice in a consumer: once as frames are
//! received (to validate the producer), once as events are handed to the
//! application (so a checkpoint never covers an event the application has
//! not seen).

use std::collections::BTreeMap;
use std::num::NonZeroU16;

use serde::{Deserialize, Serialize};

use crate::failover::truncate_for_rollback;
use crate::msg::FailoverLog;

/// A stream's resume position: enough to ask the producer to continue
/// exactly after the last change the consumer has.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamPosition {
    /// The vbucket's history branches, newest first, as last received.
    pub failover_log: FailoverLog,
    /// The last seqno the consumer has (0 = nothing yet).
    pub last_seqno: u64,
    /// Start of the snapshot `last_seqno` belongs to.
    pub snapshot_start: u64,
    /// End of that snapshot; the state is consistent when `last_seqno` has
    /// reached it.
    pub snapshot_end: u64,
    /// Manifest uid of the last collections system event seen.
    #[serde(default)]
    pub manifest_uid: u64,
    /// The purge seqno the producer last reported (v2.2 disk markers).
    #[serde(default)]
    pub purge_seqno: u64,
    /// Seqnos where this consumer's data was a state the producer had,
    /// ascending: the stream's origin (0 when empty) and the latest snapshot
    /// ends, at most [`StreamPosition::CONSISTENT_POINTS`]. Where to cut on
    /// a rollback.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consistent_points: Vec<u64>,
}

/// The seqno fields of the stream request that resumes from a position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResumeRequest {
    /// Start seqno: the last seqno held.
    pub start_seqno: u64,
    /// Vbucket uuid of the newest known branch (0 = no history).
    pub vbucket_uuid: u64,
    /// Snapshot start.
    pub snap_start_seqno: u64,
    /// Snapshot end.
    pub snap_end_seqno: u64,
}

impl StreamPosition {
    /// A position at `seqno` on the branch `failover_log`, with a complete
    /// snapshot (e.g. to start "from now").
    pub fn at(failover_log: FailoverLog, seqno: u64) -> Self {
        Self {
            failover_log,
            last_seqno: seqno,
            snapshot_start: seqno,
            snapshot_end: seqno,
            // 0 is implied.
            consistent_points: if seqno > 0 { vec![seqno] } else { Vec::new() },
            ..Self::default()
        }
    }

    /// Whether the position holds nothing yet (a stream from the beginning
    /// that received no change and no failover log).
    pub fn is_fresh(&self) -> bool {
        self.last_seqno == 0 && self.failover_log.entries.is_empty()
    }

    /// Whether the position is at the end of its snapshot, i.e. the data it
    /// covers is a state that existed on the producer.
    pub fn is_consistent(&self) -> bool {
        self.last_seqno >= self.snapshot_end || self.last_seqno < self.snapshot_start
    }

    /// The stream-request fields that resume from here.
    ///
    /// With no history the request starts from 0. Otherwise it starts at
    /// `last_seqno` with the newest uuid; mid-snapshot it sends the real
    /// snapshot bounds, so the producer can detect a branch inside the
    /// partial snapshot (claiming a complete one could silently lose data).
    pub fn resume(&self) -> ResumeRequest {
        let Some(newest) = self.failover_log.entries.first() else {
            return ResumeRequest {
                start_seqno: 0,
                vbucket_uuid: 0,
                snap_start_seqno: 0,
                snap_end_seqno: 0,
            };
        };
        let last = self.last_seqno;
        let (snap_start, snap_end) = if self.is_consistent() {
            (last, last)
        } else {
            (self.snapshot_start, self.snapshot_end)
        };
        ResumeRequest {
            start_seqno: last,
            vbucket_uuid: newest.vbucket_uuid,
            snap_start_seqno: snap_start,
            snap_end_seqno: snap_end,
        }
    }

    /// Obeys a ROLLBACK to `seqno` (a point [`Self::rollback_point`]
    /// chose): forgets branches that began above it and moves to a complete
    /// snapshot at `seqno`.
    pub fn rollback(&mut self, seqno: u64) {
        truncate_for_rollback(&mut self.failover_log, seqno);
        self.last_seqno = seqno;
        self.snapshot_start = seqno;
        self.snapshot_end = seqno;
        self.consistent_points.retain(|&p| p <= seqno);
        if self.consistent_points == [0] {
            self.consistent_points.clear();
        }
        // With none left, 0 is implied (see `rollback_point`).
        if self.consistent_points.last() != Some(&seqno)
            && (seqno > 0 || !self.consistent_points.is_empty())
        {
            self.consistent_points.push(seqno);
        }
    }

    /// How many consistent points a position remembers.
    pub const CONSISTENT_POINTS: usize = 16;

    /// Where to cut when the producer asks for a rollback to `seqno`: the
    /// highest point at or below it where this consumer's data was a state
    /// the producer had (behavior.md §2.5).
    ///
    /// A rollback seqno need not be such a point: a failover branch starts
    /// where the promoted replica's snapshots ended, not ours, and a
    /// snapshot's items are deduplicated, so a version at or below the
    /// seqno may never have arrived (inside a snapshot, or in the gap before
    /// a marker that starts at its first remaining item). The cut goes to
    /// the latest snapshot end at or below it instead, or the stream's
    /// origin when older points were forgotten. Below the origin of a stream
    /// that started "from now" nothing is held, so the seqno itself is kept.
    pub fn rollback_point(&self, seqno: u64) -> u64 {
        if self.consistent_points.is_empty() {
            // Nothing recorded: a stream from the beginning that completed
            // no snapshot yet, or a position saved before points were kept;
            // either way only 0 is known safe.
            return 0;
        }
        match self.consistent_points.iter().rev().find(|&&p| p <= seqno) {
            Some(&point) => point,
            // Below the stream's origin ("from now"): nothing is held there.
            None => seqno,
        }
    }

    /// Records that the data up to `seqno` is a state the producer had.
    fn note_consistent(&mut self, seqno: u64) {
        if self.consistent_points.last().is_some_and(|&p| p >= seqno) {
            return;
        }
        if seqno == 0 && self.consistent_points.is_empty() {
            // The origin, implied while nothing else is recorded.
            return;
        }
        if self.consistent_points.is_empty() {
            // The implied origin (a stream from the beginning, or a history
            // nothing is known of): 0 stays a safe cut.
            self.consistent_points.push(0);
        }
        self.consistent_points.push(seqno);
        if self.consistent_points.len() > Self::CONSISTENT_POINTS {
            // The origin stays: below the newest points it is still a safe
            // (if distant) cut.
            self.consistent_points.remove(1);
        }
    }
}

/// Names one stream of a connection: its vbucket and, on a connection
/// with stream ids (`enable_stream_id`), its stream id (1..=65535). Several
/// streams of one vbucket, each with its own id (and usually its own
/// collections filter), can then share a connection.
///
/// A plain `u16` converts into the key of a vbucket's only stream, so
/// every method taking `impl Into<StreamKey>` takes a vbucket number too.
///
/// ```
/// use dcp_proto::session::StreamKey;
/// let plain = StreamKey::from(5);
/// assert_eq!((plain.vbucket(), plain.stream_id()), (5, None));
/// let second = StreamKey::with_stream_id(5, 2).unwrap();
/// assert_eq!(second.stream_id(), Some(2));
/// assert_eq!(second.to_string(), "vbucket 5 (stream id 2)");
/// assert!(StreamKey::with_stream_id(5, 0).is_none());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    vbucket: u16,
    stream_id: Option<NonZeroU16>,
}

impl StreamKey {
    /// The key of `vbucket`'s only stream (no stream id).
    pub const fn new(vbucket: u16) -> Self {
        Self {
            vbucket,
            stream_id: None,
        }
    }

    /// The key of `vbucket`'s stream `stream_id`; `None` for 0, which the
    /// protocol reserves (DCP_STREAMID_INVALID).
    pub fn with_stream_id(vbucket: u16, stream_id: u16) -> Option<Self> {
        Some(Self {
            vbucket,
            stream_id: Some(NonZeroU16::new(stream_id)?),
        })
    }

    /// The key a message's vbucket and framed stream id name (a framed 0
    /// names no stream: the codec refuses it).
    pub fn of(vbucket: u16, stream_id: Option<u16>) -> Self {
        Self {
            vbucket,
            stream_id: stream_id.and_then(NonZeroU16::new),
        }
    }

    /// Every key of `vbucket`, for a range over a map of keys.
    pub(crate) fn all_of(vbucket: u16) -> std::ops::RangeInclusive<StreamKey> {
        Self::new(vbucket)..=Self {
            vbucket,
            stream_id: Some(NonZeroU16::MAX),
        }
    }

    /// The vbucket.
    pub const fn vbucket(&self) -> u16 {
        self.vbucket
    }

    /// The stream id, if the stream has one.
    pub fn stream_id(&self) -> Option<u16> {
        self.stream_id.map(NonZeroU16::get)
    }
}

impl From<u16> for StreamKey {
    fn from(vbucket: u16) -> Self {
        Self::new(vbucket)
    }
}

impl std::fmt::Display for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "vbucket {}", self.vbucket)?;
        if let Some(sid) = self.stream_id {
            write!(f, " (stream id {sid})")?;
        }
        Ok(())
    }
}

/// Every stream's position, serializable (JSON via serde) and versioned.
///
/// Feed a stream's position back through the consumer's `open_stream` to
/// resume it exactly, including mid-snapshot.
///
/// ```
/// use dcp_proto::session::{Checkpoint, StreamKey, StreamPosition};
/// let mut checkpoint = Checkpoint::new();
/// checkpoint.insert(3, StreamPosition::default());
/// let filtered = StreamKey::with_stream_id(3, 7).unwrap();
/// checkpoint.insert(filtered, StreamPosition::default());
/// let json = checkpoint.to_json().unwrap();
/// let back = Checkpoint::from_json(&json).unwrap();
/// assert_eq!(back, checkpoint);
/// assert_eq!(back.streams().count(), 2);
/// assert!(back.position(filtered).is_some());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Format version; [`Checkpoint::VERSION`] for this crate.
    pub version: u32,
    /// Position per vbucket (streams without a stream id).
    pub vbuckets: BTreeMap<u16, StreamPosition>,
    /// Positions of streams opened with a stream id: vbucket, then stream
    /// id. Absent from the JSON when empty.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub stream_ids: BTreeMap<u16, BTreeMap<u16, StreamPosition>>,
}

impl Checkpoint {
    /// The checkpoint format this crate writes and reads.
    pub const VERSION: u32 = 1;

    /// An empty checkpoint.
    pub fn new() -> Self {
        Self {
            version: Self::VERSION,
            vbuckets: BTreeMap::new(),
            stream_ids: BTreeMap::new(),
        }
    }

    /// One stream's position.
    pub fn position(&self, key: impl Into<StreamKey>) -> Option<&StreamPosition> {
        let key = key.into();
        match key.stream_id() {
            None => self.vbuckets.get(&key.vbucket()),
            Some(sid) => self.stream_ids.get(&key.vbucket())?.get(&sid),
        }
    }

    /// Sets one stream's position.
    pub fn insert(&mut self, key: impl Into<StreamKey>, position: StreamPosition) {
        let key = key.into();
        match key.stream_id() {
            None => {
                self.vbuckets.insert(key.vbucket(), position);
            }
            Some(sid) => {
                self.stream_ids
                    .entry(key.vbucket())
                    .or_default()
                    .insert(sid, position);
            }
        }
    }

    /// Every stream's position, in key order (vbucket, then stream id).
    pub fn streams(&self) -> impl Iterator<Item = (StreamKey, &StreamPosition)> + '_ {
        let plain = self.vbuckets.iter().map(|(vb, p)| (StreamKey::new(*vb), p));
        let with_ids = self.stream_ids.iter().flat_map(|(vb, ids)| {
            ids.iter()
                .map(move |(sid, p)| (StreamKey::of(*vb, Some(*sid)), p))
        });
        let mut all: Vec<_> = plain.chain(with_ids).collect();
        all.sort_by_key(|(key, _)| *key);
        all.into_iter()
    }

    /// Parses a JSON checkpoint, refusing versions this crate does not know.
    pub fn from_json(json: &[u8]) -> Result<Self, CheckpointError> {
        let checkpoint: Checkpoint = serde_json::from_slice(json)?;
        if checkpoint.version != Self::VERSION {
            return Err(CheckpointError::Version(checkpoint.version));
        }
        if checkpoint
            .stream_ids
            .values()
            .any(|ids| ids.contains_key(&0))
        {
            return Err(CheckpointError::StreamIdZero);
        }
        Ok(checkpoint)
    }

    /// The JSON form.
    pub fn to_json(&self) -> Result<Vec<u8>, CheckpointError> {
        Ok(serde_json::to_vec_pretty(self)?)
    }
}

/// Why a checkpoint could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// Not valid checkpoint JSON.
    #[error("invalid checkpoint JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A format version this crate does not read.
    #[error("unsupported checkpoint version {0}")]
    Version(u32),
    /// A stream id 0 (reserved by the protocol).
    #[error("stream id 0 in a checkpoint")]
    StreamIdZero,
}

/// A rule of the stream's message order that the producer broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Violation {
    /// A seqno not above the last one (outside an OSO snapshot).
    #[error("seqno {seqno} does not exceed the last seqno {last}")]
    SeqnoNotIncreasing {
        /// The last seqno.
        last: u64,
        /// The offending seqno.
        seqno: u64,
    },
    /// A seqno-bearing message before any snapshot marker.
    #[error("seqno {seqno} arrived before any snapshot marker")]
    NoSnapshot {
        /// The offending seqno.
        seqno: u64,
    },
    /// A seqno outside the current snapshot's bounds.
    #[error("seqno {seqno} outside the snapshot {start}..={end}")]
    OutsideSnapshot {
        /// The offending seqno.
        seqno: u64,
        /// Snapshot start.
        start: u64,
        /// Snapshot end.
        end: u64,
    },
    /// A marker whose start does not follow the previous snapshot.
    #[error("snapshot {start}..={end} does not follow the last seqno {last}")]
    MarkerBehind {
        /// Marker start.
        start: u64,
        /// Marker end.
        end: u64,
        /// The last seqno.
        last: u64,
    },
    /// An OSO start inside an OSO snapshot, or an end without a start.
    #[error("unbalanced OSO snapshot markers")]
    UnbalancedOso,
    /// An OSO item not above the seqno held before the OSO snapshot.
    #[error("OSO seqno {seqno} not above the pre-OSO seqno {before}")]
    OsoSeqnoBehind {
        /// The offending seqno.
        seqno: u64,
        /// The seqno before the OSO snapshot.
        before: u64,
    },
}

/// An in-progress out-of-sequence-order snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Oso {
    /// The position before the OSO snapshot started.
    before: u64,
    /// The largest seqno seen inside it.
    max_seen: u64,
}

/// The latest snapshot marker of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    /// Not adopted as the position's snapshot yet (it is with its first
    /// seqno-bearing message).
    Pending(u64, u64),
    Adopted(u64, u64),
}

impl Marker {
    fn bounds(self) -> Option<(u64, u64)> {
        match self {
            Marker::None => None,
            Marker::Pending(start, end) | Marker::Adopted(start, end) => Some((start, end)),
        }
    }
}

/// Moves a [`StreamPosition`] as a stream's messages arrive, validating the
/// producer's order on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamCursor {
    position: StreamPosition,
    /// The latest marker, which every following seqno must lie in.
    marker: Marker,
    /// Boxed: rare, and every stream holds two cursors.
    oso: Option<Box<Oso>>,
}

impl StreamCursor {
    /// A cursor starting at `position`.
    pub fn new(position: StreamPosition) -> Self {
        Self {
            position,
            marker: Marker::None,
            oso: None,
        }
    }

    /// The resumable position. Inside an OSO snapshot this is the position
    /// held before it: its items are not a point to resume from.
    pub fn position(&self) -> StreamPosition {
        let mut position = self.position.clone();
        if let Some(oso) = &self.oso {
            position.last_seqno = oso.before;
        }
        position
    }

    /// The last seqno received (inside OSO: the pre-OSO seqno).
    pub fn last_seqno(&self) -> u64 {
        self.oso
            .as_ref()
            .map_or(self.position.last_seqno, |o| o.before)
    }

    /// The latest marker's bounds.
    pub fn marker(&self) -> Option<(u64, u64)> {
        self.marker.bounds()
    }

    /// Whether an OSO snapshot is in progress.
    pub fn in_oso(&self) -> bool {
        self.oso.is_some()
    }

    /// Replaces the failover log (a successful stream request).
    pub fn set_failover_log(&mut self, log: FailoverLog) {
        self.position.failover_log = log;
    }

    /// Records a snapshot marker.
    pub fn on_marker(
        &mut self,
        start: u64,
        end: u64,
        purge_seqno: Option<u64>,
    ) -> Result<(), Violation> {
        let last = self.position.last_seqno;
        if self.oso.is_some() {
            return Err(Violation::UnbalancedOso);
        }
        if end < last && self.marker != Marker::None {
            // A later marker must cover seqnos above what was received.
            return Err(Violation::MarkerBehind { start, end, last });
        }
        self.marker = Marker::Pending(start, end);
        if let Some(purge) = purge_seqno {
            self.position.purge_seqno = purge;
        }
        // A marker starting at or below `last` re-covers the interrupted
        // snapshot: adopting it now keeps `snap_start <= start` true.
        if start <= last {
            self.adopt(start, end);
        }
        Ok(())
    }

    fn adopt(&mut self, start: u64, end: u64) {
        // A marker past the previous snapshot's end completes it, whether
        // or not its last seqnos were sent (filtered, not visible).
        if self.position.snapshot_end < start
            && self.position.last_seqno >= self.position.snapshot_start
        {
            let end = self.position.snapshot_end;
            self.position.note_consistent(end);
        }
        self.position.snapshot_start = start;
        self.position.snapshot_end = end;
        self.marker = Marker::Adopted(start, end);
    }

    /// Records a seqno-bearing change (mutation, deletion, expiration,
    /// system event, prepare, commit, abort).
    pub fn on_seqno(&mut self, seqno: u64) -> Result<(), Violation> {
        if let Some(oso) = &mut self.oso {
            if seqno <= oso.before {
                return Err(Violation::OsoSeqnoBehind {
                    seqno,
                    before: oso.before,
                });
            }
            oso.max_seen = oso.max_seen.max(seqno);
            return Ok(());
        }
        self.check_in_snapshot(seqno, true)?;
        self.position.last_seqno = seqno;
        self.note_if_complete();
        Ok(())
    }

    fn note_if_complete(&mut self) {
        if matches!(self.marker, Marker::Adopted(..))
            && self.position.last_seqno == self.position.snapshot_end
        {
            self.position.note_consistent(self.position.last_seqno);
        }
    }

    /// Records SEQNO_ADVANCED: the stream moved to `seqno` through changes
    /// this consumer does not receive.
    pub fn on_seqno_advanced(&mut self, seqno: u64) -> Result<(), Violation> {
        if let Some(oso) = &mut self.oso {
            oso.max_seen = oso.max_seen.max(seqno);
            return Ok(());
        }
        self.check_in_snapshot(seqno, false)?;
        self.position.last_seqno = seqno.max(self.position.last_seqno);
        self.note_if_complete();
        Ok(())
    }

    fn check_in_snapshot(
        &mut self,
        seqno: u64,
        strictly_increasing: bool,
    ) -> Result<(), Violation> {
        let last = self.position.last_seqno;
        let increasing = if strictly_increasing {
            seqno > last
        } else {
            seqno >= last
        };
        if !increasing {
            return Err(Violation::SeqnoNotIncreasing { last, seqno });
        }
        let Some((start, end)) = self.marker.bounds() else {
            return Err(Violation::NoSnapshot { seqno });
        };
        if seqno < start || seqno > end {
            return Err(Violation::OutsideSnapshot { seqno, start, end });
        }
        if matches!(self.marker, Marker::Pending(..)) {
            self.adopt(start, end);
        }
        Ok(())
    }

    /// Records OSO_SNAPSHOT(start).
    pub fn on_oso_start(&mut self) -> Result<(), Violation> {
        if self.oso.is_some() {
            return Err(Violation::UnbalancedOso);
        }
        let before = self.position.last_seqno;
        self.oso = Some(Box::new(Oso {
            before,
            max_seen: before,
        }));
        Ok(())
    }

    /// Records OSO_SNAPSHOT(end): the stream now holds everything up to the
    /// largest seqno seen (or advanced to), as a complete snapshot.
    pub fn on_oso_end(&mut self) -> Result<(), Violation> {
        let oso = self.oso.take().ok_or(Violation::UnbalancedOso)?;
        let x = oso.max_seen;
        self.position.last_seqno = x;
        self.adopt(x, x);
        self.position.note_consistent(x);
        self.marker = Marker::Adopted(x, x);
        Ok(())
    }

    /// Records a collections manifest uid carried by a system event.
    pub fn on_manifest_uid(&mut self, uid: u64) {
        if uid != 0 {
            self.position.manifest_uid = uid;
        }
    }

    /// Where to cut for a producer's rollback to `seqno`
    /// ([`StreamPosition::rollback_point`]).
    pub fn rollback_point(&self, seqno: u64) -> u64 {
        self.position.rollback_point(seqno)
    }

    /// Obeys a rollback to `seqno`.
    pub fn rollback(&mut self, seqno: u64) {
        self.position.rollback(seqno);
        self.marker = Marker::None;
        self.oso = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::FailoverEntry;

    fn log(uuid: u64) -> FailoverLog {
        FailoverLog::new(vec![FailoverEntry {
            vbucket_uuid: uuid,
            seqno: 0,
        }])
    }

    #[test]
    fn resume_requests() {
        let fresh = StreamPosition::default();
        assert_eq!(fresh.resume().start_seqno, 0);
        assert_eq!(fresh.resume().vbucket_uuid, 0);

        let mut p = StreamPosition::at(log(7), 10);
        assert_eq!(
            p.resume(),
            ResumeRequest {
                start_seqno: 10,
                vbucket_uuid: 7,
                snap_start_seqno: 10,
                snap_end_seqno: 10
            }
        );
        // Mid-snapshot: the real bounds go out.
        p.snapshot_start = 8;
        p.snapshot_end = 20;
        assert!(!p.is_consistent());
        assert_eq!(
            (p.resume().snap_start_seqno, p.resume().snap_end_seqno),
            (8, 20)
        );
    }

    #[test]
    fn markers_are_adopted_with_their_first_item() {
        let mut c = StreamCursor::new(StreamPosition::at(log(1), 10));
        c.on_marker(12, 20, None).unwrap();
        // Not adopted yet: a resume now still claims the complete {10,10}.
        assert_eq!(c.position().resume().snap_start_seqno, 10);
        c.on_seqno(13).unwrap();
        let p = c.position();
        assert_eq!(
            (p.last_seqno, p.snapshot_start, p.snapshot_end),
            (13, 12, 20)
        );
        assert_eq!(
            c.on_seqno(13),
            Err(Violation::SeqnoNotIncreasing {
                last: 13,
                seqno: 13
            })
        );
        assert_eq!(
            c.on_seqno(21),
            Err(Violation::OutsideSnapshot {
                seqno: 21,
                start: 12,
                end: 20
            })
        );
        c.on_seqno_advanced(20).unwrap();
        assert!(c.position().is_consistent());
    }

    #[test]
    fn resumed_snapshot_is_adopted_at_once() {
        let mut p = StreamPosition::at(log(1), 15);
        p.snapshot_start = 12;
        p.snapshot_end = 20;
        let mut c = StreamCursor::new(p);
        c.on_marker(12, 25, None).unwrap();
        assert_eq!(c.position().snapshot_end, 25);
    }

    #[test]
    fn items_need_a_marker() {
        let mut c = StreamCursor::new(StreamPosition::default());
        assert_eq!(c.on_seqno(1), Err(Violation::NoSnapshot { seqno: 1 }));
    }

    #[test]
    fn oso_resumes_from_before_until_it_ends() {
        let mut c = StreamCursor::new(StreamPosition::at(log(1), 0));
        c.on_oso_start().unwrap();
        c.on_seqno(9).unwrap();
        c.on_seqno(3).unwrap();
        assert_eq!(c.position().last_seqno, 0);
        c.on_seqno_advanced(12).unwrap();
        c.on_oso_end().unwrap();
        let p = c.position();
        assert_eq!(
            (p.last_seqno, p.snapshot_start, p.snapshot_end),
            (12, 12, 12)
        );
        assert_eq!(c.on_oso_end(), Err(Violation::UnbalancedOso));
    }

    #[test]
    fn rollbacks_cut_at_the_latest_consistent_point() {
        let mut c = StreamCursor::new(StreamPosition::default());
        // {0,10} complete; {11,12} complete (its item 11 deduplicated);
        // {15,20} after a gap, received up to 17.
        c.on_marker(0, 10, None).unwrap();
        c.on_seqno(4).unwrap();
        assert_eq!(c.rollback_point(4), 0, "inside the first snapshot");
        c.on_seqno(10).unwrap();
        c.on_marker(11, 12, None).unwrap();
        c.on_seqno(12).unwrap();
        c.on_marker(15, 20, None).unwrap();
        c.on_seqno(17).unwrap();
        assert_eq!(c.position().consistent_points, [0, 10, 12]);
        assert_eq!(c.rollback_point(12), 12);
        assert_eq!(c.rollback_point(11), 10, "11 may have been deduplicated");
        assert_eq!(
            c.rollback_point(14),
            12,
            "a gap can hide deduplicated items"
        );
        assert_eq!(c.rollback_point(16), 12, "inside the partial snapshot");
        c.rollback(c.rollback_point(16));
        assert_eq!(c.position().last_seqno, 12);
        assert_eq!(c.position().consistent_points, [0, 10, 12]);

        // A marker past the end completes a snapshot whose last items were
        // not sent.
        c.on_marker(13, 30, None).unwrap();
        c.on_seqno(25).unwrap();
        c.on_marker(31, 40, None).unwrap();
        c.on_seqno(33).unwrap();
        assert_eq!(c.rollback_point(32), 30);
    }

    #[test]
    fn rollback_points_below_the_known_ones() {
        // Started from now at 100: nothing is held below it.
        let c = StreamCursor::new(StreamPosition::at(log(1), 100));
        assert_eq!(c.rollback_point(90), 90);
        // A position without points (an older checkpoint): only 0 is safe
        // until the next marker shows its own snapshot complete.
        let mut legacy = StreamPosition::at(log(1), 100);
        legacy.consistent_points.clear();
        let mut c = StreamCursor::new(legacy);
        assert_eq!(c.rollback_point(90), 0);
        c.on_marker(101, 110, None).unwrap();
        c.on_seqno(110).unwrap();
        assert_eq!((c.rollback_point(110), c.rollback_point(105)), (110, 100));
        // Only the latest points are kept.
        let mut c = StreamCursor::new(StreamPosition::default());
        for i in 0..40u64 {
            c.on_marker(i * 10 + 1, i * 10 + 10, None).unwrap();
            c.on_seqno(i * 10 + 10).unwrap();
        }
        let p = c.position();
        assert_eq!(p.consistent_points.len(), StreamPosition::CONSISTENT_POINTS);
        assert_eq!(p.consistent_points[0], 0, "the origin stays");
        assert_eq!((c.rollback_point(395), c.rollback_point(50)), (390, 0));
        // Kept in the checkpoint.
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<StreamPosition>(&json).unwrap(), p);
    }

    #[test]
    fn rollback_truncates() {
        let mut c = StreamCursor::new(StreamPosition::at(log(1), 50));
        c.on_marker(51, 60, None).unwrap();
        c.on_seqno(55).unwrap();
        c.rollback(40);
        let p = c.position();
        assert_eq!(
            (p.last_seqno, p.snapshot_start, p.snapshot_end),
            (40, 40, 40)
        );
        assert_eq!(c.marker(), None);
    }

    #[test]
    fn checkpoint_json_round_trip() {
        let mut cp = Checkpoint::new();
        cp.vbuckets.insert(3, StreamPosition::at(log(9), 4));
        let json = cp.to_json().unwrap();
        assert_eq!(Checkpoint::from_json(&json).unwrap(), cp);
        let err = Checkpoint::from_json(br#"{"version":99,"vbuckets":{}}"#).unwrap_err();
        assert!(matches!(err, CheckpointError::Version(99)));
    }
}
