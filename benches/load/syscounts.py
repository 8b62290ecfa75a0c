#!/usr/bin/env python3
"""syscounts.py: a proxy's system calls and libc allocator calls, from `perf stat` output.

  syscounts.py --upstream-tids "TID ..." TARGET PERF_STAT_CSV

PERF_STAT_CSV is the output of `perf stat -x, --per-thread` (compare.sh's
`counts` scenario) over the proxy's processes and the upstream together,
counting raw_syscalls:sys_enter, syscalls:sys_enter_* of the calls below
and the uprobes cutover_bench:malloc, :free and :realloc on libc. Prints one
row of counts.tsv (tab-separated):

  target requests syscalls writes reads epoll_wait futex malloc free realloc

requests: the upstream's writev calls (its threads are the --upstream-tids),
  one per response, so the number of requests proxied in the window.
The rest are the proxy's threads' counts: all system calls; writes (write,
writev, sendto, sendmsg); reads (read, readv, recvfrom, recvmsg);
epoll_wait (with epoll_pwait); futex; and the libc malloc, free and realloc
calls (an allocator linked into the proxy, as cutover's jemalloc is, counts
zero). Threads perf could not count ("<not counted>") count zero.
"""

from benchlib import ToolError, arg_parser, run

# The uprobe group compare.sh adds its malloc/free/realloc probes under.
PROBE_GROUP = "cutover_bench"

WRITES = ("write", "writev", "sendto", "sendmsg")
READS = ("read", "readv", "recvfrom", "recvmsg")
EPOLL_WAITS = ("epoll_wait", "epoll_pwait")


def per_thread_counts(csv_path):
    """Yields (tid, event, count) for each counted line of the CSV."""
    with open(csv_path) as f:
        for line in f:
            if line.startswith("#"):
                continue
            fields = line.rstrip("\n").split(",")
            if len(fields) < 4 or not fields[1].isdigit():
                continue  # blank lines, "<not counted>", "<not supported>"
            # The first field is "comm-tid"; comm may itself hold dashes.
            tid = fields[0].rsplit("-", 1)[-1]
            yield tid, fields[3], int(fields[1])


def count_row(target, csv_path, upstream_tids):
    proxy = {}
    requests = 0
    for tid, event, count in per_thread_counts(csv_path):
        if tid in upstream_tids:
            if event == "syscalls:sys_enter_writev":
                requests += count
            continue
        proxy[event] = proxy.get(event, 0) + count

    def syscalls(names):
        return sum(proxy.get("syscalls:sys_enter_" + name, 0) for name in names)

    def probe(name):
        return proxy.get("%s:%s" % (PROBE_GROUP, name), 0)

    return [
        target,
        requests,
        proxy.get("raw_syscalls:sys_enter", 0),
        syscalls(WRITES),
        syscalls(READS),
        syscalls(EPOLL_WAITS),
        syscalls(("futex",)),
        probe("malloc"),
        probe("free"),
        probe("realloc"),
    ]


def main(argv):
    parser = arg_parser(__doc__)
    parser.add_argument("--upstream-tids", required=True, metavar='"TID ..."',
                        help="the upstream's thread ids, separated by spaces")
    parser.add_argument("target")
    parser.add_argument("perf_stat_csv")
    args = parser.parse_args(argv)
    upstream = set(args.upstream_tids.split())
    if not upstream or not all(t.isdigit() for t in upstream):
        raise ToolError("--upstream-tids wants thread ids, got %r" % args.upstream_tids)
    print("\t".join(str(v) for v in count_row(args.target, args.perf_stat_csv, upstream)))


if __name__ == "__main__":
    run(main)
