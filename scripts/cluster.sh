#!/usr/bin/env bash
# A three-node Insights cluster on this machine (README, "Running a cluster").
#
#   scripts/cluster.sh start          build (release) if needed, start insights-1..3, wait until ready
#   scripts/cluster.sh status         each node's /readyz cluster section
#   scripts/cluster.sh kill N         kill -9 node N (to watch a takeover)
#   scripts/cluster.sh restart N      start node N again (it gets its organizations back by hand-off)
#   scripts/cluster.sh stop           stop every node (SIGTERM: each ends its leases at once)
#
# Nodes: insights-N serves HTTPS on https://localhost:844(2+N) and its cluster listener on 127.0.1.N:4697;
# insights-1 and -2 have the roles api, actors, ml; insights-3 has api and actors and no model, so it
# scores its texts on the other two. They share one PostgreSQL database (DATABASE_URL, default
# postgres://postgres@127.0.0.1:5432/insights_cluster), Redis (REDIS_URL, default redis://127.0.0.1:6379)
# and one certificate (insights-1's, generated on first start). The cookie and the JWT secret come from
# INSIGHTS_CLUSTER_COOKIE and INSIGHTS_JWT_SECRET when set; otherwise they are generated once and kept,
# readable by you only, in $INSIGHTS_CLUSTER_DIR/secrets (default /tmp/insights-cluster).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${INSIGHTS_CLUSTER_DIR:-/tmp/insights-cluster}
target=${CARGO_TARGET_DIR:-target}
bin=$target/release/insights
export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/insights_cluster}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
mkdir -p "$dir"

secrets() {
  if [[ ! -f $dir/secrets ]]; then
    umask 077
    {
      echo "INSIGHTS_CLUSTER_COOKIE=${INSIGHTS_CLUSTER_COOKIE:-$(head -c 32 /dev/urandom | base64 -w0)}"
      echo "INSIGHTS_JWT_SECRET=${INSIGHTS_JWT_SECRET:-$(head -c 48 /dev/urandom | base64 -w0)}"
      echo "INSIGHTS_DATA_KEY=${INSIGHTS_DATA_KEY:-$(head -c 32 /dev/urandom | base64 -w0)}"
    } >"$dir/secrets"
    echo "generated a cluster cookie, a JWT secret and a data key for this local cluster in $dir/secrets"
  fi
  # A secrets file from before data keys existed gets one.
  grep -q '^INSIGHTS_DATA_KEY=' "$dir/secrets" ||
    echo "INSIGHTS_DATA_KEY=$(head -c 32 /dev/urandom | base64 -w0)" >>"$dir/secrets"
  set -a
  # shellcheck disable=SC1091
  . "$dir/secrets"
  set +a
}

write_file() {
  cat >"$dir/cluster.toml" <<EOF
# Written by scripts/cluster.sh. Edit it while the nodes run: they re-read it within 2 s.
[[node]]
name = "insights-1"
address = "127.0.1.1:4697"
http = "127.0.0.1:8443"
roles = ["api", "actors", "ml"]

[[node]]
name = "insights-2"
address = "127.0.1.2:4697"
http = "127.0.0.1:8444"
roles = ["api", "actors", "ml"]

[[node]]
name = "insights-3"
address = "127.0.1.3:4697"
http = "127.0.0.1:8445"
roles = ["api", "actors"]
EOF
}

ready() { # node port
  for _ in $(seq 1 120); do
    if curl -sf --cacert "$dir/insights-1/tls/cert.pem" "https://localhost:$2/readyz" >/dev/null 2>&1; then
      return 0
    fi
    if ! kill -0 "$(cat "$dir/$1.pid")" 2>/dev/null; then
      echo "$1 exited; the end of $dir/$1.log:" >&2
      tail -5 "$dir/$1.log" >&2
      return 1
    fi
    sleep 0.5
  done
  echo "$1 is not ready after 60 s; see $dir/$1.log" >&2
  return 1
}

start_node() { # N
  local n=$1 name=insights-$1 port=$((8442 + $1))
  if [[ -f $dir/$name.pid ]] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null; then
    echo "$name already runs (pid $(cat "$dir/$name.pid"))"
    return 0
  fi
  local env=(INSIGHTS_NODE_NAME="$name" INSIGHTS_LISTEN="127.0.0.1:$port" INSIGHTS_DATA_DIR="$dir/$name"
    INSIGHTS_CLUSTER_FILE="$dir/cluster.toml" INSIGHTS_REDIS_PREFIX=insights-cluster)
  if [[ $n != 1 ]]; then
    env+=(INSIGHTS_TLS_CERT="$dir/insights-1/tls/cert.pem" INSIGHTS_TLS_KEY="$dir/insights-1/tls/key.pem")
  fi
  if [[ $n == 3 ]] || ! ort=$(scripts/ort.sh 2>/dev/null); then
    env+=(INSIGHTS_ML_ENABLED=false)
  else
    env+=(ORT_DYLIB_PATH="$ort")
  fi
  local migrate=()
  [[ $n == 1 ]] || migrate=(--no-migrate)
  env "${env[@]}" nohup "$bin" serve "${migrate[@]}" >>"$dir/$name.log" 2>&1 &
  echo $! >"$dir/$name.pid"
  ready "$name" "$port"
  echo "$name ready: https://localhost:$port (log $dir/$name.log)"
}

case ${1:-} in
  start)
    cargo build --release --bin insights
    secrets
    [[ -f $dir/cluster.toml ]] || write_file
    for n in 1 2 3; do start_node "$n"; done
    echo
    echo "Create an organization and its admin:"
    echo "  DATABASE_URL=$DATABASE_URL $bin org create --name Acme --admin-email admin@acme.test --admin-password 'a long password'"
    echo "Then log in on any node, e.g. https://localhost:8445 (certificate: $dir/insights-1/tls/cert.pem)."
    echo "Cluster view (admin token): curl --cacert $dir/insights-1/tls/cert.pem -H 'Authorization: Bearer TOKEN' https://localhost:8443/api/v1/cluster"
    ;;
  status)
    for n in 1 2 3; do
      printf 'insights-%s: ' "$n"
      curl -s --cacert "$dir/insights-1/tls/cert.pem" "https://localhost:$((8442 + n))/readyz" | python3 -c \
        'import json,sys; r=json.load(sys.stdin); c=r["cluster"]; print(r["status"], c["state"], "owns", c["ownedOrganizations"], "members", " ".join(m["name"]+"="+m["state"] for m in c["members"]))' \
        2>/dev/null || echo "down"
    done
    ;;
  kill)
    n=${2:?which node: 1, 2 or 3}
    kill -9 "$(cat "$dir/insights-$n.pid")" && echo "killed insights-$n (kill -9)"
    ;;
  restart)
    n=${2:?which node: 1, 2 or 3}
    secrets
    start_node "$n"
    ;;
  stop)
    for n in 1 2 3; do
      if [[ -f $dir/insights-$n.pid ]] && kill "$(cat "$dir/insights-$n.pid")" 2>/dev/null; then
        echo "stopping insights-$n"
      fi
    done
    for n in 1 2 3; do
      while [[ -f $dir/insights-$n.pid ]] && kill -0 "$(cat "$dir/insights-$n.pid")" 2>/dev/null; do sleep 0.2; done
      rm -f "$dir/insights-$n.pid"
    done
    ;;
  *)
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
