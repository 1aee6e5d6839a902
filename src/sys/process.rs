//! This process: which side of a `fork()` it is on, and the one open file
//! description it keeps per segment, through which it holds its liveness locks.
//!
//! # Why one description per segment, and what fork does to it
//!
//! A handle proves it is alive by holding an open-file-description lock on its
//! peer-table entry's byte (see [`crate::sys::ofd`]). Locks of one description never
//! conflict, and a description can hold many byte ranges, so every handle of this
//! process on one segment shares a single descriptor ([`SegFile`]): 10,000 channels
//! cost 10,000 descriptors, not one per handle.
//!
//! `fork()` copies descriptors, and with them the locks' description: a dead parent
//! whose forked child lives on would still look alive. So a `pthread_atfork` child
//! handler closes the child's copies at once, and advances the [fork
//! generation](generation): a handle compares the generation it attached in with the
//! current one (one relaxed load, no syscall) and is inert in a child: its
//! operations report `Disconnected`, and dropping it touches nothing shared. The
//! pre-fork-worker pattern is: fork first, then attach in each worker.

use std::cell::UnsafeCell;
use std::io;
use std::os::fd::{BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

/// Bumped in the child of every `fork()` (by the atfork child handler).
static FORK_GEN: AtomicU32 = AtomicU32::new(0);

/// The fork generation of this process: 0 in the process that started, one more in
/// each forked child than in its parent (at the time of the fork).
#[inline]
pub(crate) fn generation() -> u32 {
    // Relaxed: it changes only inside fork(), in the child's single thread, before any
    // other code of the child runs.
    FORK_GEN.load(Ordering::Relaxed)
}

/// Lock index of the creator's "still initialising" lock (peer entries use 0..192).
pub(crate) const INIT_LOCK: u8 = 255;
/// Byte of the segment object that names lock index 0 (far past any segment's end:
/// segments are at most 2^36 bytes).
pub(crate) const LOCK_BASE: u64 = 1 << 40;

/// The byte that names lock `index`.
pub(crate) fn lock_byte(index: u8) -> u64 {
    LOCK_BASE + index as u64
}

/// This process's open file description of one segment object.
#[derive(Debug)]
pub(crate) struct SegFile {
    /// Closed by `Drop`, or by the atfork child handler in a child (never twice).
    fd: RawFd,
    dev: u64,
    ino: u64,
    /// The fork generation this descriptor belongs to.
    fork_gen: u32,
    /// Lock indices this process holds through `fd` (bit `i` of word `i / 64`).
    held: [AtomicU64; 4],
}

/// Outcome of [`SegFile::try_hold`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    /// We took the lock.
    Taken,
    /// This process holds it already (another handle).
    HeldHere,
    /// Another process holds it.
    HeldElsewhere,
}

impl SegFile {
    /// This process's lock description of the object that `fd` (at `path`) refers
    /// to: the one it has, or a new one.
    ///
    /// The lock description is never the one a mapping was made from: a mapping holds
    /// a reference to its open file description, and a forked child inherits the
    /// mapping, so locks held through that description would outlive the process in
    /// any child that lives on. The child closes its copy of the lock descriptor (see
    /// the module docs) and keeps the mapping, which then holds no lock.
    pub(crate) fn adopt(fd: &OwnedFd, path: &str, dev: u64, ino: u64) -> io::Result<Arc<SegFile>> {
        install_atfork()?;
        let gen_now = generation();
        let mut reg = Registry::lock();
        if let Some(f) = reg.find(dev, ino) {
            return Ok(f);
        }
        let lock_fd = reopen(fd, path, dev, ino)?;
        let f = Arc::new(SegFile {
            fd: lock_fd.into_raw_fd(),
            dev,
            ino,
            fork_gen: gen_now,
            held: Default::default(),
        });
        reg.push(&f);
        Ok(f)
    }

