#!/usr/bin/env bash
# A/B of two cutover builds under the `small` load, with the floor
# (benches/load/floor.rs) beside them: the three run in turn, round after
# round (A B floor A B floor ...), so the machine's drift falls on all of
# them alike. For a change too small to show in compare.sh's 3 rounds.
#
#   benches/load/ab.sh BEFORE AFTER
#
# BEFORE and AFTER are cutover binaries (copy target/release/cutover aside
# before rebuilding). Prints each round's req/s and, from the medians of
# the rounds, AFTER ÷ BEFORE and each ÷ floor.
#
# Environment (defaults in brackets): ROUNDS [6], DURATION [4s], CONNS [50],
# WRK_THREADS [2], WORKERS [2], BASE_PORT [19400] (ports BASE_PORT + 1..5 on
# 127.0.0.1), REQ_PATH [small] (64k: the 65,536-byte answer), KIND [base]
# (cutover_config.sh's scenario: mirror, mirror-noise ...). Needs wrk, curl,
# python3, cargo.
set -euo pipefail

[ $# -eq 2 ] || { sed -n '2,17p' "$0"; exit 2; }
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
for bin in "$BEFORE" "$AFTER"; do
    [ -x "$bin" ] || { echo "ab.sh: $bin is not an executable" >&2; exit 2; }
done
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/benches/load"
ROUNDS=${ROUNDS:-6}
DURATION=${DURATION:-4s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-2}
WORKERS=${WORKERS:-2}
BASE_PORT=${BASE_PORT:-19400}
REQ_PATH=${REQ_PATH:-small}
KIND=${KIND:-base}
P_LEGACY=$((BASE_PORT + 1)) P_NEW=$((BASE_PORT + 2))
declare -A PORT=([before]=$((BASE_PORT + 3)) [after]=$((BASE_PORT + 4)) [floor]=$((BASE_PORT + 5)))

for tool in wrk curl python3 cargo; do
    command -v "$tool" >/dev/null || { echo "ab.sh: needs $tool" >&2; exit 2; }
done
# shellcheck source=benches/load/cutover_config.sh
source "$HERE/cutover_config.sh"

# shellcheck source=benches/load/scratch.sh
source "$ROOT/benches/load/scratch.sh"
start_scratch ab

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --example bench-upstream --example bench-floor
"$ROOT/target/release/examples/bench-upstream" "127.0.0.1:$P_LEGACY" "127.0.0.1:$P_NEW" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_up "$P_LEGACY" small
"$ROOT/target/release/examples/bench-floor" "127.0.0.1:${PORT[floor]}" "127.0.0.1:$P_LEGACY" "$WORKERS" >"$WORK/floor.log" 2>&1 &
PIDS+=($!)
for side in before after; do
    write_cutover_config "$WORK/$side" "$KIND" "${PORT[$side]}" "$P_LEGACY" "$P_NEW" "$WORKERS"
    bin=$BEFORE
    [ "$side" = after ] && bin=$AFTER
    RUST_LOG=warn "$bin" run -c "$WORK/$side/cutover.yaml" >"$WORK/$side.log" 2>&1 &
    PIDS+=($!)
done
for target in before after floor; do wait_up "${PORT[$target]}" small; done

rounds "$REQ_PATH" "" before after floor
ratios after/before before/floor after/floor
