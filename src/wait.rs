//! Waiting for "not empty" / "not full": spin, then sleep on a futex word, without
//! lost wake-ups.
//!
//! # The protocol
//!
//! A waiter (say a receiver on an empty ring):
//! 1. spins for a while, re-trying the operation;
//! 2. `sleepers.fetch_add(1)`, then `fence(SeqCst)` (**fence W**);
//! 3. reads the futex `word`, re-tries the operation once more;
//! 4. `futex_wait(word, seen)`; after waking, `sleepers.fetch_sub(1)` and go to 2.
//!
//! A waker (a sender that just published):
//! 1. publishes (the slot's sequence word, Release);
//! 2. `fence(SeqCst)` (**fence P**);
//! 3. if `sleepers.load() > 0`: `word.fetch_add(1)` and `futex_wake(word)`.
//!
//! Fences W and P form a Dekker pair: in the single total order of SeqCst fences, if W
//! comes first the waker's load of `sleepers` sees the increment and wakes; if P comes
//! first the waiter's re-try sees the publication. Without them both sides could read
//! the old value (store buffering) and the waiter would sleep on a message that is
//! already there. The futex itself closes the last gap: `futex_wait` sleeps only if the
//! word still holds `seen`, so a bump between step 3 and step 4 makes it return at once.
//!
//! # One wake-up in flight at a time
//!
//! A woken waiter takes tens of microseconds to run on these machines; until it does,
//! `sleepers` still counts it, and a waker that made a `futex_wake` syscall for every
//! message published meanwhile would spend its time in the kernel. So the word carries
//! two flags (see [`PENDING`] and [`SKIPPED`]): a waker sets `PENDING` and makes the
//! syscall only if `PENDING` was clear; otherwise it sets `SKIPPED` and returns. A
//! waiter never sleeps on a word with a flag set: it first clears both flags
//! (acknowledging the wake), and if `SKIPPED` was set it wakes every sleeper, since one
//! of them may have slept through a skipped notification; then it looks again.

use crate::layout::WaitWord;
use crate::sync::{AtomicU64, Ordering, fence, spin_hint};
use crate::sys::futex::{self, Woke};
use std::time::{Duration, Instant};

/// How a blocked `send`/`recv` waits for the other side.
///
/// ```
/// use shmchan::WaitStrategy;
/// use std::time::Duration;
/// let s = WaitStrategy::SpinThenPark { spin: Duration::from_micros(20) };
/// assert_ne!(s, WaitStrategy::default());
/// assert_eq!(WaitStrategy::default(), WaitStrategy::SpinThenPark { spin: Duration::from_micros(50) });
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitStrategy {
    /// Never sleep: poll until the operation succeeds. Lowest latency, one core at 100 %.
    BusySpin,
    /// Poll for `spin`, then sleep on the futex until woken (the default, with 50 µs):
    /// no syscall while messages keep coming, no CPU once idle.
    SpinThenPark {
        /// How long to poll before sleeping; `Duration::MAX` polls forever, as
        /// [`BusySpin`](WaitStrategy::BusySpin) does.
        spin: Duration,
    },
    /// Sleep on the futex at once, after a handful of re-tries. Least CPU, each wait
    /// pays a wake-up (tens of microseconds across cores).
    Block,
}

impl Default for WaitStrategy {
    fn default() -> Self {
        WaitStrategy::SpinThenPark {
            spin: Duration::from_micros(50),
        }
    }
}

impl WaitStrategy {
    fn spin_budget(&self) -> Option<Duration> {
        match *self {
            WaitStrategy::BusySpin => None,
            WaitStrategy::SpinThenPark { spin } => Some(spin),
            WaitStrategy::Block => Some(Duration::ZERO),
        }
    }
}

/// Word flag: a wake-up was sent and no waiter has acknowledged it yet.
pub(crate) const PENDING: u32 = 1;
/// Word flag: a waker found `PENDING` set and did not wake anyone.
pub(crate) const SKIPPED: u32 = 2;
/// The rest of the word is an epoch, bumped by `notify_all`.
const EPOCH: u32 = 4;

