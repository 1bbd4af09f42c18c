#!/usr/bin/env bash
# The benchmark: Tessera on SQLite and on PostgreSQL, side by side in one run with the OpenID
# Certified oidc-provider (on Node 24) and the machine's limits. Every load comes from the
# driver (examples/bench.rs) in a separate process on loopback, bounded in time and requests.
# Results: bench/results/results.jsonl (one JSON object per measurement) and a table on stdout.
#
#   bash bench/run.sh                      # everything, 10 s per measurement, 16 and 64 connections
#   BENCH_SECONDS=5 BENCH_CONNECTIONS="16" bash bench/run.sh
#   BENCH_TARGETS="tessera-sqlite peer" bash bench/run.sh
#
# Needs: PostgreSQL at $BENCH_POSTGRES_URL (default postgres://postgres@127.0.0.1:5432/postgres)
# for the PostgreSQL half; npm for the peer. Nothing is sent beyond 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECONDS:-10}
CONNS=${BENCH_CONNECTIONS:-"16 64"}
TARGETS=${BENCH_TARGETS:-"limits tessera-sqlite tessera-postgres peer"}
PG=${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${BENCH_OUT:-bench/results}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "== building Tessera and the driver (release)"
cargo build --release --locked --bin tessera --example bench
BIN=$(realpath "$CARGO_TARGET_DIR/release/tessera")
DRV=$(realpath "$CARGO_TARGET_DIR/release/examples/bench")
# wrk drives the single-request scenarios: a reqwest-based driver saturates well below what a
# bare axum handler serves, so it would measure itself. The driver keeps the multi-step flows.
if ! command -v wrk >/dev/null; then
  echo "== installing wrk"
  apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
fi
mkdir -p "$OUT"
RESULTS="$OUT/results.jsonl"
: >"$RESULTS"
WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]:-}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 150); do curl -fsS -o /dev/null "$1" && return 0; sleep 0.2; done; echo "not up: $1" >&2; return 1; }
measure() { "$DRV" load --seconds "$SECS" "$@" | tee -a "$RESULTS" || echo "measurement failed: $*" >&2; }
# wrk_measure LABEL URL CONNECTIONS [METHOD BODY BASIC BEARER]
wrk_measure() { local label=$1 url=$2 c=$3; shift 3; python3 bench/wrk.py "$label" "$url" "$c" "$SECS" "$@" | tee -a "$RESULTS" || echo "measurement failed: $label" >&2; }
rss_kb() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }
note_rss() { echo "{\"label\":\"$1 rss\",\"rss_kb\":$(rss_kb "$2")}" | tee -a "$RESULTS"; }

limits() {
  echo "== limits"
  "$DRV" limit rsa --seconds 5 | tee -a "$RESULTS"
  "$DRV" limit argon2 --seconds 5 | tee -a "$RESULTS"
  local port; port=$(free_port)
  "$DRV" ceiling --port "$port" & PIDS+=($!)
  wait_for "http://127.0.0.1:$port/"
  for c in $CONNS; do wrk_measure "ceiling static-json" "http://127.0.0.1:$port/" "$c"; done
}

