//! Cost of many channels in one process: creates N SPSC pairs (a creating sender and
//! an opening receiver each), then prints the open file descriptors, the time per
//! pair and the resident memory per pair.
//!
//! ```text
//! cargo run --release --example many_channels -- 10000
//! ```

use shmchan::{Receiver, Sender};
use std::time::Instant;

fn fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = match std::env::args().nth(1) {
        Some(a) => a.parse()?,
        None => 10_000,
    };
    let (fd0, rss0) = (fds(), rss_kib());
    let t = Instant::now();
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("shmchan-many-{}-{i}", std::process::id());
        let tx = Sender::<u64>::create(&name, 16)?;
        let rx = Receiver::<u64>::open(&name)?;
        pairs.push((tx, rx));
    }
    let took = t.elapsed();
    let (fd1, rss1) = (fds(), rss_kib());
    // Each pair works.
    for (tx, rx) in &pairs {
        tx.send(7)?;
        assert_eq!(rx.recv()?, 7);
    }
    println!(
        "{n} channel pairs: {} fds open ({} before), {:.1} us per pair, {:.1} KiB RSS per pair",
        fd1,
        fd0,
        took.as_secs_f64() * 1e6 / n as f64,
        (rss1.saturating_sub(rss0)) as f64 / n as f64
    );
    Ok(())
}
