#!/usr/bin/env bash
# The whole test suite: lints, unit tests and the black-box integration tests, on SQLite and —
# when TESSERA_TEST_POSTGRES_URL is set — on PostgreSQL too. Installs nothing system-wide;
# everything it needs comes with cargo.
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
