//! What every broadcast handle shares, whatever its message kind: attaching in a role,
//! the publisher's room (evicting subscribers found gone), the subscriber's cursor and
//! lag reports, waiting, and leaving. The typed and byte handles only move bytes.

use super::error::{RecvTimeoutError, TryRecvError};
use super::ring::{self, Read, Ring};
use crate::attachment::Attachment;
use crate::error::OpenError;
use crate::options::{Options, Policy};
use crate::peers::{self, ClaimError, EntryState, Role};
use crate::shared::{Shared, Wanted};
use crate::sync::Ordering;
use crate::wait::{self, Attempt};
use std::cell::Cell;
use std::time::{Duration, Instant};

/// The publisher's entry in the peer table; subscriber `i` holds entry `i + 1`.
const PUBLISHER_ENTRY: usize = 0;

/// The ring over an attachment's segment (validated at attach).
fn ring_of(at: &Attachment) -> Ring {
    let cursors = at.shared.cursors();
    // SAFETY: the header was validated: the control lines, `cursors.len()` cursor lines
    // and the slot array (capacity * slot_size bytes at slots_offset, page aligned) are
    // inside the mapping, which the attachment keeps alive as long as the core that
    // holds both the ring and the attachment.
    unsafe {
        Ring::new(
            at.shared.header().ring,
            cursors.as_ptr(),
            cursors.len(),
            at.shared.slots(),
            &at.shared.geo,
        )
    }
}

/// The publishing side: the ring's publisher end plus the peer logic.
#[derive(Debug)]
pub(crate) struct PubCore {
    pub ring: ring::Publisher,
    at: Attachment,
    /// Lossless: how long a live subscriber may hold the publisher back.
    lag_limit: Option<Duration>,
    /// Since when the ring has been full (for the lag limit).
    blocked_since: Cell<Option<Instant>>,
}

impl PubCore {
    pub fn attach(name: &str, opts: &Options, want: &Wanted) -> Result<PubCore, OpenError> {
        let shared = Shared::attach(name, opts, want)?;
        let hdr = shared.header();
        let claim = peers::claim(
            &shared.seg.file,
            &hdr.peers[PUBLISHER_ENTRY],
            PUBLISHER_ENTRY,
            Role::Sender,
            hdr.peer_generation,
        )
        .map_err(|e| match e {
            ClaimError::Taken { pid } => OpenError::RoleTaken {
                role: "publisher",
                pid,
            },
            ClaimError::Io(e) => OpenError::Io(e),
        })?;
        let lossless = shared.policy() == Policy::Lossless;
        let lag_limit = shared.lag_limit().filter(|_| lossless);
        // The only waiter on `not_full` is the publisher: a count left there is a dead
        // predecessor's.
        hdr.ring.not_full.w.sleepers.store(0, Ordering::Relaxed);
        hdr.attach.sender_attaches.fetch_add(1, Ordering::Relaxed);
        let at = Attachment::new(shared, claim, opts);
        let ring = ring::Publisher::attach(ring_of(&at), lossless);
        // Subscribers blocked on "is anyone there?" look again.
        wait::notify_all(&at.shared.header().ring.not_empty.w);
        Ok(PubCore {
            ring,
            at,
            lag_limit,
            blocked_since: Cell::new(None),
        })
    }

    #[inline]
    pub fn forked(&self) -> bool {
        self.at.forked()
    }

    pub fn policy(&self) -> Policy {
        self.at.shared.policy()
    }

    pub fn shared(&self) -> &Shared {
        &self.at.shared
    }

    pub fn keep(&mut self) {
        self.at.shared.seg.keep();
    }

