//! Targets `mpmc_ops` and `mpmc_hostile`: the MPMC channel (`shmchan::mpmc`).
//!
//! [`ops`] drives up to four sender and four receiver handles of one `u64` channel
//! (clones of one attachment, or attachments of their own) in one thread and checks
//! every call against a `VecDeque` model, as the `ops` target does for SPSC: an MPMC
//! ring used from one thread is one FIFO queue whichever handle calls.
//!
//! [`hostile`] scribbles on the segment of an MPMC channel (claim words, positions,
//! the attach counters, the peer table, any byte) while two senders and two
//! receivers work, and checks that every call returns one of its documented results
//! at once (only zero timeouts are used, so a hang is a bug the fuzzer reports).

use super::hostile::{Peer, check_open_error};
use super::{Input, ShmGuard, off, peek_u64, poke};
use shmchan::mpmc::{Receiver, Sender};
use shmchan::{
    CreateMode, OpenError, Options, RecvError, RecvTimeoutError, SendError, SendTimeoutError,
    TryRecvError, TrySendError,
};
use std::collections::VecDeque;
use std::time::Duration;

/// At most this many operations per input.
const MAX_STEPS: usize = 4096;

/// Handles per role.
const HANDLES: usize = 4;

/// A handle and the attachment (peer-table entry) it shares with its clones.
struct Held<H> {
    h: H,
    att: u32,
}

/// The model: contents in order, capacity, and which attachments are live.
struct Model {
    q: VecDeque<u64>,
    cap: usize,
    max_peers: usize,
    ever_tx: bool,
    ever_rx: bool,
}

impl Model {
    fn live_tx(tx: &[Option<Held<Sender<u64>>>]) -> bool {
        tx.iter().any(Option::is_some)
    }

    fn live_rx(rx: &[Option<Held<Receiver<u64>>>]) -> bool {
        rx.iter().any(Option::is_some)
    }
}

/// Distinct attachments held by any handle.
fn attachments(tx: &[Option<Held<Sender<u64>>>], rx: &[Option<Held<Receiver<u64>>>]) -> usize {
    let mut ids: Vec<u32> = tx
        .iter()
        .flatten()
        .map(|h| h.att)
        .chain(rx.iter().flatten().map(|h| h.att))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids.len()
}

/// Runs one input of `mpmc_ops`.
///
/// # Input
///
/// | byte | meaning |
/// | --- | --- |
/// | 0 | bits 0-2: capacity log2 (mod 7); bit 3: a receiver creates (else a sender); bits 4-5: peer table of 2, 3, 4 or 8 entries; bit 6: create with `OpenOrCreate` (else `CreateExclusive`); bit 7: open the other role at once |
/// | rest | operations: one byte each (mod 16, see the match below), then a handle index byte and, for some, an argument byte |
pub fn ops(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let guard = ShmGuard::fresh("mpmc_ops");
    run_ops(cfg, &mut input, &guard.name);
    // Created with keep(true): the name outlives every handle, exactly once.
    shmchan::remove(&guard.name).expect("the kept name survives its handles");
}

