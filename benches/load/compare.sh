#!/usr/bin/env bash
# Side-by-side load comparison: cutover, nginx and haproxy in front of one
# shared upstream, plus the upstream alone ("direct", the ceiling) and the
# least a hyper proxy can do ("floor", benches/load/floor.rs: one header
# added, no routing, pool, metrics or logging), which tells cutover's own
# cost from hyper's, and the same with an HTTP/1 codec of its own ("native",
# benches/load/floor_native.rs: httparse, Content-Length framing only), which
# tells what hyper's codec costs.
#
#   benches/load/compare.sh [OUT.md]
#
# Environment (defaults in brackets):
#   ROUNDS [3]          rounds; each round runs every proxy in turn (A B C A B C ...)
#   DURATION [10s]      length of each load run
#   OUT [benches/load/results.md]   the Markdown report (the first argument wins)
#   SCENARIOS ["small small-h2 64k sticky routes1000 tls idle"]; with small,
#                       each proxy's routes1000 run follows its small run, and
#                       the report divides the two round by round; small and
#                       64k also run both floors; tls runs HTTPS keep-alive
#                       (ECDSA P-256), a new connection per request resuming
#                       its TLS session (wrk), a new connection per request
#                       with a full handshake (ECDSA P-256 and RSA-2048;
#                       benches/load/handshake.rs), and, with idle, idle TLS
#                       connections; also available:
#                       mirror (every request shadowed to the other backend;
#                       cutover and nginx, haproxy has no built-in mirroring;
#                       each mirrored run follows a run of the same proxy
#                       unmirrored, `mirror-off`, and the report gives the
#                       share of the rate kept, round by round),
#                       counts (system calls and malloc calls per request of
#                       each proxy and both floors under the small load, counted with perf;
#                       needs root or perf_event access, and slows the proxies
#                       while counting)
#                       instructions (user-space instructions per proxied
#                       request of each proxy, counted exactly by valgrind's
#                       callgrind; cutover's also split by the crate whose
#                       code ran; installs valgrind when missing)
#   COUNT_SECONDS [5]   length of each counting window
#   INSTR_REQUESTS [20000]  requests counted per proxy by `instructions`
#   INSTR_KIND [base]   what `instructions` counts: base (the small scenario's
#                       90/10 split), mirror (every request also sent to the
#                       other backend; cutover and nginx only) or routes1000
#                       (the routes1000 scenario's 1,000 routes)
#   IDLE_COUNTS ["1000 10000"]      idle keep-alive connection counts
#   TLS_IDLE_COUNTS ["1000"]        idle TLS connection counts (tls and idle)
#   DIRECT_SCENARIOS ["small"]  scenarios that also load the upstream alone
#                       (64k, small-h2 too for their ceilings; each adds ROUNDS runs,
#                       and the defaults are sized to finish within 10 minutes)
#   CONNS [50] WRK_THREADS [2] H2_STREAMS [10]
#   BASE_PORT [19100]   every port used is BASE_PORT + 1..59 on 127.0.0.1
#   KEEP_WORKDIR [0]    1 keeps the generated configs and raw outputs
#
# Needs: Debian's nginx, haproxy, wrk, nghttp2-client, openssl (installed when missing),
# python3, cargo. Everything listens on 127.0.0.1 only.
set -euo pipefail

