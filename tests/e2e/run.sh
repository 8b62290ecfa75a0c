#!/usr/bin/env bash
# End-to-end parity suite: a real Flask app (legacy) and a real Django REST
# Framework app (new) behind the release build of cutover, which mirrors every
# /api/ request to new and compares the answers. The two apps differ in a few
# planted ways; the parity report must name exactly those, and so must
# `cutover replay` of an access log of the same traffic (replay_check.py). Django's
# collected static files are served from disk by a file backend (static_check.py).
#
#   tests/e2e/run.sh
#
# Needs python3 (the venv module is installed from Debian's packages when
# missing) and a Rust toolchain. The virtualenv lives in target/e2e-venv
# (E2E_VENV overrides) and is reused while requirements.txt is unchanged.
# E2E_CUTOVER names a cutover binary to test instead of the release build.
# Everything listens on 127.0.0.1; all processes are stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
E2E=$ROOT/tests/e2e
VENV=${E2E_VENV:-$ROOT/target/e2e-venv}
BOOKS=200
STATUS=50
USERS=20   # /api/users/1/ .. /api/users/20/: one endpoint
CASES=5    # requests to each hard case
export PYTHONDONTWRITEBYTECODE=1

say() { echo "e2e: $*"; }
die() { echo "e2e: FAIL: $*" >&2; exit 1; }

echo "== e2e parity suite (tests/e2e/run.sh)"

# --- Python and the two backends' packages --------------------------------
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
  say "installing $* from Debian's packages"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "$@"
}
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv

venv_ok() {
  cmp -s "$E2E/requirements.txt" "$VENV/requirements.txt" 2>/dev/null &&
    "$VENV/bin/python" -c 'import flask, django, rest_framework, gunicorn' 2>/dev/null
}
if ! venv_ok; then
  if [ -e "$VENV" ] && [ ! -f "$VENV/pyvenv.cfg" ]; then die "$VENV exists and is not a virtualenv"; fi
  if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
    apt_install python3-venv
    python3 -m venv --clear "$VENV"
  fi
  say "installing tests/e2e/requirements.txt into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$E2E/requirements.txt"
  cp "$E2E/requirements.txt" "$VENV/requirements.txt"
fi
PY=$VENV/bin/python

# --- cutover ---------------------------------------------------------------
if [ -n "${E2E_CUTOVER:-}" ]; then
  CUTOVER=$E2E_CUTOVER
else
  say "cargo build --release"
  cargo build --release --quiet
  CUTOVER=$ROOT/target/release/cutover
fi

# --- start everything, stop it all on exit ---------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/cutover-e2e.XXXXXX")
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 50); do
    local alive=0
    for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  if [ "$status" -ne 0 ]; then
    for log in legacy new cutover; do
      [ -s "$WORK/$log.log" ] && { echo "--- $log.log (last 30 lines)"; tail -n 30 "$WORK/$log.log"; }
    done >&2
    echo "e2e: logs kept in $WORK" >&2
  else
    rm -rf "$WORK"
  fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A free loopback port for Flask; Django listens on a Unix socket, as
# gunicorn is most often bound behind nginx.
LEGACY_PORT=$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NEW_SOCKET="$WORK/new.sock"

gunicorn() {  # NAME DIR APP BIND
  "$VENV/bin/gunicorn" --chdir "$2" --bind "$4" --workers 1 --threads 8 \
    --no-control-socket --access-logfile - "$3" >"$WORK/$1.log" 2>&1 &
  PIDS+=($!)
}
gunicorn legacy "$E2E/legacy_flask" app:app "127.0.0.1:$LEGACY_PORT"
gunicorn new "$E2E/new_drf" bookstore.wsgi "unix:$NEW_SOCKET"

# Django's static files, gathered as a deployment does.
STATIC_ROOT="$WORK/static" "$PY" "$E2E/new_drf/manage.py" collectstatic --noinput -v 0 || die "collectstatic failed"
sed -e "s/@LEGACY_PORT@/$LEGACY_PORT/" -e "s|@NEW_SOCKET@|$NEW_SOCKET|" -e "s|@STATIC_ROOT@|$WORK/static|" \
  "$E2E/cutover.yaml" >"$WORK/cutover.yaml"
