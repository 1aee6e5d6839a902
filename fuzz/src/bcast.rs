//! Targets `bcast_ops` and `bcast_hostile`: the broadcast channel
//! (`shmchan::broadcast`).
//!
//! [`ops`] drives one publisher and up to five subscriber handles of a `u64` channel
//! (1 to 4 subscriber entries, so attaches past a full table are tried) in one thread
//! and checks every call against a model of the ring: the messages by position, the
//! publisher's position, each subscriber's cursor and misses, and the publisher's
//! floor (the lossless rescan's slowest cursor, where a `Start::Oldest` joiner starts).
//! Used from one thread, the library's answers are fully determined:
//!
//! - a receive at cursor `c` with the publisher at `t` gets message `c` if
//!   `t - capacity <= c < t`; under `Overwrite`, `Lagged(t - capacity - c)` if
//!   `c < t - capacity`, and the next receive gets message `t - capacity`; at `c == t`
//!   `Empty`, or `Disconnected` once the publisher was attached and left;
//! - a lossless send is `Full` exactly when an attached subscriber is `capacity`
//!   behind; an overwrite send never fails;
//! - a subscriber attaches at the lowest free cursor, `TooManyPeers` exactly when all
//!   are held; `Start::Next` starts at `t`, `Start::Oldest` at `t - capacity`
//!   (overwrite) or at the larger of that and the floor (lossless);
//! - a second publisher is `RoleTaken`; opens with another policy, type, flavor or
//!   capacity are refused with the matching error and change nothing;
//! - `len()`, `position()`, `is_disconnected()`, `subscriber_count()` and
//!   `shmchan::inspect` (cursor, position, lag, missed, liveness) agree.
//!
//! [`hostile`] interleaves the same calls with a hostile peer's writes into the object
//! (`pwrite` to `/dev/shm/<name>`): the tail hint and floor lines, the cursor lines
//! (position, owner, missed), slot sequence words (plausible ones: written or
//! published for a position near the tail, a lap off), payloads, peer table entries,
//! any byte. Every call must return at once (only zero timeouts) with a documented
//! result; a subscriber's position moves by exactly what it was told (one per
//! message, `n >= 1` for `Lagged(n)`); a publisher that attached to an overwrite
//! channel never reports `Full`; `len() <= capacity()`.

use super::hostile::{Peer, check_open_error};
use super::{Input, ShmGuard, off, peek_u32, peek_u64, poke};
use shmchan::broadcast::{
    Policy, Publisher, RecvError, RecvTimeoutError, Start, Subscriber, TryRecvError,
};
use shmchan::{CreateMode, OpenError, Options, SendError, SendTimeoutError, TrySendError};
use std::time::Duration;

/// At most this many operations per input.
const MAX_STEPS: usize = 4096;

/// Subscriber handle slots: one more than the most subscriber entries a channel has.
const SLOTS: usize = 5;

/// Offset of the broadcast config's `policy` field.
const POLICY: u64 = 96;
/// Bytes of a cursor line; line `i` is at `off::SLOTS + CURSOR_LINE * i`.
const CURSOR_LINE: u64 = 128;

/// Offset of slot 0 in a broadcast segment of `subs` subscribers.
pub fn slots_offset(subs: u64) -> u64 {
    let lines = subs * CURSOR_LINE;
    off::SLOTS + lines.div_ceil(4096) * 4096
}

/// Sequence word of a slot while position `p` is written (see `src/broadcast/ring.rs`).
fn writing(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(1)
}

/// Sequence word of a slot once position `p` is published.
fn published(p: u64) -> u64 {
    p.wrapping_mul(2).wrapping_add(2)
}

/// What the model knows of the publisher's peer entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// Never attached: subscribers wait, never `Disconnected`.
    Never,
    Attached,
    /// Attached once and left: subscribers that drained get `Disconnected`.
    Gone,
}

/// One outcome of a receive, whichever call made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Got {
    Msg(u64),
    Lagged(u64),
    /// `Empty` (`Timeout` for timed calls).
    Nothing,
    Disconnected,
}

