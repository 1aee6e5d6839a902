//! The typed public handles of a broadcast channel: [`Publisher`] and [`Subscriber`].

use super::core::{PubCore, SubCore};
use super::error::{RecvError, RecvRefError, RecvTimeoutError, TryRecvError};
use super::ring::Read;
use crate::error::{OpenError, SendError, SendTimeoutError, TrySendError};
use crate::layout::FLAVOR_BROADCAST;
use crate::options::{Options, Policy};
use crate::shared::Wanted;
use crate::spsc::endpoint::deadline_in;
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::mem::MaybeUninit;
use std::ops::Deref;
use std::time::{Duration, Instant};

/// Methods every publisher shares (typed and byte).
macro_rules! publisher_methods {
    () => {
        /// Number of slots.
        pub fn capacity(&self) -> usize {
            self.core.ring.ring().capacity() as usize
        }

        /// The policy the channel was created with.
        pub fn policy(&self) -> Policy {
            self.core.policy()
        }

        /// How many subscribers may be attached at once.
        pub fn max_subscribers(&self) -> usize {
            self.core.ring.ring().cursors().len()
        }

        /// Subscribers attached now (a snapshot; one killed is counted until the
        /// publisher, blocked by it, finds it gone).
        pub fn subscriber_count(&self) -> usize {
            self.core.subscriber_count()
        }

        /// Messages published on this channel so far (the position of the next one).
        pub fn position(&self) -> u64 {
            self.core.ring.tail()
        }

        /// Whether this handle created the segment and will remove its name on drop.
        pub fn owns_name(&self) -> bool {
            self.core.shared().seg.owns_name()
        }

        /// Keep the segment's name when this (creating) handle is dropped.
        pub fn keep(&mut self) {
            self.core.keep();
        }
    };
}
pub(crate) use publisher_methods;

/// Methods every subscriber shares (typed and byte).
macro_rules! subscriber_methods {
    () => {
        /// Number of slots.
        pub fn capacity(&self) -> usize {
            self.core.ring.ring().capacity() as usize
        }

        /// Messages published that this subscriber has not received yet (a snapshot;
        /// at most the capacity counts as still in the ring).
        pub fn len(&self) -> usize {
            self.core.len()
        }

        /// Whether there is nothing to receive now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// The position of the next message this subscriber receives.
        pub fn position(&self) -> u64 {
            self.core.ring.pos()
        }

        /// Whether the publisher is gone (it was attached, and left or died). Probes
        /// its liveness at most once per liveness interval.
        pub fn is_disconnected(&self) -> bool {
            self.core.publisher_gone_rate_limited()
        }

        /// Whether this handle created the segment and will remove its name on drop.
        pub fn owns_name(&self) -> bool {
            self.core.shared().seg.owns_name()
        }

        /// Keep the segment's name when this (creating) handle is dropped.
        pub fn keep(&mut self) {
            self.core.keep();
        }
    };
}
pub(crate) use subscriber_methods;

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
    core: PubCore,
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
            .field("position", &self.position())
            .finish()
    }
}

