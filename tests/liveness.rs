//! Liveness is what the kernel says, not what a pid suggests: a peer in another PID
//! namespace, a process whose main thread has exited, and a process that forked are
//! all alive as long as they run, and dead as soon as they end. Issue 11, defects 1-3
//! and 8; each test failed on the pid-based peer table of layout version 1.

mod common;

use common::{
    LIVENESS, MUST_FINISH, PROMPTLY, ShmGuard, can_unshare_pid, run_as_child, spawn_child,
    spawn_child_under, wait_until,
};
use shmchan::{
    CreateMode, OpenError, Options, Receiver, RecvTimeoutError, Sender, TrySendError, WaitStrategy,
};
use std::time::{Duration, Instant};

/// Messages a slow sender sends, one every [`GAP`]: together many liveness intervals.
const N: u64 = 40;
const GAP: Duration = Duration::from_millis(20);
/// A new PID namespace with its own /proc, as a container has.
const UNSHARE: &[&str] = &["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"];
/// A new PID namespace that still sees the host's /proc.
const UNSHARE_HOST_PROC: &[&str] = &["unshare", "--pid", "--fork", "--kill-child"];

fn opts() -> Options {
    Options::new().liveness_interval(LIVENESS)
}

fn create_opts(capacity: usize) -> Options {
    opts().capacity(capacity).mode(CreateMode::CreateExclusive)
}

/// Child role: open `name` as the sender and send 0..N slowly, then leave.
fn slow_sender(name: &str) {
    let tx = Sender::<u64>::with_options(name, &opts()).expect("open sender");
    for i in 0..N {
        tx.send(i).expect("send");
        std::thread::sleep(GAP);
    }
}

