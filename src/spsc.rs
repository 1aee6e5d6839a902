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
//! `tail` (written by the producer after each publication) and `head` (written by the
//! consumer after each release) are the source of truth for occupancy, `len()` and
//! recovery. The producer keeps a cached copy of `head` and reloads it only when the
//! ring looks full; the consumer never reads `tail` on its fast path.
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

    /// Messages in the ring, from the header positions (a snapshot).
    pub fn len(&self) -> u64 {
        let ctl = self.ctl();
        // Acquire/Relaxed is enough for a snapshot; clamp garbage to the capacity.
        let head = ctl.head.pos.load(Ordering::Acquire);
        let tail = ctl.tail.pos.load(Ordering::Acquire);
        tail.wrapping_sub(head).min(self.capacity())
    }
}

/// The producer's end: its position and its cached copy of `head`.
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
        let start = self.tail.get();
        for pos in start..start.wrapping_add(n) {
            // Release pairs with the consumer's Acquire load of the sequence word: the
            // payload written before is visible once the word is.
            self.ring
                .seq(pos)
                .store(pos.wrapping_add(1) as u32, Ordering::Release);
        }
        let tail = start.wrapping_add(n);
        self.tail.set(tail);
        // Release: `len()` readers and a re-attaching producer see the slots published.
        self.ring.ctl().tail.pos.store(tail, Ordering::Release);
        wait::notify(&self.ring.ctl().not_empty.w);
    }
}

/// The consumer's end: its position.
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

    /// Published slots from `head` on, counting at most `max`.
    #[inline]
    pub fn ready(&self, max: u64) -> u64 {
        let mut n = 0;
        while n < max && self.ready_at(n) {
            n += 1;
        }
        n
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
        if p.free(1) == 0 {
            return false;
        }
        let pos = p.tail();
        // SAFETY: the slot at tail is free (free() >= 1) and only we write it; the
        // payload is 8 bytes at an 8-aligned offset.
        p.ring()
            .write_payload(pos, |ptr| unsafe { ptr.cast::<u64>().write(v) });
        p.commit(1);
        true
    }

    /// Receives one u64 (test helper).
    pub fn pop(c: &Consumer) -> Option<u64> {
        if !c.ready_at(0) {
            return None;
        }
        // SAFETY: the slot is published for head (Acquire above), 8 bytes at an
        // 8-aligned offset; the producer does not touch it until we release it.
        let v = c
            .ring()
            .read_payload(c.head(), |ptr| unsafe { ptr.cast::<u64>().read() });
        c.release(1);
        Some(v)
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
