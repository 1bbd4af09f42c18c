"""Turns a benchmark run (results.jsonl) into the tables of BENCHMARKS.md and a chart.

usage: report.py RESULTS.jsonl [CHART.svg]

Prints Markdown: every measurement side by side (Tessera on SQLite and PostgreSQL, the peer,
the limits), the ratios, and each target of issue #6 with its verdict. Everything compared
comes from the same run. With CHART.svg, also draws Tessera vs peer vs limit per scenario.
"""
import json
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
chart_path = sys.argv[2] if len(sys.argv) > 2 else None

loads = [r for r in rows if "rps" in r]
# Each limit is measured at the start of a run and again at its end; ratios use the mean.
limits = defaultdict(list)
# The machine's own tail (`bench limit jitter`), measured beside each storm: a latency, not a rate.
jitters = {}
for r in rows:
    if r["label"].startswith("limit-jitter"):
        jitters[r["label"]] = r
    elif r["label"].startswith("limit-"):
        limits[r["label"]].append(r)
rss = [r for r in rows if "rss_kb" in r]
# What each sign-in's hash cost the server and the share of the machine its hashing threads
# got (bench/threads.py), by (target, connections).
hash_costs = {(r["label"].split(" ")[0], r["connections"]): r for r in rows if "cpu_ms_per_hash" in r}
# The CPU other processes took while each storm ran (bench/others.py), by target.
others = {r["label"].split(" ")[0]: r for r in rows if r["label"].endswith(" storm others")}
other = [r for r in rows if "rps" not in r and "rss_kb" not in r and "cpu_ms_per_hash" not in r
         and not r["label"].startswith("limit-") and not r["label"].endswith(" others")]

# by[(scenario, connections)][target] = measurement
by = defaultdict(dict)
for r in loads:
    target, _, scenario = r["label"].partition(" ")
    by[(scenario, r["connections"])][target] = r

TARGETS = ["tessera-sqlite", "tessera-postgres", "peer"]


def mean_limit(label, key="per_second"):
    found = [r[key] for r in limits.get(label, []) if key in r]
    return sum(found) / len(found) if found else None


rsa = mean_limit("limit-rsa")
argon = mean_limit("limit-argon2")


def beside(kind, target, conns):
    """The limit measured just before and after the scenarios it bounds (run.sh measures it
    beside each connection count's group of them; in runs 4 to 8 of 2026-12-01, beside each
    target), else the run's mean. The machine's speed drifts by a third within a run, so a
    limit read ten minutes away can move a ratio by as much."""
    return (
        mean_limit(f"limit-{kind} beside c={conns}")
        or mean_limit(f"limit-{kind} beside {target} c={conns}")
        or mean_limit(f"limit-{kind}")
    )


def get(scenario, conns, target):
    return by.get((scenario, conns), {}).get(target)


def ceiling_for(scenario, conns):
    """The bare handler measured right before `scenario` (from run 22 also before JWKS, labelled
    `ceiling static-json-beside-jwks`); runs before that measured it once, before discovery."""
    return get(f"static-json-beside-{scenario}", conns, "ceiling") or get("static-json", conns, "ceiling")


def fmt_ms(v):
    return "?" if v is None else (f"{v:.2f}" if v < 10 else f"{v:.0f}")


def cell(r):
    if not r:
        return "—"
    text = f"{r['rps']:,.0f} ({fmt_ms(r['p50_ms'])} / {fmt_ms(r['p99_ms'])})"
    return text + (f" [{r['errors']} err]" if r.get("errors") else "")


def ratio(a, b):
    return f"{a / b:.2f}×" if a and b else "—"


print("### Every measurement (req/s, p50 / p99 ms)\n")
print("| scenario | conns | Tessera SQLite | Tessera PostgreSQL | peer | ceiling | SQLite ÷ peer | PG ÷ peer |")
print("| --- | --- | --- | --- | --- | --- | --- | --- |")
for (scenario, conns) in sorted(by, key=lambda k: (k[0], k[1])):
    if scenario.startswith("static-json"):
        continue
    group = by[(scenario, conns)]
    peer = group.get("peer")
    ceiling = ceiling_for(scenario, conns) if scenario in ("discovery", "jwks") else None
    print(
        f"| {scenario} | {conns} | {cell(group.get('tessera-sqlite'))} | {cell(group.get('tessera-postgres'))} | "
        f"{cell(peer)} | {cell(ceiling)} | "
        f"{ratio(group.get('tessera-sqlite', {}).get('rps'), peer and peer['rps'])} | "
        f"{ratio(group.get('tessera-postgres', {}).get('rps'), peer and peer['rps'])} |"
    )

