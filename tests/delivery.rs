//! Delivery between processes: every message arrives exactly once, whole and in order,
//! then the receiver sees `Disconnected` once the sender is gone.
//!
//! Each test re-executes this binary as a child (see `common`): the child opens the
//! channel the parent created and plays the other side.

mod common;

use common::{ChildEnv, MUST_FINISH, Msg, Rng, ShmGuard, mix64};
use shmchan::{
    ByteReceiver, ByteSendError, ByteSender, Receiver, RecvTimeoutError, Sender, TryRecvError,
    TrySendError, Zeroable,
};
use std::time::{Duration, Instant};

/// Messages of the `u64` tests.
const COUNT_U64: u64 = 1_000_000;
/// Messages of the struct test.
const COUNT_MSG: u64 = 200_000;
/// Messages of the byte test.
const COUNT_BYTES: u64 = 100_000;
/// Longest message of the byte test (slots are not a multiple of 8 bytes).
const MAX_LEN: usize = 61;
/// How long one wait of the parent lasts before it checks that the child still runs.
const POLL: Duration = Duration::from_millis(10);
/// Tag of the struct test's producer.
const TAG: u32 = 0xD311;

/// Order-sensitive digest of a stream of `u64`.
fn digest(h: u64, v: u64) -> u64 {
    mix64(h ^ v).wrapping_add(v)
}

