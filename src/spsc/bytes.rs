//! Byte-message channels: [`ByteSender`] and [`ByteReceiver`] carry byte strings of
//! any length up to a limit fixed at creation.
//!
//! Each slot holds the sequence word, a `u32` length, and up to `max_len` bytes. The
//! receiver clamps the length it reads to `max_len`, so a corrupt length can never
//! make it read outside the slot.

use crate::error::{
    OpenError, RecvError, RecvTimeoutError, SendTimeoutError, TooLong, TryRecvError, TrySendError,
};
use crate::layout::FLAVOR_SPSC;
use crate::options::{CreateMode, Options};
use crate::shared::Wanted;
use crate::spsc::channel::common_methods;
use crate::spsc::endpoint::{RecvCore, SendCore, deadline_in};
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::time::{Duration, Instant};

fn wanted(max_len: usize) -> Wanted {
    Wanted::bytes(FLAVOR_SPSC, max_len)
}

/// Why a byte message was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ByteSendError {
    /// The ring is full (`try_send`).
    #[error("sending on a full channel")]
    Full,
    /// The ring stayed full until the deadline (`send_timeout`).
    #[error("timed out waiting on send operation")]
    Timeout,
    /// No receiver is attached (one was, and it left or died).
    #[error("sending on a disconnected channel")]
    Disconnected,
    /// The message is longer than the channel's limit.
    #[error(transparent)]
    TooLong(#[from] TooLong),
}

impl From<TrySendError<()>> for ByteSendError {
    fn from(e: TrySendError<()>) -> Self {
        match e {
            TrySendError::Full(()) => ByteSendError::Full,
            TrySendError::Disconnected(()) => ByteSendError::Disconnected,
        }
    }
}

impl From<SendTimeoutError<()>> for ByteSendError {
    fn from(e: SendTimeoutError<()>) -> Self {
        match e {
            SendTimeoutError::Timeout(()) => ByteSendError::Timeout,
            SendTimeoutError::Disconnected(()) => ByteSendError::Disconnected,
        }
    }
}

/// The sending half of a byte-message SPSC channel.
///
/// ```
/// use shmchan::{ByteReceiver, ByteSender, ByteSendError};
/// # let name = format!("doc-bytes-{}", std::process::id());
/// let tx = ByteSender::create(&name, 64, 100)?;   // 64 slots, messages up to 100 bytes
/// let rx = ByteReceiver::open(&name)?;
/// tx.send(b"hello")?;
/// tx.send(b"")?;
/// assert!(matches!(tx.send(&[0; 101]), Err(ByteSendError::TooLong(_))));
/// assert_eq!(rx.recv()?, b"hello");
/// assert_eq!(rx.recv()?, b"");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct ByteSender {
    core: SendCore,
    max: usize,
}

/// The receiving half of a byte-message SPSC channel.
pub struct ByteReceiver {
    core: RecvCore,
    max: usize,
}

impl fmt::Debug for ByteSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSender")
            .field("end", &self.core.end)
            .field("max_len", &self.max)
            .finish()
    }
}

impl fmt::Debug for ByteReceiver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteReceiver")
            .field("end", &self.core.end)
            .field("max_len", &self.max)
            .finish()
    }
}

fn create_opts(capacity: usize) -> Options {
    Options::new()
        .capacity(capacity)
        .mode(CreateMode::CreateExclusive)
}

/// Pointer to the length word of the slot whose payload is at `payload`.
fn len_ptr(payload: *mut u8) -> *mut u32 {
    // The length sits in the 4 bytes before the payload (layout: seq u32, len u32,
    // bytes), inside the same slot.
    payload.wrapping_sub(4).cast::<u32>()
}

