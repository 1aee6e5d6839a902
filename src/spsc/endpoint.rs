//! What every SPSC handle shares, whatever its message kind: attaching in a role,
//! knowing whether the peer is gone, and waiting for room or for a message.
//!
//! [`SendCore`] and [`RecvCore`] answer "may I write/read the next slot now?", wait
//! for it, and publish/release; the typed and byte handles only move bytes.

use crate::attachment::Attachment;
use crate::error::{OpenError, RecvTimeoutError, SendTimeoutError, TryRecvError, TrySendError};
use crate::layout::WaitWord;
use crate::options::Options;
use crate::peers::{self, ClaimError, EntryState, Role};
use crate::shared::{Shared, Wanted};
use crate::spsc::ring::{Consumer, Producer, Ring};
use crate::sync::Ordering;
use crate::wait::{self, Attempt};
use std::fmt;
use std::time::Instant;

/// Peer table entry of the SPSC sender.
const SENDER_ENTRY: usize = 0;
/// Peer table entry of the SPSC receiver.
const RECEIVER_ENTRY: usize = 1;

pub(crate) use crate::attachment::deadline_in;

/// The attachment plus our role.
pub(crate) struct End {
    pub at: Attachment,
    role: Role,
}

impl End {
    fn attach(
        name: &str,
        opts: &Options,
        want: &Wanted,
        role: Role,
    ) -> Result<(End, Ring), OpenError> {
        let shared = Shared::attach(name, opts, want)?;
        let hdr = shared.header();
        let mine = match role {
            Role::Sender => SENDER_ENTRY,
            Role::Receiver => RECEIVER_ENTRY,
        };
        let claim = peers::claim(
            &shared.seg.file,
            &hdr.peers[mine],
            mine,
            role,
            hdr.peer_generation,
        )
        .map_err(|e| match e {
            ClaimError::Taken { pid } => OpenError::RoleTaken {
                role: role.name(),
                pid,
            },
            ClaimError::Io(e) => OpenError::Io(e),
        })?;
        let at = Attachment::new(shared, claim, opts);
        let hdr = at.shared.header();
        let ctl = &hdr.ring;
        // We are the only holder of our role, so any sleeper still counted on our wait
        // word is a predecessor that died asleep: forget it, or every peer operation
        // would pay a futex_wake syscall forever.
        let (my_word, counter) = match role {
            Role::Sender => (&ctl.not_full.w, &hdr.attach.sender_attaches),
            Role::Receiver => (&ctl.not_empty.w, &hdr.attach.receiver_attaches),
        };
        my_word.sleepers.store(0, Ordering::Relaxed);
        counter.fetch_add(1, Ordering::Relaxed);
        // A peer blocked on "is anyone there?" looks again now.
        wait::notify_all(&ctl.not_empty.w);
        wait::notify_all(&ctl.not_full.w);
        // SAFETY: the header was validated: ctl is inside the mapping, and the slot
        // array of capacity * slot_size bytes starts at HEADER_SIZE, page aligned. The
        // ring is only used by the core that also owns the attachment, which keeps the
        // mapping alive (fields drop after the ring's users).
        let ring = unsafe { Ring::new(hdr.ring, at.shared.slots(), &at.shared.geo) };
        Ok((End { at, role }, ring))
    }

    fn peer_index(&self) -> usize {
        match self.role {
            Role::Sender => RECEIVER_ENTRY,
            Role::Receiver => SENDER_ENTRY,
        }
    }

    /// Whether this handle is used in a process forked after it attached, where it is
    /// inert (every operation reports `Disconnected`). One relaxed load, no syscall.
    #[inline]
    pub fn forked(&self) -> bool {
        self.at.forked()
    }

    /// Whether the peer is gone (it was attached once, and left or died), or this
    /// handle is inert in a forked child. Probes the peer's liveness (a syscall) when
    /// `probe` is set; else two loads.
    #[inline]
    pub fn peer_gone(&self, probe: bool) -> bool {
        self.forked() || matches!(self.at.entry(self.peer_index(), probe), EntryState::Vacated)
    }

    /// Like `peer_gone`, probing liveness at most once per liveness interval.
    pub fn peer_gone_rate_limited(&self) -> bool {
        self.peer_gone(self.at.probe_due())
    }

    /// Where a waiter of this handle records itself while asleep on `word`.
    fn registration(&self, word: u32) -> Option<wait::Registration<'_>> {
        self.at.registration(word)
    }

    /// Whether this handle created the segment and removes its name on drop.
    pub fn owns_name(&self) -> bool {
        self.at.owns_name()
    }

    /// Keep the name when this handle is dropped.
    pub fn keep(&mut self) {
        self.at.keep();
    }
}

