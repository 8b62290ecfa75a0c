#!/usr/bin/env python3
"""report.py: writes the Markdown report of a compare.sh run (benches/load/results.md).

  report.py --results TSV --idle TSV --meta FILE [--counts TSV] [--notes TSV]
            [--instructions TSV] [--instructions-top TSV] OUT_MD

Reads the raw rows compare.sh collected and writes OUT_MD: the run's
settings (--meta, `key=value` lines), one table per scenario with the
medians of the rounds, the ratios of cutover to each peer, the CPU budget
of the small scenario, the paired costs of 1,000 routes and of mirroring,
idle memory per connection, system calls and allocations per request, and
instructions per request; notes (--notes: scenario, target, note) say why
a target could not run a scenario. Missing optional inputs leave their
sections out.
"""

import os
import statistics

from benchlib import arg_parser, run

PROXIES = ["cutover", "nginx", "haproxy"]
# `floor`: the least a hyper proxy does (benches/load/floor.rs); `native`: the
# same with an HTTP/1 codec of its own (benches/load/floor_native.rs); `direct`: no proxy.
TARGETS = PROXIES + ["floor", "native", "direct"]

SCENARIOS = [
    ("small", "HTTP/1.1, 100-byte response, 1 route, 90/10 split (random / weighted)"),
    ("small-h2", "HTTP/2 cleartext (prior knowledge), 100-byte response, 1 route, 90/10 split"),
    ("64k", "HTTP/1.1, 65,536-byte response, 1 route, 90/10 split"),
    ("sticky", "HTTP/1.1, 100-byte response, 90/10 split sticky on a `sessionid` cookie (10,000 users)"),
    ("routes1000", "HTTP/1.1, 100-byte response, 1,000 non-matching prefix routes before the matching one"),
    ("tls", "HTTPS keep-alive (ECDSA P-256 certificate), 100-byte response, 1 route, 90/10 split"),
    ("tls-resume", "HTTPS, a new connection for every request (`Connection: close`) resuming the "
     "client's TLS session (wrk does): req/s is resumed handshakes per second"),
    ("tls-handshake-ecdsa", "HTTPS, a new connection for every request with a full TLS handshake "
     "(bench-handshake: rustls, no resumption), ECDSA P-256 certificate: req/s is handshakes per second"),
    ("tls-handshake-rsa", "HTTPS, a new connection for every request with a full TLS handshake "
     "(bench-handshake: rustls, no resumption), RSA-2048 certificate: req/s is handshakes per second"),
    ("mirror-off", "HTTP/1.1, 100-byte response, the `small` setup of each mirroring proxy, measured "
     "just before each of its mirrored runs: the baseline of the cost of parity"),
    ("mirror", "HTTP/1.1, 100-byte response, all traffic to legacy and every request mirrored to new "
     "(`new %` is the share of upstream requests that were shadow copies: 50% means every request "
     "was mirrored)"),
]


def read_tsv(path):
    rows = []
    if not os.path.exists(path):
        return rows
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        for line in f:
            values = line.rstrip("\n").split("\t")
            if len(values) == len(header):
                rows.append(dict(zip(header, values)))
    return rows


