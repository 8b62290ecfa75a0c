#!/usr/bin/env bash
# Offline checks of the deploy kit (deploy/):
#   - Prometheus: promtool check config / check rules / test rules
#   - Grafana: the dashboard's JSON, its metrics and the PromQL of its queries
#   - Kubernetes: every manifest parses, the Deployment is wired as documented,
#     and the ConfigMap's own config passes `cutover check`; the same for the
#     fleet-mode kit in deploy/kubernetes/fleet/ (etcd StatefulSet, seed Job)
#   - rollback.sh against a stand-in kubectl
#   - systemd: systemd-analyze verify and security (when systemd-analyze exists)
#   - logrotate: a forced rotation with deploy/logrotate/cutover (when logrotate exists)
#   - Docker: the Dockerfile read for mistakes (Docker itself is not needed)
#
#   deploy/check.sh
#   CUTOVER=target/debug/cutover deploy/check.sh    # use that build, no release build
#
# Installs what is missing: promtool (Debian's prometheus package) and PyYAML
# (into the virtualenv target/deploy-venv when python3 has none).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DEPLOY=$ROOT/deploy
export PYTHONDONTWRITEBYTECODE=1

echo "== deploy kit checks (deploy/check.sh)"

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
apt_install() {
  echo "installing $* from Debian's packages"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}
command -v promtool >/dev/null 2>&1 || apt_install prometheus
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv

PY=python3
if ! python3 -c 'import yaml' 2>/dev/null; then
  VENV=${DEPLOY_VENV:-$ROOT/target/deploy-venv}
  if ! "$VENV/bin/python" -c 'import yaml' 2>/dev/null; then
    if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
      apt_install python3-venv
      python3 -m venv --clear "$VENV"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check PyYAML
  fi
  PY=$VENV/bin/python
