//! MPMC attach rules between real processes: the peer-table limit (one entry per
//! attachment, shared by its clones; a dead holder's entry is taken over), flavor and
//! type checks, and when each side sees `Disconnected`.

mod common;

use common::{ChildEnv, ChildProc, LIVENESS, MUST_FINISH, Msg, PROMPTLY, ShmGuard, TempDir};
use shmchan::mpmc::{Receiver, Sender};
use shmchan::{
    CreateMode, OpenError, Options, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Tag of the messages of child A.
const TAG_A: u32 = 0xA;
/// Tag of the messages of child B.
const TAG_B: u32 = 0xB;
/// Tag of the parent's messages.
const TAG_P: u32 = 0xC;

fn opts() -> Options {
    Options::new().liveness_interval(LIVENESS)
}

fn create_opts(capacity: usize) -> Options {
    opts().capacity(capacity).mode(CreateMode::CreateExclusive)
}

/// Writes the marker `path` (atomically: write, then rename).
fn mark(path: &Path) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, b"x").expect("write marker");
    std::fs::rename(&tmp, path).expect("rename marker");
}

/// In a child: waits for the parent's marker `path`.
fn await_marker(path: &Path) {
    let start = Instant::now();
    while !path.exists() {
        assert!(
            start.elapsed() < MUST_FINISH,
            "no {} from the parent",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// In the parent: waits for the marker `path` of `child`; fails at once (with its
/// output) if the child exits first.
fn await_child_marker(child: &mut ChildProc, path: &Path) {
    let deadline = Instant::now() + MUST_FINISH;
    while !path.exists() {
        if !child.is_running() {
            if path.exists() {
                return;
            }
            let (status, out) = child.wait_timeout(MUST_FINISH);
            panic!("child exited ({status:?}) before {}\n{out}", path.display());
        }
        assert!(Instant::now() < deadline, "no {}", path.display());
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The child's argument is a temp dir; `file` is a path in it.
fn in_dir(c: &ChildEnv, file: &str) -> PathBuf {
    Path::new(&c.arg).join(file)
}

/// Roles the children of this file play.
fn child_roles(c: &ChildEnv) {
    match c.role.as_str() {
        // Attach (as a sender or a receiver of u64), say so, stay until killed.
        "hold_sender" => {
            let _tx = Sender::<u64>::with_options(&c.name, &opts()).expect("open sender");
            mark(&in_dir(c, "attached"));
            common::sleep_until_killed();
        }
        "hold_receiver" => {
            let _rx = Receiver::<u64>::with_options(&c.name, &opts()).expect("open receiver");
            mark(&in_dir(c, "attached"));
            common::sleep_until_killed();
        }
        // Both attachments fail: the table is full.
        "expect_too_many" => {
            match Sender::<u64>::with_options(&c.name, &opts()) {
                Err(OpenError::TooManyPeers(4)) => {}
                other => panic!("expected TooManyPeers(4), got {other:?}"),
            }
            match Receiver::<u64>::with_options(&c.name, &opts()) {
                Err(OpenError::TooManyPeers(4)) => {}
                other => panic!("expected TooManyPeers(4), got {other:?}"),
            }
        }
        // Sends TAG_A 0..10, says "a-sent", waits for "a-leave", drops its sender.
        "sender_a" => {
            let tx = Sender::<Msg>::with_options(&c.name, &opts()).expect("open sender");
            for seq in 0..10 {
                tx.send_timeout(Msg::new(TAG_A, seq), MUST_FINISH)
                    .expect("send");
            }
            mark(&in_dir(c, "a-sent"));
            await_marker(&in_dir(c, "a-leave"));
            drop(tx);
        }
        // Sends TAG_B 0..10, says "b-sent", waits for "b-more", then sends 10, 11, ...
        // with two threads' clones, taking turns, until killed (the parent does not
        // receive: the ring fills up, one thread blocks in `send`, the other on the
        // turn).
        "sender_b" => {
            let tx = Sender::<Msg>::with_options(&c.name, &opts()).expect("open sender");
            for seq in 0..10 {
                tx.send_timeout(Msg::new(TAG_B, seq), MUST_FINISH)
                    .expect("send");
            }
            mark(&in_dir(c, "b-sent"));
            await_marker(&in_dir(c, "b-more"));
            let seq = std::sync::Arc::new(std::sync::Mutex::new(10u64));
            for _ in 0..2 {
                let (tx, seq) = (tx.clone(), seq.clone());
                std::thread::spawn(move || {
                    loop {
                        // One thread sends at a time, so the seqs in the ring are
                        // consecutive: the parent checks that none is lost.
                        let mut s = seq.lock().expect("lock");
                        tx.send_timeout(Msg::new(TAG_B, *s), MUST_FINISH)
                            .expect("send");
                        *s += 1;
                    }
                });
            }
            drop(tx);
            common::sleep_until_killed();
        }
        // Receives `arg2` messages of the parent (TAG_P 0..), says "r-got", waits for
        // "r-leave", then drops its receiver (or, "receiver_hang", waits to be killed).
        "receiver_drop" | "receiver_hang" => {
            let (dir, n) = c.arg.split_once(' ').expect("arg: dir n");
            let n: u64 = n.parse().expect("n");
            let dir = Path::new(dir);
            let rx = Receiver::<Msg>::with_options(&c.name, &opts()).expect("open receiver");
            for seq in 0..n {
                let m = rx.recv_timeout(MUST_FINISH).expect("recv");
                assert_eq!(m, Msg::new(TAG_P, seq));
            }
            mark(&dir.join("r-got"));
            if c.role == "receiver_hang" {
                common::sleep_until_killed();
            }
            await_marker(&dir.join("r-leave"));
            drop(rx);
        }
        other => panic!("unknown role {other}"),
    }
}

/// Pids of the live holders of the peer table, by role.
fn live_peers(name: &str) -> Vec<(u32, &'static str)> {
    let info = shmchan::inspect(name).expect("inspect");
    info.peers
        .iter()
        .filter(|p| p.alive)
        .map(|p| (p.pid, p.role))
        .collect()
}

#[test]
fn mpmc_max_peers_limits_attachments_not_clones_and_dead_entries_are_taken_over() {
    const TEST: &str =
        "mpmc_max_peers_limits_attachments_not_clones_and_dead_entries_are_taken_over";
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("mpmc-peers");
    let dir_a = TempDir::new("mpmc-peers-a");
    let dir_b = TempDir::new("mpmc-peers-b");
    let me = std::process::id();

    // Entry 1: the creator (a receiver), cloned 100 times.
    let rx = Receiver::<u64>::with_options(&name, &create_opts(16).max_peers(4)).expect("create");
    let rx_clones: Vec<_> = (0..100).map(|_| rx.clone()).collect();
    assert_eq!(live_peers(&name), vec![(me, "receiver")]);

    // Entries 2 and 3: a sender and a receiver in two other processes.
    let path_a = dir_a.path().to_str().expect("path").to_owned();
    let path_b = dir_b.path().to_str().expect("path").to_owned();
    let mut a = common::spawn_child(TEST, "hold_sender", &name, &path_a);
    await_child_marker(&mut a, &dir_a.file("attached"));
    let mut b = common::spawn_child(TEST, "hold_receiver", &name, &path_b);
    await_child_marker(&mut b, &dir_b.file("attached"));

    // Entry 4: a sender in this process, cloned 100 times.
    let tx = Sender::<u64>::with_options(&name, &opts()).expect("4th attachment");
    let mut tx_clones: Vec<_> = (0..100).map(|_| tx.clone()).collect();
    let mut peers = live_peers(&name);
    peers.sort();
    let mut want = vec![
        (me, "receiver"),
        (me, "sender"),
        (a.pid(), "sender"),
        (b.pid(), "receiver"),
    ];
    want.sort();
    assert_eq!(peers, want, "200 clones use no entry of their own");

    // A 5th attachment fails, in this process and in another, for both roles.
    assert!(matches!(
        Receiver::<u64>::with_options(&name, &opts()),
        Err(OpenError::TooManyPeers(4))
    ));
    assert!(matches!(
        Sender::<u64>::with_options(&name, &opts()),
        Err(OpenError::TooManyPeers(4))
    ));
    common::spawn_child(TEST, "expect_too_many", &name, "").wait_success();
    // The clones work (and share their entry's claim on the ring).
    tx_clones[7].send(5).expect("send through a clone");
    assert_eq!(rx_clones[42].recv_timeout(PROMPTLY), Ok(5));

    // Dropping 99 of 101 sender handles frees nothing.
    tx_clones.truncate(1);
    drop(tx);
    assert!(matches!(
        Sender::<u64>::with_options(&name, &opts()),
        Err(OpenError::TooManyPeers(4))
    ));
    // Dropping the last one frees its entry at once.
    drop(tx_clones);
    let tx2 = Sender::<u64>::with_options(&name, &opts()).expect("attach after a clean leave");
    assert!(matches!(
        Sender::<u64>::with_options(&name, &opts()),
        Err(OpenError::TooManyPeers(4))
    ));

    // A SIGKILLed holder's entry is taken over by the next attachment, whatever its
    // role: here a receiver takes the dead sender's entry.
    let a_pid = a.pid();
    a.kill();
    let rx2 = Receiver::<u64>::with_options(&name, &opts()).expect("take over a dead entry");
    let peers = live_peers(&name);
    assert_eq!(peers.len(), 4, "{peers:?}");
    assert!(!peers.iter().any(|p| p.0 == a_pid), "{peers:?}");
    assert!(matches!(
        Receiver::<u64>::with_options(&name, &opts()),
        Err(OpenError::TooManyPeers(4))
    ));

    // A killed holder that is still a zombie (not reaped) is dead too.
    b.kill_no_reap();
    let b_pid = b.pid();
    let start = Instant::now();
    let tx3 = loop {
        // The kill is asynchronous: until the process is a zombie, it holds its entry.
        match Sender::<u64>::with_options(&name, &opts()) {
            Ok(tx) => break tx,
            Err(OpenError::TooManyPeers(4)) => {
                assert!(start.elapsed() < PROMPTLY, "zombie's entry not taken over");
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("{e:?}"),
        }
    };
    b.reap_killed();
    assert!(!live_peers(&name).iter().any(|p| p.0 == b_pid));
    let mut peers = live_peers(&name);
    peers.sort();
    let mut want = vec![
        (me, "receiver"),
        (me, "receiver"),
        (me, "sender"),
        (me, "sender"),
    ];
    want.sort();
    assert_eq!(peers, want);
    // And the channel works between the newcomers.
    tx3.send(7).expect("send");
    tx2.send(8).expect("send");
    let mut got = [
        rx2.recv_timeout(PROMPTLY).expect("recv"),
        rx.recv_timeout(PROMPTLY).expect("recv"),
    ];
    got.sort();
    assert_eq!(got, [7, 8]);

    drop((tx2, tx3, rx2, rx_clones, rx));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn mpmc_flavor_and_type_mismatch_both_ways() {
    common::run_as_child(child_roles);
    let (mut guard, mpmc_name) = ShmGuard::fresh("mpmc-flavor-m");
    let spsc_name = common::unique_name("mpmc-flavor-s");
    guard.add(&spsc_name);

    // Two peer entries only: failed attaches must not use any.
    let mpmc = Receiver::<u64>::with_options(&mpmc_name, &create_opts(8).max_peers(2))
        .expect("create mpmc");
    let spsc = shmchan::Receiver::<u64>::create(&spsc_name, 8).expect("create spsc");

    for _ in 0..3 {
        // An SPSC handle on an MPMC channel.
        match shmchan::Receiver::<u64>::open(&mpmc_name) {
            Err(OpenError::FlavorMismatch { found, expected }) => {
                assert_eq!((found, expected), ("mpmc", "spsc"));
            }
            other => panic!("spsc receiver on mpmc: {other:?}"),
        }
        match shmchan::Sender::<u64>::open(&mpmc_name) {
            Err(OpenError::FlavorMismatch { found, expected }) => {
                assert_eq!((found, expected), ("mpmc", "spsc"));
            }
            other => panic!("spsc sender on mpmc: {other:?}"),
        }
        // An MPMC handle on an SPSC channel.
        match Receiver::<u64>::open(&spsc_name) {
            Err(OpenError::FlavorMismatch { found, expected }) => {
                assert_eq!((found, expected), ("spsc", "mpmc"));
            }
            other => panic!("mpmc receiver on spsc: {other:?}"),
        }
        match Sender::<u64>::open(&spsc_name) {
            Err(OpenError::FlavorMismatch { found, expected }) => {
                assert_eq!((found, expected), ("spsc", "mpmc"));
            }
            other => panic!("mpmc sender on spsc: {other:?}"),
        }
        // Another message type on the MPMC channel: other size, or same size and
        // alignment but another type.
        assert!(matches!(
            Receiver::<u32>::open(&mpmc_name),
            Err(OpenError::TypeMismatch { .. })
        ));
        assert!(matches!(
            Sender::<i64>::open(&mpmc_name),
            Err(OpenError::TypeMismatch { .. })
        ));
        assert!(matches!(
            Receiver::<[u32; 2]>::open(&mpmc_name),
            Err(OpenError::TypeMismatch { .. })
        ));
        assert!(matches!(
            Sender::<Msg>::open(&mpmc_name),
            Err(OpenError::TypeMismatch { .. })
        ));
    }
    // None of the failures took an entry: the one free entry is still there.
    let tx = Sender::<u64>::open(&mpmc_name).expect("the right type and flavor attach");
    tx.send(3).expect("send");
    assert_eq!(mpmc.recv_timeout(PROMPTLY), Ok(3));
    assert!(matches!(
        Sender::<u64>::open(&mpmc_name),
        Err(OpenError::TooManyPeers(2))
    ));
    // The SPSC channel is untouched by the MPMC attempts.
    let stx = shmchan::Sender::<u64>::open(&spsc_name).expect("spsc sender");
    stx.send(4).expect("send");
    assert_eq!(spsc.recv_timeout(PROMPTLY), Ok(4));

    drop((tx, mpmc, stx, spsc));
    drop(guard);
    common::assert_shm_gone(&[&mpmc_name, &spsc_name]);
}

/// Receives until `Disconnected` with two clones in two threads; returns the messages
/// (sorted by seq) and how long the last thread took to see `Disconnected`.
fn drain_two_threads(rx: &Receiver<Msg>) -> (Vec<Msg>, Duration) {
    let start = Instant::now();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let rx = rx.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match rx.recv_timeout(MUST_FINISH) {
                        Ok(m) => got.push(m),
                        Err(RecvTimeoutError::Disconnected) => break,
                        Err(RecvTimeoutError::Timeout) => panic!("no Disconnected"),
                    }
                }
                // Disconnected is final once every sender is gone.
                assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
                got
            })
        })
        .collect();
    let mut all: Vec<Msg> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("receiver thread"))
        .collect();
    all.sort_by_key(|m| m.seq);
    (all, start.elapsed())
}

#[test]
fn mpmc_receivers_disconnect_only_after_every_sender_is_gone_and_the_ring_drained() {
    const TEST: &str =
        "mpmc_receivers_disconnect_only_after_every_sender_is_gone_and_the_ring_drained";
    const CAP: usize = 32;
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("mpmc-rx-disc");
    let dir = TempDir::new("mpmc-rx-disc");
    let dir_s = dir.path().to_str().expect("path").to_owned();
    let rx = Receiver::<Msg>::with_options(&name, &create_opts(CAP)).expect("create");

    // No sender ever attached: that is not "every sender gone".
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(200)),
        Err(RecvTimeoutError::Timeout)
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert!(!rx.is_disconnected());

    let mut a = common::spawn_child(TEST, "sender_a", &name, &dir_s);
    let mut b = common::spawn_child(TEST, "sender_b", &name, &dir_s);
    await_child_marker(&mut a, &dir.file("a-sent"));
    await_child_marker(&mut b, &dir.file("b-sent"));
    // A leaves cleanly; B is still there.
    mark(&dir.file("a-leave"));
    a.wait_success();
    let mut got: Vec<Msg> = (0..20)
        .map(|_| rx.recv_timeout(MUST_FINISH).expect("recv"))
        .collect();
    got.sort_by_key(|m| (m.tag(), m.seq));
    let want: Vec<Msg> = (0..10)
        .map(|s| Msg::new(TAG_A, s))
        .chain((0..10).map(|s| Msg::new(TAG_B, s)))
        .collect();
    assert_eq!(got, want);
    // Several liveness intervals: B lives, so the empty ring is just empty.
    assert_eq!(
        rx.recv_timeout(10 * LIVENESS),
        Err(RecvTimeoutError::Timeout)
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert!(!rx.is_disconnected());

    // B fills the ring and blocks; then it is SIGKILLed. What it sent is still
    // delivered, to both threads' clones, and only then Disconnected.
    mark(&dir.file("b-more"));
    common::wait_until("a full ring", MUST_FINISH, || rx.is_full());
    std::thread::sleep(5 * LIVENESS);
    assert!(b.is_running());
    b.kill();
    let (got, took) = drain_two_threads(&rx);
    let seqs: Vec<u64> = got.iter().map(|m| m.seq).collect();
    assert!(got.iter().all(|m| m.is_valid() && m.tag() == TAG_B));
    assert_eq!(
        seqs,
        (10..10 + CAP as u64).collect::<Vec<_>>(),
        "B's messages in the ring when it died, each exactly once"
    );
    assert!(took < PROMPTLY, "Disconnected only after {took:?}");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    assert!(rx.is_disconnected());
    println!(
        "drained {} messages of the killed sender, Disconnected after {took:?}",
        CAP
    );

    // A sender that attaches later makes the channel live again; while any clone of it
    // lives, an empty ring is only empty; when the last clone goes, Disconnected at
    // once (a clean leave needs no liveness check).
    let tx = Sender::<Msg>::with_options(&name, &opts()).expect("new sender");
    let tx2 = tx.clone();
    assert!(!rx.is_disconnected());
    drop(tx);
    tx2.send(Msg::new(TAG_P, 0))
        .expect("send through the clone");
    assert_eq!(rx.recv_timeout(PROMPTLY), Ok(Msg::new(TAG_P, 0)));
    assert_eq!(
        rx.recv_timeout(5 * LIVENESS),
        Err(RecvTimeoutError::Timeout)
    );
    let waiter = {
        let rx = rx.clone();
        std::thread::spawn(move || {
            let r = rx.recv_timeout(MUST_FINISH);
            (r, Instant::now())
        })
    };
    std::thread::sleep(Duration::from_millis(50));
    let dropped_at = Instant::now();
    drop(tx2);
    let (r, at) = waiter.join().expect("waiter");
    assert_eq!(r, Err(RecvTimeoutError::Disconnected));
    assert!(at >= dropped_at);
    assert!(
        at - dropped_at < PROMPTLY,
        "woke {:?} after the drop",
        at - dropped_at
    );

    drop(rx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Sends TAG_P messages from `*seq` on with `try_send` until the ring is full.
fn fill(tx: &Sender<Msg>, seq: &mut u64) {
    loop {
        match tx.try_send(Msg::new(TAG_P, *seq)) {
            Ok(()) => *seq += 1,
            Err(TrySendError::Full(_)) => return,
            Err(TrySendError::Disconnected(_)) => panic!("Disconnected at {seq}"),
        }
    }
}

#[test]
fn mpmc_senders_disconnect_once_no_receiver_is_left() {
    const TEST: &str = "mpmc_senders_disconnect_once_no_receiver_is_left";
    const CAP: usize = 8;
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("mpmc-tx-disc");
    let dir = TempDir::new("mpmc-tx-disc");
    let tx = Sender::<Msg>::with_options(&name, &create_opts(CAP)).expect("create");

    // No receiver ever attached: a full ring is just full.
    let mut seq = 0;
    fill(&tx, &mut seq);
    assert_eq!(seq, CAP as u64);
    assert!(matches!(
        tx.send_timeout(Msg::new(TAG_P, seq), Duration::from_millis(200)),
        Err(SendTimeoutError::Timeout(_))
    ));
    assert!(!tx.is_disconnected());

    // Receiver 1 takes what is there; receiver 2 attaches and takes nothing.
    let arg1 = format!("{} {CAP}", dir.path().display());
    let mut r1 = common::spawn_child(TEST, "receiver_drop", &name, &arg1);
    await_child_marker(&mut r1, &dir.file("r-got"));
    std::fs::remove_file(dir.file("r-got")).expect("remove marker");
    let arg2 = format!("{} 0", dir.path().display());
    let mut r2 = common::spawn_child(TEST, "receiver_hang", &name, &arg2);
    await_child_marker(&mut r2, &dir.file("r-got"));
    // Receiver 1 leaves cleanly: receiver 2 is left, so sends go on (until full).
    mark(&dir.file("r-leave"));
    r1.wait_success();
    fill(&tx, &mut seq);
    assert_eq!(seq, 2 * CAP as u64);
    assert!(matches!(
        tx.send_timeout(Msg::new(TAG_P, seq), 10 * LIVENESS),
        Err(SendTimeoutError::Timeout(_))
    ));
    assert!(!tx.is_disconnected());

    // Receiver 2 is SIGKILLed while this sender waits on the full ring.
    let killer = {
        let pid = r2.pid();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            let pid = rustix::process::Pid::from_raw(pid as i32).expect("pid");
            let at = Instant::now();
            rustix::process::kill_process(pid, rustix::process::Signal::KILL).expect("kill");
            at
        })
    };
    match tx.send_timeout(Msg::new(TAG_P, seq), MUST_FINISH) {
        Err(SendTimeoutError::Disconnected(m)) => assert_eq!(m, Msg::new(TAG_P, seq)),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let disconnected_at = Instant::now();
    let killed_at = killer.join().expect("killer");
    assert!(disconnected_at > killed_at, "Disconnected before the kill");
    let took = disconnected_at - killed_at;
    assert!(took < PROMPTLY, "Disconnected only {took:?} after the kill");
    let (status, _) = r2.wait_timeout(MUST_FINISH);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    println!("sender saw Disconnected {took:?} after the last receiver was SIGKILLed");
    // Known now: every kind of send says so at once, and hands the message back.
    assert!(matches!(
        tx.try_send(Msg::new(TAG_P, 99)),
        Err(TrySendError::Disconnected(m)) if m == Msg::new(TAG_P, 99)
    ));
    assert!(matches!(
        tx.send(Msg::new(TAG_P, 99)),
        Err(shmchan::SendError::Disconnected(_))
    ));
    assert!(tx.is_disconnected());

    // A new receiver makes the channel live again; when it leaves cleanly while the
    // sender waits on a full ring, the sender wakes with Disconnected at once.
    let arg3 = format!("{} 0", dir.path().display());
    std::fs::remove_file(dir.file("r-got")).expect("remove marker");
    std::fs::remove_file(dir.file("r-leave")).expect("remove marker");
    let mut r3 = common::spawn_child(TEST, "receiver_drop", &name, &arg3);
    await_child_marker(&mut r3, &dir.file("r-got"));
    assert!(!tx.is_disconnected());
    let leave = dir.file("r-leave");
    let leaver = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        let at = Instant::now();
        mark(&leave);
        r3.wait_success();
        at
    });
    match tx.send_timeout(Msg::new(TAG_P, seq), MUST_FINISH) {
        Err(SendTimeoutError::Disconnected(_)) => {}
        other => panic!("expected Disconnected, got {other:?}"),
    }
    let disconnected_at = Instant::now();
    let told_at = leaver.join().expect("leaver");
    assert!(
        disconnected_at > told_at,
        "Disconnected before the receiver left"
    );
    let took = disconnected_at - told_at;
    assert!(
        took < PROMPTLY,
        "Disconnected only {took:?} after the receiver left"
    );
    println!("sender saw Disconnected {took:?} after telling the last receiver to leave");

    drop(tx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}
