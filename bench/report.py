"""Prints the benchmark results (results.jsonl) as a Markdown table, with ratios against the
peer and against the machine's limits measured in the same run."""
import json
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
loads = [r for r in rows if "rps" in r]
limits = {r["label"]: r for r in rows if r["label"].startswith("limit-")}
rss = [r for r in rows if "rss_kb" in r]

by = defaultdict(dict)
for r in loads:
    target, _, scenario = r["label"].partition(" ")
    by[(scenario, r["connections"])][target] = r

print("| scenario | conns | " + " | ".join(
    f"{t} req/s (p50 / p99 ms)" for t in ["tessera-sqlite", "tessera-postgres", "peer", "ceiling"]) + " | sqlite ÷ peer | pg ÷ peer |")
print("|" + " --- |" * 8)
for (scenario, conns) in sorted(by):
    cells = []
    for t in ["tessera-sqlite", "tessera-postgres", "peer", "ceiling"]:
        r = by[(scenario, conns)].get(t)
        fmt = lambda v: "?" if v is None else f"{v:.1f}"
        cells.append(f"{r['rps']:.0f} ({fmt(r['p50_ms'])} / {fmt(r['p99_ms'])})" + (f" [{r['errors']} err]" if r.get("errors") else "") if r else "—")
    peer = by[(scenario, conns)].get("peer")
    ratio = lambda t: (f"{by[(scenario, conns)][t]['rps'] / peer['rps']:.2f}×" if peer and t in by[(scenario, conns)] and peer["rps"] else "—")
    print(f"| {scenario} | {conns} | " + " | ".join(cells) + f" | {ratio('tessera-sqlite')} | {ratio('tessera-postgres')} |")

print()
for label, r in limits.items():
    print(f"- {label}: {r['per_second']:.0f}/s on {r['threads']} threads")
for r in rss:
    print(f"- {r['label']}: {r['rss_kb'] / 1024:.1f} MB resident")
