//! Cross-process round-trip baselines and the "floor probe".
//!
//! The machine this crate is benchmarked on migrates its vCPUs, so the cost of
//! moving one cache line between cores jumps between roughly 50, 120 and
//! 450 ns within seconds, and a blocking cross-core wake costs ~30 µs.
//! Absolute numbers are therefore meaningless on their own: every benchmark
//! is reported as a ratio to a [`floor_probe`] measured in the same run, and
//! the classic IPC mechanisms ([`pipe_rtt`], [`unix_socket_rtt`],
//! [`futex_rtt`]) are measured the same way for comparison.
//!
//! # How the second process is made
//!
//! No `fork()`: the current executable is re-executed
//! ([`std::env::current_exe`]) with the environment variable
//! `SHMCHAN_BASELINE_CHILD=<role>:<parent pid>:<cpu or ->:<arg>` set. The
//! binary's `main()` must call [`maybe_run_child`] first thing; in a child it
//! runs the requested role and exits. Pipe and socket ends are handed over as
//! the child's stdin/stdout (the std `Command` machinery `dup2`s them, which
//! clears `CLOEXEC`); shared-memory probes pass the POSIX shm object name in
//! the variable instead.
//!
//! # Never leaving anything behind
//!
//! * The shm object is unlinked as soon as the child reports that it has
//!   mapped it, and by a drop guard on every other path (errors, panics).
//! * The child sets `PR_SET_PDEATHSIG(SIGKILL)`, spinning waits also check
//!   every ~1M spins that the parent is still the same process (`getppid`),
//!   and every wait gives up after a few seconds without progress. Stream
//!   children exit on EOF.
//! * The parent always reaps the child: normally after telling it to stop,
//!   on error paths by killing and then waiting for it (drop guard).
//! * The parent's CPU affinity is restored before returning.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};
use rustix::io::Errno;
use rustix::thread::{CpuSet, futex};

/// Environment variable that marks a process as a baseline child.
const CHILD_ENV: &str = "SHMCHAN_BASELINE_CHILD";
/// Untimed round trips before measurement starts.
const WARMUP_ITERS: usize = 1000;
/// Extra untimed round trips of the floor probe (settling, see `floor_probe`).
pub(crate) const FLOOR_WARMUP_ITERS: usize = 19_000;
/// Greeting a stream child writes first, so the parent can tell a real
/// baseline child from a binary that never called [`maybe_run_child`].
const HELLO: &[u8; 8] = b"SHMCBL01";
/// How long the child may take to start up and report ready.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a wait may go without progress before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the parent waits for the child to exit after telling it to stop.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Spinning waits run their liveness/stall checks every `CHECK_MASK + 1` spins.
const CHECK_MASK: u64 = (1 << 20) - 1;
/// Spinning waits yield every `YIELD_MASK_PINNED + 1` spins when both sides
/// run on distinct pinned CPUs (only reached when the host stalls a vCPU)...
const YIELD_MASK_PINNED: u64 = (1 << 16) - 1;
/// ...and every `YIELD_MASK_SHARED + 1` spins when they may share one CPU.
const YIELD_MASK_SHARED: u64 = (1 << 6) - 1;
/// Timeout of one futex wait; on expiry the waiter checks liveness.
const FUTEX_POLL_TIMEOUT: rustix::time::Timespec = rustix::time::Timespec {
    tv_sec: 0,
    tv_nsec: 100_000_000,
};
/// Consecutive futex timeouts that count as "no progress" (5 s).
const FUTEX_STALL_POLLS: u32 = 50;
/// Value of the floor probe's ping word that tells the child to exit.
const STOP64: u64 = u64::MAX;
/// Value of the futex probe's ping word that tells the child to exit.
const STOP32: u32 = u32::MAX;

// ---------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------

/// Pins the calling thread to CPU `cpu` (`sched_setaffinity` of the calling
/// thread only).
///
/// Does nothing and returns `Ok(())` if `cpu` is not below the number of CPUs
/// of the machine (highest online CPU id + 1), so callers may ask for CPU 1
/// unconditionally.
pub(crate) fn pin_to_cpu(cpu: usize) -> io::Result<()> {
    if cpu >= CpuSet::MAX_CPU || cpu >= cpu_limit() {
        return Ok(());
    }
    let mut set = CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set)?;
    Ok(())
}

/// Result of one round-trip measurement.
#[derive(Debug, Clone, Default)]
pub(crate) struct RttSamples {
    /// Per-iteration round-trip times in nanoseconds, in measurement order
    /// (warm-up iterations excluded).
    pub(crate) ns: Vec<u64>,
}

