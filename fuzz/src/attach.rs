//! Target `attach`: arbitrary bytes as a shared-memory object, then every kind of
//! handle tries to open it.
//!
//! The object is written to `/dev/shm/<unique name>` with `std::fs`: either the raw
//! input, or the bytes of a real channel made by the API (a "template", so the fuzzer
//! starts past the magic and geometry checks) overwritten field by field as the input
//! says; then it is cut or extended (sparse) to a size the input picks. Six handles
//! (`Receiver`/`Sender` of `u64` and of `[u8; 3]`, `ByteReceiver`, `ByteSender`) open
//! it with a zero (or 1 ms) init timeout. Each open must return `Ok` or an
//! [`OpenError`] that can happen to an existing object; it must never panic, crash,
//! raise `SIGBUS` or hang. An open that succeeds is exercised with a few non-blocking
//! calls whose results must stay in range. The object is never removed or resized by
//! a failed open; this target removes it at the end.
//!
//! # Input
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | bits 0-1: start from the raw input (0) or a template of `u64` (1), `[u8; 3]` (2) or bytes (3); bits 2-4: template capacity log2; bits 5-6: messages in it; bit 7: byte limit 29 instead of 5 |
//! | 1 | final size: below 160 as written, else one of [`size_choice`] |
//! | 2 | open options: bit 0 init timeout 1 ms; bit 1 `OpenOrCreate`; bit 1 or 2 ask for a capacity, bits 3-5 its log2; bit 6 allow foreign owner |
//! | rest | raw mode: the object's bytes. Template mode: records `sel, [offset u16,] value u64`: `sel` bits 0-1 width 1/2/4/8, bit 2 an explicit offset follows (else bits 3-7 pick a field of [`off::FIELDS`](super::off::FIELDS)) |

use super::{Input, ShmGuard, off};
use shmchan::{
    ByteReceiver, ByteSendError, ByteSender, CreateMode, OpenError, Options, Pod, Receiver,
    RecvTimeoutError, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Largest segment shmchan accepts (`MAX_TOTAL` in src/layout.rs).
const MAX_TOTAL: u64 = 1 << 36;

/// At most this many field overwrites per input.
const MAX_RECORDS: usize = 64;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let base = input.u8();
    let size_sel = input.u8();
    let how = input.u8();

    let mut content = match base & 3 {
        0 => input.rest().to_vec(),
        kind => {
            let mut bytes = template(kind, (base >> 2) & 7, (base >> 5) & 3, base & 0x80 != 0);
            mutate(&mut bytes, &mut input);
            bytes
        }
    };
    let size = size_choice(size_sel, content.len() as u64);
    if size < content.len() as u64 {
        content.truncate(size as usize);
    }

    let guard = ShmGuard::fresh("attach");
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(guard.path())
            .expect("create object in /dev/shm");
        file.write_all(&content).expect("write object");
        file.set_len(size).expect("size object (sparse)");
    }

    let mut opts = Options::new().init_timeout(if how & 1 != 0 {
        Duration::from_millis(1)
    } else {
        Duration::ZERO
    });
    if how & 2 != 0 {
        opts = opts.mode(CreateMode::OpenOrCreate);
    }
    // OpenOrCreate needs a capacity even when the object exists (else `InvalidOption`).
    if how & 6 != 0 {
        opts = opts.capacity(1usize << ((how >> 3) & 7));
    }
    if how & 0x40 != 0 {
        opts = opts.allow_foreign_owner(true);
    }

    let name = guard.name.as_str();
    typed::<u64>(name, &opts, |i| u64::from(i) * 0x0101_0101_0101_0101);
    typed::<[u8; 3]>(name, &opts, |i| [i; 3]);
    bytes(name, &opts);

    // Failed (or successful) opens never remove, shrink or grow someone's object.
    let meta = std::fs::metadata(guard.path()).expect("object still exists");
    assert_eq!(meta.len(), size, "object resized by an open");
}

