//! Byte-message broadcast channels: [`BytePublisher`] and [`ByteSubscriber`] carry byte
//! strings of any length up to a limit fixed at creation.
//!
//! Each slot holds the sequence word, the length (a whole word), and up to `max_len`
//! bytes. A subscriber clamps the length it reads to `max_len`, so a corrupt length can
//! never make it read outside the slot; it copies the bytes with word loads and checks
//! the sequence word afterwards, as for typed messages.

use super::channel::{publisher_methods, subscriber_methods};
use super::core::{PubCore, SubCore};
use super::error::{RecvError, RecvTimeoutError, TryRecvError};
use crate::error::{OpenError, TooLong};
use crate::layout::FLAVOR_BROADCAST;
use crate::options::{CreateMode, Options, Policy};
use crate::shared::Wanted;
use crate::spsc::bytes::ByteSendError;
use crate::spsc::endpoint::deadline_in;
use std::fmt;
use std::time::{Duration, Instant};

/// The publishing half of a byte-message broadcast channel.
///
/// ```
/// use shmchan::broadcast::{BytePublisher, ByteSubscriber};
/// use shmchan::ByteSendError;
///
/// # let name = format!("doc-bcast-bytes-{}", std::process::id());
/// let tx = BytePublisher::create(&name, 64, 100)?; // 64 slots, up to 100 bytes each
/// let a = ByteSubscriber::open(&name)?;
/// let b = ByteSubscriber::open(&name)?;
/// tx.send(b"tick")?;
/// assert!(matches!(tx.send(&[0; 101]), Err(ByteSendError::TooLong(_))));
/// assert_eq!((a.recv()?, b.recv()?), (b"tick".to_vec(), b"tick".to_vec()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct BytePublisher {
    core: PubCore,
    max: usize,
}

/// A receiving half of a byte-message broadcast channel; see [`BytePublisher`].
pub struct ByteSubscriber {
    core: SubCore,
    max: usize,
}

// SAFETY: each handle owns its mapping and its claim; moving it to another thread moves
// them along. Neither is Sync: positions are Cells.
unsafe impl Send for BytePublisher {}
// SAFETY: as above.
unsafe impl Send for ByteSubscriber {}

impl fmt::Debug for BytePublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BytePublisher")
            .field("capacity", &self.capacity())
            .field("max_len", &self.max)
            .field("position", &self.position())
            .finish()
    }
}

impl fmt::Debug for ByteSubscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSubscriber")
            .field("capacity", &self.capacity())
            .field("max_len", &self.max)
            .field("position", &self.position())
            .finish()
    }
}

