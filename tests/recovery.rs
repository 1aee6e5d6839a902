//! Recovery paths, each reached the same way on every run: a peer process attached and
//! then parked at a known point (asleep until killed) before it is SIGKILLed, a waiter
//! seen asleep in /proc before its peer goes, liveness probes timed against the
//! interval with wide margins, descriptor limits set exactly. (The random-kill tests
//! are in `crash.rs` and `mpmc_kill.rs`.)

mod common;

use common::{
    ChildEnv, LIVENESS, MUST_FINISH, PROMPTLY, ShmGuard, run_as_child, spawn_child,
    spawn_child_under, wait_until,
};
use shmchan::{
    CreateMode, OpenError, Options, Receiver, RecvTimeoutError, SendError, SendTimeoutError,
    Sender, WaitStrategy, mpmc,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

fn opts() -> Options {
    Options::new().liveness_interval(LIVENESS)
}

fn create_opts(capacity: usize) -> Options {
    opts().capacity(capacity).mode(CreateMode::CreateExclusive)
}

/// Roles of the children of this file. Each attaches, does what `arg` says, and then
/// parks until it is killed.
fn child_roles(c: &ChildEnv) {
    match c.role.as_str() {
        // Attach as an MPMC sender, send 0..arg, park.
        "mpmc_sender" => {
            let tx = mpmc::Sender::<u64>::with_options(&c.name, &opts()).expect("open");
            for i in 0..c.arg_u64() {
                tx.send(i).expect("send");
            }
            common::sleep_until_killed();
        }
        // Attach as an MPMC receiver, park.
        "mpmc_receiver" => {
            let _rx = mpmc::Receiver::<u64>::with_options(&c.name, &opts()).expect("open");
            common::sleep_until_killed();
        }
        // Attach as the SPSC sender, send 0..arg, park.
        "spsc_sender" => {
            let tx = Sender::<u64>::with_options(&c.name, &opts()).expect("open");
            for i in 0..c.arg_u64() {
                tx.send(i).expect("send");
            }
            common::sleep_until_killed();
        }
        "fd_limit" => fd_limit_role(c),
        "no_proc" => no_proc_role(c),
        other => panic!("unknown role {other}"),
    }
}

/// Waits until `name`'s peer table shows a live holder of `role`.
fn wait_attached(name: &str, role: &str) {
    wait_until(&format!("a live {role}"), MUST_FINISH, || {
        shmchan::inspect(name).is_ok_and(|i| i.peers.iter().any(|p| p.role == role && p.alive))
    });
}

/// An MPMC receiver asleep on an empty ring when the last sender is SIGKILLed: its
/// liveness check, run when its futex wait times out, finds the sender's lock free and
/// ends the wait with `Disconnected`. The dead sender is counted in the header's
/// hints, so only the probe can tell.
#[test]
fn mpmc_receiver_asleep_when_the_last_sender_is_killed() {
    run_as_child(child_roles);
    let (_guard, name) = ShmGuard::fresh("rec-mpmc-sleep");
    let rx = mpmc::Receiver::<u64>::with_options(
        &name,
        &create_opts(4).wait_strategy(WaitStrategy::Block),
    )
    .expect("create");
    let child = spawn_child(
        "mpmc_receiver_asleep_when_the_last_sender_is_killed",
        "mpmc_sender",
        &name,
        "1",
    );
    assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = {
        let rx = rx.clone();
        std::thread::spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .expect("tid");
            rx.recv_timeout(MUST_FINISH)
        })
    };
    let tid = tid_rx.recv().expect("tid");
    wait_until("the receiver asleep", MUST_FINISH, || {
        common::thread_state(tid) == Some('S')
            && shmchan::inspect(&name).is_ok_and(|i| i.sleeping_receivers == 1)
    });
    let killed = Instant::now();
    child.kill();
    assert_eq!(
        waiter.join().expect("receiver thread"),
        Err(RecvTimeoutError::Disconnected)
    );
    assert!(
        killed.elapsed() < PROMPTLY,
        "noticed after {:?}",
        killed.elapsed()
    );
    let info = shmchan::inspect(&name).expect("inspect");
    assert_eq!(info.sleeping_receivers, 0);
    assert!(
        info.peers.iter().all(|p| p.role == "receiver"),
        "the dead sender's entry was not vacated: {:?}",
        info.peers
    );
    assert!(rx.is_disconnected());
}