impl RttSamples {
    /// The `p`-th percentile (nearest-rank, `p` in percent, clamped to
    /// `0.0..=100.0`) of the round-trip times in ns; 0 if there are no
    /// samples.
    pub(crate) fn percentile(&self, p: f64) -> u64 {
        let n = self.ns.len();
        if n == 0 {
            return 0;
        }
        let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 100.0) };
        // Nearest rank: the smallest sample with at least p% of the samples
        // at or below it. The float-to-int cast saturates.
        let rank = (p / 100.0 * n as f64).ceil() as usize;
        let idx = rank.saturating_sub(1).min(n - 1);
        let mut scratch = self.ns.clone();
        *scratch.select_nth_unstable(idx).1
    }

    /// The median round-trip time in ns (50th percentile).
    pub(crate) fn median(&self) -> u64 {
        self.percentile(50.0)
    }
}

/// The floor probe: the cheapest possible cross-process round trip.
///
/// Two processes on different cores (parent on the first, child on the second
/// CPU it may use) ping-pong a counter: the parent stores `i` into its
/// `AtomicU64`, the child spins until it sees `i` and stores it into its own
/// `AtomicU64`, the parent spins until it sees `i` back. Each word sits on its
/// own 128-byte-aligned line of a fresh POSIX shm object
/// (`/shmchan-floor-<pid>-<n>`, unlinked as soon as both sides mapped it).
/// Returns `iters` timed round trips after [`WARMUP_ITERS`] untimed ones.
pub(crate) fn floor_probe(iters: usize) -> io::Result<RttSamples> {
    refuse_nested()?;
    let plan = CpuPlan::choose();
    let (mut name, map) = ShmMap::create("floor")?;
    let shm = map.get();
    let mut child = spawn_child(
        &plan.child_spec("floor", &name.name),
        Stdio::null(),
        Stdio::null(),
    )?;
    let _affinity = AffinityGuard::pin(plan.parent)?;
    wait_ready(shm, &mut child)?;
    // Both sides have it mapped now: the name is no longer needed.
    name.unlink()?;

    let yield_mask = plan.yield_mask();
    let mut samples = sample_buffer(iters);
    let mut seq = 0u64;
    // A fresh pair of processes takes a few milliseconds to settle: untimed round trips
    // first, as many as a shmchan round-trip measurement does (bench.rs).
    for i in 0..FLOOR_WARMUP_ITERS + WARMUP_ITERS + iters {
        seq += 1;
        let t0 = Instant::now();
        // Release/Acquire: makes the handoff a happens-before edge like a real
        // channel's (both are plain MOVs on x86, so the floor is not inflated).
        shm.ping.0.store(seq, Ordering::Release);
        spin_until(
            || shm.pong.0.load(Ordering::Acquire) == seq,
            yield_mask,
            || child.check_alive(),
        )?;
        record(&mut samples, i, t0);
    }
    // Release: orders the stop after all earlier pings (not strictly needed).
    shm.ping.0.store(STOP64, Ordering::Release);
    child.finish()?;
    Ok(RttSamples { ns: samples })
}

/// Pipe ping-pong of `msg_size` bytes (`msg_size >= 1`): the parent writes the
/// message into one pipe, the child reads it completely from its stdin and
/// echoes it to its stdout (a second pipe), and the parent reads it back.
pub(crate) fn pipe_rtt(iters: usize, msg_size: usize) -> io::Result<RttSamples> {
    refuse_nested()?;
    check_msg_size(msg_size)?;
    let plan = CpuPlan::choose();
    let flags = rustix::pipe::PipeFlags::CLOEXEC;
    let (child_in, to_child) = rustix::pipe::pipe_with(flags)?;
    let (from_child, child_out) = rustix::pipe::pipe_with(flags)?;
    // `spawn_child` drops the `Command`, and with it the parent's copies of
    // the child's ends, so EOF propagates in both directions.
    let mut child = spawn_child(
        &plan.child_spec("pipe", &msg_size.to_string()),
        Stdio::from(child_in),
        Stdio::from(child_out),
    )?;
    let _affinity = AffinityGuard::pin(plan.parent)?;
    let to_child = File::from(to_child);
    let from_child = File::from(from_child);
    let samples = stream_ping_pong(&to_child, &from_child, iters, msg_size, &mut child)?;
    // Closing our write end is the child's signal to exit (EOF).
    drop(to_child);
    drop(from_child);
    child.finish()?;
    Ok(samples)
}

/// Unix stream socket ping-pong of `msg_size` bytes (`msg_size >= 1`) over a
/// `socketpair(AF_UNIX, SOCK_STREAM)`; the child gets its end as both stdin
/// and stdout and echoes every message.
pub(crate) fn unix_socket_rtt(iters: usize, msg_size: usize) -> io::Result<RttSamples> {
    refuse_nested()?;
    check_msg_size(msg_size)?;
    let plan = CpuPlan::choose();
    // `UnixStream::pair` is `socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`.
    let (ours, theirs) = UnixStream::pair()?;
    let theirs_out = theirs.try_clone()?;
    let mut child = spawn_child(
        &plan.child_spec("sock", &msg_size.to_string()),
        Stdio::from(OwnedFd::from(theirs)),
        Stdio::from(OwnedFd::from(theirs_out)),
    )?;
    let _affinity = AffinityGuard::pin(plan.parent)?;
    let samples = stream_ping_pong(&ours, &ours, iters, msg_size, &mut child)?;
    // Closing our end is the child's signal to exit (EOF).
    drop(ours);
    child.finish()?;
    Ok(samples)
}

