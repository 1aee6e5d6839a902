//! A dead consumer's claim must be cleared even after its peer-table entry has been
//! reused many times.
//!
//! A slot claim names its claimant by peer index and the low 13 bits of its attach
//! generation (src/mpmc/ring.rs). A consumer process is SIGKILLed while it holds a
//! READING claim (caught with SIGSTOP, then killed); nothing laps the ring for a while,
//! and meanwhile other handles attach and detach, reusing the dead consumer's entry.
//! After 2^13 attaches, the entry's live holder has the same 13 generation bits as the
//! dead claim, so `claimant_gone` takes the dead claim for the live holder's and never
//! clears it: once the producers come round to that slot, the channel is wedged for as
//! long as that unrelated handle lives, although its receiver drains everything.
//!
//! The test reads the segment (never writes it) to find the claim: slots start at
//! offset 4096, each begins with its claim word (state in bits 63..61, READING = 3;
//! peer index in bits 20..13; generation in bits 12..0).

mod common;

use common::{ChildEnv, LIVENESS, MUST_FINISH, Msg, PROMPTLY, Rng, ShmGuard};
use shmchan::mpmc::{Receiver, Sender};
use shmchan::{CreateMode, Options, SendTimeoutError, TrySendError};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const TEST: &str = "mpmc_dead_claim_is_cleared_after_its_entry_was_reused_8192_times";
const CAP: usize = 16;
const OFF_SLOTS: usize = 4096;
const READING: u64 = 3;
const GEN_MASK: u32 = 0x1FFF;

fn opts() -> Options {
    Options::new().liveness_interval(LIVENESS)
}

/// (slot index, lap) of a READING claim by (peer, generation & GEN_MASK), if any.
fn find_claim(name: &str, slot_size: usize, peer: usize, generation: u32) -> Option<(usize, u64)> {
    let bytes = std::fs::read(common::shm_path(name)).expect("read segment");
    (0..CAP).find_map(|i| {
        let off = OFF_SLOTS + i * slot_size;
        let w = u64::from_ne_bytes(bytes[off..off + 8].try_into().expect("8 bytes"));
        let (state, lap) = (w >> 61, (w >> 21) & ((1 << 40) - 1));
        let (p, g) = ((w >> 13) & 0xFF, (w & u64::from(GEN_MASK)) as u32);
        (state == READING && p as usize == peer && g == generation & GEN_MASK).then_some((i, lap))
    })
}

/// Creates `name` with two peer entries (the sender's and one receiver's, so every
/// receiver that attaches later reuses entry 1); returns the sender and the slot size.
fn two_entry_channel(name: &str) -> (Sender<Msg>, usize) {
    let tx = Sender::<Msg>::with_options(
        name,
        &opts()
            .capacity(CAP)
            .mode(CreateMode::CreateExclusive)
            .max_peers(2),
    )
    .expect("create");
    let slot_size = shmchan::inspect(name).expect("inspect").slot_size as usize;
    (tx, slot_size)
}

fn signal(pid: u32, sig: rustix::process::Signal) {
    let p = rustix::process::Pid::from_raw(pid as i32).expect("pid");
    rustix::process::kill_process(p, sig).expect("kill");
}

/// The peer-table entry and generation of `pid`'s receiver.
fn entry_of(name: &str, pid: u32) -> Option<(usize, u32)> {
    let info = shmchan::inspect(name).expect("inspect");
    info.peers
        .iter()
        .find(|p| p.pid == pid && p.role == "receiver")
        .map(|p| (p.index, p.generation))
}

