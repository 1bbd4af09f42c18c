#!/usr/bin/env bash
# The benchmark: Tessera on SQLite and on PostgreSQL, side by side in one run with the OpenID
# Certified oidc-provider (on Node 24) and the machine's limits. Every server is started first;
# then each scenario is measured on all of them back to back, so that the machine's drifting
# speed falls alike on both sides of a ratio. Every load comes from the driver
# (examples/bench.rs) or wrk in a separate process on loopback, bounded in time and requests.
# Results: bench/results/results.jsonl (one JSON object per measurement) and a table on stdout.
#
#   bash bench/run.sh                      # everything, 10 s per measurement, 16 and 64 connections
#   BENCH_SECONDS=5 BENCH_CONNECTIONS="16" bash bench/run.sh
#   BENCH_TARGETS="tessera-sqlite peer" bash bench/run.sh
#   BENCH_TARGETS=scale bash bench/run.sh   # PostgreSQL with 1 M users and 10 M refresh tokens
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

# The ceiling: a bare axum handler, started with the limits and measured beside discovery.
CEILING=
limits() {
  echo "== limits"
  "$DRV" limit rsa --seconds 5 | tee -a "$RESULTS"
  "$DRV" limit argon2 --seconds 5 | tee -a "$RESULTS"
  local port; port=$(free_port)
  "$DRV" ceiling --port "$port" & PIDS+=($!)
  CEILING="http://127.0.0.1:$port/"
  wait_for "$CEILING"
}

# start_tessera NAME DATABASE_URL: starts Tessera on a free port and seeds a confidential client
# and a user through the CLI. Sets ISS, PID, ID, SECRET and DIR, and keeps them by name for use.
declare -A T_ISS T_PID T_ID T_SECRET T_DIR
start_tessera() {
  local name=$1 db=$2 port; port=$(free_port)
  DIR="$WORK/$name"; mkdir -p "$DIR"
  ISS="http://127.0.0.1:$port"
  export TESSERA_DATABASE_URL=$db TESSERA_BIND="127.0.0.1:$port" TESSERA_ISSUER=$ISS TESSERA_LOG_LEVEL=warn \
    TESSERA_MAIL__OUTBOX="$DIR/outbox" TESSERA_TOKENS__CODE_TTL=600s TESSERA_KEYS__PREPUBLISH=0 \
    TESSERA_THROTTLE__LOGINS_PER_IP=1000000000 TESSERA_THROTTLE__LOGIN_FAILURES_PER_ACCOUNT=1000000000
  # The client and user first (the CLI applies the migrations), so a seeded database is ready
  # before the server starts.
  local client; client=$("$BIN" client create --name Bench --redirect-uri http://127.0.0.1:1/cb \
    --grant-type authorization_code --grant-type refresh_token --grant-type client_credentials \
    --scope openid --scope profile --scope email --scope offline_access --scope api:read --json)
  ID=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
  SECRET=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
  echo 'bench passphrase for load' | "$BIN" user create --username bench --email bench@example.test --email-verified --password-stdin >/dev/null
  if [ -n "${SEED:-}" ]; then "$SEED"; fi
  (cd "$DIR" && exec "$BIN" serve >"$DIR/log" 2>&1) & PID=$!; PIDS+=($PID)
  wait_for "$ISS/healthz"
  T_ISS[$name]=$ISS T_PID[$name]=$PID T_ID[$name]=$ID T_SECRET[$name]=$SECRET T_DIR[$name]=$DIR
  note_rss "$name idle" "$PID"
}

# use NAME: the started Tessera NAME's ISS, PID, ID, SECRET and DIR.
use() { ISS=${T_ISS[$1]} PID=${T_PID[$1]} ID=${T_ID[$1]} SECRET=${T_SECRET[$1]} DIR=${T_DIR[$1]}; }

