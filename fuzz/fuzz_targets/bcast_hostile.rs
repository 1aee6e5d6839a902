//! libFuzzer entry point of the `bcast_hostile` target; the logic is in `fuzz/src/bcast.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shmchan_fuzz::bcast::hostile(data));
