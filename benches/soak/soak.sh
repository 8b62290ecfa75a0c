#!/usr/bin/env bash
# Soak test: mixed traffic through the release binary for SOAK_SECONDS
# (default 180) on loopback, while the `new` backend is killed and restarted
# every ~20 s, the weights move every 3 s (alternately `cutover shift` and the
# admin API), and the mirror's shadow target accepts connections and never
# answers. Prints a report and writes it to docs/SOAK.md (SOAK_REPORT=path to
# write elsewhere, SOAK_REPORT=- for stdout only).
#
#   benches/soak/soak.sh                 # 3 minutes
#   SOAK_SECONDS=60 benches/soak/soak.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)
seconds=${SOAK_SECONDS:-180}
report=${SOAK_REPORT:-docs/SOAK.md}
here=benches/soak

cargo build --release --bin cutover >&2
bin=$root/target/release/cutover

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  [ -n "${new_pid:-}" ] && kill "$new_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
proxy_port=$(free_port); admin_port=$(free_port); legacy_port=$(free_port); new_port=$(free_port); shadow_port=$(free_port)
admin=127.0.0.1:$admin_port

python3 "$here/backend.py" app legacy "$legacy_port" & pids+=($!)
python3 "$here/backend.py" hang "$shadow_port" & pids+=($!)
start_new() { python3 "$here/backend.py" app new "$new_port" & new_pid=$!; }
start_new

cat > "$work/cutover.yaml" <<EOF
listeners: [{ name: public, addr: "127.0.0.1:$proxy_port" }]
admin: { addr: "$admin" }
weights_file: weights.yaml
access_log: { path: off }
server: { max_body_bytes: 1048576 }
backends:
  legacy: { url: "http://127.0.0.1:$legacy_port" }
  new: { url: "http://127.0.0.1:$new_port", connect_timeout: 500ms, passive_health: { consecutive_failures: 3, cool_off: 2s } }
  shadow: { url: "http://127.0.0.1:$shadow_port", timeout: 2s }
routes:
  - name: api
    match: { path_prefix: /api/ }
    stable: legacy
    backends: { legacy: {}, new: {}, shadow: {} }
    sticky: { header: X-User }
    mirror: { to: shadow, percent: 100, timeout: 1s, max_in_flight: 64 }
  - name: default
    backends: { legacy: {} }
EOF
echo "api: { legacy: 80, new: 20, shadow: 0 }" > "$work/weights.yaml"

"$bin" run -c "$work/cutover.yaml" > "$work/proxy.out" 2> "$work/proxy.err" &
proxy_pid=$!
pids+=("$proxy_pid")
for _ in $(seq 100); do
  curl -sf "http://$admin/readyz" > /dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://$admin/readyz" > /dev/null || { echo "the proxy did not start:" >&2; cat "$work/proxy.err" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status"; }
fds() { ls "/proc/$proxy_pid/fd" | wc -l; }
rss_start=$(rss_kib); fds_start=$(fds)

# Peak RSS, sampled every 250 ms.
( peak=0
  while kill -0 "$proxy_pid" 2>/dev/null; do
    r=$(awk '/^VmRSS:/ {print $2}' "/proc/$proxy_pid/status" 2>/dev/null || echo 0)
    [ "${r:-0}" -gt "$peak" ] && { peak=$r; echo "$peak" > "$work/peak"; }
    sleep 0.25
  done ) & pids+=($!)

end=$((SECONDS + seconds))

# Kill and restart the new backend every ~20 s.
( restarts=0
  while [ $((SECONDS + 20)) -lt "$end" ]; do
    sleep 18
    { kill -9 "$new_pid"; wait "$new_pid"; } 2>/dev/null || true
    sleep 2
    start_new
    restarts=$((restarts + 1))
    echo "$restarts" > "$work/restarts"
  done
  sleep $((end - SECONDS > 0 ? end - SECONDS : 0))
  kill "$new_pid" 2>/dev/null || true ) & pids+=($!)

