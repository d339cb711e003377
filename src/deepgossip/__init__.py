"""DeepGossip: peer-to-peer collaborative deep learning over a gossip network."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["Client", "__version__"]


def __getattr__(name: str) -> Any:
    """``deepgossip.Client`` on first use: ``import deepgossip`` stays cheap."""
    if name == "Client":
        from deepgossip.api.client import Client

        return Client
    raise AttributeError(f"module 'deepgossip' has no attribute {name!r}")
