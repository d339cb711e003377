"""The tracker client as a sans-I/O state machine.

It decides *when* to talk to a tracker and *what* to ask; the node executes the
:class:`HttpCall` effects it returns (with aiohttp) and feeds each outcome back
through :meth:`TrackerClient.on_result`. Policy:

* register at start, then every ``register_period`` (the tracker's TTL is three
  periods, so a lost registration or two does no harm);
* fetch peers at start and whenever membership reports too few live peers
  (:meth:`want_peers`);
* on failure, try the next tracker URL after an exponential backoff with jitter
  (capped), so a down tracker is not hammered by every node in lock step;
* registrations handed out by a tracker are verified (signature, node id =
  hash of key, session) before they become :class:`PeersFound` events, so a
  faulty or malicious tracker cannot point a node id at another address.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from deepgossip.tracker.registration import Registration, RegistrationError


@dataclass(frozen=True)
class HttpCall:
    """An HTTP request for the node to make; ``kind`` is "register" or "peers"."""

    kind: str
    method: str
    url: str
    json: dict[str, Any] | None = None


@dataclass(frozen=True)
class PeersFound:
    peers: tuple[Registration, ...]


@dataclass(frozen=True)
class TrackerUnreachable:
    url: str
    failures: int


@dataclass(frozen=True)
class TrackerClientConfig:
    register_period: float = 10.0
    """A third of the tracker's default 30 s TTL."""
    peers_per_request: int = 16
    """Enough to seed SWIM; push-pull spreads the rest of the view."""
    backoff_base: float = 0.5
    backoff_max: float = 30.0
    """Retry quickly at first (a tracker starting together with the nodes) but do
    not poll a dead tracker more than twice a minute."""


class TrackerClient:
    def __init__(
        self,
        urls: list[str] | tuple[str, ...],
        make_registration: Callable[[], Registration],
        session_id: str,
        config: TrackerClientConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.urls = [u.rstrip("/") for u in urls]
        self.config = config or TrackerClientConfig()
        self._make_registration = make_registration
        self._session_id = session_id
        self._rng = rng or random.Random()
        self._url_index = 0
        self._failures = 0
        self._register_at = 0.0 if self.urls else math.inf
        self._peers_at = 0.0 if self.urls else math.inf
        self._in_flight: set[str] = set()
        self.own_id: bytes | None = None
        self.rejected_peers = 0

    @property
    def url(self) -> str:
        return self.urls[self._url_index % len(self.urls)]

    def want_peers(self, now: float) -> None:
        """Ask for more peers as soon as possible (membership is below its minimum)."""
        if self.urls:
            self._peers_at = min(self._peers_at, now)

    def next_deadline(self) -> float:
        deadlines = []
        if "register" not in self._in_flight:
            deadlines.append(self._register_at)
        if "peers" not in self._in_flight:
            deadlines.append(self._peers_at)
        return min(deadlines, default=math.inf)

    def tick(self, now: float) -> list[Any]:
        calls: list[Any] = []
        if "register" not in self._in_flight and self._register_at <= now:
            registration = self._make_registration()
            self.own_id = registration.node_id
            calls.append(
                HttpCall("register", "POST", f"{self.url}/v1/register", registration.to_json())
            )
        if "peers" not in self._in_flight and self._peers_at <= now:
            exclude = f"&exclude={self.own_id.hex()}" if self.own_id else ""
            calls.append(
                HttpCall(
                    "peers",
                    "GET",
                    f"{self.url}/v1/peers?count={self.config.peers_per_request}{exclude}",
                )
            )
        for call in calls:
            self._in_flight.add(call.kind)
        return calls

    def on_result(self, call: HttpCall, ok: bool, body: Any, now: float) -> list[Any]:
        """Feed back the outcome of ``call``: ``ok`` and the decoded JSON body."""
        self._in_flight.discard(call.kind)
        if not ok:
            return self._failed(call, now)
        self._failures = 0
        if call.kind == "register":
            self._register_at = now + self.config.register_period
            return []
        self._peers_at = math.inf
        return [PeersFound(tuple(self._verified_peers(body)))]

    def _failed(self, call: HttpCall, now: float) -> list[Any]:
        self._failures += 1
        self._url_index += 1
        delay = min(self.config.backoff_max, self.config.backoff_base * 2**self._failures)
        delay *= self._rng.uniform(0.5, 1.5)
        if call.kind == "register":
            self._register_at = now + delay
        else:
            self._peers_at = now + delay
        return [TrackerUnreachable(call.url, self._failures)]

    def _verified_peers(self, body: Any) -> list[Registration]:
        raw = body.get("peers") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            self.rejected_peers += 1
            return []
        peers = []
        for item in raw[: self.config.peers_per_request * 4]:
            try:
                reg = Registration.from_json(item)
                if reg.session_id != self._session_id:
                    raise RegistrationError("wrong session")
                reg.check()
            except RegistrationError:
                self.rejected_peers += 1
                continue
            if reg.node_id != self.own_id:
                peers.append(reg)
        return peers
