"""flux7's Python SDK (PyPI flux7-mesh, module mesh7) against a running mesh7 daemon.

Usage: test_sdk.py <base_url> [unittest names...]

The daemon's config (tests/sdk.rs) has CLI tools echo.run (allow), date.run (deny) and say.run
(human_approval, `echo` underneath), no admin token, and is reached over loopback, so the SDK's
control-plane calls (which carry `Bearer agent:<name>`) are accepted as flux7 accepted them.
"""
from __future__ import annotations

import sys
import threading
import time
import unittest
import uuid

try:
    from mesh7 import AgentMesh
    from mesh7.client import Action
except ImportError as e:  # pragma: no cover - environment check
    sys.exit(f"flux7-mesh is not installed in .venv ({e}); run scripts/test-deps")

URL = ""
# Bounds every wait, so a missing feature fails instead of hanging.
WAIT_S = 20.0


def unique(word: str) -> str:
    """Distinct arguments per call, so loop detection never sees a repeat."""
    return f"{word}-{uuid.uuid4().hex[:8]}"


class Background:
    """Runs a blocking SDK call on a thread and hands back its result."""

    def __init__(self, fn, *args):
        self.result = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn, *args), daemon=True)
        self.thread.start()

    def _run(self, fn, *args):
        try:
            self.result = fn(*args)
        except BaseException as e:  # noqa: BLE001 - reported by join()
            self.error = e

    def join(self):
        self.thread.join(WAIT_S)
        if self.thread.is_alive():
            raise AssertionError(f"call still blocked after {WAIT_S}s")
        if self.error is not None:
            raise self.error
        return self.result


class DecisionsAndReads(unittest.TestCase):
    """Calls that need no approval queue."""

    def setUp(self):
        self.bot = AgentMesh(URL, agent="bot", timeout=30)

    def test_decide_returns_each_action(self):
        allow = self.bot.decide("echo.run", {"args": [unique("hi")]})
        self.assertEqual(allow.action, Action.ALLOW)
        self.assertEqual(allow.tool, "echo.run")
        self.assertEqual(allow.error, "")

        deny = self.bot.decide("date.run")
        self.assertEqual(deny.action, Action.DENY)
        self.assertTrue(deny.error, "a deny carries the reason")

        ask = self.bot.decide("say.run", {"args": [unique("x")]})
        self.assertEqual(ask.action, Action.HUMAN_APPROVAL)

        # No rule covers it: fail closed.
        unknown = self.bot.decide("rm.run")
        self.assertEqual(unknown.action, Action.DENY)

    def test_decide_accepts_a_session_id(self):
        d = self.bot.decide("echo.run", {"args": [unique("s")]}, session_id="sdk-session")
        self.assertEqual(d.action, Action.ALLOW)
        sessions = [t.get("session_id") for t in self.bot.traces(limit=10)]
        self.assertIn("sdk-session", sessions)

    def test_call_tool_allow_runs_the_tool(self):
        word = unique("hello")
        d = self.bot.call_tool("echo.run", {"args": [word]})
        self.assertEqual(d.action, Action.ALLOW, d.error)
        # The SDK hands back the raw response text.
        self.assertIn(word, d.result)
        self.assertIn('"policy":"allow"', d.result)

    def test_call_tool_deny_and_unknown(self):
        d = self.bot.call_tool("date.run", {})
        self.assertEqual(d.action, Action.DENY)
        self.assertEqual(d.error, "denied by policy")

        d = self.bot.call_tool("nope.run", {"args": ["x"]})
        self.assertEqual(d.action, Action.ERROR)
        self.assertTrue(d.error.startswith("HTTP 404: "), d.error)
        self.assertIn("unknown tool: nope.run", d.error)

    def test_tools_lists_the_cli_tools(self):
        tools = {t.name: t for t in self.bot.tools()}
        for name in ("echo.run", "date.run", "say.run"):
            self.assertIn(name, tools)
            self.assertEqual(tools[name].source, "cli")

    def test_traces_honours_limit(self):
        for _ in range(3):
            self.bot.decide("echo.run", {"args": [unique("t")]})
        two = self.bot.traces(limit=2)
        self.assertEqual(len(two), 2)
        everything = self.bot.traces()
        self.assertGreaterEqual(len(everything), 3)
        # Most recent first.
        self.assertEqual(two[0]["trace_id"], everything[0]["trace_id"])
        for key in ("trace_id", "agent_id", "tool", "policy"):
            self.assertIn(key, two[0])

    def test_health(self):
        h = self.bot.health()
        self.assertEqual(h["status"], "ok")
        self.assertGreaterEqual(h["tools"], 3)
        self.assertIn("total", h["traces"])
        self.assertTrue(self.bot.is_healthy())
        down = AgentMesh("http://127.0.0.1:9", agent="bot")
        self.assertEqual(down.health(), {"status": "unreachable"})
        self.assertFalse(down.is_healthy())


