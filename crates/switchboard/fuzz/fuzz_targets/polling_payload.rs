//! libFuzzer target `polling_payload`: `switchboard::fuzzing::polling_payload` (see src/fuzzing.rs).
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard::fuzzing::polling_payload(data));
