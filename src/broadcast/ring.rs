//! The broadcast ring: one publisher writes every slot, every subscriber reads every
//! message through a cursor of its own.
//!
//! # Slots
//!
//! Slot `i` is `slot_size` bytes: a `u64` sequence word, then the payload in whole
//! 8-byte words. Position `p` lives in slot `p & mask`. The sequence word is a seqlock:
//! [`writing`]`(p) = 2p + 1` while the publisher writes `p`, [`published`]`(p) = 2p + 2`
//! once it is complete; a fresh slot's 0 is "nothing yet". A subscriber at position `c`
//! loads the word (Acquire), copies the payload with relaxed 8-byte atomic loads, fences
//! (Acquire) and loads the word again: the copy is whole exactly when both loads saw
//! `published(c)`. A word for a later lap means the slot was rewritten: the subscriber
//! was lapped and is told by how much. No `&T` into a slot ever exists while the
//! publisher may rewrite it.
//!
//! # Lossless: the floor
//!
//! A lossless publisher writes position `p` only when every subscriber that counts
//! (its cursor has an owner) has moved past `p - capacity`. It keeps a `limit` (the
//! slowest cursor it saw plus the capacity) and rescans the cursors only when its tail
//! reaches it. A subscriber that joins must not start below a position the publisher
//! already gave itself leave to overwrite, so the rescan and the join are a Dekker pair
//! over the *floor* (the header's `head` line, unused otherwise in this flavor):
//!
//! - publisher: `m1` = slowest cursor; store floor = `m1`; fence (SeqCst); `m2` =
//!   slowest cursor again; limit = `min(m1, m2) + capacity`;
//! - subscriber: store its cursor `s0` (the floor it read before) and its owner;
//!   fence (SeqCst); load floor `f` and tail `t`; start at `max(s0, f, t - capacity)`
//!   (oldest) or that and `t` (next), never below `s0` (the floor may go down when
//!   a subscriber joins low, so `s0` may exceed `f`).
//!
//! Either the publisher's second scan sees the new cursor (its limit then respects
//! it), or the subscriber's load sees that scan's floor (and it starts at or above it);
//! every later rescan sees the cursor. The cursor never moves down.
//!
//! # Trust
//!
//! Positions, cursors and sequence words from the segment only select a slot through
//! the mask and are compared: garbage can make the ring look full or empty, deliver
//! garbage bytes or report a lag, never make this code touch memory outside the slots.

use crate::layout::{CursorLine, Geometry, RingCtl};
use crate::options::Start;
use crate::sync::{AtomicU64, Ordering, fence};
use std::cell::Cell;

/// The publisher stores its position in the header every this many messages (a store
/// per message cost the stream a third of its rate; see the SPSC ring), or after every
/// message in a ring of fewer than twice as many slots, so that the hint is never more
/// than half a lap behind. Readers of the hint scan forward over the slots published
/// after it.
pub(crate) const TAIL_HINT_EVERY: u64 = 16;

/// Sequence word while position `p` is being written.
#[inline]
pub(crate) fn writing(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(1)
}

/// Sequence word once position `p` is published.
#[inline]
pub(crate) fn published(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(2)
}

/// The position a sequence word is about (written or being written); `None` for an
/// empty slot.
#[inline]
fn position_of(seq: u64) -> Option<u64> {
    match seq {
        0 => None,
        s if s & 1 == 1 => Some(s >> 1),
        s => Some((s >> 1) - 1),
    }
}

/// The shared part of a broadcast ring: where the control lines, the cursors and the
/// slots are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ring {
    ctl: *const RingCtl,
    cursors: *const CursorLine,
    n_cursors: usize,
    /// Slot memory as 8-byte words.
    words: *const AtomicU64,
    mask: u64,
    /// Words per slot.
    slot_words: usize,
    /// Word index of the payload in a slot.
    payload_word: usize,
    /// Message size in bytes (at most the payload's whole words).
    msg_size: usize,
}

// SAFETY: a Ring is pointers into a mapping (or heap block) that outlives every handle
// holding it (the handles keep the mapping alive); everything behind them is atomics.
unsafe impl Send for Ring {}