/// Where a waiter also records itself while it sleeps: a count in its peer-table
/// entry's state word, so that whoever finds the waiter's process dead can take it off
/// `sleepers` (see `peers.rs`). Without it a process killed asleep would stay counted
/// forever, and every later waker would pay for a `futex_wake`.
///
/// The count is the field `(state & field) / unit`; the waiter records itself only
/// while the state's upper 32 bits are `held` (its own claim) and the field has room.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Registration<'a> {
    /// The waiter's entry state.
    pub entry: &'a AtomicU64,
    /// What one sleeper adds.
    pub unit: u64,
    /// The bits of the count.
    pub field: u64,
    /// The state's upper 32 bits while the waiter holds the entry.
    pub held: u64,
}

impl Registration<'_> {
    /// Counts one more sleeper in the entry; `false` if it could not (the count is
    /// full, or the entry is no longer ours): then it must not be uncounted either.
    fn enter(&self) -> bool {
        // Relaxed: only whoever vacates the entry of a dead holder reads the count, and
        // the CAS that vacates it reads the state word itself.
        self.entry
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                (s >> 32 == self.held && s & self.field != self.field).then(|| s + self.unit)
            })
            .is_ok()
    }

    fn exit(&self) {
        self.entry.fetch_sub(self.unit, Ordering::Relaxed);
    }
}

/// Announces a sleeper on `w` (and in its entry): the word's count first, so that a
/// process killed between the two leaves one count too many (perf), never too few
/// (a lost wake-up). Returns whether the entry counted it.
#[inline]
fn announce(w: &WaitWord, reg: Option<Registration<'_>>) -> bool {
    w.sleepers.fetch_add(1, Ordering::Relaxed);
    reg.is_some_and(|r| r.enter())
}

/// Takes the sleeper off its entry (if it was counted there), then off the word.
#[inline]
fn depart(w: &WaitWord, reg: Option<Registration<'_>>, in_entry: bool) {
    if in_entry {
        if let Some(r) = reg {
            r.exit();
        }
    }
    leave(w);
}

/// Outcome of one attempt inside a blocking loop.
pub(crate) enum Attempt<R> {
    /// Done (success or a terminal error such as disconnect).
    Ready(R),
    /// Not yet: wait and try again.
    Pending,
}

/// Why a blocking loop gave up.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct TimedOut;

/// Wakes waiters on `w` if any announced themselves. Call right after publishing.
///
/// The `SeqCst` fence is fence P of the protocol above: it orders the caller's
/// publication before the load of `sleepers`.
#[inline]
pub(crate) fn notify(w: &WaitWord) {
    crate::sys::membarrier::light(w);
    // Relaxed is enough: the fence above already orders this load after the publication.
    if w.sleepers.load(Ordering::Relaxed) > 0 {
        notify_slow(w, 1);
    }
}

/// Wakes every waiter on `w` if any announced themselves (broadcast: every subscriber
/// waits for the same message). Call right after publishing.
#[inline]
pub(crate) fn notify_every(w: &WaitWord) {
    crate::sys::membarrier::light(w);
    // Relaxed: ordered by the fence above, as in `notify`.
    if w.sleepers.load(Ordering::Relaxed) > 0 {
        notify_slow(w, u32::MAX);
    }
}

/// Sends a wake-up to `n` sleepers unless one is already in flight.
#[cold]
pub(crate) fn notify_slow(w: &WaitWord, n: u32) {
    // One read-modify-write sets PENDING, or SKIPPED if PENDING was set already: an
    // acknowledgement (which clears both) is then either before it (we see PENDING
    // clear and wake) or after it (it sees SKIPPED and wakes everyone). Two separate
    // RMWs would let an acknowledgement slip between them and a skip go unnoticed.
    // AcqRel: a waiter that reads the flags also sees what was published before.
    let mut old = w.word.load(Ordering::Relaxed);
    loop {
        let new = if old & PENDING == 0 {
            old | PENDING
        } else {
            old | SKIPPED
        };
        match w
            .word
            .compare_exchange_weak(old, new, Ordering::AcqRel, Ordering::Relaxed)
        {
            Ok(_) => break,
            Err(now) => old = now,
        }
    }
    if old & PENDING == 0 {
        futex::wake(&w.word, n);
    }
}