START_TIME=$(date +%s)
START_LOAD=$(cut -d' ' -f1-3 /proc/loadavg)
INVOKED_FROM=$(pwd)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/benches/load"
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
OUT=${1:-${OUT:-benches/load/results.md}}
case "$OUT" in
    /*) ;;
    *) if [ -n "${1:-}" ]; then OUT="$INVOKED_FROM/$OUT"; else OUT="$ROOT/$OUT"; fi ;;
esac
SCENARIOS=${SCENARIOS:-"small small-h2 64k sticky routes1000 tls idle"}
IDLE_COUNTS=${IDLE_COUNTS:-"1000 10000"}
TLS_IDLE_COUNTS=${TLS_IDLE_COUNTS:-"1000"}
DIRECT_SCENARIOS=${DIRECT_SCENARIOS:-"small"}
CONNS=${CONNS:-50}
WRK_THREADS=${WRK_THREADS:-2}
H2_STREAMS=${H2_STREAMS:-10}
BASE_PORT=${BASE_PORT:-19100}
KEEP_WORKDIR=${KEEP_WORKDIR:-0}
COUNT_SECONDS=${COUNT_SECONDS:-5}
INSTR_REQUESTS=${INSTR_REQUESTS:-20000}
INSTR_KIND=${INSTR_KIND:-base}
case "$INSTR_KIND" in
    base | mirror | routes1000) ;;
    *) echo "INSTR_KIND must be base, mirror or routes1000, not $INSTR_KIND" >&2; exit 2 ;;
esac
WORKERS=$(nproc)
CLK_TCK=$(getconf CLK_TCK)
export PATH="$PATH:/usr/sbin:/sbin"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ------------------------------------------------------------------ tools

install_missing() {
    local packages=()
    command -v nginx >/dev/null 2>&1 || packages+=(nginx)
    command -v haproxy >/dev/null 2>&1 || packages+=(haproxy)
    command -v wrk >/dev/null 2>&1 || packages+=(wrk)
    command -v h2load >/dev/null 2>&1 || packages+=(nghttp2-client)
    command -v curl >/dev/null 2>&1 || packages+=(curl)
    command -v openssl >/dev/null 2>&1 || packages+=(openssl)
    command -v ss >/dev/null 2>&1 || packages+=(iproute2)
    command -v python3 >/dev/null 2>&1 || packages+=(python3)
    if [[ " $SCENARIOS " == *" instructions "* ]]; then
        command -v valgrind >/dev/null 2>&1 || packages+=(valgrind)
    fi
    [ ${#packages[@]} -eq 0 ] && return
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo="sudo"
    log "installing ${packages[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
}

install_missing
# Debian starts the packaged services on install where it can; they must not
# hold ports or CPU during the runs (ours use their own configs and ports).
for svc in nginx haproxy; do
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
        log "note: a system $svc service is running; it may take CPU during the runs"
    fi
done

# N idle connections need N descriptors in the client and N in the proxy.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -n)
MAX_IDLE=$(printf '%s\n' $IDLE_COUNTS 0 | sort -n | tail -1)
[ "$NOFILE" -ge $((MAX_IDLE + 500)) ] ||
    log "warning: ulimit -n is $NOFILE; the $MAX_IDLE-connection test may fail"

log "building cutover, the upstream and the floors (release)"
cargo build --release --quiet --bin cutover --example bench-upstream --example bench-floor --example bench-floor-native \
    --example bench-handshake
CUTOVER="$ROOT/target/release/cutover"
UPSTREAM="$ROOT/target/release/examples/bench-upstream"
declare -A FLOOR_BIN=([floor]="$ROOT/target/release/examples/bench-floor"
    [native]="$ROOT/target/release/examples/bench-floor-native")
FLOORS=(floor native)
HANDSHAKE="$ROOT/target/release/examples/bench-handshake"

# --------------------------------------------------------------- processes

WORK=$(mktemp -d /tmp/cutover-compare.XXXXXX)
declare -A PID=()       # instance name -> pid of its main process
BG_PIDS=()              # helper processes (idle clients)

stop_pid() {
    local pid=$1
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}

stop_instance() {
    local name=$1 pid=${PID[$1]:-}
    [ -n "$pid" ] || return 0
    # nginx workers are children of the master: stop them with it.
    local children
    children=$(pgrep -P "$pid" 2>/dev/null || true)
    stop_pid "$pid"
    for c in $children; do stop_pid "$c"; done
    wait "$pid" 2>/dev/null || true
    unset "PID[$name]"
}

PROBES_ADDED=0
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for p in "${BG_PIDS[@]}"; do stop_pid "$p"; done
    for name in "${!PID[@]}"; do stop_instance "$name"; done
    if [ "$PROBES_ADDED" = 1 ]; then
        perf probe -q -d 'cutover_bench:*' >/dev/null 2>&1 || true
    fi
    if [ "$KEEP_WORKDIR" = 1 ]; then
        log "configs and raw outputs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

instance_pids() {
    local pid=${PID[$1]}
    echo "$pid"
    pgrep -P "$pid" 2>/dev/null || true
}

# One line of key=value counters of an instance's processes and of the
# machine (procstat.py --help): CPU ticks, context switches, RSS and its
# peak, the machine's busy ticks. Read with `kv`.
proc_sample() {
    # shellcheck disable=SC2046
    python3 "$HERE/procstat.py" $(instance_pids "$1")
}

# The growth of counter $1 between two proc_sample lines $2 and $3.
growth() { echo $(($(kv "$1" "$3") - $(kv "$1" "$2"))); }

# $1 clock ticks spent over $2 requests, in µs per request.
us_per_request() {
    awk -v t="$1" -v hz="$CLK_TCK" -v r="$2" 'BEGIN { if (r > 0) printf "%.2f", t / hz * 1e6 / r; else print "" }'
}

# RSS once the connections are idle: read every second until it stops
# changing (within 1%), at most 10 s. Opening N connections is a burst; an
# allocator that returns memory after it (cutover's jemalloc purges after
# about a second) is measured at its idle level, one that keeps its peak
# at the peak.
settled_rss() {
    local prev now i
    sleep 1
    prev=$(kv rss_kb "$(proc_sample "$1")")
    for i in $(seq 9); do
        sleep 1
        now=$(kv rss_kb "$(proc_sample "$1")")
        [ $((prev - now)) -le $((prev / 100)) ] && [ $((now - prev)) -le $((prev / 100)) ] && break
        prev=$now
    done
    echo "$now"
}

# The value of key $1 in a line of key=value pairs $2.
kv() { sed -n "s/.*\\b$1=\\([0-9.]*\\).*/\\1/p" <<<"$2" | head -1; }

