//! The segment's binary layout: the header at offset zero, the peer table, the slots.
//!
//! This is an ABI shared by every process that maps the segment, so every type here is
//! `#[repr(C)]` with fixed-width fields, and its size, alignment and offsets are pinned
//! by compile-time assertions. Bump [`LAYOUT_VERSION`] on any change.
//!
//! ```text
//! offset    size  what
//! 0         128   Config: magic, version, flavor, geometry, init state (written once)
//! 128       128   tail: producer position                 (written by senders)
//! 256       128   head: consumer position                 (written by receivers)
//! 384       128   not_empty: futex word + sleeping receivers
//! 512       128   not_full:  futex word + sleeping senders
//! 640       128   attach counters
//! 768       256   reserved (zero)
//! 1024      3072  peer table: MAX_PEERS entries of 16 bytes
//! 4096      ...   slots[capacity], each slot_size bytes, then zero padding to a page
//! ```
//!
//! A broadcast segment puts its subscribers' cursors between the header and the slots:
//! `subscribers` lines of 128 bytes from offset 4096, padded to a page; its slots start
//! after them ([`Geometry::slots_offset`]).
//!
//! Positions are `u64` and monotonic; the slot of position `p` is `p & (capacity - 1)`.
//! Everything in the mapping may be overwritten by another process, so nothing read
//! from it is trusted: the geometry is validated once at attach and copied into the
//! handle ([`Geometry`]); positions and sequence words only ever select a slot through
//! the mask and are compared, never used as lengths or offsets.

use crate::error::OpenError;
use crate::sync::{AtomicU32, AtomicU64};

/// The first eight bytes of every shmchan segment.
pub const MAGIC: [u8; 8] = *b"SHMCHAN\0";
/// Version of this layout; an opener refuses any other.
pub const LAYOUT_VERSION: u32 = 2;
/// Size of the header (one page); the slots start here.
pub const HEADER_SIZE: usize = 4096;
/// Segments are sized in whole pages.
pub const PAGE: usize = 4096;
/// Entries in the peer table.
pub const MAX_PEERS: usize = 192;
/// Largest capacity accepted (slots).
pub const MAX_CAPACITY: u64 = 1 << 30;
/// Largest slot accepted (bytes): 256 MiB.
pub const MAX_SLOT_SIZE: u64 = 1 << 28;
/// Largest segment accepted (bytes): 64 GiB.
pub const MAX_TOTAL: u64 = 1 << 36;
/// Largest message alignment accepted.
pub const MAX_ALIGN: u32 = 4096;

/// `init_state`: the creator is still writing the header.
pub const INIT_CREATING: u32 = 0;
/// `init_state`: the header is complete and valid.
pub const INIT_READY: u32 = 1;

/// `flavor`: single producer, single consumer.
pub const FLAVOR_SPSC: u32 = 1;
/// `flavor`: multi producer, multi consumer (reserved for the MPMC ring).
pub const FLAVOR_MPMC: u32 = 2;
/// `flavor`: one publisher, many subscribers, each reading every message.
pub const FLAVOR_BROADCAST: u32 = 3;

/// Broadcast `policy`: the publisher waits for the slowest live subscriber.
pub const POLICY_LOSSLESS: u32 = 1;
/// Broadcast `policy`: the publisher never waits; lapped subscribers are told.
pub const POLICY_OVERWRITE: u32 = 2;
/// Bytes of one broadcast cursor line ([`CursorLine`]).
pub const CURSOR_LINE: usize = 128;
/// Most subscribers of a broadcast channel (the peer table less the publisher).
pub const MAX_SUBSCRIBERS: u32 = MAX_PEERS as u32 - 1;

/// `msg_kind`: fixed-size plain-old-data values of one type.
pub const KIND_TYPED: u32 = 1;
/// `msg_kind`: byte strings of variable length up to `msg_size`.
pub const KIND_BYTES: u32 = 2;

