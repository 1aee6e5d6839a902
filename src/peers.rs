//! The peer table: which handles are attached, in which role, and whether they live.
//!
//! # Liveness
//!
//! A peer is alive while its process holds an open-file-description lock on the byte
//! of the segment object that names its entry ([`crate::sys::process::lock_byte`]). The
//! kernel releases that lock when the process ends, however it ends and whatever its
//! thread layout; it is seen from every PID namespace, and pid reuse cannot fake it.
//! The pid in the entry is only for display.
//!
//! Claiming entry `i`: take lock `i` (fails if another process holds it; a second
//! handle of this process is refused by the process's own bitmap), then write the
//! state. The lock is what makes the claim exclusive; the state says who holds it.
//! A checker loads the state (Acquire) and then asks whether lock `i` is held; if the
//! state names a holder and the lock is free, the holder is gone, and the checker
//! vacates the entry with a CAS from exactly the state it saw.
//!
//! # Entry encoding
//!
//! `PeerEntry::state` (64 bits):
//!
//! | bits   | meaning                                                   |
//! |--------|-----------------------------------------------------------|
//! | 63..32 | generation (`0`: not held)                                |
//! | 31..30 | role: 0 sender, 1 receiver                                |
//! | 29..15 | threads of this holder asleep on `not_full` (registered)  |
//! | 14..0  | threads of this holder asleep on `not_empty` (registered) |
//!
//! The whole word is `0` for an entry never used and [`VACATED`] for one whose holder
//! left or died; any other value with generation 0 (a scribbled entry) reads as
//! vacated too, so garbage cannot block the channel.
//!
//! The sleep counts let whoever vacates a dead holder's entry take that holder's
//! sleepers off the wait words' counters (see `wait.rs`): a process killed while
//! asleep would otherwise leave a counter that makes every later waker pay for a
//! `futex_wake`. Because the counts live in the state word, the CAS that vacates the
//! entry also reads them, exactly once.
//!
//! `PeerEntry::stamp` (64 bits): `pid_namespace_inode << 32 | pid`, written after the
//! claim, for display (`shmchan ls`) only.
//!
//! An SPSC channel uses entry 0 for its sender and entry 1 for its receiver.

use crate::layout::PeerEntry;
use crate::sync::Ordering;
use crate::sys::process::{Hold, SegFile};
use std::io;

/// Vacated entry.
pub(crate) const VACATED: u64 = 1;
/// Bits of one sleep count.
const SLEEP_BITS: u32 = 15;
/// Largest sleep count.
pub(crate) const SLEEP_MAX: u64 = (1 << SLEEP_BITS) - 1;
/// Which wait word a sleep count is about: `not_empty` (0) or `not_full` (1).
pub(crate) const NOT_EMPTY: u32 = 0;
/// See [`NOT_EMPTY`].
pub(crate) const NOT_FULL: u32 = 1;

/// Role of a peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Sender = 0,
    Receiver = 1,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Sender => "sender",
            Role::Receiver => "receiver",
        }
    }
}

/// A decoded held entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Holder {
    pub role: u32,
    pub generation: u32,
}

/// What an entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryState {
    Never,
    Vacated,
    Held(Holder),
}

pub(crate) fn decode(state: u64) -> EntryState {
    match state {
        0 => EntryState::Never,
        s if s >> 32 == 0 => EntryState::Vacated,
        s => EntryState::Held(Holder {
            role: ((s >> 30) & 3) as u32,
            generation: (s >> 32) as u32,
        }),
    }
}

fn encode(role: Role, generation: u32) -> u64 {
    (generation as u64) << 32 | (role as u64) << 30
}

/// The amount one sleeper on `word` ([`NOT_EMPTY`] or [`NOT_FULL`]) adds to a state.
pub(crate) fn sleep_unit(word: u32) -> u64 {
    1 << (word * SLEEP_BITS)
}

/// The sleep counts recorded in a held state: `[not_empty, not_full]`.
pub(crate) fn sleeps(state: u64) -> [u32; 2] {
    if state >> 32 == 0 {
        return [0, 0];
    }
    [
        (state & SLEEP_MAX) as u32,
        ((state >> SLEEP_BITS) & SLEEP_MAX) as u32,
    ]
}

/// Where a thread of the holder of `entry` (our `claim`) records itself while asleep
/// on `word` ([`NOT_EMPTY`] or [`NOT_FULL`]).
pub(crate) fn registration(
    entry: &PeerEntry,
    claim: Claim,
    word: u32,
) -> crate::wait::Registration<'_> {
    crate::wait::Registration {
        entry: &entry.state,
        unit: sleep_unit(word),
        field: SLEEP_MAX * sleep_unit(word),
        held: claim.generation as u64,
    }
}

