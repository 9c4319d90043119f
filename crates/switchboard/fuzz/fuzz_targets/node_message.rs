//! libFuzzer target `node_message`: `switchboard::fuzzing::node_message` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::node_message(data));
