"""Peer exchange (``/p2plend/pex/1.0.0``): tell each peer where we listen, learn whom it
knows, so that a node that knows one peer finds the rest. Every ``PEX_INTERVAL`` and once
per new connection."""

from __future__ import annotations

import logging
from typing import Any, Callable

import trio

from protocol import wire
from protocol.keys import peer_id

from p2pnode.net.connections import Connections
from p2pnode.net.streams import StreamRouter, close
from p2pnode.net.sync import PeerGone, PeerMisbehaved, ask_pex, serve_pex

log = logging.getLogger(__name__)

PEX_INTERVAL = 30.0  # seconds between peer-exchange rounds
MAX_INBOUND = 4  # concurrent inbound pex streams one peer may hold


class PeerExchange:
    def __init__(self, conns: Connections, streams: StreamRouter, *, own_key: bytes,
                 announce_addrs: Callable[[], tuple[str, ...]], count: Callable[[str, int], None]) -> None:
        self.conns = conns
        self.streams = streams
        self.own_key = own_key
        self._announce_addrs = announce_addrs
        self._count = count
        streams.add(wire.PEX_PROTOCOL, "pex", self._serve, MAX_INBOUND)

    async def exchange(self, pk: bytes) -> None:
        """One round with ``pk``: our addresses out, its known peers into the book."""
        stream = None
        try:
            stream = await self.streams.open(pk, wire.PEX_PROTOCOL)
            answer = await ask_pex(stream, self._announce_addrs())
            for other, addrs in answer.peers:
                if other != self.own_key:
                    self.conns.book.learn(other, list(addrs))
            self._count("pex.rounds", 1)
        except PeerMisbehaved as e:
            await self.conns.penalise(pk, "bad_frame", f"pex answer: {e}")
        except (PeerGone, trio.TooSlowError):
            pass
        except Exception as e:
            log.info("peer exchange with %s failed: %s", peer_id(pk), e)
        finally:
            if stream is not None:
                await close(stream)

    async def loop(self, nursery: trio.Nursery) -> None:
        while True:
            await trio.sleep(PEX_INTERVAL)
            for pk in list(self.conns.connected):
                nursery.start_soon(self.exchange, pk)

    async def _serve(self, stream: Any, pk: bytes | None) -> None:
        def hello(addrs: tuple[str, ...]) -> None:
            if pk is not None:
                self.conns.book.learn(pk, list(_usable(addrs, stream)))

        await serve_pex(stream, hello, lambda: self._known(exclude={pk} if pk else set()))

    def _known(self, exclude: set[bytes]) -> wire.Peers:
        me = (self.own_key, self._announce_addrs())
        others = [(r.public_key, tuple(r.addrs[: wire.MAX_ADDRS]))
                  for r in self.conns.book.sample(wire.MAX_PEERS, exclude)]
        return wire.Peers(tuple([me] + others))


def _usable(addrs: tuple[str, ...], stream: Any) -> list[str]:
    """Announced addresses, with a wildcard IP replaced by the one the peer came from."""
    observed = None
    try:
        observed = str(stream.muxed_conn.get_transport_addresses()[0]).split("/")[2]
    except Exception:
        pass
    return wire.usable_addrs(addrs, observed)
