#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| public_key_identity::fuzzing::httpkey_url(data));
