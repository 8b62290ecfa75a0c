"""Offline checks of the deploy kit, run by deploy/check.sh.

    python3 deploy/checks/kit.py COMMAND [ARGS]

Commands print what they checked and exit non-zero on the first problem.
Needs PyYAML.
"""

import json
import os
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"


class Failed(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failed(message)


def duration_seconds(text):
    """'25s', '1m30s', '800ms' -> seconds."""
    total = 0.0
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(text))
    check(parts and "".join(a + b for a, b in parts) == str(text), f"not a duration: {text!r}")
    for amount, unit in parts:
        total += float(amount) * units[unit]
    return total


def known_metrics():
    """Metric names from the table in docs/OPERATIONS.md: the contract."""
    doc = (ROOT / "docs" / "OPERATIONS.md").read_text()
    names = set()
    for first_cell in re.findall(r"^\| (`cutover_[^|]*)\|", doc, re.M):  # a row may name several
        names |= set(re.findall(r"`(cutover_[a-z_]+)`", first_cell))
    check(len(names) >= 10, "could not read the metric table of docs/OPERATIONS.md")
    histograms = {n for n in names if n.endswith("_seconds")}
    for h in histograms:
        names |= {h + "_bucket", h + "_sum", h + "_count"}
    return names


def metrics_in(expr):
    return set(re.findall(r"\b(cutover_[a-z_]+)\b", expr))


# ---------------------------------------------------------------- kubernetes


def load_manifests(folder=K8S):
    docs = {}
    for path in sorted(folder.glob("*.yaml")):
        with open(path) as f:
            for doc in yaml.safe_load_all(f):
                if doc is None:
                    continue
                check(isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc, f"{path.name}: not a Kubernetes object")
                docs[(doc["kind"], doc["metadata"]["name"])] = (path.name, doc)
    return docs


def find(docs, kind):
    found = [doc for (k, _), (_, doc) in docs.items() if k == kind]
    check(len(found) == 1, f"expected one {kind}, found {len(found)}")
    return found[0]


