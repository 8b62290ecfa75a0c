#!/usr/bin/env python3
"""Helpers for compare.sh (standard library only).

  benchtool.py h2stats LOGFILE
      Latency percentiles (microseconds) from an h2load --log-file:
      prints "p50=.. p99=.. p999=..".

  benchtool.py idle HOST PORT N READY_FILE RELEASE_FILE [TIMEOUT_S]
      Opens N keep-alive connections, sends one GET /small on each and reads
      the whole response, writes "OPEN N" to READY_FILE, then holds the
      connections idle until RELEASE_FILE exists (or TIMEOUT_S passes).

  benchtool.py report RESULTS_TSV IDLE_TSV META_FILE OUT_MD [COUNTS_TSV [NOTES_TSV [INSTR_TSV [TOP_TSV]]]]
      Writes the Markdown report: medians of the rounds, ratios, the CPU
      budget of the small scenario, idle memory, per-request system call,
      allocation and instruction counts, and notes (targets that could not
      run a scenario) when given.

  benchtool.py callgrind TARGET REQUESTS CALLGRIND_OUT SOURCE_DIR
      One row of instructions.tsv: the instructions counted in a callgrind
      dump, and their split by the crate (or library) whose code ran, read
      from the debug information's file names (SOURCE_DIR is cutover's src/).

  benchtool.py callgrind-top REQUESTS CALLGRIND_OUT SOURCE_DIR COUNT
      The COUNT functions of a callgrind dump that executed the most
      instructions of their own (code inlined into them included), per
      request, each with the crate whose code ran most in it (a TSV).

  benchtool.py perfsummary PERF_SCRIPT_OUTPUT
      Groups the samples of `perf script -F comm,tid,ip,sym,dso --no-inline`
      (recorded with call graphs): kernel time by system call, user time by
      kind of work (allocation, copying, hashing, formatting, locking, ...),
      and inclusive shares of chosen frames.
"""

import os
import re
import resource
import selectors
import socket
import statistics
import sys
import time


# ---------------------------------------------------------------- h2stats


