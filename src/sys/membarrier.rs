//! Asymmetric fences: the fast path of every send and receive pays only a compiler
//! fence, and the rare waiter about to sleep pays for a barrier on every CPU instead.
//!
//! The wake-up protocol (see `wait.rs`) needs a store-load barrier on both sides: the
//! waker between publishing and reading `sleepers`, the waiter between announcing
//! itself and its last look. An `mfence` per message costs the waker tens of
//! nanoseconds, and far more when its store misses in the cache (the fence waits for
//! the line). `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` makes every CPU that runs
//! a *registered* process execute a full barrier before the call returns; a waiter
//! that calls it after announcing itself gets the same guarantee as if every waker
//! had fenced: a waker's publication is then either visible to the waiter's last
//! look, or its later load of `sleepers` sees the announcement. See
//! [membarrier(2)](https://man7.org/linux/man-pages/man2/membarrier.2.html).
//!
//! This holds only if every process attached to the channel registered, so the
//! segment records the mode ([`FENCE`] or [`ASYMMETRIC`]) in each wait word: the
//! creator sets `ASYMMETRIC` if it could register, and any process that cannot
//! register sets `FENCE` for everyone. (A waker that read `ASYMMETRIC` just before such
//! a downgrade may skip one fence; a waiter it misses wakes at its next liveness
//! slice. Loom models check the `FENCE` protocol; membarrier is outside their reach.)

use crate::layout::WaitWord;
use crate::sync::{Ordering, fence};

/// Mode: wakers execute a `SeqCst` fence (the zeroed default).
pub(crate) const FENCE: u32 = 0;
/// Mode: wakers need only a compiler fence; waiters call membarrier.
pub(crate) const ASYMMETRIC: u32 = 1;

/// Registers this process for global expedited membarrier (once per process; a
/// forked child registers again). Returns whether it may use the asymmetric mode.
#[cfg(not(loom))]
pub(crate) fn register() -> bool {
    use rustix::thread::{MembarrierCommand, MembarrierQuery, membarrier, membarrier_query};
    use std::sync::Mutex;
    static REGISTERED: Mutex<Option<(u32, bool)>> = Mutex::new(None);
    // Test seam: a unit test makes this thread look like that of a process that cannot
    // register (an old kernel, or a seccomp filter that forbids membarrier).
    if crate::fault::hit(crate::fault::Point::MembarrierRegister).is_err() {
        return false;
    }
    // Keyed by fork generation: a forked child registers again.
    let pid = crate::sys::process::generation();
    let mut g = match REGISTERED.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if let Some((p, ok)) = *g {
        if p == pid {
            return ok;
        }
    }
    let q = membarrier_query();
    let ok = q
        .contains(MembarrierQuery::GLOBAL_EXPEDITED | MembarrierQuery::REGISTER_GLOBAL_EXPEDITED)
        && membarrier(MembarrierCommand::RegisterGlobalExpedited).is_ok()
        && membarrier(MembarrierCommand::GlobalExpedited).is_ok();
    *g = Some((pid, ok));
    ok
}

/// The waker's barrier between publishing and reading `sleepers`.
#[inline(always)]
pub(crate) fn light(w: &WaitWord) {
    // Relaxed: the mode only selects which barrier to use; it changes at attach.
    if !cfg!(loom) && w.mode.load(Ordering::Relaxed) == ASYMMETRIC {
        std::sync::atomic::compiler_fence(Ordering::SeqCst);
    } else {
        fence(Ordering::SeqCst);
    }
}

/// The waiter's barrier between announcing itself and its last look.
#[cold]
pub(crate) fn heavy(w: &WaitWord) {
    fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    if w.mode.load(Ordering::Relaxed) == ASYMMETRIC {
        use rustix::thread::{MembarrierCommand, membarrier};
        if crate::fault::hit(crate::fault::Point::MembarrierBarrier).is_err()
            || membarrier(MembarrierCommand::GlobalExpedited).is_err()
        {
            // Cannot happen once registered; if it does, make everyone fence.
            w.mode.store(FENCE, Ordering::Relaxed);
        }
    }
    #[cfg(loom)]
    let _ = w;
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::fault::{Point, arm};
    use crate::sync::AtomicU32;
    use rustix::io::Errno;

    /// A waiter whose barrier fails cannot do its half of the asymmetric protocol: it
    /// makes every waker of the word fence again.
    #[test]
    fn a_failed_barrier_downgrades_the_word_to_fences() {
        let w = WaitWord {
            word: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
            mode: AtomicU32::new(ASYMMETRIC),
        };
        let armed = arm(Point::MembarrierBarrier, &[Errno::INVAL]);
        heavy(&w);
        assert_eq!(armed.used(), 1);
        assert_eq!(w.mode.load(Ordering::Relaxed), FENCE);
        // A word in fence mode never asks the kernel.
        drop(armed);
        let armed = arm(Point::MembarrierBarrier, &[Errno::INVAL]);
        heavy(&w);
        assert_eq!(armed.used(), 0);
        assert_eq!(w.mode.load(Ordering::Relaxed), FENCE);
    }
}