port_free() { [ -z "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]; }

wait_http() {
    local url=$1 extra=${2:-}
    for _ in $(seq 100); do
        # shellcheck disable=SC2086
        if curl -fsS $extra -o /dev/null --max-time 1 "$url" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------------- ports

P_LEGACY=$((BASE_PORT + 1))
P_NEW=$((BASE_PORT + 2))
# Per proxy: +0 small (HTTP/1.1), +1 small (h2c), +2 64k, +3 sticky, +4 routes1000, +5 idle,
# +6 mirror, +7 instructions, +8 HTTPS with ECDSA P-256, +9 HTTPS with RSA-2048.
declare -A BASE=([cutover]=$((BASE_PORT + 10)) [nginx]=$((BASE_PORT + 20)) [haproxy]=$((BASE_PORT + 30))
    [floor]=$((BASE_PORT + 40)) [native]=$((BASE_PORT + 50)))
PROXIES=(cutover nginx haproxy)
# The scenarios the floors run: they speak HTTP/1.1 only, to one backend.
FLOOR_SCENARIOS="small 64k"

all_ports=("$P_LEGACY" "$P_NEW")
for proxy in "${PROXIES[@]}" "${FLOORS[@]}"; do
    for off in 0 1 2 3 4 5 6 7 8 9; do all_ports+=($((BASE[$proxy] + off))); done
done
for p in "${all_ports[@]}"; do
    port_free "$p" || die "port $p on 127.0.0.1 is in use (set BASE_PORT to move the whole range)"
done

# ----------------------------------------------------------------- configs
# Every proxy gets the same route and the same 90/10 split between the two
# upstream ports ("legacy" and "new"), sets X-Forwarded-For/-Proto/-Host and
# X-Request-Id, keeps upstream connections alive and logs nothing.

# shellcheck source=benches/load/cutover_config.sh
source "$HERE/cutover_config.sh"

# $1 = instance, $2 = kind (base|sticky|routes1000|mirror), $3 = port, $4 = optional h2 port,
# $5 = optional certificate (CERT.crt and CERT.key: the port serves HTTPS)
cutover_config() {
    write_cutover_config "$WORK/$1" "$2" "$3" "$P_LEGACY" "$P_NEW" "$WORKERS" "${4:-}" "${5:-}"
    echo "$WORK/$1/cutover.yaml"
}

nginx_config() {
    local dir="$WORK/$1" kind=$2 port=$3 h2=${4:-} cert=${5:-}
    mkdir -p "$dir"
    local target=pool
    {
        cat <<EOF
worker_processes $WORKERS;
worker_rlimit_nofile $NOFILE;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $((NOFILE - 100)); }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host \$http_host;
    proxy_set_header X-Forwarded-For \$remote_addr;
    proxy_set_header X-Forwarded-Proto \$scheme;
    proxy_set_header X-Forwarded-Host \$http_host;
    proxy_set_header X-Request-Id \$request_id;
    # Room for a 64 KB response in memory: never spill to a temp file.
    proxy_buffer_size 16k;
    proxy_buffers 8 16k;
    proxy_max_temp_file_size 0;
EOF
        if [ "$kind" = mirror ]; then
            target=legacy
            cat <<EOF
    # Every request goes to legacy and is copied to new by a mirror subrequest.
    upstream legacy { server 127.0.0.1:$P_LEGACY; keepalive 64; keepalive_requests 1000000; }
    upstream new { server 127.0.0.1:$P_NEW; keepalive 64; keepalive_requests 1000000; }
EOF
        elif [ "$kind" = sticky ]; then
            target='$pool_name'
            cat <<EOF
    # MurmurHash2 of the cookie value picks a percentage bucket: sticky per user.
    split_clients "\${cookie_sessionid}" \$pool_name {
        90% legacy;
        *   new;
    }
    upstream legacy { server 127.0.0.1:$P_LEGACY; keepalive 64; keepalive_requests 1000000; }
    upstream new { server 127.0.0.1:$P_NEW; keepalive 64; keepalive_requests 1000000; }
EOF
        else
            cat <<EOF
    # Smooth weighted round robin: 9 of every 10 requests to legacy.
    upstream pool {
        server 127.0.0.1:$P_LEGACY weight=9;
        server 127.0.0.1:$P_NEW weight=1;
        keepalive 64;
        keepalive_requests 1000000;
    }
EOF
        fi
        echo "    server {"
        if [ -n "$cert" ]; then
            echo "        listen 127.0.0.1:$port ssl;"
            echo "        ssl_certificate $cert.crt;"
            echo "        ssl_certificate_key $cert.key;"
            # The default of nginx 1.23.4 and later (1.22 leaves TLS 1.3 out).
            echo "        ssl_protocols TLSv1.2 TLSv1.3;"
        else
            echo "        listen 127.0.0.1:$port;"
        fi
        [ -n "$h2" ] && echo "        listen 127.0.0.1:$h2 http2;"
        if [ "$kind" = routes1000 ]; then
            for i in $(seq -w 0 999); do
                echo "        location /svc$i/ { proxy_pass http://$target; }"
            done
        fi
        if [ "$kind" = mirror ]; then
            echo "        location / { mirror /__mirror; proxy_pass http://$target; }"
            echo "        location = /__mirror { internal; proxy_set_header X-Cutover-Shadow 1; proxy_pass http://new\$request_uri; }"
        else
            echo "        location / { proxy_pass http://$target; }"
        fi
        echo "    }"
        echo "}"
    } >"$dir/nginx.conf"
    echo "$dir/nginx.conf"
}

haproxy_config() {
    local dir="$WORK/$1" kind=$2 port=$3 h2=${4:-} cert=${5:-} scheme=http
    mkdir -p "$dir"
    {
        cat <<EOF
global
    nbthread $WORKERS
    maxconn $((MAX_IDLE + 500))
    # haproxy reserves two descriptors per connection (client + server) and by
    # default refuses to start when the descriptor limit is below that; idle
    # client connections need one.
    no strict-limits
defaults
    mode http
    timeout connect 2s
    timeout client 300s
    timeout server 30s
    timeout http-keep-alive 300s
    http-reuse always
    option forwardfor
frontend fe
EOF
        if [ -n "$cert" ]; then
            # haproxy reads the certificate and its key from one PEM file.
            cat "$cert.crt" "$cert.key" >"$dir/site.pem"
            echo "    bind 127.0.0.1:$port ssl crt $dir/site.pem"
            scheme=https
        else
            echo "    bind 127.0.0.1:$port"
        fi
        [ -n "$h2" ] && echo "    bind 127.0.0.1:$h2 proto h2"
        echo "    http-request set-header X-Forwarded-Proto $scheme"
        cat <<'EOF'
    http-request set-header X-Forwarded-Host %[req.hdr(host)]
    unique-id-format %{+X}o%ci%cp%fi%fp%Ts%rt%pid
    unique-id-header X-Request-Id
EOF
        if [ "$kind" = routes1000 ]; then
            for i in $(seq -w 0 999); do
                echo "    use_backend pool if { path_beg /svc$i/ }"
            done
        fi
        echo "    default_backend pool"
        echo "backend pool"
        if [ "$kind" = sticky ]; then
            echo "    # Consistent hash of the cookie value over the weighted servers: sticky per user."
            echo "    balance hash req.cook(sessionid)"
            echo "    hash-type consistent"
        else
            echo "    # Weighted round robin: 90 of every 100 requests to legacy."
            echo "    balance roundrobin"
        fi
        echo "    server legacy 127.0.0.1:$P_LEGACY weight 90"
        echo "    server new 127.0.0.1:$P_NEW weight 10"
    } >"$dir/haproxy.cfg"
    echo "$dir/haproxy.cfg"
}

# $1 proxy (or floor), $2 instance, $3 kind, $4 port, $5 optional h2 port,
# $6 optional certificate (HTTPS)
start_proxy() {
    local proxy=$1 name=$2 kind=$3 port=$4 h2=${5:-} cert=${6:-} cfg scheme=http
    [ -n "$cert" ] && scheme=https
    case "$proxy" in
        floor | native)
            mkdir -p "$WORK/$name"
            "${FLOOR_BIN[$proxy]}" "127.0.0.1:$port" "127.0.0.1:$P_LEGACY" "$WORKERS" >"$WORK/$name/out.log" 2>&1 &
            ;;
        cutover)
            cfg=$(cutover_config "$name" "$kind" "$port" "$h2" "$cert")
            RUST_LOG=warn "$CUTOVER" run -c "$cfg" >"$WORK/$name/out.log" 2>&1 &
            ;;
        nginx)
            cfg=$(nginx_config "$name" "$kind" "$port" "$h2" "$cert")
            nginx -t -q -p "$WORK/$name" -e "$WORK/$name/error.log" -c "$cfg" >"$WORK/$name/check.log" 2>&1 ||
                die "nginx rejects $cfg: $(cat "$WORK/$name/check.log")"
            nginx -p "$WORK/$name" -e "$WORK/$name/error.log" -c "$cfg" -g 'daemon off;' >"$WORK/$name/out.log" 2>&1 &
            ;;
        haproxy)
            cfg=$(haproxy_config "$name" "$kind" "$port" "$h2" "$cert")
            haproxy -c -q -f "$cfg" >"$WORK/$name/check.log" 2>&1 ||
                die "haproxy rejects $cfg: $(cat "$WORK/$name/check.log")"
            haproxy -db -f "$cfg" >"$WORK/$name/out.log" 2>&1 &
            ;;
    esac
    PID[$name]=$!
    wait_http "$scheme://127.0.0.1:$port/small" --insecure ||
        die "$name did not come up on port $port: $(tail -5 "$WORK/$name/out.log")"
    if [ -n "$h2" ]; then
        wait_http "http://127.0.0.1:$h2/small" --http2-prior-knowledge ||
            die "$name does not speak h2c on port $h2"
    fi
}

