//! User closures inside batches (issue 11, defect 5): a panic in the closure of
//! `try_send_batch_with` publishes nothing of that batch and loses nothing sent after
//! it; a panic in the closure of `try_recv_batch_with` counts the messages already
//! handed over as received and leaves the rest for the next receive.
//!
//! (Re-entering the handle from the closure, defect 4, does not compile: see the
//! `compile_fail` examples on those methods.)

mod common;

use common::ShmGuard;
use shmchan::{Receiver, Sender, TryRecvError};
use std::panic::{AssertUnwindSafe, catch_unwind};

/// Runs `f`, which must panic (the test harness captures the panic message).
fn expect_panic<R>(f: impl FnOnce() -> R) {
    let r = catch_unwind(AssertUnwindSafe(f));
    assert!(r.is_err(), "the closure was expected to panic");
}

/// Everything the receiver has now, one message at a time.
fn drain(rx: &Receiver<u64>) -> Vec<u64> {
    let mut got = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(v) => got.push(v),
            Err(TryRecvError::Empty) => return got,
            Err(e) => panic!("{e:?}"),
        }
    }
}

fn pair(tag: &str, cap: usize) -> (ShmGuard, Sender<u64>, Receiver<u64>) {
    let (guard, name) = ShmGuard::fresh(tag);
    let tx = Sender::<u64>::create(&name, cap).expect("create");
    let rx = Receiver::<u64>::open(&name).expect("open");
    (guard, tx, rx)
}

#[test]
fn panic_in_send_batch_make_publishes_nothing_and_loses_nothing() {
    let (_guard, mut tx, rx) = pair("batch-send-panic", 8);
    let mut called = Vec::new();
    expect_panic(|| {
        tx.try_send_batch_with(6, |i| {
            called.push(i);
            assert_ne!(i, 2, "make panics at i = 2");
            1000 + i as u64
        })
    });
    assert_eq!(rx.len(), 0, "nothing of the panicked batch is visible");
    assert_eq!(drain(&rx), [0u64; 0]);

    // Normal sends after the panic, more than the ring holds, through every send path:
    // the receiver gets exactly these, in order.
    let mut want = Vec::new();
    let mut got = Vec::new();
    let mut next = 0u64;
    for round in 0..6 {
        match round % 3 {
            0 => {
                tx.try_send(next).expect("room");
                want.push(next);
                next += 1;
            }
            1 => {
                let n = tx.try_send_batch(&[next, next + 1]).expect("room");
                assert_eq!(n, 2);
                want.extend([next, next + 1]);
                next += 2;
            }
            _ => {
                let n = tx
                    .try_send_batch_with(3, |i| next + i as u64)
                    .expect("room");
                assert_eq!(n, 3);
                want.extend(next..next + 3);
                next += 3;
            }
        }
        got.extend(drain(&rx));
    }
    assert_eq!(got, want, "exactly the normal sends, in order, none lost");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(
        called,
        [0, 1, 2],
        "make is called in order, up to the panic"
    );
}

#[test]
fn panic_in_send_batch_make_on_a_full_wrap_publishes_nothing() {
    // The panicked batch spans the wrap-around and fills the ring; the slots it wrote
    // are reused by the next sends.
    let (_guard, mut tx, mut rx) = pair("batch-send-panic-wrap", 4);
    tx.try_send_batch(&[1, 2, 3]).expect("room");
    assert_eq!(drain(&rx), [1, 2, 3]);
    expect_panic(|| {
        tx.try_send_batch_with(4, |i| {
            assert_ne!(i, 1, "make panics at the second slot");
            100 + i as u64
        })
    });
    assert!(rx.is_empty());
    tx.try_send(7).expect("room");
    tx.try_send(8).expect("room");
    assert_eq!(drain(&rx), [7, 8]);
    assert_eq!(tx.try_send_batch(&[9, 10, 11, 12]).expect("room"), 4);
    let mut got = Vec::new();
    assert_eq!(
        rx.try_recv_batch_with(8, |m| got.push(m))
            .expect("messages"),
        4
    );
    assert_eq!(got, [9, 10, 11, 12]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
}

#[test]
fn panic_in_recv_batch_take_releases_exactly_what_was_handed_over() {
    let (_guard, tx, mut rx) = pair("batch-recv-panic", 8);
    tx.try_send_batch(&[10, 11, 12, 13, 14, 15]).expect("room");
    let mut got = Vec::new();
    expect_panic(|| {
        rx.try_recv_batch_with(8, |m| {
            got.push(m);
            assert_ne!(m, 12, "take panics at message k = 2");
        })
    });
    assert_eq!(got, [10, 11, 12], "messages 0..=k were handed over");
    assert_eq!(rx.len(), 3, "messages 0..=k are released, k+1.. are not");
    // The next call starts at message k + 1: nothing again, nothing skipped.
    let mut rest = Vec::new();
    assert_eq!(
        rx.try_recv_batch_with(8, |m| rest.push(m))
            .expect("messages"),
        3
    );
    assert_eq!(rest, [13, 14, 15]);
    assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
    // The released slots are free for the sender again: the ring takes a full load.
    let all: Vec<u64> = (20..28).collect();
    assert_eq!(tx.try_send_batch(&all).expect("room"), 8);
    assert_eq!(drain(&rx), all);
}

#[test]
fn panic_in_recv_batch_take_at_the_first_message_releases_only_it() {
    let (_guard, tx, mut rx) = pair("batch-recv-panic-first", 4);
    tx.try_send_batch(&[1, 2, 3]).expect("room");
    expect_panic(|| rx.try_recv_batch_with(4, |_| panic!("take panics at once")));
    assert_eq!(drain(&rx), [2, 3]);
}

/// Batches of zero messages succeed at once with 0 and never call the closure, even
/// on a full ring or an empty one.
#[test]
fn empty_batches_call_nothing() {
    let (_guard, name) = ShmGuard::fresh("batch-zero");
    let mut tx = Sender::<u64>::create(&name, 2).expect("create");
    let mut rx = Receiver::<u64>::open(&name).expect("open");
    let never = |_: usize| -> u64 { panic!("make called for an empty batch") };
    assert_eq!(tx.try_send_batch_with(0, never), Ok(0));
    assert_eq!(
        rx.try_recv_batch_with(0, |_| panic!("take called for an empty batch")),
        Ok(0)
    );
    tx.send(1).expect("send");
    tx.send(2).expect("send");
    // Full: still 0, nothing lost.
    assert_eq!(tx.try_send_batch_with(0, never), Ok(0));
    assert_eq!(
        rx.try_recv_batch_with(0, |_| panic!("take called for an empty batch")),
        Ok(0)
    );
    assert_eq!(drain(&rx), [1, 2]);
}