impl Ring {
    /// A ring over `ctl`, `n_cursors` cursor lines at `cursors`, and the slots at
    /// `slots` as `geo` describes them.
    ///
    /// # Safety
    /// `ctl`, the cursor lines and `capacity * slot_size` bytes at `slots` (8-aligned)
    /// must stay valid for as long as the ring or anything made from it is used, and
    /// must only be accessed atomically by everyone. `geo` must be a broadcast
    /// geometry (slot size and payload offset multiples of 8).
    pub unsafe fn new(
        ctl: *const RingCtl,
        cursors: *const CursorLine,
        n_cursors: usize,
        slots: *mut u8,
        geo: &Geometry,
    ) -> Ring {
        debug_assert!(geo.slot_size % 8 == 0 && geo.payload_offset % 8 == 0);
        debug_assert!(slots as usize % 8 == 0);
        Ring {
            ctl,
            cursors,
            n_cursors,
            words: slots as *const AtomicU64,
            mask: geo.mask(),
            slot_words: geo.slot_size / 8,
            payload_word: geo.payload_offset / 8,
            msg_size: geo.msg_size,
        }
    }

    #[inline]
    pub fn ctl(&self) -> &RingCtl {
        // SAFETY: valid for the ring's life (constructor contract).
        unsafe { &*self.ctl }
    }

    /// Number of slots.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// The cursor lines.
    #[inline]
    pub fn cursors(&self) -> &[CursorLine] {
        // SAFETY: `n_cursors` lines at `cursors`, valid for the ring's life.
        unsafe { std::slice::from_raw_parts(self.cursors, self.n_cursors) }
    }

    /// Word `w` of the slot of position `pos`.
    #[inline]
    fn word(&self, pos: u64, w: usize) -> &AtomicU64 {
        let slot = (pos & self.mask) as usize;
        debug_assert!(w < self.slot_words);
        // SAFETY: slot < capacity and w < slot_words, so the word lies inside the
        // slot array (constructor contract); it is only accessed atomically.
        unsafe { &*self.words.add(slot * self.slot_words + w) }
    }

    /// The sequence word of the slot of `pos`.
    #[inline]
    fn seq(&self, pos: u64) -> &AtomicU64 {
        self.word(pos, 0)
    }

    /// The publisher's position hint: positions below it are published; the
    /// publisher stores it every [`TAIL_HINT_EVERY`] messages.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.ctl().tail.pos.load(Ordering::Acquire)
    }

    /// The publisher's position: the hint, then past the slots published after it
    /// (at most a ring's worth).
    pub fn scan_tail(&self) -> u64 {
        self.scan_from(self.tail())
    }

    /// The first position from `t` on that is not published (at most a ring's worth
    /// later).
    fn scan_from(&self, mut t: u64) -> u64 {
        for _ in 0..self.capacity() {
            if self.seq(t).load(Ordering::Acquire) != published(t) {
                break;
            }
            t = t.wrapping_add(1);
        }
        t
    }

    /// The floor: no subscriber joins below it (see the module docs).
    #[inline]
    fn floor(&self) -> u64 {
        self.ctl().head.pos.load(Ordering::Acquire)
    }

    /// The slowest cursor with an owner, if below `tail`; else `tail`.
    fn slowest(&self, tail: u64) -> u64 {
        let mut m = tail;
        for c in self.cursors() {
            // Acquire: a cursor's owner is stored after its position (Release), and a
            // position is stored after the subscriber finished reading the slots
            // below it, so the publisher's later writes to those slots come after.
            if c.owner.load(Ordering::Acquire) != 0 {
                m = m.min(c.pos.load(Ordering::Acquire));
            }
        }
        m
    }

    /// Writes `len` bytes from `src` into the payload of `pos`'s slot with relaxed
    /// 8-byte atomic stores.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes, `len <= msg_size`.
    #[inline]
    unsafe fn store_payload(&self, pos: u64, src: *const u8, len: usize) {
        debug_assert!(len <= self.msg_size);
        let whole = len / 8;
        for i in 0..whole {
            // SAFETY: 8 bytes at i * 8 < len are readable (caller).
            let w = unsafe { src.add(i * 8).cast::<u64>().read_unaligned() };
            self.word(pos, self.payload_word + i)
                .store(w, Ordering::Relaxed);
        }
        let rest = len % 8;
        if rest > 0 {
            let mut b = [0u8; 8];
            // SAFETY: the last `rest` bytes of src are readable (caller).
            unsafe { std::ptr::copy_nonoverlapping(src.add(whole * 8), b.as_mut_ptr(), rest) };
            self.word(pos, self.payload_word + whole)
                .store(u64::from_ne_bytes(b), Ordering::Relaxed);
        }
    }

    /// Copies `len` bytes of the payload of `pos`'s slot to `dst` with relaxed 8-byte
    /// atomic loads.
    ///
    /// # Safety
    /// `dst` must be writable for `len` bytes, `len <= msg_size`.
    #[inline]
    unsafe fn load_payload(&self, pos: u64, dst: *mut u8, len: usize) {
        debug_assert!(len <= self.msg_size);
        let whole = len / 8;
        for i in 0..whole {
            let w = self
                .word(pos, self.payload_word + i)
                .load(Ordering::Relaxed);
            // SAFETY: 8 bytes at i * 8 < len are writable (caller).
            unsafe { dst.add(i * 8).cast::<u64>().write_unaligned(w) };
        }
        let rest = len % 8;
        if rest > 0 {
            let w = self
                .word(pos, self.payload_word + whole)
                .load(Ordering::Relaxed);
            let b = w.to_ne_bytes();
            // SAFETY: the last `rest` bytes of dst are writable (caller).
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), dst.add(whole * 8), rest) };
        }
    }
}