impl From<Result<u64, TryRecvError>> for Got {
    fn from(r: Result<u64, TryRecvError>) -> Got {
        match r {
            Ok(v) => Got::Msg(v),
            Err(TryRecvError::Lagged(n)) => Got::Lagged(n),
            Err(TryRecvError::Empty) => Got::Nothing,
            Err(TryRecvError::Disconnected) => Got::Disconnected,
        }
    }
}

impl From<Result<u64, RecvTimeoutError>> for Got {
    fn from(r: Result<u64, RecvTimeoutError>) -> Got {
        match r {
            Ok(v) => Got::Msg(v),
            Err(RecvTimeoutError::Lagged(n)) => Got::Lagged(n),
            Err(RecvTimeoutError::Timeout) => Got::Nothing,
            Err(RecvTimeoutError::Disconnected) => Got::Disconnected,
        }
    }
}

impl From<Result<u64, RecvError>> for Got {
    fn from(r: Result<u64, RecvError>) -> Got {
        match r {
            Ok(v) => Got::Msg(v),
            Err(RecvError::Lagged(n)) => Got::Lagged(n),
            Err(RecvError::Disconnected) => Got::Disconnected,
        }
    }
}

impl From<Result<u64, u64>> for Got {
    fn from(r: Result<u64, u64>) -> Got {
        match r {
            Ok(v) => Got::Msg(v),
            Err(n) => Got::Lagged(n),
        }
    }
}

/// A subscriber handle and its model: the cursor line it holds, its position and
/// what it was told it missed.
struct Sub {
    h: Subscriber<u64>,
    cursor: usize,
    pos: u64,
    missed: u64,
}

/// The model of the channel.
struct Model {
    cap: u64,
    subs: usize,
    policy: Policy,
    /// Every message published, by position.
    sent: Vec<u64>,
    publisher: Side,
    /// The header's floor line: the slowest cursor at the publisher's last rescan.
    floor: u64,
    /// The publisher's cached slowest cursor: it rescans (and stores the floor) when
    /// its position is a whole ring past it; reset to `t - capacity` on attach.
    cache: u64,
    /// Values handed to sends, all distinct.
    next_value: u64,
}

impl Model {
    fn t(&self) -> u64 {
        self.sent.len() as u64
    }

    fn lossless(&self) -> bool {
        self.policy == Policy::Lossless
    }

