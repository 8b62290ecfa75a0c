# shellcheck shell=bash
# Sourced by ab.sh and gzip.sh: a scratch folder and the processes started
# in it, all removed and stopped on exit; a bounded wait for a port; and
# interleaved rounds of wrk with their ratios.
#
#   start_scratch NAME      sets WORK (a new /tmp/cutover-NAME.XXXXXX) and PIDS
#   wait_up PORT PATH       waits up to 10 s for http://127.0.0.1:PORT/PATH to answer
#   rounds PATH HEADER T... ROUNDS rounds of wrk against each target in turn
#   ratios A/B...           median req/s, and each A ÷ B

start_scratch() {
    WORK=$(mktemp -d "/tmp/cutover-$1.XXXXXX")
    PIDS=()
    trap stop_scratch EXIT INT TERM
}

stop_scratch() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

wait_up() {
    for _ in $(seq 100); do
        curl -fsS -o /dev/null "http://127.0.0.1:$1/$2" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "$(basename "$0"): nothing answers on port $1" >&2
    tail -n 5 "$WORK"/*.log >&2 || true
    exit 1
}

# rounds PATH HEADER TARGET... : ROUNDS rounds of wrk against each target in
# turn (http://127.0.0.1:${PORT[TARGET]}/PATH, with HEADER when not empty),
# so the machine's drift falls on all alike; prints each round and keeps
# the rates in $WORK/rows.tsv for ratios.
rounds() {
    local path=$1 header=$2
    shift 2
    local round target rps line
    for round in $(seq "$ROUNDS"); do
        line="round $round"
        for target in "$@"; do
            rps=$(wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" ${header:+-H "$header"} "http://127.0.0.1:${PORT[$target]}/$path" |
                awk '/Requests\/sec/ { print $2 }')
            printf '%s\t%s\t%s\n' "$round" "$target" "$rps" >>"$WORK/rows.tsv"
            line+="  $target $(printf '%.0f' "$rps")"
        done
        echo "$line"
    done
}

# ratios A/B... : the median req/s of every target, then for each pair A ÷ B,
# the median of the rounds' ratios (with each round's) and the medians' ratio.
ratios() {
    python3 - "$WORK/rows.tsv" "$@" <<'PY'
import statistics, sys
rate = {}
for line in open(sys.argv[1]):
    _, target, rps = line.split()
    rate.setdefault(target, []).append(float(rps))
med = {t: statistics.median(v) for t, v in rate.items()}
print("median req/s: " + ", ".join("%s %.0f" % (t, m) for t, m in med.items()))
for pair in sys.argv[2:]:
    a, b = pair.split("/")
    per_round = [x / y for x, y in zip(rate[a], rate[b])]
    print("%s / %s: %.3f (per round: %s; medians: %.3f)" % (
        a, b, statistics.median(per_round), " / ".join("%.2f" % r for r in per_round), med[a] / med[b]))
PY
}
