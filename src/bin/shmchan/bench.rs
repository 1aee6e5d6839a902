//! `shmchan bench`: round trips, streaming throughput and idle wake-ups between two
//! processes pinned to different cores, each reported as a ratio to a floor probe
//! (and to pipe / Unix socket / futex baselines) measured in the same run.

use crate::baselines::{self, RttSamples};
use crate::svg;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use shmchan::{CreateMode, Options, Receiver, Sender, WaitStrategy};
use std::error::Error;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

const CHILD_ENV: &str = "SHMCHAN_BENCH_CHILD";
/// First word of the message that ends a stream.
const END: u64 = u64::MAX;
/// Round trips of each floor probe (one before and one after every line): half the
/// line's own round trips, so that the pooled probes hold as many samples as the
/// measurement and their tail percentiles compare like with like (`--iters`).
static FLOOR_ITERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(10_000);
/// `--capacity`, or 0 for the default by message size (see `Pair::start`).
static CAPACITY: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
/// Probes that disagree by more than this make the measurement repeat (then flag).
const FLOOR_TOLERANCE: f64 = 1.2;

/// Arguments of `shmchan bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// Message sizes in bytes: 8, 16, 32, ... 65536 (powers of two from 8).
    #[arg(long, value_delimiter = ',', default_value = "8,64,1024,65536")]
    sizes: Vec<usize>,
    /// Wait strategies for round trips: busy, spin (the default strategy), block.
    #[arg(long, value_delimiter = ',', default_value = "busy,spin")]
    modes: Vec<String>,
    /// What to run: rtt, stream, idle, baselines, mpmc, bcast.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "rtt,stream,idle,baselines,mpmc,bcast"
    )]
    only: Vec<String>,
    /// Producer and consumer process counts for the MPMC runs (every combination).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    mpmc_counts: Vec<usize>,
    /// Messages per MPMC run.
    #[arg(long, default_value_t = 2_000_000)]
    mpmc_msgs: u64,
    /// Timed round trips per measurement (a tenth for 64 KiB messages; at most 20,000
    /// for the pipe, socket and futex baselines). 100,000 puts 100 samples above the
    /// p99.9: with 20,000 that ratio swung from 0.9 to 1.9 between runs.
    #[arg(long, default_value_t = 100_000)]
    iters: usize,
    /// Messages per streaming run (default: 256 MiB worth, 10 thousand to 4 million).
    #[arg(long)]
    stream_msgs: Option<usize>,
    /// Ring capacity (slots) of the benchmark's channels (default: 4096 for messages up
    /// to 64 B, 256 up to 1 KiB, 16 above). Latency depends on it: see the README.
    #[arg(long)]
    capacity: Option<usize>,
    /// Repeat everything this many times; tables then show the median (min-max).
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Print JSON (stable keys) instead of tables.
    #[arg(long)]
    json: bool,
    /// Print the README's results table (Markdown) instead of the full tables.
    #[arg(long)]
    markdown: bool,
    /// Write the round-trip latency CDFs to this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
}

/// One measured line.
#[derive(Debug, Clone, Default)]
struct Record {
    bench: &'static str,
    size: usize,
    mode: String,
    floor_before: u64,
    floor_after: u64,
    /// Round trips: the median of all the floor probes interleaved with the line.
    floor_pooled: Option<u64>,
    /// p99.9 of the floor probes around the line, pooled.
    floor_p999: u64,
    /// Sorted round-trip samples (ns), if a latency measurement.
    samples: Vec<u64>,
    msgs_per_s: Option<f64>,
    gb_per_s: Option<f64>,
    cpu_ns_per_msg: Option<f64>,
    idle_cpu_pct: Option<f64>,
    /// MPMC: (producers, consumers, ArrayQueue msgs/s in the same run).
    mpmc: Option<(usize, usize, f64)>,
    flag: Option<String>,
}

impl Record {
    /// A throughput line: `n` messages of `size` bytes in `took`.
    fn throughput(
        bench: &'static str,
        size: usize,
        mode: &str,
        n: usize,
        took: Duration,
    ) -> Record {
        let secs = took.as_secs_f64();
        Record {
            bench,
            size,
            mode: mode.into(),
            msgs_per_s: Some(n as f64 / secs),
            gb_per_s: Some(n as f64 * size as f64 / secs / 1e9),
            ..Default::default()
        }
    }

    fn floor(&self) -> u64 {
        self.floor_pooled
            .unwrap_or((self.floor_before + self.floor_after) / 2)
    }

    fn hist(&self) -> Option<Histogram<u64>> {
        if self.samples.is_empty() {
            return None;
        }
        // 1 ns to 60 s at 3 significant digits.
        let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).ok()?;
        for &s in &self.samples {
            h.saturating_record(s.max(1));
        }
        Some(h)
    }

    fn json(&self) -> Value {
        let mut v = json!({
            "bench": self.bench,
            "size": self.size,
            "mode": self.mode,
            "floor_ns": self.floor(),
            "floor_before_ns": self.floor_before,
            "floor_after_ns": self.floor_after,
            "floor_p999_ns": self.floor_p999,
        });
        if let Some(h) = self.hist() {
            let q = |x: f64| h.value_at_quantile(x);
            v["p50_ns"] = json!(q(0.5));
            v["p90_ns"] = json!(q(0.9));
            v["p99_ns"] = json!(q(0.99));
            v["p999_ns"] = json!(q(0.999));
            v["p9999_ns"] = json!(q(0.9999));
            v["max_ns"] = json!(h.max());
            // Below the clock's 10 ns tick, only an average resolves a difference.
            v["mean_ns"] = json!((h.mean() * 10.0).round() / 10.0);
            v["samples"] = json!(h.len());
            if self.floor() > 0 {
                v["ratio_to_floor"] = json!(q(0.5) as f64 / self.floor() as f64);
            }
        }
        for (k, x) in [
            ("msgs_per_s", self.msgs_per_s),
            ("gb_per_s", self.gb_per_s),
            ("cpu_ns_per_msg", self.cpu_ns_per_msg),
            ("idle_cpu_pct", self.idle_cpu_pct),
        ] {
            if let Some(x) = x {
                v[k] = json!(x);
            }
        }
        if let Some((p, c, aq)) = self.mpmc {
            v["producers"] = json!(p);
            v["consumers"] = json!(c);
            v["arrayqueue_msgs_per_s"] = json!(aq);
            v["ratio_to_arrayqueue"] = json!(self.msgs_per_s.unwrap_or(0.0) / aq.max(1.0));
        }
        if let Some(f) = &self.flag {
            v["flag"] = json!(f);
        }
        v
    }
}

