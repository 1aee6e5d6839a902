//! The typed public handles of a broadcast channel: [`Publisher`] and [`Subscriber`].

use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use super::ring::{self, Read, Ring};
use crate::error::{OpenError, SendError, SendTimeoutError, TrySendError};
use crate::layout::FLAVOR_BROADCAST;
use crate::options::{CreateMode, Options, Policy};
use crate::peers::{self, Claim, ClaimError, EntryState, Role};
use crate::shared::{Shared, Wanted};
use crate::spsc::endpoint::deadline_in;
use crate::sync::Ordering;
use crate::wait::{self, Attempt, WaitStrategy};
use bytemuck::Pod;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::time::{Duration, Instant};

/// The publisher's entry in the peer table; subscriber `i` holds entry `i + 1`.
const PUBLISHER_ENTRY: usize = 0;

/// The mapping, our peer claim and the waiting settings of one handle.
struct Attached {
    shared: Shared,
    claim: Claim,
    wait: WaitStrategy,
    liveness: Duration,
    /// When the polling path may next probe liveness (a syscall); `None`: never.
    next_probe: Cell<Option<Instant>>,
    /// The fork generation this handle attached in; in a forked child it is inert.
    fork_gen: u32,
}

impl Attached {
    fn new(shared: Shared, claim: Claim, opts: &Options) -> Attached {
        if let Some(dead) = claim.took_over {
            shared.forget_holder(dead);
        }
        Attached {
            shared,
            claim,
            wait: opts.wait,
            liveness: opts.liveness_interval,
            next_probe: Cell::new(deadline_in(opts.liveness_interval)),
            fork_gen: crate::sys::process::generation(),
        }
    }

    /// The ring over this segment (validated at attach).
    fn ring(&self) -> Ring {
        let cursors = self.shared.cursors();
        // SAFETY: the header was validated: the control lines, `cursors.len()` cursor
        // lines and the slot array (capacity * slot_size bytes at slots_offset, page
        // aligned) are inside the mapping, which `self.shared` keeps alive as long as
        // the handle that holds both the ring and this `Attached`.
        unsafe {
            Ring::new(
                self.shared.header().ring,
                cursors.as_ptr(),
                cursors.len(),
                self.shared.slots(),
                &self.shared.geo,
            )
        }
    }

    /// Inert in a process forked after the attach. One relaxed load.
    #[inline]
    fn forked(&self) -> bool {
        self.fork_gen != crate::sys::process::generation()
    }

    /// Whether this call may probe liveness (at most once per liveness interval).
    fn probe_due(&self) -> bool {
        let now = Instant::now();
        let due = self.next_probe.get().is_some_and(|t| now >= t);
        if due {
            self.next_probe.set(now.checked_add(self.liveness));
        }
        due
    }

    /// The state of entry `index`, probing its holder's liveness if `probe` (and
    /// vacating it if the holder died).
    fn entry(&self, index: usize, probe: bool) -> EntryState {
        peers::check(
            &self.shared.seg.file,
            &self.shared.header().peers[index],
            index,
            probe,
            |dead| self.shared.forget_holder(dead),
        )
    }

    fn registration(&self, word: u32) -> wait::Registration<'_> {
        peers::registration(
            &self.shared.header().peers[self.claim.index],
            self.claim,
            word,
        )
    }

    fn release(&self) {
        let hdr = self.shared.header();
        peers::release(
            &self.shared.seg.file,
            &hdr.peers[self.claim.index],
            self.claim,
            |left| self.shared.forget_holder(left),
        );
    }
}

fn role_taken(role: &'static str) -> impl Fn(ClaimError) -> OpenError {
    move |e| match e {
        ClaimError::Taken { pid } => OpenError::RoleTaken { role, pid },
        ClaimError::Io(e) => OpenError::Io(e),
    }
}

/// The publishing half of a broadcast channel in shared memory.
///
/// One publisher may be attached at a time, in any process (a second one gets
/// `RoleTaken`; one whose process died is replaced). Every message it sends is
/// received by every subscriber attached at the time, in order. Under
/// [`Policy::Lossless`] (the default) it waits for the slowest live subscriber; under
/// [`Policy::Overwrite`] it never waits.
///
/// ```
/// use shmchan::broadcast::{Publisher, Subscriber};
///
/// # let name = format!("doc-bcast-{}", std::process::id());
/// let tx = Publisher::<u64>::create(&name, 1024)?;
/// let a = Subscriber::<u64>::open(&name)?;
/// let b = Subscriber::<u64>::open(&name)?;
/// tx.send(7)?;
/// assert_eq!((a.recv()?, b.recv()?), (7, 7));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Publisher<T: Pod> {
    ring: ring::Publisher,
    at: Attached,
    _t: PhantomData<T>,
}

