//! The multi-producer multi-consumer ring: a bounded queue with one claim word per
//! slot (after Vyukov), in which every claim names its claimant, so that a claim left
//! by a dead process can be found and cleared.
//!
//! # The slot word
//!
//! | bits   | field   | meaning                                                    |
//! |--------|---------|------------------------------------------------------------|
//! | 63..61 | state   | [`FREE`], [`WRITING`], [`FULL`], [`READING`], [`SKIP`]     |
//! | 60..21 | lap     | `position / capacity`, modulo 2^40                         |
//! | 20..13 | peer    | peer-table index of the claimant (WRITING, READING)        |
//! | 12..0  | gen     | low 13 bits of the claimant's attach generation            |
//!
//! Slot `i` serves positions `lap * capacity + i`. Its life in one lap `L`:
//!
//! ```text
//! FREE(L) --producer CAS--> WRITING(L, me) --producer CAS--> FULL(L)
//! FULL(L) --consumer CAS--> READING(L, me) --consumer CAS--> FREE(L+1)
//! WRITING(L, dead) --anyone--> SKIP(L) --anyone--> FREE(L+1)     (torn: dropped)
//! READING(L, dead) --anyone--> FREE(L+1)       (the message the dead consumer held)
//! ```
//!
//! A zeroed segment is all `FREE(0)`: ready to use.
//!
//! # Positions
//!
//! `tail` and `head` in the header are hints: the claim is the CAS on the slot word,
//! and whoever finds the slot of `tail` (or `head`) already claimed for the current lap
//! helps the hint forward. A producer at position `p` (lap `L`) looks at its slot:
//! `FREE(L)` — claim it; any state of lap `L` or a later lap — the position is taken,
//! move on; lap `L - 1` not yet freed — the ring is full. A consumer: `FULL(L)` — claim
//! it; `FREE(L)` or `WRITING(L)` or an older lap — empty (for now); `READING(L)`,
//! `SKIP(L)` or a later lap — taken or dead, move on.
//!
//! Because the publish (`WRITING → FULL`) and the release (`READING → FREE`) are CASes
//! against the claimant's own word, a claimant that was wrongly fenced (impossible
//! while its process lives: see `peers.rs`) notices it and retries; a consumer only
//! hands out a copy if its release CAS succeeded, so a torn copy is never delivered.
//!
//! # Trust
//!
//! Slot words and positions may hold garbage: positions are masked into the ring,
//! words only compared and CASed, loops bounded. Garbage can stall the ring or yield
//! garbage payload bytes, never an access outside the slot array.

use crate::layout::{Geometry, RingCtl};
use crate::sync::{AtomicU64, Ordering};
use crate::wait;

/// Slot state: free for the producers of its lap.
pub(crate) const FREE: u64 = 0;
/// Slot state: claimed by a producer that is writing.
pub(crate) const WRITING: u64 = 1;
/// Slot state: holds a message.
pub(crate) const FULL: u64 = 2;
/// Slot state: claimed by a consumer that is copying the message out.
pub(crate) const READING: u64 = 3;
/// Slot state: its producer died while writing; consumers pass over it.
pub(crate) const SKIP: u64 = 4;

const STATE_SHIFT: u32 = 61;
const LAP_SHIFT: u32 = 21;
const LAP_BITS: u32 = 40;
const LAP_MASK: u64 = (1 << LAP_BITS) - 1;
const PEER_SHIFT: u32 = 13;
const PEER_MASK: u64 = 0xFF;
/// Bits of the generation kept in a claim.
pub(crate) const GEN_MASK: u32 = 0x1FFF;

/// Iterations (per slot of capacity, plus a constant) after which a try-operation
/// gives up on a ring that makes no sense (garbage words). Legitimate runs move past at
/// most one lap of taken positions, and each lost CAS means another claimant won.
const SPINS_PER_SLOT: u64 = 16;
const SPINS_EXTRA: u64 = 4096;

/// Who holds a claim: a peer-table index and its generation (low 13 bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimant {
    pub peer: u8,
    pub generation: u32,
}

/// A decoded slot word.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Word {
    pub state: u64,
    pub lap: u64,
    pub who: Claimant,
}

