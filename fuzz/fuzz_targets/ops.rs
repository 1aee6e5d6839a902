//! libFuzzer entry point of the `ops` target; the logic is in `fuzz/src/ops.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shmchan_fuzz::ops::run(data));