    /// The descriptor.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        // SAFETY: `fd` stays open as long as `self` in the generation it belongs to;
        // callers check `is_current` before using it (in a forked child the number may
        // already name another file, and operations on it only fail or test nothing).
        unsafe { BorrowedFd::borrow_raw(self.fd) }
    }

    /// Whether this process is the one that opened the descriptor (not a forked child).
    #[inline]
    pub(crate) fn is_current(&self) -> bool {
        self.fork_gen == generation()
    }

    fn bit(index: u8) -> (usize, u64) {
        ((index / 64) as usize, 1u64 << (index % 64))
    }

    /// Takes lock `index` for this process unless someone holds it.
    pub(crate) fn try_hold(&self, index: u8) -> io::Result<Hold> {
        if !self.is_current() {
            return Err(io::Error::other("handle used in a forked child"));
        }
        let (w, b) = Self::bit(index);
        // AcqRel: claims of the same index in this process are ordered through this
        // bit (a second handle sees the first one's claim).
        if self.held[w].fetch_or(b, Ordering::AcqRel) & b != 0 {
            return Ok(Hold::HeldHere);
        }
        match crate::sys::ofd::try_lock(self.fd(), lock_byte(index)) {
            Ok(true) => Ok(Hold::Taken),
            Ok(false) => {
                self.held[w].fetch_and(!b, Ordering::AcqRel);
                Ok(Hold::HeldElsewhere)
            }
            Err(e) => {
                self.held[w].fetch_and(!b, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// Gives lock `index` up (this process held it).
    pub(crate) fn unhold(&self, index: u8) {
        if !self.is_current() {
            return;
        }
        let _ = crate::sys::ofd::unlock(self.fd(), lock_byte(index));
        let (w, b) = Self::bit(index);
        self.held[w].fetch_and(!b, Ordering::AcqRel);
    }

    /// Whether anyone (this process or another) holds lock `index`.
    ///
    /// Call it after loading the peer entry that names the holder (Acquire): a holder
    /// in this process sets its bit before it writes the entry, so the bit is seen.
    /// If the kernel cannot answer, the holder is taken as alive: a live peer taken
    /// for dead loses or duplicates messages, a dead one taken for alive only waits.
    pub(crate) fn is_held(&self, index: u8) -> bool {
        let (w, b) = Self::bit(index);
        if self.held[w].load(Ordering::Acquire) & b != 0 {
            return true;
        }
        if !self.is_current() {
            return true;
        }
        crate::sys::ofd::locked_by_other(self.fd(), lock_byte(index)).unwrap_or(true)
    }
}

impl Drop for SegFile {
    fn drop(&mut self) {
        if !self.is_current() {
            // A forked child: the atfork handler closed our copy already.
            return;
        }
        let mut reg = Registry::lock();
        reg.remove(self);
        drop(reg);
        // SAFETY: we own `fd`, it is open in this generation, and nothing else closes
        // it (the registry entry pointing at it is gone).
        drop(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(self.fd) });
    }
}

struct Entry {
    dev: u64,
    ino: u64,
    fd: RawFd,
    file: Weak<SegFile>,
}

/// Every `SegFile` of this process, for deduplication and for the atfork handler.
///
/// Guarded by a spin lock rather than a `Mutex`, because the atfork prepare handler
/// takes it and the parent and child handlers release it (so that no thread is in the
/// middle of changing it when the process forks).
struct Registry {
    locked: AtomicBool,
    entries: UnsafeCell<Vec<Entry>>,
}

// SAFETY: `entries` is only accessed while `locked` is held (see `RegistryGuard`).
unsafe impl Sync for Registry {}

static REGISTRY: Registry = Registry {
    locked: AtomicBool::new(false),
    entries: UnsafeCell::new(Vec::new()),
};

struct RegistryGuard;

impl Registry {
    fn acquire() {
        // Acquire pairs with the Release in `release`: the previous holder's changes to
        // `entries` are visible.
        while REGISTRY
            .locked
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::yield_now();
        }
    }

    fn release() {
        REGISTRY.locked.store(false, Ordering::Release);
    }

    fn lock() -> RegistryGuard {
        Self::acquire();
        RegistryGuard
    }
}

impl RegistryGuard {
    fn entries(&mut self) -> &mut Vec<Entry> {
        // SAFETY: the guard proves we hold the lock, so no other reference exists.
        unsafe { &mut *REGISTRY.entries.get() }
    }

    fn find(&mut self, dev: u64, ino: u64) -> Option<Arc<SegFile>> {
        self.entries()
            .iter()
            .filter(|e| e.dev == dev && e.ino == ino)
            .find_map(|e| e.file.upgrade())
    }

    fn push(&mut self, f: &Arc<SegFile>) {
        self.entries().push(Entry {
            dev: f.dev,
            ino: f.ino,
            fd: f.fd,
            file: Arc::downgrade(f),
        });
    }

    fn remove(&mut self, f: &SegFile) {
        let v = self.entries();
        if let Some(i) = v.iter().position(|e| e.fd == f.fd && e.ino == f.ino) {
            v.swap_remove(i);
        }
    }
}

impl Drop for RegistryGuard {
    fn drop(&mut self) {
        Registry::release();
    }
}

extern "C" fn atfork_prepare() {
    Registry::acquire();
}

extern "C" fn atfork_parent() {
    Registry::release();
}

extern "C" fn atfork_child() {
    // Only the forking thread exists here, and it holds the registry lock (taken in
    // the prepare handler). Close every descriptor of ours so that the child keeps no
    // lock of the parent alive, then forget the list without freeing it.
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
    // SAFETY: we hold the lock (taken by atfork_prepare in this same thread).
    let v = unsafe { &mut *REGISTRY.entries.get() };
    for e in v.iter() {
        // SAFETY: each fd is a descriptor the parent's SegFile owned; in the child
        // nothing else will close it (SegFile's Drop skips closing in another
        // generation). close(2) is async-signal-safe.
        unsafe { libc::close(e.fd) };
    }
    std::mem::forget(std::mem::take(v));
    Registry::release();
}

fn install_atfork() -> io::Result<()> {
    static INSTALLED: OnceLock<i32> = OnceLock::new();
    // SAFETY: the three handlers are `extern "C"` functions that live for the whole
    // program and only touch process-global atomics and the registry.
    let rc = *INSTALLED.get_or_init(|| unsafe {
        libc::pthread_atfork(
            Some(atfork_prepare),
            Some(atfork_parent),
            Some(atfork_child),
        )
    });
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}

/// A new open file description (read-write) of the object `fd` refers to: through
/// `/proc/self/fd`, or by its name if `/proc` is not mounted; checked to be the same
/// object.
fn reopen(fd: &OwnedFd, path: &str, dev: u64, ino: u64) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    let by_proc = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(fd));
    let new = match rustix::fs::open(by_proc.as_str(), flags, Mode::empty()) {
        Ok(f) => f,
        Err(rustix::io::Errno::MFILE) if raise_fd_limit() => {
            rustix::fs::open(by_proc.as_str(), flags, Mode::empty())?
        }
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => {
            rustix::shm::open(path, rustix::shm::OFlags::RDWR, Mode::empty())?
        }
        Err(e) => return Err(e.into()),
    };
    let st = rustix::fs::fstat(&new)?;
    if st.st_dev != dev || st.st_ino != ino {
        return Err(io::Error::other(
            "the channel's name was replaced while it was being opened; try again",
        ));
    }
    Ok(new)
}

