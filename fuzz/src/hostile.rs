//! Target `hostile`: a channel whose segment a hostile peer scribbles on while its
//! sender and receiver work.
//!
//! A typed (`u64` or `[u8; 3]`) or byte channel of 1 to 64 slots is created, and
//! the input interleaves calls on its handles with writes into its object through
//! `/dev/shm/<name>` (`pwrite`, which lands in the same pages as the handles'
//! mappings): the positions `tail` (offset 128) and `head` (256), slot sequence words,
//! byte-length words and payloads (offsets from 4096), wait words, the peer table, or
//! any byte at all, followed by drops and re-attaches of either handle.
//!
//! Nothing read from the segment is trusted by shmchan, so: no call panics, crashes or
//! hangs; every call returns `Ok` or one of its documented errors; `len()` never
//! exceeds `capacity()`; a byte message is never longer than `max_len()`; batches
//! stay within the asked count; and every zero-copy reference handed out (`try_loan`,
//! `try_recv_ref`) lies exactly on the payload of one slot of a live mapping of the
//! object (checked against `/proc/self/maps`). Run under AddressSanitizer by
//! `cargo fuzz`.
//!
//! # Input
//!
//! | byte | meaning |
//! | --- | --- |
//! | 0 | bits 0-1: `u64`, `[u8; 3]`, bytes (3 = bytes); bits 2-4: capacity log2 (mod 7) |
//! | 1 | byte channels only: the length limit (0 to 255) |
//! | rest | steps: one byte (mod 16, see [`step`]) and its arguments |

use super::{Input, ShmGuard, off, peek_u32, peek_u64, poke};
use shmchan::{
    ByteReceiver, ByteSendError, ByteSender, CreateMode, OpenError, Options, Pod, Receiver,
    RecvTimeoutError, SendTimeoutError, Sender, TryRecvError, TrySendError,
};
use std::fs::File;
use std::time::{Duration, Instant};

/// At most this many steps per input.
const MAX_STEPS: usize = 2048;

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.u8();
    let cap = 1usize << (((cfg >> 2) & 7) % 7);
    let guard = ShmGuard::fresh("hostile");
    let create = Options::new()
        .capacity(cap)
        .mode(CreateMode::CreateExclusive)
        .keep(true);
    match cfg & 3 {
        0 => Typed::<u64>::new(&guard, &create, |i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .run(&mut input),
        1 => Typed::<[u8; 3]>::new(&guard, &create, |i| [i as u8, (i >> 8) as u8, 0xab])
            .run(&mut input),
        _ => {
            let max = input.u8() as usize;
            Bytes::new(&guard, &create, max).run(&mut input)
        }
    }
}

fn open_opts() -> Options {
    Options::new().init_timeout(Duration::ZERO)
}

/// Checks a failed re-attach: the segment may say anything, but the name is ours.
pub(super) fn check_open_error(e: &OpenError) {
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
        "unexpected error re-attaching: {e:?}"
    );
}

/// Where a handle's slots are: its capacity, and the slot size and payload offset the
/// header held when it attached (the opener validated them against its own geometry,
/// and it keeps its copy whatever the header says later).
#[derive(Debug, Clone, Copy)]
struct SlotGeo {
    cap: usize,
    slot_size: usize,
    payload_offset: usize,
}

impl SlotGeo {
    /// Reads the geometry fields now; call right after a successful attach.
    fn of(file: &File, cap: usize) -> SlotGeo {
        SlotGeo {
            cap,
            slot_size: peek_u64(file, off::SLOT_SIZE) as usize,
            payload_offset: peek_u32(file, off::PAYLOAD_OFFSET) as usize,
        }
    }
}

/// The hostile peer: the object opened read-write, and the live mappings of it.
pub(super) struct Peer {
    pub(super) file: File,
    pub(super) len: u64,
    /// Capacity and slot size the segment was created with (for aiming writes).
    pub(super) cap: u64,
    slot_size: u64,
    path: String,
    maps: Vec<(usize, usize)>,
    maps_stale: bool,
}

impl Peer {
    pub(super) fn new(guard: &ShmGuard) -> Peer {
        let path = guard.path();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .expect("open object read-write");
        let len = file.metadata().expect("fstat").len();
        let cap = peek_u64(&file, off::CAPACITY).max(1);
        let slot_size = peek_u64(&file, off::SLOT_SIZE).max(4);
        Peer {
            file,
            len,
            cap,
            slot_size,
            path: path.to_string_lossy().into_owned(),
            maps: Vec::new(),
            maps_stale: true,
        }
    }