/// Wakes every waiter on `w` unconditionally (disconnect, attach).
pub(crate) fn notify_all(w: &WaitWord) {
    fence(Ordering::SeqCst);
    // Release: waiters that see the new epoch see what we did before.
    w.word.fetch_add(EPOCH, Ordering::Release);
    futex::wake(&w.word, u32::MAX);
}

/// Leaves the sleepers, acknowledging a wake-up in flight: a waiter that was counted
/// may be the one a waker woke (or meant to), so it must not leave a flag behind that
/// would make later wakers skip a sleeper. Clears the flags, and passes the wake-up on
/// to every sleeper if a notification was skipped meanwhile.
///
/// Clearing also advances the epoch, so the word never goes back to a value a waiter
/// may have read before the flag was set (an A-B-A there would let that waiter's
/// `futex_wait` sleep through the notification).
#[cold]
fn leave(w: &WaitWord) {
    w.sleepers.fetch_sub(1, Ordering::Relaxed);
    // A read-modify-write, not a load: a load may return an older value and miss a
    // flag set just now.
    let mut old = w.word.fetch_or(0, Ordering::AcqRel);
    while old & (PENDING | SKIPPED) != 0 {
        let new = (old & !(PENDING | SKIPPED)).wrapping_add(EPOCH);
        match w
            .word
            .compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                if old & SKIPPED != 0 {
                    futex::wake(&w.word, u32::MAX);
                }
                return;
            }
            Err(now) => old = now,
        }
    }
}

/// Looks for readiness [`QUICK_POLLS`] times, with only a spin hint between looks;
/// `true` as soon as `ready` says so.
///
/// A receiver calls it before [`block_on`]: in a ping-pong the message is usually
/// already on its way, and this loop looks more often than `block_on`'s (which also
/// checks the peer, the deadline and the clock). Measured on the 8-byte busy round trip,
/// ~1,800 interleaved runs: p50 140 -> 131 ns at a ~120 ns floor, mean 104 -> 89 ns at a
/// 50 ns floor.
#[inline]
pub(crate) fn quick_poll(mut ready: impl FnMut() -> bool) -> bool {
    for _ in 0..QUICK_POLLS {
        spin_hint();
        if ready() {
            return true;
        }
    }
    false
}

/// Looks of [`quick_poll`]: about 0.8 µs here (a spin hint, `pause`, takes ~26 ns on
/// these AMD cores); polling without the hint measured slower (p50 150 against 130 ns
/// at a 120 ns floor).
const QUICK_POLLS: u32 = 32;

/// Whether `now` is at or past `at`; `None` stands for an instant too far away to be
/// represented (`Instant + Duration` overflowed), which is never reached.
#[inline]
fn reached(now: Instant, at: Option<Instant>) -> bool {
    at.is_some_and(|t| now >= t)
}

