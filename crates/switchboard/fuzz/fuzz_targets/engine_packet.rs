//! libFuzzer target `engine_packet`: `switchboard::fuzzing::engine_packet` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::engine_packet(data));
