//! The peer table: which processes are attached, in which role, and whether they live.
//!
//! # Entry encoding
//!
//! `PeerEntry::state` (64 bits):
//!
//! | value                                  | meaning                         |
//! |----------------------------------------|---------------------------------|
//! | `0`                                    | never used                      |
//! | `1`                                    | vacated (its holder left or died)|
//! | `gen << 32 \| role << 30 \| pid`       | held; `gen >= 1`, `pid < 2^30`  |
//!
//! `PeerEntry::stamp` (64 bits): `(gen & 0xFF_FFFF) << 40 | start_time`, where
//! `start_time` is the holder's start time in clock ticks since boot (field 22 of
//! `/proc/PID/stat`). It is written after the claim, so a checker trusts it only when
//! its generation bits match the state's: then a different start time proves that the
//! pid was reused by another process. A zombie (`Z`/`X` state) counts as dead.
//!
//! An SPSC channel uses entry 0 for its sender and entry 1 for its receiver.

use crate::layout::PeerEntry;
use crate::sync::Ordering;

/// Vacated entry.
pub(crate) const VACATED: u64 = 1;
const PID_MASK: u64 = (1 << 30) - 1;
const START_MASK: u64 = (1 << 40) - 1;

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
    pub pid: u32,
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
        // Any other value below 2^32 has generation 0, which no claim writes: treat it
        // as vacated (a scribbled entry must not block the channel).
        s if s >> 32 == 0 => EntryState::Vacated,
        s => EntryState::Held(Holder {
            pid: (s & PID_MASK) as u32,
            role: ((s >> 30) & 3) as u32,
            generation: (s >> 32) as u32,
        }),
    }
}

fn encode(pid: u32, role: Role, generation: u32) -> u64 {
    (generation as u64) << 32 | (role as u64) << 30 | (pid as u64 & PID_MASK)
}

/// Our claim on an entry; released by [`release`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Claim {
    pub index: usize,
    pub state: u64,
    /// Our attach generation.
    pub generation: u32,
    /// The role of a dead holder we took the entry over from, if any.
    pub took_over: Option<u32>,
}

/// This process's pid, as stored in the table.
pub(crate) fn my_pid() -> u32 {
    rustix::process::getpid().as_raw_nonzero().get() as u32
}

/// Start time and run state of `pid` from `/proc/PID/stat`, if readable.
pub(crate) fn proc_stat(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    // After the state come fields 4..; start time is field 22, i.e. 19 further on.
    let start = fields.nth(18)?.parse::<u64>().ok()?;
    Some((state, start))
}

/// Whether the holder encoded in `state` (with `stamp`) is a live process.
pub(crate) fn holder_alive(state: u64, stamp: u64) -> bool {
    let EntryState::Held(h) = decode(state) else {
        return false;
    };
    if h.pid == my_pid() {
        return true;
    }
    let Some(pid) = rustix::process::Pid::from_raw(h.pid as i32) else {
        return false;
    };
    match rustix::process::test_kill_process(pid) {
        Ok(()) | Err(rustix::io::Errno::PERM) => {}
        Err(_) => return false,
    }
    match proc_stat(h.pid) {
        // Zombies and dead tasks hold no mappings: the holder is gone.
        Some(('Z' | 'X' | 'x', _)) => false,
        Some((_, start)) => {
            let stamp_gen = (stamp >> 40) as u32;
            let stamp_start = stamp & START_MASK;
            let gen_matches = stamp_gen == (h.generation & 0xFF_FFFF);
            !(gen_matches && stamp_start != 0 && stamp_start != start & START_MASK)
        }
        // /proc unreadable (hidepid, other namespace): trust kill(2).
        None => true,
    }
}

