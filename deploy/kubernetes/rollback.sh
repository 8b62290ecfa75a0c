#!/usr/bin/env bash
# Rolls the whole fleet back at once: rewrites weights.yaml in the ConfigMap
# that every replica reads, so the named routes send 100% to their stable
# backend, then waits until every replica serves the new table.
#
#   deploy/kubernetes/rollback.sh [options] ROUTE...
#   deploy/kubernetes/rollback.sh [options] --all
#
# Options:
#   -n, --namespace NS     namespace of the ConfigMap and the pods (default: kubectl's current)
#   --configmap NAME       the ConfigMap (default: cutover-config)
#   --selector LABELS      the cutover pods (default: app.kubernetes.io/name=cutover)
#   --admin-port PORT      the pods' admin port (default: 9901)
#   --reason TEXT          why, for the weight history of the computation (default: fleet rollback)
#   --wait SECONDS         how long to wait for every replica (default: 120; 0: do not wait)
#   --dry-run              print the new weights.yaml, change nothing
#
# The new table is computed by the cutover CLI itself (`cutover rollback` on a
# copy of the ConfigMap's cutover.yaml and weights.yaml), with the same checks
# as the proxy and the file's comments kept. Set CUTOVER to its path when
# `cutover` is not on PATH. The ConfigMap is patched with its resourceVersion,
# so a concurrent edit makes this fail instead of being overwritten.
#
# Needs kubectl rights to get and patch the ConfigMap, and, for the nudge and
# the wait, to list and annotate the pods and to get pods/proxy.
set -euo pipefail

namespace=""
configmap=cutover-config
selector=app.kubernetes.io/name=cutover
admin_port=9901
reason="fleet rollback"
wait_seconds=120
dry_run=false
targets=()
CUTOVER=${CUTOVER:-cutover}

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "rollback: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    -n | --namespace) namespace="$2"; shift 2 ;;
    --configmap) configmap="$2"; shift 2 ;;
    --selector) selector="$2"; shift 2 ;;
    --admin-port) admin_port="$2"; shift 2 ;;
    --reason) reason="$2"; shift 2 ;;
    --wait) wait_seconds="$2"; shift 2 ;;
    --dry-run) dry_run=true; shift ;;
    --all) targets+=(--all); shift ;;
    -h | --help) usage; exit 0 ;;
    -*) usage >&2; die "unknown option $1" ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || { usage >&2; die "name the routes to roll back, or --all"; }
command -v kubectl >/dev/null 2>&1 || die "kubectl is not on PATH"
command -v "$CUTOVER" >/dev/null 2>&1 || die "the cutover CLI is not on PATH (install it, or set CUTOVER=/path/to/cutover)"

if [ -z "$namespace" ]; then
  namespace="$(kubectl config view --minify -o 'jsonpath={..namespace}' 2>/dev/null || true)"
  namespace="${namespace:-default}"
fi
kc() { kubectl --namespace "$namespace" "$@"; }

work="$(mktemp -d "${TMPDIR:-/tmp}/cutover-rollback.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# --- the ConfigMap as it is now --------------------------------------------
field() { kc get configmap "$configmap" -o "go-template={{ index .data \"$1\" }}"; }
field cutover.yaml >"$work/cutover.yaml" || die "cannot read configmap $configmap in namespace $namespace"
field weights.yaml >"$work/weights.yaml"
version="$(kc get configmap "$configmap" -o 'go-template={{ .metadata.resourceVersion }}')"
for f in cutover.yaml weights.yaml; do
  if [ ! -s "$work/$f" ] || [ "$(cat "$work/$f")" = "<no value>" ]; then
    die "configmap $configmap has no key $f"
  fi
done
cp "$work/weights.yaml" "$work/weights.before"

# The copy only serves to compute the table: its admin token is a stand-in
# and its admin address unreachable, so the CLI edits the copied file.
sed -i 's|^\([[:space:]]*token_file:\).*$|\1 rollback-token|' "$work/cutover.yaml"
echo "stand-in" >"$work/rollback-token"
"$CUTOVER" rollback -c "$work/cutover.yaml" --admin 127.0.0.1:1 --reason "$reason" "${targets[@]}" >"$work/cli.out" 2>&1 ||
  { cat "$work/cli.out" >&2; die "cutover rollback refused the change"; }

