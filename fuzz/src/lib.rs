//! Fuzz targets for shmchan, as plain functions over `&[u8]`.
//!
//! Each target lives in its own module and depends only on `shmchan` and `std`, so
//! the same code runs in two places:
//!
//! - under libFuzzer, through the thin wrappers in `fuzz/fuzz_targets/*.rs`
//!   (`cargo +nightly fuzz run <target>`);
//! - on stable, in the main crate's `tests/fuzz_corpus.rs`, which includes this file
//!   with `#[path = "../fuzz/src/lib.rs"] mod fuzz;` and replays every file of
//!   `fuzz/corpus/<target>/`.
//!
//! Items are reached through `super::` (never `crate::`) so that both inclusions
//! resolve. Nothing here uses `unsafe`: a "hostile peer" writes into a segment through
//! `pwrite` on `/dev/shm/<name>`, which lands in the same pages as every mapping of it.

pub mod attach;
pub mod bcast;
pub mod hostile;
pub mod mpmc;
pub mod ops;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Directory holding POSIX shared-memory objects on Linux.
pub const SHM_DIR: &str = "/dev/shm";

/// Prefix of every object a target creates.
///
/// Replays (`cargo test`) use a prefix that `.ci/run`'s leftover check watches, so a
/// target that leaks an object fails CI; the fuzzer (`cfg(fuzzing)`), which keeps an
/// object alive most of the time while it runs, uses one that check ignores.
pub const NAME_PREFIX: &str = if cfg!(fuzzing) {
    "fuzzrun"
} else {
    "shmchan-fuzz"
};

/// A name no other process or call uses: prefix, target, pid and a counter.
pub fn unique_name(target: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{NAME_PREFIX}-{target}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of the object behind channel `name`.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(SHM_DIR).join(name)
}

/// Removes `/dev/shm/<name>` on drop, whatever happened to the handles.
#[derive(Debug)]
pub struct ShmGuard {
    /// The channel name.
    pub name: String,
}

impl ShmGuard {
    /// Guards a fresh unique name for `target`.
    pub fn fresh(target: &str) -> ShmGuard {
        ShmGuard {
            name: unique_name(target),
        }
    }

    /// Path of the object.
    pub fn path(&self) -> PathBuf {
        shm_path(&self.name)
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.path());
    }
}

/// Reads the input front to back; past its end every read gives zeros, so any byte
/// string decodes to something.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
}

impl<'a> Input<'a> {
    /// Wraps `data`.
    pub fn new(data: &'a [u8]) -> Input<'a> {
        Input { data }
    }

    /// Whether every byte was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next byte (0 past the end).
    pub fn u8(&mut self) -> u8 {
        match self.data.split_first() {
            Some((&b, rest)) => {
                self.data = rest;
                b
            }
            None => 0,
        }
    }

    /// The next `N` bytes, zero-padded past the end.
    pub fn array<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        for b in &mut out {
            *b = self.u8();
        }
        out
    }

    /// Little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.array())
    }

    /// Little-endian u32.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }

    /// Little-endian u64.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }

    /// Up to `n` bytes (fewer at the end).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.data.split_at(n.min(self.data.len()));
        self.data = rest;
        head
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.data)
    }
}

/// Writes `bytes` at `offset` of the object behind `file`, as another process with a
/// mapping of it could; bytes past the object's end are dropped, so it never grows.
pub fn poke(file: &File, len: u64, offset: u64, bytes: &[u8]) {
    if offset >= len {
        return;
    }
    let n = bytes.len().min((len - offset) as usize);
    file.write_all_at(&bytes[..n], offset)
        .expect("pwrite to /dev/shm");
}

/// Reads a little-endian u64 at `offset` of the object (0 if out of range).
pub fn peek_u64(file: &File, offset: u64) -> u64 {
    let mut b = [0u8; 8];
    match file.read_exact_at(&mut b, offset) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// Reads a little-endian u32 at `offset` of the object (0 if out of range).
pub fn peek_u32(file: &File, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    match file.read_exact_at(&mut b, offset) {
        Ok(()) => u32::from_le_bytes(b),
        Err(_) => 0,
    }
}

/// Offsets in a segment (see `src/layout.rs`; pinned there by compile-time asserts).
pub mod off {
    /// Config line: magic.
    pub const MAGIC: u64 = 0;
    /// Config line: layout version.
    pub const VERSION: u64 = 8;
    /// Config line: flavor.
    pub const FLAVOR: u64 = 12;
    /// Config line: capacity (u64).
    pub const CAPACITY: u64 = 16;
    /// Config line: slot size (u64).
    pub const SLOT_SIZE: u64 = 24;
    /// Config line: message size (u32).
    pub const MSG_SIZE: u64 = 32;
    /// Config line: message alignment (u32).
    pub const MSG_ALIGN: u64 = 36;
    /// Config line: type fingerprint (u64).
    pub const FINGERPRINT: u64 = 40;
    /// Config line: total length (u64).
    pub const TOTAL_LEN: u64 = 48;
    /// Config line: init state (u32).
    pub const INIT_STATE: u64 = 56;
    /// Config line: creator pid (u32).
    pub const CREATOR_PID: u64 = 60;
    /// Config line: creator uid (u32).
    pub const CREATOR_UID: u64 = 64;
    /// Config line: peer table entries in use (u32).
    pub const MAX_PEERS: u64 = 68;
    /// Config line: creation time (u64).
    pub const CREATED_AT: u64 = 72;
    /// Config line: payload offset in a slot (u32).
    pub const PAYLOAD_OFFSET: u64 = 80;
    /// Config line: message kind (u32).
    pub const MSG_KIND: u64 = 84;
    /// Config line: peer generation source (u32).
    pub const PEER_GENERATION: u64 = 88;
    /// Producer position (u64).
    pub const TAIL: u64 = 128;
    /// Consumer position (u64).
    pub const HEAD: u64 = 256;
    /// not_empty wait word: futex word, sleepers, barrier mode (u32 each).
    pub const NOT_EMPTY: u64 = 384;
    /// not_full wait word: futex word, sleepers, barrier mode (u32 each).
    pub const NOT_FULL: u64 = 512;
    /// Attach counters (u32 sender, u32 receiver).
    pub const ATTACH: u64 = 640;
    /// Peer table: entries of 16 bytes (state u64, stamp u64); 0 sender, 1 receiver.
    pub const PEERS: u64 = 1024;
    /// First slot.
    pub const SLOTS: u64 = 4096;

    /// Every named field, for inputs that pick one by index.
    pub const FIELDS: [u64; 35] = [
        MAGIC,
        VERSION,
        FLAVOR,
        CAPACITY,
        SLOT_SIZE,
        MSG_SIZE,
        MSG_ALIGN,
        FINGERPRINT,
        TOTAL_LEN,
        INIT_STATE,
        CREATOR_PID,
        CREATOR_UID,
        MAX_PEERS,
        CREATED_AT,
        PAYLOAD_OFFSET,
        MSG_KIND,
        PEER_GENERATION,
        TAIL,
        HEAD,
        NOT_EMPTY,
        NOT_EMPTY + 4,
        NOT_EMPTY + 8,
        NOT_FULL,
        NOT_FULL + 4,
        NOT_FULL + 8,
        ATTACH,
        ATTACH + 4,
        PEERS,
        PEERS + 8,
        PEERS + 16,
        PEERS + 24,
        SLOTS,
        SLOTS + 4,
        SLOTS + 8,
        SLOTS + 16,
    ];
}
