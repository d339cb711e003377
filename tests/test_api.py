"""The application API on a real aiohttp server (127.0.0.1, ephemeral port).

The server runs with ``asyncio.run`` in a background thread; the tests speak to
it with the synchronous :class:`deepgossip.api.client.Client` and, for
malformed requests the client would never send, with raw ``http.client``.
Every bad request must get a clear 4xx and leave the node serving and its
data untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from aiohttp import web

import deepgossip
from deepgossip.api.auth import APP_FILE, ApiAuth, write_token
from deepgossip.api.client import ApiError, Client
from deepgossip.api.formats import TENSOR_TYPE
from deepgossip.api.openapi import openapi_schema
from deepgossip.api.server import build_app
from deepgossip.learn.data import Dataset, load_dataset
from deepgossip.learn.learner import Learner, LearningConfig
from deepgossip.net.sim import SimNetwork
from deepgossip.node import Node
from deepgossip.session import Session
from deepgossip.wire.identity import Identity
from deepgossip.wire.tensor import encode_tensors

CONFIG = LearningConfig(
    model="logreg", input_shape=(1, 8, 8), steps_per_round=20, lr=0.01, max_batch=500
)
MAX_BODY = 256 * 1024


class ServerThread:
    """An aiohttp app served from its own thread and event loop."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = 0
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._loop is not None and self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Api:
    url: str
    token: str
    node: Node
    data_dir: Path

    def client(self, app_id: str | None = "app-a") -> Client:
        return Client(self.url, token_file=self.data_dir / "api-token", app_id=app_id)

    def raw(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        token: str | None = "default",
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", int(self.url.rsplit(":", 1)[1]), timeout=10)
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {self.token if token == 'default' else token}"
        try:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.request(method, path, body=body, headers=all_headers)
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            conn.close()


def _node() -> Node:
    return Node(SimNetwork(), ("127.0.0.1", 9), Identity.generate(), Session("api-test"))


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a node; two threads collapse on a busy 2-core box
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    node = _node()
    node.learner = learner = Learner.open(CONFIG, tmp_path)
    token = write_token(tmp_path)
    auth = ApiAuth(token, tmp_path / APP_FILE)
    with ServerThread(build_app(node, auth=auth, max_body=MAX_BODY)) as server:
        yield Api(server.url, token, node, tmp_path)
    assert learner.store is not None
    learner.store.close()


def _json(payload: Any) -> tuple[bytes, dict[str, str]]:
    return json.dumps(payload).encode(), {"Content-Type": "application/json"}


# -- happy paths -------------------------------------------------------------------------


def test_train_predict_status_with_the_client(api: Api, digits: Dataset) -> None:
    client = api.client()
    assert client.train(digits.train_images[:300], digits.train_labels[:300]) == 300
    assert client.train(digits.train_images[300:310].reshape(10, 64), digits.train_labels[300:310])
    floats = digits.train_images[310:312].astype(np.float64) / 255
    assert client.train(floats.tolist(), digits.train_labels[310:312].tolist()) == 2  # JSON
    learner = api.node.learner
    assert learner is not None and learner.store is not None and learner.store.count == 312
    for _ in range(3):
        learner.train_round()
    classes, probs = client.predict(digits.test_images[:50])
    assert classes.shape == (50,) and probs is not None and probs.shape == (50, 10)
    assert (classes == digits.test_labels[:50]).mean() > 0.7
    only, none = client.predict(digits.test_images[:5], probabilities=False)
    assert none is None and np.array_equal(only, classes[:5])
    json_classes, json_probs = client.predict(digits.test_images[:5].tolist())
    assert np.array_equal(json_classes, classes[:5])
    np.testing.assert_allclose(json_probs, probs[:5], rtol=1e-5)

    status = client.status()
    assert status["id"] == api.node.node_id.hex()
    assert status["updates"] == {"sent": 0, "received": 0, "rejected": 0, "merged": 0}
    assert {"bytes_in", "bytes_out"} <= set(status["traffic"])
    learning = status["learning"]
    assert learning["samples"] == 312 and learning["model_version"] == 3
    assert learning["holdout_accuracy"] > 0.7
    assert client.members() == []
    assert client.health() == {"ok": True}


def test_predict_json_can_omit_probabilities(api: Api, digits: Dataset) -> None:
    body, headers = _json({"inputs": digits.test_images[:3].tolist(), "probabilities": False})
    status, doc = api.raw("POST", "/v1/predict", body, headers)
    assert status == 200 and len(doc["classes"]) == 3 and "probabilities" not in doc


def test_lazy_top_level_export() -> None:
    assert deepgossip.Client is Client
    with pytest.raises(AttributeError):
        deepgossip.NoSuchThing  # noqa: B018


# -- authentication and the one-application rule -----------------------------------------


def test_token_required_except_health(api: Api) -> None:
    assert api.raw("GET", "/v1/health", token=None)[0] == 200
    for path in ("/v1/status", "/v1/members", "/v1/openapi.json"):
        status, doc = api.raw("GET", path, token=None)
        assert status == 401 and doc["error"]["code"] == "unauthorized"
        assert api.raw("GET", path, token="wrong")[0] == 401
    body, headers = _json({"inputs": [[0] * 64], "labels": [1]})
    assert api.raw("POST", "/v1/train", body, headers, token=None)[0] == 401
    with pytest.raises(ApiError) as err:
        Client(api.url, token="nope").status()
    assert err.value.status == 401
    assert (api.data_dir / "api-token").stat().st_mode & 0o777 == 0o600


def test_client_rereads_a_rotated_token_file(api: Api) -> None:
    token_file = api.data_dir / "api-token"
    token_file.write_text("stale-token-of-a-previous-run\n")
    client = Client(api.url, token_file=token_file)
    token_file.write_text(api.token + "\n")  # what a restarted node does
    assert client.status()["ok"]


def test_second_application_is_refused(api: Api, digits: Dataset) -> None:
    first, second = api.client("app-a"), api.client("app-b")
    first.train(digits.train_images[:5], digits.train_labels[:5])
    with pytest.raises(ApiError) as err:
        second.train(digits.train_images[:5], digits.train_labels[:5])
    assert (err.value.status, err.value.code) == (409, "app_conflict")
    assert "app-a" in err.value.message
    with pytest.raises(ApiError):
        second.status()
    assert first.status()["learning"]["samples"] == 5
    assert api.client(None).status()["ok"]  # the token alone (an operator) is served
    assert ApiAuth("t", api.data_dir / APP_FILE).app_id == "app-a"  # survives restarts
    assert api.raw("GET", "/v1/status", headers={"X-DeepGossip-App": "bad id!"})[0] == 400


# -- bad input -----------------------------------------------------------------------------

GOOD = [[0] * 64]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "bad_json"),
        (b"\xff\xfe", "application/json", 400, "bad_json"),
        (b"[" * 100_000, "application/json", 400, "bad_json"),
        (b"[1, 2]", "application/json", 400, "bad_request"),
        (json.dumps({"inputs": GOOD}).encode(), "application/json", 400, "bad_request"),
        (
            json.dumps({"inputs": GOOD, "labels": [1], "extra": 1}).encode(),
            "application/json",
            400,
            "bad_request",
        ),
        (
            json.dumps({"inputs": [[0] * 63], "labels": [1]}).encode(),
            "application/json",
            400,
            "bad_shape",
        ),
        (
            json.dumps({"inputs": [[[0] * 8] * 7], "labels": [1]}).encode(),
            "application/json",
            400,
            "bad_shape",
        ),
        (
            json.dumps({"inputs": GOOD, "labels": [1, 2]}).encode(),
            "application/json",
            400,
            "bad_shape",
        ),
        (
            json.dumps({"inputs": GOOD, "labels": [10]}).encode(),
            "application/json",
            400,
            "label_out_of_range",
        ),
        (
            json.dumps({"inputs": GOOD, "labels": [-1]}).encode(),
            "application/json",
            400,
            "label_out_of_range",
        ),
        (
            json.dumps({"inputs": GOOD, "labels": [1.5]}).encode(),
            "application/json",
            400,
            "bad_dtype",
        ),
        (
            json.dumps({"inputs": [[True] * 64], "labels": [1]}).encode(),
            "application/json",
            400,
            "bad_dtype",
        ),
        (
            json.dumps({"inputs": [["x"] * 64], "labels": [1]}).encode(),
            "application/json",
            400,
            "bad_dtype",
        ),
        (
            json.dumps({"inputs": [[256] * 64], "labels": [1]}).encode(),
            "application/json",
            400,
            "out_of_range",
        ),
        (
            json.dumps({"inputs": [[1.5] * 64], "labels": [1]}).encode(),
            "application/json",
            400,
            "out_of_range",
        ),
        (
            b'{"inputs": [[NaN' + b", 0" * 63 + b']], "labels": [1]}',
            "application/json",
            400,
            "non_finite",
        ),
        (
            b'{"inputs": [[Infinity' + b", 0" * 63 + b']], "labels": [1]}',
            "application/json",
            400,
            "non_finite",
        ),
        (json.dumps({"inputs": [], "labels": []}).encode(), "application/json", 400, "empty_batch"),
        (b"", "application/json", 400, "empty_body"),
        (
            json.dumps({"inputs": [[0] * 64] * 501, "labels": [0] * 501}).encode(),
            "application/json",
            413,
            "batch_too_large",
        ),
        (b"inputs=1", "text/plain", 415, "unsupported_media_type"),
        (b"inputs=1", "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (b"DGTF garbage", TENSOR_TYPE, 400, "bad_frame"),
        (
            encode_tensors(
                {"inputs": np.full((1, 8, 8), np.nan, np.float32), "labels": np.array([1])},
                allow_nonfinite=True,
            ),
            TENSOR_TYPE,
            400,
            "non_finite",
        ),
        (
            encode_tensors({"inputs": np.zeros((1, 8, 8), np.uint8)}),
            TENSOR_TYPE,
            400,
            "bad_request",
        ),
        (
            encode_tensors({"inputs": np.zeros((2, 8, 8), np.uint8), "labels": np.array([1, 99])}),
            TENSOR_TYPE,
            400,
            "label_out_of_range",
        ),
        (
            encode_tensors(
                {"inputs": np.zeros((0, 8, 8), np.uint8), "labels": np.zeros(0, np.int64)}
            ),
            TENSOR_TYPE,
            400,
            "empty_batch",
        ),
    ],
)
def test_bad_train_requests_get_a_clear_4xx(
    api: Api, digits: Dataset, body: bytes, content_type: str, status: int, code: str
) -> None:
    client = api.client()
    client.train(digits.train_images[:3], digits.train_labels[:3])
    got, doc = api.raw("POST", "/v1/train", body, {"Content-Type": content_type})
    assert (got, doc["ok"], doc["error"]["code"]) == (status, False, code), doc
    assert doc["error"]["message"]
    # still serving, nothing half-written
    assert client.status()["learning"]["samples"] == 3
    assert client.train(digits.train_images[3:4], digits.train_labels[3:4]) == 1


