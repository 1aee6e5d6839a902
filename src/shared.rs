//! A validated segment: create or open the object, write or check its header.
//!
//! This is where the creation modes, the init handshake (creating → ready) and every
//! attach-time check live. What comes out, [`Shared`], is a mapping whose geometry
//! was computed locally and found equal to the header's, and whose length is the
//! object's real size, so the rings may index it without further checks.

use crate::error::OpenError;
use crate::layout::{
    self, ConfigSnapshot, FLAVOR_BROADCAST, FLAVOR_MPMC, FLAVOR_SPSC, Geometry, HEADER_SIZE,
    Header, INIT_CREATING, INIT_READY, KIND_BYTES, MAX_PEERS, MAX_TOTAL,
};
use crate::options::{CreateMode, Options};
use crate::sync::Ordering;
use crate::sys::membarrier::{ASYMMETRIC, FENCE};
use crate::sys::process::INIT_LOCK;
use crate::sys::segment::{self, Segment};
use std::time::{Duration, Instant, SystemTime};

/// What a handle needs the segment to hold.
#[derive(Debug, Clone)]
pub(crate) struct Wanted {
    pub flavor: u32,
    pub kind: u32,
    pub msg_size: u64,
    pub msg_align: u64,
    pub fingerprint: u64,
    /// For error messages: the type's name.
    pub type_name: &'static str,
}

impl Wanted {
    /// Byte messages of up to `max_len` bytes in a channel of `flavor`.
    pub fn bytes(flavor: u32, max_len: usize) -> Wanted {
        Wanted {
            flavor,
            kind: layout::KIND_BYTES,
            msg_size: max_len as u64,
            msg_align: 1,
            fingerprint: layout::fnv1a(b"shmchan::bytes"),
            type_name: "bytes",
        }
    }

    /// Messages of type `T` in a channel of `flavor`.
    pub fn typed<T: bytemuck::Pod>(flavor: u32) -> Wanted {
        let name = std::any::type_name::<T>();
        Wanted {
            flavor,
            kind: layout::KIND_TYPED,
            msg_size: size_of::<T>() as u64,
            msg_align: align_of::<T>() as u64,
            fingerprint: layout::fnv1a(name.as_bytes()),
            type_name: name,
        }
    }
}

/// The atomic parts of a mapped header (see [`Shared::header`]).
#[derive(Clone, Copy)]
pub(crate) struct HeaderView<'a> {
    /// Positions and wait words.
    pub ring: &'a layout::RingCtl,
    /// Attach counters and hints.
    pub attach: &'a layout::AttachLine,
    /// The whole peer table (use [`Shared::peers`] for the part in use).
    pub peers: &'a [layout::PeerEntry; MAX_PEERS],
    /// Source of attach generations.
    pub peer_generation: &'a crate::sync::AtomicU32,
}

/// A mapped segment with a valid header.
#[derive(Debug)]
pub(crate) struct Shared {
    pub seg: Segment,
    pub geo: Geometry,
    /// Entries of the peer table in use (validated copy of the header's).
    pub max_peers: usize,
    /// Broadcast: the policy (validated copy; `Lossless` for other flavors).
    policy: crate::options::Policy,
    /// Broadcast, lossless: the lag limit (validated copy; `None`: never).
    lag_limit: Option<Duration>,
}

fn flavor_name(f: u32) -> &'static str {
    match f {
        FLAVOR_SPSC => "spsc",
        FLAVOR_MPMC => "mpmc",
        FLAVOR_BROADCAST => "broadcast",
        _ => "unknown",
    }
}