/// Blocking futex handoff ping-pong, the "raw futex handoff" baseline for idle
/// wake-up.
///
/// Two futex words on their own 128-byte lines of a fresh POSIX shm object
/// (`/shmchan-futex-<pid>-<n>`). The parent bumps its word and `FUTEX_WAKE`s
/// it, then `FUTEX_WAIT`s on the child's word until the child bumps it; the
/// child does the mirror image. Shared futexes (no `FUTEX_PRIVATE_FLAG`), as
/// required across processes. Nobody spins: every handoff is a full
/// sleep/wake.
pub(crate) fn futex_rtt(iters: usize) -> io::Result<RttSamples> {
    refuse_nested()?;
    let plan = CpuPlan::choose();
    let (mut name, map) = ShmMap::create("futex")?;
    let shm = map.get();
    let mut child = spawn_child(
        &plan.child_spec("futex", &name.name),
        Stdio::null(),
        Stdio::null(),
    )?;
    let _affinity = AffinityGuard::pin(plan.parent)?;
    wait_ready(shm, &mut child)?;
    // Both sides have it mapped now: the name is no longer needed.
    name.unlink()?;

    let mut samples = sample_buffer(iters);
    let mut seq = 0u32;
    for i in 0..WARMUP_ITERS + iters {
        let prev = seq;
        seq = next_seq32(seq);
        let t0 = Instant::now();
        // Release/Acquire: makes the handoff a happens-before edge like a real
        // channel's (free on x86; the futex syscalls dominate anyway).
        shm.fping.0.store(seq, Ordering::Release);
        futex::wake(&shm.fping.0, futex::Flags::empty(), 1)?;
        let got = futex_wait_change(&shm.fpong.0, prev, || child.check_alive())?;
        if got != seq {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("futex baseline: child answered {got}, expected {seq}"),
            ));
        }
        record(&mut samples, i, t0);
    }
    shm.fping.0.store(STOP32, Ordering::Release);
    futex::wake(&shm.fping.0, futex::Flags::empty(), 1)?;
    child.finish()?;
    Ok(RttSamples { ns: samples })
}

/// Raw futex wake-up after idleness: the same child as [`futex_rtt`] sleeps in
/// `futex_wait`; every `gap` the parent stores a new value, calls `futex_wake`, and
/// polls for the answer. This is the shape of shmchan's idle wake-up measurement
/// (one sleeping side woken, the other polling), with nothing but the futex in it.
/// (The child's own `futex_wake` of the answer finds no sleeper: a few hundred ns.)
pub(crate) fn futex_idle(gap: Duration, count: usize) -> io::Result<RttSamples> {
    refuse_nested()?;
    let plan = CpuPlan::choose();
    let (mut name, map) = ShmMap::create("futexidle")?;
    let shm = map.get();
    let mut child = spawn_child(
        &plan.child_spec("futex", &name.name),
        Stdio::null(),
        Stdio::null(),
    )?;
    let _affinity = AffinityGuard::pin(plan.parent)?;
    wait_ready(shm, &mut child)?;
    name.unlink()?;
    let yield_mask = plan.yield_mask();
    let mut samples = Vec::with_capacity(count);
    let mut seq = 0u32;
    for _ in 0..count {
        std::thread::sleep(gap);
        seq = next_seq32(seq);
        let t0 = Instant::now();
        // Release: pairs with the child's Acquire load after its wait.
        shm.fping.0.store(seq, Ordering::Release);
        futex::wake(&shm.fping.0, futex::Flags::empty(), 1)?;
        spin_until(
            || shm.fpong.0.load(Ordering::Acquire) == seq,
            yield_mask,
            || child.check_alive(),
        )?;
        samples.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
    }
    shm.fping.0.store(STOP32, Ordering::Release);
    futex::wake(&shm.fping.0, futex::Flags::empty(), 1)?;
    child.finish()?;
    Ok(RttSamples { ns: samples })
}

/// Hidden child entry point; the CLI's `main()` must call this first thing.
///
/// If this process was started by one of the baselines above (environment
/// variable `SHMCHAN_BASELINE_CHILD` set), runs the requested child role and
/// exits the process (status 0 on success, 1 on error, 2 on a malformed
/// request) without ever returning. Returns only when this is not a child
/// invocation. A child never writes to stdout except for the echoed data.
pub(crate) fn maybe_run_child() {
    let Some(raw) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let code = match ChildRequest::parse(&raw) {
        Err(msg) => {
            eprintln!("shmchan: malformed {CHILD_ENV}={raw:?}: {msg}");
            2
        }
        Ok(req) => match req.run() {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("shmchan baseline child ({}): {e}", req.role.name());
                1
            }
        },
    };
    std::process::exit(code);
}

