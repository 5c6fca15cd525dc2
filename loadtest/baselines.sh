#!/usr/bin/env bash
# The limits the service's ingestion and scoring are compared against, measured on this machine:
#
#   bash loadtest/baselines.sh [--seconds 20] [--clients 8,32] [--copy-rows 100000] [--group-rows 16]
#
# 1. single ingest: pgbench running what one single ingest writes (INSERT of the row with its
#    enrichment, customer counter UPDATE, COMMIT), once per client count in --clients;
# 2. batch ingest: pgbench running what one batch chunk writes (100 rows + ordered row locks + one counter
#    UPDATE over the chunk's customers, one transaction), 4 clients as in the batch loadtest, twice: with 100
#    INSERT statements as the service did before its chunks became set-based, and with one INSERT ... SELECT
#    of 100 rows (what store_chunk sends now);
# 2b. grouped single ingest: pgbench running what one group commit of single interactions writes
#    (--group-rows rows over as many customers in one INSERT ... SELECT, the customers locked in id order,
#    one counter UPDATE, COMMIT), 2 clients as the service's 2 group-commit writers;
# 3. bulk load: \copy of --copy-rows rows of the same shape from a CSV;
# 4. the model: loadtest/ort_baseline.py (Python onnxruntime, 1 thread, 320 texts).
#
# Runs from the repository root against postgres://postgres@127.0.0.1:5432 (override with PGURL) in a
# scratch database `insights_baseline` that is dropped and recreated, and dropped again at the end. Every
# temporary file lives in a directory under /tmp. Progress goes to stderr; stdout gets a markdown table and
# one JSON line. The Python packages for step 4 come from PyPI into a venv outside the clone
# (/var/tmp/insights-ort-venv, or INSIGHTS_ORT_VENV), at the versions pinned in models/train/requirements.txt;
# if that fails the JSON says so and the other figures still stand.
set -euo pipefail

SECONDS_PER_RUN=20
CLIENTS=8,32
COPY_ROWS=100000
BATCH_CLIENTS=4
GROUP_ROWS=16
GROUP_CLIENTS=2
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) SECONDS_PER_RUN=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --copy-rows) COPY_ROWS=$2; shift 2 ;;
    --group-rows) GROUP_ROWS=$2; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $SECONDS_PER_RUN =~ ^[0-9]+$ && $SECONDS_PER_RUN -gt 0 ]] || { echo "--seconds N (N > 0)" >&2; exit 2; }
[[ $CLIENTS =~ ^[0-9]+(,[0-9]+)*$ ]] || { echo "--clients N[,N...]" >&2; exit 2; }
[[ $COPY_ROWS =~ ^[0-9]+$ && $COPY_ROWS -gt 0 ]] || { echo "--copy-rows N (N > 0)" >&2; exit 2; }
[[ $GROUP_ROWS =~ ^[0-9]+$ && $GROUP_ROWS -gt 0 && $GROUP_ROWS -le 200 ]] || { echo "--group-rows N (0 < N <= 200)" >&2; exit 2; }
[ -d migrations ] && [ -f loadtest/ort_baseline.py ] || { echo "run from the repository root" >&2; exit 2; }

