//! MPMC exactly-once delivery between real processes: `PRODUCERS` producer processes
//! and `CONSUMERS` consumer processes, each running `THREADS` threads with clones of
//! one handle, over a small ring (so that it wraps and both sides block).
//!
//! Every message is a `common::Msg`: its tag names the producer thread, its `seq`
//! counts that thread's messages, and its payload and checksum are functions of both,
//! so a torn message is detected. Each consumer thread writes what it received, in
//! order, to a file; each producer writes how many of its sends returned `Ok`. The
//! parent checks that every acknowledged message was received exactly once in total,
//! that nothing else was, and that each consumer thread saw each producer thread's
//! messages in increasing order. Once every sender is gone, every consumer thread's
//! blocking `recv` returns `Err` (Disconnected) and the processes leave.

mod common;

use common::{ChildEnv, ChildProc, MUST_FINISH, Msg, ShmGuard, TempDir};
use shmchan::mpmc::{Receiver, Sender};
use shmchan::{CreateMode, Options, TryRecvError, WaitStrategy};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Producer processes.
const PRODUCERS: u32 = 4;
/// Consumer processes.
const CONSUMERS: u32 = 4;
/// Threads per process (each with a clone of the process's handle).
const THREADS: u32 = 2;
/// Slots: small, so the ring wraps thousands of times and both sides block.
const CAPACITY: usize = 64;
/// Messages per producer thread with the default wait strategy, and with `BusySpin`
/// (16 spinning threads on a small machine are slow: a thread preempted while it holds
/// a claim stalls the others until it runs again). Override both with
/// `SHMCHAN_MPMC_MSGS`.
const MSGS_DEFAULT: u64 = 50_000;
const MSGS_BUSY: u64 = 20_000;
/// Messages per producer thread through a one-slot ring (every message is a hand-off).
const MSGS_ONE_SLOT: u64 = 10_000;

/// The two tests of this file each keep every core busy: run them one at a time, so
/// that their run times mean something.
static HEAVY: Mutex<()> = Mutex::new(());