/// Claims `entry` for `role`, taking it over if its holder is dead.
///
/// Returns the holder's pid if a live process holds it.
pub(crate) fn claim(
    entry: &PeerEntry,
    index: usize,
    role: Role,
    generation_source: &crate::sync::AtomicU32,
) -> Result<Claim, u32> {
    let pid = my_pid();
    let start = proc_stat(pid).map(|s| s.1).unwrap_or(0);
    // Relaxed: the counter only has to hand out distinct values.
    let mut generation = generation_source
        .fetch_add(1, Ordering::Relaxed)
        .wrapping_add(1);
    if generation == 0 {
        generation = 1;
    }
    let mine = encode(pid, role, generation);
    loop {
        // Acquire pairs with the Release of the previous holder's release/claim.
        let cur = entry.state.load(Ordering::Acquire);
        let mut took_over = None;
        if let EntryState::Held(h) = decode(cur) {
            let stamp = entry.stamp.load(Ordering::Acquire);
            if holder_alive(cur, stamp) {
                return Err(h.pid);
            }
            took_over = Some(h.role);
        }
        // AcqRel: acquire the previous holder's writes, release ours to later checkers.
        if entry
            .state
            .compare_exchange(cur, mine, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let stamp = ((generation as u64) & 0xFF_FFFF) << 40 | (start & START_MASK);
            entry.stamp.store(stamp, Ordering::Release);
            return Ok(Claim {
                index,
                state: mine,
                generation,
                took_over,
            });
        }
    }
}

/// Claims any entry of `entries` for `role`: a free one if there is one, else one
/// whose holder died. `None` if every entry is held by a live process.
pub(crate) fn claim_any(
    entries: &[PeerEntry],
    role: Role,
    generation_source: &crate::sync::AtomicU32,
) -> Option<Claim> {
    // First pass: free entries only (no liveness syscalls).
    for (i, e) in entries.iter().enumerate() {
        if !matches!(decode(e.state.load(Ordering::Acquire)), EntryState::Held(_)) {
            if let Ok(c) = claim(e, i, role, generation_source) {
                return Some(c);
            }
        }
    }
    // Second pass: take over the entry of a dead holder.
    for (i, e) in entries.iter().enumerate() {
        if let Ok(c) = claim(e, i, role, generation_source) {
            return Some(c);
        }
    }
    None
}

/// Whether any entry holds a peer of `role`. With `probe`, holders are checked for
/// liveness and dead ones vacated (`reaped` runs once per entry this call vacated).
pub(crate) fn any_of_role(
    entries: &[PeerEntry],
    role: Role,
    probe: bool,
    mut reaped: impl FnMut(u32),
) -> bool {
    let mut found = false;
    for e in entries {
        let cur = e.state.load(Ordering::Acquire);
        if let EntryState::Held(h) = decode(cur) {
            if h.role != role as u32 {
                continue;
            }
            if !probe || holder_alive(cur, e.stamp.load(Ordering::Acquire)) {
                found = true;
                if !probe {
                    break;
                }
            } else if e
                .state
                .compare_exchange(cur, VACATED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                reaped(h.role);
            }
        }
    }
    found
}

/// Whether the holder of `entry` with generation bits `generation & mask` is gone: the
/// entry is no longer held in that generation, or its process is dead (then the entry
/// is vacated, and `reaped` runs with its role if this call did it).
pub(crate) fn claimant_gone(
    entry: &PeerEntry,
    generation: u32,
    mask: u32,
    reaped: impl FnOnce(u32),
) -> bool {
    let cur = entry.state.load(Ordering::Acquire);
    match decode(cur) {
        EntryState::Held(h) if h.generation & mask == generation & mask => {
            if holder_alive(cur, entry.stamp.load(Ordering::Acquire)) {
                return false;
            }
            if entry
                .state
                .compare_exchange(cur, VACATED, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                reaped(h.role);
            }
            true
        }
        _ => true,
    }
}

/// Gives up our claim. Does nothing if someone else took the entry over (which only
/// happens if we were judged dead).
pub(crate) fn release(entry: &PeerEntry, claim: Claim) {
    // Release: everything we published is visible to whoever sees the entry vacated.
    let _ =
        entry
            .state
            .compare_exchange(claim.state, VACATED, Ordering::Release, Ordering::Relaxed);
}

