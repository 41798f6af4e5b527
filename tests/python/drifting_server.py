"""An MCP server on the official Python SDK whose catalogue is read from a file when it starts,
the way a new release of a server changes what its tools say.

Usage: drifting_server.py <catalogue.json>

The file holds {"description": str, "extra": bool, "exit": bool, "annotations": {...}}: the
description of `read`, whether a second tool `send` is listed too, whether the server refuses to
start (exits 1), and the MCP annotations (`readOnlyHint`...) of each tool by name, if any.
Each tool answers with its name and the note it was given.
"""

import json
import sys

from mcp.server.mcpserver import MCPServer
from mcp.types import ToolAnnotations

catalogue = json.load(open(sys.argv[1]))
if catalogue.get("exit"):
    sys.exit(1)

server = MCPServer("notes")
annotations = catalogue.get("annotations", {})


def annotated(name):
    hints = annotations.get(name)
    return ToolAnnotations(**hints) if hints else None


@server.tool(description=catalogue["description"], annotations=annotated("read"))
def read(note: str) -> str:
    return f"read {note}"


if catalogue.get("extra"):

    @server.tool(description="Sends a note to someone.", annotations=annotated("send"))
    def send(note: str) -> str:
        return f"sent {note}"


server.run("stdio")
