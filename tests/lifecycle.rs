//! Segment lifecycle: who removes the name and when, creation modes across processes,
//! permissions, and messages that outlive both handles.

mod common;

use common::{ChildEnv, MUST_FINISH, ShmGuard};
use shmchan::{CreateMode, Options, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Roles the children of this file play.
fn child_roles(c: &ChildEnv) {
    match c.role.as_str() {
        // At the wall-clock instant in `arg` (ns since the epoch), open-or-create the
        // channel as its sender; send 1 if this process created it, else 0; leave.
        "racing_sender" => {
            sleep_until_epoch_ns(c.arg_u64());
            let opts = Options::new().capacity(16).mode(CreateMode::OpenOrCreate);
            let tx = Sender::<u64>::with_options(&c.name, &opts).expect("open or create");
            tx.send_timeout(u64::from(tx.owns_name()), MUST_FINISH)
                .expect("send");
            // If this process created the channel, its drop removes the name: wait
            // until the parent has taken the report, or a parent that came late would
            // find no name and create a channel of its own.
            common::wait_until("the parent's receive", MUST_FINISH, || tx.is_empty());
            drop(tx);
        }
        // Receive everything a kept channel holds, then Disconnected.
        "drain" => {
            let rx = Receiver::<u64>::open(&c.name).expect("open");
            for i in 0..c.arg_u64() {
                assert_eq!(rx.recv_timeout(MUST_FINISH), Ok(i));
            }
            assert_eq!(
                rx.recv_timeout(MUST_FINISH),
                Err(RecvTimeoutError::Disconnected)
            );
            drop(rx);
        }
        // Attach as the sender, say hello, stay attached until killed.
        "hold_sender" => {
            let tx = Sender::<u64>::open(&c.name).expect("open sender");
            tx.send_timeout(1, MUST_FINISH).expect("hello");
            let _keep = tx;
            common::sleep_until_killed();
        }
        other => panic!("unknown role {other}"),
    }
}

fn epoch_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

fn sleep_until_epoch_ns(t: u64) {
    let now = epoch_ns();
    if t > now {
        std::thread::sleep(Duration::from_nanos(t - now));
    }
}

#[test]
fn the_creator_removes_the_name_openers_and_kept_handles_do_not() {
    let (guard, name) = ShmGuard::fresh("life-owner");
    let tx = Sender::<u64>::create(&name, 4).expect("create");
    assert!(tx.owns_name());
    let rx = Receiver::<u64>::open(&name).expect("open");
    assert!(!rx.owns_name());
    drop(rx);
    assert!(
        common::shm_exists(&name),
        "an opener's drop must not remove the name"
    );
    drop(tx);
    assert!(
        !common::shm_exists(&name),
        "the creator's drop removes the name"
    );

    // keep() on the handle, and Options::keep, both keep the name.
    let mut tx = Sender::<u64>::create(&name, 4).expect("create again");
    tx.keep();
    assert!(!tx.owns_name());
    drop(tx);
    assert!(common::shm_exists(&name));
    shmchan::remove(&name).expect("remove");
    let opts = Options::new()
        .capacity(4)
        .mode(CreateMode::CreateExclusive)
        .keep(true);
    drop(Receiver::<u64>::with_options(&name, &opts).expect("create kept"));
    assert!(common::shm_exists(&name));
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn open_or_create_race_between_processes_has_one_creator() {
    common::run_as_child(child_roles);
    for round in 0..8 {
        let (guard, name) = ShmGuard::fresh("life-race");
        // Both processes start at the same instant, well after the child is up.
        let start = epoch_ns() + 300_000_000;
        let mut child = common::spawn_child(
            "open_or_create_race_between_processes_has_one_creator",
            "racing_sender",
            &name,
            &start.to_string(),
        );
        sleep_until_epoch_ns(start);
        let opts = Options::new().capacity(16).mode(CreateMode::OpenOrCreate);
        let rx = Receiver::<u64>::with_options(&name, &opts).expect("open or create");
        let child_created = common::poll_with_child(&mut child, "the child's report", || {
            rx.recv_timeout(Duration::from_millis(10)).ok()
        });
        assert!(
            rx.owns_name() ^ (child_created == 1),
            "round {round}: parent created: {}, child created: {child_created}",
            rx.owns_name()
        );
        assert_eq!(
            rx.recv_timeout(MUST_FINISH),
            Err(RecvTimeoutError::Disconnected)
        );
        child.wait_success();
        drop(rx);
        drop(guard);
        common::assert_shm_gone(&[&name]);
    }
}

#[test]
fn messages_outlive_both_handles_of_a_kept_channel() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("life-outlive");
    let opts = Options::new()
        .capacity(8)
        .mode(CreateMode::CreateExclusive)
        .keep(true);
    let tx = Sender::<u64>::with_options(&name, &opts).expect("create");
    for i in 0..5 {
        tx.try_send(i).expect("send");
    }
    // No receiver was ever attached; the sender leaves, the messages stay.
    drop(tx);
    common::spawn_child(
        "messages_outlive_both_handles_of_a_kept_channel",
        "drain",
        &name,
        "5",
    )
    .wait_success();
    // Drained by the child: a new receiver finds it empty and disconnected.
    let rx = Receiver::<u64>::open(&name).expect("open");
    assert_eq!(rx.try_recv(), Err(TryRecvError::Disconnected));
    drop(rx);
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn permissions_are_applied_exactly() {
    let (guard, name) = ShmGuard::fresh("life-perm");
    let mode = |name: &str| {
        std::fs::metadata(common::shm_path(name))
            .expect("stat")
            .permissions()
            .mode()
            & 0o777
    };
    let tx = Sender::<u64>::create(&name, 4).expect("create");
    assert_eq!(mode(&name), 0o600, "default mode");
    drop(tx);
    for m in [0o640, 0o666, 0o604] {
        let opts = Options::new()
            .capacity(4)
            .mode(CreateMode::CreateExclusive)
            .permissions(m);
        let tx = Sender::<u64>::with_options(&name, &opts).expect("create");
        assert_eq!(mode(&name), m, "mode {m:o} whatever the umask");
        drop(tx);
    }
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Regression test for a bug: the creator's handle removes the name on drop without
/// checking that the name still refers to *its* object. After a `PurgeAndCreate` (or
/// `remove` followed by a new create), the name belongs to a new channel, and the old
/// creator's drop removes that one's name: newcomers then get `NotFound` although the
/// new channel is alive and its owner never asked for removal.
#[test]
fn old_creator_drop_does_not_remove_a_purged_and_recreated_name() {
    let (guard, name) = ShmGuard::fresh("life-purge");
    let old = Sender::<u64>::create(&name, 4).expect("create");
    old.try_send(1).expect("send to the old channel");
    // A restarted service takes the name over while the old instance is shutting down.
    let purge = Options::new().capacity(4).mode(CreateMode::PurgeAndCreate);
    let new = Receiver::<u64>::with_options(&name, &purge).expect("purge and create");
    assert!(new.owns_name());
    assert_eq!(new.try_recv(), Err(TryRecvError::Empty), "a fresh channel");
    // The old instance finishes shutting down.
    drop(old);
    assert!(
        common::shm_exists(&name),
        "the old creator's drop removed the name of the new channel"
    );
    let tx = Sender::<u64>::open(&name).expect("open the new channel by name");
    tx.try_send(2).expect("send");
    assert_eq!(new.try_recv(), Ok(2));
    drop((tx, new));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Same bug as above, through `remove` and a new create.
#[test]
fn old_creator_drop_does_not_remove_a_removed_and_recreated_name() {
    let (guard, name) = ShmGuard::fresh("life-rm");
    let old = Sender::<u64>::create(&name, 4).expect("create");
    shmchan::remove(&name).expect("remove (like `shmchan rm`)");
    let new = Receiver::<u64>::create(&name, 4).expect("create anew");
    drop(old);
    assert!(
        common::shm_exists(&name),
        "the old creator's drop removed the name of the new channel"
    );
    drop(new);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn inspect_shows_live_and_dead_peers_and_list_finds_the_channel() {
    common::run_as_child(child_roles);
    let (guard, name) = ShmGuard::fresh("life-inspect");
    let rx = Receiver::<u64>::create(&name, 8).expect("create");
    let mut child = common::spawn_child(
        "inspect_shows_live_and_dead_peers_and_list_finds_the_channel",
        "hold_sender",
        &name,
        "",
    );
    let hello = common::poll_with_child(&mut child, "the child's hello", || {
        rx.recv_timeout(Duration::from_millis(10)).ok()
    });
    assert_eq!(hello, 1);
    let me = std::process::id();
    let info = shmchan::inspect(&name).expect("inspect");
    assert_eq!((info.flavor, info.kind), ("spsc", "typed"));
    assert_eq!((info.capacity, info.msg_size, info.msg_align), (8, 8, 8));
    assert_eq!((info.len(), info.head, info.tail), (0, 1, 1));
    assert_eq!(info.creator_pid, me);
    assert_eq!((info.sender_attaches, info.receiver_attaches), (1, 1));
    let peer = |info: &shmchan::ChannelInfo, role: &str| {
        info.peers.iter().find(|p| p.role == role).cloned()
    };
    let sender = peer(&info, "sender").expect("sender listed");
    assert_eq!((sender.pid, sender.alive), (child.pid(), true));
    let receiver = peer(&info, "receiver").expect("receiver listed");
    assert_eq!((receiver.pid, receiver.alive), (me, true));
    assert!(shmchan::list().expect("list").contains(&name));

    child.kill();
    let info = shmchan::inspect(&name).expect("inspect");
    // Killed without detaching: still in the table, but known dead.
    let sender = peer(&info, "sender").expect("dead sender still listed");
    assert!(!sender.alive, "a killed sender shown alive: {sender:?}");

    drop(rx);
    assert!(matches!(
        shmchan::inspect(&name),
        Err(shmchan::OpenError::NotFound(_))
    ));
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

#[test]
fn inspect_of_a_damaged_object_is_an_error_never_sigbus() {
    let (guard, name) = ShmGuard::fresh("life-inspect-bad");
    let opts = Options::new()
        .capacity(64)
        .mode(CreateMode::CreateExclusive)
        .keep(true);
    drop(Sender::<u64>::with_options(&name, &opts).expect("create"));
    let path = common::shm_path(&name);
    let full = std::fs::metadata(&path).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open object");
    // Longer first: shrinking below a page loses the header.
    for len in [full + 4096, 4096 + 100, 4096, 100, 0] {
        file.set_len(len).expect("ftruncate");
        let e = shmchan::inspect(&name).unwrap_err();
        assert!(
            matches!(e, shmchan::OpenError::Truncated { actual, .. } if actual == len),
            "length {len}: {e:?}"
        );
    }
    drop(file);
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Regression test for a bug: `inspect` calls a header whose creator never finished it
/// (magic still zero, `init_state` 0 "creating", `creator_pid` set: what a creator
/// killed right after sizing the object leaves) `BadMagic`, where `open` says
/// `CreatorDied`/`InitTimeout` and `inspect`'s own docs promise `InitTimeout`. As a
/// result `shmchan rm NAME` refuses it as "not a shmchan channel" and `list()` (hence
/// `rm --stale`) never sees it: only `rm --force` cleans it up.
#[test]
fn inspect_of_a_half_initialised_header_is_not_bad_magic() {
    let (guard, name) = ShmGuard::fresh("life-half");
    let mut bytes = vec![0u8; 8192];
    // init_state (offset 56) stays 0; creator_pid at offset 60.
    bytes[60..64].copy_from_slice(&common::dead_pid().to_ne_bytes());
    std::fs::write(common::shm_path(&name), &bytes).expect("write object");
    // What an opener says:
    let e = Receiver::<u64>::open(&name).unwrap_err();
    assert!(
        matches!(e, shmchan::OpenError::CreatorDied { .. }),
        "open: {e:?}"
    );
    // What inspect says should agree that this is an unfinished shmchan header.
    let e = shmchan::inspect(&name).unwrap_err();
    assert!(
        matches!(
            e,
            shmchan::OpenError::InitTimeout | shmchan::OpenError::CreatorDied { .. }
        ),
        "inspect of an unfinished header: {e:?}"
    );
    shmchan::remove(&name).expect("remove");
    drop(guard);
    common::assert_shm_gone(&[&name]);
}

/// Every handle and guard prints what it is and where it stands in `{:?}` (role,
/// capacity, position, length), without needing `T: Debug`.
#[test]
fn handles_and_guards_describe_themselves() {
    #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
    #[repr(C)]
    struct NoDebug(u64);

    let (_g1, name) = ShmGuard::fresh("life-debug");
    let mut tx = Sender::<NoDebug>::create(&name, 4).expect("create");
    let mut rx = Receiver::<NoDebug>::open(&name).expect("open");
    let s = format!("{tx:?}");
    assert!(s.starts_with("Sender") && s.contains("capacity: 4"), "{s}");
    assert!(
        s.contains("owns_name: true") && s.contains("tail: 0"),
        "{s}"
    );
    {
        // Dropped unsent at the end of the block.
        let slot = tx.try_loan().expect("loan");
        assert_eq!(format!("{slot:?}"), "SendSlot { pos: 0 }");
    }
    tx.send(NoDebug(1)).expect("send");
    let s = format!("{rx:?}");
    assert!(s.starts_with("Receiver") && s.contains("Receiver"), "{s}");
    assert!(s.contains("owns_name: false"), "{s}");
    let r = rx.try_recv_ref().expect("recv_ref");
    assert_eq!(format!("{r:?}"), "RecvRef { pos: 0 }");
    assert_eq!(r.0, 1);
    drop(r);
    // (Dropping the reference consumed message 1.) `&Receiver` iterates, blocking,
    // until the sender is gone.
    tx.send(NoDebug(2)).expect("send");
    drop(tx);
    let got: Vec<u64> = (&rx).into_iter().map(|m| m.0).collect();
    assert_eq!(got, [2]);

    let (_g2, name) = ShmGuard::fresh("life-debug-bytes");
    let mut btx = shmchan::ByteSender::create(&name, 2, 16).expect("create bytes");
    let mut brx = shmchan::ByteReceiver::open(&name).expect("open bytes");
    let s = format!("{btx:?}");
    assert!(
        s.starts_with("ByteSender") && s.contains("max_len: 16"),
        "{s}"
    );
    assert!(format!("{brx:?}").starts_with("ByteReceiver"), "{brx:?}");
    let mut slot = btx.try_loan(3).expect("loan");
    slot.copy_from_slice(b"abc");
    assert_eq!(format!("{slot:?}"), "ByteSlot { len: 3 }");
    slot.commit();
    let r = brx.try_recv_ref().expect("recv_ref");
    assert_eq!(format!("{r:?}"), "ByteRef { len: 3 }");
    assert_eq!(&*r, b"abc");
    drop(r);

    let (_g3, name) = ShmGuard::fresh("life-debug-mpmc");
    let mtx = shmchan::mpmc::Sender::<NoDebug>::create(&name, 2).expect("create mpmc");
    let mrx = shmchan::mpmc::Receiver::<NoDebug>::open(&name).expect("open mpmc");
    let s = format!("{mtx:?}");
    assert!(
        s.starts_with("mpmc::Sender") && s.contains("role: Sender"),
        "{s}"
    );
    assert!(s.contains("capacity: 2"), "{s}");
    let s = format!("{mrx:?}");
    assert!(
        s.starts_with("mpmc::Receiver") && s.contains("role: Receiver"),
        "{s}"
    );
    mtx.send(NoDebug(3)).expect("send");
    drop(mtx);
    let got: Vec<u64> = (&mrx).into_iter().map(|m| m.0).collect();
    assert_eq!(got, [3]);
    // An MPMC receiver can also create the channel.
    let (_g4, name) = ShmGuard::fresh("life-debug-mpmc-rx");
    let mrx = shmchan::mpmc::Receiver::<NoDebug>::create(&name, 2).expect("create as receiver");
    assert!(mrx.owns_name());
}

/// A creator's drop after its name was removed (`shmchan rm`) finds nothing to remove
/// and leaves the name free.
#[test]
fn creator_drop_after_the_name_was_removed() {
    let (guard, name) = ShmGuard::fresh("life-rm-drop");
    let tx = Sender::<u64>::create(&name, 4).expect("create");
    shmchan::remove(&name).expect("remove");
    drop(tx);
    assert!(!common::shm_exists(&name));
    let again = Sender::<u64>::create(&name, 4).expect("the name is free");
    drop(again);
    drop(guard);
    common::assert_shm_gone(&[&name]);
}
