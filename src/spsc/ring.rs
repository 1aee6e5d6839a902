//! The single-producer single-consumer ring: a Lamport queue with cached indices and a
//! sequence word inside each slot.
//!
//! # Slots
//!
//! Slot `i` is `slot_size` bytes: a `u32` sequence word, then the payload. Position `p`
//! lives in slot `p & mask`; the slot is *published for `p`* when its sequence word
//! equals `(p + 1) as u32`. The consumer polls that word, so a message of up to one
//! cache line reaches the other core in a single line transfer (sequence and payload
//! travel together), and small messages pack several to a line.
//!
//! The sequence word is 32 bits: the value left from the previous lap is
//! `(p + 1 - capacity) as u32`, which differs from `(p + 1) as u32` because capacity is
//! below 2^32, and a fresh segment's zeros never equal `p + 1` in the first lap.
//!
//! # Positions in the header
//!
//! `head` (written by the consumer after each release) is the truth about which slots
//! are free. `tail` is a hint the producer stores after each batch and every
//! [`TAIL_HINT_EVERY`] single messages; `len()` and a re-attaching producer add the
//! published slots after it. The producer keeps a cached copy of `head` and reloads it
//! only when the ring looks full; the consumer never reads `tail`.
//!
//! # Trust
//!
//! Another process can write anything anywhere in the segment. Positions are only
//! masked into a slot index and compared; the sequence word is only compared; so
//! garbage can make the ring look full, empty, or deliver garbage bytes from inside a
//! slot, but never makes this code touch memory outside the slot array.

use crate::layout::{Geometry, RingCtl};
use crate::sync::{AtomicU32, Ordering};
use crate::wait;
use std::cell::Cell;

/// The producer stores its position in the header at least every this many messages.
pub(crate) const TAIL_HINT_EVERY: u64 = 16;

/// The shared part of a ring: where the control lines and the slots are.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ring {
    ctl: *const RingCtl,
    slots: *mut u8,
    mask: u64,
    slot_size: usize,
    payload_offset: usize,
}

// SAFETY: a Ring is two pointers into a mapping (or heap block) that outlives every
// handle holding it (the handles keep the mapping alive); all shared state behind them
// is accessed through atomics or under the ring protocol.
unsafe impl Send for Ring {}

/// Slot layout under loom: the sequence word and a tracked cell for the payload.
#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct LoomSlot {
    pub seq: AtomicU32,
    pub data: loom::cell::UnsafeCell<u64>,
}

impl Ring {
    /// Builds a ring over `ctl` and the slot array at `slots`.
    ///
    /// # Safety
    /// `ctl` must point to a valid `RingCtl` and `slots` to `geo.capacity * geo.slot_size`
    /// bytes (under loom: `geo.capacity` `LoomSlot`s), both valid for reads and writes
    /// for as long as the ring or any copy of it is used, with `slots` aligned to the
    /// slot alignment (at least 4).
    pub unsafe fn new(ctl: *const RingCtl, slots: *mut u8, geo: &Geometry) -> Ring {
        Ring {
            ctl,
            slots,
            mask: geo.mask(),
            slot_size: geo.slot_size,
            payload_offset: geo.payload_offset,
        }
    }

    #[inline]
    pub fn ctl(&self) -> &RingCtl {
        // SAFETY: `new`'s contract: valid for the ring's whole use.
        unsafe { &*self.ctl }
    }

    /// Capacity in slots.
    #[inline]
    pub fn capacity(&self) -> u64 {
        self.mask + 1
    }

    #[cfg(not(loom))]
    #[inline]
    fn slot(&self, pos: u64) -> *mut u8 {
        // In bounds: the index is masked to below capacity, and `new`'s contract says
        // capacity * slot_size bytes are there.
        let idx = (pos & self.mask) as usize;
        // SAFETY: idx * slot_size < capacity * slot_size, inside the slot array.
        unsafe { self.slots.add(idx * self.slot_size) }
    }

