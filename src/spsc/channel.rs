//! The typed public handles of an SPSC channel: [`Sender`] and [`Receiver`].

use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::layout::FLAVOR_SPSC;
use crate::options::Options;
use crate::shared::Wanted;
use crate::spsc::endpoint::{RecvCore, SendCore, deadline_in};
use bytemuck::Pod;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

fn wanted<T: Pod>() -> Wanted {
    Wanted::typed::<T>(FLAVOR_SPSC)
}

/// The sending half of an SPSC channel in shared memory.
///
/// One sender may be attached to a channel at a time, in any process; when it is
/// dropped (or its process dies) the receiver drains what was sent and then gets
/// `Disconnected`. A new sender may attach later and continue.
///
/// A `Sender` may be moved to another thread (`Send`) but not shared (`!Sync`): it
/// keeps its position and a cached copy of the receiver's in the handle.
///
/// # Examples
///
/// ```
/// use shmchan::{Receiver, Sender};
/// # let name = format!("doc-sender-{}", std::process::id());
/// let tx = Sender::<u64>::create(&name, 8)?;   // creates the segment; removes it on drop
/// let rx = Receiver::<u64>::open(&name)?;      // usually in another process
/// tx.send(7)?;
/// assert_eq!(rx.recv()?, 7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// A sender cannot be shared between threads:
///
/// ```compile_fail
/// fn needs_sync<S: Sync>(_: &S) {}
/// # let name = format!("doc-sender-sync-{}", std::process::id());
/// let tx = shmchan::Sender::<u64>::create(&name, 8).unwrap();
/// needs_sync(&tx);
/// ```
pub struct Sender<T: Pod> {
    core: SendCore,
    _t: PhantomData<fn(T) -> T>,
}

/// The receiving half of an SPSC channel in shared memory.
///
/// One receiver may be attached at a time. Messages it has not received stay in the
/// segment when it goes away; a receiver that attaches later gets them.
///
/// # Examples
///
/// ```
/// use shmchan::{Receiver, Sender, TryRecvError};
/// # let name = format!("doc-receiver-{}", std::process::id());
/// let rx = Receiver::<[u8; 16]>::create(&name, 4)?;
/// let tx = Sender::<[u8; 16]>::open(&name)?;
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
/// tx.send(*b"sixteen bytes!!!")?;
/// drop(tx);
/// assert_eq!(&rx.recv()?, b"sixteen bytes!!!");
/// assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Receiver<T: Pod> {
    core: RecvCore,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("end", &self.core.end)
            .field("tail", &self.core.prod.tail())
            .finish()
    }
}

impl<T: Pod> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("end", &self.core.end)
            .field("head", &self.core.cons.head())
            .finish()
    }
}

/// Methods every handle shares (typed and byte, sender and receiver).
macro_rules! common_methods {
    () => {
        /// Messages in the channel now (a snapshot).
        pub fn len(&self) -> usize {
            self.core.ring().len() as usize
        }

        /// Whether the channel is empty now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether the channel is full now.
        pub fn is_full(&self) -> bool {
            self.len() as u64 >= self.core.ring().capacity()
        }

        /// Number of slots.
        pub fn capacity(&self) -> usize {
            self.core.ring().capacity() as usize
        }

        /// Whether this handle created the segment and will remove its name on drop.
        pub fn owns_name(&self) -> bool {
            self.core.end.owns_name()
        }

        /// Keep the segment's name when this (creating) handle is dropped.
        pub fn keep(&mut self) {
            self.core.end.keep();
        }

        /// Whether the peer is known to be gone: it was attached and has left or
        /// died. A peer killed without detaching is noticed within the liveness
        /// interval by the blocking calls, or by this call, which probes at most once
        /// per interval.
        pub fn is_disconnected(&self) -> bool {
            self.core.end.peer_gone_rate_limited()
        }
    };
}
pub(crate) use common_methods;

impl<T: Pod> Sender<T> {
    crate::attachment::create_and_open!(
        create: "Creates a channel named `name` with `capacity` slots (a power of two) and\n\
            attaches as its sender. Fails with `AlreadyExists` if the name is taken. The\n\
            name is removed when this handle is dropped (see [`Options::keep`]).\n\
            \n\
            # Errors\n\
            See [`OpenError`].",
        open: "Opens the existing channel `name` as its sender.\n\
            \n\
            # Errors\n\
            `NotFound`, a mismatch (`TypeMismatch`, `FlavorMismatch`, …), or `RoleTaken` if\n\
            a live sender is attached.",
    );

