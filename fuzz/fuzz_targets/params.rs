//! `cargo fuzz run params` (or `bash bench/fuzz.sh SECONDS params`): the input format and the
//! invariants are documented on `tessera::fuzzing::params`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::params(data);
});
