#!/usr/bin/env python3
"""The proxy-overhead benchmark of `scripts/bench`: what mesh7 adds to a tool call.

Every scenario measures mesh7 and its direct baseline in the same run, alternating which goes
first, several times; the figures are medians with their spread (min-max over the runs).

  1. POST /tool/{name} (an OpenAPI tool, 1 KB JSON) to the loopback backend, vs the backend:
     latency at fixed offered rates and throughput at saturation.
  2. POST /decide vs a minimal actix-web JSON handler (the framework floor), at saturation.
  3. MCP tools/call to server-everything `echo`: Streamable HTTP through /mcp vs direct
     and stdio through `mesh7 --mcp` vs direct, alternating call by call (mcp_roundtrip.py).
  4. Scenario 1 with 10 and with 10 000 policy rules.
  5. RSS idle, after 10 000 and after 1 000 000 calls (traces in memory and in JSONL).

The load generator is oha (`--output-format json`); each measurement is preceded by a warm-up.
Results go to docs/benchmarks.md (between the `bench:begin` / `bench:end` markers), the plot to
docs/benchmarks-latency.png and the raw numbers to target/bench/results.json.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGENT = "bench"
AUTH = f"Authorization: Bearer agent:{AGENT}"
BODY_LINES = 10_000  # distinct bodies: loop detection sees each one rarely (it stays on)


# ----------------------------------------------------------------------------------------------
# Processes


class Proc:
    """A child process whose stderr is collected; `ready` waits for a line matching a regex."""

    def __init__(self, cmd, ready, env=None, cwd=None, stdin=subprocess.DEVNULL):
        self.cmd = cmd
        self.lines = []
        self.proc = subprocess.Popen(
            cmd,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            stdin=stdin,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self._found = threading.Event()
        self.match = None
        pattern = re.compile(ready)

        def read():
            for line in self.proc.stderr:
                self.lines.append(line.rstrip())
                if len(self.lines) > 200:
                    del self.lines[:100]
                m = pattern.search(line)
                if m and not self._found.is_set():
                    self.match = m
                    self._found.set()

        threading.Thread(target=read, daemon=True).start()
        if not self._found.wait(60):
            self.stop()
            sys.exit(f"{cmd[0]} did not start:\n" + "\n".join(self.lines[-30:]))

    @property
    def pid(self):
        return self.proc.pid

    def rss_mb(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, headers=None, timeout=10):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def scrape(mesh, pattern):
    """The sum of the /metrics samples matching `pattern` (its group 1 is the value)."""
    _, _, body = http("GET", f"{mesh.url}/metrics")
    return sum(int(m.group(1)) for m in re.finditer(pattern, body.decode(), re.M))


def wait_for(cond, what, within=30):
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    sys.exit(f"timed out waiting for {what}")


# ----------------------------------------------------------------------------------------------
# Load generation


class Oha:
    def __init__(self, binary, connections, duration, warmup):
        self.binary = binary
        self.connections = connections
        self.duration = duration
        self.warmup = warmup

    def run(self, url, lines, headers=(), rate=None, count=None, connections=None, duration=None,
            warmup=True):
        """One measurement; returns {rps, p50, p99 (ms), ok, errors, count}."""
        c = connections or self.connections
        base = [self.binary, "--no-tui", "--output-format", "json", "-m", "POST",
                "-T", "application/json", "-Z", str(lines), "-c", str(c)]
        for h in headers:
            base += ["-H", h]
        if rate:
            base += ["-q", str(rate), "--latency-correction"]
        if warmup and self.warmup > 0:
            self._exec(base + ["-z", f"{self.warmup}s", url])
        if count:
            cmd = base + ["-n", str(count), url]
        else:
            cmd = base + ["-z", f"{duration or self.duration}s", "-w", url]
        return self._exec(cmd)

    @staticmethod
    def _exec(cmd):
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"oha failed: {' '.join(cmd)}\n{out.stderr}")
        r = json.loads(out.stdout)
        codes = {int(k): v for k, v in (r.get("statusCodeDistribution") or {}).items()}
        ok = sum(v for k, v in codes.items() if 200 <= k < 300)
        errors = sum(v for k, v in codes.items() if not 200 <= k < 300) + sum(
            (r.get("errorDistribution") or {}).values())
        p = r["latencyPercentiles"]
        return {
            "rps": r["summary"]["requestsPerSec"],
            "p50": (p.get("p50") or 0) * 1000,
            "p99": (p.get("p99") or 0) * 1000,
            "ok": ok,
            "errors": errors,
            "codes": codes,
            "error_kinds": r.get("errorDistribution") or {},
        }


def write_lines(path, make, n=BODY_LINES):
    with open(path, "w") as f:
        for i in range(n):
            f.write(json.dumps(make(i), separators=(",", ":")) + "\n")
    return path


def kb_args(i):
    """About 1 KB of JSON arguments, distinct per line."""
    rnd = random.Random(i)
    return {
        "n": i,
        "customer": f"cust-{rnd.randrange(10**6):06d}",
        "items": [{"sku": f"SKU-{rnd.randrange(10**8):08d}", "qty": rnd.randrange(1, 9),
                   "note": "x" * 40} for _ in range(10)],
        "comment": "y" * 120,
    }


# ----------------------------------------------------------------------------------------------
# Configurations


OPENAPI_SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "bench backend", "version": "1"},
    "paths": {
        "/echo": {
            "post": {
                "operationId": "echo",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object"}}}},
                "responses": {"200": {"description": "the body"}},
            }
        }
    },
}


def policies_yaml(rules):
    """`rules` = 10: one policy, the allow rule last. 10 000: 1 000 policies of ten rules for
    other agents, team and suffix globs and catch-alls (with conditions that fail on the bench
    tool), the allow rule last in evaluation order."""
    if rules <= 10:
        lines = ["policies:", "  - name: bench", "    agent: \"*\"", "    rules:"]
        for r in range(rules - 1):
            lines += [f"      - tools: [\"other{r}.*\"]", "        action: deny"]
        lines += ["      - tools: [\"bench.*\", \"everything.*\"]", "        action: allow"]
        return "\n".join(lines) + "\n"
    lines = ["policies:"]
    policies = rules // 10
    for i in range(policies - 1):
        if i % 50 == 49:
            agent = "*"
        elif i % 8 in (1, 5):
            agent = f"team-{i % 16}-*"
        elif i % 8 == 6:
            agent = f"*-bot-{i % 8}"
        else:
            agent = f"agent-{i}"
        lines += [f"  - name: p{i}", f"    agent: \"{agent}\"", "    rules:"]
        rules_i = [
            (f"[\"server{i}.get\", \"server{i}.get_v2\"]", "allow", None),
            (f"[\"server{i}.admin_{i % 7}\"]", "deny", None),
            (f"[\"server{i}.*\"]", "deny", "{field: params.amount, operator: \">\", value: 1000}"),
            ("[\"*.read_*\"]", "allow", f"{{field: params.path, operator: starts_with, value: /srv/{i}/}}"),
            ("[\"bench.*\"]", "deny", f"{{field: params.customer, operator: ==, value: blocked-{i}}}"),
            ("[\"*.write_file\"]", "human_approval", None),
            ("[\"gmail-*.send_email\"]", "deny", None),
            ("[\"*.delete_*\"]", "deny", None),
            (f"[\"db{i}.query\"]", "allow", None),
            (f"[\"db{i}.*\"]", "deny", None),
        ]
        for tools, action, cond in rules_i:
            lines += [f"      - tools: {tools}", f"        action: {action}"]
            if cond:
                lines += [f"        condition: {cond}"]
    lines += ["  - name: bench", "    agent: \"*\"", "    rules:"]
    for r in range(9):
        lines += [f"      - tools: [\"other{r}.*\"]", "        action: deny"]
    lines += ["      - tools: [\"bench.*\", \"everything.*\"]", "        action: allow"]
    return "\n".join(lines) + "\n"


def mesh7_config(work, name, backend_port=None, everything_url=None, everything_stdio=None,
                 rules=10, trace_file=True, rotate_bytes=1 << 40, port=None):
    d = Path(work) / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "openapi.json").write_text(json.dumps(OPENAPI_SPEC))
    y = [f"port: {port or free_port()}", "server:", "  bind: 127.0.0.1"]
    if trace_file:
        y += ["trace_file: traces.jsonl", "trace:", f"  max_file_bytes: {rotate_bytes}"]
    if backend_port:
        y += ["openapi:", "  - file: openapi.json", f"    backend_url: http://127.0.0.1:{backend_port}",
              "    namespace: bench"]
    if everything_url or everything_stdio:
        y += ["mcp_servers:", "  - name: everything"]
        if everything_url:
            y += ["    transport: streamable-http", f"    url: {everything_url}"]
        else:
            node, js = everything_stdio
            y += ["    transport: stdio", f"    command: {node}", f"    args: [\"{js}\", \"stdio\"]"]
    cfg = d / "mesh7.yaml"
    cfg.write_text("\n".join(y) + "\n" + policies_yaml(rules))
    return cfg


class Mesh7(Proc):
    def __init__(self, binary, config):
        super().__init__([str(binary), "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
                         r"mesh7 listening on (http://\S+)", env={"MESH7_LOG": "warn"},
                         cwd=config.parent)
        self.url = self.match.group(1)
        self.config = config

    def trace_lines(self):
        p = self.config.parent / "traces.jsonl"
        if not p.exists():
            return 0
        with open(p, "rb") as f:
            return sum(1 for _ in f)


# ----------------------------------------------------------------------------------------------
# Statistics


def summary(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def fmt(s, unit="", digits=3):
    if s is None:
        return "–"
    f = f"{{:.{digits}f}}"
    spread = f" ({f.format(s['min'])}–{f.format(s['max'])})" if s["n"] > 1 else ""
    return f"{f.format(s['median'])}{unit}{spread}"


def fmt_rps(s):
    if s is None:
        return "–"
    spread = f" ({s['min']:,.0f}–{s['max']:,.0f})" if s["n"] > 1 else ""
    return f"{s['median']:,.0f}{spread}"


def paired(runs, a, b, key, op):
    return summary([op(r[a][key], r[b][key]) for r in runs])


def check_ok(label, result):
    if result["errors"]:
        sys.exit(f"{label}: {result['errors']} failed requests: {result['codes']} "
                 f"{result['error_kinds']}")


# ----------------------------------------------------------------------------------------------
# Scenarios


def alternate(run_index, pairs):
    """Counterbalanced order: odd runs measure the second target first."""
    return pairs if run_index % 2 == 0 else list(reversed(pairs))


def scenario_tool(ctx, backend_url, proxy_url, mesh):
    """1: /tool/bench.echo vs the backend's /echo, at fixed rates and at saturation; the null
    proxy (benches/backend.rs `/proxy`) shows what any HTTP proxy costs on the machine."""
    through_lines = write_lines(ctx.work / "tool.lines", lambda i: {"params": kb_args(i)})
    direct_lines = write_lines(ctx.work / "echo.lines", kb_args)
    targets = {
        "direct": (f"{backend_url}/echo", direct_lines, ()),
        "proxy": (f"{proxy_url}/proxy", direct_lines, ()),
        "mesh7": (f"{mesh.url}/tool/bench.echo", through_lines, (AUTH,)),
    }
    for name, (url, lines, headers) in targets.items():
        line = Path(lines).read_text().split("\n", 1)[0].encode()
        status, _, body = http("POST", url, line, dict(
            [h.split(": ", 1) for h in headers] + [("Content-Type", "application/json")]))
        if status != 200 or b'"customer"' not in body:
            sys.exit(f"scenario 1 {name}: unexpected answer {status} {body[:300]!r}")
    out = {"rates": {}, "saturation": []}
    answered = 0
    for rate in ctx.rates:
        runs = []
        for i in range(ctx.runs):
            run = {}
            for name in alternate(i, list(targets)):
                url, lines, headers = targets[name]
                r = ctx.oha.run(url, lines, headers, rate=rate)
                check_ok(f"scenario 1 {name} @{rate}", r)
                run[name] = r
            runs.append(run)
            answered += run["mesh7"]["ok"]
            log(f"  1 @{rate}/s run {i + 1}: " + " | ".join(
                f"{n} p50 {run[n]['p50']:.3f} p99 {run[n]['p99']:.3f}" for n in targets) + " ms")
        out["rates"][rate] = runs
    for i in range(ctx.runs):
        run = {}
        for name in alternate(i, list(targets)):
            url, lines, headers = targets[name]
            r = ctx.oha.run(url, lines, headers)
            check_ok(f"scenario 1 {name} saturation", r)
            run[name] = r
        answered += run["mesh7"]["ok"]
        out["saturation"].append(run)
        log(f"  1 saturation run {i + 1}: direct {run['direct']['rps']:,.0f}/s "
            f"proxy {run['proxy']['rps']:,.0f}/s "
            f"mesh7 {run['mesh7']['rps']:,.0f}/s ({run['mesh7']['rps'] / run['direct']['rps']:.2f}x)")
    # Every call the daemon counted (checks and warm-ups included) must be a line of the JSONL
    # file (a fresh one, not rotated) once the writer has caught up.
    counted = ctx.tool_calls_seen(mesh)
    wait_for(lambda: mesh.trace_lines() >= counted, "the trace file to catch up", within=60)
    out["traces"] = {"calls_answered_measured": answered, "calls_counted": counted,
                     "jsonl_lines": mesh.trace_lines(),
                     "lost": scrape(mesh, r"^mesh7_trace_records_lost_total\s+(\d+)"),
                     "write_errors": scrape(mesh, r"^mesh7_trace_write_errors_total\s+(\d+)")}
    return out


def scenario_decide(ctx, backend_url, mesh):
    """2: POST /decide vs the minimal actix-web handler, at saturation."""
    lines = write_lines(ctx.work / "decide.lines",
                        lambda i: {"tool": "bench.echo", "arguments": {"n": i, "q": "abc"}})
    targets = {
        "floor": (f"{backend_url}/decide", (AUTH,)),
        "mesh7": (f"{mesh.url}/decide", (AUTH,)),
    }
    line = Path(lines).read_text().split("\n", 1)[0].encode()
    for name, (url, headers) in targets.items():
        status, _, body = http("POST", url, line, {"Authorization": f"Bearer agent:{AGENT}",
                                                   "Content-Type": "application/json"})
        if status != 200 or b'"allow"' not in body:
            sys.exit(f"scenario 2 {name}: unexpected answer {status} {body[:300]!r}")
    runs = []
    for i in range(ctx.runs):
        run = {}
        for name in alternate(i, list(targets)):
            url, headers = targets[name]
            r = ctx.oha.run(url, lines, headers)
            check_ok(f"scenario 2 {name}", r)
            run[name] = r
        runs.append(run)
        log(f"  2 run {i + 1}: floor {run['floor']['rps']:,.0f}/s mesh7 {run['mesh7']['rps']:,.0f}/s "
            f"({run['mesh7']['rps'] / run['floor']['rps']:.2f}x)")
    return {"saturation": runs}


def scenario_mcp(ctx, everything_url, mesh):
    """3a: tools/call echo over Streamable HTTP, one call at a time, direct and through /mcp
    alternating call by call (mcp_roundtrip.py --http)."""
    runs = []
    for i in range(ctx.runs):
        out = subprocess.run(
            [sys.executable, str(ROOT / "benches" / "mcp_roundtrip.py"), "--http",
             everything_url, f"{mesh.url}/mcp", "--calls", str(ctx.stdio_calls)],
            capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"MCP HTTP round trips failed:\n{out.stderr}")
        run = json.loads(out.stdout)
        runs.append(run)
        log(f"  3 http run {i + 1}: direct p50 {run['direct']['p50']:.3f} mesh7 p50 "
            f"{run['mesh7']['p50']:.3f} ms")
    return {"http": runs}


def scenario_stdio(ctx):
    """3b: sequential stdio round trips, `mesh7 --mcp` vs server-everything, interleaved."""
    cfg = mesh7_config(ctx.work, "stdio", everything_stdio=(str(ctx.node), str(ctx.everything)),
                       trace_file=True, rotate_bytes=10 * 1024 * 1024)
    runs = []
    for i in range(ctx.runs):
        out = subprocess.run(
            [sys.executable, str(ROOT / "benches" / "mcp_roundtrip.py"), "--mesh7", str(ctx.mesh7),
             "--config", str(cfg), "--node", str(ctx.node), "--everything", str(ctx.everything),
             "--relay", str(ctx.backend), "--calls", str(ctx.stdio_calls)],
            capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.exit(f"stdio round trips failed:\n{out.stderr}")
        run = json.loads(out.stdout)
        runs.append(run)
        log(f"  3 stdio run {i + 1}: direct p50 {run['direct']['p50']:.3f} null relay p50 "
            f"{run['relay']['p50']:.3f} mesh7 p50 {run['mesh7']['p50']:.3f} ms")
    return runs


def scenario_rules(ctx, backend_url, backend_port):
    """4: scenario 1 (saturation, and p50/p99 at 2 000 req/s) with 10 vs 10 000 rules."""
    lines = write_lines(ctx.work / "tool.lines", lambda i: {"params": kb_args(i)})
    daemons = {}
    for rules in (10, 10_000):
        cfg = mesh7_config(ctx.work, f"rules-{rules}", backend_port=backend_port, rules=rules)
        daemons[rules] = Mesh7(ctx.mesh7, cfg)
    try:
        runs = []
        for i in range(ctx.runs):
            run = {}
            for rules in alternate(i, [10, 10_000]):
                url = f"{daemons[rules].url}/tool/bench.echo"
                sat = ctx.oha.run(url, lines, (AUTH,))
                check_ok(f"scenario 4 {rules} saturation", sat)
                fixed = ctx.oha.run(url, lines, (AUTH,), rate=2000)
                check_ok(f"scenario 4 {rules} @2000", fixed)
                run[str(rules)] = {"rps": sat["rps"], "p50": fixed["p50"], "p99": fixed["p99"]}
            runs.append(run)
            log(f"  4 run {i + 1}: 10 rules {run['10']['rps']:,.0f}/s p50 {run['10']['p50']:.3f} | "
                f"10k rules {run['10000']['rps']:,.0f}/s p50 {run['10000']['p50']:.3f}")
        return runs
    finally:
        for d in daemons.values():
            d.stop()


def scenario_memory(ctx, backend_port):
    """5: RSS idle, after 10 000 and after 1 000 000 calls at saturation (JSONL on, rotating)."""
    lines = write_lines(ctx.work / "small.lines", lambda i: {"params": {"n": i, "q": "abc"}})
    cfg = mesh7_config(ctx.work, "memory", backend_port=backend_port,
                       rotate_bytes=10 * 1024 * 1024)
    mesh = Mesh7(ctx.mesh7, cfg)
    try:
        url = f"{mesh.url}/tool/bench.echo"
        time.sleep(1)
        out = {"idle_mb": mesh.rss_mb()}
        r = ctx.oha.run(url, lines, (AUTH,), count=10_000, warmup=False)
        check_ok("scenario 5 first 10 000", r)
        out["after_10k_mb"] = mesh.rss_mb()
        rest = ctx.memory_calls - 10_000
        started = time.monotonic()
        r = ctx.oha.run(url, lines, (AUTH,), count=rest, warmup=False)
        check_ok(f"scenario 5 next {rest}", r)
        out["wall_s"] = time.monotonic() - started
        out["rps"] = r["rps"]
        out["calls"] = ctx.memory_calls
        out["after_all_mb"] = mesh.rss_mb()
        log(f"  5: idle {out['idle_mb']:.1f} MB, after 10k {out['after_10k_mb']:.1f} MB, after "
            f"{ctx.memory_calls:,} {out['after_all_mb']:.1f} MB ({out['wall_s']:.0f} s)")
        return out
    finally:
        mesh.stop()


# ----------------------------------------------------------------------------------------------
# Report


def machine_info(ctx):
    def cmd(*args):
        try:
            return subprocess.run(args, capture_output=True, text=True, check=False).stdout.strip()
        except OSError:
            return "?"
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    return {
        "cpu": f"{model}, {os.cpu_count()} logical CPUs, {mem} GiB",
        "kernel": platform.release(),
        "rustc": cmd("rustc", "--version"),
        "mesh7": cmd(str(ctx.mesh7), "--version"),
        "oha": cmd(str(ctx.oha.binary), "--version"),
        "node": cmd(str(ctx.node), "--version"),
        "loadavg_start": ctx.loadavg_start,
        "loadavg_end": Path("/proc/loadavg").read_text().split()[:3],
    }


SCENARIO_KEYS = {"tool": "1", "decide": "2", "mcp": "3", "stdio": "3", "rules": "4", "memory": "5"}


def render(res):
    L = []
    L.append("Figures are medians over the runs of a cell, with min–max in parentheses; latencies "
             "in ms. Direct and mesh7 alternate which goes first from one run to the next. "
             "Generator, mesh7 and servers share the same cores, unpinned.")
    L.append("")
    metas = []
    for key in SCENARIO_KEYS:
        meta = res.get("_meta", {}).get(key)
        if key in res and meta and meta not in metas:
            metas.append(meta)
    for meta in metas:
        m, st = meta["machine"], meta["settings"]
        done = sorted({SCENARIO_KEYS[k] for k in SCENARIO_KEYS if res.get("_meta", {}).get(k) == meta})
        L.append(f"- Scenario{'s' if len(done) > 1 else ''} {', '.join(done)}: run on {meta['date']}, `scripts/bench"
                 + "".join(" " + a for a in meta["argv"]) + f"`: {st['runs']} runs per cell, "
                 f"{st['duration']} s each after a {st['warmup']} s warm-up, {st['connections']} "
                 f"connections (1 for MCP over HTTP). Load average {' '.join(m['loadavg_start'])} at "
                 f"the start, {' '.join(m['loadavg_end'])} at the end.")
    if metas:
        m = metas[-1]["machine"]
        L.append(f"- Machine: {m['cpu']}; Linux {m['kernel']}.")
        L.append(f"- Versions: {m['mesh7']} (release profile), {m['rustc']}, {m['oha']}, "
                 f"Node {m['node']}.")
    L.append("")

    if "tool" in res:
        t = res["tool"]
        L.append("### 1. `POST /tool/{name}` to a loopback backend (1 KB JSON)")
        L.append("")
        L.append("Latency at a fixed offered rate (oha `-q`, latency corrected for coordinated "
                 "omission). *Added* is through minus direct, paired run by run.")
        L.append("")
        L.append("| offered rate | direct p50 | null proxy p50 | mesh7 p50 | mesh7 added p50 | "
                 "direct p99 | null proxy p99 | mesh7 p99 | mesh7 added p99 | null proxy added p50 / p99 |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for rate, runs in t["rates"].items():
            col = lambda n, k: fmt(summary([r[n][k] for r in runs]))
            add = lambda n, k: fmt(paired(runs, n, "direct", k, lambda a, b: a - b))
            L.append(f"| {int(rate):,} req/s | {col('direct', 'p50')} | {col('proxy', 'p50')} | "
                     f"{col('mesh7', 'p50')} | **{add('mesh7', 'p50')}** | {col('direct', 'p99')} | "
                     f"{col('proxy', 'p99')} | {col('mesh7', 'p99')} | **{add('mesh7', 'p99')}** | "
                     f"{add('proxy', 'p50')} / {add('proxy', 'p99')} |")
        L.append("")
        runs = t["saturation"]
        ratio = lambda a, b: fmt(paired(runs, a, b, "rps", lambda x, y: x / y), "x", 2)
        L.append("| saturation | direct | null proxy | mesh7 | mesh7 / direct | null proxy / direct | mesh7 / null proxy |")
        L.append("|---|---|---|---|---|---|---|")
        L.append(f"| throughput (req/s) | {fmt_rps(summary([r['direct']['rps'] for r in runs]))} | "
                 f"{fmt_rps(summary([r['proxy']['rps'] for r in runs]))} | "
                 f"{fmt_rps(summary([r['mesh7']['rps'] for r in runs]))} | **{ratio('mesh7', 'direct')}** | "
                 f"{ratio('proxy', 'direct')} | {ratio('mesh7', 'proxy')} |")
        for k in ("p50", "p99"):
            L.append(f"| {k} at saturation | " + " | ".join(
                fmt(summary([r[n][k] for r in runs])) for n in ("direct", "proxy", "mesh7")) + " | | | |")
        L.append("")
        tr = t["traces"]
        L.append(f"Trace writer: {tr['calls_counted']:,} governed calls (warm-ups included) in this "
                 f"scenario, {tr['jsonl_lines']:,} JSONL lines written: "
                 f"{'none dropped' if tr['jsonl_lines'] >= tr['calls_counted'] else 'RECORDS MISSING'} "
                 f"(`mesh7_trace_records_lost_total` {tr['lost']}, write errors {tr['write_errors']}).")
        L.append("")
    if "decide" in res:
        runs = res["decide"]["saturation"]
        L.append("### 2. `POST /decide` vs a minimal actix-web JSON handler")
        L.append("")
        L.append("| saturation | floor | mesh7 | ratio |")
        L.append("|---|---|---|---|")
        L.append(f"| throughput (req/s) | {fmt_rps(summary([r['floor']['rps'] for r in runs]))} | "
                 f"{fmt_rps(summary([r['mesh7']['rps'] for r in runs]))} | "
                 f"**{fmt(paired(runs, 'mesh7', 'floor', 'rps', lambda a, b: a / b), 'x', 2)}** |")
        L.append(f"| p50 | {fmt(summary([r['floor']['p50'] for r in runs]))} | "
                 f"{fmt(summary([r['mesh7']['p50'] for r in runs]))} | |")
        L.append(f"| p99 | {fmt(summary([r['floor']['p99'] for r in runs]))} | "
                 f"{fmt(summary([r['mesh7']['p99'] for r in runs]))} | |")
        L.append("")
    if "mcp" in res:
        L.append("### 3. MCP `tools/call` to server-everything `echo`")
        L.append("")
        L.append("| transport | direct p50 | mesh7 p50 | added p50 | direct p99 | mesh7 p99 | added p99 |")
        L.append("|---|---|---|---|---|---|---|")
        calls = res["_meta"]["mcp"]["settings"]["stdio_calls"]
        for label, runs in [(f"Streamable HTTP ({calls:,} round trips each, one keep-alive "
                             "connection each)", res["mcp"].get("http")),
                            (f"stdio ({calls:,} round trips each)", res.get("stdio"))]:
            if not runs:
                continue
            L.append(f"| {label} | {fmt(summary([r['direct']['p50'] for r in runs]))} | "
                     f"{fmt(summary([r['mesh7']['p50'] for r in runs]))} | "
                     f"**{fmt(paired(runs, 'mesh7', 'direct', 'p50', lambda a, b: a - b))}** | "
                     f"{fmt(summary([r['direct']['p99'] for r in runs]))} | "
                     f"{fmt(summary([r['mesh7']['p99'] for r in runs]))} | "
                     f"{fmt(paired(runs, 'mesh7', 'direct', 'p99', lambda a, b: a - b))} |")
        L.append("")
        relayed = [r for r in res.get("stdio") or [] if "relay" in r]
        if relayed:
            L.append("The floor under the stdio figures: server-everything behind the thinnest "
                     "stdio relay (`benches/backend.rs relay`: two threads copying bytes, no "
                     "parsing), measured in the same runs, each of the three going first in turn: "
                     f"p50 {fmt(summary([r['relay']['p50'] for r in relayed]))}, "
                     "added over direct "
                     f"**{fmt(paired(relayed, 'relay', 'direct', 'p50', lambda a, b: a - b))}**; "
                     "mesh7 over the relay "
                     f"{fmt(paired(relayed, 'mesh7', 'relay', 'p50', lambda a, b: a - b))}.")
            L.append("")
    if "rules" in res:
        runs = res["rules"]
        L.append("### 4. Policy size: scenario 1 with 10 and 10,000 rules")
        L.append("")
        L.append("| rules | saturation (req/s) | p50 at 2,000 req/s | p99 at 2,000 req/s |")
        L.append("|---|---|---|---|")
        for k in ("10", "10000"):
            L.append(f"| {int(k):,} | {fmt_rps(summary([r[k]['rps'] for r in runs]))} | "
                     f"{fmt(summary([r[k]['p50'] for r in runs]))} | "
                     f"{fmt(summary([r[k]['p99'] for r in runs]))} |")
        L.append(f"| **10,000 / 10** | "
                 f"**{fmt(paired(runs, '10000', '10', 'rps', lambda a, b: a / b), 'x', 2)}** | "
                 f"**{fmt(paired(runs, '10000', '10', 'p50', lambda a, b: a / b), 'x', 2)}** | "
                 f"{fmt(paired(runs, '10000', '10', 'p99', lambda a, b: a / b), 'x', 2)} |")
        L.append("")
    if "memory" in res:
        mm = res["memory"]
        L.append("### 5. Memory (RSS of the mesh7 process)")
        L.append("")
        L.append("| idle | after 10,000 calls | after {:,} calls | ratio | wall time of the run |".format(
            mm["calls"]))
        L.append("|---|---|---|---|---|")
        L.append(f"| {mm['idle_mb']:.1f} MB | {mm['after_10k_mb']:.1f} MB | {mm['after_all_mb']:.1f} MB | "
                 f"**{mm['after_all_mb'] / mm['after_10k_mb']:.2f}x** | {mm['wall_s']:.0f} s "
                 f"({mm['rps']:,.0f} req/s) |")
        L.append("")
        L.append("One run: the small-argument OpenAPI tool at saturation, trace ring of 10 000 "
                 "entries, JSONL on with rotation at 10 MiB, loop detection on (distinct arguments), "
                 "no rate limit.")
        L.append("")
    return "\n".join(L)


def update_doc(path, text):
    doc = path.read_text() if path.exists() else "# Benchmarks\n"
    begin, end = "<!-- bench:begin -->", "<!-- bench:end -->"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        doc = doc[: doc.index(begin)] + block + doc[doc.index(end) + len(end):]
    else:
        doc = doc.rstrip("\n") + "\n\n## Proxy overhead\n\n" + block + "\n"
    path.write_text(doc)


def plot(res, path):
    import matplotlib
    import matplotlib.ticker
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = res["tool"]
    rates = [int(r) for r in t["rates"]]
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    styles = {"direct": ("#1f77b4", "direct to the backend"),
              "proxy": ("#7f7f7f", "through a null proxy"),
              "mesh7": ("#d62728", "through mesh7")}
    for name, (color, label) in styles.items():
        for pct, ls, marker in (("p50", "-", "o"), ("p99", "--", "s")):
            meds, lo, hi = [], [], []
            for rate in t["rates"]:
                s = summary([r[name][pct] for r in t["rates"][rate]])
                meds.append(s["median"])
                lo.append(s["median"] - s["min"])
                hi.append(s["max"] - s["median"])
            ax.errorbar(rates, meds, yerr=[lo, hi], color=color, linestyle=ls, marker=marker,
                        capsize=3, label=f"{label}, {pct}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xticks(rates)
    ax.set_xticklabels([f"{r:,}" for r in rates])
    ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
    ax.set_xlabel("offered rate (req/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("POST /tool (1 KB JSON, loopback backend): latency vs offered rate\n"
                 "median of runs, bars = min–max")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


# ----------------------------------------------------------------------------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


class Ctx:
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mesh7")
    ap.add_argument("--backend")
    ap.add_argument("--oha")
    ap.add_argument("--node")
    ap.add_argument("--everything", help="server-everything's dist/index.js")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--duration", type=int, default=10, help="seconds per measurement")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--rates", default="500,1000,2000,4000,8000")
    ap.add_argument("--stdio-calls", type=int, default=2000)
    ap.add_argument("--memory-calls", type=int, default=1_000_000)
    ap.add_argument("--scenarios", default="1,2,3,4,5")
    ap.add_argument("--doc", default=str(ROOT / "docs" / "benchmarks.md"))
    ap.add_argument("--plot", default=str(ROOT / "docs" / "benchmarks-latency.png"))
    ap.add_argument("--json", default=str(ROOT / "target" / "bench" / "results.json"))
    ap.add_argument("--no-doc", action="store_true",
                    help="print the tables; leave the docs and target/bench/results.json alone")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: rewrite the docs and the plot from target/bench/results.json")
    ap.add_argument("--keep", action="store_true",
                    help="keep the last results (target/bench/results.json) of scenarios not run")
    args = ap.parse_args()

    if args.render:
        res = json.loads(Path(args.json).read_text())
        text = render(res)
        print(text)
        update_doc(Path(args.doc), text)
        if "tool" in res:
            plot(res, args.plot)
        return

    missing = [o for o in ("mesh7", "backend", "oha", "node", "everything") if not getattr(args, o)]
    if missing:
        ap.error("needed to run: " + ", ".join(f"--{o}" for o in missing))
    ctx = Ctx()
    # The options that shape the run, for the report (the tool paths are this machine's).
    paths = {"--mesh7", "--backend", "--oha", "--node", "--everything", "--doc", "--plot", "--json"}
    shown, skip = [], False
    for a in sys.argv[1:]:
        if skip:
            skip = False
        elif a.split("=")[0] in paths:
            skip = "=" not in a
        else:
            shown.append(a)
    ctx.argv = shown
    ctx.mesh7 = Path(args.mesh7).resolve()
    ctx.backend = Path(args.backend).resolve()
    ctx.node = Path(args.node).resolve()
    ctx.everything = Path(args.everything).resolve()
    ctx.oha = Oha(str(Path(args.oha).resolve()), args.connections, args.duration, args.warmup)
    ctx.runs = args.runs
    ctx.rates = [int(r) for r in args.rates.split(",") if r]
    ctx.stdio_calls = args.stdio_calls
    ctx.memory_calls = args.memory_calls
    ctx.loadavg_start = Path("/proc/loadavg").read_text().split()[:3]
    scenarios = set(args.scenarios.split(","))
    work = Path(tempfile.mkdtemp(prefix="mesh7-bench-"))
    ctx.work = work

    def tool_calls_seen(mesh):
        return scrape(mesh, r'^mesh7_calls_total\{[^}]*ingress="http"[^}]*\}\s+(\d+)')

    ctx.tool_calls_seen = tool_calls_seen
    res = {}
    procs = []
    try:
        backend_port = free_port()
        backend = Proc([args.backend, "serve", "--listen", f"127.0.0.1:{backend_port}"],
                       r"backend listening on")
        procs.append(backend)
        backend_url = f"http://127.0.0.1:{backend_port}"
        proxy_port = free_port()
        procs.append(Proc([args.backend, "serve", "--listen", f"127.0.0.1:{proxy_port}",
                           "--proxy-to", f"{backend_url}/echo"], r"backend listening on"))
        proxy_url = f"http://127.0.0.1:{proxy_port}"
        if scenarios & {"1", "2"}:
            cfg = mesh7_config(work, "main", backend_port=backend_port)
            mesh = Mesh7(ctx.mesh7, cfg)
            procs.append(mesh)
            if "1" in scenarios:
                log("scenario 1: /tool vs direct")
                res["tool"] = scenario_tool(ctx, backend_url, proxy_url, mesh)
            if "2" in scenarios:
                log("scenario 2: /decide vs floor")
                res["decide"] = scenario_decide(ctx, backend_url, mesh)
            mesh.stop()
        if "3" in scenarios:
            log("scenario 3: MCP")
            port = free_port()
            everything = Proc([str(ctx.node), str(ctx.everything), "streamableHttp"],
                              r"listening on port", env={"PORT": str(port)})
            procs.append(everything)
            eurl = f"http://127.0.0.1:{port}/mcp"
            cfg = mesh7_config(work, "mcp", everything_url=eurl)
            mesh = Mesh7(ctx.mesh7, cfg)
            procs.append(mesh)
            wait_for(lambda: b"everything.echo" in http(
                "GET", f"{mesh.url}/tools", headers={"Authorization": f"Bearer agent:{AGENT}"})[2],
                     "the upstream tools")
            res["mcp"] = scenario_mcp(ctx, eurl, mesh)
            mesh.stop()
            everything.stop()
            res["stdio"] = scenario_stdio(ctx)
        if "4" in scenarios:
            log("scenario 4: 10 vs 10 000 rules")
            res["rules"] = scenario_rules(ctx, backend_url, backend_port)
        if "5" in scenarios:
            log("scenario 5: memory")
            res["memory"] = scenario_memory(ctx, backend_port)
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)

    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "argv": ctx.argv,
            "machine": machine_info(ctx),
            "settings": {"runs": ctx.runs, "duration": ctx.oha.duration, "warmup": ctx.oha.warmup,
                         "connections": ctx.oha.connections, "stdio_calls": ctx.stdio_calls}}
    res.pop("machine", None)
    res["_meta"] = {key: meta for key in SCENARIO_KEYS if key in res}
    json_path = Path(args.json)
    if args.keep and json_path.exists():
        # Scenarios not run this time keep their last results (and say when they were made).
        previous = json.loads(json_path.read_text())
        if "_meta" not in previous and "machine" in previous:
            # Written before results carried their own settings: those of a default run.
            when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(json_path.stat().st_mtime))
            old = {"date": when, "argv": [], "machine": previous["machine"],
                   "settings": {"runs": 3, "duration": 10, "warmup": 2, "connections": 32,
                                "stdio_calls": 2000}}
            previous["_meta"] = {key: old for key in SCENARIO_KEYS if key in previous}
        for key in SCENARIO_KEYS:
            if key not in res and key in previous and key in previous.get("_meta", {}):
                res[key] = previous[key]
                res["_meta"][key] = previous["_meta"][key]
    if not args.no_doc:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(res, indent=1, default=str))
    text = render(res)
    print(text)
    if not args.no_doc:
        update_doc(Path(args.doc), text)
        if "tool" in res:
            plot(res, args.plot)
        log(f"wrote {args.doc}" + (f" and {args.plot}" if "tool" in res else ""))


if __name__ == "__main__":
    main()
