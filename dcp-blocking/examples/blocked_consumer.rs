//! Peak memory of a consumer that holds every event without acknowledging
//! it: the producer must stop at the flow-control window, so the process
//! grows by about the window and no more.
//!
//! Start a server with large documents, then run this against it once per
//! window size (it prints one table row):
//!
//! ```sh
//! cargo run --release -p dcp-tokio --bin dcp -- serve --vbuckets 16 --preload 40000 \
//!     --value-size 1000-1000 --listen 127.0.0.1:11299 &
//! cargo run --release -p dcp-blocking --example blocked_consumer -- 127.0.0.1:11299 16
//! ```

use std::time::Duration;

use dcp_blocking::Connection;
use dcp_proto::auth::Credentials;
use dcp_proto::consumer::{ConsumerConfig, StreamStart};

/// Resident and peak resident memory of this process, in bytes.
fn memory() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:11210".into());
    let window_mib: u32 = args.next().map_or(Ok(16), |w| w.parse())?;
    let vbuckets: u16 = args.next().map_or(Ok(16), |v| v.parse())?;
    let window = window_mib * 1024 * 1024;

    let (base_rss, _) = memory();
    let config = ConsumerConfig::new(format!("blocked:{window_mib}"), "default")
        .with_credentials(Credentials::new("Administrator", "password"))
        .with_buffer_size(window);
    let mut conn = Connection::connect(addr.as_str(), config)?;
    for vb in 0..vbuckets {
        conn.open_stream(vb, StreamStart::Beginning, None)?;
    }
    // Hold every event, acknowledge nothing, until nothing more arrives.
    let mut held = Vec::new();
    let mut largest = 0usize;
    while let Some(event) = conn.next_event_timeout(Duration::from_secs(2))? {
        largest = largest.max(event.credit().bytes() as usize);
        held.push(event);
    }
    let stats = conn.stats();
    let (rss, hwm) = memory();
    let grown = hwm.saturating_sub(base_rss);
    let bound = window as f64 * 1.25 + largest as f64;
    println!(
        "| {window_mib} MiB | {} events | {:.1} MiB unacked | peak +{:.1} MiB (rss +{:.1} MiB) | bound 1.25×window+frame {:.1} MiB | {:.2}× window |",
        held.len(),
        stats.unacked_bytes as f64 / 1048576.0,
        grown as f64 / 1048576.0,
        rss.saturating_sub(base_rss) as f64 / 1048576.0,
        bound / 1048576.0,
        grown as f64 / f64::from(window),
    );
    Ok(())
}
