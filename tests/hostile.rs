//! A hostile writer: while the channel is in use, another process (the "scribbler")
//! writes garbage over the ring's positions (`tail` at offset 128, `head` at 256), the
//! wait words (384, 512), and the slots from offset 4096: their sequence words (with
//! random and with plausible values), payloads, and (byte channels) length words.
//!
//! The segment is never trusted, so every process must survive: messages may be
//! garbage, the ring may look empty or full or stall, but no call crashes, hangs past
//! its timeout, or reports more than `capacity` messages. Only non-blocking calls and
//! short timeouts are used, for a bounded time.
//!
//! The header's config line and peer table are left alone: scribbling there makes
//! re-attaching fail with an error (checked in `attach_errors.rs`), not a crash.

mod common;

use common::{ChildEnv, MUST_FINISH, Msg, PROMPTLY, Rng, ShmGuard};
use shmchan::{
    ByteReceiver, ByteSendError, ByteSender, CreateMode, OpenError, Options, Receiver,
    RecvTimeoutError, SendTimeoutError, Sender, TryRecvError, TrySendError, Zeroable,
};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Capacity of the channels under attack.
const CAP: usize = 64;
/// Bytes per slot of an SPSC `Msg` channel: u32 sequence word, padded to the message's
/// 8-byte alignment, then the 40-byte message: 48, rounded to a power of two so that
/// no slot straddles a cache line (see `Geometry` in src/layout.rs).
const MSG_SLOT_SIZE: usize = 64;
/// Longest message of the byte channel under attack.
const MAX_LEN: usize = 61;
/// Bytes per slot of that byte channel: u32 sequence word, u32 length, 61 bytes (69),
/// rounded up to whole cache lines.
const BYTE_SLOT_SIZE: usize = 128;
/// How long each side works under attack.
const ATTACK: Duration = Duration::from_millis(1500);
/// Offsets in the header (src/layout.rs).
const OFF_TAIL: usize = 128;
const OFF_HEAD: usize = 256;
const OFF_NOT_EMPTY: usize = 384;
const OFF_NOT_FULL: usize = 512;
const OFF_SLOTS: usize = 4096;

fn options() -> Options {
    Options::new().liveness_interval(common::LIVENESS)
}

fn create_options() -> Options {
    // keep(true): handles are dropped and re-attached under attack; the test removes
    // the name at the end.
    options()
        .capacity(CAP)
        .mode(CreateMode::CreateExclusive)
        .keep(true)
}

