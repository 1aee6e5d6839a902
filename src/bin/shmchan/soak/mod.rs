//! `shmchan soak`: a crash soak. `N` producer and `M` consumer processes (SPSC: one
//! of each) stream self-checking messages through one channel while this process, the
//! parent, SIGKILLs a random child at a random moment and starts a replacement that
//! re-attaches by name, again and again for the configured duration.
//!
//! # The books, and why they survive SIGKILL
//!
//! Every child has a small record file in a private temp dir, mapped shared; its stores
//! land in the page cache, so they outlive the child's death. The parent reads them.
//!
//! - A producer thread sends messages `0, 1, 2, …` under its own tag (one tag per
//!   thread per producer *incarnation*). Before each attempt it stores `sent_hi` (one
//!   past the highest sequence number that may be in flight), after each `Ok` it
//!   stores `acked` ("acknowledged up to N"). That is two words per thread, whatever
//!   the number of messages.
//! - A consumer thread checks each message's payload and checksum (a torn message is
//!   counted in its file and not recorded), then appends `(tag, seq)` to a ring log of
//!   `LOG_CAP` records in its file and publishes the new count. The parent drains every
//!   log continuously (and finally, after the consumer died) and tells the consumer how
//!   far it has read, so the log never grows: a consumer waits if the parent is a whole
//!   log behind.
//! - The parent folds each record into one small state per tag: `hi` (one past the
//!   highest sequence number seen) and the gaps below `hi` (ranges not yet seen, usually
//!   none or a few while consumers race). A record below `hi` outside every gap is a
//!   duplicate; one at or above the producer's `sent_hi` was never sent.
//! - A consumer thread also keeps a `hand` word: how many messages it may hold between
//!   receiving and recording them (1, or the batch size). When a consumer is killed, the
//!   sum of its `hand` words is added to the loss allowance.
//!
//! # Verdicts
//!
//! - torn: any message whose payload or checksum does not match its tag and sequence;
//! - duplicate: a message recorded twice. MPMC: none allowed. SPSC: a consumer that
//!   recorded a borrowed message (`recv_ref`) and was killed before releasing it leaves
//!   it to the next consumer; exactly that case is allowed and counted apart as a
//!   *redelivery* (the first record of the next consumer equals the last record of the
//!   killed one);
//! - never sent: a record at or above its producer's `sent_hi`, or with an unknown tag;
//! - reordered (SPSC): a message below `hi` that fills a gap (SPSC is FIFO);
//! - lost: an acknowledged message (below its producer's final `acked`) never recorded;
//!   allowed up to the summed `hand` words of killed consumers (messages they held in
//!   hand: at most one per consumer thread per kill, or a batch);
//! - stall: after each kill, the consumers must record `2 × capacity + consumer threads
//!   + 8` more messages (more than a ring blocked by the victim can let through) within
//!   `--stall-limit-ms`;
//! - child failure: a child that exited on its own, or did not leave cleanly at the end;
//! - leftover: a `/dev/shm` object of this run left at the end.
//!
//! The parent creates the channel (children only open it) and removes it at the end,
//! also on an error (a guard) and when it is interrupted or killed: a watchdog process
//! in its own process group (so Ctrl-C does not reach it) waits for the parent's pipe to
//! close and cleans up unless told the parent did. Children die with the parent
//! (`PR_SET_PDEATHSIG`).
//!
//! The broadcast flavor (one publisher, `M` subscribers that each receive every
//! message) uses the same children, record files, kills and stall measurement with
//! books and verdicts of its own: see [`bcast`].

mod bcast;

use bytemuck::{Pod, Zeroable};
use memmap2::{MmapOptions, MmapRaw};
use serde_json::json;
use shmchan::broadcast::Policy;
use shmchan::{
    CreateMode, OpenError, Options, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
    broadcast, mpmc,
};
use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// Role of a re-executed child: `producer`, `consumer` or `watchdog`.
const CHILD_ENV: &str = "SHMCHAN_SOAK_CHILD";
/// The child's parameters (see [`ChildSpec`]).
const SPEC_ENV: &str = "SHMCHAN_SOAK_SPEC";
/// Channel name.
const NAME_ENV: &str = "SHMCHAN_SOAK_NAME";
/// Directory of the record files.
const DIR_ENV: &str = "SHMCHAN_SOAK_DIR";

/// Size of a record file's header page (and of the control and producer files).
const PAGE: u64 = 4096;
/// Records in a consumer thread's ring log.
const LOG_CAP: u64 = 1 << 16;
/// Most threads per child.
const MAX_THREADS: usize = 8;
/// A record is `tag << SEQ_BITS | seq`; tag 0 marks a message that cannot be ours.
const SEQ_BITS: u32 = 40;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const MAX_TAGS: usize = 1 << (64 - SEQ_BITS);
/// Producer tags end below the tags of the broadcast books' own records.
const MAX_PRODUCER_TAGS: usize = MAX_TAGS - 2;
/// Most messages in a consumer's batch receive (SPSC).
const RECV_BATCH: usize = 4;
/// Longest blocking call in a child (then it looks at the control word).
const STEP: Duration = Duration::from_millis(100);
/// How long the parent sleeps between looks.
const POLL: Duration = Duration::from_micros(250);
/// How long children get to attach at the start and to leave at the end.
const MUST_FINISH: Duration = Duration::from_secs(30);

// Header words of a child's record file.
/// CLOCK_MONOTONIC ns when the child finished attaching; 0 before.
const H_ATTACHED: usize = 0;
/// 1 once the child is leaving cleanly.
const H_DONE: usize = 1;
/// Consumers: torn messages seen.
const H_TORN: usize = 2;
/// Broadcast: the position the child attached at, plus one; 0 before.
const H_START: usize = 3;

/// Producers: one past the highest sequence number thread `t` may have in flight.
fn p_sent_hi(t: usize) -> usize {
    8 + 2 * t
}
/// Producers: messages of thread `t` whose send returned `Ok`.
fn p_acked(t: usize) -> usize {
    9 + 2 * t
}
/// Consumers: records thread `t` has published in its log.
fn c_written(t: usize) -> usize {
    8 + t
}
/// Consumers: records of thread `t` the parent has read (written by the parent).
fn c_read(t: usize) -> usize {
    16 + t
}
/// Consumers: how many messages thread `t` may hold unrecorded right now.
fn c_hand(t: usize) -> usize {
    24 + t
}
/// SPSC consumers: the record of a borrowed message from just before it is recorded
/// until just after its slot is released; 0 otherwise.
fn c_hold(t: usize) -> usize {
    32 + t
}
/// Consumers: word of record `i` of thread `t`'s log.
fn c_log(t: usize, i: u64) -> usize {
    (PAGE / 8 + t as u64 * LOG_CAP + i % LOG_CAP) as usize
}
fn consumer_file_len(threads: usize) -> u64 {
    PAGE + threads as u64 * LOG_CAP * 8
}

// The control file.
const CTL_PHASE: usize = 0;
/// Everyone runs.
const PHASE_RUN: u64 = 0;
/// Producers: stop and leave.
const PHASE_STOP: u64 = 1;
/// Consumers: leave once the channel says Disconnected (it is drained).
const PHASE_DRAIN: u64 = 2;

/// Channel flavor.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Multi-producer multi-consumer (`shmchan::mpmc`).
    Mpmc,
    /// Single-producer single-consumer (`shmchan::{Sender, Receiver}`).
    Spsc,
    /// One publisher, `--consumers` subscribers (`shmchan::broadcast`).
    Broadcast,
}

impl Flavor {
    fn name(self) -> &'static str {
        match self {
            Flavor::Mpmc => "mpmc",
            Flavor::Spsc => "spsc",
            Flavor::Broadcast => "broadcast",
        }
    }
}

/// A range of milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct MsRange {
    lo: u64,
    hi: u64,
}

