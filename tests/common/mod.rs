//! Helpers shared by the integration tests: unique names, clean-up guards, child
//! processes (the test binary re-executed as a child), a small random generator and a
//! self-checking message type.
//!
//! # Child processes
//!
//! A test that needs a second process calls [`run_as_child`] first thing. In the
//! parent that returns at once; in a child (started by [`spawn_child`], which runs
//! `current_exe() --exact <test> --nocapture --test-threads=1` with [`ROLE_ENV`] set)
//! it runs the role closure and exits with status 0. A role fails by panicking, which
//! makes the child's test fail with status 101; the parent sees that in
//! [`ChildProc::wait_success`] together with the child's output.
//!
//! Every file in `tests/` compiles this module on its own, and not every file uses
//! every helper.
#![allow(dead_code)]

use bytemuck::{Pod, Zeroable};
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Environment variable naming the role a child runs.
pub const ROLE_ENV: &str = "SHMCHAN_CHILD_ROLE";
/// Environment variable holding the channel name a child uses.
pub const NAME_ENV: &str = "SHMCHAN_CHILD_NAME";
/// Environment variable holding a free-form argument for the child.
pub const ARG_ENV: &str = "SHMCHAN_CHILD_ARG";

/// Upper bound for anything that must finish: generous, because these machines are
/// small (2 vCPUs) and noisy, and a debug build is slow. Only a hang should hit it.
pub const MUST_FINISH: Duration = Duration::from_secs(60);

/// Loose upper bound for "returns promptly" (a timeout, a wake-up, a disconnect).
pub const PROMPTLY: Duration = Duration::from_secs(5);

/// Liveness interval used where a test waits for a dead peer to be noticed.
pub const LIVENESS: Duration = Duration::from_millis(20);

// ---------------------------------------------------------------------------------
// Randomness (no dev-dependencies: a splitmix64 seeded from the clock and the pid).
// ---------------------------------------------------------------------------------

/// A small, fast, non-cryptographic generator (splitmix64).
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator seeded from the clock, the pid and a process-wide counter.
    pub fn from_entropy() -> Rng {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut r =
            Rng(nanos ^ (u64::from(std::process::id()) << 32) ^ n.wrapping_mul(0x9e37_79b9));
        r.next_u64();
        r
    }

    /// A generator with a fixed seed.
    pub fn with_seed(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// A value in `lo..hi` (`hi > lo`).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(hi > lo);
        lo + self.next_u64() % (hi - lo)
    }
}

/// The splitmix64 finaliser: a good 64-bit mixing function.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

// ---------------------------------------------------------------------------------
// Names and clean-up.
// ---------------------------------------------------------------------------------

/// A channel name nobody else uses: tag, pid, a per-process counter and random bits.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let r = Rng::from_entropy().next_u64() as u32;
    format!("shmchan-test-{tag}-{}-{n}-{r:08x}", std::process::id())
}

/// Path of the object backing channel `name`.
pub fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name)
}

/// Whether `/dev/shm/<name>` exists.
pub fn shm_exists(name: &str) -> bool {
    shm_path(name).exists()
}

/// Asserts that every name is gone from `/dev/shm` (the test cleaned up after itself).
pub fn assert_shm_gone(names: &[&str]) {
    for name in names {
        assert!(
            !shm_exists(name),
            "/dev/shm/{name} is still there at the end of the test"
        );
    }
}

/// Removes the channel names it holds when dropped (also when the test panics), so a
/// failing test leaves nothing in `/dev/shm`.
#[derive(Debug)]
pub struct ShmGuard {
    names: Vec<String>,
}

impl ShmGuard {
    /// A guard for one name.
    pub fn new(name: &str) -> ShmGuard {
        ShmGuard {
            names: vec![name.to_owned()],
        }
    }

    /// A guard for a fresh unique name; returns the guard and the name.
    pub fn fresh(tag: &str) -> (ShmGuard, String) {
        let name = unique_name(tag);
        (ShmGuard::new(&name), name)
    }

    /// Also removes `name` on drop.
    pub fn add(&mut self, name: &str) {
        self.names.push(name.to_owned());
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = shmchan::remove(name);
            // Objects made by hand (not through shmchan) are removed the same way, but
            // an invalid name cannot be: fall back to the file system.
            let _ = std::fs::remove_file(shm_path(name));
        }
    }
}