/// Our claim on an entry; released by [`release`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub index: usize,
    /// Our attach generation (never 0).
    pub generation: u32,
    /// The state of a dead holder we took the entry over from, if any (its role and
    /// its sleepers are still counted in the header's hints).
    pub took_over: Option<u64>,
}

/// Why an entry could not be claimed.
#[derive(Debug)]
pub(crate) enum ClaimError {
    /// A live handle holds it; the pid it wrote, for the message (0 if unknown).
    Taken { pid: u32 },
    /// The lock could not be asked for.
    Io(io::Error),
}

/// Display facts about an entry's holder: `(pid, pid namespace inode)`.
pub(crate) fn stamp_of(entry: &PeerEntry) -> (u32, u32) {
    let s = entry.stamp.load(Ordering::Relaxed);
    (s as u32, (s >> 32) as u32)
}

/// Claims entry `index` for `role`, taking it over if its holder is dead.
pub(crate) fn claim(
    file: &SegFile,
    entry: &PeerEntry,
    index: usize,
    role: Role,
    generation_source: &crate::sync::AtomicU32,
) -> Result<Claim, ClaimError> {
    let lock = u8::try_from(index).map_err(|_| ClaimError::Taken { pid: 0 })?;
    match file.try_hold(lock).map_err(ClaimError::Io)? {
        Hold::Taken => {}
        Hold::HeldHere => {
            return Err(ClaimError::Taken {
                pid: crate::sys::process::identity().0,
            });
        }
        Hold::HeldElsewhere => {
            return Err(ClaimError::Taken {
                pid: stamp_of(entry).0,
            });
        }
    }
    // The lock is ours: any holder the state names is gone.
    // Relaxed: the counter only has to hand out distinct values.
    let mut generation = generation_source
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1);
    if generation == 0 {
        generation = 1;
    }
    let mine = encode(role, generation);
    let mut cur = entry.state.load(Ordering::Acquire);
    loop {
        // AcqRel: acquire the previous holder's writes; release ours (and, for a holder
        // in this process, the lock bit set above) to checkers that load the state.
        match entry
            .state
            .compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => break,
            // A checker vacated the dead holder's entry meanwhile (and reaped it).
            Err(now) => cur = now,
        }
    }
    let (pid, ns) = crate::sys::process::identity();
    entry
        .stamp
        .store((ns as u64) << 32 | pid as u64, Ordering::Release);
    Ok(Claim {
        index,
        generation,
        took_over: matches!(decode(cur), EntryState::Held(_)).then_some(cur),
    })
}

/// Claims any entry of `entries` from index `first` on for `role`: a free one if
/// there is one, else one whose holder died. `Ok(None)` if every such entry is held
/// by a live process.
pub(crate) fn claim_any(
    file: &SegFile,
    entries: &[PeerEntry],
    first: usize,
    role: Role,
    generation_source: &crate::sync::AtomicU32,
) -> Result<Option<Claim>, io::Error> {
    // First pass: entries that look free; second pass: any entry (a dead holder's
    // lock is free too).
    for pass in 0..2 {
        for (i, e) in entries.iter().enumerate().skip(first) {
            if pass == 0 && matches!(decode(e.state.load(Ordering::Acquire)), EntryState::Held(_)) {
                continue;
            }
            match claim(file, e, i, role, generation_source) {
                Ok(c) => return Ok(Some(c)),
                Err(ClaimError::Taken { .. }) => {}
                Err(ClaimError::Io(e)) => return Err(e),
            }
        }
    }
    Ok(None)
}

/// Whether the holder named by state `cur` of entry `index` lives. Call after loading
/// `cur` (Acquire).
fn holder_alive(file: &SegFile, index: usize, cur: u64) -> bool {
    match decode(cur) {
        EntryState::Held(_) => match u8::try_from(index) {
            Ok(lock) => file.is_held(lock),
            Err(_) => false,
        },
        _ => false,
    }
}

/// Vacates entry `entry` if it still holds `cur` (a dead holder's state); runs
/// `reaped(cur)` if this call did it, so the caller takes the holder off the hints.
fn vacate(entry: &PeerEntry, cur: u64, reaped: impl FnOnce(u64)) -> bool {
    // AcqRel: whoever vacates sees the dead holder's last writes; the next claimer
    // sees the entry vacated after our clean-up of its counts began.
    let won = entry
        .state
        .compare_exchange(cur, VACATED, Ordering::AcqRel, Ordering::Relaxed)
        .is_ok();
    if won {
        reaped(cur);
    }
    won
}

