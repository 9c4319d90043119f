//! libFuzzer target `api_body`: `switchboard::fuzzing::api_body` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::api_body(data));
