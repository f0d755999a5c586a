#!/usr/bin/env bash
# Measures what one ticket and one release event cost in JetStream and Redis, on real
# servers started on loopback (nats-server, redis-server) with the real roles: an
# ingress alone first (tickets and events stay in their streams, nothing admits them),
# then a worker that verifies the events and drops the unpolled tickets (so they end
# and get their ended record). Prints bytes per message and per record; README's
# "Sizing" uses its figures. Usage: scripts/sizing.sh [tickets] (default 2000).
set -euo pipefail
n=${1:-2000}
root=$(cd "$(dirname "$0")/.." && pwd)
dir=$(mktemp -d)
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
np=$(port) mp=$(port) rp=$(port) ip=$(port) wp=$(port)

go build -o "$dir/sluice" "$root/cmd/sluice"
nats-server -js -a 127.0.0.1 -p "$np" -m "$mp" -sd "$dir/nats" >"$dir/nats.log" 2>&1 & pids+=($!)
redis-server --port "$rp" --bind 127.0.0.1 --save '' --appendonly no --maxmemory-policy noeviction >"$dir/redis.log" 2>&1 & pids+=($!)
mkdir -p "$dir/objects/demo"
printf 'hello\n' >"$dir/objects/demo/hello.txt"
sha=$(sha256sum "$dir/objects/demo/hello.txt" | cut -d' ' -f1)
admin=slk_sizing_operator_key
export SLUICE_NATS_URL=nats://127.0.0.1:$np SLUICE_REDIS_URL=redis://127.0.0.1:$rp SLUICE_DATA_DIR=$dir \
  SLUICE_ADMIN_KEY=$admin SLUICE_TICKET_RATE=0 SLUICE_LOG_LEVEL=warn \
  SLUICE_SIGNING_KEYS="k1:$(head -c 32 /dev/urandom | base64)"
sleep 0.5
SLUICE_INGRESS_ADDR=127.0.0.1:$ip "$dir/sluice" ingress >"$dir/ingress.log" 2>&1 & pids+=($!)
until curl -sf "127.0.0.1:$ip/readyz" >/dev/null; do sleep 0.2; done

jsz() { # stream-or-bucket -> "messages bytes"
  curl -s "127.0.0.1:$mp/jsz?streams=true" | python3 -c '
import json, sys
for a in json.load(sys.stdin).get("account_details", []):
    for s in a.get("stream_detail", []):
        if s["name"] == sys.argv[1]:
            print(s["state"]["messages"], s["state"]["bytes"]); sys.exit()
print(0, 0)' "$1"
}
mem() { redis-cli -p "$rp" info memory | sed -n 's/^used_memory:\([0-9]*\).*/\1/p'; }
per() { python3 -c "import sys; a,b,n=map(float,sys.argv[1:]); print(round((b-a)/n))" "$@"; }

redis0=$(mem)
seq "$n" | xargs -P 8 -I{} curl -sf -o /dev/null -X POST "127.0.0.1:$ip/api/v1/downloads" \
  -H 'Idempotency-Key: sizing-{}' -d '{"object":"demo/hello.txt"}'
redis1=$(mem)
seq "$n" | xargs -P 8 -I{} curl -sf -o /dev/null -X POST "127.0.0.1:$ip/api/v1/releases" \
  -H "Authorization: Bearer $admin" -d "{\"object\":\"demo/hello.txt\",\"sha256\":\"$sha\",\"size\":6,\"event_id\":\"sizing-{}\"}"
redis1b=$(mem)
read -r tm tb < <(jsz SLUICE_TICKETS)
read -r im ib < <(jsz KV_SLUICE_IDEMPOTENCY)
read -r rm rb < <(jsz SLUICE_RELEASES)
echo "queued: $tm ticket messages, $(per 0 "$tb" "$tm") B each in SLUICE_TICKETS (per replica)"
echo "        $im idempotency records, $(per 0 "$ib" "$im") B each in KV_SLUICE_IDEMPOTENCY"
echo "        $rm release events, $(per 0 "$rb" "$rm") B each in SLUICE_RELEASES"
echo "        Redis used_memory +$(per "$redis0" "$redis1" "$n") B per queued ticket, +$(per "$redis1" "$redis1b" "$n") B per waiting release event"

# A worker: it verifies the events and drops the tickets nobody polls.
SLUICE_METRICS_ADDR=127.0.0.1:$wp SLUICE_ABANDON_AFTER=2s "$dir/sluice" worker >"$dir/worker.log" 2>&1 & pids+=($!)
for _ in $(seq 600); do
  read -r tm _ < <(jsz SLUICE_TICKETS)
  read -r rm _ < <(jsz SLUICE_RELEASES)
  [ "$tm" = 0 ] && [ "$rm" = 0 ] && break
  sleep 0.5
done
sleep 1
redis2=$(mem)
read -r em eb < <(jsz KV_SLUICE_TICKETS_ENDED)
read -r vm vb < <(jsz KV_SLUICE_RELEASE_EVENTS)
read -r cm cb < <(jsz KV_SLUICE_CATALOG)
echo "ended:  $em ended-ticket records, $(per 0 "$eb" "$em") B each in KV_SLUICE_TICKETS_ENDED (kept --retain)"
echo "        $vm release-event records, $(per 0 "$vb" "$vm") B each in KV_SLUICE_RELEASE_EVENTS (kept 8 days)"
echo "        $cm catalog entries, $(per 0 "$cb" "$cm") B each in KV_SLUICE_CATALOG (one per object)"
echo "        Redis used_memory $(per "$redis0" "$redis2" "$n") B per ended ticket kept for --retain and its release event (left in the streams: $tm tickets, $rm events)"
