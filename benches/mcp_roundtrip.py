#!/usr/bin/env python3
"""MCP round trips, direct and through mesh7 in turn, one call at a time: `tools/call echo`
sent to server-everything directly and through mesh7, alternating call by call so both sides
see the same machine at the same moment. Prints {"direct": {...}, "mesh7": {...}} with p50 /
p99 / mean in milliseconds.

- stdio: one `mesh7 --mcp` child (server-everything behind it, over stdio) and one
  server-everything child; with `--relay BACKEND`, also server-everything behind the bench
  backend's `relay` (the thinnest stdio relay: the floor under any stdio proxy).
- `--http DIRECT_URL MESH7_URL`: Streamable HTTP, one keep-alive connection to each `/mcp`.

Standard library only; run by benches/harness.py (scenario 3), or by hand:
  mcp_roundtrip.py --mesh7 target/release/mesh7 --config mesh7.yaml \
      --node tests/deps/node_modules/.bin/node --everything .../server-everything/dist/index.js
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

# The revision mesh7 speaks to its upstreams, so both sides ask the server the same:
# server-everything does more per call at this revision (about 1 ms more for `echo`).
MCP_VERSION = "2025-11-25"


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
        self.request("initialize", {"protocolVersion": MCP_VERSION, "capabilities": {},
                                    "clientInfo": {"name": "mesh7-bench", "version": "1"}})
        self.notify("notifications/initialized")

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


class HttpPeer:
    """A Streamable HTTP session on one keep-alive connection; answers may be JSON or SSE."""

    def __init__(self, url, authorization=None):
        parts = urlsplit(url)
        self.path = parts.path
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
        self.headers = {"Content-Type": "application/json",
                        "Accept": "application/json, text/event-stream"}
        if authorization:
            self.headers["Authorization"] = authorization
        self.next_id = 0

    def post(self, msg):
        self.conn.request("POST", self.path, json.dumps(msg, separators=(",", ":")), self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status not in (200, 202):
            sys.exit(f"POST {self.path}: HTTP {resp.status} {body[:200]!r}")
        return resp, body

    def request(self, method, params):
        self.next_id += 1
        _, body = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": method,
                             "params": params})
        text = body.decode()
        if text.lstrip().startswith("{"):
            return json.loads(text)["result"]
        for line in text.splitlines():
            data = line[5:].strip() if line.startswith("data:") else ""
            # Events without a JSON message (e.g. an empty priming event) are skipped.
            if data.startswith("{"):
                reply = json.loads(data)
                if reply.get("id") == self.next_id:
                    return reply["result"]
        sys.exit(f"{method}: no answer in {text[:200]!r}")

    def initialize(self):
        self.next_id += 1
        resp, _ = self.post({"jsonrpc": "2.0", "id": self.next_id, "method": "initialize",
                             "params": {"protocolVersion": MCP_VERSION, "capabilities": {},
                                        "clientInfo": {"name": "mesh7-bench", "version": "1"}}})
        self.headers["Mcp-Session-Id"] = resp.getheader("mcp-session-id")
        self.headers["Mcp-Protocol-Version"] = MCP_VERSION
        self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def close(self):
        self.conn.close()


def stats(samples):
    s = sorted(samples)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))]
    return {"p50": statistics.median(s), "p99": pick(0.99), "mean": statistics.fmean(s), "n": len(s)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mesh7")
    ap.add_argument("--config")
    ap.add_argument("--node")
    ap.add_argument("--everything")
    ap.add_argument("--http", nargs=2, metavar=("DIRECT_URL", "MESH7_URL"))
    ap.add_argument("--relay", help="the bench backend binary, for its stdio `relay` (stdio only)")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--warmup", type=int, default=200)
    args = ap.parse_args()

    if args.http:
        direct = HttpPeer(args.http[0])
        mesh = HttpPeer(args.http[1], "Bearer agent:bench")
    else:
        config = Path(args.config)
        direct = Peer([args.node, args.everything, "stdio"])
        mesh = Peer([args.mesh7, "--mcp", "--config", str(config), "--mcp-agent", "bench"],
                    cwd=config.parent)
    peers = {"direct": (direct, "echo"), "mesh7": (mesh, "everything.echo")}
    if args.relay and not args.http:
        peers["relay"] = (Peer([args.relay, "relay", args.node, args.everything, "stdio"]), "echo")
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
            # Each peer goes first in turn.
            names = list(peers)
            shift = i % len(names)
            order = names[shift:] + names[:shift]
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
