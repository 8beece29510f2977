#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| roost::fuzzing::sync_token(data));