tessera() {
  local name=$1 db=$2
  echo "== $name"
  local dir="$WORK/$name" port; port=$(free_port); mkdir -p "$dir"
  local iss="http://127.0.0.1:$port"
  export TESSERA_DATABASE_URL=$db TESSERA_BIND="127.0.0.1:$port" TESSERA_ISSUER=$iss TESSERA_LOG_LEVEL=warn \
    TESSERA_MAIL__OUTBOX="$dir/outbox" TESSERA_TOKENS__CODE_TTL=600s TESSERA_KEYS__PREPUBLISH=0 \
    TESSERA_THROTTLE__LOGINS_PER_IP=1000000000 TESSERA_THROTTLE__LOGIN_FAILURES_PER_ACCOUNT=1000000000
  (cd "$dir" && exec "$BIN" serve >"$dir/log" 2>&1) & local pid=$!; PIDS+=($pid)
  wait_for "$iss/healthz"
  note_rss "$name idle" "$pid"
  local client; client=$("$BIN" client create --name Bench --redirect-uri http://127.0.0.1:1/cb \
    --grant-type authorization_code --grant-type refresh_token --grant-type client_credentials \
    --scope openid --scope profile --scope email --scope offline_access --scope api:read --json)
  local id secret
  id=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  secret=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  echo 'bench passphrase for load' | "$BIN" user create --username bench --email bench@example.test --email-verified --password-stdin >/dev/null
  for c in $CONNS; do
    wrk_measure "$name discovery" "$iss/.well-known/openid-configuration" "$c"
    wrk_measure "$name jwks" "$iss/.well-known/jwks.json" "$c"
    wrk_measure "$name client_credentials" "$iss/token" "$c" POST "grant_type=client_credentials&scope=api:read" "$id:$secret"
    "$DRV" prepare --issuer "$iss" --client "$id:$secret" --login "bench:bench passphrase for load" \
      --codes "${BENCH_CODES:-6000}" --refresh "$((c * 2))" --out "$dir/work" >/dev/null
    measure --label "$name code_exchange" --scenario exchange --url "$iss/token" --basic "$id:$secret" --items "$dir/work/codes.json" \
      --form "grant_type=authorization_code&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_verifier=bench-verifier-bench-verifier-bench-verifier-0123456789" \
      --connections "$c"
    measure --label "$name refresh" --scenario refresh --url "$iss/token" --basic "$id:$secret" --items "$dir/work/refresh.json" --connections "$c"
    wrk_measure "$name userinfo" "$iss/userinfo" "$c" GET "" "" "$(cat "$dir/work/access_token")"
    wrk_measure "$name introspection" "$iss/introspect" "$c" POST "token=$(cat "$dir/work/access_token")" "$id:$secret"
    measure --label "$name password_sign_in" --scenario login --url "$iss/login" --login "bench:bench passphrase for load" --connections "$c"
    note_rss "$name after c=$c" "$pid"
  done
  kill "$pid"; wait "$pid" 2>/dev/null || true
  unset TESSERA_DATABASE_URL TESSERA_BIND TESSERA_ISSUER
}

peer() {
  echo "== peer (oidc-provider on Node 24)"
  local port; port=$(free_port)
  local iss="http://127.0.0.1:$port"
  (PORT=$port exec bash bench/peer/run-peer.sh >"$WORK/peer.log" 2>&1) & local pid=$!; PIDS+=($pid)
  wait_for "$iss/.well-known/openid-configuration"
  local node_pid; node_pid=$(pgrep -P "$pid" -f peer.mjs || echo "$pid")
  note_rss "peer idle" "$node_pid"
  for c in $CONNS; do
    wrk_measure "peer discovery" "$iss/.well-known/openid-configuration" "$c"
    wrk_measure "peer jwks" "$iss/jwks" "$c"
    wrk_measure "peer client_credentials" "$iss/token" "$c" POST "grant_type=client_credentials&scope=api:read" "bench:bench-secret-bench-secret"
    curl -fsS -X POST "$iss/bench/mint-codes?n=${BENCH_CODES:-6000}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["codes"]))' >"$WORK/peer-codes.json"
    local verifier; verifier=$(curl -fsS -X POST "$iss/bench/mint-codes?n=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code_verifier"])')
    measure --label "peer code_exchange" --scenario exchange --url "$iss/token" --basic "bench:bench-secret-bench-secret" --items "$WORK/peer-codes.json" \
      --form "grant_type=authorization_code&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_verifier=$verifier" --connections "$c"
    curl -fsS -X POST "$iss/bench/mint-refresh?n=$((c * 2))" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["refresh_tokens"]))' >"$WORK/peer-refresh.json"
    measure --label "peer refresh" --scenario refresh --url "$iss/token" --basic "bench:bench-secret-bench-secret" --items "$WORK/peer-refresh.json" --connections "$c"
    # oidc-provider cannot introspect JWT access tokens ("unsupported_token_type"), so its
    # introspection is measured on an opaque token (a lookup in its in-memory store).
    local at; at=$(curl -fsS -u bench:bench-secret-bench-secret -d "grant_type=client_credentials&scope=api:read&resource=urn%3Abench%3Aopaque" "$iss/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
    wrk_measure "peer introspection" "$iss/token/introspection" "$c" POST "token=$at" "bench:bench-secret-bench-secret"
    note_rss "peer after c=$c" "$node_pid"
  done
}

for target in $TARGETS; do
  case $target in
    limits) limits ;;
    tessera-sqlite) tessera tessera-sqlite "sqlite://$WORK/bench.db" ;;
    tessera-postgres)
      name="tessera_bench_$$"
      psql "$PG" -qc "CREATE DATABASE $name" >/dev/null
      tessera tessera-postgres "${PG%/*}/$name" || true
      psql "$PG" -qc "DROP DATABASE IF EXISTS $name WITH (FORCE)" >/dev/null
      ;;
    peer) peer ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
done

echo "== summary"
python3 bench/report.py "$RESULTS"