PGURL=${PGURL:-postgres://postgres@127.0.0.1:5432}
DB=insights_baseline
ADMIN="$PGURL/postgres"
URL="$PGURL/$DB"
START=$(date +%s.%N)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
TMP=$(mktemp -d /tmp/insights-baselines.XXXXXX)
RES=$TMP/results
mkdir -p "$RES"

log() { echo "[baselines $(date +%T)] $*" >&2; }
psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$ADMIN" -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_db() { psql "$URL" -X -q -v ON_ERROR_STOP=1 "$@"; }

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  psql "$ADMIN" -X -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 \
    || echo "[baselines] could not drop database $DB" >&2
  rm -rf "$TMP"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------------------------------------
# 1. Scratch database: schema from migrations/*.sql (each in one transaction, in name order, as sqlx does),
#    one organization and 200 customers (external ids and segments as the load generator creates them).
log "creating $DB"
psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
for f in migrations/*.sql; do
  log "applying $f"
  psql_db --single-transaction -f "$f"
done

# The enrichment is the text the service writes (serde_json of domain::enrichment::Enrichment) for the
# load generator's items: organization {id, name}, the customer's segment, the device parsed from the
# load generator's user agent, no geo. The metadata is that user agent, as the service stores it.
# baseline_customers maps 1..200 to the customer and carries both texts, so that each pgbench statement
# finds them with one primary-key lookup in the statement itself (no extra round trip) and casts the text
# to jsonb per row, as the service's `$8::text::jsonb` parameters are.
psql_db <<'SQL'
CREATE TABLE baseline_customers (
    n          int  PRIMARY KEY,
    id         uuid NOT NULL,
    segment    text,
    metadata   text NOT NULL,
    enrichment text NOT NULL
);
WITH o AS (
    INSERT INTO organizations (name) VALUES ('Baseline') RETURNING id, name
), c AS (
    INSERT INTO customers (organization_id, external_id, segment)
    SELECT o.id, 'load-baseline-' || (n - 1), (ARRAY['smb', 'enterprise', 'trial'])[1 + (n - 1) % 3]
    FROM o, generate_series(1, 200) AS n
    RETURNING id, external_id, segment
)
INSERT INTO baseline_customers (n, id, segment, metadata, enrichment)
SELECT substring(c.external_id FROM 15)::int + 1, c.id, c.segment,
       '{"userAgent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64) Chrome/120.0"}',
       '{"organization":{"id":"' || o.id || '","name":"' || o.name || '"},"segment":"' || c.segment
           || '","device":{"type":"desktop","os":"Windows 10","osVersion":"NT 10.0","browser":"Chrome",'
           || '"browserVersion":"120.0","source":"userAgent"},"geo":null}'
FROM c, o;
VACUUM ANALYZE;
SQL
ORG=$(psql_db -Atc "SELECT id FROM organizations")
[ "$(psql_db -Atc "SELECT count(*) FROM baseline_customers")" = 200 ] || { echo "seeding failed" >&2; exit 1; }
psql_db -Atc "SELECT current_setting('server_version'), current_setting('synchronous_commit'), current_setting('fsync'),
                     current_setting('shared_buffers'), current_setting('wal_sync_method'),
                     current_setting('autovacuum'), current_setting('max_wal_size')" >"$RES/pg.txt"
log "organization $ORG, 200 customers; PostgreSQL $(cut -d'|' -f1 "$RES/pg.txt"), synchronous_commit=$(cut -d'|' -f2 "$RES/pg.txt"), fsync=$(cut -d'|' -f3 "$RES/pg.txt")"

# The load generator's six texts (loadtest/main.rs TEXTS), as a SQL array; item k uses text k mod 6.
TEXTS_SQL="ARRAY['Thanks, the support team solved my problem in minutes!',
      'My order arrived late and the box was damaged.',
      'Can you tell me when the store opens on Sunday?',
      'Terrible experience, I was on hold for an hour.',
      'Love the new app update, checkout is so much faster.',
      'I''d like to change the delivery address for order 1234.']"
INSERT_COLS="(organization_id, customer_id, channel, event_type, content, occurred_at, metadata, enrichment,
     segment, idempotency_key)"
# The service's INSERT ends like this (store::interactions::insert_row): no idempotency key in the load
# generator's items, and the stored row comes back to be answered and published.
INSERT_TAIL="ON CONFLICT (organization_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, organization_id, customer_id, channel, event_type, content, occurred_at, metadata::text,
          enrichment::text, segment, idempotency_key, sentiment_positive, sentiment_negative, sentiment_neutral,
          sentiment_score, sentiment_label::text, sentiment_confidence, processed_at, created_at;"

# ---------------------------------------------------------------------------------------------------------
# 2. Single ingest: what the customer's actor runs per interaction (actors::customer::ingest ->
#    store::interactions::insert): BEGIN; INSERT the row; bump the customer's counters; COMMIT.
cat >"$TMP/single.sql" <<EOF
\set n random(1, 200)
\set t random(1, 6)
\set ch random(1, 5)
\set age random(0, 3599)
BEGIN;
INSERT INTO customer_interactions $INSERT_COLS
SELECT '$ORG', b.id, (enum_range(NULL::interaction_channel))[:ch], 'message', ($TEXTS_SQL)[:t],
       now() - make_interval(secs => :age), b.metadata::jsonb, b.enrichment::jsonb, b.segment, NULL
FROM baseline_customers b WHERE b.n = :n
$INSERT_TAIL
UPDATE customers SET interaction_count = interaction_count + 1,
                     last_seen_at = GREATEST(last_seen_at, now() - make_interval(secs => :age))
WHERE organization_id = '$ORG' AND id = (SELECT id FROM baseline_customers WHERE n = :n);
END;
EOF

# 3. Batch chunk: what store::interactions::store_chunk runs for 100 items over 100 distinct customers (the
#    load generator's batch of 100 covers customers 0-99 or 100-199): the segment lookup (outside the
#    transaction), then BEGIN; 100 INSERTs; the customers locked in id order; one counter UPDATE; COMMIT.
#    Each transaction takes one half of the customers at random, so 4 clients contend for the same row
#    locks as the loadtest's 4 concurrent batches do.
BATCH_HEAD="\\set lo 100 * random(0, 1) + 1
\\set t random(0, 5)
\\set age random(0, 3499)
SELECT id, segment FROM customers
WHERE organization_id = '$ORG' AND id = ANY(ARRAY(SELECT id FROM baseline_customers WHERE n BETWEEN :lo AND :lo + 99));
BEGIN;"
BATCH_TAIL="SELECT id FROM customers
WHERE organization_id = '$ORG' AND id = ANY(ARRAY(SELECT id FROM baseline_customers WHERE n BETWEEN :lo AND :lo + 99))
ORDER BY id FOR NO KEY UPDATE;
UPDATE customers c SET interaction_count = c.interaction_count + v.n, last_seen_at = GREATEST(c.last_seen_at, v.seen)
FROM (SELECT id, 1::bigint AS n, now() - make_interval(secs => :age) AS seen
      FROM baseline_customers WHERE n BETWEEN :lo AND :lo + 99) AS v
WHERE c.organization_id = '$ORG' AND c.id = v.id;
END;"
{
  echo "$BATCH_HEAD"
  for k in $(seq 0 99); do
    cat <<EOF
INSERT INTO customer_interactions $INSERT_COLS
SELECT '$ORG', b.id, (enum_range(NULL::interaction_channel))[$((k % 5 + 1))], 'message', ($TEXTS_SQL)[1 + (:t + $k) % 6],
       now() - make_interval(secs => :age + $k), b.metadata::jsonb, b.enrichment::jsonb, b.segment, NULL
FROM baseline_customers b WHERE b.n = :lo + $k
$INSERT_TAIL
EOF
  done
  echo "$BATCH_TAIL"
} >"$TMP/batch_statements.sql"
# The same transaction with the 100 rows in one INSERT ... SELECT over generate_series(0, 99): the same rows,
# indexes, foreign-key checks, generated tsvector and RETURNING, in one statement and one round trip instead
# of 100 -- the limit for the multi-row insert that RESULTS.md names as the next gain.
{
  echo "$BATCH_HEAD"
  cat <<EOF
INSERT INTO customer_interactions $INSERT_COLS
SELECT '$ORG', b.id, (enum_range(NULL::interaction_channel))[1 + g % 5], 'message', ($TEXTS_SQL)[1 + (:t + g) % 6],
       now() - make_interval(secs => :age + g), b.metadata::jsonb, b.enrichment::jsonb, b.segment, NULL
FROM generate_series(0, 99) AS g JOIN baseline_customers b ON b.n = :lo + g
$INSERT_TAIL
EOF
  echo "$BATCH_TAIL"
} >"$TMP/batch_multirow.sql"

# A group commit of single interactions (store::group_commit): --group-rows rows of as many customers (a
# random run of consecutive ones, so the 2 clients' groups overlap on customers as concurrent groups do) in
# one INSERT ... SELECT with ids chosen by the client, as the service does, then the customers locked in id
# order, one counter UPDATE over them, COMMIT: one WAL flush for --group-rows interactions.
GROUP_LAST=$((GROUP_ROWS - 1))
cat >"$TMP/grouped.sql" <<EOF
\set lo random(1, $((201 - GROUP_ROWS)))
\set t random(0, 5)
\set age random(0, 3499)
BEGIN;
INSERT INTO customer_interactions (id, organization_id, customer_id, channel, event_type, content, occurred_at, metadata,
     enrichment, segment, idempotency_key)
SELECT gen_random_uuid(), '$ORG', b.id, (enum_range(NULL::interaction_channel))[1 + g % 5], 'message',
       ($TEXTS_SQL)[1 + (:t + g) % 6], now() - make_interval(secs => :age + g), b.metadata::jsonb, b.enrichment::jsonb,
       b.segment, NULL
FROM generate_series(0, $GROUP_LAST) AS g JOIN baseline_customers b ON b.n = :lo + g
$INSERT_TAIL
SELECT id FROM customers
WHERE organization_id = '$ORG' AND id = ANY(ARRAY(SELECT id FROM baseline_customers WHERE n BETWEEN :lo AND :lo + $GROUP_LAST))
ORDER BY id FOR NO KEY UPDATE;
UPDATE customers c SET interaction_count = c.interaction_count + 1,
                       last_seen_at = GREATEST(c.last_seen_at, now() - make_interval(secs => :age))
WHERE c.organization_id = '$ORG'
  AND c.id = ANY(ARRAY(SELECT id FROM baseline_customers WHERE n BETWEEN :lo AND :lo + $GROUP_LAST));
END;
EOF

# One pgbench run: prints nothing, leaves $RES/<name>.json with tps and latency percentiles (ms) from the
# per-transaction log (-l: third field is the transaction's latency in microseconds).
run_pgbench() {
  local name=$1 script=$2 clients=$3 rows_per_tx=$4
  local threads=$((clients < 2 ? clients : 2))
  # Each run starts from the same state: no dead customer rows left by the run before (autovacuum may be
  # off), nothing dirty to flush. Checkpoints that still start during the run are counted.
  psql_db -c "VACUUM ANALYZE customers" -c CHECKPOINT
  local ckpt0 ckpt1
  ckpt0=$(psql_db -Atc "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
  log "pgbench $name: $clients clients, $SECONDS_PER_RUN s"
  mkdir -p "$TMP/log_$name"
  if ! pgbench "$URL" -n -f "$script" -T "$SECONDS_PER_RUN" -c "$clients" -j "$threads" -M prepared --max-tries 3 \
       -l --log-prefix "$TMP/log_$name/tx" >"$TMP/$name.out" 2>"$TMP/$name.err"; then
    cat "$TMP/$name.err" "$TMP/$name.out" >&2
    echo "pgbench $name failed" >&2
    return 1
  fi
  ckpt1=$(psql_db -Atc "SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter")
  python3 - "$TMP/$name.out" "$TMP/log_$name" "$clients" "$rows_per_tx" "$((ckpt1 - ckpt0))" >"$RES/$name.json" <<'PY'
import glob, json, math, re, sys
out, logdir, clients, rows = open(sys.argv[1]).read(), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
checkpoints = int(sys.argv[5])
lat = []
for path in glob.glob(logdir + "/tx*"):
    for line in open(path):
        f = line.split()
        if len(f) >= 3 and f[2].isdigit():
            lat.append(int(f[2]) / 1000.0)
lat.sort()
pct = lambda p: round(lat[max(0, math.ceil(p * len(lat)) - 1)], 2)
tps = float(re.search(r"^tps = ([0-9.]+)", out, re.M).group(1))
failed = re.search(r"number of failed transactions: (\d+)", out)
processed = int(re.search(r"number of transactions actually processed: (\d+)", out).group(1))
print(json.dumps({"clients": clients, "tps": round(tps, 1), "rowsPerSec": round(tps * rows), "rowsPerTx": rows,
                  "transactions": processed,
                  "failed": int(failed.group(1)) if failed else 0, "checkpoints": checkpoints,
                  "p50Ms": pct(0.50), "p95Ms": pct(0.95), "p99Ms": pct(0.99)}))
PY
  log "  $(cat "$RES/$name.json")"
}

IFS=, read -r -a CLIENT_LIST <<<"$CLIENTS"
for c in "${CLIENT_LIST[@]}"; do
  run_pgbench "single_c$c" "$TMP/single.sql" "$c" 1
done
run_pgbench batch_statements "$TMP/batch_statements.sql" "$BATCH_CLIENTS" 100
run_pgbench batch_multirow "$TMP/batch_multirow.sql" "$BATCH_CLIENTS" 100
run_pgbench grouped "$TMP/grouped.sql" "$GROUP_CLIENTS" "$GROUP_ROWS"

# What the runs stored: every committed transaction's rows, and the customers' counters in step with them.
psql_db -Atc "SELECT count(*), (SELECT sum(interaction_count) FROM customers),
                     round(avg(octet_length(content)))::int, round(avg(octet_length(metadata::text)))::int,
                     round(avg(octet_length(enrichment::text)))::int
              FROM customer_interactions" >"$RES/check.txt"
IFS='|' read -r stored counted content_b metadata_b enrichment_b <"$RES/check.txt"
log "stored $stored rows (counters sum to $counted); avg bytes: content $content_b, metadata $metadata_b, enrichment $enrichment_b"
[ "$stored" = "$counted" ] || { echo "customer counters ($counted) do not match the stored rows ($stored)" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------------------
# 4. COPY: the same rows (customers, texts, channels, metadata, enrichment) written to a CSV, then one \copy.
#    Only the rows: no counter update (an import would add one UPDATE per customer at the end).
log "writing $COPY_ROWS rows to CSV"
psql_db -Atc "\\copy (SELECT n, id, segment, metadata, enrichment FROM baseline_customers ORDER BY n) TO '$TMP/customers.csv' WITH (FORMAT csv)"
python3 - "$TMP/customers.csv" "$TMP/copy.csv" "$COPY_ROWS" "$ORG" <<'PY'
import csv, datetime, sys
customers = list(csv.reader(open(sys.argv[1])))
rows, org = int(sys.argv[3]), sys.argv[4]
texts = ["Thanks, the support team solved my problem in minutes!", "My order arrived late and the box was damaged.",
         "Can you tell me when the store opens on Sunday?", "Terrible experience, I was on hold for an hour.",
         "Love the new app update, checkout is so much faster.", "I'd like to change the delivery address for order 1234."]
channels = ["web", "mobile", "email", "chat", "phone"]
now = datetime.datetime.now(datetime.timezone.utc)
with open(sys.argv[2], "w", newline="") as f:
    w = csv.writer(f)
    for i in range(rows):
        _, cid, segment, metadata, enrichment = customers[i % len(customers)]
        at = (now - datetime.timedelta(seconds=i % 3600)).isoformat()
        w.writerow([org, cid, channels[i % 5], "message", texts[i % 6], at, metadata, enrichment, segment])
PY
psql_db -c "VACUUM ANALYZE customers" -c CHECKPOINT
log "\\copy of $COPY_ROWS rows ($(du -h "$TMP/copy.csv" | cut -f1))"
t0=$(date +%s.%N)
psql_db -c "\\copy customer_interactions (organization_id, customer_id, channel, event_type, content, occurred_at, metadata, enrichment, segment) FROM '$TMP/copy.csv' WITH (FORMAT csv)"
t1=$(date +%s.%N)
python3 -c "import json,sys; r,s=int(sys.argv[1]),float(sys.argv[3])-float(sys.argv[2]); print(json.dumps({'rows':r,'seconds':round(s,2),'rowsPerSec':round(r/s)}))" \
  "$COPY_ROWS" "$t0" "$t1" >"$RES/copy.json"
log "  $(cat "$RES/copy.json")"

# ---------------------------------------------------------------------------------------------------------
# 5. The model: Python onnxruntime on the same ONNX file (loadtest/ort_baseline.py).
pin() { grep -E "^$1==" models/train/requirements.txt | head -1; }
PY=python3
ort_error=""
if ! python3 -c "import onnxruntime, tokenizers, numpy" 2>/dev/null; then
  VENV=${INSIGHTS_ORT_VENV:-/var/tmp/insights-ort-venv}
  PY=$VENV/bin/python
  if ! { [ -x "$PY" ] && "$PY" -c "import onnxruntime, tokenizers, numpy" 2>/dev/null; }; then
    pkgs="$(pin onnxruntime) $(pin tokenizers) $(pin numpy)"
    log "installing $pkgs into $VENV"
    if ! { python3 -m venv "$VENV" && "$PY" -m pip install --quiet --disable-pip-version-check $pkgs; } >"$TMP/pip.log" 2>&1 \
       || ! "$PY" -c "import onnxruntime, tokenizers, numpy" 2>>"$TMP/pip.log"; then
      ort_error="onnxruntime/tokenizers could not be installed ($pkgs): $(tail -n 2 "$TMP/pip.log" | tr '\n' ' ')"
    fi
  fi
fi
if [ -z "$ort_error" ]; then
  log "python3 loadtest/ort_baseline.py --threads 1 --texts 320"
  if "$PY" loadtest/ort_baseline.py --threads 1 --texts 320 >"$TMP/ort.out" 2>"$TMP/ort.err"; then
    tail -n 1 "$TMP/ort.out" >"$RES/onnxruntime.json"
  else
    ort_error="ort_baseline.py failed: $(tail -n 2 "$TMP/ort.err" | tr '\n' ' ')"
  fi
fi
if [ -n "$ort_error" ]; then
  log "$ort_error"
  python3 -c 'import json,sys; print(json.dumps({"error": sys.argv[1]}))' "$ort_error" >"$RES/onnxruntime.json"
else
  log "  $(cat "$RES/onnxruntime.json")"
fi

# ---------------------------------------------------------------------------------------------------------
# Report: markdown table, then one JSON line.
END=$(date +%s.%N)
CPU=$(grep -m1 "model name" /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
python3 - "$RES" "$CLIENTS" "$SECONDS_PER_RUN" "$CPU" "$(nproc)" "$START" "$END" "$LOAD_START" <<'PY'
import json, sys
res, clients, secs, cpu, ncpu, start, end, load = sys.argv[1:9]
get = lambda name: json.load(open(f"{res}/{name}.json"))
version, sync, fsync, shared, walsync, autovacuum, maxwal = open(f"{res}/pg.txt").read().strip().split("|")
single = [get(f"single_c{c}") for c in clients.split(",")]
stmts, multi, copy, ort = get("batch_statements"), get("batch_multirow"), get("copy"), get("onnxruntime")
grouped = get("grouped")
rows_stored, counter_sum, content_b, metadata_b, enrichment_b = map(int, open(f"{res}/check.txt").read().strip().split("|"))
tx_single = sum(s["transactions"] for s in single)
f = lambda v: "" if v is None else (f"{v:,}" if isinstance(v, int) else f"{v:,.1f}" if v >= 100 else f"{v}")
print(f"PostgreSQL {version} (synchronous_commit={sync}, fsync={fsync}, shared_buffers={shared}, autovacuum={autovacuum}), "
      f"{ncpu} vCPU {cpu}, {secs} s per pgbench run, load average at the start {load} (1, 5, 15 min)\n")
print("| baseline | clients | tx/s | rows/s | p50 ms | p95 ms | p99 ms |")
print("|---|---|---|---|---|---|---|")
for s in single:
    print(f"| pgbench single ingest (1 row + counter, 1 tx) | {s['clients']} | {f(s['tps'])} | {f(s['rowsPerSec'])} "
          f"| {s['p50Ms']} | {s['p95Ms']} | {s['p99Ms']} |")
for label, b in ((f"pgbench grouped single ingest, {grouped['rowsPerTx']} rows in 1 INSERT…SELECT + counters, 1 tx", grouped),
                 ("pgbench batch chunk, 100 INSERTs + counters, 1 tx", stmts),
                 ("pgbench batch chunk, 1 INSERT…SELECT of 100 + counters, 1 tx", multi)):
    print(f"| {label} | {b['clients']} | {f(b['tps'])} | {f(b['rowsPerSec'])} | {b['p50Ms']} | {b['p95Ms']} | {b['p99Ms']} |")
print(f"| \\copy of {copy['rows']:,} rows ({copy['seconds']} s) | 1 | | {f(copy['rowsPerSec'])} | | | |")
if "error" in ort:
    print(f"| Python onnxruntime, 1 thread | 1 | not measured: {ort['error']} | | | | |")
else:
    print(f"| {ort['runtime']}, {ort['threads']} thread, inference only ({ort['texts']} texts) | 1 | "
          f"| {f(ort['textsPerSec'])} texts/s | {ort['p50Ms']} | {ort['p95Ms']} | |")
print()
drop = lambda d: {k: d[k] for k in ("clients", "tps", "p50Ms", "p95Ms", "p99Ms", "failed", "checkpoints")}
print(json.dumps({
    "pgbenchSingle": [drop(s) for s in single],
    "pgbenchGrouped": {"rowsPerTx": grouped["rowsPerTx"], "rowsPerSec": grouped["rowsPerSec"], **drop(grouped)},
    "copy": copy,
    # The top level is the chunk as the service runs it (100 INSERT statements), which loadtest/main.rs
    # compares its batch scenario with; multiRow is the same chunk with one INSERT ... SELECT.
    "batchSql": {"clients": stmts["clients"], "rowsPerTx": 100, "inserts": "100 statements",
                 **{k: stmts[k] for k in ("tps", "rowsPerSec", "p50Ms", "p95Ms", "p99Ms", "failed", "checkpoints")},
                 "multiRow": {"inserts": "1 INSERT ... SELECT generate_series(0, 99)",
                              **{k: multi[k] for k in ("tps", "rowsPerSec", "p50Ms", "p95Ms", "p99Ms", "failed", "checkpoints")}}},
    "onnxruntime": ort,
    "stored": {"rows": rows_stored, "expectedRows": tx_single + 100 * (stmts["transactions"] + multi["transactions"])
                   + grouped["rowsPerTx"] * grouped["transactions"],
               "counterSum": counter_sum, "avgBytes": {"content": content_b, "metadata": metadata_b, "enrichment": enrichment_b}},
    "postgres": {"version": version, "synchronousCommit": sync, "fsync": fsync, "sharedBuffers": shared,
                 "walSyncMethod": walsync, "autovacuum": autovacuum, "maxWalSize": maxwal},
    "machine": {"vcpu": int(ncpu), "cpu": cpu, "loadAvgAtStart": load},
    "secondsPerRun": int(secs), "runSeconds": round(float(end) - float(start), 1),
}))
PY
log "done in $(python3 -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1])))" "$START" "$END") s"
