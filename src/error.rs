//! Error types: one per operation, each handing back the value that was not sent.

use std::fmt;
use std::io;

/// Why a channel could not be created or attached.
///
/// Returned by every call that creates, opens or attaches to a segment. Nothing is
/// left mapped when this is returned, and a segment this call created is removed again.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The name is empty, contains `/` or NUL, is `.` or `..`, or is too long.
    #[error("invalid channel name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No segment of that name exists.
    #[error("no channel named {0:?}")]
    NotFound(String),
    /// A segment of that name exists already (with `CreateMode::CreateExclusive`).
    #[error("a channel named {0:?} exists already")]
    AlreadyExists(String),
    /// The operating system refused access to the segment.
    #[error("permission denied for channel {0:?}")]
    PermissionDenied(String),
    /// The segment belongs to another user and the options do not allow that.
    #[error("channel is owned by uid {owner}, not by this process's uid {ours}")]
    ForeignOwner {
        /// The segment's owner.
        owner: u32,
        /// Our effective uid.
        ours: u32,
    },
    /// The object is not a shmchan segment.
    #[error("not a shmchan segment (bad magic)")]
    BadMagic,
    /// The segment was made by another layout version of shmchan.
    #[error("layout version {found} is not supported (this build reads version {expected})")]
    VersionMismatch {
        /// Version in the segment.
        found: u32,
        /// Version this build understands.
        expected: u32,
    },
    /// The segment is of another flavor (SPSC versus MPMC).
    #[error("flavor mismatch: segment is {found}, handle wants {expected}")]
    FlavorMismatch {
        /// Flavor in the segment.
        found: &'static str,
        /// Flavor the handle needs.
        expected: &'static str,
    },
    /// The segment carries another message type (size, alignment, name or kind).
    #[error("message type mismatch: segment holds {found}, handle wants {expected}")]
    TypeMismatch {
        /// What the segment holds.
        found: String,
        /// What the handle wants.
        expected: String,
    },
    /// The broadcast channel was created with another policy than the one asked for.
    #[error(
        "policy mismatch: channel is {found}, handle asked for {expected}; open without a policy to accept either"
    )]
    PolicyMismatch {
        /// Policy of the channel.
        found: &'static str,
        /// Policy asked for.
        expected: &'static str,
    },
    /// The segment's capacity differs from the one asked for.
    #[error("capacity mismatch: segment has {found} slots, asked for {expected}")]
    CapacityMismatch {
        /// Capacity of the segment.
        found: u64,
        /// Capacity asked for.
        expected: u64,
    },
    /// The object is shorter (or longer) than its header says, or than a header.
    #[error("segment is {actual} bytes but must be {expected}")]
    Truncated {
        /// Size of the object.
        actual: u64,
        /// Size it must have.
        expected: u64,
    },
    /// The header's fields contradict each other.
    #[error("corrupt segment header: {0}")]
    Corrupt(&'static str),
    /// The creator died before finishing the header; remove the segment and retry.
    #[error("the creator (pid {pid}) died while initialising the segment")]
    CreatorDied {
        /// Pid of the creator.
        pid: u32,
    },
    /// The header was not finished within the init timeout.
    #[error("segment still initialising after the init timeout")]
    InitTimeout,
    /// Capacity is zero, not a power of two, or too large.
    #[error("capacity {0} must be a power of two between 1 and 2^30")]
    InvalidCapacity(u64),
    /// The message type or size cannot be stored.
    #[error("invalid message type: {0}")]
    InvalidMessage(&'static str),
    /// The shared-memory filesystem has no room for the segment (`ENOSPC` when its
    /// pages are reserved at creation). In a container, `/dev/shm` is often 64 MiB:
    /// raise it (`docker run --shm-size`) or ask for a smaller capacity.
    #[error(
        "no room in /dev/shm for channel {name:?} ({needed} bytes); a container's /dev/shm is often 64 MiB: raise it (docker --shm-size) or lower the capacity"
    )]
    NoSpace {
        /// The channel's name.
        name: String,
        /// Size of the segment in bytes.
        needed: u64,
    },
    /// The segment would be larger than shmchan allows (64 GiB).
    #[error("the requested segment is too large")]
    TooLarge,
    /// The role is taken: an SPSC channel has one sender and one receiver at a time,
    /// and the current holder is alive.
    #[error("channel already has a live {role} (pid {pid})")]
    RoleTaken {
        /// "sender" or "receiver".
        role: &'static str,
        /// Process that holds it.
        pid: u32,
    },
    /// Every entry of the peer table is held by a live process.
    #[error("peer table is full ({0} entries)")]
    TooManyPeers(u32),
    /// This process (or the system) has no file descriptor left. Every channel a
    /// process is attached to keeps one descriptor open (all handles of one channel
    /// share it), because the liveness lock lives on it; the soft `RLIMIT_NOFILE` was
    /// already raised to the hard limit.
    #[error(
        "no file descriptor left: each attached channel keeps one open; raise the hard limit (ulimit -Hn, LimitNOFILE=) or drop unused channels"
    )]
    TooManyOpenFiles,
    /// An option is out of range.
    #[error("invalid option: {0}")]
    InvalidOption(&'static str),
    /// Any other operating-system error.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
}