impl Shared {
    /// Creates or opens `name` as `opts.mode` says, and checks it holds what `want` says.
    pub fn attach(name: &str, opts: &Options, want: &Wanted) -> Result<Shared, OpenError> {
        let path = segment::shm_path(name)?;
        match opts.mode {
            CreateMode::Open => Self::open(&path, name, opts, want),
            CreateMode::CreateExclusive => Self::create(&path, name, opts, want),
            CreateMode::PurgeAndCreate => {
                match rustix::shm::unlink(path.as_str()) {
                    Ok(()) | Err(rustix::io::Errno::NOENT) => {}
                    Err(e) => return Err(OpenError::from_errno(e, name)),
                }
                Self::create(&path, name, opts, want)
            }
            // Without a capacity nothing can be created: open what is there.
            CreateMode::OpenOrCreate if opts.capacity.is_none() => {
                Self::open(&path, name, opts, want)
            }
            CreateMode::OpenOrCreate => {
                // Create first: of racing processes exactly one wins O_EXCL, the others
                // open and wait for its header. Retry if the name vanished in between.
                for _ in 0..100 {
                    match Self::create(&path, name, opts, want) {
                        Err(OpenError::AlreadyExists(_)) => {}
                        other => return other,
                    }
                    #[cfg(test)]
                    tests::after_create_refused(&path);
                    match Self::open(&path, name, opts, want) {
                        Err(OpenError::NotFound(_)) => continue,
                        other => return other,
                    }
                }
                Err(OpenError::NotFound(name.to_owned()))
            }
        }
    }

    fn create(path: &str, name: &str, opts: &Options, want: &Wanted) -> Result<Shared, OpenError> {
        let capacity = opts.capacity.ok_or(OpenError::InvalidOption(
            "a capacity is needed to create a channel",
        ))?;
        let (max_peers, subscribers, policy) = if want.flavor == FLAVOR_BROADCAST {
            // The publisher's entry and one per subscriber.
            let subs = opts.subscribers.unwrap_or(16);
            if subs == 0 || subs > layout::MAX_SUBSCRIBERS {
                return Err(OpenError::InvalidOption(
                    "subscribers must be between 1 and 191",
                ));
            }
            (subs + 1, subs, opts.policy.unwrap_or_default().code())
        } else {
            let default_peers = if want.flavor == FLAVOR_MPMC { 64 } else { 2 };
            (opts.max_peers.unwrap_or(default_peers), 0, 0)
        };
        if max_peers < 2 || max_peers as usize > MAX_PEERS {
            return Err(OpenError::InvalidOption(
                "max_peers must be between 2 and 192",
            ));
        }
        let lag_limit_ms = match opts.lag_limit {
            Some(d) if want.flavor == FLAVOR_BROADCAST => {
                u32::try_from(d.as_millis().max(1)).unwrap_or(u32::MAX)
            }
            _ => 0,
        };
        let geo = Geometry::with_subscribers(
            want.flavor,
            want.kind,
            capacity,
            want.msg_size,
            want.msg_align,
            subscribers,
        )?;
        let seg = Segment::create(path, name, geo.total_len, opts.permissions)?;
        let hdr = seg.as_ptr() as *mut Header;
        let created_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        // SAFETY: we just created and sized the object (all zeros), it is mapped
        // read-write with at least HEADER_SIZE bytes, page aligned; nobody trusts the
        // plain fields before init_state is READY, which we store last (Release).
        unsafe {
            let c = &raw mut (*hdr).config;
            // The magic and the pid first, so that `shmchan ls/rm` recognise an
            // unfinished header and an opener can tell whether its creator lives.
            (&raw mut (*c).magic).write(layout::MAGIC);
            (*c).creator_pid
                .store(crate::sys::process::identity().0, Ordering::Relaxed);
            (&raw mut (*c).layout_version).write(layout::LAYOUT_VERSION);
            (&raw mut (*c).flavor).write(geo.flavor);
            (&raw mut (*c).capacity).write(geo.capacity);
            (&raw mut (*c).slot_size).write(geo.slot_size as u64);
            (&raw mut (*c).msg_size).write(geo.msg_size as u32);
            (&raw mut (*c).msg_align).write(geo.msg_align as u32);
            (&raw mut (*c).type_fingerprint).write(want.fingerprint);
            (&raw mut (*c).total_len).write(geo.total_len as u64);
            (&raw mut (*c).creator_uid).write(rustix::process::geteuid().as_raw());
            (&raw mut (*c).max_peers).write(max_peers);
            (&raw mut (*c).created_at_ns).write(created_at);
            (&raw mut (*c).payload_offset).write(geo.payload_offset as u32);
            (&raw mut (*c).msg_kind).write(geo.kind);
            (&raw mut (*c).subscribers).write(subscribers);
            (&raw mut (*c).policy).write(policy);
            (&raw mut (*c).lag_limit_ms).write(lag_limit_ms);
            // Wakers skip the CPU fence if every attached process can use membarrier;
            // this one can, so start asymmetric (an opener that cannot downgrades).
            if crate::sys::membarrier::register() {
                (*hdr)
                    .ring
                    .not_empty
                    .w
                    .mode
                    .store(ASYMMETRIC, Ordering::Relaxed);
                (*hdr)
                    .ring
                    .not_full
                    .w
                    .mode
                    .store(ASYMMETRIC, Ordering::Relaxed);
            }
            // Release: an opener that Acquire-loads READY sees every field above.
            (*c).init_state.store(INIT_READY, Ordering::Release);
        }
        seg.file.unhold(INIT_LOCK);
        let mut seg = seg;
        if opts.keep {
            seg.keep();
        }
        Ok(Shared {
            seg,
            geo,
            max_peers: max_peers as usize,
            policy: crate::options::Policy::from_code(policy).unwrap_or_default(),
            lag_limit: (lag_limit_ms > 0).then(|| Duration::from_millis(u64::from(lag_limit_ms))),
        })
    }

