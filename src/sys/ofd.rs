//! Open-file-description locks (`fcntl(F_OFD_SETLK / F_OFD_GETLK)`) on single bytes of
//! a file: the kernel-held facts that liveness is built on.
//!
//! An OFD lock belongs to the open file description, not to a process or a thread: it
//! is released when the last file descriptor of that description is closed, which at
//! the latest happens when the process ends (by any cause, any thread layout). It is
//! visible to every process that can open the file, whatever its PID namespace, and a
//! stopped process keeps it. Locks of one description never conflict with each other,
//! so a test made through the description that holds a lock reports it free. See
//! `fcntl(2)`, "Open file description locks".
//!
//! The byte ranges may lie past the end of the file; no data is locked, the bytes are
//! only names.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn flock(kind: libc::c_int, offset: u64) -> libc::flock {
    // SAFETY: `flock` is plain integers; all-zero is a valid value (l_pid must be 0
    // for OFD requests).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset as libc::off_t;
    fl.l_len = 1;
    fl
}

fn fcntl_lock(fd: BorrowedFd<'_>, cmd: libc::c_int, fl: &mut libc::flock) -> io::Result<()> {
    loop {
        // SAFETY: `fd` is an open descriptor for the duration of the call, and `fl`
        // points to a valid, writable `flock` (GETLK writes the result into it).
        let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, fl as *mut libc::flock) };
        if r != -1 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
}

/// Takes a write lock on byte `offset` without waiting. `Ok(false)` if another open
/// file description holds a lock on it. The file must be open for writing.
pub(crate) fn try_lock(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, offset);
    match fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Releases our lock on byte `offset` (nothing happens if we hold none).
pub(crate) fn unlock(fd: BorrowedFd<'_>, offset: u64) -> io::Result<()> {
    let mut fl = flock(libc::F_UNLCK, offset);
    fcntl_lock(fd, libc::F_OFD_SETLK, &mut fl)
}

/// Whether an open file description other than `fd`'s holds a lock on byte `offset`.
pub(crate) fn locked_by_other(fd: BorrowedFd<'_>, offset: u64) -> io::Result<bool> {
    let mut fl = flock(libc::F_WRLCK, offset);
    fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl)?;
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn locks_conflict_between_descriptions_only() {
        let dir = std::env::temp_dir().join(format!("shmchan-ofd-{}", std::process::id()));
        let a = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        let b = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dir)
            .unwrap();
        let _ = std::fs::remove_file(&dir);
        let far = 1u64 << 40;
        assert!(try_lock(a.as_fd(), far + 3).unwrap());
        // Our own description does not see its own lock; the other one does.
        assert!(!locked_by_other(a.as_fd(), far + 3).unwrap());
        assert!(locked_by_other(b.as_fd(), far + 3).unwrap());
        assert!(!locked_by_other(b.as_fd(), far + 4).unwrap());
        assert!(!try_lock(b.as_fd(), far + 3).unwrap());
        assert!(try_lock(b.as_fd(), far + 4).unwrap());
        unlock(a.as_fd(), far + 3).unwrap();
        assert!(!locked_by_other(b.as_fd(), far + 3).unwrap());
        // Closing the last descriptor of a description drops its locks.
        drop(b);
        assert!(!locked_by_other(a.as_fd(), far + 4).unwrap());
    }
}
