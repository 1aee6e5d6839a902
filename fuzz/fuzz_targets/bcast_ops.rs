//! libFuzzer entry point of the `bcast_ops` target; the logic is in `fuzz/src/bcast.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shmchan_fuzz::bcast::ops(data));