    fn value(&mut self) -> u64 {
        self.next_value += 1;
        self.next_value.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    /// What the next receive of a subscriber at `pos` returns.
    fn expect(&self, pos: u64) -> Got {
        let t = self.t();
        assert!(pos <= t, "model: cursor {pos} past the tail {t}");
        if t - pos > self.cap {
            assert!(!self.lossless(), "model: lossless subscriber lapped");
            Got::Lagged(t - self.cap - pos)
        } else if pos < t {
            Got::Msg(self.sent[pos as usize])
        } else if self.publisher == Side::Gone {
            Got::Disconnected
        } else {
            Got::Nothing
        }
    }

    /// Checks a receive's outcome against the model and moves the subscriber on.
    fn received(&mut self, s: &mut Sub, got: Got, what: &str) {
        let want = self.expect(s.pos);
        assert_eq!(
            got,
            want,
            "{what}: subscriber at cursor {} position {} (tail {}, {:?})",
            s.cursor,
            s.pos,
            self.t(),
            self.policy
        );
        match got {
            Got::Msg(_) => s.pos += 1,
            Got::Lagged(n) => {
                s.pos += n;
                s.missed += n;
            }
            Got::Nothing | Got::Disconnected => {}
        }
    }

    /// Whether a send may publish now, as the publisher decides it (rescanning, and
    /// storing the floor, when its cached limit says no); checked against the
    /// specification: a lossless send is refused exactly when an attached subscriber
    /// is a whole ring behind.
    fn room(&mut self, subs: &[Option<Sub>]) -> bool {
        if !self.lossless() {
            return true;
        }
        let t = self.t();
        if t.wrapping_sub(self.cache) >= self.cap {
            let m = subs.iter().flatten().map(|s| s.pos).fold(t, u64::min);
            self.floor = m;
            self.cache = m;
        }
        let room = t.wrapping_sub(self.cache) < self.cap;
        let spec = !subs.iter().flatten().any(|s| t - s.pos >= self.cap);
        assert_eq!(room, spec, "model: cached limit disagrees with the cursors");
        room
    }

    /// Where a subscriber attaching now starts.
    fn start(&self, start: Start) -> u64 {
        let t = self.t();
        let oldest = if self.lossless() {
            self.floor.max(t.saturating_sub(self.cap))
        } else {
            t.saturating_sub(self.cap)
        };
        match start {
            Start::Oldest => oldest,
            _ => t,
        }
    }

    /// The lowest cursor no attached subscriber holds.
    fn free_cursor(&self, subs: &[Option<Sub>]) -> Option<usize> {
        (0..self.subs).find(|&c| !subs.iter().flatten().any(|s| s.cursor == c))
    }
}

fn other(p: Policy) -> Policy {
    if p == Policy::Lossless {
        Policy::Overwrite
    } else {
        Policy::Lossless
    }
}

/// Runs one input of `bcast_ops`.
///
/// # Input
///
/// | byte | meaning |
/// | --- | --- |
/// | 0 | bits 0-2: capacity log2 (mod 7); bits 3-4: subscribers - 1; bit 5: overwrite (else lossless); bit 6: a subscriber creates (else the publisher); bit 7: create with `OpenOrCreate` (else `CreateExclusive`) |
/// | 1 | bit 0: open the other role at once; bit 1: the creating subscriber starts at the oldest |
/// | rest | operations: one byte each (mod 16, see the match below), then a handle index byte and, for some, an argument byte |
pub fn ops(data: &[u8]) {
    let mut input = Input::new(data);
    let guard = ShmGuard::fresh("bcast_ops");
    run_ops(&mut input, &guard.name);
    // Created with keep(true): the name outlives every handle, exactly once.
    shmchan::remove(&guard.name).expect("the kept name survives its handles");
}

fn run_ops(input: &mut Input<'_>, name: &str) {
    let cfg = input.u8();
    let cfg2 = input.u8();
    let cap = 1u64 << ((cfg & 7) % 7);
    let nsubs = 1 + ((cfg >> 3) & 3) as usize;
    let policy = if cfg & 0x20 == 0 {
        Policy::Lossless
    } else {
        Policy::Overwrite
    };
    let mode = if cfg & 0x80 == 0 {
        CreateMode::CreateExclusive
    } else {
        CreateMode::OpenOrCreate
    };
    let create = Options::new()
        .capacity(cap as usize)
        .subscribers(nsubs as u32)
        .policy(policy)
        .mode(mode)
        .keep(true);
    let open = Options::new().init_timeout(Duration::ZERO);
    let mut m = Model {
        cap,
        subs: nsubs,
        policy,
        sent: Vec::new(),
        publisher: Side::Never,
        floor: 0,
        cache: 0u64.wrapping_sub(cap),
        next_value: 0,
    };
    let mut publisher: Option<Publisher<u64>> = None;
    let mut subs: Vec<Option<Sub>> = (0..SLOTS).map(|_| None).collect();

    let sub_creates = cfg & 0x40 != 0;
    let open_other = cfg2 & 1 != 0;
    let attach_publisher =
        |opts: &Options| Publisher::with_options(name, opts).expect("attach the publisher");
    if !sub_creates {
        publisher = Some(attach_publisher(&create));
        m.publisher = Side::Attached;
    }
    if sub_creates || open_other {
        let start = if cfg2 & 2 != 0 {
            Start::Oldest
        } else {
            Start::Next
        };
        let opts = if sub_creates { &create } else { &open };
        let h = Subscriber::with_options(name, &opts.clone().start(start))
            .expect("attach a subscriber");
        assert_eq!(h.position(), 0);
        subs[0] = Some(Sub {
            h,
            cursor: 0,
            pos: 0,
            missed: 0,
        });
    }
    if sub_creates && open_other {
        publisher = Some(attach_publisher(&open));
        m.publisher = Side::Attached;
    }

    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 16;
        let i = input.u8() as usize % SLOTS;
        match op {
            0..=2 => {
                let Some(p) = &publisher else { continue };
                let v = m.value();
                let room = m.room(&subs);
                match op {
                    0 => match p.try_send(v) {
                        Ok(()) => assert!(room, "try_send published with no room"),
                        Err(TrySendError::Full(b)) => assert!(!room && b == v, "Full"),
                        Err(e) => panic!("try_send: {e:?}"),
                    },
                    1 => match p.send_timeout(v, Duration::ZERO) {
                        Ok(()) => assert!(room, "send_timeout(0) published with no room"),
                        Err(SendTimeoutError::Timeout(b)) => assert!(!room && b == v, "Timeout"),
                        Err(e) => panic!("send_timeout: {e:?}"),
                    },
                    _ if room => {
                        // Blocking, only when it cannot block.
                        if let Err(SendError::Disconnected(_)) = p.send(v) {
                            panic!("send: Disconnected");
                        }
                    }
                    // Else as a try_send (which rescans as the model did).
                    _ => match p.try_send(v) {
                        Err(TrySendError::Full(b)) => assert_eq!(b, v, "Full"),
                        r => panic!("try_send with no room: {r:?}"),
                    },
                }
                if room {
                    m.sent.push(v);
                }
            }
            3 => {
                if let Some(s) = &mut subs[i] {
                    let got = s.h.try_recv().into();
                    m.received(s, got, "try_recv");
                }
            }
            4 => {
                if let Some(s) = &mut subs[i] {
                    let got = s.h.recv_timeout(Duration::ZERO).into();
                    m.received(s, got, "recv_timeout(0)");
                }
            }
            5 => {
                let k = input.u8() as usize;
                if let Some(s) = &mut subs[i] {
                    let got: Vec<Result<u64, u64>> = s.h.try_iter().take(k).collect();
                    for g in &got {
                        m.received(s, Got::from(*g), "try_iter");
                    }
                    // It stopped early only where a try_recv would have.
                    if got.len() < k {
                        assert!(
                            matches!(m.expect(s.pos), Got::Nothing | Got::Disconnected),
                            "try_iter stopped early at {}",
                            s.pos
                        );
                    }
                }
            }
            6 => {
                // Blocking receive, only when it returns at once.
                if let Some(s) = &mut subs[i] {
                    if m.expect(s.pos) != Got::Nothing {
                        let got = s.h.recv().into();
                        m.received(s, got, "recv");
                    }
                }
            }
            7 => {
                // The blocking iterator ends only once the publisher is gone.
                if m.publisher == Side::Gone {
                    if let Some(s) = &mut subs[i] {
                        let got: Vec<Result<u64, u64>> = s.h.iter().collect();
                        for g in &got {
                            m.received(s, Got::from(*g), "iter");
                        }
                        assert_eq!(m.expect(s.pos), Got::Disconnected, "iter ended early");
                    }
                }
            }
            8 => {
                // A new subscriber in slot `i` (dropping what was there).
                let arg = input.u8();
                subs[i] = None;
                let start = if arg & 1 == 0 {
                    Start::Next
                } else {
                    Start::Oldest
                };
                let mut opts = open.clone().start(start);
                if arg & 2 != 0 {
                    opts = opts.policy(policy);
                }
                if arg & 4 != 0 {
                    opts = opts.capacity(cap as usize);
                }
                let free = m.free_cursor(&subs);
                match Subscriber::<u64>::with_options(name, &opts) {
                    Ok(h) => {
                        let cursor = free.expect("a subscriber attached past a full table");
                        let pos = m.start(start);
                        assert_eq!(h.position(), pos, "start {start:?} (floor {})", m.floor);
                        subs[i] = Some(Sub {
                            h,
                            cursor,
                            pos,
                            missed: 0,
                        });
                    }
                    Err(OpenError::TooManyPeers(n)) => {
                        assert!(free.is_none(), "TooManyPeers with cursor {free:?} free");
                        assert_eq!(n as usize, nsubs + 1, "TooManyPeers({n})");
                    }
                    Err(e) => panic!("attach a subscriber: {e:?}"),
                }
            }
            9 => subs[i] = None,
            10 => {
                if publisher.take().is_some() {
                    m.publisher = Side::Gone;
                }
            }
            11 => {
                let arg = input.u8();
                let opts = if arg & 1 != 0 {
                    open.clone().policy(policy)
                } else {
                    open.clone()
                };
                match Publisher::<u64>::with_options(name, &opts) {
                    Ok(p) => {
                        assert!(publisher.is_none(), "a second publisher attached");
                        assert_eq!(p.position(), m.t(), "re-attached publisher's position");
                        publisher = Some(p);
                        m.publisher = Side::Attached;
                        m.cache = m.t().wrapping_sub(cap);
                    }
                    Err(OpenError::RoleTaken { role, .. }) => {
                        assert!(publisher.is_some(), "RoleTaken with no publisher");
                        assert_eq!(role, "publisher");
                    }
                    Err(e) => panic!("attach the publisher: {e:?}"),
                }
            }
            12 => mismatched_open(name, &open, input.u8(), policy, cap),
            13 => check_inspect(name, &m, publisher.is_some(), &subs),
            14 => {
                // A burst of sends (laps subscribers quickly).
                let k = input.u8() as u64 % (2 * cap + 2);
                if let Some(p) = &publisher {
                    for _ in 0..k {
                        let v = m.value();
                        let room = m.room(&subs);
                        match p.try_send(v) {
                            Ok(()) => {
                                assert!(room, "try_send published with no room");
                                m.sent.push(v);
                            }
                            Err(TrySendError::Full(b)) => {
                                assert!(!room && b == v, "Full");
                                break;
                            }
                            Err(e) => panic!("try_send: {e:?}"),
                        }
                    }
                }
            }
            _ => {
                // Every subscriber drains what is there.
                for s in subs.iter_mut().flatten() {
                    loop {
                        let got = s.h.try_recv().into();
                        m.received(s, got, "drain");
                        if matches!(got, Got::Nothing | Got::Disconnected) {
                            break;
                        }
                    }
                }
            }
        }
        check_handles(&m, publisher.as_ref(), &subs);
    }
}