impl BytePublisher {
    /// Creates a lossless byte broadcast channel with `capacity` slots for messages of
    /// up to `max_len` bytes (16 subscribers), and attaches as its publisher.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn create(name: &str, capacity: usize, max_len: usize) -> Result<BytePublisher, OpenError> {
        Self::with_options(
            name,
            max_len,
            &Options::new()
                .capacity(capacity)
                .mode(CreateMode::CreateExclusive),
        )
    }

    /// Opens the existing byte broadcast channel `name` as its publisher.
    ///
    /// # Errors
    /// `NotFound`, a mismatch, or `RoleTaken` if a live publisher is attached.
    pub fn open(name: &str) -> Result<BytePublisher, OpenError> {
        Self::with_options(name, 0, &Options::new())
    }

    /// Creates or opens `name` as `opts` says (`max_len` applies at creation).
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(
        name: &str,
        max_len: usize,
        opts: &Options,
    ) -> Result<BytePublisher, OpenError> {
        let core = PubCore::attach(name, opts, &Wanted::bytes(FLAVOR_BROADCAST, max_len))?;
        let max = core.shared().geo.msg_size;
        Ok(BytePublisher { core, max })
    }

    /// The longest message this channel carries.
    pub fn max_len(&self) -> usize {
        self.max
    }

    publisher_methods!();

    fn check_len(&self, msg: &[u8]) -> Result<(), TooLong> {
        TooLong::check(msg.len(), self.max)
    }

    fn publish(&self, msg: &[u8]) {
        // SAFETY: `msg` is readable for its length, at most max_len == msg_size
        // (checked by the caller); a byte channel's slot has the length word before
        // the payload; the caller got room for the tail.
        unsafe {
            self.core
                .ring
                .write(0, msg.as_ptr(), msg.len(), Some(msg.len() as u64))
        };
        self.core.commit(1);
    }

    /// Sends `msg` if there is room, without waiting (under [`Policy::Overwrite`]
    /// there always is).
    ///
    /// # Errors
    /// `Full`, `TooLong`, or `Disconnected` in a process forked after the attach.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), ByteSendError> {
        self.check_len(msg)?;
        if self.core.forked() {
            return Err(ByteSendError::Disconnected);
        }
        if self.core.try_room(1) == 0 {
            return Err(ByteSendError::Full);
        }
        self.publish(msg);
        Ok(())
    }

    /// Sends `msg`, waiting for room (lossless).
    ///
    /// # Errors
    /// `TooLong`, or `Disconnected` in a forked child.
    pub fn send(&self, msg: &[u8]) -> Result<(), ByteSendError> {
        self.send_deadline(msg, None)
    }

    /// Sends `msg`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// `Timeout`, `TooLong`, or `Disconnected` in a forked child.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), ByteSendError> {
        self.send_deadline(msg, deadline_in(timeout))
    }

    /// Sends `msg`, waiting until `deadline` (`None`: forever) for room.
    ///
    /// # Errors
    /// `Timeout`, `TooLong`, or `Disconnected` in a forked child.
    pub fn send_deadline(
        &self,
        msg: &[u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(), ByteSendError> {
        self.check_len(msg)?;
        if self.core.forked() {
            return Err(ByteSendError::Disconnected);
        }
        if !self.core.room(deadline.into()) {
            return Err(ByteSendError::Timeout);
        }
        self.publish(msg);
        Ok(())
    }
}

impl ByteSubscriber {
    /// Opens the existing byte broadcast channel `name` as a new subscriber, starting
    /// at the next message.
    ///
    /// # Errors
    /// `NotFound`, a mismatch, or `TooManyPeers` if every subscriber entry is held.
    pub fn open(name: &str) -> Result<ByteSubscriber, OpenError> {
        Self::with_options(name, 0, &Options::new())
    }

    /// Creates or opens `name` as `opts` says (`max_len` applies at creation), and
    /// attaches as a subscriber starting where [`Options::start`] says.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(
        name: &str,
        max_len: usize,
        opts: &Options,
    ) -> Result<ByteSubscriber, OpenError> {
        let core = SubCore::attach(name, opts, &Wanted::bytes(FLAVOR_BROADCAST, max_len))?;
        let max = core.shared().geo.msg_size;
        Ok(ByteSubscriber { core, max })
    }

    /// The longest message this channel carries.
    pub fn max_len(&self) -> usize {
        self.max
    }

    subscriber_methods!();

    /// Receives the next message into `buf` (replacing its contents) if it is there;
    /// returns its length. Reusing `buf` avoids an allocation per message.
    ///
    /// # Errors
    /// `Empty`, `Lagged(n)`, or `Disconnected` once the publisher is gone and
    /// everything is received.
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        self.core
            .try_recv_with(|| self.core.ring.try_read_bytes(buf, self.max))?;
        Ok(buf.len())
    }

    /// Receives the next message into `buf`, waiting until `deadline` (`None`:
    /// forever); returns its length.
    ///
    /// # Errors
    /// `Timeout`, `Lagged(n)` or `Disconnected`.
    pub fn recv_into_deadline(
        &self,
        buf: &mut Vec<u8>,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize, RecvTimeoutError> {
        self.core.recv_with(deadline.into(), || {
            self.core.ring.try_read_bytes(buf, self.max)
        })?;
        Ok(buf.len())
    }

    /// Receives the next message if it is there, without waiting.
    ///
    /// # Errors
    /// `Empty`, `Lagged(n)` or `Disconnected`.
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        let mut v = Vec::new();
        self.try_recv_into(&mut v)?;
        Ok(v)
    }

    /// Receives the next message, waiting for it.
    ///
    /// # Errors
    /// `Lagged(n)`, or `Disconnected` once the publisher is gone and everything is
    /// received.
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        let mut v = Vec::new();
        self.recv_into_deadline(&mut v, None).map_err(|e| match e {
            RecvTimeoutError::Lagged(n) => RecvError::Lagged(n),
            _ => RecvError::Disconnected,
        })?;
        Ok(v)
    }

    /// Receives the next message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout`, `Lagged(n)` or `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut v = Vec::new();
        self.recv_into_deadline(&mut v, deadline_in(timeout))?;
        Ok(v)
    }
}
