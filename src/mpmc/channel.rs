//! The typed public handles of an MPMC channel: [`Sender`] and [`Receiver`], which can
//! be cloned within a process and attached from any number of processes.

use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::layout::FLAVOR_MPMC;
use crate::mpmc::ring::{Blocked, Claimant, GEN_MASK, MpmcRing, WRITING, decode};
use crate::options::Options;
use crate::peers::{self, Role};
use crate::shared::{Shared, Wanted};
use crate::spsc::endpoint::deadline_in;
use crate::sync::{AtomicU32, Ordering};
use crate::wait::{self, Attempt};
use bytemuck::Pod;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn wanted<T: Pod>() -> Wanted {
    Wanted::typed::<T>(FLAVOR_MPMC)
}

/// One attachment (a peer-table entry), shared by all clones of a handle: the common
/// attachment (mapping, claim, settings, probe rate limit, fork generation; reached
/// through `Deref`) plus the MPMC ring and our claimant tag.
struct Attachment {
    base: crate::attachment::Attachment,
    ring: MpmcRing,
    me: Claimant,
    role: Role,
}

impl std::ops::Deref for Attachment {
    type Target = crate::attachment::Attachment;
    fn deref(&self) -> &crate::attachment::Attachment {
        &self.base
    }
}

impl Attachment {
    fn attach<T: Pod>(
        name: &str,
        opts: &Options,
        role: Role,
    ) -> Result<Arc<Attachment>, OpenError> {
        let shared = Shared::attach(name, opts, &wanted::<T>())?;
        let hdr = shared.header();
        let peers = shared.peers();
        let claim = peers::claim_any(&shared.seg.file, peers, 0, role, hdr.peer_generation)?
            .ok_or(OpenError::TooManyPeers(peers.len() as u32))?;
        // (A dead holder we replaced is still counted in its role's hint and as a
        // sleeper on the words it slept on: `Attachment::new` below forgets it; our own
        // count is added first, so the hint never reads zero while we attach.)
        Self::count(&shared, role as u32).fetch_add(1, Ordering::Relaxed);
        let attaches = match role {
            Role::Sender => &hdr.attach.sender_attaches,
            Role::Receiver => &hdr.attach.receiver_attaches,
        };
        attaches.fetch_add(1, Ordering::Relaxed);
        // Peers waiting for "anyone there?" look again.
        wait::notify_all(&hdr.ring.not_empty.w);
        wait::notify_all(&hdr.ring.not_full.w);
        // SAFETY: the header was validated; the slot array (capacity * slot_size bytes,
        // 8-aligned claim words) follows it inside the mapping, which `shared` keeps
        // alive as long as this attachment, the ring's only user.
        let ring = unsafe { MpmcRing::new(hdr.ring, shared.slots(), &shared.geo) };
        let me = Claimant {
            peer: claim.index as u8,
            generation: claim.generation & GEN_MASK,
        };
        // Claims are tagged with 13 generation bits; a claim a dead holder of this entry
        // left behind could match ours by chance and then never be cleared. Nobody but
        // us can make claims under this index now, so any claim there is stale.
        ring.clear_claims_of(me.peer);
        Ok(Arc::new(Attachment {
            base: crate::attachment::Attachment::new(shared, claim, opts),
            ring,
            me,
            role,
        }))
    }

    fn count(shared: &Shared, role: u32) -> &AtomicU32 {
        let a = shared.header().attach;
        if role == Role::Sender as u32 {
            &a.senders
        } else {
            &a.receivers
        }
    }

    fn reaped(&self) -> impl FnMut(u64) + '_ {
        |dead| self.shared.forget_holder(dead)
    }

    /// Someone is counted asleep on a word we just notified. If a dead process left
    /// that count, every later notification pays for it: look for dead holders, at
    /// most once per liveness interval.
    #[cold]
    fn sleepers_seen(&self) {
        if self.probe_due() {
            peers::reap_all(&self.shared.seg.file, self.shared.peers(), self.reaped());
        }
    }

    /// Whether the other role is gone: it was attached once, and no live holder is
    /// left. `probe` checks liveness (and reaps the dead).
    fn others_gone(&self, probe: bool) -> bool {
        let other = match self.role {
            Role::Sender => Role::Receiver,
            Role::Receiver => Role::Sender,
        };
        let a = self.shared.header().attach;
        let ever = match other {
            Role::Sender => a.sender_attaches.load(Ordering::Relaxed),
            Role::Receiver => a.receiver_attaches.load(Ordering::Relaxed),
        };
        ever > 0
            && !peers::any_of_role(
                &self.shared.seg.file,
                self.shared.peers(),
                other,
                probe,
                self.reaped(),
            )
    }

    /// Fast check for senders: the hint says no receiver is attached.
    #[inline]
    fn receivers_hint_zero(&self) -> bool {
        self.shared
            .header()
            .attach
            .receivers
            .load(Ordering::Relaxed)
            == 0
    }

    /// Fast check for receivers: the hint says no sender is attached.
    #[inline]
    fn senders_hint_zero(&self) -> bool {
        self.shared.header().attach.senders.load(Ordering::Relaxed) == 0
    }

    /// Clears the claim in `b` if its holder is gone. Returns whether it cleared one.
    fn clear_if_dead(&self, b: Blocked) -> bool {
        let Some(c) = b.claim() else {
            // SKIP slots need no liveness check.
            return self.ring.clear_dead_claim(b, |_| true);
        };
        let peers = self.shared.peers();
        let Some(entry) = peers.get(c.peer as usize) else {
            // A claimant index outside the table is garbage: nobody can finish it.
            return self.ring.clear_dead_claim(b, |_| true);
        };
        let mut reaped = self.reaped();
        let file = &self.shared.seg.file;
        self.ring.clear_dead_claim(b, |c| {
            peers::claimant_gone(
                file,
                entry,
                c.peer as usize,
                c.generation,
                GEN_MASK,
                &mut reaped,
            )
        })
    }
}

