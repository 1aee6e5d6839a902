//! `shmchan bench --only bcast`: the broadcast flavor between processes.
//!
//! - Round trip: the parent publishes a u64 on one broadcast channel, a child
//!   subscriber process (pinned to CPU 1) republishes it on a second channel the
//!   parent subscribes to; both sides poll with `try_recv` (busy), as the SPSC `busy`
//!   round trip does. Interleaved with floor probes by the caller.
//! - Streaming: the parent publishes 8-byte messages on a lossless channel to 1, 2 and
//!   4 subscriber processes (not pinned) that receive with the default wait strategy
//!   (`recv`, spin then park) and check every value; the figure is the publisher's
//!   rate, which the slowest subscriber sets. On two cores, more than one subscriber
//!   shares a core with another process, so those lines measure the scheduler too.

use shmchan::broadcast::{Policy, Publisher, Subscriber, TryRecvError};
use shmchan::{CreateMode, Options, TrySendError};
use std::error::Error;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CHILD_ENV: &str = "SHMCHAN_BCAST_BENCH_CHILD";
/// The value that ends a stream.
const END: u64 = u64::MAX;

fn create_opts(cap: usize, subs: u32) -> Options {
    Options::new()
        .capacity(cap)
        .subscribers(subs)
        .policy(Policy::Lossless)
        .mode(CreateMode::CreateExclusive)
}

/// Polls `try_recv` until a message (or an error other than `Empty`).
fn spin_recv(rx: &Subscriber<u64>) -> Result<u64> {
    loop {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Empty) => std::hint::spin_loop(),
            Err(e) => return Err(e.into()),
        }
    }
}

fn spin_send(tx: &Publisher<u64>, v: u64) -> Result<()> {
    let mut v = v;
    loop {
        match tx.try_send(v) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(back)) => {
                v = back;
                std::hint::spin_loop();
            }
            Err(TrySendError::Disconnected(_)) => return Err("disconnected".into()),
        }
    }
}

/// If this process is a broadcast benchmark child, runs its role and exits.
pub fn maybe_run_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = (|| -> Result<()> {
        let f: Vec<&str> = spec.splitn(3, ':').collect();
        let [role, cpu, name] = f[..] else {
            return Err("bad child spec".into());
        };
        let _ = crate::baselines::pin_to_cpu(cpu.parse()?);
        match role {
            // Subscribe to `name-a`, republish on `name-b`, until END.
            "echo" => {
                let rx = Subscriber::<u64>::open(&format!("{name}-a"))?;
                let tx = Publisher::<u64>::open(&format!("{name}-b"))?;
                loop {
                    let v = spin_recv(&rx)?;
                    spin_send(&tx, v)?;
                    if v == END {
                        return Ok(());
                    }
                }
            }
            // Receive 0, 1, 2, ... until END; any other value is an error. `sink`
            // waits with the default strategy, `sinkbusy` polls.
            "sink" | "sinkbusy" => {
                let rx = Subscriber::<u64>::open(name)?;
                let busy = role == "sinkbusy";
                let mut next = 0;
                loop {
                    let v = if busy { spin_recv(&rx)? } else { rx.recv()? };
                    if v == END {
                        return Ok(());
                    }
                    if v != next {
                        return Err(format!("got {v}, expected {next}").into());
                    }
                    next += 1;
                }
            }
            // As `sink`, taking whatever is there after each wait in one batch.
            "sinkbatch" | "sinkblock" => {
                let wait = if role == "sinkblock" {
                    shmchan::WaitStrategy::Block
                } else {
                    shmchan::WaitStrategy::default()
                };
                let rx =
                    Subscriber::<u64>::with_options(name, &Options::new().wait_strategy(wait))?;
                let mut buf = [0u64; 256];
                let mut next = 0;
                let mut check = |v: u64| -> Result<bool> {
                    if v == END {
                        return Ok(true);
                    }
                    if v != next {
                        return Err(format!("got {v}, expected {next}").into());
                    }
                    next += 1;
                    Ok(false)
                };
                loop {
                    if check(rx.recv()?)? {
                        return Ok(());
                    }
                    if let Ok(n) = rx.try_recv_batch(&mut buf) {
                        for &v in &buf[..n] {
                            if check(v)? {
                                return Ok(());
                            }
                        }
                    }
                }
            }
            r => Err(format!("unknown role {r}").into()),
        }
    })();
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("shmchan broadcast bench child: {e}");
            std::process::exit(1)
        }
    }
}

