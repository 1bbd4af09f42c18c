//! The one integration-test binary: Tessera driven from the outside, over HTTP and through
//! its CLI, on SQLite and (when `TESSERA_TEST_POSTGRES_URL` is set) PostgreSQL.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod helpers;

mod accounts;
mod faults;
mod foundation;
mod fuzz_corpus;
mod hostile;
mod logs;
mod mirror;
mod oauth;
mod upstream;