class ApprovalsAndGrants(unittest.TestCase):
    """The approval queue and grants, resolved by a second SDK client."""

    def setUp(self):
        self.bot = AgentMesh(URL, agent="bot", timeout=60)
        self.reviewer = AgentMesh(URL, agent="reviewer", timeout=30)

    def wait_pending(self, word: str) -> dict:
        """The pending approval whose arguments contain `word`."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            for a in self.reviewer.pending("say.*"):
                if word in str(a.get("params")):
                    return a
            time.sleep(0.05)
        raise AssertionError(f"no pending approval for {word} within {WAIT_S}s")

    def held_call(self, word: str) -> tuple[Background, dict]:
        call = Background(self.bot.call_tool, "say.run", {"args": [word]})
        return call, self.wait_pending(word)

    def test_approve_releases_the_blocked_call(self):
        word = unique("approve-me")
        call, a = self.held_call(word)
        self.assertEqual(len(a["id"]), 16)
        self.assertEqual(a["agent_id"], "bot")
        self.assertEqual(a["tool"], "say.run")
        self.assertEqual(a["status"], "pending")
        self.assertEqual(a["params"], {"args": [word]})
        self.assertIn("remaining", a)

        ids = lambda items: [x["id"] for x in items]  # noqa: E731
        self.assertIn(a["id"], ids(self.reviewer.approvals()))
        self.assertIn(a["id"], ids(self.reviewer.approvals(status="pending", tool="say.*")))
        self.assertNotIn(a["id"], ids(self.reviewer.approvals(tool="echo.*")))
        self.assertIn(a["id"], ids(self.reviewer.pending()))

        detail = self.reviewer.approval_detail(a["id"])
        self.assertEqual(detail["id"], a["id"])
        self.assertEqual(detail["status"], "pending")
        # A unique prefix finds it too.
        self.assertEqual(self.reviewer.approval_detail(a["id"][:8])["id"], a["id"])

        self.assertTrue(self.reviewer.approve(a["id"]))
        d = call.join()
        self.assertEqual(d.action, Action.ALLOW, d.error)
        self.assertIn(word, d.result)
        self.assertIn('"approval_id":"%s"' % a["id"], d.result)

        self.assertEqual(self.reviewer.approval_detail(a["id"])["status"], "approved")
        self.assertNotIn(a["id"], ids(self.reviewer.pending()))
        # Already resolved (409): not 200.
        self.assertFalse(self.reviewer.approve(a["id"]))
        self.assertFalse(self.reviewer.deny(a["id"]))

    def test_deny_refuses_the_blocked_call(self):
        word = unique("deny-me")
        call, a = self.held_call(word)
        self.assertTrue(self.reviewer.deny(a["id"]))
        d = call.join()
        self.assertEqual(d.action, Action.DENY)
        self.assertEqual(self.reviewer.approval_detail(a["id"])["status"], "denied")

    def test_resolve_records_who_why_and_confidence(self):
        word = unique("resolve-me")
        call, a = self.held_call(word)
        self.assertTrue(
            self.reviewer.resolve(
                a["id"],
                "approve",
                resolved_by="supervisor:sdk-test",
                reasoning="read-only echo",
                confidence=0.8,
            )
        )
        self.assertEqual(call.join().action, Action.ALLOW)
        detail = self.reviewer.approval_detail(a["id"])
        self.assertEqual(detail["status"], "approved")
        self.assertEqual(detail["resolved_by"], "supervisor:sdk-test")
        self.assertEqual(detail["reasoning"], "read-only echo")
        self.assertAlmostEqual(detail["confidence"], 0.8)
        self.assertIn("resolved_at", detail)
        self.assertNotIn("remaining", detail)

        word = unique("resolve-deny")
        call, a = self.held_call(word)
        self.assertTrue(self.reviewer.resolve(a["id"], "deny", reasoning="not now"))
        self.assertEqual(call.join().action, Action.DENY)
        detail = self.reviewer.approval_detail(a["id"])
        self.assertEqual((detail["status"], detail["reasoning"]), ("denied", "not now"))

    def test_unknown_approval(self):
        self.assertFalse(self.reviewer.approve("ffffffffffffffff"))
        self.assertFalse(self.reviewer.resolve("ffffffffffffffff", "deny", reasoning="x"))
        with self.assertRaises(Exception):
            self.reviewer.approval_detail("ffffffffffffffff")

    def test_grant_lets_a_human_approval_call_run(self):
        # Its own agent, so this grant can never lift another test's approval.
        grantee = AgentMesh(URL, agent="grantee", timeout=10)
        g = grantee.create_grant("say.*", "10m")
        self.addCleanup(grantee.revoke_grant, g["id"])
        self.assertEqual(len(g["id"]), 16)
        self.assertEqual(g["agent"], "grantee")
        self.assertEqual(g["tools"], "say.*")
        self.assertTrue(g["expires_at"].endswith("Z"), g)
        self.assertIn(g["remaining"], ("10m0s", "9m59s", "9m58s"))
        self.assertIn("granted_by", g)
        self.assertIn(g["id"], [x["id"] for x in self.reviewer.grants()])

        # The grant turns human_approval into allow: the call runs at once.
        word = unique("granted")
        d = grantee.call_tool("say.run", {"args": [word]})
        self.assertEqual(d.action, Action.ALLOW, d.error)
        self.assertIn(word, d.result)
        self.assertEqual(grantee.decide("say.run", {"args": [unique("g")]}).action, Action.ALLOW)
        # Only for the agent it names.
        self.assertEqual(self.bot.decide("say.run").action, Action.HUMAN_APPROVAL)

        self.assertTrue(grantee.revoke_grant(g["id"]))
        self.assertNotIn(g["id"], [x["id"] for x in self.reviewer.grants()])
        self.assertFalse(grantee.revoke_grant(g["id"]))
        self.assertEqual(
            grantee.decide("say.run", {"args": [unique("g")]}).action, Action.HUMAN_APPROVAL
        )

if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: test_sdk.py <base_url> [unittest names...]")
    URL = sys.argv[1]
    unittest.main(argv=[sys.argv[0], "-v", *sys.argv[2:]])
