"""Gossip: rumour mongering of item announcements, body pulls, anti-entropy.

The entry point is :class:`RumorCore`, a sans-I/O protocol core registered on a
:class:`~deepgossip.net.host.Host` as ``"gossip"``. See ``docs/gossip.md``.
"""

from deepgossip.gossip.config import DEFAULT_CONFIG, GossipConfig, StoreLimits
from deepgossip.gossip.events import Equivocation, GossipStats, ItemDelivered, KindStats
from deepgossip.gossip.item import ItemMeta, SignFn, VerifyFn, item_id_of, signing_digest
from deepgossip.gossip.rumor import ANTI_ENTROPY, RUMOUR, PeersFn, RumorCore
from deepgossip.gossip.store import ItemStore, PutResult, StoredItem

__all__ = [
    "ANTI_ENTROPY",
    "DEFAULT_CONFIG",
    "RUMOUR",
    "Equivocation",
    "GossipConfig",
    "GossipStats",
    "ItemDelivered",
    "ItemMeta",
    "ItemStore",
    "KindStats",
    "PeersFn",
    "PutResult",
    "RumorCore",
    "SignFn",
    "StoreLimits",
    "StoredItem",
    "VerifyFn",
    "item_id_of",
    "signing_digest",
]