# ------------------------------------------------------------ measurements

RESULTS="$WORK/results.tsv"
IDLE="$WORK/idle.tsv"
printf 'scenario\ttarget\tround\trps\tp50_us\tp99_us\tp999_us\tcpu_us_per_req\trss_peak_kb\terrors\tnew_pct\tsys_us_per_req\tmachine_us_per_req\tswitches_per_req\n' >"$RESULTS"
printf 'target\tn\trss_before_kb\trss_held_kb\testablished\n' >"$IDLE"
NOTES="$WORK/notes.tsv"
printf 'scenario\ttarget\tnote\n' >"$NOTES"
note() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$NOTES"; }
COUNTS="$WORK/counts.tsv"
printf 'target\trequests\tsyscalls\twrites\treads\tepoll_wait\tfutex\tmalloc\tfree\trealloc\n' >"$COUNTS"

# Requests served so far per upstream port: "LEGACY NEW".
upstream_counts() {
    curl -fsS "http://127.0.0.1:$P_LEGACY/__stats" |
        awk -v l=":$P_LEGACY" -v n=":$P_NEW" '
            index($1, l) { a = $2 } index($1, n) { b = $2 } END { print a + 0, b + 0 }'
}

# $1 scenario, $2 target, $3 round, $4 instance, $5 url, $6 client (wrk|h2|handshake),
# $7 wrk script
measure() {
    local scenario=$1 target=$2 round=$3 inst=$4 url=$5 client=$6 script=${7:-stats.lua}
    local raw="$WORK/raw-$scenario-$target-$round.txt" h2log="$WORK/h2-$scenario-$target-$round.log"
    local before after p0 p1 stats requests rps p50 p99 p999 errors
    before=$(upstream_counts)
    p0=$(proc_sample "$inst")
    if [ "$client" = wrk ]; then
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$DURATION" --latency -s "$HERE/$script" "$url" >"$raw" 2>&1 || true
    elif [ "$client" = handshake ]; then
        "$HANDSHAKE" "$url" "$CONNS" "${DURATION%s}" "$WRK_THREADS" >"$raw" 2>&1 || true
    else
        h2load -c"$CONNS" -m"$H2_STREAMS" -t"$WRK_THREADS" -D "$DURATION" --log-file="$h2log" "$url" >"$raw" 2>&1 || true
    fi
    p1=$(proc_sample "$inst")
    after=$(upstream_counts)
    if [ "$client" != h2 ]; then
        stats=$(python3 "$HERE/loadstats.py" wrk "$raw" 2>/dev/null) ||
            die "wrk failed for $scenario/$target: $(tail -3 "$raw")"
    else
        stats=$(python3 "$HERE/loadstats.py" h2load "$raw" "$h2log" 2>/dev/null) ||
            die "h2load failed for $scenario/$target: $(tail -3 "$raw")"
        rm -f "$h2log"
    fi
    requests=$(kv requests "$stats")
    rps=$(kv rps "$stats")
    p50=$(kv p50 "$stats")
    p99=$(kv p99 "$stats")
    p999=$(kv p999 "$stats")
    errors=$(kv errors "$stats")
    local cpu sys machine switches rss new_pct
    cpu=$(us_per_request "$(($(growth user_ticks "$p0" "$p1") + $(growth sys_ticks "$p0" "$p1")))" "$requests")
    sys=$(us_per_request "$(growth sys_ticks "$p0" "$p1")" "$requests")
    machine=$(us_per_request "$(growth machine_ticks "$p0" "$p1")" "$requests")
    switches=$(awk -v n="$(growth switches "$p0" "$p1")" -v r="$requests" 'BEGIN { if (r > 0) printf "%.3f", n / r }')
    if [ "$target" = direct ]; then rss=""; else rss=$(kv hwm_kb "$p1"); fi
    new_pct=$(awk -v b="$before" -v a="$after" 'BEGIN {
        split(b, x, " "); split(a, y, " "); l = y[1] - x[1]; n = y[2] - x[2]
        if (l + n > 0) printf "%.1f", 100 * n / (l + n) }')
    [ "$target" = direct ] && new_pct=""
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$scenario" "$target" "$round" \
        "$rps" "$p50" "$p99" "$p999" "$cpu" "$rss" "$errors" "$new_pct" "$sys" "$machine" "$switches" >>"$RESULTS"
    log "  $scenario $target: $(printf '%.0f' "$rps") req/s, p99 $(awk -v v="$p99" 'BEGIN { printf "%.2f", v / 1000 }') ms, CPU ${cpu} µs/req (system ${sys}), machine ${machine} µs/req, errors $errors${new_pct:+, new $new_pct%}"
}