def num(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def median_of(rows, field):
    values = [num(r.get(field)) for r in rows if num(r.get(field)) is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=2, scale=1.0):
    if value is None:
        return "–"
    return "{:,.{d}f}".format(value / scale, d=digits)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return "%.2f" % (a / b)


def median_or_none(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def paired_runs(by_key, before, after):
    """Per proxy, its (`before`, `after`) runs of each round: measured one
    right after the other, so the machine's drift between scenarios
    minutes apart does not count in their quotient."""
    pairs = {}
    for t in PROXIES:
        first = {r["round"]: r for r in by_key.get((before, t), [])}
        then = {r["round"]: r for r in by_key.get((after, t), [])}
        both = sorted(set(first) & set(then), key=int)
        if both:
            pairs[t] = [(first[r], then[r]) for r in both]
    return pairs


def per_round(pairs, f, combine):
    """`combine(f(after), f(before))` for each pair, None where a run lacks the figure."""
    out = []
    for before, after in pairs:
        a, b = f(after), f(before)
        out.append(None if a is None or b is None else combine(a, b))
    return out


def quotient(a, b):
    return a / b if b else None


def difference(a, b):
    return a - b


def field(name):
    return lambda r: num(r.get(name))


def report(results_tsv, idle_tsv, meta_file, out_md, counts_tsv=None, notes_tsv=None, instr_tsv=None, top_tsv=None):
    rows = read_tsv(results_tsv)
    count_rows = read_tsv(counts_tsv) if counts_tsv else []
    instr_rows = read_tsv(instr_tsv) if instr_tsv else []
    top_rows = read_tsv(top_tsv) if top_tsv else []
    notes = {}
    for r in read_tsv(notes_tsv) if notes_tsv else []:
        notes.setdefault(r["scenario"], []).append((r["target"], r["note"]))
    idle_rows = read_tsv(idle_tsv)
    meta = {}
    if os.path.exists(meta_file):
        with open(meta_file) as f:
            for line in f:
                key, _, value = line.rstrip("\n").partition("=")
                meta[key] = value
    out = []
    w = out.append
    w("# cutover load comparison")
    w("")
    w("Generated by `benches/load/compare.sh` on %s." % meta.get("date", "?"))
    w("")
    w("| setting | value |")
    w("| --- | --- |")
    for key, label in [
        ("machine", "machine"),
        ("kernel", "kernel"),
        ("rounds", "rounds (median reported)"),
        ("duration", "duration per run"),
        ("wrk", "HTTP/1.1 load"),
        ("h2load", "HTTP/2 load"),
        ("handshake", "full TLS handshakes"),
        ("tls", "TLS"),
        ("workers", "proxy worker threads / processes"),
        ("cutover", "cutover"),
        ("nginx", "nginx"),
        ("haproxy", "haproxy"),
        ("floor", "floor"),
        ("native", "native floor"),
        ("elapsed", "script wall time"),
        ("load", "machine load"),
    ]:
        if key in meta:
            w("| %s | %s |" % (label, meta[key]))
    w("")
    w(
        "Latencies in milliseconds. CPU is the proxy's own user+system time per "
        "request (for `direct`: the upstream's). Peak RSS is VmHWM at the end of "
        "all rounds, summed over the proxy's processes (nginx: master + workers). "
        "`new %` is the share of requests the upstream saw on the `new` backend's port. "
        "Every figure is the median of the rounds; all processes (load generator, "
        "proxy, upstream) share the same cores."
    )
    w("")
    by_key = {}
    for r in rows:
        by_key.setdefault((r["scenario"], r["target"]), []).append(r)
    summary = {}
    for scenario, title in SCENARIOS:
        present = [t for t in TARGETS if (scenario, t) in by_key]
        if not present and scenario in notes:
            w("## %s" % scenario)
            w("")
            w(title + ".")
            w("")
            for target, note in notes[scenario]:
                w("- %s: %s" % (target, note))
            w("")
        if not present:
            continue
        w("## %s" % scenario)
        w("")
        w(title + ".")
        w("")
        w("| target | req/s | p50 | p99 | p99.9 | CPU µs/req | peak RSS MB | new % | errors | runs |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for t in present:
            rs = by_key[(scenario, t)]
            med = {
                f: median_of(rs, f)
                for f in ["rps", "p50_us", "p99_us", "p999_us", "cpu_us_per_req", "new_pct", "sys_us_per_req", "machine_us_per_req", "switches_per_req"]
            }
            rss = [num(r["rss_peak_kb"]) for r in rs if num(r["rss_peak_kb"]) is not None]
            errors = sum(int(num(r["errors"]) or 0) for r in rs)
            summary[(scenario, t)] = med
            w(
                "| %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |"
                % (
                    t,
                    fmt(med["rps"], 0),
                    fmt(med["p50_us"], 2, 1000.0),
                    fmt(med["p99_us"], 2, 1000.0),
                    fmt(med["p999_us"], 2, 1000.0),
                    fmt(med["cpu_us_per_req"], 1),
                    fmt(max(rss) if rss else None, 1, 1024.0),
                    fmt(med["new_pct"], 1),
                    errors,
                    len(rs),
                )
            )
        for target, note in notes.get(scenario, []):
            w("| %s | %s |" % (target, note) + " |" * 8)
        w("")
    if any(t == "cutover" for (_, t) in summary):
        ratios(w, summary)
        rounds_table(w, by_key)
        cpu_budget(w, summary)
    routes_cost(w, by_key)
    parity_cost(w, by_key)
    if idle_rows:
        idle_table(w, idle_rows)
    counts_table(w, count_rows)
    instructions_table(w, instr_rows, top_rows, meta.get("instr_kind", "base"))
    if not any(r["scenario"] == "mirror" for r in rows) and "mirror" not in notes:
        w("## mirror")
        w("")
        w("Not measured in this run: add `mirror` to `SCENARIOS` (cutover and nginx; "
          "haproxy has no built-in mirroring).")
        w("")
    with open(out_md, "w") as f:
        f.write("\n".join(out))


def ratios(w, summary):
    w("## Ratios (cutover ÷ peer, medians)")
    w("")
    w(
        "req/s above 1 means cutover is faster; p99 and CPU/request below 1 mean "
        "cutover is better. `floor` is the least a hyper proxy does (one header added, no "
        "routing, pool, metrics or logging): below 1 against it is cutover's own cost. "
        "`native` is that floor with an HTTP/1 codec of its own in place of hyper's "
        "(`httparse`, `Content-Length` framing only, no checks): the floor ÷ `native` is "
        "what hyper's codec costs. `direct` is the ceiling (no proxy)."
    )
    w("")
    w("| scenario | req/s vs nginx | req/s vs haproxy | req/s vs floor | req/s vs direct | p99 vs nginx | p99 vs haproxy | CPU/req vs nginx | CPU/req vs haproxy |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario, _ in SCENARIOS:
        c = summary.get((scenario, "cutover"))
        if not c:
            continue
        n = summary.get((scenario, "nginx"), {})
        h = summary.get((scenario, "haproxy"), {})
        f = summary.get((scenario, "floor"), {})
        d = summary.get((scenario, "direct"), {})
        w(
            "| %s | %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                scenario,
                ratio(c["rps"], n.get("rps")),
                ratio(c["rps"], h.get("rps")),
                ratio(c["rps"], f.get("rps")),
                ratio(c["rps"], d.get("rps")),
                ratio(c["p99_us"], n.get("p99_us")),
                ratio(c["p99_us"], h.get("p99_us")),
                ratio(c["cpu_us_per_req"], n.get("cpu_us_per_req")),
                ratio(c["cpu_us_per_req"], h.get("cpu_us_per_req")),
            )
        )
    w("")


def rounds_table(w, by_key):
    """cutover's rate and p99 against each peer's in the same round: the
    medians hide how often cutover is ahead."""
    lines = []
    for scenario, _ in SCENARIOS:
        ours = {r["round"]: r for r in by_key.get((scenario, "cutover"), [])}
        if not ours:
            continue
        for peer in ["nginx", "haproxy", "floor", "native"]:
            theirs = {r["round"]: r for r in by_key.get((scenario, peer), [])}
            both = sorted(set(ours) & set(theirs), key=int)
            if not both:
                continue
            rps = [quotient(num(ours[r]["rps"]), num(theirs[r]["rps"])) for r in both]
            p99 = [quotient(num(ours[r]["p99_us"]), num(theirs[r]["p99_us"])) for r in both]
            lines.append(
                "| %s | %s | %s | %d of %d | %s | %d of %d |"
                % (
                    scenario,
                    peer,
                    " / ".join("–" if q is None else "%.2f" % q for q in rps),
                    sum(1 for q in rps if q is not None and q >= 1.0),
                    len(both),
                    " / ".join("–" if q is None else "%.2f" % q for q in p99),
                    sum(1 for q in p99 if q is not None and q <= 1.0),
                    len(both),
                )
            )
    if not lines:
        return
    w("## Round by round")
    w("")
    w("cutover ÷ peer in each round (the runs of a round follow one another): req/s (at or above 1: "
      "cutover as fast or faster) and p99 (at or below 1: cutover's tail as short or shorter).")
    w("")
    w("| scenario | peer | req/s, per round | rounds ≥ 1 | p99, per round | rounds ≤ 1 |")
    w("| --- | --- | --- | ---: | --- | ---: |")
    for line in lines:
        w(line)
    w("")


def routes_cost(w, by_key):
    """1,000 routes against 1 route, each `routes1000` run against the same
    proxy's `small` run just before it."""
    pairs = paired_runs(by_key, "small", "routes1000")
    if not pairs:
        return
    w("## Cost of 1,000 routes")
    w("")
    w(
        "Each `routes1000` run against the same proxy's `small` run (1 route) just before it in the "
        "same round: the rate kept, per round and as the median of the rounds, and the medians of "
        "the rounds' p99 and CPU/request quotients."
    )
    w("")
    w("| target | req/s, per round | req/s (median) | p99 | CPU/req |")
    w("| --- | --- | ---: | ---: | ---: |")
    for t, rows in pairs.items():
        rate = per_round(rows, field("rps"), quotient)
        w(
            "| %s | %s | %s | %s | %s |"
            % (
                t,
                " / ".join("–" if q is None else "%.2f" % q for q in rate),
                fmt(median_or_none(rate), 2),
                fmt(median_or_none(per_round(rows, field("p99_us"), quotient)), 2),
                fmt(median_or_none(per_round(rows, field("cpu_us_per_req"), quotient)), 2),
            )
        )
    w("")


def parity_cost(w, by_key):
    """Mirrored against unmirrored, each mirrored run against the run of the
    same proxy just before it, so the machine's drift between scenarios
    does not count."""
    pairs = paired_runs(by_key, "mirror-off", "mirror")
    if not pairs:
        return
    w("## Cost of parity (mirroring at 100%)")
    w("")
    w(
        "Each mirrored run (`mirror`) against the same proxy unmirrored (`mirror-off`) in the run "
        "just before it. `kept` is the share of the unmirrored rate the mirrored run kept, per round "
        "and as the median of the rounds; CPU and machine time are per request, mirrored ÷ unmirrored, "
        "medians of the rounds. The machine time of a mirrored request is split into what the "
        "unmirrored request cost and what mirroring added, the proxy's user and system time and the "
        "rest of the machine (the upstream answering the shadow, the load generator)."
    )
    w("")
    w("| target | kept, per round | kept (median) | proxy CPU/req | machine/req | added user µs | added system µs | added rest µs |")
    w("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")

    def user(r):
        cpu, sys = num(r.get("cpu_us_per_req")), num(r.get("sys_us_per_req"))
        return None if cpu is None or sys is None else cpu - sys

    def rest(r):
        machine, cpu = num(r.get("machine_us_per_req")), num(r.get("cpu_us_per_req"))
        return None if machine is None or cpu is None else machine - cpu

    rps, cpu, machine = field("rps"), field("cpu_us_per_req"), field("machine_us_per_req")
    for t, rows in pairs.items():
        kept = per_round(rows, rps, quotient)
        w(
            "| %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                t,
                " / ".join("–" if k is None else "%.2f" % k for k in kept),
                fmt(median_or_none(kept), 2),
                fmt(median_or_none(per_round(rows, cpu, quotient)), 2),
                fmt(median_or_none(per_round(rows, machine, quotient)), 2),
                fmt(median_or_none(per_round(rows, user, difference)), 1),
                fmt(median_or_none(per_round(rows, field("sys_us_per_req"), difference)), 1),
                fmt(median_or_none(per_round(rows, rest, difference)), 1),
            )
        )
    w("")
    c = pairs.get("cutover")
    if c:
        # Keeping 60% means a mirrored request may cost the machine at most 1/0.6 of an unmirrored one.
        off_machine = median_or_none([machine(off) for off, _ in c])
        on_machine = median_or_none([machine(on) for _, on in c])
        added_user = median_or_none(per_round(c, user, difference))
        if off_machine and on_machine and added_user is not None:
            allowed = off_machine / 0.6 - off_machine
            spent = on_machine - off_machine
            w(
                "- Keeping 60%% of the rate allows mirroring to add %.1f µs of machine time per request; "
                "cutover's mirroring added %.1f µs, %.1f µs of it cutover's own user time. Without that "
                "user time the mirrored rate would be %.2f of the unmirrored one."
                % (allowed, spent, added_user, off_machine / (on_machine - added_user))
            )
            w("")


def cpu_budget(w, summary):
    rows = [(t, summary[("small", t)]) for t in TARGETS if ("small", t) in summary]
    if not any(m.get("sys_us_per_req") is not None for _, m in rows):
        return
    w("## CPU budget of the small scenario")
    w("")
    w(
        "Where each request's CPU time goes (medians of the rounds, µs per request): the "
        "proxy's user and system time (utime and stime of its processes), and the whole "
        "machine's busy time (`/proc/stat`), which also holds the load generator and the "
        "upstream. The machine is CPU-bound in these runs, so its busy time per request "
        "sets the rate; system time is mostly the loopback TCP stack, which a proxy pays "
        "per byte and per send whatever its own code does. Context switches are the proxy's "
        "threads going to sleep and being woken (or preempted), per request."
    )
    w("")
    w("| target | req/s | proxy user | proxy system | proxy total | rest of the machine | machine | context switches |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t, m in rows:
        cpu, sys_, machine = m.get("cpu_us_per_req"), m.get("sys_us_per_req"), m.get("machine_us_per_req")
        user = cpu - sys_ if None not in (cpu, sys_) else None
        rest = machine - cpu if None not in (machine, cpu) else None
        w(
            "| %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                t,
                fmt(m["rps"], 0),
                fmt(user, 1),
                fmt(sys_, 1),
                fmt(cpu, 1),
                fmt(rest, 1),
                fmt(machine, 1),
                fmt(m.get("switches_per_req"), 3),
            )
        )
    w("")
    c = summary.get(("small", "cutover"))
    if not c or None in (c.get("sys_us_per_req"), c.get("machine_us_per_req"), c.get("rps")):
        return
    user = c["cpu_us_per_req"] - c["sys_us_per_req"]
    machine = c["machine_us_per_req"]
    if machine <= user:
        return
    # Machine time per request scales as 1 / rate on a CPU-bound machine.
    ceiling = c["rps"] * machine / (machine - user)
    w(
        "- If cutover spent no user time at all, the machine time per request less its %.1f µs "
        "of user time would allow about %s req/s." % (user, fmt(ceiling, 0))
    )
    for peer, factor in [("nginx", 1.1), ("haproxy", 1.0)]:
        p = summary.get(("small", peer))
        if not p or p.get("rps") is None:
            continue
        wanted = factor * p["rps"]
        allowed = user - (machine - c["rps"] * machine / wanted)
        own = fmt(p["cpu_us_per_req"] - p["sys_us_per_req"], 1) if p.get("sys_us_per_req") is not None else "–"
        if allowed > 0:
            w(
                "- %g× %s's rate (%s req/s) needs cutover's user time at or below %s µs per request "
                "(%s's own: %s)." % (factor, peer, fmt(wanted, 0), fmt(allowed, 1), peer, own)
            )
        else:
            w(
                "- %g× %s's rate (%s req/s) is out of reach in this run even with no user time: "
                "cutover's system time and the rest of the machine alone come to %s µs per request, "
                "the rate allows %s." % (factor, peer, fmt(wanted, 0), fmt(machine - user, 1), fmt(c["rps"] * machine / wanted, 1))
            )
    w("")


def idle_table(w, idle_rows):
    w("## Idle keep-alive connections")
    w("")
    w(
        "A fresh proxy; N connections each send one request, read the response and stay "
        "open. RSS (VmRSS, summed over the proxy's processes) before, and while they are "
        "held once it has settled (read every second until two readings differ by under 1%, "
        "at most 10 s: opening them is a burst); KB/conn = (RSS held − RSS fresh) ÷ N. `held` counts established "
        "connections on the proxy's port at measurement time."
    )
    w("")
    w("| target | N | RSS fresh MB | RSS held MB | KB/conn | held |")
    w("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in idle_rows:
        base, held = num(r["rss_before_kb"]), num(r["rss_held_kb"])
        n = num(r["n"])
        per = (held - base) / n if None not in (base, held, n) and n else None
        w(
            "| %s | %s | %s | %s | %s | %s |"
            % (
                r["target"],
                "{:,}".format(int(n)) if n else "–",
                fmt(base, 1, 1024.0),
                fmt(held, 1, 1024.0),
                fmt(per, 1),
                r["established"],
            )
        )
    w("")


def counts_table(w, count_rows):
    if count_rows:
        w("## System calls and allocations per request")
        w("")
        w(
            "Counted exactly with perf (syscall tracepoints, uprobes on libc's malloc/free/realloc) "
            "over a few seconds of the `small` load; divided by the requests the upstream "
            "served in that window. The probes slow the proxies down, so no rate is reported. "
            "An allocator linked into the proxy (cutover's jemalloc) bypasses libc and counts zero here."
        )
        w("")
        w("| target | requests counted | syscalls | writes | reads | epoll_wait | futex | malloc | free | realloc |")
        w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for r in count_rows:
            n = num(r["requests"]) or 0
            cells = [
                fmt(num(r[f]) / n if n else None, 2)
                for f in ["syscalls", "writes", "reads", "epoll_wait", "futex", "malloc", "free", "realloc"]
            ]
            w("| %s | %s | %s |" % (r["target"], "{:,}".format(int(n)), " | ".join(cells)))
        w("")


def instructions_table(w, instr_rows, top_rows=(), kind="base"):
    if not instr_rows:
        return
    w("## Instructions per request (user space)")
    w("")
    what = "the small response"
    if kind == "mirror":
        what += ", every request also mirrored to the other backend as in the `mirror` scenario"
    elif kind == "routes1000":
        what += ", behind 1,000 prefix routes that do not match, as in the `routes1000` scenario"
    w(
        "Counted exactly by valgrind's callgrind over a fixed number of HTTP/1.1 requests "
        "(`h2load --h1`, 10 keep-alive connections, %s), each proxy alone "
        "with one worker, after a warm-up. Not timed, so not moved by the machine's load; "
        "kernel work (the system calls and the loopback TCP stack, a little over half of "
        "every proxy's CPU time here) is not in it." % what
    )
    w("")
    w("| target | requests | instructions per request | vs nginx | vs haproxy | vs floor | vs native floor |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    per = {}
    for r in instr_rows:
        n = num(r["requests"])
        per[r["target"]] = num(r["instructions"]) / n if n else None
    for r in instr_rows:
        t = r["target"]
        w(
            "| %s | %s | %s | %s | %s | %s | %s |"
            % (t, "{:,}".format(int(num(r["requests"]))), fmt(per[t], 0), ratio(per[t], per.get("nginx")),
               ratio(per[t], per.get("haproxy")), ratio(per[t], per.get("floor")), ratio(per[t], per.get("native")))
        )
    w("")
    for r in instr_rows:
        if r["target"] != "cutover" or not r.get("by_crate"):
            continue
        n = num(r["requests"])
        w("cutover's instructions per request by the crate whose code ran (inlined code counts for the crate it comes from):")
        w("")
        w("| code | instructions per request | share |")
        w("| --- | ---: | ---: |")
        total = num(r["instructions"])
        for part in r["by_crate"].split(";"):
            label, _, value = part.rpartition("=")
            v = num(value)
            w("| %s | %s | %s |" % (label, fmt(v / n, 0), "%.1f%%" % (100 * v / total) if total else "–"))
        w("")
        if top_rows:
            per_request = total / n if n else 0
            w("The functions of cutover that executed the most instructions of their own (inlined code included) per request:")
            w("")
            w("| function | crate | instructions per request | share |")
            w("| --- | --- | ---: | ---: |")
            for t in top_rows:
                v = num(t["per_request"])
                name = t["function"].replace("|", "\\|")
                share = "%.1f%%" % (100 * v / per_request) if per_request else "–"
                w("| `%s` | %s | %s | %s |" % (name, t["crate"], fmt(v, 0), share))
            w("")


def main(argv):
    parser = arg_parser(__doc__)
    parser.add_argument("--results", required=True, metavar="TSV", help="results.tsv: one row per load run")
    parser.add_argument("--idle", required=True, metavar="TSV", help="idle.tsv: one row per idle-connection test")
    parser.add_argument("--meta", required=True, metavar="FILE", help="the run's settings, key=value lines")
    parser.add_argument("--counts", metavar="TSV", help="counts.tsv (syscounts.py rows)")
    parser.add_argument("--notes", metavar="TSV", help="notes.tsv: scenario, target, note")
    parser.add_argument("--instructions", metavar="TSV", help="instructions.tsv (instructions.py by-crate rows)")
    parser.add_argument("--instructions-top", metavar="TSV", help="instructions.py top output for cutover")
    parser.add_argument("out_md", metavar="OUT_MD")
    args = parser.parse_args(argv)
    report(args.results, args.idle, args.meta, args.out_md, args.counts, args.notes,
           args.instructions, args.instructions_top)


if __name__ == "__main__":
    run(main)