fn run_ops(cfg: u8, input: &mut Input<'_>, name: &str) {
    let cap = 1usize << ((cfg & 7) % 7);
    let max_peers = [2u32, 3, 4, 8][(cfg >> 4) as usize & 3];
    let mode = if cfg & 0x40 == 0 {
        CreateMode::CreateExclusive
    } else {
        CreateMode::OpenOrCreate
    };
    let create = Options::new()
        .capacity(cap)
        .max_peers(max_peers)
        .mode(mode)
        .keep(true);
    let open = Options::new().init_timeout(Duration::ZERO);
    let mut m = Model {
        q: VecDeque::new(),
        cap,
        max_peers: max_peers as usize,
        ever_tx: false,
        ever_rx: false,
    };
    let mut tx: Vec<Option<Held<Sender<u64>>>> = (0..HANDLES).map(|_| None).collect();
    let mut rx: Vec<Option<Held<Receiver<u64>>>> = (0..HANDLES).map(|_| None).collect();
    let mut next_att = 0u32;
    let mut new_att = || {
        next_att += 1;
        next_att
    };
    if cfg & 8 == 0 {
        let h = Sender::with_options(name, &create).expect("create as sender");
        tx[0] = Some(Held { h, att: new_att() });
        m.ever_tx = true;
    } else {
        let h = Receiver::with_options(name, &create).expect("create as receiver");
        rx[0] = Some(Held { h, att: new_att() });
        m.ever_rx = true;
    }
    if cfg & 0x80 != 0 {
        if cfg & 8 == 0 {
            let h = Receiver::with_options(name, &open).expect("open receiver");
            rx[0] = Some(Held { h, att: new_att() });
            m.ever_rx = true;
        } else {
            let h = Sender::with_options(name, &open).expect("open sender");
            tx[0] = Some(Held { h, att: new_att() });
            m.ever_tx = true;
        }
    }
    let mut next: u64 = 0x5000;
    let mut fresh = || {
        next += 1;
        next
    };

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 16;
        let i = input.u8() as usize % HANDLES;
        // What a send and a receive must do now.
        let rx_gone = m.ever_rx && !Model::live_rx(&rx);
        let tx_gone = m.ever_tx && !Model::live_tx(&tx);
        let full = m.q.len() == m.cap;
        match op {
            0 => {
                if let Some(t) = &tx[i] {
                    let v = fresh();
                    match t.h.try_send(v) {
                        Ok(()) => {
                            assert!(!rx_gone && !full, "try_send succeeded: model says no");
                            m.q.push_back(v);
                        }
                        Err(TrySendError::Disconnected(b)) => assert!(rx_gone && b == v),
                        Err(TrySendError::Full(b)) => assert!(!rx_gone && full && b == v),
                    }
                }
            }
            1 => {
                if let Some(r) = &rx[i] {
                    match r.h.try_recv() {
                        Ok(v) => assert_eq!(Some(v), m.q.pop_front(), "try_recv order"),
                        Err(TryRecvError::Empty) => assert!(m.q.is_empty() && !tx_gone),
                        Err(TryRecvError::Disconnected) => assert!(m.q.is_empty() && tx_gone),
                    }
                }
            }
            2 => {
                if let Some(t) = &tx[i] {
                    let v = fresh();
                    match t.h.send_timeout(v, Duration::ZERO) {
                        Ok(()) => {
                            assert!(!rx_gone && !full, "send_timeout(0) succeeded");
                            m.q.push_back(v);
                        }
                        Err(SendTimeoutError::Disconnected(b)) => assert!(rx_gone && b == v),
                        Err(SendTimeoutError::Timeout(b)) => assert!(!rx_gone && full && b == v),
                    }
                }
            }
            3 => {
                if let Some(r) = &rx[i] {
                    match r.h.recv_timeout(Duration::ZERO) {
                        Ok(v) => assert_eq!(Some(v), m.q.pop_front(), "recv_timeout order"),
                        Err(RecvTimeoutError::Timeout) => assert!(m.q.is_empty() && !tx_gone),
                        Err(RecvTimeoutError::Disconnected) => {
                            assert!(m.q.is_empty() && tx_gone)
                        }
                    }
                }
            }
            4 => {
                // Blocking send, only when it returns at once.
                if let Some(t) = &tx[i] {
                    let v = fresh();
                    if rx_gone {
                        assert_eq!(t.h.send(v), Err(SendError::Disconnected(v)));
                    } else if !full {
                        t.h.send(v).expect("send with room");
                        m.q.push_back(v);
                    }
                }
            }
            5 => {
                if let Some(r) = &rx[i] {
                    if let Some(&v) = m.q.front() {
                        assert_eq!(r.h.recv(), Ok(v), "recv");
                        m.q.pop_front();
                    } else if tx_gone {
                        assert_eq!(r.h.recv(), Err(RecvError));
                    }
                }
            }
            6 => {
                // Clone handle `i` into slot `j` (dropping what was there).
                let j = input.u8() as usize % HANDLES;
                let c = tx[i].as_ref().map(|t| Held {
                    h: t.h.clone(),
                    att: t.att,
                });
                if c.is_some() {
                    tx[j] = c;
                }
            }
            7 => {
                let j = input.u8() as usize % HANDLES;
                let c = rx[i].as_ref().map(|r| Held {
                    h: r.h.clone(),
                    att: r.att,
                });
                if c.is_some() {
                    rx[j] = c;
                }
            }
            8 => tx[i] = None,
            9 => rx[i] = None,
            10 => {
                // A new attachment in slot `i`.
                tx[i] = None;
                let held = attachments(&tx, &rx);
                match Sender::<u64>::with_options(name, &open) {
                    Ok(h) => {
                        assert!(held < m.max_peers, "attach past a full peer table");
                        tx[i] = Some(Held { h, att: new_att() });
                        m.ever_tx = true;
                    }
                    Err(OpenError::TooManyPeers(n)) => {
                        assert_eq!(held, m.max_peers, "TooManyPeers with room");
                        assert_eq!(n as usize, m.max_peers);
                    }
                    Err(e) => panic!("attach a sender: {e:?}"),
                }
            }
            11 => {
                rx[i] = None;
                let held = attachments(&tx, &rx);
                match Receiver::<u64>::with_options(name, &open) {
                    Ok(h) => {
                        assert!(held < m.max_peers, "attach past a full peer table");
                        rx[i] = Some(Held { h, att: new_att() });
                        m.ever_rx = true;
                    }
                    Err(OpenError::TooManyPeers(n)) => {
                        assert_eq!(held, m.max_peers, "TooManyPeers with room");
                        assert_eq!(n as usize, m.max_peers);
                    }
                    Err(e) => panic!("attach a receiver: {e:?}"),
                }
            }
            12 => {
                let k = input.u8() as usize;
                if let Some(r) = &rx[i] {
                    let got: Vec<u64> = r.h.try_iter().take(k).collect();
                    assert_eq!(got.len(), k.min(m.q.len()), "try_iter().take({k})");
                    for v in got {
                        assert_eq!(Some(v), m.q.pop_front(), "try_iter order");
                    }
                }
            }
            13 => {
                for t in tx.iter().flatten() {
                    assert_eq!(t.h.is_disconnected(), rx_gone, "tx.is_disconnected");
                }
                for r in rx.iter().flatten() {
                    assert_eq!(r.h.is_disconnected(), tx_gone, "rx.is_disconnected");
                }
            }
            14 => match input.u8() % 4 {
                0 => assert!(matches!(
                    Receiver::<u32>::with_options(name, &open),
                    Err(OpenError::TypeMismatch { .. })
                )),
                1 => assert!(matches!(
                    shmchan::Receiver::<u64>::with_options(name, &open),
                    Err(OpenError::FlavorMismatch { .. })
                )),
                2 => assert!(matches!(
                    shmchan::Sender::<u64>::with_options(name, &open),
                    Err(OpenError::FlavorMismatch { .. })
                )),
                _ => assert!(matches!(
                    Sender::<u64>::with_options(name, &open.clone().capacity(cap * 2)),
                    Err(OpenError::CapacityMismatch { found, expected })
                        if found == cap as u64 && expected == cap as u64 * 2
                )),
            },
            _ => {
                // Blocking iteration ends only once every sender is gone.
                if tx_gone {
                    if let Some(r) = &rx[i] {
                        let got: Vec<u64> = r.h.iter().collect();
                        assert_eq!(got, Vec::from(std::mem::take(&mut m.q)), "iter()");
                    }
                }
            }
        }
        for t in tx.iter().flatten() {
            check_handle(&t.h, &m);
        }
        for r in rx.iter().flatten() {
            check_handle(&r.h, &m);
        }
    }
}

