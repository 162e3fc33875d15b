"""Keepalive: every connection is pinged, and one that stops answering is closed, so that
the peer is dialled afresh instead of waited for.

Why (issue 9): a connection whose packets are dropped (a partition, a cable pulled, a
router gone dark) sends neither FIN nor RST. Both ends kept it as live; after the heal
they waited for TCP's retransmission timer, which had backed off to tens of seconds
(every node held every entry 52 s after a 60 s partition healed). A closed connection is
redialled at once and with a capped backoff (``connections.py``), and a new connection
starts a sync pull at once (``node.py``), so convergence follows the heal within seconds.

``Keepalive.run`` promises:

- every ``interval`` seconds each connected peer is pinged with libp2p's ping protocol
  (``/ipfs/ping/1.0.0``, which every libp2p host answers): a new stream, 32 random bytes
  out, the same 32 back; at most one ping per peer is in flight;
- a ping not answered within ``timeout`` seconds, or one that fails (the stream cannot
  be opened, the answer differs), costs the connection its life: ``Connections.drop``
  closes it and marks the peer for a prompt redial. A peer is thus found dead at most
  ``interval + timeout`` seconds after its last packet;
- an answered ping's round trip is kept in ``Connections.connected[pk].ping_ms``, which
  `p2pnode peers` shows;
- nothing it does raises out of it (a failure to ping is a verdict on the connection,
  not an error of the node); it runs as a supervised task all the same.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Callable

import trio

from protocol.keys import peer_id

from p2pnode.clock import Clock
from p2pnode.home import DEFAULT_PING_INTERVAL, DEFAULT_PING_TIMEOUT, PING_INTERVAL_RANGE, PING_TIMEOUT_RANGE
from p2pnode.net.connections import Connections
from p2pnode.net.streams import close

log = logging.getLogger(__name__)

PING_PROTOCOL = "/ipfs/ping/1.0.0"
PING_SIZE = 32  # bytes of a ping, by the protocol
DEFAULT_INTERVAL = DEFAULT_PING_INTERVAL  # seconds between pings of one peer ([network] ping_interval_s)
DEFAULT_TIMEOUT = DEFAULT_PING_TIMEOUT  # seconds a ping may take to come back ([network] ping_timeout_s)


class Keepalive:
    """Pings every peer of ``conns`` over ``host`` (module docstring)."""

    def __init__(self, host: Any, conns: Connections, clock: Clock, *, interval: float = DEFAULT_INTERVAL,
                 timeout: float = DEFAULT_TIMEOUT, count: Callable[[str, int], None]) -> None:
        assert PING_INTERVAL_RANGE[0] <= interval <= PING_INTERVAL_RANGE[1], interval
        assert PING_TIMEOUT_RANGE[0] <= timeout <= PING_TIMEOUT_RANGE[1], timeout
        self.host = host
        self.conns = conns
        self.clock = clock
        self.interval = interval
        self.timeout = timeout
        self._count = count
        self._in_flight: set[bytes] = set()

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            while True:  # bounded by the node's life; each turn pings each peer at most once
                for pk in list(self.conns.connected):
                    if pk not in self._in_flight:
                        self._in_flight.add(pk)
                        nursery.start_soon(self._keep, pk)
                await self.clock.sleep(self.interval)

    async def _keep(self, pk: bytes) -> None:
        try:
            verdict = await self.ping(pk)
        finally:
            self._in_flight.discard(pk)
        if verdict is None:
            return
        if isinstance(verdict, float):
            c = self.conns.connected.get(pk)
            if c is not None:
                c.ping_ms = round(verdict * 1000, 1)
            return
        if pk in self.conns.connected:  # (not already gone while the ping waited)
            self._count("keepalive.dead", 1)
            await self.conns.drop(pk, verdict)

    async def ping(self, pk: bytes) -> float | str | None:
        """One ping of ``pk``: its round trip in seconds, or why the connection is taken
        for dead; None if the peer was no longer connected when it was due."""
        from p2pnode.net.host import peer_id_of

        if pk not in self.conns.connected:
            return None
        payload = secrets.token_bytes(PING_SIZE)
        began = self.clock.monotonic()
        stream = None
        with trio.move_on_after(self.timeout):
            try:
                stream = await self.host.new_stream(peer_id_of(pk), [PING_PROTOCOL])
                await stream.write(payload)
                got = b""
                while len(got) < PING_SIZE:  # a read may return part of what was sent
                    chunk = await stream.read(PING_SIZE - len(got))
                    if not chunk:
                        return "the ping stream ended before the answer"
                    got += chunk
                if got != payload:
                    return "the ping came back changed"
                return self.clock.monotonic() - began
            except Exception as e:
                log.debug("ping %s: %s", peer_id(pk), e)
                return f"ping failed: {type(e).__name__}: {e}"[:200]
            finally:
                if stream is not None:
                    with trio.CancelScope(shield=True):
                        await close(stream)
        return f"no answer to a ping within {self.timeout:g} s"