    pub(super) fn slot(&self, idx: u64) -> u64 {
        off::SLOTS + (idx % self.cap) * self.slot_size
    }

    /// One write, as the input says.
    pub(super) fn scribble(&self, input: &mut Input<'_>) {
        let f = &self.file;
        let w64 = |offset: u64, v: u64| poke(f, self.len, offset, &v.to_le_bytes());
        let w32 = |offset: u64, v: u32| poke(f, self.len, offset, &v.to_le_bytes());
        // A value near a live position: garbage that looks plausible.
        let near = |input: &mut Input<'_>| {
            let base = if input.u8() & 1 == 0 {
                peek_u64(f, off::TAIL)
            } else {
                peek_u64(f, off::HEAD)
            };
            base.wrapping_add((input.u8() as i8) as u64)
        };
        match input.u8() % 10 {
            0 => {
                let v = if input.u8() & 1 == 0 {
                    input.u64()
                } else {
                    near(input)
                };
                w64(off::TAIL, v);
            }
            1 => {
                let v = if input.u8() & 1 == 0 {
                    input.u64()
                } else {
                    near(input)
                };
                w64(off::HEAD, v);
            }
            2 => {
                let idx = input.u16() as u64;
                w32(self.slot(idx), input.u32());
            }
            3 => {
                // Mark the slot of a position near head/tail "published" for it.
                let pos = near(input);
                w32(self.slot(pos), pos.wrapping_add(1) as u32);
            }
            4 => {
                let idx = input.u16() as u64;
                w32(self.slot(idx) + 4, input.u32());
            }
            5 => {
                let idx = input.u16() as u64;
                let at = input.u8() as u64 % self.slot_size;
                let n = input.u8() as usize % 17;
                poke(f, self.len, self.slot(idx) + at, input.bytes(n));
            }
            6 => {
                let at = [off::NOT_EMPTY, off::NOT_FULL][input.u8() as usize & 1];
                w32(at + 4 * (input.u8() as u64 % 3), input.u32());
            }
            7 => {
                let at = off::PEERS + 8 * (input.u8() as u64 % 4);
                w64(at, input.u64());
            }
            8 => {
                let at = off::FIELDS[input.u8() as usize % off::FIELDS.len()];
                w64(at, input.u64());
            }
            _ => {
                let at = input.u32() as u64 % self.len;
                let n = 1 + input.u8() as usize % 8;
                poke(f, self.len, at, input.bytes(n));
            }
        }
    }

    /// Re-reads the mappings of the object from `/proc/self/maps` if handles changed.
    fn refresh_maps(&mut self) {
        if !self.maps_stale {
            return;
        }
        self.maps_stale = false;
        self.maps.clear();
        let text = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
        for line in text.lines() {
            // start-end perms offset dev inode path
            let mut fields = line.splitn(6, ' ');
            let range = fields.next().unwrap_or("");
            let path = fields.nth(4).unwrap_or("").trim_start();
            let path = path.strip_suffix(" (deleted)").unwrap_or(path);
            if path != self.path {
                continue;
            }
            if let Some((a, b)) = range.split_once('-') {
                let a = usize::from_str_radix(a, 16).expect("maps start");
                let b = usize::from_str_radix(b, 16).expect("maps end");
                self.maps.push((a, b));
            }
        }
    }

    /// Asserts that `len` bytes at `ptr` are the payload of one slot of a mapping of
    /// the object, for a handle whose slots are laid out as `geo` says.
    fn assert_in_slot(&mut self, ptr: *const u8, len: usize, geo: SlotGeo, what: &str) {
        self.refresh_maps();
        let p = ptr as usize;
        let ok = self.maps.iter().any(|&(start, end)| {
            // Payload of slot 0 (for a zero-byte limit, that is where slot 1 begins).
            let first = start + off::SLOTS as usize + geo.payload_offset;
            if p < first || p > end {
                return false;
            }
            let rel = p - first;
            rel % geo.slot_size == 0
                && rel / geo.slot_size < geo.cap
                && len <= geo.slot_size - geo.payload_offset
                && p + len <= end
        });
        assert!(
            ok,
            "{what}: {len} bytes at {p:#x} are not a slot payload of {:x?} ({geo:?})",
            self.maps
        );
    }
}