/// The occupancy calls of any handle, against the model.
trait Occupancy {
    fn occupancy(&self) -> (usize, bool, bool, usize, bool);
}

impl Occupancy for Sender<u64> {
    fn occupancy(&self) -> (usize, bool, bool, usize, bool) {
        (
            self.len(),
            self.is_empty(),
            self.is_full(),
            self.capacity(),
            self.owns_name(),
        )
    }
}

impl Occupancy for Receiver<u64> {
    fn occupancy(&self) -> (usize, bool, bool, usize, bool) {
        (
            self.len(),
            self.is_empty(),
            self.is_full(),
            self.capacity(),
            self.owns_name(),
        )
    }
}

fn check_handle(h: &impl Occupancy, m: &Model) {
    let (len, empty, full, cap, owns) = h.occupancy();
    assert_eq!(cap, m.cap, "capacity()");
    assert_eq!(len, m.q.len(), "len()");
    assert_eq!(empty, m.q.is_empty(), "is_empty()");
    assert_eq!(full, m.q.len() == m.cap, "is_full()");
    // Created with keep(true): no handle removes the name.
    assert!(!owns, "owns_name()");
}

/// Claim-word fields (see `src/mpmc/ring.rs`): state in bits 63..61, lap in 60..21,
/// peer index in 20..13, generation in 12..0.
fn claim_word(state: u64, lap: u64, peer: u8, generation: u16) -> u64 {
    (state & 7) << 61
        | (lap & ((1 << 40) - 1)) << 21
        | (peer as u64) << 13
        | (generation as u64 & 0x1FFF)
}

