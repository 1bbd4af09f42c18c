//! `cargo fuzz run config` (or `bash bench/fuzz.sh SECONDS config`): the input format and the
//! invariants are documented on `tessera::fuzzing::config`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::config(data);
});
