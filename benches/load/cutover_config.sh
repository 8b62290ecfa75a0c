# shellcheck shell=bash
# Sourced by compare.sh and profile.sh: cutover's config for a load scenario.
#
#   write_cutover_config DIR KIND PORT P_LEGACY P_NEW WORKERS [H2_PORT] [CERT]
#
# KIND is base | sticky | routes1000 | mirror | mirror-noise. Writes
# DIR/cutover.yaml and DIR/weights.yaml: one route `main` over the two
# upstream ports, split 90/10 (mirror: all to legacy, every request mirrored
# to new; mirror-noise: the same, learning noise as configs do by default).
# With CERT, PORT serves HTTPS with CERT.crt and CERT.key.
write_cutover_config() {
    local dir=$1 kind=$2 port=$3 p_legacy=$4 p_new=$5 workers=$6 h2=${7:-} cert=${8:-}
    mkdir -p "$dir"
    {
        echo "listeners:"
        if [ -n "$cert" ]; then
            echo "  - { name: public, addr: \"127.0.0.1:$port\", tls: { certs: [ { cert: \"$cert.crt\", key: \"$cert.key\" } ] } }"
        else
            echo "  - { name: public, addr: \"127.0.0.1:$port\" }"
        fi
        [ -n "$h2" ] && echo "  - { name: h2c, addr: \"127.0.0.1:$h2\" }"
        echo "admin: { addr: \"127.0.0.1:0\" }"
        echo "weights_file: weights.yaml"
        echo "access_log: { path: off }"
        echo "server: { workers: $workers }"
        echo "backends:"
        echo "  legacy: { url: \"http://127.0.0.1:$p_legacy\" }"
        echo "  new: { url: \"http://127.0.0.1:$p_new\" }"
        echo "routes:"
        if [ "$kind" = routes1000 ]; then
            for i in $(seq -w 0 999); do
                echo "  - { name: r$i, match: { path_prefix: /svc$i/ }, backends: { legacy: {}, new: {} } }"
            done
        fi
        echo "  - name: main"
        echo "    match: { path_prefix: / }"
        echo "    stable: legacy"
        echo "    backends: { legacy: {}, new: {} }"
        [ "$kind" = sticky ] && echo "    sticky: { cookie: sessionid }"
        # Every request is also sent to new; only the status and content-type
        # are compared (the bodies are not JSON); no noise sampling, so the
        # primary is asked once, as nginx does.
        [ "$kind" = mirror ] && echo "    mirror: { to: new, percent: 100, compare: { noise: { sample: 0 } } }"
        [ "$kind" = mirror-noise ] && echo "    mirror: { to: new, percent: 100 }"
    } >"$dir/cutover.yaml"
    if [ "$kind" = mirror ] || [ "$kind" = mirror-noise ]; then
        echo "main: { legacy: 100, new: 0 }" >"$dir/weights.yaml"
    else
        echo "main: { legacy: 90, new: 10 }" >"$dir/weights.yaml"
    fi
}
