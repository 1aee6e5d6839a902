//! The in-process yardstick for streaming: rtrb, the fastest well-kept Rust SPSC ring,
//! between two threads of this process pinned to CPUs 0 and 1, measured in the same
//! run as shmchan's cross-process streams.

use crate::baselines;
use std::time::{Duration, Instant};

/// Messages per chunk when `chunks` is set (the same batch size as shmchan's).
pub(crate) const CHUNK: usize = 64;

/// Streams `n` `u64`s through a 4096-slot rtrb ring from this thread (on CPU 0) to a
/// consumer thread (on CPU 1), one `push`/`pop` per message or, with `chunks`, through
/// rtrb's chunk API, [`CHUNK`] at a time. Returns the time it took; an error if the
/// consumer's checksum is wrong.
pub(crate) fn stream(n: u64, chunks: bool) -> Result<Duration, String> {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(4096);
    let consumer = std::thread::spawn(move || {
        let _ = baselines::pin_to_cpu(1);
        let mut sum = 0u64;
        let mut got = 0u64;
        while got < n {
            if chunks {
                let k = c.slots().min(CHUNK);
                if k == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                if let Ok(chunk) = c.read_chunk(k) {
                    let (a, b) = chunk.as_slices();
                    sum = a.iter().chain(b).fold(sum, |s, v| s.wrapping_add(*v));
                    got += k as u64;
                    chunk.commit_all();
                }
            } else if let Ok(v) = c.pop() {
                sum = sum.wrapping_add(v);
                got += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        sum
    });
    let _ = baselines::pin_to_cpu(0);
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < n {
        if chunks {
            let want = (n - i).min(CHUNK as u64) as usize;
            if let Ok(chunk) = p.write_chunk_uninit(want) {
                i += chunk.fill_from_iter(i..i + want as u64) as u64;
            } else {
                std::hint::spin_loop();
            }
        } else if p.push(i).is_ok() {
            i += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    let sum = consumer
        .join()
        .map_err(|_| "rtrb consumer thread panicked".to_owned())?;
    let took = t0.elapsed();
    let expect = (0..n).fold(0u64, |s, v| s.wrapping_add(v));
    if sum != expect {
        return Err(format!("rtrb baseline: checksum {sum}, expected {expect}"));
    }
    Ok(took)
}