/// The object's final size for selector `sel`, given `len` bytes written.
pub fn size_choice(sel: u8, len: u64) -> u64 {
    match sel {
        0..=159 => len,
        160..=175 => len.saturating_sub(1 + (sel - 160) as u64),
        176..=191 => len + 1 + (sel - 176) as u64,
        192..=199 => len.saturating_sub(4096 * (1 + (sel - 192) as u64)),
        200..=207 => len + 4096 * (1 + (sel - 200) as u64),
        _ => [
            0,
            1,
            8,
            64,
            127,
            128,
            4095,
            4096,
            4097,
            8192,
            12288,
            65536,
            1 << 20,
            1 << 30,
            MAX_TOTAL,
            MAX_TOTAL + 1,
            MAX_TOTAL + 4096,
            1 << 40,
        ][(sel - 208) as usize % 18],
    }
}

/// Applies the overwrite records of the rest of `input` to `bytes`.
fn mutate(bytes: &mut [u8], input: &mut Input<'_>) {
    if bytes.is_empty() {
        return;
    }
    for _ in 0..MAX_RECORDS {
        if input.is_empty() {
            break;
        }
        let sel = input.u8();
        let width = 1usize << (sel & 3);
        let offset = if sel & 4 != 0 {
            input.u16() as usize % bytes.len()
        } else {
            off::FIELDS[(sel >> 3) as usize % off::FIELDS.len()] as usize
        };
        let value = input.u64().to_le_bytes();
        let end = (offset + width).min(bytes.len());
        if offset < end {
            bytes[offset..end].copy_from_slice(&value[..end - offset]);
        }
    }
}

/// The bytes of a real channel: kind 1 `u64`, 2 `[u8; 3]`, 3 bytes (limit 5, or 29
/// if `long`), with `1 << cap_log2` slots and up to `fill` messages sent. Made once
/// per process and cached. Its handles are gone (peer entries vacated).
fn template(kind: u8, cap_log2: u8, fill: u8, long: bool) -> Vec<u8> {
    type Cache = Mutex<HashMap<(u8, u8, u8, bool), Vec<u8>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let key = (kind, cap_log2, fill, long);
    let cache = CACHE.get_or_init(Default::default);
    if let Some(t) = cache.lock().unwrap().get(&key) {
        return t.clone();
    }
    let guard = ShmGuard::fresh("tpl");
    let cap = 1usize << cap_log2;
    let n = (fill as usize).min(cap) as u64;
    let opts = Options::new()
        .capacity(cap)
        .mode(CreateMode::CreateExclusive)
        .keep(true);
    match kind {
        1 => {
            let tx = Sender::<u64>::with_options(&guard.name, &opts).expect("template u64");
            for i in 0..n {
                tx.try_send(0x5eed_0000 + i).expect("template send");
            }
        }
        2 => {
            let tx = Sender::<[u8; 3]>::with_options(&guard.name, &opts).expect("template [u8; 3]");
            for i in 0..n {
                tx.try_send([i as u8, 0xab, 0xcd]).expect("template send");
            }
        }
        _ => {
            let max = if long { 29 } else { 5 };
            let tx = ByteSender::with_options(&guard.name, &opts, max).expect("template bytes");
            for i in 0..n {
                tx.try_send(&b"abcdefghijklmnopqrstuvwxyz0123"[..(i as usize * 3).min(max)])
                    .expect("template send");
            }
        }
    }
    let bytes = std::fs::read(guard.path()).expect("read template");
    cache.lock().unwrap().insert(key, bytes.clone());
    bytes
}

/// Checks that an open of an existing object failed for a reason that can happen.
fn check_open_error(e: &OpenError) {
    // Display must work for every variant.
    let _ = e.to_string();
    assert!(
        !matches!(
            e,
            OpenError::InvalidName { .. }
                | OpenError::NotFound(_)
                | OpenError::AlreadyExists(_)
                | OpenError::PermissionDenied(_)
                | OpenError::ForeignOwner { .. }
                | OpenError::InvalidCapacity(_)
                | OpenError::InvalidOption(_)
        ),
        "unexpected error opening an existing object: {e:?}"
    );
}

