#!/usr/bin/env bash
# Regenerates .sqlx/ (the compile-time query data of sqlx's macros) from a scratch database built from
# migrations/. Run it after changing a migration or a query!/query_as! call, then commit .sqlx/.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${TEST_PG_URL:-postgres://postgres@127.0.0.1:5432}
db=insights_sqlx_prepare
psql "$base/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
for f in migrations/*.sql; do psql "$base/$db" -q -v ON_ERROR_STOP=1 -f "$f"; done
rm -rf .sqlx && mkdir .sqlx
# Touching the sources makes every macro expand again; SQLX_OFFLINE_DIR tells them to save their data.
touch src/lib.rs tests/api/main.rs
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$PWD/.sqlx" DATABASE_URL="$base/$db" cargo check --all-targets --quiet
psql "$base/postgres" -qc "DROP DATABASE $db WITH (FORCE)"
echo "wrote $(ls .sqlx | wc -l) query files to .sqlx/"
