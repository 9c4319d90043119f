//! libFuzzer target `stream_entry`: `switchboard::fuzzing::stream_entry` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::stream_entry(data));
