//! `cargo fuzz run control_request`: see herdsman::fuzzing::control_request for what it checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herdsman::fuzzing::control_request(data));