#[inline]
pub(crate) fn encode(state: u64, lap: u64, who: Claimant) -> u64 {
    state << STATE_SHIFT
        | (lap & LAP_MASK) << LAP_SHIFT
        | (who.peer as u64 & PEER_MASK) << PEER_SHIFT
        | (who.generation & GEN_MASK) as u64
}

#[inline]
pub(crate) fn decode(w: u64) -> Word {
    Word {
        state: w >> STATE_SHIFT,
        lap: (w >> LAP_SHIFT) & LAP_MASK,
        who: Claimant {
            peer: ((w >> PEER_SHIFT) & PEER_MASK) as u8,
            generation: (w as u32) & GEN_MASK,
        },
    }
}

const NOBODY: Claimant = Claimant {
    peer: 0,
    generation: 0,
};

/// `lap - want` as a signed distance modulo 2^40.
#[inline]
fn lap_diff(lap: u64, want: u64) -> i64 {
    let d = lap.wrapping_sub(want) & LAP_MASK;
    if d >= 1 << (LAP_BITS - 1) {
        d as i64 - (1i64 << LAP_BITS)
    } else {
        d as i64
    }
}

/// Why a try-operation could not proceed, with the claim in the way if there is one
/// (so the caller can check whether its holder is alive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    /// Position whose slot blocks.
    pub pos: u64,
    /// The slot word seen there.
    pub word: u64,
}

impl Blocked {
    /// The claim that blocks, if the slot is claimed (WRITING or READING).
    pub fn claim(&self) -> Option<Claimant> {
        let w = decode(self.word);
        matches!(w.state, WRITING | READING).then_some(w.who)
    }
}

/// The shared part of an MPMC ring.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MpmcRing {
    ctl: *const RingCtl,
    slots: *mut u8,
    mask: u64,
    shift: u32,
    slot_size: usize,
    payload_offset: usize,
}

// SAFETY: pointers into a mapping (or heap block) that outlives every user of the ring;
// all shared state behind them is accessed through atomics or under the claim protocol.
unsafe impl Send for MpmcRing {}
// SAFETY: as above: every method takes &self and coordinates through the slot words.
unsafe impl Sync for MpmcRing {}

/// Slot layout under loom.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct LoomSlot {
    pub word: AtomicU64,
    pub data: loom::cell::UnsafeCell<u64>,
}

impl MpmcRing {
    /// # Safety
    /// As `spsc::Ring::new`: `ctl` valid, `slots` holds `capacity` slots of
    /// `slot_size` bytes, 8-aligned (under loom: `capacity` `LoomSlot`s), both alive
    /// for every use of the ring.
    pub unsafe fn new(ctl: *const RingCtl, slots: *mut u8, geo: &Geometry) -> MpmcRing {
        MpmcRing {
            ctl,
            slots,
            mask: geo.mask(),
            shift: geo.capacity.trailing_zeros(),
            slot_size: geo.slot_size,
            payload_offset: geo.payload_offset,
        }
    }

    #[inline]
    pub fn ctl(&self) -> &RingCtl {
        // SAFETY: `new`'s contract.
        unsafe { &*self.ctl }
    }

    #[inline]
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    #[inline]
    fn lap(&self, pos: u64) -> u64 {
        (pos >> self.shift) & LAP_MASK
    }

    #[cfg(not(loom))]
    #[inline]
    fn slot(&self, pos: u64) -> *mut u8 {
        let idx = (pos & self.mask) as usize;
        // SAFETY: idx < capacity, so the slot lies inside the slot array (`new`).
        unsafe { self.slots.add(idx * self.slot_size) }
    }

    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn word(&self, pos: u64) -> &AtomicU64 {
        // SAFETY: the slot starts with its 8-aligned claim word (slot size and array
        // start are multiples of 8), inside the array.
        unsafe { &*(self.slot(pos) as *const AtomicU64) }
    }

    #[cfg(loom)]
    #[inline]
    fn loom_slot(&self, pos: u64) -> &LoomSlot {
        // SAFETY: under loom `slots` is an array of `capacity` LoomSlots.
        unsafe { &*(self.slots as *const LoomSlot).add((pos & self.mask) as usize) }
    }