stop_tessera() {
  kill "$PID"; wait "$PID" 2>/dev/null || true
  unset TESSERA_DATABASE_URL TESSERA_BIND TESSERA_ISSUER
}

EXCHANGE_FORM="grant_type=authorization_code&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_verifier=bench-verifier-bench-verifier-bench-verifier-0123456789"

# mint NAME CONNECTIONS: codes through the real pages, and refresh tokens, for the next
# exchange and refresh measurements.
mint() {
  "$DRV" prepare --issuer "$ISS" --client "$ID:$SECRET" --login "bench:bench passphrase for load" \
    --codes "${BENCH_CODES:-6000}" --refresh "$(($2 * 2))" --out "$DIR/work" >/dev/null
}

exchange() {
  measure --label "$1 code_exchange" --scenario exchange --url "$ISS/token" --basic "$ID:$SECRET" --items "$DIR/work/codes.json" \
    --form "$EXCHANGE_FORM" --connections "$2"
}

refresh() {
  measure --label "$1 refresh" --scenario refresh --url "$ISS/token" --basic "$ID:$SECRET" --items "$DIR/work/refresh.json" --connections "$2"
}

# The peer: started once, its address in PEER and its Node process in PEER_PID.
PEER= PEER_PID=
PEER_AUTH="bench:bench-secret-bench-secret"
start_peer() {
  echo "== peer (oidc-provider on Node 24)"
  local port; port=$(free_port)
  PEER="http://127.0.0.1:$port"
  # Its codes live as long as Tessera's in the bench (10 minutes).
  (PORT=$port PEER_CODE_TTL=600 exec bash bench/peer/run-peer.sh >"$WORK/peer.log" 2>&1) & local pid=$!; PIDS+=($pid)
  wait_for "$PEER/.well-known/openid-configuration"
  PEER_PID=$(pgrep -P "$pid" -f peer.mjs || echo "$pid")
  note_rss "peer idle" "$PEER_PID"
}

# sign_ins NAME CONNECTIONS: password sign-in, with the CPU time of each hash and the hashing
# threads' share of the machine read from the kernel around it (bench/threads.py): the ratio to
# the argon2 limit splits into what a hash cost and how much of the machine the hashes got.
sign_ins() {
  local before line
  before=$(python3 bench/threads.py snap "$PID")
  line=$(measure --label "$1 password_sign_in" --scenario login --url "$ISS/login" --login "bench:bench passphrase for load" --connections "$2")
  echo "$line"
  python3 bench/threads.py cost "$before" "$(python3 bench/threads.py snap "$PID")" "$line" | tee -a "$RESULTS"
}

