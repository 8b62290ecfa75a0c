#!/usr/bin/env bash
# CPU profile of cutover under a short wrk load (HTTP/1.1 keep-alive, 100-byte
# responses, 90/10 split), sampled with `perf record -e cpu-clock`.
#
#   benches/load/profile.sh [OUT_DIR]
#
# Environment: KIND [base] (base | sticky | routes1000 | mirror), DURATION [15] seconds
# of load, of which the middle ~10 s are sampled; BASE_PORT [19150].
# Writes OUT_DIR (default /tmp/cutover-profile)/: perf.data; summary.md
# (kernel time by system call, user time by kind of work, inclusive shares of
# chosen frames); report-self.txt (flat user-space profile, self time);
# report-callers.txt (call chains of the hottest entries).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"
OUT=${1:-/tmp/cutover-profile}
KIND=${KIND:-base}
DURATION=${DURATION:-15}
BASE_PORT=${BASE_PORT:-19150}
P_LEGACY=$((BASE_PORT + 1))
P_NEW=$((BASE_PORT + 2))
P_PROXY=$((BASE_PORT + 3))
export PATH="$PATH:/usr/sbin:/sbin"

command -v perf >/dev/null || { echo "perf is missing (Debian: linux-perf)" >&2; exit 1; }
command -v wrk >/dev/null || { echo "wrk is missing (Debian: wrk)" >&2; exit 1; }
for p in "$P_LEGACY" "$P_NEW" "$P_PROXY"; do
    [ -z "$(ss -Hltn "sport = :$p")" ] || { echo "port $p is in use" >&2; exit 1; }
done

cargo build --release --quiet --bin cutover --example bench-upstream
mkdir -p "$OUT"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

# shellcheck source=benches/load/cutover_config.sh
source "$ROOT/benches/load/cutover_config.sh"
write_cutover_config "$OUT" "$KIND" "$P_PROXY" "$P_LEGACY" "$P_NEW" "$(nproc)"

target/release/examples/bench-upstream "127.0.0.1:$P_LEGACY" "127.0.0.1:$P_NEW" 2>"$OUT/upstream.log" &
PIDS+=($!)
RUST_LOG=warn target/release/cutover run -c "$OUT/cutover.yaml" 2>"$OUT/cutover.log" &
CUTOVER_PID=$!
PIDS+=("$CUTOVER_PID")
for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:$P_PROXY/small" 2>/dev/null && break
    sleep 0.1
done

script="$ROOT/benches/load/stats.lua"
[ "$KIND" = sticky ] && script="$ROOT/benches/load/sticky.lua"
wrk -t2 -c50 -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$P_PROXY/small" >"$OUT/wrk.txt" 2>&1 &
WRK=$!
PIDS+=("$WRK")
sleep 2
perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$CUTOVER_PID" \
    -o "$OUT/perf.data" -- sleep $((DURATION > 14 ? DURATION - 4 : 10)) 2>"$OUT/perf-record.log"
wait "$WRK" || true
# Flat profile of user space (cutover and libc), self time.
perf report -i "$OUT/perf.data" --stdio --no-children --dsos cutover,libc.so.6 \
    --sort dso,symbol -g none --percent-limit 0.4 2>/dev/null |
    sed 's/ *$//; s/  *-  *-$//' | grep -v '^$' >"$OUT/report-self.txt"
# Callers of the hottest entries, for attribution.
perf report -i "$OUT/perf.data" --stdio --no-children --percent-limit 1 \
    -g caller,0.5,callee,function,percent --sort symbol 2>/dev/null |
    sed 's/ *$//' >"$OUT/report-callers.txt"
perf script -i "$OUT/perf.data" -F comm,tid,ip,sym,dso --no-inline >"$OUT/script.txt" 2>/dev/null
python3 "$ROOT/benches/load/perfsummary.py" "$OUT/script.txt" >"$OUT/summary.md"
grep WRKSTATS "$OUT/wrk.txt" || true
cat "$OUT/summary.md"
echo
echo "top of the user-space flat profile:"
grep '%' "$OUT/report-self.txt" | head -25
echo "profile written to $OUT (summary.md, report-self.txt, report-callers.txt, perf.data)"
