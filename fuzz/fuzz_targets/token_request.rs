//! `cargo fuzz run token_request` (or `bash bench/fuzz.sh SECONDS token_request`): the input format and the
//! invariants are documented on `tessera::fuzzing::token_request`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tessera::fuzzing::token_request(data);
});