has_scenario() { [[ " $SCENARIOS " == *" $1 "* ]]; }

# The targets of a load scenario: the proxies, the floors where they can run
# the scenario, then the upstream alone if asked.
targets_of() {
    echo "${PROXIES[@]}"
    [[ " $FLOOR_SCENARIOS " == *" $1 "* ]] && echo "${FLOORS[@]}"
    [[ " $DIRECT_SCENARIOS " == *" $1 "* ]] && echo direct
    return 0
}

# ------------------------------------------------------------------- start

log "work dir $WORK"
"$UPSTREAM" "127.0.0.1:$P_LEGACY" "127.0.0.1:$P_NEW" >"$WORK/upstream.log" 2>&1 &
PID[upstream]=$!
wait_http "http://127.0.0.1:$P_LEGACY/small" || die "the upstream did not start"
wait_http "http://127.0.0.1:$P_NEW/small" || die "the upstream did not start"

# Self-signed certificates for the tls scenario, one per key type.
CERTS="$WORK/certs"
if has_scenario tls; then
    mkdir -p "$CERTS"
    openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$CERTS/ecdsa.key" -out "$CERTS/ecdsa.crt" 2>/dev/null ||
        die "openssl cannot make an ECDSA certificate"
    openssl req -x509 -new -nodes -newkey rsa:2048 -days 2 -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$CERTS/rsa.key" -out "$CERTS/rsa.crt" 2>/dev/null ||
        die "openssl cannot make an RSA certificate"
fi

for scenario in $FLOOR_SCENARIOS; do
    if has_scenario "$scenario" || { [ "$scenario" = small ] && has_scenario counts; }; then
        for f in "${FLOORS[@]}"; do
            case "$scenario" in
                small) start_proxy "$f" "$f-small" base "${BASE[$f]}" ;;
                64k) start_proxy "$f" "$f-64k" base "$((BASE[$f] + 2))" ;;
            esac
        done
    fi
done
for proxy in "${PROXIES[@]}"; do
    b=${BASE[$proxy]}
    if has_scenario small || has_scenario small-h2 || has_scenario counts || has_scenario mirror; then
        start_proxy "$proxy" "$proxy-small" base "$b" "$((b + 1))"
    fi
    if has_scenario tls; then
        start_proxy "$proxy" "$proxy-tls-ecdsa" base "$((b + 8))" "" "$CERTS/ecdsa"
        start_proxy "$proxy" "$proxy-tls-rsa" base "$((b + 9))" "" "$CERTS/rsa"
    fi
    has_scenario 64k && start_proxy "$proxy" "$proxy-64k" base "$((b + 2))"
    has_scenario sticky && start_proxy "$proxy" "$proxy-sticky" sticky "$((b + 3))"
    has_scenario routes1000 && start_proxy "$proxy" "$proxy-routes1000" routes1000 "$((b + 4))"
    if has_scenario mirror; then
        case "$proxy" in
            cutover)
                cfg=$(cutover_config cutover-mirror-check mirror "$((b + 6))")
                if "$CUTOVER" check -c "$cfg" >"$WORK/cutover-mirror-check/check.log" 2>&1; then
                    start_proxy cutover cutover-mirror mirror "$((b + 6))"
                else
                    why=$(grep -m1 -i 'error\|mirror' "$WORK/cutover-mirror-check/check.log" || head -1 "$WORK/cutover-mirror-check/check.log")
                    note mirror cutover "not available: this build rejects \`mirror\` ($why)"
                    log "cutover rejects mirror: $why"
                fi
                ;;
            nginx) start_proxy nginx nginx-mirror mirror "$((b + 6))" ;;
            haproxy) note mirror haproxy "not available: HAProxy 2.6 mirrors traffic only through an external SPOE agent (spoa-mirror), which Debian does not ship" ;;
        esac
    fi
done
log "upstream and proxies are up"

