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
"""
import json
import os
import sys
import time


def snap(pid):
    run = wait = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        tids = []  # the server is gone: the measurement beside it says so; nothing to add
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                if not f.read().startswith("tessera-argon2"):
                    continue
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
        except OSError:
            continue  # a thread that ended meanwhile
        run += int(fields[0])
        wait += int(fields[1])
    return {"t": time.monotonic_ns(), "run_ns": run, "wait_ns": wait}


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
    return {
        "label": f"{r['label']} cpu",
        "connections": r["connections"],
        "hashes": hashes,
        "cpu_ms_per_hash": round(run / hashes / 1e6, 2),
        "hashing_share": round(run / (wall * cpus), 3),
        # Time the hashing threads were ready to run but waited for a core.
        "waiting_share": round((a["wait_ns"] - b["wait_ns"]) / (wall * cpus), 3),
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
