//! The backing object of a channel and its mapping: create, open, size checks, unlink.
//!
//! Objects are POSIX shared memory (`shm_open`, visible in `/dev/shm`). The mapping is
//! made only after `fstat` says the object is as long as it must be: touching a page
//! past the end of a shared object raises `SIGBUS`, which no check afterwards could
//! catch.

use crate::error::OpenError;
use crate::fault::{self, Point};
use crate::sys::process::{Hold, INIT_LOCK, SegFile};
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::Mode;
use rustix::shm;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

/// Longest accepted name, in bytes (a file name in `/dev/shm` is at most 255 bytes,
/// and the kernel's name carries our leading `/`).
pub const MAX_NAME_LEN: usize = 254;

/// Checks a channel name and returns it in the form `shm_open` wants (`/name`).
///
/// A single leading `/` is accepted and ignored, so `"ticks"` and `"/ticks"` name the
/// same channel.
pub(crate) fn shm_path(name: &str) -> Result<String, OpenError> {
    let bad = |reason| OpenError::InvalidName {
        name: name.to_owned(),
        reason,
    };
    let bare = name.strip_prefix('/').unwrap_or(name);
    if bare.is_empty() {
        return Err(bad("empty"));
    }
    if bare.contains('/') {
        return Err(bad("contains '/'"));
    }
    if bare.contains('\0') {
        return Err(bad("contains NUL"));
    }
    if bare == "." || bare == ".." {
        return Err(bad("'.' and '..' are not names"));
    }
    if bare.len() > MAX_NAME_LEN {
        return Err(bad("longer than 254 bytes"));
    }
    Ok(format!("/{bare}"))
}

/// A mapped object. Unmapped on drop, and unlinked too if this handle owns the name.
#[derive(Debug)]
pub(crate) struct Segment {
    map: MmapRaw,
    /// This process's descriptor of the object (shared by all its handles on it),
    /// through which the handle's liveness lock is held.
    pub file: Arc<SegFile>,
    /// The name and identity of our object, if this handle removes the name on drop.
    unlink_on_drop: Option<Owned>,
}

/// A name this handle created, and the identity (device, inode) of the object it made,
/// so that on drop it removes the name only if the name still refers to that object.
#[derive(Debug)]
struct Owned {
    path: String,
    dev: u64,
    ino: u64,
}

/// The object's size and owner, read with `fstat`.
pub(crate) struct ObjectInfo {
    pub size: u64,
    pub uid: u32,
    pub dev: u64,
    pub ino: u64,
}

pub(crate) fn stat(fd: impl AsFd) -> Result<ObjectInfo, OpenError> {
    let st = rustix::fs::fstat(fd).map_err(|e| OpenError::Io(e.into()))?;
    Ok(ObjectInfo {
        size: st.st_size.max(0) as u64,
        uid: st.st_uid,
        dev: st.st_dev,
        ino: st.st_ino,
    })
}

/// Allocates the object's pages now, so that a full `/dev/shm` (a container's is often
/// 64 MiB) is an error here and not a `SIGBUS` at the first send that touches a page
/// the filesystem cannot back. A filesystem without `fallocate` keeps the old
/// behaviour (pages allocated on first touch).
fn reserve(fd: impl AsFd, len: u64, name: &str) -> Result<(), OpenError> {
    use rustix::fs::{FallocateFlags, fallocate};
    use rustix::io::Errno;
    let once = || {
        fault::hit(Point::Fallocate)?;
        fallocate(&fd, FallocateFlags::empty(), 0, len)
    };
    // tmpfs gives up a long allocation when a signal arrives (EINTR): try again.
    let mut r = once();
    while r == Err(Errno::INTR) {
        r = once();
    }
    match r {
        Ok(()) => Ok(()),
        Err(Errno::NOSPC) => Err(OpenError::NoSpace {
            name: name.to_owned(),
            needed: len,
        }),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => Ok(()),
        Err(e) => Err(OpenError::Io(e.into())),
    }
}

