"""Requests and their answers on ``/p2plend/agree/1.0.0``, bounded in time, over streams
kept open between requests.

Opening a stream costs a yamux SYN and a multistream-select exchange: on a loaded 2-core
machine, 16 ms of a 42 ms contract, and about 95 ms of 215 with 8 contracts in flight
(bench/agree.py, issue 12). So a stream that answered is kept, idle, for the next request
to the same peer: at most ``IDLE_PER_PEER`` per peer, for at most ``IDLE_KEEP`` seconds
(the answering side ends a stream that stays silent ``ANSWER_TIMEOUT`` seconds).

Promises:

- A stream goes back to the idle set only after a whole exchange (request sent, answer
  read); a stream whose exchange failed, timed out or was cancelled is closed.
- Only requests that may be asked twice reuse a stream (``agree.ASKED_TWICE``, agree
  rule 1). When a kept stream fails, the request is asked again on a
  new stream: the other side ended the stream before it read the request (it was idle
  too long, or the node answers one request per stream, as nodes before this did; such
  a peer's streams are not kept again).
- Transfers and amendments always get a stream of their own.
"""

from __future__ import annotations

from typing import Any

import trio

from protocol.keys import peer_id
from protocol.lending import agree

from p2pnode.context import Context
from p2pnode.net.sync import PeerGone

ANSWER_TIMEOUT = 15.0  # seconds for the other node's answer (it may sync our chain first)
IDLE_PER_PEER = 8  # streams kept open per peer between requests (a quarter of MAX_INBOUND_AGREE)
MAX_PEERS_KEPT = 64  # peers with streams kept: the least recently asked one's are forgotten past it
IDLE_KEEP = 10.0  # seconds a stream is kept idle: less than the answering side's ANSWER_TIMEOUT


class Unreachable(Exception):
    """The counterparty is not connected, or left mid-exchange."""


class Asker:
    """One node's requests on the agree protocol (one per node: it holds its streams)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._idle: dict[bytes, list[tuple[float, Any]]] = {}  # peer -> (kept since, stream), oldest first
        self._single: set[bytes] = set()  # peers that answer one request per stream

    async def ask(self, pk: bytes, msg: Any) -> Any:
        """Send one request to ``pk``; its answer. ``Unreachable`` if ``pk`` is not
        connected or the stream ends; ``PeerMisbehaved`` for a bad answer;
        ``trio.TooSlowError`` after ``ANSWER_TIMEOUT``."""
        if not self.ctx.peers.is_connected(pk):
            raise Unreachable(f"{peer_id(pk)} is not connected")
        reuse = isinstance(msg, agree.ASKED_TWICE) and pk not in self._single
        kept = await self._take(pk) if reuse else None
        if kept is not None:
            self.ctx.count("agree.streams_reused")
            try:
                return await self._exchange(pk, kept, msg, keep=True)
            except Unreachable:
                self._single.add(pk)  # (a peer that ended a kept stream: its streams are not kept again)
                self._discard(pk)
        stream = await self.ctx.open_stream(pk, agree.AGREE_PROTOCOL)
        self.ctx.count("agree.streams_opened")
        return await self._exchange(pk, stream, msg, keep=reuse)

    async def _exchange(self, pk: bytes, stream: Any, msg: Any, *, keep: bool) -> Any:
        stream.timeout = ANSWER_TIMEOUT
        answered = False
        try:
            with trio.fail_after(ANSWER_TIMEOUT):
                await stream.send(msg)
                answer = await stream.recv()
            answered = True
            return answer
        except PeerGone as e:
            raise Unreachable(str(e)) from None
        finally:
            if answered and keep and len(self._idle.get(pk, ())) < IDLE_PER_PEER:
                self._idle.setdefault(pk, []).append((trio.current_time(), stream))
                if len(self._idle) > MAX_PEERS_KEPT:  # (a dict keeps insertion order: the first is the oldest)
                    self._discard(next(iter(self._idle)))
            else:
                with trio.CancelScope(shield=True):
                    await stream.close()

    async def _take(self, pk: bytes) -> Any | None:
        """The newest stream kept for ``pk`` that is young enough, closing older ones."""
        kept = self._idle.pop(pk, None)
        if kept:
            self._idle[pk] = kept  # (now the most recently asked peer)
        now = trio.current_time()
        while kept:
            since, stream = kept.pop()
            if now - since <= IDLE_KEEP:
                if not kept:
                    del self._idle[pk]
                return stream
            await stream.close()
        self._idle.pop(pk, None)
        return None

    def _discard(self, pk: bytes) -> None:
        """Forget ``pk``'s kept streams: the other side ends each once it is silent
        ``ANSWER_TIMEOUT`` s, and the connection's end ends them all."""
        self._idle.pop(pk, None)