fn strategy(mode: &str) -> Result<WaitStrategy> {
    Ok(match mode {
        "busy" => WaitStrategy::BusySpin,
        "spin" => WaitStrategy::default(),
        "block" => WaitStrategy::Block,
        m => return Err(format!("unknown mode {m:?}: busy, spin or block").into()),
    })
}

/// CPU time a process has run, in ns (`/proc/PID/schedstat`, first field).
fn cpu_ns(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

fn checksum<const W: usize>(m: &[u64; W]) -> u64 {
    m.iter().fold(0u64, |a, &w| a.wrapping_add(w))
}

/// Runs `f` with the message type `[u64; size / 8]`.
macro_rules! with_words {
    ($size:expr, $f:ident ( $($arg:expr),* )) => {
        match $size {
            8 => $f::<1>($($arg),*),
            16 => $f::<2>($($arg),*),
            32 => $f::<4>($($arg),*),
            64 => $f::<8>($($arg),*),
            128 => $f::<16>($($arg),*),
            256 => $f::<32>($($arg),*),
            512 => $f::<64>($($arg),*),
            1024 => $f::<128>($($arg),*),
            2048 => $f::<256>($($arg),*),
            4096 => $f::<512>($($arg),*),
            8192 => $f::<1024>($($arg),*),
            16384 => $f::<2048>($($arg),*),
            32768 => $f::<4096>($($arg),*),
            65536 => $f::<8192>($($arg),*),
            s => Err(format!("unsupported message size {s}: use a power of two from 8 to 65536").into()),
        }
    };
}

// ---------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------

/// If this process is a benchmark child, runs its role and exits.
pub fn maybe_run_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let r = (|| -> Result<()> {
        let mut it = spec.splitn(4, ':');
        let role = it.next().ok_or("role")?.to_owned();
        let size: usize = it.next().ok_or("size")?.parse()?;
        let mode = it.next().ok_or("mode")?.to_owned();
        let base = it.next().ok_or("name")?.to_owned();
        let _ = baselines::pin_to_cpu(1);
        let wait = strategy(&mode)?;
        match role.as_str() {
            "echo" => with_words!(size, child_echo(&base, wait)),
            "sink" => with_words!(size, child_sink(&base, wait, false)),
            "sinkb" => with_words!(size, child_sink(&base, wait, true)),
            r => Err(format!("unknown role {r}").into()),
        }
    })();
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("shmchan bench child: {e}");
            std::process::exit(1)
        }
    }
}

/// The child's two ends: it receives on `-a` and answers on `-b`.
type ChildEnds<const W: usize> = (Receiver<[u64; W]>, Sender<[u64; W]>);

fn child_ends<const W: usize>(base: &str, wait: WaitStrategy) -> Result<ChildEnds<W>> {
    let opts = Options::new().wait_strategy(wait);
    let rx = Receiver::with_options(&format!("{base}-a"), &opts)?;
    let tx = Sender::with_options(&format!("{base}-b"), &opts)?;
    Ok((rx, tx))
}

/// Echo: read every word of each message, answer with every word set to its checksum.
fn child_echo<const W: usize>(base: &str, wait: WaitStrategy) -> Result<()> {
    let (mut rx, mut tx) = child_ends::<W>(base, wait)?;
    loop {
        let sum = match rx.recv_ref() {
            Ok(m) => checksum(&m),
            Err(_) => return Ok(()),
        };
        let mut slot = tx.loan().map_err(|_| "parent went away")?;
        slot.fill(sum);
        slot.commit();
    }
}

