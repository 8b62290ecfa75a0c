#!/usr/bin/env bash
# Mirrored throughput with compressed answers against uncompressed ones.
#
#   benches/load/mirror_gzip.sh
#
# Starts the bench upstream with `--gzip` (its `/json/...` paths answer a
# fixed ~10 KB JSON document, gzip-compressed when the request accepts gzip)
# and two cutovers in front of it: one routing everything to `legacy`, one
# also mirroring every request to `new` and comparing the answers. wrk runs
# against each, without and with `Accept-Encoding: gzip`, in alternating
# rounds; then the parity report shows both kinds of pairs were compared.
# At saturation most shadows are dropped (`max_in_flight`): the comparisons
# made per second are the parity capacity, the req/s the primary's cost.
# Loopback only; everything it starts is stopped on exit.
#
# Environment: ROUNDS [3], DURATION [5s], WRK_THREADS [2], CONNS [50],
# BASE_PORT [19400] (uses BASE_PORT+1 .. BASE_PORT+21), CUTOVER [the
# release build, built first] (another build to measure instead).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=cutover_config.sh
. "$HERE/cutover_config.sh"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WRK_THREADS=${WRK_THREADS:-2}
CONNS=${CONNS:-50}
BASE_PORT=${BASE_PORT:-19400}
P_LEGACY=$((BASE_PORT + 1))
P_NEW=$((BASE_PORT + 2))
declare -A PORT=([plain]=$((BASE_PORT + 10)) [mirror]=$((BASE_PORT + 11)))
declare -A ADMIN=([plain]=$((BASE_PORT + 20)) [mirror]=$((BASE_PORT + 21)))

log() { echo "mirror_gzip: $*" >&2; }
die() {
    log "$*"
    exit 1
}

command -v wrk >/dev/null || die "wrk is not installed"
for p in "$P_LEGACY" "$P_NEW" "${PORT[@]}" "${ADMIN[@]}"; do
    [ -z "$(ss -Hltn "sport = :$p" 2>/dev/null)" ] || die "port $p is in use (set BASE_PORT)"
done

WORK=$(mktemp -d /tmp/cutover-mirror-gzip.XXXXXX)
PIDS=()
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

wait_http() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}

if [ -n "${CUTOVER:-}" ]; then
    log "building the upstream (release); cutover: $CUTOVER"
    (cd "$ROOT" && cargo build --release --quiet --example bench-upstream)
else
    log "building cutover and the upstream (release)"
    (cd "$ROOT" && cargo build --release --quiet --bin cutover --example bench-upstream)
fi
CUTOVER=${CUTOVER:-$ROOT/target/release/cutover}

"$ROOT/target/release/examples/bench-upstream" --gzip "127.0.0.1:$P_LEGACY" "127.0.0.1:$P_NEW" 2>"$WORK/upstream.log" &
PIDS+=($!)
wait_http "http://127.0.0.1:$P_LEGACY/json" || die "the upstream did not come up"

for kind in plain mirror; do
    config_kind=$kind
    [ "$kind" = plain ] && config_kind=base
    write_cutover_config "$WORK/$kind" "$config_kind" "${PORT[$kind]}" "$P_LEGACY" "$P_NEW" 2
    # A fixed admin port, to read the parity report; both serve everything from legacy.
    sed -i "s/^admin: .*/admin: { addr: \"127.0.0.1:${ADMIN[$kind]}\" }/" "$WORK/$kind/cutover.yaml"
    echo "main: { legacy: 100, new: 0 }" >"$WORK/$kind/weights.yaml"
    (cd "$WORK/$kind" && RUST_LOG=warn exec "$CUTOVER" run -c cutover.yaml >out.log 2>&1) &
    PIDS+=($!)
    wait_http "http://127.0.0.1:${PORT[$kind]}/json/plain" || die "cutover ($kind) did not come up: $(tail -5 "$WORK/$kind/out.log")"
done

encoding=$(curl -fsS -o /dev/null -w '%{header_json}' -H 'Accept-Encoding: gzip' "http://127.0.0.1:${PORT[mirror]}/json/gzip" |
    python3 -c 'import json,sys; print(json.load(sys.stdin).get("content-encoding", ["none"])[0])')
size=$(curl -fsS "http://127.0.0.1:$P_LEGACY/json" | wc -c)
gz_size=$(curl -fsS -H 'Accept-Encoding: gzip' "http://127.0.0.1:$P_LEGACY/json" | wc -c)
log "body: $size bytes, $gz_size gzip-compressed; through the mirrored cutover with Accept-Encoding: gzip: content-encoding $encoding"
[ "$encoding" = gzip ] || die "the compressed answer did not reach the client compressed"

# $1 plain|mirror, $2 plain|gzip: req/s of one wrk run.
measure() {
    local kind=$1 enc=$2 out header=()
    [ "$enc" = gzip ] && header=(-H 'Accept-Encoding: gzip')
    out=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" "${header[@]}" "http://127.0.0.1:${PORT[$kind]}/json/$enc")
    grep -q 'Non-2xx' <<<"$out" && die "errors during $kind $enc: $out"
    awk '/^Requests\/sec:/ { print $2 }' <<<"$out"
}

declare -A SUM=()
printf '%-6s %14s %14s %14s %14s\n' round unmirrored-plain mirrored-plain unmirrored-gzip mirrored-gzip
for round in $(seq "$ROUNDS"); do
    # Alternate the order from round to round, so drift hits every case alike.
    cases=("plain plain" "mirror plain" "plain gzip" "mirror gzip")
    [ $((round % 2)) = 0 ] && cases=("mirror gzip" "plain gzip" "mirror plain" "plain plain")
    declare -A R=()
    for c in "${cases[@]}"; do
        read -r kind enc <<<"$c"
        R[$kind-$enc]=$(measure "$kind" "$enc")
        SUM[$kind-$enc]=$(awk -v a="${SUM[$kind-$enc]:-0}" -v b="${R[$kind-$enc]}" 'BEGIN { print a + b }')
    done
    printf '%-6s %14s %14s %14s %14s\n' "$round" "${R[plain-plain]}" "${R[mirror-plain]}" "${R[plain-gzip]}" "${R[mirror-gzip]}"
done

awk -v n="$ROUNDS" -v pp="${SUM[plain-plain]}" -v mp="${SUM[mirror-plain]}" \
    -v pg="${SUM[plain-gzip]}" -v mg="${SUM[mirror-gzip]}" 'BEGIN {
    printf "mean   %14.0f %14.0f %14.0f %14.0f req/s\n", pp / n, mp / n, pg / n, mg / n
    printf "mirrored/unmirrored: plain %.2f, gzip %.2f; mirrored gzip/plain %.2f\n", mp / pp, mg / pg, mg / mp
}'

echo "parity (mirrored cutover): outcomes, then per endpoint compared/clean"
curl -fsS "http://127.0.0.1:${ADMIN[mirror]}/admin/parity" | python3 -c '
import json, sys
report = json.load(sys.stdin)
routes = report["routes"] if isinstance(report, dict) and "routes" in report else report
for route in routes:
    outcomes = route.get("outcomes") or {}
    share = outcomes.get("compared", 0) / max(1, sum(outcomes.values()))
    print("route", route.get("route"), "outcomes", json.dumps(outcomes), "compared share %.3f" % share)
    for e in route.get("endpoints", []):
        print("  ", e["endpoint"], "compared", e["compared"], "clean", e["clean"])
'
