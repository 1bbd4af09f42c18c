//! `cargo fuzz run authorize_request` (or `bash bench/fuzz.sh SECONDS authorize_request`): the input format and the
//! invariants are documented on `tessera::fuzzing::authorize_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::authorize_request(data);
});
