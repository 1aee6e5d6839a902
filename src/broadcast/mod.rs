//! Broadcast channels: one [`Publisher`], up to
//! [`Options::subscribers`](crate::Options::subscribers) [`Subscriber`]s in any
//! processes, each of which receives every message (or, under
//! [`Policy::Overwrite`], learns exactly how many it missed).
//!
//! The segment, its header and its peer table are those of the other flavors: entry
//! 0 is the publisher's, entry `i + 1` subscriber `i`'s, whose cursor line sits after
//! the header. A subscriber is alive while its process holds its liveness lock; a
//! lossless publisher waits for live subscribers only, and evicts one whose process
//! died within the liveness interval.

#[cfg(not(loom))]
mod bytes;
#[cfg(not(loom))]
mod channel;
#[cfg(not(loom))]
mod core;
#[cfg(not(loom))]
mod error;
pub(crate) mod ring;

pub use crate::options::{Policy, Start};
#[cfg(not(loom))]
pub use bytes::{BytePublisher, ByteSubscriber};
#[cfg(not(loom))]
pub use channel::{Iter, Publisher, RecvRef, Subscriber, TryIter};
#[cfg(not(loom))]
pub use error::{RecvError, RecvRefError, RecvTimeoutError, TryRecvError};