/// Sink: read every word of each message until the END marker, then answer with the
/// checksum of everything.
fn child_sink<const W: usize>(base: &str, wait: WaitStrategy, batch: bool) -> Result<()> {
    let (mut rx, mut tx) = child_ends::<W>(base, wait)?;
    let mut total = 0u64;
    let mut buf = vec![[0u64; W]; 64];
    loop {
        if batch || W <= 8 {
            // Small messages: take whatever is there (up to 64 into a buffer, or one
            // by one, summed as each comes: one by one, a copy into memory would be
            // an extra store per message, which on this path costs as much as the
            // message; a batch copy runs tight enough not to matter).
            let mut done = None;
            let mut take = |m: [u64; W]| {
                if m[0] == END {
                    done = Some(total);
                    total = 0;
                } else {
                    total = total.wrapping_add(checksum(&m));
                }
            };
            let got = if batch {
                rx.try_recv_batch(&mut buf)
                    .inspect(|&n| buf[..n].iter().for_each(|m| take(*m)))
            } else {
                rx.try_recv().map(|m| {
                    take(m);
                    1
                })
            };
            match got {
                Ok(_) => {}
                Err(shmchan::TryRecvError::Empty) => {
                    std::hint::spin_loop();
                    continue;
                }
                Err(_) => return Ok(()),
            }
            if let Some(sum) = done {
                let mut slot = tx.loan().map_err(|_| "parent went away")?;
                slot.fill(sum);
                slot.commit();
            }
        } else {
            let (first, sum) = match rx.recv_ref() {
                Ok(m) => (m[0], checksum(&m)),
                Err(_) => return Ok(()),
            };
            if first == END {
                let mut slot = tx.loan().map_err(|_| "parent went away")?;
                slot.fill(total);
                slot.commit();
                total = 0;
            } else {
                total = total.wrapping_add(sum);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The parent side
// ---------------------------------------------------------------------------

/// The parent's ends of a fresh pair of channels, and the child serving them.
struct Pair<const W: usize> {
    tx: Sender<[u64; W]>,
    rx: Receiver<[u64; W]>,
    child: Option<Child>,
}

impl<const W: usize> Pair<W> {
    fn start(role: &str, mode: &str, parent_wait: WaitStrategy) -> Result<Pair<W>> {
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let base = format!("shmchan-bench-{}-{n}", std::process::id());
        let cap = match CAPACITY.load(std::sync::atomic::Ordering::Relaxed) {
            0 if W <= 8 => 4096,
            0 if W <= 128 => 256,
            0 => 16,
            n => n,
        };
        let opts = Options::new()
            .capacity(cap)
            .mode(CreateMode::CreateExclusive)
            .wait_strategy(parent_wait);
        let tx = Sender::with_options(&format!("{base}-a"), &opts)?;
        let rx = Receiver::with_options(&format!("{base}-b"), &opts)?;
        let exe = std::env::current_exe()?;
        let child = Command::new(exe)
            .env(CHILD_ENV, format!("{role}:{}:{mode}:{base}", W * 8))
            .stdin(Stdio::null())
            .spawn()?;
        Ok(Pair {
            tx,
            rx,
            child: Some(child),
        })
    }

    fn child_pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn send_fill(&mut self, v: u64) -> Result<()> {
        let mut slot = self.tx.loan().map_err(|_| "child went away")?;
        slot.fill(v);
        slot.commit();
        Ok(())
    }

    fn recv_sum(&mut self) -> Result<u64> {
        let m = self.rx.recv_ref().map_err(|_| "child went away")?;
        Ok(checksum(&m))
    }
}

/// Drops the parent's ends (disconnecting the child) and reaps the child.
fn finish_child<const W: usize>(mut pair: Pair<W>) -> Result<()> {
    let child = pair.child.take();
    drop(pair);
    if let Some(mut c) = child {
        let t = Instant::now();
        loop {
            if let Some(st) = c.try_wait()? {
                if !st.success() {
                    return Err(format!("benchmark child failed: {st}").into());
                }
                break;
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = c.kill();
                let _ = c.wait();
                return Err("benchmark child did not exit".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    Ok(())
}

impl<const W: usize> Drop for Pair<W> {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn rtt_iters(iters: usize, size: usize) -> usize {
    if size >= 65536 {
        (iters / 10).max(100)
    } else {
        iters
    }
}

fn measure_rtt<const W: usize>(mode: &str, iters: usize) -> Result<Record> {
    let wait = strategy(mode)?;
    let mut pair = Pair::<W>::start("echo", mode, wait)?;
    // A fresh pair of processes settles for a few milliseconds (measured: with 400
    // warm-up round trips the p99.9 was 30 % higher than with 20,000). The floor probe
    // warms up as long (20,000 round trips).
    let warm = (iters * 5).clamp(2_000, 20_000);
    // Every round trip writes its time (warm-up ones too, overwritten later), so the
    // buffer is in cache when timed round trips write it: see `baselines::record`.
    let mut samples = baselines::sample_buffer(iters);
    let (p0, c0) = (cpu_ns(std::process::id()), cpu_ns(pair.child_pid()));
    for i in 0..(warm + iters) as u64 {
        let t0 = Instant::now();
        pair.send_fill(i)?;
        let got = pair.recv_sum()?;
        baselines::record(&mut samples, i as usize, t0);
        let expect = i.wrapping_mul(W as u64).wrapping_mul(W as u64);
        if got != expect {
            return Err(format!("corrupt echo: checksum {got:#x}, expected {expect:#x}").into());
        }
    }
    let cpu = (cpu_ns(std::process::id()) - p0) + cpu_ns(pair.child_pid()).saturating_sub(c0);
    finish_child(pair)?;
    samples.sort_unstable();
    Ok(Record {
        bench: "rtt",
        size: W * 8,
        mode: mode.into(),
        samples,
        cpu_ns_per_msg: Some(cpu as f64 / (warm + iters) as f64 / 2.0),
        ..Default::default()
    })
}

fn stream_msgs(args: &BenchArgs, size: usize) -> usize {
    args.stream_msgs
        .unwrap_or(((256usize << 20) / size).clamp(10_000, 4_000_000))
}

fn measure_stream<const W: usize>(n: usize, batch: bool) -> Result<Record> {
    // Streaming is about throughput: both sides poll.
    let role = if batch { "sinkb" } else { "sink" };
    let mut pair = Pair::<W>::start(role, "busy", WaitStrategy::BusySpin)?;
    // Warm up the child and the pages.
    pair.send_fill(1)?;
    pair.send_fill(END)?;
    pair.recv_sum()?;
    let (p0, c0) = (cpu_ns(std::process::id()), cpu_ns(pair.child_pid()));
    let t0 = Instant::now();
    let mut expect = 0u64;
    if batch {
        // Up to 64 at a time, each built straight into its slot.
        let mut i = 0u64;
        while i < n as u64 {
            let k = (n as u64 - i).min(64) as usize;
            match pair.tx.try_send_batch_with(k, |j| [i + j as u64; W]) {
                Ok(sent) => i += sent as u64,
                Err(shmchan::TrySendError::Full(())) => std::hint::spin_loop(),
                Err(_) => return Err("child went away".into()),
            }
        }
    } else if W <= 8 {
        // Small messages by value, one send each.
        for i in 0..n as u64 {
            pair.tx.send([i; W]).map_err(|_| "child went away")?;
        }
    } else {
        // Larger messages built in place (zero copy), one loan each.
        for i in 0..n as u64 {
            pair.send_fill(i)?;
        }
    }
    for i in 0..n as u64 {
        expect = expect.wrapping_add(i.wrapping_mul(W as u64));
    }
    pair.send_fill(END)?;
    let got = pair.recv_sum()?;
    let secs = t0.elapsed().as_secs_f64();
    let cpu = (cpu_ns(std::process::id()) - p0) + cpu_ns(pair.child_pid()).saturating_sub(c0);
    let expect = expect.wrapping_mul(W as u64);
    if got != expect {
        return Err(format!("stream checksum {got:#x}, expected {expect:#x}").into());
    }
    finish_child(pair)?;
    Ok(Record {
        bench: "stream",
        size: W * 8,
        mode: if batch {
            "busy+batch".into()
        } else {
            "busy".into()
        },
        msgs_per_s: Some(n as f64 / secs),
        gb_per_s: Some(n as f64 * (W * 8) as f64 / secs / 1e9),
        cpu_ns_per_msg: Some(cpu as f64 / n as f64),
        ..Default::default()
    })
}

/// Idle wake-up: the child waits in `mode` (spin or block) for a message that comes
/// after `gap`; the parent polls for the echo, so the figure is the child's wake-up.
/// With `cpu`, also the CPU the waiting child burns once idle (200 ms more).
fn measure_idle<const W: usize>(
    mode: &str,
    gap: Duration,
    count: usize,
    cpu: bool,
) -> Result<Record> {
    let mut pair = Pair::<W>::start("echo", mode, WaitStrategy::BusySpin)?;
    pair.send_fill(0)?;
    pair.recv_sum()?;
    let mut samples = Vec::with_capacity(count);
    for i in 0..count as u64 {
        std::thread::sleep(gap);
        let t0 = Instant::now();
        pair.send_fill(i)?;
        pair.recv_sum()?;
        samples.push(t0.elapsed().as_nanos() as u64);
    }
    let idle_cpu_pct = if cpu {
        // CPU the waiting child burns while idle (after its spin phase).
        let c0 = cpu_ns(pair.child_pid());
        let idle = Duration::from_millis(200);
        std::thread::sleep(idle);
        let used = cpu_ns(pair.child_pid()).saturating_sub(c0);
        Some(used as f64 / idle.as_nanos() as f64 * 100.0)
    } else {
        None
    };
    finish_child(pair)?;
    Ok(Record {
        bench: if gap >= Duration::from_millis(10) {
            "idle10ms"
        } else {
            "idle1ms"
        },
        size: W * 8,
        mode: mode.into(),
        samples,
        idle_cpu_pct,
        ..Default::default()
    })
}

/// Rounds of an idle wake-up comparison.
const IDLE_ROUNDS: usize = 5;

/// Idle wake-ups after `gap`, `count` each, of shmchan's spin and block waits and of a
/// raw futex handoff, in [`IDLE_ROUNDS`] rounds in which the three take turns (a fresh
/// pair of processes each). A wake-up costs what the host charges to un-halt a vCPU,
/// which drifts by 2x within a minute; measured one after the other, the three lines
/// met different host states (ratios from 0.65 to 1.6 between runs).
fn idle_lines(gap: Duration, count: usize) -> Result<Vec<Record>> {
    let per = (count / IDLE_ROUNDS).max(1);
    let raw_bench = if gap >= Duration::from_millis(10) {
        "futex_idle10ms"
    } else {
        "futex_idle1ms"
    };
    let iters = FLOOR_ITERS.load(std::sync::atomic::Ordering::Relaxed);
    let before = baselines::floor_probe(iters)?.median();
    let mut lines: [Option<Record>; 3] = [None, None, None];
    for round in 0..IDLE_ROUNDS {
        for (k, line) in lines.iter_mut().enumerate() {
            let r = match k {
                0 => measure_idle::<1>("spin", gap, per, round == 0)?,
                1 => measure_idle::<1>("block", gap, per, round == 0)?,
                _ => {
                    let mut r = baseline_record(raw_bench, 0, baselines::futex_idle(gap, per)?);
                    r.mode = "raw".into();
                    r
                }
            };
            match line {
                None => *line = Some(r),
                Some(acc) => acc.samples.extend_from_slice(&r.samples),
            }
        }
    }
    let after = baselines::floor_probe(iters)?.median();
    let mut out = Vec::new();
    for mut r in lines.into_iter().flatten() {
        r.samples.sort_unstable();
        floor_check(&mut r, before, after);
        out.push(r);
    }
    Ok(out)
}

fn memcpy_gbps(size: usize) -> Record {
    let src = vec![7u8; size];
    let mut dst = vec![0u8; size];
    let n = ((1usize << 30) / size).max(100);
    let t0 = Instant::now();
    for i in 0..n {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
        dst[i % size] = 0;
    }
    Record::throughput("memcpy", size, "1 thread", n, t0.elapsed())
}

/// A ring of `size`-byte slots with no channel around it, for [`copy_ceiling`].
struct CeilingRing {
    words: usize,
    /// Per slot: the message number it holds, plus one (0: empty).
    seqs: Vec<crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>>,
    /// Messages the reader has finished with.
    head: crossbeam_utils::CachePadded<std::sync::atomic::AtomicU64>,
    data: Box<[std::cell::UnsafeCell<u64>]>,
}

// SAFETY: the slot words are shared by the writer and the reader only under the
// sequence protocol in `copy_ceiling` (a slot is written while its sequence says
// empty and read while it says full; Release/Acquire order the words).
unsafe impl Sync for CeilingRing {}

impl CeilingRing {
    const SLOTS: u64 = 16;

    fn slot(&self, n: u64) -> *mut u64 {
        let i = (n % Self::SLOTS) as usize * self.words;
        self.data[i..i + self.words].as_ptr() as *mut u64
    }
}

/// What the hardware allows for `size`-byte messages between the two cores, with no
/// channel at all: a writer thread on CPU 0 fills the words of one of 16 slots and
/// stores a sequence number; a reader thread on CPU 1 waits for it, sums every word,
/// and hands the slot back. Every byte is written and read once, as in the `stream`
/// measurement, so the ratio of the two is shmchan's overhead over cache coherence.
fn copy_ceiling(size: usize, n: usize) -> Record {
    use std::sync::atomic::Ordering::{Acquire, Release};
    let words = size / 8;
    let ring = std::sync::Arc::new(CeilingRing {
        words,
        seqs: (0..CeilingRing::SLOTS)
            .map(|_| Default::default())
            .collect(),
        head: Default::default(),
        data: (0..words * CeilingRing::SLOTS as usize)
            .map(|_| std::cell::UnsafeCell::new(0))
            .collect(),
    });
    let n = n as u64;
    let r2 = ring.clone();
    let t0 = Instant::now();
    let reader = std::thread::spawn(move || {
        let _ = baselines::pin_to_cpu(1);
        let mut total = 0u64;
        for m in 0..n {
            let seq = &r2.seqs[(m % CeilingRing::SLOTS) as usize];
            while seq.load(Acquire) != m + 1 {
                std::hint::spin_loop();
            }
            // SAFETY: the slot holds message m (Acquire above) and the writer does not
            // touch it until `head` passes m.
            let words = unsafe { std::slice::from_raw_parts(r2.slot(m), r2.words) };
            total = words.iter().fold(total, |a, &w| a.wrapping_add(w));
            r2.head.store(m + 1, Release);
        }
        total
    });
    let writer = std::thread::spawn(move || {
        let _ = baselines::pin_to_cpu(0);
        for m in 0..n {
            while m.saturating_sub(ring.head.load(Acquire)) >= CeilingRing::SLOTS {
                std::hint::spin_loop();
            }
            // SAFETY: the reader is done with this slot (Acquire of `head` above) and
            // does not read it before the Release below.
            unsafe { std::slice::from_raw_parts_mut(ring.slot(m), ring.words) }.fill(m);
            ring.seqs[(m % CeilingRing::SLOTS) as usize].store(m + 1, Release);
        }
    });
    let _ = writer.join();
    let total = reader.join().unwrap_or(0);
    std::hint::black_box(total);
    Record::throughput("ceiling", size, "2 threads", n as usize, t0.elapsed())
}

fn baseline_record(bench: &'static str, size: usize, s: RttSamples) -> Record {
    let mut samples = s.ns;
    samples.sort_unstable();
    Record {
        bench,
        size,
        mode: "block".into(),
        samples,
        ..Default::default()
    }
}

/// Runs `f` between two floor probes; repeats up to twice if the probes disagree by
/// more than 20 %, then flags the line.
fn with_floor(mut f: impl FnMut() -> Result<Record>) -> Result<Record> {
    let mut last = None;
    for _ in 0..3 {
        let iters = FLOOR_ITERS.load(std::sync::atomic::Ordering::Relaxed);
        let fb = baselines::floor_probe(iters)?;
        let mut r = f()?;
        let fa = baselines::floor_probe(iters)?;
        let (before, after) = (fb.median(), fa.median());
        // The tail of both probes pooled: as many samples as the measurement, taken
        // around it, so a rare host event weighs the same in both p99.9s.
        let mut pooled = fb;
        pooled.ns.extend_from_slice(&fa.ns);
        r.floor_p999 = pooled.percentile(99.9);
        if floor_check(&mut r, before, after) {
            return Ok(r);
        }
        last = Some(r);
    }
    last.ok_or_else(|| "no measurement".into())
}

/// Records the floor probed before and after `r`; `false`, with `r` flagged, if the
/// two disagree by more than [`FLOOR_TOLERANCE`].
fn floor_check(r: &mut Record, before: u64, after: u64) -> bool {
    r.floor_before = before;
    r.floor_after = after;
    let spread = before.max(after) as f64 / before.min(after).max(1) as f64;
    if spread <= FLOOR_TOLERANCE {
        return true;
    }
    r.flag = Some(format!("floor moved {before}->{after} ns"));
    false
}

/// Alternations of floor probe and measurement in a round-trip line.
const RTT_CHUNKS: usize = 5;

/// A round-trip line whose tail is compared like with like: the measurement runs in
/// [`RTT_CHUNKS`] chunks (a fresh pair of processes each), and floor probes run
/// before, between and after them, as many round trips in all as the measurement. A
/// host event (a vCPU moved, an interrupt) then has the same chance to land in the
/// probes as in the measurement, and the two p99.9s can be divided. The first and last
/// probes' medians are the line's floor, checked for drift as in [`with_floor`].
fn rtt_line(mut chunk: impl FnMut(usize) -> Result<Record>, iters: usize) -> Result<Record> {
    let per = (iters / RTT_CHUNKS).max(100);
    let per_floor = (per * RTT_CHUNKS / (RTT_CHUNKS + 1)).max(100);
    let mut last = None;
    for _ in 0..3 {
        let mut floors = Vec::with_capacity(RTT_CHUNKS + 1);
        let mut rec: Option<Record> = None;
        let mut cpu = Vec::new();
        for _ in 0..RTT_CHUNKS {
            floors.push(baselines::floor_probe(per_floor)?);
            let r = chunk(per)?;
            cpu.extend(r.cpu_ns_per_msg);
            match &mut rec {
                None => rec = Some(r),
                Some(acc) => acc.samples.extend_from_slice(&r.samples),
            }
        }
        floors.push(baselines::floor_probe(per_floor)?);
        let mut r = rec.ok_or("no measurement")?;
        r.samples.sort_unstable();
        if !cpu.is_empty() {
            r.cpu_ns_per_msg = Some(cpu.iter().sum::<f64>() / cpu.len() as f64);
        }
        let before = floors.first().map_or(0, |f| f.median());
        let after = floors.last().map_or(0, |f| f.median());
        let mut pooled = RttSamples::default();
        for f in &floors {
            pooled.ns.extend_from_slice(&f.ns);
        }
        r.floor_p999 = pooled.percentile(99.9);
        r.floor_pooled = Some(pooled.median());
        if floor_check(&mut r, before, after) {
            return Ok(r);
        }
        last = Some(r);
    }
    last.ok_or_else(|| "no measurement".into())
}

pub fn run(args: &BenchArgs) -> Result<()> {
    for m in &args.modes {
        strategy(m)?;
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    FLOOR_ITERS.store(
        (args.iters / 2).max(2_500),
        std::sync::atomic::Ordering::Relaxed,
    );
    CAPACITY.store(
        args.capacity.unwrap_or(0),
        std::sync::atomic::Ordering::Relaxed,
    );
    // The parent on CPU 0, every child on CPU 1.
    let _ = baselines::pin_to_cpu(0);
    let mut runs = Vec::new();
    for run in 0..args.runs.max(1) {
        if args.runs > 1 {
            eprintln!("run {}/{}", run + 1, args.runs);
        }
        runs.push(run_once(args)?);
    }
    let recs: Vec<Record> = runs.iter().flatten().cloned().collect();
    if let Some(path) = &args.plot {
        let series: Vec<(String, Vec<u64>)> = runs[0]
            .iter()
            .filter(|r| !r.samples.is_empty())
            .map(|r| {
                (
                    format!("{} {} B {}", r.bench, r.size, r.mode),
                    r.samples.clone(),
                )
            })
            .collect();
        std::fs::write(path, svg::cdf("shmchan bench: round-trip CDF", &series))?;
    }
    if args.json {
        let out = json!({
            "machine": { "cpus": cpus, "cpu_model": cpu_model(), "os": std::env::consts::OS, "arch": std::env::consts::ARCH },
            "runs": args.runs.max(1),
            "records": runs.iter().enumerate().flat_map(|(i, rs)| rs.iter().map(move |r| {
                let mut v = r.json();
                v["run"] = json!(i);
                v
            })).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else if args.markdown {
        print_markdown(&runs, cpus);
    } else {
        print_tables(&recs, cpus);
    }
    Ok(())
}

fn run_once(args: &BenchArgs) -> Result<Vec<Record>> {
    let want = |what: &str| args.only.iter().any(|o| o == what);

    // Plan the steps, for the progress bar.
    let mut steps = 0u64;
    if want("rtt") {
        steps += (args.sizes.len() * args.modes.len()) as u64;
    }
    if want("stream") {
        steps += args.sizes.len() as u64 * 2;
    }
    if want("idle") {
        steps += 6;
    }
    if want("mpmc") {
        steps += (args.mpmc_counts.len() * args.mpmc_counts.len()) as u64;
    }
    if want("baselines") {
        steps += args.sizes.len() as u64 * 2 + 1;
    }
    if want("bcast") {
        steps += 11;
    }
    let pb = ProgressBar::new(steps);
    pb.set_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );

    let mut recs: Vec<Record> = Vec::new();
    if want("rtt") {
        for &size in &args.sizes {
            for mode in &args.modes {
                pb.set_message(format!("round trip {size} B {mode}"));
                recs.push(rtt_line(
                    |n| with_words!(size, measure_rtt(mode, n)),
                    rtt_iters(args.iters, size),
                )?);
                pb.inc(1);
            }
        }
    }
    if want("baselines") {
        for &size in &args.sizes {
            // Syscall round trips take microseconds each; their p50 is what is compared.
            let it = rtt_iters(args.iters.min(20_000), size);
            pb.set_message(format!("pipe {size} B"));
            recs.push(with_floor(|| {
                Ok(baseline_record(
                    "pipe",
                    size,
                    baselines::pipe_rtt(it, size)?,
                ))
            })?);
            pb.inc(1);
            pb.set_message(format!("unix socket {size} B"));
            recs.push(with_floor(|| {
                Ok(baseline_record(
                    "unix",
                    size,
                    baselines::unix_socket_rtt(it, size)?,
                ))
            })?);
            pb.inc(1);
        }
        pb.set_message("futex handoff");
        recs.push(with_floor(|| {
            Ok(baseline_record(
                "futex",
                0,
                baselines::futex_rtt(args.iters.min(20_000))?,
            ))
        })?);
        pb.inc(1);
    }
    if want("stream") {
        for &size in &args.sizes {
            pb.set_message(format!("stream {size} B"));
            let n = stream_msgs(args, size);
            recs.push(with_floor(|| with_words!(size, measure_stream(n, false)))?);
            if size <= 64 {
                recs.push(with_floor(|| with_words!(size, measure_stream(n, true)))?);
            }
            if size == 8 {
                // The yardstick of the streaming goals, right after the lines it judges.
                for (bench, chunks) in [("rtrb", false), ("rtrb_chunks", true)] {
                    let took = crate::rtrb_baseline::stream(n as u64, chunks)?;
                    recs.push(Record::throughput(bench, 8, "2 threads", n, took));
                }
            }
            pb.inc(1);
            if size >= 1024 {
                recs.push(memcpy_gbps(size));
                if size >= 16384 {
                    recs.push(copy_ceiling(size, n));
                }
            }
            pb.inc(1);
        }
    }
    if want("idle") {
        for (gap, count) in [
            (Duration::from_millis(1), 300),
            (Duration::from_millis(10), 60),
        ] {
            pb.set_message(format!(
                "idle wake-ups after {gap:?}: spin, block, raw futex"
            ));
            recs.extend(idle_lines(gap, count)?);
            pb.inc(3);
        }
    }
    if want("mpmc") {
        let res = crate::mpmc_bench::run(&args.mpmc_counts, args.mpmc_msgs, |m| {
            pb.set_message(m.to_owned());
            pb.inc(1);
        })?;
        for r in res {
            recs.push(Record {
                bench: "mpmc",
                size: 8,
                mode: format!("{}x{}", r.producers, r.consumers),
                msgs_per_s: Some(r.shmchan_msgs_per_s),
                gb_per_s: Some(r.shmchan_msgs_per_s * 8.0 / 1e9),
                mpmc: Some((r.producers, r.consumers, r.arrayqueue_msgs_per_s)),
                ..Default::default()
            });
        }
    }
    if want("bcast") {
        pb.set_message("broadcast round trip 8 B busy");
        recs.push(rtt_line(
            |n| {
                Ok(Record {
                    bench: "bcast_rtt",
                    size: 8,
                    mode: "busy".into(),
                    samples: crate::bcast_bench::rtt(n)?,
                    ..Default::default()
                })
            },
            args.iters,
        )?);
        pb.inc(1);
        #[cfg(feature = "bench-iceoryx2")]
        {
            pb.set_message("iceoryx2 publish-subscribe round trip 8 B busy");
            recs.push(rtt_line(
                |n| {
                    Ok(Record {
                        bench: "iox_rtt",
                        size: 8,
                        mode: "busy".into(),
                        samples: crate::iox_bench::rtt(n)?,
                        ..Default::default()
                    })
                },
                args.iters,
            )?);
        }
        let n = stream_msgs(args, 8);
        use crate::bcast_bench::Sink;
        for (subs, sink) in [
            (1, Sink::Busy),
            (1, Sink::Spin),
            (2, Sink::Spin),
            (4, Sink::Spin),
            (1, Sink::Batch),
            (2, Sink::Batch),
            (4, Sink::Batch),
            (1, Sink::Block),
            (2, Sink::Block),
            (4, Sink::Block),
        ] {
            pb.set_message(format!("broadcast stream to {subs} subscribers"));
            recs.push(with_floor(|| {
                let took = crate::bcast_bench::stream(subs, n as u64, sink)?;
                let mode = match sink {
                    Sink::Busy => "1 sub busy".to_owned(),
                    Sink::Spin => format!("{subs} sub spin"),
                    Sink::Batch => format!("{subs} sub batch"),
                    Sink::Block => format!("{subs} sub block"),
                };
                Ok(Record::throughput("bcast", 8, &mode, n, took))
            })?);
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(recs)
}

/// Median, min and max of `v` (empty: zeros).
fn mmm(mut v: Vec<f64>) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    (v[v.len() / 2], v[0], v[v.len() - 1])
}

/// The README's results table: each ratio is taken within one run (against that run's
/// floor probe or baseline), then summarised over the runs as median (min-max).
/// The CPU's model name from `/proc/cpuinfo` (results differ a lot between models).
fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn print_markdown(runs: &[Vec<Record>], cpus: usize) {
    let find = |rs: &'_ [Record], bench: &str, size: usize, mode: &str| -> Option<Record> {
        rs.iter()
            .find(|r| r.bench == bench && r.size == size && (mode.is_empty() || r.mode == mode))
            .cloned()
    };
    let p = |r: &Record, q: f64| {
        r.hist()
            .map(|h| h.value_at_quantile(q) as f64)
            .unwrap_or(0.0)
    };
    let fmt = |(m, lo, hi): (f64, f64, f64), d: usize| format!("{m:.d$} ({lo:.d$}-{hi:.d$})");
    let n = runs.len();
    println!(
        "Measured by `shmchan bench --runs {n} --markdown` on {cpus} CPUs ({}); each cell is the median over {n} runs (min-max). Ratios are taken within a run: to the floor probe (for round trips, the probes interleaved with the line's five chunks, as many round trips in all; for the other lines, probes right before and after), or to a baseline of the same run.",
        cpu_model()
    );
    println!();
    println!("| measurement | value | ratio | goal |");
    println!("|---|---|---|---|");
    let floor = mmm(runs
        .iter()
        .flat_map(|rs| rs.iter())
        .filter(|r| r.floor() > 0)
        .map(|r| r.floor() as f64)
        .collect());
    println!(
        "| floor probe: one cache line each way, p50 | {} ns | 1 | |",
        fmt(floor, 0)
    );
    for (size, mode, goal) in [
        (8usize, "busy", "≤ 1.10 × floor"),
        (8, "spin", "≤ 1.3 × floor"),
        (64, "busy", ""),
        (1024, "busy", ""),
        (65536, "busy", ""),
    ] {
        let rs: Vec<Record> = runs
            .iter()
            .filter_map(|rs| find(rs, "rtt", size, mode))
            .collect();
        if rs.is_empty() {
            continue;
        }
        let v = mmm(rs.iter().map(|r| p(r, 0.5)).collect());
        let ratio = mmm(rs
            .iter()
            .map(|r| p(r, 0.5) / r.floor().max(1) as f64)
            .collect());
        println!(
            "| round trip {size} B, {mode}, p50 | {} ns | {} × floor | {goal} |",
            fmt(v, 0),
            fmt(ratio, 2)
        );
        if size == 8 && mode == "busy" {
            let v = mmm(rs.iter().map(|r| p(r, 0.999)).collect());
            let ratio = mmm(rs
                .iter()
                .map(|r| p(r, 0.999) / r.floor_p999.max(1) as f64)
                .collect());
            println!(
                "| round trip 8 B, busy, p99.9 | {} ns | {} × floor p99.9 | ≤ 1.5 |",
                fmt(v, 0),
                fmt(ratio, 2)
            );
        }
        let unix: Vec<f64> = runs
            .iter()
            .filter_map(|rs| {
                let s = find(rs, "rtt", size, mode)?;
                let u = find(rs, "unix", size, "")?;
                Some(p(&u, 0.5) / p(&s, 0.5).max(1.0))
            })
            .collect();
        if !unix.is_empty() && mode == "busy" {
            println!(
                "| Unix socket round trip {size} B, p50 | | {} × slower than shmchan | |",
                fmt(mmm(unix), 0)
            );
        }
    }
    for (bench, raw, gap) in [
        ("idle1ms", "futex_idle1ms", "1 ms"),
        ("idle10ms", "futex_idle10ms", "10 ms"),
    ] {
        for mode in ["spin", "block"] {
            let pairs: Vec<(Record, Record)> = runs
                .iter()
                .filter_map(|rs| Some((find(rs, bench, 8, mode)?, find(rs, raw, 0, "")?)))
                .collect();
            if pairs.is_empty() {
                continue;
            }
            let v = mmm(pairs.iter().map(|(s, _)| p(s, 0.5) / 1000.0).collect());
            let ratio = mmm(pairs
                .iter()
                .map(|(s, r)| p(s, 0.5) / p(r, 0.5).max(1.0))
                .collect());
            let cpu = mmm(pairs.iter().filter_map(|(s, _)| s.idle_cpu_pct).collect());
            println!(
                "| idle wake-up after {gap}, {mode} wait, p50 (idle CPU {} %) | {} µs | {} × raw futex | ≤ 1.1 |",
                fmt(cpu, 1),
                fmt(v, 1),
                fmt(ratio, 2)
            );
        }
    }
    for (size, mode) in [
        (8usize, "busy"),
        (8, "busy+batch"),
        (64, "busy+batch"),
        (1024, "busy"),
        (65536, "busy"),
    ] {
        let rs: Vec<Record> = runs
            .iter()
            .filter_map(|rs| find(rs, "stream", size, mode))
            .collect();
        if rs.is_empty() {
            continue;
        }
        let v = mmm(rs
            .iter()
            .filter_map(|r| r.msgs_per_s)
            .map(|x| x / 1e6)
            .collect());
        let gb = mmm(rs.iter().filter_map(|r| r.gb_per_s).collect());
        // Per run: this line's GB/s over the same run's `baseline` GB/s.
        let ratio_to = |baseline: &str| -> Vec<f64> {
            runs.iter()
                .filter_map(|rs| {
                    let s = find(rs, "stream", size, mode)?;
                    let b = find(rs, baseline, size, "")?;
                    Some(s.gb_per_s? / b.gb_per_s?)
                })
                .collect()
        };
        let memcpy = ratio_to("memcpy");
        let rtrb = ratio_to("rtrb");
        let (ratio, goal) = if !rtrb.is_empty() {
            let batch = mode.contains("batch");
            let chunks = if batch {
                // rtrb's own chunk API, for scale: what two threads reach moving only
                // payloads and one index per chunk.
                let own: Vec<f64> = runs
                    .iter()
                    .filter_map(|rs| {
                        let c = find(rs, "rtrb_chunks", size, "")?;
                        Some(c.msgs_per_s? / find(rs, "rtrb", size, "")?.msgs_per_s?)
                    })
                    .collect();
                format!(
                    "; {} × rtrb's chunks of 64, which reach {} × rtrb",
                    fmt(mmm(ratio_to("rtrb_chunks")), 2),
                    fmt(mmm(own), 2)
                )
            } else {
                String::new()
            };
            (
                format!("{} × rtrb (2 threads, same run){chunks}", fmt(mmm(rtrb), 2)),
                if batch {
                    "≥ 2 × rtrb"
                } else {
                    "≥ 1 × rtrb"
                },
            )
        } else if memcpy.is_empty() {
            (String::new(), "")
        } else {
            let ceiling = ratio_to("ceiling");
            let ceiling = if ceiling.is_empty() {
                String::new()
            } else {
                format!(
                    "; {} × the cross-core copy ceiling (2 threads, no channel)",
                    fmt(mmm(ceiling), 2)
                )
            };
            (
                format!("{} × memcpy{ceiling}", fmt(mmm(memcpy), 2)),
                if size == 65536 {
                    "≥ 0.7 × memcpy"
                } else {
                    ""
                },
            )
        };
        println!(
            "| streaming {size} B, {mode} | {} M msgs/s, {} GB/s | {ratio} | {goal} |",
            fmt(v, 1),
            fmt(gb, 2)
        );
    }
    let mut counts: Vec<(usize, usize)> = runs
        .first()
        .map(|rs| {
            rs.iter()
                .filter_map(|r| r.mpmc.map(|(p, c, _)| (p, c)))
                .collect()
        })
        .unwrap_or_default();
    counts.dedup();
    for (pc, cc) in counts {
        let rs: Vec<Record> = runs
            .iter()
            .filter_map(|rs| {
                rs.iter()
                    .find(|r| r.mpmc.is_some_and(|(p, c, _)| p == pc && c == cc))
                    .cloned()
            })
            .collect();
        let v = mmm(rs
            .iter()
            .filter_map(|r| r.msgs_per_s)
            .map(|x| x / 1e6)
            .collect());
        let ratio = mmm(rs
            .iter()
            .filter_map(|r| Some(r.msgs_per_s? / r.mpmc?.2.max(1.0)))
            .collect());
        println!(
            "| MPMC {pc} producer × {cc} consumer processes | {} M msgs/s | {} × crossbeam ArrayQueue (threads) | |",
            fmt(v, 1),
            fmt(ratio, 2)
        );
    }
    // Broadcast: the round trip against the floor; each stream line against the same
    // run's one-subscriber line in the same wait mode.
    let rs: Vec<Record> = runs
        .iter()
        .filter_map(|rs| find(rs, "bcast_rtt", 8, "busy"))
        .collect();
    if !rs.is_empty() {
        let v = mmm(rs.iter().map(|r| p(r, 0.5)).collect());
        let ratio = mmm(rs
            .iter()
            .map(|r| p(r, 0.5) / r.floor().max(1) as f64)
            .collect());
        println!(
            "| broadcast round trip 8 B (publisher → subscriber → back), busy, p50 | {} ns | {} × floor | ≤ 1.1 × floor |",
            fmt(v, 0),
            fmt(ratio, 2)
        );
        let iox: Vec<(f64, f64)> = runs
            .iter()
            .filter_map(|rs| {
                let b = find(rs, "bcast_rtt", 8, "busy")?;
                let i = find(rs, "iox_rtt", 8, "busy")?;
                Some((p(&i, 0.5), p(&b, 0.5) / p(&i, 0.5).max(1.0)))
            })
            .collect();
        if !iox.is_empty() {
            println!(
                "| iceoryx2 0.10 publish-subscribe round trip 8 B, busy, p50 | {} ns | shmchan broadcast at {} × iceoryx2 | ≤ 0.3 |",
                fmt(mmm(iox.iter().map(|x| x.0).collect()), 0),
                fmt(mmm(iox.iter().map(|x| x.1).collect()), 2)
            );
        }
    }
    for (mode, base) in [
        ("1 sub busy", ""),
        ("1 sub spin", ""),
        ("2 sub spin", "1 sub spin"),
        ("4 sub spin", "1 sub spin"),
        ("1 sub batch", ""),
        ("2 sub batch", "1 sub batch"),
        ("4 sub batch", "1 sub batch"),
        ("1 sub block", ""),
        ("2 sub block", "1 sub block"),
        ("4 sub block", "1 sub block"),
    ] {
        let rs: Vec<Record> = runs
            .iter()
            .filter_map(|rs| find(rs, "bcast", 8, mode))
            .collect();
        if rs.is_empty() {
            continue;
        }
        let v = mmm(rs
            .iter()
            .filter_map(|r| r.msgs_per_s)
            .map(|x| x / 1e6)
            .collect());
        let (ratio, goal) = if base.is_empty() {
            (String::new(), "")
        } else {
            let r: Vec<f64> = runs
                .iter()
                .filter_map(|rs| {
                    Some(
                        find(rs, "bcast", 8, mode)?.msgs_per_s?
                            / find(rs, "bcast", 8, base)?.msgs_per_s?.max(1.0),
                    )
                })
                .collect();
            (
                format!("{} × 1 subscriber ({})", fmt(mmm(r), 2), &base[6..]),
                if mode.starts_with('2') { "≥ 0.8" } else { "" },
            )
        };
        println!(
            "| broadcast streaming 8 B to {mode} (publisher's rate) | {} M msgs/s | {ratio} | {goal} |",
            fmt(v, 1)
        );
    }
}

fn print_tables(recs: &[Record], cpus: usize) {
    println!(
        "shmchan bench: 2 processes pinned to CPUs 0 and 1 ({cpus} CPUs online, {})",
        cpu_model()
    );
    println!(
        "floor = median round trip of one cache line each way between the two processes, probed before and after each line"
    );
    let unix50 = |size: usize| {
        recs.iter()
            .find(|r| r.bench == "unix" && r.size == size)
            .and_then(Record::hist)
            .map(|h| h.value_at_quantile(0.5))
    };
    println!();
    println!(
        "{:<9} {:>6} {:<6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8} {:>7}  note",
        "latency",
        "size",
        "mode",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
        "floor",
        "x floor",
        "unix/x"
    );
    for r in recs {
        let Some(h) = r.hist() else { continue };
        let q = |x: f64| h.value_at_quantile(x);
        let ratio = if r.floor() > 0 {
            q(0.5) as f64 / r.floor() as f64
        } else {
            0.0
        };
        let vs_unix = match (r.bench, unix50(r.size)) {
            ("rtt", Some(u)) => format!("{:.0}", u as f64 / q(0.5).max(1) as f64),
            _ => "-".into(),
        };
        let mut note = r.flag.clone().unwrap_or_default();
        if let Some(c) = r.cpu_ns_per_msg {
            note.push_str(&format!(" cpu {c:.0} ns/msg"));
        }
        if let Some(c) = r.idle_cpu_pct {
            note.push_str(&format!(" idle cpu {c:.1}%"));
        }
        println!(
            "{:<9} {:>6} {:<6} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>6} {:>8.2} {:>7}  {}",
            r.bench,
            r.size,
            r.mode,
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            q(0.9999),
            h.max(),
            r.floor(),
            ratio,
            vs_unix,
            note.trim()
        );
    }
    if recs.iter().any(|r| r.gb_per_s.is_some()) {
        println!();
        println!(
            "{:<9} {:>6} {:<11} {:>12} {:>9} {:>12} {:>9}",
            "throughput", "size", "mode", "msgs/s", "GB/s", "cpu ns/msg", "ratio"
        );
        for r in recs.iter().filter(|r| r.gb_per_s.is_some()) {
            let memcpy = recs
                .iter()
                .find(|m| m.bench == "memcpy" && m.size == r.size)
                .and_then(|m| m.gb_per_s);
            let vs = match (r.bench, memcpy, r.gb_per_s, r.mpmc) {
                ("stream", Some(m), Some(g), _) => {
                    let ceiling = recs
                        .iter()
                        .find(|c| c.bench == "ceiling" && c.size == r.size)
                        .and_then(|c| c.gb_per_s)
                        .map(|c| format!(", {:.2} x ceiling", g / c))
                        .unwrap_or_default();
                    format!("{:.2} x memcpy{ceiling}", g / m)
                }
                (_, _, _, Some((_, _, aq))) => format!(
                    "{:.2} x ArrayQueue",
                    r.msgs_per_s.unwrap_or(0.0) / aq.max(1.0)
                ),
                _ => "-".into(),
            };
            println!(
                "{:<9} {:>6} {:<11} {:>12.0} {:>9.2} {:>12} {:>9}",
                r.bench,
                r.size,
                r.mode,
                r.msgs_per_s.unwrap_or(0.0),
                r.gb_per_s.unwrap_or(0.0),
                r.cpu_ns_per_msg
                    .map(|c| format!("{c:.1}"))
                    .unwrap_or("-".into()),
                vs
            );
        }
    }
}
