"""Anti-replay state: one sliding window per (sender, lane), IPsec style (RFC 4303).

A sender numbers the frames of each *lane* (datagram/stream x unsigned/signed) with
a counter that starts at 0 every time its process starts; each start has a fresh
``epoch`` that is larger than the previous one (microsecond clock in the high bits).
The receiver keeps, per (sender, lane), the newest epoch it has seen, the highest
sequence number accepted in it, and a bitmap of which of the ``width`` numbers below
that have been accepted. Then:

* a higher epoch: the sender restarted; the window starts over from this frame;
* a lower epoch: an old process of the sender; rejected (:class:`StaleEpoch`);
* same epoch, seq above the highest: accepted, the window slides forward;
* same epoch, seq within ``width`` below the highest: accepted once (UDP reorders),
  rejected when seen again;
* same epoch, seq ``width`` or more below the highest: rejected, we cannot tell.

Checking and recording are separate steps: the envelope checks before it spends
time on decryption and records only once the frame has fully authenticated, so a
forged frame can never move a window.

Memory is bounded by ``max_streams`` (least recently used evicted). Evicting a
sender's window means a frame of its *current* epoch recorded before eviction could
be replayed once; with the default (65536 streams, ~300 B each, ~20 MB worst case)
this needs tens of thousands of active peers, and the protocols above are
idempotent for duplicates (SWIM incarnations, content-addressed rumours).

A node whose clock went backwards across a restart presents a smaller epoch than
its previous run and is rejected as stale until receivers forget it (they do when
membership declares it dead and the host calls :meth:`ReplayGuard.forget`).
"""

from __future__ import annotations

from collections import OrderedDict

from deepgossip.wire.errors import Replay, StaleEpoch

__all__ = ["DEFAULT_WINDOW", "ReplayGuard"]

DEFAULT_WINDOW = 1024
"""Accept frames up to 1024 sequence numbers late. A sender's counter is shared by
all its destinations, so a receiver sees a sparse subsequence; 1024 covers ~20 s of
a busy node's datagrams (SWIM pings, acks and gossip at ~50 frames/s), far beyond
any UDP reordering, and costs only 128 B of bitmap per stream."""

DEFAULT_MAX_STREAMS = 65536
"""Most (sender, lane) windows kept: four lanes for each of 16k live peers."""

StreamKey = tuple[bytes, int]


class _Window:
    __slots__ = ("bitmap", "epoch", "top")

    def __init__(self, epoch: int, seq: int) -> None:
        self.epoch = epoch
        self.top = seq
        self.bitmap = 1  # bit i set <=> seq (top - i) accepted


class ReplayGuard:
    """Sliding anti-replay windows for many senders."""

    def __init__(self, width: int = DEFAULT_WINDOW, max_streams: int = DEFAULT_MAX_STREAMS):
        if width < 1:
            raise ValueError("replay window width must be positive")
        self.width = width
        self._mask = (1 << width) - 1
        self._max = max_streams
        self._windows: OrderedDict[StreamKey, _Window] = OrderedDict()

    def check(self, key: StreamKey, epoch: int, seq: int) -> None:
        """Raise :class:`Replay` / :class:`StaleEpoch` if the frame must be dropped.

        Never changes state.
        """
        w = self._windows.get(key)
        if w is None or epoch > w.epoch:
            return  # first frame from this stream, or the sender restarted
        if epoch < w.epoch:
            raise StaleEpoch("frame from an earlier process start of this sender")
        if seq > w.top:
            return
        behind = w.top - seq
        if behind >= self.width:
            raise Replay(f"sequence number {behind} behind the newest, beyond the window")
        if (w.bitmap >> behind) & 1:
            raise Replay("duplicate sequence number")

    def commit(self, key: StreamKey, epoch: int, seq: int) -> None:
        """Record an authenticated frame (after :meth:`check` passed)."""
        self.check(key, epoch, seq)
        w = self._windows.get(key)
        if w is None or epoch > w.epoch:
            self._windows[key] = _Window(epoch, seq)
            self._windows.move_to_end(key)
            if len(self._windows) > self._max:
                self._windows.popitem(last=False)
            return
        self._windows.move_to_end(key)
        if seq > w.top:
            shift = seq - w.top
            w.bitmap = ((w.bitmap << shift) | 1) & self._mask if shift < self.width else 1
            w.top = seq
        else:
            w.bitmap |= 1 << (w.top - seq)

    def forget(self, sender: bytes) -> None:
        """Drop all windows of ``sender`` (e.g. once membership declares it dead)."""
        for key in [k for k in self._windows if k[0] == sender]:
            del self._windows[key]

    def __len__(self) -> int:
        return len(self._windows)