/// Line 0: written once by the creator, before `init_state` becomes [`INIT_READY`].
#[repr(C)]
pub(crate) struct Config {
    /// [`MAGIC`].
    pub magic: [u8; 8],
    /// [`LAYOUT_VERSION`].
    pub layout_version: u32,
    /// [`FLAVOR_SPSC`] or [`FLAVOR_MPMC`].
    pub flavor: u32,
    /// Number of slots, a power of two.
    pub capacity: u64,
    /// Bytes per slot, including the slot's sequence word.
    pub slot_size: u64,
    /// Message size in bytes (typed) or the largest byte message (bytes).
    pub msg_size: u32,
    /// Message alignment.
    pub msg_align: u32,
    /// Hash of the message type's name (typed) or a fixed value (bytes).
    pub type_fingerprint: u64,
    /// Length of the whole segment in bytes.
    pub total_len: u64,
    /// [`INIT_CREATING`] until the header is complete, then [`INIT_READY`] (Release).
    pub init_state: AtomicU32,
    /// Pid of the creating process (in its own PID namespace), for messages only: an
    /// opener tells a dead creator by its init lock (byte `2^40 + 255` of the object),
    /// which the creator holds until `init_state` is READY.
    pub creator_pid: AtomicU32,
    /// Effective uid of the creator.
    pub creator_uid: u32,
    /// Entries of the peer table in use (at most [`MAX_PEERS`]).
    pub max_peers: u32,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_at_ns: u64,
    /// Offset of the payload inside a slot.
    pub payload_offset: u32,
    /// [`KIND_TYPED`] or [`KIND_BYTES`].
    pub msg_kind: u32,
    /// Source of peer generations (incremented on every attach).
    pub peer_generation: AtomicU32,
    /// Broadcast: cursor lines (one per subscriber entry); 0 for other flavors.
    pub subscribers: u32,
    /// Broadcast: [`POLICY_LOSSLESS`] or [`POLICY_OVERWRITE`]; 0 for other flavors.
    pub policy: u32,
    /// Broadcast, lossless: how long (ms) a live subscriber may hold the publisher
    /// back before it is evicted; 0: for ever.
    pub lag_limit_ms: u32,
    _reserved: [u32; 6],
}

/// A futex word and the count of processes asleep (or about to sleep) on it.
///
/// The waker bumps `word` and calls `futex_wake` only when `sleepers > 0`; see
/// `wait.rs` for the fence pairing that makes this free of lost wake-ups.
#[repr(C)]
pub(crate) struct WaitWord {
    /// The futex word: its value only changes to announce "something happened".
    pub word: AtomicU32,
    /// Waiters that announced themselves and may be inside `futex_wait`.
    pub sleepers: AtomicU32,
    /// Which barrier wakers use: `membarrier::FENCE` or `membarrier::ASYMMETRIC`.
    pub mode: AtomicU32,
}

/// One 128-byte line holding a position.
#[repr(C, align(128))]
pub(crate) struct PosLine {
    /// The position.
    pub pos: AtomicU64,
}

/// One 128-byte line holding a wait word.
#[repr(C, align(128))]
pub(crate) struct WaitLine {
    /// The wait word.
    pub w: WaitWord,
}

/// The hot part of the header: what the ring algorithms touch.
///
/// Each field sits on its own 128-byte line (x86 prefetches lines in pairs), so the
/// sender's writes never invalidate the receiver's lines and the reverse.
#[repr(C, align(128))]
pub(crate) struct RingCtl {
    /// Producer position: every position below it has been published.
    pub tail: PosLine,
    /// Consumer position: every slot below it has been released to producers.
    pub head: PosLine,
    /// Receivers wait here for "not empty"; bumped by senders and on disconnect.
    pub not_empty: WaitLine,
    /// Senders wait here for "not full"; bumped by receivers and on disconnect.
    pub not_full: WaitLine,
}

