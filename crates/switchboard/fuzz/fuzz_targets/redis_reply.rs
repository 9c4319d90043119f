//! libFuzzer target `redis_reply`: `switchboard::fuzzing::redis_reply` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::redis_reply(data));