print("\n### Limits measured in the same run\n")
for label, found in limits.items():
    each = " and ".join(f"{r['per_second']:,.0f}/s" for r in found)
    mean = sum(r["per_second"] for r in found) / len(found)
    if all("cpu_ms_per_op" in r for r in found):
        each += (" (" + " and ".join(f"{r['cpu_ms_per_op']:g}" for r in found) + " ms of CPU each; "
                 + " and ".join(f"{r['cpu_share']:.0%}" for r in found) + " of its threads' time)")
    if " beside " in label:
        kind, _, where = label.partition(" beside ")
        print(f"- {kind} beside {where}: {each}; its ratios there use {mean:,.0f}/s")
        continue
    when = "at the start and at the end of the run" if len(found) == 2 else f"{len(found)} time(s)"
    print(f"- {label}: {each} on {found[0]['threads']} threads, {when}; mean {mean:,.0f}/s "
          "(the ratios use the limit measured beside their scenario where there is one)")
for label, r in jitters.items():
    print(f"- {label}: a {r['job_ms']:.2f}-ms CPU job every 10 ms on {r['threads']} threads took "
          f"{r['p50_ms']:.2f} ms at p50, {r['p99_ms']:.1f} ms at p99, {r['max_ms']:.1f} ms at most")
for conns in sorted({c for (s, c) in by if s == "static-json"}):
    r = get("static-json", conns, "ceiling")
    before_jwks = get("static-json-beside-jwks", conns, "ceiling")
    also = f", and {before_jwks['rps']:,.0f} right before JWKS" if before_jwks else ""
    print(f"- bare axum ceiling, {conns} connections: {r['rps']:,.0f} req/s right before discovery{also}")

print("\n### Memory (resident)\n")
for r in rss:
    print(f"- {r['label']}: {r['rss_kb'] / 1024:.1f} MB")


def others_note(t):
    """What other processes ran beside target t's storm, in a few words: the CPU they took
    and the largest of them."""
    r = others.get(t)
    if not r:
        return None
    top = ", ".join(f"{p['comm']}{' (started)' if p['started'] else ''} {p['cpu_ms']} ms"
                    for p in r["top"][:2])
    return f"other processes: {r['cpu_ms']:,} ms of CPU" + (f", {top}" if top else "")


if others:
    print("\n### Other processes during the login storms\n")
    for t, r in others.items():
        print(f"- beside {t}'s storm ({r['seconds']:g} s): {r['cpu_ms']:,} ms of CPU in all")
        for p in r["top"]:
            print(f"  - {p['comm']} (parent {p.get('parent') or '?'}): {p['cpu_ms']} ms"
                  f"{', started at ' + str(p['at_s']) + ' s' if p['started'] else ''}")

if other:
    print("\n### Other\n")
    for r in other:
        print(f"- {json.dumps(r)}")

# ----- targets -------------------------------------------------------------------------------
verdicts = []


def hash_split(t, conns):
    """The sign-in ÷ argon2 ratio as its two factors, where the run measured them: the limit's
    CPU time per hash over the server's (a hash costing more on the server, or the machine
    slower while it ran), and the server's hashing threads' share of the machine over the
    limit's."""
    mine = hash_costs.get((t, conns))
    label = f"limit-argon2 beside c={conns}"
    ms, share = mean_limit(label, "cpu_ms_per_op"), mean_limit(label, "cpu_share")
    if not mine or not ms or not share:
        return ""
    rest = ""
    if "server_other_share" in mine:
        # From run 24: where the rest of the machine went (bench/threads.py).
        db = (f", PostgreSQL {mine['postgres_share']:.1%}"
              if t.endswith("postgres") else "")
        rest = (f"; the rest: the server's other threads {mine['server_other_share']:.1%} "
                f"({mine['server_other_us_per_hash']:,} µs a sign-in){db}, the driver and the "
                f"kernel {mine['rest_share']:.1%}, idle {mine['idle_share']:.1%}")
    return (f" (a hash: {mine['cpu_ms_per_hash']:.1f} ms of CPU, the limit's {ms:.1f} ms → "
            f"{ms / mine['cpu_ms_per_hash']:.2f}×; the hashing threads' share: "
            f"{mine['hashing_share']:.0%}, the limit's {share:.0%} → "
            f"{mine['hashing_share'] / share:.2f}×{rest})")


