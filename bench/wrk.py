"""Runs wrk for one scenario and prints one JSON line like the driver's.

usage: wrk.py LABEL URL CONNECTIONS SECONDS [METHOD BODY BASIC_USER:PASS BEARER]
"""
import base64
import json
import os
import re
import subprocess
import sys
import tempfile

label, url, conns, secs = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
method = sys.argv[5] if len(sys.argv) > 5 else "GET"
body = sys.argv[6] if len(sys.argv) > 6 else ""
basic = sys.argv[7] if len(sys.argv) > 7 else ""
bearer = sys.argv[8] if len(sys.argv) > 8 else ""

lua = [f'wrk.method = "{method}"']
if body:
    lua.append(f"wrk.body = {json.dumps(body)}")
    lua.append('wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"')
if basic:
    lua.append(f'wrk.headers["Authorization"] = "Basic {base64.b64encode(basic.encode()).decode()}"')
if bearer:
    lua.append(f'wrk.headers["Authorization"] = "Bearer {bearer}"')
# Count non-2xx answers as errors.
lua.append("errors = 0\nresponse = function(status, headers, body) if status >= 300 then errors = errors + 1 end end")
lua.append('done = function(summary, latency, requests) io.write(string.format("NON2XX %d\\n", summary.errors.status)) end')
with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
    f.write("\n".join(lua) + "\n")
    script = f.name
threads = min(2, conns)
out = subprocess.run(["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{secs}s", "--latency", "-s", script, url],
                     capture_output=True, text=True, timeout=secs + 60).stdout
os.unlink(script)


def ms(text):
    match = re.match(r"([\d.]+)(us|ms|s|m|h)$", text)
    if not match:
        return None
    value, unit = match.groups()
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}[unit]


# Anchored to the "Latency Distribution" lines: "85.50%" in the thread-stats table would
# otherwise match "50%".
p50 = re.search(r"^\s+50%\s+(\S+)$", out, re.M)
p99 = re.search(r"^\s+99%\s+(\S+)$", out, re.M)
rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
total = re.search(r"(\d+) requests in", out)
non2xx = re.search(r"NON2XX (\d+)", out)
sockerr = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sockerr.groups()) if sockerr else 0)
print(json.dumps({
    "label": label, "scenario": "wrk", "connections": conns, "seconds": secs,
    "ok": int(total.group(1)) - errors if total else 0, "errors": errors,
    "rps": round(float(rps.group(1))) if rps else 0,
    "p50_ms": ms(p50.group(1)) if p50 else None, "p99_ms": ms(p99.group(1)) if p99 else None,
}))
