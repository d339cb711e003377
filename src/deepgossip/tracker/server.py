"""The tracker: an HTTP bootstrap server that only introduces peers.

It keeps signed registrations in memory with a time to live, hands out random
samples of live ones, and serves the session file. It holds no model, sees no
update and is needed only for first contact: nodes re-register periodically, so a
restarted tracker repopulates itself within one registration period, and nodes
also bootstrap from any peer they know, so its outage does not disturb a running
network.

Endpoints (JSON unless noted):

* ``POST /v1/register``: a signed :class:`Registration`; 200, or 4xx with
  ``{"ok": false, "error": {"code", "message"}}``;
* ``GET /v1/peers?count=K&exclude=<node id hex>``: up to K random live peers;
* ``GET /v1/session``: the session file (TOML);
* ``GET /v1/health``: liveness and the number of live registrations.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from deepgossip.session import Session
from deepgossip.tracker.registration import Registration, RegistrationError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackerConfig:
    ttl: float = 30.0
    """Seconds a registration stays live: three of the nodes' 10 s re-registration
    periods, so one or two lost registrations do not drop a live node."""
    max_clock_skew: float = 300.0
    """Registrations timestamped further than this from the tracker's clock are
    refused: the window in which a captured registration could be replayed."""
    max_peers_per_request: int = 64
    """Enough for any bootstrap; bounds the cost of one request."""
    max_registrations: int = 100_000
    """Memory bound (~1 KB each)."""
    max_body: int = 4096
    """A registration is ~600 bytes of JSON."""


def _error(status: int, code: str, message: str) -> web.Response:
    return web.json_response(
        {"ok": False, "error": {"code": code, "message": message}}, status=status
    )


class Tracker:
    """Registration table plus the aiohttp application serving it."""

    def __init__(
        self,
        session: Session,
        secret: str | None = None,
        config: TrackerConfig | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.session = session
        self.secret = session.check_secret(secret)
        self.config = config or TrackerConfig()
        self._clock = clock
        self._wall = wall_clock
        self._rng = rng or random.Random()
        self._entries: dict[bytes, tuple[Registration, float]] = {}
        self.rejected: Counter[str] = Counter()

    # -- table -------------------------------------------------------------------

    def register(self, reg: Registration) -> None:
        """Accept ``reg`` or raise RegistrationError (with the reason counted)."""
        try:
            if reg.session_id != self.session.session_id:
                raise RegistrationError(f"wrong session {reg.session_id!r}")
            if abs(reg.timestamp - self._wall()) > self.config.max_clock_skew:
                raise RegistrationError("timestamp too far from the tracker's clock")
            reg.check(self.secret)
            previous = self._entries.get(reg.node_id)
            if previous is not None and reg.timestamp <= previous[0].timestamp:
                raise RegistrationError("replayed or out-of-order registration")
            self._expire()
            if previous is None and len(self._entries) >= self.config.max_registrations:
                raise RegistrationError("tracker is full")
        except RegistrationError as exc:
            self.rejected[str(exc).split(" ")[0]] += 1
            raise
        self._entries[reg.node_id] = (reg, self._clock() + self.config.ttl)

    def live(self) -> list[Registration]:
        self._expire()
        return [reg for reg, _ in self._entries.values()]

    def sample(self, count: int, exclude: bytes | None = None) -> list[Registration]:
        peers = [reg for reg in self.live() if reg.node_id != exclude]
        count = max(0, min(count, self.config.max_peers_per_request, len(peers)))
        return self._rng.sample(peers, count)

    def _expire(self) -> None:
        now = self._clock()
        for node_id in [n for n, (_, until) in self._entries.items() if until <= now]:
            del self._entries[node_id]

    # -- HTTP --------------------------------------------------------------------

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.config.max_body)
        app.router.add_post("/v1/register", self._handle_register)
        app.router.add_get("/v1/peers", self._handle_peers)
        app.router.add_get("/v1/session", self._handle_session)
        app.router.add_get("/v1/health", self._handle_health)
        return app

    async def _handle_register(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, "too_large", f"body larger than {self.config.max_body} bytes")
        except ValueError:
            return _error(400, "bad_json", "body is not JSON")
        try:
            reg = Registration.from_json(body)
            self.register(reg)
        except RegistrationError as exc:
            conflict = "replayed" in str(exc)
            return _error(409 if conflict else 400, "rejected", str(exc))
        log.info("registered %s at %s", reg.node_id.hex()[:8], reg.address)
        return web.json_response({"ok": True, "ttl": self.config.ttl})

    async def _handle_peers(self, request: web.Request) -> web.Response:
        try:
            count = int(request.query.get("count", "8"))
            exclude_hex = request.query.get("exclude")
            exclude = bytes.fromhex(exclude_hex) if exclude_hex else None
        except ValueError:
            return _error(400, "bad_query", "count must be an integer, exclude a hex node id")
        peers = self.sample(count, exclude)
        return web.json_response(
            {"ok": True, "peers": [p.to_json(with_proof=False) for p in peers]}
        )

    async def _handle_session(self, _request: web.Request) -> web.Response:
        return web.Response(text=self.session.to_toml(), content_type="application/toml")

    async def _handle_health(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "session": self.session.session_id, "peers": len(self.live())}
        )


async def start_tracker(
    tracker: Tracker, host: str = "127.0.0.1", port: int = 0
) -> tuple[web.AppRunner, int]:
    """Serve ``tracker`` on (host, port); returns the runner and the bound port."""
    runner = web.AppRunner(tracker.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    sockets = site._server.sockets if site._server else []  # type: ignore[union-attr]
    bound = sockets[0].getsockname()[1] if sockets else port
    return runner, bound


def serve(session: Session, secret: str | None, host: str, port: int) -> None:
    """Run a tracker until SIGINT or SIGTERM (the ``deepgossip tracker`` command)."""
    import signal

    async def main() -> None:
        tracker = Tracker(session, secret)
        runner, bound = await start_tracker(tracker, host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"tracker for session {session.session_id!r} on http://{host}:{bound}", flush=True)
        try:
            await stop.wait()
        finally:
            await runner.cleanup()

    asyncio.run(main())
