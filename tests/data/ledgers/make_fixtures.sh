#!/usr/bin/env bash
# Makes the fixture ledgers of tests/test_migrations.py with passflow as it was at commit 6f50e4d
# (the last commit before Alembic migrations: its tables were made by create_all, with no
# alembic_version table). Rerun it only to rebuild the fixtures; the tests never run it.
#
#   tests/data/ledgers/ledger-6f50e4d.db      SQLite ledger file, as 6f50e4d leaves it
#   tests/data/ledgers/ledger-6f50e4d.pg.sql  pg_dump --no-owner --no-privileges --inserts of the same
#                                             runs against a scratch PostgreSQL database
#
# What runs, against each ledger (6f50e4d's CLI, its bundled data, its provider sandbox):
#   passflow issue data/campaigns/skycore-coupon.toml          # 293 signed links (7 rejects)
#   passflow issue data/campaigns/passmachine-loyalty.toml     # 294 loyalty cards via the sandbox
#   passflow update passmachine-loyalty.toml --diff --segment data/segments/customers-updated.csv
#   passflow update passmachine-loyalty.toml --events data/events/app-events.csv
#   passflow callbacks skycore-coupon.toml + two signed Skycore postbacks (N804, N805)
#   passflow inbox   (one analyst drop of 40 customers for skycore-coupon: passflow_inbox_files)
#
# Usage: tests/data/ledgers/make_fixtures.sh   (needs git, python with passflow's dependencies,
# curl, openssl, pg_dump/psql and a PostgreSQL at $PG_ADMIN_URL)
set -euo pipefail

