//! Randomized SIGKILLs on an MPMC channel between real processes.
//!
//! `PRODUCERS` producer and `CONSUMERS` consumer processes (each `THREADS` threads with
//! clones of one handle) stream `common::Msg`s continuously through a small ring. The
//! parent SIGKILLs a random one of them at a random moment — in mid-stream, right
//! after it attached, or just after it was started (a replacement killed before or
//! while it attaches) — and starts a replacement, `SHMCHAN_KILLS` times (default
//! 200). The children run at a lower priority (nice 5) than the parent, so that its
//! kills land when it means them to although the children keep every core busy.
//!
//! After each kill the channel must flow again: the consumers must record `PROGRESS`
//! more messages within `PROGRESS_LIMIT`. A ring blocked by the victim (a dead
//! producer's half-written slot, a dead consumer's claim) lets at most about two rings
//! through until the dead claim is cleared, so the time to `PROGRESS` messages bounds
//! the stall; the test reports its distribution.
//!
//! Bookkeeping that survives SIGKILL: every child has a small file, mapped shared, in
//! a temp dir. A producer thread stores "acknowledged up to N" after each `send`
//! returned `Ok`; a consumer thread stores each message it received (tag << 32 | seq)
//! in its log and then bumps its count. At the end the parent checks:
//! - no message was delivered twice (a dead reader's message is dropped, never
//!   redelivered), and none was torn (the consumers check every payload and
//!   checksum, and say so in their file);
//! - nothing was delivered that was not sent: at most one message past a killed
//!   producer's acknowledged count (sent, killed before recording it), none past a
//!   finished producer's;
//! - every acknowledged message was delivered, except those a killed consumer had in
//!   hand (claimed but not yet recorded): at most one per consumer thread per kill.

mod common;

use common::{ChildEnv, ChildProc, LIVENESS, MUST_FINISH, Msg, Rng, ShmGuard, TempDir};
use memmap2::{MmapOptions, MmapRaw};
use shmchan::mpmc::{Receiver, Sender};
use shmchan::{
    CreateMode, Options, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const TEST: &str = "mpmc_random_sigkills_lose_nothing_acknowledged_and_never_wedge";

/// Producer processes running at any time.
const PRODUCERS: usize = 3;
/// Consumer processes running at any time.
const CONSUMERS: usize = 3;
/// Threads per child process.
const THREADS: usize = 2;
/// Slots.
const CAPACITY: usize = 64;
/// Default number of kills (override with `SHMCHAN_KILLS`).
const KILLS_DEFAULT: usize = 200;
/// After a kill, this many more messages must be recorded by the consumers within
/// `PROGRESS_LIMIT`: more than a blocked ring can let through (two rings, plus the
/// messages the consumer threads may hold in hand).
const PROGRESS: u64 = 2 * CAPACITY as u64 + (CONSUMERS * THREADS) as u64 + 8;
/// Generous: liveness checks run every `LIVENESS` (20 ms); only a wedged channel, not
/// a slow machine, takes seconds.
const PROGRESS_LIMIT: Duration = Duration::from_secs(10);

/// Size of a child's header page (and of the control and producer files).
const PAGE: u64 = 4096;
/// Records per consumer thread's log (the file is sparse).
const LOG_CAP: u64 = 1 << 22;

// Words of a child's header page.
/// When the child finished attaching (`monotonic_ns`); 0 before.
const W_ATTACHED: usize = 0;
/// 1 once the child left cleanly.
const W_DONE: usize = 1;
/// Consumers: torn or foreign messages seen.
const W_TORN: usize = 2;
/// Producers: acknowledged count of thread `t` is word `W_COUNT + t`; consumers: the
/// number of records in thread `t`'s log.
const W_COUNT: usize = 8;
// Words of the control file.
/// 1: producers, stop sending and leave.
const C_STOP: usize = 0;

/// A file mapped shared, seen as `u64` atomics (they survive the process's SIGKILL:
/// the stores are in the page cache).
struct Words {
    map: MmapRaw,
}

impl Words {
    /// Maps the first `len` bytes of the existing file `path`.
    fn open(path: &Path, len: u64) -> Words {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        let map = MmapOptions::new()
            .len(len as usize)
            .map_raw(&file)
            .expect("map");
        Words { map }
    }

    fn w(&self, i: usize) -> &AtomicU64 {
        assert!((i + 1) * 8 <= self.map.len());
        // SAFETY: the mapping is page aligned, so every 8-byte word is aligned for
        // AtomicU64; index checked above; the mapping lives as long as `self`, and the
        // other processes access these words only atomically too.
        unsafe { &*(self.map.as_mut_ptr() as *const AtomicU64).add(i) }
    }
}

/// CLOCK_MONOTONIC in nanoseconds: the same clock in every process.
fn monotonic_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64
}