def target(name, value, bound, ok, unit="×"):
    mark = "✔" if ok else "✘"
    verdicts.append(f"| {name} | {value} | {bound} | {mark} |")


conns_seen = sorted({c for (_, c) in by})
for conns in conns_seen:
    for t in ("tessera-sqlite", "tessera-postgres"):
        db = "SQLite" if t.endswith("sqlite") else "PG"
        for scenario in ("discovery", "jwks"):
            me, peer, ceil = get(scenario, conns, t), get(scenario, conns, "peer"), ceiling_for(scenario, conns)
            if me and ceil:
                v = me["rps"] / ceil["rps"]
                target(f"{scenario} ÷ ceiling, {db}, c={conns}", f"{v:.2f}×", "≥ 0.7×", v >= 0.7)
            if me and peer:
                v = me["rps"] / peer["rps"]
                target(f"{scenario} ÷ peer, {db}, c={conns}", f"{v:.2f}×", "≥ 4×", v >= 4)
        me, peer = get("client_credentials", conns, t), get("client_credentials", conns, "peer")
        if me and peer:
            v = me["rps"] / peer["rps"]
            target(f"client_credentials ÷ peer, {db}, c={conns}", f"{v:.2f}×", "≥ 1.2×", v >= 1.2)
        rsa_here = beside("rsa", t, conns)
        if me and rsa_here:
            v = me["rps"] / rsa_here
            target(f"client_credentials ÷ RSA limit, {db}, c={conns}", f"{v:.2f}×", "≥ 0.6×", v >= 0.6)
        me, peer = get("code_exchange", conns, t), get("code_exchange", conns, "peer")
        if me and peer:
            v = me["rps"] / peer["rps"]
            target(f"code exchange ÷ peer, {db}, c={conns}", f"{v:.2f}×", "≥ 1.0×", v >= 1.0)
        me = get("refresh", conns, t)
        if me and rsa_here:
            v = me["rps"] / (rsa_here / 2)
            target(f"refresh ÷ (RSA limit ÷ 2 signatures), {db}, c={conns}", f"{v:.2f}×", "≥ 0.5×", v >= 0.5)
        me, peer = get("introspection", conns, t), get("introspection", conns, "peer")
        if me and peer:
            v = me["rps"] / peer["rps"]
            target(f"introspection ÷ peer, {db}, c={conns}", f"{v:.2f}×", "≥ 2×", v >= 2)
        me = get("password_sign_in", conns, t)
        argon_here = beside("argon2", t, conns)
        if me and argon_here:
            v = me["rps"] / argon_here
            target(f"password sign-in ÷ argon2 limit, {db}, c={conns}", f"{v:.2f}×{hash_split(t, conns)}", "≥ 0.9×", v >= 0.9)
for t in ("tessera-sqlite", "tessera-postgres"):
    db = "SQLite" if t.endswith("sqlite") else "PG"
    for scenario, bound in (("storm_jwks", 5), ("storm_token", 20)):
        for conns in conns_seen:
            me = get(scenario, conns, t)
            if me and me["p99_ms"] is not None:
                # The same paced load on the quiet server just before the storm (where the
                # run has it): the machine's own tail, beside what the storm adds to it.
                quiet = get(scenario.replace("storm_", "quiet_"), conns, t)
                floor = jitters.get(f"limit-jitter beside {t} storm")
                notes = ([f"quiet: {quiet['p99_ms']:.1f} ms"] if quiet else []) + (
                    [f"a 1-ms job: {floor['p99_ms']:.1f} ms"] if floor else [])
                if beside := others_note(t):
                    notes.append(beside)
                measured = f"{me['p99_ms']:.1f} ms" + (f" ({'; '.join(notes)})" if notes else "")
                target(f"{scenario} p99 during the login storm, {db}", measured, f"< {bound} ms", me["p99_ms"] < bound)
    idle = [r for r in rss if r["label"] == f"{t} idle rss"]
    if idle:
        mb = idle[0]["rss_kb"] / 1024
        target(f"idle memory, {db}", f"{mb:.0f} MB", "< 30 MB", mb < 30)
    loaded = [r["rss_kb"] / 1024 for r in rss if r["label"].startswith(t + " ") and "idle" not in r["label"]]
    if loaded:
        target(f"memory under load (max), {db}", f"{max(loaded):.0f} MB", "< 120 MB", max(loaded) < 120)