#[test]
fn mpmc_dead_claim_is_cleared_after_its_entry_was_reused_8192_times() {
    common::run_as_child(|c: &ChildEnv| {
        assert_eq!(c.role, "spin_consumer");
        let rx = Receiver::<Msg>::with_options(&c.name, &opts()).expect("open receiver");
        let parent = rustix::process::getppid();
        let start = Instant::now();
        while !common::orphaned(parent) && start.elapsed() < 2 * MUST_FINISH {
            for _ in 0..1000 {
                if let Ok(m) = rx.try_recv() {
                    assert!(m.is_valid());
                }
            }
        }
    });
    let (guard, name) = ShmGuard::fresh("mpmc-aba");
    // Two entries: the parent's sender (0) and one receiver (1), so every receiver that
    // attaches later reuses entry 1.
    let (tx, slot_size) = two_entry_channel(&name);
    let mut rng = Rng::from_entropy();

    // 1. Catch a consumer process holding a READING claim, and kill it there.
    let mut caught = None;
    let mut attempts = 0;
    while caught.is_none() {
        attempts += 1;
        assert!(attempts <= 50, "never caught a consumer holding a claim");
        let child = common::spawn_child(TEST, "spin_consumer", &name, "");
        let pid = child.pid();
        common::wait_until("the consumer's attach", MUST_FINISH, || {
            entry_of(&name, pid).is_some()
        });
        let (peer, generation) = entry_of(&name, pid).expect("entry");
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    match tx.try_send(Msg::new(1, seq)) {
                        Ok(()) => seq += 1,
                        Err(TrySendError::Full(_)) => std::thread::yield_now(),
                        Err(TrySendError::Disconnected(_)) => panic!("Disconnected"),
                    }
                }
            })
        };
        let mut found = None;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_micros(rng.range(100, 2000)));
            signal(pid, rustix::process::Signal::STOP);
            common::wait_until("the consumer to stop", MUST_FINISH, || {
                common::all_stopped(pid)
            });
            found = find_claim(&name, slot_size, peer, generation);
            if found.is_some() {
                break;
            }
            signal(pid, rustix::process::Signal::CONT);
        }
        // Nothing may come round to the claimed slot and clear the claim before the
        // entry has been reused: stop producing, then kill the (stopped) consumer.
        stop.store(true, Ordering::Relaxed);
        producer.join().expect("producer");
        child.kill();
        caught = found.map(|at| (peer, generation, at));
    }
    let (peer, dead_gen, (slot, lap)) = caught.expect("caught");
    assert_eq!(
        find_claim(&name, slot_size, peer, dead_gen),
        Some((slot, lap))
    );

    // 2. Receivers attach and leave (a monitoring tool, short-lived workers...); each
    //    reuses entry `peer` with the next generation. Keep the one whose generation
    //    has the dead claim's low 13 bits.
    let me = std::process::id();
    let start = Instant::now();
    let mut churned = 0u32;
    let rx = loop {
        let rx = Receiver::<Msg>::with_options(&name, &opts()).expect("attach");
        churned += 1;
        let (index, generation) = entry_of(&name, me).expect("own entry");
        assert_eq!(index, peer);
        if generation & GEN_MASK == dead_gen & GEN_MASK {
            break rx;
        }
        drop(rx);
        assert!(churned <= 2 * (GEN_MASK + 1), "generation never came round");
        assert!(start.elapsed() < MUST_FINISH, "churn too slow");
    };
    // Nothing has come round to the dead claim yet. (An attach that clears the stale
    // claims naming its entry would have removed it: that is a fix, not a failure.)
    let still_there = find_claim(&name, slot_size, peer, dead_gen).is_some();

    // 3. Traffic resumes with a live receiver that drains everything. The producer
    //    must get past the dead consumer's slot within a few liveness intervals.
    let mut seq = 1 << 32;
    for i in 0..4 * CAP {
        // Everything that can be received is received first: the ring is never full
        // of messages, only blocked by the claim.
        while rx.try_recv().is_ok() {}
        let sent_at = Instant::now();
        match tx.send_timeout(Msg::new(2, seq), PROMPTLY) {
            Ok(()) => seq += 1,
            Err(SendTimeoutError::Timeout(_)) => {
                let wedged = find_claim(&name, slot_size, peer, dead_gen);
                let len = rx.len();
                // Show that it is the stale claim: once the unrelated receiver leaves
                // and another takes the entry, the claim is cleared and the channel
                // flows again.
                drop(rx);
                let rx2 = Receiver::<Msg>::with_options(&name, &opts()).expect("attach");
                let after = tx.send_timeout(Msg::new(2, seq), PROMPTLY);
                let cleared = find_claim(&name, slot_size, peer, dead_gen).is_none();
                drop((rx2, tx));
                drop(guard);
                common::assert_shm_gone(&[&name]);
                panic!(
                    "send {i} wedged for {:?} on a ring its live receiver had drained \
                     (len {len}): the dead consumer's READING claim (slot {slot}, lap {lap}, \
                     peer {peer}, generation {dead_gen}) is still there ({wedged:?}), taken \
                     for that of the entry's live holder after {churned} re-attaches \
                     (generation bits {:#x}); once that receiver left and another took the \
                     entry, the send gave {after:?} and the claim was cleared: {cleared}",
                    sent_at.elapsed(),
                    dead_gen & GEN_MASK
                );
            }
            Err(SendTimeoutError::Disconnected(_)) => panic!("Disconnected"),
        }
    }
    assert_eq!(find_claim(&name, slot_size, peer, dead_gen), None);
    println!(
        "caught a READING claim in {attempts} consumer(s); {churned} re-attaches; the \
         dead claim was {} cleared",
        if still_there { "then" } else { "already" }
    );
    drop((rx, tx));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

const FENCE_TEST: &str = "mpmc_live_claimant_in_another_pid_namespace_is_never_fenced";