    /// Creates or opens `name` as `opts` says, and attaches as its sender.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Sender<T>, OpenError> {
        Ok(Sender {
            core: SendCore::attach(name, opts, &wanted::<T>())?,
            _t: PhantomData,
        })
    }

    common_methods!();

    /// Writes `msg` into the slot at `tail + i` (not yet published).
    #[inline]
    fn write(&self, i: u64, msg: T) {
        let pos = self.core.prod.tail().wrapping_add(i);
        // SAFETY: the caller got room for slot `tail + i` from the core, so it is free
        // and only this producer writes it until it is published; the payload is
        // size_of::<T>() bytes aligned to align_of::<T>() (the geometry was computed
        // from T and validated against the header).
        self.core
            .ring()
            .write_payload(pos, |p| unsafe { p.cast::<T>().write(msg) });
    }

    /// Sends `msg` if there is room, without waiting.
    ///
    /// # Errors
    /// `Full(msg)` if the ring is full, `Disconnected(msg)` if the receiver is gone.
    ///
    /// ```
    /// # use shmchan::{Sender, TrySendError};
    /// # let name = format!("doc-try-send-{}", std::process::id());
    /// let tx = Sender::<u32>::create(&name, 1)?;
    /// tx.try_send(1)?;
    /// assert_eq!(tx.try_send(2), Err(TrySendError::Full(2)));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        if self.put(msg) {
            return Ok(());
        }
        match self.core.try_room(1) {
            Ok(_) => {
                self.write(0, msg);
                self.core.commit(1);
                Ok(())
            }
            Err(TrySendError::Full(())) => Err(TrySendError::Full(msg)),
            Err(TrySendError::Disconnected(())) => Err(TrySendError::Disconnected(msg)),
        }
    }

    /// The fast path of a send: `true` if the receiver is not known gone and `msg`
    /// went into a free slot.
    #[inline]
    fn put(&self, msg: T) -> bool {
        // SAFETY: `try_put` hands us the payload of the free slot at tail: inside the
        // mapping, aligned and sized for T (geometry validated), ours until published.
        !self.core.end.peer_gone(false)
            && self
                .core
                .prod
                .try_put(|p| unsafe { p.cast::<T>().write(msg) })
    }

    /// Sends `msg`, waiting while the ring is full.
    ///
    /// # Errors
    /// `Disconnected(msg)` if the receiver is gone (also while waiting).
    #[inline]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        match self.send_deadline(msg, None) {
            Ok(()) => Ok(()),
            Err(e) => Err(SendError::Disconnected(e.into_inner())),
        }
    }

    /// Sends `msg`, waiting at most `timeout` while the ring is full.
    ///
    /// # Errors
    /// `Timeout(msg)` or `Disconnected(msg)`.
    ///
    /// ```
    /// # use shmchan::{Sender, SendTimeoutError};
    /// # use std::time::Duration;
    /// # let name = format!("doc-send-timeout-{}", std::process::id());
    /// let tx = Sender::<u8>::create(&name, 1)?;
    /// tx.send_timeout(1, Duration::from_millis(1))?;
    /// let e = tx.send_timeout(2, Duration::from_millis(1)).unwrap_err();
    /// assert!(e.is_timeout());
    /// assert_eq!(e.into_inner(), 2);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(msg, deadline_in(timeout))
    }

    /// Sends `msg`, waiting until `deadline` (`None`: forever) while the ring is full.
    ///
    /// # Errors
    /// `Timeout(msg)` or `Disconnected(msg)`.
    #[inline]
    pub fn send_deadline(
        &self,
        msg: T,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(), SendTimeoutError<T>> {
        if self.put(msg) {
            return Ok(());
        }
        match self.core.room(deadline.into()) {
            Ok(()) => {
                self.write(0, msg);
                self.core.commit(1);
                Ok(())
            }
            Err(SendTimeoutError::Timeout(())) => Err(SendTimeoutError::Timeout(msg)),
            Err(SendTimeoutError::Disconnected(())) => Err(SendTimeoutError::Disconnected(msg)),
        }
    }

    /// Sends as many of `msgs` as fit now, in order, publishing them together (one
    /// wake-up check for the batch). Returns how many were sent (at least one, or zero
    /// if `msgs` is empty).
    ///
    /// The receiver sees the sent messages all at once or not at all, also if this
    /// process is killed midway (their slots are published last one first; a sender
    /// that re-attaches reuses the slots of a batch left half published). For
    /// throughput this is the call to use: the per-message cost of `send` is mostly
    /// its bookkeeping stores, which a batch pays once.
    ///
    /// # Errors
    /// `Full(())` if not even one fits, `Disconnected(())` if the receiver is gone.
    ///
    /// ```
    /// # use shmchan::{Receiver, Sender};
    /// # let name = format!("doc-batch-{}", std::process::id());
    /// let tx = Sender::<u16>::create(&name, 4)?;
    /// let rx = Receiver::<u16>::open(&name)?;
    /// assert_eq!(tx.try_send_batch(&[1, 2, 3, 4, 5, 6])?, 4);
    /// let mut buf = [0u16; 8];
    /// assert_eq!(rx.try_recv_batch(&mut buf)?, 4);
    /// assert_eq!(&buf[..4], &[1, 2, 3, 4]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_send_batch(&self, msgs: &[T]) -> Result<usize, TrySendError<()>> {
        if msgs.is_empty() {
            return Ok(0);
        }
        let n = self.core.try_room(msgs.len() as u64)?;
        let msgs = &msgs[..n as usize];
        // SAFETY: `try_room` saw `n` free slots from tail on; each payload is inside
        // the mapping, aligned and sized for T (geometry validated), and ours alone
        // until published.
        self.core
            .prod
            .write_and_commit(n, |i, p| unsafe { p.cast::<T>().write(msgs[i as usize]) });
        Ok(n as usize)
    }

    /// Sends up to `n` messages built in place: `make(i)` returns message `i`, called
    /// once for each `i` below the number that fit now, in increasing order.
    /// Published together like [`try_send_batch`](Self::try_send_batch), once every
    /// `make` has returned; returns how many were sent (at least one, or zero if `n`
    /// is 0).
    ///
    /// Each message goes from `make` straight into its slot, without an intermediate
    /// array.
    ///
    /// # Errors
    /// `Full(())` if not even one fits, `Disconnected(())` if the receiver is gone.
    ///
    /// # Panics
    /// If `make` panics, the panic propagates and nothing of this batch is sent: the
    /// receiver never sees the messages built before the panic, and the next send
    /// takes their slots.
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmchan::{Receiver, Sender};
    /// # let name = format!("doc-batch-with-{}", std::process::id());
    /// let mut tx = Sender::<u64>::create(&name, 8)?;
    /// let mut rx = Receiver::<u64>::open(&name)?;
    /// assert_eq!(tx.try_send_batch_with(100, |i| i as u64 * 10)?, 8);
    /// let mut sum = 0;
    /// assert_eq!(rx.try_recv_batch_with(100, |m| sum += m)?, 8);
    /// assert_eq!(sum, 280);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// `make` runs while the batch is half written, so it cannot use the sender (the
    /// batch holds it mutably borrowed):
    ///
    /// ```compile_fail,E0502
    /// # use shmchan::Sender;
    /// # let name = format!("doc-batch-with-reenter-{}", std::process::id());
    /// let mut tx = Sender::<u64>::create(&name, 8).unwrap();
    /// tx.try_send_batch_with(4, |i| {
    ///     let _ = tx.try_send(99); // error: `tx` is borrowed by the batch
    ///     i as u64
    /// })
    /// .unwrap();
    /// ```
    pub fn try_send_batch_with(
        &mut self,
        n: usize,
        mut make: impl FnMut(usize) -> T,
    ) -> Result<usize, TrySendError<()>> {
        if n == 0 {
            return Ok(0);
        }
        let k = self.core.try_room(n as u64)?;
        // `make` cannot reach this sender (we hold it by `&mut`), so it cannot move
        // `tail` or write these slots under us; `write_then_commit` publishes nothing
        // before every `make` has returned.
        self.core.prod.write_then_commit(k, |i, p| {
            let msg = make(i as usize);
            // SAFETY: `try_room` saw `k` free slots from tail on; each payload is
            // inside the mapping, aligned and sized for T (geometry validated), and
            // ours alone until published.
            unsafe { p.cast::<T>().write(msg) }
        });
        Ok(k as usize)
    }

    /// Sends all of `msgs` in order, waiting for room as needed; publishes them in
    /// batches as room allows.
    ///
    /// # Errors
    /// `Disconnected(k)` with the number `k` of messages sent before the receiver went.
    pub fn send_batch(&self, msgs: &[T]) -> Result<(), SendError<usize>> {
        let mut sent = 0;
        while sent < msgs.len() {
            match self.try_send_batch(&msgs[sent..]) {
                Ok(n) => sent += n,
                Err(TrySendError::Full(())) => {
                    if self.core.room(None).is_err() {
                        return Err(SendError::Disconnected(sent));
                    }
                }
                Err(TrySendError::Disconnected(())) => return Err(SendError::Disconnected(sent)),
            }
        }
        Ok(())
    }

    /// Borrows the next free slot to build a message in place (zero copy); the message
    /// is sent by [`SendSlot::commit`], and dropped unsent if the slot is dropped.
    ///
    /// # Errors
    /// `Full(())` or `Disconnected(())`.
    ///
    /// ```
    /// # use shmchan::{Receiver, Sender};
    /// # let name = format!("doc-loan-{}", std::process::id());
    /// let mut tx = Sender::<[u64; 4]>::create(&name, 2)?;
    /// let rx = Receiver::<[u64; 4]>::open(&name)?;
    /// let mut slot = tx.try_loan()?;
    /// slot[0] = 1;
    /// slot[3] = 4;
    /// slot.commit();
    /// let got = rx.recv()?;
    /// assert_eq!((got[0], got[3]), (1, 4));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_loan(&mut self) -> Result<SendSlot<'_, T>, TrySendError<()>> {
        self.core.try_room(1)?;
        Ok(self.slot())
    }

    /// Like [`try_loan`](Self::try_loan), but waits while the ring is full.
    ///
    /// # Errors
    /// `Disconnected(())` if the receiver is gone (also while waiting).
    pub fn loan(&mut self) -> Result<SendSlot<'_, T>, SendError<()>> {
        self.core
            .room(None)
            .map_err(|_| SendError::Disconnected(()))?;
        Ok(self.slot())
    }

    fn slot(&mut self) -> SendSlot<'_, T> {
        let ptr = self.core.ring().payload(self.core.prod.tail()).cast::<T>();
        SendSlot { tx: self, ptr }
    }
}

