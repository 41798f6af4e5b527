#!/usr/bin/env python3
"""MCP stdio round trips: one `mesh7 --mcp` child (server-everything behind it, over stdio) and
one server-everything child spoken to directly, `tools/call echo` sent to each in turn, one at
a time. Prints {"direct": {...}, "mesh7": {...}} with p50 / p99 / mean in milliseconds.

Standard library only; run by benches/harness.py (scenario 3), or by hand:
  stdio_roundtrip.py --mesh7 target/release/mesh7 --config mesh7.yaml \
      --node tests/deps/node_modules/.bin/node --everything .../server-everything/dist/index.js
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


class Peer:
    """A newline-delimited JSON-RPC peer on a child's stdin / stdout."""

    def __init__(self, cmd, cwd=None):
        self.proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env={**os.environ, "MESH7_LOG": "warn"})
        self.next_id = 0

    def request(self, method, params):
        self.next_id += 1
        rid = self.next_id
        msg = {"jsonrpc": "2.0", "id": rid, "method": method, "params": params}
        self.proc.stdin.write(json.dumps(msg, separators=(",", ":")).encode() + b"\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                sys.exit(f"{method}: the child closed its stdout")
            reply = json.loads(line)
            if reply.get("id") == rid and "method" not in reply:
                if "error" in reply:
                    sys.exit(f"{method}: {reply['error']}")
                return reply["result"]

    def notify(self, method):
        self.proc.stdin.write(json.dumps({"jsonrpc": "2.0", "method": method}).encode() + b"\n")
        self.proc.stdin.flush()

    def initialize(self):
        # The revision mesh7 speaks to its upstreams, so both sides ask the server the same.
        self.request("initialize", {"protocolVersion": "2025-11-25", "capabilities": {},
                                    "clientInfo": {"name": "mesh7-bench", "version": "1"}})
        self.notify("notifications/initialized")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def stats(samples):
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return {"p50": statistics.median(s), "p99": pick(0.99), "mean": statistics.fmean(s), "n": len(s)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh7", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--node", required=True)
    ap.add_argument("--everything", required=True)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()

    config = Path(args.config)
    direct = Peer([args.node, args.everything, "stdio"])
    mesh = Peer([args.mesh7, "--mcp", "--config", str(config), "--mcp-agent", "bench"],
                cwd=config.parent)
    peers = {"direct": (direct, "echo"), "mesh7": (mesh, "everything.echo")}
    try:
        for peer, _ in peers.values():
            peer.initialize()
        # mesh7 lists the upstream's tools once it has connected to it.
        deadline = time.monotonic() + 30
        while not any(t["name"] == "everything.echo" for t in mesh.request("tools/list", {})["tools"]):
            if time.monotonic() > deadline:
                sys.exit("mesh7 --mcp: everything.echo never appeared in tools/list")
            time.sleep(0.1)
        samples = {name: [] for name in peers}
        for i in range(args.warmup + args.calls):
            order = list(peers) if i % 2 == 0 else list(reversed(peers))
            for name in order:
                peer, tool = peers[name]
                # Distinct arguments: mesh7's loop detection stays on.
                params = {"name": tool, "arguments": {"message": f"hello {i}"}}
                t0 = time.perf_counter_ns()
                result = peer.request("tools/call", params)
                elapsed = (time.perf_counter_ns() - t0) / 1e6
                if result.get("isError") or f"hello {i}" not in json.dumps(result):
                    sys.exit(f"{name}: unexpected result {result}")
                if i >= args.warmup:
                    samples[name].append(elapsed)
        print(json.dumps({name: stats(s) for name, s in samples.items()}))
    finally:
        for peer, _ in peers.values():
            peer.close()


if __name__ == "__main__":
    main()
