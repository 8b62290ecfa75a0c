#!/usr/bin/env python3
"""procstat.py: the CPU, memory and context-switch counters of processes, read from /proc.

  procstat.py [--proc DIR] [PID ...]

Prints one line, each figure summed over the PIDs given (a proxy's main
process and its children, e.g. nginx's master and workers):

  user_ticks=N sys_ticks=N switches=N rss_kb=N hwm_kb=N machine_ticks=N

user_ticks, sys_ticks: utime and stime from /proc/PID/stat, in clock ticks
  (getconf CLK_TCK per second).
switches: voluntary and involuntary context switches of every thread
  (/proc/PID/task/*/status).
rss_kb, hwm_kb: VmRSS and VmHWM from /proc/PID/status.
machine_ticks: the whole machine's busy time from /proc/stat (user, nice,
  system, irq, softirq and steal: all but idle and iowait), in clock ticks.

A PID that has exited counts zero. Every figure is read in one pass, so a
sample before and one after a load run bracket it as tightly as a shell can.
--proc reads another directory laid out like /proc (the self-test's
fixtures).
"""

import os

from benchlib import ToolError, arg_parser, fields_line, run


def read_text(path):
    """The file's text, or None if it is gone (the process exited)."""
    try:
        with open(path) as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None


def cpu_ticks(stat_text):
    """(utime, stime) of a /proc/PID/stat line. The command name in
    parentheses may itself hold spaces and parentheses: the fields are
    counted from the last ')'."""
    fields = stat_text[stat_text.rfind(")") + 2 :].split()
    # After "pid (comm) ": state ppid pgrp session tty_nr tpgid flags minflt
    # cminflt majflt cmajflt utime stime ...
    return int(fields[11]), int(fields[12])


def status_fields(status_text, names):
    """The values (first number) of the named lines of a /proc/PID/status."""
    found = {}
    for line in status_text.splitlines():
        key, _, value = line.partition(":")
        if key in names:
            found[key] = int(value.split()[0])
    return found


def machine_ticks(stat_text):
    for line in stat_text.splitlines():
        fields = line.split()
        if fields and fields[0] == "cpu":
            user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            return user + nice + system + irq + softirq + steal
    raise ToolError("no aggregate cpu line in /proc/stat")


def sample(proc, pids):
    totals = {"user_ticks": 0, "sys_ticks": 0, "switches": 0, "rss_kb": 0, "hwm_kb": 0}
    for pid in pids:
        stat = read_text(os.path.join(proc, pid, "stat"))
        status = read_text(os.path.join(proc, pid, "status"))
        if stat is None or status is None:
            continue
        user, system = cpu_ticks(stat)
        totals["user_ticks"] += user
        totals["sys_ticks"] += system
        memory = status_fields(status, ("VmRSS", "VmHWM"))
        totals["rss_kb"] += memory.get("VmRSS", 0)
        totals["hwm_kb"] += memory.get("VmHWM", 0)
        tasks = os.path.join(proc, pid, "task")
        try:
            tids = os.listdir(tasks)
        except FileNotFoundError:
            tids = []
        for tid in tids:
            task_status = read_text(os.path.join(tasks, tid, "status"))
            if task_status is None:
                continue
            switches = status_fields(task_status, ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
            totals["switches"] += sum(switches.values())
    machine = read_text(os.path.join(proc, "stat"))
    if machine is None:
        raise ToolError("cannot read %s" % os.path.join(proc, "stat"))
    out = list(totals.items())
    out.append(("machine_ticks", machine_ticks(machine)))
    return out


def main(argv):
    parser = arg_parser(__doc__)
    parser.add_argument("--proc", default="/proc", help="the /proc directory to read (default /proc)")
    parser.add_argument("pids", nargs="*", metavar="PID")
    args = parser.parse_args(argv)
    for pid in args.pids:
        if not pid.isdigit():
            raise ToolError("not a process id: %r" % pid)
    print(fields_line(sample(args.proc, args.pids)))


if __name__ == "__main__":
    run(main)
