//! libFuzzer target `polling_payload_v3`: `switchboard::fuzzing::polling_payload_v3` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::polling_payload_v3(data));