def test_oversized_bodies_are_refused_before_reading(api: Api, digits: Dataset) -> None:
    big = np.zeros((2000, 8, 8), np.float32)  # 512 KiB > MAX_BODY
    client = api.client()
    with pytest.raises(ApiError) as err:
        client.train(big, np.zeros(2000, np.int64))
    assert (err.value.status, err.value.code) == (413, "too_large")
    # declared length over the limit: refused from the header alone
    status, doc = api.raw(
        "POST",
        "/v1/train",
        b"{}",
        {"Content-Type": "application/json", "Content-Length": str(10 * MAX_BODY)},
    )
    assert (status, doc["error"]["code"]) == (413, "too_large")
    # no length at all (chunked): aiohttp's client_max_size stops the read
    conn = http.client.HTTPConnection("127.0.0.1", int(api.url.rsplit(":", 1)[1]), timeout=10)
    chunks = (b" " * 65536 for _ in range(8))
    conn.request(
        "POST",
        "/v1/train",
        body=chunks,
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {api.token}"},
        encode_chunked=True,
    )
    response = conn.getresponse()
    assert response.status == 413 and json.loads(response.read())["error"]["code"] == "too_large"
    conn.close()
    assert client.train(digits.train_images[:2], digits.train_labels[:2]) == 2


