//! libFuzzer entry point of the `hostile` target; the logic is in `fuzz/src/hostile.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shmchan_fuzz::hostile::run(data));