/// Raises the soft limit of open descriptors to the hard limit, once. Returns whether
/// it rose (then an `EMFILE` is worth retrying).
pub(crate) fn raise_fd_limit() -> bool {
    use rustix::process::{Resource, getrlimit, setrlimit};
    static RAISED: AtomicBool = AtomicBool::new(false);
    if RAISED.swap(true, Ordering::Relaxed) {
        return false;
    }
    let mut lim = getrlimit(Resource::Nofile);
    if lim.current >= lim.maximum {
        return false;
    }
    lim.current = lim.maximum;
    setrlimit(Resource::Nofile, lim).is_ok()
}

/// Display facts about this process for the peer table: its pid as seen in its own
/// PID namespace, and the inode of that namespace (0 if unknown). Cached per fork
/// generation (reading `/proc/self/ns/pid` costs a path walk per attach otherwise).
pub(crate) fn identity() -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    static CACHED_GEN: AtomicU32 = AtomicU32::new(0);
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let tag = generation().wrapping_add(1);
    // Acquire pairs with the Release below: the value stored before the tag is seen.
    if CACHED_GEN.load(Ordering::Acquire) == tag {
        let v = CACHED.load(Ordering::Relaxed);
        return (v as u32, (v >> 32) as u32);
    }
    let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
    let ns = std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino() as u32)
        .unwrap_or(0);
    // Racing callers store the same values.
    CACHED.store((ns as u64) << 32 | pid as u64, Ordering::Relaxed);
    CACHED_GEN.store(tag, Ordering::Release);
    (pid, ns)
}