/// The publisher's end: its position and, when lossless, how far it may write.
#[derive(Debug)]
pub(crate) struct Publisher {
    ring: Ring,
    tail: Cell<u64>,
    /// The tail hint is stored when `tail & hint_mask == 0`.
    hint_mask: u64,
    /// Lossless: the slowest cursor at the last rescan; positions below it plus the
    /// capacity may be written without another (compared by distance, so garbage
    /// positions near `u64::MAX` cannot make the ring look full forever).
    slowest: Cell<u64>,
    lossless: bool,
}

impl Publisher {
    /// Takes over the publishing end at the position the segment says: the tail hint,
    /// then past any slot a predecessor published after its last hint. A slot a
    /// predecessor left half written is written again.
    pub fn attach(ring: Ring, lossless: bool) -> Publisher {
        let t = ring.scan_tail();
        ring.ctl().tail.pos.store(t, Ordering::Release);
        Publisher {
            ring,
            tail: Cell::new(t),
            hint_mask: if ring.capacity() >= 2 * TAIL_HINT_EVERY {
                TAIL_HINT_EVERY - 1
            } else {
                0
            },
            slowest: Cell::new(t.wrapping_sub(ring.capacity())),
            lossless,
        }
    }

    #[inline]
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The next position to publish.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail.get()
    }

    /// Whether the next position may be written now (rescanning the cursors if the
    /// cached limit says no). Overwrite: always.
    #[inline]
    pub fn has_room(&self) -> bool {
        !self.lossless || self.within_limit() || self.rescan()
    }

    #[inline]
    fn within_limit(&self) -> bool {
        self.tail.get().wrapping_sub(self.slowest.get()) < self.ring.capacity()
    }

    /// Recomputes the limit from the cursors (the publisher's half of the floor
    /// protocol); whether the next position may be written.
    #[cold]
    pub fn rescan(&self) -> bool {
        let t = self.tail.get();
        let cap = self.ring.capacity();
        let m1 = self.ring.slowest(t);
        self.ring.ctl().head.pos.store(m1, Ordering::Relaxed);
        // The Dekker fence with a joining subscriber's (module docs): our second scan
        // sees its cursor, or it sees the floor stored above.
        fence(Ordering::SeqCst);
        let m2 = self.ring.slowest(t);
        self.slowest.set(m1.min(m2));
        t.wrapping_sub(self.slowest.get()) < cap
    }

    /// Writes `len` bytes from `src` as the message at the tail and publishes it.
    /// The caller checked [`has_room`](Self::has_room). (Tests and models; the
    /// handles write and commit.)
    ///
    /// # Safety
    /// `src` must be readable for `len <= msg_size` bytes.
    #[cfg(any(test, loom))]
    pub unsafe fn publish(&self, src: *const u8, len: usize) {
        // SAFETY: forwarded from the caller.
        unsafe { self.write(0, src, len, None) };
        self.commit(1);
    }

    /// How many of the next `want` positions may be written now (lossless: before the
    /// slowest counted cursor's slot comes round; overwrite: all).
    #[inline]
    pub fn room(&self, want: u64) -> u64 {
        if !self.lossless {
            // Never more than a ring: a batch that wrapped onto its own slots would
            // publish a slot for a position it has since rewritten.
            return want.min(self.ring.capacity());
        }
        if !self.has_room() {
            return 0;
        }
        let used = self.tail.get().wrapping_sub(self.slowest.get());
        want.min(self.ring.capacity().saturating_sub(used))
    }

    /// Writes the message at `tail + k` (not yet published: its sequence word says
    /// "being written", so no subscriber reads it). With `len_word`, also stores that
    /// value in the word before the payload (byte messages' length). The caller got
    /// room for `tail + k`.
    ///
    /// # Safety
    /// `src` must be readable for `len <= msg_size` bytes; with `len_word`, the slot
    /// must have a word before the payload (a byte channel's geometry).
    #[inline]
    pub unsafe fn write(&self, k: u64, src: *const u8, len: usize, len_word: Option<u64>) {
        let p = self.tail.get().wrapping_add(k);
        self.ring.seq(p).store(writing(p), Ordering::Relaxed);
        // Release fence: a subscriber whose second look at the sequence word comes
        // after (Acquire fence) any of our payload stores sees `writing(p)` or later.
        fence(Ordering::Release);
        if let Some(l) = len_word {
            self.ring
                .word(p, self.ring.payload_word - 1)
                .store(l, Ordering::Relaxed);
        }
        // SAFETY: forwarded from the caller.
        unsafe { self.ring.store_payload(p, src, len) };
    }

    /// Before writing a batch of `n` (more than one) positions: stores the exact
    /// position hint, so that the hint is never more than a ring behind what the
    /// batch publishes (a successor, a joiner or `inspect` scans forward from it at
    /// most a ring; a stale hint and a large batch would let the scan stop at a slot
    /// the batch rewrote).
    #[inline]
    pub fn begin_batch(&self, n: u64) {
        if n > 1 {
            self.store_tail();
        }
    }

    /// Publishes the next `n` positions (written by [`write`](Self::write)), in order.
    #[inline]
    pub fn commit(&self, n: u64) {
        let t = self.tail.get();
        for k in 0..n {
            let p = t.wrapping_add(k);
            // Release: a subscriber that sees `published(p)` sees the payload.
            self.ring.seq(p).store(published(p), Ordering::Release);
        }
        let next = t.wrapping_add(n);
        self.tail.set(next);
        // The hint, whenever the batch reached or crossed a multiple of the interval.
        if n > 0 && (t & !self.hint_mask) != (next & !self.hint_mask) {
            self.ring.ctl().tail.pos.store(next, Ordering::Release);
        }
    }

    /// Stores the exact position in the header (when the publisher leaves).
    pub fn store_tail(&self) {
        self.ring
            .ctl()
            .tail
            .pos
            .store(self.tail.get(), Ordering::Release);
    }

    /// Stops counting cursor `i` if its owner is still `owner` (a subscriber found
    /// gone). Returns whether this call did it.
    pub fn evict(&self, i: usize, owner: u64) -> bool {
        let Some(c) = self.ring.cursors().get(i) else {
            return false;
        };
        let done = c
            .owner
            .compare_exchange(owner, 0, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if done {
            // Rescan at the next send.
            self.slowest
                .set(self.tail.get().wrapping_sub(self.ring.capacity()));
        }
        done
    }

    /// The cursors holding the publisher back: `(index, owner)` of each cursor with an
    /// owner whose position is at or below `tail - capacity`.
    pub fn laggards(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let t = self.tail.get();
        let edge = t.saturating_sub(self.ring.capacity());
        self.ring
            .cursors()
            .iter()
            .enumerate()
            .filter_map(move |(i, c)| {
                let owner = c.owner.load(Ordering::Acquire);
                (owner != 0 && c.pos.load(Ordering::Acquire) <= edge).then_some((i, owner))
            })
    }
}