/// Opens that must be refused, whatever the state; none may take an entry.
fn mismatched_open(name: &str, open: &Options, arg: u8, policy: Policy, cap: u64) {
    let r: Result<(), OpenError> = match arg % 9 {
        0 => Subscriber::<u32>::with_options(name, open).map(drop),
        1 => Publisher::<i64>::with_options(name, open).map(drop),
        2 => Subscriber::<[u8; 8]>::with_options(name, open).map(drop),
        3 => shmchan::Receiver::<u64>::with_options(name, open).map(drop),
        4 => shmchan::mpmc::Sender::<u64>::with_options(name, open).map(drop),
        5 => Subscriber::<u64>::with_options(name, &open.clone().policy(other(policy))).map(drop),
        6 => Publisher::<u64>::with_options(name, &open.clone().policy(other(policy))).map(drop),
        7 => Subscriber::<u64>::with_options(name, &open.clone().capacity(cap as usize * 2))
            .map(drop),
        _ => Publisher::<u64>::with_options(
            name,
            &open
                .clone()
                .capacity(cap as usize)
                .mode(CreateMode::CreateExclusive),
        )
        .map(drop),
    };
    let e = r.expect_err("a mismatched open succeeded");
    let ok = match arg % 9 {
        0..=2 => matches!(e, OpenError::TypeMismatch { .. }),
        3 | 4 => matches!(
            e,
            OpenError::FlavorMismatch {
                found: "broadcast",
                ..
            }
        ),
        5 | 6 => matches!(
            e,
            OpenError::PolicyMismatch { found, expected }
                if found == policy.name() && expected == other(policy).name()
        ),
        7 => matches!(
            e,
            OpenError::CapacityMismatch { found, expected } if found == cap && expected == cap * 2
        ),
        _ => matches!(e, OpenError::AlreadyExists(_)),
    };
    assert!(ok, "mismatched open {}: {e:?}", arg % 9);
}