/// Re-attaches with `open`, retrying briefly: the peer may be re-attaching too.
fn reattach<H>(what: &str, mut open: impl FnMut() -> Result<H, OpenError>) -> H {
    let start = Instant::now();
    loop {
        match open() {
            Ok(h) => return h,
            Err(e) => {
                assert!(
                    start.elapsed() < MUST_FINISH,
                    "cannot re-attach {what}: {e:?}"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

/// The scribbler: maps the object itself and writes garbage until killed. Slots are
/// `slot_size` bytes; with `len_words`, the second u32 of each slot is a byte
/// message's length, and gets extra attention. Without `positions`, `head` and `tail`
/// are left alone, so that honest traffic keeps flowing through scribbled slots.
fn scribble(name: &str, slot_size: usize, len_words: bool, positions: bool) -> ! {
    // The slot geometry assumed here is the one the library computed.
    let info = shmchan::inspect(name).expect("inspect");
    assert_eq!(
        (info.capacity, info.slot_size),
        (CAP as u64, slot_size as u64)
    );
    let map = common::ObjectMap::open(name);
    let len = map.len();
    assert!(len >= OFF_SLOTS + CAP * slot_size, "object of {len} bytes");
    let word64 = |off: usize| map.u64_at(off);
    let word32 = |off: usize| map.u32_at(off);
    let mut rng = Rng::from_entropy();
    let parent = rustix::process::getppid();
    let start = Instant::now();
    loop {
        for _ in 0..rng.range(1, 64) {
            let r = rng.next_u64();
            let head = word64(OFF_HEAD).load(Ordering::Relaxed);
            let tail = word64(OFF_TAIL).load(Ordering::Relaxed);
            let slot = rng.range(0, CAP as u64) as usize;
            let slot_off = OFF_SLOTS + slot * slot_size;
            let what = if positions {
                rng.next_u64() % 14
            } else {
                4 + rng.next_u64() % 10
            };
            match what {
                // Random positions.
                0 => word64(OFF_TAIL).store(r, Ordering::Relaxed),
                1 => word64(OFF_HEAD).store(r, Ordering::Relaxed),
                // Plausible positions: near each other, ahead, behind, a lap apart.
                2 => word64(OFF_TAIL).store(
                    head.wrapping_add(rng.range(0, 3 * CAP as u64)),
                    Ordering::Relaxed,
                ),
                3 => word64(OFF_HEAD).store(
                    tail.wrapping_sub(rng.range(0, 3 * CAP as u64)),
                    Ordering::Relaxed,
                ),
                // Wait words and sleeper counts.
                4 => word64(OFF_NOT_EMPTY).store(r, Ordering::Relaxed),
                5 => word64(OFF_NOT_FULL).store(r, Ordering::Relaxed),
                // Sequence words: random, or "published" for a position nearby.
                6 => word32(slot_off).store(r as u32, Ordering::Relaxed),
                7 | 8 => {
                    let pos = head.wrapping_add(rng.range(0, 2 * CAP as u64));
                    let off = OFF_SLOTS + (pos % CAP as u64) as usize * slot_size;
                    word32(off).store(pos.wrapping_add(1) as u32, Ordering::Relaxed);
                }
                // Length words: huge, just past the limit, or anything.
                9 | 10 if len_words => {
                    let bad = [u32::MAX, MAX_LEN as u32 + 1, 1 << 31, r as u32];
                    word32(slot_off + 4).store(bad[(r % 4) as usize], Ordering::Relaxed);
                }
                // Payload bytes (and whatever follows the sequence word).
                _ => {
                    let off = slot_off + 4 * rng.range(1, slot_size as u64 / 4) as usize;
                    word32(off).store(r as u32, Ordering::Relaxed);
                }
            }
        }
        std::thread::yield_now();
        if common::orphaned(parent) || start.elapsed() > Duration::from_secs(120) {
            std::process::exit(0);
        }
    }
}

/// Roles the children of this file play.
fn child_roles(c: &ChildEnv) {
    match c.role.as_str() {
        "scribbler" => scribble(&c.name, MSG_SLOT_SIZE, false, true),
        "byte_scribbler" => scribble(&c.name, BYTE_SLOT_SIZE, true, false),
        // Sends honest byte messages of every length until killed.
        "honest_byte_producer" => {
            let parent = rustix::process::getppid();
            let tx = reattach("byte sender", || {
                ByteSender::with_options(&c.name, &options(), 0)
            });
            assert_eq!(tx.max_len(), MAX_LEN);
            let msg: Vec<u8> = (0..MAX_LEN as u8).collect();
            let mut i = 0usize;
            while !common::orphaned(parent) {
                assert!(tx.len() <= CAP);
                match tx.try_send(&msg[..i % (MAX_LEN + 1)]) {
                    Ok(()) => i += 1,
                    Err(ByteSendError::Full) => std::thread::yield_now(),
                    Err(e) => panic!("byte send: {e:?}"),
                }
            }
        }
        // Sends honest messages until killed, re-attaching now and then.
        "honest_producer" => {
            let mut rng = Rng::from_entropy();
            let parent = rustix::process::getppid();
            let mut tx = reattach("sender", || {
                Sender::<Msg>::with_options(&c.name, &options())
            });
            let mut seq = 0u64;
            while !common::orphaned(parent) {
                assert!(tx.len() <= CAP, "len {} > capacity", tx.len());
                match rng.next_u64() % 64 {
                    0 => {
                        drop(tx);
                        tx = reattach("sender", || {
                            Sender::<Msg>::with_options(&c.name, &options())
                        });
                    }
                    1..=20 => {
                        let t = Instant::now();
                        let _ = tx.send_timeout(Msg::new(1, seq), Duration::from_millis(1));
                        assert!(t.elapsed() < PROMPTLY, "send_timeout(1ms) hung");
                    }
                    _ => match tx.try_send(Msg::new(1, seq)) {
                        Ok(()) => seq += 1,
                        Err(TrySendError::Full(_)) => std::thread::yield_now(),
                        Err(TrySendError::Disconnected(_)) => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    },
                }
            }
        }
        // Receives until killed, re-attaching now and then.
        "honest_consumer" => {
            let mut rng = Rng::from_entropy();
            let parent = rustix::process::getppid();
            let mut rx = reattach("receiver", || {
                Receiver::<Msg>::with_options(&c.name, &options())
            });
            while !common::orphaned(parent) {
                assert!(rx.len() <= CAP, "len {} > capacity", rx.len());
                match rng.next_u64() % 64 {
                    0 => {
                        drop(rx);
                        rx = reattach("receiver", || {
                            Receiver::<Msg>::with_options(&c.name, &options())
                        });
                    }
                    1..=20 => {
                        let t = Instant::now();
                        let _ = rx.recv_timeout(Duration::from_millis(1));
                        assert!(t.elapsed() < PROMPTLY, "recv_timeout(1ms) hung");
                    }
                    _ => match rx.try_recv() {
                        Ok(m) => {
                            std::hint::black_box(m.is_valid());
                        }
                        Err(TryRecvError::Empty) => std::thread::yield_now(),
                        Err(TryRecvError::Disconnected) => {
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    },
                }
            }
        }
        other => panic!("unknown role {other}"),
    }
}

/// Counts of what the side under attack saw.
#[derive(Debug, Default)]
struct Tally {
    ok: u64,
    whole: u64,
    empty_or_full: u64,
    disconnected: u64,
    timeouts: u64,
    reattached: u64,
}

#[test]
fn receiver_survives_a_scribbled_segment() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("hostile-rx");
    let mut rx = Receiver::<Msg>::with_options(&name, &create_options()).expect("create");
    let test = "receiver_survives_a_scribbled_segment";
    let producer = common::spawn_child(test, "honest_producer", &name, "");
    let scribbler = common::spawn_child(test, "scribbler", &name, "");
    let mut rng = Rng::from_entropy();
    let mut tally = Tally::default();
    let mut buf = vec![Msg::zeroed(); 2 * CAP];
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < ATTACK && iterations < 5_000_000 {
        iterations += 1;
        assert!(rx.len() <= CAP, "len {} > capacity {CAP}", rx.len());
        let _ = (rx.is_empty(), rx.is_full(), rx.is_disconnected());
        let seen = |r: Result<Msg, TryRecvError>, tally: &mut Tally| match r {
            Ok(m) => {
                tally.ok += 1;
                tally.whole += u64::from(m.is_valid());
            }
            Err(TryRecvError::Empty) => tally.empty_or_full += 1,
            Err(TryRecvError::Disconnected) => tally.disconnected += 1,
        };
        match rng.next_u64() % 100 {
            0 => {
                drop(rx);
                rx = reattach("receiver", || {
                    Receiver::<Msg>::with_options(&name, &options())
                });
                tally.reattached += 1;
            }
            1..=5 => {
                let t = Instant::now();
                match rx.recv_timeout(Duration::from_millis(1)) {
                    Ok(m) => seen(Ok(m), &mut tally),
                    Err(RecvTimeoutError::Timeout) => tally.timeouts += 1,
                    Err(RecvTimeoutError::Disconnected) => tally.disconnected += 1,
                }
                assert!(
                    t.elapsed() < PROMPTLY,
                    "recv_timeout(1ms) took {:?}",
                    t.elapsed()
                );
            }
            6..=20 => {
                // A buffer larger than the ring: garbage sequence words must not make
                // the batch read outside the slots.
                let n = rng.range(1, buf.len() as u64 + 1) as usize;
                match rx.try_recv_batch(&mut buf[..n]) {
                    Ok(k) => {
                        // (At least one only holds for an honest segment: the
                        // scribbler may unpublish the head slot between two looks.)
                        assert!(k <= n, "received {k} into a buffer of {n}");
                        for m in &buf[..k] {
                            seen(Ok(*m), &mut tally);
                        }
                    }
                    Err(e) => seen(Err(e), &mut tally),
                }
            }
            21..=35 => {
                let r = rx.try_recv_ref().map(|m| *m);
                seen(r, &mut tally);
            }
            _ => {
                let r = rx.try_recv();
                seen(r, &mut tally);
            }
        }
    }
    // Both children must still be alive: a crash would show here.
    scribbler.kill();
    producer.kill();
    println!("receiver under attack: {iterations} iterations, {tally:?}");
    // With the scribbling over, the process still works the channel without harm.
    for _ in 0..1000 {
        let _ = rx.try_recv();
        assert!(rx.len() <= CAP);
    }
    drop(rx);
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn sender_survives_a_scribbled_segment() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("hostile-tx");
    let mut tx = Sender::<Msg>::with_options(&name, &create_options()).expect("create");
    let test = "sender_survives_a_scribbled_segment";
    let consumer = common::spawn_child(test, "honest_consumer", &name, "");
    let scribbler = common::spawn_child(test, "scribbler", &name, "");
    let mut rng = Rng::from_entropy();
    let mut tally = Tally::default();
    let batch: Vec<Msg> = (0..2 * CAP as u64).map(|s| Msg::new(2, s)).collect();
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < ATTACK && iterations < 5_000_000 {
        iterations += 1;
        assert!(tx.len() <= CAP, "len {} > capacity {CAP}", tx.len());
        let _ = (tx.is_empty(), tx.is_full(), tx.is_disconnected());
        let msg = Msg::new(2, iterations);
        match rng.next_u64() % 100 {
            0 => {
                drop(tx);
                tx = reattach("sender", || Sender::<Msg>::with_options(&name, &options()));
                tally.reattached += 1;
            }
            1..=5 => {
                let t = Instant::now();
                match tx.send_timeout(msg, Duration::from_millis(1)) {
                    Ok(()) => tally.ok += 1,
                    Err(SendTimeoutError::Timeout(_)) => tally.timeouts += 1,
                    Err(SendTimeoutError::Disconnected(_)) => tally.disconnected += 1,
                }
                assert!(
                    t.elapsed() < PROMPTLY,
                    "send_timeout(1ms) took {:?}",
                    t.elapsed()
                );
            }
            6..=20 => {
                let n = rng.range(1, batch.len() as u64 + 1) as usize;
                match tx.try_send_batch(&batch[..n]) {
                    Ok(k) => {
                        assert!(k >= 1 && k <= n.min(CAP), "sent {k} of {n}");
                        tally.ok += k as u64;
                    }
                    Err(TrySendError::Full(())) => tally.empty_or_full += 1,
                    Err(TrySendError::Disconnected(())) => tally.disconnected += 1,
                }
            }
            21..=35 => match tx.try_loan() {
                Ok(mut slot) => {
                    *slot = msg;
                    slot.commit();
                    tally.ok += 1;
                }
                Err(TrySendError::Full(())) => tally.empty_or_full += 1,
                Err(TrySendError::Disconnected(())) => tally.disconnected += 1,
            },
            _ => match tx.try_send(msg) {
                Ok(()) => tally.ok += 1,
                Err(TrySendError::Full(_)) => tally.empty_or_full += 1,
                Err(TrySendError::Disconnected(_)) => tally.disconnected += 1,
            },
        }
    }
    scribbler.kill();
    consumer.kill();
    println!("sender under attack: {iterations} iterations, {tally:?}");
    for i in 0..1000 {
        let _ = tx.try_send(Msg::new(2, i));
        assert!(tx.len() <= CAP);
    }
    drop(tx);
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn both_ends_in_one_process_survive_a_scribbled_segment() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("hostile-both");
    let mut tx = Sender::<Msg>::with_options(&name, &create_options()).expect("create");
    let mut rx = Receiver::<Msg>::with_options(&name, &options()).expect("open");
    let scribbler = common::spawn_child(
        "both_ends_in_one_process_survive_a_scribbled_segment",
        "scribbler",
        &name,
        "",
    );
    let mut rng = Rng::from_entropy();
    let (mut sent, mut received, mut whole) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < ATTACK / 2 && iterations < 5_000_000 {
        iterations += 1;
        assert!(tx.len() <= CAP && rx.len() <= CAP);
        match rng.next_u64() % 50 {
            // Attach over garbage positions: the producer's recovery scan and the
            // consumer's start position must stay inside the ring.
            0 => {
                drop(tx);
                tx = reattach("sender", || Sender::<Msg>::with_options(&name, &options()));
            }
            1 => {
                drop(rx);
                rx = reattach("receiver", || {
                    Receiver::<Msg>::with_options(&name, &options())
                });
            }
            2..=25 => sent += u64::from(tx.try_send(Msg::new(3, sent)).is_ok()),
            _ => {
                if let Ok(m) = rx.try_recv() {
                    received += 1;
                    whole += u64::from(m.is_valid());
                }
            }
        }
    }
    scribbler.kill();
    println!(
        "both ends: {iterations} iterations, sent {sent}, received {received} ({whole} whole)"
    );
    drop((tx, rx));
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn byte_receiver_clamps_scribbled_lengths() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("hostile-bytes");
    let mut rx = ByteReceiver::with_options(&name, &create_options(), MAX_LEN).expect("create");
    assert_eq!(rx.max_len(), MAX_LEN);
    let test = "byte_receiver_clamps_scribbled_lengths";
    let producer = common::spawn_child(test, "honest_byte_producer", &name, "");
    let scribbler = common::spawn_child(test, "byte_scribbler", &name, "");
    let mut rng = Rng::from_entropy();
    let mut buf = Vec::new();
    let (mut received, mut longest) = (0u64, 0usize);
    let start = Instant::now();
    let mut iterations = 0u64;
    while start.elapsed() < ATTACK && iterations < 5_000_000 {
        iterations += 1;
        assert!(rx.len() <= CAP, "len {} > capacity {CAP}", rx.len());
        let len = match rng.next_u64() % 4 {
            0 => rx.try_recv_into(&mut buf).ok(),
            1 => rx.try_recv().ok().map(|v| v.len()),
            2 => rx.try_recv_ref().ok().map(|m| {
                // Touch every byte the receiver hands out: all inside the slot.
                std::hint::black_box(m.iter().map(|&b| u64::from(b)).sum::<u64>());
                m.len()
            }),
            _ => rx
                .recv_timeout(Duration::from_millis(1))
                .ok()
                .map(|v| v.len()),
        };
        if let Some(len) = len {
            assert!(
                len <= MAX_LEN,
                "a {len}-byte message from a channel of {MAX_LEN}"
            );
            received += 1;
            longest = longest.max(len);
        }
    }
    scribbler.kill();
    producer.kill();
    println!("byte receiver: {iterations} iterations, {received} messages, longest {longest}");
    drop(rx);
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}