impl OpenError {
    /// An I/O error of attaching: a descriptor shortage gets its own variant.
    pub(crate) fn from_io(e: io::Error) -> OpenError {
        match e.raw_os_error() {
            Some(code) if code == libc::EMFILE || code == libc::ENFILE => {
                OpenError::TooManyOpenFiles
            }
            _ => OpenError::Io(e),
        }
    }

    pub(crate) fn from_errno(e: rustix::io::Errno, name: &str) -> OpenError {
        match e {
            rustix::io::Errno::NOENT => OpenError::NotFound(name.to_owned()),
            rustix::io::Errno::EXIST => OpenError::AlreadyExists(name.to_owned()),
            rustix::io::Errno::ACCESS | rustix::io::Errno::PERM => {
                OpenError::PermissionDenied(name.to_owned())
            }
            rustix::io::Errno::NAMETOOLONG => OpenError::InvalidName {
                name: name.to_owned(),
                reason: "too long for this system",
            },
            rustix::io::Errno::MFILE | rustix::io::Errno::NFILE => OpenError::TooManyOpenFiles,
            other => OpenError::Io(other.into()),
        }
    }
}

macro_rules! value_error {
    (
        $(#[$m:meta])* $name:ident { $( $(#[$vm:meta])* $var:ident => $disp:literal, $is:ident; )* }
    ) => {
        $(#[$m])*
        #[derive(PartialEq, Eq, Clone, Copy)]
        pub enum $name<T> {
            $( $(#[$vm])* $var(T), )*
        }

        impl<T> $name<T> {
            /// Returns the message that was not sent.
            pub fn into_inner(self) -> T {
                match self { $( $name::$var(v) => v, )* }
            }
            $(
                #[doc = concat!("Whether this is `", stringify!($var), "`.")]
                pub fn $is(&self) -> bool {
                    matches!(self, $name::$var(_))
                }
            )*
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $( $name::$var(_) => f.write_str(concat!(stringify!($var), "(..)")), )* }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self { $( $name::$var(_) => f.write_str($disp), )* }
            }
        }

        impl<T> std::error::Error for $name<T> {}
    };
}

value_error! {
    /// Error of [`send`](crate::Sender::send): the receiver is gone; the message is handed back.
    SendError {
        /// No receiver is attached (one was, and it left or died).
        Disconnected => "sending on a disconnected channel", is_disconnected;
    }
}

value_error! {
    /// Error of [`try_send`](crate::Sender::try_send).
    TrySendError {
        /// The ring is full.
        Full => "sending on a full channel", is_full;
        /// No receiver is attached (one was, and it left or died).
        Disconnected => "sending on a disconnected channel", is_disconnected;
    }
}

value_error! {
    /// Error of [`send_timeout`](crate::Sender::send_timeout).
    SendTimeoutError {
        /// The ring stayed full until the deadline.
        Timeout => "timed out waiting on send operation", is_timeout;
        /// No receiver is attached (one was, and it left or died).
        Disconnected => "sending on a disconnected channel", is_disconnected;
    }
}

impl<T> From<SendError<T>> for TrySendError<T> {
    fn from(e: SendError<T>) -> Self {
        TrySendError::Disconnected(e.into_inner())
    }
}

impl<T> From<SendError<T>> for SendTimeoutError<T> {
    fn from(e: SendError<T>) -> Self {
        SendTimeoutError::Disconnected(e.into_inner())
    }
}

/// Error of [`recv`](crate::Receiver::recv): the ring is empty and no sender is left.
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
#[error("receiving on an empty and disconnected channel")]
pub struct RecvError;

/// Error of [`try_recv`](crate::Receiver::try_recv).
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub enum TryRecvError {
    /// The ring is empty.
    #[error("receiving on an empty channel")]
    Empty,
    /// The ring is empty and no sender is attached (one was, and it left or died).
    #[error("receiving on an empty and disconnected channel")]
    Disconnected,
}

/// Error of [`recv_timeout`](crate::Receiver::recv_timeout).
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
pub enum RecvTimeoutError {
    /// Nothing arrived before the deadline.
    #[error("timed out waiting on receive operation")]
    Timeout,
    /// The ring is empty and no sender is attached (one was, and it left or died).
    #[error("receiving on an empty and disconnected channel")]
    Disconnected,
}

impl TryRecvError {
    /// Whether this is `Empty`.
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }
    /// Whether this is `Disconnected`.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TryRecvError::Disconnected)
    }
}

impl RecvTimeoutError {
    /// Whether this is `Timeout`.
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }
    /// Whether this is `Disconnected`.
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvTimeoutError::Disconnected)
    }
}

