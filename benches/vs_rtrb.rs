//! SPSC streaming of 8-byte messages: shmchan across two processes (the `shmchan
//! bench` command, one message per send and batches of 64) against rtrb between two
//! threads of one process, interleaved in the same run, 5 rounds; prints each ratio's
//! median, min and max. Run: `cargo bench --bench vs_rtrb`.

use std::process::Command;
use std::time::Instant;

const N: u64 = 4_000_000;
const ROUNDS: usize = 5;

fn pin(cpu: usize) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    // Best effort: on a machine with one CPU the threads share it.
    let _ = rustix::thread::sched_setaffinity(None, &set);
}

/// rtrb between two threads pinned to CPUs 0 and 1: messages per second.
fn rtrb_stream(batch: bool) -> f64 {
    let (mut p, mut c) = rtrb::RingBuffer::<u64>::new(4096);
    let consumer = std::thread::spawn(move || {
        pin(1);
        let mut sum = 0u64;
        let mut got = 0u64;
        while got < N {
            if batch {
                let n = c.slots().min(64);
                if n == 0 {
                    std::hint::spin_loop();
                    continue;
                }
                if let Ok(chunk) = c.read_chunk(n) {
                    let (a, b) = chunk.as_slices();
                    sum = a.iter().chain(b).fold(sum, |s, v| s.wrapping_add(*v));
                    got += n as u64;
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
    pin(0);
    let t0 = Instant::now();
    let mut i = 0u64;
    while i < N {
        if batch {
            let want = (N - i).min(64) as usize;
            if let Ok(chunk) = p.write_chunk_uninit(want) {
                let start = i;
                let n = chunk.fill_from_iter(start..start + want as u64);
                i += n as u64;
            } else {
                std::hint::spin_loop();
            }
        } else if p.push(i).is_ok() {
            i += 1;
        } else {
            std::hint::spin_loop();
        }
    }
    let sum = consumer.join().expect("consumer thread");
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(sum, N * (N - 1) / 2, "rtrb lost messages");
    N as f64 / secs
}

/// shmchan across processes, from `shmchan bench --json`: (one per send, batches).
fn shmchan_stream() -> (f64, f64) {
    let out = Command::new(env!("CARGO_BIN_EXE_shmchan"))
        .args(["bench", "--only", "stream", "--sizes", "8", "--json"])
        .args(["--stream-msgs", &N.to_string()])
        .output()
        .expect("run shmchan bench");
    assert!(out.status.success(), "shmchan bench failed: {out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let rate = |mode: &str| {
        v["records"]
            .as_array()
            .and_then(|r| {
                r.iter()
                    .find(|r| r["bench"] == "stream" && r["mode"] == mode)
            })
            .and_then(|r| r["msgs_per_s"].as_f64())
            .unwrap_or(0.0)
    };
    (rate("busy"), rate("busy+batch"))
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

fn main() {
    let mut plain = Vec::new();
    let mut batched = Vec::new();
    let mut rows = Vec::new();
    for round in 0..ROUNDS {
        let r = rtrb_stream(false);
        let rb = rtrb_stream(true);
        let (s, sb) = shmchan_stream();
        println!(
            "round {round}: rtrb {:.0} M/s (chunks {:.0} M/s), shmchan {:.0} M/s (batches {:.0} M/s)",
            r / 1e6,
            rb / 1e6,
            s / 1e6,
            sb / 1e6
        );
        plain.push(s / r);
        batched.push(sb / r);
        rows.push((r, rb, s, sb));
    }
    let (m, lo, hi) = stats(plain);
    println!(
        "shmchan (2 processes, 1 send per message) / rtrb (2 threads): median {m:.2}x (min {lo:.2}, max {hi:.2})"
    );
    let (m, lo, hi) = stats(batched);
    println!(
        "shmchan (2 processes, batches of 64)      / rtrb (2 threads): median {m:.2}x (min {lo:.2}, max {hi:.2})"
    );
}
