#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| couch_sync::fuzzing::document(data));
