//! Multi-producer multi-consumer channels: [`Sender`] and [`Receiver`] can be cloned
//! within a process and attached from any number of processes (up to the peer-table
//! size, [`Options::max_peers`](crate::Options::max_peers)).
//!
//! A producer or consumer killed in the middle of an operation is noticed by the
//! survivors it blocks within the liveness interval: a half-written message is
//! dropped (never delivered), and a message the dead consumer was copying out is
//! dropped with it; everything else keeps flowing.

#[cfg(not(loom))]
mod channel;
pub(crate) mod ring;

#[cfg(not(loom))]
pub use channel::{Iter, Receiver, Sender, TryIter};