echo "api: { legacy: 100, new: 0 }" >"$WORK/weights.yaml"
"$CUTOVER" check -c "$WORK/cutover.yaml" >/dev/null || die "cutover check rejected the config"
"$CUTOVER" run -c "$WORK/cutover.yaml" --ready-file "$WORK/ready.json" >"$WORK/cutover.out" 2>"$WORK/cutover.log" &
PIDS+=($!)

# Wait (bounded) for a URL, or a path on a Unix socket (unix:SOCKET:PATH), to answer 200.
wait_ok() {  # NAME URL
  "$PY" - "$1" "$2" <<'EOF' || die "$1 did not become ready"
import http.client, socket, sys, time, urllib.request
name, url = sys.argv[1], sys.argv[2]

def ok():
    if not url.startswith("unix:"):
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    path, target = url[5:].rsplit(":", 1)
    conn = http.client.HTTPConnection("localhost", timeout=2)
    conn.sock = socket.socket(socket.AF_UNIX)
    conn.sock.settimeout(2)
    conn.sock.connect(path)
    conn.request("GET", target)
    return conn.getresponse().status == 200

deadline = time.monotonic() + 30
while True:
    try:
        if ok():
            break
    except OSError:
        pass
    if time.monotonic() > deadline:
        sys.exit(1)
    time.sleep(0.1)
EOF
}

# cutover picks its own ports and announces them in its ready file.
for _ in $(seq 300); do
  [ -s "$WORK/ready.json" ] && break
  kill -0 "${PIDS[2]}" 2>/dev/null || die "cutover exited at start"
  sleep 0.1
done
[ -s "$WORK/ready.json" ] || die "cutover did not write its ready file"
PROXY=$("$PY" -c 'import json,sys; r=json.load(open(sys.argv[1])); print([l["addr"] for l in r["listeners"] if l["name"] == "public"][0])' "$WORK/ready.json")
ADMIN=$("$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))["admin"])' "$WORK/ready.json")

wait_ok "legacy (Flask)" "http://127.0.0.1:$LEGACY_PORT/healthz"
wait_ok "new (Django REST Framework)" "unix:$NEW_SOCKET:/healthz"
wait_ok cutover "http://$ADMIN/readyz"
say "legacy on 127.0.0.1:$LEGACY_PORT, new on unix:$NEW_SOCKET, proxy on $PROXY, admin on $ADMIN"

# --- static files, from disk ----------------------------------------------
timeout 60 "$PY" "$E2E/static_check.py" "$PROXY" "$WORK/static" || die "the static files are not served as they are on disk"

# --- traffic, then the report ---------------------------------------------
timeout 60 "$PY" "$E2E/traffic.py" "$PROXY" "$BOOKS" "$STATUS" "$USERS" "$CASES" || die "sending the traffic failed"
timeout 60 "$PY" "$E2E/check_report.py" "$ADMIN" "$BOOKS" "$STATUS" "$USERS" "$CASES" "$WORK/parity.json" ||
  die "the parity report is wrong (the whole report: $WORK/parity.json)"

echo
say "cutover parity api"
timeout 20 "$CUTOVER" parity api --admin "$ADMIN" >"$WORK/parity.txt" || die "cutover parity failed"
cat "$WORK/parity.txt"
for path in '/*/author' '/*/author_name' '/*/year' '/*/generated_at' 'GET /api/users/{id}/' 'GET /api/cases/moved/'; do
  grep -qF -- " $path " "$WORK/parity.txt" || die "cutover parity does not list $path"
done
timeout 20 "$CUTOVER" parity api --examples --admin "$ADMIN" >"$WORK/examples.txt" || die "cutover parity --examples failed"
grep -qF -- '/?page=1&access_token=[redacted]  request ' "$WORK/examples.txt" ||
  die "cutover parity --examples shows no redacted user request: $(head -c 2000 "$WORK/examples.txt")"
grep -qF -- 'legacy: 9007199254740993' "$WORK/examples.txt" || die "cutover parity --examples shows no integer beyond 2^53"
if grep -qF -- 'secret-' "$WORK/examples.txt"; then die "cutover parity --examples shows a secret"; fi

# --- replay: an access log of the same traffic, and the sign-off report ---
echo
say "cutover replay and the sign-off report (tests/e2e/replay_check.py)"
timeout 300 "$PY" "$E2E/replay_check.py" "$CUTOVER" "$WORK/cutover.yaml" "$WORK" "$ADMIN" "$BOOKS" "$STATUS" ||
  die "cutover replay or the sign-off report is wrong"
echo "e2e: 1 passed, 0 failed"