# Each scenario is measured on every started server one right after the other (the ceiling,
# Tessera on SQLite, on PostgreSQL, the peer), and the limit that bounds a group of scenarios
# right before and after it: the machine's speed drifts by a third within a run, and a ratio
# between two measurements minutes apart would carry that drift.
measure_all() {
  local c t
  for c in $CONNS; do
    echo "-- $c connections"
    if [ -n "$CEILING" ]; then wrk_measure "ceiling static-json" "$CEILING" "$c"; fi
    for t in $TESSERAS; do use "$t"; wrk_measure "$t discovery" "$ISS/.well-known/openid-configuration" "$c"; done
    if [ -n "$PEER" ]; then wrk_measure "peer discovery" "$PEER/.well-known/openid-configuration" "$c"; fi
    # The ceiling again right before JWKS: a minute after the first reading the machine may
    # have drifted by a fifth, and JWKS is held to the ceiling measured beside it.
    if [ -n "$CEILING" ]; then wrk_measure "ceiling static-json-beside-jwks" "$CEILING" "$c"; fi
    for t in $TESSERAS; do use "$t"; wrk_measure "$t jwks" "$ISS/.well-known/jwks.json" "$c"; done
    if [ -n "$PEER" ]; then wrk_measure "peer jwks" "$PEER/jwks" "$c"; fi

    # The token scenarios, everything minted first, between two readings of the signing limit.
    for t in $TESSERAS; do use "$t"; mint "$t" "$c"; done
    "$DRV" limit rsa --seconds 3 --label "limit-rsa beside c=$c" | tee -a "$RESULTS"
    for t in $TESSERAS; do use "$t"; wrk_measure "$t client_credentials" "$ISS/token" "$c" POST "grant_type=client_credentials&scope=api:read" "$ID:$SECRET"; done
    if [ -n "$PEER" ]; then wrk_measure "peer client_credentials" "$PEER/token" "$c" POST "grant_type=client_credentials&scope=api:read" "$PEER_AUTH"; fi
    for t in $TESSERAS; do use "$t"; exchange "$t" "$c"; done
    if [ -n "$PEER" ]; then
      # The peer's codes minted just before its exchange (in a route of its own, untimed).
      curl -fsS -X POST "$PEER/bench/mint-codes?n=${BENCH_CODES:-6000}" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(json.dumps(d["codes"]))' >"$WORK/peer-codes.json"
      local verifier; verifier=$(curl -fsS -X POST "$PEER/bench/mint-codes?n=1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["code_verifier"])')
      measure --label "peer code_exchange" --scenario exchange --url "$PEER/token" --basic "$PEER_AUTH" --items "$WORK/peer-codes.json" \
        --form "grant_type=authorization_code&redirect_uri=http%3A%2F%2F127.0.0.1%3A1%2Fcb&code_verifier=$verifier" --connections "$c"
    fi
    for t in $TESSERAS; do use "$t"; refresh "$t" "$c"; done
    if [ -n "$PEER" ]; then
      curl -fsS -X POST "$PEER/bench/mint-refresh?n=$((c * 2))" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["refresh_tokens"]))' >"$WORK/peer-refresh.json"
      measure --label "peer refresh" --scenario refresh --url "$PEER/token" --basic "$PEER_AUTH" --items "$WORK/peer-refresh.json" --connections "$c"
    fi
    "$DRV" limit rsa --seconds 3 --label "limit-rsa beside c=$c" | tee -a "$RESULTS"

    # The whole browser flow beside the exchange: the signed-in session of `prepare` asks
    # /authorize (remembered consent) for a code and the client exchanges it, timed together.
    for t in $TESSERAS; do
      use "$t"
      measure --label "$t browser_flow" --scenario flow --url "$(cat "$DIR/work/authorize_url")" \
        --cookie "$(cat "$DIR/work/session_cookie")" --token-url "$ISS/token" --basic "$ID:$SECRET" \
        --form "$EXCHANGE_FORM" --connections "$c"
    done
    for t in $TESSERAS; do use "$t"; wrk_measure "$t userinfo" "$ISS/userinfo" "$c" GET "" "" "$(cat "$DIR/work/access_token")"; done
    for t in $TESSERAS; do use "$t"; wrk_measure "$t introspection" "$ISS/introspect" "$c" POST "token=$(cat "$DIR/work/access_token")" "$ID:$SECRET"; done
    if [ -n "$PEER" ]; then
      # oidc-provider cannot introspect JWT access tokens ("unsupported_token_type"), so its
      # introspection is measured on an opaque token (a lookup in its in-memory store).
      local at; at=$(curl -fsS -u "$PEER_AUTH" -d "grant_type=client_credentials&scope=api:read&resource=urn%3Abench%3Aopaque" "$PEER/token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
      wrk_measure "peer introspection" "$PEER/token/introspection" "$c" POST "token=$at" "$PEER_AUTH"
    fi

    # Password sign-in, between two readings of the argon2 limit.
    if [ -n "$TESSERAS" ]; then
      "$DRV" limit argon2 --seconds 3 --label "limit-argon2 beside c=$c" | tee -a "$RESULTS"
      for t in $TESSERAS; do
        use "$t"
        sign_ins "$t" "$c"
      done
      "$DRV" limit argon2 --seconds 3 --label "limit-argon2 beside c=$c" | tee -a "$RESULTS"
    fi
    for t in $TESSERAS; do note_rss "$t after c=$c" "${T_PID[$t]}"; done
    if [ -n "$PEER" ]; then note_rss "peer after c=$c" "$PEER_PID"; fi
  done
}

