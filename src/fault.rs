//! Fault injection for unit tests: named points where a system call can be made to
//! fail, so that the recovery paths behind them (a creator cleaning up after a failed
//! `ftruncate`, `fallocate` retried after `EINTR`, the no-membarrier fallback) run
//! deterministically.
//!
//! Outside `cfg(test)` [`hit`] is a constant `Ok(())` and compiles away. In unit tests
//! a test arms a point for its own thread with [`arm`]; each [`hit`] of that point on
//! that thread then fails with the next error of the list, until the list is used up
//! (or the returned guard is dropped). Other threads, so other tests, are unaffected.

use rustix::io::Errno;

/// A place where a system call can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) enum Point {
    /// `fchmod` of a new segment object (`Segment::create`).
    Fchmod,
    /// `ftruncate` of a new segment object.
    Ftruncate,
    /// `fallocate` of a new segment object's pages.
    Fallocate,
    /// `mmap` of a segment object.
    Mmap,
    /// Registration for `membarrier` (`membarrier::register`).
    MembarrierRegister,
    /// A waiter's `membarrier` call (`membarrier::heavy`).
    MembarrierBarrier,
}

/// Whether the system call at `point` should fail now, and with which error.
#[cfg(not(test))]
#[inline(always)]
pub(crate) fn hit(_point: Point) -> Result<(), Errno> {
    Ok(())
}

#[cfg(test)]
pub(crate) use armed::{arm, hit};

#[cfg(test)]
mod armed {
    use super::{Errno, Point};
    use std::cell::RefCell;
    use std::collections::VecDeque;

    thread_local! {
        static ARMED: RefCell<Vec<(Point, VecDeque<Errno>)>> = const { RefCell::new(Vec::new()) };
    }

    /// Fails with the next error armed for `point` on this thread, if any is left.
    pub(crate) fn hit(point: Point) -> Result<(), Errno> {
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            match a.iter_mut().find(|(p, _)| *p == point) {
                Some((_, errors)) => errors.pop_front().map_or(Ok(()), Err),
                None => Ok(()),
            }
        })
    }

    /// Disarms its point when dropped; tells how many of the armed errors were used.
    #[derive(Debug)]
    #[must_use = "the point is disarmed when the guard is dropped"]
    pub(crate) struct Armed {
        point: Point,
        armed: usize,
    }

    impl Armed {
        /// How many of the armed errors have been returned by [`hit`] so far.
        pub(crate) fn used(&self) -> usize {
            ARMED.with(|a| {
                let a = a.borrow();
                let left = a
                    .iter()
                    .find(|(p, _)| *p == self.point)
                    .map_or(0, |(_, e)| e.len());
                self.armed - left
            })
        }
    }

    impl Drop for Armed {
        fn drop(&mut self) {
            ARMED.with(|a| a.borrow_mut().retain(|(p, _)| *p != self.point));
        }
    }

    /// Makes the next `errors.len()` hits of `point` on this thread fail, in order.
    pub(crate) fn arm(point: Point, errors: &[Errno]) -> Armed {
        ARMED.with(|a| {
            let mut a = a.borrow_mut();
            a.retain(|(p, _)| *p != point);
            a.push((point, errors.iter().copied().collect()));
        });
        Armed {
            point,
            armed: errors.len(),
        }
    }
}