impl ByteSender {
    /// Creates a channel of `capacity` slots for messages of up to `max_len` bytes,
    /// and attaches as its sender.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn create(name: &str, capacity: usize, max_len: usize) -> Result<ByteSender, OpenError> {
        Self::with_options(name, &create_opts(capacity), max_len)
    }

    /// Opens an existing byte channel as its sender.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn open(name: &str) -> Result<ByteSender, OpenError> {
        Self::with_options(name, &Options::new(), 0)
    }

    /// Creates or opens as `opts` says; `max_len` is used when creating (an opened
    /// channel keeps the limit it was created with).
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(
        name: &str,
        opts: &Options,
        max_len: usize,
    ) -> Result<ByteSender, OpenError> {
        let core = SendCore::attach(name, opts, &wanted(max_len))?;
        let max = core.end.at.shared.geo.msg_size;
        Ok(ByteSender { core, max })
    }

    /// The longest message this channel carries.
    pub fn max_len(&self) -> usize {
        self.max
    }

    common_methods!();

    fn write(&self, msg: &[u8]) {
        let p = self.core.ring().payload(self.core.prod.tail());
        // SAFETY: the slot at tail is free (the caller got room from the core) and only
        // we write it until published; msg.len() <= max_len (checked by the caller), so
        // the length word and the bytes are inside the slot; u32 alignment holds
        // (payload offset 8, slot size a multiple of 4).
        unsafe {
            len_ptr(p).write(msg.len() as u32);
            std::ptr::copy_nonoverlapping(msg.as_ptr(), p, msg.len());
        }
    }

    fn check_len(&self, msg: &[u8]) -> Result<(), TooLong> {
        TooLong::check(msg.len(), self.max)
    }

    /// Sends `msg` if there is room, without waiting.
    ///
    /// # Errors
    /// `Full`, `Disconnected` or `TooLong`.
    pub fn try_send(&self, msg: &[u8]) -> Result<(), ByteSendError> {
        self.check_len(msg)?;
        self.core.try_room(1)?;
        self.write(msg);
        self.core.commit(1);
        Ok(())
    }

    /// Sends `msg`, waiting while the ring is full.
    ///
    /// # Errors
    /// `Disconnected` or `TooLong`.
    pub fn send(&self, msg: &[u8]) -> Result<(), ByteSendError> {
        self.send_deadline(msg, None)
    }

    /// Sends `msg`, waiting at most `timeout` while the ring is full.
    ///
    /// # Errors
    /// `Timeout`, `Disconnected` or `TooLong`.
    pub fn send_timeout(&self, msg: &[u8], timeout: Duration) -> Result<(), ByteSendError> {
        self.send_deadline(msg, deadline_in(timeout))
    }

    /// Sends `msg`, waiting until `deadline` (`None`: forever) while the ring is full.
    ///
    /// # Errors
    /// `Timeout`, `Disconnected` or `TooLong`.
    pub fn send_deadline(
        &self,
        msg: &[u8],
        deadline: impl Into<Option<Instant>>,
    ) -> Result<(), ByteSendError> {
        self.check_len(msg)?;
        self.core.room(deadline.into())?;
        self.write(msg);
        self.core.commit(1);
        Ok(())
    }

    /// Borrows the next free slot as a `len`-byte buffer to fill in place; sent by
    /// [`ByteSlot::commit`].
    ///
    /// # Errors
    /// `Full`, `Disconnected` or `TooLong`.
    ///
    /// ```
    /// # use shmchan::{ByteReceiver, ByteSender};
    /// # let name = format!("doc-bytes-loan-{}", std::process::id());
    /// let mut tx = ByteSender::create(&name, 4, 32)?;
    /// let rx = ByteReceiver::open(&name)?;
    /// let mut slot = tx.try_loan(3)?;
    /// slot.copy_from_slice(b"abc");
    /// slot.commit();
    /// assert_eq!(rx.recv()?, b"abc");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_loan(&mut self, len: usize) -> Result<ByteSlot<'_>, ByteSendError> {
        if len > self.max {
            return Err(TooLong { len, max: self.max }.into());
        }
        self.core.try_room(1)?;
        let p = self.core.ring().payload(self.core.prod.tail());
        Ok(ByteSlot {
            tx: self,
            ptr: p,
            len,
        })
    }
}

/// A free slot lent by [`ByteSender::try_loan`].
pub struct ByteSlot<'a> {
    tx: &'a mut ByteSender,
    ptr: *mut u8,
    len: usize,
}

impl ByteSlot<'_> {
    /// Publishes the message.
    pub fn commit(self) {
        // SAFETY: the slot is free and ours until published; the length word is inside
        // it, 4-aligned.
        unsafe { len_ptr(self.ptr).write(self.len as u32) };
        self.tx.core.commit(1);
    }
}

impl Deref for ByteSlot<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len <= max_len, so the bytes are inside the free slot, which no one
        // else reads or writes while we hold the &mut borrow of the sender.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl DerefMut for ByteSlot<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl fmt::Debug for ByteSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteSlot").field("len", &self.len).finish()
    }
}

