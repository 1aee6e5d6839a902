//! libFuzzer entry point of the `attach` target; the logic is in `fuzz/src/attach.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| shmchan_fuzz::attach::run(data));