/// Creates `path` (sparse) of `len` bytes.
fn create_file(path: &Path, len: u64) {
    let f = File::create(path).expect("create file");
    f.set_len(len).expect("size file");
}

fn producer_file(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("p{k}"))
}

fn consumer_file(dir: &Path, k: usize) -> PathBuf {
    dir.join(format!("c{k}"))
}

fn consumer_file_len() -> u64 {
    PAGE + THREADS as u64 * LOG_CAP * 8
}

/// Tag of thread `t` of producer incarnation `k`.
fn tag_of(k: usize, t: usize) -> u32 {
    (k * THREADS + t + 1) as u32
}

fn child_opts() -> Options {
    Options::new().liveness_interval(LIVENESS)
}

/// Roles of the children: arg "k dir" (incarnation number, temp dir).
fn child_roles(c: &ChildEnv) {
    let (k, dir) = c.arg.split_once(' ').expect("arg: k dir");
    let k: usize = k.parse().expect("k");
    let dir = PathBuf::from(dir);
    let parent = rustix::process::getppid();
    let ctl: &'static Words = Box::leak(Box::new(Words::open(&dir.join("ctl"), PAGE)));
    // Below the parent's priority, so that its kills land when it means them to on a
    // small machine that the children keep busy.
    let _ = rustix::process::nice(5);
    match c.role.as_str() {
        "producer" => {
            let me: &'static Words =
                Box::leak(Box::new(Words::open(&producer_file(&dir, k), PAGE)));
            let tx = Sender::<Msg>::with_options(&c.name, &child_opts()).expect("open sender");
            me.w(W_ATTACHED).store(monotonic_ns(), Ordering::SeqCst);
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let tag = tag_of(k, t);
                        let acked = me.w(W_COUNT + t);
                        let mut rng = Rng::from_entropy();
                        let mut seq = 0u64;
                        while ctl.w(C_STOP).load(Ordering::SeqCst) == 0 {
                            let m = Msg::new(tag, seq);
                            // Mostly blocking sends (with a timeout, to look at the
                            // stop flag), some non-blocking ones.
                            let sent = if rng.next_u64() % 4 == 0 {
                                match tx.try_send(m) {
                                    Ok(()) => true,
                                    Err(TrySendError::Full(_)) => false,
                                    Err(TrySendError::Disconnected(_)) => {
                                        panic!("producer {k}/{t}: Disconnected at {seq}")
                                    }
                                }
                            } else {
                                match tx.send_timeout(m, Duration::from_millis(100)) {
                                    Ok(()) => true,
                                    Err(SendTimeoutError::Timeout(_)) => false,
                                    Err(SendTimeoutError::Disconnected(_)) => {
                                        panic!("producer {k}/{t}: Disconnected at {seq}")
                                    }
                                }
                            };
                            if sent {
                                seq += 1;
                                // Only after `Ok`: a message up to here was acknowledged.
                                acked.store(seq, Ordering::SeqCst);
                            } else if common::orphaned(parent) {
                                return;
                            }
                        }
                    })
                })
                .collect();
            drop(tx);
            for h in threads {
                h.join().expect("producer thread");
            }
            me.w(W_DONE).store(1, Ordering::SeqCst);
        }
        "consumer" => {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(consumer_file(&dir, k))
                .expect("open log");
            let map = MmapOptions::new()
                .len(consumer_file_len() as usize)
                .map_raw(&file)
                .expect("map log");
            let me: &'static Words = Box::leak(Box::new(Words { map }));
            let rx = Receiver::<Msg>::with_options(&c.name, &child_opts()).expect("open receiver");
            me.w(W_ATTACHED).store(monotonic_ns(), Ordering::SeqCst);
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let rx = rx.clone();
                    std::thread::spawn(move || {
                        let count = me.w(W_COUNT + t);
                        let base = (PAGE as usize + t * LOG_CAP as usize * 8) / 8;
                        let mut rng = Rng::from_entropy();
                        let mut n = 0u64;
                        loop {
                            let got = if rng.next_u64() % 4 == 0 {
                                match rx.try_recv() {
                                    Ok(m) => Some(m),
                                    Err(TryRecvError::Empty) => None,
                                    Err(TryRecvError::Disconnected) => break,
                                }
                            } else {
                                match rx.recv_timeout(Duration::from_millis(100)) {
                                    Ok(m) => Some(m),
                                    Err(RecvTimeoutError::Timeout) => None,
                                    Err(RecvTimeoutError::Disconnected) => break,
                                }
                            };
                            let Some(m) = got else {
                                if common::orphaned(parent) {
                                    return;
                                }
                                std::thread::yield_now();
                                continue;
                            };
                            // Recorded at once: a kill from here on loses at most this
                            // message (the parent allows one per thread per kill).
                            if !m.is_valid() {
                                me.w(W_TORN).fetch_add(1, Ordering::SeqCst);
                                panic!("consumer {k}/{t}: torn message {m:?}");
                            }
                            assert!(n < LOG_CAP, "consumer {k}/{t}: log full");
                            me.w(base + n as usize)
                                .store(u64::from(m.tag()) << 32 | m.seq, Ordering::Relaxed);
                            n += 1;
                            count.store(n, Ordering::SeqCst);
                        }
                    })
                })
                .collect();
            drop(rx);
            for h in threads {
                h.join().expect("consumer thread");
            }
            me.w(W_DONE).store(1, Ordering::SeqCst);
        }
        other => panic!("unknown role {other}"),
    }
}

