//! Target `ops`: sequences of operations on one channel, checked step by step against
//! a `VecDeque` model.
//!
//! A typed (`u64`) or byte channel of 1 to 64 slots is created with `keep(true)` (so
//! that either handle may be dropped and re-attached by name; the name is removed at
//! the end, which must succeed), then the input drives its sender and receiver in one
//! thread. After every step the model says exactly what each call returns: the
//! message and its order, `Full`/`Empty` exactly when the model is full/empty,
//! `Disconnected` exactly when the peer was attached and has left, `TooLong` exactly
//! when a byte message is over the limit, and `len()`, `is_empty()`, `is_full()`.
//! Blocking calls are made only when the model says they return at once.
//!
//! # Input
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | bit 0: byte channel; bit 1: the receiver creates (else the sender); bits 2-4: capacity log2 (mod 7); bits 5-6: create mode; bit 7: open the other side at once |
//! | 1 | byte channels only: the length limit (0 to 255) |
//! | rest | operations: one byte each (see [`typed`] and [`bytes`]), some followed by an argument byte |

use super::{Input, ShmGuard};
use shmchan::{
    ByteReceiver, ByteSendError, ByteSender, CreateMode, OpenError, Options, Receiver, RecvError,
    RecvTimeoutError, SendError, SendTimeoutError, Sender, TooLong, TryRecvError, TrySendError,
};
use std::collections::VecDeque;
use std::fmt::Debug;
use std::time::{Duration, Instant};

/// At most this many operations per input.
const MAX_STEPS: usize = 4096;

/// What the model knows about one side of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Never attached: the other side does not see it as disconnected.
    Never,
    /// A handle is attached.
    Attached,
    /// It was attached and left: the other side sees `Disconnected`.
    Gone,
}

/// Expected outcome of a non-blocking send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Room {
    Ok,
    Full,
    Disconnected,
}

/// The model: contents in order, capacity, and who is attached.
#[derive(Debug)]
struct Model<M> {
    q: VecDeque<M>,
    cap: usize,
    tx: Side,
    rx: Side,
}

impl<M: Clone + PartialEq + Debug> Model<M> {
    fn new(cap: usize) -> Model<M> {
        Model {
            q: VecDeque::new(),
            cap,
            tx: Side::Never,
            rx: Side::Never,
        }
    }

    fn free(&self) -> usize {
        self.cap - self.q.len()
    }

    /// A send checks for a departed receiver first, then for room.
    fn send(&self) -> Room {
        if self.rx == Side::Gone {
            Room::Disconnected
        } else if self.q.len() == self.cap {
            Room::Full
        } else {
            Room::Ok
        }
    }