#[cfg(any(test, loom))]
impl RingCtl {
    /// A zeroed control block on the heap, for rings over heap memory (unit tests and
    /// loom models).
    pub fn boxed() -> Box<RingCtl> {
        #[cfg(not(loom))]
        {
            // SAFETY: RingCtl is atomics only; all-zero bytes are a valid value.
            unsafe { Box::new(std::mem::zeroed()) }
        }
        #[cfg(loom)]
        {
            let pos = || PosLine {
                pos: AtomicU64::new(0),
            };
            let wl = || WaitLine {
                w: WaitWord {
                    word: AtomicU32::new(0),
                    sleepers: AtomicU32::new(0),
                    mode: AtomicU32::new(0),
                },
            };
            Box::new(RingCtl {
                tail: pos(),
                head: pos(),
                not_empty: wl(),
                not_full: wl(),
            })
        }
    }
}

/// Attach bookkeeping: how often each role was ever attached.
#[repr(C, align(128))]
pub(crate) struct AttachLine {
    /// Incremented each time a sender attaches (never decremented).
    pub sender_attaches: AtomicU32,
    /// Incremented each time a receiver attaches (never decremented).
    pub receiver_attaches: AtomicU32,
    /// MPMC: senders attached now (a hint: it gates a scan of the peer table, which
    /// is the truth).
    pub senders: AtomicU32,
    /// MPMC: receivers attached now (a hint, as `senders`).
    pub receivers: AtomicU32,
}

/// One entry of the peer table. See `peers.rs` for the encoding of `state`.
///
/// Entry `i` is held while its holder holds an open-file-description write lock on
/// byte `2^40 + i` of the segment object (version 2; version 1 judged liveness by pid).
#[repr(C)]
pub(crate) struct PeerEntry {
    /// 0: never used; 1: vacated; otherwise
    /// `generation << 32 | role << 30 | not_full_sleepers << 15 | not_empty_sleepers`.
    pub state: AtomicU64,
    /// `pid_namespace_inode << 32 | pid` of the holder, for display only.
    pub stamp: AtomicU64,
}

/// One subscriber's line in a broadcast segment (after the header): where it reads.
///
/// Cursor `i` belongs to the holder of peer entry `i + 1` (entry 0 is the publisher's).
#[repr(C, align(128))]
pub(crate) struct CursorLine {
    /// The next position this subscriber reads; every position below it is done with.
    pub pos: AtomicU64,
    /// The attach generation of the subscriber that counts through this cursor; 0:
    /// nobody (a lossless publisher waits only for cursors with an owner).
    pub owner: AtomicU64,
    /// Messages this subscriber missed (lapped or evicted), for `shmchan stat`.
    pub missed: AtomicU64,
}

/// The whole first page of a segment.
#[repr(C, align(128))]
pub(crate) struct Header {
    /// Line 0.
    pub config: Config,
    /// Lines 1 to 4.
    pub ring: RingCtl,
    /// Line 5.
    pub attach: AttachLine,
    _reserved: [u8; 256],
    /// The peer table.
    pub peers: [PeerEntry; MAX_PEERS],
}

