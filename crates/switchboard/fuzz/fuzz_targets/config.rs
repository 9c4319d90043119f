//! libFuzzer target `config`: `switchboard::fuzzing::config` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::config(data));