    #[cfg(not(loom))]
    #[inline]
    fn seq(&self, pos: u64) -> &AtomicU32 {
        // SAFETY: the slot is in bounds (see `slot`), starts with the 4-byte aligned
        // sequence word, and an AtomicU32 may alias memory other processes access
        // atomically.
        unsafe { &*(self.slot(pos) as *const AtomicU32) }
    }

    #[cfg(loom)]
    #[inline]
    fn loom_slot(&self, pos: u64) -> &LoomSlot {
        // SAFETY: under loom `slots` is an array of `capacity` LoomSlots (`new`).
        unsafe { &*(self.slots as *const LoomSlot).add((pos & self.mask) as usize) }
    }

    #[cfg(loom)]
    #[inline]
    fn seq(&self, pos: u64) -> &AtomicU32 {
        &self.loom_slot(pos).seq
    }

    /// Pointer to the payload of the slot of `pos`.
    #[cfg(not(loom))]
    #[inline]
    pub fn payload(&self, pos: u64) -> *mut u8 {
        // SAFETY: payload_offset + payload size <= slot_size (Geometry), so the payload
        // is inside the slot.
        unsafe { self.slot(pos).add(self.payload_offset) }
    }

    /// Runs `f` on the payload of `pos` for writing.
    #[inline]
    pub fn write_payload<R>(&self, pos: u64, f: impl FnOnce(*mut u8) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.payload(pos))
        }
        #[cfg(loom)]
        {
            self.loom_slot(pos).data.with_mut(|p| f(p.cast()))
        }
    }

    /// Runs `f` on the payload of `pos` for reading.
    #[inline]
    pub fn read_payload<R>(&self, pos: u64, f: impl FnOnce(*const u8) -> R) -> R {
        #[cfg(not(loom))]
        {
            f(self.payload(pos))
        }
        #[cfg(loom)]
        {
            self.loom_slot(pos).data.with(|p| f(p.cast()))
        }
    }

    /// Messages in the ring (a snapshot): from `head` to the producer's position,
    /// which is the header's `tail` hint (it may lag by up to [`TAIL_HINT_EVERY`]
    /// messages) plus the published slots after it.
    pub fn len(&self) -> u64 {
        let (head, tail) = self.positions();
        tail.wrapping_sub(head)
    }

    /// `head` and the producer's position (see `len`), with `tail - head` at most
    /// the capacity whatever the segment holds.
    pub fn positions(&self) -> (u64, u64) {
        let ctl = self.ctl();
        let cap = self.capacity();
        // Acquire pairs with the Release stores of the positions and sequence words.
        let head = ctl.head.pos.load(Ordering::Acquire);
        let mut tail = ctl.tail.pos.load(Ordering::Acquire);
        if tail.wrapping_sub(head) > cap {
            // The consumer passed a stale hint (or the positions are garbage).
            tail = head;
        }
        // At most `cap` looks, whatever the segment holds.
        while tail.wrapping_sub(head) < cap
            && self.seq(tail).load(Ordering::Acquire) == tail.wrapping_add(1) as u32
        {
            tail = tail.wrapping_add(1);
        }
        (head, tail)
    }
}

/// The producer's end: its position and its cached copy of `head`.
///
/// The positions are `Cell`s so that the single-message paths can take `&self`.
/// Methods that run the caller's code between reading `tail` and storing it
/// ([`write_then_commit`](Self::write_then_commit)) must be reached only through a
/// handle borrowed mutably, so that code cannot re-enter this producer mid-batch (the
/// public `try_send_batch_with` takes `&mut self` for this).
#[derive(Debug)]
pub(crate) struct Producer {
    ring: Ring,
    tail: Cell<u64>,
    head_cache: Cell<u64>,
}