/// The slot word of MPMC slot `index` of channel `name` (slots start at 4096; see
/// `src/mpmc/ring.rs` for the encoding), through a mapping of the object.
fn slot_word<R>(name: &str, index: usize, f: impl FnOnce(&AtomicU64) -> R) -> R {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(common::shm_path(name))
        .expect("open object");
    let slot_size = shmchan::inspect(name).expect("inspect").slot_size as usize;
    let off = 4096 + index * slot_size;
    let map = memmap2::MmapOptions::new()
        .len(off + 8)
        .map_raw(&file)
        .expect("map");
    // SAFETY: `off` is inside the mapping and 8-aligned (page-aligned slot array,
    // slot sizes multiples of 64); the channel's processes access the word only
    // atomically; the mapping lives until the end of this function.
    let word = unsafe { &*(map.as_mut_ptr().add(off) as *const AtomicU64) };
    f(word)
}

/// A producer killed between its claim and its publication leaves a WRITING claim in
/// the slot a sleeping consumer waits on. The consumer's liveness check finds the
/// claimant dead, skips the torn slot and takes the next message. (The claim is
/// planted in the slot word while the consumer sleeps, for the child sender that was
/// killed: catching a real producer between two instructions is a matter of luck.)
#[test]
fn mpmc_sleeping_receiver_skips_a_dead_producers_claim() {
    run_as_child(child_roles);
    let (_guard, name) = ShmGuard::fresh("rec-mpmc-writing");
    let rx = mpmc::Receiver::<u64>::with_options(
        &name,
        &create_opts(4).wait_strategy(WaitStrategy::Block),
    )
    .expect("create");
    let tx = mpmc::Sender::<u64>::with_options(&name, &opts()).expect("open");
    let child = spawn_child(
        "mpmc_sleeping_receiver_skips_a_dead_producers_claim",
        "mpmc_sender",
        &name,
        "0",
    );
    let pid = child.pid();
    let mut dead = None;
    wait_until("the child's attach", MUST_FINISH, || {
        dead = shmchan::inspect(&name)
            .expect("inspect")
            .peers
            .into_iter()
            .find(|p| p.pid == pid && p.role == "sender");
        dead.is_some()
    });
    let dead = dead.expect("entry");
    child.kill();
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = {
        let rx = rx.clone();
        std::thread::spawn(move || {
            tid_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .expect("tid");
            rx.recv_timeout(MUST_FINISH)
        })
    };
    let tid = tid_rx.recv().expect("tid");
    wait_until("the receiver asleep", MUST_FINISH, || {
        common::thread_state(tid) == Some('S')
            && shmchan::inspect(&name).is_ok_and(|i| i.sleeping_receivers == 1)
    });
    // WRITING (1), lap 0, the dead sender's entry and generation, in slot 0 (head).
    let claim = 1u64 << 61 | (dead.index as u64) << 13 | u64::from(dead.generation & 0x1FFF);
    slot_word(&name, 0, |w| {
        w.compare_exchange(0, claim, Ordering::SeqCst, Ordering::SeqCst)
            .expect("slot 0 free")
    });
    // The sleeping receiver's own check clears it (nobody else looks: the sender is
    // idle).
    wait_until("the dead claim cleared", MUST_FINISH, || {
        slot_word(&name, 0, |w| w.load(Ordering::SeqCst)) >> 61 != 1
    });
    assert!(!waiter.is_finished());
    // The next message goes to slot 1, behind the skipped one.
    tx.send(7).expect("send");
    assert_eq!(waiter.join().expect("receiver thread"), Ok(7));
    assert!(
        shmchan::inspect(&name)
            .expect("inspect")
            .peers
            .iter()
            .all(|p| p.pid != pid),
        "the dead producer's entry was not vacated"
    );
    drop((tx, rx));
}

