//! The typed public handles of an SPSC channel: [`Sender`] and [`Receiver`].

use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TryRecvError, TrySendError,
};
use crate::layout::{FLAVOR_SPSC, KIND_TYPED, WaitWord, fnv1a};
use crate::options::{CreateMode, Options};
use crate::peers::{self, Claim, EntryState, Role};
use crate::shared::{Shared, Wanted};
use crate::spsc::{Consumer, Producer, Ring};
use crate::sync::Ordering;
use crate::wait::{self, Attempt, WaitStrategy};
use bytemuck::Pod;
use std::cell::Cell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::{align_of, size_of};
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

/// Peer table entry of the SPSC sender.
const SENDER_ENTRY: usize = 0;
/// Peer table entry of the SPSC receiver.
const RECEIVER_ENTRY: usize = 1;

fn wanted<T: Pod>() -> Wanted {
    let name = std::any::type_name::<T>();
    Wanted {
        flavor: FLAVOR_SPSC,
        kind: KIND_TYPED,
        msg_size: size_of::<T>() as u64,
        msg_align: align_of::<T>() as u64,
        fingerprint: fnv1a(name.as_bytes()),
        type_name: name,
    }
}

/// What both handles hold: the mapping, our peer claim, and the waiting settings.
struct End {
    shared: Shared,
    claim: Claim,
    role: Role,
    wait: WaitStrategy,
    liveness: Duration,
    /// When the polling path may next probe the peer's liveness (a syscall).
    next_probe: Cell<Instant>,
}

impl End {
    fn attach<T: Pod>(name: &str, opts: &Options, role: Role) -> Result<(End, Ring), OpenError> {
        let shared = Shared::attach(name, opts, &wanted::<T>())?;
        let hdr = shared.header();
        let (mine, theirs) = match role {
            Role::Sender => (SENDER_ENTRY, RECEIVER_ENTRY),
            Role::Receiver => (RECEIVER_ENTRY, SENDER_ENTRY),
        };
        let claim = peers::claim(&hdr.peers[mine], mine, role, &hdr.config.peer_generation)
            .map_err(|pid| OpenError::RoleTaken {
                role: role.name(),
                pid,
            })?;
        let ring_ctl = &hdr.ring;
        // We are the only holder of our role, so any sleeper still counted on our wait
        // word is a predecessor that died asleep: forget it, or every peer operation
        // would pay a futex_wake syscall forever.
        let my_word = match role {
            Role::Sender => &ring_ctl.not_full.w,
            Role::Receiver => &ring_ctl.not_empty.w,
        };
        my_word.sleepers.store(0, Ordering::Relaxed);
        let counter = match role {
            Role::Sender => &hdr.attach.sender_attaches,
            Role::Receiver => &hdr.attach.receiver_attaches,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        // A peer blocked on "are you there?" re-checks now.
        let _ = theirs;
        wait::notify_all(&ring_ctl.not_empty.w);
        wait::notify_all(&ring_ctl.not_full.w);
        // SAFETY: the header was validated: ctl is inside the mapping, and the slot
        // array of capacity * slot_size bytes starts at HEADER_SIZE, page aligned;
        // `shared` (moved into End, which the handle keeps with the ring) keeps the
        // mapping alive for the ring's whole use.
        let ring = unsafe { Ring::new(&hdr.ring, shared.slots(), &shared.geo) };
        let end = End {
            shared,
            claim,
            role,
            wait: opts.wait,
            liveness: opts.liveness_interval,
            next_probe: Cell::new(Instant::now() + opts.liveness_interval),
        };
        Ok((end, ring))
    }

    fn peer_entry(&self) -> &crate::layout::PeerEntry {
        let idx = match self.role {
            Role::Sender => RECEIVER_ENTRY,
            Role::Receiver => SENDER_ENTRY,
        };
        &self.shared.header().peers[idx]
    }

    /// Whether the peer is gone (it was attached once, and left or died). Probes the
    /// peer's liveness (a syscall) when `probe` is set.
    fn peer_gone(&self, probe: bool) -> bool {
        matches!(peers::check(self.peer_entry(), probe), EntryState::Vacated)
    }

    /// Like `peer_gone`, probing liveness at most once per liveness interval.
    fn peer_gone_rate_limited(&self) -> bool {
        let probe = {
            let now = Instant::now();
            if now >= self.next_probe.get() {
                self.next_probe.set(now + self.liveness);
                true
            } else {
                false
            }
        };
        self.peer_gone(probe)
    }

    fn deadline(timeout: Duration) -> Option<Instant> {
        // A timeout too large to represent waits forever.
        Instant::now().checked_add(timeout)
    }
}

impl Drop for End {
    fn drop(&mut self) {
        let hdr = self.shared.header();
        let idx = self.claim.index;
        peers::release(&hdr.peers[idx], self.claim);
        // Wake the peer wherever it waits, so it sees the disconnect now.
        wait::notify_all(&hdr.ring.not_empty.w);
        wait::notify_all(&hdr.ring.not_full.w);
    }
}

impl fmt::Debug for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("End")
            .field("role", &self.role)
            .field("capacity", &self.shared.geo.capacity)
            .field("owns_name", &self.shared.seg.owns_name())
            .finish()
    }
}

