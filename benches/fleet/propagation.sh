#!/usr/bin/env bash
# Fleet mode, measured: how fast a weight change made through one replica
# reaches the others, and what fleet mode costs the request path.
#
#   benches/fleet/propagation.sh
#
# Starts a 3-member etcd on loopback (temporary data dirs), the bench
# upstream (legacy and new on two ports, each naming itself in `x-upstream`),
# seeds the fleet and starts replicas A, B and C. Then:
#   1. CHANGES changes through A's admin API, alternating `shift main new=100`
#      and `rollback main`; B and C are polled with back-to-back requests, and
#      for each change and replica the time from A's response to the first
#      response served by the new table is taken (benches/fleet/propagation.py);
#   2. wrk against B (fleet on) and D (the same config without `fleet:`),
#      ROUNDS rounds alternating; the ratio of the median rates.
#
# Environment (defaults in brackets): CHANGES [200] ROUNDS [5] DURATION [5s]
#   CONNS [50] WRK_THREADS [2] KEEP_WORKDIR [0] MAX_SECONDS [280] (after the build)
# Needs: etcd and etcdctl (Debian etcd-server, etcd-client), wrk, python3, cargo.
# Everything listens on 127.0.0.1, on ephemeral ports; everything started is
# stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
CHANGES=${CHANGES:-200}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-2}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
MAX_SECONDS=${MAX_SECONDS:-280}
PREFIX=/cutover/propagation

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
for tool in etcd etcdctl wrk python3 cargo; do
    command -v "$tool" >/dev/null || die "$tool not found"
done

log "building cutover and bench-upstream (release)"
cargo build --release --quiet --bin cutover --example bench-upstream
BIN="$ROOT/target/release/cutover"
UPSTREAM="$ROOT/target/release/examples/bench-upstream"