#[cfg(not(loom))]
mod asserts {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};
    use static_assertions::const_assert_eq;

    const_assert_eq!(size_of::<Config>(), 128);
    const_assert_eq!(offset_of!(Config, magic), 0);
    const_assert_eq!(offset_of!(Config, layout_version), 8);
    const_assert_eq!(offset_of!(Config, flavor), 12);
    const_assert_eq!(offset_of!(Config, capacity), 16);
    const_assert_eq!(offset_of!(Config, slot_size), 24);
    const_assert_eq!(offset_of!(Config, msg_size), 32);
    const_assert_eq!(offset_of!(Config, msg_align), 36);
    const_assert_eq!(offset_of!(Config, type_fingerprint), 40);
    const_assert_eq!(offset_of!(Config, total_len), 48);
    const_assert_eq!(offset_of!(Config, init_state), 56);
    const_assert_eq!(offset_of!(Config, creator_pid), 60);
    const_assert_eq!(offset_of!(Config, creator_uid), 64);
    const_assert_eq!(offset_of!(Config, max_peers), 68);
    const_assert_eq!(offset_of!(Config, created_at_ns), 72);
    const_assert_eq!(offset_of!(Config, payload_offset), 80);
    const_assert_eq!(offset_of!(Config, msg_kind), 84);
    const_assert_eq!(offset_of!(Config, peer_generation), 88);
    const_assert_eq!(offset_of!(Config, subscribers), 92);
    const_assert_eq!(offset_of!(Config, policy), 96);
    const_assert_eq!(offset_of!(Config, lag_limit_ms), 100);
    const_assert_eq!(size_of::<CursorLine>(), CURSOR_LINE);
    const_assert_eq!(align_of::<CursorLine>(), 128);
    const_assert_eq!(offset_of!(CursorLine, pos), 0);
    const_assert_eq!(offset_of!(CursorLine, owner), 8);
    const_assert_eq!(offset_of!(CursorLine, missed), 16);

    const_assert_eq!(size_of::<WaitWord>(), 12);
    const_assert_eq!(offset_of!(WaitWord, word), 0);
    const_assert_eq!(offset_of!(WaitWord, sleepers), 4);
    const_assert_eq!(offset_of!(WaitWord, mode), 8);
    const_assert_eq!(size_of::<PosLine>(), 128);
    const_assert_eq!(size_of::<WaitLine>(), 128);
    const_assert_eq!(size_of::<RingCtl>(), 512);
    const_assert_eq!(offset_of!(RingCtl, tail), 0);
    const_assert_eq!(offset_of!(RingCtl, head), 128);
    const_assert_eq!(offset_of!(RingCtl, not_empty), 256);
    const_assert_eq!(offset_of!(RingCtl, not_full), 384);
    const_assert_eq!(size_of::<AttachLine>(), 128);
    const_assert_eq!(offset_of!(AttachLine, sender_attaches), 0);
    const_assert_eq!(offset_of!(AttachLine, receiver_attaches), 4);
    const_assert_eq!(offset_of!(AttachLine, senders), 8);
    const_assert_eq!(offset_of!(AttachLine, receivers), 12);
    const_assert_eq!(size_of::<PeerEntry>(), 16);
    const_assert_eq!(offset_of!(PeerEntry, state), 0);
    const_assert_eq!(offset_of!(PeerEntry, stamp), 8);

    const_assert_eq!(size_of::<Header>(), HEADER_SIZE);
    const_assert_eq!(align_of::<Header>(), 128);
    const_assert_eq!(offset_of!(Header, config), 0);
    const_assert_eq!(offset_of!(Header, ring), 128);
    const_assert_eq!(offset_of!(Header, attach), 640);
    const_assert_eq!(offset_of!(Header, peers), 1024);
    // The atomics must have the size and alignment of their integers, as the ABI says.
    const_assert_eq!(size_of::<AtomicU64>(), 8);
    const_assert_eq!(align_of::<AtomicU64>(), 8);
    const_assert_eq!(size_of::<AtomicU32>(), 4);
}

/// Where the parts of a message slot are, for one flavor and message type.
///
/// Computed from the message's size and alignment, never read from the segment: an
/// opener recomputes it and compares it with the header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// [`FLAVOR_SPSC`] or [`FLAVOR_MPMC`].
    pub flavor: u32,
    /// [`KIND_TYPED`] or [`KIND_BYTES`].
    pub kind: u32,
    /// Slots, a power of two.
    pub capacity: u64,
    /// Bytes per slot.
    pub slot_size: usize,
    /// Offset of the payload in a slot (after the sequence word, and for byte
    /// messages after the `u32` length).
    pub payload_offset: usize,
    /// Message size (typed) or largest byte message.
    pub msg_size: usize,
    /// Message alignment.
    pub msg_align: usize,
    /// Whole segment length.
    pub total_len: usize,
    /// Offset of slot 0 in the segment: [`HEADER_SIZE`], or after a broadcast
    /// segment's cursor lines.
    pub slots_offset: usize,
    /// Broadcast: subscriber cursor lines; 0 for other flavors.
    pub subscribers: u32,
}