/// What a subscriber's look at its next slot found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// The message was copied out whole.
    Got,
    /// Not published yet.
    Empty,
    /// The slot was rewritten for a later lap: this many messages were missed; the
    /// cursor moved past them to the oldest one likely still intact.
    Lagged(u64),
}

/// A subscriber's end: its cursor.
#[derive(Debug)]
pub(crate) struct Subscriber {
    ring: Ring,
    index: usize,
    owner: u64,
    pos: Cell<u64>,
}

impl Subscriber {
    /// Starts counting through cursor `index` as `owner` (non-zero), at the position
    /// `start` asks for (the subscriber's half of the floor protocol when lossless).
    /// `None` if there is no such cursor.
    pub fn join(ring: Ring, index: usize, owner: u64, start: Start) -> Option<Subscriber> {
        let line = ring.cursors().get(index)?;
        // A new subscriber's own count (the line may have served another before).
        line.missed.store(0, Ordering::Relaxed);
        let s0 = ring.floor().min(ring.tail());
        let start = Self::announce(&ring, index, owner, s0, start);
        Some(Subscriber {
            ring,
            index,
            owner,
            pos: Cell::new(start),
        })
    }

    /// The subscriber's half of the floor protocol: announces cursor `index` at `s0`
    /// for `owner`, then moves it to where it may safely start; returns that position.
    fn announce(ring: &Ring, index: usize, owner: u64, s0: u64, start: Start) -> u64 {
        let c = &ring.cursors()[index];
        let cap = ring.capacity();
        c.pos.store(s0, Ordering::Relaxed);
        // Release: a publisher that sees the owner sees the position.
        c.owner.store(owner, Ordering::Release);
        // The Dekker fence with the publisher's rescan (module docs).
        fence(Ordering::SeqCst);
        let f = ring.floor();
        let t = ring.scan_tail();
        // Overwrite mode has no floor (the publisher never scans): the oldest message
        // is the one in the slot the publisher writes next.
        let oldest = s0.max(f).max(t.saturating_sub(cap));
        let start = match start {
            Start::Oldest => oldest,
            Start::Next => oldest.max(t),
        };
        c.pos.store(start, Ordering::Release);
        start
    }

