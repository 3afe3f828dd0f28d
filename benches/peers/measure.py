#!/usr/bin/env python3
"""Runs a command and measures its whole process tree: wall time, CPU, peak RSS.

    python3 measure.py OUT.json -- COMMAND [ARGS...]

Standard library only (runs with any python3). Writes a JSON object to OUT.json and
exits with the command's exit status.

- CPU: this process makes itself a child subreaper (prctl PR_SET_CHILD_SUBREAPER), so
  a descendant whose parent exits without waiting for it (PyFlink's gateway JVM, which
  Python never waits for; Spark's spark-submit JVM) is re-parented to us instead of
  init, and we reap it. Every descendant is thus waited for by someone in the tree, and
  getrusage(RUSAGE_CHILDREN) at the end holds the user+sys CPU of all of them.
  (/usr/bin/time on python misses the JVM entirely: it counts only waited-for children.)
- Peak RSS: every 100 ms the RSS of every live descendant is read from /proc/<pid>/statm
  and summed; the peak of that sum is reported. Descendants are found by scanning
  /proc/*/stat for parent links every 0.5 s (and at once after a fork is seen), so
  the sampling itself costs little. Shared pages (libraries mapped by two processes)
  count twice; for a single process the figure is the same as its VmRSS. The largest
  single ru_maxrss (the kernel's exact per-process peak) is reported too, and the peak
  is max(sampled tree sum, largest single).
- Wall: from spawning the command until it exits ("wall_s"), and until the last
  descendant is gone ("wall_all_s"). Descendants still alive LINGER seconds (default 30)
  after the command exits are sent SIGTERM, then SIGKILL, and listed in "killed".
"""

import ctypes
import json
import os
import resource
import select
import signal
import sys
import time

PR_SET_CHILD_SUBREAPER = 36
PAGE = os.sysconf("SC_PAGE_SIZE")
TICK = os.sysconf("SC_CLK_TCK")
SAMPLE_S = 0.1
SCAN_S = 0.5
LINGER_S = float(os.environ.get("LINGER", "30"))


def scan_descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        ppid = int(stat[stat.rindex(b")") + 2 :].split(None, 2)[1])
        children.setdefault(ppid, []).append(int(name))
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * PAGE
    except (OSError, IndexError, ValueError):
        return None


def cpu_ticks(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        return int(fields[11]) + int(fields[12])  # utime, stime
    except (OSError, IndexError, ValueError):
        return None


def main() -> int:
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        sys.exit(__doc__)
    out_path, cmd = sys.argv[1], sys.argv[3:]
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        print("measure.py: cannot become a subreaper; CPU of orphans may be lost", file=sys.stderr)

    me = os.getpid()
    t0 = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)

    # A pidfd becomes readable when the command exits: wakes the loop at once, so the
    # wall time is exact rather than rounded up to the 100 ms sampling period.
    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        pidfd = None
    status = None
    t_main = None
    peak_tree = 0
    peak_procs = 0
    seen_cpu: dict[int, int] = {}
    known: set[int] = {pid}
    last_scan = 0.0
    killed: list[int] = []
    term_sent_at = None
    while True:
        # Reap whatever has exited: the command, its orphans, nothing else is our child.
        while True:
            try:
                wpid, wstatus = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                wpid = -1
                break
            if wpid == 0:
                break
            known.discard(wpid)
            if wpid == pid:
                status = wstatus
                t_main = time.perf_counter()
        if wpid == -1:  # no children left at all
            break
        now = time.perf_counter()
        if now - last_scan >= SCAN_S:
            known = scan_descendants(me)
            last_scan = now
        total = 0
        alive = 0
        for p in list(known):
            r = rss_bytes(p)
            if r is None:
                continue
            alive += 1
            total += r
            c = cpu_ticks(p)
            if c is not None:
                seen_cpu[p] = c
        peak_tree = max(peak_tree, total)
        peak_procs = max(peak_procs, alive)
        if t_main is not None and now - t_main > LINGER_S:
            sig = signal.SIGTERM if term_sent_at is None else signal.SIGKILL
            if term_sent_at is None or now - term_sent_at > 5:
                for p in scan_descendants(me):
                    try:
                        os.kill(p, sig)
                        killed.append(p)
                    except ProcessLookupError:
                        pass
                term_sent_at = now
        if pidfd is not None and t_main is None:
            select.select([pidfd], [], [], SAMPLE_S)
        else:
            time.sleep(SAMPLE_S)
    t_end = time.perf_counter()
    if pidfd is not None:
        os.close(pidfd)

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    exit_code = os.waitstatus_to_exitcode(status) if status is not None else -1
    result = {
        "command": cmd,
        "exit_code": exit_code,
        "wall_s": round((t_main or t_end) - t0, 3),
        "wall_all_s": round(t_end - t0, 3),
        "user_s": round(ru.ru_utime, 3),
        "sys_s": round(ru.ru_stime, 3),
        "cpu_s": round(ru.ru_utime + ru.ru_stime, 3),
        "cpu_sampled_s": round(sum(seen_cpu.values()) / TICK, 2),
        "peak_rss_tree_kb": peak_tree // 1024,
        "max_single_rss_kb": ru.ru_maxrss,
        "peak_rss_kb": max(peak_tree // 1024, ru.ru_maxrss),
        "peak_processes": peak_procs,
        "processes_seen": len(seen_cpu),
        "killed": sorted(set(killed)),
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    return exit_code if exit_code >= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
