#!/usr/bin/env python3
"""instructions.py: where the instructions of a callgrind dump ran, by crate or by function.

  instructions.py by-crate TARGET REQUESTS CALLGRIND_OUT SOURCE_DIR
  instructions.py top REQUESTS CALLGRIND_OUT SOURCE_DIR COUNT

by-crate prints one row of instructions.tsv (tab-separated): TARGET,
REQUESTS, the instructions the dump counted, and their split by the part
of a proxy whose code ran (hyper, http, tokio, cutover, libc ...) as
`label=instructions` pairs separated by ';'.

top prints a TSV with a header (function, crate, per_request): the COUNT
functions that executed the most instructions of their own, inlined code
included, per request, each with the crate whose code ran most in it.

The crate of each cost comes from the debug information's file names:
SOURCE_DIR (cutover's src/, with its trailing slash) is cutover, Cargo's
registry paths name their crate, /rustc/ paths are the standard library.
Standard-library code inlined into a function (moves, drops, Option and
Vec methods) counts for the crate the function belongs to.
"""

import re

from benchlib import ToolError, arg_parser, run

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
    inclusive cost of a call and is skipped. Names are compressed: `(N) name`
    defines N where it is first used, calls included, and `(N)` refers to it."""
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

    with open(out_file, errors="replace") as f:
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
                name_of("file", value)
            elif key == "fn":
                function = name_of("fn", value)
            elif key == "cfn":
                name_of("fn", value)
            elif key == "calls":
                skip_next = True


def by_crate(target, requests, out_file, source_dir):
    """One row of instructions.tsv: the dump's total and its split by crate group."""
    counts = {}
    total = 0
    for _, owner, cost in callgrind_costs(out_file, source_dir):
        total += cost
        counts[owner] = counts.get(owner, 0) + cost
    known = {c for _, crates in CRATE_GROUPS if crates for c in crates}
    groups = []
    for label, crates in CRATE_GROUPS:
        if crates is None:
            n = sum(v for c, v in counts.items() if c not in known)
        else:
            n = sum(counts.get(c, 0) for c in crates)
        groups.append("%s=%d" % (label, n))
    return "%s\t%d\t%d\t%s" % (target, requests, total, ";".join(groups))


def top(requests, out_file, source_dir, count):
    """The functions that executed the most instructions of their own, per request."""
    by_function = {}
    for function, owner, cost in callgrind_costs(out_file, source_dir):
        owners = by_function.setdefault(function, {})
        owners[owner] = owners.get(owner, 0) + cost
    lines = ["function\tcrate\tper_request"]
    ranked = sorted(by_function.items(), key=lambda item: -sum(item[1].values()))[:count]
    for function, owners in ranked:
        # The crate whose code ran most inside the function (inlined code included).
        crate = max(owners.items(), key=lambda item: item[1])[0]
        lines.append("%s\t%s\t%.0f" % (function.replace("\t", " "), crate, sum(owners.values()) / float(requests)))
    return "\n".join(lines)


def main(argv):
    parser = arg_parser(__doc__)
    sub = parser.add_subparsers(dest="view", required=True)
    crates = sub.add_parser("by-crate", help="one row of instructions.tsv: the total and its split by crate")
    crates.add_argument("target")
    crates.add_argument("requests", type=int)
    crates.add_argument("callgrind_out")
    crates.add_argument("source_dir")
    functions = sub.add_parser("top", help="the functions with the most instructions of their own, per request")
    functions.add_argument("requests", type=int)
    functions.add_argument("callgrind_out")
    functions.add_argument("source_dir")
    functions.add_argument("count", type=int)
    args = parser.parse_args(argv)
    if args.requests <= 0:
        raise ToolError("REQUESTS must be positive, not %d" % args.requests)
    if args.view == "by-crate":
        print(by_crate(args.target, args.requests, args.callgrind_out, args.source_dir))
    else:
        print(top(args.requests, args.callgrind_out, args.source_dir, args.count))


if __name__ == "__main__":
    run(main)
