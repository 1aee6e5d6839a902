//! Crashes: a process SIGKILLed at a random point never makes another read a torn
//! message, never loses a message whose `send` returned `Ok`, and never wedges the
//! channel; a restarted process re-attaches by name and carries on.
//!
//! Every message is a `common::Msg`, whose payload and checksum are functions of its
//! sequence number and producer tag, so a half-written message is always detected.

mod common;

use common::{ChildEnv, LIVENESS, MUST_FINISH, Msg, PROMPTLY, Rng, ShmGuard, TempDir};
use shmchan::{
    CreateMode, Options, Receiver, RecvTimeoutError, SendTimeoutError, Sender, TryRecvError,
    TrySendError,
};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Tag of a producer that gets killed.
const TAG_A: u32 = 0xA;
/// Tag of the producer that takes over.
const TAG_B: u32 = 0xB;

/// Sends message `seq` of `tag` through one of the three send paths (chosen by `rng`),
/// possibly with a few more after it; returns the next sequence number. Panics if the
/// receiver is gone (then the parent is gone and the child should end anyway).
fn send_some(tx: &mut Sender<Msg>, tag: u32, seq: u64, rng: &mut Rng) -> u64 {
    match rng.next_u64() % 3 {
        0 => {
            let batch: Vec<Msg> = (seq..seq + rng.range(1, 9))
                .map(|s| Msg::new(tag, s))
                .collect();
            match tx.try_send_batch(&batch) {
                Ok(n) => return seq + n as u64,
                Err(TrySendError::Full(())) => {}
                Err(TrySendError::Disconnected(())) => panic!("receiver gone"),
            }
        }
        1 => match tx.try_loan() {
            Ok(mut slot) => {
                let m = Msg::new(tag, seq);
                slot.seq = m.seq;
                slot.payload = m.payload;
                slot.check = m.check;
                slot.commit();
                return seq + 1;
            }
            Err(TrySendError::Full(())) => {}
            Err(TrySendError::Disconnected(())) => panic!("receiver gone"),
        },
        _ => {}
    }
    match tx.send_timeout(Msg::new(tag, seq), MUST_FINISH) {
        Ok(()) => seq + 1,
        Err(e) => panic!("send {seq}: {e:?}"),
    }
}

/// Appends `seq` to the record file `f` (8 bytes, native order).
fn record(f: &mut std::fs::File, seq: u64) {
    f.write_all(&seq.to_ne_bytes()).expect("record");
}

/// Reads a record file. A trailing partial record (a consumer killed inside `write`)
/// is dropped: that message was not released either, so the next consumer gets it.
fn read_records(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap_or_default();
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_ne_bytes(c.try_into().expect("8 bytes")))
        .collect()
}

