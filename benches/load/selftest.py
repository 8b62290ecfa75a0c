#!/usr/bin/env python3
"""selftest.py: runs every load-test tool on recorded outputs and checks the figures it reads.

  python3 benches/load/selftest.py

Each tool runs as compare.sh and profile.sh run it (a python3 subprocess)
on the real outputs kept in benches/load/testdata/ (see its README.md):
wrk and h2load runs, /proc files, `perf stat` and `perf script` output, a
callgrind dump, and the raw rows of a full compare.sh run for the report.
idleconns.py is run against a small keep-alive server on 127.0.0.1. Also
checks that every tool has --help and that the shell scripts parse and call
only tools that exist. Standard library only; no build, no load generated.
Prints one line per check and exits 1 if any failed.
"""

import argparse
import http.server
import os
import re
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "testdata")
TOOLS = ["loadstats", "procstat", "idleconns", "syscounts", "instructions", "perfsummary", "report"]

failures = []


def check(name, condition, detail=""):
    print("%s %s%s" % ("ok  " if condition else "FAIL", name, "" if condition else ": " + detail))
    if not condition:
        failures.append(name)


def run_tool(name, *args):
    """Runs a tool as the scripts do: (exit status, stdout, stderr)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    done = subprocess.run(
        [sys.executable, os.path.join(HERE, name + ".py")] + list(args),
        capture_output=True, text=True, env=env, timeout=60,
    )
    return done.returncode, done.stdout, done.stderr


def tool(name, *args):
    """A tool's stdout; a failure is recorded if it does not exit 0."""
    status, out, err = run_tool(name, *args)
    if status != 0:
        check("%s %s exits 0" % (name, " ".join(args[:1])), False, "status %d: %s" % (status, err.strip()[-300:]))
    return out


def fields(line):
    return dict(pair.split("=", 1) for pair in line.split())


def data(*parts):
    return os.path.join(DATA, *parts)


def test_help():
    for name in TOOLS:
        out = tool(name, "--help")
        check("%s --help says its job" % name, out.startswith("usage: ") and "%s.py: " % name in out, out[:200])


def test_loadstats():
    got = fields(tool("loadstats", "wrk", data("wrk-small.txt")))
    want = {"requests": "2451", "rps": "2447.9", "p50": "441", "p99": "8348", "p999": "11300", "errors": "0"}
    check("loadstats wrk: WRKSTATS figures, rate from requests over duration", got == want, str(got))
    got = fields(tool("loadstats", "wrk", data("wrk-404.txt")))
    check("loadstats wrk: non-2xx answers are errors", got.get("errors") == "2931" and got.get("requests") == "2931", str(got))
    got = fields(tool("loadstats", "h2load", data("h2load.txt"), data("h2load.log")))
    # 300 logged durations, sorted: nearest rank 150, 297 and 300.
    want = {"requests": "300", "rps": "2356.66", "p50": "392", "p99": "7716", "p999": "14566", "errors": "0"}
    check("loadstats h2load: summary lines and percentiles of the log", got == want, str(got))
    status, _, err = run_tool("loadstats", "wrk", data("h2load.txt"))
    check("loadstats wrk: output without WRKSTATS is an error", status == 1 and "WRKSTATS" in err, err)


def test_procstat():
    got = fields(tool("procstat", "--proc", data("proc"), "3821", "3863"))
    # python3 (2 threads): utime 20, stime 2, switches 32+7 and 1+3, VmRSS/VmHWM 22312;
    # its child, named "a) b": 0, 0, 1+1, 1816. /proc/stat: 39599+0+17660+0+115+47.
    want = {"user_ticks": "20", "sys_ticks": "2", "switches": "45", "rss_kb": "24128",
            "hwm_kb": "24128", "machine_ticks": "57421"}
    check("procstat: ticks, switches and memory summed over processes and threads", got == want, str(got))
    got = fields(tool("procstat", "--proc", data("proc"), "3863", "4000000"))
    check("procstat: a process that is gone counts zero", got.get("rss_kb") == "1816" and got.get("user_ticks") == "0", str(got))
    got = fields(tool("procstat", str(os.getpid())))
    check("procstat: reads the live /proc", int(got.get("rss_kb", 0)) > 0 and int(got.get("machine_ticks", 0)) > 0, str(got))
    status, _, err = run_tool("procstat", "not-a-pid")
    check("procstat: a PID that is not a number is an error", status == 1 and "not a process id" in err, err)


