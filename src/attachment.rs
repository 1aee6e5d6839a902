//! What every handle of every flavor holds once it is attached: the validated mapping,
//! its claim on a peer-table entry, its waiting settings, a rate limit for liveness
//! probes, and the fork generation it attached in (in any other process it is inert).

use crate::options::Options;
use crate::peers::{self, Claim, EntryState};
use crate::shared::Shared;
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{self, WaitStrategy};
use std::time::{Duration, Instant};

/// `d` in nanoseconds, saturating (`Duration::MAX` is about 2^94 ns).
pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A deadline `timeout` from now; `None` (wait forever) if it cannot be represented.
pub(crate) fn deadline_in(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// `create` and `open` for a handle whose `with_options(name, &Options)` attaches it:
/// `create` makes a new channel (exclusively) with `capacity` slots, `open` attaches
/// to an existing one. Every flavor's typed handles share them; each says in its own
/// words (`$create`, `$open`) what its role does.
macro_rules! create_and_open {
    (create: $create:expr, open: $open:expr $(,)?) => {
        #[doc = $create]
        pub fn create(name: &str, capacity: usize) -> Result<Self, crate::OpenError> {
            Self::with_options(
                name,
                &crate::Options::new()
                    .capacity(capacity)
                    .mode(crate::CreateMode::CreateExclusive),
            )
        }

        crate::attachment::create_and_open!(open: $open);
    };
    (open: $open:expr $(,)?) => {
        #[doc = $open]
        pub fn open(name: &str) -> Result<Self, crate::OpenError> {
            Self::with_options(name, &crate::Options::new())
        }
    };
}
pub(crate) use create_and_open;

/// One attachment: a mapping and a claimed peer-table entry.
#[derive(Debug)]
pub(crate) struct Attachment {
    pub shared: Shared,
    pub claim: Claim,
    pub wait: WaitStrategy,
    pub liveness: Duration,
    epoch: Instant,
    /// When (ns since `epoch`) the next liveness probe may run. An atomic, so that
    /// clones of an MPMC handle on several threads share one rate limit.
    next_probe: AtomicU64,
    /// The fork generation this attachment was made in.
    fork_gen: u32,
}

impl Attachment {
    /// Wraps a fresh claim on `shared`'s peer table; a dead holder the claim took the
    /// entry over from is taken off the header's counters.
    pub fn new(shared: Shared, claim: Claim, opts: &Options) -> Attachment {
        if let Some(dead) = claim.took_over {
            shared.forget_holder(dead);
        }
        Attachment {
            shared,
            claim,
            wait: opts.wait,
            liveness: opts.liveness_interval,
            epoch: Instant::now(),
            next_probe: AtomicU64::new(nanos(opts.liveness_interval)),
            fork_gen: crate::sys::process::generation(),
        }
    }

    /// Whether this attachment is used in a process forked after it was made, where
    /// it is inert (operations report `Disconnected`, a drop changes nothing shared).
    /// One relaxed load, no syscall.
    #[inline]
    pub fn forked(&self) -> bool {
        self.fork_gen != crate::sys::process::generation()
    }

    /// Whether this call may probe liveness (a syscall): at most once per liveness
    /// interval, whichever thread asks.
    pub fn probe_due(&self) -> bool {
        let now = nanos(self.epoch.elapsed());
        let next = self.next_probe.load(Ordering::Relaxed);
        now >= next
            && self
                .next_probe
                .compare_exchange(
                    next,
                    now.saturating_add(nanos(self.liveness)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// The state of entry `index`; with `probe`, its holder's liveness is checked and
    /// a dead holder's entry vacated. An index past the table reads as vacated.
    ///
    /// Inlined into every SPSC send and receive with a constant index: the lookup is
    /// into the header's fixed-size table, so the bounds check folds away (through
    /// the in-use slice it cost three instructions per send/receive pair).
    #[inline]
    pub fn entry(&self, index: usize, probe: bool) -> EntryState {
        match self.shared.header().peers.get(index) {
            Some(e) => peers::check(&self.shared.seg.file, e, index, probe, |dead| {
                self.shared.forget_holder(dead)
            }),
            None => EntryState::Vacated,
        }
    }

    /// Where a waiter of this attachment records itself while asleep on `word`.
    pub fn registration(&self, word: u32) -> Option<wait::Registration<'_>> {
        let entry = self.shared.peers().get(self.claim.index)?;
        Some(peers::registration(entry, self.claim, word))
    }

    /// Gives the entry and its lock up (not in a forked child: they are the parent's).
    pub fn release(&self) {
        if self.forked() {
            return;
        }
        if let Some(e) = self.shared.peers().get(self.claim.index) {
            peers::release(&self.shared.seg.file, e, self.claim, |left| {
                self.shared.forget_holder(left)
            });
        }
    }

    /// Whether this attachment created the segment and removes its name on drop.
    pub fn owns_name(&self) -> bool {
        self.shared.seg.owns_name()
    }

    /// Keep the name when this attachment is dropped.
    pub fn keep(&mut self) {
        self.shared.seg.keep();
    }
}
