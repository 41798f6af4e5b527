"""Drives mesh7's MCP server with the official Python SDK (`mcp` 2.3.0), as an agent would.

Usage:
    mcp_client.py stdio <workdir> <command> [args...]   # spawns `mesh7 --mcp ...`
    mcp_client.py http <workdir> <url> <authorization>  # a Streamable HTTP endpoint

The server must run tests/mcp_support's governed configuration: `echo.run` allowed,
`writer.run` (touch) denied, `approver.run` (touch) under human_approval, `sleep.run`. Every check is an
assertion; the script prints `ok` and exits 0 only when all of them pass. `<workdir>` is where
the denied and unapproved writes would land if they ran.
"""

import asyncio
import os
import re
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import REQUEST_TIMEOUT

# flux7's text for a call queued for a human, answered at once (approve, then retry).
APPROVAL_REQUIRED = re.compile(
    r"Approval required \(id: ([0-9a-f]{8})\)\. Tool: approver\.run\. Timeout: \d+s\.\n"
    r"Use approval\.resolve with id=\1 and decision=approve or deny\."
)


async def expect_error(call, code):
    try:
        await call
    except MCPError as e:
        assert e.code == code, f"expected JSON-RPC error {code}, got {e.code}: {e.message}"
        return e.message
    raise AssertionError(f"expected JSON-RPC error {code}, got a result")


async def check(session: ClientSession, workdir: str) -> None:
    init = await session.initialize()
    assert init.server_info.name == "flux7-mesh", init.server_info
    assert init.protocol_version == "2025-11-25", init.protocol_version

    listed = await session.list_tools()
    names = [t.name for t in listed.tools]
    assert names == [
        "approver.run",
        "echo.run",
        "sleep.run",
        "writer.run",
        "grant.list",
        "grant.delegate",
        "mesh.catalog",
    ], names
    echo = next(t for t in listed.tools if t.name == "echo.run")
    assert echo.input_schema["type"] == "object", echo.input_schema
    assert "args" in echo.input_schema["properties"], echo.input_schema

    # An allowed call runs the tool and returns its result.
    result = await session.call_tool("echo.run", {"args": ["hello", "mcp"]})
    assert not result.is_error, result
    assert result.content[0].text == "hello mcp\n", result.content
    assert result.structured_content == {"stdout": "hello mcp\n", "stderr": "", "exit_code": 0}

    # A denied call is an error result, and nothing runs.
    denied = os.path.join(workdir, "denied.txt")
    result = await session.call_tool("writer.run", {"args": [denied]})
    assert result.is_error, result
    assert result.content[0].text == "Policy denied: policy=governed tool=writer.run action=deny", result.content
    assert not os.path.exists(denied), "a denied call ran"

    # A call that needs a human is queued and answered at once; nothing runs.
    unapproved = os.path.join(workdir, "unapproved.txt")
    result = await session.call_tool("approver.run", {"args": [unapproved]})
    assert result.is_error, result
    assert APPROVAL_REQUIRED.fullmatch(result.content[0].text), result.content
    assert not os.path.exists(unapproved), "a call needing approval ran"

    # A call the client gives up on (its read timeout): the SDK abandons it and tells the server
    # (`notifications/cancelled`); mesh7 stops the tool and traces the call as cancelled, which
    # the test that runs this script checks.
    slow = session.call_tool("sleep.run", {"args": ["30"]}, read_timeout_seconds=1.0)
    await expect_error(slow, REQUEST_TIMEOUT)

    message = await expect_error(session.call_tool("nope.run", {}), -32602)
    assert message == "Unknown tool: nope.run", message

    # What mcp.Client(mode="auto") sends first: it must get -32601 to fall back.
    await expect_error(session.send_discover("2026-07-28"), -32601)

    await session.send_ping()


async def main() -> None:
    mode, workdir = sys.argv[1], sys.argv[2]
    if mode == "stdio":
        params = StdioServerParameters(
            command=sys.argv[3], args=sys.argv[4:], env={"MESH7_LOG": "warn"}
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await check(session, workdir)
    elif mode == "http":
        url, authorization = sys.argv[3], sys.argv[4]
        http = create_mcp_http_client(headers={"Authorization": authorization})
        async with http, streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await check(session, workdir)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