impl Drop for Attachment {
    fn drop(&mut self) {
        if self.forked() {
            // Inherited through fork(): the entry, the lock and the name belong to the
            // process that attached.
            return;
        }
        self.base.release();
        let hdr = self.shared.header();
        wait::notify_all(&hdr.ring.not_empty.w);
        wait::notify_all(&hdr.ring.not_full.w);
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("role", &self.role)
            .field("peer", &self.me.peer)
            .field("capacity", &self.shared.geo.capacity)
            .finish()
    }
}

/// The sending half of an MPMC channel in shared memory.
///
/// Clone it to send from several threads; open the channel again to send from other
/// processes. Receivers get `Disconnected` once every sender in every process is gone
/// (dropped or dead) and the ring is drained.
///
/// ```
/// use shmchan::mpmc::{Receiver, Sender};
/// # let name = format!("doc-mpmc-{}", std::process::id());
/// let tx = Sender::<u64>::create(&name, 64)?;
/// let rx = Receiver::<u64>::open(&name)?;
/// let handles: Vec<_> = (0..4u64)
///     .map(|t| {
///         let tx = tx.clone();
///         std::thread::spawn(move || for i in 0..100 { tx.send(t * 1000 + i).unwrap() })
///     })
///     .collect();
/// drop(tx);
/// let mut got: Vec<u64> = Vec::new();
/// let rx2 = rx.clone();
/// let t = std::thread::spawn(move || rx2.iter().count());
/// got.extend(rx.iter());
/// for h in handles { h.join().unwrap(); }
/// assert_eq!(got.len() + t.join().unwrap(), 400);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Sender<T: Pod> {
    att: Arc<Attachment>,
    _t: PhantomData<fn(T) -> T>,
}

/// The receiving half of an MPMC channel in shared memory. Clone it to receive from
/// several threads; each message goes to exactly one receiver.
pub struct Receiver<T: Pod> {
    att: Arc<Attachment>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            att: self.att.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            att: self.att.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpmc::Sender")
            .field("att", &self.att)
            .finish()
    }
}

impl<T: Pod> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("mpmc::Receiver")
            .field("att", &self.att)
            .finish()
    }
}

macro_rules! mpmc_common {
    () => {
        /// Messages in the channel now (a snapshot).
        pub fn len(&self) -> usize {
            self.att.ring.len() as usize
        }

        /// Whether the channel is empty now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether the channel is full now.
        pub fn is_full(&self) -> bool {
            self.len() as u64 >= self.att.ring.capacity()
        }

        /// Number of slots.
        pub fn capacity(&self) -> usize {
            self.att.ring.capacity() as usize
        }

        /// Whether every peer of the other role is known to be gone (one was attached
        /// once). Probes liveness at most once per liveness interval.
        pub fn is_disconnected(&self) -> bool {
            self.att.forked() || self.att.others_gone(self.att.probe_due())
        }

        /// Whether this attachment created the segment and removes its name when the
        /// last clone is dropped.
        pub fn owns_name(&self) -> bool {
            self.att.shared.seg.owns_name()
        }
    };
}

impl<T: Pod> Sender<T> {
    crate::attachment::create_and_open!(
        create: "Creates an MPMC channel named `name` with `capacity` slots and attaches as a\n\
            sender. The name is removed when the last clone of this handle is dropped.\n\
            \n\
            # Errors\n\
            See [`OpenError`].",
        open: "Opens the existing MPMC channel `name` as a sender.\n\
            \n\
            # Errors\n\
            `NotFound`, a mismatch, or `TooManyPeers` if the peer table is full.",
    );