/// Host pid of the only child of `pid` (the test binary `unshare` forked).
fn only_child(pid: u32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Issue 11, defect 6: a claimant is fenced (its claim cleared and the slot handed to
/// someone else) only once its process is gone, so its late stores can never reach a
/// message another claimant owns. A consumer in another PID namespace (its own /proc,
/// as in a container) is caught holding a READING claim and kept stopped for many
/// liveness intervals while the producer, blocked behind that claim, looks for dead
/// claimants: the claim must stay. The pid-based table took that consumer for dead and
/// handed its message to the next consumer while the stopped one still held it.
#[test]
fn mpmc_live_claimant_in_another_pid_namespace_is_never_fenced() {
    common::run_as_child(|c: &ChildEnv| {
        let rx = Receiver::<Msg>::with_options(&c.name, &opts()).expect("open receiver");
        let start = Instant::now();
        while start.elapsed() < 2 * MUST_FINISH {
            for _ in 0..1000 {
                if let Ok(m) = rx.try_recv() {
                    assert!(m.is_valid());
                }
            }
        }
    });
    if !common::can_unshare_pid() {
        println!("SKIPPED: `unshare --pid --fork --mount-proc` is not available here");
        return;
    }
    let (guard, name) = ShmGuard::fresh("mpmc-fence");
    let (tx, slot_size) = two_entry_channel(&name);
    let mut rng = Rng::from_entropy();
    // A consumer of an earlier attempt may still be listed: only a live one counts.
    let live_receiver = || {
        shmchan::inspect(&name)
            .ok()?
            .peers
            .into_iter()
            .find(|p| p.role == "receiver" && p.alive)
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        assert!(attempts <= 20, "never caught the consumer holding a claim");
        let child = common::spawn_child_under(
            &["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"],
            FENCE_TEST,
            "ns_consumer",
            &name,
            "",
        );
        let mut pid = None;
        common::wait_until("the consumer's attach", MUST_FINISH, || {
            pid = only_child(child.pid());
            pid.is_some() && live_receiver().is_some()
        });
        let pid = pid.expect("pid");
        let consumer = live_receiver().expect("receiver entry");
        let stop = Arc::new(AtomicBool::new(false));
        let producer = {
            let (tx, stop) = (tx.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seq = 0;
                while !stop.load(Ordering::Relaxed) {
                    match tx.try_send(Msg::new(1, seq)) {
                        Ok(()) => seq += 1,
                        Err(TrySendError::Full(_)) => std::thread::yield_now(),
                        Err(TrySendError::Disconnected(_)) => panic!("Disconnected"),
                    }
                }
                seq
            })
        };
        let mut found = None;
        for _ in 0..200 {
            std::thread::sleep(Duration::from_micros(rng.range(100, 2000)));
            signal(pid, rustix::process::Signal::STOP);
            common::wait_until("the consumer to stop", MUST_FINISH, || {
                common::all_stopped(pid)
            });
            found = find_claim(&name, slot_size, consumer.index, consumer.generation);
            if found.is_some() {
                break;
            }
            signal(pid, rustix::process::Signal::CONT);
        }
        stop.store(true, Ordering::Relaxed);
        let mut seq = producer.join().expect("producer");
        let Some(claim) = found else {
            // Let the last consumer go completely before the next one attaches (the
            // table has one receiver entry).
            drop(child);
            common::wait_until("the last consumer's exit", MUST_FINISH, || {
                live_receiver().is_none()
            });
            continue;
        };
        // Stopped with a claim: fill the ring, then keep sending, which blocks behind
        // the claim and probes its claimant every liveness interval.
        let t = Instant::now();
        while t.elapsed() < 20 * LIVENESS {
            match tx.send_timeout(Msg::new(1, seq), LIVENESS) {
                Ok(()) => seq += 1,
                Err(SendTimeoutError::Timeout(_)) => {}
                Err(SendTimeoutError::Disconnected(_)) => {
                    panic!("a stopped consumer was taken for gone")
                }
            }
        }
        assert_eq!(
            find_claim(&name, slot_size, consumer.index, consumer.generation),
            Some(claim),
            "the live consumer's claim was cleared while it was stopped"
        );
        let info = shmchan::inspect(&name).expect("inspect");
        assert!(
            info.peers
                .iter()
                .any(|p| p.index == consumer.index && p.alive),
            "{:?}",
            info.peers
        );
        // Once it runs again, it finishes its claim and the ring flows.
        signal(pid, rustix::process::Signal::CONT);
        common::wait_until("the claim to be released", MUST_FINISH, || {
            find_claim(&name, slot_size, consumer.index, consumer.generation) != Some(claim)
        });
        tx.send_timeout(Msg::new(1, seq), MUST_FINISH)
            .expect("send after the consumer resumed");
        child.kill();
        break;
    }
    drop(tx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}
