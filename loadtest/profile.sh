#!/usr/bin/env bash
# Samples what the machine spends a load test on, for RESULTS.md's "what limits it" (run it while a
# scenario runs):
#   bash loadtest/profile.sh SECONDS [DATABASE]
# 1. CPU seconds used per process group (insights node, PostgreSQL, Redis, load generator, other) over
#    the window, from /proc, against the 2 cores available (= 2 × SECONDS).
# 2. What PostgreSQL's active backends were doing, sampled every 20 ms from pg_stat_activity:
#    on CPU (no wait event), or waiting on WAL flush (fsync), a lock, client I/O...
set -euo pipefail
secs=${1:-10}
db=${2:-postgres}
cpu() {
  python3 - <<'PY'
import os, json
groups = {}
for pid in filter(str.isdigit, os.listdir('/proc')):
    try:
        with open(f'/proc/{pid}/stat') as f:
            parts = f.read().rsplit(')', 1)[1].split()
        with open(f'/proc/{pid}/comm') as f:
            comm = f.read().strip()
    except OSError:
        continue
    ticks = int(parts[11]) + int(parts[12])
    name = ('insights' if comm.startswith('insights') or comm.startswith('tokio') else
            'postgres' if comm.startswith('postgres') else
            'redis' if comm.startswith('redis') else
            'loadgen' if comm.startswith('loadtest') or comm.startswith('querybench') else
            'python' if comm.startswith('python') else 'other')
    groups[name] = groups.get(name, 0) + ticks
print(json.dumps(groups))
PY
}
before=$(cpu)
samples=$(( secs * 50 ))
psql -h 127.0.0.1 -U postgres -d "$db" -qAt <<SQL &
CREATE TEMP TABLE s (w text);
DO \$\$
BEGIN
  FOR i IN 1..$samples LOOP
    PERFORM pg_stat_clear_snapshot();
    INSERT INTO s SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU (no wait)')
      FROM pg_stat_activity WHERE state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid();
    PERFORM pg_sleep(0.02);
  END LOOP;
END \$\$;
SELECT w || ' ' || count(*) || ' (' || round(100.0 * count(*) / sum(count(*)) OVER (), 1) || '%)'
  FROM s GROUP BY w ORDER BY count(*) DESC LIMIT 8;
SQL
waiter=$!
sleep "$secs"
after=$(cpu)
wait "$waiter" || true
python3 - "$before" "$after" "$secs" <<'PY'
import json, os, sys
b, a, secs = json.loads(sys.argv[1]), json.loads(sys.argv[2]), float(sys.argv[3])
hz = os.sysconf('SC_CLK_TCK')
cores = os.cpu_count()
print(f"CPU over {secs:.0f} s ({cores} cores = {cores * secs:.0f} CPU-s available):")
for k in sorted(a, key=lambda k: -(a[k] - b.get(k, 0))):
    used = (a[k] - b.get(k, 0)) / hz
    if used >= 0.05:
        print(f"  {k:<9} {used:6.1f} CPU-s  ({100 * used / (cores * secs):4.1f}% of the machine)")
PY