def percentile(sorted_values, p):
    """Nearest-rank percentile, as wrk and h2load compute them."""
    if not sorted_values:
        return 0
    rank = max(1, int(round(p / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def h2stats(path):
    durations = []
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                durations.append(int(parts[2]))
    durations.sort()
    print(
        "p50=%d p99=%d p999=%d"
        % (
            percentile(durations, 50),
            percentile(durations, 99),
            percentile(durations, 99.9),
        )
    )


# ------------------------------------------------------------------- idle


def raise_nofile(wanted):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def response_complete(buf):
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= head_end + 4 + length


def open_batch(host, port, count, request, deadline):
    """Opens `count` connections concurrently, one request/response each."""
    sel = selectors.DefaultSelector()
    socks = []
    state = {}
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        sel.register(s, selectors.EVENT_WRITE)
        state[s] = b""
        socks.append(s)
    pending = len(socks)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit("idle: timed out opening connections")
        for key, events in sel.select(timeout=1.0):
            s = key.fileobj
            if events & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise SystemExit("idle: connect failed: %s" % os.strerror(err))
                s.sendall(request)
                sel.modify(s, selectors.EVENT_READ)
            elif events & selectors.EVENT_READ:
                data = s.recv(65536)
                if not data:
                    raise SystemExit("idle: the server closed a connection")
                state[s] += data
                if response_complete(state[s]):
                    sel.unregister(s)
                    pending -= 1
    sel.close()
    return socks


def idle(host, port, n, ready_file, release_file, timeout_s=120.0):
    raise_nofile(n + 256)
    request = ("GET /small HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (host, port)).encode()
    deadline = time.monotonic() + timeout_s
    held = []
    while len(held) < n:
        held += open_batch(host, port, min(500, n - len(held)), request, deadline)
    with open(ready_file, "w") as f:
        f.write("OPEN %d\n" % len(held))
    while not os.path.exists(release_file) and time.monotonic() < deadline:
        time.sleep(0.05)
    for s in held:
        s.close()


# ------------------------------------------------------------ perfsummary

# Kernel samples: the system call they were made under (first match wins).
SYSCALLS = [
    ("writev", "send: writev/write/sendmsg"),
    ("sys_write", "send: writev/write/sendmsg"),
    ("sendmsg", "send: writev/write/sendmsg"),
    ("sendto", "send: writev/write/sendmsg"),
    ("recvfrom", "receive: read/recv"),
    ("recvmsg", "receive: read/recv"),
    ("sys_read", "receive: read/recv"),
    ("ksys_read", "receive: read/recv"),
    ("epoll_wait", "epoll_wait"),
    ("epoll_pwait", "epoll_wait"),
    ("epoll_ctl", "epoll_ctl"),
    ("futex", "futex (wake / park a thread)"),
    ("sched_yield", "sched_yield"),
    ("accept", "accept/connect/close"),
    ("connect", "accept/connect/close"),
    ("sys_close", "accept/connect/close"),
]

# User samples: the kind of work of the leaf frame (first match wins).
USER_KINDS = [
    (r"^(__libc_)?(malloc|free|cfree|calloc|realloc)(@.*)?$|^_int_(malloc|free|realloc)|unlink_chunk|"
     r"malloc_consolidate|tcache|^__rust_(alloc|dealloc|realloc)|raw_vec|alloc::alloc::",
     "allocation (malloc/free)"),
    (r"^__mem(move|cpy|set|cmp)|^memcpy|^memmove|bytes::bytes_mut::BytesMut::(extend|put)",
     "copying (memcpy/memmove)"),
    (r"Hasher|hash_one|hash_elem_using|siphash|fnv|core::hash::", "hashing"),
    (r"core::fmt|alloc::fmt|to_string|Display>::fmt|Debug>::fmt", "formatting (core::fmt)"),
    (r"pthread_mutex|lll_lock|parking_lot|std::sync::.*(mutex|Mutex|rwlock|RwLock|once)|"
     r"futex|Notify|semaphore|AtomicWaker", "locking / thread sync"),
    (r"^prometheus::", "metrics (prometheus)"),
    (r"^httparse::|h1::role::Server as .*::parse|h1::role::Client as .*::parse|"
     r"h1::role::.*encode|h1::role::", "HTTP/1 parse + encode (hyper, httparse)"),
    (r"^<?http::header::|<http::header::|http::header::map", "header map operations (http)"),
    (r"^<?cutover::|<cutover::", "cutover's own code"),
    (r"^__GI___(writev|read|recv)|^__libc_(recv|read|write|send)|^__GI___pthread_(en|dis)able_asynccancel|"
     r"^(epoll_wait|syscall)$", "system call wrappers (libc)"),
    (r"^bytes::|Arc<T,A>::drop_slow|drop_in_place<http::uri", "reference counting (Bytes, Arc)"),
    (r"hyper_util::client::legacy|hyper::client::", "upstream client (hyper-util legacy)"),
    (r"tokio::|mio::|tokio_util::", "tokio runtime + I/O driver"),
    (r"hyper|want::|futures_", "hyper other (dispatch, bodies)"),
    (r"^clock_gettime|vdso|^__vdso", "clock reads"),
]

# Inclusive shares: samples whose stack holds a frame containing the text.
FRAMES = [
    ("cutover::proxy::Proxy::serve", "Proxy::serve (whole request path in cutover)"),
    ("hyper_util::client::legacy::client::Client<C,B>::send_request",
     "upstream client send_request (pool checkout + hand-off)"),
    ("hyper::client::conn::http1", "upstream connection task (hyper client)"),
    ("hyper_util::client::legacy::pool", "connection pool (hyper-util legacy)"),
    ("<cutover::proxy::body::Exchange as core::ops::drop::Drop>::drop",
     "Exchange::drop (metrics + access log)"),
    ("prometheus::", "prometheus"),
    ("cutover::proxy::headers::", "cutover::proxy::headers (rewrites)"),
    ("cutover::routing::", "cutover::routing (matching, normalisation)"),
    ("h1::role::Server as hyper::proto::h1::Http1Transaction>::parse",
     "request head parsing (hyper server)"),
    ("h1::role::Server as hyper::proto::h1::Http1Transaction>::encode",
     "response head encoding (hyper server)"),
    ("h1::role::Client as hyper::proto::h1::Http1Transaction>::encode",
     "request head encoding (hyper client)"),
    ("h1::role::Client as hyper::proto::h1::Http1Transaction>::parse",
     "response head parsing (hyper client)"),
    ("tokio::runtime::task::raw::schedule", "task scheduling (wakes)"),
    ("tokio::runtime::scheduler::multi_thread::park", "worker park / unpark"),
]


# Frames skipped when looking for who asked for an allocation or a copy.
GLUE = re.compile(
    r"^(__rust_|alloc::|<alloc::|core::ptr::|<core::|core::|hashbrown::raw|"
    r"<?bytes::bytes_mut::BytesMut(>::| as )?(reserve|extend|put|with_capacity|from)|"
    r"<?alloc::vec|<?alloc::raw_vec|std::alloc)"
)


def first_caller(frames):
    """The first frame above the leaf that is neither libc nor allocation glue."""
    for sym, dso in frames[1:]:
        if "libc" in dso or "kernel" in dso or GLUE.search(sym):
            continue
        return sym[:110]
    return "?"


def perf_samples(path):
    """Yields each sample's frames as (symbol, dso), leaf first."""
    frames = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if frames:
                    yield frames
                frames = []
                continue
            if not line[0].isspace():
                continue  # the sample header: comm tid
            parts = line.strip().split(" ", 1)
            if len(parts) < 2:
                continue
            rest = parts[1]
            dso = ""
            if rest.endswith(")") and " (" in rest:
                rest, dso = rest.rsplit(" (", 1)
                dso = dso[:-1]
            sym = re.sub(r"\+0x[0-9a-f]+$", "", rest)
            frames.append((sym, dso))
    if frames:
        yield frames


def perfsummary(path):
    total = 0
    kernel = {}
    user = {}
    inclusive = {label: 0 for _, label in FRAMES}
    alloc_callers = {}
    copy_callers = {}
    compiled = [(re.compile(p), label) for p, label in USER_KINDS]
    for frames in perf_samples(path):
        total += 1
        leaf_sym, leaf_dso = frames[0]
        if "kernel" in leaf_dso:
            label = "kernel, no system call (interrupts, scheduler)"
            for sym, dso in frames:
                if "kernel" not in dso:
                    break
                hit = next((lab for key, lab in SYSCALLS if key in sym), None)
                if hit:
                    label = hit
                    break
            kernel[label] = kernel.get(label, 0) + 1
        else:
            label = next((lab for rx, lab in compiled if rx.search(leaf_sym)), None)
            if label is None:
                label = "other user code" if leaf_sym != "[unknown]" else "unknown (no symbol)"
            user[label] = user.get(label, 0) + 1
            if label.startswith("allocation"):
                who = first_caller(frames)
                alloc_callers[who] = alloc_callers.get(who, 0) + 1
            elif label.startswith("copying"):
                who = first_caller(frames)
                copy_callers[who] = copy_callers.get(who, 0) + 1
        seen = set()
        for sym, _ in frames:
            for key, lab in FRAMES:
                if lab not in seen and key in sym:
                    seen.add(lab)
        for lab in seen:
            inclusive[lab] += 1
    if not total:
        print("no samples")
        return

    def table(title, counts, base):
        print("| %s | share of all samples |" % title)
        print("| --- | ---: |")
        for label, n in sorted(counts.items(), key=lambda kv: -kv[1]):
            print("| %s | %.1f%% |" % (label, 100.0 * n / base))
        print()

    k, u = sum(kernel.values()), sum(user.values())
    print("%d samples: kernel %.1f%%, user space %.1f%%" % (total, 100.0 * k / total, 100.0 * u / total))
    print()
    table("kernel time, by system call", kernel, total)
    table("user time, by kind of work (self time of the leaf frame)", user, total)
    table("inclusive: samples with this frame on the stack", {k: v for k, v in inclusive.items() if v}, total)
    top = lambda d: dict(sorted(d.items(), key=lambda kv: -kv[1])[:8])
    table("allocation samples, by the code that allocated or freed", top(alloc_callers), total)
    table("copy samples (memcpy/memmove), by the code that copied", top(copy_callers), total)


# ----------------------------------------------------------------- report

PROXIES = ["cutover", "nginx", "haproxy"]
TARGETS = PROXIES + ["direct"]

SCENARIOS = [
    ("small", "HTTP/1.1, 100-byte response, 1 route, 90/10 split (random / weighted)"),
    ("small-h2", "HTTP/2 cleartext (prior knowledge), 100-byte response, 1 route, 90/10 split"),
    ("64k", "HTTP/1.1, 65,536-byte response, 1 route, 90/10 split"),
    ("sticky", "HTTP/1.1, 100-byte response, 90/10 split sticky on a `sessionid` cookie (10,000 users)"),
    ("routes1000", "HTTP/1.1, 100-byte response, 1,000 non-matching prefix routes before the matching one"),
    ("mirror-off", "HTTP/1.1, 100-byte response, the `small` setup of each mirroring proxy, measured "
     "just before each of its mirrored runs: the baseline of the cost of parity"),
    ("mirror", "HTTP/1.1, 100-byte response, all traffic to legacy and every request mirrored to new "
     "(`new %` is the share of upstream requests that were shadow copies: 50% means every request "
     "was mirrored)"),
]


# -------------------------------------------------------------- callgrind

# Crates grouped by the part of a proxy they are.
CRATE_GROUPS = [
    ("hyper (HTTP/1 server and client, dispatch)", ("hyper", "hyper-util", "want", "try-lock")),
    ("httparse (HTTP/1 head parsing)", ("httparse",)),
    ("http (header maps, URIs)", ("http", "http-body", "http-body-util")),
    ("tokio (runtime, I/O driver, timers, channels)", ("tokio", "tokio-util", "mio")),
    ("bytes (buffers)", ("bytes",)),
    ("cutover (routing, split, headers, pool, metrics)", ("cutover",)),
    ("prometheus and other crates", None),
    ("Rust standard library (not inlined into one of the above)", ("std",)),
    ("allocator (jemalloc)", ("jemalloc", "tikv-jemallocator")),
    ("libc (memcpy, system call wrappers)", ("libc",)),
]


def crate_of(path, source_dir):
    if path.startswith(source_dir):
        return "cutover"
    m = re.search(r"/registry/src/[^/]+/([^/]+)/", path)
    if m:
        return re.sub(r"-\d+\.\d+\.\d+.*$", "", m.group(1))
    if path.startswith("/rustc/"):
        return "std"
    if "jemalloc" in path:
        return "jemalloc"
    if path.startswith("./") or "sysdeps" in path or "glibc" in path:
        return "libc"
    return "other"


def crate_in_name(function):
    """The first crate named in a function's path other than the standard library's."""
    for m in re.finditer(r"(?:^|[<(&*, ])([a-z_][a-z0-9_]*)::", function):
        if m.group(1) not in ("core", "alloc", "std"):
            return m.group(1).replace("_", "-")
    return "std"


def callgrind_costs(out_file, source_dir):
    """The self costs of a callgrind dump: (function, crate, instructions).

    Cost lines follow `fl=`/`fi=`/`fe=` (the file of the code that ran,
    inlined code included) and `fn=` records; the line after `calls=` is the
    inclusive cost of a call and is skipped. Standard-library code inlined
    into a function (moves, drops, Option and Vec methods) counts for the
    crate the function belongs to."""
    names = {"file": {}, "fn": {}}
    crate = function = "other"
    skip_next = False

    def name_of(kind, value):
        m = re.match(r"\((\d+)\)(?: (.*))?$", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[kind][m.group(1)] = m.group(2)
        return names[kind].get(m.group(1), "?")

    with open(out_file) as f:
        for line in f:
            if line[:1].isdigit() or line[:1] in "+-*":
                if skip_next:
                    skip_next = False
                    continue
                parts = line.split()
                if len(parts) >= 2 and parts[1].isdigit():
                    owner = crate_in_name(function) if crate == "std" else crate
                    yield function, owner, int(parts[1])
                continue
            key, _, value = line.rstrip("\n").partition("=")
            if key in ("fl", "fi", "fe"):
                crate = crate_of(name_of("file", value), source_dir)
            elif key in ("cfi", "cfl"):
                name_of("file", value)  # names are defined where first used, calls included
            elif key == "fn":
                function = name_of("fn", value)
            elif key == "cfn":
                name_of("fn", value)
            elif key == "calls":
                skip_next = True


def callgrind(target, requests, out_file, source_dir):
    """One row of instructions.tsv: the dump's total and its split by crate."""
    by_crate = {}
    total = 0
    for _, owner, cost in callgrind_costs(out_file, source_dir):
        total += cost
        by_crate[owner] = by_crate.get(owner, 0) + cost
    known = {c for _, crates in CRATE_GROUPS if crates for c in crates}
    groups = []
    for label, crates in CRATE_GROUPS:
        if crates is None:
            n = sum(v for c, v in by_crate.items() if c not in known)
        else:
            n = sum(by_crate.get(c, 0) for c in crates)
        groups.append("%s=%d" % (label, n))
    print("%s\t%d\t%d\t%s" % (target, int(requests), total, ";".join(groups)))


def callgrind_top(requests, out_file, source_dir, count):
    """The functions that executed the most instructions of their own, per request."""
    by_function = {}
    for function, owner, cost in callgrind_costs(out_file, source_dir):
        owners = by_function.setdefault(function, {})
        owners[owner] = owners.get(owner, 0) + cost
    print("function\tcrate\tper_request")
    ranked = sorted(by_function.items(), key=lambda item: -sum(item[1].values()))[: int(count)]
    for function, owners in ranked:
        # The crate whose code ran most inside the function (inlined code included).
        crate = max(owners.items(), key=lambda item: item[1])[0]
        print("%s\t%s\t%.0f" % (function.replace("\t", " "), crate, sum(owners.values()) / float(requests)))


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
        ("workers", "proxy worker threads / processes"),
        ("cutover", "cutover"),
        ("nginx", "nginx"),
        ("haproxy", "haproxy"),
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
        "cutover is better. `direct` is the ceiling (no proxy)."
    )
    w("")
    w("| scenario | req/s vs nginx | req/s vs haproxy | req/s vs direct | p99 vs nginx | p99 vs haproxy | CPU/req vs nginx | CPU/req vs haproxy |")
    w("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scenario, _ in SCENARIOS:
        c = summary.get((scenario, "cutover"))
        if not c:
            continue
        n = summary.get((scenario, "nginx"), {})
        h = summary.get((scenario, "haproxy"), {})
        d = summary.get((scenario, "direct"), {})
        w(
            "| %s | %s | %s | %s | %s | %s | %s | %s |"
            % (
                scenario,
                ratio(c["rps"], n.get("rps")),
                ratio(c["rps"], h.get("rps")),
                ratio(c["rps"], d.get("rps")),
                ratio(c["p99_us"], n.get("p99_us")),
                ratio(c["p99_us"], h.get("p99_us")),
                ratio(c["cpu_us_per_req"], n.get("cpu_us_per_req")),
                ratio(c["cpu_us_per_req"], h.get("cpu_us_per_req")),
            )
        )
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
    w("| target | requests | instructions per request | vs nginx | vs haproxy |")
    w("| --- | ---: | ---: | ---: | ---: |")
    per = {}
    for r in instr_rows:
        n = num(r["requests"])
        per[r["target"]] = num(r["instructions"]) / n if n else None
    for r in instr_rows:
        t = r["target"]
        w(
            "| %s | %s | %s | %s | %s |"
            % (t, "{:,}".format(int(num(r["requests"]))), fmt(per[t], 0), ratio(per[t], per.get("nginx")), ratio(per[t], per.get("haproxy")))
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
    if len(argv) < 2:
        print(__doc__)
        return 2
    cmd, args = argv[1], argv[2:]
    if cmd == "h2stats" and len(args) == 1:
        h2stats(args[0])
    elif cmd == "idle" and len(args) in (5, 6):
        timeout = float(args[5]) if len(args) == 6 else 120.0
        idle(args[0], int(args[1]), int(args[2]), args[3], args[4], timeout)
    elif cmd == "report" and len(args) in (4, 5, 6, 7, 8):
        report(*args)
    elif cmd == "callgrind" and len(args) == 4:
        callgrind(*args)
    elif cmd == "callgrind-top" and len(args) == 4:
        callgrind_top(*args)
    elif cmd == "perfsummary" and len(args) == 1:
        perfsummary(args[0])
    else:
        print(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
