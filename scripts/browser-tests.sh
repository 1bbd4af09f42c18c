#!/usr/bin/env bash
# The browser tests: Tessera's pages in headless Chromium (tests/browser), on SQLite and — when
# TESSERA_TEST_POSTGRES_URL is set — on PostgreSQL too. Installs Debian's chromium when missing
# and the suite's npm packages when their lock changed. Does not build Tessera: it tests the
# binary at $TESSERA_BIN, else ${CARGO_TARGET_DIR:-target}/debug/tessera (made by cargo test).
# Screenshots go to test-output/browser/<backend>/.
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${TESSERA_BIN:-${CARGO_TARGET_DIR:-target}/debug/tessera}"
if [ ! -x "$bin" ]; then
  echo "browser tests: no Tessera binary at $bin (run cargo test first, or set TESSERA_BIN)" >&2
  exit 1
fi
export TESSERA_BIN="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium >/dev/null
fi

cd tests/browser
stamp=node_modules/.package-lock.sha256
if [ ! -f "$stamp" ] || ! sha256sum --quiet --check "$stamp" >/dev/null 2>&1; then
  echo "== npm ci (tests/browser)"
  npm ci --no-audit --no-fund --loglevel=error
  sha256sum package-lock.json >"$stamp"
fi

echo "== browser tests"
exec node --test --test-reporter=tap --test-concurrency=1 ./*.test.mjs
