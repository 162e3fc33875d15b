"""Stream protocols on the host: one handler per protocol, a cap on how many inbound
streams of it one peer may hold at once, and misbehaviour scored; and outbound streams.

Promises:

- An inbound stream runs its handler with the remote peer's public key; a peer already
  holding ``max_per_peer`` streams of that protocol gets the new one closed at once
  (refused, not queued). A handler that raises ``PeerMisbehaved`` costs the peer
  ``bad_frame``; ``PeerGone`` is a peer leaving; anything else is logged. The stream is
  closed in every case.
- ``FramedStream`` is what an extension's stream handler gets: ``recv``/``send`` of whole
  messages in frames of a 4-byte length and at most ``max_frame`` bytes, through the
  protocol's codec, every read bounded in time.
"""

from __future__ import annotations

import logging
from typing import Any, Awaitable, Callable, Sequence

import trio

from protocol import wire
from protocol.keys import peer_id, public_key_from_peer_id

from p2pnode.net.sync import STREAM_TIMEOUT, PeerGone, PeerMisbehaved, recv

log = logging.getLogger(__name__)

DIAL_TIMEOUT = 10.0  # seconds to open a stream, dialing the peer if need be

Serve = Callable[[Any, "bytes | None"], Awaitable[None]]


def remote_key(stream: Any) -> bytes | None:
    """The public key of the peer at the other end of a libp2p stream, if it has one."""
    try:
        return public_key_from_peer_id(stream.muxed_conn.peer_id.to_base58())
    except Exception:
        return None


async def close(stream: Any) -> None:
    """Close ``stream``, bounded in time; a stream already gone is fine."""
    with trio.move_on_after(2):
        try:
            await stream.close()
        except Exception:
            pass


class FramedStream:
    """One stream of a declared protocol, speaking whole messages through its codec."""

    def __init__(self, raw: Any, peer: bytes | None, encode: Callable[[Any], bytes],
                 decode: Callable[[bytes], Any], max_frame: int, timeout: float = STREAM_TIMEOUT) -> None:
        self.raw = raw
        self.peer = peer
        self._encode, self._decode = encode, decode
        self.max_frame = max_frame
        self.timeout = timeout

    async def recv(self) -> Any:
        """The next message; ``PeerMisbehaved`` for a frame or payload that breaks the
        protocol, ``PeerGone`` if the stream ends or stays silent for ``timeout`` s."""
        return await recv(self.raw, timeout=self.timeout, decode=self._decode, max_frame=self.max_frame)

    async def send(self, msg: Any) -> None:
        """Write ``msg`` as one frame; ``PeerGone`` if the stream is gone."""
        payload = self._encode(msg)
        if not 0 < len(payload) <= self.max_frame:
            raise ValueError(f"a message of {len(payload)} bytes does not fit a frame of at most {self.max_frame}")
        try:
            await self.raw.write(len(payload).to_bytes(wire.FRAME_HEADER, "big") + payload)
        except Exception as e:
            raise PeerGone(f"{type(e).__name__}: {e}") from None

    async def close(self) -> None:
        await close(self.raw)


class StreamRouter:
    """The host's stream protocols."""

    def __init__(self, host: Any, *, penalise: Callable[[bytes, str, str], Awaitable[None]],
                 count: Callable[[str, int], None]) -> None:
        self.host = host
        self._penalise = penalise
        self._count = count
        self._inbound: dict[tuple[bytes | None, str], int] = {}  # open inbound streams per (peer, protocol)

    def add(self, protocol_id: str, name: str, serve: Serve, max_per_peer: int) -> None:
        """Serve ``protocol_id`` with ``serve(stream, peer)``; ``name`` names it in counters."""

        async def handler(stream: Any) -> None:
            await self._guard(stream, name, serve, max_per_peer)

        self.host.set_stream_handler(protocol_id, handler)

    async def open(self, pk: bytes, protocol_id: str | Sequence[str]) -> Any:
        """A new outbound stream to ``pk`` on ``protocol_id`` (or the first of several the
        peer speaks, in the order given: ``stream.get_protocol()`` says which);
        ``trio.TooSlowError`` after ``DIAL_TIMEOUT``."""
        from p2pnode.net.host import peer_id_of

        with trio.fail_after(DIAL_TIMEOUT):
            return await self.host.new_stream(peer_id_of(pk), _ids(protocol_id))

    async def open_on(self, conn: Any, protocol_id: str | Sequence[str]) -> Any:
        """A new outbound stream on one given libp2p connection ``conn`` (``open`` lets
        libp2p choose among a peer's connections, and it chooses the busiest: a second
        connection of one peer ID would never be asked anything);
        ``trio.TooSlowError`` after ``DIAL_TIMEOUT``."""
        from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator

        with trio.fail_after(DIAL_TIMEOUT):
            stream = await conn.new_stream()
            try:
                chosen = await self.host.multiselect_client.select_one_of(
                    _ids(protocol_id), MultiselectCommunicator(stream), int(DIAL_TIMEOUT))
            except BaseException:
                with trio.CancelScope(shield=True):
                    await close(stream)
                raise
            stream.set_protocol(chosen)
            return stream

    async def _guard(self, stream: Any, name: str, serve: Serve, limit: int) -> None:
        pk = remote_key(stream)
        key = (pk, name)
        if self._inbound.get(key, 0) >= limit:
            self._count(f"streams.refused.{name}", 1)
            await close(stream)
            return
        self._inbound[key] = self._inbound.get(key, 0) + 1
        try:
            await serve(stream, pk)
        except PeerMisbehaved as e:
            if pk:
                await self._penalise(pk, "bad_frame", f"{name} stream: {e}")
        except PeerGone:
            pass
        except Exception:
            log.exception("%s stream from %s failed", name, peer_id(pk) if pk else "?")
        finally:
            self._inbound[key] -= 1
            if not self._inbound[key]:
                del self._inbound[key]
            await close(stream)


def _ids(protocol_id: str | Sequence[str]) -> list[str]:
    return [protocol_id] if isinstance(protocol_id, str) else list(protocol_id)