/// A directory under the system temp dir, removed (with its content) on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates a fresh directory.
    pub fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique_name(tag));
        std::fs::create_dir_all(&path).expect("create temp dir");
        TempDir { path }
    }

    /// Path of the directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path of a file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

// ---------------------------------------------------------------------------------
// Child processes.
// ---------------------------------------------------------------------------------

/// What a child was started with.
#[derive(Debug, Clone)]
pub struct ChildEnv {
    /// The role to run.
    pub role: String,
    /// The channel name.
    pub name: String,
    /// A free-form argument.
    pub arg: String,
}

impl ChildEnv {
    /// The argument parsed as a number.
    pub fn arg_u64(&self) -> u64 {
        self.arg
            .parse()
            .unwrap_or_else(|_| panic!("child arg {:?} is not a number", self.arg))
    }
}

/// The child environment, if this process is a child.
pub fn child_env() -> Option<ChildEnv> {
    let role = std::env::var(ROLE_ENV).ok()?;
    Some(ChildEnv {
        role,
        name: std::env::var(NAME_ENV).unwrap_or_default(),
        arg: std::env::var(ARG_ENV).unwrap_or_default(),
    })
}

/// In a child: runs `role` and exits with status 0 (a panic in `role` fails the
/// child's test instead). In the parent: returns at once.
pub fn run_as_child(role: impl FnOnce(&ChildEnv)) {
    if let Some(env) = child_env() {
        role(&env);
        std::process::exit(0);
    }
}

/// In a child: sleeps until killed. Gives up (exits 0) if the parent dies or after
/// two minutes, so that a failed test never leaves a process behind for long.
pub fn sleep_until_killed() -> ! {
    let parent = rustix::process::getppid();
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if rustix::process::getppid() != parent || start.elapsed() > Duration::from_secs(120) {
            std::process::exit(0);
        }
    }
}

/// Whether the parent of this (child) process is gone: then stop what we are doing.
pub fn orphaned(original_parent: Option<rustix::process::Pid>) -> bool {
    rustix::process::getppid() != original_parent
}

/// A child process running one role of a test, with its output collected.
#[derive(Debug)]
pub struct ChildProc {
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
    what: String,
}

