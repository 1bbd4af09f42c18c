//! The fuzz targets' seed corpus, replayed as regression tests.
//!
//! Every file under `fuzz/seeds/<target>/` goes through `tessera::fuzzing::<target>`, the
//! function the `cargo fuzz` target of that name calls (`bash bench/fuzz.sh` runs them). A
//! crash input that fuzzing finds is added there once the defect is fixed.

use std::path::PathBuf;

/// Feeds every seed of `target` to `run`; panics name the seed that failed.
fn replay(target: &str, run: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    for seed in seeds {
        let bytes = std::fs::read(&seed).unwrap();
        let outcome = std::panic::catch_unwind(|| run(&bytes));
        assert!(
            outcome.is_ok(),
            "seed {} broke an invariant",
            seed.display()
        );
    }
}

#[test]
fn params() {
    replay("params", tessera::fuzzing::params);
}

#[test]
fn authorize_request() {
    replay("authorize_request", tessera::fuzzing::authorize_request);
}

#[test]
fn token_request() {
    replay("token_request", tessera::fuzzing::token_request);
}

#[test]
fn bearer_jwt() {
    replay("bearer_jwt", tessera::fuzzing::bearer_jwt);
}

#[test]
fn config() {
    replay("config", tessera::fuzzing::config);
}