fn spawn(role: &str, cpu: usize, name: &str) -> Result<Child> {
    Ok(Command::new(std::env::current_exe()?)
        .env(CHILD_ENV, format!("{role}:{cpu}:{name}"))
        .stdin(Stdio::null())
        .spawn()?)
}

/// Waits for `children` to exit successfully (kills them after 30 s).
fn reap(children: Vec<Child>) -> Result<()> {
    for mut c in children {
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() {
                    return Err(format!("broadcast benchmark child failed: {st}").into());
                }
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = c.kill();
                let _ = c.wait();
                return Err("broadcast benchmark child did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

fn unique(tag: &str) -> String {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("shmchan-bench-bcast-{tag}-{}-{n}", std::process::id())
}

/// `iters` timed round trips (after a warm-up): sorted nanoseconds.
pub fn rtt(iters: usize) -> Result<Vec<u64>> {
    let name = unique("rtt");
    let tx = Publisher::<u64>::with_options(&format!("{name}-a"), &create_opts(4096, 1))?;
    let rx = Subscriber::<u64>::with_options(&format!("{name}-b"), &create_opts(4096, 1))?;
    let child = spawn("echo", 1, &name)?;
    let t = Instant::now();
    while tx.subscriber_count() == 0 {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("the echo child did not subscribe".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let warm = (iters * 5).clamp(2_000, 20_000);
    let mut samples = crate::baselines::sample_buffer(iters);
    for i in 0..(warm + iters) as u64 {
        let t0 = Instant::now();
        spin_send(&tx, i)?;
        let v = spin_recv(&rx)?;
        crate::baselines::record(&mut samples, i as usize, t0);
        if v != i {
            return Err(format!("echo returned {v}, expected {i}").into());
        }
    }
    spin_send(&tx, END)?;
    // The echo's last answer, so it never blocks on a full ring of ours.
    let _ = spin_recv(&rx);
    reap(vec![child])?;
    samples.sort_unstable();
    Ok(samples)
}

/// How subscribers receive in a streaming run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// One subscriber pinned to CPU 1, polling `try_recv` (as the SPSC `busy` stream).
    Busy,
    /// Unpinned subscribers, `recv` with the default wait strategy.
    Spin,
    /// As `Spin`, then `try_recv_batch` for whatever else is there.
    Batch,
    /// As `Batch`, sleeping at once when there is nothing (no spinning).
    Block,
}

/// How long the publisher took to stream `n` u64s to `subs` subscriber processes that
/// receive as `sink` says.
pub fn stream(subs: usize, n: u64, sink: Sink) -> Result<Duration> {
    let busy = sink == Sink::Busy;
    let name = unique("stream");
    let tx = Publisher::<u64>::with_options(&name, &create_opts(4096, subs as u32))?;
    let children = (0..subs)
        .map(|_| match sink {
            Sink::Busy => spawn("sinkbusy", 1, &name),
            Sink::Spin => spawn("sink", usize::MAX, &name),
            Sink::Batch => spawn("sinkbatch", usize::MAX, &name),
            Sink::Block => spawn("sinkblock", usize::MAX, &name),
        })
        .collect::<Result<Vec<_>>>()?;
    let t = Instant::now();
    while tx.subscriber_count() < subs {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("the sinks did not subscribe".into());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let t0 = Instant::now();
    if busy {
        for i in 0..n {
            spin_send(&tx, i)?;
        }
        spin_send(&tx, END)?;
    } else {
        for i in 0..n {
            tx.send(i).map_err(|_| "publisher disconnected")?;
        }
        tx.send(END).map_err(|_| "publisher disconnected")?;
    }
    let took = t0.elapsed();
    reap(children)?;
    Ok(took)
}