    fn open(path: &str, name: &str, opts: &Options, want: &Wanted) -> Result<Shared, OpenError> {
        let (fd, file) = Segment::open_file(path, name)?;
        let deadline = crate::spsc::endpoint::deadline_in(opts.init_timeout);
        let past = |now: Instant| deadline.is_some_and(|d| now >= d);
        let ours = rustix::process::geteuid().as_raw();
        // Wait for the creator to size the object (it may be between O_EXCL and
        // ftruncate); never map more than fstat says exists.
        let size = loop {
            let info = segment::stat(&fd)?;
            if info.uid != ours && !opts.allow_foreign_owner {
                return Err(OpenError::ForeignOwner {
                    owner: info.uid,
                    ours,
                });
            }
            if info.size >= HEADER_SIZE as u64 {
                break info.size;
            }
            if past(Instant::now()) {
                return Err(if info.size == 0 {
                    OpenError::InitTimeout
                } else {
                    OpenError::Truncated {
                        actual: info.size,
                        expected: HEADER_SIZE as u64,
                    }
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if size > MAX_TOTAL {
            return Err(OpenError::Corrupt("object larger than any shmchan segment"));
        }
        // Lazily: a garbage object may be large and sparse (see `Segment::populate`).
        let mut seg = Segment::map_file(&fd, file, size as usize)?;
        let hdr = seg.as_ptr() as *const Header;
        // SAFETY: the mapping is at least HEADER_SIZE bytes and page aligned; only the
        // atomic field is referenced (the creator may still be writing the others).
        let init_state = unsafe { &(*hdr).config.init_state };
        loop {
            // Acquire pairs with the creator's Release store of READY.
            match init_state.load(Ordering::Acquire) {
                INIT_READY => break,
                INIT_CREATING => {}
                _ => {
                    // SAFETY: as above.
                    let snap = unsafe { ConfigSnapshot::read(hdr) };
                    return Err(if snap.magic != layout::MAGIC {
                        OpenError::BadMagic
                    } else {
                        OpenError::Corrupt("unknown init state")
                    });
                }
            }
            // SAFETY: as above.
            let snap = unsafe { ConfigSnapshot::read(hdr) };
            if snap.magic != [0; 8] && snap.magic != layout::MAGIC {
                return Err(OpenError::BadMagic);
            }
            // The creator holds its init lock from before it sized the object until
            // after it stored READY: free while the header is unfinished means dead
            // (looked up in the kernel, so it holds across PID namespaces).
            if !seg.file.is_held(INIT_LOCK) && init_state.load(Ordering::Acquire) == INIT_CREATING {
                return Err(OpenError::CreatorDied {
                    pid: snap.creator_pid,
                });
            }
            if past(Instant::now()) {
                return Err(OpenError::InitTimeout);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: as above.
        let snap = unsafe { ConfigSnapshot::read(hdr) };
        let geo = snap.geometry()?;
        if geo.total_len as u64 != size {
            return Err(OpenError::Truncated {
                actual: size,
                expected: geo.total_len as u64,
            });
        }
        check_wanted(&snap, &geo, opts, want)?;
        if !crate::sys::membarrier::register() {
            // We cannot do our waiters' half of the asymmetric protocol: everyone fences.
            // SAFETY: the header is mapped (checked above) and its wait words are atomics;
            // only the ring's line is referenced.
            let ring = unsafe { &(*hdr).ring };
            ring.not_empty.w.mode.store(FENCE, Ordering::Relaxed);
            ring.not_full.w.mode.store(FENCE, Ordering::Relaxed);
        }
        // A valid channel of exactly the size its geometry says: now fill the page
        // tables (`hdr` points into the lazy mapping and is not used again).
        seg.populate(&fd)?;
        // The snapshot was validated (`geometry` refuses an unknown broadcast policy):
        // later reads of the live header could see another process's scribbles.
        let broadcast = geo.flavor == FLAVOR_BROADCAST;
        Ok(Shared {
            seg,
            geo,
            max_peers: snap.max_peers as usize,
            policy: crate::options::Policy::from_code(snap.policy)
                .filter(|_| broadcast)
                .unwrap_or_default(),
            lag_limit: (broadcast && snap.lag_limit_ms > 0)
                .then(|| Duration::from_millis(u64::from(snap.lag_limit_ms))),
        })
    }

    /// The parts of the header that change after creation: all atomics.
    ///
    /// No reference to the whole header (or to its config line) is ever made: another
    /// process may write any byte of it, and a shared reference would promise the
    /// compiler that its plain fields do not change. The config line is read only
    /// through [`ConfigSnapshot::read`] (volatile reads through raw pointers).
    #[inline]
    pub fn header(&self) -> HeaderView<'_> {
        let hdr = self.seg.as_ptr() as *const Header;
        // SAFETY: the mapping is at least HEADER_SIZE bytes, page aligned, and lives as
        // long as self. Each field is projected through the raw pointer (a reference
        // to that field only, never to the header), and each is a struct of atomics,
        // which other processes may write concurrently.
        unsafe {
            HeaderView {
                ring: &(*hdr).ring,
                attach: &(*hdr).attach,
                peers: &(*hdr).peers,
                peer_generation: &(*hdr).config.peer_generation,
            }
        }
    }

    /// The live part of the peer table.
    #[inline]
    pub fn peers(&self) -> &[crate::layout::PeerEntry] {
        // A copy validated at attach (1..=MAX_PEERS): the header's field may change.
        &self.header().peers[..self.max_peers.min(MAX_PEERS)]
    }

    /// Takes a holder that is gone (its entry's state as it left it) off the header's
    /// counters: its threads registered as asleep, and for MPMC its role's hint.
    /// Runs once per vacated entry (whoever vacated it).
    pub fn forget_holder(&self, state: u64) {
        let ring = self.header().ring;
        let [on_empty, on_full] = crate::peers::sleeps(state);
        let sub = |c: &crate::sync::AtomicU32, n: u32| {
            if n > 0 {
                // Relaxed: a counter of announcements; a waker's fence orders its load.
                let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                    Some(v.saturating_sub(n))
                });
            }
        };
        sub(&ring.not_empty.w.sleepers, on_empty);
        sub(&ring.not_full.w.sleepers, on_full);
        if self.geo.flavor == FLAVOR_MPMC {
            if let crate::peers::EntryState::Held(h) = crate::peers::decode(state) {
                let a = self.header().attach;
                let hint = if h.role == crate::peers::Role::Sender as u32 {
                    &a.senders
                } else {
                    &a.receivers
                };
                sub(hint, 1);
            }
        }
    }

    /// Start of the slot array.
    #[inline]
    pub fn slots(&self) -> *mut u8 {
        // SAFETY: total_len (== mapping length) >= slots_offset + capacity * slot_size.
        unsafe { self.seg.as_ptr().add(self.geo.slots_offset) }
    }

    /// Broadcast: the policy the channel was created with (read at attach, when the
    /// header was validated; `Lossless` for other flavors).
    pub fn policy(&self) -> crate::options::Policy {
        self.policy
    }

    /// Broadcast: the lag limit the channel was created with (`None`: never), as
    /// validated at attach.
    pub fn lag_limit(&self) -> Option<Duration> {
        self.lag_limit
    }

    /// Broadcast: the subscribers' cursor lines (empty for other flavors).
    pub fn cursors(&self) -> &[layout::CursorLine] {
        let n = self.geo.subscribers as usize;
        // SAFETY: the geometry (validated against the object's size) puts `n` cursor
        // lines of 128 bytes at HEADER_SIZE, before the slots; they are atomics that
        // other processes write, and live as long as the mapping (self).
        unsafe {
            std::slice::from_raw_parts(
                self.seg.as_ptr().add(HEADER_SIZE) as *const layout::CursorLine,
                n,
            )
        }
    }
}

fn describe(kind: u32, size: u64, align: u64, fp: u64, name: &str) -> String {
    if kind == KIND_BYTES {
        format!("byte messages of up to {size} bytes")
    } else {
        format!("{name} (size {size}, align {align}, fingerprint {fp:#018x})")
    }
}

fn check_wanted(
    snap: &ConfigSnapshot,
    geo: &Geometry,
    opts: &Options,
    want: &Wanted,
) -> Result<(), OpenError> {
    if geo.flavor != want.flavor {
        return Err(OpenError::FlavorMismatch {
            found: flavor_name(geo.flavor),
            expected: flavor_name(want.flavor),
        });
    }
    let same_type = geo.kind == want.kind
        && snap.type_fingerprint == want.fingerprint
        && geo.msg_align as u64 == want.msg_align
        && if want.kind == KIND_BYTES {
            // A byte receiver accepts any limit; a sender needs one that fits its use,
            // which it checks per message.
            true
        } else {
            geo.msg_size as u64 == want.msg_size
        };
    if !same_type {
        return Err(OpenError::TypeMismatch {
            found: describe(
                geo.kind,
                geo.msg_size as u64,
                geo.msg_align as u64,
                snap.type_fingerprint,
                "another type",
            ),
            expected: describe(
                want.kind,
                want.msg_size,
                want.msg_align,
                want.fingerprint,
                want.type_name,
            ),
        });
    }
    if geo.flavor == FLAVOR_BROADCAST {
        if let Some(p) = opts.policy {
            let found = crate::options::Policy::from_code(snap.policy)
                .ok_or(OpenError::Corrupt("unknown broadcast policy"))?;
            if found != p {
                return Err(OpenError::PolicyMismatch {
                    found: found.name(),
                    expected: p.name(),
                });
            }
        }
    }
    if let Some(c) = opts.capacity {
        if c != geo.capacity {
            return Err(OpenError::CapacityMismatch {
                found: geo.capacity,
                expected: c,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::{Point, arm};
    use crate::layout::KIND_TYPED;
    use rustix::io::Errno;

    fn want() -> Wanted {
        Wanted {
            flavor: FLAVOR_SPSC,
            kind: KIND_TYPED,
            msg_size: 8,
            msg_align: 8,
            fingerprint: crate::layout::fnv1a(b"u64"),
            type_name: "u64",
        }
    }

    fn modes(s: &Shared) -> [u32; 2] {
        let r = &s.header().ring;
        [
            r.not_empty.w.mode.load(Ordering::Relaxed),
            r.not_full.w.mode.load(Ordering::Relaxed),
        ]
    }

    /// A process that cannot use membarrier (old kernel, seccomp) opens a channel made
    /// by one that could: both wait words go back to fences, since wakers that skip
    /// theirs would rely on a barrier this waiter cannot make. A creator that cannot
    /// register starts in fence mode. Either way a sleeping receiver is woken.
    #[test]
    fn without_membarrier_everyone_fences() {
        let name = format!("shmchan-test-nomb-{}", std::process::id());
        let create = Options::new().capacity(4).mode(CreateMode::CreateExclusive);
        let made = Shared::attach(&name, &create, &want()).expect("create");
        let asym = crate::sys::membarrier::register();
        let start = if asym { ASYMMETRIC } else { FENCE };
        assert_eq!(modes(&made), [start; 2]);
        let armed = arm(Point::MembarrierRegister, &[Errno::NOSYS]);
        let opened = Shared::attach(&name, &Options::new(), &want()).expect("open");
        assert_eq!(armed.used(), 1);
        assert_eq!(modes(&made), [FENCE; 2]);
        drop((opened, made, armed));

        let armed = arm(Point::MembarrierRegister, &[Errno::NOSYS]);
        let made = Shared::attach(&name, &create, &want()).expect("create again");
        assert_eq!(armed.used(), 1);
        assert_eq!(modes(&made), [FENCE; 2]);
        drop((made, armed));

        // End to end: a receiver opened without membarrier sleeps and is woken.
        let tx = crate::Sender::<u64>::with_options(&name, &create).expect("sender");
        let armed = arm(Point::MembarrierRegister, &[Errno::NOSYS]);
        let rx = crate::Receiver::<u64>::with_options(
            &name,
            &Options::new().wait_strategy(crate::WaitStrategy::Block),
        )
        .expect("receiver");
        assert_eq!(armed.used(), 1);
        std::thread::scope(|s| {
            let r = s.spawn(move || rx.recv_timeout(Duration::from_secs(60)));
            let t = Instant::now();
            while crate::inspect(&name).expect("inspect").sleeping_receivers == 0 {
                assert!(t.elapsed() < Duration::from_secs(60), "never slept");
                std::thread::sleep(Duration::from_millis(1));
            }
            tx.send(7).expect("send");
            assert_eq!(r.join().expect("receiver thread"), Ok(7));
        });
    }
    thread_local! {
        /// How many more times [`after_create_refused`] removes the name.
        static VANISH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    }

    /// Test seam: open-or-create calls it between a create refused with
    /// `AlreadyExists` and its open. Armed on this thread, it removes the name there,
    /// as the channel's owner dropping it at that instant would.
    pub(super) fn after_create_refused(path: &str) {
        let n = VANISH.get();
        if n > 0 {
            VANISH.set(n - 1);
            let _ = rustix::shm::unlink(path);
        }
    }

    /// The open-or-create race: the name exists when we try to create, and is gone
    /// when we open (its owner dropped it in between). We try again, create it
    /// ourselves, and own the new channel; the old one's handles stay on the old.
    #[test]
    fn open_or_create_retries_when_the_name_vanishes_in_between() {
        use crate::{Receiver, Sender, TryRecvError};
        let name = format!("shmchan-test-ooc-vanish-{}", std::process::id());
        let old = Sender::<u64>::create(&name, 4).expect("create");
        VANISH.set(1);
        let opts = Options::new().capacity(4).mode(CreateMode::OpenOrCreate);
        let rx = Receiver::<u64>::with_options(&name, &opts).expect("open or create");
        assert_eq!(VANISH.get(), 0, "the seam was not reached");
        assert!(
            rx.owns_name(),
            "the second try should have created the channel"
        );
        old.try_send(1).expect("the old channel still works");
        assert_eq!(rx.try_recv(), Err(TryRecvError::Empty));
        let tx = Sender::<u64>::open(&name).expect("open the new channel");
        tx.send(2).expect("send");
        assert_eq!(rx.try_recv(), Ok(2));
        drop((tx, rx));
        // The old creator's drop does not remove the new channel's name; it is gone.
        drop(old);
        assert!(matches!(crate::inspect(&name), Err(OpenError::NotFound(_))));
    }

    /// Regression (fuzz `ops`): open-or-create without a capacity opens an existing
    /// channel instead of failing for want of a capacity.
    #[test]
    fn open_or_create_without_capacity_opens() {
        use crate::{Receiver, Sender};
        let name = format!("shmchan-test-ooc-{}", std::process::id());
        let opts = Options::new().mode(CreateMode::OpenOrCreate);
        assert!(matches!(
            Receiver::<u64>::with_options(&name, &opts),
            Err(OpenError::NotFound(_))
        ));
        let tx = Sender::<u64>::create(&name, 4).unwrap();
        let rx = Receiver::<u64>::with_options(&name, &opts).unwrap();
        tx.send(3).unwrap();
        assert_eq!(rx.recv(), Ok(3));
    }
}