/// Whether any entry holds a peer of `role`. With `probe`, holders are checked for
/// liveness and dead ones vacated (`reaped` runs with the state of each entry this
/// call vacated).
pub(crate) fn any_of_role(
    file: &SegFile,
    entries: &[PeerEntry],
    role: Role,
    probe: bool,
    mut reaped: impl FnMut(u64),
) -> bool {
    let mut found = false;
    for (i, e) in entries.iter().enumerate() {
        let cur = e.state.load(Ordering::Acquire);
        if let EntryState::Held(h) = decode(cur) {
            if h.role != role as u32 {
                continue;
            }
            if !probe || holder_alive(file, i, cur) {
                found = true;
                if !probe {
                    break;
                }
            } else {
                vacate(e, cur, &mut reaped);
            }
        }
    }
    found
}

/// Checks every held entry and vacates those whose holder died.
pub(crate) fn reap_all(file: &SegFile, entries: &[PeerEntry], mut reaped: impl FnMut(u64)) {
    for (i, e) in entries.iter().enumerate() {
        let cur = e.state.load(Ordering::Acquire);
        if matches!(decode(cur), EntryState::Held(_)) && !holder_alive(file, i, cur) {
            vacate(e, cur, &mut reaped);
        }
    }
}

/// Whether the holder of entry `index` with generation bits `generation & mask` is
/// gone: the entry is no longer held in that generation, or its process is dead (then
/// the entry is vacated, and `reaped` runs if this call did it).
pub(crate) fn claimant_gone(
    file: &SegFile,
    entry: &PeerEntry,
    index: usize,
    generation: u32,
    mask: u32,
    reaped: impl FnOnce(u64),
) -> bool {
    let cur = entry.state.load(Ordering::Acquire);
    match decode(cur) {
        EntryState::Held(h) if h.generation & mask == generation & mask => {
            if holder_alive(file, index, cur) {
                return false;
            }
            vacate(entry, cur, reaped);
            true
        }
        _ => true,
    }
}

/// Gives up our claim and our lock. `reaped` runs with the state we left (its sleep
/// counts are normally zero: no thread of ours can be asleep while the handle goes).
/// Does nothing to the entry if someone else took it over (which only a hostile
/// writer can cause).
pub(crate) fn release(file: &SegFile, entry: &PeerEntry, claim: Claim, reaped: impl FnOnce(u64)) {
    let mut cur = entry.state.load(Ordering::Relaxed);
    loop {
        if !matches!(decode(cur), EntryState::Held(h) if h.generation == claim.generation) {
            break;
        }
        // Release: everything we published is visible to whoever sees the entry
        // vacated.
        match entry
            .state
            .compare_exchange(cur, VACATED, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => {
                reaped(cur);
                break;
            }
            Err(now) => cur = now,
        }
    }
    if let Ok(lock) = u8::try_from(claim.index) {
        file.unhold(lock);
    }
}

/// Whether the holder of entry `index` is known to be gone; vacates the entry if its
/// holder died. Returns the state seen: `Never`, `Vacated` (gone), or `Held` (alive).
///
/// Without a probe this is one load, inlined into every send (a call here cost the
/// cross-process stream half its throughput).
#[inline]
pub(crate) fn check(
    file: &SegFile,
    entry: &PeerEntry,
    index: usize,
    probe_liveness: bool,
    reaped: impl FnOnce(u64),
) -> EntryState {
    let cur = entry.state.load(Ordering::Acquire);
    let st = decode(cur);
    if probe_liveness && matches!(st, EntryState::Held(_)) {
        return probe(file, entry, index, cur, st, reaped);
    }
    st
}