/// A typed channel under attack.
struct Typed<'g, T: Pod> {
    guard: &'g ShmGuard,
    tx: Option<Sender<T>>,
    rx: Option<Receiver<T>>,
    peer: Peer,
    /// Slot layout of the current sender and receiver.
    tx_geo: SlotGeo,
    rx_geo: SlotGeo,
    make: fn(u64) -> T,
    next: u64,
}

impl<'g, T: Pod> Typed<'g, T> {
    fn new(guard: &'g ShmGuard, create: &Options, make: fn(u64) -> T) -> Typed<'g, T> {
        let tx = Sender::<T>::with_options(&guard.name, create).expect("create");
        let rx = Receiver::<T>::with_options(&guard.name, &open_opts()).expect("open");
        let peer = Peer::new(guard);
        let geo = SlotGeo::of(&peer.file, tx.capacity());
        Typed {
            guard,
            tx: Some(tx),
            rx: Some(rx),
            peer,
            tx_geo: geo,
            rx_geo: geo,
            make,
            next: 0,
        }
    }

    fn value(&mut self) -> T {
        self.next += 1;
        (self.make)(self.next)
    }

    fn run(mut self, input: &mut Input<'_>) {
        for _ in 0..MAX_STEPS {
            if input.is_empty() {
                break;
            }
            self.step(input);
            self.check();
        }
    }

    fn check(&self) {
        if let Some(tx) = &self.tx {
            assert!(tx.len() <= tx.capacity());
            assert_eq!(tx.is_full(), tx.len() == tx.capacity());
        }
        if let Some(rx) = &self.rx {
            assert!(rx.len() <= rx.capacity());
            assert_eq!(rx.is_full(), rx.len() == rx.capacity());
        }
    }

    /// Steps (byte mod 16): 0-4 a scribble, 5 `try_send`, 6 `try_loan` then commit or
    /// drop, 7 `try_send_batch(k)`, 8 `send_timeout(0)`, 9 `try_recv`,
    /// 10 `try_recv_ref`, 11 `try_recv_batch(k)`, 12 `recv_timeout(0)` or
    /// `try_iter().take(k)`, 13 re-attach the receiver, 14 re-attach the sender,
    /// 15 drop a handle, or `is_disconnected`.
    fn step(&mut self, input: &mut Input<'_>) {
        match input.u8() % 16 {
            0..=4 => self.peer.scribble(input),
            5 => {
                let v = self.value();
                if let Some(tx) = &self.tx {
                    match tx.try_send(v) {
                        Ok(()) | Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
                    }
                }
            }
            6 => {
                let v = self.value();
                let commit = input.u8() & 1 == 0;
                if let Some(tx) = &mut self.tx {
                    let geo = self.tx_geo;
                    if let Ok(mut slot) = tx.try_loan() {
                        let p = &*slot as *const T as *const u8;
                        self.peer
                            .assert_in_slot(p, size_of::<T>(), geo, "Sender::try_loan");
                        *slot = v;
                        if commit {
                            slot.commit();
                        }
                    }
                }
            }
            7 => {
                let k = input.u8() as usize % 70;
                let msgs: Vec<T> = (0..k).map(|_| self.value()).collect();
                if let Some(tx) = &self.tx {
                    match tx.try_send_batch(&msgs) {
                        Ok(n) => assert!(n <= k && (n >= 1 || k == 0)),
                        Err(TrySendError::Full(()) | TrySendError::Disconnected(())) => {}
                    }
                }
            }
            8 => {
                let v = self.value();
                if let Some(tx) = &self.tx {
                    match tx.send_timeout(v, Duration::ZERO) {
                        Ok(())
                        | Err(SendTimeoutError::Timeout(_) | SendTimeoutError::Disconnected(_)) => {
                        }
                    }
                }
            }
            9 => {
                if let Some(rx) = &self.rx {
                    match rx.try_recv() {
                        Ok(_) | Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                    }
                }
            }
            10 => {
                if let Some(rx) = &mut self.rx {
                    let geo = self.rx_geo;
                    if let Ok(r) = rx.try_recv_ref() {
                        let p = &*r as *const T as *const u8;
                        self.peer
                            .assert_in_slot(p, size_of::<T>(), geo, "Receiver::try_recv_ref");
                        std::hint::black_box(*r);
                    }
                }
            }
            11 => {
                let k = input.u8() as usize % 70;
                if let Some(rx) = &self.rx {
                    let mut out = vec![T::zeroed(); k];
                    match rx.try_recv_batch(&mut out) {
                        Ok(n) => assert!(n <= k && (n >= 1 || k == 0)),
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                    }
                }
            }
            12 => {
                let k = input.u8();
                if let Some(rx) = &self.rx {
                    if k & 1 == 0 {
                        match rx.recv_timeout(Duration::ZERO) {
                            Ok(_)
                            | Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                        }
                    } else {
                        let k = k as usize / 2;
                        assert!(rx.try_iter().take(k).count() <= k);
                    }
                }
            }
            13 => {
                drop(self.rx.take());
                match Receiver::<T>::with_options(&self.guard.name, &open_opts()) {
                    Ok(rx) => {
                        self.rx_geo = SlotGeo::of(&self.peer.file, rx.capacity());
                        self.rx = Some(rx);
                    }
                    Err(e) => check_open_error(&e),
                }
                self.peer.maps_stale = true;
            }
            14 => {
                drop(self.tx.take());
                match Sender::<T>::with_options(&self.guard.name, &open_opts()) {
                    Ok(tx) => {
                        self.tx_geo = SlotGeo::of(&self.peer.file, tx.capacity());
                        self.tx = Some(tx);
                    }
                    Err(e) => check_open_error(&e),
                }
                self.peer.maps_stale = true;
            }
            _ => match input.u8() % 3 {
                0 => {
                    drop(self.rx.take());
                    self.peer.maps_stale = true;
                }
                1 => {
                    drop(self.tx.take());
                    self.peer.maps_stale = true;
                }
                _ => {
                    let _ = self.tx.as_ref().map(|t| t.is_disconnected());
                    let _ = self.rx.as_ref().map(|r| r.is_disconnected());
                }
            },
        }
    }
}

/// A byte channel under attack.
struct Bytes<'g> {
    guard: &'g ShmGuard,
    tx: Option<ByteSender>,
    rx: Option<ByteReceiver>,
    peer: Peer,
    /// Slot layout of the current sender and receiver.
    tx_geo: SlotGeo,
    rx_geo: SlotGeo,
    next: u8,
    buf: Vec<u8>,
}