impl ByteReceiver {
    /// Creates a channel of `capacity` slots for messages of up to `max_len` bytes,
    /// and attaches as its receiver.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn create(name: &str, capacity: usize, max_len: usize) -> Result<ByteReceiver, OpenError> {
        Self::with_options(name, &create_opts(capacity), max_len)
    }

    /// Opens an existing byte channel as its receiver.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn open(name: &str) -> Result<ByteReceiver, OpenError> {
        Self::with_options(name, &Options::new(), 0)
    }

    /// Creates or opens as `opts` says; `max_len` is used when creating.
    ///
    /// # Errors
    /// See [`OpenError`].
    pub fn with_options(
        name: &str,
        opts: &Options,
        max_len: usize,
    ) -> Result<ByteReceiver, OpenError> {
        let core = RecvCore::attach(name, opts, &wanted(max_len))?;
        let max = core.end.at.shared.geo.msg_size;
        Ok(ByteReceiver { core, max })
    }

    /// The longest message this channel carries.
    pub fn max_len(&self) -> usize {
        self.max
    }

    common_methods!();

    /// The published message at head, as (pointer, length clamped to max_len).
    fn current(&self) -> (*const u8, usize) {
        let p = self.core.ring().payload(self.core.cons.head());
        // SAFETY: the slot is published (the caller saw it); the length word is inside
        // it and 4-aligned. A volatile read: the value is used once, clamped below.
        let len = unsafe { len_ptr(p).read_volatile() } as usize;
        (p, len.min(self.max))
    }

    fn take_into(&self, buf: &mut Vec<u8>) -> usize {
        let (p, len) = self.current();
        buf.clear();
        // SAFETY: len <= max_len bytes from the payload are inside the published slot,
        // which the producer leaves alone until we release it.
        buf.extend_from_slice(unsafe { std::slice::from_raw_parts(p, len) });
        self.core.release(1);
        len
    }

    /// Receives a message into `buf` (replacing its contents) if one is there.
    /// Returns its length. Reusing `buf` avoids an allocation per message.
    ///
    /// # Errors
    /// `Empty`, or `Disconnected` once the sender is gone and the ring is drained.
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<usize, TryRecvError> {
        self.core.try_message()?;
        Ok(self.take_into(buf))
    }

    /// Receives a message into `buf`, waiting until `deadline` (`None`: forever).
    ///
    /// # Errors
    /// `Timeout`, or `Disconnected` once the sender is gone and the ring is drained.
    pub fn recv_into_deadline(
        &self,
        buf: &mut Vec<u8>,
        deadline: impl Into<Option<Instant>>,
    ) -> Result<usize, RecvTimeoutError> {
        self.core.message(deadline.into())?;
        Ok(self.take_into(buf))
    }

    /// Receives a message if one is there, without waiting.
    ///
    /// # Errors
    /// `Empty` or `Disconnected`.
    pub fn try_recv(&self) -> Result<Vec<u8>, TryRecvError> {
        let mut v = Vec::new();
        self.try_recv_into(&mut v)?;
        Ok(v)
    }

    /// Receives a message, waiting while the ring is empty.
    ///
    /// # Errors
    /// `RecvError` once the sender is gone and the ring is drained.
    pub fn recv(&self) -> Result<Vec<u8>, RecvError> {
        let mut v = Vec::new();
        self.recv_into_deadline(&mut v, None)
            .map_err(|_| RecvError)?;
        Ok(v)
    }

    /// Receives a message, waiting at most `timeout`.
    ///
    /// # Errors
    /// `Timeout` or `Disconnected`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Vec<u8>, RecvTimeoutError> {
        let mut v = Vec::new();
        self.recv_into_deadline(&mut v, deadline_in(timeout))?;
        Ok(v)
    }

    /// Borrows the next message in place; its slot is released when the guard drops.
    ///
    /// # Errors
    /// `Empty` or `Disconnected`.
    pub fn try_recv_ref(&mut self) -> Result<ByteRef<'_>, TryRecvError> {
        self.core.try_message()?;
        let (ptr, len) = self.current();
        Ok(ByteRef { rx: self, ptr, len })
    }
}

/// A byte message borrowed in place by [`ByteReceiver::try_recv_ref`].
pub struct ByteRef<'a> {
    rx: &'a mut ByteReceiver,
    ptr: *const u8,
    len: usize,
}

impl Deref for ByteRef<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: len was clamped to max_len, so the bytes are inside the published,
        // unreleased slot.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for ByteRef<'_> {
    fn drop(&mut self) {
        self.rx.core.release(1);
    }
}

impl fmt::Debug for ByteRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ByteRef").field("len", &self.len).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(t: &str) -> String {
        format!("test-bytes-{t}-{}", std::process::id())
    }

    #[test]
    fn round_trip_every_length_and_wraparound() {
        let n = name("lengths");
        let tx = ByteSender::create(&n, 4, 37).unwrap();
        let mut rx = ByteReceiver::open(&n).unwrap();
        assert_eq!(rx.max_len(), 37);
        let mut buf = Vec::new();
        for len in 0..=37usize {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            tx.try_send(&msg).unwrap();
            if len % 2 == 0 {
                assert_eq!(rx.try_recv_into(&mut buf).unwrap(), len);
                assert_eq!(buf, msg);
            } else {
                assert_eq!(&*rx.try_recv_ref().unwrap(), &msg[..]);
            }
        }
        assert_eq!(
            tx.try_send(&[0; 38]),
            Err(ByteSendError::TooLong(TooLong { len: 38, max: 37 }))
        );
    }

    #[test]
    fn corrupt_length_is_clamped_to_the_slot() {
        let n = name("clamp");
        let tx = ByteSender::create(&n, 2, 8).unwrap();
        let rx = ByteReceiver::open(&n).unwrap();
        tx.send(b"12345678").unwrap();
        // Scribble a huge length into the slot, as a hostile process could.
        let p = rx.core.ring().payload(0);
        // SAFETY: test-only write of the slot's length word inside our own mapping.
        unsafe { len_ptr(p).write(u32::MAX) };
        assert_eq!(rx.recv().unwrap(), b"12345678");
    }

    #[test]
    fn typed_and_byte_channels_do_not_mix() {
        let n = name("mix");
        let _tx = ByteSender::create(&n, 2, 8).unwrap();
        assert!(matches!(
            crate::Receiver::<u64>::open(&n),
            Err(OpenError::TypeMismatch { .. })
        ));
    }
}
