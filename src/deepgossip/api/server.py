"""The node's HTTP API (aiohttp), on the node's own event loop.

Served on localhost by default: it is the application's door into its node.
Errors are JSON: ``{"ok": false, "error": {"code", "message"}}`` with a 4xx
status, never a stack trace. See ``docs/api.md`` for the contract and
:mod:`deepgossip.api.openapi` for the schema served at ``/v1/openapi.json``.

Nothing slow runs on the event loop: parsing a large JSON body, the data
store's ``fsync`` and the model's forward pass go to worker threads, so the
node keeps answering its peers' pings while an application feeds it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import numpy as np
from aiohttp import web

from deepgossip.api.auth import APP_HEADER, ApiAuth
from deepgossip.api.formats import TENSOR_TYPE, Batch, encode_prediction, parse_batch
from deepgossip.api.openapi import openapi_schema
from deepgossip.learn.datastore import DataError, check_inputs
from deepgossip.node import Node

if TYPE_CHECKING:
    from deepgossip.learn.learner import Learner

__all__ = ["DEFAULT_MAX_BODY", "NODE_KEY", "build_app", "error"]

log = logging.getLogger(__name__)

NODE_KEY = web.AppKey("node", Node)
AUTH_KEY = web.AppKey("auth", ApiAuth)
MAX_BODY_KEY = web.AppKey("max_body", int)
DEFAULT_MAX_BODY: Final = 32 * 1024 * 1024
"""Largest request body: 10,000 28x28 float32 images are 31 MB as a tensor frame,
a few thousand as JSON. Checked from Content-Length before reading, and while
reading (aiohttp's ``client_max_size``) for bodies without one."""
PUBLIC_PATHS: Final = frozenset({"/v1/health"})
"""Paths served without the token (a liveness probe reveals nothing)."""

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status
    )


# -- middlewares -----------------------------------------------------------------------


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DataError as exc:
        return error(exc.status, exc.code, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {413: "too_large"}.get(exc.status, exc.reason.lower().replace(" ", "_"))
        return error(exc.status, code, exc.text or exc.reason)
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return error(500, "internal", "internal error (see the node's log)")


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    auth = request.app.get(AUTH_KEY)
    if auth is None or (request.method == "GET" and request.path in PUBLIC_PATHS):
        return await handler(request)
    result = auth.check(request.headers.get("Authorization"), request.headers.get(APP_HEADER))
    if result.ok:
        return await handler(request)
    response = error(result.status, result.code, result.message)
    if result.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="deepgossip"'
    return response


# -- helpers -----------------------------------------------------------------------------


def _learner(request: web.Request) -> Learner:
    learner = request.app[NODE_KEY].learner
    if learner is None or learner.store is None:
        raise DataError(
            "learning_disabled", "this node does not learn: its session has no [learning]", 409
        )
    return learner


async def _read_body(request: web.Request) -> bytes:
    """The body, refusing an oversized one from its Content-Length before reading."""
    limit = request.app[MAX_BODY_KEY]
    if request.content_length is not None and request.content_length > limit:
        raise DataError("too_large", f"body of {request.content_length} B exceeds {limit} B", 413)
    return await request.read()  # client_max_size bounds bodies without a length


async def _parse(request: web.Request, learner: Learner, with_labels: bool) -> Batch:
    body = await _read_body(request)
    config = learner.config
    max_elements = (config.max_batch + 1) * (1 + int(np.prod(config.input_shape)))
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        None,
        partial(
            parse_batch,
            request.content_type,
            body,
            with_labels=with_labels,
            max_elements=max_elements,
        ),
    )


def _flag(request: web.Request, name: str, default: bool) -> bool:
    value = request.query.get(name)
    if value is None:
        return default
    if value.lower() in ("1", "true", "yes"):
        return True
    if value.lower() in ("0", "false", "no"):
        return False
    raise DataError("bad_request", f"query parameter {name} must be true or false")


# -- handlers ----------------------------------------------------------------------------


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


async def _status(request: web.Request) -> web.Response:
    return web.json_response({"ok": True, **request.app[NODE_KEY].status()})


async def _members(request: web.Request) -> web.Response:
    node = request.app[NODE_KEY]
    return web.json_response({"ok": True, "self": node.node_id.hex(), "members": node.members()})


async def _openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_schema())


async def _train(request: web.Request) -> web.Response:
    learner = _learner(request)
    store = learner.store
    assert store is not None
    batch = await _parse(request, learner, with_labels=True)
    loop = asyncio.get_running_loop()

    # append() validates the whole batch first and returns after the fsync.
    total = await loop.run_in_executor(None, store.append, batch.inputs, batch.labels)
    accepted = len(batch.inputs)
    return web.json_response({"ok": True, "accepted": accepted, "samples": total})


async def _predict(request: web.Request) -> web.StreamResponse:
    learner = _learner(request)
    batch = await _parse(request, learner, with_labels=False)
    with_probabilities = _flag(request, "probabilities", batch.probabilities)
    store = learner.store
    assert store is not None
    limit = learner.config.max_batch

    def check_and_predict() -> np.ndarray:
        images = check_inputs(batch.inputs, store.sample_shape)
        if len(images) > limit:
            raise DataError(
                "batch_too_large", f"{len(images)} samples exceed the limit of {limit}", 413
            )
        return learner.predict(images)

    version = learner.model_version
    probabilities = await asyncio.get_running_loop().run_in_executor(None, check_and_predict)
    classes = probabilities.argmax(axis=1)
    if TENSOR_TYPE in request.headers.get("Accept", ""):
        body = encode_prediction(classes, probabilities if with_probabilities else None)
        return web.Response(
            body=body,
            content_type=TENSOR_TYPE,
            headers={"X-DeepGossip-Model-Version": str(version)},
        )
    payload: dict[str, Any] = {"ok": True, "classes": classes.tolist()}
    if with_probabilities:
        payload["probabilities"] = probabilities.tolist()
    payload["model_version"] = version
    return web.json_response(payload)


ROUTES: Final[tuple[tuple[str, str, Handler], ...]] = (
    ("GET", "/v1/health", _health),
    ("GET", "/v1/status", _status),
    ("GET", "/v1/members", _members),
    ("GET", "/v1/openapi.json", _openapi),
    ("POST", "/v1/train", _train),
    ("POST", "/v1/predict", _predict),
)


def build_app(
    node: Node, *, auth: ApiAuth | None = None, max_body: int = DEFAULT_MAX_BODY
) -> web.Application:
    """The API application for ``node``.

    ``auth`` enforces the token and the one-application rule (see
    :mod:`deepgossip.api.auth`); ``deepgossip node`` always passes one. Without
    it every request is served: only for in-process embedding and tests.
    """
    app = web.Application(client_max_size=max_body, middlewares=[_json_errors, _authenticate])
    app[NODE_KEY] = node
    app[MAX_BODY_KEY] = max_body
    if auth is not None:
        app[AUTH_KEY] = auth
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    return app