/// What `shmchan::inspect` says, against the model.
fn check_inspect(name: &str, m: &Model, publisher: bool, subs: &[Option<Sub>]) {
    let info = shmchan::inspect(name).expect("inspect");
    let t = m.t();
    assert_eq!(info.flavor, "broadcast");
    assert_eq!(info.policy, m.policy.name());
    assert_eq!(info.capacity, m.cap);
    assert_eq!(info.tail, t, "inspect: tail");
    let mut want: Vec<&Sub> = subs.iter().flatten().collect();
    want.sort_by_key(|s| s.cursor);
    assert_eq!(info.subscribers.len(), want.len(), "inspect: subscribers");
    for (got, s) in info.subscribers.iter().zip(&want) {
        // (Bug found by this target: the line kept the misses of the subscribers
        // that held it before; `missed` is now this subscriber's own.)
        assert_eq!(
            (got.cursor, got.position, got.lag, got.missed, got.alive),
            (s.cursor, s.pos, t - s.pos, s.missed, true),
            "inspect: cursor {} (cursor, position, lag, missed, alive)",
            s.cursor
        );
    }
    let head = want.iter().map(|s| s.pos).fold(t, u64::min);
    assert_eq!(info.head, head, "inspect: head");
    let mut peers: Vec<(usize, &str)> = want.iter().map(|s| (s.cursor + 1, "subscriber")).collect();
    if publisher {
        peers.insert(0, (0, "publisher"));
    }
    let got: Vec<(usize, &str)> = info.peers.iter().map(|p| (p.index, p.role)).collect();
    assert_eq!(got, peers, "inspect: peers");
    assert!(
        info.peers.iter().all(|p| p.alive),
        "inspect: a peer not alive"
    );
}