def cmd_kubernetes():
    docs = load_manifests()
    for (kind, name), (file, _) in docs.items():
        print(f"  {file}: {kind}/{name} parses")
    cm = find(docs, "ConfigMap")
    dep = find(docs, "Deployment")
    svc = find(docs, "Service")
    pdb = find(docs, "PodDisruptionBudget")

    check(set(cm["data"]) >= {"cutover.yaml", "weights.yaml"}, "the ConfigMap holds cutover.yaml and weights.yaml")
    config = yaml.safe_load(cm["data"]["cutover.yaml"])
    yaml.safe_load(cm["data"]["weights.yaml"])

    labels = dep["spec"]["selector"]["matchLabels"]
    for other in (svc["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        check(other == labels, "Service and PodDisruptionBudget select the Deployment's pods")
    check(pdb["apiVersion"] == "policy/v1", "PodDisruptionBudget is policy/v1")
    svc_ports = svc["spec"]["ports"]
    admin_port = int(config["admin"]["addr"].rsplit(":", 1)[1])
    public_port = int(config["listeners"][0]["addr"].rsplit(":", 1)[1])
    check(any(p.get("targetPort") in ("http", public_port) for p in svc_ports), "the Service targets the public port")
    check(not any(p.get("targetPort") in ("admin", admin_port) for p in svc_ports), "the Service does not expose the admin port")

    _, _, files, _ = check_proxy_deployment(dep, cm, config)
    check(config["weights_file"] in files, "the weight file is in the mounted folder")
    print("ok: kubernetes manifests")


def check_proxy_deployment(dep, cm, config):
    """The checks every cutover Deployment passes, file or fleet mode.
    Returns its container, its pod spec, the files of its read-only config
    folder, and that folder's path."""
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    check(spec["replicas"] == 3, "3 replicas")
    labels = spec["selector"]["matchLabels"]
    check(all(spec["template"]["metadata"]["labels"].get(k) == v for k, v in labels.items()), "the selector matches the pod labels")

    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    admin_port = int(config["admin"]["addr"].rsplit(":", 1)[1])
    public_port = int(config["listeners"][0]["addr"].rsplit(":", 1)[1])
    check(ports.get("admin") == admin_port, f"container port 'admin' is the config's admin port {admin_port}")
    check(ports.get("http") == public_port, f"container port 'http' is the config's listener port {public_port}")
    check(not config["admin"]["addr"].startswith("127."), "the admin API listens on the pod IP (probes, Prometheus)")
    check(config["admin"].get("token_file"), "a non-loopback admin API has a token")

    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = container[probe]["httpGet"]
        check(get["path"] == path and get["port"] in ("admin", admin_port), f"{probe} is GET {path} on the admin port")

    ann = spec["template"]["metadata"]["annotations"]
    check(ann.get("prometheus.io/scrape") == "true", "prometheus.io/scrape annotation")
    check(ann.get("prometheus.io/port") == str(admin_port), "prometheus.io/port is the admin port")
    check(ann.get("prometheus.io/path") == "/metrics", "prometheus.io/path annotation")

    res = container["resources"]
    check(res["requests"].get("cpu") and res["requests"].get("memory") and res["limits"].get("memory"), "resource requests and limits")

    psc, csc = pod["securityContext"], container["securityContext"]
    check(psc.get("runAsNonRoot") is True and csc.get("runAsNonRoot") is True, "runAsNonRoot")
    check(csc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem")
    check(csc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false")
    check(csc.get("capabilities", {}).get("drop") == ["ALL"], "all capabilities dropped")

    drain = duration_seconds(config.get("server", {}).get("drain_timeout", "30s"))
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = pod["terminationGracePeriodSeconds"]
    check(pre_stop >= 3, "a preStop sleep lets the endpoints update before the drain")
    check(grace > pre_stop + drain, f"terminationGracePeriodSeconds {grace} > preStop {pre_stop} + drain_timeout {drain:g}")
    print(f"  shutdown: preStop {pre_stop}s + drain_timeout {drain:g}s < grace period {grace}s")

    # The config folder: the whole ConfigMap as a folder, never subPath.
    mounts = container["volumeMounts"]
    check(all("subPath" not in m and "subPathExpr" not in m for m in mounts), "no subPath mounts (they never update)")
    args = container["args"]
    config_path = Path(args[args.index("-c") + 1])
    (mount,) = [m for m in mounts if Path(m["mountPath"]) == config_path.parent]
    check(mount.get("readOnly") is True, "the config folder is mounted read-only")
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    sources = volume["projected"]["sources"] if "projected" in volume else [{"configMap": volume["configMap"]}]
    files = set()
    for s in sources:
        if "configMap" in s:
            check(s["configMap"]["name"] == cm["metadata"]["name"], "the volume is the ConfigMap")
            files |= set(cm["data"]) if "items" not in s["configMap"] else {i["path"] for i in s["configMap"]["items"]}
        if "secret" in s:
            files |= {i["path"] for i in s["secret"]["items"]}
    check(config_path.name in files, f"{config_path.name} is in the mounted folder")
    check(config["admin"]["token_file"] in files, "the admin token file is in the mounted folder")
    print("  config folder: " + ", ".join(sorted(files)) + f" at {config_path.parent}")

    # Backends by cluster service name.
    for name, backend in config["backends"].items():
        host = re.sub(r"^\w+://", "", backend["url"]).split("/")[0].rsplit(":", 1)[0]
        check(not re.fullmatch(r"[\d.]+|\[.*\]|localhost", host), f"backend {name} is addressed by a service name, not {host}")
        print(f"  backend {name}: {backend['url']}")
    return container, pod, files, config_path.parent


def pod_env_from_field(container, field):
    """The names of the container's variables set from the pod's `field`."""
    return {e["name"] for e in container.get("env", []) if e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == field}


def cmd_kubernetes_fleet():
    """deploy/kubernetes/fleet/: etcd, the fleet-mode Deployment and its
    ConfigMap (only cutover.yaml), and the seed Job."""
    docs = load_manifests(K8S / "fleet")
    for (kind, name), (file, _) in docs.items():
        print(f"  fleet/{file}: {kind}/{name} parses")
    base = load_manifests()
    svc, pdb = find(base, "Service"), find(base, "PodDisruptionBudget")

    # etcd: a headless Service and a StatefulSet of 3 members with stable names.
    sts = find(docs, "StatefulSet")
    etcd_svc = docs[("Service", sts["spec"]["serviceName"])][1]
    check(etcd_svc["spec"].get("clusterIP") == "None", "the etcd Service is headless")
    check(etcd_svc["spec"].get("publishNotReadyAddresses") is True, "etcd members resolve before they are ready")
    members = sts["spec"]["replicas"]
    check(members == 3, "3 etcd members")
    check(sts["spec"].get("podManagementPolicy") == "Parallel", "etcd members start together (podManagementPolicy: Parallel)")
    labels = sts["spec"]["selector"]["matchLabels"]
    check(etcd_svc["spec"]["selector"] == labels, "the etcd Service selects the StatefulSet's pods")
    check(all(sts["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in labels.items()), "the etcd selector matches its pod labels")
    etcd_pdbs = [d for (k, _), (_, d) in docs.items() if k == "PodDisruptionBudget"]
    check(any(p["spec"]["selector"]["matchLabels"] == labels and p["spec"].get("maxUnavailable") == 1 for p in etcd_pdbs), "a PodDisruptionBudget keeps etcd's quorum")
    (etcd,) = sts["spec"]["template"]["spec"]["containers"]
    check({"POD_NAME"} <= pod_env_from_field(etcd, "metadata.name"), "etcd's POD_NAME comes from the downward API")
    check("POD_NAMESPACE" in pod_env_from_field(etcd, "metadata.namespace"), "etcd's POD_NAMESPACE comes from the downward API")
    flags = dict(a.split("=", 1) for a in etcd["args"])
    svc_ports = {p["name"]: p["port"] for p in etcd_svc["spec"]["ports"]}
    ctr_ports = {p["name"]: p["containerPort"] for p in etcd["ports"]}
    check(svc_ports.get("client") == ctr_ports.get("client") == 2379, "client port 2379 on the Service and the container")
    check(svc_ports.get("peer") == ctr_ports.get("peer") == 2380, "peer port 2380 on the Service and the container")
    sts_name, svc_name = sts["metadata"]["name"], etcd_svc["metadata"]["name"]
    dns = f"{svc_name}.$(POD_NAMESPACE).svc.cluster.local"
    check(flags.get("--name") == "$(POD_NAME)", "each member is named after its pod")
    expected = ",".join(f"{sts_name}-{i}=http://{sts_name}-{i}.{dns}:2380" for i in range(members))
    check(flags.get("--initial-cluster") == expected, f"--initial-cluster names every member by its stable DNS name: {expected}")
    check(flags.get("--initial-advertise-peer-urls") == f"http://$(POD_NAME).{dns}:2380", "each member advertises its own peer URL")
    check(flags.get("--advertise-client-urls") == f"http://$(POD_NAME).{dns}:2379", "each member advertises its own client URL")
    check(flags.get("--initial-cluster-state") == "new", "--initial-cluster-state new")
    for flag in ("--listen-peer-urls", "--listen-client-urls"):
        check(flags.get(flag, "").startswith("http://0.0.0.0:"), f"{flag} on every interface")
    data_dir = Path(flags["--data-dir"])
    claims = {c["metadata"]["name"] for c in sts["spec"]["volumeClaimTemplates"]}
    check(any(m["name"] in claims and data_dir.is_relative_to(m["mountPath"]) for m in etcd["volumeMounts"]), "etcd's data dir is on its PersistentVolumeClaim")
    print(f"  etcd: {members} members {sts_name}-0..{members - 1} via headless Service {svc_name}, data on PVCs")

    # The proxy: the same checks as file mode, plus the fleet wiring.
    cm = docs[("ConfigMap", "cutover-config")][1]
    dep = find(docs, "Deployment")
    check(set(cm["data"]) == {"cutover.yaml"}, "the fleet ConfigMap holds only cutover.yaml")
    config = yaml.safe_load(cm["data"]["cutover.yaml"])
    dep_labels = dep["spec"]["selector"]["matchLabels"]
    check(svc["spec"]["selector"] == dep_labels and pdb["spec"]["selector"]["matchLabels"] == dep_labels, "deploy/kubernetes/service.yaml and pdb.yaml select the fleet Deployment's pods")
    container, pod, _, config_dir = check_proxy_deployment(dep, cm, config)
    fleet = config["fleet"]
    check(fleet["replica_id"] == "${POD_NAME}", "replica_id is ${POD_NAME}")
    check("POD_NAME" in pod_env_from_field(container, "metadata.name"), "POD_NAME comes from the downward API")
    for url in fleet["etcd"]["endpoints"]:
        m = re.fullmatch(rf"http://({sts_name}-(\d+)\.)?{svc_name}\.[a-z0-9-]+\.svc\.cluster\.local:(\d+)", url)
        check(m and int(m.group(3)) == 2379 and (m.group(2) is None or int(m.group(2)) < members), f"etcd endpoint {url} is a member of {svc_name}")
    check(len(fleet["etcd"]["endpoints"]) == members, "every etcd member is an endpoint")
    weights = Path(config["weights_file"])
    check(weights.is_absolute() and not weights.is_relative_to(config_dir), "the weight file (the fleet table's cache) is outside the read-only config folder")
    (state,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == weights.parent]
    check(not state.get("readOnly"), "the weight file's folder is writable")
    (state_volume,) = [v for v in pod["volumes"] if v["name"] == state["name"]]
    check("emptyDir" in state_volume, "the weight file's folder is an emptyDir")
    print(f"  fleet: replica_id ${{POD_NAME}}, etcd {svc_name}, cache {weights} on an emptyDir")

    # The seed Job: the same config, the seed table at the weight file's path.
    job = find(docs, "Job")
    jpod = job["spec"]["template"]["spec"]
    (seed,) = jpod["containers"]
    check(seed["image"] == container["image"], "the seed Job runs the proxy's image")
    check(seed["args"] == ["fleet", "seed", "-c", str(config_dir / "cutover.yaml")], "the Job runs `cutover fleet seed -c` on the replicas' config")
    check("POD_NAME" in pod_env_from_field(seed, "metadata.name"), "the Job sets POD_NAME (replica_id)")
    mounts = {Path(m["mountPath"]): m["name"] for m in seed["volumeMounts"]}
    volumes = {v["name"]: v for v in jpod["volumes"]}
    (config_mount,) = [m["name"] for m in container["volumeMounts"] if Path(m["mountPath"]) == config_dir]
    (config_volume,) = [v for v in pod["volumes"] if v["name"] == config_mount]
    check(volumes[mounts[config_dir]] == config_volume, "the Job mounts the same config folder as the replicas")
    seed_cm_name = volumes[mounts[weights.parent]]["configMap"]["name"]
    seed_cm = docs[("ConfigMap", seed_cm_name)][1]
    check(weights.name in seed_cm["data"], f"the seed ConfigMap holds {weights.name}")
    print(f"  seed: Job {job['metadata']['name']} writes ConfigMap {seed_cm_name}'s {weights.name} to etcd")
    print("ok: kubernetes fleet manifests")


def cmd_extract_fleet(dest):
    """Writes the fleet ConfigMap's cutover.yaml into dest with its weight
    file pointed at the seed table (written beside it), and a stand-in token."""
    dest = Path(dest)
    docs = load_manifests(K8S / "fleet")
    text = docs[("ConfigMap", "cutover-config")][1]["data"]["cutover.yaml"]
    config = yaml.safe_load(text)
    weights = Path(config["weights_file"])
    line = f"weights_file: {weights}"
    check(text.count(line) == 1, f"cutover.yaml has one line {line!r}")
    (dest / "cutover.yaml").write_text(text.replace(line, f"weights_file: {weights.name}"))
    seed = find({k: v for k, v in docs.items() if k[1] != "cutover-config"}, "ConfigMap")
    (dest / weights.name).write_text(seed["data"][weights.name])
    (dest / config["admin"]["token_file"]).write_text("stand-in-token\n")
    print(f"  extracted cutover.yaml (weights_file {weights} -> {weights.name}) and the seed table to {dest}")


def cmd_extract(dest):
    """Writes the ConfigMap's files (and a stand-in admin token) into dest."""
    dest = Path(dest)
    cm = find(load_manifests(), "ConfigMap")
    for name, text in cm["data"].items():
        (dest / name).write_text(text)
    token = yaml.safe_load(cm["data"]["cutover.yaml"])["admin"].get("token_file")
    if token:
        check(not os.path.isabs(token), "token_file is relative to the config folder")
        (dest / token).write_text("stand-in-token\n")
    print(f"  extracted {', '.join(sorted(cm['data']))} to {dest}")


# ---------------------------------------------------------------- prometheus


def cmd_k8s_sd_variant(src, dest):
    """Copies prometheus.yml with kubernetes_sd_configs replaced by an empty
    static_configs, for a promtool built without Kubernetes discovery."""
    config = yaml.safe_load(Path(src).read_text())
    replaced = 0
    for job in config.get("scrape_configs", []):
        if "kubernetes_sd_configs" in job:
            sd = job.pop("kubernetes_sd_configs")
            check(all(s.get("role") == "pod" for s in sd), "kubernetes_sd_configs use role: pod")
            job.setdefault("static_configs", [])
            replaced += 1
    check(replaced, "the scrape config discovers Kubernetes pods")
    Path(dest).write_text(yaml.safe_dump(config, sort_keys=False))
    print(f"  {replaced} kubernetes_sd_configs block(s) replaced for this promtool")


def cmd_alerts():
    known = known_metrics()
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    names = []
    for group in rules["groups"]:
        for rule in group["rules"]:
            unknown = metrics_in(rule["expr"]) - known
            check(not unknown, f"alert {rule['alert']} uses unknown metrics {sorted(unknown)}")
            check(rule.get("labels", {}).get("severity") in ("warning", "critical"), f"alert {rule['alert']} has a severity")
            check(rule.get("annotations", {}).get("summary"), f"alert {rule['alert']} has a summary")
            names.append(rule["alert"])
    deploy_doc = (ROOT / "docs" / "DEPLOY.md").read_text()
    for name in names:
        check(name in deploy_doc, f"docs/DEPLOY.md says what to do when {name} fires")
    print(f"ok: {len(names)} alerts use documented metrics and are explained in docs/DEPLOY.md")


# ---------------------------------------------------------------- grafana


def cmd_grafana(rules_out):
    """Validates the dashboard and writes its queries as recording rules, so
    promtool can check their PromQL."""
    known = known_metrics()
    dash = json.loads((DEPLOY / "grafana" / "cutover-dashboard.json").read_text())
    check(dash.get("uid") and dash.get("title") and dash.get("schemaVersion"), "uid, title, schemaVersion")
    variables = {v["name"] for v in dash["templating"]["list"]}
    check("datasource" in variables, "a datasource variable")
    ids, exprs, covered = set(), [], set()
    for panel in dash["panels"]:
        check(panel["id"] not in ids, f"panel id {panel['id']} is unique")
        ids.add(panel["id"])
        g = panel["gridPos"]
        check(0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, f"panel {panel['title']!r} fits the grid")
        if panel["type"] == "row":
            continue
        check(panel["datasource"]["uid"] == "${datasource}", f"panel {panel['title']!r} uses the datasource variable")
        check(panel.get("targets"), f"panel {panel['title']!r} has queries")
        for t in panel["targets"]:
            exprs.append((panel["title"], t["expr"]))
    for a in dash["annotations"]["list"]:
        if "expr" in a:
            exprs.append((a["name"], a["expr"]))
    for title, expr in exprs:
        unknown = metrics_in(expr) - known
        check(not unknown, f"panel {title!r} uses unknown metrics {sorted(unknown)}")
        covered |= metrics_in(expr)
        for var in re.findall(r"\$(\w+)", expr):
            check(var in variables or var.startswith("__"), f"panel {title!r} uses undefined variable ${var}")
    wanted = {
        "cutover_backend_weight_percent", "cutover_requests_total", "cutover_request_duration_seconds_bucket",
        "cutover_parity_mismatches_total", "cutover_mirror_requests_total", "cutover_rollbacks_total",
        "cutover_config_reloads_total", "cutover_backend_healthy", "cutover_active_connections",
    }
    check(wanted <= covered, f"the dashboard shows {sorted(wanted - covered)}")
    # PromQL syntax: the queries as recording rules, variables filled in.
    rules = []
    for i, (title, expr) in enumerate(exprs):
        concrete = expr.replace("$__rate_interval", "5m")
        concrete = re.sub(r"\$\w+", ".*", concrete)
        rules.append({"record": f"grafana:query_{i}", "expr": concrete})
    Path(rules_out).write_text(yaml.safe_dump({"groups": [{"name": "grafana-queries", "rules": rules}]}, sort_keys=False))
    print(f"  {len(dash['panels'])} panels, {len(exprs)} queries over documented metrics")


# ---------------------------------------------------------------- docker


def cmd_dockerfile():
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    lines = [l.strip() for l in re.sub(r"\\\n", " ", text).splitlines() if l.strip() and not l.strip().startswith("#")]
    stages = [l for l in lines if l.upper().startswith("FROM ")]
    check(len(stages) == 2, "two stages: build and runtime")
    check(re.match(r"FROM rust:1-bookworm AS build$", stages[0]), "builds on rust:1 with Debian 12 (the runtime's glibc)")
    check(stages[1] == "FROM gcr.io/distroless/cc-debian12:nonroot", "runs on distroless cc-debian12:nonroot")
    check(re.search(r"cargo build --release --locked", text), "cargo build --release --locked")
    check(not any(l.upper().startswith("ADD ") for l in lines), "COPY, not ADD")
    check(not any(l.upper().startswith("HEALTHCHECK") for l in lines), "no HEALTHCHECK (distroless has no shell)")
    check("HEALTHCHECK" in text and "/healthz" in text and "/readyz" in text, "a comment says why there is no HEALTHCHECK")
    runtime = lines[lines.index(stages[1]):]
    users = [l.split()[1] for l in runtime if l.upper().startswith("USER ")]
    check(users and re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]), "the runtime runs as a numeric non-root user")
    check(any(l.upper().startswith("EXPOSE ") for l in runtime), "EXPOSE")
    check(any(l.startswith("ENTRYPOINT [") for l in runtime), "exec-form ENTRYPOINT (signals reach cutover)")

    # Everything the build reads is copied into the build stage and let
    # through by the .dockerignore beside the Dockerfile.
    build = lines[: lines.index(stages[1])]
    copied = []
    for l in build:
        if l.upper().startswith("COPY ") and "--from" not in l:
            copied += [a.rstrip("/") for a in l.split()[1:-1] if not a.startswith("--")]
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text().split()
    allowed = [p.lstrip("!").rstrip("/") for p in ignore if p.startswith("!")]
    check("*" in ignore, ".dockerignore excludes everything by default (target/ is large)")
    for c in copied:
        check((ROOT / c).exists(), f"COPY source {c} exists")
        check(c in allowed, f"{c} is let through Dockerfile.dockerignore")

    def inside(path):
        rel = Path(os.path.relpath(path, ROOT)).as_posix()
        return any(rel == c or rel.startswith(c + "/") for c in copied)

    needed = []
    for src in (ROOT / "src").rglob("*.rs"):
        for target in re.findall(r'include_(?:str|bytes)!\("([^"]+)"\)', src.read_text()):
            needed.append((src.parent / target).resolve())
    manifest = (ROOT / "Cargo.toml").read_text()
    needed += [(ROOT / p).resolve() for p in re.findall(r'^path\s*=\s*"([^"]+)"', manifest, re.M)]
    needed += [(ROOT / "benches" / f"{n}.rs").resolve() for n in re.findall(r'\[\[bench\]\]\s*name\s*=\s*"([^"]+)"', manifest)]
    for path in needed:
        check(path.exists(), f"{path} exists")
        check(inside(path), f"the build needs {os.path.relpath(path, ROOT)}, which the Dockerfile does not copy")
    print(f"  copies {', '.join(copied)}; covers {len(needed)} files the build reads besides src/")
    print("ok: Dockerfile")


# ---------------------------------------------------------------- docs


def cmd_links():
    for doc in [ROOT / "docs" / "DEPLOY.md"]:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"\w+://", target):
                continue
            check((doc.parent / target).exists(), f"{doc.name} links to a missing {target}")
    readme = (ROOT / "README.md").read_text()
    check("(docs/DEPLOY.md)" in readme, "README links docs/DEPLOY.md")
    print("ok: docs/DEPLOY.md links resolve; README links it")


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        sys.exit(2)
    cmd, args = sys.argv[1], sys.argv[2:]
    try:
        globals()["cmd_" + cmd.replace("-", "_")](*args)
    except Failed as e:
        print(f"FAILED: {e}")
        sys.exit(1)


if __name__ == "__main__":
    main()
