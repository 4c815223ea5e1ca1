#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| acls_and_groups::fuzzing::policy_json(data));
