"""A stand-in for kubectl that serves one ConfigMap and a few cutover pods
from a folder, for testing deploy/kubernetes/rollback.sh without a cluster.

The folder ($FAKE_KUBE) holds data/<key> (the ConfigMap's data),
resourceVersion, and calls.log (every call, one per line). Pods serve
/metrics with the weights in data/weights.yaml, as replicas that reloaded it.
FAKE_KUBE_CONFLICT=1 makes a patch fail as if the ConfigMap changed meanwhile.
"""

import json
import os
import sys
from pathlib import Path

import yaml

STATE = Path(os.environ["FAKE_KUBE"])
PODS = ["cutover-7d9f-a", "cutover-7d9f-b", "cutover-7d9f-c"]


def fail(message, code=1):
    print(f"Error from server: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv):
    with open(STATE / "calls.log", "a") as log:
        log.write(" ".join(argv) + "\n")
    args = list(argv)
    namespace = "default"
    if args[:1] == ["--namespace"]:
        namespace = args[1]
        args = args[2:]
    if args[:2] == ["config", "view"]:
        return
    if args[:2] == ["get", "configmap"]:
        output = args[args.index("-o") + 1]
        if "resourceVersion" in output:
            print((STATE / "resourceVersion").read_text().strip(), end="")
            return
        key = output.split('"')[1]
        path = STATE / "data" / key
        print(path.read_text() if path.exists() else "<no value>", end="")
        return
    if args[:2] == ["patch", "configmap"]:
        patch = json.loads(args[args.index("-p") + 1])
        check_type = args[args.index("--type") + 1]
        assert check_type == "merge", check_type
        version = (STATE / "resourceVersion").read_text().strip()
        if os.environ.get("FAKE_KUBE_CONFLICT") == "1" or patch["metadata"]["resourceVersion"] != version:
            fail('Operation cannot be fulfilled on configmaps "cutover-config": the object has been modified')
        for key, value in patch["data"].items():
            (STATE / "data" / key).write_text(value)
        (STATE / "resourceVersion").write_text(str(int(version) + 1))
        print("configmap/cutover-config patched")
        return
    if args[:2] == ["annotate", "pods"]:
        return
    if args[:2] == ["get", "pods"]:
        print("\n".join(f"pod/{p}" for p in PODS))
        return
    if args[:1] == ["get"] and args[1] == "--raw":
        path = args[2]
        prefix = f"/api/v1/namespaces/{namespace}/pods/"
        assert path.startswith(prefix) and path.endswith(":9901/proxy/metrics"), path
        weights = yaml.safe_load((STATE / "data" / "weights.yaml").read_text())
        print("# TYPE cutover_backend_weight_percent gauge")
        for route, split in sorted(weights.items()):
            for backend, pct in sorted(split.items()):
                print(f'cutover_backend_weight_percent{{backend="{backend}",route="{route}"}} {pct:g}')
        return
    fail(f"fake kubectl does not know: {' '.join(argv)}", 2)


if __name__ == "__main__":
    main(sys.argv[1:])
