#!/usr/bin/env bash
# Response compression side by side: cutover with `compression: { gzip:
# true }` and nginx with `gzip on` (both at level 1, nginx's default), in
# front of one upstream that never compresses (`bench-upstream --json`: a
# ~10 KB DRF-style JSON page), loaded by wrk asking for gzip. The two run in
# turn, round after round, so the machine's drift falls on both alike.
#
#   benches/load/gzip.sh
#
# Prints each round's req/s, the bytes each sends per answer, and from the
# medians cutover ÷ nginx. Checks first that both answer gzip that decodes
# to the upstream's document.
#
# Environment (defaults in brackets): ROUNDS [5], DURATION [5s], CONNS [50],
# WRK_THREADS [1], WORKERS [2], BASE_PORT [19500] (ports BASE_PORT + 1..3
# on 127.0.0.1). Needs wrk, curl, python3, cargo and Debian's nginx.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-5s}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-1}
WORKERS=${WORKERS:-2}
BASE_PORT=${BASE_PORT:-19500}
LEVEL=${LEVEL:-1}
NGINX_LEVEL=${NGINX_LEVEL:-$LEVEL}
P_UP=$((BASE_PORT + 1))
declare -A PORT=([cutover]=$((BASE_PORT + 2)) [nginx]=$((BASE_PORT + 3)))

for tool in wrk curl python3 cargo nginx; do
    command -v "$tool" >/dev/null || { echo "gzip.sh: needs $tool" >&2; exit 2; }
done

# shellcheck source=benches/load/scratch.sh
source "$ROOT/benches/load/scratch.sh"
start_scratch gzip

cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin cutover --example bench-upstream
"$ROOT/target/release/examples/bench-upstream" --json "127.0.0.1:$P_UP" >"$WORK/upstream.log" 2>&1 &
PIDS+=($!)
wait_up "$P_UP" json

cat >"$WORK/cutover.yaml" <<EOF
listeners: [ { name: public, addr: "127.0.0.1:${PORT[cutover]}" } ]
admin: { addr: "127.0.0.1:0" }
access_log: { path: "off" }
server: { workers: $WORKERS }
compression: { gzip: true, level: $LEVEL, min_bytes: 1024, types: [application/json] }
backends: { app: { url: "http://127.0.0.1:$P_UP" } }
routes: [ { name: main, match: { path_prefix: / }, backends: { app: {} } } ]
EOF
echo "main: { app: 100 }" >"$WORK/weights.yaml"
RUST_LOG=warn "$ROOT/target/release/cutover" run -c "$WORK/cutover.yaml" >"$WORK/cutover.log" 2>&1 &
PIDS+=($!)

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes $WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    gzip on;
    gzip_comp_level $NGINX_LEVEL;
    gzip_min_length 1024;
    gzip_types application/json;
    gzip_vary on;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$http_host;
    proxy_set_header X-Forwarded-For \$remote_addr;
    upstream app { server 127.0.0.1:$P_UP; keepalive 64; keepalive_requests 1000000; }
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location / { proxy_pass http://app; }
    }
}
EOF
nginx -p "$WORK/nginx" -e "$WORK/nginx/error.log" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' >"$WORK/nginx.log" 2>&1 &
PIDS+=($!)
for target in cutover nginx; do wait_up "${PORT[$target]}" json; done

# Both answer gzip that decodes to the upstream's document.
curl -fsS -o "$WORK/plain.json" "http://127.0.0.1:$P_UP/json"
declare -A BYTES
for target in cutover nginx; do
    headers=$(curl -fsS -D - -o "$WORK/$target.gz" -H 'Accept-Encoding: gzip' "http://127.0.0.1:${PORT[$target]}/json")
    grep -qi '^content-encoding: gzip' <<<"$headers" || { echo "gzip.sh: $target did not gzip: $headers" >&2; exit 1; }
    python3 -c 'import gzip, sys; sys.exit(gzip.open(sys.argv[1]).read() != open(sys.argv[2], "rb").read())' \
        "$WORK/$target.gz" "$WORK/plain.json" || { echo "gzip.sh: $target's gzip does not decode to the document" >&2; exit 1; }
    BYTES[$target]=$(stat -c %s "$WORK/$target.gz")
done
echo "answer: $(stat -c %s "$WORK/plain.json") bytes of JSON; gzipped by cutover ${BYTES[cutover]} bytes, by nginx ${BYTES[nginx]}"

rounds json "Accept-Encoding: gzip" cutover nginx
ratios cutover/nginx