    /// Creates or opens `name` as `opts` says, and attaches as a sender.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Sender<T>, OpenError> {
        Ok(Sender {
            att: Attachment::attach::<T>(name, opts, Role::Sender)?,
            _t: PhantomData,
        })
    }

    mpmc_common!();

    #[inline]
    fn attempt(&self, msg: T, confirm: bool) -> Result<(), Blocked> {
        // SAFETY: the ring hands us the payload of a slot it claimed for us: inside the
        // mapping, size_of::<T>() bytes aligned for T (geometry validated), ours alone
        // until published.
        self.att.ring.try_send(self.att.me, confirm, |p| unsafe {
            p.cast::<T>().write(msg)
        })
    }

    /// Sends `msg` if there is room, without waiting.
    ///
    /// # Errors
    /// `Full(msg)`, or `Disconnected(msg)` if no receiver is left.
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.att.forked() || (self.att.receivers_hint_zero() && self.att.others_gone(false)) {
            return Err(TrySendError::Disconnected(msg));
        }
        match self.attempt(msg, false) {
            Ok(()) => {
                // Relaxed: only a hint that a dead sleeper may be counted; the ring's
                // notification already did the ordered check.
                if self
                    .att
                    .ring
                    .ctl()
                    .not_empty
                    .w
                    .sleepers
                    .load(Ordering::Relaxed)
                    > 0
                {
                    self.att.sleepers_seen();
                }
                Ok(())
            }
            Err(b) => self.blocked(msg, b),
        }
    }

    #[cold]
    fn blocked(&self, msg: T, b: Blocked) -> Result<(), TrySendError<T>> {
        if self.att.probe_due() {
            if self.att.others_gone(true) {
                return Err(TrySendError::Disconnected(msg));
            }
            if self.att.clear_if_dead(b) {
                return self
                    .attempt(msg, false)
                    .map_err(|_| TrySendError::Full(msg));
            }
        }
        Err(TrySendError::Full(msg))
    }

    /// Sends `msg`, waiting while the ring is full.
    ///
    /// # Errors
    /// `Disconnected(msg)` once no receiver is left.
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        self.send_deadline(msg, None)
            .map_err(|e| SendError::Disconnected(e.into_inner()))
    }

    /// Sends `msg`, waiting at most `timeout` while the ring is full.
    ///
    /// # Errors
    /// `Timeout(msg)` or `Disconnected(msg)`.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(msg, deadline_in(timeout))
    }

    /// Sends `msg`, waiting until `deadline` (`None`: forever) while the ring is full.
    ///
    /// # Errors
    /// `Timeout(msg)` or `Disconnected(msg)`.
    pub fn send_deadline(
        &self,
        msg: T,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(), SendTimeoutError<T>> {
        match self.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Disconnected(m)) => return Err(SendTimeoutError::Disconnected(m)),
            Err(TrySendError::Full(_)) => {}
        }
        let att = &*self.att;
        let last: Cell<Option<Blocked>> = Cell::new(None);
        let r = wait::block_on(
            &att.ring.ctl().not_full.w,
            att.registration(peers::NOT_FULL),
            att.wait,
            deadline.into(),
            att.liveness,
            |last_look| match self.attempt(msg, last_look) {
                Ok(()) => Attempt::Ready(true),
                Err(b) => {
                    last.set(Some(b));
                    if att.receivers_hint_zero() && att.others_gone(false) {
                        Attempt::Ready(false)
                    } else {
                        Attempt::Pending
                    }
                }
            },
            || {
                if att.others_gone(true) {
                    return Some(false);
                }
                if let Some(b) = last.get() {
                    att.clear_if_dead(b);
                }
                None
            },
        );
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendTimeoutError::Disconnected(msg)),
            // A deadline shorter than the liveness interval never reaches a slice:
            // check as `try_send` would (rate limited), so that a loop of short
            // timeouts still learns that every receiver died.
            Err(_) => match self.try_send(msg) {
                Ok(()) => Ok(()),
                Err(TrySendError::Disconnected(m)) => Err(SendTimeoutError::Disconnected(m)),
                Err(TrySendError::Full(m)) => Err(SendTimeoutError::Timeout(m)),
            },
        }
    }
}

impl<T: Pod> Receiver<T> {
    crate::attachment::create_and_open!(
        create: "Creates an MPMC channel named `name` with `capacity` slots and attaches as a\n\
            receiver. The name is removed when the last clone of this handle is dropped.\n\
            \n\
            # Errors\n\
            See [`OpenError`].",
        open: "Opens the existing MPMC channel `name` as a receiver.\n\
            \n\
            # Errors\n\
            `NotFound`, a mismatch, or `TooManyPeers` if the peer table is full.",
    );