/// Receives 0..N from a live but slow sender: never `Disconnected` before the last
/// message, and a second sender is refused while the first one runs. Then
/// `Disconnected` once the sender's process has ended.
fn receive_from_slow_sender(rx: &Receiver<u64>, name: &str, child: common::ChildProc) {
    let mut got = Vec::new();
    while (got.len() as u64) < N {
        match rx.recv_timeout(MUST_FINISH) {
            Ok(v) => got.push(v),
            Err(e) => panic!(
                "after {} of {N} messages from a live sender: {e:?}",
                got.len()
            ),
        }
        if got.len() == 2 || got.len() as u64 == N / 2 {
            match Sender::<u64>::with_options(name, &opts()) {
                Err(OpenError::RoleTaken { role: "sender", .. }) => {}
                other => panic!("second sender while the first runs: {other:?}"),
            }
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    child.wait_success();
    assert_eq!(
        rx.recv_timeout(PROMPTLY),
        Err(RecvTimeoutError::Disconnected)
    );
}

#[test]
fn sender_in_another_pid_namespace_is_alive_until_it_ends() {
    run_as_child(|env| slow_sender(&env.name));
    if !can_unshare_pid() {
        println!("SKIPPED: `unshare --pid --fork` is not available here");
        return;
    }
    let (_guard, name) = ShmGuard::fresh("live-ns-tx");
    let rx = Receiver::<u64>::with_options(&name, &create_opts(4)).expect("create");
    let child = spawn_child_under(
        UNSHARE,
        "sender_in_another_pid_namespace_is_alive_until_it_ends",
        "tx",
        &name,
        "",
    );
    receive_from_slow_sender(&rx, &name, child);
}

#[test]
fn receiver_that_is_pid_1_of_its_namespace_is_seen_to_die() {
    run_as_child(|env| {
        assert_eq!(std::process::id(), 1, "not pid 1 of a new namespace");
        let rx = Receiver::<u64>::with_options(&env.name, &opts()).expect("open receiver");
        assert_eq!(rx.recv(), Ok(7));
        common::sleep_until_killed();
    });
    if !can_unshare_pid() {
        println!("SKIPPED: `unshare --pid --fork` is not available here");
        return;
    }
    let (_guard, name) = ShmGuard::fresh("live-ns-rx");
    let tx = Sender::<u64>::with_options(&name, &create_opts(4)).expect("create");
    let child = spawn_child_under(
        UNSHARE_HOST_PROC,
        "receiver_that_is_pid_1_of_its_namespace_is_seen_to_die",
        "rx",
        &name,
        "",
    );
    tx.send(7).expect("send");
    wait_until("the receiver took the message", MUST_FINISH, || {
        tx.is_empty()
    });
    // Killing `unshare` kills its child, the namespace's pid 1, with it.
    child.kill();
    let t = Instant::now();
    loop {
        match tx.send_timeout(1, PROMPTLY) {
            Ok(()) => {}
            Err(shmchan::SendTimeoutError::Disconnected(_)) => break,
            Err(e) => panic!("the receiver died but the sender got {e:?}"),
        }
        assert!(
            t.elapsed() < PROMPTLY,
            "no Disconnected after {:?}",
            t.elapsed()
        );
    }
}

/// Exits the calling thread only (not the process), from a signal handler.
extern "C" fn exit_this_thread(_: libc::c_int) {
    // SAFETY: SYS_exit ends the calling thread; it is async-signal-safe.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
}

#[test]
fn process_whose_main_thread_exited_is_alive() {
    run_as_child(|env| {
        let tx = Sender::<u64>::with_options(&env.name, &opts()).expect("open sender");
        // The test runs on a thread of the harness; make the main thread exit, as a
        // program whose `main` calls pthread_exit would.
        // SAFETY: installs a handler that only calls SYS_exit; then signals the main
        // thread (its tid is the pid) of this process.
        unsafe {
            libc::signal(
                libc::SIGUSR1,
                exit_this_thread as *const () as libc::sighandler_t,
            );
            let pid = libc::getpid();
            libc::syscall(libc::SYS_tgkill, pid, pid, libc::SIGUSR1);
        }
        for i in 0..N {
            tx.send(i).expect("send");
            std::thread::sleep(GAP);
        }
        drop(tx);
        std::process::exit(0);
    });
    let (_guard, name) = ShmGuard::fresh("live-mainexit");
    let rx = Receiver::<u64>::with_options(&name, &create_opts(4)).expect("create");
    let child = spawn_child("process_whose_main_thread_exited_is_alive", "tx", &name, "");
    let pid = child.pid();
    assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(0));
    // The process now shows as a zombie in /proc (its main thread is gone) while its
    // worker sends on: a pid-based check took that for dead.
    wait_until("the main thread's exit", MUST_FINISH, || {
        proc_state(pid) == Some('Z')
    });
    let mut got = vec![0];
    while (got.len() as u64) < N {
        match rx.recv_timeout(MUST_FINISH) {
            Ok(v) => got.push(v),
            Err(e) => panic!("after {} messages: {e:?}", got.len()),
        }
        if got.len() == 3 {
            assert_eq!(proc_state(pid), Some('Z'));
            match Sender::<u64>::with_options(&name, &opts()) {
                Err(OpenError::RoleTaken { .. }) => {}
                other => panic!("second sender while the first runs: {other:?}"),
            }
        }
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert_eq!(
        rx.recv_timeout(MUST_FINISH),
        Err(RecvTimeoutError::Disconnected)
    );
    // The role exits through process::exit, which the harness does not see as a
    // finished test; wait for the process without checking its output.
    let mut child = child;
    let (status, out) = child.wait_timeout(MUST_FINISH);
    assert!(status.success(), "{status:?}\n{out}");
}

/// Run state of process `pid` (its main thread), from /proc.
fn proc_state(pid: u32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_ascii_whitespace().next()?.chars().next()
}

/// Forks; in the child runs `f` and leaves with `exit(f())`. Returns the child's pid.
fn fork_run(f: impl FnOnce() -> i32) -> libc::pid_t {
    // SAFETY: fork in a process whose other threads (the test harness's) hold no lock
    // we need in the child: the child only runs `f` (our handles, which allocate; glibc
    // keeps malloc usable across fork) and then exit.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(99);
        // SAFETY: ends the forked child through the C library's exit, which runs the C
        // exit handlers (the coverage runtime writes the child's counters there) but
        // none of Rust's clean-up of the parent's state.
        unsafe { libc::exit(code) };
    }
    pid
}

fn wait_pid(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a valid out pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFEXITED(status), "forked child status {status:#x}");
    libc::WEXITSTATUS(status)
}