/// One write aimed at what the MPMC ring reads.
fn scribble_mpmc(peer: &Peer, input: &mut Input<'_>) {
    let f = &peer.file;
    let len = peer.len;
    let w64 = |offset: u64, v: u64| poke(f, len, offset, &v.to_le_bytes());
    let shift = peer.cap.trailing_zeros();
    match input.u8() % 6 {
        0 => {
            // A plausible claim word at the slot of a position near tail or head:
            // any state, the lap of that position give or take one, a peer index
            // in the table (ours included) or not, any generation.
            let base = if input.u8() & 1 == 0 {
                off::TAIL
            } else {
                off::HEAD
            };
            let pos = peek_u64(f, base).wrapping_add(input.u8() as i8 as u64);
            let lap = (pos >> shift).wrapping_add(input.u8() as i8 as u64 % 3);
            let state = input.u8() as u64;
            let who = input.u8();
            let generation = input.u16();
            w64(peer.slot(pos), claim_word(state, lap, who, generation));
        }
        1 => {
            let idx = input.u16() as u64;
            w64(peer.slot(idx), input.u64());
        }
        2 => {
            // Copy one slot's word into another (a claim seen twice).
            let from = peek_u64(f, peer.slot(input.u16() as u64));
            w64(peer.slot(input.u16() as u64), from);
        }
        3 => {
            // The attach counters and live-role hints.
            let at = off::ATTACH + 4 * (input.u8() as u64 % 4);
            poke(f, len, at, &input.u32().to_le_bytes());
        }
        4 => {
            // A peer entry of the ones in use: state or stamp.
            let at = off::PEERS + 8 * (input.u8() as u64 % 16);
            w64(at, input.u64());
        }
        _ => {
            let base = if input.u8() & 1 == 0 {
                off::TAIL
            } else {
                off::HEAD
            };
            let v = peek_u64(f, base).wrapping_add(input.u8() as i8 as u64);
            w64(base, v);
        }
    }
}

/// Runs one input of `mpmc_hostile`.
///
/// # Input
///
/// | byte | meaning |
/// | --- | --- |
/// | 0 | bits 0-2: capacity log2 (mod 7) |
/// | rest | steps: one byte (mod 12, see the match below) and its arguments |
pub fn hostile(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let cap = 1usize << ((cfg & 7) % 7);
    let guard = ShmGuard::fresh("mpmc_hostile");
    let create = Options::new()
        .capacity(cap)
        .max_peers(16)
        .mode(CreateMode::CreateExclusive)
        .keep(true)
        .liveness_interval(Duration::from_micros(100));
    let open = Options::new()
        .init_timeout(Duration::ZERO)
        .liveness_interval(Duration::from_micros(100));
    let mut tx: [Option<Sender<u64>>; 2] = [
        Some(Sender::with_options(&guard.name, &create).expect("create")),
        None,
    ];
    let mut rx: [Option<Receiver<u64>>; 2] = [
        Some(Receiver::with_options(&guard.name, &open).expect("open")),
        None,
    ];
    let peer = Peer::new(&guard);
    let mut next = 0u64;
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 12;
        let i = input.u8() as usize & 1;
        match op {
            0..=2 => scribble_mpmc(&peer, &mut input),
            3 => peer.scribble(&mut input),
            4 => {
                next += 1;
                if let Some(t) = &tx[i] {
                    match t.try_send(next) {
                        Ok(()) => {}
                        Err(TrySendError::Full(v) | TrySendError::Disconnected(v)) => {
                            assert_eq!(v, next)
                        }
                    }
                }
            }
            5 => {
                next += 1;
                if let Some(t) = &tx[i] {
                    match t.send_timeout(next, Duration::ZERO) {
                        Ok(()) => {}
                        Err(SendTimeoutError::Timeout(v) | SendTimeoutError::Disconnected(v)) => {
                            assert_eq!(v, next)
                        }
                    }
                }
            }
            6 => {
                if let Some(r) = &rx[i] {
                    match r.try_recv() {
                        Ok(_) | Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                    }
                }
            }
            7 => {
                if let Some(r) = &rx[i] {
                    match r.recv_timeout(Duration::ZERO) {
                        Ok(_) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                        }
                    }
                }
            }
            8 => {
                let k = input.u8() as usize;
                if let Some(r) = &rx[i] {
                    assert!(r.try_iter().take(k).count() <= k);
                }
            }
            9 => {
                tx[i] = None;
                match Sender::<u64>::with_options(&guard.name, &open) {
                    Ok(t) => tx[i] = Some(t),
                    Err(e) => check_open_error(&e),
                }
            }
            10 => {
                rx[i] = None;
                match Receiver::<u64>::with_options(&guard.name, &open) {
                    Ok(r) => rx[i] = Some(r),
                    Err(e) => check_open_error(&e),
                }
            }
            _ => match input.u8() % 4 {
                0 => tx[i] = None,
                1 => rx[i] = None,
                // A pause longer than the liveness interval, so the next blocked call
                // probes the peer table and the claims in its way.
                2 => std::thread::sleep(Duration::from_micros(150)),
                _ => {
                    tx.iter().flatten().for_each(|t| {
                        let _ = t.is_disconnected();
                    });
                    rx.iter().flatten().for_each(|r| {
                        let _ = r.is_disconnected();
                    });
                }
            },
        }
        for t in tx.iter().flatten() {
            assert!(t.len() <= t.capacity());
            assert_eq!(t.is_full(), t.len() == t.capacity());
        }
        for r in rx.iter().flatten() {
            assert!(r.len() <= r.capacity());
            assert_eq!(r.is_full(), r.len() == r.capacity());
        }
    }
}
