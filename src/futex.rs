//! Wait and wake on a 32-bit word inside the shared mapping.
//!
//! These are *shared* futexes (never `FUTEX_PRIVATE_FLAG`): the kernel keys them by the
//! physical page, so a waiter in one process is woken by a `wake` in another. See
//! [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html).
//!
//! Under `cfg(loom)` the syscall is replaced by a model with the same contract (compare
//! and sleep atomically with respect to `wake`), built from loom's mutex and condvar.

use crate::sync::AtomicU32;
use std::time::Duration;

/// How a wait ended. Every outcome means "look again": futex waits may wake spuriously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woke {
    /// Woken by `wake`, or spuriously.
    Woken,
    /// The word no longer held `expected` when the kernel looked (`EAGAIN`).
    Changed,
    /// The timeout passed.
    TimedOut,
    /// A signal interrupted the wait (`EINTR`).
    Interrupted,
}

/// Sleeps while `*word == expected`, for at most `timeout` (measured on the monotonic
/// clock by the kernel).
#[cfg(not(loom))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Woke {
    use rustix::io::Errno;
    use rustix::thread::futex;
    let ts = timeout.map(|d| rustix::time::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: d.subsec_nanos() as _,
    });
    match futex::wait(word, futex::Flags::empty(), expected, ts.as_ref()) {
        Ok(()) => Woke::Woken,
        Err(Errno::AGAIN) => Woke::Changed,
        Err(Errno::TIMEDOUT) => Woke::TimedOut,
        Err(Errno::INTR) => Woke::Interrupted,
        // EFAULT/EINVAL cannot happen for an aligned word in a live mapping; treat any
        // other error as a spurious wake-up so that the caller re-checks its condition.
        Err(_) => Woke::Woken,
    }
}

/// Wakes up to `n` waiters of `word`; returns how many were woken.
#[cfg(not(loom))]
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    rustix::thread::futex::wake(word, rustix::thread::futex::Flags::empty(), n).unwrap_or(0)
}

#[cfg(loom)]
mod model {
    use loom::sync::{Condvar, Mutex};
    loom::lazy_static! {
        /// Stands for the kernel's futex hash bucket: one lock and one queue.
        pub(super) static ref BUCKET: (Mutex<()>, Condvar) = (Mutex::new(()), Condvar::new());
    }
}

/// Loom model of `futex_wait`: the comparison and the sleep happen under the bucket
/// lock, exactly as the kernel does, so a `wake` cannot slip between them. Timeouts
/// are ignored (a model waits forever), so a lost wake-up shows as a deadlock.
#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> Woke {
    use crate::sync::Ordering::SeqCst;
    let (lock, cv) = &*model::BUCKET;
    let guard = lock.lock().unwrap();
    if word.load(SeqCst) != expected {
        return Woke::Changed;
    }
    drop(cv.wait(guard).unwrap());
    Woke::Woken
}

/// Loom model of `futex_wake`.
#[cfg(loom)]
pub(crate) fn wake(_word: &AtomicU32, _n: u32) -> usize {
    let (lock, cv) = &*model::BUCKET;
    let _guard = lock.lock().unwrap();
    cv.notify_all();
    1
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn wait_returns_changed_when_word_differs() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 4, Some(Duration::from_secs(5))), Woke::Changed);
    }

    /// The longest timeout is accepted (the kernel saturates it rather than failing
    /// with `EINVAL`, which would read as a spurious wake-up): the word is compared.
    #[test]
    fn wait_accepts_duration_max() {
        let w = AtomicU32::new(5);
        assert_eq!(wait(&w, 4, Some(Duration::MAX)), Woke::Changed);
    }

    #[test]
    fn wait_times_out() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        assert_eq!(wait(&w, 0, Some(Duration::from_millis(20))), Woke::TimedOut);
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn wake_releases_a_waiter() {
        let w = std::sync::Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = std::thread::spawn(move || {
            while w2.load(Ordering::SeqCst) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(10)));
            }
        });
        std::thread::sleep(Duration::from_millis(10));
        w.store(1, Ordering::SeqCst);
        wake(&w, 1);
        t.join().unwrap();
    }
}