fn msgs_per_thread(default: u64) -> u64 {
    std::env::var("SHMCHAN_MPMC_MSGS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Tag of thread `t` of producer process `p` (never 0).
fn tag_of(p: u32, t: u32) -> u32 {
    p * THREADS + t + 1
}

fn wait_strategy(s: &str) -> WaitStrategy {
    match s {
        "default" => WaitStrategy::default(),
        "busy" => WaitStrategy::BusySpin,
        other => panic!("unknown wait strategy {other}"),
    }
}

/// Writes `bytes` to `path` atomically (write a temporary file, then rename).
fn write_atomic(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).expect("write report");
    std::fs::rename(&tmp, path).expect("rename report");
}

/// In a child: says "attached" through `ready`, then waits for the parent's `go`.
fn ready_then_wait_for_go(ready: &Path, go: &Path) {
    write_atomic(ready, b"ready");
    let start = Instant::now();
    while !go.exists() {
        assert!(start.elapsed() < MUST_FINISH, "no go from the parent");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child's argument: "index dir wait-strategy messages-per-thread".
fn parse_arg(c: &ChildEnv) -> (u32, PathBuf, &str, u64) {
    let mut it = c.arg.split(' ');
    let idx = it.next().expect("index").parse().expect("index");
    let dir = PathBuf::from(it.next().expect("dir"));
    let wait = it.next().expect("wait strategy");
    let n = it.next().expect("messages").parse().expect("messages");
    (idx, dir, wait, n)
}

/// Roles the children of this file play.
fn child_roles(c: &ChildEnv) {
    let (idx, dir, wait, n) = parse_arg(c);
    let opts = Options::new().wait_strategy(wait_strategy(wait));
    let go = dir.join("go");
    match c.role.as_str() {
        // THREADS threads, each sending its N messages with a clone of one Sender; then
        // writes how many sends returned Ok per thread ("n0 n1 ...").
        "producer" => {
            let tx = Sender::<Msg>::with_options(&c.name, &opts).expect("open sender");
            ready_then_wait_for_go(&dir.join(format!("ready-p{idx}")), &go);
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let tx = tx.clone();
                    std::thread::spawn(move || {
                        let tag = tag_of(idx, t);
                        let mut ok = 0u64;
                        for seq in 0..n {
                            match tx.send(Msg::new(tag, seq)) {
                                Ok(()) => ok += 1,
                                Err(e) => {
                                    eprintln!("producer {idx}/{t}: send {seq}: {e:?}");
                                    break;
                                }
                            }
                        }
                        ok
                    })
                })
                .collect();
            drop(tx);
            let counts: Vec<u64> = threads
                .into_iter()
                .map(|h| h.join().expect("producer thread"))
                .collect();
            let text: Vec<String> = counts.iter().map(u64::to_string).collect();
            write_atomic(&dir.join(format!("p{idx}")), text.join(" ").as_bytes());
            assert!(
                counts.iter().all(|&k| k == n),
                "producer {idx}: some sends failed: {counts:?} of {n}"
            );
        }
        // THREADS threads, each receiving with a clone of one Receiver until recv
        // returns Err; each writes its messages, in the order received, as 8-byte
        // records (tag << 32 | seq) to "c<idx>-<t>".
        "consumer" => {
            let rx = Receiver::<Msg>::with_options(&c.name, &opts).expect("open receiver");
            ready_then_wait_for_go(&dir.join(format!("ready-c{idx}")), &go);
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let rx = rx.clone();
                    let path = dir.join(format!("c{idx}-{t}"));
                    std::thread::spawn(move || {
                        let mut got: Vec<u8> = Vec::new();
                        let mut last = vec![None::<u64>; (PRODUCERS * THREADS + 1) as usize];
                        while let Ok(m) = rx.recv() {
                            assert!(m.is_valid(), "consumer {idx}/{t}: torn message {m:?}");
                            let tag = m.tag();
                            assert!(
                                (1..=PRODUCERS * THREADS).contains(&tag),
                                "consumer {idx}/{t}: unknown tag in {m:?}"
                            );
                            let prev = &mut last[tag as usize];
                            assert!(
                                prev.is_none_or(|p| p < m.seq),
                                "consumer {idx}/{t}: tag {tag} seq {} after {prev:?}",
                                m.seq
                            );
                            *prev = Some(m.seq);
                            got.extend_from_slice(&(u64::from(tag) << 32 | m.seq).to_le_bytes());
                        }
                        // Disconnected is final.
                        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
                        write_atomic(&path, &got);
                    })
                })
                .collect();
            drop(rx);
            for h in threads {
                h.join().expect("consumer thread");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Waits until every file in `paths` exists; fails at once (with its output) if a
/// child exits first.
fn wait_for_files(children: &mut [ChildProc], paths: &[PathBuf]) {
    let deadline = Instant::now() + MUST_FINISH;
    while !paths.iter().all(|p| p.exists()) {
        for c in children.iter_mut() {
            if !c.is_running() {
                let (status, out) = c.wait_timeout(MUST_FINISH);
                panic!("a child exited ({status:?}) before all were ready\n{out}");
            }
        }
        assert!(Instant::now() < deadline, "children not ready in time");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn exactly_once(test: &str, wait: &str, capacity: usize, n: u64) {
    common::run_as_child(child_roles);
    let _serial = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, name) = ShmGuard::fresh("mpmc-once");
    let dir = TempDir::new("mpmc-once");
    let dir_s = dir.path().to_str().expect("utf-8 temp dir").to_owned();
    // The parent creates the channel (and owns its name) as a receiver that never
    // receives: it neither steals messages nor keeps the consumers from seeing
    // Disconnected once the producers are gone.
    let opts = Options::new()
        .capacity(capacity)
        .mode(CreateMode::CreateExclusive);
    let rx = Receiver::<Msg>::with_options(&name, &opts).expect("create");
    let started = Instant::now();
    let mut children = Vec::new();
    let mut ready = Vec::new();
    for c in 0..CONSUMERS {
        let arg = format!("{c} {dir_s} {wait} {n}");
        children.push(common::spawn_child(test, "consumer", &name, &arg));
        ready.push(dir.file(&format!("ready-c{c}")));
    }
    for p in 0..PRODUCERS {
        let arg = format!("{p} {dir_s} {wait} {n}");
        children.push(common::spawn_child(test, "producer", &name, &arg));
        ready.push(dir.file(&format!("ready-p{p}")));
    }
    // Everybody attached before anybody sends: a producer that finished before another
    // attached would otherwise let the consumers see Disconnected early.
    wait_for_files(&mut children, &ready);
    std::fs::write(dir.file("go"), b"go").expect("go");
    let go_at = Instant::now();
    // Watch the ring while it streams (for the report): how often it is seen full and
    // empty, and with senders or receivers asleep.
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (name, done) = (name.clone(), done.clone());
        std::thread::spawn(move || {
            let mut seen = [0u64; 5];
            while !done.load(Ordering::Relaxed) {
                if let Ok(i) = shmchan::inspect(&name) {
                    seen[0] += 1;
                    seen[1] += u64::from(i.len() == i.capacity);
                    seen[2] += u64::from(i.is_empty());
                    seen[3] += u64::from(i.sleeping_senders > 0);
                    seen[4] += u64::from(i.sleeping_receivers > 0);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        })
    };
    for c in children {
        c.wait_success();
    }
    let streamed = go_at.elapsed();
    done.store(true, Ordering::Relaxed);
    let [samples, full, empty, tx_asleep, rx_asleep] = watcher.join().expect("watcher");

    // What the producers acknowledged.
    let mut acked = vec![0u64; (PRODUCERS * THREADS + 1) as usize];
    for p in 0..PRODUCERS {
        let text = std::fs::read_to_string(dir.file(&format!("p{p}"))).expect("producer report");
        let counts: Vec<u64> = text.split(' ').map(|s| s.parse().expect("count")).collect();
        assert_eq!(counts.len(), THREADS as usize);
        for (t, k) in counts.into_iter().enumerate() {
            acked[tag_of(p, t as u32) as usize] = k;
        }
    }
    // What the consumers received: count every (tag, seq), check the order per thread.
    let mut seen: Vec<Vec<u8>> = acked.iter().map(|&k| vec![0u8; k as usize]).collect();
    let mut total = 0u64;
    let mut per_consumer_thread = Vec::new();
    for c in 0..CONSUMERS {
        for t in 0..THREADS {
            let bytes = std::fs::read(dir.file(&format!("c{c}-{t}"))).expect("consumer report");
            assert_eq!(bytes.len() % 8, 0);
            let mut last = vec![None::<u64>; acked.len()];
            let mut k = 0u64;
            for rec in bytes.chunks_exact(8) {
                let v = u64::from_le_bytes(rec.try_into().expect("8 bytes"));
                let (tag, seq) = ((v >> 32) as usize, v & 0xFFFF_FFFF);
                assert!(tag >= 1 && tag < acked.len(), "consumer {c}/{t}: tag {tag}");
                assert!(
                    seq < acked[tag],
                    "consumer {c}/{t}: tag {tag} seq {seq} was never acknowledged"
                );
                assert!(
                    last[tag].is_none_or(|p| p < seq),
                    "consumer {c}/{t}: tag {tag} out of order: {seq} after {:?}",
                    last[tag]
                );
                last[tag] = Some(seq);
                let s = &mut seen[tag][seq as usize];
                *s = s.saturating_add(1);
                k += 1;
            }
            total += k;
            per_consumer_thread.push(k);
        }
    }
    for (tag, s) in seen.iter().enumerate().skip(1) {
        let lost: Vec<usize> = (0..s.len()).filter(|&i| s[i] == 0).collect();
        let dup: Vec<usize> = (0..s.len()).filter(|&i| s[i] > 1).collect();
        assert!(
            lost.is_empty() && dup.is_empty(),
            "tag {tag}: {} lost (first {:?}), {} duplicated (first {:?})",
            lost.len(),
            lost.first(),
            dup.len(),
            dup.first()
        );
    }
    let expected: u64 = acked.iter().sum();
    assert_eq!(expected, u64::from(PRODUCERS * THREADS) * n);
    assert_eq!(total, expected);
    // Every sender is gone and the ring is drained: the parent's receiver agrees.
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert!(rx.is_empty());
    drop(rx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
    println!(
        "{wait}, capacity {capacity}: {PRODUCERS}x{THREADS} producer threads -> {CONSUMERS}x{THREADS} consumer \
         threads, {total} messages exactly once in {streamed:?} ({:.0} msg/s), {:?} in all; \
         per consumer thread {per_consumer_thread:?}; of {samples} looks at the ring: \
         {full} full, {empty} empty, {tx_asleep} with senders asleep, {rx_asleep} with \
         receivers asleep",
        total as f64 / streamed.as_secs_f64(),
        started.elapsed()
    );
}

#[test]
fn mpmc_exactly_once_across_processes_default_wait() {
    exactly_once(
        "mpmc_exactly_once_across_processes_default_wait",
        "default",
        CAPACITY,
        msgs_per_thread(MSGS_DEFAULT),
    );
}

#[test]
fn mpmc_exactly_once_across_processes_busy_spin() {
    exactly_once(
        "mpmc_exactly_once_across_processes_busy_spin",
        "busy",
        CAPACITY,
        msgs_per_thread(MSGS_BUSY),
    );
}

#[test]
fn mpmc_exactly_once_across_processes_one_slot() {
    exactly_once(
        "mpmc_exactly_once_across_processes_one_slot",
        "default",
        1,
        msgs_per_thread(MSGS_ONE_SLOT),
    );
}