impl<T: Pod> Publisher<T> {
    crate::attachment::create_and_open!(
        create: "Creates a lossless broadcast channel named `name` with `capacity` slots (a\n\
            power of two) and room for 16 subscribers, and attaches as its publisher. The\n\
            name is removed when this handle is dropped (see [`Options::keep`]).\n\
            \n\
            # Errors\n\
            See [`OpenError`].",
        open: "Opens the existing broadcast channel `name` as its publisher.\n\
            \n\
            # Errors\n\
            `NotFound`, a mismatch, or `RoleTaken` if a live publisher is attached.",
    );

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
        Ok(Publisher {
            core: PubCore::attach(name, opts, &Wanted::typed::<T>(FLAVOR_BROADCAST))?,
            _t: PhantomData,
        })
    }

    publisher_methods!();

    /// Writes `msg` at `tail + k` (not yet published).
    #[inline]
    fn write(&self, k: u64, msg: &T) {
        let bytes = bytemuck::bytes_of(msg);
        // SAFETY: `bytes` is readable for size_of::<T>() bytes, the channel's message
        // size (checked at attach); the caller got room for `tail + k`.
        unsafe { self.core.ring.write(k, bytes.as_ptr(), bytes.len(), None) };
    }

    /// Sends `msg` if there is room, without waiting. Under [`Policy::Overwrite`]
    /// there always is.
    ///
    /// # Errors
    /// `Full(msg)` if the slowest live subscriber has not read the slot this message
    /// needs (lossless); `Disconnected(msg)` only in a process forked after the
    /// handle attached.
    ///
    /// ```
    /// # use shmchan::broadcast::{Publisher, Subscriber};
    /// # use shmchan::TrySendError;
    /// # let name = format!("doc-bcast-try-send-{}", std::process::id());
    /// let tx = Publisher::<u32>::create(&name, 2)?;
    /// let rx = Subscriber::<u32>::open(&name)?;
    /// tx.try_send(1)?;
    /// tx.try_send(2)?;
    /// assert_eq!(tx.try_send(3), Err(TrySendError::Full(3))); // rx has read nothing
    /// assert_eq!(rx.try_recv(), Ok(1));
    /// tx.try_send(3)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.core.forked() {
            return Err(TrySendError::Disconnected(msg));
        }
        if self.core.try_room(1) == 0 {
            return Err(TrySendError::Full(msg));
        }
        self.write(0, &msg);
        self.core.commit(1);
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
        if self.core.forked() {
            return Err(SendTimeoutError::Disconnected(msg));
        }
        if !self.core.room(deadline.into()) {
            return Err(SendTimeoutError::Timeout(msg));
        }
        self.write(0, &msg);
        self.core.commit(1);
        Ok(())
    }

    /// Sends as many of `msgs` as there is room for now, in order, published
    /// together; returns how many (at least one, or zero if `msgs` is empty).
    ///
    /// # Errors
    /// `Full(())` if there is room for none, `Disconnected(())` in a forked child.
    ///
    /// ```
    /// # use shmchan::broadcast::{Publisher, Subscriber};
    /// # let name = format!("doc-bcast-batch-{}", std::process::id());
    /// let tx = Publisher::<u64>::create(&name, 4)?;
    /// let rx = Subscriber::<u64>::open(&name)?;
    /// assert_eq!(tx.try_send_batch(&[1, 2, 3, 4, 5, 6])?, 4);
    /// let mut out = [0; 8];
    /// assert_eq!(rx.try_recv_batch(&mut out)?, 4);
    /// assert_eq!(out[..4], [1, 2, 3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send_batch(&self, msgs: &[T]) -> Result<usize, TrySendError<()>> {
        if self.core.forked() {
            return Err(TrySendError::Disconnected(()));
        }
        if msgs.is_empty() {
            return Ok(0);
        }
        let n = self.core.try_room(msgs.len() as u64);
        if n == 0 {
            return Err(TrySendError::Full(()));
        }
        self.core.ring.begin_batch(n);
        for (k, m) in msgs[..n as usize].iter().enumerate() {
            self.write(k as u64, m);
        }
        self.core.commit(n);
        Ok(n as usize)
    }

    /// Sends up to `n` messages made by `make(i)`, as many as there is room for now;
    /// returns how many. Every `make` runs before anything is published, so if one
    /// panics nothing of the batch is published. Takes `&mut self`: `make` cannot
    /// reach this publisher.
    ///
    /// ```compile_fail
    /// # use shmchan::broadcast::Publisher;
    /// # let mut tx = Publisher::<u64>::create("doc-bcast-reenter", 8).unwrap();
    /// // Re-entering the publisher from `make` does not compile.
    /// tx.try_send_batch_with(2, |i| { tx.try_send(9).ok(); i as u64 });
    /// ```
    ///
    /// # Errors
    /// `Full(())` if there is room for none, `Disconnected(())` in a forked child.
    pub fn try_send_batch_with(
        &mut self,
        n: usize,
        mut make: impl FnMut(usize) -> T,
    ) -> Result<usize, TrySendError<()>> {
        if self.core.forked() {
            return Err(TrySendError::Disconnected(()));
        }
        if n == 0 {
            return Ok(0);
        }
        let room = self.core.try_room(n as u64);
        if room == 0 {
            return Err(TrySendError::Full(()));
        }
        self.core.ring.begin_batch(room);
        for k in 0..room {
            let m = make(k as usize);
            if self.core.forked() {
                // `make` forked and this is the child: the handle is inert here.
                return Err(TrySendError::Disconnected(()));
            }
            self.write(k, &m);
        }
        self.core.commit(room);
        Ok(room as usize)
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
    core: SubCore,
    _t: PhantomData<T>,
}

