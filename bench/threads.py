"""What a server's password hashes cost, read from Linux's per-thread scheduler statistics.

  threads.py snap PID                   one JSON line: the CPU and run-queue time of PID's
                                        hashing threads (tessera-argon2-*) so far, and a clock
  threads.py cost BEFORE AFTER RESULT   from two snaps around a sign-in measurement and its
                                        result line: CPU time per hash and the hashing threads'
                                        share of the machine, as one JSON result line

A sign-in does one hash, so the sign-in rate is (the share of the machine the hashing threads
got) ÷ (the CPU time of a hash). `bench limit argon2` reports the same two for the bare hash
(cpu_ms_per_op, cpu_share), and the sign-in ÷ limit ratio splits into the two factors: a hash
costing more here than in the limit (the machine slowed, or the server's hash is slower), or
the hashing threads getting less of the machine (the server's other work, or another process).

Where the rest of the machine went is read beside it, so that a sign-in reading under the bar
says why: the server's other threads (HTTP, the database driver, the log flush), PostgreSQL's
processes (for a server on PostgreSQL; any process named `postgres`), and everything else,
which is mostly the load driver and the kernel's work for the two (the machine's busy time from
`/proc/stat`, less the three above).
"""
import json
import os
import sys
import time


def schedstat(path):
    """(CPU ns, run-queue wait ns) of a thread or process so far; None if it is gone."""
    try:
        with open(path) as f:
            fields = f.read().split()
        return int(fields[0]), int(fields[1])
    except (OSError, ValueError, IndexError):
        return None


def busy_ns():
    """The machine's busy time so far, all cores: everything in /proc/stat but idle and
    iowait (and the guest columns, which user already holds)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    busy = sum(ticks[:8]) - ticks[3] - ticks[4]
    return busy * 1_000_000_000 // os.sysconf("SC_CLK_TCK")


def postgres_ns():
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        stat = schedstat(f"/proc/{pid}/schedstat")
        if stat:
            total += stat[0]
    return total


def snap(pid):
    run = wait = other = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []  # the server is gone: the measurement beside it says so; nothing to add
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                hashing = f.read().startswith("tessera-argon2")
        except OSError:
            continue  # a thread that ended meanwhile
        stat = schedstat(f"/proc/{pid}/task/{tid}/schedstat")
        if not stat:
            continue
        if hashing:
            run += stat[0]
            wait += stat[1]
        else:
            other += stat[0]
    return {"t": time.monotonic_ns(), "run_ns": run, "wait_ns": wait, "other_ns": other,
            "postgres_ns": postgres_ns(), "busy_ns": busy_ns()}


def cost(before, after, result):
    b, a = json.loads(before), json.loads(after)
    try:
        r = json.loads(result.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None  # the measurement failed; it said so itself
    hashes = r.get("ok", 0)
    # The load's own duration where it reports one: the snaps' interval also holds the
    # driver's start and exit, when nothing is hashed.
    wall = r["seconds"] * 1e9 if r.get("seconds") else a["t"] - b["t"]
    run = a["run_ns"] - b["run_ns"]
    if hashes <= 0 or wall <= 0 or run <= 0:
        return None
    cpus = os.cpu_count() or 1
    # The rest of the machine, over the snaps' whole interval (the driver's start and exit
    # included, which the hashing share leaves out): per sign-in, and as shares.
    span = (a["t"] - b["t"]) * cpus
    other = a["other_ns"] - b["other_ns"]
    database = a["postgres_ns"] - b["postgres_ns"]
    busy = a["busy_ns"] - b["busy_ns"]
    rest = max(busy - run - other - database, 0)
    return {
        "label": f"{r['label']} cpu",
        "connections": r["connections"],
        "hashes": hashes,
        "cpu_ms_per_hash": round(run / hashes / 1e6, 2),
        "hashing_share": round(run / (wall * cpus), 3),
        # Time the hashing threads were ready to run but waited for a core.
        "waiting_share": round((a["wait_ns"] - b["wait_ns"]) / (wall * cpus), 3),
        "server_other_us_per_hash": round(other / hashes / 1e3),
        "postgres_us_per_hash": round(database / hashes / 1e3),
        "rest_us_per_hash": round(rest / hashes / 1e3),
        "server_other_share": round(other / span, 3),
        "postgres_share": round(database / span, 3),
        "rest_share": round(rest / span, 3),
        "idle_share": round(max(span - busy, 0) / span, 3),
    }


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "snap":
        print(json.dumps(snap(sys.argv[2])))
    elif len(sys.argv) == 5 and sys.argv[1] == "cost":
        line = cost(sys.argv[2], sys.argv[3], sys.argv[4])
        if line:
            print(json.dumps(line))
    else:
        sys.exit(__doc__)
