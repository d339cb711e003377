"""The node's HTTP API (aiohttp), on the node's own event loop.

Served on localhost by default: it is the application's door into its node.
Errors are JSON: ``{"ok": false, "error": {"code", "message"}}`` with a 4xx
status, never a stack trace.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deepgossip.node import Node

NODE_KEY = web.AppKey("node", Node)


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status
    )


async def _status(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, **request.app[NODE_KEY].status()})


async def _members(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.json_response({"ok": True, "self": node.node_id.hex(), "members": node.members()})


@web.middleware
async def _json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason.lower().replace(" ", "_"), exc.text or exc.reason)


def build_app(node: Node, max_body: int = 1024 * 1024) -> web.Application:
    app = web.Application(client_max_size=max_body, middlewares=[_json_errors])
    app[NODE_KEY] = node
    app.router.add_get("/v1/status", _status)
    app.router.add_get("/v1/members", _members)
    return app