fn map(fd: &OwnedFd, len: usize) -> Result<MmapRaw, OpenError> {
    map_as(fd, len, true)
}

/// Maps `len` bytes of `fd`, populated or lazily.
///
/// MAP_POPULATE: the page tables are filled now, so no send or receive takes a page
/// fault on its first lap (measured: 3 faults inside a timed round-trip loop before,
/// none after). Mapping a large segment costs that time once, up front. It also
/// allocates every page of a sparse object, so an object is mapped populated only
/// once its header has been validated (a garbage object of 64 GiB would otherwise cost
/// 64 GiB of memory before it is found to be garbage).
fn map_as(fd: &OwnedFd, len: usize, populate: bool) -> Result<MmapRaw, OpenError> {
    fault::hit(Point::Mmap).map_err(|e| OpenError::Io(e.into()))?;
    let mut o = MmapOptions::new();
    o.len(len);
    if populate {
        o.populate();
    }
    Ok(o.map_raw(fd.as_raw_fd())?)
}

/// `shm_open`, raising the soft descriptor limit once if it is reached.
fn shm_open(path: &str, flags: shm::OFlags, mode: Mode, name: &str) -> Result<OwnedFd, OpenError> {
    match shm::open(path, flags, mode) {
        Err(rustix::io::Errno::MFILE) if crate::sys::process::raise_fd_limit() => {
            shm::open(path, flags, mode)
        }
        r => r,
    }
    .map_err(|e| OpenError::from_errno(e, name))
}