impl Producer {
    /// Takes over the producer side, continuing after what is already published.
    ///
    /// A producer that died between publishing a slot and storing `tail` left `tail`
    /// behind the published slots; scanning forward over slots already published for
    /// their positions finds the true end, so nothing published is overwritten.
    pub fn attach(ring: Ring) -> Producer {
        let ctl = ring.ctl();
        let cap = ring.capacity();
        // Acquire pairs with the Release stores of the previous producer and consumer.
        let head = ctl.head.pos.load(Ordering::Acquire);
        let tail = ctl.tail.pos.load(Ordering::Acquire);
        let mut pos = if tail.wrapping_sub(head) <= cap {
            tail
        } else {
            // head ahead of tail (the consumer took a slot whose tail store the dead
            // producer never made) or garbage: continue from head.
            head
        };
        while pos.wrapping_sub(head) < cap
            && ring.seq(pos).load(Ordering::Acquire) == (pos.wrapping_add(1)) as u32
        {
            pos = pos.wrapping_add(1);
        }
        // A batch is published last slot first (see `commit`), so a producer that died
        // inside one may have published slots past the first unpublished one. Nobody
        // has read them (the consumer stops at the gap), and we are about to write
        // those slots again: mark them unpublished (the previous lap's value), or the
        // consumer could read one while we rewrite its payload.
        let mut p = pos.wrapping_add(1);
        while p.wrapping_sub(head) < cap {
            let seq = ring.seq(p);
            if seq.load(Ordering::Relaxed) == p.wrapping_add(1) as u32 {
                // Relaxed: the consumer cannot reach this slot before we publish the
                // gap before it, and that publication is a Release store.
                seq.store(
                    p.wrapping_add(1).wrapping_sub(cap) as u32,
                    Ordering::Relaxed,
                );
            }
            p = p.wrapping_add(1);
        }
        // Release: publishes the recovered tail to `len()` readers.
        ctl.tail.pos.store(pos, Ordering::Release);
        Producer {
            ring,
            tail: Cell::new(pos),
            head_cache: Cell::new(head),
        }
    }

    #[inline]
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// Free slots, reloading `head` only if the cached copy says fewer than `want`.
    #[inline]
    pub fn free(&self, want: u64) -> u64 {
        let cap = self.ring.capacity();
        let tail = self.tail.get();
        let mut used = tail.wrapping_sub(self.head_cache.get());
        if cap.saturating_sub(used) < want {
            // Acquire pairs with the consumer's Release store of head: its reads of the
            // slots we are about to overwrite are complete.
            let head = self.ring.ctl().head.pos.load(Ordering::Acquire);
            self.head_cache.set(head);
            used = tail.wrapping_sub(head);
        }
        // Garbage head (ahead of tail, or far behind) reads as full.
        cap.saturating_sub(used)
    }

    /// The position the next message goes to.
    #[inline]
    pub fn tail(&self) -> u64 {
        self.tail.get()
    }

    /// Publishes the `n` slots from `tail` on (their payloads written), advances
    /// `tail` and wakes a sleeping consumer.
    #[inline]
    pub fn commit(&self, n: u64) {
        // The payloads are written: publish them as a batch does (last slot first).
        self.publish(self.tail.get(), n);
    }

    /// Writes and publishes one message if a slot is free (`write` fills its
    /// payload); `false` if the ring is full. The lean path of every single send.
    #[inline]
    pub fn try_put(&self, write: impl FnOnce(*mut u8)) -> bool {
        // A local copy: its fields stay in registers across the atomic operations
        // (the Cells in `self` make the compiler reload everything behind `self`).
        let ring = self.ring;
        let tail = self.tail.get();
        if tail.wrapping_sub(self.head_cache.get()) >= ring.capacity() && self.free(1) == 0 {
            return false;
        }
        ring.write_payload(tail, write);
        // Release pairs with the consumer's Acquire load of the sequence word.
        ring.seq(tail)
            .store(tail.wrapping_add(1) as u32, Ordering::Release);
        self.advance(tail.wrapping_add(1));
        true
    }