# Every proxy must return the upstream's exact bodies before anything is measured.
check_body() {
    local url=$1 want=$2 extra=${3:-} got
    # shellcheck disable=SC2086
    got=$(curl -fsS $extra "$url" | wc -c)
    [ "$got" -eq "$want" ] || die "$url returned $got bytes, expected $want"
}
for proxy in "${PROXIES[@]}"; do
    b=${BASE[$proxy]}
    if has_scenario small || has_scenario small-h2 || has_scenario counts || has_scenario mirror; then
        check_body "http://127.0.0.1:$b/small" 100
        check_body "http://127.0.0.1:$((b + 1))/small" 100 --http2-prior-knowledge
    fi
    has_scenario 64k && check_body "http://127.0.0.1:$((b + 2))/64k" 65536
    has_scenario sticky && check_body "http://127.0.0.1:$((b + 3))/small" 100 "--cookie sessionid=u1"
    has_scenario routes1000 && check_body "http://127.0.0.1:$((b + 4))/small" 100
    [ -n "${PID[$proxy-mirror]:-}" ] && check_body "http://127.0.0.1:$((b + 6))/small" 100
    if has_scenario tls; then
        check_body "https://127.0.0.1:$((b + 8))/small" 100 --insecure
        check_body "https://127.0.0.1:$((b + 9))/small" 100 --insecure
    fi
done
for f in "${FLOORS[@]}"; do
    has_scenario small && check_body "http://127.0.0.1:${BASE[$f]}/small" 100
    has_scenario 64k && check_body "http://127.0.0.1:$((BASE[$f] + 2))/64k" 65536
done

# ----------------------------------------------------------------- rounds

for round in $(seq "$ROUNDS"); do
    log "round $round of $ROUNDS"
    if has_scenario small; then
        for t in $(targets_of small); do
            if [ "$t" = direct ]; then
                measure small direct "$round" upstream "http://127.0.0.1:$P_LEGACY/small" wrk
            else
                measure small "$t" "$round" "$t-small" "http://127.0.0.1:${BASE[$t]}/small" wrk
                # 1,000 routes right after 1 route, on the same proxy: the
                # machine drifts by more than the cost being measured
                # between scenarios minutes apart.
                if has_scenario routes1000 && [[ " ${PROXIES[*]} " == *" $t "* ]]; then
                    measure routes1000 "$t" "$round" "$t-routes1000" "http://127.0.0.1:$((BASE[$t] + 4))/small" wrk
                fi
            fi
        done
    fi
    if has_scenario small-h2; then
        for t in $(targets_of small-h2); do
            if [ "$t" = direct ]; then
                measure small-h2 direct "$round" upstream "http://127.0.0.1:$P_LEGACY/small" h2
            else
                measure small-h2 "$t" "$round" "$t-small" "http://127.0.0.1:$((BASE[$t] + 1))/small" h2
            fi
        done
    fi
    if has_scenario 64k; then
        for t in $(targets_of 64k); do
            if [ "$t" = direct ]; then
                measure 64k direct "$round" upstream "http://127.0.0.1:$P_LEGACY/64k" wrk
            else
                measure 64k "$t" "$round" "$t-64k" "http://127.0.0.1:$((BASE[$t] + 2))/64k" wrk
            fi
        done
    fi
    if has_scenario sticky; then
        for t in "${PROXIES[@]}"; do
            measure sticky "$t" "$round" "$t-sticky" "http://127.0.0.1:$((BASE[$t] + 3))/small" wrk sticky.lua
        done
    fi
    if has_scenario tls; then
        for t in "${PROXIES[@]}"; do
            measure tls "$t" "$round" "$t-tls-ecdsa" "https://127.0.0.1:$((BASE[$t] + 8))/small" wrk
        done
        for t in "${PROXIES[@]}"; do
            measure tls-resume "$t" "$round" "$t-tls-ecdsa" "https://127.0.0.1:$((BASE[$t] + 8))/small" wrk close.lua
        done
        for key in ecdsa rsa; do
            off=8
            [ "$key" = rsa ] && off=9
            for t in "${PROXIES[@]}"; do
                measure "tls-handshake-$key" "$t" "$round" "$t-tls-$key" \
                    "https://127.0.0.1:$((BASE[$t] + off))/small" handshake
            done
        done
    fi
    if has_scenario mirror; then
        for t in "${PROXIES[@]}"; do
            [ -n "${PID[$t-mirror]:-}" ] || continue
            # The same proxy unmirrored, just before: the machine's speed
            # drifts by more than the cost being measured between the small
            # scenario's run and this one.
            measure mirror-off "$t" "$round" "$t-small" "http://127.0.0.1:${BASE[$t]}/small" wrk
            measure mirror "$t" "$round" "$t-mirror" "http://127.0.0.1:$((BASE[$t] + 6))/small" wrk
        done
    fi
    if has_scenario routes1000 && ! has_scenario small; then
        for t in "${PROXIES[@]}"; do
            measure routes1000 "$t" "$round" "$t-routes1000" "http://127.0.0.1:$((BASE[$t] + 4))/small" wrk
        done
    fi
done

# ----------------------------------------------------------------- counts
# System calls and allocator calls per proxied request, counted exactly (not
# sampled) with tracepoints and uprobes on libc's malloc/free/realloc while
# wrk runs the small scenario. The probes slow each call down, so this runs
# apart from the timed rounds and its request rate means nothing.

