//! The operating-system calls: the shared-memory object and its mapping, futexes,
//! process-wide barriers, open-file-description locks, and this process's fork state.

pub(crate) mod futex;
pub(crate) mod membarrier;
#[cfg(not(loom))]
pub(crate) mod ofd;
#[cfg(not(loom))]
pub(crate) mod process;
#[cfg(not(loom))]
pub(crate) mod segment;
