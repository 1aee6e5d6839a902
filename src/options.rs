//! How a handle creates or opens its channel.

use crate::wait::WaitStrategy;
use std::time::Duration;

/// The longest interval or timeout [`Options`] keeps: a longer one, up to
/// `Duration::MAX`, is cut to this. 2^32 s is about 136 years, "never" in practice,
/// yet far enough inside the range that `Instant::now() + it` cannot overflow (the
/// monotonic clock counts from boot, in 63 bits of seconds) and its nanoseconds
/// (4.3e18) fit a `u64` with room to add them to a process's uptime.
pub(crate) const LONGEST: Duration = Duration::from_secs(1 << 32);

/// What to do about the segment's name when attaching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum CreateMode {
    /// Open an existing channel; fail with `NotFound` if there is none (the default).
    #[default]
    Open,
    /// Create a new channel; fail with `AlreadyExists` if the name is taken.
    CreateExclusive,
    /// Open the channel if it exists, else create it. Racing processes agree: one
    /// creates, the others wait for its header and open.
    OpenOrCreate,
    /// Remove any object of that name, then create a new channel. Processes still
    /// attached to the old one keep using it, unseen by newcomers.
    PurgeAndCreate,
}

/// What a broadcast publisher does when a subscriber has not read the slot it is about
/// to reuse. Chosen at creation; an opener that names one must find that one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Policy {
    /// The publisher waits (as a sender on a full ring) for the slowest live
    /// subscriber; a subscriber whose process died is evicted within the liveness
    /// interval and holds nobody back. Nothing is ever skipped (the default).
    #[default]
    Lossless,
    /// The publisher never waits: it overwrites the oldest slot. A subscriber that
    /// was lapped is told how many messages it missed (`Lagged(n)`) and goes on from
    /// the oldest message still intact; it never reads a torn message.
    Overwrite,
}

impl Policy {
    pub(crate) fn code(self) -> u32 {
        match self {
            Policy::Lossless => crate::layout::POLICY_LOSSLESS,
            Policy::Overwrite => crate::layout::POLICY_OVERWRITE,
        }
    }

    pub(crate) fn from_code(c: u32) -> Option<Policy> {
        match c {
            crate::layout::POLICY_LOSSLESS => Some(Policy::Lossless),
            crate::layout::POLICY_OVERWRITE => Some(Policy::Overwrite),
            _ => None,
        }
    }

    /// `"lossless"` or `"overwrite"`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Lossless => "lossless",
            Policy::Overwrite => "overwrite",
        }
    }
}

/// Where a broadcast subscriber starts reading when it attaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Start {
    /// At the next message published after it attached (the default).
    #[default]
    Next,
    /// At the oldest message the ring still holds (up to `capacity` messages back).
    Oldest,
}

/// Options for creating or opening a channel.
///
/// ```
/// use shmchan::{CreateMode, Options, WaitStrategy};
/// use std::time::Duration;
///
/// let opts = Options::new()
///     .capacity(1024)
///     .mode(CreateMode::OpenOrCreate)
///     .permissions(0o600)
///     .wait_strategy(WaitStrategy::BusySpin)
///     .liveness_interval(Duration::from_millis(50));
/// assert_eq!(opts.get_capacity(), Some(1024));
/// ```
#[derive(Debug, Clone)]
pub struct Options {
    pub(crate) capacity: Option<u64>,
    pub(crate) mode: CreateMode,
    pub(crate) permissions: u32,
    pub(crate) keep: bool,
    pub(crate) wait: WaitStrategy,
    pub(crate) init_timeout: Duration,
    pub(crate) liveness_interval: Duration,
    pub(crate) allow_foreign_owner: bool,
    pub(crate) max_peers: Option<u32>,
    pub(crate) subscribers: Option<u32>,
    pub(crate) policy: Option<Policy>,
    pub(crate) start: Start,
    pub(crate) lag_limit: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options::new()
    }
}