    /// Writes and publishes `n` slots from `tail` on in one pass: `write(i, payload)`
    /// fills the payload of `tail + i`. The caller checked that `n` slots are free.
    ///
    /// Last slot first: the consumer, which polls the first one, then finds the whole
    /// batch published at once and reads every line of it once, instead of chasing our
    /// stores line by line (each of its early reads would pull a line back across
    /// cores that we are still writing).
    ///
    /// `write` must not panic and must not call user code: slots after it would
    /// already be published, beyond a gap the consumer never passes until later
    /// messages fill it. Code that may panic goes through
    /// [`write_then_commit`](Self::write_then_commit).
    #[inline]
    pub fn write_and_commit(&self, n: u64, mut write: impl FnMut(u64, *mut u8)) {
        let ring = self.ring;
        let start = self.tail.get();
        for i in (0..n).rev() {
            let pos = start.wrapping_add(i);
            ring.write_payload(pos, |p| write(i, p));
            // Release pairs with the consumer's Acquire load of the sequence word.
            ring.seq(pos)
                .store(pos.wrapping_add(1) as u32, Ordering::Release);
        }
        self.advance(start.wrapping_add(n));
    }

    /// Writes `n` slots from `tail` on, `write(i, payload)` filling the payload of
    /// `tail + i` for `i` in increasing order, then publishes them (last slot first,
    /// as [`write_and_commit`](Self::write_and_commit) does). The caller checked that
    /// `n` slots are free.
    ///
    /// For `write`s that run user code: nothing is published before every `write`
    /// has returned. If one panics, no sequence word has changed and `tail` has not
    /// moved, so the slots written so far are simply free slots holding bytes the
    /// consumer never reads; the next send writes them again.
    #[inline]
    pub fn write_then_commit(&self, n: u64, mut write: impl FnMut(u64, *mut u8)) {
        let ring = self.ring;
        let start = self.tail.get();
        for i in 0..n {
            ring.write_payload(start.wrapping_add(i), |p| write(i, p));
        }
        self.publish(start, n);
    }

    /// Publishes the `n` written slots from `start` (our `tail`) on, last one first
    /// (see [`write_and_commit`](Self::write_and_commit)), then advances `tail`.
    #[inline]
    fn publish(&self, start: u64, n: u64) {
        let ring = self.ring;
        for i in (0..n).rev() {
            let pos = start.wrapping_add(i);
            // Release pairs with the consumer's Acquire load of the sequence word: the
            // payload written before it is visible to the consumer that sees it.
            ring.seq(pos)
                .store(pos.wrapping_add(1) as u32, Ordering::Release);
        }
        self.advance(start.wrapping_add(n));
    }

    #[inline]
    fn advance(&self, tail: u64) {
        let ring = self.ring;
        let old = self.tail.get();
        self.tail.set(tail);
        // The header's `tail` is a hint for `len()` and a re-attaching producer (both
        // scan the published slots after it), stored once per batch and once every
        // TAIL_HINT_EVERY single messages: a third store per message cost the
        // cross-process stream of small messages more than half its throughput (the
        // store buffer, full of stores waiting for contended slot lines, stalls).
        if tail.wrapping_sub(old) > 1 || tail % TAIL_HINT_EVERY == 0 {
            // Release: whoever reads the hint sees the slots before it published.
            ring.ctl().tail.pos.store(tail, Ordering::Release);
        }
        wait::notify(&ring.ctl().not_empty.w);
    }
}

/// The consumer's end: its position.
///
/// As with [`Producer`], methods that run the caller's code while `head` is held in a
/// local ([`read_and_release`](Self::read_and_release)) must be reached only through a
/// handle borrowed mutably (the public `try_recv_batch_with` takes `&mut self`).
#[derive(Debug)]
pub(crate) struct Consumer {
    ring: Ring,
    head: Cell<u64>,
}

impl Consumer {
    /// Takes over the consumer side at the header's `head`: every message not yet
    /// released is delivered (again, if a dead consumer had copied it out).
    pub fn attach(ring: Ring) -> Consumer {
        // Acquire pairs with the previous consumer's Release store of head.
        let head = ring.ctl().head.pos.load(Ordering::Acquire);
        Consumer {
            ring,
            head: Cell::new(head),
        }
    }