/// A free slot lent by [`Sender::try_loan`]; write the message through `DerefMut`,
/// then [`commit`](SendSlot::commit). The slot holds whatever bytes it held before.
pub struct SendSlot<'a, T: Pod> {
    tx: &'a mut Sender<T>,
    ptr: *mut T,
}

impl<T: Pod> SendSlot<'_, T> {
    /// Publishes the message to the receiver.
    pub fn commit(self) {
        self.tx.core.commit(1);
    }
}

impl<T: Pod> Deref for SendSlot<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is free, inside the mapping, aligned for T, and unpublished:
        // no receiver reads it; the &mut borrow of the sender keeps other loans away.
        // T: Pod, so whatever bytes are there form a valid T.
        unsafe { &*self.ptr }
    }
}

impl<T: Pod> DerefMut for SendSlot<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as in `deref`; we are the slot's only writer.
        unsafe { &mut *self.ptr }
    }
}

impl<T: Pod> fmt::Debug for SendSlot<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSlot")
            .field("pos", &self.tx.core.prod.tail())
            .finish()
    }
}

impl<T: Pod> Receiver<T> {
    crate::attachment::create_and_open!(
        create: "Creates a channel named `name` with `capacity` slots (a power of two) and\n\
            attaches as its receiver. The name is removed when this handle is dropped.\n\
            \n\
            # Errors\n\
            See [`OpenError`].",
        open: "Opens the existing channel `name` as its receiver.\n\
            \n\
            # Errors\n\
            `NotFound`, a mismatch, or `RoleTaken` if a live receiver is attached.",
    );