/// A running child of the parent.
struct Live {
    child: ChildProc,
    /// Incarnation number.
    k: usize,
    spawned: Instant,
    /// `monotonic_ns` just before it was spawned.
    spawned_ns: u64,
    /// Its header page.
    hdr: Words,
    /// How long it took to attach, once seen.
    attach_took: Option<Duration>,
}

impl Live {
    fn attached(&self) -> bool {
        self.hdr.w(W_ATTACHED).load(Ordering::SeqCst) != 0
    }

    fn count(&self) -> u64 {
        (0..THREADS)
            .map(|t| self.hdr.w(W_COUNT + t).load(Ordering::SeqCst))
            .sum()
    }
}

/// The parent's view of the experiment.
struct World {
    name: String,
    dir: PathBuf,
    producers: Vec<Live>,
    consumers: Vec<Live>,
    next_p: usize,
    next_c: usize,
    /// Producer incarnations killed.
    killed_p: Vec<usize>,
    /// Consumer incarnations killed.
    killed_c: Vec<usize>,
    /// Records of consumers that are gone.
    dead_records: u64,
    /// Spawn-to-attach times seen.
    attach_times: Vec<Duration>,
    /// Kills of children that had not finished attaching (not yet started, or in the
    /// middle of `with_options`).
    unattached_kills: usize,
}

impl World {
    fn spawn_producer(&mut self) -> Live {
        let k = self.next_p;
        self.next_p += 1;
        let path = producer_file(&self.dir, k);
        create_file(&path, PAGE);
        let arg = format!("{k} {}", self.dir.display());
        let (spawned, spawned_ns) = (Instant::now(), monotonic_ns());
        Live {
            child: common::spawn_child(TEST, "producer", &self.name, &arg),
            spawned_ns,
            k,
            spawned,
            hdr: Words::open(&path, PAGE),
            attach_took: None,
        }
    }

    fn spawn_consumer(&mut self) -> Live {
        let k = self.next_c;
        self.next_c += 1;
        let path = consumer_file(&self.dir, k);
        create_file(&path, consumer_file_len());
        let arg = format!("{k} {}", self.dir.display());
        let (spawned, spawned_ns) = (Instant::now(), monotonic_ns());
        Live {
            child: common::spawn_child(TEST, "consumer", &self.name, &arg),
            spawned_ns,
            k,
            spawned,
            hdr: Words::open(&path, PAGE),
            attach_took: None,
        }
    }

    /// Messages recorded by all consumers so far.
    fn delivered(&self) -> u64 {
        self.dead_records + self.consumers.iter().map(Live::count).sum::<u64>()
    }