/// The sending half of an SPSC channel in shared memory.
///
/// One sender may be attached to a channel at a time, in any process; when it is
/// dropped (or its process dies) the receiver drains what was sent and then gets
/// `Disconnected`. A new sender may attach later and continue.
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
pub struct Sender<T: Pod> {
    prod: Producer,
    end: End,
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
    cons: Consumer,
    end: End,
    _t: PhantomData<fn(T) -> T>,
}

impl<T: Pod> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("end", &self.end)
            .field("tail", &self.prod.tail())
            .finish()
    }
}

impl<T: Pod> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("end", &self.end)
            .field("head", &self.cons.head())
            .finish()
    }
}

/// Methods both handles share.
macro_rules! common_methods {
    () => {
        /// Messages in the channel now (a snapshot).
        pub fn len(&self) -> usize {
            self.ring().len() as usize
        }

        /// Whether the channel is empty now.
        pub fn is_empty(&self) -> bool {
            self.len() == 0
        }

        /// Whether the channel is full now.
        pub fn is_full(&self) -> bool {
            self.len() as u64 >= self.ring().capacity()
        }

        /// Number of slots.
        pub fn capacity(&self) -> usize {
            self.ring().capacity() as usize
        }

        /// Whether this handle created the segment and will remove its name on drop.
        pub fn owns_name(&self) -> bool {
            self.end.shared.seg.owns_name()
        }

        /// Keep the segment's name when this (creating) handle is dropped.
        pub fn keep(&mut self) {
            self.end.shared.seg.keep();
        }
    };
}

impl<T: Pod> Sender<T> {
    /// Creates a channel named `name` with `capacity` slots (a power of two) and
    /// attaches as its sender. Fails with `AlreadyExists` if the name is taken. The
    /// name is removed when this handle is dropped (see [`Options::keep`]).
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn create(name: &str, capacity: usize) -> Result<Sender<T>, OpenError> {
        Self::with_options(
            name,
            &Options::new()
                .capacity(capacity)
                .mode(CreateMode::CreateExclusive),
        )
    }

    /// Opens the existing channel `name` as its sender.
    ///
    /// # Errors
    /// `NotFound`, a mismatch (`TypeMismatch`, `FlavorMismatch`, …), or `RoleTaken` if
    /// a live sender is attached.
    pub fn open(name: &str) -> Result<Sender<T>, OpenError> {
        Self::with_options(name, &Options::new())
    }