impl From<RecvError> for TryRecvError {
    fn from(_: RecvError) -> Self {
        TryRecvError::Disconnected
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(_: RecvError) -> Self {
        RecvTimeoutError::Disconnected
    }
}

/// Error of the byte-message calls when a message is longer than the slot allows.
#[derive(Debug, PartialEq, Eq, Clone, Copy, thiserror::Error)]
#[error("message of {len} bytes exceeds the channel's limit of {max} bytes")]
pub struct TooLong {
    /// Length of the message.
    pub len: usize,
    /// Largest message the channel carries.
    pub max: usize,
}

impl TooLong {
    /// `Err` if a message of `len` bytes does not fit a channel of `max`.
    pub(crate) fn check(len: usize, max: usize) -> Result<(), TooLong> {
        if len > max {
            return Err(TooLong { len, max });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_errors_hand_the_message_back_and_say_what_happened() {
        let e = SendError::Disconnected(5u8);
        assert!(e.is_disconnected());
        assert_eq!(format!("{e:?}"), "Disconnected(..)");
        assert_eq!(e.to_string(), "sending on a disconnected channel");
        let t: TrySendError<u8> = e.into();
        assert!(t.is_disconnected() && !t.is_full());
        assert_eq!(t.into_inner(), 5);
        let t: SendTimeoutError<u8> = SendError::Disconnected(6).into();
        assert!(t.is_disconnected() && !t.is_timeout());
        assert_eq!(t.into_inner(), 6);

        let full = TrySendError::Full(vec![1, 2]);
        assert!(full.is_full() && !full.is_disconnected());
        assert_eq!(format!("{full:?}"), "Full(..)");
        assert_eq!(full.to_string(), "sending on a full channel");
        assert_eq!(full.into_inner(), vec![1, 2]);

        let late = SendTimeoutError::Timeout('x');
        assert!(late.is_timeout() && !late.is_disconnected());
        assert_eq!(format!("{late:?}"), "Timeout(..)");
        assert_eq!(late.to_string(), "timed out waiting on send operation");
        assert_eq!(
            SendTimeoutError::Disconnected(()).to_string(),
            "sending on a disconnected channel"
        );
        // Usable as `dyn Error`, whatever the message type.
        let boxed: Box<dyn std::error::Error> = Box::new(SendTimeoutError::Timeout(()));
        assert!(boxed.source().is_none());
    }

    #[test]
    fn receive_errors_say_what_happened() {
        assert_eq!(
            RecvError.to_string(),
            "receiving on an empty and disconnected channel"
        );
        let e: TryRecvError = RecvError.into();
        assert!(e.is_disconnected() && !e.is_empty());
        assert!(TryRecvError::Empty.is_empty() && !TryRecvError::Empty.is_disconnected());
        assert_eq!(
            TryRecvError::Empty.to_string(),
            "receiving on an empty channel"
        );
        let e: RecvTimeoutError = RecvError.into();
        assert!(e.is_disconnected() && !e.is_timeout());
        assert!(RecvTimeoutError::Timeout.is_timeout());
        assert!(!RecvTimeoutError::Timeout.is_disconnected());
        assert_eq!(
            RecvTimeoutError::Timeout.to_string(),
            "timed out waiting on receive operation"
        );
        assert_eq!(
            TooLong { len: 9, max: 8 }.to_string(),
            "message of 9 bytes exceeds the channel's limit of 8 bytes"
        );
    }

    /// Each errno an attach can meet has its own variant, with the channel's name.
    #[test]
    fn os_errors_become_specific_variants() {
        use rustix::io::Errno;
        let of = |e| OpenError::from_errno(e, "ch");
        assert!(matches!(of(Errno::NOENT), OpenError::NotFound(n) if n == "ch"));
        assert!(matches!(of(Errno::EXIST), OpenError::AlreadyExists(n) if n == "ch"));
        assert!(matches!(of(Errno::ACCESS), OpenError::PermissionDenied(n) if n == "ch"));
        assert!(matches!(of(Errno::PERM), OpenError::PermissionDenied(n) if n == "ch"));
        assert!(matches!(
            of(Errno::NAMETOOLONG),
            OpenError::InvalidName { name, reason: "too long for this system" } if name == "ch"
        ));
        assert!(matches!(of(Errno::MFILE), OpenError::TooManyOpenFiles));
        assert!(matches!(of(Errno::NFILE), OpenError::TooManyOpenFiles));
        match of(Errno::IO) {
            OpenError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::EIO)),
            other => panic!("{other:?}"),
        }
        let io = |code| OpenError::from_io(io::Error::from_raw_os_error(code));
        assert!(matches!(io(libc::EMFILE), OpenError::TooManyOpenFiles));
        assert!(matches!(io(libc::ENFILE), OpenError::TooManyOpenFiles));
        match io(libc::EBADF) {
            OpenError::Io(e) => assert_eq!(e.raw_os_error(), Some(libc::EBADF)),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            OpenError::CreatorDied { pid: 42 }.to_string(),
            "the creator (pid 42) died while initialising the segment"
        );
    }
}