/// The liveness probe of `check` (a syscall), out of line.
#[cold]
#[inline(never)]
fn probe(
    file: &SegFile,
    entry: &PeerEntry,
    index: usize,
    cur: u64,
    st: EntryState,
    reaped: impl FnOnce(u64),
) -> EntryState {
    if holder_alive(file, index, cur) {
        return st;
    }
    // Whoever wins this CAS reports the death; a lost CAS means the entry changed
    // (released or re-claimed), so look again.
    vacate(entry, cur, reaped);
    decode(entry.state.load(Ordering::Acquire))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::{AtomicU32, AtomicU64};
    use std::sync::Arc;

    fn entry() -> PeerEntry {
        PeerEntry {
            state: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
        }
    }

    fn file() -> Arc<SegFile> {
        let (fd, dev, ino) = crate::sys::process::temp_fd();
        SegFile::adopt(&fd, "/unused", dev, ino).expect("adopt")
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = encode(Role::Receiver, 7);
        assert_eq!(
            decode(s),
            EntryState::Held(Holder {
                role: 1,
                generation: 7
            })
        );
        assert_eq!(decode(s + sleep_unit(NOT_FULL) * 3), decode(s));
        assert_eq!(
            sleeps(s + sleep_unit(NOT_FULL) * 3 + sleep_unit(NOT_EMPTY)),
            [1, 3]
        );
        assert_eq!(decode(0), EntryState::Never);
        assert_eq!(decode(1), EntryState::Vacated);
        assert_eq!(decode(12345), EntryState::Vacated);
        assert_eq!(sleeps(12345), [0, 0]);
    }

    #[test]
    fn own_process_is_alive_and_claim_is_exclusive() {
        let f = file();
        let e = entry();
        let g = AtomicU32::new(0);
        let c = claim(&f, &e, 0, Role::Sender, &g).unwrap();
        assert!(matches!(
            claim(&f, &e, 0, Role::Sender, &g),
            Err(ClaimError::Taken { .. })
        ));
        assert!(matches!(
            check(&f, &e, 0, true, |_| {}),
            EntryState::Held(_)
        ));
        release(&f, &e, c, |_| {});
        assert_eq!(check(&f, &e, 0, true, |_| {}), EntryState::Vacated);
        assert!(claim(&f, &e, 0, Role::Sender, &g).is_ok());
    }

    /// The generation counter wraps; a claim never gets generation 0, which would
    /// make its held entry read as vacated (its holder taken for gone).
    #[test]
    fn claims_skip_generation_zero_when_the_counter_wraps() {
        let f = file();
        let e = entry();
        let g = AtomicU32::new(u32::MAX);
        let c = claim(&f, &e, 3, Role::Receiver, &g).unwrap();
        assert_eq!(c.generation, 1);
        assert_eq!(
            decode(e.state.load(Ordering::SeqCst)),
            EntryState::Held(Holder {
                role: Role::Receiver as u32,
                generation: 1
            })
        );
        assert!(matches!(
            check(&f, &e, 3, true, |_| {}),
            EntryState::Held(_)
        ));
        release(&f, &e, c, |_| {});
    }

    /// An index without a lock byte (past 255; only a garbage table could name one)
    /// holds no live peer, and cannot be claimed.
    #[test]
    fn an_index_without_a_lock_is_never_alive() {
        let f = file();
        let e = entry();
        let held = encode(Role::Sender, 9);
        assert!(!holder_alive(&f, 256, held));
        assert!(!holder_alive(&f, 255 + 45, held));
        // Nor does a state that names no holder, whatever its lock says.
        assert_eq!(f.try_hold(2).unwrap(), Hold::Taken);
        assert!(!holder_alive(&f, 2, VACATED));
        assert!(!holder_alive(&f, 2, 0));
        assert!(holder_alive(&f, 2, held));
        f.unhold(2);
        assert!(matches!(
            claim(&f, &e, 256, Role::Sender, &AtomicU32::new(0)),
            Err(ClaimError::Taken { pid: 0 })
        ));
        assert_eq!(e.state.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn unlocked_holder_is_dead_and_reaped_once_with_its_sleeps() {
        // A state that names a holder whose lock nobody holds: its process is gone.
        let f = file();
        let e = entry();
        let dead = encode(Role::Receiver, 3) + sleep_unit(NOT_EMPTY) * 2;
        e.state.store(dead, Ordering::SeqCst);
        assert_eq!(check(&f, &e, 5, false, |_| {}), decode(dead));
        let mut seen = Vec::new();
        assert_eq!(
            check(&f, &e, 5, true, |s| seen.push(s)),
            EntryState::Vacated
        );
        assert_eq!(
            check(&f, &e, 5, true, |s| seen.push(s)),
            EntryState::Vacated
        );
        assert_eq!(seen, vec![dead]);
        // Taking over a dead holder's entry reports its state once.
        e.state.store(dead, Ordering::SeqCst);
        let g = AtomicU32::new(0);
        let c = claim(&f, &e, 5, Role::Sender, &g).unwrap();
        assert_eq!(c.took_over, Some(dead));
    }
}
