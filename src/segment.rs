//! The backing object of a channel and its mapping: create, open, size checks, unlink.
//!
//! Objects are POSIX shared memory (`shm_open`, visible in `/dev/shm`). The mapping is
//! made only after `fstat` says the object is as long as it must be: touching a page
//! past the end of a shared object raises `SIGBUS`, which no check afterwards could
//! catch.

use crate::error::OpenError;
use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::Mode;
use rustix::shm;
use std::fs::File;
use std::os::fd::OwnedFd;

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

pub(crate) fn stat(fd: &OwnedFd) -> Result<ObjectInfo, OpenError> {
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
fn reserve(fd: &OwnedFd, len: u64, name: &str) -> Result<(), OpenError> {
    use rustix::fs::{FallocateFlags, fallocate};
    use rustix::io::Errno;
    // tmpfs gives up a long allocation when a signal arrives (EINTR): try again.
    let mut r = fallocate(fd, FallocateFlags::empty(), 0, len);
    while r == Err(Errno::INTR) {
        r = fallocate(fd, FallocateFlags::empty(), 0, len);
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

fn map(fd: OwnedFd, len: usize) -> Result<MmapRaw, OpenError> {
    let file = File::from(fd);
    // The fd can be closed once mapped: the mapping keeps the object alive.
    // MAP_POPULATE: the page tables are filled now, so no send or receive takes a page
    // fault on its first lap (measured: 3 faults inside a timed round-trip loop before,
    // none after). Mapping a large segment costs that time once, up front.
    Ok(MmapOptions::new().len(len).populate().map_raw(&file)?)
}

impl Segment {
    /// Creates `/name` exclusively with `mode`, sizes it to `len` and maps it. The new
    /// object reads as zeros. On any failure after creation the name is removed again.
    pub fn create(path: &str, name: &str, len: usize, mode: u32) -> Result<Segment, OpenError> {
        let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
        let fd = shm::open(path, flags, Mode::from_raw_mode(mode))
            .map_err(|e| OpenError::from_errno(e, name))?;
        let undo = |e: OpenError| {
            let _ = shm::unlink(path);
            e
        };
        // shm_open applies the umask; set the mode we were asked for exactly.
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| undo(OpenError::Io(e.into())))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| undo(OpenError::Io(e.into())))?;
        reserve(&fd, len as u64, name).map_err(undo)?;
        let info = stat(&fd).map_err(undo)?;
        let map = map(fd, len).map_err(undo)?;
        Ok(Segment {
            map,
            unlink_on_drop: Some(Owned {
                path: path.to_owned(),
                dev: info.dev,
                ino: info.ino,
            }),
        })
    }

    /// Opens `/name` read-write. The caller checks the size with [`stat`] first.
    pub fn open_fd(path: &str, name: &str) -> Result<OwnedFd, OpenError> {
        shm::open(path, shm::OFlags::RDWR, Mode::empty())
            .map_err(|e| OpenError::from_errno(e, name))
    }

    /// Opens `/name` read-only (for inspection).
    pub fn open_fd_readonly(path: &str, name: &str) -> Result<OwnedFd, OpenError> {
        shm::open(path, shm::OFlags::RDONLY, Mode::empty())
            .map_err(|e| OpenError::from_errno(e, name))
    }

    /// Maps `len` bytes of an opened object; `len` must not exceed its `fstat` size.
    pub fn map_fd(fd: OwnedFd, len: usize) -> Result<Segment, OpenError> {
        Ok(Segment {
            map: map(fd, len)?,
            unlink_on_drop: None,
        })
    }

    /// Maps `len` bytes of an object opened read-only.
    pub fn map_fd_readonly(fd: OwnedFd, len: usize) -> Result<memmap2::Mmap, OpenError> {
        let file = File::from(fd);
        // SAFETY: the mapping is read-only and we only read plain integers from it with
        // volatile loads; other processes may change those bytes, which for integers
        // can only give other values.
        Ok(unsafe { MmapOptions::new().len(len).map(&file)? })
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
