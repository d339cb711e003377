"""Session files, signed registrations, the tracker over real loopback HTTP, and
the sans-I/O tracker client."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from deepgossip.session import Session, SessionError, read_secret
from deepgossip.tracker.client import PeersFound, TrackerClient, TrackerUnreachable
from deepgossip.tracker.registration import Registration, RegistrationError
from deepgossip.tracker.server import Tracker, TrackerConfig, start_tracker
from deepgossip.wire.identity import Identity
from deepgossip.wire.session import new_join_secret, secret_fingerprint

NOW = 1_800_000_000.0


def _session(secret: str | None = None) -> Session:
    return Session(
        "test-session",
        trackers=("http://127.0.0.1:1",),
        secret_sha256=secret_fingerprint(secret) if secret else "",
        sections={"swim": {"protocol_period": 1.0}},
    )


def _reg(identity: Identity, ts: float = NOW, port: int = 9000, **kw: Any) -> Registration:
    return Registration.create(identity, "test-session", ("127.0.0.1", port), None, ts, **kw)


# -- session file -------------------------------------------------------------------


def test_session_round_trips_through_toml(tmp_path: Path) -> None:
    secret = new_join_secret()
    session = _session(secret)
    session.save(tmp_path / "s.toml")
    loaded = Session.load(tmp_path / "s.toml")
    assert loaded == session
    assert secret not in (tmp_path / "s.toml").read_text()
    assert loaded.section("swim") == {"protocol_period": 1.0}
    assert loaded.check_secret(secret) == secret
    with pytest.raises(SessionError, match="does not match"):
        loaded.check_secret(new_join_secret())
    with pytest.raises(SessionError, match="needs its join secret"):
        loaded.check_secret(None)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("not toml [", "not valid TOML"),
        ("[other]\nx = 1", r"needs a \[session\]"),
        ('[session]\nid = "bad id!"', "session id"),
        ('[session]\nid = "a"\ntrackers = "http://x"', "list of URLs"),
        ('[session]\nid = "a"\ntrackers = ["ftp://x"]', "http://"),
        ('[session]\nid = "a"\nsecret = "plain"', "unknown keys"),
        ('[session]\nid = "a"\nsecret_sha256 = "abc"', "64 lowercase hex"),
    ],
)
def test_bad_session_files_get_clear_errors(text: str, match: str) -> None:
    with pytest.raises(SessionError, match=match):
        Session.from_toml(text)


def test_secret_comes_from_file_or_environment(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("DEEPGOSSIP_JOIN_SECRET", "from-env")
    assert read_secret(None) == "from-env"
    (tmp_path / "secret").write_text("from-file\n")
    assert read_secret(tmp_path / "secret") == "from-file"
    with pytest.raises(SessionError, match="cannot read"):
        read_secret(tmp_path / "missing")


# -- registrations ------------------------------------------------------------------


def test_registration_signature_binds_id_key_and_address() -> None:
    me, other = Identity.generate(), Identity.generate()
    reg = _reg(me)
    reg.check()
    assert Registration.from_json(reg.to_json()) == reg
    moved = Registration(**{**reg.__dict__, "address": ("10.0.0.9", 9000)})
    with pytest.raises(RegistrationError, match="bad signature"):
        moved.check()
    stolen = Registration(**{**reg.__dict__, "public_key": other.public_key_bytes})
    with pytest.raises(RegistrationError, match="does not match"):
        stolen.check()


def test_registration_proof_requires_the_join_secret() -> None:
    secret = new_join_secret()
    me = Identity.generate()
    _reg(me, secret=secret).check(secret)
    with pytest.raises(RegistrationError, match="proof"):
        _reg(me).check(secret)
    with pytest.raises(RegistrationError, match="proof"):
        _reg(me, secret=new_join_secret()).check(secret)


@pytest.mark.parametrize(
    "mutation",
    [
        {"node_id": "zz"},
        {"node_id": "00" * 15},
        {"address": ["127.0.0.1"]},
        {"address": ["127.0.0.1", 70000]},
        {"address": ["127.0.0.1", True]},
        {"timestamp": "now"},
        {"signature": 5},
        {"session": None},
    ],
)
def test_malformed_registration_json_is_rejected(mutation: dict[str, Any]) -> None:
    data = {**_reg(Identity.generate()).to_json(), **mutation}
    with pytest.raises(RegistrationError):
        Registration.from_json(data)


# -- tracker table ------------------------------------------------------------------


class FakeClocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = NOW


def _tracker(secret: str | None = None, clocks: FakeClocks | None = None) -> Tracker:
    clocks = clocks or FakeClocks()
    return Tracker(
        _session(secret),
        secret,
        TrackerConfig(ttl=30.0),
        clock=lambda: clocks.mono,
        wall_clock=lambda: clocks.wall,
        rng=random.Random(1),
    )


def test_tracker_expires_registrations_after_ttl() -> None:
    clocks = FakeClocks()
    tracker = _tracker(clocks=clocks)
    ids = [Identity.generate() for _ in range(5)]
    for i, identity in enumerate(ids):
        tracker.register(_reg(identity, port=9000 + i))
    assert len(tracker.sample(10)) == 5
    assert ids[0].node_id not in {p.node_id for p in tracker.sample(10, ids[0].node_id)}
    clocks.mono += 20
    tracker.register(_reg(ids[0], ts=NOW + 20))
    clocks.mono += 15
    assert [p.node_id for p in tracker.live()] == [ids[0].node_id]


def test_tracker_refuses_replays_stale_and_foreign_registrations() -> None:
    tracker = _tracker()
    me = Identity.generate()
    tracker.register(_reg(me, ts=NOW))
    with pytest.raises(RegistrationError, match="replayed"):
        tracker.register(_reg(me, ts=NOW))
    with pytest.raises(RegistrationError, match="clock"):
        tracker.register(_reg(Identity.generate(), ts=NOW - 3600))
    foreign = Registration.create(me, "other", ("127.0.0.1", 1), None, NOW + 1)
    with pytest.raises(RegistrationError, match="wrong session"):
        tracker.register(foreign)
    assert sum(tracker.rejected.values()) == 3


# -- tracker over HTTP --------------------------------------------------------------


def test_tracker_http_endpoints_on_loopback() -> None:
    secret = new_join_secret()

    async def scenario() -> None:
        tracker = Tracker(_session(secret), secret)
        runner, port = await start_tracker(tracker)
        base = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:
                me = Identity.generate()
                good = Registration.create(
                    me,
                    "test-session",
                    ("127.0.0.1", 9),
                    None,
                    __import__("time").time(),
                    secret=secret,
                )
                async with http.post(f"{base}/v1/register", json=good.to_json()) as r:
                    assert r.status == 200
                async with http.post(f"{base}/v1/register", json=good.to_json()) as r:
                    assert r.status == 409
                    assert (await r.json())["error"]["code"] == "rejected"
                unproven = {**good.to_json(), "proof": ""}
                async with http.post(f"{base}/v1/register", json=unproven) as r:
                    assert r.status == 400
                async with http.post(f"{base}/v1/register", data=b"{" * 10) as r:
                    assert r.status == 400
                async with http.post(f"{base}/v1/register", data=b" " * 10_000) as r:
                    assert r.status == 413
                async with http.get(f"{base}/v1/peers?count=5") as r:
                    peers = (await r.json())["peers"]
                assert [Registration.from_json(p).node_id for p in peers] == [me.node_id]
                assert "proof" not in peers[0]
                async with http.get(f"{base}/v1/peers?count=x") as r:
                    assert r.status == 400
                async with http.get(f"{base}/v1/session") as r:
                    assert Session.from_toml(await r.text()) == tracker.session
                async with http.get(f"{base}/v1/health") as r:
                    assert (await r.json())["peers"] == 1
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


# -- client core --------------------------------------------------------------------


def _client(urls: tuple[str, ...] = ("http://t1", "http://t2")) -> TrackerClient:
    me = Identity.generate()
    return TrackerClient(list(urls), lambda: _reg(me), "test-session", rng=random.Random(0))


def test_client_registers_then_fetches_and_verifies_peers() -> None:
    client = _client()
    calls = client.tick(0.0)
    assert [c.kind for c in calls] == ["register", "peers"]
    assert client.tick(0.0) == []  # nothing twice while in flight
    assert client.on_result(calls[0], True, {"ok": True}, 0.1) == []
    assert client.next_deadline() == pytest.approx(10.1)
    good = _reg(Identity.generate(), port=9100).to_json()
    forged = {**_reg(Identity.generate(), port=9101).to_json(), "address": ["6.6.6.6", 1]}
    events = client.on_result(calls[1], True, {"peers": [good, forged, "junk"]}, 0.2)
    assert isinstance(events[0], PeersFound)
    assert [p.address for p in events[0].peers] == [("127.0.0.1", 9100)]
    assert client.rejected_peers == 2


def test_client_backs_off_and_rotates_trackers_on_failure() -> None:
    client = _client()
    waits, urls, now = [], [], 0.0
    for _ in range(8):
        calls = client.tick(now)
        (call,) = [c for c in calls if c.kind == "register"]
        urls.append(call.url.split("/v1")[0])
        (event,) = client.on_result(call, False, None, now)
        assert isinstance(event, TrackerUnreachable)
        for other in calls:
            if other.kind == "peers":
                client.on_result(other, True, {"peers": []}, now)
        waits.append(client._register_at - now)
        now = client._register_at
    assert urls[:4] == ["http://t1", "http://t2", "http://t1", "http://t2"]
    assert waits[0] < waits[3] and max(waits) <= 30.0 * 1.5
    client.want_peers(now)
    assert any(c.kind == "peers" for c in client.tick(now))


def test_client_without_trackers_stays_idle() -> None:
    client = _client(())
    assert client.next_deadline() == float("inf")
    client.want_peers(0.0)
    assert client.tick(0.0) == []