    /// Counts again after the publisher stopped counting this cursor (it was evicted:
    /// over the channel's lag limit, or by a hostile writer), continuing at the oldest
    /// message it may still safely read from its position on. Returns how many
    /// messages that skips (to be reported as a lag).
    #[cold]
    pub fn rejoin(&self) -> u64 {
        let c = self.pos.get();
        let start = Self::announce(&self.ring, self.index, self.owner, c, Start::Oldest);
        self.pos.set(start);
        let skipped = start.wrapping_sub(c);
        if skipped > 0 {
            self.line().missed.fetch_add(skipped, Ordering::Relaxed);
        }
        skipped
    }

    #[inline]
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The next position to read.
    #[inline]
    pub fn pos(&self) -> u64 {
        self.pos.get()
    }

    #[inline]
    fn line(&self) -> &CursorLine {
        // Index checked at join.
        &self.ring.cursors()[self.index]
    }

    /// Whether the publisher still counts this cursor (a lossless publisher evicts a
    /// subscriber found dead, or one over the channel's lag limit).
    #[inline]
    pub fn counted(&self) -> bool {
        self.line().owner.load(Ordering::Acquire) == self.owner
    }

    /// Whether a receive would find something: the next message, or news that it
    /// was overwritten (a look at its sequence word).
    #[inline]
    pub fn ready(&self) -> bool {
        let c = self.pos.get();
        let s = self.ring.seq(c).load(Ordering::Acquire);
        s == published(c) || position_of(s).is_some_and(|q| q > c)
    }

    /// Copies the next message (`len <= msg_size` bytes) to `dst` if it is published
    /// and intact, and moves the cursor past it.
    ///
    /// # Safety
    /// `dst` must be writable for `len` bytes, and `len <= msg_size`.
    #[inline]
    pub unsafe fn try_read(&self, dst: *mut u8, len: usize) -> Read {
        let c = self.pos.get();
        let seq = self.ring.seq(c);
        let want = published(c);
        let s1 = seq.load(Ordering::Acquire);
        if s1 == want {
            // SAFETY: forwarded from the caller.
            unsafe { self.ring.load_payload(c, dst, len) };
            // Acquire fence: if any payload load saw a store of a later lap, the load
            // below sees that lap's `writing` (the publisher's Release fence).
            fence(Ordering::Acquire);
            let s2 = seq.load(Ordering::Relaxed);
            if s2 == want {
                self.advance(c.wrapping_add(1));
                return Read::Got;
            }
            return self.lagged(c, s2);
        }
        match position_of(s1) {
            Some(q) if q > c => self.lagged(c, s1),
            _ => Read::Empty,
        }
    }