const fn round_up(x: u64, to: u64) -> Option<u64> {
    // `to` is a power of two here.
    match x.checked_add(to - 1) {
        Some(v) => Some(v & !(to - 1)),
        None => None,
    }
}

impl Geometry {
    #[cfg(any(test, loom))]
    /// Computes the geometry of an SPSC or MPMC channel, or says which parameter is
    /// out of range.
    pub fn new(
        flavor: u32,
        kind: u32,
        capacity: u64,
        msg_size: u64,
        msg_align: u64,
    ) -> Result<Geometry, OpenError> {
        Geometry::with_subscribers(flavor, kind, capacity, msg_size, msg_align, 0)
    }

    /// Computes the geometry, with `subscribers` cursor lines for a broadcast channel.
    pub fn with_subscribers(
        flavor: u32,
        kind: u32,
        capacity: u64,
        msg_size: u64,
        msg_align: u64,
        subscribers: u32,
    ) -> Result<Geometry, OpenError> {
        if capacity == 0 || !capacity.is_power_of_two() || capacity > MAX_CAPACITY {
            return Err(OpenError::InvalidCapacity(capacity));
        }
        if msg_align == 0 || !msg_align.is_power_of_two() || msg_align > MAX_ALIGN as u64 {
            return Err(OpenError::InvalidMessage(
                "alignment must be a power of two up to 4096",
            ));
        }
        let broadcast = flavor == FLAVOR_BROADCAST;
        if broadcast != (subscribers > 0) || subscribers > MAX_SUBSCRIBERS {
            return Err(OpenError::InvalidOption(
                "a broadcast channel has 1 to 191 subscribers",
            ));
        }
        // The slot starts with the sequence word (u32 for SPSC, u64 for MPMC and
        // broadcast); byte messages add a u32 length after it.
        let seq_bytes: u64 = if flavor == FLAVOR_SPSC { 4 } else { 8 };
        let (prefix, align) = match kind {
            KIND_BYTES => (seq_bytes + 4, seq_bytes.max(4)),
            _ => (seq_bytes, seq_bytes.max(msg_align)),
        };
        let align = align.max(msg_align);
        // Broadcast subscribers copy the payload with 8-byte atomic loads (the
        // publisher may rewrite it meanwhile): it starts 8-aligned and takes whole
        // words.
        let (payload_align, payload_len) = if broadcast {
            (
                msg_align.max(8),
                round_up(msg_size, 8).ok_or(OpenError::TooLarge)?,
            )
        } else {
            (msg_align.max(1), msg_size)
        };
        let payload_offset = round_up(prefix, payload_align).ok_or(OpenError::TooLarge)?;
        let raw = payload_offset
            .checked_add(payload_len)
            .ok_or(OpenError::TooLarge)?;
        // MPMC slots are written by both sides (claim and release CASes), so two
        // slots sharing a cache line would bounce it between producer and consumer on
        // every message: give each slot a line of its own. (SPSC consumers only read
        // the slots, so small SPSC messages pack several to a line.)
        let stride = if flavor == FLAVOR_MPMC {
            align.max(64)
        } else {
            align
        };
        let mut slot_size = round_up(raw, stride).ok_or(OpenError::TooLarge)?;
        // No slot may straddle a cache line boundary: a slot of up to a line is a power
        // of two (several per line, none across two), a larger one whole lines. Else the
        // producer writing one slot and the consumer reading its neighbour would share
        // a line for every message.
        slot_size = if slot_size <= 64 {
            slot_size.next_power_of_two()
        } else {
            round_up(slot_size, 64).ok_or(OpenError::TooLarge)?
        };
        if slot_size > MAX_SLOT_SIZE || msg_size > u32::MAX as u64 {
            return Err(OpenError::TooLarge);
        }
        let slots = capacity.checked_mul(slot_size).ok_or(OpenError::TooLarge)?;
        // Broadcast cursors: whole pages (subscribers <= 191, so no overflow).
        let slots_offset = HEADER_SIZE as u64
            + round_up(subscribers as u64 * CURSOR_LINE as u64, PAGE as u64)
                .ok_or(OpenError::TooLarge)?;
        let total = slots_offset
            .checked_add(slots)
            .and_then(|t| round_up(t, PAGE as u64))
            .ok_or(OpenError::TooLarge)?;
        if total > MAX_TOTAL || total > usize::MAX as u64 {
            return Err(OpenError::TooLarge);
        }
        Ok(Geometry {
            flavor,
            kind,
            capacity,
            slot_size: slot_size as usize,
            payload_offset: payload_offset as usize,
            msg_size: msg_size as usize,
            msg_align: msg_align as usize,
            total_len: total as usize,
            slots_offset: slots_offset as usize,
            subscribers,
        })
    }