// ---------------------------------------------------------------------------
// Shared memory layout and mapping
// ---------------------------------------------------------------------------

/// One value alone on a 128-byte line (two 64-byte lines, so the adjacent-line
/// prefetcher does not couple neighbours either).
#[repr(C, align(128))]
struct Line<T>(T);

/// Layout of the shm object used by the floor and futex probes. Only atomics,
/// so every bit pattern (in particular the all-zero fresh object) is valid.
#[repr(C)]
struct ProbeShm {
    /// Floor probe: parent → child counter.
    ping: Line<AtomicU64>,
    /// Floor probe: child → parent counter.
    pong: Line<AtomicU64>,
    /// Futex probe: parent → child futex word.
    fping: Line<AtomicU32>,
    /// Futex probe: child → parent futex word.
    fpong: Line<AtomicU32>,
    /// Set to 1 by the child once it has mapped the object and pinned itself.
    ready: Line<AtomicU32>,
}

/// Size of the shm object.
const SHM_LEN: usize = size_of::<ProbeShm>();
const _: () = assert!(align_of::<ProbeShm>() == 128 && SHM_LEN == 5 * 128);

/// Guard for a POSIX shm name: unlinks it on drop unless already unlinked.
struct ShmName {
    /// The name, e.g. `/shmchan-floor-1234-0`.
    name: String,
    /// Whether the name still exists and is ours to unlink.
    linked: bool,
}

impl ShmName {
    /// Unlinks the name now (the object lives on while mapped).
    fn unlink(&mut self) -> io::Result<()> {
        if self.linked {
            self.linked = false;
            rustix::shm::unlink(self.name.as_str())?;
        }
        Ok(())
    }
}

impl Drop for ShmName {
    fn drop(&mut self) {
        if self.linked {
            // Best effort: nothing sensible to do on failure in a destructor.
            let _ = rustix::shm::unlink(self.name.as_str());
        }
    }
}

/// A shared mapping of a [`ProbeShm`] object.
struct ShmMap {
    /// Raw mapping: never handed out as a byte slice, since the peer process
    /// modifies it concurrently.
    map: MmapRaw,
}

impl ShmMap {
    /// Creates a fresh, zero-filled shm object under a unique name
    /// `/shmchan-<kind>-<pid>-<n>` and maps it. The returned guard unlinks
    /// the name on drop.
    fn create(kind: &str) -> io::Result<(ShmName, ShmMap)> {
        use rustix::shm::{Mode, OFlags};
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let pid = rustix::process::getpid().as_raw_pid();
        let mut attempts = 0;
        loop {
            // Relaxed: the counter only has to hand out distinct numbers.
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let name = format!("/shmchan-{kind}-{pid}-{n}");
            let flags = OFlags::CREATE | OFlags::EXCL | OFlags::RDWR;
            match rustix::shm::open(name.as_str(), flags, Mode::RUSR | Mode::WUSR) {
                Ok(fd) => {
                    let guard = ShmName { name, linked: true };
                    rustix::fs::ftruncate(&fd, SHM_LEN as u64)?;
                    let map = ShmMap::from_fd(fd)?;
                    return Ok((guard, map));
                }
                // A stale object of a dead process with our pid: try the next n.
                Err(Errno::EXIST) if attempts < 16 => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Opens and maps an existing object created by [`ShmMap::create`].
    fn open(name: &str) -> io::Result<ShmMap> {
        use rustix::shm::{Mode, OFlags};
        let fd = rustix::shm::open(name, OFlags::RDWR, Mode::empty())?;
        ShmMap::from_fd(fd)
    }

    /// Maps `SHM_LEN` bytes of `fd` shared, after checking the object is big
    /// enough (so no access can fault with SIGBUS).
    fn from_fd(fd: OwnedFd) -> io::Result<ShmMap> {
        let file = File::from(fd);
        let len = file.metadata()?.len();
        if len < SHM_LEN as u64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("shm object has {len} bytes, need {SHM_LEN}"),
            ));
        }
        let map = MmapOptions::new().len(SHM_LEN).map_raw(&file)?;
        Ok(ShmMap { map })
    }

    /// The shared structure.
    fn get(&self) -> &ProbeShm {
        // SAFETY: the mapping is `SHM_LEN == size_of::<ProbeShm>()` bytes long,
        // backed by an object checked to be at least that large (which
        // nobody truncates while mapped), and page-aligned, which satisfies
        // ProbeShm's 128-byte alignment. ProbeShm consists only of atomics, so
        // any bit pattern is a valid value, and every access (ours and the
        // peer process's) goes through those atomics (interior mutability),
        // so a shared reference is sound despite concurrent modification. The
        // reference borrows `self`, so it cannot outlive the mapping.
        unsafe { &*self.map.as_ptr().cast::<ProbeShm>() }
    }
}