    /// Lossless only: whether the next message is published; then it stays intact until
    /// [`release`](Self::release) (the publisher does not rewrite a slot a counted
    /// cursor has not passed), and [`payload`](Self::payload) may be read in place.
    #[inline]
    pub fn peek(&self) -> Read {
        let c = self.pos.get();
        let s = self.ring.seq(c).load(Ordering::Acquire);
        if s == published(c) {
            return Read::Got;
        }
        match position_of(s) {
            Some(q) if q > c => self.lagged(c, s),
            _ => Read::Empty,
        }
    }

    /// The payload of the next message's slot (8-aligned, `msg_size` bytes; for a
    /// zero-sized message, the end of the slot: no reference to it is made here).
    #[inline]
    pub fn payload(&self) -> *const u8 {
        let slot = (self.pos.get() & self.ring.mask) as usize;
        self.ring
            .words
            .wrapping_add(slot * self.ring.slot_words + self.ring.payload_word)
            .cast()
    }

    /// Moves past the message [`peek`](Self::peek) found.
    #[inline]
    pub fn release(&self) {
        self.advance(self.pos.get().wrapping_add(1));
    }

    /// Copies the next byte message into `buf` (its length clamped to `max_len`) if it
    /// is published and intact, and moves the cursor past it.
    pub fn try_read_bytes(&self, buf: &mut Vec<u8>, max_len: usize) -> Read {
        let c = self.pos.get();
        let seq = self.ring.seq(c);
        let want = published(c);
        let s1 = seq.load(Ordering::Acquire);
        if s1 == want {
            let len = self
                .ring
                .word(c, self.ring.payload_word - 1)
                .load(Ordering::Relaxed);
            // Clamped to the slot too, whatever the caller passes.
            let len = usize::try_from(len)
                .unwrap_or(usize::MAX)
                .min(max_len)
                .min(self.ring.msg_size);
            buf.clear();
            buf.reserve(len);
            // SAFETY: `buf` has room for `len` bytes (reserved), len <= msg_size
            // (clamped above); the bytes are set by the copy before the length is.
            unsafe {
                self.ring.load_payload(c, buf.as_mut_ptr(), len);
                buf.set_len(len);
            }
            fence(Ordering::Acquire);
            let s2 = seq.load(Ordering::Relaxed);
            if s2 == want {
                self.advance(c.wrapping_add(1));
                return Read::Got;
            }
            buf.clear();
            return self.lagged(c, s2);
        }
        match position_of(s1) {
            Some(q) if q > c => self.lagged(c, s1),
            _ => Read::Empty,
        }
    }

    /// Moves the cursor to `to` and tells the publisher.
    #[inline]
    fn advance(&self, to: u64) {
        self.pos.set(to);
        // Release: the publisher that sees it (Acquire) rewrites the slots below it
        // only after our loads of them.
        self.line().pos.store(to, Ordering::Release);
    }

    /// The slot of `c` held `seq`, a later lap: jump to the oldest message still in
    /// the ring, count the skipped ones. (If the publisher rewrites that one too
    /// before we read it, the next look reports the further lag.)
    #[cold]
    fn lagged(&self, c: u64, seq: u64) -> Read {
        let cap = self.ring.capacity();
        // Where the publisher is: from what the slot showed (or the hint, if later),
        // past everything published since.
        let seen = position_of(seq).unwrap_or(c).max(self.ring.tail());
        let n = self.ring.scan_from(seen);
        // Slots hold positions n - cap .. n - 1, less the one being rewritten for n.
        let oldest = if self.ring.seq(n).load(Ordering::Acquire) == writing(n) {
            n.saturating_add(1).saturating_sub(cap)
        } else {
            n.saturating_sub(cap)
        };
        let to = oldest.max(c.wrapping_add(1));
        let missed = to.wrapping_sub(c);
        self.line().missed.fetch_add(missed, Ordering::Relaxed);
        self.advance(to);
        Read::Lagged(missed)
    }

    /// Stops counting (the handle leaves).
    pub fn leave(&self) {
        let _ =
            self.line()
                .owner
                .compare_exchange(self.owner, 0, Ordering::AcqRel, Ordering::Relaxed);
    }
}

#[cfg(any(test, loom))]
pub(crate) mod heap {
    //! Broadcast rings over heap memory, for unit tests and loom models.
    use super::*;
    use crate::layout::{FLAVOR_BROADCAST, KIND_TYPED};

