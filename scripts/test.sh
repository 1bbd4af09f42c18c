#!/usr/bin/env bash
# The whole test suite: lints, unit tests, the black-box integration tests and the headless
# Chromium tests, on SQLite and — when TESSERA_TEST_POSTGRES_URL is set — on PostgreSQL too
# (TESSERA_TEST_REDIS_URL adds the shared Redis limiter). One build serves everything: the
# browser tests drive the debug binary that `cargo test` builds. scripts/browser-tests.sh
# installs Chromium (Debian package) and the npm packages when they are missing.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== formatting"
cargo fmt --all -- --check

echo "== clippy"
cargo clippy --locked --all-targets -- -D warnings

echo "== tests"
if [ -z "${TESSERA_TEST_POSTGRES_URL:-}" ]; then
  echo "note: TESSERA_TEST_POSTGRES_URL is not set; PostgreSQL cases will be skipped"
fi
cargo test --locked --all-targets

echo "== browser tests"
bash scripts/browser-tests.sh
