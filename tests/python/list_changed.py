"""Listens, with the official Python SDK (`mcp` 2.3.0), for mesh7 to say its tool list changed.

Usage:
    list_changed.py <url> <authorization> <policy file> <new policy file>

Connects to a Streamable HTTP endpoint (the SDK opens the session's `GET` stream by itself),
lists the tools, replaces the policy file with the new one, waits (bounded) until the server
sends `notifications/tools/list_changed`, and lists the tools again. Prints one JSON line:
{"before": [names], "after": [names], "notified": bool}; exits 1 when no notification came.
"""

import json
import shutil
import sys

import anyio
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import ToolListChangedNotification

WAIT_SECONDS = 60


async def main() -> int:
    url, authorization, policy, new_policy = sys.argv[1:5]
    changed = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, ToolListChangedNotification):
            changed.set()

    http = create_mcp_http_client(headers={"Authorization": authorization})
    async with http, streamable_http_client(url, http_client=http) as (read, write):
        async with ClientSession(read, write, message_handler=on_message) as session:
            await session.initialize()
            before = [t.name for t in (await session.list_tools()).tools]
            shutil.copyfile(new_policy, policy)
            with anyio.move_on_after(WAIT_SECONDS):
                await changed.wait()
            after = [t.name for t in (await session.list_tools()).tools]
    print(json.dumps({"before": before, "after": after, "notified": changed.is_set()}))
    return 0 if changed.is_set() else 1


if __name__ == "__main__":
    sys.exit(anyio.run(main))