// SAFETY: the handle owns its mapping and its claim; moving it to another thread moves
// them along. It is not Sync: its position is a Cell.
unsafe impl<T: Pod + Send> Send for Publisher<T> {}

impl<T: Pod> fmt::Debug for Publisher<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("capacity", &self.capacity())
            .field("policy", &self.policy())
            .field("tail", &self.ring.tail())
            .finish()
    }
}

impl<T: Pod> Publisher<T> {
    /// Creates a lossless broadcast channel named `name` with `capacity` slots (a
    /// power of two) and room for 16 subscribers, and attaches as its publisher. The
    /// name is removed when this handle is dropped (see [`Options::keep`]).
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn create(name: &str, capacity: usize) -> Result<Publisher<T>, OpenError> {
        Self::with_options(
            name,
            &Options::new()
                .capacity(capacity)
                .mode(CreateMode::CreateExclusive),
        )
    }

    /// Opens the existing broadcast channel `name` as its publisher.
    ///
    /// # Errors
    /// `NotFound`, a mismatch, or `RoleTaken` if a live publisher is attached.
    pub fn open(name: &str) -> Result<Publisher<T>, OpenError> {
        Self::with_options(name, &Options::new())
    }

    /// Creates or opens `name` as `opts` says ([`Options::subscribers`] and
    /// [`Options::policy`] apply at creation), and attaches as its publisher.
    ///
    /// ```
    /// use shmchan::broadcast::{Policy, Publisher};
    /// use shmchan::{CreateMode, Options};
    ///
    /// # let name = format!("doc-bcast-opts-{}", std::process::id());
    /// let opts = Options::new()
    ///     .capacity(256)
    ///     .subscribers(4)
    ///     .policy(Policy::Overwrite)
    ///     .mode(CreateMode::CreateExclusive);
    /// let tx = Publisher::<[f32; 3]>::with_options(&name, &opts)?;
    /// assert_eq!(tx.policy(), Policy::Overwrite);
    /// assert_eq!(tx.max_subscribers(), 4);
    /// # Ok::<(), shmchan::OpenError>(())
    /// ```
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Publisher<T>, OpenError> {
        let shared = Shared::attach(name, opts, &Wanted::typed::<T>(FLAVOR_BROADCAST))?;
        let hdr = shared.header();
        let claim = peers::claim(
            &shared.seg.file,
            &hdr.peers[PUBLISHER_ENTRY],
            PUBLISHER_ENTRY,
            Role::Sender,
            hdr.peer_generation,
        )
        .map_err(role_taken("publisher"))?;
        let lossless = shared.policy() == Policy::Lossless;
        // The only waiter on `not_full` is the publisher: a count left there is a dead
        // predecessor's.
        hdr.ring.not_full.w.sleepers.store(0, Ordering::Relaxed);
        hdr.attach.sender_attaches.fetch_add(1, Ordering::Relaxed);
        let at = Attached::new(shared, claim, opts);
        let ring = ring::Publisher::attach(at.ring(), lossless);
        // Subscribers blocked on "is anyone there?" look again.
        wait::notify_all(&at.shared.header().ring.not_empty.w);
        Ok(Publisher {
            ring,
            at,
            _t: PhantomData,
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.ring().capacity() as usize
    }

    /// The policy the channel was created with.
    pub fn policy(&self) -> Policy {
        if self.ring_is_lossless() {
            Policy::Lossless
        } else {
            Policy::Overwrite
        }
    }

    fn ring_is_lossless(&self) -> bool {
        self.at.shared.policy() == Policy::Lossless
    }

    /// How many subscribers may be attached at once.
    pub fn max_subscribers(&self) -> usize {
        self.ring.ring().cursors().len()
    }

    /// Subscribers attached now (a snapshot; one killed is counted until the
    /// publisher or an inspection finds it gone).
    pub fn subscriber_count(&self) -> usize {
        self.ring
            .ring()
            .cursors()
            .iter()
            .filter(|c| c.owner.load(Ordering::Relaxed) != 0)
            .count()
    }

    /// Messages published so far on this channel (the position of the next one).
    pub fn position(&self) -> u64 {
        self.ring.tail()
    }

    /// Whether this handle created the segment and will remove its name on drop.
    pub fn owns_name(&self) -> bool {
        self.at.shared.seg.owns_name()
    }

    /// Keep the segment's name when this (creating) handle is dropped.
    pub fn keep(&mut self) {
        self.at.shared.seg.keep();
    }

    /// Evicts the subscribers holding the publisher back whose holder is gone (its
    /// entry no longer names it, or, with `probe`, its process died). Whether any was.
    fn evict_gone(&self, probe: bool) -> bool {
        let mut evicted = false;
        let laggards: Vec<(usize, u64)> = self.ring.laggards().collect();
        for (i, owner) in laggards {
            let index = i + 1;
            let holds = |st: EntryState| matches!(st, EntryState::Held(h) if u64::from(h.generation) == owner);
            let st = self.at.entry(index, false);
            let gone = !holds(st) || (probe && !holds(self.at.entry(index, true)));
            if gone && self.ring.evict(i, owner) {
                evicted = true;
            }
        }
        evicted
    }

    /// Whether the next message may be written now; evicts gone subscribers first if
    /// the ring is full (probing liveness at most once per interval).
    #[inline]
    fn room(&self) -> bool {
        self.ring.has_room() || self.room_after_eviction(self.at.probe_due())
    }

    #[cold]
    fn room_after_eviction(&self, probe: bool) -> bool {
        self.evict_gone(probe) && self.ring.has_room()
    }

    #[inline]
    fn publish(&self, msg: T) {
        let bytes = bytemuck::bytes_of(&msg);
        // SAFETY: `bytes` is readable for its length, which is size_of::<T>(), the
        // channel's message size (checked at attach).
        unsafe { self.ring.publish(bytes.as_ptr(), bytes.len()) };
        wait::notify_every(&self.ring.ring().ctl().not_empty.w);
    }

    /// Sends `msg` if there is room, without waiting. Under [`Policy::Overwrite`]
    /// there always is.
    ///
    /// # Errors
    /// `Full(msg)` if the slowest live subscriber has not read the slot this message
    /// needs (lossless); `Disconnected(msg)` only in a process forked after the
    /// handle attached.
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.at.forked() {
            return Err(TrySendError::Disconnected(msg));
        }
        if !self.room() {
            return Err(TrySendError::Full(msg));
        }
        self.publish(msg);
        Ok(())
    }

    /// Sends `msg`, waiting while the slowest live subscriber is a whole ring behind
    /// (lossless). A subscriber whose process died is evicted within the liveness
    /// interval and holds the publisher back no longer.
    ///
    /// # Errors
    /// `Disconnected(msg)` only in a process forked after the handle attached.
    #[inline]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.send_deadline(msg, None)
            .map_err(|e| SendError::Disconnected(e.into_inner()))
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// `Timeout(msg)`, or `Disconnected(msg)` in a forked child.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(msg, deadline_in(timeout))
    }