/// Opens a receiver and a sender of `T`; exercises whichever opened.
fn typed<T: Pod>(name: &str, opts: &Options, filled: fn(u8) -> T) {
    let mut rx = match Receiver::<T>::with_options(name, opts) {
        Ok(rx) => Some(rx),
        Err(e) => {
            check_open_error(&e);
            None
        }
    };
    let mut tx = match Sender::<T>::with_options(name, opts) {
        Ok(tx) => Some(tx),
        Err(e) => {
            check_open_error(&e);
            None
        }
    };
    if let Some(tx) = tx.as_mut() {
        let cap = tx.capacity();
        assert!(cap.is_power_of_two() && cap <= 1 << 30);
        for i in 0..3u8 {
            assert!(tx.len() <= cap);
            match tx.try_send(filled(i)) {
                Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
        match tx.try_send_batch(&[filled(7); 5]) {
            Ok(n) => assert!((1..=5).contains(&n)),
            Err(TrySendError::Full(()) | TrySendError::Disconnected(())) => {}
        }
        if let Ok(mut slot) = tx.try_loan() {
            *slot = filled(9);
            slot.commit();
        }
        match tx.send_timeout(filled(3), Duration::ZERO) {
            Ok(()) | Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => {}
        }
        assert!(tx.len() <= cap);
        let _ = tx.is_disconnected();
        assert!(!tx.owns_name());
    }
    if let Some(rx) = rx.as_mut() {
        let cap = rx.capacity();
        assert!(cap.is_power_of_two() && cap <= 1 << 30);
        for _ in 0..3 {
            assert!(rx.len() <= cap);
            match rx.try_recv() {
                Ok(_) | Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
        }
        let mut buf = [T::zeroed(); 4];
        match rx.try_recv_batch(&mut buf) {
            Ok(n) => assert!((1..=4).contains(&n)),
            Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        }
        if let Ok(r) = rx.try_recv_ref() {
            let _ = std::hint::black_box(*r);
        }
        match rx.recv_timeout(Duration::ZERO) {
            Ok(_) | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        assert!(rx.len() <= cap);
        assert_eq!(rx.is_full(), rx.len() == cap);
        let _ = rx.is_disconnected();
    }
    // The receiver leaves first; a sender still attached carries on or sees it gone.
    drop(rx);
    if let Some(tx) = tx {
        match tx.try_send(filled(1)) {
            Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Opens a byte receiver and a byte sender; exercises whichever opened.
fn bytes(name: &str, opts: &Options) {
    let mut rx = match ByteReceiver::with_options(name, opts, 8) {
        Ok(rx) => Some(rx),
        Err(e) => {
            check_open_error(&e);
            None
        }
    };
    let mut tx = match ByteSender::with_options(name, opts, 8) {
        Ok(tx) => Some(tx),
        Err(e) => {
            check_open_error(&e);
            None
        }
    };
    if let Some(tx) = tx.as_mut() {
        let (cap, max) = (tx.capacity(), tx.max_len());
        assert!(cap.is_power_of_two() && cap <= 1 << 30);
        for len in [0usize, 1, 5, 29, 30, 4096] {
            match tx.try_send(&vec![len as u8; len]) {
                Ok(()) => assert!(len <= max),
                Err(ByteSendError::TooLong(t)) => assert!(len > max && t.len == len),
                Err(ByteSendError::Full | ByteSendError::Disconnected) => assert!(len <= max),
                Err(e) => panic!("try_send: {e:?}"),
            }
        }
        if let Ok(mut slot) = tx.try_loan(max.min(3)) {
            slot.fill(0x5a);
            slot.commit();
        }
        assert!(tx.len() <= cap);
    }
    if let Some(rx) = rx.as_mut() {
        let (cap, max) = (rx.capacity(), rx.max_len());
        assert!(cap.is_power_of_two() && cap <= 1 << 30);
        let mut buf = vec![0xee; 7];
        for _ in 0..3 {
            match rx.try_recv() {
                Ok(m) => assert!(m.len() <= max),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
            }
            if let Ok(n) = rx.try_recv_into(&mut buf) {
                assert!(n <= max && n == buf.len());
            }
        }
        if let Ok(r) = rx.try_recv_ref() {
            assert!(r.len() <= max);
        }
        assert!(rx.len() <= cap);
    }
}
