//! The single-producer single-consumer flavor: its ring, what its handles share, and
//! the typed and byte handles (re-exported at the crate root).

#[cfg(not(loom))]
pub(crate) mod bytes;
#[cfg(not(loom))]
pub(crate) mod channel;
#[cfg(not(loom))]
pub(crate) mod endpoint;
pub(crate) mod ring;