COMMIT=6f50e4d
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(git -C "$HERE" rev-parse --show-toplevel)
SRC=${SRC:-/tmp/pf-$COMMIT}
PG_ADMIN=${PG_ADMIN:-postgresql://postgres@127.0.0.1:5432/postgres}
PG_DB=pf_fixture_$COMMIT
SANDBOX_PORT=${SANDBOX_PORT:-18765}
CALLBACK_PORT=${CALLBACK_PORT:-18780}

[ -d "$SRC" ] || git -C "$REPO" worktree add --detach "$SRC" "$COMMIT"
[ "$(git -C "$SRC" rev-parse --short=7 HEAD)" = "$COMMIT" ] || { echo "$SRC is not at $COMMIT" >&2; exit 1; }

export PYTHONPATH=$SRC                    # 6f50e4d's code, not this checkout's
export PREFECT_HOME=${PREFECT_HOME:-$(mktemp -d)}
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=180 PREFECT_SERVER_ANALYTICS_ENABLED=false
export PASSMACHINE_PUBLIC_TOKEN=pm-public-demo PASSMACHINE_SECRET_TOKEN=pm-secret-demo
export SKYCORE_API_KEY=sky-demo-key PASSFLOW_CALLBACK_SECRET=demo-callback-secret
PASSFLOW=(python -c "from passflow.cli import main; main()")  # a plain command: $! of `... &` is its pid
passflow() { "${PASSFLOW[@]}" "$@"; }

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

wait_port() { for _ in $(seq 1 240); do curl -s -o /dev/null "http://127.0.0.1:$1/" && return 0; sleep 0.5; done; return 1; }
free_port() { ! curl -s -o /dev/null "http://127.0.0.1:$1/" || { echo "port $1 is taken; set ${2}" >&2; exit 1; }; }

postback() {  # postback PASS_ID STATUS_CODE POSTBACK_ID: a signed Skycore postback to passflow callbacks
  local body ts sig
  body=$(printf '{"postback-id":"%s","status-code":"%s","pass-id":"%s","timestamp":"2026-12-01T21:00:00Z"}' "$3" "$2" "$1")
  ts=$(date +%s)
  sig=$(printf '%s.%s' "$ts" "$body" | openssl dgst -sha256 -hmac "$PASSFLOW_CALLBACK_SECRET" | sed 's/^.*= //')
  curl -sf "http://127.0.0.1:$CALLBACK_PORT/callbacks/spring-coupon-2026/skycore" \
    -H "X-Passflow-Timestamp: $ts" -H "X-Passflow-Signature: sha256=$sig" -d "$body"
  echo
}

run_all() {  # run_all WORKDIR: 6f50e4d's bundled campaigns against $PASSFLOW_LEDGER_URL (or its default file)
  local work=$1
  cp -r "$SRC/data" "$work/data"
  # A port of our own (other processes may hold the bundled 8765/8780).
  sed -i "s/127.0.0.1:8765/127.0.0.1:$SANDBOX_PORT/" "$work"/data/campaigns/*.toml
  cd "$work"
  free_port "$SANDBOX_PORT" SANDBOX_PORT
  free_port "$CALLBACK_PORT" CALLBACK_PORT
  "${PASSFLOW[@]}" sandbox --port "$SANDBOX_PORT" > sandbox.log 2>&1 &
  pids+=($!)
  wait_port "$SANDBOX_PORT"
  passflow issue data/campaigns/skycore-coupon.toml
  passflow issue data/campaigns/passmachine-loyalty.toml
  passflow update data/campaigns/passmachine-loyalty.toml --diff --segment data/segments/customers-updated.csv
  passflow update data/campaigns/passmachine-loyalty.toml --events data/events/app-events.csv
  "${PASSFLOW[@]}" callbacks data/campaigns/skycore-coupon.toml --port "$CALLBACK_PORT" > callbacks.log 2>&1 &
  local cb=$!
  pids+=($cb)
  wait_port "$CALLBACK_PORT"
  postback SPRINGC000002 N804 pb-fixture-1
  postback SPRINGC000002 N805 pb-fixture-2
  kill "$cb"
  wait "$cb" || true
  mkdir -p data/inbox
  { head -1 data/segments/customers.csv; sed -n 101,140p data/segments/customers.csv; } > data/inbox/skycore-coupon--fixture-drop.csv
  touch data/inbox/skycore-coupon--fixture-drop.csv.ready
  passflow inbox
  kill "${pids[0]}"
  wait "${pids[0]}" || true
  pids=()
  cd - > /dev/null
}

# --- SQLite: the campaigns' default ledger file --------------------------------------------------
unset PASSFLOW_LEDGER_URL
work=$(mktemp -d)
run_all "$work"
python - "$work/data/state/ledger.db" "$HERE/ledger-$COMMIT.db" <<'PY'
import sqlite3, sys
src = sqlite3.connect(sys.argv[1])
src.execute("PRAGMA wal_checkpoint(TRUNCATE)")
dst = sqlite3.connect(sys.argv[2] + ".tmp")
src.backup(dst)  # one self-contained file (no -wal/-shm), journal mode left as 6f50e4d set it
dst.close()
PY
mv "$HERE/ledger-$COMMIT.db.tmp" "$HERE/ledger-$COMMIT.db"

# --- PostgreSQL: a scratch database ----------------------------------------------------------------
psql "$PG_ADMIN" -v ON_ERROR_STOP=1 -qc "DROP DATABASE IF EXISTS $PG_DB" -c "CREATE DATABASE $PG_DB"
export PASSFLOW_LEDGER_URL=postgresql+psycopg://${PG_ADMIN#postgresql://}
PASSFLOW_LEDGER_URL=${PASSFLOW_LEDGER_URL%/*}/$PG_DB
work=$(mktemp -d)
run_all "$work"
# --inserts: the tests restore it through the driver, without psql.
pg_dump --no-owner --no-privileges --inserts "${PG_ADMIN%/*}/$PG_DB" > "$HERE/ledger-$COMMIT.pg.sql.tmp"
mv "$HERE/ledger-$COMMIT.pg.sql.tmp" "$HERE/ledger-$COMMIT.pg.sql"
psql "$PG_ADMIN" -qc "DROP DATABASE $PG_DB"
echo "fixtures written to $HERE"