    #[inline]
    pub fn ring(&self) -> &Ring {
        &self.ring
    }

    /// The position the next message is read from.
    #[inline]
    pub fn head(&self) -> u64 {
        self.head.get()
    }

    /// Whether the slot of `head + k` is published.
    #[inline]
    pub fn ready_at(&self, k: u64) -> bool {
        let pos = self.head.get().wrapping_add(k);
        // Acquire pairs with the producer's Release store of the sequence word.
        self.ring.seq(pos).load(Ordering::Acquire) == pos.wrapping_add(1) as u32
    }

    /// Takes the message at `head` if it is published: `read` copies it out of the
    /// payload, then the slot is released. The lean path of every single receive.
    #[inline]
    pub fn try_take<R>(&self, read: impl FnOnce(*const u8) -> R) -> Option<R> {
        // A local copy, as in `Producer::try_put`.
        let ring = self.ring;
        let head = self.head.get();
        // Acquire pairs with the producer's Release store of the sequence word.
        if ring.seq(head).load(Ordering::Acquire) != head.wrapping_add(1) as u32 {
            return None;
        }
        let v = ring.read_payload(head, read);
        let next = head.wrapping_add(1);
        self.head.set(next);
        // Release pairs with the producer's Acquire load of head: our read of the slot
        // happens before it overwrites it.
        ring.ctl().head.pos.store(next, Ordering::Release);
        wait::notify(&ring.ctl().not_full.w);
        Some(v)
    }

    /// Reads the published slots from `head` on, at most `max`, in one pass:
    /// `read(i, payload)` copies out the payload of `head + i` (and may hand the copy
    /// to user code). Releases them together and returns how many there were.
    ///
    /// If `read` panics on slot `i`, slots `0..=i` are released while unwinding (each
    /// was copied out and handed over once; a second delivery would duplicate it) and
    /// the slots after it stay for the next read.
    #[inline]
    pub fn read_and_release(&self, max: u64, mut read: impl FnMut(u64, *const u8)) -> u64 {
        /// Releases the slots taken so far when dropped, also while unwinding.
        struct Taken<'a> {
            cons: &'a Consumer,
            n: u64,
        }
        impl Drop for Taken<'_> {
            #[inline]
            fn drop(&mut self) {
                if self.n > 0 {
                    self.cons.release(self.n);
                }
            }
        }
        let ring = self.ring;
        let head = self.head.get();
        let mut taken = Taken { cons: self, n: 0 };
        while taken.n < max {
            let i = taken.n;
            let pos = head.wrapping_add(i);
            // Acquire pairs with the producer's Release store of the sequence word.
            if ring.seq(pos).load(Ordering::Acquire) != pos.wrapping_add(1) as u32 {
                break;
            }
            // Counted before `read` runs: if it panics, this slot was handed over.
            taken.n = i + 1;
            ring.read_payload(pos, |p| read(i, p));
        }
        taken.n
    }

    /// Releases the `n` slots from `head` on to the producer and wakes it if it sleeps.
    #[inline]
    pub fn release(&self, n: u64) {
        let head = self.head.get().wrapping_add(n);
        self.head.set(head);
        // Release pairs with the producer's Acquire load of head: our reads of the slots
        // happen before it overwrites them.
        self.ring.ctl().head.pos.store(head, Ordering::Release);
        wait::notify(&self.ring.ctl().not_full.w);
    }
}

/// A ring over heap memory, for unit tests, loom models and fuzzing.
#[cfg(any(test, loom))]
pub(crate) mod heap {
    use super::*;
    use crate::layout::{FLAVOR_SPSC, KIND_TYPED};

    /// Owns the control block and slots of a ring that lives on the heap.
    pub struct HeapRing {
        ctl: Box<RingCtl>,
        #[cfg(not(loom))]
        slots: Vec<u64>,
        #[cfg(loom)]
        slots: Vec<LoomSlot>,
        pub geo: Geometry,
    }