for conns in conns_seen:
    empty, full = get("code_exchange", conns, "tessera-postgres-empty"), get("code_exchange", conns, "tessera-postgres-10m")
    if empty and full:
        v = full["p99_ms"] / empty["p99_ms"]
        target(f"exchange p99 with 10 M refresh tokens ÷ empty, c={conns}", f"{v:.2f}× ({full['p99_ms']:.1f} vs {empty['p99_ms']:.1f} ms)", "≤ 1.5×", v <= 1.5)

if verdicts:
    print("\n### Targets\n")
    print("| target | measured | bound | |")
    print("| --- | --- | --- | --- |")
    print("\n".join(verdicts))

# ----- chart ---------------------------------------------------------------------------------
if chart_path:
    import math

    conns = 16 if 16 in conns_seen else (conns_seen[0] if conns_seen else 16)
    scenarios = [
        ("discovery", "ceiling"), ("jwks", "ceiling"), ("client_credentials", "rsa"),
        ("code_exchange", "rsa/2"), ("browser_flow", "rsa/2"), ("refresh", "rsa/2"), ("userinfo", None),
        ("introspection", None), ("password_sign_in", "argon2"),
    ]
    series = [("tessera-sqlite", "Tessera · SQLite", "#2b6cb0"), ("tessera-postgres", "Tessera · PostgreSQL", "#2f855a"),
              ("peer", "oidc-provider (Node 24)", "#c05621"), ("limit", "physical limit", "#718096")]

    def limit_of(scenario, kind):
        ceiling = ceiling_for(scenario, conns)
        return {"ceiling": ceiling and ceiling["rps"], "rsa": rsa, "rsa/2": rsa and rsa / 2, "argon2": argon}.get(kind)

    bars = []
    for scenario, kind in scenarios:
        values = [get(scenario, conns, t) and get(scenario, conns, t)["rps"] for t, _, _ in series[:3]]
        values.append(limit_of(scenario, kind) if kind else None)
        if any(values):
            bars.append((scenario, values))
    lo, hi = 10, 10 ** math.ceil(math.log10(max([v for _, vs in bars for v in vs if v] + [100])))
    left, width, bar_h, gap = 170, 560, 9, 14
    group_h = bar_h * len(series) + gap
    height = 60 + group_h * len(bars) + 40
    x = lambda v: left + width * (math.log10(max(v, lo)) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 40}" height="{height}" font-family="sans-serif" font-size="11">',
           f'<text x="{left}" y="18" font-size="13" font-weight="bold">Requests/s at {conns} connections (log scale), one run</text>']
    for i, (_, label, colour) in enumerate(series):
        out.append(f'<rect x="{left + i * 140}" y="28" width="10" height="10" fill="{colour}"/><text x="{left + i * 140 + 14}" y="37">{label}</text>')
    decade = lo
    while decade <= hi:
        out.append(f'<line x1="{x(decade):.1f}" y1="50" x2="{x(decade):.1f}" y2="{height - 30}" stroke="#e2e8f0"/>')
        out.append(f'<text x="{x(decade):.1f}" y="{height - 16}" text-anchor="middle">{decade:,}</text>')
        decade *= 10
    for g, (scenario, values) in enumerate(bars):
        top = 56 + g * group_h
        out.append(f'<text x="{left - 8}" y="{top + bar_h * 2 + 3}" text-anchor="end">{scenario.replace("_", " ")}</text>')
        for i, v in enumerate(values):
            if not v:
                continue
            y = top + i * bar_h
            out.append(f'<rect x="{left}" y="{y}" width="{x(v) - left:.1f}" height="{bar_h - 1}" fill="{series[i][2]}"/>')
            out.append(f'<text x="{x(v) + 3:.1f}" y="{y + bar_h - 2}" font-size="9">{v:,.0f}</text>')
    out.append("</svg>")
    with open(chart_path, "w") as f:
        f.write("\n".join(out) + "\n")