impl Segment {
    /// Creates `/name` exclusively with `mode`, sizes it to `len` and maps it. The new
    /// object reads as zeros. On any failure after creation the name is removed again.
    pub fn create(path: &str, name: &str, len: usize, mode: u32) -> Result<Segment, OpenError> {
        let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
        let fd = shm_open(path, flags, Mode::from_raw_mode(mode), name)?;
        let undo = |e: OpenError| {
            let _ = shm::unlink(path);
            e
        };
        let info = stat(&fd).map_err(undo)?;
        let file = SegFile::adopt(&fd, path, info.dev, info.ino)
            .map_err(|e| undo(OpenError::from_io(e)))?;
        // The creator's lock says "still initialising, and alive": taken before the
        // object has a size, so an opener (which first waits for the size) that finds
        // it free while the header is unfinished knows the creator died.
        match file.try_hold(INIT_LOCK).map_err(|e| undo(e.into()))? {
            Hold::Taken => {}
            _ => return Err(undo(OpenError::Corrupt("new object already locked"))),
        }
        // shm_open applies the umask; set the mode we were asked for exactly.
        fault::hit(Point::Fchmod)
            .and_then(|()| rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode)))
            .map_err(|e| undo(OpenError::Io(e.into())))?;
        fault::hit(Point::Ftruncate)
            .and_then(|()| rustix::fs::ftruncate(&fd, len as u64))
            .map_err(|e| undo(OpenError::Io(e.into())))?;
        reserve(&fd, len as u64, name).map_err(undo)?;
        // The mapping keeps the object alive; `fd` is closed when this returns.
        let map = map(&fd, len).map_err(undo)?;
        Ok(Segment {
            map,
            file,
            unlink_on_drop: Some(Owned {
                path: path.to_owned(),
                dev: info.dev,
                ino: info.ino,
            }),
        })
    }

    /// Opens `/name` read-write. The caller checks the size with [`stat`] first.
    pub fn open_fd(path: &str, name: &str) -> Result<OwnedFd, OpenError> {
        shm_open(path, shm::OFlags::RDWR, Mode::empty(), name)
    }

    /// Opens `/name` read-write, and finds or makes this process's lock description
    /// of it (shared with this process's other handles on the same object).
    pub fn open_file(path: &str, name: &str) -> Result<(OwnedFd, Arc<SegFile>), OpenError> {
        let fd = Self::open_fd(path, name)?;
        let info = stat(&fd)?;
        let file = SegFile::adopt(&fd, path, info.dev, info.ino).map_err(OpenError::from_io)?;
        Ok((fd, file))
    }

    /// Opens `/name` read-only (for inspection).
    pub fn open_fd_readonly(path: &str, name: &str) -> Result<OwnedFd, OpenError> {
        shm_open(path, shm::OFlags::RDONLY, Mode::empty(), name)
    }

    /// Maps `len` bytes of an opened object lazily (no page is touched or allocated);
    /// `len` must not exceed its `fstat` size. Call [`populate`](Self::populate) once
    /// the header is validated.
    pub fn map_file(fd: &OwnedFd, file: Arc<SegFile>, len: usize) -> Result<Segment, OpenError> {
        Ok(Segment {
            map: map_as(fd, len, false)?,
            file,
            unlink_on_drop: None,
        })
    }

    /// Maps the object again, populated, in place of the lazy mapping (pointers into
    /// the old mapping become invalid).
    ///
    /// A sparse object (fewer bytes allocated than its size: not made by a creator,
    /// which reserves every page, but copied or written by someone else) stays mapped
    /// lazily: populating it would allocate all of it, up to 64 GiB, on the word of
    /// whoever wrote its header.
    pub fn populate(&mut self, fd: &OwnedFd) -> Result<(), OpenError> {
        let len = self.map.len();
        let st = rustix::fs::fstat(fd).map_err(|e| OpenError::Io(e.into()))?;
        let allocated = (st.st_blocks.max(0) as u64).saturating_mul(512);
        if allocated < len as u64 {
            return Ok(());
        }
        self.map = map_as(fd, len, true)?;
        Ok(())
    }

    /// Maps `len` bytes of an object opened read-only.
    pub fn map_fd_readonly(fd: &OwnedFd, len: usize) -> Result<memmap2::Mmap, OpenError> {
        // SAFETY: the mapping is read-only and we only read plain integers from it with
        // volatile loads; other processes may change those bytes, which for integers
        // can only give other values.
        Ok(unsafe { MmapOptions::new().len(len).map(fd.as_raw_fd())? })
    }

    /// Start of the mapping (page aligned).
    #[inline]
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Stops this handle from removing the name on drop.
    pub fn keep(&mut self) {
        self.unlink_on_drop = None;
    }

    /// Whether this handle removes the name on drop.
    pub fn owns_name(&self) -> bool {
        self.unlink_on_drop.is_some()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let Some(own) = self.unlink_on_drop.take() else {
            return;
        };
        // A handle inherited by a forked child does not own the name.
        if !self.file.is_current() {
            return;
        }
        // The name may be gone (`shmchan rm`), or taken by a newer channel (a
        // purge-and-create elsewhere): remove it only if it is still our object. (A
        // replacement between this check and the unlink is not caught; names are
        // replaced only on purpose, by PurgeAndCreate or rm + create.)
        let Ok(fd) = shm::open(own.path.as_str(), shm::OFlags::RDONLY, Mode::empty()) else {
            return;
        };
        if let Ok(info) = stat(&fd) {
            if info.dev == own.dev && info.ino == own.ino {
                let _ = shm::unlink(own.path.as_str());
            }
        }
    }
}

