//! libFuzzer entry point of the `mpmc_hostile` target; the logic is in `fuzz/src/mpmc.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shmchan_fuzz::mpmc::hostile(data));