/// Waits for the child to set `ready`, failing if it exits or times out.
fn wait_ready(shm: &ProbeShm, child: &mut ChildGuard) -> io::Result<()> {
    let start = Instant::now();
    // Acquire: pairs with the child's Release store after it has set up.
    while shm.ready.0.load(Ordering::Acquire) == 0 {
        child.check_alive()?;
        if start.elapsed() > STARTUP_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "baseline child did not report ready (does main() call maybe_run_child()?)",
            ));
        }
        std::thread::sleep(Duration::from_micros(100));
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

/// Spins until `done()` returns true. Every `yield_mask + 1` spins it yields
/// the CPU; every ~1M spins it calls `alive()` (propagating its error) and
/// fails with `TimedOut` once [`STALL_TIMEOUT`] has passed since the first
/// such check.
fn spin_until(
    mut done: impl FnMut() -> bool,
    yield_mask: u64,
    mut alive: impl FnMut() -> io::Result<()>,
) -> io::Result<()> {
    let mut spins: u64 = 0;
    let mut stalled_since: Option<Instant> = None;
    loop {
        if done() {
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins & yield_mask == 0 {
            std::thread::yield_now();
        }
        if spins & CHECK_MASK == 0 {
            alive()?;
            let now = Instant::now();
            let since = *stalled_since.get_or_insert(now);
            if now.duration_since(since) > STALL_TIMEOUT {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "baseline peer made no progress",
                ));
            }
        }
        std::hint::spin_loop();
    }
}

/// Blocks (`FUTEX_WAIT`, shared) until `word` no longer holds `old` and
/// returns its new value. Every [`FUTEX_POLL_TIMEOUT`] without a change it
/// calls `alive()`; after [`FUTEX_STALL_POLLS`] of them it fails.
fn futex_wait_change(
    word: &AtomicU32,
    old: u32,
    mut alive: impl FnMut() -> io::Result<()>,
) -> io::Result<u32> {
    let mut timeouts = 0;
    loop {
        // Acquire: pairs with the peer's Release store of the new value.
        let cur = word.load(Ordering::Acquire);
        if cur != old {
            return Ok(cur);
        }
        match futex::wait(word, futex::Flags::empty(), old, Some(&FUTEX_POLL_TIMEOUT)) {
            // Woken, value already changed, or a signal: re-check the word.
            Ok(()) | Err(Errno::AGAIN) | Err(Errno::INTR) => {}
            Err(Errno::TIMEDOUT) => {
                alive()?;
                timeouts += 1;
                if timeouts >= FUTEX_STALL_POLLS {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "baseline peer made no progress",
                    ));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Next futex sequence value: never 0 (the initial value) nor [`STOP32`], and
/// always different from `s`.
fn next_seq32(s: u32) -> u32 {
    if s >= STOP32 - 1 { 1 } else { s + 1 }
}

// ---------------------------------------------------------------------------
// Streams (pipe, socket)
// ---------------------------------------------------------------------------

/// Rejects zero-byte messages (they could not be told apart from EOF).
fn check_msg_size(msg_size: usize) -> io::Result<()> {
    if msg_size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "msg_size must be at least 1 byte",
        ));
    }
    Ok(())
}

/// Parent side of a stream ping-pong: checks the child's greeting, then times
/// `WARMUP_ITERS + iters` write-message/read-echo round trips.
fn stream_ping_pong(
    mut tx: impl Write,
    mut rx: impl Read + AsFd,
    iters: usize,
    msg_size: usize,
    child: &mut ChildGuard,
) -> io::Result<RttSamples> {
    // Don't block forever on a binary that never called maybe_run_child().
    wait_readable(&rx, child)?;
    let mut hello = [0u8; HELLO.len()];
    rx.read_exact(&mut hello)?;
    if hello != *HELLO {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "baseline child sent no greeting (does main() call maybe_run_child()?)",
        ));
    }
    let msg = vec![0x5a_u8; msg_size];
    let mut buf = vec![0_u8; msg_size];
    let mut samples = sample_buffer(iters);
    let echo_failed =
        |e: io::Error| io::Error::new(e.kind(), format!("baseline echo round trip failed: {e}"));
    for i in 0..WARMUP_ITERS + iters {
        let t0 = Instant::now();
        tx.write_all(&msg).map_err(echo_failed)?;
        rx.read_exact(&mut buf).map_err(echo_failed)?;
        record(&mut samples, i, t0);
    }
    Ok(RttSamples { ns: samples })
}

/// Polls `fd` for readability for up to [`STARTUP_TIMEOUT`], failing early if
/// the child exits.
fn wait_readable(fd: &impl AsFd, child: &mut ChildGuard) -> io::Result<()> {
    use rustix::event::{PollFd, PollFlags};
    let start = Instant::now();
    let slice = rustix::time::Timespec {
        tv_sec: 0,
        tv_nsec: 50_000_000,
    };
    loop {
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&slice)) {
            Ok(n) if n > 0 => return Ok(()),
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
        child.check_alive()?;
        if start.elapsed() > STARTUP_TIMEOUT {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "baseline child did not greet (does main() call maybe_run_child()?)",
            ));
        }
    }
}