#[test]
fn handles_inherited_through_fork_are_inert() {
    run_as_child(|env| {
        let name2 = format!("{}-own", env.name);
        let mut tx = Some(Sender::<u64>::with_options(&env.name, &opts()).expect("open sender"));
        let mut own =
            Some(Sender::<u64>::with_options(&name2, &create_opts(2)).expect("create own"));
        let mut rx_own = Some(Receiver::<u64>::with_options(&name2, &opts()).expect("open own"));
        let name3 = format!("{}-mpmc", env.name);
        let mut mpmc = Some((
            shmchan::mpmc::Sender::<u64>::with_options(&name3, &create_opts(2))
                .expect("create mpmc"),
            shmchan::mpmc::Receiver::<u64>::with_options(&name3, &opts()).expect("open mpmc"),
        ));
        let pid = fork_run(|| {
            // In the forked child every inherited handle is disconnected, and dropping
            // it leaves the entry, the lock and the name to the parent.
            let (tx, own, rx_own) = (tx.take(), own.take(), rx_own.take());
            let (Some(tx), Some(own), Some(rx_own), Some((mtx, mrx))) =
                (tx, own, rx_own, mpmc.take())
            else {
                return 98;
            };
            let mut fails = 0;
            if !matches!(mtx.try_send(3), Err(TrySendError::Disconnected(3))) {
                fails |= 16;
            }
            if mrx.try_recv() != Err(shmchan::TryRecvError::Disconnected) {
                fails |= 32;
            }
            if mrx.recv_timeout(Duration::from_secs(5)) != Err(RecvTimeoutError::Disconnected) {
                fails |= 64;
            }
            drop((mtx, mrx));
            // Attaching anew works in the child (the pre-fork-worker pattern, here
            // after the fork): a lock description and a membarrier registration of
            // its own.
            match shmchan::mpmc::Receiver::<u64>::with_options(&name3, &opts()) {
                Ok(r) => {
                    if r.try_recv() != Err(shmchan::TryRecvError::Empty) || r.is_disconnected() {
                        fails |= 128;
                    }
                }
                Err(_) => fails |= 256,
            }
            if !matches!(tx.try_send(99), Err(TrySendError::Disconnected(99))) {
                fails |= 1;
            }
            if !tx.is_disconnected() {
                fails |= 2;
            }
            if rx_own.try_recv() != Err(shmchan::TryRecvError::Disconnected) {
                fails |= 4;
            }
            if !matches!(own.try_send(1), Err(TrySendError::Disconnected(1))) {
                fails |= 8;
            }
            drop(tx);
            drop(own);
            drop(rx_own);
            fails
        });
        assert_eq!(wait_pid(pid), 0, "checks failed in the forked child");
        // The creating handle's copy did not remove the name in the child.
        assert!(
            common::shm_exists(&name2),
            "the forked child removed the name"
        );
        assert!(
            common::shm_exists(&name3),
            "the forked child removed the MPMC name"
        );
        // Our handles still work here.
        let (Some(tx), Some(own), Some(rx_own), Some((mtx, mrx))) = (tx, own, rx_own, mpmc) else {
            panic!("handles gone in the parent");
        };
        own.send(5).expect("send own");
        assert_eq!(rx_own.recv(), Ok(5));
        mtx.send(6).expect("send mpmc");
        assert_eq!(mrx.recv(), Ok(6));
        drop((mtx, mrx));
        for i in 0..N {
            tx.send(i).expect("send");
            std::thread::sleep(GAP);
        }
    });
    let (mut guard, name) = ShmGuard::fresh("live-fork");
    guard.add(&format!("{name}-own"));
    guard.add(&format!("{name}-mpmc"));
    let rx = Receiver::<u64>::with_options(&name, &create_opts(4)).expect("create");
    let child = spawn_child("handles_inherited_through_fork_are_inert", "tx", &name, "");
    receive_from_slow_sender(&rx, &name, child);
}

