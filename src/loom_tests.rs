//! Loom models of the SPSC ring and the futex sleep/wake protocol, over heap memory.
//!
//! Run them with:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --lib loom
//! ```
//!
//! The futex is replaced by a model with the kernel's contract (see `sys/futex.rs`): it
//! wakes at most `n` sleepers of the word woken, and its waits never time out nor wake
//! spuriously, so a lost wake-up shows up as a deadlock, which loom reports. (Removing
//! the `SKIPPED` pass-on wake in `wait::leave` makes
//! `loom_two_sleeping_consumers_are_both_woken` deadlock.)

use crate::layout::WaitWord;
use crate::spsc::ring::heap::{HeapRing, pop, pop_batch, push, push_batch, push_batch_two_pass};
use crate::spsc::ring::{Consumer, Producer};
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{self, Attempt, WaitStrategy};
use loom::sync::Arc;
use loom::thread;
use std::time::Duration;

/// A liveness slice long enough never to fire inside a model.
pub(crate) const NEVER: Duration = Duration::from_secs(3600);

/// Blocking push, as `Sender::send` does it.
fn send(p: &Producer, v: u64, strategy: WaitStrategy) {
    while !push(p, v) {
        let w: &WaitWord = &p.ring().ctl().not_full.w;
        wait::block_on(
            w,
            None,
            strategy,
            None,
            NEVER,
            |_| {
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
            None,
            strategy,
            None,
            NEVER,
            |_| {
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

/// Batches both ways over a ring of 2: published last slot first, read in one pass;
/// the consumer never sees a slot of a batch before its payload, and order holds.
#[test]
fn loom_spsc_batches_in_order() {
    spsc_batches_in_order(push_batch);
}

/// The same with batches written first and published after (`write_then_commit`, the
/// path of batches built by user code).
#[test]
fn loom_spsc_two_pass_batches_in_order() {
    spsc_batches_in_order(push_batch_two_pass);
}

fn spsc_batches_in_order(push_batch: fn(&Producer, &[u64]) -> usize) {
    loom::model(move || {
        let h = Arc::new(HeapRing::new(2));
        let h2 = h.clone();
        let t = thread::spawn(move || {
            let p = Producer::attach(h2.ring());
            let msgs = [1, 2, 3];
            let mut sent = 0;
            while sent < msgs.len() {
                match push_batch(&p, &msgs[sent..]) {
                    0 => thread::yield_now(),
                    n => sent += n,
                }
            }
        });
        let c = Consumer::attach(h.ring());
        let mut got = Vec::new();
        while got.len() < 3 {
            let b = pop_batch(&c, 2);
            if b.is_empty() {
                thread::yield_now();
            }
            got.extend(b);
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

/// The futex model wakes at most `n` sleepers, and only those on the word woken: every
/// waiter that slept was taken out by exactly one `wake` (the counts add up), and a
/// `wake` on another word takes nobody.
#[test]
fn loom_futex_model_wakes_n_sleepers_of_that_word() {
    use crate::sync::AtomicU32;
    use crate::sys::futex::{self, Woke};
    loom::model(|| {
        let a = Arc::new(AtomicU32::new(0));
        let b = AtomicU32::new(0);
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let a = a.clone();
                thread::spawn(move || futex::wait(&a, 0, None))
            })
            .collect();
        assert_eq!(futex::wake(&b, u32::MAX), 0);
        let first = futex::wake(&a, 1);
        assert!(first <= 1);
        // Whoever has not compared yet sees the change and does not sleep.
        a.store(1, Ordering::SeqCst);
        let rest = futex::wake(&a, u32::MAX);
        let woken = sleepers
            .into_iter()
            .map(|t| t.join().unwrap())
            .filter(|w| *w == Woke::Woken)
            .count();
        assert_eq!(woken, first + rest);
    });
}

mod mpmc {
    use crate::mpmc::ring::heap::{HeapRing, pop, push};
    use crate::mpmc::ring::{Claimant, FULL, WRITING, decode, encode};
    use crate::sync::Ordering;
    use loom::sync::Arc;
    use loom::thread;

    const P1: Claimant = Claimant {
        peer: 1,
        generation: 1,
    };
    const P2: Claimant = Claimant {
        peer: 2,
        generation: 1,
    };
    const C1: Claimant = Claimant {
        peer: 3,
        generation: 1,
    };
    const C2: Claimant = Claimant {
        peer: 4,
        generation: 1,
    };
    const DEAD: Claimant = Claimant {
        peer: 9,
        generation: 7,
    };

    /// Pops until a value arrives (the model's producers always deliver).
    fn pop_spin(r: &crate::mpmc::ring::MpmcRing, me: Claimant) -> u64 {
        loop {
            match pop(r, me) {
                Ok(v) => return v,
                Err(_) => thread::yield_now(),
            }
        }
    }

    #[test]
    fn loom_mpmc_two_producers_two_consumers_exactly_once() {
        // Two producers push once each while two consumers each try once, in every
        // interleaving; the main thread then drains. Every value is taken exactly once.
        // (No thread polls in a loop, which keeps the model finite and small.)
        loom::model(|| {
            let h = Arc::new(HeapRing::new(2));
            let producers: Vec<_> = [(P1, 10u64), (P2, 20u64)]
                .into_iter()
                .map(|(me, v)| {
                    let h = h.clone();
                    thread::spawn(move || push(&h.ring(), me, v).expect("capacity 2 never fills"))
                })
                .collect();
            let consumers: Vec<_> = [C1, C2]
                .into_iter()
                .map(|me| {
                    let h = h.clone();
                    thread::spawn(move || pop(&h.ring(), me).ok())
                })
                .collect();
            let mut got: Vec<u64> = consumers
                .into_iter()
                .filter_map(|c| c.join().unwrap())
                .collect();
            for p in producers {
                p.join().unwrap();
            }
            while let Ok(v) = pop(&h.ring(), C1) {
                got.push(v);
            }
            got.sort();
            assert_eq!(got, [10, 20]);
        });
    }

    /// Blocking pop over the MPMC ring, as `mpmc::Receiver::recv` waits.
    fn pop_blocking(r: &crate::mpmc::ring::MpmcRing, me: Claimant) -> u64 {
        let w = &r.ctl().not_empty.w;
        crate::wait::block_on(
            w,
            None,
            crate::wait::WaitStrategy::Block,
            None,
            super::NEVER,
            |_| match pop(r, me) {
                Ok(v) => crate::wait::Attempt::Ready(v),
                Err(_) => crate::wait::Attempt::Pending,
            },
            || None,
        )
        .expect("no deadline")
    }

    #[test]
    fn loom_two_sleeping_consumers_are_both_woken() {
        // Two consumers sleep on the same word; two messages arrive back to back, the
        // second possibly while the first wake-up is still in flight (its notification
        // is then skipped and passed on by whoever acknowledges the first).
        loom::model(|| {
            let h = Arc::new(HeapRing::new(2));
            let consumers: Vec<_> = [C1, C2]
                .into_iter()
                .map(|me| {
                    let h = h.clone();
                    thread::spawn(move || pop_blocking(&h.ring(), me))
                })
                .collect();
            push(&h.ring(), P1, 1).unwrap();
            push(&h.ring(), P1, 2).unwrap();
            let mut got: Vec<u64> = consumers.into_iter().map(|c| c.join().unwrap()).collect();
            got.sort();
            assert_eq!(got, [1, 2]);
        });
    }

    #[test]
    fn loom_mpmc_wraparound_keeps_fifo_per_producer() {
        loom::model(|| {
            let h = Arc::new(HeapRing::new(2));
            let h2 = h.clone();
            let p = thread::spawn(move || {
                for v in 1..=3 {
                    while push(&h2.ring(), P1, v).is_err() {
                        thread::yield_now();
                    }
                }
            });
            let got: Vec<u64> = (0..3).map(|_| pop_spin(&h.ring(), C1)).collect();
            assert_eq!(got, [1, 2, 3]);
            p.join().unwrap();
        });
    }

    #[test]
    fn loom_mpmc_dead_writer_is_skipped_and_live_messages_flow() {
        loom::model(|| {
            let h = Arc::new(HeapRing::new(2));
            // A producer claimed position 0 and died before publishing.
            let r = h.ring();
            let w0 = r.word(0);
            w0.store(encode(WRITING, 0, DEAD), Ordering::SeqCst);
            r.ctl().tail.pos.store(1, Ordering::SeqCst);
            let h2 = h.clone();
            let p = thread::spawn(move || {
                while push(&h2.ring(), P1, 42).is_err() {
                    thread::yield_now();
                }
            });
            // The consumer is stuck on the dead claim until it checks the claimant,
            // then gets the live producer's message, and never the torn one.
            let v = loop {
                match pop(&r, C1) {
                    Ok(v) => break v,
                    Err(b) => {
                        r.clear_dead_claim(b, |c| c == DEAD);
                        thread::yield_now();
                    }
                }
            };
            assert_eq!(v, 42);
            p.join().unwrap();
        });
    }

    #[test]
    fn loom_mpmc_dead_reader_frees_its_slot_for_producers() {
        loom::model(|| {
            let h = Arc::new(HeapRing::new(1));
            let r = h.ring();
            push(&r, P1, 1).unwrap();
            // A consumer claimed the message and died while copying it.
            let w = r.word(0);
            let cur = decode(w.load(Ordering::SeqCst));
            assert_eq!(cur.state, FULL);
            w.store(
                encode(crate::mpmc::ring::READING, cur.lap, DEAD),
                Ordering::SeqCst,
            );
            r.ctl().head.pos.store(1, Ordering::SeqCst);
            let h2 = h.clone();
            let c = thread::spawn(move || pop_spin(&h2.ring(), C1));
            // The ring is full of the dead reader's claim until a producer clears it.
            loop {
                match push(&r, P2, 2) {
                    Ok(()) => break,
                    Err(b) => {
                        r.clear_dead_claim(b, |c| c == DEAD);
                        thread::yield_now();
                    }
                }
            }
            assert_eq!(c.join().unwrap(), 2);
        });
    }
}

/// Models of the broadcast ring: lossless delivery to every subscriber, overwrite
/// without torn reads and with exact lag counts, the floor protocol for a subscriber
/// joining while the publisher writes, and waking every sleeping subscriber.
mod broadcast {
    use crate::broadcast::ring::heap::{HeapRing, publish, read};
    use crate::broadcast::ring::{Publisher, Read, Subscriber};
    use crate::options::Start;
    use crate::wait::{self, Attempt, WaitStrategy};
    use loom::sync::Arc;
    use loom::thread;

    /// Publishes, yielding while a lossless ring has no room.
    fn publish_spin(p: &Publisher, msg: &[u64]) {
        while !publish(p, msg) {
            thread::yield_now();
        }
    }

    /// Reads the next message, yielding while there is none.
    fn read_spin(s: &Subscriber, out: &mut [u64]) -> Read {
        loop {
            match read(s, out) {
                Read::Empty => thread::yield_now(),
                r => return r,
            }
        }
    }

    /// A blocking publish, as `Publisher::send` waits and wakes.
    fn publish_blocking(p: &Publisher, v: u64) {
        if !p.has_room() {
            wait::block_on(
                &p.ring().ctl().not_full.w,
                None,
                WaitStrategy::Block,
                None,
                super::NEVER,
                |_| {
                    if p.has_room() {
                        Attempt::Ready(())
                    } else {
                        Attempt::Pending
                    }
                },
                || None,
            )
            .expect("no deadline");
        }
        assert!(publish(p, &[v]));
        wait::notify_every(&p.ring().ctl().not_empty.w);
    }

    #[test]
    fn loom_broadcast_lossless_every_subscriber_gets_every_message() {
        // One slot, two subscribers: the publisher must wait (asleep) for both before
        // it rewrites the slot; each subscriber reads 1 then 2, whole, never lagged,
        // and wakes the publisher after each read, as `Subscriber::recv` does.
        loom::model(|| {
            let h = Arc::new(HeapRing::new(1, 1, 2));
            let subs: Vec<_> = (0..2)
                .map(|i| Subscriber::join(h.ring(), i, 1 + i as u64, Start::Next).unwrap())
                .collect();
            let readers: Vec<_> = subs
                .into_iter()
                .map(|s| {
                    let h = h.clone();
                    thread::spawn(move || {
                        let _keep = &h;
                        for want in [1, 2] {
                            assert_eq!(read_blocking(&s), want);
                            wait::notify(&s.ring().ctl().not_full.w);
                        }
                    })
                })
                .collect();
            let p = Publisher::attach(h.ring(), true);
            publish_blocking(&p, 1);
            publish_blocking(&p, 2);
            for r in readers {
                r.join().unwrap();
            }
        });
    }

    #[test]
    fn loom_broadcast_overwrite_never_tears_and_counts_every_miss() {
        // One slot, a publisher that never waits writing three two-word messages
        // [v, !v], a subscriber reading concurrently until it has accounted for all
        // three: every message it gets is whole and in order, and what it gets plus
        // what it is told it missed is exactly three.
        loom::model(|| {
            let h = Arc::new(HeapRing::new(1, 2, 1));
            let s = Subscriber::join(h.ring(), 0, 1, Start::Next).unwrap();
            let h2 = h.clone();
            let reader = thread::spawn(move || {
                let _keep = &h2;
                let mut out = [0u64; 2];
                let mut accounted = 0u64;
                while accounted < 3 {
                    match read_spin(&s, &mut out) {
                        Read::Got => {
                            assert_eq!(out[1], !out[0], "torn");
                            assert_eq!(out[0], accounted, "out of order");
                            accounted += 1;
                        }
                        Read::Lagged(n) => accounted += n,
                        Read::Empty => unreachable!(),
                    }
                }
                assert_eq!(accounted, 3);
            });
            let p = Publisher::attach(h.ring(), false);
            for v in 0..3u64 {
                assert!(publish(&p, &[v, !v]));
            }
            reader.join().unwrap();
        });
    }

    #[test]
    fn loom_broadcast_late_joiner_is_never_overwritten() {
        // A lossless publisher writes two messages into one slot while a subscriber
        // joins at the oldest message: wherever it starts, the publisher respects its
        // cursor from there on (the floor protocol's Dekker pair), so it never lags.
        loom::model(|| {
            let h = Arc::new(HeapRing::new(1, 1, 1));
            let h2 = h.clone();
            let publisher = thread::spawn(move || {
                let p = Publisher::attach(h2.ring(), true);
                publish_spin(&p, &[1]);
                publish_spin(&p, &[2]);
            });
            let s = Subscriber::join(h.ring(), 0, 1, Start::Oldest).unwrap();
            let mut out = [0u64];
            while s.pos() < 2 {
                match read_spin(&s, &mut out) {
                    Read::Got => assert_eq!(out[0], s.pos()),
                    r => panic!("a joiner was overwritten: {r:?}"),
                }
            }
            publisher.join().unwrap();
        });
    }

    /// A blocking read, as `Subscriber::recv` waits.
    fn read_blocking(s: &Subscriber) -> u64 {
        let w = &s.ring().ctl().not_empty.w;
        let mut out = [0u64];
        wait::block_on(
            w,
            None,
            WaitStrategy::Block,
            None,
            super::NEVER,
            |_| match read(s, &mut out) {
                Read::Got => Attempt::Ready(out[0]),
                _ => Attempt::Pending,
            },
            || None,
        )
        .expect("no deadline")
    }

    #[test]
    fn loom_broadcast_every_sleeping_subscriber_is_woken() {
        // Two subscribers asleep on the same word, one message: a wake-up of one
        // sleeper (as MPMC does) would leave the other asleep for ever.
        loom::model(|| {
            let h = Arc::new(HeapRing::new(2, 1, 2));
            let readers: Vec<_> = (0..2)
                .map(|i| {
                    let s = Subscriber::join(h.ring(), i, 1 + i as u64, Start::Next).unwrap();
                    let h = h.clone();
                    thread::spawn(move || {
                        let _keep = &h;
                        read_blocking(&s)
                    })
                })
                .collect();
            let p = Publisher::attach(h.ring(), true);
            assert!(publish(&p, &[7]));
            wait::notify_every(&h.ring().ctl().not_empty.w);
            for r in readers {
                assert_eq!(r.join().unwrap(), 7);
            }
        });
    }
}