    /// Creates or opens `name` as `opts` says, and attaches as its receiver.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Receiver<T>, OpenError> {
        Ok(Receiver {
            core: RecvCore::attach(name, opts, &wanted::<T>())?,
            _t: PhantomData,
        })
    }

    common_methods!();

    /// Reads the message at `head + i` (which must be published).
    #[inline]
    fn read(&self, i: u64) -> T {
        let pos = self.core.cons.head().wrapping_add(i);
        // SAFETY: the caller saw the slot's sequence word published (Acquire); it is
        // inside the mapping and aligned for T; the producer does not write it until we
        // release it. T: Pod, so any bytes form a valid T.
        self.core
            .ring()
            .read_payload(pos, |p| unsafe { p.cast::<T>().read() })
    }

    #[inline]
    fn take(&self) -> T {
        let v = self.read(0);
        self.core.release(1);
        v
    }

    /// Receives a message if one is there, without waiting.
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if let Some(v) = self.take_now() {
            return Ok(v);
        }
        self.core.try_message()?;
        Ok(self.take())
    }

    /// The fast path of a receive: the next message, if it is published.
    #[inline]
    fn take_now(&self) -> Option<T> {
        if self.core.end.forked() {
            return None;
        }
        // SAFETY: `try_take` hands us the payload of a slot it saw published (Acquire):
        // inside the mapping, aligned for T, not rewritten before the release that
        // follows. T: Pod, so any bytes form a valid T.
        self.core.cons.try_take(|p| unsafe { p.cast::<T>().read() })
    }

    /// Receives a message, waiting while the ring is empty.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the ring is drained.
    #[inline]
    pub fn recv(&self) -> Result<T, RecvError> {
        self.recv_deadline(None).map_err(|_| RecvError)
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, or `Disconnected` once the sender is gone and the ring is drained.
    ///
    /// ```
    /// # use shmchan::{Receiver, RecvTimeoutError};
    /// # use std::time::Duration;
    /// # let name = format!("doc-recv-timeout-{}", std::process::id());
    /// let rx = Receiver::<u64>::create(&name, 4)?;
    /// assert_eq!(rx.recv_timeout(Duration::from_millis(5)), Err(RecvTimeoutError::Timeout));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(deadline_in(timeout))
    }

    /// Receives a message, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// `Timeout`, or `Disconnected` once the sender is gone and the ring is drained.
    #[inline]
    pub fn recv_deadline(
        &self,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<T, RecvTimeoutError> {
        if let Some(v) = self.take_now() {
            return Ok(v);
        }
        self.core.message(deadline.into())?;
        Ok(self.take())
    }

    /// Receives up to `out.len()` messages that are there now, in order, releasing
    /// their slots together. Returns how many (at least one, or zero if `out` is
    /// empty).
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    pub fn try_recv_batch(&self, out: &mut [T]) -> Result<usize, TryRecvError> {
        if out.is_empty() {
            return Ok(0);
        }
        self.core.try_message()?;
        let n = self.core.cons.read_and_release(out.len() as u64, |i, p| {
            // SAFETY: the ring hands us only payloads whose sequence word it saw
            // published (Acquire): inside the mapping, aligned for T, not rewritten
            // before the release that follows the copies. T: Pod: any bytes are a T.
            out[i as usize] = unsafe { p.cast::<T>().read() }
        });
        Ok(n as usize)
    }

    /// Hands up to `max` messages that are there now to `take`, in order, then
    /// releases their slots together. Returns how many (at least one, or zero if `max`
    /// is 0).
    ///
    /// No intermediate array; but `take` runs while the batch is being read, so a slow
    /// `take` keeps the slots from the sender longer than
    /// [`try_recv_batch`](Self::try_recv_batch) into a buffer would (measured: 8-byte
    /// messages stream about 20 % faster with the buffer when `take` sums each one).
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    ///
    /// # Panics
    /// If `take` panics on a message, the panic propagates; that message and the ones
    /// before it count as received (each was handed to `take` by value, once), and the
    /// messages after it stay in the channel for the next receive.
    ///
    /// # Examples
    ///
    /// ```
    /// # use shmchan::{Receiver, Sender};
    /// # let name = format!("doc-recv-with-{}", std::process::id());
    /// let tx = Sender::<u32>::create(&name, 4)?;
    /// let mut rx = Receiver::<u32>::open(&name)?;
    /// tx.try_send_batch(&[3, 4, 5])?;
    /// let mut got = Vec::new();
    /// assert_eq!(rx.try_recv_batch_with(2, |m| got.push(m))?, 2);
    /// assert_eq!(got, [3, 4]);
    /// assert_eq!(rx.try_recv()?, 5);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// `take` runs while the batch is half read, so it cannot use the receiver (the
    /// batch holds it mutably borrowed):
    ///
    /// ```compile_fail,E0502
    /// # use shmchan::{Receiver, Sender};
    /// # let name = format!("doc-recv-with-reenter-{}", std::process::id());
    /// let tx = Sender::<u32>::create(&name, 4).unwrap();
    /// let mut rx = Receiver::<u32>::open(&name).unwrap();
    /// tx.try_send_batch(&[3, 4, 5]).unwrap();
    /// rx.try_recv_batch_with(2, |_| {
    ///     let _ = rx.try_recv(); // error: `rx` is borrowed by the batch
    /// })
    /// .unwrap();
    /// ```
    pub fn try_recv_batch_with(
        &mut self,
        max: usize,
        mut take: impl FnMut(T),
    ) -> Result<usize, TryRecvError> {
        if max == 0 {
            return Ok(0);
        }
        self.core.try_message()?;
        // `take` cannot reach this receiver (we hold it by `&mut`), so it cannot move
        // `head` or release these slots under us; if it panics, `read_and_release`
        // releases the messages already handed over and keeps the rest.
        let n = self.core.cons.read_and_release(max as u64, |_, p| {
            // SAFETY: the ring hands us only payloads whose sequence word it saw
            // published (Acquire): inside the mapping, aligned for T, not rewritten
            // before the release that follows. T: Pod: any bytes are a T.
            let msg = unsafe { p.cast::<T>().read() };
            take(msg)
        });
        Ok(n as usize)
    }

    /// Borrows the next message in place (zero copy); its slot is released to the
    /// sender when the guard is dropped.
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    ///
    /// ```
    /// # use shmchan::{Receiver, Sender};
    /// # let name = format!("doc-recv-ref-{}", std::process::id());
    /// let tx = Sender::<[u8; 64]>::create(&name, 2)?;
    /// let mut rx = Receiver::<[u8; 64]>::open(&name)?;
    /// tx.send([9; 64])?;
    /// let msg = rx.try_recv_ref()?;
    /// assert_eq!(msg[63], 9);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_recv_ref(&mut self) -> Result<RecvRef<'_, T>, TryRecvError> {
        self.core.try_message()?;
        Ok(self.msg_ref())
    }

    /// Like [`try_recv_ref`](Self::try_recv_ref), but waits while the ring is empty.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the ring is drained.
    pub fn recv_ref(&mut self) -> Result<RecvRef<'_, T>, RecvError> {
        self.core.message(None).map_err(|_| RecvError)?;
        Ok(self.msg_ref())
    }

    fn msg_ref(&mut self) -> RecvRef<'_, T> {
        let ptr = self.core.ring().payload(self.core.cons.head()).cast::<T>();
        RecvRef { rx: self, ptr }
    }

    /// A blocking iterator: yields messages until the sender is gone and the ring is
    /// drained.
    pub fn iter(&self) -> Iter<'_, T> {
        Iter { rx: self }
    }

    /// A non-blocking iterator over the messages that are there now.
    pub fn try_iter(&self) -> TryIter<'_, T> {
        TryIter { rx: self }
    }
}

