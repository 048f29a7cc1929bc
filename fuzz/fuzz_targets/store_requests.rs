//! `cargo fuzz run store_requests`: see herdsman::fuzzing::store_requests for what it checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herdsman::fuzzing::store_requests(data));