impl Options {
    /// Defaults: open only, mode `0600`, default wait strategy, 1 s init timeout,
    /// 100 ms liveness interval, only segments owned by our own uid.
    pub fn new() -> Options {
        Options {
            capacity: None,
            mode: CreateMode::Open,
            permissions: 0o600,
            keep: false,
            wait: WaitStrategy::default(),
            init_timeout: Duration::from_secs(1),
            liveness_interval: Duration::from_millis(100),
            allow_foreign_owner: false,
            max_peers: None,
            subscribers: None,
            policy: None,
            start: Start::Next,
            lag_limit: None,
        }
    }

    /// Number of slots, a power of two. Needed to create; when opening, a different
    /// capacity is an error (`CapacityMismatch`).
    ///
    /// Latency: a message of 32 bytes or more takes a cache line of its own, and a ring
    /// of many such lines pays for a new line per message. For request/response traffic
    /// with one message in flight, 2-4 slots keep the round trip at the cross-core floor
    /// (measured for 32 B: 1.0-1.1x the floor with 2 slots, 1.3-1.6x with 256).
    pub fn capacity(mut self, capacity: usize) -> Options {
        self.capacity = Some(capacity as u64);
        self
    }

    /// The capacity set, if any.
    pub fn get_capacity(&self) -> Option<u64> {
        self.capacity
    }

    /// Create, open, or both; see [`CreateMode`].
    pub fn mode(mut self, mode: CreateMode) -> Options {
        self.mode = mode;
        self
    }

    /// Permission bits of a created object (default `0o600`: owner only). Applied
    /// exactly, whatever the umask.
    pub fn permissions(mut self, mode: u32) -> Options {
        self.permissions = mode & 0o777;
        self
    }

    /// Keep the named object when the creating handle is dropped (default: the
    /// creator removes the name on drop; mappings stay valid). Remove it later with
    /// [`remove`](crate::remove) or `shmchan rm`.
    pub fn keep(mut self, keep: bool) -> Options {
        self.keep = keep;
        self
    }

    /// How blocking calls wait (default: spin 50 µs, then sleep on a futex).
    pub fn wait_strategy(mut self, wait: WaitStrategy) -> Options {
        self.wait = wait;
        self
    }