#[test]
fn parent_dies_while_its_forked_child_lives() {
    run_as_child(|env| {
        let tx = Sender::<u64>::with_options(&env.name, &opts()).expect("open sender");
        // A helper forked after attaching, which outlives us and never touches the
        // channel: its inherited descriptor must not keep our lock alive.
        let helper = fork_run(|| {
            // Let go of the output pipes, which the test reads to their end.
            // SAFETY: closes this (forked) process's own stdout and stderr.
            unsafe {
                libc::close(1);
                libc::close(2);
            }
            std::thread::sleep(Duration::from_secs(20));
            0
        });
        std::fs::write(&env.arg, helper.to_string()).expect("write pid");
        tx.send(1).expect("send");
        common::sleep_until_killed();
    });
    let (_guard, name) = ShmGuard::fresh("live-forkhelper");
    let dir = common::TempDir::new("live-forkhelper");
    let pid_file = dir.file("helper.pid");
    let rx = Receiver::<u64>::with_options(&name, &create_opts(4)).expect("create");
    let child = spawn_child(
        "parent_dies_while_its_forked_child_lives",
        "tx",
        &name,
        pid_file.to_str().expect("utf-8 path"),
    );
    assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(1));
    let helper: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    struct KillOnDrop(i32);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            // SAFETY: signals the helper process (an orphan by now, or already gone).
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _helper_guard = KillOnDrop(helper);
    child.kill();
    assert_eq!(
        rx.recv_timeout(PROMPTLY),
        Err(RecvTimeoutError::Disconnected),
        "the sender died but its forked helper kept it looking alive"
    );
    assert!(
        matches!(proc_state(helper as u32), Some(s) if s != 'Z' && s != 'X'),
        "the helper should still run: {:?}",
        proc_state(helper as u32)
    );
}

#[test]
fn killed_mpmc_sleeper_stops_costing_wake_ups() {
    run_as_child(|env| {
        let rx = shmchan::mpmc::Receiver::<u64>::with_options(
            &env.name,
            &opts().wait_strategy(WaitStrategy::Block),
        )
        .expect("open receiver");
        // Sleeps on the empty ring until killed.
        let _ = rx.recv();
    });
    let (_guard, name) = ShmGuard::fresh("live-mpmc-sleeper");
    let tx = shmchan::mpmc::Sender::<u64>::with_options(&name, &create_opts(64)).expect("create");
    let rx = shmchan::mpmc::Receiver::<u64>::with_options(&name, &opts()).expect("open");
    let child = spawn_child(
        "killed_mpmc_sleeper_stops_costing_wake_ups",
        "rx",
        &name,
        "",
    );
    wait_until("the receiver asleep", MUST_FINISH, || {
        shmchan::inspect(&name).map(|i| i.sleeping_receivers).ok() == Some(1)
    });
    child.kill();
    // Still counted right after the kill: nobody has looked yet.
    assert_eq!(
        shmchan::inspect(&name).map(|i| i.sleeping_receivers).ok(),
        Some(1)
    );
    // Sends (and receives) notice the count, look for the dead, and forget it.
    let t = Instant::now();
    let mut i = 0u64;
    while shmchan::inspect(&name).map(|i| i.sleeping_receivers).ok() != Some(0) {
        assert!(
            t.elapsed() < PROMPTLY,
            "a killed sleeper is still counted after {:?}",
            t.elapsed()
        );
        tx.send(i).expect("send");
        assert_eq!(rx.recv(), Ok(i));
        i += 1;
        std::thread::sleep(Duration::from_millis(1));
    }
    let info = shmchan::inspect(&name).expect("inspect");
    assert_eq!(info.peers.len(), 2, "{:?}", info.peers);
}

