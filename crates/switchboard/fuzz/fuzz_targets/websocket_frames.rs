//! libFuzzer target `websocket_frames`: `switchboard::fuzzing::websocket_frames` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::websocket_frames(data));
