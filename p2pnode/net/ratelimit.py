"""Token buckets per peer: how a node slows a peer down before it bans it.

``PeerBuckets(rate, burst)`` admits, for each peer, ``burst`` messages at once and then
``rate`` per second (``allow(peer, now)``). It keeps at most ``MAX_PEERS`` buckets:
the least recently used goes first, and a peer whose bucket went starts full again, so
forgetting is never harsher than remembering. Time is a parameter (seconds, monotonic).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_PEERS = 4096


class PeerBuckets:
    def __init__(self, rate: float, burst: int, max_peers: int = MAX_PEERS) -> None:
        if rate <= 0 or burst < 1 or max_peers < 1:
            raise ValueError("rate > 0, burst >= 1, max_peers >= 1")
        self.rate, self.burst, self.max_peers = rate, burst, max_peers
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()  # peer -> (tokens, at)

    def allow(self, peer: bytes, now: float) -> bool:
        """Whether ``peer`` may send one more message at ``now``; takes its token if so."""
        tokens, at = self._buckets.pop(peer, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
        ok = tokens >= 1.0
        self._buckets[peer] = (tokens - 1.0 if ok else tokens, now)
        while len(self._buckets) > self.max_peers:
            self._buckets.popitem(last=False)
        return ok