impl Drop for End {
    fn drop(&mut self) {
        if self.forked() {
            // Inherited through fork(): the entry, the lock and the name belong to the
            // process that attached.
            return;
        }
        self.at.release();
        // Wake the peer wherever it waits, so it sees the disconnect now.
        let hdr = self.at.shared.header();
        wait::notify_all(&hdr.ring.not_empty.w);
        wait::notify_all(&hdr.ring.not_full.w);
    }
}

impl fmt::Debug for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("End")
            .field("role", &self.role)
            .field("capacity", &self.at.shared.geo.capacity)
            .field("owns_name", &self.owns_name())
            .finish()
    }
}

/// The sending side: the producer end of the ring plus the peer logic.
#[derive(Debug)]
pub(crate) struct SendCore {
    pub prod: Producer,
    pub end: End,
}

impl SendCore {
    pub fn attach(name: &str, opts: &Options, want: &Wanted) -> Result<SendCore, OpenError> {
        let (end, ring) = End::attach(name, opts, want, Role::Sender)?;
        Ok(SendCore {
            prod: Producer::attach(ring),
            end,
        })
    }

    #[inline]
    pub fn ring(&self) -> &Ring {
        self.prod.ring()
    }

    /// How many of the next `want` slots may be written now (at least one).
    ///
    /// # Errors
    /// `Full(())` if none, `Disconnected(())` if the receiver is gone.
    #[inline]
    pub fn try_room(&self, want: u64) -> Result<u64, TrySendError<()>> {
        if self.end.peer_gone(false) {
            return Err(TrySendError::Disconnected(()));
        }
        match self.prod.free(want.max(1)) {
            0 => Err(self.full_or_gone()),
            n => Ok(n.min(want.max(1))),
        }
    }

    #[cold]
    fn full_or_gone(&self) -> TrySendError<()> {
        if self.end.peer_gone_rate_limited() {
            TrySendError::Disconnected(())
        } else {
            TrySendError::Full(())
        }
    }

    /// Waits until at least one slot may be written, or until `deadline`.
    ///
    /// # Errors
    /// `Timeout(())` or `Disconnected(())`.
    #[inline]
    pub fn room(&self, deadline: Option<Instant>) -> Result<(), SendTimeoutError<()>> {
        match self.try_room(1) {
            Ok(_) => Ok(()),
            Err(TrySendError::Disconnected(())) => Err(SendTimeoutError::Disconnected(())),
            Err(TrySendError::Full(())) => self.wait_for_room(deadline),
        }
    }

    #[cold]
    fn wait_for_room(&self, deadline: Option<Instant>) -> Result<(), SendTimeoutError<()>> {
        let w: &WaitWord = &self.ring().ctl().not_full.w;
        let r = wait::block_on(
            w,
            self.end.registration(peers::NOT_FULL),
            self.end.at.wait,
            deadline,
            self.end.at.liveness,
            |_| {
                if self.prod.free(1) > 0 {
                    Attempt::Ready(true)
                } else if self.end.peer_gone(false) {
                    Attempt::Ready(false)
                } else {
                    Attempt::Pending
                }
            },
            || self.end.peer_gone(true).then_some(false),
        );
        match r {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendTimeoutError::Disconnected(())),
            // A deadline shorter than the liveness interval never reaches a slice:
            // check the peer as a `try_send` would (rate limited), so that a loop of
            // short timeouts still learns that the receiver died.
            Err(_) if self.prod.free(1) > 0 => Ok(()),
            Err(_) if self.end.peer_gone_rate_limited() => Err(SendTimeoutError::Disconnected(())),
            Err(_) => Err(SendTimeoutError::Timeout(())),
        }
    }

    /// Publishes the next `n` slots (written by the caller).
    #[inline]
    pub fn commit(&self, n: u64) {
        self.prod.commit(n);
    }
}

/// The receiving side: the consumer end of the ring plus the peer logic.
#[derive(Debug)]
pub(crate) struct RecvCore {
    pub cons: Consumer,
    pub end: End,
}

impl RecvCore {
    pub fn attach(name: &str, opts: &Options, want: &Wanted) -> Result<RecvCore, OpenError> {
        let (end, ring) = End::attach(name, opts, want, Role::Receiver)?;
        Ok(RecvCore {
            cons: Consumer::attach(ring),
            end,
        })
    }