/// Removes the name `name` (the object lives on while mapped).
pub fn unlink(name: &str) -> Result<(), OpenError> {
    let path = shm_path(name)?;
    shm::unlink(path.as_str()).map_err(|e| OpenError::from_errno(e, name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::io::Errno;

    const LEN: usize = 8192;

    fn path_of(tag: &str) -> (String, String) {
        let name = format!("shmchan-test-seg-{tag}-{}", std::process::id());
        (format!("/{name}"), name)
    }

    fn exists(path: &str) -> bool {
        shm::open(path, shm::OFlags::RDONLY, Mode::empty()).is_ok()
    }

    /// Each failing step of `create` after the object exists gives its error and
    /// removes the name again (nothing is left in /dev/shm for a later create to trip
    /// over).
    #[test]
    fn create_removes_the_name_when_a_later_step_fails() {
        let cases = [
            ("fchmod", Point::Fchmod, Errno::PERM),
            ("ftruncate", Point::Ftruncate, Errno::FBIG),
            ("fallocate-eio", Point::Fallocate, Errno::IO),
            ("fallocate-nospc", Point::Fallocate, Errno::NOSPC),
            ("mmap", Point::Mmap, Errno::NOMEM),
        ];
        for (tag, point, errno) in cases {
            let (path, name) = path_of(tag);
            let armed = fault::arm(point, &[errno]);
            let r = Segment::create(&path, &name, LEN, 0o600);
            assert_eq!(armed.used(), 1, "{tag}: the fault point was not reached");
            drop(armed);
            match (errno, r) {
                (Errno::NOSPC, Err(OpenError::NoSpace { name: n, needed })) => {
                    assert_eq!((n.as_str(), needed), (name.as_str(), LEN as u64), "{tag}");
                }
                (Errno::NOSPC, other) => panic!("{tag}: {other:?}"),
                (_, Err(OpenError::Io(e))) => {
                    assert_eq!(e.raw_os_error(), Some(errno.raw_os_error()), "{tag}");
                }
                (_, other) => panic!("{tag}: {other:?}"),
            }
            assert!(!exists(&path), "{tag}: the failed create left {path}");
            // The name is free again.
            let seg = Segment::create(&path, &name, LEN, 0o600).expect(tag);
            drop(seg);
            assert!(!exists(&path), "{tag}: the creator's drop left {path}");
        }
    }

    /// tmpfs gives up a long `fallocate` when a signal arrives: it is retried for as
    /// long as it says EINTR, and its real answer counts. A file system without
    /// `fallocate` leaves the pages to be allocated on first touch.
    #[test]
    fn fallocate_is_retried_after_eintr_and_skipped_where_unsupported() {
        let (path, name) = path_of("eintr");
        let armed = fault::arm(Point::Fallocate, &[Errno::INTR, Errno::INTR, Errno::INTR]);
        let seg = Segment::create(&path, &name, LEN, 0o600).expect("create after EINTR");
        assert_eq!(armed.used(), 3);
        drop((seg, armed));

        let armed = fault::arm(Point::Fallocate, &[Errno::INTR, Errno::INTR, Errno::NOSPC]);
        let r = Segment::create(&path, &name, LEN, 0o600);
        assert!(matches!(r, Err(OpenError::NoSpace { .. })), "{r:?}");
        assert_eq!(armed.used(), 3);
        assert!(!exists(&path));
        drop(armed);

        for errno in [Errno::OPNOTSUPP, Errno::NOSYS] {
            let armed = fault::arm(Point::Fallocate, &[errno]);
            let seg = Segment::create(&path, &name, LEN, 0o600).expect("create without fallocate");
            assert_eq!(armed.used(), 1);
            // Sized and usable all the same.
            let fd = Segment::open_fd(&path, &name).expect("open");
            assert_eq!(stat(&fd).expect("stat").size, LEN as u64, "{errno:?}");
            drop((seg, armed));
        }
        assert!(!exists(&path));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(shm_path("ticks").unwrap(), "/ticks");
        assert_eq!(shm_path("/ticks").unwrap(), "/ticks");
        for bad in ["", "/", "a/b", "//a", ".", "..", "a\0b"] {
            assert!(
                matches!(shm_path(bad), Err(OpenError::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(shm_path(&"x".repeat(254)).is_ok());
        assert!(matches!(
            shm_path(&"x".repeat(255)),
            Err(OpenError::InvalidName { .. })
        ));
    }
}