    /// Owns the control block, the cursors and the slots of a ring on the heap.
    pub struct HeapRing {
        ctl: Box<RingCtl>,
        cursors: Vec<CursorLine>,
        words: Vec<AtomicU64>,
        pub geo: Geometry,
    }

    // SAFETY: all shared state is atomics.
    unsafe impl Sync for HeapRing {}
    // SAFETY: as above; the heap blocks move with the value.
    unsafe impl Send for HeapRing {}

    impl HeapRing {
        /// A ring of `capacity` slots carrying `words` 8-byte words per message, with
        /// `subscribers` cursors.
        pub fn new(capacity: u64, words: usize, subscribers: u32) -> HeapRing {
            let geo = Geometry::with_subscribers(
                FLAVOR_BROADCAST,
                KIND_TYPED,
                capacity,
                8 * words as u64,
                8,
                subscribers,
            )
            .expect("geometry");
            let cursors = (0..subscribers)
                .map(|_| CursorLine {
                    pos: AtomicU64::new(0),
                    owner: AtomicU64::new(0),
                    missed: AtomicU64::new(0),
                })
                .collect();
            let n = capacity as usize * geo.slot_size / 8;
            HeapRing {
                ctl: RingCtl::boxed(),
                cursors,
                words: (0..n).map(|_| AtomicU64::new(0)).collect(),
                geo,
            }
        }

        /// A ring handle over this memory; valid while `self` lives.
        pub fn ring(&self) -> Ring {
            // SAFETY: the blocks are owned by self, sized for geo, 8-aligned (u64
            // atomics), accessed only atomically, and outlive the ring as long as the
            // caller keeps `self` alive (tests do).
            unsafe {
                Ring::new(
                    &*self.ctl,
                    self.cursors.as_ptr(),
                    self.cursors.len(),
                    self.words.as_ptr() as *mut u8,
                    &self.geo,
                )
            }
        }
    }

    /// Publishes `msg` if there is room (test helper).
    pub fn publish(p: &Publisher, msg: &[u64]) -> bool {
        if !p.has_room() {
            return false;
        }
        // SAFETY: msg is readable for its length in bytes.
        unsafe { p.publish(msg.as_ptr().cast(), msg.len() * 8) };
        true
    }