    fn all_mut(&mut self) -> impl Iterator<Item = &mut Live> {
        self.producers.iter_mut().chain(self.consumers.iter_mut())
    }

    /// Fails (with its output) if a child is no longer running; notes attach times.
    fn check_running(&mut self) {
        let mut took = Vec::new();
        for l in self.all_mut() {
            let at = l.hdr.w(W_ATTACHED).load(Ordering::SeqCst);
            if l.attach_took.is_none() && at != 0 {
                l.attach_took = Some(Duration::from_nanos(at.saturating_sub(l.spawned_ns)));
                took.extend(l.attach_took);
            }
            if !l.child.is_running() {
                let (status, out) = l.child.wait_timeout(MUST_FINISH);
                panic!(
                    "child {} exited ({status:?}) while it should run\n{out}",
                    l.k
                );
            }
        }
        self.attach_times.extend(took);
    }

    /// What the segment says, for failure messages.
    fn describe(&self) -> String {
        match shmchan::inspect(&self.name) {
            Ok(i) => format!(
                "head {} tail {} len {} sleeping r/s {}/{} peers {:?}",
                i.head,
                i.tail,
                i.len(),
                i.sleeping_receivers,
                i.sleeping_senders,
                i.peers
            ),
            Err(e) => format!("inspect: {e}"),
        }
    }