#[test]
fn durations_saturate_instead_of_panicking() {
    let (_guard, name) = ShmGuard::fresh("live-durmax");
    let long = Options::new()
        .liveness_interval(Duration::MAX)
        .init_timeout(Duration::MAX)
        .wait_strategy(WaitStrategy::SpinThenPark {
            spin: Duration::MAX,
        });
    let tx = Sender::<u64>::with_options(
        &name,
        &long.clone().capacity(2).mode(CreateMode::CreateExclusive),
    )
    .expect("create");
    let rx = Receiver::<u64>::with_options(&name, &long).expect("open");
    tx.send_timeout(1, Duration::MAX).expect("send");
    assert_eq!(rx.recv_timeout(Duration::MAX), Ok(1));
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(!rx.is_disconnected());
    assert!(!tx.is_disconnected());
    let (_g2, name2) = ShmGuard::fresh("live-durmax-mpmc");
    let mtx = shmchan::mpmc::Sender::<u64>::with_options(
        &name2,
        &long.clone().capacity(2).mode(CreateMode::CreateExclusive),
    )
    .expect("create mpmc");
    let mrx = shmchan::mpmc::Receiver::<u64>::with_options(&name2, &long).expect("open mpmc");
    mtx.send_timeout(2, Duration::MAX).expect("send");
    assert_eq!(mrx.recv_timeout(Duration::MAX), Ok(2));
    assert_eq!(
        mrx.recv_timeout(Duration::from_millis(5)),
        Err(RecvTimeoutError::Timeout)
    );
    assert!(!mrx.is_disconnected());
}

#[test]
fn descriptor_shortage_is_too_many_open_files() {
    run_as_child(|env| {
        // Lower both limits (for this child only) to a few descriptors above what is
        // open now, then attach channels until the descriptors run out.
        let open_now = std::fs::read_dir("/proc/self/fd").expect("fds").count() as u64;
        let lim = rustix::process::Rlimit {
            current: Some(open_now + 8),
            maximum: Some(open_now + 8),
        };
        rustix::process::setrlimit(rustix::process::Resource::Nofile, lim).expect("setrlimit");
        let mut kept = Vec::new();
        for i in 0..64 {
            let name = format!("{}-{i}", env.name);
            match Sender::<u64>::with_options(&name, &create_opts(2)) {
                Ok(tx) => kept.push(tx),
                Err(OpenError::TooManyOpenFiles) => {
                    assert!(!common::shm_exists(&name), "a failed create left {name}");
                    assert!(kept.len() >= 2, "only {} channels fit", kept.len());
                    // One descriptor per channel: every pair still works.
                    let rx = Receiver::<u64>::with_options(&format!("{}-0", env.name), &opts());
                    assert!(
                        matches!(rx, Err(OpenError::TooManyOpenFiles) | Ok(_)),
                        "{rx:?}"
                    );
                    let msg = OpenError::TooManyOpenFiles.to_string();
                    assert!(msg.contains("descriptor"), "{msg}");
                    return;
                }
                Err(e) => panic!("channel {i}: {e:?}"),
            }
        }
        panic!("64 channels fit in a handful of descriptors");
    });
    let (mut guard, name) = ShmGuard::fresh("live-emfile");
    for i in 0..64 {
        guard.add(&format!("{name}-{i}"));
    }
    spawn_child(
        "descriptor_shortage_is_too_many_open_files",
        "fd",
        &name,
        "",
    )
    .wait_success();
    let left: Vec<String> = (0..64)
        .map(|i| format!("{name}-{i}"))
        .filter(|n| common::shm_exists(n))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