# paced NAME KIND: the storm's two paced loads (JWKS at 400/s and client_credentials at 100/s,
# four connections each) against the server in use, side by side, labelled "NAME KIND_jwks" and
# "NAME KIND_token".
paced() {
  "$DRV" load --seconds "$((SECS - 2))" --label "$1 $2_jwks" --scenario get --url "$ISS/.well-known/jwks.json" \
    --connections 4 --rate 400 | tee -a "$RESULTS" & local jwks=$!
  "$DRV" load --seconds "$((SECS - 2))" --label "$1 $2_token" --scenario post --url "$ISS/token" --basic "$ID:$SECRET" \
    --form "grant_type=client_credentials&scope=api:read" --connections 4 --rate 100 | tee -a "$RESULTS" & local tok=$!
  wait "$jwks" "$tok" || true
}

# The login storm: password sign-ins flat out (16 connections) while JWKS and
# client_credentials requests, paced at a steady rate, are measured alongside. The same paced
# loads run first on a quiet server, and before them a fixed 1-ms CPU job paced the same way
# (`bench limit jitter`): a virtual machine's own tail (its host taking a core away for
# milliseconds, a sleeping core woken for each request) shows there, and the difference is
# what the storm adds.
storm() {
  local name=$1
  use "$name"
  echo "-- $name: the machine's own tail, then the paced loads on the quiet server"
  "$DRV" limit jitter --seconds "$((SECS - 2))" --label "limit-jitter beside $name storm" | tee -a "$RESULTS"
  paced "$name" quiet
  echo "-- $name login storm"
  measure --label "$name storm_login" --scenario login --url "$ISS/login" --login "bench:bench passphrase for load" --connections 16 &
  local storm=$!
  sleep 1
  # What else ran on the machine meanwhile (bench/others.py): a background service's burst
  # of CPU moves a paced p99, and the report names it beside the storm's.
  python3 bench/others.py watch "$((SECS - 2))" "$name storm" | tee -a "$RESULTS" & local others=$!
  paced "$name" storm
  wait "$storm" "$others" || true
  note_rss "$name after storm" "$PID"
}

# Scale: the code exchange and refresh on PostgreSQL against an empty database and against one
# already holding BENCH_USERS users and BENCH_REFRESH_ROWS live refresh tokens; then
# BENCH_EXPIRED_ROWS expired ones are added and swept while an exchange load runs.
seed_scale() {
  echo "-- seeding $BENCH_USERS users and $BENCH_REFRESH_ROWS refresh tokens"
  local started=$SECONDS
  psql "$TESSERA_DATABASE_URL" -v ON_ERROR_STOP=1 -q -v users="$BENCH_USERS" -v tokens="$BENCH_REFRESH_ROWS" \
    -v client="$ID" -f bench/seed-scale.sql
  echo "{\"label\":\"tessera-postgres-10m seed\",\"seconds\":$((SECONDS - started)),\"users\":$BENCH_USERS,\"refresh_rows\":$BENCH_REFRESH_ROWS}" | tee -a "$RESULTS"
}

