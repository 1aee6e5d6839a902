//! What a broadcast receive can report besides a message: the publisher is gone,
//! nothing yet, or how many messages this subscriber missed.

use thiserror::Error;

/// Error of [`Subscriber::try_recv`](super::Subscriber::try_recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TryRecvError {
    /// No message yet.
    #[error("no message yet")]
    Empty,
    /// The publisher overwrote this many messages before this subscriber read them
    /// (overwrite policy, or a lossless subscriber that was evicted); the next
    /// receive returns the oldest message still in the ring.
    #[error(
        "missed {0} messages (the publisher overwrote them); the next receive continues after them"
    )]
    Lagged(u64),
    /// The publisher is gone and every message it published was received.
    #[error("the publisher is gone and everything it sent was received")]
    Disconnected,
}

/// Error of [`Subscriber::recv`](super::Subscriber::recv).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecvError {
    /// See [`TryRecvError::Lagged`].
    #[error(
        "missed {0} messages (the publisher overwrote them); the next receive continues after them"
    )]
    Lagged(u64),
    /// See [`TryRecvError::Disconnected`].
    #[error("the publisher is gone and everything it sent was received")]
    Disconnected,
}

/// Error of [`Subscriber::recv_timeout`](super::Subscriber::recv_timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecvTimeoutError {
    /// No message within the time given.
    #[error("no message within the timeout")]
    Timeout,
    /// See [`TryRecvError::Lagged`].
    #[error(
        "missed {0} messages (the publisher overwrote them); the next receive continues after them"
    )]
    Lagged(u64),
    /// See [`TryRecvError::Disconnected`].
    #[error("the publisher is gone and everything it sent was received")]
    Disconnected,
}

impl From<RecvError> for RecvTimeoutError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Lagged(n) => RecvTimeoutError::Lagged(n),
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
        }
    }
}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Lagged(n) => TryRecvError::Lagged(n),
            RecvError::Disconnected => TryRecvError::Disconnected,
        }
    }
}

/// Error of [`Subscriber::try_recv_ref`](super::Subscriber::try_recv_ref) and
/// `recv_ref`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RecvRefError {
    /// No message yet.
    #[error("no message yet")]
    Empty,
    /// See [`TryRecvError::Lagged`].
    #[error(
        "missed {0} messages (the publisher overwrote them); the next receive continues after them"
    )]
    Lagged(u64),
    /// See [`TryRecvError::Disconnected`].
    #[error("the publisher is gone and everything it sent was received")]
    Disconnected,
    /// The channel uses [`Policy::Overwrite`](crate::broadcast::Policy::Overwrite): the
    /// publisher may rewrite any slot at any time, so no reference into one can be
    /// handed out. Use `try_recv`/`recv`, which copy the message and check it.
    #[error(
        "borrowing in place needs a lossless channel; this one overwrites: use try_recv or recv, which copy"
    )]
    Overwrite,
    /// The channel has a lag limit: the publisher may evict this subscriber while it
    /// holds a borrow and rewrite the slot, so no reference into one is handed out.
    /// Use `try_recv`/`recv`.
    #[error(
        "borrowing in place is off on a channel with a lag limit (the publisher may evict this subscriber and rewrite the slot): use try_recv or recv, which copy"
    )]
    LagLimit,
}

impl From<TryRecvError> for RecvRefError {
    fn from(e: TryRecvError) -> Self {
        match e {
            TryRecvError::Empty => RecvRefError::Empty,
            TryRecvError::Lagged(n) => RecvRefError::Lagged(n),
            TryRecvError::Disconnected => RecvRefError::Disconnected,
        }
    }
}

impl From<RecvTimeoutError> for RecvRefError {
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::Timeout => RecvRefError::Empty,
            RecvTimeoutError::Lagged(n) => RecvRefError::Lagged(n),
            RecvTimeoutError::Disconnected => RecvRefError::Disconnected,
        }
    }
}
