# shellcheck shell=bash
# Sourced by ab.sh and gzip.sh: a scratch folder and the processes started
# in it, all removed and stopped on exit; and a bounded wait for a port.
#
#   start_scratch NAME      sets WORK (a new /tmp/cutover-NAME.XXXXXX) and PIDS
#   wait_up PORT PATH       waits up to 10 s for http://127.0.0.1:PORT/PATH to answer

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
