//! libFuzzer target `msgpack_packet`: `switchboard::fuzzing::msgpack_packet` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::msgpack_packet(data));