/// The state every handle reports, against the model.
fn check_handles(m: &Model, publisher: Option<&Publisher<u64>>, subs: &[Option<Sub>]) {
    let t = m.t();
    let attached = subs.iter().flatten().count();
    if let Some(p) = publisher {
        assert_eq!(p.position(), t, "publisher position()");
        assert_eq!(p.capacity() as u64, m.cap);
        assert_eq!(p.policy(), m.policy);
        assert_eq!(p.max_subscribers(), m.subs);
        assert_eq!(p.subscriber_count(), attached, "subscriber_count()");
        assert!(!p.owns_name());
    }
    for s in subs.iter().flatten() {
        let len = (t - s.pos).min(m.cap) as usize;
        assert_eq!(s.h.position(), s.pos, "subscriber position()");
        assert_eq!(s.h.len(), len, "subscriber len()");
        assert_eq!(s.h.is_empty(), len == 0, "subscriber is_empty()");
        assert_eq!(s.h.capacity() as u64, m.cap);
        assert_eq!(
            s.h.is_disconnected(),
            m.publisher == Side::Gone,
            "is_disconnected()"
        );
        assert!(!s.h.owns_name());
    }
}

/// The hostile peer's view of a broadcast segment.
struct Geo {
    subs: u64,
    cap: u64,
    slots: u64,
    slot_size: u64,
}

impl Geo {
    fn slot(&self, pos: u64) -> u64 {
        self.slots + (pos % self.cap) * self.slot_size
    }

    fn cursor(&self, i: u64) -> u64 {
        off::SLOTS + CURSOR_LINE * i
    }
}