    #[inline]
    pub fn ring(&self) -> &Ring {
        self.cons.ring()
    }

    /// Whether the next slot holds a message.
    #[inline]
    pub fn ready(&self) -> bool {
        !self.end.forked() && self.cons.ready_at(0)
    }

    /// `Ok` if the next slot holds a message now.
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    #[inline]
    pub fn try_message(&self) -> Result<(), TryRecvError> {
        if self.ready() {
            return Ok(());
        }
        self.empty_or_gone()
    }

    #[cold]
    fn empty_or_gone(&self) -> Result<(), TryRecvError> {
        let gone = self.end.peer_gone_rate_limited();
        // Look again after seeing the sender gone: it may have published a last message
        // just before leaving (its Release on the peer entry orders that publication
        // before our Acquire load of the entry).
        if self.ready() {
            return Ok(());
        }
        Err(if gone {
            TryRecvError::Disconnected
        } else {
            TryRecvError::Empty
        })
    }

    /// Waits until the next slot holds a message, or until `deadline`.
    ///
    /// # Errors
    /// `Timeout`, or `Disconnected` once the sender is gone and the ring is drained.
    #[inline]
    pub fn message(&self, deadline: Option<Instant>) -> Result<(), RecvTimeoutError> {
        if self.ready() {
            return Ok(());
        }
        self.wait_for_message(deadline)
    }

    #[cold]
    fn wait_for_message(&self, deadline: Option<Instant>) -> Result<(), RecvTimeoutError> {
        if wait::quick_poll(|| self.ready()) {
            return Ok(());
        }
        let w: &WaitWord = &self.ring().ctl().not_empty.w;
        let r = wait::block_on(
            w,
            self.end.registration(peers::NOT_EMPTY),
            self.end.at.wait,
            deadline,
            self.end.at.liveness,
            |_| {
                if self.ready() {
                    return Attempt::Ready(true);
                }
                #[cfg(test)]
                tests::between_looks();
                if self.end.peer_gone(false) {
                    Attempt::Ready(false)
                } else {
                    Attempt::Pending
                }
            },
            || self.end.peer_gone(true).then_some(false),
        );
        match r {
            Ok(true) => Ok(()),
            // The sender is gone; one more look for a last message.
            Ok(false) if self.ready() => Ok(()),
            Ok(false) => Err(RecvTimeoutError::Disconnected),
            // As in `wait_for_room`: a loop of short timeouts still learns that the
            // sender died (after taking what it left).
            Err(_) => match self.empty_or_gone() {
                Ok(()) => Ok(()),
                Err(TryRecvError::Disconnected) => Err(RecvTimeoutError::Disconnected),
                Err(TryRecvError::Empty) => Err(RecvTimeoutError::Timeout),
            },
        }
    }

    /// Releases the next `n` slots (read by the caller) to the sender.
    #[inline]
    pub fn release(&self, n: u64) {
        self.cons.release(n);
    }
}

#[cfg(test)]
mod tests {
    use crate::{Receiver, RecvTimeoutError, Sender};
    use std::cell::RefCell;
    use std::time::Duration;

    thread_local! {
        /// What [`between_looks`] runs, once.
        static BETWEEN: RefCell<Option<Box<dyn FnOnce()>>> = const { RefCell::new(None) };
    }

    /// Test seam: a blocked receive calls it after finding no message and before
    /// looking whether the sender is gone.
    pub(super) fn between_looks() {
        if let Some(f) = BETWEEN.with(|b| b.borrow_mut().take()) {
            f();
        }
    }

    /// A sender that publishes a last message and leaves between a blocked receiver's
    /// two looks (no message; sender gone): the message is still received, and only
    /// then `Disconnected`.
    #[test]
    fn a_last_message_published_just_before_the_sender_left_is_received() {
        let name = format!("shmchan-test-last-msg-{}", std::process::id());
        let rx = Receiver::<u64>::with_options(
            &name,
            &crate::Options::new()
                .capacity(4)
                .mode(crate::CreateMode::CreateExclusive)
                .wait_strategy(crate::WaitStrategy::Block),
        )
        .unwrap();
        let tx = Sender::<u64>::open(&name).unwrap();
        BETWEEN.with(|b| {
            *b.borrow_mut() = Some(Box::new(move || {
                tx.send(5).unwrap();
                drop(tx);
            }))
        });
        assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(5));
        assert!(
            BETWEEN.with(|b| b.borrow().is_none()),
            "the seam was not reached"
        );
        assert_eq!(
            rx.recv_timeout(Duration::from_secs(60)),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}