/// Fills `buf` completely from `r`. Returns `Ok(false)` on a clean EOF before
/// the first byte, and an `UnexpectedEof` error on EOF mid-message.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

// ---------------------------------------------------------------------------
// Samples
// ---------------------------------------------------------------------------

/// A sample buffer for [`record`], its pages faulted in now (non-zero fill).
pub(crate) fn sample_buffer(iters: usize) -> Vec<u64> {
    vec![u64::MAX; iters]
}

/// Stores the time since `t0` in `samples[i % len]`, for every round trip `i`,
/// warm-up included, so after a loop of at least `len` round trips the buffer holds
/// the last `len` of them.
///
/// Why every round trip writes: the buffer's lines are then in cache when the timed
/// round trips write them. A timed store to a line not in cache (a fresh or long-idle
/// buffer: one new line every 8 samples) misses, and since x86 commits stores in
/// order, the next message's stores wait behind it. Measured on the 8-byte round trip
/// at a 120 ns floor: ~300 slow round trips (over 1.67x the median) per 100,000 with
/// a fresh buffer, ~130 with this one, and a p99.9 of ~480 against ~300 ns.
pub(crate) fn record(samples: &mut [u64], i: usize, t0: Instant) {
    let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
    if let Some(slot) = i
        .checked_rem(samples.len())
        .and_then(|k| samples.get_mut(k))
    {
        *slot = ns;
    }
}

// ---------------------------------------------------------------------------
// CPU placement
// ---------------------------------------------------------------------------

/// Highest online CPU id + 1 (from sysfs; falls back to the available
/// parallelism).
fn cpu_limit() -> usize {
    std::fs::read_to_string("/sys/devices/system/cpu/online")
        .ok()
        .and_then(|s| max_in_cpu_list(&s))
        .map(|max| max + 1)
        .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
        .unwrap_or(1)
}

/// Largest CPU id in a kernel CPU list such as `0-3,5,7-8`.
fn max_in_cpu_list(list: &str) -> Option<usize> {
    list.trim()
        .split(',')
        .filter_map(|part| part.rsplit('-').next())
        .filter_map(|n| n.trim().parse::<usize>().ok())
        .max()
}

/// Where the parent and the child of one baseline run.
struct CpuPlan {
    /// CPU for the parent's (calling) thread, `None` = leave unpinned.
    parent: Option<usize>,
    /// CPU for the child, `None` = leave unpinned.
    child: Option<usize>,
}

impl CpuPlan {
    /// The first two CPUs this thread may run on; if it is restricted to one
    /// CPU, that one plus another online CPU; unpinned on a 1-CPU machine.
    fn choose() -> CpuPlan {
        let allowed: Vec<usize> = match rustix::thread::sched_getaffinity(None) {
            Ok(set) => (0..CpuSet::MAX_CPU)
                .filter(|&c| set.is_set(c))
                .take(2)
                .collect(),
            Err(_) => Vec::new(),
        };
        let limit = cpu_limit();
        match allowed[..] {
            [a, b, ..] => CpuPlan {
                parent: Some(a),
                child: Some(b),
            },
            [a] if limit >= 2 => CpuPlan {
                parent: Some(a),
                child: Some(if a == 0 { 1 } else { 0 }),
            },
            [] if limit >= 2 => CpuPlan {
                parent: Some(0),
                child: Some(1),
            },
            _ => CpuPlan {
                parent: None,
                child: None,
            },
        }
    }

    /// Yield frequency for spinning waits under this plan.
    fn yield_mask(&self) -> u64 {
        yield_mask_for(self.child)
    }

    /// The `SHMCHAN_BASELINE_CHILD` value for a child running `role`.
    fn child_spec(&self, role: &str, arg: &str) -> String {
        let ppid = rustix::process::getpid().as_raw_pid();
        let cpu = self.child.map_or_else(|| "-".to_owned(), |c| c.to_string());
        format!("{role}:{ppid}:{cpu}:{arg}")
    }
}

/// Spinning waits yield rarely when the two sides have their own CPUs, and
/// often when they might share one (so a shared CPU still makes progress).
fn yield_mask_for(child_cpu: Option<usize>) -> u64 {
    if child_cpu.is_some() {
        YIELD_MASK_PINNED
    } else {
        YIELD_MASK_SHARED
    }
}

/// Restores the calling thread's CPU affinity on drop.
struct AffinityGuard {
    /// The affinity to restore, `None` if nothing was changed.
    saved: Option<CpuSet>,
}

