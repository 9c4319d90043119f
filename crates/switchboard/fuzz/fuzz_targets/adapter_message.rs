//! libFuzzer target `adapter_message`: `switchboard::fuzzing::adapter_message` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::adapter_message(data));