#[test]
fn u64_child_sends_parent_receives_in_order() {
    common::run_as_child(|c: &ChildEnv| {
        assert_eq!(c.role, "producer");
        let tx = Sender::<u64>::open(&c.name).expect("open sender");
        for i in 0..c.arg_u64() {
            tx.send_timeout(i, MUST_FINISH).expect("send");
        }
        drop(tx);
    });

    let (guard, name) = ShmGuard::fresh("deliv-u64-c2p");
    let rx = Receiver::<u64>::create(&name, 1024).expect("create");
    let t = Instant::now();
    let mut child = common::spawn_child(
        "u64_child_sends_parent_receives_in_order",
        "producer",
        &name,
        &COUNT_U64.to_string(),
    );
    for expected in 0..COUNT_U64 {
        // Fails at once, with the child's output, if the child dies first.
        let v = common::poll_with_child(&mut child, "a message", || rx.recv_timeout(POLL).ok());
        assert_eq!(v, expected, "out of order or duplicated");
    }
    // The child drops its sender after the last message: nothing more, then Disconnected.
    assert_eq!(
        rx.recv_timeout(MUST_FINISH),
        Err(RecvTimeoutError::Disconnected)
    );
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    child.wait_success();
    println!("{COUNT_U64} u64 child -> parent in {:?}", t.elapsed());
    drop(rx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn u64_parent_sends_child_receives_in_order() {
    common::run_as_child(|c: &ChildEnv| {
        assert_eq!(c.role, "consumer");
        let rx = Receiver::<u64>::open(&c.name).expect("open receiver");
        let report = Sender::<u64>::open(&c.arg).expect("open report channel");
        let mut n = 0u64;
        let mut h = 0u64;
        loop {
            match rx.recv_timeout(MUST_FINISH) {
                Ok(v) => {
                    assert_eq!(v, n, "out of order or duplicated");
                    h = digest(h, v);
                    n += 1;
                }
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => panic!("no message for {MUST_FINISH:?}"),
            }
        }
        report.send_timeout(n, MUST_FINISH).expect("report count");
        report.send_timeout(h, MUST_FINISH).expect("report digest");
        drop(report);
        drop(rx);
    });

    let (mut guard, name) = ShmGuard::fresh("deliv-u64-p2c");
    let report_name = common::unique_name("deliv-u64-p2c-report");
    guard.add(&report_name);
    let report = Receiver::<u64>::create(&report_name, 4).expect("create report channel");
    let tx = Sender::<u64>::create(&name, 1024).expect("create");
    let t = Instant::now();
    let mut child = common::spawn_child(
        "u64_parent_sends_child_receives_in_order",
        "consumer",
        &name,
        &report_name,
    );
    let mut h = 0u64;
    for i in 0..COUNT_U64 {
        common::poll_with_child(&mut child, "room", || tx.send_timeout(i, POLL).ok());
        h = digest(h, i);
    }
    // Dropping the creating sender removes the name; the attached child keeps its
    // mapping, drains the ring and then sees Disconnected.
    drop(tx);
    assert!(
        !common::shm_exists(&name),
        "the creator's drop must remove the name"
    );
    assert_eq!(
        report.recv_timeout(MUST_FINISH),
        Ok(COUNT_U64),
        "count seen by the child"
    );
    assert_eq!(
        report.recv_timeout(MUST_FINISH),
        Ok(h),
        "digest seen by the child"
    );
    assert_eq!(
        report.recv_timeout(MUST_FINISH),
        Err(RecvTimeoutError::Disconnected)
    );
    child.wait_success();
    println!("{COUNT_U64} u64 parent -> child in {:?}", t.elapsed());
    drop(report);
    drop(guard);
    common::assert_shm_gone(&[&name, &report_name]);
}

/// Checks one received struct message against the expected sequence number.
fn check_msg(m: &Msg, expected: &mut u64) {
    assert!(
        m.is_valid(),
        "torn or garbage message {m:?} (expected seq {expected})"
    );
    assert_eq!(m.tag(), TAG);
    assert_eq!(m.seq, *expected, "out of order, lost or duplicated");
    *expected += 1;
}

#[test]
fn struct_messages_arrive_whole_through_every_send_and_recv_path() {
    common::run_as_child(|c: &ChildEnv| {
        assert_eq!(c.role, "producer");
        let mut tx = Sender::<Msg>::open(&c.name).expect("open sender");
        let total = c.arg_u64();
        let mut rng = Rng::from_entropy();
        let mut seq = 0u64;
        while seq < total {
            match rng.next_u64() % 6 {
                0 => {
                    tx.send_timeout(Msg::new(TAG, seq), MUST_FINISH)
                        .expect("send");
                    seq += 1;
                }
                // Batch built in place.
                5 => {
                    let k = rng.range(1, 17).min(total - seq) as usize;
                    match tx.try_send_batch_with(k, |i| Msg::new(TAG, seq + i as u64)) {
                        Ok(n) => {
                            assert!(n >= 1 && n <= k);
                            seq += n as u64;
                        }
                        Err(TrySendError::Full(())) => std::thread::yield_now(),
                        Err(TrySendError::Disconnected(())) => panic!("receiver gone"),
                    }
                }
                // Blocking batch: all of it, waiting for room as needed.
                3 => {
                    let k = rng.range(1, 3 * 64).min(total - seq);
                    let batch: Vec<Msg> = (seq..seq + k).map(|s| Msg::new(TAG, s)).collect();
                    tx.send_batch(&batch).expect("send_batch");
                    seq += k;
                }
                // Blocking loan.
                4 => {
                    let mut slot = tx.loan().expect("loan");
                    *slot = Msg::new(TAG, seq);
                    slot.commit();
                    seq += 1;
                }
                1 => {
                    let k = rng.range(1, 17).min(total - seq);
                    let batch: Vec<Msg> = (seq..seq + k).map(|s| Msg::new(TAG, s)).collect();
                    match tx.try_send_batch(&batch) {
                        Ok(n) => {
                            assert!(n >= 1 && n as u64 <= k);
                            seq += n as u64;
                        }
                        Err(TrySendError::Full(())) => {
                            tx.send_timeout(batch[0], MUST_FINISH).expect("send");
                            seq += 1;
                        }
                        Err(TrySendError::Disconnected(())) => panic!("receiver gone"),
                    }
                }
                _ => match tx.try_loan() {
                    Ok(mut slot) => {
                        // Build the message field by field in place.
                        let m = Msg::new(TAG, seq);
                        slot.seq = m.seq;
                        slot.payload = m.payload;
                        slot.check = m.check;
                        slot.commit();
                        seq += 1;
                    }
                    Err(TrySendError::Full(())) => {
                        tx.send_timeout(Msg::new(TAG, seq), MUST_FINISH)
                            .expect("send");
                        seq += 1;
                    }
                    Err(TrySendError::Disconnected(())) => panic!("receiver gone"),
                },
            }
        }
        drop(tx);
    });

    let (guard, name) = ShmGuard::fresh("deliv-struct");
    let mut rx = Receiver::<Msg>::create(&name, 64).expect("create");
    let t = Instant::now();
    let child = common::spawn_child(
        "struct_messages_arrive_whole_through_every_send_and_recv_path",
        "producer",
        &name,
        &COUNT_MSG.to_string(),
    );
    // recv_ref has no timeout: a hung child is killed, which ends it with RecvError.
    let watchdog = common::Watchdog::new(&child, MUST_FINISH);
    let mut rng = Rng::from_entropy();
    let mut expected = 0u64;
    let mut buf = [Msg::zeroed(); 16];
    while expected < COUNT_MSG {
        assert!(t.elapsed() < MUST_FINISH, "stuck at message {expected}");
        match rng.next_u64() % 5 {
            0 => match rx.recv_timeout(MUST_FINISH) {
                Ok(m) => check_msg(&m, &mut expected),
                Err(e) => panic!("message {expected}: {e:?}"),
            },
            4 => {
                let max = rng.range(1, 40) as usize;
                match rx.try_recv_batch_with(max, |m| check_msg(&m, &mut expected)) {
                    Ok(n) => assert!(n >= 1 && n <= max),
                    Err(TryRecvError::Empty) => std::thread::yield_now(),
                    Err(TryRecvError::Disconnected) => panic!("sender gone at {expected}"),
                }
            }
            3 => match rx.recv_ref() {
                Ok(m) => check_msg(&m, &mut expected),
                Err(e) => panic!("message {expected}: {e:?}"),
            },
            1 => match rx.try_recv_batch(&mut buf) {
                Ok(n) => {
                    assert!(n >= 1 && n <= buf.len());
                    for m in &buf[..n] {
                        check_msg(m, &mut expected);
                    }
                }
                Err(TryRecvError::Empty) => std::thread::yield_now(),
                Err(TryRecvError::Disconnected) => panic!("sender gone at {expected}"),
            },
            _ => match rx.try_recv_ref() {
                Ok(m) => check_msg(&m, &mut expected),
                Err(TryRecvError::Empty) => std::thread::yield_now(),
                Err(TryRecvError::Disconnected) => panic!("sender gone at {expected}"),
            },
        }
    }
    assert_eq!(
        rx.recv_timeout(MUST_FINISH),
        Err(RecvTimeoutError::Disconnected)
    );
    drop(watchdog);
    child.wait_success();
    println!("{COUNT_MSG} struct messages in {:?}", t.elapsed());
    drop(rx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Byte message number `i`: its length cycles through 0..=MAX_LEN, its bytes depend on
/// `i` and their position.
fn byte_msg(i: u64, out: &mut Vec<u8>) {
    out.clear();
    let len = (i % (MAX_LEN as u64 + 1)) as usize;
    out.extend((0..len).map(|j| mix64(i ^ ((j as u64) << 48)) as u8));
}

#[test]
fn byte_messages_of_every_length_arrive_whole() {
    common::run_as_child(|c: &ChildEnv| {
        assert_eq!(c.role, "producer");
        let mut tx = ByteSender::open(&c.name).expect("open byte sender");
        assert_eq!(
            tx.max_len(),
            MAX_LEN,
            "an opener learns the creator's limit"
        );
        let mut msg = Vec::new();
        let mut rng = Rng::from_entropy();
        for i in 0..c.arg_u64() {
            byte_msg(i, &mut msg);
            match rng.next_u64() % 3 {
                0 => tx.send_timeout(&msg, MUST_FINISH).expect("send"),
                1 => match tx.try_loan(msg.len()) {
                    Ok(mut slot) => {
                        slot.copy_from_slice(&msg);
                        slot.commit();
                    }
                    Err(ByteSendError::Full) => tx.send_timeout(&msg, MUST_FINISH).expect("send"),
                    Err(e) => panic!("loan: {e:?}"),
                },
                _ => match tx.try_send(&msg) {
                    Ok(()) => {}
                    Err(ByteSendError::Full) => tx.send_timeout(&msg, MUST_FINISH).expect("send"),
                    Err(e) => panic!("try_send: {e:?}"),
                },
            }
        }
        // Too long is refused whole, without disturbing the stream.
        assert!(matches!(
            tx.try_send(&[0; MAX_LEN + 1]),
            Err(ByteSendError::TooLong(_))
        ));
        drop(tx);
    });

    let (guard, name) = ShmGuard::fresh("deliv-bytes");
    let mut rx = ByteReceiver::create(&name, 32, MAX_LEN).expect("create");
    let t = Instant::now();
    let child = common::spawn_child(
        "byte_messages_of_every_length_arrive_whole",
        "producer",
        &name,
        &COUNT_BYTES.to_string(),
    );
    let mut rng = Rng::from_entropy();
    let (mut want, mut got) = (Vec::new(), Vec::new());
    let mut i = 0u64;
    while i < COUNT_BYTES {
        assert!(t.elapsed() < MUST_FINISH, "stuck at message {i}");
        byte_msg(i, &mut want);
        let ok = match rng.next_u64() % 3 {
            0 => {
                got = rx.recv_timeout(MUST_FINISH).expect("recv");
                true
            }
            1 => match rx.try_recv_into(&mut got) {
                Ok(n) => {
                    assert_eq!(n, got.len());
                    true
                }
                Err(TryRecvError::Empty) => false,
                Err(TryRecvError::Disconnected) => panic!("sender gone at {i}"),
            },
            _ => match rx.try_recv_ref() {
                Ok(m) => {
                    got.clear();
                    got.extend_from_slice(&m);
                    true
                }
                Err(TryRecvError::Empty) => false,
                Err(TryRecvError::Disconnected) => panic!("sender gone at {i}"),
            },
        };
        if ok {
            assert_eq!(got, want, "message {i}");
            i += 1;
        } else {
            std::thread::yield_now();
        }
    }
    assert_eq!(
        rx.recv_timeout(MUST_FINISH),
        Err(RecvTimeoutError::Disconnected)
    );
    child.wait_success();
    println!("{COUNT_BYTES} byte messages in {:?}", t.elapsed());
    drop(rx);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}
