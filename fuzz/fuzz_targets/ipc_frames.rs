//! `cargo fuzz run ipc_frames`: see herdsman::fuzzing::ipc_frames for what it checks.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| herdsman::fuzzing::ipc_frames(data));