impl AffinityGuard {
    /// Pins the calling thread to `cpu` (if any), remembering the old mask.
    fn pin(cpu: Option<usize>) -> io::Result<AffinityGuard> {
        let Some(cpu) = cpu else {
            return Ok(AffinityGuard { saved: None });
        };
        let saved = rustix::thread::sched_getaffinity(None)?;
        pin_to_cpu(cpu)?;
        Ok(AffinityGuard { saved: Some(saved) })
    }
}

impl Drop for AffinityGuard {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // Best effort: nothing sensible to do on failure in a destructor.
            let _ = rustix::thread::sched_setaffinity(None, saved);
        }
    }
}

// ---------------------------------------------------------------------------
// Child process management (parent side)
// ---------------------------------------------------------------------------

/// Fails if this process is itself a baseline child: that means `main()` did
/// not call [`maybe_run_child`] (e.g. a test harness re-executed itself), and
/// going on would spawn children recursively.
fn refuse_nested() -> io::Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        return Err(io::Error::other(format!(
            "{CHILD_ENV} is set: this binary's main() must call maybe_run_child() first"
        )));
    }
    Ok(())
}

/// Re-executes the current binary as a baseline child described by `spec`.
fn spawn_child(spec: &str, stdin: Stdio, stdout: Stdio) -> io::Result<ChildGuard> {
    let exe = std::env::current_exe()?;
    // The `Command` (and with it the parent's copies of the child's stdio
    // fds) is dropped when this function returns.
    let child = Command::new(exe)
        .env(CHILD_ENV, spec)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(Stdio::inherit())
        .spawn()?;
    Ok(ChildGuard { child: Some(child) })
}

/// Owns the child process; on drop (error paths) kills and reaps it.
struct ChildGuard {
    /// The child, `None` once it has been reaped by [`ChildGuard::finish`].
    child: Option<Child>,
}

impl ChildGuard {
    /// Fails if the child has already exited.
    fn check_alive(&mut self) -> io::Result<()> {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                return Err(io::Error::other(format!(
                    "baseline child exited early ({status})"
                )));
            }
        }
        Ok(())
    }

    /// Waits (up to [`EXIT_TIMEOUT`]) for the child, which has been told to
    /// stop, to exit, and checks that it succeeded. On timeout the guard's
    /// drop kills and reaps it.
    fn finish(mut self) -> io::Result<()> {
        let deadline = Instant::now() + EXIT_TIMEOUT;
        while let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                if status.success() {
                    return Ok(());
                }
                return Err(io::Error::other(format!(
                    "baseline child failed ({status})"
                )));
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "baseline child did not exit",
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Our own, not yet reaped child, so its pid cannot have been
            // reused. Best effort: kill (no-op if it exited) and reap.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Child side
// ---------------------------------------------------------------------------

/// The role a baseline child plays.
#[derive(Debug, Clone, Copy)]
enum Role {
    /// Spin ping-pong on the floor probe's shm lines.
    Floor,
    /// Futex ping-pong on the futex probe's shm words.
    Futex,
    /// Echo stdin to stdout (pipe baseline).
    Pipe,
    /// Echo stdin to stdout (socket baseline; both are the same socket).
    Sock,
}

impl Role {
    /// The role's name in `SHMCHAN_BASELINE_CHILD`.
    fn name(self) -> &'static str {
        match self {
            Role::Floor => "floor",
            Role::Futex => "futex",
            Role::Pipe => "pipe",
            Role::Sock => "sock",
        }
    }
}

/// A parsed `SHMCHAN_BASELINE_CHILD=<role>:<ppid>:<cpu or ->:<arg>` value.
struct ChildRequest {
    /// What to do.
    role: Role,
    /// Pid of the parent that spawned us; if `getppid()` differs, it is gone.
    ppid: i32,
    /// CPU to pin to, if any.
    cpu: Option<usize>,
    /// Shm name (floor, futex) or message size (pipe, sock).
    arg: String,
}

impl ChildRequest {
    /// Parses the environment variable's value.
    fn parse(raw: &std::ffi::OsStr) -> Result<ChildRequest, String> {
        let raw = raw.to_str().ok_or("not UTF-8")?;
        let mut parts = raw.splitn(4, ':');
        let mut next = |what: &str| parts.next().ok_or(format!("missing {what}"));
        let role = match next("role")? {
            "floor" => Role::Floor,
            "futex" => Role::Futex,
            "pipe" => Role::Pipe,
            "sock" => Role::Sock,
            other => return Err(format!("unknown role {other:?}")),
        };
        let ppid = next("parent pid")?
            .parse::<i32>()
            .map_err(|e| format!("bad parent pid: {e}"))?;
        let cpu = match next("cpu")? {
            "-" => None,
            c => Some(c.parse::<usize>().map_err(|e| format!("bad cpu: {e}"))?),
        };
        let arg = next("argument")?.to_owned();
        Ok(ChildRequest {
            role,
            ppid,
            cpu,
            arg,
        })
    }