    // SAFETY: all shared state is atomics or accessed under the ring protocol.
    unsafe impl Sync for HeapRing {}
    // SAFETY: as above; the heap blocks move with the value.
    unsafe impl Send for HeapRing {}

    impl HeapRing {
        /// A ring of `capacity` slots carrying `u64` messages.
        pub fn new(capacity: u64) -> HeapRing {
            let geo = Geometry::new(FLAVOR_SPSC, KIND_TYPED, capacity, 8, 8).expect("geometry");
            let ctl = RingCtl::boxed();
            #[cfg(not(loom))]
            let slots = vec![0u64; (capacity as usize) * geo.slot_size / 8];
            #[cfg(loom)]
            let slots = (0..capacity)
                .map(|_| LoomSlot {
                    seq: AtomicU32::new(0),
                    data: loom::cell::UnsafeCell::new(0),
                })
                .collect();
            HeapRing { ctl, slots, geo }
        }

        /// A ring handle over this memory; valid while `self` lives.
        pub fn ring(&self) -> Ring {
            // SAFETY: the control block and slot array are owned by self, sized for geo
            // (u64 elements keep the slots 8-aligned), and outlive the returned ring as
            // long as the caller keeps `self` alive (tests do).
            unsafe { Ring::new(&*self.ctl, self.slots.as_ptr() as *mut u8, &self.geo) }
        }
    }

    /// Sends one u64 (test helper): false if full.
    pub fn push(p: &Producer, v: u64) -> bool {
        // SAFETY: try_put hands us the payload of the free slot at tail, which only we
        // write: 8 bytes at an 8-aligned offset.
        p.try_put(|ptr| unsafe { ptr.cast::<u64>().write(v) })
    }

    /// Sends as many of `vs` as fit, in one batch (test helper); returns how many.
    pub fn push_batch(p: &Producer, vs: &[u64]) -> usize {
        let n = p.free(vs.len() as u64).min(vs.len() as u64);
        // SAFETY: the n slots from tail are free and only we write them; payloads
        // are 8 bytes at 8-aligned offsets.
        p.write_and_commit(n, |i, ptr| unsafe {
            ptr.cast::<u64>().write(vs[i as usize])
        });
        n as usize
    }

    /// Like `push_batch`, but writes every payload before publishing any (the path
    /// of batches whose messages come from user code).
    pub fn push_batch_two_pass(p: &Producer, vs: &[u64]) -> usize {
        let n = p.free(vs.len() as u64).min(vs.len() as u64);
        // SAFETY: as in `push_batch`.
        p.write_then_commit(n, |i, ptr| unsafe {
            ptr.cast::<u64>().write(vs[i as usize])
        });
        n as usize
    }

    /// Receives up to `max` u64s in one batch (test helper).
    pub fn pop_batch(c: &Consumer, max: u64) -> Vec<u64> {
        let mut out = Vec::new();
        // SAFETY: read_and_release hands us only published payloads, 8 bytes at
        // 8-aligned offsets, not rewritten before their release.
        c.read_and_release(max, |_, ptr| out.push(unsafe { ptr.cast::<u64>().read() }));
        out
    }

