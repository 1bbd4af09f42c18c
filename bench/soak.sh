#!/usr/bin/env bash
# The soak: a mixed, realistic load (discovery, JWKS, sign-ins, full authorization-code flows,
# refreshes, userinfo, introspection, client credentials) at about 70% of what the mix
# sustains, for 10 minutes, against a release build on SQLite (or PostgreSQL). Reports per
# minute: operations, p50/p99 latency, 5xx answers, failures and the server's memory, and
# the row counts of every table the sweeper keeps bounded. Fails on any 5xx or failure.
#
#   bash bench/soak.sh                          # 600 s on SQLite
#   SOAK_SECONDS=120 bash bench/soak.sh         # a short run
#   SOAK_DATABASE=postgres bash bench/soak.sh   # on PostgreSQL ($SOAK_POSTGRES_URL)
#
# Short lifetimes (refresh tokens 3 min, sessions 3 min idle, access tokens 2 min, codes kept
# 1 min past expiry, audit events kept 3 min, a sweep every 30 s) make the sweeper's work visible inside the run: rows that expire during it are
# deleted during it. Results: bench/results/soak.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SOAK_SECONDS:-600}
LOAD=${SOAK_LOAD:-0.7}
CONNS=${SOAK_CONNECTIONS:-16}
DB_KIND=${SOAK_DATABASE:-sqlite}
PG=${SOAK_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}
OUT=${BENCH_OUT:-bench/results}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}

echo "== building Tessera and the soak driver (release)"
cargo build --release --locked --bin tessera --example soak
BIN=$(realpath "$CARGO_TARGET_DIR/release/tessera")
DRV=$(realpath "$CARGO_TARGET_DIR/release/examples/soak")
mkdir -p "$OUT"
RESULTS="$OUT/soak.jsonl"
: >"$RESULTS"
WORK=$(mktemp -d)
PID=
PGDB=
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  [ -n "$PGDB" ] && psql "$PG" -qc "DROP DATABASE IF EXISTS $PGDB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ISS="http://127.0.0.1:$port"
if [ "$DB_KIND" = postgres ]; then
  PGDB="tessera_soak_$$"
  psql "$PG" -qc "CREATE DATABASE $PGDB" >/dev/null
  DB="${PG%/*}/$PGDB"
  rows() { psql "$DB" -tAc "$1"; }
else
  DB="sqlite://$WORK/tessera.db"
  rows() { sqlite3 "file:$WORK/tessera.db?mode=ro" "$1"; }
fi
export TESSERA_DATABASE_URL=$DB TESSERA_BIND="127.0.0.1:$port" TESSERA_ISSUER=$ISS TESSERA_LOG_LEVEL=warn \
  TESSERA_MAIL__OUTBOX="$WORK/outbox" TESSERA_KEYS__PREPUBLISH=0 \
  TESSERA_THROTTLE__LOGINS_PER_IP=1000000000 TESSERA_THROTTLE__LOGIN_FAILURES_PER_ACCOUNT=1000000000 \
  TESSERA_TOKENS__ACCESS_TOKEN_TTL=2m TESSERA_TOKENS__REFRESH_TOKEN_TTL=3m TESSERA_TOKENS__REFRESH_TOKEN_MAX_TTL=3m \
  TESSERA_SESSIONS__IDLE_TIMEOUT=3m TESSERA_TOKENS__CODE_REPLAY_WINDOW=1m TESSERA_AUDIT_RETENTION=3m \
  TESSERA_DATABASE__SWEEP_INTERVAL=30s

client=$("$BIN" client create --name Soak --redirect-uri http://127.0.0.1:1/cb \
  --grant-type authorization_code --grant-type refresh_token --grant-type client_credentials \
  --scope openid --scope profile --scope email --scope offline_access --scope api:read --json)
ID=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_id"])')
SECRET=$(echo "$client" | python3 -c 'import json,sys; print(json.load(sys.stdin)["client_secret"])')
echo 'soak passphrase for load' | "$BIN" user create --username soak --email soak@example.test --email-verified --password-stdin >/dev/null
(cd "$WORK" && exec "$BIN" serve >"$WORK/log" 2>&1) & PID=$!
for _ in $(seq 1 150); do curl -fsS -o /dev/null "$ISS/healthz" && break; sleep 0.2; done

# Row counts of the bounded tables, once a minute, beside the load.
count_rows() {
  local label=$1
  local line="{\"phase\":\"rows\",\"at\":\"$label\""
  for t in sessions auth_codes refresh_tokens revoked_jti audit_events; do
    line+=",\"$t\":$(rows "SELECT COUNT(*) FROM $t")"
  done
  echo "$line}" | tee -a "$RESULTS"
}
(
  sleep 25  # after the probe
  for m in $(seq 1 $((SECS / 60))); do sleep 60; count_rows "minute $m" || true; done
) & COUNTER=$!

echo "== soak: $SECS s at $LOAD of capacity, $CONNS connections, on $DB_KIND"
status=0
"$DRV" --issuer "$ISS" --client "$ID:$SECRET" --login "soak:soak passphrase for load" --pid "$PID" \
  --seconds "$SECS" --load "$LOAD" --connections "$CONNS" | tee -a "$RESULTS" || status=$?
kill "$COUNTER" 2>/dev/null || true
count_rows "end"
if grep -qiE "panicked|ERROR" "$WORK/log"; then
  echo "the server logged errors:" >&2; grep -iE "panicked|ERROR" "$WORK/log" | head -20 >&2; status=1
fi
python3 - "$RESULTS" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
soak = [l for l in lines if l.get("phase") == "soak"]
rows = [l for l in lines if l.get("phase") == "rows"]
if len(soak) >= 2:
    first, last = soak[0], soak[-1]
    print(f"{'':22}{'first minute':>14}{'last minute':>14}")
    print(f"{'ops/s':22}{first['ops_per_s']:>14}{last['ops_per_s']:>14}")
    print(f"{'p99 ms, all':22}{first['p99_ms']:>14}{last['p99_ms']:>14}")
    for op in first["p99_ms_by_op"]:
        print(f"{'p99 ms, ' + op:22}{first['p99_ms_by_op'][op]:>14}{last['p99_ms_by_op'].get(op, '-'):>14}")
    print(f"{'server RSS MB':22}{first['rss_mb']:>14}{last['rss_mb']:>14}")
    print(f"5xx in all: {sum(l['5xx'] for l in soak)}, failures: {sum(l['failures'] for l in soak)}")
for r in rows:
    print(r["at"] + ": " + ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("phase", "at")))
PY
exit $status