# Move the weights every 3 s, alternately with the CLI and the admin API.
( ok=0; failed=0; i=0
  steps=(0 10 25 50 75 90 50 25)
  while [ $((SECONDS + 3)) -lt "$end" ]; do
    sleep 3
    n=${steps[$((i % ${#steps[@]}))]}; l=$((100 - n))
    if [ $((i % 2)) -eq 0 ]; then
      "$bin" shift -c "$work/cutover.yaml" --admin "$admin" api "legacy=$l" "new=$n" shadow=0 > /dev/null 2>&1 && ok=$((ok + 1)) || failed=$((failed + 1))
    else
      curl -sf -X PUT "http://$admin/admin/weights/api" -d "{\"legacy\": $l, \"new\": $n, \"shadow\": 0}" > /dev/null && ok=$((ok + 1)) || failed=$((failed + 1))
    fi
    i=$((i + 1))
    echo "$ok $failed" > "$work/shifts"
  done ) & pids+=($!)

python3 "$here/drive.py" "127.0.0.1:$proxy_port" "$seconds" "$work/drive.json" > /dev/null
sleep 1

alive=no
if kill -0 "$proxy_pid" 2>/dev/null && curl -sf "http://$admin/healthz" > /dev/null; then alive=yes; fi
rss_end=$(rss_kib 2>/dev/null || echo 0); fds_end=$(fds 2>/dev/null || echo 0)
rss_peak=$(cat "$work/peak" 2>/dev/null || echo "$rss_start")
curl -sf "http://$admin/metrics" > "$work/metrics" || true
restarts=$(cat "$work/restarts" 2>/dev/null || echo 0)
read -r shifts_ok shifts_failed < <(cat "$work/shifts" 2>/dev/null || echo "0 0")

python3 - "$work" "$seconds" "$alive" "$rss_start" "$rss_peak" "$rss_end" "$fds_start" "$fds_end" "$restarts" "$shifts_ok" "$shifts_failed" > "$work/report.md" <<'PY'
import json, re, sys
work, seconds, alive, rss0, rss_peak, rss1, fd0, fd1, restarts, shifts_ok, shifts_failed = sys.argv[1:]
d = json.load(open(f"{work}/drive.json"))
metrics = open(f"{work}/metrics").read() if alive == "yes" else ""

def total(name, label=None):
    sums = {}
    for line in metrics.splitlines():
        m = re.match(rf'^{name}{{(.*)}} (\S+)$', line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
            key = labels.get(label, "") if label else ""
            sums[key] = sums.get(key, 0) + float(m.group(2))
    return sums

fmt = lambda sums: ", ".join(f"{k} {int(v)}" for k, v in sorted(sums.items())) or "none"
mib = lambda kib: f"{int(kib) / 1024:.1f} MiB"
ok = sum(v for k, v in d["status"].items() if k.startswith("2"))
failures = {k: v for k, v in d["status"].items() if not k.startswith("2")}
rows = [
    ("duration", f"{seconds} s"),
    ("requests sent", f"{d['requests']} ({ok} answered 2xx)"),
    ("failures by status", ", ".join(f"{k}: {v}" for k, v in failures.items()) or "none"),
    ("latency p50 / p99 / max", f"{d['p50_ms']} ms / {d['p99_ms']} ms / {d['max_ms']} ms"),
    ("WebSocket", f"{d['ws_sessions']} sessions, {d['ws_messages_ok']} echoes, {d['ws_failures']} failures"),
    ("proxy RSS start / peak / end", f"{mib(rss0)} / {mib(rss_peak)} / {mib(rss1)}"),
    ("open fds start / end", f"{fd0} / {fd1}"),
    ("proxy stayed up", alive),
    ("new backend restarts", restarts),
    ("weight shifts ok / failed", f"{shifts_ok} / {shifts_failed}"),
    ("upstream errors by kind", fmt(total("cutover_upstream_errors_total", "kind"))),
    ("upstream errors by backend", fmt(total("cutover_upstream_errors_total", "backend"))),
    ("retries by backend", fmt(total("cutover_retries_total", "backend"))),
    ("mirror requests by outcome", fmt(total("cutover_mirror_requests_total", "outcome"))),
]
print("| measure | value |")
print("| --- | --- |")
for k, v in rows:
    print(f"| {k} | {v} |")
PY

cat "$work/report.md"
if [ "$report" != "-" ]; then
  {
    cat <<'EOF'
# Soak test

`benches/soak/soak.sh` runs the release binary on loopback for
`SOAK_SECONDS` (default 180) under mixed traffic from `benches/soak/drive.py`
(8 clients at 25 requests/s each: GETs on `/api/` with a sticky `X-User` from
200 users, POSTs with 1–16 KiB bodies, GETs on the default route, and two
WebSocket sessions echoing a message every half second), while:

- the `new` backend is killed (`SIGKILL`) and restarted every ~20 s;
- the `api` weights move every 3 s, alternately with `cutover shift` and
  `PUT /admin/weights/api`;
- every `/api/` request is mirrored to a shadow backend that accepts
  connections and never answers (mirror timeout 1 s, at most 64 in flight).

Backends are small Python servers (`benches/soak/backend.py`). The script
writes the table below from the run it just made; it is never edited by hand.

Failures to expect: a `POST` (not idempotent, so not retried) that was on
`new` when it was killed gets a 502, while `GET`s that got no answer are
retried on another backend; a client that then reuses the keep-alive connection of
such a `POST`, whose body the proxy did not finish reading, can find it
closed (`BrokenPipeError`, `RemoteDisconnected`). The mirror's errors and
drops are the hanging shadow target; they never reach clients.

EOF
    echo "Last run: $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, \`SOAK_SECONDS=$seconds\`."
    echo
    cat "$work/report.md"
  } > "$report"
  echo "written to $report" >&2
fi
[ "$alive" = yes ]
