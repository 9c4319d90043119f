//! libFuzzer target `socket_packet`: `switchboard::fuzzing::socket_packet` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::socket_packet(data));