    /// A receive takes a message if there is one, even from a departed sender.
    fn recv(&self) -> Result<M, TryRecvError> {
        match self.q.front() {
            Some(m) => Ok(m.clone()),
            None if self.tx == Side::Gone => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    fn push(&mut self, m: M) {
        assert!(self.q.len() < self.cap, "model overflow");
        self.q.push_back(m);
    }

    fn pop(&mut self) -> M {
        self.q.pop_front().expect("model underflow")
    }
}

/// Checks the occupancy calls of any handle against the model.
macro_rules! check_handle {
    ($h:expr, $m:expr) => {{
        let h = $h;
        assert_eq!(h.capacity(), $m.cap, "capacity()");
        assert_eq!(h.len(), $m.q.len(), "len()");
        assert_eq!(h.is_empty(), $m.q.is_empty(), "is_empty()");
        assert_eq!(h.is_full(), $m.q.len() == $m.cap, "is_full()");
        // Created with keep(true): no handle removes the name.
        assert!(!h.owns_name(), "owns_name()");
    }};
}

/// Checks an attach of a role that is already held.
fn assert_role_taken<T: Debug>(r: Result<T, OpenError>, role: &str) {
    match r {
        Err(OpenError::RoleTaken { role: r, pid }) => {
            assert_eq!(r, role);
            assert_eq!(pid, std::process::id());
        }
        other => panic!("attaching a second {role}: {other:?}"),
    }
}

fn create_mode(bits: u8) -> CreateMode {
    match bits & 3 {
        0 | 1 => CreateMode::CreateExclusive,
        2 => CreateMode::OpenOrCreate,
        _ => CreateMode::PurgeAndCreate,
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let guard = ShmGuard::fresh("ops");
    if cfg & 1 == 0 {
        typed(cfg, &mut input, &guard.name);
    } else {
        bytes(cfg, &mut input, &guard.name);
    }
    // Every handle is gone; the kept name is still there, exactly once.
    shmchan::remove(&guard.name).expect("the kept name survives its handles");
}

/// A `u64` channel. Operations (byte mod 20): 0 `try_send`, 1 `try_recv`,
/// 2 `try_send_batch(k)`, 3 `try_recv_batch(k)`, 4 `try_loan`+`commit`,
/// 5 `try_loan`+drop, 6 `try_recv_ref`, 7 `send_timeout(0)`, 8 `recv_timeout(0)`,
/// 9 `send`, 10 `recv`, 11 `send_batch(k)`, 12 drop the sender, 13 attach a sender,
/// 14 drop the receiver, 15 attach a receiver, 16 `try_iter().take(k)`,
/// 17 `is_disconnected`, 18 mismatched opens, 19 `iter()`/`into_iter()` once the sender
/// is gone. `k` is the next byte.
pub fn typed(cfg: u8, input: &mut Input<'_>, name: &str) {
    let cap = 1usize << (((cfg >> 2) & 7) % 7);
    let create = Options::new()
        .capacity(cap)
        .mode(create_mode(cfg >> 5))
        .keep(true);
    let open = Options::new().init_timeout(Duration::ZERO);
    let mut m = Model::<u64>::new(cap);
    let mut tx: Option<Sender<u64>> = None;
    let mut rx: Option<Receiver<u64>> = None;
    if cfg & 2 == 0 {
        tx = Some(Sender::with_options(name, &create).expect("create as sender"));
        m.tx = Side::Attached;
    } else {
        rx = Some(Receiver::with_options(name, &create).expect("create as receiver"));
        m.rx = Side::Attached;
    }
    if cfg & 0x80 != 0 {
        if tx.is_none() {
            tx = Some(Sender::with_options(name, &open).expect("open sender"));
            m.tx = Side::Attached;
        } else {
            rx = Some(Receiver::with_options(name, &open).expect("open receiver"));
            m.rx = Side::Attached;
        }
    }
    let mut next: u64 = 0x1000;
    let mut fresh = || {
        next += 1;
        next
    };

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        match input.u8() % 20 {
            0 => {
                if let Some(tx) = &tx {
                    let v = fresh();
                    match (m.send(), tx.try_send(v)) {
                        (Room::Ok, Ok(())) => m.push(v),
                        (Room::Full, Err(TrySendError::Full(back)))
                        | (Room::Disconnected, Err(TrySendError::Disconnected(back))) => {
                            assert_eq!(back, v)
                        }
                        (want, got) => panic!("try_send: model {want:?}, got {got:?}"),
                    }
                }
            }
            1 => {
                if let Some(rx) = &rx {
                    let got = rx.try_recv();
                    assert_eq!(got, m.recv(), "try_recv");
                    if got.is_ok() {
                        m.pop();
                    }
                }
            }
            2 => {
                let k = input.u8() as usize % (cap + 3);
                if let Some(tx) = &tx {
                    let msgs: Vec<u64> = (0..k).map(|_| fresh()).collect();
                    let got = tx.try_send_batch(&msgs);
                    let want = match (k, m.send()) {
                        (0, _) => Ok(0),
                        (_, Room::Ok) => Ok(k.min(m.free())),
                        (_, Room::Full) => Err(TrySendError::Full(())),
                        (_, Room::Disconnected) => Err(TrySendError::Disconnected(())),
                    };
                    assert_eq!(got, want, "try_send_batch({k})");
                    for &v in &msgs[..got.unwrap_or(0)] {
                        m.push(v);
                    }
                }
            }
            3 => {
                let k = input.u8() as usize % (cap + 3);
                if let Some(rx) = &rx {
                    let mut out = vec![0xdead_beef_u64; k];
                    let got = rx.try_recv_batch(&mut out);
                    let want = match (k, m.recv()) {
                        (0, _) => Ok(0),
                        (_, Ok(_)) => Ok(k.min(m.q.len())),
                        (_, Err(e)) => Err(e),
                    };
                    assert_eq!(got, want, "try_recv_batch({k})");
                    for &v in &out[..got.unwrap_or(0)] {
                        assert_eq!(v, m.pop(), "try_recv_batch order");
                    }
                }
            }
            op @ (4 | 5) => {
                if let Some(tx) = &mut tx {
                    let v = fresh();
                    let want = m.send();
                    match (want, tx.try_loan()) {
                        (Room::Ok, Ok(mut slot)) => {
                            *slot = v;
                            if op == 4 {
                                slot.commit();
                                m.push(v);
                            }
                            // else: abandoned; the value must never arrive.
                        }
                        (Room::Full, Err(TrySendError::Full(())))
                        | (Room::Disconnected, Err(TrySendError::Disconnected(()))) => {}
                        (want, got) => panic!("try_loan: model {want:?}, got {got:?}"),
                    }
                }
            }
            6 => {
                if let Some(rx) = &mut rx {
                    let want = m.recv();
                    match rx.try_recv_ref() {
                        Ok(r) => {
                            assert_eq!(Ok(*r), want, "try_recv_ref");
                            drop(r);
                            m.pop();
                        }
                        Err(e) => assert_eq!(Err(e), want, "try_recv_ref"),
                    }
                }
            }
            7 => {
                if let Some(tx) = &tx {
                    let v = fresh();
                    match (m.send(), tx.send_timeout(v, Duration::ZERO)) {
                        (Room::Ok, Ok(())) => m.push(v),
                        (Room::Full, Err(SendTimeoutError::Timeout(back)))
                        | (Room::Disconnected, Err(SendTimeoutError::Disconnected(back))) => {
                            assert_eq!(back, v)
                        }
                        (want, got) => panic!("send_timeout: model {want:?}, got {got:?}"),
                    }
                }
            }
            8 => {
                if let Some(rx) = &rx {
                    let want = m.recv().map_err(|e| match e {
                        TryRecvError::Empty => RecvTimeoutError::Timeout,
                        TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    });
                    let got = rx.recv_timeout(Duration::ZERO);
                    assert_eq!(got, want, "recv_timeout(0)");
                    if got.is_ok() {
                        m.pop();
                    }
                }
            }
            9 => {
                // Blocking send, only when it cannot block.
                if let Some(tx) = &tx {
                    let v = fresh();
                    match m.send() {
                        Room::Ok => {
                            tx.send(v).expect("send with room");
                            m.push(v);
                        }
                        Room::Disconnected => {
                            assert_eq!(tx.send(v), Err(SendError::Disconnected(v)))
                        }
                        Room::Full => {}
                    }
                }
            }
            10 => {
                // Blocking receive, only when it cannot block.
                if let Some(rx) = &rx {
                    match m.recv() {
                        Ok(v) => {
                            assert_eq!(rx.recv(), Ok(v), "recv");
                            m.pop();
                        }
                        Err(TryRecvError::Disconnected) => assert_eq!(rx.recv(), Err(RecvError)),
                        Err(TryRecvError::Empty) => {}
                    }
                }
            }
            11 => {
                let k = input.u8() as usize % (cap + 3);
                if let Some(tx) = &tx {
                    let msgs: Vec<u64> = (0..k).map(|_| fresh()).collect();
                    if k == 0 {
                        assert_eq!(tx.send_batch(&msgs), Ok(()));
                    } else if m.rx == Side::Gone {
                        assert_eq!(tx.send_batch(&msgs), Err(SendError::Disconnected(0)));
                    } else if k <= m.free() {
                        assert_eq!(tx.send_batch(&msgs), Ok(()), "send_batch({k})");
                        msgs.iter().for_each(|&v| m.push(v));
                    }
                }
            }
            12 => {
                if tx.take().is_some() {
                    m.tx = Side::Gone;
                }
            }
            13 => {
                let r = Sender::<u64>::with_options(name, &open);
                if tx.is_some() {
                    assert_role_taken(r, "sender");
                } else {
                    tx = Some(r.expect("re-attach sender"));
                    m.tx = Side::Attached;
                }
            }
            14 => {
                if rx.take().is_some() {
                    m.rx = Side::Gone;
                }
            }
            15 => {
                let r = Receiver::<u64>::with_options(name, &open);
                if rx.is_some() {
                    assert_role_taken(r, "receiver");
                } else {
                    rx = Some(r.expect("re-attach receiver"));
                    m.rx = Side::Attached;
                }
            }
            16 => {
                let k = input.u8() as usize;
                if let Some(rx) = &rx {
                    let got: Vec<u64> = rx.try_iter().take(k).collect();
                    assert_eq!(got.len(), k.min(m.q.len()), "try_iter().take({k})");
                    for v in got {
                        assert_eq!(v, m.pop(), "try_iter order");
                    }
                }
            }
            17 => {
                if let Some(tx) = &tx {
                    assert_eq!(
                        tx.is_disconnected(),
                        m.rx == Side::Gone,
                        "tx.is_disconnected"
                    );
                }
                if let Some(rx) = &rx {
                    assert_eq!(
                        rx.is_disconnected(),
                        m.tx == Side::Gone,
                        "rx.is_disconnected"
                    );
                }
            }
            18 => match input.u8() % 4 {
                0 => assert!(matches!(
                    Receiver::<u32>::with_options(name, &open),
                    Err(OpenError::TypeMismatch { .. })
                )),
                1 => assert!(matches!(
                    ByteReceiver::with_options(name, &open, 0),
                    Err(OpenError::TypeMismatch { .. })
                )),
                2 => assert!(matches!(
                    Sender::<[u8; 8]>::with_options(name, &open),
                    Err(OpenError::TypeMismatch { .. })
                )),
                _ => assert!(matches!(
                    Sender::<u64>::with_options(name, &open.clone().capacity(cap * 2)),
                    Err(OpenError::CapacityMismatch { found, expected })
                        if found == cap as u64 && expected == cap as u64 * 2
                )),
            },
            19 => {
                // Blocking iteration ends only once the sender is gone.
                if m.tx == Side::Gone {
                    if input.u8() & 1 == 0 {
                        if let Some(rx) = &rx {
                            let got: Vec<u64> = rx.iter().collect();
                            assert_eq!(got, Vec::from(std::mem::take(&mut m.q)), "iter()");
                        }
                    } else if let Some(rx) = rx.take() {
                        let got: Vec<u64> = rx.into_iter().collect();
                        assert_eq!(got, Vec::from(std::mem::take(&mut m.q)), "into_iter()");
                        m.rx = Side::Gone;
                    }
                }
            }
            _ => unreachable!(),
        }
        if let Some(tx) = &tx {
            check_handle!(tx, m);
        }
        if let Some(rx) = &rx {
            check_handle!(rx, m);
        }
    }
}

/// Contents of byte message number `id` of length `len`.
fn byte_msg(id: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (id as u8).wrapping_mul(31).wrapping_add(i as u8) ^ (id >> 8) as u8)
        .collect()
}

/// A byte channel. Operations (byte mod 16), `len` being the next byte mod
/// `max_len + 3`: 0 `try_send(len)`, 1 `try_recv`, 2 `try_recv_into`,
/// 3 `try_loan(len)`+`commit`, 4 `try_loan(len)`+drop, 5 `try_recv_ref`,
/// 6 `send_timeout(len, 0)`, 7 `recv_timeout(0)` or `recv_into_deadline(now)`,
/// 8 `send(len)`, 9 `recv`, 10 drop the sender, 11 attach a sender, 12 drop the
/// receiver, 13 attach a receiver, 14 `is_disconnected`, 15 mismatched opens.
pub fn bytes(cfg: u8, input: &mut Input<'_>, name: &str) {
    let cap = 1usize << (((cfg >> 2) & 7) % 7);
    let max = input.u8() as usize;
    let create = Options::new()
        .capacity(cap)
        .mode(create_mode(cfg >> 5))
        .keep(true);
    let open = Options::new().init_timeout(Duration::ZERO);
    let mut m = Model::<Vec<u8>>::new(cap);
    let mut tx: Option<ByteSender> = None;
    let mut rx: Option<ByteReceiver> = None;
    if cfg & 2 == 0 {
        tx = Some(ByteSender::with_options(name, &create, max).expect("create as sender"));
        m.tx = Side::Attached;
    } else {
        rx = Some(ByteReceiver::with_options(name, &create, max).expect("create as receiver"));
        m.rx = Side::Attached;
    }
    if cfg & 0x80 != 0 {
        if tx.is_none() {
            tx = Some(ByteSender::with_options(name, &open, 0).expect("open sender"));
            m.tx = Side::Attached;
        } else {
            rx = Some(ByteReceiver::with_options(name, &open, 0).expect("open receiver"));
            m.rx = Side::Attached;
        }
    }
    let mut next: u64 = 0;
    let mut fresh = |len: usize| {
        next += 1;
        byte_msg(next, len)
    };
    let too_long = |len: usize| TooLong { len, max };
    let mut buf = vec![0xee_u8; 3];

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 16;
        let len = match op {
            0 | 3 | 4 | 6 | 8 => input.u8() as usize % (max + 3),
            _ => 0,
        };
        match op {
            0 => {
                if let Some(tx) = &tx {
                    let msg = fresh(len);
                    let got = tx.try_send(&msg);
                    if len > max {
                        assert_eq!(got, Err(ByteSendError::TooLong(too_long(len))));
                    } else {
                        match (m.send(), got) {
                            (Room::Ok, Ok(())) => m.push(msg),
                            (Room::Full, Err(ByteSendError::Full))
                            | (Room::Disconnected, Err(ByteSendError::Disconnected)) => {}
                            (want, got) => panic!("try_send: model {want:?}, got {got:?}"),
                        }
                    }
                }
            }
            1 => {
                if let Some(rx) = &rx {
                    let got = rx.try_recv();
                    assert_eq!(got, m.recv(), "try_recv");
                    if got.is_ok() {
                        m.pop();
                    }
                }
            }
            2 => {
                if let Some(rx) = &rx {
                    let want = m.recv();
                    match rx.try_recv_into(&mut buf) {
                        Ok(n) => {
                            assert_eq!(n, buf.len());
                            assert_eq!(Ok(buf.clone()), want, "try_recv_into");
                            m.pop();
                        }
                        Err(e) => assert_eq!(Err(e), want, "try_recv_into"),
                    }
                }
            }
            3 | 4 => {
                if let Some(tx) = &mut tx {
                    let msg = fresh(len);
                    let want = m.send();
                    match tx.try_loan(len) {
                        Ok(mut slot) => {
                            assert!(len <= max && want == Room::Ok, "try_loan: model {want:?}");
                            assert_eq!(slot.len(), len);
                            if op == 3 {
                                slot.copy_from_slice(&msg);
                                slot.commit();
                                m.push(msg);
                            } else {
                                slot.fill(0xab);
                            }
                        }
                        Err(ByteSendError::TooLong(t)) => assert_eq!(t, too_long(len)),
                        Err(e) => {
                            assert!(len <= max, "try_loan({len}) > {max}: {e:?}");
                            match (want, e) {
                                (Room::Full, ByteSendError::Full)
                                | (Room::Disconnected, ByteSendError::Disconnected) => {}
                                (want, e) => panic!("try_loan: model {want:?}, got {e:?}"),
                            }
                        }
                    }
                }
            }
            5 => {
                if let Some(rx) = &mut rx {
                    let want = m.recv();
                    match rx.try_recv_ref() {
                        Ok(r) => {
                            assert_eq!(Ok(r.to_vec()), want, "try_recv_ref");
                            drop(r);
                            m.pop();
                        }
                        Err(e) => assert_eq!(Err(e), want, "try_recv_ref"),
                    }
                }
            }
            6 => {
                if let Some(tx) = &tx {
                    let msg = fresh(len);
                    let got = tx.send_timeout(&msg, Duration::ZERO);
                    if len > max {
                        assert_eq!(got, Err(ByteSendError::TooLong(too_long(len))));
                    } else {
                        match (m.send(), got) {
                            (Room::Ok, Ok(())) => m.push(msg),
                            (Room::Full, Err(ByteSendError::Timeout))
                            | (Room::Disconnected, Err(ByteSendError::Disconnected)) => {}
                            (want, got) => panic!("send_timeout: model {want:?}, got {got:?}"),
                        }
                    }
                }
            }
            7 => {
                if let Some(rx) = &rx {
                    let want = m.recv().map_err(|e| match e {
                        TryRecvError::Empty => RecvTimeoutError::Timeout,
                        TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    });
                    let got = if input.u8() & 1 == 0 {
                        rx.recv_timeout(Duration::ZERO)
                    } else {
                        rx.recv_into_deadline(&mut buf, Instant::now())
                            .map(|n| buf[..n].to_vec())
                    };
                    assert_eq!(got, want, "recv_timeout(0)");
                    if got.is_ok() {
                        m.pop();
                    }
                }
            }
            8 => {
                // Blocking send, only when it cannot block.
                if let Some(tx) = &tx {
                    let msg = fresh(len);
                    if len > max {
                        assert_eq!(tx.send(&msg), Err(ByteSendError::TooLong(too_long(len))));
                    } else {
                        match m.send() {
                            Room::Ok => {
                                tx.send(&msg).expect("send with room");
                                m.push(msg);
                            }
                            Room::Disconnected => {
                                assert_eq!(tx.send(&msg), Err(ByteSendError::Disconnected))
                            }
                            Room::Full => {}
                        }
                    }
                }
            }
            9 => {
                if let Some(rx) = &rx {
                    match m.recv() {
                        Ok(v) => {
                            assert_eq!(rx.recv(), Ok(v), "recv");
                            m.pop();
                        }
                        Err(TryRecvError::Disconnected) => assert_eq!(rx.recv(), Err(RecvError)),
                        Err(TryRecvError::Empty) => {}
                    }
                }
            }
            10 => {
                if tx.take().is_some() {
                    m.tx = Side::Gone;
                }
            }
            11 => {
                let r = ByteSender::with_options(name, &open, 0);
                if tx.is_some() {
                    assert_role_taken(r, "sender");
                } else {
                    let t = r.expect("re-attach sender");
                    assert_eq!(t.max_len(), max);
                    tx = Some(t);
                    m.tx = Side::Attached;
                }
            }
            12 => {
                if rx.take().is_some() {
                    m.rx = Side::Gone;
                }
            }
            13 => {
                let r = ByteReceiver::with_options(name, &open, 0);
                if rx.is_some() {
                    assert_role_taken(r, "receiver");
                } else {
                    let r = r.expect("re-attach receiver");
                    assert_eq!(r.max_len(), max);
                    rx = Some(r);
                    m.rx = Side::Attached;
                }
            }
            14 => {
                if let Some(tx) = &tx {
                    assert_eq!(
                        tx.is_disconnected(),
                        m.rx == Side::Gone,
                        "tx.is_disconnected"
                    );
                }
                if let Some(rx) = &rx {
                    assert_eq!(
                        rx.is_disconnected(),
                        m.tx == Side::Gone,
                        "rx.is_disconnected"
                    );
                }
            }
            15 => {
                if input.u8() & 1 == 0 {
                    assert!(matches!(
                        Receiver::<u64>::with_options(name, &open),
                        Err(OpenError::TypeMismatch { .. })
                    ));
                } else {
                    assert!(matches!(
                        ByteSender::with_options(name, &open.clone().capacity(cap * 2), 0),
                        Err(OpenError::CapacityMismatch { .. })
                    ));
                }
            }
            _ => unreachable!(),
        }
        if let Some(tx) = &tx {
            check_handle!(tx, m);
            assert_eq!(tx.max_len(), max);
        }
        if let Some(rx) = &rx {
            check_handle!(rx, m);
            assert_eq!(rx.max_len(), max);
        }
    }
}
