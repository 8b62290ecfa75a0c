#!/usr/bin/env python3
"""loadstats.py: the figures of one load run, read from the load generator's output.

  loadstats.py wrk RAW_OUTPUT
  loadstats.py h2load RAW_OUTPUT LOG_FILE

Prints one line for compare.sh:

  requests=N rps=R p50=US p99=US p999=US errors=N

Latencies are in microseconds.

wrk: RAW_OUTPUT is what `wrk --latency -s stats.lua` printed; its WRKSTATS
line (written by stats.lua's done() hook) gives every figure. requests are
all the requests wrk completed; errors are its socket errors plus the
answers that were not 2xx or 3xx.

h2load: RAW_OUTPUT is what h2load printed (its "finished in" and
"requests:" lines), LOG_FILE its --log-file (one line per request, the
third column the request's duration in microseconds), from which the
percentiles are computed. requests are the requests that succeeded; errors
are the failed ones (answers that were not 2xx or 3xx, stream and
connection errors).
"""

import re

from benchlib import ToolError, arg_parser, fields_line, run


def percentile(sorted_values, p):
    """Nearest-rank percentile, as wrk and h2load compute them."""
    if not sorted_values:
        return 0
    rank = max(1, int(round(p / 100.0 * len(sorted_values) + 0.5)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def wrk_stats(raw_path):
    with open(raw_path, errors="replace") as f:
        line = next((l for l in f if l.startswith("WRKSTATS")), None)
    if line is None:
        raise ToolError("%s has no WRKSTATS line (did wrk run with stats.lua?)" % raw_path)
    values = {}
    for token in line.split()[1:]:
        key, _, value = token.partition("=")
        try:
            values[key] = int(value)
        except ValueError:
            raise ToolError("%s: WRKSTATS field %r is not a number" % (raw_path, token)) from None
    try:
        requests, duration_us = values["requests"], values["duration_us"]
        errors = values["socket_errors"] + values["non2xx"]
        p50, p99, p999 = values["p50"], values["p99"], values["p999"]
    except KeyError as missing:
        raise ToolError("%s: WRKSTATS line lacks %s" % (raw_path, missing)) from None
    rps = "%.1f" % (requests / (duration_us / 1e6)) if duration_us else "0.0"
    return [("requests", requests), ("rps", rps), ("p50", p50), ("p99", p99), ("p999", p999), ("errors", errors)]


# "requests: 300 total, 300 started, 300 done, 300 succeeded, 0 failed, 0 errored, 0 timeout"
H2_REQUESTS = re.compile(r"^requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed")
# "finished in 127.30ms, 2356.66 req/s, 92.52KB/s"
H2_FINISHED = re.compile(r"^finished in [^,]*, ([0-9.]+) req/s")


def h2load_stats(raw_path, log_path):
    succeeded = failed = rps = None
    with open(raw_path, errors="replace") as f:
        for line in f:
            m = H2_REQUESTS.match(line)
            if m:
                succeeded, failed = int(m.group(1)), int(m.group(2))
            m = H2_FINISHED.match(line)
            if m:
                rps = m.group(1)
    if succeeded is None or rps is None:
        raise ToolError("%s has no h2load summary (\"finished in\" and \"requests:\" lines)" % raw_path)
    durations = []
    with open(log_path) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3 and parts[2].isdigit():
                durations.append(int(parts[2]))
    durations.sort()
    return [
        ("requests", succeeded),
        ("rps", rps),
        ("p50", percentile(durations, 50)),
        ("p99", percentile(durations, 99)),
        ("p999", percentile(durations, 99.9)),
        ("errors", failed),
    ]


def main(argv):
    parser = arg_parser(__doc__)
    sub = parser.add_subparsers(dest="generator", required=True)
    wrk = sub.add_parser("wrk", help="wrk output with stats.lua's WRKSTATS line")
    wrk.add_argument("raw_output")
    h2 = sub.add_parser("h2load", help="h2load output and its --log-file")
    h2.add_argument("raw_output")
    h2.add_argument("log_file")
    args = parser.parse_args(argv)
    if args.generator == "wrk":
        stats = wrk_stats(args.raw_output)
    else:
        stats = h2load_stats(args.raw_output, args.log_file)
    print(fields_line(stats))


if __name__ == "__main__":
    run(main)
