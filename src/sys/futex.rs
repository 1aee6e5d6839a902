//! Wait and wake on a 32-bit word inside the shared mapping.
//!
//! These are *shared* futexes (never `FUTEX_PRIVATE_FLAG`): the kernel keys them by the
//! physical page, so a waiter in one process is woken by a `wake` in another. See
//! [futex(2)](https://man7.org/linux/man-pages/man2/futex.2.html).
//!
//! Under `cfg(loom)` the syscall is replaced by a model with the same contract (compare
//! and sleep atomically with respect to `wake`; `wake(word, n)` wakes at most `n`
//! sleepers on that word), built from loom's mutex and condvar.

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

    /// The kernel's side of the futexes in one model execution: the queue of sleepers,
    /// each tagged with the word it sleeps on, under one lock (the hash bucket's).
    #[derive(Default)]
    pub(super) struct Queue {
        /// Sleepers in arrival order: (address of the word, ticket).
        pub sleepers: Vec<(usize, u64)>,
        /// The next ticket handed to a sleeper.
        pub next_ticket: u64,
    }

    loom::lazy_static! {
        /// Stands for the kernel's futex hash bucket: one lock and one queue. The
        /// condvar only parks and unparks the model's threads; who is woken is decided
        /// by the queue, so a thread leaves `wait` only once a `wake` on its word took
        /// its ticket out (the condvar itself never wakes spuriously in loom).
        pub(super) static ref BUCKET: (Mutex<Queue>, Condvar) =
            (Mutex::new(Queue::default()), Condvar::new());
    }
}

/// Loom model of `futex_wait`: the comparison and the enqueueing happen under the
/// bucket lock, exactly as the kernel does, so a `wake` cannot slip between them; the
/// waiter then sleeps until a `wake` on the same word picks it. Timeouts are ignored
/// and there are no spurious wake-ups (the real call has both, and callers treat
/// every return as "look again"; the model leaves them out so that a wake-up that
/// nobody sends shows as a deadlock, which loom reports).
#[cfg(loom)]
pub(crate) fn wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) -> Woke {
    use crate::sync::Ordering::SeqCst;
    let (lock, cv) = &*model::BUCKET;
    let mut q = lock.lock().unwrap();
    // SeqCst under the lock: a waker that changed the word and then took the lock
    // happens-before us, so we see its change; one that takes the lock after us finds
    // our ticket.
    if word.load(SeqCst) != expected {
        return Woke::Changed;
    }
    let ticket = q.next_ticket;
    q.next_ticket += 1;
    q.sleepers.push((word as *const AtomicU32 as usize, ticket));
    while q.sleepers.iter().any(|&(_, t)| t == ticket) {
        q = cv.wait(q).unwrap();
    }
    Woke::Woken
}

/// Loom model of `futex_wake`: wakes the first `n` sleepers on `word` (and only on
/// `word`), in arrival order as the kernel does; returns how many.
#[cfg(loom)]
pub(crate) fn wake(word: &AtomicU32, n: u32) -> usize {
    let (lock, cv) = &*model::BUCKET;
    let mut q = lock.lock().unwrap();
    let addr = word as *const AtomicU32 as usize;
    let mut left = n as usize;
    let before = q.sleepers.len();
    q.sleepers.retain(|&(a, _)| {
        if a == addr && left > 0 {
            left -= 1;
            false
        } else {
            true
        }
    });
    let woken = before - q.sleepers.len();
    if woken > 0 {
        // Every parked thread re-checks its ticket; those not taken out park again.
        cv.notify_all();
    }
    woken
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

    /// A signal delivered to a sleeping waiter (a handler that does not restart the
    /// call) ends the wait as `Interrupted`, which callers treat as "look again".
    #[test]
    fn a_signal_interrupts_the_wait() {
        use std::os::unix::thread::JoinHandleExt;
        use std::sync::atomic::AtomicBool;
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: installs a handler that does nothing (async-signal-safe) for SIGUSR2,
        // which nothing else in this test binary uses; `sa` is fully initialised
        // (zeroed, then the fields set; SA_RESTART deliberately absent).
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            assert_eq!(libc::sigaction(libc::SIGUSR2, &sa, std::ptr::null_mut()), 0);
        }
        let done = std::sync::Arc::new(AtomicBool::new(false));
        let done2 = done.clone();
        let t = std::thread::spawn(move || {
            let w = AtomicU32::new(0);
            let r = wait(&w, 0, Some(Duration::from_secs(60)));
            done2.store(true, Ordering::SeqCst);
            r
        });
        let start = Instant::now();
        // A signal that arrives before the thread sleeps only runs the handler: keep
        // signalling until the wait returns.
        while !done.load(Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "never interrupted"
            );
            // SAFETY: the thread is not joined yet, so its pthread_t is valid.
            unsafe { libc::pthread_kill(t.as_pthread_t(), libc::SIGUSR2) };
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(t.join().unwrap(), Woke::Interrupted);
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
