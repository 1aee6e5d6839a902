//! Two processes ping-pong `u64` messages through two shmchan channels.
//!
//! ```text
//! cargo run --release --example pingpong [-- --mode busy|spin|block] [--iters N]
//! ```
//!
//! The parent (pinned to CPU 0) creates the channels `ping` and `pong`, starts itself
//! again as the child (pinned to CPU 1), which echoes every message back. It measures
//! the round trip of each message, a one-way streaming throughput, and, in the same
//! run, the raw cross-core floor (two processes bouncing one cache line each) and a
//! Unix-socket ping-pong as baselines. The last line is
//! `rtt_ns p50=N p99=N p999=N max=N`. Both channels are removed at the end.

#[allow(dead_code)]
#[path = "../src/bin/shmchan/baselines.rs"]
mod baselines;

use shmchan::{CreateMode, Options, Receiver, Sender, WaitStrategy};
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "SHMCHAN_PINGPONG_CHILD";
/// Messages with this bit set are streamed (not echoed)...
const STREAM: u64 = 1 << 63;
/// ...except the one that also has this bit, which ends the stream.
const STREAM_END: u64 = 1 << 62;

fn strategy(mode: &str) -> Option<WaitStrategy> {
    match mode {
        "busy" => Some(WaitStrategy::BusySpin),
        "spin" => Some(WaitStrategy::default()),
        "block" => Some(WaitStrategy::Block),
        _ => None,
    }
}