    /// Subscribers counted now.
    pub fn subscriber_count(&self) -> usize {
        self.ring
            .ring()
            .cursors()
            .iter()
            .filter(|c| c.owner.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Evicts the subscribers holding the publisher back whose holder is gone (its
    /// entry no longer names it, or, with `probe`, its process died), and, once the
    /// ring has been full for the channel's lag limit, every one holding it back.
    /// Whether any was.
    fn evict_gone(&self, probe: bool) -> bool {
        let over_limit = self.lag_limit.is_some_and(|limit| {
            let now = Instant::now();
            let since = self.blocked_since.get().unwrap_or(now);
            self.blocked_since.set(Some(since));
            now.saturating_duration_since(since) >= limit
        });
        let mut evicted = false;
        let laggards: Vec<(usize, u64)> = self.ring.laggards().collect();
        for (i, owner) in laggards {
            let index = i + 1;
            let holds = |st: EntryState| matches!(st, EntryState::Held(h) if u64::from(h.generation) == owner);
            let gone = over_limit
                || !holds(self.at.entry(index, false))
                || (probe && !holds(self.at.entry(index, true)));
            if gone && self.ring.evict(i, owner) {
                evicted = true;
            }
        }
        evicted
    }

    /// How many of the next `want` (at least 1) positions may be written now; evicts
    /// gone subscribers first if none may (probing liveness at most once per interval).
    #[inline]
    pub fn try_room(&self, want: u64) -> u64 {
        let want = want.max(1);
        let n = match self.ring.room(want) {
            0 => self.room_after_eviction(self.at.probe_due(), want),
            n => n,
        };
        if n > 0 {
            self.got_room();
        }
        n
    }

    /// The ring is not (or no longer) full: the lag limit counts from the next time
    /// it is.
    #[inline]
    fn got_room(&self) {
        if self.lag_limit.is_some() {
            self.blocked_since.set(None);
        }
    }

    #[cold]
    fn room_after_eviction(&self, probe: bool, want: u64) -> u64 {
        if self.evict_gone(probe) {
            self.ring.room(want)
        } else {
            0
        }
    }

    /// Waits until the next position may be written, or until `deadline`; `false` at
    /// the deadline.
    pub fn room(&self, deadline: Option<Instant>) -> bool {
        self.try_room(1) > 0 || self.wait_for_room(deadline)
    }

    #[cold]
    fn wait_for_room(&self, deadline: Option<Instant>) -> bool {
        let w = &self.ring.ring().ctl().not_full.w;
        // With a lag limit, look at least that often.
        let slice = self
            .lag_limit
            .map_or(self.at.liveness, |l| l.min(self.at.liveness));
        let r = wait::block_on(
            w,
            self.at.registration(peers::NOT_FULL),
            self.at.wait,
            deadline,
            slice,
            |_| {
                if self.ring.has_room() {
                    Attempt::Ready(())
                } else {
                    Attempt::Pending
                }
            },
            || (self.room_after_eviction(true, 1) > 0).then_some(()),
        );
        // A deadline shorter than the liveness interval never reaches a slice: look
        // for gone subscribers as a `try_send` would (rate limited).
        let ok = r.is_ok() || self.try_room(1) > 0;
        if ok {
            self.got_room();
        }
        ok
    }

    /// Publishes the next `n` written positions and wakes sleeping subscribers.
    #[inline]
    pub fn commit(&self, n: u64) {
        self.ring.commit(n);
        wait::notify_every(&self.ring.ring().ctl().not_empty.w);
    }
}

impl Drop for PubCore {
    fn drop(&mut self) {
        if self.at.forked() {
            return;
        }
        self.ring.store_tail();
        self.at.release();
        // Subscribers waiting for a message learn that none will come.
        wait::notify_all(&self.ring.ring().ctl().not_empty.w);
    }
}

/// The receiving side: the ring's subscriber end plus the peer logic.
#[derive(Debug)]
pub(crate) struct SubCore {
    pub ring: ring::Subscriber,
    at: Attachment,
    pub lossless: bool,
    /// Whether the channel has a lag limit (then no borrows in place).
    lag_limited: bool,
    /// Messages missed that a batch receive found after handing out messages: the next
    /// receive reports them first.
    pending_lag: Cell<u64>,
}

impl SubCore {
    pub fn attach(name: &str, opts: &Options, want: &Wanted) -> Result<SubCore, OpenError> {
        let shared = Shared::attach(name, opts, want)?;
        let hdr = shared.header();
        let claim = peers::claim_any(
            &shared.seg.file,
            shared.peers(),
            1,
            Role::Receiver,
            hdr.peer_generation,
        )?
        .ok_or(OpenError::TooManyPeers(shared.max_peers as u32))?;
        hdr.attach.receiver_attaches.fetch_add(1, Ordering::Relaxed);
        let lossless = shared.policy() == Policy::Lossless;
        let lag_limited = shared.lag_limit().is_some();
        let at = Attachment::new(shared, claim, opts);
        let Some(ring) = ring::Subscriber::join(
            ring_of(&at),
            claim.index - 1,
            u64::from(claim.generation),
            opts.start,
        ) else {
            at.release();
            return Err(OpenError::Corrupt("subscriber entry without a cursor"));
        };
        Ok(SubCore {
            ring,
            at,
            lossless,
            lag_limited,
            pending_lag: Cell::new(0),
        })
    }

    pub fn shared(&self) -> &Shared {
        &self.at.shared
    }

    pub fn keep(&mut self) {
        self.at.shared.seg.keep();
    }

    /// Whether the publisher is gone (it was attached, and left or died); probes its
    /// liveness with `probe`.
    pub fn publisher_gone(&self, probe: bool) -> bool {
        self.at.forked() || matches!(self.at.entry(PUBLISHER_ENTRY, probe), EntryState::Vacated)
    }

    /// Like `publisher_gone`, probing at most once per liveness interval.
    pub fn publisher_gone_rate_limited(&self) -> bool {
        self.publisher_gone(self.at.probe_due())
    }

    /// Remembers a lag to report at the next receive (a batch found it after handing
    /// out messages).
    pub fn defer_lag(&self, n: u64) {
        self.pending_lag
            .set(self.pending_lag.get().saturating_add(n));
    }

    /// A lag found earlier and not yet reported, if any (then reported now).
    #[inline]
    pub fn take_pending_lag(&self) -> Option<u64> {
        match self.pending_lag.get() {
            0 => None,
            n => {
                self.pending_lag.set(0);
                Some(n)
            }
        }
    }

    /// Whether a message may be borrowed in place: only where the publisher never
    /// rewrites a slot a live, counted subscriber has not passed.
    pub fn may_borrow(&self) -> Result<(), super::error::RecvRefError> {
        use super::error::RecvRefError;
        if !self.lossless {
            Err(RecvRefError::Overwrite)
        } else if self.lag_limited {
            Err(RecvRefError::LagLimit)
        } else {
            Ok(())
        }
    }

    /// Whether this handle is used in a process forked after it attached (inert).
    #[inline]
    pub fn forked(&self) -> bool {
        self.at.forked()
    }

    /// Tells a lossless publisher that slots were released.
    #[inline]
    pub fn released(&self) {
        if self.lossless {
            wait::notify(&self.ring.ring().ctl().not_full.w);
        }
    }

    /// A lossless subscriber the publisher stopped counting (evicted over the lag
    /// limit) counts again; returns how many messages that skips (0 if it was
    /// counted). The caller reports them in the same call that moves the cursor.
    #[inline]
    pub fn recount(&self) -> u64 {
        if self.lossless && !self.ring.counted() {
            self.ring.rejoin()
        } else {
            0
        }
    }

    /// Passes `r` on; a lag of an evicted subscriber also counts what re-joining
    /// skips.
    #[inline]
    fn checked(&self, r: Read) -> Read {
        match r {
            Read::Lagged(n) => Read::Lagged(n.saturating_add(self.recount())),
            r => r,
        }
    }

    /// One receive without waiting: `read` looks at the next slot (copying the message
    /// out on `Got`).
    ///
    /// # Errors
    /// `Empty`, `Lagged(n)`, or `Disconnected` once the publisher is gone and
    /// everything is received.
    #[inline]
    pub fn try_recv_with(&self, mut read: impl FnMut() -> Read) -> Result<(), TryRecvError> {
        let mut read = || self.checked(read());
        if self.at.forked() {
            return Err(TryRecvError::Disconnected);
        }
        if let Some(n) = self.take_pending_lag() {
            return Err(TryRecvError::Lagged(n));
        }
        // Evicted since the last receive: count again first, and say what it skips.
        match self.recount() {
            0 => {}
            n => return Err(TryRecvError::Lagged(n)),
        }
        match read() {
            Read::Got => {
                self.released();
                Ok(())
            }
            Read::Lagged(n) => Err(TryRecvError::Lagged(n)),
            Read::Empty => self.empty_or_gone(read),
        }
    }

    #[cold]
    fn empty_or_gone(&self, mut read: impl FnMut() -> Read) -> Result<(), TryRecvError> {
        let gone = self.publisher_gone_rate_limited();
        // Look again after seeing the publisher gone: its last message was published
        // before it vacated its entry (Release), which we loaded (Acquire).
        match read() {
            Read::Got => {
                self.released();
                Ok(())
            }
            Read::Lagged(n) => Err(TryRecvError::Lagged(n)),
            Read::Empty if gone => Err(TryRecvError::Disconnected),
            Read::Empty => Err(TryRecvError::Empty),
        }
    }

    /// One receive, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// `Timeout`, `Lagged(n)` or `Disconnected`.
    pub fn recv_with(
        &self,
        deadline: Option<Instant>,
        mut read: impl FnMut() -> Read,
    ) -> Result<(), RecvTimeoutError> {
        let mut read = || self.checked(read());
        match self.try_recv_with(&mut read) {
            Ok(()) => return Ok(()),
            Err(TryRecvError::Lagged(n)) => return Err(RecvTimeoutError::Lagged(n)),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        if wait::quick_poll(|| self.ring.ready()) {
            return self.try_recv_with(&mut read).map_err(|e| match e {
                TryRecvError::Lagged(n) => RecvTimeoutError::Lagged(n),
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                TryRecvError::Empty => RecvTimeoutError::Timeout,
            });
        }
        let w = &self.ring.ring().ctl().not_empty.w;
        let r = wait::block_on(
            w,
            self.at.registration(peers::NOT_EMPTY),
            self.at.wait,
            deadline,
            self.at.liveness,
            |_| match read() {
                Read::Got => Attempt::Ready(Ok(())),
                Read::Lagged(n) => Attempt::Ready(Err(RecvTimeoutError::Lagged(n))),
                Read::Empty if self.publisher_gone(false) => {
                    Attempt::Ready(Err(RecvTimeoutError::Disconnected))
                }
                Read::Empty => Attempt::Pending,
            },
            || {
                self.publisher_gone(true)
                    .then_some(Err(RecvTimeoutError::Disconnected))
            },
        );
        let r = match r {
            // The publisher is gone: one more look for a last message.
            Ok(Err(RecvTimeoutError::Disconnected)) => match read() {
                Read::Got => Ok(()),
                Read::Lagged(n) => Err(RecvTimeoutError::Lagged(n)),
                Read::Empty => Err(RecvTimeoutError::Disconnected),
            },
            Ok(r) => r,
            // As a `try_recv` would: a loop of short timeouts still learns that the
            // publisher died.
            Err(_) => {
                return self.empty_or_gone(read).map_err(|e| match e {
                    TryRecvError::Lagged(n) => RecvTimeoutError::Lagged(n),
                    TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                    TryRecvError::Empty => RecvTimeoutError::Timeout,
                });
            }
        };
        if r.is_ok() {
            self.released();
        }
        r
    }

    /// Messages published that this subscriber has not received (at most the
    /// capacity counts).
    pub fn len(&self) -> usize {
        let behind = self.ring.ring().scan_tail().saturating_sub(self.ring.pos());
        behind.min(self.ring.ring().capacity()) as usize
    }
}

impl Drop for SubCore {
    fn drop(&mut self) {
        if self.at.forked() {
            return;
        }
        // No longer counted: a lossless publisher waiting for us goes on.
        self.ring.leave();
        self.at.release();
        wait::notify_all(&self.ring.ring().ctl().not_full.w);
    }
}