/// A message borrowed in place by [`Receiver::try_recv_ref`].
pub struct RecvRef<'a, T: Pod> {
    rx: &'a mut Receiver<T>,
    ptr: *const T,
}

impl<T: Pod> Deref for RecvRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the slot is published and not yet released, inside the mapping and
        // aligned for T; the producer does not write it until the guard drops. T: Pod.
        unsafe { &*self.ptr }
    }
}

impl<T: Pod> Drop for RecvRef<'_, T> {
    fn drop(&mut self) {
        self.rx.core.release(1);
    }
}

impl<T: Pod> fmt::Debug for RecvRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvRef")
            .field("pos", &self.rx.core.cons.head())
            .finish()
    }
}

/// Blocking iterator of a [`Receiver`]; see [`Receiver::iter`].
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

/// Non-blocking iterator of a [`Receiver`]; see [`Receiver::try_iter`].
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

/// Owning blocking iterator of a [`Receiver`].
#[derive(Debug)]
pub struct IntoIter<T: Pod> {
    rx: Receiver<T>,
}

impl<T: Pod> Iterator for IntoIter<T> {
    type Item = T;
    fn next(&mut self) -> Option<T> {
        self.rx.recv().ok()
    }
}

impl<'a, T: Pod> IntoIterator for &'a Receiver<T> {
    type Item = T;
    type IntoIter = Iter<'a, T>;
    fn into_iter(self) -> Iter<'a, T> {
        self.iter()
    }
}

impl<T: Pod> IntoIterator for Receiver<T> {
    type Item = T;
    type IntoIter = IntoIter<T>;
    fn into_iter(self) -> IntoIter<T> {
        IntoIter { rx: self }
    }
}