scale() {
  local c=${BENCH_SCALE_CONNECTIONS:-16}
  BENCH_USERS=${BENCH_USERS:-1000000} BENCH_REFRESH_ROWS=${BENCH_REFRESH_ROWS:-10000000}
  BENCH_EXPIRED_ROWS=${BENCH_EXPIRED_ROWS:-3000000}
  for phase in empty 10m; do
    local name="tessera-postgres-$phase" db="tessera_scale_${phase}_$$"
    echo "== $name"
    psql "$PG" -qc "CREATE DATABASE $db" >/dev/null
    if [ "$phase" = 10m ]; then SEED=seed_scale; else SEED=; fi
    start_tessera "$name" "${PG%/*}/$db"
    SEED=
    mint "$name" "$c"
    exchange "$name" "$c"
    refresh "$name" "$c"
    if [ "$phase" = 10m ]; then
      echo "-- adding $BENCH_EXPIRED_ROWS expired refresh tokens"
      psql "${PG%/*}/$db" -v ON_ERROR_STOP=1 -q -v expired="$BENCH_EXPIRED_ROWS" -v client="$ID" -f bench/seed-expired.sql
      local rows; rows=$(psql "${PG%/*}/$db" -tAc "SELECT COUNT(*) FROM refresh_tokens")
      echo "-- sweeping expired rows during an exchange load ($rows refresh tokens)"
      "$DRV" prepare --issuer "$ISS" --client "$ID:$SECRET" --login "bench:bench passphrase for load" \
        --codes "${BENCH_CODES:-6000}" --refresh 2 --out "$DIR/work" >/dev/null
      measure --label "$name code_exchange_during_sweep" --scenario exchange --url "$ISS/token" --basic "$ID:$SECRET" \
        --items "$DIR/work/codes.json" --connections "$c" --form "$EXCHANGE_FORM" &
      local load=$!
      local swept; swept=$("$BIN" sweep --json | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["deleted"], round(d["seconds"], 1))')
      wait "$load" || true
      local after; after=$(psql "${PG%/*}/$db" -tAc "SELECT COUNT(*) FROM refresh_tokens")
      echo "{\"label\":\"$name sweep\",\"rows_before\":$rows,\"deleted\":${swept% *},\"seconds\":${swept#* },\"rows_after\":$after}" | tee -a "$RESULTS"
    fi
    note_rss "$name after" "$PID"
    stop_tessera
    psql "$PG" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null
  done
}

# Start every target, then measure them side by side.
TESSERAS=
PG_DB=
for target in $TARGETS; do
  case $target in
    limits) limits ;;
    tessera-sqlite)
      echo "== tessera-sqlite"
      start_tessera tessera-sqlite "sqlite://$WORK/bench.db"
      TESSERAS+=" tessera-sqlite"
      ;;
    tessera-postgres)
      echo "== tessera-postgres"
      PG_DB="tessera_bench_$$"
      psql "$PG" -qc "CREATE DATABASE $PG_DB" >/dev/null
      start_tessera tessera-postgres "${PG%/*}/$PG_DB"
      TESSERAS+=" tessera-postgres"
      ;;
    peer) start_peer ;;
    scale) ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
done
TESSERAS=${TESSERAS# }
if [ -n "$TESSERAS$PEER$CEILING" ]; then
  echo "== measuring side by side: ${CEILING:+ceiling }$TESSERAS${PEER:+ peer}"
  measure_all
fi
for t in $TESSERAS; do storm "$t"; done
for t in $TESSERAS; do use "$t"; stop_tessera; done
if [ -n "$PG_DB" ]; then psql "$PG" -qc "DROP DATABASE IF EXISTS $PG_DB WITH (FORCE)" >/dev/null; fi
case " $TARGETS " in *" scale "*) scale ;; esac

# The limits again at the end: the machine's speed drifts over a run (RSA signing has read
# 4,234/s and 8,005/s on the same machine hours apart), so the ratios use the mean of the two.
case " $TARGETS " in
  *" limits "*)
    echo "== limits again"
    "$DRV" limit rsa --seconds 5 | tee -a "$RESULTS"
    "$DRV" limit argon2 --seconds 5 | tee -a "$RESULTS"
    ;;
esac

echo "== summary"
python3 bench/report.py "$RESULTS" "$OUT/chart.svg"