if [ -d /dev/shm ]; then WORK=$(mktemp -d /dev/shm/cutover-propagation.XXXXXX); else WORK=$(mktemp -d); fi
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # The watchdog's sleep first, then everything started here, latest
    # first: the replicas leave the fleet while etcd still runs.
    pkill -TERM -P "$WATCHDOG" 2>/dev/null || true
    local i pid
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
        pid=${PIDS[i]}
        kill -TERM "$pid" 2>/dev/null || continue
        for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    if [ "$KEEP_WORKDIR" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'log "stopped: took longer than ${MAX_SECONDS}s or was told to"; exit 124' TERM
# The watchdog: the whole run is bounded in time.
(sleep "$MAX_SECONDS" && kill -TERM $$) 2>/dev/null &
WATCHDOG=$!
PIDS+=("$WATCHDOG")
# Long steps run in the background and are waited for, so that the
# watchdog's signal interrupts them instead of waiting for them.
run() {
    "$@" &
    local pid=$!
    PIDS+=("$pid")
    wait "$pid"
}

free_ports() { python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"; }

json_field() { python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {"d": d}))' "$1" "$2"; }

wait_for() { # DESCRIPTION SECONDS COMMAND...
    local what=$1 limit=$2
    shift 2
    local deadline=$(($(date +%s) + limit))
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || die "$what: not within ${limit}s"
        sleep 0.1
    done
}

# --- the upstream: legacy and new, each naming itself
"$UPSTREAM" --addr-header 127.0.0.1:0 127.0.0.1:0 2>"$WORK/upstream.log" &
PIDS+=($!)
upstream_listening() { [ "$(grep -c 'listening addr=' "$WORK/upstream.log")" -eq 2 ]; }
wait_for "bench-upstream listening" 10 upstream_listening
mapfile -t UP < <(sed -n 's/.*listening addr=//p' "$WORK/upstream.log")
LEGACY=${UP[0]} NEW=${UP[1]}
log "upstream: legacy $LEGACY, new $NEW"

# --- etcd: 3 members (the same settings as tests/common/etcd.rs)
read -r -a PORTS <<<"$(free_ports 6)"
CLUSTER="" ENDPOINTS=""
for i in 0 1 2; do
    CLUSTER+="${CLUSTER:+,}m$i=http://127.0.0.1:${PORTS[$((2 * i + 1))]}"
    ENDPOINTS+="${ENDPOINTS:+,}http://127.0.0.1:${PORTS[$((2 * i))]}"
done
for i in 0 1 2; do
    client="http://127.0.0.1:${PORTS[$((2 * i))]}" peer="http://127.0.0.1:${PORTS[$((2 * i + 1))]}"
    etcd --name="m$i" --data-dir="$WORK/etcd-m$i" \
        --listen-client-urls="$client" --advertise-client-urls="$client" \
        --listen-peer-urls="$peer" --initial-advertise-peer-urls="$peer" \
        --initial-cluster="$CLUSTER" --initial-cluster-token="$(basename "$WORK")" --initial-cluster-state=new \
        --heartbeat-interval=200 --election-timeout=2000 \
        --logger=zap --log-outputs=stderr --log-level=warn \
        </dev/null >/dev/null 2>"$WORK/etcd-m$i.log" &
    PIDS+=($!)
done
wait_for "etcd healthy" 30 env ETCDCTL_API=3 etcdctl --endpoints="$ENDPOINTS" --dial-timeout=2s endpoint health
log "etcd: $ENDPOINTS"

# --- replicas
write_config() { # DIR FLEET_ID (empty: no fleet section) NEW_PERCENT
    local dir=$1 id=$2 new=$3
    mkdir -p "$dir"
    {
        echo "listeners:"
        echo "  - { name: public, addr: \"127.0.0.1:0\" }"
        echo "admin: { addr: \"127.0.0.1:0\" }"
        echo "weights_file: weights.yaml"
        echo "access_log: { path: off }"
        echo "server: { workers: $(nproc) }"
        echo "backends:"
        echo "  legacy: { url: \"http://$LEGACY\" }"
        echo "  new: { url: \"http://$NEW\" }"
        echo "routes:"
        echo "  - name: main"
        echo "    match: { path_prefix: / }"
        echo "    stable: legacy"
        echo "    backends: { legacy: {}, new: {} }"
        if [ -n "$id" ]; then
            echo "fleet:"
            echo "  etcd:"
            echo "    endpoints: [\"${ENDPOINTS//,/\", \"}\"]"
            echo "    prefix: $PREFIX"
            echo "  replica_id: $id"
        fi
    } >"$dir/cutover.yaml"
    echo "main: { legacy: $((100 - new)), new: $new }" >"$dir/weights.yaml"
}

start_replica() { # NAME
    local dir="$WORK/$1"
    (cd "$dir" && exec "$BIN" run -c cutover.yaml --ready-file ready.json) >"$dir/out.log" 2>&1 &
    PIDS+=($!)
}

for r in a b c; do write_config "$WORK/$r" "$r" 0; done
"$BIN" fleet seed -c "$WORK/a/cutover.yaml" >"$WORK/seed.log" 2>&1 || die "seed: $(cat "$WORK/seed.log")"
for r in a b c; do start_replica "$r"; done
for r in a b c; do wait_for "replica $r ready" 30 test -s "$WORK/$r/ready.json"; done
ADMIN_A=$(json_field "$WORK/a/ready.json" 'd["admin"]')
PUBLIC_B=$(json_field "$WORK/b/ready.json" 'd["listeners"][0]["addr"]')
PUBLIC_C=$(json_field "$WORK/c/ready.json" 'd["listeners"][0]["addr"]')
ADMIN_B=$(json_field "$WORK/b/ready.json" 'd["admin"]')
converged() {
    curl -sf "http://$ADMIN_A/admin/fleet" >"$WORK/fleet.json" &&
        [ "$(json_field "$WORK/fleet.json" 'd["converged"] is True and len(d["replicas"]) == 3')" = True ]
}
wait_for "3 replicas converged" 30 converged
log "replicas: A admin $ADMIN_A; B $PUBLIC_B; C $PUBLIC_C"

# --- 1. propagation
log "propagation: $CHANGES changes through A, B and C polled"
run python3 benches/fleet/propagation.py --admin "$ADMIN_A" --route main \
    --new-upstream "$NEW" --legacy-upstream "$LEGACY" \
    --replica "B=$PUBLIC_B" --replica "C=$PUBLIC_C" \
    --changes "$CHANGES" --json "$WORK/propagation.json" >"$WORK/propagation.txt"
cat "$WORK/propagation.txt"

# --- 2. the request path, fleet on (B) and off (D), both at main 90/10
curl -sf -X PUT "http://$ADMIN_A/admin/weights/main" -H 'Content-Type: application/json' -d '{"new": 10}' >/dev/null ||
    die "shift main new=10 refused"
b_at_10() {
    curl -sf "http://$ADMIN_B/admin/weights" >"$WORK/weights-b.json" &&
        [ "$(json_field "$WORK/weights-b.json" 'd["main"]["new"] == 10')" = True ]
}
wait_for "B serving main new=10" 10 b_at_10
write_config "$WORK/d" "" 10
start_replica d
wait_for "replica d ready" 30 test -s "$WORK/d/ready.json"
PUBLIC_D=$(json_field "$WORK/d/ready.json" 'd["listeners"][0]["addr"]')

rate() { # ADDR: requests per second of one wrk run
    local out
    out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" "http://$1/" 2>&1)
    grep -q 'Non-2xx\|Socket errors' <<<"$out" && log "wrk against $1: $(grep 'Non-2xx\|Socket errors' <<<"$out")"
    awk '/^Requests\/sec:/ {print $2}' <<<"$out"
}
ON=() OFF=()
for round in $(seq "$ROUNDS"); do
    OFF+=("$(rate "$PUBLIC_D")")
    ON+=("$(rate "$PUBLIC_B")")
    log "round $round: fleet off ${OFF[-1]} req/s, fleet on ${ON[-1]} req/s"
done
python3 - "${ON[*]}" "${OFF[*]}" <<'EOF' | tee "$WORK/requestpath.txt"
import statistics, sys
on = [float(x) for x in sys.argv[1].split()]
off = [float(x) for x in sys.argv[2].split()]
ratios = [a / b for a, b in zip(on, off)]
print(f"request path, wrk: fleet on {statistics.median(on):,.0f} req/s (rounds {', '.join(f'{x:,.0f}' for x in on)}), "
      f"fleet off {statistics.median(off):,.0f} req/s (rounds {', '.join(f'{x:,.0f}' for x in off)})")
print(f"ratio on / off: {statistics.median(on) / statistics.median(off):.3f} (per round {', '.join(f'{r:.3f}' for r in ratios)})")
EOF