    /// Creates or opens `name` as `opts` says, and attaches as its sender.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Sender<T>, OpenError> {
        let (end, ring) = End::attach::<T>(name, opts, Role::Sender)?;
        Ok(Sender {
            prod: Producer::attach(ring),
            end,
            _t: PhantomData,
        })
    }

    #[inline]
    fn ring(&self) -> &Ring {
        self.prod.ring()
    }

    common_methods!();

    /// Whether the receiver is known to be gone: it was attached and has left or
    /// died. (A receiver killed without detaching is noticed within the liveness
    /// interval by the blocking calls, or by this call, which probes at most once per
    /// interval.)
    pub fn is_disconnected(&self) -> bool {
        self.end.peer_gone_rate_limited()
    }

    #[inline]
    fn write_and_commit(&self, msg: T) {
        let pos = self.prod.tail();
        // SAFETY: the slot at `pos` is free (checked by the caller through `free`), only
        // this producer writes it until it is published, and the payload is size_of::<T>()
        // bytes aligned to align_of::<T>() (Geometry was computed from T and validated).
        self.ring()
            .write_payload(pos, |p| unsafe { p.cast::<T>().write(msg) });
        self.prod.commit(1);
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
        if self.end.peer_gone(false) {
            return Err(TrySendError::Disconnected(msg));
        }
        if self.prod.free(1) == 0 {
            return Err(self.full_or_gone(msg));
        }
        self.write_and_commit(msg);
        Ok(())
    }

    #[cold]
    fn full_or_gone<M>(&self, msg: M) -> TrySendError<M> {
        if self.end.peer_gone_rate_limited() {
            TrySendError::Disconnected(msg)
        } else {
            TrySendError::Full(msg)
        }
    }

    /// Sends `msg`, waiting while the ring is full.
    ///
    /// # Errors
    /// `Disconnected(msg)` if the receiver is gone (also while waiting).
    #[inline]
    pub fn send(&self, msg: T) -> Result<(), SendError<T>> {
        match self.send_deadline(msg, None) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Disconnected(m)) | Err(SendTimeoutError::Timeout(m)) => {
                Err(SendError::Disconnected(m))
            }
        }
    }

    /// Sends `msg`, waiting at most `timeout` while the ring is full.
    ///
    /// # Errors
    /// `Timeout(msg)` or `Disconnected(msg)`.
    pub fn send_timeout(&self, msg: T, timeout: Duration) -> Result<(), SendTimeoutError<T>> {
        self.send_deadline(msg, End::deadline(timeout))
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
        match self.try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Disconnected(m)) => Err(SendTimeoutError::Disconnected(m)),
            Err(TrySendError::Full(m)) => match self.wait_for_room(deadline.into()) {
                Ok(true) => {
                    self.write_and_commit(m);
                    Ok(())
                }
                Ok(false) => Err(SendTimeoutError::Disconnected(m)),
                Err(_) => Err(SendTimeoutError::Timeout(m)),
            },
        }
    }

    /// Waits until at least one slot is free (`true`) or the receiver is gone (`false`).
    #[cold]
    fn wait_for_room(&self, deadline: Option<Instant>) -> Result<bool, wait::TimedOut> {
        let w: &WaitWord = &self.ring().ctl().not_full.w;
        wait::block_on(
            w,
            self.end.wait,
            deadline,
            self.end.liveness,
            || {
                if self.prod.free(1) > 0 {
                    Attempt::Ready(true)
                } else if self.end.peer_gone(false) {
                    Attempt::Ready(false)
                } else {
                    Attempt::Pending
                }
            },
            || self.end.peer_gone(true).then_some(false),
        )
    }

    /// Sends as many of `msgs` as fit now, in order, publishing them together (one
    /// wake-up check for the batch). Returns how many were sent (at least one).
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
        if self.end.peer_gone(false) {
            return Err(TrySendError::Disconnected(()));
        }
        let n = self.prod.free(msgs.len() as u64).min(msgs.len() as u64);
        if n == 0 {
            return Err(self.full_or_gone(()));
        }
        let start = self.prod.tail();
        for (i, m) in msgs[..n as usize].iter().enumerate() {
            // SAFETY: as in `write_and_commit`; slots start..start+n are free (n <= free).
            self.ring()
                .write_payload(start.wrapping_add(i as u64), |p| unsafe {
                    p.cast::<T>().write(*m)
                });
        }
        self.prod.commit(n);
        Ok(n as usize)
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
        self.try_loan_inner()?;
        let ptr = self.ring().payload(self.prod.tail()).cast::<T>();
        Ok(SendSlot { tx: self, ptr })
    }

    /// Like [`try_loan`](Self::try_loan), but waits while the ring is full.
    ///
    /// # Errors
    /// `Disconnected(())` if the receiver is gone (also while waiting).
    pub fn loan(&mut self) -> Result<SendSlot<'_, T>, SendError<()>> {
        match self.try_loan_inner() {
            Ok(()) => {}
            Err(TrySendError::Disconnected(())) => return Err(SendError::Disconnected(())),
            Err(TrySendError::Full(())) => match self.wait_for_room(None) {
                Ok(true) => {}
                _ => return Err(SendError::Disconnected(())),
            },
        }
        let ptr = self.ring().payload(self.prod.tail()).cast::<T>();
        Ok(SendSlot { tx: self, ptr })
    }

    fn try_loan_inner(&self) -> Result<(), TrySendError<()>> {
        if self.end.peer_gone(false) {
            return Err(TrySendError::Disconnected(()));
        }
        if self.prod.free(1) == 0 {
            return Err(self.full_or_gone(()));
        }
        Ok(())
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
        self.tx.prod.commit(1);
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
            .field("pos", &self.tx.prod.tail())
            .finish()
    }
}