def test_syscounts():
    csv = data("perf-stat.csv")
    got = tool("syscounts", "--upstream-tids", "19988 19994 19995", "cutover", csv).rstrip("\n").split("\t")
    # requests: the upstream workers' writev (1218 + 1200); the rest over cutover's threads.
    want = ["cutover", "2418", "11454", "4851", "4883", "1640", "25", "0", "0", "0"]
    check("syscounts: requests from the upstream's writev, cutover's calls (jemalloc: no libc malloc)", got == want, str(got))
    cutover_tids = "19991 19998 19999 20000 20001 20002 20003 20004 20005 20006"
    got = tool("syscounts", "--upstream-tids", cutover_tids, "upstream", csv).rstrip("\n").split("\t")
    want = ["upstream", "2416", "7439", "2550", "2418", "1437", "1034", "14510", "14510", "0"]
    check("syscounts: libc malloc/free probes counted per thread", got == want, str(got))


def test_instructions():
    dump, src = data("callgrind.out"), "/work/main/src/"
    row = tool("instructions", "by-crate", "cutover", "10", dump, src).rstrip("\n").split("\t")
    with open(dump) as f:
        summary = int(re.search(r"^summary: (\d+)$", f.read(), re.M).group(1))
    groups = dict(part.rsplit("=", 1) for part in row[3].split(";"))
    check("instructions by-crate: the total is the dump's summary", row[:3] == ["cutover", "10", str(summary)], str(row[:3]))
    check("instructions by-crate: the groups add up to the total", sum(int(v) for v in groups.values()) == summary, str(groups))
    check("instructions by-crate: cutover's, jemalloc's and the standard library's shares",
          groups.get("cutover (routing, split, headers, pool, metrics)") == "916"
          and groups.get("allocator (jemalloc)") == "560"
          and groups.get("Rust standard library (not inlined into one of the above)") == "5107", str(groups))
    lines = tool("instructions", "top", "10", dump, src, "3").splitlines()
    want = [
        "function\tcrate\tper_request",
        "cutover::config::compile::compile_matcher\tcutover\t84",
        "core::array::iter::iter_inner::PolymorphicIter<[core::mem::maybe_uninit::MaybeUninit<T>]>::next\tstd\t53",
        "_rjem_malloc\tjemalloc\t47",
    ]
    check("instructions top: functions by self instructions per request", lines == want, "\n".join(lines))


def test_perfsummary():
    out = tool("perfsummary", data("perf-script.txt"))
    check("perfsummary: samples split into kernel and user", out.startswith("24 samples: kernel 25.0%, user space 75.0%"), out[:80])
    for line in [
        "| send: writev/write/sendmsg | 4.2% |",
        "| epoll_wait | 4.2% |",
        "| receive: read/recv | 4.2% |",
        "| accept/connect/close | 4.2% |",
        "| copying (memcpy/memmove) | 4.2% |",
        "| cutover's own code | 4.2% |",
        # jemalloc, linked into cutover, and Rust's allocation shims are allocation;
        # the caller is the first frame above them.
        "| allocation (malloc/free) | 12.5% |",
        "| hyper::error::Error::new | 4.2% |",
        "| other user code | 4.2% |",
        "| upstream connection task (hyper client) | 16.7% |",
    ]:
        check("perfsummary: %s" % line, line in out.splitlines(), "")


