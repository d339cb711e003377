"""The wire layer: everything between a protocol message and the bytes on a socket.

The bottom layer of DeepGossip; it imports nothing else from the package.

* :mod:`.message` - typed protocol messages and their validating codec.
* :mod:`.envelope` - :class:`~.envelope.FrameCodec`: frames with AEAD, anti-replay
  windows, process epochs and optional Ed25519 signatures.
* :mod:`.identity` - node key pairs, node ids, signature checks, key books.
* :mod:`.session` - join secrets and the keys derived from them.
* :mod:`.replay` - the sliding anti-replay windows.
* :mod:`.tensor` - pickle-free tensor frames (dense, sparse, fp16, int8).
* :mod:`.limits` - every size limit, with its reason.
* :mod:`.errors` - the :class:`~.errors.WireError` hierarchy every decoder raises.

Submodules are imported explicitly (``from deepgossip.wire.envelope import
FrameCodec``) so that importing one does not pull in numpy or cryptography for
code that needs neither.
"""