    /// How long an opener waits for a creator that has not finished the header.
    ///
    /// `Duration::MAX` (anything over about 136 years) means "wait as long as it takes".
    ///
    /// ```
    /// use shmchan::{CreateMode, Options, Receiver, Sender};
    /// use std::time::Duration;
    ///
    /// # let name = format!("doc-init-timeout-{}", std::process::id());
    /// let opts = Options::new().init_timeout(Duration::MAX);
    /// let create = opts.clone().capacity(4).mode(CreateMode::CreateExclusive);
    /// let tx = Sender::<u64>::with_options(&name, &create)?;
    /// let rx = Receiver::<u64>::with_options(&name, &opts)?;
    /// tx.send(7)?;
    /// assert_eq!(rx.recv()?, 7);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn init_timeout(mut self, timeout: Duration) -> Options {
        self.init_timeout = timeout.min(LONGEST);
        self
    }

    /// How often a waiting or polling handle checks that its peer process is alive: a
    /// peer killed without a chance to detach is noticed within about this time. At
    /// least 100 µs; `Duration::MAX` (anything over about 136 years) means "never
    /// check" (a peer that leaves normally still wakes its waiters at once).
    ///
    /// ```
    /// use shmchan::{CreateMode, Options, Receiver, RecvTimeoutError, Sender};
    /// use std::time::Duration;
    ///
    /// # let name = format!("doc-liveness-{}", std::process::id());
    /// let opts = Options::new().liveness_interval(Duration::MAX);
    /// let create = opts.clone().capacity(4).mode(CreateMode::CreateExclusive);
    /// let tx = Sender::<u64>::with_options(&name, &create)?;
    /// let rx = Receiver::<u64>::with_options(&name, &opts)?;
    /// let r = rx.recv_timeout(Duration::from_millis(5));
    /// assert_eq!(r, Err(RecvTimeoutError::Timeout));
    /// drop(tx);
    /// let r = rx.recv_timeout(Duration::MAX);
    /// assert_eq!(r, Err(RecvTimeoutError::Disconnected));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn liveness_interval(mut self, interval: Duration) -> Options {
        self.liveness_interval = interval.clamp(Duration::from_micros(100), LONGEST);
        self
    }

    /// Size of the peer table of a created channel: how many handles (attachments,
    /// each shared by its clones) may be attached at once. MPMC default 64; SPSC
    /// channels use two entries. At most 192.
    pub fn max_peers(mut self, n: u32) -> Options {
        self.max_peers = Some(n);
        self
    }

    /// Broadcast: how many subscribers may be attached at once (1 to 191, default
    /// 16), fixed at creation. Each takes a 128-byte cursor line in the segment.
    pub fn subscribers(mut self, n: u32) -> Options {
        self.subscribers = Some(n);
        self
    }

    /// Broadcast: what the publisher does about slow subscribers (default
    /// [`Policy::Lossless`]), fixed at creation. When opening, a channel created with
    /// another policy is refused (`PolicyMismatch`); unset, any policy is accepted.
    pub fn policy(mut self, policy: Policy) -> Options {
        self.policy = Some(policy);
        self
    }

    /// Broadcast, lossless: evict a live subscriber that has held the publisher back
    /// (the ring full because of it) for this long, fixed at creation (default: never;
    /// at most about 49 days, in milliseconds, at least 1 ms). The evicted subscriber's
    /// next receive reports `Lagged(n)` once the publisher has overwritten what it had
    /// not read, and it counts again from the oldest message still in the ring. A
    /// subscriber whose process died is evicted within the liveness interval anyway.
    pub fn lag_limit(mut self, limit: Duration) -> Options {
        self.lag_limit = Some(limit);
        self
    }

    /// Broadcast: where a subscriber starts reading (default [`Start::Next`]).
    pub fn start(mut self, start: Start) -> Options {
        self.start = start;
        self
    }

    /// Accept a segment owned by another uid (default: refuse, `ForeignOwner`). Anyone
    /// who can write the object can make this process read garbage messages (never
    /// out-of-bounds), and can shrink it, which raises `SIGBUS`.
    pub fn allow_foreign_owner(mut self, allow: bool) -> Options {
        self.allow_foreign_owner = allow;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Regression (issue 11, defect 7): `Duration::MAX` made `Instant::now() + d`
    /// panic where the handles turn these options into instants.
    #[test]
    fn duration_max_saturates_to_a_representable_never() {
        let o = Options::new()
            .liveness_interval(Duration::MAX)
            .init_timeout(Duration::MAX);
        assert_eq!(o.liveness_interval, LONGEST);
        assert_eq!(o.init_timeout, LONGEST);
        // What the handles do with them must not overflow.
        let now = Instant::now();
        assert!(now.checked_add(o.liveness_interval).is_some());
        assert!(now.checked_add(o.init_timeout).is_some());
        let nanos = u64::try_from(o.liveness_interval.as_nanos()).expect("fits a u64");
        assert!(
            nanos
                .checked_add(100 * 365 * 24 * 3600 * 1_000_000_000)
                .is_some()
        );
    }

    #[test]
    fn default_is_new_and_capacity_reads_back() {
        let d = Options::default();
        assert_eq!(d.get_capacity(), None);
        assert_eq!(d.mode, CreateMode::Open);
        assert_eq!((d.permissions, d.keep), (0o600, false));
        assert_eq!(d.liveness_interval, Options::new().liveness_interval);
        assert_eq!(Options::default().capacity(64).get_capacity(), Some(64));
    }

    #[test]
    fn ordinary_durations_are_kept() {
        let o = Options::new()
            .liveness_interval(Duration::from_millis(7))
            .init_timeout(Duration::from_secs(3));
        assert_eq!(o.liveness_interval, Duration::from_millis(7));
        assert_eq!(o.init_timeout, Duration::from_secs(3));
        let o = Options::new().liveness_interval(Duration::ZERO);
        assert_eq!(o.liveness_interval, Duration::from_micros(100));
    }
}