/// A loop of timeouts shorter than the liveness interval never reaches a liveness
/// check inside the wait; the check after the timeout must find that every peer of
/// the other role died. The probe is timed to fall due during the wait (the handle's
/// first probe is one interval after it attached; the wait starts at half an interval
/// and lasts two thirds of one), with margins of 100 ms either way.
#[test]
fn mpmc_short_timeouts_learn_that_the_other_side_died() {
    run_as_child(child_roles);
    const INTERVAL: Duration = Duration::from_millis(300);
    const LONG: Duration = Duration::from_secs(3600);
    let test = "mpmc_short_timeouts_learn_that_the_other_side_died";

    // Receivers, after the only sender died.
    let (_g1, name) = ShmGuard::fresh("rec-mpmc-short-rx");
    let keep = mpmc::Receiver::<u64>::with_options(
        &name,
        &Options::new()
            .liveness_interval(LONG)
            .capacity(2)
            .mode(CreateMode::CreateExclusive),
    )
    .expect("create");
    let child = spawn_child(test, "mpmc_sender", &name, "0");
    wait_attached(&name, "sender");
    child.kill();
    let rx =
        mpmc::Receiver::<u64>::with_options(&name, &Options::new().liveness_interval(INTERVAL))
            .expect("open");
    let attached = Instant::now();
    std::thread::sleep(INTERVAL / 2);
    // A loop of short timeouts learns it (a slow machine may need more than one pass;
    // only a loop that never learns it fails).
    loop {
        match rx.recv_timeout(INTERVAL * 2 / 3) {
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => assert!(
                attached.elapsed() < PROMPTLY,
                "no Disconnected {:?} after attaching",
                attached.elapsed()
            ),
            other => panic!("{other:?}"),
        }
    }
    drop((rx, keep));

    // Senders on a full ring, after the only receiver died.
    let (_g2, name) = ShmGuard::fresh("rec-mpmc-short-tx");
    let keep = mpmc::Sender::<u64>::with_options(
        &name,
        &Options::new()
            .liveness_interval(LONG)
            .capacity(2)
            .mode(CreateMode::CreateExclusive),
    )
    .expect("create");
    let child = spawn_child(test, "mpmc_receiver", &name, "");
    wait_attached(&name, "receiver");
    child.kill();
    keep.try_send(1).expect("room");
    keep.try_send(2).expect("room");
    let tx = mpmc::Sender::<u64>::with_options(&name, &Options::new().liveness_interval(INTERVAL))
        .expect("open");
    let attached = Instant::now();
    std::thread::sleep(INTERVAL / 2);
    loop {
        match tx.send_timeout(3, INTERVAL * 2 / 3) {
            Err(SendTimeoutError::Disconnected(3)) => break,
            Err(SendTimeoutError::Timeout(3)) => assert!(
                attached.elapsed() < PROMPTLY,
                "no Disconnected {:?} after attaching",
                attached.elapsed()
            ),
            other => panic!("{other:?}, {:?} after attaching", attached.elapsed()),
        }
    }
    // The dead receiver was reaped: no longer counted in the hint.
    assert!(
        shmchan::inspect(&name)
            .expect("inspect")
            .peers
            .iter()
            .all(|p| p.role == "sender")
    );
    drop((tx, keep));
}

/// CPU time (user + system, in clock ticks) thread `tid` of this process has used.
fn thread_cpu_ticks(tid: i32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).expect("stat");
    let after = &text[text.rfind(')').expect("comm") + 1..];
    // Fields 14 and 15 (utime, stime); the text after the name starts at field 3.
    let f: Vec<&str> = after.split_ascii_whitespace().collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

