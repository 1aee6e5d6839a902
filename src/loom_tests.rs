//! Loom models of the SPSC ring and the futex sleep/wake protocol, over heap memory.
//!
//! Run them with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom
//! ```
//!
//! The futex is replaced by a model with the kernel's contract (see `futex.rs`) whose
//! waits never time out, so a lost wake-up shows up as a deadlock, which loom reports.

use crate::layout::WaitWord;
use crate::spsc::heap::{HeapRing, pop, push};
use crate::spsc::{Consumer, Producer};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{self, Attempt, WaitStrategy};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

/// A liveness slice long enough never to fire inside a model.
const NEVER: Duration = Duration::from_secs(3600);

/// Blocking push, as `Sender::send` does it.
fn send(p: &Producer, v: u64, strategy: WaitStrategy) {
    while !push(p, v) {
        let w: &WaitWord = &p.ring().ctl().not_full.w;
        wait::block_on(
            w,
            strategy,
            None,
            NEVER,
            || {
                if p.free(1) > 0 {
                    Attempt::Ready(())
                } else {
                    Attempt::Pending
                }
            },
            || None,
        )
        .expect("no deadline");
    }
}

/// Blocking pop, as `Receiver::recv` does it; `None` once `gone` is set and empty.
fn recv(c: &Consumer, gone: &AtomicU64, strategy: WaitStrategy) -> Option<u64> {
    loop {
        if let Some(v) = pop(c) {
            return Some(v);
        }
        let w: &WaitWord = &c.ring().ctl().not_empty.w;
        let ready = wait::block_on(
            w,
            strategy,
            None,
            NEVER,
            || {
                if c.ready_at(0) {
                    Attempt::Ready(true)
                } else if gone.load(Ordering::Acquire) != 0 {
                    Attempt::Ready(false)
                } else {
                    Attempt::Pending
                }
            },
            || None,
        )
        .expect("no deadline");
        if !ready {
            // Look once more: the sender may have published just before leaving.
            return pop(c);
        }
    }
}

#[test]
fn loom_spsc_fifo_with_wraparound() {
    loom::model(|| {
        let h = Arc::new(HeapRing::new(2));
        let h2 = h.clone();
        let t = thread::spawn(move || {
            let p = Producer::attach(h2.ring());
            for v in 1..=3 {
                while !push(&p, v) {
                    thread::yield_now();
                }
            }
        });
        let c = Consumer::attach(h.ring());
        let mut got = Vec::new();
        while got.len() < 3 {
            match pop(&c) {
                Some(v) => got.push(v),
                None => thread::yield_now(),
            }
        }
        assert_eq!(got, [1, 2, 3]);
        t.join().unwrap();
    });
}

#[test]
fn loom_receiver_sleeping_on_empty_is_woken() {
    loom::model(|| {
        let h = Arc::new(HeapRing::new(2));
        let h2 = h.clone();
        let t = thread::spawn(move || {
            let p = Producer::attach(h2.ring());
            assert!(push(&p, 7));
        });
        let c = Consumer::attach(h.ring());
        let gone = AtomicU64::new(0);
        assert_eq!(recv(&c, &gone, WaitStrategy::Block), Some(7));
        t.join().unwrap();
    });
}

#[test]
fn loom_sender_sleeping_on_full_is_woken() {
    loom::model(|| {
        let h = Arc::new(HeapRing::new(1));
        let p = Producer::attach(h.ring());
        assert!(push(&p, 1));
        let h2 = h.clone();
        let t = thread::spawn(move || {
            let c = Consumer::attach(h2.ring());
            let gone = AtomicU64::new(0);
            assert_eq!(recv(&c, &gone, WaitStrategy::Block), Some(1));
        });
        // The ring is full: this send must sleep until the consumer frees the slot.
        send(&p, 2, WaitStrategy::Block);
        t.join().unwrap();
        let c = Consumer::attach(h.ring());
        assert_eq!(pop(&c), Some(2));
    });
}

#[test]
fn loom_disconnect_wakes_a_blocked_receiver() {
    loom::model(|| {
        let h = Arc::new(HeapRing::new(2));
        let gone = Arc::new(AtomicU64::new(0));
        let (h2, gone2) = (h.clone(), gone.clone());
        let t = thread::spawn(move || {
            // The sender sends one message and leaves, as `End::drop` does: release
            // the peer entry, then wake everyone.
            let p = Producer::attach(h2.ring());
            assert!(push(&p, 5));
            gone2.store(1, Ordering::Release);
            wait::notify_all(&h2.ring().ctl().not_empty.w);
        });
        let c = Consumer::attach(h.ring());
        assert_eq!(recv(&c, &gone, WaitStrategy::Block), Some(5));
        assert_eq!(recv(&c, &gone, WaitStrategy::Block), None);
        t.join().unwrap();
    });
}

#[test]
fn loom_ping_pong_both_directions_sleep() {
    // Two rings, each side sleeps on one and wakes the other: exercises both wait words
    // at once, with spin-then-park.
    loom::model(|| {
        let a = Arc::new(HeapRing::new(1));
        let b = Arc::new(HeapRing::new(1));
        let (a2, b2) = (a.clone(), b.clone());
        let spin = WaitStrategy::SpinThenPark {
            spin: Duration::ZERO,
        };
        let t = thread::spawn(move || {
            let rx = Consumer::attach(a2.ring());
            let tx = Producer::attach(b2.ring());
            let gone = AtomicU64::new(0);
            let v = recv(&rx, &gone, spin).unwrap();
            send(&tx, v + 1, spin);
        });
        let tx = Producer::attach(a.ring());
        let rx = Consumer::attach(b.ring());
        send(&tx, 1, spin);
        let gone = AtomicU64::new(0);
        assert_eq!(recv(&rx, &gone, spin), Some(2));
        t.join().unwrap();
    });
}
