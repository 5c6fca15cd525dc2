#!/usr/bin/env bash
# Cuts one node of the local three-node cluster (scripts/cluster.sh) off from the other nodes, but not
# from PostgreSQL, with iptables, for a bounded time; then heals it. Root only; the rules are removed on
# exit whatever happens. It prints the cluster's state before, during and after, and sends a keyed ingest
# through another node while the cut lasts (expected: 503 node_unavailable for an organization the cut
# node owns, after the failover wait; never a second owner).
#
#   sudo scripts/partition.sh N SECONDS [TOKEN CUSTOMER]
#
# N is 1, 2 or 3 (its cluster listener is 127.0.1.N:4697); SECONDS at most 120. Without TOKEN and
# CUSTOMER (an access token and a customer id of an organization) no request is sent. The rules drop the
# traffic of node N's listener, which carries the links the lower-named nodes dialled to it: insights-3
# is cut from both others; insights-2 only from insights-1 (its own link to insights-3 leaves from
# 127.0.0.1 like every other loopback connection and cannot be told apart by address).
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:?which node: 1, 2 or 3}
secs=${2:?how many seconds}
token=${3:-}
customer=${4:-}
[[ $n =~ ^[123]$ ]] || { echo "N must be 1, 2 or 3" >&2; exit 2; }
(( secs > 0 && secs <= 120 )) || { echo "SECONDS must be 1 to 120" >&2; exit 2; }
[[ $(id -u) == 0 ]] || { echo "iptables needs root" >&2; exit 2; }
command -v iptables >/dev/null || { echo "install iptables (apt-get install iptables)" >&2; exit 2; }
dir=${INSIGHTS_CLUSTER_DIR:-/tmp/insights-cluster}
cert=$dir/insights-1/tls/cert.pem
addr=127.0.1.$n
rules=(
  "OUTPUT -o lo -p tcp -d $addr --dport 4697 -j DROP"
  "OUTPUT -o lo -p tcp -s $addr --sport 4697 -j DROP"
)
heal() {
  for r in "${rules[@]}"; do
    # shellcheck disable=SC2086
    while iptables -D $r 2>/dev/null; do :; done
  done
}
trap heal EXIT
scripts/cluster.sh status
for r in "${rules[@]}"; do
  # shellcheck disable=SC2086
  iptables -I $r
done
echo "cut insights-$n ($addr:4697) from the other nodes for $secs s"
other=$(( n % 3 + 1 ))
if [[ -n $token && -n $customer ]]; then
  started=$(date +%s.%N)
  code=$(curl -s -o /tmp/partition-reply.json -w '%{http_code}' --cacert "$cert" \
    "https://localhost:$((8442 + other))/api/v1/interactions" -H "authorization: Bearer $token" \
    -H 'content-type: application/json' \
    -d "{\"customerId\":\"$customer\",\"channel\":\"web\",\"eventType\":\"message\",\"timestamp\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"idempotencyKey\":\"partition-$started\"}")
  echo "ingest through insights-$other during the cut: $code after $(echo "$(date +%s.%N) - $started" | bc) s: $(cat /tmp/partition-reply.json)"
fi
sleep "$secs"
scripts/cluster.sh status
heal
echo "healed"
sleep 3
scripts/cluster.sh status