impl<'g> Bytes<'g> {
    fn new(guard: &'g ShmGuard, create: &Options, max: usize) -> Bytes<'g> {
        let tx = ByteSender::with_options(&guard.name, create, max).expect("create");
        let rx = ByteReceiver::with_options(&guard.name, &open_opts(), 0).expect("open");
        let peer = Peer::new(guard);
        let geo = SlotGeo::of(&peer.file, tx.capacity());
        Bytes {
            guard,
            tx: Some(tx),
            rx: Some(rx),
            peer,
            tx_geo: geo,
            rx_geo: geo,
            next: 0,
            buf: vec![0xee; 5],
        }
    }

    fn msg(&mut self, len: usize) -> Vec<u8> {
        self.next = self.next.wrapping_add(1);
        vec![self.next; len]
    }

    fn run(mut self, input: &mut Input<'_>) {
        for _ in 0..MAX_STEPS {
            if input.is_empty() {
                break;
            }
            self.step(input);
            self.check();
        }
    }

    fn check(&self) {
        if let Some(tx) = &self.tx {
            assert!(tx.len() <= tx.capacity());
        }
        if let Some(rx) = &self.rx {
            assert!(rx.len() <= rx.capacity());
        }
    }

    /// Checks a send's outcome for a message of `len` bytes.
    fn check_send(r: Result<(), ByteSendError>, len: usize, max: usize, timed: bool) {
        match r {
            Ok(()) => assert!(len <= max),
            Err(ByteSendError::TooLong(t)) => assert!(len > max && t.len == len && t.max == max),
            Err(ByteSendError::Full) => assert!(len <= max && !timed),
            Err(ByteSendError::Timeout) => assert!(len <= max && timed),
            Err(ByteSendError::Disconnected) => assert!(len <= max),
            Err(e) => panic!("unexpected send error {e:?}"),
        }
    }

    /// Steps (byte mod 16): 0-4 a scribble, 5 `try_send(len)`, 6 `try_loan(len)` then
    /// commit or drop, 7 `send_timeout(len, 0)`, 8 `try_recv`, 9 `try_recv_into`,
    /// 10 `try_recv_ref`, 11 `recv_timeout(0)` or `recv_into_deadline(now)`,
    /// 12 re-attach the receiver, 13 re-attach the sender, 14 drop a handle,
    /// 15 `is_disconnected`.
    fn step(&mut self, input: &mut Input<'_>) {
        let op = input.u8() % 16;
        let len = match op {
            5..=7 => input.u8() as usize + input.u8() as usize,
            _ => 0,
        };
        match op {
            0..=4 => self.peer.scribble(input),
            5 => {
                let msg = self.msg(len);
                if let Some(tx) = &self.tx {
                    Self::check_send(tx.try_send(&msg), len, tx.max_len(), false);
                }
            }
            6 => {
                let commit = input.u8() & 1 == 0;
                if let Some(tx) = &mut self.tx {
                    let max = tx.max_len();
                    let geo = self.tx_geo;
                    match tx.try_loan(len) {
                        Ok(mut slot) => {
                            assert!(len <= max && slot.len() == len);
                            self.peer.assert_in_slot(
                                slot.as_ptr(),
                                len,
                                geo,
                                "ByteSender::try_loan",
                            );
                            slot.fill(0x77);
                            if commit {
                                slot.commit();
                            }
                        }
                        Err(e) => Self::check_send(Err(e), len, max, false),
                    }
                }
            }
            7 => {
                let msg = self.msg(len);
                if let Some(tx) = &self.tx {
                    let r = tx.send_timeout(&msg, Duration::ZERO);
                    Self::check_send(r, len, tx.max_len(), true);
                }
            }
            8 => {
                if let Some(rx) = &self.rx {
                    match rx.try_recv() {
                        Ok(m) => assert!(m.len() <= rx.max_len()),
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
                    }
                }
            }
            9 => {
                let Some(rx) = &self.rx else { return };
                if let Ok(n) = rx.try_recv_into(&mut self.buf) {
                    assert!(n <= rx.max_len() && n == self.buf.len());
                }
            }
            10 => {
                if let Some(rx) = &mut self.rx {
                    let max = rx.max_len();
                    let geo = self.rx_geo;
                    if let Ok(r) = rx.try_recv_ref() {
                        assert!(r.len() <= max);
                        self.peer.assert_in_slot(
                            r.as_ptr(),
                            r.len(),
                            geo,
                            "ByteReceiver::try_recv_ref",
                        );
                        std::hint::black_box(r.iter().map(|&b| b as u32).sum::<u32>());
                    }
                }
            }
            11 => {
                let timed = input.u8() & 1 == 0;
                if let Some(rx) = &self.rx {
                    let r = if timed {
                        rx.recv_timeout(Duration::ZERO).map(|m| m.len())
                    } else {
                        rx.recv_into_deadline(&mut self.buf, Instant::now())
                    };
                    match r {
                        Ok(n) => assert!(n <= rx.max_len()),
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                    }
                }
            }
            12 => {
                drop(self.rx.take());
                match ByteReceiver::with_options(&self.guard.name, &open_opts(), 0) {
                    Ok(rx) => {
                        self.rx_geo = SlotGeo::of(&self.peer.file, rx.capacity());
                        self.rx = Some(rx);
                    }
                    Err(e) => check_open_error(&e),
                }
                self.peer.maps_stale = true;
            }
            13 => {
                drop(self.tx.take());
                match ByteSender::with_options(&self.guard.name, &open_opts(), 0) {
                    Ok(tx) => {
                        self.tx_geo = SlotGeo::of(&self.peer.file, tx.capacity());
                        self.tx = Some(tx);
                    }
                    Err(e) => check_open_error(&e),
                }
                self.peer.maps_stale = true;
            }
            14 => {
                if input.u8() & 1 == 0 {
                    drop(self.rx.take());
                } else {
                    drop(self.tx.take());
                }
                self.peer.maps_stale = true;
            }
            _ => {
                let _ = self.tx.as_ref().map(|t| t.is_disconnected());
                let _ = self.rx.as_ref().map(|r| r.is_disconnected());
            }
        }
    }
}
