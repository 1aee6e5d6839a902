//! Read-only inspection of segments, for `shmchan ls` / `shmchan stat` and monitoring.

use crate::error::OpenError;
use crate::layout::{
    ConfigSnapshot, CursorLine, FLAVOR_BROADCAST, FLAVOR_MPMC, FLAVOR_SPSC, HEADER_SIZE, Header,
    INIT_CREATING, INIT_READY, KIND_BYTES, MAGIC, MAX_PEERS,
};
use crate::peers::{self, EntryState};
use crate::sync::Ordering;
use crate::sys::segment::{self, Segment};
use std::os::fd::AsFd;
use std::time::{Duration, SystemTime};

/// A process attached to a channel, as its peer table says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// Index in the peer table.
    pub index: usize,
    /// Process id, as seen in the holder's own PID namespace (display only: liveness
    /// is decided by a lock the kernel holds for the process).
    pub pid: u32,
    /// Inode of the holder's PID namespace (`stat -L /proc/PID/ns/pid`), so a pid
    /// from another container can be told apart; 0 if unknown.
    pub pid_namespace: u32,
    /// `"sender"` or `"receiver"` (`"publisher"` or `"subscriber"` in a broadcast
    /// channel).
    pub role: &'static str,
    /// Attach generation.
    pub generation: u32,
    /// Whether the holder is alive now (it holds its liveness lock).
    pub alive: bool,
}

/// A broadcast subscriber's cursor, as its line in the segment says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscriberInfo {
    /// Index of the cursor (the subscriber holds peer entry `cursor + 1`).
    pub cursor: usize,
    /// The next position it reads.
    pub position: u64,
    /// Messages published that it has not read (`tail - position`).
    pub lag: u64,
    /// Messages it missed (lapped under the overwrite policy, or evicted).
    pub missed: u64,
    /// Whether its holder is alive (holds its liveness lock).
    pub alive: bool,
}

/// What a channel's header says, read without attaching.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChannelInfo {
    /// The channel's name (without the leading `/`).
    pub name: String,
    /// `"spsc"`, `"mpmc"` or `"broadcast"`.
    pub flavor: &'static str,
    /// Broadcast: `"lossless"` or `"overwrite"`; empty for other flavors.
    pub policy: &'static str,
    /// Broadcast: the cursors that count (a subscriber attached to each).
    pub subscribers: Vec<SubscriberInfo>,
    /// `"typed"` or `"bytes"`.
    pub kind: &'static str,
    /// Slots.
    pub capacity: u64,
    /// Bytes per slot.
    pub slot_size: u64,
    /// Message size (or the largest byte message).
    pub msg_size: u32,
    /// Message alignment.
    pub msg_align: u32,
    /// Fingerprint of the message type.
    pub type_fingerprint: u64,
    /// Size of the object in bytes.
    pub size_bytes: u64,
    /// Producer position.
    pub tail: u64,
    /// Consumer position (broadcast: the slowest subscriber's).
    pub head: u64,
    /// Pid of the creator.
    pub creator_pid: u32,
    /// Uid of the creator.
    pub creator_uid: u32,
    /// When the channel was created.
    pub created_at: SystemTime,
    /// Attached processes.
    pub peers: Vec<PeerInfo>,
    /// Receivers asleep on "not empty" now.
    pub sleeping_receivers: u32,
    /// Senders asleep on "not full" now.
    pub sleeping_senders: u32,
    /// How often a sender attached since creation.
    pub sender_attaches: u32,
    /// How often a receiver attached since creation.
    pub receiver_attaches: u32,
}