fn collect(mut r: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// Starts this test binary again, running only test `test` in role `role` on channel
/// `name`, with `arg` for the role to parse.
pub fn spawn_child(test: &str, role: &str, name: &str, arg: &str) -> ChildProc {
    spawn_child_under(&[], test, role, name, arg)
}

/// Like [`spawn_child`], with the test binary run by the command `wrapper` (for
/// example `["unshare", "--pid", "--fork", "--kill-child"]`); empty: run directly.
pub fn spawn_child_under(
    wrapper: &[&str],
    test: &str,
    role: &str,
    name: &str,
    arg: &str,
) -> ChildProc {
    let exe = std::env::current_exe().expect("current_exe");
    let mut cmd = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = cmd
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(NAME_ENV, name)
        .env(ARG_ENV, arg)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().map(collect);
    let stderr = child.stderr.take().map(collect);
    ChildProc {
        child: Some(child),
        stdout,
        stderr,
        what: format!("child {test}/{role} on {name} (arg {arg:?})"),
    }
}

impl ChildProc {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child").id()
    }

    /// Whether the child is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().expect("child").try_wait(), Ok(None))
    }

    fn output(&mut self) -> String {
        let out = self
            .stdout
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        let err = self
            .stderr
            .take()
            .map(|h| h.join().unwrap_or_default())
            .unwrap_or_default();
        format!(
            "--- stdout of {} ---\n{out}\n--- stderr ---\n{err}",
            self.what
        )
    }

    /// Waits at most `timeout` for the child to exit; kills it and panics (showing its
    /// output) if it does not. Returns its status and output.
    pub fn wait_timeout(&mut self, timeout: Duration) -> (ExitStatus, String) {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().expect("child");
        loop {
            match child.try_wait().expect("try_wait") {
                Some(status) => {
                    self.child = None;
                    let out = self.output();
                    return (status, out);
                }
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    self.child = None;
                    let out = self.output();
                    panic!(
                        "{} did not finish within {timeout:?}; killed it\n{out}",
                        self.what
                    );
                }
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        }
    }

    /// Waits (at most [`MUST_FINISH`]) for the child to exit, and asserts that its
    /// role ran and succeeded. Returns its output.
    pub fn wait_success(mut self) -> String {
        let (status, out) = self.wait_timeout(MUST_FINISH);
        assert!(
            status.success(),
            "{} failed with {status:?}\n{out}",
            self.what
        );
        // A misspelt test name runs zero tests and also exits 0: make sure the role ran.
        assert!(
            out.contains("running 1 test"),
            "{} did not run its test (wrong test name?)\n{out}",
            self.what
        );
        out
    }

    /// SIGKILLs the child, which must still be running (a child that crashed or exited
    /// early is a test failure, not something a kill may hide), and reaps it.
    pub fn kill(mut self) -> String {
        let child = self.child.as_mut().expect("child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            let out = self.output();
            panic!(
                "{} exited with {status:?} before it was killed\n{out}",
                self.what
            );
        }
        child.kill().expect("kill");
        let status = child.wait().expect("wait");
        self.child = None;
        let out = self.output();
        assert_eq!(
            status.signal(),
            Some(9),
            "{} did not die of SIGKILL: {status:?}\n{out}",
            self.what
        );
        out
    }

    /// SIGKILLs the child like [`kill`](Self::kill) but leaves it unreaped (a zombie):
    /// the caller must call [`reap_killed`](Self::reap_killed) later.
    pub fn kill_no_reap(&mut self) {
        let child = self.child.as_mut().expect("child");
        if let Some(status) = child.try_wait().expect("try_wait") {
            self.child = None;
            let out = self.output();
            panic!(
                "{} exited with {status:?} before it was killed\n{out}",
                self.what
            );
        }
        child.kill().expect("kill");
    }

    /// Reaps a child killed by [`kill_no_reap`](Self::kill_no_reap).
    pub fn reap_killed(mut self) -> String {
        let (status, out) = self.wait_timeout(MUST_FINISH);
        assert_eq!(
            status.signal(),
            Some(9),
            "{} did not die of SIGKILL: {status:?}\n{out}",
            self.what
        );
        out
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // Only when the test failed before waiting: never leave a process behind.
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pid of a process that has exited and been reaped (so no process has it, for a
/// while: pids are reused only after the pid space wraps).
pub fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().expect("spawn true");
    let pid = child.id();
    child.wait().expect("wait true");
    pid
}

/// Polls `cond` every millisecond until it holds; panics with `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Takes the liveness lock `index` of channel `name` (peer entry `index`, or 255 for
/// the creator's init lock) through a new open file description, as a live peer in
/// another process would hold it. The lock is released when the file is dropped.
pub fn hold_liveness_lock(name: &str, index: u8) -> std::fs::File {
    use std::os::fd::AsRawFd;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(shm_path(name))
        .expect("open object");
    // SAFETY: all-zero is a valid flock; the fd is open; fcntl writes nothing here.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = ((1u64 << 40) + index as u64) as libc::off_t;
    fl.l_len = 1;
    // SAFETY: as above.
    let r = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) };
    assert_eq!(r, 0, "lock {index}: {}", std::io::Error::last_os_error());
    f
}

/// Whether `unshare --pid --fork --mount-proc` works here (root, or user namespaces
/// allowed).
pub fn can_unshare_pid() -> bool {
    Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Run state of thread `tid` of this process (`R`, `S`, `D`, ...), from /proc.
pub fn thread_state(tid: i32) -> Option<char> {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    rest.split_ascii_whitespace().next()?.chars().next()
}

/// A read-write shared mapping of channel `name`'s whole object, as another process
/// (a hostile one, or a test's probe) would make it, accessed through atomics only.
pub struct ObjectMap {
    map: memmap2::MmapMut,
}

impl ObjectMap {
    /// Maps `/dev/shm/<name>`.
    pub fn open(name: &str) -> ObjectMap {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm_path(name))
            .expect("open object");
        // SAFETY: a shared mapping of an object other processes use concurrently; it
        // is only accessed through the atomics below, and nobody shrinks the object
        // while a test runs.
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("map object");
        ObjectMap { map }
    }

    /// Length of the mapping.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The 8-byte word at `off`.
    pub fn u64_at(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.map.len(), "word at {off}");
        // SAFETY: in bounds and 8-aligned (the mapping is page aligned); the memory is
        // shared with other processes, which is what atomics are for.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU64) }
    }

    /// The 4-byte word at `off`.
    pub fn u32_at(&self, off: usize) -> &AtomicU32 {
        assert!(off % 4 == 0 && off + 4 <= self.map.len(), "word at {off}");
        // SAFETY: as in `u64_at`, 4-aligned.
        unsafe { &*(self.map.as_ptr().add(off) as *const AtomicU32) }
    }
}