/// Whether the holder of `entry` is known to be gone; vacates the entry if its holder
/// died. Returns the state seen: `Never`, `Vacated` (gone), or `Held` (alive).
///
/// Without a probe this is one load, inlined into every send (a call here cost the
/// cross-process stream half its throughput).
#[inline]
pub(crate) fn check(entry: &PeerEntry, probe_liveness: bool) -> EntryState {
    let cur = entry.state.load(Ordering::Acquire);
    let st = decode(cur);
    if probe_liveness && matches!(st, EntryState::Held(_)) {
        return probe(entry, cur, st);
    }
    st
}

/// The liveness probe of `check` (syscalls), out of line.
#[cold]
#[inline(never)]
fn probe(entry: &PeerEntry, cur: u64, st: EntryState) -> EntryState {
    if holder_alive(cur, entry.stamp.load(Ordering::Acquire)) {
        return st;
    }
    // Whoever wins this CAS reports the death; a lost CAS means the entry changed
    // (released or re-claimed), so look again next time.
    let _ = entry
        .state
        .compare_exchange(cur, VACATED, Ordering::AcqRel, Ordering::Relaxed);
    decode(entry.state.load(Ordering::Acquire))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::{AtomicU32, AtomicU64};

    fn entry() -> PeerEntry {
        PeerEntry {
            state: AtomicU64::new(0),
            stamp: AtomicU64::new(0),
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let s = encode(4_000_000, Role::Receiver, 7);
        assert_eq!(
            decode(s),
            EntryState::Held(Holder {
                pid: 4_000_000,
                role: 1,
                generation: 7
            })
        );
        assert_eq!(decode(0), EntryState::Never);
        assert_eq!(decode(1), EntryState::Vacated);
        assert_eq!(decode(12345), EntryState::Vacated);
    }

    #[test]
    fn own_process_is_alive_and_claim_is_exclusive() {
        let e = entry();
        let g = AtomicU32::new(0);
        let c = claim(&e, 0, Role::Sender, &g).unwrap();
        assert_eq!(claim(&e, 0, Role::Sender, &g).unwrap_err(), my_pid());
        assert!(matches!(check(&e, true), EntryState::Held(_)));
        release(&e, c);
        assert_eq!(check(&e, true), EntryState::Vacated);
        assert!(claim(&e, 0, Role::Sender, &g).is_ok());
    }

    #[test]
    fn dead_holder_is_reaped() {
        // A child that has exited and been reaped has a pid nobody holds (for a while).
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let e = entry();
        e.state
            .store(encode(pid, Role::Sender, 3), Ordering::SeqCst);
        assert_eq!(check(&e, false), decode(encode(pid, Role::Sender, 3)));
        assert_eq!(check(&e, true), EntryState::Vacated);
        let g = AtomicU32::new(0);
        e.state
            .store(encode(pid, Role::Sender, 3), Ordering::SeqCst);
        assert!(claim(&e, 0, Role::Sender, &g).is_ok());
    }

    #[test]
    fn zombie_counts_as_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        // Wait until it is a zombie, without reaping it.
        let t = std::time::Instant::now();
        while proc_stat(pid).map(|s| s.0) != Some('Z') && t.elapsed().as_secs() < 10 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!holder_alive(encode(pid, Role::Sender, 1), 0));
        child.wait().unwrap();
    }

    #[test]
    fn reused_pid_with_other_start_time_is_dead() {
        // Our own pid is short-circuited, so use the parent (alive, different start).
        let ppid = rustix::process::getppid().unwrap().as_raw_nonzero().get() as u32;
        let (_, start) = proc_stat(ppid).unwrap();
        let state = encode(ppid, Role::Sender, 9);
        assert!(holder_alive(state, (9 << 40) | (start & START_MASK)));
        assert!(!holder_alive(state, (9 << 40) | ((start + 1) & START_MASK)));
        // A stamp from another generation is not trusted.
        assert!(holder_alive(state, (8 << 40) | ((start + 1) & START_MASK)));
    }
}