    /// Waits until child `which` of `consumer`/producer side has attached.
    fn wait_attached(&mut self, consumer: bool, which: usize) {
        let deadline = Instant::now() + MUST_FINISH;
        loop {
            let l = if consumer {
                &self.consumers[which]
            } else {
                &self.producers[which]
            };
            if l.attached() {
                return;
            }
            self.check_running();
            assert!(Instant::now() < deadline, "a child did not attach in time");
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// SIGKILLs child `which` and starts a replacement; returns the kill's instant.
    fn kill_and_replace(&mut self, consumer: bool, which: usize) -> Instant {
        let slot = if consumer {
            &mut self.consumers[which]
        } else {
            &mut self.producers[which]
        };
        if slot.hdr.w(W_ATTACHED).load(Ordering::SeqCst) == 0 {
            self.unattached_kills += 1;
        }
        let at = Instant::now();
        slot.child.kill_no_reap();
        // The replacement starts while the victim may still be dying (or a zombie).
        let fresh = if consumer {
            self.spawn_consumer()
        } else {
            self.spawn_producer()
        };
        let old = if consumer {
            std::mem::replace(&mut self.consumers[which], fresh)
        } else {
            std::mem::replace(&mut self.producers[which], fresh)
        };
        let Live { child, k, hdr, .. } = old;
        child.reap_killed();
        if consumer {
            // Dead and reaped: its count is final.
            self.dead_records += (0..THREADS)
                .map(|t| hdr.w(W_COUNT + t).load(Ordering::SeqCst))
                .sum::<u64>();
            self.killed_c.push(k);
        } else {
            self.killed_p.push(k);
        }
        at
    }
}

fn read_words(path: &Path, offset: u64, n: u64) -> Vec<u64> {
    let f = File::open(path).expect("open");
    let mut buf = vec![0u8; (n * 8) as usize];
    f.read_exact_at(&mut buf, offset).expect("read");
    buf.chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn mpmc_random_sigkills_lose_nothing_acknowledged_and_never_wedge() {
    common::run_as_child(child_roles);
    let kills: usize = std::env::var("SHMCHAN_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(KILLS_DEFAULT);
    let seed = Rng::from_entropy().next_u64();
    let mut rng = Rng::with_seed(seed);
    let started = Instant::now();
    let (guard, name) = ShmGuard::fresh("mpmc-kill");
    let tmp = TempDir::new("mpmc-kill");
    let dir = tmp.path().to_path_buf();
    create_file(&dir.join("ctl"), PAGE);
    let ctl = Words::open(&dir.join("ctl"), PAGE);
    // The parent creates the channel (and owns its name) as a sender that never sends:
    // the consumers see Disconnected only once it is dropped at the end.
    let tx = Sender::<Msg>::with_options(
        &name,
        &child_opts()
            .capacity(CAPACITY)
            .mode(CreateMode::CreateExclusive),
    )
    .expect("create");
    let mut w = World {
        name: name.clone(),
        dir: dir.clone(),
        producers: Vec::new(),
        consumers: Vec::new(),
        next_p: 0,
        next_c: 0,
        killed_p: Vec::new(),
        killed_c: Vec::new(),
        dead_records: 0,
        attach_times: Vec::new(),
        unattached_kills: 0,
    };
    for _ in 0..CONSUMERS {
        let l = w.spawn_consumer();
        w.consumers.push(l);
    }
    for _ in 0..PRODUCERS {
        let l = w.spawn_producer();
        w.producers.push(l);
    }
    for i in 0..CONSUMERS {
        w.wait_attached(true, i);
    }
    for i in 0..PRODUCERS {
        w.wait_attached(false, i);
    }

    let mut stalls = Vec::with_capacity(kills);
    // Kills by moment: just started (before or while attaching), right after it
    // attached, mid-stream.
    let mut modes = [0usize; 3];
    let mut last_fresh: Option<(bool, usize)> = None;
    let mut done = 0;
    while done < kills {
        let n = done;
        // Pick a victim (a producer or consumer slot) and a moment.
        let mut mode = match rng.next_u64() % 20 {
            0..=2 => 0,
            3..=5 if last_fresh.is_some() => 1,
            _ => 2,
        };
        if mode == 0 && kills - done < 2 {
            mode = 2;
        }
        let (consumer, which) = match mode {
            1 => last_fresh.expect("a fresh child"),
            _ => {
                let i = rng.range(0, (PRODUCERS + CONSUMERS) as u64) as usize;
                if i < PRODUCERS {
                    (false, i)
                } else {
                    (true, i - PRODUCERS)
                }
            }
        };
        match mode {
            1 => {
                w.wait_attached(consumer, which);
                std::thread::sleep(Duration::from_micros(rng.range(0, 500)));
            }
            _ => {
                w.wait_attached(consumer, which);
                std::thread::sleep(Duration::from_micros(rng.range(0, 20_000)));
            }
        }
        w.check_running();
        let before = w.delivered();
        let killed_at = w.kill_and_replace(consumer, which);
        done += 1;
        if mode == 0 {
            // Mid-stream, then its replacement just after its start: children take a
            // few milliseconds to start and attach here, so this hits them while
            // starting, some while attaching, some just after.
            modes[2] += 1;
            let l = if consumer {
                &w.consumers[which]
            } else {
                &w.producers[which]
            };
            let at = l.spawned + Duration::from_micros(rng.range(0, 12_000));
            std::thread::sleep(at.saturating_duration_since(Instant::now()));
            w.check_running();
            w.kill_and_replace(consumer, which);
            done += 1;
        }
        modes[mode] += 1;
        last_fresh = Some((consumer, which));
        // The channel must flow again: more than a blocked ring can let through.
        loop {
            if w.delivered() >= before + PROGRESS {
                stalls.push(killed_at.elapsed());
                break;
            }
            w.check_running();
            assert!(
                killed_at.elapsed() < PROGRESS_LIMIT,
                "kill {n} ({} {which}, mode {mode}): only {} messages in {PROGRESS_LIMIT:?} \
                 (seed {seed}): {}",
                if consumer { "consumer" } else { "producer" },
                w.delivered() - before,
                w.describe()
            );
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let killing = started.elapsed();

    // Stop: producers leave cleanly; once every consumer is attached (the name must
    // exist for a late starter to open it) the parent drops its sender, the consumers
    // drain the ring, see Disconnected and leave.
    ctl.w(C_STOP).store(1, Ordering::SeqCst);
    let producers = std::mem::take(&mut w.producers);
    let final_p: Vec<usize> = producers.iter().map(|l| l.k).collect();
    for l in producers {
        l.child.wait_success();
    }
    for i in 0..CONSUMERS {
        w.wait_attached(true, i);
    }
    drop(tx);
    let consumers = std::mem::take(&mut w.consumers);
    let final_c: Vec<usize> = consumers.iter().map(|l| l.k).collect();
    for l in consumers {
        l.child.wait_success();
    }
    let total_time = started.elapsed();

    // The books. Acknowledged counts per producer tag.
    let mut acked = vec![0u64; w.next_p * THREADS + 1];
    let mut finished = vec![false; acked.len()];
    for k in 0..w.next_p {
        let words = read_words(&producer_file(&dir, k), 0, (W_COUNT + THREADS) as u64);
        if final_p.contains(&k) {
            assert_eq!(words[W_DONE], 1, "producer {k} did not finish cleanly");
        }
        for t in 0..THREADS {
            acked[tag_of(k, t) as usize] = words[W_COUNT + t];
            finished[tag_of(k, t) as usize] = final_p.contains(&k);
        }
    }
    let mut seen: Vec<Vec<u8>> = acked.iter().map(|&a| vec![0u8; a as usize + 1]).collect();
    let mut delivered = 0u64;
    let mut duplicates = 0u64;
    let mut beyond_ack = 0u64;
    for k in 0..w.next_c {
        let path = consumer_file(&dir, k);
        let hdr = read_words(&path, 0, (W_COUNT + THREADS) as u64);
        assert_eq!(hdr[W_TORN], 0, "consumer {k} received a torn message");
        if final_c.contains(&k) {
            assert_eq!(hdr[W_DONE], 1, "consumer {k} did not finish cleanly");
        }
        for t in 0..THREADS {
            let n = hdr[W_COUNT + t];
            let recs = read_words(&path, PAGE + t as u64 * LOG_CAP * 8, n);
            for v in recs {
                let (tag, seq) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                assert!(
                    tag >= 1 && tag < acked.len(),
                    "consumer {k}/{t}: unknown tag {tag}"
                );
                // A finished producer sent exactly its acknowledged messages; a killed
                // one may have sent one more (killed between Ok and its record).
                let limit = if finished[tag] {
                    acked[tag]
                } else {
                    acked[tag] + 1
                };
                if seq >= limit {
                    beyond_ack += 1;
                    eprintln!(
                        "consumer {k}/{t}: tag {tag} seq {seq}, but only {} acknowledged",
                        acked[tag]
                    );
                    continue;
                }
                let s = &mut seen[tag][seq as usize];
                if *s > 0 {
                    duplicates += 1;
                    eprintln!("consumer {k}/{t}: tag {tag} seq {seq} delivered again");
                }
                *s = s.saturating_add(1);
                delivered += 1;
            }
        }
    }
    let mut lost = Vec::new();
    for tag in 1..acked.len() {
        for seq in 0..acked[tag] {
            if seen[tag][seq as usize] == 0 {
                lost.push((tag, seq));
            }
        }
    }
    let acked_total: u64 = acked.iter().sum();
    let allowed_losses = (w.killed_c.len() * THREADS) as u64;
    stalls.sort();
    let mut attach = std::mem::take(&mut w.attach_times);
    attach.sort();
    let over_liveness = stalls.iter().filter(|s| **s > 2 * LIVENESS).count();
    println!(
        "seed {seed}: {} kills survived ({} producers, {} consumers; {} just started, \
         {} right after attach, {} mid-stream; {} before the victim had attached); {acked_total} messages acknowledged, \
         {delivered} delivered, {} lost in killed consumers' hands (allowed {allowed_losses}), \
         {duplicates} duplicates, {beyond_ack} never sent; stall after a kill (to {PROGRESS} \
         more messages): max {:?}, p99 {:?}, p90 {:?}, p50 {:?}, {over_liveness} over \
         {:?}; killing took {killing:?}, in all {total_time:?}; spawn to attach: \
         median {:?}, max {:?}",
        w.killed_p.len() + w.killed_c.len(),
        w.killed_p.len(),
        w.killed_c.len(),
        modes[0],
        modes[1],
        modes[2],
        w.unattached_kills,
        lost.len(),
        percentile(&stalls, 1.0),
        percentile(&stalls, 0.99),
        percentile(&stalls, 0.9),
        percentile(&stalls, 0.5),
        2 * LIVENESS,
        percentile(&attach, 0.5),
        percentile(&attach, 1.0),
    );
    assert_eq!(duplicates, 0, "messages delivered twice");
    assert_eq!(beyond_ack, 0, "messages delivered that were never sent");
    assert!(
        lost.len() as u64 <= allowed_losses,
        "{} acknowledged messages lost, but only {} consumer kills (x{THREADS} threads): \
         first {:?}",
        lost.len(),
        w.killed_c.len(),
        &lost[..lost.len().min(10)]
    );
    drop(w);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}