    /// Index mask for positions.
    #[inline]
    pub fn mask(&self) -> u64 {
        self.capacity - 1
    }
}

/// A copy of the config line taken with volatile reads, so that every check and every
/// derived value comes from one snapshot even if another process scribbles on it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConfigSnapshot {
    pub magic: [u8; 8],
    pub layout_version: u32,
    pub flavor: u32,
    pub capacity: u64,
    pub slot_size: u64,
    pub msg_size: u32,
    pub msg_align: u32,
    pub type_fingerprint: u64,
    pub total_len: u64,
    pub creator_pid: u32,
    pub creator_uid: u32,
    pub max_peers: u32,
    pub created_at_ns: u64,
    pub payload_offset: u32,
    pub msg_kind: u32,
    pub subscribers: u32,
    pub policy: u32,
    pub lag_limit_ms: u32,
}

#[cfg(not(loom))]
impl ConfigSnapshot {
    /// Reads the config line of the header at `hdr`.
    ///
    /// # Safety
    /// `hdr` must point to at least [`HEADER_SIZE`] readable bytes, aligned to 128.
    pub unsafe fn read(hdr: *const Header) -> ConfigSnapshot {
        use crate::sync::Ordering::Acquire;
        // SAFETY: the caller guarantees the header is mapped and aligned; volatile reads
        // of plain integers are valid whatever bytes are there, and a concurrent writer
        // in another process can only make us see another integer.
        unsafe {
            let c = &raw const (*hdr).config;
            ConfigSnapshot {
                magic: (&raw const (*c).magic).read_volatile(),
                layout_version: (&raw const (*c).layout_version).read_volatile(),
                flavor: (&raw const (*c).flavor).read_volatile(),
                capacity: (&raw const (*c).capacity).read_volatile(),
                slot_size: (&raw const (*c).slot_size).read_volatile(),
                msg_size: (&raw const (*c).msg_size).read_volatile(),
                msg_align: (&raw const (*c).msg_align).read_volatile(),
                type_fingerprint: (&raw const (*c).type_fingerprint).read_volatile(),
                total_len: (&raw const (*c).total_len).read_volatile(),
                creator_pid: (*c).creator_pid.load(Acquire),
                creator_uid: (&raw const (*c).creator_uid).read_volatile(),
                max_peers: (&raw const (*c).max_peers).read_volatile(),
                created_at_ns: (&raw const (*c).created_at_ns).read_volatile(),
                payload_offset: (&raw const (*c).payload_offset).read_volatile(),
                msg_kind: (&raw const (*c).msg_kind).read_volatile(),
                subscribers: (&raw const (*c).subscribers).read_volatile(),
                policy: (&raw const (*c).policy).read_volatile(),
                lag_limit_ms: (&raw const (*c).lag_limit_ms).read_volatile(),
            }
        }
    }