impl<T: Pod> Receiver<T> {
    /// Creates a channel named `name` with `capacity` slots (a power of two) and
    /// attaches as its receiver. The name is removed when this handle is dropped.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn create(name: &str, capacity: usize) -> Result<Receiver<T>, OpenError> {
        Self::with_options(
            name,
            &Options::new()
                .capacity(capacity)
                .mode(CreateMode::CreateExclusive),
        )
    }

    /// Opens the existing channel `name` as its receiver.
    ///
    /// # Errors
    /// `NotFound`, a mismatch, or `RoleTaken` if a live receiver is attached.
    pub fn open(name: &str) -> Result<Receiver<T>, OpenError> {
        Self::with_options(name, &Options::new())
    }

    /// Creates or opens `name` as `opts` says, and attaches as its receiver.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(name: &str, opts: &Options) -> Result<Receiver<T>, OpenError> {
        let (end, ring) = End::attach::<T>(name, opts, Role::Receiver)?;
        Ok(Receiver {
            cons: Consumer::attach(ring),
            end,
            _t: PhantomData,
        })
    }

    #[inline]
    fn ring(&self) -> &Ring {
        self.cons.ring()
    }

    common_methods!();

    /// Whether the sender is known to be gone (attached once, then left or died).
    pub fn is_disconnected(&self) -> bool {
        self.end.peer_gone_rate_limited()
    }

    #[inline]
    fn take(&self) -> T {
        // SAFETY: the slot at head is published (the caller saw its sequence word with
        // Acquire), inside the mapping and aligned for T; the producer does not write it
        // until we release it. T: Pod, so any bytes form a valid T.
        let v = self
            .ring()
            .read_payload(self.cons.head(), |p| unsafe { p.cast::<T>().read() });
        self.cons.release(1);
        v
    }

    /// Receives a message if one is there, without waiting.
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    #[inline]
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        if self.cons.ready_at(0) {
            return Ok(self.take());
        }
        self.empty_or_gone(false)
    }

    #[cold]
    fn empty_or_gone(&self, probe_now: bool) -> Result<T, TryRecvError> {
        let gone = if probe_now {
            self.end.peer_gone(true)
        } else {
            self.end.peer_gone_rate_limited()
        };
        // Look again after seeing the sender gone: it may have published a last message
        // just before leaving (its Release on the peer entry orders that publication
        // before our Acquire load of the entry).
        if self.cons.ready_at(0) {
            return Ok(self.take());
        }
        Err(if gone {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        })
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
    pub fn recv_timeout(&self, timeout: Duration) -> Result<T, RecvTimeoutError> {
        self.recv_deadline(End::deadline(timeout))
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
        if self.cons.ready_at(0) {
            return Ok(self.take());
        }
        self.recv_slow(deadline.into())
    }

    #[cold]
    fn recv_slow(&self, deadline: Option<Instant>) -> Result<T, RecvTimeoutError> {
        match self.wait_for_message(deadline) {
            Ok(true) => Ok(self.take()),
            Ok(false) => self
                .empty_or_gone(false)
                .map_err(|_| RecvTimeoutError::Disconnected),
            Err(_) => Err(RecvTimeoutError::Timeout),
        }
    }

    /// Waits until a message is there (`true`) or the sender is gone (`false`).
    #[cold]
    fn wait_for_message(&self, deadline: Option<Instant>) -> Result<bool, wait::TimedOut> {
        let w: &WaitWord = &self.ring().ctl().not_empty.w;
        wait::block_on(
            w,
            self.end.wait,
            deadline,
            self.end.liveness,
            || {
                if self.cons.ready_at(0) {
                    Attempt::Ready(true)
                } else if self.end.peer_gone(false) {
                    Attempt::Ready(false)
                } else {
                    Attempt::Pending
                }
            },
            || self.end.peer_gone(true).then_some(false),
        )
    }

    /// Receives up to `out.len()` messages that are there now, in order, releasing
    /// their slots together. Returns how many (at least one).
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    pub fn try_recv_batch(&self, out: &mut [T]) -> Result<usize, TryRecvError> {
        let n = self.cons.ready(out.len() as u64);
        if n == 0 {
            if out.is_empty() {
                return Ok(0);
            }
            out[0] = self.empty_or_gone(false)?;
            return Ok(1);
        }
        let head = self.cons.head();
        for (i, slot) in out[..n as usize].iter_mut().enumerate() {
            // SAFETY: as in `take`: slots head..head+n are published (`ready`).
            *slot = self
                .ring()
                .read_payload(head.wrapping_add(i as u64), |p| unsafe {
                    p.cast::<T>().read()
                });
        }
        self.cons.release(n);
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
        if !self.cons.ready_at(0) {
            self.empty_or_gone_no_take()?;
        }
        let ptr = self.ring().payload(self.cons.head()).cast::<T>();
        Ok(RecvRef { rx: self, ptr })
    }

    /// Like [`try_recv_ref`](Self::try_recv_ref), but waits while the ring is empty.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the ring is drained.
    pub fn recv_ref(&mut self) -> Result<RecvRef<'_, T>, RecvError> {
        if !self.cons.ready_at(0) && !self.wait_for_message(None).map_err(|_| RecvError)? {
            self.empty_or_gone_no_take().map_err(|_| RecvError)?;
        }
        let ptr = self.ring().payload(self.cons.head()).cast::<T>();
        Ok(RecvRef { rx: self, ptr })
    }

    fn empty_or_gone_no_take(&self) -> Result<(), TryRecvError> {
        let gone = self.end.peer_gone_rate_limited();
        if self.cons.ready_at(0) {
            return Ok(());
        }
        Err(if gone {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        })
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
        self.rx.cons.release(1);
    }
}

impl<T: Pod> fmt::Debug for RecvRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvRef")
            .field("pos", &self.rx.cons.head())
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