    #[cfg(loom)]
    #[inline]
    pub(crate) fn word(&self, pos: u64) -> &AtomicU64 {
        &self.loom_slot(pos).word
    }

    /// Pointer to the payload of the slot of `pos`.
    #[cfg(not(loom))]
    #[inline]
    pub fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: payload_offset + message size <= slot_size (Geometry).
        unsafe { self.slot(pos).add(self.payload_offset) }
    }

    #[inline]
    fn write_payload(&self, pos: u64, f: impl FnOnce(*mut u8)) {
        #[cfg(not(loom))]
        f(self.payload(pos));
        #[cfg(loom)]
        self.loom_slot(pos).data.with_mut(|p| f(p.cast()));
    }

    #[inline]
    fn read_payload<R>(&self, pos: u64, f: impl FnOnce(*const u8) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.payload(pos))
        }
        #[cfg(loom)]
        {
            self.loom_slot(pos).data.with(|p| f(p.cast()))
        }
    }

    /// Messages in the ring, from the position hints (a snapshot).
    pub fn len(&self) -> u64 {
        let ctl = self.ctl();
        let head = ctl.head.pos.load(Ordering::Acquire);
        let tail = ctl.tail.pos.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity())
    }

    /// Moves the hint `hint` from `pos` to `pos + 1` if nobody did yet.
    #[inline]
    fn help(hint: &AtomicU64, pos: u64) {
        // Relaxed on failure: someone else moved it; we reload it anyway. Release on
        // success orders our observation of the claim before the new hint.
        let _ = hint.compare_exchange(
            pos,
            pos.wrapping_add(1),
            Ordering::Release,
            Ordering::Relaxed,
        );
    }

    /// Sends one message: claims the next free position, lets `write` fill its
    /// payload, publishes it and wakes a sleeping consumer.
    ///
    /// # Errors
    /// `Blocked` when the ring is full: the slot of the next position still holds the
    /// previous lap (possibly a claim of a dead process, for the caller to check).
    ///
    /// With `confirm`, "full" is decided on the latest value of the slot word (a
    /// waiter about to sleep needs that; polling does not).
    pub fn try_send(
        &self,
        me: Claimant,
        confirm: bool,
        write: impl FnOnce(*mut u8),
    ) -> Result<(), Blocked> {
        let ctl = self.ctl();
        let mut write = Some(write);
        // Acquire pairs with the Release of whoever moved the hint.
        let mut pos = ctl.tail.pos.load(Ordering::Acquire);
        let max_spins = self
            .capacity()
            .saturating_mul(SPINS_PER_SLOT)
            .saturating_add(SPINS_EXTRA);
        let mut spins = 0u64;
        loop {
            spins += 1;
            let lap = self.lap(pos);
            let slot = self.word(pos);
            // Acquire pairs with the consumer's release of the previous lap (its reads
            // of the payload are done before we overwrite it).
            let cur = slot.load(Ordering::Acquire);
            let w = decode(cur);
            let d = lap_diff(w.lap, lap);
            if d == 0 && w.state == FREE {
                let claim = encode(WRITING, lap, me);
                // Acquire: as the load above. Relaxed on failure: we look again.
                if slot
                    .compare_exchange(cur, claim, Ordering::Acquire, Ordering::Relaxed)
                    .is_err()
                {
                    continue;
                }
                Self::help(&ctl.tail.pos, pos);
                if let Some(f) = write.take() {
                    self.write_payload(pos, f);
                }
                // Release pairs with the consumer's Acquire of FULL: the payload is
                // visible with it. A CAS, not a store: if we were fenced (declared
                // dead, our slot skipped), the message was not published; report the
                // ring as blocked so that the caller retries with the message it holds.
                match slot.compare_exchange(
                    claim,
                    encode(FULL, lap, NOBODY),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        wait::notify(&ctl.not_empty.w);
                        return Ok(());
                    }
                    Err(now) => return Err(Blocked { pos, word: now }),
                }
            }
            if d >= 0 {
                // Position taken (claimed this lap, or even a later one): move on.
                Self::help(&ctl.tail.pos, pos);
                let t = ctl.tail.pos.load(Ordering::Acquire);
                pos = if t.wrapping_sub(pos) as i64 > 0 {
                    t
                } else {
                    pos.wrapping_add(1)
                };
            } else if d == -1 {
                // The previous lap is still in this slot: full (if `confirm`, as of the
                // latest value of the word; else perhaps a stale view).
                if !confirm || Self::is_latest(slot, cur) {
                    return Err(Blocked { pos, word: cur });
                }
            } else {
                // The hint is far behind the slots (stale, or garbage): reload it.
                let t = ctl.tail.pos.load(Ordering::Acquire);
                pos = if t == pos { pos.wrapping_add(1) } else { t };
            }
            if spins >= max_spins {
                return Err(Blocked { pos, word: cur });
            }
        }
    }

    /// Receives one message: claims the next full position, lets `read` copy it out,
    /// releases the slot and wakes a sleeping producer. `read` may run more than once
    /// (a copy whose release failed is discarded, never returned).
    ///
    /// # Errors
    /// `Blocked` when the ring is empty: the slot of the next position is free, still
    /// being written (possibly by a dead process), or holds an older lap.
    ///
    /// With `confirm`, "empty" is decided on the latest value of the slot word.
    pub fn try_recv<R>(
        &self,
        me: Claimant,
        confirm: bool,
        mut read: impl FnMut(*const u8) -> R,
    ) -> Result<R, Blocked> {
        let ctl = self.ctl();
        let mut pos = ctl.head.pos.load(Ordering::Acquire);
        let max_spins = self
            .capacity()
            .saturating_mul(SPINS_PER_SLOT)
            .saturating_add(SPINS_EXTRA);
        let mut spins = 0u64;
        loop {
            spins += 1;
            let lap = self.lap(pos);
            let slot = self.word(pos);
            // Acquire pairs with the producer's Release publish (FULL).
            let cur = slot.load(Ordering::Acquire);
            let w = decode(cur);
            let d = lap_diff(w.lap, lap);
            if d == 0 {
                match w.state {
                    FULL => {
                        let claim = encode(READING, lap, me);
                        if slot
                            .compare_exchange(cur, claim, Ordering::Acquire, Ordering::Relaxed)
                            .is_err()
                        {
                            continue;
                        }
                        Self::help(&ctl.head.pos, pos);
                        let v = self.read_payload(pos, &mut read);
                        // Release pairs with the producer's Acquire of FREE: our reads
                        // of the payload happen before it overwrites it.
                        if slot
                            .compare_exchange(
                                claim,
                                encode(FREE, lap.wrapping_add(1), NOBODY),
                                Ordering::Release,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                        {
                            wait::notify(&ctl.not_full.w);
                            return Ok(v);
                        }
                        // Fenced while copying: the copy may be torn; drop it.
                        pos = ctl.head.pos.load(Ordering::Acquire);
                    }
                    SKIP => {
                        // A dead producer's torn slot: free it for the next lap.
                        let _ = slot.compare_exchange(
                            cur,
                            encode(FREE, lap.wrapping_add(1), NOBODY),
                            Ordering::Release,
                            Ordering::Relaxed,
                        );
                        Self::help(&ctl.head.pos, pos);
                        pos = pos.wrapping_add(1);
                    }
                    READING => {
                        Self::help(&ctl.head.pos, pos);
                        pos = pos.wrapping_add(1);
                    }
                    WRITING => return Err(Blocked { pos, word: cur }),
                    // FREE of this lap: nothing written yet.
                    _ => {
                        if !confirm || Self::is_latest(slot, cur) {
                            return Err(Blocked { pos, word: cur });
                        }
                    }
                }
            } else if d > 0 {
                // Already consumed (or skipped) and perhaps refilled: move on.
                Self::help(&ctl.head.pos, pos);
                let h = ctl.head.pos.load(Ordering::Acquire);
                pos = if h.wrapping_sub(pos) as i64 > 0 {
                    h
                } else {
                    pos.wrapping_add(1)
                };
            } else {
                // An older lap: the producers have not reached this position.
                if !confirm || Self::is_latest(slot, cur) {
                    return Err(Blocked { pos, word: cur });
                }
            }
            if spins >= max_spins {
                return Err(Blocked { pos, word: cur });
            }
        }
    }

    /// Whether `seen` is still the latest value of `word`. A plain load may return an
    /// older value of the modification order; a read-modify-write reads the latest.
    /// A waiter about to sleep must decide "empty"/"full" on the latest value: a stale
    /// "empty" (say, a slot consumed and refilled since, seen as still free) would let
    /// it sleep through a message whose producer had no reason to wake it.
    #[cold]
    fn is_latest(word: &AtomicU64, seen: u64) -> bool {
        // AcqRel on success: as a load it acquires; storing the same value changes
        // nothing. On failure the caller loops and loads the word again.
        word.compare_exchange(seen, seen, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Clears every claim that names peer-table entry `peer`: called by a process that
    /// has just taken that entry, when no claim under its index can be live (its
    /// previous holder left or died). Without this, a claim of a dead holder whose
    /// generation bits happen to match the new holder's would look live forever.
    /// Returns how many claims it cleared.
    pub fn clear_claims_of(&self, peer: u8) -> usize {
        let mut cleared = 0;
        for pos in 0..self.capacity() {
            let cur = self.word(pos).load(Ordering::Acquire);
            let w = decode(cur);
            if matches!(w.state, WRITING | READING)
                && w.who.peer == peer
                && self.clear_dead_claim(Blocked { pos, word: cur }, |_| true)
            {
                cleared += 1;
            }
        }
        cleared
    }

    /// Clears the claim in `b` if `dead(claimant)` says its holder is gone: a dead
    /// writer's slot becomes SKIP (its torn message is dropped), a dead reader's slot
    /// becomes FREE for the next lap (it held that message). Returns whether it
    /// cleared something. Only the exact word seen is replaced, so a claim that moved
    /// on meanwhile is left alone.
    pub fn clear_dead_claim(&self, b: Blocked, dead: impl FnOnce(Claimant) -> bool) -> bool {
        let w = decode(b.word);
        let new = match w.state {
            WRITING => encode(SKIP, w.lap, NOBODY),
            READING => encode(FREE, w.lap.wrapping_add(1), NOBODY),
            SKIP => encode(FREE, w.lap.wrapping_add(1), NOBODY),
            _ => return false,
        };
        if w.state != SKIP && !dead(w.who) {
            return false;
        }
        let ok = self
            .word(b.pos)
            .compare_exchange(b.word, new, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok();
        if ok {
            // Both sides may be waiting on this slot.
            wait::notify_all(&self.ctl().not_empty.w);
            wait::notify_all(&self.ctl().not_full.w);
        }
        ok
    }
}

/// A ring over heap memory, for unit tests and loom models.
#[cfg(any(test, loom))]
pub(crate) mod heap {
    use super::*;
    use crate::layout::{FLAVOR_MPMC, KIND_TYPED};

    /// Owns the control block and slots of an MPMC ring on the heap.
    pub struct HeapRing {
        ctl: Box<RingCtl>,
        #[cfg(not(loom))]
        slots: Vec<u64>,
        #[cfg(loom)]
        slots: Vec<LoomSlot>,
        pub geo: Geometry,
    }

    // SAFETY: all shared state is atomics or accessed under the claim protocol.
    unsafe impl Sync for HeapRing {}
    // SAFETY: as above.
    unsafe impl Send for HeapRing {}

    impl HeapRing {
        /// A ring of `capacity` slots carrying `u64` messages.
        pub fn new(capacity: u64) -> HeapRing {
            let geo = Geometry::new(FLAVOR_MPMC, KIND_TYPED, capacity, 8, 8).expect("geometry");
            let ctl = RingCtl::boxed();
            #[cfg(not(loom))]
            let slots = vec![0u64; (capacity as usize) * geo.slot_size / 8];
            #[cfg(loom)]
            let slots = (0..capacity)
                .map(|_| LoomSlot {
                    word: AtomicU64::new(0),
                    data: loom::cell::UnsafeCell::new(0),
                })
                .collect();
            HeapRing { ctl, slots, geo }
        }

        /// A ring handle over this memory; valid while `self` lives.
        pub fn ring(&self) -> MpmcRing {
            // SAFETY: the control block and slots are owned by self, sized for geo,
            // 8-aligned (u64 elements), and outlive the ring while callers keep self.
            unsafe { MpmcRing::new(&*self.ctl, self.slots.as_ptr() as *mut u8, &self.geo) }
        }
    }

    /// Sends one u64 (test helper).
    pub fn push(r: &MpmcRing, me: Claimant, v: u64) -> Result<(), Blocked> {
        // SAFETY: the claimed slot's payload is 8 bytes, 8-aligned, ours until published.
        r.try_send(me, true, |p| unsafe { p.cast::<u64>().write(v) })
    }

    /// Receives one u64 (test helper).
    pub fn pop(r: &MpmcRing, me: Claimant) -> Result<u64, Blocked> {
        // SAFETY: the claimed slot's payload is 8 bytes, 8-aligned, published.
        r.try_recv(me, true, |p| unsafe { p.cast::<u64>().read() })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    /// Rounds of the model tests: fewer under miri, which runs them 1000x slower.
    const ROUNDS: u64 = if cfg!(miri) { 60 } else { 2000 };

    use super::heap::*;
    use super::*;
    use std::collections::VecDeque;

    const A: Claimant = Claimant {
        peer: 1,
        generation: 5,
    };
    const B: Claimant = Claimant {
        peer: 2,
        generation: 9,
    };

    #[test]
    fn word_round_trip() {
        for (s, lap, who) in [(FREE, 0, NOBODY), (READING, LAP_MASK, B), (SKIP, 12345, A)] {
            let w = decode(encode(s, lap, who));
            assert_eq!((w.state, w.lap, w.who), (s, lap, who));
        }
        assert_eq!(lap_diff(0, LAP_MASK), 1);
        assert_eq!(lap_diff(LAP_MASK, 0), -1);
    }

    #[test]
    fn fifo_against_a_model() {
        let h = HeapRing::new(4);
        let r = h.ring();
        let mut model = VecDeque::new();
        let mut next = 0;
        for round in 0..ROUNDS {
            for _ in 0..(round % 7) {
                let ok = push(&r, A, next).is_ok();
                assert_eq!(ok, model.len() < 4, "round {round}");
                if ok {
                    model.push_back(next);
                    next += 1;
                }
            }
            for _ in 0..(round % 5) {
                assert_eq!(pop(&r, B).ok(), model.pop_front());
            }
            assert_eq!(r.len(), model.len() as u64);
        }
    }

    #[test]
    fn dead_writer_is_skipped_and_dead_reader_frees() {
        let h = HeapRing::new(2);
        let r = h.ring();
        push(&r, A, 1).unwrap();
        // A producer claims position 1 and dies before publishing.
        let w = r.word(1);
        let cur = w.load(Ordering::SeqCst);
        w.store(encode(WRITING, decode(cur).lap, B), Ordering::SeqCst);
        r.ctl().tail.pos.store(2, Ordering::SeqCst);
        assert_eq!(pop(&r, A), Ok(1));
        let blocked = pop(&r, A).unwrap_err();
        assert_eq!(blocked.claim(), Some(B));
        // A live claimant is left alone...
        assert!(!r.clear_dead_claim(blocked, |_| false));
        assert!(pop(&r, A).is_err());
        // ...a dead one is skipped, and the ring flows again.
        assert!(r.clear_dead_claim(blocked, |c| c == B));
        push(&r, A, 3).unwrap();
        assert_eq!(pop(&r, A), Ok(3));

        // A consumer claims a message and dies: the producer that needs the slot frees it.
        push(&r, A, 4).unwrap();
        push(&r, A, 5).unwrap();
        let pos = r.ctl().head.pos.load(Ordering::SeqCst);
        let w = r.word(pos);
        let cur = decode(w.load(Ordering::SeqCst));
        assert_eq!(cur.state, FULL);
        w.store(encode(READING, cur.lap, B), Ordering::SeqCst);
        r.ctl().head.pos.store(pos + 1, Ordering::SeqCst);
        assert_eq!(pop(&r, A), Ok(5));
        let full = push(&r, A, 6).unwrap_err();
        assert_eq!(full.claim(), Some(B));
        assert!(r.clear_dead_claim(full, |_| true));
        push(&r, A, 6).unwrap();
        push(&r, A, 7).unwrap();
        assert_eq!((pop(&r, A), pop(&r, A)), (Ok(6), Ok(7)));
    }

    #[test]
    fn threads_two_by_two_exactly_once() {
        let per: u64 = if cfg!(miri) { 100 } else { 50_000 };
        let h = std::sync::Arc::new(HeapRing::new(16));
        let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let producers: Vec<_> = [A, B]
            .into_iter()
            .enumerate()
            .map(|(k, me)| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for i in 0..per {
                        while push(&h.ring(), me, (k as u64) << 32 | i).is_err() {
                            std::hint::spin_loop();
                        }
                    }
                })
            })
            .collect();
        let consumers: Vec<_> = (0..2u8)
            .map(|k| {
                let (h, done) = (h.clone(), done.clone());
                std::thread::spawn(move || {
                    let me = Claimant {
                        peer: 10 + k,
                        generation: 1,
                    };
                    let mut got = Vec::new();
                    while done.load(std::sync::atomic::Ordering::Relaxed) < 2 * per {
                        match pop(&h.ring(), me) {
                            Ok(v) => {
                                got.push(v);
                                done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            }
                            Err(_) => std::hint::spin_loop(),
                        }
                    }
                    got
                })
            })
            .collect();
        for p in producers {
            p.join().unwrap();
        }
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.sort_unstable();
        let want: Vec<u64> = (0..2u64)
            .flat_map(|k| (0..per).map(move |i| k << 32 | i))
            .collect();
        assert_eq!(all, want);
    }

    #[test]
    fn fenced_writer_does_not_publish() {
        let h = HeapRing::new(2);
        let r = h.ring();
        let word = r.word(0);
        let res = r.try_send(A, false, |_| {
            // While we write, someone declares us dead and skips the slot.
            let cur = word.load(Ordering::SeqCst);
            word.store(encode(SKIP, decode(cur).lap, NOBODY), Ordering::SeqCst);
        });
        assert!(res.is_err());
        assert!(pop(&r, B).is_err());
        push(&r, A, 9).unwrap();
        assert_eq!(pop(&r, B), Ok(9));
    }

    /// A consumer declared dead while copying (its READING claim cleared by someone
    /// who found its process gone) must not hand out its copy, which a producer may
    /// be overwriting: the release CAS fails, the copy is dropped, and it goes on to
    /// the next message.
    #[test]
    fn fenced_reader_drops_its_copy() {
        let h = HeapRing::new(4);
        let r = h.ring();
        push(&r, A, 1).unwrap();
        push(&r, A, 2).unwrap();
        let word = r.word(0);
        let mut copies = Vec::new();
        let got = r.try_recv(B, false, |p| {
            // SAFETY: the claimed slot's payload is 8 bytes, 8-aligned, published.
            let v = unsafe { p.cast::<u64>().read() };
            if copies.is_empty() {
                // While we copy message 1, someone clears our claim as dead's and
                // frees the slot for the next lap.
                let cur = decode(word.load(Ordering::SeqCst));
                assert_eq!((cur.state, cur.who), (READING, B));
                word.store(encode(FREE, cur.lap + 1, NOBODY), Ordering::SeqCst);
            }
            copies.push(v);
            v
        });
        assert_eq!(copies, vec![1, 2]);
        assert_eq!(got, Ok(2), "the fenced copy of message 1 was handed out");
        // Message 1 is gone with the dead consumer; the ring flows on.
        assert!(pop(&r, A).is_err());
        push(&r, A, 3).unwrap();
        assert_eq!(pop(&r, A), Ok(3));
    }

    #[test]
    fn garbage_words_stay_in_bounds() {
        let h = HeapRing::new(4);
        let r = h.ring();
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        for _ in 0..ROUNDS {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = r.word(x);
            w.store(x.rotate_left(17), Ordering::SeqCst);
            if x & 3 == 0 {
                r.ctl().tail.pos.store(x >> 3, Ordering::SeqCst);
            }
            if x & 12 == 0 {
                r.ctl().head.pos.store(x >> 5, Ordering::SeqCst);
            }
            let _ = push(&r, A, x);
            let _ = pop(&r, B);
            if let Err(b) = pop(&r, B) {
                r.clear_dead_claim(b, |_| true);
            }
            assert!(r.len() <= 4);
        }
    }
}