/// Runs `attempt` until it is ready, waiting on `w` between tries. `attempt(true)`
/// is the last look before sleeping: it must decide on the latest state (see
/// `MpmcRing::is_latest`); `attempt(false)` is a poll and may see a stale state.
///
/// `every_slice` runs at least every `slice` while waiting (also when busy-spinning):
/// it is where the caller checks whether the peer is still alive, and it may end the
/// wait by returning `Some`.
///
/// The deadline and the slice are checked every 64 polls while polling, and on every
/// pass while sleeping, whatever the pass found (a word that keeps being flagged
/// included). Any `Duration` may be passed, up to
/// `Duration::MAX` (as `slice` or as the strategy's spin): an instant past what
/// `Instant` can represent counts as "never", so the spin then never ends and the
/// slice never comes.
#[cold]
pub(crate) fn block_on<R>(
    w: &WaitWord,
    reg: Option<Registration<'_>>,
    strategy: WaitStrategy,
    deadline: Option<Instant>,
    slice: Duration,
    mut attempt: impl FnMut(bool) -> Attempt<R>,
    mut every_slice: impl FnMut() -> Option<R>,
) -> Result<R, TimedOut> {
    // The clock is first read after 64 polls, not on entry: a read costs ~20 ns, and a
    // message that arrives during it waits for it. In a ping-pong every receive enters
    // here; measured when a line crosses cores in ~25 ns (a 50-60 ns floor), the 8-byte
    // round trip's p50 went from 100 to 90 ns (no change at slower floors). The spin
    // budget and the first liveness slice count from that first read (64 polls, ~2 µs,
    // late). `clock` holds that first read and when `every_slice` next runs (`None`:
    // never, the slice is too long to represent).
    let mut clock: Option<(Instant, Option<Instant>)> = None;
    let budget = strategy.spin_budget();

    // Phase 1: poll.
    let mut i: u32 = 0;
    loop {
        if let Attempt::Ready(r) = attempt(false) {
            return Ok(r);
        }
        i = i.wrapping_add(1);
        // Reading the clock costs ~20 ns; do it every 64 polls.
        if i % 64 == 0 || cfg!(loom) {
            let now = Instant::now();
            if reached(now, deadline) {
                return Err(TimedOut);
            }
            let (t0, next_slice) = clock.get_or_insert_with(|| (now, now.checked_add(slice)));
            if reached(now, *next_slice) {
                *next_slice = now.checked_add(slice);
                if let Some(r) = every_slice() {
                    return Ok(r);
                }
            }
            // Elapsed time against the budget, not `t0 + budget`: no overflow for a
            // budget of `Duration::MAX` (which spins forever, like `BusySpin`).
            if budget.is_some_and(|b| now.saturating_duration_since(*t0) >= b) {
                break;
            }
        }
        if i < 16 || budget.is_none() {
            spin_hint();
        } else {
            spin_hint();
            spin_hint();
        }
        if cfg!(loom) && i > 2 && budget.is_some() {
            break;
        }
    }
    let mut next_slice = match clock {
        Some((_, next_slice)) => next_slice,
        None => Instant::now().checked_add(slice),
    };

    // Phase 2: sleep on the futex word.
    loop {
        // Announce ourselves before the last look, so that a waker either sees us or we
        // see its publication (fence W; see the module docs).
        let in_entry = announce(w, reg);
        crate::sys::membarrier::heavy(w);
        #[cfg(all(test, not(loom)))]
        tests::before_look(w);
        let seen = w.word.load(Ordering::Acquire);
        let woke = if seen & (PENDING | SKIPPED) != 0 {
            // Never sleep on a flagged word (a waker would not wake us again): take
            // the wake-up in flight, then look again below as after a wake-up. Not
            // straight back to the announcement: wakers may keep flagging the word
            // (each publication does while we are counted), and the deadline and the
            // slice must still be honoured.
            depart(w, reg, in_entry);
            Woke::Changed
        } else {
            if let Attempt::Ready(r) = attempt(true) {
                depart(w, reg, in_entry);
                return Ok(r);
            }
            let now = Instant::now();
            if reached(now, deadline) {
                depart(w, reg, in_entry);
                return Err(TimedOut);
            }
            // Sleep until the sooner of the slice and the deadline; forever if neither
            // can be represented.
            let until = match (next_slice, deadline) {
                (Some(s), Some(d)) => Some(s.min(d)),
                (s, d) => s.or(d),
            };
            let timeout = until.map(|t| {
                t.saturating_duration_since(now)
                    .max(Duration::from_micros(1))
            });
            let woke = futex::wait(&w.word, seen, timeout);
            depart(w, reg, in_entry);
            woke
        };
        // Woken (or timed out, or the word was flagged): look before paying for
        // another announcement and barrier; after a wake-up the message is usually
        // there.
        if let Attempt::Ready(r) = attempt(false) {
            return Ok(r);
        }
        let now = Instant::now();
        if reached(now, deadline) {
            return Err(TimedOut);
        }
        if matches!(woke, Woke::TimedOut) || reached(now, next_slice) {
            next_slice = now.checked_add(slice);
            if let Some(r) = every_slice() {
                return Ok(r);
            }
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::sync::AtomicU32;
    use std::cell::Cell;
    use std::sync::atomic::AtomicBool;
    use std::thread;

    fn word() -> WaitWord {
        WaitWord {
            word: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            mode: AtomicU32::new(crate::sys::membarrier::FENCE),
        }
    }

    /// Never ready.
    fn pending(_: bool) -> Attempt<()> {
        Attempt::Pending
    }

    /// Loose upper bound for "returned promptly" on a small, shared machine.
    const PROMPTLY: Duration = Duration::from_secs(2);

    /// Regression (issue 11, defect 7): the spin budget was added to an `Instant`.
    #[test]
    fn spin_of_duration_max_spins_until_the_deadline() {
        let w = word();
        let t = Instant::now();
        let strategy = WaitStrategy::SpinThenPark {
            spin: Duration::MAX,
        };
        let r = block_on(
            &w,
            None,
            strategy,
            t.checked_add(Duration::from_millis(5)),
            Duration::from_millis(1),
            pending,
            || None,
        );
        assert_eq!(r, Err(TimedOut));
        assert!(t.elapsed() >= Duration::from_millis(5));
        // It never slept: a spin that never ends is busy spinning.
        assert_eq!(w.sleepers.load(Ordering::Relaxed), 0);
    }

    /// Regression (issue 11, defect 7): the slice was added to an `Instant`, in both
    /// phases.
    #[test]
    fn slice_of_duration_max_never_comes() {
        for strategy in [WaitStrategy::BusySpin, WaitStrategy::Block] {
            let w = word();
            let t = Instant::now();
            let mut slices = 0;
            let r = block_on(
                &w,
                None,
                strategy,
                t.checked_add(Duration::from_millis(5)),
                Duration::MAX,
                pending,
                || {
                    slices += 1;
                    None
                },
            );
            assert_eq!(r, Err(TimedOut));
            assert!(t.elapsed() >= Duration::from_millis(5));
            assert_eq!(slices, 0, "{strategy:?}");
        }
    }

    /// A peer found gone by the liveness check while still polling ends the wait
    /// there: a busy-spinning waiter never reaches the futex, so the spin phase must
    /// run the check too, on time.
    #[test]
    fn the_slice_runs_while_spinning_and_may_end_the_wait() {
        for strategy in [
            WaitStrategy::BusySpin,
            WaitStrategy::SpinThenPark {
                spin: Duration::from_secs(3600),
            },
        ] {
            let w = word();
            let t = Instant::now();
            let slice = Duration::from_millis(2);
            let mut slices = 0;
            // A deadline, so that a wait that ignores the check fails instead of hanging.
            let deadline = t.checked_add(Duration::from_secs(30));
            let r = block_on(
                &w,
                None,
                strategy,
                deadline,
                slice,
                |_| Attempt::Pending,
                || {
                    slices += 1;
                    // The third check finds the peer gone.
                    (slices == 3).then_some("gone")
                },
            );
            assert_eq!(r, Ok("gone"), "{strategy:?}");
            assert_eq!(slices, 3);
            assert!(t.elapsed() >= 3 * slice, "{strategy:?}: slices came early");
            assert!(t.elapsed() < PROMPTLY, "{strategy:?}");
            // It never announced itself as a sleeper.
            assert_eq!(w.sleepers.load(Ordering::Relaxed), 0);
            assert_eq!(w.word.load(Ordering::Relaxed), 0);
        }
    }

    /// With neither a slice nor a deadline that can be represented, the waiter sleeps
    /// (on a timeout the kernel saturates, or none) until woken.
    #[test]
    fn unrepresentable_slice_and_far_deadline_sleep_until_woken() {
        let w = word();
        let ready = AtomicBool::new(false);
        let far = Instant::now().checked_add(Duration::from_secs(1 << 40));
        for deadline in [None, far] {
            ready.store(false, Ordering::SeqCst);
            thread::scope(|s| {
                s.spawn(|| {
                    thread::sleep(Duration::from_millis(10));
                    ready.store(true, Ordering::SeqCst);
                    notify(&w);
                });
                let r = block_on(
                    &w,
                    None,
                    WaitStrategy::Block,
                    deadline,
                    Duration::MAX,
                    |_| {
                        if ready.load(Ordering::SeqCst) {
                            Attempt::Ready(7)
                        } else {
                            Attempt::Pending
                        }
                    },
                    || None,
                );
                assert_eq!(r, Ok(7));
            });
        }
    }

    /// A waker that publishes every time the waiter announces itself, as seen by
    /// [`before_look`]: `left` more times, counting how many of them came at or after
    /// `mark` (`None`: the first time plus `after_first`).
    #[derive(Clone, Copy)]
    struct Flagger {
        left: u32,
        mark: Option<Instant>,
        after_first: Duration,
        late: u32,
    }

    thread_local! {
        static FLAGGER: Cell<Option<Flagger>> = const { Cell::new(None) };
    }

    /// Test seam: `block_on` calls it between a waiter's announcement and its look at
    /// the word. With a [`Flagger`] installed on this thread it flags the word, as a
    /// waker that published just then would (`notify_slow` sets `PENDING` while a
    /// waiter is counted), so that every look finds a flag: deterministically the
    /// worst case of a stream of publications that a real race only approaches.
    pub(super) fn before_look(w: &WaitWord) {
        let Some(mut f) = FLAGGER.get() else {
            return;
        };
        if f.left == 0 {
            return;
        }
        f.left -= 1;
        // AcqRel as in `notify_slow`.
        w.word.fetch_or(PENDING, Ordering::AcqRel);
        let now = Instant::now();
        let mark = *f.mark.get_or_insert(now + f.after_first);
        if now >= mark {
            f.late += 1;
        }
        FLAGGER.set(Some(f));
    }

    /// Runs `wait` with a [`Flagger`] flagging the word at each look (at most
    /// `FLAGS` times, so that a waiter that ignores its deadline still ends); returns
    /// its result and the number of looks at or after `mark`.
    fn flagged_always<R>(
        mark: Option<Instant>,
        after_first: Duration,
        wait: impl FnOnce() -> R,
    ) -> (R, u32) {
        /// Enough for ~100 ms of passes, far more than the 2 ms waits below.
        const FLAGS: u32 = 200_000;
        FLAGGER.set(Some(Flagger {
            left: FLAGS,
            mark,
            after_first,
            late: 0,
        }));
        let r = wait();
        let f = FLAGGER.take().expect("installed");
        (r, f.late)
    }

    /// Regression (issue 11, defect 9): a waiter that found the word flagged took the
    /// wake-up and went straight back to announcing itself, without looking at its
    /// deadline; with wakers flagging the word again and again it overstayed (a 2 ms
    /// `recv_timeout` took 12 ms; here it would loop until the flagger gives up,
    /// looking thousands of times after its deadline). Each pass now checks it: a look
    /// at or after the deadline is the last.
    #[test]
    fn deadline_holds_on_a_word_that_keeps_being_flagged() {
        let w = word();
        let t = Instant::now();
        let deadline = t + Duration::from_millis(2);
        let (r, late) = flagged_always(Some(deadline), Duration::ZERO, || {
            block_on(
                &w,
                None,
                WaitStrategy::Block,
                Some(deadline),
                Duration::from_secs(3600),
                pending,
                || None,
            )
        });
        assert_eq!(r, Err(TimedOut));
        assert!(late <= 1, "{late} looks after the deadline");
        assert!(t.elapsed() < PROMPTLY);
        assert_eq!(w.sleepers.load(Ordering::Relaxed), 0);
    }

    /// As above for the liveness slice: `every_slice` runs on time even while the
    /// word keeps being flagged. (The slice counts from `block_on`'s first clock
    /// read, before its first look; the mark counts from that first look, later.)
    #[test]
    fn slice_holds_on_a_word_that_keeps_being_flagged() {
        let w = word();
        let t = Instant::now();
        let slice = Duration::from_millis(2);
        let (r, late) = flagged_always(None, slice, || {
            block_on(&w, None, WaitStrategy::Block, None, slice, pending, || {
                Some(())
            })
        });
        assert_eq!(r, Ok(()));
        assert!(late <= 1, "{late} looks after the slice");
        assert!(t.elapsed() < PROMPTLY);
        assert_eq!(w.sleepers.load(Ordering::Relaxed), 0);
    }
}
