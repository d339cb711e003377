"""SWIM + Lifeguard parameters: every default is written here once, with its reason.

The probing defaults follow DESIGN.md (T = 1 s, 0.5 s ping timeout, k = 3) and
HashiCorp memberlist's LAN profile, which has years of production behind it. Where
we deviate from memberlist the reason is stated next to the field; the measured
consequences are in docs/membership.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

FallbackPing = Literal["datagram", "stream", "off"]


@dataclass(frozen=True, slots=True)
class SwimConfig:
    """Tunables of one SWIM member. All times are seconds."""

    # -- failure detection -------------------------------------------------------
    probe_interval: float = 1.0
    """T, the protocol period: one member is probed per period. 1 s bounds the
    expected time until some member probes a crashed one to ~T whatever the
    cluster size, for one ping + ack per node per second (DESIGN.md)."""

    probe_timeout: float = 0.5
    """How long to wait for a direct ack before asking others. Half of T leaves
    the other half for the indirect round trip (4 hops) inside the period; far
    above LAN/metro round trips, so a slow but healthy peer still answers."""

    indirect_checks: int = 3
    """k, intermediaries asked to ping the target when the direct ping fails. With
    5% loss one indirect path fails ~19% of the time; three fail together 0.6%."""

    nack_fraction: float = 0.8
    """An intermediary sends its nack after this fraction of ``probe_timeout``
    without an ack, so the nack reaches the prober before its period ends
    (0.5 + 0.4 s + 2 hops < 1 s). A missing nack then really means *we* are slow
    or cut off (Lifeguard), not that the nack was scheduled too late."""

    fallback_ping: FallbackPing = "datagram"
    """Second direct attempt sent together with the indirect probes. memberlist
    uses a TCP ping here (``"stream"``) to survive networks that drop UDP; we
    default to one more datagram, which costs one packet instead of a connection
    to a possibly dead peer and makes loss-induced false suspicions ~10x rarer.
    ``"stream"`` is available (and in the simulator streams are never lost, so it
    flatters loss experiments); ``"off"`` gives textbook SWIM."""

    # -- dissemination -----------------------------------------------------------
    retransmit_mult: int = 4
    """lambda: each piggybacked update is sent lambda * ceil(log10(n + 1)) times by
    every member that learned it (memberlist's formula; DESIGN.md's 4·log(n+1)).
    Enough for an epidemic to reach every member with high probability."""

    max_datagram: int = 1400
    """Total frame size we allow on a datagram: below the 1500 B Ethernet MTU with
    room for IP/UDP headers, so datagrams are never fragmented."""

    envelope_overhead: int = 80
    """Bytes reserved for the wire layer's AEAD envelope and signature around
    our message; piggybacking fills at most ``max_datagram - envelope_overhead``."""

    max_piggyback: int = 64
    """Most updates accepted in (and sent with) one message. A 1320 B budget holds
    ~30 of the smallest updates, so a longer list is malformed or hostile."""

    gossip_interval: float = 0.2
    """While fresh membership news is queued, push it to ``gossip_nodes`` random
    peers this often, on top of piggybacking on probes. Probe traffic alone
    spreads a death in ~log2(n) probe periods (seconds at n = 20); pushes cut
    that to a fraction of a second (memberlist's LAN default)."""

    gossip_nodes: int = 3
    """Peers per gossip push (memberlist's LAN default)."""

    gossip_transmits: int = 3
    """A claim is pushed only while this node has sent it fewer times than this
    (so about once, to ``gossip_nodes`` peers); its remaining retransmissions
    ride free on probes. Unlike memberlist, which pushes until the retransmit
    limit, this keeps extra messages per news item constant per node: the rate
    of news grows with n (more members, more refuted suspicions), and pushing
    each item lambda*log(n) times made messages per node 1.3x higher at n = 1000
    than at n = 100 (measured, docs/membership.md)."""

    # -- suspicion (Lifeguard) ---------------------------------------------------
    suspicion_mult: float = 1.5
    """alpha: the minimum suspicion timeout is alpha * log10(n) * T. memberlist
    uses 4; we use 1.5 because the minimum only applies once K *independent*
    members confirm the suspicion, which a live node almost never collects, while
    a dead one collects them within seconds. Measured (docs/membership.md): with
    1.5 every member knows of a crash in ~5.5 s at n = 20 and ~7 s at n = 1000
    (5% loss), with no false positive in 600 s; 2 added ~0.7 s at n = 20."""

    suspicion_max_mult: float = 6.0
    """beta: the timeout starts at beta times the minimum and shrinks with
    confirmations. A lone (possibly wrong) accusation therefore waits 6x longer,
    which gives the suspect plenty of time to hear it and refute (memberlist's 6)."""

    suspicion_confirmations: int = 3
    """K, independent confirmations that drive the timeout to its minimum
    (Lifeguard paper's value; capped at n - 2 in small clusters, where fewer
    members could possibly confirm)."""

    awareness_max: int = 8
    """Local health (Lifeguard LHM) saturates at this score; probe interval and
    timeout are multiplied by score + 1, so up to 9x slower when we are the
    problem (starved CPU, lossy NIC) instead of accusing healthy peers."""

    # -- anti-entropy ------------------------------------------------------------
    push_pull_interval: float = 30.0
    """Full state exchange with one random member over the stream transport. It
    repairs whatever gossip missed and heals partitions (DESIGN.md: ~30 s)."""

    push_pull_scale_threshold: int = 32
    """Above this many members the push-pull interval grows by one base interval
    per doubling (memberlist's scaling): each exchange carries O(n) bytes, so this
    keeps state-sync bandwidth per node nearly flat (90 s at 100, 180 s at 1000)."""

    dead_reap_after: float = 3600.0
    """Dead and left members stay as tombstones this long: a stale ``alive`` that
    is still circulating cannot resurrect them, and reconnect attempts to dead
    members (partition healing) keep a target list for an hour."""

    # -- bootstrap and peers -----------------------------------------------------
    min_live_peers: int = 4
    """Below this many live peers we emit ``NeedPeers`` and re-bootstrap from every
    address we know. k + 1 peers are what a full indirect probe needs."""

    bootstrap_interval: float = 10.0
    """How often, while below ``min_live_peers``, to retry bootstrap contacts."""

    bootstrap_fanout: int = 3
    """How many known addresses (seeds, tombstones) to contact per retry."""

    address_book_size: int = 64
    """Last addresses of departed members remembered for re-bootstrap."""

    leave_fanout: int = 4
    """Members told directly of a graceful leave; with 5% loss all 4 copies are
    lost with probability 6e-6, and piggybacking spreads it further."""

    max_push_pull_members: int = 65536
    """Largest member list accepted in a state exchange (hostile-input bound)."""

    max_incarnation_jump: int = 2**32
    """Claims whose incarnation exceeds what we know by more than this are
    ignored: a peer that is behind by 4 billion refutations is lying or broken,
    and accepting it would let one message exhaust the incarnation space."""

    def __post_init__(self) -> None:
        if not 0 < self.probe_timeout < self.probe_interval:
            raise ValueError("need 0 < probe_timeout < probe_interval")
        if self.indirect_checks < 0 or self.retransmit_mult < 1:
            raise ValueError("indirect_checks >= 0 and retransmit_mult >= 1 required")
        if not 0 < self.nack_fraction <= 1:
            raise ValueError("nack_fraction must be in (0, 1]")
        if self.fallback_ping not in ("datagram", "stream", "off"):
            raise ValueError(f"unknown fallback_ping {self.fallback_ping!r}")
        if self.suspicion_mult <= 0 or self.suspicion_max_mult < 1:
            raise ValueError("suspicion_mult > 0 and suspicion_max_mult >= 1 required")
        if self.max_datagram - self.envelope_overhead < 256:
            raise ValueError("datagram budget too small for SWIM messages")

    # -- derived values (memberlist formulas) ------------------------------------

    def retransmit_limit(self, n: int) -> int:
        """Transmissions per update when the cluster has ``n`` members."""
        return self.retransmit_mult * max(1, math.ceil(math.log10(n + 1)))

    def suspicion_bounds(self, n: int) -> tuple[float, float]:
        """(minimum, maximum) suspicion timeout for a cluster of ``n`` members."""
        scale = max(1.0, math.log10(max(1, n)))
        low = self.suspicion_mult * scale * self.probe_interval
        return low, low * self.suspicion_max_mult

    def push_pull_period(self, n: int) -> float:
        """Push-pull interval, stretched for large clusters."""
        if n <= self.push_pull_scale_threshold:
            return self.push_pull_interval
        doublings = math.ceil(math.log2(n) - math.log2(self.push_pull_scale_threshold))
        return self.push_pull_interval * (doublings + 1)