impl ChannelInfo {
    /// Messages in the ring (`tail - head`, clamped to the capacity).
    pub fn len(&self) -> u64 {
        self.tail.wrapping_sub(self.head).min(self.capacity)
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Reads the header of channel `name` without attaching to it (read-only mapping).
///
/// # Errors
/// `NotFound`, `BadMagic`, `Truncated`, `VersionMismatch`, `Corrupt`, `InitTimeout` (the
/// header is not finished), …
///
/// ```
/// # let name = format!("doc-inspect-{}", std::process::id());
/// let tx = shmchan::Sender::<u32>::create(&name, 16)?;
/// tx.send(5)?;
/// let info = shmchan::inspect(&name)?;
/// assert_eq!((info.flavor, info.capacity, info.len()), ("spsc", 16, 1));
/// assert_eq!(info.peers.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn inspect(name: &str) -> Result<ChannelInfo, OpenError> {
    let path = segment::shm_path(name)?;
    let fd = Segment::open_fd_readonly(&path, name)?;
    let size = segment::stat(&fd)?.size;
    if size < HEADER_SIZE as u64 {
        return Err(OpenError::Truncated {
            actual: size,
            expected: HEADER_SIZE as u64,
        });
    }
    // The header page, and (below, for SPSC) a few slots after the tail hint.
    let map = Segment::map_fd_readonly(&fd, size as usize)?;
    // A lock test through our own (new) open file description sees every holder's
    // lock, this process's included.
    let locked = |index: u8| {
        crate::sys::ofd::locked_by_other(fd.as_fd(), crate::sys::process::lock_byte(index))
            .unwrap_or(true)
    };
    let hdr = map.as_ptr() as *const Header;
    // SAFETY: the mapping is HEADER_SIZE bytes, page aligned, and lives until the end
    // of this function. The config line is read volatile; of the rest, only lines made
    // of atomics are referenced (other processes write them), never the whole header.
    let (snap, init_state, ring, attach, peers_table) = unsafe {
        (
            ConfigSnapshot::read(hdr),
            &(*hdr).config.init_state,
            &(*hdr).ring,
            &(*hdr).attach,
            &(*hdr).peers,
        )
    };
    // Classify an unfinished header as an opener would: a creator still at work, or
    // one that died (then `shmchan rm` may remove it).
    let init = init_state.load(Ordering::Acquire);
    if init == INIT_CREATING && (snap.magic == MAGIC || snap.magic == [0; 8]) {
        let pid = snap.creator_pid;
        return Err(
            if !locked(crate::sys::process::INIT_LOCK) && snap.magic == MAGIC {
                OpenError::CreatorDied { pid }
            } else {
                OpenError::InitTimeout
            },
        );
    }
    if snap.magic != MAGIC {
        return Err(OpenError::BadMagic);
    }
    if init != INIT_READY {
        return Err(OpenError::Corrupt("unknown init state"));
    }
    let geo = snap.geometry()?;
    if geo.total_len as u64 != size {
        return Err(OpenError::Truncated {
            actual: size,
            expected: geo.total_len as u64,
        });
    }
    let (head, tail) = if geo.flavor == FLAVOR_SPSC {
        // The SPSC producer stores its position only now and then: add the published
        // slots after it. SAFETY: the mapping covers the whole object, whose size is
        // the geometry's (checked above): capacity * slot_size bytes of 4-aligned slots
        // after the header. The ring only loads from them.
        let ring = unsafe {
            crate::spsc::ring::Ring::new(ring, map.as_ptr().add(HEADER_SIZE).cast_mut(), &geo)
        };
        ring.positions()
    } else {
        (
            ring.head.pos.load(Ordering::Relaxed),
            ring.tail.pos.load(Ordering::Relaxed),
        )
    };
    let mut subscribers = Vec::new();
    let (mut head, mut tail) = (head, tail);
    if geo.flavor == FLAVOR_BROADCAST {
        // SAFETY: the geometry (checked against the object's size above) puts
        // `geo.subscribers` cursor lines of 128 bytes at HEADER_SIZE; they are atomics,
        // only loaded here.
        let cursors = unsafe {
            std::slice::from_raw_parts(
                map.as_ptr().add(HEADER_SIZE) as *const CursorLine,
                geo.subscribers as usize,
            )
        };
        // The publisher stores its position every 16 messages: scan past the hint.
        // SAFETY: as above: the control lines, the cursor lines and the slots (after
        // them, as the validated geometry says) are inside the read-only mapping, which
        // outlives the ring; the ring only loads.
        tail = unsafe {
            crate::broadcast::ring::Ring::new(
                ring,
                cursors.as_ptr(),
                cursors.len(),
                map.as_ptr().add(geo.slots_offset).cast_mut(),
                &geo,
            )
        }
        .scan_tail();
        head = tail;
        for (cursor, c) in cursors.iter().enumerate() {
            if c.owner.load(Ordering::Acquire) == 0 {
                continue;
            }
            let position = c.pos.load(Ordering::Acquire);
            let alive = u8::try_from(cursor + 1).is_ok_and(&locked);
            if alive {
                head = head.min(position);
            }
            subscribers.push(SubscriberInfo {
                cursor,
                position,
                lag: tail.saturating_sub(position),
                missed: c.missed.load(Ordering::Relaxed),
                alive,
            });
        }
    }
    let role_names = if geo.flavor == FLAVOR_BROADCAST {
        ["publisher", "subscriber"]
    } else {
        ["sender", "receiver"]
    };
    let mut peer_list = Vec::new();
    for (index, e) in peers_table
        .iter()
        .enumerate()
        .take(snap.max_peers.min(MAX_PEERS as u32) as usize)
    {
        let state = e.state.load(Ordering::Acquire);
        if let EntryState::Held(holder) = peers::decode(state) {
            let (pid, pid_namespace) = peers::stamp_of(e);
            peer_list.push(PeerInfo {
                index,
                pid,
                pid_namespace,
                role: role_names[usize::from(holder.role != 0)],
                generation: holder.generation,
                alive: locked(index as u8),
            });
        }
    }
    Ok(ChannelInfo {
        name: path[1..].to_owned(),
        flavor: match geo.flavor {
            FLAVOR_SPSC => "spsc",
            FLAVOR_MPMC => "mpmc",
            _ => "broadcast",
        },
        policy: match (geo.flavor, snap.policy) {
            (FLAVOR_BROADCAST, crate::layout::POLICY_OVERWRITE) => "overwrite",
            (FLAVOR_BROADCAST, _) => "lossless",
            _ => "",
        },
        subscribers,
        kind: if geo.kind == KIND_BYTES {
            "bytes"
        } else {
            "typed"
        },
        capacity: geo.capacity,
        slot_size: geo.slot_size as u64,
        msg_size: snap.msg_size,
        msg_align: snap.msg_align,
        type_fingerprint: snap.type_fingerprint,
        size_bytes: size,
        tail,
        head,
        creator_pid: snap.creator_pid,
        creator_uid: snap.creator_uid,
        created_at: SystemTime::UNIX_EPOCH + Duration::from_nanos(snap.created_at_ns),
        peers: peer_list,
        sleeping_receivers: ring.not_empty.w.sleepers.load(Ordering::Relaxed),
        sleeping_senders: ring.not_full.w.sleepers.load(Ordering::Relaxed),
        sender_attaches: attach.sender_attaches.load(Ordering::Relaxed),
        receiver_attaches: attach.receiver_attaches.load(Ordering::Relaxed),
    })
}

/// Names of all objects in `/dev/shm` whose first bytes are the shmchan magic (a
/// creator writes the magic first, so this includes channels whose creator died while
/// initialising them).
///
/// # Errors
/// An I/O error reading `/dev/shm`.
pub fn list() -> std::io::Result<Vec<String>> {
    use std::io::Read;
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let Ok(mut f) = std::fs::File::open(entry.path()) else {
            continue;
        };
        let mut magic = [0u8; 8];
        if f.read_exact(&mut magic).is_ok() && magic == MAGIC {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CreateMode, Options, Sender};
    use std::mem::offset_of;
    use std::os::unix::fs::FileExt;

    /// Removes the names (or files) when dropped, also when the test fails.
    struct Cleanup(Vec<std::path::PathBuf>);

    impl Drop for Cleanup {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }

    fn poke(name: &str, offset: usize, bytes: &[u8]) {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        f.write_all_at(bytes, offset as u64).unwrap();
    }

    /// `inspect` of a header that is not (or no longer) a ready channel: a creator
    /// that died while initialising (its init lock free), one still at work (it holds
    /// the lock), an unknown init state, a foreign magic. Each is told apart, so that
    /// `shmchan rm` knows what it may remove.
    #[test]
    fn inspect_tells_unfinished_corrupt_and_foreign_headers_apart() {
        let name = format!("shmchan-test-inspect-hdr-{}", std::process::id());
        let _c = Cleanup(vec![format!("/dev/shm/{name}").into()]);
        let opts = Options::new()
            .capacity(4)
            .mode(CreateMode::CreateExclusive)
            .keep(true);
        drop(Sender::<u64>::with_options(&name, &opts).unwrap());
        let init = offset_of!(Header, config.init_state);
        let magic = offset_of!(Header, config.magic);
        assert!(inspect(&name).is_ok());

        poke(&name, init, &INIT_CREATING.to_ne_bytes());
        match inspect(&name) {
            Err(OpenError::CreatorDied { pid }) => assert_eq!(pid, std::process::id()),
            other => panic!("dead creator: {other:?}"),
        }
        // A creator still at work holds its init lock (through its own description).
        let creator = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/dev/shm/{name}"))
            .unwrap();
        let lock = crate::sys::process::lock_byte(crate::sys::process::INIT_LOCK);
        assert!(crate::sys::ofd::try_lock(creator.as_fd(), lock).unwrap());
        assert!(matches!(inspect(&name), Err(OpenError::InitTimeout)));
        drop(creator);

        poke(&name, init, &7u32.to_ne_bytes());
        assert!(matches!(
            inspect(&name),
            Err(OpenError::Corrupt("unknown init state"))
        ));
        for state in [7, INIT_CREATING, INIT_READY] {
            poke(&name, init, &state.to_ne_bytes());
            poke(&name, magic, b"NOTSHMCH");
            assert!(
                matches!(inspect(&name), Err(OpenError::BadMagic)),
                "init state {state}"
            );
            poke(&name, magic, &MAGIC);
        }
        let info = inspect(&name).unwrap();
        assert_eq!(
            (info.flavor, info.kind, info.capacity),
            ("spsc", "typed", 4)
        );
    }

    #[test]
    fn inspect_of_a_byte_channel_says_bytes() {
        let name = format!("shmchan-test-inspect-bytes-{}", std::process::id());
        let tx = crate::ByteSender::create(&name, 8, 100).unwrap();
        let info = inspect(&name).unwrap();
        assert_eq!(
            (info.flavor, info.kind, info.msg_size),
            ("spsc", "bytes", 100)
        );
        drop(tx);
    }

    /// `list` passes over what it cannot read in /dev/shm (a name that is not UTF-8,
    /// a socket that cannot be opened) instead of failing, and still finds channels.
    #[test]
    fn list_passes_over_what_it_cannot_read() {
        use std::os::unix::ffi::OsStringExt;
        let pid = std::process::id();
        let name = format!("shmchan-test-list-{pid}");
        let sock = std::path::PathBuf::from(format!("/dev/shm/shmchan-test-list-sock-{pid}"));
        let mut bad = format!("/dev/shm/shmchan-test-list-{pid}-").into_bytes();
        bad.push(0xff);
        let bad = std::path::PathBuf::from(std::ffi::OsString::from_vec(bad));
        let _c = Cleanup(vec![sock.clone(), bad.clone()]);
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        // A shmchan header under a name that is not UTF-8.
        std::fs::write(&bad, MAGIC).unwrap();
        let tx = Sender::<u64>::create(&name, 2).unwrap();
        let names = list().unwrap();
        assert!(names.contains(&name), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("shmchan-test-list-sock")));
        drop(tx);
    }
}