def test_report():
    rows = data("report")
    with tempfile.TemporaryDirectory() as tmp:
        out_md = os.path.join(tmp, "results.md")
        tool("report", "--results", os.path.join(rows, "results.tsv"), "--idle", os.path.join(rows, "idle.tsv"),
             "--meta", os.path.join(rows, "meta.txt"), "--counts", os.path.join(rows, "counts.tsv"),
             "--notes", os.path.join(rows, "notes.tsv"), "--instructions", os.path.join(rows, "instructions.tsv"),
             "--instructions-top", os.path.join(rows, "instructions-top.tsv"), out_md)
        with open(out_md) as f:
            lines = f.read().splitlines()
    for line in [
        # Medians of three rounds, then cutover ÷ peer.
        "| cutover | 80,216 | 0.58 | 1.80 | 4.54 | 12.7 | 37.7 | 10.0 | 0 | 3 |",
        "| small | 0.90 | 0.94 | 0.94 | 0.37 | 1.18 | 1.01 | 1.16 | 1.02 |",
        # Round by round: cutover's rate ÷ the floor's, and its p99 ÷ nginx's.
        "| small | floor | 0.95 / 0.93 / 0.96 | 0 of 3 | 1.06 / 0.97 / 1.22 | 1 of 3 |",
        "| small | nginx | 0.97 / 0.90 / 0.91 | 0 of 3 | 0.83 / 0.96 / 1.47 | 2 of 3 |",
        "| cutover | 80,216 | 5.4 | 7.2 | 12.7 | 11.8 | 24.5 | 0.309 |",
        "| cutover | 1.02 / 0.96 / 1.03 | 1.02 | 1.04 | 1.01 |",
        "| cutover | 0.58 / 0.59 / 0.57 | 0.58 | 1.79 | 1.73 | 5.4 | 4.3 | 7.2 |",
        "| cutover | 10,000 | 10.5 | 32.3 | 2.2 | 10000 |",
        "| nginx | 44,615 | 6.62 | 2.00 | 2.00 | 0.62 | 0.00 | 4.00 | 4.00 | 0.00 |",
        "| cutover | 20,000 | 33,275 | 1.23 | 0.78 | 1.11 | 5.31 |",
        "| floor | 20,000 | 30,076 | 1.11 | 0.71 | 1.00 | 4.80 |",
        "| native | 20,000 | 6,268 | 0.23 | 0.15 | 0.21 | 1.00 |",
        "| haproxy | not available: HAProxy 2.6 mirrors traffic only through an external SPOE agent "
        "(spoa-mirror), which Debian does not ship | | | | | | | | |",
    ]:
        check("report: %s" % line[:60], line in lines, "")


class SmallHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self):
        body = b"x" * 100
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def established_to(port):
    """Established TCP connections whose local port is `port` (/proc/net/tcp, state 01)."""
    count = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if int(parts[1].split(":")[1], 16) == port and parts[3] == "01":
                count += 1
    return count


def test_idleconns():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), SmallHandler)
    server.daemon_threads = True
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        ready, release = os.path.join(tmp, "ready"), os.path.join(tmp, "release")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        client = subprocess.Popen(
            [sys.executable, os.path.join(HERE, "idleconns.py"), "--timeout", "30", "127.0.0.1", str(port), "20", ready, release],
            env=env, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and client.poll() is None and not os.path.exists(ready):
            time.sleep(0.05)
        time.sleep(0.1)
        text = open(ready).read() if os.path.exists(ready) else ""
        check("idleconns: says when its connections are open", text == "OPEN 20\n", repr(text))
        held = established_to(port)
        check("idleconns: holds them open once answered", held == 20, "%d established" % held)
        open(release, "w").close()
        try:
            status = client.wait(timeout=10)
        except subprocess.TimeoutExpired:
            client.kill()
            status = "still running"
        check("idleconns: lets go when released", status == 0, "status %s: %s" % (status, client.stderr.read()))
    server.shutdown()
    server.server_close()


def test_scripts_call_existing_tools():
    for script in ["compare.sh", "profile.sh"]:
        with open(os.path.join(HERE, script)) as f:
            called = set(re.findall(r'python3 "\$(?:HERE|ROOT/benches/load)/([a-z_]+\.py)"', f.read()))
        missing = [t for t in called if not os.path.exists(os.path.join(HERE, t))]
        check("%s calls only tools that exist (%s)" % (script, ", ".join(sorted(called))), called and not missing, str(missing))


def test_scripts_parse():
    for script in sorted(f for f in os.listdir(HERE) if f.endswith(".sh")):
        run = subprocess.run(["bash", "-n", os.path.join(HERE, script)], capture_output=True, text=True)
        check("%s parses (bash -n)" % script, run.returncode == 0, run.stderr.strip())


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.strip().splitlines()[0],
        epilog="\n".join(__doc__.strip().splitlines()[2:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args()
    for test in [test_help, test_loadstats, test_procstat, test_syscounts, test_instructions,
                 test_perfsummary, test_report, test_idleconns, test_scripts_call_existing_tools, test_scripts_parse]:
        test()
    if failures:
        print("%d check(s) failed" % len(failures))
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