    /// Creates or opens `name` as `opts` says, and attaches as a receiver.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Receiver<T>, OpenError> {
        Ok(Receiver {
            att: Attachment::attach::<T>(name, opts, Role::Receiver)?,
            _t: PhantomData,
        })
    }

    mpmc_common!();

    #[inline]
    fn attempt(&self, confirm: bool) -> Result<T, Blocked> {
        // SAFETY: the ring hands us the payload of a slot it claimed for us and that
        // its producer published (Acquire): inside the mapping, aligned for T, not
        // written until we release it. T: Pod, so any bytes form a valid T.
        self.att
            .ring
            .try_recv(self.att.me, confirm, |p| unsafe { p.cast::<T>().read() })
    }

    /// Receives a message if one is there, without waiting.
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once every sender is gone and the ring is drained.
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if self.att.forked() {
            return Err(TryRecvError::Disconnected);
        }
        match self.attempt(false) {
            Ok(v) => {
                // As in `Sender::try_send`: a dead sleeper may be counted.
                if self
                    .att
                    .ring
                    .ctl()
                    .not_full
                    .w
                    .sleepers
                    .load(Ordering::Relaxed)
                    > 0
                {
                    self.att.sleepers_seen();
                }
                Ok(v)
            }
            Err(b) => self.empty(b),
        }
    }

    #[cold]
    fn empty(&self, b: Blocked) -> Result<T, TryRecvError> {
        let probe = self.att.probe_due();
        if probe && self.att.clear_if_dead(b) {
            if let Ok(v) = self.attempt(false) {
                return Ok(v);
            }
        }
        if !self.att.others_gone(probe) {
            return Err(TryRecvError::Empty);
        }
        self.drain().ok_or(TryRecvError::Disconnected)
    }

    /// Every sender is gone: takes what is left, clearing the claims they left behind
    /// (a sender that left cleanly published everything it claimed; one that died
    /// left at most torn slots, which are skipped).
    fn drain(&self) -> Option<T> {
        loop {
            match self.attempt(true) {
                Ok(v) => return Some(v),
                Err(b) => {
                    if b.claim().is_some() && self.att.clear_if_dead(b) {
                        continue;
                    }
                    return None;
                }
            }
        }
    }

    /// Receives a message, waiting while the ring is empty.
    ///
    /// # Errors
    /// `RecvError` once every sender is gone and the ring is drained.
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_deadline(None).map_err(|_| RecvError)
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(deadline_in(timeout))
    }

    /// Receives a message, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`.
    pub fn recv_deadline(
        &self,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<T, RecvTimeoutError> {
        match self.try_recv() {
            Ok(v) => return Ok(v),
            Err(TryRecvError::Disconnected) => return Err(RecvTimeoutError::Disconnected),
            Err(TryRecvError::Empty) => {}
        }
        let att = &*self.att;
        let last: Cell<Option<Blocked>> = Cell::new(None);
        let r = wait::block_on(
            &att.ring.ctl().not_empty.w,
            att.registration(peers::NOT_EMPTY),
            att.wait,
            deadline.into(),
            att.liveness,
            |last_look| match self.attempt(last_look) {
                Ok(v) => Attempt::Ready(Some(v)),
                Err(b) => {
                    last.set(Some(b));
                    // A sender that left cleanly is seen here at once (a load of the
                    // hint, then a scan of the table; no syscall).
                    if decode(b.word).state != WRITING
                        && att.senders_hint_zero()
                        && att.others_gone(false)
                    {
                        Attempt::Ready(None)
                    } else {
                        Attempt::Pending
                    }
                }
            },
            || {
                if let Some(b) = last.get() {
                    if att.clear_if_dead(b) {
                        return None;
                    }
                }
                if att.others_gone(true) {
                    return Some(None);
                }
                None
            },
        );
        match r {
            Ok(Some(v)) => Ok(v),
            Ok(None) => self.drain().ok_or(RecvTimeoutError::Disconnected),
            // As in `send_deadline`: check as `try_recv` would (rate limited).
            Err(_) => match self.try_recv() {
                Ok(v) => Ok(v),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
            },
        }
    }

    /// A blocking iterator: yields messages until every sender is gone and the ring
    /// is drained.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over the messages that are there now.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

/// Blocking iterator of an MPMC [`Receiver`].
#[derive(Debug)]
pub struct Iter<'a, T: Pod> {
    rx: &'a Receiver<T>,
}

impl<T: Pod> Iterator for Iter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

/// Non-blocking iterator of an MPMC [`Receiver`].
#[derive(Debug)]
pub struct TryIter<'a, T: Pod> {
    rx: &'a Receiver<T>,
}

impl<T: Pod> Iterator for TryIter<'_, T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.try_recv().ok()
    }
}

impl<'a, T: Pod> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}
