"""Every default of the gossip layer, written once, each with its reason.

The figures behind the choices are in ``docs/gossip.md`` (measured with
``deepgossip bench gossip``). Rumour mongering follows Demers et al. 1987
("Epidemic algorithms for replicated database maintenance"): push with
feedback + counter loss of interest, anti-entropy as the backstop.
"""

from __future__ import annotations

from dataclasses import dataclass, field

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class StoreLimits:
    """Bounds of the content-addressed item store.

    Items are collected oldest first (by local receipt time) when they are older
    than ``max_age`` or when a count or byte limit would be exceeded. Collected
    ids are remembered as *tombstones* for ``tombstone_ttl`` so a late
    announcement does not make the node fetch (and deliver) them again; after
    that a per-origin sequence *floor* still rejects them.
    """

    max_items: int = 10_000
    """A learning node keeps a few sharing periods of updates from every peer."""
    max_bytes: int = 256 * MIB
    """Bodies are sparse model updates (KiB..MiB); 256 MiB bounds memory per node."""
    max_age: float = 300.0
    """Five minutes: many sharing periods; older updates are stale for mixing."""
    tombstone_ttl: float = 600.0
    """Twice ``max_age``: longer than any honest peer still holds (and offers) the item."""
    max_tombstones: int = 50_000
    """~100 bytes each: about 5 MB in the worst case."""
    max_origins: int = 20_000
    """Per-origin floors kept (least recently used dropped first)."""


@dataclass(frozen=True, slots=True)
class GossipConfig:
    """Tunables of :class:`~deepgossip.gossip.rumor.RumorCore`."""

    # -- rumour mongering ------------------------------------------------------
    round_period: float = 0.2
    """Seconds between push rounds. Longer than a WAN round trip, so the feedback of
    one round arrives before the next one is sent (otherwise the counter lags and
    pushes are wasted), yet short enough that 1000 nodes are reached in ~2 s."""
    fanout: int = 1
    """Peers contacted per round. The residue of push rumour mongering depends on
    the total number of pushes (about e^-m for m pushes per node), not on how they
    are grouped; fanout 1 with eager forwarding is fast enough and costs least."""
    redundancy_limit: int = 3
    """k: lose interest after k pushes the receiver already knew (feedback + counter).
    k=3 leaves a residue around 1% at ~4.5 pushes per node (Demers, table 1)."""
    max_push_rounds: int = 20
    """Hard stop (4 s) when feedback is lost or no peer answers."""
    eager_push: bool = True
    """Push a new rumour at once when it becomes hot instead of waiting for the
    next round: the first generations spread at network latency, not round pace."""
    inline_max_bytes: int = 1024
    """Bodies up to this size ride inside the announcement (and in anti-entropy
    offers), saving a pull and its answer, if the datagram stays within budget."""
    datagram_budget: int = 1200
    """Estimated announcement bytes per push datagram; more hot rumours go in more
    datagrams. With the push wrapper and the frame envelope (header, AEAD tag,
    signature: 125 B) a datagram stays under the 1400 B ``wire`` limit."""
    max_item_bytes: int = 63 * MIB
    """Larger announced sizes are absurd and dropped: a body must fit one stream frame
    (64 MiB in ``wire.limits``) with its envelope."""
    max_kind_len: int = 64
    max_entries_per_message: int = 512
    """Messages listing more entries are dropped as malformed/abusive."""

    # -- body pulls ------------------------------------------------------------
    max_pulls_in_flight: int = 8
    """Pull requests outstanding per node: bounds memory and incoming bandwidth."""
    max_pulls_per_holder: int = 2
    """Per holder, so catch-up spreads over holders instead of choking one donor."""
    pull_batch_items: int = 32
    pull_batch_bytes: int = 1 * MIB
    pull_timeout: float = 2.0
    """Base timeout of a pull; ``size / pull_min_bandwidth`` is added for big bodies."""
    pull_min_bandwidth: float = 1 * MIB
    holder_penalty: float = 10.0
    """A holder whose pull timed out is avoided (for every item) this long."""
    holder_retry: float = 5.0
    """A holder that failed one item may be asked for it again after this long."""
    pending_ttl: float = 120.0
    """A body that could not be fetched this long is forgotten (AE may offer it again)."""
    max_pending: int = 20_000
    max_holders_per_item: int = 16

    # -- anti-entropy ----------------------------------------------------------
    ae_period: float = 2.0
    """Mean seconds between digest exchanges (push-pull) with one random peer. The
    cost is per node and per period, not per item, so it is negligible per item
    in a busy network; 2 s heals the rumour's residue within ~10 rounds."""
    ae_first_delay: float = 0.5
    """A node starting up exchanges its first digest within this (random) delay."""
    ae_catchup_delay: float = 0.2
    """When a peer had more to offer than fit in one reply, the next exchange (with
    another random peer) comes this soon: resumable catch-up spread over donors."""
    catchup_pending_max: int = 256
    """...unless this many bodies are still waiting to be pulled."""
    digest_max_origins: int = 256
    """Origins per digest; more origins are covered in rotating chunks."""
    digest_max_ranges: int = 32
    """Sequence ranges per origin in a digest (holes beyond are simply re-offered)."""
    offer_max_items: int = 256
    """Announcements per anti-entropy reply (newest first)."""
    rekindle_max_age: float = 30.0
    """An item learned through anti-entropy that its donor got less than this long
    ago becomes a hot rumour again (with ``rekindle_redundancy``): after a
    partition heals, fresh items spread at rumour speed; old ones do not."""
    rekindle_redundancy: int = 1

    store: StoreLimits = field(default_factory=StoreLimits)

    def __post_init__(self) -> None:
        if self.round_period <= 0 or self.fanout < 1 or self.redundancy_limit < 1:
            raise ValueError("round_period > 0, fanout >= 1 and redundancy_limit >= 1")
        if self.max_pulls_in_flight < 1 or self.max_pulls_per_holder < 1:
            raise ValueError("pull limits must be >= 1")
        if self.ae_period <= 0:
            raise ValueError("ae_period must be > 0 (math.inf disables anti-entropy)")


DEFAULT_CONFIG = GossipConfig()
