#!/usr/bin/env bash
# Browser test of the admin dashboard: installs what is missing (Debian's
# chromium, node and npm), installs the pinned playwright-core, builds the
# release binary and drives the page in headless Chromium against
# `cutover demo`. Writes the screenshot docs/dashboard.png.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

packages=()
[ -x /usr/bin/chromium ] || packages+=(chromium)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)
if [ ${#packages[@]} -gt 0 ]; then
  echo "== installing ${packages[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "warning: node $(node --version) is older than playwright-core supports (20 or later)" >&2
fi

pids="$(mktemp)"
children=()
cleanup() {
  local status=$?
  # Stop what is still running: the build or the test, and anything the test
  # started and could not stop itself (it records their ids in $pids).
  for pid in "${children[@]+"${children[@]}"}"; do kill "$pid" 2>/dev/null || true; done
  while read -r pid; do
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
  done <"$pids"
  rm -f "$pids"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
# Runs a command in the background and waits, so a signal stops it at once.
run() {
  "$@" &
  children=($!)
  wait $!
  children=()
}

cd "$here"
run npm ci --no-audit --no-fund --loglevel=error

cd "$root"
run cargo build --release

DASHBOARD_PIDFILE="$pids" CUTOVER_BIN="$root/target/release/cutover" run node "$here/dashboard.test.mjs"
