#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| public_key_identity::fuzzing::identity_card(data));