    /// Sends `msg`, waiting until `deadline` (`None`: forever) for room.
    ///
    /// # Errors
    /// `Timeout(msg)`, or `Disconnected(msg)` in a forked child.
    pub fn send_deadline(
        &self,
        msg: T,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(), SendTimeoutError<T>> {
        if self.at.forked() {
            return Err(SendTimeoutError::Disconnected(msg));
        }
        if !self.room() && !self.wait_for_room(deadline.into()) {
            return Err(SendTimeoutError::Timeout(msg));
        }
        self.publish(msg);
        Ok(())
    }

    /// Waits until the next slot may be written; `false` at the deadline.
    #[cold]
    fn wait_for_room(&self, deadline: Option<Instant>) -> bool {
        let w = &self.ring.ring().ctl().not_full.w;
        let r = wait::block_on(
            w,
            Some(self.at.registration(peers::NOT_FULL)),
            self.at.wait,
            deadline,
            self.at.liveness,
            |_| {
                if self.ring.has_room() {
                    Attempt::Ready(())
                } else {
                    Attempt::Pending
                }
            },
            || self.room_after_eviction(true).then_some(()),
        );
        // A deadline shorter than the liveness interval never reaches a slice: look
        // for gone subscribers as a `try_send` would (rate limited).
        r.is_ok() || self.room()
    }
}

impl<T: Pod> Drop for Publisher<T> {
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

/// A receiving half of a broadcast channel: it reads every message the publisher
/// sends after it attached (or, with [`Start::Oldest`](super::Start::Oldest), from
/// the oldest one the ring still holds), through a cursor of its own.
///
/// Under [`Policy::Overwrite`] a subscriber that fell a whole ring behind gets
/// `Lagged(n)`, `n` being exactly the number of messages it missed, and continues
/// with the oldest message still in the ring; it never receives a torn message.
///
/// ```
/// use shmchan::broadcast::{Policy, Publisher, Subscriber, TryRecvError};
/// use shmchan::{CreateMode, Options};
///
/// # let name = format!("doc-bcast-lag-{}", std::process::id());
/// let opts = Options::new().capacity(4).policy(Policy::Overwrite).mode(CreateMode::CreateExclusive);
/// let tx = Publisher::<u32>::with_options(&name, &opts)?;
/// let rx = Subscriber::<u32>::open(&name)?;
/// for v in 0..10 {
///     tx.send(v)?; // never waits
/// }
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Lagged(6)));
/// assert_eq!(rx.try_recv(), Ok(6));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Subscriber<T: Pod> {
    ring: ring::Subscriber,
    at: Attached,
    lossless: bool,
    _t: PhantomData<T>,
}