def test_bad_predict_requests(api: Api) -> None:
    client = api.client()
    with pytest.raises(ApiError) as err:
        client.predict(np.zeros((2, 9, 9), np.uint8))
    assert (err.value.status, err.value.code) == (400, "bad_shape")
    with pytest.raises(ApiError) as err:
        client.predict(np.full((1, 8, 8), np.inf, np.float32))
    assert err.value.code == "non_finite"
    with pytest.raises(ApiError) as err:
        client.predict([])
    assert err.value.code == "empty_batch"
    body, headers = _json({"inputs": GOOD, "probabilities": "no"})
    assert api.raw("POST", "/v1/predict", body, headers)[1]["error"]["code"] == "bad_request"
    assert api.raw("POST", "/v1/predict?probabilities=maybe", *_json({"inputs": GOOD}))[0] == 400
    assert client.predict(np.zeros((1, 64), np.uint8))[0].shape == (1,)


def test_unknown_route_and_method_are_json(api: Api) -> None:
    status, doc = api.raw("GET", "/v1/nope")
    assert status == 404 and doc["error"]["code"] == "not_found"
    status, doc = api.raw("GET", "/v1/train")
    assert status == 405 and doc["error"]["code"] == "method_not_allowed"


def test_node_without_learning(tmp_path: Path) -> None:
    node = _node()
    token = write_token(tmp_path)
    with ServerThread(build_app(node, auth=ApiAuth(token))) as server:
        client = Client(server.url, token=token)
        assert client.status()["learning"] is None
        with pytest.raises(ApiError) as err:
            client.train(np.zeros((1, 8, 8), np.uint8), [1])
        assert (err.value.status, err.value.code) == (409, "learning_disabled")


def test_unreachable_node_raises_api_error() -> None:
    with pytest.raises(ApiError) as err:
        Client("http://127.0.0.1:9", token="x", timeout=2).status()
    assert err.value.status == 0 and err.value.code == "connection_failed"


# -- the OpenAPI document stays true -----------------------------------------------------------


def test_openapi_documents_exactly_the_routes(api: Api) -> None:
    served = api.client().openapi()
    assert served == json.loads(json.dumps(openapi_schema()))
    assert served["openapi"].startswith("3.")
    app = build_app(_node())
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.method != "HEAD" and r.resource is not None
    }
    documented = {(m, p) for p, item in served["paths"].items() for m in item}
    assert routes == documented
    codes = set(
        served["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"][
            "enum"
        ]
    )
    for code in ("unauthorized", "app_conflict", "too_large", "non_finite", "bad_json"):
        assert code in codes