if has_scenario counts; then
    command -v perf >/dev/null 2>&1 || die "the counts scenario needs perf (Debian: linux-perf)"
    libc=$(ldd "$CUTOVER" | awk '/libc\.so/ { print $3 }')
    for fn in malloc free realloc; do
        perf probe -q -x "$libc" --add "cutover_bench:$fn=$fn" >/dev/null 2>&1 ||
            die "cannot add a uprobe on $fn in $libc"
    done
    PROBES_ADDED=1
    log "counting system calls and allocations per request (${COUNT_SECONDS}s per proxy)"
    events="raw_syscalls:sys_enter"
    for sc in write writev sendto sendmsg read readv recvfrom recvmsg epoll_wait epoll_pwait futex; do
        events+=",syscalls:sys_enter_$sc"
    done
    events+=",cutover_bench:malloc,cutover_bench:free,cutover_bench:realloc"
    up_tids=$(ls "/proc/${PID[upstream]}/task" | paste -sd' ')
    for t in "${PROXIES[@]}" "${FLOORS[@]}"; do
        inst="$t-small"
        wrk -t"$WRK_THREADS" -c"$CONNS" -d"$((COUNT_SECONDS + 3))s" "http://127.0.0.1:${BASE[$t]}/small" >/dev/null 2>&1 &
        load=$!
        BG_PIDS+=("$load")
        sleep 1
        # The upstream is counted in the same window: it makes exactly one
        # writev per response, which gives the number of proxied requests.
        perf stat -x, --per-thread -e "$events" \
            -p "$(instance_pids "$inst" | paste -sd,),${PID[upstream]}" -o "$WORK/counts-$t.csv" \
            -- sleep "$COUNT_SECONDS" >/dev/null 2>&1 || die "perf stat failed for $t"
        wait "$load" 2>/dev/null || true
        python3 "$HERE/syscounts.py" --upstream-tids "$up_tids" "$t" "$WORK/counts-$t.csv" >>"$COUNTS"
        log "  $t: $(tail -1 "$COUNTS" | awk -F'\t' '{ if ($2 > 0) printf "%.1f syscalls, %.1f mallocs per request", $3 / $2, $8 / $2 }')"
    done
    perf probe -q -d 'cutover_bench:*' >/dev/null 2>&1 || true
    PROBES_ADDED=0
fi

# ----------------------------------------------------------- instructions
# User-space instructions per proxied request, counted exactly by callgrind:
# not sampled and not timed, so the figure does not move with the machine's
# load. Each proxy runs alone under valgrind with one worker (nginx without
# its master process); after a warm-up the counters are zeroed, h2load sends
# exactly INSTR_REQUESTS requests over 10 keep-alive connections, and the
# counters are dumped. Kernel time is not counted.

INSTR="$WORK/instructions.tsv"
INSTR_TOP="$WORK/instructions-top.tsv"
printf 'target\trequests\tinstructions\tby_crate\n' >"$INSTR"
: >"$INSTR_TOP"
if has_scenario instructions; then
    log "counting instructions per request under callgrind ($INSTR_REQUESTS requests per proxy)"
    instr_targets=("${PROXIES[@]}")
    [ "$INSTR_KIND" = base ] && instr_targets+=("${FLOORS[@]}")
    for t in "${instr_targets[@]}"; do
        inst="$t-instr"
        port=$((BASE[$t] + 7))
        mkdir -p "$WORK/$inst"
        cg="$WORK/$inst/callgrind.out"
        if [ "$INSTR_KIND" = mirror ] && [ "$t" = haproxy ]; then
            continue # no built-in mirroring
        fi
        case "$t" in
            cutover)
                cfg=$(WORKERS=1 && cutover_config "$inst" "$INSTR_KIND" "$port")
                cmd=("$CUTOVER" run -c "$cfg")
                ;;
            nginx)
                cfg=$(WORKERS=1 && nginx_config "$inst" "$INSTR_KIND" "$port")
                cmd=(nginx -p "$WORK/$inst" -e "$WORK/$inst/error.log" -c "$cfg" -g 'daemon off; master_process off;')
                ;;
            haproxy)
                cfg=$(WORKERS=1 && haproxy_config "$inst" "$INSTR_KIND" "$port")
                cmd=(haproxy -db -f "$cfg")
                ;;
            floor | native)
                cmd=("${FLOOR_BIN[$t]}" "127.0.0.1:$port" "127.0.0.1:$P_LEGACY" 1)
                ;;
        esac
        RUST_LOG=warn valgrind --tool=callgrind --callgrind-out-file="$cg" "${cmd[@]}" >"$WORK/$inst/out.log" 2>&1 &
        PID[$inst]=$!
        wait_http "http://127.0.0.1:$port/small" ||
            die "$t did not come up under valgrind: $(tail -5 "$WORK/$inst/out.log")"
        h2load --h1 -n 2000 -c 10 "http://127.0.0.1:$port/small" >/dev/null 2>&1 || die "warm-up of $t failed"
        callgrind_control -z "${PID[$inst]}" >/dev/null
        h2load --h1 -n "$INSTR_REQUESTS" -c 10 "http://127.0.0.1:$port/small" >"$WORK/$inst/h2load.txt" 2>&1 || true
        grep -q "^requests: $INSTR_REQUESTS total, .* $INSTR_REQUESTS succeeded" "$WORK/$inst/h2load.txt" ||
            die "not every counted request of $t succeeded: $(grep '^requests' "$WORK/$inst/h2load.txt")"
        callgrind_control -d "${PID[$inst]}" >/dev/null
        stop_instance "$inst"
        # The dump on request is the first part; the rest of the run (shutdown) is not counted.
        python3 "$HERE/instructions.py" by-crate "$t" "$INSTR_REQUESTS" "$cg.1" "$ROOT/src/" >>"$INSTR"
        if [ "$t" = cutover ]; then
            python3 "$HERE/instructions.py" top "$INSTR_REQUESTS" "$cg.1" "$ROOT/src/" 20 >"$INSTR_TOP"
        fi
        log "  $t: $(tail -1 "$INSTR" | awk -F'\t' '{ printf "%.0f instructions per request", $3 / $2 }')"
    done
fi