    /// The geometry this header describes, checked for internal consistency (but not
    /// yet against what the opener expects, nor against the object's size).
    pub fn geometry(&self) -> Result<Geometry, OpenError> {
        if self.magic != MAGIC {
            return Err(OpenError::BadMagic);
        }
        if self.layout_version != LAYOUT_VERSION {
            return Err(OpenError::VersionMismatch {
                found: self.layout_version,
                expected: LAYOUT_VERSION,
            });
        }
        if !matches!(self.flavor, FLAVOR_SPSC | FLAVOR_MPMC | FLAVOR_BROADCAST) {
            return Err(OpenError::Corrupt("unknown flavor"));
        }
        let subscribers = if self.flavor == FLAVOR_BROADCAST {
            if !matches!(self.policy, POLICY_LOSSLESS | POLICY_OVERWRITE) {
                return Err(OpenError::Corrupt("unknown broadcast policy"));
            }
            // The peer table holds the publisher and every subscriber.
            if self.subscribers == 0 || self.max_peers != self.subscribers.saturating_add(1) {
                return Err(OpenError::Corrupt("subscriber count out of range"));
            }
            self.subscribers
        } else {
            0
        };
        if self.msg_kind != KIND_TYPED && self.msg_kind != KIND_BYTES {
            return Err(OpenError::Corrupt("unknown message kind"));
        }
        if self.max_peers == 0 || self.max_peers as usize > MAX_PEERS {
            return Err(OpenError::Corrupt("peer table size out of range"));
        }
        let g = Geometry::with_subscribers(
            self.flavor,
            self.msg_kind,
            self.capacity,
            self.msg_size as u64,
            self.msg_align as u64,
            subscribers,
        )
        .map_err(|_| OpenError::Corrupt("geometry out of range"))?;
        if g.slot_size as u64 != self.slot_size
            || g.payload_offset as u64 != self.payload_offset as u64
            || g.total_len as u64 != self.total_len
        {
            return Err(OpenError::Corrupt("geometry fields disagree"));
        }
        Ok(g)
    }
}

/// A stable 64-bit FNV-1a hash, used for type fingerprints.
pub(crate) const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        h ^= bytes[i] as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_messages_pack_several_per_line() {
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 1024, 8, 8).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (8, 16));
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 1024, 4, 4).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (4, 8));
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 1024, 12, 1).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (4, 16));
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 1, 0, 1).unwrap();
        assert_eq!(g.slot_size, 4);
        let g = Geometry::new(FLAVOR_SPSC, KIND_BYTES, 4, 100, 1).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (8, 128));
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 4, 20, 4).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (4, 32));
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 4, 64, 8).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (8, 128));
        let g = Geometry::new(FLAVOR_SPSC, KIND_TYPED, 2, 64, 64).unwrap();
        assert_eq!((g.payload_offset, g.slot_size), (64, 128));
        assert_eq!(g.total_len, 8192);
    }

    #[test]
    fn geometry_rejects_out_of_range() {
        assert!(matches!(
            Geometry::new(FLAVOR_SPSC, KIND_TYPED, 3, 8, 8),
            Err(OpenError::InvalidCapacity(3))
        ));
        assert!(matches!(
            Geometry::new(FLAVOR_SPSC, KIND_TYPED, 0, 8, 8),
            Err(OpenError::InvalidCapacity(0))
        ));
        assert!(Geometry::new(FLAVOR_SPSC, KIND_TYPED, 8, 8, 3).is_err());
        assert!(matches!(
            Geometry::new(FLAVOR_SPSC, KIND_TYPED, 1 << 30, 1 << 20, 8),
            Err(OpenError::TooLarge)
        ));
        // Sizes near 2^64 (a byte channel's limit is the caller's `usize`) overflow
        // every step of the computation: TooLarge, never a panic or a wrapped size.
        for (flavor, kind, size) in [
            (FLAVOR_SPSC, KIND_BYTES, u64::MAX - 9),
            (FLAVOR_MPMC, KIND_TYPED, u64::MAX - 20),
            (FLAVOR_SPSC, KIND_TYPED, u64::MAX),
        ] {
            assert!(
                matches!(
                    Geometry::new(flavor, kind, 8, size, 8),
                    Err(OpenError::TooLarge)
                ),
                "{flavor} {kind} {size}"
            );
        }
    }
}
