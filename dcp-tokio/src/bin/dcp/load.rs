//! Sample documents and a generated write load for the local server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dcp_tokio::ServerHandle;
use dcp_tokio::dcp_proto::bucket::{Bucket, StoreMode, WriteOptions};
use dcp_tokio::dcp_proto::codec::DurabilityLevel;

use crate::args::LoadArgs;

/// A small deterministic generator (SplitMix64): reproducible data from
/// `--seed`, no dependency.
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed ^ 0x005e_ed0f_d0c5)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

const CITIES: [&str; 8] = [
    "Lisbon", "Osaka", "Nairobi", "Quito", "Oslo", "Hanoi", "Perth", "Tucson",
];
const NAMES: [&str; 8] = [
    "Ada", "Grace", "Linus", "Barbara", "Ken", "Margaret", "Dennis", "Frances",
];

/// The key of sample document `i`.
pub(crate) fn key(i: u64) -> String {
    format!("user::{i:06}")
}

/// A JSON document for key number `i`, padded to about `size` bytes.
pub(crate) fn document(i: u64, version: u64, size: usize, rng: &mut Rng) -> String {
    let name = NAMES[(rng.below(8)) as usize];
    let city = CITIES[(rng.below(8)) as usize];
    let updated = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let mut doc = format!(
        "{{\"type\":\"user\",\"id\":{i},\"name\":\"{name} {i}\",\"city\":\"{city}\",\"visits\":{version},\"updated\":{updated}"
    );
    let pad = size.saturating_sub(doc.len() + 10);
    if pad > 0 {
        doc.push_str(",\"bio\":\"");
        doc.extend(std::iter::repeat_n('x', pad));
        doc.push('"');
    }
    doc.push('}');
    doc
}

/// Writes `count` sample documents (keys 0..count).
pub(crate) fn preload(handle: &ServerHandle, count: u64, load: &LoadArgs) {
    let mut rng = Rng::new(load.seed);
    let (min, max) = load.value_size;
    let mut next = 0;
    while next < count {
        let batch = (count - next).min(1000);
        handle.with_bucket(|bucket, wall| {
            for i in next..next + batch {
                let size = min + rng.below((max - min + 1) as u64) as usize;
                let doc = document(i, 1, size, &mut rng);
                let _ = bucket.set(key(i).as_bytes(), doc, WriteOptions::new(), wall);
            }
        });
        next += batch;
    }
}

/// Writes about `rate` changes per second until the server shuts down:
/// updates of random keys, deletes and short expiries in the given
/// ratios; runs the expiry pager every second.
pub(crate) async fn run(handle: ServerHandle, rate: f64, load: LoadArgs) {
    if rate <= 0.0 {
        return;
    }
    const TICK: Duration = Duration::from_millis(50);
    let mut rng = Rng::new(load.seed.wrapping_add(1));
    let mut ticker = tokio::time::interval(TICK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut owed = 0.0;
    let mut version = 1;
    let mut ticks = 0u64;
    while !handle.is_shut_down() {
        ticker.tick().await;
        ticks += 1;
        owed += rate * TICK.as_secs_f64();
        let n = owed.floor();
        owed -= n;
        version += 1;
        handle.with_bucket(|bucket, wall| {
            for _ in 0..n as u64 {
                write_one(bucket, wall, &load, version, &mut rng);
            }
            if ticks.is_multiple_of(20) {
                bucket.expire_due(wall);
            }
        });
    }
}

fn write_one(bucket: &mut Bucket, wall: SystemTime, load: &LoadArgs, version: u64, rng: &mut Rng) {
    let i = rng.below(load.keys);
    let key = key(i);
    let roll = rng.unit();
    if roll < load.delete_ratio {
        // Deleting a missing key fails; that write is simply skipped.
        let _ = bucket.delete(key.as_bytes(), 0, wall);
        return;
    }
    let (min, max) = load.value_size;
    let size = min + rng.below((max - min + 1) as u64) as usize;
    let mut options = WriteOptions::new();
    if rng.unit() < load.expiry_ratio {
        options = options.expiry(5 + rng.below(56) as u32);
    }
    let doc = document(i, version, size, rng);
    // A durable write whose key has a pending prepare fails
    // (SyncWriteInProgress); that write is skipped.
    let _ = if rng.unit() < load.durable_ratio {
        bucket
            .durable_store(
                StoreMode::Set,
                key.as_bytes(),
                doc,
                options,
                DurabilityLevel::Majority,
                wall,
            )
            .map(|_| ())
    } else {
        bucket.set(key.as_bytes(), doc, options, wall).map(|_| ())
    };
}