/// One write aimed at what the broadcast ring reads.
fn scribble_bcast(peer: &Peer, g: &Geo, input: &mut Input<'_>) {
    let f = &peer.file;
    let len = peer.len;
    let w64 = |offset: u64, v: u64| poke(f, len, offset, &v.to_le_bytes());
    // A position near a live one: the tail hint, the floor, or a cursor.
    let near = |input: &mut Input<'_>| {
        let base = match input.u8() % 3 {
            0 => peek_u64(f, off::TAIL),
            1 => peek_u64(f, off::HEAD),
            _ => peek_u64(f, g.cursor(input.u8() as u64 % g.subs)),
        };
        base.wrapping_add(input.u8() as i8 as u64)
    };
    match input.u8() % 8 {
        0 | 1 => {
            // The tail hint or the floor: any value, or one near a live position.
            let at = if input.u8() & 1 == 0 {
                off::TAIL
            } else {
                off::HEAD
            };
            let v = if input.u8() & 1 == 0 {
                input.u64()
            } else {
                near(input)
            };
            w64(at, v);
        }
        2 => {
            // A cursor line (one past the last lands in the padding): its position,
            // its owner (nobody, a small generation, any) or its miss count.
            let line = g.cursor(input.u8() as u64 % (g.subs + 1));
            match input.u8() % 3 {
                0 => {
                    let v = if input.u8() & 1 == 0 {
                        input.u64()
                    } else {
                        near(input)
                    };
                    w64(line, v);
                }
                1 => {
                    let v = match input.u8() % 3 {
                        0 => 0,
                        1 => input.u8() as u64,
                        _ => input.u64(),
                    };
                    w64(line + 8, v);
                }
                _ => w64(line + 16, input.u64()),
            }
        }
        3 => {
            // A plausible sequence word for a position near a live one, a lap off
            // or not: being written, published, empty, or anything.
            let pos = near(input);
            let lap = match input.u8() % 3 {
                0 => pos,
                1 => pos.wrapping_add(g.cap),
                _ => pos.wrapping_sub(g.cap),
            };
            let v = match input.u8() % 4 {
                0 => writing(lap),
                1 => published(lap),
                2 => 0,
                _ => input.u64(),
            };
            w64(g.slot(pos), v);
        }
        4 => {
            // A payload word.
            let pos = near(input);
            let w = 1 + input.u8() as u64 % (g.slot_size / 8).max(1);
            w64(g.slot(pos) + 8 * w, input.u64());
        }
        5 => {
            // A peer entry in use: nobody, vacated, a holder of any generation and
            // role, anything; or its stamp.
            let at = off::PEERS + 16 * (input.u8() as u64 % (g.subs + 1));
            match input.u8() % 5 {
                0 => w64(at, 0),
                1 => w64(at, 1),
                2 => w64(
                    at,
                    (input.u16() as u64) << 32 | (input.u8() as u64 & 1) << 30,
                ),
                3 => w64(at + 8, input.u64()),
                _ => w64(at, input.u64()),
            }
        }
        6 => {
            // One slot's sequence word copied into another.
            let from = peek_u64(f, g.slot(near(input)));
            w64(g.slot(near(input)), from);
        }
        _ => {
            // A forged run of published slots from a position near a live one.
            let pos = near(input);
            let k = input.u8() as u64 % (g.cap + 2);
            for j in 0..k {
                let p = pos.wrapping_add(j);
                w64(g.slot(p), published(p));
            }
        }
    }
}

/// Checks a receive under attack: a documented result, and the position moved by
/// exactly what it reported.
fn check_hostile_recv(before: u64, after: u64, got: Got) {
    let moved = after.wrapping_sub(before);
    match got {
        Got::Msg(_) => assert_eq!(moved, 1, "a message moved the cursor by {moved}"),
        Got::Lagged(n) => {
            assert!(n >= 1, "Lagged(0)");
            assert_eq!(moved, n, "Lagged({n}) moved the cursor by {moved}");
        }
        Got::Nothing | Got::Disconnected => assert_eq!(moved, 0, "no message moved the cursor"),
    }
}

