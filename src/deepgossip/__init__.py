"""DeepGossip: peer-to-peer collaborative deep learning over a gossip network."""

__version__ = "0.1.0"