struct Args {
    mode: String,
    iters: usize,
    stream: usize,
    baselines: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        mode: "spin".into(),
        iters: 100_000,
        stream: 2_000_000,
        baselines: true,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut num = |what: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.replace('_', "").parse().ok())
                .ok_or(format!("{what} needs a number"))
        };
        match arg.as_str() {
            "--mode" => a.mode = it.next().ok_or("--mode needs busy|spin|block")?,
            "--iters" => a.iters = num("--iters")?.max(1),
            "--stream" => a.stream = num("--stream")?.max(1),
            "--no-baselines" => a.baselines = false,
            "-h" | "--help" => {
                return Err("usage: pingpong [--mode busy|spin|block] [--iters N] [--stream N] [--no-baselines]".into());
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    if strategy(&a.mode).is_none() {
        return Err(format!("unknown mode {:?}: busy, spin or block", a.mode));
    }
    Ok(a)
}

/// The child: echo every ping back until the parent's sender goes away.
fn child(base: &str, mode: &str) -> Result<(), Box<dyn std::error::Error>> {
    let _ = baselines::pin_to_cpu(1);
    let opts = Options::new().wait_strategy(strategy(mode).unwrap_or_default());
    let rx = Receiver::<u64>::with_options(&format!("{base}-ping"), &opts)?;
    let tx = Sender::<u64>::with_options(&format!("{base}-pong"), &opts)?;
    for v in rx.iter() {
        if v & STREAM == 0 || v & STREAM_END != 0 {
            tx.send(v)?;
        }
    }
    Ok(())
}

/// Kills and reaps the child if the parent bails out early.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn parent(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let _ = baselines::pin_to_cpu(0);
    let wait = strategy(&args.mode).unwrap_or_default();
    let base = format!("shmchan-pingpong-{}", std::process::id());
    let opts = Options::new()
        .capacity(1024)
        .mode(CreateMode::CreateExclusive)
        .wait_strategy(wait);
    let ping = Sender::<u64>::with_options(&format!("{base}-ping"), &opts)?;
    let pong = Receiver::<u64>::with_options(&format!("{base}-pong"), &opts)?;
    let exe = std::env::current_exe()?;
    let mut guard = ChildGuard(Some(
        Command::new(exe)
            .env(CHILD_ENV, format!("{base}:{}", args.mode))
            .spawn()?,
    ));

    println!(
        "shmchan pingpong: parent pid {} on CPU 0, child on CPU 1, 8-byte messages, wait {:?}",
        std::process::id(),
        wait
    );
    let floor_before = if args.baselines {
        Some(baselines::floor_probe(20_000)?.median())
    } else {
        None
    };

    // Round trips: warm up, then time each one.
    let warmup = (args.iters / 10).max(1000);
    let mut samples = Vec::with_capacity(args.iters);
    for i in 0..(warmup + args.iters) as u64 {
        let t0 = Instant::now();
        ping.send(i).map_err(|_| "child went away")?;
        let v = pong.recv().map_err(|_| "child went away")?;
        let dt = t0.elapsed();
        if v != i {
            return Err(format!("echo mismatch: sent {i}, got {v}").into());
        }
        if i as usize >= warmup {
            samples.push(dt.as_nanos() as u64);
        }
    }
    samples.sort_unstable();

    // One-way streaming: the child echoes only the last message.
    let t0 = Instant::now();
    for i in 0..args.stream as u64 {
        let flag = if i + 1 == args.stream as u64 {
            STREAM | STREAM_END
        } else {
            STREAM
        };
        ping.send(flag | i).map_err(|_| "child went away")?;
    }
    pong.recv_timeout(Duration::from_secs(60))
        .map_err(|_| "no end-of-stream echo")?;
    let stream_secs = t0.elapsed().as_secs_f64();

    let floor_after = if args.baselines {
        Some(baselines::floor_probe(20_000)?.median())
    } else {
        None
    };
    let unix = if args.baselines {
        let mut s = baselines::unix_socket_rtt(20_000, 8)?;
        s.ns.sort_unstable();
        Some(s)
    } else {
        None
    };

    drop(ping); // the child sees Disconnected and exits
    if let Some(mut c) = guard.0.take() {
        let status = c.wait()?;
        if !status.success() {
            return Err(format!("child exited with {status}").into());
        }
    }

    let (p50, p90, p99, p999, max) = (
        pct(&samples, 50.0),
        pct(&samples, 90.0),
        pct(&samples, 99.0),
        pct(&samples, 99.9),
        *samples.last().unwrap_or(&0),
    );
    if let (Some(fb), Some(fa)) = (floor_before, floor_after) {
        let floor = (fb + fa) / 2;
        let spread = fb.max(fa) as f64 / fb.min(fa).max(1) as f64;
        println!(
            "floor probe (1 cache line each way): p50 {fb} ns before, {fa} ns after{}",
            if spread > 1.2 {
                "  [!] floor moved >20% during the run"
            } else {
                ""
            }
        );
        println!(
            "shmchan round trip: p50 {p50} ns = {:.2}x floor (floor {:+} ns), p90 {p90}, p99 {p99}, p99.9 {p999}, max {max} ns",
            p50 as f64 / floor.max(1) as f64,
            p50 as i64 - floor as i64
        );
    } else {
        println!(
            "shmchan round trip: p50 {p50} ns, p90 {p90}, p99 {p99}, p99.9 {p999}, max {max} ns"
        );
    }
    if let Some(u) = &unix {
        let (u50, u99) = (pct(&u.ns, 50.0), pct(&u.ns, 99.0));
        println!(
            "unix socket round trip: p50 {u50} ns, p99 {u99} ns -> shmchan is {:.0}x faster at p50",
            u50 as f64 / p50.max(1) as f64
        );
    }
    println!(
        "streaming one way: {:.1} M msgs/s ({} x 8 B in {:.3} s)",
        args.stream as f64 / stream_secs / 1e6,
        args.stream,
        stream_secs
    );
    println!("rtt_ns p50={p50} p99={p99} p999={p999} max={max}");
    Ok(())
}

fn main() -> ExitCode {
    baselines::maybe_run_child();
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        let (base, mode) = spec.rsplit_once(':').unwrap_or((spec.as_str(), "spin"));
        return match child(base, mode) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pingpong child: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match parent(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pingpong: {e}");
            ExitCode::FAILURE
        }
    }
}