/// A receiver that busy-spins never sleeps: the liveness check in its spin phase is
/// what finds its sender dead. The sender is killed only once the receiver has spun
/// for a while (50 ms of its CPU time: long past its first look, which probes too).
#[test]
fn busy_spinning_receiver_finds_its_sender_dead() {
    run_as_child(child_roles);
    let (_guard, name) = ShmGuard::fresh("rec-spin");
    let rx =
        Receiver::<u64>::with_options(&name, &create_opts(4).wait_strategy(WaitStrategy::BusySpin))
            .expect("create");
    let child = spawn_child(
        "busy_spinning_receiver_finds_its_sender_dead",
        "spsc_sender",
        &name,
        "1",
    );
    assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(0));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        tid_tx
            .send(rustix::thread::gettid().as_raw_nonzero().get())
            .expect("tid");
        let r = rx.recv_timeout(MUST_FINISH);
        (r, Instant::now(), rx)
    });
    let tid = tid_rx.recv().expect("tid");
    // SAFETY: sysconf has no preconditions.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).expect("CLK_TCK");
    let spun = thread_cpu_ticks(tid);
    wait_until("the receiver spinning", MUST_FINISH, || {
        thread_cpu_ticks(tid) >= spun + hz.div_ceil(20)
    });
    let killed = Instant::now();
    child.kill();
    // (The receiver comes back: it created the channel, and removes it when dropped.)
    let (r, at, _rx) = waiter.join().expect("receiver thread");
    assert_eq!(r, Err(RecvTimeoutError::Disconnected));
    let took = at.duration_since(killed);
    assert!(took < PROMPTLY, "noticed after {took:?}");
    assert_eq!(
        shmchan::inspect(&name).expect("inspect").sleeping_receivers,
        0,
        "a busy-spinning receiver announced itself as a sleeper"
    );
}

/// `send_batch` and `loan` waiting for room on a full ring return `Disconnected`
/// when the receiver leaves meanwhile; `send_batch` says how many it sent.
#[test]
fn batch_and_loan_waiting_for_room_see_the_receiver_leave() {
    let (_guard, name) = ShmGuard::fresh("rec-batch");
    let mut tx =
        Sender::<u64>::with_options(&name, &create_opts(4).wait_strategy(WaitStrategy::Block))
            .expect("create");
    for round in 0..2 {
        let rx = Receiver::<u64>::with_options(&name, &opts()).expect("open");
        let sleeping = || shmchan::inspect(&name).is_ok_and(|i| i.sleeping_senders == 1);
        std::thread::scope(|s| {
            let waiter = s.spawn(|| {
                if round == 0 {
                    let msgs: Vec<u64> = (0..10).collect();
                    tx.send_batch(&msgs)
                        .map(|()| 0)
                        .map_err(|SendError::Disconnected(n)| n)
                } else {
                    // The ring is still full of round 0's messages.
                    tx.loan().map(|_| 0).map_err(|_| usize::MAX)
                }
            });
            wait_until("the sender asleep", MUST_FINISH, sleeping);
            drop(rx);
            let r = waiter.join().expect("sender thread");
            assert_eq!(
                r,
                Err(if round == 0 { 4 } else { usize::MAX }),
                "round {round}"
            );
        });
    }
}

/// The soft descriptor limit is raised to the hard one, once, when `shm_open` or the
/// reopen of the lock description meets `EMFILE`; a second shortage is an error.
#[test]
fn descriptor_limit_is_raised_once() {
    run_as_child(child_roles);
    let test = "descriptor_limit_is_raised_once";
    for at in ["shm_open", "reopen"] {
        let (mut guard, name) = ShmGuard::fresh("rec-fd");
        guard.add(&format!("{name}-2"));
        spawn_child(test, "fd_limit", &name, at).wait_success();
        common::assert_shm_gone(&[&name, &format!("{name}-2")]);
    }
}

