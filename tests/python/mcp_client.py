"""Calls AllSource's MCP tools over streamable HTTP with the official
Python SDK (`mcp`).

Usage: python mcp_client.py URL TOKEN CALLS_JSON
TOKEN may be "" (no Authorization header). CALLS_JSON is a JSON list of
[tool, arguments]; a name with a slash is another request: resources/list,
resources/read {uri}, prompts/list or prompts/get {name, arguments}. Prints one JSON object:
{"tools": [{"name", "description", "input_schema"}],
 "results": [{"is_error", "text", "structured"} or {"protocol_error", "code"}]}"""

import asyncio
import json
import sys

import httpx2
from mcp import ClientSession, MCPError
from mcp.client.streamable_http import streamable_http_client


async def other(session: ClientSession, name: str, args: dict) -> dict:
    """resources/list, resources/read {uri}, prompts/list, prompts/get {name, arguments}."""
    try:
        if name == "resources/list":
            r = await session.list_resources()
            return {"items": [{"uri": str(x.uri), "name": x.name} for x in r.resources]}
        if name == "resources/read":
            r = await session.read_resource(args["uri"])
            return {"text": "".join(getattr(c, "text", "") for c in r.contents)}
        if name == "prompts/list":
            r = await session.list_prompts()
            return {"items": [{"name": p.name, "description": p.description} for p in r.prompts]}
        if name == "prompts/get":
            r = await session.get_prompt(args["name"], args.get("arguments"))
            return {"text": "".join(getattr(m.content, "text", "") for m in r.messages)}
    except MCPError as e:
        return {"protocol_error": e.error.message, "code": e.error.code}
    raise ValueError(name)


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
                    if "/" in name:
                        out["results"].append(await other(session, name, args))
                        continue
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
