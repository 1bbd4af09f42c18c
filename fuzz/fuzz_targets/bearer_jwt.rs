//! `cargo fuzz run bearer_jwt` (or `bash bench/fuzz.sh SECONDS bearer_jwt`): the input format and the
//! invariants are documented on `tessera::fuzzing::bearer_jwt`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::bearer_jwt(data);
});
