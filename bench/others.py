"""What the rest of the machine ran while a storm's paced loads were measured.

  others.py watch SECONDS LABEL   samples every process's CPU time every 200 ms for SECONDS and
                                  prints one JSON line: the CPU time taken by processes outside
                                  the benchmark, and the largest of them by name and parent

A paced request's p99 is 8 requests in 800: a fraction of a second in which other processes
crowd the two cores is enough to move it. The machines this runs on have background services
of their own (on the `rust-svc` kind, RabbitMQ boots a whole Erlang VM about once a minute to
check on its port mapper: `erl … -sname epmd-starter-…`; in one trace 0.15 s of CPU within half
a second, over a dozen threads at Tessera's priority).
This says, for each storm, whether such a process ran beside it, so that a miss can be read
with its cause.

The benchmark's own processes are not counted: Tessera, the load driver, wrk, PostgreSQL
(part of the system measured on that side), Node (the peer, idle meanwhile), this script, and
the kernel threads that serve them (softirqs, which carry the loopback traffic, and workers).
A process that starts and ends between two samples is missed; one that ends after the first
sample is counted up to its last. Processes are named by their command name and their parent's,
never by their arguments, which may hold anything (the results are committed).
"""
import json
import os
import sys
import time

# The benchmark's own processes, by command name (/proc/PID/comm).
OURS = ("tessera", "bench", "wrk", "postgres", "node", "python3", "bash", "sleep", "tee", "curl")
# Kernel threads that work for the processes above: loopback networking and I/O completion.
KERNEL_OURS = ("ksoftirqd", "kworker")
TICK = os.sysconf("SC_CLK_TCK")


def sample():
    """{pid: (comm, cpu_ticks, parent_pid)} for every process not ours."""
    seen = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index("(") + 1:stat.rindex(")")]
        if comm.startswith(OURS) or comm.startswith(KERNEL_OURS) or comm.startswith(("tokio-", "tessera-")):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # After the command name: the state, the parent (field 4 of stat), …, utime and stime
        # (fields 14 and 15).
        seen[pid] = (comm, int(fields[11]) + int(fields[12]), fields[1])
    return seen


def name(pid):
    """A process's command name, or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def watch(seconds, label):
    start = time.monotonic()
    first = sample()
    base = {pid: cpu for pid, (_, cpu, _) in first.items()}
    last, names, parents = {}, {}, {}
    while time.monotonic() - start < seconds:
        time.sleep(0.2)
        now = time.monotonic() - start
        for pid, (comm, cpu, parent) in sample().items():
            if pid not in parents:
                parents[pid] = name(parent)
            names[pid] = comm
            # A process started during the watch is counted from its start.
            used = cpu - base.get(pid, 0)
            if used > 0:
                first_at = last.get(pid, (0, now))[1]
                last[pid] = (used, first_at)
    ms = 1000 / TICK
    total = sum(used for used, _ in last.values()) * ms
    top = sorted(last.items(), key=lambda kv: -kv[1][0])[:5]
    return {
        "label": f"{label} others",
        "seconds": seconds,
        "cpu_ms": round(total),
        "top": [
            {
                "comm": names[pid],
                "parent": parents.get(pid, ""),
                "cpu_ms": round(used * ms),
                "started": pid not in base,
                "at_s": round(at, 1),
            }
            for pid, (used, at) in top
            if used * ms >= 20
        ],
    }


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "watch":
        print(json.dumps(watch(float(sys.argv[2]), sys.argv[3])), flush=True)
    else:
        sys.exit(__doc__)
