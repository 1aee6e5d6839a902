//! MPMC streaming throughput across processes, next to crossbeam's `ArrayQueue` with
//! the same numbers of producer and consumer threads in one process.

use crossbeam_queue::ArrayQueue;
use shmchan::{CreateMode, Options, mpmc};
use std::error::Error;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CHILD_ENV: &str = "SHMCHAN_MPMC_CHILD";
const CAPACITY: usize = 4096;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct MpmcResult {
    pub producers: usize,
    pub consumers: usize,
    pub shmchan_msgs_per_s: f64,
    pub arrayqueue_msgs_per_s: f64,
}

/// CLOCK_MONOTONIC in ns: comparable between processes.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

fn spin_until(t0: u64) {
    while mono_ns() < t0 {
        std::hint::spin_loop();
    }
}

/// If this process is an MPMC benchmark child, runs its role and exits.
pub fn maybe_run_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = (|| -> Result<()> {
        let f: Vec<&str> = spec.splitn(5, ':').collect();
        let [role, id, count, t0, name] = f[..] else {
            return Err("bad child spec".into());
        };
        let (id, count, t0): (u64, u64, u64) = (id.parse()?, count.parse()?, t0.parse()?);
        match role {
            "producer" => {
                let tx = mpmc::Sender::<u64>::open(name)?;
                spin_until(t0);
                for i in 0..count {
                    tx.send(id << 40 | i).map_err(|_| "receivers gone")?;
                }
                Ok(())
            }
            "consumer" => {
                let rx = mpmc::Receiver::<u64>::open(name)?;
                let (mut n, mut sum, mut last) = (0u64, 0u64, 0u64);
                while let Ok(v) = rx.recv() {
                    n += 1;
                    sum = sum.wrapping_add(v);
                    last = mono_ns();
                }
                println!("{n} {sum} {last}");
                Ok(())
            }
            r => Err(format!("unknown role {r}").into()),
        }
    })();
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("shmchan mpmc bench child: {e}");
            std::process::exit(1)
        }
    }
}

fn expected_sum(producers: u64, per: u64) -> u64 {
    let mut s = 0u64;
    for id in 0..producers {
        for i in 0..per {
            s = s.wrapping_add(id << 40 | i);
        }
    }
    s
}

fn shmchan_run(p: usize, c: usize, per: u64) -> Result<f64> {
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("shmchan-bench-mpmc-{}-{n}", std::process::id());
    // The parent holds a receiver that never receives: it owns the name.
    let _owner = mpmc::Receiver::<u64>::with_options(
        &name,
        &Options::new()
            .capacity(CAPACITY)
            .mode(CreateMode::CreateExclusive)
            .max_peers((p + c + 1) as u32),
    )?;
    let exe = std::env::current_exe()?;
    let t0 = mono_ns() + 150_000_000;
    let spawn = |role: &str, id: usize| {
        Command::new(&exe)
            .env(CHILD_ENV, format!("{role}:{id}:{per}:{t0}:{name}"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
    };
    let consumers = (0..c)
        .map(|i| spawn("consumer", i))
        .collect::<std::io::Result<Vec<_>>>()?;
    let producers = (0..p)
        .map(|i| spawn("producer", i))
        .collect::<std::io::Result<Vec<_>>>()?;
    for mut pr in producers {
        let st = pr.wait()?;
        if !st.success() {
            return Err(format!("producer failed: {st}").into());
        }
    }
    let (mut total, mut sum, mut last) = (0u64, 0u64, 0u64);
    for co in consumers {
        let out = co.wait_with_output()?;
        if !out.status.success() {
            return Err(format!("consumer failed: {}", out.status).into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let f: Vec<u64> = text
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if let [n, s, l] = f[..] {
            total += n;
            sum = sum.wrapping_add(s);
            last = last.max(l);
        }
    }
    let want = per * p as u64;
    if total != want || sum != expected_sum(p as u64, per) {
        return Err(format!("mpmc bench lost or corrupted messages: {total} of {want}").into());
    }
    Ok(want as f64 / (last.saturating_sub(t0).max(1) as f64 / 1e9))
}

fn arrayqueue_run(p: usize, c: usize, per: u64) -> f64 {
    let q = Arc::new(ArrayQueue::<u64>::new(CAPACITY));
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let barrier = Arc::new(Barrier::new(p + c + 1));
    let mut hs = Vec::new();
    for id in 0..p as u64 {
        let (q, b, done) = (q.clone(), barrier.clone(), done.clone());
        hs.push(std::thread::spawn(move || {
            b.wait();
            let backoff = crossbeam_utils::Backoff::new();
            for i in 0..per {
                let mut v = id << 40 | i;
                while let Err(back) = q.push(v) {
                    v = back;
                    backoff.snooze();
                }
                backoff.reset();
            }
            done.fetch_add(1, std::sync::atomic::Ordering::Release);
        }));
    }
    let total = Arc::new(std::sync::atomic::AtomicU64::new(0));
    for _ in 0..c {
        let (q, b, done, total) = (q.clone(), barrier.clone(), done.clone(), total.clone());
        hs.push(std::thread::spawn(move || {
            b.wait();
            let backoff = crossbeam_utils::Backoff::new();
            let mut n = 0;
            loop {
                match q.pop() {
                    Some(_) => {
                        n += 1;
                        backoff.reset();
                    }
                    None if done.load(std::sync::atomic::Ordering::Acquire) == p
                        && q.is_empty() =>
                    {
                        break;
                    }
                    None => backoff.snooze(),
                }
            }
            total.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }));
    }
    barrier.wait();
    let t = Instant::now();
    for h in hs {
        let _ = h.join();
    }
    let secs = t.elapsed().as_secs_f64();
    total.load(std::sync::atomic::Ordering::Relaxed) as f64 / secs
}

/// Runs every producer × consumer combination of `counts`, `messages` in total each.
pub fn run(
    counts: &[usize],
    messages: u64,
    mut progress: impl FnMut(&str),
) -> Result<Vec<MpmcResult>> {
    let mut out = Vec::new();
    for &p in counts {
        for &c in counts {
            progress(&format!("mpmc {p}x{c}"));
            let per = (messages / p as u64).max(1);
            let a = arrayqueue_run(p, c, per);
            let s = shmchan_run(p, c, per)?;
            out.push(MpmcResult {
                producers: p,
                consumers: c,
                shmchan_msgs_per_s: s,
                arrayqueue_msgs_per_s: a,
            });
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(out)
}