    /// Receives one u64 (test helper).
    pub fn pop(c: &Consumer) -> Option<u64> {
        // SAFETY: try_take hands us a published payload, 8 bytes at an 8-aligned
        // offset; the producer does not touch it until we release it.
        c.try_take(|ptr| unsafe { ptr.cast::<u64>().read() })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    /// Rounds of the model tests: fewer under miri, which runs them 1000x slower.
    const ROUNDS: u64 = if cfg!(miri) { 60 } else { 2000 };

    use super::heap::*;
    use super::*;
    use std::collections::VecDeque;

    #[test]
    fn fifo_with_wraparound() {
        let h = HeapRing::new(4);
        let p = Producer::attach(h.ring());
        let c = Consumer::attach(h.ring());
        let mut model = VecDeque::new();
        let mut next = 0u64;
        for round in 0..ROUNDS {
            for _ in 0..(round % 6) {
                let ok = push(&p, next);
                assert_eq!(ok, model.len() < 4);
                if ok {
                    model.push_back(next);
                    next += 1;
                }
            }
            for _ in 0..(round % 5) {
                assert_eq!(pop(&c), model.pop_front());
            }
            assert_eq!(h.ring().len(), model.len() as u64);
        }
    }

    #[test]
    fn two_threads_stream_in_order() {
        let n: u64 = if cfg!(miri) { 200 } else { 200_000 };
        let h = std::sync::Arc::new(HeapRing::new(64));
        let h2 = h.clone();
        let t = std::thread::spawn(move || {
            let p = Producer::attach(h2.ring());
            for v in 0..n {
                while !push(&p, v) {
                    std::hint::spin_loop();
                }
            }
        });
        let c = Consumer::attach(h.ring());
        let mut next = 0;
        while next < n {
            match pop(&c) {
                Some(v) => {
                    assert_eq!(v, next);
                    next += 1;
                }
                None => std::hint::spin_loop(),
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn two_threads_stream_batches_in_order() {
        let n: u64 = if cfg!(miri) { 300 } else { 300_000 };
        let h = std::sync::Arc::new(HeapRing::new(64));
        let h2 = h.clone();
        let t = std::thread::spawn(move || {
            let p = Producer::attach(h2.ring());
            let mut next = 0;
            while next < n {
                let k = (next % 37 + 1).min(n - next);
                let batch: Vec<u64> = (next..next + k).collect();
                // Both ways of publishing a batch: fused, and written first.
                let push = if next % 2 == 0 {
                    push_batch
                } else {
                    push_batch_two_pass
                };
                match push(&p, &batch) {
                    0 => std::hint::spin_loop(),
                    sent => next += sent as u64,
                }
            }
        });
        let c = Consumer::attach(h.ring());
        let mut next = 0;
        while next < n {
            let got = pop_batch(&c, next % 29 + 1);
            if got.is_empty() {
                std::hint::spin_loop();
            }
            for v in got {
                assert_eq!(v, next);
                next += 1;
            }
        }
        t.join().unwrap();
    }

    #[test]
    fn reattached_producer_finds_published_slots_beyond_tail() {
        let h = HeapRing::new(8);
        let p = Producer::attach(h.ring());
        assert!(push(&p, 1));
        assert!(push(&p, 2));
        // Simulate a producer that died after publishing a slot but before storing tail.
        h.ring().ctl().tail.pos.store(1, Ordering::SeqCst);
        let p2 = Producer::attach(h.ring());
        assert_eq!(p2.tail(), 2);
        assert!(push(&p2, 3));
        let c = Consumer::attach(h.ring());
        assert_eq!(
            (pop(&c), pop(&c), pop(&c), pop(&c)),
            (Some(1), Some(2), Some(3), None)
        );
    }

    #[test]
    fn producer_dead_inside_a_batch_leaves_no_stale_slot() {
        let h = HeapRing::new(8);
        let p = Producer::attach(h.ring());
        assert!(push(&p, 1));
        // A batch of 4 (positions 1..5) whose publication, last slot first, stopped
        // after positions 4 and 3: position 1 and 2 are not published, 3 and 4 are.
        for pos in [4u64, 3] {
            // SAFETY: a test over a heap ring; the slot is ours (unpublished).
            h.ring()
                .write_payload(pos, |ptr| unsafe { ptr.cast::<u64>().write(100 + pos) });
            h.ring().seq(pos).store(pos as u32 + 1, Ordering::Release);
        }
        let p2 = Producer::attach(h.ring());
        assert_eq!(p2.tail(), 1, "resumes at the gap");
        // The orphans were unpublished: once the gap is filled the consumer stops
        // where the new producer stopped (not at a stale slot it is about to rewrite),
        // and it never sees the dead producer's half batch.
        let c = Consumer::attach(h.ring());
        assert!(push(&p2, 2));
        assert!(push(&p2, 3));
        let got: Vec<_> = std::iter::from_fn(|| pop(&c)).collect();
        assert_eq!(got, [1, 2, 3]);
        assert!(push(&p2, 4));
        assert_eq!(pop(&c), Some(4));
    }

    #[test]
    fn batches_are_published_whole() {
        let h = HeapRing::new(8);
        let p = Producer::attach(h.ring());
        let c = Consumer::attach(h.ring());
        for i in 0..5u64 {
            // SAFETY: a test over a heap ring; slots 0..5 are free.
            h.ring()
                .write_payload(i, |ptr| unsafe { ptr.cast::<u64>().write(i) });
        }
        p.commit(5);
        assert_eq!(h.ring().len(), 5);
        let mut got = Vec::new();
        // SAFETY: a test over a heap ring; the ring hands out published payloads.
        let n = c.read_and_release(8, |_, p| got.push(unsafe { p.cast::<u64>().read() }));
        assert_eq!((n, got), (5, vec![0, 1, 2, 3, 4]));
        assert_eq!(h.ring().len(), 0);
    }

    #[test]
    fn panic_inside_write_then_commit_publishes_nothing() {
        let h = HeapRing::new(8);
        let p = Producer::attach(h.ring());
        let c = Consumer::attach(h.ring());
        assert!(push(&p, 1));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            p.write_then_commit(5, |i, ptr| {
                assert_ne!(i, 2, "writer panics at i = 2");
                // SAFETY: a test over a heap ring; the 5 slots from tail are free.
                unsafe { ptr.cast::<u64>().write(100 + i) }
            })
        }));
        assert!(r.is_err());
        assert_eq!((p.tail(), h.ring().len()), (1, 1), "nothing published");
        // The slots the panicked batch wrote are taken by the next sends; the consumer
        // sees exactly those, in order.
        assert_eq!(push_batch(&p, &[2, 3]), 2);
        assert!(push(&p, 4));
        assert_eq!(pop_batch(&c, 8), [1, 2, 3, 4]);
        assert_eq!(pop(&c), None);
    }

    #[test]
    fn panic_inside_read_and_release_releases_what_was_read() {
        let h = HeapRing::new(8);
        let p = Producer::attach(h.ring());
        let c = Consumer::attach(h.ring());
        assert_eq!(push_batch(&p, &[10, 11, 12, 13, 14]), 5);
        let mut got = Vec::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.read_and_release(8, |i, ptr| {
                // SAFETY: a test over a heap ring; the ring hands out published payloads.
                got.push(unsafe { ptr.cast::<u64>().read() });
                assert_ne!(i, 2, "reader panics at i = 2");
            })
        }));
        assert!(r.is_err());
        assert_eq!(got, [10, 11, 12]);
        assert_eq!((c.head(), h.ring().len()), (3, 2), "0..=2 released");
        assert_eq!(pop_batch(&c, 8), [13, 14]);
        // The producer got the released slots back: a full ring's worth fits.
        let all: Vec<u64> = (20..28).collect();
        assert_eq!(push_batch(&p, &all), 8);
        assert_eq!(pop_batch(&c, 8), all);
    }

    #[test]
    fn garbage_positions_never_escape_the_ring() {
        let h = HeapRing::new(4);
        let ring = h.ring();
        for (head, tail) in [
            (u64::MAX, 0),
            (0, u64::MAX),
            (12345, 7),
            (7, 7 + 4),
            (1 << 63, 3),
        ] {
            ring.ctl().head.pos.store(head, Ordering::SeqCst);
            ring.ctl().tail.pos.store(tail, Ordering::SeqCst);
            let p = Producer::attach(ring);
            let c = Consumer::attach(ring);
            for i in 0..10 {
                let _ = push(&p, i);
                let _ = pop(&c);
            }
            assert!(ring.len() <= 4);
        }
    }
}
