"""Calls AllSource's MCP tools over streamable HTTP with the official
Python SDK (`mcp`).

Usage: python mcp_client.py URL TOKEN CALLS_JSON
TOKEN may be "" (no Authorization header). CALLS_JSON is a JSON list of
[tool, arguments]. Prints one JSON object:
{"tools": [{"name", "description", "input_schema"}],
 "results": [{"is_error", "text", "structured"} or {"protocol_error", "code"}]}"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client


async def main(url: str, token: str, calls: list) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out = {"tools": [], "results": []}
    async with httpx2.AsyncClient(headers=headers, timeout=120) as http:
        async with streamable_http_client(url, http_client=http) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                listed = await session.list_tools()
                out["tools"] = [
                    {"name": t.name, "description": t.description, "input_schema": t.input_schema}
                    for t in listed.tools
                ]
                for name, args in calls:
                    try:
                        r = await session.call_tool(name, args)
                        texts = [c.text for c in r.content if getattr(c, "text", None) is not None]
                        out["results"].append(
                            {"is_error": bool(r.is_error), "text": "\n".join(texts),
                             "structured": r.structured_content}
                        )
                    except MCPError as e:
                        out["results"].append({"protocol_error": e.error.message, "code": e.error.code})
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], json.loads(sys.argv[3])))