# The load-test instances are done; stop them so the idle test has the CPU.
for proxy in "${PROXIES[@]}" "${FLOORS[@]}"; do
    for s in small 64k sticky routes1000 mirror tls-ecdsa tls-rsa; do stop_instance "$proxy-$s"; done
done

# ------------------------------------------------------------------- idle

# $1 proxy, $2 connection count, $3 optional certificate (TLS connections).
idle_run() {
    local proxy=$1 n=$2 cert=${3:-} inst="$1-idle" port=$((BASE[$1] + 5)) rss0 rss1 established client label=$1
    local tls_flag=() scheme=http
    if [ -n "$cert" ]; then
        tls_flag=(--tls)
        scheme=https
        label="$proxy (TLS)"
    fi
    start_proxy "$proxy" "$inst" base "$port" "" "$cert"
    for _ in $(seq 20); do curl -fsS --insecure -o /dev/null "$scheme://127.0.0.1:$port/small"; done
    sleep 0.5
    rss0=$(kv rss_kb "$(proc_sample "$inst")")
    local ready="$WORK/idle-ready" release="$WORK/idle-release"
    rm -f "$ready" "$release"
    python3 "$HERE/idleconns.py" --timeout 120 "${tls_flag[@]}" 127.0.0.1 "$port" "$n" "$ready" "$release" \
        >"$WORK/idle-client.log" 2>&1 &
    client=$!
    BG_PIDS+=("$client")
    for _ in $(seq 1200); do
        [ -s "$ready" ] && break
        kill -0 "$client" 2>/dev/null || break
        sleep 0.1
    done
    [ -s "$ready" ] || die "idle client failed against $label: $(tail -3 "$WORK/idle-client.log")"
    rss1=$(settled_rss "$inst")
    established=$(ss -Htn state established "( sport = :$port )" | wc -l)
    touch "$release"
    wait "$client" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\n' "$label" "$n" "$rss0" "$rss1" "$established" >>"$IDLE"
    log "  $label, $n idle: RSS $((rss0 / 1024)) MB -> $((rss1 / 1024)) MB, $(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN { printf "%.1f", (b - a) / n }') KB/conn, $established held"
    stop_instance "$inst"
}

if has_scenario idle; then
    log "idle keep-alive connections: ${IDLE_COUNTS// /, }"
    for n in $IDLE_COUNTS; do
        for proxy in "${PROXIES[@]}"; do idle_run "$proxy" "$n"; done
    done
    if has_scenario tls; then
        log "idle TLS connections (ECDSA P-256): ${TLS_IDLE_COUNTS// /, }"
        for n in $TLS_IDLE_COUNTS; do
            for proxy in "${PROXIES[@]}"; do idle_run "$proxy" "$n" "$CERTS/ecdsa"; done
        done
    fi
fi

# ------------------------------------------------------------------ report

ELAPSED=$(($(date +%s) - START_TIME))
{
    echo "date=$(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "machine=$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) CPUs, $(free -g | awk '/^Mem:/ { print $2 }') GiB RAM"
    echo "kernel=$(uname -r)"
    echo "rounds=$ROUNDS"
    echo "duration=$DURATION"
    echo "wrk=wrk -t$WRK_THREADS -c$CONNS -d$DURATION --latency (keep-alive; tls-resume sends Connection: close)"
    has_scenario tls && echo "handshake=bench-handshake URL $CONNS ${DURATION%s} $WRK_THREADS (rustls client, no resumption, Connection: close)"
    echo "h2load=h2load -c$CONNS -m$H2_STREAMS -t$WRK_THREADS -D $DURATION (h2c prior knowledge)"
    echo "instr_kind=$INSTR_KIND"
    echo "workers=$WORKERS (cutover: serving threads, server.workers; nginx: worker_processes; haproxy: nbthread)"
    echo "cutover=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$ROOT" diff --quiet -- src 2>/dev/null || echo ' (+ uncommitted changes in src/)'), release build"
    echo "nginx=$(nginx -v 2>&1 | sed 's/^nginx version: //')"
    echo "haproxy=$(haproxy -v | head -1 | awk '{ print $3 }')"
    echo "native=benches/load/floor_native.rs (httparse $(cargo tree -q -i httparse -e normal --depth 0 2>/dev/null | awk '{ print $2 }' | head -1))"
    echo "floor=benches/load/floor.rs (hyper $(cargo tree -q -i hyper -e normal --depth 0 2>/dev/null | awk '{ print $2 }' | head -1))"
    has_scenario tls && echo "tls=TLS 1.2 and 1.3 everywhere; $(openssl version | awk '{ print "OpenSSL " $2 }') for nginx, haproxy and wrk; rustls (aws-lc-rs) for cutover and bench-handshake"
    echo "elapsed=$((ELAPSED / 60)) min $((ELAPSED % 60)) s (until the report)"
    echo "load=$START_LOAD at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (1/5/15-minute load averages; above ~0.5 at the start means something else was running)"
} >"$WORK/meta.txt"
mkdir -p "$(dirname "$OUT")"
python3 "$HERE/report.py" --results "$RESULTS" --idle "$IDLE" --meta "$WORK/meta.txt" --counts "$COUNTS" \
    --notes "$NOTES" --instructions "$INSTR" --instructions-top "$INSTR_TOP" "$OUT"
cp "$RESULTS" "${OUT%.md}.tsv"
has_scenario idle && cp "$IDLE" "${OUT%.md}-idle.tsv"
has_scenario counts && cp "$COUNTS" "${OUT%.md}-counts.tsv"
has_scenario instructions && cp "$INSTR" "${OUT%.md}-instructions.tsv" && cp "$INSTR_TOP" "${OUT%.md}-instructions-top.tsv"
log "report written to $OUT (raw rows next to it: ${OUT%.md}*.tsv)"