/// An unlinked temporary file, its device and inode: an object to lock in unit tests.
#[cfg(test)]
pub(crate) fn temp_fd() -> (OwnedFd, u64, u64) {
    use std::os::unix::fs::MetadataExt;
    static N: AtomicU32 = AtomicU32::new(0);
    let p = std::env::temp_dir().join(format!(
        "shmchan-segfile-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&p)
        .expect("temp file");
    let _ = std::fs::remove_file(&p);
    let m = f.metadata().expect("metadata");
    (OwnedFd::from(f), m.dev(), m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::os::fd::{AsFd, AsRawFd};

    /// A `SegFile` whose lock requests fail (its descriptor is read-only: write
    /// locks need write access).
    fn read_only_file() -> SegFile {
        use rustix::fs::{Mode, OFlags};
        let (fd, dev, ino) = temp_fd();
        let by_proc = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let ro = rustix::fs::open(
            by_proc.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        SegFile {
            fd: ro.into_raw_fd(),
            dev,
            ino,
            fork_gen: generation(),
            held: Default::default(),
        }
    }

    /// A lock request the kernel refuses is an error, not a claim: the local bit set
    /// in anticipation is taken back, so this process does not go on believing it
    /// holds the lock, and a claim of a peer entry reports the error.
    #[test]
    fn a_refused_lock_request_leaves_no_local_claim() {
        use crate::layout::PeerEntry;
        use std::sync::atomic::AtomicU32;
        let f = read_only_file();
        let e = f.try_hold(7).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EBADF), "{e}");
        assert!(!f.is_held(7));
        let entries: Vec<PeerEntry> = (0..2)
            .map(|_| PeerEntry {
                state: AtomicU64::new(0),
                stamp: AtomicU64::new(0),
            })
            .collect();
        let r = crate::peers::claim_any(
            &f,
            &entries,
            0,
            crate::peers::Role::Sender,
            &AtomicU32::new(0),
        );
        assert_eq!(r.unwrap_err().raw_os_error(), Some(libc::EBADF));
        assert!(entries.iter().all(|e| e.state.load(Ordering::SeqCst) == 0));
        assert!(!f.is_held(0) && !f.is_held(1));
    }

    /// The lock description must be of the object that was opened: a name replaced in
    /// between (only possible when reopening by name) is refused.
    #[test]
    fn reopen_refuses_another_object() {
        let (fd, dev, ino) = temp_fd();
        let same = reopen(&fd, "/unused", dev, ino).unwrap();
        assert_ne!(same.as_raw_fd(), fd.as_raw_fd());
        for (d, i) in [(dev, ino + 1), (dev + 1, ino)] {
            let e = reopen(&fd, "/unused", d, i).unwrap_err();
            assert!(e.to_string().contains("replaced"), "{e}");
        }
    }

    /// In a forked child the parent's `SegFile` is inert (its descriptor was closed by
    /// the atfork handler): it claims nothing, releases nothing of the parent's, and
    /// takes every holder for alive. A new attach in the child gets a description of
    /// its own, which sees the parent's lock as held elsewhere; the parent keeps it.
    #[test]
    fn a_forked_child_neither_uses_nor_releases_the_parents_locks() {
        let (fd, dev, ino) = temp_fd();
        let f = SegFile::adopt(&fd, "/unused", dev, ino).unwrap();
        assert_eq!(f.try_hold(5).unwrap(), Hold::Taken);
        // SAFETY: the child only runs the checks below (our own code, malloc, fcntl)
        // and leaves with exit(3), which runs the C exit handlers only (the coverage
        // runtime writes the child's counters there); nothing else of the parent's
        // threads is needed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork: {}", io::Error::last_os_error());
        if pid == 0 {
            let check = || -> i32 {
                let mut fails = 0;
                if f.is_current() || generation() == f.fork_gen {
                    fails |= 1;
                }
                if f.try_hold(6).is_ok() {
                    fails |= 2;
                }
                if !f.is_held(9) {
                    fails |= 4;
                }
                f.unhold(5);
                // A fresh attach of the same object in the child.
                match SegFile::adopt(&fd, "/unused", dev, ino) {
                    Ok(g) if !Arc::ptr_eq(&g, &f) => {
                        if g.try_hold(5).ok() != Some(Hold::HeldElsewhere) {
                            fails |= 8;
                        }
                        if !g.is_held(5) {
                            fails |= 16;
                        }
                    }
                    _ => fails |= 32,
                }
                fails
            };
            let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)).unwrap_or(99);
            // SAFETY: ends the forked child; see above.
            unsafe { libc::exit(code) };
        }
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0, "checks failed in the child");
        // The child's unhold did not release the parent's lock.
        assert!(f.is_current());
        let other = reopen(&fd, "/unused", dev, ino).unwrap();
        assert!(crate::sys::ofd::locked_by_other(other.as_fd(), lock_byte(5)).unwrap());
        f.unhold(5);
        assert!(!crate::sys::ofd::locked_by_other(other.as_fd(), lock_byte(5)).unwrap());
    }

    #[test]
    fn one_description_per_object_and_local_holds() {
        let (fd, dev, ino) = temp_fd();
        let a = SegFile::adopt(&fd, "/unused", dev, ino).unwrap();
        let b = SegFile::adopt(&fd, "/unused", dev, ino).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        // The lock description is not the one given (mappings are made from that).
        assert_ne!(a.fd, fd.as_raw_fd());
        assert!(!a.is_held(7));
        assert_eq!(a.try_hold(7).unwrap(), Hold::Taken);
        assert_eq!(b.try_hold(7).unwrap(), Hold::HeldHere);
        assert!(a.is_held(7));
        a.unhold(7);
        assert!(!a.is_held(7));
        assert_eq!(a.try_hold(INIT_LOCK).unwrap(), Hold::Taken);
        assert!(a.is_held(INIT_LOCK));
    }
}