    /// Runs the role until told to stop (or the parent goes away).
    fn run(&self) -> io::Result<()> {
        // Die with the parent even while blocked; then close the race where
        // the parent died before the prctl.
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        self.check_parent()?;
        if let Some(cpu) = self.cpu {
            pin_to_cpu(cpu)?;
        }
        match self.role {
            Role::Floor => self.run_floor(),
            Role::Futex => self.run_futex(),
            Role::Pipe | Role::Sock => self.run_echo(),
        }
    }

    /// Fails if our parent is no longer the process that spawned us.
    fn check_parent(&self) -> io::Result<()> {
        match rustix::process::getppid() {
            Some(p) if p.as_raw_pid() == self.ppid => Ok(()),
            _ => Err(io::Error::other("baseline parent went away")),
        }
    }

    /// Floor probe child: echo every ping value into pong until `STOP64`.
    fn run_floor(&self) -> io::Result<()> {
        let map = ShmMap::open(&self.arg)?;
        let shm = map.get();
        // Release: publishes "mapped and pinned" to the parent's Acquire load.
        shm.ready.0.store(1, Ordering::Release);
        let yield_mask = yield_mask_for(self.cpu);
        let mut last = 0u64;
        loop {
            let mut seen = last;
            spin_until(
                || {
                    // Acquire: pairs with the parent's Release store of ping.
                    seen = shm.ping.0.load(Ordering::Acquire);
                    seen != last
                },
                yield_mask,
                || self.check_parent(),
            )?;
            if seen == STOP64 {
                return Ok(());
            }
            // Release: pairs with the parent's Acquire load of pong.
            shm.pong.0.store(seen, Ordering::Release);
            last = seen;
        }
    }

    /// Futex probe child: wait for each new ping value, copy it into pong and
    /// wake the parent, until `STOP32`.
    fn run_futex(&self) -> io::Result<()> {
        let map = ShmMap::open(&self.arg)?;
        let shm = map.get();
        // Release: publishes "mapped and pinned" to the parent's Acquire load.
        shm.ready.0.store(1, Ordering::Release);
        let mut last = 0u32;
        loop {
            let seen = futex_wait_change(&shm.fping.0, last, || self.check_parent())?;
            if seen == STOP32 {
                return Ok(());
            }
            // Release: pairs with the parent's Acquire load of pong.
            shm.fpong.0.store(seen, Ordering::Release);
            futex::wake(&shm.fpong.0, futex::Flags::empty(), 1)?;
            last = seen;
        }
    }

    /// Stream child: greet, then echo `arg`-byte messages from stdin to
    /// stdout until EOF.
    fn run_echo(&self) -> io::Result<()> {
        let msg_size: usize = self
            .arg
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("bad size: {e}")))?;
        check_msg_size(msg_size)?;
        // Unbuffered handles on fds 0 and 1 (std's Stdin/Stdout buffer).
        let mut input = File::from(io::stdin().as_fd().try_clone_to_owned()?);
        let mut output = File::from(io::stdout().as_fd().try_clone_to_owned()?);
        output.write_all(HELLO)?;
        let mut buf = vec![0_u8; msg_size];
        while read_full(&mut input, &mut buf)? {
            output.write_all(&buf)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_nearest_rank() {
        let s = RttSamples {
            ns: (1..=100).rev().collect(),
        };
        assert_eq!(s.percentile(0.0), 1);
        assert_eq!(s.percentile(1.0), 1);
        assert_eq!(s.median(), 50);
        assert_eq!(s.percentile(99.0), 99);
        assert_eq!(s.percentile(100.0), 100);
        assert_eq!(s.percentile(250.0), 100);
        assert_eq!(RttSamples::default().median(), 0);
    }

    #[test]
    fn cpu_list_parsing() {
        assert_eq!(max_in_cpu_list("0-1\n"), Some(1));
        assert_eq!(max_in_cpu_list("0,2-5,7"), Some(7));
        assert_eq!(max_in_cpu_list("0"), Some(0));
        assert_eq!(max_in_cpu_list(""), None);
    }

    #[test]
    fn seq32_skips_reserved_values() {
        assert_eq!(next_seq32(0), 1);
        assert_eq!(next_seq32(STOP32 - 2), STOP32 - 1);
        assert_eq!(next_seq32(STOP32 - 1), 1);
    }

    #[test]
    fn request_parsing() {
        let r = ChildRequest::parse("floor:12:1:/shmchan-floor-12-0".as_ref()).expect("parses");
        assert!(matches!(r.role, Role::Floor));
        assert_eq!(
            (r.ppid, r.cpu, r.arg.as_str()),
            (12, Some(1), "/shmchan-floor-12-0")
        );
        let r = ChildRequest::parse("pipe:7:-:64".as_ref()).expect("parses");
        assert_eq!((r.cpu, r.arg.as_str()), (None, "64"));
        assert!(ChildRequest::parse("bogus:1:-:x".as_ref()).is_err());
        assert!(ChildRequest::parse("pipe:1".as_ref()).is_err());
    }
}