// SAFETY: as for Publisher.
unsafe impl<T: Pod + Send> Send for Subscriber<T> {}

impl<T: Pod> fmt::Debug for Subscriber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("capacity", &self.capacity())
            .field("position", &self.position())
            .finish()
    }
}

impl<T: Pod> Subscriber<T> {
    crate::attachment::create_and_open!(open: "Opens the existing broadcast channel `name` as a new subscriber, starting at\n\
            the next message.\n\
            \n\
            # Errors\n\
            `NotFound`, a mismatch, or `TooManyPeers` if every subscriber entry is held.");

    /// Creates or opens `name` as `opts` says, and attaches as a subscriber starting
    /// where [`Options::start`] says.
    ///
    /// ```
    /// use shmchan::broadcast::{Publisher, Start, Subscriber};
    /// use shmchan::Options;
    ///
    /// # let name = format!("doc-bcast-start-{}", std::process::id());
    /// let tx = Publisher::<u8>::create(&name, 8)?;
    /// tx.send(1)?;
    /// let late = Subscriber::<u8>::with_options(&name, &Options::new().start(Start::Oldest))?;
    /// assert_eq!(late.try_recv(), Ok(1));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Subscriber<T>, OpenError> {
        Ok(Subscriber {
            core: SubCore::attach(name, opts, &Wanted::typed::<T>(FLAVOR_BROADCAST))?,
            _t: PhantomData,
        })
    }

    subscriber_methods!();

    /// Copies the next message out, if it is published and intact.
    #[inline]
    fn read(&self, v: &mut MaybeUninit<T>) -> Read {
        // SAFETY: `v` is writable for size_of::<T>() bytes, the channel's message size.
        unsafe {
            self.core
                .ring
                .try_read(v.as_mut_ptr().cast(), size_of::<T>())
        }
    }

    /// Receives the next message if it is there, without waiting.
    ///
    /// # Errors
    /// `Empty`; `Lagged(n)` if the publisher overwrote `n` messages this subscriber had
    /// not read; `Disconnected` once the publisher is gone and everything is received.
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let mut v = MaybeUninit::<T>::uninit();
        self.core.try_recv_with(|| self.read(&mut v))?;
        // SAFETY: `Ok` means a `Got`: every byte of `v` was written by the copy, and T
        // is Pod (any bytes are a valid T).
        Ok(unsafe { v.assume_init() })
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
        let mut v = MaybeUninit::<T>::uninit();
        self.core.recv_with(deadline.into(), || self.read(&mut v))?;
        // SAFETY: as in `try_recv`.
        Ok(unsafe { v.assume_init() })
    }

    /// Receives up to `out.len()` messages that are there now, in order; returns how
    /// many (at least one, or zero if `out` is empty). A lag found after some messages
    /// is reported by the next receive.
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv), when no message was received.
    pub fn try_recv_batch(&self, out: &mut [T]) -> Result<usize, TryRecvError> {
        if out.is_empty() {
            return Ok(0);
        }
        let mut n = 0;
        self.try_recv_batch_with_inner(out.len(), |v| {
            out[n] = v;
            n += 1;
        })
    }

    /// Receives up to `max` messages that are there now, handing each to `take` as it
    /// is copied out; returns how many. A panic in `take` leaves the messages handed
    /// over received and the rest in the ring. Takes `&mut self`: `take` cannot reach
    /// this subscriber.
    ///
    /// ```compile_fail
    /// # use shmchan::broadcast::Subscriber;
    /// # let mut rx = Subscriber::<u64>::open("doc-bcast-reenter").unwrap();
    /// // Re-entering the subscriber from `take` does not compile.
    /// rx.try_recv_batch_with(2, |_| { rx.try_recv().ok(); });
    /// ```
    ///
    /// # Errors
    /// As [`try_recv`](Self::try_recv), when no message was received.
    pub fn try_recv_batch_with(
        &mut self,
        max: usize,
        take: impl FnMut(T),
    ) -> Result<usize, TryRecvError> {
        self.try_recv_batch_with_inner(max, take)
    }

    fn try_recv_batch_with_inner(
        &self,
        max: usize,
        mut take: impl FnMut(T),
    ) -> Result<usize, TryRecvError> {
        if max == 0 {
            return Ok(0);
        }
        take(self.try_recv()?);
        let mut n = 1;
        // (`take` may have forked: a handle is inert in the child.)
        while n < max && !self.core.forked() {
            let mut v = MaybeUninit::<T>::uninit();
            match self.read(&mut v) {
                Read::Got => {
                    n += 1;
                    // The slot is released (the cursor moved): tell the publisher
                    // now, so that a panic in `take` cannot keep it asleep.
                    self.core.released();
                    // SAFETY: as in `try_recv`.
                    take(unsafe { v.assume_init() });
                }
                Read::Lagged(k) => {
                    self.core.defer_lag(k.saturating_add(self.core.recount()));
                    break;
                }
                Read::Empty => break,
            }
        }
        Ok(n)
    }

    /// Lossless channels: borrows the next message in place, without copying it; the
    /// slot is released when the borrow is dropped (the publisher waits for it).
    ///
    /// ```
    /// # use shmchan::broadcast::{Publisher, Subscriber};
    /// # let name = format!("doc-bcast-ref-{}", std::process::id());
    /// let tx = Publisher::<[u64; 8]>::create(&name, 4)?;
    /// let mut rx = Subscriber::<[u64; 8]>::open(&name)?;
    /// tx.send([7; 8])?;
    /// assert_eq!(rx.try_recv_ref()?[3], 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// `Overwrite` on a channel created with [`Policy::Overwrite`] (the publisher may
    /// rewrite any slot at any time there: use `try_recv`, which copies and checks),
    /// `LagLimit` on one created with a lag limit (the publisher may evict this
    /// subscriber while it holds the borrow, and rewrite the slot); otherwise as
    /// [`try_recv`](Self::try_recv).
    pub fn try_recv_ref(&mut self) -> Result<RecvRef<'_, T>, RecvRefError> {
        self.core.may_borrow()?;
        self.core.try_recv_with(|| self.core.ring.peek())?;
        Ok(self.msg_ref())
    }

    /// Like [`try_recv_ref`](Self::try_recv_ref), waiting for a message.
    ///
    /// # Errors
    /// `Overwrite`, `LagLimit`, `Lagged(n)` or `Disconnected`.
    pub fn recv_ref(&mut self) -> Result<RecvRef<'_, T>, RecvRefError> {
        self.core.may_borrow()?;
        self.core.recv_with(None, || self.core.ring.peek())?;
        Ok(self.msg_ref())
    }

    fn msg_ref(&mut self) -> RecvRef<'_, T> {
        let ptr = self.core.ring.payload().cast::<T>();
        RecvRef { rx: self, ptr }
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

/// A message borrowed in place by [`Subscriber::try_recv_ref`] (lossless channels).
pub struct RecvRef<'a, T: Pod> {
    rx: &'a mut Subscriber<T>,
    ptr: *const T,
}

impl<T: Pod> Deref for RecvRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is published (peeked), its payload is size_of::<T>() bytes
        // aligned for T (the geometry aligns payloads to max(8, align_of::<T>())), and
        // in a lossless channel without a lag limit (checked before lending) the
        // publisher does not rewrite it while our cursor, counted, has not passed it:
        // it evicts a subscriber only once its process is dead (we release it on
        // drop). A hostile writer of the segment is outside this promise (README:
        // trust boundary).
        unsafe { &*self.ptr }
    }
}

impl<T: Pod> Drop for RecvRef<'_, T> {
    fn drop(&mut self) {
        // In a forked child the cursor is the parent's: leave it alone.
        if !self.rx.core.forked() {
            self.rx.core.ring.release();
            self.rx.core.released();
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for RecvRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (**self).fmt(f)
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
