//! Atomics and cells, swapped for loom's model-checked versions under `cfg(loom)`.
//!
//! The ring and wake-up code only ever names these re-exports, so the same algorithms
//! run over a shared mapping in production and over heap memory inside loom models.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering, fence};

/// Spin-loop hint; under loom a yield so that the model explores the other thread.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}