/// Roles the children of this file play.
fn child_roles(c: &ChildEnv) {
    let opts = Options::new().liveness_interval(LIVENESS);
    match c.role.as_str() {
        // Sends TAG_A messages 0, 1, 2, ... until killed.
        "endless_producer" => {
            let mut tx = Sender::<Msg>::with_options(&c.name, &opts).expect("open sender");
            let mut rng = Rng::from_entropy();
            let mut seq = 0;
            loop {
                seq = send_some(&mut tx, TAG_A, seq, &mut rng);
            }
        }
        // Sends TAG_A messages 0..K, writes "done K" to the file, then keeps sending
        // until killed. Arg: "K path".
        "producer_then_endless" => {
            let (k, path) = c.arg.split_once(' ').expect("arg: K path");
            let k: u64 = k.parse().expect("K");
            let mut tx = Sender::<Msg>::with_options(&c.name, &opts).expect("open sender");
            let mut rng = Rng::from_entropy();
            let mut seq = 0;
            while seq < k {
                tx.send_timeout(Msg::new(TAG_A, seq), MUST_FINISH)
                    .expect("send");
                seq += 1;
            }
            // Every send of 0..K returned Ok. Write the marker atomically (rename).
            let tmp = format!("{path}.tmp");
            std::fs::write(&tmp, format!("done {k}")).expect("write marker");
            std::fs::rename(&tmp, path).expect("rename marker");
            loop {
                seq = send_some(&mut tx, TAG_A, seq, &mut rng);
            }
        }
        // Re-attaches as the sender and sends TAG_B messages 0..M, then leaves.
        "producer_finite" => {
            let mut tx = Sender::<Msg>::with_options(&c.name, &opts).expect("re-attach sender");
            let mut rng = Rng::from_entropy();
            let m = c.arg_u64();
            let mut seq = 0;
            while seq < m {
                // send_some may send a batch: never past M.
                if m - seq < 8 {
                    tx.send_timeout(Msg::new(TAG_B, seq), MUST_FINISH)
                        .expect("send");
                    seq += 1;
                } else {
                    seq = send_some(&mut tx, TAG_B, seq, &mut rng);
                }
            }
            drop(tx);
        }
        // Receives with a zero-copy borrow and records each sequence number in the
        // file *before* releasing the slot, so that a kill at any point either leaves
        // the message unreleased (the next consumer gets it) or recorded. The killable
        // variant waits to be killed once the channel is drained and disconnected.
        "recording_consumer" | "recording_consumer_killable" => {
            let mut rx = Receiver::<Msg>::with_options(&c.name, &opts).expect("open receiver");
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&c.arg)
                .expect("record file");
            let start = Instant::now();
            let mut rng = Rng::from_entropy();
            loop {
                // Non-blocking and blocking borrows alike (the parent's time limit
                // bounds a blocking one).
                let m = if rng.next_u64() % 2 == 0 {
                    match rx.try_recv_ref() {
                        Ok(m) => m,
                        Err(TryRecvError::Empty) => {
                            std::thread::sleep(Duration::from_micros(50));
                            continue;
                        }
                        Err(TryRecvError::Disconnected) => break,
                    }
                } else {
                    match rx.recv_ref() {
                        Ok(m) => m,
                        Err(_) => break,
                    }
                };
                assert!(m.is_valid(), "torn or garbage message {:?}", *m);
                record(&mut f, m.seq);
                // Dropping `m` releases the slot.
                drop(m);
                assert!(start.elapsed() < MUST_FINISH, "consumer stuck");
            }
            if c.role == "recording_consumer_killable" {
                common::sleep_until_killed();
            }
            drop(rx);
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn killed_producer_leaves_only_whole_messages_then_disconnected() {
    common::run_as_child(child_roles);
    const ROUNDS: usize = 20;
    let mut rng = Rng::from_entropy();
    let mut total = 0u64;
    let mut worst = Duration::ZERO;
    for round in 0..ROUNDS {
        let (guard, name) = ShmGuard::fresh("crash-prod");
        let cap = [1usize, 2, 16, 64, 1024][round % 5];
        let opts = Options::new()
            .capacity(cap)
            .mode(CreateMode::CreateExclusive)
            .liveness_interval(LIVENESS);
        let rx = Receiver::<Msg>::with_options(&name, &opts).expect("create");
        let mut child = Some(common::spawn_child(
            "killed_producer_leaves_only_whole_messages_then_disconnected",
            "endless_producer",
            &name,
            "",
        ));
        let mut zombie = None;
        let check = |m: &Msg, expected: u64| {
            assert!(m.is_valid(), "round {round}: torn or garbage message {m:?}");
            assert_eq!(m.tag(), TAG_A);
            assert_eq!(
                m.seq, expected,
                "round {round}: lost, duplicated or reordered"
            );
        };
        // Start the clock once the producer is attached and streaming.
        let first =
            common::poll_with_child(child.as_mut().expect("child"), "the first message", || {
                rx.recv_timeout(Duration::from_millis(10)).ok()
            });
        check(&first, 0);
        let mut next = 1u64;
        let kill_at = Instant::now() + Duration::from_millis(rng.range(5, 50));
        let mut killed_at = None;
        let disconnected_at = loop {
            if let Some(mut c) = child.take_if(|_| Instant::now() >= kill_at) {
                killed_at = Some(Instant::now());
                c.kill_no_reap();
                if round % 2 == 0 {
                    c.reap_killed();
                } else {
                    // Half the rounds leave the dead producer a zombie until the end.
                    zombie = Some(c);
                }
            }
            match rx.recv_timeout(Duration::from_millis(1)) {
                Ok(m) => {
                    check(&m, next);
                    next += 1;
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Instant::now(),
            }
            if let Some(k) = killed_at {
                assert!(
                    k.elapsed() < MUST_FINISH,
                    "round {round}: no Disconnected after the producer was killed"
                );
            }
        };
        let killed_at = killed_at.expect("Disconnected before the producer was killed");
        let latency = disconnected_at.saturating_duration_since(killed_at);
        assert!(
            latency < PROMPTLY,
            "round {round}: Disconnected {latency:?} after the kill"
        );
        worst = worst.max(latency);
        // Nothing after Disconnected.
        assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
        if let Some(z) = zombie {
            z.reap_killed();
        }
        total += next;
        drop(rx);
        drop(guard);
        common::assert_shm_gone(&[&name]);
    }
    println!("{ROUNDS} rounds, {total} whole messages, worst kill -> Disconnected {worst:?}");
}

#[test]
fn killed_consumer_leaves_unread_messages_to_the_next_one() {
    common::run_as_child(child_roles);
    const N: u64 = 20_000;
    const ROUNDS: usize = 3;
    let mut rng = Rng::from_entropy();
    for round in 0..ROUNDS {
        let (guard, name) = ShmGuard::fresh("crash-cons");
        let dir = TempDir::new("crash-cons");
        let (file_a, file_b) = (dir.file("a"), dir.file("b"));
        // keep(true): the name must outlive the sender, because the second consumer may
        // attach only after the producer has sent everything and left.
        let opts = Options::new()
            .capacity(256)
            .mode(CreateMode::CreateExclusive)
            .keep(true)
            .liveness_interval(LIVENESS);
        let tx = Sender::<Msg>::with_options(&name, &opts).expect("create");
        let producer = std::thread::spawn(move || {
            let start = Instant::now();
            let mut seq = 0;
            while seq < N {
                match tx.send_timeout(Msg::new(TAG_A, seq), Duration::from_millis(100)) {
                    Ok(()) => seq += 1,
                    // No consumer attached right now (one was killed): the message was
                    // handed back unsent; try again once the next one attaches.
                    Err(SendTimeoutError::Disconnected(_)) => {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(SendTimeoutError::Timeout(_)) => {}
                }
                assert!(start.elapsed() < MUST_FINISH, "producer stuck at {seq}");
            }
            drop(tx);
        });
        let test = "killed_consumer_leaves_unread_messages_to_the_next_one";
        let first = common::spawn_child(
            test,
            "recording_consumer_killable",
            &name,
            file_a.to_str().expect("path"),
        );
        // Kill it somewhere in the middle of the stream.
        let kill_after = rng.range(500, N / 2);
        common::wait_until("the first consumer's progress", MUST_FINISH, || {
            read_records(&file_a).len() as u64 >= kill_after
        });
        std::thread::sleep(Duration::from_micros(rng.range(0, 3000)));
        first.kill();
        let second = common::spawn_child(
            test,
            "recording_consumer",
            &name,
            file_b.to_str().expect("path"),
        );
        producer.join().expect("producer");
        second.wait_success();

        let a = read_records(&file_a);
        let b = read_records(&file_b);
        // Each consumer saw a consecutive run, in order.
        for (who, run) in [("first", &a), ("second", &b)] {
            for w in run.windows(2) {
                assert_eq!(
                    w[1],
                    w[0] + 1,
                    "round {round}: {who} consumer skipped or repeated"
                );
            }
        }
        assert_eq!(
            a.first(),
            Some(&0),
            "round {round}: first consumer started late"
        );
        let a_end = *a.last().expect("first consumer got something");
        let b_start = b.first().copied().unwrap_or(N);
        // The second consumer starts right after the last message the first one
        // released. The first one records a message before releasing its slot, so if
        // it was killed between the two, that message is delivered again: at most one
        // duplicate, exactly at the boundary. A gap (b_start > a_end + 1) would be a
        // message whose send returned Ok and that nobody received.
        assert!(
            b_start == a_end + 1 || b_start == a_end,
            "round {round}: first consumer ended at {a_end}, second started at {b_start}"
        );
        assert_eq!(
            b.last().copied().unwrap_or(a_end),
            N - 1,
            "round {round}: tail lost"
        );
        println!(
            "round {round}: first consumer got 0..={a_end}, second {b_start}..{N}{}",
            if b_start == a_end {
                " (one redelivered)"
            } else {
                ""
            }
        );
        shmchan::remove(&name).expect("remove");
        drop(guard);
        common::assert_shm_gone(&[&name]);
    }
}

#[test]
fn restarted_producer_continues_without_losing_acknowledged_messages() {
    common::run_as_child(child_roles);
    const K: u64 = 1000;
    const M: u64 = 1000;
    const ROUNDS: usize = 3;
    let mut rng = Rng::from_entropy();
    for round in 0..ROUNDS {
        let (guard, name) = ShmGuard::fresh("crash-restart");
        let dir = TempDir::new("crash-restart");
        let marker = dir.file("done");
        let opts = Options::new()
            .capacity(128)
            .mode(CreateMode::CreateExclusive)
            .liveness_interval(LIVENESS);
        // The consumer (this thread) owns the name; producers come and go.
        let rx = Receiver::<Msg>::with_options(&name, &opts).expect("create");
        let b_done = Arc::new(AtomicBool::new(false));
        let kill_delay = Duration::from_millis(rng.range(0, 20));
        let director = {
            let (name, b_done) = (name.clone(), b_done.clone());
            let marker = marker.clone();
            std::thread::spawn(move || {
                let test = "restarted_producer_continues_without_losing_acknowledged_messages";
                let arg = format!("{K} {}", marker.to_str().expect("path"));
                let a = common::spawn_child(test, "producer_then_endless", &name, &arg);
                common::wait_until("producer A's marker", MUST_FINISH, || marker.exists());
                assert_eq!(
                    std::fs::read_to_string(&marker).expect("marker"),
                    format!("done {K}")
                );
                std::thread::sleep(kill_delay);
                a.kill();
                let b = common::spawn_child(test, "producer_finite", &name, &M.to_string());
                b.wait_success();
                b_done.store(true, Ordering::SeqCst);
            })
        };
        let start = Instant::now();
        let (mut a_next, mut b_next) = (0u64, 0u64);
        loop {
            assert!(
                start.elapsed() < MUST_FINISH,
                "round {round}: consumer stuck"
            );
            match rx.recv_timeout(Duration::from_millis(10)) {
                Ok(m) => {
                    assert!(m.is_valid(), "round {round}: torn or garbage message {m:?}");
                    match m.tag() {
                        TAG_A => {
                            assert_eq!(b_next, 0, "round {round}: A's message after B's");
                            assert_eq!(m.seq, a_next, "round {round}: A's stream broken");
                            a_next += 1;
                        }
                        TAG_B => {
                            assert_eq!(m.seq, b_next, "round {round}: B's stream broken");
                            b_next += 1;
                        }
                        t => panic!("round {round}: unknown tag {t}"),
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                // Between A's death and B's attach there is no sender: keep waiting
                // until B has finished, then the drained channel is really done.
                Err(RecvTimeoutError::Disconnected) => {
                    if b_done.load(Ordering::SeqCst) {
                        break;
                    }
                    if director.is_finished() {
                        // The director panicked: show why.
                        director.join().expect("director");
                        unreachable!();
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        director.join().expect("director");
        assert!(
            a_next >= K,
            "round {round}: only {a_next} of A's {K} acknowledged messages"
        );
        assert_eq!(b_next, M, "round {round}: B's messages");
        println!("round {round}: A delivered {a_next} (>= {K}), then B {M}");
        drop(rx);
        drop(guard);
        common::assert_shm_gone(&[&name]);
    }
}