/// Runs one input of `bcast_hostile`.
///
/// # Input
///
/// | byte | meaning |
/// | --- | --- |
/// | 0 | bits 0-2: capacity log2 (mod 7); bits 3-4: subscribers - 1; bit 5: overwrite (else lossless) |
/// | rest | steps: one byte (mod 16, see the match below), a handle index byte, and their arguments |
pub fn hostile(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let cap = 1u64 << ((cfg & 7) % 7);
    let nsubs = 1 + ((cfg >> 3) & 3) as u64;
    let policy = if cfg & 0x20 == 0 {
        Policy::Lossless
    } else {
        Policy::Overwrite
    };
    let guard = ShmGuard::fresh("bcast_hostile");
    let live = Duration::from_micros(100);
    let create = Options::new()
        .capacity(cap as usize)
        .subscribers(nsubs as u32)
        .policy(policy)
        .mode(CreateMode::CreateExclusive)
        .keep(true)
        .liveness_interval(live);
    let open = Options::new()
        .init_timeout(Duration::ZERO)
        .liveness_interval(live);
    let p = Publisher::<u64>::with_options(&guard.name, &create).expect("create");
    // The policy each publisher attached with (a hostile write may change the
    // header's before the next attach).
    let mut publisher: Option<(Publisher<u64>, Policy)> = Some((p, policy));
    let mut subs: Vec<Option<Subscriber<u64>>> = (0..SLOTS).map(|_| None).collect();
    subs[0] = Some(Subscriber::with_options(&guard.name, &open).expect("subscribe"));
    let peer = Peer::new(&guard);
    let g = Geo {
        subs: nsubs,
        cap,
        slots: slots_offset(nsubs),
        slot_size: peek_u64(&peer.file, off::SLOT_SIZE).clamp(16, 4096),
    };
    let mut next = 0u64;
    for _ in 0..MAX_STEPS {
        if input.is_empty() {
            break;
        }
        let op = input.u8() % 16;
        let i = input.u8() as usize % SLOTS;
        match op {
            0..=3 => scribble_bcast(&peer, &g, &mut input),
            4 => peer.scribble(&mut input),
            5 | 6 => {
                next += 1;
                if let Some((p, pol)) = &publisher {
                    let before = p.position();
                    let sent = if op == 5 {
                        match p.try_send(next) {
                            Ok(()) => true,
                            Err(TrySendError::Full(v)) => {
                                assert_eq!(v, next);
                                false
                            }
                            Err(e) => panic!("try_send: {e:?}"),
                        }
                    } else {
                        match p.send_timeout(next, Duration::ZERO) {
                            Ok(()) => true,
                            Err(SendTimeoutError::Timeout(v)) => {
                                assert_eq!(v, next);
                                false
                            }
                            Err(e) => panic!("send_timeout: {e:?}"),
                        }
                    };
                    assert!(sent || *pol == Policy::Lossless, "an overwrite send failed");
                    let moved = p.position().wrapping_sub(before);
                    assert_eq!(
                        moved,
                        u64::from(sent),
                        "a send moved the position by {moved}"
                    );
                }
            }
            7 | 8 => {
                if let Some(s) = &subs[i] {
                    let before = s.position();
                    let got = if op == 7 {
                        Got::from(s.try_recv())
                    } else {
                        Got::from(s.recv_timeout(Duration::ZERO))
                    };
                    check_hostile_recv(before, s.position(), got);
                }
            }
            9 => {
                let k = input.u8() as usize;
                if let Some(s) = &subs[i] {
                    let before = s.position();
                    let mut moved = 0u64;
                    let mut n = 0;
                    for r in s.try_iter().take(k) {
                        n += 1;
                        moved = moved.wrapping_add(match r {
                            Ok(_) => 1,
                            Err(lag) => {
                                assert!(lag >= 1, "Lagged(0)");
                                lag
                            }
                        });
                    }
                    assert!(n <= k);
                    assert_eq!(s.position().wrapping_sub(before), moved, "try_iter moves");
                }
            }
            10 => {
                let arg = input.u8();
                subs[i] = None;
                let mut opts = open.clone().start(if arg & 1 == 0 {
                    Start::Next
                } else {
                    Start::Oldest
                });
                if arg & 2 != 0 {
                    opts = opts.policy(policy);
                }
                match Subscriber::<u64>::with_options(&guard.name, &opts) {
                    Ok(s) => subs[i] = Some(s),
                    Err(e) => check_open_error(&e),
                }
            }
            11 => {
                publisher = None;
                let code = peek_u32(&peer.file, POLICY);
                match Publisher::<u64>::with_options(&guard.name, &open) {
                    Ok(p) => {
                        let pol = match code {
                            1 => Policy::Lossless,
                            2 => Policy::Overwrite,
                            c => panic!("a publisher attached to policy code {c}"),
                        };
                        publisher = Some((p, pol));
                    }
                    Err(e) => check_open_error(&e),
                }
            }
            12 => subs[i] = None,
            13 => publisher = None,
            14 => {
                // A pause past the liveness interval: the next full send probes the
                // subscribers holding it back, the next empty receive the publisher.
                std::thread::sleep(Duration::from_micros(150));
            }
            _ => {
                if let Some((p, _)) = &publisher {
                    assert!(p.subscriber_count() <= p.max_subscribers());
                    let _ = p.policy();
                }
                for s in subs.iter().flatten() {
                    let _ = s.is_disconnected();
                }
                match shmchan::inspect(&guard.name) {
                    Ok(info) => {
                        assert!(info.len() <= info.capacity);
                        assert!(info.subscribers.iter().all(|c| c.cursor < 191));
                    }
                    Err(e) => check_open_error(&e),
                }
            }
        }
        for s in subs.iter().flatten() {
            let len = s.len();
            assert!(len <= s.capacity(), "len() > capacity()");
            assert_eq!(s.is_empty(), len == 0);
        }
    }
}
