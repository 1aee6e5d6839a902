//! Typed, checked attach: every way an open or create can fail has its own
//! `OpenError` variant, nothing stays mapped after a failed open, and a damaged object
//! (garbage, truncated, half-initialised) gives an error, never a `SIGBUS`.
//!
//! Header offsets used here are those of `src/layout.rs`: magic 0, layout_version 8,
//! flavor 12, capacity 16, init_state 56, creator_pid 60, max_peers 68, msg_kind 84.

mod common;

use common::{ChildEnv, MUST_FINISH, PROMPTLY, Rng, ShmGuard};
use shmchan::{ByteReceiver, ByteSender, CreateMode, OpenError, Options, Receiver, Sender};
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

const OFF_VERSION: u64 = 8;
const OFF_FLAVOR: u64 = 12;
const OFF_CAPACITY: u64 = 16;
const OFF_INIT_STATE: u64 = 56;
const OFF_CREATOR_PID: u64 = 60;
const OFF_MAX_PEERS: u64 = 68;
const OFF_MSG_KIND: u64 = 84;

/// Roles the children of this file play.
fn child_roles(c: &ChildEnv) {
    match c.role.as_str() {
        // Attach as the sender, say hello, stay attached until killed.
        "hold_sender" => {
            let tx = Sender::<u64>::open(&c.name).expect("open sender");
            tx.send_timeout(1, MUST_FINISH).expect("hello");
            let _keep = tx;
            common::sleep_until_killed();
        }
        // At the wall-clock instant in `arg` (ns since the epoch), try to attach as the
        // sender; the winner holds the role for a second, so every loser sees it taken.
        "race_sender" => {
            let start = c.arg_u64();
            let now = epoch_ns();
            if start > now {
                std::thread::sleep(Duration::from_nanos(start - now));
            }
            // A racer that starts so late that the winner may have left already proves
            // nothing: it says so and does not try (the parent runs the round again).
            if epoch_ns() > start + 700_000_000 {
                println!("RACE: late");
                return;
            }
            match Sender::<u64>::open(&c.name) {
                Ok(tx) => {
                    println!("RACE: won");
                    std::thread::sleep(Duration::from_secs(1));
                    drop(tx);
                }
                Err(OpenError::RoleTaken { role: "sender", .. }) => println!("RACE: lost"),
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn epoch_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// Creates a `u64` channel of `capacity` slots whose name outlives the handle, and
/// returns the object's size.
fn make_kept_channel(name: &str, capacity: usize) -> u64 {
    let opts = Options::new()
        .capacity(capacity)
        .mode(CreateMode::CreateExclusive)
        .keep(true);
    let tx = Sender::<u64>::with_options(name, &opts).expect("create");
    drop(tx);
    assert!(common::shm_exists(name), "keep(true) must keep the name");
    std::fs::metadata(common::shm_path(name))
        .expect("stat")
        .len()
}

/// Writes `bytes` at `offset` of the object behind `name`.
fn write_at(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(common::shm_path(name))
        .expect("open object");
    f.write_all_at(bytes, offset).expect("write object");
}

/// Sets the length of the object behind `name` (`ftruncate`).
fn set_len(name: &str, len: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(common::shm_path(name))
        .expect("open object");
    f.set_len(len).expect("ftruncate");
}

/// Creates a plain object `name` in /dev/shm holding `bytes` (not through shmchan).
fn make_object(name: &str, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(common::shm_path(name))
        .expect("create object");
    f.write_all_at(bytes, 0).expect("write object");
}

/// Whether this process has the object `name` mapped.
fn mapped(name: &str) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("maps");
    let needle = format!("/dev/shm/{name}");
    maps.lines()
        .any(|l| l.ends_with(&needle) || l.contains(&format!("{needle} ")))
}

/// Opens `name` as a `u64` receiver with `opts`, expecting an error; checks that no
/// mapping of the object is left behind.
fn open_err(name: &str, opts: &Options) -> OpenError {
    match Receiver::<u64>::with_options(name, opts) {
        Ok(rx) => panic!("open of {name} succeeded: {rx:?}"),
        Err(e) => {
            assert!(!mapped(name), "a failed open ({e:?}) left {name} mapped");
            e
        }
    }
}

#[test]
fn open_of_a_missing_name_is_not_found() {
    let (guard, name) = ShmGuard::fresh("att-missing");
    assert!(matches!(Receiver::<u64>::open(&name), Err(OpenError::NotFound(n)) if n == name));
    assert!(matches!(Sender::<u64>::open(&name), Err(OpenError::NotFound(n)) if n == name));
    assert!(matches!(
        shmchan::remove(&name),
        Err(OpenError::NotFound(_))
    ));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn create_of_an_existing_name_is_already_exists() {
    let (guard, name) = ShmGuard::fresh("att-exists");
    let tx = Sender::<u64>::create(&name, 8).expect("create");
    assert!(
        matches!(Sender::<u64>::create(&name, 8), Err(OpenError::AlreadyExists(n)) if n == name)
    );
    assert!(matches!(
        Receiver::<u64>::create(&name, 8),
        Err(OpenError::AlreadyExists(_))
    ));
    // Another type or capacity does not matter: the name is taken.
    assert!(matches!(
        Receiver::<u32>::create(&name, 4),
        Err(OpenError::AlreadyExists(_))
    ));
    // The failed creates did not remove or damage the existing channel.
    let rx = Receiver::<u64>::open(&name).expect("open existing");
    tx.try_send(3).expect("send");
    assert_eq!(rx.try_recv(), Ok(3));
    drop((tx, rx));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Same size and alignment as `u64`, another type.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct OtherU64 {
    v: u64,
}

/// Same size as `u64`, smaller alignment.
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C)]
struct TwoU32 {
    a: u32,
    b: u32,
}

#[test]
fn another_message_type_is_type_mismatch() {
    let (guard, name) = ShmGuard::fresh("att-type");
    let tx = Sender::<u64>::create(&name, 8).expect("create");
    fn is_type_mismatch<T: std::fmt::Debug>(r: Result<T, OpenError>) -> bool {
        matches!(r, Err(OpenError::TypeMismatch { .. }))
    }
    // Smaller type.
    assert!(is_type_mismatch(Receiver::<u32>::open(&name)));
    // Same size and alignment, different type (caught by the type fingerprint).
    assert!(is_type_mismatch(Receiver::<i64>::open(&name)));
    assert!(is_type_mismatch(Receiver::<OtherU64>::open(&name)));
    assert!(is_type_mismatch(Receiver::<f64>::open(&name)));
    // Same size, other alignment and type.
    assert!(is_type_mismatch(Receiver::<[u8; 8]>::open(&name)));
    assert!(is_type_mismatch(Receiver::<TwoU32>::open(&name)));
    // Larger type.
    assert!(is_type_mismatch(Receiver::<[u64; 2]>::open(&name)));
    // The sender role is checked the same way (and before RoleTaken).
    assert!(is_type_mismatch(Sender::<u32>::open(&name)));
    // The error names both sides.
    let e = Receiver::<OtherU64>::open(&name).unwrap_err();
    assert!(e.to_string().contains("OtherU64"), "{e}");
    // The right type opens.
    let rx = Receiver::<u64>::open(&name).expect("open with the right type");
    drop((tx, rx));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn typed_and_byte_channels_are_type_mismatch_both_ways() {
    let (mut guard, typed) = ShmGuard::fresh("att-kind-typed");
    let bytes = common::unique_name("att-kind-bytes");
    guard.add(&bytes);
    let tx = Sender::<[u8; 64]>::create(&typed, 4).expect("create typed");
    let btx = ByteSender::create(&bytes, 4, 64).expect("create bytes");
    let e = ByteReceiver::open(&typed).unwrap_err();
    assert!(matches!(e, OpenError::TypeMismatch { .. }), "{e:?}");
    let e = ByteSender::open(&typed).unwrap_err();
    assert!(matches!(e, OpenError::TypeMismatch { .. }), "{e:?}");
    let e = Receiver::<[u8; 64]>::open(&bytes).unwrap_err();
    assert!(matches!(e, OpenError::TypeMismatch { .. }), "{e:?}");
    // A byte receiver accepts whatever limit the channel was made with.
    let brx = ByteReceiver::open(&bytes).expect("open bytes");
    assert_eq!(brx.max_len(), 64);
    drop((tx, btx, brx));
    drop(guard);
    common::assert_shm_gone(&[&typed, &bytes]);
}

#[test]
fn another_capacity_is_capacity_mismatch() {
    let (guard, name) = ShmGuard::fresh("att-cap");
    let tx = Sender::<u64>::create(&name, 8).expect("create");
    for asked in [4usize, 16, 1] {
        match Receiver::<u64>::with_options(&name, &Options::new().capacity(asked)) {
            Err(OpenError::CapacityMismatch { found, expected }) => {
                assert_eq!((found, expected), (8, asked as u64));
            }
            other => panic!("capacity {asked}: {other:?}"),
        }
    }
    // No capacity, or the right one, opens.
    let rx = Receiver::<u64>::with_options(&name, &Options::new().capacity(8)).expect("open");
    assert_eq!(rx.capacity(), 8);
    drop((tx, rx));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn invalid_capacity_creates_nothing() {
    let (guard, name) = ShmGuard::fresh("att-badcap");
    for cap in [0usize, 3, 1000, (1 << 30) + 1] {
        let r = Sender::<u64>::create(&name, cap);
        assert!(
            matches!(r, Err(OpenError::InvalidCapacity(c)) if c == cap as u64),
            "capacity {cap}: {r:?}"
        );
        assert!(
            !common::shm_exists(&name),
            "capacity {cap} left an object behind"
        );
    }
    // Creating needs a capacity.
    let no_cap = Options::new().mode(CreateMode::CreateExclusive);
    assert!(matches!(
        Sender::<u64>::with_options(&name, &no_cap),
        Err(OpenError::InvalidOption(_))
    ));
    assert!(!common::shm_exists(&name));
    // A peer table of fewer than 2 or more than 192 entries.
    for n in [0, 1, 193, u32::MAX] {
        let opts = Options::new()
            .capacity(4)
            .mode(CreateMode::CreateExclusive)
            .max_peers(n);
        assert!(
            matches!(
                shmchan::mpmc::Sender::<u64>::with_options(&name, &opts),
                Err(OpenError::InvalidOption(_))
            ),
            "max_peers {n}"
        );
        assert!(!common::shm_exists(&name), "max_peers {n} left an object");
    }
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Purge-and-create cannot remove what is in the way (here a directory of that name
/// in /dev/shm): the unlink's error, and nothing created or removed.
#[test]
fn purge_and_create_reports_what_it_cannot_remove() {
    let (guard, name) = ShmGuard::fresh("att-purge-dir");
    let dir = common::shm_path(&name);
    std::fs::create_dir(&dir).expect("mkdir");
    struct RmDir(std::path::PathBuf);
    impl Drop for RmDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _rm = RmDir(dir.clone());
    let opts = Options::new().capacity(4).mode(CreateMode::PurgeAndCreate);
    match Sender::<u64>::with_options(&name, &opts) {
        Err(OpenError::Io(e)) => assert_eq!(e.raw_os_error(), Some(libc::EISDIR), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(dir.is_dir(), "the directory was removed");
    drop(_rm);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// A segment larger than the whole `/dev/shm` is refused when it is created, with
/// `NoSpace` and nothing left behind: its pages are reserved up front, so a full
/// `/dev/shm` (a container's is often 64 MiB) is an error there, not a `SIGBUS` at the
/// first send that touches a page the filesystem cannot back.
#[test]
fn segment_larger_than_dev_shm_is_no_space() {
    let st = rustix::fs::statvfs("/dev/shm").expect("statvfs /dev/shm");
    let total = st.f_blocks.saturating_mul(st.f_frsize);
    // 1024 slots just larger than a 1024th of the filesystem each.
    let max_len = total / 1024 + 4096;
    if st.f_blocks == 0 || max_len * 1024 > 60 << 30 {
        // An unlimited tmpfs (or one above shmchan's 64 GiB segment limit) cannot be
        // overfilled by one segment; say so rather than pass silently.
        eprintln!("SKIPPED: /dev/shm has {total} bytes; no segment can exceed it");
        return;
    }
    let (guard, name) = ShmGuard::fresh("att-nospace");
    let t = Instant::now();
    match ByteSender::create(&name, 1024, max_len as usize) {
        Err(OpenError::NoSpace { name: n, needed }) => {
            assert_eq!(n, name);
            assert!(needed > total, "needed {needed} <= total {total}");
        }
        other => {
            panic!("expected NoSpace for {max_len} B x 1024 on a {total} B /dev/shm, got {other:?}")
        }
    }
    // The kernel refuses a request larger than the filesystem before allocating.
    assert!(t.elapsed() < PROMPTLY, "took {:?}", t.elapsed());
    assert!(
        !common::shm_exists(&name),
        "a refused create left its object"
    );
    drop(guard);
}

#[test]
fn garbage_object_is_bad_magic() {
    let (mut guard, _) = ShmGuard::fresh("att-magic-unused");
    let mut rng = Rng::from_entropy();
    let mut names = Vec::new();
    for variant in 0..6 {
        let name = common::unique_name("att-magic");
        guard.add(&name);
        let mut bytes = vec![0u8; 8192];
        for b in bytes.iter_mut() {
            *b = rng.next_u64() as u8;
        }
        // Make sure the magic is wrong whatever the random bytes.
        bytes[0] = b'X';
        // Steer the opener down each of its paths: an init state it does not know,
        // "ready", "creating" (with a dead or a live creator), and all-ones.
        match variant {
            0 => {}
            1 => bytes[56..60].copy_from_slice(&1u32.to_ne_bytes()),
            2 => {
                bytes[56..60].copy_from_slice(&0u32.to_ne_bytes());
                bytes[60..64].copy_from_slice(&common::dead_pid().to_ne_bytes());
            }
            3 => {
                bytes[56..60].copy_from_slice(&0u32.to_ne_bytes());
                bytes[60..64].copy_from_slice(&std::process::id().to_ne_bytes());
            }
            4 => bytes.fill(0xFF),
            _ => bytes[56..60].copy_from_slice(&7u32.to_ne_bytes()),
        }
        make_object(&name, &bytes);
        let opts = Options::new().init_timeout(Duration::from_millis(200));
        let t = Instant::now();
        let e = open_err(&name, &opts);
        assert!(matches!(e, OpenError::BadMagic), "variant {variant}: {e:?}");
        // A wrong magic is known at once: no waiting for the init timeout.
        assert!(t.elapsed() < PROMPTLY);
        names.push(name);
    }
    drop(guard);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    common::assert_shm_gone(&refs);
}

#[test]
fn truncated_or_extended_object_is_truncated_never_sigbus() {
    let (guard, name) = ShmGuard::fresh("att-trunc");
    let full = make_kept_channel(&name, 64);
    assert!(full > 4096 + 100);
    // Shorter than the header says, longer than one page: the opener maps only what
    // fstat reports and must not touch the missing slots (that would be SIGBUS).
    for len in [
        4096 + 100,
        4096,
        full - 1,
        full - 4096,
        full + 1,
        full + 4096,
    ] {
        set_len(&name, len);
        match open_err(&name, &Options::new()) {
            OpenError::Truncated { actual, expected } => {
                assert_eq!((actual, expected), (len, full), "length {len}");
            }
            other => panic!("length {len}: {other:?}"),
        }
        assert!(matches!(
            Sender::<u64>::open(&name),
            Err(OpenError::Truncated { .. })
        ));
    }
    // Restored to its size, it opens and works again.
    set_len(&name, full);
    let tx = Sender::<u64>::open(&name).expect("open restored");
    let rx = Receiver::<u64>::open(&name).expect("open restored");
    tx.try_send(9).expect("send");
    assert_eq!(rx.try_recv(), Ok(9));
    drop((tx, rx));
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn object_shorter_than_a_page_is_truncated_after_the_init_timeout() {
    let (mut guard, name) = ShmGuard::fresh("att-short");
    make_object(&name, &[0u8; 100]);
    let timeout = Duration::from_millis(100);
    let opts = Options::new().init_timeout(timeout);
    let t = Instant::now();
    match open_err(&name, &opts) {
        OpenError::Truncated { actual, expected } => assert_eq!((actual, expected), (100, 4096)),
        other => panic!("{other:?}"),
    }
    // The opener gave a creator between O_EXCL and ftruncate its chance first.
    assert!(t.elapsed() >= timeout, "gave up after {:?}", t.elapsed());
    assert!(t.elapsed() < timeout + PROMPTLY);

    // An empty object is one whose creator never sized it: InitTimeout.
    let empty = common::unique_name("att-empty");
    guard.add(&empty);
    make_object(&empty, &[]);
    let t = Instant::now();
    let e = open_err(&empty, &opts);
    assert!(matches!(e, OpenError::InitTimeout), "{e:?}");
    assert!(t.elapsed() >= timeout);
    drop(guard);
    common::assert_shm_gone(&[&name, &empty]);
}

/// A header in the "creating" state (magic still zero, init_state 0) whose creator is
/// `pid`, followed by zero slots.
fn half_initialised(name: &str, pid: u32) {
    let mut bytes = vec![0u8; 8192];
    bytes[OFF_INIT_STATE as usize..][..4].copy_from_slice(&0u32.to_ne_bytes());
    bytes[OFF_CREATOR_PID as usize..][..4].copy_from_slice(&pid.to_ne_bytes());
    make_object(name, &bytes);
}

#[test]
fn creator_died_during_init_is_creator_died() {
    let (guard, name) = ShmGuard::fresh("att-died");
    let pid = common::dead_pid();
    half_initialised(&name, pid);
    let opts = Options::new().init_timeout(Duration::from_secs(30));
    let t = Instant::now();
    match open_err(&name, &opts) {
        OpenError::CreatorDied { pid: p } => assert_eq!(p, pid),
        other => panic!("{other:?}"),
    }
    // Known from the pid at once, long before the init timeout.
    assert!(t.elapsed() < PROMPTLY, "took {:?}", t.elapsed());
    // `rm` can clean it.
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn live_creator_that_never_finishes_is_init_timeout() {
    // A creator is alive while it holds its init lock, whatever pid it wrote: ours,
    // the parent's, pid 1, or a pid that means nothing here (another PID namespace).
    let (mut guard, _) = ShmGuard::fresh("att-slow-unused");
    let parent = rustix::process::getppid()
        .map(|p| p.as_raw_nonzero().get() as u32)
        .unwrap_or(1);
    let mut names = Vec::new();
    for pid in [std::process::id(), parent, 1, common::dead_pid()] {
        let name = common::unique_name("att-slow");
        guard.add(&name);
        half_initialised(&name, pid);
        let lock = common::hold_liveness_lock(&name, 255);
        let timeout = Duration::from_millis(150);
        let t = Instant::now();
        let e = open_err(&name, &Options::new().init_timeout(timeout));
        let took = t.elapsed();
        assert!(
            matches!(e, OpenError::InitTimeout),
            "creator pid {pid}: {e:?}"
        );
        assert!(took >= timeout, "creator pid {pid}: gave up after {took:?}");
        assert!(
            took < timeout + PROMPTLY,
            "creator pid {pid}: gave up after {took:?}"
        );
        // Once the lock goes (the creator's process ended), the creator is dead.
        drop(lock);
        match open_err(&name, &Options::new().init_timeout(Duration::from_secs(30))) {
            OpenError::CreatorDied { pid: p } => assert_eq!(p, pid),
            other => panic!("creator pid {pid} after its lock went: {other:?}"),
        }
        names.push(name);
    }
    drop(guard);
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    common::assert_shm_gone(&refs);
}

#[test]
fn bad_names_are_invalid_name() {
    let long255 = "x".repeat(255);
    let long300 = "y".repeat(300);
    // 128 two-byte characters: 256 bytes although only 128 characters.
    let wide = "é".repeat(128);
    let bad = [
        "", "/", "a/b", "/a/b", "//a", "a/", ".", "..", "a\0b", &long255, &long300, &wide,
    ];
    for name in bad {
        let is_invalid = |e: &OpenError| matches!(e, OpenError::InvalidName { .. });
        let e = Receiver::<u64>::open(name).unwrap_err();
        assert!(is_invalid(&e), "open {name:?}: {e:?}");
        let e = Sender::<u64>::create(name, 4).unwrap_err();
        assert!(is_invalid(&e), "create {name:?}: {e:?}");
        let e = shmchan::remove(name).unwrap_err();
        assert!(is_invalid(&e), "remove {name:?}: {e:?}");
    }
    // The longest valid name, and a leading '/', work.
    let base = common::unique_name("att-long");
    let longest = format!("{base}{}", "z".repeat(254 - base.len()));
    let guard = ShmGuard::new(&longest);
    let tx = Sender::<u64>::create(&longest, 4).expect("254-byte name");
    let rx = Receiver::<u64>::open(&format!("/{longest}")).expect("same name with a leading '/'");
    tx.try_send(1).expect("send");
    assert_eq!(rx.try_recv(), Ok(1));
    drop((tx, rx));
    drop(guard);
    common::assert_shm_gone(&[&longest]);
}

#[test]
fn second_sender_while_the_first_lives_is_role_taken() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("att-role");
    let rx = Receiver::<u64>::create(&name, 8).expect("create");
    let child = common::spawn_child(
        "second_sender_while_the_first_lives_is_role_taken",
        "hold_sender",
        &name,
        "",
    );
    assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(1), "hello from the child");
    match Sender::<u64>::open(&name) {
        Err(OpenError::RoleTaken { role, pid }) => {
            assert_eq!((role, pid), ("sender", child.pid()));
        }
        other => panic!("{other:?}"),
    }
    // The receiver role is held by this process.
    match Receiver::<u64>::open(&name) {
        Err(OpenError::RoleTaken { role, pid }) => {
            assert_eq!((role, pid), ("receiver", std::process::id()));
        }
        other => panic!("{other:?}"),
    }
    // Once the holder is dead, the role can be taken over.
    child.kill();
    let tx = Sender::<u64>::open(&name).expect("take over from a dead sender");
    tx.try_send(2).expect("send");
    assert_eq!(rx.try_recv(), Ok(2));
    drop((tx, rx));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Writes `value` at `offset` of a kept channel's header and returns the open error.
fn open_with_field(name: &str, offset: u64, value: &[u8]) -> OpenError {
    write_at(name, offset, value);
    open_err(name, &Options::new())
}

#[test]
fn other_flavor_is_flavor_mismatch_unknown_flavor_is_corrupt() {
    let (guard, name) = ShmGuard::fresh("att-flavor");
    make_kept_channel(&name, 8);
    // A flavor that contradicts the slot geometry (MPMC slots are laid out
    // differently) is a corrupt header, not another flavor.
    for unknown in [0u32, 2, 3, 7, u32::MAX] {
        let e = open_with_field(&name, OFF_FLAVOR, &unknown.to_ne_bytes());
        assert!(
            matches!(e, OpenError::Corrupt(_)),
            "flavor {unknown}: {e:?}"
        );
    }
    // Put back, it opens.
    write_at(&name, OFF_FLAVOR, &1u32.to_ne_bytes());
    drop(Receiver::<u64>::open(&name).expect("open repaired"));
    // Through the API: each flavor refuses the other.
    match shmchan::mpmc::Receiver::<u64>::open(&name) {
        Err(OpenError::FlavorMismatch { found, expected }) => {
            assert_eq!((found, expected), ("spsc", "mpmc"));
        }
        other => panic!("{other:?}"),
    }
    shmchan::remove(&name).expect("remove");
    let (guard2, name2) = ShmGuard::fresh("att-flavor-mpmc");
    let mpmc = shmchan::mpmc::Sender::<u64>::create(&name2, 8).expect("create mpmc");
    match Receiver::<u64>::open(&name2) {
        Err(OpenError::FlavorMismatch { found, expected }) => {
            assert_eq!((found, expected), ("mpmc", "spsc"));
        }
        other => panic!("{other:?}"),
    }
    drop(mpmc);
    drop(guard);
    drop(guard2);
    common::assert_shm_gone(&[&name, &name2]);
}

#[test]
fn other_layout_version_is_version_mismatch() {
    let (guard, name) = ShmGuard::fresh("att-version");
    make_kept_channel(&name, 8);
    // Version 1 judged liveness by pid: mixing it with version 2 would take live peers
    // for dead, so it is refused like any other version.
    for v in [0u32, 1, 3, 0xFFFF_FFFF] {
        match open_with_field(&name, OFF_VERSION, &v.to_ne_bytes()) {
            OpenError::VersionMismatch { found, expected } => assert_eq!((found, expected), (v, 2)),
            other => panic!("version {v}: {other:?}"),
        }
    }
    write_at(&name, OFF_VERSION, &2u32.to_ne_bytes());
    drop(Receiver::<u64>::open(&name).expect("open repaired"));
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn contradictory_header_fields_are_corrupt() {
    let (guard, name) = ShmGuard::fresh("att-corrupt");
    make_kept_channel(&name, 8);
    let cases: [(u64, Vec<u8>, &str); 6] = [
        // (8 -> 16 slots of 16 bytes would still fit the same two pages: self-consistent.)
        (
            OFF_CAPACITY,
            1024u64.to_ne_bytes().to_vec(),
            "capacity disagrees with the size",
        ),
        (
            OFF_CAPACITY,
            3u64.to_ne_bytes().to_vec(),
            "capacity not a power of two",
        ),
        (OFF_CAPACITY, 0u64.to_ne_bytes().to_vec(), "capacity zero"),
        (
            OFF_MSG_KIND,
            9u32.to_ne_bytes().to_vec(),
            "unknown message kind",
        ),
        (
            OFF_MAX_PEERS,
            0u32.to_ne_bytes().to_vec(),
            "empty peer table",
        ),
        (
            OFF_INIT_STATE,
            2u32.to_ne_bytes().to_vec(),
            "unknown init state",
        ),
    ];
    for (offset, bytes, what) in cases {
        let mut saved = vec![0u8; bytes.len()];
        let f = OpenOptions::new()
            .read(true)
            .open(common::shm_path(&name))
            .expect("open object");
        f.read_exact_at(&mut saved, offset).expect("read");
        let e = open_with_field(&name, offset, &bytes);
        assert!(matches!(e, OpenError::Corrupt(_)), "{what}: {e:?}");
        write_at(&name, offset, &saved);
    }
    drop(Receiver::<u64>::open(&name).expect("open repaired"));
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn object_of_another_owner_is_foreign_owner() {
    let (guard, name) = ShmGuard::fresh("att-owner");
    make_kept_channel(&name, 8);
    let path = common::shm_path(&name);
    let ours = rustix::process::geteuid().as_raw();
    let other = ours.wrapping_add(4242);
    if std::os::unix::fs::chown(&path, Some(other), None).is_err() {
        // Only root can give an object away; nothing to check otherwise.
        println!("skipped: cannot chown as uid {ours}");
    } else {
        match open_err(&name, &Options::new()) {
            OpenError::ForeignOwner { owner, ours: o } => assert_eq!((owner, o), (other, ours)),
            other => panic!("{other:?}"),
        }
        let rx = Receiver::<u64>::with_options(&name, &Options::new().allow_foreign_owner(true))
            .expect("allowed foreign owner");
        drop(rx);
    }
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn failed_opens_keep_nothing_mapped_and_good_opens_do() {
    let (guard, name) = ShmGuard::fresh("att-maps");
    make_kept_channel(&name, 8);
    assert!(!mapped(&name));
    let rx = Receiver::<u64>::open(&name).expect("open");
    assert!(
        mapped(&name),
        "an open channel is mapped (the maps check works)"
    );
    drop(rx);
    assert!(!mapped(&name), "a dropped handle unmaps");
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn racing_senders_exactly_one_wins_also_over_a_dead_holder() {
    common::run_as_child(child_roles);
    const RACERS: usize = 4;
    let test = "racing_senders_exactly_one_wins_also_over_a_dead_holder";
    for dead_holder in [false, true] {
        let (guard, name) = ShmGuard::fresh("att-race");
        let rx = Receiver::<u64>::create(&name, 8).expect("create");
        if dead_holder {
            // The role is held by a process that was then killed: the racers must take
            // it over, and only one may.
            let holder = common::spawn_child(test, "hold_sender", &name, "");
            assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(1));
            holder.kill();
        }
        // A slow machine may start a racer too late to race: then run the round again.
        let mut tries = 0;
        loop {
            tries += 1;
            let start = epoch_ns() + 400_000_000;
            let racers: Vec<_> = (0..RACERS)
                .map(|_| common::spawn_child(test, "race_sender", &name, &start.to_string()))
                .collect();
            let outputs: Vec<String> = racers.into_iter().map(|c| c.wait_success()).collect();
            let count = |what: &str| outputs.iter().filter(|o| o.contains(what)).count();
            if count("RACE: late") > 0 && tries < 5 {
                println!("a racer started late; racing again");
                continue;
            }
            assert_eq!(
                (count("RACE: won"), count("RACE: lost")),
                (1, RACERS - 1),
                "dead holder: {dead_holder}\n{}",
                outputs.join("\n")
            );
            break;
        }
        drop(rx);
        drop(guard);
        common::assert_shm_gone(&[&name]);
    }
}

/// Regression (fuzz `attach`, out of memory): an opener mapped the whole object with
/// MAP_POPULATE before looking at its header, so a sparse garbage object of 1 GiB
/// cost 1 GiB of memory before it was found to be garbage.
#[test]
fn large_sparse_garbage_object_is_refused_without_allocating_it() {
    use std::os::unix::fs::MetadataExt;
    let (guard, name) = ShmGuard::fresh("att-sparse");
    {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(common::shm_path(&name))
            .expect("create");
        std::io::Write::write_all(&mut &f, b"NOTSHMCH").expect("write");
        f.set_len(1 << 30).expect("size (sparse)");
    }
    match shmchan::Receiver::<u64>::open(&name) {
        Err(OpenError::BadMagic) => {}
        other => panic!("{other:?}"),
    }
    let allocated = std::fs::metadata(common::shm_path(&name))
        .expect("stat")
        .blocks()
        * 512;
    assert!(
        allocated < 1 << 20,
        "opening a garbage object allocated {allocated} bytes of it"
    );
    shmchan::remove(&name).expect("remove");
    drop(guard);
}

/// A valid header on a sparse object (a sparse copy of a channel, or one written by
/// another process) is opened without allocating the whole object: populating the
/// mapping would allocate every page on the word of whoever wrote the header.
#[test]
fn sparse_copy_of_a_valid_channel_opens_without_allocating_it() {
    use std::os::unix::fs::MetadataExt;
    let (mut guard, name) = ShmGuard::fresh("att-sparse-valid");
    let copy = format!("{name}-copy");
    guard.add(&copy);
    let tx = Sender::<[u8; 4096]>::with_options(
        &name,
        &Options::new()
            .capacity(4096)
            .mode(CreateMode::CreateExclusive),
    )
    .expect("create");
    let size = std::fs::metadata(common::shm_path(&name))
        .expect("stat")
        .len();
    let header = {
        let f = std::fs::File::open(common::shm_path(&name)).expect("open");
        let mut h = vec![0u8; 4096];
        f.read_exact_at(&mut h, 0).expect("read header");
        h
    };
    drop(tx);
    {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(common::shm_path(&copy))
            .expect("create copy");
        f.write_all_at(&header, 0).expect("write header");
        f.set_len(size).expect("size (sparse)");
    }
    let rx = Receiver::<[u8; 4096]>::open(&copy).expect("open the sparse copy");
    assert_eq!(rx.try_recv(), Err(shmchan::TryRecvError::Empty));
    let allocated = std::fs::metadata(common::shm_path(&copy))
        .expect("stat")
        .blocks()
        * 512;
    assert!(
        allocated < 1 << 20,
        "opening a sparse copy of {size} bytes allocated {allocated}"
    );
    drop(rx);
    let _ = shmchan::remove(&copy);
    drop(guard);
}