// SAFETY: as for Publisher.
unsafe impl<T: Pod + Send> Send for Subscriber<T> {}

impl<T: Pod> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("capacity", &self.capacity())
            .field("position", &self.ring.pos())
            .finish()
    }
}

impl<T: Pod> Subscriber<T> {
    /// Opens the existing broadcast channel `name` as a new subscriber, starting at
    /// the next message.
    ///
    /// # Errors
    /// `NotFound`, a mismatch, or `TooManyPeers` if every subscriber entry is held.
    pub fn open(name: &str) -> Result<Subscriber<T>, OpenError> {
        Self::with_options(name, &Options::new())
    }

    /// Creates or opens `name` as `opts` says, and attaches as a subscriber starting
    /// where [`Options::start`] says.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Subscriber<T>, OpenError> {
        let shared = Shared::attach(name, opts, &Wanted::typed::<T>(FLAVOR_BROADCAST))?;
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
        let at = Attached::new(shared, claim, opts);
        let ring = ring::Subscriber::join(
            at.ring(),
            claim.index - 1,
            u64::from(claim.generation),
            opts.start,
        );
        let Some(ring) = ring else {
            at.release();
            return Err(OpenError::Corrupt("subscriber entry without a cursor"));
        };
        Ok(Subscriber {
            ring,
            at,
            lossless,
            _t: PhantomData,
        })
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.ring.ring().capacity() as usize
    }

    /// Messages published that this subscriber has not received yet (a snapshot; at
    /// most the capacity counts as still in the ring).
    pub fn len(&self) -> usize {
        let behind = self.ring.ring().scan_tail().saturating_sub(self.ring.pos());
        behind.min(self.ring.ring().capacity()) as usize
    }

    /// Whether there is nothing to receive now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The position of the next message this subscriber receives.
    pub fn position(&self) -> u64 {
        self.ring.pos()
    }

    /// Whether the publisher is gone (it was attached and left or died). Probes its
    /// liveness at most once per liveness interval.
    pub fn is_disconnected(&self) -> bool {
        self.publisher_gone(self.at.probe_due())
    }

    /// Whether this handle created the segment and will remove its name on drop.
    pub fn owns_name(&self) -> bool {
        self.at.shared.seg.owns_name()
    }

    /// Keep the segment's name when this (creating) handle is dropped.
    pub fn keep(&mut self) {
        self.at.shared.seg.keep();
    }

    fn publisher_gone(&self, probe: bool) -> bool {
        self.at.forked() || matches!(self.at.entry(PUBLISHER_ENTRY, probe), EntryState::Vacated)
    }

    /// One look at the next slot.
    #[inline]
    fn take(&self) -> Result<T, Option<u64>> {
        let mut v = MaybeUninit::<T>::uninit();
        // SAFETY: `v` is writable for size_of::<T>() bytes, the channel's message size.
        match unsafe { self.ring.try_read(v.as_mut_ptr().cast(), size_of::<T>()) } {
            Read::Got => {
                if self.lossless {
                    wait::notify(&self.ring.ring().ctl().not_full.w);
                }
                // SAFETY: every byte of `v` was written by the copy, and T is Pod
                // (any bytes are a valid T).
                Ok(unsafe { v.assume_init() })
            }
            Read::Empty => Err(None),
            Read::Lagged(n) => Err(Some(n)),
        }
    }

    /// Receives the next message if it is there, without waiting.
    ///
    /// # Errors
    /// `Empty`; `Lagged(n)` if the publisher overwrote `n` messages this subscriber had
    /// not read; `Disconnected` once the publisher is gone and everything is received.
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if self.at.forked() {
            return Err(TryRecvError::Disconnected);
        }
        match self.take() {
            Ok(v) => Ok(v),
            Err(Some(n)) => Err(TryRecvError::Lagged(n)),
            Err(None) => self.empty_or_gone(),
        }
    }

    #[cold]
    fn empty_or_gone(&self) -> Result<T, TryRecvError> {
        let gone = self.publisher_gone(self.at.probe_due());
        // Look again after seeing the publisher gone: its last message was published
        // before it vacated its entry (Release), which we loaded (Acquire).
        match self.take() {
            Ok(v) => Ok(v),
            Err(Some(n)) => Err(TryRecvError::Lagged(n)),
            Err(None) if gone => Err(TryRecvError::Disconnected),
            Err(None) => Err(TryRecvError::Empty),
        }
    }

    /// Receives the next message, waiting for it.
    ///
    /// # Errors
    /// `Lagged(n)`, or `Disconnected` once the publisher is gone and everything is
    /// received.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_deadline(None).map_err(|e| match e {
            RecvTimeoutError::Lagged(n) => RecvError::Lagged(n),
            _ => RecvError::Disconnected,
        })
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `Lagged(n)` or `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(deadline_in(timeout))
    }

    /// Receives the next message, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// `Timeout`, `Lagged(n)` or `Disconnected`.
    pub fn recv_deadline(
        &self,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<T, RecvTimeoutError> {
        match self.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Lagged(n)) => return Err(RecvTimeoutError::Lagged(n)),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let deadline = deadline.into();
        if wait::quick_poll(|| self.ring.ready()) {
            return self.try_recv().map_err(|e| match e {
                TryRecvError::Lagged(n) => RecvTimeoutError::Lagged(n),
                TryRecvError::Disconnected => RecvTimeoutError::Disconnected,
                TryRecvError::Empty => RecvTimeoutError::Timeout,
            });
        }
        let w = &self.ring.ring().ctl().not_empty.w;
        let r = wait::block_on(
            w,
            Some(self.at.registration(peers::NOT_EMPTY)),
            self.at.wait,
            deadline,
            self.at.liveness,
            |_| match self.take() {
                Ok(v) => Attempt::Ready(Ok(v)),
                Err(Some(n)) => Attempt::Ready(Err(RecvTimeoutError::Lagged(n))),
                Err(None) if self.publisher_gone(false) => {
                    Attempt::Ready(Err(RecvTimeoutError::Disconnected))
                }
                Err(None) => Attempt::Pending,
            },
            || {
                self.publisher_gone(true)
                    .then_some(Err(RecvTimeoutError::Disconnected))
            },
        );
        match r {
            // The publisher is gone: one more look for a last message.
            Ok(Err(RecvTimeoutError::Disconnected)) => match self.take() {
                Ok(v) => Ok(v),
                Err(Some(n)) => Err(RecvTimeoutError::Lagged(n)),
                Err(None) => Err(RecvTimeoutError::Disconnected),
            },
            Ok(r) => r,
            // As a `try_recv` would: a loop of short timeouts still learns that the
            // publisher died.
            Err(_) => match self.empty_or_gone() {
                Ok(v) => Ok(v),
                Err(TryRecvError::Lagged(n)) => Err(RecvTimeoutError::Lagged(n)),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
            },
        }
    }

    /// A blocking iterator: each message, or `Err(n)` where `n` messages were missed;
    /// it ends when the publisher is gone and everything is received.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over what is there now (and `Err(n)` for missed runs).
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

impl<T: Pod> Drop for Subscriber<T> {
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

/// Blocking iterator of a [`Subscriber`]; see [`Subscriber::iter`].
#[derive(Debug)]
pub struct Iter<'a, T: Pod> {
    rx: &'a Subscriber<T>,
}

impl<T: Pod> Iterator for Iter<'_, T> {
    /// A message, or the number of messages missed before the next one.
    type Item = Result<T, u64>;
    fn next(&mut self) -> Option<Result<T, u64>> {
        match self.rx.recv() {
            Ok(v) => Some(Ok(v)),
            Err(RecvError::Lagged(n)) => Some(Err(n)),
            Err(RecvError::Disconnected) => None,
        }
    }
}

/// Non-blocking iterator of a [`Subscriber`]; see [`Subscriber::try_iter`].
#[derive(Debug)]
pub struct TryIter<'a, T: Pod> {
    rx: &'a Subscriber<T>,
}

impl<T: Pod> Iterator for TryIter<'_, T> {
    /// A message, or the number of messages missed before the next one.
    type Item = Result<T, u64>;
    fn next(&mut self) -> Option<Result<T, u64>> {
        match self.rx.try_recv() {
            Ok(v) => Some(Ok(v)),
            Err(TryRecvError::Lagged(n)) => Some(Err(n)),
            Err(_) => None,
        }
    }
}