    /// Reads the next message into `out` (test helper).
    pub fn read(s: &Subscriber, out: &mut [u64]) -> Read {
        // SAFETY: out is writable for its length in bytes.
        unsafe { s.try_read(out.as_mut_ptr().cast(), out.len() * 8) }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::heap::*;
    use super::*;

    #[test]
    fn every_subscriber_reads_every_message_in_order() {
        let h = HeapRing::new(4, 1, 3);
        let p = Publisher::attach(h.ring(), true);
        let subs: Vec<_> = (0..3)
            .map(|i| Subscriber::join(h.ring(), i, 7 + i as u64, Start::Next).expect("join"))
            .collect();
        let mut next = [0u64; 3];
        let mut sent = 0u64;
        while sent < 100 {
            while sent < 100 && publish(&p, &[sent]) {
                sent += 1;
            }
            // The ring holds at most capacity messages past the slowest cursor.
            assert!(p.tail() - subs.iter().map(|s| s.pos()).min().unwrap() <= 4);
            for (i, s) in subs.iter().enumerate() {
                // Subscriber 2 reads one message per round only: the slowest.
                let budget = if i == 2 { 1 } else { usize::MAX };
                let mut out = [0u64];
                for _ in 0..budget {
                    match read(s, &mut out) {
                        Read::Got => {
                            assert_eq!(out[0], next[i]);
                            next[i] += 1;
                        }
                        Read::Empty => break,
                        Read::Lagged(n) => panic!("lossless lagged by {n}"),
                    }
                }
            }
        }
        assert_eq!(next[0], 100);
    }

    #[test]
    fn overwrite_reports_exact_lag_and_resumes_at_the_oldest_intact() {
        let h = HeapRing::new(4, 2, 1);
        let p = Publisher::attach(h.ring(), false);
        let s = Subscriber::join(h.ring(), 0, 1, Start::Next).expect("join");
        for v in 0..10u64 {
            assert!(publish(&p, &[v, !v]));
        }
        let mut out = [0u64; 2];
        // Positions 6..=9 are in the ring.
        assert_eq!(read(&s, &mut out), Read::Lagged(6));
        let mut got = vec![];
        while read(&s, &mut out) == Read::Got {
            assert_eq!(out[1], !out[0]);
            got.push(out[0]);
        }
        assert_eq!(got, vec![6, 7, 8, 9]);
        assert_eq!(h.ring().cursors()[0].missed.load(Ordering::Relaxed), 6);
    }

    #[test]
    fn late_joiners_start_at_the_next_or_the_oldest_retained() {
        let h = HeapRing::new(8, 1, 2);
        let p = Publisher::attach(h.ring(), true);
        for v in 0..5u64 {
            assert!(publish(&p, &[v]));
        }
        let next = Subscriber::join(h.ring(), 0, 1, Start::Next).expect("join");
        let oldest = Subscriber::join(h.ring(), 1, 2, Start::Oldest).expect("join");
        assert_eq!(next.pos(), 5);
        assert_eq!(oldest.pos(), 0);
        let mut out = [0u64];
        assert_eq!(read(&next, &mut out), Read::Empty);
        assert_eq!((read(&oldest, &mut out), out[0]), (Read::Got, 0));
        // The oldest joiner holds the publisher back: 8 slots from position 1.
        for v in 5..9u64 {
            assert!(publish(&p, &[v]));
        }
        assert!(!p.has_room());
        assert_eq!(p.laggards().collect::<Vec<_>>(), vec![(1, 2)]);
        // Evicted (as a dead subscriber would be), it holds nobody back...
        assert!(p.evict(1, 2));
        assert!(p.has_room());
        // ... and learns of it by the lag once its slot is rewritten.
        for v in 9..12u64 {
            assert!(publish(&p, &[v]));
            assert_eq!(read(&next, &mut out), Read::Got);
        }
        assert!(!oldest.counted());
        assert!(matches!(read(&oldest, &mut out), Read::Lagged(_)));
    }

    /// Found by review: a publisher killed while committing a batch larger than the
    /// distance to its stale position hint left its successor scanning from the hint
    /// into a slot the batch had rewritten, so it started a ring too early and
    /// rewrote published messages. The hint is now stored before each batch.
    #[test]
    fn a_successor_finds_the_end_of_a_large_batch_cut_short() {
        let h = HeapRing::new(32, 1, 1);
        let p = Publisher::attach(h.ring(), true);
        let s = Subscriber::join(h.ring(), 0, 1, Start::Next).expect("join");
        let mut out = [0u64];
        for v in 0..40u64 {
            assert!(publish(&p, &[v]));
            assert_eq!(read(&s, &mut out), Read::Got);
        }
        assert_eq!(h.ring().tail(), 32, "hint every 16");
        // A batch of 32 (the whole ring), killed after publishing 30 of them.
        assert!(p.rescan());
        assert_eq!(p.room(32), 32);
        p.begin_batch(32);
        for k in 0..32u64 {
            // SAFETY: an 8-byte value, readable.
            unsafe { p.write(k, (&(40 + k) as *const u64).cast(), 8, None) };
        }
        for pos in 40..70u64 {
            h.ring().seq(pos).store(published(pos), Ordering::Release);
        }
        let successor = Publisher::attach(h.ring(), true);
        assert_eq!(successor.tail(), 70);
        for want in 40..70u64 {
            assert_eq!((read(&s, &mut out), out[0]), (Read::Got, want));
        }
    }

    #[test]
    fn an_overwrite_batch_takes_at_most_a_ring() {
        let h = HeapRing::new(4, 1, 1);
        let p = Publisher::attach(h.ring(), false);
        assert_eq!(p.room(10), 4);
    }

    #[test]
    fn a_new_publisher_continues_after_the_last_published_slot() {
        let h = HeapRing::new(4, 1, 1);
        let p = Publisher::attach(h.ring(), false);
        for v in 0..6u64 {
            assert!(publish(&p, &[v]));
        }
        // Killed after publishing 6 but before its tail hint.
        h.ring().seq(6).store(published(6), Ordering::Release);
        let p2 = Publisher::attach(h.ring(), false);
        assert_eq!(p2.tail(), 7);
        // Garbage in the tail hint or the slots only moves positions around.
        h.ring().ctl().tail.pos.store(u64::MAX, Ordering::Relaxed);
        let p3 = Publisher::attach(h.ring(), true);
        assert!(publish(&p3, &[1]));
        let s = Subscriber::join(h.ring(), 0, 1, Start::Oldest).expect("join");
        let mut out = [0u64];
        let _ = read(&s, &mut out);
    }
}