echo "== weights.yaml for configmap $configmap (namespace $namespace)"
cat "$work/weights.yaml"
if cmp -s "$work/weights.before" "$work/weights.yaml"; then
  echo "== unchanged: those routes already send everything to their stable backend"
elif $dry_run; then
  echo "== dry run: nothing changed"
  exit 0
else
  # --- patch, guarded by the resourceVersion --------------------------------
  json_string() {
    sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' -e 's/\r/\\r/g' "$1" | awk 'BEGIN { printf "\"" } { printf "%s\\n", $0 } END { printf "\"" }'
  }
  patch="{\"metadata\":{\"resourceVersion\":\"$version\"},\"data\":{\"weights.yaml\":$(json_string "$work/weights.yaml")}}"
  kc patch configmap "$configmap" --type merge -p "$patch" >/dev/null ||
    die "patch refused (if the ConfigMap changed meanwhile, run this again)"
  echo "== configmap $configmap patched at $(date -u +%Y-%m-%dT%H:%M:%SZ)"

  # A pod update makes the kubelet resync the pod's volumes now rather than
  # at its next periodic sync; harmless if it is not allowed.
  kc annotate pods -l "$selector" "cutover/config-nudge=$(date +%s)" --overwrite >/dev/null 2>&1 ||
    echo "(could not annotate the pods; the kubelet picks the change up within its sync period, about a minute)"
fi
$dry_run && exit 0
[ "$wait_seconds" -gt 0 ] || exit 0

# --- wait until every replica serves the new table --------------------------
# Expected gauges: "route backend percent" for every route in the new file
# (cutover writes one route per line: `api: { legacy: 100, new: 0 }`).
awk '
  /^[[:space:]]*#/ || !/:[[:space:]]*\{/ { next }
  {
    line = $0; sub(/[[:space:]]*#.*$/, "", line)
    route = line; sub(/:.*/, "", route); gsub(/[[:space:]"]/, "", route)
    body = line; sub(/^[^{]*\{/, "", body); sub(/\}.*$/, "", body)
    n = split(body, pairs, ",")
    for (i = 1; i <= n; i++) {
      split(pairs[i], kv, ":"); b = kv[1]; v = kv[2]
      gsub(/[[:space:]"]/, "", b); gsub(/[[:space:]]/, "", v)
      if (b != "") print route, b, v
    }
  }' "$work/weights.yaml" >"$work/expected"
[ -s "$work/expected" ] || die "could not read the new weights.yaml to verify the replicas"

serves_table() { # pod -> 0 when its live weights are the expected ones
  kc get --raw "/api/v1/namespaces/$namespace/pods/$1:$admin_port/proxy/metrics" >"$work/metrics" 2>/dev/null || return 1
  awk '
    NR == FNR { want[$1 SUBSEP $2] = $3; next }
    /^cutover_backend_weight_percent\{/ {
      r = $0; sub(/.*route="/, "", r); sub(/".*/, "", r)
      b = $0; sub(/.*backend="/, "", b); sub(/".*/, "", b)
      if ((r SUBSEP b) in want) { seen[r SUBSEP b] = 1; if ($NF + 0 != want[r SUBSEP b] + 0) bad = 1 }
    }
    END { for (k in want) if (!(k in seen)) bad = 1; exit bad }
  ' "$work/expected" "$work/metrics"
}

pods="$(kc get pods -l "$selector" --field-selector=status.phase=Running -o name | sed 's|^pod/||')"
[ -n "$pods" ] || die "no running pods match $selector"
deadline=$((SECONDS + wait_seconds))
pending="$pods"
while [ -n "$pending" ]; do
  still=""
  for pod in $pending; do
    if serves_table "$pod"; then echo "   $pod serves the new table"; else still="$still $pod"; fi
  done
  pending="${still# }"
  [ -z "$pending" ] && break
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "rollback: after ${wait_seconds}s these replicas still serve another table: $pending" >&2
    echo "  - a reload error: kubectl logs POD | grep -i reload" >&2
    echo "  - a change made through that replica's own admin API lives in its memory until the" >&2
    echo "    ConfigMap changes again: undo it there, or kubectl delete pod POD" >&2
    exit 1
  fi
  sleep 2
done
echo "== every replica ($(echo "$pods" | wc -w)) serves the new table"
