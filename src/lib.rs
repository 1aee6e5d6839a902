//! Lock-free channels between processes, in POSIX shared memory.
//!
//! A channel is a named shared-memory object (visible in `/dev/shm`) holding a header
//! and a ring of fixed-size slots. A [`Sender`] in one process and a [`Receiver`] in
//! another exchange plain-old-data messages through it with a few atomic operations
//! and no system call; a side that must wait spins briefly, then sleeps on a futex in
//! the segment, and is woken only if it actually sleeps.
//!
//! ```
//! use shmchan::{Receiver, Sender};
//!
//! #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
//! #[repr(C)]
//! struct Tick { price: u64, qty: u32, side: u32 }
//!
//! # let name = format!("doc-lib-{}", std::process::id());
//! // Process A creates the channel (and removes its name when `tx` is dropped).
//! let tx = Sender::<Tick>::create(&name, 1024)?;
//! // Process B opens it by name; type, size and flavor are checked.
//! let rx = Receiver::<Tick>::open(&name)?;
//!
//! tx.send(Tick { price: 101, qty: 5, side: 1 })?;
//! assert_eq!(rx.recv()?.price, 101);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Guarantees
//!
//! - A message whose `send` returned `Ok` is received exactly once, unless the
//!   receiver's process dies between copying it out and releasing its slot: an SPSC
//!   channel then delivers it again to the next receiver, an MPMC channel drops it
//!   (the survivors cannot know whether the dead process acted on it).
//! - A process killed at any instruction never makes another read a half-written
//!   message, and never wedges the channel: a dead peer is noticed within the
//!   [liveness interval](Options::liveness_interval) by anyone waiting on it.
//! - A peer is dead exactly when the lock its process holds on the channel's object
//!   (an open-file-description lock, released by the kernel when the process ends) is
//!   free; pids are for display only. Peers in other PID namespaces, a process whose
//!   main thread has exited, and a stopped process are alive.
//! - A handle inherited through `fork()` is inert in the child: its operations report
//!   `Disconnected` and dropping it changes nothing shared. Attach after forking.
//! - Each process keeps one file descriptor open per channel it is attached to.
//! - Nothing read from the segment is trusted: another process writing garbage can
//!   cause garbage messages or a stalled channel, never an access outside the mapping.
//!   (A same-uid process can still shrink the object, which raises `SIGBUS`; see the
//!   README's trust boundary.)
#![deny(unsafe_op_in_unsafe_fn)]
#![cfg_attr(loom, allow(dead_code, unused_imports))]
#![warn(missing_docs, missing_debug_implementations)]

// Under `cfg(loom)` only the parts that run over heap memory are built: the rings, the
// wait protocol and the futex model.
//
// One folder per flavor (its ring and its handles side by side); below the flavors,
// what every handle shares (the segment header, the peer table, waiting, options,
// errors); `sys` holds the OS calls.
#[cfg(not(loom))]
mod attachment;
pub mod broadcast;
mod error;
#[cfg(not(loom))]
mod fault;
#[cfg(not(loom))]
mod inspect;
mod layout;
#[cfg(all(test, loom))]
mod loom_tests;
pub mod mpmc;
mod options;
#[cfg(not(loom))]
mod peers;
#[cfg(not(loom))]
mod shared;
mod spsc;
mod sync;
mod sys;
mod wait;

pub use bytemuck::{Pod, Zeroable};
pub use error::{
    OpenError, RecvError, RecvTimeoutError, SendError, SendTimeoutError, TooLong, TryRecvError,
    TrySendError,
};
#[cfg(not(loom))]
pub use inspect::{ChannelInfo, PeerInfo, SubscriberInfo, inspect, list};
pub use options::{CreateMode, Options};
#[cfg(not(loom))]
pub use spsc::bytes::{ByteReceiver, ByteRef, ByteSendError, ByteSender, ByteSlot};
#[cfg(not(loom))]
pub use spsc::channel::{IntoIter, Iter, Receiver, RecvRef, SendSlot, Sender, TryIter};
pub use wait::WaitStrategy;

/// Removes the name of channel `name`, like `shm_unlink`. Processes that have it
/// mapped keep using it; new opens fail with `NotFound`.
///
/// # Errors
/// `InvalidName`, `NotFound`, `PermissionDenied`.
///
/// ```
/// # let name = format!("doc-remove-{}", std::process::id());
/// let tx = shmchan::Sender::<u8>::with_options(
///     &name,
///     &shmchan::Options::new().capacity(2).mode(shmchan::CreateMode::CreateExclusive).keep(true),
/// )?;
/// drop(tx);
/// shmchan::remove(&name)?;
/// assert!(matches!(shmchan::remove(&name), Err(shmchan::OpenError::NotFound(_))));
/// # Ok::<(), shmchan::OpenError>(())
/// ```
#[cfg(not(loom))]
pub fn remove(name: &str) -> Result<(), OpenError> {
    sys::segment::unlink(name)
}