/// Child: lower the limits (soft 16 above what is open, hard 64 more), use up every
/// descriptor (all but one with `reopen`), and attach.
fn fd_limit_role(c: &ChildEnv) {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let open_now = std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64;
    let soft = open_now + 16;
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(soft),
            maximum: Some(soft + 64),
        },
    )
    .expect("setrlimit");
    let fill = |files: &mut Vec<std::fs::File>| loop {
        match std::fs::File::open("/dev/null") {
            Ok(f) => files.push(f),
            Err(e) if e.raw_os_error() == Some(libc::EMFILE) => break,
            Err(e) => panic!("open: {e}"),
        }
    };
    let mut files = Vec::new();
    fill(&mut files);
    if c.arg == "reopen" {
        // One free: shm_open takes it, the lock description's reopen meets EMFILE.
        files.pop();
    }
    let tx = Sender::<u64>::with_options(&c.name, &create_opts(2)).expect("create at the limit");
    assert_eq!(getrlimit(Resource::Nofile).current, Some(soft + 64));
    // Once only: at the new limit, the next attach fails, and leaves nothing behind.
    fill(&mut files);
    let second = format!("{}-2", c.name);
    match Sender::<u64>::with_options(&second, &create_opts(2)) {
        Err(OpenError::TooManyOpenFiles) => {}
        other => panic!("second shortage: {other:?}"),
    }
    assert!(!common::shm_exists(&second));
    drop(files);
    let rx = Receiver::<u64>::with_options(&c.name, &opts()).expect("open");
    tx.send(7).expect("send");
    assert_eq!(rx.recv(), Ok(7));
}

/// A process without /proc (a container that does not mount it) reopens the object by
/// name for its lock: it is seen alive while it runs (its pid namespace unknown, 0),
/// and dead once it has ended without letting go of its entry.
#[test]
fn a_process_without_proc_is_alive_while_it_runs() {
    run_as_child(child_roles);
    const UNSHARE: &[&str] = &["unshare", "--mount", "--propagation", "private"];
    let ok = std::process::Command::new(UNSHARE[0])
        .args(&UNSHARE[1..])
        .arg("true")
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("SKIPPED: `unshare --mount` is not available here");
        return;
    }
    let (_guard, name) = ShmGuard::fresh("rec-noproc");
    let dir = common::TempDir::new("rec-noproc");
    let go = dir.file("go");
    let rx = Receiver::<u64>::with_options(&name, &create_opts(4)).expect("create");
    let child = spawn_child_under(
        UNSHARE,
        "a_process_without_proc_is_alive_while_it_runs",
        "no_proc",
        &name,
        go.to_str().expect("utf-8 path"),
    );
    assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(1));
    let sender = || {
        shmchan::inspect(&name)
            .expect("inspect")
            .peers
            .into_iter()
            .find(|p| p.role == "sender")
            .expect("sender entry")
    };
    let s = sender();
    assert!(s.alive);
    assert_eq!(s.pid_namespace, 0, "{s:?}");
    std::thread::sleep(LIVENESS * 5);
    assert_eq!(
        rx.recv_timeout(LIVENESS * 5),
        Err(RecvTimeoutError::Timeout),
        "a live sender without /proc was taken for dead"
    );
    // Let it end without dropping its handle (its entry stays held, its lock goes).
    std::fs::write(&go, b"go").expect("write go");
    child.wait_success();
    assert!(!sender().alive);
    assert_eq!(
        rx.recv_timeout(PROMPTLY),
        Err(RecvTimeoutError::Disconnected)
    );
}

/// Child: unmount /proc (in a private mount namespace), attach, send 1, then end
/// without dropping the handle once the file `arg` exists.
fn no_proc_role(c: &ChildEnv) {
    // SAFETY: a C string literal; detaches /proc in this process's own mount namespace.
    let r = unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) };
    assert_eq!(r, 0, "umount /proc: {}", std::io::Error::last_os_error());
    assert!(!std::path::Path::new("/proc/self").exists());
    let tx = Sender::<u64>::with_options(&c.name, &opts()).expect("open without /proc");
    tx.send(1).expect("send");
    let parent = rustix::process::getppid();
    let start = Instant::now();
    while !std::path::Path::new(&c.arg).exists() {
        assert!(
            !common::orphaned(parent) && start.elapsed() < MUST_FINISH,
            "never told to go"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    // As a crash would: the process ends, the entry stays as it was.
    std::mem::forget(tx);
}
