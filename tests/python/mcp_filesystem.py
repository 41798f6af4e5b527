"""Drives mesh7's MCP server, fronting the official filesystem MCP server as `fs`, with the
official Python SDK (`mcp` 2.3.0).

Usage:
    mcp_filesystem.py stdio <root> <command> [args...]   # spawns `mesh7 --mcp ...`
    mcp_filesystem.py http <root> <url> <authorization>  # a Streamable HTTP endpoint

The server must run the configuration of tests/mcp_upstream.rs: `fs.read_*` allowed,
`fs.write_file` under human_approval. `<root>` is the filesystem server's allowed directory and
holds `notes.txt`. Every check is an assertion; the script prints `ok` and exits 0 only when all
of them pass.
"""

import asyncio
import os
import sys

from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

NOTES = "hello from the filesystem\n"


async def fs_tools(session: ClientSession) -> dict:
    """The `fs.*` tools, waiting (bounded) for the upstream server to finish connecting."""
    for _ in range(300):
        listed = await session.list_tools()
        tools = {t.name: t for t in listed.tools if t.name.startswith("fs.")}
        if "fs.read_text_file" in tools:
            return tools
        await asyncio.sleep(0.1)
    raise AssertionError("the filesystem tools never appeared in tools/list")


async def check(session: ClientSession, root: str) -> None:
    await session.initialize()
    tools = await fs_tools(session)
    assert {"fs.read_text_file", "fs.write_file", "fs.list_directory"} <= set(tools), sorted(tools)
    read = tools["fs.read_text_file"]
    assert read.input_schema["properties"]["path"]["type"] == "string", read.input_schema
    assert read.output_schema is not None, "the upstream outputSchema was dropped"

    # An allowed read returns the upstream result as is; the SDK validates it against the
    # tool's outputSchema, so structuredContent must have come through.
    result = await session.call_tool("fs.read_text_file", {"path": os.path.join(root, "notes.txt")})
    assert not result.is_error, result
    assert result.structured_content == {"content": NOTES}, result.structured_content
    assert result.content[0].text == NOTES, result.content

    # A write that needs a human is an error result and never reaches the server.
    target = os.path.join(root, "new.txt")
    result = await session.call_tool("fs.write_file", {"path": target, "content": "x"})
    assert result.is_error, result
    assert not os.path.exists(target), "written without approval"


async def main() -> None:
    mode, root = sys.argv[1], sys.argv[2]
    if mode == "stdio":
        params = StdioServerParameters(
            command=sys.argv[3], args=sys.argv[4:], env={"MESH7_LOG": "warn"}
        )
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await check(session, root)
    elif mode == "http":
        url, authorization = sys.argv[3], sys.argv[4]
        http = create_mcp_http_client(headers={"Authorization": authorization})
        async with http, streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await check(session, root)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
