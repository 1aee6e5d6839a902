//! A broadcast channel whose segment another process scribbles on: the tail and floor
//! lines, the subscribers' cursor lines (positions, owners, miss counts), slot sequence
//! words, payloads, wait words and peer entries get random or plausible values while a
//! publisher and two subscribers in this process keep working with zero or short
//! timeouts. Every call must return a documented result (garbage values are allowed),
//! `len()` stays within the capacity, nothing reads or writes outside the mapping (a
//! crash would end the test), and nothing blocks past its timeout.

mod common;

use common::{ChildEnv, LIVENESS, Msg, PROMPTLY, Rng, ShmGuard};
use shmchan::broadcast::{
    Policy, Publisher, RecvRefError, RecvTimeoutError, Subscriber, TryRecvError,
};
use shmchan::{CreateMode, OpenError, Options, TrySendError};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const CAP: usize = 16;
const SUBS: u32 = 2;
/// Header lines: tail, floor (head), wait words; the peer table; the cursor lines.
const OFF_TAIL: usize = 128;
const OFF_FLOOR: usize = 256;
const OFF_NOT_EMPTY: usize = 384;
const OFF_NOT_FULL: usize = 512;
const OFF_PEERS: usize = 1024;
const OFF_CURSORS: usize = 4096;
/// Slots start after the cursor lines, padded to a page.
const OFF_SLOTS: usize = 8192;
const ATTACK: Duration = Duration::from_secs(2);

fn scribble(name: &str) -> ! {
    let info = shmchan::inspect(name).expect("inspect");
    let slot_size = info.slot_size as usize;
    let map = common::ObjectMap::open(name);
    let len = map.len();
    assert!(len >= OFF_SLOTS + CAP * slot_size, "object of {len} bytes");
    let word = |off: usize| map.u64_at(off);
    let mut rng = Rng::from_entropy();
    let parent = rustix::process::getppid();
    let start = Instant::now();
    loop {
        for _ in 0..rng.range(1, 32) {
            let r = rng.next_u64();
            let tail = word(OFF_TAIL).load(Ordering::Relaxed);
            let near = tail
                .wrapping_add(rng.range(0, 4 * CAP as u64))
                .wrapping_sub(2 * CAP as u64);
            let slot_off = OFF_SLOTS + rng.range(0, CAP as u64) as usize * slot_size;
            let cursor = OFF_CURSORS + 128 * rng.range(0, u64::from(SUBS)) as usize;
            match rng.next_u64() % 16 {
                0 => word(OFF_TAIL).store(r, Ordering::Relaxed),
                1 => word(OFF_TAIL).store(near, Ordering::Relaxed),
                2 => word(OFF_FLOOR).store(if r % 2 == 0 { r } else { near }, Ordering::Relaxed),
                // Cursor positions, owners (a live one's, zero, garbage), miss counts.
                3 => word(cursor).store(if r % 2 == 0 { r } else { near }, Ordering::Relaxed),
                4 => word(cursor + 8).store(r % 4, Ordering::Relaxed),
                5 => word(cursor + 16).store(r, Ordering::Relaxed),
                // Sequence words: garbage, or "published"/"being written" for a
                // position nearby (a later lap, an earlier one).
                6 => word(slot_off).store(r, Ordering::Relaxed),
                7 | 8 => {
                    let pos = near;
                    let off = OFF_SLOTS + (pos % CAP as u64) as usize * slot_size;
                    let seq = pos.wrapping_mul(2).wrapping_add(1 + r % 2);
                    word(off).store(seq, Ordering::Relaxed);
                }
                // Wait words and sleeper counts.
                9 => word(OFF_NOT_EMPTY).store(r, Ordering::Relaxed),
                10 => word(OFF_NOT_FULL).store(r, Ordering::Relaxed),
                // Peer entries' states.
                11 => word(OFF_PEERS + 16 * rng.range(0, u64::from(SUBS) + 1) as usize)
                    .store(r, Ordering::Relaxed),
                // Payload words.
                _ => {
                    let off = slot_off + 8 * rng.range(1, slot_size as u64 / 8) as usize;
                    word(off).store(r, Ordering::Relaxed);
                }
            }
        }
        std::thread::yield_now();
        if common::orphaned(parent) || start.elapsed() > Duration::from_secs(120) {
            std::process::exit(0);
        }
    }
}

fn child_roles(c: &ChildEnv) {
    match c.role.as_str() {
        "scribbler" => scribble(&c.name),
        other => panic!("unknown role {other}"),
    }
}

#[derive(Debug, Default)]
struct Tally {
    sent: u64,
    full: u64,
    got: u64,
    whole: u64,
    empty: u64,
    lagged: u64,
    disconnected: u64,
    timeouts: u64,
    reattached: u64,
}

/// Re-attaches after a drop; the scribbled peer table may refuse for a while.
fn reattach<H>(mut open: impl FnMut() -> Result<H, OpenError>) -> Option<H> {
    let t = Instant::now();
    while t.elapsed() < PROMPTLY {
        match open() {
            Ok(h) => return Some(h),
            Err(
                OpenError::RoleTaken { .. } | OpenError::TooManyPeers(_) | OpenError::Corrupt(_),
            ) => std::thread::sleep(Duration::from_millis(1)),
            Err(e) => panic!("re-attach: {e}"),
        }
    }
    None
}