/// Whether every thread of process `pid` is stopped (`T` or `t` in its stat):
/// `kill(SIGSTOP)` returns before the stop takes effect.
pub fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| {
                let rest = &s[s.rfind(')')? + 1..];
                rest.split_ascii_whitespace().next()?.chars().next()
            })
            .is_some_and(|c| c == 'T' || c == 't')
    })
}

// ---------------------------------------------------------------------------------
// Messages.
// ---------------------------------------------------------------------------------

/// A message that checks itself: the payload and `check` are functions of `seq` and
/// the producer's tag (`payload[0]`), so a torn or garbage message is detected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
#[repr(C)]
pub struct Msg {
    /// Sequence number.
    pub seq: u64,
    /// `payload[0]` is the producer's tag, the rest derived from `seq` and the tag.
    pub payload: [u32; 6],
    /// Checksum over `seq` and the payload.
    pub check: u64,
}

impl Msg {
    /// The message number `seq` of the producer tagged `tag`.
    pub fn new(tag: u32, seq: u64) -> Msg {
        let mut payload = [tag; 6];
        for (i, p) in payload.iter_mut().enumerate().skip(1) {
            *p = mix64(seq ^ (u64::from(tag) << 40) ^ ((i as u64) << 56)) as u32;
        }
        let mut m = Msg {
            seq,
            payload,
            check: 0,
        };
        m.check = m.checksum();
        m
    }

    /// The checksum of `seq` and `payload`.
    pub fn checksum(&self) -> u64 {
        let mut h = mix64(self.seq ^ 0x5eed);
        for p in self.payload {
            h = mix64(h ^ u64::from(p));
        }
        h
    }

    /// The producer's tag.
    pub fn tag(&self) -> u32 {
        self.payload[0]
    }

    /// Whether the message is whole: equal to what `new` makes for its tag and seq.
    pub fn is_valid(&self) -> bool {
        *self == Msg::new(self.tag(), self.seq)
    }
}

/// Calls `f` until it returns `Some`, checking between calls that `child` still runs:
/// if the child exits first (and `f` still has nothing), or `MUST_FINISH` passes, the
/// test fails with the child's output instead of waiting for a message that will
/// never come. `f` should wait briefly itself (e.g. `recv_timeout` of a few ms).
pub fn poll_with_child<T>(
    child: &mut ChildProc,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + MUST_FINISH;
    loop {
        if let Some(v) = f() {
            return v;
        }
        if !child.is_running() {
            // One last look: it may have delivered just before leaving.
            if let Some(v) = f() {
                return v;
            }
            let (status, out) = child.wait_timeout(MUST_FINISH);
            panic!("waiting for {what}: the child exited ({status:?}) first\n{out}");
        }
        if Instant::now() >= deadline {
            let _ = child.child.as_mut().map(|c| c.kill());
            let (status, out) = child.wait_timeout(MUST_FINISH);
            panic!("waiting for {what}: nothing after {MUST_FINISH:?} ({status:?})\n{out}");
        }
    }
}

/// Kills a child that is still running after a time limit, so that a blocking call
/// without a timeout in the parent (`recv`, `recv_ref`, `loan`, ...) cannot hang the
/// test: the child's death turns it into `Disconnected`. Disarmed on drop; drop it
/// before reaping the child.
#[derive(Debug)]
pub struct Watchdog {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Arms a watchdog that SIGKILLs `child` after `limit`.
    pub fn new(child: &ChildProc, limit: Duration) -> Watchdog {
        let pid = rustix::process::Pid::from_raw(child.pid() as i32).expect("pid");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = std::thread::spawn(move || {
            let deadline = Instant::now() + limit;
            while !stop2.load(Ordering::Relaxed) {
                if Instant::now() >= deadline {
                    eprintln!("watchdog: child {pid:?} still running after {limit:?}; killing it");
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Watchdog {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