fn parse_range(s: &str) -> std::result::Result<MsRange, String> {
    let bad = || format!("bad range {s:?} (e.g. 5..200, or 50)");
    let num = |x: &str| x.trim().parse::<u64>().map_err(|_| bad());
    let (lo, hi) = match s.split_once("..") {
        Some((a, b)) => (num(a)?, num(b.trim_start_matches('='))?),
        None => {
            let v = num(s)?;
            (v, v)
        }
    };
    if hi < lo || hi == 0 {
        return Err(bad());
    }
    Ok(MsRange { lo, hi })
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let bad = || format!("bad duration {s:?} (e.g. 90s, 30m, 1h, 500ms)");
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = match unit.trim() {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" | "min" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(bad()),
    };
    if !secs.is_finite() || secs <= 0.0 || secs > 1e9 {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Arguments of `shmchan soak`.
#[derive(clap::Args, Debug, Clone)]
pub struct SoakArgs {
    /// Channel flavor.
    #[arg(long, value_enum, default_value = "mpmc")]
    flavor: Flavor,
    /// Broadcast: what the publisher does when a subscriber is a whole ring behind.
    #[arg(long, value_enum)]
    policy: Option<bcast::PolicyArg>,
    /// Producer processes (default 3; SPSC and broadcast: exactly 1).
    #[arg(long)]
    producers: Option<usize>,
    /// Consumer processes (default 3; SPSC: exactly 1; broadcast: subscribers).
    #[arg(long)]
    consumers: Option<usize>,
    /// Threads per MPMC child, each with a clone of its handle (SPSC, broadcast: 1).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// How long to keep killing: 90s, 30m, 1h, 500ms, ...
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Time between kills: a random number of milliseconds in LO..HI, or a fixed N.
    /// (One kill in ten is followed 0-4 ms later by a kill of its replacement.)
    #[arg(long, default_value = "5..200", value_parser = parse_range)]
    kill_every_ms: MsRange,
    /// Liveness interval of every handle, in milliseconds.
    #[arg(long, default_value_t = 20)]
    liveness_ms: u64,
    /// Fail if delivery has not made progress this long after a kill.
    #[arg(long, default_value_t = 2000)]
    stall_limit_ms: u64,
    /// Slots in the ring (a power of two).
    #[arg(long, default_value_t = 64)]
    capacity: usize,
    /// Nice increment of the children, so that the parent's kills land on time.
    #[arg(long, default_value_t = 5)]
    nice: i32,
    /// Seconds between progress lines on stderr (0: none).
    #[arg(long, default_value_t = 10)]
    progress_secs: u64,
    /// Seed of the kill schedule (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
    /// Self-test of the verifier: make the consumers misbehave (duplicate, lose,
    /// torn, never-sent records) now and then; the run must then fail.
    #[arg(long, hide = true, value_enum)]
    inject: Option<Inject>,
}

/// A fault the consumers inject into their books (to test the verifier).
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inject {
    /// Record a message twice.
    Duplicate,
    /// Do not record a message.
    Lose,
    /// Flip a payload bit before checking a message.
    Torn,
    /// Record a sequence number far beyond what was sent.
    NeverSent,
    /// Not a fault: SPSC consumers hold each borrowed message 1 ms between recording
    /// and releasing it, so that kills land there (redeliveries, which are allowed).
    Hold,
}

impl Inject {
    fn name(self) -> &'static str {
        match self {
            Inject::Duplicate => "duplicate",
            Inject::Lose => "lose",
            Inject::Torn => "torn",
            Inject::NeverSent => "never-sent",
            Inject::Hold => "hold",
        }
    }

    fn parse(s: &str) -> Option<Option<Inject>> {
        Some(match s {
            "-" => None,
            "duplicate" => Some(Inject::Duplicate),
            "lose" => Some(Inject::Lose),
            "torn" => Some(Inject::Torn),
            "never-sent" => Some(Inject::NeverSent),
            "hold" => Some(Inject::Hold),
            _ => return None,
        })
    }
}

/// One message in this many is hit by an injected fault.
const INJECT_EVERY: u64 = 1 << 14;

/// The arguments, checked.
#[derive(Debug, Clone)]
struct Config {
    flavor: Flavor,
    /// Broadcast only.
    policy: Option<Policy>,
    producers: usize,
    consumers: usize,
    threads: usize,
    duration: Duration,
    kill: MsRange,
    liveness: Duration,
    stall_limit: Duration,
    capacity: usize,
    nice: i32,
    progress: Option<Duration>,
    seed: u64,
    json: bool,
    inject: Option<Inject>,
}

impl Config {
    fn from_args(a: &SoakArgs) -> Result<Config> {
        let (producers, consumers, threads) = match a.flavor {
            Flavor::Mpmc => (
                a.producers.unwrap_or(3),
                a.consumers.unwrap_or(3),
                a.threads,
            ),
            Flavor::Spsc => {
                if a.producers.unwrap_or(1) != 1 || a.consumers.unwrap_or(1) != 1 {
                    return Err("an SPSC channel has one producer and one consumer".into());
                }
                (1, 1, 1)
            }
            Flavor::Broadcast => {
                if a.producers.unwrap_or(1) != 1 {
                    return Err("a broadcast channel has one publisher".into());
                }
                (1, a.consumers.unwrap_or(3), 1)
            }
        };
        let policy = match (a.flavor, a.policy) {
            (Flavor::Broadcast, p) => Some(p.map_or(Policy::Lossless, bcast::PolicyArg::policy)),
            (_, None) => None,
            (_, Some(_)) => return Err("--policy applies to --flavor broadcast".into()),
        };
        if producers == 0 || consumers == 0 {
            return Err("need at least one producer and one consumer".into());
        }
        if producers + consumers > 90 {
            return Err("at most 90 children".into());
        }
        if threads == 0 || threads > MAX_THREADS {
            return Err(format!("--threads must be 1..={MAX_THREADS}").into());
        }
        if !a.capacity.is_power_of_two() {
            return Err("--capacity must be a power of two".into());
        }
        let seed = a
            .seed
            .unwrap_or_else(|| mix64(mono_ns() ^ u64::from(std::process::id()).rotate_left(32)));
        Ok(Config {
            flavor: a.flavor,
            policy,
            producers,
            consumers,
            threads,
            duration: a.duration,
            kill: a.kill_every_ms,
            liveness: Duration::from_millis(a.liveness_ms.max(1)),
            stall_limit: Duration::from_millis(a.stall_limit_ms),
            capacity: a.capacity,
            nice: a.nice,
            progress: (a.progress_secs > 0).then(|| Duration::from_secs(a.progress_secs)),
            seed,
            json: a.json,
            inject: a.inject,
        })
    }

    /// The flavor, and the policy of a broadcast channel.
    fn label(&self) -> String {
        match self.policy {
            Some(p) => format!("{} ({})", self.flavor.name(), p.name()),
            None => self.flavor.name().to_string(),
        }
    }

    /// Records the consumers must add after a kill: more than a ring blocked by the
    /// victim can let through (two rings, plus what the consumer threads hold).
    fn progress_quota(&self) -> u64 {
        2 * self.capacity as u64 + (self.consumers * self.threads) as u64 + 8
    }
}

// ---------------------------------------------------------------------------------
// Small helpers shared by parent and children.
// ---------------------------------------------------------------------------------

/// The splitmix64 finaliser.
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A small non-cryptographic generator (splitmix64).
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn from_entropy(salt: u64) -> Rng {
        Rng(mix64(
            mono_ns() ^ u64::from(std::process::id()) << 32 ^ salt.wrapping_mul(0x9e37_79b9),
        ))
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A value in `0..n` (0 if `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// A value in `lo..=hi`.
    fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// CLOCK_MONOTONIC in ns: the same clock in every process.
fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// A message that checks itself: the payload and checksum are functions of the tag
/// and the sequence number, so a torn or garbage message is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
struct Msg {
    seq: u64,
    tag: u32,
    not_tag: u32,
    payload: [u64; 4],
    check: u64,
}

impl Msg {
    fn new(tag: u32, seq: u64) -> Msg {
        let mut payload = [0u64; 4];
        for (i, p) in payload.iter_mut().enumerate() {
            *p = mix64(seq ^ u64::from(tag) << 40 ^ (i as u64 + 1) << 60);
        }
        let mut m = Msg {
            seq,
            tag,
            not_tag: !tag,
            payload,
            check: 0,
        };
        m.check = m.checksum();
        m
    }

    fn checksum(&self) -> u64 {
        let mut h = mix64(self.seq ^ 0x5eed_50a4);
        h = mix64(h ^ u64::from(self.tag) ^ u64::from(self.not_tag) << 32);
        for p in self.payload {
            h = mix64(h ^ p);
        }
        h
    }

    /// Whether the message is whole: exactly what `new` makes for its tag and seq.
    fn is_whole(&self) -> bool {
        self.check == self.checksum() && *self == Msg::new(self.tag, self.seq)
    }

    /// Its record; 0 (an unknown tag) if it cannot be one of ours.
    fn record(&self) -> u64 {
        if self.tag == 0 || self.tag as usize >= MAX_TAGS || self.seq > SEQ_MASK {
            0
        } else {
            u64::from(self.tag) << SEQ_BITS | self.seq
        }
    }
}

/// A file mapped shared, seen as `u64` atomics. Stores land in the page cache, so
/// they outlive the process that made them.
#[derive(Debug)]
struct Words {
    map: MmapRaw,
    len: usize,
}

impl Words {
    /// Maps the first `len` bytes (a multiple of 8) of the existing file `path`.
    fn open(path: &Path, len: u64) -> Result<Words> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| format!("open {}: {e}", path.display()))?;
        if file.metadata()?.len() < len {
            return Err(format!("{} is shorter than {len} bytes", path.display()).into());
        }
        let map = MmapOptions::new().len(len as usize).map_raw(&file)?;
        Ok(Words {
            map,
            len: len as usize / 8,
        })
    }

    /// Word `i`. The indices are computed here, never read from another process.
    fn w(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.len, "word {i} outside a {}-word file", self.len);
        // SAFETY: the mapping is page aligned, so every 8-byte word is aligned for
        // AtomicU64; `i` is inside it (checked above, and the file was at least that
        // long when mapped; nobody shrinks these private files); it stays mapped as
        // long as `self`; every process accesses these words only atomically.
        unsafe { &*self.map.as_mut_ptr().cast::<AtomicU64>().add(i) }
    }
}

fn create_file(path: &Path, len: u64) -> Result<()> {
    let f = File::create(path).map_err(|e| format!("create {}: {e}", path.display()))?;
    f.set_len(len)?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Children.
// ---------------------------------------------------------------------------------

/// If this process is a soak child (or the watchdog), runs its role and exits.
pub fn maybe_run_child() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    // Re-executed through /proc/self/exe, we would show as "exe" in ps and top.
    if let Ok(task) = std::ffi::CString::new(format!("soak-{role}")) {
        let _ = rustix::thread::set_name(&task);
    }
    let r = if role == "watchdog" {
        run_watchdog()
    } else {
        ChildSpec::from_env(&role).and_then(|s| s.run())
    };
    match r {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("shmchan soak {role} (pid {}): {e}", std::process::id());
            std::process::exit(2)
        }
    }
}

/// What a producer or consumer child was started with.
#[derive(Debug, Clone)]
struct ChildSpec {
    consumer: bool,
    flavor: Flavor,
    /// Incarnation number: its record file.
    id: usize,
    threads: usize,
    tag_base: u32,
    liveness: Duration,
    ppid: i32,
    nice: i32,
    inject: Option<Inject>,
    name: String,
    dir: PathBuf,
}

impl ChildSpec {
    fn to_env(&self) -> String {
        format!(
            "{} {} {} {} {} {} {} {}",
            self.flavor.name(),
            self.id,
            self.threads,
            self.tag_base,
            self.liveness.as_micros(),
            self.ppid,
            self.nice,
            self.inject.map_or("-", Inject::name),
        )
    }

    fn from_env(role: &str) -> Result<ChildSpec> {
        let spec = std::env::var(SPEC_ENV).map_err(|_| "no spec")?;
        let f: Vec<&str> = spec.split_whitespace().collect();
        let [
            flavor,
            id,
            threads,
            tag_base,
            liveness_us,
            ppid,
            nice,
            inject,
        ] = f[..]
        else {
            return Err(format!("bad spec {spec:?}").into());
        };
        let consumer = match role {
            "producer" => false,
            "consumer" => true,
            r => return Err(format!("unknown role {r}").into()),
        };
        let threads: usize = threads.parse()?;
        if threads == 0 || threads > MAX_THREADS {
            return Err("bad thread count".into());
        }
        Ok(ChildSpec {
            consumer,
            flavor: match flavor {
                "mpmc" => Flavor::Mpmc,
                "spsc" => Flavor::Spsc,
                "broadcast" => Flavor::Broadcast,
                f => return Err(format!("unknown flavor {f}").into()),
            },
            id: id.parse()?,
            threads,
            tag_base: tag_base.parse()?,
            liveness: Duration::from_micros(liveness_us.parse()?),
            ppid: ppid.parse()?,
            nice: nice.parse()?,
            inject: Inject::parse(inject).ok_or("bad inject")?,
            name: std::env::var(NAME_ENV).map_err(|_| "no channel name")?,
            dir: std::env::var_os(DIR_ENV).ok_or("no directory")?.into(),
        })
    }

    fn file(&self) -> PathBuf {
        record_path(&self.dir, self.consumer, self.id)
    }

    fn opts(&self) -> Options {
        Options::new().liveness_interval(self.liveness)
    }

    fn run(&self) -> Result<()> {
        // Die with the parent; then close the race where it died before the prctl.
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        if !parent_is(self.ppid) {
            return Ok(());
        }
        // Below the parent's priority, so that its kills land when it means them to.
        let _ = rustix::process::nice(self.nice);
        let ctl = Arc::new(Words::open(&self.dir.join("ctl"), PAGE)?);
        match (self.flavor, self.consumer) {
            (Flavor::Mpmc, false) => self.mpmc_producer(ctl),
            (Flavor::Mpmc, true) => self.mpmc_consumer(ctl),
            (Flavor::Spsc, false) => self.spsc_producer(&ctl),
            (Flavor::Spsc, true) => self.spsc_consumer(&ctl),
            (Flavor::Broadcast, false) => self.bcast_publisher(&ctl),
            (Flavor::Broadcast, true) => self.bcast_subscriber(&ctl),
        }
    }

    fn mpmc_producer(&self, ctl: Arc<Words>) -> Result<()> {
        let me = Arc::new(Words::open(&self.file(), PAGE)?);
        let tx = attach(|| mpmc::Sender::<Msg>::with_options(&self.name, &self.opts()))?;
        me.w(H_ATTACHED).store(mono_ns().max(1), Ordering::SeqCst);
        let handles: Vec<_> = (0..self.threads)
            .map(|t| {
                let (tx, me, ctl) = (tx.clone(), me.clone(), ctl.clone());
                let tag = self.tag_base + t as u32;
                std::thread::spawn(move || mpmc_produce(&tx, tag, &me, t, &ctl))
            })
            .collect();
        drop(tx);
        join_all(handles)?;
        me.w(H_DONE).store(1, Ordering::SeqCst);
        Ok(())
    }

    fn mpmc_consumer(&self, ctl: Arc<Words>) -> Result<()> {
        let me = Arc::new(Words::open(&self.file(), consumer_file_len(self.threads))?);
        let rx = attach(|| mpmc::Receiver::<Msg>::with_options(&self.name, &self.opts()))?;
        me.w(H_ATTACHED).store(mono_ns().max(1), Ordering::SeqCst);
        let (ppid, inject) = (self.ppid, self.inject);
        let handles: Vec<_> = (0..self.threads)
            .map(|t| {
                let (rx, me, ctl) = (rx.clone(), me.clone(), ctl.clone());
                std::thread::spawn(move || {
                    mpmc_consume(&rx, Log::new(&me, t, ppid, inject), t, &ctl)
                })
            })
            .collect();
        drop(rx);
        join_all(handles)?;
        me.w(H_DONE).store(1, Ordering::SeqCst);
        Ok(())
    }

    /// One thread, every send path: blocking, non-blocking, batch, loan.
    fn spsc_producer(&self, ctl: &Words) -> Result<()> {
        let me = Words::open(&self.file(), PAGE)?;
        let mut tx = attach(|| shmchan::Sender::<Msg>::with_options(&self.name, &self.opts()))?;
        me.w(H_ATTACHED).store(mono_ns().max(1), Ordering::SeqCst);
        let tag = self.tag_base;
        let (sent_hi, acked) = (me.w(p_sent_hi(0)), me.w(p_acked(0)));
        let mut rng = Rng::from_entropy(0);
        let mut seq = 0u64;
        while running(ctl) && seq < SEQ_MASK - 16 {
            let mut gone = false;
            let sent = match rng.below(8) {
                0 => {
                    let k = rng.between(1, 8);
                    let batch: Vec<Msg> = (seq..seq + k).map(|s| Msg::new(tag, s)).collect();
                    sent_hi.store(seq + k, Ordering::Release);
                    match tx.try_send_batch(&batch) {
                        Ok(n) => n as u64,
                        Err(TrySendError::Full(())) => 0,
                        Err(TrySendError::Disconnected(())) => {
                            gone = true;
                            0
                        }
                    }
                }
                1 => {
                    sent_hi.store(seq + 1, Ordering::Release);
                    match tx.try_loan() {
                        Ok(mut slot) => {
                            *slot = Msg::new(tag, seq);
                            slot.commit();
                            1
                        }
                        Err(TrySendError::Full(())) => 0,
                        Err(TrySendError::Disconnected(())) => {
                            gone = true;
                            0
                        }
                    }
                }
                2 | 3 => {
                    sent_hi.store(seq + 1, Ordering::Release);
                    match tx.try_send(Msg::new(tag, seq)) {
                        Ok(()) => 1,
                        Err(TrySendError::Full(_)) => 0,
                        Err(TrySendError::Disconnected(_)) => {
                            gone = true;
                            0
                        }
                    }
                }
                _ => {
                    sent_hi.store(seq + 1, Ordering::Release);
                    match tx.send_timeout(Msg::new(tag, seq), STEP) {
                        Ok(()) => 1,
                        Err(SendTimeoutError::Timeout(_)) => 0,
                        Err(SendTimeoutError::Disconnected(_)) => {
                            gone = true;
                            0
                        }
                    }
                }
            };
            if sent > 0 {
                seq += sent;
                // Only after Ok: everything below `seq` was acknowledged.
                acked.store(seq, Ordering::Release);
            } else if gone {
                // No consumer right now (one was killed): try again shortly.
                nap();
            } else {
                std::thread::yield_now();
            }
        }
        // Leaving cleanly: nothing at or past `seq` was sent.
        sent_hi.store(seq, Ordering::Release);
        drop(tx);
        me.w(H_DONE).store(1, Ordering::SeqCst);
        Ok(())
    }

    /// One thread, every receive path: blocking, non-blocking, borrowed (recorded
    /// before its slot is released), batch.
    fn spsc_consumer(&self, ctl: &Words) -> Result<()> {
        let me = Words::open(&self.file(), consumer_file_len(1))?;
        let mut rx = attach(|| shmchan::Receiver::<Msg>::with_options(&self.name, &self.opts()))?;
        me.w(H_ATTACHED).store(mono_ns().max(1), Ordering::SeqCst);
        let mut log = Log::new(&me, 0, self.ppid, self.inject);
        let hand = me.w(c_hand(0));
        let hold = me.w(c_hold(0));
        let mut in_hand = 0;
        let mut rng = Rng::from_entropy(1);
        let mut buf = [Msg::zeroed(); RECV_BATCH];
        loop {
            let mode = rng.below(10);
            let k = if mode == 3 { RECV_BATCH as u64 } else { 1 };
            if k != in_hand {
                hand.store(k, Ordering::SeqCst);
                in_hand = k;
            }
            let gone = match mode {
                0 | 1 => match rx.try_recv() {
                    Ok(m) => {
                        log.take(&m)?;
                        false
                    }
                    Err(TryRecvError::Empty) => {
                        std::thread::yield_now();
                        false
                    }
                    Err(TryRecvError::Disconnected) => true,
                },
                2 => match rx.try_recv_ref() {
                    Ok(m) => {
                        // Recorded before the slot is released (when `m` drops): a
                        // kill in between makes the next consumer get it again.
                        hold.store(m.record(), Ordering::SeqCst);
                        log.take(&m)?;
                        if self.inject == Some(Inject::Hold) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        drop(m);
                        hold.store(0, Ordering::SeqCst);
                        false
                    }
                    Err(TryRecvError::Empty) => {
                        std::thread::yield_now();
                        false
                    }
                    Err(TryRecvError::Disconnected) => true,
                },
                3 => match rx.try_recv_batch(&mut buf) {
                    Ok(n) => {
                        for m in &buf[..n.min(RECV_BATCH)] {
                            log.take(m)?;
                        }
                        false
                    }
                    Err(TryRecvError::Empty) => {
                        std::thread::yield_now();
                        false
                    }
                    Err(TryRecvError::Disconnected) => true,
                },
                4 => match rx.recv_ref() {
                    Ok(m) => {
                        hold.store(m.record(), Ordering::SeqCst);
                        log.take(&m)?;
                        if self.inject == Some(Inject::Hold) {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                        drop(m);
                        hold.store(0, Ordering::SeqCst);
                        false
                    }
                    Err(_) => true,
                },
                _ => match rx.recv_timeout(STEP) {
                    Ok(m) => {
                        log.take(&m)?;
                        false
                    }
                    Err(RecvTimeoutError::Timeout) => false,
                    Err(RecvTimeoutError::Disconnected) => true,
                },
            };
            if gone {
                // The producer is gone (killed, or left at the end) and the ring is
                // drained: leave only at the end.
                if draining(ctl) {
                    break;
                }
                nap();
            }
        }
        drop(rx);
        me.w(H_DONE).store(1, Ordering::SeqCst);
        Ok(())
    }
}

fn mpmc_produce(
    tx: &mpmc::Sender<Msg>,
    tag: u32,
    me: &Words,
    t: usize,
    ctl: &Words,
) -> std::result::Result<(), String> {
    let (sent_hi, acked) = (me.w(p_sent_hi(t)), me.w(p_acked(t)));
    let mut rng = Rng::from_entropy(t as u64);
    let mut seq = 0u64;
    while running(ctl) && seq < SEQ_MASK {
        let m = Msg::new(tag, seq);
        sent_hi.store(seq + 1, Ordering::Release);
        // Mostly blocking sends (with a timeout, to look at the control word), some
        // non-blocking ones.
        let ok = if rng.below(4) == 0 {
            match tx.try_send(m) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    std::thread::yield_now();
                    false
                }
                Err(TrySendError::Disconnected(_)) => {
                    nap();
                    false
                }
            }
        } else {
            match tx.send_timeout(m, STEP) {
                Ok(()) => true,
                Err(SendTimeoutError::Timeout(_)) => false,
                Err(SendTimeoutError::Disconnected(_)) => {
                    nap();
                    false
                }
            }
        };
        if ok {
            seq += 1;
            // Only after Ok: everything below `seq` was acknowledged.
            acked.store(seq, Ordering::Release);
        }
    }
    sent_hi.store(seq, Ordering::Release);
    Ok(())
}

fn mpmc_consume(
    rx: &mpmc::Receiver<Msg>,
    mut log: Log<'_>,
    t: usize,
    ctl: &Words,
) -> std::result::Result<(), String> {
    // From here on this thread may hold one received, unrecorded message.
    log.me.w(c_hand(t)).store(1, Ordering::SeqCst);
    let mut rng = Rng::from_entropy(t as u64 + 100);
    loop {
        let got = if rng.below(4) == 0 {
            match rx.try_recv() {
                Ok(m) => Some(m),
                Err(TryRecvError::Empty) => {
                    std::thread::yield_now();
                    None
                }
                Err(TryRecvError::Disconnected) => {
                    if draining(ctl) {
                        break;
                    }
                    nap();
                    None
                }
            }
        } else {
            match rx.recv_timeout(STEP) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    if draining(ctl) {
                        break;
                    }
                    nap();
                    None
                }
            }
        };
        if let Some(m) = got {
            log.take(&m)?;
        }
    }
    Ok(())
}

/// A consumer thread's ring log in its record file.
struct Log<'a> {
    me: &'a Words,
    t: usize,
    n: u64,
    ppid: i32,
    inject: Option<Inject>,
    taken: u64,
    /// Record a torn message as [`bcast::torn_record`] (its position counts).
    mark_torn: bool,
}

impl<'a> Log<'a> {
    fn new(me: &'a Words, t: usize, ppid: i32, inject: Option<Inject>) -> Log<'a> {
        Log {
            me,
            t,
            n: 0,
            ppid,
            inject,
            taken: 0,
            mark_torn: false,
        }
    }

    /// Checks `m` and records it (right after it was received).
    fn take(&mut self, m: &Msg) -> std::result::Result<(), String> {
        self.taken += 1;
        let every = self.inject.filter(|&f| f != Inject::Hold);
        if let Some(fault) = every.filter(|_| self.taken % INJECT_EVERY == 0) {
            let mut bad = *m;
            match fault {
                Inject::Duplicate => self.push(m.record())?,
                Inject::Lose => return Ok(()),
                Inject::Torn => bad.payload[1] ^= 1 << 7,
                Inject::NeverSent => bad.seq += 1 << 30,
                Inject::Hold => {}
            }
            if fault == Inject::NeverSent {
                return self.push(bad.record());
            }
            return self.check_and_push(&bad);
        }
        self.check_and_push(m)
    }

    fn check_and_push(&mut self, m: &Msg) -> std::result::Result<(), String> {
        if !m.is_whole() {
            let n = self.me.w(H_TORN).fetch_add(1, Ordering::SeqCst);
            if n < 3 {
                eprintln!(
                    "shmchan soak consumer (pid {}): torn message {m:?}",
                    std::process::id()
                );
            }
            if self.mark_torn {
                return self.push(bcast::torn_record());
            }
            return Ok(());
        }
        self.push(m.record())
    }

    /// Appends `rec` to the log.
    fn push(&mut self, rec: u64) -> std::result::Result<(), String> {
        let read = self.me.w(c_read(self.t));
        // The parent reads continuously; wait if it is a whole log behind.
        while self.n.wrapping_sub(read.load(Ordering::Acquire)) >= LOG_CAP {
            if !parent_is(self.ppid) {
                return Err("parent gone".into());
            }
            std::thread::sleep(Duration::from_micros(100));
        }
        self.me
            .w(c_log(self.t, self.n))
            .store(rec, Ordering::Relaxed);
        self.n += 1;
        // Release: the record above is visible to whoever sees the new count.
        self.me
            .w(c_written(self.t))
            .store(self.n, Ordering::Release);
        Ok(())
    }
}

fn running(ctl: &Words) -> bool {
    ctl.w(CTL_PHASE).load(Ordering::Relaxed) == PHASE_RUN
}

fn draining(ctl: &Words) -> bool {
    ctl.w(CTL_PHASE).load(Ordering::SeqCst) >= PHASE_DRAIN
}

fn nap() {
    std::thread::sleep(Duration::from_micros(200));
}

fn parent_is(ppid: i32) -> bool {
    rustix::process::getppid().map(|p| p.as_raw_pid()) == Some(ppid)
}

/// Opens a handle, retrying while the role is still held by a victim that is dying
/// (SPSC) or the peer table is full of them (MPMC).
fn attach<H>(mut open: impl FnMut() -> std::result::Result<H, OpenError>) -> Result<H> {
    let deadline = Instant::now() + MUST_FINISH;
    loop {
        match open() {
            Ok(h) => return Ok(h),
            Err(OpenError::RoleTaken { .. } | OpenError::TooManyPeers(_))
                if Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_micros(200));
            }
            Err(e) => return Err(format!("attach: {e}").into()),
        }
    }
}

fn join_all(handles: Vec<std::thread::JoinHandle<std::result::Result<(), String>>>) -> Result<()> {
    for h in handles {
        h.join().map_err(|_| "a thread panicked")??;
    }
    Ok(())
}

/// The watchdog: waits until the parent's pipe closes. Unless the parent said it
/// cleaned up ("done"), it was interrupted or killed: remove the channel and the
/// record files.
fn run_watchdog() -> Result<()> {
    let name = std::env::var(NAME_ENV).map_err(|_| "no channel name")?;
    let dir: PathBuf = std::env::var_os(DIR_ENV).ok_or("no directory")?.into();
    let mut said = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut said);
    if said.starts_with(b"done") {
        return Ok(());
    }
    let removed = shmchan::remove(&name).is_ok();
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!(
        "shmchan soak: interrupted; {} /dev/shm/{name} and {}",
        if removed { "removed" } else { "no" },
        dir.display()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------
// The parent.
// ---------------------------------------------------------------------------------

fn record_path(dir: &Path, consumer: bool, id: usize) -> PathBuf {
    dir.join(format!("{}{id}", if consumer { "c" } else { "p" }))
}

/// Removes the channel and the record files when dropped (also on an error), and
/// tells the watchdog that it did.
struct Cleanup {
    name: String,
    dir: PathBuf,
    watchdog: Option<(Child, ChildStdin)>,
    done: bool,
}

impl Cleanup {
    fn run(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        let _ = shmchan::remove(&self.name);
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((mut child, mut stdin)) = self.watchdog.take() {
            let _ = stdin.write_all(b"done\n");
            drop(stdin);
            let _ = child.wait();
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.run();
    }
}

/// A running child.
#[derive(Debug)]
struct Live {
    child: Child,
    id: usize,
    consumer: bool,
    path: PathBuf,
    words: Rc<Words>,
    spawned_ns: u64,
    attach_seen: bool,
    /// Producers: tag of thread 0.
    tag_base: usize,
    /// Consumers: records read per thread.
    read: [u64; MAX_THREADS],
    /// Consumers: records read in all, and the last one.
    records: u64,
    last_rec: Option<u64>,
    /// Broadcast subscribers: the books of this incarnation.
    sub: bcast::SubBooks,
}

impl Live {
    fn attached(&self) -> bool {
        self.words.w(H_ATTACHED).load(Ordering::SeqCst) != 0
    }

    /// Folds the consumer's new records into the ledger.
    fn drain(&mut self, threads: usize, ledger: &mut Ledger) {
        // Broadcast: no record before the position it attached at is known.
        if ledger.bcast.is_some() && !self.sub.attach_from(&self.words, ledger, self.id) {
            return;
        }
        for t in 0..threads {
            let written = self.words.w(c_written(t)).load(Ordering::Acquire);
            let r = self.read[t];
            if written < r || written - r > LOG_CAP {
                ledger.log_corrupt += 1;
                ledger.note(format!(
                    "consumer {} thread {t}: log count {written} after {r} read",
                    self.id
                ));
                self.read[t] = written;
                continue;
            }
            for i in r..written {
                let rec = self.words.w(c_log(t, i)).load(Ordering::Relaxed);
                if ledger.bcast.is_some() {
                    ledger.bcast_record(rec, &mut self.sub, self.id);
                } else {
                    ledger.record(rec, self.records == 0, self.id);
                }
                self.records += 1;
                self.last_rec = Some(rec);
            }
            self.read[t] = written;
            // Release: our reads of the log are done before the consumer reuses it.
            self.words.w(c_read(t)).store(written, Ordering::Release);
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        // Only if still running (an error path): never leave a process behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What the parent knows about one producer thread's messages.
#[derive(Debug, Default)]
struct TagState {
    /// The producer's record file while it runs (for fresh `sent_hi`/`acked`).
    src: Option<Rc<Words>>,
    thread: usize,
    sent_hi: u64,
    acked: u64,
    /// Broadcast: the position the publisher attached at, plus one; 0 if unknown.
    start: u64,
    /// One past the highest sequence number recorded.
    hi: u64,
    /// Ranges below `hi` not recorded yet: start -> end (exclusive).
    gaps: BTreeMap<u64, u64>,
}

impl TagState {
    fn refresh(&mut self) {
        if let Some(w) = &self.src {
            self.sent_hi = w.w(p_sent_hi(self.thread)).load(Ordering::Acquire);
            self.acked = w.w(p_acked(self.thread)).load(Ordering::Acquire);
            if self.start == 0 {
                self.start = w.w(H_START).load(Ordering::Acquire);
            }
        }
    }

    /// Removes `seq` from the gaps; returns the change in the number of ranges, or
    /// `None` if it was in none.
    fn fill(&mut self, seq: u64) -> Option<isize> {
        let (&start, &end) = self.gaps.range(..=seq).next_back()?;
        if seq >= end {
            return None;
        }
        self.gaps.remove(&start);
        let mut d = -1;
        if start < seq {
            self.gaps.insert(start, seq);
            d += 1;
        }
        if seq + 1 < end {
            self.gaps.insert(seq + 1, end);
            d += 1;
        }
        Some(d)
    }

    /// Acknowledged messages never recorded.
    fn lost(&self) -> (u64, Option<u64>) {
        let mut n = 0;
        let mut first = None;
        for (&s, &e) in &self.gaps {
            let e = e.min(self.acked);
            if s < e {
                n += e - s;
                first.get_or_insert(s);
            }
        }
        if self.acked > self.hi {
            n += self.acked - self.hi;
            first.get_or_insert(self.hi);
        }
        (n, first)
    }
}

/// The books: every record folded into per-tag state, and the verdicts so far.
#[derive(Debug)]
struct Ledger {
    spsc: bool,
    /// Broadcast: the books of its own verdicts.
    bcast: Option<bcast::Books>,
    /// Indexed by tag; tag 0 is never used.
    tags: Vec<TagState>,
    records: u64,
    delivered: u64,
    duplicates: u64,
    redeliveries: u64,
    never_sent: u64,
    reordered: u64,
    log_corrupt: u64,
    gap_ranges: usize,
    peak_gap_ranges: usize,
    /// SPSC: the last record of the last killed consumer, if it was killed holding that
    /// message borrowed (recorded, maybe not released); the next consumer's first
    /// record may repeat it.
    spsc_prev_last: Option<u64>,
    noted: u64,
}

impl Ledger {
    fn new(flavor: Flavor, policy: Option<Policy>) -> Ledger {
        Ledger {
            spsc: flavor == Flavor::Spsc,
            bcast: (flavor == Flavor::Broadcast).then(|| bcast::Books::new(policy)),
            tags: vec![TagState::default()],
            records: 0,
            delivered: 0,
            duplicates: 0,
            redeliveries: 0,
            never_sent: 0,
            reordered: 0,
            log_corrupt: 0,
            gap_ranges: 0,
            peak_gap_ranges: 0,
            spsc_prev_last: None,
            noted: 0,
        }
    }

    /// Prints a violation (the first 50).
    fn note(&mut self, msg: String) {
        self.noted += 1;
        if self.noted <= 50 {
            eprintln!("shmchan soak: VIOLATION: {msg}");
        } else if self.noted == 51 {
            eprintln!("shmchan soak: (further violations are only counted)");
        }
    }

    /// One record of consumer `who`; `first`: its first one.
    fn record(&mut self, rec: u64, first: bool, who: usize) {
        self.records += 1;
        let (tag, seq) = ((rec >> SEQ_BITS) as usize, rec & SEQ_MASK);
        // SPSC: a redelivery is only possible as the first record of the consumer
        // after a killed one.
        let prev_last = if first {
            self.spsc_prev_last.take()
        } else {
            None
        };
        if tag == 0 || tag >= self.tags.len() {
            self.never_sent += 1;
            self.note(format!("consumer {who}: a message with unknown tag {tag}"));
            return;
        }
        let st = &mut self.tags[tag];
        if seq >= st.sent_hi {
            st.refresh();
        }
        if seq >= st.sent_hi {
            let sent_hi = st.sent_hi;
            self.never_sent += 1;
            self.note(format!(
                "consumer {who}: tag {tag} seq {seq} was never sent (sent below {sent_hi})"
            ));
            return;
        }
        if seq >= st.hi {
            if seq > st.hi {
                st.gaps.insert(st.hi, seq);
                self.gap_ranges += 1;
                self.peak_gap_ranges = self.peak_gap_ranges.max(self.gap_ranges);
            }
            st.hi = seq + 1;
            self.delivered += 1;
        } else if let Some(d) = st.fill(seq) {
            self.gap_ranges = self.gap_ranges.saturating_add_signed(d);
            self.delivered += 1;
            if self.spsc {
                self.reordered += 1;
                self.note(format!(
                    "consumer {who}: tag {tag} seq {seq} arrived after later ones (SPSC is FIFO)"
                ));
            }
        } else if self.spsc && prev_last == Some(rec) {
            self.redeliveries += 1;
        } else {
            self.duplicates += 1;
            self.note(format!(
                "consumer {who}: tag {tag} seq {seq} delivered again"
            ));
        }
    }

    /// Acknowledged messages so far (fresh from the running producers); broadcast:
    /// the position acknowledged.
    fn acked_now(&mut self) -> u64 {
        if self.bcast.is_some() {
            return self.bcast_published();
        }
        self.tags
            .iter_mut()
            .map(|t| {
                t.refresh();
                t.acked
            })
            .sum()
    }
}

/// A kill whose stall is being measured.
#[derive(Debug)]
struct Pending {
    at: Instant,
    target: u64,
    flagged: bool,
}

#[derive(Debug, Default)]
struct Stats {
    kills_p: u64,
    kills_c: u64,
    kills_unattached: u64,
    child_failures: u64,
    stop_failures: u64,
    torn_final: u64,
    torn_seen: u64,
    allowance: u64,
    pending: VecDeque<Pending>,
    stalls_us: Vec<u64>,
    stall_over: u64,
    attach_us: Vec<u64>,
    peak_disk: u64,
    peak_files: usize,
}

/// The parent's view of the experiment.
struct Soak {
    cfg: Config,
    name: String,
    dir: PathBuf,
    exe: PathBuf,
    ctl: Words,
    rng: Rng,
    producers: Vec<Live>,
    consumers: Vec<Live>,
    next_id: usize,
    last_spawned: Option<(bool, usize)>,
    /// Killed children not reaped yet.
    dying: Vec<Live>,
    ledger: Ledger,
    st: Stats,
}

impl Soak {
    fn spawn(&mut self, consumer: bool) -> Result<Live> {
        let id = self.next_id;
        self.next_id += 1;
        let threads = self.cfg.threads;
        let path = record_path(&self.dir, consumer, id);
        let len = if consumer {
            consumer_file_len(threads)
        } else {
            PAGE
        };
        create_file(&path, len)?;
        let words = Rc::new(Words::open(&path, len)?);
        let tag_base = if consumer {
            0
        } else {
            let base = self.ledger.tags.len();
            if base + threads > MAX_PRODUCER_TAGS {
                return Err("out of producer tags".into());
            }
            for t in 0..threads {
                self.ledger.tags.push(TagState {
                    src: Some(words.clone()),
                    thread: t,
                    ..TagState::default()
                });
            }
            base
        };
        let spec = ChildSpec {
            consumer,
            flavor: self.cfg.flavor,
            id,
            threads,
            tag_base: tag_base as u32,
            liveness: self.cfg.liveness,
            ppid: rustix::process::getpid().as_raw_pid(),
            nice: self.cfg.nice,
            inject: self.cfg.inject,
            name: self.name.clone(),
            dir: self.dir.clone(),
        };
        // Broadcast: what was published before the subscriber existed; it must start
        // at or after that.
        let floor = if consumer && self.ledger.bcast.is_some() {
            self.ledger.bcast_published()
        } else {
            0
        };
        let spawned_ns = mono_ns();
        let role = if consumer { "consumer" } else { "producer" };
        let child = Command::new(&self.exe)
            .arg0(format!("shmchan-soak-{role}"))
            .env(CHILD_ENV, role)
            .env(SPEC_ENV, spec.to_env())
            .env(NAME_ENV, &self.name)
            .env(DIR_ENV, &self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", self.exe.display()))?;
        Ok(Live {
            child,
            id,
            consumer,
            path,
            words,
            spawned_ns,
            attach_seen: false,
            tag_base,
            read: [0; MAX_THREADS],
            records: 0,
            last_rec: None,
            sub: bcast::SubBooks::new(floor),
        })
    }

    fn slot(&mut self, consumer: bool, i: usize) -> &mut Live {
        if consumer {
            &mut self.consumers[i]
        } else {
            &mut self.producers[i]
        }
    }

    /// Starts every child and waits until all have attached.
    fn start(&mut self) -> Result<()> {
        for _ in 0..self.cfg.consumers {
            let l = self.spawn(true)?;
            self.consumers.push(l);
        }
        for _ in 0..self.cfg.producers {
            let l = self.spawn(false)?;
            self.producers.push(l);
        }
        let deadline = Instant::now() + MUST_FINISH;
        while !self
            .producers
            .iter()
            .chain(self.consumers.iter())
            .all(Live::attached)
        {
            self.poll()?;
            if Instant::now() > deadline {
                return Err("the children did not attach in time".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Reaps killed children, drains the logs, notices children that exited on their
    /// own, resolves stalls.
    fn poll(&mut self) -> Result<()> {
        let threads = self.cfg.threads;
        self.reap_dying()?;
        // SPSC: a replacement consumer's first record may be the redelivery of the
        // killed one's last: read the killed one's log to its end first. (The
        // replacement cannot attach before the victim is dead, and a dead child is
        // reaped in the call above.)
        let hold = self.ledger.spsc && self.dying.iter().any(|d| d.consumer);
        if !hold {
            for c in &mut self.consumers {
                c.drain(threads, &mut self.ledger);
            }
        }
        for consumer in [false, true] {
            let n = if consumer {
                self.consumers.len()
            } else {
                self.producers.len()
            };
            for i in 0..n {
                let l = self.slot(consumer, i);
                if !l.attach_seen {
                    let at = l.words.w(H_ATTACHED).load(Ordering::SeqCst);
                    if at != 0 {
                        l.attach_seen = true;
                        let took = at.saturating_sub(l.spawned_ns) / 1000;
                        self.st.attach_us.push(took);
                    }
                }
                if let Some(status) = self.slot(consumer, i).child.try_wait()? {
                    self.failed(consumer, i, status)?;
                }
            }
        }
        let torn = self.torn();
        if torn > self.st.torn_seen {
            self.st.torn_seen = torn;
            self.ledger
                .note(format!("{torn} torn message(s) received so far"));
        }
        self.resolve_stalls(false);
        Ok(())
    }

    /// Ends the stall measurements whose kill was followed by enough progress (or
    /// all, at the end), and flags those over the limit.
    fn resolve_stalls(&mut self, all: bool) {
        let records = self.progress();
        let limit = self.cfg.stall_limit;
        let quota = self.cfg.progress_quota();
        let mut over = Vec::new();
        while let Some(p) = self.st.pending.front() {
            if records < p.target && !all {
                break;
            }
            let took = p.at.elapsed();
            self.st.stalls_us.push(took.as_micros() as u64);
            if !p.flagged && took > limit {
                over.push((took, (records + quota).saturating_sub(p.target)));
            }
            self.st.pending.pop_front();
        }
        for p in self.st.pending.iter_mut() {
            if !p.flagged && p.at.elapsed() > limit {
                p.flagged = true;
                over.push((p.at.elapsed(), (records + quota).saturating_sub(p.target)));
            }
        }
        for (took, got) in over {
            self.st.stall_over += 1;
            let msg = if got >= quota {
                format!(
                    "{quota} messages took {:.1} ms after a kill (limit {limit:?})",
                    took.as_secs_f64() * 1e3
                )
            } else {
                format!(
                    "only {got} of {quota} messages {:.1} ms after a kill (limit {limit:?}); channel: {}",
                    took.as_secs_f64() * 1e3,
                    describe(&self.name)
                )
            };
            self.ledger.note(msg);
        }
    }

    /// A child exited on its own: a failure. Replaces it.
    fn failed(&mut self, consumer: bool, i: usize, status: ExitStatus) -> Result<()> {
        let id = self.slot(consumer, i).id;
        self.st.child_failures += 1;
        self.ledger.note(format!(
            "{} {id} exited on its own ({status})",
            if consumer { "consumer" } else { "producer" }
        ));
        let fresh = self.spawn(consumer)?;
        let old = std::mem::replace(self.slot(consumer, i), fresh);
        self.finalize(old, true)
    }

    /// SIGKILLs a random child at once and starts its replacement; `chase`: kill
    /// the newest replacement. Returns whether to chase this one's replacement next.
    fn kill_one(&mut self, chase: bool) -> Result<bool> {
        // Mostly a uniformly random child; sometimes the newest replacement, which may
        // still be starting or attaching.
        let (consumer, i) = match self.last_spawned {
            Some(last) if chase || self.rng.below(100) < 15 => last,
            _ => {
                let n = (self.cfg.producers + self.cfg.consumers) as u64;
                let k = self.rng.below(n) as usize;
                if k < self.cfg.producers {
                    (false, k)
                } else {
                    (true, k - self.cfg.producers)
                }
            }
        };
        if let Some(status) = self.slot(consumer, i).child.try_wait()? {
            self.failed(consumer, i, status)?;
            return Ok(false);
        }
        let unattached = !self.slot(consumer, i).attached();
        let at = Instant::now();
        let records_at = self.stall_base();
        self.slot(consumer, i).child.kill()?;
        // The replacement starts while the victim may still be dying; the victim is
        // reaped (and its books closed) by `poll`.
        let fresh = self.spawn(consumer)?;
        let old = std::mem::replace(self.slot(consumer, i), fresh);
        self.dying.push(old);
        if consumer {
            self.st.kills_c += 1;
        } else {
            self.st.kills_p += 1;
        }
        if unattached {
            self.st.kills_unattached += 1;
        }
        self.last_spawned = Some((consumer, i));
        let target = records_at + self.cfg.progress_quota();
        self.st.pending.push_back(Pending {
            at,
            target,
            flagged: false,
        });
        // One kill in ten is followed within a few milliseconds by a kill of the
        // replacement: before it has started, while it attaches, or just after.
        Ok(!chase && self.rng.below(10) == 0)
    }

    /// Reaps the killed children that are dead now and closes their books.
    fn reap_dying(&mut self) -> Result<()> {
        let mut i = 0;
        while i < self.dying.len() {
            let Some(status) = self.dying[i].child.try_wait()? else {
                i += 1;
                continue;
            };
            let old = self.dying.swap_remove(i);
            if status.signal() != Some(9) {
                self.st.child_failures += 1;
                self.ledger.note(format!(
                    "{} {} exited on its own ({status}) before it was killed",
                    if old.consumer { "consumer" } else { "producer" },
                    old.id
                ));
            }
            self.finalize(old, true)?;
        }
        Ok(())
    }

    /// Takes the last books of a child that is dead and reaped, and removes its file.
    fn finalize(&mut self, mut old: Live, killed: bool) -> Result<()> {
        let threads = self.cfg.threads;
        if !old.attach_seen {
            let at = old.words.w(H_ATTACHED).load(Ordering::SeqCst);
            if at != 0 {
                self.st
                    .attach_us
                    .push(at.saturating_sub(old.spawned_ns) / 1000);
            }
        }
        if old.consumer {
            old.drain(threads, &mut self.ledger);
            if killed {
                // What it may have held between receiving and recording.
                self.st.allowance += (0..threads)
                    .map(|t| old.words.w(c_hand(t)).load(Ordering::SeqCst))
                    .fold(0u64, |a, h| a.saturating_add(h.min(RECV_BATCH as u64)));
                // SPSC: a borrowed message it recorded but may not have released is
                // the one the next consumer may get again.
                if self.ledger.spsc {
                    let held = old.words.w(c_hold(0)).load(Ordering::SeqCst);
                    if held != 0 && old.last_rec == Some(held) {
                        self.ledger.spsc_prev_last = Some(held);
                    }
                }
            }
            self.st.torn_final += old.words.w(H_TORN).load(Ordering::SeqCst);
            if self.ledger.bcast.is_some() {
                self.ledger.bcast_close(&mut old.sub, !killed, old.id);
            }
        } else {
            for t in 0..threads {
                let st = &mut self.ledger.tags[old.tag_base + t];
                st.refresh();
                st.src = None;
            }
        }
        let path = old.path.clone();
        drop(old);
        std::fs::remove_file(&path)?;
        Ok(())
    }

    /// How far delivery has come, for the stall measurement: records folded;
    /// broadcast: the position the slowest subscriber slot has reached.
    fn progress(&self) -> u64 {
        if self.ledger.bcast.is_some() {
            return self
                .consumers
                .iter()
                .map(|c| c.sub.progress())
                .min()
                .unwrap_or(0);
        }
        self.ledger.records
    }

    /// The progress a kill is measured from: records folded; broadcast: the position
    /// the publisher has acknowledged.
    fn stall_base(&mut self) -> u64 {
        if self.ledger.bcast.is_some() {
            return self.ledger.bcast_published();
        }
        self.ledger.records
    }

    fn torn(&self) -> u64 {
        self.st.torn_final
            + self
                .consumers
                .iter()
                .map(|c| c.words.w(H_TORN).load(Ordering::SeqCst))
                .sum::<u64>()
    }

    fn violations_so_far(&self) -> u64 {
        self.ledger.duplicates
            + self.ledger.never_sent
            + self.ledger.reordered
            + self.ledger.log_corrupt
            + self.torn()
            + self.st.child_failures
            + self.st.stop_failures
            + self.st.stall_over
            + self
                .ledger
                .bcast
                .as_ref()
                .map_or(0, bcast::Books::violations)
    }

    fn max_stall(&self) -> Duration {
        let resolved = self.st.stalls_us.iter().copied().max().unwrap_or(0);
        let open = self
            .st
            .pending
            .front()
            .map(|p| p.at.elapsed().as_micros() as u64)
            .unwrap_or(0);
        Duration::from_micros(resolved.max(open))
    }

    /// Bytes the live record files take on disk.
    fn sample_disk(&mut self) {
        let mut bytes = 0;
        let mut files = 0;
        if let Ok(rd) = std::fs::read_dir(&self.dir) {
            for e in rd.flatten() {
                if let Ok(m) = e.metadata() {
                    bytes += m.blocks() * 512;
                    files += 1;
                }
            }
        }
        self.st.peak_disk = self.st.peak_disk.max(bytes);
        self.st.peak_files = self.st.peak_files.max(files);
    }

    fn progress_line(&mut self, started: Instant) {
        let el = started.elapsed();
        let acked = self.ledger.acked_now();
        eprintln!(
            "soak [{:>5.0}s/{:.0}s] kills {} (p {} c {}) | delivered {} ({}/s) | acked {} | violations {} | max stall {:.1} ms",
            el.as_secs_f64(),
            self.cfg.duration.as_secs_f64(),
            self.st.kills_p + self.st.kills_c,
            self.st.kills_p,
            self.st.kills_c,
            human(self.ledger.delivered),
            human((self.ledger.delivered as f64 / el.as_secs_f64().max(1e-3)) as u64),
            human(acked),
            self.violations_so_far(),
            self.max_stall().as_secs_f64() * 1e3,
        );
    }

    /// Kills for the configured duration.
    fn kill_phase(&mut self) -> Result<Duration> {
        let started = Instant::now();
        let end = started + self.cfg.duration;
        let mut next_kill = started + self.kill_gap();
        let mut chase = false;
        let mut next_progress = self.cfg.progress.map(|p| started + p);
        let mut next_sample = started;
        loop {
            self.poll()?;
            let now = Instant::now();
            if now >= end {
                break;
            }
            if now >= next_kill {
                let chase_next = self.kill_one(chase)?;
                chase = chase_next;
                next_kill = Instant::now()
                    + if chase {
                        Duration::from_micros(self.rng.below(4000))
                    } else {
                        self.kill_gap()
                    };
            }
            if now >= next_sample {
                self.sample_disk();
                next_sample = now + Duration::from_secs(1);
            }
            if let (Some(at), Some(every)) = (next_progress, self.cfg.progress) {
                if now >= at {
                    self.progress_line(started);
                    next_progress = Some(at + every);
                }
            }
            std::thread::sleep(POLL);
        }
        // No more kills: let the last ones' stalls resolve (or exceed the limit).
        // `--stall-limit-ms` is the user's: a huge one must not overflow the clock.
        let settle =
            Instant::now().checked_add(self.cfg.stall_limit.saturating_add(Duration::from_secs(1)));
        while !self.st.pending.is_empty() && settle.is_none_or(|t| Instant::now() < t) {
            self.poll()?;
            std::thread::sleep(POLL);
        }
        self.resolve_stalls(true);
        self.sample_disk();
        Ok(started.elapsed())
    }

    fn kill_gap(&mut self) -> Duration {
        Duration::from_millis(self.rng.between(self.cfg.kill.lo, self.cfg.kill.hi))
    }

    /// The end: producers leave, then (once the parent's own sender is gone) the
    /// consumers drain the ring and leave.
    fn stop(&mut self, holder: Option<mpmc::Sender<Msg>>) -> Result<()> {
        let deadline = Instant::now() + MUST_FINISH;
        while !self.dying.is_empty() {
            self.poll()?;
            if Instant::now() > deadline {
                return Err("killed children did not die".into());
            }
            std::thread::sleep(POLL);
        }
        self.ctl.w(CTL_PHASE).store(PHASE_STOP, Ordering::SeqCst);
        let producers = std::mem::take(&mut self.producers);
        self.wait_exit(producers)?;
        self.ctl.w(CTL_PHASE).store(PHASE_DRAIN, Ordering::SeqCst);
        drop(holder);
        let consumers = std::mem::take(&mut self.consumers);
        self.wait_exit(consumers)
    }

    /// Waits until every child in `left` has left cleanly (draining the consumers).
    fn wait_exit(&mut self, mut left: Vec<Live>) -> Result<()> {
        let deadline = Instant::now() + MUST_FINISH;
        let threads = self.cfg.threads;
        while !left.is_empty() {
            for l in self.consumers.iter_mut().chain(left.iter_mut()) {
                if l.consumer {
                    l.drain(threads, &mut self.ledger);
                }
            }
            let mut i = 0;
            while i < left.len() {
                let late = Instant::now() > deadline;
                let status = match left[i].child.try_wait()? {
                    Some(s) => Some(s),
                    None if late => {
                        let _ = left[i].child.kill();
                        Some(left[i].child.wait()?)
                    }
                    None => None,
                };
                let Some(status) = status else {
                    i += 1;
                    continue;
                };
                let l = left.swap_remove(i);
                let clean = status.success() && l.words.w(H_DONE).load(Ordering::SeqCst) == 1;
                if !clean {
                    self.st.stop_failures += 1;
                    self.ledger.note(format!(
                        "{} {} did not leave cleanly at the end ({status}{})",
                        if l.consumer { "consumer" } else { "producer" },
                        l.id,
                        if late { ", killed after 30 s" } else { "" }
                    ));
                }
                self.finalize(l, !clean)?;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

/// The channel's state, for violation messages.
fn describe(name: &str) -> String {
    match shmchan::inspect(name) {
        Ok(i) => format!(
            "head {} tail {} len {} sleeping r/s {}/{} peers {:?}{}",
            i.head,
            i.tail,
            i.len(),
            i.sleeping_receivers,
            i.sleeping_senders,
            i.peers,
            if i.subscribers.is_empty() {
                String::new()
            } else {
                format!(" subscribers {:?}", i.subscribers)
            }
        ),
        Err(e) => format!("inspect: {e}"),
    }
}

fn human(n: u64) -> String {
    match n {
        n if n >= 10_000_000_000 => format!("{:.0}G", n as f64 / 1e9),
        n if n >= 1_000_000_000 => format!("{:.2}G", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.2}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{:.0}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

fn percentile_ms(sorted_us: &[u64], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    sorted_us[((sorted_us.len() - 1) as f64 * p).round() as usize] as f64 / 1e3
}

/// Peak resident set of this process, from /proc.
fn peak_rss_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Objects in /dev/shm whose names start with `prefix`.
fn shm_objects(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Path to re-execute: this very binary, even if the file was replaced meanwhile.
fn self_exe() -> Result<PathBuf> {
    let p = PathBuf::from("/proc/self/exe");
    if p.exists() {
        Ok(p)
    } else {
        Ok(std::env::current_exe()?)
    }
}

fn spawn_watchdog(exe: &Path, name: &str, dir: &Path) -> Result<(Child, ChildStdin)> {
    let mut child = Command::new(exe)
        .arg0("shmchan-soak-watchdog")
        .env(CHILD_ENV, "watchdog")
        .env(NAME_ENV, name)
        .env(DIR_ENV, dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        // Its own process group: Ctrl-C in the terminal does not reach it.
        .process_group(0)
        .spawn()?;
    let stdin = child.stdin.take().ok_or("watchdog stdin")?;
    Ok((child, stdin))
}

/// `shmchan soak`.
pub fn run(args: &SoakArgs) -> Result<()> {
    let cfg = Config::from_args(args)?;
    let mut rng = Rng::new(cfg.seed);
    let prefix = format!("shmchan-soak-{}-", std::process::id());
    let name = format!("{prefix}{:08x}", rng.next_u64() as u32);
    let dir = std::env::temp_dir().join(&name);
    std::fs::create_dir(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let exe = self_exe()?;
    let mut cleanup = Cleanup {
        name: name.clone(),
        dir: dir.clone(),
        watchdog: None,
        done: false,
    };
    cleanup.watchdog = Some(spawn_watchdog(&exe, &name, &dir)?);
    create_file(&dir.join("ctl"), PAGE)?;
    let ctl = Words::open(&dir.join("ctl"), PAGE)?;

    // The parent creates the channel; the name stays (keep) until the clean-up. An
    // MPMC parent stays attached as a sender that never sends, so that the consumers
    // see Disconnected only at the end.
    let opts = Options::new()
        .capacity(cfg.capacity)
        .mode(CreateMode::CreateExclusive)
        .keep(true)
        .liveness_interval(cfg.liveness);
    let holder = match cfg.flavor {
        Flavor::Mpmc => {
            let peers = (2 * (cfg.producers + cfg.consumers) + 4).min(192) as u32;
            Some(mpmc::Sender::<Msg>::with_options(
                &name,
                &opts.max_peers(peers),
            )?)
        }
        Flavor::Spsc => {
            drop(shmchan::Sender::<Msg>::with_options(&name, &opts)?);
            None
        }
        Flavor::Broadcast => {
            // Room for the subscribers and for victims whose entries are not taken
            // over yet.
            let subs = (2 * cfg.consumers + 4).min(191) as u32;
            let opts = opts
                .subscribers(subs)
                .policy(cfg.policy.unwrap_or_default());
            drop(broadcast::Publisher::<Msg>::with_options(&name, &opts)?);
            None
        }
    };

    let mut soak = Soak {
        rng,
        name: name.clone(),
        dir: dir.clone(),
        exe,
        ctl,
        producers: Vec::new(),
        consumers: Vec::new(),
        next_id: 0,
        last_spawned: None,
        dying: Vec::new(),
        ledger: Ledger::new(cfg.flavor, cfg.policy),
        st: Stats::default(),
        cfg: cfg.clone(),
    };
    let t0 = Instant::now();
    if !cfg.json {
        eprintln!(
            "soak: {} channel {name}, {} producer(s) x {} consumer(s) x {} thread(s), capacity {}, \
             kills every {}..{} ms for {:?}, liveness {:?}, stall limit {:?}, seed {:#x}",
            cfg.label(),
            cfg.producers,
            cfg.consumers,
            cfg.threads,
            cfg.capacity,
            cfg.kill.lo,
            cfg.kill.hi,
            cfg.duration,
            cfg.liveness,
            cfg.stall_limit,
            cfg.seed
        );
    }
    soak.start()?;
    let killing = soak.kill_phase()?;
    soak.stop(holder)?;
    let total = t0.elapsed();
    if soak.ledger.bcast.is_some() {
        soak.ledger.bcast_finish();
    }

    let mut sum = Summary::new(&soak, killing, total);
    drop(soak);
    cleanup.run();
    sum.leftover = shm_objects(&prefix);
    sum.dir_left = dir.exists();
    if sum.lost > sum.allowance {
        eprintln!(
            "shmchan soak: VIOLATION: {} acknowledged messages lost, allowance {} (first (tag, seq): {:?})",
            sum.lost, sum.allowance, sum.lost_examples
        );
    }
    if cfg.json {
        println!("{}", serde_json::to_string_pretty(&sum.json())?);
    } else {
        print!("{}", sum.text());
    }
    match sum.violations() {
        0 => Ok(()),
        n => Err(format!("soak failed: {n} violation(s)").into()),
    }
}

/// The final report.
#[derive(Debug)]
struct Summary {
    cfg: Config,
    killing: Duration,
    total: Duration,
    kills_p: u64,
    kills_c: u64,
    kills_unattached: u64,
    acked: u64,
    delivered: u64,
    delivered_unacked: u64,
    duplicates: u64,
    redeliveries: u64,
    lost: u64,
    allowance: u64,
    lost_examples: Vec<(usize, u64)>,
    torn: u64,
    never_sent: u64,
    reordered: u64,
    log_corrupt: u64,
    child_failures: u64,
    stop_failures: u64,
    stalls_us: Vec<u64>,
    stall_over: u64,
    attach_us: Vec<u64>,
    leftover: Vec<String>,
    dir_left: bool,
    tags: usize,
    table_bytes: u64,
    peak_gap_ranges: usize,
    peak_rss: u64,
    peak_files: usize,
    peak_disk: u64,
    /// Broadcast: its own figures and verdicts.
    bcast: Option<bcast::Report>,
}

impl Summary {
    fn new(soak: &Soak, killing: Duration, total: Duration) -> Summary {
        let led = &soak.ledger;
        let (mut lost, mut acked) = (0u64, 0u64);
        let mut lost_examples = Vec::new();
        let bcast = led.bcast.as_ref().map(|b| led.bcast_report(b));
        // Broadcast: messages are not lost or acknowledged per tag (see `bcast`).
        let per_tag = if bcast.is_some() { 0 } else { led.tags.len() };
        for (tag, st) in led.tags.iter().enumerate().take(per_tag).skip(1) {
            acked += st.acked;
            let (n, first) = st.lost();
            lost += n;
            if let Some(seq) = first {
                if lost_examples.len() < 10 {
                    lost_examples.push((tag, seq));
                }
            }
        }
        if let Some(r) = &bcast {
            acked = r.acknowledged();
        }
        let mut stalls_us = soak.st.stalls_us.clone();
        stalls_us.sort_unstable();
        let mut attach_us = soak.st.attach_us.clone();
        attach_us.sort_unstable();
        Summary {
            cfg: soak.cfg.clone(),
            killing,
            total,
            kills_p: soak.st.kills_p,
            kills_c: soak.st.kills_c,
            kills_unattached: soak.st.kills_unattached,
            acked,
            delivered: led.delivered,
            delivered_unacked: led.delivered.saturating_sub(acked.saturating_sub(lost)),
            duplicates: led.duplicates,
            redeliveries: led.redeliveries,
            lost,
            allowance: soak.st.allowance,
            lost_examples,
            torn: soak.torn(),
            never_sent: led.never_sent,
            reordered: led.reordered,
            log_corrupt: led.log_corrupt,
            child_failures: soak.st.child_failures,
            stop_failures: soak.st.stop_failures,
            stalls_us,
            stall_over: soak.st.stall_over,
            attach_us,
            leftover: Vec::new(),
            dir_left: false,
            tags: led.tags.len() - 1,
            table_bytes: (led.tags.capacity() * std::mem::size_of::<TagState>()) as u64,
            peak_gap_ranges: led.peak_gap_ranges,
            peak_rss: peak_rss_bytes(),
            peak_files: soak.st.peak_files,
            peak_disk: soak.st.peak_disk,
            bcast,
        }
    }

    fn violations(&self) -> u64 {
        self.duplicates
            + self.never_sent
            + self.reordered
            + self.log_corrupt
            + self.torn
            + self.child_failures
            + self.stop_failures
            + self.stall_over
            + self.lost.saturating_sub(self.allowance)
            + self.leftover.len() as u64
            + u64::from(self.dir_left)
            + self.bcast.as_ref().map_or(0, bcast::Report::violations)
    }

    fn stall_ms(&self, p: f64) -> f64 {
        percentile_ms(&self.stalls_us, p)
    }

    fn json(&self) -> serde_json::Value {
        let c = &self.cfg;
        let mut v = json!({
            "flavor": c.flavor.name(),
            "producers": c.producers,
            "consumers": c.consumers,
            "threads": c.threads,
            "capacity": c.capacity,
            "liveness_ms": c.liveness.as_secs_f64() * 1e3,
            "kill_every_ms": [c.kill.lo, c.kill.hi],
            "seed": c.seed,
            "duration_s": self.killing.as_secs_f64(),
            "total_s": self.total.as_secs_f64(),
            "kills": {
                "total": self.kills_p + self.kills_c,
                "producers": self.kills_p,
                "consumers": self.kills_c,
                "before_attach": self.kills_unattached,
            },
            "messages": {
                "acknowledged": self.acked,
                "delivered": self.delivered,
                "delivered_unacknowledged": self.delivered_unacked,
                "delivered_per_s": self.delivered as f64 / self.total.as_secs_f64().max(1e-3),
            },
            "duplicates": self.duplicates,
            "spsc_redeliveries": self.redeliveries,
            "lost": self.lost,
            "lost_allowance": self.allowance,
            "lost_examples": self.lost_examples,
            "torn": self.torn,
            "never_sent": self.never_sent,
            "reordered": self.reordered,
            "log_corrupt": self.log_corrupt,
            "child_failures": self.child_failures,
            "stop_failures": self.stop_failures,
            "stall_ms": {
                "max": self.stall_ms(1.0),
                "p99": self.stall_ms(0.99),
                "p50": self.stall_ms(0.5),
                "measured": self.stalls_us.len(),
                "limit": c.stall_limit.as_secs_f64() * 1e3,
                "over_limit": self.stall_over,
            },
            "attach_ms": {
                "median": percentile_ms(&self.attach_us, 0.5),
                "max": percentile_ms(&self.attach_us, 1.0),
            },
            "leftover_shm": self.leftover,
            "leftover_record_dir": self.dir_left,
            "bookkeeping": {
                "producer_tags": self.tags,
                "tag_table_bytes": self.table_bytes,
                "peak_gap_ranges": self.peak_gap_ranges,
                "parent_peak_rss_bytes": self.peak_rss,
                "peak_record_files": self.peak_files,
                "consumer_record_file_bytes": consumer_file_len(c.threads),
                "producer_record_file_bytes": PAGE,
                "peak_record_disk_bytes": self.peak_disk,
            },
            "violations": self.violations(),
            "ok": self.violations() == 0,
        });
        if let Some(r) = &self.bcast {
            r.patch_json(&mut v);
        }
        v
    }

    fn text(&self) -> String {
        let c = &self.cfg;
        let middle = match &self.bcast {
            Some(r) => r.text(self),
            None => format!(
                "  messages         {acked} acknowledged, {deliv} delivered ({rate}/s), {unacked} of them unacknowledged (sent by a producer killed before it recorded Ok)
  duplicates       {dup}{redeliv}
  lost             {lost} acknowledged, allowance {allow} (held in hand by killed consumers)
  torn             {torn}
  never sent       {never}
  reordered        {reord}{reord_note}
",
                acked = self.acked,
                deliv = self.delivered,
                rate = self.rate(),
                unacked = self.delivered_unacked,
                dup = self.duplicates,
                redeliv = if c.flavor == Flavor::Spsc {
                    format!(" (plus {} allowed SPSC redeliveries)", self.redeliveries)
                } else {
                    String::new()
                },
                lost = self.lost,
                allow = self.allowance,
                torn = self.torn,
                never = self.never_sent,
                reord = self.reordered,
                reord_note = if c.flavor == Flavor::Spsc {
                    ""
                } else {
                    " (checked for SPSC only)"
                },
            ),
        };
        format!("{}{middle}{}", self.text_head(), self.text_tail())
    }

    /// Delivered messages per second, for the text summary.
    fn rate(&self) -> String {
        human((self.delivered as f64 / self.total.as_secs_f64().max(1e-3)) as u64)
    }

    /// The summary's first lines: the run, its duration and its kills.
    fn text_head(&self) -> String {
        let c = &self.cfg;
        format!(
            "shmchan soak: {flavor}, {p} producer(s) x {cn} consumer(s) x {th} thread(s), capacity {cap}, seed {seed:#x}
  duration         {kill:.1} s of kills, {total:.1} s in all
  kills            {kills} (producers {kp}, consumers {kc}; {ku} before the victim had attached)
",
            flavor = c.label(),
            p = c.producers,
            cn = c.consumers,
            th = c.threads,
            cap = c.capacity,
            seed = c.seed,
            kill = self.killing.as_secs_f64(),
            total = self.total.as_secs_f64(),
            kills = self.kills_p + self.kills_c,
            kp = self.kills_p,
            kc = self.kills_c,
            ku = self.kills_unattached,
        )
    }

    /// The summary's last lines, the same for every flavor.
    fn text_tail(&self) -> String {
        let c = &self.cfg;
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let v = self.violations();
        format!(
            "  child failures   {cf} during the run, {sf} at the end
  stall            max {smax:.1} ms, p99 {s99:.1} ms, p50 {s50:.1} ms over {sn} kills (limit {slim} ms, {sover} over)
  attach           median {am:.1} ms, max {ax:.1} ms from spawn
  /dev/shm         {left} object(s) of this run left{left_names}
  bookkeeping      parent: {tags} producer tags x {tsz} B = {tmib:.2} MiB, peak {gaps} gap ranges, peak RSS {rss:.1} MiB;
                   disk: at most {files} record files live ({cfile:.2} MiB per consumer, 4 KiB per producer), peak {disk:.2} MiB allocated
  result           {result}
",
            cf = self.child_failures,
            sf = self.stop_failures,
            smax = self.stall_ms(1.0),
            s99 = self.stall_ms(0.99),
            s50 = self.stall_ms(0.5),
            sn = self.stalls_us.len(),
            slim = c.stall_limit.as_millis(),
            sover = self.stall_over,
            am = percentile_ms(&self.attach_us, 0.5),
            ax = percentile_ms(&self.attach_us, 1.0),
            left = self.leftover.len() + usize::from(self.dir_left),
            left_names = if self.leftover.is_empty() && !self.dir_left {
                String::new()
            } else {
                format!(": {:?}", self.leftover)
            },
            tags = self.tags,
            tsz = std::mem::size_of::<TagState>(),
            tmib = mib(self.table_bytes),
            gaps = self.peak_gap_ranges,
            rss = mib(self.peak_rss),
            files = self.peak_files,
            cfile = mib(consumer_file_len(c.threads)),
            disk = mib(self.peak_disk),
            result = if v == 0 {
                "OK (0 violations)".to_string()
            } else {
                format!("FAILED ({v} violations)")
            },
        )
    }
}