fn attack(policy: Policy, test: &str) {
    let (guard, name) = ShmGuard::fresh("bcast-hostile");
    let opts = Options::new()
        .capacity(CAP)
        .subscribers(SUBS)
        .policy(policy)
        .mode(CreateMode::CreateExclusive)
        // The publisher is dropped and re-attached: keep the name until the end.
        .keep(true)
        .liveness_interval(LIVENESS);
    let mut tx = Some(Publisher::<Msg>::with_options(&name, &opts).expect("create"));
    let sub =
        || Subscriber::<Msg>::with_options(&name, &Options::new().liveness_interval(LIVENESS));
    let mut subs: Vec<Option<Subscriber<Msg>>> =
        vec![Some(sub().expect("a")), Some(sub().expect("b"))];
    let scribbler = common::spawn_child(test, "scribbler", &name, "");
    let mut rng = Rng::from_entropy();
    let mut t = Tally::default();
    let mut seq = 0u64;
    let mut buf = vec![Msg::new(0, 0); 2 * CAP];
    let start = Instant::now();
    while start.elapsed() < ATTACK {
        let i = rng.range(0, subs.len() as u64) as usize;
        if let Some(s) = &subs[i] {
            assert!(s.len() <= CAP, "len {} > capacity {CAP}", s.len());
            let _ = (s.is_empty(), s.is_disconnected(), s.position());
        }
        let seen = |r: Result<Msg, TryRecvError>, t: &mut Tally| match r {
            Ok(m) => {
                t.got += 1;
                t.whole += u64::from(m.is_valid());
            }
            Err(TryRecvError::Empty) => t.empty += 1,
            Err(TryRecvError::Lagged(_)) => t.lagged += 1,
            Err(TryRecvError::Disconnected) => t.disconnected += 1,
        };
        match rng.next_u64() % 100 {
            0 => {
                drop(subs[i].take());
                subs[i] = reattach(sub);
                t.reattached += 1;
            }
            1 => {
                drop(tx.take());
                tx = reattach(|| Publisher::<Msg>::with_options(&name, &Options::new()));
                t.reattached += 1;
            }
            2..=30 => {
                let Some(p) = &tx else { continue };
                if rng.next_u64() % 4 == 0 {
                    let n = rng.range(1, 2 * CAP as u64 + 1) as usize;
                    let msgs: Vec<Msg> = (0..n as u64).map(|k| Msg::new(1, seq + k)).collect();
                    match p.try_send_batch(&msgs) {
                        Ok(k) => {
                            assert!((1..=n).contains(&k));
                            seq += k as u64;
                            t.sent += k as u64;
                        }
                        Err(TrySendError::Full(())) => t.full += 1,
                        Err(e) => panic!("{e:?}"),
                    }
                } else {
                    match p.try_send(Msg::new(1, seq)) {
                        Ok(()) => {
                            seq += 1;
                            t.sent += 1;
                        }
                        Err(TrySendError::Full(m)) => {
                            assert_eq!(m, Msg::new(1, seq), "a refused message comes back intact");
                            t.full += 1;
                        }
                        Err(e) => panic!("{e:?}"),
                    }
                }
            }
            31..=35 => {
                let Some(s) = &subs[i] else { continue };
                let t0 = Instant::now();
                match s.recv_timeout(Duration::from_millis(1)) {
                    Ok(m) => seen(Ok(m), &mut t),
                    Err(RecvTimeoutError::Timeout) => t.timeouts += 1,
                    Err(RecvTimeoutError::Lagged(_)) => t.lagged += 1,
                    Err(RecvTimeoutError::Disconnected) => t.disconnected += 1,
                }
                assert!(
                    t0.elapsed() < PROMPTLY,
                    "recv_timeout(1ms) took {:?}",
                    t0.elapsed()
                );
            }
            36..=50 => {
                let Some(s) = &subs[i] else { continue };
                let n = rng.range(1, buf.len() as u64 + 1) as usize;
                match s.try_recv_batch(&mut buf[..n]) {
                    Ok(k) => {
                        assert!(k <= n);
                        for m in &buf[..k] {
                            seen(Ok(*m), &mut t);
                        }
                    }
                    Err(e) => seen(Err(e), &mut t),
                }
            }
            51..=60 => {
                let Some(s) = &mut subs[i] else { continue };
                match s.try_recv_ref() {
                    Ok(m) => seen(Ok(*m), &mut t),
                    Err(RecvRefError::Overwrite) => assert_eq!(policy, Policy::Overwrite),
                    Err(RecvRefError::LagLimit) => panic!("no lag limit was set"),
                    Err(RecvRefError::Empty) => t.empty += 1,
                    Err(RecvRefError::Lagged(_)) => t.lagged += 1,
                    Err(RecvRefError::Disconnected) => t.disconnected += 1,
                }
            }
            _ => {
                let Some(s) = &subs[i] else { continue };
                seen(s.try_recv(), &mut t);
            }
        }
    }
    // The scribbler must still be alive: a crash would show here.
    scribbler.kill();
    println!("{policy:?} under attack: {t:?}");
    assert!(
        t.sent + t.full > 0 && t.got + t.empty + t.lagged > 0,
        "{t:?}"
    );
    // With the scribbling over, the handles still work the channel without harm.
    for _ in 0..1000 {
        if let Some(p) = &tx {
            let _ = p.try_send(Msg::new(2, 0));
        }
        for s in subs.iter().flatten() {
            let _ = s.try_recv();
            assert!(s.len() <= CAP);
        }
    }
    drop((tx, subs));
    let _ = shmchan::remove(&name);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn lossless_handles_survive_a_scribbled_segment() {
    common::run_as_child(child_roles);
    attack(
        Policy::Lossless,
        "lossless_handles_survive_a_scribbled_segment",
    );
}

#[test]
fn overwrite_handles_survive_a_scribbled_segment() {
    common::run_as_child(child_roles);
    attack(
        Policy::Overwrite,
        "overwrite_handles_survive_a_scribbled_segment",
    );
}