fi
kit() { "$PY" "$DEPLOY/checks/kit.py" "$@"; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/cutover-deploy-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0
failures=()
step() { # name, command...: runs one check, counts it, goes on after a failure
  local name=$1
  shift
  echo "-- $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
    echo "FAILED: $name"
  fi
}
skip() {
  skipped=$((skipped + 1))
  echo "-- $1: skipped ($2)"
}

# ------------------------------------------------------------------ Prometheus
prometheus_config() {
  local out
  if out=$(promtool check config "$DEPLOY/prometheus/prometheus.yml" 2>&1); then
    echo "$out"
    return 0
  fi
  if grep -q "field kubernetes_sd_configs not found" <<<"$out"; then
    # Debian builds promtool without Kubernetes service discovery: check the
    # rest of the file as it is, with those blocks emptied.
    echo "this promtool has no Kubernetes service discovery (Debian's build); checking the rest of the file"
    mkdir -p "$WORK/prometheus"
    cp "$DEPLOY/prometheus/alerts.yml" "$WORK/prometheus/"
    kit k8s-sd-variant "$DEPLOY/prometheus/prometheus.yml" "$WORK/prometheus/prometheus.yml" &&
      promtool check config "$WORK/prometheus/prometheus.yml"
    return
  fi
  echo "$out"
  return 1
}
step "promtool check config deploy/prometheus/prometheus.yml" prometheus_config
step "promtool check rules deploy/prometheus/alerts.yml" promtool check rules "$DEPLOY/prometheus/alerts.yml"
step "promtool test rules deploy/test_rules.yml" promtool test rules "$DEPLOY/test_rules.yml"
step "alerts use documented metrics and have a runbook" kit alerts

# --------------------------------------------------------------------- Grafana
grafana() {
  kit grafana "$WORK/grafana-queries.yml" && promtool check rules "$WORK/grafana-queries.yml" >/dev/null &&
    echo "ok: the dashboard's queries are valid PromQL"
}
step "grafana dashboard" grafana

# ------------------------------------------------------------------ Kubernetes
step "kubernetes manifests" kit kubernetes

# The cutover binary the checks run: $CUTOVER when given (a build of this
# tree), else a release build, made by the first check that needs it.
CUTOVER=${CUTOVER:-}
cutover() {
  if [ -z "$CUTOVER" ]; then
    cargo build --release --quiet || return 1
    CUTOVER=$ROOT/target/release/cutover
  fi
  "$CUTOVER" "$@"
}

configmap_config() {
  mkdir -p "$WORK/configmap"
  kit extract "$WORK/configmap" &&
    cutover check -c "$WORK/configmap/cutover.yaml"
}
step "cutover check on the ConfigMap's config" configmap_config

step "kubernetes fleet manifests" kit kubernetes-fleet

# The fleet ConfigMap's cutover.yaml, with its weight file (an emptyDir in the
# pod) pointed at the seed Job's table. `cutover check` reads the fleet
# section without contacting etcd; replica_id needs POD_NAME, as in the pod.
fleet_configmap_config() {
  mkdir -p "$WORK/fleet"
  kit extract-fleet "$WORK/fleet" &&
    POD_NAME=cutover-check cutover check -c "$WORK/fleet/cutover.yaml"
}
step "cutover check on the fleet ConfigMap's config" fleet_configmap_config

rollback_script() {
  local state=$WORK/fake-kube bin=$WORK/fake-bin out=$WORK/rollback.out
  rm -rf "$state" "$bin"
  mkdir -p "$state/data" "$bin"
  kit extract "$state/data" >/dev/null
  rm -f "$state/data/admin-token"
  echo 41 >"$state/resourceVersion"
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$PY" "$DEPLOY/checks/fake_kubectl.py" >"$bin/kubectl"
  chmod +x "$bin/kubectl"
  local env=(env "PATH=$bin:$PATH" "FAKE_KUBE=$state" "CUTOVER=$CUTOVER")
  cp "$state/data/weights.yaml" "$WORK/weights.orig"

  "${env[@]}" "$DEPLOY/kubernetes/rollback.sh" --dry-run api >"$out" 2>&1 || { cat "$out"; return 1; }
  cmp -s "$state/data/weights.yaml" "$WORK/weights.orig" || { echo "--dry-run changed the ConfigMap"; return 1; }

  if "${env[@]}" FAKE_KUBE_CONFLICT=1 "$DEPLOY/kubernetes/rollback.sh" --wait 5 api >"$out" 2>&1; then
    echo "a concurrent change of the ConfigMap was overwritten"
    return 1
  fi
  cmp -s "$state/data/weights.yaml" "$WORK/weights.orig" || { echo "a refused patch changed the ConfigMap"; return 1; }

  "${env[@]}" "$DEPLOY/kubernetes/rollback.sh" --reason "check" --wait 10 api >"$out" 2>&1 || { cat "$out"; return 1; }
  sed 's/^/   /' "$out"
  "$PY" - "$state/data/weights.yaml" "$WORK/weights.orig" <<'EOF' || return 1
import sys, yaml
new, old = (yaml.safe_load(open(p)) for p in sys.argv[1:3])
assert new["api"] == {"legacy": 100, "new": 0}, new
assert {k: v for k, v in new.items() if k != "api"} == {k: v for k, v in old.items() if k != "api"}, (old, new)
first = open(sys.argv[2]).readline()
assert first.startswith("#") and open(sys.argv[1]).readline() == first, "the file's leading comment is kept"
EOF
  [ "$(cat "$state/resourceVersion")" = 42 ] || { echo "expected exactly one patch"; return 1; }
  grep -q '^--namespace default annotate pods' "$state/calls.log" || { echo "the pods were not nudged"; return 1; }
  # The patched ConfigMap still passes cutover check.
  cp "$state/data/"* "$WORK/configmap/" && "$CUTOVER" check -c "$WORK/configmap/cutover.yaml" >/dev/null &&
    echo "ok: rollback.sh patched weights.yaml to api 100% legacy, guarded by resourceVersion; the result passes cutover check"
}
step "deploy/kubernetes/rollback.sh against a stand-in kubectl" rollback_script

# --------------------------------------------------------------------- systemd
systemd_unit() {
  local unit=$WORK/systemd/cutover.service out
  mkdir -p "$WORK/systemd"
  # verify wants the executable to exist: point the unit at the build.
  sed "s|/usr/local/bin/cutover|$CUTOVER|g" "$DEPLOY/systemd/cutover.service" >"$unit"
  out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; return 1; }
  # It only warns (exit 0) about unknown keys and the like: any output fails.
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "ok: systemd-analyze verify"
  # Fleet mode's drop-in, read from cutover.service.d/ beside the unit.
  mkdir -p "$WORK/systemd/cutover.service.d"
  cp "$DEPLOY/systemd/fleet.conf" "$WORK/systemd/cutover.service.d/"
  out=$(systemd-analyze verify "$unit" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  echo "ok: systemd-analyze verify, with the fleet drop-in"
  rm -r "$WORK/systemd/cutover.service.d"
  if systemd-analyze security --help 2>/dev/null | grep -q -- --offline; then
    systemd-analyze security --offline=true --threshold=25 "$unit" | tail -n 1 || return 1
  fi
}
if command -v systemd-analyze >/dev/null 2>&1; then
  step "systemd unit" systemd_unit
else
  skip "systemd unit" "systemd-analyze is not installed"
fi
unit_settings() {
  local missing=0 key
  # shellcheck disable=SC2016 # $MAINPID is literal text in the unit
  for key in ProtectSystem=strict ReadWritePaths= NoNewPrivileges=yes CapabilityBoundingSet=CAP_NET_BIND_SERVICE \
    AmbientCapabilities=CAP_NET_BIND_SERVICE PrivateTmp=yes ProtectHome=yes RestrictAddressFamilies= \
    SystemCallFilter=@system-service LimitNOFILE= 'ExecReload=/bin/kill -HUP $MAINPID' KillSignal=SIGTERM; do
    grep -q "^$key" "$DEPLOY/systemd/cutover.service" || { echo "missing: $key"; missing=1; }
  done
  local stop drain
  stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s\{0,1\}$/\1/p' "$DEPLOY/systemd/cutover.service")
  drain=30 # server.drain_timeout's default
  if [ -z "$stop" ] || [ "$stop" -le "$drain" ]; then
    echo "TimeoutStopSec must exceed the drain timeout (${drain}s)"
    missing=1
  fi
  [ "$missing" = 0 ] && echo "ok: hardening settings present; TimeoutStopSec ${stop}s > drain ${drain}s"
}
step "systemd unit settings" unit_settings
fleet_dropin() {
  # shellcheck disable=SC2016 # ${CUTOVER_REPLICA_ID} is literal text in the config
  grep -q '^#     replica_id: ${CUTOVER_REPLICA_ID}$' "$DEPLOY/systemd/fleet.conf" &&
    grep -q '^Environment=CUTOVER_REPLICA_ID=' "$DEPLOY/systemd/fleet.conf" &&
    grep -q '^EnvironmentFile=-/etc/cutover/fleet.env$' "$DEPLOY/systemd/fleet.conf" &&
    grep -Eq '^CUTOVER_REPLICA_ID=[A-Za-z0-9_.:-]+$' "$DEPLOY/systemd/fleet.env" ||
    { echo "fleet.conf and fleet.env must set CUTOVER_REPLICA_ID, the replica_id of the config they show"; return 1; }
  echo "ok: the fleet drop-in sets CUTOVER_REPLICA_ID (host name, or fleet.env)"
}
step "systemd fleet drop-in" fleet_dropin

# ------------------------------------------------------------------- logrotate
logrotate_config() {
  local dir=$WORK/logrotate conf out
  mkdir -p "$dir/log"
  conf=$dir/cutover
  # The same rules on a folder of our own, the signal swapped for a marker.
  sed -e "s|/var/log/cutover|$dir/log|" \
    -e "s|systemctl kill --signal=USR1 --kill-whom=main cutover.service|touch $dir/signalled|" \
    "$DEPLOY/logrotate/cutover" >"$conf"
  chmod 0644 "$conf"
  grep -q "touch $dir/signalled" "$conf" || { echo "no postrotate signal to cutover"; return 1; }
  echo "GET / 200" >"$dir/log/access.log"
  out=$(logrotate --force --state "$dir/state" "$conf" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
  [ -s "$dir/log/access.log.1" ] && [ ! -e "$dir/log/access.log" ] && [ -e "$dir/signalled" ] ||
    { ls -l "$dir/log"; echo "the log was not moved away, or cutover not signalled"; return 1; }
  echo "ok: logrotate moves the access log away and signals cutover"
}
if command -v logrotate >/dev/null 2>&1; then
  step "logrotate config" logrotate_config
else
  skip "logrotate config" "logrotate is not installed"
fi

# ---------------------------------------------------------------------- Docker
step "Dockerfile" kit dockerfile

# ------------------------------------------------------------ scripts and docs
if command -v shellcheck >/dev/null 2>&1; then
  step "shellcheck" shellcheck "$DEPLOY/check.sh" "$DEPLOY/kubernetes/rollback.sh" "$ROOT/tests/dashboard/run.sh"
else
  skip "shellcheck" "not installed"
fi
step "docs/DEPLOY.md links" kit links

echo "deploy: $passed passed, $failed failed, $skipped skipped"
for f in "${failures[@]+"${failures[@]}"}"; do echo "  failed: $f"; done
[ "$failed" = 0 ]
